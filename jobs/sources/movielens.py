"""Importer: the MovieLens releases onto recflow's event and item contracts.

Reads one MovieLens release from the given folder, recognised by the files it holds:

=========================================  ===============================  =====================
release                                    ratings, films                   format
=========================================  ===============================  =====================
ml-100k                                    ``u.data``, ``u.item``           tab / ``|``, latin-1
ml-1m                                      ``ratings.dat``, ``movies.dat``  ``::``, latin-1
ml-latest(-small), ml-20m, ml-25m, ml-32m  ``ratings.csv``, ``movies.csv``  CSV, header, UTF-8
=========================================  ===============================  =====================

Writes: landing events (hour partitions, file ``movielens.jsonl``) and
``catalog/dt=<day of the first rating>/movielens-items.jsonl`` under the configured landing
folder. Nothing of the data sets enters the repository. ``u.user`` and ``users.dat`` are
not read: the contracts have no user record, only the ids events carry.

A rating says the user watched a film and how much they liked it. recflow learns from
implicit feedback, so every rating becomes one event whose type grows with the rating,
which keeps the graded preference in the interaction weights:

==========  ==============
rating      event_type
==========  ==============
1, 2        view
3           click
4           add_to_cart
5           purchase
==========  ==============

The CSV releases rate in half stars (0.5 … 5.0). The type is chosen by thresholds on the
rating at the whole stars of the table (below 3 view, from 3 click, from 4 add_to_cart,
5 purchase), so a half star never lifts a rating to the next type: 2.5 is a view, 3.5 a
click, 4.5 an add_to_cart. Purchase stays the top mark alone, as in 100K and 1M, and a
whole-star rating maps to the same type in every release.

Ids keep their MovieLens numbers prefixed (``ml-u196``, ``ml-i242``) so they can never
collide with a shop's ids; ``event_id`` is ``ml-<user>-<item>`` (a user rates a film once).
The numbers are those of the release (user 1 of 100K is not user 1 of 1M), so a landing
folder holds one release. Films become items with their first genre as category, all
genres and the release date (100K) or the year of the title in the description, always in
stock and without price.

Every release is streamed, so 25M and 32M (up to 900 MB of ratings) fit where 100K did:
ratings are read ``CHUNK_ROWS`` lines at a time and spooled by day into binary files in a
hidden folder of the landing folder (32 bytes a rating, removed as it is read), then
written out day by day, each hour file whole and its lines in file order, as before.
Memory holds one chunk (the size of all of 100K) or the busiest day, not the release.

A row that cannot be read (a wrong number of fields, a field that is not a number, an id
or timestamp that is not whole, an id outside 1 … 2³¹−1, a rating off the release's
scale, a timestamp outside 1970 … 9999) is skipped and counted in the report by file and
reason, the first few with their line; blank lines are passed over, as pandas did. A
missing or wrong header row, an unclosed quote, or a ratings file without a single valid
row is an error.
"""

from __future__ import annotations

import csv
import io
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.config import Settings
from jobs.contracts import EVENT_FIELDS, MAX_TS_MS
from jobs.sources.landing import MS_PER_HOUR, write_hour_files, write_text_atomic

RATING_TO_EVENT = {1: "view", 2: "view", 3: "click", 4: "add_to_cart", 5: "purchase"}
# The same table as thresholds on a (half-star) rating, highest first; below all: view.
EVENT_THRESHOLDS: tuple[tuple[float, str], ...] = (
    (5.0, "purchase"),
    (4.0, "add_to_cart"),
    (3.0, "click"),
)
LOWEST_EVENT = "view"
GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
ENCODING = "latin-1"  # u.item and movies.dat hold titles such as "Misérables"
NO_GENRES = "(no genres listed)"  # the CSV releases' word for a film without genre
# MovieLens began collecting ratings in 1995: a film without a year in its title dates
# from then, so a dated record of the same film wins the catalog's newest-first upsert.
UNDATED = "1995-01-01T00:00:00Z"
YEAR = re.compile(r"\(([0-9]{4})(?:\s*[-–]\s*[0-9]{0,4})?\)\s*$")

