"""Every lifecycle field is held to its bound (schemas/bounds.py): the value at the bound is accepted,
one past it is refused naming the field and the bound, at ingest and at emit time alike."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import schemas.bounds
import schemas.contract
from herald.errors import EmitError
from projections.rows import EVENT_COLUMNS, event_row
from schemas.bounds import (
    DATETIME64_MAX,
    EARLIEST,
    EVENT_COLUMN,
    NUMBER_BOUNDS,
    TEXT_BOUNDS,
    TIME_BOUNDS,
)
from schemas.codec import lifecycle_codec
from schemas.contract import contract_violations, request_problem
from streams.emitter import Emitter

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def full_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "e-1", "event_type": "FAILED", "occurred_at": NOW, "tenant_id": "acme",
        "notification_id": "n-1", "channel": "EMAIL", "provider": "smtp-primary", "template_id": "welcome",
        "template_version": 2, "campaign_id": "c1", "campaign_step": 1, "experiment_id": "x1", "variant": "b",
        "recipient": {"id": "r-1", "kind": "CUSTOMER", "tier": "gold", "role": "owner", "language": "es",
                      "country": "ES"},
        "latency_ms": 1200, "cost_micros": 700, "currency": "USD",
        "error": {"error_class": "timeout", "code": "T1", "message": "slow", "retryable": True},
        "reason": "quiet_hours", "policy_version": "p1", "source": "notifier",
        "sent_at": NOW - timedelta(seconds=3),
    }  # fmt: skip
    event.update(overrides)
    return event


def with_text(path: str, text: str) -> dict[str, Any]:
    """A full event with the string at ``path`` (``recipient.id``, ``provider``) replaced."""
    record, _, name = path.rpartition(".")
    if not record:
        return full_event(**{name: text})
    event = full_event()
    return {**event, record: {**event[record], name: text}}


def test_a_full_event_is_within_every_bound() -> None:
    """The event the other tests spoil is itself valid."""
    assert contract_violations(full_event(), NOW) == []


@pytest.mark.parametrize("field", sorted(NUMBER_BOUNDS))
def test_each_integer_field_accepts_its_bound_and_refuses_one_past_it_naming_the_bound(field: str) -> None:
    """At the maximum is fine; one above is 'field: N is above M (why)', one below zero is negative."""
    low, high, why = NUMBER_BOUNDS[field]
    assert contract_violations(full_event(**{field: high}), NOW) == []
    assert contract_violations(full_event(**{field: low}), NOW) == []
    assert contract_violations(full_event(**{field: high + 1}), NOW) == [
        f"{field}: {high + 1} is above {high} ({why})"
    ]
    assert contract_violations(full_event(**{field: low - 1}), NOW) == [f"{field}: {low - 1} is negative"]
    assert contract_violations(full_event(**{field: "12"}), NOW) == [f"{field}: '12' is not an integer"]


def test_the_integer_bounds_the_reliability_report_named() -> None:
    """latency_ms up to 30 days in ms, cost up to 10^12 micros, versions and steps in an Avro int."""
    assert NUMBER_BOUNDS["latency_ms"][:2] == (0, 2_592_000_000)
    assert NUMBER_BOUNDS["cost_micros"][:2] == (0, 10**12)
    assert NUMBER_BOUNDS["template_version"][:2] == NUMBER_BOUNDS["campaign_step"][:2] == (0, 2**31 - 1)
    assert contract_violations(full_event(latency_ms=2_592_000_001), NOW) == [
        "latency_ms: 2592000001 is above 2592000000 (30 days)"
    ]


@pytest.mark.parametrize("path", sorted(TEXT_BOUNDS))
def test_each_text_field_accepts_its_length_and_refuses_one_character_more(path: str) -> None:
    """Characters are counted, not bytes: the limit of multi-byte characters is still accepted."""
    limit, why = TEXT_BOUNDS[path].maximum, TEXT_BOUNDS[path].why
    assert contract_violations(with_text(path, "é" * limit), NOW) == []
    expected = f"{path}: {limit + 1} characters is above {limit}" + (f" ({why})" if why else "")
    assert contract_violations(with_text(path, "é" * (limit + 1)), NOW) == [expected]


def test_timestamps_keep_to_2000_through_now_plus_a_day_inside_the_datetime64_range() -> None:
    """The column's range and the domain rule together: 2000-01-01 is the earliest, now + 1 day the
    latest occurred_at, and a sent_at never past its occurred_at nor the column's end."""
    assert TIME_BOUNDS["occurred_at"][:2] == TIME_BOUNDS["sent_at"][:2] == (EARLIEST, DATETIME64_MAX)
    assert contract_violations(full_event(occurred_at=EARLIEST, sent_at=EARLIEST), NOW) == []
    assert contract_violations(full_event(occurred_at=NOW + timedelta(days=1), sent_at=None), NOW) == []
    for far in (NOW + timedelta(days=1, milliseconds=1), datetime(2999, 1, 1, tzinfo=UTC)):
        (problem,) = contract_violations(full_event(occurred_at=far, sent_at=None), NOW)
        assert problem.startswith("occurred_at:") and "outside [2000-01-01, now + 1 day]" in problem
    far_send = full_event(
        occurred_at=datetime(2999, 1, 1, tzinfo=UTC), sent_at=datetime(2999, 1, 1, tzinfo=UTC)
    )
    assert [p.split(":")[0] for p in contract_violations(far_send, NOW)] == ["occurred_at", "sent_at"]


