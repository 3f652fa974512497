"""Circuit breakers per provider x channel, and failover routing over them.

A :class:`CircuitBreaker` is a small state machine over a sliding window of outcomes bucketed by
second (at most ``window_seconds`` buckets, so memory is bounded whatever the traffic):

* ``closed``: everything goes through; opens when the window's error rate reaches
  ``open_error_rate`` with at least ``min_requests`` outcomes.
* ``open``: nothing goes through for ``open_seconds``; then ``half_open``.
* ``half_open``: up to ``half_open_probes`` requests go through. When that many have answered,
  the breaker closes if their error rate is at most ``recovery_error_rate`` and reopens otherwise
  (early, as soon as that is certain). Closing starts a fresh window, so reopening needs the open
  threshold crossed again by new traffic. A provider failing at a rate between the two thresholds
  therefore keeps its state instead of flapping (hysteresis).

Every state change is a :class:`BreakerTransition` saying why, returned by the call that caused it
and queued until :meth:`CircuitBreaker.pop_transitions`. Time is passed in (epoch seconds); the
object pickles, so it can live in a Faust table.

>>> from policies.models import BreakerSettings
>>> b = CircuitBreaker("sms-primary", "sms", BreakerSettings(min_requests=4, open_seconds=10))
>>> [b.record_failure(100.0, "timeout") for _ in range(3)] == [None] * 3
True
>>> t = b.record_failure(100.5, "timeout")
>>> t.to_state, t.reason, b.allow_request(101.0), b.state_at(111.0)
('open', 'error rate 100% >= 50% over 4 requests in 60s', False, 'half_open')
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from policies.models import BreakerSettings

__all__ = ["BreakerState", "BreakerTransition", "CircuitBreaker", "Route", "choose_provider"]

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """A breaker changed state at ``at`` because of ``reason`` (error rate and requests as observed)."""

    provider: str
    channel: str
    from_state: BreakerState
    to_state: BreakerState
    at: float
    reason: str
    error_rate: float
    requests: int


class CircuitBreaker:
    """Health of one provider on one channel; see the module docstring for the rules."""

    def __init__(self, provider: str, channel: str, settings: BreakerSettings) -> None:
        self.provider = provider
        self.channel = channel
        self.settings = settings
        self.state: BreakerState = "closed"
        self.opened_until = 0.0
        self.half_open_since = 0.0
        self.probes_sent = 0
        self.probe_successes = 0
        self.probe_failures = 0
        self.last_error_class: str | None = None
        self.failure_streak = 0  # failures in a row, reset by any success
        # [second, successes, failures], oldest first; a plain deque of lists pickles compactly
        self._buckets: deque[list[int]] = deque()
        self._pending: list[BreakerTransition] = []

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.provider!r}, {self.channel!r}, state={self.state!r})"

    # ---- queries -------------------------------------------------------------------------------

    def window(self, now: float) -> tuple[int, int]:
        """(requests, failures) with outcomes in the last ``window_seconds`` before ``now``."""
        horizon = int(now) - self.settings.window_seconds
        ok = bad = 0
        for second, s, f in self._buckets:
            if second > horizon:
                ok += s
                bad += f
        return ok + bad, bad

    def error_rate(self, now: float) -> float:
        requests, failures = self.window(now)
        return failures / requests if requests else 0.0

    def state_at(self, now: float) -> BreakerState:
        """The state a request at ``now`` would meet, without changing anything."""
        if self.state == "open" and now >= self.opened_until:
            return "half_open"
        return self.state

    def would_allow(self, now: float) -> bool:
        """Whether :meth:`allow_request` would say yes, without reserving a probe."""
        state = self.state_at(now)
        if state == "closed":
            return True
        if state == "open":
            return False
        return self._probe_slots(now) > 0

    # ---- commands ------------------------------------------------------------------------------

    def allow_request(self, now: float) -> bool:
        """Whether a request may go to this provider now; in half-open this reserves a probe."""
        self._advance(now)
        if self.state == "closed":
            return True
        if self.state == "open" or self._probe_slots(now) <= 0:
            return False
        self.probes_sent += 1
        return True

    def record_success(self, now: float, latency_ms: float | None = None) -> BreakerTransition | None:
        """Count a delivered/accepted request; may close a half-open breaker."""
        self._advance(now)
        self._add(now, failed=False)
        self.failure_streak = 0
        if self.state == "half_open":
            self.probe_successes += 1
            return self._judge_probes(now)
        return self._judge_window(now)

    def record_failure(self, now: float, error_class: str = "error") -> BreakerTransition | None:
        """Count a failed request (timeout, provider_5xx, ...); may open the breaker."""
        self._advance(now)
        self._add(now, failed=True)
        self.failure_streak += 1
        self.last_error_class = error_class
        if self.state == "half_open":
            self.probe_failures += 1
            return self._judge_probes(now)
        return self._judge_window(now)

    def force_open(self, now: float, reason: str) -> BreakerTransition | None:
        """Open on an outside verdict (an SLA breach, an operator); recovers through probes as usual."""
        self._advance(now)
        if self.state == "open":
            return None
        return self._open(now, reason)

    def pop_transitions(self) -> list[BreakerTransition]:
        """Transitions since the last call, oldest first (the shell emits them as events)."""
        out, self._pending = self._pending, []
        return out

    # ---- internals -----------------------------------------------------------------------------

    def _probe_slots(self, now: float) -> int:
        # A probe whose outcome never comes back (crashed sender) must not wedge the breaker:
        # after another open period without a verdict the round starts over.
        if now - self.half_open_since >= self.settings.open_seconds:
            return self.settings.half_open_probes
        return self.settings.half_open_probes - self.probes_sent

    def _advance(self, now: float) -> None:
        if self.state == "open" and now >= self.opened_until:
            self._move(now, "half_open", f"open for {self.settings.open_seconds:g}s, probing")
            self._start_probing(now)
        elif self.state == "half_open" and now - self.half_open_since >= self.settings.open_seconds:
            self._start_probing(now)

    def _start_probing(self, now: float) -> None:
        self.half_open_since = now
        self.probes_sent = self.probe_successes = self.probe_failures = 0

    def _add(self, now: float, *, failed: bool) -> None:
        second = int(now)
        if self._buckets and second <= self._buckets[-1][0]:
            bucket = self._buckets[-1]  # late or same-second outcome: count it in the newest bucket
        else:
            bucket = [second, 0, 0]
            self._buckets.append(bucket)
        bucket[2 if failed else 1] += 1
        horizon = second - self.settings.window_seconds
        while self._buckets and self._buckets[0][0] <= horizon:
            self._buckets.popleft()

    def _judge_window(self, now: float) -> BreakerTransition | None:
        if self.state != "closed":
            return None
        streak = self.settings.consecutive_failures
        if streak is not None and self.failure_streak >= streak:
            return self._open(now, f"{self.failure_streak} failures in a row ({self.last_error_class})")
        requests, failures = self.window(now)
        rate = failures / requests if requests else 0.0
        if requests >= self.settings.min_requests and rate >= self.settings.open_error_rate:
            reason = (
                f"error rate {rate:.0%} >= {self.settings.open_error_rate:.0%} over {requests} requests"
                f" in {self.settings.window_seconds}s"
            )
            return self._open(now, reason)
        return None

    def _judge_probes(self, now: float) -> BreakerTransition | None:
        s = self.settings
        answered = self.probe_successes + self.probe_failures
        allowed_failures = s.recovery_error_rate * s.half_open_probes
        rate = self.probe_failures / answered if answered else 0.0
        if self.probe_failures > allowed_failures + 1e-9:
            return self._open(
                now,
                f"probe errors {self.probe_failures}/{answered} above the {s.recovery_error_rate:.0%}"
                f" recovery threshold (last error {self.last_error_class})",
                rate=rate,
                requests=answered,
            )
        if answered >= s.half_open_probes:
            transition = self._move(
                now,
                "closed",
                f"{self.probe_successes}/{answered} probes succeeded"
                f" (error rate {rate:.0%} <= {s.recovery_error_rate:.0%})",
                rate=rate,
                requests=answered,
            )
            self._buckets.clear()  # recovery starts a fresh window: old errors must not reopen it
            return transition
        return None

    def _open(
        self, now: float, reason: str, *, rate: float | None = None, requests: int | None = None
    ) -> BreakerTransition:
        self.opened_until = now + self.settings.open_seconds
        return self._move(now, "open", reason, rate=rate, requests=requests)

    def _move(
        self,
        now: float,
        to_state: BreakerState,
        reason: str,
        *,
        rate: float | None = None,
        requests: int | None = None,
    ) -> BreakerTransition:
        window_requests, failures = self.window(now)
        transition = BreakerTransition(
            self.provider,
            self.channel,
            self.state,
            to_state,
            now,
            reason,
            rate if rate is not None else (failures / window_requests if window_requests else 0.0),
            requests if requests is not None else window_requests,
        )
        self.state = to_state
        self._pending.append(transition)
        return transition


@dataclass(frozen=True, slots=True)
class Route:
    """Where to send: ``failover`` is true when a provider ahead of it in the order is unavailable."""

    provider: str
    reason: str
    failover: bool


def choose_provider(
    ordered_providers: Sequence[str],
    breakers: Mapping[str, CircuitBreaker],
    now: float,
    *,
    reserve: bool = True,
    avoid: Mapping[str, str] | None = None,
) -> Route | None:
    """The first provider in order whose breaker lets a request through; ``None`` if none does.

    Providers in ``avoid`` (name -> why) are passed over while a later one can take the request,
    and used only when none can (avoiding is a preference; an open breaker is not).

    A provider without a breaker has no bad news and counts as healthy. With ``reserve`` a
    half-open breaker's probe slot is taken (use ``reserve=False`` to ask without committing).
    Failback is automatic: once the primary closes (or has a probe slot) it is first again.

    >>> from policies.models import BreakerSettings
    >>> down = CircuitBreaker("smtp-primary", "email", BreakerSettings())
    >>> _ = down.force_open(0.0, "SLA breach")
    >>> choose_provider(["smtp-primary", "smtp-secondary"], {"smtp-primary": down}, 1.0)
    Route(provider='smtp-secondary', reason='failover: smtp-primary open', failover=True)
    >>> choose_provider(["smtp-primary", "smtp-secondary"], {"smtp-primary": down}, 31.0).reason
    'probe: smtp-primary half_open'
    >>> choose_provider(["sms-a", "sms-b"], {}, 0.0, avoid={"sms-a": "SLA breach"}).reason
    'failover: sms-a avoided (SLA breach)'
    """
    avoid = avoid or {}
    passes = (
        [[p for p in ordered_providers if p not in avoid], list(ordered_providers)]
        if avoid
        else [list(ordered_providers)]
    )
    for candidates in passes:  # avoided providers only once nobody else can take the request
        skipped: list[str] = []
        for provider in ordered_providers:
            if provider not in candidates:
                skipped.append(f"{provider} avoided ({avoid[provider]})")
                continue
            breaker = breakers.get(provider)
            if breaker is None:
                healthy, state = True, "closed"
            else:
                state = breaker.state_at(now)
                healthy = breaker.allow_request(now) if reserve else breaker.would_allow(now)
            if healthy:
                if skipped:
                    return Route(provider, "failover: " + ", ".join(skipped), True)
                reason = "primary" if state == "closed" else f"probe: {provider} {state}"
                return Route(provider, reason, False)
            skipped.append(f"{provider} {state}" if state == "open" else f"{provider} probes busy")
    return None
