"""The alert monitor's decisions on simulated traffic, minute by minute, as the warehouse rollup would
present them: quiet on normal traffic, one alert for a delivery drop on one series and its
resolution, the same decisions after a restart from a pickled checkpoint."""

from __future__ import annotations

import math
import pickle
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from analytics.alerting import MINUTE_MS, AlertChange, SeriesKey
from analytics.monitor import AlertMonitor, MinuteCounts, MonitorConfig, metric_points
from analytics.runbooks import RUNBOOKS
from simulator.model import DEFAULT_MODEL, Effect, generate_notifications, in_time_order
from simulator.scenarios import AnomalyWindow, Scenario

START = datetime(2026, 3, 2, 8, tzinfo=UTC)  # a Monday morning
HOURS = 2.5
DROP = (90 * 60, 105 * 60)  # seconds from START
SERIES = SeriesKey("acme-home", "SMS", "sms-primary")
START_MS = int(START.timestamp() * 1000)
Rows = dict[int, dict[SeriesKey, MinuteCounts]]


def minute_rows(events: list[dict[str, Any]]) -> Rows:
    """What delivery_minute holds, summed over templates: counts per occurred_at minute and series,
    p95 of DELIVERED latency (nearest rank, as an exact stand-in for the warehouse's t-digest)."""
    counts: dict[tuple[int, SeriesKey], Counter[str]] = defaultdict(Counter)
    latencies: dict[tuple[int, SeriesKey], list[int]] = defaultdict(list)
    for e in events:
        if not e.get("provider"):
            continue
        minute = int(e["occurred_at"].timestamp() * 1000) // MINUTE_MS * MINUTE_MS
        key = (minute, SeriesKey(e["tenant_id"], e["channel"], e["provider"]))
        counts[key][e["event_type"]] += 1
        if e["event_type"] == "DELIVERED" and e.get("latency_ms") is not None:
            latencies[key].append(e["latency_ms"])
    rows: Rows = defaultdict(dict)
    for (minute, series), c in counts.items():
        lat = sorted(latencies[minute, series])
        p95 = float(lat[max(0, math.ceil(0.95 * len(lat)) - 1)]) if lat else None
        rows[minute][series] = MinuteCounts(
            c["DISPATCHED"], c["DELIVERED"], c["FAILED"], c["BOUNCED"], c["OPENED"], p95, len(lat)
        )
    return rows


@pytest.fixture(scope="module")
def drill() -> Rows:
    """2.5 h of live traffic at 10 notifications/s; acme-home's primary SMS provider delivers 30 % of
    its messages from minute 90 to 105."""
    window = AnomalyWindow(
        "delivery_drop", *DROP, Effect(delivered_factor=0.3),
        tenant_id=SERIES.tenant_id, channel=SERIES.channel, provider=SERIES.provider,
    )  # fmt: skip
    end = START + timedelta(hours=HOURS)
    notifications = generate_notifications(
        DEFAULT_MODEL, START, 10, HOURS * 3600, seed=21, scenario=Scenario("drill", (window,))
    )
    return minute_rows([e for e in in_time_order(notifications) if e["occurred_at"] < end])


def run(monitor: AlertMonitor, rows: Rows, upto: int, first: int = 0) -> list[AlertChange]:
    """Observe minutes [first, upto) of the drill, counted from START."""
    changes = []
    for minute in range(START_MS + first * MINUTE_MS, START_MS + upto * MINUTE_MS, MINUTE_MS):
        changes.extend(monitor.observe(minute, rows.get(minute, {})))
    return changes


def test_normal_hour_is_quiet_and_a_delivery_drop_on_one_series_is_one_alert_then_resolved(
    drill: Rows,
) -> None:
    monitor = AlertMonitor(MonitorConfig(grace_minutes=30), live_from_ms=START_MS)
    assert run(monitor, drill, 90) == []  # 30 minutes learning, then an hour of normal traffic
    assert len(monitor.series) == 20 and monitor.detector_count >= 100
    changes = run(monitor, drill, int(HOURS * 60), first=90)
    assert [(c.status, c.series, c.metric, c.kind) for c in changes] == [
        ("OPENED", SERIES, "delivery_rate", "drop"),
        ("RESOLVED", SERIES, "delivery_rate", "drop"),
    ]
    opened, resolved = changes
    assert opened.alert_id == resolved.alert_id
    assert opened.first_seen_ms == START_MS + 90 * MINUTE_MS  # the drop's first minute
    assert opened.severity in ("major", "critical") and opened.observed < 0.5 and opened.expected > 0.9
    assert "failure_rate spike" in opened.detail  # the mirror metric folds into the same alert
    assert resolved.window_end_ms == START_MS + 105 * MINUTE_MS  # end of the last bad minute
    assert START_MS + 105 * MINUTE_MS < resolved.at_ms <= START_MS + 112 * MINUTE_MS
    assert opened.runbook_key in RUNBOOKS


