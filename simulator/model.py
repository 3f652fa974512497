"""Seeded generator of realistic multi-tenant notification lifecycle traffic. Pure.

No Kafka, clock, environment or global random state: every draw comes from one
``random.Random(seed)``, so the same (model, start, rate, duration, seed, scenario) always yields
the same events, ids included. Configuration lives in frozen dataclasses; ``DEFAULT_MODEL`` is a
home-services platform with four tenants of very different volume (one tiny).

Arrivals and ordering: notification ``i`` is requested at ``start + i / rate_per_s`` (a fixed
arrival rate). Each notification's events are yielded together, in causal order, which is also
occurred_at order. Across notifications occurred_at is only roughly ordered (an open minutes
later comes out before the next REQUESTED); ``in_time_order`` re-sorts a stream when that
matters. Every delay is capped (2 h by default), so no event lies more than ~10 h after its
REQUESTED: well inside the contract's one-day limit on future timestamps.

Lifecycle: REQUESTED, then SUPPRESSED (with a ``reason``) or DISPATCHED; then one terminal outcome:
SENT + DELIVERED, SENT + BOUNCED, or FAILED. A send-time failure (provider_5xx, timeout,
throttled) has no SENT; a receipt-time one (rejected) comes after SENT. Delivered messages may
then be OPENED (+ CLICKED), REPLIED (SMS; mostly technicians), UNSUBSCRIBED or COMPLAINED
(customers). ``latency_ms`` is the time since the previous step as the schema documents it:
requested->sent on SENT (and on send-time FAILED), sent->receipt on DELIVERED/BOUNCED/FAILED,
delivered->opened/replied on OPENED/REPLIED, opened->clicked on CLICKED; None elsewhere.
``cost_micros`` (USD) is on SENT. ``sent_at`` (the SENT event's occurred_at) is on every event that
follows up on the send: DELIVERED, BOUNCED, OPENED, CLICKED, REPLIED, UNSUBSCRIBED, COMPLAINED (not on
a receipt-time FAILED, which the contract does not list); None elsewhere. Ids are derived from a run
tag (hash of seed and start) and counters: ``n-<tag>-<i>`` and ``e-<tag>-<i>-<step>``, so a rerun of
the same call repeats its ids (idempotent replay) while another seed or start gives new ones.

>>> from datetime import datetime, timezone
>>> start = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> events = list(generate(DEFAULT_MODEL, start, rate_per_s=10, duration_s=1, seed=7))
>>> events[0]["event_type"], notification_count(10, 1)
('REQUESTED', 10)
>>> events == list(generate(DEFAULT_MODEL, start, rate_per_s=10, duration_s=1, seed=7))
True
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from bisect import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any, NamedTuple, Protocol, TypeVar

from experiments.definitions import LoadedExperiments, exposure
from herald.errors import ConfigError
from policies.segments import Segment
from simulator.profiles import (
    DEFAULT_MODEL,
    Campaign,
    ChannelProfile,
    Experiment,
    Funnel,
    LogNormal,
    Provider,
    Template,
    Tenant,
    TrafficModel,
    Weighted,
)

ExperimentSet = tuple[LoadedExperiments, dict[str, Segment]]  # definitions and the segments they target

__all__ = [
    "DEFAULT_MODEL",
    "Campaign",
    "ChannelProfile",
    "Conditions",
    "Effect",
    "Experiment",
    "Funnel",
    "LogNormal",
    "Notification",
    "Provider",
    "Template",
    "Tenant",
    "TrafficModel",
    "generate",
    "generate_notifications",
    "in_time_order",
    "notification_count",
]

T = TypeVar("T")
Event = dict[str, Any]
Table = tuple[list[T], list[float], float]  # items, cumulative weights (last = inf), total weight

SEND_TIME_ERRORS = frozenset({"provider_5xx", "timeout", "throttled"})
ERRORS: dict[str, tuple[str | None, str, bool]] = {  # error_class -> (code, message, retryable)
    "provider_5xx": ("503", "provider returned 503 Service Unavailable", True),
    "timeout": (None, "no response from provider within 10s", True),
    "throttled": ("429", "provider rate limit exceeded", True),
    "rejected": ("554", "rejected by carrier or spam filter", False),
    "invalid_recipient": ("550", "recipient address or token does not exist", False),
    "mailbox_full": ("552", "recipient mailbox full", True),
}
OUTAGE_ERRORS: Weighted[str] = (("provider_5xx", 0.7), ("timeout", 0.3))
TIMEOUT_MS = 10_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Effect:
    """How a scenario bends the funnel for one notification (see simulator.scenarios)."""

    outage: bool = False  # every dispatch fails at send time (provider_5xx / timeout)
    delivered_factor: float = 1.0  # multiplies P(DELIVERED); the lost share fails after SENT as rejected
    latency_factor: float = 1.0  # multiplies requested->sent and sent->receipt delays


class Conditions(Protocol):
    """What the generator asks a scenario, once per dispatched notification."""

    def effect_at(self, offset_s: float, tenant_id: str, channel: str, provider: str) -> Effect | None: ...


class Notification(NamedTuple):
    offset_s: float  # requested at start + offset_s
    events: list[Event]


def notification_count(rate_per_s: float, duration_s: float) -> int:
    """Notifications requested in [0, duration_s) at a fixed arrival rate.

    >>> notification_count(200, 2.5), notification_count(3, 0.1)
    (500, 1)
    """
    return max(0, math.ceil(rate_per_s * duration_s - 1e-9))


def generate(
    model: TrafficModel,
    start: datetime,
    rate_per_s: float,
    duration_s: float,
    seed: int,
    *,
    scenario: Conditions | None = None,
    experiments: ExperimentSet | None = None,
) -> Iterator[Event]:
    """Events of ``generate_notifications``, flattened (a notification's events stay together)."""
    for notification in generate_notifications(
        model, start, rate_per_s, duration_s, seed, scenario=scenario, experiments=experiments
    ):
        yield from notification.events


def generate_notifications(
    model: TrafficModel,
    start: datetime,
    rate_per_s: float,
    duration_s: float,
    seed: int,
    *,
    scenario: Conditions | None = None,
    experiments: ExperimentSet | None = None,
) -> Iterator[Notification]:
    """Notifications requested in [start, start + duration_s) at ``rate_per_s``; math.inf = endless.
    ``experiments`` (loaded definitions and their segments) assigns exposures as dispatch does."""
    if start.tzinfo is None:
        raise ConfigError("start must be a timezone-aware datetime")
    if not rate_per_s > 0:
        raise ConfigError(f"rate_per_s must be positive, got {rate_per_s}")
    start_ms = (start - _EPOCH) // timedelta(milliseconds=1)
    generator = _Generator(model, seed, start_ms, scenario, experiments)
    total = math.inf if math.isinf(duration_s) else notification_count(rate_per_s, duration_s)
    i = 0
    while i < total:
        offset_s = i / rate_per_s
        yield Notification(offset_s, generator.notification(i, offset_s, start_ms + round(offset_s * 1000)))
        i += 1


def in_time_order(notifications: Iterable[Notification]) -> Iterator[Event]:
    """Merge notifications into strict occurred_at order (later steps wait in a heap).

    >>> from datetime import datetime, timezone
    >>> start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> notifications = generate_notifications(DEFAULT_MODEL, start, 50, 2, seed=1)
    >>> times = [e["occurred_at"] for e in in_time_order(notifications)]
    >>> times == sorted(times)
    True
    """
    heap: list[tuple[datetime, int, Event]] = []
    seq = 0
    for notification in notifications:
        first = notification.events[0]["occurred_at"]
        while heap and heap[0][0] <= first:
            yield heapq.heappop(heap)[2]
        for event in notification.events:
            heapq.heappush(heap, (event["occurred_at"], seq, event))
            seq += 1
    while heap:
        yield heapq.heappop(heap)[2]


def _table(weighted: Weighted[T]) -> Table[T]:
    cum = list(accumulate(w for _, w in weighted))
    return [item for item, _ in weighted], [*cum[:-1], math.inf], cum[-1]


def _pick(table: Table[T], u: float) -> T:
    """The item whose cumulative-weight slot holds ``u`` in [0, 1) (inf last: never out of range)."""
    return table[0][bisect(table[1], u * table[2])]


def _error(error_class: str) -> dict[str, Any]:
    code, message, retryable = ERRORS.get(error_class, (None, error_class, False))
    return {"error_class": error_class, "code": code, "message": message, "retryable": retryable}


class _Lifecycle:
    """The events of one notification: copies of a shared envelope plus per-step fields."""

    __slots__ = ("base", "events", "kind", "open_factor", "prefix")

    def __init__(self, base: Event, prefix: str, kind: str, open_factor: float) -> None:
        self.base, self.prefix, self.kind, self.open_factor = base, prefix, kind, open_factor
        self.events: list[Event] = []

    def add(self, event_type: str, at_ms: int, **fields: Any) -> None:
        event = self.base.copy()
        event["event_id"] = self.prefix + str(len(self.events))
        event["event_type"] = event_type
        event["occurred_at"] = datetime.fromtimestamp(at_ms / 1000, UTC)  # exact: float error < 0.5 us
        if fields:
            event.update(fields)
        self.events.append(event)


class _Generator:
    """The model compiled into flat pick tables, plus the one seeded random stream."""

    def __init__(
        self,
        model: TrafficModel,
        seed: int,
        start_ms: int,
        scenario: Conditions | None,
        experiments: ExperimentSet | None = None,
    ) -> None:
        self.model, self.scenario, self.definitions = model, scenario, experiments
        # The true effect of each variant on the open rate, by (experiment id, variant name).
        self.effects = {(e.experiment_id, v): f for e in model.experiments for v, f in e.variants}
        self.rng = random.Random(seed)
        self.tag = hashlib.blake2b(f"{seed}:{start_ms}".encode(), digest_size=5).hexdigest()
        self.tenants = _table(tuple((t, t.volume) for t in model.tenants))
        self.channels = {
            "CUSTOMER": _table(model.customer_channels),
            "TECHNICIAN": _table(model.technician_channels),
        }
        self.profiles = {p.channel: p for p in model.channels}
        self.providers = {
            p.channel: _table(tuple((v, v.weight) for v in p.providers)) for p in model.channels
        }
        self.fail_classes = {v.name: _table(v.fail_classes) for p in model.channels for v in p.providers}
        self.bounce_classes = {v.name: _table(v.bounce_classes) for p in model.channels for v in p.providers}
        self.reasons, self.outage_errors = _table(model.suppress_reasons), _table(OUTAGE_ERRORS)
        by_id = {t.template_id: t for t in model.templates}
        marketing = {c.template_id for c in model.campaigns}
        self.templates: dict[tuple[str, str], Table[Template]] = {}
        for kind in ("CUSTOMER", "TECHNICIAN"):
            for channel in self.profiles:
                pool = tuple((t, t.weight) for t in model.templates if (t.kind, t.channel) == (kind, channel))
                if pool := tuple(tw for tw in pool if tw[0].template_id not in marketing):
                    self.templates[(kind, channel)] = _table(pool)
        self.campaigns: dict[str, list[tuple[Campaign, Template]]] = {}
        for campaign in model.campaigns:
            template = by_id[campaign.template_id]
            self.campaigns.setdefault(template.channel, []).append((campaign, template))
        self.experiments = {e.template_id: e for e in model.experiments}
        self.recipients: dict[tuple[str, str, int], tuple[dict[str, Any], int]] = {}
        self.attributes = {
            t.tenant_id: (_table(t.locales), _table(t.tiers), _table(t.roles)) for t in model.tenants
        }

    def delay(self, dist: LogNormal, factor: float = 1.0) -> int:
        """A delay in whole ms, at least 1, so every step lies strictly after the one before."""
        return (
            int(min(dist.median_ms * math.exp(dist.sigma * self.rng.gauss(0.0, 1.0)) * factor, dist.cap_ms))
            + 1
        )

    def recipient(self, tenant: Tenant, kind: str, index: int) -> tuple[dict[str, Any], int]:
        """Stable per tenant and independent of the seed: attributes come from a hash of the id."""
        key = (tenant.tenant_id, kind, index)
        found = self.recipients.get(key)
        if found is None:
            digest = hashlib.blake2b(f"{tenant.tenant_id}:{kind}:{index}".encode(), digest_size=16).digest()
            u1, u2 = (int.from_bytes(digest[i : i + 4], "big") / 2**32 for i in (6, 10))
            locales, tiers, roles = self.attributes[tenant.tenant_id]
            language, country = _pick(locales, u2)
            technician = kind == "TECHNICIAN"
            attributes = {
                "id": "r-" + digest[:6].hex(),
                "kind": kind,
                "tier": None if technician else _pick(tiers, u1),
                "role": _pick(roles, u1) if technician else None,
                "language": language,
                "country": country,
            }
            found = self.recipients[key] = (attributes, digest[14])
        return found

    def notification(self, i: int, offset_s: float, t0: int) -> list[Event]:
        """Choose who, what and how for notification ``i``, then play its lifecycle."""
        uniform = self.rng.random
        tenant = _pick(self.tenants, uniform())
        kind = "TECHNICIAN" if uniform() < tenant.technician_share else "CUSTOMER"
        pool = tenant.technicians if kind == "TECHNICIAN" else tenant.customers
        # squaring the uniform draw skews the pool: a few recipients get many notifications
        recipient, bucket = self.recipient(tenant, kind, int(pool * uniform() ** 2))
        channel = _pick(self.channels[kind], uniform())
        campaign: tuple[Campaign, Template] | None = None
        if kind == "CUSTOMER" and channel in self.campaigns:
            u, acc = uniform(), 0.0
            for candidate in self.campaigns[channel]:
                acc += candidate[0].share
                if u < acc:
                    campaign = candidate
                    break
        template = campaign[1] if campaign else _pick(self.templates[(kind, channel)], uniform())
        experiment_id, variant, version, open_factor = self.expose(tenant, template, recipient, bucket, t0)
        base: Event = {
            "tenant_id": tenant.tenant_id,
            "notification_id": f"n-{self.tag}-{i:x}",
            "channel": channel,
            "provider": None,
            "template_id": template.template_id,
            "template_version": version,
            "campaign_id": campaign[0].campaign_id if campaign else None,
            "campaign_step": 1 + int(uniform() * campaign[0].steps) if campaign else None,
            "experiment_id": experiment_id,
            "variant": variant,
            "recipient": dict(recipient),  # one copy per notification, shared by its events
            "latency_ms": None,
            "cost_micros": None,
            "currency": None,
            "error": None,
            "reason": None,
            "policy_version": None,
            "source": self.model.source,
            "sent_at": None,
        }
        life = _Lifecycle(base, f"e-{self.tag}-{i:x}-", kind, open_factor)
        self.play(life, self.profiles[channel], offset_s, t0)
        return life.events

    def expose(
        self, tenant: Tenant, template: Template, recipient: dict[str, Any], bucket: int, t0: int
    ) -> tuple[str | None, str | None, int, float]:
        """(experiment, variant, template version, open-rate factor) of one notification. With
        experiment definitions, exposure is what dispatch would decide (experiments.definitions.exposure:
        running window, layer, holdout, segment, sticky assignment) and the model's experiments only
        give the variants' true effects; without, the model's experiments split recipients by bucket."""
        if self.definitions is not None:
            found = exposure(*self.definitions, tenant.tenant_id, template.template_id, recipient, t0)
            if found is None:
                return None, None, template.version, 1.0
            defn, spec = found
            return defn.id, spec.name, spec.template_version, self.effects.get((defn.id, spec.name), 1.0)
        experiment = self.experiments.get(template.template_id)
        if experiment is None:
            return None, None, template.version, 1.0
        variant, factor = experiment.variants[bucket % len(experiment.variants)]
        return experiment.experiment_id, variant, template.version, factor

    def play(self, life: _Lifecycle, profile: ChannelProfile, offset_s: float, t0: int) -> None:
        uniform, model = self.rng.random, self.model
        life.add("REQUESTED", t0)
        if uniform() < profile.suppress:
            reason = _pick(self.reasons, uniform())
            life.add(
                "SUPPRESSED", t0 + 1 + int(uniform() * 30), reason=reason, policy_version=model.policy_version
            )
            return
        provider = _pick(self.providers[profile.channel], uniform())
        life.base["provider"] = provider.name
        effect = (
            self.scenario.effect_at(offset_s, life.base["tenant_id"], profile.channel, provider.name)
            if self.scenario
            else None
        )
        slow = effect.latency_factor if effect else 1.0
        to_sent = self.delay(provider.to_sent, slow)
        life.add(
            "DISPATCHED", t0 + to_sent // 10, reason="weighted_routing", policy_version=model.policy_version
        )
        error_class = self.outcome(provider, effect)
        if error_class in SEND_TIME_ERRORS:
            waited = to_sent + (TIMEOUT_MS if error_class == "timeout" else 0)
            life.add("FAILED", t0 + waited, latency_ms=waited, error=_error(error_class))
            return
        sent_at = t0 + to_sent
        life.add(
            "SENT", sent_at, latency_ms=to_sent, cost_micros=provider.cost_micros, currency=model.currency
        )
        sent = life.events[-1]["occurred_at"]  # the sent_at of every follow-up of this send
        to_receipt = self.delay(provider.to_receipt, slow)
        done = sent_at + to_receipt
        if error_class:
            outcome = "BOUNCED" if error_class.startswith("bounce:") else "FAILED"
            follow_up = {"sent_at": sent} if outcome == "BOUNCED" else {}
            error = _error(error_class.removeprefix("bounce:"))
            life.add(outcome, done, latency_ms=to_receipt, error=error, **follow_up)
            return
        life.add("DELIVERED", done, latency_ms=to_receipt, sent_at=sent)
        self.engage(life, profile, provider.funnel, done, sent)

    def outcome(self, provider: Provider, effect: Effect | None) -> str:
        """'' for delivered, 'bounce:<class>' for a bounce, else the failure's error class."""
        uniform, funnel = self.rng.random, provider.funnel
        if effect and effect.outage:
            return _pick(self.outage_errors, uniform())
        u = uniform()
        if u < funnel.delivered * (effect.delivered_factor if effect else 1.0):
            return ""
        if u < funnel.delivered:
            return "rejected"  # the share a delivery drop takes away fails after SENT
        if u < funnel.delivered + funnel.bounce:
            return "bounce:" + _pick(self.bounce_classes[provider.name], uniform())
        return _pick(self.fail_classes[provider.name], uniform())

    def engage(
        self, life: _Lifecycle, profile: ChannelProfile, funnel: Funnel, done: int, sent: datetime
    ) -> None:
        uniform, kind = self.rng.random, life.kind
        last, engaged = done, 0
        if uniform() < funnel.open * life.open_factor:
            to_open = self.delay(profile.to_opened)
            last, engaged = done + to_open, 1
            life.add("OPENED", last, latency_ms=to_open, sent_at=sent)
            if uniform() < funnel.click:
                to_click = self.delay(profile.to_clicked)
                last += to_click
                life.add("CLICKED", last, latency_ms=to_click, sent_at=sent)
        if uniform() < funnel.reply * (1.0 if kind == "TECHNICIAN" else self.model.customer_reply_factor):
            to_reply = self.delay(profile.to_replied)
            life.add("REPLIED", done + to_reply, latency_ms=to_reply, sent_at=sent)
            engaged += 1
        if kind == "CUSTOMER":
            if uniform() < funnel.unsubscribe:
                life.add("UNSUBSCRIBED", last + self.delay(profile.to_unsubscribed), sent_at=sent)
                engaged += 1
            if uniform() < funnel.complain:
                life.add("COMPLAINED", done + self.delay(profile.to_complained), sent_at=sent)
                engaged += 1
        if engaged > 1:  # independent engagement delays: restore occurred_at order (the sort is stable)
            life.events.sort(key=lambda e: e["occurred_at"])
