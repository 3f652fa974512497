"""Read queries behind the delivery analytics API; each returns plain, JSON-ready dicts.

Every value reaches the engine as a server-side parameter (``{name:Type}``); the only text put into SQL
is chosen from constants here (column and bucket function names), never from a request.
``delivery_minute`` is a SummingMergeTree whose rows of one key are folded lazily, so it is always read
with ``sum(...) ... GROUP BY`` (its latency sketches with ``quantilesTDigestMerge``). Error classes are
not in the rollup and come from ``events``. A tenant of None means every tenant (global callers only;
the API checks that).
Alerts are read from the ``alerts_current`` view (one row per alert, duplicates of a monitor restart
folded), never from ``alerts`` alone: the view has no ``detail``, so provider switches and budget alerts
join it with their detail read from ``alerts`` FINAL grouped per alert. SLA counts come from ``events``
per notification (see :func:`sla_counts` and docs/warehouse.md, "SLA measurement").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from herald.dates import OUT_OF_RANGE, in_range
from policies.models import BudgetSpec, GuardrailsPolicy, SlaObjective
from policies.sla import DEFAULT_RULES, BurnRateRule, SlaCounts, evaluate_sla
from projections.warehouse import Warehouse

Bucket = Literal["minute", "hour"]
Channel = Literal["EMAIL", "SMS", "PUSH"]
AlertStatus = Literal["open", "resolved", "all"]
DEFAULT_RANGE = timedelta(hours=24)
MAX_RANGE: dict[str, timedelta] = {"minute": timedelta(days=7), "hour": timedelta(days=366)}
_BUCKET_FN = {"minute": "toStartOfMinute", "hour": "toStartOfHour"}
_COUNTS = ("requested", "dispatched", "sent", "delivered", "failed", "bounced", "opened", "clicked")
_LATENCY_DIGESTS = ("send_latency_digest", "delivery_latency_digest", "response_latency_digest")
_DIGEST_MERGE = "quantilesTDigestMerge(0.5, 0.95, 0.99)"  # the levels the rollups' sketches were built with
_ALERT_STATUS_WHERE = {"open": "resolved_at IS NULL", "resolved": "resolved_at IS NOT NULL"}
_ALERT_TIMES = ("window_start", "window_end", "first_seen", "resolved_at")
_ALERT_NUMBERS = ("observed", "expected", "score")
SLA_LOOKBACK = timedelta(days=1)
"""How far before an SLA range its notifications' events are read, so a receipt that arrives inside the
range is matched to its send before it (and the send, outside the range, keeps it out)."""
SLA_SERIES_HOURS = 24
# One row per notification of a tenant's channel: when it was sent (its first SENT, else its first
# FAILED), by which provider, and whether it was delivered within the objective. GROUP BY the minute or
# the provider of the send around it (sla_counts, sla_counts_by_provider).
_SLA_NOTIFICATIONS_SQL = """
    SELECT notification_id,
           countIf(event_type = 'SENT') > 0 AS was_sent,
           if(was_sent, minIf(occurred_at, event_type = 'SENT'),
              minIf(occurred_at, event_type = 'FAILED')) AS send_time,
           if(was_sent, argMinIf(provider, occurred_at, event_type = 'SENT'),
              argMaxIf(provider, occurred_at, event_type = 'FAILED')) AS send_provider,
           was_sent AND countIf(event_type = 'DELIVERED' AND latency_ms <= {latency_ms:UInt64}) > 0 AS on_time
    FROM events
    WHERE tenant_id = {tenant:String} AND channel = {channel:String}
      AND event_type IN ('SENT', 'FAILED', 'DELIVERED')
      AND occurred_at >= {lookback:DateTime64(3, 'UTC')}
    GROUP BY notification_id
    HAVING was_sent OR countIf(event_type = 'FAILED') > 0
