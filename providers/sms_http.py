"""SMS over a Twilio-like HTTP JSON API (aiohttp), outcomes as :class:`SendResult`.

``POST {base}/v1/messages`` with ``{"to", "body", "tenant"}`` and an ``Idempotency-Key`` header: a
provider that honours it answers a repeated key with the original message instead of sending again.
``GET {base}/v1/messages/{id}`` reads the delivery status (``queued``, ``sent``, ``delivered``,
``failed``) for receipts by polling.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal, cast

import aiohttp

from providers.base import Channel, SendRequest, SendResult, classify_http

__all__ = ["HttpSmsAdapter", "MessageStatus", "classify_http_error"]

MessageStatus = Literal["queued", "sent", "delivered", "failed", "unknown"]
_STATUSES = frozenset({"queued", "sent", "delivered", "failed"})


def classify_http_error(exc: BaseException) -> tuple[str, bool, str] | None:
    """(error class, retryable, detail) of an exception from an HTTP exchange; None for a bug.

    >>> classify_http_error(TimeoutError())[:2], classify_http_error(aiohttp.ServerDisconnectedError())[:2]
    (('timeout', True), ('unavailable', True))
    """
    if isinstance(exc, TimeoutError):  # aiohttp's connect/read timeouts are TimeoutErrors too
        return "timeout", True, f"no answer within the timeout ({type(exc).__name__})"
    if isinstance(exc, aiohttp.ClientResponseError):  # a malformed answer
        return "provider_5xx", True, f"bad response: {exc.message}"
    if isinstance(exc, aiohttp.ClientError | ConnectionError):  # refused, reset, disconnected mid-answer
        return "unavailable", True, str(exc) or type(exc).__name__
    return None


def _error_code(payload: Any) -> str | int | None:
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            return code if isinstance(code, str | int) else None
        code = payload.get("code")  # Twilio puts it at the top level
        return code if isinstance(code, str | int) else None
    return None


class HttpSmsAdapter:
    """Sends :class:`SendRequest` s of channel SMS to one HTTP SMS API; one pooled session."""

    def __init__(self, name: str, base_url: str, timeout_s: float = 10.0) -> None:
        self._name = name
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"HttpSmsAdapter({self._name!r}, {self.base_url!r})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def channel(self) -> Channel:
        return "SMS"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self._session

    async def send(self, req: SendRequest) -> SendResult:
        if req.channel != "SMS":
            raise ValueError(f"{self._name} sends SMS, not {req.channel}")
        body = {"to": req.recipient, "body": req.body, "tenant": req.tenant_id}
        headers = {"Idempotency-Key": req.idempotency_key}
        started = time.monotonic()
        try:
            async with self._client().post(
                f"{self.base_url}/v1/messages", json=body, headers=headers
            ) as resp:
                status = resp.status
                text = await resp.text()
                payload = _json(text, resp.content_type)
        except Exception as exc:
            latency_ms = round((time.monotonic() - started) * 1000)
            classified = classify_http_error(exc)
            if classified is None:
                raise
            failure, retryable, detail = classified
            return SendResult(self._name, False, None, failure, retryable, latency_ms, detail)
        latency_ms = round((time.monotonic() - started) * 1000)
        error_class, retryable = classify_http(status, _error_code(payload))
        if error_class is None:
            message_id = payload.get("id") if isinstance(payload, dict) else None
            if isinstance(message_id, str) and message_id:
                return SendResult(
                    self._name, True, message_id, None, False, latency_ms, f"{status}", str(status)
                )
            error_class, retryable = "provider_5xx", True  # 2xx without a message id: not an acceptance
            text = f"no message id in the answer: {text[:200]}"
        return SendResult(
            self._name, False, None, error_class, retryable, latency_ms, _detail(payload, text), str(status)
        )

    async def status(self, message_id: str) -> MessageStatus | None:
        """The delivery status of ``message_id``: ``unknown`` if the provider does not know it, None if
        it could not answer (down, timeout, 5xx): ask again later."""
        try:
            async with self._client().get(f"{self.base_url}/v1/messages/{message_id}") as resp:
                if resp.status == 404:
                    return "unknown"
                if resp.status != 200:
                    return None
                payload = _json(await resp.text(), resp.content_type)
        except Exception as exc:
            if classify_http_error(exc) is None:
                raise
            return None
        status = payload.get("status") if isinstance(payload, dict) else None
        return cast(MessageStatus, status) if status in _STATUSES else None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _json(text: str, content_type: str) -> Any:
    if "json" not in content_type:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _detail(payload: Any, text: str) -> str:
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(payload.get("message"), str):
            return str(payload["message"])
    return text[:200]
