"""GET /api/v1/tenants/{tenant}/sla over a real embedded warehouse filled through the ingest pipeline with
simulated traffic and hand-made lifecycles of known latency: its counts equal a direct computation, a
slow tenant breaches, keys see only their tenant, and a worker refuses to start on a bad policy."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from herald.errors import HeraldError
from herald.settings import BUNDLED_GUARDRAILS, load_settings
from policies.loader import LoadedPolicy, load_policy_text
from projections import queries
from projections.migrate import migrate
from projections.warehouse import Warehouse
from projections.writer import IngestWriter
from schemas.codec import lifecycle_codec
from simulator.model import DEFAULT_MODEL, generate
from streams.ingest import SourceMessage
from streams.pipeline import IngestPipeline, IngestTotals
from streams.replay import CountingDeadLetters
from tests.conftest import Herald
from web.analytics_api import NO_POLICY
from web.app import create_api
from web.auth import NO_KEYS, hash_key, load_key_ring

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
START = NOW - timedelta(hours=12)  # the simulated traffic: ten minutes from here, receipts after
A = "acme-home"  # simulated traffic; SLAs of the bundled example policy
LAB = "lab-home"  # hand-made lifecycles, exact counts; a lenient objective (no breach)
SLOW = "lab-slow"  # hand-made: most SMS delivered after the threshold in the last hour
THRESHOLD_MS = 30_000
KEYS = {"viewer-lab": "key-viewer-lab", "viewer-a": "key-viewer-a", "ops": "key-ops"}


def policy() -> LoadedPolicy:
    """The bundled example policy plus the two hand-made tenants' objectives."""
    data = yaml.safe_load(BUNDLED_GUARDRAILS.read_text())
    lenient = {"channel": "sms", "target": 0.8, "latency_ms": THRESHOLD_MS, "window_days": 1}
    data["tenants"][LAB] = {"slas": [lenient]}
    data["tenants"][SLOW] = {"slas": [{"channel": "sms", "target": 0.99, "latency_ms": THRESHOLD_MS}]}
    return load_policy_text(yaml.safe_dump(data), source="test-guardrails.yaml")


class Lifecycles:
    """Contract-valid events of hand-made notifications (copies of a simulated SMS event's fields)."""

    def __init__(self, template: dict[str, Any]) -> None:
        self.template = template
        self.events: list[dict[str, Any]] = []
        self.count = 0

    def add(self, tenant: str, steps: list[tuple[str, datetime, dict[str, Any]]]) -> None:
        self.count += 1
        nid = f"n-{tenant}-{self.count}"
        for i, (event_type, at, fields) in enumerate(steps):
            event = {**self.template, "tenant_id": tenant, "notification_id": nid, "channel": "SMS"}
            event |= {"event_id": f"e-{tenant}-{self.count}-{i}", "event_type": event_type, "occurred_at": at}
            event |= {
                "latency_ms": None,
                "cost_micros": None,
                "currency": None,
                "error": None,
                "sent_at": None,
            }
            self.events.append(event | fields)

    def delivered(self, tenant: str, sent: datetime, latency_ms: int, provider: str = "sms-primary") -> None:
        """SENT then DELIVERED ``latency_ms`` later (sent_at set, as the contract says)."""
        receipt = sent + timedelta(milliseconds=latency_ms)
        self.add(
            tenant,
            [
                step("SENT", sent, provider=provider, latency_ms=800),
                step("DELIVERED", receipt, provider=provider, latency_ms=latency_ms, sent_at=sent),
            ],
        )


def step(event_type: str, at: datetime, **fields: Any) -> tuple[str, datetime, dict[str, Any]]:
    return event_type, at, fields


def error(error_class: str) -> dict[str, Any]:
    return {"error_class": error_class, "code": "503", "message": "test", "retryable": True}


# The hand-made tenant LAB: every way a notification can end, sent in the hour before NOW - 1 h.
LAB_BASE = NOW - timedelta(hours=2)
LAB_GOOD = 91  # 90 delivered within the threshold + 1 delivered after a failover
LAB_TOTAL = 102  # + 4 late, 3 failed after SENT, 2 failed at send, 2 sent without a receipt


