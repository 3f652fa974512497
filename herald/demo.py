"""The demo: local Kafka + one worker owning the embedded warehouse, traffic from the simulator,
wait until everything is processed, report what landed where, stop what was started."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from herald.errors import HeraldError
from herald.local import bootstrap_servers, local_kafka, query_endpoint
from herald.settings import Settings
from herald.supervise import WorkerProcess
from streams.emitter import Emitter
from streams.lag import consumer_lag
from streams.topics import ensure_topics, topic_size

Progress = Callable[[str], None]


@dataclass
class Stack:
    settings: Settings
    bootstrap: str
    kafka_started: bool
    worker: WorkerProcess

    def sql_scalar(self, query: str) -> Any:
        _, rows = query_endpoint(self.worker.api, query)
        return rows[0][0] if rows else None

    def wait_caught_up(self, progress: Progress | None = None, timeout: float = 600) -> float:
        """Block until the worker has committed every offset of the lifecycle topic; return seconds waited."""
        started = time.monotonic()
        while True:
            lag = sum(
                consumer_lag(
                    self.bootstrap, self.settings.topics.sink_group, self.settings.topics.lifecycle
                ).values()
            )
            if progress:
                written = self.worker.health()["written"]
                progress(f"processing: {written} rows written by the worker, lag {lag}")
            if lag == 0:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise HeraldError(f"worker still {lag} messages behind after {timeout}s")
            time.sleep(0.5)

    def stop(self) -> None:
        self.worker.stop()
        if self.kafka_started:
            local_kafka(self.settings).stop()


def start_stack(settings: Settings) -> Stack:
    bootstrap, started = bootstrap_servers(settings, start=True)
    ensure_topics(bootstrap, settings.partitions, settings.replication_factor, settings.topics)
    env = {
        "HERALD_DATA_DIR": str(settings.data_dir.resolve()),
        "HERALD_KAFKA_BOOTSTRAP": bootstrap,
        "HERALD_API_PORT": str(settings.api_port),
        "HERALD_NAMESPACE": settings.namespace,
        "HERALD_WORKER_NAME": settings.worker_name,
        "HERALD_PARTITIONS": str(settings.partitions),
    }
    if settings.warehouse_dsn:
        env["HERALD_WAREHOUSE_DSN"] = settings.warehouse_dsn
    worker = WorkerProcess(env, settings.data_dir / "logs" / f"{settings.worker_name}.log")
    try:
        worker.start()
    except BaseException:
        if started:
            local_kafka(settings).stop()
        raise
    return Stack(settings, bootstrap, started, worker)


def run_counts_demo(
    settings: Settings, events: int, invalid: int, seed: int, progress: Progress | None
) -> dict[str, Any]:
    """Produce exactly ``events`` valid and ``invalid`` bad messages and report where they landed."""
    from simulator.run import emit_exact

    stack = start_stack(settings)
    emitter: Emitter | None = None
    try:
        before_rows = int(stack.sql_scalar("SELECT count() FROM events"))
        before_dlq = topic_size(stack.bootstrap, settings.topics.dead_letter)
        emitter = Emitter(
            stack.bootstrap, settings.topics.lifecycle, max_event_bytes=10 * settings.max_event_bytes
        )
        t0 = time.monotonic()
        if progress:
            progress(f"producing {events} valid and {invalid} invalid events")
        emit_exact(
            emitter, events, invalid, seed, start=datetime.now(UTC), max_bytes=settings.max_event_bytes
        )
        produce_s = time.monotonic() - t0
        stack.wait_caught_up(progress)
        elapsed = time.monotonic() - t0
        rows = int(stack.sql_scalar("SELECT count() FROM events"))
        return {
            "produced": events,
            "invalid": invalid,
            "warehouse_events": rows,
            "warehouse_events_added": rows - before_rows,
            "dlq": topic_size(stack.bootstrap, settings.topics.dead_letter) - before_dlq,
            "duplicates": int(stack.sql_scalar("SELECT sum(duplicates) FROM ingest_batches")),
            "produce_seconds": round(produce_s, 2),
            "end_to_end_seconds": round(elapsed, 2),
            "events_per_second": round((events + invalid) / elapsed, 1) if elapsed else None,
            "data_dir": str(settings.data_dir.resolve()),
        }
    finally:
        if emitter is not None:
            emitter.close()
        stack.stop()


TENANT_SUMMARY = """
SELECT tenant_id, channel,
       sum(requested) AS n_requested, sum(dispatched) AS n_dispatched, sum(delivered) AS n_delivered,
       round(n_delivered / nullIf(n_dispatched, 0), 4) AS delivery_rate,
       round(sum(opened) / nullIf(n_delivered, 0), 4) AS open_rate,
       round(sum(clicked) / nullIf(n_delivered, 0), 4) AS click_rate,
       round(sum(delivery_latency_ms_sum) / nullIf(sum(delivery_latency_count), 0)) AS avg_delivery_ms
