"""The alert monitor in a real worker on live traffic: an injected delivery drop on one series gives
exactly one alert on the alerts topic and in the warehouse, with links that open, and its resolution
after recovery; the worker that leads the monitor is killed mid-incident and the next one resolves
the same alert from the checkpoint (so it remembered both the models and the open alert)."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infra.local_kafka import free_port
from schemas.codec import AvroCodec
from simulator.model import DEFAULT_MODEL, Effect, generate_notifications, in_time_order
from simulator.scenarios import AnomalyWindow, Scenario
from tests.conftest import Herald
from tests.integration.helpers import read_topic, wait_for

pytestmark = pytest.mark.integration

HOURS = 2.5
DROP_MINUTES = (90, 105)
SERIES = ("acme-home", "SMS", "sms-primary")
CUT_MINUTE = 97  # the first worker is killed after the traffic up to here, inside the incident


def live_traffic(start: datetime) -> list[dict[str, Any]]:
    """2.5 h of traffic at 6 notifications/s in occurred_at order, cut at the end; acme-home's primary
    SMS provider delivers 30 % from minute 90 to 105."""
    window = AnomalyWindow(
        "delivery_drop", DROP_MINUTES[0] * 60, DROP_MINUTES[1] * 60, Effect(delivered_factor=0.3),
        tenant_id=SERIES[0], channel=SERIES[1], provider=SERIES[2],
    )  # fmt: skip
    notifications = generate_notifications(
        DEFAULT_MODEL, start, 6, HOURS * 3600, seed=5, scenario=Scenario("drill", (window,))
    )
    end = start + timedelta(hours=HOURS)
    return [e for e in in_time_order(notifications) if e["occurred_at"] < end]


def emit(h: Herald, events: list[dict[str, Any]]) -> None:
    emitter = h.emitter()
    try:
        for event in events:
            emitter.emit(event)
        emitter.flush()
    finally:
        emitter.close()


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def test_a_delivery_drop_is_one_alert_with_working_links_resolved_after_failover(herald: Herald) -> None:
    h = herald
    start = (datetime.now(UTC) - timedelta(hours=4)).replace(second=0, microsecond=0)
    events = live_traffic(start)
    cut = start + timedelta(minutes=CUT_MINUTE)
    port = str(free_port())  # both workers serve the same address, so the alert links stay valid
    env = {
        "HERALD_API_PORT": port,
        "HERALD_ALERT_GRACE_MINUTES": "30",
        "HERALD_ALERT_LATENESS_S": "5",
        "HERALD_SESSION_TIMEOUT_S": "6",
    }
    first = h.start_worker("worker-1", **env)
    emit(h, [e for e in events if e["occurred_at"] < cut])
    h.wait_caught_up()
    codec = AvroCodec.for_contract("alert_event")
    opened = [codec.decode(m.value()) for m in read_topic(h.bootstrap, h.settings.topics.alerts, 1, 60)]
    assert [(a["status"], a["tenant_id"], a["channel"], a["provider"]) for a in opened] == [
        ("OPENED", *SERIES)
    ], opened
    alert = opened[0]
    assert alert["metric"] == "delivery_rate" and alert["kind"] == "drop"
    drop_start = start + timedelta(minutes=DROP_MINUTES[0])
    assert drop_start <= alert["first_seen"] <= drop_start + timedelta(minutes=2)  # decoded as datetimes
    assert alert["observed"] < 0.6 and alert["expected"] > 0.9
    # the links open: the dashboard preselects the series, the runbook has the anchor linked
    status, page = fetch(alert["dashboard_url"])
    assert status == 200 and "tenant=acme-home" in alert["dashboard_url"] and "<html" in page.lower()
    status, runbook = fetch(alert["runbook_url"])
    assert status == 200 and f'id="{alert["runbook_url"].rsplit("#", 1)[1]}"' in runbook

    # the checkpoint holds the open alert before the leader dies without a goodbye
    wait_for(
        lambda: (first.health()["monitor"] or {}).get("checkpoint_next_minute", "") > "",
        "a checkpoint",
        [first],
    )
    first.kill()
    second = h.start_worker("worker-2", **env)
    emit(h, [e for e in events if e["occurred_at"] >= cut])
    h.wait_caught_up()
    changes = [codec.decode(m.value()) for m in read_topic(h.bootstrap, h.settings.topics.alerts, 2, 90)]
    assert [(a["status"], a["alert_id"]) for a in changes] == [
        ("OPENED", alert["alert_id"]),
        ("RESOLVED", alert["alert_id"]),  # the same alert: the new leader restored it
    ], changes
    resolved = changes[1]
    drop_end = start + timedelta(minutes=DROP_MINUTES[1])
    assert drop_end <= resolved["window_end"] <= drop_end + timedelta(minutes=2)  # outcomes trail sends
    assert drop_end < resolved["emitted_at"] <= drop_end + timedelta(minutes=8)
    health = second.health()["monitor"]
    assert health["leader"] and health["open_alerts"] == 0
    rows = h.sql("SELECT alert_id, status, metric, resolved_at IS NOT NULL FROM alerts_current")
    assert rows == [[alert["alert_id"], "RESOLVED", "delivery_rate", True]]
    assert h.scalar("SELECT count() FROM alerts FINAL") == 2