"""
_SLA_GROUPED_SQL = (
    "SELECT {key} AS k, count() AS total, countIf(on_time) AS good FROM ("
    + _SLA_NOTIFICATIONS_SQL
    + ") WHERE send_time >= {start:DateTime64(3, 'UTC')} AND send_time < {end:DateTime64(3, 'UTC')} "
    "GROUP BY k ORDER BY k"
)
_ALERT_COLUMNS = (
    "alert_id",
    "tenant_id",
    "channel",
    "provider",
    "metric",
    "kind",
    "severity",
    *_ALERT_NUMBERS,
    *_ALERT_TIMES,
    "dashboard_url",
    "runbook_url",
)


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
        if not in_range(value):  # checked first: converting year 9999 or 0001 to UTC may overflow
            raise PydanticCustomError("date_range", OUT_OF_RANGE)
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
    """Latency in ms of three stages: send (requested->sent, on SENT), delivery (sent->delivered, on
    DELIVERED) and response (delivered->opened/replied, on OPENED and REPLIED).

    ``series``: per bucket, the send and delivery averages (exact, from the rollup's sums) and each
    stage's p95. ``totals``: per stage over the range, ``count``, ``avg_ms`` (send and delivery only:
    the rollup keeps no response sum; the response count is OPENED + REPLIED events) and p50/p95/p99.
    Percentiles merge the rollups' t-digest sketches, so they are approximate (within a few percent) and
    never scan the raw events. Minute buckets read delivery_minute; hour buckets read
    delivery_hour for the whole hours of the range and delivery_minute for the partial hours at its ends,
    so both cover exactly [from, to). Rows written before migration 0005 carry no sketch: a range that
    reaches back before it gets the percentiles of the events written since.
    """
    source, params = _latency_source(tenant, filters)
    sums = (
        "sum(send_latency_ms_sum), sum(send_latency_count), sum(delivery_latency_ms_sum), "
        "sum(delivery_latency_count), sum(opened) + sum(replied), "
        + ", ".join(f"{_DIGEST_MERGE}({d})" for d in _LATENCY_DIGESTS)
    )
    rows = warehouse.rows(
        f"SELECT {_BUCKET_FN[filters.bucket]}(t) AS bucket, {sums} FROM {source} "
        "GROUP BY bucket ORDER BY bucket",
        params,
    )
    series = [
        {
            "bucket": _iso(b),
            "send_avg_ms": rate(ss, sc),
            "delivery_avg_ms": rate(ds, dc),
            "send_p95_ms": _number(send[1]),
            "delivery_p95_ms": _number(delivery[1]),
            "response_p95_ms": _number(response[1]),
        }
        for b, ss, sc, ds, dc, _, send, delivery, response in rows
    ]
    ((ss, sc, ds, dc, responses, send, delivery, response),) = warehouse.rows(
        f"SELECT {sums} FROM {source}", params
    )
    stages: dict[str, dict[str, Any]] = {
        "send": {"count": int(sc), "avg_ms": rate(ss, sc), **_percentiles(send)},
        "delivery": {"count": int(dc), "avg_ms": rate(ds, dc), **_percentiles(delivery)},
        "response": {"count": int(responses), **_percentiles(response)},
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


def alerts(
    warehouse: Warehouse,
    tenant: str | None,
    filters: Filters,
    status: AlertStatus = "all",
    limit: int = 100,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Alerts of the range, newest (``first_seen``) first, at most ``limit``.

    An alert is in the range when [first_seen, resolved_at] overlaps [from, to); an open alert lasts
    until ``now`` (default: the wall clock). ``status`` is ``open`` (no RESOLVED row yet), ``resolved``
    or ``all``; each alert's ``status`` is ``open`` or ``resolved`` the same way, and ``resolved_at``
    is None while it is open. ``filters.bucket`` plays no part.
    """
    clauses = [
        "first_seen < {end:DateTime64(3, 'UTC')}",
        "coalesce(resolved_at, {now:DateTime64(3, 'UTC')}) >= {start:DateTime64(3, 'UTC')}",
    ]
    if status in _ALERT_STATUS_WHERE:
        clauses.append(_ALERT_STATUS_WHERE[status])
    params: dict[str, Any] = {
        "start": filters.start,
        "end": filters.end,
        "now": now or datetime.now(UTC),
        "limit": limit,
    }
    scope = (("tenant_id", tenant), ("channel", filters.channel), ("provider", filters.provider))
    for column, value in scope:  # column names are the constants above, values are parameters
        if value is not None:
            clauses.append(f"{column} = {{{column}:String}}")
            params[column] = value
    rows = warehouse.rows(
        f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts_current WHERE {' AND '.join(clauses)} "
        "ORDER BY first_seen DESC, alert_id LIMIT {limit:UInt32}",
        params,
    )
    found = []
    for row in rows:
        alert = dict(zip(_ALERT_COLUMNS, row, strict=True))
        for name in _ALERT_NUMBERS:
            alert[name] = _number(alert[name])
        for name in _ALERT_TIMES:
            alert[name] = None if alert[name] is None else _iso(alert[name])
        alert["status"] = "open" if alert["resolved_at"] is None else "resolved"
        found.append({"alert_id": alert.pop("alert_id"), "status": alert.pop("status"), **alert})
    window = {k: v for k, v in filters.echo().items() if k != "bucket"}
    return {"tenant": tenant, **window, "status": status, "limit": limit, "alerts": found}


