"""The demo: local Kafka + one worker owning the embedded warehouse, traffic from the simulator,
wait until everything is processed, report what landed where, stop what was started."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from herald.errors import HeraldError
from herald.local import bootstrap_servers, local_kafka, query_endpoint
from herald.settings import BUNDLED_GUARDRAILS, Settings
from herald.supervise import WorkerProcess
from providers.local.process import LocalProvidersProcess
from streams.emitter import Emitter
from streams.lag import consumer_lag
from streams.topics import ensure_topics, topic_size
from web.auth import new_key

Progress = Callable[[str], None]


@dataclass
class Stack:
    settings: Settings
    bootstrap: str
    kafka_started: bool
    worker: WorkerProcess
    providers: LocalProvidersProcess | None = None
    keys: dict[str, str] | None = None  # demo API keys by holder ("ops" is global) when it has keys

    def sql(self, query: str) -> tuple[list[str], list[list[object]]]:
        return query_endpoint(self.worker.api, query, api_key=(self.keys or {}).get("ops"))

    def sql_scalar(self, query: str) -> Any:
        _, rows = self.sql(query)
        return rows[0][0] if rows else None

    def api_get(self, path: str, holder: str) -> tuple[int, Any]:
        """GET an API path with one of the demo keys: (status, JSON body)."""
        keys = self.keys or {}
        response = httpx.get(f"{self.worker.api}{path}", headers={"X-Api-Key": keys[holder]}, timeout=30)
        return response.status_code, response.json()

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

    def wait_monitor(self, minute: datetime, progress: Progress | None = None, timeout: float = 120) -> None:
        """Block until the alert monitor has judged every minute before ``minute``."""
        started = time.monotonic()
        while True:
            monitor = self.worker.health().get("monitor") or {}
            upto = monitor.get("next_minute")
            if upto and datetime.fromisoformat(upto) >= minute:
                return
            if progress:
                progress(f"alert monitor at {_clock(upto)}, waiting for {minute:%H:%M}")
            if time.monotonic() - started > timeout:
                raise HeraldError(f"alert monitor still at {upto} after {timeout}s (wanted {minute})")
            time.sleep(0.5)

    def stop(self) -> None:
        self.worker.stop()
        if self.providers is not None:
            self.providers.stop()
        if self.kafka_started:
            local_kafka(self.settings).stop()


DEMO_KEYS = (("ops", "*", "admin"), ("acme", "acme-home", "analyst"), ("brightfix", "brightfix", "analyst"))


def demo_keys(settings: Settings) -> tuple[Path, dict[str, str]]:
    """Fresh API keys for the demo: a global ops key and one analyst key per demo tenant. The keys
    file (hashes only) is what the worker loads; the keys themselves go to demo-keys.txt (mode 600)
    beside it, to paste into the dashboard."""
    keys: dict[str, str] = {}
    entries = []
    for holder, tenant, role in DEMO_KEYS:
        keys[holder], entry = new_key(f"demo-{holder}", tenant, role)  # type: ignore[arg-type]
        entries.append(entry)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / "demo-keys.yaml"
    path.write_text(yaml.safe_dump({"keys": entries}, sort_keys=False))
    plain = settings.data_dir / "demo-keys.txt"
    plain.write_text(
        "".join(f"{holder}\t{tenant}\t{role}\t{keys[holder]}\n" for holder, tenant, role in DEMO_KEYS)
    )
    plain.chmod(0o600)
    return path, keys


def start_stack(
    settings: Settings,
    *,
    with_providers: bool = False,
    keys: dict[str, str] | None = None,
    **extra_env: str,
) -> Stack:
    """Local Kafka (unless one is configured) and a worker; with ``with_providers`` also the four
    local delivery providers, which the worker's dispatch agent then sends through. ``keys`` are the
    demo keys the worker's keys file (HERALD_API_KEYS_FILE in ``extra_env``) holds."""
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
    providers = None
    worker = WorkerProcess(env, settings.data_dir / "logs" / f"{settings.worker_name}.log")
    try:
        if with_providers:
            providers = LocalProvidersProcess(settings.data_dir / "logs" / "providers.log").start()
            env["HERALD_PROVIDERS_FILE"] = str(providers.ready_file)
        env.update(extra_env)
        worker.start()
    except BaseException:
        if providers is not None:
            providers.stop()
        if started:
            local_kafka(settings).stop()
        raise
    return Stack(settings, bootstrap, started, worker, providers, keys)


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


