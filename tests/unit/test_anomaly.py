"""Online anomaly detection: score bounds, strict online scoring, seasonality, low volume, pickling, CLI."""

from __future__ import annotations

import doctest
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import analytics.anomaly
import analytics.series
from analytics.anomaly import ALERT_THRESHOLD, MetricAnomalyDetector, Verdict
from analytics.cli import app
from analytics.series import SeriesFormatError, read_series

MONDAY = 1_704_067_200.0  # 2024-01-01 00:00 UTC
DAY_MINUTES = 1440


def seasonal_counts(days: int, seed: int = 0, peak: float = 300.0) -> np.ndarray:
    """Poisson volume with a midday peak: a quiet night and a busy afternoon."""
    minute = np.arange(days * DAY_MINUTES)
    hour = (minute % DAY_MINUTES) / 60.0
    mean = peak * (0.15 + 0.85 * np.exp(-(((hour - 13.0) / 4.0) ** 2)))
    return np.random.default_rng(seed).poisson(mean).astype(float)


def run(
    detector: MetricAnomalyDetector, values: np.ndarray, counts: np.ndarray | None = None
) -> list[Verdict]:
    return [
        detector.update(MONDAY + 60.0 * i, float(v), None if counts is None else float(counts[i]))
        for i, v in enumerate(values)
    ]


def test_scores_stay_in_unit_interval_one_per_point() -> None:
    """Every update yields exactly one score in [0, 1], whatever the values (zeros, huge, NaN)."""
    values = np.concatenate([seasonal_counts(2), [0.0, 1e9, math.nan, -5.0, 0.0, 1e-9]])
    for metric in ("count", "rate", "latency", "value"):
        detector = MetricAnomalyDetector(metric=metric, grace_period=60)
        verdicts = run(detector, values / 400.0 if metric == "rate" else values)
        assert len(verdicts) == len(values)
        assert all(0.0 <= v.score <= 1.0 for v in verdicts)


def test_score_of_a_point_ignores_later_points() -> None:
    """Scores are strictly online: changing the future leaves every earlier score unchanged."""
    original = seasonal_counts(2, seed=1)
    changed = original.copy()
    cut = 2000
    changed[cut:] = np.random.default_rng(9).permutation(changed[cut:]) * 3.0
    first = [v.score for v in run(MetricAnomalyDetector(metric="count", grace_period=100), original)]
    second = [v.score for v in run(MetricAnomalyDetector(metric="count", grace_period=100), changed)]
    assert first[:cut] == second[:cut]
    assert first[cut:] != second[cut:]


def test_step_drop_after_a_stable_seasonal_week_alerts_and_a_normal_day_does_not() -> None:
    """After a week of daily-seasonal volume, a normal day stays quiet and a noon outage alerts."""
    history, today = seasonal_counts(7, seed=2), seasonal_counts(1, seed=3)
    quiet = MetricAnomalyDetector(metric="count")
    quiet.warm_up((MONDAY + 60.0 * i, float(v)) for i, v in enumerate(history))
    outage = pickle.loads(pickle.dumps(quiet))
    start = MONDAY + 7 * 86_400.0
    normal = [quiet.update(start + 60.0 * i, float(v)) for i, v in enumerate(today)]
    assert max(v.score for v in normal) < ALERT_THRESHOLD
    broken = today.copy()
    broken[720:780] = 2.0  # the noon hour collapses to almost nothing
    verdicts = [outage.update(start + 60.0 * i, float(v)) for i, v in enumerate(broken)]
    assert verdicts[720].is_anomaly and verdicts[720].kind == "drop"
    assert verdicts[720].severity == "critical" and verdicts[720].expected > 200
    assert all(v.is_anomaly for v in verdicts[720:780])
    assert not any(v.is_anomaly for v in verdicts[800:])  # recovery is not a new incident


