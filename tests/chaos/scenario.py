"""What every scenario shares: the suite's context (broker, seed, where installations live), the record
of what a scenario did, and the run around a scenario's body: catch up, stop, measure, judge."""

from __future__ import annotations

import logging
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from infra.local_kafka import LocalKafka
from tests.chaos.install import Installation, StalledError
from tests.chaos.measure import Measurement, measure
from tests.chaos.traffic import Traffic


@dataclass
class Context:
    root: Path
    broker: LocalKafka
    seed: int
    quick: bool
    kafka_log: logging.Logger
    say: Callable[[str], None]

    def rng(self, scenario: str) -> random.Random:
        """The scenario's own random stream: the same seed draws the same plan in any selection."""
        return random.Random(f"{self.seed}:{scenario}")

    def traffic_start(self) -> datetime:
        """Event time of the first simulated notification: half an hour back, whole minutes."""
        return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)


@dataclass
class Outcome:
    """What one scenario did and found."""

    name: str
    seed: int
    began: float = field(default_factory=time.monotonic)
    actions: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)  # kills, pauses, owner/broker restarts, poison
    produced: dict[str, Any] = field(default_factory=dict)
    measurement: Measurement | None = None
    mechanisms: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    minimums: dict[str, int] = field(default_factory=dict)  # counts the scenario promised to reach
    elapsed_s: float = 0.0
    caught_up_s: float = 0.0
    data_dir: str = ""
    logs: dict[str, str] = field(default_factory=dict)

    def act(self, what: str, worker: str = "", **detail: Any) -> None:
        self.actions.append({"t": round(time.monotonic() - self.began, 2), "what": what, "worker": worker,
                             **detail})  # fmt: skip

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "passed": self.passed,
            "failures": self.failures,
            "elapsed_s": round(self.elapsed_s, 1),
            "caught_up_s": round(self.caught_up_s, 1),
            "counts": dict(self.counts),
            "minimums": self.minimums,
            "produced": self.produced,
            "mechanisms": self.mechanisms,
            "measurement": self.measurement.as_dict() if self.measurement else None,
            "actions": self.actions,
            "data_dir": self.data_dir,
            "logs": self.logs,
        }


Body = Callable[[Context, Installation, Outcome], Traffic]
"""A scenario's body: starts the workers and the traffic, does its harm, stops the traffic and leaves
every worker it wants measured running, without a fault plan."""


def run(ctx: Context, name: str, body: Body) -> Outcome:
    """Run ``body`` on a fresh installation, then catch up, stop the workers, measure and judge."""
    from tests.chaos.report import verdict  # report formats outcomes; imported late to avoid a cycle

    outcome = Outcome(name, ctx.seed)
    install = Installation.create(ctx.root, ctx.broker.bootstrap, name, ctx.kafka_log)
    outcome.data_dir = str(install.settings.data_dir)
    try:
        traffic = body(ctx, install, outcome)
        outcome.produced = traffic.produced()
        outcome.counts["poison"] += outcome.produced["invalid"]
        ctx.say(f"{name}: waiting until every message is applied")
        stalled = False
        try:
            outcome.caught_up_s = install.wait_caught_up()
        except StalledError as exc:  # counted all the same: the rollups against events still tell
            outcome.failures.append(f"{type(exc).__name__}: {exc}")
            ctx.say(f"{name}: {str(exc)[:2000]}")
            stalled = True
        outcome.mechanisms = install.mechanisms()
        install.stop_all()
        ctx.say(f"{name}: counting, recounting{'' if stalled else ', replaying the log'}")
        outcome.measurement = measure(install, traffic, replay=not stalled)
        outcome.failures += verdict(outcome)
    except Exception as exc:  # the scenario could not finish: report it with the numbers so far
        outcome.failures.append(f"{type(exc).__name__}: {exc}")
        ctx.say(f"{name}: stopped by {type(exc).__name__}: {str(exc)[:2000]}")
        ctx.say(traceback.format_exc(limit=8))
    finally:
        outcome.mechanisms = outcome.mechanisms or install.mechanisms()
        outcome.logs = install.logs()
        for worker in list(install.workers):
            install.kill(worker)  # whatever is still running: nothing outlives its scenario
        outcome.elapsed_s = time.monotonic() - outcome.began
    return outcome
