"""The SLA status the API answers, from per-minute counts (projections.queries' pure SLA helpers), and
where the worker's guardrails policy comes from."""

from __future__ import annotations

import doctest
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import projections.queries
from herald.settings import BUNDLED_GUARDRAILS, load_settings
from policies.loader import load_policy
from policies.models import SlaObjective
from policies.sla import SlaCounts, evaluate_sla
from projections.queries import sla_judged_until, sla_range, sla_report

SMS = SlaObjective(channel="sms", target=0.99, latency_ms=30_000, window_days=30)
UNTIL = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # exclusive: the newest judged minute is 11:59
NEWEST = int(UNTIL.timestamp()) // 60 - 1


def minute_of(at: datetime) -> int:
    return int(at.timestamp()) // 60


def test_report_sums_the_window_and_matches_evaluate_sla() -> None:
    """good/total are the window's sums; ratio, budget, burns, breach and severity are evaluate_sla's
    at the newest judged minute; minutes at or after ``until`` and before the window count nowhere."""
    counts = {
        NEWEST: SlaCounts(8, 10),
        NEWEST - 90: SlaCounts(5, 5),
        NEWEST - 30 * 1440 + 1: SlaCounts(1, 1),  # the oldest minute of the 30-day window
        NEWEST - 30 * 1440: SlaCounts(0, 50),  # just before it: only the 3-day burn window is longer
        NEWEST + 1: SlaCounts(0, 99),  # not judged yet
    }
    report = sla_report("acme-home", SMS, counts, UNTIL)
    status = evaluate_sla("acme-home", SMS, counts, NEWEST * 60.0)
    assert (report["good"], report["total"]) == (14, 16) == (14, status.total)
    assert report["ratio"] == pytest.approx(14 / 16) == status.good_ratio
    assert report["error_budget_remaining"] == pytest.approx(1 - 2 / (0.01 * 16))
    assert (report["breach"], report["severity"]) == (status.breach, status.severity) == (True, "page")
    assert [b["firing"] for b in report["burn_rates"]] == [b.firing for b in status.burn_rates]
    assert report["burn_rates"][0] == {
        "long_minutes": 60,
        "short_minutes": 5,
        "factor": 14.4,
        "severity": "page",
        "long_burn": pytest.approx(20.0),  # 2 bad of 10 in the last hour / 1 % allowed
        "short_burn": pytest.approx(20.0),
        "firing": True,
    }
    assert (report["from"], report["to"]) == ((UNTIL - timedelta(days=30)).isoformat(), UNTIL.isoformat())
    assert (report["channel"], report["target"], report["latency_ms"], report["window_days"]) == (
        "sms", 0.99, 30_000, 30
    )  # fmt: skip


def test_series_has_24_hours_ending_with_the_newest_judged_minute() -> None:
    """One point per hour, oldest first, the last the hour of the newest judged minute; its counts are
    the judged minutes of that hour; an hour without sends has ratio None (not 0, not 1)."""
    counts = {
        NEWEST: SlaCounts(3, 4),
        NEWEST - 59: SlaCounts(1, 1),  # 11:00, same hour
        NEWEST - 60: SlaCounts(0, 2),  # 10:59, the hour before
        NEWEST - 24 * 60: SlaCounts(7, 7),  # 11:59 yesterday: 25 hours back, outside the series
        NEWEST + 1: SlaCounts(0, 5),  # 12:00, not judged
    }
    series = sla_report("acme-home", SMS, counts, UNTIL)["series"]
    assert [p["hour"] for p in series] == [(UNTIL - timedelta(hours=24 - i)).isoformat() for i in range(24)]
    assert series[-1] == {"hour": "2026-03-10T11:00:00+00:00", "good": 4, "total": 5, "ratio": 0.8}
    assert series[-2] == {"hour": "2026-03-10T10:00:00+00:00", "good": 0, "total": 2, "ratio": 0.0}
    assert [p["ratio"] for p in series[:-2]] == [None] * 22


def test_no_traffic_is_neutral_and_json_safe() -> None:
    """Without sends: ratio 1, full budget, no burn, no breach, every hour None; strict JSON."""
    report = sla_report("tiny-plumbing", SMS, {}, UNTIL)
    assert (report["good"], report["total"], report["ratio"], report["error_budget_remaining"]) == (
        0,
        0,
        1.0,
        1.0,
    )
    assert (report["breach"], report["severity"]) == (False, "none")
    assert all(b["long_burn"] == 0.0 and not b["firing"] for b in report["burn_rates"])
    assert all(p["ratio"] is None for p in report["series"])
    json.dumps(report, allow_nan=False)


def test_sends_of_the_last_latency_are_not_judged_yet() -> None:
    """``until`` is now less the objective's latency, floored to the minute."""
    email = SlaObjective(channel="email", target=0.98, latency_ms=300_000)
    now = datetime(2026, 3, 10, 12, 0, 10, tzinfo=UTC)
    assert sla_judged_until(now, SMS) == datetime(2026, 3, 10, 11, 59, tzinfo=UTC)
    assert sla_judged_until(now, email) == datetime(2026, 3, 10, 11, 55, tzinfo=UTC)
    assert sla_judged_until(now.replace(second=30), SMS) == datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_range_covers_the_window_or_the_longest_burn_window() -> None:
    """A 30-day objective reads 30 days; a 1-day one still reads the 3 days of the slowest burn rule."""
    assert sla_range(SMS, UNTIL) == (UNTIL - timedelta(days=30), UNTIL)
    short = SlaObjective(channel="push", target=0.95, latency_ms=10_000, window_days=1)
    assert sla_range(short, UNTIL) == (UNTIL - timedelta(days=3), UNTIL)


def test_doctests_in_queries_module_pass() -> None:
    """projections/queries.py's examples run as documented."""
    assert doctest.testmod(projections.queries).failed == 0


def test_worker_policy_defaults_to_the_bundled_example(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Unset, the guardrails file is the packaged example (a valid policy with acme-home's SLAs);
    HERALD_GUARDRAILS_FILE replaces it."""
    monkeypatch.delenv("HERALD_GUARDRAILS_FILE", raising=False)
    settings = load_settings()
    assert settings.guardrails_file is None
    assert settings.guardrails == BUNDLED_GUARDRAILS
    repo = Path(projections.queries.__file__).resolve().parents[1]
    assert settings.guardrails == repo / "policies" / "examples" / "guardrails.yaml"
    slas = load_policy(settings.guardrails).policy.tenant("acme-home").slas
    assert [o.channel for o in slas] == ["sms", "email"]
    mine = tmp_path / "guardrails.yaml"
    monkeypatch.setenv("HERALD_GUARDRAILS_FILE", str(mine))
    assert load_settings().guardrails == mine
