"""What a scenario left behind, counted against what it sent: rows in events and in every table derived
from them (lost, duplicated), each rollup against the recount of its view's SELECT over all of events,
the dead-letter topic, batches without their completion marker, and (replayed.py) every derived table
before and after a replay of the log. Run with the workers stopped: the embedded warehouse is opened
directly."""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from projections.fingerprint import Difference, recount_rollups
from projections.warehouse import Warehouse
from streams.sink import source_message
from tests.chaos.install import Installation
from tests.chaos.replayed import Replayed, replay_and_compare
from tests.chaos.traffic import Traffic

SLOW_TABLE, SLOW_VIEW = "chaos_slow", "chaos_slow_mv"
RECOUNT_LIMIT = 10_000  # differing keys read back per rollup: enough to count them, not to list them
SHOWN = 5  # differences printed per table


@dataclass
class TableCount:
    """One table: rows, and how it compares with what must be in it.

    For events, ``lost`` counts sent event ids missing and ``duplicated`` rows beyond one per id. For a
    rollup, they count cells (key x exact column) below and above the recount from events. For the slow
    view's table, events per tenant missing and counted twice."""

    table: str
    rows: int
    lost: int | None = 0  # None: nothing to compare with (ingest_batches: batches are cut anywhere)
    duplicated: int | None = 0
    recount: str = "-"  # "equal", "N keys differ", "-" (no recount: not a rollup)
    # "equal"; "equal* (x %)": the same but for t-digest quantiles moved by merge order, by at most x;
    # "differs"; "-": not rebuilt by the replay
    replay: str = "-"
    differences: list[str] = field(default_factory=list)


@dataclass
class DeadLetters:
    expected: int  # bad messages sent
    letters: int  # messages on the dead-letter topic
    once: int  # bad messages found exactly once
    twice: int  # extra copies of bad messages
    missing: int  # bad messages not on the topic
    unexpected: int  # letters that are no bad message sent (a valid event refused)
    by_stage: dict[str, int] = field(default_factory=dict)  # stage/class -> letters


@dataclass
class Measurement:
    tables: list[TableCount]
    dead_letters: DeadLetters
    unexpected_rows: int  # rows whose event id was never sent as a valid event (poison that landed)
    unexpected_ids: list[str]
    unmarked: int  # rows past their partition's last completion marker
    replayed_messages: int
    replay_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cells(table: str, differences: tuple[Difference, ...]) -> TableCount:
    """A rollup's differing cells as lost (stored below the recount) and duplicated (above).

    >>> d = (Difference(("acme",), "sent", 5, 6), Difference(("acme",), "opened", 2, 1))
    >>> c = cells("delivery_minute", d)
    >>> (c.lost, c.duplicated, c.recount)
    (1, 1, '1 keys differ')
    """
    lost = duplicated = 0
    for d in differences:
        try:
            above = d.stored > d.recounted
        except TypeError:  # not ordered (a missing side of the join): a difference all the same
            above = d.recounted is None
        if above:
            duplicated += 1
        else:
            lost += 1
    keys = len({d.key for d in differences})
    shown = [f"{d.key} {d.column}: stored {d.stored}, recount {d.recounted}" for d in differences[:SHOWN]]
    return TableCount(table, 0, lost, duplicated, f"{keys} keys differ" if keys else "equal", "-", shown)


Letter = tuple[bytes, dict[str, str]]


def read_dead_letters(bootstrap: str, topic: str, logger: logging.Logger) -> list[Letter]:
    """Every message on ``topic`` up to its end now: (value, headers)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "chaos-dead-letters", "enable.auto.commit": False,
         "logger": logger}
    )  # fmt: skip
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        ends = {}
        for p in partitions:
            ends[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions if ends[p] > 0])
        remaining = {p for p in partitions if ends[p] > 0}
        out: list[Letter] = []
        deadline = time.monotonic() + 120
        while remaining and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=1.0):
                if m.error() is not None:
                    continue
                msg = source_message(m)
                out.append((msg.value, {k: v.decode(errors="replace") for k, v in msg.headers}))
                if msg.offset >= ends[msg.partition] - 1:
                    remaining.discard(msg.partition)
        return out
    finally:
        consumer.close()


def count_dead_letters(letters: list[Letter], sent: Counter[bytes]) -> DeadLetters:
    got = Counter(value for value, _ in letters)
    stages = Counter(f"{h.get('herald.stage')}/{h.get('herald.error.class')}" for _, h in letters)
    return DeadLetters(
        expected=sum(sent.values()),
        letters=len(letters),
        once=sum(1 for v in sent if got[v] >= 1),
        twice=sum(max(0, got[v] - sent[v]) for v in sent),
        missing=sum(max(0, sent[v] - got[v]) for v in sent),
        unexpected=sum(n for v, n in got.items() if v not in sent),
        by_stage=dict(sorted(stages.items())),
    )


def count_events(warehouse: Warehouse, expected: set[str]) -> tuple[TableCount, list[str]]:
    ((rows, unique),) = warehouse.rows("SELECT count(), uniqExact(event_id) FROM events")
    landed = {str(r[0]) for r in warehouse.rows("SELECT DISTINCT event_id FROM events")}
    missing = sorted(expected - landed)
    unexpected = sorted(landed - expected)
    table = TableCount("events", int(rows), len(missing), int(rows) - int(unique))
    table.differences = [f"missing {i}" for i in missing[:SHOWN]]
    dupes = warehouse.rows(
        "SELECT event_id, count() AS n FROM events GROUP BY event_id HAVING n > 1 ORDER BY event_id LIMIT 5"
    )
    table.differences += [f"{e} x{n}" for e, n in dupes]
    return table, unexpected


def count_slow_view(warehouse: Warehouse) -> TableCount | None:
    """The slow view's table counts events per tenant: compared with events itself."""
    if not warehouse.rows(f"EXISTS TABLE {SLOW_TABLE}")[0][0]:
        return None
    rows = warehouse.rows(
        "SELECT tenant_id, e.n, s.n FROM (SELECT tenant_id, count() AS n FROM events GROUP BY tenant_id) "
        f"AS e FULL OUTER JOIN (SELECT tenant_id, sum(n) AS n FROM {SLOW_TABLE} GROUP BY tenant_id) AS s "
        "USING (tenant_id) ORDER BY tenant_id"
    )
    table = TableCount(SLOW_TABLE, int(warehouse.scalar(f"SELECT sum(n) FROM {SLOW_TABLE}") or 0))
    differing = [(t, int(e), int(s)) for t, e, s in rows if e != s]
    table.lost = sum(max(0, e - s) for _, e, s in differing)
    table.duplicated = sum(max(0, s - e) for _, e, s in differing)
    table.recount = f"{len(differing)} keys differ" if differing else "equal"
    table.differences = [f"{t}: stored {s}, events {e}" for t, e, s in differing[:SHOWN]]
    return table


