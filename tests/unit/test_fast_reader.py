"""The generated Avro reader (schemas/fast_reader.py) reads exactly what fastavro reads, and corrupt
input gives a DecodeError, never another exception or a different record; an int or long varint out of
its type's range or past its length limit is malformed, naming the field, on the generated path and on
the fastavro path alike."""

from __future__ import annotations

import doctest
import io
import random
from collections import Counter
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import fastavro
import pytest

import schemas.codec
import schemas.fast_reader
import schemas.varints
from dispatch.core import example_request
from herald.errors import DecodeError
from schemas.codec import AVRO_DIR, HEADER_LEN, AvroCodec, load_schema
from schemas.fast_reader import UnsupportedSchemaError, compile_reader
from simulator.model import DEFAULT_MODEL, generate


def lifecycle_records(n: int) -> list[dict[str, Any]]:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    return list(islice(generate(DEFAULT_MODEL, start, 200, float("inf"), seed=11), n))


def fastavro_read(codec: AvroCodec, data: bytes) -> Any:
    buf = io.BytesIO(data)
    buf.seek(HEADER_LEN)
    return fastavro.schemaless_reader(buf, codec._reader, None), buf.tell()


@pytest.mark.parametrize(
    ("contract", "records"),
    [
        ("lifecycle_event", lifecycle_records(3000)),
        ("dispatch_requested", [example_request(), example_request(campaign_id=None, template_version=None)]),
    ],
)
def test_generated_reader_equals_fastavro(contract: str, records: list[dict[str, Any]]) -> None:
    codec = AvroCodec.for_contract(contract)
    read = compile_reader(load_schema(AVRO_DIR / f"{contract}.avsc"))
    kinds = set()
    for record in records:
        data = codec.encode(record)
        expected, end = fastavro_read(codec, data)
        assert read(data, HEADER_LEN) == (expected, end) == (codec.decode(data), len(data))
        kinds.add(expected.get("event_type"))
    if contract == "lifecycle_event":
        assert len(kinds) >= 8  # every branch of the record was exercised: outcomes, errors, engagement


def test_corrupt_bodies_are_decode_errors_or_what_fastavro_reads() -> None:
    """Flipped bytes and truncations: the codec either raises DecodeError or returns what fastavro
    returns for the same bytes (it is stricter than fastavro, never looser)."""
    codec = AvroCodec.for_contract("lifecycle_event")
    rng = random.Random(3)
    errors = same = 0
    for record in lifecycle_records(400):
        data = bytearray(codec.encode(record))
        for _ in range(5):
            mutated = bytearray(data)
            if rng.random() < 0.3:
                mutated = mutated[: rng.randrange(HEADER_LEN, len(mutated))]
            else:
                mutated[rng.randrange(HEADER_LEN, len(mutated))] = rng.randrange(256)
            try:
                got = codec.decode(bytes(mutated))
            except DecodeError:
                errors += 1
                continue
            expected, end = fastavro_read(codec, bytes(mutated))
            assert (got, len(mutated)) == (expected, end)
            same += 1
    assert errors > 100 and same > 100


def test_types_it_cannot_read_are_refused_at_compile_time() -> None:
    with pytest.raises(UnsupportedSchemaError, match="array"):
        compile_reader(
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "a", "type": {"type": "array", "items": "int"}}],
            }
        )
    with pytest.raises(UnsupportedSchemaError, match="logical type date"):
        compile_reader(
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "d", "type": {"type": "int", "logicalType": "date"}}],
            }
        )


# Crafted varints for every int and long field of the lifecycle contract. fastavro reads an int as a
# 64-bit value, keeps only the low 64 bits of a long and accepts any number of varint bytes; Herald
# refuses all three on both of its paths (the generated reader and fastavro behind the body check).

LIFECYCLE = load_schema(AVRO_DIR / "lifecycle_event.avsc")
FAST = AvroCodec(LIFECYCLE)
REFERENCE = AvroCodec(LIFECYCLE, generated=False)
SENTINELS = {"int": 123_456_789, "long": 1_234_567_890_123}  # multi-byte, found once in the body


