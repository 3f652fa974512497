"""The lineage of the migrations: which objects are derived from the log, and in which order they drop."""

from __future__ import annotations

import doctest
import shutil
from pathlib import Path

import pytest

import projections.lineage
from projections.lineage import (
    Kind,
    LineageError,
    catalog,
    derived_objects,
    parse_statement,
    statements_of,
)
from projections.migrate import MIGRATIONS_DIR, discover

DERIVED = {
    "events",
    "ingest_batches",
    "ingest_intents",
    *("delivery_minute", "delivery_minute_mv", "delivery_hour", "delivery_hour_mv"),
    *("delivery_cohort_minute", "delivery_cohort_minute_mv"),
    *("experiment_variant_minute", "experiment_variant_minute_mv"),
    *("engagement_profiles", "engagement_profiles_mv"),
    *("delivery_rates_hourly", "engagement_by_send_minute", "latency_minute"),
}

NEW_ROLLUP = """
-- A rollup added later: per day and tenant, kept like the others by a materialized view on events.
CREATE TABLE IF NOT EXISTS delivery_day
(
    day       Date,
    tenant_id LowCardinality(String),
    delivered UInt64
)
ENGINE = SummingMergeTree
ORDER BY (tenant_id, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS delivery_day_mv TO delivery_day AS
SELECT toDate(occurred_at) AS day, tenant_id, countIf(event_type = 'DELIVERED') AS delivered
FROM events
GROUP BY day, tenant_id;

CREATE VIEW IF NOT EXISTS delivery_week AS
SELECT toMonday(day) AS week, tenant_id, sum(delivered) AS delivered
FROM delivery_day
GROUP BY week, tenant_id;

-- Kept from the alerts the monitor writes: not derived from the lifecycle log.
CREATE TABLE IF NOT EXISTS alerts_daily (day Date, alerts UInt64) ENGINE = SummingMergeTree ORDER BY day;

CREATE MATERIALIZED VIEW IF NOT EXISTS alerts_daily_mv TO alerts_daily AS
SELECT toDate(first_seen) AS day, count() AS alerts FROM alerts GROUP BY day;
"""


def test_module_doctests_pass() -> None:
    """The examples in the lineage module's docstrings hold."""
    assert doctest.testmod(projections.lineage).failed == 0


def test_the_migrations_derive_exactly_the_ingest_tables_their_rollups_and_the_views_over_them() -> None:
    """The ingest tables, every rollup with its materialized view and every view over them."""
    found = derived_objects(discover())
    assert {o.name for o in found} == DERIVED
    assert len(found) == len(DERIVED)


def test_tables_other_components_write_are_not_derived() -> None:
    """Alerts, experiment results, segments, definition changes and the ledger stay out of a replay."""
    names = {o.name for o in derived_objects(discover())}
    written_elsewhere = {"alerts", "alerts_current", "experiment_results", "segment_sizes", "segment_members"}
    assert not names & {*written_elsewhere, "definition_changes", "schema_migrations"}


def test_every_object_drops_before_whatever_it_reads_or_writes() -> None:
    """A view or materialized view comes before the tables it reads or writes; views before tables."""
    found = derived_objects(discover())
    position = {o.name: i for i, o in enumerate(found)}
    for obj in found:
        for other in {*obj.reads, *([obj.target] if obj.target else [])}:
            assert position[obj.name] < position[other], (obj.name, other)
    kinds = [o.kind for o in found]
    assert kinds == sorted(kinds, key=[Kind.MATERIALIZED_VIEW, Kind.VIEW, Kind.TABLE].index)
    assert found[0].drop_statement.startswith("DROP VIEW IF EXISTS ")
    assert found[-1].drop_statement.startswith("DROP TABLE IF EXISTS ")


def test_materialized_views_name_their_table_and_the_last_definition_wins() -> None:
    """Each rollup's view writes to its table; 0005's redefinition of delivery_minute_mv replaces 0002's."""
    objects = catalog(statements_of(discover()))
    for name in ("delivery_minute", "delivery_hour", "engagement_profiles", "experiment_variant_minute"):
        view = objects[f"{name}_mv"]
        assert (view.kind, view.target, view.reads) == (Kind.MATERIALIZED_VIEW, name, frozenset({"events"}))
    select = objects["delivery_minute_mv"].select
    assert select is not None and "send_latency_digest" in select and select.startswith("SELECT")
    assert objects["alerts_current"].reads == frozenset({"alerts"})