def sla_counts(
    warehouse: Warehouse, tenant: str, channel: str, latency_ms: int, start: datetime, end: datetime
) -> dict[int, SlaCounts]:
    """Good and total messages of a tenant's channel per epoch minute (epoch seconds // 60, the key
    policies.sla reads) of the send, for sends in [start, end).

    Counted per notification, not per event: ``total`` is every notification that was sent (SENT) or
    failed without ever being sent (FAILED and no SENT: a send-time failure, including one whose
    failover retry failed too), in the minute of its first SENT (else of its first FAILED); ``good``
    is a sent notification with a DELIVERED whose ``latency_ms`` (sent -> delivered) is at most
    ``latency_ms``. So a failover that delivered counts once, and a receipt-time FAILED (after SENT,
    without ``sent_at``) is not counted a second time. ``channel`` may be spelled ``sms`` or ``SMS``.
    """
    rows = _sla_grouped(
        warehouse, "intDiv(toUnixTimestamp(send_time), 60)", tenant, channel, latency_ms, start, end
    )
    return {int(minute): SlaCounts(good=int(good), total=int(total)) for minute, total, good in rows}


def _sla_grouped(
    warehouse: Warehouse, key: str, tenant: str, channel: str, latency_ms: int, start: datetime, end: datetime
) -> list[tuple[Any, ...]]:
    """(key, total, good) rows of the SLA notifications sent in [start, end); ``key`` is one of the
    two constant expressions above, never request text."""
    params = {
        "tenant": tenant,
        "channel": channel.upper(),
        "latency_ms": latency_ms,
        "lookback": start - SLA_LOOKBACK,
        "start": start,
        "end": end,
    }
    return warehouse.rows(_SLA_GROUPED_SQL.replace("{key}", key), params)


def sla_judged_until(now: datetime, objective: SlaObjective) -> datetime:
    """Exclusive end of the sends an SLA status judges: ``now`` less the objective's latency, floored to
    the minute. A newer send could still be delivered in time, so counting it now would count it bad.

    >>> o = SlaObjective(channel="sms", target=0.99, latency_ms=30_000)
    >>> sla_judged_until(datetime(2026, 3, 10, 12, 0, 10, tzinfo=UTC), o).isoformat()
    '2026-03-10T11:59:00+00:00'
    """
    return _floor_minute(now - timedelta(milliseconds=objective.latency_ms))


def sla_range(
    objective: SlaObjective, until: datetime, rules: tuple[BurnRateRule, ...] = DEFAULT_RULES
) -> tuple[datetime, datetime]:
    """The sends an SLA status reads: the objective's window, or the longest burn-rate window if that
    is longer, ending at ``until``."""
    minutes = max(objective.window_days * 1440, *(r.long_minutes for r in rules))
    return until - timedelta(minutes=minutes), until


def sla_report(
    tenant: str,
    objective: SlaObjective,
    counts: dict[int, SlaCounts],
    until: datetime,
    rules: tuple[BurnRateRule, ...] = DEFAULT_RULES,
) -> dict[str, Any]:
    """JSON-ready status of one objective over per-minute counts, judged through the minute before
    ``until`` (a whole minute, exclusive): policies.sla.evaluate_sla's ratio, error budget and burn
    rates, the window's good and total, and the good ratio of each of the last SLA_SERIES_HOURS hours
    (the last one is the hour of the newest judged minute; ratio None where nothing was sent). Pure.
    """
    current = int(until.timestamp()) // 60 - 1  # the newest judged minute
    status = evaluate_sla(tenant, objective, counts, current * 60.0, rules)
    oldest = current - objective.window_days * 1440
    window = [c for m, c in counts.items() if oldest < m <= current]
    last_hour = current - current % 60
    hours = [last_hour - 60 * i for i in range(SLA_SERIES_HOURS - 1, -1, -1)]
    per_hour = {h: SlaCounts() for h in hours}
    for minute, c in counts.items():
        hour = minute - minute % 60
        if hour in per_hour and minute <= current:
            per_hour[hour] += c
    return {
        "channel": objective.channel,
        "target": objective.target,
        "latency_ms": objective.latency_ms,
        "window_days": objective.window_days,
        "from": _iso(datetime.fromtimestamp((oldest + 1) * 60, UTC)),
        "to": _iso(datetime.fromtimestamp((current + 1) * 60, UTC)),
        "good": sum(c.good for c in window),
        "total": status.total,
        "ratio": _number(status.good_ratio),
        "error_budget_remaining": _number(status.error_budget_remaining),
        "burn_rates": [
            {
                "long_minutes": b.rule.long_minutes,
                "short_minutes": b.rule.short_minutes,
                "factor": b.rule.factor,
                "severity": b.rule.severity,
                "long_burn": _number(b.long_burn),
                "short_burn": _number(b.short_burn),
                "firing": b.firing,
            }
            for b in status.burn_rates
        ],
        "breach": status.breach,
        "severity": status.severity,
        "series": [
            {
                "hour": _iso(datetime.fromtimestamp(h * 60, UTC)),
                "good": per_hour[h].good,
                "total": per_hour[h].total,
                "ratio": rate(per_hour[h].good, per_hour[h].total),
            }
            for h in hours
        ],
    }


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


