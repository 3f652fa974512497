"""The scenarios besides ``kills`` (tests/chaos/kills.py): pauses past the group session, the embedded
warehouse's owner restarting, the broker restarting, and a poison mix. Each body starts two workers
sharing the embedded warehouse (worker-1 owns it, worker-2 writes through its share) and a steady
stream, does its harm while the stream flows, and stops the stream."""

from __future__ import annotations

import time

from tests.chaos.install import PAUSE_S, ChaosError, Installation
from tests.chaos.kills import kills
from tests.chaos.poison import poison_mix
from tests.chaos.scenario import Body, Context, Outcome
from tests.chaos.traffic import Traffic

RATE_PER_S = 300


def start_pair(install: Installation, faults: str = "") -> None:
    """worker-1 first, so it owns the warehouse; worker-2 (with ``faults``) writes through its share."""
    install.start("worker-1")
    install.start("worker-2", faults)
    install.wait_assigned(["worker-1", "worker-2"])


def wait_log(install: Installation, name: str, text: str, after: int, timeout: float = 120) -> int:
    """Wait until ``text`` appears in ``name``'s log past byte ``after``; where it ends."""
    path = install.workers[name].log_path
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        install.check_exits()
        log = path.read_bytes()
        found = log.find(text.encode(), after)
        if found >= 0:
            return found + len(text)
        time.sleep(0.05)
    raise ChaosError(f"{install.name}: no {text!r} in {name}'s log after {timeout:.0f} s")


def pauses(ctx: Context, install: Installation, outcome: Outcome) -> Traffic:
    """SIGSTOP a worker past its 6 s session, at ``before_insert`` fault points (SIGSTOP as it logs
    ``fault.paused``, holding a decided and fenced run) and at random moments, then SIGCONT. While it
    is stopped the group gives its partitions to the other worker; when it resumes, its run goes in
    after the other's (same token: dropped) or before it (the new owner's check resumes after it), and
    its next write is fenced. Stopping the owner also freezes the engine the other writes through."""
    rng = ctx.rng("pauses")
    at_points = 1 if ctx.quick else 2
    random_pauses = 2
    outcome.minimums = {"pauses": at_points + random_pauses, "pauses.fault_point": at_points}
    hits = sorted(rng.sample(range(4, 30), at_points))
    faults = ",".join(f"before_insert:pause=4@{n}" for n in hits)
    start_pair(install, faults)
    outcome.act("started", "worker-2", plan=faults)
    traffic = Traffic(install.emitter(), ctx.seed, ctx.traffic_start(), RATE_PER_S).start()
    try:
        seen = 0
        for hit in hits:
            seen = wait_log(install, "worker-2", '"fault.paused"', seen)
            outcome.act("SIGSTOP at fault point", "worker-2", point=f"before_insert@{hit}", seconds=PAUSE_S)
            ctx.say(f"pauses: worker-2 stopped at before_insert hit {hit} for {PAUSE_S:.0f} s")
            install.pause("worker-2")
            outcome.counts["pauses"] += 1
            outcome.counts["pauses.fault_point"] += 1
            install.wait_assigned(["worker-1", "worker-2"])
        for _ in range(random_pauses):
            time.sleep(rng.uniform(1.0, 6.0))
            name = rng.choice(["worker-1", "worker-2"])
            outcome.act("SIGSTOP at a random moment", name, seconds=PAUSE_S)
            ctx.say(f"pauses: {name} stopped at a random moment for {PAUSE_S:.0f} s")
            install.pause(name)
            outcome.counts["pauses"] += 1
            install.wait_assigned(["worker-1", "worker-2"])
        time.sleep(rng.uniform(2.0, 5.0))
    finally:
        traffic.stop()
    return traffic


def owner_restart(ctx: Context, install: Installation, outcome: Outcome) -> Traffic:
    """SIGKILL the worker that owns the embedded warehouse while the stream flows; the other cannot write
    and retries; the owner restarts on a new port and secret and the other finds it again."""
    rng = ctx.rng("owner")
    restarts = 1 if ctx.quick else 2
    outcome.minimums = {"owner_restarts": restarts}
    start_pair(install)
    traffic = Traffic(install.emitter(), ctx.seed, ctx.traffic_start(), RATE_PER_S).start()
    try:
        for _ in range(restarts):
            time.sleep(rng.uniform(3.0, 8.0))
            owner = install.owner()
            if owner is None:
                raise ChaosError("owner: no worker owns the warehouse")
            install.kill(owner)
            outcome.act("SIGKILL the owner", owner)
            down = rng.uniform(6.0, 12.0)
            ctx.say(f"owner: {owner} killed, restarting it in {down:.0f} s")
            time.sleep(down)  # the stream goes on; the other worker retries against the dead share
            install.start(owner)
            outcome.act("owner restarted", owner, owns=install.owner() == owner)
            outcome.counts["owner_restarts"] += 1
            install.wait_assigned(["worker-1", "worker-2"], timeout=90)
        time.sleep(rng.uniform(2.0, 5.0))
    finally:
        traffic.stop()
    return traffic


def broker_restart(ctx: Context, install: Installation, outcome: Outcome) -> Traffic:
    """Stop the broker mid-stream, start it again on the same port and data dir a few seconds later;
    the workers and the emitter carry on."""
    rng = ctx.rng("broker")
    outcome.minimums = {"broker_restarts": 1}
    start_pair(install)
    traffic = Traffic(install.emitter(), ctx.seed, ctx.traffic_start(), RATE_PER_S).start()
    try:
        time.sleep(rng.uniform(4.0, 10.0))
        ctx.broker.stop()
        down = rng.uniform(3.0, 8.0)
        outcome.act("broker stopped", seconds=round(down, 1))
        ctx.say(f"broker: stopped, starting it again in {down:.0f} s")
        time.sleep(down)
        began = time.monotonic()
        ctx.broker.start()
        outcome.act("broker started", took_s=round(time.monotonic() - began, 1))
        outcome.counts["broker_restarts"] += 1
        install.wait_assigned(["worker-1", "worker-2"], timeout=120)
        time.sleep(rng.uniform(3.0, 6.0))
    finally:
        traffic.stop()
    return traffic


def poison(ctx: Context, install: Installation, outcome: Outcome) -> Traffic:
    """Among valid events, one poison message every few: every bad kind of the simulator and foreign
    writers' records with out-of-range values, keyed onto the valid events' partitions."""
    every = 40
    valid = 4_000 if ctx.quick else 8_800
    outcome.minimums = {"poison": valid // every}
    start_pair(install)
    start = ctx.traffic_start()
    traffic = Traffic(install.emitter(), ctx.seed, start, RATE_PER_S,
                      poison=poison_mix(ctx.seed, start), bad_every=every)  # fmt: skip
    try:
        traffic.emit(valid)
    finally:
        traffic.stop()
    return traffic


SCENARIOS: dict[str, Body] = {
    "kills": kills,
    "pauses": pauses,
    "owner_restart": owner_restart,
    "broker_restart": broker_restart,
    "poison": poison,
}
