"""An experiment's page in a real browser (Debian Chromium via Playwright) against the API served over an
embedded warehouse: an experiment created through the API, traffic exposed to it by the dispatcher
(from the registry snapshot) and ingested, three stored computations; the page, reached from the
dashboard's experiments panel, shows the definition, the per-variant counts and the metrics the API
computes, and charts the effect over time with its CI band; an experiment without data says so; another
tenant's page is refused with the API's reason. Both pages run under the API's Content-Security-Policy
without a violation, keep the key for the tab only, and forget it and everything it showed on sign-out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route

from experiments.registry import FileDefinitions, Registry
from herald.settings import BUNDLED_GUARDRAILS
from policies.loader import load_policy
from policies.segments import Segment
from projections import experiment_queries
from projections.migrate import migrate
from projections.warehouse import Warehouse
from streams.pipeline import IngestTotals
from tests.e2e.browser_checks import (
    KEY_STORE,
    SIGNED_OUT_STATUS,
    check_signed_out,
    session_key,
    stored_keys,
    watch_csp,
)
from tests.integration.helpers import exposed_events, ingest
from web.app import create_api
from web.auth import entry_yaml, load_key_ring, new_key
from web.server import ApiServer

pytestmark = pytest.mark.e2e

A = "acme-home"
EXPERIMENT = "reminder-copy"
WAIT_MS = 30_000
MINUS = "\u2212"  # the typographic minus the page writes before a negative effect


@dataclass
class Site:
    url: str
    viewer: str
    events: list[dict[str, Any]]

    def get(self, path: str) -> Any:
        response = httpx.get(self.url + path, headers={"X-Api-Key": self.viewer})
        assert response.status_code == 200, response.text
        return response.json()


def effect_text(value: float) -> str:
    """A relative effect as the page writes it: 0.1234 -> "+12.3 %", -0.05 -> "\u22125.0 %"."""
    return f"{'+' if value >= 0 else MINUS}{abs(value) * 100:.1f} %"


def definition(experiment_id: str, template: str, start: datetime) -> dict[str, Any]:
    return {
        "id": experiment_id,
        "template": template,
        "description": "A shorter install reminder (v4) against the current copy (v3).",
        "segment": "gold_buyers",
        "variants": [
            {"name": "control", "template_version": 3, "weight": 1},
            {"name": "v4", "template_version": 4, "weight": 1},
        ],
        "start": start.isoformat(),
        "stop": (start + timedelta(days=7)).isoformat(),
        "primary_metric": "delivery_rate",
        "guardrail_metrics": ["unsubscribe_rate", "latency_mean"],
        "mde": 0.05,
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The API on a free port; a segment and two experiments created through it (one gets traffic in
    three batches, each followed by a stored computation, as the experiments job would store it). The
    tests only read it, so they share it."""
    tmp_path = tmp_path_factory.mktemp("site")
    viewer, viewer_entry = new_key("acme-viewer", A, "viewer")
    analyst, analyst_entry = new_key("acme-analyst", A, "analyst")
    (tmp_path / "keys.yaml").write_text("keys:\n" + entry_yaml(viewer_entry) + entry_yaml(analyst_entry))
    warehouse = Warehouse(f"chdb://{tmp_path / 'warehouse'}")
    server: ApiServer | None = None
    try:
        migrate(warehouse)
        registry = Registry(
            warehouse, FileDefinitions(segments={"gold": Segment.parse("gold", 'tier == "gold"')})
        )
        keys = load_key_ring(tmp_path / "keys.yaml")
        policy = load_policy(BUNDLED_GUARDRAILS)  # as a worker without one: the dashboard's panels load
        app = create_api(warehouse, IngestTotals, "e2e", keys=keys, policy=policy, definitions=registry)
        server = ApiServer(app, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.start()}"
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        tenant = f"{url}/api/v1/tenants/{A}"
        headers = {"X-Api-Key": analyst}
        segment = {"name": "gold_buyers", "rule": 'tier in ("gold", "platinum")'}
        for path, body in (
            ("segments", segment),
            ("experiments", definition(EXPERIMENT, "visit-reminder", now - timedelta(hours=3))),
            ("experiments", definition("quiet-copy", "never-sent", now - timedelta(hours=3))),
        ):
            response = httpx.post(f"{tenant}/{path}", json=body, headers=headers)
            assert response.status_code == 201, response.text

        snapshot = registry.snapshot()
        defn = snapshot.experiments.definitions[EXPERIMENT]
        events: list[dict[str, Any]] = []
        t0_ms = int((now - timedelta(hours=2)).timestamp() * 1000)
        for batch in range(3):  # 400 new recipients each; v4 is delivered 95 % of the time, control 80 %
            found = exposed_events(
                snapshot.experiments, snapshot.segments, t0_ms, 400,
                delivered=lambda variant, n: (n % 20) != 0 if variant == "v4" else (n % 5) != 0,
                first=batch * 400,
            )  # fmt: skip
            ingest(warehouse, found, tmp_path, now, offset=len(events))
            events += found
            key = (A, EXPERIMENT)
            stats = experiment_queries.variant_stats(warehouse, [key])[key]
            report = experiment_queries.experiment_report(defn, stats, int(now.timestamp() * 1000))
            computed_at = now - timedelta(minutes=40 - batch * 20)
            rows = experiment_queries.result_rows(report, computed_at, snapshot.version)
            warehouse.insert("experiment_results", rows, experiment_queries.RESULT_COLUMNS)
        yield Site(url, viewer, events)
    finally:
        if server is not None:
            server.stop()
        warehouse.close()


