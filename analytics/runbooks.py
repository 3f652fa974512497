"""Where on-call goes for each alert: the one mapping from alert keys to runbook anchors. Pure.

Keys are ``<series metric>.<detector kind>`` for anomaly alerts (``delivery_rate.drop``), plus
``level_shift`` for a shift of any metric, ``provider.<condition>`` for provider health,
``ingest.<condition>`` for the warehouse sink, ``sla.breach`` for a tenant's SLA objective and
``budget.exhausted`` for a paused tenant or campaign budget. Values are repository-relative paths with the
GitHub-style heading anchor; dashboards (``infra/grafana``) link the same keys, and a unit test
checks every file and heading exists.

>>> runbook_url("delivery_rate.drop", "https://github.com/acme/herald/blob/main/")
'https://github.com/acme/herald/blob/main/docs/runbooks/delivery.md#delivery-rate-drop'
>>> runbook_key("latency_p95", "level_shift")
'level_shift'
"""

from __future__ import annotations

from herald.errors import HeraldError

SERIES_METRICS = ("volume", "delivery_rate", "bounce_rate", "failure_rate", "latency_p95", "open_rate")
"""The per-minute series the anomaly detector watches (tenant x channel x provider x metric)."""

_DELIVERY = "docs/runbooks/delivery.md"
_VOLUME = "docs/runbooks/volume.md"
_ENGAGEMENT = "docs/runbooks/engagement.md"
_LATENCY = "docs/runbooks/latency.md"
_ANOMALIES = "docs/runbooks/anomalies.md"
_PROVIDERS = "docs/runbooks/providers.md"
_INGEST = "docs/runbooks/ingest.md"
_SLA = "docs/runbooks/sla.md"
_BUDGETS = "docs/runbooks/budgets.md"

RUNBOOKS: dict[str, str] = {
    # A "good" direction (fewer failures, faster receipts) still alerts: it usually means the
    # receipts stopped arriving, not that the providers got better.
    "delivery_rate.drop": f"{_DELIVERY}#delivery-rate-drop",
    "delivery_rate.spike": f"{_DELIVERY}#delivery-rate-spike",
    "failure_rate.spike": f"{_DELIVERY}#failure-rate-spike",
    "failure_rate.drop": f"{_DELIVERY}#failure-or-bounce-rate-drop",
    "bounce_rate.spike": f"{_DELIVERY}#bounce-rate-spike",
    "bounce_rate.drop": f"{_DELIVERY}#failure-or-bounce-rate-drop",
    "volume.drop": f"{_VOLUME}#volume-drop",
    "volume.spike": f"{_VOLUME}#volume-spike",
    "open_rate.drop": f"{_ENGAGEMENT}#open-rate-drop",
    "open_rate.spike": f"{_ENGAGEMENT}#open-rate-spike",
    "latency_p95.spike": f"{_LATENCY}#latency-p95-spike",
    "latency_p95.drop": f"{_LATENCY}#latency-p95-drop",
    "level_shift": f"{_ANOMALIES}#level-shift",
    "provider.error_rate_high": f"{_PROVIDERS}#provider-error-rate-high",
    "provider.latency_high": f"{_PROVIDERS}#provider-latency-high",
    "provider.throughput_drop": f"{_PROVIDERS}#provider-throughput-drop",
    "provider.outage": f"{_PROVIDERS}#provider-outage",  # a provider down; failover (or why not)
    "sla.breach": f"{_SLA}#sla-breach",  # a page burn-rate rule fires or the error budget is spent
    "budget.exhausted": f"{_BUDGETS}#budget-exhausted",  # a tenant or campaign budget paused at 100 %
    "ingest.dead_letters": f"{_INGEST}#dead-letters-growing",
    "ingest.duplicates": f"{_INGEST}#duplicates-growing",
    "ingest.lag": f"{_INGEST}#ingest-lag",  # the sink falls behind and the gap grows
    "ingest.stall": f"{_INGEST}#ingest-stalled",  # the sink is behind and writes nothing
}


class UnknownRunbookError(HeraldError):
    """No runbook is mapped for this alert key (add one to RUNBOOKS and docs/runbooks/)."""


def runbook_key(metric: str, kind: str) -> str:
    """The RUNBOOKS key of an anomaly alert: metric-specific first, then the kind's generic one."""
    for key in (f"{metric}.{kind}", kind):
        if key in RUNBOOKS:
            return key
    raise UnknownRunbookError(f"no runbook for metric {metric!r} kind {kind!r}")


def runbook_url(key: str, base_url: str) -> str:
    """Full URL of the runbook for ``key`` under ``base_url`` (a docs site or the repo's blob root)."""
    try:
        path = RUNBOOKS[key]
    except KeyError:
        raise UnknownRunbookError(f"no runbook for {key!r}; known: {', '.join(sorted(RUNBOOKS))}") from None
    return f"{base_url.rstrip('/')}/{path}"
