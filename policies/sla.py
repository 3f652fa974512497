"""SLA error budgets and multi-window burn-rate alerts over mergeable per-minute counts.

An objective such as "99% of SMS delivered within 30 s over 30 days" is judged on
:class:`SlaCounts` per epoch minute (``good`` = delivered within the latency threshold, ``total`` =
messages sent), which add across partitions, providers and workers. The burn rate of a window is
its error ratio divided by the allowed one (``1 - target``): burning at 1 spends the budget exactly
over the objective's window. Following the Google SRE workbook, a rule fires only when both its
long and its short window burn at least ``factor`` (the long one proves it matters, the short one
that it is still happening); the default factors are the workbook's for a 30-day objective.

Every function is total: no traffic gives the neutral status (ratio 1, full budget, burn 0, no
breach), never an exception or NaN.

>>> from policies.models import SlaObjective
>>> sms = SlaObjective(channel="sms", target=0.99, latency_ms=30_000, window_days=30)
>>> outage = {m: SlaCounts(good=50, total=100) for m in range(1000 - 60, 1001)}
>>> status = evaluate_sla("acme-home", sms, outage, now=1000 * 60)
>>> status.breach, status.severity, round(status.burn_rates[0].long_burn, 1)
(True, 'page', 50.0)
>>> evaluate_sla("acme-home", sms, {}, now=0.0).severity
'none'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from policies.models import SlaObjective

__all__ = [
    "DEFAULT_RULES",
    "BurnRate",
    "BurnRateRule",
    "SlaCounts",
    "SlaStatus",
    "evaluate_sla",
    "is_good",
    "merge_counts",
    "paging_burn",
    "prune_counts",
    "sla_cause",
]

Severity = Literal["none", "ticket", "page"]


@dataclass(frozen=True, slots=True)
class SlaCounts:
    """Good and total messages in one minute; ``a + b`` merges two partial counts.

    >>> SlaCounts(9, 10) + SlaCounts(5, 5)
    SlaCounts(good=14, total=15)
    """

    good: int = 0
    total: int = 0

    def __add__(self, other: SlaCounts) -> SlaCounts:
        return SlaCounts(self.good + other.good, self.total + other.total)

    @property
    def bad(self) -> int:
        return max(0, self.total - self.good)


@dataclass(frozen=True, slots=True)
class BurnRateRule:
    """Fire at ``severity`` when both windows (minutes) burn at least ``factor``."""

    long_minutes: int
    short_minutes: int
    factor: float
    severity: Literal["ticket", "page"]


DEFAULT_RULES: tuple[BurnRateRule, ...] = (
    BurnRateRule(60, 5, 14.4, "page"),  # 2% of a 30-day budget in an hour
    BurnRateRule(360, 30, 6.0, "page"),  # 5% in six hours
    BurnRateRule(1440, 120, 3.0, "ticket"),  # 10% in a day
    BurnRateRule(4320, 360, 1.0, "ticket"),  # 10% in three days
)


@dataclass(frozen=True, slots=True)
class BurnRate:
    """Observed burn of one rule's windows and whether the rule fires."""

    rule: BurnRateRule
    long_burn: float
    short_burn: float
    firing: bool


@dataclass(frozen=True, slots=True)
class SlaStatus:
    """Where one tenant x channel objective stands at a moment.

    ``error_budget_remaining`` is 1 when nothing was spent and negative when overspent. ``breach``
    (escalate, e.g. switch provider) is a firing page rule or an exhausted budget.
    """

    tenant: str
    channel: str
    objective: SlaObjective
    good_ratio: float
    error_budget_remaining: float
    burn_rates: tuple[BurnRate, ...]
    breach: bool
    severity: Severity
    total: int


def is_good(objective: SlaObjective, delivered: bool, latency_ms: float | None) -> bool:
    """Whether one message meets the objective: delivered, within the latency threshold.

    >>> from policies.models import SlaObjective
    >>> o = SlaObjective(channel="sms", target=0.99, latency_ms=30_000)
    >>> is_good(o, True, 1_200), is_good(o, True, 45_000), is_good(o, False, None)
    (True, False, False)
    """
    return delivered and latency_ms is not None and latency_ms <= objective.latency_ms


def merge_counts(*parts: Mapping[int, SlaCounts]) -> dict[int, SlaCounts]:
    """Minute-wise sum of partial count maps (from partitions or workers).

    >>> merge_counts({1: SlaCounts(1, 2)}, {1: SlaCounts(3, 3), 2: SlaCounts(0, 1)})
    {1: SlaCounts(good=4, total=5), 2: SlaCounts(good=0, total=1)}
    """
    merged: dict[int, SlaCounts] = {}
    for part in parts:
        for minute, counts in part.items():
            merged[minute] = merged.get(minute, SlaCounts()) + counts
    return merged


