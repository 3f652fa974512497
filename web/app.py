"""FastAPI app served by the worker process (it owns the embedded warehouse)."""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import PlainTextResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, Field

from experiments.definitions import LoadedExperiments
from experiments.registry import FileDefinitions, Registry
from herald.errors import WarehouseError
from policies.loader import LoadedPolicy
from policies.segments import Segment
from projections.warehouse import Warehouse
from streams.pipeline import IngestTotals
from web.analytics_api import analytics_router
from web.auth import ApiAuth, KeyRing, Principal
from web.dashboard import dashboard_router
from web.experiments_api import experiments_router
from web.security_headers import SecurityHeaders
from web.sql import read_only_problem


class SqlRequest(BaseModel):
    query: str = Field(..., description="One read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN).")
    max_rows: int = Field(100_000, ge=1, le=1_000_000)


class SqlResult(BaseModel):
    columns: list[str]
    rows: list[list[Any]]


def jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


class _IngestCollector:
    def __init__(self, totals: Callable[[], IngestTotals], lag: Callable[[], dict[int, int]]) -> None:
        self._totals = totals
        self._lag = lag

    def collect(self) -> Any:
        t = self._totals()
        events = CounterMetricFamily(
            "herald_ingest_events", "Lifecycle messages by outcome", labels=["outcome"]
        )
        for outcome, value in (
            ("written", t.written),
            ("dead_letter", t.dead_letters),
            ("duplicate", t.duplicates),
            ("skipped_applied", t.skipped),
        ):
            events.add_metric([outcome], value)
        yield events
        yield CounterMetricFamily("herald_ingest_batches", "Batches applied", value=t.batches)
        yield GaugeMetricFamily(
            "herald_ingest_last_batch_seconds", "Time to apply the last batch", value=t.last_batch_s
        )
        offsets = GaugeMetricFamily(
            "herald_ingest_applied_offset", "Last applied offset", labels=["partition"]
        )
        for tp, off in sorted(t.by_partition.items()):
            offsets.add_metric([tp], off)
        yield offsets
        lag = GaugeMetricFamily(
            "herald_ingest_lag_messages", "Messages behind the log end", labels=["partition"]
        )
        for partition, behind in sorted(self._lag().items()):
            lag.add_metric([str(partition)], behind)
        yield lag


class _MonitorCollector:
    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def collect(self) -> Any:
        s = self._status()
        yield GaugeMetricFamily("herald_monitor_leader", "1 when this worker leads the alert monitor",
                                value=1 if s["leader"] else 0)  # fmt: skip
        yield GaugeMetricFamily("herald_monitor_open_alerts", "Alerts open now", value=s["open_alerts"])
        yield GaugeMetricFamily("herald_monitor_detectors", "Series x metric detectors", value=s["detectors"])
        yield CounterMetricFamily(
            "herald_monitor_alerts_published", "Alert changes put on the alerts topic", value=s["published"]
        )
        if s.get("watermark_ms") is not None:
            yield GaugeMetricFamily(
                "herald_monitor_watermark_seconds", "Event-time watermark", value=s["watermark_ms"] / 1000
            )


def create_api(
    warehouse: Warehouse,
    totals: Callable[[], IngestTotals],
    worker: str,
    lag: Callable[[], dict[int, int]] = dict,
    assigned: Callable[[], list[int]] = list,
    *,
    keys: KeyRing | None = None,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    monitor: Callable[[], dict[str, Any]] | None = None,
    policy: LoadedPolicy | None = None,
    dispatch: Callable[[], dict[str, Any]] | None = None,
    experiments: LoadedExperiments | None = None,
    segments: Mapping[str, Segment] | None = None,
    definitions: Registry | None = None,
) -> FastAPI:
    """The worker's API. ``keys`` (web.auth.load_key_ring(settings.api_keys_file)) guard /api/v1 and
    /sql; with None, /api/v1 answers 503 and /sql stays open (see web/auth.py). ``policy``
    (policies.loader.load_policy(settings.guardrails)) gives the tenants' SLA objectives to
    /api/v1/tenants/{tenant}/sla, which answers 503 without it. ``definitions`` holds the experiment and
    segment definitions (experiments/registry.py; share it with the dispatch agent and the experiments
    job); without one, the API makes its own over the YAML ``experiments`` and ``segments`` (either may
    be None: then only the definitions made through the API)."""
    api = FastAPI(title="Herald", version="0.1.0", description="Notification intelligence and governance.")
    api.add_middleware(SecurityHeaders)
    auth = ApiAuth(keys)
    if definitions is None:
        definitions = Registry(warehouse, FileDefinitions(experiments, segments or {}))
    api.include_router(analytics_router(warehouse, auth, clock, policy))
    api.include_router(experiments_router(warehouse, auth, definitions, clock))
    api.include_router(dashboard_router())
    registry = CollectorRegistry()
    registry.register(_IngestCollector(totals, lag))
    if monitor is not None:
        registry.register(_MonitorCollector(monitor))

    @api.get("/health")
    def health() -> dict[str, Any]:
        t = totals()
        return {
            "status": "ok",
            "partitions": assigned(),
            "lag": lag(),
            "worker": worker,
            "written": t.written,
            "dead_letters": t.dead_letters,
            "duplicates": t.duplicates,
            "batches": t.batches,
            "applied_offsets": t.by_partition,
            "monitor": monitor() if monitor is not None else None,
            "dispatch": dispatch() if dispatch is not None else None,
        }

    sql_guard = Depends(auth.sql_principal)  # a default, not an annotation: those are strings here

    @api.post("/sql", response_model=SqlResult)
    def sql(request: SqlRequest, _: Principal | None = sql_guard) -> SqlResult:
        problem = read_only_problem(request.query)
        if problem:
            raise HTTPException(status_code=422, detail=problem)
        try:
            columns, rows = warehouse.records(
                request.query, settings={"max_result_rows": request.max_rows, "result_overflow_mode": "throw"}
            )
        except WarehouseError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        return SqlResult(columns=columns, rows=[[jsonable(v) for v in row] for row in rows])

    @api.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        return generate_latest(registry).decode()

    return api
