"""Publishing speed: the blocked scorer against Spark's recommendForAllUsers and against
the bare matrix product, on the same factors; then objects/s to the local folder and to
an S3-compatible server (moto's, started here on 127.0.0.1), and bytes per user object.

One Spark ALS fit (a single iteration is enough: only the factors' shape matters) gives
the factors; Spark ranks them with ``recommendForAllUsers`` (no exclusions), recflow's
scorer ranks the very same float32 factors with seen items excluded (more work), and the
bound is the same block-wise ``U @ V.T`` with no selection at all. Uploads go through the
real publish path (MLflow registry → score → upload → verify → flip).

Run: .venv/bin/python bench/bench_publish.py [--users 50000] [--items 10000] [--rank 64]
     [--k 50] [--s3-users 5000]

``--republish [--baseline-ref main]`` (issue 17) measures the upload side alone, before
and after in one run: the script runs itself twice in child processes, once importing
``jobs`` from a git worktree of the baseline ref and once from this checkout, each on the
same random rank-``--rank`` factors (no Spark: only the lists' shape matters here). Each
child publishes three times to the local folder and three times to moto's S3 server —
(1) a first publish, (2) the same lists again, (3) with ``--changed-items`` items newly out
of stock, so most lists are unchanged — and reports users/s of the upload step, PUTs
made and skipped, and bytes per user object. With two slots, publish 3 writes into
publish 1's slot, so its skipped PUTs are the lists unchanged since publish 1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.config import load_settings
from jobs.model.artifact import RecModel
from jobs.model.ranking import Seen
from jobs.publish.scoring import score_all


def spark_factors(args: argparse.Namespace, root: Path):  # type: ignore[no-untyped-def]
    from pyspark.ml.recommendation import ALS

    from jobs.spark import get_spark

    rng = np.random.default_rng(1)
    n = args.users * args.per_user
    frame = pd.DataFrame(
        {
            "u": np.repeat(np.arange(args.users), args.per_user).astype(np.int32),
            "i": (rng.zipf(1.3, n) % args.items).astype(np.int32),
            "weight": rng.integers(1, 9, n).astype(np.float32),
        }
    ).drop_duplicates(["u", "i"])
    frame.to_parquet(root / "ratings.parquet", index=False)
    spark = get_spark(load_settings(data_root=root / "var", spark_driver_memory="6g"))
    data = spark.read.parquet(str(root / "ratings.parquet"))
    t0 = time.perf_counter()
    model = ALS(
        rank=args.rank,
        maxIter=1,
        implicitPrefs=True,
        userCol="u",
        itemCol="i",
        ratingCol="weight",
        seed=1,
    ).fit(data)
    print(f"ALS fit (1 iteration, {len(frame):,} interactions): {time.perf_counter() - t0:.1f} s")
    users = np.zeros((args.users, args.rank), np.float32)
    items = np.zeros((args.items, args.rank), np.float32)
    for target, pdf in (
        (users, model.userFactors.toPandas()),
        (items, model.itemFactors.toPandas()),
    ):
        target[pdf["id"].to_numpy()] = np.stack(pdf["features"].to_numpy())
    seen = frame.groupby("u")["i"].apply(np.array).reindex(range(args.users))
    seen_lists = [x if isinstance(x, np.ndarray) else np.zeros(0, np.int32) for x in seen]
    return spark, model, users, items, Seen.from_lists(seen_lists)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--per-user", type=int, default=10)
    parser.add_argument("--s3-users", type=int, default=5_000)
    parser.add_argument("--republish", action="store_true", help="issue 17: uploads only")
    parser.add_argument("--baseline-ref", default="main")
    parser.add_argument("--changed-items", type=int, default=10)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # JSON out path
    args = parser.parse_args()
    if args.child:
        republish_child(args)
        return
    if args.republish:
        republish(args)
        return
    root = Path(tempfile.mkdtemp(prefix="recflow-bench-publish-"))

    spark, als_model, users, items, seen = spark_factors(args, root)
    model = RecModel(
        user_ids=np.array([f"u{i}" for i in range(args.users)]),
        item_ids=np.array([f"i{j}" for j in range(args.items)]),
        user_factors=users,
        item_factors=items,
        popularity=np.bincount(seen.indices, minlength=args.items).astype(np.float32),
        seen=seen,
        params={"rank": args.rank},
    )
    print(f"\nscoring {args.users:,} users x {args.items:,} items, rank {args.rank}, k {args.k}")
    t0 = time.perf_counter()
    als_model.recommendForAllUsers(args.k).write.format("noop").mode("overwrite").save()
    spark_s = time.perf_counter() - t0
    spark.stop()

    vt = np.ascontiguousarray(items.T)
    t0 = time.perf_counter()
    for lo in range(0, args.users, 256):
        _ = users[lo : lo + 256] @ vt
    bound_s = time.perf_counter() - t0
    score_all(model, args.k, block=256)  # warm-up
    t0 = time.perf_counter()
    score_all(model, args.k, block=256)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    score_all(model, args.k, block=256, workers=1)
    ours1_s = time.perf_counter() - t0
    rate = args.users
    print(f"  Spark recommendForAllUsers:     {spark_s:7.2f} s  {rate / spark_s:>10,.0f} users/s")
    print(f"  recflow blocked scorer:         {ours_s:7.2f} s  {rate / ours_s:>10,.0f} users/s")
    print(f"  recflow scorer, one worker:     {ours1_s:7.2f} s  {rate / ours1_s:>10,.0f} users/s")
    print(f"  bare matrix product (bound):    {bound_s:7.2f} s  {rate / bound_s:>10,.0f} users/s")
    print(f"  speed-up over Spark: {spark_s / ours_s:.1f}x; time vs bound: {ours_s / bound_s:.2f}x")

    upload(args, root, model)


def upload(args: argparse.Namespace, root: Path, model: RecModel) -> None:
    import boto3
    import mlflow

    from jobs.model.registry import CHAMPION, log_model, setup
    from jobs.publish.steps import publish_all

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support import free_port, wait_for_port

    settings = load_settings(data_root=root / "var", publish_k=args.k)
    client = setup(settings)
    small = RecModel(
        user_ids=model.user_ids[: args.s3_users],
        item_ids=model.item_ids,
        user_factors=model.user_factors[: args.s3_users],
        item_factors=model.item_factors,
        popularity=model.popularity,
        seen=Seen(model.seen.indptr[: args.s3_users + 1], model.seen.indices),
        params=model.params,
    )
    versions = []
    for m in (model, small):
        with mlflow.start_run():
            info = log_model(m, root / f"work{len(versions)}", settings.model_name)
        versions.append(str(info.registered_model_version))
    client.set_registered_model_alias(settings.model_name, CHAMPION, versions[0])

    print(f"\nupload (k {args.k}, {settings.publish_workers} workers)")
    done = publish_all(settings, in_stock={})
    up = done["upload"]
    print(
        f"  local folder: {up['uploaded']:,} objects in {up['seconds']:.1f} s ="
        f" {up['objects_per_second']:,} objects/s; {up['mean_bytes_per_user']:.0f} B per user"
        f" object (gzip); scoring inside the publish {done['score']['users_per_second']:,} users/s"
    )
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, server)
        endpoint = f"http://127.0.0.1:{port}"
        creds = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **creds).create_bucket(
            Bucket="bench"
        )
        s3 = load_settings(
            data_root=root / "var",
            publish_k=args.k,
            publish_target="s3",
            publish_bucket="bench",
            s3_endpoint_url=endpoint,
            publish_secret="bench-secret-of-32-characters-00",  # the dev one is refused on S3
            **creds,
        )
        done = publish_all(s3, version=versions[1], in_stock={})
        up = done["upload"]
        print(
            f"  S3-compatible server (moto, 127.0.0.1): {up['uploaded']:,} objects in"
            f" {up['seconds']:.1f} s = {up['objects_per_second']:,} objects/s"
            f" (verify {done['verify']['user_objects']:,} objects by listing)"
        )
    finally:
        server.terminate()
        server.wait(timeout=10)


# -- issue 17: before/after of the upload side, republishing mostly unchanged lists -----------


def republish(args: argparse.Namespace) -> None:
    """Run the child once on the baseline's code and once on this checkout's; compare."""
    repo = Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix="recflow-bench-republish-"))
    base = work / "baseline"
    subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "--detach", "-q", str(base), args.baseline_ref],
        check=True,
    )
    results: dict[str, Any] = {}
    try:
        for label, code in (("before", base), ("after", repo)):
            out = work / f"{label}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(out)]
            cmd += ["--users", str(args.users), "--items", str(args.items)]
            cmd += ["--rank", str(args.rank), "--k", str(args.k), "--s3-users", str(args.s3_users)]
            cmd += ["--changed-items", str(args.changed_items)]
            env = {**os.environ, "PYTHONPATH": str(code)}
            print(f"{label}: jobs from {code}", flush=True)
            subprocess.run(cmd, check=True, env=env, cwd=work)
            results[label] = json.loads(out.read_text())
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(base)])
    print(
        f"\nupload step, {args.users:,} users local / {args.s3_users:,} on moto, k {args.k},"
        f" {args.changed_items} items newly out of stock in publish 3"
    )
    head = "| code | target | publish | users/s | PUTs | skipped | B/object | seconds |"
    print(head + "\n|" + "---|" * 8)
    for label in ("before", "after"):
        for target in ("local", "moto"):
            for n, run in enumerate(results[label][target], start=1):
                print(
                    f"| {label} | {target} | {n} | {run['users_per_s']:,.0f} | {run['puts']:,}"
                    f" | {run['skipped']:,} | {run['bytes']:.0f} | {run['seconds']:.2f} |"
                )
    for target in ("local", "moto"):
        b, a = results["before"][target], results["after"][target]
        print(
            f"{target}: first publish {a[0]['users_per_s'] / b[0]['users_per_s']:.1f}x,"
            f" republish (3) {a[2]['users_per_s'] / b[2]['users_per_s']:.1f}x;"
            f" PUTs on the republish {b[2]['puts']:,} -> {a[2]['puts']:,}"
        )


def random_model(args: argparse.Namespace, n_users: int) -> RecModel:
    """Random factors of the benchmark's shape (only the lists' length and spread matter)."""
    rng = np.random.default_rng(1)
    users = rng.standard_normal((n_users, args.rank)).astype(np.float32)
    items = rng.standard_normal((args.items, args.rank)).astype(np.float32)
    seen = [rng.choice(args.items, size=8, replace=False) for _ in range(n_users)]
    return RecModel(
        user_ids=np.array([f"u{i}" for i in range(n_users)]),
        item_ids=np.array([f"i{j}" for j in range(args.items)]),
        user_factors=users,
        item_factors=items,
        popularity=rng.integers(1, 100, args.items).astype(np.float32),
        seen=Seen.from_lists(seen),
        params={"rank": args.rank},
    )


def republish_child(args: argparse.Namespace) -> None:
    """Three publishes to a folder, three to moto; writes the upload figures as JSON."""
    from datetime import UTC, datetime, timedelta

    import boto3
    import mlflow

    from jobs.model.registry import CHAMPION, log_model, setup
    from jobs.publish.steps import publish_all

    root = Path(tempfile.mkdtemp(prefix="recflow-bench-child-"))
    settings = load_settings(data_root=root / "var", publish_k=args.k)
    client = setup(settings)
    versions = []
    for n in (args.users, args.s3_users):
        with mlflow.start_run():
            info = log_model(random_model(args, n), root / f"work{n}", settings.model_name)
        versions.append(str(info.registered_model_version))
    client.set_registered_model_alias(settings.model_name, CHAMPION, versions[0])
    gone = {f"i{j}": False for j in np.random.default_rng(2).choice(args.items, args.changed_items)}
    t0 = datetime(2026, 11, 30, 6, tzinfo=UTC)

    def three(s: Any, version: str) -> list[dict[str, Any]]:
        runs = []
        for n, stock in enumerate(({}, {}, gone)):
            done = publish_all(s, t0 + timedelta(hours=n), version, in_stock=stock)
            up = done["upload"]
            users = up["objects"] - 2
            runs.append(
                {
                    "users_per_s": users / up["seconds"],
                    "puts": up["uploaded"],
                    "skipped": up["skipped"],
                    "bytes": up["mean_bytes_per_user"],
                    "seconds": up["seconds"],
                }
            )
            print(f"  publish {n + 1} to {done['target']}: {runs[-1]}", flush=True)
        return runs

    out = {"local": three(settings, versions[0])}
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        creds = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **creds).create_bucket(
            Bucket="bench"
        )
        s3 = load_settings(
            data_root=root / "var",
            publish_k=args.k,
            publish_target="s3",
            publish_bucket="bench",
            s3_endpoint_url=endpoint,
            publish_secret="bench-secret-of-32-characters-00",  # the dev one is refused on S3
            **creds,
        )
        out["moto"] = three(s3, versions[1])
    finally:
        server.terminate()
        server.wait(timeout=10)
    args.child.write_text(json.dumps(out))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


if __name__ == "__main__":
    main()
