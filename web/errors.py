"""Every failed API request leaves one structured log line, and an unhandled error reaches the caller
as a bare 500.

- ``api.unhandled_error`` (error): an exception escaped a route; logged with its traceback (rendered
  without frame locals and redacted, herald/logging.py), answered ``500 Internal Server Error`` with no
  detail. The exception stops here, so the server does not log it a second time.
- ``api.request_failed``: any other answer of status 400 or more (info for 4xx: refused keys, denied
  tenants, bad input are worth counting, not paging; warning for 5xx).

Only the method, the path and the status are logged: never headers (they carry the key) nor the
query string (a client may put a key there).
"""

from __future__ import annotations

import logging

import structlog
from fastapi import FastAPI
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("herald.api")


class ErrorLogging:
    """ASGI middleware: logs failed requests and turns an escaped exception into a plain 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: int | None = None

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        method, path = scope.get("method", ""), scope.get("path", "")
        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            log.error("api.unhandled_error", method=method, path=path, exc_info=exc)
            if status is not None:
                raise  # the answer has begun: nothing can replace it; the server drops the connection
            await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
            return
        if status is not None and status >= 400:
            level = logging.WARNING if status >= 500 else logging.INFO
            log.log(level, "api.request_failed", method=method, path=path, status=status)


def install_error_logging(app: FastAPI) -> None:
    """Log ``app``'s failed requests and hide its unhandled errors behind a plain 500."""
    app.add_middleware(ErrorLogging)
