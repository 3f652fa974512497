"""The API as an attacker with keys meets it: every route x tenant x role, /sql scoped by the engine,
and one caller's slow query that cannot hold up another tenant."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from projections.access import ReaderLimits
from projections.sql_reader import SqlReaders
from streams.pipeline import IngestTotals
from tests.security.warehouse_env import KEYS, NOW, A, B, Filled, fill
from web.app import create_api
from web.auth import Role, load_key_ring

pytestmark = pytest.mark.integration

SLOW = "SELECT count() FROM numbers(10000000000000) WHERE NOT ignore(sipHash64(number))"


@dataclass
class Api:
    filled: Filled
    client: TestClient

    def call(self, method: str, path: str, key: str | None, body: Any = None) -> int:
        headers = {"X-Api-Key": KEYS.get(key, key)} if key else {}
        return self.client.request(method, path, headers=headers, json=body).status_code


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    for filled in fill(tmp_path_factory.mktemp("apiiso")):
        app = create_api(
            filled.warehouse,
            IngestTotals,
            "test",
            keys=load_key_ring(filled.keys_file),
            clock=lambda: NOW,
            readers=SqlReaders(filled.warehouse, ReaderLimits(max_execution_time_s=120)),
            rate_clock=itertools.count(0.0, 3600.0).__next__,  # buckets always full: the matrix tests authz
        )
        yield Api(filled, TestClient(app, raise_server_exceptions=False))


T = "/api/v1/tenants/{t}"
# (method, path, the lowest role allowed, global keys only, body)
ROUTES: list[tuple[str, str, Role, bool, Any]] = [
    ("GET", "/api/v1/tenants", Role.VIEWER, False, None),
    *(
        (("GET", f"{T}/{name}", Role.VIEWER, False, None))
        for name in (
            "delivery",
            "engagement",
            "latency",
            "providers",
            "alerts",
            "sla",
            "failover",
            "budgets",
            "experiments",
            "experiments/x",
            "experiments/x/changes",
            "experiments/x/history",
            "segments",
            "segments/x",
            "segments/x/changes",
        )
    ),
    ("POST", f"{T}/experiments", Role.ANALYST, False, {}),
    ("PUT", f"{T}/experiments/x", Role.ANALYST, False, {}),
    ("POST", f"{T}/experiments/x/stop", Role.OPERATOR, False, None),
    ("DELETE", f"{T}/experiments/x", Role.OPERATOR, False, None),
    ("POST", f"{T}/segments", Role.ANALYST, False, {}),
    ("PUT", f"{T}/segments/x", Role.ANALYST, False, {}),
    ("DELETE", f"{T}/segments/x", Role.ANALYST, False, None),
    ("GET", "/api/v1/alerts", Role.OPERATOR, True, None),
]
CALLERS = [name for name in KEYS] + [None, "hk_unknown-key-0123456789"]


def expected_allowed(caller: str | None, tenant: str | None, role: Role, global_only: bool) -> bool | None:
    """True: allowed; False: 403; None: 401 (no key or an unknown one). ``tenant`` None: a route of
    no tenant."""
    if caller is None or caller not in KEYS:
        return None
    caller_role, _, scope = caller.partition("-")
    if Role[caller_role.upper()] < role:
        return False
    if scope == "all":
        return True
    return not global_only and tenant in (None, scope)


def test_the_route_list_covers_every_api_route(api: Api) -> None:
    """A new route must join the matrix below."""
    spec = api.client.get("/openapi.json").json()["paths"]
    found = {(m.upper(), p) for p, ops in spec.items() if p.startswith("/api/v1") for m in ops}
    listed = {(m, p.replace("{t}", "{tenant}").replace("/x", "/{id}")) for m, p, *_ in ROUTES}
    normal = {(m, p.replace("{experiment_id}", "{id}").replace("{name}", "{id}")) for m, p in found}
    assert normal == listed


@pytest.mark.parametrize(("method", "path", "role", "global_only", "body"), ROUTES)
def test_every_route_refuses_every_caller_it_should(
    api: Api, method: str, path: str, role: Role, global_only: bool, body: Any
) -> None:
    """No key or an unknown one: 401; another tenant, a role too low or a tenant key on a global route:
    403; everyone else gets past the authorisation (whatever the route then answers)."""
    wrong = []
    for tenant in (A, B):
        url = path.format(t=tenant)
        for caller in CALLERS:
            status = api.call(method, url, caller, body)
            allowed = expected_allowed(caller, tenant if "{t}" in path else None, role, global_only)
            ok = (
                status == 401
                if allowed is None
                else status == 403
                if not allowed
                else status not in (401, 403)
            )
            if not ok:
                wrong.append((caller, url, status))
    assert wrong == []


def test_sql_is_refused_to_viewers_and_scoped_for_tenant_analysts(api: Api) -> None:
    """A tenant analyst or operator gets its tenant's rows only; a global key every tenant's; a viewer 403."""
    body = {"query": "SELECT DISTINCT tenant_id FROM events ORDER BY tenant_id"}
    for caller in CALLERS:
        response = api.client.post("/sql", json=body, headers={"X-Api-Key": KEYS.get(caller, caller or "")})
        if caller is None or caller not in KEYS:
            assert response.status_code == 401, caller
            continue
        role, _, scope = caller.partition("-")
        if role == "viewer":
            assert response.status_code == 403, caller
            continue
        rows = {r[0] for r in response.json()["rows"]}
        assert rows == ({A, B} <= rows and rows) if scope == "all" else {scope}, caller


def test_sql_errors_name_their_cause_with_the_right_status(api: Api) -> None:
    """A refused statement is 422 with the reason; an engine refusal 403 or 400 with the engine's reason."""

    def sql(query: str) -> tuple[int, str]:
        r = api.client.post("/sql", json={"query": query}, headers={"X-Api-Key": KEYS[f"analyst-{A}"]})
        return r.status_code, str(r.json()["detail"])

    assert sql("DROP TABLE events") == (
        422,
        "query: only SELECT (or WITH … SELECT) statements are allowed, not DROP",
    )
    status, detail = sql("SELECT * FROM url('http://127.0.0.1:1/', 'TSV')")
    assert status == 403 and "URL" in detail
    status, detail = sql("SELEC 1")
    assert status == 400 and "Syntax error" in detail
    status, detail = sql("SELECT number FROM numbers(20000)")
    assert status == 422 and "max_rows" in detail


