"""A real local HTTP SMS provider (aiohttp), Twilio-like, honouring ``Idempotency-Key``, with faults.

``POST /v1/messages`` ``{"to", "body", "tenant"}``: 201 ``{"id", "status": "queued", ...}``. A key seen
before answers 200 with the original message and ``Idempotent-Replayed: true`` (a replay, not a
send); the same key with a different content answers 422 ``idempotency_key_reused``. Faults answer
503 (provider_5xx), 429 with ``Retry-After`` (throttled), 400 ``rejected`` / ``invalid_recipient``,
or never (hang). ``GET /v1/messages/{id}``: ``sent``, then ``delivered`` after ``deliver_after_s``
unless the message was dropped. ``/_control/stats``, ``/_control/messages`` (GET) and
``/_control/faults`` (PUT a fault plan) inspect and steer this provider while it is up; the runner's
control API does the same for every provider, up or down.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from providers.local.common import LocalProvider
from providers.local.faults import FaultPlan

__all__ = ["HTTP_ERRORS", "LocalSmsServer"]

HTTP_ERRORS: dict[str, tuple[int, str]] = {
    "provider_5xx": (503, "Service Unavailable"),
    "throttled": (429, "Too Many Requests: rate limit exceeded"),
    "rejected": (400, "Message rejected by carrier"),
    "invalid_recipient": (400, "The 'To' number is not a valid phone number"),
}


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


class LocalSmsServer(LocalProvider):
    """An HTTP SMS provider on ``host:port``; see the module docstring."""

    channel = "SMS"
    scheme = "http"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._runner: web.AppRunner | None = None
        self._seq = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._post_message)
        app.router.add_get("/v1/messages/{id}", self._get_message)
        app.router.add_get("/_control/stats", self._control_stats)
        app.router.add_get("/_control/messages", self._control_messages)
        app.router.add_put("/_control/faults", self._control_faults)
        return app

    async def _listen(self) -> int:
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.05)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        return int(runner.addresses[0][1])

    async def _close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()  # closes the socket, cancels handlers in progress, drops connections

    def message_id(self, key: str | None) -> str:
        """Deterministic per provider and key (``SM`` + 32 hex), a sequence number without a key."""
        self._seq += 1
        seed = f"{self.name}:{key}" if key is not None else f"{self.name}:#{self._seq}:{time.time_ns()}"
        return "SM" + hashlib.sha256(seed.encode()).hexdigest()[:32]

    async def _post_message(self, request: web.Request) -> web.StreamResponse:
        self.log.requests += 1
        try:
            data = await request.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("to"), str) or not data["to"]:
            return _error(400, "invalid_request", "a JSON object with 'to' and 'body' is required")
        if not isinstance(data.get("body"), str):
            return _error(400, "invalid_request", "'body' must be a string")
        to, body, tenant = data["to"], data["body"], data.get("tenant")
        key = request.headers.get("Idempotency-Key")
        fault = self.injector.next()
        if fault.action == "hang":
            self.log.hung += 1
            await self.wait_stopped()  # the connection is gone by then (stop aborts it)
            return _error(503, "provider_5xx", "stopped")
        if fault.action == "error" and fault.error is not None:
            self.log.failed[fault.error] += 1
            status, message = HTTP_ERRORS.get(fault.error, HTTP_ERRORS["rejected"])
            headers = {"Retry-After": "1"} if status == 429 else {}
            return _error(status, fault.error, message, **headers)
        fingerprint = hashlib.sha256(json.dumps([to, body, tenant]).encode()).hexdigest()[:16]
        now = time.time()
        known = self.log.by_key.get(key) if key else None
        if known is not None:
            if known.fingerprint != fingerprint:
                self.log.conflicts += 1
                return _error(
                    422, "idempotency_key_reused", "this Idempotency-Key was used for another message"
                )
            self.log.replay(known, now)
            return web.json_response(
                self._view(known.message_id), status=200, headers={"Idempotent-Replayed": "true"}
            )
        message_id = self.message_id(key)
        self.log.accept(
            key or message_id, message_id, to, tenant, fingerprint, now, dropped=fault.action == "drop"
        )
        if fault.action == "slow":
            await self.pause(fault.delay_ms / 1000)
        return web.json_response({**self._view(message_id), "status": "queued"}, status=201)

    def _view(self, message_id: str) -> dict[str, Any]:
        record = self.log.by_id[message_id]
        status = record.status(time.time(), self.deliver_after_s)
        return {
            "id": message_id,
            "to": record.recipient,
            "tenant": record.tenant,
            "status": status,
            "created_at": record.first_at,
            "delivered_at": record.delivered_at(self.deliver_after_s) if status == "delivered" else None,
        }

    async def _get_message(self, request: web.Request) -> web.StreamResponse:
        message_id = request.match_info["id"]
        if message_id not in self.log.by_id:
            return _error(404, "not_found", f"no message {message_id}")
        return web.json_response(self._view(message_id))

    async def _control_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.info())

    async def _control_messages(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.messages())

    async def _control_faults(self, request: web.Request) -> web.StreamResponse:
        return await apply_faults(self, request)


async def apply_faults(provider: LocalProvider, request: web.Request) -> web.StreamResponse:
    """PUT a fault plan (JSON) on ``provider``: 200 with the plan, 422 with the problems."""
    try:
        plan = FaultPlan.model_validate_json(await request.read())
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()]
        return web.json_response(
            {"error": {"code": "invalid_faults", "message": "; ".join(problems)}}, status=422
        )
    provider.set_faults(plan)
    return web.json_response(plan.model_dump())
