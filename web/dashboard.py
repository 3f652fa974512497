"""The delivery dashboard: one static page (HTML, vanilla JS, CSS; charts drawn as inline SVG) over the
/api/v1 analytics API, plus the panel -> runbook mapping it links, and one page per experiment
(``/dashboard/experiments/{id}?tenant=…``, linked from the dashboard's experiments panel): its
definition, per-variant counts, every metric against the control and the effect over time. Both pages
share web/static/common.js (API client, formats, the SVG line chart).

Loading the page needs no key; the page asks for one and sends it as ``X-Api-Key`` to /api/v1, which
does every access check. Runbook links come from ``analytics.runbooks`` (the same keys as alerts and
the Grafana dashboards). By default they point at this router's own read-only rendering of
``docs/runbooks/`` so they open offline, next to the dashboard; pass ``runbook_base_url`` (a docs site
or the repository's blob root) to link there instead.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from analytics.runbooks import RUNBOOKS, runbook_url

STATIC_DIR = Path(__file__).parent / "static"
RUNBOOK_DIR = Path(__file__).resolve().parents[1] / "docs" / "runbooks"
LOCAL_RUNBOOK_BASE = "/dashboard/"
"""runbook_url(key, LOCAL_RUNBOOK_BASE) = /dashboard/docs/runbooks/<page>.md#<anchor>, served below."""

INDEX_SECTIONS: dict[str, str] = {
    "index.alerts": "docs/runbooks/README.md#alerts",
    "index.experiments": "docs/runbooks/README.md#experiments",
}
"""Sections of the runbook index a panel may link instead of one alert's runbook, keyed like RUNBOOKS."""

PANEL_RUNBOOKS: dict[str, str] = {
    "alerts": "index.alerts",  # lists every kind of alert: the index section, each row links its own
    "delivery": "delivery_rate.drop",
    "engagement": "open_rate.drop",
    "latency": "latency_p95.spike",
    "providers": "provider.error_rate_high",
    "sla": "sla.breach",
    "failover": "provider.outage",  # a provider's breaker opened: where its traffic went, and why
    "budgets": "budget.exhausted",
    "experiments": "index.experiments",  # no alert of its own: what to check on an experiment's page
}
"""Dashboard panel -> RUNBOOKS key of the alert that most often sends on-call to that panel, or an
INDEX_SECTIONS key."""

REFRESH_S = 10
_STATIC_FILES = {
    "common.js": "text/javascript",
    "dashboard.js": "text/javascript",
    "experiment.js": "text/javascript",
    "dashboard.css": "text/css",
}
_PAGE_NAME = re.compile(r"^[A-Za-z0-9_\-]+\.md$")


def dashboard_router(runbook_base_url: str = LOCAL_RUNBOOK_BASE) -> APIRouter:
    """``GET /dashboard`` (the page), ``/dashboard/experiments/{id}`` (an experiment's page), their static
    files, ``/dashboard/config.json`` and the runbooks."""
    router = APIRouter(prefix="/dashboard", tags=["dashboard"])
    config = {
        "refresh_s": REFRESH_S,
        "runbooks": {
            panel: {"key": key, "url": panel_runbook_url(key, runbook_base_url)}
            for panel, key in PANEL_RUNBOOKS.items()
        },
    }

    @router.get("", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html")

    @router.get("/experiments/{experiment_id}", include_in_schema=False)
    def experiment_page(experiment_id: str) -> FileResponse:
        # The same page for every id: its script reads the id from the path and asks the API, which
        # does every check (and says why it refuses).
        return FileResponse(STATIC_DIR / "experiment.html", media_type="text/html")

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        media_type = _STATIC_FILES.get(name)
        if media_type is None:  # a fixed list: no path from the request ever reaches the filesystem
            raise HTTPException(status_code=404, detail=f"no static file {name!r}")
        return FileResponse(STATIC_DIR / name, media_type=media_type)

    @router.get("/config.json", summary="Dashboard settings: refresh interval, panel runbook links")
    def dashboard_config() -> dict[str, Any]:
        return config

    @router.get("/docs/runbooks/{name}", response_class=HTMLResponse, include_in_schema=False)
    def runbook(name: str) -> str:
        known = {p.split("#")[0].rsplit("/", 1)[-1] for p in RUNBOOKS.values()} | {"README.md"}
        path = RUNBOOK_DIR / name
        if not _PAGE_NAME.match(name) or name not in known or not path.is_file():
            raise HTTPException(status_code=404, detail=f"no runbook page {name!r}")
        return render_markdown(path.read_text(encoding="utf-8"), title=name)

    return router


def panel_runbook_url(key: str, base_url: str) -> str:
    """The URL a panel links: an index section's, else the alert runbook's (runbook_url).

    >>> panel_runbook_url("index.alerts", "/dashboard/")
    '/dashboard/docs/runbooks/README.md#alerts'
    """
    if key in INDEX_SECTIONS:
        return f"{base_url.rstrip('/')}/{INDEX_SECTIONS[key]}"
    return runbook_url(key, base_url)


def heading_anchor(text: str) -> str:
    """The GitHub-style anchor of a heading, the form RUNBOOKS links use.

    >>> heading_anchor("Failure or bounce rate drop")
    'failure-or-bounce-rate-drop'
    >>> heading_anchor("Latency p95 spike (send / delivery)")
    'latency-p95-spike-send--delivery'
    """
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def render_markdown(text: str, title: str) -> str:
    """A runbook as a readable HTML page: headings get their anchors, the rest stays preformatted (the
    runbooks are mostly SQL blocks and short lists, which read fine as-is)."""
    out: list[str] = []
    block: list[str] = []

    def close_block() -> None:
        if any(line.strip() for line in block):
            out.append("<pre>" + html.escape("\n".join(block).strip("\n")) + "</pre>")
        block.clear()

    for line in text.splitlines():
        heading = re.match(r"^(#{1,6})\s+(.*)$", line)
        if heading and not _inside_fence(block):
            close_block()
            level, label = len(heading.group(1)), heading.group(2).strip()
            out.append(f'<h{level} id="{heading_anchor(label)}">{html.escape(label)}</h{level}>')
        else:
            block.append(line)
    close_block()
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} · Herald runbooks</title>"
        '<link rel="stylesheet" href="/dashboard/static/dashboard.css"></head>'
        '<body class="runbook"><main>' + "\n".join(out) + "</main></body></html>"
    )


def _inside_fence(lines: list[str]) -> bool:
    """Whether an unclosed ``` fence is open (a ``#`` comment inside SQL/shell is not a heading)."""
    return sum(1 for line in lines if line.lstrip().startswith("```")) % 2 == 1
