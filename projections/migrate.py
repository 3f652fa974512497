"""Versioned, idempotent DDL migrations: ``migrations/NNNN_name.sql`` applied in order, once each.

Each applied file is recorded in ``schema_migrations`` with its checksum; a changed file that was
already applied is an error (write a new migration instead). Statements use IF NOT EXISTS, so a crash
between a statement and its record is repaired by running again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from herald.errors import WarehouseError
from projections.warehouse import Warehouse

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self) -> list[str]:
        lines = [ln for ln in self.sql.splitlines() if not ln.strip().startswith("--")]
        return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        if not version.isdigit():
            raise WarehouseError(f"migration file {path.name} must be named NNNN_description.sql")
        found.append(Migration(int(version), name, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise WarehouseError(f"duplicate migration versions in {directory}: {versions}")
    return found


def migrate(warehouse: Warehouse, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the names applied. Safe to run any number of times."""
    warehouse.command(_LEDGER)
    applied = {int(v): c for v, c in warehouse.rows("SELECT version, checksum FROM schema_migrations FINAL")}
    done = []
    for migration in discover(directory):
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise WarehouseError(
                    f"migration {migration.version:04d}_{migration.name} changed after it was applied; "
                    "add a new migration instead of editing an applied one"
                )
            continue
        for statement in migration.statements():
            warehouse.command(statement)
        warehouse.insert(
            "schema_migrations",
            [(migration.version, migration.name, migration.checksum)],
            ["version", "name", "checksum"],
        )
        done.append(f"{migration.version:04d}_{migration.name}")
    return done
