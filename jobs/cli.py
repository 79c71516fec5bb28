"""The `recflow` command: every pipeline step runnable by hand, outside Airflow."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from jobs.config import ConfigError, Settings, get_settings

app = typer.Typer(
    help="recflow: batch + online personalization on Spark, Delta and MLflow.",
    no_args_is_help=True,
    add_completion=False,
)
import_app = typer.Typer(
    help="Import public data sets onto recflow's contracts.", no_args_is_help=True
)
app.add_typer(import_app, name="import")
stream_app = typer.Typer(
    help="Kafka: topics, the landing consumer, a local broker.", no_args_is_help=True
)
app.add_typer(stream_app, name="stream")


def _settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@app.command()
def config(
    table: Annotated[
        bool, typer.Option(help="Print every setting with its default and meaning instead.")
    ] = False,
) -> None:
    """Print the effective configuration (defaults plus RECFLOW_* overrides)."""
    if table:
        from jobs.config import settings_table

        typer.echo(settings_table())
        return
    typer.echo(_settings().model_dump_json(indent=2))


@app.command()
def generate(
    days: Annotated[
        int | None, typer.Option(help="Days to write (default RECFLOW_GEN_DAYS).")
    ] = None,
    append: Annotated[bool, typer.Option(help="Continue after the last day written.")] = False,
    users: Annotated[int | None, typer.Option(help="Number of users.")] = None,
    items: Annotated[int | None, typer.Option(help="Number of items.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    malformed: Annotated[float | None, typer.Option(help="Fraction of malformed lines.")] = None,
    duplicates: Annotated[
        float | None, typer.Option(help="Fraction of redelivered events.")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Replace a shop generated with another spec.")
    ] = False,
    react: Annotated[
        bool,
        typer.Option(
            "--react", help="Show the live recommendations in the first slots (RECFLOW_GEN_REACT)."
        ),
    ] = False,
    drift: Annotated[
        int | None,
        typer.Option(
            "--drift", metavar="DAY", help="From this day (0 = first) tastes and catalog mix shift."
        ),
    ] = None,
) -> None:
    """Write a synthetic shop (catalog + clickstream) into the landing folder."""
    from jobs.sources.shop import generate as run
    from jobs.sources.storefront import StorefrontError

    settings = _settings()
    try:
        report = run(
            settings,
            days=days,
            append=append,
            force=force,
            progress=True,
            seed=seed,
            n_users=users,
            n_items=items,
            malformed_fraction=malformed,
            duplicate_fraction=duplicates,
            react=react or None,
            drift_day=drift,
        )
    except (ValueError, StorefrontError) as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"landing: {settings.landing_dir}")
    typer.echo(f"days:    {', '.join(report.days)}")
    typer.echo(f"users {report.users:,}  items {report.items:,}  files {report.files:,}")
    typer.echo(
        "events:  " + "  ".join(f"{k} {v:,}" for k, v in sorted(report.events_by_type.items()))
    )
    imp = report.events_by_type.get("impression", 0)
    if imp:
        typer.echo(f"CTR:     {report.events_by_type.get('click', 0) / imp:.2%}")
    if report.rec_impressions:
        typer.echo(
            f"recommended slots: {report.rec_impressions:,} impressions, CTR "
            f"{report.rec_clicks / report.rec_impressions:.2%} (live: {report.shown})"
        )
    if report.drift:
        typer.echo(f"drift:   {report.drift}")
    typer.echo(
        f"lines {report.lines:,} (duplicates {report.duplicates:,}, "
        f"malformed {report.malformed:,}) in {report.seconds:.1f} s = "
        f"{report.events_per_second:,.0f} events/s"
    )


@import_app.command("movielens")
def import_movielens(
    path: Annotated[
        Path,
        typer.Argument(
            help="Folder of one release: u.data, ratings.dat or ratings.csv with films."
        ),
    ],
) -> None:
    """Map a MovieLens release (100K, 1M, the CSV ones) onto the contracts (ratings → events)."""
    from jobs.sources.movielens import import_movielens as run

    settings = _settings()
    try:
        report = run(path, settings)
    except (FileNotFoundError, ValueError) as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(report.__dict__, indent=2))
    if report.bad_rows:
        skipped = sum(report.bad_rows.values())
        typer.secho(f"skipped {skipped:,} unreadable rows (see bad_rows)", fg=typer.colors.YELLOW)
    typer.echo(f"landing: {settings.landing_dir}")


@app.command()
def doctor(
    only: Annotated[
        list[str] | None,
        typer.Option(help="Run only this check (repeatable): settings, secrets, java, …"),
    ] = None,
) -> None:
    """Check the settings' names, the secrets, Java, Spark with Delta, and Delta time travel."""
    from jobs.doctor import Check, run_checks

    def show(check: Check) -> None:
        if not check.ok:
            mark = typer.style("FAIL", fg=typer.colors.RED)
        elif check.warning:
            mark = typer.style("warn", fg=typer.colors.YELLOW)
        else:
            mark = typer.style("ok  ", fg=typer.colors.GREEN)
        typer.echo(f"[{mark}] {check.name:<30} {check.seconds:5.1f} s  {check.detail}")

    try:
        results = run_checks(_settings(), on_result=show, only=only)
    except ValueError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    failed = [c.name for c in results if not c.ok]
    if failed:
        typer.secho(f"{len(failed)} check(s) failed: {', '.join(failed)}", fg=typer.colors.RED)
        raise typer.Exit(1)
    warned = [c.name for c in results if c.warning]
    if warned:
        typer.secho(f"all checks passed, with warnings: {', '.join(warned)}", fg="yellow")
        return
    typer.secho("all checks passed", fg=typer.colors.GREEN)


