"""No single caller can degrade the service for the others: every body, field and time range the API
takes is bounded, and a refusal is a 4xx that names what to fix (413 for a body, 422 for a field).

The middleware tests drive web/limits.py as an ASGI app; the rest build the API with
``web.app.create_api`` over an embedded warehouse of their own."""

from __future__ import annotations

import asyncio
import doctest
import json
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from httpx import Response

import herald.dates
from experiments.definitions import (
    MAX_DESCRIPTION_CHARS,
    MAX_ID_CHARS,
    MAX_TEMPLATE_VERSION,
    MAX_VARIANTS,
    MAX_WEIGHT,
    METRICS,
)
from experiments.registry import (
    CHANGE_COLUMNS,
    MAX_EXPERIMENTS_PER_TENANT,
    MAX_NOTE_CHARS,
    MAX_SEGMENTS_PER_TENANT,
    TABLE,
    Change,
    FileDefinitions,
    InvalidDefinitionError,
    create_experiment,
    create_segment,
    fold,
)
from herald.errors import ConfigError
from herald.settings import load_settings
from policies.segments import (
    MAX_RULE_CHARS,
    MAX_RULE_CONDITIONS,
    MAX_RULE_DEPTH,
    MAX_SEGMENT_DESCRIPTION_CHARS,
    MAX_SEGMENT_NAME_CHARS,
)
from projections.migrate import migrate
from projections.warehouse import Warehouse
from streams.pipeline import IngestTotals
from web.app import create_api
from web.auth import hash_key, load_key_ring
from web.limits import DEFAULT_MAX_BODY_BYTES, BodyLimit

TENANT = "acme-home"
NOW = datetime(2026, 12, 5, 16, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
KEYS = {"analyst": (TENANT, "analyst"), "ops": ("*", "operator")}
Message = dict[str, Any]


def experiment(experiment_id: str, **overrides: Any) -> dict[str, Any]:
    """A valid definition body that starts after NOW."""
    return {
        "id": experiment_id,
        "template": "visit-reminder",
        "variants": [
            {"name": "control", "template_version": 3, "weight": 1},
            {"name": "v4", "template_version": 4, "weight": 1},
        ],
        "start": "2027-01-01T00:00:00Z",
        "stop": "2027-02-01T00:00:00Z",
        "primary_metric": "open_rate",
        "mde": 0.05,
        **overrides,
    }


def rule_of(conditions: int) -> str:
    return " or ".join(f"bounces == {i}" for i in range(conditions))


def segment_created(tenant: str, name: str) -> Change:
    """The change event of a segment created through the API."""
    body = json.dumps({"name": name, "rule": "true"})
    return Change(NOW_MS, tenant, "segment", name, 1, "created", body, "a")


# ---------------------------------------------------------------------------------- the body limit


async def _exchange(
    app: Callable[[Message, Any, Any], Awaitable[None]],
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
) -> tuple[list[Message], int]:
    """Run one request through ``app``: (what it sent, how many body messages it read)."""
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    sent: list[Message] = []
    read = 0

    async def receive() -> Message:
        nonlocal read
        read += 1
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive, send)
    return sent, read


async def _reads_all_then_echoes_the_length(scope: Message, receive: Any, send: Any) -> None:
    """An app that reads the whole body first, answering 400 when it cannot, as FastAPI does."""
    size, more = 0, True
    try:
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
    except Exception:
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"There was an error parsing the body"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def answer(sent: list[Message]) -> tuple[int, bytes]:
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_declared_length_over_the_limit_is_refused_before_any_of_the_body_is_read() -> None:
    """Content-Length above the limit: 413 naming the limit, and the app never runs."""
    limited = BodyLimit(_reads_all_then_echoes_the_length, max_bytes=1000)
    sent, read = asyncio.run(_exchange(limited, [(b"content-length", b"1001")], [b"x" * 1001]))
    assert answer(sent) == (413, b'{"detail": "body: at most 1000 bytes"}')
    assert (b"connection", b"close") in sent[0]["headers"]
    assert read == 0


@pytest.mark.parametrize(
    "headers", [[], [(b"content-length", b"10")]], ids=["chunked, no length", "length that lies"]
)
def test_a_streamed_body_is_counted_and_refused_once_it_passes_the_limit(headers: list[Any]) -> None:
    """Without a length, or with one smaller than what arrives, the bytes are counted: 413 replaces the
    app's own answer, and nothing after the chunk that passed the limit is read."""
    limited = BodyLimit(_reads_all_then_echoes_the_length, max_bytes=1000)
    sent, read = asyncio.run(_exchange(limited, headers, [b"x" * 400] * 10))
    assert answer(sent) == (413, b'{"detail": "body: at most 1000 bytes"}')
    assert read == 3


