"""The warehouse sink: a confluent-kafka batch consumer that feeds the ingest pipeline.

Why not a Faust agent: the sink is a stateless, batch-shaped path whose throughput is bound by
per-message overhead; librdkafka hands over thousands of messages per call (about 10x the rate of a
Faust stream on this hardware), and owning the commit makes the at-least-once contract explicit.
Stateful agents (metrics, decisions) run in Faust beside it.

Offsets are committed synchronously right after a batch is durable (``pipeline.apply`` returned),
so a crash re-reads at most the batch in flight, which the pipeline then skips by log position.
Rebalance callbacks run inside ``consume`` on this thread, i.e. never while a batch is in flight.

Fencing (projections/writer.py, item 3). Before each insert the pipeline calls ``fence``: a
synchronous commit of the batch's first offsets (where this worker already stands) in the group's
current generation. The group coordinator refuses it once the partitions moved to another member
(a worker paused past its session, stuck in a retry past ``max.poll.interval``), and a refused fence
abandons the batch: nothing more of it is written, its partitions' state is dropped and the consumer
goes back to the batch's start for the partitions it still owns. A commit also renews the member's
session, so a fence less than half a session old still holds and is not repeated for every insert.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from herald.settings import Settings
from streams.ingest import SourceMessage
from streams.ingest import TopicPartition as Position
from streams.pipeline import FencedError, IngestPipeline

log = structlog.get_logger("herald.sink")


def sink_consumer_config(settings: Settings, bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": settings.topics.sink_group,
        "client.id": f"herald-sink-{settings.worker_name}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
        "heartbeat.interval.ms": int(settings.session_timeout_s * 1000 / 5),
        "max.poll.interval.ms": 300_000,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 8 * 1024 * 1024,
        "queued.max.messages.kbytes": 256 * 1024,
        "partition.assignment.strategy": "cooperative-sticky",
    }


class WarehouseSink:
    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        pipeline: IngestPipeline,
        on_crash: Callable[[BaseException], None],
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self._on_crash = on_crash
        self._stop = threading.Event()
        self.lag: dict[int, int] = {}
        self.assigned: set[int] = set()
        self._consumer = Consumer(sink_consumer_config(settings, bootstrap))
        self._bootstrap = bootstrap
        self._fenced_at = -float("inf")
        self._fence_every = settings.session_timeout_s / 2
        self._uncommitted: dict[Position, int] = {}
        self._thread = threading.Thread(target=self._run, name="warehouse-sink", daemon=True)
        pipeline.reread = self.reread

    def start(self) -> None:
        self._consumer.subscribe(
            [self.settings.topics.lifecycle],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned.update(p.partition for p in partitions)
        log.info("sink.partitions_assigned", partitions=sorted(p.partition for p in partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.pipeline.forget((p.topic, p.partition) for p in partitions)
        for p in partitions:
            self.lag.pop(p.partition, None)
            self.assigned.discard(p.partition)
        log.info("sink.partitions_revoked", partitions=sorted(p.partition for p in partitions))

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._consumer.consume(
                    self.settings.batch_max_events, timeout=self.settings.batch_within_s
                )
                messages = []
                for m in batch:
                    err = m.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("sink.consume_error", error=str(err))
                        continue
                    messages.append(source_message(m))
                if not messages:
                    self._commit({})  # offsets a rebalance refused earlier: the group shows the true lag
                    continue
                firsts = _first_offsets(messages)
                try:
                    applied = self.pipeline.apply(messages, functools.partial(self.fence, firsts))
                except FencedError as exc:
                    log.warning("sink.fenced", error=str(exc), partitions=sorted(p for _, p in firsts))
                    self._rewind(firsts)
                    continue
                done = {tp: o for tp, o in _last_offsets(messages).items() if tp not in applied.lost}
                self._commit(done)
                self._measure_lag(done)
                self._rewind({tp: upto + 1 for tp, upto in applied.lost.items()})
        except BaseException as exc:  # a crash here is a bug: stop the worker rather than stall silently
            log.exception("sink.crashed")
            self._on_crash(exc)
        finally:
            self._consumer.close()  # leaves the group at once: partitions move without a session timeout

    def fence(self, firsts: dict[Position, int]) -> None:
        """Prove this worker still owns the batch's partitions (see the module docstring); raise
        FencedError when the group coordinator says otherwise."""
        now = time.monotonic()
        if now - self._fenced_at < self._fence_every:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(firsts.items())]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise FencedError(f"the group refused this worker's offsets: {exc}") from exc
        self._fenced_at = now

    def _rewind(self, positions: dict[Position, int]) -> None:
        """Read the partitions again from ``positions``, where this worker still owns them."""
        for (topic, partition), offset in positions.items():
            if partition not in self.assigned:
                continue
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # revoked meanwhile: the next owner starts from the warehouse
                log.info("sink.rewind_skipped", partition=partition, error=str(exc))

    def reread(self, tp: Position, first: int, last: int) -> list[SourceMessage]:
        """The messages of one partition from ``first`` to ``last`` (inclusive), read back from the log
        by a consumer outside the group (it commits nothing and moves no partition)."""
        reader = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": f"{self.settings.topics.sink_group}-reread",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        out: list[SourceMessage] = []
        try:
            reader.assign([TopicPartition(tp[0], tp[1], first)])
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                for m in reader.consume(10_000, timeout=1.0):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            return out
                        continue
                    msg = source_message(m)
                    if msg.offset > last:
                        return out
                    out.append(msg)
                    if msg.offset == last:
                        return out
            raise KafkaException(f"could not read back {tp[0]}/{tp[1]} offsets {first}-{last}")
        finally:
            reader.close()

    def _measure_lag(self, applied: dict[tuple[str, int], int]) -> None:
        """Messages behind the high watermark per partition just applied (cached by librdkafka)."""
        for (topic, partition), offset in applied.items():
            _low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            if high >= 0:
                self.lag[partition] = max(0, high - offset - 1)

    def _commit(self, last: dict[tuple[str, int], int]) -> None:
        """Commit the offsets after ``last`` and any a rebalance refused before (kept until one commit of
        them succeeds, for the partitions this worker still owns)."""
        self._uncommitted = {
            tp: o for tp, o in {**self._uncommitted, **last}.items() if tp[1] in self.assigned
        }
        if not self._uncommitted:
            return
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in sorted(self._uncommitted.items())],
                asynchronous=False,
            )
            self._uncommitted = {}
        except KafkaException as exc:
            # Not fatal: the batch is durable, and re-reading it after a rebalance is skipped by position;
            # the offsets are committed again with the next batch or the next empty poll.
            log.warning("sink.commit_failed", error=str(exc))


def _first_offsets(messages: list[SourceMessage]) -> dict[tuple[str, int], int]:
    first: dict[tuple[str, int], int] = {}
    for m in messages:
        first.setdefault((m.topic, m.partition), m.offset)
    return first


def _last_offsets(messages: list[SourceMessage]) -> dict[tuple[str, int], int]:
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        last[(m.topic, m.partition)] = m.offset
    return last


def source_message(m: Message) -> SourceMessage:
    """A confluent-kafka message (one without error) as the pure ingest code sees it."""
    topic, partition, offset = m.topic(), m.partition(), m.offset()
    assert topic is not None and partition is not None and offset is not None  # set on every fetched message
    headers = m.headers() or ()
    pairs = headers.items() if isinstance(headers, dict) else headers
    return SourceMessage(
        topic,
        partition,
        offset,
        m.key(),
        m.value() or b"",
        m.timestamp()[1],
        tuple((k, v.encode() if isinstance(v, str) else (v or b"")) for k, v in pairs),
    )
