"""A decoder generated from one Avro schema: straight-line Python for the hot path of ingest.

fastavro's schemaless reader walks the schema for every record (~30 µs for a full lifecycle event
here); :func:`compile_reader` instead writes a Python function for one writer schema (each field's
varints, strings, unions and enums read inline, no per-field calls) and returns it, about three times
faster. It reads exactly what fastavro's reader returns for the same schema (dicts, enum symbols as
str, ``timestamp-millis`` as aware UTC datetimes) and is checked against it in
tests/unit/test_fast_reader.py. Only the types the contracts use are supported; anything else raises
:class:`UnsupportedSchemaError` at compile time, and the codec then keeps fastavro for that schema. Schema
resolution (an older writer read into the current shape) stays with fastavro.

Corrupt input raises IndexError, ValueError or UnicodeDecodeError (the codec turns them into
``DecodeError("malformed")``); the caller checks for trailing bytes with the returned position.

>>> read = compile_reader({"type": "record", "name": "R", "fields": [
...     {"name": "id", "type": "string"}, {"name": "n", "type": ["null", "long"]}]})
>>> read(b"\\x04ab\\x02\\x06", 0)
({'id': 'ab', 'n': 3}, 5)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["Reader", "UnsupportedSchemaError", "compile_reader"]

Reader = Callable[[bytes, int], tuple[Any, int]]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "string", "bytes"})


class UnsupportedSchemaError(ValueError):
    """The schema uses a type or logical type the generated reader does not handle."""


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self.counter = 0

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def constant(self, value: Any) -> str:
        name = self.name("_k")
        self.constants[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    # Avro longs and ints: zig-zag varints, inline (most are one byte).
    def varint(self, indent: int, target: str) -> None:
        b, shift = self.name("_b"), self.name("_s")
        self.emit(indent, f"{b} = data[pos]; pos += 1")
        self.emit(indent, f"if {b} < 128: {target} = ({b} >> 1) ^ -({b} & 1)")
        self.emit(indent, "else:")
        self.emit(indent + 1, f"{target} = {b} & 127; {shift} = 7")
        self.emit(indent + 1, "while True:")
        self.emit(indent + 2, f"{b} = data[pos]; pos += 1")
        self.emit(indent + 2, f"{target} |= ({b} & 127) << {shift}")
        self.emit(indent + 2, f"if {b} < 128: break")
        self.emit(indent + 2, f"{shift} += 7")
        self.emit(indent + 2, f"if {shift} > 63: raise ValueError('varint longer than 10 bytes')")
        self.emit(indent + 1, f"{target} = ({target} >> 1) ^ -({target} & 1)")

    def sized(self, indent: int, target: str, convert: str) -> None:
        size = self.name("_n")
        self.varint(indent, size)
        self.emit(indent, f"if {size} < 0 or pos + {size} > end: raise ValueError('length past the end')")
        self.emit(indent, f"{target} = {convert.format(f'data[pos:pos + {size}]')}; pos += {size}")

    def value(self, schema: Any, indent: int, target: str) -> None:  # one branch per type
        if isinstance(schema, list):
            self.union(schema, indent, target)
            return
        kind = schema if isinstance(schema, str) else schema.get("type")
        logical = schema.get("logicalType") if isinstance(schema, dict) else None
        if logical is not None and not (logical == "timestamp-millis" and kind == "long"):
            raise UnsupportedSchemaError(f"logical type {logical} on {kind}")
        if isinstance(kind, dict | list):  # {"type": {...}} nesting
            self.value(kind, indent, target)
        elif kind == "null":
            self.emit(indent, f"{target} = None")
        elif kind == "boolean":
            byte = self.name("_b")
            self.emit(indent, f"{byte} = data[pos]; pos += 1")
            self.emit(indent, f"if {byte} > 1: raise ValueError('boolean byte {{}}'.format({byte}))")
            self.emit(indent, f"{target} = {byte} == 1")
        elif kind in ("int", "long"):
            self.varint(indent, target)
            if logical == "timestamp-millis":
                self.emit(indent, f"{target} = _EPOCH + _timedelta(0, 0, 0, {target})")
        elif kind in ("float", "double"):
            size, fmt = (4, "<f") if kind == "float" else (8, "<d")
            self.emit(indent, f"if pos + {size} > end: raise ValueError('{kind} past the end')")
            self.emit(indent, f"({target},) = _unpack({fmt!r}, data[pos:pos + {size}]); pos += {size}")
        elif kind == "string":
            self.sized(indent, target, "{}.decode()")
        elif kind == "bytes":
            self.sized(indent, target, "bytes({})")
        elif kind == "enum":
            symbols = self.constant(tuple(schema["symbols"]))
            index = self.name("_i")
            self.varint(indent, index)
            self.emit(indent, f"if {index} < 0: raise IndexError('enum index {{}}'.format({index}))")
            self.emit(indent, f"{target} = {symbols}[{index}]")
        elif kind == "record":
            self.record(schema, indent, target)
        else:
            raise UnsupportedSchemaError(f"type {kind!r}")

    def union(self, branches: list[Any], indent: int, target: str) -> None:
        # A branch index below 64 is one varint byte: zig-zag makes index i the byte 2 * i.
        if len(branches) > 64:
            raise UnsupportedSchemaError("a union of more than 64 branches")
        byte = self.name("_u")
        self.emit(indent, f"{byte} = data[pos]; pos += 1")
        for i, branch in enumerate(branches):
            if branch == "null":
                self.emit(indent, f"{'if' if i == 0 else 'elif'} {byte} == {2 * i}: {target} = None")
                continue
            self.emit(indent, f"{'if' if i == 0 else 'elif'} {byte} == {2 * i}:")
            self.value(branch, indent + 1, target)
        self.emit(indent, f"else: raise IndexError('union index byte {{}}'.format({byte}))")

    def record(self, schema: dict[str, Any], indent: int, target: str) -> None:
        names = []
        for field in schema["fields"]:
            local = self.name("_f")
            self.value(field["type"], indent, local)
            names.append(f"{field['name']!r}: {local}")
        self.emit(indent, f"{target} = {{{', '.join(names)}}}")


def compile_reader(schema: dict[str, Any]) -> Reader:
    """A reader ``(data, pos) -> (record, pos after it)`` for records written with ``schema``
    (a plain or fastavro-parsed schema dict). Raises :class:`UnsupportedSchemaError` for types it
    cannot read."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise UnsupportedSchemaError("the top level must be a record")
    writer = _Writer()
    writer.emit(1, "end = len(data)")
    writer.record(schema, 1, "_record")
    writer.emit(1, "return _record, pos")
    source = "def _read(data, pos):\n" + "\n".join(writer.lines) + "\n"
    from struct import unpack

    namespace: dict[str, Any] = {"_EPOCH": _EPOCH, "_timedelta": timedelta, "_unpack": unpack}
    namespace.update(writer.constants)
    exec(
        compile(source, f"<avro reader {schema.get('name', 'record')}>", "exec"), namespace
    )  # our own generated code
    reader: Reader = namespace["_read"]
    return reader
