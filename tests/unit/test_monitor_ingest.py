"""The monitor's ingest wiring with the broker, the warehouse and the alert publisher replaced by
values (its Kafka clients get no bootstrap and never connect): errors skip or degrade an evaluation
but never raise, a stall is raised through the alert publisher and checkpointed as JSON under its own
key, a restarted leader resolves the alert its predecessor opened, a poll between the leader's jobs does not
lose a state message, and the verdicts reach /health's status and /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from herald.errors import KafkaUnavailableError, WarehouseError
from herald.settings import load_settings
from streams import ingest_watch, monitor
from streams.ingest_watch import INGEST_KEY, load_ingest
from streams.monitor import AlertLinks, AlertMonitorService
from web.app import _MonitorCollector


class FakeWarehouse:
    """Answers the progress queries from values; ``down`` makes every query fail."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []
        self.events: list[tuple[int, int]] = []
        self.down = False
        self.event_queries: list[dict[str, Any]] = []

    def rows(self, query: str, params: dict[str, Any] | None = None) -> list[Any]:
        if self.down:
            raise WarehouseError("Connection refused")
        if "FROM ingest_batches" in query and "max_occurred_at" not in query:  # not the minutes' watermark
            return list(self.batches)
        if "max(ingested_at)" in query and "_partition IN" in query:
            self.event_queries.append(dict(params or {}))
            return [(p, at) for p, at in self.events if p in (params or {})["parts"]]
        return []  # the series monitor's queries: no traffic to judge yet


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []
        self.unsent = False
        self.pending = 0

    def add(self, records: list[dict[str, Any]]) -> None:
        self.published.extend(records)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class FakeProducer:
    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}

    def produce(self, _topic: str, key: bytes, value: bytes, **_: Any) -> None:
        self.values[key] = value

    def flush(self, _timeout: float = 0) -> int:
        return 0

    def poll(self, _timeout: float = 0) -> int:
        return 0


class FakeMessage:
    def __init__(self, offset: int, key: bytes, value: bytes) -> None:
        self._offset, self._key, self._value = offset, key, value

    def error(self) -> None:
        return None

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value


class FakeConsumer:
    def __init__(self) -> None:
        self.messages: list[FakeMessage] = []

    def get_watermark_offsets(self, *_: Any, **__: Any) -> tuple[int, int]:
        return 0, 0  # an empty state partition: read to its end at once

    def poll(self, _timeout: float = 0) -> FakeMessage | None:
        return self.messages.pop(0) if self.messages else None

    def close(self) -> None:
        pass


class Fixture:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1_000.0
        self.lag: dict[int, int] | Exception = {}
        self.warehouse = FakeWarehouse()
        self.producer = FakeProducer()
        self.publisher = FakePublisher()
        monkeypatch.setattr(monitor, "consumer_lag", self._consumer_lag)

    def _consumer_lag(self, *_: Any, **__: Any) -> dict[int, int]:
        if isinstance(self.lag, Exception):
            raise self.lag
        return dict(self.lag)

    def service(self, restored: dict[bytes, bytes] | None = None) -> AlertMonitorService:
        """A leader that has read the state partition (``restored``: its latest values)."""
        settings = load_settings(kafka_bootstrap="", ingest_stall_s=120)
        links = AlertLinks("http://herald:8740", "http://herald:8740/dashboard/")
        warehouse: Any = self.warehouse  # answers rows() as a Warehouse does
        service = AlertMonitorService(settings, "", warehouse, links, clock=lambda: self.now)
        self.consumer = FakeConsumer()
        fakes: Any = (self.producer, self.publisher, self.consumer)
        service._producer, service.alerts, service._consumer = fakes
        service.leading, service._restored = True, dict(restored or {})
        service._restore()
        return service


@pytest.fixture
def fx(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fixture]:
    yield Fixture(monkeypatch)


def test_nothing_is_judged_before_the_state_partition_is_read(fx: Fixture) -> None:
    """A leader that has not read its checkpoint yet does not judge: it could re-open a known alert."""
    service = fx.service()
    service.ingest.forget()
    fx.lag = {0: 10}
    assert service.check_ingest() == [] and service.status()["ingest"]["verdict"] is None


def test_a_broker_that_cannot_say_the_lag_skips_the_evaluation(fx: Fixture) -> None:
    """No lag, no verdict: the error is shown and nothing is raised."""
    service = fx.service()
    fx.lag = KafkaUnavailableError("cannot read offsets of group herald-warehouse")
    assert service.check_ingest() == []
    assert service.status()["ingest"]["error"].startswith("lag: KafkaUnavailableError")


