"""The MovieLens 100K importer, on the real files in the shared datasets folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.config import Settings
from jobs.sources.movielens import RATING_TO_EVENT, import_movielens, read_ratings


def test_import_maps_every_rating_user_and_film(ml100k: Path, settings: Settings) -> None:
    report = import_movielens(ml100k, settings)
    assert (report.ratings, report.users, report.items) == (100_000, 943, 1_682)
    events = [
        json.loads(line)
        for p in settings.events_dir.rglob("*.jsonl")
        for line in p.read_text().splitlines()
    ]
    assert len(events) == 100_000
    assert len({e["event_id"] for e in events}) == 100_000
    assert len({e["user_id"] for e in events}) == 943
    assert len({e["item_id"] for e in events}) == 1_682
    assert all(e["user_id"].startswith("ml-u") and e["item_id"].startswith("ml-i") for e in events)

    ratings = read_ratings(ml100k)
    expected = ratings["rating"].map(RATING_TO_EVENT).value_counts().to_dict()
    assert report.events_by_type == expected
    assert report.first_ts.startswith("1997-09") and report.last_ts.startswith("1998-04")

    items = [
        json.loads(line)
        for line in next(settings.catalog_dir.rglob("movielens-items.jsonl"))
        .read_text()
        .splitlines()
    ]
    assert len(items) == 1_682
    toy_story = next(i for i in items if i["item_id"] == "ml-i1")
    assert toy_story["title"].startswith("Toy Story")
    assert "Animation" in toy_story["description"]


def test_rating_scale_maps_to_a_graded_funnel() -> None:
    order = ["view", "click", "add_to_cart", "purchase"]
    ranks = [order.index(RATING_TO_EVENT[r]) for r in range(1, 6)]
    assert ranks == sorted(ranks) and ranks[0] < ranks[-1]


def test_missing_folder_is_a_clear_error(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(FileNotFoundError, match="ml-100k"):
        import_movielens(tmp_path / "nowhere", settings)
