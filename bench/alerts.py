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
  minus the event time of the series' first event in the drop (emitted in real time, so also its
  wall-clock emission time); any other alert is listed.

Run: ``python -m bench.alerts [--latency]``; writes bench/results/alerts.json. The live stream, the
drops and the alert reader are also used by ``python -m bench`` (bench/full.py), with several drops.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
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
from simulator.scenarios import DELIVERY_DROP_FACTOR, AnomalyWindow, Scenario
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


@dataclass(frozen=True)
class Drop:
    """A delivery drop (delivered x DELIVERY_DROP_FACTOR) on one series from ``at`` (event time) on."""

    tenant_id: str
    channel: str
    provider: str
    at: datetime

    @property
    def series(self) -> str:
        return f"{self.tenant_id}/{self.channel}/{self.provider}"

    def series_as(self, tenant_prefix: str) -> str:
        """The series name once the traffic's tenants carry ``tenant_prefix`` (see drop_traffic)."""
        return tenant_prefix + self.series


def drop_traffic(
    start: datetime, end: datetime, rate: float, drops: Sequence[Drop], seed: int = 7, tenant_prefix: str = ""
) -> list[dict[str, Any]]:
    """Simulated traffic in [start, end) at ``rate`` notifications/s in event-time order, each drop
    lasting to the end; ``tenant_prefix`` renames the tenants (the drops name the simulator's own)."""
    span = (end - start).total_seconds()
    effect = Effect(delivered_factor=DELIVERY_DROP_FACTOR)
    windows = tuple(
        AnomalyWindow(
            "delivery_drop", (d.at - start).total_seconds(), span, effect, d.tenant_id, d.channel, d.provider
        )
        for d in drops
    )
    notifications = generate_notifications(
        DEFAULT_MODEL, start, rate, span, seed, scenario=Scenario("drops", windows)
    )
    events = [e for e in in_time_order(notifications) if e["occurred_at"] < end]
    if tenant_prefix:
        for e in events:
            e["tenant_id"] = tenant_prefix + e["tenant_id"]
    return events


def first_dropped(events: Sequence[dict[str, Any]], drop: Drop, tenant_prefix: str = "") -> datetime | None:
    """Event time of the first event on the drop's series at or after its start."""
    tenant = tenant_prefix + drop.tenant_id
    return next(
        (
            e["occurred_at"]
            for e in events
            if e["occurred_at"] >= drop.at
            and (e["tenant_id"], e["channel"], e["provider"]) == (tenant, drop.channel, drop.provider)
        ),
        None,
    )


def play(
    events: Iterable[dict[str, Any]], emit: Callable[[dict[str, Any]], None], tick: Callable[[], bool]
) -> None:
    """Emit each event at its event time (those already past flat out), open loop; while waiting, call
    ``tick`` every few ms; it returns False to stop early."""
    for event in events:
        while (wait := (event["occurred_at"] - datetime.now(UTC)).total_seconds()) > 0.002:
            if not tick():
                return
            time.sleep(min(wait, 0.004))
        emit(event)


class AlertWatcher:
    """Reads ``herald.ops.alerts.v1`` from its beginning; each alert with the wall time it was read."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.codec = AvroCodec.for_contract("alert_event")
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-alert-reader-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 50,
            }
        )
        self.consumer.subscribe([topic])
        self.alerts: list[dict[str, Any]] = []

    def poll(self) -> None:
        while (message := self.consumer.poll(0)) is not None:
            if message.error() is None and (value := message.value()) is not None:
                self.alerts.append({**self.codec.decode(value), "seen_at": datetime.now(UTC)})

    def opened(self, series: str, since: datetime) -> dict[str, Any] | None:
        """The first OPENED alert on ``series`` (tenant/channel/provider) read at or after ``since``."""
        return next(
            (
                a
                for a in self.alerts
                if a["status"] == "OPENED"
                and f"{a['tenant_id']}/{a['channel']}/{a['provider']}" == series
                and a["seen_at"] >= since
            ),
            None,
        )

    def close(self) -> None:
        self.consumer.close()


def describe(alert: dict[str, Any]) -> str:
    return f"{alert['status']} {alert['tenant_id']}/{alert['channel']}/{alert['provider']} {alert['metric']}"


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
    watcher = AlertWatcher(bootstrap, settings.topics.alerts)
    try:
        # One continuous stream: 90 minutes of history up to now, sent flat out, then real time.
        now = datetime.now(UTC)
        drop = Drop("acme-home", "SMS", "sms-primary", now + timedelta(seconds=75))
        events = drop_traffic(now - timedelta(minutes=90), now + timedelta(seconds=330), 10, [drop])
        say(f"  alert latency: 90 simulated minutes of history flat out, then real time; the drop starts "
            f"at {drop.at:%H:%M:%S}")  # fmt: skip
        first_bad = first_dropped(events, drop)

        def tick() -> bool:
            watcher.poll()
            return True

        play(events, emitter.emit, tick)
        emitter.flush()
        deadline = time.monotonic() + 120
        while (found := watcher.opened(drop.series, drop.at)) is None and time.monotonic() < deadline:
            watcher.poll()
            time.sleep(0.25)
        others = [describe(a) for a in watcher.alerts if a is not found]
        if found is None or first_bad is None:
            return {"alert_latency_s": None, "other_alerts": others}
        return {
            "alert_latency_s": round((found["seen_at"] - first_bad).total_seconds(), 1),
            "alert_first_seen_minute": found["first_seen"].isoformat(),
            "alert_metric": f"{found['metric']} {found['kind']}",
            "other_alerts": others,
        }
    finally:
        watcher.close()
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
