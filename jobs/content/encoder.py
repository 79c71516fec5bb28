"""The content embedding model: WordLlama's 256-dimension static token embeddings.

Chosen because it is small and offline, not because it is the best text model: the wheel
on PyPI carries the weights (``l2_supercat_256``, 16 MB, float16, MIT licence) and the
tokenizer, and embedding is a table lookup and an average, ~25,000 catalog texts a second
on one core with no GPU and no download. The package's own loader looks for the tokenizer
in a folder the wheel does not have and would fall back to Hugging Face, so the files are
opened here from the package folder directly; nothing here touches the network.

Vectors are unit length (cosine = dot product); a text with no tokens (an item with no
content at all) gets the zero vector, which the cold-start map and ``/similar`` treat as
"nothing known".
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from wordllama.inference import WordLlamaInference

CONFIG = "l2_supercat"
DIM = 256
BATCH = 256


class ContentModelMissingError(RuntimeError):
    """The embedding model's files are not where its package should have put them."""


@dataclass(frozen=True)
class Encoder:
    """Texts → unit float32 vectors, deterministic for a given package version."""

    config: str = CONFIG
    dim: int = DIM

    @property
    def model_id(self) -> str:
        """Recorded next to every vector: a new model version re-embeds the catalog."""
        return f"wordllama/{self.config}_{self.dim}@{version('wordllama')}"

    @cached_property
    def _inference(self) -> WordLlamaInference:
        import wordllama
        from safetensors import safe_open
        from tokenizers import Tokenizer
        from wordllama.inference import WordLlamaInference

        root = Path(wordllama.__file__).parent
        weights = root / "weights" / f"{self.config}_{self.dim}.safetensors"
        tokenizer = root / "tokenizers" / f"{self.config}_tokenizer_config.json"
        for path in (weights, tokenizer):
            if not path.is_file():
                raise ContentModelMissingError(
                    f"{path} is missing: reinstall the pinned wordllama (make venv)"
                )
        with safe_open(str(weights), framework="np", device="cpu") as fh:
            table = fh.get_tensor("embedding.weight")
        return WordLlamaInference(table, Tokenizer.from_file(str(tokenizer)), binary=False)

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row unit length or all zeros for no tokens."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        with _LOCK:  # the tokenizer's padding settings are shared state
            raw = self._inference.embed(list(texts), norm=False, batch_size=BATCH)
        raw = np.asarray(raw, dtype=np.float32)
        norms = np.linalg.norm(raw, axis=1)
        ok = np.isfinite(norms) & (norms > 1e-12)
        out[ok] = raw[ok] / norms[ok, None]
        return out


_LOCK = threading.Lock()
_DEFAULT: Encoder | None = None


def default_encoder() -> Encoder:
    """One loaded model per process (loading costs ~1 s)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Encoder()
    return _DEFAULT
