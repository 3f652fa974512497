"""Shared fixtures: a real Kafka broker for the session (started here unless HERALD_KAFKA_BOOTSTRAP
points to one) and, per test, an isolated Herald: its own namespace, data dir and warehouse."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from herald.local import query_endpoint
from herald.settings import Settings, load_settings
from herald.supervise import WorkerProcess
from infra.local_kafka import LocalKafka, free_port
from projections.warehouse import Warehouse
from providers.local.process import LocalProvidersProcess
from streams.emitter import Emitter
from streams.lag import consumer_lag
from streams.topics import ensure_topics
from web.app import jsonable


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real broker. Failing to start one is an error, never a skip: fix the install instead."""
    configured = os.environ.get("HERALD_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), free_port())
    bootstrap = broker.start()
    try:
        yield bootstrap
    finally:
        broker.stop()


@dataclass
class Herald:
    """One isolated Herald installation under test."""

    settings: Settings
    bootstrap: str
    workers: list[WorkerProcess] = field(default_factory=list)

    def env(self, worker_name: str, **extra: str) -> dict[str, str]:
        s = self.settings
        return {
            "HERALD_DATA_DIR": str(s.data_dir),
            "HERALD_KAFKA_BOOTSTRAP": self.bootstrap,
            "HERALD_NAMESPACE": s.namespace,
            "HERALD_API_PORT": "0",
            "HERALD_WORKER_NAME": worker_name,
            "HERALD_PARTITIONS": str(s.partitions),
            "HERALD_BATCH_WITHIN_S": str(s.batch_within_s),
            "HERALD_BATCH_MAX_EVENTS": str(s.batch_max_events),
            "HERALD_LOG_LEVEL": "info",
            "HERALD_WAREHOUSE_DSN": s.warehouse,
            **extra,
        }

    def start_worker(self, name: str = "worker-1", **extra: str) -> WorkerProcess:
        worker = WorkerProcess(
            self.env(name, **extra), self.settings.data_dir / "logs" / f"{name}.log"
        ).start()
        self.workers.append(worker)
        return worker

    def emitter(self) -> Emitter:
        return Emitter(self.bootstrap, self.settings.topics.lifecycle, max_event_bytes=10**7)

    def lag(self) -> int:
        return sum(
            consumer_lag(
                self.bootstrap, self.settings.topics.sink_group, self.settings.topics.lifecycle
            ).values()
        )

    def wait_caught_up(self, timeout: float = 120) -> None:
        import time

        deadline = time.monotonic() + timeout
        while self.lag() > 0:
            for w in self.workers:
                if w.proc is not None and w.proc.poll() is not None and w.proc.returncode not in (0, -9):
                    raise AssertionError(f"worker died with {w.proc.returncode}:\n{w.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"still {self.lag()} behind after {timeout}s\n"
                    + "\n".join(w.tail() for w in self.workers)
                )
            time.sleep(0.3)

    def sql(self, query: str) -> list[list[Any]]:
        """Query through a running worker, or open the warehouse directly when none runs."""
        live = [w for w in self.workers if w.proc is not None and w.proc.poll() is None]
        if live:
            return query_endpoint(live[0].api, query)[1]
        warehouse = Warehouse(self.settings.warehouse)
        try:
            return [[jsonable(v) for v in r] for r in warehouse.rows(query)]  # as the endpoint returns them
        finally:
            warehouse.close()

    def scalar(self, query: str) -> Any:
        return self.sql(query)[0][0]

    def stop_all(self) -> None:
        for w in self.workers:
            w.stop()


@pytest.fixture
def herald_factory(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Callable[[], Herald]]:
    """Makes isolated Herald installations (own namespace and data dir) on the shared broker."""
    made: list[Herald] = []

    def make() -> Herald:
        settings = load_settings(
            data_dir=tmp_path / f"data{len(made)}",
            kafka_bootstrap=kafka_bootstrap,
            namespace=f"t{uuid.uuid4().hex[:10]}",
            api_port=0,
            partitions=4,
            batch_within_s=0.1,
            batch_max_events=2000,
        )
        ensure_topics(kafka_bootstrap, settings.partitions, 1, settings.topics)
        made.append(Herald(settings, kafka_bootstrap))
        return made[-1]

    try:
        yield make
    finally:
        for h in made:
            h.stop_all()


@pytest.fixture
def herald(herald_factory: Callable[[], Herald]) -> Herald:
    return herald_factory()


@pytest.fixture
def providers(tmp_path: Path) -> Iterator[LocalProvidersProcess]:
    """The four local delivery providers (two SMTP servers, two HTTP SMS APIs) as a child process."""
    process = LocalProvidersProcess(tmp_path / "providers.log").start()
    try:
        yield process
    finally:
        process.stop()
