"""Isolation of work: what 20 concurrent slow analyst queries cost ingest and the API.

``python -m bench.isolation [EVENTS] [SLOW]``: one embedded warehouse in a temporary directory. It
measures, each beside its baseline from the same run:

- ingest_eps: the ingest pipeline (decision + warehouse write, in process) applying EVENTS simulated
  events, alone and while SLOW (default 20) reader sessions each run a query that only the engine's
  time limit ends (one per tenant key, through projections/sql_reader.py as /sql runs them);
- api_p50_s / api_p95_s: a tenant's dashboard call (``/api/v1/tenants/{t}/delivery``) through the real
  app, alone and under the same load;
- slow_queries_running: how many of the slow queries the engine was running during the loaded
  measurement (to show the load was there).

Progress goes to stderr, the table to stdout. On 2 shared cores the slow queries compete for CPU: the
figure that matters is that ingest and the API keep progressing, and by how much they slow.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient

from herald.errors import WarehouseError
from herald.logging import configure_logging
from herald.settings import load_settings
from projections.access import ReaderLimits
from projections.migrate import migrate
from projections.sql_reader import SqlReaders
from projections.warehouse import Warehouse
from projections.writer import IngestWriter
from schemas.codec import lifecycle_codec
from simulator.model import DEFAULT_MODEL, generate
from streams.ingest import SourceMessage
from streams.pipeline import IngestPipeline, IngestTotals
from streams.replay import CountingDeadLetters
from web.app import create_api
from web.auth import hash_key, load_key_ring

KEY = "hk_bench-isolation-0123456789"
SLOW = "SELECT count() FROM numbers(10000000000000) WHERE NOT ignore(sipHash64(number))"
NOW = datetime.now(UTC).replace(microsecond=0)


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def batches(n: int, offset: int, size: int = 5000) -> list[list[SourceMessage]]:
    codec = lifecycle_codec()
    events = islice(generate(DEFAULT_MODEL, NOW - timedelta(hours=1), 500, float("inf"), seed=offset), n)
    messages = [
        SourceMessage("bench", i % 4, offset + i // 4, e["notification_id"].encode(), codec.encode(e))
        for i, e in enumerate(events)
    ]
    return [messages[i : i + size] for i in range(0, len(messages), size)]


def ingest_rate(pipeline: IngestPipeline, work: list[list[SourceMessage]]) -> float:
    n = sum(len(b) for b in work)
    t0 = time.perf_counter()
    for batch in work:
        pipeline.apply(batch)
    return n / (time.perf_counter() - t0)


def api_latencies(client: TestClient, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        response = client.get("/api/v1/tenants/acme-home/delivery")
        out.append(time.perf_counter() - t0)
        assert response.status_code == 200, response.text
    return out


def run(events: int = 60_000, slow: int = 20) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="herald-isolation-") as tmp:
        root = Path(tmp)
        warehouse = Warehouse(f"chdb://{root / 'warehouse'}")
        try:
            migrate(warehouse)
            pipeline = IngestPipeline(
                load_settings(data_dir=root),
                IngestWriter(warehouse, "bench"),
                lifecycle_codec(),
                CountingDeadLetters(),  # type: ignore[arg-type]  # same send/close surface
            )
            keys = root / "keys.yaml"
            entry = {"name": "bench", "tenant": "acme-home", "role": "viewer", "key_sha256": hash_key(KEY)}
            keys.write_text(yaml.safe_dump({"keys": [entry]}))
            app = create_api(warehouse, IngestTotals, "bench", keys=load_key_ring(keys), clock=lambda: NOW)
            client = TestClient(app, headers={"X-Api-Key": KEY})
            say(f"warm-up and baseline: {events:,} events, then 40 API calls")
            pipeline.apply(batches(5000, 0)[0])
            base_ingest = ingest_rate(pipeline, batches(events, 1_000_000))
            base_api = api_latencies(client, 40)

            readers = SqlReaders(warehouse, ReaderLimits(max_execution_time_s=3600), per_scope=1, max_idle=64)
            done: list[str] = []

            def slow_query(i: int) -> None:
                try:
                    readers.query(f"tenant-{i}", SLOW, 10)
                except WarehouseError as exc:
                    done.append(type(exc).__name__)

            threads = [threading.Thread(target=slow_query, args=(i,), daemon=True) for i in range(slow)]
            for t in threads:
                t.start()
            running_sql = (
                "SELECT count() FROM system.processes WHERE query LIKE '%numbers(10000000000000)%' "
                "AND query NOT LIKE '%system.processes%'"
            )
            deadline = time.monotonic() + 120
            while warehouse.scalar(running_sql) < slow and time.monotonic() < deadline:
                time.sleep(0.2)
            say(f"{warehouse.scalar(running_sql)} slow queries running; loaded measurement")
            loaded_ingest = ingest_rate(pipeline, batches(events, 2_000_000))
            loaded_api = api_latencies(client, 40)
            running = int(warehouse.scalar(running_sql))
            warehouse.command(
                "KILL QUERY WHERE query LIKE '%numbers(10000000000000)%' AND query NOT LIKE '%KILL%' SYNC"
            )
            for t in threads:
                t.join(60)
        finally:
            warehouse.close()

    def q(values: list[float], p: float) -> float:
        return statistics.quantiles(values, n=100)[int(p) - 1]

    return {
        "events": events,
        "slow_queries": slow,
        "slow_queries_running": running,
        "ingest_eps_alone": round(base_ingest),
        "ingest_eps_loaded": round(loaded_ingest),
        "ingest_ratio": round(loaded_ingest / base_ingest, 3),
        "api_p50_s_alone": round(q(base_api, 50), 4),
        "api_p50_s_loaded": round(q(loaded_api, 50), 4),
        "api_p95_s_alone": round(q(base_api, 95), 4),
        "api_p95_s_loaded": round(q(loaded_api, 95), 4),
        "api_p50_ratio": round(q(loaded_api, 50) / q(base_api, 50), 2),
        "slow_query_outcomes": sorted(set(done)),
    }


def main() -> None:
    configure_logging("console", "warning")
    args = [int(a) for a in sys.argv[1:3]]
    result = run(*args)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
