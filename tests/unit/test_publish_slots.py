"""Erasure finds a person's list in every slot that may be served, configured or not."""

from __future__ import annotations

from pathlib import Path

from jobs.config import load_settings
from jobs.publish import layout
from jobs.publish.erasure import erase_from_publishes, slots_in_use, still_published
from jobs.publish.storage import LocalStore


def test_a_slot_beyond_the_configured_ones_is_still_searched_and_erased(tmp_path: Path) -> None:
    """Lowering RECFLOW_PUBLISH_KEEP (the slots follow it) after slot 5 was written, and
    pruning the publish that owned it, leaves its objects served: erasure must find them."""
    settings = load_settings(data_root=tmp_path / "var", publish_keep=2)
    assert settings.publish_slots == 2
    store = LocalStore(settings.publish_dir)
    prefix = settings.publish_prefix
    key = "ab" + "0" * 30
    user = layout.slot_user_key(prefix, 5, key)
    store.put(user, layout.encode({"items": []}), {})
    # The owner marker of a pruned publish, even unreadable, marks the slot as possibly used.
    store.put(layout.slot_owner_key(prefix, 5), b"not gzip json", {})

    assert slots_in_use(settings, [], store) == [0, 1, 5]
    assert slots_in_use(settings, []) == [0, 1]  # without the store: only what is known
    assert still_published(settings, store, [key]) == ["slot 5: 1 objects"]
    erased = erase_from_publishes(settings, store, [key])
    assert erased.objects_deleted == 1 and store.get(user) is None
    assert still_published(settings, store, [key]) == []
