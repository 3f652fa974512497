"""An experiment defined through the API runs in a real worker: the dispatch agent picks the new
definition up and exposes requests to it, the leader's experiments job stores the statistics and
publishes the status, the API shows the same numbers to the tenant's key and nothing to another's."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dispatch.core import example_request
from herald.local import query_endpoint
from providers.local.process import LocalProvidersProcess
from schemas.codec import request_codec
from streams.emitter import Emitter
from streams.topics import topic_size
from tests.conftest import Herald
from tests.integration.helpers import wait_for
from web.auth import new_key

pytestmark = pytest.mark.integration

POLICY = """
providers:
  sms: [{name: sms-primary, price_micros: 7500, currency: USD}]
  email: [{name: smtp-primary, price_micros: 90, currency: USD}]
routing:
  default: {sms: [sms-primary], email: [smtp-primary]}
"""
REQUESTS = 240


def test_an_experiment_created_through_the_api_is_exposed_measured_and_published(
    herald: Herald, providers: LocalProvidersProcess, tmp_path: Path
) -> None:
    keys, entries = {}, []
    for holder, tenant, role in (
        ("ops", "*", "admin"),
        ("acme", "acme-home", "analyst"),
        ("bright", "brightfix", "analyst"),
    ):
        keys[holder], entry = new_key(holder, tenant, role)  # type: ignore[arg-type]
        entries.append(entry)
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"keys": entries}))
    (tmp_path / "guardrails.yaml").write_text(POLICY)
    worker = herald.start_worker(
        HERALD_API_KEYS_FILE=str(tmp_path / "keys.yaml"),
        HERALD_GUARDRAILS_FILE=str(tmp_path / "guardrails.yaml"),
        HERALD_PROVIDERS_FILE=str(providers.ready_file),
        HERALD_EXPERIMENTS_INTERVAL_S="1",
    )
    api = httpx.Client(base_url=worker.api, timeout=30)

    def get(path: str, holder: str = "acme") -> httpx.Response:
        return api.get(path, headers={"X-Api-Key": keys[holder]})

    now = datetime.now(UTC)
    body = {
        "id": "reminder-copy", "template": "visit-reminder", "primary_metric": "delivery_rate",
        "guardrail_metrics": ["latency_mean"], "mde": 0.05,
        "variants": [{"name": "control", "template_version": 3, "weight": 1},
                     {"name": "short", "template_version": 4, "weight": 1}],
        "start": (now - timedelta(hours=1)).isoformat(), "stop": (now + timedelta(days=7)).isoformat(),
    }  # fmt: skip
    created = api.post(
        "/api/v1/tenants/acme-home/experiments", json=body, headers={"X-Api-Key": keys["acme"]}
    )
    assert created.status_code == 201, created.text
    time.sleep(6)  # the dispatch agent asks the registry for new definitions every 5 s

    emitter = Emitter(herald.bootstrap, herald.settings.topics.dispatch_requests, codec=request_codec())
    base = example_request()["recipient"]
    for i in range(REQUESTS):
        emitter.emit_request(
            example_request(
                request_id=f"x-{i}", notification_id=f"xn-{i}", campaign_id=None,
                recipient={**base, "id": f"r-{i}"}, requested_at=datetime.now(UTC),
            )
        )  # fmt: skip
    emitter.flush()
    emitter.close()

    def sql(query: str) -> list[list[Any]]:
        return query_endpoint(worker.api, query, api_key=keys["ops"])[1]

    exposed = wait_for(
        lambda: (rows := sql(
            "SELECT variant, count() FROM events WHERE event_type = 'DISPATCHED' "
            "AND experiment_id = 'reminder-copy' GROUP BY variant ORDER BY variant"
        )) and sum(r[1] for r in rows) == REQUESTS and dict(rows),
        herald,
    )  # fmt: skip
    assert set(exposed) == {"control", "short"} and abs(exposed["short"] - REQUESTS / 2) < 40

    def computed() -> Any:
        history = get("/api/v1/tenants/acme-home/experiments/reminder-copy/history").json()
        points = history.get("points") or []
        return [p for p in points if p.get("n") and p["variant"] == "short" and p["n"] == exposed["short"]]

    wait_for(computed, "the experiments job to store the statistics of every exposure", herald.workers)
    report = get("/api/v1/tenants/acme-home/experiments/reminder-copy")
    assert report.status_code == 200, report.text
    assert {v["name"]: v["exposed"] for v in report.json()["variants"]} == exposed
    assert wait_for(
        lambda: topic_size(herald.bootstrap, herald.settings.topics.experiment_status) > 0,
        "the status message",
        herald.workers,
    )
    assert get("/api/v1/tenants/acme-home/experiments/reminder-copy", "bright").status_code == 403
    assert get("/api/v1/tenants/brightfix/experiments/reminder-copy", "bright").status_code == 404