def lab_lifecycles(made: Lifecycles) -> None:
    at = [LAB_BASE + timedelta(seconds=30 * i) for i in range(LAB_TOTAL)]
    second = timedelta(seconds=1)
    for i in range(90):  # good: delivered within the threshold (the first one exactly at it)
        made.delivered(LAB, at[i], THRESHOLD_MS if i == 0 else 2_000 + 100 * i)
    for i in range(90, 94):  # late: delivered, but after the threshold
        made.delivered(LAB, at[i], THRESHOLD_MS + 1)
    for i in range(94, 97):  # failed at the receipt: SENT, then FAILED without sent_at
        rejected = step("FAILED", at[i] + 5 * second, latency_ms=5000, error=error("rejected"))
        made.add(LAB, [step("SENT", at[i], latency_ms=900), rejected])
    for i in range(97, 99):  # failed at send: FAILED on both providers, never SENT
        first = step("FAILED", at[i], provider="sms-primary", error=error("unavailable"))
        retry = step("FAILED", at[i] + second, provider="sms-secondary", error=error("timeout"))
        made.add(LAB, [first, retry])
    # a failover that delivered: FAILED on the primary, SENT + DELIVERED on the secondary (one message)
    sent = at[99] + second
    made.add(
        LAB,
        [
            step("FAILED", at[99], provider="sms-primary", error=error("unavailable")),
            step("SENT", sent, provider="sms-secondary", latency_ms=1000),
            step("DELIVERED", sent + 3 * second, provider="sms-secondary", latency_ms=3000, sent_at=sent),
        ],
    )
    for i in range(100, 102):  # sent, no receipt ever came
        made.add(LAB, [step("SENT", at[i], latency_ms=700)])
    # In no count: a send just before the range read (3 days: the longest burn window) whose
    # receipt-time FAILED (no sent_at) lands inside it, and a send of the last 30 s (it may still be
    # delivered in time).
    early = NOW - timedelta(days=3, minutes=2)
    late_failure = step("FAILED", early + timedelta(minutes=3), latency_ms=180_000, error=error("rejected"))
    made.add(LAB, [step("SENT", early, latency_ms=900), late_failure])
    made.add(LAB, [step("SENT", NOW - 10 * second, latency_ms=700)])


def slow_lifecycles(made: Lifecycles) -> None:
    """SLOW: one SMS every 20 s over the last hour, three in four delivered after 45 s."""
    for i in range(180):
        sent = NOW - timedelta(hours=1) + timedelta(seconds=20 * i)
        made.delivered(SLOW, sent, 45_000 if i % 4 else 4_000)


def direct_counts(
    events: list[dict[str, Any]], tenant: str, start: datetime, end: datetime
) -> tuple[int, int]:
    """(good, total) of SMS sends in [start, end), computed in Python from the events themselves."""
    lives: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["tenant_id"] == tenant and e["channel"] == "SMS":
            lives[e["notification_id"]].append(e)
    good = total = 0
    for life in lives.values():
        sends = [e["occurred_at"] for e in life if e["event_type"] == "SENT"]
        failures = [e["occurred_at"] for e in life if e["event_type"] == "FAILED"]
        if not sends and not failures:
            continue
        if not start <= min(sends or failures) < end:
            continue
        total += 1
        good += bool(sends) and any(
            e["event_type"] == "DELIVERED" and e["latency_ms"] is not None and e["latency_ms"] <= THRESHOLD_MS
            for e in life
        )
    return good, total