def test_a_body_within_the_limit_reaches_the_app_whole() -> None:
    """Up to the limit exactly, in any number of chunks, the app reads everything and answers."""
    limited = BodyLimit(_reads_all_then_echoes_the_length, max_bytes=1000)
    sent, _ = asyncio.run(_exchange(limited, [(b"content-length", b"1000")], [b"x" * 250] * 4))
    assert answer(sent) == (200, b"1000")


def test_the_dates_module_examples_hold() -> None:
    """herald/dates.py's doctests (the overflow case included) pass."""
    assert doctest.testmod(herald.dates).failed == 0


# ---------------------------------------------------------------------------------- counts, in the core


def test_a_tenant_holds_at_most_the_bounded_number_of_api_experiments_and_segments() -> None:
    """One more than the limit is refused naming the collection; another tenant is unaffected, and a
    deleted object frees its place."""
    files = FileDefinitions()
    body = json.dumps({**experiment("x"), "tenant": TENANT})
    held = [
        Change(NOW_MS, TENANT, "experiment", f"e{i}", 1, "created", body.replace('"x"', f'"e{i}"'), "a")
        for i in range(MAX_EXPERIMENTS_PER_TENANT)
    ]
    held += [segment_created(TENANT, f"s{i}") for i in range(MAX_SEGMENTS_PER_TENANT)]
    full = fold(files, held)
    assert len(full.tenant_experiments(TENANT)) == MAX_EXPERIMENTS_PER_TENANT
    with pytest.raises(InvalidDefinitionError) as refused:
        create_experiment(full, TENANT, experiment("one-more"), NOW_MS, "a")
    assert refused.value.problems == [
        f"experiments: at most {MAX_EXPERIMENTS_PER_TENANT} per tenant through the API "
        f"({TENANT} has {MAX_EXPERIMENTS_PER_TENANT})"
    ]
    with pytest.raises(InvalidDefinitionError, match=r"^segments: at most 200 per tenant"):
        create_segment(full, TENANT, {"name": "one-more", "rule": "true"}, NOW_MS, "a")
    assert create_segment(full, "brightfix", {"name": "s0", "rule": "true"}, NOW_MS, "b").version == 1
    freed = fold(files, [*held, Change(NOW_MS, TENANT, "segment", "s0", 2, "deleted", "", "a")])
    assert create_segment(freed, TENANT, {"name": "new", "rule": "true"}, NOW_MS, "a").version == 1


# ---------------------------------------------------------------------------------- through the API


class Env:
    def __init__(self, warehouse: Warehouse, root: Path) -> None:
        self.warehouse = warehouse
        keys_file = root / "keys.yaml"
        entries = [
            {"name": name, "tenant": tenant, "role": role, "key_sha256": hash_key(f"key-{name}")}
            for name, (tenant, role) in KEYS.items()
        ]
        keys_file.write_text(yaml.safe_dump({"keys": entries}))
        self.keys = load_key_ring(keys_file)
        self.client = self.app()

    def app(self, **options: Any) -> TestClient:
        return TestClient(
            create_api(self.warehouse, IngestTotals, "t", keys=self.keys, clock=lambda: NOW, **options)
        )

    def call(
        self,
        method: str,
        path: str,
        key: str = "analyst",
        headers: dict[str, str] | None = None,
        **request: Any,
    ) -> Response:
        headers = {"X-Api-Key": f"key-{key}", **(headers or {})}
        response: Response = self.client.request(method, path, headers=headers, **request)
        return response


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root: Path = tmp_path_factory.mktemp("bounds")
    warehouse = Warehouse(f"chdb://{root / 'warehouse'}")
    try:
        migrate(warehouse)
        yield Env(warehouse, root)
    finally:
        warehouse.close()


EXPERIMENTS = f"/api/v1/tenants/{TENANT}/experiments"
SEGMENTS = f"/api/v1/tenants/{TENANT}/segments"


@pytest.mark.integration
def test_a_body_over_the_limit_is_refused_with_413_with_or_without_content_length(env: Env) -> None:
    """The default limit holds for every route, whether the length is declared or the body is chunked;
    a body under it is read as usual."""
    padded = json.dumps(experiment("too-big", description="x" * DEFAULT_MAX_BODY_BYTES)).encode()
    declared = env.call("POST", EXPERIMENTS, content=padded, headers={"content-type": "application/json"})
    chunked = env.call("POST", EXPERIMENTS, content=iter([padded[:1000], padded[1000:]]))
    sql = env.client.post(
        "/sql", content=iter([b'{"query": "SELECT 1 ' + b" " * DEFAULT_MAX_BODY_BYTES + b'"}'])
    )
    for refused in (declared, chunked, sql):
        assert refused.status_code == 413
        assert refused.json() == {"detail": f"body: at most {DEFAULT_MAX_BODY_BYTES} bytes"}
    assert env.call("POST", EXPERIMENTS, json=experiment("fits")).status_code == 201