@app.command()
def ingest(
    start: Annotated[str, typer.Argument(help="Interval start, ISO 8601 (UTC if no zone).")],
    end: Annotated[str, typer.Argument(help="Interval end (exclusive), ISO 8601.")],
    force: Annotated[
        bool,
        typer.Option(
            help="Reload even if the files are unchanged, or gone from landing (bronze then"
            " holds only what landing still has)."
        ),
    ] = False,
) -> None:
    """Run one data interval through bronze → silver → gold, as the `ingest` DAG does."""
    from jobs.ingest.gold import RebuildNeededError
    from jobs.ingest.quality import QualityGateError
    from jobs.ingest.steps import UnbalancedBatchError, run_interval
    from jobs.tables import MissingMarkError

    try:
        result = run_interval(start, end, force=force, settings=_settings())
    except (
        QualityGateError,
        UnbalancedBatchError,
        RebuildNeededError,
        MissingMarkError,
        ValueError,
    ) as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result["audit"], indent=2, default=str))


@app.command("rebuild-gold")
def rebuild_gold(
    version: Annotated[
        int | None, typer.Option(help="Silver events version to pin (default: the current one).")
    ] = None,
) -> None:
    """Recompute every gold table from silver at one version and swap each in atomically."""
    from jobs.ingest.quality import QualityGateError
    from jobs.ingest.steps import rebuild_gold_step

    try:
        result = rebuild_gold_step(version, settings=_settings())
    except (QualityGateError, ValueError) as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result, indent=2, default=str))


@app.command()
def maintain() -> None:
    """OPTIMIZE and VACUUM every lake table, as the `maintenance` DAG does."""
    from jobs.ingest.steps import maintain_step

    typer.echo(json.dumps(maintain_step(_settings()), indent=2))


@app.command("withdraw-consent")
def withdraw_consent(
    user_ids: Annotated[list[str], typer.Argument(help="User ids, as the shop sends them.")],
    grant: Annotated[
        bool, typer.Option("--grant", help="Consent is given again (from --at on).")
    ] = False,
    at: Annotated[
        str | None,
        typer.Option(help="When the change took effect, ISO 8601 with a zone (default now)."),
    ] = None,
) -> None:
    """Record consent withdrawals: ingest drops the users' events from then on, and each
    withdrawal records one erasure request for their past data. --grant re-consents."""
    from datetime import datetime

    from jobs.privacy.consent import grant_consent
    from jobs.privacy.consent import withdraw_consent as withdraw
    from jobs.privacy.requests import RequestError
    from jobs.spark import get_spark

    settings = _settings()
    try:
        when = datetime.fromisoformat(at) if at else None
        action = grant_consent if grant else withdraw
        result = action(get_spark(settings), settings, user_ids, at=when, source="cli")
    except (ConfigError, RequestError, ValueError) as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result, indent=2))