def test_every_bounded_field_lands_in_the_column_the_table_names() -> None:
    """EVENT_COLUMN agrees with projections/rows.py: each bounded field's value is in its column."""
    event = full_event()
    row = dict(zip(EVENT_COLUMNS, event_row(event, "topic", 0, 0, NOW), strict=True))
    for path, column in EVENT_COLUMN.items():
        record, _, name = path.rpartition(".")
        value = event[record][name] if record else event[name]
        assert row[column] == value, path
    assert set(EVENT_COLUMN) == {*NUMBER_BOUNDS, *TIME_BOUNDS, *TEXT_BOUNDS}


def test_a_request_is_held_to_the_bounds_of_the_fields_the_dispatcher_copies_into_events() -> None:
    """A DispatchRequested whose template version, campaign step or recipient breaks a bound is refused
    where requests are validated, not when the dispatch agent emits its lifecycle events."""
    request = {"request_id": "r1", "notification_id": "n1", "tenant_id": "acme", "channel": "SMS",
               "template_id": "t", "recipient": {"id": "r-1", "country": "ES"}}  # fmt: skip
    assert request_problem(request) is None
    assert request_problem({**request, "template_version": -1}) == "template_version: -1 is negative"
    assert request_problem({**request, "campaign_step": 2**31}) == (
        "campaign_step: 2147483648 is above 2147483647 (the Avro int maximum)"
    )
    problem = request_problem({**request, "recipient": {"id": "r" * 129, "country": "ESP"}})
    assert problem == (
        "recipient.id: 129 characters is above 128; "
        "recipient.country: 3 characters is above 2 (ISO 3166-1 alpha-2)"
    )


def test_the_emitter_refuses_an_out_of_bound_event_before_it_reaches_the_log() -> None:
    """Herald's own services learn at emit time: Emitter.encode raises EmitError naming the field."""
    emitter = Emitter("127.0.0.1:9", clock=lambda: NOW)  # encode never talks to the broker
    try:
        assert lifecycle_codec().decode(emitter.encode(full_event(latency_ms=2_592_000_000)))
        with pytest.raises(EmitError, match=r"latency_ms: 2592000001 is above 2592000000 \(30 days\)"):
            emitter.encode(full_event(latency_ms=2_592_000_001))
        with pytest.raises(EmitError, match=r"error\.message: 4097 characters is above 4096"):
            emitter.encode(with_text("error.message", "x" * 4097))
    finally:
        emitter.close(timeout=1)


@pytest.mark.parametrize("module", [schemas.bounds, schemas.contract], ids=lambda m: m.__name__)
def test_doctests_of_the_bounds_and_the_contract_pass(module: Any) -> None:
    """The column type parser's and the contract's examples run."""
    assert doctest.testmod(module).failed == 0


def test_the_operations_guide_names_every_bounded_field_and_limit() -> None:
    """docs/operations.md lists each field the contract bounds and each limit, so it cannot drift."""
    text = " ".join((Path(__file__).parents[2] / "docs" / "operations.md").read_text().split())
    for field in (*NUMBER_BOUNDS, *TIME_BOUNDS, *TEXT_BOUNDS):
        assert f"`{field}`" in text, field
    for bound in TEXT_BOUNDS.values():
        assert f" {bound.maximum}" in text, bound
    assert "2,592,000,000 (30 days)" in text and "10^12" in text and "2^31 - 1" in text
