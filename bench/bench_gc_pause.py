"""How long one full garbage collection stops the online service, heap frozen or not.

Builds, in this process, what a service worker holds once loaded: BentoML imported, the
service's modules, the served model (``--model-npz`` or the BentoML model ``--model-tag``)
and the Feast online store opened from the settings' data root. Then times ``--repeat``
full collections (``gc.collect()``: what CPython runs now and then by itself, stopping the
event loop), freezes the heap as the service does at start-up
(:func:`jobs.serve.pauses.freeze_heap`) and times them again; prints both and the ratio.

    RECFLOW_DATA_ROOT=/tmp/copy-of-var python bench/bench_gc_pause.py --model-tag recflow-als:v1
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path


def full_collections(repeat: int) -> list[float]:
    """Milliseconds of each of ``repeat`` full collections."""
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        gc.collect()
        out.append((time.perf_counter() - started) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-tag", help="BentoML model tag (default <model_name>:latest)")
    parser.add_argument("--model-npz", type=Path, help="read the model from this file instead")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    from jobs.config import get_settings
    from jobs.model.artifact import RecModel
    from jobs.serve import answers, feature_source
    from jobs.serve.bento_build import use_bentoml_home
    from jobs.serve.pauses import freeze_heap

    settings = get_settings()
    use_bentoml_home(settings)
    import bentoml  # part of what a worker holds, imported once its home is set

    if args.model_npz is not None:
        model = RecModel.load(args.model_npz)
    else:
        stored = bentoml.models.get(args.model_tag or f"{settings.model_name}:latest")
        model = RecModel.load(stored.path_of("model.npz"))
    online = answers.OnlineModel.of(model, name="bench", version="0", run_id="")
    features = feature_source.FeatureSource(settings)
    features.open()
    stock = features.load_stock(model)
    tracked = len(gc.get_objects())
    before = full_collections(args.repeat)
    frozen = freeze_heap()
    after = full_collections(args.repeat)
    print(
        f"model: {len(online.model.user_ids)} users, {len(online.model.item_ids)} items;"
        f" feast {features.status}; stock {stock.source}"
    )
    print(f"tracked objects before freezing: {tracked:,}; frozen: {frozen:,}")
    print(
        f"full collection, heap not frozen: median {statistics.median(before):.2f} ms"
        f" (runs: {', '.join(f'{x:.1f}' for x in before)})"
    )
    print(
        f"full collection, heap frozen:     median {statistics.median(after):.3f} ms"
        f" (runs: {', '.join(f'{x:.3f}' for x in after)})"
    )
    # A frozen heap can collect in under a microsecond: floor the divisor at 1 µs.
    ratio = statistics.median(before) / max(statistics.median(after), 0.001)
    print(f"ratio: {ratio:,.0f}x (frozen median floored at 0.001 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
