"""GET /api/v1/tenants/{tenant}/failover and /budgets over a real embedded warehouse filled through the
ingest pipeline with hand-made dispatch lifecycles (every routing reason at known minutes, sends with
known costs, budget suppressions) and alert rows as the dispatch agent writes them (provider switches
for every tenant, budget thresholds for one): exact counts, shares and budget use, and keys that see
only their tenant."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from dispatch.core import budget_alert, switch_alert
from herald.settings import BUNDLED_GUARDRAILS, load_settings
from policies.breaker import BreakerState, BreakerTransition
from policies.limits import BudgetAlert
from policies.loader import LoadedPolicy, load_policy_text
from projections.migrate import migrate
from projections.rows import ALERT_COLUMNS, alert_row
from projections.warehouse import Warehouse
from projections.writer import IngestWriter
from schemas.codec import lifecycle_codec
from streams.ingest import SourceMessage
from streams.pipeline import IngestPipeline, IngestTotals
from streams.replay import CountingDeadLetters
from web.analytics_api import NO_POLICY
from web.app import create_api
from web.auth import hash_key, load_key_ring

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
HOUR = {"from": "2026-03-10T11:00:00Z", "to": "2026-03-10T12:00:00Z"}  # the range the tests read
LAB = "lab-home"  # every kind of dispatch decision; a tenant budget and two campaign budgets
OTHER = "lab-other"  # one failover of its own; no budget anywhere in the policy
PROMO, MISC, OLD = "lab-promo", "lab-misc", "lab-old"  # PROMO in the policy, MISC not (defaults)
KEYS = {"viewer-lab": "key-viewer-lab", "viewer-other": "key-viewer-other", "ops": "key-ops"}
OLD_VERSION = "0" * 16  # a policy version before the loaded one
LINKS = ("http://herald.test", "http://herald.test/dashboard/")
SECOND = timedelta(seconds=1)


def policy() -> LoadedPolicy:
    """The bundled example policy plus LAB's budgets: 11 messages and 0.06 USD a UTC day for the tenant,
    5 messages and 0.03 USD in total for PROMO (MISC falls to campaign_defaults: 50,000 a day)."""
    data = yaml.safe_load(BUNDLED_GUARDRAILS.read_text())
    data["tenants"][LAB] = {"budget": {"messages_per_day": 11, "money_micros_per_day": 60_000}}
    data["campaigns"][PROMO] = {"budget": {"messages_total": 5, "money_micros_total": 30_000}}
    return load_policy_text(yaml.safe_dump(data), source="test-guardrails.yaml")


def at(hh: int, mm: int, ss: int = 0, day: int = 10) -> datetime:
    return datetime(2026, 3, day, hh, mm, ss, tzinfo=UTC)


class Lifecycles:
    """Contract-valid lifecycle events of hand-made notifications, shaped as dispatch/core.py's."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.events: list[dict[str, Any]] = []

    def add(
        self,
        tenant: str,
        nid: str,
        steps: list[tuple[str, datetime, dict[str, Any]]],
        *,
        channel: str = "SMS",
        campaign: str | None = None,
    ) -> None:
        for i, (event_type, occurred, fields) in enumerate(steps):
            event: dict[str, Any] = {
                "event_id": f"{nid}.{i}",
                "event_type": event_type,
                "occurred_at": occurred,
                "tenant_id": tenant,
                "notification_id": nid,
                "channel": channel,
                "provider": None,
                "template_id": "visit-reminder",
                "template_version": 3,
                "campaign_id": campaign,
                "campaign_step": 1 if campaign else None,
                "experiment_id": None,
                "variant": None,
                "recipient": {
                    "id": f"r-{nid}",
                    "kind": "CUSTOMER",
                    "tier": "gold",
                    "role": None,
                    "language": "en",
                    "country": "US",
                },
                "latency_ms": None,
                "cost_micros": None,
                "currency": None,
                "error": None,
                "reason": None,
                "policy_version": None,
                "source": "herald-dispatch",
                "sent_at": None,
            }
            self.events.append(event | fields)


