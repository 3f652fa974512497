"""Read queries behind the delivery analytics API; each returns plain, JSON-ready dicts.

Every value reaches the engine as a server-side parameter (``{name:Type}``); the only text put into SQL
is chosen from constants here (column and bucket function names), never from a request.
``delivery_minute`` is a SummingMergeTree whose rows of one key are folded lazily, so it is always read
with ``sum(...) ... GROUP BY``. Percentiles and error classes are not in the rollup and come from
``events``. A tenant of None means every tenant (global callers only; the API checks that).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from projections.warehouse import Warehouse

Bucket = Literal["minute", "hour"]
Channel = Literal["EMAIL", "SMS", "PUSH"]
DEFAULT_RANGE = timedelta(hours=24)
MAX_RANGE: dict[str, timedelta] = {"minute": timedelta(days=7), "hour": timedelta(days=366)}
_BUCKET_FN = {"minute": "toStartOfMinute", "hour": "toStartOfHour"}
_COUNTS = ("requested", "dispatched", "sent", "delivered", "failed", "bounced", "opened", "clicked")


class FilterError(ValueError):
    """Filters that are valid one by one but not together; ``field`` is the query parameter to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class FilterParams(BaseModel):
    """Filters as a caller gives them: every field optional, validated, times not yet defaulted."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    channel: Channel | None = None
    provider: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    start: datetime | None = Field(None, alias="from", description="inclusive; default: to - 24 h")
    end: datetime | None = Field(None, alias="to", description="exclusive; default: now")
    bucket: Bucket = "hour"

    @field_validator("channel", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("start")
        if end is not None and start is not None and end <= start:
            raise ValueError("must be after from")
        return end

    def resolved(self, now: datetime) -> Filters:
        """Concrete filters: missing times defaulted (the last 24 h up to ``now``), floored to the minute
        so the per-minute rollup and the raw events cover exactly the same span."""
        end = _floor_minute(self.end or now + timedelta(minutes=1))
        start = _floor_minute(self.start or end - DEFAULT_RANGE)
        if end <= start:
            raise FilterError("to", "must be at least one minute after from")
        if end - start > MAX_RANGE[self.bucket]:
            limit = MAX_RANGE[self.bucket].days
            raise FilterError("from", f"range is longer than {limit} days for bucket={self.bucket}")
        return Filters(channel=self.channel, provider=self.provider, start=start, end=end, bucket=self.bucket)


class Filters(BaseModel):
    """Resolved filters: a concrete [start, end) time range in whole minutes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: Channel | None
    provider: str | None
    start: datetime
    end: datetime
    bucket: Bucket

    def echo(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "bucket": self.bucket,
            "channel": self.channel,
            "provider": self.provider,
        }


def delivery_series(warehouse: Warehouse, tenant: str | None, filters: Filters) -> dict[str, Any]:
    """Per bucket: requested, dispatched, sent, delivered, failed, bounced and delivery_rate.

    delivery_rate = delivered / dispatched: a send-time failure goes DISPATCHED -> FAILED without SENT,
    so ``sent`` as denominator would hide provider outages.
    """
    names = ("requested", "dispatched", "sent", "delivered", "failed", "bounced")
    series = _rollup_series(warehouse, tenant, filters, names)
    for point in [*series, totals := _totals(series, names)]:
        point["delivery_rate"] = rate(point["delivered"], point["dispatched"])
    return _answer(tenant, filters, series=series, totals=totals)


def engagement(warehouse: Warehouse, tenant: str | None, filters: Filters) -> dict[str, Any]:
    """Per bucket: delivered, opened, clicked, open_rate = opened/delivered, click_rate = clicked/delivered.

    Opens and clicks are counted in the bucket they happen in, not the one of their delivery.
    """
    names = ("delivered", "opened", "clicked")
    series = _rollup_series(warehouse, tenant, filters, names)
    for point in [*series, totals := _totals(series, names)]:
        point["open_rate"] = rate(point["opened"], point["delivered"])
        point["click_rate"] = rate(point["clicked"], point["delivered"])
    return _answer(tenant, filters, series=series, totals=totals)


def latency(warehouse: Warehouse, tenant: str | None, filters: Filters) -> dict[str, Any]:
    """Send (requested->sent, on SENT) and delivery (sent->delivered, on DELIVERED) latency in ms:
    averages per bucket and overall from the rollup's sums, p50/p95/p99 from the raw events."""
    where, params = _where(tenant, filters, "minute")
    rows = warehouse.rows(
        f"SELECT {_BUCKET_FN[filters.bucket]}(minute) AS bucket, "
        "sum(send_latency_ms_sum), sum(send_latency_count), "
        "sum(delivery_latency_ms_sum), sum(delivery_latency_count) "
        f"FROM delivery_minute WHERE {where} GROUP BY bucket ORDER BY bucket",
        params,
    )
    series = [
        {"bucket": _iso(b), "send_avg_ms": rate(ss, sc), "delivery_avg_ms": rate(ds, dc)}
        for b, ss, sc, ds, dc in rows
    ]
    ev_where, ev_params = _where(tenant, filters, "occurred_at")
    stages: dict[str, dict[str, Any]] = {}
    for stage, event_type, at in (("send", "SENT", 1), ("delivery", "DELIVERED", 3)):
        total_ms = sum(int(r[at]) for r in rows)
        count = sum(int(r[at + 1]) for r in rows)
        p = warehouse.rows(
            "SELECT quantiles(0.5, 0.95, 0.99)(latency_ms) FROM events "
            f"WHERE {ev_where} AND event_type = {{event_type:String}} AND latency_ms IS NOT NULL",
            {**ev_params, "event_type": event_type},
        )[0][0]
        stages[stage] = {
            "count": count,
            "avg_ms": rate(total_ms, count),
            "p50_ms": _number(p[0]),
            "p95_ms": _number(p[1]),
            "p99_ms": _number(p[2]),
        }
    return _answer(tenant, filters, series=series, totals=stages)


