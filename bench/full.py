"""The whole worker as it runs: ingest + rollups + the alert monitor + the dispatch agent, one process.

Both stages run a real worker (``cli.py worker``) with the alert monitor on (grace 30 minutes,
lateness 5 s) and a dispatch agent sending through the local providers (a child process: two SMTP
servers, two HTTP SMS APIs with delivery receipts). The guardrails are the bundled policy with quiet
hours removed and every rate limit and budget multiplied by 1,000, so every check runs but nothing
is deferred or suppressed by the time of day or by a backlog (the bench would otherwise measure the
policy, not the machine). Requests are EMAIL and SMS only (the local providers have no push).

* **pipeline** (``pipeline_eps``, ``pipeline_cpu_us_per_event``): the worker is started on empty
  topics and waits until its sink, dispatch agent and monitor have their partitions; then 30 minutes
  of simulated lifecycle traffic (ending now) are produced flat out, and one dispatch request per
  EMAIL/SMS notification of that traffic is produced as fast as the agent reads them, never more than
  IN_FLIGHT (100) ahead. (A backlog of thousands of requests makes the agent start 500 sends at once:
  500 SMTP connections overflow the local SMTP server's accept queue, sends time out after 5 s,
  breakers open and the email requests wait out their 30 s open period; that measures the breaker
  policy, not the machine. docs/performance.md has the figures.) Timed from the first produce until
  every request is decided and answered, every receipt is in, and the lifecycle topic (which now
  also holds the agent's own REQUESTED/DISPATCHED/SENT/DELIVERED events) is at lag 0. events/s =
  rows the worker wrote to the warehouse / seconds; CPU = the worker process's user + system time
  (/proc) over the same span. Baselines: ``raw_decode_eps`` (bench/pipeline.py) and Dispatcher.decide
  in-process on the same requests.
* **live** (``p50/95/99_event_to_alert_s``, ``p50/95/99_request_to_decision_s``): a fresh worker;
  one continuous simulated stream (tenants renamed ``sim-*`` so the agent's own events do not share
  its series), its first 45 minutes sent flat out (the monitor's warm-up), then in real time. From
  30 s into the real-time part a delivery drop (delivered x 0.3) starts on ten series, 6 s apart (so
  the drops fall at different points of a minute). Event -> alert = the OPENED alert of the series read
  from ``herald.ops.alerts.v1`` minus the event time of the series' first event in the drop. Meanwhile,
  for 60 s, dispatch requests at 70% of the pipeline's requests/s; request -> decision = the Kafka
  timestamp of the request (set when produced) to that of the DISPATCHED or SUPPRESSED event the agent
  produced for it (set when produced, before its write-ahead flush). Once the requests are out, the
  monitor memory children (bench/memory.py) run while the alerts are awaited.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.alerts import AlertWatcher, Drop, describe, drop_traffic, first_dropped, play
from bench.pipeline import fill_topic, worker_env
from dispatch.core import Dispatcher, example_request
from herald.settings import BUNDLED_GUARDRAILS, Settings, load_settings
from herald.supervise import WorkerProcess
from policies.loader import load_policy
from providers.local.process import LocalProvidersProcess
from schemas.codec import lifecycle_codec, request_codec
from simulator.model import DEFAULT_MODEL, generate_notifications, in_time_order
from streams.emitter import Emitter
from streams.lag import consumer_lag
from streams.topics import ensure_topics

Say = Callable[[str], None]

LATENESS_S = 5.0
LEDGER_KEEP = 20_000  # DispatchAgent's default ledger_keep
IN_FLIGHT = 100  # pipeline: requests produced ahead of the agent's reads (a producer that keeps up)
SIM_PREFIX = "sim-"
DROP_SERIES = (  # the ten busiest series of the simulated traffic (26-107 dispatched per minute at 10/s)
    ("acme-home", "EMAIL", "smtp-primary"),
    ("acme-home", "SMS", "sms-primary"),
    ("acme-home", "PUSH", "fcm"),
    ("brightfix", "EMAIL", "smtp-primary"),
    ("northwind-utilities", "EMAIL", "smtp-primary"),
    ("brightfix", "SMS", "sms-primary"),
    ("brightfix", "PUSH", "fcm"),
    ("acme-home", "SMS", "sms-secondary"),
    ("acme-home", "EMAIL", "smtp-secondary"),
    ("northwind-utilities", "SMS", "sms-primary"),
)


# -- helpers ---------------------------------------------------------------------------------------
def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads) from /proc; None where there is none."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_policy(path: Path) -> Path:
    """The bundled guardrails without quiet hours, every rate limit and budget x 1,000."""

    def scale(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "quiet_hours":
                    continue
                if key in ("rate", "budget") and isinstance(value, dict):
                    out[key] = {
                        k: v * 1000 if isinstance(v, int) and not isinstance(v, bool) else v
                        for k, v in value.items()
                    }
                else:
                    out[key] = scale(value)
            return out
        return [scale(v) for v in node] if isinstance(node, list) else node

    path.write_text(yaml.safe_dump(scale(yaml.safe_load(BUNDLED_GUARDRAILS.read_text()))))
    return path


def request_for(requested: dict[str, Any], run: str, i: int) -> dict[str, Any]:
    """A DispatchRequested record for the notification whose REQUESTED event this is (new ids)."""
    recipient = requested["recipient"]
    return {
        "request_id": f"{run}-{i}",
        "requested_at": datetime.now(UTC),
        "tenant_id": requested["tenant_id"],
        "notification_id": f"{run}-n-{i}",
        "channel": requested["channel"],
        "recipient": {**recipient, "address_ref": f"dir:{recipient['id']}"},
        "template_id": requested["template_id"],
        "template_version": requested["template_version"],
        "campaign_id": requested["campaign_id"],
        "campaign_step": requested["campaign_step"],
        "priority": "NORMAL",
        "not_after": None,
        "source": "bench",
    }


def request_mix(n: int, run: str, seed: int) -> list[dict[str, Any]]:
    """``n`` requests with the simulator's mix of tenants, channels, templates and campaigns."""
    out: list[dict[str, Any]] = []
    for notification in generate_notifications(DEFAULT_MODEL, datetime.now(UTC), 100, float("inf"), seed):
        if len(out) == n:
            break
        if notification.events[0]["channel"] in ("EMAIL", "SMS"):
            out.append(request_for(notification.events[0], run, len(out)))
    return out


