"""The tenant-scoped delivery analytics JSON API under ``/api/v1`` (the data behind the dashboards).

Every endpoint needs an API key (see web/auth.py): a tenant-scoped key reads only its own tenant and
gets 403, with no data, for any other; a global (operator/admin) key reads every tenant. Without a
keys file every endpoint answers 503. ``/api/v1/alerts`` spans every tenant and so needs a global key.
``/api/v1/tenants/{tenant}/sla`` and ``/budgets`` also need the guardrails policy (SLA objectives, budget
limits): 503 without. ``/failover`` shows every tenant the provider switches (global alerts, tenant ``*``)
alongside its own dispatch decisions. Experiments and segments are served by web/experiments_api.py.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency aliases defined inside
# analytics_router from the annotations, and string annotations could not see those locals.
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from policies.loader import LoadedPolicy
from projections import queries
from projections.queries import AlertStatus, Bucket, FilterError, FilterParams, Filters
from projections.warehouse import Warehouse
from web.auth import TENANT_PATTERN, ApiAuth, Principal, Role, forbid

MAX_ALERTS = 1000
ALERTS_DESCRIPTION = """One entry per alert (its OPENED and RESOLVED rows folded into one, duplicates of a
monitor restart shown once), newest ``first_seen`` first.

An alert is in the range when [first_seen, resolved_at] overlaps [from, to); an open alert lasts until
now. ``status`` is ``open`` or ``resolved``; ``resolved_at`` is null while the alert is open.
``observed`` and ``expected`` are in the metric's unit: rates as fractions (0.95), ``latency_p95`` in
ms, ``volume`` in messages per minute. ``runbook_url`` is the runbook of the alert's metric and kind,
``dashboard_url`` the delivery dashboard filtered to the alert's tenant, channel and provider."""
NO_POLICY = "no guardrails policy loaded"
SLA_DESCRIPTION = """One entry per SLA objective of the tenant in the loaded guardrails policy
(``{"objectives": []}`` for a tenant without any), each with the policy's ``channel``, ``target``,
``latency_ms``, ``window_days`` and ``policy_version``, and its status now (policies.sla.evaluate_sla):

- ``good`` / ``total`` / ``ratio`` over the objective's window ``[from, to)`` of send minutes:
  ``total`` counts notifications sent or failed at send, ``good`` those delivered within
  ``latency_ms`` of the send (docs/warehouse.md, "SLA measurement"); ``ratio`` is 1 without traffic;
- ``error_budget_remaining``: fraction of the allowed failures (``1 - target``) not spent yet
  (1 = untouched, 0 or less = exhausted);
- ``burn_rates``: per rule, its ``long_minutes`` / ``short_minutes`` windows, ``factor``,
  ``severity`` (ticket or page), the observed ``long_burn`` / ``short_burn`` (1 = spending the
  budget exactly over the window) and ``firing`` (both windows at least ``factor``);
- ``breach`` (a page rule fires or the budget is exhausted) and ``severity`` (none, ticket, page);
- ``series``: the good ratio of each of the last 24 hours (null where nothing was sent).

Sends of the last ``latency_ms`` are not judged yet (they may still be delivered in time): ``to`` is
``as_of`` less ``latency_ms``, floored to the minute. Times are UTC."""
FAILOVER_DESCRIPTION = f"""The dispatcher's routing decisions for the tenant over ``[from, to)``
(docs/dispatch.md), and the provider switches of that range. Filters as for the other tenant endpoints.

- ``series``: one entry per ``bucket`` and ``provider`` (a bucket without dispatch traffic has no
  entry) with the tenant's DISPATCHED events by reason: ``primary`` (routed.primary), ``failover``
  (routed.failover: a provider ahead in the order was open or avoided), ``probe`` (routed.probe: the
  first provider is half-open and this message tests it), ``retry_failover`` (routed.retry_failover:
  the one retry of a failed first attempt, the same message); ``first_attempts`` = primary + failover +
  probe; ``failed`` (FAILED events by ``error_class``) and ``failed_total``. Only the dispatcher's
  traffic counts: DISPATCHED with another reason is left out, and so is a FAILED of a notification
  without a routed DISPATCHED in the range or the {queries.DISPATCH_LOOKBACK.days} day before it.
- ``providers``: the same counts per provider over the range; ``totals``: over the range, with
  ``failover_share`` = failover / first_attempts (null without first attempts).
- ``switches``: provider-health alerts (``metric`` provider_health): a provider's circuit breaker
  opened (traffic fails over) and, once ``resolved_at`` is set, closed again (failback). Breakers are
  shared by every tenant, so these are global (tenant ``*``) and every tenant sees them. Each has
  ``first_seen``, ``resolved_at`` (null while open), ``status``, ``channel``, ``provider``, ``detail``
  (the breaker's transition and why) and ``resolved_detail``; in the range when [first_seen,
  resolved_at] overlaps [from, to), filtered by ``channel`` and ``provider``, oldest first, at most
  {queries.MAX_SWITCHES} (the newest; ``switches_truncated`` is true then)."""