def test_single_minute_spike_is_reported_as_spike() -> None:
    """One minute far above the usual level is a spike, and the minute after is normal again."""
    detector = MetricAnomalyDetector(metric="latency", season="none", grace_period=100)
    latencies = 800.0 * np.random.default_rng(4).lognormal(0.0, 0.05, 400)
    run(detector, latencies)
    spike = detector.update(MONDAY + 60.0 * 400, 4000.0)
    assert spike.kind == "spike" and spike.observed > spike.expected
    assert not detector.update(MONDAY + 60.0 * 401, 810.0).is_anomaly


def test_low_volume_rate_with_small_counts_does_not_alert() -> None:
    """A delivery rate over 1-3 messages a minute swings between 0 and 1 without alerting."""
    rng = np.random.default_rng(5)
    counts = rng.integers(1, 4, 3 * DAY_MINUTES).astype(float)
    rates = rng.binomial(counts.astype(int), 0.9) / counts
    detector = MetricAnomalyDetector(metric="rate")
    verdicts = run(detector, rates, counts)
    assert not any(v.is_anomaly for v in verdicts)
    assert not detector.update(MONDAY + 3 * 86_400.0, 0.0, count=2.0).is_anomaly  # 0 of 2 delivered


def test_same_rate_drop_alerts_when_the_denominator_is_large() -> None:
    """The denominator carries the evidence: 0% of 1000 after a steady 90% is a drop."""
    detector = MetricAnomalyDetector(metric="rate", season="none", grace_period=100)
    rng = np.random.default_rng(6)
    run(detector, rng.binomial(1000, 0.9, 300) / 1000.0, np.full(300, 1000.0))
    verdict = detector.update(MONDAY + 60.0 * 300, 0.0, count=1000.0)
    assert verdict.kind == "drop" and verdict.severity == "critical"


def test_no_alerts_during_warm_up() -> None:
    """Nothing alerts before grace_period points were learned, however odd the values."""
    detector = MetricAnomalyDetector(metric="count", grace_period=50)
    verdicts = run(detector, np.array([1.0, 1000.0, 0.0, 5.0] * 12))
    assert all(v.score == 0.0 and v.warming_up for v in verdicts)


def test_persistent_level_shift_is_accepted_and_alerts_stop() -> None:
    """A step that lasts accept_shift_after points becomes the new normal: alerts end."""
    detector = MetricAnomalyDetector(metric="count", season="none", grace_period=100, accept_shift_after=60)
    rng = np.random.default_rng(7)
    run(detector, rng.poisson(100.0, 300).astype(float))
    shifted = run(detector, rng.poisson(40.0, 200).astype(float))
    assert shifted[0].kind == "drop"
    assert shifted[59].kind == "level_shift"
    assert not any(v.is_anomaly for v in shifted[80:])


def test_non_finite_value_gives_a_neutral_verdict_and_is_not_learned() -> None:
    """A NaN point scores 0 and leaves the state as it was."""
    detector = MetricAnomalyDetector(metric="value", season="none", grace_period=10)
    run(detector, np.linspace(1.0, 2.0, 50))
    before = pickle.dumps(detector)
    verdict = detector.update(MONDAY + 60.0 * 50, math.nan)
    assert verdict.score == 0.0 and not verdict.is_anomaly
    assert pickle.dumps(detector) == before


def test_pickle_round_trip_continues_identically() -> None:
    """A detector restored from pickle scores the rest of the series exactly like the original."""
    values = seasonal_counts(3, seed=8)
    original = MetricAnomalyDetector(metric="count")
    run(original, values[:2500])
    restored = pickle.loads(pickle.dumps(original))
    rest = values[2500:]
    stamps = MONDAY + 60.0 * np.arange(2500, len(values))
    assert [original.update(t, v) for t, v in zip(stamps, rest, strict=True)] == [
        restored.update(t, v) for t, v in zip(stamps, rest, strict=True)
    ]


def test_pickled_state_stays_under_two_kilobytes() -> None:
    """Per-series state is small enough for 100k series in one worker (< 2 KB each)."""
    for season in ("none", "daily", "weekly", "auto"):
        detector = MetricAnomalyDetector(metric="count", season=season)
        run(detector, seasonal_counts(8, seed=9)[::4])
        assert len(pickle.dumps(detector)) < 2048


