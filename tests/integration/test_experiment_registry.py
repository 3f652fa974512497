"""Experiment and segment definitions changed through the API, over a real embedded warehouse: each change
is an event in ``definition_changes``; the API checks what the YAML loader checks and names the field,
refuses allocation changes of a running experiment, keeps file objects read-only and tenants apart
(segments included: the same name in two tenants never clashes), shows an experiment's effect over time,
and the registry snapshot dispatch uses assigns the API's experiments through ``variant_for``."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from httpx import Response

from experiments.definitions import MAX_DESCRIPTION_CHARS, exposure, load_experiments_text, variant_for
from experiments.registry import (
    CHANGE_COLUMNS,
    TABLE,
    Change,
    FileDefinitions,
    Registry,
    create_segment,
    update_experiment,
)
from policies.engagement import EngagementProfile
from policies.segments import Segment
from projections import experiment_queries
from projections.migrate import migrate
from projections.warehouse import Warehouse
from streams.pipeline import IngestTotals
from web.app import create_api
from web.auth import hash_key, load_key_ring

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 5, 16, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
A, B = "acme-home", "brightfix"
KEYS = {  # name: (tenant, role)
    "a-viewer": (A, "viewer"),
    "a-analyst": (A, "analyst"),
    "a-operator": (A, "operator"),
    "b-analyst": (B, "analyst"),
    "ops": ("*", "operator"),
}
SEGMENTS = {
    "gold": Segment.parse("gold", 'tier == "gold"'),
    "us_customers": Segment.parse("us_customers", 'kind == "customer" and country == "US"'),
}
FILE = """
experiments:
  - {id: file-exp, tenant: acme-home, template: welcome-email, segment: gold, variants: [
       {name: control, template_version: 1, weight: 1}, {name: v2, template_version: 2, weight: 1}],
     start: 2026-12-01T00:00:00Z, stop: 2026-12-21T00:00:00Z, primary_metric: open_rate, mde: 0.05,
     layer: {name: welcome, buckets: [0, 50]}}
