"""Load test of the online service, path by path, with the static CDN as the reference.

For each path — ``known`` (a user the model knows: als), ``fold_in`` (an unknown user
with recent items) and ``popular`` (an unknown user with nothing) — an asyncio client
(aiohttp) keeps ``--concurrency`` requests in flight for ``--seconds`` (or, with
``--rate``, sends at that fixed rate with at most that many in flight) and reports
requests per second, p50/p95/p99 latency and errors; every 20th answer is checked to
come from the expected source. ``--cdn-url`` runs the same client against the static
server of the published per-user JSON objects (``recflow cdn``) as the floor to compare
with.

The service is either one already running (``--url``) or started here from a Bento tag
or the source (``--serve recflow:v3`` / ``--serve bento.service:RecflowService``) with
``bentoml serve`` on 127.0.0.1 and stopped by PID at the end.

    python bench/bench_serve.py --serve recflow:latest --seconds 30 --concurrency 32 \\
        --cdn-url http://127.0.0.1:8765
    python bench/bench_serve.py --url http://127.0.0.1:3000 --rate 500 --seconds 30

Open loop (``--rate``) is the mode for tail latency: request ``i`` is due at
``start + i / rate`` whatever the answers do, and its latency counts from that due time,
so a stall of the service (or of this client) shows as the latency of every request due
during it instead of being hidden by a client that waits (coordinated omission);
``--concurrency`` caps the open sockets, and a request waiting for one is still timed
from its due time. Each path also reports the service's full garbage collections during
the measured part (count and seconds, from ``recflow_gc_pause_seconds`` on its
``/metrics``) and the longest one of this client, whose heap is frozen before loading
(``--no-client-gc-freeze`` to leave it). A baseline is served from another checkout with
``--service-dir`` (e.g. a worktree of main) and settings are varied with
``--service-env``:

    python bench/bench_serve.py --serve bento.service:RecflowService --rate 500 \
        --concurrency 64 --service-dir /tmp/main-worktree

Client and server share the machine: the client's CPU is part of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jobs.config import Settings, get_settings
from jobs.model.artifact import RecModel
from jobs.serve.bento_build import serve_env, use_bentoml_home
from jobs.serve.pauses import GcPauseMeter, freeze_heap
from jobs.subjects import user_key

ROOT = Path(__file__).resolve().parents[1]

PATHS = ("known", "fold_in", "popular")
EXPECTED_SOURCE = {"known": "als", "fold_in": "fold_in", "popular": "popular"}
CHECK_EVERY = 20


@dataclass
class Result:
    path: str
    seconds: float
    concurrency: int
    rate: float | None = None
    requests: int = 0
    errors: int = 0
    wrong_source: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    # Full (generation-2) garbage collections during the measured part: count and total
    # seconds in the service (from its /metrics), longest one in this client.
    server_gc2: int = 0
    server_gc2_s: float = 0.0
    client_gc2_max_ms: float = 0.0
    error_samples: list[str] = field(default_factory=list)


# -- what to ask --------------------------------------------------------------------------


def load_model(settings: Settings, npz: Path | None, tag: str | None) -> RecModel:
    """The served model's ids (to pick known users and real item ids)."""
    if npz is not None:
        return RecModel.load(npz)
    use_bentoml_home(settings)
    import bentoml

    stored = bentoml.models.get(tag or f"{settings.model_name}:latest")
    return RecModel.load(stored.path_of("model.npz"))


def payloads(
    model: RecModel, path: str, k: int, n: int, seed: int, secret: str | None = None
) -> list[bytes]:
    """``n`` request bodies of one path (cycled by the workers).

    Known users carry their key (``secret``: the publish secret), as the site's backend
    sends it: without one the service answers them as anonymous (popular).
    """
    rng = random.Random(seed)
    users = [str(u) for u in model.user_ids]
    items = [str(i) for i in model.item_ids]
    # Recent items drawn by popularity, as real sessions are.
    weights = np.asarray(model.popularity, dtype=np.float64) + 1e-9
    probs = weights / weights.sum()
    np_rng = np.random.default_rng(seed)
    out = []
    for n_ in range(n):
        if path == "known":
            user = rng.choice(users)
            body: dict[str, Any] = {"user_id": user, "k": k}
            if secret is not None:
                body["user_key"] = user_key(secret, user)
        elif path == "fold_in":
            recent = np_rng.choice(len(items), size=min(5, len(items)), replace=False, p=probs)
            body = {
                "user_id": f"bench-new-{seed}-{n_}",
                "k": k,
                "recent_item_ids": [items[j] for j in recent],
            }
        else:
            body = {"user_id": f"bench-anon-{seed}-{n_}", "k": k}
        out.append(json.dumps(body).encode())
    return out


