"""How far a consumer group is behind: end offsets minus committed offsets, per partition."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from herald.errors import KafkaUnavailableError


def consumer_lag(bootstrap: str, group: str, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """Lag per partition. Retries while the group coordinator moves or loads (a fresh broker)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    deadline = time.monotonic() + timeout
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        tps = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        while True:
            try:
                committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
                break
            except KafkaException as exc:
                if time.monotonic() > deadline:  # NOT_COORDINATOR and friends pass; give them time
                    raise KafkaUnavailableError(f"cannot read offsets of group {group}: {exc}") from exc
                time.sleep(0.2)
        lag = {}
        for tp in tps:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            done = committed.get(tp.partition, -1)
            lag[tp.partition] = high - (done if done >= 0 else low)
        return lag
    finally:
        consumer.close()