def dispatched(
    when: datetime, provider: str, reason: str, version: str = ""
) -> tuple[str, datetime, dict[str, Any]]:
    return "DISPATCHED", when, {"provider": provider, "reason": reason, "policy_version": version or None}


def sent(when: datetime, provider: str, cost: int) -> tuple[str, datetime, dict[str, Any]]:
    return "SENT", when, {"provider": provider, "latency_ms": 900, "cost_micros": cost, "currency": "USD"}


def failed(when: datetime, provider: str, error_class: str) -> tuple[str, datetime, dict[str, Any]]:
    error = {"error_class": error_class, "code": None, "message": "test", "retryable": True}
    return "FAILED", when, {"provider": provider, "latency_ms": 50, "error": error}


def suppressed(when: datetime, reason: str, version: str) -> tuple[str, datetime, dict[str, Any]]:
    return "SUPPRESSED", when, {"reason": reason, "policy_version": version}


def lab_lifecycles(made: Lifecycles) -> None:
    """LAB, SMS unless said otherwise; today is 2026-03-10 (UTC) and NOW is 12:00."""
    v = made.version
    primary, secondary = "sms-primary", "sms-secondary"
    # 11:10 three first attempts on the primary, sent (7,500 each): two PROMO, one transactional
    for i, campaign in enumerate((PROMO, PROMO, None), start=1):
        made.add(
            LAB,
            f"n{i}",
            [dispatched(at(11, 10), primary, "routed.primary", v), sent(at(11, 10, 2), primary, 7500)],
            campaign=campaign,
        )
    # 11:11 PROMO: the primary fails, the failover retry is sent by the secondary (6,200)
    made.add(
        LAB,
        "n4",
        [
            dispatched(at(11, 11), primary, "routed.primary", v),
            failed(at(11, 11, 1), primary, "unavailable"),
            dispatched(at(11, 11, 1), secondary, "routed.retry_failover", v),
            sent(at(11, 11, 2), secondary, 6200),
        ],
        campaign=PROMO,
    )
    # 11:12 the primary is open: two transactional SMS fail over (6,200 each); one email (90)
    for nid in ("n5", "n6"):
        made.add(
            LAB,
            nid,
            [dispatched(at(11, 12), secondary, "routed.failover", v), sent(at(11, 12, 1), secondary, 6200)],
        )
    made.add(
        LAB,
        "n7",
        [
            dispatched(at(11, 12), "smtp-primary", "routed.primary", v),
            sent(at(11, 12, 1), "smtp-primary", 90),
        ],
        channel="EMAIL",
    )
    # 11:13 MISC: a probe of the half-open primary times out, its retry fails too (never sent)
    made.add(
        LAB,
        "n8",
        [
            dispatched(at(11, 13), primary, "routed.probe", v),
            failed(at(11, 13, 5), primary, "timeout"),
            dispatched(at(11, 13, 5), secondary, "routed.retry_failover", v),
            failed(at(11, 13, 6), secondary, "provider_5xx"),
        ],
        campaign=MISC,
    )
    # 11:14 the primary again, sent
    made.add(
        LAB, "n9", [dispatched(at(11, 14), primary, "routed.primary", v), sent(at(11, 14, 1), primary, 7500)]
    )
    # 11:15 another dispatcher's decision and its failure: not the failover panel's, but a message
    made.add(
        LAB,
        "x1",
        [dispatched(at(11, 15), primary, "weighted_routing"), failed(at(11, 15, 10), primary, "rejected")],
    )
    # 11:20 PROMO cannot fit one more 7,500 in its money total: suppressed (loaded policy version);
    # one under an older version said messages_total: that policy's word no longer counts
    made.add(LAB, "n10", [suppressed(at(11, 20), "budget_exhausted.campaign.money_total", v)], campaign=PROMO)
    made.add(
        LAB,
        "n11",
        [suppressed(at(11, 21), "budget_exhausted.campaign.messages_total", OLD_VERSION)],
        campaign=PROMO,
    )
    # yesterday: a PROMO send, and the tenant's daily money budget was exhausted (a daily limit: today
    # it is not paused by that)
    made.add(
        LAB,
        "y1",
        [
            dispatched(at(12, 0, day=9), primary, "routed.primary", v),
            sent(at(12, 0, 1, day=9), primary, 7500),
        ],
        campaign=PROMO,
    )
    made.add(LAB, "y2", [suppressed(at(13, 0, day=9), "budget_exhausted.tenant.money_per_day", v)])
    # 40 days ago: a campaign with no traffic since (not listed), sent
    long_ago = NOW - timedelta(days=40)
    made.add(
        LAB,
        "o1",
        [dispatched(long_ago, primary, "routed.primary", v), sent(long_ago + SECOND, primary, 7500)],
        campaign=OLD,
    )
    # before the range read: not in any count of it
    made.add(
        LAB,
        "e1",
        [dispatched(at(10, 59, 59), primary, "routed.primary", v), sent(at(11, 0, 1), primary, 7500)],
    )
    # OTHER tenant's own failover at 11:12
    made.add(
        OTHER,
        "q1",
        [dispatched(at(11, 12), secondary, "routed.failover", v), sent(at(11, 12, 1), secondary, 6200)],
    )


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def switch(
    alert_id: str, provider: str, to_state: BreakerState, when: datetime, opened: datetime
) -> dict[str, Any]:
    """The alerts record the dispatch agent writes when a breaker opens (OPENED) or closes (RESOLVED)."""
    channel = "email" if provider.startswith("smtp") else "sms"
    from_state: BreakerState = "closed" if to_state == "open" else "half_open"
    reason = "10 failures in a row" if to_state == "open" else "probes failed 0.00 <= 0.10"
    rate = 0.9 if to_state == "open" else 0.0
    moved = BreakerTransition(provider, channel, from_state, to_state, when.timestamp(), reason, rate, 20)
    return switch_alert(moved, alert_id, ms(opened), LINKS, "test-version")


