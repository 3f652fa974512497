"""Dispatch in real worker processes against the real local providers: a worker killed with SIGKILL
mid-run, the next one takes over from the state topic; a rate limit of R per second is never
exceeded in any second, a budget of B sends exactly B, no request is lost and no SMS is sent twice;
and two workers splitting the tenants keep every tenant's limits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dispatch.core import example_request
from providers.local.process import LocalProvidersProcess
from schemas.codec import request_codec
from streams.emitter import Emitter
from tests.conftest import Herald
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration

RATE, BUDGET = 20, 150
PER_MINUTE, MINUTE_BUDGET = 60, 100
POLICY = f"""
providers:
  email: [{{name: smtp-primary, price_micros: 90, currency: USD}}, {{name: smtp-secondary, price_micros: 120, currency: USD}}]
  sms: [{{name: sms-primary, price_micros: 7500, currency: USD}}, {{name: sms-secondary, price_micros: 6200, currency: USD}}]
routing:
  default: {{email: [smtp-primary, smtp-secondary], sms: [sms-primary, sms-secondary]}}
breaker: {{consecutive_failures: 5, open_seconds: 5, half_open_probes: 3}}
campaigns:
  capped: {{rate: {{per_second: {RATE}}}, budget: {{messages_total: {BUDGET}}}}}
  minutely: {{rate: {{per_minute: {PER_MINUTE}}}, budget: {{messages_total: {MINUTE_BUDGET}}}}}
