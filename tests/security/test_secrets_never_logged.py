"""The real API over a real embedded warehouse, logging as the worker does: every error path, driven
with a key in X-Api-Key and in Authorization: Bearer, is logged, and the log holds no key and no
password; no error answer repeats the key either."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from projections import queries
from projections.migrate import migrate
from projections.warehouse import Warehouse
from streams.pipeline import IngestTotals
from web.app import create_api
from web.auth import KeyEntry, KeyRing, new_key

from .conftest import CapturedLog

pytestmark = pytest.mark.integration

KEYS: dict[str, str] = {}
ENTRIES: list[KeyEntry] = []
for _name, _tenant, _role in (("acme-dash", "acme", "viewer"), ("ops", "*", "operator")):
    _key, _entry = new_key(_name, _tenant, _role)  # type: ignore[arg-type]
    KEYS[_name] = _key
    ENTRIES.append(KeyEntry.model_validate(_entry))
UNKNOWN_KEY, _ = new_key("nobody", "acme", "viewer")  # the right format, in no keys file
PASSWORD = "Wh-p4ssw0rd-9c1e"
DSN = f"https://herald:{PASSWORD}@warehouse.internal:8443/herald"
SECRETS = (*KEYS.values(), UNKNOWN_KEY, PASSWORD)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The worker's API over a migrated chDB warehouse, with a viewer key of tenant acme and a global
    operator key."""
    root: Path = tmp_path_factory.mktemp("secrets")
    warehouse = Warehouse(f"chdb://{root / 'wh'}")
    try:
        migrate(warehouse)
        yield create_api(warehouse, IngestTotals, "test", keys=KeyRing(ENTRIES))
    finally:
        warehouse.close()


def headers(style: str, key: str) -> dict[str, str]:
    return {"X-Api-Key": key} if style == "x-api-key" else {"Authorization": f"Bearer {key}"}


# (case, key presented, method, path, request kwargs, expected status)
ERROR_PATHS: list[tuple[str, str, str, str, dict[str, Any], int]] = [
    ("unknown key", UNKNOWN_KEY, "GET", "/api/v1/tenants/acme/delivery", {}, 401),
    ("another tenant", KEYS["acme-dash"], "GET", "/api/v1/tenants/brightfix/delivery", {}, 403),
    ("role too low", KEYS["acme-dash"], "POST", "/api/v1/tenants/acme/segments", {"json": {}}, 403),
    ("global route, tenant key", KEYS["acme-dash"], "GET", "/api/v1/alerts", {}, 403),
    ("unknown route", KEYS["acme-dash"], "GET", f"/api/v1/nothing/{KEYS['acme-dash']}", {}, 404),
    ("invalid body", KEYS["ops"], "POST", "/sql", {"json": {"max_rows": 0}}, 422),
    (
        "invalid query parameter",
        KEYS["acme-dash"],
        "GET",
        "/api/v1/tenants/acme/delivery",
        {"params": {"bucket": "fortnight"}},
        422,
    ),
    ("bad SQL", KEYS["ops"], "POST", "/sql", {"json": {"query": "SELECT nope FROM nowhere"}}, 400),
    ("SQL with a tenant key", KEYS["acme-dash"], "POST", "/sql", {"json": {"query": "SELECT 1"}}, 403),
]


def assert_no_secret(text: str) -> None:
    leaked = [s[:6] + "..." for s in SECRETS if s in text]
    assert not leaked, f"secrets in the log: {leaked}"


@pytest.mark.parametrize("style", ["x-api-key", "bearer"])
@pytest.mark.parametrize(
    ("case", "key", "method", "path", "kwargs", "status"), ERROR_PATHS, ids=[c[0] for c in ERROR_PATHS]
)
def test_a_refused_request_is_logged_without_its_key(
    app: FastAPI,
    capture_log: Callable[[str], CapturedLog],
    style: str,
    case: str,
    key: str,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
) -> None:
    """Each 4xx answer leaves one api.request_failed line with its status; neither the line nor the
    answer contains the presented key."""
    log = capture_log("json")
    client = TestClient(app, raise_server_exceptions=False)
    response = client.request(method, path, headers=headers(style, key), **kwargs)
    assert response.status_code == status, (case, response.text)
    (event,) = log.named("api.request_failed")
    assert event["status"] == status and event["method"] == method and event["level"] == "info"
    assert event["path"] == path.replace(KEYS["acme-dash"], "hk_***")
    assert key not in response.text
    assert_no_secret(log.text)


@pytest.mark.parametrize("style", ["x-api-key", "bearer"])
def test_an_unhandled_error_is_logged_without_locals_key_or_password(
    app: FastAPI,
    capture_log: Callable[[str], CapturedLog],
    monkeypatch: pytest.MonkeyPatch,
    style: str,
) -> None:
    """A route raising with the key in a local and a DSN with its password in the message answers a
    bare 500 and logs api.unhandled_error with a redacted message and frames without locals."""

    def broken_query(*args: object, **kwargs: object) -> None:
        presented = KEYS["acme-dash"]  # noqa: F841 - a frame local a traceback with locals would print
        warehouse_dsn = DSN  # noqa: F841
        raise RuntimeError(f"cannot reach {DSN} for {KEYS['acme-dash']}")

    monkeypatch.setattr(queries, "delivery_series", broken_query)
    log = capture_log("json")
    client = TestClient(app, raise_server_exceptions=False)
    response = client.get("/api/v1/tenants/acme/delivery", headers=headers(style, KEYS["acme-dash"]))
    assert response.status_code == 500 and response.text == "Internal Server Error"
    (event,) = log.named("api.unhandled_error")
    assert event["level"] == "error" and event["path"] == "/api/v1/tenants/acme/delivery"
    (error,) = event["exception"]
    assert error["exc_type"] == "RuntimeError"
    assert error["exc_value"] == "cannot reach https://herald:***@warehouse.internal:8443/herald for hk_***"
    assert error["frames"][-1]["name"] == "broken_query"
    assert all("locals" not in frame for frame in error["frames"])
    assert_no_secret(log.text)


def test_metrics_and_health_carry_no_key(app: FastAPI, capture_log: Callable[[str], CapturedLog]) -> None:
    """/metrics and /health answer without any key or password, whatever key the caller sent."""
    log = capture_log("json")
    client = TestClient(app, raise_server_exceptions=False)
    for path in ("/metrics", "/health"):
        response = client.get(path, headers=headers("bearer", KEYS["ops"]))
        assert response.status_code == 200
        assert_no_secret(response.text)
    assert_no_secret(log.text)