def open_from_dashboard(page: Page, site: Site) -> None:
    """The dashboard's experiments panel lists the experiment and links its page."""
    page.goto(f"{site.url}/dashboard?tenant={A}")
    page.get_by_test_id("api-key").fill(site.viewer)
    page.get_by_test_id("connect").click()
    row = page.locator(f'[data-testid="experiment-row"][data-experiment="{EXPERIMENT}"]')
    row.wait_for(state="visible", timeout=WAIT_MS)
    assert row.get_attribute("data-state") == "running"
    assert "API, version 1" in row.inner_text()
    with page.expect_navigation():
        row.get_by_test_id("experiment-link").click()
    assert page.url == f"{site.url}/dashboard/experiments/{EXPERIMENT}?tenant={A}"
    assert session_key(page) == site.viewer  # the same tab: the experiment page finds the key


def check_definition_and_counts(page: Page, site: Site) -> None:
    assert EXPERIMENT in page.get_by_test_id("experiment-title").inner_text()
    assert page.get_by_test_id("experiment-state").inner_text().lower() == "running"
    assert "created through the API · version 1" in page.get_by_test_id("experiment-source").inner_text()
    assert "gold_buyers" in page.get_by_test_id("definition").inner_text()
    exposed = Counter(e["variant"] for e in site.events if e["event_type"] == "DISPATCHED")
    delivered = Counter(e["variant"] for e in site.events if e["event_type"] == "DELIVERED")
    assert sum(exposed.values()) == 1200 and set(exposed) == {"control", "v4"}
    for variant in ("control", "v4"):
        row = page.locator(f'[data-testid="variant-row"][data-variant="{variant}"]')
        assert row.get_by_test_id("variant-exposed").get_attribute("data-value") == str(exposed[variant])
        assert row.get_by_test_id("variant-exposed").inner_text() == f"{exposed[variant]:,}"
        assert row.get_by_test_id("variant-delivered").get_attribute("data-value") == str(delivered[variant])