"""


def experiment(experiment_id: str, **overrides: Any) -> dict[str, Any]:
    """A valid definition body, running at NOW unless start/stop say otherwise."""
    return {
        "id": experiment_id,
        "template": "visit-reminder",
        "description": "Shorter reminder copy",
        "variants": [
            {"name": "control", "template_version": 3, "weight": 1},
            {"name": "v4", "template_version": 4, "weight": 1},
        ],
        "start": "2026-12-01T00:00:00Z",
        "stop": "2026-12-21T00:00:00Z",
        "primary_metric": "open_rate",
        "guardrail_metrics": ["unsubscribe_rate"],
        "mde": 0.05,
        **overrides,
    }


class Env:
    def __init__(self, warehouse: Warehouse, files: FileDefinitions) -> None:
        self.warehouse = warehouse
        self.files = files
        keys = load_key_ring(_keys_file(warehouse))
        self.client = TestClient(
            create_api(
                warehouse, IngestTotals, "t", keys=keys, clock=lambda: NOW,
                experiments=files.experiments, segments=files.segments,
            )
        )  # fmt: skip
        self.bare = TestClient(create_api(warehouse, IngestTotals, "t", keys=keys, clock=lambda: NOW))

    def call(
        self, method: str, path: str, key: str = "a-analyst", body: Any = None, **params: Any
    ) -> Response:
        headers = {"X-Api-Key": f"key-{key}"}
        response: Response = self.client.request(
            method, f"/api/v1/tenants/{path}", headers=headers, json=body, params=params
        )
        return response

    def ok(self, method: str, path: str, key: str = "a-analyst", body: Any = None, **params: Any) -> Any:
        response = self.call(method, path, key, body, **params)
        assert response.status_code in (200, 201), response.text
        return response.json()


def _keys_file(warehouse: Warehouse) -> Path:
    assert warehouse.path is not None
    path = warehouse.path.parent / "keys.yaml"
    entries = [
        {"name": name, "tenant": tenant, "role": role, "key_sha256": hash_key(f"key-{name}")}
        for name, (tenant, role) in KEYS.items()
    ]
    path.write_text(yaml.safe_dump({"keys": entries}))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root: Path = tmp_path_factory.mktemp("registry")
    warehouse = Warehouse(f"chdb://{root / 'warehouse'}")
    try:
        migrate(warehouse)
        files = FileDefinitions(load_experiments_text(FILE, SEGMENTS, source="experiments.yaml"), SEGMENTS)
        yield Env(warehouse, files)
    finally:
        warehouse.close()


def listed(env: Env, tenant: str = A, key: str = "a-viewer") -> dict[str, dict[str, Any]]:
    return {e["experiment_id"]: e for e in env.ok("GET", f"{tenant}/experiments", key)["experiments"]}


def test_create_list_update_refuse_allocation_change_stop_and_list_changes(env: Env) -> None:
    """The lifecycle of an API experiment, each step an event with its version, actor and note."""
    before = env.ok("GET", f"{A}/experiments", "a-viewer")
    created = env.call("POST", f"{A}/experiments", body=experiment("copy-test"), note="first try")
    assert created.status_code == 201, created.text
    change = created.json()["change"]
    assert (change["version"], change["action"], change["actor"], change["note"]) == (
        1, "created", "a-analyst", "first try",
    )  # fmt: skip
    assert change["definition"]["tenant"] == A  # filled in from the path

    after = env.ok("GET", f"{A}/experiments", "a-viewer")
    assert after["version"] != before["version"]
    shown = {e["experiment_id"]: e for e in after["experiments"]}
    assert shown["file-exp"]["source"] == "file" and shown["file-exp"]["version"] == 0
    copy = shown["copy-test"]
    assert (copy["source"], copy["version"], copy["state"], copy["running"]) == ("api", 1, "running", True)
    assert copy["variants"] == ["control", "v4"] and copy["primary_metric"] == "open_rate"
    assert copy["changed_by"] == "a-analyst"

    later = experiment("copy-test", description="Shorter copy, longer run", stop="2026-12-28T00:00:00Z")
    updated = env.ok("PUT", f"{A}/experiments/copy-test", body=later)
    assert updated["change"]["version"] == 2 and updated["change"]["action"] == "updated"
    assert updated["experiment"]["stop"] == "2026-12-28T00:00:00+00:00"

    reshuffled = experiment(
        "copy-test",
        variants=[
            {"name": "control", "template_version": 3, "weight": 1},
            {"name": "v4", "template_version": 4, "weight": 3},
        ],
        segment="gold",
    )
    refused = env.call("PUT", f"{A}/experiments/copy-test", body=reshuffled)
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert "'copy-test' is running" in detail and "(variants, segment changed)" in detail
    assert "POST …/stop" in detail
    assert listed(env)["copy-test"]["version"] == 2  # nothing written

    assert env.call("POST", f"{A}/experiments/copy-test/stop").status_code == 403  # analyst < operator
    stopped = env.ok("POST", f"{A}/experiments/copy-test/stop", "a-operator", note="enough data")
    assert stopped["change"]["action"] == "stopped"
    assert stopped["experiment"]["stop"] == NOW.isoformat()
    assert stopped["experiment"]["state"] == "ended" and stopped["experiment"]["running"] is False
    # The allocation may change now that it no longer runs.
    assert env.call("PUT", f"{A}/experiments/copy-test", body=reshuffled).status_code == 200

    changes = env.ok("GET", f"{A}/experiments/copy-test/changes", "a-viewer")
    assert changes["source"] == "api"
    assert [(c["version"], c["action"], c["actor"]) for c in changes["changes"]] == [
        (1, "created", "a-analyst"),
        (2, "updated", "a-analyst"),
        (3, "stopped", "a-operator"),
        (4, "updated", "a-analyst"),
    ]
    assert changes["changes"][2]["note"] == "enough data"
    assert changes["changes"][2]["definition"]["stop"] == "2026-12-05T16:00:00Z"
    stored = env.warehouse.rows(
        "SELECT version, action, actor FROM definition_changes WHERE object_id = 'copy-test' ORDER BY version"
    )
    assert [tuple(r) for r in stored] == [(c["version"], c["action"], c["actor"]) for c in changes["changes"]]

    results = env.ok("GET", f"{A}/experiments/copy-test", "a-viewer")  # the results shape, found
    assert [v["name"] for v in results["variants"]] == ["control", "v4"]
    assert results["metrics"]["open_rate"]["status"] == "waiting"
    assert (results["source"], results["version"], results["definition"]["segment"]) == ("api", 4, "gold")


def test_validation_errors_name_the_field_and_the_problem(env: Env) -> None:
    """The YAML loader's checks, worded for the body: every problem at once, ``field: reason``."""
    bad = experiment(
        "bad-one",
        variants=[
            {"name": "control", "template_version": 1, "weight": 1},
            {"name": "v2", "template_version": 2, "weight": 0},
        ],
        primary_metric="revenue",
        stop="2026-11-01T00:00:00Z",
        owner="me",
    )
    response = env.call("POST", f"{A}/experiments", body=bad)
    assert response.status_code == 422
    problems = response.json()["detail"]
    for expected in (
        "variants[1].weight: Input should be greater than 0",
        "stop: must be after start (2026-12-01T00:00:00+00:00)",
        "owner: Extra inputs are not permitted",
    ):
        assert expected in problems, (expected, problems)
    assert any(p.startswith("primary_metric: Input should be") for p in problems)

    typo = env.call("POST", f"{A}/experiments", body=experiment("typo", segment="gld"))
    assert typo.json()["detail"] == ["segment: unknown segment 'gld'; did you mean 'gold'?"]
    overlap = experiment("overlap", template="welcome-email", layer={"name": "welcome", "buckets": [40, 60]})
    crossing = env.call("POST", f"{A}/experiments", body=overlap)
    assert crossing.json()["detail"] == [
        "layer.buckets: overlaps experiment 'file-exp' in layer 'welcome' while both run"
    ]
    wrong_tenant = env.call("POST", f"{A}/experiments", body=experiment("other", tenant=B))
    assert wrong_tenant.status_code == 422
    assert wrong_tenant.json()["detail"] == ["tenant: must be 'acme-home' as in the path, got 'brightfix'"]
    assert env.call("POST", f"{A}/experiments", body=["not", "an", "object"]).json()["detail"] == [
        "body: must be a JSON object"
    ]

    rule = env.call("POST", f"{A}/segments", body={"name": "es", "rule": 'langauge == "es"'})
    assert rule.status_code == 422
    (message,) = rule.json()["detail"]
    first, shown, caret = message.splitlines()
    assert first.startswith("rule: segment es: unknown attribute 'langauge' at column 1")
    assert "did you mean 'language'?" in first
    assert shown.strip() == 'langauge == "es"' and caret.strip() == "^"
    name = env.call("POST", f"{A}/segments", body={"name": "Gold ES", "rule": "true"})
    assert name.json()["detail"][0].startswith("name: String should match pattern")
    assert not {"bad-one", "typo", "overlap", "other"} & set(listed(env))  # nothing invalid was stored


