"""Ingest that stops for real is an ingest stall alert, and ingest moving again resolves it: with a
materialized view's target detached through the warehouse owner's share, every insert into ``events``
fails, the sink retries while the lag grows, and the worker's monitor raises a critical global stall
alert on the alerts topic; attached again, the sink catches up and the same alert is resolved."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from projections.warehouse import Warehouse
from schemas.codec import AvroCodec
from simulator.model import DEFAULT_MODEL, generate_notifications, in_time_order
from tests.conftest import Herald
from tests.integration.helpers import read_topic, wait_for

pytestmark = pytest.mark.integration

STALL_S = 5  # well above the time a healthy batch takes on a busy machine


def live_events(start: datetime, seconds: int) -> list[dict[str, Any]]:
    """Notifications at 4/s from ``start`` for ``seconds``, their events in occurred_at order."""
    notifications = generate_notifications(DEFAULT_MODEL, start, 4, seconds, seed=11)
    return [e for e in in_time_order(notifications) if e["occurred_at"] < start + timedelta(seconds=seconds)]


def emit(h: Herald, events: list[dict[str, Any]]) -> None:
    emitter = h.emitter()
    try:
        for event in events:
            emitter.emit(event)
        emitter.flush()
    finally:
        emitter.close()


def ingest_alerts(h: Herald) -> list[dict[str, Any]]:
    """The ingest alerts on the alerts topic so far, in order (other alerts are left out)."""
    codec = AvroCodec.for_contract("alert_event")
    records = [codec.decode(m.value()) for m in read_topic(h.bootstrap, h.settings.topics.alerts, 10**6, 2)]
    return [r for r in records if r["metric"] == "ingest"]


def resolved(h: Herald) -> list[dict[str, Any]] | None:
    """The ingest alerts once one of them is RESOLVED, else None."""
    found = ingest_alerts(h)
    return found if any(a["status"] == "RESOLVED" for a in found) else None


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def test_a_detached_rollup_stalls_ingest_into_an_alert_resolved_once_ingest_moves_again(
    herald: Herald,
) -> None:
    """A stall opens one critical ingest alert with working links; the first writes after it resolve it."""
    h = herald
    worker = h.start_worker("worker-1", HERALD_INGEST_STALL_S=str(STALL_S), HERALD_MONITOR_INTERVAL_S="0.5")
    wait_for(lambda: worker.health()["partitions"], "the sink's partitions", [worker])
    start = datetime.now(UTC) - timedelta(minutes=1)
    events = live_events(start, 40)
    emit(h, [e for e in events if e["occurred_at"] < start + timedelta(seconds=20)])
    h.wait_caught_up()
    wait_for(lambda: worker.health()["monitor"]["ingest"]["verdict"] == "ok", "ingest judged ok", [worker])

    share = Warehouse(json.loads(worker.run_file.read_text())["warehouse_http"])
    try:
        share.command("DETACH TABLE delivery_minute")  # every insert into events now fails
        emit(h, [e for e in events if e["occurred_at"] >= start + timedelta(seconds=20)])
        (opened,) = wait_for(lambda: ingest_alerts(h), "an ingest alert", [worker], timeout=60)
        assert (opened["status"], opened["tenant_id"], opened["metric"], opened["kind"]) == (
            "OPENED", "*", "ingest", "stall",
        )  # fmt: skip
        assert opened["severity"] == "critical" and opened["observed"] > 0  # messages behind
        assert "no progress for" in opened["detail"]
        health = worker.health()["monitor"]["ingest"]
        assert health["verdict"] == "stalled" and health["open"] == ["stall"], health
        metrics = fetch(f"{worker.api}/metrics")[1]
        assert any(
            line.startswith("herald_ingest_stalled{") and line.endswith(" 1.0")
            for line in metrics.splitlines()
        )
        status, runbook = fetch(opened["runbook_url"])
        assert status == 200 and 'id="ingest-stalled"' in runbook
        assert opened["runbook_url"].endswith("/docs/runbooks/ingest.md#ingest-stalled")
        assert fetch(opened["dashboard_url"])[0] == 200

        share.command("ATTACH TABLE delivery_minute")
        h.wait_caught_up()
        changes = wait_for(lambda: resolved(h), "the resolution", [worker], timeout=60)
    finally:
        share.close()
    assert [(a["status"], a["alert_id"]) for a in changes] == [
        ("OPENED", opened["alert_id"]),
        ("RESOLVED", opened["alert_id"]),
    ], changes
    assert worker.health()["monitor"]["ingest"]["open"] == []
    rows = h.sql(
        "SELECT status, kind, severity, resolved_at IS NOT NULL FROM alerts_current WHERE metric = 'ingest'"
    )
    assert rows == [["RESOLVED", "stall", "critical", True]]
    assert h.scalar("SELECT count() FROM events") == len(events)  # nothing lost while it stalled