def _latency_source(tenant: str | None, filters: Filters) -> tuple[str, dict[str, Any]]:
    """A subquery of the rollup rows covering exactly [start, end), with their time as ``t``.

    Hour buckets take the whole hours inside the range from delivery_hour (60 times fewer sketches to
    merge) and the minutes of the partial hours at either end from delivery_minute.
    """
    columns = (
        "send_latency_ms_sum, send_latency_count, delivery_latency_ms_sum, delivery_latency_count, "
        "opened, replied, " + ", ".join(_LATENCY_DIGESTS)
    )
    scope, params = _scope(tenant, filters)
    params |= {"start": filters.start, "end": filters.end}
    floor_end = filters.end.replace(minute=0)  # start and end are whole minutes already
    ceil_start = filters.start + (-filters.start.minute % 60) * timedelta(minutes=1)
    if filters.bucket == "minute" or ceil_start >= floor_end:
        where = " AND ".join(["minute >= {start:DateTime('UTC')}", "minute < {end:DateTime('UTC')}", *scope])
        return f"(SELECT minute AS t, {columns} FROM delivery_minute WHERE {where})", params
    params |= {"hour_start": ceil_start, "hour_end": floor_end}
    hours = " AND ".join(
        ["hour >= {hour_start:DateTime('UTC')}", "hour < {hour_end:DateTime('UTC')}", *scope]
    )
    edges = " AND ".join(
        [
            "((minute >= {start:DateTime('UTC')} AND minute < {hour_start:DateTime('UTC')}) "
            "OR (minute >= {hour_end:DateTime('UTC')} AND minute < {end:DateTime('UTC')}))",
            *scope,
        ]
    )
    return (
        f"(SELECT hour AS t, {columns} FROM delivery_hour WHERE {hours} "
        f"UNION ALL SELECT minute AS t, {columns} FROM delivery_minute WHERE {edges})",
        params,
    )


def _percentiles(quantiles: list[float]) -> dict[str, float | None]:
    return {"p50_ms": _number(quantiles[0]), "p95_ms": _number(quantiles[1]), "p99_ms": _number(quantiles[2])}


def _scope(tenant: str | None, filters: Filters) -> tuple[list[str], dict[str, Any]]:
    """The tenant, channel and provider conditions (column names are constants, values parameters)."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if tenant is not None:
        clauses.append("tenant_id = {tenant:String}")
        params["tenant"] = tenant
    if filters.channel is not None:
        clauses.append("channel = {channel:String}")
        params["channel"] = filters.channel
    if filters.provider is not None:
        clauses.append("provider = {provider:String}")
        params["provider"] = filters.provider
    return clauses, params


def _where(tenant: str | None, filters: Filters, time_column: str) -> tuple[str, dict[str, Any]]:
    """The WHERE clause over ``time_column`` (``minute`` of the rollup or ``occurred_at`` of events)."""
    kind = "DateTime('UTC')" if time_column == "minute" else "DateTime64(3, 'UTC')"
    scope, params = _scope(tenant, filters)
    clauses = [f"{time_column} >= {{start:{kind}}}", f"{time_column} < {{end:{kind}}}", *scope]
    return " AND ".join(clauses), {"start": filters.start, "end": filters.end, **params}


def _answer(tenant: str | None, filters: Filters, **body: Any) -> dict[str, Any]:
    return {"tenant": tenant, **filters.echo(), **body}


def _floor_minute(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def _iso(value: datetime) -> str:
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)).isoformat()


def _number(value: Any) -> float | None:
    """A float as JSON: NaN (a quantile with no values in range) and infinities become None."""
    return None if value is None or not math.isfinite(float(value)) else float(value)


def sla_counts_by_provider(
    warehouse: Warehouse, tenant: str, channel: str, latency_ms: int, start: datetime, end: datetime
) -> dict[str, SlaCounts]:
    """:func:`sla_counts` per provider instead of per minute (the provider of the send: its SENT, or
    for a send-time failure its last FAILED): which provider spends a tenant's error budget."""
    rows = _sla_grouped(warehouse, "send_provider", tenant, channel, latency_ms, start, end)
    return {str(provider): SlaCounts(good=int(good), total=int(total)) for provider, total, good in rows}


