"""Rebuild the ingest projection from the log: drop every object derived from it, recreate them, and
apply every message from the start of each partition through the same pure ingest decision and writer,
so the rebuilt tables equal the live ones. Dead letters are counted, not produced again (the DLQ has
them).

Which objects are derived is read from the migrations themselves (projections/lineage.py): ``events``
and ``ingest_batches``, every materialized view fed from them with the table it writes, and every view
over those. A materialized view left out would keep its table's rows and add the replayed events to
them a second time; there is no second list to keep in step with the migrations.
tests/integration/test_replay.py checks the result with projections/fingerprint.py: every derived
table has the fingerprint it had before the replay."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from herald.settings import Settings
from projections.lineage import derived_objects
from projections.migrate import Migration, discover
from projections.warehouse import Warehouse
from projections.writer import IngestWriter
from schemas.codec import lifecycle_codec
from streams.ingest import DeadLetter
from streams.pipeline import IngestPipeline, IngestTotals
from streams.sink import source_message

log = structlog.get_logger("herald.replay")


class CountingDeadLetters:
    def __init__(self) -> None:
        self.count = 0

    def send(self, letters: Sequence[DeadLetter]) -> None:
        self.count += len(letters)

    def close(self) -> None:
        return None


def rebuild_tables(warehouse: Warehouse, migrations: Sequence[Migration] | None = None) -> None:
    """Drop every object derived from the log (the lineage of the migrations, views before the tables
    they read or write) and create them again empty. Tables other components write (alerts,
    experiment_results, segment_*, definition_changes, schema_migrations) are left as they are."""
    found = discover() if migrations is None else migrations
    # The lineage is read in full before anything is dropped: a migration it cannot read stops the
    # replay with the warehouse untouched.
    for obj in derived_objects(found):
        warehouse.command(obj.drop_statement)
    # Every statement is idempotent (IF NOT EXISTS, or DROP VIEW IF EXISTS of a materialized view that
    # the next statement creates again), so only the dropped objects come back.
    for migration in found:
        for statement in migration.statements():
            warehouse.command(statement)


@dataclass
class ReplayReport:
    messages: int
    totals: IngestTotals


def replay(
    settings: Settings,
    bootstrap: str,
    warehouse: Warehouse,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    topic = settings.topics.lifecycle
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "herald-replay",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.max.bytes": 64 * 1024 * 1024,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=15).topics[topic]
        partitions = sorted(meta.partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1] for p in partitions
        }
        total = sum(ends.values())
        rebuild_tables(warehouse)
        sink = CountingDeadLetters()
        pipeline = IngestPipeline(settings, IngestWriter(warehouse, "replay"), lifecycle_codec(), sink)  # type: ignore[arg-type]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions if ends[p] > 0])
        remaining = {p for p in partitions if ends[p] > 0}
        seen = 0
        while remaining:
            batch = consumer.consume(settings.batch_max_events, timeout=1.0)
            messages = []
            for m in batch:
                if m.error():
                    continue
                msg = source_message(m)
                if msg.offset >= ends[msg.partition]:
                    remaining.discard(msg.partition)
                    continue
                messages.append(msg)
                if msg.offset == ends[msg.partition] - 1:
                    remaining.discard(msg.partition)
            if messages:
                pipeline.apply(messages)
                seen += len(messages)
                if progress:
                    progress(seen, total)
        log.info("replay.done", messages=seen, written=pipeline.totals.written, dead_letters=sink.count)
        return ReplayReport(seen, pipeline.totals)
    finally:
        consumer.close()