def test_a_query_over_its_time_limit_is_cancelled_by_the_engine_with_504(api: Api) -> None:
    """The engine stops the query at the session's max_execution_time; the API answers 504 and says so."""
    readers = SqlReaders(api.filled.warehouse, ReaderLimits(max_execution_time_s=0.5))
    app = create_api(api.filled.warehouse, IngestTotals, "t", keys=load_key_ring(api.filled.keys_file),
                     readers=readers)  # fmt: skip
    response = TestClient(app).post("/sql", json={"query": SLOW}, headers={"X-Api-Key": KEYS[f"analyst-{A}"]})
    assert response.status_code == 504
    assert "time limit" in response.json()["detail"] and "Timeout exceeded" in response.json()["detail"]


def test_a_slow_query_of_one_tenant_does_not_hold_another_tenants_api(api: Api) -> None:
    """While tenant A's query runs in the engine, tenant B's dashboard calls and /health answer; then the
    slow query is cancelled in the engine and A gets an error, not a hung request."""
    finished = threading.Event()
    answer: list[int] = []

    def slow() -> None:
        answer.append(api.call("POST", "/sql", f"analyst-{A}", {"query": SLOW}))
        finished.set()

    thread = threading.Thread(target=slow, daemon=True)
    thread.start()
    running = "SELECT count() FROM system.processes WHERE query LIKE '%numbers(10000000000000)%' " \
        "AND query NOT LIKE '%system.processes%'"  # fmt: skip
    for _ in range(600):
        if api.filled.warehouse.scalar(running):
            break
        finished.wait(0.05)
    assert api.filled.warehouse.scalar(running) == 1, "the slow query never started"
    for path in (
        f"/api/v1/tenants/{B}/delivery",
        f"/api/v1/tenants/{B}/alerts",
        f"/api/v1/tenants/{B}/latency",
    ):
        assert api.call("GET", path, f"viewer-{B}") == 200
    assert api.client.get("/health").json()["status"] == "ok"
    assert not finished.is_set(), "the slow query ended before the other tenant's calls were made"
    api.filled.warehouse.command(
        "KILL QUERY WHERE query LIKE '%numbers(10000000000000)%' AND query NOT LIKE '%KILL%' SYNC"
    )
    assert finished.wait(60)
    assert answer and answer[0] >= 400
