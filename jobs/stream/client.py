"""Kafka client configuration and the topics recflow creates, from the settings alone."""

from __future__ import annotations

import logging
from typing import Any

from jobs.config import Settings, secret_value

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000


class KafkaNotConfiguredError(RuntimeError):
    """``RECFLOW_KAFKA_BOOTSTRAP`` is empty: there is no cluster to talk to."""


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """librdkafka settings for a producer, consumer or admin client of this cluster."""
    if not settings.kafka_bootstrap:
        raise KafkaNotConfiguredError(
            "RECFLOW_KAFKA_BOOTSTRAP is empty: point it at a Kafka cluster (`recflow up`"
            " starts a local broker and prints the value)"
        )
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
    if settings.kafka_sasl_username:
        config["sasl.username"] = settings.kafka_sasl_username
    password = secret_value(settings.kafka_sasl_password)
    if password:
        config["sasl.password"] = password
    if settings.kafka_ssl_ca_location:
        config["ssl.ca.location"] = str(settings.kafka_ssl_ca_location)
    return {**config, **extra}


def topic_specs(settings: Settings) -> dict[str, dict[str, str]]:
    """Each topic's configuration.

    The broker stamps each message with its append time (``LogAppendTime``): within a
    partition the stamps then never go back, which is what lets the landing consumer cut
    its files at hour boundaries with contiguous offsets (see ``jobs.stream.landing``).
    """
    retention = str(settings.kafka_retention_hours * HOUR_MS)
    common = {"message.timestamp.type": "LogAppendTime", "retention.ms": retention}
    return {settings.kafka_events_topic: common, settings.kafka_catalog_topic: common}


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the missing topics (existing ones are left as they are); returns those created."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(settings))
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(name, num_partitions=settings.kafka_partitions, replication_factor=-1, config=cfg)
        for name, cfg in topic_specs(settings).items()
        if name not in existing
    ]
    created = []
    for name, future in (
        admin.create_topics(wanted, request_timeout=timeout).items() if wanted else []
    ):
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            # Another process created it between our listing and our request: same result.
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    return created


def good_messages(batch: list[Any]) -> list[Any]:
    """The messages of a ``consume()`` batch that carry data; a fatal error raises.

    A transient error (a broker restarting, a partition moving) is only logged: librdkafka
    retries by itself and the message is delivered again, not lost.
    """
    from confluent_kafka import KafkaException

    good = []
    for message in batch:
        error = message.error()
        if error is None:
            good.append(message)
        elif error.fatal():
            raise KafkaException(error)
        else:
            log.warning("kafka: %s", error)
    return good


class IdleClock:
    """When a consumer has drained its topic: ``idle_stop`` seconds without a message.

    Idle counts from the assignment: a group still rebalancing (a member that died holds
    its partitions until its session times out) is not "drained".
    """

    def __init__(self, idle_stop: float | None) -> None:
        import time

        self.idle_stop = idle_stop
        self._monotonic = time.monotonic
        self.last = self._monotonic()

    def drained(self, got_messages: bool, assigned: bool) -> bool:
        now = self._monotonic()
        if got_messages or not assigned:
            self.last = now
            return False
        return self.idle_stop is not None and now - self.last > self.idle_stop
