"""Security headers on the worker's API and pages (web/security_headers.py): every answer of an app built
by create_api carries them (pages, static files, /api/v1, /sql, errors, a crash), the policy lets no
inline or eval'd script run, and the pages it guards need neither."""

from __future__ import annotations

import doctest
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import web.security_headers
from projections.migrate import migrate
from projections.warehouse import Warehouse
from streams.pipeline import IngestTotals
from web.app import create_api
from web.auth import entry_yaml, load_key_ring, new_key
from web.dashboard import RUNBOOK_DIR, STATIC_DIR, render_markdown
from web.security_headers import DOCS_PATHS, security_headers, with_headers

EVERYWHERE = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}
REQUIRED_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "frame-ancestors": ["'none'"],
    "form-action": ["'self'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
}
UNSAFE = {"'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "'wasm-unsafe-eval'", "*", "data:", "blob:"}


def directives(policy: str) -> dict[str, list[str]]:
    """A Content-Security-Policy header as {directive: sources}."""
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        assert name not in parsed, f"{name} given twice"
        parsed[name] = sources
    return parsed


class Site:
    def __init__(self, app: FastAPI, ops_key: str) -> None:
        self.app = app
        self.client = TestClient(app, raise_server_exceptions=False)
        self.ops = {"X-Api-Key": ops_key}

    def answer(self, request: str) -> httpx.Response:
        method, path = request.split(" ", 1)
        if method == "POST":
            return self.client.post(path, json={"query": "SELECT 1 AS one"}, headers=self.ops)
        return self.client.get(path, headers=self.ops)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The worker's app over an empty embedded warehouse, with keys (one global operator key)."""
    root = tmp_path_factory.mktemp("security")
    ops_key, entry = new_key("ops", "*", "operator")
    (root / "keys.yaml").write_text("keys:\n" + entry_yaml(entry))
    warehouse = Warehouse(f"chdb://{root / 'warehouse'}")
    try:
        migrate(warehouse)
        app = create_api(warehouse, IngestTotals, "test", keys=load_key_ring(root / "keys.yaml"))

        @app.get("/crash", include_in_schema=False)
        def crash() -> None:
            raise RuntimeError("a bug")

        yield Site(app, ops_key)
    finally:
        warehouse.close()


ANSWERS = {
    "GET /health": 200,
    "GET /dashboard": 200,
    "GET /dashboard/experiments/reminder-copy": 200,
    "GET /dashboard/static/common.js": 200,
    "GET /dashboard/static/dashboard.css": 200,
    "GET /dashboard/config.json": 200,
    "GET /dashboard/docs/runbooks/README.md": 200,
    "GET /api/v1/tenants": 200,
    "GET /api/v1/tenants/acme-home/delivery?bucket=fortnight": 422,
    "POST /sql": 200,
    "GET /metrics": 200,
    "GET /openapi.json": 200,
    "GET /no-such-page": 404,
    "GET /crash": 500,
}


@pytest.mark.integration
@pytest.mark.parametrize("request_line", list(ANSWERS))
def test_every_answer_carries_the_security_headers(site: Site, request_line: str) -> None:
    """Pages, static files, API answers, /sql, errors and a crash all carry the policy and the others."""
    response = site.answer(request_line)
    assert response.status_code == ANSWERS[request_line], response.text
    for name, value in EVERYWHERE.items():
        assert response.headers.get_list(name) == [value], name
    policy = directives(response.headers["content-security-policy"])
    for name, sources in REQUIRED_CSP.items():
        assert policy[name] == sources, name


@pytest.mark.integration
def test_api_key_routes_without_a_key_are_refused_with_the_headers(site: Site) -> None:
    """A 401 from /api/v1 (no key) is not cached either."""
    response = site.client.get("/api/v1/tenants")
    assert response.status_code == 401
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.integration
@pytest.mark.parametrize("request_line", [r for r in ANSWERS if r.split()[1].startswith(("/api/", "/sql"))])
def test_api_and_sql_answers_are_never_stored(site: Site, request_line: str) -> None:
    """Tenant data and query results carry Cache-Control: no-store, once."""
    assert site.answer(request_line).headers.get_list("cache-control") == ["no-store"]


@pytest.mark.integration
@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/static/dashboard.js", "/health"])
def test_pages_and_static_files_leave_caching_alone(site: Site, path: str) -> None:
    """no-store is for data: the page and its scripts may still be cached (they hold no tenant data)."""
    assert "no-store" not in site.client.get(path).headers.get("cache-control", "")


@pytest.mark.integration
def test_script_src_allows_neither_inline_script_nor_eval(site: Site) -> None:
    """The policy on a page lets only the site's own script files run."""
    policy = directives(site.client.get("/dashboard").headers["content-security-policy"])
    assert policy["script-src"] == ["'self'"]
    assert not UNSAFE & set(policy["script-src"] + policy["default-src"] + policy["style-src"])
    assert "'unsafe-inline'" not in site.client.get("/health").headers["content-security-policy"]


@pytest.mark.integration
@pytest.mark.parametrize("path", sorted(DOCS_PATHS))
def test_fastapi_docs_pages_get_a_policy_for_their_cdn_and_nothing_more(site: Site, path: str) -> None:
    """/docs and /redoc may run FastAPI's inline set-up and the CDN's Swagger UI or ReDoc, but still no
    eval, no plugins, no framing, no <base>, and only same-origin requests."""
    response = site.client.get(path)
    assert response.status_code == 200
    policy = directives(response.headers["content-security-policy"])
    assert policy["script-src"] == ["'self'", "'unsafe-inline'", "https://cdn.jsdelivr.net"]
    assert "'unsafe-eval'" not in response.headers["content-security-policy"]
    for name in ("object-src", "base-uri", "frame-ancestors", "form-action", "connect-src", "default-src"):
        assert policy[name] == REQUIRED_CSP[name], name
    assert response.headers["x-frame-options"] == "DENY"


def test_only_the_docs_paths_get_the_docs_policy() -> None:
    """A path that merely starts like a docs page gets the strict policy."""
    strict = dict(security_headers("/dashboard"))["Content-Security-Policy"]
    for path in ("/docs/", "/docs/../dashboard", "/redoc/x", "/docsx", "/dashboard/docs/runbooks/README.md"):
        assert dict(security_headers(path))["Content-Security-Policy"] == strict, path


def test_cache_control_is_set_only_under_api_and_on_sql() -> None:
    """/api/… and /sql: no-store; /apix, /sqlx, /dashboard: nothing."""
    paths = ("/api/v1/x", "/sql", "/apix", "/sqlx", "/dashboard")
    stored = {p: "Cache-Control" in dict(security_headers(p)) for p in paths}
    assert stored == {"/api/v1/x": True, "/sql": True, "/apix": False, "/sqlx": False, "/dashboard": False}


def test_a_header_a_route_set_is_replaced_not_doubled() -> None:
    """A route's own Cache-Control or X-Frame-Options (any case) gives way to the middleware's."""
    raw = [
        (b"content-type", b"application/json"),
        (b"Cache-Control", b"max-age=600"),
        (b"x-frame-options", b"x"),
    ]
    merged = with_headers(raw, security_headers("/api/v1/tenants"))
    names = [name for name, _ in merged]
    assert len(names) == len(set(names))
    assert dict(merged)[b"cache-control"] == b"no-store"
    assert dict(merged)[b"x-frame-options"] == b"DENY"
    assert dict(merged)[b"content-type"] == b"application/json"


def test_module_doctests_pass() -> None:
    """The examples in web/security_headers.py hold."""
    assert doctest.testmod(web.security_headers).failed == 0


# ---------------------------------------------------------------- the pages need nothing the policy forbids


class _InlineFinder(HTMLParser):
    """Inline script and style in a page: what script-src/style-src 'self' would block."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script" and not named.get("src"):
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style> block")
        for name, value in attrs:
            if name == "style":
                self.found.append(f"style attribute on <{tag}>")
            if name.startswith("on"):
                self.found.append(f"{name} attribute on <{tag}>")
            if (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"javascript: URL in {name} of <{tag}>")


def inline_code(page: str) -> list[str]:
    finder = _InlineFinder()
    finder.feed(page)
    return finder.found


PAGES = sorted(STATIC_DIR.glob("*.html"))
SCRIPTS = sorted(STATIC_DIR.glob("*.js"))
# What builds markup or code from strings: innerHTML and friends would carry style="…" and on…= past
# the policy's intent (and are the XSS sink); eval and its relatives are blocked by script-src 'self'.
STRING_SINKS = re.compile(
    r"\binnerHTML\b|\bouterHTML\b|insertAdjacentHTML|document\.write|\beval\s*\(|new\s+Function\b"
    r"|set(?:Timeout|Interval)\s*\(\s*[\"'`]|setAttribute\(\s*[\"']style|setAttribute\(\s*[\"']on"
    r"|javascript:"
)


def test_inline_finder_sees_what_it_looks_for() -> None:
    """The check below would notice inline script, style and handlers."""
    page = '<script>x()</script><style>p{}</style><p style="a" onclick="b"><a href=" JavaScript:c">d</a>'
    assert len(inline_code(page)) == 5


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_static_pages_have_no_inline_script_or_style(page: Path) -> None:
    """Every page in web/static loads its script and style from files."""
    assert PAGES and inline_code(page.read_text(encoding="utf-8")) == []


def test_runbook_pages_have_no_inline_script_or_style() -> None:
    """The runbook pages web/dashboard.py renders link the dashboard's stylesheet and nothing inline."""
    page = render_markdown((RUNBOOK_DIR / "README.md").read_text(encoding="utf-8"), title="README.md")
    assert inline_code(page) == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_build_no_markup_or_code_from_strings(script: Path) -> None:
    """The pages' scripts build the DOM node by node: no eval, no string timers, no inline handlers."""
    lines = script.read_text(encoding="utf-8").splitlines()
    code = [(n, line) for n, line in enumerate(lines, 1) if not line.lstrip().startswith(("//", "/*", "*"))]
    found = [f"{script.name}:{n}: {line.strip()}" for n, line in code if STRING_SINKS.search(line)]
    assert SCRIPTS and found == []
