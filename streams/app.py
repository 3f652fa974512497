"""The Faust app: home of the stateful agents (tables with changelogs in RocksDB). Agents are thin:
decode, call pure code, emit or write. The warehouse sink is not an agent (see streams/sink.py)."""

from __future__ import annotations

import faust
import structlog

from herald.settings import Settings

log = structlog.get_logger("herald.worker")


def faust_broker_url(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    datadir = (settings.data_dir / "worker" / settings.worker_name).resolve()
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return faust.App(
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
