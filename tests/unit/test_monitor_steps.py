"""Which days a monitor run recomputes: every day whose attribution can still change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from jobs.monitor.steps import feedback_days


def test_a_midnight_run_recomputes_the_days_a_purchase_can_still_reach() -> None:
    # A purchase at 23:59 on the 29th may answer a click up to 24 h before it, which
    # may answer an impression up to 24 h before that: the 27th can still change.
    end = datetime(2026, 11, 30, tzinfo=UTC)
    assert feedback_days(end, 24) == ["2026-11-27", "2026-11-28", "2026-11-29"]


def test_a_midday_run_includes_today_so_far() -> None:
    end = datetime(2026, 11, 30, 13, 30, tzinfo=UTC)
    assert feedback_days(end, 24)[-1] == "2026-11-30"
    assert feedback_days(end, 24)[0] == "2026-11-27"


def test_a_longer_window_reaches_further_back_and_other_zones_are_read_in_utc() -> None:
    end = datetime(2026, 11, 30, 1, 0, tzinfo=timezone(timedelta(hours=2)))  # 23:00 UTC
    assert feedback_days(end, 36) == [
        "2026-11-25",
        "2026-11-26",
        "2026-11-27",
        "2026-11-28",
        "2026-11-29",
    ]


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    st.floats(min_value=0, max_value=24 * 30),
)
def test_the_days_are_consecutive_and_cover_the_window(end: datetime, hours: float) -> None:
    days = [datetime.fromisoformat(d).date() for d in feedback_days(end, hours)]
    assert days == sorted(set(days))
    assert all((b - a).days == 1 for a, b in pairwise(days))
    assert days[-1] == (end - timedelta(microseconds=1)).date()
    assert days[0] <= (end - timedelta(hours=2 * hours)).date() - timedelta(days=1)