@pytest.mark.integration
def test_the_body_limit_is_set_when_the_api_is_made(env: Env) -> None:
    """``create_api(max_body_bytes=…)`` (HERALD_API_MAX_BODY_BYTES in a worker) moves the limit."""
    small = env.app(max_body_bytes=4096)
    body = json.dumps(experiment("small-limit", description="x" * 5000))
    response = small.post(EXPERIMENTS, content=body, headers={"X-Api-Key": "key-analyst"})
    assert (response.status_code, response.json()) == (413, {"detail": "body: at most 4096 bytes"})


def _variant(i: int) -> dict[str, Any]:
    return {"name": "control" if i == 0 else f"v{i}", "template_version": i + 1, "weight": 1}


TOO_LONG_ID = "a" * (MAX_ID_CHARS + 1)
EXPERIMENT_BOUNDS = {
    "id": ({"id": TOO_LONG_ID}, "at most 64 characters"),
    "template": ({"template": TOO_LONG_ID}, "at most 64 characters"),
    "description": ({"description": "x" * (MAX_DESCRIPTION_CHARS + 1)}, "at most 2000 characters"),
    "segment": ({"segment": TOO_LONG_ID}, "at most 64 characters"),
    "variants": ({"variants": [_variant(i) for i in range(MAX_VARIANTS + 1)]}, "at most 20 items"),
    "variants[1].name": (
        {"variants": [_variant(0), {**_variant(1), "name": TOO_LONG_ID}]},
        "at most 64 characters",
    ),
    "variants[1].template_version": (
        {"variants": [_variant(0), {**_variant(1), "template_version": MAX_TEMPLATE_VERSION + 1}]},
        "less than or equal to 2147483647",
    ),
    "variants[1].weight": (
        {"variants": [_variant(0), {**_variant(1), "weight": MAX_WEIGHT * 10}]},
        "less than or equal to 1000000",
    ),
    "guardrail_metrics": ({"guardrail_metrics": [*METRICS, "open_rate"]}, "at most 8 items"),
    "layer.name": ({"layer": {"name": TOO_LONG_ID, "buckets": [0, 50]}}, "at most 64 characters"),
    "start": ({"start": "0001-01-01T00:00:00Z"}, "must be between 1970-01-01 and 2100-01-01"),
    "stop": ({"stop": "9999-12-31T23:00:00-05:00"}, "must be between 1970-01-01 and 2100-01-01"),
}


@pytest.mark.integration
@pytest.mark.parametrize("field", EXPERIMENT_BOUNDS)
def test_each_experiment_field_over_its_bound_is_a_422_naming_the_field(env: Env, field: str) -> None:
    """Ids, names, description, counts of variants and metrics, numbers and dates: ``field: reason``."""
    overrides, reason = EXPERIMENT_BOUNDS[field]
    response = env.call("POST", EXPERIMENTS, json=experiment("bounded", **overrides))
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    assert any(p.startswith(f"{field}: ") and reason in p for p in problems), problems


@pytest.mark.integration
def test_an_experiment_id_in_the_path_over_its_bound_is_a_422(env: Env) -> None:
    """The path's id is bounded as the body's is."""
    response = env.call("PUT", f"{EXPERIMENTS}/{TOO_LONG_ID}", json=experiment(TOO_LONG_ID))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "experiment_id"]