def check_metrics_and_chart(page: Page, site: Site) -> None:
    report = site.get(f"/api/v1/tenants/{A}/experiments/{EXPERIMENT}")
    primary = report["metrics"]["delivery_rate"]
    (expected,) = primary["results"]
    card = page.locator('[data-testid="metric-card"][data-metric="delivery_rate"]')
    row = card.locator('[data-testid="result-row"][data-variant="v4"]')
    effect = row.get_by_test_id("effect")
    assert float(effect.get_attribute("data-value") or "nan") == pytest.approx(expected["relative_effect"])
    assert effect.inner_text() == effect_text(expected["relative_effect"])
    low, high = expected["seq_ci_low"], expected["seq_ci_high"]
    assert row.get_by_test_id("seq-ci").inner_text() == f"{effect_text(low)} … {effect_text(high)}"
    assert expected["significant"] is True
    assert row.get_by_test_id("significant").get_attribute("data-value") == "true"
    srm = card.get_by_test_id("srm-flag")
    assert srm.get_attribute("data-flag") == "false" and srm.inner_text().lower() == "split ok"
    remaining = row.get_by_test_id("remaining-sample").get_attribute("data-value")
    assert remaining == str(expected["remaining_sample_size"])
    assert row.get_by_test_id("power").inner_text().endswith("%")

    history = site.get(f"/api/v1/tenants/{A}/experiments/{EXPERIMENT}/history?metric=delivery_rate")
    treatment = [p for p in history["points"] if not p["is_control"]]
    assert len(treatment) == 3
    chart = card.get_by_test_id("effect-chart")
    assert chart.get_attribute("data-points") == "3"
    assert chart.locator('[data-testid="line-v4"]').count() == 1
    assert chart.locator('[data-testid="interval-v4"]').count() == 1
    assert chart.locator("svg circle").count() == 3
    titles = chart.locator("svg circle title").evaluate_all("ts => ts.map(t => t.textContent)")
    assert [t.rsplit(": ", 1)[1] for t in titles] == [effect_text(p["relative_effect"]) for p in treatment]
    metrics = page.locator('[data-testid="metric-card"]').evaluate_all("cs => cs.map(c => c.dataset.metric)")
    assert metrics == ["delivery_rate", "unsubscribe_rate", "latency_mean"]
    changes = page.locator('[data-testid="change-row"]')
    assert changes.count() == 1 and changes.first.get_attribute("data-action") == "created"


def check_no_results_yet(page: Page, site: Site, tmp_path: Path) -> None:
    page.goto(f"{site.url}/dashboard/experiments/quiet-copy?tenant={A}")  # the key is remembered
    page.wait_for_function("() => document.body.dataset.state === 'ok'", timeout=WAIT_MS)
    cards = page.locator('[data-testid="metric-card"]')
    assert cards.count() == 3
    assert cards.evaluate_all("cs => cs.map(c => c.dataset.status)") == ["waiting"] * 3
    assert page.get_by_test_id("metric-waiting").first.inner_text().startswith("Waiting for data")
    chart = cards.first.get_by_test_id("effect-chart")
    assert chart.get_attribute("data-points") == "0"
    assert "No results stored yet" in chart.inner_text()
    assert page.locator('[data-testid="variant-exposed"]').all_inner_texts() == ["0", "0"]
    page.screenshot(path=str(tmp_path / "experiment-no-results.png"), full_page=True)


def check_other_tenant_refused(page: Page, site: Site) -> None:
    page.goto(f"{site.url}/dashboard/experiments/{EXPERIMENT}?tenant=brightfix")
    page.wait_for_function("() => document.body.dataset.state === 'error'", timeout=WAIT_MS)
    assert "key acme-viewer is scoped to tenant acme-home" in page.get_by_test_id("error").inner_text()
    assert page.locator(".chart svg").count() == 0
    assert page.locator('[data-testid="variant-row"]').count() == 0
    assert page.get_by_test_id("experiment-state").is_hidden()


