"""Pure mappings to warehouse rows: a decoded lifecycle event (plus its log position) to an ``events``
row, an alerts-topic record to an ``alerts`` row."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

EVENT_COLUMNS: Final = (
    "event_id",
    "event_type",
    "occurred_at",
    "tenant_id",
    "notification_id",
    "channel",
    "provider",
    "template_id",
    "template_version",
    "campaign_id",
    "campaign_step",
    "experiment_id",
    "variant",
    "recipient_id",
    "recipient_kind",
    "recipient_tier",
    "recipient_role",
    "recipient_language",
    "recipient_country",
    "latency_ms",
    "sent_at",
    "cost_micros",
    "currency",
    "error_class",
    "error_code",
    "error_message",
    "error_retryable",
    "reason",
    "policy_version",
    "source",
    "ingested_at",
    "_topic",
    "_partition",
    "_offset",
    "_log_time",
)

INTENT_COLUMNS: Final = ("topic", "partition", "first_offset", "last_offset", "rows", "worker", "planned_at")

BATCH_COLUMNS: Final = (
    "topic",
    "partition",
    "first_offset",
    "last_offset",
    "rows",
    "dead_letters",
    "duplicates",
    "worker",
    "written_at",
    "max_occurred_at",
    "max_log_time",
)

_NO_RECIPIENT: Final[dict[str, Any]] = {}
_NO_ERROR: Final[dict[str, Any]] = {}


def event_row(
    event: dict[str, Any],
    topic: str,
    partition: int,
    offset: int,
    ingested_at: datetime,
    log_time: datetime | None = None,
) -> list[Any]:
    """One row in EVENT_COLUMNS order; absent strings become '' and absent numbers stay None.
    ``log_time`` is the message's Kafka timestamp (``ingested_at`` when unknown).

    >>> from datetime import UTC
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> row = event_row({"event_id": "e1", "event_type": "SENT", "occurred_at": t, "tenant_id": "acme",
    ...                  "notification_id": "n1", "channel": "SMS"}, "topic", 2, 17, t)
    >>> dict(zip(EVENT_COLUMNS, row))["provider"], row[-3:-1]
    ('', [2, 17])
    """
    recipient = event.get("recipient") or _NO_RECIPIENT
    error = event.get("error") or _NO_ERROR
    return [
        event["event_id"],
        event["event_type"],
        event["occurred_at"],
        event["tenant_id"],
        event["notification_id"],
        event["channel"],
        event.get("provider") or "",
        event.get("template_id") or "",
        event.get("template_version"),
        event.get("campaign_id") or "",
        event.get("campaign_step"),
        event.get("experiment_id") or "",
        event.get("variant") or "",
        recipient.get("id") or "",
        recipient.get("kind") or "",
        recipient.get("tier") or "",
        recipient.get("role") or "",
        recipient.get("language") or "",
        recipient.get("country") or "",
        event.get("latency_ms"),
        event.get("sent_at"),
        event.get("cost_micros"),
        event.get("currency") or "",
        error.get("error_class") or "",
        error.get("code") or "",
        error.get("message") or "",
        bool(error.get("retryable", False)),
        event.get("reason") or "",
        event.get("policy_version") or "",
        event.get("source") or "",
        ingested_at,
        topic,
        partition,
        offset,
        log_time or ingested_at,
    ]


def month_of(occurred_at: datetime) -> int:
    return occurred_at.year * 100 + occurred_at.month


ALERT_COLUMNS: Final = (
    *("alert_id", "status", "tenant_id", "channel", "provider", "series_key", "metric", "kind"),
    *("severity", "observed", "expected", "score", "window_start", "window_end", "first_seen"),
    *("emitted_at", "dashboard_url", "runbook_url", "policy_version", "detail"),
)
"""The columns of an ``alerts`` row (recorded_at is the table's default)."""
_ALERT_TIMES: Final = frozenset({"window_start", "window_end", "first_seen", "emitted_at"})


def alert_row(record: dict[str, Any]) -> list[Any]:
    """The ``alerts`` row of an alerts-topic record (schemas/avro/alert_event.avsc; times in epoch ms).

    >>> row = alert_row({"alert_id": "a1", "status": "OPENED", "tenant_id": "t", "channel": "SMS",
    ...     "provider": "p", "metric": "volume", "kind": "drop", "severity": "major", "observed": 0.0,
    ...     "expected": 9.0, "score": 0.9, "window_start": 0, "window_end": 60_000, "first_seen": 0,
    ...     "emitted_at": 0, "dashboard_url": "d", "runbook_url": "r", "policy_version": None,
    ...     "detail": None})
    >>> row[5], row[13], row[18:]
    ('t/SMS/p', datetime.datetime(1970, 1, 1, 0, 1, tzinfo=datetime.timezone.utc), ['', ''])
    """
    values = {
        **record,
        "series_key": f"{record['tenant_id']}/{record['channel']}/{record['provider']}",
        "policy_version": record.get("policy_version") or "",
        "detail": record.get("detail") or "",
    }
    return [
        datetime.fromtimestamp(values[c] / 1000, UTC) if c in _ALERT_TIMES else values[c]
        for c in ALERT_COLUMNS
    ]