# Rows parsed at a time: all of 100K, so no release needs more memory than 100K did.
CHUNK_ROWS = 100_000
SECONDS_PER_DAY = 86_400
MAX_TS_S = MAX_TS_MS // 1000
# MovieLens numbers users and films from 1 (32M: about 200,000 users, 300,000 films); the
# bound keeps every id exact in the float the row-by-row reading goes through.
MAX_ID = 2**31 - 1
ID_RANGE = f"1..{MAX_ID}"
BAD_ROW_EXAMPLES = 5
# One spooled rating: 32 bytes, so the spool of 32M holds about 1 GB.
SPOOL_ROW = np.dtype([("user", "<i8"), ("item", "<i8"), ("rating", "<f8"), ("ts", "<i8")])


@dataclass(frozen=True)
class Release:
    """The files and format of one MovieLens release (or family of releases)."""

    name: str
    ratings: str
    items: str
    delimiter: str
    encoding: str
    half_stars: bool
    # The first row of the file, when the release writes one; it is checked, not guessed.
    ratings_header: tuple[str, ...] | None = None
    items_header: tuple[str, ...] | None = None

    @property
    def scale(self) -> str:
        return "half stars 0.5..5" if self.half_stars else "whole stars 1..5"


RELEASES: tuple[Release, ...] = (
    Release("ml-100k", "u.data", "u.item", "\t", ENCODING, half_stars=False),
    Release("ml-1m", "ratings.dat", "movies.dat", "::", ENCODING, half_stars=False),
    Release(
        "ml-latest, ml-latest-small, ml-20m, ml-25m, ml-32m",
        "ratings.csv",
        "movies.csv",
        ",",
        "utf-8-sig",  # none of them writes a byte-order mark, but a re-saved file might
        half_stars=True,
        ratings_header=("userId", "movieId", "rating", "timestamp"),
        items_header=("movieId", "title", "genres"),
    ),
)


@dataclass
class BadRows:
    """Rows skipped, counted by file and reason, with the first few located exactly."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, file: str, reason: str, line: int, fields: Sequence[str]) -> None:
        self.counts[f"{file}: {reason}"] += 1
        if len(self.examples) < BAD_ROW_EXAMPLES:
            self.examples.append(f"{file} line {line}: {reason}: {list(fields)!r:.80}")


@dataclass
class ImportReport:
    ratings: int
    users: int
    items: int
    events_by_type: dict[str, int]
    files: int
    first_ts: str
    last_ts: str
    release: str
    bad_rows: dict[str, int]
    bad_row_examples: list[str]


def detect_release(path: Path) -> Release:
    """The release whose ratings file the folder holds.

    Detection goes by file names only: the files' contents are checked row by row later,
    where a mismatch can name the line.
    """
    path = Path(path)
    found = [r for r in RELEASES if (path / r.ratings).is_file()]
    if not found:
        expected = "; ".join(f"{r.ratings} + {r.items} ({r.name})" for r in RELEASES)
        raise FileNotFoundError(f"{path}: no MovieLens release found; expected {expected}")
    if len(found) > 1:
        names = ", ".join(r.ratings for r in found)
        raise ValueError(f"{path} holds the ratings of several releases ({names}): one per folder")
    release = found[0]
    if not (path / release.items).is_file():
        raise FileNotFoundError(
            f"{path}: {release.ratings} found but {release.items} missing ({release.name})"
        )
    return release


def event_types(ratings: np.ndarray) -> np.ndarray:
    """Event type of each rating, whole or half star, by ``EVENT_THRESHOLDS``."""
    ratings = np.asarray(ratings, dtype=np.float64)
    return np.select(
        [ratings >= t for t, _ in EVENT_THRESHOLDS],
        [e for _, e in EVENT_THRESHOLDS],
        LOWEST_EVENT,
    ).astype(object)


def _split(
    lines: Iterable[str], delimiter: str, first: int, name: str, *, quoted: bool
) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every row but blank lines; ``first`` numbers the first line.

    Quoted files go through the csv module: ``movies.csv`` quotes titles that hold commas
    (even line breaks). Ratings files hold numbers only, one rating a line, and are split
    at the separator (``::`` is beyond the csv module anyway): a line is a row, which the
    chunks and the line numbers of bad rows rely on.
    """
    if quoted:
        reader = csv.reader(lines)
        try:
            for fields in reader:
                if fields:
                    yield first + reader.line_num - 1, fields
        except csv.Error as exc:
            # An unclosed quote runs to the end of the file: no row after it can be read.
            raise ValueError(f"{name} line {first + reader.line_num - 1}: {exc}") from None
    else:
        for n, line in enumerate(lines, first):
            fields = line.rstrip("\r\n").split(delimiter)
            if fields != [""]:
                yield n, fields


