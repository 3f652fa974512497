"""Scenario ``kills``: two workers over a steady stream, killed again and again at random moments and at
the ingest writer's own boundaries, each restarted at once with the next kill planned.

Kinds of kill, drawn in a seeded order from one pool as each worker (re)starts:

- ``sigkill``: SIGKILL a few seconds after the start, wherever the worker is;
- ``before_insert`` / ``after_run`` / ``before_marker``: the worker starts with
  ``HERALD_FAULTS=<point>:kill@n`` and kills itself at the n-th hit of that point (herald/faults.py);
- ``mid_insert``: the worst moment of projections/writer.py item 2, between the events part of an
  insert and a view's part. A slow materialized view (``chaos_slow_mv``, one ``sleep(0.5)`` per
  block, its table with a deduplication window like every view's) is installed through the warehouse
  owner's share, so each insert spends half a second after its events part; the owner is SIGKILLed
  while ``system.processes`` shows an ``INSERT INTO events`` running. Its table counts events per
  tenant and must equal events at the end like every rollup.

The first kill is always worker-1's, in the middle of one of the first inserts, before any partition
has a completion marker. worker-1 is restarted first when both are down, so it owns the embedded
warehouse (the share) and worker-2 writes through it; the owner changes only if worker-2 restarts while
worker-1 is down, and a ``mid_insert`` kill then goes back to the pool for whichever worker owns it next.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass

from herald.errors import WarehouseError
from projections.warehouse import Warehouse
from tests.chaos.install import ChaosError, Installation
from tests.chaos.measure import SLOW_TABLE, SLOW_VIEW
from tests.chaos.scenario import Context, Outcome
from tests.chaos.traffic import Traffic

WORKERS = ("worker-1", "worker-2")
FAULT_POINTS = ("before_insert", "after_run", "before_marker")
HITS = {"before_insert": (1, 12), "after_run": (1, 12), "before_marker": (1, 6)}  # n of point:kill@n
PLAN = {"sigkill": 6, "mid_insert": 5, "before_insert": 4, "after_run": 4, "before_marker": 4}
QUICK_PLAN = {"sigkill": 2, "mid_insert": 2, "before_insert": 1, "after_run": 1, "before_marker": 1}
FAULT_GRACE_S = 45.0  # a fault point not reached by then (no partitions, no traffic) is a SIGKILL
RATE_PER_S = 300
INSERTING = (
    "SELECT count() FROM system.processes "
    "WHERE query_kind = 'Insert' AND startsWith(query, 'INSERT INTO `events`')"
)


@dataclass
class Armed:
    """The kill planned for a worker since its last start."""

    kind: str | None  # None: no kill planned (the pool is empty)
    at: float  # sigkill: when; mid_insert: when to start watching; fault: when to give up on it
    faults: str = ""


def pool_of(rng: random.Random, quick: bool) -> list[str]:
    """The kills to make, in the order they are drawn (popped from the end)."""
    pool = [kind for kind, n in (QUICK_PLAN if quick else PLAN).items() for _ in range(n)]
    rng.shuffle(pool)
    return pool


def install_slow_view(install: Installation) -> None:
    """The slow view, through the owner's share: events part first, then half a second per block."""
    share = install.share()
    try:
        share.command(
            f"CREATE TABLE IF NOT EXISTS {SLOW_TABLE} (tenant_id String, n UInt64) ENGINE = SummingMergeTree "
            "ORDER BY tenant_id SETTINGS non_replicated_deduplication_window = 100000"
        )
        share.command(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {SLOW_VIEW} TO {SLOW_TABLE} AS "
            "SELECT tenant_id, count() AS n FROM events WHERE sleep(0.5) = 0 GROUP BY tenant_id"
        )
    finally:
        share.close()


