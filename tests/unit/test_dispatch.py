"""Dispatch decisions as lifecycle events: once per request, exactly one failover retry, breakers that
fail over and back, rate limits and budgets that hold exactly, and events that satisfy the contract."""

from __future__ import annotations

import doctest
import pickle
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import dispatch.core
from dispatch.core import Attempt, Dispatcher, Step, example_request
from policies.loader import LoadedPolicy, load_policy_text
from providers.base import SendResult
from schemas.codec import lifecycle_codec
from schemas.contract import contract_violations

POLICY = """
providers:
  email: [{name: mail-a, price_micros: 100, currency: USD}, {name: mail-b, price_micros: 150, currency: USD}]
  sms: [{name: sms-a, price_micros: 7000, currency: USD}, {name: sms-b, price_micros: 6000, currency: USD}]
routing:
  default: {email: [mail-a, mail-b], sms: [sms-a, sms-b]}
breaker: {window_seconds: 60, min_requests: 4, open_error_rate: 0.5, recovery_error_rate: 0.1,
          open_seconds: 10, half_open_probes: 2}
campaigns:
  small: {budget: {messages_total: 5}}
  slow: {rate: {per_minute: 3}}
"""
T0 = int(datetime(2026, 1, 1, 16, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def loaded() -> LoadedPolicy:
    return load_policy_text(POLICY, source="test.yaml")


def request(n: int, **overrides: Any) -> dict[str, Any]:
    base = {"request_id": f"req-{n}", "notification_id": f"n-{n}", "campaign_id": None}
    return example_request(**{**base, **overrides})


def ok(provider: str) -> SendResult:
    return SendResult(provider, True, "m-1", None, False, 20)


def fail(provider: str, error_class: str = "provider_5xx", retryable: bool = True) -> SendResult:
    return SendResult(provider, False, None, error_class, retryable, 20, "boom", "503")


def send(d: Dispatcher, n: int, at_ms: int, result_for: Any, **overrides: Any) -> list[Step]:
    """Decide request n and answer every attempt with ``result_for(provider)``; all steps in order."""
    steps = [d.decide(request(n, **overrides), at_ms)]
    while steps[-1].attempt is not None:
        attempt = steps[-1].attempt
        steps.append(d.outcome(attempt, result_for(attempt.provider), at_ms + 10))
    return steps


def types(steps: list[Step]) -> list[str]:
    return [e["event_type"] for s in steps for e in s.events]


def test_a_request_is_requested_dispatched_and_sent_once_with_cost_latency_and_policy_version(
    loaded: LoadedPolicy,
) -> None:
    d = Dispatcher(loaded)
    steps = send(d, 1, T0, ok)
    assert types(steps) == ["REQUESTED", "DISPATCHED", "SENT"]
    dispatched, sent = steps[0].events[1], steps[1].events[0]
    assert (dispatched["provider"], dispatched["reason"], dispatched["policy_version"]) == (
        "sms-a", "routed.primary", loaded.version,
    )  # fmt: skip
    assert (sent["provider"], sent["latency_ms"], sent["cost_micros"], sent["currency"]) == (
        "sms-a",
        10,
        7000,
        "USD",
    )
    assert d.status("req-1") == "sent"
    assert d.decide(request(1), T0 + 5_000).events == []  # redelivered: nothing new
    codec = lifecycle_codec()
    for event in (e for s in steps for e in s.events):
        assert contract_violations(event, datetime.fromtimestamp(T0 / 1000, UTC)) == []
        assert codec.decode(codec.encode(event))["event_id"] == event["event_id"]
    assert len({e["event_id"] for s in steps for e in s.events}) == 3


def test_a_retryable_failure_is_retried_exactly_once_on_the_next_provider_with_the_same_key(
    loaded: LoadedPolicy,
) -> None:
    d = Dispatcher(loaded)
    steps = send(d, 1, T0, lambda p: fail(p) if p == "sms-a" else ok(p))
    assert types(steps) == ["REQUESTED", "DISPATCHED", "FAILED", "DISPATCHED", "SENT"]
    failed, retry = steps[1].events
    assert failed["error"]["error_class"] == "provider_5xx" and failed["provider"] == "sms-a"
    assert (retry["provider"], retry["reason"]) == ("sms-b", "routed.retry_failover")
    assert [s.attempt.number for s in steps if s.attempt] == [1, 2]
    assert all(s.attempt.request_id == "req-1" for s in steps if s.attempt)  # one idempotency chain

    both_down = send(d, 2, T0, fail)
    assert types(both_down) == ["REQUESTED", "DISPATCHED", "FAILED", "DISPATCHED", "FAILED"]
    assert d.status("req-2") == "failed"  # a second failure is final: no third attempt


def test_a_permanent_failure_is_not_retried_and_late_answers_change_nothing(loaded: LoadedPolicy) -> None:
    d = Dispatcher(loaded)
    steps = send(d, 1, T0, lambda p: fail(p, "invalid_recipient", retryable=False))
    assert types(steps) == ["REQUESTED", "DISPATCHED", "FAILED"] and d.status("req-1") == "failed"
    late = Attempt("req-1", "sms-a", 1, False, T0)
    assert d.outcome(late, ok("sms-a"), T0 + 60_000) == Step()
    assert d.status("req-1") == "failed"


def test_a_failing_primary_opens_its_breaker_then_traffic_fails_over_and_back(loaded: LoadedPolicy) -> None:
    """Four failures open sms-a: new requests go to sms-b directly (routed.failover); after 10 s two
    good probes close it and requests go to sms-a again (failback)."""
    d = Dispatcher(loaded)
    for n in range(4):
        send(d, n, T0 + n * 100, lambda p: fail(p) if p == "sms-a" else ok(p))
    after = send(d, 10, T0 + 1_000, ok)
    assert types(after) == ["REQUESTED", "DISPATCHED", "SENT"]
    assert (after[0].events[1]["provider"], after[0].events[1]["reason"]) == ("sms-b", "routed.failover")
    probe = send(d, 11, T0 + 12_000, ok)
    assert (probe[0].events[1]["provider"], probe[0].events[1]["reason"]) == ("sms-a", "routed.probe")
    send(d, 12, T0 + 12_100, ok)
    back = send(d, 13, T0 + 12_200, ok)
    assert (back[0].events[1]["provider"], back[0].events[1]["reason"]) == ("sms-a", "routed.primary")


def test_a_budget_of_b_messages_routes_exactly_b_and_suppresses_the_rest(loaded: LoadedPolicy) -> None:
    d = Dispatcher(loaded)
    outcomes = [send(d, n, T0 + n, ok, campaign_id="small") for n in range(8)]
    assert sum(1 for s in outcomes if "SENT" in types(s)) == 5
    suppressed = [s[0].events[-1] for s in outcomes if "SUPPRESSED" in types(s)]
    assert len(suppressed) == 3
    assert {e["reason"] for e in suppressed} == {"budget_exhausted.campaign.messages_total"}


def test_a_rate_limit_defers_the_excess_and_the_deferred_request_is_decided_again(
    loaded: LoadedPolicy,
) -> None:
    d = Dispatcher(loaded)
    steps = [d.decide(request(n, campaign_id="slow"), T0 + n) for n in range(5)]
    routed = [s for s in steps if s.attempt is not None]
    deferred = [s for s in steps if s.defer_until_ms is not None]
    assert len(routed) == 3 and len(deferred) == 2
    assert all(s.events == [s.events[0]] and s.events[0]["event_type"] == "REQUESTED" for s in deferred)
    due = deferred[0].defer_until_ms
    assert due is not None and due == T0 - T0 % 60_000 + 60_000  # the next minute window
    again = d.decide(request(3, campaign_id="slow"), due)
    assert [e["event_type"] for e in again.events] == ["DISPATCHED"]  # REQUESTED is not repeated


def test_an_expired_request_is_suppressed_and_state_survives_pickling(loaded: LoadedPolicy) -> None:
    d = Dispatcher(loaded)
    expired = d.decide(request(1, not_after=datetime.fromtimestamp((T0 - 1) / 1000, UTC)), T0)
    assert types([expired]) == ["REQUESTED", "SUPPRESSED"] and expired.events[1]["reason"] == "expired"
    send(d, 2, T0, ok, campaign_id="small")
    restored = pickle.loads(pickle.dumps(d))
    assert restored.status("req-2") == "sent" and restored.decide(request(2), T0 + 1).events == []
    assert [types(send(restored, n, T0 + n, ok, campaign_id="small")).count("SENT") for n in range(3, 9)] == [
        1, 1, 1, 1, 0, 0,
    ]  # fmt: skip  # 5 in total, counted across the pickle


def test_docstring_examples_run() -> None:
    assert doctest.testmod(dispatch.core).failed == 0


def test_a_delivery_receipt_becomes_delivered_once_with_latency_and_sent_at_and_survives_a_snapshot(
    loaded: LoadedPolicy,
) -> None:
    d = Dispatcher(loaded)
    step = d.decide(request(1), T0)
    assert step.attempt is not None
    sent = d.outcome(step.attempt, ok("sms-a"), T0 + 10, receipts=True)
    assert types([sent]) == ["SENT"] and d.pending_receipts() == [("req-1", "sms-a", "m-1", T0 + 10)]
    restored = Dispatcher.restore(loaded, d.snapshot())  # a new owner keeps waiting for it
    assert restored.pending_receipts() == d.pending_receipts()
    delivered = restored.receipt("req-1", True, T0 + 2_010)
    (event,) = delivered.events
    assert (event["event_type"], event["provider"], event["latency_ms"]) == ("DELIVERED", "sms-a", 2_000)
    assert event["sent_at"] == datetime.fromtimestamp((T0 + 10) / 1000, UTC)
    assert contract_violations(event, datetime.fromtimestamp(T0 / 1000, UTC)) == []
    assert restored.receipt("req-1", True, T0 + 3_000) == Step() and restored.pending_receipts() == []
    assert restored.decide(request(1), T0 + 4_000).events == []  # the ledger came along too

    other = Dispatcher(loaded)
    attempt = other.decide(request(2), T0).attempt
    assert attempt is not None
    other.outcome(attempt, ok("sms-a"), T0 + 10, receipts=True)
    (failed,) = other.receipt("req-2", False, T0 + 500, "carrier rejected").events
    assert failed["event_type"] == "FAILED" and failed["error"]["error_class"] == "rejected"
    assert failed["sent_at"] is not None
    no_receipts = Dispatcher(loaded)
    attempt = no_receipts.decide(request(3), T0).attempt
    assert attempt is not None
    no_receipts.outcome(attempt, ok("mail-a"), T0 + 10)
    assert no_receipts.pending_receipts() == []


def test_a_provider_avoided_for_a_tenant_is_passed_over_with_the_reason_until_it_is_cleared(
    loaded: LoadedPolicy,
) -> None:
    """An SLA breach caused by sms-a makes this tenant's SMS go to sms-b (routed.failover, explained);
    the avoidance survives a snapshot; cleared, sms-a is first again."""
    d = Dispatcher(loaded)
    d.avoid("SMS", "sms-a", "SLA breach sms 99%/30s")
    step = d.decide(request(1), T0)
    assert step.attempt is not None and step.attempt.provider == "sms-b"
    assert step.decision is not None and step.decision.reason == "routed.failover"
    assert step.decision.detail == "failover: sms-a avoided (SLA breach sms 99%/30s)"
    restored = Dispatcher.restore(loaded, d.snapshot())
    assert restored.decide(request(2), T0).attempt.provider == "sms-b"  # type: ignore[union-attr]
    restored.unavoid("SMS", "sms-a")
    assert restored.decide(request(3), T0).attempt.provider == "sms-a"  # type: ignore[union-attr]


EXPERIMENT = """
experiments:
  - {id: reminder-v4, tenant: acme-home, template: visit-reminder, segment: gold, variants: [
       {name: control, template_version: 3, weight: 1}, {name: v4, template_version: 4, weight: 1}],
     start: 2025-12-01T00:00:00Z, stop: 2026-12-21T00:00:00Z, primary_metric: delivery_rate, mde: 0.05}
"""


def test_routed_requests_are_exposed_to_running_experiments_stickily_and_only_in_the_segment(
    loaded: LoadedPolicy,
) -> None:
    from experiments.definitions import load_experiments_text
    from policies.segments import Segment

    segments = {"gold": Segment.parse("gold", 'tier == "gold"')}
    d = Dispatcher(loaded)
    d.use_experiments(load_experiments_text(EXPERIMENT, segments, source="exp.yaml"), segments)

    def dispatched(n: int, recipient: str, tier: str) -> dict[str, Any]:
        base = example_request()["recipient"]
        step = d.decide(request(n, recipient={**base, "id": recipient, "tier": tier}), T0 + n)
        return next(e for e in step.events if e["event_type"] == "DISPATCHED")

    gold = [dispatched(n, f"r-{n}", "gold") for n in range(400)]
    variants = Counter(e["variant"] for e in gold)
    assert set(variants) == {"control", "v4"} and abs(variants["v4"] - 200) < 45  # balanced
    assert all(e["experiment_id"] == "reminder-v4" for e in gold)
    assert {(e["variant"], e["template_version"]) for e in gold} == {("control", 3), ("v4", 4)}
    again = dispatched(1000, "r-7", "gold")  # the same recipient, a new request: the same variant
    assert again["variant"] == gold[7]["variant"]
    silver = dispatched(1001, "r-8", "silver")
    assert (silver["experiment_id"], silver["variant"], silver["template_version"]) == (None, None, 3)


def test_an_engagement_segment_is_judged_on_the_profile_the_caller_passes(loaded: LoadedPolicy) -> None:
    """A segment reading the history (opened in the last 7 days) needs the recipient's profile:
    the dispatcher says so, exposes a recent opener and leaves out one without history."""
    from experiments.definitions import load_experiments_text
    from policies.engagement import EngagementProfile
    from policies.segments import Segment

    segments = {"gold": Segment.parse("gold", 'tier == "gold" and opened_within(7d)')}
    d = Dispatcher(loaded)
    d.use_experiments(load_experiments_text(EXPERIMENT, segments, source="exp.yaml"), segments)
    base = {**example_request()["recipient"], "tier": "gold"}
    recent = EngagementProfile(delivered=3, opened=1, last_open=T0 - 86_400_000)
    stale = EngagementProfile(delivered=3, opened=1, last_open=T0 - 30 * 86_400_000)

    def variant(n: int, profile: EngagementProfile | None) -> str | None:
        record = request(n, recipient={**base, "id": f"r-{n}"})
        assert d.needs_profile(record, T0)
        step = d.decide(record, T0, profile=profile)
        return next(e["variant"] for e in step.events if e["event_type"] == "DISPATCHED")

    assert variant(1, recent) in {"control", "v4"}
    assert variant(2, stale) is None
    assert variant(3, None) is None  # no history: never opened
    other = request(4, template_id="something-else")
    assert not d.needs_profile(other, T0)


def test_the_rendered_sms_address_is_the_same_in_every_process() -> None:
    """A send resumed by another worker must render the same message, or a provider that honours the
    idempotency key refuses it as another message (422): no per-process hash() seed in it."""
    import subprocess
    import sys

    from dispatch.service import default_render

    record = {**example_request(), "channel": "SMS"}
    code = (
        "from dispatch.core import example_request; from dispatch.service import default_render; "
        "print(default_render({**example_request(), 'channel': 'SMS'})[0])"
    )
    others = {
        subprocess.run(
            [sys.executable, "-c", code], env={"PYTHONHASHSEED": seed, "PATH": ""}, capture_output=True,
            text=True, check=True, cwd=Path(__file__).parents[2],
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }  # fmt: skip
    assert others == {default_render(record)[0]}
