"""Topic names (``herald.<area>.<name>.v<N>``) and their creation on a broker."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from herald.errors import KafkaUnavailableError

LIFECYCLE = "herald.lifecycle.events.v1"  # key: notification_id, so one notification's events stay in order
DEAD_LETTER = "herald.lifecycle.dlq.v1"  # key: the original key; value: the original bytes


@dataclass(frozen=True)
class TopicSpec:
    name: str
    config: tuple[tuple[str, str], ...] = ()


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
        return self._name("herald")

    def specs(self) -> tuple[TopicSpec, ...]:
        return (
            TopicSpec(
                self.lifecycle, (("retention.ms", str(30 * 86_400_000)), ("max.message.bytes", "4194304"))
            ),
            TopicSpec(
                self.dead_letter, (("retention.ms", str(90 * 86_400_000)), ("max.message.bytes", "4194304"))
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
            s.name, num_partitions=partitions, replication_factor=replication_factor, config=dict(s.config)
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


def describe_topics(bootstrap: str) -> dict[str, dict[str, int]]:
    """Partition count and total messages (sum of high watermarks minus low) per Herald topic."""
    from confluent_kafka import Consumer, TopicPartition

    admin = AdminClient({"bootstrap.servers": bootstrap})
    meta = admin.list_topics(timeout=15)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "herald-describe", "enable.auto.commit": False}
    )
    out: dict[str, dict[str, int]] = {}
    try:
        for name, topic in sorted(meta.topics.items()):
            if "herald." not in name or "herald-" in name:
                continue
            total = 0
            for p in topic.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                total += high - low
            out[name] = {"partitions": len(topic.partitions), "messages": total}
    finally:
        consumer.close()
    return out
