"""What the live metrics and the alert monitor cost, and how soon an alert follows an incident.

Three figures, each against a baseline measured in the same run:

* rollup cost: the ingest apply path (decode, dedup, insert) into a warehouse with every rollup
  materialized view (delivery_minute, delivery_hour, delivery_cohort_minute: counters and latency
  t-digests) against the same warehouse with those views dropped. The ratio is the cost of the
  streaming metrics per event.
* monitor cost: the alert monitor's decisions (six detectors per series, alert tracking) per
  closed minute, as events/s of the traffic behind those minutes; baseline: summing the same
  minute rows into plain counters.
* alert latency (``--latency``, about eight minutes): one continuous live stream, its first 90
  simulated minutes sent flat out (the monitor's warm-up), then in real time; 75 s into the real-time
  part a delivery drop starts on one series. Latency = the alert read from ``herald.ops.alerts.v1``
  minus the wall-clock time the first event of the drop was emitted; any other alert is listed.

Run: ``python -m bench.alerts [--latency]``; writes bench/results/alerts.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from analytics.alerting import MINUTE_MS, SeriesKey
from analytics.monitor import AlertMonitor, MinuteCounts, MonitorConfig
from herald.logging import configure_logging
from herald.settings import Settings, load_settings
from herald.supervise import WorkerProcess
from infra.local_kafka import LocalKafka, free_port
from projections.migrate import migrate
from projections.warehouse import Warehouse
from projections.writer import IngestWriter
from schemas.codec import AvroCodec, lifecycle_codec
from simulator.model import DEFAULT_MODEL, Effect, generate_notifications, in_time_order
from simulator.scenarios import AnomalyWindow, Scenario
from streams.emitter import Emitter
from streams.ingest import SourceMessage
from streams.pipeline import IngestPipeline
from streams.replay import CountingDeadLetters
from streams.topics import ensure_topics

RESULTS = Path(__file__).parent / "results"
ROLLUP_VIEWS = ("delivery_minute_mv", "delivery_hour_mv", "delivery_cohort_minute_mv")
START = datetime(2026, 3, 2, 8, tzinfo=UTC)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def live_events(hours: float, rate: float, seed: int = 3) -> list[dict[str, Any]]:
    end = START + timedelta(hours=hours)
    notifications = generate_notifications(DEFAULT_MODEL, START, rate, hours * 3600, seed)
    return [e for e in in_time_order(notifications) if e["occurred_at"] < end]


def apply_eps(warehouse: Warehouse, settings: Settings, payloads: list[bytes], run: str) -> float:
    """Events/s of the ingest apply path (decode, dedup, insert; the views fire inside the insert)."""
    dead_letters = CountingDeadLetters()  # duck-typed stand-in for the DLQ producer
    pipeline = IngestPipeline(settings, IngestWriter(warehouse, "bench"), lifecycle_codec(), dead_letters)  # type: ignore[arg-type]
    messages = [SourceMessage(run, i % 4, i // 4, None, v) for i, v in enumerate(payloads)]
    t0 = time.perf_counter()
    for i in range(0, len(messages), 10_000):
        pipeline.apply(messages[i : i + 10_000])
    return len(messages) / (time.perf_counter() - t0)


def rollup_cost(work_dir: Path, payloads: list[bytes]) -> tuple[float, float]:
    """(events/s with every rollup view, events/s with them dropped) on one embedded warehouse (one
    chDB path per process), alternating twice so neither run always goes first."""
    settings = load_settings(data_dir=work_dir)
    warehouse = Warehouse(f"chdb://{work_dir / 'warehouse'}")
    try:
        migrate(warehouse)
        views = {v: warehouse.scalar(f"SHOW CREATE TABLE {v}") for v in ROLLUP_VIEWS}
        full: list[float] = []
        bare: list[float] = []
        for round_ in range(2):
            for with_views in (True, False):
                for table in ("events", "ingest_batches", *(t.removesuffix("_mv") for t in ROLLUP_VIEWS)):
                    warehouse.command(f"TRUNCATE TABLE {table}")
                for view, ddl in views.items():
                    warehouse.command(f"DROP VIEW IF EXISTS {view}")
                    if with_views:
                        warehouse.command(ddl.replace("\\n", "\n"))
                eps = apply_eps(warehouse, settings, payloads, f"bench-{round_}-{with_views}")
                (full if with_views else bare).append(eps)
        return max(full), max(bare)
    finally:
        warehouse.close()


def minute_rows(events: list[dict[str, Any]]) -> dict[int, dict[SeriesKey, MinuteCounts]]:
    counts: dict[tuple[int, SeriesKey], Counter[str]] = defaultdict(Counter)
    for e in events:
        if e.get("provider"):
            minute = int(e["occurred_at"].timestamp() * 1000) // MINUTE_MS * MINUTE_MS
            counts[minute, SeriesKey(e["tenant_id"], e["channel"], e["provider"])][e["event_type"]] += 1
    rows: dict[int, dict[SeriesKey, MinuteCounts]] = defaultdict(dict)
    for (minute, series), c in counts.items():
        delivered = c["DELIVERED"]
        rows[minute][series] = MinuteCounts(
            c["DISPATCHED"], delivered, c["FAILED"], c["BOUNCED"], c["OPENED"], 4000.0, delivered
        )
    return rows


def monitor_eps(events: list[dict[str, Any]]) -> tuple[float, float, int]:
    """(monitor events/s, baseline events/s, detectors) over the same minute rows."""
    rows = minute_rows(events)
    minutes = sorted(rows)
    monitor = AlertMonitor(MonitorConfig(grace_minutes=30), live_from_ms=minutes[0])
    t0 = time.perf_counter()
    for minute in minutes:
        monitor.observe(minute, rows[minute])
    decide_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    total: Counter[str] = Counter()
    for minute in minutes:
        for counts in rows[minute].values():
            total["dispatched"] += counts.dispatched
            total["delivered"] += counts.delivered
            total["failed"] += counts.failed + counts.bounced
    baseline_s = time.perf_counter() - t0
    return len(events) / decide_s, len(events) / baseline_s, monitor.detector_count


def alert_latency(work_dir: Path, bootstrap: str) -> dict[str, Any]:
    settings = load_settings(
        data_dir=work_dir / "latency", kafka_bootstrap=bootstrap, namespace="bench-alerts"
    )
    ensure_topics(bootstrap, settings.partitions, 1, settings.topics)
    worker = WorkerProcess(
        {
            "HERALD_DATA_DIR": str(settings.data_dir),
            "HERALD_KAFKA_BOOTSTRAP": bootstrap,
            "HERALD_NAMESPACE": settings.namespace,
            "HERALD_API_PORT": "0",
            "HERALD_LOG_LEVEL": "warning",
            "HERALD_ALERT_GRACE_MINUTES": "30",
            "HERALD_ALERT_LATENESS_S": "5",
        },
        settings.data_dir / "worker.log",
    ).start()
    emitter = Emitter(bootstrap, settings.topics.lifecycle)
    codec = AvroCodec.for_contract("alert_event")
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-alert-reader", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([settings.topics.alerts])
    alerts: list[dict[str, Any]] = []

    def watch() -> None:
        while (message := consumer.poll(0)) is not None:
            if message.error() is None and (value := message.value()) is not None:
                alerts.append({**codec.decode(value), "seen_at": datetime.now(UTC)})

    try:
        # One continuous stream: 90 minutes of history up to now, sent flat out, then real time.
        now = datetime.now(UTC)
        start = now - timedelta(minutes=90)
        drop_at = now + timedelta(seconds=75)
        end = now + timedelta(seconds=330)
        window = AnomalyWindow(
            "delivery_drop", (drop_at - start).total_seconds(), (end - start).total_seconds(),
            Effect(delivered_factor=0.3), tenant_id="acme-home", channel="SMS", provider="sms-primary",
        )  # fmt: skip
        notifications = generate_notifications(
            DEFAULT_MODEL, start, 10, (end - start).total_seconds(), 7, scenario=Scenario("drop", (window,))
        )
        say("  alert latency: 90 simulated minutes of history flat out, then real time; the drop starts "
            f"at {drop_at:%H:%M:%S}")  # fmt: skip
        first_bad: datetime | None = None
        for event in in_time_order(notifications):
            at = event["occurred_at"]
            if at >= end:
                break
            wait = (at - datetime.now(UTC)).total_seconds()
            if wait > 0.002:
                watch()
                time.sleep(wait)
            emitter.emit(event)
            if first_bad is None and at >= drop_at:
                first_bad = datetime.now(UTC)
        emitter.flush()
        deadline = time.monotonic() + 120
        target = [a for a in alerts if a["status"] == "OPENED" and a["provider"] == "sms-primary"]
        while not target and time.monotonic() < deadline:
            watch()
            target = [a for a in alerts if a["status"] == "OPENED" and a["provider"] == "sms-primary"]
            time.sleep(0.25)
        others = [
            f"{a['tenant_id']}/{a['channel']}/{a['provider']} {a['metric']}"
            for a in alerts
            if a not in target
        ]
        if not target or first_bad is None:
            return {"alert_latency_s": None, "other_alerts": others}
        found = target[0]
        return {
            "alert_latency_s": round((found["seen_at"] - first_bad).total_seconds(), 1),
            "alert_first_seen_minute": found["first_seen"].isoformat(),
            "alert_metric": f"{found['metric']} {found['kind']}",
            "other_alerts": others,
        }
    finally:
        consumer.close()
        emitter.close()
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", action="store_true", help="also measure alert latency (~5 min)")
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours of traffic for the costs")
    args = parser.parse_args()
    configure_logging("console", "warning")
    results: dict[str, Any] = {}
    say(f"generating {args.hours:g} h of live traffic at 20 notifications/s")
    events = live_events(args.hours, 20.0)
    codec = lifecycle_codec()
    payloads = [codec.encode(e) for e in events]
    results["events"] = len(events)
    with tempfile.TemporaryDirectory(prefix="herald-bench-alerts-") as tmp:
        say("ingest apply with and without the rollup views (baseline), twice each")
        full, bare = rollup_cost(Path(tmp) / "rollups", payloads)
        results.update(
            apply_eps_without_rollups=round(bare),
            apply_eps_with_rollups=round(full),
            rollup_cost_ratio=round(bare / full, 3),
            rollup_cost_us_per_event=round(1e6 / full - 1e6 / bare, 2),
        )
        say("alert monitor decisions over the same traffic")
        decide, baseline, detectors = monitor_eps(events)
        results.update(
            monitor_eps=round(decide),
            monitor_baseline_eps=round(baseline),
            monitor_cost_ratio=round(baseline / decide, 1),
            monitor_us_per_event=round(1e6 / decide, 3),
            monitor_detectors=detectors,
        )
        if args.latency:
            broker = LocalKafka(Path(tmp) / "kafka", free_port())
            say("starting a local Kafka broker")
            bootstrap = broker.start()
            try:
                results.update(alert_latency(Path(tmp), bootstrap))
            finally:
                broker.stop()
    results["measured_at"] = datetime.now(UTC).isoformat()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "alerts.json").write_text(json.dumps(results, indent=2))
    for key, value in results.items():
        print(f"{key:<32}{value!s:>28}")


if __name__ == "__main__":
    main()
