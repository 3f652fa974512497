"""The ingest projection's writer: applies one decided batch to the warehouse, exactly once in events
and in every table a materialized view derives from it.

Runs. A batch's accepted rows are written partition by partition in *runs*: the consecutive rows of one
Kafka partition in one month (so one part of ``events``, whose table partitions are months). A run's
insert carries the token ``events|<topic>/<partition>/<offset of its first row>`` and
``deduplicate_blocks_in_dependent_materialized_views = 1``, and every table a view writes keeps a
deduplication window (migration 0007): two inserts of runs that start at the same offset are one block
to the engine, and the later one is dropped from ``events`` and from every view alike.

Markers. After all of a batch's runs, one ``ingest_batches`` row per partition records the batch's
offsets, counts, newest event time and log time. It is written last, so a marker means every table
has the batch; the alert monitor takes its watermark from the markers for that reason.

Why nothing is lost or counted twice:
1. A redelivered batch after a crash: ``applied_upto`` (the highest marker or event offset per
   partition) skips what is in; runs start where the warehouse stopped, so a re-formed run has the
   token of the one the crashed worker began.
2. A crash between a run's ``events`` part and its views' parts (the engine commits the events part
   first): rows past the last marker belong to a batch whose marker was never written. On
   (re)assignment the pipeline re-reads those offsets from the log, re-decides them (ingest is a
   function of the messages and of the dedup state as it was before them, streams/ingest.py) and
   writes the same runs again (``unmarked``, then ``write``): the parts that are there are dropped,
   the missing view parts written, and the marker follows.
3. A worker that lost its partitions while paused (a stop past its session, a stuck retry): before
   each insert the pipeline's ``fence`` proves the worker still owns the batch's partitions in its
   consumer group (streams/sink.py); a worker that cannot prove it writes nothing. One paused in the
   middle of an insert resumes with its run committed after the new owner's first run of that
   partition, which starts at the same offset: same token, so the later one is dropped. If the paused
   worker's run landed first instead, the new owner's check of its first run per partition taken over
   (``write(..., verify=...)``) sees other rows and resumes after them (``WriteOutcome.lost``).
4. A retried insert whose acknowledgement was lost is a no-op for the same reason as 3.
5. A run the engine refuses for its data (a value a column cannot hold) is bisected: the rows it
   accepts land in deterministic sub-runs, the refused ones come back as ``WriteOutcome.refused`` for
   the dead-letter topic with the engine's reason. A refusal after the ``events`` part landed (a view
   refused) is not bisected, that would write the events twice: it is raised, and the batch waits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from herald.errors import WarehouseError
from herald.faults import NO_FAULTS, Faults
from projections.rows import BATCH_COLUMNS, EVENT_COLUMNS, event_row, month_of
from projections.warehouse import Warehouse, WarehouseDataError
from streams.ingest import IngestResult, SourceMessage, TopicPartition, log_time_of

Accepted = Sequence[tuple[SourceMessage, dict[str, Any]]]
DEDUP_ACROSS_VIEWS = {"deduplicate_blocks_in_dependent_materialized_views": 1}
EPOCH = datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True)
class Run:
    """Consecutive accepted rows of one partition in one month: one insert, one block."""

    topic: str
    partition: int
    items: Accepted

    @property
    def first(self) -> int:
        return self.items[0][0].offset

    @property
    def last(self) -> int:
        return self.items[-1][0].offset

    @property
    def token(self) -> str:
        return f"events|{self.topic}/{self.partition}/{self.first}"


@dataclass
class WriteOutcome:
    """What a write could not do: partitions another writer's run took (the position to resume from)
    and rows the engine refused (with its reason), for the dead-letter topic."""

    lost: dict[TopicPartition, int] = field(default_factory=dict)
    refused: list[tuple[SourceMessage, str]] = field(default_factory=list)


def runs_of(accepted: Accepted) -> list[Run]:
    """Split a batch's accepted rows into runs, partition by partition in offset order.

    >>> def m(p, o, month):
    ...     return SourceMessage("t", p, o, None, b""), {"occurred_at": datetime(2026, month, 1)}
    >>> runs = runs_of([m(0, 1, 11), m(1, 5, 11), m(0, 2, 12), m(0, 3, 12)])
    >>> [(r.partition, r.first, r.last) for r in runs]
    [(0, 1, 1), (0, 2, 3), (1, 5, 5)]
    """
    by_partition: dict[TopicPartition, list[tuple[SourceMessage, dict[str, Any]]]] = {}
    for item in accepted:
        by_partition.setdefault((item[0].topic, item[0].partition), []).append(item)
    runs: list[Run] = []
    for (topic, partition), items in sorted(by_partition.items()):
        run = [items[0]]
        for item in items[1:]:
            if month_of(item[1]["occurred_at"]) != month_of(run[-1][1]["occurred_at"]):
                runs.append(Run(topic, partition, run))
                run = []
            run.append(item)
        runs.append(Run(topic, partition, run))
    return runs


def _no_fence() -> None:
    return None


class IngestWriter:
    def __init__(
        self,
        warehouse: Warehouse,
        worker: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        faults: Faults = NO_FAULTS,
    ) -> None:
        """``faults`` act at the writer's boundaries for the chaos suite (herald/faults.py)."""
        self.warehouse = warehouse
        self.worker = worker
        self._clock = clock
        self.faults = faults

    # ------------------------------------------------------------------------------- positions

    def _maxima(self, sql: str, topic: str, parts: list[int]) -> dict[int, int]:
        return {int(p): int(v) for p, v in self.warehouse.rows(sql, {"topic": topic, "parts": parts})}

    def markers_upto(self, topic: str, partitions: Iterable[int]) -> dict[TopicPartition, int]:
        """Highest offset per partition covered by a marker (-1 when none)."""
        parts = sorted(set(partitions))
        found = self._maxima(
            "SELECT partition, max(last_offset) FROM ingest_batches "
            "WHERE topic = {topic:String} AND partition IN {parts:Array(UInt16)} GROUP BY partition",
            topic,
            parts,
        ) if parts else {}  # fmt: skip
        return {(topic, p): found.get(p, -1) for p in parts}

    def events_upto(self, topic: str, partitions: Iterable[int]) -> dict[TopicPartition, int]:
        """Highest offset per partition with a row in events (-1 when none)."""
        parts = sorted(set(partitions))
        found = self._maxima(
            "SELECT _partition, max(_offset) FROM events "
            "WHERE _topic = {topic:String} AND _partition IN {parts:Array(UInt16)} GROUP BY _partition",
            topic,
            parts,
        ) if parts else {}  # fmt: skip
        return {(topic, p): found.get(p, -1) for p in parts}

    def applied_upto(self, topic: str, partitions: Iterable[int]) -> dict[TopicPartition, int]:
        """Highest offset per partition whose effect is already in the warehouse (-1 when none)."""
        markers = self.markers_upto(topic, partitions)
        events = self.events_upto(topic, partitions)
        return {tp: max(markers[tp], events[tp]) for tp in markers}

    def unmarked(self, topic: str, partitions: Iterable[int]) -> dict[TopicPartition, tuple[int, int]]:
        """Per partition, the offsets (first, last) of rows past its last marker: a batch that may have
        reached events without reaching every view. Empty when every batch is marked."""
        markers = self.markers_upto(topic, partitions)
        events = self.events_upto(topic, partitions)
        return {tp: (markers[tp] + 1, events[tp]) for tp in markers if events[tp] > markers[tp]}

    def seen_event_ids(
        self, topic: str, partition: int, horizon_s: int, limit: int, below_offset: int | None = None
    ) -> list[tuple[str, int]]:
        """(event_id, log time ms) of the partition's rows within the dedup horizon of its newest log
        time, newest first; only rows below ``below_offset`` when given (the state before a batch)."""
        where = "_topic = {topic:String} AND _partition = {p:UInt16} AND _offset < {below:UInt64}"
        rows = self.warehouse.rows(
            f"SELECT event_id, toUnixTimestamp64Milli(_log_time) FROM events WHERE {where} "
            f"AND _log_time >= (SELECT max(_log_time) FROM events WHERE {where}) "
            "- INTERVAL {h:UInt32} SECOND "
            "ORDER BY _log_time DESC LIMIT {limit:UInt32}",
            {"topic": topic, "p": partition, "h": horizon_s, "limit": limit, "below": below_offset or 2**63},
        )
        return [(str(e), int(ms)) for e, ms in rows]

    # ------------------------------------------------------------------------------- writing

    def write(
        self,
        result: IngestResult,
        fence: Callable[[], None] = _no_fence,
        verify: Iterable[TopicPartition] = (),
    ) -> WriteOutcome:
        """Apply a decided batch: its runs, then one marker row per partition. ``fence`` is called
        before every insert and raises when this worker may no longer write (item 3 of the module
        docstring); ``verify`` names the partitions whose first run must be checked against what the
        engine kept (those just taken over)."""
        now = self._clock()
        outcome = WriteOutcome()
        check = set(verify)
        runs = runs_of(result.accepted)
        for tp in sorted(result.progress):
            for i, run in enumerate(r for r in runs if (r.topic, r.partition) == tp):
                refused_before = len(outcome.refused)
                self._insert_bisecting(run, now, fence, outcome.refused)
                if i == 0 and tp in check and len(outcome.refused) == refused_before:
                    stored = self.stored_since(run)
                    if stored != (run.last, len(run.items)):
                        outcome.lost[tp] = stored[0]
                        break
        refused_at = {(m.topic, m.partition): 0 for m, _ in outcome.refused}
        for m, _ in outcome.refused:
            refused_at[(m.topic, m.partition)] += 1
        markers = []
        for (topic, partition), pr in sorted(result.progress.items()):
            if (topic, partition) in outcome.lost:
                continue
            accepted = [(m, ev) for m, ev in result.accepted if m.topic == topic and m.partition == partition]
            newest = max((ev["occurred_at"] for _, ev in accepted), default=EPOCH)
            newest_log = max((log_time_of(m, now) for m, _ in accepted), default=EPOCH)
            refused = refused_at.get((topic, partition), 0)
            counts = (pr.rows - refused, pr.dead + refused, pr.duplicates)
            markers.append((topic, partition, pr.first_offset, pr.last_offset, *counts, self.worker, now,
                            newest, newest_log))  # fmt: skip
        if markers:
            token = "batches|" + ",".join(f"{t}/{p}/{f}-{last}" for t, p, f, last, *_ in markers)
            self.faults.hit("before_marker")
            fence()
            self.warehouse.insert("ingest_batches", markers, BATCH_COLUMNS, dedup_token=token)
        return outcome

    def insert_run(self, run: Run, now: datetime) -> None:
        rows = [
            event_row(ev, m.topic, m.partition, m.offset, now, log_time_of(m, now)) for m, ev in run.items
        ]
        self.warehouse.insert(
            "events", rows, EVENT_COLUMNS, dedup_token=run.token, settings=DEDUP_ACROSS_VIEWS
        )

    def stored_since(self, run: Run) -> tuple[int, int]:
        """(highest offset, rows) the engine holds for the run's partition from the run's first offset on."""
        rows = self.warehouse.rows(
            "SELECT max(_offset), count() FROM events "
            "WHERE _topic = {topic:String} AND _partition = {p:UInt16} AND _offset >= {first:UInt64}",
            {"topic": run.topic, "p": run.partition, "first": run.first},
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows and rows[0][1] else (-1, 0)

    def _insert_bisecting(
        self, run: Run, now: datetime, fence: Callable[[], None], refused: list[tuple[SourceMessage, str]]
    ) -> None:
        fence()
        self.faults.hit("before_insert")
        try:
            self.insert_run(run, now)
            self.faults.hit("after_run")
        except WarehouseDataError as exc:
            if self._landed(run):
                raise WarehouseError(
                    f"events took the run {run.token} but a view refused it ({exc}); fix the view: "
                    "the batch is retried, never split, so events cannot be written twice"
                ) from exc
            if len(run.items) == 1:
                refused.append((run.items[0][0], str(exc.__cause__ or exc)[:2000]))
                return
            half = len(run.items) // 2
            for part in (run.items[:half], run.items[half:]):
                self._insert_bisecting(Run(run.topic, run.partition, part), now, fence, refused)

    def _landed(self, run: Run) -> bool:
        count = self.warehouse.scalar(
            "SELECT count() FROM events WHERE _topic = {topic:String} AND _partition = {p:UInt16} "
            "AND _offset BETWEEN {first:UInt64} AND {last:UInt64}",
            {"topic": run.topic, "p": run.partition, "first": run.first, "last": run.last},
        )
        return bool(count)
