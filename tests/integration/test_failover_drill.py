"""The failover drill against the real local SMTP and SMS servers: the primaries are killed and
restored while traffic flows; nothing is lost or sent twice, the switch takes well under a second,
the failback happens once the primaries are back, and traffic does not flap back to the secondary."""

from __future__ import annotations

import asyncio

import pytest

from dispatch.drill import DrillPlan, run_drill, run_worker_drill
from infra.local_kafka import free_port
from tests.conftest import Herald

pytestmark = pytest.mark.integration


def test_killing_the_primaries_loses_nothing_sends_nothing_twice_and_fails_over_and_back() -> None:
    plan = DrillPlan(rate_per_s=60, cycles=2, warm_s=2, down_s=3, up_s=7)
    report = asyncio.run(run_drill(plan))
    assert report["cycles"] == 2
    assert report["requested"] >= 0.9 * 60 * plan.duration_s
    assert (report["lost"], report["sent_twice"]) == (0, 0), report
    assert report["events"]["SENT"] == report["requested"]
    detect, failback = report["detect_to_switch_s"], report["failback_s"]
    assert detect["n"] == 4 and detect["max"] < 1.0, detect  # both channels, both cycles
    assert failback["n"] == 4 and failback["max"] < plan.up_s, failback
    assert report["routed_to_secondary_after_failback"] == 0
    accepted = report["accepted_per_provider"]
    assert all(
        accepted[name] > 0 for name in ("smtp-primary", "smtp-secondary", "sms-primary", "sms-secondary")
    )
    assert sum(accepted.values()) == report["requested"]
    # the in-flight messages of a killed primary failed there once and were retried on the secondary
    assert set(report["failed_attempts"]) <= {"smtp-primary:unavailable", "sms-primary:unavailable"}


def test_the_drill_through_kafka_and_a_worker_also_alerts_each_switch_and_failback(herald: Herald) -> None:
    """`cli.py drill failover` (the default, worker mode): the worker's dispatch agent reads the
    requests from Kafka; each breaker opening and closing is an alert on herald.ops.alerts.v1."""
    plan = DrillPlan(rate_per_s=60, cycles=1, warm_s=2, down_s=3, up_s=7)
    settings = herald.settings.model_copy(update={"api_port": free_port(), "worker_name": "drill-worker"})
    report = run_worker_drill(settings, plan)
    assert (report["lost"], report["sent_twice"]) == (0, 0), report
    assert report["detect_to_switch_s"]["n"] == 2 and report["detect_to_switch_s"]["max"] < 1.0
    assert report["failback_s"]["n"] == 2 and report["routed_to_secondary_after_failback"] == 0
    assert report["switch_alerts"] == {"OPENED": 2, "RESOLVED": 2}  # email and SMS, out and back
