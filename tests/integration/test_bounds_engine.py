"""The contract's bounds (schemas/bounds.py) against the real engine: each lies inside the type of the
``events`` column it lands in, as ``system.columns`` reports it, every numeric column fed from the
contract has one, and an event at every bound is written and read back unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from projections.migrate import migrate
from projections.rows import EVENT_COLUMNS, event_row
from projections.warehouse import Warehouse
from schemas.bounds import EARLIEST, EVENT_COLUMN, NUMBER_BOUNDS, TEXT_BOUNDS, TIME_BOUNDS, column_range
from schemas.contract import contract_violations

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LINEAGE = {"ingested_at", "_topic", "_partition", "_offset", "_log_time"}  # Herald's own, not the contract's
PATTERNS_AND_ENUMS = {"event_id", "notification_id", "tenant_id", "event_type", "channel", "recipient_kind"}


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    w = Warehouse(f"chdb://{tmp_path}/wh")
    try:
        migrate(w)
        yield w
    finally:
        w.close()


def events_columns(warehouse: Warehouse) -> dict[str, str]:
    rows = warehouse.rows(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = 'events'"
    )
    return {str(name): str(kind) for name, kind in rows}


def test_every_bound_lies_inside_the_type_of_its_events_column(warehouse: Warehouse) -> None:
    """A value the contract accepts is one the column can hold: integers and timestamps by the range
    of the column's type, free text in a String column."""
    columns = events_columns(warehouse)
    for field, bound in {**NUMBER_BOUNDS, **TIME_BOUNDS}.items():
        column_type = columns[EVENT_COLUMN[field]]
        held = column_range(column_type)
        assert held is not None, (field, column_type)
        assert held.minimum <= bound.minimum and bound.maximum <= held.maximum, (field, column_type, bound)
    for path in TEXT_BOUNDS:
        column_type = columns[EVENT_COLUMN[path]]
        assert column_type in ("String", "LowCardinality(String)"), (path, column_type)


def test_every_numeric_column_fed_from_the_contract_has_a_bound(warehouse: Warehouse) -> None:
    """A new numeric or time column filled from an event fails here until the contract bounds it; every
    other column fed from the contract is free text with a length bound, an id, an enum or a boolean."""
    columns = events_columns(warehouse)
    assert set(columns) == set(EVENT_COLUMNS)
    from_contract = {name: kind for name, kind in columns.items() if name not in LINEAGE}
    ranged = {name for name, kind in from_contract.items() if column_range(kind) is not None}
    assert ranged == {EVENT_COLUMN[field] for field in (*NUMBER_BOUNDS, *TIME_BOUNDS)}
    unranged = set(from_contract) - ranged - {name for name, kind in from_contract.items() if kind == "Bool"}
    assert unranged == {EVENT_COLUMN[path] for path in TEXT_BOUNDS} | PATTERNS_AND_ENUMS


def event_at(edge: str) -> dict[str, Any]:
    """A FAILED event with every bounded field at its ``edge`` ("maximum" or "minimum"); timestamps at
    the contract's own edges (the earliest, or occurred_at = now)."""
    at = NOW if edge == "maximum" else EARLIEST
    event: dict[str, Any] = {
        "event_id": f"at-{edge}", "event_type": "FAILED", "occurred_at": at, "sent_at": at,
        "tenant_id": "acme", "notification_id": f"n-{edge}", "channel": "EMAIL",
        "recipient": {"kind": "CUSTOMER"}, "error": {"retryable": True},
    }  # fmt: skip
    for field, bound in NUMBER_BOUNDS.items():
        event[field] = bound.maximum if edge == "maximum" else bound.minimum
    for path, bound in TEXT_BOUNDS.items():
        text = "é" * bound.maximum if edge == "maximum" else ""  # two bytes each: the longest in bytes
        record, _, name = path.rpartition(".")
        (event[record] if record else event)[name] = text
    event["error"]["error_class"] = event["error"]["error_class"] or "timeout"  # required in the record
    event["recipient"]["id"] = event["recipient"]["id"] or "r"
    return event


@pytest.mark.parametrize("edge", ["maximum", "minimum"])
def test_an_event_at_every_bound_is_written_and_read_back_unchanged(warehouse: Warehouse, edge: str) -> None:
    """The extremes the contract accepts go through the events table and its materialized views."""
    event = event_at(edge)
    assert contract_violations(event, NOW) == []
    row = event_row(event, "lifecycle", 0, 0, NOW)
    warehouse.insert("events", [row], EVENT_COLUMNS)
    bounded = sorted(set(EVENT_COLUMN.values()))
    (stored,) = warehouse.rows(f"SELECT {', '.join(bounded)} FROM events")
    expected = dict(zip(EVENT_COLUMNS, row, strict=True))
    for column, value in zip(bounded, stored, strict=True):
        naive = isinstance(value, datetime) and value.tzinfo is None  # the engine answers in UTC
        assert (value.replace(tzinfo=UTC) if naive else value) == expected[column], column
    assert warehouse.rows("SELECT count() FROM delivery_minute") == [(1,)]
