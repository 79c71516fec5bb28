"""The MovieLens importer: 100K on the real files in the shared datasets folder, the other
releases (1M, the CSV ones) on small synthetic files written in their formats."""

from __future__ import annotations

import csv
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from jobs.config import Settings, load_settings
from jobs.contracts import EVENT_FIELDS, ITEM_FIELDS
from jobs.sources import movielens
from jobs.sources.movielens import (
    RATING_TO_EVENT,
    UNDATED,
    detect_release,
    event_types,
    import_movielens,
    read_items,
    read_ratings,
)


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


# The other releases, on small synthetic files in each release's format (the data sets'
# licences forbid committing them, and unit tests must not depend on a download).

RELEASE_FILES = {
    "ml-100k": ("u.data", "u.item"),
    "ml-1m": ("ratings.dat", "movies.dat"),
    "ml-latest": ("ratings.csv", "movies.csv"),
}
CSV_HEADER = "userId,movieId,rating,timestamp\n"
MOVIES_HEADER = "movieId,title,genres\n"
T0 = 978_300_000  # 2000-12-31T22:00:00Z


def landing_events(settings: Settings) -> list[dict[str, Any]]:
    """Every landing event, each checked to sit in the hour folder of its own timestamp."""
    events = []
    for file in sorted(settings.events_dir.rglob("*.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            hour = datetime.fromtimestamp(event["ts"] / 1000, tz=UTC)
            assert file.parent.relative_to(settings.events_dir) == Path(
                f"dt={hour:%Y-%m-%d}/hr={hour:%H}"
            )
            assert list(event) == list(EVENT_FIELDS)
            events.append(event)
    return events


def catalog(settings: Settings) -> dict[str, dict[str, Any]]:
    (file,) = settings.catalog_dir.rglob("movielens-items.jsonl")
    items = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
    assert all(list(i) == list(ITEM_FIELDS) for i in items)
    return {i["item_id"]: i for i in items}


def landing_tree(settings: Settings) -> dict[str, str]:
    assert settings.landing_dir is not None
    return {
        str(p.relative_to(settings.landing_dir)): p.read_text(encoding="utf-8")
        for p in sorted(settings.landing_dir.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("release", RELEASE_FILES)
def test_release_is_recognised_by_its_files(tmp_path: Path, release: str) -> None:
    for name in RELEASE_FILES[release]:
        (tmp_path / name).touch()
    assert detect_release(tmp_path).name.startswith(release)


def test_a_folder_without_a_release_names_the_folder_and_every_expected_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "README.txt").touch()
    with pytest.raises(FileNotFoundError) as err:
        detect_release(tmp_path)
    for name in [str(tmp_path), *(f for files in RELEASE_FILES.values() for f in files)]:
        assert name in str(err.value)


def test_a_ratings_file_without_its_films_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").touch()
    with pytest.raises(FileNotFoundError, match=r"movies\.csv"):
        detect_release(tmp_path)


def test_two_releases_in_one_folder_are_refused(tmp_path: Path) -> None:
    for name in (*RELEASE_FILES["ml-1m"], *RELEASE_FILES["ml-latest"]):
        (tmp_path / name).touch()
    with pytest.raises(ValueError, match="several releases"):
        detect_release(tmp_path)


def test_half_stars_map_by_thresholds_at_the_whole_stars() -> None:
    halves = [r / 2 for r in range(1, 11)]
    expected = ["view"] * 5 + ["click"] * 2 + ["add_to_cart"] * 2 + ["purchase"]
    assert list(event_types(np.array(halves))) == expected
    for stars, event in RATING_TO_EVENT.items():
        assert event_types(np.array([float(stars)]))[0] == event


def test_import_1m_reads_double_colon_latin1_files(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "ratings.dat").write_text(
        f"1::1193::5::{T0 + 7200}\n"
        f"1::661::3::{T0}\n"
        f"2::1193::4::{T0 + 60}\n"
        f"2::73::1::{T0 + 86_400}\n",
        encoding="latin-1",
    )
    (tmp_path / "movies.dat").write_text(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "73::Misérables, Les (1995)::Drama|Musical\n",
        encoding="latin-1",
    )
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")

    report = import_movielens(tmp_path, settings)

    assert (report.release, report.ratings, report.users, report.items) == ("ml-1m", 4, 2, 3)
    assert report.bad_rows == {}
    assert report.first_ts == "2000-12-31T22:00:00+00:00"
    events = {
        e["event_id"]: (e["ts"], e["user_id"], e["item_id"], e["event_type"])
        for e in landing_events(settings)
    }
    assert events == {
        "ml-1-1193": ((T0 + 7200) * 1000, "ml-u1", "ml-i1193", "purchase"),
        "ml-1-661": (T0 * 1000, "ml-u1", "ml-i661", "click"),
        "ml-2-1193": ((T0 + 60) * 1000, "ml-u2", "ml-i1193", "add_to_cart"),
        "ml-2-73": ((T0 + 86_400) * 1000, "ml-u2", "ml-i73", "view"),
    }
    items = catalog(settings)
    assert next(settings.catalog_dir.glob("dt=2000-12-31/movielens-items.jsonl"))
    assert items["ml-i73"]["title"] == "Misérables, Les (1995)"
    assert items["ml-i661"] == {
        "item_id": "ml-i661",
        "title": "James and the Giant Peach (1996)",
        "category": "Animation",
        "brand": "MovieLens",
        "price": None,
        "in_stock": True,
        "description": "Genres: Animation, Children's, Musical. Released 1996.",
        "updated_at": "1996-01-01T00:00:00Z",
    }


def test_import_csv_reads_quotes_utf8_half_stars_and_films_without_genre(
    tmp_path: Path, settings: Settings
) -> None:
    ratings = [(1, item, item / 2, T0 + 10 * item) for item in range(1, 11)]
    (tmp_path / "ratings.csv").write_text(
        CSV_HEADER + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ratings), encoding="utf-8"
    )
    (tmp_path / "movies.csv").write_text(
        MOVIES_HEADER + "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '2,"American President, The (1995)",Comedy|Drama|Romance\n'
        '3,"Amélie (Fabuleux destin d\'Amélie Poulain, Le) (2001)",Comedy|Romance\n'
        "4,Hyena Road,(no genres listed)\n"
        '5,"""Great Performances"" Cats (1998)",Musical\n'
        "6,Babylon 5 (1993–1998),Sci-Fi\n",
        encoding="utf-8",
    )

    report = import_movielens(tmp_path, settings)

    assert report.release.startswith("ml-latest") and report.bad_rows == {}
    assert (report.ratings, report.users, report.items) == (10, 1, 6)
    expected = ["view"] * 5 + ["click"] * 2 + ["add_to_cart"] * 2 + ["purchase"]
    events = sorted(landing_events(settings), key=lambda e: int(e["item_id"][4:]))
    assert [e["event_type"] for e in events] == expected
    assert report.events_by_type == {"view": 5, "click": 2, "add_to_cart": 2, "purchase": 1}

    items = catalog(settings)
    assert items["ml-i2"]["title"] == "American President, The (1995)"
    assert items["ml-i3"]["title"] == "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)"
    assert items["ml-i3"]["updated_at"] == "2001-01-01T00:00:00Z"
    assert items["ml-i5"]["title"] == '"Great Performances" Cats (1998)'
    assert items["ml-i1"]["category"] == "Adventure"
    assert items["ml-i1"]["description"] == (
        "Genres: Adventure, Animation, Children, Comedy, Fantasy. Released 1995."
    )
    assert (items["ml-i4"]["category"], items["ml-i4"]["description"]) == (
        "unknown",
        "Genres: unknown.",
    )
    assert items["ml-i4"]["updated_at"] == UNDATED
    assert items["ml-i6"]["updated_at"] == "1993-01-01T00:00:00Z"


def test_bad_rows_are_skipped_counted_and_located(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "ratings.csv").write_text(
        CSV_HEADER + f"1,1,4.0,{T0}\n"  # line 2: good
        "1,2,4.0\n"  # 3
        f"1,3,four,{T0}\n"  # 4
        f"1,4,7.0,{T0}\n"  # 5
        f"1,5,3.7,{T0}\n"  # 6
        f"0,6,3.0,{T0}\n"  # 7
        "1,7,3.0,1e20\n"  # 8
        f"1.5,8,3.0,{T0}\n"  # 9
        "\n"  # 10: blank, passed over
        f"2,1,5.0,{T0 + 60}\n",  # 11: good
        encoding="utf-8",
    )
    (tmp_path / "movies.csv").write_text(
        MOVIES_HEADER + "1,Toy Story (1995),Comedy\nx,Bad id,Drama\n7,Only two fields\n",
        encoding="utf-8",
    )

    report = import_movielens(tmp_path, settings)

    assert (report.ratings, report.items) == (2, 1)
    assert report.bad_rows == {
        "ratings.csv: wrong field count": 1,
        "ratings.csv: not a number": 1,
        "ratings.csv: rating off half stars 0.5..5": 2,
        "ratings.csv: id outside 1..2147483647": 1,
        "ratings.csv: timestamp outside 1970..9999": 1,
        "ratings.csv: id or timestamp not a whole number": 1,
        "movies.csv: not a number": 1,
        "movies.csv: wrong field count": 1,
    }
    # Films are read first; the examples give file and line.
    assert report.bad_row_examples[:3] == [
        "movies.csv line 3: not a number: ['x', 'Bad id', 'Drama']",
        "movies.csv line 4: wrong field count: ['7', 'Only two fields']",
        "ratings.csv line 3: wrong field count: ['1', '2', '4.0']",
    ]
    assert {e["event_id"] for e in landing_events(settings)} == {"ml-1-1", "ml-2-1"}


def test_bad_rows_of_the_double_colon_format(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "ratings.dat").write_text(
        f"1::1::4::{T0}\n1::2::3.5::{T0}\n1\t3::3::4::{T0}\n1::4::5::{T0}::9\n", encoding="latin-1"
    )
    (tmp_path / "movies.dat").write_text("1::Film (2000)::Drama\n", encoding="latin-1")

    report = import_movielens(tmp_path, settings)

    assert report.ratings == 1
    assert report.bad_rows == {
        "ratings.dat: rating off whole stars 1..5": 1,
        "ratings.dat: not a number": 1,
        "ratings.dat: wrong field count": 1,
    }


def test_a_wrong_header_or_no_valid_rating_is_an_error(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "movies.csv").write_text(MOVIES_HEADER + "1,Film (2000),Drama\n")
    (tmp_path / "ratings.csv").write_text(f"1,1,4.0,{T0}\n")
    with pytest.raises(ValueError, match=r"ratings\.csv: the first row must be the header"):
        import_movielens(tmp_path, settings)
    (tmp_path / "ratings.csv").write_text(CSV_HEADER + f"1,1,9,{T0}\n")
    with pytest.raises(ValueError, match="no valid rating"):
        import_movielens(tmp_path, settings)
    assert landing_tree(settings) == {}  # nothing landed, no spool left


def test_streaming_in_chunks_writes_the_same_landing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ordered by user like the releases, so one hour's ratings are spread over the file
    # and over chunks; hours repeat across days and users.
    rng = np.random.default_rng(7)
    rows = [
        (user, item, rng.integers(1, 11) / 2, T0 + int(rng.integers(0, 3 * 86_400)))
        for user in range(1, 8)
        for item in rng.choice(40, size=12, replace=False) + 1
    ]
    data = tmp_path / "ml"
    data.mkdir()
    (data / "ratings.csv").write_text(
        CSV_HEADER + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows)
    )
    (data / "movies.csv").write_text(
        MOVIES_HEADER + "".join(f"{i},Film {i} (2000),Drama\n" for i in range(1, 41))
    )

    trees = []
    for chunk in (100_000, 5, 1):
        monkeypatch.setattr(movielens, "CHUNK_ROWS", chunk)
        settings = load_settings(data_root=tmp_path / f"var-{chunk}")
        report = import_movielens(data, settings)
        assert report.ratings == len(rows)
        trees.append(landing_tree(settings))
    assert trees[0] == trees[1] == trees[2]
    assert not any(name.startswith(".") for name in trees[0])  # the spool is gone
    # Within an hour, lines keep the order of the file, as the 100K importer wrote them.
    for name, text in trees[0].items():
        if not name.startswith("events/"):
            continue
        ids = [json.loads(line)["event_id"] for line in text.splitlines()]
        order = [rows.index(next(r for r in rows if f"ml-{r[0]}-{r[1]}" == i)) for i in ids]
        assert order == sorted(order)


valid_rows = st.tuples(
    st.integers(1, 50),
    st.integers(1, 50),
    st.integers(1, 10).map(lambda r: r / 2),
    st.integers(0, 2_000_000_000),
)
# Any line but a blank one: near-misses built from number-like pieces, and any text.
# (Ratings files are read a line a row; line breaks would only make more lines.)
no_breaks = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n")
pieces = st.sampled_from(["1", "2.5", "0", "-3", "1e20", "nan", "x", "", " 4", "3.7", '"1"'])
junk_lines = (
    st.lists(pieces | st.text(no_breaks, max_size=6), min_size=1, max_size=6)
    .map(",".join)
    .filter(lambda line: line != "")
)


@given(
    valid=st.lists(valid_rows, min_size=1, max_size=15, unique_by=lambda r: r[:2]),
    junk=st.lists(junk_lines, max_size=8),
    chunk=st.integers(1, 6),
    data=st.data(),
)
@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_line_is_imported_or_counted(
    valid: list[tuple[int, int, float, int]],
    junk: list[str],
    chunk: int,
    data: st.DataObject,
) -> None:
    lines = data.draw(st.permutations([",".join(map(str, r)) for r in valid] + junk))
    with tempfile.TemporaryDirectory() as tmp, patch.object(movielens, "CHUNK_ROWS", chunk):
        folder = Path(tmp)
        (folder / "ratings.csv").write_text(CSV_HEADER + "\n".join(lines) + "\n")
        (folder / "movies.csv").write_text(MOVIES_HEADER + "1,Film (2000),Drama\n")
        config = load_settings(data_root=folder / "var")
        report = import_movielens(folder, config)
        imported = {e["event_id"]: e for e in landing_events(config)}

    assert report.ratings + sum(report.bad_rows.values()) == len(lines)
    for user, item, rating, ts in valid:
        event = imported[f"ml-{user}-{item}"]
        assert event["ts"] == ts * 1000
        assert event["event_type"] == event_types(np.array([rating]))[0]


titles = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(
    lambda t: t.strip() != ""
)


@given(films=st.lists(titles, min_size=1, max_size=8))
@hypothesis_settings(max_examples=40, deadline=None)
def test_any_title_survives_csv_quoting_and_json(films: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with (folder / "movies.csv").open("w", encoding="utf-8", newline="") as f:
            f.write(MOVIES_HEADER)
            csv.writer(f).writerows([i, t, "Drama|Comedy"] for i, t in enumerate(films, 1))
        (folder / "ratings.csv").write_text(CSV_HEADER + f"1,1,4.0,{T0}\n")
        items = read_items(folder)
    assert items["title"].tolist() == [t.strip() for t in films]
    back = [
        json.loads(line)["title"]
        for line in items.to_json(orient="records", lines=True).splitlines()
    ]
    assert back == [t.strip() for t in films]