def test_same_seed_gives_identical_scores() -> None:
    """Seeded detectors (and River clones) are deterministic: same input, same verdicts."""
    values = seasonal_counts(2, seed=10)
    first = MetricAnomalyDetector(metric="count", seed=42, grace_period=200)
    second = first.clone()
    assert second.seed == 42 and second.metric == "count"
    assert run(first, values) == run(second, values)


def test_river_protocol_scores_then_learns() -> None:
    """score_one does not learn; learn_one then changes the next score, as in River."""
    detector = MetricAnomalyDetector(metric="value", season="none", grace_period=20)
    for i in range(100):
        detector.learn_one({"timestamp": 60.0 * i, "value": 10.0 + (i % 5)})
    x = {"timestamp": 6000.0, "value": 30.0}
    assert detector.score_one(x) == detector.score_one(x) >= ALERT_THRESHOLD
    for i in range(101, 400):  # the new level becomes normal through learn_one
        detector.learn_one({"timestamp": 60.0 * i, "value": 30.0})
    assert detector.score_one(x) < ALERT_THRESHOLD


def test_doctests_in_analytics_modules_pass() -> None:
    """The runnable examples in the docstrings are correct."""
    for module in (analytics.anomaly, analytics.series):
        assert doctest.testmod(module).failed == 0


def test_cli_round_trip_writes_one_score_per_row_in_order(tmp_path: Path) -> None:
    """score reads ISO or unix timestamps, skips blank lines, writes one scored row per input row."""
    rows = [f"{MONDAY + 60 * i:.0f},{100 + i % 7}" for i in range(300)]
    rows[5] = "2024-01-01T00:05:00Z,104"
    source = tmp_path / "series.csv"
    source.write_text("timestamp,value\n" + "\n".join(rows[:150]) + "\n\n" + "\n".join(rows[150:]) + "\n")
    target = tmp_path / "scores.csv"
    result = CliRunner().invoke(
        app, ["score", "--input", str(source), "--output", str(target), "--season", "none", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    lines = target.read_text().splitlines()
    assert lines[0] == "timestamp,value,anomaly_score"
    assert [line.rsplit(",", 1)[0] for line in lines[1:]] == rows
    assert all(0.0 <= float(line.rsplit(",", 1)[1]) <= 1.0 for line in lines[1:])


def test_cli_names_the_line_of_a_bad_row(tmp_path: Path) -> None:
    """A malformed row fails the command with its line number and writes no output."""
    source = tmp_path / "series.csv"
    source.write_text("timestamp,value\n60,1\n\n120,oops\n180,3\n")
    target = tmp_path / "scores.csv"
    result = CliRunner().invoke(app, ["score", "--input", str(source), "--output", str(target)])
    assert result.exit_code == 2
    assert "line 4" in result.output and "oops" in result.output
    assert not target.exists()


def test_read_series_takes_an_optional_count_column_in_any_order() -> None:
    """Columns are found by header name; an empty count cell means no denominator."""
    rows = read_series(["count,value,timestamp", "40,0.95,60", ",0.5,1970-01-01T00:02:00"])
    assert [(r.timestamp, r.value, r.count) for r in rows] == [(60.0, 0.95, 40.0), (120.0, 0.5, None)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("value,other\n1,2\n", "line 1: header must name timestamp and value"),
        ("timestamp,value\n60,1,2\n", "line 2: expected 2 fields, found 3"),
        ("timestamp,value\n60,inf\n", "line 2: value 'inf' is not finite"),
        ("", "line 1: missing header"),
    ],
)
def test_read_series_rejects_malformed_text(text: str, message: str) -> None:
    """Malformed series text raises SeriesFormatError naming the line and the problem."""
    with pytest.raises(SeriesFormatError, match=message):
        read_series(text.splitlines(keepends=True))
