"""Great Expectations gates on real Spark frames and a real (small) lake."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from jobs import tables
from jobs.config import Settings, load_settings
from jobs.ingest import quality
from jobs.ingest.silver import refine_events
from jobs.ingest.steps import gold_step, run_interval
from jobs.sources.shop import generate

pytestmark = pytest.mark.spark

START, END = "2026-11-01T10:00:00+00:00", "2026-11-01T12:00:00+00:00"
EVENT_COLUMNS = (
    "event_id STRING, ts TIMESTAMP, event_date DATE, user_id STRING, item_id STRING, "
    "event_type STRING, session_id STRING, request_id STRING, position INT, quantity INT, "
    "price DOUBLE, _batch_id STRING, _source_file STRING, _ingested_at TIMESTAMP"
)


def _event(event_id: str, event_type: str = "click", **kw: Any) -> dict[str, Any]:
    ts = datetime(2026, 11, 1, 11, 30)
    row = {
        "event_id": event_id,
        "ts": ts,
        "event_date": ts.date(),
        "user_id": "u1",
        "item_id": "i1",
        "event_type": event_type,
        "session_id": "s1",
        "request_id": None,
        "position": 0,
        "quantity": None,
        "price": None,
        "_batch_id": "manual",
        "_source_file": "manual",
        "_ingested_at": ts,
    }
    return {**row, **kw}


@pytest.fixture
def root(tmp_path: Any) -> Settings:
    return load_settings(data_root=tmp_path / "var", spark_master="local[2]")


@pytest.fixture(scope="module")
def shop(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict]:
    """A small shop with two hours ingested (quality gates on, as by default)."""
    settings = load_settings(
        data_root=tmp_path_factory.mktemp("quality") / "var",
        gen_users=150,
        gen_items=40,
        spark_shuffle_partitions=2,
        spark_master="local[2]",
    )
    generate(settings, days=1)
    return settings, run_interval(START, END, settings=settings)


def test_critical_failures_raise_and_name_the_expectations(spark: Any, root: Settings) -> None:
    frame = spark.createDataFrame(
        [_event("e1"), _event("e1"), _event("e2", "teleport"), _event("e3", price=-1.0)],
        EVENT_COLUMNS,
    )
    with pytest.raises(quality.QualityGateError) as err:
        quality.run_suite(root, "silver_events", frame, quality.silver_expectations())
    failed = set(err.value.failed)
    assert "expect_column_values_to_be_unique(event_id)" in failed
    assert "expect_column_values_to_be_in_set(event_type)" in failed
    assert "expect_column_values_to_be_between(price)" in failed
    assert "expect_column_values_to_not_be_null(user_id)" not in failed
    docs = quality.docs_index(root)
    assert (
        docs.is_file()
        and "silver_events"
        in "".join(p.name for p in docs.parent.rglob("*.html")) + docs.read_text()
    )


def test_results_and_data_docs_hold_no_sample_values(spark: Any, root: Settings) -> None:
    """A failing expectation on user ids records counts, not the ids (erasure never reaches
    Great Expectations' files)."""
    marker = "person-\u00e9-" + "x" * 300  # too long for an id: fails the length check
    frame = spark.createDataFrame(
        [_event("e1", user_id=marker), _event("e2", event_type="marker-type-zz")],
        EVENT_COLUMNS,
    )
    with pytest.raises(quality.QualityGateError) as err:
        quality.run_suite(root, "silver_events", frame, quality.silver_expectations())
    assert "expect_column_value_lengths_to_be_between(user_id)" in err.value.failed
    files = [p for p in root.gx_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".json" for p in files) and any(p.suffix == ".html" for p in files)
    for path in files:
        text = path.read_bytes().decode("utf-8", "replace")
        assert "x" * 300 not in text and "marker-type-zz" not in text, path


def test_warnings_are_recorded_without_stopping(spark: Any, root: Settings) -> None:
    frame = spark.createDataFrame([_event("e1", position=-3), _event("e2")], EVENT_COLUMNS)
    result = quality.run_suite(root, "silver_events", frame, quality.silver_expectations())
    assert result["success"] is False
    assert result["failed"] == {"expect_column_values_to_be_between(position)": "warning"}
    clean = spark.createDataFrame([_event("e1"), _event("e2")], EVENT_COLUMNS)
    assert quality.run_suite(root, "silver_events", clean, quality.silver_expectations()) == {
        "success": True,
        "failed": {},
    }


def test_a_failed_silver_gate_merges_nothing(spark: Any, shop: tuple[Settings, dict]) -> None:
    import great_expectations.expectations as gxe

    root, _ = shop
    before = tables.version(spark, root, "events")
    impossible = [gxe.ExpectTableRowCountToBeBetween(max_value=0)]

    def gate(frame: Any, interval: tables.Interval) -> dict[str, bool]:
        return {"strict": quality.run_suite(root, "strict", frame, impossible)["success"]}

    later = tables.Interval.parse("2026-11-01T12:00:00+00:00", "2026-11-01T13:00:00+00:00")
    from jobs.ingest.bronze import load_events

    load_events(spark, root, later)
    with pytest.raises(quality.QualityGateError):
        refine_events(spark, root, later, gate=gate)
    assert tables.version(spark, root, "events") == before


def test_a_failing_expectation_blocks_gold(spark: Any, shop: tuple[Settings, dict]) -> None:
    """A bad write into silver (say, a faulty backfill) must not reach gold; once the bad
    rows are deleted again, gold catches up and ends where it would have been."""
    root, first = shop
    assert first["audit"]["balanced"] and all(first["audit"]["quality"].values())
    assert {"bronze_events", "silver_events", "gold_interactions"} <= set(first["audit"]["quality"])

    def gold_state() -> dict[str, Any]:
        return {
            name: (
                tables.version(spark, root, name),
                tables.content_hash(tables.read_or_create(spark, root, name)),
            )
            for name in ("interactions", "user_stats", "item_daily")
        }

    before = gold_state()
    existing = tables.read_or_create(spark, root, "events").first().event_id
    bad = spark.createDataFrame(
        [_event(existing), _event("bad-1", "teleport", user_id="u-bad")], EVENT_COLUMNS
    )
    bad.write.format("delta").mode("append").save(tables.path(root, "events"))

    with pytest.raises(quality.QualityGateError) as err:
        gold_step(settings=root)
    assert "expect_column_values_to_be_in_set(event_type)" in err.value.failed
    assert gold_state() == before

    from delta.tables import DeltaTable

    DeltaTable.forPath(spark, tables.path(root, "events")).delete(
        "_batch_id = 'manual' AND _source_file = 'manual'"
    )
    after = gold_step(settings=root)
    assert all(after["quality"].values())
    hashes = {name: h for name, (_, h) in gold_state().items()}
    assert hashes == {name: h for name, (_, h) in before.items()}


def test_data_docs_render_once_per_run_and_list_every_suite(
    spark: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The steps store results without rendering; the gold step renders them all at once,
    and the index then links every suite's latest result (each with its page)."""
    from jobs.ingest.steps import bronze_step, silver_step

    settings = load_settings(
        data_root=tmp_path_factory.mktemp("docs") / "var",
        gen_users=60,
        gen_items=20,
        spark_shuffle_partitions=2,
        spark_master="local[2]",
    )
    generate(settings, days=1)
    context = quality._context(str(settings.data_root))
    site = quality.docs_index(settings).parent

    def pending() -> list[Any]:
        return [
            k
            for k in context.validation_results_store.list_keys()
            if not quality._page(site, k).is_file()
        ]

    bronze = bronze_step(START, END, settings=settings)
    silver_step(START, END, skip=bronze["skip"], settings=settings)
    # Stored, not yet rendered: no per-checkpoint build any more.
    assert {k.expectation_suite_identifier.name for k in pending()} == {
        "bronze_events",
        "silver_events",
    }
    assert not quality.docs_index(settings).exists()

    gold = gold_step(settings=settings)
    suites = {"bronze_events", "silver_events", "silver_changes"} | {
        f"gold_{t}" for t in quality.GOLD_SUITES
    }
    assert set(gold["quality"]) == suites - {"bronze_events", "silver_events"}
    assert gold["data_docs_rendered"] == len(suites)
    assert pending() == []
    index = quality.docs_index(settings).read_text()
    for key in context.validation_results_store.list_keys():
        page = quality._page(site, key)
        assert page.is_file() and str(page.relative_to(site)) in index, key
    assert {
        k.expectation_suite_identifier.name for k in context.validation_results_store.list_keys()
    } == suites
    # Nothing new, nothing rendered.
    assert quality.render_docs(settings) == 0
