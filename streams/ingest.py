"""Decide what happens to each raw lifecycle message: write, dead-letter, drop as duplicate, or skip
as already applied. Pure: the decoder, the dedup state and ``now`` are passed in.

Exactly-once into the warehouse rests on facts this module keeps:
- ``applied_upto`` is the last offset per partition whose effect is already in the warehouse (read
  back from it on assignment); anything at or below it is skipped, so a redelivery after a crash
  never double counts, whatever the batch boundaries were.
- every verdict is a function of the message alone (its bytes and its log timestamp) and of the
  dedup state: time rules judge ``occurred_at`` against the message's log time, never the wall clock,
  so a replay, a repair of a half-applied batch, or another worker re-deciding the same offsets
  reaches the same verdicts and forms the same rows. ``now`` only stamps dead letters' headers.
- duplicates are decided by event id in offset order on the log's clock, and the dedup state is
  rebuilt from the same warehouse rows, so a replay reaches the same verdicts as the first pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from herald.errors import DecodeError
from schemas.contract import contract_violations
from streams.dedup import EventDeduplicator

Headers = tuple[tuple[str, bytes], ...]
TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class SourceMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int = 0
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The original bytes plus headers that say where they came from and why they were refused."""

    key: bytes | None
    value: bytes
    headers: Headers


@dataclass(slots=True)
class PartitionProgress:
    first_offset: int
    last_offset: int
    rows: int = 0
    dead: int = 0
    duplicates: int = 0


@dataclass(slots=True)
class IngestResult:
    accepted: list[tuple[SourceMessage, dict[str, Any]]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0
    skipped: int = 0
    progress: dict[TopicPartition, PartitionProgress] = field(default_factory=dict)


def dead_letter(
    msg: SourceMessage, stage: str, error_class: str, message: str, failed_at: datetime
) -> DeadLetter:
    headers = (
        *msg.headers,
        ("herald.source.topic", msg.topic.encode()),
        ("herald.source.partition", str(msg.partition).encode()),
        ("herald.source.offset", str(msg.offset).encode()),
        ("herald.stage", stage.encode()),
        ("herald.error.class", error_class.encode()),
        ("herald.error.message", message[:2000].encode()),
        ("herald.failed_at", failed_at.isoformat().encode()),
    )
    return DeadLetter(msg.key, msg.value, headers)


def ingest(
    messages: Sequence[SourceMessage],
    decode: Callable[[bytes], dict[str, Any]],
    deduplicators: Mapping[TopicPartition, EventDeduplicator],
    applied_upto: Mapping[TopicPartition, int],
    now: datetime,
    max_event_bytes: int,
) -> IngestResult:
    """Sort one batch into rows to write, dead letters and duplicates, in offset order per partition."""
    result = IngestResult()
    for msg in messages:
        tp = (msg.topic, msg.partition)
        if msg.offset <= applied_upto.get(tp, -1):
            result.skipped += 1
            continue
        progress = result.progress.get(tp)
        if progress is None:
            progress = result.progress[tp] = PartitionProgress(msg.offset, msg.offset)
        progress.last_offset = msg.offset
        if len(msg.value) > max_event_bytes:
            result.dead_letters.append(
                dead_letter(
                    msg, "decode", "oversized", f"{len(msg.value)} bytes > limit {max_event_bytes}", now
                )
            )
            progress.dead += 1
            continue
        try:
            event = decode(msg.value)
        except DecodeError as exc:
            result.dead_letters.append(dead_letter(msg, "decode", exc.kind, exc.message, now))
            progress.dead += 1
            continue
        log_time = log_time_of(msg, now)
        problems = contract_violations(event, log_time)
        if problems:
            result.dead_letters.append(dead_letter(msg, "validate", "invalid", "; ".join(problems), now))
            progress.dead += 1
            continue
        if deduplicators[tp].is_duplicate(event["event_id"], int(log_time.timestamp() * 1000)):
            result.duplicates += 1
            progress.duplicates += 1
            continue
        result.accepted.append((msg, event))
        progress.rows += 1
    return result


def log_time_of(msg: SourceMessage, fallback: datetime) -> datetime:
    """The message's log timestamp; ``fallback`` only for a message without one (never on Herald's
    topics, whose broker stamps every message)."""
    if msg.timestamp_ms <= 0:
        return fallback
    return datetime.fromtimestamp(msg.timestamp_ms / 1000, UTC)
