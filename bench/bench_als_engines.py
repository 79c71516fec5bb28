"""ALS fit times and quality side by side: Spark's ALS against the single-node implicit
engine (issue 17), both through the one seam, :func:`jobs.train.als.fit`.

1. MovieLens 100K (``u.data`` from the shared folder, never copied; ratings mapped to
   gold weights as the importer does), the settings' default recipe;
2. a generated set of ~470 k pairs (users with two favourite genres of twenty, Zipf
   popularity inside a genre, a fifth of the pairs from global popularity), rank 32,
   10 iterations, no weighting — the size PITFALLS.md quotes;

each on a per-user stratified 75/25 split (seed 42): fit wall time (Spark's first fit
after a warm-up fit, so JVM start is not counted) and NDCG@10 with popularity beside it.
3. with ``--recipes``: the five recipes every search tries first (defaults and grid), on
   MovieLens, Spark against the engine and against implicit's stock
   ``AlternatingLeastSquares`` with one constant regulariser (``reg`` x the mean pairs
   per user: the naive mapping the engine's count penalty replaces);
4. with ``--train-model``: one whole ``train_model`` run per engine on MovieLens ingested
   through the lake (search ``--trials`` fits a protocol, test, stratified, final fit,
   MLflow logging), the figure CI pays for every training.

Run: PYTHONPATH=. .venv/bin/python bench/bench_als_engines.py [--recipes] [--train-model]
     [--trials 4] [--skip-sizes]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.config import Settings, load_settings
from jobs.train import als
from jobs.train.data import Encoded, popularity_of
from jobs.train.evaluate import evaluate_per_user
from jobs.train.splits import Holdout, stratified_split

WEIGHTS = {1: 1.0, 2: 1.0, 3: 2.0, 4: 4.0, 5: 8.0}
ENGINES = ("spark", "implicit")


def movielens(path: Path) -> Encoded:
    raw = pd.read_csv(path / "u.data", sep="\t", names=["user_id", "item_id", "rating", "ts"])
    return _encoded(raw["user_id"], raw["item_id"], raw["rating"].map(WEIGHTS), raw["ts"])


def generated(users: int, items: int, per_user: int, seed: int = 0) -> Encoded:
    """~``users * per_user`` distinct pairs with genre structure a model can learn."""
    rng = np.random.default_rng(seed)
    genres = 20
    item_genre = rng.integers(0, genres, items)
    by_genre = [np.flatnonzero(item_genre == g) for g in range(genres)]
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    popularity /= popularity.sum()
    n = rng.poisson(per_user * 1.15, users) + 2  # duplicates are dropped below
    u = np.repeat(np.arange(users), n)
    favourites = rng.integers(0, genres, (users, 2))[u, rng.integers(0, 2, len(u))]
    i = rng.choice(items, len(u), p=popularity)
    from_genre = rng.random(len(u)) < 0.8
    for g in range(genres):
        rows = np.flatnonzero(from_genre & (favourites == g))
        members = by_genre[g]
        weights = 1.0 / np.arange(1, len(members) + 1) ** 0.9
        i[rows] = rng.choice(members, len(rows), p=weights / weights.sum())
    weight = rng.choice([1.0, 2.0, 4.0, 8.0], len(u), p=[0.6, 0.2, 0.15, 0.05])
    ts = 1_700_000_000 + rng.integers(0, 86_400 * 30, len(u))
    frame = pd.DataFrame({"u": u, "i": i, "w": weight, "ts": ts}).drop_duplicates(["u", "i"])
    return _encoded(frame["u"], frame["i"], frame["w"], frame["ts"])


def _encoded(users: Any, items: Any, weights: Any, ts: Any) -> Encoded:
    frame = pd.DataFrame(
        {
            "user_id": "u" + pd.Series(users).astype(str).to_numpy(),
            "item_id": "i" + pd.Series(items).astype(str).to_numpy(),
            "weight": pd.Series(weights).to_numpy(np.float32),
            "last_ts": pd.to_datetime(pd.Series(ts).to_numpy(), unit="s", utc=True),
        }
    )
    return Encoded.from_frame(frame)


def side_by_side(spark: Any, settings: Settings, enc: Encoded, params: als.ALSParams) -> None:
    train, test = stratified_split(enc.frame, 0.75, 42)
    holdout = Holdout.of(train, test, enc.n_users)
    k, n = settings.eval_k, enc.n_items
    pop = evaluate_per_user(holdout, None, None, popularity_of(train, n), k, n)[0]
    print(f"  {len(train):,} training pairs, {enc.n_users:,} users, {n:,} items; {params.label()}")
    print(f"  popularity NDCG@{k} {pop[f'ndcg_at_{k}']:.4f}")
    seconds = {}
    for name in ENGINES:
        engine = replace(als.Engine.from_settings(settings), setting=name)
        started = time.perf_counter()
        u, v = als.fit(spark, train, enc.n_users, n, params, settings.seed, engine)
        seconds[name] = time.perf_counter() - started
        found = evaluate_per_user(holdout, u, v, None, k, n)[0]
        print(f"  {name:>8}: fit {seconds[name]:7.2f} s  NDCG@{k} {found[f'ndcg_at_{k}']:.4f}")
    print(f"  speed-up (spark / implicit): {seconds['spark'] / seconds['implicit']:.1f}x")


def recipes(spark: Any, settings: Settings, enc: Encoded) -> None:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from jobs.train import als_implicit
    from jobs.train.weighting import apply

    train, test = stratified_split(enc.frame, 0.75, 42)
    holdout = Holdout.of(train, test, enc.n_users)
    k, n = settings.eval_k, enc.n_items
    print(f"  recipe | spark | implicit engine | stock implicit, constant reg (NDCG@{k})")
    for params in als.candidates(settings):
        row = []
        for name in ENGINES:
            engine = replace(als.Engine.from_settings(settings), setting=name)
            u, v = als.fit(spark, train, enc.n_users, n, params, settings.seed, engine)
            row.append(evaluate_per_user(holdout, u, v, None, k, n)[0][f"ndcg_at_{k}"])
        weighted = apply(train, params.weighting, params.half_life_days, enc.n_users)
        matrix = als_implicit.confidences(weighted, enc.n_users, n, params.alpha)
        with threadpool_limits(limits=1, user_api="blas"):
            stock = AlternatingLeastSquares(
                factors=params.rank,
                regularization=params.reg * len(weighted) / weighted["u"].nunique(),
                iterations=params.iterations,
                random_state=settings.seed,
            )
            stock.fit(matrix, show_progress=False)
        u, v = np.asarray(stock.user_factors), np.asarray(stock.item_factors)
        row.append(evaluate_per_user(holdout, u, v, None, k, n)[0][f"ndcg_at_{k}"])
        print(f"  {params.label()} | {row[0]:.4f} | {row[1]:.4f} | {row[2]:.4f}")


def train_model_runs(spark: Any, path: Path, tmp: Path, trials: int) -> None:
    from jobs.ingest.steps import run_interval
    from jobs.sources.movielens import import_movielens
    from jobs.train.training import train_model

    base = load_settings(data_root=tmp / "lake", search_trials=trials)
    report = import_movielens(path, base)
    first = datetime.fromisoformat(report.first_ts).replace(minute=0, second=0, microsecond=0)
    # Ingest intervals run on whole hours: up to the hour after the last rating.
    last = datetime.fromisoformat(report.last_ts).replace(minute=0, second=0, microsecond=0)
    last += timedelta(hours=1)
    run_interval(first.isoformat(), last.isoformat(), settings=base)
    seconds = {}
    for name in ENGINES:
        # Own model name each: neither run refits the other's champion for its gate.
        settings = base.model_copy(update={"als_engine": name, "model_name": f"bench-{name}"})
        started = time.perf_counter()
        result = train_model(settings, spark)
        seconds[name] = time.perf_counter() - started
        m = result.metrics
        print(
            f"  {name:>8}: train_model {seconds[name]:7.1f} s ({len(result.candidates)}"
            f" search fits + test + stratified search/test + final), test NDCG@10"
            f" {m['test_ndcg_at_10']:.4f}, stratified NDCG@10 {m['stratified_ndcg_at_10']:.4f},"
            f" gate {result.gate.decision}"
        )
    print(f"  speed-up (spark / implicit): {seconds['spark'] / seconds['implicit']:.1f}x")


def main() -> None:
    from jobs.spark import get_spark

    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--movielens",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ml-100k",
    )
    parser.add_argument("--users", type=int, default=25_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--per-user", type=int, default=17)
    parser.add_argument("--train-model", action="store_true")
    parser.add_argument("--recipes", action="store_true")
    parser.add_argument("--skip-sizes", action="store_true")
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            data_root=Path(tmp) / "var", spark_master="local[2]", spark_shuffle_partitions=4
        )
        spark = get_spark(settings)
        warm = movielens(args.movielens)
        params = als.ALSParams.from_settings(settings)
        # Warm-up: JVM, Spark ML classes and the parquet path, not counted below.
        als.fit(
            spark,
            warm.frame.head(5_000),
            warm.n_users,
            warm.n_items,
            replace(params, iterations=1),
            settings.seed,
            replace(als.Engine.from_settings(settings), setting="spark"),
        )
        if not args.skip_sizes:
            print(f"MovieLens 100K (default recipe, seed {settings.seed}):")
            side_by_side(spark, settings, warm, params)
            big = generated(args.users, args.items, args.per_user)
            print(f"\ngenerated: {len(big.frame):,} pairs")
            side_by_side(spark, settings, big, als.ALSParams(32, 0.1, 1.0, 10, "none", 0.0))
        if args.recipes:
            print("\nMovieLens 100K, stratified 75/25 (seed 42), the search's first recipes:")
            recipes(spark, settings, warm)
        if args.train_model:
            print(
                "\nMovieLens 100K through the lake, one train_model per engine"
                f" ({args.trials} trials):"
            )
            train_model_runs(spark, args.movielens, Path(tmp), args.trials)


if __name__ == "__main__":
    main()
