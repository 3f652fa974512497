"""A real local SMTP server (aiosmtpd on the running event loop) with fault injection and a record.

Each transaction draws one fault at its first RCPT: ``invalid_recipient`` answers that RCPT with
550 5.1.1; the other errors answer the DATA with 451 4.7.1 (throttled), 421 4.3.2 (provider_5xx) or
554 5.7.1 (rejected); ``hang`` never answers the DATA; ``slow`` records the message and answers 250
after the delay; ``drop`` records it as never delivered. Accepted messages are recorded by their
``X-Herald-Idempotency-Key`` header (else their Message-ID); a key sent twice is recorded twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from providers.local.common import LocalProvider
from providers.local.faults import ACCEPT, Fault
from providers.smtp import IDEMPOTENCY_HEADER

__all__ = ["SMTP_REPLIES", "LocalSmtpServer"]

log = structlog.get_logger("herald.providers")
logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every connection at INFO

SMTP_REPLIES = {
    "throttled": "451 4.7.1 Rate limit exceeded, try again later",
    "provider_5xx": "421 4.3.2 Service not available, closing transmission channel",
    "rejected": "554 5.7.1 Message rejected",
    "invalid_recipient": "550 5.1.1 Recipient address rejected: user unknown",
}


class _Smtp(SMTP):
    """aiosmtpd's protocol, registered with its provider while connected (so stop can abort it)."""

    def __init__(self, provider: LocalSmtpServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._provider = provider

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._provider.connections.add(self)
        super().connection_made(transport)
        if self._handler_coroutine is not None:
            self._handler_coroutine.add_done_callback(_connection_ended)

    def connection_lost(self, error: Exception | None) -> None:
        self._provider.connections.discard(self)
        super().connection_lost(error)

    def abort(self) -> None:
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.abort()


def _connection_ended(task: asyncio.Task[None]) -> None:
    """aiosmtpd re-raises a reset connection from its task: expected here (clients time out, stop aborts)."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None and not isinstance(error, ConnectionError):
        log.warning("providers.smtp_connection_failed", error=repr(error))


class _Handler:
    def __init__(self, provider: LocalSmtpServer) -> None:
        self.provider = provider
        self.faults: weakref.WeakKeyDictionary[Envelope, Fault] = weakref.WeakKeyDictionary()

    async def handle_RCPT(  # noqa: N802  (aiosmtpd's hook names)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if envelope not in self.faults:  # the transaction's first recipient: it reached the provider
            self.provider.log.requests += 1
            self.faults[envelope] = self.provider.injector.next()
        fault = self.faults[envelope]
        if fault.action == "error" and fault.error == "invalid_recipient":
            self.provider.log.failed["invalid_recipient"] += 1
            return SMTP_REPLIES["invalid_recipient"]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        provider = self.provider
        fault = self.faults.pop(envelope, ACCEPT)
        if fault.action == "hang":
            provider.log.hung += 1
            await provider.wait_stopped()  # the connection is aborted by then: nobody reads this
            return SMTP_REPLIES["provider_5xx"]
        if fault.action == "error" and fault.error is not None:
            provider.log.failed[fault.error] += 1
            return SMTP_REPLIES.get(fault.error, SMTP_REPLIES["rejected"])
        content = envelope.original_content or (
            envelope.content if isinstance(envelope.content, bytes) else str(envelope.content or "").encode()
        )
        headers = BytesHeaderParser(policy=default_policy).parsebytes(content)
        message_id = str(headers.get("Message-ID") or f"<local-{provider.log.requests}@{provider.name}>")
        key = str(headers.get(IDEMPOTENCY_HEADER) or message_id)
        record = provider.log.accept(
            key,
            message_id,
            envelope.rcpt_tos[0] if envelope.rcpt_tos else "",
            str(headers.get("X-Herald-Tenant")) if headers.get("X-Herald-Tenant") else None,
            hashlib.sha256(content).hexdigest()[:16],
            time.time(),
            dropped=fault.action == "drop",
        )
        if fault.action == "slow":
            await provider.pause(fault.delay_ms / 1000)
        return f"250 2.0.0 OK queued as {record.message_id}"


class LocalSmtpServer(LocalProvider):
    """An SMTP provider on ``host:port``; see the module docstring."""

    channel = "EMAIL"
    scheme = "smtp"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[_Smtp] = set()
        self._server: asyncio.Server | None = None
        self._handler = _Handler(self)

    async def _listen(self) -> int:
        loop = asyncio.get_running_loop()

        def factory() -> _Smtp:
            return _Smtp(
                self,
                handler=self._handler,
                hostname=f"{self.name}.local",
                ident="herald-local-smtp",
                loop=loop,
            )

        self._server = await loop.create_server(factory, self.host, self.port, reuse_address=True)
        return int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()  # no new connections: refused from now on
        for connection in list(self.connections):
            connection.abort()
        self.connections.clear()
        await asyncio.sleep(0)  # let the aborted connections cancel their handlers before they wake up
        await server.wait_closed()