def count_unmarked(warehouse: Warehouse, topic: str) -> int:
    """Rows past the last completion marker of their partition: a batch not known complete."""
    return int(
        warehouse.scalar(
            "SELECT count() FROM events AS e LEFT JOIN (SELECT partition, max(last_offset) AS upto "
            "FROM ingest_batches WHERE topic = {t:String} GROUP BY partition) AS m "
            "ON e._partition = m.partition WHERE e._topic = {t:String} "
            "AND (m.partition IS NULL OR e._offset > m.upto) SETTINGS join_use_nulls = 1",
            {"t": topic},
        )
    )


def measure(install: Installation, traffic: Traffic, replay: bool = True) -> Measurement:
    """Count everything, then replay the log and compare (the workers must be stopped). When a count is
    off, the warehouse as the scenario left it is copied to ``warehouse-as-left`` in the installation's
    data dir first: the replay rebuilds the tables that show the fault. Without ``replay`` (ingest
    stalled), only the counts."""
    settings = install.settings
    letters = read_dead_letters(install.herald.bootstrap, settings.topics.dead_letter, install.kafka_log)
    dead = count_dead_letters(letters, traffic.invalid)
    warehouse = Warehouse(settings.warehouse)
    try:
        events, unexpected = count_events(warehouse, traffic.expected_ids)
        tables = [events] + [
            cells(r.table, r.differences) for r in recount_rollups(warehouse, limit=RECOUNT_LIMIT)
        ]
        for table in tables[1:]:  # stored rows, until the fingerprint gives them as merged
            table.rows = int(warehouse.scalar(f"SELECT count() FROM {table.table}"))
        slow = count_slow_view(warehouse)
        unmarked = count_unmarked(warehouse, settings.topics.lifecycle)
        markers = int(warehouse.scalar("SELECT count() FROM ingest_batches"))
    finally:
        warehouse.close()
    counted = [*tables, *([slow] if slow else [])]
    if (
        unexpected
        or unmarked
        or any(t.lost or t.duplicated or t.recount not in ("-", "equal") for t in counted)
    ):
        keep_as_left(Path(urlsplit(settings.warehouse).path))
    replayed = Replayed({}, 0, 0.0)
    warehouse = Warehouse(settings.warehouse)
    try:
        if replay:
            # The slow view is not in the migrations' lineage: the replay would leave it feeding its
            # table a second time. It was counted above; it goes before the replay.
            replayed = replay_and_compare(
                settings, install.herald.bootstrap, warehouse, drop=(SLOW_VIEW, SLOW_TABLE)
            )
    finally:
        warehouse.close()
    known = {t.table for t in tables}
    tables += [TableCount(name, 0, None, None) for name in sorted(replayed.tables) if name not in known]
    if not replay:
        tables.append(TableCount("ingest_batches", markers, None, None, "-", "not run"))
    for table in tables:
        if table.table in replayed.tables:
            rows, table.replay, notes = replayed.tables[table.table]
            table.differences += notes
            if table.table != "events":  # rollups: rows once merged; ingest_batches: its markers
                table.rows = markers if table.table == "ingest_batches" else rows
    if slow is not None:
        tables.append(slow)
    return Measurement(
        tables, dead, len(unexpected), unexpected[:20], unmarked, replayed.messages, replayed.seconds
    )


def keep_as_left(path: Path) -> None:
    """A copy of the closed embedded warehouse (data and its engine configuration) beside it, which
    ``Warehouse("chdb://<copy>")`` opens. Its symbolic links (data/ and metadata/ into store/) are
    relative and stay links: the engine will not load a database whose links became directories."""
    for source in (path, path.with_name(path.name + ".config")):
        if source.exists():
            target = source.with_name(source.name.replace("warehouse", "warehouse-as-left"))
            shutil.copytree(source, target, symlinks=True)
