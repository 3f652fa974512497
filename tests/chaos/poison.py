"""The poison mix: every kind of bad message the simulator makes (simulator/badinput.py), plus a
foreign writer's records with out-of-range values in valid framing (the single-object marker and the
lifecycle schema's own fingerprint, schemas/codec.py), which only a range check, the contract or the
engine can catch. Each is meant for the dead-letter topic, once; none may become a row."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import count
from typing import Any

from schemas.codec import HEADER_LEN, lifecycle_codec
from simulator.badinput import BAD_KINDS, DEFAULT_MAX_BYTES, bad_message, base_event

LATENCY_BOUND_MS = 30 * 24 * 3600 * 1000  # the contract's bound on latency_ms: 30 days between two steps
ERROR_MESSAGE_BOUND = 4096  # characters of a provider's error reply the contract keeps
FOREIGN_KINDS = (
    "template_version_past_int32",
    "template_version_past_uint32",
    "latency_past_bound",
    "cost_in_11_byte_varint",
    "oversized_error_message",
)


@dataclass(frozen=True)
class Poison:
    kind: str
    key: bytes | None  # None: keyed like the valid event it follows
    value: bytes


def varint(value: int, padding: int = 0) -> bytes:
    """Avro's zig-zag varint of any int, as a writer without range checks produces it, with ``padding``
    redundant groups (an over-long encoding of the same value).

    >>> varint(1), varint(-1), varint(2**31).hex(), len(varint(7, padding=10))
    (b'\\x02', b'\\x01', '8080808010', 11)
    """
    z = value << 1 if value >= 0 else ((-value) << 1) - 1
    groups = []
    while True:
        groups.append(z & 0x7F)
        z >>= 7
        if not z:
            break
    groups += [0] * padding
    return bytes(g | 0x80 for g in groups[:-1]) + bytes(groups[-1:])


def patched(event: dict[str, Any], field: str, sentinel: int, body_value: bytes) -> bytes:
    """``event`` encoded with ``field`` = ``sentinel``, the sentinel's varint in the body then replaced by
    ``body_value``: marker and fingerprint stay the contract's, only the body carries the value."""
    data = lifecycle_codec().encode({**event, field: sentinel})
    body = data[HEADER_LEN:]
    if body.count(varint(sentinel)) != 1:
        raise ValueError(f"sentinel {sentinel} of {field} is not unique in the body")
    return data[:HEADER_LEN] + body.replace(varint(sentinel), body_value)


def foreign(kind: str, index: int, seed: int, occurred_at: datetime) -> Poison:
    """Foreign-writer poison of ``kind`` number ``index``: a valid SENT event but for one value."""
    event = {**base_event(index, seed, occurred_at), "event_id": f"poison-{seed}-{index}",
             "template_id": "welcome", "template_version": 3}  # fmt: skip
    codec = lifecycle_codec()
    if kind == "template_version_past_int32":
        value = patched(event, "template_version", 123_456_789, varint(2**31))
    elif kind == "template_version_past_uint32":
        value = patched(event, "template_version", 123_456_789, varint(2**32 + 5))
    elif kind == "latency_past_bound":
        value = codec.encode({**event, "latency_ms": LATENCY_BOUND_MS + 1})
    elif kind == "cost_in_11_byte_varint":
        value = patched({**event, "currency": "USD"}, "cost_micros", 1_234_567_890_123, varint(7, padding=10))
    elif kind == "oversized_error_message":
        error = {"error_class": "rejected", "code": "554", "message": "x" * (ERROR_MESSAGE_BOUND + 1),
                 "retryable": False}  # fmt: skip
        value = codec.encode({**event, "event_type": "FAILED", "latency_ms": None, "error": error})
    else:
        raise ValueError(f"unknown poison kind {kind!r}")
    return Poison(kind, None, value)


def poison_mix(seed: int, occurred_at: datetime, max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[Poison]:
    """Endless poison cycling through every bad kind of the simulator, then every foreign kind."""
    kinds = (*BAD_KINDS, *FOREIGN_KINDS)
    for i in count():
        kind = kinds[i % len(kinds)]
        if kind in BAD_KINDS:
            bad = bad_message(kind, i, seed, max_bytes, occurred_at)
            yield Poison(kind, bad.key, bad.value)
        else:
            yield foreign(kind, i, seed, occurred_at)
