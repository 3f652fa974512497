"""Ingest health for the alert monitor's leader: the shell around :mod:`analytics.ingest_health`.

Each :meth:`IngestWatch.check` reads the warehouse sink group's lag per lifecycle partition (Kafka:
committed offsets against the log end) and each partition's newest progress (the warehouse), feeds the
pure decision and returns the alert records of the changes it decided; the monitor publishes them
(streams/monitor.py) and then checkpoints the state (:func:`dump_ingest`: plain JSON) under its own
key of the monitor-state topic.

Progress is the newest ``ingest_batches.written_at`` of a partition and, only for the partitions those
marker rows do not show moving (a batch that refused nothing leaves no marker), the newest
``events.ingested_at`` within a day of event time: the events table is large and this runs every step.

Neither Kafka nor the warehouse can make a check raise: without the lag nothing is judged this time;
without the warehouse the remembered progress holds, so a warehouse that died still shows as a stall.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from analytics.alerting import alert_record
from analytics.ingest_health import IngestHealth, IngestHealthConfig, IngestReport, judge_ingest, unproven
from herald.settings import Settings
from projections.warehouse import Warehouse

log = structlog.get_logger("herald.monitor")

INGEST_KEY = b"ingest"  # the ingest health's checkpoint on the monitor-state topic: its latest value
INGEST_FORMAT = b"herald-ingest-v1:"  # prefix of that checkpoint: format tag, then JSON
LAG_TIMEOUT_S = 10.0  # a broker that does not say the lag by then: this evaluation is skipped
EVENT_PROGRESS_LOOKBACK_MS = 86_400_000  # event-time bound of the events fallback

_BATCH_PROGRESS = """
SELECT partition, toUnixTimestamp64Milli(max(written_at))
FROM ingest_batches
WHERE topic = {t:String}
GROUP BY partition
"""
_EVENT_PROGRESS = """
SELECT _partition, toUnixTimestamp64Milli(max(ingested_at))
FROM events
WHERE _topic = {t:String} AND _partition IN {parts:Array(UInt16)}
  AND occurred_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
GROUP BY _partition
"""


def ingest_health_config(settings: Settings) -> IngestHealthConfig:
    return IngestHealthConfig(
        stall_after_ms=int(settings.ingest_stall_s * 1000), lag_alert=settings.ingest_lag_alert
    )


def dump_ingest(state: IngestHealth) -> bytes:
    """The ingest health's checkpoint: plain JSON, no pickle."""
    return INGEST_FORMAT + json.dumps(state.to_dict(), separators=(",", ":")).encode()


def load_ingest(value: bytes | None) -> IngestHealth:
    """The ingest health in a checkpoint; a fresh one when there is none or it is of another format.

    >>> state = load_ingest(dump_ingest(IngestHealth()))
    >>> state == IngestHealth(), load_ingest(None) == state, load_ingest(b"other") == state
    (True, True, True)
    """
    if not value or not value.startswith(INGEST_FORMAT):
        return IngestHealth()
    return IngestHealth.from_dict(json.loads(value[len(INGEST_FORMAT) :]))


class IngestWatch:
    """The leader's view of ingest: the decision's state, the last report and what last failed.

    ``lag`` reads the sink group's lag per partition (streams/lag.py consumer_lag in a worker);
    ``links`` are the alerts' (dashboard base, runbook base); ``clock`` gives seconds."""

    def __init__(
        self,
        config: IngestHealthConfig,
        lag: Callable[[], dict[int, int]],
        warehouse: Warehouse,
        topic: str,
        links: tuple[str, str],
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.topic = topic
        self.warehouse = warehouse
        self.links = links
        self._lag = lag
        self._clock = clock
        self.state: IngestHealth | None = None  # None until the checkpoint is read: nothing is judged
        self.report: IngestReport | None = None
        self.checked_ms: int | None = None
        self.error: str | None = None
        self.dirty = False  # judged since the last checkpoint

    def restore(self, value: bytes | None) -> None:
        """Resume from the latest checkpoint value (None: there is none, start fresh)."""
        self.state, self.report = load_ingest(value), None
        log.info("monitor.ingest_restored", open=sorted(self.state.open))

    def forget(self) -> None:
        """Not leading any more: the next leadership starts from the checkpoint again."""
        self.state, self.report = None, None

    def check(self) -> list[dict[str, Any]]:
        """Judge ingest now; the alerts-topic records of the alerts it opens or resolves."""
        state = self.state
        if state is None:
            return []  # the checkpoint is not read yet (it may hold an open alert)
        try:
            lag = self._lag()
        except Exception as exc:  # KafkaUnavailableError, KafkaException: no lag, no verdict this time
            self.error = f"lag: {type(exc).__name__}: {exc}"
            log.warning("monitor.ingest_lag_failed", error=self.error)
            return []
        now_ms = int(self._clock() * 1000)
        progress, self.error = self._progress(state, lag, now_ms)
        report = judge_ingest(state, self.config, lag, progress, now_ms)
        self.state, self.report, self.checked_ms, self.dirty = report.state, report, now_ms, True
        for change in report.changes:
            log.warning(
                "monitor.ingest", status=change.status, kind=change.kind, alert_id=change.alert_id,
                severity=change.severity, detail=change.detail,
            )  # fmt: skip
        return [alert_record(change, *self.links, self.config.version) for change in report.changes]

    def _progress(
        self, state: IngestHealth, lag: dict[int, int], now_ms: int
    ) -> tuple[dict[int, int], str | None]:
        """Newest progress time per partition the warehouse shows, and the error that kept it from
        answering (then only what it answered before the error)."""
        progress: dict[int, int] = {}
        try:
            for p, at in self.warehouse.rows(_BATCH_PROGRESS, {"t": self.topic}):
                progress[int(p)] = int(at)
            doubtful = unproven(state, self.config, lag, progress, now_ms)
            if doubtful:
                params = {"t": self.topic, "parts": doubtful, "since": now_ms - EVENT_PROGRESS_LOOKBACK_MS}
                for p, at in self.warehouse.rows(_EVENT_PROGRESS, params):
                    progress[int(p)] = max(progress.get(int(p), 0), int(at))
        except Exception as exc:  # the warehouse may be the very thing that stopped ingest
            log.warning("monitor.ingest_progress_failed", error=str(exc)[:500])
            return progress, f"progress: {type(exc).__name__}: {exc}"
        return progress, None

    def status(self) -> dict[str, Any]:
        """The last verdicts (overall and per partition), the open ingest alerts, the last error."""
        report, state = self.report, self.state
        return {
            "verdict": report.verdict if report else None,
            "checked_at": _iso(self.checked_ms),
            "partitions": {
                str(p.partition): {
                    "verdict": p.verdict,
                    "lag": p.lag,
                    "growth": p.growth,
                    "idle_s": p.idle_ms / 1000,
                    "last_progress": _iso(p.last_progress_ms),
                }
                for p in (report.partitions if report else ())
            },
            "open": sorted(state.open) if state else [],
            "error": self.error,
        }


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()
