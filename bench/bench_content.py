"""Content signals (issue 18): embedding speed, the content map's cost, cold-item quality.

1. Items embedded per second by ``jobs.content.encoder`` (the generated catalog's texts,
   cleaned by ``jobs.content.text``), and the model's load time.
2. The ridge map's fit (``jobs.model.content_map.fit``, penalty chosen from its grid) on
   the warm items' vectors and ALS factors.
3. The item-cold split of ``jobs.train.cold.evaluate_cold`` (the one every training run
   logs as ``cold_*``): a seeded 10 % of the items with text removed from training, ranked
   for the users who interacted with them by content-mapped factors, by popularity among
   the new items (the other users' interactions) and at random, over ``--seeds`` seeds.
   ALS is the implicit engine with the configured recipe.

Datasets: a generated shop (``--users`` × ``--items``, ``--days`` days simulated in
memory, events weighted as gold weights them) and MovieLens 100K (``--movielens``,
default ../shared/datasets/ml-100k; content = title and genres as the importer writes).

Run: .venv/bin/python bench/bench_content.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.config import Settings, get_settings
from jobs.content.encoder import Encoder
from jobs.content.text import item_text
from jobs.model import content_map
from jobs.train import als_implicit
from jobs.train.cold import evaluate_cold
from jobs.train.data import Encoded

ROOT = Path(__file__).resolve().parents[1]


def shop(
    settings: Settings, users: int, items: int, days: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    from jobs.sources.shop import ShopSpec, build_world, simulate_day

    spec = ShopSpec.from_settings(settings, n_users=users, n_items=items)
    world = build_world(spec)
    events = pd.concat([simulate_day(spec, world, d) for d in range(days)], ignore_index=True)
    events["weight"] = events["event_type"].map(settings.event_weights).fillna(0.0)
    # The generator writes times as ISO strings or epoch milliseconds, as real feeds do.
    raw = events["ts"].astype(str)
    epoch = raw.str.fullmatch(r"\d+")
    ts = pd.to_datetime(raw.where(~epoch), format="ISO8601", utc=True, errors="coerce")
    ts[epoch] = pd.to_datetime(raw[epoch].astype("int64"), unit="ms", utc=True)
    events["ts"] = ts.dt.tz_localize(None)
    events = events[events["ts"].notna()]
    frame = (
        events[events["weight"] > 0]
        .groupby(["user_id", "item_id"], as_index=False)
        .agg(weight=("weight", "sum"), last_ts=("ts", "max"))
    )
    return frame, world.items


def movielens(path: Path, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    from jobs.sources.movielens import ratings_to_interactions, read_items, read_ratings

    frame = ratings_to_interactions(read_ratings(path), settings.event_weights)
    items = read_items(path)
    if not frame["item_id"].isin(items["item_id"]).any():  # raw ids against contract ids
        frame["item_id"] = "ml-i" + frame["item_id"].astype(str)
    return frame, items


def embed(items: pd.DataFrame, encoder: Encoder) -> tuple[np.ndarray, float]:
    texts = [item_text(r) for r in items.to_dict("records")]
    started = time.perf_counter()
    vecs = encoder.embed(texts)
    return vecs, time.perf_counter() - started


def als_fit(settings: Settings, enc: Encoded) -> Callable[[pd.DataFrame, int], tuple]:
    """(frame, seed) -> (user, item) factors: implicit ALS with the configured recipe."""

    def fit(frame: pd.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray]:
        return als_implicit.fit(
            frame,
            enc.n_users,
            enc.n_items,
            settings.als_rank,
            settings.als_reg,
            settings.als_alpha,
            settings.als_iterations,
            seed,
        )

    return fit


def report(
    name: str, frame: pd.DataFrame, items: pd.DataFrame, settings: Settings, seeds: int
) -> None:
    encoder = Encoder()
    vecs, _ = embed(items, encoder)
    enc = Encoded.from_frame(frame)
    ids = items["item_id"].astype(str).to_numpy()

    fit = als_fit(settings, enc)

    # The map's cost, on all warm items (what a training run pays once).
    _, v = fit(enc.frame, settings.seed)
    from jobs.train.cold import content_rows

    codes, warm = content_rows(enc.item_ids, ids, vecs)
    started = time.perf_counter()
    cmap = content_map.fit(warm, v[codes], encoder.model_id)
    fit_s = time.perf_counter() - started
    assert cmap is not None
    print(
        f"\n{name}: {len(frame):,} pairs, {enc.n_users:,} users, {enc.n_items:,} items;"
        f" content map on {cmap.n_items:,} items, rank {v.shape[1]}: {fit_s * 1000:.0f} ms,"
        f" penalty {cmap.reg:g}, held-out R² {cmap.holdout_r2:.3f}"
    )
    found: dict[str, list[float]] = {}
    for s in range(seeds):
        got = evaluate_cold(
            enc.frame,
            enc.n_users,
            enc.item_ids,
            ids,
            vecs,
            fit=lambda f, s=s: fit(f, settings.seed + s),
            k=settings.eval_k,
            seed=settings.seed + s,
        )
        for key, value in got.items():
            found.setdefault(key, []).append(value)
    k = settings.eval_k
    print(
        f"  cold items {statistics.mean(found['cold_eval_items']):.0f}, users"
        f" {statistics.mean(found['cold_eval_users']):.0f} (mean of {seeds} seeds)"
    )
    print(f"  | ranking | NDCG@{k} | recall@{k} |")
    print("  |---|---|---|")
    for label, prefix in (
        ("content-mapped factors", "cold"),
        ("popularity among new items", "cold_popular_new"),
        ("random", "cold_random"),
    ):
        n = found[f"{prefix}_ndcg_at_{k}"]
        r = found[f"{prefix}_recall_at_{k}"]
        spread = f" ± {statistics.stdev(n):.4f}" if len(n) > 1 else ""
        print(f"  | {label} | {statistics.mean(n):.4f}{spread} | {statistics.mean(r):.4f} |")


def cap_cost(users: int = 512, items: int = 20_000, rank: int = 64, cold: float = 0.02) -> None:
    """What the per-list cap on cold items costs the one ranking function: the same block
    scored without cold items and with ``cold`` of the items capped at 2 (median of 7)."""
    from jobs.model.ranking import top_k

    rng = np.random.default_rng(0)
    u = rng.normal(size=(users, rank)).astype(np.float32)
    v = rng.normal(size=(items, rank)).astype(np.float32)
    items_t = np.ascontiguousarray(v.T)
    capped = rng.random(items) < cold

    def timed(**kw: object) -> float:
        runs = []
        for _ in range(7):
            started = time.perf_counter()
            top_k(u, v, 50, items_t=items_t, **kw)  # type: ignore[arg-type]
            runs.append(time.perf_counter() - started)
        return statistics.median(runs)

    base, with_cap = timed(), timed(capped=capped, cap=2)
    print(
        f"\ncap cost ({users} users x {items:,} items, rank {rank}, K 50, {cold:.0%} cold, cap 2):"
        f" {base * 1000:.0f} ms without cold items, {with_cap * 1000:.0f} ms with them"
        f" ({with_cap / base:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--embed-items", type=int, default=50_000)
    parser.add_argument("--movielens", type=Path, default=ROOT.parent / "shared/datasets/ml-100k")
    parser.add_argument("--cap-only", action="store_true", help="only the cap's cost")
    args = parser.parse_args()
    settings = get_settings()
    cap_cost()
    if args.cap_only:
        return

    started = time.perf_counter()
    encoder = Encoder()
    encoder.embed(["warm up"])
    load_s = time.perf_counter() - started
    from jobs.sources.shop import ShopSpec, build_world

    catalog = build_world(ShopSpec.from_settings(settings, n_items=args.embed_items)).items
    _, seconds = embed(catalog, encoder)
    print(
        f"embedding ({encoder.model_id}): model load {load_s:.2f} s;"
        f" {len(catalog):,} catalog texts in {seconds:.2f} s ="
        f" {len(catalog) / seconds:,.0f} items/s"
    )
    frame, items = shop(settings, args.users, args.items, args.days)
    report(f"generated shop ({args.days} days)", frame, items, settings, args.seeds)
    if args.movielens.exists():
        frame, items = movielens(args.movielens, settings)
        report("MovieLens 100K", frame, items, settings, args.seeds)


if __name__ == "__main__":
    main()
