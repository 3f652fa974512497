"""The alert monitor service: closed minutes from the warehouse -> detectors -> alerts topic + table.

Runs as a thread in every worker; one of them leads. Leadership and state share one Kafka topic:
the monitor-state topic has a single compacted partition and the workers' monitor consumers form
one group on it, so exactly one worker is assigned the partition at a time. On assignment that
worker reads the partition to its end and resumes from the last checkpoint in it (the pickled
:class:`analytics.monitor.AlertMonitor`: detectors, open alerts, cursor, in chunks named by a
manifest, see :func:`checkpoint_messages`); with none it starts
fresh and learns the warehouse history first. When the leader dies, its session expires and another
worker takes the partition and the same checkpoint: models survive restarts and failover.

Event time, not wall time: the watermark is the oldest of the newest ``occurred_at`` per lifecycle
partition still receiving data (so a partition applied later holds minutes open), and minute M is
judged once ``M + 1 min + alert_lateness_s <= watermark``. It is read from the ingest markers
(``ingest_batches``), which a batch writes only once its rows are in events and in every rollup, so
no minute is judged from events whose rollup rows are still being written. Rollups are read from
``delivery_minute`` (kept by a materialized view on ``events``, see projections/migrations), summed
over templates.
The same stream replayed at any speed gives the same alerts.

Delivery: each change goes to ``herald.ops.alerts.v1`` (Avro, acks=all, idempotent producer)
first, then to the ``alerts`` table; a checkpoint is written only when both are done. A crash
between the two re-decides the minutes since the checkpoint and emits the same changes again (ids
are deterministic): at-least-once on the topic, folded to once in the table (ReplacingMergeTree).

Ingest health (wall time: lag and writes happen now): every step the leader judges ingest
(:class:`streams.ingest_watch.IngestWatch`: the sink group's lag and each partition's newest write); a
stall or a growing lag raises a global alert (tenant ``*``, metric ``ingest``) through the same
publisher, resolved when ingest moves again. Its state is checkpointed on the state topic too, as JSON
under its own key (``ingest``), after its alerts are on the topic, so an open ingest alert survives a
restart; it is read back with the series checkpoint, and ingest is judged from then on, without
waiting for the series monitor's first closed minute. No broker or warehouse error stops the monitor.

The leader also runs the group's periodic jobs (:class:`LeaderJob`, e.g. the experiments' statistics
and the segment snapshots of streams/experiments.py), so they run once per group, not once per worker.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from analytics.alerting import MINUTE_MS, AlertChange, AlertPolicy, SeriesKey, alert_record, sla_alert_record
from analytics.monitor import AlertMonitor, MinuteCounts, MonitorConfig
from herald.settings import Settings
from policies.loader import LoadedPolicy
from policies.models import SlaObjective
from policies.sla import evaluate_sla, paging_burn, sla_cause
from projections import queries
from projections.warehouse import Warehouse
from streams.alerts import AlertPublisher
from streams.ingest_watch import INGEST_KEY, LAG_TIMEOUT_S, IngestWatch, dump_ingest, ingest_health_config
from streams.lag import consumer_lag

log = structlog.get_logger("herald.monitor")

STATE_KEY = b"monitor"
STATE_FORMAT = b"herald-monitor-v1:"  # prefix of a checkpoint: format tag, then zlib(pickle(monitor))
MANIFEST_FORMAT = b"herald-monitor-manifest-v1:"  # STATE_KEY's value since checkpoints are chunked
CHUNK_BYTES = 8 * 1024 * 1024  # well under the state topic's 64 MB message limit
CHUNK_MINUTES = 240  # minutes read from the warehouse per query when catching up
CHECKPOINT_EVERY_S = 10.0
ACTIVE_PARTITION_S = 30.0  # a partition whose newest event was ingested longer ago does not hold minutes

_WATERMARK = """
SELECT partition, toUnixTimestamp64Milli(max(max_occurred_at)), toUnixTimestamp64Milli(max(written_at))
FROM ingest_batches
WHERE max_occurred_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
GROUP BY partition
"""
_FIRST_MINUTE = """
SELECT toUnixTimestamp(min(minute)) * 1000, count()
FROM delivery_minute
WHERE minute >= toDateTime({since:Int64}, 'UTC') AND provider != ''
"""
_MINUTES = """
SELECT toUnixTimestamp(minute) * 1000 AS minute_ms, tenant_id, channel, provider,
       sum(dispatched), sum(delivered), sum(failed), sum(bounced), sum(opened),
       quantilesTDigestMerge(0.5, 0.95, 0.99)(delivery_latency_digest)[2],
       sum(delivery_latency_count)
