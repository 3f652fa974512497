"""The pure ingest decision: what is written, dead-lettered, dropped as duplicate or skipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.codec import lifecycle_codec
from streams.dedup import EventDeduplicator
from streams.ingest import SourceMessage, ingest

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TOPIC = "herald.lifecycle.events.v1"
CODEC = lifecycle_codec()


def event(event_id: str, at: datetime = NOW, **extra: object) -> dict[str, object]:
    return {
        "event_id": event_id,
        "event_type": "SENT",
        "occurred_at": at,
        "tenant_id": "acme",
        "notification_id": f"n-{event_id}",
        "channel": "SMS",
        **extra,
    }


def msg(offset: int, value: bytes, partition: int = 0) -> SourceMessage:
    return SourceMessage(TOPIC, partition, offset, b"k", value, headers=(("trace", b"t1"),))


def dedups(*partitions: int) -> dict[tuple[str, int], EventDeduplicator]:
    return {(TOPIC, p): EventDeduplicator(3_600_000, 1000) for p in partitions or (0,)}


def run(messages: list[SourceMessage], applied: dict[tuple[str, int], int] | None = None, d=None):  # type: ignore[no-untyped-def]
    return ingest(messages, CODEC.decode, d or dedups(0, 1), applied or {}, NOW, 65_536)


def test_valid_events_are_accepted_in_offset_order() -> None:
    """Decodable, valid, new events are all accepted with their positions."""
    result = run([msg(i, CODEC.encode(event(f"e{i}"))) for i in range(5)])
    assert [m.offset for m, _ in result.accepted] == [0, 1, 2, 3, 4]
    assert result.dead_letters == [] and result.duplicates == 0
    assert result.progress[(TOPIC, 0)].first_offset == 0 and result.progress[(TOPIC, 0)].last_offset == 4


def test_undecodable_message_becomes_a_dead_letter_with_source_headers() -> None:
    """Garbage keeps its bytes and gains headers naming topic, partition, offset, stage and error."""
    result = run([msg(7, b"\x00garbage")])
    (letter,) = result.dead_letters
    headers = dict(letter.headers)
    assert letter.value == b"\x00garbage" and letter.key == b"k"
    assert headers["trace"] == b"t1"  # the original headers travel along
    assert headers["herald.source.topic"] == TOPIC.encode()
    assert headers["herald.source.partition"] == b"0" and headers["herald.source.offset"] == b"7"
    assert headers["herald.stage"] == b"decode"
    assert headers["herald.error.class"] == b"not_single_object"
    assert headers["herald.error.message"]


def test_contract_violation_is_dead_lettered_at_the_validate_stage() -> None:
    """An event that decodes but breaks the contract is refused at the validate stage, naming the field."""
    result = run([msg(0, CODEC.encode(event("e1", tenant_id="")))])
    headers = dict(result.dead_letters[0].headers)
    assert headers["herald.stage"] == b"validate" and headers["herald.error.class"] == b"invalid"
    assert headers["herald.error.message"].startswith(b"tenant_id:")


def test_oversized_message_is_dead_lettered_without_decoding() -> None:
    """A message over the size limit is refused as oversized."""
    result = ingest(
        [msg(0, CODEC.encode(event("e1", reason="x" * 5000)))], CODEC.decode, dedups(), {}, NOW, 1024
    )
    assert dict(result.dead_letters[0].headers)["herald.error.class"] == b"oversized"


def test_repeated_event_id_is_dropped_as_duplicate() -> None:
    """The second event with an id already seen is counted as a duplicate, not accepted."""
    data = CODEC.encode(event("e1"))
    result = run([msg(0, data), msg(1, data), msg(2, CODEC.encode(event("e2")))])
    assert [m.offset for m, _ in result.accepted] == [0, 2]
    assert result.duplicates == 1 and result.progress[(TOPIC, 0)].duplicates == 1


def test_messages_at_or_below_the_applied_offset_are_skipped() -> None:
    """After a restart, offsets already in the warehouse are skipped, whatever the batch boundaries."""
    messages = [msg(i, CODEC.encode(event(f"e{i}"))) for i in range(6)]
    result = run(messages, applied={(TOPIC, 0): 3})
    assert [m.offset for m, _ in result.accepted] == [4, 5]
    assert result.skipped == 4
    assert result.progress[(TOPIC, 0)].first_offset == 4


def test_partitions_are_tracked_separately() -> None:
    """Progress is kept per partition and the skip watermark of one does not affect another."""
    messages = [msg(0, CODEC.encode(event("a")), 0), msg(0, CODEC.encode(event("b")), 1)]
    result = run(messages, applied={(TOPIC, 0): 0})
    assert [(m.partition, m.offset) for m, _ in result.accepted] == [(1, 0)]
    assert set(result.progress) == {(TOPIC, 1)}


def test_same_batch_decided_twice_from_rebuilt_state_gives_the_same_verdicts() -> None:
    """Replaying a batch against state rebuilt from what was written reaches identical decisions."""
    data = [CODEC.encode(event(f"e{i % 3}", NOW + timedelta(seconds=i))) for i in range(6)]
    messages = [msg(i, d) for i, d in enumerate(data)]
    first = run(messages)
    rebuilt = dedups()
    second = run(messages, d=rebuilt)
    assert [m.offset for m, _ in first.accepted] == [m.offset for m, _ in second.accepted] == [0, 1, 2]
    assert first.duplicates == second.duplicates == 3


def test_dedup_forgets_ids_older_than_the_horizon() -> None:
    """An id seen more than the horizon before the newest event is no longer remembered."""
    d = EventDeduplicator(horizon_ms=60_000 * 10, max_ids=100)
    assert not d.is_duplicate("a", 0)
    assert not d.is_duplicate("b", 60_000 * 30)
    assert not d.is_duplicate("a", 60_000 * 30)
    assert len(d) == 2


def test_dedup_memory_is_bounded_by_max_ids() -> None:
    """The set never holds more than max_ids ids; the oldest minutes go first."""
    d = EventDeduplicator(horizon_ms=10**12, max_ids=1000)
    for i in range(10_000):
        d.is_duplicate(f"e{i}", i * 1000)
    assert len(d) <= 1000
    assert d.is_duplicate("e9999", 9_999_000)
    assert not d.is_duplicate("e0", 9_999_000)


def test_dedup_rebuilt_with_load_recognises_applied_ids() -> None:
    """Ids loaded from the warehouse are treated as already seen."""
    d = EventDeduplicator(3_600_000, 100)
    d.load([("x", 1_000), ("y", 2_000)])
    assert d.is_duplicate("x", 3_000) and not d.is_duplicate("z", 3_000)


def test_event_times_are_judged_by_the_messages_log_time_not_the_wall_clock() -> None:
    """An event two days ahead of its message's log time is refused, whatever the clock says when it is
    decided: the live worker and a replay a week later reach the same verdict."""
    log_ms = int(NOW.timestamp() * 1000)
    ahead = SourceMessage(TOPIC, 0, 0, b"k", CODEC.encode(event("a", NOW + timedelta(days=2))), log_ms)
    fine = SourceMessage(TOPIC, 0, 1, b"k", CODEC.encode(event("b", NOW + timedelta(hours=2))), log_ms)
    for wall_clock in (NOW, NOW + timedelta(days=7)):
        result = ingest([ahead, fine], CODEC.decode, dedups(0), {}, wall_clock, 65_536)
        assert [m.offset for m, _ in result.accepted] == [1]
        assert len(result.dead_letters) == 1


def test_a_future_dated_event_does_not_move_the_dedup_horizon() -> None:
    """The horizon runs on log time: an event dated a day ahead keeps earlier ids remembered."""
    log_ms = int(NOW.timestamp() * 1000)
    stream = [event("a"), event("far", NOW + timedelta(hours=23)), event("a")]
    messages = [
        SourceMessage(TOPIC, 0, i, b"k", CODEC.encode(e), log_ms + i * 1000) for i, e in enumerate(stream)
    ]
    result = ingest(messages, CODEC.decode, dedups(0), {}, NOW, 65_536)
    assert result.duplicates == 1 and [m.offset for m, _ in result.accepted] == [0, 1]