def _lines(
    file: Path, delimiter: str, encoding: str, header: tuple[str, ...] | None, *, quoted: bool
) -> Iterator[str]:
    """The file's lines, ends kept, after its header row, which is checked, not guessed."""
    with file.open(encoding=encoding, newline="") as f:
        if header is not None:
            rows = _split([f.readline()], delimiter, 1, file.name, quoted=quoted)
            first = next((fields for _, fields in rows), None)
            if first is None or tuple(x.strip() for x in first) != header:
                found = "nothing" if first is None else delimiter.join(first)[:80]
                raise ValueError(
                    f"{file}: the first row must be the header {delimiter.join(header)}, "
                    f"found {found!r}"
                )
        yield from f


def _checks(ratings: pd.DataFrame, release: Release) -> list[tuple[np.ndarray, str]]:
    """(rows that pass, reason of the others) for numeric ratings, in the order applied."""
    step = 0.5 if release.half_stars else 1.0
    user, item = ratings["user"].to_numpy(), ratings["item"].to_numpy()
    r, ts = ratings["rating"].to_numpy(np.float64), ratings["ts"].to_numpy()
    return [
        ((user >= 1) & (user <= MAX_ID) & (item >= 1) & (item <= MAX_ID), f"id outside {ID_RANGE}"),
        (
            (r >= step) & (r <= 5.0) & (r / step == np.round(r / step)),
            f"rating off {release.scale}",
        ),
        ((ts >= 0) & (ts <= MAX_TS_S), "timestamp outside 1970..9999"),
    ]


def _records(ratings: pd.DataFrame) -> np.ndarray:
    """Checked ratings as ``SPOOL_ROW`` records (ids and seconds are whole by then)."""
    out = np.empty(len(ratings), dtype=SPOOL_ROW)
    for name in SPOOL_ROW.names:
        out[name] = ratings[name].to_numpy().astype(SPOOL_ROW[name])
    return out


def _parse_clean(lines: list[str], release: Release) -> np.ndarray | None:
    """A chunk through pandas' C parser, when every line is a valid rating; else None.

    The fast path, five times quicker than the csv module, for the whole and clean files
    MovieLens publishes. Anything unusual (a blank line, a row of other than four fields,
    text where a number belongs, a value off the scale) returns None and is left to
    ``_parse_rows``, which names the line and the reason.
    """
    text, sep = "".join(lines), release.delimiter
    if sep == "::":
        # ratings.dat holds numbers only, so the C parser may split at a tab instead; a tab
        # already there would make fields of its own, so such a chunk goes the slow way.
        if "\t" in text:
            return None
        text, sep = text.replace("::", "\t"), "\t"
    # Exactly three separators a line: pandas would drop the extra fields of a first line.
    if text.count(sep) != 3 * len(lines):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            # pandas checks "1e20" in an int64 column by casting, then raises ValueError.
            warnings.simplefilter("ignore", RuntimeWarning)
            ratings = pd.read_csv(
                io.StringIO(text),
                sep=sep,
                header=None,
                names=list(SPOOL_ROW.names),
                dtype={"user": np.int64, "item": np.int64, "rating": np.float64, "ts": np.int64},
                index_col=False,
                quoting=csv.QUOTE_NONE,
                engine="c",
            )
    except (ValueError, OverflowError, pd.errors.ParserWarning):
        return None
    if len(ratings) != len(lines) or not all(ok.all() for ok, _ in _checks(ratings, release)):
        return None
    return _records(ratings)


