"""Schema evolution check: every historical writer schema must be readable by the current reader
(backward) and every current record by each historical reader (forward)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import fastavro

from schemas.codec import AVRO_DIR, load_schema


def _example(schema: Any) -> Any:
    """A value of ``schema`` with every optional branch filled, so resolution is exercised."""
    if isinstance(schema, list):
        non_null = [s for s in schema if s != "null"]
        return _example(non_null[0]) if non_null else None
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "record":
            return {f["name"]: _example(f["type"]) for f in schema["fields"]}
        if kind == "enum":
            return schema["symbols"][0]
        if kind == "array":
            return [_example(schema["items"])]
        if kind == "map":
            return {"k": _example(schema["values"])}
        if kind in ("long", "int") and schema.get("logicalType", "").startswith("timestamp"):
            return 1_700_000_000_000
        return _example(kind)
    return {
        "string": "x",
        "int": 1,
        "long": 1,
        "boolean": True,
        "double": 1.0,
        "float": 1.0,
        "bytes": b"x",
        "null": None,
    }[schema]


def _roundtrip(writer: dict[str, Any], reader: dict[str, Any]) -> None:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(writer), _example(writer))
    buf.seek(0)
    fastavro.schemaless_reader(buf, fastavro.parse_schema(writer), fastavro.parse_schema(reader))


def check_all(avro_dir: Path = AVRO_DIR) -> list[str]:
    problems = []
    for current_path in sorted(avro_dir.glob("*.avsc")):
        current = load_schema(current_path)
        name = current_path.stem
        history = sorted((avro_dir / "history").glob(f"{name}.v*.avsc"))
        if not history:
            problems.append(f"{name}: no version in history/ (copy it there as {name}.v1.avsc)")
        for old_path in history:
            old = load_schema(old_path)
            for label, writer, reader in (("backward", old, current), ("forward", current, old)):
                try:
                    _roundtrip(writer, reader)
                except Exception as exc:  # fastavro raises several types on incompatibility
                    problems.append(f"{name}: {old_path.name} is not {label} compatible: {exc}")
    return problems
