"""Dispatch decisions as lifecycle events, a send ledger and failover retries. Pure and picklable.

The dispatch agent hands each ``DispatchRequested`` record (schemas/avro/dispatch_requested.avsc) to
:meth:`Dispatcher.decide` and each provider answer to :meth:`Dispatcher.outcome`; both return a
:class:`Step`: the lifecycle events to emit (in order) and at most one :class:`Attempt` to make.
Policy lives in :func:`policies.limits.evaluate_dispatch` (suppress, defer, route; rate limits,
budgets and circuit breakers); this module turns its decisions into the contract's events and keeps
the promises around them:

* **Once per request.** The ledger remembers every request id with its status; a redelivered
  request (a producer retry, a replay after a crash) yields nothing new unless it is still
  deferred, when it is decided again.
* **Exactly one failover retry.** A retryable failure (timeout, 5xx, throttled, unavailable) of the
  first attempt is retried once on the next provider the policy routes to, with the same
  idempotency key (the notification id): a provider that honours the key sends once even when the
  first one did accept after a timeout. A second failure is final.
* **Breakers learn from outcomes.** Every result feeds the provider's circuit breaker, so a
  provider that fails opens and the next decisions route around it (failover), and a recovered one
  is probed and closed again (failback, with the breaker's hysteresis).

Event ids are deterministic in the request id and the step (``<request>.dispatched.1``), so
emitting a step twice is de-duplicated by ingest.

>>> from policies.loader import load_policy
>>> from providers.base import SendResult
>>> d = Dispatcher(load_policy("policies/examples/guardrails.yaml"))
>>> step = d.decide(example_request(), now_ms=1_767_283_200_000)  # 2026-01-01 16:00 UTC
>>> [e["event_type"] for e in step.events], step.attempt.provider
(['REQUESTED', 'DISPATCHED'], 'sms-primary')
>>> down = SendResult("sms-primary", False, None, "unavailable", True, 3, "connection refused")
>>> retry = d.outcome(step.attempt, down, now_ms=1_767_283_200_050)
>>> [e["event_type"] for e in retry.events], retry.attempt.provider, retry.attempt.failover
(['FAILED', 'DISPATCHED'], 'sms-secondary', True)
>>> d.decide(example_request(), now_ms=1_767_283_201_000).events  # a redelivered request
[]
"""

from __future__ import annotations

import hashlib
import pickle
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode

from analytics.runbooks import runbook_url
from experiments.definitions import LoadedExperiments, exposure
from policies.breaker import BreakerTransition
from policies.engagement import EngagementProfile
from policies.limits import BudgetAlert, Decision, DispatchRequest, DispatchState, evaluate_dispatch
from policies.loader import LoadedPolicy
from policies.models import Priority
from policies.segments import Segment
from providers.base import SendResult

