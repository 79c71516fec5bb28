"""Importer: MovieLens 100K onto recflow's event and item contracts.

Reads: ``u.data`` (user, item, rating, unix seconds), ``u.item`` (id|title|release
date|video date|url|19 genre flags) and ``u.user`` from the given folder. Writes: landing
events (hour partitions, file ``movielens.jsonl``) and ``catalog/dt=…/items.jsonl`` under
the configured landing folder. Nothing of the data set enters the repository.

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

Ids keep their MovieLens numbers prefixed (``ml-u196``, ``ml-i242``) so they can never
collide with a shop's ids; ``event_id`` is ``ml-<user>-<item>`` (a user rates a film once).
Films become items with their first genre as category, all genres and the release date in
the description, always in stock and without price.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.config import Settings
from jobs.contracts import EVENT_FIELDS
from jobs.sources.landing import MS_PER_HOUR, write_hour_files, write_text_atomic

RATING_TO_EVENT = {1: "view", 2: "view", 3: "click", 4: "add_to_cart", 5: "purchase"}
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
ENCODING = "latin-1"  # u.item holds titles such as "Misérables"


@dataclass
class ImportReport:
    ratings: int
    users: int
    items: int
    events_by_type: dict[str, int]
    files: int
    first_ts: str
    last_ts: str


def read_ratings(path: Path) -> pd.DataFrame:
    """``u.data`` as a frame with user, item, rating, unix seconds."""
    file = path / "u.data"
    if not file.exists():
        raise FileNotFoundError(f"{file} not found: point the importer at the ml-100k folder")
    return pd.read_csv(file, sep="\t", names=["user", "item", "rating", "ts"])


def read_items(path: Path) -> pd.DataFrame:
    """``u.item`` as catalog rows following the item contract."""
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


def ratings_to_events(ratings: pd.DataFrame) -> pd.DataFrame:
    """Ratings as contract events (one event per rating)."""
    ts_ms = ratings["ts"].to_numpy(dtype=np.int64) * 1000
    users = "ml-u" + ratings["user"].astype(str)
    items = "ml-i" + ratings["item"].astype(str)
    events = pd.DataFrame(
        {
            "event_id": "ml-" + ratings["user"].astype(str) + "-" + ratings["item"].astype(str),
            "ts": ts_ms,
            "user_id": users,
            "item_id": items,
            "event_type": ratings["rating"].map(RATING_TO_EVENT),
            "session_id": None,
            "request_id": None,
            "position": None,
            "quantity": None,
            "price": None,
            "consent": True,
        }
    )
    if events["event_type"].isna().any():
        bad = ratings.loc[events["event_type"].isna(), "rating"].unique()
        raise ValueError(f"u.data holds ratings outside 1..5: {sorted(bad)}")
    return events[list(EVENT_FIELDS)]


def import_movielens(path: Path, settings: Settings) -> ImportReport:
    """Write MovieLens 100K into the landing folder in the contract layout."""
    path = Path(path)
    ratings = read_ratings(path)
    items = read_items(path)
    events = ratings_to_events(ratings)

    hours = events["ts"].to_numpy() // MS_PER_HOUR
    order = np.argsort(hours, kind="stable")
    lines = np.array(
        events.iloc[order].to_json(orient="records", lines=True).splitlines(), dtype=object
    )
    files = write_hour_files(settings.events_dir, hours[order], lines, "movielens")
    first = datetime.fromtimestamp(int(ratings["ts"].min()), tz=UTC)
    last = datetime.fromtimestamp(int(ratings["ts"].max()), tz=UTC)
    write_text_atomic(
        settings.catalog_dir / f"dt={first:%Y-%m-%d}" / "movielens-items.jsonl",
        items.to_json(orient="records", lines=True),
    )
    return ImportReport(
        ratings=len(ratings),
        users=int(ratings["user"].nunique()),
        items=len(items),
        events_by_type={str(k): int(v) for k, v in events["event_type"].value_counts().items()},
        files=files + 1,
        first_ts=first.isoformat(),
        last_ts=last.isoformat(),
    )
