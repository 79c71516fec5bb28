"""Who may get a personal answer: the user key check and the deny list.

Reads the publish secret (through ``Settings.hmac_secret``, refused in production when it
is the development default) and the deny list file (:class:`jobs.subjects.DenyList`,
re-read when it changes). Writes nothing.

A ``/recommend`` request names a user, and anyone can type a user id. The service answers
personally (the user's factors, their recent items from Feast) only when the request also
carries that user's ``user_key`` — the HMAC of the id with the publish secret, the same key
that names their list on the CDN (:func:`jobs.subjects.user_key`). Only the site's backend
holds the secret; it computes the key for the signed-in user and hands it to the browser
with the page, exactly as it does for the CDN URL. Everything else is answered as
anonymous, from what the request itself carries: its recent items (fold-in), else
popularity. A user on the deny list (erasure under way) is anonymous even with a valid key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Literal

from jobs.config import Settings
from jobs.subjects import (
    USER_KEY_HEX,
    DenyList,
    settings_deny_list,
    subject_hash_with_key,
    subject_key,
)

log = logging.getLogger(__name__)

# Why a request was or was not answered personally (a Prometheus label: a fixed set).
Outcome = Literal["verified", "no_key", "bad_key", "denied", "deny_list_unreadable"]
OUTCOMES: tuple[str, ...] = ("verified", "no_key", "bad_key", "denied", "deny_list_unreadable")


@dataclass(frozen=True)
class Access:
    """The verdict on one request: personal or not, why, and whose (hashed) data."""

    personal: bool
    outcome: Outcome
    subject: str | None = None  # set once the key proved who the user is


class PersonalAccess:
    """Checks a request's user key and the deny list (a few µs: see bento/README.md)."""

    def __init__(self, secret: str, deny_list: DenyList, subject_secret: str | None = None) -> None:
        self._secret = secret.encode()
        self._subject_key = subject_key(subject_secret if subject_secret is not None else secret)
        self.deny_list = deny_list

    @classmethod
    def from_settings(cls, settings: Settings) -> PersonalAccess:
        """ConfigError when the secret is refused here (dev default in prod): no service.

        In production a missing deny list is an outage (fails closed), and a list written
        with another subject key is refused: see :class:`jobs.subjects.DenyList`.
        """
        deny = settings_deny_list(settings)
        return cls(settings.hmac_secret(), deny, settings.subject_secret_value())

    def expected_key(self, user_id: str) -> str:
        """:func:`jobs.subjects.user_key` with the bytes of the secret kept ready."""
        mac = hmac.new(self._secret, user_id.encode(), hashlib.sha256)
        return mac.hexdigest()[:USER_KEY_HEX]

    def subject(self, user_id: str) -> str:
        return subject_hash_with_key(self._subject_key, user_id)

    def check(self, user_id: str, user_key: str | None) -> Access:
        """Personal only with the right key for this id and the subject not denied.

        Never raises on client input: an id that cannot be encoded (a lone surrogate) or a
        key of the wrong shape is simply not verified. A deny list that cannot be read
        fails closed (nobody is answered personally until it is fixed).
        """
        if not user_key:
            return Access(False, "no_key")
        try:
            expected = self.expected_key(user_id).encode("ascii")
            given = user_key.encode("ascii")
        except UnicodeError:
            return Access(False, "bad_key")
        if not hmac.compare_digest(expected, given):  # constant time: no byte-by-byte oracle
            return Access(False, "bad_key")
        subject = self.subject(user_id)
        try:
            denied = self.deny_list.denies(subject)
        except (OSError, ValueError) as exc:
            log.error(
                "deny list %s unreadable, answering nobody personally: %s", self.deny_list.path, exc
            )
            return Access(False, "deny_list_unreadable", subject)
        if denied:
            return Access(False, "denied", subject)
        return Access(True, "verified", subject)


def reads_to_log(verdict: Access, source: str, recent_found: list[int]) -> list[tuple[str, str]]:
    """The (action, outcome) access-log lines one answered ``/recommend`` request makes.

    ``recent_found`` holds the number of recent items the feature-store lookup returned,
    when it ran. A request whose key proved nothing read nothing personal, and a log of
    guessed ids would only record the guesses: it makes no line (the refusals are counted
    in ``recflow_personal_access_total``). A proven user who was refused (deny list) makes
    one line with the refusal as the outcome.
    """
    if verdict.subject is None:
        return []
    if not verdict.personal:
        return [("recommend_personal", verdict.outcome)]
    lines = []
    if source in ("als", "als_session"):
        lines.append(("recommend_personal", "served"))
    if recent_found:
        lines.append(("recent_items", "served" if recent_found[0] else "empty"))
    return lines
