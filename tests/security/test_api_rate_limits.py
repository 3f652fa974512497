"""Rate limits on the real API (web.app.create_api over an embedded warehouse), driven by a fake clock:
a key past its burst is refused with 429 and Retry-After, other keys and /health and /metrics are not,
and unknown keys from one address turn from 401 into 429."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from herald.settings import Settings
from projections.migrate import migrate
from projections.warehouse import Warehouse
from streams.pipeline import IngestTotals
from web.app import create_api
from web.auth import AUTH_FAILURES, KeyRing, hash_key, load_key_ring

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
A, B = "acme-home", "brightfix"
KEYS = {"viewer-a": "key-viewer-a", "analyst-b": "key-analyst-b", "ops": "key-ops"}
RATE, BURST = 1.0, 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    """One migrated chDB warehouse for the module (one opener per path); the tables may stay empty."""
    root: Path = tmp_path_factory.mktemp("ratelimit")
    opened = Warehouse(f"chdb://{root / 'warehouse'}")
    try:
        migrate(opened)
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    path = tmp_path_factory.mktemp("keys") / "keys.yaml"
    entries = [
        {"name": "viewer-a", "tenant": A, "role": "viewer", "key_sha256": hash_key(KEYS["viewer-a"])},
        {"name": "analyst-b", "tenant": B, "role": "analyst", "key_sha256": hash_key(KEYS["analyst-b"])},
        {"name": "ops", "tenant": "*", "role": "operator", "key_sha256": hash_key(KEYS["ops"])},
    ]
    path.write_text(yaml.safe_dump({"keys": entries}))
    ring = load_key_ring(path)
    assert ring is not None
    return ring


class Api:
    """A fresh app (fresh buckets) with a tiny per-key limit on a fake clock."""

    def __init__(self, warehouse: Warehouse, keys: KeyRing) -> None:
        self.clock = FakeClock()
        self.app = create_api(
            warehouse, IngestTotals, "t", keys=keys, clock=lambda: NOW,
            rate_per_s=RATE, rate_burst=BURST, rate_clock=self.clock,
        )  # fmt: skip
        self.client = TestClient(self.app)

    def from_address(self, host: str) -> TestClient:
        return TestClient(self.app, client=(host, 50000))

    def delivery(self, key: str, tenant: str = A, client: TestClient | None = None) -> int:
        headers = {"X-Api-Key": KEYS.get(key, key)}
        response = (client or self.client).get(f"/api/v1/tenants/{tenant}/delivery", headers=headers)
        return response.status_code


@pytest.fixture
def api(warehouse: Warehouse, keys: KeyRing) -> Api:
    return Api(warehouse, keys)


@pytest.mark.integration
def test_a_key_past_its_burst_gets_429_with_retry_after_and_another_key_is_served(api: Api) -> None:
    """viewer-a's fourth request within a second is 429 naming the limit; analyst-b is unaffected."""
    assert [api.delivery("viewer-a") for _ in range(BURST)] == [200] * BURST
    refused = api.client.get(f"/api/v1/tenants/{A}/delivery", headers={"X-Api-Key": KEYS["viewer-a"]})
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.json() == {"detail": "rate limit: 1 requests/s per key (burst 3); retry in 1 s"}
    assert [api.delivery("analyst-b", B) for _ in range(BURST)] == [200] * BURST
    api.clock.now += 1
    assert api.delivery("viewer-a") == 200


@pytest.mark.integration
def test_sql_is_limited_per_key_like_the_rest_of_the_api(api: Api) -> None:
    """/sql spends the global key's bucket: past the burst it answers 429 before any query runs."""
    headers = {"X-Api-Key": KEYS["ops"]}
    statuses = [
        api.client.post("/sql", json={"query": "SELECT 1"}, headers=headers) for _ in range(BURST + 1)
    ]
    assert [r.status_code for r in statuses] == [200] * BURST + [429]
    assert statuses[-1].headers["Retry-After"] == "1"


@pytest.mark.integration
def test_unknown_keys_from_one_address_get_429_instead_of_401_past_the_address_burst(api: Api) -> None:
    """After the address's burst of unknown keys, that address gets 429 even for a valid key; another
    address still gets 401 for a guess and 200 for its key."""
    guesser, neighbour = api.from_address("203.0.113.9"), api.from_address("198.51.100.4")
    guesses = [api.delivery(f"guess-{i}", client=guesser) for i in range(AUTH_FAILURES.burst + 1)]
    assert guesses == [401] * AUTH_FAILURES.burst + [429]
    refused = guesser.get(f"/api/v1/tenants/{A}/delivery", headers={"X-Api-Key": KEYS["viewer-a"]})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "per client address" in refused.json()["detail"]
    assert api.delivery("guess", client=neighbour) == 401
    assert api.delivery("viewer-a", client=neighbour) == 200
    api.clock.now += 1 / AUTH_FAILURES.rate
    assert api.delivery("viewer-a", client=guesser) == 200


@pytest.mark.integration
def test_health_and_metrics_are_never_limited_and_metrics_count_refusals(api: Api) -> None:
    """/health and /metrics answer 200 however often they are called; /metrics counts 429s by reason."""
    for _ in range(BURST + 1):
        api.delivery("viewer-a")
    for _ in range(AUTH_FAILURES.burst + 1):
        api.delivery("guess")
    assert {api.client.get("/health").status_code for _ in range(100)} == {200}
    pages = [api.client.get("/metrics") for _ in range(100)]
    assert {p.status_code for p in pages} == {200}
    text = pages[-1].text
    assert 'herald_api_rate_limited_total{reason="key"} 1.0' in text
    assert 'herald_api_rate_limited_total{reason="ip"} 1.0' in text
    assert 'herald_api_rate_limited_total{reason="sql_concurrency"} 0.0' in text
    assert "viewer-a" not in text and "testclient" not in text


def test_create_api_defaults_are_the_settings_defaults() -> None:
    """An app built without limits gets the same ones as a worker with default settings."""
    defaults = inspect.signature(create_api).parameters
    for setting, param in (
        ("api_rate_per_s", "rate_per_s"),
        ("api_rate_burst", "rate_burst"),
        ("api_sql_concurrency_per_key", "sql_concurrency_per_key"),
    ):
        assert defaults[param].default == Settings.model_fields[setting].default, setting
