"""Starts one Herald worker: warehouse (migrated), topics, the warehouse sink, the Faust app and the
API server; writes a run file so `cli.py sql`, the demo and other workers can find it."""

from __future__ import annotations

import json
import os
import secrets
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import structlog

from experiments.definitions import LoadedExperiments, load_experiments
from experiments.registry import FileDefinitions, Registry
from herald.errors import WarehouseError
from herald.faults import Faults
from herald.settings import Settings, mask_dsn
from policies.loader import LoadedPolicy, load_policy
from policies.segments import Segment, load_segments
from projections.access import ReaderLimits
from projections.migrate import migrate
from projections.sql_reader import SqlReaders
from projections.warehouse import Warehouse
from projections.writer import IngestWriter
from providers.endpoints import adapters_for, load_endpoints
from schemas.codec import lifecycle_codec
from streams.app import create_app
from streams.dispatch_agent import DispatchAgent
from streams.experiments import ExperimentsJob, SegmentSnapshotJob
from streams.monitor import AlertLinks, AlertMonitorService
from streams.pipeline import DeadLetterSink, IngestPipeline
from streams.sink import WarehouseSink
from streams.topics import ensure_topics
from web.app import create_api
from web.auth import load_key_ring
from web.clickhouse_http import create_clickhouse_http_app, share_dsn
from web.dashboard import LOCAL_RUNBOOK_BASE
from web.server import ApiServer

log = structlog.get_logger("herald.worker")


def run_file(settings: Settings) -> Path:
    return settings.run_dir / f"{settings.worker_name}.json"


def write_run_file(settings: Settings, info: dict[str, Any]) -> None:
    """The worker's run file, readable by this user only: it holds the warehouse share's secret."""
    settings.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(settings.run_dir, 0o700)
    path = run_file(settings)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(partial, path)  # readers see the whole file or none


def reader_limits(settings: Settings) -> ReaderLimits:
    """Bounds of one query of people's SQL (/sql, cli.py sql), enforced by the engine."""
    return ReaderLimits(
        settings.sql_timeout_s,
        settings.sql_max_rows,
        settings.sql_max_memory_bytes,
        settings.sql_max_bytes_to_read,
    )


def live_workers(settings: Settings) -> list[dict[str, str]]:
    """Run files of workers on this data dir whose process is alive."""
    found = []
    for path in sorted(settings.run_dir.glob("*.json")) if settings.run_dir.exists() else []:
        try:
            info = json.loads(path.read_text())
            os.kill(int(info["pid"]), 0)
        except (OSError, ValueError, KeyError):
            continue
        found.append(info)
    return found


def live_endpoints(settings: Settings) -> list[str]:
    """API URLs of the live workers on this data dir."""
    return [str(info["api"]) for info in live_workers(settings)]


def share_of_live_owner(settings: Settings) -> str | None:
    """The warehouse share DSN of the live worker that owns this data dir's embedded warehouse."""
    shared = [info["warehouse_http"] for info in live_workers(settings) if info.get("warehouse_http")]
    return str(shared[0]) if shared else None


def open_warehouse(settings: Settings) -> Warehouse:
    """The configured warehouse; when the embedded one is owned by another live worker on this data dir,
    that worker's ClickHouse HTTP endpoint instead, so several workers can share one machine's chDB.
    A shared warehouse follows its owner: when the owner restarts (a new port and secret), the next
    failed call finds it again from the run files."""
    timeout = settings.api_query_timeout_s
    try:
        return Warehouse(settings.warehouse, query_timeout_s=timeout)
    except WarehouseError:
        if not settings.embedded_warehouse:
            raise
        shared = share_of_live_owner(settings)
        if not shared:
            raise
        log.info("worker.shared_warehouse", warehouse=mask_dsn(shared))
        return Warehouse(shared, query_timeout_s=timeout, resolve=lambda: share_of_live_owner(settings))


@dataclass
class Agents:
    """The worker's background agents beside the warehouse sink: the alert monitor (unless
    HERALD_ALERTS_ENABLED=false), whose leader also runs the segment snapshots and the experiments'
    statistics; and the dispatch agent (when HERALD_PROVIDERS_FILE names providers). Both read the
    experiment and segment definitions from the registry: the files plus the API's changes."""

    monitor: AlertMonitorService | None = None
    dispatch: DispatchAgent | None = None

    def start(
        self,
        settings: Settings,
        bootstrap: str,
        warehouse: Warehouse,
        policy: LoadedPolicy,
        endpoints: dict[str, dict[str, Any]] | None,
        api_url: str,
        registry: Registry,
    ) -> None:
        public = (settings.public_url or api_url).rstrip("/")
        links = AlertLinks(public, settings.runbook_base_url or public + LOCAL_RUNBOOK_BASE)

        def definitions() -> tuple[LoadedExperiments, dict[str, Segment]]:
            snapshot = registry.snapshot()
            return snapshot.experiments, dict(snapshot.segments)

        jobs = (
            SegmentSnapshotJob(warehouse, lambda: definitions()[1], settings.segment_snapshot_s),
            ExperimentsJob(
                warehouse, bootstrap, settings.topics.experiment_status, lambda: definitions()[0],
                settings.experiments_interval_s,
            ),
        )  # fmt: skip
        if settings.alerts_enabled:
            self.monitor = AlertMonitorService(
                settings, bootstrap, warehouse, links, policy=policy, jobs=jobs
            )
            self.monitor.start()
        if endpoints is not None:
            timeout = settings.provider_timeout_s
            self.dispatch = DispatchAgent(
                settings, bootstrap, policy, lambda: adapters_for(endpoints, timeout), warehouse=warehouse,
                links=(links.dashboard_base, links.runbook_base), experiments=definitions,
            )  # fmt: skip
            self.dispatch.start()

    def stop(self) -> None:
        for agent in (self.dispatch, self.monitor):
            if agent is not None:
                agent.stop()


