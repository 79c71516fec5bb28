"""What ``jobs.monitor.export`` pushes, as Prometheus's own text parser reads it back, and the
error kinds of the service's statuses (property-based)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jobs.monitor.export import Collected, registry_of
from jobs.serve.metrics import ERROR_KINDS, error_kind

NAMES = st.sampled_from(["recflow_rec_ctr", "recflow_drift_value", "recflow_ingest_lag_seconds"])
# Label values come from the lake (a drift metric's name, a source): any text must survive
# the exposition format's escaping (quotes, backslashes, newlines, non-ASCII).
LABEL_VALUES = st.text(max_size=12)
VALUES = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(
    st.dictionaries(st.tuples(NAMES, LABEL_VALUES, LABEL_VALUES), VALUES, min_size=1, max_size=12)
)
def test_pushed_gauges_read_back_exactly(points: dict[tuple[str, str, str], float]) -> None:
    collected = Collected()
    for (name, metric, source), value in points.items():
        collected.add(name, f"help of {name}", value, metric=metric, rec_source=source)
    text = generate_latest(registry_of(collected.samples)).decode()
    read = {
        (s.name, s.labels["metric"], s.labels["rec_source"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert read.keys() == points.keys()
    for key, value in points.items():
        assert math.isclose(read[key], value, rel_tol=1e-15, abs_tol=0.0) or read[key] == value


@given(st.integers(min_value=100, max_value=599))
def test_every_error_status_has_one_known_kind(status: int) -> None:
    kind = error_kind(status)
    assert (kind is None) == (status < 400)
    assert kind is None or kind in ERROR_KINDS
    assert (kind == "internal") == (status >= 500)


def test_ingest_push_without_a_gateway_is_a_no_op(tmp_path) -> None:
    """Unset RECFLOW_PUSHGATEWAY_URL: the ingest run's last task says so and does no work
    (no Spark session: under the scheduler that would be a JVM start per hourly run)."""
    from jobs.config import load_settings
    from jobs.monitor.export import ingest_push_step

    result = ingest_push_step(load_settings(data_root=tmp_path / "var"))
    assert result == {"metrics": 0, "pushed_to": "not pushed: RECFLOW_PUSHGATEWAY_URL is unset"}
    assert not (tmp_path / "var").exists()
