"""Email over SMTP (aiosmtplib): one connection per message, outcomes as :class:`SendResult`.

The Message-ID is derived from the idempotency key (``<{key}@herald>``) and the key itself travels in
``X-Herald-Idempotency-Key``: a receiving system (and the local SMTP servers) can recognise a message
sent twice. SMTP has no idempotency of its own, so a timeout after the server accepted the data and a
retry do deliver twice; the drill counts that.
"""

from __future__ import annotations

import asyncio
import time
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from providers.base import Channel, SendRequest, SendResult, SmtpStage, classify_smtp, message_id_for

__all__ = ["IDEMPOTENCY_HEADER", "SmtpAdapter", "classify_smtp_error"]

IDEMPOTENCY_HEADER = "X-Herald-Idempotency-Key"


def _stage(exc: aiosmtplib.SMTPResponseException) -> SmtpStage:
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return "rcpt"
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return "mail"
    if isinstance(exc, aiosmtplib.SMTPHeloError):
        return "helo"
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return "connect"
    return "data"


def classify_smtp_error(exc: BaseException) -> tuple[str, bool, str | None, str] | None:
    """(error class, retryable, reply code, detail) of an exception from an SMTP exchange.

    None for an exception that is not a provider-side failure (a bug: the caller re-raises it).

    >>> classify_smtp_error(aiosmtplib.SMTPDataError(451, "4.7.1 Rate limit exceeded"))
    ('throttled', True, '451', '451 4.7.1 Rate limit exceeded')
    >>> classify_smtp_error(aiosmtplib.SMTPConnectError("Error connecting to 127.0.0.1 on port 1"))[:2]
    ('unavailable', True)
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, TimeoutError):  # aiosmtplib's read/connect timeouts, and our overall deadline
        return "timeout", True, None, f"no answer within the timeout ({type(exc).__name__})"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        error_class, retryable = classify_smtp(exc.code, exc.message, _stage(exc))
        if error_class is None:  # an odd exception with a success code: treat the reply as refused
            error_class, retryable = "rejected", False
        return error_class, retryable, str(exc.code), f"{exc.code} {exc.message}".strip()
    if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPServerDisconnected | ConnectionError):
        return "unavailable", True, None, str(exc) or type(exc).__name__
    if isinstance(exc, aiosmtplib.SMTPException):  # e.g. an extension the server does not support
        return "rejected", False, None, str(exc) or type(exc).__name__
    if isinstance(exc, OSError):  # unreachable network, reset, ...
        return "unavailable", True, None, str(exc) or type(exc).__name__
    return None


async def _quit(client: aiosmtplib.SMTP, timeout_s: float) -> None:
    """QUIT after an accepted message; the message is the server's whatever the QUIT does."""
    try:
        async with asyncio.timeout(timeout_s):
            await client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        pass
    finally:
        client.close()


class SmtpAdapter:
    """Sends :class:`SendRequest` s of channel EMAIL to one SMTP server (plain SMTP, no auth)."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        timeout_s: float = 10.0,
        sender: str = "notifications@herald.test",
        local_hostname: str = "herald.local",
    ) -> None:
        self._name = name
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.sender = sender
        self.local_hostname = local_hostname  # avoids a reverse DNS look-up per connection

    def __repr__(self) -> str:
        return f"SmtpAdapter({self._name!r}, {self.host!r}, {self.port})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def channel(self) -> Channel:
        return "EMAIL"

    def build_message(self, req: SendRequest) -> EmailMessage:
        """The RFC 5322 message of a request (deterministic but for the Date header)."""
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = req.recipient
        msg["Subject"] = req.metadata.get("subject", f"{req.template_id} v{req.template_version}")
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = message_id_for(req.idempotency_key)
        msg[IDEMPOTENCY_HEADER] = req.idempotency_key
        msg["X-Herald-Tenant"] = req.tenant_id
        msg["X-Herald-Template"] = f"{req.template_id}/{req.template_version}"
        msg.set_content(req.body)
        return msg

    async def send(self, req: SendRequest) -> SendResult:
        if req.channel != "EMAIL":
            raise ValueError(f"{self._name} sends EMAIL, not {req.channel}")
        msg = self.build_message(req)
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout_s,
            use_tls=False,
            start_tls=False,
            local_hostname=self.local_hostname,
        )
        started = time.monotonic()
        try:
            # one deadline for the whole exchange; on failure the connection is dropped, not QUIT
            # politely (aiosmtplib's own clean-up would wait for a QUIT answer a hung server never gives)
            async with asyncio.timeout(self.timeout_s):
                await client.connect()
                await client.send_message(msg, sender=self.sender, recipients=[req.recipient])
        except Exception as exc:
            client.close()
            latency_ms = round((time.monotonic() - started) * 1000)
            classified = classify_smtp_error(exc)
            if classified is None:
                raise
            error_class, retryable, code, detail = classified
            return SendResult(self._name, False, None, error_class, retryable, latency_ms, detail, code)
        except BaseException:  # cancelled: leave nothing open
            client.close()
            raise
        latency_ms = round((time.monotonic() - started) * 1000)
        await _quit(client, self.timeout_s)
        return SendResult(self._name, True, msg["Message-ID"], None, False, latency_ms, "250 accepted", "250")

    async def aclose(self) -> None:
        """Nothing to release: a connection lives for one message."""
