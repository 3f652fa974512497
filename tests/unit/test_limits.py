"""Rate limits and budgets are exact, and evaluate_dispatch combines them with quiet hours and routing."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from policies.breaker import CircuitBreaker
from policies.limits import (
    Admit,
    Budget,
    BudgetState,
    Defer,
    DispatchRequest,
    DispatchState,
    RateLimiter,
    RateState,
    evaluate_dispatch,
)
from policies.loader import load_policy
from policies.models import BudgetSpec, RateLimit, quiet_until

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "examples" / "guardrails.yaml"
LOADED = load_policy(EXAMPLE)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def test_rate_limiter_never_exceeds_any_window_over_a_long_random_run() -> None:
    """With limits per second/minute/hour, no fixed window ever admits one more than its limit."""
    limit = RateLimit(per_second=7, per_minute=120, per_hour=3000)
    limiter, state, rng = RateLimiter(limit), RateState(), random.Random(42)
    now, admitted = 1_700_000_000.0, []
    for _ in range(60_000):
        now += rng.expovariate(8.0)
        if isinstance(limiter.acquire(state, now), Admit):
            admitted.append(now)
    for size, cap in ((1, 7), (60, 120), (3600, 3000)):
        per_window = Counter(int(t // size) for t in admitted)
        assert max(per_window.values()) == cap  # reached, never exceeded


def test_rate_limiter_defers_to_the_end_of_the_fullest_window() -> None:
    """A full minute defers to the next minute boundary, where the message is admitted."""
    limiter, state = RateLimiter(RateLimit(per_second=100, per_minute=3)), RateState()
    assert [limiter.acquire(state, 120.0 + i) for i in range(3)] == [Admit()] * 3
    verdict = limiter.acquire(state, 150.0)
    assert verdict == Defer(180.0, "per_minute")
    assert limiter.acquire(state, verdict.until) == Admit()


def test_rate_state_round_trips_and_merges() -> None:
    """to_dict/from_dict is lossless; merging adds the same window and keeps the newer one."""
    limiter = RateLimiter(RateLimit(per_minute=10))
    a, b = RateState(), RateState()
    limiter.acquire(a, 60.0)
    limiter.acquire(b, 61.0)
    limiter.acquire(b, 62.0)
    assert RateState.from_dict(a.to_dict()) == a
    assert a.merge(b).windows == {"per_minute": [60, 3]}
    limiter.acquire(b, 125.0)
    assert a.merge(b).windows == {"per_minute": [120, 1]}


def test_budget_of_b_admits_exactly_b_and_alerts_once_per_threshold() -> None:
    """Messages budget 10: 10 allowed, the 11th refused; 80% and 100% alerts fire once each."""
    budget, state = Budget(BudgetSpec(messages_total=10)), BudgetState()
    decisions = [budget.charge(state, 0.0, 90) for _ in range(14)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False] * 4
    crossed = [(i, d.crossed_thresholds) for i, d in enumerate(decisions) if d.alerts]
    assert crossed == [(7, [0.8]), (9, [1.0])]
    assert decisions[9].paused and decisions[9].reason == "budget_reached"
    assert decisions[10].reason == "budget_exhausted.messages_total" and decisions[10].paused
    assert (state.total_messages, decisions[13].used, decisions[13].limit) == (10, 10, 10)


def test_money_budget_never_overspends_and_alerts_full_when_next_message_does_not_fit() -> None:
    """1.00 at 0.30 a message: three pass (0.90); the fourth is refused with the 100% alert, once."""
    budget, state = Budget(BudgetSpec(money_micros_total=1_000_000)), BudgetState()
    decisions = [budget.charge(state, 0.0, 300_000) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert state.total_micros == 900_000
    assert [d.crossed_thresholds for d in decisions] == [[], [], [0.8], [1.0], []]


def test_daily_budget_resets_and_rearms_alerts_on_the_next_utc_day() -> None:
    """Per-day limits start over at UTC midnight, totals do not."""
    budget, state = Budget(BudgetSpec(messages_per_day=2, messages_total=10)), BudgetState()
    day1, day2 = utc(2026, 3, 1, 23, 59), utc(2026, 3, 2, 0, 1)
    assert [budget.charge(state, day1, 0).allowed for _ in range(3)] == [True, True, False]
    second_day = [budget.charge(state, day2, 0) for _ in range(3)]
    assert [d.allowed for d in second_day] == [True, True, False]
    assert second_day[1].crossed_thresholds == [0.8, 1.0]
    assert state.total_messages == 4


def test_budget_state_round_trips_and_merges() -> None:
    """Totals add; the same day adds, a later day wins; alerts are unioned."""
    a = BudgetState("2026-03-01", 3, 300, 10, 1000, ["messages_total@0.8"])
    b = BudgetState("2026-03-02", 1, 100, 5, 500, [])
    assert BudgetState.from_dict(a.to_dict()) == a
    merged = a.merge(b)
    assert (merged.day, merged.day_messages, merged.total_messages, merged.total_micros) == (
        "2026-03-02",
        1,
        15,
        1500,
    )
    assert a.merge(a).day_messages == 6 and merged.alerted == ["messages_total@0.8"]


def test_quiet_hours_across_midnight_in_a_real_timezone() -> None:
    """21:00-08:00 New York: late evening and early morning defer to 08:00 local; midday does not."""
    ny = "America/New_York"
    assert quiet_until(utc(2026, 1, 15, 2, 30), "21:00", "08:00", ny) == utc(2026, 1, 15, 13, 0)  # 21:30
    assert quiet_until(utc(2026, 1, 15, 10, 0), "21:00", "08:00", ny) == utc(2026, 1, 15, 13, 0)  # 05:00
    assert quiet_until(utc(2026, 1, 15, 13, 0), "21:00", "08:00", ny) is None  # 08:00 sharp
    assert quiet_until(utc(2026, 1, 15, 17, 0), "12:00", "13:00", ny) == utc(2026, 1, 15, 18, 0)


def test_quiet_hours_over_dst_changes_end_at_local_wall_clock_time() -> None:
    """Spring forward and fall back nights still end at 08:00 local (12:00 / 13:00 UTC)."""
    ny = "America/New_York"
    assert quiet_until(utc(2026, 3, 8, 3, 0), "21:00", "08:00", ny) == utc(2026, 3, 8, 12, 0)  # 22:00 EST
    assert quiet_until(utc(2026, 11, 1, 2, 0), "21:00", "08:00", ny) == utc(2026, 11, 1, 13, 0)  # 22:00 EDT
    assert quiet_until(utc(2026, 3, 8, 6, 0), "21:00", "02:30", ny) == utc(
        2026, 3, 8, 7, 30
    )  # gap: 03:30 EDT


def request(**overrides: object) -> DispatchRequest:
    fields: dict[str, object] = {"tenant": "acme-home", "channel": "SMS", "recipient_id": "r-1"}
    return DispatchRequest(**{**fields, **overrides})  # type: ignore[arg-type]  # test helper


NOON_NY = utc(2026, 1, 15, 17, 0)


def test_dispatch_routes_to_primary_and_stamps_the_policy_version() -> None:
    """A normal message in the day goes to the primary, charging budgets and rate counts."""
    state = DispatchState()
    decision = evaluate_dispatch(request(campaign_id="spring-tuneup"), LOADED, state, NOON_NY)
    assert (decision.action, decision.reason, decision.provider) == ("route", "routed.primary", "sms-primary")
    assert decision.policy_version == LOADED.version
    assert state.budgets["campaign:spring-tuneup"].total_micros == 7500
    assert state.rates["tenant:acme-home"].windows["per_second"][1] == 1


def test_dispatch_suppresses_unsubscribed_before_anything_else() -> None:
    """Unsubscribed recipients are suppressed even during quiet hours, consuming nothing."""
    state = DispatchState()
    night = utc(2026, 1, 15, 4, 0)
    decision = evaluate_dispatch(request(unsubscribed=True), LOADED, state, night)
    assert (decision.action, decision.reason) == ("suppress", "unsubscribed")
    assert state == DispatchState()


def test_dispatch_defers_quiet_hours_unless_critical_or_exempt_channel() -> None:
    """SMS at 23:00 New York defers to 08:00; critical and email (not a quiet channel) go now."""
    night = utc(2026, 1, 16, 4, 0)
    deferred = evaluate_dispatch(request(), LOADED, DispatchState(), night)
    assert (deferred.action, deferred.reason, deferred.defer_until) == (
        "defer",
        "quiet_hours",
        utc(2026, 1, 16, 13, 0),
    )
    assert evaluate_dispatch(request(priority="critical"), LOADED, DispatchState(), night).action == "route"
    assert evaluate_dispatch(request(channel="EMAIL"), LOADED, DispatchState(), night).action == "route"


def test_dispatch_defers_on_rate_limit_without_consuming_budget() -> None:
    """tiny-plumbing allows 5 a second: the 6th defers to the next second and charges nothing."""
    state, noon = DispatchState(), utc(2026, 1, 15, 18, 0, 0)
    decisions = [
        evaluate_dispatch(request(tenant="tiny-plumbing"), LOADED, state, noon + 0.5) for _ in range(6)
    ]
    assert [d.action for d in decisions] == ["route"] * 5 + ["defer"]
    assert (decisions[5].reason, decisions[5].defer_until) == ("rate_limited.tenant.per_second", noon + 1)
    assert state.budgets["tenant:tiny-plumbing"].day_messages == 5


def test_dispatch_suppresses_when_budget_is_exhausted_and_says_paused() -> None:
    """tiny-plumbing's 2 USD a day buys 266 SMS at 0.0075; the next is suppressed, scope paused."""
    state, start = DispatchState(), utc(2026, 1, 15, 18, 0, 0)
    decisions = [
        evaluate_dispatch(request(tenant="tiny-plumbing"), LOADED, state, start + i) for i in range(268)
    ]
    assert [d.action for d in decisions].count("route") == 266
    last = decisions[266]
    assert (last.action, last.reason, last.paused) == (
        "suppress", "budget_exhausted.tenant.money_per_day", ("tenant:tiny-plumbing",)
    )  # fmt: skip
    alerts = [(a.dimension, a.threshold) for d in decisions for _, a in d.alerts]
    assert alerts == [("money_per_day", 0.8), ("money_per_day", 1.0)]
    assert state.budgets["tenant:tiny-plumbing"].day_micros == 266 * 7500 <= 2_000_000


def test_dispatch_fails_over_when_primary_breaker_is_open_and_defers_when_all_are() -> None:
    """Open primary: route to secondary at its price; both open: defer until the first reopens."""
    state = DispatchState()
    primary = CircuitBreaker("sms-primary", "sms", LOADED.policy.breaker)
    primary.force_open(NOON_NY - 1, "test outage")
    state.breakers["sms:sms-primary"] = primary
    decision = evaluate_dispatch(request(campaign_id="spring-tuneup"), LOADED, state, NOON_NY)
    assert (decision.provider, decision.reason, decision.failover) == (
        "sms-secondary",
        "routed.failover",
        True,
    )
    assert state.budgets["campaign:spring-tuneup"].total_micros == 6200
    state.breakers["sms:sms-secondary"].force_open(NOON_NY, "test outage")
    deferred = evaluate_dispatch(request(), LOADED, state, NOON_NY + 1)
    assert (deferred.action, deferred.reason, deferred.defer_until) == (
        "defer",
        "no_healthy_provider",
        NOON_NY + 29,
    )