ALERTS_REPORT = """
SELECT status, tenant_id, channel, provider, metric, kind, severity, round(observed, 4) AS observed,
       round(expected, 4) AS expected, first_seen, resolved_at, dashboard_url, runbook_url
FROM alerts_current ORDER BY first_seen
"""


def run_traffic_demo(
    settings: Settings,
    duration_s: float,
    rate: float,
    seed: int,
    progress: Progress | None,
    *,
    scenario: str = "alert_drill",
    speedup: float = math.inf,
    grace_minutes: int = 30,
    with_dispatch: bool = True,
) -> dict[str, Any]:
    """Live traffic (every event at its own time, in order) for ``duration_s`` simulated seconds,
    ``speedup`` times faster than real time, with the scenario's injected incident; waits until the
    warehouse and the alert monitor have seen everything, then reports traffic and alerts."""
    from experiments.definitions import load_experiments
    from policies.segments import load_segments
    from simulator.run import simulate

    experiments_file = settings.experiments_file or BUNDLED_GUARDRAILS.with_name("experiments.yaml")
    segments = load_segments(settings.segments)
    experiments = (load_experiments(experiments_file, segments), segments)
    keys_file, keys = demo_keys(settings)
    stack = start_stack(
        settings,
        with_providers=with_dispatch,
        keys=keys,
        HERALD_API_KEYS_FILE=str(keys_file.resolve()),
        HERALD_EXPERIMENTS_FILE=str(experiments_file.resolve()),
        HERALD_SEGMENTS_FILE=str(settings.segments.resolve()),
        HERALD_EXPERIMENTS_INTERVAL_S="2",
        HERALD_SEGMENT_SNAPSHOT_S="60",
        HERALD_ALERT_GRACE_MINUTES=str(grace_minutes),
        HERALD_ALERT_LATENESS_S=str(min(settings.alert_lateness_s, 5.0)),
    )
    emitter: Emitter | None = None
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(seconds=duration_s)
    if speedup != math.inf:
        start = datetime.now(UTC)
    try:
        emitter = Emitter(
            stack.bootstrap, settings.topics.lifecycle, max_event_bytes=10 * settings.max_event_bytes
        )

        def show(p: Any) -> None:
            if progress:
                health = stack.worker.health()
                monitor = health.get("monitor") or {}
                progress(
                    f"{p.elapsed_s:5.0f}s  emitted {p.events} events ({p.invalid} invalid)  warehouse rows "
                    f"{health['written']}  monitor at {_clock(monitor.get('next_minute'))}  "
                    f"alerts {monitor.get('published', 0)}"
                )

        t0 = time.monotonic()
        summary = simulate(
            emitter,
            start=start,
            rate_per_s=rate,
            duration_s=duration_s,
            seed=seed,
            scenario=scenario,
            max_bytes=settings.max_event_bytes,
            progress=show,
            progress_every_s=2.0,
            live=True,
            speedup=speedup,
            experiments=experiments,
        )
        stack.wait_caught_up(progress)
        caught_up_at = time.time()
        last_closed = start + timedelta(seconds=duration_s) - timedelta(minutes=1)
        stack.wait_monitor(last_closed.replace(second=0, microsecond=0), progress)
        elapsed = time.monotonic() - t0
        # What the monitor made of the simulated hours, read before the dispatch part: the simulated
        # tenants fall silent from here on, which later minutes would rightly report as volume drops.
        columns, rows = stack.sql(TENANT_SUMMARY)
        alert_columns, alert_rows = stack.sql(ALERTS_REPORT)
        results = experiment_results(stack, caught_up_at, progress)
        alert_changes = topic_size(stack.bootstrap, settings.topics.alerts)
        warehouse_events = int(stack.sql_scalar("SELECT count() FROM events"))
        dispatch = None
        if with_dispatch:  # send requests through the worker's dispatch agent; kill the primaries
            from dispatch.drill import DrillPlan, drill_on_stack

            if progress:
                progress("dispatch: requests through the local providers; the primaries die for 8 s")
            dispatch = drill_on_stack(
                stack, DrillPlan(rate_per_s=50, cycles=1, warm_s=3, down_s=8, up_s=40), progress
            )
        return {
            "scenario": summary.scenario,
            "simulated": f"{duration_s / 60:.0f} min from {start.isoformat()} at {rate:g} notifications/s",
            "produced": summary.events,
            "invalid": summary.invalid,
            "notifications": summary.notifications,
            "warehouse_events": warehouse_events,
            "dlq": topic_size(stack.bootstrap, settings.topics.dead_letter),
            "duplicates": int(stack.sql_scalar("SELECT sum(duplicates) FROM ingest_batches")),
            "alert_changes_on_topic": alert_changes,
            "seconds": round(elapsed, 1),
            "anomaly_windows": [
                {
                    "kind": w.kind,
                    "start": (start + timedelta(seconds=w.start_s)).isoformat(),
                    "end": (start + timedelta(seconds=w.end_s)).isoformat(),
                    "tenant": w.tenant_id,
                    "channel": w.channel,
                    "provider": w.provider,
                }
                for w in summary.windows
            ],
            "alerts": [dict(zip(alert_columns, row, strict=True)) for row in alert_rows],
            "experiments": results,
            "dispatch_drill": dispatch,
            "tenants": [dict(zip(columns, row, strict=True)) for row in rows],
            "dashboard": f"{stack.worker.api}/dashboard",
            "api_keys": str((settings.data_dir / "demo-keys.txt").resolve()),
            "data_dir": str(settings.data_dir.resolve()),
        }
    finally:
        if emitter is not None:
            emitter.close()
        stack.stop()


