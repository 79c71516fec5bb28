"""Online scoring: what the Bento service answers, importable and testable without BentoML.

Reads a :class:`~jobs.model.RecModel` (the champion the Bento carries), the stock flags
and recent items of the Feast online store (through :class:`FeatureSource`, which falls
back to "all in stock, no recent items" when Feast is absent), and the request. Writes
nothing: every answer is a pure function of those inputs, so the service in
``bento/service.py`` only moves bytes and counts.

Three paths, in order:

- ``als``: a user the model knows gets :func:`jobs.ranking.top_k` on their own factors,
  exactly the call the batch publisher makes, so the online list is the published list;
- ``fold_in``: an unknown user with recent items (from the request, else Feast) gets a
  user vector solved against the fixed item factors with the model's own implicit-ALS
  objective (:func:`fold_in`), then the same ranking;
- ``popular``: everyone else gets the popularity baseline through the same ranker.

Every path filters out-of-stock items and the request's ``exclude_item_ids``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from jobs.config import Settings
from jobs.contracts import MAX_ID_LENGTH
from jobs.layout import round_scores
from jobs.model import RecModel
from jobs.ranking import NO_ITEM, top_k

# The publisher's own stock filter: online and batch lists drop the same items.
from jobs.scoring import stock_mask

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

Source = Literal["als", "fold_in", "popular"]
SOURCES: tuple[str, ...] = ("als", "fold_in", "popular")
DEFAULT_K = 10
# A request may exclude a page or two of already shown items; more is a client bug.
MAX_EXCLUDE_ITEMS = 1000
# How often the service re-reads stock flags from the online store.
STOCK_REFRESH_SECONDS = 60.0
# Recent items read from the feature store for one fold-in (it keeps ~20 per user).
MAX_LOOKUP_RECENT_ITEMS = 200
# Weight of one occurrence of a recent item: a view (jobs.config event_weights).
RECENT_ITEM_WEIGHT = 1.0


# -- limits and request/response shapes ---------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What a request may ask for; defaults are the ``Settings`` defaults."""

    max_k: int = Settings.model_fields["serve_max_k"].default
    max_recent_items: int = Settings.model_fields["serve_max_recent_items"].default
    max_exclude_items: int = MAX_EXCLUDE_ITEMS
    max_id_length: int = MAX_ID_LENGTH

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(max_k=settings.serve_max_k, max_recent_items=settings.serve_max_recent_items)


def _id_type(limits: Limits) -> Any:
    return Annotated[str, StringConstraints(min_length=1, max_length=limits.max_id_length)]


class _Strict(BaseModel):
    # Strict: "10" is not a k and 7 is not a user id; unknown fields are named, not dropped
    # (a misspelt "recent_items" would otherwise silently turn fold-in off).
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class RecommendRequest(_Strict):
    """``POST /recommend``: who, how many, and what they just looked at."""

    user_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
    k: Annotated[int, Field(ge=1, le=Limits.max_k)] = DEFAULT_K
    recent_item_ids: (
        Annotated[
            list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]],
            Field(max_length=Limits.max_recent_items),
        ]
        | None
    ) = None
    exclude_item_ids: (
        Annotated[
            list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]],
            Field(max_length=MAX_EXCLUDE_ITEMS),
        ]
        | None
    ) = None


class SimilarRequest(_Strict):
    """``POST /similar``: items like this one."""

    item_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
    k: Annotated[int, Field(ge=1, le=Limits.max_k)] = DEFAULT_K


def request_types(limits: Limits) -> tuple[type[RecommendRequest], type[SimilarRequest]]:
    """The request models with the configured limits (the service's OpenAPI schema).

    The module-level classes carry the default limits; these subclasses carry whatever
    ``RECFLOW_SERVE_MAX_K`` and friends say, so a limit is configured in one place.
    """
    ident = _id_type(limits)
    ids = Annotated[list[ident], Field(max_length=limits.max_recent_items)]  # type: ignore[valid-type]
    excl = Annotated[list[ident], Field(max_length=limits.max_exclude_items)]  # type: ignore[valid-type]
    k = Annotated[int, Field(ge=1, le=limits.max_k)]
    recommend = create_model(
        "RecommendRequest",
        __base__=RecommendRequest,
        __doc__=RecommendRequest.__doc__,
        user_id=(ident, ...),
        k=(k, DEFAULT_K),
        recent_item_ids=(ids | None, None),
        exclude_item_ids=(excl | None, None),
    )
    similar = create_model(
        "SimilarRequest",
        __base__=SimilarRequest,
        __doc__=SimilarRequest.__doc__,
        item_id=(ident, ...),
        k=(k, DEFAULT_K),
    )
    return recommend, similar