def test_experiment_page_shows_the_definition_the_numbers_and_the_effect_over_time(
    site: Site, browser: Browser, tmp_path: Path
) -> None:
    """Reached from the dashboard, the page shows what the API computes, without a CSP violation."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    violations = watch_csp(page)
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(str(e)))

    open_from_dashboard(page, site)
    page.wait_for_selector(
        '[data-testid="effect-chart"][data-metric="delivery_rate"] svg circle', timeout=WAIT_MS
    )
    assert page.evaluate("document.body.dataset.state") == "ok"
    check_definition_and_counts(page, site)
    check_metrics_and_chart(page, site)
    page.screenshot(path=str(tmp_path / "experiment.png"), full_page=True)
    assert (tmp_path / "experiment.png").stat().st_size > 0

    check_no_results_yet(page, site, tmp_path)
    check_other_tenant_refused(page, site)
    assert violations == []
    # The browser logs each refused request (403) as a console error; anything else is a bug.
    assert [e for e in console_errors if "403" not in e] == []


def check_old_local_copy_deleted_unread(page: Page, site: Site) -> None:
    """A key an earlier version left in localStorage is deleted on load and not used."""
    page.goto(f"{site.url}/dashboard?tenant={A}")
    page.evaluate("([k, v]) => localStorage.setItem(k, v)", [KEY_STORE, site.viewer])
    page.reload()
    # The page reads its key after its config (which sets the runbook links): wait for that to be done.
    page.locator('[data-testid="runbook-delivery"][href]').wait_for(state="attached", timeout=WAIT_MS)
    assert stored_keys(page) == {"session": None, "local": None}
    assert page.get_by_test_id("api-key").input_value() == ""
    assert page.get_by_test_id("status").inner_text() == SIGNED_OUT_STATUS
    assert page.get_by_test_id("sign-out").is_disabled()


def check_late_answers_draw_nothing(page: Page) -> None:
    """Sign out while a refresh waits for its answers: when they come, nothing is drawn."""
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    page.route("**/api/v1/**", hold)
    page.get_by_test_id("range-select").select_option("6h")  # refreshes at once
    while len(held) < 10:  # one request per panel, two for alerts (open, resolved): all sent at once
        page.wait_for_timeout(50)
    page.get_by_test_id("sign-out").click()
    for route in held:
        route.continue_()
    page.unroute("**/api/v1/**", hold)
    for route in held:
        response = route.request.response()
        assert response is not None and response.ok
        response.finished()
    page.wait_for_timeout(250)  # for the page to take the answers (drawing nothing is the point)
    check_signed_out(page)


def test_sign_out_forgets_the_key_and_clears_both_pages(site: Site, browser: Browser) -> None:
    """The key is held in sessionStorage only (an old localStorage copy is deleted unread); Sign out
    removes it from both and from the page, and clears every panel, on the dashboard (even with a
    refresh on its way) and on an experiment's page."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    violations = watch_csp(page)
    check_old_local_copy_deleted_unread(page, site)

    page.get_by_test_id("api-key").fill(site.viewer)
    page.get_by_test_id("connect").click()
    page.wait_for_function("() => document.body.dataset.state === 'ok'", timeout=WAIT_MS)
    page.locator('[data-testid="experiment-row"]').first.wait_for(state="visible", timeout=WAIT_MS)
    assert session_key(page) == site.viewer
    check_late_answers_draw_nothing(page)
    tenant = page.get_by_test_id("tenant-select")
    assert tenant.is_disabled() and tenant.locator("option").all_inner_texts() == ["—"]
    assert page.get_by_test_id("provider-select").locator("option").count() == 1
    assert page.get_by_test_id("range-note").inner_text() == ""

    page.goto(f"{site.url}/dashboard/experiments/{EXPERIMENT}?tenant={A}")
    assert page.get_by_test_id("api-key").input_value() == ""  # signed out on the dashboard: no key here
    page.get_by_test_id("api-key").fill(site.viewer)
    page.get_by_test_id("connect").click()
    page.wait_for_selector('[data-testid="effect-chart"] svg circle', timeout=WAIT_MS)
    assert session_key(page) == site.viewer
    page.get_by_test_id("sign-out").click()
    check_signed_out(page)
    assert page.get_by_test_id("experiment-title").inner_text() == EXPERIMENT
    assert page.get_by_test_id("experiment-state").is_hidden()
    assert violations == []

    # The watch would have seen one: an inline style slipped in as markup is refused and reported.
    with page.expect_console_message(lambda m: "style-src" in m.text, timeout=WAIT_MS):
        page.evaluate("document.body.insertAdjacentHTML('beforeend', '<p style=\"color: red\">x</p>')")
    assert violations