@app.command()
def retention(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be removed; remove nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
) -> None:
    """Remove what each store holds past its RECFLOW_RETENTION_* limit (README "Retention")."""
    from jobs.privacy.retention import retention_step

    result = retention_step(_settings(), dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    for store, swept in result.items():
        removed, kept = swept["removed"], swept["kept"]
        limit = f"{swept['setting']}={swept['limit']}"
        if not swept["limit"]:
            typer.echo(f"{store} ({limit}): kept for ever")
            continue
        typer.echo(f"{store} ({limit}): {verb} {len(removed)}")
        for name in removed:
            typer.echo(f"  - {name}")
        for name in kept:
            typer.echo(f"  = kept {name}")


@app.command()
def train(
    force: Annotated[bool, typer.Option(help="Train even if the trigger says no.")] = False,
) -> None:
    """Decide whether to retrain; if so train ALS, log to MLflow, register and gate."""
    from jobs.train.data import NotEnoughDataError
    from jobs.train.steps import train_step, trigger_step

    settings = _settings()
    decision = trigger_step(settings)
    typer.echo(f"trigger: {decision['reason']} (train={decision['train']})")
    if not (decision["train"] or force):
        return
    try:
        result = train_step(
            {**decision, "reason": decision["reason"] if decision["train"] else "forced by hand"},
            settings,
        )
    except NotEnoughDataError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result, indent=2, default=str))


def _reviewer() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        # No login name (a container without a passwd entry): still recorded, as unknown.
        return "unknown"


def _move_champion(version: str | None, by: str | None, reason: str) -> None:
    from jobs.model.artifact import NonFiniteModelError
    from jobs.model.promotion import ChampionMovedError
    from jobs.train.steps import promote_step

    settings = _settings()
    try:
        result = promote_step(version, by or _reviewer(), reason, settings)
    except (LookupError, ChampionMovedError, NonFiniteModelError) as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    if not result["moved"]:
        typer.echo(f"v{result['model_version']} is already the champion: nothing moved")
        return
    previous = "none" if result["previous"] is None else f"v{result['previous']}"
    typer.echo(f"champion: {previous} → v{result['model_version']} ({reason})")
    if result.get("best"):
        typer.echo(f"best (the gate's bar): v{result['best']}")
    typer.echo(
        "the champion_watch DAG announces it within minutes and publish follows; "
        "without Airflow, run `recflow publish`"
    )


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="The registered version to make champion.")],
    reason: Annotated[str, typer.Option(help="Why (recorded on the version).")] = "by hand",
    by: Annotated[str | None, typer.Option(help="Who (default: your login name).")] = None,
) -> None:
    """Make a model version the champion (compare-and-set; who/when/why on its tags)."""
    _move_champion(version, by, reason)


@app.command("rollback-model")
def rollback_model(
    reason: Annotated[str, typer.Option(help="Why (recorded on the version).")] = "rollback",
    by: Annotated[str | None, typer.Option(help="Who (default: your login name).")] = None,
) -> None:
    """Make the previous champion the champion again (the one the current one replaced)."""
    _move_champion(None, by, reason)


@app.command()
def publish(
    version: Annotated[
        str | None, typer.Option(help="Model version to publish (default: the champion).")
    ] = None,
) -> None:
    """Score every user and publish their JSON (score, upload, verify, flip, prune)."""
    from jobs.publish.layout import LayoutError
    from jobs.publish.steps import PublishError, publish_all

    try:
        result = publish_all(_settings(), version=version, progress=True)
    except (PublishError, LayoutError, ConfigError) as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    up = result["upload"]
    typer.echo(
        f"publish {result['publish_id']} → {result['target']}: {up['objects']:,} objects "
        f"({up['uploaded']:,} uploaded, {up['skipped']:,} already there), "
        f"{up['mean_bytes_per_user']:.0f} B/user; scored {result['score']['users_per_second']:,}"
        f" users/s; live (was {result['flip']['previous']}); pruned {result['pruned'] or 'none'}"
    )


@app.command()
def publishes() -> None:
    """List the publishes in the bucket, oldest first; * marks the live one."""
    from jobs.publish.steps import publishes as listing

    for p in listing(_settings()):
        mark = "*" if p["live"] else " "
        state = (
            f"model v{p['model_version']}, {p['users']:,} users" if p["complete"] else "incomplete"
        )
        typer.echo(f"{mark} {p['publish_id']}  {state}")


