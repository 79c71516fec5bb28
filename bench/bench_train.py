"""Training quality and time: MovieLens 100K (both protocols) and ~1 M synthetic events.

Each data set goes the production way (landing → ingest → gold →
``jobs.train.training.train_model``) in a
throwaway data root with its own MLflow store; the script prints P/R/NDCG/MAP@10 for
ALS and the popularity baseline under the time-based and the stratified 75/25 protocol,
plus wall times.

Run: .venv/bin/python bench/bench_train.py [--movielens PATH] [--synthetic-days 4]
     [--skip-synthetic]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from jobs.config import Settings, load_settings
from jobs.ingest.steps import run_interval
from jobs.sources.movielens import import_movielens
from jobs.sources.shop import generate
from jobs.train import training as train


def table(result: train.TrainResult, k: int) -> None:
    print(train.metrics_table(result.metrics, k))
    print(f"best params (time validation) {result.params}")
    print(f"best params (stratified validation) {result.stratified_params}")
    print(f"candidates {result.candidates}")


def timed_training(settings: Settings) -> train.TrainResult:
    t0 = time.perf_counter()
    result = train.train_model(settings)
    print(
        f"  training run (search {len(result.candidates)} candidates + test + stratified +"
        f" final fit, MLflow logging): {time.perf_counter() - t0:.1f} s;"
        f" one fit of the best on the train part: {result.metrics['fit_seconds']:.1f} s"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--movielens",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ml-100k",
    )
    parser.add_argument("--synthetic-users", type=int, default=30_000)
    parser.add_argument("--synthetic-days", type=int, default=4)
    parser.add_argument("--skip-synthetic", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_root=Path(tmp) / "ml")
        report = import_movielens(args.movielens, settings)
        first = datetime.fromisoformat(report.first_ts).replace(minute=0, second=0, microsecond=0)
        last = datetime.fromisoformat(report.last_ts) + timedelta(hours=1)
        t0 = time.perf_counter()
        run_interval(first.isoformat(), last.isoformat(), settings=settings)
        print(
            f"MovieLens 100K: {report.ratings:,} ratings ingested in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        table(timed_training(settings), settings.eval_k)

        if args.skip_synthetic:
            return
        settings = load_settings(
            data_root=Path(tmp) / "shop", gen_users=args.synthetic_users, gen_items=2_000
        )
        report = generate(settings, days=args.synthetic_days)
        start = datetime.fromisoformat(settings.gen_start)
        t0 = time.perf_counter()
        run_interval(
            start.isoformat(),
            (start + timedelta(days=args.synthetic_days)).isoformat(),
            settings=settings,
        )
        print(
            f"\nsynthetic shop: {report.lines:,} events ingested in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        table(timed_training(settings), settings.eval_k)


if __name__ == "__main__":
    main()