DEMO_EXPERIMENTS = (("acme", "acme-home", "subject-line-test"), ("brightfix", "brightfix", "push-copy-test"))


def experiment_results(
    stack: Stack, after: float, progress: Progress | None, timeout: float = 120
) -> dict[str, Any]:
    """The demo experiments as each tenant's key sees them through the API, once the leader's
    experiments job has run on everything ingested; and what each key gets for the other tenant's."""
    started = time.monotonic()
    while True:
        jobs = (stack.worker.health().get("monitor") or {}).get("jobs") or {}
        last = (jobs.get("experiments") or {}).get("last_run_at")
        if last and last > after:
            break
        if time.monotonic() - started > timeout:
            raise HeraldError(f"the experiments job has not run after {timeout}s: {jobs}")
        if progress:
            progress("waiting for the experiments job")
        time.sleep(0.5)
    found: dict[str, Any] = {}
    for holder, tenant, experiment in DEMO_EXPERIMENTS:
        status, body = stack.api_get(f"/api/v1/tenants/{tenant}/experiments/{experiment}", holder)
        if status != 200:
            raise HeraldError(f"{holder} key got {status} for its own experiment {experiment}: {body}")
        other = next(h for h, _, _ in DEMO_EXPERIMENTS if h != holder)
        foreign, _ = stack.api_get(f"/api/v1/tenants/{tenant}/experiments/{experiment}", other)
        stored = stack.sql_scalar(
            f"SELECT count(DISTINCT computed_at) FROM experiment_results WHERE experiment_id = '{experiment}'"
        )
        found[experiment] = {
            "tenant": tenant,
            "report": body,
            "other_tenant_key": foreign,
            "computations": stored,
        }
    found["status_messages"] = topic_size(stack.bootstrap, stack.settings.topics.experiment_status)
    return found


