"""Personal data access without BentoML: the user key, the deny list, the access log writer."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st
from pydantic import ValidationError
from support import clustered_model

from jobs import subjects
from jobs.access_log import AccessLog, access_log_dir
from jobs.config import load_settings
from jobs.model.artifact import RecModel
from jobs.publish import layout
from jobs.serve import answers, schemas
from jobs.serve.access import Access, PersonalAccess, reads_to_log

SECRET = "test-secret-of-sufficient-length-0123456789"
Recommend, _ = schemas.request_types(schemas.Limits(max_k=100, max_recent_items=200))


@pytest.fixture(scope="module")
def model() -> RecModel:
    return clustered_model()


@pytest.fixture(scope="module")
def online(model: RecModel) -> answers.OnlineModel:
    return answers.OnlineModel.of(model, name="recflow-als", version="7", run_id="abc")


@pytest.fixture
def gate(tmp_path: Path) -> PersonalAccess:
    return PersonalAccess(SECRET, subjects.DenyList(tmp_path / "privacy" / "deny.json"))


def ids(response: schemas.RecommendResponse) -> list[str]:
    return [item.item_id for item in response.items]


# -- one key for the CDN and the service -------------------------------------------------------


def test_the_cdn_and_the_service_share_one_user_key() -> None:
    assert layout.user_key is subjects.user_key
    assert layout.KEY_HEX == subjects.USER_KEY_HEX == 32
    gate = PersonalAccess(SECRET, subjects.DenyList(Path("/nonexistent/deny.json")))
    for user in ("user-1", "ü-ñ-😀", "x" * 128):
        assert gate.expected_key(user) == layout.user_key(SECRET, user)


def test_the_subject_hash_is_not_the_user_key() -> None:
    """Knowing a user's CDN key (which browsers see) does not give their subject hash."""
    gate = PersonalAccess(SECRET, subjects.DenyList(Path("/nonexistent/deny.json")))
    assert gate.subject("user-1") == subjects.subject_hash(SECRET, "user-1")
    assert gate.subject("user-1") != subjects.user_key(SECRET, "user-1")


# -- the key check -------------------------------------------------------------------------------


def test_only_the_right_key_for_the_id_is_personal(gate: PersonalAccess) -> None:
    key = subjects.user_key(SECRET, "user-1")
    assert gate.check("user-1", key) == Access(True, "verified", gate.subject("user-1"))
    assert gate.check("user-1", None) == Access(False, "no_key")
    assert gate.check("user-1", "") == Access(False, "no_key")
    assert gate.check("user-2", key) == Access(False, "bad_key")  # someone else's key
    assert gate.check("user-1", subjects.user_key("another-secret", "user-1")).outcome == (
        "bad_key"
    )
    assert gate.check("user-1", key.upper()).outcome == "bad_key"
    assert gate.check("user-1", key[:-1]).outcome == "bad_key"


@pytest.mark.parametrize("user_id", ["\ud800", "a\udfffb"])
def test_an_unencodable_id_is_not_verified_and_raises_nothing(
    gate: PersonalAccess, user_id: str
) -> None:
    assert gate.check(user_id, "0" * 32) == Access(False, "bad_key")
    assert gate.check("user-1", "é" * 32) == Access(False, "bad_key")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "0" * 31,
        "0" * 33,
        "A" * 32,
        "g" * 32,
        "٠" * 32,  # Arabic-Indic digit zero: not [0-9]
        "0" * 32 + "\n",
        " " + "0" * 31,
        "0" * 16 + "\u00e9" * 16,
    ],
)
def test_a_malformed_key_is_a_422_naming_the_field(key: str) -> None:
    with pytest.raises(ValidationError) as info:
        Recommend.model_validate_json(json.dumps({"user_id": "u", "user_key": key}))
    assert schemas.validation_error_body(info.value.errors())["detail"][0]["field"] == "user_key"
    assert schemas.metric_field("recommend", "user_key") == "user_key"


