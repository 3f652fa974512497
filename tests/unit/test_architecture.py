"""Pure domain modules import no I/O: no Kafka, ClickHouse, fastavro, HTTP, environment or clock."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PURE = [
    *("streams/dedup.py", "streams/ingest.py", "schemas/contract.py", "schemas/bounds.py"),
    *("schemas/varints.py", "projections/rows.py", "projections/access.py", "projections/lineage.py"),
    *("projections/canonical.py", "web/ratelimit.py"),
    *("dispatch/core.py", "providers/base.py", "analytics/monitor.py"),
]
PURE_PACKAGES = ["experiments", "analytics", "policies"]
FORBIDDEN = {
    "confluent_kafka",
    "aiokafka",
    "faust",
    "clickhouse_connect",
    "chdb",
    "fastavro",
    "httpx",
    "requests",
    "aiohttp",
    "aiosmtplib",
    "aiosmtpd",
    "fastapi",
    "uvicorn",
    "os",
    "time",
    "socket",
    "subprocess",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def pure_files() -> list[Path]:
    files = [ROOT / p for p in PURE]
    for package in PURE_PACKAGES:
        # cli.py and loader.py are shells around the pure modules (they read files)
        files += [
            p for p in (ROOT / package).glob("*.py") if p.name not in ("cli.py", "loader.py", "__init__.py")
        ]
    return files


def test_pure_modules_import_no_io_libraries() -> None:
    """Decision code takes values and returns values; I/O lives in the shells around it."""
    offenders = {str(p.relative_to(ROOT)): sorted(imported_modules(p) & FORBIDDEN) for p in pure_files()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_the_codec_imports_fastavro() -> None:
    """fastavro stays behind schemas/ (the codec and its compatibility check)."""
    users = [
        str(p.relative_to(ROOT))
        for p in ROOT.rglob("*.py")
        if not {".venv", "tests", "build", ".herald"} & set(p.parts) and "fastavro" in imported_modules(p)
    ]
    assert sorted(users) == ["schemas/codec.py", "schemas/compatibility.py"]
