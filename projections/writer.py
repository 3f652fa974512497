"""The ingest projection's writer: applies one decided batch to the warehouse, exactly once.

Why a redelivered batch never double counts:
1. Rows carry their log position (_topic, _partition, _offset), and a batch that refused messages
   (dead letters, duplicates) leaves a row in ``ingest_batches``. On (re)assignment the worker
   reads back the highest applied offset per partition (``applied_upto``) and skips everything at
   or below it (streams/ingest.py). This holds whatever the new batch boundaries are after a crash.
2. For that read-back to be exact, every insert must be all-or-nothing and each partition's rows must
   land in offset order. An INSERT that touches one table partition (one month) writes one part
   atomically, so a batch whose rows span months is split into per-partition runs of one month each,
   written in offset order.
3. Each insert carries a deterministic ``insert_deduplication_token`` built from the offset range, so
   retrying an insert whose acknowledgement was lost is a no-op on the server.
The batch row is written after the event rows: a crash between the two leaves the events' own
offsets to mark the position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from projections.rows import BATCH_COLUMNS, EVENT_COLUMNS, event_row, month_of
from projections.warehouse import Warehouse
from streams.ingest import IngestResult, SourceMessage, TopicPartition


class IngestWriter:
    def __init__(
        self, warehouse: Warehouse, worker: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.warehouse = warehouse
        self.worker = worker
        self._clock = clock

    def applied_upto(self, topic: str, partitions: Iterable[int]) -> dict[TopicPartition, int]:
        """Highest offset per partition whose effect is already in the warehouse (-1 when none)."""
        parts = sorted(set(partitions))
        out = {(topic, p): -1 for p in parts}
        if not parts:
            return out
        params = {"topic": topic, "parts": parts}
        for p, last in self.warehouse.rows(
            "SELECT partition, max(last_offset) FROM ingest_batches "
            "WHERE topic = {topic:String} AND partition IN {parts:Array(UInt16)} GROUP BY partition",
            params,
        ) + self.warehouse.rows(
            "SELECT _partition, max(_offset) FROM events "
            "WHERE _topic = {topic:String} AND _partition IN {parts:Array(UInt16)} GROUP BY _partition",
            params,
        ):
            out[(topic, int(p))] = max(out[(topic, int(p))], int(last))
        return out

    def seen_event_ids(self, topic: str, partition: int, horizon_s: int, limit: int) -> list[tuple[str, int]]:
        """(event_id, occurred_ms) of the partition's rows within the dedup horizon, newest first."""
        where = "_topic = {topic:String} AND _partition = {p:UInt16}"
        rows = self.warehouse.rows(
            f"SELECT event_id, toUnixTimestamp64Milli(occurred_at) FROM events WHERE {where} "
            f"AND occurred_at >= (SELECT max(occurred_at) FROM events WHERE {where}) "
            "- INTERVAL {h:UInt32} SECOND "
            "ORDER BY occurred_at DESC LIMIT {limit:UInt32}",
            {"topic": topic, "p": partition, "h": horizon_s, "limit": limit},
        )
        return [(str(e), int(ms)) for e, ms in rows]

    def write(self, result: IngestResult) -> None:
        """Apply a batch: its event rows, then an ingest_batches row for each partition whose part of
        the batch refused something (dead letters or duplicates).

        A partition whose messages were all written needs no batch row: its last offset is the
        offset of its last event row, which ``applied_upto`` reads. Skipping that second insert
        matters because every chDB insert has a fixed cost of tens of milliseconds.
        """
        now = self._clock()
        for run in _atomic_runs(result.accepted):
            rows = [event_row(ev, m.topic, m.partition, m.offset, now) for m, ev in run]
            self.warehouse.insert("events", rows, EVENT_COLUMNS, dedup_token=_token("events", run))
        batch_rows = [
            (tp[0], tp[1], pr.first_offset, pr.last_offset, pr.rows, pr.dead, pr.duplicates, self.worker, now)
            for tp, pr in sorted(result.progress.items())
            if pr.dead or pr.duplicates
        ]
        if batch_rows:
            token = "batches|" + ",".join(f"{t}/{p}/{f}-{last}" for t, p, f, last, *_ in batch_rows)
            self.warehouse.insert("ingest_batches", batch_rows, BATCH_COLUMNS, dedup_token=token)


Accepted = Sequence[tuple[SourceMessage, dict[str, Any]]]


def _atomic_runs(accepted: Accepted) -> list[Accepted]:
    """Split rows into inserts that each touch one month, keeping every partition in offset order."""
    if not accepted:
        return []
    months = {month_of(ev["occurred_at"]) for _, ev in accepted}
    if len(months) == 1:
        return [accepted]
    by_partition: dict[TopicPartition, list[tuple[SourceMessage, dict[str, Any]]]] = {}
    for item in accepted:
        by_partition.setdefault((item[0].topic, item[0].partition), []).append(item)
    runs: list[Accepted] = []
    for items in by_partition.values():
        run = [items[0]]
        for item in items[1:]:
            if month_of(item[1]["occurred_at"]) != month_of(run[-1][1]["occurred_at"]):
                runs.append(run)
                run = []
            run.append(item)
        runs.append(run)
    return runs


def _token(table: str, run: Accepted) -> str:
    ranges: dict[TopicPartition, list[int]] = {}
    for msg, _ in run:
        r = ranges.setdefault((msg.topic, msg.partition), [msg.offset, msg.offset])
        r[1] = msg.offset
    return f"{table}|" + ",".join(f"{t}/{p}/{a}-{b}" for (t, p), (a, b) in sorted(ranges.items()))