def budget(tenant: str, scope: str, crossed: BudgetAlert, when: datetime) -> dict[str, Any]:
    """The alerts record the dispatch agent writes when a budget threshold is crossed."""
    return budget_alert(tenant, scope, crossed, ms(when), LINKS, "test-version")


SWITCH_OPEN = "closed -> open: 10 failures in a row"
SWITCH_CLOSED = "half_open -> closed: probes failed 0.00 <= 0.10"


def alert_records() -> list[dict[str, Any]]:
    """Provider switches (tenant '*'): the SMS primary out 11:10:30 - 11:13:30 (its OPENED written
    twice, as a restarted agent does), an email one open since 11:40, one that ended before the range;
    budget alerts: LAB's PROMO money at 80 % (11:11), LAB's tenant messages at 100 % (11:15), LAB's
    from 40 days ago, and OTHER's."""
    sms_out, mail_out, early_out = at(11, 10, 30), at(11, 40), at(9, 0)
    opened = switch("sw-sms", "sms-primary", "open", sms_out, sms_out)
    return [
        opened,
        switch("sw-sms", "sms-primary", "closed", at(11, 13, 30), sms_out),
        opened,
        switch("sw-mail", "smtp-primary", "open", mail_out, mail_out),
        switch("sw-early", "sms-secondary", "open", early_out, early_out),
        switch("sw-early", "sms-secondary", "closed", at(9, 5), early_out),
        budget(LAB, f"campaign:{PROMO}", BudgetAlert("money_total", 0.8, 24_000, 30_000), at(11, 11)),
        budget(LAB, f"tenant:{LAB}", BudgetAlert("messages_per_day", 1.0, 11, 11), at(11, 15)),
        budget(
            LAB, f"campaign:{OLD}", BudgetAlert("messages_per_day", 0.8, 40, 50), NOW - timedelta(days=40)
        ),
        budget(OTHER, f"campaign:{PROMO}", BudgetAlert("money_total", 1.0, 30_000, 30_000), at(11, 30)),
    ]


