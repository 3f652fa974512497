"""Semantic rules of the lifecycle contract beyond what Avro types can say. Pure: no I/O, no clock.

Avro decoding proves the shape; these checks catch values that decode fine but would poison the
warehouse (an UNKNOWN type from a newer writer, an empty tenant, a timestamp in 1970, a negative
latency, a ``sent_at`` after the outcome that follows the send). Both the emitter and the ingest
agent run them, so a service learns of a bad event at emit time and a bad event that still reaches
the log is dead-lettered, never written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

EVENT_TYPES: Final = (
    "REQUESTED",
    "SUPPRESSED",
    "DISPATCHED",
    "SENT",
    "DELIVERED",
    "FAILED",
    "BOUNCED",
    "OPENED",
    "CLICKED",
    "REPLIED",
    "UNSUBSCRIBED",
    "COMPLAINED",
)
CHANNELS: Final = ("EMAIL", "SMS", "PUSH")
RECIPIENT_KINDS: Final = ("CUSTOMER", "TECHNICIAN", "OTHER")

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
EARLIEST = datetime.fromisoformat("2000-01-01T00:00:00+00:00")
MAX_FUTURE_SKEW = timedelta(days=1)


def contract_violations(event: Mapping[str, Any], now: datetime) -> list[str]:
    """Every way ``event`` (a decoded record) breaks the contract, as ``field: problem`` strings.

    >>> from datetime import timezone
    >>> now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> ok = {"event_id": "e1", "event_type": "SENT", "occurred_at": now, "tenant_id": "acme",
    ...       "notification_id": "n1", "channel": "SMS"}
    >>> contract_violations(ok, now)
    []
    >>> contract_violations({**ok, "event_type": "UNKNOWN", "tenant_id": ""}, now)
    ['event_type: unknown symbol UNKNOWN', "tenant_id: '' is not a tenant id ([a-z0-9_-], 1-64 chars)"]
    """
    problems: list[str] = []
    for field in ("event_id", "notification_id"):
        value = event.get(field)
        if not isinstance(value, str) or not _ID.match(value):
            problems.append(f"{field}: {value!r} is not an id (1-128 chars of [A-Za-z0-9_.:-])")
    if event.get("event_type") not in EVENT_TYPES:
        problems.append(f"event_type: unknown symbol {event.get('event_type')}")
    tenant = event.get("tenant_id")
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        problems.append(f"tenant_id: {tenant!r} is not a tenant id ([a-z0-9_-], 1-64 chars)")
    if event.get("channel") not in CHANNELS:
        problems.append(f"channel: unknown symbol {event.get('channel')}")
    occurred = event.get("occurred_at")
    if not isinstance(occurred, datetime):
        problems.append("occurred_at: missing or not a timestamp")
        occurred = None
    elif occurred < EARLIEST or occurred > now + MAX_FUTURE_SKEW:
        problems.append(f"occurred_at: {occurred.isoformat()} is outside [2000-01-01, now + 1 day]")
        occurred = None  # already reported: no second problem for sent_at's order against it
    for field in ("latency_ms", "cost_micros", "template_version", "campaign_step"):
        value = event.get(field)
        if value is not None and value < 0:
            problems.append(f"{field}: {value} is negative")
    sent_at = event.get("sent_at")  # optional: absent from older writers and from events before a send
    if sent_at is not None:
        if not isinstance(sent_at, datetime):
            problems.append("sent_at: not a timestamp")
        elif sent_at < EARLIEST or (occurred is not None and sent_at > occurred):
            problems.append(f"sent_at: {sent_at.isoformat()} is outside [2000-01-01, occurred_at]")
    if event.get("event_type") in ("FAILED", "BOUNCED") and not event.get("error"):
        problems.append(f"error: required for {event.get('event_type')} events")
    return problems


def request_problem(record: Mapping[str, Any]) -> str | None:
    """Why a decoded DispatchRequested cannot be dispatched (None when it can), as ``field: reason``s.

    >>> request_problem({"request_id": "r1", "notification_id": "n1", "tenant_id": "acme", "channel": "SMS"})
    >>> request_problem({"request_id": "", "notification_id": "n1", "tenant_id": "Acme", "channel": "FAX"})
    "channel: 'FAX' is not EMAIL, SMS or PUSH; tenant_id: 'Acme' is not a tenant id ([a-z0-9_-], 1-64 chars); request_id: '' is not an id (1-128 chars of [A-Za-z0-9_.:-])"
    """  # noqa: E501
    problems = []
    if record.get("channel") not in ("EMAIL", "SMS", "PUSH"):
        problems.append(f"channel: {record.get('channel')!r} is not EMAIL, SMS or PUSH")
    tenant = record.get("tenant_id")
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        problems.append(f"tenant_id: {tenant!r} is not a tenant id ([a-z0-9_-], 1-64 chars)")
    for name in ("request_id", "notification_id"):
        value = record.get(name)
        if not isinstance(value, str) or not _ID.match(value):
            problems.append(f"{name}: {value!r} is not an id (1-128 chars of [A-Za-z0-9_.:-])")
    return "; ".join(problems) or None
