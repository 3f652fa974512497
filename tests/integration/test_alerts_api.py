"""The alerts endpoints over a real embedded warehouse: rows written into ``alerts`` the way the monitor
writes them (OPENED, later RESOLVED with the same id, a restart's duplicate) read back once per alert,
scoped to the key's tenant, filtered by status, series and time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from analytics.alerting import AlertChange, SeriesKey, alert_id
from projections.migrate import migrate
from projections.rows import ALERT_COLUMNS
from projections.warehouse import Warehouse
from streams.pipeline import IngestTotals
from tests.integration.helpers import alert_change_row
from web.app import create_api
from web.auth import NO_KEYS, hash_key, load_key_ring

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
A, B = "acme-home", "brightfix"
KEYS = {"viewer-a": "key-viewer-a", "analyst-b": "key-analyst-b", "ops": "key-ops", "admin-a": "key-admin-a"}
BASE = "https://herald.example.com"


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def change(series: SeriesKey, opened: datetime, metric: str, kind: str, severity: str) -> AlertChange:
    observed, expected = (0.41, 0.96) if metric.endswith("_rate") else (2400.0, 800.0)
    return AlertChange(
        alert_id=alert_id(series, ms(opened)),
        status="OPENED",
        series=series,
        metric=metric,
        kind=kind,
        severity=severity,
        observed=observed,
        expected=expected,
        score=0.97,
        window_start_ms=ms(opened),
        window_end_ms=ms(opened) + 60_000,
        first_seen_ms=ms(opened),
        at_ms=ms(opened),
    )


def resolved(opened: AlertChange, last_anomalous: datetime, resolved_at: datetime) -> AlertChange:
    """What AlertTracker emits on resolution: the same alert, RESOLVED at ``resolved_at``."""
    return replace(
        opened, status="RESOLVED", window_end_ms=ms(last_anomalous) + 60_000, at_ms=ms(resolved_at)
    )


def row(c: AlertChange) -> list[Any]:
    return alert_change_row(c, BASE, BASE + "/dashboard/")


SMS_A = SeriesKey(A, "SMS", "sms-primary")
EMAIL_A = SeriesKey(A, "EMAIL", "mail-relay")
PUSH_B = SeriesKey(B, "PUSH", "push-gw")
A_RESOLVED = change(SMS_A, NOW - timedelta(hours=3), "delivery_rate", "drop", "critical")
A_RESOLVED_END = resolved(A_RESOLVED, NOW - timedelta(hours=2, minutes=10), NOW - timedelta(hours=2))
A_OPEN = change(EMAIL_A, NOW - timedelta(minutes=30), "latency_p95", "spike", "major")
A_OLD = change(SMS_A, NOW - timedelta(days=3), "volume", "drop", "minor")  # resolved long before the range
A_OLD_END = resolved(A_OLD, NOW - timedelta(days=3), NOW - timedelta(days=2, hours=23))
B_OPEN = change(PUSH_B, NOW - timedelta(hours=1), "open_rate", "drop", "major")


class Env:
    def __init__(self, warehouse: Warehouse, client: TestClient, open_client: TestClient) -> None:
        self.warehouse = warehouse
        self.client = client
        self.open_client = open_client

    def get(self, path: str, key: str | None = "viewer-a", **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {KEYS[key]}"} if key else {}
        return self.client.get(path, headers=headers, params=params)

    def ids(self, path: str, key: str = "viewer-a", **params: Any) -> list[str]:
        response = self.get(path, key, **params)
        assert response.status_code == 200, response.text
        return [a["alert_id"] for a in response.json()["alerts"]]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One chDB warehouse with alert rows as the monitor writes them (one insert per status change, and
    the open alert's OPENED row written again as a monitor restarted from its checkpoint would), and
    two apps over it: with keys and without."""
    root: Path = tmp_path_factory.mktemp("alerts")
    warehouse = Warehouse(f"chdb://{root / 'warehouse'}")
    try:
        migrate(warehouse)
        warehouse.command("SYSTEM STOP MERGES alerts")  # the duplicate stays on disk: the reader folds it
        for c in (A_OLD, A_OLD_END, A_RESOLVED, B_OPEN, A_OPEN, A_RESOLVED_END, A_OPEN):
            warehouse.insert("alerts", [row(c)], ALERT_COLUMNS)
        keys_file = root / "keys.yaml"
        entries = [
            {"name": "viewer-a", "tenant": A, "role": "viewer", "key_sha256": hash_key(KEYS["viewer-a"])},
            {"name": "analyst-b", "tenant": B, "role": "analyst", "key_sha256": hash_key(KEYS["analyst-b"])},
            {"name": "admin-a", "tenant": A, "role": "admin", "key_sha256": hash_key(KEYS["admin-a"])},
            {"name": "ops", "tenant": "*", "role": "operator", "key_sha256": hash_key(KEYS["ops"])},
        ]
        keys_file.write_text(yaml.safe_dump({"keys": entries}))
        keys = load_key_ring(keys_file)
        with_keys = create_api(warehouse, IngestTotals, "test", keys=keys, clock=lambda: NOW)
        no_keys = create_api(warehouse, IngestTotals, "test", clock=lambda: NOW)
        yield Env(warehouse, TestClient(with_keys), TestClient(no_keys))
    finally:
        warehouse.close()


