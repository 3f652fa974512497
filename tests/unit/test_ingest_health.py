"""Ingest health decisions on lag and progress given as values: ok, lagging, stalled, recovery, the
alerts they open and resolve, bounded lag history and a state that round-trips through JSON."""

from __future__ import annotations

import doctest
import json
from collections.abc import Iterable

import pytest

import analytics.ingest_health
from analytics.alerting import alert_record
from analytics.ingest_health import (
    INGEST_SERIES,
    IngestHealth,
    IngestHealthConfig,
    IngestReport,
    judge_ingest,
    unproven,
)
from schemas.codec import AvroCodec

S = 1000
CONFIG = IngestHealthConfig(
    stall_after_ms=120 * S, lag_alert=50_000, growth_window_ms=300 * S, max_samples=32
)
Sample = tuple[int, dict[int, int], dict[int, int]]  # (now_ms, lag, progress)


def run(samples: Iterable[Sample], state: IngestHealth | None = None) -> list[IngestReport]:
    """Every report of feeding ``samples`` in order, each on the state the one before left."""
    reports: list[IngestReport] = []
    current = state or IngestHealth()
    for now_ms, lag, progress in samples:
        reports.append(judge_ingest(current, CONFIG, lag, progress, now_ms))
        current = reports[-1].state
    return reports


def changes(reports: Iterable[IngestReport]) -> list[tuple[str, str, str]]:
    return [(c.status, c.kind, c.severity) for r in reports for c in r.changes]


def test_a_partition_that_keeps_writing_while_behind_is_ok() -> None:
    """Lag under steady traffic is not a stall while progress keeps coming."""
    reports = run((t * S, {0: 500}, {0: t * S - 200}) for t in range(0, 600, 5))
    assert {r.verdict for r in reports} == {"ok"} and changes(reports) == []


def test_a_partition_with_no_traffic_and_no_lag_is_ok() -> None:
    """Nothing written for hours with nothing to write is idle, not stalled."""
    reports = run((t * S, {0: 0, 1: 0}, {}) for t in range(0, 7200, 60))
    assert {r.verdict for r in reports} == {"ok"} and changes(reports) == []
    assert reports[-1].partitions[0].idle_ms == 0


def test_an_idle_partition_that_just_got_a_message_is_behind_not_stalled() -> None:
    """The stall clock starts with the run of lag > 0, not at the last write an hour ago."""
    (report,) = run([(3600 * S, {0: 3}, {0: 0})])
    assert report.verdict == "ok" and report.partitions[0].idle_ms == 0


def test_behind_without_progress_past_the_threshold_is_stalled_and_opens_a_critical_alert() -> None:
    """Lag > 0 and no write for longer than the stall threshold opens one global stall alert."""
    reports = run(
        [(0, {0: 0, 1: 0}, {0: 0, 1: 0}), (10 * S, {0: 40, 1: 0}, {}), (130 * S, {0: 90, 1: 0}, {})]
    )
    assert [r.verdict for r in reports] == ["ok", "ok", "ok"]  # 120 s since the last write is not "longer"
    (stalled,) = run([(131 * S, {0: 95, 1: 0}, {})], reports[-1].state)
    assert stalled.verdict == "stalled" and [p.verdict for p in stalled.partitions] == ["stalled", "ok"]
    (alert,) = stalled.changes
    assert (alert.status, alert.metric, alert.kind, alert.severity) == (
        "OPENED",
        "ingest",
        "stall",
        "critical",
    )
    assert alert.series == INGEST_SERIES and alert.runbook_key == "ingest.stall"
    assert alert.first_seen_ms == 10 * S and alert.observed == 95  # stalled since it fell behind
    assert "partition 0: 95 behind, no progress for 121 s" in alert.detail


