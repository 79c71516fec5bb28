"""Item factors in fewer bytes: float16 or int8, each row with its own float32 scale.

Reads a float32 ``(items, rank)`` factor matrix; writes nothing. The model artifact stays
float32 (DESIGN.md's contract): publishing and the service quantize when they load it
(``RECFLOW_FACTOR_DTYPE``), so one artifact serves every setting and switching back needs
no retraining. Quantizing takes milliseconds, far less than loading the artifact.

Both forms keep one scale per item (its largest absolute component). For int8 that is
what makes 8 bits enough: a popular item's long vector and a rare item's short one each
use the full −127…127 range. For float16 it keeps factors beyond float16's ±65504 from
becoming infinite and tiny ones from falling into subnormals: the stored values lie in
[−1, 1] whatever the model's scale.

Scoring never multiplies in float16 or int8: BLAS has no fast kernel for either on this
kind of CPU. :meth:`QuantizedItems.chunks` widens a fixed range of items at a time into a
float32 buffer that stays in cache, and :func:`jobs.model.ranking.top_k` runs its usual
sgemm on it. The chunk boundaries depend only on the model, so a user scored alone gets
the bits a block gives them, as with float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

FactorDtype = Literal["float32", "float16", "int8"]
FACTOR_DTYPES: tuple[str, ...] = get_args(FactorDtype)
# Items widened to float32 at a time: rank 64 × 4096 × 4 bytes = 1 MiB, within L2.
CHUNK_ITEMS = 4096
_INT8_MAX = 127


@dataclass(frozen=True)
class QuantizedItems:
    """Item factors as a (rank, items) operand of ``top_k``, stored in ``values.dtype``.

    Item ``j``'s factor ``d`` is ``values[d, j] * scale[j]`` in float32.
    """

    values: np.ndarray  # float16 or int8, C-contiguous (rank, items)
    scale: np.ndarray  # float32 (items,)
    chunk: int = CHUNK_ITEMS
    # Items whose float32 row was finite (None: all were). Rows that were not are stored
    # as zeros, which would score 0 and could win a list: ``top_k`` keeps them out.
    ok: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape  # type: ignore[return-value]

    @property
    def dtype(self) -> str:
        return str(self.values.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes held: the values and the scales."""
        return int(self.values.nbytes + self.scale.nbytes)

    def chunks(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(lo, hi, float32 (rank, hi - lo))`` for consecutive item ranges.

        Each buffer is fresh and C-contiguous, so BLAS sees the same operand for a lone
        user as for a block.
        """
        m = self.values.shape[1]
        for lo in range(0, m, self.chunk):
            hi = min(lo + self.chunk, m)
            buf = self.values[:, lo:hi].astype(np.float32)
            buf *= self.scale[lo:hi]
            yield lo, hi, buf

    def dequantize(self) -> np.ndarray:
        """The float32 ``(items, rank)`` factors these values stand for."""
        return np.ascontiguousarray((self.values.astype(np.float32) * self.scale).T)


def quantize(factors: np.ndarray, dtype: FactorDtype, chunk: int = CHUNK_ITEMS) -> QuantizedItems:
    """Quantize float32 ``(items, rank)`` factors to ``dtype`` ("float16" or "int8").

    Raises ``ValueError`` on a NaN or infinite factor: there is no scale for it, and a
    masked row would silently turn into a zero vector. (``RecModel`` masks such rows
    itself and passes zeros, because its ranker never recommends them anyway.)
    """
    if dtype not in ("float16", "int8"):
        raise ValueError(f"cannot quantize to {dtype!r}: choose float16 or int8")
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    x = np.asarray(factors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"factors must be (items, rank), got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} item rows hold NaN or infinity (first: row"
            f" {int(np.flatnonzero(bad)[0])}): refusing to quantize them"
        )
    peak = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(len(x), np.float32)
    # A zero vector keeps scale 0 and values 0 (dividing by 1 avoids 0/0).
    step = peak / _INT8_MAX if dtype == "int8" else peak
    divisor = np.where(step > 0, step, 1.0).astype(np.float32)
    scaled = x / divisor[:, None]
    if dtype == "int8":
        values = np.clip(np.rint(scaled), -_INT8_MAX, _INT8_MAX).astype(np.int8)
    else:
        values = scaled.astype(np.float16)
    return QuantizedItems(
        values=np.ascontiguousarray(values.T),
        scale=np.where(step > 0, step, 0.0).astype(np.float32),
        chunk=chunk,
    )
