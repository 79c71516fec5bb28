"""What the exact rescoring of ``top_k`` costs: the ranker as it is against its float32
selection alone (the ranker before the rescoring), in this process, on the same inputs.

``top_k`` picks the top K + 8 candidates of each row from the float32 BLAS scores and
scores those again in float64 (``jobs.model.ranking``): a user then gets the same list
and bits alone online as in any block of the batch, whatever the BLAS kernel. The
baseline is the same call with ``exact=False``: the float32 selection alone, with the
same masking and checks.

Run: .venv/bin/python bench/bench_rescore.py [--repeat 9]
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import numpy as np
from threadpoolctl import threadpool_limits

from jobs.model.ranking import top_k

SHAPES = (
    # (label, users per call, items, rank, k)
    ("publish block", 256, 100_000, 64, 50),
    ("publish block, wide k", 256, 100_000, 64, 200),
    ("one user online", 1, 100_000, 64, 10),
    ("MovieLens-sized block", 943, 1_682, 32, 50),
)


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'shape':<24} {'float32 select':>15} {'top_k (exact)':>14} {'ratio':>6}")
    with threadpool_limits(1, user_api="blas"):  # one core, as each publish worker runs
        for label, n, m, rank, k in SHAPES:
            items = rng.normal(size=(m, rank)).astype(np.float32)
            items_t = np.ascontiguousarray(items.T)
            users = rng.normal(size=(n, rank)).astype(np.float32)
            ok = np.ones(m, dtype=bool)  # as RecModel passes it (computed once per model)
            base = timed(
                partial(top_k, users, items, k, items_t=items_t, item_ok=ok, block=n, exact=False),
                args.repeat,
            )
            exact = timed(
                partial(top_k, users, items, k, items_t=items_t, item_ok=ok, block=n), args.repeat
            )
            print(
                f"{label:<24} {base * 1000:>12.2f} ms {exact * 1000:>11.2f} ms "
                f"{exact / base:>5.2f}x"
            )


if __name__ == "__main__":
    main()