# -- dispatch: the failover timeline and budget use (docs/dispatch.md) ----------------------------------

ROUTED_REASONS: dict[str, str] = {
    "primary": "routed.primary",
    "failover": "routed.failover",
    "probe": "routed.probe",
    "retry_failover": "routed.retry_failover",
}
"""DISPATCHED reasons of the dispatcher's routing decisions (dispatch/core.py), by the name they are
counted under. ``primary``, ``failover`` and ``probe`` are first attempts; ``retry_failover`` is the one
failover retry of a failed first attempt (the same message: not a new one)."""
FIRST_ATTEMPTS = ("primary", "failover", "probe")
DISPATCH_LOOKBACK = timedelta(days=1)
"""How far before a failover range its DISPATCHED events are read, so a FAILED inside the range whose
attempt was dispatched before it is still known as one of the dispatcher's."""
MAX_SWITCHES = 500
BUDGET_CAMPAIGN_DAYS = 30
"""A campaign of a tenant is listed under budgets when the tenant has events of it this recent."""
MAX_BUDGET_ALERTS = 100
BUDGET_DIMENSIONS: tuple[tuple[str, str, str, str], ...] = (
    # (dimension as in reasons and alerts, BudgetSpec field, period, unit)
    ("messages_per_day", "messages_per_day", "day", "messages"),
    ("messages_total", "messages_total", "total", "messages"),
    ("money_per_day", "money_micros_per_day", "day", "micros"),
    ("money_total", "money_micros_total", "total", "micros"),
)
"""The dimensions of a budget: named as policies.limits.Budget names them in SUPPRESSED reasons
(``budget_exhausted.<scope>.<dimension>``) and alert metrics (``budget.<dimension>``)."""
_ROUTED_SQL = ", ".join(f"'{r}'" for r in ROUTED_REASONS.values())  # constants, never request text
_DISPATCH_COUNTS_SQL = ", ".join(f"countIf(reason = '{r}')" for r in ROUTED_REASONS.values())
_DETAILED_ALERT_COLUMNS = (
    "alert_id",
    "channel",
    "provider",
    "metric",
    "kind",
    "severity",
    "observed",
    "expected",
    "first_seen",
    "resolved_at",
    "detail",
    "resolved_detail",
    "runbook_url",
    "dashboard_url",
)
_DETAILED_ALERTS_SQL = """
SELECT c.alert_id, c.channel, c.provider, c.metric, c.kind, c.severity, c.observed, c.expected,
       c.first_seen, c.resolved_at, d.opened_detail, d.resolved_detail, c.runbook_url, c.dashboard_url
FROM alerts_current AS c
LEFT JOIN (
    SELECT alert_id,
           argMinIf(detail, emitted_at, status = 'OPENED') AS opened_detail,
           argMaxIf(detail, emitted_at, status = 'RESOLVED') AS resolved_detail
    FROM alerts FINAL
    WHERE tenant_id = {tenant:String} AND $METRIC
    GROUP BY alert_id
) AS d ON d.alert_id = c.alert_id
WHERE c.tenant_id = {tenant:String} AND $WHERE
ORDER BY c.first_seen DESC, c.alert_id
LIMIT {limit:UInt32}
"""


