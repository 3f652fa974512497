"""Circuit breakers open on error rate, probe in half-open, close with hysteresis, and drive failover."""

from __future__ import annotations

import pickle

from policies.breaker import BreakerTransition, CircuitBreaker, choose_provider
from policies.models import BreakerSettings

SETTINGS = BreakerSettings(
    window_seconds=60,
    min_requests=20,
    open_error_rate=0.5,
    recovery_error_rate=0.1,
    open_seconds=30,
    half_open_probes=10,
)


def feed(breaker: CircuitBreaker, start: float, seconds: int, per_second: int, error_every: int) -> None:
    """Deterministic traffic: every ``error_every``-th outcome fails (0 = never)."""
    n = 0
    for s in range(seconds):
        for i in range(per_second):
            now = start + s + i / per_second
            n += 1
            if not breaker.allow_request(now):
                continue
            if error_every and n % error_every == 0:
                breaker.record_failure(now, "timeout")
            else:
                breaker.record_success(now, 120.0)


def open_breaker(start: float = 1000.0) -> CircuitBreaker:
    breaker = CircuitBreaker("sms-primary", "sms", SETTINGS)
    for i in range(20):
        breaker.record_failure(start + i * 0.01, "provider_5xx")
    assert breaker.state == "open"
    return breaker


def test_breaker_opens_when_error_rate_crosses_threshold_with_enough_requests() -> None:
    """Half the window failing with >= min_requests opens it, with the reason and numbers."""
    breaker = CircuitBreaker("sms-primary", "sms", SETTINGS)
    for i in range(19):
        assert (breaker.record_failure if i % 2 else breaker.record_success)(100.0 + i * 0.1) is None
    transition = breaker.record_failure(102.0, "timeout")
    assert transition == BreakerTransition(
        "sms-primary", "sms", "closed", "open", 102.0,
        "error rate 50% >= 50% over 20 requests in 60s", 0.5, 20,
    )  # fmt: skip
    assert not breaker.allow_request(103.0)
    assert breaker.pop_transitions() == [transition]
    assert breaker.pop_transitions() == []


def test_breaker_stays_closed_below_min_requests() -> None:
    """A handful of failures is not enough evidence to open."""
    breaker = CircuitBreaker("sms-primary", "sms", SETTINGS)
    for i in range(19):
        breaker.record_failure(100.0 + i, "timeout")
    assert breaker.state_at(120.0) == "closed"


def test_old_outcomes_leave_the_window() -> None:
    """Failures older than window_seconds no longer count, and memory stays bounded."""
    breaker = CircuitBreaker("sms-primary", "sms", SETTINGS)
    for i in range(15):
        breaker.record_failure(100.0 + i, "timeout")
    for i in range(10):
        breaker.record_success(200.0 + i)
    assert breaker.window(210.0) == (10, 0)
    assert len(breaker._buckets) <= SETTINGS.window_seconds


def test_half_open_lets_a_limited_number_of_probes_through_then_closes() -> None:
    """After open_seconds, exactly half_open_probes requests pass; all succeeding closes it."""
    breaker = open_breaker()
    assert breaker.state_at(1029.0) == "open"
    assert breaker.state_at(1031.0) == "half_open"
    allowed = [breaker.allow_request(1031.0) for _ in range(15)]
    assert allowed.count(True) == 10
    transitions = [breaker.record_success(1031.5, 80.0) for _ in range(10)]
    assert transitions[:-1] == [None] * 9
    assert transitions[-1] is not None and transitions[-1].to_state == "closed"
    assert [t.to_state for t in breaker.pop_transitions()] == ["open", "half_open", "closed"]
    assert breaker.allow_request(1032.0)


def test_failed_probes_reopen_the_breaker() -> None:
    """More probe failures than the recovery threshold allows reopen it for another period."""
    breaker = open_breaker()
    for _ in range(10):
        breaker.allow_request(1031.0)
    assert breaker.record_failure(1031.1, "timeout") is None  # 1 of 10 allowed at 10%
    transition = breaker.record_failure(1031.2, "timeout")
    assert transition is not None and (transition.from_state, transition.to_state) == ("half_open", "open")
    assert breaker.state_at(1060.0) == "open" and breaker.state_at(1061.2) == "half_open"


def test_lost_probes_do_not_wedge_the_breaker() -> None:
    """Probes whose outcome never arrives are given up after another open period."""
    breaker = open_breaker()
    for _ in range(10):
        breaker.allow_request(1031.0)
    assert not breaker.allow_request(1040.0)
    assert breaker.allow_request(1061.0)


