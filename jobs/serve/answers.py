"""Online scoring: what the Bento service answers, importable and testable without BentoML.

Reads a :class:`~jobs.model.artifact.RecModel` (the champion the Bento carries), the stock flags
and recent items of the Feast online store (through :class:`FeatureSource`, which falls
back to "all in stock, no recent items" when Feast is absent), and the request. Writes
nothing: every answer is a pure function of those inputs, so the service in
``bento/service.py`` only moves bytes and counts.

Four paths, in order:

- ``als_session``: a user the model knows whose recent items (from the request, else
  Feast, which the stream worker keeps fresh) include items they did not have at training
  gets their stored vector moved by those items
  (:func:`jobs.model.session.session_vector`), without the items themselves;
- ``als``: any other user the model knows gets :func:`jobs.model.ranking.top_k` on their own
  factors, exactly the call the batch publisher makes, so the online list is the published
  list (the CDN's);
- ``fold_in``: an unknown user with recent items (from the request, else Feast) gets a
  user vector solved against the fixed item factors with the model's own implicit-ALS
  objective (:func:`fold_in`), then the same ranking;
- with a hybrid model (:mod:`jobs.model.hybrid`), the fold-in's recent items also give
  the content profile, and a session moves the stored one, so the content term follows
  the same items the factors do;
- ``popular``: everyone else gets the popularity baseline through the same ranker.

Users of the control group (:func:`jobs.model.control.in_control`, the function publishing
uses too) get ``popular`` whatever the model knows about them, and the answer says
``group: control``; everyone else is ``group: treatment``.

Every path filters out-of-stock items and the request's ``exclude_item_ids``.

A request the service does not answer personally (no valid user key, or a denied user:
:mod:`jobs.serve.access`) is answered with ``personal=False``: as a stranger, from the
request alone — no factors of that user, no recent items from the feature store.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np

from jobs.config import Settings
from jobs.model import hybrid
from jobs.model.artifact import RecModel
from jobs.model.control import CONTROL, TREATMENT, Group
from jobs.model.ranking import NO_ITEM, round_scores, top_k
from jobs.model.session import ITEM_WEIGHT, session_vector
from jobs.serve.schemas import (
    RecommendRequest,
    RecommendResponse,
    ScoredItem,
    SimilarResponse,
    Source,
)

# Recent items read from the feature store for one fold-in (it keeps ~20 per user).
MAX_LOOKUP_RECENT_ITEMS = 200
# Weight of one occurrence of a recent item: a view (jobs.config event_weights).
RECENT_ITEM_WEIGHT = ITEM_WEIGHT


# -- the model as served ------------------------------------------------------------------


@dataclass
class OnlineModel:
    """A ``RecModel`` with its identity and what online scoring precomputes once.

    ``gram`` is YᵀY in float64 (the fold-in's constant term, as Spark computes it each
    iteration); ``unit_items`` are the item factors scaled to unit length (cosine).
    """

    model: RecModel
    name: str
    version: str
    run_id: str
    reg: float
    alpha: float
    gram: np.ndarray = field(repr=False)
    unit_items: np.ndarray = field(repr=False)

    @cached_property
    def unit_items_t(self) -> np.ndarray:
        """``unit_items`` as the contiguous (rank, items) operand top_k wants."""
        return np.ascontiguousarray(self.unit_items.T)

    @classmethod
    def of(
        cls,
        model: RecModel,
        name: str = "",
        version: str = "",
        run_id: str = "",
        reg: float | None = None,
        alpha: float | None = None,
    ) -> OnlineModel:
        """Wrap a model; ``reg``/``alpha`` default to the ones it was trained with."""
        params = model.params or {}
        reg = float(
            params.get("reg", Settings.model_fields["als_reg"].default) if reg is None else reg
        )
        alpha = float(
            params.get("alpha", Settings.model_fields["als_alpha"].default)
            if alpha is None
            else alpha
        )
        # The fold-in's YᵀY over the trained items only: it is the constant of the ALS
        # solve, which never saw the cold items' mapped factors.
        y = model.item_factors[model.warm].astype(np.float64)
        norms = np.linalg.norm(model.item_factors, axis=1, keepdims=True)
        unit = np.divide(
            model.item_factors,
            norms,
            out=np.zeros_like(model.item_factors),
            where=norms > 0,
        )
        return cls(model, name, version, run_id, reg, alpha, y.T @ y, unit)

    def item_rows(self, item_ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """(row of every known id, in order, duplicates kept; the unknown ids)."""
        index = self.model.item_index
        rows, unknown = [], []
        for item_id in item_ids:
            j = index.get(item_id)
            if j is None:
                unknown.append(item_id)
            else:
                rows.append(j)
        return np.asarray(rows, dtype=np.int64), unknown


def fold_in(
    item_factors: np.ndarray,
    gram: np.ndarray,
    rows: np.ndarray,
    weights: np.ndarray,
    reg: float,
    alpha: float,
) -> np.ndarray:
    """The user vector implicit ALS would give someone with these interactions.

    One half-step of Spark's implicit ALS with the item factors fixed (Hu, Koren and
    Volinsky 2008, with Spark's ALS-WR regularisation): with confidence
    ``c = 1 + alpha * w`` and preference 1 for each interacted item,

        x = (YᵀY + Σᵢ (cᵢ − 1) yᵢ yᵢᵀ + reg · n · I)⁻¹ Σᵢ cᵢ yᵢ

    where ``n`` is the number of interacted items (Spark scales ``regParam`` by each
    user's count of positive ratings). ``rows`` must be distinct item rows with their
    summed ``weights`` — gold aggregates interactions per (user, item) the same way.
    Solved in float64 (a rank × rank system); returned as float32 like the factors.
    """
    y = item_factors[rows].astype(np.float64)
    c1 = alpha * np.asarray(weights, dtype=np.float64)
    a = gram + (y.T * c1) @ y
    a[np.diag_indices_from(a)] += reg * len(rows)
    b = y.T @ (1.0 + c1)
    try:
        x = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:  # singular only with reg = 0 and degenerate factors
        x = np.linalg.lstsq(a, b, rcond=None)[0]
    return x.astype(np.float32)


# -- answering ----------------------------------------------------------------------------


def _allowed(n_items: int, mask: np.ndarray | None, *blocked: np.ndarray) -> np.ndarray | None:
    rows = [b for b in blocked if len(b)]
    if not rows:
        return mask
    allowed = np.ones(n_items, dtype=bool) if mask is None else mask.copy()
    for b in rows:
        allowed[b] = False
    return allowed


def _items(model: RecModel, idx: np.ndarray, scores: np.ndarray) -> list[ScoredItem]:
    """Scored items as the published JSON has them (scores rounded alike)."""
    keep = idx != NO_ITEM
    return [
        ScoredItem(item_id=str(model.item_ids[j]), rank=rank, score=score)
        for rank, (j, score) in enumerate(
            zip(idx[keep], round_scores(scores[keep]), strict=True), start=1
        )
    ]


def needs_recent_lookup(
    online: OnlineModel, request: RecommendRequest, personal: bool = True, session: bool = False
) -> bool:
    """True when the answer depends on the user's recent items from the feature store:
    an unknown user's fold-in, or (``session``) a known user's session since training."""
    if not personal or request.recent_item_ids:
        return False
    return session or request.user_id not in online.model.user_index


def _recent_of(
    request: RecommendRequest, recent_lookup: Callable[[str], Sequence[str]] | None
) -> tuple[Sequence[str], Literal["request", "feast"] | None]:
    """The user's recent items and where they came from: the request's, else the store's."""
    if request.recent_item_ids:
        return request.recent_item_ids, "request"
    if recent_lookup is not None:
        found = list(recent_lookup(request.user_id) or ())[:MAX_LOOKUP_RECENT_ITEMS]
        return found, "feast" if found else None
    return (), None


def _session_rows(online: OnlineModel, row: int, recent_rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """(history rows, distinct fresh rows, their weights): fresh = not in the history the
    model was trained on, i.e. interactions since (the recent list holds both)."""
    seen = online.model.seen
    history = seen.indices[seen.indptr[row] : seen.indptr[row + 1]].astype(np.int64)
    model = online.model
    # A new item whose factors are not finite would poison the vector: it is left out.
    fresh = recent_rows[~np.isin(recent_rows, history) & model.item_ok[recent_rows]]
    counts = Counter(fresh.tolist())
    distinct = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    weights = RECENT_ITEM_WEIGHT * np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
    return history, distinct, weights


def recommend(
    online: OnlineModel,
    request: RecommendRequest,
    recent_lookup: Callable[[str], Sequence[str]] | None = None,
    stock_mask: np.ndarray | None = None,
    request_id: str | None = None,
    personal: bool = True,
    group: Group = TREATMENT,
    session: bool = False,
) -> RecommendResponse:
    """Answer one validated ``/recommend`` request (see the module docstring).

    ``recent_lookup`` (user id → recent item ids, e.g. from Feast) is called only for a
    user whose request carries no recent items: an unknown one, or with ``session`` a
    known one. Unknown recent item ids are ignored and reported; a known user without
    new items gets the published list (with only the request's exclusions on top). With
    ``personal=False`` the user counts as unknown and ``recent_lookup`` is never called.
    A ``control`` user gets the popular list.
    """
    model = online.model
    control = group == CONTROL
    n_items = len(model.item_ids)
    exclude = online.item_rows(request.exclude_item_ids or ())[0]
    unknown: list[str] = []
    recent: Sequence[str] = ()
    recent_source: Literal["request", "feast"] | None = None
    row = model.user_index.get(request.user_id) if personal and not control else None
    if not personal or control:
        recent_lookup = None

    fresh = np.zeros(0, dtype=np.int64)
    if row is not None and session and model.user_ok[row]:
        recent, recent_source = _recent_of(request, recent_lookup)
        recent_rows, unknown = online.item_rows(recent)
        history, fresh, weights = _session_rows(online, row, recent_rows)
    vector = None
    if row is not None and len(fresh):
        vector = session_vector(
            model.item_factors,
            online.gram,
            model.user_factors[row],
            history,
            fresh,
            weights,
            online.reg,
            online.alpha,
        )
        if not np.isfinite(vector).all():  # degenerate factors: the published list instead
            vector = None
        elif model.hybrid_weight > 0 and model.user_profiles is not None:
            profile = hybrid.session_profile(
                model.user_profiles[row],
                len(history),
                model.hybrid_recent,
                model.item_content,
                fresh,
            )
            vector = model.scoring_vector(vector, profile)
    if row is not None and vector is not None:
        source: Source = "als_session"
        idx, scores = top_k(
            vector[None, :],
            model.scoring_rows,
            request.k,
            seen=model.seen,
            rows=np.array([row]),
            allowed=_allowed(n_items, stock_mask, exclude, fresh),
            items_t=model.item_factors_t,
            item_ok=model.item_ok,
            capped=model.cold,
            cap=model.cold_cap,
        )
    elif row is not None:
        source = "als"
        recent_source = None
        idx, scores = model.recommend_rows(
            np.array([row]), request.k, allowed=_allowed(n_items, stock_mask, exclude)
        )
    else:
        # The control group gets no personalization at all, not even from the request.
        if not control:
            recent, recent_source = _recent_of(request, recent_lookup)
        rows, unknown = online.item_rows(recent)
        if len(rows):
            source = "fold_in"
            counts = Counter(rows.tolist())
            distinct = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            weights = RECENT_ITEM_WEIGHT * np.fromiter(
                counts.values(), dtype=np.float64, count=len(counts)
            )
            vector = fold_in(
                model.item_factors, online.gram, distinct, weights, online.reg, online.alpha
            )
            if model.hybrid_weight > 0 and model.item_content is not None:
                # The latest distinct items, as many as a stored profile is the mean of.
                latest = hybrid.latest_distinct(rows, model.hybrid_recent)
                vector = model.scoring_vector(vector, hybrid.profile_of(model.item_content, latest))
            idx, scores = top_k(
                vector[None, :],
                model.scoring_rows,
                request.k,
                allowed=_allowed(n_items, stock_mask, exclude, distinct),
                items_t=model.item_factors_t,
                capped=model.cold,
                cap=model.cold_cap,
            )
        else:
            source = "popular"
            idx, scores = model.popular_rows(
                np.array([-1]), request.k, allowed=_allowed(n_items, stock_mask, exclude)
            )
    return RecommendResponse(
        request_id=request_id or new_request_id(),
        user_id=request.user_id,
        source=source,
        items=_items(model, idx[0], scores[0]),
        model_name=online.name,
        model_version=online.version,
        model_run_id=online.run_id,
        personal=source in ("als", "als_session")
        or (source == "fold_in" and recent_source == "feast"),
        recent_source=recent_source if source in ("fold_in", "als_session") else None,
        unknown_recent_item_ids=unknown,
        group=group,
    )


class UnknownItemError(KeyError):
    """``/similar`` was asked about an item the model does not know."""


def similar(
    online: OnlineModel,
    item_id: str,
    k: int,
    stock_mask: np.ndarray | None = None,
    request_id: str | None = None,
    content: tuple[Sequence[float], str] | None = None,
) -> SimilarResponse:
    """The ``k`` items closest to ``item_id`` by cosine of their factors, in stock only.

    An item newer than the model (not in it) is placed by its ``content`` (vector, model
    id, from the online store) through the model's content map, when the model has one
    fitted on vectors of that embedding model; otherwise it is unknown.
    """
    j = online.model.item_index.get(item_id)
    if j is not None:
        query = online.unit_items[j]
        exclude = np.array([j])
    else:
        query = _placed(online.model, content)
        if query is None:
            raise UnknownItemError(item_id)
        exclude = np.array([], dtype=np.int64)
    allowed = _allowed(len(online.model.item_ids), stock_mask, exclude)
    idx, scores = top_k(
        query[None, :],
        online.unit_items,
        k,
        allowed=allowed,
        items_t=online.unit_items_t,
        capped=online.model.cold,
        cap=online.model.cold_cap,
    )
    return SimilarResponse(
        request_id=request_id or new_request_id(),
        item_id=item_id,
        items=_items(online.model, idx[0], scores[0]),
        model_name=online.name,
        model_version=online.version,
    )


def _placed(model: RecModel, content: tuple[Sequence[float], str] | None) -> np.ndarray | None:
    """Unit factors of an item known only by its content vector; None when they cannot be
    had (no vector, no map, a vector of another embedding model, no text, not finite)."""
    cmap = model.content_map
    if content is None or cmap is None or content[1] != cmap.model:
        return None
    vector = np.asarray(content[0], dtype=np.float32)
    if (
        vector.shape != (cmap.weights.shape[0],)
        or not np.isfinite(vector).all()
        or not vector.any()
    ):
        return None
    factors = cmap.apply(vector[None, :])[0]
    norm = float(np.linalg.norm(factors))
    if not np.isfinite(norm) or norm == 0.0:
        return None
    return (factors / norm).astype(np.float32)


def new_request_id() -> str:
    """A fresh id the front end echoes in click events (``request_id`` of the contract)."""
    return uuid.uuid4().hex
