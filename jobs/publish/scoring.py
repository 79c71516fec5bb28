"""Batch scoring: the top K of every known user, on one machine or per Spark partition.

Both paths call :func:`jobs.model.ranking.top_k` (via :meth:`RecModel.recommend_rows`), the
function the online service calls for a single user, so a user's published list and the
service's answer are the same list. On one machine, blocks of users are scored by a
small thread pool: the matrix product runs in BLAS and the selection in numpy, both
release the GIL, so the cores stay busy. Past one machine, :func:`score_spark` runs the
same function inside ``mapInPandas`` with the item side broadcast. Both score against
``RecModel.item_factors_t``, so a model loaded with a quantized ``factor_dtype`` is
published with the precision the service answers with.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits

from jobs.model.artifact import RecModel
from jobs.model.ranking import Seen, top_k

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def score_all(
    model: RecModel,
    k: int,
    allowed: np.ndarray | None = None,
    block: int = 256,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` (item indices, scores) for every user row of the model, in row order."""
    n = len(model.user_ids)
    k = min(k, len(model.item_ids))
    idx = np.empty((n, k), dtype=np.int32)
    scores = np.empty((n, k), dtype=np.float32)

    def run(lo: int) -> int:
        rows = np.arange(lo, min(lo + block, n))
        idx[rows], scores[rows] = model.recommend_rows(rows, k, allowed)
        return len(rows)

    workers = workers or os.cpu_count() or 1
    # One BLAS thread per worker: each core then runs its block's product and selection
    # back to back, instead of the pool's threads fighting BLAS's own threads for cores
    # (measured: 2 workers x 1 BLAS thread beat 1 worker x 2 BLAS threads by ~1.5x).
    with (
        threadpool_limits(1, user_api="blas") if workers > 1 else nullcontext(),
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        for done in pool.map(run, range(0, n, block)):
            if progress:
                progress(done)
    return idx, scores


def score_spark(
    spark: SparkSession,
    model: RecModel,
    k: int,
    allowed: np.ndarray | None = None,
    partitions: int = 8,
) -> DataFrame:
    """The same ranking per Spark partition: ``user_id, item_ids, scores`` rows.

    At scale the user side (vector and seen items) would come from a table; here it is
    built from the model. The item side — factors, ids, stock mask — is broadcast once.
    """
    import pandas as pd

    frame = pd.DataFrame(
        {
            "user_id": model.user_ids.astype(str),
            # The hybrid's operand when the model has one (factors and content profile).
            "vector": list(model.scoring_users(np.arange(len(model.user_ids)))),
            "seen": [
                model.seen.indices[model.seen.indptr[u] : model.seen.indptr[u + 1]]
                for u in range(len(model.user_ids))
            ],
        }
    )
    users = spark.createDataFrame(
        frame, "user_id string, vector array<float>, seen array<int>"
    ).repartition(partitions)
    # The scoring operand in the model's factor_dtype (quantized: a quarter or half the
    # bytes to broadcast), with the rows that were finite before quantizing.
    items = spark.sparkContext.broadcast(
        (
            model.item_factors_t,
            model.item_ok,
            model.item_ids.astype(str),
            allowed,
            model.cold,
            model.cold_cap,
        )
    )

    def rank(batches):  # type: ignore[no-untyped-def]
        items_t, finite, item_ids, mask, cold, cap = items.value
        for batch in batches:
            vectors = np.stack(batch["vector"].to_numpy()).astype(np.float32)
            seen = Seen.from_lists(list(batch["seen"]))
            idx, best = top_k(
                vectors,
                None,
                k,
                seen=seen,
                allowed=mask,
                items_t=items_t,
                item_ok=finite,
                capped=cold,
                cap=cap,
            )
            keep = idx >= 0
            yield pd.DataFrame(
                {
                    "user_id": batch["user_id"],
                    "item_ids": [list(item_ids[r[m]]) for r, m in zip(idx, keep, strict=True)],
                    "scores": [list(s[m]) for s, m in zip(best, keep, strict=True)],
                }
            )

    return users.mapInPandas(rank, "user_id string, item_ids array<string>, scores array<float>")
