"""Fingerprints of the tables derived from the log, and recounts of the rollups from their source:
what shows that a replay gave identical tables and that every rollup counted every event once.

A fingerprint is ``(rows, checksum)`` of a table's canonical form (projections/canonical.py): the sum of
a hash of every row after the merges its engine will do, so it does not depend on how the rows are
split into parts or how far they are merged. Plain MergeTree tables hash every row; Summing and
Aggregating rollups hash one merged row per sorting key, their sums summed and their aggregate states
merged and finalised. The engine, sorting key and column types come from system.tables and
system.columns, so a new rollup needs no change here.

Columns and tables that honestly differ between a live run and a replay of the same log:

- ``events.ingested_at`` is the wall-clock time of the write, so it is left out of the hash
  (``excluded``; should it become the message's log timestamp, drop it from ``EXCLUDED``).
- ``ingest_batches`` has a row per partition per applied batch, and batches are cut where the
  consumer's polls happened to end: the live worker's are not the replay's. Its fingerprint is what
  the batching cannot change, the dead letters and duplicates per topic and partition
  (``regrouped``, and its batch boundaries, row counts, newest times, worker and write time
  ``excluded``).
- t-digest sketches depend on the order their parts were merged in: they are hashed as their exact
  count and their quantiles rounded to ``digest_digits`` significant digits (see canonical.py for what
  that precision covers, and for picks such as ``anyLast``).

``recount_rollups`` recounts each rollup kept by a materialized view: the view's own SELECT over the
whole of its source (``events``) at once, compared with the rollup in one query, for the columns
whose value is exact (counts, sums, exact sets, maxima); sketches and picks are listed as skipped.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from herald.errors import WarehouseError
from projections.canonical import Column, TableShape, checksum_select, recount_select, split_top_level
from projections.lineage import HasStatements, Kind, derived_objects
from projections.migrate import discover
from projections.warehouse import Warehouse

EXCLUDED: Mapping[str, Collection[str]] = {
    "events": ("ingested_at",),
    "ingest_batches": (
        "first_offset",
        "last_offset",
        "rows",
        "worker",
        "written_at",
        "max_occurred_at",
        "max_log_time",
    ),
}
REGROUPED: Mapping[str, Sequence[str]] = {"ingest_batches": ("topic", "partition")}
UNCOMPARED = frozenset({"ingest_intents"})
"""Derived tables with no fingerprint: the writer's plans follow the consumer's batching and nothing else
(what they planned is in events and the markers)."""


@dataclass(frozen=True)
class Fingerprint:
    rows: int
    checksum: int


def table_shapes(warehouse: Warehouse, names: Iterable[str]) -> dict[str, TableShape]:
    """The engine, sorting key and columns of each named table in Herald's database."""
    wanted = sorted(set(names))
    params = {"names": wanted}
    columns: dict[str, list[Column]] = {}
    for table, name, type_ in warehouse.rows(
        "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() "
        "AND table IN {names:Array(String)} ORDER BY table, position",
        params,
    ):
        columns.setdefault(str(table), []).append(Column(str(name), str(type_)))
    shapes = {
        str(name): TableShape(
            str(name), str(engine), str(full), tuple(split_top_level(str(key))), tuple(columns.get(name, ()))
        )
        for name, engine, full, key in warehouse.rows(
            "SELECT name, engine, engine_full, sorting_key FROM system.tables "
            "WHERE database = currentDatabase() AND name IN {names:Array(String)}",
            params,
        )
    }
    missing = [n for n in wanted if n not in shapes]
    if missing:
        raise WarehouseError(f"no table {', '.join(missing)} in the warehouse")
    return shapes


def derived_tables(migrations: Iterable[HasStatements] | None = None) -> list[str]:
    """The tables derived from the log (the lineage's tables, without its views)."""
    found = derived_objects(discover() if migrations is None else migrations)
    return sorted(o.name for o in found if o.kind is Kind.TABLE)


def fingerprints(
    warehouse: Warehouse,
    tables: Iterable[str] = (),
    *,
    migrations: Iterable[HasStatements] | None = None,
    excluded: Mapping[str, Collection[str]] = EXCLUDED,
    regrouped: Mapping[str, Sequence[str]] = REGROUPED,
    digest_digits: int = 2,
) -> dict[str, Fingerprint]:
    """A fingerprint of every table derived from the log and of each of ``tables``, by name."""
    names = sorted({*derived_tables(migrations), *tables} - UNCOMPARED)
    out = {}
    for name, shape in sorted(table_shapes(warehouse, names).items()):
        sql = checksum_select(shape, excluded.get(name, ()), regrouped.get(name), digest_digits)
        ((rows, checksum),) = warehouse.rows(sql)
        out[name] = Fingerprint(int(rows), int(checksum))
    return out


@dataclass(frozen=True)
class Difference:
    key: tuple[Any, ...]
    column: str
    recounted: Any
    stored: Any


@dataclass(frozen=True)
class RollupRecount:
    """One rollup against the recount of its materialized view's SELECT (at most ``limit`` differing
    keys are read back)."""

    table: str
    view: str
    compared: tuple[str, ...]
    skipped: tuple[str, ...]
    differences: tuple[Difference, ...]

    @property
    def agrees(self) -> bool:
        return not self.differences


def recount_rollups(
    warehouse: Warehouse, migrations: Iterable[HasStatements] | None = None, limit: int = 20
) -> list[RollupRecount]:
    """Each rollup derived from the log (a Summing or Aggregating table a materialized view keeps)
    against its view's SELECT run over the whole source, column by exact column."""
    views = [
        o
        for o in derived_objects(discover() if migrations is None else migrations)
        if o.kind is Kind.MATERIALIZED_VIEW and o.target is not None and o.select is not None
    ]
    shapes = table_shapes(warehouse, [v.target for v in views if v.target is not None])
    out = []
    for view in sorted(views, key=lambda v: v.name):
        assert view.target is not None and view.select is not None
        shape = shapes[view.target]
        if not shape.is_rollup:
            continue  # a view that copies rows: the table's fingerprint covers it
        recount = recount_select(view.select, shape, limit)
        width = len(recount.keys)
        found = [
            Difference(tuple(row[:width]), column, row[width + 2 * i], row[width + 2 * i + 1])
            for row in warehouse.rows(recount.sql)
            for i, column in enumerate(recount.compared)
            if row[width + 2 * i] != row[width + 2 * i + 1]
        ]
        out.append(RollupRecount(shape.name, view.name, recount.compared, recount.skipped, tuple(found)))
    return out
