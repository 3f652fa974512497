"""The provider interface: one request, one result, and the pure mapping of transport errors to classes.

An adapter turns a :class:`SendRequest` into a :class:`SendResult`. Provider-side failures (refused
connections, timeouts, error replies) are results, never exceptions, so a dispatcher can record every
outcome as a lifecycle event: ``SENT`` when accepted, ``FAILED`` with :meth:`SendResult.error_record`
otherwise. Error classes are the simulator's (:data:`simulator.model.ERRORS`) plus ``unavailable``:

===================  =========  ===============================================================
class                retryable  meaning
===================  =========  ===============================================================
timeout              yes        no answer in time; the provider may still have accepted it
provider_5xx         yes        the provider failed (HTTP 5xx, SMTP 421 / 4.3.x)
throttled            yes        rate limited (HTTP 429, other SMTP 4xx)
unavailable          yes        connection refused or dropped: the provider is down
rejected             no         refused for good (HTTP 4xx, SMTP 5xx)
invalid_recipient    no         the address does not exist (SMTP 550/551/553 at RCPT or 5.1.x)
===================  =========  ===============================================================

>>> classify_http(503, None)
('provider_5xx', True)
>>> classify_smtp(550, "5.1.1 user unknown", "rcpt")
('invalid_recipient', False)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from schemas.bounds import ERROR_CODE_MAX_CHARS, ERROR_MESSAGE_MAX_CHARS
from simulator.model import ERRORS

__all__ = [
    "ERROR_CLASSES",
    "Channel",
    "ErrorClass",
    "ProviderAdapter",
    "SendRequest",
    "SendResult",
    "SmtpStage",
    "classify_http",
    "classify_smtp",
    "is_retryable",
    "message_id_for",
]

Channel = Literal["EMAIL", "SMS"]
ErrorClass = Literal["timeout", "provider_5xx", "throttled", "unavailable", "rejected", "invalid_recipient"]
SmtpStage = Literal["connect", "helo", "mail", "rcpt", "data"]

# retryable per class: the simulator's table plus `unavailable` (the provider is down: later or elsewhere)
ERROR_CLASSES: dict[str, bool] = {
    **{
        name: ERRORS[name][2]
        for name in ("timeout", "provider_5xx", "throttled", "rejected", "invalid_recipient")
    },
    "unavailable": True,
}

# what an HTTP SMS API puts in its error body for a recipient that does not exist (ours, Twilio's codes)
_INVALID_RECIPIENT_CODES = frozenset({"invalid_recipient", "21211", "21614"})
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def is_retryable(error_class: str) -> bool:
    """Whether a failure of ``error_class`` may succeed when tried again (unknown classes: no)."""
    return ERROR_CLASSES.get(error_class, False)


def message_id_for(idempotency_key: str) -> str:
    """The deterministic RFC 5322 Message-ID of a send: ``<{key}@herald>`` (a hash if the key has odd chars).

    >>> message_id_for("n-123"), message_id_for("a b")[:9]
    ('<n-123@herald>', '<k-c8687a')
    """
    if _SAFE_KEY.match(idempotency_key):
        return f"<{idempotency_key}@herald>"
    return f"<k-{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}@herald>"


@dataclass(frozen=True, slots=True)
class SendRequest:
    """One attempt to send one notification.

    ``idempotency_key`` is stable over the attempt chain of a notification (its id): retries and
    failovers of the same notification carry the same key, so a provider that honours it sends once,
    and the local servers can count what was sent twice.
    """

    idempotency_key: str
    tenant_id: str
    channel: Channel
    recipient: str  # pseudonymous address: an email address or a phone-number-like string, never PII
    template_id: str
    template_version: int
    body: str
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.idempotency_key or any(c in self.idempotency_key for c in "\r\n"):
            raise ValueError(f"idempotency_key must be a non-empty single line, got {self.idempotency_key!r}")
        if self.channel not in ("EMAIL", "SMS"):
            raise ValueError(f"channel must be EMAIL or SMS, got {self.channel!r}")
        if not self.recipient:
            raise ValueError("recipient must not be empty")


@dataclass(frozen=True, slots=True)
class SendResult:
    """What a provider did with a :class:`SendRequest`.

    ``accepted`` means the provider took responsibility for the message (SMTP 250, HTTP 200/201);
    delivery is a later, separate outcome. ``code`` is the provider's own reply code when it gave one.
    """

    provider: str
    accepted: bool
    provider_message_id: str | None
    error_class: str | None
    retryable: bool
    latency_ms: int
    detail: str = ""
    code: str | None = None

    @property
    def event_type(self) -> Literal["SENT", "FAILED"]:
        """The lifecycle event this outcome becomes."""
        return "SENT" if self.accepted else "FAILED"

    def error_record(self) -> dict[str, Any] | None:
        """The contract's ``DeliveryError`` record of a failure (None when accepted). A provider's code
        and reply are cut to the contract's bounds (schemas/bounds.py): a long reply still makes a
        FAILED event, not one the emitter refuses.

        >>> SendResult("sms-primary", False, None, "throttled", True, 12, "slow down", "429").error_record()
        {'error_class': 'throttled', 'code': '429', 'message': 'slow down', 'retryable': True}
        """
        if self.accepted or self.error_class is None:
            return None
        return {
            "error_class": self.error_class,
            "code": self.code[:ERROR_CODE_MAX_CHARS] if self.code is not None else None,
            "message": self.detail[:ERROR_MESSAGE_MAX_CHARS] or None,
            "retryable": self.retryable,
        }


@runtime_checkable
class ProviderAdapter(Protocol):
    """A delivery provider. ``send`` never raises for provider-side failures: they are results."""

    @property
    def name(self) -> str: ...

    @property
    def channel(self) -> Channel: ...

    async def send(self, req: SendRequest) -> SendResult: ...

    async def aclose(self) -> None: ...


def classify_http(status: int, error_code: str | int | None) -> tuple[str | None, bool]:
    """(error class or None when accepted, retryable) of an HTTP SMS API answer.

    ``error_code`` is the ``error.code`` of the JSON error body when there is one.

    >>> classify_http(201, None), classify_http(429, None), classify_http(400, "invalid_recipient")
    ((None, False), ('throttled', True), ('invalid_recipient', False))
    """
    if 200 <= status < 300:
        return None, False
    if status == 429:
        error_class = "throttled"
    elif status == 408:
        error_class = "timeout"
    elif status >= 500:
        error_class = "provider_5xx"
    elif 400 <= status < 500 and str(error_code) in _INVALID_RECIPIENT_CODES:
        error_class = "invalid_recipient"
    else:  # other 4xx, and an unexpected 1xx/3xx: the request will not succeed as it is
        error_class = "rejected"
    return error_class, is_retryable(error_class)


def classify_smtp(code: int, message: str, stage: SmtpStage) -> tuple[str | None, bool]:
    """(error class or None when accepted, retryable) of an SMTP reply ``code`` at ``stage``.

    421 (service not available) and enhanced status 4.3.x are provider failures; other 4xx are
    transient (throttled); 550/551/553 to RCPT, or any 5.1.x, is an unknown recipient; other 5xx
    are permanent rejections.

    >>> classify_smtp(451, "4.7.1 try later", "data"), classify_smtp(421, "4.3.2 down", "connect")
    (('throttled', True), ('provider_5xx', True))
    >>> classify_smtp(554, "5.7.1 spam", "data"), classify_smtp(550, "5.1.1 no such user", "data")
    (('rejected', False), ('invalid_recipient', False))
    """
    if code < 400:
        return None, False
    enhanced = _ENHANCED.match(message or "")
    subject = enhanced.group(2) if enhanced else None
    if code < 500:
        error_class = "provider_5xx" if code == 421 or subject == "3" else "throttled"
    elif (stage == "rcpt" and code in (550, 551, 553)) or (stage in ("rcpt", "data") and subject == "1"):
        error_class = "invalid_recipient"
    else:
        error_class = "rejected"
    return error_class, is_retryable(error_class)