def quantiles(values: list[float]) -> dict[str, float | None]:
    if len(values) < 2:
        only = values[0] if values else None
        return {"p50": only, "p95": only, "p99": only}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98]}


def start_worker(
    settings: Settings, bootstrap: str, providers: LocalProvidersProcess, policy: Path
) -> WorkerProcess:
    ensure_topics(bootstrap, settings.partitions, 1, settings.topics)
    env = {
        **worker_env(settings, bootstrap),
        "HERALD_PROVIDERS_FILE": str(providers.ready_file),
        "HERALD_GUARDRAILS_FILE": str(policy),
        "HERALD_ALERT_GRACE_MINUTES": "30",
        "HERALD_ALERT_LATENESS_S": str(LATENESS_S),
    }
    worker = WorkerProcess(env, settings.data_dir / "worker.log").start()
    deadline = time.monotonic() + 60
    while True:  # the sink, the dispatch agent and the monitor each in their group
        health = worker.health()
        if (
            health["partitions"]
            and (health["dispatch"] or {}).get("partitions")
            and health["monitor"]["leader"]
        ):
            return worker
        if time.monotonic() > deadline:
            worker.stop()
            raise RuntimeError(f"worker not assigned its partitions: {health}")
        time.sleep(0.2)


def monitor_behind(monitor: dict[str, Any]) -> int | None:
    """Closed minutes (by the monitor's own watermark) it has not judged yet."""
    if not monitor.get("watermark_ms") or not monitor.get("next_minute"):
        return None
    closed = (int(monitor["watermark_ms"]) - int(LATENESS_S * 1000)) // 60_000 * 60_000
    next_ms = int(datetime.fromisoformat(monitor["next_minute"]).timestamp() * 1000)
    return max(0, (closed - next_ms) // 60_000)


# -- pipeline --------------------------------------------------------------------------------------
def traffic(
    minutes: float, requests: int, run: str, seed: int = 21
) -> tuple[list[tuple[bytes, bytes]], list[dict[str, Any]]]:
    """Simulated lifecycle events of the last ``minutes`` (encoded, in event-time order) at the rate
    that gives about ``requests`` EMAIL/SMS notifications, and one request per such notification."""
    end = datetime.now(UTC)
    start = end - timedelta(minutes=minutes)
    rate = requests / 0.78 / (minutes * 60)  # EMAIL + SMS are ~78% of the simulated notifications
    notifications = list(generate_notifications(DEFAULT_MODEL, start, rate, minutes * 60, seed))
    reqs = [
        request_for(n.events[0], run, i)
        for i, n in enumerate(notifications)
        if n.events[0]["channel"] in ("EMAIL", "SMS")
    ]
    codec = lifecycle_codec()
    events = [
        (e["notification_id"].encode(), codec.encode(e))
        for e in in_time_order(notifications)
        if e["occurred_at"] < end
    ]
    return events, reqs


def decide_us(policy: Path, records: list[dict[str, Any]]) -> float:
    """Dispatcher.decide in-process on the same requests: µs per request (the decision's own cost)."""
    dispatchers: dict[str, Dispatcher] = {}
    loaded = load_policy(policy)
    now_ms = int(time.time() * 1000)
    t0 = time.perf_counter()
    for i, record in enumerate(records):
        tenant = record["tenant_id"]
        dispatcher = dispatchers.get(tenant) or dispatchers.setdefault(tenant, Dispatcher(loaded))
        dispatcher.decide(record, now_ms + i)
    return (time.perf_counter() - t0) / len(records) * 1e6


def feed_until_done(
    worker: WorkerProcess,
    bootstrap: str,
    settings: Settings,
    encoded: list[tuple[bytes, bytes]],
    t0: float,
    say: Say,
) -> dict[str, Any]:
    """Produce the requests, never more than IN_FLIGHT ahead of what the agent has read, until every
    one is decided and answered, every receipt is in and the lifecycle topic is at lag 0; the last
    health of the worker."""
    feed = Emitter(bootstrap, settings.topics.dispatch_requests, producer_config={"linger.ms": 5})
    produced, deadline, last_say = 0, time.monotonic() + 600, 0.0
    try:
        while True:
            health = worker.health()
            d = health["dispatch"]
            if produced < len(encoded) and produced - d["requests"] < IN_FLIGHT:
                for key, value in encoded[produced : d["requests"] + IN_FLIGHT]:
                    feed.emit_raw(key, value)
                    produced += 1
                feed.flush()
            answered = d["requests"] >= len(encoded) and d["sent"] + d["failed"] >= d["routed"]
            if answered and not d["deferred_waiting"] and not d["receipts_waiting"]:
                lag = consumer_lag(bootstrap, settings.topics.sink_group, settings.topics.lifecycle)
                if sum(lag.values()) == 0:
                    return health
            if time.monotonic() > deadline:
                raise RuntimeError(f"pipeline did not finish: {d}")
            if time.monotonic() - last_say > 10:
                last_say = time.monotonic()
                say(f"  {time.perf_counter() - t0:4.0f}s: {health['written']} rows written, "
                    f"{d['requests']} requests read, {d['sent']} sent, {d['failed']} failed")  # fmt: skip
            time.sleep(0.1)
    finally:
        feed.close()


def snapshot_ms(policy: Path, sizes: tuple[int, ...] = (1_000, LEDGER_KEEP)) -> dict[int, float]:
    """Dispatcher.snapshot (the tenant state the agent writes twice per batch for every tenant the batch
    touched) in ms, with ``sizes`` settled requests in the ledger (the agent keeps up to 20,000)."""
    from providers.base import SendResult

    dispatcher = Dispatcher(load_policy(policy))
    now_ms, out = int(time.time() * 1000), {}
    for size in sizes:
        while len(dispatcher.ledger) < size:
            i = len(dispatcher.ledger)
            record = example_request(request_id=f"s-{i}", notification_id=f"s-n-{i}", campaign_id=None)
            step = dispatcher.decide(record, now_ms + i)
            if step.attempt is not None:
                accepted = SendResult(step.attempt.provider, True, f"m-{i}", None, False, 3, "")
                dispatcher.outcome(step.attempt, accepted, now_ms + i + 1)
        t0 = time.perf_counter()
        for _ in range(5):
            dispatcher.snapshot()
        out[size] = (time.perf_counter() - t0) / 5 * 1000
    return out


def pipeline(
    work_dir: Path,
    bootstrap: str,
    providers: LocalProvidersProcess,
    policy: Path,
    n_requests: int,
    say: Say,
) -> dict[str, Any]:
    settings = load_settings(
        data_dir=work_dir / "full",
        kafka_bootstrap=bootstrap,
        namespace=f"full{uuid.uuid4().hex[:6]}",
        api_port=0,
    )
    run = f"pipe{uuid.uuid4().hex[:6]}"
    events, requests = traffic(30, n_requests, run)
    codec = request_codec()
    encoded = [(r["tenant_id"].encode(), codec.encode(r)) for r in requests]
    decide, snapshots = decide_us(policy, requests), snapshot_ms(policy)
    say(f"  {len(events)} lifecycle events (30 simulated minutes) and {len(requests)} requests; in-process "
        f"Dispatcher.decide {decide:.0f} µs/request, snapshot {snapshots[1_000]:.1f} ms with 1k requests in "
        f"the ledger, {snapshots[LEDGER_KEEP]:.1f} ms with 20k")  # fmt: skip
    worker = start_worker(settings, bootstrap, providers, policy)
    assert worker.proc is not None and providers.proc is not None
    try:
        written0 = worker.health()["written"]
        cpu0, pcpu0 = cpu_s(worker.proc.pid), cpu_s(providers.proc.pid)
        t0 = time.perf_counter()
        fill_topic(bootstrap, settings.topics.lifecycle, events)
        health = feed_until_done(worker, bootstrap, settings, encoded, t0, say)
        d = health["dispatch"]
        elapsed = time.perf_counter() - t0
        cpu1, pcpu1 = cpu_s(worker.proc.pid), cpu_s(providers.proc.pid)
        written = health["written"] - written0
        time.sleep(1.5)  # one monitor step (every 1 s) after the last event
        monitor = worker.health()["monitor"]
    finally:
        worker.stop()
    out: dict[str, Any] = {
        "pipeline_events": written,
        "pipeline_lifecycle_in": len(events),
        "pipeline_requests": len(requests),
        "pipeline_seconds": elapsed,
        "pipeline_eps": written / elapsed,
        "pipeline_requests_per_s": len(requests) / elapsed,
        "pipeline_failed_sends": d["failed"],
        "pipeline_breakers_open_at_end": sum(1 for s in d["breakers"].values() if s != "closed"),
        "pipeline_agent_alerts": d["alerts_published"],
        "pipeline_monitor_series": monitor["series"],
        "pipeline_monitor_minutes_behind": monitor_behind(monitor),
        "dispatch_decide_us_per_request": decide,
        "dispatch_snapshot_ms_1k_ledger": snapshots[1_000],
        "dispatch_snapshot_ms_20k_ledger": snapshots[LEDGER_KEEP],
    }
    if cpu0 is not None and cpu1 is not None:
        out["pipeline_worker_cpu_s"] = cpu1 - cpu0
        out["pipeline_cpu_us_per_event"] = (cpu1 - cpu0) / written * 1e6
        out["pipeline_cpu_us_per_request"] = (cpu1 - cpu0) / len(requests) * 1e6
    if pcpu0 is not None and pcpu1 is not None:
        out["pipeline_providers_cpu_s"] = pcpu1 - pcpu0
    say(f"  {written} rows in {elapsed:.1f} s: {out['pipeline_eps']:,.0f} events/s, "
        f"{out['pipeline_requests_per_s']:,.0f} requests/s, worker CPU "
        f"{out.get('pipeline_cpu_us_per_event', float('nan')):,.0f} µs/event; {d['failed']} sends failed, "
        f"breakers {d['breakers']}")  # fmt: skip
    return out


# -- live ------------------------------------------------------------------------------------------
def decision_times(bootstrap: str, topic: str, prefix: bytes) -> dict[bytes, float]:
    """Kafka timestamp (s) of the DISPATCHED (first attempt) or SUPPRESSED event per notification id
    starting with ``prefix``, read from the topic's beginning to its end."""
    codec = lifecycle_codec()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        found: dict[bytes, float] = {}
        positions = dict.fromkeys(parts, -1)
        deadline = time.monotonic() + 120
        while any(positions[p] < ends[p] - 1 for p in parts) and time.monotonic() < deadline:
            for m in consumer.consume(10_000, timeout=0.5):
                if m.error() is not None:
                    continue
                positions[m.partition() or 0] = m.offset() or 0
                key = m.key()
                if key is None or not key.startswith(prefix):
                    continue
                event_id = str(codec.decode(m.value() or b"")["event_id"])
                if event_id.endswith((".dispatched.1", ".suppressed")):
                    found.setdefault(key, m.timestamp()[1] / 1000)
        return found
    finally:
        consumer.close()


class Requests:
    """Dispatch requests at a fixed rate from ``due0`` (epoch s), open loop, produced from the real-time
    loop's tick; the Kafka timestamp of each, by notification id (the key of its lifecycle events)."""

    def __init__(
        self, bootstrap: str, topic: str, records: list[dict[str, Any]], rate: float, due0: float
    ) -> None:
        self.topic, self.records, self.rate, self.due0 = topic, records, rate, due0
        self.codec = request_codec()
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
        )
        self.next = 0
        self.sent_at: dict[bytes, float] = {}

    @property
    def done(self) -> bool:
        return self.next == len(self.records)

    @property
    def ends_at(self) -> float:
        return self.due0 + len(self.records) / self.rate

    def produce_due(self, now_s: float) -> None:
        while self.next < len(self.records) and self.due0 + self.next / self.rate <= now_s:
            record = {**self.records[self.next], "requested_at": datetime.now(UTC)}
            notification = str(record["notification_id"]).encode()

            def delivered(err: Any, msg: Any, notification: bytes = notification) -> None:
                if err is None:
                    self.sent_at[notification] = msg.timestamp()[1] / 1000

            self.producer.produce(
                self.topic, key=str(record["tenant_id"]).encode(), value=self.codec.encode(record),
                on_delivery=delivered,
            )  # fmt: skip
            self.next += 1
        self.producer.poll(0)

    def flush(self) -> None:
        self.producer.flush(30)


