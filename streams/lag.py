"""How far a consumer group is behind: end offsets minus committed offsets, per partition."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition


def consumer_lag(bootstrap: str, group: str, topic: str, timeout: float = 10.0) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        tps = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=timeout)}
        lag = {}
        for tp in tps:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            done = committed.get(tp.partition, -1)
            lag[tp.partition] = high - (done if done >= 0 else low)
        return lag
    finally:
        consumer.close()