def test_a_dead_warehouse_still_gives_a_stall_alert_published_and_checkpointed(fx: Fixture) -> None:
    """Without the warehouse the remembered progress holds; the stall alert goes out with its links."""
    service = fx.service()
    fx.warehouse.batches, fx.lag = [(0, 999_000)], {0: 0, 1: 0}
    assert service.check_ingest() == []
    fx.warehouse.down, fx.lag = True, {0: 50, 1: 0}
    fx.now = 1_010.0
    assert service.check_ingest() == []
    fx.now = 1_131.0
    (record,) = service.check_ingest()
    assert (record["status"], record["tenant_id"], record["metric"], record["kind"]) == (
        "OPENED", "*", "ingest", "stall",
    )  # fmt: skip
    assert record["severity"] == "critical" and record["policy_version"].startswith("ingest-")
    assert record["runbook_url"] == "http://herald:8740/dashboard/docs/runbooks/ingest.md#ingest-stalled"
    assert fx.publisher.published == [record]
    assert set(load_ingest(fx.producer.values[INGEST_KEY]).open) == {"stall"}  # checkpointed with it
    status = service.status()["ingest"]
    assert status["verdict"] == "stalled" and status["open"] == ["stall"]
    assert status["partitions"]["0"]["verdict"] == "stalled" and status["partitions"]["1"]["verdict"] == "ok"
    assert status["error"].startswith("progress: WarehouseError")


def test_a_restarted_leader_resolves_the_stall_its_predecessor_opened(fx: Fixture) -> None:
    """The ingest checkpoint on the state topic carries the open alert over a restart."""
    first = fx.service()
    fx.warehouse.batches, fx.lag = [(0, 999_000)], {0: 40}
    first.check_ingest()
    fx.now = 1_200.0
    (opened,) = first.check_ingest()
    second = fx.service(restored={INGEST_KEY: fx.producer.values[INGEST_KEY]})
    assert second.status()["ingest"]["open"] == ["stall"]
    fx.warehouse.batches, fx.now = [(0, 1_201_000)], 1_202.0
    (resolved,) = second.check_ingest()
    assert (resolved["status"], resolved["alert_id"]) == ("RESOLVED", opened["alert_id"])
    assert load_ingest(fx.producer.values[INGEST_KEY]).open == {}


def test_a_state_message_polled_between_the_leaders_jobs_is_kept_while_restoring(fx: Fixture) -> None:
    """The leader's jobs poll to stay in the group; what that poll returns is not lost to the restore."""

    class Job:
        name, interval_s = "tick", 10.0

        def run(self) -> int:
            return 0

    service = fx.service()
    service.jobs, service._job_due = (Job(),), {"tick": 0.0}  # type: ignore[assignment]
    fx.consumer.messages.append(FakeMessage(7, INGEST_KEY, b"herald-ingest-v1:{}"))
    service._run_jobs()
    assert service._seen_offset == 7 and service._restored == {INGEST_KEY: b"herald-ingest-v1:{}"}


def test_the_events_fallback_is_read_only_for_partitions_the_markers_do_not_show_moving(fx: Fixture) -> None:
    """Markers prove partition 0 moving; only partition 1, behind without a marker, costs an events read."""
    service = fx.service()
    fx.warehouse.batches, fx.warehouse.events = [(0, 999_500)], [(1, 999_000)]
    fx.lag = {0: 5, 1: 5, 2: 0}
    service.check_ingest()
    assert [q["parts"] for q in fx.warehouse.event_queries] == [[1]]
    assert fx.warehouse.event_queries[0]["since"] == 1_000_000 - ingest_watch.EVENT_PROGRESS_LOOKBACK_MS
    partitions = service.status()["ingest"]["partitions"]
    assert partitions["1"]["last_progress"].startswith("1970-01-01T00:16:39")


def test_ingest_verdicts_are_gauges_per_partition_in_metrics(fx: Fixture) -> None:
    """herald_ingest_stalled and herald_ingest_lagging carry each partition's verdict as 0 or 1."""
    service = fx.service()
    fx.lag = {0: 3, 1: 0}
    service.check_ingest()
    fx.now = 1_200.0
    service.check_ingest()
    registry = CollectorRegistry()
    registry.register(_MonitorCollector(service.status))
    text = generate_latest(registry).decode()
    assert 'herald_ingest_stalled{partition="0"} 1.0' in text
    assert 'herald_ingest_stalled{partition="1"} 0.0' in text
    assert 'herald_ingest_lagging{partition="0"} 0.0' in text