def prune_counts(counts: Mapping[int, SlaCounts], now: float, keep_minutes: int) -> dict[int, SlaCounts]:
    """Only the minutes a status at ``now`` still reads (bounded state for a table)."""
    current = int(now // 60)
    return {m: c for m, c in counts.items() if current - keep_minutes < m <= current}


def _window(counts: Iterable[tuple[int, SlaCounts]], current: int, minutes: int) -> SlaCounts:
    good = total = 0
    for minute, c in counts:
        if current - minutes < minute <= current:
            good += c.good
            total += c.total
    return SlaCounts(good, total)


def _burn(window: SlaCounts, allowed: float) -> float:
    if window.total == 0:
        return 0.0
    ratio = window.bad / window.total
    if allowed <= 0.0:
        return 0.0 if ratio == 0.0 else float("inf")
    return ratio / allowed


def evaluate_sla(
    tenant: str,
    objective: SlaObjective,
    counts: Mapping[int, SlaCounts],
    now: float,
    rules: Iterable[BurnRateRule] = DEFAULT_RULES,
    *,
    min_total: int = 1,
) -> SlaStatus:
    """Status of ``objective`` at ``now`` (epoch seconds) from counts keyed by epoch minute.

    The minute containing ``now`` is the newest one read. A rule needs at least ``min_total``
    messages in its long window to fire, so one failed message of a quiet tenant does not page.
    """
    current = int(now // 60)
    items = list(counts.items())
    allowed = 1.0 - objective.target
    whole = _window(items, current, objective.window_days * 1440)
    good_ratio = whole.good / whole.total if whole.total else 1.0
    if whole.total == 0:
        remaining = 1.0
    elif allowed <= 0.0:
        remaining = 1.0 if whole.bad == 0 else float("-inf")
    else:
        remaining = 1.0 - whole.bad / (allowed * whole.total)
    burns: list[BurnRate] = []
    for rule in rules:
        long_w = _window(items, current, rule.long_minutes)
        long_burn = _burn(long_w, allowed)
        short_burn = _burn(_window(items, current, rule.short_minutes), allowed)
        firing = long_w.total >= min_total and long_burn >= rule.factor and short_burn >= rule.factor
        burns.append(BurnRate(rule, long_burn, short_burn, firing))
    exhausted = whole.total > 0 and remaining <= 0.0
    severity: Severity = "none"
    if exhausted or any(b.firing and b.rule.severity == "page" for b in burns):
        severity = "page"
    elif any(b.firing for b in burns):
        severity = "ticket"
    return SlaStatus(
        tenant,
        objective.channel,
        objective,
        good_ratio,
        remaining,
        tuple(burns),
        severity == "page",
        severity,
        whole.total,
    )


def paging_burn(status: SlaStatus) -> BurnRate | None:
    """The firing page-severity burn-rate rule (the budget is burning fast now), if any. An exhausted
    budget alone does not page here: it is a ticket for the people who own the objective."""
    return next((b for b in status.burn_rates if b.firing and b.rule.severity == "page"), None)


def sla_cause(per_provider: Mapping[str, SlaCounts], objective: SlaObjective) -> str | None:
    """The provider that caused a burn: the one with the most bad messages, when its error ratio is
    above the allowed one and at least twice that of the other providers together.

    >>> from policies.models import SlaObjective
    >>> o = SlaObjective(channel="sms", target=0.99, latency_ms=30_000)
    >>> sla_cause({"sms-a": SlaCounts(40, 100), "sms-b": SlaCounts(99, 100)}, o)
    'sms-a'
    >>> sla_cause({"sms-a": SlaCounts(80, 100), "sms-b": SlaCounts(79, 100)}, o) is None  # both bad
    True
    """
    if not per_provider:
        return None
    worst = max(per_provider, key=lambda p: (per_provider[p].bad, p))
    mine = per_provider[worst]
    if mine.total == 0 or mine.bad / mine.total <= 1.0 - objective.target:
        return None
    rest = SlaCounts()
    for provider, counts in per_provider.items():
        if provider != worst:
            rest = rest + counts
    rest_ratio = rest.bad / rest.total if rest.total else 0.0
    return worst if mine.bad / mine.total >= 2 * rest_ratio else None
