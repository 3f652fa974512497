"""Rate limits per caller: token buckets driven by a fake clock, their LRU bound, and in-flight caps."""

from __future__ import annotations

import doctest
import threading

import pytest

import web.ratelimit
from web.ratelimit import ConcurrencyLimiter, Limit, RateLimiter, Verdict


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def allowed(limiter: RateLimiter, identity: str, n: int) -> int:
    return sum(limiter.take(identity).allowed for _ in range(n))


def test_a_new_identity_may_spend_its_whole_burst_at_once() -> None:
    """A first-seen caller starts with a full bucket: burst requests pass, the next one is refused."""
    limiter = RateLimiter(Limit(rate=2, burst=5), FakeClock())
    assert allowed(limiter, "k", 5) == 5
    assert limiter.take("k") == Verdict(False, 1)


def test_tokens_refill_at_the_rate_and_never_beyond_the_burst() -> None:
    """Two tokens a second come back; a long pause fills the bucket to burst, not more."""
    clock = FakeClock()
    limiter = RateLimiter(Limit(rate=2, burst=5), clock)
    allowed(limiter, "k", 5)
    clock.advance(1.5)
    assert allowed(limiter, "k", 5) == 3
    clock.advance(3600)
    assert allowed(limiter, "k", 10) == 5


def test_retry_after_is_the_wait_for_the_next_token_rounded_up_to_a_whole_second() -> None:
    """0.4 tokens/s from empty is 2.5 s (3); after 2 s it is 0.5 s (1); never 0."""
    clock = FakeClock()
    limiter = RateLimiter(Limit(rate=0.4, burst=1), clock)
    assert limiter.take("k").allowed
    assert limiter.take("k") == Verdict(False, 3)
    clock.advance(2)
    assert limiter.take("k") == Verdict(False, 1)
    clock.advance(0.5)
    assert limiter.take("k").allowed


def test_float_dust_neither_refuses_a_whole_token_nor_adds_a_second() -> None:
    """A token refilled in 0.05 s steps passes, and a wait of 1 s reached that way is not reported as 2."""
    clock = FakeClock()
    fast = RateLimiter(Limit(rate=20, burst=1), clock)
    slow = RateLimiter(Limit(rate=0.5, burst=1), clock)
    fast.take("k")
    slow.take("k")
    clock.advance(0.05)
    assert fast.take("k").allowed
    for _ in range(19):
        slow.take("k")
        clock.advance(0.05)
    assert slow.take("k") == Verdict(False, 1)


def test_waiting_the_retry_after_is_enough() -> None:
    """A refused request spends nothing: after Retry-After seconds the caller passes."""
    clock = FakeClock()
    limiter = RateLimiter(Limit(rate=3, burst=2), clock)
    allowed(limiter, "k", 2)
    refused = limiter.take("k")
    assert not refused.allowed
    clock.advance(refused.retry_after_s)
    assert limiter.take("k").allowed


def test_identities_have_separate_buckets() -> None:
    """One caller spending its burst leaves another caller's bucket full."""
    limiter = RateLimiter(Limit(rate=1, burst=3), FakeClock())
    assert allowed(limiter, "noisy", 10) == 3
    assert allowed(limiter, "quiet", 3) == 3


def test_a_zero_rate_never_limits_and_tracks_nobody() -> None:
    """rate 0 is the documented way to turn limiting off."""
    limiter = RateLimiter(Limit(rate=0, burst=1), FakeClock())
    assert allowed(limiter, "k", 1000) == 1000
    assert limiter.check("k").allowed and len(limiter) == 0


def test_check_answers_like_take_without_spending() -> None:
    """check() on a fresh, a spent and a refilled bucket says what take() would, and takes nothing."""
    clock = FakeClock()
    limiter = RateLimiter(Limit(rate=1, burst=1), clock)
    assert limiter.check("ip").allowed and len(limiter) == 0
    assert limiter.take("ip").allowed
    assert limiter.check("ip") == Verdict(False, 1) == limiter.check("ip")
    clock.advance(1)
    assert limiter.check("ip").allowed and limiter.take("ip").allowed


def test_least_recently_used_identities_are_evicted_beyond_the_bound() -> None:
    """A spray of new identities keeps the table at its bound; recently used callers keep their state."""
    limiter = RateLimiter(Limit(rate=1, burst=1), FakeClock(), max_identities=3)
    limiter.take("a")
    limiter.take("b")
    limiter.take("a")  # refused, but a is now the most recently used
    for i in range(100):
        limiter.take(f"spray-{i}")
    assert len(limiter) == 3
    limiter.take("a")  # evicted long ago: back with a full bucket
    limiter.take("c")
    limiter.take("d")
    assert not limiter.take("d").allowed  # d is tracked: its one token is spent
    assert len(limiter) == 3


def test_a_clock_stepping_back_refills_nothing() -> None:
    """A clock reading earlier than the last one gives no tokens (and takes none)."""
    clock = FakeClock()
    limiter = RateLimiter(Limit(rate=1, burst=2), clock)
    allowed(limiter, "k", 2)
    clock.advance(-30)
    assert not limiter.take("k").allowed
    clock.advance(31)
    assert limiter.take("k").allowed


def test_threads_taking_at_once_never_get_more_than_the_burst() -> None:
    """Eight threads racing on one identity with a frozen clock are allowed exactly burst requests."""
    limiter = RateLimiter(Limit(rate=1, burst=50), FakeClock())
    counts: list[int] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        counts.append(allowed(limiter, "k", 100))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 50


def test_concurrency_limiter_refuses_beyond_the_limit_until_a_release() -> None:
    """At most N in flight per identity; a release frees a slot; other identities are unaffected."""
    slots = ConcurrencyLimiter(2)
    assert slots.acquire("ops") and slots.acquire("ops")
    assert not slots.acquire("ops")
    assert slots.acquire("other")
    slots.release("ops")
    assert slots.acquire("ops")
    assert slots.in_flight("ops") == 2


def test_concurrency_limiter_forgets_identities_with_nothing_in_flight() -> None:
    """The table holds only identities running something, so it is bounded by the requests running."""
    slots = ConcurrencyLimiter(1)
    for i in range(100):
        assert slots.acquire(f"k{i}")
        slots.release(f"k{i}")
    assert len(slots) == 0


def test_nonsense_limits_are_refused() -> None:
    """Negative rates, empty buckets, a zero bound and a zero concurrency are errors, not silent."""
    with pytest.raises(ValueError, match="rate"):
        Limit(-1, 1)
    with pytest.raises(ValueError, match="burst"):
        Limit(1, 0)
    with pytest.raises(ValueError, match="max_identities"):
        RateLimiter(Limit(1, 1), FakeClock(), max_identities=0)
    with pytest.raises(ValueError, match="limit"):
        ConcurrencyLimiter(0)


def test_module_doctests_pass() -> None:
    """The examples in web/ratelimit.py's docstrings run."""
    assert doctest.testmod(web.ratelimit).failed == 0
