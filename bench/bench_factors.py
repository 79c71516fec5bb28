"""Quantized item factors (RECFLOW_FACTOR_DTYPE) against float32: lists, memory, latency.

Quality, on real factors: an ``implicit`` ALS fit (CPU, conjugate gradient) on MovieLens
100K and on the generated shop, with each user's last ``--holdout`` interactions by time
held out. For every user with a holdout, the top 50 of the quantized model is compared
with float32's (overlap@50: shared items / 50, averaged over users) and NDCG@10 against
the holdout (binary relevance, seen items excluded) is computed for both.

Speed and memory, on one set of factors of production shape (``--users``, ``--items``,
``--rank``; random normal, since only the shape matters for time): bytes of the scoring
operand and of everything the service holds of the item side, the median latency of
one user (the service's call, ``RecModel.recommend_rows`` with one row), of a block of
256 users, and whole-catalog scoring of every user by the threaded scorer
(``score_all``, as bench/bench_publish.py times it), float32 first, each form measured
in the same process, ratios against float32.

Run: flock /tmp/recflow-bench.lock .venv/bin/python bench/bench_factors.py
     [--users 50000] [--items 10000] [--rank 64] [--k 50] [--repeat 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix

from jobs.config import load_settings
from jobs.model.artifact import RecModel
from jobs.model.quantize import FACTOR_DTYPES
from jobs.model.ranking import Seen
from jobs.publish.scoring import score_all
from jobs.serve.answers import OnlineModel

ML100K = Path(
    os.environ.get("RECFLOW_TEST_ML100K")
    or Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ml-100k"
)


@dataclass
class Split:
    """Training interactions (user, item, weight) and each user's held-out items."""

    n_users: int
    n_items: int
    train: pd.DataFrame
    holdout: dict[int, set[int]]


def split_last(frame: pd.DataFrame, n_users: int, n_items: int, last: int) -> Split:
    """Hold out each user's ``last`` latest distinct items (users with at least 2·last)."""
    pairs = (
        frame.sort_values("ts")
        .groupby(["u", "i"], as_index=False)
        .agg(weight=("weight", "sum"), ts=("ts", "max"))
    )
    pairs = pairs.sort_values(["u", "ts", "i"])
    rank_from_end = pairs.groupby("u").cumcount(ascending=False)
    counts = pairs.groupby("u")["i"].transform("size")
    held = (rank_from_end < last) & (counts >= 2 * last)
    holdout = pairs[held].groupby("u")["i"].apply(set).to_dict()
    return Split(n_users, n_items, pairs[~held][["u", "i", "weight"]], holdout)


def movielens(path: Path, last: int) -> Split:
    from jobs.sources.movielens import read_ratings

    ratings = read_ratings(path)
    users, u = np.unique(ratings["user"].to_numpy(), return_inverse=True)
    items, i = np.unique(ratings["item"].to_numpy(), return_inverse=True)
    frame = pd.DataFrame(
        {"u": u, "i": i, "weight": ratings["rating"].to_numpy(float), "ts": ratings["ts"]}
    )
    return split_last(frame, len(users), len(items), last)


def shop(n_users: int, n_items: int, days: int, last: int) -> Split:
    """Events of the generated shop (jobs.sources.shop), weighted as gold weights them."""
    from jobs.sources.shop import ShopSpec, build_world, simulate_day

    settings = load_settings()
    spec = ShopSpec(
        seed=settings.seed,
        n_users=n_users,
        n_items=n_items,
        sessions_per_user_day=settings.gen_sessions_per_user_day,
        start=settings.gen_start,
    )
    world = build_world(spec)
    events = pd.concat([simulate_day(spec, world, d) for d in range(days)], ignore_index=True)
    weights = events["event_type"].map(settings.event_weights).fillna(0.0)
    events = events[weights > 0].assign(weight=weights[weights > 0])
    u = np.unique(events["user_id"].to_numpy(), return_inverse=True)[1]
    i = np.unique(events["item_id"].to_numpy(), return_inverse=True)[1]
    frame = pd.DataFrame(
        {"u": u, "i": i, "weight": events["weight"].to_numpy(), "ts": events["_ts_ms"].to_numpy()}
    )
    return split_last(frame, int(u.max()) + 1, int(i.max()) + 1, last)


def fit(split: Split, rank: int = 64, iterations: int = 15) -> RecModel:
    """An implicit-ALS model of the training interactions (single-threaded, seeded)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    t = split.train
    matrix = csr_matrix(
        (t["weight"].to_numpy(np.float32), (t["u"].to_numpy(), t["i"].to_numpy())),
        shape=(split.n_users, split.n_items),
    )
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(
            factors=rank,
            regularization=0.05,
            alpha=2.0,
            iterations=iterations,
            random_state=7,
            num_threads=1,
        )
        als.fit(matrix, show_progress=False)
    seen = [matrix.indices[matrix.indptr[r] : matrix.indptr[r + 1]] for r in range(split.n_users)]
    return RecModel(
        user_ids=np.array([str(r) for r in range(split.n_users)]),
        item_ids=np.array([str(j) for j in range(split.n_items)]),
        user_factors=als.user_factors,
        item_factors=als.item_factors,
        popularity=np.asarray(matrix.sum(axis=0)).ravel(),
        seen=Seen.from_lists(seen),
        public_popularity=np.zeros(split.n_items, np.float32),
    )


def ndcg_at(idx: np.ndarray, holdout: list[set[int]], k: int = 10) -> float:
    """Mean NDCG@k with binary relevance over the users of ``holdout``."""
    gains = 1.0 / np.log2(np.arange(2, k + 2))
    total = 0.0
    for row, truth in zip(idx[:, :k], holdout, strict=True):
        dcg = sum(g for g, j in zip(gains, row, strict=False) if j in truth)
        total += dcg / gains[: min(k, len(truth))].sum()
    return total / len(holdout)


def overlap_at(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of ``a``'s items each row of ``b`` also holds."""
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=True)]))


