"""Semantic rules of the lifecycle contract beyond what Avro types can say. Pure: no I/O, no clock.

Avro decoding proves the shape; these checks catch values that decode fine but would poison the
warehouse (an UNKNOWN type from a newer writer, an empty tenant, a timestamp in 1970, a negative
latency, a ``sent_at`` after the outcome that follows the send), and hold every field to its bound
in schemas/bounds.py: inside the range of the ``events`` column it lands in (a value the column
cannot hold fails the insert of the whole batch) and inside what the domain allows (latency up to 30
days, free text up to its length). Both the emitter and the ingest agent run them, so a service
learns of a bad event at emit time and a bad event that still reaches the log is dead-lettered,
never written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from schemas.bounds import NUMBER_BOUNDS, TEXT_BOUNDS, TIME_BOUNDS

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
MAX_FUTURE_SKEW = timedelta(days=1)
_TOP_TEXT: Final = tuple(
    (path, bound.maximum, bound.why) for path, bound in TEXT_BOUNDS.items() if "." not in path
)
_NESTED_TEXT: Final = {
    record: tuple(
        (path.partition(".")[2], path, bound.maximum, bound.why)
        for path, bound in TEXT_BOUNDS.items()
        if path.startswith(f"{record}.")
    )
    for record in ("recipient", "error")
}


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
    >>> contract_violations({**ok, "latency_ms": 2_592_000_001, "currency": "EURO"}, now)
    ['latency_ms: 2592000001 is above 2592000000 (30 days)', 'currency: 4 characters is above 3 (ISO 4217)']
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
    earliest, latest, _ = TIME_BOUNDS["occurred_at"]
    if not isinstance(occurred, datetime):
        problems.append("occurred_at: missing or not a timestamp")
        occurred = None
    elif occurred < earliest or occurred > min(latest, now + MAX_FUTURE_SKEW):
        problems.append(f"occurred_at: {occurred.isoformat()} is outside [2000-01-01, now + 1 day]")
        occurred = None  # already reported: no second problem for sent_at's order against it
    problems += _number_problems(event)
    sent_at = event.get("sent_at")  # optional: absent from older writers and from events before a send
    if sent_at is not None:
        earliest, latest, _ = TIME_BOUNDS["sent_at"]
        if not isinstance(sent_at, datetime):
            problems.append("sent_at: not a timestamp")
        elif sent_at < earliest or sent_at > (latest if occurred is None else min(latest, occurred)):
            problems.append(f"sent_at: {sent_at.isoformat()} is outside [2000-01-01, occurred_at]")
    problems += _text_problems(event)
    if event.get("event_type") in ("FAILED", "BOUNCED") and not event.get("error"):
        problems.append(f"error: required for {event.get('event_type')} events")
    return problems


def _number_problems(record: Mapping[str, Any]) -> list[str]:
    """Integers outside their bound, as ``field: N is above M (why)``; absent ones are fine."""
    problems = []
    for field, (minimum, maximum, why) in NUMBER_BOUNDS.items():
        value = record.get(field)
        if value is None:
            continue
        if not isinstance(value, int):
            problems.append(f"{field}: {value!r} is not an integer")
        elif value < minimum:
            problems.append(
                f"{field}: {value} is negative" if minimum == 0 else f"{field}: {value} is below {minimum}"
            )
        elif value > maximum:
            problems.append(f"{field}: {value} is above {maximum} ({why})")
    return problems


def _text_problems(event: Mapping[str, Any]) -> list[str]:
    """Strings longer than their bound, as ``path: N characters is above M``."""
    problems = []
    for path, maximum, why in _TOP_TEXT:
        value = event.get(path)
        if isinstance(value, str) and len(value) > maximum:
            problems.append(_too_long(path, len(value), maximum, why))
    for record, fields in _NESTED_TEXT.items():
        inner = event.get(record)
        if not isinstance(inner, Mapping):
            continue
        for name, path, maximum, why in fields:
            value = inner.get(name)
            if isinstance(value, str) and len(value) > maximum:
                problems.append(_too_long(path, len(value), maximum, why))
    return problems


def _too_long(path: str, length: int, maximum: int, why: str) -> str:
    return f"{path}: {length} characters is above {maximum}" + (f" ({why})" if why else "")


def request_problem(record: Mapping[str, Any]) -> str | None:
    """Why a decoded DispatchRequested cannot be dispatched (None when it can), as ``field: reason``s.

    The fields the dispatcher copies into lifecycle events (template, campaign, recipient) are held
    to the same bounds as the events, so a request the lifecycle contract would refuse is
    dead-lettered here rather than failing at emit time inside the dispatch agent.

    >>> request_problem({"request_id": "r1", "notification_id": "n1", "tenant_id": "acme", "channel": "SMS",
    ...                  "template_version": -1})
    'template_version: -1 is negative'
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
    problems += _number_problems(record)
    problems += _text_problems(record)
    return "; ".join(problems) or None
