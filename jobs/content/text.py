"""The text an item is embedded from, made safe from whatever the catalog holds.

Catalog fields are free text from upstream systems: they may be missing, enormous, hold
control characters, lone surrogates or several spellings of one character. The embedding
must be a function of what a reader would see, so the same product written two ways (NFC
or NFD, a stray zero-width space) gets the same vector and the same content hash, and no
input can make the tokenizer slow or fail.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Mapping

# The fields embedded, in this order; category and brand are short and repeated on purpose
# (they carry most of a product's identity in a shop's catalog).
FIELDS = ("title", "category", "brand", "description")
MAX_CHARS = 2_000  # beyond this a description is boilerplate; the tokenizer stays fast
# Invisible format characters (zero-width, direction marks, soft hyphen): a reader sees
# the letters around them joined, so they are dropped; line and paragraph separators are
# whitespace and become a space below.
_INVISIBLE = re.compile(r"[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]")
_SPACES = re.compile(r"\s+")


def clean(value: object, max_chars: int = MAX_CHARS) -> str:
    """One field as plain text: NFKC, no control or invisible characters, no lone
    surrogates, runs of whitespace as one space, at most ``max_chars`` characters."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    text = value if isinstance(value, str) else str(value)
    # A lone surrogate cannot be encoded and would make the tokenizer raise: replace it.
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = unicodedata.normalize("NFKC", text[: max_chars * 4])
    text = _INVISIBLE.sub("", text)
    if not text.isprintable():  # the per-character pass only for the rare text needing it
        text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return _SPACES.sub(" ", text).strip()[:max_chars]


def item_text(item: Mapping[str, object], max_chars: int = MAX_CHARS) -> str:
    """The text of one catalog item (missing fields left out), at most ``max_chars``."""
    parts = [clean(item.get(name), max_chars) for name in FIELDS]
    return " . ".join(p for p in parts if p)[:max_chars]


def content_hash(text: str, model_id: str) -> str:
    """What decides whether an item must be embedded again: its text and the model."""
    return hashlib.sha256(f"{model_id}\x1f{text}".encode()).hexdigest()
