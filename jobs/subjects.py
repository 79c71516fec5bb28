"""Data subjects: the keyed hash that names a person without their id, and the deny list.

Everything recflow records *about* a person's data rather than the data itself (erasure
requests once done, the erasure log, the access log, consent withdrawals, the online
service's deny list) names the person by :func:`subject_hash`, never by the user id. The
hash is keyed with a key derived from the publish secret (not the secret itself), so it
cannot be reversed or recomputed without the secret, and knowing a user's CDN object key
does not reveal their subject hash (or the other way round).

The deny list is the set of subject hashes the online service must no longer answer
personally: written by the privacy DAG *before* anything is erased (so the service stops
answering for a person at the start of their erasure, not at its end), read by every
service worker, which re-reads it when the file changes. It is a small JSON file written
atomically (temporary file + rename), so a reader sees the old or the new list, never a
half-written one.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from jobs.config import Settings

SUBJECT_HEX = 32  # 128 bits: no collisions among any realistic number of people
USER_KEY_HEX = 32  # 128 bits of the HMAC: unguessable, and short paths


def user_key(secret: str, user_id: str) -> str:
    """The user's capability key: HMAC-SHA256 of the user id with the publish secret.

    Stable per user, not reversible, not enumerable without the secret. It names the
    user's published object on the CDN (:mod:`jobs.publish.layout`) and is what a
    ``/recommend`` request shows to get that user's personal answer
    (:mod:`jobs.serve.access`): the site's backend, which holds the secret, computes it for
    the signed-in user, so holding it proves the backend vouched for the id.
    """
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()[:USER_KEY_HEX]


def subject_key(secret: str) -> str:
    """The per-deployment key of subject hashes, derived from the publish secret.

    Derived (HMAC of a fixed label) rather than the secret itself, so it differs from the
    key of the CDN object names, and hex, so Spark can compute the same hash with
    ``sha2(concat(key, user_id), 256)`` (see :func:`jobs.privacy.erasure.subject_column`)
    when it has to match many users at once.
    """
    return hmac.new(secret.encode(), b"recflow-subject-key", hashlib.sha256).hexdigest()


def subject_hash_with_key(key: str, user_id: str) -> str:
    """SHA-256 of key || user id (UTF-8), first 32 hex: what Spark's ``sha2`` computes too.

    A secret-prefix hash: with a fixed-length secret prefix it is a keyed pseudonym that
    cannot be computed or reversed without the key (length extension only forges hashes of
    ids that end in SHA-256 padding bytes, which nobody can register).
    """
    digest = hashlib.sha256((key + user_id).encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:SUBJECT_HEX]


def subject_hash(secret: str, user_id: str) -> str:
    """The person's name in logs and lists, for a deployment's publish secret."""
    return subject_hash_with_key(subject_key(secret), user_id)


def key_id(key: str) -> str:
    """A short public name of a subject key: stored with hashes so a changed key is noticed."""
    return hashlib.sha256(b"recflow-key-id" + key.encode()).hexdigest()[:12]


def subject_hasher(settings: Settings) -> Callable[[str], str]:
    """``subject_hash`` bound to this deployment's subject secret (ConfigError if refused)."""
    key = subject_key(settings.subject_secret_value())
    return lambda user_id: subject_hash_with_key(key, user_id)


def deny_list_path(settings: Settings) -> Path:
    assert settings.privacy_dir is not None  # derived from data_root when not set
    return settings.privacy_dir / "deny.json"


def read_deny_list(path: Path, expected_key_id: str | None = None) -> frozenset[str]:
    """The subject hashes in a deny list file; empty when the file does not exist.

    A file that exists but cannot be read or parsed raises: a service that silently
    treated a corrupt list as empty would answer for people who asked to be forgotten. So
    does a list written with another subject key (``expected_key_id``): after a change of
    RECFLOW_SUBJECT_SECRET none of its hashes would match anyone any more.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return frozenset()
    subjects = data.get("subjects") if isinstance(data, dict) else None
    if not isinstance(subjects, list) or not all(isinstance(s, str) for s in subjects):
        raise ValueError(f"{path}: not a deny list (expected {{'subjects': [hex, …]}})")
    written = data.get("key_id")
    if expected_key_id is not None and written is not None and written != expected_key_id:
        raise ValueError(
            f"{path}: written with subject key {written}, this process has {expected_key_id}"
            " (RECFLOW_SUBJECT_SECRET changed?): its hashes match nobody now"
        )
    return frozenset(subjects)


def add_to_deny_list(path: Path, hashes: Iterable[str], subject_key_id: str | None = None) -> int:
    """Add subject hashes to the list atomically; returns how many were new.

    Entries are never removed: a person erased stays denied, so a model or publish that
    still held them (an old version rolled back to) cannot answer for them again.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    current = read_deny_list(path, subject_key_id)
    merged = current | set(hashes)
    if merged == current and path.exists():
        return 0
    body = {
        "version": 1,
        "key_id": subject_key_id,
        "updated_at": datetime.now(UTC).isoformat(),
        "subjects": sorted(merged),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".deny-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(body, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):  # the rename happened or never started
            os.unlink(tmp)
        raise
    return len(merged) - len(current)


class DenyList:
    """A deny list file as a process sees it: re-read when its mtime or size changes.

    ``required``: a missing file is an outage, not an empty list (production, where the
    list lives on shared storage a container may have failed to mount): it raises, and
    the service answers nobody personally until the file is there.
    """

    def __init__(
        self, path: Path, expected_key_id: str | None = None, required: bool = False
    ) -> None:
        self.path = path
        self.expected_key_id = expected_key_id
        self.required = required
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._subjects: frozenset[str] = frozenset()

    def current(self) -> frozenset[str]:
        try:
            st = self.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            if self.required:
                raise
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._subjects = (
                    read_deny_list(self.path, self.expected_key_id) if stamp else frozenset()
                )
                self._stamp = stamp
            return self._subjects

    def denies(self, subject: str) -> bool:
        return subject in self.current()


def settings_deny_list(settings: Settings) -> DenyList:
    """The deny list as the service and the stream worker read it: keyed with the subject
    key (a list written with another is refused), required in production (a missing file
    is storage not mounted, not an empty list)."""
    return DenyList(
        deny_list_path(settings),
        expected_key_id=key_id(subject_key(settings.subject_secret_value())),
        required=settings.env == "prod",
    )
