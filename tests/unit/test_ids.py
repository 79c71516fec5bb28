"""Ids are matched on ASCII digits only: ``\\d`` and ``str.isdigit`` also take other
scripts' digits (Arabic-Indic "٣", fullwidth "３"), which ``int()`` then accepts too."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.config import ConfigError, load_settings
from jobs.publish.layout import LayoutError, check_publish_id, is_publish_id, publish_id_for

ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def test_publish_ids_are_ascii_digits_only() -> None:
    from datetime import UTC, datetime

    good = publish_id_for(datetime(2026, 11, 29, 6, tzinfo=UTC), 3)
    assert good == "20261129T060000Z-v3" and is_publish_id(good)
    for table in (ARABIC_INDIC, FULLWIDTH):
        date, version = good.split("-")
        for bad in (f"{date.translate(table)}-{version}", f"{good}{'0'.translate(table)}"):
            assert not is_publish_id(bad), bad
            with pytest.raises(LayoutError):
                check_publish_id(bad)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("spark_master", "local[٤]"), ("spark_master", "local[4,٢]"), ("spark_driver_memory", "٢g")],
)
def test_settings_take_ascii_digits_only(setting: str, value: str) -> None:
    with pytest.raises(ConfigError):
        load_settings(**{setting: value})
    load_settings(**{setting: value.translate({ord(c): ord("2") for c in "٢٤"})})


def test_recflow_promote_takes_ascii_version_numbers_only(tmp_path: Path) -> None:
    from jobs.train.steps import promote_step

    settings = load_settings(data_root=tmp_path / "var")
    for bad in ("٣", "３", "v3", "-1"):
        with pytest.raises(LookupError, match="not a version number"):
            promote_step(bad, "ana", "why", settings)