def provider_health(warehouse: Warehouse, tenant: str | None, filters: Filters) -> dict[str, Any]:
    """Per provider: dispatched, sent, delivered, failed, bounced, errors (failed + bounced),
    error_rate = errors / dispatched, avg delivery latency, and the top 5 error classes."""
    where, params = _where(tenant, filters, "minute")
    rows = warehouse.rows(
        "SELECT provider, sum(dispatched), sum(sent), sum(delivered), sum(failed), sum(bounced), "
        "sum(delivery_latency_ms_sum), sum(delivery_latency_count) "
        f"FROM delivery_minute WHERE {where} AND provider != '' GROUP BY provider ORDER BY provider",
        params,
    )
    ev_where, ev_params = _where(tenant, filters, "occurred_at")
    classes: dict[str, list[dict[str, Any]]] = {}
    for provider, error_class, failures in warehouse.rows(
        "SELECT provider, error_class, count() AS failures FROM events "
        f"WHERE {ev_where} AND event_type IN ('FAILED', 'BOUNCED') AND provider != '' "
        "GROUP BY provider, error_class ORDER BY provider, failures DESC, error_class LIMIT 5 BY provider",
        ev_params,
    ):
        classes.setdefault(str(provider), []).append({"error_class": error_class, "count": int(failures)})
    providers = []
    for provider, dispatched, sent, delivered, failed, bounced, lat_sum, lat_count in rows:
        errors = int(failed) + int(bounced)
        providers.append(
            {
                "provider": provider,
                "dispatched": int(dispatched),
                "sent": int(sent),
                "delivered": int(delivered),
                "failed": int(failed),
                "bounced": int(bounced),
                "errors": errors,
                "error_rate": rate(errors, dispatched),
                "delivery_avg_ms": rate(lat_sum, lat_count),
                "top_error_classes": classes.get(str(provider), []),
            }
        )
    return _answer(tenant, filters, providers=providers)


def tenants(warehouse: Warehouse) -> list[str]:
    """Every tenant with rows in the rollup."""
    return [str(t) for (t,) in warehouse.rows("SELECT DISTINCT tenant_id FROM delivery_minute ORDER BY 1")]


def rate(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when there is nothing to divide by (a neutral empty answer).

    >>> rate(3, 4), rate(0, 0)
    (0.75, None)
    """
    return float(numerator) / float(denominator) if denominator else None


def _rollup_series(
    warehouse: Warehouse, tenant: str | None, filters: Filters, names: tuple[str, ...]
) -> list[dict[str, Any]]:
    assert set(names) <= set(_COUNTS)  # column names are constants, never request text
    where, params = _where(tenant, filters, "minute")
    sums = ", ".join(f"sum({n})" for n in names)
    rows = warehouse.rows(
        f"SELECT {_BUCKET_FN[filters.bucket]}(minute) AS bucket, {sums} FROM delivery_minute "
        f"WHERE {where} GROUP BY bucket ORDER BY bucket",
        params,
    )
    return [{"bucket": _iso(r[0]), **{n: int(v) for n, v in zip(names, r[1:], strict=True)}} for r in rows]


def _totals(series: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, Any]:
    return {n: sum(p[n] for p in series) for n in names}


def _where(tenant: str | None, filters: Filters, time_column: str) -> tuple[str, dict[str, Any]]:
    """The WHERE clause over ``time_column`` (``minute`` of the rollup or ``occurred_at`` of events)."""
    kind = "DateTime('UTC')" if time_column == "minute" else "DateTime64(3, 'UTC')"
    clauses = [f"{time_column} >= {{start:{kind}}}", f"{time_column} < {{end:{kind}}}"]
    params: dict[str, Any] = {"start": filters.start, "end": filters.end}
    if tenant is not None:
        clauses.append("tenant_id = {tenant:String}")
        params["tenant"] = tenant
    if filters.channel is not None:
        clauses.append("channel = {channel:String}")
        params["channel"] = filters.channel
    if filters.provider is not None:
        clauses.append("provider = {provider:String}")
        params["provider"] = filters.provider
    return " AND ".join(clauses), params


def _answer(tenant: str | None, filters: Filters, **body: Any) -> dict[str, Any]:
    return {"tenant": tenant, **filters.echo(), **body}


def _floor_minute(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def _iso(value: datetime) -> str:
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)).isoformat()


def _number(value: Any) -> float | None:
    """A quantile as JSON: NaN (no values in range) becomes None."""
    return None if value is None or math.isnan(float(value)) else float(value)
