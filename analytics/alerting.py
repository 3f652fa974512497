"""Alert lifecycle per series: one open alert per tenant x channel x provider, resolution after a
run of normal minutes, a cooldown before the series may alert again. Pure and picklable.

The monitor (to come) feeds it one closed minute at a time with the detector verdicts of every
metric of a series. Several metrics usually move together (a delivery-rate drop is a failure-rate
spike), so they fold into the series' one open alert instead of paging once per metric. Alert ids
are deterministic in the series and the minute the alert opened, so a replay emits the same ids.

>>> from analytics.anomaly import Verdict
>>> tracker = AlertTracker(AlertPolicy(cooldown_minutes=30, resolve_after_minutes=2))
>>> s = SeriesKey("acme-home", "SMS", "sms-primary")
>>> drop = Verdict(0, 0.4, 0.95, 0.99, -9.0, "drop", "critical", False)
>>> ok = Verdict(0, 0.95, 0.95, 0.01, 0.1, None, "none", False)
>>> [c.status for c in tracker.observe(s, 0, {"delivery_rate": drop})]
['OPENED']
>>> tracker.observe(s, 60_000, {"delivery_rate": drop, "failure_rate": drop})  # folds into the open one
[]
>>> tracker.observe(s, 120_000, {"delivery_rate": ok})
[]
>>> [(c.status, c.window_end_ms) for c in tracker.observe(s, 180_000, {"delivery_rate": ok})]
[('RESOLVED', 120000)]
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlencode

from analytics.anomaly import Verdict
from analytics.runbooks import SERIES_METRICS, runbook_key, runbook_url

MINUTE_MS = 60_000
SEVERITIES = ("none", "minor", "major", "critical")
NEAR_TIE = 0.1  # scores this close to the worst one count as tied: the headline metric names the alert
Status = Literal["OPENED", "RESOLVED"]


@dataclass(frozen=True, slots=True)
class SeriesKey:
    tenant_id: str
    channel: str
    provider: str

    @property
    def text(self) -> str:
        return f"{self.tenant_id}/{self.channel}/{self.provider}"


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    cooldown_minutes: int = 30  # after a resolution, before the series may open a new alert
    resolve_after_minutes: int = 5  # consecutive normal minutes that resolve an open alert
    confirm_minutes: int = 2  # consecutive anomalous minutes that open a minor alert (major: one)

    def __post_init__(self) -> None:
        if self.cooldown_minutes < 0 or self.resolve_after_minutes < 1 or self.confirm_minutes < 1:
            raise ValueError("cooldown_minutes must be >= 0, resolve_after_minutes and confirm_minutes >= 1")


@dataclass(frozen=True, slots=True)
class AlertChange:
    """An alert opening or resolving: the content of one alerts-topic event."""

    alert_id: str
    status: Status
    series: SeriesKey
    metric: str
    kind: str
    severity: str
    observed: float
    expected: float
    score: float
    window_start_ms: int
    window_end_ms: int
    first_seen_ms: int
    at_ms: int
    detail: str = ""  # every metric that was anomalous when the alert opened, worst first

    @property
    def runbook_key(self) -> str:
        return runbook_key(self.metric, self.kind)


@dataclass(slots=True)
class SeriesAlertState:
    open: AlertChange | None = None
    last_anomalous_ms: int = 0
    normal_minutes: int = 0
    cooldown_until_ms: int = 0
    last_minute_ms: int = -1
    streak: int = 0  # consecutive anomalous minutes while no alert is open
    streak_start_ms: int = 0


@dataclass
class AlertTracker:
    policy: AlertPolicy = field(default_factory=AlertPolicy)
    states: dict[SeriesKey, SeriesAlertState] = field(default_factory=dict)

    def observe(
        self, series: SeriesKey, minute_ms: int, verdicts: Mapping[str, Verdict]
    ) -> list[AlertChange]:
        """Fold one closed minute of a series; return the alerts it opens or resolves."""
        state = self.states.setdefault(series, SeriesAlertState())
        if minute_ms <= state.last_minute_ms:
            return []  # a minute already seen (replay, or late duplicate delivery): no new decision
        state.last_minute_ms = minute_ms
        anomalous = [(m, v) for m, v in verdicts.items() if v.is_anomaly and not v.warming_up]
        if state.open is None:
            if not anomalous or minute_ms < state.cooldown_until_ms:
                state.streak = 0
                return []
            state.streak += 1
            if state.streak == 1:
                state.streak_start_ms = minute_ms
            # Worst first; near-ties (several metrics at the score's ceiling) go to the headline
            # metric, so a delivery-rate drop is reported as that and not as its mirror image.
            top = max(v.score for _, v in anomalous)
            anomalous.sort(key=lambda mv: (mv[1].score < top - NEAR_TIE, _priority(mv[0]), -mv[1].score))
            metric, worst = anomalous[0]
            severity = max((v.severity for _, v in anomalous), key=SEVERITIES.index)
            if severity == "minor" and state.streak < self.policy.confirm_minutes:
                return []  # one weak minute is noise more often than news: wait for a second
            first = state.streak_start_ms
            state.open = AlertChange(
                alert_id=alert_id(series, first),
                status="OPENED",
                series=series,
                metric=metric,
                kind=worst.kind or "level_shift",
                severity=severity,
                observed=worst.observed,
                expected=worst.expected,
                score=worst.score,
                window_start_ms=first,
                window_end_ms=minute_ms + MINUTE_MS,
                first_seen_ms=first,
                at_ms=minute_ms,
                detail="; ".join(_describe(m, v) for m, v in anomalous),
            )
            state.last_anomalous_ms, state.normal_minutes, state.streak = minute_ms, 0, 0
            return [state.open]
        if anomalous:
            state.last_anomalous_ms, state.normal_minutes = minute_ms, 0
            return []
        state.normal_minutes += 1
        if state.normal_minutes < self.policy.resolve_after_minutes:
            return []
        resolved = replace(
            state.open, status="RESOLVED", window_end_ms=state.last_anomalous_ms + MINUTE_MS, at_ms=minute_ms
        )
        state.open, state.normal_minutes = None, 0
        state.cooldown_until_ms = minute_ms + self.policy.cooldown_minutes * MINUTE_MS
        return [resolved]

    def open_alerts(self) -> list[AlertChange]:
        return [s.open for s in self.states.values() if s.open is not None]


def _priority(metric: str) -> int:
    return SERIES_METRICS.index(metric) if metric in SERIES_METRICS else len(SERIES_METRICS)


def _describe(metric: str, verdict: Verdict) -> str:
    observed, expected = f"{verdict.observed:.4g}", f"{verdict.expected:.4g}"
    return f"{metric} {verdict.kind} {observed} vs {expected} (score {verdict.score:.3f})"


def alert_id(series: SeriesKey, opened_minute_ms: int) -> str:
    """Deterministic: the same series opening in the same minute always gets the same id."""
    return hashlib.sha256(f"{series.text}|{opened_minute_ms}".encode()).hexdigest()[:20]


def alert_record(
    change: AlertChange, dashboard_base: str, runbook_base: str, policy_version: str | None = None
) -> dict[str, Any]:
    """The alerts-topic record (schemas/avro/alert_event.avsc) of a change, with its two links."""
    series = {
        "tenant": change.series.tenant_id,
        "channel": change.series.channel,
        "provider": change.series.provider,
    }
    # A global alert (tenant "*", e.g. ingest) preselects nothing: the dashboard opens on its default.
    query = urlencode(
        {
            **{k: v for k, v in series.items() if v and v != "*"},
            "range": "6h",  # the minutes before the alert, at minute resolution
        }
    )
    return {
        "alert_id": change.alert_id,
        "status": change.status,
        "tenant_id": change.series.tenant_id,
        "channel": change.series.channel,
        "provider": change.series.provider,
        "metric": change.metric,
        "kind": change.kind,
        "severity": change.severity,
        "observed": change.observed,
        "expected": change.expected,
        "score": change.score,
        "window_start": change.window_start_ms,
        "window_end": change.window_end_ms,
        "first_seen": change.first_seen_ms,
        "emitted_at": change.at_ms,
        "dashboard_url": f"{dashboard_base.rstrip('/')}/dashboard?{query}",
        "runbook_url": runbook_url(change.runbook_key, runbook_base),
        "policy_version": policy_version,
        "detail": change.detail or None,
    }


def sla_alert_record(
    *,
    alert_id: str,
    status: Status,
    tenant: str,
    channel: str,
    cause: str,
    good_ratio: float,
    target: float,
    burn: float,
    factor: float,
    opened_ms: int,
    at_ms: int,
    detail: str,
    links: tuple[str, str],
    policy_version: str,
) -> dict[str, Any]:
    """The alerts-topic record of an SLA breach (a page burn-rate rule firing) of one tenant's channel
    objective. ``provider`` is the provider that caused it ('' when none stands out): the dispatch
    agents route that tenant's traffic around it until the RESOLVED record."""
    dashboard_base, runbook_base = links
    query = urlencode({"tenant": tenant, "channel": channel.upper(), "range": "6h"})
    return {
        "alert_id": alert_id,
        "status": status,
        "tenant_id": tenant,
        "channel": channel.upper(),
        "provider": cause,
        "metric": f"sla.{channel.lower()}",
        "kind": "breach",
        "severity": "critical",
        "observed": good_ratio,
        "expected": target,
        "score": min(1.0, burn / (2 * factor)) if factor else 1.0,
        "window_start": opened_ms,
        "window_end": at_ms,
        "first_seen": opened_ms,
        "emitted_at": at_ms,
        "dashboard_url": f"{dashboard_base.rstrip('/')}/dashboard?{query}",
        "runbook_url": runbook_url("sla.breach", runbook_base),
        "policy_version": policy_version,
        "detail": detail,
    }