def drop_latencies(
    watcher: AlertWatcher, events: list[dict[str, Any]], drops: list[Drop]
) -> tuple[list[float], list[str], list[str]]:
    """(seconds from each drop's first event to its series' OPENED alert, per-drop text, other alerts)."""
    latencies: list[float] = []
    matched: list[dict[str, Any]] = []
    each: list[str] = []
    for d in drops:
        alert, first = watcher.opened(d.series_as(SIM_PREFIX), d.at), first_dropped(events, d, SIM_PREFIX)
        if alert is not None and first is not None:
            matched.append(alert)
            latencies.append((alert["seen_at"] - first).total_seconds())
            each.append(f"{d.series} at :{first:%S} -> {latencies[-1]:.0f} s {alert['metric']}")
        else:
            each.append(f"{d.series} at :{d.at:%S} -> no alert")
    others = [describe(a) for a in watcher.alerts if not any(a is m for m in matched)]
    return latencies, each, others


def live(
    work_dir: Path,
    bootstrap: str,
    providers: LocalProvidersProcess,
    policy: Path,
    request_rate: float,
    say: Say,
    while_waiting: Callable[[], dict[str, Any]],
    history_minutes: float = 45,
    sim_rate: float = 10,
) -> dict[str, Any]:
    settings = load_settings(
        data_dir=work_dir / "live",
        kafka_bootstrap=bootstrap,
        namespace=f"live{uuid.uuid4().hex[:6]}",
        api_port=0,
    )
    run = f"live{uuid.uuid4().hex[:6]}"
    records = request_mix(int(request_rate * 60), run, seed=31)
    worker = start_worker(settings, bootstrap, providers, policy)
    watcher = AlertWatcher(bootstrap, settings.topics.alerts)
    emitter = Emitter(bootstrap, settings.topics.lifecycle)
    background = Background(while_waiting)
    try:
        now = datetime.now(UTC)
        live_at = now + timedelta(seconds=30)
        drops = [Drop(t, c, p, live_at + timedelta(seconds=6 * k)) for k, (t, c, p) in enumerate(DROP_SERIES)]
        end = now + timedelta(seconds=260)
        events = drop_traffic(now - timedelta(minutes=history_minutes), end, sim_rate, drops, 11, SIM_PREFIX)
        history = sum(1 for e in events if e["occurred_at"] < now)
        say(f"  {history_minutes:g} simulated minutes of history flat out ({history} events), then "
            f"{sim_rate:g} notifications/s in real time; drops on {len(drops)} series from "
            f"{live_at:%H:%M:%S}, 6 s apart; {len(records)} requests at {request_rate:.0f}/s "
            "from then")  # fmt: skip
        requests = Requests(
            bootstrap, settings.topics.dispatch_requests, records, request_rate, live_at.timestamp()
        )
        lag_at_start: list[int] = []
        stop_at = time.monotonic() + 300

        def tick() -> bool:
            now_s = time.time()
            if requests.next == 0 and now_s >= requests.due0:
                lag_at_start.append(sum((worker.health()["lag"] or {}).values()))
            requests.produce_due(now_s)
            watcher.poll()
            if requests.done and now_s > requests.ends_at + 2:
                background.start(say)
            seen = all(watcher.opened(d.series_as(SIM_PREFIX), d.at) for d in drops)
            return not (seen and requests.done) and time.monotonic() < stop_at

        play(events, emitter.emit, tick)
        background.start(say)  # (already running, unless the loop ended before the requests did)
        requests.flush()
        emitter.flush()
        background.join()
        watcher.poll()
        latencies, each, others = drop_latencies(watcher, events, drops)
        decided = decision_times(bootstrap, settings.topics.lifecycle, f"{run}-n-".encode())
        delays = sorted(decided[k] - t for k, t in requests.sent_at.items() if k in decided)
    finally:
        watcher.close()
        emitter.close()
        worker.stop()
    alerts_q, decision_q = quantiles(latencies), quantiles(delays)
    shown = ", ".join(f"{v:.0f}" for v in sorted(latencies))
    say(f"  event -> alert: {len(latencies)} of {len(drops)} drops alerted ({shown} s); "
        f"{len(others)} other alert changes")  # fmt: skip
    say(f"  request -> decision: {len(delays)} of {len(records)} matched; p50 {decision_q['p50']} s")
    return {
        **{f"{k}_event_to_alert_s": v for k, v in alerts_q.items()},
        "alert_samples": len(latencies),
        "alert_samples_missed": len(drops) - len(latencies),
        "alert_each": "; ".join(each),
        "alert_other_changes": len(others),
        "alert_other_list": "; ".join(others[:20]),
        "alert_offered_eps": (len(events) - history) / (end - now).total_seconds(),
        **{f"{k}_request_to_decision_s": v for k, v in decision_q.items()},
        "decision_samples": len(delays),
        "decision_offered_per_s": request_rate,
        "decision_lag_at_start": lag_at_start[0] if lag_at_start else None,
        **background.results,
    }


class Background:
    """Work run in a thread once (the memory children), while the live loop keeps going."""

    def __init__(self, work: Callable[[], dict[str, Any]]) -> None:
        self.work = work
        self.results: dict[str, Any] = {}
        self.thread: threading.Thread | None = None

    def start(self, say: Say) -> None:
        if self.thread is None:
            say("  requests done; the monitor memory children run while the alerts are awaited")
            self.thread = threading.Thread(target=lambda: self.results.update(self.work()), daemon=True)
            self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join(600)


def run(
    work_dir: Path, bootstrap: str, n_requests: int, say: Say, while_waiting: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    providers = LocalProvidersProcess(work_dir / "providers.log").start()
    try:
        policy = bench_policy(work_dir / "bench-guardrails.yaml")
        say("full pipeline: one worker catching up on lifecycle traffic and dispatch requests")
        results = pipeline(work_dir, bootstrap, providers, policy, n_requests, say)
        rate = 0.7 * results["pipeline_requests_per_s"]
        say("live: alert latency over several drops, request -> decision at 70% of the pipeline's requests/s")
        results.update(live(work_dir, bootstrap, providers, policy, rate, say, while_waiting))
        return results
    finally:
        providers.stop()
