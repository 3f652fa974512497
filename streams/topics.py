"""Topic names (``herald.<area>.<name>.v<N>``) and their creation on a broker."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # not in its __all__

from herald.errors import KafkaUnavailableError

LIFECYCLE = "herald.lifecycle.events.v1"  # key: notification_id, so one notification's events stay in order
DEAD_LETTER = "herald.lifecycle.dlq.v1"  # key: the original key; value: the original bytes
ALERTS = "herald.ops.alerts.v1"  # key: tenant/channel/provider; value: schemas/avro/alert_event.avsc
MONITOR_STATE = "herald.ops.monitor-state.v1"  # compacted, one partition: the alert monitor's checkpoints
DISPATCH_REQUESTS = "herald.dispatch.requests.v1"  # key: tenant_id; value: dispatch_requested.avsc
DISPATCH_STATE = "herald.dispatch.state.v1"  # compacted; key: tenant_id, same partition as its requests
DISPATCH_DEAD_LETTER = "herald.dispatch.dlq.v1"  # refused requests, original bytes + headers
EXPERIMENT_STATUS = "herald.experiments.status.v1"  # compacted; key: tenant/experiment; value: JSON status


@dataclass(frozen=True)
class TopicSpec:
    name: str
    config: tuple[tuple[str, str], ...] = ()
    partitions: int | None = None  # None = the configured default


@dataclass(frozen=True)
class Topics:
    """Herald's topic names within a namespace. The namespace (empty in production) lets several
    environments or test runs share one cluster: ``ci-42.herald.lifecycle.events.v1``."""

    namespace: str = ""

    def _name(self, base: str) -> str:
        return f"{self.namespace}.{base}" if self.namespace else base

    @property
    def lifecycle(self) -> str:
        return self._name(LIFECYCLE)

    @property
    def dead_letter(self) -> str:
        return self._name(DEAD_LETTER)

    @property
    def consumer_group(self) -> str:
        """The Faust app's group (stateful agents)."""
        return self._name("herald")

    @property
    def sink_group(self) -> str:
        """The warehouse sink's group: its committed offsets are what the warehouse has applied."""
        return self._name("herald-warehouse")

    @property
    def alerts(self) -> str:
        return self._name(ALERTS)

    @property
    def monitor_state(self) -> str:
        return self._name(MONITOR_STATE)

    @property
    def monitor_group(self) -> str:
        """The alert monitor's group: whoever holds the state topic's one partition leads."""
        return self._name("herald-monitor")

    @property
    def dispatch_requests(self) -> str:
        return self._name(DISPATCH_REQUESTS)

    @property
    def dispatch_state(self) -> str:
        return self._name(DISPATCH_STATE)

    @property
    def dispatch_dead_letter(self) -> str:
        return self._name(DISPATCH_DEAD_LETTER)

    @property
    def experiment_status(self) -> str:
        return self._name(EXPERIMENT_STATUS)

    @property
    def dispatch_group(self) -> str:
        """The dispatch agents' group: a tenant's requests, and so its limits, belong to one worker."""
        return self._name("herald-dispatch")

    def specs(self) -> tuple[TopicSpec, ...]:
        return (
            TopicSpec(
                self.lifecycle,
                (
                    ("retention.ms", str(30 * 86_400_000)),
                    ("max.message.bytes", "4194304"),
                    # The broker stamps each message: the log's own clock, which ingest judges event
                    # times and the dedup horizon by (streams/ingest.py), cannot be set by a producer.
                    ("message.timestamp.type", "LogAppendTime"),
                ),
            ),
            TopicSpec(
                self.dead_letter, (("retention.ms", str(90 * 86_400_000)), ("max.message.bytes", "4194304"))
            ),
            TopicSpec(self.alerts, (("retention.ms", str(365 * 86_400_000)),)),
            TopicSpec(
                self.monitor_state,
                (
                    ("cleanup.policy", "compact"),
                    ("min.compaction.lag.ms", "60000"),
                    ("max.message.bytes", str(64 * 1024 * 1024)),
                ),
                partitions=1,
            ),
            TopicSpec(self.dispatch_requests, (("retention.ms", str(7 * 86_400_000)),)),
            TopicSpec(
                self.dispatch_state,
                (("cleanup.policy", "compact"), ("max.message.bytes", str(16 * 1024 * 1024))),
            ),
            TopicSpec(self.dispatch_dead_letter, (("retention.ms", str(90 * 86_400_000)),)),
            TopicSpec(
                self.experiment_status,
                (("cleanup.policy", "compact"), ("max.message.bytes", str(4 * 1024 * 1024))),
            ),
        )


def ensure_topics(bootstrap: str, partitions: int, replication_factor: int, topics: Topics) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Idempotent."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        existing = set(admin.list_topics(timeout=15).topics)
    except KafkaException as exc:
        raise KafkaUnavailableError(f"cannot list topics on {bootstrap}: {exc}") from exc
    new = [
        NewTopic(
            s.name,
            num_partitions=s.partitions or partitions,
            replication_factor=replication_factor,
            config=dict(s.config),
        )
        for s in topics.specs()
        if s.name not in existing
    ]
    if not new:
        return []
    created = []
    for name, future in admin.create_topics(new, operation_timeout=30).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise KafkaUnavailableError(f"cannot create topic {name}: {exc}") from exc
    return created


def topic_size(bootstrap: str, topic: str, timeout: float = 10.0) -> int:
    """Messages currently held in a topic (high minus low watermark, summed over partitions)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "herald-size", "enable.auto.commit": False}
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        total = 0
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            total += high - low
        return total
    finally:
        consumer.close()


def describe_topics(bootstrap: str) -> dict[str, dict[str, int]]:
    """Partition count and messages held per Herald topic."""
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15)
    return {
        name: {"partitions": len(topic.partitions), "messages": topic_size(bootstrap, name)}
        for name, topic in sorted(meta.topics.items())
        if "herald." in name and "herald-" not in name
    }


def read_values(bootstrap: str, topic: str, timeout: float = 60.0) -> list[bytes]:
    """Every message value held in ``topic`` now, partition by partition (up to the high watermarks)."""
    return [value for _key, value in read_messages(bootstrap, topic, timeout)]


def read_messages(bootstrap: str, topic: str, timeout: float = 60.0) -> list[tuple[bytes | None, bytes]]:
    """Every (key, value) held in ``topic`` now, partition by partition (up to the high watermarks)."""
    import time

    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "herald-read", "enable.auto.commit": False}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        values: list[tuple[bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout
        positions = dict.fromkeys(ends, 0)
        while any(positions[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(f"could not read {topic} to its end within {timeout}s")
            for m in consumer.consume(10_000, timeout=0.5):
                partition, offset, value = m.partition(), m.offset(), m.value()
                if m.error() is None and partition is not None and offset is not None:
                    positions[partition] = offset + 1
                    if value is not None and offset < ends[partition]:
                        values.append((m.key(), value))
        return values
    finally:
        consumer.close()
