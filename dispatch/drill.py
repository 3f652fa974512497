"""The failover drill: steady email and SMS traffic through the dispatch service to the local
providers, the primaries killed and restored several times, and what it cost.

Per cycle and channel: **detect-to-switch** (the kill to the first new message routed to the
secondary because the primary's breaker opened) and **failback** (the restore to the first new
message routed to the primary again after its probes passed). Over the run: messages **lost**
(requested, never accepted by any provider of their channel), messages **sent twice** (one
idempotency key accepted more than once, summed over both providers: the providers' own records),
**flaps** (breaker openings beyond one per cycle and channel) and accepted sends per provider.

The providers are real servers (aiosmtpd, aiohttp) stopped and started by closing their sockets;
the dispatch service (decisions, breakers, failover retries) runs in this process.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dispatch.core import Dispatcher
from dispatch.service import DispatchService
from herald.settings import Settings
from policies.loader import load_policy
from providers.local.run import LocalProviders, adapters_for

DRILL_POLICY = Path(__file__).resolve().parents[1] / "policies" / "examples" / "drill.yaml"
PRIMARY = {"EMAIL": "smtp-primary", "SMS": "sms-primary"}
SECONDARY = {"EMAIL": "smtp-secondary", "SMS": "sms-secondary"}
TENANT = "drill-tenant"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DrillPlan:
    rate_per_s: float = 100.0  # requests per second, alternating EMAIL and SMS
    cycles: int = 3
    warm_s: float = 4.0  # steady traffic before the first kill
    down_s: float = 6.0  # primaries down
    up_s: float = 12.0  # after the restore, before the next kill (failback must happen in here)
    timeout_s: float = 2.0  # adapter timeout
    policy: Path = DRILL_POLICY

    @property
    def duration_s(self) -> float:
        return self.warm_s + self.cycles * (self.down_s + self.up_s)


def _request(n: int, now: datetime, run: str = "drill") -> dict[str, Any]:
    channel = "EMAIL" if n % 2 == 0 else "SMS"
    return {
        "request_id": f"{run}-{n}",
        "requested_at": now,
        "tenant_id": TENANT,
        "notification_id": f"{run}-n-{n}",
        "channel": channel,
        "recipient": {
            "id": f"r-{n % 997}",
            "kind": "CUSTOMER",
            "tier": None,
            "role": None,
            "language": "en",
            "country": "US",
            "address_ref": f"r-{n % 997}",
        },
        "template_id": "drill",
        "template_version": 1,
        "campaign_id": None,
        "campaign_step": None,
        "priority": "NORMAL",
        "not_after": None,
        "source": "drill",
    }


async def run_drill(plan: DrillPlan, progress: Progress | None = None) -> dict[str, Any]:
    events: list[dict[str, Any]] = []
    kills: list[float] = []
    restores: list[float] = []
    async with LocalProviders() as local:
        service = DispatchService(
            Dispatcher(load_policy(plan.policy)),
            adapters_for(local.endpoints(), plan.timeout_s),
            events.append,
        )
        try:
            t0 = time.time()
            schedule = _schedule(plan)
            n = 0
            last_report = 0.0
            while (elapsed := time.time() - t0) < plan.duration_s:
                while schedule and elapsed >= schedule[0][0]:
                    _, action = schedule.pop(0)
                    for name in PRIMARY.values():
                        await (local[name].stop() if action == "stop" else local[name].start())
                    (kills if action == "stop" else restores).append(time.time())
                    if progress:
                        progress(f"{elapsed:5.1f}s  primaries {'down' if action == 'stop' else 'up'}")
                due = n / plan.rate_per_s
                if due > elapsed:
                    await asyncio.sleep(due - elapsed)
                    continue
                await service.submit(_request(n, datetime.now(UTC)))
                n += 1
                if progress and elapsed - last_report >= 2:
                    last_report = elapsed
                    progress(f"{elapsed:5.1f}s  {n} requests, {service.pending} in flight")
            await service.drain(timeout=4 * plan.timeout_s)
            records = {p.name: p.messages() for p in local}
            counts = {p.name: p.info()["counts"] for p in local}
        finally:
            await service.aclose()
    return _report(plan, n, events, kills, restores, records, counts)


def _report(
    plan: DrillPlan,
    requested: int,
    events: list[dict[str, Any]],
    kills: list[float],
    restores: list[float],
    records: dict[str, list[dict[str, Any]]],
    counts: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    sends: Counter[str] = Counter()
    for messages in records.values():
        for m in messages:
            sends[m["key"]] += m["sends"]
    prefix = next((e["notification_id"].rsplit("-", 1)[0] for e in events), "drill-n")
    keys = [f"{prefix}-{n}" for n in range(requested)]
    lost = [k for k in keys if sends[k] == 0]
    twice = [k for k in keys if sends[k] > 1]
    first_routes = [
        (e["occurred_at"].timestamp(), e["channel"], e["provider"], e["reason"])
        for e in events
        if e["event_type"] == "DISPATCHED" and e["reason"] != "routed.retry_failover"
    ]
    detect: list[float] = []
    failback: list[float] = []
    flaps = 0
    for channel in ("EMAIL", "SMS"):
        routes = [r for r in first_routes if r[1] == channel]
        for c, (kill, restore) in enumerate(zip(kills, restores, strict=False)):
            end = kills[c + 1] if c + 1 < len(kills) else float("inf")
            switched = next((t for t, _, p, _r in routes if t >= kill and p == SECONDARY[channel]), None)
            back = next(
                (
                    t
                    for t, _, p, r in routes
                    if t >= restore and p == PRIMARY[channel] and r == "routed.primary"
                ),
                None,
            )
            if switched is not None:
                detect.append(switched - kill)
            if back is not None and back < end:
                failback.append(back - restore)
            # after the failback, until the next kill, nothing may go to the secondary again
            if back is not None:
                flaps += sum(1 for t, _, p, _r in routes if back < t < end and p == SECONDARY[channel])
    final_failures = Counter(
        (e["provider"], e["error"]["error_class"]) for e in events if e["event_type"] == "FAILED"
    )
    return {
        "requested": requested,
        "cycles": len(kills),
        "rate_per_s": plan.rate_per_s,
        "lost": len(lost),
        "sent_twice": len(twice),
        "detect_to_switch_s": _summary(detect),
        "failback_s": _summary(failback),
        "routed_to_secondary_after_failback": flaps,
        "accepted_per_provider": {name: c["accepted"] for name, c in counts.items()},
        "failed_attempts": {f"{p}:{cls}": n for (p, cls), n in sorted(final_failures.items())},
        "events": dict(Counter(e["event_type"] for e in events)),
        "examples_lost": lost[:5],
        "examples_sent_twice": twice[:5],
    }


def _summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 3),
        "p95": round(p95, 3),
        "max": round(ordered[-1], 3),
    }


def _schedule(plan: DrillPlan) -> list[tuple[float, str]]:
    """(seconds from the start, "stop" | "start") of the primaries, in order."""
    out = []
    for c in range(plan.cycles):
        kill_at = plan.warm_s + c * (plan.down_s + plan.up_s)
        out += [(kill_at, "stop"), (kill_at + plan.down_s, "start")]
    return out


def run_worker_drill(settings: Settings, plan: DrillPlan, progress: Progress | None = None) -> dict[str, Any]:
    """The same drill end to end: local Kafka, the local providers as a process, a worker whose
    dispatch agent reads the requests from Kafka; outcomes read back from the lifecycle topic."""
    from herald.demo import start_stack

    stack = start_stack(
        settings,
        with_providers=True,
        HERALD_GUARDRAILS_FILE=str(plan.policy),
        HERALD_PROVIDER_TIMEOUT_S=str(plan.timeout_s),
        HERALD_ALERTS_ENABLED="false",
    )
    try:
        return drill_on_stack(stack, plan, progress)
    finally:
        stack.stop()


def drill_on_stack(stack: Any, plan: DrillPlan, progress: Progress | None = None) -> dict[str, Any]:
    """Run the drill's traffic and provider kills against a running stack (a worker with a dispatch
    agent and the local providers: herald.demo.Stack) and report."""
    assert stack.providers is not None, "the stack runs no local providers"
    control = stack.providers.control
    run = f"drill{int(time.time())}"

    def answered() -> int:
        health = stack.worker.health().get("dispatch") or {}
        return int(health.get("sent", 0)) + int(health.get("failed", 0))

    before = answered()
    requested, kills, restores = _worker_traffic(stack, control, plan, run, progress)
    deadline = time.monotonic() + 60 + plan.up_s
    while time.monotonic() < deadline and answered() - before < requested:  # sent, or failed for good
        time.sleep(0.5)
    stack.wait_caught_up(progress)
    events = _events_of_run(stack.bootstrap, stack.settings, run)
    names = [p["name"] for p in control.providers()]
    records = {name: control.messages(name) for name in names}
    counts = {p["name"]: p["counts"] for p in control.providers()}
    report = _report(plan, requested, events, kills, restores, records, counts)
    report["switch_alerts"] = _switch_alerts(stack.bootstrap, stack.settings, kills[0] if kills else 0.0)
    return report


def _worker_traffic(
    stack: Any, control: Any, plan: DrillPlan, run: str, progress: Progress | None
) -> tuple[int, list[float], list[float]]:
    """Steady requests to the requests topic; the primaries stopped and started on schedule."""
    from schemas.codec import request_codec
    from streams.emitter import Emitter

    emitter = Emitter(stack.bootstrap, stack.settings.topics.dispatch_requests, codec=request_codec())
    kills: list[float] = []
    restores: list[float] = []
    schedule = _schedule(plan)
    t0, n, last_report = time.time(), 0, 0.0
    try:
        while (elapsed := time.time() - t0) < plan.duration_s:
            while schedule and elapsed >= schedule[0][0]:
                _, action = schedule.pop(0)
                for name in PRIMARY.values():
                    control.stop(name) if action == "stop" else control.start(name)
                (kills if action == "stop" else restores).append(time.time())
            due = n / plan.rate_per_s
            if due > elapsed:
                time.sleep(min(0.05, due - elapsed))
                continue
            emitter.emit_request(_request(n, datetime.now(UTC), run))
            n += 1
            if progress and elapsed - last_report >= 2:
                last_report = elapsed
                health = stack.worker.health().get("dispatch") or {}
                progress(f"{elapsed:5.1f}s  {n} requests, {health.get('sent', 0)} sent")
        emitter.flush()
    finally:
        emitter.close()
    return n, kills, restores


def _events_of_run(bootstrap: str, settings: Settings, run: str) -> list[dict[str, Any]]:
    """This run's lifecycle events (keyed by notification id, so the key tells them apart)."""
    from schemas.codec import lifecycle_codec
    from streams.topics import read_messages

    codec = lifecycle_codec()
    prefix = f"{run}-n-".encode()
    messages = read_messages(bootstrap, settings.topics.lifecycle)
    return [codec.decode(value) for key, value in messages if key is not None and key.startswith(prefix)]


def _switch_alerts(bootstrap: str, settings: Settings, since: float) -> dict[str, int]:
    """Provider-switch alerts on the alerts topic since ``since``, by status."""
    from schemas.codec import AvroCodec
    from streams.topics import read_values

    codec = AvroCodec.for_contract("alert_event")
    alerts = (codec.decode(v) for v in read_values(bootstrap, settings.topics.alerts))
    found = Counter(
        a["status"]
        for a in alerts
        if a["metric"] == "provider_health" and a["emitted_at"].timestamp() >= since - 1
    )
    return dict(sorted(found.items()))
