"""The ingest shell: per-partition state, dead-letter production and the warehouse write around the
pure ``ingest`` decision. Synchronous and thread-confined: the warehouse sink (streams/sink.py) runs
``apply`` on its consumer thread, and ``cli.py replay`` calls it directly. Why a batch lands exactly
once in every table is argued in projections/writer.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from confluent_kafka import KafkaError, Producer

from herald.errors import HeraldError, WarehouseError
from herald.settings import Settings
from projections.writer import IngestWriter, Pending
from schemas.codec import AvroCodec
from streams.dedup import EventDeduplicator
from streams.ingest import DeadLetter, IngestResult, SourceMessage, TopicPartition, dead_letter, ingest

log = structlog.get_logger("herald.ingest")
T = TypeVar("T")


@dataclass
class IngestTotals:
    written: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    skipped: int = 0
    batches: int = 0
    last_batch_s: float = 0.0
    by_partition: dict[str, int] = field(default_factory=dict)

    def add(self, result: IngestResult, seconds: float) -> None:
        self.written += len(result.accepted)
        self.dead_letters += len(result.dead_letters)
        self.duplicates += result.duplicates
        self.skipped += result.skipped
        self.batches += 1
        self.last_batch_s = seconds
        for (topic, p), pr in result.progress.items():
            self.by_partition[f"{topic}/{p}"] = pr.last_offset


class DeadLetterSink:
    """Produces dead letters and waits until the broker has them (acks=all) before the batch goes on."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.max.bytes": 4_194_304,
            }
        )
        self._errors: list[str] = []

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def send(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        for letter in letters:
            self._producer.produce(
                self.topic,
                value=letter.value,
                key=letter.key,
                headers=list(letter.headers),
                on_delivery=self._on_delivery,
            )
        if self._producer.flush(30) or self._errors:
            errors, self._errors = self._errors, []
            raise HeraldError(f"dead letters not acknowledged: {errors[:1] or 'flush timed out'}")

    def close(self) -> None:
        self._producer.flush(10)


class FencedError(HeraldError):
    """This worker cannot prove it still owns the batch's partitions: it must not write them."""


Reread = Callable[[TopicPartition, int, int], list[SourceMessage]]
"""Reads the messages of one partition between two offsets (inclusive) back from the log."""


def _no_fence() -> None:
    return None


@dataclass
class IngestStatus:
    """Whether ingest is making progress, for /health, /metrics and the alert monitor."""

    retrying_stage: str | None = None
    retry_attempts: int = 0
    retrying_since: float | None = None  # time.monotonic()
    last_error: str = ""
    last_applied: float | None = None  # time.monotonic() of the last applied batch
    repairs: int = 0
    lost_runs: int = 0
    fenced: int = 0
    refused_rows: int = 0

    def retrying_for(self, now: float) -> float:
        """Seconds the current stage has been retrying (0 when nothing is)."""
        return 0.0 if self.retrying_since is None else max(0.0, now - self.retrying_since)

    def problems(self, now: float, stall_s: float) -> list[str]:
        """Why ingest is not progressing, for /health (``now`` on time.monotonic()).

        >>> IngestStatus().problems(100.0, 30.0)
        []
        >>> stuck = IngestStatus("write", 9, 10.0, "insert into events failed: connection refused")
        >>> stuck.problems(100.0, 30.0)
        ['ingest has retried its write for 90 s (9 attempts): insert into events failed: connection refused']
        """
        waited = self.retrying_for(now)
        if self.retrying_stage is None or waited < stall_s:
            return []
        return [
            f"ingest has retried its {self.retrying_stage} for {waited:.0f} s "
            f"({self.retry_attempts} attempts): {self.last_error[:300]}"
        ]


@dataclass
class Applied:
    """One applied batch: the decision, and the partitions another writer's run took over (the offset
    to resume after), which the consumer must read again from there."""

    result: IngestResult
    lost: dict[TopicPartition, int]


class IngestPipeline:
    def __init__(
        self,
        settings: Settings,
        writer: IngestWriter,
        codec: AvroCodec,
        dead_letters: DeadLetterSink,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        reread: Reread | None = None,
    ) -> None:
        """``reread`` gives back a partition's messages between two offsets, to repair a batch whose
        marker was never written (projections/writer.py, item 2); without it such a batch is an error
        (the replay rebuilds the tables first and never meets one)."""
        self.settings = settings
        self.writer = writer
        self.codec = codec
        self.dead_letters = dead_letters
        self.totals = IngestTotals()
        self.status = IngestStatus()
        self.reread = reread
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._applied: dict[TopicPartition, int] = {}
        self._dedup: dict[TopicPartition, EventDeduplicator] = {}
        self._taken_over: set[TopicPartition] = set()

    def _deduplicator(self, topic: str, partition: int, below_offset: int | None = None) -> EventDeduplicator:
        dedup = EventDeduplicator(self.settings.dedup_horizon_s * 1000, self.settings.dedup_max_ids)
        dedup.load(
            self.writer.seen_event_ids(
                topic, partition, self.settings.dedup_horizon_s, self.settings.dedup_max_ids, below_offset
            )
        )
        return dedup

    def _load(self, tps: Iterable[TopicPartition], fence: Callable[[], None]) -> None:
        """Rebuild position and dedup state of newly seen partitions from the warehouse, after
        completing any batch that reached events without its marker."""
        missing = sorted(tp for tp in set(tps) if tp not in self._applied)
        by_topic: dict[str, list[int]] = {}
        for topic, p in missing:
            by_topic.setdefault(topic, []).append(p)
        for topic, parts in by_topic.items():
            for tp, pending in sorted(self.writer.unmarked(topic, parts).items()):
                self._repair(tp, pending, fence)
            applied = self.writer.applied_upto(topic, parts)
            for p in parts:
                dedup = self._deduplicator(topic, p)
                self._applied[(topic, p)] = applied[(topic, p)]
                self._dedup[(topic, p)] = dedup
                self._taken_over.add((topic, p))
                log.info(
                    "ingest.partition_loaded",
                    topic=topic,
                    partition=p,
                    applied_upto=applied[(topic, p)],
                    dedup_ids=len(dedup),
                )

    def _repair(self, tp: TopicPartition, pending: Pending, fence: Callable[[], None]) -> None:
        """Finish the batch that was planned past the last marker: re-read from the log and re-decided
        with the dedup state from before it, its runs are inserted exactly as planned, with the tokens
        their first attempt carried, so what the engine has is dropped and what it misses (a view's
        part, the events part) is written; then the marker (projections/writer.py, item 2)."""
        first, last = pending.start, pending.end
        if self.reread is None:
            raise WarehouseError(
                f"{tp[0]}/{tp[1]}: offsets {first}-{last} have no marker and cannot be re-read"
            )
        messages = self.reread(tp, first, last)
        dedup = {tp: self._deduplicator(tp[0], tp[1], below_offset=first)}
        result = ingest(
            messages, self.codec.decode, dedup, {tp: first - 1}, self._clock(), self.settings.max_event_bytes
        )
        # Dead letters were produced before the first attempt wrote anything: not sent again.
        outcome = self.writer.complete(result, pending, fence)
        if outcome.refused:
            self._refused(outcome.refused)
        self.status.repairs += 1
        log.warning("ingest.repaired", topic=tp[0], partition=tp[1], first=first, last=last,
                    runs=len(pending.runs), rows=len(result.accepted))  # fmt: skip

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Drop state of revoked partitions; it is rebuilt from the warehouse if they come back."""
        with self._lock:
            for tp in tps:
                self._forget(tp)

    def _forget(self, tp: TopicPartition) -> None:
        self._applied.pop(tp, None)
        self._dedup.pop(tp, None)
        self._taken_over.discard(tp)

    def apply(self, messages: Sequence[SourceMessage], fence: Callable[[], None] = _no_fence) -> Applied:
        """Decide and apply one batch. Returns only once its effects are durable (then it may be acked).

        ``fence`` is called before every write and raises FencedError once this worker may no longer
        write the batch's partitions: the batch is then abandoned and the partitions' state dropped
        (a partial write is completed from the log by whoever loads them next). Warehouse and broker
        outages are retried with backoff, never skipped: acknowledging a batch whose rows were not
        written would lose them; ``status`` says how long it has been retrying.
        """
        with self._lock:
            tps = {(m.topic, m.partition) for m in messages}
            started = time.perf_counter()
            try:
                self._retrying("load", lambda: self._load(tps, fence))
                result = ingest(
                    messages,
                    self.codec.decode,
                    self._dedup,
                    self._applied,
                    self._clock(),
                    self.settings.max_event_bytes,
                )
                self._retrying("dead_letter", lambda: self.dead_letters.send(result.dead_letters))
                verify = self._taken_over & set(result.progress)
                outcome = self._retrying("write", lambda: self.writer.write(result, fence, verify))
            except FencedError:
                self.status.fenced += 1
                for tp in tps:
                    self._forget(tp)  # its dedup state saw the batch: rebuilt from what was written
                raise
            if outcome.refused:
                self._refused(outcome.refused)
            for tp, pr in result.progress.items():
                self._taken_over.discard(tp)
                if tp in outcome.lost:
                    self.status.lost_runs += 1
                    self._forget(tp)
                    log.warning(
                        "ingest.run_lost", topic=tp[0], partition=tp[1], resume_after=outcome.lost[tp]
                    )
                else:
                    self._applied[tp] = pr.last_offset
            elapsed = time.perf_counter() - started
            self.totals.add(result, elapsed)
            self.status.last_applied = time.monotonic()
            log.debug(
                "ingest.batch_applied",
                rows=len(result.accepted),
                dead_letters=len(result.dead_letters),
                duplicates=result.duplicates,
                skipped=result.skipped,
                seconds=round(elapsed, 4),
            )
            return Applied(result, outcome.lost)

    def _refused(self, refused: list[tuple[SourceMessage, str]]) -> None:
        """Rows the engine could not hold go to the dead-letter topic with its reason."""
        now = self._clock()
        letters = [dead_letter(m, "warehouse", "refused", reason, now) for m, reason in refused]
        self._retrying("dead_letter", lambda: self.dead_letters.send(letters))
        self.status.refused_rows += len(letters)
        self.totals.dead_letters += len(letters)
        self.totals.written -= len(letters)
        log.warning("ingest.refused_by_warehouse", rows=len(letters), reason=refused[0][1][:300])

    def _retrying(self, stage: str, action: Callable[[], T]) -> T:
        delay = 0.2
        try:
            while True:
                try:
                    out = action()
                    return out
                except FencedError:
                    raise
                except (WarehouseError, HeraldError) as exc:
                    status = self.status
                    if status.retrying_stage != stage:
                        status.retrying_stage, status.retrying_since, status.retry_attempts = (
                            stage,
                            time.monotonic(),
                            0,
                        )
                    status.retry_attempts += 1
                    status.last_error = str(exc)[:500]
                    log.warning("ingest.retrying", stage=stage, error=str(exc)[:500], retry_in_s=delay,
                                attempt=status.retry_attempts)  # fmt: skip
                    self._sleep(delay)
                    delay = min(delay * 2, 10.0)
        finally:
            if self.status.retrying_stage == stage:
                self.status.retrying_stage, self.status.retrying_since = None, None