@app.command()
def rollback(
    publish_id: Annotated[str, typer.Argument(help="A kept publish (see `recflow publishes`).")],
) -> None:
    """Point recs/latest.json back at an older publish (after verifying it)."""
    from jobs.publish.layout import LayoutError
    from jobs.publish.steps import PublishError
    from jobs.publish.steps import rollback as roll_back

    try:
        result = roll_back(_settings(), publish_id)
    except (PublishError, LayoutError) as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"recs/latest.json: {result['previous']} → {result['publish_id']}")


@app.command()
def recs(
    user_id: Annotated[str, typer.Argument(help="The user whose list a client would fetch.")],
) -> None:
    """Print the object a client fetches for a user (their list, else popular.json).

    A read of the user's personal data: logged in the data access log (`recflow access-log`).
    """
    from jobs.publish.steps import PublishError, recs_for

    settings = _settings()
    try:
        key, body = recs_for(settings, user_id)
    except (PublishError, ConfigError) as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    _log_personal_read(
        settings, "cli_recs", user_id, "no_list" if key.endswith("popular.json") else "served"
    )
    typer.echo(f"GET /{key}", err=True)
    typer.echo(json.dumps(body, indent=2))


def _log_personal_read(settings: Settings, action: str, user_id: str, outcome: str) -> None:
    """One data access log line for a CLI read of a person's data, by subject hash."""
    from jobs.access_log import AccessLog
    from jobs.subjects import subject_hasher

    access_log = AccessLog.open(settings)
    try:
        if not access_log.record(
            f"cli:{_reviewer()}", action, subject_hasher(settings)(user_id), outcome
        ):
            typer.secho("warning: the data access log could not be written", fg="yellow", err=True)
    finally:
        access_log.close()