def test_file_definitions_are_read_only_through_the_api(env: Env) -> None:
    """Objects of the policies files answer 409 naming the file; names they use cannot be taken."""
    for method, path, key in (
        ("PUT", f"{A}/experiments/file-exp", "a-analyst"),
        ("POST", f"{A}/experiments/file-exp/stop", "a-operator"),
        ("DELETE", f"{A}/experiments/file-exp", "a-operator"),
    ):
        response = env.call(method, path, key, body=experiment("file-exp") if method == "PUT" else None)
        assert response.status_code == 409, (method, path)
        assert response.json()["detail"] == (
            "experiment 'file-exp' is defined in policies file experiments.yaml; edit the file"
        )
    again = env.call("POST", f"{A}/experiments", body=experiment("file-exp"))
    assert again.status_code == 409 and "already exists (defined in policies file" in again.text
    segment = env.call("PUT", f"{A}/segments/gold", body={"rule": "true"})
    assert segment.status_code == 409 and "defined in policies file the segments file" in segment.text
    shadow = env.call("POST", f"{A}/segments", body={"name": "gold", "rule": "opened > 1"})
    assert shadow.status_code == 409
    assert "shared by every tenant; a tenant segment cannot take its name" in shadow.json()["detail"]
    assert env.ok("GET", f"{A}/experiments/file-exp/changes", "a-viewer") == {
        "tenant": A, "kind": "experiment", "id": "file-exp", "source": "file", "changes": [],
    }  # fmt: skip


