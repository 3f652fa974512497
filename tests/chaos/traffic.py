"""A steady stream of simulator events, emitted in chunks on a thread while a scenario acts on the
workers; some are sent again (a service's retry: the same event_id) and bad messages can go in
between. It records what the warehouse and the dead-letter topic must end up holding."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from simulator.model import DEFAULT_MODEL, generate
from streams.emitter import Emitter
from tests.chaos.poison import Poison

TICK_S = 0.1


class Traffic:
    """One seeded simulator stream at ``rate_per_s`` valid events per second.

    Every ``retry_every``-th valid event is followed by a copy of one sent shortly before (same
    event_id, so the warehouse keeps it once); every ``bad_every``-th by the next of ``poison``, keyed
    like the valid event just sent so it lands between valid events of one partition."""

    def __init__(
        self,
        emitter: Emitter,
        seed: int,
        start: datetime,
        rate_per_s: float,
        *,
        retry_every: int = 50,
        poison: Iterator[Poison] | None = None,
        bad_every: int = 0,
    ) -> None:
        self.emitter = emitter
        self.rate_per_s = rate_per_s
        self.retry_every = retry_every
        self.bad_every = bad_every if poison is not None else 0
        self._poison = poison
        self._events = generate(DEFAULT_MODEL, start, 200, float("inf"), seed)
        self._rng = random.Random(f"{seed}:retries")
        self._recent: deque[dict[str, Any]] = deque(maxlen=500)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-traffic", daemon=True)
        self.expected_ids: set[str] = set()
        self.sent = 0  # valid events, retries included
        self.retried = 0
        self.invalid: Counter[bytes] = Counter()  # each bad message's bytes, once each
        self.invalid_kinds: Counter[str] = Counter()
        self.errors: list[str] = []

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def emit(self, n: int) -> None:
        """Emit ``n`` more valid events (and what goes between them) now, on the caller's thread."""
        for _ in range(n):
            self._emit_next()

    def stop(self, timeout: float = 300) -> None:
        """Stop emitting and wait until the broker acknowledged everything sent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self.emitter.flush(timeout)
        except Exception as exc:  # an unacknowledged event is a finding, reported with the numbers
            self.errors.append(str(exc))

    def _run(self) -> None:
        began = time.monotonic()
        try:
            while not self._stop.is_set():
                due = int((time.monotonic() - began) * self.rate_per_s)
                while self.sent - self.retried < due and not self._stop.is_set():
                    self._emit_next()
                time.sleep(TICK_S)
        except Exception as exc:
            self.errors.append(f"emitting stopped: {exc}")

    def _emit_next(self) -> None:
        event = next(self._events)
        self.emitter.emit(event)
        self.sent += 1
        self.expected_ids.add(event["event_id"])
        self._recent.append(event)
        unique = self.sent - self.retried
        if self.retry_every and unique % self.retry_every == 0:
            self.emitter.emit(self._rng.choice(self._recent))
            self.sent += 1
            self.retried += 1
        if self.bad_every and unique % self.bad_every == 0:
            assert self._poison is not None
            bad = next(self._poison)
            key = bad.key if bad.key is not None else str(event["notification_id"]).encode()
            self.emitter.emit_raw(key, bad.value, [("chaos.poison", bad.kind.encode())])
            self.invalid[bad.value] += 1
            self.invalid_kinds[bad.kind] += 1

    def produced(self) -> dict[str, Any]:
        return {
            "valid": self.sent,
            "unique": len(self.expected_ids),
            "retried": self.retried,
            "invalid": sum(self.invalid.values()),
            "invalid_by_kind": dict(sorted(self.invalid_kinds.items())),
            "errors": self.errors,
        }
