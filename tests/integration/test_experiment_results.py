"""Experiment results from dispatch to the API: requests decided by the dispatcher with a YAML experiment
are exposed (DISPATCHED carrying experiment and variant), their outcomes land in the warehouse through
the real ingest path, and /api/v1/tenants/{t}/experiments/{id} shows per-variant exposures and
conversions equal to the events, with the comparison of the treatment against the control; another
tenant's key sees nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from experiments.definitions import load_experiments_text
from policies.segments import Segment
from projections.migrate import migrate
from projections.warehouse import Warehouse
from streams.pipeline import IngestTotals
from tests.integration.helpers import exposed_events, ingest
from web.app import create_api
from web.auth import hash_key, load_key_ring

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 5, 16, tzinfo=UTC)
T0 = int(NOW.timestamp() * 1000) - 3_600_000
EXPERIMENTS = """
experiments:
  - {id: reminder-v4, tenant: acme-home, template: visit-reminder, segment: gold, variants: [
       {name: control, template_version: 3, weight: 1}, {name: v4, template_version: 4, weight: 1}],
     start: 2026-12-01T00:00:00Z, stop: 2026-12-21T00:00:00Z, primary_metric: delivery_rate,
     guardrail_metrics: [unsubscribe_rate, latency_mean], mde: 0.05}
"""
KEYS = {"acme": "key-acme", "bright": "key-bright"}


def delivered(variant: str, n: int) -> bool:
    """v4 is delivered 95 % of the time, control 80 %."""
    return (n % 20) != 0 if variant == "v4" else (n % 5) != 0


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, list[dict[str, Any]]]]:
    root: Path = tmp_path_factory.mktemp("experiments")
    warehouse = Warehouse(f"chdb://{root / 'warehouse'}")
    try:
        migrate(warehouse)
        segments = {"gold": Segment.parse("gold", 'tier == "gold"')}
        experiments = load_experiments_text(EXPERIMENTS, segments, source="experiments.yaml")
        events = exposed_events(experiments, segments, T0, delivered=delivered)  # 1,000 gold recipients
        ingest(warehouse, events, root, NOW)
        entries = [
            {"name": "acme", "tenant": "acme-home", "role": "viewer", "key_sha256": hash_key(KEYS["acme"])},
            {
                "name": "bright",
                "tenant": "brightfix",
                "role": "viewer",
                "key_sha256": hash_key(KEYS["bright"]),
            },
        ]
        (root / "keys.yaml").write_text(yaml.safe_dump({"keys": entries}))
        keys = load_key_ring(root / "keys.yaml")
        yield (
            TestClient(
                create_api(
                    warehouse, IngestTotals, "t", keys=keys, clock=lambda: NOW, experiments=experiments
                )
            ),
            events,
        )
    finally:
        warehouse.close()


def get(client: TestClient, path: str, key: str = "acme") -> Any:
    return client.get(path, headers={"X-Api-Key": KEYS[key]})


def test_results_equal_the_events_and_show_the_treatment_effect(
    client: tuple[TestClient, list[dict[str, Any]]],
) -> None:
    api, events = client
    response = get(api, "/api/v1/tenants/acme-home/experiments/reminder-v4")
    assert response.status_code == 200, response.text
    body = response.json()
    exposed = Counter(e["variant"] for e in events if e["event_type"] == "DISPATCHED")
    delivered = Counter(e["variant"] for e in events if e["event_type"] == "DELIVERED")
    assert {v["name"]: v["exposed"] for v in body["variants"]} == dict(exposed)
    assert {v["name"]: v["delivered"] for v in body["variants"]} == dict(delivered)
    assert sum(exposed.values()) == 1000 and abs(exposed["v4"] - 500) < 60
    assert {v["name"]: v["template_version"] for v in body["variants"]} == {"control": 3, "v4": 4}
    primary = body["metrics"]["delivery_rate"]
    assert primary["status"] == "ok" and primary["control"] == "control"
    (row,) = primary["results"]
    assert row["variant"] == "v4" and row["significant"] is True
    assert row["relative_effect"] == pytest.approx(
        (delivered["v4"] / exposed["v4"]) / (delivered["control"] / exposed["control"]) - 1, rel=1e-9
    )
    assert row["ci_low"] > 0 and primary["srm_flag"] is False
    assert body["metrics"]["unsubscribe_rate"]["status"] == "ok"
    latency = body["metrics"]["latency_mean"]  # a mean metric: from the latency sums of DELIVERED
    assert latency["status"] == "ok" and latency["metric"] == "mean" and latency["better"] == "lower"
    for variant in body["variants"]:
        times = [
            e["latency_ms"]
            for e in events
            if e["event_type"] == "DELIVERED" and e["variant"] == variant["name"]
        ]
        assert variant["latency_n"] == len(times)
        assert variant["latency_mean_ms"] == pytest.approx(sum(times) / len(times), rel=1e-9)


def test_the_list_is_tenant_scoped_and_other_tenants_see_nothing(
    client: tuple[TestClient, list[dict[str, Any]]],
) -> None:
    api, _ = client
    listed = get(api, "/api/v1/tenants/acme-home/experiments").json()
    assert [e["experiment_id"] for e in listed["experiments"]] == ["reminder-v4"]
    assert listed["experiments"][0]["running"] is True
    assert get(api, "/api/v1/tenants/acme-home/experiments/reminder-v4", key="bright").status_code == 403
    assert get(api, "/api/v1/tenants/brightfix/experiments", key="bright").json()["experiments"] == []
    missing = get(api, "/api/v1/tenants/brightfix/experiments/reminder-v4", key="bright")
    assert missing.status_code == 404 and "no experiment 'reminder-v4' for tenant 'brightfix'" in missing.text
