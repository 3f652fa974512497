"""FastAPI app served by the worker process (it owns the embedded warehouse)."""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, Field

from experiments.definitions import LoadedExperiments
from experiments.registry import FileDefinitions, Registry
from herald.errors import WarehouseError
from policies.loader import LoadedPolicy
from policies.segments import Segment
from projections.sql_reader import SqlReaders, SqlRefusedError
from projections.warehouse import (
    Warehouse,
    WarehouseAccessError,
    WarehouseLimitError,
    WarehouseTimeoutError,
)
from streams.pipeline import IngestStatus, IngestTotals
from web.analytics_api import analytics_router
from web.auth import ApiAuth, KeyRing, Principal
from web.dashboard import dashboard_router
from web.errors import install_error_logging
from web.experiments_api import experiments_router
from web.limits import DEFAULT_MAX_BODY_BYTES, BodyLimit
from web.security_headers import SecurityHeaders


class SqlRequest(BaseModel):
    query: str = Field(
        ...,
        min_length=1,
        max_length=100_000,
        description="One SELECT (or WITH … SELECT) statement; the engine holds the session read-only.",
    )
    max_rows: int = Field(10_000, ge=1, le=100_000, description="More rows than this is an error.")


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
    def __init__(
        self,
        totals: Callable[[], IngestTotals],
        lag: Callable[[], dict[int, int]],
        status: Callable[[], IngestStatus] | None = None,
    ) -> None:
        self._totals = totals
        self._lag = lag
        self._status = status

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
        if self._status is None:
            return
        st = self._status()
        yield GaugeMetricFamily(
            "herald_ingest_retrying_seconds",
            "How long ingest has retried its current stage (0: not retrying)",
            value=st.retrying_for(time.monotonic()),
        )
        for name, doc, value in (
            (
                "herald_ingest_repairs",
                "Batches completed from the log after a crash left them unmarked",
                st.repairs,
            ),
            (
                "herald_ingest_lost_runs",
                "First runs another writer's run had taken (resumed after it)",
                st.lost_runs,
            ),
            ("herald_ingest_fenced", "Batches abandoned because the group moved the partitions", st.fenced),
            (
                "herald_ingest_refused_rows",
                "Rows the warehouse could not hold, dead-lettered",
                st.refused_rows,
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)


class _MonitorCollector:
    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def collect(self) -> Any:
        s = self._status()
        if "leader" not in s:  # the monitor is switched off in this worker (HERALD_ALERTS_ENABLED=false)
            return
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
        ingest = (s.get("ingest") or {}).get("partitions", {})  # the leader's verdicts (streams/monitor.py)
        for verdict in ("stalled", "lagging"):
            gauge = GaugeMetricFamily(
                f"herald_ingest_{verdict}", f"1 when the lifecycle partition's ingest is {verdict}",
                labels=["partition"],
            )  # fmt: skip
            for partition, health in sorted(ingest.items(), key=lambda item: int(item[0])):
                gauge.add_metric([partition], 1 if health["verdict"] == verdict else 0)
            yield gauge


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
    readers: SqlReaders | None = None,
    ingest: Callable[[], IngestStatus] | None = None,
    stall_s: float = 60.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    rate_per_s: float = 20.0,
    rate_burst: int = 60,
    sql_concurrency_per_key: int = 2,
    rate_clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """The worker's API. ``keys`` (web.auth.load_key_ring(settings.api_keys_file)) guard /api/v1 and
    /sql; with None, /api/v1 answers 503 and /sql stays open (see web/auth.py). ``policy``
    (policies.loader.load_policy(settings.guardrails)) gives the tenants' SLA objectives to
    /api/v1/tenants/{tenant}/sla, which answers 503 without it. ``definitions`` holds the experiment and
    segment definitions (experiments/registry.py; share it with the dispatch agent and the experiments
    job); without one, the API makes its own over the YAML ``experiments`` and ``segments`` (either may
    be None: then only the definitions made through the API). ``readers`` run ``/sql`` (read-only
    engine sessions, projections/sql_reader.py; default: ones with the default limits).
    ``rate_per_s``, ``rate_burst`` and ``sql_concurrency_per_key`` are the per-key limits
    (settings.api_*; web/auth.py), on ``rate_clock``."""
    api = FastAPI(title="Herald", version="0.1.0", description="Notification intelligence and governance.")
    install_error_logging(api)
    auth = ApiAuth(
        keys,
        rate_per_s=rate_per_s,
        rate_burst=rate_burst,
        sql_concurrency_per_key=sql_concurrency_per_key,
        clock=rate_clock,
    )
    api.add_middleware(BodyLimit, max_bytes=max_body_bytes)  # 413 beyond it: web/limits.py
    api.add_middleware(SecurityHeaders)  # added last: outermost, so every answer carries them
    if definitions is None:
        definitions = Registry(warehouse, FileDefinitions(experiments, segments or {}))
    sql_readers = readers or SqlReaders(warehouse)
    _answer_warehouse_errors(api)
    api.include_router(analytics_router(warehouse, auth, clock, policy))
    api.include_router(experiments_router(warehouse, auth, definitions, clock))
    api.include_router(dashboard_router())
    registry = CollectorRegistry()
    registry.register(_IngestCollector(totals, lag, ingest))
    registry.register(auth.refusals)
    if monitor is not None:
        registry.register(_MonitorCollector(monitor))

    @api.get("/health")
    def health() -> dict[str, Any]:
        """``status`` is ``degraded`` with the ``problems`` when work is not progressing: the warehouse
        does not answer a probe within 2 s, or ingest has retried a stage for ``stall_s`` or longer."""
        t = totals()
        problems = [p for p in (warehouse.probe(),) if p]
        if ingest is not None:
            problems += ingest().problems(time.monotonic(), stall_s)
        return {
            "status": "degraded" if problems else "ok",
            "problems": problems,
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
    def sql(request: SqlRequest, principal: Principal | None = sql_guard) -> SqlResult:
        """One read-only query on an engine session held read-only, bounded in time, rows, memory and
        bytes read; a tenant key's session shows only its tenant's rows (row policies)."""
        scope = None if principal is None or principal.is_global else principal.tenant
        try:
            with auth.sql_slot(principal):  # 429 past the key's queries in flight
                answer = sql_readers.query(scope, request.query, request.max_rows)
        except SqlRefusedError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        return SqlResult(columns=answer.columns, rows=[[jsonable(v) for v in row] for row in answer.rows])

    @api.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        return generate_latest(registry).decode()

    return api


def _answer_warehouse_errors(api: FastAPI) -> None:
    """The engine's refusals as HTTP answers with the engine's reason: a query over its time limit is a
    504 (the engine cancelled it), over a bound a 422, a statement the session may not run a 403, any
    other refusal a 400, an unreachable warehouse a 503."""

    def answer(status: int, prefix: str) -> Any:
        def handler(_request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": f"{prefix}{_engine_reason(exc)}"}, status_code=status)

        return handler

    api.add_exception_handler(WarehouseTimeoutError, answer(504, "query cancelled at its time limit: "))
    api.add_exception_handler(WarehouseLimitError, answer(422, "query stopped at a bound: "))
    api.add_exception_handler(WarehouseAccessError, answer(403, "refused by the warehouse: "))
    api.add_exception_handler(WarehouseError, answer(400, "warehouse error: "))


def _engine_reason(exc: Exception) -> str:
    """The engine's message of a warehouse error without the driver's wrapping and stack trace."""
    text = str(exc.__cause__ or exc)
    start = text.rfind("DB::Exception:")
    if start >= 0:
        text = text[start + len("DB::Exception:") :]
    return " ".join(text.split())[:500]