def quality(name: str, split: Split, k: int = 50) -> None:
    base = fit(split)
    users = np.array(sorted(split.holdout))
    truth = [split.holdout[u] for u in users]
    ref, _ = base.recommend_rows(users, k)
    print(
        f"{name}: {split.n_users} users, {split.n_items} items, {len(split.train):,} training"
        f" pairs, {len(users)} users with a holdout; rank {base.rank}"
    )
    print(f"  float32 NDCG@10 {ndcg_at(ref, truth):.4f}")
    for dtype in FACTOR_DTYPES[1:]:
        model = _as(base, dtype)
        idx, _ = model.recommend_rows(users, k)
        ndcg = ndcg_at(idx, truth)
        print(
            f"  {dtype:7s} overlap@{k} {overlap_at(ref, idx):.4f}  NDCG@10 {ndcg:.4f}"
            f" (Δ {ndcg - ndcg_at(ref, truth):+.4f})  identical lists"
            f" {np.mean((idx == ref).all(axis=1)):.3f}"
        )


def _as(model: RecModel, dtype: str) -> RecModel:
    return model.with_factor_dtype(dtype)


def _median_ms(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def speed(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(3)
    base = RecModel(
        user_ids=np.array([str(u) for u in range(args.users)]),
        item_ids=np.array([str(j) for j in range(args.items)]),
        user_factors=rng.normal(0, 0.3, (args.users, args.rank)),
        item_factors=rng.normal(0, 0.3, (args.items, args.rank)),
        popularity=rng.random(args.items),
        seen=Seen.from_lists(
            [rng.choice(args.items, 10, replace=False) for _ in range(args.users)]
        ),
        public_popularity=np.zeros(args.items, np.float32),
    )
    print(
        f"\nspeed: {args.users:,} users, {args.items:,} items, rank {args.rank}, k {args.k};"
        f" {os.cpu_count()} cores; medians of {args.repeat} calls"
    )
    print(
        f"  {'dtype':7s} {'operand MB':>10s} {'service MB':>10s} {'1 user ms':>10s}"
        f" {'256 users ms':>13s} {'all users s':>12s} {'users/s':>9s}"
    )
    first: dict[str, float] = {}
    block = np.arange(256)
    for dtype in FACTOR_DTYPES:
        model = _as(base, dtype)
        t0 = time.perf_counter()
        operand = model.item_factors_t
        load_ms = (time.perf_counter() - t0) * 1000
        size = operand.nbytes
        # What the service holds of the item side: the model's float32 factors (fold-in,
        # save), the scoring operand, and OnlineModel's unit vectors and their transpose
        # (/similar, float32 whatever factor_dtype is).
        online = OnlineModel.of(model)
        held = (
            model.item_factors.nbytes + size + online.unit_items.nbytes + online.unit_items_t.nbytes
        )
        one = _median_ms(lambda m=model: m.recommend_rows(np.array([17]), args.k), args.repeat)
        many = _median_ms(
            lambda m=model: m.recommend_rows(block, args.k), max(args.repeat // 10, 5)
        )
        t0 = time.perf_counter()
        score_all(model, args.k, block=256, workers=2)
        whole = time.perf_counter() - t0
        figures = {"size": size, "held": held, "one": one, "many": many, "whole": whole}
        first = first or figures
        print(
            f"  {dtype:7s} {size / 1e6:10.2f} {held / 1e6:10.2f} {one:10.3f} {many:13.2f}"
            f" {whole:12.2f}"
            f" {args.users / whole:9,.0f}   (quantize {load_ms:.0f} ms)"
        )
        if dtype != "float32":
            print(
                "          ratio to float32: operand"
                f" {size / first['size']:.3f}, service item side {held / first['held']:.3f},"
                f" 1 user {one / first['one']:.2f},"
                f" 256 users {many / first['many']:.2f}, all users {whole / first['whole']:.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--holdout", type=int, default=5)
    parser.add_argument("--shop-users", type=int, default=5_000)
    parser.add_argument("--shop-items", type=int, default=2_000)
    parser.add_argument("--shop-days", type=int, default=14)
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} at start")
    if not args.skip_quality:
        quality("MovieLens 100K", movielens(ML100K, args.holdout))
        t0 = time.perf_counter()
        data = shop(args.shop_users, args.shop_items, args.shop_days, args.holdout)
        print(f"(shop generated in {timedelta(seconds=round(time.perf_counter() - t0))})")
        quality("generated shop", data)
    speed(args)
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
