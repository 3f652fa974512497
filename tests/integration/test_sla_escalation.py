"""An SLA breach caused by one provider escalates to a provider switch for that tenant: the primary
SMS provider accepts messages but never delivers them (no receipts); the monitor sees the tenant's
fast burn, raises an SLA alert naming that provider, and the dispatch agent routes the tenant's next
SMS to the secondary, explained as a failover."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from dispatch.core import example_request
from providers.local.process import LocalProvidersProcess
from schemas.codec import request_codec
from streams.emitter import Emitter
from tests.conftest import Herald
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration

POLICY = """
providers:
  sms: [{name: sms-primary, price_micros: 7500, currency: USD}, {name: sms-secondary, price_micros: 6200, currency: USD}]
  email: [{name: smtp-primary, price_micros: 90, currency: USD}]
routing:
  default: {sms: [sms-primary, sms-secondary], email: [smtp-primary]}
tenants:
  acme-home:
    slas:
      - {channel: sms, target: 0.99, latency_ms: 2000, window_days: 1}
"""  # noqa: E501


def send(h: Herald, ids: range) -> None:
    emitter = Emitter(h.bootstrap, h.settings.topics.dispatch_requests, codec=request_codec())
    for i in ids:
        emitter.emit_request(
            example_request(
                request_id=f"sla-rq-{i}", notification_id=f"sla-nt-{i}", tenant_id="acme-home",
                campaign_id=None, channel="SMS", requested_at=datetime.now(UTC),
            )
        )  # fmt: skip
    emitter.flush()
    emitter.close()


def test_a_provider_that_breaks_a_tenants_sla_is_avoided_for_that_tenant(
    herald: Herald, tmp_path: Path, providers: LocalProvidersProcess
) -> None:
    policy = tmp_path / "guardrails.yaml"
    policy.write_text(POLICY)
    providers.control.set_faults("sms-primary", {"mode": "drop"})  # accepted, never delivered
    worker = herald.start_worker(
        "worker-1",
        HERALD_GUARDRAILS_FILE=str(policy),
        HERALD_PROVIDERS_FILE=str(providers.ready_file),
        HERALD_PROVIDER_TIMEOUT_S="2",
        HERALD_SLA_CHECK_S="2",
    )
    send(herald, range(60))
    breach = wait_for(
        lambda: herald.sql(
            "SELECT alert_id, provider, kind, detail FROM alerts FINAL "
            "WHERE tenant_id = 'acme-home' AND metric = 'sla.sms' AND status = 'OPENED'"
        ),
        "the SLA breach alert",
        herald.workers,
        timeout=150,
    )
    assert isinstance(breach, list) and len(breach) == 1
    _alert_id, provider, kind, detail = breach[0]
    assert (provider, kind) == ("sms-primary", "breach")
    assert "caused by sms-primary" in detail
    wait_for(
        lambda: "sms:sms-primary" in str(worker.tail(20000)),
        "the dispatch agent to avoid it",
        herald.workers,
        30,
    )

    send(herald, range(60, 80))
    routed = wait_for(
        lambda: (
            (
                rows := herald.sql(
                    "SELECT provider, reason, count() FROM events WHERE event_type = 'DISPATCHED' "
                    "AND toUInt32(splitByChar('-', notification_id)[3]) >= 60 GROUP BY 1, 2"
                )
            )
            and sum(r[2] for r in rows) == 20
            and rows
        ),
        "the next requests to be dispatched",
        herald.workers,
        60,
    )
    assert routed == [["sms-secondary", "routed.failover", 20]]
    assert providers.control.counts()["sms-secondary"]["accepted"] == 20