BUDGETS_DESCRIPTION = f"""Budget use of the tenant against the loaded guardrails policy (503 without
one). ``scopes``: the tenant's own budget (``tenants.<tenant>.budget``; ``scope`` tenant) and each campaign
the tenant has events of in the last {queries.BUDGET_CAMPAIGN_DAYS} days (``scope`` campaign; its
``campaigns.<id>.budget``, else ``campaign_defaults.budget``: ``policy_path`` says which); scopes
without a budget are left out (``{{"scopes": []}}`` when none has one). ``channel``, ``provider`` and
the time range play no part: budgets span every channel.

Per dimension with a limit in the policy (``messages_per_day``, ``messages_total``, ``money_per_day``,
``money_total``; ``period`` day (the UTC day of ``as_of``) or total; ``unit`` messages or micros of
``currency``): ``limit``; ``used`` measured from the warehouse: messages = the scope's first-attempt
DISPATCHED events (reason other than routed.retry_failover: a retry is the same message), money =
sum of ``cost_micros`` of its SENT events (what providers billed); ``fraction`` = used / limit (1 for a
limit of 0); ``suppressed``: SUPPRESSED events with reason ``budget_exhausted.<scope>.<dimension>``
under the loaded policy version in the period (a policy that raises a limit is a new version and
resumes the scope); ``paused`` when fraction >= 1 or suppressed > 0. A scope is ``paused`` when any of
its dimensions is. The dispatcher charges at the chosen provider's price when it routes; the money
measured here is what SENT events billed, so the two differ by the sends that failed.

``alerts``: the tenant's budget alerts (``metric`` budget.<dimension>; 80 % and 100 % thresholds)
first seen in the last {queries.BUDGET_CAMPAIGN_DAYS} days, newest first, each with its ``scope``
(``tenant:<id>`` or ``campaign:<id>``, as the scopes' ``key``), ``dimension`` and ``detail``."""


