"""Alert lifecycle per series: one open alert, resolution, cooldown, determinism, and the alerts contract."""

from __future__ import annotations

import doctest
import pickle

import analytics.alerting
from analytics.alerting import (
    MINUTE_MS,
    AlertChange,
    AlertPolicy,
    AlertTracker,
    SeriesKey,
    alert_id,
    alert_record,
)
from analytics.anomaly import Verdict
from schemas.codec import AvroCodec

S = SeriesKey("acme-home", "SMS", "sms-primary")
OTHER = SeriesKey("brightfix", "EMAIL", "smtp-primary")
DROP = Verdict(0, 0.40, 0.95, 0.99, -9.0, "drop", "critical", False)
SPIKE = Verdict(0, 0.30, 0.02, 0.97, 8.0, "spike", "major", False)
NORMAL = Verdict(0, 0.95, 0.95, 0.01, 0.1, None, "none", False)
WARMING = Verdict(0, 0.10, 0.95, 0.99, -9.0, "drop", "critical", True)


def minutes(
    tracker: AlertTracker, series: SeriesKey, start: int, pattern: list[dict[str, Verdict]]
) -> list[AlertChange]:
    out: list[AlertChange] = []
    for i, verdicts in enumerate(pattern):
        out += tracker.observe(series, (start + i) * MINUTE_MS, verdicts)
    return out


def test_a_multi_minute_anomaly_on_several_metrics_opens_one_alert_then_resolves_once() -> None:
    """Metrics of one series fold into its single open alert; normal minutes resolve it once."""
    tracker = AlertTracker(AlertPolicy(cooldown_minutes=30, resolve_after_minutes=3))
    bad = {"delivery_rate": DROP, "failure_rate": SPIKE}
    changes = minutes(tracker, S, 10, [bad] * 6 + [{"delivery_rate": NORMAL}] * 5)
    assert [c.status for c in changes] == ["OPENED", "RESOLVED"]
    opened, resolved = changes
    assert opened.alert_id == resolved.alert_id and opened.metric == "delivery_rate"
    assert (opened.window_start_ms, resolved.window_end_ms) == (10 * MINUTE_MS, 16 * MINUTE_MS)
    assert resolved.at_ms == 18 * MINUTE_MS  # third normal minute


def test_the_alert_names_the_worst_metric_and_its_runbook() -> None:
    """The highest-scoring metric opens the alert and picks the runbook section."""
    tracker = AlertTracker()
    (opened,) = tracker.observe(S, 0, {"failure_rate": SPIKE, "delivery_rate": DROP})
    assert opened.metric == "delivery_rate" and opened.kind == "drop" and opened.severity == "critical"
    assert opened.runbook_key == "delivery_rate.drop"


def test_a_clearly_worse_metric_names_the_alert_but_near_ties_go_to_the_headline_metric() -> None:
    weak_drop = Verdict(0, 0.80, 0.95, 0.70, -5.0, "drop", "minor", False)
    (opened,) = AlertTracker().observe(S, 0, {"delivery_rate": weak_drop, "failure_rate": SPIKE})
    assert (opened.metric, opened.severity) == ("failure_rate", "major")
    assert opened.detail.startswith("failure_rate spike") and "delivery_rate drop" in opened.detail


MINOR = Verdict(0, 0.80, 0.95, 0.55, -4.2, "drop", "minor", False)


def test_a_minor_anomaly_must_last_two_minutes_and_the_alert_starts_at_its_first() -> None:
    """One weak minute alone opens nothing; two in a row open an alert that starts at the first."""
    tracker = AlertTracker(AlertPolicy(confirm_minutes=2))
    assert minutes(tracker, S, 0, [{"open_rate": MINOR}, {"open_rate": NORMAL}]) == []
    (opened,) = minutes(tracker, S, 5, [{"open_rate": MINOR}, {"open_rate": MINOR}])
    assert (opened.first_seen_ms, opened.window_start_ms, opened.at_ms) == (
        5 * MINUTE_MS,
        5 * MINUTE_MS,
        6 * MINUTE_MS,
    )
    assert opened.alert_id == alert_id(S, 5 * MINUTE_MS) and opened.severity == "minor"


def test_cooldown_keeps_a_recurring_anomaly_from_paging_again_at_once() -> None:
    """After a resolution the series stays quiet for the cooldown, then may open a new alert."""
    tracker = AlertTracker(AlertPolicy(cooldown_minutes=10, resolve_after_minutes=1))
    first = minutes(tracker, S, 0, [{"v": DROP}, {"v": NORMAL}])
    during = minutes(tracker, S, 2, [{"v": DROP}] * 5)
    after = minutes(tracker, S, 11, [{"v": DROP}])
    assert [c.status for c in first] == ["OPENED", "RESOLVED"] and during == []
    assert [c.status for c in after] == ["OPENED"] and after[0].alert_id != first[0].alert_id


def test_series_are_independent() -> None:
    """An open alert on one series does not hide an anomaly on another."""
    tracker = AlertTracker()
    assert len(tracker.observe(S, 0, {"v": DROP})) == 1
    assert len(tracker.observe(OTHER, 0, {"v": DROP})) == 1
    assert len(tracker.open_alerts()) == 2


def test_warming_up_and_normal_verdicts_never_open_an_alert() -> None:
    """No alert while the detector is still learning, whatever it scores."""
    tracker = AlertTracker()
    assert minutes(tracker, S, 0, [{"v": WARMING}, {"v": NORMAL}] * 10) == []


def test_replayed_minutes_decide_nothing_new_and_ids_are_deterministic() -> None:
    """Re-observing a minute is a no-op; a fresh tracker replaying the same minutes emits the same ids."""
    pattern = [{"v": DROP}] * 2 + [{"v": NORMAL}] * 5
    first = minutes(AlertTracker(), S, 100, pattern)
    tracker = AlertTracker()
    second = minutes(tracker, S, 100, pattern)
    assert first == second and first[0].alert_id == alert_id(S, 100 * MINUTE_MS)
    assert tracker.observe(S, 100 * MINUTE_MS, {"v": DROP}) == []


def test_tracker_state_survives_a_pickle_round_trip() -> None:
    """A restored tracker resolves the alert its predecessor opened."""
    tracker = AlertTracker(AlertPolicy(resolve_after_minutes=2))
    (opened,) = tracker.observe(S, 0, {"v": DROP})
    restored: AlertTracker = pickle.loads(pickle.dumps(tracker))
    changes = minutes(restored, S, 1, [{"v": NORMAL}] * 2)
    assert [(c.status, c.alert_id) for c in changes] == [("RESOLVED", opened.alert_id)]


def test_alert_records_follow_the_contract_and_carry_working_links() -> None:
    """Records encode with the alert schema; links point at the series' dashboard and its runbook anchor."""
    (opened,) = AlertTracker().observe(S, 5 * MINUTE_MS, {"delivery_rate": DROP})
    record = alert_record(opened, "http://herald:8740", "https://docs.example/herald", policy_version="p1")
    codec = AvroCodec.for_contract("alert_event")
    decoded = codec.decode(codec.encode(record))
    assert decoded["status"] == "OPENED" and decoded["alert_id"] == opened.alert_id
    assert record["dashboard_url"] == (
        "http://herald:8740/dashboard?tenant=acme-home&channel=SMS&provider=sms-primary&range=6h"
    )
    assert record["runbook_url"].startswith("https://docs.example/herald/docs/runbooks/delivery.md#")


def test_docstring_examples_run() -> None:
    """The module's examples are tested."""
    assert doctest.testmod(analytics.alerting).failed == 0
