"""A real embedded warehouse with two tenants' rows in every object people can read, and the API over
it with keys of every role: what the security tests attack."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from herald.settings import load_settings
from projections.access import GLOBAL_TABLES, SHARED_ROWS, TENANT_TABLES
from projections.migrate import migrate
from projections.sql_reader import SqlReaders
from projections.warehouse import Warehouse
from projections.writer import IngestWriter
from schemas.codec import lifecycle_codec
from simulator.model import DEFAULT_MODEL, generate
from streams.ingest import SourceMessage
from streams.pipeline import IngestPipeline
from streams.replay import CountingDeadLetters
from web.auth import hash_key, load_key_ring

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
A, B = "acme-home", "brightfix"
ROLES = ("viewer", "analyst", "operator", "admin")
KEYS: dict[str, str] = {
    **{f"{role}-{tenant}": f"hk_test-{role}-{tenant}-0123456789" for role in ROLES[:3] for tenant in (A, B)},
    "operator-all": "hk_test-operator-all-0123456789",
    "admin-all": "hk_test-admin-all-0123456789",
}


def key_entries() -> list[dict[str, str]]:
    out = []
    for name, key in KEYS.items():
        role, _, tenant = name.partition("-")
        out.append(
            {
                "name": name,
                "tenant": "*" if tenant == "all" else tenant,
                "role": role,
                "key_sha256": hash_key(key),
            }
        )
    return out


@dataclass
class Filled:
    root: Path
    warehouse: Warehouse
    readers: SqlReaders
    keys_file: Path

    def headers(self, name: str) -> dict[str, str]:
        return {"X-Api-Key": KEYS[name]}


def fill(root: Path) -> Iterator[Filled]:
    """Simulated traffic of several tenants through the real ingest pipeline (events and every rollup),
    plus a row of tenants A and B in each tenant table the pipeline does not write, the shared tenant
    of ``alerts`` and a row of each global-only table."""
    warehouse = Warehouse(f"chdb://{root / 'warehouse'}")
    try:
        migrate(warehouse)
        pipeline = IngestPipeline(
            load_settings(data_dir=root),
            IngestWriter(warehouse, "test"),
            lifecycle_codec(),
            CountingDeadLetters(),  # type: ignore[arg-type]  # same send/close surface as DeadLetterSink
            clock=lambda: NOW,
        )
        codec = lifecycle_codec()
        events = list(generate(DEFAULT_MODEL, NOW - timedelta(hours=2), 10, 300, seed=5))
        messages = [
            SourceMessage("lifecycle", i % 4, i // 4, e["notification_id"].encode(), codec.encode(e))
            for i, e in enumerate(events)
        ]
        pipeline.apply(messages)
        extra: dict[str, dict[str, Any]] = {
            "experiment_variant_minute": {"experiment_id": "x", "variant": "v"},
            "segment_members": {"snapshot_at": datetime.now(UTC)},  # kept 30 days (TTL)
        }
        for table, column in TENANT_TABLES.items():
            tenants = [A, B, *([SHARED_ROWS[table]] if table in SHARED_ROWS else [])]
            more = extra.get(table, {})
            if table == "alerts":
                more = {"alert_id": None}  # one alert per tenant: alerts_current groups by it
            rows = [(t, *(t if v is None else v for v in more.values())) for t in tenants]
            warehouse.insert(table, rows, [column, *more])
        warehouse.insert("ingest_batches", [("lifecycle", 0, 0, 0, 0, 1, 0, "test", NOW)], [
            "topic", "partition", "first_offset", "last_offset", "rows", "dead_letters", "duplicates",
            "worker", "written_at",
        ])  # fmt: skip
        warehouse.insert("ingest_intents", [("lifecycle", 0, 0, 0, 1, "test", NOW)], [
            "topic", "partition", "first_offset", "last_offset", "rows", "worker", "planned_at",
        ])  # fmt: skip
        assert {"ingest_batches", "ingest_intents", "schema_migrations"} == GLOBAL_TABLES, "fill each one"
        keys_file = root / "keys.yaml"
        keys_file.write_text(yaml.safe_dump({"keys": key_entries()}))
        assert load_key_ring(keys_file) is not None
        yield Filled(root, warehouse, SqlReaders(warehouse), keys_file)
    finally:
        warehouse.close()


def objects(warehouse: Warehouse) -> dict[str, list[str]]:
    """Every table and view of Herald's database with its columns."""
    out: dict[str, list[str]] = {}
    for table, column in warehouse.rows(
        "SELECT table, name FROM system.columns WHERE database = currentDatabase() ORDER BY table, position"
    ):
        out.setdefault(str(table), []).append(str(column))
    for (table,) in warehouse.rows("SELECT name FROM system.tables WHERE database = currentDatabase()"):
        out.setdefault(str(table), [])
    return out


def distinct(readers: SqlReaders, tenant: str | None, sql: str) -> set[Any]:
    return {row[0] for row in readers.query(tenant, sql, 100_000).rows}
