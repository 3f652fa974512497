"""The experimentation jobs of the leading worker: every experiment's statistics, segment snapshots.

Sufficient statistics accumulate in the warehouse as events are inserted: the materialized view
``experiment_variant_minute`` keeps, per experiment, variant and minute, the exact sets of exposed and
converted notifications and the latency sums (migration 0006). Every ``HERALD_EXPERIMENTS_INTERVAL_S``
the worker leading the alert monitor (one per consumer group, see streams/monitor.py) reads them for
every experiment that is running or stopped less than :data:`STOPPED_GRACE_MS` ago, builds the report
with :func:`projections.experiment_queries.experiment_report` (experiments/analyze.py underneath, the
code behind the API and ``cli.py experiments analyze``) and, when the statistics moved since its last
computation:

- appends the report's rows to ``experiment_results`` (the effect over time the dashboard plots);
- publishes the report as the experiment's latest status on the compacted topic
  ``herald.experiments.status.v1`` (key ``tenant/experiment``, JSON, see docs/experiments.md), for
  services that want the status without asking the API.

A new leader recomputes everything on its first run: the rows are a time series and a status message
replaces the previous one under its key, so a repeat is harmless.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from confluent_kafka import KafkaError, Producer

from experiments.definitions import ExperimentDefinition, LoadedExperiments
from policies.segments import Segment
from projections import experiment_queries
from projections.engagement import snapshot_segments
from projections.warehouse import Warehouse

log = structlog.get_logger("herald.experiments")

STATUS_FORMAT = "herald.experiments.status/1"
STOPPED_GRACE_MS = 86_400_000  # a stopped experiment's late outcomes still count for a day


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The one-line answer a service wants: the primary metric's state and its sequential decision
    per treatment (safe to act on at any time), and whether the split is healthy.

    >>> summary({"primary_metric": "open_rate", "running": True, "metrics": {"open_rate": {
    ...     "status": "ok", "srm_flag": False, "results": [
    ...         {"variant": "v2", "seq_decision": "treatment_better", "relative_effect": 0.1}]}}})
    {'state': 'running', 'primary_metric': 'open_rate', 'primary_status': 'ok', 'srm_flag': False, \
'decisions': {'v2': 'treatment_better'}}
    """
    primary = report["metrics"].get(report["primary_metric"], {"status": "waiting"})
    return {
        "state": "running" if report["running"] else "stopped",
        "primary_metric": report["primary_metric"],
        "primary_status": primary["status"],
        "srm_flag": primary.get("srm_flag"),
        "decisions": {r["variant"]: r.get("seq_decision") for r in primary.get("results", [])},
    }


def _fingerprint(stats: experiment_queries.Stats, version: str) -> str:
    return hashlib.sha256(json.dumps([stats, version], sort_keys=True).encode()).hexdigest()


class ExperimentsJob:
    """One computation per call to :meth:`run`; the monitor's leader loop calls it on its interval."""

    name = "experiments"

    def __init__(
        self,
        warehouse: Warehouse,
        bootstrap: str,
        topic: str,
        definitions: Callable[[], LoadedExperiments | None],
        interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.warehouse = warehouse
        self.topic = topic
        self.interval_s = interval_s
        self._definitions = definitions
        self._clock = clock
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 20}
        )
        self._seen: dict[tuple[str, str], str] = {}  # (tenant, experiment) -> stats fingerprint
        self._errors: list[str] = []
        self.computed = 0  # reports stored since start
        self.last_run_at: float | None = None

    def _active(self, loaded: LoadedExperiments, now_ms: int) -> list[ExperimentDefinition]:
        return [d for d in loaded.definitions.values() if d.start_ms <= now_ms < d.stop_ms + STOPPED_GRACE_MS]

    def run(self) -> int:
        """Recompute every active experiment whose statistics changed; returns how many were stored.
        Raises when the broker refused a status (the rows are then written again next time)."""
        loaded = self._definitions()
        self.last_run_at = self._clock()
        if loaded is None:
            return 0
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        now_ms = int(now.timestamp() * 1000)
        active = self._active(loaded, now_ms)
        stats = experiment_queries.variant_stats(self.warehouse, [(d.tenant, d.id) for d in active])
        rows: list[tuple[Any, ...]] = []
        changed: list[tuple[tuple[str, str], str]] = []
        for defn in active:
            key = (defn.tenant, defn.id)
            fingerprint = _fingerprint(stats[key], loaded.version)
            if self._seen.get(key) == fingerprint:
                continue
            report = experiment_queries.experiment_report(defn, stats[key], now_ms)
            rows.extend(experiment_queries.result_rows(report, now, loaded.version))
            status = {
                "format": STATUS_FORMAT,
                "computed_at": now.isoformat(),
                "definition_version": loaded.version,
                "summary": summary(report),
                **report,
            }
            self._producer.produce(
                self.topic,
                key=f"{defn.tenant}/{defn.id}".encode(),
                value=json.dumps(status, allow_nan=False).encode(),
                on_delivery=self._on_delivery,
            )
            changed.append((key, fingerprint))
        if rows:
            self.warehouse.insert("experiment_results", rows, experiment_queries.RESULT_COLUMNS)
        if changed:
            self._producer.flush(15)
            if self._errors:
                problem, self._errors = self._errors[0], []
                raise RuntimeError(f"experiment status not published: {problem}")
            for key, fingerprint in changed:
                self._seen[key] = fingerprint
            self.computed += len(changed)
            log.info("experiments.computed", experiments=len(changed), rows=len(rows))
        return len(changed)

    def status(self) -> dict[str, Any]:
        return {"computed": self.computed, "tracked": len(self._seen), "last_run_at": self.last_run_at}

    def close(self) -> None:
        self._producer.flush(10)

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self._errors.append(str(err))


class SegmentSnapshotJob:
    """Every ``HERALD_SEGMENT_SNAPSHOT_S``: every segment's size and members over the engagement
    profiles, into ``segment_sizes`` and ``segment_members`` (see projections/engagement.py)."""

    name = "segments"

    def __init__(
        self,
        warehouse: Warehouse,
        segments: Callable[[], Mapping[str, Segment]],
        interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.warehouse = warehouse
        self.interval_s = interval_s
        self._segments = segments
        self._clock = clock
        self.snapshots = 0
        self.last_sizes: dict[tuple[str, str], int] = {}

    def run(self) -> int:
        at = datetime.fromtimestamp(self._clock(), tz=UTC)
        self.last_sizes = snapshot_segments(self.warehouse, self._segments(), at)
        self.snapshots += 1
        log.info("segments.snapshot", segments=len(self.last_sizes), members=sum(self.last_sizes.values()))
        return len(self.last_sizes)

    def status(self) -> dict[str, Any]:
        return {"snapshots": self.snapshots, "segments": len(self.last_sizes)}

    def close(self) -> None:
        pass