def test_delete_only_before_the_start_and_stop_only_while_running(env: Env) -> None:
    later = experiment("later-test", start="2026-12-10T00:00:00Z")
    env.ok("POST", f"{A}/experiments", body=later)
    assert listed(env)["later-test"]["state"] == "scheduled"
    early = env.call("POST", f"{A}/experiments/later-test/stop", "a-operator")
    assert early.status_code == 409 and "has not started" in early.text and "DELETE it" in early.text
    assert env.call("DELETE", f"{A}/experiments/later-test").status_code == 403  # analyst < operator
    deleted = env.ok("DELETE", f"{A}/experiments/later-test", "a-operator", note="not needed")
    assert deleted["change"]["action"] == "deleted" and deleted["change"]["definition"] is None
    assert "later-test" not in listed(env)
    assert env.call("GET", f"{A}/experiments/later-test", "a-viewer").status_code == 404
    history = env.ok("GET", f"{A}/experiments/later-test/changes", "a-viewer")["changes"]
    assert [c["action"] for c in history] == ["created", "deleted"]
    recreated = env.ok("POST", f"{A}/experiments", body=later)  # the id is free again; versions go on
    assert recreated["change"]["version"] == 3

    env.ok("POST", f"{A}/experiments", body=experiment("running-test"))
    refused = env.call("DELETE", f"{A}/experiments/running-test", "a-operator")
    assert refused.status_code == 409
    assert "is running" in refused.text and "stop it instead (POST …/stop)" in refused.text
    env.ok("POST", f"{A}/experiments/running-test/stop", "a-operator")
    twice = env.call("POST", f"{A}/experiments/running-test/stop", "a-operator")
    assert twice.status_code == 409 and "already ended" in twice.text
    assert env.call("DELETE", f"{A}/experiments/running-test", "a-operator").status_code == 409


def test_tenants_see_and_change_only_their_own(env: Env) -> None:
    """A key of another tenant gets 403 on the path; another tenant's object is a 404 even for a global
    key; ids are unique across tenants without revealing the other tenant's definition."""
    env.ok("POST", f"{A}/experiments", body=experiment("acme-only"))
    for method, suffix in (
        ("GET", "experiments"),
        ("GET", "experiments/acme-only"),
        ("GET", "experiments/acme-only/history"),
        ("GET", "experiments/acme-only/changes"),
        ("PUT", "experiments/acme-only"),
        ("POST", "experiments"),
        ("GET", "segments"),
    ):
        response = env.call(method, f"{A}/{suffix}", "b-analyst", body=experiment("acme-only"))
        assert response.status_code == 403, (method, suffix)
        assert response.json()["detail"] == "key b-analyst is scoped to tenant brightfix"
    for key in ("b-analyst", "ops"):
        for suffix in ("", "/history", "/changes"):
            missing = env.call("GET", f"{B}/experiments/acme-only{suffix}", key)
            assert missing.status_code == 404, (key, suffix)
            assert missing.json()["detail"] == "no experiment 'acme-only' for tenant 'brightfix'"
    assert (
        env.call("PUT", f"{B}/experiments/acme-only", "b-analyst", body=experiment("acme-only")).status_code
        == 404
    )
    taken = env.call("POST", f"{B}/experiments", "b-analyst", body=experiment("acme-only"))
    assert taken.status_code == 409 and "used by another tenant" in taken.text
    assert "visit-reminder" not in taken.text and "acme" not in taken.json()["detail"].replace(
        "acme-only", ""
    )
    assert "acme-only" not in listed(env, B, "b-analyst")
    assert env.call("GET", f"{A}/experiments", "a-viewer").status_code == 200
    assert env.call("POST", f"{A}/experiments", "a-viewer", body=experiment("x")).status_code == 403