def failover(
    warehouse: Warehouse, tenant: str, filters: Filters, *, now: datetime | None = None
) -> dict[str, Any]:
    """The tenant's dispatch decisions per bucket and provider, and the provider switches of the range.

    ``series``: one entry per bucket and provider with the tenant's DISPATCHED events by reason
    (``primary``, ``failover``, ``probe``, ``retry_failover``; see ROUTED_REASONS), ``first_attempts``
    (primary + failover + probe) and its FAILED events by ``error_class`` (``failed``, ``failed_total``).
    Only the dispatcher's own traffic counts: DISPATCHED with another reason (events of another
    dispatcher) are left out, and so is a FAILED of a notification without a routed DISPATCHED in the
    range or the DISPATCH_LOOKBACK before it. ``providers``: the same counts per provider over the
    range; ``totals``: over the range, with ``failover_share`` = failover / first_attempts (None
    without first attempts): the share of new messages that went to a failover provider.

    ``switches``: the provider-health alerts (a provider's circuit breaker opened: traffic failed over;
    resolved when it closed: failback). Breakers are shared by every tenant, so these are the global
    rows (tenant ``*``), shown to every tenant; in the range when [first_seen, resolved_at] overlaps
    [from, to) (an open one lasts until ``now``), filtered by channel and provider, oldest first, at most
    MAX_SWITCHES (the newest; ``switches_truncated`` says so).
    """
    fn = _BUCKET_FN[filters.bucket]
    where, params = _where(tenant, filters, "occurred_at")
    counts = warehouse.rows(
        f"SELECT {fn}(occurred_at) AS bucket, provider, {_DISPATCH_COUNTS_SQL} FROM events "
        f"WHERE {where} AND event_type = 'DISPATCHED' AND reason IN ({_ROUTED_SQL}) "
        "GROUP BY bucket, provider ORDER BY bucket, provider",
        params,
    )
    failures = warehouse.rows(
        f"SELECT {fn}(occurred_at) AS bucket, provider, error_class, count() FROM events "
        f"WHERE {where} AND event_type = 'FAILED' AND notification_id IN ("
        "SELECT notification_id FROM events WHERE tenant_id = {tenant:String} "
        f"AND event_type = 'DISPATCHED' AND reason IN ({_ROUTED_SQL}) "
        "AND occurred_at >= {lookback:DateTime64(3, 'UTC')} AND occurred_at < {end:DateTime64(3, 'UTC')}) "
        "GROUP BY bucket, provider, error_class ORDER BY bucket, provider, error_class",
        {**params, "lookback": filters.start - DISPATCH_LOOKBACK},
    )
    points: dict[tuple[str, str], dict[str, Any]] = {}

    def point(bucket: Any, provider: Any) -> dict[str, Any]:
        key = (_iso(bucket), str(provider))
        if key not in points:
            points[key] = {"bucket": key[0], "provider": key[1], **_dispatch_counts()}
        return points[key]

    for bucket, provider, *by_reason in counts:
        p = point(bucket, provider)
        for name, value in zip(ROUTED_REASONS, by_reason, strict=True):
            p[name] = int(value)
        p["first_attempts"] = sum(p[name] for name in FIRST_ATTEMPTS)
    for bucket, provider, error_class, failed in failures:
        p = point(bucket, provider)
        p["failed"][str(error_class)] = int(failed)
        p["failed_total"] += int(failed)
    series = [points[k] for k in sorted(points)]
    per_provider: dict[str, dict[str, Any]] = {}
    totals = _dispatch_counts()
    for p in series:
        provider = per_provider.setdefault(p["provider"], {"provider": p["provider"], **_dispatch_counts()})
        for into in (provider, totals):
            _add_counts(into, p)
    totals["failover_share"] = rate(totals["failover"], totals["first_attempts"])
    switches, truncated = _provider_switches(warehouse, filters, now or datetime.now(UTC))
    return _answer(
        tenant,
        filters,
        series=series,
        providers=[per_provider[k] for k in sorted(per_provider)],
        totals=totals,
        switches=switches,
        switches_truncated=truncated,
    )


def _dispatch_counts() -> dict[str, Any]:
    return {**dict.fromkeys(ROUTED_REASONS, 0), "first_attempts": 0, "failed_total": 0, "failed": {}}


def _add_counts(into: dict[str, Any], point: dict[str, Any]) -> None:
    for name in (*ROUTED_REASONS, "first_attempts", "failed_total"):
        into[name] += point[name]
    for error_class, failed in point["failed"].items():
        into["failed"][error_class] = into["failed"].get(error_class, 0) + failed


def _provider_switches(
    warehouse: Warehouse, filters: Filters, now: datetime
) -> tuple[list[dict[str, Any]], bool]:
    clauses = [
        "c.metric = 'provider_health'",
        "c.first_seen < {end:DateTime64(3, 'UTC')}",
        "coalesce(c.resolved_at, {now:DateTime64(3, 'UTC')}) >= {start:DateTime64(3, 'UTC')}",
    ]
    params: dict[str, Any] = {"start": filters.start, "end": filters.end, "now": now}
    for column, value in (("channel", filters.channel), ("provider", filters.provider)):
        if value is not None:  # column names are constants, values parameters
            clauses.append(f"c.{column} = {{{column}:String}}")
            params[column] = value
    found = _detailed_alerts(warehouse, "*", "metric = 'provider_health'", clauses, params, MAX_SWITCHES + 1)
    return found[:MAX_SWITCHES][::-1], len(found) > MAX_SWITCHES