@app.command("forget-user")
def forget_user(
    user_ids: Annotated[
        list[str] | None, typer.Argument(help="User ids to erase (GDPR/CCPA requests).")
    ] = None,
    file: Annotated[
        Path | None, typer.Option(help="A UTF-8 file of user ids, one a line (# comments).")
    ] = None,
    now: Annotated[
        bool, typer.Option(help="Erase now, here, instead of at the next privacy DAG run.")
    ] = False,
) -> None:
    """Record erasure requests; the privacy DAG (or --now) erases and verifies them.

    The people are named in the output by subject hash only: a terminal log is a store too.
    """
    from jobs.privacy.requests import RequestError, read_id_file

    settings = _settings()
    ids = list(user_ids or [])
    if file is not None:
        try:
            ids += read_id_file(file)
        except (OSError, UnicodeDecodeError) as exc:
            typer.secho(f"{file}: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
    if not ids:
        typer.secho("no user ids given (arguments or --file)", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    from jobs.privacy.steps import erase_step, request_step

    try:
        recorded = request_step(ids, "file" if file is not None else "cli", settings)
    except (RequestError, ConfigError) as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(recorded))
    if now:
        from jobs.privacy.erasure import ErasureIncompleteError

        try:
            typer.echo(json.dumps(erase_step(settings), indent=2, default=str))
        except ErasureIncompleteError as exc:
            typer.secho(str(exc), fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None


@app.command("user-key")
def user_key(
    user_id: Annotated[str, typer.Argument(help="The user to vouch for.")],
) -> None:
    """Print a user's key: what the site's backend sends with /recommend (and the CDN key).

    For development and support: in production the backend computes it with the same
    secret (HMAC-SHA256 of the user id, first 32 hex; see bento/README.md).
    """
    from jobs.subjects import user_key as key_of

    try:
        typer.echo(key_of(_settings().hmac_secret(), user_id))
    except ConfigError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


@app.command("access-log")
def access_log(
    subject: Annotated[
        str | None, typer.Option(help="Only this subject hash (from an erasure log, say).")
    ] = None,
    user_id: Annotated[
        str | None, typer.Option(help="Only this user (hashed here; the id is not stored).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="From this instant on, ISO 8601 (UTC if no zone).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Most rows to print, newest first.")] = 100,
    load: Annotated[
        bool, typer.Option(help="Load the access log files into the table first.")
    ] = True,
) -> None:
    """Who read whose personal data, when: the `privacy/data_access` table."""
    from datetime import UTC, datetime

    from jobs.privacy.access import load_access_log, read_access_log
    from jobs.spark import get_spark
    from jobs.subjects import subject_hasher

    settings = _settings()
    if subject is not None and user_id is not None:
        typer.secho("give --subject or --user-id, not both", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    if user_id is not None:
        try:
            subject = subject_hasher(settings)(user_id)
        except ConfigError as exc:
            typer.secho(str(exc), fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
    start = None
    if since is not None:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            typer.secho(f"--since {since!r} is not ISO 8601", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
    spark = get_spark(settings)
    if load:
        loaded = load_access_log(spark, settings)
        typer.echo(
            f"loaded {loaded['inserted']:,} new lines from {loaded['files']:,} files"
            + (f" ({loaded['bad_lines']:,} unreadable, skipped)" if loaded["bad_lines"] else ""),
            err=True,
        )
    rows = read_access_log(spark, settings, subject=subject, since=start, limit=limit)
    for row in rows:
        ts = row["ts"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        typer.echo(
            f"{ts}  {row['actor']:<24} {row['action']:<20} {row['subject']}  "
            f"{row['outcome']:<10} {row['request_id'] or ''}"
        )
    typer.echo(f"{len(rows):,} rows", err=True)


@stream_app.command("topics")
def stream_topics() -> None:
    """Create the events and catalog topics (partitions, retention) where missing."""
    from jobs.stream.client import ensure_topics, topic_specs

    settings = _settings()
    created = ensure_topics(settings)
    for name, config in topic_specs(settings).items():
        state = "created" if name in created else "exists"
        typer.echo(f"{name:<24} {state:<8} partitions={settings.kafka_partitions} {config}")


# `--idle-stop` of the stream consumers (tests and benchmarks drain a topic with it).
IdleStop = Annotated[
    float | None,
    typer.Option(help="Stop after this many seconds without a message (default: run on)."),
]


def _until_sigterm(loop: Callable[[Callable[[], bool]], Any]) -> Any:
    """Run a consumer loop that checks ``stop()`` between batches: SIGTERM (a supervisor,
    `recflow up`) stops it there; Ctrl-C exits 130."""
    import signal

    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    try:
        return loop(lambda: bool(stopping))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@stream_app.command("landing")
def stream_landing(
    idle_stop: IdleStop = None,
) -> None:
    """Land the topics as files in the landing folder, exactly once; SIGTERM stops it
    between batches."""
    from jobs.stream.landing import consume

    stats = _until_sigterm(lambda stop: consume(_settings(), stop, idle_stop=idle_stop))
    typer.echo(
        f"{stats.messages:,} messages in {stats.batches} batches, {len(stats.files)} files"
        + (f"; resumed past files already written: {stats.resumed}" if stats.resumed else "")
    )


@stream_app.command("worker")
def stream_worker(
    idle_stop: IdleStop = None,
) -> None:
    """Push each click into Feast (user_recent_items) as it arrives; SIGTERM stops it
    between batches."""
    from jobs.stream.features import run

    stats = _until_sigterm(lambda stop: run(_settings(), stop, idle_stop=idle_stop))
    typer.echo(
        f"{stats.messages:,} messages, {stats.touches:,} interactions pushed for"
        f" {stats.users_pushed:,} users in {stats.pushes:,} pushes ({stats.skipped:,} skipped)"
    )


@app.command()
def collector(
    port: Annotated[int | None, typer.Option(help="Port (default RECFLOW_COLLECTOR_PORT).")] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """The event collector: POST /events (the event contract as JSON) into Kafka."""
    import uvicorn

    from jobs.stream.collector import make_app

    settings = _settings()
    bound = settings.collector_port if port is None else port
    typer.echo(f"collecting events at http://{host}:{bound}/events → {settings.kafka_bootstrap}")
    uvicorn.run(make_app(settings), host=host, port=bound, log_level="warning")


@stream_app.command("broker")
def stream_broker(
    port: Annotated[
        int | None, typer.Option(help="Port (default RECFLOW_KAFKA_LOCAL_PORT; 0: a free one).")
    ] = None,
) -> None:
    """A local single-node Kafka (KRaft) under <data_root>/kafka; Ctrl-C stops it."""
    from jobs.stream.broker import start_broker

    settings = _settings()
    bound = settings.kafka_local_port if port is None else port
    broker = start_broker(settings, settings.data_root / "kafka", bound)
    typer.echo(f"Kafka at {broker.bootstrap}: export RECFLOW_KAFKA_BOOTSTRAP={broker.bootstrap}")
    try:
        broker.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()


@app.command()
def cdn(
    port: Annotated[int | None, typer.Option(help="Port (default RECFLOW_CDN_PORT).")] = None,
) -> None:
    """Serve the local bucket like the CDN: gzip, cache headers, CORS, 404s."""
    from jobs.publish.cdn import make_server

    settings = _settings()
    server = make_server(settings, port)
    host, bound = server.server_address[:2]
    typer.echo(f"serving {settings.publish_dir} at http://{host}:{bound}/recs/latest.json")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
def shop(
    port: Annotated[int | None, typer.Option(help="Port (default RECFLOW_SHOP_PORT).")] = None,
    cdn: Annotated[
        bool, typer.Option(help="Also serve the CDN stand-in (off when `recflow up` runs).")
    ] = True,
) -> None:
    """The storefront page over the CDN stand-in, the service and the collector; Ctrl-C stops.

    Start `recflow up` (service, collector) for the click-through; without them the page
    still shows the published lists, as a shop's page does when the service is down.
    """
    import uvicorn

    from jobs.publish.cdn import make_server
    from jobs.shop.server import make_app, urls

    settings = _settings()
    try:
        app_ = make_app(settings)  # refused (prod, a real bucket) before anything starts
    except ConfigError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    server = None
    if cdn:
        try:
            server = make_server(settings)
        except OSError as exc:
            typer.secho(f"CDN stand-in not started ({exc}): --no-cdn", fg="red", err=True)
            raise typer.Exit(1) from None
        import threading

        threading.Thread(target=server.serve_forever, daemon=True, name="recflow-cdn").start()
    bound = settings.shop_port if port is None else port
    where = urls(settings)
    typer.echo(f"storefront:     http://{settings.shop_host}:{bound}/  (?user=u000001 signs in)")
    typer.echo(f"  CDN {where['cdn']}, service {where['service']}, collector {where['collector']}")
    try:
        uvicorn.run(app_, host=settings.shop_host, port=bound, log_level="warning")
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


@app.command()
def airflow(
    port: Annotated[
        int | None, typer.Option(help="API server and UI port (default RECFLOW_AIRFLOW_PORT).")
    ] = None,
) -> None:
    """Start Airflow's scheduler, API server and UI on this data root; Ctrl-C stops them.

    Ingest gets one daily interval per day of the generated shop (run `make demo` or
    `recflow generate` first), recflow's DAGs are unpaused, and every task runs as its own
    process, as in a deployment. Prints the URL and the login Airflow generates.
    """
    import signal
    import sys

    from jobs import airflow_local

    settings = _settings()
    port = port or settings.airflow_port
    if not airflow_local.port_free(port):
        typer.secho(f"port {port} is busy: --port or RECFLOW_AIRFLOW_PORT", fg="red", err=True)
        raise typer.Exit(1)
    env = airflow_local.environment(settings, port)
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    running = airflow_local.running_launch(home)
    if running:
        typer.secho(f"Airflow already runs on this data root (pid {running})", fg="red", err=True)
        raise typer.Exit(1)
    dates = airflow_local.shop_dates(settings)
    log_path = home / "standalone.log"
    typer.echo(
        f"ingest: {env['RECFLOW_INGEST_SCHEDULE']} from {env['RECFLOW_INGEST_START']}"
        + (f" to {env['RECFLOW_INGEST_END']}" if env.get("RECFLOW_INGEST_END") else "")
        + f" (the generated shop: {dates.days} days); log: {log_path}"
    )
    binary = Path(sys.executable).parent / "airflow"
    with log_path.open("a") as log:
        proc = subprocess.Popen(
            [str(binary), "standalone"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its scheduler, processor and API server: one group
        )
    airflow_local.record_launch(home, proc.pid)

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        if not airflow_local.wait_until_up(port, timeout=300):
            typer.secho(f"Airflow did not come up; see {log_path}", fg="red", err=True)
            raise typer.Exit(1)
        found = None
        for _ in range(30):
            found = airflow_local.login(home)
            if found:
                break
            time.sleep(1)
        typer.echo(f"Airflow UI: http://127.0.0.1:{port}")
        if found:
            typer.echo(f"  login: {found[0]} / {found[1]}")
            unpaused = airflow_local.AirflowApi(port, *found).unpause()
            if unpaused:
                typer.echo(f"  unpaused: {', '.join(sorted(unpaused))}")
        typer.echo("  Ctrl-C stops the scheduler, the API server and every task they started.")
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        airflow_local.stop_group(proc, env[airflow_local.LAUNCH_KEY])
        (home / airflow_local.PID_FILE).unlink(missing_ok=True)


@app.command()
def up(
    build: Annotated[
        bool, typer.Option(help="Import the champion and build its Bento first.")
    ] = True,
) -> None:
    """Start the online service (the champion's Bento) next to `recflow cdn`; Ctrl-C stops.

    With Prometheus installed (`make monitoring-deps`) also a Prometheus scraping the
    service (and a Pushgateway for the batch metrics), and Kafka (a local broker unless
    RECFLOW_KAFKA_BOOTSTRAP is set) with the event collector and the landing consumer; all
    stopped with the rest.
    """
    import signal
    import sys

    from jobs.publish.cdn import serve_in_background
    from jobs.serve import bento_build

    settings = _settings()
    if build:
        try:
            tag = bento_build.import_and_build(settings).bento_tag
        except LookupError as exc:
            typer.secho(str(exc), fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
    else:
        tag = f"{bento_build.BENTO_NAME}:latest"
    server, cdn_url = serve_in_background(settings, settings.cdn_port)
    bentoml = Path(sys.executable).parent / "bentoml"
    command = [str(bentoml), "serve", str(tag), "--host", settings.serve_host]
    try:
        proc = subprocess.Popen(
            [*command, "--port", str(settings.serve_port)],
            env=bento_build.serve_env(settings),
        )
    except BaseException:
        _stop_all([("cdn", lambda: _stop_cdn(server))])
        raise
    # From here on everything started is stopped in `finally`, whatever interrupts `up`
    # (Ctrl-C or SIGTERM while monitoring starts, a failure of monitoring itself).
    monitoring: list[Any] = []
    stream: list[Any] = []
    page: list[Any] = []
    try:

        def stop(*_: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)  # a supervisor's stop also stops the service
        typer.echo(f"CDN stand-in:   {cdn_url}/recs/latest.json")
        typer.echo(f"online service: http://{settings.serve_host}:{settings.serve_port}  ({tag})")
        typer.echo(
            f"  curl -s -XPOST http://{settings.serve_host}:{settings.serve_port}/recommend "
            """-H 'content-type: application/json' -d '{"user_id": "someone-new", "k": 5}'"""
        )
        typer.echo("  a known user's own list needs their key: `recflow user-key <user id>`")
        _start_monitoring(settings, monitoring)
        _start_stream(settings, stream)
        _start_shop(settings, page)
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C must not cut the cleanup short and leave servers running; every
        # step is bounded (terminate, then kill after a timeout).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        steps: list[tuple[str, Callable[[], object]]] = [
            ("online service", lambda: _stop_process(proc)),
            ("cdn", lambda: _stop_cdn(server)),
        ]
        steps += [("storefront", started.stop) for started in page]
        steps += [(started.name, started.stop) for started in reversed(stream)]
        steps += [(started.name, started.stop) for started in reversed(monitoring)]
        _stop_all(steps)


def _stop_process(proc: Any, timeout: float = 30.0) -> None:
    from jobs.procs import stop_process

    stop_process(proc, timeout)


def _stop_cdn(server: Any) -> None:
    server.shutdown()
    server.server_close()


def _stop_all(steps: list[tuple[str, Callable[[], object]]]) -> None:
    """Run every stop step, each on its own: one that fails must not leave the rest running."""
    for name, step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - every step runs, each failure reported
            # Reported and passed over: the remaining processes still have to be stopped.
            typer.secho(f"stopping {name} failed: {exc!r}", fg=typer.colors.YELLOW, err=True)


def _start_monitoring(settings: Settings, started: list[Any] | None = None) -> list[Any]:
    """Prometheus (and a Pushgateway) for `recflow up`, when installed; else a hint.

    Monitoring is an extra of `up`: any failure (a missing binary or config, a busy port)
    is reported, what did start is stopped, and the service keeps running without it. Each
    server is appended to ``started`` as soon as it runs, so the caller stops it even when
    this is interrupted (Ctrl-C, SIGTERM) half-way.
    """
    from jobs.monitor import servers

    started = [] if started is None else started
    workdir = settings.data_root / "prometheus"
    try:
        gateway = servers.start_pushgateway(
            settings,
            workdir / "pushgateway",
            port=settings.pushgateway_port,
            persistence=workdir / "pushgateway" / "metrics.db",
        )
        started.append(gateway)
        prometheus = servers.start_prometheus(
            settings,
            workdir,
            service_target=f"{settings.serve_host}:{settings.serve_port}",
            pushgateway_target=gateway.url.removeprefix("http://"),
            port=settings.prometheus_port,
        )
        started.append(prometheus)
    except Exception as exc:  # noqa: BLE001 - monitoring is optional, see the docstring
        # Reported, not raised: the service and the CDN stand-in are what `up` is for. A
        # Pushgateway without the Prometheus that reads it is no use: stopped too.
        typer.secho(f"prometheus:     not started ({exc})", fg=typer.colors.YELLOW, err=True)
        _stop_all([(done.name, done.stop) for done in reversed(started)])
        started.clear()
        return started
    typer.echo(f"prometheus:     {prometheus.url}  (alerts: {prometheus.url}/alerts)")
    typer.echo(
        f"pushgateway:    {gateway.url}  (RECFLOW_PUSHGATEWAY_URL={gateway.url} for the"
        " monitor DAG's batch metrics)"
    )
    return started


class _Child:
    """A child process `up` started, stoppable like the monitoring servers."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.name, self.proc = name, proc

    def stop(self) -> None:
        _stop_process(self.proc)


def _start_shop(settings: Settings, started: list[Any]) -> None:
    """The storefront page for `recflow up`; optional like monitoring (reported, not fatal)."""
    from jobs.shop.server import Running

    try:
        running = Running(settings, settings.shop_port, None)
    except Exception as exc:  # noqa: BLE001 - the page is optional in `up`, the service runs on
        typer.secho(f"storefront:     not started ({exc})", fg=typer.colors.YELLOW, err=True)
        return
    started.append(running)
    typer.echo(f"storefront:     {running.url}/  (?user=u000001 signs in)")


def _start_stream(settings: Settings, started: list[Any]) -> None:
    """Kafka for `recflow up`: a local broker unless RECFLOW_KAFKA_BOOTSTRAP names a cluster,
    the topics, the landing consumer, the stream worker and the collector. Optional like
    monitoring: a failure is reported, what started is stopped, the service runs on."""
    import os
    import sys

    from jobs.stream.broker import start_broker
    from jobs.stream.client import ensure_topics

    try:
        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            broker = start_broker(settings, settings.data_root / "kafka", settings.kafka_local_port)
            started.append(broker)
            bootstrap = broker.bootstrap
        ensure_topics(settings.model_copy(update={"kafka_bootstrap": bootstrap}))
        env = {**os.environ, "RECFLOW_KAFKA_BOOTSTRAP": bootstrap}
        recflow = str(Path(sys.executable).parent / "recflow")
        log_dir = settings.data_root / "kafka"
        log_dir.mkdir(parents=True, exist_ok=True)
        children = (
            ("landing", ["stream", "landing"]),
            ("worker", ["stream", "worker"]),
            ("collector", ["collector"]),
        )
        for name, args in children:
            with (log_dir / f"{name}.log").open("ab") as out:
                proc = subprocess.Popen(
                    [recflow, *args], env=env, stdout=out, stderr=subprocess.STDOUT
                )
            started.append(_Child(name, proc))
    except Exception as exc:  # noqa: BLE001 - Kafka is optional in `up`, see the docstring
        typer.secho(f"kafka:          not started ({exc})", fg=typer.colors.YELLOW, err=True)
        _stop_all([(done.name, done.stop) for done in reversed(started)])
        started.clear()
        return
    typer.echo(f"kafka:          {bootstrap}  (RECFLOW_KAFKA_BOOTSTRAP={bootstrap})")
    typer.echo(
        f"collector:      http://127.0.0.1:{settings.collector_port}/events  → topic"
        f" {settings.kafka_events_topic} → {settings.events_dir} (recflow stream landing)"
    )
    typer.echo(
        f"stream worker:  topic {settings.kafka_events_topic} → Feast user_recent_items"
        " (recflow stream worker)"
    )


def main() -> None:
    _show_progress_logs()
    app()


def _show_progress_logs() -> None:
    """What each step did (recflow's own INFO lines) on stderr; libraries stay quiet."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger = logging.getLogger("jobs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


if __name__ == "__main__":
    main()