def analytics_router(  # noqa: PLR0915 - one short nested function per endpoint
    warehouse: Warehouse,
    auth: ApiAuth,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    policy: LoadedPolicy | None = None,
) -> APIRouter:
    """The /api/v1 router over ``warehouse``, guarded by ``auth``; ``clock`` defaults the time range;
    ``policy`` holds the tenants' SLA objectives and budgets (None: /sla and /budgets answer 503)."""
    router = APIRouter(prefix="/api/v1", tags=["analytics"])
    Caller = Annotated[Principal, Depends(auth.principal)]  # noqa: N806 - a type alias, named as one

    def tenant_access(
        caller: Caller,
        tenant: Annotated[str, PathParam(pattern=TENANT_PATTERN, description="Tenant id")],
    ) -> str:
        forbid(caller, Role.VIEWER, tenant)  # before any query runs: another tenant sees nothing
        return tenant

    def filters(
        channel: Annotated[str | None, Query(description="EMAIL, SMS or PUSH")] = None,
        provider: Annotated[str | None, Query(description="Delivery provider name")] = None,
        start: Annotated[
            datetime | None, Query(alias="from", description="ISO time, inclusive; default to - 24 h")
        ] = None,
        end: Annotated[
            datetime | None, Query(alias="to", description="ISO time, exclusive; default now")
        ] = None,
        bucket: Annotated[Bucket, Query(description="Series resolution")] = "hour",
    ) -> Filters:
        return resolve({"channel": channel, "provider": provider, "from": start, "to": end, "bucket": bucket})

    def alert_filters(
        channel: Annotated[str | None, Query(description="EMAIL, SMS or PUSH")] = None,
        provider: Annotated[str | None, Query(description="Delivery provider name")] = None,
        start: Annotated[
            datetime | None, Query(alias="from", description="ISO time, inclusive; default to - 24 h")
        ] = None,
        end: Annotated[
            datetime | None, Query(alias="to", description="ISO time, exclusive; default now")
        ] = None,
    ) -> Filters:
        """The same filters without ``bucket``: an alert list has no series to bucket."""
        return resolve({"channel": channel, "provider": provider, "from": start, "to": end})

    def resolve(raw: dict[str, Any]) -> Filters:
        """Validated, defaulted filters; a bad value is a 422 naming its query parameter."""
        try:
            return FilterParams.model_validate(raw).resolved(clock())
        except ValidationError as exc:
            raise RequestValidationError(
                [
                    {**e, "loc": ("query", *e["loc"])}
                    for e in exc.errors(include_url=False, include_context=False)
                ]
            ) from None
        except FilterError as exc:
            raise RequestValidationError(
                [{"type": "value_error", "loc": ("query", exc.field), "msg": exc.message, "input": raw}]
            ) from None

    def global_access(caller: Caller) -> Principal:
        if not caller.is_global:
            raise HTTPException(
                status_code=403,
                detail=f"key {caller.name} is scoped to tenant {caller.tenant}; /api/v1/alerts spans "
                "every tenant and needs a global (operator or admin) key: use "
                f"/api/v1/tenants/{caller.tenant}/alerts",
            )
        forbid(caller, Role.OPERATOR, None)
        return caller

    Tenant = Annotated[str, Depends(tenant_access)]  # noqa: N806 - a type alias, named as one
    Filter = Annotated[Filters, Depends(filters)]  # noqa: N806 - a type alias, named as one
    AlertFilter = Annotated[Filters, Depends(alert_filters)]  # noqa: N806 - a type alias, named as one
    Status = Annotated[  # noqa: N806 - a type alias, named as one
        AlertStatus, Query(description="open (not resolved yet), resolved, or all")
    ]
    Limit = Annotated[  # noqa: N806 - a type alias, named as one
        int, Query(ge=1, le=MAX_ALERTS, description=f"At most this many alerts (1..{MAX_ALERTS})")
    ]

    @router.get("/tenants", summary="Tenants visible to the caller")
    def list_tenants(caller: Caller) -> dict[str, list[str]]:
        if caller.is_global:
            return {"tenants": queries.tenants(warehouse)}
        return {"tenants": [caller.tenant]}

    @router.get("/tenants/{tenant}/delivery", summary="Delivery counts and delivery rate per bucket")
    def delivery(tenant: Tenant, f: Filter) -> dict[str, Any]:
        """delivery_rate = delivered / dispatched (send-time failures never reach SENT)."""
        return queries.delivery_series(warehouse, tenant, f)

    @router.get("/tenants/{tenant}/engagement", summary="Open and click rates per bucket")
    def engagement(tenant: Tenant, f: Filter) -> dict[str, Any]:
        """open_rate = opened / delivered, click_rate = clicked / delivered."""
        return queries.engagement(warehouse, tenant, f)

    @router.get("/tenants/{tenant}/latency", summary="Send and delivery latency: averages and p50/p95/p99")
    def latency(tenant: Tenant, f: Filter) -> dict[str, Any]:
        """Averages per bucket from the rollup; percentiles over the range from the raw events."""
        return queries.latency(warehouse, tenant, f)

    @router.get("/tenants/{tenant}/providers", summary="Provider health: error rate, error classes")
    def providers(tenant: Tenant, f: Filter) -> dict[str, Any]:
        """error_rate = (failed + bounced) / dispatched, with the top error classes per provider."""
        return queries.provider_health(warehouse, tenant, f)

    @router.get(
        "/tenants/{tenant}/alerts",
        summary="The tenant's alerts: open and resolved, with runbook and dashboard links",
        description=ALERTS_DESCRIPTION,
    )
    def tenant_alerts(
        tenant: Tenant, f: AlertFilter, status: Status = "all", limit: Limit = 100
    ) -> dict[str, Any]:
        return queries.alerts(warehouse, tenant, f, status, limit, now=clock())

    @router.get(
        "/tenants/{tenant}/sla",
        summary="SLA status per objective: good ratio, error budget, burn rates, hourly good ratio",
        description=SLA_DESCRIPTION,
    )
    def sla(tenant: Tenant) -> dict[str, Any]:
        if policy is None:
            raise HTTPException(status_code=503, detail=NO_POLICY)
        now = clock().astimezone(UTC)
        objectives = []
        for objective in policy.policy.tenant(tenant).slas:
            until = queries.sla_judged_until(now, objective)
            start, end = queries.sla_range(objective, until)
            channel, latency_ms = objective.channel, objective.latency_ms
            counts = queries.sla_counts(warehouse, tenant, channel, latency_ms, start, end)
            report = queries.sla_report(tenant, objective, counts, until)
            objectives.append({**report, "policy_version": policy.version})
        return {
            "tenant": tenant,
            "policy_version": policy.version,
            "as_of": now.isoformat(),
            "objectives": objectives,
        }

    @router.get(
        "/tenants/{tenant}/failover",
        summary="Failover timeline: first attempts per provider and reason, failures, provider switches",
        description=FAILOVER_DESCRIPTION,
    )
    def failover(tenant: Tenant, f: Filter) -> dict[str, Any]:
        return queries.failover(warehouse, tenant, f, now=clock())

    @router.get(
        "/tenants/{tenant}/budgets",
        summary="Budget use per scope (tenant, campaigns): used, limit, fraction, paused; budget alerts",
        description=BUDGETS_DESCRIPTION,
    )
    def budgets(tenant: Tenant) -> dict[str, Any]:
        if policy is None:
            raise HTTPException(status_code=503, detail=NO_POLICY)
        return queries.budgets(warehouse, tenant, policy.policy, policy.version, clock())

    @router.get(
        "/alerts",
        summary="Alerts of every tenant (global operator or admin keys only)",
        description=ALERTS_DESCRIPTION + "\n\nA tenant-scoped key gets 403: it reads "
        "``/api/v1/tenants/{tenant}/alerts`` instead.",
    )
    def all_alerts(
        _: Annotated[Principal, Depends(global_access)],
        f: AlertFilter,
        status: Status = "all",
        limit: Limit = 100,
    ) -> dict[str, Any]:
        return queries.alerts(warehouse, None, f, status, limit, now=clock())

    return router