def run_worker(settings: Settings, bootstrap: str) -> None:
    ensure_topics(bootstrap, settings.partitions, settings.replication_factor, settings.topics)
    keys = load_key_ring(settings.api_keys_file)  # a bad keys file stops the worker before it starts
    policy = load_policy(settings.guardrails)  # so does a bad policy (PolicyError: file: field: reason)
    endpoints = load_endpoints(settings.providers_file) if settings.providers_file else None  # and endpoints
    segments = load_segments(settings.segments)  # and segments, and the experiments targeting them
    experiments = load_experiments(settings.experiments_file, segments) if settings.experiments_file else None
    warehouse = open_warehouse(settings)
    applied = migrate(warehouse)
    pipeline = IngestPipeline(
        settings,
        IngestWriter(warehouse, settings.worker_name, faults=Faults.parse(settings.faults)),
        lifecycle_codec(),
        DeadLetterSink(bootstrap, settings.topics.dead_letter),
    )
    # Experiments and segments: the files, plus what was defined through the API (warehouse events).
    registry = Registry(warehouse, FileDefinitions(experiments, segments, str(settings.segments)))
    crashed: list[BaseException] = []

    def on_crash(exc: BaseException) -> None:
        crashed.append(exc)
        os.kill(os.getpid(), signal.SIGTERM)  # Faust's handler stops the worker cleanly

    sink = WarehouseSink(settings, bootstrap, pipeline, on_crash)
    app = create_app(settings, bootstrap)
    agents = Agents()
    server = ApiServer(
        create_api(
            warehouse,
            lambda: pipeline.totals,
            settings.worker_name,
            lambda: dict(sink.lag),
            lambda: sorted(sink.assigned),
            keys=keys,
            policy=policy,
            monitor=lambda: agents.monitor.status() if agents.monitor else {"enabled": False},
            dispatch=lambda: agents.dispatch.status() if agents.dispatch else {"enabled": False},
            definitions=registry,
            readers=SqlReaders(warehouse, reader_limits(settings), dsn=settings.warehouse_reader_dsn),
            ingest=lambda: pipeline.status,
            stall_s=settings.ingest_stall_s,
            max_body_bytes=settings.api_max_body_bytes,
            rate_per_s=settings.api_rate_per_s,
            rate_burst=settings.api_rate_burst,
            sql_concurrency_per_key=settings.api_sql_concurrency_per_key,
        ),
        settings.api_host,
        settings.api_port,
    )
    port = server.start()
    info = {
        "pid": os.getpid(),
        "api": f"http://{settings.api_host}:{port}",
        "worker": settings.worker_name,
        "warehouse": mask_dsn(warehouse.dsn),
        "bootstrap": bootstrap,
        "started_at": datetime.now(UTC).isoformat(),
    }
    share = None
    if warehouse.embedded:  # let other workers on this machine use the engine this process owns
        secret = secrets.token_urlsafe(32)
        share = ApiServer(
            create_clickhouse_http_app(warehouse, secret), "127.0.0.1", settings.warehouse_share_port
        )
        info["warehouse_http"] = share_dsn(share.start(), secret)
    sink.start()
    agents.start(
        settings, bootstrap, warehouse, policy, endpoints, f"http://{settings.api_host}:{port}", registry
    )
    write_run_file(settings, info)
    log.info(
        "worker.started",
        migrations_applied=applied,
        **{**info, "warehouse_http": mask_dsn(str(info.get("warehouse_http", "")))},
    )
    try:
        worker = faust.Worker(
            app,
            loglevel=settings.log_level.upper(),
            quiet=True,
            redirect_stdouts=False,
            override_logging=False,
        )
        worker.execute_from_commandline()
    except SystemExit:
        pass
    finally:
        agents.stop()
        sink.stop()
        run_file(settings).unlink(missing_ok=True)
        server.stop()
        if share is not None:
            share.stop()
        pipeline.dead_letters.close()
        warehouse.close()
        log.info("worker.stopped", worker=settings.worker_name, crashed=bool(crashed))
    if crashed:
        raise SystemExit(3)
