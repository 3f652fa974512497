"""Chunked monitor checkpoints: any size round-trips through the compacted topic's latest values;
a manifest whose chunks are missing or altered gives no checkpoint rather than a wrong one."""

from __future__ import annotations

import pytest

from streams import monitor
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