def test_the_duplicate_row_is_really_in_the_table(env: Env) -> None:
    """The fixture wrote the open alert's OPENED row twice, and it stays twice on disk (merges are
    stopped): the read side, not a lucky merge, must fold it."""
    rows = env.warehouse.scalar(
        "SELECT count() FROM alerts WHERE alert_id = {id:String} AND status = 'OPENED'",
        {"id": A_OPEN.alert_id},
    )
    assert rows == 2
    assert env.warehouse.scalar("SELECT count() FROM alerts") == 7


def test_a_tenant_key_sees_its_alerts_once_each_newest_first(env: Env) -> None:
    """Tenant A's key sees A's open and resolved alerts in the default range (the last 24 h), each
    once although the open one has two OPENED rows, newest first; B's alert is not among them."""
    response = env.get(f"/api/v1/tenants/{A}/alerts")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tenant"] == A and body["status"] == "all" and body["limit"] == 100
    assert body["from"] == (NOW - timedelta(days=1) + timedelta(minutes=1)).isoformat()
    assert [a["alert_id"] for a in body["alerts"]] == [A_OPEN.alert_id, A_RESOLVED.alert_id]
    assert {a["tenant_id"] for a in body["alerts"]} == {A}
    assert B_OPEN.alert_id not in {a["alert_id"] for a in body["alerts"]}


def test_resolved_at_is_set_only_for_the_resolved_alert(env: Env) -> None:
    """The resolved alert carries its RESOLVED time and the end of its last anomalous minute; the open
    one has status open and resolved_at null; both carry the content and links the monitor wrote."""
    found = {a["alert_id"]: a for a in env.get(f"/api/v1/tenants/{A}/alerts").json()["alerts"]}
    done, still = found[A_RESOLVED.alert_id], found[A_OPEN.alert_id]
    assert done["status"] == "resolved"
    assert done["resolved_at"] == (NOW - timedelta(hours=2)).isoformat()
    assert done["window_start"] == done["first_seen"] == (NOW - timedelta(hours=3)).isoformat()
    assert done["window_end"] == (NOW - timedelta(hours=2, minutes=9)).isoformat()
    assert still["status"] == "open" and still["resolved_at"] is None
    assert list(still) == [
        "alert_id",
        "status",
        "tenant_id",
        "channel",
        "provider",
        "metric",
        "kind",
        "severity",
        "observed",
        "expected",
        "score",
        "window_start",
        "window_end",
        "first_seen",
        "resolved_at",
        "dashboard_url",
        "runbook_url",
    ]
    assert (still["channel"], still["provider"], still["metric"], still["kind"]) == (
        "EMAIL",
        "mail-relay",
        "latency_p95",
        "spike",
    )
    assert (still["severity"], still["observed"], still["expected"]) == ("major", 2400.0, 800.0)
    assert still["first_seen"] == (NOW - timedelta(minutes=30)).isoformat()
    assert still["dashboard_url"] == f"{BASE}/dashboard?tenant={A}&channel=EMAIL&provider=mail-relay&range=6h"
    assert still["runbook_url"] == f"{BASE}/dashboard/docs/runbooks/latency.md#latency-p95-spike"
    assert done["runbook_url"] == f"{BASE}/dashboard/docs/runbooks/delivery.md#delivery-rate-drop"


def test_status_filter(env: Env) -> None:
    """status=open lists only unresolved alerts, status=resolved only resolved ones, all both."""
    path = f"/api/v1/tenants/{A}/alerts"
    assert env.ids(path, status="open") == [A_OPEN.alert_id]
    assert env.ids(path, status="resolved") == [A_RESOLVED.alert_id]
    assert env.ids(path, status="all") == [A_OPEN.alert_id, A_RESOLVED.alert_id]
    assert env.ids(path, limit=1) == [A_OPEN.alert_id]


