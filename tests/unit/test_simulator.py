"""The traffic simulator: deterministic, contract-valid, honest funnels, labelled anomalies, exact counts."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald.errors import ConfigError
from schemas.codec import lifecycle_codec
from schemas.contract import contract_violations
from simulator.badinput import bad_messages
from simulator.model import DEFAULT_MODEL, generate, generate_notifications, in_time_order, notification_count
from simulator.run import emit_exact, simulate
from simulator.scenarios import SCENARIO_NAMES, build_scenario

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TERMINAL = {"SUPPRESSED", "DELIVERED", "BOUNCED", "FAILED"}


class RecordingEmitter:
    """Records what would be produced; checks the contract like the real Emitter does."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now
        self.events: list[Mapping[str, Any]] = []
        self.raw: list[tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]] = []
        self.log: list[str] = []
        self.flushes = 0

    def emit(self, event: Mapping[str, Any]) -> None:
        assert contract_violations(event, self.now) == []
        self.events.append(event)
        self.log.append("event")

    def emit_raw(
        self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        self.raw.append((key, value, headers))
        self.log.append("raw")

    def flush(self) -> int:
        self.flushes += 1
        return len(self.log)


def by_notification(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        grouped[event["notification_id"]].append(event)
    return grouped


def test_same_seed_and_start_generate_identical_events() -> None:
    """Generation is a pure function of its arguments, ids included."""
    first = list(generate(DEFAULT_MODEL, START, 100, 20, seed=42))
    assert first == list(generate(DEFAULT_MODEL, START, 100, 20, seed=42))


def test_different_seeds_generate_different_traffic_and_ids() -> None:
    """Another seed gives other choices and a disjoint id space."""
    a = list(generate(DEFAULT_MODEL, START, 100, 20, seed=1))
    b = list(generate(DEFAULT_MODEL, START, 100, 20, seed=2))
    assert [e["tenant_id"] for e in a] != [e["tenant_id"] for e in b]
    assert not {e["event_id"] for e in a} & {e["event_id"] for e in b}


def test_event_ids_are_unique() -> None:
    """Every event has its own id, and a notification's events share one notification id."""
    events = list(generate(DEFAULT_MODEL, START, 500, 20, seed=3))
    assert len({e["event_id"] for e in events}) == len(events)
    assert len(by_notification(events)) == notification_count(500, 20) == 10_000


def test_every_event_passes_the_contract_and_round_trips_through_the_codec() -> None:
    """Valid traffic, anomalies included, is valid by the contract and the Avro schema."""
    codec = lifecycle_codec()
    scenario = build_scenario("mixed", 30)
    events = list(generate(DEFAULT_MODEL, START, 80, 30, seed=5, scenario=scenario))
    assert {"FAILED", "BOUNCED", "OPENED", "CLICKED", "REPLIED", "SUPPRESSED"} <= {
        e["event_type"] for e in events
    }
    for event in events:
        assert contract_violations(event, START) == []
        assert codec.decode(codec.encode(event)) == event


def test_each_notification_follows_the_lifecycle_in_time_order() -> None:
    """REQUESTED first, exactly one terminal outcome, occurred_at never goes back, latencies add up."""
    events = list(generate(DEFAULT_MODEL, START, 200, 30, seed=6, scenario=build_scenario("mixed", 30)))
    for steps in by_notification(events).values():
        types = [e["event_type"] for e in steps]
        times = [e["occurred_at"] for e in steps]
        assert types[0] == "REQUESTED"
        assert len(TERMINAL.intersection(types)) == 1
        assert times == sorted(times)
        at = {e["event_type"]: e for e in steps}
        if "SENT" in at:
            assert at["SENT"]["occurred_at"] - at["REQUESTED"]["occurred_at"] == timedelta(
                milliseconds=at["SENT"]["latency_ms"]
            )
            assert at["SENT"]["cost_micros"] is not None and at["SENT"]["currency"] == "USD"
        if "DELIVERED" in at:
            assert at["DELIVERED"]["occurred_at"] - at["SENT"]["occurred_at"] == timedelta(
                milliseconds=at["DELIVERED"]["latency_ms"]
            )
        for failure in ("FAILED", "BOUNCED"):
            if failure in at:
                assert at[failure]["error"]["error_class"]
        if "SUPPRESSED" in at:
            assert at["SUPPRESSED"]["reason"]


def test_follow_ups_of_a_send_carry_the_send_time_as_sent_at() -> None:
    """DELIVERED, BOUNCED and engagement events carry their SENT's occurred_at; every other event None."""
    follow_ups = {"DELIVERED", "BOUNCED", "OPENED", "CLICKED", "REPLIED", "UNSUBSCRIBED", "COMPLAINED"}
    events = list(generate(DEFAULT_MODEL, START, 200, 30, seed=6, scenario=build_scenario("mixed", 30)))
    carried: Counter[str] = Counter()
    for steps in by_notification(events).values():
        sent = next((e["occurred_at"] for e in steps if e["event_type"] == "SENT"), None)
        for event in steps:
            assert event["sent_at"] == (sent if event["event_type"] in follow_ups else None)
            if event["sent_at"] is not None:
                carried[event["event_type"]] += 1
    assert {"DELIVERED", "BOUNCED", "OPENED", "CLICKED", "REPLIED"} <= set(carried)
    assert set(carried) <= follow_ups


def test_funnel_rates_are_honoured_over_20k_notifications() -> None:
    """Observed per-provider delivery, bounce and open rates match the configured funnel."""
    events = list(generate(DEFAULT_MODEL, START, 1000, 20, seed=7))
    counts: Counter[tuple[str | None, str]] = Counter((e["provider"], e["event_type"]) for e in events)
    requested = sum(n for (_, t), n in counts.items() if t == "REQUESTED")
    assert requested == 20_000
    for profile in DEFAULT_MODEL.channels:
        for provider in profile.providers:
            dispatched = counts[(provider.name, "DISPATCHED")]
            delivered = counts[(provider.name, "DELIVERED")]
            tolerance = (
                3 * (provider.funnel.delivered * (1 - provider.funnel.delivered) / dispatched) ** 0.5 + 0.002
            )
            assert delivered / dispatched == pytest.approx(provider.funnel.delivered, abs=tolerance)
            assert counts[(provider.name, "BOUNCED")] / dispatched == pytest.approx(
                provider.funnel.bounce, abs=0.01
            )
            if provider.funnel.open:
                opened = counts[(provider.name, "OPENED")] / delivered
                assert opened == pytest.approx(
                    provider.funnel.open, rel=0.15
                )  # experiments shift it a little


def test_tenants_differ_in_volume_and_one_is_low_volume() -> None:
    """Tenant shares follow their configured volumes; the smallest sees about 2 % of traffic."""
    events = list(generate(DEFAULT_MODEL, START, 1000, 10, seed=8))
    requested = Counter(e["tenant_id"] for e in events if e["event_type"] == "REQUESTED")
    for tenant in DEFAULT_MODEL.tenants:
        assert requested[tenant.tenant_id] / 10_000 == pytest.approx(tenant.volume, abs=0.02)
    assert min(requested.values()) < 0.05 * sum(requested.values())


def test_recipient_attributes_are_stable_per_recipient_across_seeds() -> None:
    """A pseudonymous recipient keeps its kind, tier, role, language and country."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for seed in (1, 2):
        for event in generate(DEFAULT_MODEL, START, 500, 10, seed=seed):
            recipient = event["recipient"]
            assert recipient["id"].startswith("r-")
            assert seen.setdefault((event["tenant_id"], recipient["id"]), recipient) == recipient


def test_in_time_order_yields_every_event_sorted_by_occurred_at() -> None:
    """The heap merge reorders across notifications without losing or duplicating events."""
    notifications = list(generate_notifications(DEFAULT_MODEL, START, 200, 10, seed=9))
    ordered = list(in_time_order(notifications))
    assert [e["occurred_at"] for e in ordered] == sorted(e["occurred_at"] for e in ordered)
    assert sorted(e["event_id"] for e in ordered) == sorted(
        e["event_id"] for n in notifications for e in n.events
    )


def test_outage_fails_the_named_provider_inside_the_window_only() -> None:
    """Inside the window every dispatch to the provider fails at send time; outside it mostly delivers."""
    scenario = build_scenario("provider_outage", 60)
    (window,) = scenario.windows
    inside: Counter[str] = Counter()
    outside: Counter[str] = Counter()
    for notification in generate_notifications(DEFAULT_MODEL, START, 200, 60, seed=10, scenario=scenario):
        if notification.events[-1]["provider"] != window.provider:
            continue
        outcome = notification.events[-1] if notification.events[-1]["event_type"] != "SUPPRESSED" else None
        types = {e["event_type"] for e in notification.events}
        target = inside if window.start_s <= notification.offset_s < window.end_s else outside
        target["FAILED" if "FAILED" in types else "DELIVERED" if "DELIVERED" in types else "OTHER"] += 1
        if target is inside and outcome is not None:
            assert "SENT" not in types
            assert outcome["error"]["error_class"] in ("provider_5xx", "timeout")
    assert inside["FAILED"] > 500 and inside["DELIVERED"] == 0 and inside["OTHER"] == 0
    assert outside["DELIVERED"] / sum(outside.values()) > 0.9


def test_delivery_drop_lowers_delivery_of_the_named_series_in_the_window_only() -> None:
    """The drop cuts delivered/dispatched to about 30 % of normal for its tenant, channel and provider;
    the tenant's other provider on that channel keeps delivering."""
    scenario = build_scenario("delivery_drop", 100)
    (window,) = scenario.windows
    assert window.provider is not None
    counts: dict[tuple[bool, bool], Counter[str]] = defaultdict(Counter)
    for notification in generate_notifications(DEFAULT_MODEL, START, 300, 100, seed=11, scenario=scenario):
        first = notification.events[0]
        provider = next((e["provider"] for e in notification.events if e.get("provider")), None)
        if (first["tenant_id"], first["channel"]) != (window.tenant_id, window.channel) or provider is None:
            continue
        inside = window.start_s <= notification.offset_s < window.end_s
        counts[inside, provider == window.provider].update(e["event_type"] for e in notification.events)

    def rate(key: tuple[bool, bool]) -> float:
        return counts[key]["DELIVERED"] / counts[key]["DISPATCHED"]

    assert rate((False, True)) > 0.9
    assert rate((True, True)) == pytest.approx(0.3 * rate((False, True)), abs=0.05)
    assert rate((True, False)) > 0.9  # the other provider is untouched


def test_latency_spike_multiplies_sent_latency_of_the_named_provider() -> None:
    """Median requested->sent latency of the provider is about ten times higher inside the window."""
    scenario = build_scenario("latency_spike", 50)
    (window,) = scenario.windows
    latencies: dict[bool, list[int]] = {True: [], False: []}
    for notification in generate_notifications(DEFAULT_MODEL, START, 200, 50, seed=12, scenario=scenario):
        for event in notification.events:
            if event["event_type"] == "SENT" and event["provider"] == window.provider:
                latencies[window.start_s <= notification.offset_s < window.end_s].append(event["latency_ms"])
    inside, outside = (sorted(v)[len(v) // 2] for v in (latencies[True], latencies[False]))
    assert 7 < inside / outside < 13


def test_every_scenario_builds_and_labels_its_windows() -> None:
    """Each named scenario has windows inside the run; unknown names list the valid ones."""
    for name in SCENARIO_NAMES:
        scenario = build_scenario(name, 600)
        assert all(0 <= w.start_s < w.end_s <= 600 for w in scenario.windows)
    assert len(build_scenario("mixed", 600).windows) == 3
    with pytest.raises(ConfigError, match="valid: normal, provider_outage"):
        build_scenario("nope", 60)


def test_emit_exact_emits_exactly_the_requested_counts() -> None:
    """20 000 valid events and 200 bad messages, spread through the stream, then one flush."""
    emitter = RecordingEmitter()
    summary = emit_exact(emitter, 20_000, 200, seed=13, start=START)
    assert (len(emitter.events), len(emitter.raw), emitter.flushes) == (20_000, 200, 1)
    assert (summary.events, summary.invalid) == (20_000, 200)
    assert sum(summary.by_event_type.values()) == sum(summary.by_tenant.values()) == 20_000
    assert set(summary.invalid_by_kind.values()) <= {33, 34}
    assert emitter.log[:50].count("raw") == 0 and emitter.log[-50:].count("raw") == 0
    assert summary.notifications == sum(e["event_type"] == "REQUESTED" for e in emitter.events)


def test_emitted_bad_messages_are_the_bad_messages_list_byte_for_byte() -> None:
    """Dead letters can be matched to bad_messages(n, seed, max_bytes) whatever the start time."""
    emitter = RecordingEmitter(now=START + timedelta(days=30))
    emit_exact(emitter, 500, 12, seed=21, start=START + timedelta(days=30), max_bytes=2048)
    expected = bad_messages(12, seed=21, max_bytes=2048)
    assert [(k, v) for k, v, _ in emitter.raw] == [(m.key, m.value) for m in expected]
    assert [h for _, _, h in emitter.raw] == [[("sim.bad_kind", m.kind.encode())] for m in expected]


def test_emit_exact_handles_zero_valid_or_zero_invalid() -> None:
    """Either count may be zero."""
    only_bad, only_good = RecordingEmitter(), RecordingEmitter()
    emit_exact(only_bad, 0, 7, seed=1, start=START)
    emit_exact(only_good, 9, 0, seed=1, start=START)
    assert (len(only_bad.events), len(only_bad.raw)) == (0, 7)
    assert (len(only_good.events), len(only_good.raw)) == (9, 0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_simulate_paces_arrivals_by_the_injected_clock() -> None:
    """At 50 notifications/s for 4 s, the run sleeps its way through about 4 s of schedule."""
    clock, emitter = FakeClock(), RecordingEmitter()
    reports: list[Any] = []
    summary = simulate(
        emitter,
        start=START,
        rate_per_s=50,
        duration_s=4,
        seed=14,
        clock=clock,
        sleep=clock.sleep,
        progress=reports.append,
    )
    assert summary.notifications == 200 and emitter.flushes == 1
    assert clock.now == pytest.approx(199 / 50)
    assert len(reports) == 3 and reports[-1].behind_s == 0.0


def test_simulate_unpaced_never_sleeps_and_mixes_bad_input_for_bad_input_scenario() -> None:
    """Rate None emits as fast as possible; the bad_input scenario adds one bad message per 100 events."""
    clock, emitter = FakeClock(), RecordingEmitter()
    summary = simulate(
        emitter,
        start=START,
        rate_per_s=None,
        duration_s=10,
        seed=15,
        scenario="bad_input",
        clock=clock,
        sleep=clock.sleep,
    )
    assert clock.sleeps == []
    assert summary.notifications == 2000
    assert summary.invalid == summary.events // 100 == len(emitter.raw)
    assert all(headers and headers[0][0] == "sim.bad_kind" for _, _, headers in emitter.raw)


def test_live_simulation_emits_in_event_time_order_up_to_the_end_and_runs_faster_with_speedup() -> None:
    """live=True: every event at its own time, in occurred_at order, nothing after the run's end; at
    speedup 60 ten simulated minutes take ten wall seconds; the same events as the normal run's, cut."""
    clock, emitter = FakeClock(), RecordingEmitter()
    summary = simulate(
        emitter, start=START, rate_per_s=5, duration_s=600, seed=16, clock=clock, sleep=clock.sleep,
        live=True, speedup=60,
    )  # fmt: skip
    times = [e["occurred_at"] for e in emitter.events]
    assert times == sorted(times)
    assert times[0] >= START and times[-1] < START + timedelta(seconds=600)
    assert clock.now == pytest.approx((times[-1] - START).total_seconds() / 60, abs=0.01)
    whole = [e for n in generate_notifications(DEFAULT_MODEL, START, 5, 600, 16) for e in n.events]
    cut = {e["event_id"] for e in whole if e["occurred_at"] < START + timedelta(seconds=600)}
    assert {e["event_id"] for e in emitter.events} == cut and len(cut) < len(whole)
    assert summary.notifications == 3000
