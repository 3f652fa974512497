"""Avro's ``int`` and ``long`` as Herald reads them: a varint no longer than its type allows, holding
a value inside the type's range, or a :class:`VarintError` naming the field. Pure.

fastavro (1.13, compiled reader) checks neither: an ``int`` is read as a 64-bit value (2**32 + 5
comes back as 4294967301), a ``long`` keeps only the low 64 bits of however many varint bytes follow
(eleven bytes of 2**70 come back as 64), and a varint may run on for any number of bytes. The Avro
specification writes an int in at most 5 bytes and a long in at most 10, and the Java reader refuses
longer ones. Herald refuses all three cases in both of its decoding paths:

- the generated reader (:mod:`schemas.fast_reader`) checks each varint inline;
- every record the codec hands to fastavro (older writer schemas, schemas the generated reader does
  not support) is first walked by :func:`body_checker`, which reads every varint of the body by
  the same rules and raises the same messages.

A value inside the Avro range can still be too big for the warehouse column it lands in; that is the
contract's business (:mod:`schemas.bounds`).

>>> read_varint(b"\\x80\\x80\\x80\\x80\\x10", 0, "int", "campaign_step")
Traceback (most recent call last):
...
schemas.varints.VarintError: campaign_step: 2147483648 is outside the Avro int range [-2147483648, 2147483647]
>>> read_varint(b"\\x0e", 0, "int", "campaign_step")
(7, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = [
    "AVRO_RANGES",
    "MAX_VARINT_BYTES",
    "BodyCheck",
    "VarintError",
    "body_checker",
    "out_of_range",
    "read_varint",
    "too_long",
]

AVRO_RANGES: Final[Mapping[str, tuple[int, int]]] = {
    "int": (-(2**31), 2**31 - 1),
    "long": (-(2**63), 2**63 - 1),
}
MAX_VARINT_BYTES: Final[Mapping[str, int]] = {"int": 5, "long": 10}

BodyCheck = Callable[[bytes, int], int]


class VarintError(ValueError):
    """A varint longer than its Avro type allows, or a value outside the type's range; the message
    starts with the field's path (``recipient.id``, ``template_version``)."""


def too_long(path: str, kind: str) -> str:
    """The message for a varint of ``kind`` that runs past its byte limit.

    >>> too_long("latency_ms", "long")
    'latency_ms: long varint longer than 10 bytes'
    """
    return f"{path}: {kind} varint longer than {MAX_VARINT_BYTES[kind]} bytes"


def out_of_range(path: str, kind: str, value: int) -> str:
    """The message for a decoded ``value`` outside the range of ``kind``."""
    low, high = AVRO_RANGES[kind]
    return f"{path}: {value} is outside the Avro {kind} range [{low}, {high}]"


def read_varint(data: bytes, pos: int, kind: str, path: str) -> tuple[int, int]:
    """The zig-zag varint of ``kind`` at ``pos`` and the position after it.

    Same order of checks as the generated reader: the byte limit while reading, the range after.
    Raises IndexError when the data ends inside the varint."""
    limit = 7 * (MAX_VARINT_BYTES[kind] - 1)
    byte = data[pos]
    pos += 1
    unsigned, shift = byte & 127, 7
    while byte >= 128:
        if shift > limit:
            raise VarintError(too_long(path, kind))
        byte = data[pos]
        pos += 1
        unsigned |= (byte & 127) << shift
        shift += 7
    value = (unsigned >> 1) ^ -(unsigned & 1)
    low, high = AVRO_RANGES[kind]
    if not low <= value <= high:
        raise VarintError(out_of_range(path, kind, value))
    return value, pos


_FIXED_SIZES: Final = {"float": 4, "double": 8}
_NAMED: Final = frozenset({"record", "enum", "fixed"})


