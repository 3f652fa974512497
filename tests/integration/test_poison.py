"""A foreign writer's poison on the real broker and the real warehouse engine: values the warehouse
cannot hold (an int past int32, an over-long varint) or the contract refuses (latency past 30 days,
an error message past 4096 characters, an occurred_at centuries ahead), framed as valid Avro
single-object records of the lifecycle schema, are dead-lettered once each with headers naming the
stage, the class and the field, and every valid event around them is written once: no batch stalls."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import pytest

from schemas.bounds import ERROR_MESSAGE_MAX_CHARS, LATENCY_MS_MAX
from schemas.codec import HEADER_LEN, lifecycle_codec
from simulator.model import DEFAULT_MODEL, generate
from tests.conftest import Herald
from tests.integration.helpers import read_topic

pytestmark = pytest.mark.integration

CODEC = lifecycle_codec()


@dataclass(frozen=True)
class Poison:
    name: str
    value: bytes
    stage: str
    error_class: str
    message: str


def varint(value: int, extra_bytes: int = 0) -> bytes:
    """Avro's zig-zag varint of any Python int, as a writer without a range check produces it, padded
    with ``extra_bytes`` redundant groups."""
    unsigned = value << 1 if value >= 0 else (-value << 1) - 1
    groups = []
    while True:
        groups.append(unsigned & 127)
        unsigned >>= 7
        if not unsigned:
            break
    groups += [0] * extra_bytes
    return bytes(g | 128 for g in groups[:-1]) + bytes(groups[-1:])


def patched(event: dict[str, Any], field: str, sentinel: int, replacement: bytes) -> bytes:
    """``event`` encoded with ``field`` = ``sentinel``, whose varint in the body is then replaced: the
    framing (marker, the lifecycle schema's fingerprint) stays valid, only the body carries the value."""
    data = CODEC.encode({**event, field: sentinel})
    body = data[HEADER_LEN:]
    assert body.count(varint(sentinel)) == 1
    return data[:HEADER_LEN] + body.replace(varint(sentinel), replacement)


def poison_messages(base: dict[str, Any]) -> list[Poison]:
    failed = {**base, "event_type": "FAILED", "error": {"error_class": "rejected", "code": "554",
              "message": "x" * (ERROR_MESSAGE_MAX_CHARS + 1), "retryable": False}}  # fmt: skip
    return [
        Poison(
            "template_version past int32",
            patched(base, "template_version", 123_456_789, varint(2**32 + 5)),
            "decode", "malformed",
            "template_version: 4294967301 is outside the Avro int range [-2147483648, 2147483647]",
        ),
        Poison(
            "cost_micros in an 11-byte varint",
            patched(base, "cost_micros", 1_234_567_890_123, varint(7, extra_bytes=10)),
            "decode", "malformed", "cost_micros: long varint longer than 10 bytes",
        ),
        Poison(
            "latency_ms past 30 days",
            CODEC.encode({**base, "latency_ms": LATENCY_MS_MAX + 1}),
            "validate", "invalid", "latency_ms: 2592000001 is above 2592000000 (30 days)",
        ),
        Poison(
            "an error message past 4096 characters",
            CODEC.encode(failed),
            "validate", "invalid",
            "error.message: 4097 characters is above 4096 (a reply, not a transcript)",
        ),
        Poison(
            "occurred_at in 2999",
            CODEC.encode({**base, "occurred_at": datetime(2999, 1, 1, tzinfo=UTC), "sent_at": None}),
            "validate", "invalid",
            "occurred_at: 2999-01-01T00:00:00+00:00 is outside [2000-01-01, now + 1 day]",
        ),
    ]  # fmt: skip


def test_a_foreign_writers_poison_is_dead_lettered_and_every_valid_event_around_it_is_written(
    herald: Herald,
) -> None:
    """Poison in the middle of valid traffic, keyed onto the valid events' partitions: every valid
    event lands once, each poison message is one dead letter naming stage, class and field, and the
    worker goes on to write what comes after."""
    worker = herald.start_worker()
    start = datetime.now(UTC) - timedelta(minutes=30)
    valid = list(islice(generate(DEFAULT_MODEL, start, 50, float("inf"), seed=23), 2000))
    base = next(e for e in valid if e["event_type"] == "SENT")
    poison = poison_messages({**base, "event_id": "poison"})
    emitter = herald.emitter()
    half = len(valid) // 2
    spacing = half // (len(poison) + 1)
    for i, event in enumerate(valid[:half]):
        emitter.emit(event)
        if i % spacing == spacing - 1 and i // spacing < len(poison):
            # keyed like the event just sent: same partition, valid events before and after it
            emitter.emit_raw(event["notification_id"].encode(), poison[i // spacing].value)
    emitter.flush()
    herald.wait_caught_up()
    for event in valid[half:]:  # after the poison was read: the worker still writes
        emitter.emit(event)
    emitter.flush()
    herald.wait_caught_up()

    assert herald.sql("SELECT count(), uniqExact(event_id) FROM events") == [[len(valid), len(valid)]]
    assert herald.scalar("SELECT count() FROM events WHERE event_id = 'poison'") == 0
    assert herald.scalar("SELECT sum(dead_letters) FROM ingest_batches") == len(poison)
    letters = read_topic(herald.bootstrap, herald.settings.topics.dead_letter, len(poison) + 1, timeout=10)
    by_value = {p.value: p for p in poison}
    assert Counter(letter.value() for letter in letters) == Counter(
        p.value for p in poison
    )  # once, untouched
    for letter in letters:
        expected = by_value[letter.value()]
        headers = {k: v.decode() for k, v in letter.headers()}
        assert headers["herald.stage"] == expected.stage, expected.name
        assert headers["herald.error.class"] == expected.error_class, expected.name
        assert headers["herald.error.message"] == expected.message, expected.name
    assert worker.proc is not None and worker.proc.poll() is None
