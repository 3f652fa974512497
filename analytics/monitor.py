"""The alert monitor's decisions: closed minutes of per-series counts in, alert changes out. Pure.

A series is tenant x channel x provider. Every closed minute each known series becomes six metric
points (:data:`analytics.runbooks.SERIES_METRICS`), each scored by its own
:class:`~analytics.anomaly.MetricAnomalyDetector` and folded into the series' one open alert by
:class:`~analytics.alerting.AlertTracker`:

* volume          dispatched in the minute (a count; a known series with no row is 0, so an outage
                  that stops all traffic is seen)
* delivery_rate   delivered / outcomes, outcomes = delivered + failed + bounced in the minute
* failure_rate    failed / outcomes, and bounce_rate = bounced / outcomes
* latency_p95     p95 sent -> delivered latency of the minute's deliveries (sample size = their count)
* open_rate       opened / delivered in the minute, capped at 1 (EMAIL and PUSH only)

Rates carry their denominator so the detector knows 1 of 2 from 500 of 1000. Minutes before
``live_from_ms`` are history: learned, never alerted on (the warm-up from the warehouse). The whole
object pickles (about 1.4 KB per detector, 8 KB per series), which is how the runner checkpoints it.

>>> from analytics.alerting import SeriesKey
>>> monitor = AlertMonitor(MonitorConfig(grace_minutes=30, season="none"), live_from_ms=0)
>>> s = SeriesKey("acme-home", "SMS", "sms-primary")
>>> for m in range(90):
...     _ = monitor.observe(m * MINUTE_MS, {s: MinuteCounts(200 + m % 7, 180 + m % 5, 10, 4)})
>>> [(c.status, c.metric, c.kind) for c in monitor.observe(90 * MINUTE_MS, {s: MinuteCounts(200, 60, 10, 130)})]
[('OPENED', 'bounce_rate', 'spike')]
"""  # noqa: E501  (a doctest line cannot be wrapped)

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from analytics.alerting import MINUTE_MS, AlertChange, AlertPolicy, AlertTracker, SeriesKey
from analytics.anomaly import Metric, MetricAnomalyDetector, Season, Verdict
from analytics.runbooks import SERIES_METRICS

METRIC_KINDS: dict[str, Metric] = {
    "volume": "count",
    "delivery_rate": "rate",
    "failure_rate": "rate",
    "bounce_rate": "rate",
    "latency_p95": "latency",
    "open_rate": "rate",
}
OPEN_CHANNELS = frozenset({"EMAIL", "PUSH"})
assert set(METRIC_KINDS) == set(SERIES_METRICS)


@dataclass(frozen=True, slots=True)
class MinuteCounts:
    """One series' closed minute, from the per-minute rollup (event time = when each step happened)."""

    dispatched: int = 0
    delivered: int = 0
    failed: int = 0
    bounced: int = 0
    opened: int = 0
    delivery_latency_p95_ms: float | None = None
    delivery_latency_count: int = 0


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    grace_minutes: int = 60  # points a detector learns before it may alert (history counts)
    season: Season = "auto"
    policy: AlertPolicy = field(default_factory=AlertPolicy)
    retire_after_minutes: int = 7 * 1440  # a series silent this long is forgotten (bounded memory)

    def __post_init__(self) -> None:
        if self.grace_minutes < 0 or self.retire_after_minutes < 60:
            raise ValueError("grace_minutes must be >= 0 and retire_after_minutes >= 60")

    @property
    def version(self) -> str:
        """Content hash of the decision rules, carried by every alert as its policy_version."""
        text = json.dumps(asdict(self), sort_keys=True, default=str)
        return "monitor-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def metric_points(channel: str, counts: MinuteCounts) -> dict[str, tuple[float, float | None]]:
    """The (value, sample size) of each metric this minute says something about.

    >>> metric_points("SMS", MinuteCounts(dispatched=10, delivered=8, failed=1, bounced=1))
    {'volume': (10.0, None), 'delivery_rate': (0.8, 10.0), 'failure_rate': (0.1, 10.0), 'bounce_rate': (0.1, 10.0)}
    """  # noqa: E501
    points: dict[str, tuple[float, float | None]] = {"volume": (float(counts.dispatched), None)}
    outcomes = counts.delivered + counts.failed + counts.bounced
    if outcomes > 0:
        n = float(outcomes)
        points["delivery_rate"] = (counts.delivered / n, n)
        points["failure_rate"] = (counts.failed / n, n)
        points["bounce_rate"] = (counts.bounced / n, n)
    if counts.delivery_latency_count > 0 and counts.delivery_latency_p95_ms is not None:
        points["latency_p95"] = (float(counts.delivery_latency_p95_ms), float(counts.delivery_latency_count))
    if channel in OPEN_CHANNELS and counts.delivered > 0:
        points["open_rate"] = (min(1.0, counts.opened / counts.delivered), float(counts.delivered))
    return points


