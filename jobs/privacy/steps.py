"""What the privacy DAG and `recflow forget-user` call: one function per task."""

from __future__ import annotations

from typing import Any

from jobs.config import Settings, get_settings


def _spark(settings: Settings) -> Any:
    from jobs.spark import get_spark

    return get_spark(settings)


def request_step(
    user_ids: list[str], source: str = "cli", settings: Settings | None = None
) -> dict[str, int]:
    """Record erasure requests (processed by the next privacy run)."""
    from jobs.privacy.requests import request_erasure

    settings = settings or get_settings()
    return request_erasure(_spark(settings), settings, user_ids, source)


def erase_step(settings: Settings | None = None, run_id: str | None = None) -> dict[str, Any]:
    """Process pending erasure requests (up to RECFLOW_ERASURE_BATCH_LIMIT), verified."""
    from jobs.privacy.erasure import erase
    from jobs.privacy.requests import pending
    from jobs.subjects import add_to_deny_list, deny_list_path, key_id, subject_key

    settings = settings or get_settings()
    # The list exists from the first run on (a production service treats a missing one as
    # an outage), and a changed subject key is refused here, before anything is erased.
    add_to_deny_list(
        deny_list_path(settings), [], key_id(subject_key(settings.subject_secret_value()))
    )
    spark = _spark(settings)
    requests = pending(spark, settings, settings.erasure_batch_limit)
    if not requests:
        return {"people": 0, "removed": {}, "remaining": {}}
    return erase(spark, settings, requests, run_id=run_id).as_dict()


def access_log_step(settings: Settings | None = None) -> dict[str, Any]:
    """Load the complete new lines of the data access log into ``privacy/data_access``."""
    from jobs.privacy.access import load_access_log

    settings = settings or get_settings()
    return load_access_log(_spark(settings), settings)