SOURCE = "herald-dispatch"
STATE_FORMAT = b"herald-dispatch-v1:"
MAX_ATTEMPTS = 2  # the first send and one failover retry
_PRIORITY: dict[str, Priority] = {"CRITICAL": "critical", "HIGH": "normal", "NORMAL": "normal", "LOW": "bulk"}
Status = Literal["deferred", "suppressed", "sending", "sent", "failed"]
Receipt = Literal["none", "pending", "delivered", "failed", "expired"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One send to make: the agent calls the provider's adapter and reports back to ``outcome``."""

    request_id: str
    provider: str
    number: int  # 1 = first send, 2 = the failover retry
    failover: bool
    dispatched_ms: int


@dataclass(frozen=True, slots=True)
class Step:
    events: list[dict[str, Any]] = field(default_factory=list)
    attempt: Attempt | None = None
    defer_until_ms: int | None = None  # deferred: decide this request again at (or after) this time
    decision: Decision | None = None


@dataclass(slots=True)
class _Entry:
    record: dict[str, Any]
    status: Status
    attempts: int = 0
    tried: tuple[str, ...] = ()
    message_id: str | None = None  # the provider's id of the accepted send
    sent_ms: int = 0
    receipt: Receipt = "none"


class Dispatcher:
    """The decisions of one partition's requests (requests are keyed by tenant, so a tenant's rate
    and budget state lives in exactly one place)."""

    def __init__(self, loaded: LoadedPolicy, state: DispatchState | None = None) -> None:
        self.loaded = loaded
        self.state = state or DispatchState()
        self.ledger: dict[str, _Entry] = {}
        self.experiments: LoadedExperiments | None = None
        self.segments: Mapping[str, Segment] = {}

    def use_experiments(self, experiments: LoadedExperiments | None, segments: Mapping[str, Segment]) -> None:
        """Assign routed requests to the running experiments on their tenant and template."""
        self.experiments, self.segments = experiments, segments

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("experiments", "segments")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.experiments, self.segments = None, {}

    def needs_profile(self, record: Mapping[str, Any], now_ms: int) -> bool:
        """Whether a running experiment on this request's tenant and template targets a segment
        that reads the engagement history (then pass the recipient's profile to :meth:`decide`)."""
        if self.experiments is None:
            return False
        return any(
            d.tenant == record["tenant_id"] and d.template == record.get("template_id")
            and d.segment is not None and d.running_at(now_ms)
            and (segment := self.segments.get(d.segment)) is not None and segment.reads_engagement
            for d in self.experiments.definitions.values()
        )  # fmt: skip

    def _expose(self, record: dict[str, Any], now_ms: int, profile: EngagementProfile | None) -> None:
        """The exposure: the first running experiment on this tenant and template that the recipient is
        in sets the variant's template version and names experiment and variant on the record, so the
        DISPATCHED event (and every later one) carries them. Sticky: assignment depends only on the
        experiment's allocation and the recipient id."""
        if self.experiments is None or record.get("experiment_id"):
            return
        found = exposure(
            self.experiments, self.segments, record["tenant_id"], str(record.get("template_id")),
            record["recipient"], now_ms, profile,
        )  # fmt: skip
        if found is not None:
            defn, spec = found
            record.update(experiment_id=defn.id, variant=spec.name, template_version=spec.template_version)

    def use_policy(self, loaded: LoadedPolicy) -> None:
        """A new policy version: decisions from now on carry it; counters and breakers carry over."""
        self.loaded = loaded

    def avoid(self, channel: str, provider: str, why: str) -> None:
        """Route this tenant's ``channel`` traffic around ``provider`` while another can take it."""
        self.state.avoid[f"{channel.lower()}:{provider}"] = why

    def unavoid(self, channel: str, provider: str) -> None:
        self.state.avoid.pop(f"{channel.lower()}:{provider}", None)

    def status(self, request_id: str) -> Status | None:
        entry = self.ledger.get(request_id)
        return entry.status if entry else None

    def decide(
        self,
        record: Mapping[str, Any],
        now_ms: int,
        *,
        unsubscribed: bool = False,
        profile: EngagementProfile | None = None,
    ) -> Step:
        """Decide a request (new, or deferred earlier); a request already decided gives no step.
        ``profile`` is the recipient's engagement, for experiment segments that read it."""
        request_id = str(record["request_id"])
        entry = self.ledger.get(request_id)
        if entry is not None and entry.status != "deferred":
            return Step()
        events = [] if entry is not None else [_event(record, "REQUESTED", now_ms, f"{request_id}.requested")]
        if entry is None:
            entry = self.ledger[request_id] = _Entry(dict(record), "deferred")
        not_after = _ms(record.get("not_after"))
        if not_after is not None and now_ms > not_after:
            entry.status = "suppressed"
            events.append(
                _event(record, "SUPPRESSED", now_ms, f"{request_id}.suppressed", reason="expired",
                       policy_version=self.loaded.version)
            )  # fmt: skip
            return Step(events)
        decision = evaluate_dispatch(_request(record, unsubscribed), self.loaded, self.state, now_ms / 1000)
        if decision.action == "suppress":
            entry.status = "suppressed"
            events.append(
                _event(record, "SUPPRESSED", now_ms, f"{request_id}.suppressed", reason=decision.reason,
                       policy_version=decision.policy_version)
            )  # fmt: skip
            return Step(events, decision=decision)
        if decision.action == "defer":
            assert decision.defer_until is not None
            return Step(events, defer_until_ms=int(decision.defer_until * 1000), decision=decision)
        assert decision.provider is not None
        self._expose(entry.record, now_ms, profile)
        attempt = self._dispatch(entry, decision.provider, decision.failover, now_ms)
        events.append(self._dispatched(entry, attempt, decision.reason, decision.policy_version))
        return Step(events, attempt, decision=decision)

    def outcome(self, attempt: Attempt, result: SendResult, now_ms: int, *, receipts: bool = False) -> Step:
        """Record a provider's answer: SENT, or FAILED and possibly the one failover retry.
        ``receipts``: the provider reports delivery later (see :meth:`receipt`)."""
        entry = self.ledger.get(attempt.request_id)
        if entry is None or entry.status != "sending" or entry.attempts != attempt.number:
            return Step()  # a late answer to an attempt already settled
        record, request_id = entry.record, attempt.request_id
        channel = str(record["channel"]).lower()
        breaker = self.state.breakers.get(f"{channel}:{attempt.provider}")
        now = now_ms / 1000
        latency = max(0, now_ms - attempt.dispatched_ms)
        price = self.loaded.policy.price(channel, attempt.provider)
        if result.accepted:
            if breaker is not None:
                breaker.record_success(now, latency)
            entry.status = "sent"
            entry.message_id, entry.sent_ms = result.provider_message_id, now_ms
            entry.receipt = "pending" if receipts and result.provider_message_id else "none"
            sent = _event(
                record, "SENT", now_ms, f"{request_id}.sent", provider=attempt.provider, latency_ms=latency,
                cost_micros=price.price_micros, currency=price.currency,
            )  # fmt: skip
            return Step([sent])
        if breaker is not None:
            breaker.record_failure(now, result.error_class or "error")
        failed = _event(
            record, "FAILED", now_ms, f"{request_id}.failed.{attempt.number}", provider=attempt.provider,
            latency_ms=latency, error=result.error_record(),
        )  # fmt: skip
        if not result.retryable or entry.attempts >= MAX_ATTEMPTS:
            entry.status = "failed"
            return Step([failed])
        retry = self._failover(entry, record, now_ms)
        if retry is None:
            entry.status = "failed"
            return Step([failed])
        attempt2, decision = retry
        dispatched = self._dispatched(entry, attempt2, "routed.retry_failover", decision.policy_version)
        return Step([failed, dispatched], attempt2, decision=decision)

    def receipt(self, request_id: str, delivered: bool, now_ms: int, detail: str = "") -> Step:
        """The provider's delivery receipt of a sent request: DELIVERED (latency since the send) or
        FAILED (refused by the carrier after the send), both carrying ``sent_at``. Once per request."""
        entry = self.ledger.get(request_id)
        if entry is None or entry.receipt != "pending":
            return Step()
        entry.receipt = "delivered" if delivered else "failed"
        provider = entry.tried[-1] if entry.tried else None
        sent_at = datetime.fromtimestamp(entry.sent_ms / 1000, UTC)
        latency = max(0, now_ms - entry.sent_ms)
        if delivered:
            event = _event(entry.record, "DELIVERED", now_ms, f"{request_id}.delivered", provider=provider,
                           latency_ms=latency, sent_at=sent_at)  # fmt: skip
        else:
            error = {"error_class": "rejected", "code": None, "message": detail or "delivery failed",
                     "retryable": False}  # fmt: skip
            event = _event(entry.record, "FAILED", now_ms, f"{request_id}.failed.receipt", provider=provider,
                           latency_ms=latency, sent_at=sent_at, error=error)  # fmt: skip
        return Step([event])

    def receipt_expired(self, request_id: str) -> None:
        """No receipt came within the agent's patience: stop asking (no event: unknown outcome)."""
        entry = self.ledger.get(request_id)
        if entry is not None and entry.receipt == "pending":
            entry.receipt = "expired"

    def pending_receipts_of(self, request_id: str) -> tuple[str, str, int] | None:
        """(provider, provider message id, sent at ms) of one send awaiting its receipt, else None."""
        e = self.ledger.get(request_id)
        if e is None or e.receipt != "pending" or not e.message_id or not e.tried:
            return None
        return e.tried[-1], e.message_id, e.sent_ms

    def pending_receipts(self) -> list[tuple[str, str, str, int]]:
        """(request id, provider, provider message id, sent at ms) of sends awaiting a receipt."""
        return [
            (k, e.tried[-1], e.message_id, e.sent_ms)
            for k, e in self.ledger.items()
            if e.receipt == "pending" and e.message_id and e.tried
        ]

    def _failover(
        self, entry: _Entry, record: Mapping[str, Any], now_ms: int
    ) -> tuple[Attempt, Decision] | None:
        """The retry on the next provider of the request's order not tried yet whose breaker lets it
        through (taking a probe slot if half-open). The retry is the same message, not a new one:
        it is not counted against rate limits or budgets again."""
        channel = str(record["channel"]).lower()
        providers = self.loaded.policy.providers_for(str(record["tenant_id"]), channel)
        remaining = [p for p in providers if p not in entry.tried]
        breakers = [self.state.breakers.get(f"{channel}:{p}") for p in remaining]
        usable = [
            p for p, b in zip(remaining, breakers, strict=True) if b is None or b.allow_request(now_ms / 1000)
        ]
        if not usable:
            return None
        provider = usable[0]
        decision = Decision(
            "route", "routed.retry_failover", self.loaded.version, provider=provider, failover=True,
            detail=f"after {entry.tried[-1]} failed",
        )  # fmt: skip
        return self._dispatch(entry, provider, True, now_ms), decision

    def _dispatch(self, entry: _Entry, provider: str, failover: bool, now_ms: int) -> Attempt:
        entry.status = "sending"
        entry.attempts += 1
        entry.tried = (*entry.tried, provider)
        return Attempt(str(entry.record["request_id"]), provider, entry.attempts, failover, now_ms)

    def _dispatched(self, entry: _Entry, attempt: Attempt, reason: str, version: str) -> dict[str, Any]:
        return _event(
            entry.record, "DISPATCHED", attempt.dispatched_ms,
            f"{attempt.request_id}.dispatched.{attempt.number}", provider=attempt.provider,
            reason=reason, policy_version=version,
        )  # fmt: skip

    # -- persistence: what a restart must not forget (breakers are each worker's own view) -------
    def snapshot(self) -> bytes:
        """Counters, budgets and the ledger; settled entries keep their status only."""
        ledger = {
            key: (
                e.status, e.attempts, e.tried,
                e.record if e.status in ("deferred", "sending") or e.receipt == "pending" else None,
                e.message_id, e.sent_ms, e.receipt,
            )
            for key, e in self.ledger.items()
        }  # fmt: skip
        state = (self.state.rates, self.state.budgets, ledger, self.state.avoid)
        return STATE_FORMAT + zlib.compress(pickle.dumps(state), 3)

    @classmethod
    def restore(cls, loaded: LoadedPolicy, data: bytes, breakers: dict[str, Any] | None = None) -> Dispatcher:
        """The dispatcher a snapshot describes, sharing ``breakers`` (the worker's) if given."""
        if not data.startswith(STATE_FORMAT):
            raise ValueError("not a dispatcher snapshot")
        rates, budgets, ledger, avoid = pickle.loads(
            zlib.decompress(data[len(STATE_FORMAT) :])
        )  # our own topic
        dispatcher = cls(
            loaded, DispatchState(rates, budgets, breakers if breakers is not None else {}, avoid)
        )
        for key, (status, attempts, tried, record, message_id, sent_ms, receipt) in ledger.items():
            entry = _Entry(
                record or {"request_id": key}, status, attempts, tuple(tried), message_id, sent_ms, receipt
            )
            dispatcher.ledger[key] = entry
        return dispatcher

    def unfinished(self) -> list[tuple[str, Status, dict[str, Any]]]:
        """(request id, status, record) of every deferred request and every send without an answer."""
        return [
            (k, e.status, e.record) for k, e in self.ledger.items() if e.status in ("deferred", "sending")
        ]

    def resume(self, request_id: str, now_ms: int) -> Attempt | None:
        """After a restart, the send that was in flight, again: same provider, same attempt number and
        idempotency key (a provider that honours the key does not send twice)."""
        entry = self.ledger.get(request_id)
        if entry is None or entry.status != "sending" or not entry.tried:
            return None
        return Attempt(request_id, entry.tried[-1], entry.attempts, entry.attempts > 1, now_ms)

    def forget_settled(self, keep: int) -> int:
        """Drop the oldest settled requests beyond ``keep`` entries (bounded memory); returns how many.
        Redeliveries older than that are no longer recognised (the ingest dedup still drops their
        events)."""
        settled = [
            k
            for k, e in self.ledger.items()
            if e.status in ("sent", "failed", "suppressed") and e.receipt != "pending"
        ]
        excess = max(0, len(self.ledger) - keep)
        for key in settled[:excess]:
            del self.ledger[key]
        return min(excess, len(settled))


def _request(record: Mapping[str, Any], unsubscribed: bool) -> DispatchRequest:
    return DispatchRequest(
        tenant=str(record["tenant_id"]),
        channel=str(record["channel"]),
        recipient_id=str(record["recipient"]["id"]),
        campaign_id=record.get("campaign_id"),
        unsubscribed=unsubscribed,
        priority=_PRIORITY.get(str(record.get("priority") or "NORMAL"), "normal"),
    )


def _event(
    record: Mapping[str, Any], event_type: str, at_ms: int, event_id: str, **fields: Any
) -> dict[str, Any]:
    """A lifecycle event (schemas/avro/lifecycle_event.avsc) of the request's notification."""
    recipient = record["recipient"]
    return {
        "event_id": event_id,
        "event_type": event_type,
        "occurred_at": datetime.fromtimestamp(at_ms / 1000, UTC),
        "tenant_id": record["tenant_id"],
        "notification_id": record["notification_id"],
        "channel": record["channel"],
        "provider": fields.pop("provider", None),
        "template_id": record.get("template_id"),
        "template_version": record.get("template_version"),
        "campaign_id": record.get("campaign_id"),
        "campaign_step": record.get("campaign_step"),
        "experiment_id": record.get("experiment_id"),
        "variant": record.get("variant"),
        "recipient": {k: recipient.get(k) for k in ("id", "kind", "tier", "role", "language", "country")},
        "latency_ms": None,
        "cost_micros": None,
        "currency": None,
        "error": None,
        "reason": None,
        "policy_version": None,
        "source": SOURCE,
        "sent_at": None,
        **fields,
    }


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


def example_request(**overrides: Any) -> dict[str, Any]:
    """A valid DispatchRequested record (for examples and tests)."""
    record: dict[str, Any] = {
        "request_id": "req-1",
        "requested_at": datetime(2026, 1, 1, 10, tzinfo=UTC),
        "tenant_id": "acme-home",
        "notification_id": "n-req-1",
        "channel": "SMS",
        "recipient": {
            "id": "r-1",
            "kind": "CUSTOMER",
            "tier": "gold",
            "role": None,
            "language": "en",
            "country": "US",
            "address_ref": "dir:r-1",
        },
        "template_id": "visit-reminder",
        "template_version": 3,
        "campaign_id": "spring-tuneup",
        "campaign_step": 1,
        "priority": "NORMAL",
        "not_after": None,
        "source": "scheduler",
    }
    return {**record, **overrides}


def switch_alert(
    transition: BreakerTransition,
    alert_id: str,
    opened_at_ms: int,
    links: tuple[str, str],
    policy_version: str,
) -> dict[str, Any]:
    """The alerts-topic record (schemas/avro/alert_event.avsc) of a provider switch: OPENED when a
    provider's breaker opens (traffic fails over), RESOLVED when it closes again (failback). Breakers
    are a worker's view of a provider for every tenant, so the alert's tenant is ``*``."""
    dashboard_base, runbook_base = links
    at_ms = int(transition.at * 1000)
    opened = transition.to_state == "open"
    channel = transition.channel.upper()
    query = urlencode({"channel": channel, "provider": transition.provider})
    return {
        "alert_id": alert_id,
        "status": "OPENED" if opened else "RESOLVED",
        "tenant_id": "*",
        "channel": channel,
        "provider": transition.provider,
        "metric": "provider_health",
        "kind": "outage",
        "severity": "critical",
        "observed": transition.error_rate,
        "expected": 0.0,
        "score": 1.0,
        "window_start": opened_at_ms,
        "window_end": at_ms,
        "first_seen": opened_at_ms,
        "emitted_at": at_ms,
        "dashboard_url": f"{dashboard_base.rstrip('/')}/dashboard?{query}",
        "runbook_url": runbook_url("provider.outage", runbook_base),
        "policy_version": policy_version,
        "detail": f"{transition.from_state} -> {transition.to_state}: {transition.reason}",
    }


def budget_alert(
    tenant: str, scope: str, alert: BudgetAlert, at_ms: int, links: tuple[str, str], policy_version: str
) -> dict[str, Any]:
    """The alerts-topic record of a budget threshold crossed (80 %: a warning; 100 %: the scope is
    paused and further requests are suppressed). One per scope, dimension, threshold and period."""
    dashboard_base, runbook_base = links
    exhausted = alert.threshold >= 1.0
    key = f"{tenant}|{scope}|{alert.dimension}|{alert.threshold}|{at_ms // 86_400_000}"
    return {
        "alert_id": hashlib.sha256(key.encode()).hexdigest()[:20],
        "status": "OPENED",
        "tenant_id": tenant,
        "channel": "",
        "provider": "",
        "metric": f"budget.{alert.dimension}",
        "kind": "exhausted" if exhausted else "threshold",
        "severity": "critical" if exhausted else "major",
        "observed": float(alert.used),
        "expected": float(alert.limit),
        "score": min(1.0, alert.used / alert.limit) if alert.limit else 1.0,
        "window_start": at_ms,
        "window_end": at_ms,
        "first_seen": at_ms,
        "emitted_at": at_ms,
        "dashboard_url": f"{dashboard_base.rstrip('/')}/dashboard?{urlencode({'tenant': tenant})}",
        "runbook_url": runbook_url("budget.exhausted", runbook_base),
        "policy_version": policy_version,
        "detail": f"{scope} used {alert.used} of {alert.limit} {alert.dimension} ({alert.threshold:.0%})"
        + ("; paused: further requests are suppressed" if exhausted else ""),
    }
