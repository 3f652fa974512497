"""SLA error budgets and multi-window burn-rate alerts over per-minute counts."""

from __future__ import annotations

from policies.models import SlaObjective
from policies.sla import BurnRateRule, SlaCounts, evaluate_sla, merge_counts, prune_counts

SMS = SlaObjective(channel="sms", target=0.99, latency_ms=30_000, window_days=30)
NOW_MINUTE = 100_000
NOW = NOW_MINUTE * 60 + 30.0


def steady(minutes: int, good: int, total: int, end: int = NOW_MINUTE) -> dict[int, SlaCounts]:
    return {m: SlaCounts(good, total) for m in range(end - minutes + 1, end + 1)}


def test_no_traffic_is_neutral() -> None:
    """Without messages: ratio 1, full budget, zero burn, no breach, no exception."""
    status = evaluate_sla("tiny-plumbing", SMS, {}, NOW)
    assert (status.good_ratio, status.error_budget_remaining, status.breach, status.severity) == (
        1.0, 1.0, False, "none"
    )  # fmt: skip
    assert all(b.long_burn == 0.0 and not b.firing for b in status.burn_rates)


def test_fast_burn_pages_and_is_a_breach() -> None:
    """20% failures over the last hour (burn 20 >= 14.4 on 1 h and 5 m) pages."""
    counts = steady(43_200, 1000, 1000) | steady(60, 80, 100)  # the last hour replaced
    status = evaluate_sla("acme-home", SMS, counts, NOW)
    fast = status.burn_rates[0]
    assert fast.firing and round(fast.long_burn, 6) == round(fast.short_burn, 6) == 20.0
    assert status.breach and status.severity == "page"
    assert status.error_budget_remaining > 0.9  # an hour of it barely dents 30 days


def test_slow_burn_within_the_objective_does_not_alert() -> None:
    """0.5% failures (burn 0.5) for a month stays within 99%: no rule fires, half the budget left."""
    status = evaluate_sla("acme-home", SMS, steady(43_200, 995, 1000), NOW)
    assert not any(b.firing for b in status.burn_rates)
    assert (status.breach, status.severity) == (False, "none")
    assert round(status.good_ratio, 6) == 0.995 and round(status.error_budget_remaining, 6) == 0.5


def test_recovered_incident_stops_paging_once_the_short_window_is_clean() -> None:
    """A burst that ended 10 minutes ago still burns the 1 h window but not the 5 m one: no page."""
    counts = steady(43_200, 1000, 1000) | steady(50, 0, 100, end=NOW_MINUTE - 10)
    fast = evaluate_sla("acme-home", SMS, counts, NOW).burn_rates[0]
    assert fast.long_burn >= 14.4 and fast.short_burn == 0.0 and not fast.firing


def test_exhausted_budget_is_a_breach_even_without_a_fast_burn() -> None:
    """2% failures for 30 days spends twice the budget: breach, remaining negative."""
    status = evaluate_sla("brightfix", SMS, steady(43_200, 98, 100), NOW)
    assert status.breach and status.error_budget_remaining < 0
    assert [b.rule.severity for b in status.burn_rates if b.firing] == ["ticket"]


def test_min_total_keeps_a_single_failure_of_a_quiet_tenant_from_paging() -> None:
    """One failed message in an hour burns 100x, but below min_total it does not fire."""
    counts = {NOW_MINUTE: SlaCounts(0, 1)}
    assert evaluate_sla("tiny-plumbing", SMS, counts, NOW, min_total=1).severity == "page"
    quiet = evaluate_sla("tiny-plumbing", SMS, counts, NOW, min_total=20)
    assert not any(b.firing for b in quiet.burn_rates)


def test_rules_are_configurable() -> None:
    """Custom windows and factors replace the workbook defaults."""
    rule = BurnRateRule(long_minutes=10, short_minutes=2, factor=2.0, severity="ticket")
    counts = steady(43_200, 1000, 1000) | steady(10, 97, 100)
    status = evaluate_sla("acme-home", SMS, counts, NOW, rules=[rule])
    assert [b.firing for b in status.burn_rates] == [True] and status.severity == "ticket"


def test_counts_merge_across_workers_and_prune_to_the_window() -> None:
    """Partial counts add minute by minute; pruning keeps only readable minutes."""
    merged = merge_counts({1: SlaCounts(1, 1)}, {1: SlaCounts(0, 1), 5: SlaCounts(2, 2)})
    assert merged == {1: SlaCounts(1, 2), 5: SlaCounts(2, 2)}
    assert prune_counts(merged, now=5 * 60 + 1, keep_minutes=3) == {5: SlaCounts(2, 2)}
