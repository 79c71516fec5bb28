"""Secrets: credential-bearing settings are redacted wherever they are shown, the real
value still reaches the clients, and the public development HMAC secret is refused where
lists must not be enumerable (S3, RECFLOW_ENV=prod)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.config import DEV_PUBLISH_SECRET, ConfigError, load_settings, redact

REPO = Path(__file__).resolve().parents[2]

# Distinctive markers: none may appear in anything recflow prints.
MARKED = {
    "RECFLOW_PUBLISH_SECRET": "mk-publish-secret-7f3a9c",
    "RECFLOW_AWS_ACCESS_KEY_ID": "MKAKIDQX7F3A9C",
    "RECFLOW_AWS_SECRET_ACCESS_KEY": "mk-aws-secret-7f3a9c",
    "RECFLOW_MLFLOW_TRACKING_URI": "https://mk-ml-user:mk-ml-pass-7f3a9c@mlflow.example:5000",
    "RECFLOW_FEAST_REDIS_CONNECTION": "redis.example:6379,password=mk-redis-pass-7f3a9c",
    "RECFLOW_S3_ENDPOINT_URL": "https://mk-s3-user:mk-s3-pass-7f3a9c@minio.example:9000",
    "RECFLOW_CLOUDFRONT_ENDPOINT_URL": "https://mk-cf-user:mk-cf-pass-7f3a9c@cf.example",
    "RECFLOW_SPARK_MAVEN_REPOSITORY": "https://mk-mvn-user:mk-mvn-pass-7f3a9c@nexus.example/m2/",
}
MARKERS = [
    "mk-publish-secret",
    "MKAKIDQX",
    "mk-aws-secret",
    "mk-ml-user",
    "mk-ml-pass",
    "mk-redis-pass",
    "mk-s3-user",
    "mk-s3-pass",
    "mk-cf-pass",
    "mk-mvn-pass",
]


def _recflow(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI in a fresh interpreter (what an operator or a CI log would see)."""
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_recflow_config_shows_no_credential(tmp_path: Path) -> None:
    env = {**MARKED, "RECFLOW_DATA_ROOT": str(tmp_path / "var")}
    shown = _recflow("config", env=env, cwd=tmp_path)
    table = _recflow("config", "--table", env=env, cwd=tmp_path)
    assert shown.returncode == 0 and table.returncode == 0, shown.stderr + table.stderr
    for output in (shown.stdout + shown.stderr, table.stdout + table.stderr):
        assert [m for m in MARKERS if m in output] == []
    # Where each URI points is still shown: only who is hidden.
    for host in ("mlflow.example:5000", "minio.example:9000", "nexus.example/m2/", "redis.example"):
        assert host in shown.stdout
    assert "RECFLOW_PUBLISH_SECRET" in table.stdout


