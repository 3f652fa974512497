"""Delivery provider adapters (email over SMTP, SMS over an HTTP JSON API) behind one interface, and
real local provider servers with fault injection (:mod:`providers.local`) for demos, drills and tests.

See ``docs/providers.md``.
"""

from providers.base import (
    ERROR_CLASSES,
    ProviderAdapter,
    SendRequest,
    SendResult,
    classify_http,
    classify_smtp,
    is_retryable,
)

__all__ = [
    "ERROR_CLASSES",
    "ProviderAdapter",
    "SendRequest",
    "SendResult",
    "classify_http",
    "classify_smtp",
    "is_retryable",
]