def test_segments_crud_with_per_tenant_namespaces(env: Env) -> None:
    """Each tenant's "vip" is its own; experiments target their tenant's; a targeted segment keeps its
    rule while the experiment runs and cannot be deleted."""
    a_vip = env.call("POST", f"{A}/segments", body={"name": "vip", "rule": "opened > 3"}, note="loyal")
    assert a_vip.status_code == 201, a_vip.text
    b_vip = env.call("POST", f"{B}/segments", "b-analyst", body={"name": "vip", "rule": "clicked > 5"})
    assert b_vip.status_code == 201, b_vip.text
    again = env.call("POST", f"{A}/segments", body={"name": "vip", "rule": "true"})
    assert again.status_code == 409 and "already exists (created through the API; PUT" in again.text

    seen_a = {s["name"]: s for s in env.ok("GET", f"{A}/segments", "a-viewer")["segments"]}
    seen_b = {s["name"]: s for s in env.ok("GET", f"{B}/segments", "b-analyst")["segments"]}
    assert seen_a["vip"]["rule"] == "opened > 3" and seen_b["vip"]["rule"] == "clicked > 5"
    assert (seen_a["vip"]["shared"], seen_a["vip"]["source"], seen_a["vip"]["version"]) == (False, "api", 1)
    assert seen_a["gold"]["shared"] is True and seen_a["gold"]["source"] == "file"
    assert set(SEGMENTS) <= set(seen_b)

    env.call("POST", f"{A}/segments", body={"name": "acme-loyal", "rule": "replied > 0"})
    assert "acme-loyal" not in {s["name"] for s in env.ok("GET", f"{B}/segments", "b-analyst")["segments"]}
    assert env.call("GET", f"{B}/segments/acme-loyal", "b-analyst").status_code == 404
    foreign = env.call(
        "POST", f"{B}/experiments", "b-analyst", body=experiment("b-loyal", segment="acme-loyal")
    )
    assert foreign.status_code == 422 and foreign.json()["detail"] == [
        "segment: unknown segment 'acme-loyal'"
    ]

    env.ok("POST", f"{A}/experiments", body=experiment("vip-a", segment="vip"))
    env.ok("POST", f"{B}/experiments", "b-analyst", body=experiment("vip-b", segment="vip"))
    assert env.ok("GET", f"{A}/segments/vip", "a-viewer")["targeted_by"] == ["vip-a"]

    rule = env.call("PUT", f"{A}/segments/vip", body={"rule": "opened > 4"})
    assert rule.status_code == 409 and "targeted by running experiment 'vip-a'" in rule.text
    described = env.ok(
        "PUT", f"{A}/segments/vip", body={"rule": "opened > 3", "description": "Loyal openers"}
    )
    assert described["segment"]["description"] == "Loyal openers" and described["segment"]["version"] == 2
    assert env.call("DELETE", f"{A}/segments/vip", "a-viewer").status_code == 403
    targeted = env.call("DELETE", f"{A}/segments/vip")
    assert targeted.status_code == 409 and "targeted by experiment 'vip-a' (running)" in targeted.text
    assert env.call("DELETE", f"{A}/segments/gold").status_code == 409  # the file's

    env.ok("DELETE", f"{A}/segments/acme-loyal")
    assert env.call("GET", f"{A}/segments/acme-loyal", "a-viewer").status_code == 404
    gone = env.ok("GET", f"{A}/segments/acme-loyal/changes", "a-viewer")["changes"]
    assert [c["action"] for c in gone] == ["created", "deleted"]
    assert env.ok("GET", f"{A}/segments/vip/changes", "a-viewer")["changes"][0]["note"] == "loyal"


def test_the_registry_snapshot_assigns_api_experiments_through_variant_for(env: Env) -> None:
    """What dispatch consumes: every tenant's experiments with tenant segments resolved to their own
    keys, so ``variant_for`` / ``exposure`` assign API experiments by each tenant's rule."""
    env.ok("POST", f"{A}/segments", body={"name": "openers", "rule": "opened >= 2"})
    env.ok("POST", f"{B}/segments", "b-analyst", body={"name": "openers", "rule": "opened >= 10"})
    env.ok("POST", f"{A}/experiments", body=experiment("assign-a", template="tpl-a", segment="openers"))
    env.ok(
        "POST",
        f"{B}/experiments",
        "b-analyst",
        body=experiment("assign-b", template="tpl-b", segment="openers"),
    )
    registry = Registry(env.warehouse, env.files)
    snapshot = registry.snapshot()
    assert registry.snapshot() is snapshot  # cached while definition_changes does not change
    a, b = snapshot.experiments.definitions["assign-a"], snapshot.experiments.definitions["assign-b"]
    assert (a.segment, b.segment) == (f"{A}/openers", f"{B}/openers")
    assert snapshot.experiments.definitions["file-exp"].segment == "gold"
    assert snapshot.experiments.version == snapshot.version

    some = EngagementProfile(delivered=5, opened=3)  # in acme's openers, not in brightfix's
    recipient = {"kind": "CUSTOMER", "tier": "gold", "country": "US"}
    got = Counter(variant_for(a, f"r-{n}", recipient, some, NOW_MS, snapshot.segments) for n in range(2000))
    assert set(got) == {"control", "v4"} and abs(got["v4"] - 1000) < 120
    assert variant_for(a, "r-1", recipient, None, NOW_MS, snapshot.segments) is None  # never opened
    assert variant_for(b, "r-1", recipient, some, NOW_MS, snapshot.segments) is None  # B's rule differs
    many = EngagementProfile(delivered=20, opened=12)
    assert variant_for(b, "r-1", recipient, many, NOW_MS, snapshot.segments) in ("control", "v4")
    found = exposure(
        snapshot.experiments, snapshot.segments, A, "tpl-a", {"id": "r-7", **recipient}, NOW_MS, some
    )
    assert found is not None and found[0].id == "assign-a"
    assert found[1].template_version == {"control": 3, "v4": 4}[found[1].name]
    assert exposure(snapshot.experiments, snapshot.segments, B, "tpl-a", {"id": "r-7"}, NOW_MS, some) is None

    env.ok("POST", f"{A}/experiments/assign-a/stop", "a-operator")
    changed = registry.snapshot()
    assert changed is not snapshot and changed.version != snapshot.version
    assert variant_for(changed.experiments.definitions["assign-a"], "r-1", recipient, some, NOW_MS,
                       changed.segments) is None  # fmt: skip
    assert changed.problems == ()