def test_series_and_time_filters(env: Env) -> None:
    """channel/provider narrow to the series; an alert is in a range its [first_seen, resolved_at]
    overlaps, an open one until now."""
    path = f"/api/v1/tenants/{A}/alerts"
    assert env.ids(path, channel="sms") == [A_RESOLVED.alert_id]
    assert env.ids(path, provider="mail-relay") == [A_OPEN.alert_id]
    assert env.ids(path, channel="PUSH") == []

    def between(start: timedelta, end: timedelta, **params: Any) -> list[str]:
        return env.ids(path, **{"from": (NOW - start).isoformat(), "to": (NOW - end).isoformat()}, **params)

    assert between(timedelta(hours=2, minutes=30), timedelta(hours=2, minutes=20)) == [A_RESOLVED.alert_id]
    assert between(timedelta(hours=1, minutes=30), timedelta(hours=1)) == []  # after one, before the other
    assert between(timedelta(minutes=10), timedelta(minutes=5)) == [A_OPEN.alert_id]  # still open
    assert between(timedelta(days=4), timedelta(0)) == [A_OPEN.alert_id, A_RESOLVED.alert_id, A_OLD.alert_id]
    assert between(
        timedelta(days=4), timedelta(0), status="resolved", channel="SMS", provider="sms-primary"
    ) == [
        A_RESOLVED.alert_id,
        A_OLD.alert_id,
    ]


def test_another_tenant_is_403_without_data(env: Env) -> None:
    """A's key gets 403 for B's alerts, the reason and nothing else; B's key sees only B's alert."""
    response = env.get(f"/api/v1/tenants/{B}/alerts")
    assert response.status_code == 403
    assert response.json() == {"detail": f"key viewer-a is scoped to tenant {A}"}
    assert env.get(f"/api/v1/tenants/{A}/alerts", key="analyst-b").status_code == 403
    assert env.ids(f"/api/v1/tenants/{B}/alerts", key="analyst-b") == [B_OPEN.alert_id]


def test_all_tenants_endpoint_is_for_global_keys_only(env: Env) -> None:
    """/api/v1/alerts: 403 for every tenant-scoped key (even an admin of one tenant), every tenant's
    alerts for a global operator key; 401 without a key."""
    for key in ("viewer-a", "analyst-b", "admin-a"):
        response = env.get("/api/v1/alerts", key=key)
        assert response.status_code == 403, key
        assert "needs a global (operator or admin) key" in response.json()["detail"]
        assert "alerts" not in response.json()
    assert env.get("/api/v1/alerts", key=None).status_code == 401
    body = env.get("/api/v1/alerts", key="ops").json()
    assert body["tenant"] is None
    assert [a["alert_id"] for a in body["alerts"]] == [A_OPEN.alert_id, B_OPEN.alert_id, A_RESOLVED.alert_id]
    assert {a["tenant_id"] for a in body["alerts"]} == {A, B}
    assert env.ids("/api/v1/alerts", key="ops", status="open") == [A_OPEN.alert_id, B_OPEN.alert_id]
    assert env.ids("/api/v1/alerts", key="ops", channel="PUSH") == [B_OPEN.alert_id]
    # a global key reads any single tenant too
    assert env.ids(f"/api/v1/tenants/{B}/alerts", key="ops") == [B_OPEN.alert_id]


@pytest.mark.parametrize("path", [f"/api/v1/tenants/{A}/alerts", "/api/v1/alerts"])
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "bogus"}, "status"),
        ({"status": "OPENED"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "100000"}, "limit"),
        ({"channel": "FAX"}, "channel"),
        ({"provider": "x' OR 1=1 --"}, "provider"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-03-10T10:00:00Z", "to": "2026-03-10T09:00:00Z"}, "to"),
    ],
)
def test_bad_query_values_are_422_naming_the_field(
    env: Env, path: str, params: dict[str, str], field: str
) -> None:
    """Each invalid query value is refused with 422 and the parameter's name in the error location."""
    response = env.get(path, key="ops", **params)
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [["query", field]]


def test_without_keys_alerts_answer_503(env: Env) -> None:
    """No keys file: both alerts endpoints are 503 like the rest of /api/v1."""
    for path in (f"/api/v1/tenants/{A}/alerts", "/api/v1/alerts"):
        response = env.open_client.get(path)
        assert (response.status_code, response.json()) == (503, {"detail": NO_KEYS})


def test_openapi_documents_the_alerts_endpoints(env: Env) -> None:
    """Both endpoints have a summary, a description, the security schemes and the status/limit params."""
    paths = env.client.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/tenants/{tenant}/alerts", "/api/v1/alerts"):
        spec = paths[path]["get"]
        assert spec["summary"] and "resolved_at" in spec["description"] and spec["security"]
        params = {p["name"]: p for p in spec["parameters"]}
        assert {"status", "limit", "channel", "provider", "from", "to"} <= set(params)
        assert "bucket" not in params
        assert params["status"]["schema"]["enum"] == ["open", "resolved", "all"]
    assert "global" in paths["/api/v1/alerts"]["get"]["summary"]
