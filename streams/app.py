"""The Faust app and its agents. Agents are thin: turn Faust events into SourceMessages and hand
batches to the pipeline in a worker thread (warehouse and broker I/O are blocking)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
import structlog

from herald.settings import Settings
from streams.ingest import SourceMessage
from streams.pipeline import IngestPipeline

log = structlog.get_logger("herald.worker")


def faust_broker_url(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def create_app(settings: Settings, bootstrap: str, pipeline: IngestPipeline) -> faust.App:
    datadir = (settings.data_dir / "worker" / settings.worker_name).resolve()
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.topics.consumer_group,
        broker=faust_broker_url(bootstrap),
        store="rocksdb://",
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        web_enabled=False,  # the FastAPI server runs beside Faust (web/)
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_s / 5),
        broker_max_poll_records=5000,
        consumer_max_fetch_size=8 * 1024 * 1024,
        stream_buffer_maxsize=20_000,
        producer_acks=-1,
    )
    lifecycle = app.topic(settings.topics.lifecycle, value_serializer="raw", key_serializer="raw")
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest")

    @app.agent(lifecycle, name="ingest")
    async def ingest_agent(stream: Any) -> None:
        loop = asyncio.get_running_loop()
        # take_events acks a batch only when the loop comes back for the next one, i.e. after
        # pipeline.apply returned and the batch is durable in the warehouse.
        async for events in stream.take_events(settings.batch_max_events, within=settings.batch_within_s):
            messages = [_source_message(e.message) for e in events]
            try:
                await loop.run_in_executor(executor, pipeline.apply, messages)
            except Exception:
                log.exception("ingest.crashed", batch=len(messages))
                raise

    @app.on_partitions_revoked.connect
    async def _revoked(sender: Any, revoked: Any, **_: Any) -> None:
        pipeline.forget((tp.topic, tp.partition) for tp in revoked)
        log.info(
            "worker.partitions_revoked", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in revoked)
        )

    return app


def _source_message(msg: Any) -> SourceMessage:
    headers = msg.headers or ()
    if isinstance(headers, dict):
        headers = tuple(headers.items())
    return SourceMessage(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key,
        value=msg.value if isinstance(msg.value, bytes) else bytes(msg.value or b""),
        timestamp_ms=int((msg.timestamp or 0) * 1000),
        headers=tuple((str(k), bytes(v or b"")) for k, v in headers),
    )