FROM delivery_minute
WHERE minute >= toDateTime({start:Int64}, 'UTC') AND minute < toDateTime({end:Int64}, 'UTC')
  AND provider != ''
GROUP BY minute, tenant_id, channel, provider
ORDER BY minute_ms
"""


def monitor_config(settings: Settings) -> MonitorConfig:
    return MonitorConfig(
        grace_minutes=settings.alert_grace_minutes,
        policy=AlertPolicy(
            cooldown_minutes=settings.alert_cooldown_minutes,
            resolve_after_minutes=settings.alert_resolve_after_minutes,
        ),
    )


def dump_state(monitor: AlertMonitor) -> bytes:
    return STATE_FORMAT + zlib.compress(pickle.dumps(monitor, protocol=pickle.HIGHEST_PROTOCOL), 3)


def load_state(value: bytes) -> AlertMonitor | None:
    """The monitor in a checkpoint, or None for a checkpoint of another format (then start fresh)."""
    if not value.startswith(STATE_FORMAT):
        return None
    monitor = pickle.loads(zlib.decompress(value[len(STATE_FORMAT) :]))  # our own internal topic
    if not isinstance(monitor, AlertMonitor):
        return None
    monitor.__dict__.setdefault("sla_open", {})  # a checkpoint from before SLA alerts
    return monitor


class LeaderJob(Protocol):
    """Periodic work one worker of the group does: the monitor's leader runs it every ``interval_s``
    (streams/experiments.py has the experiments' statistics and the segment snapshots)."""

    name: str
    interval_s: float

    def run(self) -> int: ...
    def status(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


def checkpoint_messages(blob: bytes, generation: str) -> list[tuple[bytes, bytes]]:
    """A checkpoint as messages for the compacted state topic: the blob in chunks under keys
    ``monitor/<generation>/<i>``, then the manifest under ``monitor`` naming the generation, the chunk
    count and the blob's digest. The manifest comes last, so a reader never follows a manifest to
    chunks that are not written yet; a checkpoint is thus not capped by the topic's message size.

    >>> messages = checkpoint_messages(b"x" * 5, "g1")
    >>> [key for key, _ in messages], assemble(dict(messages))
    ([b'monitor/g1/0', b'monitor'], b'xxxxx')
    """
    chunks = [blob[i : i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
    messages = [(f"monitor/{generation}/{i}".encode(), chunk) for i, chunk in enumerate(chunks)]
    manifest = {"generation": generation, "chunks": len(chunks), "sha256": hashlib.sha256(blob).hexdigest()}
    messages.append((STATE_KEY, MANIFEST_FORMAT + json.dumps(manifest).encode()))
    return messages


def assemble(values: dict[bytes, bytes]) -> bytes | None:
    """The newest whole checkpoint among the state topic's latest values by key, or None (none yet,
    or its chunks are missing or do not match the manifest's digest). A checkpoint from before
    chunking (one message under ``monitor``) is returned as it is."""
    head = values.get(STATE_KEY)
    if not head or not head.startswith(MANIFEST_FORMAT):
        return head or None
    manifest = json.loads(head[len(MANIFEST_FORMAT) :])
    keys = [f"monitor/{manifest['generation']}/{i}".encode() for i in range(manifest["chunks"])]
    if any(key not in values for key in keys):
        log.warning("monitor.checkpoint_incomplete", generation=manifest["generation"])
        return None
    blob = b"".join(values[key] for key in keys)
    if hashlib.sha256(blob).hexdigest() != manifest["sha256"]:
        log.warning("monitor.checkpoint_corrupt", generation=manifest["generation"])
        return None
    return blob


@dataclass(frozen=True)
class AlertLinks:
    dashboard_base: str
    runbook_base: str


class AlertMonitorService:
    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        warehouse: Warehouse,
        links: AlertLinks,
        clock: Callable[[], float] = time.time,
        policy: LoadedPolicy | None = None,
        jobs: tuple[LeaderJob, ...] = (),
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self._job_due = dict.fromkeys((job.name for job in jobs), 0.0)
        self.job_errors: dict[str, str] = {}
        self.policy = policy
        self._next_sla_check = 0.0
        self.warehouse = warehouse
        self.links = links
        self.config = monitor_config(settings)
        self._clock = clock
        self._topics = settings.topics
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-monitor", daemon=True)
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": self._topics.monitor_group,
                "client.id": f"herald-monitor-{settings.worker_name}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": int(settings.session_timeout_s * 1000),
                "heartbeat.interval.ms": int(settings.session_timeout_s * 1000 / 5),
                "fetch.max.bytes": 96 * 1024 * 1024,
                "receive.message.max.bytes": 100 * 1024 * 1024,
            }
        )
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.max.bytes": 64 * 1024 * 1024,
                "compression.type": "lz4",
            }
        )
        self.monitor: AlertMonitor | None = None
        self.leading = False
        self._seen_offset = -1  # last state-partition offset read since this worker started leading
        self._restored: dict[bytes, bytes] = {}  # state topic's latest value per key, read so far
        self._chunk_keys: list[bytes] = []  # the chunks of the last checkpoint written
        self.alerts = AlertPublisher(bootstrap, self._topics.alerts, warehouse)
        self._delivery_errors: list[str] = []
        self._last_checkpoint = 0.0
        self._dirty = False
        self.watermark_ms: int | None = None
        self.checkpoint_minute_ms: int | None = None  # next_minute of the last checkpoint written
        self.checkpoint_bytes = 0
        self.steps = 0
        self.last_error: str | None = None
        topics = self._topics
        self.ingest = IngestWatch(
            ingest_health_config(settings),
            lambda: consumer_lag(bootstrap, topics.sink_group, topics.lifecycle, LAG_TIMEOUT_S),
            warehouse, topics.lifecycle, (links.dashboard_base, links.runbook_base), clock,
        )  # fmt: skip
        self._last_ingest_checkpoint = 0.0

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._consumer.subscribe(
            [self._topics.monitor_state],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        monitor = self.monitor
        return {
            "leader": self.leading,
            "watermark": _iso(self.watermark_ms),
            "watermark_ms": self.watermark_ms,
            "next_minute": _iso(monitor.next_minute_ms if monitor else None),
            "live_from": _iso(monitor.live_from_ms if monitor else None),
            "series": len(monitor.series) if monitor else 0,
            "detectors": monitor.detector_count if monitor else 0,
            "open_alerts": len(monitor.open_alerts()) if monitor else 0,
            "checkpoint_next_minute": _iso(self.checkpoint_minute_ms),
            "checkpoint_bytes": self.checkpoint_bytes,
            "published": len(self.alerts.published),
            "pending": self.alerts.pending,
            "last_error": self.last_error,
            "jobs": {job.name: {**job.status(), "error": self.job_errors.get(job.name)} for job in self.jobs},
            "ingest": self.ingest.status(),
        }

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            self.leading, self.monitor, self._seen_offset, self._restored = True, None, -1, {}
            self.ingest.forget()
            log.info("monitor.leading", worker=self.settings.worker_name)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions and self.leading:
            self.leading, self.monitor = False, None
            self.ingest.forget()
            log.info("monitor.not_leading", worker=self.settings.worker_name)

    # -- loop -----------------------------------------------------------------------------------
    def _run(self) -> None:
        next_step = 0.0
        try:
            while not self._stop.is_set():
                self._poll(0.2)
                if not self.leading or self._clock() < next_step:
                    continue
                next_step = self._clock() + self.settings.monitor_interval_s
                try:
                    # The group's jobs and ingest health do not wait for traffic to judge.
                    if self.monitor is not None or self._restore():
                        self.step()
                        if self.policy is not None and self._clock() >= self._next_sla_check:
                            self._next_sla_check = self._clock() + self.settings.sla_check_s
                            self.check_slas()
                    self.last_error = None
                except Exception as exc:  # the warehouse or broker may be briefly away: retry next step
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("monitor.step_failed", error=self.last_error)
                self._guarded_ingest_check()
                self._run_jobs()
        finally:
            for job in self.jobs:
                job.close()
            if self.leading and self.monitor is not None and not self.alerts.unsent:
                self._checkpoint(force=True)
            if self.leading and not self.alerts.unsent:
                self._checkpoint_ingest(force=True)
            self._producer.flush(10)
            self.alerts.close()
            self._consumer.close()

    def _poll(self, timeout: float) -> None:
        """Poll the state partition (which also keeps this worker in the group). Every poll goes
        through here: while restoring, a message a poll returns is part of the checkpoint being read,
        and one dropped would leave the read short of the partition's end, or the checkpoint without a
        chunk."""
        message = self._consumer.poll(timeout)
        if message is not None and message.error() is None and self.leading and self.monitor is None:
            self._seen_offset = message.offset() or 0  # reading the checkpoints up to the end
            key, value = message.key() or b"", message.value()
            if value:
                self._restored[key] = value
            else:  # a tombstone: an older checkpoint's chunk
                self._restored.pop(key, None)

    def _run_jobs(self) -> None:
        """The leader's periodic jobs that are due; one failing does not stop the others."""
        for job in self.jobs:
            if self._clock() < self._job_due[job.name] or self._stop.is_set():
                continue
            self._job_due[job.name] = self._clock() + job.interval_s
            try:
                job.run()
                self.job_errors.pop(job.name, None)
            except Exception as exc:  # retried on the job's next turn
                self.job_errors[job.name] = f"{type(exc).__name__}: {exc}"
                log.warning("monitor.job_failed", job=job.name, error=self.job_errors[job.name])
            self._poll(0)

    def _restore(self) -> bool:
        """Resume from the newest checkpoint once the state partition is read to its end (the
        consumer starts at its beginning: this group never commits); True when the monitor is ready."""
        partition = TopicPartition(self._topics.monitor_state, 0)
        low, high = self._consumer.get_watermark_offsets(partition, timeout=10)
        if high > low and self._seen_offset < high - 1:
            return False  # still reading
        if self.ingest.state is None:
            self.ingest.restore(self._restored.get(INGEST_KEY))
        blob = assemble(self._restored)
        self._chunk_keys = [k for k in self._restored if k.startswith(b"monitor/")]
        self.monitor = load_state(blob) if blob else None
        self._restored = {}
        if self.monitor is None:
            return self._fresh()
        log.info("monitor.restored", next_minute=_iso(self.monitor.next_minute_ms))
        return True

    def _fresh(self) -> bool:
        """A new monitor: what the warehouse holds now (up to the history limit) is history."""
        end = self._closed_end()
        if end is None:
            return False
        since = end - self.settings.alert_history_days * 1440 * MINUTE_MS
        first, rows = self.warehouse.rows(_FIRST_MINUTE, {"since": since // 1000})[0]
        if not rows:
            return False
        monitor = AlertMonitor(self.config, live_from_ms=end)
        monitor.next_minute_ms = int(first)
        self.monitor = monitor
        log.info("monitor.warm_up", history_from=_iso(int(first)), live_from=_iso(end))
        return True

    # -- one step -------------------------------------------------------------------------------
    def step(self) -> list[AlertChange]:
        """Judge every minute closed since the last step; publish what changed. Returns the changes."""
        self.steps += 1
        self.alerts.flush()  # what an earlier step could not put out, first
        monitor = self.monitor
        end = self._closed_end()
        if monitor is None or end is None or monitor.next_minute_ms is None:
            return []
        changes: list[AlertChange] = []
        while monitor.next_minute_ms < end and not self._stop.is_set() and self.leading:
            start = monitor.next_minute_ms
            stop = min(end, start + CHUNK_MINUTES * MINUTE_MS)
            by_minute = self._minutes(start, stop)
            decided: list[AlertChange] = []
            for minute in range(start, stop, MINUTE_MS):
                decided.extend(monitor.observe(minute, by_minute.get(minute, {})))
            self._dirty = True
            if decided:
                changes.extend(decided)
                self._queue(decided)
                self.alerts.flush()
            self._poll(0)  # stay in the group while catching up a long history
        self._checkpoint(force=bool(changes))  # a restart must know the alerts it already raised
        return changes

    def _closed_end(self) -> int | None:
        """The end (exclusive) of the closed minutes, from the event-time watermark."""
        monitor = self.monitor
        since = (monitor.next_minute_ms if monitor and monitor.next_minute_ms else 0) - MINUTE_MS
        rows = self.warehouse.rows(_WATERMARK, {"since": max(since, 0)})
        if not rows:
            return None
        newest_ingest = max(r[2] for r in rows)
        active = [r[1] for r in rows if newest_ingest - r[2] <= ACTIVE_PARTITION_S * 1000]
        self.watermark_ms = min(active)
        lateness = int(self.settings.alert_lateness_s * 1000)
        return (self.watermark_ms - lateness) // MINUTE_MS * MINUTE_MS  # M closed: M + 1 min <= that

    def _minutes(self, start: int, stop: int) -> dict[int, dict[SeriesKey, MinuteCounts]]:
        by_minute: dict[int, dict[SeriesKey, MinuteCounts]] = defaultdict(dict)
        rows = self.warehouse.rows(_MINUTES, {"start": start // 1000, "end": stop // 1000})
        for minute, tenant, channel, provider, disp, deliv, failed, bounced, opened, p95, n_lat in rows:
            by_minute[int(minute)][SeriesKey(tenant, channel, provider)] = MinuteCounts(
                int(disp), int(deliv), int(failed), int(bounced), int(opened),
                float(p95) if n_lat else None, int(n_lat),
            )  # fmt: skip
        return by_minute

    # -- SLAs -----------------------------------------------------------------------------------
    def check_slas(self) -> list[dict[str, Any]]:
        """Evaluate every tenant's SLA objectives now (wall clock: receipts arrive in real time); a
        page burn-rate rule that starts firing opens an SLA alert naming the provider that caused it
        (the dispatch agents then route around it for that tenant), one that stops resolves it."""
        monitor, policy = self.monitor, self.policy
        if monitor is None or policy is None:
            return []
        now = datetime.fromtimestamp(self._clock(), UTC)
        opened = monitor.sla_open
        records = [
            record
            for tenant, tenant_policy in policy.policy.tenants.items()
            for objective in tenant_policy.slas
            if (record := self._judge_sla(tenant, objective, now, opened, policy.version)) is not None
        ]
        if records:
            for record in records:
                log.warning(
                    "monitor.sla", status=record["status"], tenant=record["tenant_id"],
                    channel=record["channel"], cause=record["provider"], detail=record["detail"],
                )  # fmt: skip
            self.alerts.add(records)
            self.alerts.flush()
            self._dirty = True
            self._checkpoint(force=True)
        return records

    def _judge_sla(
        self,
        tenant: str,
        objective: SlaObjective,
        now: datetime,
        opened: dict[str, tuple[str, int, str]],
        version: str,
    ) -> dict[str, Any] | None:
        until = queries.sla_judged_until(now, objective)
        start, end = queries.sla_range(objective, until)
        latency, channel = objective.latency_ms, objective.channel
        counts = queries.sla_counts(self.warehouse, tenant, channel, latency, start, end)
        status = evaluate_sla(tenant, objective, counts, until.timestamp() - 1)
        burn = paging_burn(status)
        key, now_ms = f"{tenant}:{channel}", int(now.timestamp() * 1000)
        common: dict[str, Any] = {
            "tenant": tenant, "channel": channel, "good_ratio": status.good_ratio, "target": objective.target,
            "at_ms": now_ms, "links": (self.links.dashboard_base, self.links.runbook_base),
            "policy_version": version,
        }  # fmt: skip
        if burn is not None and key not in opened:
            since = until - timedelta(minutes=burn.rule.short_minutes)
            per_provider = queries.sla_counts_by_provider(
                self.warehouse, tenant, channel, latency, since, until
            )
            cause = sla_cause(per_provider, objective) or ""
            alert_id = hashlib.sha256(f"sla|{key}|{now_ms // 60_000}".encode()).hexdigest()[:20]
            opened[key] = (alert_id, now_ms, cause)
            detail = (
                f"{objective.target:.2%} within {latency} ms: burning {burn.long_burn:.1f}x over "
                f"{burn.rule.long_minutes} min and {burn.short_burn:.1f}x over {burn.rule.short_minutes} min"
                + (f"; caused by {cause}: {tenant}'s {channel} traffic avoids it" if cause else "")
            )
            return sla_alert_record(
                alert_id=alert_id, status="OPENED", cause=cause, burn=burn.long_burn, factor=burn.rule.factor,
                opened_ms=now_ms, detail=detail, **common,
            )  # fmt: skip
        if burn is None and key in opened:
            alert_id, opened_ms, cause = opened.pop(key)
            detail = f"burn rates back under the page factors; good ratio {status.good_ratio:.2%}"
            return sla_alert_record(
                alert_id=alert_id, status="RESOLVED", cause=cause, burn=0.0, factor=1.0, opened_ms=opened_ms,
                detail=detail, **common,
            )  # fmt: skip
        return None

    # -- ingest health --------------------------------------------------------------------------
    def _guarded_ingest_check(self) -> None:
        """:meth:`check_ingest`, whose every failure is logged and shown, never raised: a monitor that
        stopped on a broker or warehouse error could not say that ingest stopped for that reason."""
        try:
            self.check_ingest()
        except Exception as exc:  # publishing failed: the records stay queued and go out next time
            self.ingest.error = f"{type(exc).__name__}: {exc}"
            log.warning("monitor.ingest_check_failed", error=self.ingest.error)

    def check_ingest(self) -> list[dict[str, Any]]:
        """Judge ingest now and publish the ingest alerts it opens or resolves; returns their records."""
        if not self.leading:
            return []
        records = self.ingest.check()
        try:
            if records:
                self.alerts.add(records)
                self.alerts.flush()  # raises when the topic or the table refuses (kept queued, retried)
        finally:
            # A restart must know the alerts already raised; a no-op while they are not on the topic.
            self._checkpoint_ingest(force=bool(records))
        return records

    def _checkpoint_ingest(self, force: bool = False) -> None:
        """The ingest health under its own key of the state topic, once its alerts are on the topic."""
        state = self.ingest.state
        if state is None or not self.ingest.dirty or not self.leading or self.alerts.unsent:
            return
        now = self._clock()
        if not force and now - self._last_ingest_checkpoint < CHECKPOINT_EVERY_S:
            return
        self._delivery_errors.clear()
        self._producer.produce(
            self._topics.monitor_state,
            key=INGEST_KEY,
            value=dump_ingest(state),
            on_delivery=self._on_delivery,
        )
        if self._producer.flush(30) == 0 and not self._delivery_errors:
            self._last_ingest_checkpoint, self.ingest.dirty = now, False

    # -- publishing -----------------------------------------------------------------------------
    def _queue(self, changes: list[AlertChange]) -> None:
        version = self.config.version
        for change in changes:
            self.alerts.add(
                [alert_record(change, self.links.dashboard_base, self.links.runbook_base, version)]
            )
            log.info(
                "monitor.alert",
                status=change.status,
                alert_id=change.alert_id,
                series=change.series.text,
                metric=change.metric,
                kind=change.kind,
                severity=change.severity,
                minute=_iso(change.at_ms),
            )

    def _checkpoint(self, force: bool = False) -> None:
        if self.monitor is None or not self._dirty or not self.leading or self.alerts.unsent:
            return
        now = self._clock()
        if not force and now - self._last_checkpoint < CHECKPOINT_EVERY_S:
            return
        self._delivery_errors.clear()
        messages = checkpoint_messages(dump_state(self.monitor), f"{int(now * 1000)}")
        for key, value in messages:
            self._producer.produce(
                self._topics.monitor_state, key=key, value=value, on_delivery=self._on_delivery
            )
            self._producer.poll(0)
        if self._producer.flush(60) == 0 and not self._delivery_errors:
            self._last_checkpoint, self._dirty = now, False
            self.checkpoint_minute_ms = self.monitor.next_minute_ms
            written = [key for key, _ in messages if key != STATE_KEY]
            for stale in self._chunk_keys:  # the previous checkpoint's chunks: compaction drops them
                if stale not in written:
                    self._producer.produce(self._topics.monitor_state, key=stale, value=None)
            self._chunk_keys = written
            self.checkpoint_bytes = sum(len(value) for _, value in messages)

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self._delivery_errors.append(str(err))


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()