def test_a_stall_opens_once_and_resolves_with_the_same_id_when_ingest_moves_again() -> None:
    """Further stalled evaluations add nothing; the first progress resolves the alert it opened."""
    stuck = [(t * S, {0: 10 * t}, {}) for t in range(0, 300, 10)]
    reports = run([(0, {0: 0}, {0: 0}), *stuck, (300 * S, {0: 2000}, {0: 299 * S})])
    assert changes(reports) == [("OPENED", "stall", "critical"), ("RESOLVED", "stall", "critical")]
    opened, resolved = (c for r in reports for c in r.changes)
    assert resolved.alert_id == opened.alert_id and resolved.at_ms == 300 * S
    assert reports[-1].verdict == "ok" and reports[-1].state.open == {}


def test_catching_up_to_zero_lag_resolves_a_stall_too() -> None:
    """A partition no longer behind is not stalled, whatever its last write."""
    reports = run([(0, {0: 5}, {}), (200 * S, {0: 5}, {}), (210 * S, {0: 0}, {})])
    assert changes(reports) == [("OPENED", "stall", "critical"), ("RESOLVED", "stall", "critical")]


def test_a_warehouse_that_cannot_say_keeps_the_remembered_progress() -> None:
    """Missing progress (the warehouse is away) neither resets nor hides a stall."""
    reports = run([(0, {0: 1}, {0: 0}), (60 * S, {0: 400}, {}), (121 * S, {0: 900}, {})])
    assert reports[-1].verdict == "stalled" and reports[-1].partitions[0].last_progress_ms == 0


def test_a_partition_that_never_wrote_stalls_from_when_it_fell_behind() -> None:
    """With no progress known at all, the first lag > 0 sample starts the stall clock."""
    reports = run([(5 * S, {0: 10}, {}), (126 * S, {0: 10}, {})])
    assert [r.verdict for r in reports] == ["ok", "stalled"]
    assert reports[-1].changes[0].first_seen_ms == 5 * S


def test_lag_above_the_threshold_that_grew_over_the_window_is_lagging() -> None:
    """Growing lag above the threshold opens a major lag alert once the samples span the window."""
    reports = run((t * S, {0: 60_000 + 100 * t, 1: 0}, {0: t * S}) for t in range(0, 400, 10))
    first = next(i for i, r in enumerate(reports) if r.verdict == "lagging")
    assert reports[first - 1].partitions[0].growth is None and first * 10 == 300  # a whole window first
    (alert,) = reports[first].changes
    assert (alert.status, alert.kind, alert.severity, alert.runbook_key) == (
        "OPENED",
        "lag",
        "major",
        "ingest.lag",
    )
    assert reports[first].partitions[0].growth == 30_000 and alert.expected == 50_000
    assert changes(reports) == [("OPENED", "lag", "major")]


def test_flat_lag_or_growing_lag_under_the_threshold_is_ok() -> None:
    """A large but steady lag, or a small growing one, is not an alert."""
    flat = run((t * S, {0: 80_000}, {0: t * S}) for t in range(0, 900, 10))
    small = run((t * S, {0: 10 * t}, {0: t * S}) for t in range(0, 900, 10))
    assert {r.verdict for r in flat + small} == {"ok"} and changes(flat + small) == []


def test_a_lag_alert_holds_while_lag_stays_high_and_resolves_once_it_shrinks() -> None:
    """Open while above the threshold and not shrinking over the window; resolved when it shrinks."""
    growing = [(t * S, {0: 60_000 + 100 * t}, {0: t * S}) for t in range(0, 310, 10)]
    flat = [(t * S, {0: 91_000}, {0: t * S}) for t in range(310, 900, 10)]
    shrinking = [(t * S, {0: 91_000 - 100 * (t - 900)}, {0: t * S}) for t in range(900, 1300, 10)]
    reports = run(growing + flat + shrinking)
    assert changes(reports) == [("OPENED", "lag", "major"), ("RESOLVED", "lag", "major")]
    resolved_at = next(c.at_ms for r in reports for c in r.changes if c.status == "RESOLVED")
    assert 900 * S < resolved_at <= 1210 * S  # once the window shows it smaller than before


