"""Chunked monitor checkpoints: any size round-trips through the compacted topic's latest values;
a manifest whose chunks are missing or altered gives no checkpoint rather than a wrong one. The
ingest health's JSON checkpoint beside them leaves them alone."""

from __future__ import annotations

import doctest

import pytest

from analytics.ingest_health import IngestHealth, PartitionState
from streams import ingest_watch, monitor
from streams.ingest_watch import INGEST_KEY, dump_ingest, load_ingest
from streams.monitor import STATE_KEY, assemble, checkpoint_messages


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitor, "CHUNK_BYTES", 10)


def latest(*checkpoints: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """What a reader keeps after reading the messages in order (latest value per key)."""
    values: dict[bytes, bytes] = {}
    for messages in checkpoints:
        values.update(messages)
    return values


def test_a_checkpoint_of_many_chunks_round_trips_and_the_newest_wins() -> None:
    old, new = bytes(range(95)), bytes(range(200, 256)) * 3
    first, second = checkpoint_messages(old, "1"), checkpoint_messages(new, "2")
    assert len(first) == 11 and first[-1][0] == STATE_KEY  # 10 chunks, then the manifest
    assert assemble(latest(first)) == old
    assert assemble(latest(first, second)) == new


def test_missing_or_altered_chunks_give_no_checkpoint() -> None:
    blob = bytes(range(50))
    values = latest(checkpoint_messages(blob, "7"))
    del values[b"monitor/7/3"]
    assert assemble(values) is None
    values = latest(checkpoint_messages(blob, "7"))
    values[b"monitor/7/0"] = b"x" * 10
    assert assemble(values) is None


def test_a_checkpoint_from_before_chunking_still_loads() -> None:
    assert assemble({STATE_KEY: b"herald-monitor-v1:legacy"}) == b"herald-monitor-v1:legacy"
    assert assemble({}) is None


def test_the_ingest_checkpoint_is_json_beside_the_monitor_checkpoint() -> None:
    """The ingest state round-trips under its own key, which assembling the monitor's ignores."""
    state = IngestHealth({0: PartitionState(1_000, 2_000, ((2_000, 5),))})
    value = dump_ingest(state)
    assert value.startswith(b"herald-ingest-v1:{") and load_ingest(value) == state
    values = latest(checkpoint_messages(b"abc", "3"), [(INGEST_KEY, value)])
    assert assemble(values) == b"abc"


@pytest.mark.parametrize("module", [monitor, ingest_watch])
def test_module_doctests_pass(module: object) -> None:
    """The examples of the checkpoints (chunked, and the ingest one) run as documented."""
    assert doctest.testmod(module).failed == 0
