"""Ingest benchmarks on a real local broker and the embedded warehouse.

Figures (events/s unless said otherwise), each with its baseline from the same run:
- raw_consume_eps: confluent-kafka batch consume of the topic, no decoding (the limit);
- raw_decode_eps: the same plus Avro decode (the limit for anything that reads the contract);
- ingest_apply_eps: the pure decision + warehouse write in-process (no Kafka, no Faust);
- ingest_warehouse_eps: a real worker process catching up on a pre-filled topic, start to lag 0;
- p50/p95/p99_event_to_warehouse_s: produce time -> warehouse row time at a fixed offered rate
  (70% of the measured ingest maximum), open loop.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from herald.settings import Settings, load_settings
from herald.supervise import WorkerProcess
from projections.migrate import migrate
from projections.warehouse import Warehouse
from projections.writer import IngestWriter
from schemas.codec import lifecycle_codec
from simulator.model import DEFAULT_MODEL, generate
from streams.emitter import Emitter
from streams.ingest import SourceMessage
from streams.lag import consumer_lag
from streams.pipeline import IngestPipeline
from streams.replay import CountingDeadLetters
from streams.topics import ensure_topics

Say = Callable[[str], None]


def encoded_events(n: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    codec = lifecycle_codec()
    start = datetime.now(UTC)
    return [
        (e["notification_id"].encode(), codec.encode(e))
        for e in islice(generate(DEFAULT_MODEL, start, 500, float("inf"), seed), n)
    ]


def fill_topic(bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]]) -> float:
    """Produce pre-encoded events through the emitter (acks=all, idempotent); events/s."""
    emitter = Emitter(bootstrap, topic)
    t0 = time.perf_counter()
    for key, value in payloads:
        emitter.emit_raw(key, value)
    emitter.flush(120)
    return len(payloads) / (time.perf_counter() - t0)


def consume_all(bootstrap: str, topic: str, expected: int, handle: Callable[[Any], object]) -> float:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
        }
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        seen = 0
        t0 = time.perf_counter()
        while seen < expected:
            batch = consumer.consume(10_000, timeout=1.0)
            for m in batch:
                if m.error() is None:
                    handle(m)
                    seen += 1
        return expected / (time.perf_counter() - t0)
    finally:
        consumer.close()


def ingest_apply_eps(settings: Settings, payloads: list[tuple[bytes, bytes]], batch: int) -> float:
    warehouse = Warehouse(settings.warehouse)
    try:
        migrate(warehouse)
        dead_letters = CountingDeadLetters()  # duck-typed stand-in for the DLQ producer
        pipeline = IngestPipeline(settings, IngestWriter(warehouse, "bench"), lifecycle_codec(), dead_letters)  # type: ignore[arg-type]
        messages = [SourceMessage("bench", i % 4, i // 4, k, v) for i, (k, v) in enumerate(payloads)]
        t0 = time.perf_counter()
        for i in range(0, len(messages), batch):
            pipeline.apply(messages[i : i + batch])
        return len(messages) / (time.perf_counter() - t0)
    finally:
        warehouse.close()


def worker_env(settings: Settings, bootstrap: str) -> dict[str, str]:
    return {
        "HERALD_DATA_DIR": str(settings.data_dir),
        "HERALD_KAFKA_BOOTSTRAP": bootstrap,
        "HERALD_NAMESPACE": settings.namespace,
        "HERALD_API_PORT": "0",
        "HERALD_LOG_LEVEL": "warning",
        "HERALD_PARTITIONS": str(settings.partitions),
    }


def wait_lag_zero(settings: Settings, bootstrap: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while sum(consumer_lag(bootstrap, settings.topics.sink_group, settings.topics.lifecycle).values()) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError("worker did not catch up")
        time.sleep(0.2)


def catch_up_eps(settings: Settings, bootstrap: str, n: int, say: Say) -> tuple[float, WorkerProcess]:
    """Start a worker on a pre-filled topic; events/s from its start to lag 0."""
    worker = WorkerProcess(worker_env(settings, bootstrap), settings.data_dir / "worker.log")
    t0 = time.perf_counter()
    worker.start()
    say(f"  worker up after {time.perf_counter() - t0:.1f}s, catching up on {n} events")
    t1 = time.perf_counter()
    wait_lag_zero(settings, bootstrap)
    return n / (time.perf_counter() - t1), worker


def live_eps_with_workers(
    work_dir: Path, bootstrap: str, payloads: list[tuple[bytes, bytes]], workers: int, say: Say
) -> float:
    """Start ``workers`` workers on an empty topic (one data dir: the first owns chDB, the others share
    it), wait until they split the partitions, then produce the payloads; events/s from the first
    produce to lag 0. The same measurement for 1 and 2 workers gives the scaling ratio."""
    settings = load_settings(
        data_dir=work_dir / f"scale{workers}",
        kafka_bootstrap=bootstrap,
        namespace=f"scale{workers}{uuid.uuid4().hex[:6]}",
        api_port=0,
    )
    ensure_topics(bootstrap, settings.partitions, 1, settings.topics)
    started = []
    try:
        for i in range(workers):
            env = {**worker_env(settings, bootstrap), "HERALD_WORKER_NAME": f"worker-{i + 1}"}
            started.append(WorkerProcess(env, settings.data_dir / f"worker-{i + 1}.log").start())
        deadline = time.monotonic() + 90
        while not all(w.health()["partitions"] for w in started):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not split the partitions")
            time.sleep(0.2)
        t0 = time.perf_counter()
        fill_topic(bootstrap, settings.topics.lifecycle, payloads)
        wait_lag_zero(settings, bootstrap)
        eps = len(payloads) / (time.perf_counter() - t0)
        say(f"  {workers} worker(s), fill + ingest: {eps:,.0f} events/s")
        return eps
    finally:
        for w in reversed(started):  # the owner of the embedded warehouse stops last
            w.stop()


def latency_at_rate(
    settings: Settings, bootstrap: str, worker: WorkerProcess, rate: float, seconds: float, say: Say
) -> dict[str, float]:
    """Offer ``rate`` events/s (open loop) and measure produce -> warehouse row time per event."""
    from herald.local import query_endpoint

    payloads = encoded_events(int(rate * seconds), seed=99)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
    )
    sent_at: dict[tuple[int, int], float] = {}

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            sent_at[(msg.partition(), msg.offset())] = msg.timestamp()[1] / 1000.0

    since_ms = int(time.time() * 1000)
    t0 = time.perf_counter()
    for i, (key, value) in enumerate(payloads):
        due = t0 + i / rate
        while (now := time.perf_counter()) < due:
            time.sleep(min(0.002, due - now))
        producer.produce(settings.topics.lifecycle, value=value, key=key, on_delivery=on_delivery)
        producer.poll(0)
    producer.flush(60)
    wait_lag_zero(settings, bootstrap)
    _, rows = query_endpoint(
        worker.api,
        "SELECT _partition, _offset, toUnixTimestamp64Milli(ingested_at) FROM events "
        f"WHERE ingested_at >= fromUnixTimestamp64Milli({since_ms}) AND _offset % 4 = 0",  # a 1-in-4 sample
    )
    typed: list[tuple[int, int, int]] = [(p, o, ms) for p, o, ms in rows]  # type: ignore[misc]
    delays = sorted(ms / 1000.0 - sent_at[(p, o)] for p, o, ms in typed if (p, o) in sent_at)
    say(f"  {len(delays)} of {len(payloads)} events matched for latency")
    q = statistics.quantiles(delays, n=100)
    return {"p50": q[49], "p95": q[94], "p99": q[98]}


def run(bootstrap: str, work_dir: Path, n: int, say: Say) -> dict[str, Any]:
    results: dict[str, Any] = {"events": n}
    settings = load_settings(
        data_dir=work_dir / "herald",
        kafka_bootstrap=bootstrap,
        namespace=f"bench{uuid.uuid4().hex[:6]}",
        api_port=0,
    )
    ensure_topics(bootstrap, settings.partitions, 1, settings.topics)
    say(f"encoding {n} simulated events")
    payloads = encoded_events(n)
    results["produce_eps"] = fill_topic(bootstrap, settings.topics.lifecycle, payloads)
    say(f"  produced at {results['produce_eps']:,.0f}/s")
    results["raw_consume_eps"] = consume_all(bootstrap, settings.topics.lifecycle, n, lambda m: m.value())
    say(f"raw consume {results['raw_consume_eps']:,.0f}/s")
    codec = lifecycle_codec()
    results["raw_decode_eps"] = consume_all(
        bootstrap, settings.topics.lifecycle, n, lambda m: codec.decode(m.value())
    )
    say(f"raw consume + decode {results['raw_decode_eps']:,.0f}/s")
    apply_settings = load_settings(data_dir=work_dir / "apply")
    results["ingest_apply_eps"] = ingest_apply_eps(apply_settings, payloads, settings.batch_max_events)
    say(f"in-process decide + write {results['ingest_apply_eps']:,.0f}/s")
    eps, worker = catch_up_eps(settings, bootstrap, n, say)
    results["ingest_warehouse_eps"] = eps
    say(f"worker ingest -> warehouse {eps:,.0f}/s")
    try:
        rate = 0.7 * eps
        say(f"latency at 70% of max: {rate:,.0f} events/s for 20 s")
        lat = latency_at_rate(settings, bootstrap, worker, rate, 20, say)
        results.update({f"{k}_event_to_warehouse_s": v for k, v in lat.items()})
        results["offered_rate_eps"] = rate
    finally:
        worker.stop()
    say("scaling: 1 vs 2 workers on 4 partitions")
    results["scale_1_worker_eps"] = live_eps_with_workers(work_dir, bootstrap, payloads, 1, say)
    results["scale_2_workers_eps"] = live_eps_with_workers(work_dir, bootstrap, payloads, 2, say)
    results["ratio_2_workers_to_1"] = results["scale_2_workers_eps"] / results["scale_1_worker_eps"]
    results["ratio_ingest_to_raw_decode"] = results["ingest_warehouse_eps"] / results["raw_decode_eps"]
    results["ratio_apply_to_raw_decode"] = results["ingest_apply_eps"] / results["raw_decode_eps"]
    return results