def test_the_overall_verdict_is_the_worst_partition() -> None:
    """One stalled partition among healthy ones makes ingest stalled."""
    (report,) = run([(500 * S, {0: 0, 1: 10, 2: 3}, {0: 0, 1: 0, 2: 499 * S})], IngestHealth())
    assert report.verdict == "ok"  # partition 1 only just fell behind
    (report,) = run([(700 * S, {0: 0, 1: 10, 2: 3}, {2: 699 * S})], report.state)
    assert [p.verdict for p in report.partitions] == ["ok", "stalled", "ok"] and report.verdict == "stalled"


def test_lag_history_stays_bounded_whatever_the_sampling_rate() -> None:
    """A day of samples every second keeps at most max_samples per partition, spanning the window."""
    state = IngestHealth()
    for t in range(0, 86_400, 1):
        state = judge_ingest(state, CONFIG, {0: 60_000 + t}, {0: t * S}, t * S).state
    samples = state.partitions[0].samples
    assert 2 < len(samples) <= CONFIG.max_samples
    assert samples[0][0] <= 86_399 * S - CONFIG.growth_window_ms  # the window's anchor is kept
    assert samples[-1][0] >= 86_399 * S - CONFIG.sample_every_ms


def test_a_partition_gone_from_the_topic_is_forgotten() -> None:
    """Only partitions the lag names are kept."""
    reports = run([(0, {0: 0, 1: 0}, {}), (S, {0: 0}, {})])
    assert set(reports[-1].state.partitions) == {0}


def test_the_state_round_trips_through_json_and_a_restored_one_resolves_its_alert() -> None:
    """to_dict gives plain JSON; from_dict gives the same state, which resolves the open alert."""
    reports = run([(0, {0: 5, 1: 0}, {0: 0}), (150 * S, {0: 9, 1: 0}, {})])
    state = reports[-1].state
    restored = IngestHealth.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state and set(restored.open) == {"stall"}
    (after,) = run([(160 * S, {0: 2, 1: 0}, {0: 155 * S})], restored)
    assert [(c.status, c.alert_id) for c in after.changes] == [("RESOLVED", state.open["stall"].alert_id)]


def test_state_of_another_format_starts_fresh() -> None:
    """An unknown format is not guessed at: a fresh state instead."""
    assert IngestHealth.from_dict({"format": 99, "partitions": {"0": {}}}) == IngestHealth()


def test_only_partitions_behind_with_no_recent_progress_need_a_closer_look() -> None:
    """unproven names the partitions whose markers do not show them moving, and no others."""
    state = run([(0, {0: 1, 1: 1, 2: 1, 3: 0}, {2: 0})])[-1].state
    assert unproven(state, CONFIG, {0: 1, 1: 1, 2: 1, 3: 0}, {1: 199 * S}, 200 * S) == [0, 2]


def test_config_refuses_nonsense_and_versions_its_rules() -> None:
    """Bounds are checked; a change of any rule changes the version the alerts carry."""
    with pytest.raises(ValueError, match="max_samples"):
        IngestHealthConfig(max_samples=2)
    assert IngestHealthConfig().version != IngestHealthConfig(stall_after_ms=1).version
    assert IngestHealthConfig().version.startswith("ingest-")


def test_ingest_alert_records_follow_the_contract_with_a_global_dashboard_link() -> None:
    """The record encodes with the alert schema, for tenant '*', linking the stall runbook."""
    (report,) = run([(200 * S, {0: 7}, {0: 0})], run([(0, {0: 7}, {0: 0})])[-1].state)
    record = alert_record(report.changes[0], "http://herald:8740", "https://docs.example/herald", "p1")
    codec = AvroCodec.for_contract("alert_event")
    decoded = codec.decode(codec.encode(record))
    assert (decoded["tenant_id"], decoded["metric"], decoded["kind"]) == ("*", "ingest", "stall")
    assert record["dashboard_url"] == "http://herald:8740/dashboard?range=6h"
    assert record["runbook_url"] == "https://docs.example/herald/docs/runbooks/ingest.md#ingest-stalled"


def test_docstring_examples_run() -> None:
    """The module's examples are tested."""
    assert doctest.testmod(analytics.ingest_health).failed == 0
