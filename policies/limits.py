"""Rate limits, budgets and the dispatch decision that combines them with quiet hours and routing.

State is small plain dataclasses (:class:`RateState`, :class:`BudgetState`) with ``to_dict`` /
``from_dict`` and ``merge``, meant to live in Faust tables keyed by campaign or tenant. Checks never
change state; :func:`evaluate_dispatch` commits rate counts, budget charges and breaker probes only
when it routes, so a deferred or suppressed message consumes nothing. Exactness is by construction:
a limit of R per fixed window admits R, and a budget of B admits B, never one more.

Days are UTC days; windows are aligned to the epoch (the minute window is [k*60, (k+1)*60)).

>>> from policies.models import RateLimit
>>> limiter, state = RateLimiter(RateLimit(per_second=2)), RateState()
>>> [limiter.acquire(state, 10.1), limiter.acquire(state, 10.5), limiter.acquire(state, 10.9)]
[Admit(), Admit(), Defer(until=11.0, window='per_second')]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from policies.breaker import CircuitBreaker, choose_provider
from policies.loader import LoadedPolicy
from policies.models import BudgetSpec, Channel, Priority, RateLimit, channel_of, quiet_until

__all__ = [
    "Admit",
    "Budget",
    "BudgetAlert",
    "BudgetDecision",
    "BudgetState",
    "Decision",
    "Defer",
    "DispatchRequest",
    "DispatchState",
    "RateLimiter",
    "RateState",
    "evaluate_dispatch",
]

_WINDOWS = (("per_second", 1), ("per_minute", 60), ("per_hour", 3600))


@dataclass(frozen=True, slots=True)
class Admit:
    """The message may go now."""


@dataclass(frozen=True, slots=True)
class Defer:
    """Not before ``until`` (epoch seconds): ``window`` is full."""

    until: float
    window: str


@dataclass(slots=True)
class RateState:
    """Counts of the current fixed windows: ``{"per_minute": [window_start, count], ...}``."""

    windows: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"windows": {k: list(v) for k, v in self.windows.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RateState:
        return cls({k: [int(v[0]), int(v[1])] for k, v in data.get("windows", {}).items()})

    def merge(self, other: RateState) -> RateState:
        """Counts of two partial states (e.g. two workers): the same window adds, a newer one wins."""
        out = RateState({k: list(v) for k, v in self.windows.items()})
        for key, (start, count) in other.windows.items():
            mine = out.windows.get(key)
            if mine is None or start > mine[0]:
                out.windows[key] = [start, count]
            elif start == mine[0]:
                mine[1] += count
        return out


class RateLimiter:
    """Fixed-window limits of one scope (a campaign or a tenant)."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit

    def check(self, state: RateState, now: float) -> Admit | Defer:
        """Admit if every window has room; else defer to the latest end among the full windows."""
        until: Defer | None = None
        for name, size in _WINDOWS:
            cap: int | None = getattr(self.limit, name)
            if cap is None:
                continue
            start = int(now // size) * size
            current = state.windows.get(name)
            used = current[1] if current is not None and current[0] == start else 0
            if used >= cap and (until is None or start + size > until.until):
                until = Defer(float(start + size), name)
        return until if until is not None else Admit()

    def commit(self, state: RateState, now: float) -> None:
        """Count one admitted message in every limited window."""
        for name, size in _WINDOWS:
            if getattr(self.limit, name) is None:
                continue
            start = int(now // size) * size
            current = state.windows.get(name)
            if current is not None and current[0] == start:
                current[1] += 1
            else:
                state.windows[name] = [start, 1]

    def acquire(self, state: RateState, now: float) -> Admit | Defer:
        """:meth:`check` and, when admitted, :meth:`commit`."""
        verdict = self.check(state, now)
        if isinstance(verdict, Admit):
            self.commit(state, now)
        return verdict


@dataclass(slots=True)
class BudgetState:
    """Usage of one budget scope: today's (UTC ``day``) and the running total; alerts already raised."""

    day: str = ""
    day_messages: int = 0
    day_micros: int = 0
    total_messages: int = 0
    total_micros: int = 0
    alerted: list[str] = field(default_factory=list)  # "messages_total@0.8", "money_per_day@1.0:<day>"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BudgetState:
        return cls(**{**data, "alerted": list(data.get("alerted", []))})

    def merge(self, other: BudgetState) -> BudgetState:
        """Totals add; today's counts add on the same day, else the later day wins."""
        if self.day == other.day:
            day, dm, du = self.day, self.day_messages + other.day_messages, self.day_micros + other.day_micros
        else:
            newer = max(self, other, key=lambda s: s.day)
            day, dm, du = newer.day, newer.day_messages, newer.day_micros
        alerted = sorted(set(self.alerted) | set(other.alerted))
        totals = (self.total_messages + other.total_messages, self.total_micros + other.total_micros)
        return BudgetState(day, dm, du, *totals, alerted)


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """``used`` reached ``threshold`` of ``limit`` on ``dimension`` (messages_per_day, money_total, ...)."""

    dimension: str
    threshold: float
    used: int
    limit: int


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    """Outcome of one charge: ``used``/``limit`` are of the most used dimension (or the refusing one)."""

    allowed: bool
    reason: str
    used: int
    limit: int | None
    paused: bool = False
    alerts: tuple[BudgetAlert, ...] = ()

    @property
    def crossed_thresholds(self) -> list[float]:
        return sorted({a.threshold for a in self.alerts})


def _utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).date().isoformat()


class Budget:
    """Message and money limits of one scope over a :class:`BudgetState`.

    >>> budget, state = Budget(BudgetSpec(messages_total=5)), BudgetState()
    >>> [budget.charge(state, 0.0, 0).crossed_thresholds for _ in range(5)]
    [[], [], [], [0.8], [1.0]]
    >>> d = budget.charge(state, 0.0, 0)
    >>> d.allowed, d.reason, d.used, d.paused
    (False, 'budget_exhausted.messages_total', 5, True)
    """

    def __init__(self, spec: BudgetSpec) -> None:
        self.spec = spec

    def _usage(self, state: BudgetState, now: float) -> list[tuple[str, int, int, int | None, bool]]:
        """(dimension, used, amount per message or cost, limit, daily?) with today's counts rolled over."""
        today = _utc_day(now)
        fresh = state.day != today
        dm, du = (0, 0) if fresh else (state.day_messages, state.day_micros)
        s = self.spec
        return [
            ("messages_per_day", dm, 1, s.messages_per_day, True),
            ("messages_total", state.total_messages, 1, s.messages_total, False),
            ("money_per_day", du, 0, s.money_micros_per_day, True),
            ("money_total", state.total_micros, 0, s.money_micros_total, False),
        ]

    def check(self, state: BudgetState, now: float, cost_micros: int) -> BudgetDecision:
        """Whether one more message costing ``cost_micros`` fits, without charging it."""
        worst: tuple[float, int, int | None] = (-1.0, 0, None)
        for dim, used, per_message, limit, _daily in self._usage(state, now):
            if limit is None:
                continue
            amount = per_message or cost_micros
            if used + amount > limit:
                return BudgetDecision(False, f"budget_exhausted.{dim}", used, limit, paused=True)
            ratio = used / limit if limit else 1.0
            if ratio > worst[0]:
                worst = (ratio, used, limit)
        return BudgetDecision(True, "within_budget", worst[1], worst[2])

    def charge(self, state: BudgetState, now: float, cost_micros: int) -> BudgetDecision:
        """Charge one message if it fits; report thresholds crossed (each once per period) and pausing.

        A refused charge also raises the 1.0 alert of the refusing dimension (once): a money budget
        that cannot fit one more message is exhausted even when it is not spent to the last micro.
        """
        verdict = self.check(state, now, cost_micros)
        today = _utc_day(now)
        if not verdict.allowed:
            dim = verdict.reason.rsplit(".", 1)[1]
            key = self._alert_key(dim, 1.0, today)
            if 1.0 not in self.spec.alert_thresholds or key in state.alerted:
                return verdict
            state.alerted.append(key)
            alert = BudgetAlert(dim, 1.0, verdict.used, verdict.limit or 0)
            return BudgetDecision(False, verdict.reason, verdict.used, verdict.limit, True, (alert,))
        if state.day != today:
            state.day, state.day_messages, state.day_micros = today, 0, 0
            state.alerted = [k for k in state.alerted if ":" not in k]  # daily alerts re-arm each day
        state.day_messages += 1
        state.total_messages += 1
        state.day_micros += cost_micros
        state.total_micros += cost_micros
        alerts: list[BudgetAlert] = []
        paused = False
        worst: tuple[float, int, int | None] = (-1.0, 0, None)
        for dim, used, _per, limit, _daily in self._usage(state, now):
            if limit is None:
                continue
            ratio = used / limit if limit else 1.0
            paused = paused or used >= limit
            if ratio > worst[0]:
                worst = (ratio, used, limit)
            for threshold in self.spec.alert_thresholds:
                key = self._alert_key(dim, threshold, today)
                if ratio >= threshold and key not in state.alerted:
                    state.alerted.append(key)
                    alerts.append(BudgetAlert(dim, threshold, used, limit))
        reason = "budget_reached" if paused else "within_budget"
        return BudgetDecision(True, reason, worst[1], worst[2], paused, tuple(alerts))

    @staticmethod
    def _alert_key(dim: str, threshold: float, day: str) -> str:
        return f"{dim}@{threshold}:{day}" if dim.endswith("per_day") else f"{dim}@{threshold}"


@dataclass(frozen=True, slots=True)
class DispatchRequest:
    """One message about to be sent. ``campaign_id`` is None for transactional messages;
    ``priority`` ``critical`` skips quiet hours (per the tenant's ``exempt_priorities``) but never
    rate limits or budgets. ``channel`` may be spelled as in the contract (``SMS``)."""

    tenant: str
    channel: str
    recipient_id: str
    campaign_id: str | None = None
    unsubscribed: bool = False
    priority: Priority = "normal"


@dataclass(slots=True)
class DispatchState:
    """The state a decision reads and updates, assembled by the shell from its tables.

    Keys: rates and budgets ``"tenant:<id>"`` / ``"campaign:<id>"``; breakers ``"<channel>:<provider>"``
    (missing entries are created empty).
    """

    rates: dict[str, RateState] = field(default_factory=dict)
    budgets: dict[str, BudgetState] = field(default_factory=dict)
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    avoid: dict[str, str] = field(default_factory=dict)
    """``"<channel>:<provider>"`` -> why this tenant's traffic avoids it (an SLA breach it caused):
    skipped like an open breaker while another provider can take the message."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one message, why (a stable dotted code), and under which policy version.

    ``alerts`` are budget thresholds this message crossed; ``paused`` the scopes it exhausted.
    """

    action: Literal["route", "defer", "suppress"]
    reason: str
    policy_version: str
    provider: str | None = None
    defer_until: float | None = None
    failover: bool = False
    detail: str = ""
    alerts: tuple[tuple[str, BudgetAlert], ...] = ()
    paused: tuple[str, ...] = ()


def evaluate_dispatch(
    request: DispatchRequest, loaded: LoadedPolicy, state: DispatchState, now: float
) -> Decision:
    """Suppress (unsubscribed, budget), defer (quiet hours, no healthy provider, rate) or route.

    Checks run in that order and change nothing; only a routed message commits its rate counts,
    budget charges (at the chosen provider's price) and, for a half-open provider, a probe slot.
    """
    policy, version = loaded.policy, loaded.version
    channel: Channel = channel_of(request.channel)
    tenant = policy.tenant(request.tenant)
    if request.unsubscribed:
        return Decision("suppress", "unsubscribed", version)
    quiet = tenant.quiet_hours
    if quiet and channel in quiet.channels and request.priority not in quiet.exempt_priorities:
        until = quiet_until(now, quiet.start, quiet.end, quiet.timezone)
        if until is not None:
            detail = f"{quiet.start}-{quiet.end} {quiet.timezone}"
            return Decision("defer", "quiet_hours", version, defer_until=until, detail=detail)
    providers = policy.providers_for(request.tenant, channel)
    if not providers:
        return Decision("suppress", "no_provider_configured", version, detail=channel)
    breakers = {
        name: state.breakers.setdefault(f"{channel}:{name}", CircuitBreaker(name, channel, policy.breaker))
        for name in providers
    }
    for breaker in breakers.values():
        breaker.settings = policy.breaker  # a new policy version applies to existing breakers too
    avoided = {p: why for p in providers if (why := state.avoid.get(f"{channel}:{p}"))}
    route = choose_provider(providers, breakers, now, reserve=False, avoid=avoided)
    cost = policy.price(channel, route.provider if route else providers[0]).price_micros
    scopes = [(f"tenant:{request.tenant}", tenant.rate, tenant.budget)]
    if request.campaign_id is not None:
        campaign = policy.campaign(request.campaign_id)
        scopes.append((f"campaign:{request.campaign_id}", campaign.rate, campaign.budget))
    for scope, _rate, spec in scopes:
        if spec is None:
            continue
        budget_state = state.budgets.setdefault(scope, BudgetState())
        if not Budget(spec).check(budget_state, now, cost).allowed:
            refused = Budget(spec).charge(budget_state, now, cost)  # records the 1.0 alert once
            alerts = tuple((scope, a) for a in refused.alerts)
            reason = refused.reason.replace("budget_exhausted", f"budget_exhausted.{scope.split(':')[0]}")
            return Decision("suppress", reason, version, detail=scope, alerts=alerts, paused=(scope,))
    if route is None:
        reopen = [b.opened_until for b in breakers.values() if b.state_at(now) == "open"]
        until = min(reopen) if reopen else now + 1.0
        return Decision(
            "defer", "no_healthy_provider", version, defer_until=until, detail=",".join(providers)
        )
    deferrals = [
        Defer(v.until, f"{scope.split(':')[0]}.{v.window}")
        for scope, rate, _spec in scopes
        if rate is not None
        and isinstance(v := RateLimiter(rate).check(state.rates.setdefault(scope, RateState()), now), Defer)
    ]
    if deferrals:
        latest = max(deferrals, key=lambda d: d.until)
        return Decision("defer", f"rate_limited.{latest.window}", version, defer_until=latest.until)
    route = choose_provider(providers, breakers, now, reserve=True, avoid=avoided)
    assert route is not None  # same state and time as the peek above
    alerts_out: list[tuple[str, BudgetAlert]] = []
    paused: list[str] = []
    for scope, rate, spec in scopes:
        if rate is not None:
            RateLimiter(rate).commit(state.rates[scope], now)
        if spec is not None:
            charged = Budget(spec).charge(state.budgets[scope], now, cost)
            alerts_out += [(scope, a) for a in charged.alerts]
            paused += [scope] if charged.paused else []
    # failover: a provider ahead in the order is unavailable; probe: the first one is half-open and
    # this message tests whether it recovered; primary: the first one, healthy
    reason = (
        "routed.failover"
        if route.failover
        else "routed.probe"
        if route.reason.startswith("probe")
        else "routed.primary"
    )
    return Decision(
        "route",
        reason,
        version,
        provider=route.provider,
        failover=route.failover,
        detail=route.reason,
        alerts=tuple(alerts_out),
        paused=tuple(paused),
    )