def _parse_rows(rows: list[tuple[int, list[str]]], release: Release, bad: BadRows) -> np.ndarray:
    """The valid rows as ``SPOOL_ROW`` records; each other row counted once in ``bad``."""
    name = release.ratings
    good = []
    for line, fields in rows:
        if len(fields) == 4:
            good.append((line, fields))
        else:
            bad.add(name, "wrong field count", line, fields)
    if not good:
        return np.empty(0, dtype=SPOOL_ROW)
    text = pd.DataFrame([fields for _, fields in good], columns=list(SPOOL_ROW.names))
    ratings = text.apply(pd.to_numeric, errors="coerce").astype(np.float64)
    whole = ratings[["user", "item", "ts"]].to_numpy()
    checks = [
        (ratings.notna().all(axis=1).to_numpy(), "not a number"),
        ((whole == np.floor(whole)).all(axis=1), "id or timestamp not a whole number"),
        *_checks(ratings, release),
    ]
    valid = np.ones(len(good), dtype=bool)
    for ok, reason in checks:
        for i in np.flatnonzero(valid & ~ok):
            bad.add(name, reason, *good[i])
        valid &= ok
    return _records(ratings[valid])


def _rating_chunks(path: Path, release: Release, bad: BadRows) -> Iterator[np.ndarray]:
    """The valid ratings of the release, ``CHUNK_ROWS`` lines of the file at a time."""
    header = release.ratings_header
    lines = _lines(
        path / release.ratings, release.delimiter, release.encoding, header, quoted=False
    )
    first = 2 if header else 1
    while chunk := list(islice(lines, CHUNK_ROWS)):
        clean = _parse_clean(chunk, release)
        if clean is None:
            rows = list(_split(chunk, release.delimiter, first, release.ratings, quoted=False))
            clean = _parse_rows(rows, release, bad)
        yield clean
        first += len(chunk)


def read_ratings(path: Path) -> pd.DataFrame:
    """All valid ratings of the folder's release as one frame: user, item, rating, seconds.

    For tests and small releases; the importer streams instead. Ratings are integers in
    the whole-star releases, floats in the half-star ones.
    """
    release = detect_release(path)
    chunks = list(_rating_chunks(Path(path), release, BadRows()))
    frame = pd.DataFrame(np.concatenate(chunks) if chunks else np.empty(0, dtype=SPOOL_ROW))
    if not release.half_stars:
        frame["rating"] = frame["rating"].astype(np.int64)
    return frame