def integer_fields(schema: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Each int or long field (possibly inside a union with null): its Avro type and whether it is a
    timestamp."""
    found = {}
    for field in schema["fields"]:
        branches = field["type"] if isinstance(field["type"], list) else [field["type"]]
        for branch in branches:
            kind = branch.get("type") if isinstance(branch, dict) else branch
            if kind in ("int", "long"):
                found[field["name"]] = (kind, isinstance(branch, dict) and "logicalType" in branch)
    return found


INTEGER_FIELDS = integer_fields(LIFECYCLE)


def zigzag_varint(value: int, extra_bytes: int = 0) -> bytes:
    """Avro's zig-zag varint of any Python int, padded with ``extra_bytes`` redundant zero groups."""
    unsigned = value << 1 if value >= 0 else (-value << 1) - 1
    groups = []
    while True:
        groups.append(unsigned & 127)
        unsigned >>= 7
        if not unsigned:
            break
    groups += [0] * extra_bytes
    return bytes(g | 128 for g in groups[:-1]) + bytes(groups[-1:])


def body_around(field: str) -> tuple[bytes, bytes]:
    """The bytes of a full lifecycle record before and after ``field``'s varint."""
    kind, is_time = INTEGER_FIELDS[field]
    sentinel = SENTINELS[kind]
    record = {
        "event_id": "e-1", "event_type": "DELIVERED", "tenant_id": "acme", "notification_id": "n-1",
        "channel": "EMAIL", "provider": "smtp-primary", "template_id": "welcome", "template_version": 2,
        "campaign_id": "c1", "campaign_step": 1, "experiment_id": "x1", "variant": "b",
        "recipient": {"id": "r-1", "kind": "CUSTOMER", "tier": "gold", "role": None, "language": "en",
                      "country": "US"},
        "occurred_at": datetime(2026, 11, 28, tzinfo=UTC), "sent_at": datetime(2026, 11, 27, tzinfo=UTC),
        "latency_ms": 1200, "cost_micros": 700, "currency": "USD",
        "error": {"error_class": "timeout", "code": "T1", "message": "slow", "retryable": True},
        "reason": None, "policy_version": None, "source": "notifier",
    }  # fmt: skip
    record[field] = datetime.fromtimestamp(sentinel / 1000, UTC) if is_time else sentinel
    data = FAST.encode(record)
    varint = zigzag_varint(sentinel)
    assert data.count(varint) == 1
    at = data.index(varint)
    return data[:at], data[at + len(varint) :]


def decoded(codec: AvroCodec, data: bytes) -> tuple[str, Any]:
    try:
        return "record", codec.decode(data)
    except DecodeError as exc:
        return exc.kind, exc.message


def test_the_lifecycle_contract_has_the_integer_fields_the_crafted_varints_cover() -> None:
    """Every int and long field of the contract is found, so the crafted cases below reach them all."""
    assert INTEGER_FIELDS == {
        "occurred_at": ("long", True),
        "template_version": ("int", False),
        "campaign_step": ("int", False),
        "latency_ms": ("long", False),
        "cost_micros": ("long", False),
        "sent_at": ("long", True),
    }


@pytest.mark.parametrize("field", sorted(INTEGER_FIELDS))
def test_out_of_range_and_over_long_varints_are_malformed_naming_the_field_on_both_paths(field: str) -> None:
    """Just past each end of the type's range, and one byte past its varint length limit, is malformed
    with the same message on both paths; the ends themselves and a padded in-range value are read."""
    kind, is_time = INTEGER_FIELDS[field]
    before, after = body_around(field)
    low, high = (-(2**31), 2**31 - 1) if kind == "int" else (-(2**63), 2**63 - 1)
    limit = 5 if kind == "int" else 10
    range_message = f"{field}: {{}} is outside the Avro {kind} range [{low}, {high}]"
    refused = {
        zigzag_varint(high + 1): range_message.format(high + 1),
        zigzag_varint(low - 1): range_message.format(low - 1),
        zigzag_varint(2 ** (7 * limit - 1) - 1): range_message.format(2 ** (7 * limit - 1) - 1),
        bytes([255] * (limit - 1) + [127]): range_message.format(-(2 ** (7 * limit - 1))),  # all bits
        zigzag_varint(5, extra_bytes=limit): f"{field}: {kind} varint longer than {limit} bytes",
        zigzag_varint(high, extra_bytes=1): f"{field}: {kind} varint longer than {limit} bytes",
    }
    for varint, message in refused.items():
        data = before + varint + after
        assert decoded(FAST, data) == decoded(REFERENCE, data) == ("malformed", message)
    for value in (low, high, 5) if not is_time else (5,):
        for padding in (0, limit - len(zigzag_varint(value))):
            data = before + zigzag_varint(value, padding) + after
            assert decoded(FAST, data) == decoded(REFERENCE, data)
            assert decoded(FAST, data)[0] == "record"
            expected = datetime.fromtimestamp(value / 1000, UTC) if is_time else value
            assert FAST.decode(data)[field] == expected == fastavro_read(FAST, data)[0][field]


def test_random_varints_in_every_integer_field_read_alike_on_both_paths() -> None:
    """Random values from far below to far above each type's range, minimal or padded up to two bytes
    past the limit: both paths give the same record or the same error, refusing exactly the values
    outside the range and the varints past the limit."""
    rng = random.Random(29)
    counts: Counter[str] = Counter()
    for field, (kind, is_time) in INTEGER_FIELDS.items():
        before, after = body_around(field)
        bits, limit = (32, 5) if kind == "int" else (64, 10)
        for _ in range(300):
            magnitude = rng.choice((rng.randrange(2**7), rng.randrange(2**bits), rng.randrange(2**72)))
            value = rng.choice((1, -1)) * rng.choice((magnitude, 2 ** (bits - 1) + rng.randrange(-3, 3)))
            minimal = len(zigzag_varint(value))
            varint = zigzag_varint(value, rng.choice((0, 0, rng.randrange(max(1, limit + 3 - minimal)))))
            data = before + varint + after
            fast, reference = decoded(FAST, data), decoded(REFERENCE, data)
            if len(varint) > limit:
                expected = ("malformed", f"{field}: {kind} varint longer than {limit} bytes")
                assert fast == reference == expected
                counts["too long"] += 1
            elif not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
                expected = ("malformed", f"{field}: {value} is outside the Avro {kind} range")
                assert fast[0] == reference[0] == "malformed" and fast == reference
                assert str(fast[1]).startswith(expected[1])
                counts["out of range"] += 1
            elif is_time and fast[0] == "malformed":  # a long the datetime cannot hold (past year 9999)
                assert reference[0] == "malformed"
                counts["not a date"] += 1
            else:
                assert fast == reference and fast[0] == "record"
                assert fast[1][field] == (datetime.fromtimestamp(value / 1000, UTC) if is_time else value)
                counts["read"] += 1
    assert min(counts[k] for k in ("too long", "out of range", "read")) > 100, counts


@pytest.mark.parametrize(
    "module", [schemas.codec, schemas.fast_reader, schemas.varints], ids=lambda m: m.__name__
)
def test_doctests_of_the_decoding_modules_pass(module: Any) -> None:
    """The examples in the codec's, the generated reader's and the varint rules' docstrings run."""
    assert doctest.testmod(module).failed == 0