def test_a_bad_value_is_reported_without_its_credentials(tmp_path: Path) -> None:
    """Validation errors quote the bad value: its userinfo must not come with it."""
    env = {
        "RECFLOW_DATA_ROOT": str(tmp_path / "var"),
        "RECFLOW_SPARK_MASTER": "bogus://mk-ml-user:mk-ml-pass-7f3a9c@master.example",
        "RECFLOW_LAKE_DIR": "s3a://MKAKIDQX7F3A9C:mk-aws-secret-7f3a9c@bucket/lake",
    }
    done = _recflow("config", env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert "RECFLOW_SPARK_MASTER" in done.stderr and "master.example" in done.stderr
    assert "RECFLOW_LAKE_DIR" in done.stderr  # credentials in s3a:// URIs are refused
    assert [m for m in MARKERS if m in done.stdout + done.stderr] == []


def test_clients_still_get_the_real_values() -> None:
    s = load_settings(**{k.removeprefix("RECFLOW_").lower(): v for k, v in MARKED.items()})
    assert s.tracking_uri == MARKED["RECFLOW_MLFLOW_TRACKING_URI"]
    assert s.aws_access_key_id is not None
    assert s.aws_access_key_id.get_secret_value() == MARKED["RECFLOW_AWS_ACCESS_KEY_ID"]
    assert s.feast_redis_connection.get_secret_value().endswith("password=mk-redis-pass-7f3a9c")
    assert "mk-ml-pass" not in s.tracking_uri_shown and "mlflow.example" in s.tracking_uri_shown
    assert [m for m in MARKERS if m in repr(s) + str(s)] == []


_USERINFO = st.text(alphabet="abcXYZ019-._~!$&'()*+,;=:%@/", min_size=1, max_size=30).filter(
    lambda p: len(p) >= 6
)


@given(
    scheme=st.sampled_from(["http", "https", "redis", "rediss", "postgresql+psycopg", "s3"]),
    user=st.text(alphabet="abcXYZ019-._~", min_size=0, max_size=10),
    password=_USERINFO,
    host=st.sampled_from(["h.example", "127.0.0.1:6379", "[::1]:9000"]),
    path=st.sampled_from(["", "/", "/db/0", "/m2/?a=1"]),
)
def test_redact_never_shows_a_password(
    scheme: str, user: str, password: str, host: str, path: str
) -> None:
    uri = f"{scheme}://{user}:{password}@{host}{path}"
    shown = redact(uri)
    assert password not in shown
    assert shown.startswith(f"{scheme}://") and host in shown


# Any printable character (a space, "#", "?", "@", "/" included) but control characters.
_ANY_PASSWORD = st.text(
    alphabet=st.characters(min_codepoint=0x20, blacklist_categories=("Cc", "Cs")),
    min_size=6,
    max_size=30,
).map(lambda p: p + "#?@/ x")


@given(
    scheme=st.sampled_from(["https", "postgresql", "postgresql+psycopg", "redis", "s3"]),
    user=st.text(alphabet="abcXYZ019-._~", min_size=0, max_size=10),
    password=_ANY_PASSWORD,
    host=st.sampled_from(["db.example", "127.0.0.1:6379", "[::1]:9000"]),
    path=st.sampled_from(["", "/mlflow", "/db/0?sslmode=require"]),
)
def test_redact_hides_passwords_with_any_character(
    scheme: str, user: str, password: str, host: str, path: str
) -> None:
    """SQLAlchemy accepts postgresql://mlflow:pa#ss@db/mlflow: the old pattern stopped at
    "#", "?" or a space and showed the rest of the password."""
    from jobs.config import SecretUri

    uri = f"{scheme}://{user}:{password}@{host}{path}"
    secret = SecretUri(uri)
    settings = load_settings(mlflow_tracking_uri=uri)
    for shown in (
        redact(uri),
        str(secret),
        repr(secret),
        settings.model_dump_json(),
        settings.tracking_uri_shown,
    ):
        assert password not in shown and "#?@/ x" not in shown
    assert redact(uri) == f"{scheme}://***@{host}{path}"
    bare = SecretUri(f"{user}:{password}@{host}")  # a Redis address without a scheme
    assert password not in str(bare) and str(bare) == f"***@{host}"
    assert settings.tracking_uri == uri  # the client still gets the real one


def test_redact_hides_password_parameters_and_keeps_plain_values() -> None:
    for param in ("sig", "auth", "sas", "SAS", "x-auth"):
        assert "pw-123456" not in redact(f"https://acct.blob.example/c/b?sv=1&{param}=pw-123456")
    assert "ss" not in redact("r.example:6379,password=pa#ss").split("=")[1]
    assert redact("r.example:6379,password=pw-123456,ssl=true") == (
        "r.example:6379,password=***,ssl=true"
    )
    assert "sig-123456" not in redact("https://b.example/k?X-Amz-Signature=sig-123456&a=1")
    for plain in ("sqlite:////tmp/var/mlflow/mlflow.db", "127.0.0.1:6379", "local[*]"):
        assert redact(plain) == plain


# -- the development HMAC secret ------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        ({}, False),  # a checkout, the demo, tests: the local bucket in dev
        ({"publish_target": "s3"}, True),
        ({"env": "prod"}, True),
        ({"env": "prod", "publish_secret": "short"}, True),
        ({"publish_target": "s3", "publish_secret": "a-real-secret-of-some-length"}, False),
        ({"env": "prod", "publish_secret": "a-real-secret-of-some-length"}, False),
    ],
)
def test_the_development_secret_is_refused_for_s3_and_prod(
    overrides: dict[str, str], refused: bool
) -> None:
    s = load_settings(**overrides)
    if refused:
        with pytest.raises(ConfigError, match="RECFLOW_PUBLISH_SECRET"):
            s.hmac_secret()
    else:
        assert s.hmac_secret() == s.publish_secret.get_secret_value()


def test_doctor_reports_the_refused_secret(tmp_path: Path) -> None:
    env = {"RECFLOW_DATA_ROOT": str(tmp_path / "var"), "RECFLOW_PUBLISH_TARGET": "s3"}
    refused = _recflow("doctor", "--only", "secrets", env=env, cwd=tmp_path)
    assert refused.returncode == 1
    assert "FAIL" in refused.stdout and "RECFLOW_PUBLISH_SECRET" in refused.stdout
    fixed = _recflow(
        "doctor",
        "--only",
        "secrets",
        env={**env, "RECFLOW_PUBLISH_SECRET": MARKED["RECFLOW_PUBLISH_SECRET"]},
        cwd=tmp_path,
    )
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "mk-publish-secret" not in fixed.stdout + fixed.stderr
    assert DEV_PUBLISH_SECRET not in refused.stdout  # naming the setting, not the value
