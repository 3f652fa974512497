"""A decoder generated from one Avro schema: straight-line Python for the hot path of ingest.

fastavro's schemaless reader walks the schema for every record (~30 µs for a full lifecycle event
here); :func:`compile_reader` instead writes a Python function for one writer schema (each field's
varints, strings, unions and enums read inline, no per-field calls) and returns it, about three times
faster. It reads exactly what fastavro's reader returns for the same schema (dicts, enum symbols as
str, ``timestamp-millis`` as aware UTC datetimes) and is checked against it in
tests/unit/test_fast_reader.py. Only the types the contracts use are supported; anything else raises
:class:`UnsupportedSchemaError` at compile time, and the codec then keeps fastavro for that schema. Schema
resolution (an older writer read into the current shape) stays with fastavro.

Each int and long is checked as :mod:`schemas.varints` says (at most 5 or 10 varint bytes, a value in
the type's range; fastavro checks neither): a :class:`~schemas.varints.VarintError` naming the field,
with the message :func:`~schemas.varints.body_checker` gives for the same bytes. Only varints of more
than one byte are checked, so the common case costs nothing. Other corrupt input raises IndexError,
ValueError or UnicodeDecodeError. The codec turns all of them into ``DecodeError("malformed")``; the
caller checks for trailing bytes with the returned position.

>>> read = compile_reader({"type": "record", "name": "R", "fields": [
...     {"name": "id", "type": "string"}, {"name": "n", "type": ["null", "long"]}]})
>>> read(b"\\x04ab\\x02\\x06", 0)
({'id': 'ab', 'n': 3}, 5)
>>> read(b"\\x04ab\\x02\\x80\\x80\\x80\\x80\\x80\\x80\\x80\\x80\\x80\\x80\\x01", 0)
Traceback (most recent call last):
...
schemas.varints.VarintError: n: long varint longer than 10 bytes
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.varints import AVRO_RANGES, MAX_VARINT_BYTES, VarintError, out_of_range, too_long

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

    # Avro longs and ints: zig-zag varints, inline (most are one byte, and one byte is always in
    # range). Longer ones are held to the type's byte limit while reading and to its range after,
    # in the order schemas.varints.read_varint checks them, so both paths give the same message.
    def varint(self, indent: int, target: str, kind: str, path: str) -> None:
        b, shift = self.name("_b"), self.name("_s")
        limit = 7 * (MAX_VARINT_BYTES[kind] - 1)
        self.emit(indent, f"{b} = data[pos]; pos += 1")
        self.emit(indent, f"if {b} < 128: {target} = ({b} >> 1) ^ -({b} & 1)")
        self.emit(indent, "else:")
        self.emit(indent + 1, f"{target} = {b} & 127; {shift} = 7")
        self.emit(indent + 1, "while True:")
        self.emit(indent + 2, f"{b} = data[pos]; pos += 1")
        self.emit(indent + 2, f"{target} |= ({b} & 127) << {shift}")
        self.emit(indent + 2, f"if {b} < 128: break")
        self.emit(indent + 2, f"{shift} += 7")
        self.emit(indent + 2, f"if {shift} > {limit}: raise _VarintError({too_long(path, kind)!r})")
        self.emit(indent + 1, f"{target} = ({target} >> 1) ^ -({target} & 1)")
        self.emit(
            indent + 1,
            f"if not {AVRO_RANGES[kind][0]} <= {target} <= {AVRO_RANGES[kind][1]}: "
            f"raise _VarintError(_out_of_range({path!r}, {kind!r}, {target}))",
        )

    def sized(self, indent: int, target: str, convert: str, path: str) -> None:
        size = self.name("_n")
        self.varint(indent, size, "long", path)
        past = f"{path}: length past the end"
        self.emit(indent, f"if {size} < 0 or pos + {size} > end: raise ValueError({past!r})")
        self.emit(indent, f"{target} = {convert.format(f'data[pos:pos + {size}]')}; pos += {size}")

    def value(self, schema: Any, indent: int, target: str, path: str) -> None:  # one branch per type
        if isinstance(schema, list):
            self.union(schema, indent, target, path)
            return
        kind = schema if isinstance(schema, str) else schema.get("type")
        logical = schema.get("logicalType") if isinstance(schema, dict) else None
        if logical is not None and not (logical == "timestamp-millis" and kind == "long"):
            raise UnsupportedSchemaError(f"logical type {logical} on {kind}")
        if isinstance(kind, dict | list):  # {"type": {...}} nesting
            self.value(kind, indent, target, path)
        elif kind == "null":
            self.emit(indent, f"{target} = None")
        elif kind == "boolean":
            byte = self.name("_b")
            self.emit(indent, f"{byte} = data[pos]; pos += 1")
            self.emit(
                indent, f"if {byte} > 1: raise ValueError({path + ': boolean byte {}'!r}.format({byte}))"
            )
            self.emit(indent, f"{target} = {byte} == 1")
        elif kind in ("int", "long"):
            self.varint(indent, target, kind, path)
            if logical == "timestamp-millis":
                self.emit(indent, f"{target} = _EPOCH + _timedelta(0, 0, 0, {target})")
        elif kind in ("float", "double"):
            size, fmt = (4, "<f") if kind == "float" else (8, "<d")
            self.emit(indent, f"if pos + {size} > end: raise ValueError({f'{path}: {kind} past the end'!r})")
            self.emit(indent, f"({target},) = _unpack({fmt!r}, data[pos:pos + {size}]); pos += {size}")
        elif kind == "string":
            self.sized(indent, target, "{}.decode()", path)
        elif kind == "bytes":
            self.sized(indent, target, "bytes({})", path)
        elif kind == "enum":
            symbols = self.constant(tuple(schema["symbols"]))
            index = self.name("_i")
            self.varint(indent, index, "int", path)
            bad = f"{path}: enum index {{}}"
            self.emit(
                indent,
                f"if not 0 <= {index} < {len(schema['symbols'])}: raise IndexError({bad!r}.format({index}))",
            )
            self.emit(indent, f"{target} = {symbols}[{index}]")
        elif kind == "record":
            self.record(schema, indent, target, path)
        else:
            raise UnsupportedSchemaError(f"type {kind!r}")

    def union(self, branches: list[Any], indent: int, target: str, path: str) -> None:
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
            self.value(branch, indent + 1, target, path)
        self.emit(indent, f"else: raise IndexError({path + ': union index byte {}'!r}.format({byte}))")

    def record(self, schema: dict[str, Any], indent: int, target: str, path: str) -> None:
        names = []
        prefix = f"{path}." if path else ""
        for field in schema["fields"]:
            local = self.name("_f")
            self.value(field["type"], indent, local, prefix + field["name"])
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
    writer.record(schema, 1, "_record", "")
    writer.emit(1, "return _record, pos")
    source = "def _read(data, pos):\n" + "\n".join(writer.lines) + "\n"
    from struct import unpack

    namespace: dict[str, Any] = {
        "_EPOCH": _EPOCH,
        "_timedelta": timedelta,
        "_unpack": unpack,
        "_VarintError": VarintError,
        "_out_of_range": out_of_range,
    }
    namespace.update(writer.constants)
    exec(
        compile(source, f"<avro reader {schema.get('name', 'record')}>", "exec"), namespace
    )  # our own generated code
    reader: Reader = namespace["_read"]
    return reader
