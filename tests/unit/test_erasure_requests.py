"""Erasure requests and raw-line matching, without Spark: what ids are accepted, and what
lines a person's id matches (adversarial ids included)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.privacy.erasure import _line_is_theirs, _py_pattern, _split_lines
from jobs.privacy.requests import RequestError, clean_ids, read_id_file


def test_an_id_file_with_a_byte_order_mark_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes("\ufeffalice\n# a comment\n\nbob\r\nalice\n".encode())
    assert clean_ids(read_id_file(path)) == ["alice", "bob"]


@pytest.mark.parametrize("bad", ["a\x00b", "tab\tinside", "\udcff", "x" * 513, "mid\ufeffdle"])
def test_implausible_ids_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(RequestError) as err:
        clean_ids([bad])
    assert bad not in str(err.value)


@given(st.lists(st.text(max_size=40), max_size=20))
def test_clean_ids_returns_ids_or_refuses_clearly(raw: list[str]) -> None:
    try:
        ids = clean_ids(raw)
    except RequestError:
        return
    assert len(ids) == len(set(ids)) and all(i and i == i.strip() for i in ids)


@pytest.mark.parametrize(
    ("line", "theirs"),
    [
        (b'{"user_id": "1", "item_id": "2"}', True),
        (b'{"user_id": 1, "item_id": "2"}', True),
        (b'{"user_id": "10", "item_id": "1"}', False),
        (b'{"user_id": "1', True),  # truncated after the id
        (b'{"user_id":"1,2", "item_id": ', False),  # someone else's broken line
        (b'{"user_id":"1}", "item_id": ', False),
        (b'{"item_id": "1", "user_id": "7"', False),
        (b"not json at all 1", False),
    ],
)
def test_raw_lines_match_the_person_and_nobody_else(line: bytes, theirs: bool) -> None:
    assert _line_is_theirs(line, {"1"}, _py_pattern(["1"])) is theirs


@given(st.text(min_size=1, max_size=30).filter(lambda s: "\x00" not in s), st.text(max_size=30))
def test_an_id_matches_its_own_lines_only(user_id: str, other: str) -> None:
    import json

    pattern = _py_pattern([user_id])
    line = json.dumps({"user_id": user_id, "item_id": "i"}).encode("utf-8", "surrogatepass")
    assert _line_is_theirs(line, {user_id}, pattern)
    if other != user_id:
        theirs = json.dumps({"user_id": other, "item_id": "i"}).encode("utf-8", "surrogatepass")
        assert not _line_is_theirs(theirs, {user_id}, pattern)


def test_lines_keep_their_endings() -> None:
    data = b"a\r\nb\rc\nd"
    assert _split_lines(data) == [b"a\r\n", b"b\r", b"c\n", b"d"]
    assert b"".join(_split_lines(data)) == data


def test_the_deny_list_fails_closed_when_missing_in_prod_or_written_with_another_key(
    tmp_path: Path,
) -> None:
    from jobs.subjects import DenyList, add_to_deny_list

    path = tmp_path / "privacy" / "deny.json"
    assert DenyList(path).denies("a" * 32) is False  # dev: no list yet is an empty list
    with pytest.raises(FileNotFoundError):
        DenyList(path, required=True).denies("a" * 32)
    add_to_deny_list(path, ["a" * 32], "key-one")
    assert DenyList(path, expected_key_id="key-one", required=True).denies("a" * 32)
    with pytest.raises(ValueError, match="subject key"):
        DenyList(path, expected_key_id="key-two").denies("a" * 32)
    with pytest.raises(ValueError, match="subject key"):
        add_to_deny_list(path, ["b" * 32], "key-two")


def test_a_separate_subject_secret_survives_a_publish_secret_rotation(tmp_path: Path) -> None:
    from jobs.config import load_settings
    from jobs.subjects import subject_hasher

    def hasher(publish: str, subject: str | None):
        kw = {"subject_secret": subject} if subject else {}
        return subject_hasher(load_settings(data_root=tmp_path, publish_secret=publish, **kw))

    assert hasher("p" * 20, None)("u1") != hasher("q" * 20, None)("u1")
    assert hasher("p" * 20, "s" * 20)("u1") == hasher("q" * 20, "s" * 20)("u1")
