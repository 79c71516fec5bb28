"""Reacting-shop throughput: events per second, plain vs reacting, and the CTR it yields.

Three runs of the same shop: the plain generator; the reacting one with a model in
memory (the oracle of the hidden tastes, :func:`jobs.sources.storefront.reference_model`);
and the reacting one reading a real publish of that model from the local bucket (MLflow
registry in a temporary folder, the publish steps, HMAC keys, one gzip object per user).
The last includes the publish itself only in its own line, not in the generator's rate.

Run: .venv/bin/python bench/bench_storefront.py [--users 30000 --items 2000 --days 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from jobs.config import Settings, load_settings
from jobs.sources.shop import GenerationReport, ShopSpec, build_world, generate
from jobs.sources.storefront import ModelStorefront, reference_model


def _line(name: str, report: GenerationReport) -> None:
    ctr = report.rec_clicks / report.rec_impressions if report.rec_impressions else float("nan")
    print(
        f"{name:<22} {report.lines:>10,} lines  {report.seconds:6.2f} s  "
        f"{report.events_per_second:>10,.0f} events/s  recommended-slot CTR {ctr:.2%}"
    )


def _publish(settings: Settings, workdir: Path) -> str:
    """Register the oracle as champion and publish it with the real publish steps."""
    import mlflow

    from jobs.model.registry import CHAMPION, log_model, setup
    from jobs.publish.steps import publish_all

    world = build_world(ShopSpec.from_settings(settings))
    client = setup(settings)
    with mlflow.start_run():
        info = log_model(reference_model(world, "oracle"), workdir, settings.model_name)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(settings.model_name, CHAMPION, version)
    stock = {str(i): True for i in world.items["item_id"]}
    t0 = time.perf_counter()
    done = publish_all(settings, generated_at=datetime(2026, 11, 1, tzinfo=UTC), in_stock=stock)
    seconds = time.perf_counter() - t0
    print(f"{'publish (setup)':<22} {len(world.user_vec):>10,} users  {seconds:6.2f} s")
    return str(done["publish_id"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=30_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=4)
    args = parser.parse_args()
    print(f"shop: {args.users:,} users, {args.items:,} items, {args.days} days, 4 slots")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def settings(name: str) -> Settings:
            return load_settings(data_root=root / name, gen_users=args.users, gen_items=args.items)

        _line("plain", generate(settings("plain"), days=args.days))
        s = settings("memory")
        world = build_world(ShopSpec.from_settings(s))
        front = ModelStorefront(reference_model(world, "oracle"), world, 4, None, "oracle")
        _line("react (model in memory)", generate(s, days=args.days, storefront=front))
        s = settings("published")
        _publish(s, root / "work")
        _line("react (local publish)", generate(s, days=args.days, react=True))


if __name__ == "__main__":
    main()
