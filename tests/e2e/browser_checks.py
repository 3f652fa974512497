"""Checks the e2e tests share about the pages' security: what the Content-Security-Policy blocked, where
the API key is kept, and what a signed-out page still shows."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page

KEY_STORE = "herald.apiKey"  # web/static/common.js
CSP_VIOLATION = "CSP violation:"
SIGNED_OUT_STATUS = "Paste an API key to start."
NO_VALUE = "\u2013"  # the en dash the pages show where a number is unknown

# Installed before any of the page's own script (Playwright's init scripts are not subject to the page's
# policy). Chromium also logs each refusal to the console ("… violates the following Content Security
# Policy directive …"); the event catches what is reported without a log line (report-only, eval).
_REPORTER = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`CSP violation: ${e.effectiveDirective} blocked ${e.blockedURI || "inline"} `
    + `at ${e.sourceFile || "?"}:${e.lineNumber} ${e.sample || ""}`);
});
"""


def watch_csp(page: Page) -> list[str]:
    """From now on, every CSP violation on ``page`` (across navigations) is appended to the returned list."""
    seen: list[str] = []
    page.add_init_script(_REPORTER)

    def note(message: Any) -> None:
        if CSP_VIOLATION in message.text or "Content Security Policy" in message.text:
            seen.append(message.text)

    page.on("console", note)
    return seen


def stored_keys(page: Page) -> dict[str, str | None]:
    """The API key as the page's origin holds it: for this tab (session) and for good (local)."""
    return page.evaluate(
        "k => ({session: sessionStorage.getItem(k), local: localStorage.getItem(k)})", KEY_STORE
    )


def session_key(page: Page) -> str:
    """The key the page holds for this tab; the tests use it for their own fetches from the page."""
    keys = stored_keys(page)
    assert keys["session"] and keys["local"] is None, keys
    return keys["session"]


def check_signed_out(page: Page) -> None:
    """The key is gone from both storages and the input, the page is back to its first state, and no
    panel keeps a number, a chart, a row or a note from before."""
    assert stored_keys(page) == {"session": None, "local": None}
    assert page.get_by_test_id("api-key").input_value() == ""
    assert page.get_by_test_id("status").inner_text() == SIGNED_OUT_STATUS
    assert page.get_by_test_id("sign-out").is_disabled()
    assert page.get_by_test_id("error").is_hidden()
    assert page.evaluate("document.body.dataset.state") == "signed-out"
    assert page.locator(".chart svg").count() == 0
    assert page.locator("tbody tr").count() == 0
    filled = ".panel-note, .clear-on-error, .sla-list, .budget-list, .metric-list"
    leftovers = page.locator(filled).evaluate_all("ns => ns.map(n => n.textContent.trim()).filter(Boolean)")
    assert leftovers == []
    values = page.locator(".kpi-value").evaluate_all("ns => ns.map(n => [n.textContent, n.dataset.value])")
    assert all(v == [NO_VALUE, None] for v in values), values
    panels = page.locator("section.panel")
    assert panels.count() > 0
    assert panels.evaluate_all("ps => ps.every(p => !p.querySelector('.panel-msg').hidden)")