class Killer:
    def __init__(self, ctx: Context, install: Installation, outcome: Outcome) -> None:
        self.ctx, self.install, self.outcome = ctx, install, outcome
        self.rng = ctx.rng("kills")
        self.pool = pool_of(self.rng, ctx.quick)
        self.planned = len(self.pool)
        self.armed: dict[str, Armed] = {}
        self._shares: dict[str, Warehouse] = {}

    def arm(self, name: str) -> None:
        """(Re)start ``name`` with the next kill of the pool."""
        kind = self.pool.pop() if self.pool else None
        faults = ""
        if kind in FAULT_POINTS:
            faults = f"{kind}:kill@{self.rng.randint(*HITS[kind])}"
        self.install.start(name, faults)
        self.plan(name, kind, faults)

    def arm_first(self, name: str) -> None:
        """Plan the first kill of the owner, already running: in the middle of one of its first inserts,
        when no partition has a completion marker yet (the moment a repair has least to go on)."""
        self.pool.remove("mid_insert")
        self.plan(name, "mid_insert", "")
        self.armed[name].at = 0.0  # from the first insert on

    def plan(self, name: str, kind: str | None, faults: str) -> None:
        now = time.monotonic()
        if kind == "mid_insert" and self.install.owner() != name:
            self.pool.append(kind)  # for the next start of the owner
            kind = "sigkill"
        if kind == "sigkill":
            at = now + self.rng.uniform(2.0, 8.0)
        elif kind == "mid_insert":
            at = now + self.rng.uniform(2.0, 5.0)
        else:
            at = now + FAULT_GRACE_S
        self.armed[name] = Armed(kind, at, faults)
        self.outcome.act("armed", name, plan=faults or kind or "none")

    def inserting(self) -> bool:
        """Whether the owner's engine is running an insert into events now."""
        owner = self.install.owner()
        dsn = self.install.run_info(owner).get("warehouse_http", "") if owner else ""
        if not dsn:
            return False
        try:
            if dsn not in self._shares:
                self._shares[dsn] = Warehouse(dsn)
            return bool(self._shares[dsn].scalar(INSERTING))
        except WarehouseError:
            return False

    def step(self, name: str) -> None:
        armed = self.armed[name]
        if not self.install.alive(name):
            code = self.install.exit_code(name)
            self.outcome.counts["kills"] += 1
            self.outcome.counts[f"kills.{armed.kind}"] += 1
            self.outcome.act("killed", name, kind=armed.kind, plan=armed.faults, exit=code)
            self.ctx.say(f"kills: {name} killed ({armed.faults or armed.kind}): kill "
                         f"{self.outcome.counts['kills']}, {self.planned} planned")  # fmt: skip
            self.arm(name)
            return
        now = time.monotonic()
        if armed.kind is None or now < armed.at:
            return
        if armed.kind in FAULT_POINTS:  # its point was not reached in time: kill it anyway
            self.outcome.act("fault point not reached", name, plan=armed.faults)
            armed.kind = "sigkill"
            self.install.kill(name)
        elif armed.kind == "sigkill":
            self.install.kill(name)
        elif armed.kind == "mid_insert":
            if self.install.owner() != name:
                armed.kind = "sigkill"
                self.pool.append("mid_insert")
                self.install.kill(name)
            elif self.inserting():
                time.sleep(self.rng.uniform(0.05, 0.4))  # the events part is quick; the slow view is not
                self.install.kill(name)

    def close(self) -> None:
        for share in self._shares.values():
            with contextlib.suppress(Exception):  # its owner may be gone: nothing to close cleanly
                share.close()


def kills(ctx: Context, install: Installation, outcome: Outcome) -> Traffic:
    killer = Killer(ctx, install, outcome)
    outcome.minimums = {"kills": killer.planned}
    install.start("worker-1")  # the owner: the slow view goes in through its share before any kill
    install_slow_view(install)
    outcome.act("slow view installed", "worker-1")
    killer.arm_first("worker-1")
    killer.arm("worker-2")
    traffic = Traffic(install.emitter(), ctx.seed, ctx.traffic_start(), RATE_PER_S).start()
    deadline = time.monotonic() + (240 if ctx.quick else 480)
    try:
        while killer.pool or any(a.kind for a in killer.armed.values()):
            if time.monotonic() > deadline:
                raise ChaosError(
                    f"kills: {outcome.counts['kills']} kills in the time allowed, {killer.planned} planned"
                )
            install.check_exits()
            for name in WORKERS:
                killer.step(name)
            time.sleep(0.05)
    finally:
        killer.close()
        traffic.stop()
    outcome.act("traffic stopped")
    return traffic
