"""The generated Avro reader (schemas/fast_reader.py) reads exactly what fastavro reads, and corrupt
input gives a DecodeError, never another exception or a different record."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import fastavro
import pytest

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