def test_effect_over_time_from_the_stored_results(env: Env) -> None:
    """/history returns the stored computations in order, per metric and variant, with the effect and
    its CIs; before the first computation it is empty."""
    env.ok("POST", f"{A}/experiments", body=experiment("history-test"))
    empty = env.ok("GET", f"{A}/experiments/history-test/history", "a-viewer")
    assert empty["points"] == [] and empty["primary_metric"] == "open_rate" and empty["control"] == "control"
    defn = Registry(env.warehouse, env.files).snapshot().experiments.definitions["history-test"]
    rows = []
    for hour, (control_opened, v4_opened) in enumerate([(100, 120), (210, 260), (300, 390)]):
        n = 1000 * (hour + 1)
        stats = {
            "control": {"exposed": float(n), "opened": float(control_opened), "unsubscribed": 5.0},
            "v4": {"exposed": float(n), "opened": float(v4_opened), "unsubscribed": 6.0},
        }
        report = experiment_queries.experiment_report(defn, stats, NOW_MS)
        rows += experiment_queries.result_rows(report, NOW - timedelta(hours=3 - hour), "v1")
    env.warehouse.insert("experiment_results", rows, experiment_queries.RESULT_COLUMNS)

    body = env.ok("GET", f"{A}/experiments/history-test/history", "a-viewer", metric="open_rate")
    points = body["points"]
    assert body["metric"] == "open_rate" and {p["metric"] for p in points} == {"open_rate"}
    assert [(p["variant"], p["n"]) for p in points] == [
        ("control", 1000), ("v4", 1000), ("control", 2000), ("v4", 2000), ("control", 3000), ("v4", 3000),
    ]  # fmt: skip
    treatment = [p for p in points if not p["is_control"]]
    assert [p["relative_effect"] for p in treatment] == pytest.approx([0.2, 260 / 210 - 1, 0.3])
    assert [p["conversions"] for p in treatment] == [120, 260, 390]
    assert all(p["seq_ci_low"] < p["relative_effect"] < p["seq_ci_high"] for p in treatment)
    assert all(p["ci_low"] < p["relative_effect"] < p["ci_high"] for p in treatment)
    assert treatment[-1]["significant"] is True and treatment[0]["significant"] is False
    assert all(p["relative_effect"] is None for p in points if p["is_control"])
    assert [p["computed_at"] for p in points[::2]] == [
        (NOW - timedelta(hours=h)).isoformat() for h in (3, 2, 1)
    ]
    assert all(0 <= p["srm_p_value"] <= 1 for p in points)
    every = env.ok("GET", f"{A}/experiments/history-test/history", "a-viewer")["points"]
    assert {p["metric"] for p in every} == {"open_rate", "unsubscribe_rate"}
    recent = env.ok(
        "GET",
        f"{A}/experiments/history-test/history",
        "a-viewer",
        since=(NOW - timedelta(hours=1)).isoformat(),
    )
    assert [p["n"] for p in recent["points"] if p["metric"] == "open_rate"] == [3000, 3000]
    unknown = env.call("GET", f"{A}/experiments/history-test/history", "a-viewer", metric="revenue")
    assert unknown.status_code == 422 and "metric: unknown metric 'revenue'" in unknown.json()["detail"][0]


