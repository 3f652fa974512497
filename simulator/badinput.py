"""Bad raw messages of every kind a worker must dead-letter, each labelled. Pure.

Each message is built from a valid base event so that exactly one thing is wrong with it:

- ``garbage``: random bytes that do not start with the single-object marker.
- ``wrong_schema``: a well-formed single-object record of another schema (a page view), whose
  fingerprint the lifecycle codec does not know.
- ``missing_required_field``: the contract's own fingerprint, but the body stops after
  ``occurred_at``, so the required ``tenant_id`` (and everything after it) is absent. Avro binary
  has no field tags: a writer that leaves a field out produces exactly such a short or shifted
  body. A cut body fails decoding deterministically (end of data while reading a field), whereas a
  body shifted by one missing field sometimes decodes into nonsense, so the cut is the honest test.
- ``unknown_enum``: the contract's fingerprint and body, with the event_type index set to 100
  (the enum has 13 symbols). A positive index is used on purpose: fastavro maps a negative index
  to a symbol from the end (-1 decodes as UNKNOWN) instead of failing.
- ``oversized``: a FAILED event whose provider error message makes it exceed ``max_bytes``. The
  size is checked before decoding, so it is dead-lettered as oversized whatever else is wrong; above
  the contract's bound on error messages (4096 characters) the message breaks that bound too.
- ``invalid_value``: decodes fine but breaks ``contract_violations`` (empty tenant, UNKNOWN
  event_type, negative latency, in turn).

``expected_error`` is the ``DecodeError.kind`` the worker should put in the dead-letter headers.

>>> [m.kind for m in bad_messages(7, seed=1)]  # doctest: +NORMALIZE_WHITESPACE
['garbage', 'wrong_schema', 'missing_required_field', 'unknown_enum', 'oversized', 'invalid_value',
 'garbage']
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from itertools import islice
from typing import Any, Final

from schemas.codec import HEADER_LEN, MAGIC, AvroCodec, lifecycle_codec
from schemas.contract import EVENT_TYPES

BAD_KINDS: Final = (
    "garbage",
    "wrong_schema",
    "missing_required_field",
    "unknown_enum",
    "oversized",
    "invalid_value",
)
DEFAULT_MAX_BYTES: Final = 65_536
DEFAULT_OCCURRED_AT: Final = datetime(2025, 1, 1, tzinfo=UTC)  # fixed: bytes depend on seed only
OUT_OF_RANGE_ENUM_INDEX: Final = 100
PAGE_VIEW_SCHEMA: Final = {
    "type": "record",
    "name": "PageView",
    "namespace": "example.web",
    "fields": [{"name": "url", "type": "string"}, {"name": "viewed_at", "type": "long"}],
}


@dataclass(frozen=True)
class BadMessage:
    kind: str  # one of BAD_KINDS
    key: bytes | None
    value: bytes
    expected_error: str  # DecodeError.kind: not_single_object, unknown_schema, malformed, oversized, invalid


@cache
def _lifecycle() -> AvroCodec:
    return lifecycle_codec()


@cache
def _page_views() -> AvroCodec:
    return AvroCodec(PAGE_VIEW_SCHEMA)


def avro_long(n: int) -> bytes:
    """Avro's zig-zag varint encoding of a long.

    >>> avro_long(0), avro_long(-1), avro_long(100)
    (b'\\x00', b'\\x01', b'\\xc8\\x01')
    """
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def avro_string(s: str) -> bytes:
    data = s.encode()
    return avro_long(len(data)) + data


def base_event(index: int, seed: int, occurred_at: datetime = DEFAULT_OCCURRED_AT) -> dict[str, Any]:
    """A valid SENT event; each bad kind spoils one aspect of it."""
    return {
        "event_id": f"bad-{seed:x}-{index:x}",
        "event_type": "SENT",
        "occurred_at": occurred_at,
        "tenant_id": "acme-home",
        "notification_id": f"bad-{seed:x}-{index:x}",
        "channel": "SMS",
        "provider": "sms-primary",
        "latency_ms": 420,
        "source": "herald-sim-badinput",
    }


def _key(event: dict[str, Any]) -> bytes:
    return str(event["notification_id"]).encode()


def garbage(rng: random.Random) -> BadMessage:
    value = bytearray(rng.randbytes(rng.randint(1, 256)))
    if value[:1] == MAGIC[:1]:
        value[0] ^= 0xFF  # never the single-object marker
    return BadMessage("garbage", None, bytes(value), "not_single_object")


def wrong_schema(event: dict[str, Any]) -> BadMessage:
    viewed_at = int(event["occurred_at"].timestamp() * 1000)
    url = f"https://example.com/notifications/{event['notification_id']}"
    value = _page_views().encode({"url": url, "viewed_at": viewed_at})
    return BadMessage("wrong_schema", _key(event), value, "unknown_schema")


def missing_required_field(event: dict[str, Any]) -> BadMessage:
    """Contract fingerprint + a body that ends before tenant_id."""
    body = (
        avro_string(event["event_id"])
        + avro_long(EVENT_TYPES.index(event["event_type"]))
        + avro_long(int(event["occurred_at"].timestamp() * 1000))
    )
    return BadMessage(
        "missing_required_field", _key(event), MAGIC + _lifecycle().fingerprint + body, "malformed"
    )


def unknown_enum(event: dict[str, Any]) -> BadMessage:
    """Contract fingerprint + a valid body whose event_type index (right after event_id) is out of range."""
    valid = _lifecycle().encode(event)
    event_id = avro_string(event["event_id"])
    at = HEADER_LEN + len(event_id)
    assert valid[HEADER_LEN:at] == event_id and valid[at] < 0x80  # event_id first; a one-byte enum index
    value = valid[:at] + avro_long(OUT_OF_RANGE_ENUM_INDEX) + valid[at + 1 :]
    return BadMessage("unknown_enum", _key(event), value, "malformed")


def oversized(event: dict[str, Any], max_bytes: int) -> BadMessage:
    """A FAILED event bloated past ``max_bytes`` by a provider's full error transcript (valid but for
    its size while the transcript is within the contract's error message bound)."""
    line = "550-5.1.1 provider transcript: the recipient server answered with a very long explanation\n"
    message = (line * (max_bytes // len(line) + 1))[: max_bytes + 1]
    error = {"error_class": "rejected", "code": "554", "message": message, "retryable": False}
    value = _lifecycle().encode({**event, "event_type": "FAILED", "latency_ms": None, "error": error})
    return BadMessage("oversized", _key(event), value, "oversized")


INVALID_VALUES: Final = ({"tenant_id": ""}, {"event_type": "UNKNOWN"}, {"latency_ms": -5})


def invalid_value(event: dict[str, Any], variant: int) -> BadMessage:
    """Decodes fine; breaks the contract in one of ``INVALID_VALUES`` (chosen by ``variant``)."""
    value = _lifecycle().encode({**event, **INVALID_VALUES[variant % len(INVALID_VALUES)]})
    return BadMessage("invalid_value", _key(event), value, "invalid")


def bad_message(kind: str, index: int, seed: int, max_bytes: int, occurred_at: datetime) -> BadMessage:
    """Bad message number ``index`` of ``kind`` (deterministic in seed and index)."""
    event = base_event(index, seed, occurred_at)
    if kind == "garbage":
        return garbage(random.Random(f"{seed}:{index}"))
    if kind == "wrong_schema":
        return wrong_schema(event)
    if kind == "missing_required_field":
        return missing_required_field(event)
    if kind == "unknown_enum":
        return unknown_enum(event)
    if kind == "oversized":
        return oversized(event, max_bytes)
    if kind == "invalid_value":
        return invalid_value(event, index // len(BAD_KINDS))
    raise ValueError(f"unknown bad input kind {kind!r}; valid: {', '.join(BAD_KINDS)}")


def iter_bad_messages(
    seed: int, max_bytes: int = DEFAULT_MAX_BYTES, occurred_at: datetime = DEFAULT_OCCURRED_AT
) -> Iterator[BadMessage]:
    """Endless bad messages cycling through ``BAD_KINDS``."""
    index = 0
    while True:
        yield bad_message(BAD_KINDS[index % len(BAD_KINDS)], index, seed, max_bytes, occurred_at)
        index += 1


def bad_messages(
    n: int, seed: int, max_bytes: int = DEFAULT_MAX_BYTES, occurred_at: datetime = DEFAULT_OCCURRED_AT
) -> list[BadMessage]:
    """The first ``n`` of ``iter_bad_messages``: every kind equally often (n // 6 each, give or take one)."""
    return list(islice(iter_bad_messages(seed, max_bytes, occurred_at), n))