def _detailed_alerts(
    warehouse: Warehouse,
    tenant: str,
    metric_where: str,
    clauses: list[str],
    params: dict[str, Any],
    limit: int,
) -> list[dict[str, Any]]:
    """Alerts of alerts_current, newest first, with the ``detail`` of their OPENED row and of their
    RESOLVED row (``resolved_detail``; the view has no detail column, so it is read from ``alerts``
    FINAL, one value per alert however often a restarted monitor wrote the row)."""
    sql = _DETAILED_ALERTS_SQL.replace("$METRIC", metric_where).replace("$WHERE", " AND ".join(clauses))
    found = []
    for row in warehouse.rows(sql, {**params, "tenant": tenant, "limit": limit}):
        alert = dict(zip(_DETAILED_ALERT_COLUMNS, row, strict=True))
        for name in ("observed", "expected"):
            alert[name] = _number(alert[name])
        for name in ("first_seen", "resolved_at"):
            alert[name] = None if alert[name] is None else _iso(alert[name])
        resolved = alert["resolved_at"] is not None
        alert["detail"] = alert["detail"] or None
        alert["resolved_detail"] = (alert["resolved_detail"] or None) if resolved else None
        found.append(
            {"alert_id": alert.pop("alert_id"), "status": "resolved" if resolved else "open", **alert}
        )
    return found


@dataclass(slots=True)
class BudgetUse:
    """What one tenant's events of one campaign (``""``: transactional) used, measured in the warehouse:
    messages (first-attempt DISPATCHED; the failover retry is the same message) and money (cost_micros
    of SENT) of the UTC day and in total, and its budget_exhausted SUPPRESSED (under the loaded policy
    version) per reason, of the day and in total."""

    messages_today: int = 0
    messages_total: int = 0
    micros_today: int = 0
    micros_total: int = 0
    suppressed_today: dict[str, int] = field(default_factory=dict)
    suppressed_total: dict[str, int] = field(default_factory=dict)


def budgets(
    warehouse: Warehouse, tenant: str, policy: GuardrailsPolicy, policy_version: str, now: datetime
) -> dict[str, Any]:
    """The tenant's budget use against ``policy`` as of ``now``: :func:`budget_report` over the UTC day
    of ``now`` and the campaigns of the last BUDGET_CAMPAIGN_DAYS, with the budget alerts of that time."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    since = now - timedelta(days=BUDGET_CAMPAIGN_DAYS)
    campaigns = recent_campaigns(warehouse, tenant, since)
    use = budget_use(warehouse, tenant, day, policy_version)
    return {
        "tenant": tenant,
        "policy_version": policy_version,
        "as_of": now.isoformat(),
        "day": day.date().isoformat(),
        "campaigns_since": since.isoformat(),
        "scopes": budget_report(tenant, policy, campaigns, use),
        "alerts": budget_alerts(warehouse, tenant, since),
    }


def budget_use(warehouse: Warehouse, tenant: str, day: datetime, policy_version: str) -> dict[str, BudgetUse]:
    """Per campaign_id of the tenant's events (all of them; ``""`` for transactional messages): the use
    of the UTC ``day`` (its midnight) and in total. Suppressions count only under ``policy_version``: a
    policy that raised a limit resumes the scope, so an older version's suppressions say no more.
    """
    params = {"tenant": tenant, "day": day, "next_day": day + timedelta(days=1), "version": policy_version}
    today = "occurred_at >= {day:DateTime64(3, 'UTC')} AND occurred_at < {next_day:DateTime64(3, 'UTC')}"
    use: dict[str, BudgetUse] = {}
    for campaign, messages_today, messages_total, micros_today, micros_total in warehouse.rows(
        f"SELECT campaign_id, countIf(event_type = 'DISPATCHED' AND {today}), "
        "countIf(event_type = 'DISPATCHED'), "
        f"sumIf(coalesce(cost_micros, 0), event_type = 'SENT' AND {today}), "
        "sumIf(coalesce(cost_micros, 0), event_type = 'SENT') "
        "FROM events WHERE tenant_id = {tenant:String} "
        f"AND ((event_type = 'DISPATCHED' AND reason != '{ROUTED_REASONS['retry_failover']}') "
        "OR event_type = 'SENT') GROUP BY campaign_id",
        params,
    ):
        use[str(campaign)] = BudgetUse(
            int(messages_today), int(messages_total), int(micros_today or 0), int(micros_total or 0)
        )
    for campaign, reason, suppressed_today, suppressed_total in warehouse.rows(
        f"SELECT campaign_id, reason, countIf({today}), count() FROM events "
        "WHERE tenant_id = {tenant:String} AND event_type = 'SUPPRESSED' "
        "AND startsWith(reason, 'budget_exhausted.') AND policy_version = {version:String} "
        "GROUP BY campaign_id, reason",
        params,
    ):
        entry = use.setdefault(str(campaign), BudgetUse())
        if suppressed_today:
            entry.suppressed_today[str(reason)] = int(suppressed_today)
        entry.suppressed_total[str(reason)] = int(suppressed_total)
    return use


def recent_campaigns(warehouse: Warehouse, tenant: str, since: datetime) -> list[str]:
    """The campaign ids of the tenant's events since ``since``, sorted."""
    return [
        str(c)
        for (c,) in warehouse.rows(
            "SELECT DISTINCT campaign_id FROM events WHERE tenant_id = {tenant:String} "
            "AND occurred_at >= {since:DateTime64(3, 'UTC')} AND campaign_id != '' ORDER BY campaign_id",
            {"tenant": tenant, "since": since},
        )
    ]