def test_a_new_migration_with_a_materialized_view_on_events_is_derived_with_no_other_change(
    tmp_path: Path,
) -> None:
    """A rollup with its view and a view over it, added by a migration, join the replay; one fed from
    alerts does not."""
    for path in MIGRATIONS_DIR.glob("*.sql"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "0099_delivery_day.sql").write_text(NEW_ROLLUP)
    found = derived_objects(discover(tmp_path))
    assert {o.name for o in found} == DERIVED | {"delivery_day", "delivery_day_mv", "delivery_week"}
    names = [o.name for o in found]
    assert names.index("delivery_day_mv") < names.index("delivery_day") > names.index("delivery_week")
    assert names.index("delivery_day_mv") < names.index("events")


def test_reads_come_from_from_and_join_at_query_level_only() -> None:
    """Subqueries and joins count; function arguments, table functions, ARRAY JOIN and WITH names do not."""
    view = parse_statement(
        "CREATE VIEW IF NOT EXISTS v AS WITH recent AS (SELECT * FROM herald.events) "
        "SELECT extract(DAY FROM r.occurred_at), trim(BOTH ' ' FROM tag) FROM recent AS r, delivery_hour h "
        "ARRAY JOIN tags AS tag -- FROM commented_out\n"
        "INNER JOIN (SELECT id FROM alerts FINAL WHERE id IN (SELECT id FROM `segment_members`)) AS a "
        "ON a.id = r.event_id CROSS JOIN numbers(10) WHERE r.reason != 'FROM quoted'"
    )
    assert view.obj is not None
    assert view.obj.reads == frozenset({"events", "delivery_hour", "alerts", "segment_members"})


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("INSERT INTO events SELECT * FROM old_events", "only CREATE, DROP and ALTER TABLE"),
        (
            "CREATE MATERIALIZED VIEW IF NOT EXISTS m ENGINE = MergeTree ORDER BY k AS SELECT 1 FROM events",
            "TO",
        ),
        (
            "CREATE TABLE IF NOT EXISTS copy ENGINE = MergeTree ORDER BY k AS SELECT * FROM events",
            "column list",
        ),
        ("RENAME TABLE events TO old_events", "only CREATE, DROP and ALTER TABLE"),
        ("CREATE DICTIONARY d (k UInt64) PRIMARY KEY k SOURCE(NULL()) LAYOUT(FLAT()) LIFETIME(0)", "known"),
    ],
)
def test_statements_of_unknown_shape_are_refused_by_name(sql: str, why: str) -> None:
    """A statement the lineage cannot read fails loudly instead of leaving an object out of a replay."""
    with pytest.raises(LineageError, match=why):
        catalog([sql])


def test_an_alter_of_an_object_no_statement_created_is_refused() -> None:
    """ALTER TABLE names an object the migrations created earlier."""
    with pytest.raises(LineageError, match="no earlier statement created"):
        catalog(["ALTER TABLE events ADD COLUMN IF NOT EXISTS x UInt8"])


def test_modify_query_gives_a_materialized_view_new_reads() -> None:
    """ALTER TABLE … MODIFY QUERY replaces what a materialized view reads, keeping its target."""
    objects = catalog(
        [
            "CREATE TABLE IF NOT EXISTS a (k UInt8) ENGINE = MergeTree ORDER BY k",
            "CREATE TABLE IF NOT EXISTS b (k UInt8) ENGINE = MergeTree ORDER BY k",
            "CREATE TABLE IF NOT EXISTS t (k UInt8) ENGINE = MergeTree ORDER BY k",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS m TO t AS SELECT k FROM a",
            "ALTER TABLE m MODIFY QUERY SELECT k FROM b",
        ]
    )
    assert (objects["m"].reads, objects["m"].target) == (frozenset({"b"}), "t")