def _clock(iso: str | None) -> str:
    return iso[11:16] if iso else "--:--"


def _pct(value: Any) -> str:
    return "  n/a" if value is None else f"{value * 100:+.1f}%"


def _render_experiments(experiments: dict[str, Any], dashboard: str) -> list[str]:
    lines = [
        f"  experiments (YAML, exposed as dispatch would; status messages {experiments['status_messages']}):"
    ]
    for experiment, found in experiments.items():
        if experiment == "status_messages":
            continue
        report = found["report"]
        counts = ", ".join(f"{v['name']} {v['exposed']}" for v in report["variants"])
        lines.append(
            f"    {experiment} ({found['tenant']}, {report['template']}): exposed {counts}; "
            f"{found['computations']} computations stored; the other tenant's key gets "
            f"HTTP {found['other_tenant_key']}"
        )
        for metric, result in report["metrics"].items():
            if result.get("status") != "ok":
                lines.append(f"      {metric:<17} {result.get('status')}")
                continue
            srm = result["srm_p_value"]
            for row in result["results"]:
                lines.append(
                    f"      {metric:<17} {row['variant']} vs control {_pct(row['relative_effect'])}, "
                    f"always-valid CI [{_pct(row.get('seq_ci_low'))}, {_pct(row.get('seq_ci_high'))}], "
                    f"{row.get('seq_decision')}, chance to win {row['chance_to_win']:.2f}, "
                    f"SRM p {'n/a' if srm is None else format(srm, '.3f')}"
                )
        lines.append(f"      page: {dashboard}/experiments/{experiment}?tenant={found['tenant']}")
    return lines


def render_report(report: dict[str, Any]) -> str:
    lines = ["", "Herald demo"]
    for key, value in report.items():
        if key not in ("tenants", "anomaly_windows", "alerts", "dispatch_drill", "experiments"):
            lines.append(f"  {key:<24} {value}")
    if report.get("anomaly_windows"):
        lines.append("  injected anomalies:")
        for w in report["anomaly_windows"]:
            lines.append(
                f"    {w['kind']:<16} {w['start'][11:16]} to {w['end'][11:16]} UTC  "
                f"{w['tenant'] or '*'} {w['channel'] or '*'} {w['provider'] or '*'}"
            )
    if "alerts" in report:
        lines.append(f"  alerts raised: {len(report['alerts'])}")
        for a in report["alerts"]:
            resolved = f"resolved {str(a['resolved_at'])[11:16]}" if a["resolved_at"] else "OPEN"
            lines.append(
                f"    {a['severity']:<8} {a['metric']} {a['kind']} on {a['tenant_id']}/{a['channel']}/"
                f"{a['provider']}: {a['observed']} vs {a['expected']} expected, first seen "
                f"{str(a['first_seen'])[11:16]}, {resolved}"
            )
            lines.append(f"      runbook:   {a['runbook_url']}")
            lines.append(f"      dashboard: {a['dashboard_url']}")
    if report.get("experiments"):
        lines.extend(_render_experiments(report["experiments"], report.get("dashboard", "")))
    if report.get("dispatch_drill"):
        d = report["dispatch_drill"]
        lines.append("  dispatch through the local providers (primaries killed, then restored):")
        lines.append(
            f"    {d['requested']} requests: {d['lost']} lost, {d['sent_twice']} sent twice; "
            f"switch after {d['detect_to_switch_s']['p50']} s (p50), failback {d['failback_s']['p50']} s "
            f"after the restore; switch alerts {d.get('switch_alerts')}"
        )
        lines.append(f"    accepted per provider: {d['accepted_per_provider']}")
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