def cdn_urls(base: str, publish_dir: Path, limit: int) -> list[str]:
    """URLs of per-user objects of the live publish in the local bucket.

    Found through ``recs/latest.json``'s ``users`` template (its folder: a slot, or
    ``recs/v/<publish_id>/u/`` for a publish made before slots), as a client would.
    """
    from jobs.publish.layout import decode

    pointer = publish_dir / "recs" / "latest.json"
    if not pointer.exists():
        raise SystemExit(f"no {pointer}: run the publish first")
    template = str(decode(pointer.read_bytes())["users"])
    folder = publish_dir / template.split("{kk}")[0]
    objects = sorted(folder.glob("*/*.json"))[:limit]
    if not objects:
        raise SystemExit(f"no user objects under {folder}")
    return [f"{base.rstrip('/')}/{o.relative_to(publish_dir).as_posix()}" for o in objects]


def server_gc2(base: str) -> tuple[int, float]:
    """The service's full collections so far (count, seconds) from its ``/metrics``;
    (0, 0.0) when it does not export ``recflow_gc_pause_seconds`` (older code)."""
    import urllib.request

    count, total = 0, 0.0
    with urllib.request.urlopen(f"{base.rstrip('/')}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("recflow_gc_pause_seconds_") and 'generation="2"' in line:
                name, value = line.rsplit(" ", 1)
                if name.startswith("recflow_gc_pause_seconds_count"):
                    count += int(float(value))
                elif name.startswith("recflow_gc_pause_seconds_sum"):
                    total += float(value)
    return count, total


# -- the load -------------------------------------------------------------------------------


async def run_path(
    url: str,
    path: str,
    bodies: list[bytes] | None,
    gets: list[str] | None,
    seconds: float,
    concurrency: int,
    warmup: float,
    rate: float | None = None,
) -> Result:
    """Load one path for ``seconds`` after a warm-up; latencies of the measured part.

    Closed loop (default): ``concurrency`` clients send back to back, so throughput is
    the service's capacity and latency is ``concurrency / rps`` on average. Open loop
    (``rate``): requests are due at a fixed rate, at most ``concurrency`` in flight, and
    latency counts from when a request was due (a queued request is not hidden).
    """
    import aiohttp

    result = Result(path, seconds, concurrency, rate=rate)
    latencies: list[float] = []
    client_gc2: list[float] = []
    # The client's own full collections would count as service latency (they stop its
    # event loop too): timed here, and made rare by freezing the client's heap in main().
    meter = GcPauseMeter(lambda gen, s: client_gc2.append(s) if gen == 2 else None).install()
    expected = EXPECTED_SOURCE.get(path)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)
    headers = {"Content-Type": "application/json", "Accept-Encoding": "gzip"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        measure_from = start + warmup
        stop = measure_from + seconds

        async def one(i: int, due: float) -> None:
            counted = due >= measure_from
            try:
                if bodies is not None:
                    ctx = session.post(url, data=bodies[i % len(bodies)], headers=headers)
                else:
                    assert gets is not None
                    ctx = session.get(gets[i % len(gets)], headers=headers)
                async with ctx as resp:
                    data = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, data = 0, repr(exc).encode()
            if not counted:
                return
            latencies.append(time.perf_counter() - due)
            if status != 200:
                result.errors += 1
                if len(result.error_samples) < 5:
                    result.error_samples.append(f"{status}: {data[:200]!r}")
            elif expected and i % CHECK_EVERY == 0 and json.loads(data).get("source") != expected:
                result.wrong_source += 1

        if rate is None:

            async def client(w: int) -> None:
                i = w
                while (now := time.perf_counter()) < stop:
                    await one(i, now)
                    i += concurrency

            await asyncio.gather(*(client(w) for w in range(concurrency)))
        else:
            tasks: set[asyncio.Task[None]] = set()
            i = 0
            while (due := start + i / rate) < stop:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(i, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            await asyncio.gather(*tasks)
    meter.uninstall()
    result.client_gc2_max_ms = round(max(client_gc2, default=0.0) * 1000, 2)
    result.requests = len(latencies)
    result.rps = round(result.requests / seconds, 1)
    if latencies:
        ms = np.asarray(latencies) * 1000
        result.p50_ms, result.p95_ms, result.p99_ms = (
            round(float(x), 2) for x in np.percentile(ms, [50, 95, 99])
        )
        result.max_ms = round(float(ms.max()), 2)
    return result


# -- the server under test ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(
    target: str,
    settings: Settings,
    model_tag: str | None,
    workers: int | None,
    extra_env: dict[str, str] | None = None,
    source: Path = ROOT,
) -> tuple[subprocess.Popen[bytes], str]:
    """``bentoml serve`` on a free loopback port; returns (process, base URL) once ready."""
    import urllib.request

    port = free_port()
    env = {**serve_env(settings), "PYTHONPATH": str(source), **(extra_env or {})}
    if workers:
        env["BENTOML_CONFIG_OPTIONS"] = f"services.recflow.workers={workers}"
    cmd = [str(Path(sys.executable).parent / "bentoml"), "serve", target]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--working-dir", str(source)]
    if model_tag:  # a built Bento keeps the model it was built with
        cmd += ["--arg", f"model_tag={model_tag}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bentoml serve exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return proc, base
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise SystemExit("service not ready after 90 s")


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- main -------------------------------------------------------------------------------------


def print_table(results: list[Result], k: int) -> None:
    print(f"\nk={k}; latency in ms; rps = measured requests / seconds")
    print(
        f"{'path':<10}{'conc':>6}{'rate':>7}{'reqs':>9}{'rps':>9}{'p50':>8}{'p95':>8}{'p99':>8}"
        f"{'max':>9}{'errors':>8}{'wrong':>7}{'srv_gc2':>9}{'srv_gc2_s':>10}{'cli_gc2':>9}"
    )
    for r in results:
        rate = "-" if r.rate is None else f"{r.rate:g}"
        print(
            f"{r.path:<10}{r.concurrency:>6}{rate:>7}{r.requests:>9}{r.rps:>9.1f}{r.p50_ms:>8.2f}"
            f"{r.p95_ms:>8.2f}{r.p99_ms:>8.2f}{r.max_ms:>9.2f}{r.errors:>8}{r.wrong_source:>7}"
            f"{r.server_gc2:>9}{r.server_gc2_s:>10.3f}{r.client_gc2_max_ms:>9.2f}"
        )
        for sample in r.error_samples:
            print(f"    error: {sample}")


async def main_async(args: argparse.Namespace) -> list[Result]:
    settings = get_settings()
    results: list[Result] = []
    paths = [p for p in args.paths.split(",") if p]
    proc = None
    url = args.url
    try:
        if paths and url is None:
            extra = dict(item.split("=", 1) for item in args.service_env)
            proc, url = start_service(
                args.serve, settings, args.model_tag, args.workers, extra, args.service_dir
            )
            print(f"started `bentoml serve {args.serve}` at {url} (pid {proc.pid})")
        if paths:
            model = load_model(settings, args.model_npz, args.model_tag)
            for n, path in enumerate(paths):
                if path not in PATHS:
                    raise SystemExit(f"unknown path {path!r}; choose from {PATHS}")
                bodies = payloads(
                    model, path, args.k, 5000, seed=args.seed + n, secret=settings.hmac_secret()
                )
                if args.client_gc_freeze:
                    freeze_heap()  # the model, the bodies, aiohttp: not the collector's work
                gc_before = server_gc2(url)
                results.append(
                    await run_path(
                        f"{url.rstrip('/')}/recommend",
                        path,
                        bodies,
                        None,
                        args.seconds,
                        args.concurrency,
                        args.warmup,
                        args.rate,
                    )
                )
                gc_after = server_gc2(url)
                results[-1].server_gc2 = gc_after[0] - gc_before[0]
                results[-1].server_gc2_s = round(gc_after[1] - gc_before[1], 3)
                print_table(results[-1:], args.k)
    finally:
        if proc is not None:
            stop_service(proc)
    if args.cdn_url:
        assert settings.publish_dir is not None
        gets = cdn_urls(args.cdn_url, args.cdn_dir or settings.publish_dir, 5000)
        results.append(
            await run_path(gets[0], "cdn", None, gets, args.seconds, args.concurrency, args.warmup)
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running service, e.g. http://127.0.0.1:3000")
    parser.add_argument(
        "--serve",
        default="recflow:latest",
        help="Bento tag or service import path to start when --url is not given",
    )
    parser.add_argument("--model-tag", help="BentoML model tag (default <model_name>:latest)")
    parser.add_argument("--model-npz", type=Path, help="read ids from this model file instead")
    parser.add_argument("--workers", type=int, help="service workers (BentoML config override)")
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated; '' = none")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per path")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (max)")
    parser.add_argument(
        "--rate", type=float, help="open loop: requests per second (default: closed loop)"
    )
    parser.add_argument(
        "--no-client-gc-freeze",
        dest="client_gc_freeze",
        action="store_false",
        help="leave the client's heap to the collector (its pauses then count as latency)",
    )
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the started service, e.g. RECFLOW_SERVE_GC_FREEZE=false",
    )
    parser.add_argument(
        "--service-dir",
        type=Path,
        default=ROOT,
        help="checkout to serve from (e.g. a worktree of the code before a change)",
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cdn-url", help="base URL of the static server (`recflow cdn`)")
    parser.add_argument("--cdn-dir", type=Path, help="its local bucket (default publish_dir)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    print(
        f"bench_serve: {os.cpu_count()} cpus, python {platform.python_version()}, "
        f"concurrency {args.concurrency}, {args.seconds:.0f} s per path"
    )
    results = asyncio.run(main_async(args))
    print_table(results, args.k)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
