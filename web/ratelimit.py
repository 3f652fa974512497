"""Limits per caller: a token bucket per identity, and a cap on requests in flight per identity.

No web framework and no clock of its own: ``clock`` returns seconds (the shell passes
``time.monotonic``; tests pass a fake), so every decision is a function of the values given.
Thread-safe: the API runs its handlers in a thread pool, so each limiter guards its table with a lock.

A bucket holds at most ``burst`` tokens and gains ``rate`` tokens per second. A request takes one
token, or is refused with the whole seconds until the next token (for ``Retry-After``). An identity
seen for the first time starts with a full bucket.

The table of buckets is bounded (``max_identities``, least recently used evicted first) so that a
caller presenting ever new identities (addresses, guessed keys) cannot grow memory. An evicted
identity comes back with a full bucket: the bound trades a little leniency under such a spray for
constant memory.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_IDENTITIES = 10_000
# Clock arithmetic leaves float dust: 0.9999999999991 tokens are a token, and a wait of
# 1.0000000000009 s is 1 s, not "retry in 2 s".
_EPSILON = 1e-9


@dataclass(frozen=True)
class Limit:
    """``rate`` tokens per second (0: no limit) into a bucket of ``burst`` tokens.

    >>> Limit(20, 60).unlimited, Limit(0, 1).unlimited
    (False, True)
    >>> Limit(-1, 5)
    Traceback (most recent call last):
    ...
    ValueError: rate must be >= 0 (got -1)
    """

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError(f"rate must be >= 0 (got {self.rate})")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1 (got {self.burst})")

    @property
    def unlimited(self) -> bool:
        return self.rate == 0


@dataclass(frozen=True)
class Bucket:
    """``tokens`` left at clock reading ``at``."""

    tokens: float
    at: float


@dataclass(frozen=True)
class Verdict:
    """Allowed, or refused with the whole seconds (at least 1) until the next token."""

    allowed: bool
    retry_after_s: int = 0


ALLOWED = Verdict(True)


def refill(bucket: Bucket, limit: Limit, now: float) -> Bucket:
    """The bucket at ``now``: topped up by the time passed, never above ``burst``.

    >>> refill(Bucket(0.0, 10.0), Limit(2, 5), 11.0)
    Bucket(tokens=2.0, at=11.0)
    >>> refill(Bucket(4.0, 10.0), Limit(2, 5), 20.0)
    Bucket(tokens=5.0, at=20.0)
    """
    elapsed = max(0.0, now - bucket.at)  # a clock that steps back refills nothing rather than draining
    return Bucket(min(float(limit.burst), bucket.tokens + elapsed * limit.rate), max(now, bucket.at))


def take(bucket: Bucket | None, limit: Limit, now: float) -> tuple[Bucket, Verdict]:
    """Take one token from ``bucket`` (None: a new identity, full) at ``now``.

    >>> full, verdict = take(None, Limit(1, 2), 0.0)
    >>> full, verdict
    (Bucket(tokens=1.0, at=0.0), Verdict(allowed=True, retry_after_s=0))
    >>> empty, _ = take(full, Limit(1, 2), 0.0)
    >>> take(empty, Limit(1, 2), 0.25)
    (Bucket(tokens=0.25, at=0.25), Verdict(allowed=False, retry_after_s=1))
    """
    current = Bucket(float(limit.burst), now) if bucket is None else refill(bucket, limit, now)
    if current.tokens >= 1 - _EPSILON:
        return Bucket(current.tokens - 1, current.at), ALLOWED
    return current, refusal(current, limit)


def refusal(bucket: Bucket, limit: Limit) -> Verdict:
    """Refused until the bucket next holds a whole token, rounded up to a second, at least 1.

    >>> refusal(Bucket(0.0, 0.0), Limit(0.5, 1))
    Verdict(allowed=False, retry_after_s=2)
    >>> refusal(Bucket(0.9, 0.0), Limit(20, 60))
    Verdict(allowed=False, retry_after_s=1)
    """
    wait = (1 - bucket.tokens) / limit.rate
    return Verdict(False, max(1, math.ceil(wait - _EPSILON)))


class RateLimiter:
    """A token bucket per identity, at most ``max_identities`` of them (least recently used evicted).

    >>> now = [0.0]
    >>> limiter = RateLimiter(Limit(rate=1, burst=2), clock=lambda: now[0])
    >>> [limiter.take("k").allowed for _ in range(3)]
    [True, True, False]
    >>> limiter.take("k").retry_after_s, limiter.take("other").allowed
    (1, True)
    >>> now[0] = 1.0
    >>> limiter.take("k").allowed
    True
    """

    def __init__(self, limit: Limit, clock: Callable[[], float], max_identities: int = MAX_IDENTITIES):
        if max_identities < 1:
            raise ValueError(f"max_identities must be >= 1 (got {max_identities})")
        self.limit = limit
        self._clock = clock
        self._max = max_identities
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Identities tracked now."""
        return len(self._buckets)

    def take(self, identity: str) -> Verdict:
        """Spend one of ``identity``'s tokens, or say how long until it has one."""
        if self.limit.unlimited:
            return ALLOWED
        with self._lock:
            bucket, verdict = take(self._buckets.get(identity), self.limit, self._clock())
            self._buckets[identity] = bucket
            self._buckets.move_to_end(identity)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
            return verdict

    def check(self, identity: str) -> Verdict:
        """What ``take`` would answer now, spending nothing (an unknown identity has a full bucket).

        >>> limiter = RateLimiter(Limit(rate=1, burst=1), clock=lambda: 0.0)
        >>> limiter.check("ip").allowed, limiter.take("ip").allowed, limiter.check("ip").allowed
        (True, True, False)
        """
        if self.limit.unlimited:
            return ALLOWED
        with self._lock:
            bucket = self._buckets.get(identity)
            if bucket is None:
                return ALLOWED
            current = refill(bucket, self.limit, self._clock())
            return ALLOWED if current.tokens >= 1 - _EPSILON else refusal(current, self.limit)


class ConcurrencyLimiter:
    """At most ``limit`` requests in flight per identity; ``acquire`` says False when full.

    Release in a ``finally`` for every acquire that returned True. Only identities with something in
    flight are kept, so the table is bounded by the requests running.

    >>> slots = ConcurrencyLimiter(2)
    >>> slots.acquire("ops"), slots.acquire("ops"), slots.acquire("ops"), slots.acquire("other")
    (True, True, False, True)
    >>> slots.release("ops")
    >>> slots.acquire("ops"), slots.in_flight("ops")
    (True, 2)
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1 (got {limit})")
        self.limit = limit
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Identities with something in flight now."""
        return len(self._running)

    def acquire(self, identity: str) -> bool:
        """Take one of ``identity``'s slots; False (nothing taken) when all are in use."""
        with self._lock:
            running = self._running.get(identity, 0)
            if running >= self.limit:
                return False
            self._running[identity] = running + 1
            return True

    def release(self, identity: str) -> None:
        """Give back a slot taken by ``acquire``; releasing one never taken is a bug."""
        with self._lock:
            running = self._running[identity] - 1
            if running:
                self._running[identity] = running
            else:
                del self._running[identity]

    def in_flight(self, identity: str) -> int:
        """Slots ``identity`` holds now."""
        with self._lock:
            return self._running.get(identity, 0)
