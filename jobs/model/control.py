"""The control group: which users are served popularity instead of their personal list.

Reads: the setting ``control_share`` and the subject secret. Writes nothing.

The lift of personalization is measured, not assumed (``jobs.monitor.lift``): a stable
share of users gets the popular list everywhere — in the published JSON
(:mod:`jobs.publish.steps`) and from the online service (``bento/service.py``) — and
their CTR, conversion and revenue are compared with everyone else's. Publish and service
call the one function here, so a user is in the same group on the CDN and online.

A user's bucket is a keyed hash of their id (HMAC-SHA256 with a key derived from the
subject secret, under its own label): stable across runs, processes and model versions,
uniform, and impossible to choose without the secret, so nobody can pick their group by
picking an id. Changing ``control_share`` moves only the users between the old and the
new threshold; a share of 0 puts nobody in control.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Literal

import numpy as np

from jobs.config import Settings

Group = Literal["treatment", "control"]
TREATMENT: Group = "treatment"
CONTROL: Group = "control"
# 52 bits of the digest: an exact float in [0, 1), finer than any share anyone sets.
_BUCKET_BITS = 52
_LABEL = b"recflow-control-group"


def control_key(settings: Settings) -> bytes:
    """The key of the buckets: derived from the subject secret under its own label, so a
    bucket reveals nothing about a subject hash or a CDN object key."""
    return hmac.new(settings.subject_secret_value().encode(), _LABEL, hashlib.sha256).digest()


def bucket(key: bytes, user_id: str) -> float:
    """The user's place in [0, 1): uniform over users, fixed for a given key."""
    digest = hmac.new(key, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return (int.from_bytes(digest[:8], "big") >> (64 - _BUCKET_BITS)) / 2**_BUCKET_BITS


def in_control_with_key(key: bytes, share: float, user_id: str) -> bool:
    """True when the user is in the control group for this key and share."""
    return share > 0 and bucket(key, user_id) < share


def in_control(user_id: str, settings: Settings) -> bool:
    """True when ``user_id`` is served popularity (see the module docstring)."""
    if settings.control_share <= 0:
        return False
    return in_control_with_key(control_key(settings), settings.control_share, user_id)


def group_of(user_id: str, settings: Settings) -> Group:
    """``control`` or ``treatment``, the value answers and published objects carry."""
    return CONTROL if in_control(user_id, settings) else TREATMENT


def control_mask(user_ids: Iterable[str], settings: Settings) -> np.ndarray:
    """One boolean per user id (True: control), with the key derived once (publishing)."""
    ids = list(user_ids)
    if settings.control_share <= 0:
        return np.zeros(len(ids), dtype=bool)
    key, share = control_key(settings), settings.control_share
    return np.fromiter(
        (in_control_with_key(key, share, str(u)) for u in ids), dtype=bool, count=len(ids)
    )