class Env:
    def __init__(self, warehouse: Warehouse, events: list[dict[str, Any]], loaded: LoadedPolicy, root: Path):
        self.warehouse = warehouse
        self.events = events
        self.loaded = loaded
        keys = load_key_ring(root / "keys.yaml")
        self.client = TestClient(
            create_api(warehouse, IngestTotals, "t", keys=keys, clock=lambda: NOW, policy=loaded)
        )
        self.no_policy = TestClient(create_api(warehouse, IngestTotals, "t", keys=keys, clock=lambda: NOW))
        self.no_keys = TestClient(create_api(warehouse, IngestTotals, "t", clock=lambda: NOW, policy=loaded))

    def sla(self, tenant: str, key: str = "ops", client: TestClient | None = None) -> Any:
        return (client or self.client).get(f"/api/v1/tenants/{tenant}/sla", headers={"X-Api-Key": KEYS[key]})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root: Path = tmp_path_factory.mktemp("sla")
    warehouse = Warehouse(f"chdb://{root / 'warehouse'}")
    try:
        migrate(warehouse)
        simulated = list(generate(DEFAULT_MODEL, START, 20, 600, seed=11))
        template = next(e for e in simulated if e["event_type"] == "SENT" and e["channel"] == "SMS")
        made = Lifecycles(template)
        lab_lifecycles(made)
        slow_lifecycles(made)
        events = simulated + made.events
        codec = lifecycle_codec()
        pipeline = IngestPipeline(
            load_settings(data_dir=root),
            IngestWriter(warehouse, "test"),
            codec,
            CountingDeadLetters(),  # type: ignore[arg-type]  # same send/close surface as DeadLetterSink
            clock=lambda: NOW,
        )
        messages = [
            SourceMessage("lifecycle", i % 4, i // 4, e["notification_id"].encode(), codec.encode(e))
            for i, e in enumerate(events)
        ]
        for i in range(0, len(messages), 5000):
            pipeline.apply(messages[i : i + 5000])
        assert pipeline.totals.written == len(events)  # every hand-made event is contract-valid
        entries = [
            {
                "name": "viewer-lab",
                "tenant": LAB,
                "role": "viewer",
                "key_sha256": hash_key(KEYS["viewer-lab"]),
            },
            {"name": "viewer-a", "tenant": A, "role": "viewer", "key_sha256": hash_key(KEYS["viewer-a"])},
            {"name": "ops", "tenant": "*", "role": "operator", "key_sha256": hash_key(KEYS["ops"])},
        ]
        (root / "keys.yaml").write_text(yaml.safe_dump({"keys": entries}))
        yield Env(warehouse, events, policy(), root)
    finally:
        warehouse.close()


def objective(body: dict[str, Any], channel: str) -> dict[str, Any]:
    (found,) = [o for o in body["objectives"] if o["channel"] == channel]
    return found


def test_hand_made_lifecycles_count_once_per_notification_exactly(env: Env) -> None:
    """LAB's good/total are the known 91/102: late, failed after SENT, failed at send and unanswered
    sends are bad, a failover that delivered is one good message, and sends before the window or of
    the last latency_ms are not judged. The budget and burns follow from them."""
    response = env.sla(LAB)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tenant"] == LAB and body["policy_version"] == env.loaded.version
    assert body["as_of"] == NOW.isoformat()
    sms = objective(body, "sms")
    assert (sms["good"], sms["total"]) == (LAB_GOOD, LAB_TOTAL)
    until = NOW - timedelta(minutes=1)  # NOW - 30 s, floored to the minute
    assert direct_counts(env.events, LAB, until - timedelta(days=1), until) == (LAB_GOOD, LAB_TOTAL)
    assert sms["ratio"] == pytest.approx(LAB_GOOD / LAB_TOTAL)
    assert (sms["target"], sms["latency_ms"], sms["window_days"]) == (0.8, THRESHOLD_MS, 1)
    assert sms["policy_version"] == env.loaded.version
    allowed = 1 - 0.8
    assert sms["error_budget_remaining"] == pytest.approx(1 - (LAB_TOTAL - LAB_GOOD) / (allowed * LAB_TOTAL))
    assert (sms["breach"], sms["severity"]) == (False, "none")
    assert (sms["from"], sms["to"]) == ((until - timedelta(days=1)).isoformat(), until.isoformat())
    windows = [(b["long_minutes"], b["short_minutes"], b["severity"]) for b in sms["burn_rates"]]
    assert windows == [(60, 5, "page"), (360, 30, "page"), (1440, 120, "ticket"), (4320, 360, "ticket")]
    burn = (LAB_TOTAL - LAB_GOOD) / LAB_TOTAL / allowed  # all of LAB's judged sends are 1 to 2 hours old
    assert [b["long_burn"] for b in sms["burn_rates"][1:]] == [pytest.approx(burn)] * 3
    assert sms["burn_rates"][0]["long_burn"] == 0.0 and not any(b["firing"] for b in sms["burn_rates"])


def test_simulated_tenant_counts_equal_a_direct_computation(env: Env) -> None:
    """acme-home's SMS and EMAIL good/total (per notification, within the policy's threshold) equal a
    computation in Python over the very events that were ingested; the hourly series adds up to them."""
    body = env.sla(A, key="viewer-a").json()
    assert [o["channel"] for o in body["objectives"]] == ["sms", "email"]  # the bundled policy's order
    sms = objective(body, "sms")
    good, total = direct_counts(env.events, A, NOW - timedelta(days=30), NOW)
    assert total > 1000 and 0 < good < total
    assert (sms["good"], sms["total"]) == (good, total)
    assert sms["ratio"] == pytest.approx(good / total)
    assert (sms["target"], sms["latency_ms"]) == (0.99, 30_000)
    series = sms["series"]
    assert len(series) == 24 and series[-1]["hour"] == (NOW - timedelta(hours=1)).isoformat()
    assert [datetime.fromisoformat(p["hour"]) for p in series] == [
        NOW - timedelta(hours=24 - i) for i in range(24)
    ]
    assert sum(p["total"] for p in series) == total and sum(p["good"] for p in series) == good
    busy = [p for p in series if p["total"]]
    assert busy and all(p["ratio"] == pytest.approx(p["good"] / p["total"]) for p in busy)
    assert all(p["ratio"] is None for p in series if not p["total"])
    email = objective(body, "email")
    assert email["total"] > 1000 and email["latency_ms"] == 300_000


def test_sla_counts_equal_the_direct_computation_per_minute(env: Env) -> None:
    """projections.queries.sla_counts keys its counts by epoch minute of the send (seconds // 60); over
    the range the API reads, a receipt-time FAILED whose SENT lies before the range is not counted."""
    (lenient,) = env.loaded.policy.tenant(LAB).slas
    start, end = queries.sla_range(lenient, queries.sla_judged_until(NOW, lenient))
    assert end - start == timedelta(days=3)
    counts = queries.sla_counts(env.warehouse, LAB, "sms", THRESHOLD_MS, start, end)
    assert sum(c.total for c in counts.values()) == LAB_TOTAL
    assert min(counts) == int(LAB_BASE.timestamp()) // 60
    minute = LAB_BASE + timedelta(minutes=10)
    expected = direct_counts(env.events, LAB, minute, minute + timedelta(minutes=1))
    found = counts[int(minute.timestamp()) // 60]
    assert (found.good, found.total) == expected == (2, 2)


def test_mostly_slow_deliveries_are_a_breach(env: Env) -> None:
    """Three in four SMS of the last hour delivered after the threshold: the 1 h / 5 min page rule
    fires (burn 75 against 14.4) and the 30-day budget is spent: breach, severity page."""
    sms = objective(env.sla(SLOW).json(), "sms")
    assert sms["total"] == 177  # the sends of the last 30 s (3) are not judged yet
    assert (
        sms["good"] == direct_counts(env.events, SLOW, NOW - timedelta(days=1), NOW - timedelta(minutes=1))[0]
    )
    assert sms["ratio"] < 0.3
    fast = sms["burn_rates"][0]
    assert fast["firing"] and fast["long_burn"] > 14.4 and fast["short_burn"] > 14.4
    assert sms["breach"] is True and sms["severity"] == "page"
    assert sms["error_budget_remaining"] < 0
    last_hour = [p for p in sms["series"] if p["total"]]
    assert last_hour and all(p["ratio"] < 0.99 for p in last_hour)


def test_tenant_key_reads_only_its_tenant(env: Env) -> None:
    """A tenant-scoped key reads its own tenant's SLA; another tenant's is 403 with no data; a global
    operator key reads any."""
    assert env.sla(LAB, key="viewer-lab").status_code == 200
    refused = env.sla(A, key="viewer-lab")
    assert refused.status_code == 403
    assert "objectives" not in refused.text and "scoped to tenant" in refused.json()["detail"]
    assert env.sla(SLOW, key="viewer-a").status_code == 403
    assert env.sla(A, key="ops").status_code == 200
    unknown = env.client.get(f"/api/v1/tenants/{LAB}/sla", headers={"X-Api-Key": "not-a-key"})
    assert unknown.status_code == 401


def test_tenant_without_objectives_gets_an_empty_list(env: Env) -> None:
    """tiny-plumbing has traffic but no SLA in the policy; a tenant unknown to the policy neither."""
    for tenant in ("tiny-plumbing", "nobody-here"):
        body = env.sla(tenant).json()
        assert body["objectives"] == [] and body["tenant"] == tenant


def test_no_policy_is_503_and_no_keys_stays_503(env: Env) -> None:
    """Without a loaded policy the endpoint says so (503); without keys the auth's 503 comes first."""
    response = env.sla(LAB, client=env.no_policy)
    assert (response.status_code, response.json()["detail"]) == (503, NO_POLICY)
    refused = env.sla(A, key="viewer-lab", client=env.no_policy)
    assert refused.status_code == 403  # access is checked before anything else
    response = env.no_keys.get(f"/api/v1/tenants/{LAB}/sla")
    assert (response.status_code, response.json()["detail"]) == (503, NO_KEYS)


def test_openapi_documents_the_sla_endpoint(env: Env) -> None:
    """The endpoint is in the OpenAPI schema with its description of the fields."""
    spec = env.client.get("/openapi.json").json()
    operation = spec["paths"]["/api/v1/tenants/{tenant}/sla"]["get"]
    assert "error_budget_remaining" in operation["description"]


def test_worker_refuses_a_bad_guardrails_file(herald: Herald, tmp_path: Path) -> None:
    """A worker with a broken HERALD_GUARDRAILS_FILE exits at start, naming the file and the field."""
    bad = tmp_path / "guardrails.yaml"
    sms_sla = "{channel: sms, target: 0.99, latency_ms: 30000, window_days: 30}"
    text = BUNDLED_GUARDRAILS.read_text()
    assert sms_sla in text
    bad.write_text(text.replace(sms_sla, sms_sla.replace("0.99", "1.5"), 1))
    with pytest.raises(HeraldError) as failed:
        herald.start_worker(HERALD_GUARDRAILS_FILE=str(bad))
    message = str(failed.value)
    assert "worker exited with 2" in message
    assert f"{bad}: tenants.acme-home.slas[0].target: Input should be less than 1" in message
