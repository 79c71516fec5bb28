"""A local Kafka broker (KRaft, one node) from Maven Central's jars, started and stopped by PID.

For `recflow up` and the tests; a deployment points ``RECFLOW_KAFKA_BOOTSTRAP`` at its own
cluster instead. The jars of ``org.apache.kafka:kafka_2.13`` are resolved once per machine
with the Ivy that pyspark ships (the same single-repository settings as Spark's own jars),
so nothing but Java and Maven Central is needed: Debian has no Kafka package.
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from jobs.config import Settings
from jobs.procs import stop_process

READY_TIMEOUT = 60.0
KAFKA_ARTIFACT = ("org.apache.kafka", "kafka_2.13")


@dataclass
class Broker:
    """One started broker: its bootstrap address, its process and its log."""

    bootstrap: str
    proc: subprocess.Popen[bytes]
    log: Path
    data_dir: Path
    name: str = "kafka"

    def stop(self, timeout: float = 20.0) -> None:
        """By PID; a clean shutdown flushes and closes the log."""
        stop_process(self.proc, timeout)


def _ivy_jar() -> Path:
    import pyspark

    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("ivy-*.jar"))
    if not jars:
        raise RuntimeError("pyspark ships no Ivy jar: cannot resolve Kafka's jars")
    return jars[-1]


def resolve_jars(settings: Settings) -> list[Path]:
    """Kafka's jars for ``RECFLOW_KAFKA_VERSION``, downloaded on the first call only.

    Resolved into a temporary folder and renamed into place: a resolve killed half-way
    never leaves a folder that looks complete.
    """
    from jobs.spark import ivy_settings

    target = settings.kafka_jars_dir / settings.kafka_version
    done = target / ".complete"
    if done.exists():
        return sorted(target.glob("*.jar"))
    settings.kafka_jars_dir.mkdir(parents=True, exist_ok=True)
    partial = settings.kafka_jars_dir / f".{settings.kafka_version}.{uuid.uuid4().hex}"
    group, artifact = KAFKA_ARTIFACT
    command = [
        _java(),
        "-jar",
        str(_ivy_jar()),
        "-settings",
        str(ivy_settings(settings)),
        "-cache",
        str(settings.kafka_jars_dir / "ivy-cache"),
        "-dependency",
        group,
        artifact,
        settings.kafka_version,
        "-confs",
        "default",
        "-types",
        "jar",
        "bundle",
        "-retrieve",
        f"{partial}/[artifact]-[revision](-[classifier]).[ext]",
    ]
    try:
        answer = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if answer.returncode != 0 or not list(partial.glob("*.jar")):
            raise RuntimeError(
                f"resolving {group}:{artifact}:{settings.kafka_version} failed:"
                f" {(answer.stdout + answer.stderr)[-2000:]}"
            )
        (partial / ".complete").touch()
        if target.exists():  # another process finished first: keep theirs
            shutil.rmtree(partial)
        else:
            partial.rename(target)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return sorted(target.glob("*.jar"))


def _java() -> str:
    found = shutil.which("java")
    if found is None:
        raise RuntimeError("java not found on PATH: the local Kafka broker needs Java 17")
    return found


def free_port() -> int:
    """A port nothing listens on now (the broker binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    """One combined broker+controller on loopback, replication 1 (a single node)."""
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data_dir / 'logs'}",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            # A consumer group's first member starts at once instead of waiting 3 s for more.
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "",
        ]
    )


def cluster_id() -> str:
    """A fresh KRaft cluster id (a UUID, URL-safe base64) that does not start with "-":
    StorageTool would read that as an option and refuse to format (1 id in 64)."""
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not found.startswith("-"):
            return found


def start_broker(settings: Settings, data_dir: Path, port: int = 0) -> Broker:
    """A KRaft broker on 127.0.0.1 (``port`` 0: a free one), its data under ``data_dir``.

    A folder formatted before is reused as it is (topics and offsets survive a restart);
    a new one is formatted with a fresh cluster id.
    """
    jars = resolve_jars(settings)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    controller_port = free_port()
    config = data_dir / "server.properties"
    config.write_text(server_properties(data_dir, port, controller_port))
    classpath = ":".join(str(j) for j in jars)
    if not (data_dir / "logs" / "meta.properties").exists():
        cluster = cluster_id()
        storage_format = ["kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(config)]
        subprocess.run(
            [_java(), "-cp", classpath, *storage_format],
            check=True,
            capture_output=True,
            timeout=120,
        )
    log = data_dir / "broker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [_java(), "-Xmx512m", "-cp", classpath, "kafka.Kafka", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    broker = Broker(f"127.0.0.1:{port}", proc, log, data_dir)
    try:
        _wait_ready(broker)
    except BaseException:
        # Not ready (or interrupted): the caller never gets a Broker to stop.
        broker.stop(timeout=5)
        raise
    return broker


def _wait_ready(broker: Broker) -> None:
    """Ready when the broker answers a metadata request (listening is not enough)."""
    from confluent_kafka.admin import AdminClient

    # Quiet: "connection refused" until the broker listens is the expected answer here.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 0})
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if broker.proc.poll() is not None:
            raise RuntimeError(
                f"Kafka exited with {broker.proc.returncode}: {broker.log.read_text()[-2000:]}"
            )
        try:
            if admin.list_topics(timeout=2).brokers:
                return
        except Exception:  # noqa: BLE001 - KafkaException while it starts: keep waiting
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"Kafka at {broker.bootstrap} not ready after {READY_TIMEOUT} s")
        time.sleep(0.2)
