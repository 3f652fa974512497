"""The ingest shell: per-partition state, dead-letter production and the warehouse write around the
pure ``ingest`` decision. Synchronous and thread-confined: the Faust agent runs ``apply`` in one
worker thread, and ``cli.py replay`` calls it directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from confluent_kafka import KafkaError, Producer

from herald.errors import HeraldError, WarehouseError
from herald.settings import Settings
from projections.writer import IngestWriter
from schemas.codec import AvroCodec
from streams.dedup import EventDeduplicator
from streams.ingest import DeadLetter, IngestResult, SourceMessage, TopicPartition, ingest

log = structlog.get_logger("herald.ingest")


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


class IngestPipeline:
    def __init__(
        self,
        settings: Settings,
        writer: IngestWriter,
        codec: AvroCodec,
        dead_letters: DeadLetterSink,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.codec = codec
        self.dead_letters = dead_letters
        self.totals = IngestTotals()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._applied: dict[TopicPartition, int] = {}
        self._dedup: dict[TopicPartition, EventDeduplicator] = {}

    def _load(self, tps: Iterable[TopicPartition]) -> None:
        """Rebuild position and dedup state of newly seen partitions from the warehouse."""
        missing = sorted(tp for tp in set(tps) if tp not in self._applied)
        by_topic: dict[str, list[int]] = {}
        for topic, p in missing:
            by_topic.setdefault(topic, []).append(p)
        for topic, parts in by_topic.items():
            applied = self.writer.applied_upto(topic, parts)
            for p in parts:
                dedup = EventDeduplicator(self.settings.dedup_horizon_s * 1000, self.settings.dedup_max_ids)
                dedup.load(
                    self.writer.seen_event_ids(
                        topic, p, self.settings.dedup_horizon_s, self.settings.dedup_max_ids
                    )
                )
                self._applied[(topic, p)] = applied[(topic, p)]
                self._dedup[(topic, p)] = dedup
                log.info(
                    "ingest.partition_loaded",
                    topic=topic,
                    partition=p,
                    applied_upto=applied[(topic, p)],
                    dedup_ids=len(dedup),
                )

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Drop state of revoked partitions; it is rebuilt from the warehouse if they come back."""
        with self._lock:
            for tp in tps:
                self._applied.pop(tp, None)
                self._dedup.pop(tp, None)

    def apply(self, messages: Sequence[SourceMessage]) -> IngestResult:
        """Decide and apply one batch. Returns only once its effects are durable (then it may be acked).

        Warehouse and broker outages are retried with backoff, never skipped: acknowledging a batch
        whose rows were not written would lose them.
        """
        with self._lock:
            started = time.perf_counter()
            self._retrying("load", lambda: self._load((m.topic, m.partition) for m in messages))
            result = ingest(
                messages,
                self.codec.decode,
                self._dedup,
                self._applied,
                self._clock(),
                self.settings.max_event_bytes,
            )
            self._retrying("dead_letter", lambda: self.dead_letters.send(result.dead_letters))
            self._retrying("write", lambda: self.writer.write(result))
            for tp, pr in result.progress.items():
                self._applied[tp] = pr.last_offset
            elapsed = time.perf_counter() - started
            self.totals.add(result, elapsed)
            log.debug(
                "ingest.batch_applied",
                rows=len(result.accepted),
                dead_letters=len(result.dead_letters),
                duplicates=result.duplicates,
                skipped=result.skipped,
                seconds=round(elapsed, 4),
            )
            return result

    def _retrying(self, stage: str, action: Callable[[], None]) -> None:
        delay = 0.2
        while True:
            try:
                action()
                return
            except (WarehouseError, HeraldError) as exc:
                log.warning("ingest.retrying", stage=stage, error=str(exc)[:500], retry_in_s=delay)
                self._sleep(delay)
                delay = min(delay * 2, 10.0)
