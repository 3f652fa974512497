"""Small helpers shared by the integration tests (reading topics back, snapshots of tables)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
    """Every message of ``topic`` from the beginning (stops at ``expected`` or the timeout)."""
    import time

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False}
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            out.extend(m for m in consumer.consume(500, timeout=0.5) if m.error() is None)
        return out
    finally:
        consumer.close()


SNAPSHOT_QUERIES = {
    "events": "SELECT count(), uniqExact(event_id), "
    "sum(cityHash64(event_id, event_type, tenant_id, latency_ms)) FROM events",
    "positions": "SELECT sum(cityHash64(event_id, _partition, _offset)) FROM events",
    "by_type": "SELECT event_type, count() FROM events GROUP BY event_type ORDER BY event_type",
    "rollup": "SELECT tenant_id, channel, provider, sum(requested), sum(sent), sum(delivered), sum(failed), "
    "sum(bounced), sum(opened), sum(clicked), sum(delivery_latency_ms_sum), sum(cost_micros) "
    "FROM delivery_minute GROUP BY tenant_id, channel, provider ORDER BY tenant_id, channel, provider",
    "hourly": "SELECT tenant_id, hour, sum(dispatched), sum(delivered), sum(opened), sum(cost_micros) "
    "FROM delivery_hour GROUP BY tenant_id, hour ORDER BY tenant_id, hour",
    "refused": "SELECT sum(dead_letters), sum(duplicates) FROM ingest_batches",
}


def snapshot(sql: Any) -> dict[str, Any]:
    return {name: sql(q) for name, q in SNAPSHOT_QUERIES.items()}