"""  # noqa: E501


def dispatch_env(tmp_path: Path, providers: LocalProvidersProcess) -> dict[str, str]:
    policy = tmp_path / "guardrails.yaml"
    policy.write_text(POLICY)
    return {
        "HERALD_GUARDRAILS_FILE": str(policy),
        "HERALD_PROVIDERS_FILE": str(providers.ready_file),
        "HERALD_PROVIDER_TIMEOUT_S": "2",
        "HERALD_SESSION_TIMEOUT_S": "6",
        "HERALD_ALERTS_ENABLED": "false",
    }


def send(h: Herald, tenant: str, ids: range, channel: Callable[[int], str], campaign: str = "capped") -> None:
    emitter = Emitter(h.bootstrap, h.settings.topics.dispatch_requests, codec=request_codec())
    for i in ids:
        emitter.emit_request(
            example_request(
                request_id=f"{tenant}-rq-{i}", notification_id=f"{tenant}-nt-{i}", tenant_id=tenant,
                campaign_id=campaign, channel=channel(i), requested_at=datetime.now(UTC),
            )
        )  # fmt: skip
    emitter.flush()
    emitter.close()


def rows(h: Herald, query: str) -> list[list[Any]]:
    return h.sql(query)


def settled(h: Herald, tenant: str, expected_requests: int, expected_sent: int) -> Callable[[], bool]:
    def check() -> bool:
        h.wait_caught_up()
        got = rows(
            h,
            f"SELECT countIf(event_type = 'REQUESTED'), countIf(event_type = 'SENT'), "
            f"countIf(event_type = 'SUPPRESSED') FROM events WHERE tenant_id = '{tenant}'",
        )[0]
        return got == [expected_requests, expected_sent, expected_requests - expected_sent]

    return check


def per_second_dispatched(h: Herald, tenant: str) -> Counter[int]:
    found = rows(
        h,
        "SELECT toUnixTimestamp(occurred_at), count() FROM events "
        f"WHERE tenant_id = '{tenant}' AND event_type = 'DISPATCHED' AND reason != 'routed.retry_failover' "
        "GROUP BY 1",
    )
    return Counter({int(second): int(n) for second, n in found})


def test_a_worker_killed_mid_run_loses_nothing_and_the_limits_hold_across_the_takeover(
    herald: Herald, tmp_path: Path, providers: LocalProvidersProcess
) -> None:
    env = dispatch_env(tmp_path, providers)
    first = herald.start_worker("worker-1", **env)
    send(herald, "acme-home", range(250), lambda i: "SMS" if i % 3 else "EMAIL")
    wait_for(lambda: (first.health().get("dispatch") or {}).get("sent", 0) >= 40, "40 sends", herald.workers)
    first.kill()  # SIGKILL: no goodbye, mid-stream
    herald.start_worker("worker-2", **env)
    wait_for(settled(herald, "acme-home", 250, BUDGET), "all 250 requests settled", herald.workers)

    counts = providers.control.counts()
    sms = [c for name, c in counts.items() if name.startswith("sms")]
    email = [c for name, c in counts.items() if name.startswith("smtp")]
    unique = sum(c["unique"] for c in counts.values())
    assert unique == BUDGET  # every sent request reached a provider: nothing lost, the budget exact
    assert sum(c["duplicates"] for c in sms) == 0  # the SMS API honours the idempotency key
    email_duplicates = sum(c["duplicates"] for c in email)
    assert email_duplicates <= 10  # at most the emails in flight at the kill (SMTP has no key)
    per_second = per_second_dispatched(herald, "acme-home")
    assert sum(per_second.values()) == BUDGET and max(per_second.values()) <= RATE, per_second
    suppressed = rows(
        herald,
        "SELECT DISTINCT reason FROM events WHERE event_type = 'SUPPRESSED' AND tenant_id = 'acme-home'",
    )
    assert suppressed == [["budget_exhausted.campaign.messages_total"]]
    budget_alerts = rows(
        herald,
        "SELECT kind, severity, observed, expected FROM alerts FINAL "
        "WHERE tenant_id = 'acme-home' AND metric = 'budget.messages_total' ORDER BY observed",
    )
    assert budget_alerts == [["threshold", "major", 120.0, 150.0], ["exhausted", "critical", 150.0, 150.0]]


def test_two_workers_split_the_tenants_and_a_per_minute_limit_holds_when_one_is_killed(
    herald: Herald, tmp_path: Path, providers: LocalProvidersProcess
) -> None:
    """A campaign limited to R messages a minute never exceeds R in any minute and stops at its budget
    of B, for every tenant, while two workers share the tenants and one of them is SIGKILLed mid-run
    (the survivor takes its partitions over from the state topic)."""
    env = dispatch_env(tmp_path, providers)
    first = herald.start_worker("worker-1", **env)
    second = herald.start_worker("worker-2", **env)
    tenants = ["acme-home", "brightfix", "northwind-utilities", "tiny-plumbing"]
    wait_for(
        lambda: all((w.health().get("dispatch") or {}).get("partitions") for w in (first, second)),
        "both workers to own partitions",
        herald.workers,
    )
    owners = [set((w.health().get("dispatch") or {}).get("partitions", [])) for w in (first, second)]
    assert not owners[0] & owners[1]  # none twice
    for tenant in tenants:
        send(herald, tenant, range(150), lambda i: "SMS", campaign="minutely")
    wait_for(
        lambda: (second.health().get("dispatch") or {}).get("sent", 0) >= 10,
        "worker-2 sending",
        herald.workers,
    )
    second.kill()  # mid-run: its tenants' deferred requests wait in the state topic
    for tenant in tenants:
        wait_for(
            settled(herald, tenant, 150, MINUTE_BUDGET), f"{tenant} settled", herald.workers, timeout=180
        )
    for tenant in tenants:
        per_minute = rows(
            herald,
            "SELECT toUnixTimestamp(toStartOfMinute(occurred_at)), count() FROM events "
            f"WHERE tenant_id = '{tenant}' AND event_type = 'DISPATCHED' "
            "AND reason != 'routed.retry_failover' GROUP BY 1 ORDER BY 1",
        )
        counts = [int(n) for _minute, n in per_minute]
        assert sum(counts) == MINUTE_BUDGET and max(counts) <= PER_MINUTE, (tenant, per_minute)
    counts = providers.control.counts()
    assert sum(c["unique"] for c in counts.values()) == len(tenants) * MINUTE_BUDGET
    assert sum(c["duplicates"] for c in counts.values()) == 0  # SMS: the API honours the key