def test_a_monitor_restored_from_a_checkpoint_decides_exactly_as_one_that_never_stopped(
    drill: Rows,
) -> None:
    straight = AlertMonitor(MonitorConfig(grace_minutes=30), live_from_ms=START_MS)
    expected = run(straight, drill, int(HOURS * 60))
    first = AlertMonitor(MonitorConfig(grace_minutes=30), live_from_ms=START_MS)
    before = run(first, drill, 95)  # the alert is open at the checkpoint
    assert [c.status for c in before] == ["OPENED"]
    restored = pickle.loads(pickle.dumps(first))
    assert restored.open_alerts() == first.open_alerts()
    assert run(restored, drill, 95) == []  # minutes already decided are not decided again
    assert before + run(restored, drill, int(HOURS * 60), first=95) == expected
    assert len(pickle.dumps(restored)) < 10_000 * len(restored.series)  # ~1.4 KB per detector


def test_history_trains_without_alerting_and_live_minutes_alert(
    drill: Rows,
) -> None:
    """Minutes before live_from are learned only; a monitor that met the drop as history stays quiet
    about it, one that goes live just before it alerts."""
    history_only = AlertMonitor(MonitorConfig(grace_minutes=30), live_from_ms=START_MS + 200 * MINUTE_MS)
    assert run(history_only, drill, int(HOURS * 60)) == []
    live = AlertMonitor(MonitorConfig(grace_minutes=30), live_from_ms=START_MS + 85 * MINUTE_MS)
    assert [c.status for c in run(live, drill, int(HOURS * 60))] == ["OPENED", "RESOLVED"]


def test_a_series_that_goes_silent_is_a_volume_drop_and_is_forgotten_after_the_retirement_time() -> None:
    config = MonitorConfig(grace_minutes=20, season="none", retire_after_minutes=60)
    monitor = AlertMonitor(config, live_from_ms=0)
    quiet = SeriesKey("tiny", "EMAIL", "smtp")
    busy = SeriesKey("big", "EMAIL", "smtp")
    changes: list[AlertChange] = []
    for m in range(60):
        rows = {busy: MinuteCounts(100 + m % 5, 95, 3, 2, 20), quiet: MinuteCounts(80 + m % 3, 78, 1, 1, 10)}
        changes += monitor.observe(m * MINUTE_MS, rows)
    for m in range(60, 200):
        changes += monitor.observe(m * MINUTE_MS, {busy: MinuteCounts(100 + m % 5, 95, 3, 2, 20)})
    first = changes[0]
    assert (first.status, first.series, first.metric, first.kind) == ("OPENED", quiet, "volume", "drop")
    assert first.first_seen_ms == 60 * MINUTE_MS
    assert quiet not in monitor.series and busy in monitor.series  # silent > 60 min: retired


def test_metric_points_use_counts_and_skip_what_a_minute_cannot_say() -> None:
    assert metric_points("SMS", MinuteCounts()) == {"volume": (0.0, None)}  # no outcomes: no rates
    email = metric_points("EMAIL", MinuteCounts(5, 4, 0, 1, 9, 1200.0, 4))
    assert email["open_rate"] == (1.0, 4.0)  # opens of earlier deliveries can outnumber: capped
    assert email["latency_p95"] == (1200.0, 4.0)
    assert "open_rate" not in metric_points("SMS", MinuteCounts(5, 4, 0, 1, 2))


def test_minutes_must_be_on_the_minute() -> None:
    with pytest.raises(ValueError, match="minute boundary"):
        AlertMonitor(MonitorConfig(), live_from_ms=0).observe(1_000, {})
