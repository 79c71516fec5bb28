"""The model artifact: ids, float32 factors, popularity and seen items, without Spark.

One ``.npz`` file holds everything scoring needs, so the batch scorer, the MLflow pyfunc
and the Bento service load the same bytes with numpy alone. ``recommend`` is the single
entry point for a known user (it calls :func:`jobs.model.ranking.top_k`).

Non-finite factors: :meth:`RecModel.check_finite` refuses them, and factors so large
their scores overflow (training and registration call it, so recflow never registers
such a model); :meth:`RecModel.load`
only logs them, because a model already in the registry must still serve: an item whose
row is not finite is never recommended and a user whose row is not finite gets the
popularity list (``user_ok``/``item_ok``).

Two popularity vectors: ``popularity`` is the exact training-window weight, used inside
(training, evaluation, ``item_ok``); ``public_popularity`` is the differentially private
one (:mod:`jobs.model.dp`, ``-inf`` for items not released), drawn once at training and
stored, and is what every *popular list* ranks by — ``popular.json``, the service's
``popular`` answer, the pyfunc's answer for an unknown user — because those reach people
recflow does not know. An artifact written before it existed (no ``public_popularity``
array; same schema version, since older readers simply ignore the extra arrays) gets one
drawn at load from its seen items with the default budget, and a warning: each load then
draws fresh noise, so the publisher and the service may show different lists and each
load spends the budget again until the model is retrained.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from jobs.model import dp, hybrid
from jobs.model.content_map import ContentMap
from jobs.model.quantize import FACTOR_DTYPES, FactorDtype, QuantizedItems, quantize
from jobs.model.ranking import NO_ITEM, Seen, popular_k, top_k

SCHEMA_VERSION = 1
# A hybrid artifact (item_content and user_profiles) is written as version 2: a reader
# from before the hybrid refuses it instead of silently ranking by ALS alone, i.e. giving
# other lists than the publisher. Everything else stays version 1, readable by both.
HYBRID_SCHEMA_VERSION = 2
# Beyond this a factor's products overflow float32 scores (rank · 1e15² ≪ 3.4e38 for any
# rank recflow trains would not hold, and an ALS that diverged this far is broken anyway).
MAX_ABS_FACTOR = 1e15
log = logging.getLogger(__name__)


class NonFiniteModelError(ValueError):
    """A model whose factors or popularity hold NaN or infinity: it cannot rank."""


@dataclass
class RecModel:
    user_ids: np.ndarray  # str, row i of user_factors
    item_ids: np.ndarray  # str, row j of item_factors
    user_factors: np.ndarray  # float32 (n_users, rank)
    item_factors: np.ndarray  # float32 (n_items, rank)
    popularity: np.ndarray  # float32 (n_items,), training-window interaction weight
    seen: Seen  # items each user interacted with (excluded from their lists)
    params: dict[str, Any] = field(default_factory=dict)
    # float32 (n_items,): DP noisy counts, -inf where not released (module docstring);
    # None draws one from ``seen`` with the default budget.
    public_popularity: np.ndarray | None = None
    public_budget: dict[str, Any] = field(default_factory=dict)  # what was spent, as published
    # Precision of the scoring operand (module docstring); float32 scores the factors as is.
    factor_dtype: FactorDtype = "float32"
    # bool (n_items,): items ALS never saw, whose factors were mapped from their content
    # (jobs.model.content_map); None when there are none. At most ``cold_cap`` per list.
    cold: np.ndarray | None = None
    content_map: ContentMap | None = None
    # The hybrid score (jobs.model.hybrid): projected content per item (n_items, dims) and
    # each user's content profile (n_users, dims); used when params' hybrid_weight > 0.
    item_content: np.ndarray | None = None
    user_profiles: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.factor_dtype not in FACTOR_DTYPES:
            raise ValueError(
                f"factor_dtype {self.factor_dtype!r}: expected one of {', '.join(FACTOR_DTYPES)}"
            )
        self.user_factors = np.ascontiguousarray(self.user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(self.item_factors, dtype=np.float32)
        self.popularity = np.asarray(self.popularity, dtype=np.float32)
        if self.public_popularity is None:
            users, items = dp.pairs_of(self.seen)
            self.public_popularity, self.public_budget = dp.public_popularity(
                users, items, self.user_ids, self.item_ids, dp.PopularityBudget.default()
            )
        self.public_popularity = np.asarray(self.public_popularity, dtype=np.float32)
        if self.public_popularity.shape != self.popularity.shape:
            raise ValueError(
                f"public_popularity has shape {self.public_popularity.shape}, "
                f"expected {self.popularity.shape}"
            )
        self._check_hybrid()

    def _check_hybrid(self) -> None:
        """Both hybrid arrays or neither, finite, one row per item and per user."""
        if (self.item_content is None) != (self.user_profiles is None):
            raise ValueError("item_content and user_profiles go together: got only one")
        if self.item_content is None or self.user_profiles is None:
            return
        self.item_content = np.ascontiguousarray(self.item_content, dtype=np.float32)
        self.user_profiles = np.ascontiguousarray(self.user_profiles, dtype=np.float32)
        dims = self.item_content.shape[1] if self.item_content.ndim == 2 else -1
        if self.item_content.shape != (len(self.item_ids), dims) or self.user_profiles.shape != (
            len(self.user_ids),
            dims,
        ):
            raise ValueError(
                f"item_content {self.item_content.shape} and user_profiles "
                f"{self.user_profiles.shape}: expected ({len(self.item_ids)}, d) and "
                f"({len(self.user_ids)}, d)"
            )
        if not (np.isfinite(self.item_content).all() and np.isfinite(self.user_profiles).all()):
            raise ValueError("item_content or user_profiles hold non-finite values")

    @property
    def hybrid_weight(self) -> float:
        """Weight of the content term in every score (0: ALS alone), as trained; a weight
        that is not a positive finite number (a hand-edited artifact) means ALS alone."""
        if self.item_content is None:
            return 0.0
        return hybrid.weight_of(self.params.get("hybrid_weight", 0.0))

    @property
    def hybrid_recent(self) -> int:
        """How many latest items a stored profile is the mean of."""
        return int(self.params.get("hybrid_recent_items", hybrid.DEFAULT_RECENT))

    @property
    def scoring_items(self) -> np.ndarray:
        """The item operand of every score: the factors, plus the content when hybrid.

        A float32 model keeps it (``_augmented_items``); a quantized one builds it only
        to quantize it, so it holds no float32 copy beside its int8/float16 operand.
        """
        if self.hybrid_weight > 0 and self.item_content is not None:
            if self.factor_dtype == "float32":
                return self._augmented_items
            return hybrid.augment(self.item_factors, self.item_content)
        return self.item_factors

    @cached_property
    def _augmented_items(self) -> np.ndarray:
        assert self.item_content is not None
        return hybrid.augment(self.item_factors, self.item_content)

    @property
    def scoring_rows(self) -> np.ndarray | None:
        """What top_k's exact rescoring gathers from (``item_factors`` argument): the
        float32 item operand, or None for a quantized model (top_k reads its operand)."""
        return self.scoring_items if self.factor_dtype == "float32" else None

    def scoring_vector(self, vector: np.ndarray, profile: np.ndarray | None) -> np.ndarray:
        """A user's operand from their ALS vector and content profile (one user, 1-D)."""
        if self.hybrid_weight <= 0 or self.item_content is None:
            return np.asarray(vector, dtype=np.float32)
        if profile is None:
            profile = np.zeros(self.item_content.shape[1], dtype=np.float32)
        return hybrid.user_operand(vector, profile, self.hybrid_weight)

    def scoring_users(self, rows: np.ndarray) -> np.ndarray:
        """The user operand of the given rows (their stored factors and profiles)."""
        if self.hybrid_weight <= 0 or self.user_profiles is None:
            return self.user_factors[rows]
        return hybrid.user_operand(
            self.user_factors[rows], self.user_profiles[rows], self.hybrid_weight
        )

    @property
    def cold_cap(self) -> int:
        """Cold items allowed per list, as the training run recorded it (so the publisher
        and the service, which both read it from here, return the same lists)."""
        return int(self.params.get("cold_items_per_list", 0))

    @cached_property
    def warm(self) -> np.ndarray:
        """Items ALS trained on (their factors came from interactions)."""
        return np.ones(len(self.item_ids), bool) if self.cold is None else ~self.cold

    def with_cold_items(
        self, item_ids: np.ndarray, vectors: np.ndarray, cmap: ContentMap
    ) -> RecModel:
        """This model plus the given catalog items it does not know, with factors mapped
        from their content vectors; appended after the trained items, so every stored
        index (seen items) keeps its meaning. No popularity: they appear in no popular
        list until people interact with them and a training learns them."""
        known = self.item_index
        new = np.array([str(i) not in known for i in item_ids], dtype=bool)
        ids = np.asarray(item_ids).astype(str)[new]
        ids, first = np.unique(ids, return_index=True)
        vecs = np.asarray(vectors)[new][first]
        n_old = len(self.item_ids)
        cold = np.zeros(n_old + len(ids), dtype=bool)
        if self.cold is not None:
            cold[:n_old] = self.cold
        cold[n_old:] = True
        return replace(
            self,
            item_ids=np.concatenate([self.item_ids.astype(str), ids]),
            item_factors=np.vstack([self.item_factors, cmap.apply(vecs)]),
            popularity=np.concatenate([self.popularity, np.zeros(len(ids), np.float32)]),
            public_popularity=np.concatenate(
                [self.public_popularity, np.full(len(ids), -np.inf, np.float32)]
            ),
            cold=cold if cold.any() else None,
            content_map=cmap,
            # No content term for them here; jobs.train.training attaches the hybrid after.
            item_content=None
            if self.item_content is None
            else np.vstack(
                [self.item_content, np.zeros((len(ids), self.item_content.shape[1]), np.float32)]
            ),
        )

    def with_factor_dtype(self, dtype: str) -> RecModel:
        """The same model scoring in ``dtype`` (a new object: the operand is cached)."""
        return replace(self, factor_dtype=dtype)  # type: ignore[arg-type]

    @cached_property
    def user_index(self) -> dict[str, int]:
        return {str(u): i for i, u in enumerate(self.user_ids)}

    @cached_property
    def item_index(self) -> dict[str, int]:
        return {str(v): j for j, v in enumerate(self.item_ids)}

    @cached_property
    def item_factors_t(self) -> np.ndarray | QuantizedItems:
        """Item factors as the (rank, items) operand top_k wants, in ``factor_dtype``.

        Quantized, no transposed float32 copy is kept: rows that are not finite are zeroed
        first (``item_ok`` keeps them out of every list, and quantize refuses NaN).
        """
        items = self.scoring_items
        if self.factor_dtype == "float32":
            return np.ascontiguousarray(items.T)
        finite = np.isfinite(items).all(axis=1)
        factors = items if finite.all() else np.where(finite[:, None], items, 0)
        quantized = quantize(factors, self.factor_dtype)
        return quantized if finite.all() else replace(quantized, ok=finite)

    @cached_property
    def user_ok(self) -> np.ndarray:
        """Users whose factor row is finite (the others are served popularity)."""
        return np.isfinite(self.user_factors).all(axis=1)

    @cached_property
    def item_ok(self) -> np.ndarray:
        """Items whose factor row and popularity are finite (the others never appear)."""
        ok = np.isfinite(self.item_factors).all(axis=1) & np.isfinite(self.popularity)
        if self.hybrid_weight > 0 and self.item_content is not None:
            ok &= np.isfinite(self.item_content).all(axis=1)
        return ok

    def non_finite(self) -> dict[str, int]:
        """How many user rows, item rows and popularity entries are NaN or infinite."""
        return {
            "user_rows": int((~self.user_ok).sum()),
            "item_rows": int((~np.isfinite(self.item_factors).all(axis=1)).sum()),
            "popularity": int((~np.isfinite(self.popularity)).sum()),
        }

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteModelError` unless every factor and popularity is finite
        and every factor within ±``MAX_ABS_FACTOR`` (beyond, scores overflow float32)."""
        bad = {name: n for name, n in self.non_finite().items() if n}
        if bad:
            raise NonFiniteModelError(
                "model has non-finite values ("
                + ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in bad.items())
                + "): refusing to register or publish it"
            )
        huge = {
            "user rows": int((np.abs(self.user_factors) > MAX_ABS_FACTOR).any(axis=1).sum()),
            "item rows": int((np.abs(self.item_factors) > MAX_ABS_FACTOR).any(axis=1).sum()),
        }
        if any(huge.values()):
            raise NonFiniteModelError(
                f"model has factors beyond ±{MAX_ABS_FACTOR:g} ("
                + ", ".join(f"{n} {name}" for name, n in huge.items() if n)
                + "), whose scores overflow: refusing to register or publish it"
            )

    @property
    def rank(self) -> int:
        return int(self.item_factors.shape[1])

    # -- scoring ---------------------------------------------------------------------

    def recommend_rows(
        self, rows: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (item indices, scores) for user rows, excluding their seen items.

        A user whose factor row is not finite gets the popularity list (see ``user_ok``).
        """
        rows = np.asarray(rows)
        idx, scores = top_k(
            self.scoring_users(rows),
            self.scoring_rows,
            k,
            seen=self.seen,
            rows=rows,
            allowed=allowed,
            items_t=self.item_factors_t,
            item_ok=self.item_ok,
            capped=self.cold,
            cap=self.cold_cap,
        )
        bad = ~self.user_ok[rows]
        if bad.any():
            idx[bad], scores[bad] = self.popular_rows(rows[bad], k, allowed)
        return idx, scores

    def popular_rows(
        self, rows: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The public popular list for the same users, excluding their seen items.

        Ranked by ``public_popularity`` (differentially private): this is what unknown
        callers and ``popular.json`` get, so it may hold fewer than ``k`` items — only
        those the threshold released. Items with non-finite factors are left out here
        too, so no list carries them.
        """
        ok = self.item_ok & np.isfinite(self.public_popularity)
        if allowed is not None:
            ok &= np.asarray(allowed, bool)
        return popular_k(
            np.where(ok, self.public_popularity, 0.0),
            k,
            n_users=len(rows),
            seen=self.seen,
            rows=rows,
            allowed=None if ok.all() else ok,
        )

    def ids(self, idx: np.ndarray) -> list[list[str]]:
        """Item ids for index rows, dropping empty slots."""
        return [[str(self.item_ids[j]) for j in row if j != NO_ITEM] for row in idx]

    # -- persistence -----------------------------------------------------------------

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as fh:
            np.savez(
                fh,
                schema_version=np.array(
                    SCHEMA_VERSION if self.item_content is None else HYBRID_SCHEMA_VERSION
                ),
                user_ids=self.user_ids.astype(str),
                item_ids=self.item_ids.astype(str),
                user_factors=self.user_factors,
                item_factors=self.item_factors,
                popularity=self.popularity,
                public_popularity=self.public_popularity,
                public_budget=np.array(json.dumps(self.public_budget, sort_keys=True)),
                seen_indptr=self.seen.indptr,
                seen_indices=self.seen.indices,
                params=np.array(json.dumps(self.params, sort_keys=True, default=str)),
                **self._content_arrays(),
            )
        tmp.replace(path)
        return path

    def _content_arrays(self) -> dict[str, np.ndarray]:
        """The cold mask and the content map, when there are (older readers ignore them)."""
        out: dict[str, np.ndarray] = {}
        if self.cold is not None:
            out["cold"] = self.cold
        if self.item_content is not None and self.user_profiles is not None:
            out["item_content"] = self.item_content
            out["user_profiles"] = self.user_profiles
        if self.content_map is not None:
            cm = self.content_map
            out["content_map"] = cm.as_array()
            out["content_map_meta"] = np.array(
                json.dumps(
                    {
                        "model": cm.model,
                        "reg": cm.reg,
                        "holdout_r2": cm.holdout_r2,
                        "n_items": cm.n_items,
                    }
                )
            )
        return out

    @classmethod
    def load(cls, path: Path | str, factor_dtype: FactorDtype = "float32") -> RecModel:
        """The model at ``path``, scored in ``factor_dtype`` (the file is float32 anyway)."""
        with np.load(path, allow_pickle=False) as data:
            version = int(data["schema_version"])
            if version not in (SCHEMA_VERSION, HYBRID_SCHEMA_VERSION):
                raise ValueError(
                    f"{path}: model schema {version}, expected {SCHEMA_VERSION}"
                    f" or {HYBRID_SCHEMA_VERSION}"
                )
            stored = "public_popularity" in data.files
            model = cls(
                public_popularity=data["public_popularity"] if stored else None,
                public_budget=json.loads(str(data["public_budget"])) if stored else {},
                user_ids=data["user_ids"],
                item_ids=data["item_ids"],
                user_factors=data["user_factors"],
                item_factors=data["item_factors"],
                popularity=data["popularity"],
                seen=Seen(data["seen_indptr"], data["seen_indices"]),
                params=json.loads(str(data["params"])),
                factor_dtype=factor_dtype,
                cold=data["cold"].astype(bool) if "cold" in data.files else None,
                content_map=_content_map_of(data),
                **_hybrid_arrays_of(data, path),
            )
        if not stored:
            log.warning(
                "%s: no public_popularity (written before differential privacy): drew one"
                " now from its seen items (%s); each load draws anew, so publish and the"
                " service may differ and each load spends the budget again: retrain",
                path,
                model.public_budget,
            )
        bad = {name: n for name, n in model.non_finite().items() if n}
        if bad:
            # Loaded anyway: the ranker masks those rows (see the module docstring), and
            # refusing here would take the service and publishing down with it.
            log.warning("%s: non-finite values %s; those rows are masked in ranking", path, bad)
        return model


def _content_map_of(data: Any) -> ContentMap | None:
    if "content_map" not in data.files:
        return None
    meta = json.loads(str(data["content_map_meta"]))
    return ContentMap.from_array(data["content_map"], str(meta.get("model", "")), meta)


def _hybrid_arrays_of(data: Any, path: Path | str) -> dict[str, np.ndarray | None]:
    """The hybrid arrays, when present and usable. A damaged pair (one missing, wrong
    shape, not finite) is dropped with a warning: the model then ranks by ALS alone,
    as a model with non-finite factors still serves (refusing would take the service
    and erasure's rewrite down with it); training never writes such a pair."""
    if "item_content" not in data.files and "user_profiles" not in data.files:
        return {}
    content = data["item_content"] if "item_content" in data.files else None
    profiles = data["user_profiles"] if "user_profiles" in data.files else None
    n_items, n_users = len(data["item_ids"]), len(data["user_ids"])
    ok = (
        content is not None
        and profiles is not None
        and content.ndim == 2
        and content.shape[0] == n_items
        and profiles.shape == (n_users, content.shape[1])
        and np.isfinite(content).all()
        and np.isfinite(profiles).all()
    )
    if not ok:
        log.warning(
            "%s: unusable hybrid arrays (item_content/user_profiles): ranking by ALS alone", path
        )
        return {}
    return {"item_content": content, "user_profiles": profiles}