def _names(schema: Any, namespace: str, found: dict[str, Any]) -> None:
    """Every named type in ``schema`` under its full and its short name."""
    if isinstance(schema, list):
        for branch in schema:
            _names(branch, namespace, found)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind in _NAMED:
        name = str(schema["name"])
        if "." in name:
            full, namespace = name, name.rpartition(".")[0]
        else:
            namespace = str(schema.get("namespace", namespace))
            full = f"{namespace}.{name}" if namespace else name
        found.setdefault(
            full, schema
        )  # references may use the full or (in the same namespace) the short name
        found.setdefault(full.rpartition(".")[2], schema)
    if kind == "record":
        for field in schema["fields"]:
            _names(field["type"], namespace, found)
    elif kind == "array":
        _names(schema["items"], namespace, found)
    elif kind == "map":
        _names(schema["values"], namespace, found)
    elif isinstance(kind, dict | list):
        _names(kind, namespace, found)


def body_checker(schema: Mapping[str, Any]) -> BodyCheck:
    """A check ``(data, pos) -> position after the body`` of records written with ``schema``: every
    varint within its type's length and range (:class:`VarintError`), every length, enum index,
    union index and boolean byte possible (ValueError, IndexError at the end of the data).

    >>> check = body_checker({"type": "record", "name": "R", "fields": [
    ...     {"name": "id", "type": "string"}, {"name": "n", "type": ["null", "int"]}]})
    >>> check(b"\\x04ab\\x02\\x06", 0)
    5
    >>> check(b"\\x04ab\\x02\\xff\\xff\\xff\\xff\\x7f", 0)
    Traceback (most recent call last):
    ...
    schemas.varints.VarintError: n: -17179869184 is outside the Avro int range [-2147483648, 2147483647]
    """
    names: dict[str, Any] = {}
    _names(dict(schema), "", names)

    def walk(node: Any, data: bytes, pos: int, end: int, path: str) -> int:
        if isinstance(node, list):
            index, pos = read_varint(data, pos, "long", path)
            if not 0 <= index < len(node):
                raise IndexError(f"{path}: union index {index}")
            return walk(node[index], data, pos, end, path)
        if isinstance(node, str) and node in names:
            node = names[node]
        kind = node.get("type") if isinstance(node, dict) else node
        if isinstance(kind, dict | list):
            return walk(kind, data, pos, end, path)
        if kind == "null":
            return pos
        if kind == "boolean":
            if data[pos] > 1:
                raise ValueError(f"{path}: boolean byte {data[pos]}")
            return pos + 1
        if kind in ("int", "long"):
            return read_varint(data, pos, kind, path)[1]
        if kind in _FIXED_SIZES or kind == "fixed":
            size = _FIXED_SIZES[kind] if kind in _FIXED_SIZES else int(node["size"])
            if pos + size > end:
                raise ValueError(f"{path}: {kind} past the end")
            return pos + size
        if kind in ("string", "bytes"):
            size, pos = read_varint(data, pos, "long", path)
            if size < 0 or pos + size > end:
                raise ValueError(f"{path}: length past the end")
            if kind == "string":
                data[pos : pos + size].decode()  # UnicodeDecodeError, as the readers raise
            return pos + size
        if kind == "enum":
            index, pos = read_varint(data, pos, "int", path)
            if not 0 <= index < len(node["symbols"]):
                raise IndexError(f"{path}: enum index {index}")
            return pos
        if kind == "record":
            prefix = f"{path}." if path else ""
            for field in node["fields"]:
                pos = walk(field["type"], data, pos, end, prefix + field["name"])
            return pos
        if kind in ("array", "map"):
            items = node["items"] if kind == "array" else node["values"]
            while True:
                count, pos = read_varint(data, pos, "long", path)
                if count == 0:
                    return pos
                if count < 0:  # a negative count is followed by the block's size in bytes
                    count = -count
                    pos = read_varint(data, pos, "long", path)[1]
                for _ in range(count):
                    if kind == "map":
                        pos = walk("string", data, pos, end, f"{path}{{}}")
                    pos = walk(items, data, pos, end, f"{path}[]")
        raise ValueError(f"{path}: unknown Avro type {kind!r}")

    def check(data: bytes, pos: int) -> int:
        return walk(dict(schema), data, pos, len(data), "")

    return check
