"""Small helpers shared by the integration and e2e tests (reading topics back, snapshots of tables,
alert rows as the monitor writes them, traffic exposed to experiments and ingested)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from analytics.alerting import AlertChange, alert_record
from dispatch.core import Dispatcher, example_request
from experiments.definitions import LoadedExperiments
from herald.settings import load_settings
from policies.loader import load_policy_text
from policies.segments import Segment
from projections.rows import alert_row
from projections.warehouse import Warehouse
from projections.writer import IngestWriter
from providers.base import SendResult
from schemas.codec import lifecycle_codec
from streams.ingest import SourceMessage
from streams.pipeline import IngestPipeline
from streams.replay import CountingDeadLetters

if TYPE_CHECKING:
    from herald.supervise import WorkerProcess


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


SMS_POLICY = """
providers:
  sms: [{name: sms-primary, price_micros: 7500, currency: USD}]
routing:
  default: {sms: [sms-primary]}
"""


def exposed_events(
    experiments: LoadedExperiments,
    segments: Mapping[str, Segment],
    t0_ms: int,
    count: int = 1000,
    delivered: Callable[[str, int], bool] = lambda variant, n: True,
    first: int = 0,
) -> list[dict[str, Any]]:
    """Gold recipients ``r-<first>`` … (``count`` of them; example_request: acme-home, visit-reminder, SMS)
    through the dispatcher with ``experiments``, recipient n at ``t0_ms + n * 100``: their REQUESTED,
    DISPATCHED (carrying the experiment and variant the dispatcher exposed them to), SENT and a receipt
    2 s later, DELIVERED when ``delivered(variant, n)`` else FAILED."""
    d = Dispatcher(load_policy_text(SMS_POLICY, source="test.yaml"))
    d.use_experiments(experiments, segments)
    events: list[dict[str, Any]] = []
    base = example_request()["recipient"]
    for n in range(first, first + count):
        at = t0_ms + n * 100
        record = example_request(
            request_id=f"x-{n}", notification_id=f"xn-{n}", campaign_id=None,
            recipient={**base, "id": f"r-{n}", "tier": "gold"},
            requested_at=datetime.fromtimestamp(at / 1000, UTC),
        )  # fmt: skip
        step = d.decide(record, at)
        events += step.events
        assert step.attempt is not None
        result = SendResult("sms-primary", True, f"m-{n}", None, False, 30)
        events += d.outcome(step.attempt, result, at + 30, receipts=True).events
        variant = next(e["variant"] for e in step.events if e["event_type"] == "DISPATCHED")
        events += d.receipt(f"x-{n}", delivered(variant, n), at + 2_000).events
    return events


def ingest(
    warehouse: Warehouse, events: list[dict[str, Any]], data_dir: Path, now: datetime, offset: int = 0
) -> None:
    """``events`` into ``warehouse`` through the real ingest path (codec, pipeline, writer), as messages
    of four partitions from ``offset`` on (a later call continues past the earlier calls' offsets)."""
    codec = lifecycle_codec()
    pipeline = IngestPipeline(
        load_settings(data_dir=data_dir), IngestWriter(warehouse, "test"), codec,
        CountingDeadLetters(),  # type: ignore[arg-type]  # same send/close surface as DeadLetterSink
        clock=lambda: now,
    )  # fmt: skip
    messages = [
        SourceMessage("lifecycle", i % 4, offset + i // 4, e["notification_id"].encode(), codec.encode(e))
        for i, e in enumerate(events)
    ]
    pipeline.apply(messages)
    assert pipeline.totals.written == len(events)


def wait_for(
    predicate: Callable[[], Any],
    what: str,
    workers: Sequence[WorkerProcess] = (),
    timeout: float = 120,
    every: float = 0.5,
) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that; on timeout fail with
    what was awaited, each live worker's health and the tail of every worker's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(every)
    details = []
    for worker in workers:
        try:
            details.append(f"health {worker.health()}")
        except Exception as exc:  # a dead worker has no health to show, only its log
            details.append(f"no health ({type(exc).__name__})")
        details.append(worker.tail())
    raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(details))
