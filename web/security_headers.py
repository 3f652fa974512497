"""Security headers on every response of the worker's API and pages.

The dashboard pages (web/static) and the runbook pages (web/dashboard.py) load their script and style
from their own files only: no inline ``<script>``, no ``style="…"`` attributes, no event-handler
attributes, no eval. So one strict policy covers every response, and an injected ``<script>`` or
``onerror=`` in data shown on a page (a tenant name, an alert detail) cannot run.

FastAPI's own ``/docs`` and ``/redoc`` pages are the exception: they start from an inline script and
load Swagger UI / ReDoc from a CDN, so they get a policy of their own that allows exactly that, and
nothing else the strict one forbids (no eval, no framing, no plugins).

Pure ASGI rather than Starlette's BaseHTTPMiddleware, which runs the app in a second task and gets in
the way of streamed bodies; the headers are decided by :func:`security_headers` (a function of the
path) and only put on the response here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",  # data: for the pages' empty favicon (<link rel="icon" href="data:,">)
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    )
)

_CDN = "https://cdn.jsdelivr.net"
DOCS_CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        # FastAPI writes the Swagger UI / ReDoc set-up as an inline script and takes both from the CDN;
        # ReDoc's styled components add <style> elements and it searches in a blob: worker.
        f"script-src 'self' 'unsafe-inline' {_CDN}",
        f"style-src 'self' 'unsafe-inline' {_CDN} https://fonts.googleapis.com",
        "font-src 'self' https://fonts.gstatic.com",
        "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    )
)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
"""FastAPI's default docs_url, swagger_ui_oauth2_redirect_url and redoc_url (web.app.create_api keeps
them). These pages render no request data: the inline script they need is FastAPI's own."""

_EVERYWHERE: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)


def security_headers(path: str) -> list[tuple[str, str]]:
    """The headers a response to ``path`` carries.

    >>> dict(security_headers("/api/v1/tenants"))["Cache-Control"]
    'no-store'
    >>> "Cache-Control" in dict(security_headers("/dashboard"))
    False
    """
    policy = DOCS_CONTENT_SECURITY_POLICY if path in DOCS_PATHS else CONTENT_SECURITY_POLICY
    headers = [("Content-Security-Policy", policy), *_EVERYWHERE]
    if path.startswith("/api/") or path == "/sql":
        # Tenant data and query results: no browser or proxy may keep a copy.
        headers.append(("Cache-Control", "no-store"))
    return headers


def with_headers(
    raw: Iterable[tuple[bytes, bytes]], headers: Sequence[tuple[str, str]]
) -> list[tuple[bytes, bytes]]:
    """``raw`` (ASGI response headers) with ``headers`` set: a header of the same name that a route
    set is replaced, so no route can weaken the policy by accident."""
    names = {name.lower().encode("latin-1") for name, _ in headers}
    kept = [(name, value) for name, value in raw if name.lower() not in names]
    return kept + [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


class SecurityHeaders:
    """ASGI middleware: every HTTP response gets :func:`security_headers` of its path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = security_headers(scope["path"])
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": with_headers(message.get("headers", ()), headers)}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # Starlette's ServerErrorMiddleware sits outside every added middleware, so its 500 would
            # leave without these headers. Answer the same 500 here; it then sees a started response
            # and only re-raises, for the server to log.
            if not started:
                await send_with_headers(_INTERNAL_ERROR_START)
                await send_with_headers({"type": "http.response.body", "body": b"Internal Server Error"})
            raise


_INTERNAL_ERROR_START: Message = {
    "type": "http.response.start",
    "status": 500,
    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21")],
}
