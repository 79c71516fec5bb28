"""The model artifact: ids, float32 factors, popularity and seen items, without Spark.

One ``.npz`` file holds everything scoring needs, so the batch scorer, the MLflow pyfunc
and the Bento service load the same bytes with numpy alone. ``recommend`` is the single
entry point for a known user (it calls :func:`jobs.model.ranking.top_k`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from jobs.model.ranking import NO_ITEM, Seen, popular_k, top_k

SCHEMA_VERSION = 1


@dataclass
class RecModel:
    user_ids: np.ndarray  # str, row i of user_factors
    item_ids: np.ndarray  # str, row j of item_factors
    user_factors: np.ndarray  # float32 (n_users, rank)
    item_factors: np.ndarray  # float32 (n_items, rank)
    popularity: np.ndarray  # float32 (n_items,), training-window interaction weight
    seen: Seen  # items each user interacted with (excluded from their lists)
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.user_factors = np.ascontiguousarray(self.user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(self.item_factors, dtype=np.float32)
        self.popularity = np.asarray(self.popularity, dtype=np.float32)

    @cached_property
    def user_index(self) -> dict[str, int]:
        return {str(u): i for i, u in enumerate(self.user_ids)}

    @cached_property
    def item_index(self) -> dict[str, int]:
        return {str(v): j for j, v in enumerate(self.item_ids)}

    @cached_property
    def item_factors_t(self) -> np.ndarray:
        """Item factors as a contiguous (rank, items) array, the operand top_k wants."""
        return np.ascontiguousarray(self.item_factors.T)

    @property
    def rank(self) -> int:
        return int(self.item_factors.shape[1])

    # -- scoring ---------------------------------------------------------------------

    def recommend_rows(
        self, rows: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (item indices, scores) for user rows, excluding their seen items."""
        return top_k(
            self.user_factors[rows],
            self.item_factors,
            k,
            seen=self.seen,
            rows=rows,
            allowed=allowed,
            items_t=self.item_factors_t,
        )

    def popular_rows(
        self, rows: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The popularity baseline for the same users, excluding their seen items."""
        return popular_k(
            self.popularity, k, n_users=len(rows), seen=self.seen, rows=rows, allowed=allowed
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
                schema_version=np.array(SCHEMA_VERSION),
                user_ids=self.user_ids.astype(str),
                item_ids=self.item_ids.astype(str),
                user_factors=self.user_factors,
                item_factors=self.item_factors,
                popularity=self.popularity,
                seen_indptr=self.seen.indptr,
                seen_indices=self.seen.indices,
                params=np.array(json.dumps(self.params, sort_keys=True, default=str)),
            )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path | str) -> RecModel:
        with np.load(path, allow_pickle=False) as data:
            version = int(data["schema_version"])
            if version != SCHEMA_VERSION:
                raise ValueError(f"{path}: model schema {version}, expected {SCHEMA_VERSION}")
            return cls(
                user_ids=data["user_ids"],
                item_ids=data["item_ids"],
                user_factors=data["user_factors"],
                item_factors=data["item_factors"],
                popularity=data["popularity"],
                seen=Seen(data["seen_indptr"], data["seen_indices"]),
                params=json.loads(str(data["params"])),
            )