class Env:
    def __init__(self, warehouse: Warehouse, loaded: LoadedPolicy, root: Path) -> None:
        self.warehouse = warehouse
        self.loaded = loaded
        keys = load_key_ring(root / "keys.yaml")
        self.client = TestClient(
            create_api(warehouse, IngestTotals, "t", keys=keys, clock=lambda: NOW, policy=loaded)
        )
        self.no_policy = TestClient(create_api(warehouse, IngestTotals, "t", keys=keys, clock=lambda: NOW))

    def get(
        self, tenant: str, what: str, key: str = "viewer-lab", client: TestClient | None = None, **params: Any
    ) -> Any:
        headers = {"X-Api-Key": KEYS[key]}
        return (client or self.client).get(f"/api/v1/tenants/{tenant}/{what}", headers=headers, params=params)

    def body(self, tenant: str, what: str, key: str = "viewer-lab", **params: Any) -> Any:
        response = self.get(tenant, what, key, **params)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root: Path = tmp_path_factory.mktemp("dispatch-panels")
    warehouse = Warehouse(f"chdb://{root / 'warehouse'}")
    try:
        migrate(warehouse)
        loaded = policy()
        made = Lifecycles(loaded.version)
        lab_lifecycles(made)
        codec = lifecycle_codec()
        pipeline = IngestPipeline(
            load_settings(data_dir=root),
            IngestWriter(warehouse, "test"),
            codec,
            CountingDeadLetters(),  # type: ignore[arg-type]  # same send/close surface as DeadLetterSink
            clock=lambda: NOW,
        )
        pipeline.apply(
            [
                SourceMessage("lifecycle", i % 4, i // 4, e["notification_id"].encode(), codec.encode(e))
                for i, e in enumerate(made.events)
            ]
        )
        assert pipeline.totals.written == len(made.events)  # every hand-made event is contract-valid
        rows = [alert_row(r) for r in alert_records()]
        warehouse.insert("alerts", rows, list(ALERT_COLUMNS))
        entries = [
            {
                "name": "viewer-lab",
                "tenant": LAB,
                "role": "viewer",
                "key_sha256": hash_key(KEYS["viewer-lab"]),
            },
            {
                "name": "viewer-other",
                "tenant": OTHER,
                "role": "viewer",
                "key_sha256": hash_key(KEYS["viewer-other"]),
            },
            {"name": "ops", "tenant": "*", "role": "operator", "key_sha256": hash_key(KEYS["ops"])},
        ]
        (root / "keys.yaml").write_text(yaml.safe_dump({"keys": entries}))
        yield Env(warehouse, loaded, root)
    finally:
        warehouse.close()


def counts(
    primary: int = 0, failover: int = 0, probe: int = 0, retry: int = 0, **failed: int
) -> dict[str, Any]:
    """The counts of one series point (or a provider, or the totals) as the API gives them."""
    return {
        "primary": primary,
        "failover": failover,
        "probe": probe,
        "retry_failover": retry,
        "first_attempts": primary + failover + probe,
        "failed_total": sum(failed.values()),
        "failed": failed,
    }


def test_failover_counts_each_reason_per_minute_and_provider_exactly(env: Env) -> None:
    """Minute buckets hold exactly the hand-made decisions: primary, failover, probe and the failover
    retries where they happened, failures by class on the provider that failed; another dispatcher's
    DISPATCHED and FAILED, events before the range and another tenant's are in no count."""
    body = env.body(LAB, "failover", bucket="minute", **HOUR)
    assert (body["tenant"], body["bucket"], body["from"], body["to"]) == (
        LAB,
        "minute",
        "2026-03-10T11:00:00+00:00",
        "2026-03-10T12:00:00+00:00",
    )
    series = [
        (p["bucket"][11:16], p["provider"], {k: v for k, v in p.items() if k not in ("bucket", "provider")})
        for p in body["series"]
    ]
    assert series == [
        ("11:10", "sms-primary", counts(primary=3)),
        ("11:11", "sms-primary", counts(primary=1, unavailable=1)),
        ("11:11", "sms-secondary", counts(retry=1)),
        ("11:12", "sms-secondary", counts(failover=2)),
        ("11:12", "smtp-primary", counts(primary=1)),
        ("11:13", "sms-primary", counts(probe=1, timeout=1)),
        ("11:13", "sms-secondary", counts(retry=1, provider_5xx=1)),
        ("11:14", "sms-primary", counts(primary=1)),
    ]
    by_provider = {p.pop("provider"): p for p in body["providers"]}
    assert by_provider == {
        "sms-primary": counts(primary=5, probe=1, unavailable=1, timeout=1),
        "sms-secondary": counts(failover=2, retry=2, provider_5xx=1),
        "smtp-primary": counts(primary=1),
    }
    share = body["totals"].pop("failover_share")
    assert body["totals"] == counts(
        primary=6, failover=2, probe=1, retry=2, unavailable=1, timeout=1, provider_5xx=1
    )
    assert share == pytest.approx(2 / 9)  # 2 of 9 first attempts went to a failover provider


def test_failover_hour_buckets_and_filters_give_the_same_totals(env: Env) -> None:
    """One hour bucket per provider adds up to the minute buckets; channel=sms drops the email, so
    2 of 8 first attempts failed over; provider=sms-secondary keeps only its own counts."""
    hourly = env.body(LAB, "failover", bucket="hour", **HOUR)
    assert [(p["bucket"], p["provider"], p["first_attempts"]) for p in hourly["series"]] == [
        ("2026-03-10T11:00:00+00:00", "sms-primary", 6),
        ("2026-03-10T11:00:00+00:00", "sms-secondary", 2),
        ("2026-03-10T11:00:00+00:00", "smtp-primary", 1),
    ]
    minutely = env.body(LAB, "failover", bucket="minute", **HOUR)
    assert hourly["totals"] == minutely["totals"]
    sms = env.body(LAB, "failover", channel="sms", **HOUR)
    assert sms["channel"] == "SMS" and sms["totals"]["first_attempts"] == 8
    assert sms["totals"]["failover_share"] == pytest.approx(2 / 8)
    secondary = env.body(LAB, "failover", provider="sms-secondary", **HOUR)
    assert [p["provider"] for p in secondary["providers"]] == ["sms-secondary"]
    assert secondary["totals"]["failover_share"] == 1.0  # its only first attempts were failovers
    quiet = env.body(LAB, "failover", **{"from": "2026-03-10T08:00:00Z", "to": "2026-03-10T09:00:00Z"})
    assert quiet["series"] == [] and quiet["totals"]["failover_share"] is None


def test_switches_are_the_global_provider_alerts_listed_for_every_tenant(env: Env) -> None:
    """The provider-health alerts overlapping the range, oldest first, each once (the duplicated OPENED
    row folded), with open and close details; the same list for any tenant, LAB or OTHER (whose keys
    read no global alert otherwise); channel and provider filters apply; one that ended before the
    range is not listed."""
    switches = env.body(LAB, "failover", **HOUR)["switches"]
    assert [(s["alert_id"], s["status"], s["channel"], s["provider"]) for s in switches] == [
        ("sw-sms", "resolved", "SMS", "sms-primary"),
        ("sw-mail", "open", "EMAIL", "smtp-primary"),
    ]
    sms, mail = switches
    assert (sms["first_seen"], sms["resolved_at"]) == (at(11, 10, 30).isoformat(), at(11, 13, 30).isoformat())
    assert (sms["detail"], sms["resolved_detail"]) == (SWITCH_OPEN, SWITCH_CLOSED)
    assert (sms["metric"], sms["kind"], sms["severity"]) == ("provider_health", "outage", "critical")
    assert sms["runbook_url"] == "http://herald.test/dashboard/docs/runbooks/providers.md#provider-outage"
    assert (mail["first_seen"], mail["resolved_at"], mail["resolved_detail"]) == (
        at(11, 40).isoformat(),
        None,
        None,
    )
    other = env.body(OTHER, "failover", key="viewer-other", **HOUR)
    assert other["switches"] == switches
    assert other["totals"]["first_attempts"] == 1 and other["totals"]["failover_share"] == 1.0
    assert [s["alert_id"] for s in env.body(LAB, "failover", channel="SMS", **HOUR)["switches"]] == ["sw-sms"]
    by_provider = env.body(LAB, "failover", provider="smtp-primary", **HOUR)["switches"]
    assert [s["alert_id"] for s in by_provider] == ["sw-mail"]
    morning = env.body(LAB, "failover", **{"from": "2026-03-10T08:30:00Z", "to": "2026-03-10T09:30:00Z"})
    assert [s["alert_id"] for s in morning["switches"]] == ["sw-early"]
    assert morning["switches_truncated"] is False


def dims(scope: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {
        d["dimension"]: (d["period"], d["unit"], d["used"], d["limit"], d["suppressed"], d["paused"])
        for d in scope["dimensions"]
    }


def test_budgets_measure_use_against_the_policy_exactly(env: Env) -> None:
    """The tenant budget and each campaign with traffic in the last 30 days (OLD has none) with the
    policy's limits and the warehouse's use: messages are first attempts (retries and suppressions are
    not), money is what SENT billed, per-day dimensions count today only. Paused: the tenant at 11 of
    11 messages today; PROMO at 96 % of its money, because a suppression under the loaded policy says
    so (the older version's messages_total suppression does not count, nor yesterday's for a per-day
    limit); MISC (campaign_defaults) not."""
    body = env.body(LAB, "budgets")
    assert (body["tenant"], body["policy_version"], body["as_of"]) == (
        LAB,
        env.loaded.version,
        NOW.isoformat(),
    )
    assert (body["day"], body["campaigns_since"]) == ("2026-03-10", (NOW - timedelta(days=30)).isoformat())
    scopes = {s["key"]: s for s in body["scopes"]}
    assert list(scopes) == [f"tenant:{LAB}", f"campaign:{MISC}", f"campaign:{PROMO}"]
    tenant, misc, promo = scopes.values()
    # today: n1-n9, x1 (another dispatcher's: still a message) and e1 = 11 messages (not the 2 retries);
    # money: 3 x 7,500 + 3 x 6,200 + 90 + 7,500 (n9) + 7,500 (e1)
    assert dims(tenant) == {
        "messages_per_day": ("day", "messages", 11, 11, 0, True),
        "money_per_day": ("day", "micros", 56_190, 60_000, 0, False),
    }
    assert [d["fraction"] for d in tenant["dimensions"]] == [1.0, pytest.approx(56_190 / 60_000)]
    assert (tenant["scope"], tenant["id"], tenant["policy_path"]) == ("tenant", LAB, f"tenants.{LAB}.budget")
    assert (
        tenant["paused"] is True and tenant["currency"] == "USD" and tenant["alert_thresholds"] == [0.8, 1.0]
    )
    # PROMO: n1, n2, n4 today and y1 yesterday; 7,500 + 7,500 + 6,200 + 7,500
    assert dims(promo) == {
        "messages_total": ("total", "messages", 4, 5, 0, False),
        "money_total": ("total", "micros", 28_700, 30_000, 1, True),
    }
    assert [d["fraction"] for d in promo["dimensions"]] == [0.8, pytest.approx(28_700 / 30_000)]
    assert promo["paused"] is True and promo["policy_path"] == f"campaigns.{PROMO}.budget"
    assert dims(misc) == {"messages_per_day": ("day", "messages", 1, 50_000, 0, False)}
    assert misc["paused"] is False and misc["policy_path"] == "campaign_defaults.budget"
    alerts = [(a["scope"], a["dimension"], a["kind"], a["status"]) for a in body["alerts"]]
    assert alerts == [
        (f"tenant:{LAB}", "messages_per_day", "exhausted", "open"),
        (f"campaign:{PROMO}", "money_total", "threshold", "open"),
    ]
    assert body["alerts"][0]["detail"].startswith(f"tenant:{LAB} used 11 of 11 messages_per_day (100%)")
    assert body["alerts"][0]["runbook_url"].endswith("docs/runbooks/budgets.md#budget-exhausted")


def test_a_tenant_without_budgets_gets_no_scopes_and_only_its_alerts(env: Env) -> None:
    """OTHER has no budget in the policy (its traffic is transactional): no scopes; its own budget
    alert is listed and none of LAB's."""
    body = env.body(OTHER, "budgets", key="viewer-other")
    assert body["scopes"] == []
    assert [(a["scope"], a["dimension"]) for a in body["alerts"]] == [(f"campaign:{PROMO}", "money_total")]


@pytest.mark.parametrize("what", ["failover", "budgets"])
def test_a_tenant_key_reads_only_its_tenant(env: Env, what: str) -> None:
    """LAB's key gets 403 with no data for OTHER (and the other way round); an operator reads both."""
    for tenant, key in ((OTHER, "viewer-lab"), (LAB, "viewer-other")):
        refused = env.get(tenant, what, key, **({} if what == "budgets" else HOUR))
        assert refused.status_code == 403
        assert refused.json() == {
            "detail": f"key {key} is scoped to tenant {LAB if key == 'viewer-lab' else OTHER}"
        }
    for tenant in (LAB, OTHER):
        assert env.get(tenant, what, "ops").status_code == 200


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"bucket": "day"}, "bucket"),
        ({"channel": "FAX"}, "channel"),
        ({"from": "yesterday"}, "from"),
        ({"provider": "x' OR 1=1 --"}, "provider"),
        ({"from": "2026-03-10T10:00:00Z", "to": "2026-03-10T09:00:00Z"}, "to"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z", "bucket": "minute"}, "from"),
    ],
)
def test_bad_failover_filters_are_422_naming_the_field(env: Env, params: dict[str, str], field: str) -> None:
    response = env.get(LAB, "failover", **params)
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [["query", field]]


def test_budgets_need_a_policy_and_failover_does_not(env: Env) -> None:
    """Without a loaded policy /budgets is 503 (after the access check: another tenant is still 403);
    /failover reads only the warehouse and answers."""
    response = env.get(LAB, "budgets", client=env.no_policy)
    assert (response.status_code, response.json()["detail"]) == (503, NO_POLICY)
    assert env.get(OTHER, "budgets", client=env.no_policy).status_code == 403
    answer = env.get(LAB, "failover", client=env.no_policy, **HOUR)
    assert answer.status_code == 200 and answer.json()["totals"]["first_attempts"] == 9


def test_openapi_documents_both_endpoints(env: Env) -> None:
    paths = env.client.get("/openapi.json").json()["paths"]
    failover = paths["/api/v1/tenants/{tenant}/failover"]["get"]
    assert "failover_share" in failover["description"] and "switches" in failover["description"]
    assert {p["name"] for p in failover["parameters"]} >= {
        "tenant",
        "channel",
        "provider",
        "from",
        "to",
        "bucket",
    }
    budgets = paths["/api/v1/tenants/{tenant}/budgets"]["get"]
    assert "paused" in budgets["description"] and "campaign_defaults" in budgets["description"]
    assert failover["security"] and budgets["security"]
