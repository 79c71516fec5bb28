"""Top-K ranking from factors: the one function batch publishing, evaluation and the
online service all call, so a user gets the same list wherever it is computed.

Scores are dot products computed block by block with a float32 matrix product (BLAS);
the top K of each row come from ``argpartition`` (linear) and only those K are sorted.
Items a user already interacted with and items not allowed (out of stock) never appear.
Ties break by item index so the order is deterministic.

Which BLAS kernel handles a row depends on the CPU and on how many rows share the
product (OpenBLAS's Haswell kernel rounds a row differently in a block of 16 than alone),
so the float32 scores only *select* candidates: the top ``K + RESCORE_EXTRA`` of each row
are scored again in float64, one dot product each, and those exact scores (as float32)
decide the order and are returned. Where the (K + extra)-th candidate is within
``NEAR_TIE`` (relative) of the K-th, every item that close is rescored. A user then gets
the same list and the same bits alone online as in any block of the batch, on any CPU,
as long as float32's error on a score stays under ``NEAR_TIE`` of it: true unless a dot
product cancels by a factor of ~10⁶ (terms far larger than their sum), which ALS factors
do not produce.

The item operand may also be :class:`jobs.model.quantize.QuantizedItems` (float16 or int8
with a per-item scale, ``RECFLOW_FACTOR_DTYPE``): its chunks are widened to float32 and go
through the same sgemm, so quantized scoring keeps every property below.

Non-finite factors (NaN, ±inf) never crash the ranker and never reach a list: an item
whose factor row is not finite is treated as not allowed, and a user vector that is not
finite gets no items (``NO_ITEM`` slots); :meth:`jobs.model.artifact.RecModel.recommend_rows`
gives such a user the popularity list instead. A score that overflows (finite factors
too large for float32) is not recommendable either: that pair is left out. Training and
registration refuse such a model outright; this is the last line for one that got into
the registry anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.model.quantize import QuantizedItems

NO_ITEM = -1
# Candidates beyond K that the float64 rescoring ranks (see the module docstring).
RESCORE_EXTRA = 8
# Relative gap under which the K-th and the (K + extra)-th float32 scores count as tied:
# far above float32's rounding of a dot product (~rank x 6e-8), far below real gaps.
NEAR_TIE = np.float32(1e-4)
# Elements of one float64 gather (rows x candidates x rank): bounds the rescoring's memory.
_RESCORE_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class Seen:
    """Per-user item indices in CSR form: user row ``u`` saw ``indices[indptr[u]:indptr[u+1]]``."""

    indptr: np.ndarray
    indices: np.ndarray

    @classmethod
    def from_lists(cls, lists: list[list[int]] | list[np.ndarray]) -> Seen:
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        indptr = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        flat = (
            np.concatenate([np.asarray(x, dtype=np.int32) for x in lists])
            if lists and indptr[-1]
            else np.zeros(0, np.int32)
        )
        return cls(indptr, flat)

    def rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in ``rows``, item index) of every seen pair of the given users."""
        starts, stops = self.indptr[rows], self.indptr[rows + 1]
        counts = stops - starts
        which = np.repeat(np.arange(len(rows)), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return which, self.indices[np.repeat(starts, counts) + offsets]


def top_k(
    user_vectors: np.ndarray,
    item_factors: np.ndarray | None,
    k: int,
    seen: Seen | None = None,
    rows: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    block: int = 1024,
    items_t: np.ndarray | QuantizedItems | None = None,
    item_ok: np.ndarray | None = None,
    exact: bool = True,
    capped: np.ndarray | None = None,
    cap: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` items for each user vector: (item indices, scores), best first.

    ``seen`` holds the items to exclude per user; ``rows`` says which of its rows each
    vector is (default: row i for vector i; ``-1`` for a vector with nothing seen).
    ``allowed`` is a boolean mask over items. Slots with no eligible item hold
    ``NO_ITEM`` and ``-inf``. The result is exactly the first ``k`` of all eligible items
    sorted by (score descending, item index ascending), whatever the block size, so a
    user scored alone online gets the list the batch scored for them in a block.
    ``items_t`` may be quantized (then ``item_factors`` is not read and may be None).
    ``exact=False`` skips the float64 rescoring (the float32 selection alone, whose lists
    may differ alone and in a block): for ``bench/bench_rescore.py`` only.
    ``capped`` (a boolean mask over items: the cold items, whose factors come from their
    content) admits at most ``cap`` of those items into each list: the answer is the best
    ``k`` under that constraint, by the same order.
    """
    users = np.ascontiguousarray(user_vectors, dtype=np.float32)
    # Always the same contiguous (rank, items) operand, so BLAS computes a user's scores
    # bit for bit the same alone or in any block. Pass ``items_t``
    # (RecModel.item_factors_t) so a single-user call does not copy the item matrix.
    if items_t is None:
        if item_factors is None:
            raise ValueError("top_k needs item_factors or items_t")
        items_t = np.ascontiguousarray(np.asarray(item_factors, dtype=np.float32).T)
    # The same factors item-major, for the rescoring's gather (rank-major gathers stride).
    item_rows = None
    if item_factors is not None and not isinstance(items_t, QuantizedItems):
        item_rows = np.asarray(item_factors)
        if item_rows.shape != (items_t.shape[1], items_t.shape[0]):
            item_rows = None
    if item_ok is None:
        # Quantized values are finite by construction (quantize refuses NaN); rows that
        # were not finite before are zeros there, and the operand says which.
        if isinstance(items_t, QuantizedItems):
            item_ok = np.ones(items_t.shape[1], dtype=bool) if items_t.ok is None else items_t.ok
        else:
            item_ok = np.isfinite(items_t).all(axis=0)
    # A NaN in one vector poisons its whole row or column of scores: mask them instead.
    user_ok = np.isfinite(users).all(axis=1)
    n, m = users.shape[0], items_t.shape[1]
    k = min(k, m)
    rows = np.arange(n) if rows is None else np.asarray(rows)
    out_idx = np.full((n, k), NO_ITEM, dtype=np.int32)
    out_score = np.full((n, k), -np.inf, dtype=np.float32)
    if n == 0 or k == 0:
        return out_idx, out_score
    blocked = None if allowed is None else ~np.asarray(allowed, dtype=bool)
    if not item_ok.all():
        blocked = ~item_ok if blocked is None else blocked | ~item_ok
    # The capped items' columns are selected apart (at most ``cap``) from the same product.
    cold_cols = None
    if capped is not None and cap < k:
        cold_cols = np.flatnonzero(np.asarray(capped, dtype=bool))
        if not len(cold_cols):
            cold_cols = None
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows, masked below
            scores = _product(users[lo:hi], items_t)
            # Huge finite factors overflow float32 scores to ±inf or NaN: such a pair is
            # not recommendable (a +inf would win the first slot and empty it). The sum is
            # one cheap pass; only a block it flags pays for the mask.
            if not np.isfinite(scores.sum()):
                scores[~np.isfinite(scores)] = -np.inf
        if blocked is not None:
            scores[:, blocked] = -np.inf
        if not user_ok[lo:hi].all():
            scores[~user_ok[lo:hi]] = -np.inf
        if seen is not None:
            valid = rows[lo:hi] >= 0
            which, cols = seen.rows(np.where(valid, rows[lo:hi], 0))
            keep = valid[which]
            scores[which[keep], cols[keep]] = -np.inf
        if cold_cols is None:
            found = _select(users[lo:hi], items_t, scores, k, item_rows, exact)
        else:
            cold_scores = scores[:, cold_cols]  # a copy (fancy indexing)
            scores[:, cold_cols] = -np.inf
            found = _select(users[lo:hi], items_t, scores, k, item_rows, exact)
            if cap > 0:
                cold = _select(
                    users[lo:hi],
                    items_t,
                    cold_scores,
                    min(cap, len(cold_cols)),
                    item_rows,
                    exact,
                    cold_cols,
                )
                found = merge_ranked(found, cold, k)
        out_idx[lo:hi], out_score[lo:hi] = found
    return out_idx, out_score


def _select(
    users: np.ndarray,
    items_t: np.ndarray | QuantizedItems,
    scores: np.ndarray,
    k: int,
    item_rows: np.ndarray | None,
    exact: bool,
    cols: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of a masked float32 score block, rescored exactly (see ``top_k``);
    ``cols`` names the item of each score column when the block is a subset of them."""

    def items_of(c: np.ndarray) -> np.ndarray:
        if cols is None:
            return c
        return np.where(c == NO_ITEM, NO_ITEM, cols[np.where(c == NO_ITEM, 0, c)]).astype(np.int32)

    m = scores.shape[1]
    if not exact:
        idx, best = select_top(scores, k)
        return items_of(idx), best
    width = min(k + RESCORE_EXTRA, m)
    cand_idx, cand_best = select_top(scores, width)
    idx_b, best_b = exact_top(users, items_t, items_of(cand_idx), k, item_rows)
    if width < m:
        # Rows whose (K + extra)-th candidate is as good as the K-th up to float32's
        # error: every item that close is rescored, so the exact top K is found
        # whichever items the float32 kernel happened to put first.
        kth, last = cand_best[:, k - 1], cand_best[:, -1]
        with np.errstate(invalid="ignore", over="ignore"):
            tol = NEAR_TIE * np.abs(kth) + np.float32(1e-30)
            near = np.flatnonzero(np.isfinite(kth) & (last >= kth - tol))
        for r in near:
            wide = items_of(np.flatnonzero(scores[r] >= kth[r] - 2 * tol[r]))
            idx_b[r], best_b[r] = _exact_top_wide(users[r : r + 1], items_t, wide, k, item_rows)
    return idx_b, best_b


def _exact_top_wide(
    user: np.ndarray,
    items_t: np.ndarray | QuantizedItems,
    wide: np.ndarray,
    k: int,
    item_rows: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`exact_top` of one user over many candidates (a whole catalogue of ties, at
    worst), in column chunks of bounded memory; exact per chunk, so exact overall."""
    step = max(k, _RESCORE_ELEMENTS // max(1, user.shape[1]))
    idx = np.zeros(0, dtype=np.int32)
    best = np.zeros(0, dtype=np.float32)
    for lo in range(0, len(wide), step):
        i_c, b_c = exact_top(user, items_t, wide[None, lo : lo + step], k, item_rows)
        idx, best = np.concatenate([idx, i_c[0]]), np.concatenate([best, b_c[0]])
        keep = np.lexsort((np.where(idx == NO_ITEM, np.iinfo(np.int32).max, idx), -best))[:k]
        idx, best = idx[keep], best[keep]
    return idx, best


def _columns(
    items_t: np.ndarray | QuantizedItems, item_rows: np.ndarray | None, idx: np.ndarray
) -> np.ndarray:
    """float64 ``(rows, candidates, rank)`` factors of the candidate items, exactly the
    float32 values the product used (a quantized item widened as its chunk is). Gathered
    from the item-major ``item_rows`` when the caller has them (a row is contiguous there)."""
    if isinstance(items_t, QuantizedItems):
        cols = items_t.values[:, idx].astype(np.float32)
        cols *= items_t.scale[idx]
        return np.moveaxis(cols, 0, -1).astype(np.float64)
    if item_rows is not None:
        return item_rows[idx].astype(np.float32).astype(np.float64)
    return np.moveaxis(items_t[:, idx], 0, -1).astype(np.float64)


def exact_top(
    users: np.ndarray,
    items_t: np.ndarray | QuantizedItems,
    cand: np.ndarray,
    k: int,
    item_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` candidates of each row by (float64 score desc, index asc), with
    their scores as float32. ``cand`` holds item indices, ``NO_ITEM`` for empty slots;
    ``item_rows`` are the (items, rank) factors ``items_t`` transposes, when at hand."""
    ok = cand != NO_ITEM
    safe = np.where(ok, cand, 0)
    exact = np.empty(cand.shape, dtype=np.float32)
    u64 = users.astype(np.float64)
    rank = max(1, users.shape[1])
    step = max(1, _RESCORE_ELEMENTS // max(1, cand.shape[1] * rank))
    for lo in range(0, len(cand), step):
        hi = lo + step
        # einsum's own loop (no BLAS): the same summation order for every row and block.
        dots = np.einsum("bd,bcd->bc", u64[lo:hi], _columns(items_t, item_rows, safe[lo:hi]))
        with np.errstate(over="ignore", invalid="ignore"):
            exact[lo:hi] = dots.astype(np.float32)
    exact[~ok | ~np.isfinite(exact)] = -np.inf
    order = np.lexsort((np.where(ok, cand, np.iinfo(np.int32).max), -exact), axis=1)[:, :k]
    idx = np.take_along_axis(cand, order, axis=1).astype(np.int32)
    best = np.take_along_axis(exact, order, axis=1)
    idx[~np.isfinite(best)] = NO_ITEM
    return idx, best


def _product(users: np.ndarray, items_t: np.ndarray | QuantizedItems) -> np.ndarray:
    """Scores of a block of user vectors against every item."""
    if isinstance(items_t, QuantizedItems):
        scores = np.empty((len(users), items_t.shape[1]), dtype=np.float32)
        for lo, hi, chunk in items_t.chunks():
            scores[:, lo:hi] = _gemm(users, chunk)
        return scores
    return _gemm(users, items_t)


def _gemm(users: np.ndarray, items_t: np.ndarray) -> np.ndarray:
    """``users @ items_t`` in float32, by the same BLAS kernel for one row as for many."""
    if len(users) == 1:
        # numpy sends a one-row product to gemv, which rounds differently from the
        # gemm a block goes through; two rows keep a lone user's bits identical.
        return (np.repeat(users, 2, axis=0) @ items_t)[:1]
    return users @ items_t


# Above this many items per K, a sampled threshold first cuts each row to a few hundred
# candidates: one comparison pass replaces a full partition of every row.
_PREFILTER_RATIO = 16
_SAMPLE_STRIDE = 4


def select_top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` columns of each row of a score block, by (score desc, column asc).

    The k-th largest of every ``_SAMPLE_STRIDE``-th column is a lower bound of the row's
    k-th largest score, so every column scoring at least that is a candidate and nothing
    of the true top K is lost. Ties at the K boundary are settled by column index, so the
    answer never depends on which rows share a block.
    """
    b, m = scores.shape
    if k < m and m >= _PREFILTER_RATIO * k:
        sample = scores[:, ::_SAMPLE_STRIDE]
        width = sample.shape[1]
        bound = np.partition(sample, width - k, axis=1)[:, width - k]
        # A NaN score (overflowing finite factors) sorts as the largest: as a bound it
        # would admit no candidate at all. Such a row then keeps every non-NaN column.
        bound[np.isnan(bound)] = -np.inf
        flat = np.flatnonzero(scores >= bound[:, None])
        row_of, col_of = np.divmod(flat, m)
        counts = np.bincount(row_of, minlength=b)
        offsets = np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)
        # At least k wide, so a block whose rows have no candidate still yields k slots.
        vals = np.full((b, max(int(counts.max()), k)), -np.inf, dtype=np.float32)
        cols = np.full(vals.shape, m, dtype=np.int64)
        vals[row_of, offsets] = scores.ravel()[flat]
        cols[row_of, offsets] = col_of
    else:
        vals, cols = scores, np.broadcast_to(np.arange(m), scores.shape)
    width = vals.shape[1]
    part = np.argpartition(-vals, k - 1, axis=1)[:, :k] if k < width else np.argsort(-vals, 1)
    part = part[:, :k]
    best = np.take_along_axis(vals, part, axis=1)
    idx = np.take_along_axis(cols, part, axis=1)
    # Ties at the boundary: argpartition keeps an arbitrary subset of the items scoring
    # exactly the k-th value; redo those (rare) rows with a full sort.
    kth = best.min(axis=1)
    at_kth = (vals == kth[:, None]).sum(axis=1)
    ambiguous = np.flatnonzero((at_kth > (best == kth[:, None]).sum(axis=1)) & np.isfinite(kth))
    for r in ambiguous:
        order = np.lexsort((cols[r], -vals[r]))[:k]
        best[r], idx[r] = vals[r][order], cols[r][order]
    order = np.lexsort((idx, -best), axis=1)
    idx = np.take_along_axis(idx, order, axis=1).astype(np.int32)
    best = np.take_along_axis(best, order, axis=1)
    idx[~np.isfinite(best)] = NO_ITEM
    return idx, best


def merge_ranked(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of two ranked lists per row (disjoint items), by (score desc,
    index asc); empty slots (``NO_ITEM``, -inf) last."""
    idx = np.concatenate([a[0], b[0]], axis=1)
    best = np.concatenate([a[1], b[1]], axis=1)
    # Empty slots sort after every item whatever their index.
    key_idx = np.where(idx == NO_ITEM, np.iinfo(np.int64).max, idx.astype(np.int64))
    order = np.lexsort((key_idx, -best.astype(np.float64)), axis=1)[:, :k]
    return (
        np.take_along_axis(idx, order, axis=1).astype(np.int32),
        np.take_along_axis(best, order, axis=1),
    )


def popular_k(
    popularity: np.ndarray,
    k: int,
    n_users: int = 1,
    seen: Seen | None = None,
    rows: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The popularity baseline through the same ranker (one-dimensional factors)."""
    ones = np.ones((n_users, 1), dtype=np.float32)
    return top_k(ones, popularity.reshape(-1, 1), k, seen=seen, rows=rows, allowed=allowed)


def round_scores(scores: np.typing.ArrayLike) -> list[float]:
    """float32 scores as short decimals (6 places), as published and as served.

    Both sides round the same way so a published list equals the service's answer.
    """
    return np.round(np.asarray(scores, dtype=np.float64), 6).tolist()
