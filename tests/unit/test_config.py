from pathlib import Path

import pytest

from jobs.config import ConfigError, get_settings, load_settings


def test_defaults_live_under_one_data_root() -> None:
    s = load_settings()
    assert s.data_root == Path("var").absolute()
    assert s.landing_dir == s.data_root / "landing"
    assert s.lake_dir == str(s.data_root / "lake")
    assert s.table_path("silver", "events") == f"{s.data_root}/lake/silver/events"
    assert s.spark_master == "local[*]"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RECFLOW_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("RECFLOW_SPARK_MASTER", "spark://10.0.0.5:7077")
    monkeypatch.setenv("RECFLOW_LAKE_DIR", "s3a://bucket/lake")
    monkeypatch.setenv("RECFLOW_GEN_USERS", "77")
    s = get_settings()
    assert s.data_root == tmp_path
    assert s.spark_master == "spark://10.0.0.5:7077"
    assert s.table_path("gold", "interactions") == "s3a://bucket/lake/gold/interactions"
    assert s.gen_users == 77


@pytest.mark.parametrize(
    ("env", "value", "needle"),
    [
        ("RECFLOW_SPARK_MASTER", "localhost", "RECFLOW_SPARK_MASTER"),
        ("RECFLOW_SPARK_DRIVER_MEMORY", "lots", "RECFLOW_SPARK_DRIVER_MEMORY"),
        ("RECFLOW_GEN_USERS", "-3", "RECFLOW_GEN_USERS"),
        ("RECFLOW_GEN_USERS", "many", "RECFLOW_GEN_USERS"),
        ("RECFLOW_GEN_MALFORMED_FRACTION", "1.5", "RECFLOW_GEN_MALFORMED_FRACTION"),
        ("RECFLOW_SPARK_SHUFFLE_PARTITIONS", "0", "RECFLOW_SPARK_SHUFFLE_PARTITIONS"),
    ],
)
def test_bad_values_are_rejected_clearly(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        get_settings()
    assert needle in str(err.value)
    assert "invalid recflow configuration" in str(err.value)


def test_settings_are_read_at_first_use_not_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECFLOW_SEED", "7")
    assert get_settings().seed == 7


def test_every_setting_is_described_and_the_readme_names_only_real_ones() -> None:
    """One source for each fact: the settings' descriptions feed `recflow config --table`,
    and every `RECFLOW_*` name the docs mention is a setting that exists."""
    import re
    from pathlib import Path

    from jobs.config import Settings, settings_table

    undescribed = [n for n, f in Settings.model_fields.items() if not f.description]
    assert undescribed == []
    table = settings_table()
    assert all(f"`RECFLOW_{n.upper()}`" in table for n in Settings.model_fields)
    root = Path(__file__).resolve().parents[2]
    docs = [root / "README.md", *root.glob("*/README.md")]
    named = {
        m for doc in docs for m in re.findall(r"RECFLOW_([A-Z0-9_]+[A-Z0-9])", doc.read_text())
    }
    from jobs.doctor import REPLACED

    known = {n.upper() for n in Settings.model_fields} | {"TEST_ML100K"}
    known |= {name.removeprefix("RECFLOW_") for name in REPLACED}  # named as removed
    assert sorted(named - known) == []


def test_doctor_warns_about_names_that_are_not_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A removed setting left in an old .env or environment loaded silently."""
    from typer.testing import CliRunner

    from jobs.cli import app
    from jobs.doctor import run_checks, unknown_settings

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("RECFLOW_GATE_TOLERANCE=0.02\nrecflow_data_root=var\n")
    monkeypatch.setenv("RECFLOW_REVEIW_MODE", "true")  # a typo
    monkeypatch.setenv("RECFLOW_TEST_ML100K", "/data/ml-100k")  # read by the tests
    found = unknown_settings()
    assert len(found) == 2
    assert found[0].startswith("RECFLOW_GATE_TOLERANCE (in .env)")
    assert "use RECFLOW_GATE_MAX_RELATIVE_DROP" in found[0]
    assert found[1].startswith("RECFLOW_REVEIW_MODE (in the environment)")
    [check] = run_checks(load_settings(), only=["settings"])
    assert check.ok and check.warning and "RECFLOW_GATE_TOLERANCE" in check.detail
    done = CliRunner().invoke(app, ["doctor", "--only", "settings"])
    assert done.exit_code == 0, done.output
    assert "warn" in done.output and "RECFLOW_GATE_MAX_RELATIVE_DROP" in done.output
    (tmp_path / ".env").unlink()
    monkeypatch.delenv("RECFLOW_REVEIW_MODE")
    [clean] = run_checks(load_settings(), only=["settings"])
    assert clean.ok and not clean.warning


def test_feature_store_yaml_matches_the_settings(tmp_path) -> None:
    """feature_repo/feature_store.yaml (for the Feast CLI) says what repo_config builds."""
    from pathlib import Path

    import yaml

    from jobs.config import load_settings
    from jobs.features.definitions import repo_config

    root = Path(__file__).resolve().parents[2]
    text = (root / "feature_repo" / "feature_store.yaml").read_text()
    data_root = tmp_path / "var"
    cli = yaml.safe_load(text.replace("${RECFLOW_DATA_ROOT}", str(data_root)))
    built = repo_config(load_settings(data_root=data_root))
    assert cli["project"] == built.project
    assert cli["provider"] == built.provider
    assert cli["registry"]["path"] == built.registry.path
    assert cli["online_store"]["type"] == built.online_store.type
    assert cli["online_store"]["path"] == built.online_store.path
    assert cli["offline_store"]["type"] == built.offline_store.type
    assert cli["entity_key_serialization_version"] == built.entity_key_serialization_version


@pytest.mark.parametrize("schedule", ["*/30 * * * *", "30 0 * * *", "@continuous", "15 */2 * * *"])
def test_an_ingest_schedule_off_whole_hours_is_refused(schedule: str) -> None:
    from jobs.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="whole hours"):
        load_settings(ingest_schedule=schedule)


@pytest.mark.parametrize("schedule", ["@hourly", "@daily", "0 * * * *", "0 */3 * * 1-5"])
def test_hourly_aligned_ingest_schedules_are_accepted(schedule: str) -> None:
    from jobs.config import load_settings

    assert load_settings(ingest_schedule=schedule).ingest_schedule == schedule


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        # Late reloads re-scan landing and re-read bronze over RECFLOW_LATE_DATA_HOURS.
        ({"retention_bronze_days": 2}, "RECFLOW_RETENTION_BRONZE_DAYS=2 must exceed"),
        (
            {"retention_landing_days": 3, "late_data_hours": 72},
            "RECFLOW_RETENTION_LANDING_DAYS=3 must exceed RECFLOW_LATE_DATA_HOURS (72 h)",
        ),
        # Landing is deleted only once bronze holds it: it may not outlive bronze.
        (
            {"retention_landing_days": 40, "retention_bronze_days": 30},
            "RECFLOW_RETENTION_LANDING_DAYS=40 must be at most RECFLOW_RETENTION_BRONZE_DAYS=30",
        ),
        (
            {"retention_feast_snapshot_days": 30},
            "RECFLOW_RETENTION_FEAST_SNAPSHOT_DAYS=30 must exceed RECFLOW_FEAST_TTL_DAYS (30)",
        ),
        ({"retention_staging_hours": 23}, "RECFLOW_RETENTION_STAGING_HOURS=23 must be at least"),
        ({"retention_model_versions": -1}, "RECFLOW_RETENTION_MODEL_VERSIONS"),
        ({"retention_quality_days": -1}, "RECFLOW_RETENTION_QUALITY_DAYS"),
    ],
)
def test_retention_limits_below_what_the_pipeline_reads_back_are_refused(
    overrides: dict, needle: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(**overrides)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        # 0 keeps a store for ever, whatever the other limits.
        {
            "retention_landing_days": 0,
            "retention_bronze_days": 0,
            "retention_quarantine_days": 0,
            "retention_quality_days": 0,
            "retention_feast_snapshot_days": 0,
            "retention_staging_hours": 0,
            "retention_model_versions": 0,
        },
        {"retention_landing_days": 0, "retention_bronze_days": 3},
        {"retention_landing_days": 3, "retention_bronze_days": 0},
        {"retention_landing_days": 3, "retention_bronze_days": 3, "late_data_hours": 71},
        {"retention_feast_snapshot_days": 8, "feast_ttl_days": 7},
        {"retention_staging_hours": 24},
    ],
)
def test_sane_retention_limits_are_accepted(overrides: dict) -> None:
    load_settings(**overrides)


def test_the_readme_retention_table_matches_the_settings() -> None:
    """Each store's row names a real setting with its real default (one fact, one place)."""
    import re

    from jobs.config import Settings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Retention\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`RECFLOW_" in line]
    retention = {n for n in Settings.model_fields if n.startswith("retention_")}
    seen = set()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 6, row
        (name,) = re.findall(r"`RECFLOW_([A-Z0-9_]+)`", cells[2])
        field = Settings.model_fields[name.lower()]
        assert cells[3] == str(field.default), (name, cells[3], field.default)
        seen.add(name.lower())
    assert retention <= seen, retention - seen
