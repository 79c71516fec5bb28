"""Session-aware answers against the static list, offline: next-interaction NDCG@10.

The protocol of ``jobs.train.session_eval`` (the one each training run logs as
``test_session_*``): each user's latest ``RECFLOW_TEST_FRACTION`` of interactions is
replayed as a session after training; at each step the next interaction is ranked by
the static list (the CDN's), the static list without the session's items, and the
session-aware answer (the service's ``als_session``). ALS is the implicit engine with the
configured recipe (rank, reg, alpha, iterations), over ``--seeds`` seeds.

Datasets: MovieLens 100K (``--movielens``, default ../shared/datasets/ml-100k) and the
generated shop's ``gold/interactions`` under RECFLOW_DATA_ROOT (after ``make demo``).

Run: .venv/bin/python bench/session_ndcg.py [--seeds 3] [--movielens PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd

from jobs.config import Settings, get_settings
from jobs.sources.movielens import ratings_to_interactions, read_ratings
from jobs.train import als_implicit
from jobs.train.data import Encoded, seen_of
from jobs.train.session_eval import session_ndcg
from jobs.train.splits import user_time_split

ROOT = Path(__file__).resolve().parents[1]


def movielens(path: Path, settings: Settings) -> pd.DataFrame:
    return ratings_to_interactions(read_ratings(path), settings.event_weights)


def shop(settings: Settings) -> pd.DataFrame | None:
    from jobs import lake_light

    table = lake_light.open_table(settings, "interactions")
    if table is None:
        return None
    rows = lake_light.rows(
        "SELECT user_id, item_id, weight, last_ts FROM t WHERE weight > 0", t=table
    )
    return pd.DataFrame(rows)


def measure(frame: pd.DataFrame, settings: Settings, seeds: int) -> dict[str, list[float]]:
    enc = Encoded.from_frame(frame)
    train, test = user_time_split(enc.frame, settings.test_fraction)
    test = test[test["i"].isin(train["i"].unique())]
    n_users, n_items = len(enc.user_ids), len(enc.item_ids)
    seen = seen_of(train, n_users)
    found: dict[str, list[float]] = {}
    for seed in range(seeds):
        u, v = als_implicit.fit(
            train,
            n_users,
            n_items,
            settings.als_rank,
            settings.als_reg,
            settings.als_alpha,
            settings.als_iterations,
            settings.seed + seed,
        )
        started = time.perf_counter()
        got = session_ndcg(test, seen, u, v, settings.als_reg, settings.als_alpha, settings.eval_k)
        got["seconds"] = time.perf_counter() - started
        for name, value in got.items():
            found.setdefault(name, []).append(value)
    return found


def report(name: str, frame: pd.DataFrame, settings: Settings, seeds: int) -> None:
    found = measure(frame, settings, seeds)
    k = settings.eval_k
    mean = {n: statistics.mean(v) for n, v in found.items()}
    spread = {n: (min(v), max(v)) for n, v in found.items()}
    static, unseen = mean[f"session_static_ndcg_at_{k}"], mean[f"session_static_unseen_ndcg_at_{k}"]
    aware = mean[f"session_aware_ndcg_at_{k}"]
    print(
        f"{name}: {frame['user_id'].nunique():,} users, {frame['item_id'].nunique():,} items, "
        f"{len(frame):,} pairs; {int(mean['session_steps']):,} (user, step) pairs, "
        f"{seeds} seeds, {mean['seconds']:.1f} s per evaluation"
    )
    for label, key in (
        ("static (CDN list)", f"session_static_ndcg_at_{k}"),
        ("static without session items", f"session_static_unseen_ndcg_at_{k}"),
        ("session-aware (als_session)", f"session_aware_ndcg_at_{k}"),
    ):
        lo, hi = spread[key]
        print(f"  NDCG@{k} {label:<30} {mean[key]:.4f}  (seeds {lo:.4f} .. {hi:.4f})")
    print(
        f"  session-aware / static {aware / static:.3f}x, "
        f"/ static without session {aware / unseen:.3f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--movielens", type=Path, default=ROOT.parent / "shared" / "datasets" / "ml-100k"
    )
    args = parser.parse_args()
    settings = get_settings()
    print(
        f"recipe: rank {settings.als_rank}, reg {settings.als_reg}, alpha {settings.als_alpha}, "
        f"{settings.als_iterations} iterations; test fraction {settings.test_fraction}"
    )
    if args.movielens.is_dir():
        report("MovieLens 100K", movielens(args.movielens, settings), settings, args.seeds)
    frame = shop(settings)
    if frame is None or frame.empty:
        print(f"no gold/interactions under {settings.data_root}: run `make demo` for the shop")
    else:
        report("generated shop", frame, settings, args.seeds)


if __name__ == "__main__":
    main()
