"""Offline quality on MovieLens 100K: ALS (searched), popularity and EASE, both protocols.

Reads MovieLens 100K's ``u.data`` from the shared datasets folder (never copied) and maps
each rating to the weight its event type gets through the importer and the lake (1–2
view 1, 3 click 2, 4 add_to_cart 4, 5 purchase 8; one rating a pair, so that is the
gold weight). It skips the lake on purpose: ingesting MovieLens takes ~2 min and
changes nothing here. Writes only a throwaway MLflow store (the nested search runs).

1. search: ``jobs.train.training.search`` (Optuna TPE, ``--trials`` fits) on a
   stratified 80/20 validation split of seed 42's stratified 75 % training part;
2. stratified 75/25 per user over five split seeds: ALS with the best settings found and
   with the embedded defaults, popularity, EASE (penalty picked on each seed's own
   validation split); per seed NDCG@10 with its bootstrap interval over users, then the
   mean over seeds with a t interval (4 degrees of freedom);
3. time-based per user (each user's latest 10 % held out): its own search on the
   latest 10 % of the rest, then ALS, popularity and EASE on the test slice.

Run: PYTHONPATH=. .venv/bin/python bench/bench_quality.py [--trials 24] [--time-trials 12]
     [--seeds 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.config import Settings, load_settings
from jobs.train import als
from jobs.train.baselines import evaluate_ease
from jobs.train.data import Encoded, popularity_of
from jobs.train.evaluate import evaluate_per_user
from jobs.train.splits import Holdout, stratified_split, user_time_split
from jobs.train.stats import bootstrap_ci
from jobs.train.training import _best, _ease_lambda, search

WEIGHTS = {1: 1.0, 2: 1.0, 3: 2.0, 4: 4.0, 5: 8.0}
T_975_4 = 2.776  # Student t, 97.5 % quantile, 4 degrees of freedom (five seeds)


def load(path: Path) -> Encoded:
    raw = pd.read_csv(path / "u.data", sep="\t", names=["user_id", "item_id", "rating", "ts"])
    frame = pd.DataFrame(
        {
            "user_id": "ml-u" + raw["user_id"].astype(str),
            "item_id": "ml-i" + raw["item_id"].astype(str),
            "weight": raw["rating"].map(WEIGHTS).astype(np.float32),
            "last_ts": pd.to_datetime(raw["ts"], unit="s", utc=True),
        }
    )
    return Encoded.from_frame(frame)


def scored(
    spark: Any,
    settings: Settings,
    enc: Encoded,
    split: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame],
    recipes: dict[str, als.ALSParams],
) -> dict[str, tuple[float, float, float]]:
    """NDCG@K (mean, low, high) of each recipe and the baselines on one split."""
    train, test, fit_part, valid = split
    k, n = settings.eval_k, enc.n_items
    holdout = Holdout.of(train, test, enc.n_users)
    per_user: dict[str, np.ndarray] = {}
    for name, params in recipes.items():
        u, v = als.fit(spark, train, enc.n_users, n, params, settings.seed)
        per_user[name] = evaluate_per_user(holdout, u, v, None, k, n)[1]
    pop = popularity_of(train, n)
    per_user["popularity"] = evaluate_per_user(holdout, None, None, pop, k, n)[1]
    lam = _ease_lambda(settings, enc, fit_part, valid)
    per_user[f"EASE (lambda {lam:g})"] = evaluate_ease(train, holdout, enc.n_users, n, lam, k)[1]
    out = {}
    for name, values in per_user.items():
        ci = bootstrap_ci(values, settings.gate_bootstrap_samples, 0.95, settings.seed)
        out[name] = (ci.estimate, ci.low, ci.high)
    return out


def main() -> None:
    import mlflow

    from jobs.spark import get_spark

    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--movielens",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ml-100k",
    )
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--time-trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--skip-time", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            data_root=Path(tmp) / "var",
            spark_master="local[2]",
            spark_shuffle_partitions=4,
            search_trials=args.trials,
        )
        spark = get_spark(settings)
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        enc = load(args.movielens)
        k = settings.eval_k
        print(
            f"MovieLens 100K: {len(enc.frame):,} ratings, {enc.n_users} users, {enc.n_items} items"
        )
        defaults = als.ALSParams.from_settings(settings)

        s_train, _ = stratified_split(enc.frame, 0.75, 42)
        s_fit, s_valid = stratified_split(s_train, 0.8, 43)
        with mlflow.start_run(run_name="bench search"):
            t0 = time.perf_counter()
            found = search(spark, settings, enc, s_fit, s_valid, False, protocol="stratified")
            wall = time.perf_counter() - t0
        best = _best(found, k)
        print(f"\nsearch (stratified validation, seed 42): {len(found)} trials in {wall:.0f} s")
        for c in sorted(found, key=lambda c: -c[f"validation_ndcg_at_{k}"])[:8]:
            print(f"  {c[f'validation_ndcg_at_{k}']:.4f}  {c['params'].label()}")
        print(f"best: {best.as_dict()}")

        print(f"\nstratified 75/25 per user, NDCG@{k} [95 % bootstrap interval over users]")
        per_seed: dict[str, list[float]] = {}
        for seed in range(1, args.seeds + 1):
            train, test = stratified_split(enc.frame, 0.75, seed)
            fit_part, valid = stratified_split(train, 0.8, seed + 100)
            recipes = {"ALS best": best, "ALS defaults": defaults}
            found_seed = scored(spark, settings, enc, (train, test, fit_part, valid), recipes)
            cells = []
            for name, (mean, low, high) in found_seed.items():
                key = "EASE" if name.startswith("EASE") else name
                per_seed.setdefault(key, []).append(mean)
                cells.append(f"{name} {mean:.4f} [{low:.4f}, {high:.4f}]")
            print(f"  seed {seed}: " + "; ".join(cells))
        print(f"\nmean over {args.seeds} seeds (95 % t interval across seeds):")
        for name, values in per_seed.items():
            arr = np.array(values)
            half = T_975_4 * arr.std(ddof=1) / np.sqrt(len(arr)) if len(arr) > 1 else 0.0
            print(
                f"  {name:<14} {arr.mean():.4f} [{arr.mean() - half:.4f}, {arr.mean() + half:.4f}]"
            )

        if args.skip_time:
            return
        train_full, test = user_time_split(enc.frame, settings.test_fraction)
        train, valid = user_time_split(train_full, settings.validation_fraction)
        with mlflow.start_run(run_name="bench search time"):
            t0 = time.perf_counter()
            budget = settings.model_copy(update={"search_trials": args.time_trials})
            found = search(spark, budget, enc, train, valid, False, protocol="time")
            wall = time.perf_counter() - t0
        t_best = _best(found, k)
        print(f"\ntime-based per user (latest 10 %): search {len(found)} trials in {wall:.0f} s")
        print(f"best: {t_best.as_dict()}")
        recipes = {"ALS best": t_best, "ALS defaults": defaults}
        for name, (mean, low, high) in scored(
            spark, settings, enc, (train_full, test, train, valid), recipes
        ).items():
            print(f"  {name:<18} {mean:.4f} [{low:.4f}, {high:.4f}]")


if __name__ == "__main__":
    main()
