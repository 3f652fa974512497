"""Row mapping, insert splitting and tokens of the warehouse writer; the read-only SQL guard."""

from __future__ import annotations

from datetime import UTC, datetime

from projections.migrate import discover
from projections.rows import EVENT_COLUMNS, event_row
from projections.sql_reader import statement_problem
from projections.writer import _atomic_runs, _token
from streams.ingest import SourceMessage

T = "topic"
NOV = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
DEC = datetime(2026, 12, 1, 0, 1, tzinfo=UTC)


def item(partition: int, offset: int, at: datetime) -> tuple[SourceMessage, dict[str, object]]:
    return SourceMessage(T, partition, offset, None, b""), {"occurred_at": at}


def test_event_row_follows_the_column_order_and_fills_absent_values() -> None:
    """Absent strings become '' and absent numbers NULL, nested recipient and error are flattened."""
    event = {
        "event_id": "e",
        "event_type": "BOUNCED",
        "occurred_at": NOV,
        "tenant_id": "t",
        "notification_id": "n",
        "channel": "EMAIL",
        "recipient": {"id": "r", "kind": "CUSTOMER", "tier": "gold"},
        "error": {"error_class": "mailbox_full", "code": "552", "message": None, "retryable": False},
    }
    row = dict(zip(EVENT_COLUMNS, event_row(event, T, 3, 9, NOV), strict=True))
    assert row["recipient_tier"] == "gold" and row["recipient_role"] == ""
    assert row["error_class"] == "mailbox_full" and row["error_code"] == "552"
    assert row["template_version"] is None and row["_partition"] == 3 and row["_offset"] == 9


def test_batch_within_one_month_is_one_insert() -> None:
    """Rows of one month from several partitions go in a single atomic insert."""
    runs = _atomic_runs([item(0, 1, NOV), item(1, 5, NOV), item(0, 2, NOV)])
    assert len(runs) == 1


def test_batch_across_months_is_split_into_offset_ordered_single_month_runs() -> None:
    """Each insert touches one month and each partition's runs stay in offset order."""
    runs = _atomic_runs([item(0, 1, NOV), item(0, 2, DEC), item(0, 3, NOV), item(1, 7, DEC)])
    shapes = [[(m.partition, m.offset) for m, _ in run] for run in runs]
    assert shapes == [[(0, 1)], [(0, 2)], [(0, 3)], [(1, 7)]]
    for run in runs:
        assert len({ev["occurred_at"].month for _, ev in run}) == 1  # type: ignore[attr-defined]


def test_insert_token_is_deterministic_in_the_offset_ranges() -> None:
    """The same rows give the same token; another range gives another."""
    run = [item(0, 1, NOV), item(0, 2, NOV), item(1, 4, NOV)]
    assert _token("events", run) == _token("events", list(run)) == "events|topic/0/1-2,topic/1/4-4"
    assert _token("events", run[:2]) != _token("events", run)


def test_migrations_are_numbered_and_split_into_statements() -> None:
    """Migration files are discovered in order and every statement is idempotent: CREATE and ALTER with
    IF NOT EXISTS, DROP (of a materialized view the migration then creates again) with IF EXISTS."""
    migrations = discover()
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    for m in migrations:
        statements = m.statements()
        for i, statement in enumerate(statements):
            guard = "IF EXISTS" if statement.startswith("DROP ") else "IF NOT EXISTS"
            assert guard in statement, statement[:60]
            if statement.startswith("DROP "):
                name = statement.split()[-1]
                assert any(f"IF NOT EXISTS {name} " in later for later in statements[i + 1 :]), statement
            if statement.startswith("ALTER "):
                clauses = statement.count("ADD COLUMN")
                assert clauses == statement.count("ADD COLUMN IF NOT EXISTS") > 0, statement[:60]


def test_statement_check_allows_selects_and_refuses_the_rest() -> None:
    """On the engine's canonical form: SELECT and WITH pass, quoted words do not count, the rest fails."""
    assert statement_problem("WITH x AS (SELECT 1) SELECT * FROM x") is None
    assert statement_problem("SELECT 'INSERT INTO t' AS s") is None
    assert statement_problem("SELECT * FROM events INTO OUTFILE '/tmp/x'") is not None
    assert statement_problem("INSERT INTO events VALUES (1)") is not None
    assert statement_problem("KILL QUERY WHERE 1") is not None
    assert statement_problem("SELECT 1 SETTINGS readonly = 0") is not None
    assert statement_problem("SELECT `file`('/etc/passwd')") is not None
