"""Small helpers shared by the integration and e2e tests (reading topics back, snapshots of tables,
alert rows as the monitor writes them)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from analytics.alerting import AlertChange, alert_record
from projections.rows import alert_row


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
    "cohort": "SELECT tenant_id, send_minute, sum(sent), sum(delivered), sum(bounced), sum(opened), "
    "sum(clicked), sum(replied) FROM delivery_cohort_minute GROUP BY tenant_id, send_minute "
    "ORDER BY tenant_id, send_minute",
    "refused": "SELECT sum(dead_letters), sum(duplicates) FROM ingest_batches",
}


def snapshot(sql: Any) -> dict[str, Any]:
    return {name: sql(q) for name, q in SNAPSHOT_QUERIES.items()}


def alert_change_row(change: AlertChange, dashboard_base: str, runbook_base: str) -> list[Any]:
    """The ``alerts`` row the monitor writes for a change (alert_record's content, the topic's)."""
    return alert_row(alert_record(change, dashboard_base, runbook_base, policy_version="test-1"))