def test_the_api_works_without_any_policies_file(env: Env) -> None:
    """No YAML at all: the tenant starts with nothing and builds its segments and experiments."""
    headers = {"X-Api-Key": "key-b-analyst"}
    tenant = "/api/v1/tenants/brightfix"
    assert env.bare.get(f"{tenant}/segments", headers=headers).json()["segments"] == [
        s for s in env.ok("GET", f"{B}/segments", "b-analyst")["segments"] if s["source"] == "api"
    ]
    made = env.bare.post(f"{tenant}/segments", headers=headers, json={"name": "bare-seg", "rule": "true"})
    assert made.status_code == 201, made.text
    body = experiment("bare-exp", segment="bare-seg")
    assert env.bare.post(f"{tenant}/experiments", headers=headers, json=body).status_code == 201
    names = [
        e["experiment_id"]
        for e in env.bare.get(f"{tenant}/experiments", headers=headers).json()["experiments"]
    ]
    assert "bare-exp" in names and "file-exp" not in names
    gold = env.bare.post(
        f"{tenant}/experiments", headers=headers, json=experiment("bare-gold", segment="gold")
    )
    assert gold.status_code == 422 and gold.json()["detail"] == ["segment: unknown segment 'gold'"]


class Recording:
    """The warehouse as the registry's ChangeStore, keeping every row its queries return."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self.returned: list[tuple[Any, ...]] = []

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        found = self.warehouse.rows(sql, parameters)
        self.returned += found
        return found

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        columns: Sequence[str],
        dedup_token: str | None = None,
    ) -> None:
        self.warehouse.insert(table, rows, columns, dedup_token)


def test_a_write_reads_no_body_back_whatever_the_history(env: Env) -> None:
    """With 300 versions of one experiment, each as large as the bounds allow, a cold read returns only
    its newest body; a write and the snapshot after it read no body at all (probes only), and that
    snapshot is the one a fresh read of the warehouse gives."""
    tenant, object_id, versions = "long-history", "rewritten", 300

    def version(v: int) -> tuple[Any, ...]:
        longest = f"v{v} ".ljust(MAX_DESCRIPTION_CHARS, "x")
        body = json.dumps({**experiment(object_id, description=longest), "tenant": tenant})
        action = "created" if v == 1 else "updated"
        return Change(NOW_MS - versions + v, tenant, "experiment", object_id, v, action, body, "a").row()

    env.warehouse.insert(TABLE, [version(v) for v in range(1, versions + 1)], CHANGE_COLUMNS)
    store = Recording(env.warehouse)
    registry = Registry(store, env.files)

    cold = registry.snapshot()
    bodies = [row for row in store.returned if len(row) == len(CHANGE_COLUMNS) and row[3] == object_id]
    assert [row[4] for row in bodies] == [versions]
    assert cold.experiment_entries[object_id].version == versions

    store.returned.clear()
    body = experiment(object_id, description="shorter")
    registry.apply(lambda s: update_experiment(s, tenant, object_id, body, NOW_MS, "a-analyst"))
    after = registry.snapshot()
    assert [len(row) for row in store.returned] == [3, 3]  # the probe before the write, the one after
    assert after.experiment_entries[object_id].value.description == "shorter"

    fresh = Registry(env.warehouse, env.files).snapshot()
    assert (after.version, after.problems) == (fresh.version, fresh.problems)
    assert after.experiment_entries == fresh.experiment_entries
    assert after.segment_entries == fresh.segment_entries


def test_each_registry_sees_the_writes_of_another_through_the_probe(env: Env) -> None:
    """Two registries over one warehouse, as two worker processes: a write by either shows in the
    other's next snapshot, and the writer's own cached snapshot stays current when the other writes."""
    tenant = "two-writers"
    one, other = Registry(env.warehouse, env.files), Registry(env.warehouse, env.files)
    one.snapshot()
    other.snapshot()
    one.apply(lambda s: create_segment(s, tenant, {"name": "by-one", "rule": "true"}, NOW_MS, "one"))
    assert other.snapshot().segment(tenant, "by-one") is not None
    other.apply(lambda s: create_segment(s, tenant, {"name": "by-other", "rule": "true"}, NOW_MS, "other"))
    seen = one.snapshot()
    assert seen.segment(tenant, "by-other") is not None and seen.segment(tenant, "by-one") is not None
    assert seen.version == other.snapshot().version
