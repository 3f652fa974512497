"""Cost of a definition write against the length of the history in ``definition_changes``.

    python -m bench.registry_writes [--histories 10,1000,10000] [--writes 15]

For each history length H, over an embedded warehouse of its own run: one experiment with H versions
(each body as large as the bounds allow: a 2,000-character description), beside a few other
experiments and segments. A fresh :class:`experiments.registry.Registry` over it takes its first
snapshot (the cold read, as a worker does at start; the median of three fresh registries), then one
makes ``--writes`` changes to that experiment the way the API does (``apply``, then ``snapshot`` for
the answer). Printed per H: the CPU time of this process (the embedded engine's threads included;
wall time on a shared machine measures the neighbours) of the cold read and of the median write, each
as a ratio to the figure at the first H of the same run (milliseconds beside them, for orientation
only), and the bytes the warehouse
returned to the registry for each (a count, not a timing: it does not move with the machine's load).
A write that costs the same whatever the history stays near 1.0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from experiments.definitions import MAX_DESCRIPTION_CHARS
from experiments.registry import (
    CHANGE_COLUMNS,
    TABLE,
    Change,
    FileDefinitions,
    Registry,
    update_experiment,
)
from projections.migrate import migrate
from projections.warehouse import Warehouse

TENANT = "acme"
OBJECT = "long-history"
OTHERS = 10  # experiments and segments beside the long history: the objects every fold validates
START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
INSERT_CHUNK = 2_000
COLD_READS = 3


def experiment(experiment_id: str, version: int) -> dict[str, Any]:
    """A valid definition whose description is as long as the bounds allow."""
    return {
        "id": experiment_id,
        "tenant": TENANT,
        "template": "welcome",
        "description": f"v{version} ".ljust(MAX_DESCRIPTION_CHARS, "x"),
        "variants": [
            {"name": "control", "template_version": 1, "weight": 1},
            {"name": "v2", "template_version": 2, "weight": 1},
        ],
        "start": "2030-01-01T00:00:00Z",
        "stop": "2030-02-01T00:00:00Z",
        "primary_metric": "open_rate",
        "mde": 0.05,
    }


def history(length: int) -> list[Change]:
    """``length`` versions of OBJECT, then OTHERS experiments and OTHERS segments of one version each."""
    changes = [
        Change(START_MS + v, TENANT, "experiment", OBJECT, v, "created" if v == 1 else "updated",
               json.dumps(experiment(OBJECT, v)), "bench")
        for v in range(1, length + 1)
    ]  # fmt: skip
    for i in range(OTHERS):
        body = json.dumps(experiment(f"other-{i}", 1))
        changes.append(Change(START_MS, TENANT, "experiment", f"other-{i}", 1, "created", body, "bench"))
        segment = json.dumps({"name": f"seg-{i}", "description": "", "rule": f"delivered > {i}"})
        changes.append(Change(START_MS, TENANT, "segment", f"seg-{i}", 1, "created", segment, "bench"))
    return changes


class Counting:
    """The warehouse as the registry's ChangeStore, counting the bytes of what its queries return."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self.returned = 0

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        found = self.warehouse.rows(sql, parameters)
        self.returned += sum(len(str(value)) for row in found for value in row)
        return found

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        columns: Sequence[str],
        dedup_token: str | None = None,
    ) -> None:
        self.warehouse.insert(table, rows, columns, dedup_token)


def measure(root: Path, length: int, writes: int) -> tuple[float, int, float, int]:
    """(cold read seconds, bytes, median write seconds, bytes per write) over ``history(length)``."""
    warehouse = Warehouse(f"chdb://{root / f'h{length}'}")
    store = Counting(warehouse)
    try:
        migrate(warehouse)
        rows = [c.row() for c in history(length)]
        for i in range(0, len(rows), INSERT_CHUNK):
            warehouse.insert(TABLE, rows[i : i + INSERT_CHUNK], CHANGE_COLUMNS)
        warehouse.command(f"OPTIMIZE TABLE {TABLE} FINAL")  # one part, as after background merges
        colds = []
        for _ in range(COLD_READS):
            registry = Registry(store, FileDefinitions())
            store.returned = 0
            started = time.process_time()
            registry.snapshot()
            colds.append(time.process_time() - started)
        cold_bytes, store.returned = store.returned, 0
        now_ms = int(datetime(2029, 6, 1, tzinfo=UTC).timestamp() * 1000)
        costs = []
        for n in range(writes):
            body = experiment(OBJECT, length + n + 1)
            started = time.process_time()
            registry.apply(lambda s, b=body: update_experiment(s, TENANT, OBJECT, b, now_ms, "bench"))
            registry.snapshot()  # the API answers with the snapshot after the write
            costs.append(time.process_time() - started)
        return statistics.median(colds), cold_bytes, statistics.median(costs), store.returned // writes
    finally:
        warehouse.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", default="10,1000,10000")
    parser.add_argument("--writes", type=int, default=30)
    args = parser.parse_args()
    lengths = [int(h) for h in args.histories.split(",")]
    results: list[tuple[int, float, int, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="herald-bench-registry-") as tmp:
        for length in lengths:
            print(f"history {length:,} ...", file=sys.stderr, flush=True)
            results.append((length, *measure(Path(tmp), length, args.writes)))
    _, cold0, _, write0, _ = results[0]
    head = ("versions", "cold read", "ratio", "bytes", "write", "ratio", "bytes")
    print("  ".join(f"{h:>{w}}" for h, w in zip(head, (9, 9, 6, 11, 9, 6, 11), strict=True)))
    for length, cold, cold_bytes, write, write_bytes in results:
        print(
            f"{length:>9,}  {cold * 1000:>7.1f}ms  {cold / cold0:>6.2f}  {cold_bytes:>11,}  "
            f"{write * 1000:>7.1f}ms  {write / write0:>6.2f}  {write_bytes:>11,}"
        )


if __name__ == "__main__":
    main()
