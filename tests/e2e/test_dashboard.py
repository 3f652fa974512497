"""The delivery dashboard in a real browser (Debian Chromium via Playwright) against a real worker fed
through Kafka: it shows the numbers the warehouse holds, updates live, and a tenant key sees only its
own tenant. Chromium missing is a failure, never a skip: install it (`make setup`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from herald.local import query_endpoint
from simulator.run import emit_exact
from tests.conftest import Herald
from web.auth import entry_yaml, new_key

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).parent / "screenshots"
A, B = "acme-home", "brightfix"
WAIT_MS = 45_000


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium (make setup)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


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


NO_VALUE = "\u2013"  # the en dash the page shows where a number is unknown


def enter_key(page: Page, key: str) -> None:
    page.get_by_test_id("api-key").fill(key)
    page.get_by_test_id("connect").click()


def check_unknown_key_is_explained(page: Page) -> None:
    enter_key(page, "hk_not-a-key")
    banner = page.get_by_test_id("error")
    banner.wait_for(state="visible", timeout=WAIT_MS)
    assert "unknown API key" in banner.inner_text()
    assert page.locator(".chart svg").count() == 0


def check_tenant_numbers(page: Page, api: str, ops: str) -> int:
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
    return delivered


def check_channel_filter(page: Page, api: str, ops: str) -> None:
    page.get_by_test_id("channel-select").select_option("EMAIL")
    page.wait_for_function("document.body.dataset.channel === 'EMAIL'", timeout=WAIT_MS)
    emails, queried = delivered_shown_and_queried(page, api, ops, A, channel="EMAIL")
    assert emails == queried > 0
    page.get_by_test_id("channel-select").select_option("")
    page.wait_for_function("document.body.dataset.channel === 'all'", timeout=WAIT_MS)


def check_runbook_links(page: Page, api: str) -> None:
    for panel in ("delivery", "engagement", "latency", "providers"):
        href = page.get_by_test_id(f"runbook-{panel}").get_attribute("href") or ""
        path, _, anchor = href.partition("#")
        response = page.request.get(api + path)
        assert response.ok, href
        assert f'id="{anchor}"' in response.text(), href


def check_other_tenant_refused(page: Page, api: str) -> None:
    reason = "key acme-dash is scoped to tenant acme-home"
    page.goto(api + f"/dashboard?tenant={B}")  # the key is remembered: the page reconnects by itself
    page.wait_for_function("document.body.dataset.state === 'error'", timeout=WAIT_MS)
    assert reason in page.get_by_test_id("error").inner_text()
    assert reason in page.get_by_test_id("panel-delivery").inner_text()
    assert shown(page, "total-delivered") is None
    assert page.get_by_test_id("total-delivered").inner_text() == NO_VALUE
    assert page.locator(".chart svg").count() == 0
    assert page.locator('[data-testid="providers-table"] tbody tr').count() == 0
    status = page.evaluate(
        """t => fetch(`/api/v1/tenants/${t}/delivery`,
                  {headers: {"X-Api-Key": localStorage.getItem("herald.apiKey")}}).then(r => r.status)""",
        B,
    )
    assert status == 403


def test_dashboard_shows_warehouse_numbers_live_and_only_the_keys_tenant(
    herald: Herald, browser: Browser, tmp_path: Path
) -> None:
    """A tenant viewer's dashboard shows its tenant's warehouse numbers, refreshes them as traffic
    arrives, links runbooks, and answers another tenant with the API's 403 reason and no numbers."""
    keys = Keys(tmp_path)
    worker = herald.start_worker(HERALD_API_KEYS_FILE=str(keys.path))
    emit_exact(herald.emitter(), 6000, 0, seed=3, start=datetime.now(UTC))
    herald.wait_caught_up()
    with_data = query_endpoint(worker.api, "SELECT DISTINCT tenant_id FROM events", api_key=keys.ops)[1]
    assert {A, B} < {row[0] for row in with_data}

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    page.goto(worker.api + "/dashboard")

    check_unknown_key_is_explained(page)
    enter_key(page, keys.a)
    delivered = check_tenant_numbers(page, worker.api, keys.ops)
    check_channel_filter(page, worker.api, keys.ops)
    check_runbook_links(page, worker.api)

    # Live: more traffic arrives and the page shows it without any click.
    emit_exact(herald.emitter(), 3000, 0, seed=4, start=datetime.now(UTC))
    herald.wait_caught_up()
    wait_refreshed_after_now(page)  # by the 10 s timer alone: no click, no reload
    grown, queried = delivered_shown_and_queried(page, worker.api, keys.ops, A)
    assert grown == queried > delivered
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)

    check_other_tenant_refused(page, worker.api)
    page.screenshot(path=str(SCREENSHOTS / "dashboard-forbidden.png"), full_page=True)
    # The browser logs each refused request (401/403) as a console error; anything else is a bug.
    assert [e for e in console_errors if "401" not in e and "403" not in e] == []
