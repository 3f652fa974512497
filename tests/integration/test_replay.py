"""Replay on the real broker and the real warehouse engine: dropping everything derived from the log and
applying the log again gives every derived table the fingerprint it had after the live run, every rollup
equals its recount from events, and events written after the replay count once in every rollup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from projections.fingerprint import UNCOMPARED, Fingerprint, derived_tables, fingerprints, recount_rollups
from projections.warehouse import Warehouse
from simulator.run import emit_exact
from streams.emitter import Emitter
from streams.replay import ReplayReport, replay
from tests.conftest import Herald

pytestmark = pytest.mark.integration

VALID, INVALID, RETRIED = 5000, 50, 100
ROLLUPS = {"delivery_minute", "delivery_hour", "delivery_cohort_minute", "experiment_variant_minute"}


class Recorder:
    """An emitter that keeps the valid events it sent, to send some of them again."""

    def __init__(self, emitter: Emitter) -> None:
        self.emitter = emitter
        self.events: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.emitter.emit(event)

    def emit_raw(self, key: bytes | None, value: bytes, headers: Any = None) -> None:
        self.emitter.emit_raw(key, value, headers)

    def flush(self) -> object:
        return self.emitter.flush()


def live_run(herald: Herald, start: datetime) -> None:
    """A worker over simulated traffic (experiments exposed, bad messages, retried events), then stopped."""
    worker = herald.start_worker()
    emitter = herald.emitter()
    recorder = Recorder(emitter)
    emit_exact(recorder, VALID, INVALID, seed=9, start=start, max_bytes=herald.settings.max_event_bytes)
    for event in recorder.events[:: VALID // RETRIED]:  # retries: duplicates by event_id
        emitter.emit(event)
    emitter.flush()
    herald.wait_caught_up()
    worker.stop()


def fingerprint_replay(herald: Herald) -> tuple[dict[str, Fingerprint], dict[str, Fingerprint], ReplayReport]:
    """Fingerprints of the live tables, the replay's report and the fingerprints after it."""
    warehouse = Warehouse(herald.settings.warehouse)
    try:
        live = fingerprints(warehouse)
        assert [r.table for r in recount_rollups(warehouse) if not r.agrees] == []
        report = replay(herald.settings, herald.bootstrap, warehouse)
        return live, fingerprints(warehouse), report
    finally:
        warehouse.close()


def test_a_replay_gives_every_table_derived_from_the_log_its_live_fingerprint(herald: Herald) -> None:
    """Fingerprints of every derived table after the replay equal those after the live run."""
    live_run(herald, datetime.now(UTC))
    live, replayed, report = fingerprint_replay(herald)

    assert report.messages == VALID + INVALID + RETRIED
    assert report.totals.dead_letters == INVALID and report.totals.duplicates == RETRIED
    assert set(live) == set(derived_tables()) - UNCOMPARED
    assert live["events"].rows == VALID
    assert all(live[t].rows > 0 for t in (*ROLLUPS, "engagement_profiles", "ingest_batches")), live
    assert replayed == live


def test_every_rollup_equals_its_recount_from_events_after_a_replay(herald: Herald) -> None:
    """Each rollup's exact columns equal its materialized view's SELECT run over the replayed events."""
    live_run(herald, datetime.now(UTC))
    fingerprint_replay(herald)
    warehouse = Warehouse(herald.settings.warehouse)
    try:
        recounts = recount_rollups(warehouse)
    finally:
        warehouse.close()
    assert {r.table for r in recounts} == {*ROLLUPS, "engagement_profiles"}
    assert [(r.table, r.differences) for r in recounts if not r.agrees] == []
    assert all(r.compared for r in recounts)


def test_events_after_a_replay_are_counted_once_in_every_rollup(herald: Herald) -> None:
    """A worker started after the replay adds each new event to events and to every rollup once."""
    start = datetime.now(UTC)
    live_run(herald, start)
    _, replayed, _ = fingerprint_replay(herald)

    herald.workers.clear()
    worker = herald.start_worker()
    emit_exact(herald.emitter(), 2000, 0, seed=10, start=start + timedelta(minutes=5))
    herald.wait_caught_up()
    worker.stop()

    warehouse = Warehouse(herald.settings.warehouse)
    try:
        after = fingerprints(warehouse)
        recounts = recount_rollups(warehouse)
        duplicated = warehouse.rows("SELECT count() - uniqExact(event_id) FROM events")
    finally:
        warehouse.close()
    assert after["events"].rows == VALID + 2000 and duplicated == [(0,)]
    assert all(after[t] != replayed[t] for t in ROLLUPS)  # the new events reached every rollup …
    assert [(r.table, r.differences) for r in recounts if not r.agrees] == []  # … once each