class ScoredItem(BaseModel):
    item_id: str
    rank: int
    score: float


class RecommendResponse(BaseModel):
    """The answer of ``/recommend``; ``items`` have the shape of the published lists."""

    request_id: str
    user_id: str
    source: Source
    items: list[ScoredItem]
    model_name: str
    model_version: str
    model_run_id: str
    recent_source: Literal["request", "feast"] | None = Field(
        None, description="Where the recent items of a fold-in came from."
    )
    unknown_recent_item_ids: list[str] = Field(
        default_factory=list, description="Recent item ids the model does not know (ignored)."
    )


class SimilarResponse(BaseModel):
    """The answer of ``/similar``: cosine neighbours in the item factor space."""

    request_id: str
    item_id: str
    items: list[ScoredItem]
    model_name: str
    model_version: str


def validation_error_body(errors: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A 422 body from pydantic errors: one message naming every offending field.

    ``loc`` ``("recent_item_ids", 3)`` becomes ``recent_item_ids[3]``; an empty ``loc``
    (the body is not JSON, or not an object) becomes ``body``.
    """
    detail = []
    for err in errors:
        field_name = ""
        for part in err.get("loc", ()):
            field_name += f"[{part}]" if isinstance(part, int) else f".{part}"
        field_name = field_name.lstrip(".") or "body"
        detail.append(
            {"field": field_name, "message": str(err.get("msg", "")), "type": err.get("type")}
        )
    message = "; ".join(f"{d['field']}: {d['message']}" for d in detail) or "invalid request"
    return {"error": f"invalid request: {message}", "detail": detail}


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
        y = model.item_factors.astype(np.float64)
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


def needs_recent_lookup(online: OnlineModel, request: RecommendRequest) -> bool:
    """True when the answer depends on the user's recent items from the feature store."""
    return request.user_id not in online.model.user_index and not request.recent_item_ids


def recommend(
    online: OnlineModel,
    request: RecommendRequest,
    recent_lookup: Callable[[str], Sequence[str]] | None = None,
    stock_mask: np.ndarray | None = None,
    request_id: str | None = None,
) -> RecommendResponse:
    """Answer one validated ``/recommend`` request (see the module docstring).

    ``recent_lookup`` (user id → recent item ids, e.g. from Feast) is called only for an
    unknown user whose request carries no recent items. Unknown recent item ids are
    ignored and reported; a known user's list is the published one (with only the
    request's exclusions on top).
    """
    model = online.model
    n_items = len(model.item_ids)
    exclude = online.item_rows(request.exclude_item_ids or ())[0]
    unknown: list[str] = []
    recent_source: Literal["request", "feast"] | None = None
    row = model.user_index.get(request.user_id)

    if row is not None:
        source: Source = "als"
        idx, scores = model.recommend_rows(
            np.array([row]), request.k, allowed=_allowed(n_items, stock_mask, exclude)
        )
    else:
        recent: Sequence[str] = request.recent_item_ids or ()
        if recent:
            recent_source = "request"
        elif recent_lookup is not None:
            recent = list(recent_lookup(request.user_id) or ())[:MAX_LOOKUP_RECENT_ITEMS]
            recent_source = "feast" if recent else None
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
            idx, scores = top_k(
                vector[None, :],
                model.item_factors,
                request.k,
                allowed=_allowed(n_items, stock_mask, exclude, distinct),
                items_t=model.item_factors_t,
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
        recent_source=recent_source if source == "fold_in" else None,
        unknown_recent_item_ids=unknown,
    )


class UnknownItemError(KeyError):
    """``/similar`` was asked about an item the model does not know."""


def similar(
    online: OnlineModel,
    item_id: str,
    k: int,
    stock_mask: np.ndarray | None = None,
    request_id: str | None = None,
) -> SimilarResponse:
    """The ``k`` items closest to ``item_id`` by cosine of their factors, in stock only."""
    j = online.model.item_index.get(item_id)
    if j is None:
        raise UnknownItemError(item_id)
    allowed = _allowed(len(online.model.item_ids), stock_mask, np.array([j]))
    idx, scores = top_k(
        online.unit_items[j][None, :],
        online.unit_items,
        k,
        allowed=allowed,
        items_t=online.unit_items_t,
    )
    return SimilarResponse(
        request_id=request_id or new_request_id(),
        item_id=item_id,
        items=_items(online.model, idx[0], scores[0]),
        model_name=online.name,
        model_version=online.version,
    )


def new_request_id() -> str:
    """A fresh id the front end echoes in click events (``request_id`` of the contract)."""
    return uuid.uuid4().hex


# -- features (Feast) behind a seam -------------------------------------------------------


@dataclass
class StockState:
    """The stock mask in use and where it came from (reported by readiness)."""

    mask: np.ndarray | None = None
    source: str = "none: all items count as in stock"
    fallback: bool = True
    out_of_stock: int = 0
    refreshed_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "fallback": self.fallback,
            "out_of_stock": self.out_of_stock,
            "refreshed_at": self.refreshed_at,
        }


