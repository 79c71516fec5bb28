"""A model artifact without some users: what erasure does to models already trained.

The artifact holds each user's id, factor row, content profile (the hybrid's) and seen
items: personal data. Removing a user's row, profile and seen items removes everything
the artifact holds about them by name; the item factors and popularity remain, which
the user influenced only in aggregate (as one of many), and the next training, which
reads the lake they are no longer in, replaces those too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from jobs.model.artifact import RecModel
from jobs.model.ranking import Seen


def holds(model: RecModel, user_ids: Iterable[str]) -> list[str]:
    """The given user ids the model has a row for."""
    index = model.user_index
    return [u for u in user_ids if u in index]


def without_users(model: RecModel, user_ids: Iterable[str]) -> tuple[RecModel, int]:
    """(the model without those users' rows and seen items, rows removed)."""
    index = model.user_index
    drop = np.array(sorted({index[u] for u in user_ids if u in index}), dtype=np.int64)
    if not len(drop):
        return model, 0
    keep = np.ones(len(model.user_ids), dtype=bool)
    keep[drop] = False
    rows = np.flatnonzero(keep)
    starts, stops = model.seen.indptr[rows], model.seen.indptr[rows + 1]
    seen = Seen.from_lists([model.seen.indices[a:b] for a, b in zip(starts, stops, strict=True)])
    # dataclasses.replace keeps every other field (item factors, popularity, params, and
    # any array a later schema adds) as it is, and drops the cached id index.
    forgotten = dataclasses.replace(
        model,
        user_ids=model.user_ids[rows],
        user_factors=model.user_factors[rows],
        # A content profile is the mean of a person's latest items: theirs, so it goes too.
        user_profiles=None if model.user_profiles is None else model.user_profiles[rows],
        seen=seen,
    )
    return forgotten, len(drop)