SEGMENT_BOUNDS = {
    "name": ({"name": "s" * (MAX_SEGMENT_NAME_CHARS + 1)}, "at most 64 characters"),
    "description": ({"description": "x" * (MAX_SEGMENT_DESCRIPTION_CHARS + 1)}, "at most 2000 characters"),
    "rule": ({"rule": "true or " * (MAX_RULE_CHARS // 8) + "true"}, "at most 2000 characters"),
    "rule (conditions)": ({"rule": rule_of(MAX_RULE_CONDITIONS + 1)}, "rule has more than 50 conditions"),
    "rule (nesting)": (
        {"rule": "(" * (MAX_RULE_DEPTH + 1) + "true" + ")" * (MAX_RULE_DEPTH + 1)},
        "deeper than 32",
    ),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", SEGMENT_BOUNDS)
def test_each_segment_field_over_its_bound_is_a_422_naming_the_field(env: Env, case: str) -> None:
    """Name, description, rule length, conditions and nesting: the problem starts with the field."""
    overrides, reason = SEGMENT_BOUNDS[case]
    response = env.call("POST", SEGMENTS, json={"name": "bounded", "rule": "true", **overrides})
    assert response.status_code == 422, response.text
    (problem,) = response.json()["detail"]
    assert problem.startswith(f"{case.split(maxsplit=1)[0]}: ") and reason in problem, problem


@pytest.mark.integration
def test_a_rule_at_its_bounds_is_accepted(env: Env) -> None:
    """Exactly the allowed conditions and nesting: created."""
    response = env.call("POST", SEGMENTS, json={"name": "at-bounds", "rule": rule_of(MAX_RULE_CONDITIONS)})
    assert response.status_code == 201, response.text
    nested = "(" * (MAX_RULE_DEPTH - 1) + "true" + ")" * (MAX_RULE_DEPTH - 1)
    assert env.call("POST", SEGMENTS, json={"name": "nested", "rule": nested}).status_code == 201


@pytest.mark.integration
def test_a_note_over_its_bound_is_a_422_naming_it(env: Env) -> None:
    """The ``note`` of a change is a query parameter of at most 500 characters."""
    response = env.call(
        "POST", EXPERIMENTS, json=experiment("noted"), params={"note": "n" * (MAX_NOTE_CHARS + 1)}
    )
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", "note"] and "at most 500 characters" in error["msg"]


@pytest.mark.integration
def test_segments_past_the_tenants_bound_are_a_422_through_the_api(env: Env) -> None:
    """With the tenant's 200 segments in the warehouse, the next create names the bound."""
    tenant = "segment-hoarder"
    rows = [segment_created(tenant, f"s{i}").row() for i in range(MAX_SEGMENTS_PER_TENANT)]
    env.warehouse.insert(TABLE, rows, CHANGE_COLUMNS)
    response = env.call(
        "POST", f"/api/v1/tenants/{tenant}/segments", "ops", json={"name": "one-more", "rule": "true"}
    )
    assert response.status_code == 422
    assert response.json()["detail"] == [
        f"segments: at most 200 per tenant through the API ({tenant} has 200)"
    ]


@pytest.mark.integration
@pytest.mark.parametrize("endpoint", ["delivery", "engagement", "latency", "providers", "failover", "alerts"])
@pytest.mark.parametrize("field", ["from", "to"])
@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00Z", "9999-12-31T23:00:00-05:00"])
def test_a_time_filter_outside_1970_to_2100_is_a_422_naming_it(
    env: Env, endpoint: str, field: str, moment: str
) -> None:
    """Years 0001 and 9999 (one that overflows when turned to UTC) in ``from`` or ``to``: never a 500."""
    response = env.call("GET", f"/api/v1/tenants/{TENANT}/{endpoint}", params={field: moment})
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert (error["loc"], error["msg"]) == (["query", field], "must be between 1970-01-01 and 2100-01-01")


@pytest.mark.integration
def test_every_tenants_alerts_take_the_same_bounded_time_filters(env: Env) -> None:
    """/api/v1/alerts (global keys) answers 422 for a year-0001 ``from`` too."""
    response = env.call("GET", "/api/v1/alerts", "ops", params={"from": "0001-01-01T00:00:00Z"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "from"]


@pytest.mark.integration
@pytest.mark.parametrize(("bucket", "days"), [("minute", 8), ("hour", 367)])
def test_a_range_longer_than_the_bucket_allows_is_a_422_not_a_slow_query(
    env: Env, bucket: str, days: int
) -> None:
    """Minute buckets over at most 7 days, hour buckets over at most 366."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    params = {"from": start.isoformat(), "to": (start + timedelta(days=days)).isoformat(), "bucket": bucket}
    response = env.call("GET", f"/api/v1/tenants/{TENANT}/delivery", params=params)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", "from"] and "range is longer than" in error["msg"]


@pytest.mark.integration
def test_the_effect_over_time_refuses_a_since_outside_1970_to_2100(env: Env) -> None:
    """``since`` of an experiment's history is bounded like the other time filters."""
    response = env.call("GET", f"{EXPERIMENTS}/fits/history", params={"since": "0001-01-01T00:00:00+05:00"})
    assert response.status_code == 422
    assert response.json()["detail"] == ["since: must be between 1970-01-01 and 2100-01-01"]


def test_the_body_limit_setting_defaults_to_256_kib_and_refuses_values_out_of_its_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HERALD_API_MAX_BODY_BYTES is 256 KiB unless set, and 4 KiB to 16 MiB when set."""
    assert load_settings().api_max_body_bytes == DEFAULT_MAX_BODY_BYTES == 262_144
    monkeypatch.setenv("HERALD_API_MAX_BODY_BYTES", "1024")
    with pytest.raises(ConfigError, match="HERALD_API_MAX_BODY_BYTES: Input should be greater than or equal"):
        load_settings()
    monkeypatch.setenv("HERALD_API_MAX_BODY_BYTES", str(1 << 20))
    assert load_settings().api_max_body_bytes == 1 << 20
