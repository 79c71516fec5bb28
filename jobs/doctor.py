"""`recflow doctor`: is this machine ready to run recflow?

Reads and writes only a scratch Delta table under ``<data_root>/doctor``. Each check
reports plainly what it found, so a newcomer can tell a missing Java from a blocked jar
download from an unwritable data root. A ``RECFLOW_*`` name in the environment or
``.env`` that is no setting (a removed one such as the gate's absolute tolerance) is a
warning: the settings ignore it silently.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from jobs.config import DEV_PUBLISH_SECRET, Settings

# Settings that are gone: a value left in an old .env or environment is otherwise ignored
# without a word (the settings ignore unknown names), and the behaviour it set changed.
REPLACED = {
    "RECFLOW_GATE_TOLERANCE": "RECFLOW_GATE_MAX_RELATIVE_DROP (a relative margin, e.g. 0.05,"
    " below the best accepted version; the absolute tolerance is gone)",
}
# RECFLOW_* names that are read, but not as settings.
NOT_SETTINGS = frozenset({"RECFLOW_TEST_ML100K"})  # the tests' MovieLens folder


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float
    warning: bool = False  # passed, but something deserves a look


class DoctorWarning(Exception):
    """Raised by a check that passes with a warning (its message is the detail)."""


def unknown_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = None
) -> list[str]:
    """One line per ``RECFLOW_*`` name in the environment or ``.env`` that is no setting.

    Names compare case-insensitively, as the settings read them; ``env_file`` defaults
    to the settings' own (``.env`` in the working directory).
    """
    from dotenv import dotenv_values

    environ = os.environ if environ is None else environ
    if env_file is None:
        env_file = Path(str(Settings.model_config.get("env_file") or ".env"))
    found: dict[str, list[str]] = {}
    for key in environ:
        if key.upper().startswith("RECFLOW_"):
            found.setdefault(key.upper(), []).append("the environment")
    if env_file.is_file():
        for key in dotenv_values(env_file):
            if key.upper().startswith("RECFLOW_"):
                found.setdefault(key.upper(), []).append(str(env_file))
    known = {f"RECFLOW_{name.upper()}" for name in Settings.model_fields} | NOT_SETTINGS
    lines = []
    for name in sorted(set(found) - known):
        line = f"{name} (in {' and '.join(found[name])}) is not a setting: ignored"
        if name in REPLACED:
            line += f"; use {REPLACED[name]}"
        lines.append(line)
    return lines


def _settings_names() -> str:
    unknown = unknown_settings()
    if unknown:
        raise DoctorWarning("; ".join(unknown))
    return "every RECFLOW_* name in the environment and .env is a setting"


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError(
            "java not found on PATH; install a JDK 17 (apt-get install openjdk-17-jre)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=True).stderr
    match = re.search(r'version "([0-9]+)', out)
    major = int(match.group(1)) if match else 0
    if major < 17:
        raise RuntimeError(f"Spark 4 needs Java 17 or newer, found {out.splitlines()[0]}")
    return out.splitlines()[0]


def _secrets(settings: Settings) -> str:
    """The publish secret is one this target and RECFLOW_ENV accept (names the setting)."""
    problem = settings.publish_secret_problem()
    if problem is not None:
        raise RuntimeError(problem)
    if settings.publish_secret.get_secret_value() == DEV_PUBLISH_SECRET:
        return (
            "development RECFLOW_PUBLISH_SECRET: accepted for the local bucket only; set a"
            " real one before publishing to S3 or with RECFLOW_ENV=prod"
        )
    return f"RECFLOW_PUBLISH_SECRET set (env {settings.env}, target {settings.publish_target})"


def _data_root(settings: Settings) -> str:
    settings.data_root.mkdir(parents=True, exist_ok=True)
    probe = settings.data_root / ".doctor-probe"
    probe.write_text("ok")
    probe.unlink()
    return f"{settings.data_root} is writable"


def _spark(settings: Settings) -> str:
    from jobs.spark import get_spark

    spark = get_spark(settings)
    return f"Spark {spark.version} ({spark.sparkContext.master}) with Delta"


def _delta_round_trip(settings: Settings) -> str:
    from delta.tables import DeltaTable

    from jobs.spark import get_spark

    spark = get_spark(settings)
    path = f"{settings.data_root}/doctor/delta_check"
    spark.range(3).write.format("delta").mode("overwrite").save(path)
    spark.range(3, 10).write.format("delta").mode("append").save(path)
    now = spark.read.format("delta").load(path).count()
    v0 = spark.read.format("delta").option("versionAsOf", 0).load(path).count()
    version = DeltaTable.forPath(spark, path).history(1).select("version").first()[0]
    if (now, v0) != (10, 3):
        raise RuntimeError(f"expected 10 rows now and 3 at version 0, read {now} and {v0}")
    return f"wrote {path} (version {version}), read 10 rows now and 3 at version 0"


CHECKS = (
    "settings",
    "secrets",
    "java",
    "data root",
    "spark + delta jars",
    "delta write/read/time travel",
)


def run_checks(
    settings: Settings,
    on_result: Callable[[Check], None] | None = None,
    only: Collection[str] | None = None,
) -> list[Check]:
    """Run every check (or those named in ``only``) in order, stopping Spark checks once
    Spark cannot start."""
    unknown = set(only or ()) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; known: {', '.join(CHECKS)}")
    checks: list[tuple[str, Callable[[], str]]] = [
        ("settings", _settings_names),
        ("secrets", lambda: _secrets(settings)),
        ("java", _java),
        ("data root", lambda: _data_root(settings)),
        ("spark + delta jars", lambda: _spark(settings)),
        ("delta write/read/time travel", lambda: _delta_round_trip(settings)),
    ]
    results: list[Check] = []
    for name, fn in checks:
        if only is not None and name not in only:
            continue
        if results and not results[-1].ok and name.startswith("delta"):
            results.append(Check(name, False, "skipped: Spark did not start", 0.0))
            continue
        t0 = time.perf_counter()
        try:
            result = Check(name, True, fn(), time.perf_counter() - t0)
        except DoctorWarning as exc:
            result = Check(name, True, str(exc), time.perf_counter() - t0, warning=True)
        except Exception as exc:  # noqa: BLE001 - the doctor reports every failure plainly
            result = Check(
                name,
                False,
                f"{type(exc).__name__}: {exc}".splitlines()[0],
                time.perf_counter() - t0,
            )
        results.append(result)
        if on_result:
            on_result(result)
    return results
