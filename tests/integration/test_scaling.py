"""Several workers in one consumer group give the same warehouse as one worker."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from simulator.run import emit_exact
from streams.emitter import Emitter
from streams.topics import topic_size
from tests.conftest import Herald
from tests.integration.helpers import snapshot

pytestmark = pytest.mark.integration


class Recording:
    """Emits through an Emitter and keeps the valid events, so some can be sent again as retries."""

    def __init__(self, emitter: Emitter) -> None:
        self.emitter = emitter
        self.events: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.emitter.emit(event)

    def emit_raw(
        self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        self.emitter.emit_raw(key, value, headers)

    def flush(self) -> int:
        return self.emitter.flush()


def send_traffic(h: Herald, start: datetime) -> None:
    """20k valid events, 120 bad ones, then 400 retries of earlier events: the same bytes every time."""
    recording = Recording(h.emitter())
    emit_exact(recording, 20_000, 120, seed=21, start=start, max_bytes=h.settings.max_event_bytes)
    for event in recording.events[::50]:
        recording.emitter.emit(event)
    recording.emitter.flush()


def test_two_workers_in_one_group_give_the_same_result_as_one(herald_factory: Callable[[], Herald]) -> None:
    """Partitions split across two workers sharing the embedded warehouse; tables equal a one-worker run."""
    start = datetime.now(UTC)
    one, two = herald_factory(), herald_factory()

    one.start_worker()
    send_traffic(one, start)
    one.wait_caught_up()
    expected = snapshot(one.sql)

    first = two.start_worker("worker-1")
    second = two.start_worker("worker-2")
    assert "warehouse_http" not in second.run_file.read_text()  # the second one shares the first's engine
    deadline = time.monotonic() + 60
    while not (first.health()["partitions"] and second.health()["partitions"]):  # rebalance done
        assert time.monotonic() < deadline, (first.health(), second.health())
        time.sleep(0.2)
    assert sorted(first.health()["partitions"] + second.health()["partitions"]) == [0, 1, 2, 3]
    send_traffic(two, start)
    two.wait_caught_up()

    assert first.health()["written"] > 0 and second.health()["written"] > 0  # both did real work
    assert first.health()["written"] + second.health()["written"] == 20_000
    got = snapshot(two.sql)
    assert got["events"] == expected["events"] and got["events"][0][:2] == [20_000, 20_000]
    assert got["by_type"] == expected["by_type"]
    assert got["rollup"] == expected["rollup"]
    assert got["refused"] == expected["refused"] == [[120, 400]]  # dead letters, duplicates
    assert topic_size(two.bootstrap, two.settings.topics.dead_letter) == 120