class FeatureSource:
    """The Feast online store, or its graceful absence.

    ``jobs.features`` does the Feast work; this seam decides what the service does when
    Feast is not installed, not applied or not materialized: every item is in stock and
    nobody has recent items. The reason is kept in :attr:`status` for ``/readyz``.
    Opening probes one real lookup, so a store whose views were never applied counts as
    unavailable once, instead of failing (and logging) on every request.
    """

    PROBE_USER = "__recflow_probe__"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: FeatureStore | None = None
        self.status = "not opened"

    @property
    def available(self) -> bool:
        return self.store is not None

    def open(self) -> None:
        try:
            from jobs import features

            fs = features.store(self.settings)
            features.recent_items(fs, [self.PROBE_USER])
        except Exception as exc:  # any failure means the same fallback
            log.warning("Feast online store unavailable, falling back: %s", exc, exc_info=True)
            self.store = None
            self.status = _reason("unavailable", exc)
        else:
            self.store = fs
            self.status = "ok"

    def stock(self, item_ids: Sequence[str]) -> dict[str, bool] | None:
        """Stock flags of the items (absent = unknown), or None when the store failed."""
        if self.store is None:
            return None
        try:
            from jobs import features

            return features.stock(self.store, list(item_ids))
        except Exception as exc:
            log.warning("stock lookup failed: %s", exc, exc_info=True)
            self.status = _reason("stock lookup failed", exc)
            return None

    def recent(self, user_id: str) -> list[str]:
        """The user's recent item ids, newest first; none when the store cannot tell."""
        if self.store is None:
            return []
        try:
            from jobs import features

            return list(features.recent_items(self.store, [user_id]).get(user_id) or [])
        except Exception as exc:
            log.warning("recent items lookup failed: %s", exc, exc_info=True)
            return []

    def load_stock(self, model: RecModel) -> StockState:
        """Read stock flags for the model's items and turn them into a mask."""
        now = time.time()
        flags = self.stock([str(i) for i in model.item_ids])
        if flags is None:
            return StockState(
                None, f"none, {self.status}: all items count as in stock", True, 0, now
            )
        if not flags:
            return StockState(
                None, "feast: no stock values (not materialized?): all items in stock", True, 0, now
            )
        mask = stock_mask(model, flags)
        out = 0 if mask is None else int((~mask).sum())
        return StockState(mask, f"feast: {len(flags)} items with a stock value", False, out, now)


def _reason(what: str, exc: BaseException) -> str:
    return f"{what} ({type(exc).__name__}: {exc})"[:300]