@dataclass
class _Series:
    detectors: dict[str, MetricAnomalyDetector]
    last_seen_ms: int


class AlertMonitor:
    """Detectors per series x metric and the alert lifecycle, advanced one closed minute at a time."""

    def __init__(self, config: MonitorConfig, live_from_ms: int, seed: int = 0) -> None:
        self.config = config
        self.live_from_ms = live_from_ms
        self.seed = seed
        self.tracker = AlertTracker(config.policy)
        self.series: dict[SeriesKey, _Series] = {}
        self.next_minute_ms: int | None = None  # the first minute not observed yet
        self.sla_open: dict[
            str, tuple[str, int, str]
        ] = {}  # "tenant:channel" -> (alert id, opened ms, cause)
        self.minutes_observed = 0

    def observe(self, minute_ms: int, rows: Mapping[SeriesKey, MinuteCounts]) -> list[AlertChange]:
        """Fold one closed minute (every series with a row, and every known one without: volume 0).

        Minutes must come in order without gaps the caller knows of; one already observed is
        ignored, so a replay after a restart decides nothing twice.
        """
        if minute_ms % MINUTE_MS:
            raise ValueError(f"minute_ms {minute_ms} is not on a minute boundary")
        if self.next_minute_ms is not None and minute_ms < self.next_minute_ms:
            return []
        self.next_minute_ms = minute_ms + MINUTE_MS
        self.minutes_observed += 1
        live = minute_ms >= self.live_from_ms
        changes: list[AlertChange] = []
        for key in rows.keys() - self.series.keys():
            self.series[key] = _Series({}, minute_ms)
        empty = MinuteCounts()
        for key, series in list(self.series.items()):
            counts = rows.get(key)
            if counts is None:
                if minute_ms - series.last_seen_ms > self.config.retire_after_minutes * MINUTE_MS:
                    del self.series[key]
                    continue
                counts = empty
            else:
                series.last_seen_ms = minute_ms
            verdicts = self._score(key, series, minute_ms, counts)
            if live:
                changes.extend(self.tracker.observe(key, minute_ms, verdicts))
        return changes

    def _score(
        self, key: SeriesKey, series: _Series, minute_ms: int, counts: MinuteCounts
    ) -> dict[str, Verdict]:
        verdicts = {}
        t = minute_ms / 1000.0
        for metric, (value, n) in metric_points(key.channel, counts).items():
            detector = series.detectors.get(metric)
            if detector is None:
                detector = series.detectors[metric] = MetricAnomalyDetector(
                    metric=METRIC_KINDS[metric],
                    season=self.config.season,
                    seed=self.seed,
                    grace_period=self.config.grace_minutes,
                )
            verdicts[metric] = detector.update(t, value, n)
        return verdicts

    def open_alerts(self) -> list[AlertChange]:
        return self.tracker.open_alerts()

    @property
    def detector_count(self) -> int:
        return sum(len(s.detectors) for s in self.series.values())