FROM delivery_minute GROUP BY tenant_id, channel ORDER BY tenant_id, channel
"""


def run_traffic_demo(
    settings: Settings, duration_s: float, rate: float, seed: int, progress: Progress | None
) -> dict[str, Any]:
    """A few minutes of the mixed scenario at a fixed arrival rate, with progress, then a summary."""
    from simulator.run import simulate

    stack = start_stack(settings)
    emitter: Emitter | None = None
    try:
        emitter = Emitter(
            stack.bootstrap, settings.topics.lifecycle, max_event_bytes=10 * settings.max_event_bytes
        )

        def show(p: Any) -> None:
            if progress:
                written = stack.worker.health()["written"]
                progress(
                    f"{p.elapsed_s:6.0f}s/{duration_s:.0f}s  emitted {p.events} events "
                    f"({p.invalid} invalid)  warehouse rows {written}  behind schedule {p.behind_s:.1f}s"
                )

        t0 = time.monotonic()
        summary = simulate(
            emitter,
            start=datetime.now(UTC),
            rate_per_s=rate,
            duration_s=duration_s,
            seed=seed,
            scenario="mixed",
            max_bytes=settings.max_event_bytes,
            progress=show,
            progress_every_s=2.0,
        )
        stack.wait_caught_up(progress)
        elapsed = time.monotonic() - t0
        columns, rows = query_endpoint(stack.worker.api, TENANT_SUMMARY)
        return {
            "scenario": summary.scenario,
            "produced": summary.events,
            "invalid": summary.invalid,
            "notifications": summary.notifications,
            "warehouse_events": int(stack.sql_scalar("SELECT count() FROM events")),
            "dlq": topic_size(stack.bootstrap, settings.topics.dead_letter),
            "duplicates": int(stack.sql_scalar("SELECT sum(duplicates) FROM ingest_batches")),
            "seconds": round(elapsed, 1),
            "anomaly_windows": [
                {
                    "kind": w.kind,
                    "start_s": w.start_s,
                    "end_s": w.end_s,
                    "tenant": w.tenant_id,
                    "channel": w.channel,
                    "provider": w.provider,
                }
                for w in summary.windows
            ],
            "tenants": [dict(zip(columns, row, strict=True)) for row in rows],
            "data_dir": str(settings.data_dir.resolve()),
        }
    finally:
        if emitter is not None:
            emitter.close()
        stack.stop()


def render_report(report: dict[str, Any]) -> str:
    lines = ["", "Herald demo"]
    for key, value in report.items():
        if key not in ("tenants", "anomaly_windows"):
            lines.append(f"  {key:<24} {value}")
    if report.get("anomaly_windows"):
        lines.append("  injected anomalies:")
        for w in report["anomaly_windows"]:
            lines.append(
                f"    {w['kind']:<16} {w['start_s']:>5.0f}s to {w['end_s']:.0f}s  "
                f"{w['tenant'] or '*'} {w['channel'] or '*'} {w['provider'] or '*'}"
            )
    if report.get("tenants"):
        cols = list(report["tenants"][0])
        lines.append("")
        lines.append("  " + "  ".join(f"{c:>14}" for c in cols))
        for row in report["tenants"]:
            lines.append("  " + "  ".join(f"{row[c]!s:>14}" for c in cols))
    lines.append("")
    data_dir = report.get("data_dir")
    lines.append(
        f'Query it: HERALD_DATA_DIR={data_dir} .venv/bin/python cli.py sql "SELECT count() FROM events"'
    )
    return "\n".join(lines)
