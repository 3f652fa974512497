"""Row mapping, runs and tokens of the warehouse writer; migrations; the read-only SQL check."""

from __future__ import annotations

from datetime import UTC, datetime

from projections.migrate import discover
from projections.rows import EVENT_COLUMNS, event_row
from projections.sql_reader import statement_problem
from projections.writer import Run, runs_of
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


def test_a_partitions_rows_of_one_month_are_one_run() -> None:
    """Rows of one partition in one month are one insert; each partition has runs of its own."""
    runs = runs_of([item(0, 1, NOV), item(1, 5, NOV), item(0, 2, NOV)])
    assert [(r.partition, r.first, r.last) for r in runs] == [(0, 1, 2), (1, 5, 5)]


def test_a_partition_crossing_months_is_split_into_offset_ordered_single_month_runs() -> None:
    """Each run touches one month and each partition's runs stay in offset order."""
    runs = runs_of([item(0, 1, NOV), item(0, 2, DEC), item(0, 3, NOV), item(1, 7, DEC)])
    shapes = [[(m.partition, m.offset) for m, _ in run.items] for run in runs]
    assert shapes == [[(0, 1)], [(0, 2)], [(0, 3)], [(1, 7)]]
    for run in runs:
        assert len({ev["occurred_at"].month for _, ev in run.items}) == 1  # type: ignore[attr-defined]


def test_a_runs_token_is_its_partition_and_first_offset_only() -> None:
    """Two runs starting at the same offset are one block to the engine, whatever their length: that is
    what drops a paused worker's late run once the new owner wrote its own (projections/writer.py)."""
    long_run = Run(T, 0, [item(0, 4, NOV), item(0, 5, NOV), item(0, 6, NOV)])
    short_run = Run(T, 0, long_run.items[:1])
    assert long_run.token == short_run.token == "events|topic/0/4"
    assert Run(T, 1, long_run.items).token != long_run.token
    assert Run(T, 0, long_run.items[1:]).token == "events|topic/0/5"


def test_migrations_are_numbered_and_split_into_statements() -> None:
    """Migration files are discovered in order and every statement is idempotent: CREATE and ALTER with
    IF NOT EXISTS, DROP (of a materialized view the migration then creates again) with IF EXISTS."""
    migrations = discover()
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    for m in migrations:
        statements = m.statements()
        for i, statement in enumerate(statements):
            if " MODIFY SETTING " in statement:
                continue  # sets a value: idempotent as it is
            guard = "IF EXISTS" if statement.startswith("DROP ") else "IF NOT EXISTS"
            assert guard in statement, statement[:60]
            if statement.startswith("DROP "):
                name = statement.split()[-1]
                assert any(f"IF NOT EXISTS {name} " in later for later in statements[i + 1 :]), statement
            if statement.startswith("ALTER "):
                clauses = statement.count(" ADD ")
                assert clauses == statement.count("IF NOT EXISTS") > 0, statement[:60]


def test_statement_check_allows_selects_and_refuses_the_rest() -> None:
    """On the engine's canonical form: SELECT and WITH pass, quoted words do not count, the rest fails."""
    assert statement_problem("WITH x AS (SELECT 1) SELECT * FROM x") is None
    assert statement_problem("SELECT 'INSERT INTO t' AS s") is None
    assert statement_problem("SELECT * FROM events INTO OUTFILE '/tmp/x'") is not None
    assert statement_problem("INSERT INTO events VALUES (1)") is not None
    assert statement_problem("KILL QUERY WHERE 1") is not None
    assert statement_problem("SELECT 1 SETTINGS readonly = 0") is not None
    assert statement_problem("SELECT `file`('/etc/passwd')") is not None