def budget_alerts(warehouse: Warehouse, tenant: str, since: datetime) -> list[dict[str, Any]]:
    """The tenant's budget alerts (metric ``budget.<dimension>``) first seen since ``since``, newest
    first, at most MAX_BUDGET_ALERTS, each with the ``scope`` its detail names (``campaign:<id>``,
    ``tenant:<id>``; None if the detail does not say) and its ``dimension``."""
    clauses = ["startsWith(c.metric, 'budget.')", "c.first_seen >= {since:DateTime64(3, 'UTC')}"]
    found = _detailed_alerts(
        warehouse, tenant, "startsWith(metric, 'budget.')", clauses, {"since": since}, MAX_BUDGET_ALERTS
    )
    for alert in found:
        detail = alert["detail"] or ""
        alert["scope"] = detail.split(" used ", 1)[0] if " used " in detail else None
        alert["dimension"] = alert["metric"].removeprefix("budget.")
    return found


def budget_report(
    tenant: str,
    policy: GuardrailsPolicy,
    campaigns: list[str],
    use: dict[str, BudgetUse],
) -> list[dict[str, Any]]:
    """One entry per budget scope of the tenant: its own budget (``tenants.<tenant>.budget``) and that of
    each of ``campaigns`` (``campaigns.<id>.budget``, else ``campaign_defaults.budget``); scopes
    without a budget are left out. Per limited dimension: ``limit``, ``used`` (today's for per-day
    dimensions), ``fraction`` = used / limit (1 for a limit of 0), ``suppressed`` (budget_exhausted
    SUPPRESSED of the dimension in its period) and ``paused`` (fraction >= 1 or suppressed). The scope is
    ``paused`` when any dimension is. Pure.
    """
    scopes: list[tuple[str, str, str, BudgetSpec | None, list[BudgetUse]]] = [
        ("tenant", tenant, f"tenants.{tenant}.budget", policy.tenant(tenant).budget, list(use.values()))
    ]
    for campaign in campaigns:
        path = f"campaigns.{campaign}.budget" if campaign in policy.campaigns else "campaign_defaults.budget"
        scopes.append(
            ("campaign", campaign, path, policy.campaign(campaign).budget, [use.get(campaign, BudgetUse())])
        )
    report = []
    for kind, scope_id, path, spec, uses in scopes:
        if spec is None:
            continue
        measured = {
            "messages_per_day": sum(u.messages_today for u in uses),
            "messages_total": sum(u.messages_total for u in uses),
            "money_per_day": sum(u.micros_today for u in uses),
            "money_total": sum(u.micros_total for u in uses),
        }
        dimensions = []
        for dimension, spec_field, period, unit in BUDGET_DIMENSIONS:
            limit: int | None = getattr(spec, spec_field)
            if limit is None:
                continue
            reason = f"budget_exhausted.{kind}.{dimension}"
            counts = [u.suppressed_today if period == "day" else u.suppressed_total for u in uses]
            suppressed = sum(c.get(reason, 0) for c in counts)
            used = measured[dimension]
            fraction = used / limit if limit else 1.0
            dimensions.append(
                {
                    "dimension": dimension,
                    "period": period,
                    "unit": unit,
                    "limit": limit,
                    "used": used,
                    "fraction": fraction,
                    "suppressed": suppressed,
                    "paused": fraction >= 1.0 or suppressed > 0,
                }
            )
        report.append(
            {
                "scope": kind,
                "id": scope_id,
                "key": f"{kind}:{scope_id}",
                "policy_path": path,
                "currency": spec.currency,
                "alert_thresholds": list(spec.alert_thresholds),
                "paused": any(d["paused"] for d in dimensions),
                "dimensions": dimensions,
            }
        )
    return report
