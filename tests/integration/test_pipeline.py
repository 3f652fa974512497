"""End to end on the real broker and the real warehouse engine: counts, dead letters, dedup and
crash recovery (replay: test_replay.py)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime

import pytest

from simulator.badinput import BAD_KINDS, bad_messages
from simulator.run import emit_exact
from tests.conftest import Herald
from tests.integration.helpers import read_topic

pytestmark = pytest.mark.integration


def test_every_valid_event_lands_once_and_every_bad_one_in_the_dead_letter_topic(herald: Herald) -> None:
    """N valid events give N warehouse rows; M bad ones give M dead letters with their bytes and headers."""
    herald.start_worker()
    start = datetime.now(UTC)
    emit_exact(herald.emitter(), 3000, 60, seed=7, start=start, max_bytes=herald.settings.max_event_bytes)
    herald.wait_caught_up()

    assert herald.sql("SELECT count(), uniqExact(event_id) FROM events") == [[3000, 3000]]
    letters = read_topic(herald.bootstrap, herald.settings.topics.dead_letter, 60)
    assert len(letters) == 60
    sent = bad_messages(60, seed=7, max_bytes=herald.settings.max_event_bytes)
    expected = {m.value: m for m in sent}
    seen_kinds = Counter()
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers()}
        original = expected[letter.value()]  # the original bytes, untouched
        assert headers["herald.error.class"] == original.expected_error, headers
        assert headers["herald.source.topic"] == herald.settings.topics.lifecycle
        assert int(headers["herald.source.offset"]) >= 0 and headers["herald.source.partition"].isdigit()
        assert headers["herald.stage"] in ("decode", "validate") and headers["herald.error.message"]
        seen_kinds[headers["sim.bad_kind"]] += 1
    assert set(seen_kinds) == set(BAD_KINDS)


def test_rollup_equals_the_raw_events_it_summarises(herald: Herald) -> None:
    """Per-minute delivery counts recomputed from the raw table equal the materialized rollup."""
    herald.start_worker()
    emit_exact(herald.emitter(), 4000, 0, seed=3, start=datetime.now(UTC))
    herald.wait_caught_up()
    from_raw = herald.sql(
        "SELECT tenant_id, channel, provider, countIf(event_type='DELIVERED'), countIf(event_type='OPENED'), "
        "sumIf(ifNull(latency_ms, 0), event_type='DELIVERED') FROM events "
        "GROUP BY tenant_id, channel, provider ORDER BY tenant_id, channel, provider"
    )
    from_rollup = herald.sql(
        "SELECT tenant_id, channel, provider, sum(delivered), sum(opened), sum(delivery_latency_ms_sum) "
        "FROM delivery_minute GROUP BY tenant_id, channel, provider ORDER BY tenant_id, channel, provider"
    )
    assert from_raw == from_rollup and len(from_raw) > 3
    from_hourly = herald.sql(
        "SELECT tenant_id, channel, provider, sum(delivered), sum(opened), sum(delivery_latency_ms_sum) "
        "FROM delivery_hour GROUP BY tenant_id, channel, provider ORDER BY tenant_id, channel, provider"
    )
    assert from_hourly == from_raw
    rates = herald.sql(
        "SELECT tenant_id, sum(delivered), sum(dispatched) FROM delivery_rates_hourly GROUP BY tenant_id "
        "ORDER BY tenant_id"
    )
    raw_rates = herald.sql(
        "SELECT tenant_id, countIf(event_type='DELIVERED'), countIf(event_type='DISPATCHED') FROM events "
        "GROUP BY tenant_id ORDER BY tenant_id"
    )
    assert rates == raw_rates


def test_redelivered_event_ids_are_counted_as_duplicates_not_rows(herald: Herald) -> None:
    """A retry of an event (same event_id) is dropped and counted, whatever batch it arrives in."""
    emitter = herald.emitter()
    events = []

    class Recorder:
        def emit(self, event):  # type: ignore[no-untyped-def]
            events.append(event)
            emitter.emit(event)

        def emit_raw(self, key, value, headers=None):  # type: ignore[no-untyped-def]
            emitter.emit_raw(key, value, headers)

        def flush(self):  # type: ignore[no-untyped-def]
            return emitter.flush()

    emit_exact(Recorder(), 1500, 0, seed=11, start=datetime.now(UTC))
    herald.start_worker()
    herald.wait_caught_up()
    for event in events[::5]:  # 300 retries, after the originals were written
        emitter.emit(event)
    emitter.flush()
    herald.wait_caught_up()
    assert herald.sql("SELECT count(), uniqExact(event_id) FROM events") == [[1500, 1500]]
    assert herald.scalar("SELECT sum(duplicates) FROM ingest_batches") == 300


def test_worker_killed_mid_stream_and_restarted_loses_and_duplicates_nothing(herald: Herald) -> None:
    """SIGKILL while batches are in flight; after a restart every event is in the warehouse exactly once."""
    total = 40_000
    emit_exact(herald.emitter(), total, 0, seed=5, start=datetime.now(UTC))
    worker = herald.start_worker()
    deadline = time.monotonic() + 120
    while worker.health()["written"] < 4000:
        assert time.monotonic() < deadline, worker.tail()
        time.sleep(0.05)
    assert worker.kill() == -9
    written_before_kill = herald.scalar("SELECT count() FROM events")
    assert 0 < written_before_kill < total  # really mid-stream

    herald.workers.clear()
    herald.start_worker()
    herald.wait_caught_up()
    assert herald.sql("SELECT count(), uniqExact(event_id) FROM events") == [[total, total]]
    assert herald.sql(
        "SELECT count() FROM (SELECT event_id FROM events GROUP BY event_id HAVING count() > 1)"
    ) == [[0]]
    assert herald.scalar("SELECT sum(duplicates) FROM ingest_batches") == 0
