"""Avro single-object encoding of the event contract; the only module that imports fastavro.

Every record carries the fingerprint of its writer schema (Avro single-object encoding:
``C3 01`` + 8-byte little-endian CRC-64-AVRO of the parsing canonical form + binary body), so a
reader can resolve any historical writer schema against the current reader schema.

Records of the current schema are read by a reader generated from it (schemas/fast_reader.py); the
others, and every record when the generated reader cannot handle the schema, by fastavro. Both paths
refuse the same things, with the same messages: an ``int`` or ``long`` varint longer than its type
allows or outside its type's range is ``DecodeError("malformed")`` naming the field (fastavro reads
such values silently, so the bytes are walked by :func:`schemas.varints.body_checker` before fastavro
sees them).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from herald.errors import DecodeError, EmitError
from schemas.fast_reader import Reader, UnsupportedSchemaError, compile_reader
from schemas.varints import BodyCheck, VarintError, body_checker

MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8
AVRO_DIR = Path(__file__).parent / "avro"


def schema_fingerprint(schema: Mapping[str, Any]) -> bytes:
    """CRC-64-AVRO of the schema's parsing canonical form, as the 8 little-endian bytes of the spec."""
    parsed = fastavro.parse_schema(dict(schema), _write_hint=False)
    # fastavro spells the Rabin fingerprint as the hex of its little-endian bytes already.
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def load_schema(path: Path) -> dict[str, Any]:
    with path.open() as f:
        schema: dict[str, Any] = json.load(f)
    return schema


@dataclass(frozen=True)
class SchemaVersion:
    name: str
    fingerprint: bytes
    parsed: Any


class AvroCodec:
    """Encodes with the current schema; decodes any known writer schema into the current shape.

    >>> codec = AvroCodec.for_contract("lifecycle_event")
    >>> data = codec.encode({"event_id": "e1", "event_type": "SENT", "occurred_at": 0,
    ...                      "tenant_id": "t1", "notification_id": "n1", "channel": "SMS"})
    >>> data[:2] == MAGIC, codec.decode(data)["event_type"]
    (True, 'SENT')
    """

    def __init__(
        self, current: Mapping[str, Any], history: Iterable[Mapping[str, Any]] = (), *, generated: bool = True
    ) -> None:
        """``generated=False`` reads every record with fastavro (the reference path the tests compare
        the generated reader with)."""
        self._reader = fastavro.parse_schema(dict(current))
        self._fast: Reader | None = None
        try:  # records written with the current schema: a reader generated for it (schemas/fast_reader.py)
            self._fast = compile_reader(dict(current)) if generated else None
        except UnsupportedSchemaError:
            self._fast = None
        self.fingerprint = schema_fingerprint(current)
        self._writers: dict[bytes, Any] = {self.fingerprint: self._reader}
        self._checks: dict[bytes, BodyCheck] = {self.fingerprint: body_checker(current)}
        for old in history:
            old_fingerprint = schema_fingerprint(old)
            if old_fingerprint not in self._writers:
                self._writers[old_fingerprint] = fastavro.parse_schema(dict(old))
                self._checks[old_fingerprint] = body_checker(old)

    @classmethod
    def for_contract(cls, name: str, avro_dir: Path = AVRO_DIR) -> AvroCodec:
        current = load_schema(avro_dir / f"{name}.avsc")
        history = [load_schema(p) for p in sorted((avro_dir / "history").glob(f"{name}.v*.avsc"))]
        return cls(current, history)

    @property
    def known_fingerprints(self) -> frozenset[bytes]:
        return frozenset(self._writers)

    def encode(self, record: Mapping[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(self.fingerprint)
        try:
            fastavro.schemaless_writer(buf, self._reader, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise EmitError(f"record does not match the contract: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError(
                "not_single_object", "not an Avro single-object record (bad marker or too short)"
            )
        writer = self._writers.get(data[2:HEADER_LEN])
        if writer is None:
            raise DecodeError(
                "unknown_schema", f"unknown writer schema fingerprint {data[2:HEADER_LEN].hex()}"
            )
        if writer is self._reader and self._fast is not None:
            try:
                record, end = self._fast(data, HEADER_LEN)
            except VarintError as exc:  # names the field
                raise DecodeError("malformed", str(exc)) from exc
            except (IndexError, ValueError, UnicodeDecodeError, OverflowError, struct.error) as exc:
                raise DecodeError("malformed", f"corrupt Avro body: {type(exc).__name__}: {exc}") from exc
            if end != len(data):
                raise DecodeError("malformed", f"{len(data) - end} trailing bytes after the Avro body")
            return record  # type: ignore[no-any-return]  # a dict: the reader builds records
        try:  # fastavro reads out-of-range and over-long varints without complaint: walk them first
            end = self._checks[data[2:HEADER_LEN]](data, HEADER_LEN)
        except VarintError as exc:
            raise DecodeError("malformed", str(exc)) from exc
        except (IndexError, ValueError, UnicodeDecodeError) as exc:
            raise DecodeError("malformed", f"corrupt Avro body: {type(exc).__name__}: {exc}") from exc
        if end != len(data):
            raise DecodeError("malformed", f"{len(data) - end} trailing bytes after the Avro body")
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            if writer is self._reader:
                record = fastavro.schemaless_reader(buf, writer, None)
            else:
                record = fastavro.schemaless_reader(buf, writer, self._reader)
        except Exception as exc:  # fastavro raises many unrelated types on corrupt input
            raise DecodeError("malformed", f"corrupt Avro body: {type(exc).__name__}: {exc}") from exc
        if buf.tell() != len(data):
            raise DecodeError("malformed", f"{len(data) - buf.tell()} trailing bytes after the Avro body")
        if not isinstance(record, dict):
            raise DecodeError("malformed", "Avro body is not a record")
        return record


def request_codec() -> AvroCodec:
    return AvroCodec.for_contract("dispatch_requested")


def lifecycle_codec() -> AvroCodec:
    return AvroCodec.for_contract("lifecycle_event")