def test_a_key_must_be_a_string() -> None:
    for key in (12345, ["0" * 32], {"k": 1}, True):
        with pytest.raises(ValidationError):
            Recommend.model_validate_json(json.dumps({"user_id": "u", "user_key": key}))
    assert Recommend.model_validate_json('{"user_id": "u", "user_key": null}').user_key is None


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    user_id=st.text(min_size=1, max_size=128),
    key=st.one_of(
        st.text(max_size=40),
        st.text(alphabet="0123456789abcdefABCDEF", min_size=30, max_size=34),
        st.none(),
    ),
)
def test_any_request_is_rejected_or_checked_never_an_error(user_id: str, key: str | None) -> None:
    """Whatever a client sends as user_key: a 422, or a verdict — never an exception."""
    gate = PersonalAccess(SECRET, subjects.DenyList(Path("/nonexistent/deny.json")))
    try:
        body = json.dumps({"user_id": user_id, "user_key": key})
    except UnicodeEncodeError:  # pragma: no cover - json.dumps escapes everything
        return
    try:
        request = Recommend.model_validate_json(body)
    except ValidationError as exc:
        assert schemas.validation_error_body(exc.errors())["detail"]
        return
    verdict = gate.check(request.user_id, request.user_key)
    # A key found by chance (2^-128) aside, nobody gets a personal answer by guessing.
    assert not verdict.personal
    assert verdict.outcome in ("no_key", "bad_key")


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(user_id=st.text(min_size=1, max_size=128).filter(lambda s: s.isprintable()))
def test_the_backends_key_always_validates_and_verifies(user_id: str) -> None:
    gate = PersonalAccess(SECRET, subjects.DenyList(Path("/nonexistent/deny.json")))
    try:
        key = subjects.user_key(SECRET, user_id)
    except UnicodeEncodeError:
        return  # a lone surrogate: no backend can name this user, and the service says bad_key
    request = Recommend.model_validate_json(json.dumps({"user_id": user_id, "user_key": key}))
    assert gate.check(request.user_id, request.user_key).personal


# -- the deny list -------------------------------------------------------------------------------


def test_a_denied_user_is_anonymous_even_with_a_valid_key(gate: PersonalAccess) -> None:
    key = subjects.user_key(SECRET, "user-1")
    assert gate.check("user-1", key).personal
    # Written by another process while this one runs: seen at the next request.
    subjects.add_to_deny_list(gate.deny_list.path, [gate.subject("user-1")])
    verdict = gate.check("user-1", key)
    assert verdict == Access(False, "denied", gate.subject("user-1"))
    assert gate.check("user-2", subjects.user_key(SECRET, "user-2")).personal


def test_an_unreadable_deny_list_fails_closed(gate: PersonalAccess) -> None:
    gate.deny_list.path.parent.mkdir(parents=True)
    gate.deny_list.path.write_text("{not json")
    key = subjects.user_key(SECRET, "user-1")
    assert gate.check("user-1", key) == Access(
        False, "deny_list_unreadable", gate.subject("user-1")
    )
    gate.deny_list.path.write_text(json.dumps({"subjects": []}))
    assert gate.check("user-1", key).personal  # fixed: answered again without a restart


def test_the_service_refuses_to_start_with_a_refused_secret(tmp_path: Path) -> None:
    from jobs.config import ConfigError

    with pytest.raises(ConfigError):
        PersonalAccess.from_settings(load_settings(data_root=tmp_path, env="prod"))
    ok = PersonalAccess.from_settings(load_settings(data_root=tmp_path))
    assert ok.deny_list.path == tmp_path / "privacy" / "deny.json"


# -- the answer without access ---------------------------------------------------------------------


def test_without_access_a_known_user_gets_what_a_stranger_gets(
    model: RecModel, online: answers.OnlineModel
) -> None:
    called: list[str] = []

    def lookup(user_id: str) -> list[str]:
        called.append(user_id)
        return ["item-3", "item-6"]

    for user in ("user-0", "user-17"):
        mine = answers.recommend(online, Recommend(user_id=user, k=10))
        assert mine.source == "als" and mine.personal
        anon = answers.recommend(online, Recommend(user_id=user, k=10), lookup, personal=False)
        stranger = answers.recommend(online, Recommend(user_id="nobody-at-all", k=10))
        assert anon.source == "popular" and not anon.personal
        assert ids(anon) == ids(stranger) and ids(anon) != ids(mine)
        # What the request itself carries is still used: a fold-in, not personal.
        carried = answers.recommend(
            online,
            Recommend(user_id=user, k=10, recent_item_ids=["item-1", "item-4"]),
            lookup,
            personal=False,
        )
        assert carried.source == "fold_in" and carried.recent_source == "request"
        assert not carried.personal
    # An unknown user without access: the feature store is never asked about them.
    unknown = answers.recommend(online, Recommend(user_id="new", k=5), lookup, personal=False)
    assert unknown.source == "popular" and called == []
    assert not answers.needs_recent_lookup(online, Recommend(user_id="new"), personal=False)
    with_access = answers.recommend(online, Recommend(user_id="new", k=5), lookup)
    assert with_access.source == "fold_in" and with_access.personal and called == ["new"]


def test_reads_to_log() -> None:
    proven = Access(True, "verified", "s" * 32)
    assert reads_to_log(proven, "als", []) == [("recommend_personal", "served")]
    assert reads_to_log(proven, "fold_in", [3]) == [("recent_items", "served")]
    assert reads_to_log(proven, "popular", [0]) == [("recent_items", "empty")]
    assert reads_to_log(proven, "fold_in", []) == []  # recent items came with the request
    assert reads_to_log(Access(False, "denied", "s" * 32), "popular", []) == [
        ("recommend_personal", "denied")
    ]
    assert reads_to_log(Access(False, "bad_key"), "popular", []) == []
    assert reads_to_log(Access(False, "no_key"), "als", []) == []


