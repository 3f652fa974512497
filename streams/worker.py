"""Starts one Herald worker: warehouse (migrated), topics, the ingest pipeline, the Faust app and
the API server; writes a run file so `cli.py sql` and the demo can find the API."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import faust
import structlog

from herald.settings import Settings, mask_dsn
from projections.migrate import migrate
from projections.warehouse import Warehouse
from projections.writer import IngestWriter
from schemas.codec import lifecycle_codec
from streams.app import create_app
from streams.pipeline import DeadLetterSink, IngestPipeline
from streams.topics import ensure_topics
from web.app import create_api
from web.server import ApiServer

log = structlog.get_logger("herald.worker")


def run_file(settings: Settings) -> Path:
    return settings.run_dir / f"{settings.worker_name}.json"


def live_endpoints(settings: Settings) -> list[str]:
    """API URLs of workers that run on this data dir (their run file exists and their pid is alive)."""
    urls = []
    for path in sorted(settings.run_dir.glob("*.json")) if settings.run_dir.exists() else []:
        try:
            info = json.loads(path.read_text())
            os.kill(int(info["pid"]), 0)
        except (OSError, ValueError, KeyError):
            continue
        urls.append(str(info["api"]))
    return urls


def run_worker(settings: Settings, bootstrap: str) -> None:
    ensure_topics(bootstrap, settings.partitions, settings.replication_factor, settings.topics)
    warehouse = Warehouse(settings.warehouse)
    applied = migrate(warehouse)
    pipeline = IngestPipeline(
        settings,
        IngestWriter(warehouse, settings.worker_name),
        lifecycle_codec(),
        DeadLetterSink(bootstrap, settings.topics.dead_letter),
    )
    app = create_app(settings, bootstrap, pipeline)
    server = ApiServer(
        create_api(warehouse, lambda: pipeline.totals, settings.worker_name),
        settings.api_host,
        settings.api_port,
    )
    port = server.start()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    info = {
        "pid": os.getpid(),
        "api": f"http://{settings.api_host}:{port}",
        "worker": settings.worker_name,
        "warehouse": mask_dsn(settings.warehouse),
        "bootstrap": bootstrap,
        "started_at": datetime.now(UTC).isoformat(),
    }
    run_file(settings).write_text(json.dumps(info))
    log.info("worker.started", migrations_applied=applied, **info)
    try:
        worker = faust.Worker(
            app,
            loglevel=settings.log_level.upper(),
            quiet=True,
            redirect_stdouts=False,
            override_logging=False,
        )
        worker.execute_from_commandline()
    finally:
        run_file(settings).unlink(missing_ok=True)
        server.stop()
        pipeline.dead_letters.close()
        warehouse.close()
        log.info("worker.stopped", worker=settings.worker_name)
