"""Checks the e2e tests share about the pages' security: what the Content-Security-Policy blocked."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page

CSP_VIOLATION = "CSP violation:"

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