# -- the access log writer -----------------------------------------------------------------------


def _lines(directory: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for path in sorted(directory.glob("dt=*/*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_one_json_line_per_record_in_the_file_of_the_day(tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path)
    log = AccessLog.open(settings)
    ts = datetime(2026, 11, 29, 23, 59, 59, 123456, tzinfo=UTC)
    assert log.record("cli:ann", "cli_recs", "a" * 32, "served", ts=ts)
    assert log.record(
        "service:7", "recommend_personal", "b" * 32, "served", "r1", ts + timedelta(seconds=1)
    )
    log.close()
    files = sorted(access_log_dir(settings).glob("dt=*/*.jsonl"))
    assert [f.parent.name for f in files] == ["dt=2026-11-29", "dt=2026-11-30"]
    assert files[0].name == files[1].name and files[0].name.count("-") >= 2
    assert _lines(access_log_dir(settings)) == [
        {
            "ts": "2026-11-29T23:59:59.123456Z",
            "actor": "cli:ann",
            "action": "cli_recs",
            "subject": "a" * 32,
            "outcome": "served",
            "request_id": None,
        },
        {
            "ts": "2026-11-30T00:00:00.123456Z",
            "actor": "service:7",
            "action": "recommend_personal",
            "subject": "b" * 32,
            "outcome": "served",
            "request_id": "r1",
        },
    ]


def test_a_line_reaches_the_file_when_it_is_recorded(tmp_path: Path) -> None:
    """Unbuffered: a crash right after record() loses nothing (no flush needed)."""
    log = AccessLog(tmp_path)
    log.record("cli:ann", "cli_recs", "a" * 32, "served")
    assert len(_lines(tmp_path)) == 1
    log.close()


def test_background_writes_from_many_threads_are_whole_lines(tmp_path: Path) -> None:
    log = AccessLog(tmp_path, background=True)

    def burst(n: int) -> None:
        for i in range(200):
            log.record("service:7", "recommend_personal", f"{n:02d}{i:030d}", "served", f"r{n}-{i}")

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    lines = _lines(tmp_path)
    assert len(lines) == 1600 and log.written == 1600 and log.dropped == 0
    assert len({line["request_id"] for line in lines}) == 1600


def test_a_full_queue_drops_the_record_not_the_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dropped: list[int] = []
    log = AccessLog(tmp_path, background=True, on_drop=dropped.append, queue_size=2)
    gate = threading.Event()
    original = log._write

    def slow_disk(rec):  # type: ignore[no-untyped-def]
        gate.wait(10)
        return original(rec)

    log._write = slow_disk  # type: ignore[method-assign]
    results = [log.record("service:7", "recent_items", "c" * 32, "served") for _ in range(10)]
    # One record is being written (blocked), two wait in the queue, the rest are dropped.
    assert results.count(False) >= 7 and log.dropped == results.count(False) == len(dropped)
    assert "access log record dropped" in caplog.text
    assert caplog.text.count("access log record dropped") == 1  # one warning, not one per record
    gate.set()
    log.close()
    assert len(_lines(tmp_path)) == results.count(True)


def test_a_failing_disk_is_counted_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    dropped: list[int] = []
    log = AccessLog(blocker, on_drop=dropped.append)
    assert log.record("cli:ann", "cli_recs", "a" * 32, "served") is False
    assert log.dropped == 1 and dropped == [1]
    log.close()


def test_known_user_answers_are_unchanged_with_access(
    model: RecModel, online: answers.OnlineModel
) -> None:
    """personal=True (the default) is exactly the answer before the access model existed."""
    row = model.user_index["user-3"]
    idx, _ = model.recommend_rows(np.array([row]), 10)
    got = answers.recommend(online, Recommend(user_id="user-3", k=10), personal=True)
    assert ids(got) == model.ids(idx)[0]


def test_recflow_recs_logs_the_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's read of a user's published list leaves a line naming the hash, not the id."""
    from typer.testing import CliRunner

    from jobs import cli
    from jobs.publish import steps

    monkeypatch.setenv("RECFLOW_DATA_ROOT", str(tmp_path))
    monkeypatch.setattr(steps, "recs_for", lambda _s, u: (f"recs/v/x/u/ab/{u}.json", {"items": []}))
    done = CliRunner().invoke(cli.app, ["recs", "user-1"])
    assert done.exit_code == 0, done.output
    settings = load_settings(data_root=tmp_path)
    [line] = _lines(access_log_dir(settings))
    assert line["action"] == "cli_recs" and line["outcome"] == "served"
    assert line["subject"] == subjects.subject_hasher(settings)("user-1")
    assert str(line["actor"]).startswith("cli:")
    key = CliRunner().invoke(cli.app, ["user-key", "user-1"])
    assert key.stdout.strip() == subjects.user_key(settings.hmac_secret(), "user-1")
