"""The delivery dashboard in a real browser (Debian Chromium via Playwright) against a real worker fed
through Kafka: it shows the numbers and the alerts the warehouse holds, updates live, and a tenant key
sees only its own tenant; all of it under the API's Content-Security-Policy without a violation, the key
kept for the tab only and gone with everything it showed on sign-out. Chromium missing is a failure,
never a skip: install it (`make setup`)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page

from analytics.alerting import AlertChange, SeriesKey, alert_id, alert_record
from herald.local import query_endpoint
from herald.supervise import WorkerProcess
from projections.rows import ALERT_COLUMNS
from projections.warehouse import Warehouse
from simulator.run import emit_exact
from tests.conftest import Herald
from tests.e2e.browser_checks import NO_VALUE, check_signed_out, session_key, watch_csp
from tests.integration.helpers import alert_change_row
from web.auth import entry_yaml, new_key
from web.dashboard import LOCAL_RUNBOOK_BASE

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).parent / "screenshots"
A, B = "acme-home", "brightfix"
WAIT_MS = 45_000


class Keys:
    def __init__(self, tmp_path: Path) -> None:
        self.a, entry_a = new_key("acme-dash", A, "viewer")
        self.b, entry_b = new_key("bright-dash", B, "viewer")
        # /sql needs a global key once a keys file is configured: the test's own direct queries.
        self.ops, entry_ops = new_key("e2e-ops", "*", "operator")
        self.path = tmp_path / "keys.yaml"
        self.path.write_text("keys:\n" + "".join(entry_yaml(e) for e in (entry_a, entry_b, entry_ops)))


def scalar(api: str, key: str, query: str) -> Any:
    return query_endpoint(api, query, api_key=key)[1][0][0]


def delivered_shown_and_queried(
    page: Page, api: str, key: str, tenant: str, channel: str = ""
) -> tuple[int, int]:
    """The delivered total the page shows, and countIf(DELIVERED) straight from the raw events over the
    range that same render covered (read in one step, so a live refresh cannot slip in between)."""
    seen = page.evaluate(
        """() => {
            const panel = document.querySelector('[data-testid="panel-delivery"]');
            const total = document.querySelector('[data-testid="total-delivered"]');
            return {start: panel.dataset.from, end: panel.dataset.to, value: total.dataset.value};
        }"""
    )
    where = (
        f"tenant_id = '{tenant}' AND occurred_at >= parseDateTime64BestEffort('{seen['start']}', 3, 'UTC') "
        f"AND occurred_at < parseDateTime64BestEffort('{seen['end']}', 3, 'UTC')"
    )
    if channel:
        where += f" AND channel = '{channel}'"
    queried = int(scalar(api, key, f"SELECT countIf(event_type = 'DELIVERED') FROM events WHERE {where}"))
    return int(seen["value"]), queried


def shown(page: Page, test_id: str) -> str | None:
    return page.get_by_test_id(test_id).get_attribute("data-value")


def wait_refreshed_after_now(page: Page) -> None:
    """Wait until the page shows a refresh that began after this moment (by the page's own clock)."""
    now = page.evaluate("Date.now()")
    page.wait_for_function("t => Number(document.body.dataset.startedAt || 0) >= t", arg=now, timeout=WAIT_MS)


def enter_key(page: Page, key: str) -> None:
    page.get_by_test_id("api-key").fill(key)
    page.get_by_test_id("connect").click()


def check_unknown_key_is_explained(page: Page) -> None:
    enter_key(page, "hk_not-a-key")
    banner = page.get_by_test_id("error")
    banner.wait_for(state="visible", timeout=WAIT_MS)
    assert "unknown API key" in banner.inner_text()
    assert page.locator(".chart svg").count() == 0


def check_tenant_numbers(page: Page, api: str, ops: str, key: str) -> int:
    page.wait_for_selector('[data-testid="chart-delivery-rate"] svg circle', timeout=WAIT_MS)
    page.wait_for_selector('[data-testid="chart-volume"] svg circle', timeout=WAIT_MS)
    assert page.get_by_test_id("error").is_hidden()
    tenant = page.get_by_test_id("tenant-select")
    assert tenant.locator("option").evaluate_all("os => os.map(o => o.value)") == [A]
    assert tenant.input_value() == A
    delivered, queried = delivered_shown_and_queried(page, api, ops, A)
    assert delivered == queried > 0
    assert page.get_by_test_id("total-delivered").inner_text() == f"{delivered:,}"
    assert int(page.get_by_test_id("chart-delivery-rate").get_attribute("data-points") or 0) > 0
    assert int(page.get_by_test_id("chart-engagement").get_attribute("data-points") or 0) > 0
    assert int(page.get_by_test_id("chart-latency").get_attribute("data-points") or 0) > 0
    assert page.locator('[data-testid="latency-table"] tbody tr').count() == 2
    assert page.locator('[data-testid="providers-table"] tbody tr[data-provider]').count() > 0
    assert session_key(page) == key  # for this tab only: nothing in localStorage
    return delivered


def check_channel_filter(page: Page, api: str, ops: str) -> None:
    page.get_by_test_id("channel-select").select_option("EMAIL")
    page.wait_for_function("() => document.body.dataset.channel === 'EMAIL'", timeout=WAIT_MS)
    emails, queried = delivered_shown_and_queried(page, api, ops, A, channel="EMAIL")
    assert emails == queried > 0
    page.get_by_test_id("channel-select").select_option("")
    page.wait_for_function("() => document.body.dataset.channel === 'all'", timeout=WAIT_MS)


def check_runbook_links(page: Page, api: str) -> None:
    panels = (
        "alerts",
        "delivery",
        "engagement",
        "latency",
        "providers",
        "failover",
        "sla",
        "budgets",
        "experiments",
    )
    for panel in panels:
        href = page.get_by_test_id(f"runbook-{panel}").get_attribute("href") or ""
        path, _, anchor = href.partition("#")
        response = page.request.get(api + path)
        assert response.ok, href
        assert f'id="{anchor}"' in response.text(), href


def check_sla_panel(page: Page) -> None:
    """The SLA panel shows one card per objective of tenant A in the worker's (bundled) policy, each with
    its state, good ratio, error budget, four burn-rate badges and the hourly chart."""
    cards = page.locator('[data-testid="panel-sla"] [data-testid="sla-objective"]')
    cards.first.wait_for(state="visible", timeout=WAIT_MS)
    channels = page.evaluate(
        """() => fetch(`/api/v1/tenants/acme-home/sla`,
                  {headers: {"X-Api-Key": sessionStorage.getItem("herald.apiKey")}})
                 .then(r => r.json()).then(b => b.objectives.map(o => o.channel))"""
    )
    assert "sms" in channels
    assert cards.evaluate_all("cs => cs.map(c => c.dataset.channel)") == channels
    for i in range(cards.count()):
        card = cards.nth(i)
        assert (card.get_by_test_id("sla-state").text_content() or "").strip() in ("ok", "ticket", "breach")
        for part in ("sla-title", "sla-ratio", "sla-budget"):
            assert card.get_by_test_id(part).is_visible(), part
        assert card.get_by_test_id("sla-burn").count() == 4
        card.locator('[data-testid="sla-chart"] svg').wait_for(state="visible", timeout=WAIT_MS)


def check_dispatch_panels(page: Page) -> None:
    """Failover: the simulated traffic has no dispatcher decisions, so the panel shows its empty state.
    Budgets: one row per scope the API gives tenant A (its own budget from the bundled policy first,
    then its campaigns), each with a bar per limited dimension and its paused/active state."""
    failover = page.get_by_test_id("panel-failover")
    assert failover.is_visible()
    failover.locator('[data-testid="chart-failover"] svg').wait_for(state="visible", timeout=WAIT_MS)
    assert failover.locator("svg text.empty").text_content() == "No dispatch traffic in this range"
    assert page.get_by_test_id("failover-empty").inner_text() == "No dispatch traffic in this range"
    assert shown(page, "failover-first-attempts") == "0"
    budgets = page.get_by_test_id("panel-budgets")
    assert budgets.is_visible()
    rows = budgets.get_by_test_id("budget-scope")
    rows.first.wait_for(state="visible", timeout=WAIT_MS)
    scopes = page.evaluate(
        """() => fetch(`/api/v1/tenants/acme-home/budgets`,
                  {headers: {"X-Api-Key": sessionStorage.getItem("herald.apiKey")}})
                 .then(r => r.json()).then(b => b.scopes.map(s => [s.key, s.paused, s.dimensions.length]))"""
    )
    assert scopes[0][0] == f"tenant:{A}"
    assert (
        rows.evaluate_all(
            "rs => rs.map(r => [r.dataset.scope, r.dataset.paused === 'true', "
            "r.querySelectorAll('[data-testid=\"budget-dimension\"]').length])"
        )
        == scopes
    )
    tenant = rows.first
    assert tenant.get_by_test_id("budget-title").inner_text() == f"Tenant {A}"
    money = tenant.locator('[data-testid="budget-dimension"][data-dimension="money_per_day"]')
    assert money.is_visible() and "/ 2,000.00 USD" in money.get_by_test_id("budget-use").inner_text()
    for i in range(rows.count()):
        row = rows.nth(i)
        paused = row.get_attribute("data-paused") == "true"
        assert row.get_by_test_id("budget-state").inner_text().lower() == ("paused" if paused else "active")


def opened_alert(
    series: SeriesKey, at: datetime, metric: str, kind: str, severity: str, values: tuple[float, float]
) -> AlertChange:
    at_ms = int(at.timestamp() * 1000)
    observed, expected = values
    return AlertChange(
        alert_id=alert_id(series, at_ms),
        status="OPENED",
        series=series,
        metric=metric,
        kind=kind,
        severity=severity,
        observed=observed,
        expected=expected,
        score=0.97,
        window_start_ms=at_ms,
        window_end_ms=at_ms + 60_000,
        first_seen_ms=at_ms,
        at_ms=at_ms,
    )


def tenant_a_alerts(now: datetime) -> tuple[list[AlertChange], AlertChange, AlertChange]:
    """Tenant A: a critical delivery-rate drop on SMS, open for 20 minutes, and a minor latency spike on
    EMAIL that opened later (newest first alone would list it first) and has resolved. Returns the rows
    to write (the open alert's OPENED twice, as a restarted monitor writes it), the open and the
    resolved alert."""
    minute = now.replace(second=0, microsecond=0)
    drop = opened_alert(
        SeriesKey(A, "SMS", "sms-primary"),
        minute - timedelta(minutes=20),
        "delivery_rate",
        "drop",
        "critical",
        (0.41, 0.96),
    )
    spike = opened_alert(
        SeriesKey(A, "EMAIL", "mail-relay"),
        minute - timedelta(minutes=12),
        "latency_p95",
        "spike",
        "minor",
        (2400.0, 800.0),
    )
    ended = replace(spike, status="RESOLVED", at_ms=int((minute - timedelta(minutes=5)).timestamp() * 1000))
    return [drop, spike, ended, drop], drop, ended


def write_alerts(worker: WorkerProcess, changes: list[AlertChange]) -> None:
    """Write alert rows as the monitor does. /sql is read-only and the worker owns the embedded
    warehouse, so they go through the worker's ClickHouse HTTP endpoint (``warehouse_http`` in its run
    file), the way a second worker on the same machine writes."""
    warehouse = Warehouse(json.loads(worker.run_file.read_text())["warehouse_http"])
    try:
        rows = [alert_change_row(c, worker.api, worker.api + LOCAL_RUNBOOK_BASE) for c in changes]
        warehouse.insert("alerts", rows, ALERT_COLUMNS)
    finally:
        warehouse.close()


def alert_locator(page: Page, change: AlertChange) -> Locator:
    return page.locator(f'[data-testid="alert-row"][data-alert-id="{change.alert_id}"]')


def text_of(row: Locator, selector: str) -> str:
    return (row.locator(selector).text_content() or "").strip()


def check_alerts_panel(page: Page, api: str, still_open: AlertChange, done: AlertChange) -> None:
    """The panel lists both alerts, open first and each once, values in the metric's unit, with a
    runbook link that opens the runbook section and a link to the alert's series on the dashboard."""
    open_row, done_row = alert_locator(page, still_open), alert_locator(page, done)
    open_row.wait_for(state="visible", timeout=WAIT_MS)  # by the live refresh: no click, no reload
    done_row.wait_for(state="visible", timeout=WAIT_MS)
    # Only these two exist (a live monitor needs an hour of a series before it alerts), but the
    # checks hold with others present too: open rows first, each alert once.
    shown_rows = page.get_by_test_id("alert-row").evaluate_all(
        "rs => rs.map(r => [r.dataset.alertId, r.dataset.status])"
    )
    mine = [row for row in shown_rows if row[0] in (still_open.alert_id, done.alert_id)]
    assert mine == [[still_open.alert_id, "open"], [done.alert_id, "resolved"]]
    statuses = [status for _, status in shown_rows]
    assert statuses == sorted(statuses, key=lambda status: status != "open")
    assert page.get_by_test_id("alerts-open-count").inner_text() == f"{statuses.count('open')} open"
    assert text_of(open_row, '[data-testid="alert-severity"]') == "critical"
    assert text_of(open_row, '[data-testid="alert-title"]') == "delivery_rate drop"
    assert text_of(open_row, '[data-testid="alert-series"]') == "SMS / sms-primary"
    assert (text_of(open_row, ".observed"), text_of(open_row, ".expected")) == ("41.0 %", "96.0 %")
    assert text_of(open_row, '[data-testid="alert-status"]').startswith("open for ")
    assert text_of(done_row, '[data-testid="alert-title"]') == "latency_p95 spike"
    assert (text_of(done_row, ".observed"), text_of(done_row, ".expected")) == ("2.40 s", "800 ms")
    assert text_of(done_row, '[data-testid="alert-status"]').startswith("resolved at ")

    record = alert_record(still_open, api, api + LOCAL_RUNBOOK_BASE)
    runbook = open_row.get_by_test_id("alert-runbook-link")
    assert runbook.is_visible()
    href = runbook.get_attribute("href") or ""
    assert href == record["runbook_url"] == f"{api}/dashboard/docs/runbooks/delivery.md#delivery-rate-drop"
    response = page.request.get(href)
    assert response.status == 200, href
    assert 'id="delivery-rate-drop"' in response.text()
    link = open_row.get_by_test_id("alert-dashboard-link")
    assert link.get_attribute("href") == record["dashboard_url"]
    assert record["dashboard_url"] == f"{api}/dashboard?tenant={A}&channel=SMS&provider=sms-primary&range=6h"


def check_alert_opens_its_series(page: Page, still_open: AlertChange, done: AlertChange) -> None:
    """'show on dashboard' opens the page with the alert's tenant, channel and provider preselected."""
    with page.expect_navigation():
        alert_locator(page, still_open).get_by_test_id("alert-dashboard-link").click()
    page.wait_for_function(
        "() => document.body.dataset.channel === 'SMS' && document.body.dataset.state === 'ok'",
        timeout=WAIT_MS,
    )
    assert page.get_by_test_id("tenant-select").input_value() == A
    assert page.get_by_test_id("channel-select").input_value() == "SMS"
    assert page.get_by_test_id("provider-select").input_value() == "sms-primary"
    assert page.get_by_test_id("range-select").input_value() == "6h"
    alert_locator(page, still_open).wait_for(state="visible", timeout=WAIT_MS)
    assert alert_locator(page, done).count() == 0  # the EMAIL alert is another series


def check_other_tenant_refused(page: Page, api: str) -> None:
    reason = "key acme-dash is scoped to tenant acme-home"
    page.goto(api + f"/dashboard?tenant={B}")  # the tab keeps the key: the page reconnects by itself
    page.wait_for_function("() => document.body.dataset.state === 'error'", timeout=WAIT_MS)
    assert reason in page.get_by_test_id("error").inner_text()
    assert reason in page.get_by_test_id("panel-delivery").inner_text()
    assert shown(page, "total-delivered") is None
    assert page.get_by_test_id("total-delivered").inner_text() == NO_VALUE
    assert page.locator(".chart svg").count() == 0
    assert page.locator('[data-testid="providers-table"] tbody tr').count() == 0
    assert reason in page.get_by_test_id("panel-alerts").inner_text()
    assert page.get_by_test_id("alert-row").count() == 0
    status = page.evaluate(
        """t => fetch(`/api/v1/tenants/${t}/delivery`,
                  {headers: {"X-Api-Key": sessionStorage.getItem("herald.apiKey")}}).then(r => r.status)""",
        B,
    )
    assert status == 403


def check_other_key_sees_no_alerts(page: Page, key_b: str, written: list[AlertChange]) -> None:
    """Tenant B's own key on B's dashboard: none of A's alerts (B has none: the empty state), and A's
    alerts are refused (403) to it."""
    page.get_by_test_id("sign-out").click()  # the page shows the refused tenant B: state is 'error'
    check_signed_out(page)
    enter_key(page, key_b)
    page.wait_for_function("() => document.body.dataset.state === 'ok'", timeout=WAIT_MS)
    assert page.get_by_test_id("tenant-select").input_value() == B
    shown_ids = page.get_by_test_id("alert-row").evaluate_all("rs => rs.map(r => r.dataset.alertId)")
    assert not {c.alert_id for c in written} & set(shown_ids)
    answers = page.evaluate(
        """async ([a, b]) => {
            const headers = {"X-Api-Key": sessionStorage.getItem("herald.apiKey")};
            const own = await fetch(`/api/v1/tenants/${b}/alerts`, {headers}).then(r => r.json());
            const other = await fetch(`/api/v1/tenants/${a}/alerts`, {headers});
            const every = await fetch("/api/v1/alerts", {headers});
            return {own: own.alerts.map(x => x.alert_id), other: other.status, every: every.status};
        }""",
        [A, B],
    )
    assert (answers["other"], answers["every"]) == (403, 403)
    assert sorted(answers["own"]) == sorted(shown_ids)
    if not shown_ids:
        empty = page.get_by_test_id("alerts-empty")
        assert empty.is_visible() and empty.inner_text() == "No alerts in this range"
        assert page.get_by_test_id("alerts-open-count").is_hidden()


def test_dashboard_shows_warehouse_numbers_live_and_only_the_keys_tenant(
    herald: Herald, browser: Browser, tmp_path: Path
) -> None:
    """A tenant viewer's dashboard shows its tenant's warehouse numbers and alerts, refreshes them as
    traffic and alerts arrive, links runbooks, and answers another tenant with the API's 403 reason and
    no numbers; the other tenant's own key sees none of the first tenant's alerts."""
    keys = Keys(tmp_path)
    worker = herald.start_worker(HERALD_API_KEYS_FILE=str(keys.path))
    emit_exact(herald.emitter(), 6000, 0, seed=3, start=datetime.now(UTC))
    herald.wait_caught_up()
    with_data = query_endpoint(worker.api, "SELECT DISTINCT tenant_id FROM events", api_key=keys.ops)[1]
    assert {A, B} < {row[0] for row in with_data}

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    violations = watch_csp(page)
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    page.goto(worker.api + "/dashboard")

    check_unknown_key_is_explained(page)
    enter_key(page, keys.a)
    delivered = check_tenant_numbers(page, worker.api, keys.ops, keys.a)
    check_channel_filter(page, worker.api, keys.ops)
    check_runbook_links(page, worker.api)
    check_sla_panel(page)
    check_dispatch_panels(page)

    # Alerts open and resolve while the page is open (the open one's row written twice, as after a
    # monitor restart): the live refresh shows each once, open first.
    rows, still_open, done = tenant_a_alerts(datetime.now(UTC))
    write_alerts(worker, rows)
    check_alerts_panel(page, worker.api, still_open, done)

    # Live: more traffic arrives and the page shows it without any click.
    emit_exact(herald.emitter(), 3000, 0, seed=4, start=datetime.now(UTC))
    herald.wait_caught_up()
    wait_refreshed_after_now(page)  # by the 10 s timer alone: no click, no reload
    grown, queried = delivered_shown_and_queried(page, worker.api, keys.ops, A)
    assert grown == queried > delivered
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)
    check_alert_opens_its_series(page, still_open, done)

    check_other_tenant_refused(page, worker.api)
    page.screenshot(path=str(SCREENSHOTS / "dashboard-forbidden.png"), full_page=True)
    check_other_key_sees_no_alerts(page, keys.b, rows)
    page.screenshot(path=str(SCREENSHOTS / "dashboard-other-tenant.png"), full_page=True)
    page.get_by_test_id("sign-out").click()
    check_signed_out(page)
    page.screenshot(path=str(SCREENSHOTS / "dashboard-signed-out.png"), full_page=True)
    assert violations == []
    # The browser logs each refused request (401/403) as a console error; anything else is a bug.
    assert [e for e in console_errors if "401" not in e and "403" not in e] == []