def _read_u_item(path: Path) -> pd.DataFrame:
    """100K's ``u.item``: release dates and genre flags."""
    cols = ["item", "title", "release", "video_release", "url", *GENRES]
    raw = pd.read_csv(path / "u.item", sep="|", names=cols, encoding=ENCODING)
    flags = raw[list(GENRES)].to_numpy().astype(bool)
    genres = [[g for g, f in zip(GENRES, row, strict=True) if f] or ["unknown"] for row in flags]
    release = pd.to_datetime(raw["release"], format="%d-%b-%Y", errors="coerce", utc=True)
    updated = release.fillna(pd.Timestamp("1998-01-01", tz="UTC"))
    return pd.DataFrame(
        {
            "item_id": "ml-i" + raw["item"].astype(str),
            "title": raw["title"].astype(str),
            "category": [g[0] for g in genres],
            "brand": "MovieLens",
            "price": None,
            "in_stock": True,
            "description": [
                f"Genres: {', '.join(g)}. Released {r}."
                if isinstance(r, str)
                else f"Genres: {', '.join(g)}."
                for g, r in zip(genres, raw["release"], strict=True)
            ],
            "updated_at": updated.dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )


def _read_movies(path: Path, release: Release, bad: BadRows) -> pd.DataFrame:
    """``movies.dat`` / ``movies.csv`` (id, title with year, ``|``-separated genres)."""
    ids: list[int] = []
    titles: list[str] = []
    genres: list[list[str]] = []
    header, quoted = release.items_header, release.delimiter == ","
    lines = _lines(path / release.items, release.delimiter, release.encoding, header, quoted=quoted)
    first = 2 if header else 1
    for line, fields in _split(lines, release.delimiter, first, release.items, quoted=quoted):
        if release.delimiter == "::" and len(fields) > 3:
            # A title holding "::" (never quoted): the id is first and the genres last.
            fields = [fields[0], "::".join(fields[1:-1]), fields[-1]]
        if len(fields) != 3:
            bad.add(release.items, "wrong field count", line, fields)
            continue
        try:
            movie = int(fields[0])
        except ValueError:
            bad.add(release.items, "not a number", line, fields)
            continue
        if not 1 <= movie <= MAX_ID:
            bad.add(release.items, f"id outside {ID_RANGE}", line, fields)
            continue
        names = [g.strip() for g in fields[2].split("|") if g.strip() not in ("", NO_GENRES)]
        ids.append(movie)
        titles.append(fields[1].strip())
        genres.append(names or ["unknown"])  # 100K's name for a film without genre
    years = [m.group(1) if (m := YEAR.search(t)) else None for t in titles]
    return pd.DataFrame(
        {
            "item_id": [f"ml-i{i}" for i in ids],
            "title": titles,
            "category": [g[0] for g in genres],
            "brand": "MovieLens",
            "price": None,
            "in_stock": True,
            "description": [
                f"Genres: {', '.join(g)}. Released {y}." if y else f"Genres: {', '.join(g)}."
                for g, y in zip(genres, years, strict=True)
            ],
            "updated_at": [f"{y}-01-01T00:00:00Z" if y else UNDATED for y in years],
        }
    )


def read_items(
    path: Path, release: Release | None = None, bad: BadRows | None = None
) -> pd.DataFrame:
    """The release's films as catalog rows following the item contract."""
    path = Path(path)
    release = release or detect_release(path)
    if release.items == "u.item":
        return _read_u_item(path)
    return _read_movies(path, release, bad if bad is not None else BadRows())


def ratings_to_interactions(ratings: pd.DataFrame, weights: dict[str, float]) -> pd.DataFrame:
    """Ratings as ``gold/interactions`` would hold them (one event each, so no sums):
    ``user_id``, ``item_id``, ``weight`` (of the rating's event type), ``last_ts``; pairs
    of weight 0 left out. For offline studies that skip the lake (bench/session_ndcg.py)."""
    weight = pd.Series(event_types(ratings["rating"].to_numpy())).map(weights).to_numpy()
    frame = pd.DataFrame(
        {
            "user_id": ratings["user"].astype(str).to_numpy(),
            "item_id": ratings["item"].astype(str).to_numpy(),
            "weight": weight,
            "last_ts": pd.to_datetime(ratings["ts"].to_numpy(), unit="s"),
        }
    )
    return frame[frame["weight"] > 0].reset_index(drop=True)


def ratings_to_events(ratings: pd.DataFrame) -> pd.DataFrame:
    """Ratings as contract events (one event per rating)."""
    rating = ratings["rating"].to_numpy(dtype=np.float64)
    if not ((rating >= 0.5) & (rating <= 5.0)).all():
        bad = np.unique(rating[~((rating >= 0.5) & (rating <= 5.0))])
        raise ValueError(f"ratings outside 0.5..5: {bad.tolist()}")
    ts_ms = ratings["ts"].to_numpy(dtype=np.int64) * 1000
    users = "ml-u" + ratings["user"].astype(str)
    items = "ml-i" + ratings["item"].astype(str)
    events = pd.DataFrame(
        {
            "event_id": "ml-" + ratings["user"].astype(str) + "-" + ratings["item"].astype(str),
            "ts": ts_ms,
            "user_id": users,
            "item_id": items,
            "event_type": event_types(rating),
            "session_id": None,
            "request_id": None,
            "position": None,
            "quantity": None,
            "price": None,
            "consent": True,
        }
    )
    return events[list(EVENT_FIELDS)]


class _DaySpool:
    """Ratings bucketed by UTC day in binary files.

    The ratings files are ordered by user, not time, so an hour's events are spread over
    the whole file; the spool gathers them without holding the file in memory, and hands
    whole days back in order so that every hour file is written once, whole.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.days: set[int] = set()

    def _file(self, day: int) -> Path:
        return self.folder / f"{day}.bin"

    def add(self, ratings: np.ndarray) -> None:
        """Append ratings to their days' files, keeping the order they were read in."""
        if ratings.size == 0:
            return
        days = ratings["ts"] // SECONDS_PER_DAY
        order = np.argsort(days, kind="stable")
        ratings, days = ratings[order], days[order]
        cuts = np.flatnonzero(np.diff(days)) + 1
        for start, stop in zip(np.r_[0, cuts], np.r_[cuts, days.size], strict=True):
            day = int(days[start])
            with self._file(day).open("ab") as f:
                ratings[start:stop].tofile(f)
            self.days.add(day)

    def batches(self, max_rows: int) -> Iterator[np.ndarray]:
        """Spooled ratings in day order, whole days, about ``max_rows`` at a time.

        Each day's file is removed once read, so the spool shrinks as landing grows.
        """
        batch: list[np.ndarray] = []
        rows = 0
        for day in sorted(self.days):
            file = self._file(day)
            part = np.fromfile(file, dtype=SPOOL_ROW)
            file.unlink()
            if batch and rows + len(part) > max_rows:
                yield np.concatenate(batch)
                batch, rows = [], 0
            batch.append(part)
            rows += len(part)
        if batch:
            yield np.concatenate(batch)


def import_movielens(path: Path, settings: Settings) -> ImportReport:
    """Write the folder's MovieLens release into the landing folder in the contract layout."""
    path = Path(path)
    release = detect_release(path)
    bad = BadRows()
    # Films first: a small file, so a wrong header fails before a long pass over ratings.
    items = read_items(path, release, bad)

    assert settings.landing_dir is not None
    settings.landing_dir.mkdir(parents=True, exist_ok=True)
    users: set[int] = set()
    ratings = files = 0
    first_s, last_s = MAX_TS_S, 0
    by_type: Counter[str] = Counter()
    # The spool sits in the landing folder: same disk as the output, outside events/.
    with tempfile.TemporaryDirectory(prefix=".movielens-spool-", dir=settings.landing_dir) as tmp:
        spool = _DaySpool(Path(tmp))
        for chunk in _rating_chunks(path, release, bad):
            spool.add(chunk)
            users.update(np.unique(chunk["user"]).tolist())
            ratings += len(chunk)
            if len(chunk):
                first_s = min(first_s, int(chunk["ts"].min()))
                last_s = max(last_s, int(chunk["ts"].max()))
        if ratings == 0:
            raise ValueError(
                f"{path / release.ratings}: no valid rating; skipped {dict(bad.counts)}"
            )
        for batch in spool.batches(CHUNK_ROWS):
            events = ratings_to_events(pd.DataFrame(batch))
            hours = events["ts"].to_numpy() // MS_PER_HOUR
            order = np.argsort(hours, kind="stable")
            lines = np.array(
                events.iloc[order].to_json(orient="records", lines=True).splitlines(),
                dtype=object,
            )
            files += write_hour_files(settings.events_dir, hours[order], lines, "movielens")
            by_type.update(events["event_type"].value_counts().to_dict())

    first = datetime.fromtimestamp(first_s, tz=UTC)
    last = datetime.fromtimestamp(last_s, tz=UTC)
    write_text_atomic(
        settings.catalog_dir / f"dt={first:%Y-%m-%d}" / "movielens-items.jsonl",
        items.to_json(orient="records", lines=True),
    )
    return ImportReport(
        ratings=ratings,
        users=len(users),
        items=len(items),
        events_by_type={str(k): int(v) for k, v in by_type.most_common()},
        files=files + 1,
        first_ts=first.isoformat(),
        last_ts=last.isoformat(),
        release=release.name,
        bad_rows=dict(bad.counts),
        bad_row_examples=bad.examples,
    )
