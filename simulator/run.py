"""The simulator's shell: paces generated traffic, mixes in bad input, emits, and sums up.

The emitter is anything with ``emit(event)``, ``emit_raw(key, value, headers)`` and ``flush()``
(``streams.emitter.Emitter`` in production, a recording fake in tests). The clock and sleep are
passed in; nothing here reads the environment. Bad messages carry a ``sim.bad_kind`` header naming
their kind, and the j-th one is byte for byte ``bad_messages(n, seed, max_bytes)[j]`` (they do not
depend on ``start``), so a test can match each dead letter to the message that caused it.

    emitter = Emitter(bootstrap)
    summary = simulate(emitter, start=datetime.now(UTC), rate_per_s=200, duration_s=60, seed=1,
                       scenario="mixed")
    counts = emit_exact(emitter, 20_000, 200, seed=1, start=datetime.now(UTC))
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any, Final, Protocol

from herald.errors import ConfigError
from simulator.badinput import DEFAULT_MAX_BYTES, BadMessage, iter_bad_messages
from simulator.model import (
    DEFAULT_MODEL,
    ExperimentSet,
    Notification,
    TrafficModel,
    generate,
    generate_notifications,
    in_time_order,
)
from simulator.scenarios import AnomalyWindow, Scenario, build_scenario

UNPACED_RATE_PER_S: Final = 200.0  # simulated arrivals per second when emitting as fast as possible
BAD_INPUT_EVERY: Final = 100  # bad_input / mixed scenarios: one bad message per this many valid events
EVENTS_PER_NOTIFICATION: Final = 4.15  # measured on DEFAULT_MODEL; sizes scenario windows in emit_exact
MIN_SLEEP_S: Final = 0.002  # ahead of schedule by less than this: emit now rather than pay a sleep call


class EventSink(Protocol):
    def emit(self, event: Mapping[str, Any]) -> None: ...

    def emit_raw(
        self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> None: ...

    def flush(self) -> object: ...


@dataclass(frozen=True)
class Progress:
    notifications: int
    events: int
    invalid: int
    elapsed_s: float
    behind_s: float  # how far emission lags the arrival schedule (open loop: never skips)


@dataclass(frozen=True)
class SimulationSummary:
    scenario: str
    seed: int
    start: datetime  # anomaly window offsets are relative to this
    notifications: int  # notifications whose REQUESTED was emitted
    events: int  # valid events emitted
    invalid: int  # bad messages emitted
    by_event_type: dict[str, int]
    by_tenant: dict[str, int]  # valid events per tenant
    invalid_by_kind: dict[str, int]
    windows: tuple[AnomalyWindow, ...]
    elapsed_s: float


@dataclass
class _Tally:
    emitter: EventSink
    bad: Iterator[BadMessage]
    by_event_type: Counter[str] = field(default_factory=Counter)
    by_tenant: Counter[str] = field(default_factory=Counter)
    invalid_by_kind: Counter[str] = field(default_factory=Counter)
    events: int = 0
    invalid: int = 0

    def emit(self, event: dict[str, Any]) -> None:
        self.emitter.emit(event)
        self.events += 1
        self.by_event_type[event["event_type"]] += 1
        self.by_tenant[event["tenant_id"]] += 1

    def emit_bad(self) -> None:
        message = next(self.bad)
        self.emitter.emit_raw(message.key, message.value, [("sim.bad_kind", message.kind.encode())])
        self.invalid += 1
        self.invalid_by_kind[message.kind] += 1

    def summary(self, scenario: Scenario, seed: int, start: datetime, elapsed_s: float) -> SimulationSummary:
        return SimulationSummary(
            scenario=scenario.name,
            seed=seed,
            start=start,
            notifications=self.by_event_type["REQUESTED"],
            events=self.events,
            invalid=self.invalid,
            by_event_type=dict(self.by_event_type),
            by_tenant=dict(self.by_tenant),
            invalid_by_kind=dict(self.invalid_by_kind),
            windows=scenario.windows,
            elapsed_s=elapsed_s,
        )


def _scenario(scenario: str | Scenario, duration_s: float, model: TrafficModel) -> Scenario:
    return build_scenario(scenario, duration_s, model) if isinstance(scenario, str) else scenario


def simulate(
    emitter: EventSink,
    *,
    start: datetime,
    rate_per_s: float | None,
    duration_s: float,
    seed: int,
    scenario: str | Scenario = "normal",
    model: TrafficModel = DEFAULT_MODEL,
    invalid_every: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: Callable[[Progress], None] | None = None,
    progress_every_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    live: bool = False,
    speedup: float = 1.0,
    experiments: ExperimentSet | None = None,
) -> SimulationSummary:
    """Emit ``duration_s`` seconds of traffic requested at ``rate_per_s`` notifications per second.

    Open loop: notification i is due ``i / rate_per_s`` wall seconds after the call; when emission
    falls behind it catches up without skipping. ``rate_per_s`` None or 0 emits as fast as possible
    (occurred_at then spaced at UNPACED_RATE_PER_S). One bad message follows every
    ``invalid_every`` valid events (0 = none, or BAD_INPUT_EVERY for the bad_input and mixed
    scenarios). Flushes at the end; ``EmitError`` from the flush propagates.

    ``live=True`` emits like production does: every event when it happens (occurred_at order, so a
    bounce or an open comes out minutes after its send), and nothing that happens after the run's
    end (lifecycles still open then are cut, as at any moment of real traffic). ``speedup`` runs
    the simulated clock that many times faster than the wall clock (60: an hour in a minute),
    ``math.inf`` as fast as possible; event-time consumers such as the alert monitor see the same
    stream at any speed. ``experiments`` (definitions and their segments) exposes notifications to
    experiments as dispatch would (see simulator.model._Generator.expose).
    """
    if invalid_every < 0 or duration_s < 0:
        raise ConfigError("invalid_every and duration_s must not be negative")
    if not speedup > 0:
        raise ConfigError(f"speedup must be positive, got {speedup}")
    paced = bool(rate_per_s) and not math.isinf(speedup)
    rate = float(rate_per_s) if rate_per_s else UNPACED_RATE_PER_S
    chosen = _scenario(scenario, duration_s, model)
    every = invalid_every or (BAD_INPUT_EVERY if chosen.bad_input else 0)
    tally = _Tally(emitter, iter_bad_messages(seed, max_bytes))
    notifications = generate_notifications(
        model, start, rate, duration_s, seed, scenario=chosen, experiments=experiments
    )
    steps = _live_steps(notifications, start, duration_s) if live else notifications
    began = last_report = clock()
    for offset_s, events in steps:
        due = offset_s / speedup
        if paced:
            ahead = due - (clock() - began)
            if ahead > MIN_SLEEP_S:
                sleep(ahead)
        for event in events:
            tally.emit(event)
            if every and tally.events % every == 0:
                tally.emit_bad()
        if progress is not None and (now := clock()) - last_report >= progress_every_s:
            last_report = now
            behind = max(0.0, now - began - due) if paced else 0.0
            progress(
                Progress(tally.by_event_type["REQUESTED"], tally.events, tally.invalid, now - began, behind)
            )
    emitter.flush()
    return tally.summary(chosen, seed, start, clock() - began)


def _live_steps(
    notifications: Iterator[Notification], start: datetime, duration_s: float
) -> Iterator[tuple[float, list[dict[str, Any]]]]:
    """Each event alone at its own offset, in occurred_at order, up to the end of the run."""
    for event in in_time_order(notifications):
        offset_s = (event["occurred_at"] - start).total_seconds()
        if offset_s >= duration_s:
            return
        yield offset_s, [event]


def emit_exact(
    emitter: EventSink,
    valid: int,
    invalid: int,
    seed: int,
    *,
    start: datetime,
    rate_per_s: float = UNPACED_RATE_PER_S,
    scenario: str | Scenario = "normal",
    model: TrafficModel = DEFAULT_MODEL,
    max_bytes: int = DEFAULT_MAX_BYTES,
    clock: Callable[[], float] = time.monotonic,
) -> SimulationSummary:
    """Emit exactly ``valid`` valid events and ``invalid`` bad messages, as fast as possible.

    The generated stream is cut after ``valid`` events (the last notification may be incomplete,
    as at any moment in real traffic); bad message j goes after valid event
    ``(j + 1) * valid // (invalid + 1)``, spreading them evenly. Flushes at the end.
    """
    if valid < 0 or invalid < 0:
        raise ConfigError("valid and invalid counts must not be negative")
    chosen = _scenario(scenario, valid / EVENTS_PER_NOTIFICATION / rate_per_s, model)
    tally = _Tally(emitter, iter_bad_messages(seed, max_bytes))
    began = clock()
    bad_sent = 0
    for event in islice(generate(model, start, rate_per_s, float("inf"), seed, scenario=chosen), valid):
        while bad_sent < invalid and tally.events >= (bad_sent + 1) * valid // (invalid + 1):
            tally.emit_bad()
            bad_sent += 1
        tally.emit(event)
    while bad_sent < invalid:  # only when valid == 0
        tally.emit_bad()
        bad_sent += 1
    emitter.flush()
    return tally.summary(chosen, seed, start, clock() - began)
