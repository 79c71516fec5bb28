"""Confidence weighting of implicit feedback before the ALS solve.

Reads a frame of ``u, i, weight, last_ts`` (codes, as :mod:`jobs.train.data` encodes
them) and returns a copy with ``weight`` transformed. Spark's implicit ALS turns a
weight ``r`` into a confidence ``1 + alpha * r``, so these transforms decide how much
each interaction is trusted:

- ``none``: the gold weight as it is (event-type weights summed per pair);
- ``log``: ``log(1 + r)`` — Hu, Koren & Volinsky's log scaling, so a pair with many
  strong events does not drown everything else;
- ``bm25``: Okapi BM25 on the user × item matrix — saturates repeated interactions
  (``K1``), normalises by how active the user is (``B``) and down-weights items everyone
  interacts with (IDF), which otherwise dominate every list;
- ``tfidf``: ``sqrt(r) * idf(item)``, the simpler cousin of BM25;

and, before any of them, recency: ``r * 0.5 ** (age / half_life)`` with the age measured
from the newest interaction of the frame (the training cut, not the wall clock, so a
backfill weighs exactly like the original run). Each is a searchable hyperparameter.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SCHEMES = ("none", "log", "bm25", "tfidf")
# implicit's defaults for BM25 on interaction counts.
BM25_K1 = 100.0
BM25_B = 0.8
# IDF of an item nearly every user has is ~0 or below: floored so the pair stays a
# (weak) positive. A zero or negative weight would turn it into a negative in Spark.
IDF_FLOOR = 1e-3


def recency(frame: pd.DataFrame, half_life_days: float) -> np.ndarray:
    """Weights halved every ``half_life_days`` of age before the newest pair (0: off)."""
    weight = frame["weight"].to_numpy(np.float64)
    if half_life_days <= 0 or frame.empty:
        return weight
    ts = pd.to_datetime(frame["last_ts"], utc=True)
    age_days = ((ts.max() - ts) / pd.Timedelta(days=1)).to_numpy(np.float64)
    return weight * np.power(0.5, age_days / half_life_days)


def idf(frame: pd.DataFrame, n_users: int) -> np.ndarray:
    """Per-pair inverse document frequency of the item: log(users / (1 + its users))."""
    items = frame["i"].to_numpy()
    df = np.bincount(items)
    return np.maximum(np.log(max(n_users, 1)) - np.log1p(df[items]), IDF_FLOOR)


def apply(
    frame: pd.DataFrame, scheme: str, half_life_days: float = 0.0, n_users: int | None = None
) -> pd.DataFrame:
    """``frame`` with ``weight`` recency-decayed and transformed by ``scheme``."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown weighting {scheme!r}; expected one of {SCHEMES}")
    r = recency(frame, half_life_days)
    n_users = int(frame["u"].max()) + 1 if n_users is None and len(frame) else (n_users or 0)
    if scheme == "log":
        r = np.log1p(r)
    elif scheme == "tfidf":
        r = np.sqrt(r) * idf(frame, n_users)
    elif scheme == "bm25":
        users = frame["u"].to_numpy()
        length = np.bincount(users, weights=r)
        norm = (1 - BM25_B) + BM25_B * length / length[length > 0].mean()
        r = r * (BM25_K1 + 1) / (BM25_K1 * norm[users] + r) * idf(frame, n_users)
    out = frame.copy()
    out["weight"] = r.astype(np.float32)
    return out
