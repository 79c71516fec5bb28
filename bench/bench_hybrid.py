"""The hybrid score (issue 18 part 3): what content similarity adds to ALS on warm items.

For each dataset, the training run's time protocol (``jobs.train.splits.user_time_split``:
each user's latest ``test_fraction`` is the test slice, the latest ``validation_fraction``
of the rest the validation slice):

1. ALS (the implicit engine, the configured recipe) fitted on the fit part; the content
   weight picked on the validation slice by ``jobs.train.blend.pick_weight`` (what every
   search trial does);
2. ALS refitted on everything before the test slice, and NDCG@K / recall@K on the test
   slice for ALS alone, for the picked weight, and for every weight of the grid (the
   picked one is not chosen on these numbers);
3. over ``--seeds`` seeds (ALS's initialisation).

Then the cost: ``top_k`` over all users with the augmented operands against ALS alone,
in the same process. Last, ``/similar`` for warm items (``--similar``): would blending
content into the item-item cosine help? Each test user's latest training item is the
anchor, their test items the truth (next-item NDCG@10 and hit@10, their training items
excluded), ranked by the cosine of ``[unit(y_i), λ c_i]`` for several λ (0 is what the
service ranks by).

Datasets: a generated shop (``--users`` x ``--items``, ``--days`` days simulated in
memory; each pair's time is its latest event) and MovieLens 100K (``--movielens``).

Run: .venv/bin/python bench/bench_hybrid.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_content import als_fit, movielens, shop  # the same datasets (run from bench/)

from jobs.config import Settings, get_settings
from jobs.content.encoder import Encoder
from jobs.content.text import item_text
from jobs.model.ranking import top_k
from jobs.train import blend
from jobs.train.data import Encoded
from jobs.train.evaluate import evaluate
from jobs.train.splits import Holdout, user_time_split

ROOT = Path(__file__).resolve().parents[1]


def report(
    name: str, frame: pd.DataFrame, items: pd.DataFrame, settings: Settings, seeds: int
) -> None:
    vecs = Encoder().embed([item_text(r) for r in items.to_dict("records")])
    ids = items["item_id"].astype(str).to_numpy()
    enc = Encoded.from_frame(frame)
    content = blend.TrainContent.of(settings, enc.item_ids, (ids, vecs, "wordllama"))
    assert content is not None, "no content: nothing to blend"
    k = settings.eval_k
    train_full, test = user_time_split(enc.frame, settings.test_fraction)
    fit_part, valid = user_time_split(train_full, settings.validation_fraction)
    h_valid = Holdout.of(fit_part, valid, enc.n_users)
    h_test = Holdout.of(train_full, test, enc.n_users)
    p_valid = content.profiles(fit_part, enc.n_users)
    p_test = content.profiles(train_full, enc.n_users)

    fit = als_fit(settings, enc)

    picked: list[float] = []
    rows: dict[str, list[float]] = {}
    for s in range(seeds):
        u, v = fit(fit_part, settings.seed + s)
        w, on_valid = blend.pick_weight(h_valid, u, v, content, p_valid, k, enc.n_items)
        picked.append(w)
        for x, got in on_valid.items():
            rows.setdefault(f"validation {x:g}", []).append(got[f"ndcg_at_{k}"])
        u, v = fit(train_full, settings.seed + s)
        for label, weight in [("ALS alone", 0.0), ("hybrid, picked weight", w)] + [
            (f"weight {x:g}", x) for x in content.weights if x > 0
        ]:
            got = evaluate(
                h_test, *blend.operands(u, v, weight, content, p_test), None, k, enc.n_items
            )
            rows.setdefault(label, []).append(got[f"ndcg_at_{k}"])
            rows.setdefault(label + " recall", []).append(got[f"recall_at_{k}"])
    print(
        f"\n{name}: {len(frame):,} pairs, {enc.n_users:,} users, {enc.n_items:,} items,"
        f" {len(h_test.users):,} test users; content {content.items.shape[1]} dims;"
        f" picked weights {picked}"
    )
    for x in content.weights:
        n = rows.pop(f"validation {x:g}")
        print(f"  validation NDCG@{k} at weight {x:g}: {statistics.mean(n):.4f}")
    print(f"  | scored by | test NDCG@{k} | recall@{k} |")
    print("  |---|---|---|")
    for label in [x for x in rows if not x.endswith(" recall")]:
        n, r = rows[label], rows[label + " recall"]
        spread = f" ± {statistics.stdev(n):.4f}" if len(n) > 1 else ""
        print(f"  | {label} | {statistics.mean(n):.4f}{spread} | {statistics.mean(r):.4f} |")

    # The cost of the extra dimensions: every user ranked, augmented against ALS alone.
    users = np.arange(enc.n_users)
    au, av = blend.operands(u, v, max(content.weights), content, p_test)

    def timed(uu: np.ndarray, vv: np.ndarray) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            top_k(uu[users], vv, k)
            best = min(best, time.perf_counter() - started)
        return best

    plain, aug = timed(u, v), timed(au, av)
    print(
        f"  top_{k} of {len(users):,} users: ALS rank {v.shape[1]} {plain * 1000:.0f} ms,"
        f" hybrid rank {av.shape[1]} {aug * 1000:.0f} ms ({aug / plain:.2f}x)"
    )
    similar_blend(enc, content, u, v, train_full, test, k)


def similar_blend(
    enc: Encoded,
    content: blend.TrainContent,
    u: np.ndarray,
    v: np.ndarray,
    train_full: pd.DataFrame,
    test: pd.DataFrame,
    k: int,
) -> None:
    """Next-item quality of item-item cosine with content blended in at several λ."""
    from jobs.model import hybrid
    from jobs.train.data import seen_of
    from jobs.train.metrics import ndcg_per_user

    latest = train_full.sort_values(["u", "last_ts", "i"], ascending=[True, False, True])
    latest = latest.groupby("u").head(1)
    truth_of = test.groupby("u")["i"].apply(set).to_dict()
    latest = latest[latest["u"].isin(truth_of)]
    users, anchors = latest["u"].to_numpy(), latest["i"].to_numpy()
    truth = [truth_of[x] for x in users]
    seen = seen_of(train_full, enc.n_users)
    print(f"  /similar, next item after each of {len(users):,} users' latest:")
    for lam in (0.0, 0.25, 0.5, 1.0):
        items = hybrid.unit(hybrid.augment(hybrid.unit(v), content.items, lam))
        idx, _ = top_k(items[anchors], items, k, seen=seen, rows=users)
        recs = [[int(j) for j in r if j >= 0] for r in idx]
        ndcg = float(np.mean(ndcg_per_user(recs, truth, k)))
        hit = float(np.mean([bool(set(r) & t) for r, t in zip(recs, truth, strict=True)]))
        print(f"    λ {lam:g}: NDCG@{k} {ndcg:.4f}, hit@{k} {hit:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--movielens", type=Path, default=ROOT.parent / "shared/datasets/ml-100k")
    args = parser.parse_args()
    settings = get_settings()
    report(
        f"generated shop ({args.users:,} x {args.items:,}, {args.days} days)",
        *shop(settings, args.users, args.items, args.days),
        settings,
        args.seeds,
    )
    if args.movielens.exists():
        report("MovieLens 100K", *movielens(args.movielens, settings), settings, args.seeds)


if __name__ == "__main__":
    main()
