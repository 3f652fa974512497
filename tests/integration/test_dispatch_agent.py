"""The dispatch agent on real Kafka with the real local providers: every request is decided once and
its decision is a lifecycle event; a per-second rate limit is never exceeded in any second; a budget
of B messages sends exactly B; malformed requests are dead-lettered with headers; a second agent that
takes over the partitions from the state topic keeps counting where the first stopped."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dispatch.core import example_request
from herald.settings import Settings, load_settings
from policies.loader import LoadedPolicy, load_policy_text
from providers.local.process import LocalProvidersProcess
from providers.local.run import adapters_for
from schemas.codec import lifecycle_codec, request_codec
from streams.dispatch_agent import DispatchAgent
from streams.emitter import Emitter
from streams.topics import ensure_topics
from tests.integration.helpers import read_topic

pytestmark = pytest.mark.integration

RATE, BUDGET = 10, 25
POLICY = f"""
providers:
  email: [{{name: smtp-primary, price_micros: 90, currency: USD}}, {{name: smtp-secondary, price_micros: 120, currency: USD}}]
  sms: [{{name: sms-primary, price_micros: 7500, currency: USD}}, {{name: sms-secondary, price_micros: 6200, currency: USD}}]
routing:
  default: {{email: [smtp-primary, smtp-secondary], sms: [sms-primary, sms-secondary]}}
breaker: {{consecutive_failures: 5, open_seconds: 5, half_open_probes: 3}}
campaigns:
  capped: {{rate: {{per_second: {RATE}}}, budget: {{messages_total: {BUDGET}}}}}
"""  # noqa: E501


@pytest.fixture
def setup(tmp_path: Path, kafka_bootstrap: str) -> tuple[Settings, LoadedPolicy]:
    import uuid

    settings = load_settings(
        data_dir=tmp_path / "data", kafka_bootstrap=kafka_bootstrap, namespace=f"d{uuid.uuid4().hex[:10]}",
        partitions=2, session_timeout_s=6,
    )  # fmt: skip
    ensure_topics(kafka_bootstrap, settings.partitions, 1, settings.topics)
    return settings, load_policy_text(POLICY, source="test-policy.yaml")


def requests(n: int, first: int = 0, **overrides: Any) -> list[dict[str, Any]]:
    return [
        example_request(
            request_id=f"rq-{i}",
            notification_id=f"nt-{i}",
            tenant_id="acme-home",
            campaign_id="capped",
            channel="SMS" if i % 2 else "EMAIL",
            requested_at=datetime.now(UTC),
            **overrides,
        )
        for i in range(first, first + n)
    ]


def send_requests(settings: Settings, bootstrap: str, records: list[dict[str, Any]]) -> None:
    emitter = Emitter(bootstrap, settings.topics.dispatch_requests, codec=request_codec())
    for record in records:
        emitter.emit_request(record)
    emitter.emit_raw(b"acme-home", b"\x00not a request")  # malformed: dead-lettered
    emitter.flush()
    emitter.close()


def wait(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def lifecycle(settings: Settings, bootstrap: str, expected: int) -> list[dict[str, Any]]:
    codec = lifecycle_codec()
    return [codec.decode(m.value()) for m in read_topic(bootstrap, settings.topics.lifecycle, expected, 30)]


def test_limits_hold_exactly_and_a_second_agent_continues_from_the_state_topic(
    setup: tuple[Settings, LoadedPolicy], kafka_bootstrap: str, providers: LocalProvidersProcess
) -> None:
    settings, loaded = setup
    endpoints = providers.endpoints
    first = DispatchAgent(settings, kafka_bootstrap, loaded, lambda: adapters_for(endpoints, 2.0))
    first.start()
    send_requests(settings, kafka_bootstrap, requests(15))
    wait(lambda: first.totals.sent == 15, "15 sends")
    assert first.totals.dead_letters == 1
    first.stop()  # a clean handover: the state of 15 counted messages is on the state topic

    second = DispatchAgent(settings, kafka_bootstrap, loaded, lambda: adapters_for(endpoints, 2.0))
    second.start()
    send_requests(settings, kafka_bootstrap, requests(30, first=15) + requests(5))  # 5 repeats of old ids
    wait(
        lambda: second.totals.suppressed >= 20 and second.totals.sent == BUDGET - 15, "the budget to run out"
    )
    wait(lambda: second.status()["receipts_waiting"] == 0, "the SMS delivery receipts")
    time.sleep(1.0)
    second.stop()

    sms_sent = sum(1 for i in range(45) if i % 2)  # requests(...) alternates EMAIL, SMS
    events = lifecycle(settings, kafka_bootstrap, 45 * 2 + BUDGET + min(sms_sent, BUDGET // 2))
    by_type = Counter(e["event_type"] for e in events)
    assert by_type["REQUESTED"] == 45  # the 5 repeated request ids were not decided again
    assert by_type["SENT"] == BUDGET  # a budget of B sends exactly B, across the handover
    sent_sms = {
        e["notification_id"]: e for e in events if e["event_type"] == "SENT" and e["channel"] == "SMS"
    }
    delivered = [e for e in events if e["event_type"] == "DELIVERED"]
    # the SMS API's delivery receipts, polled, also for sends the first agent left waiting
    assert sorted(e["notification_id"] for e in delivered) == sorted(sent_sms)
    assert all(e["sent_at"] == sent_sms[e["notification_id"]]["occurred_at"] for e in delivered)
    suppressed = [e for e in events if e["event_type"] == "SUPPRESSED"]
    assert len(suppressed) == 45 - BUDGET
    assert {e["reason"] for e in suppressed} == {"budget_exhausted.campaign.messages_total"}
    assert {e["policy_version"] for e in events if e["event_type"] in ("DISPATCHED", "SUPPRESSED")} == {
        loaded.version
    }
    per_second = Counter(int(e["occurred_at"].timestamp()) for e in events if e["event_type"] == "DISPATCHED")
    assert max(per_second.values()) <= RATE, per_second  # never more than R in any second
    counts = providers.control.counts()
    assert sum(c["accepted"] for c in counts.values()) == BUDGET
    assert sum(c["duplicates"] for c in counts.values()) == 0
    letters = read_topic(kafka_bootstrap, settings.topics.dispatch_dead_letter, 2, 10)
    assert len(letters) == 2  # one malformed message per send_requests call
    headers = dict(letters[0].headers())
    assert (
        headers["herald.stage"] == b"decode"
        and headers["herald.source.topic"] == settings.topics.dispatch_requests.encode()
    )
