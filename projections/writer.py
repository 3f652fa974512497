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
2. A crash in the middle of a batch. Before the first insert, the batch writes ahead its plan: one
   ``ingest_intents`` row per run (first and last offset). An insert can stop with some tables
   holding the run and others not, and not always ``events`` first (the engine may commit a view's
   part before the table's), so no table alone tells which runs began; the plans do. On (re)assignment
   the pipeline finds the runs planned past the last marker (``unmarked``), re-reads their offsets from
   the log, re-decides them (ingest is a function of the messages and of the dedup state as it was
   before them, streams/ingest.py) and inserts exactly those runs again (``complete``): every part
   that is there is dropped by its token, every missing one written, and the marker follows.
3. A worker that lost its partitions while paused (a stop past its session, a stuck retry): before
   each write the pipeline's ``fence`` proves the worker still owns the batch's partitions in its
   consumer group (streams/sink.py); a worker that cannot prove it writes nothing. Whatever a paused
   worker had in flight starts at the offset where the new owner starts, so it collides with the new
   owner's first batch of that partition, and the engine keeps one: a plan for that start that the
   engine took first stands (the new owner checks, and if another plan stands it writes nothing of
   its own and the next load completes that plan); a run landed first with that start's token drops
   the other (the new owner checks its first run and resumes after the stored one,
   ``WriteOutcome.lost``).
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
from projections.rows import BATCH_COLUMNS, EVENT_COLUMNS, INTENT_COLUMNS, event_row, month_of
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


@dataclass(frozen=True)
class Pending:
    """A partition's unfinished batch: where it starts (after the last marker) and the runs planned in it,
    (first, last) offsets each, in order."""

    start: int
    runs: list[tuple[int, int]]

    @property
    def end(self) -> int:
        return self.runs[-1][1]


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

    def _maxima(self, sql: str, topic: str, parts: list[int], **more: Any) -> dict[int, int]:
        rows = self.warehouse.rows(sql, {"topic": topic, "parts": parts, **more})
        return {int(p): int(v) for p, v in rows}

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

    def unmarked(self, topic: str, partitions: Iterable[int]) -> dict[TopicPartition, Pending]:
        """Per partition, the runs planned (or rows written) past its last marker: a batch that may have
        reached some tables and not others. Empty when every batch is marked."""
        markers = self.markers_upto(topic, partitions)
        if not markers:
            return {}
        floors = {p: m for (_, p), m in markers.items()}
        plans: dict[int, list[tuple[int, int]]] = {}
        for p, first, last in self.warehouse.rows(
            "SELECT partition, first_offset, argMin(last_offset, _block_number) FROM ingest_intents "
            "WHERE topic = {topic:String} AND partition IN {parts:Array(UInt16)} "
            "AND toInt64(first_offset) > "
            "transform(partition, {parts:Array(UInt16)}, {floors:Array(Int64)}, -1) "
            "GROUP BY partition, first_offset ORDER BY partition, first_offset",
            {"topic": topic, "parts": sorted(floors), "floors": [floors[p] for p in sorted(floors)]},
        ):
            plans.setdefault(int(p), []).append((int(first), int(last)))
        events = self.events_upto(topic, partitions)
        out = {}
        for tp, marker in markers.items():
            runs = plans.get(tp[1], [])
            written = events[tp]
            if written > max([marker, *(last for _, last in runs)]):
                runs.append((max([marker, *(last for _, last in runs)]) + 1, written))  # rows no plan names
            if runs:
                out[tp] = Pending(marker + 1, runs)
        return out

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
            {
                "topic": topic,
                "p": partition,
                "h": horizon_s,
                "limit": limit,
                "below": 2**63 if below_offset is None else below_offset,
            },
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
        if runs:
            fence()
            self._plan(runs, now)
            for tp, stored_last in self._plans_of_others(runs, check).items():
                outcome.lost[tp] = stored_last
        for tp in sorted(result.progress):
            if tp in outcome.lost:
                continue
            for i, run in enumerate(r for r in runs if (r.topic, r.partition) == tp):
                refused_before = len(outcome.refused)
                self._insert_bisecting(run, now, fence, outcome.refused)
                if i == 0 and tp in check and len(outcome.refused) == refused_before:
                    stored = self.stored_since(run)
                    if stored != (run.last, len(run.items)):
                        outcome.lost[tp] = stored[0]
                        break
        self._mark(result, outcome, now, fence)
        return outcome

    def complete(
        self, result: IngestResult, pending: Pending, fence: Callable[[], None] = _no_fence
    ) -> WriteOutcome:
        """Insert exactly the runs an unfinished batch planned (``result`` is the same offsets decided
        again from the log: the same verdicts), each as its plan drew it, so every token is the one its
        first attempt carried; then the batch's marker."""
        now = self._clock()
        outcome = WriteOutcome()
        for first, last in pending.runs:
            items = [(m, ev) for m, ev in result.accepted if first <= m.offset <= last]
            if items:
                run = Run(items[0][0].topic, items[0][0].partition, items)
                self._insert_bisecting(run, now, fence, outcome.refused)
        self._mark(result, outcome, now, fence)
        return outcome

    def _plan(self, runs: list[Run], now: datetime) -> None:
        """Write ahead which runs this batch will insert (item 2 of the module docstring); a retry of the
        same plan is one block. Where two writers plan the same start, the engine's first stands."""
        rows = [(r.topic, r.partition, r.first, r.last, len(r.items), self.worker, now) for r in runs]
        self.faults.hit("before_intents")
        token = "intents|" + ",".join(f"{r.partition}/{r.first}-{r.last}" for r in runs)
        self.warehouse.insert("ingest_intents", rows, INTENT_COLUMNS, dedup_token=f"{runs[0].topic}|{token}")

    def _plans_of_others(self, runs: list[Run], check: set[TopicPartition]) -> dict[TopicPartition, int]:
        """For the partitions just taken over, the first runs another writer planned first (a worker that
        lost the partition while its plan was in flight): partition -> the offset before that plan, where
        this worker resumes once the plan is applied (the next load applies it from the log)."""
        firsts = {(r.topic, r.partition): r for r in reversed(runs) if (r.topic, r.partition) in check}
        out: dict[TopicPartition, int] = {}
        for tp, run in firsts.items():
            rows = self.warehouse.rows(
                "SELECT argMin(last_offset, _block_number) FROM ingest_intents WHERE topic = {topic:String} "
                "AND partition = {p:UInt16} AND first_offset = {first:UInt64}",
                {"topic": run.topic, "p": run.partition, "first": run.first},
            )
            if rows and int(rows[0][0]) != run.last:
                out[tp] = run.first - 1
        return out

    def _mark(
        self, result: IngestResult, outcome: WriteOutcome, now: datetime, fence: Callable[[], None]
    ) -> None:
        """One marker row per partition the batch completed (not those another writer took)."""
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