def test_hysteresis_prevents_flapping_between_the_thresholds() -> None:
    """At a steady 1-in-3 error rate a closed breaker never opens and an open one never closes."""
    closed = CircuitBreaker("smtp-primary", "email", SETTINGS)
    feed(closed, 0.0, 600, 10, error_every=3)
    assert closed.pop_transitions() == []
    tripped = open_breaker(start=0.0)
    feed(tripped, 1.0, 600, 10, error_every=3)
    targets = [t.to_state for t in tripped.pop_transitions()]
    assert "closed" not in targets and targets.count("half_open") >= 5


def test_recovered_breaker_needs_the_open_threshold_crossed_again() -> None:
    """After closing, errors below the open rate (even above recovery) keep it closed."""
    breaker = open_breaker()
    for _ in range(10):
        breaker.allow_request(1031.0)
        breaker.record_success(1031.0)
    feed(breaker, 1032.0, 120, 10, error_every=4)  # 25%: between 10% and 50%
    assert breaker.state_at(1152.0) == "closed"
    feed(breaker, 1200.0, 10, 10, error_every=1)
    assert breaker.state_at(1210.0) == "open"


def test_force_open_explains_an_outside_escalation() -> None:
    """An SLA breach can open a breaker; it recovers through probes like any other."""
    breaker = CircuitBreaker("sms-primary", "sms", SETTINGS)
    transition = breaker.force_open(50.0, "SLA breach: acme-home sms burn 14.4x")
    assert transition is not None and transition.reason.startswith("SLA breach")
    assert breaker.force_open(51.0, "again") is None
    assert breaker.state_at(80.0) == "half_open"


def test_breaker_survives_a_pickle_round_trip() -> None:
    """State (window, probes, pending transitions) lives in a Faust table across restarts."""
    breaker = open_breaker()
    breaker.allow_request(1031.0)
    restored = pickle.loads(pickle.dumps(breaker))
    assert restored.state == "half_open" and restored.probes_sent == 1
    assert restored.window(1031.0) == breaker.window(1031.0)
    assert restored.pop_transitions() == breaker.pop_transitions()
    assert restored.settings == SETTINGS


def test_failover_picks_secondary_and_fails_back_to_primary() -> None:
    """An open primary routes to the secondary; once it recovers the primary is first again."""
    primary = open_breaker()
    breakers = {"sms-primary": primary, "sms-secondary": CircuitBreaker("sms-secondary", "sms", SETTINGS)}
    order = ["sms-primary", "sms-secondary"]
    route = choose_provider(order, breakers, 1010.0)
    assert route is not None and (route.provider, route.failover) == ("sms-secondary", True)
    assert route.reason == "failover: sms-primary open"
    probes = [choose_provider(order, breakers, 1031.0) for _ in range(12)]
    assert [r.provider for r in probes if r] == ["sms-primary"] * 10 + ["sms-secondary"] * 2
    for _ in range(10):
        primary.record_success(1031.5)
    route = choose_provider(order, breakers, 1032.0)
    assert route is not None and (route.provider, route.reason, route.failover) == (
        "sms-primary",
        "primary",
        False,
    )


def test_no_route_when_every_provider_is_open() -> None:
    """All providers open: no route (the caller defers)."""
    breakers = {"sms-primary": open_breaker()}
    assert choose_provider(["sms-primary"], breakers, 1001.0) is None


def test_peeking_does_not_consume_probes() -> None:
    """reserve=False answers without taking a half-open probe slot."""
    primary = open_breaker()
    for _ in range(20):
        choose_provider(["sms-primary"], {"sms-primary": primary}, 1031.0, reserve=False)
    assert primary.probes_sent == 0


def test_failures_in_a_row_open_the_breaker_despite_a_window_full_of_successes() -> None:
    """With consecutive_failures 5, a provider that stops answering opens on its fifth failure in a
    row, although the window's error rate (5 of 105) is far below the threshold; a success between
    failures resets the count."""
    settings = BreakerSettings(window_seconds=60, min_requests=10, consecutive_failures=5)
    b = CircuitBreaker("sms-primary", "sms", settings)
    for i in range(100):
        b.record_success(100.0 + i * 0.1)
    for _ in range(4):
        assert b.record_failure(111.0, "unavailable") is None
    b.record_success(111.1)
    assert [b.record_failure(111.2, "unavailable") for _ in range(4)] == [None] * 4
    opened = b.record_failure(111.3, "unavailable")
    assert opened is not None and opened.to_state == "open"
    assert opened.reason == "5 failures in a row (unavailable)"
    assert b.window(111.3) == (110, 9)  # the rate rule alone would have stayed closed
