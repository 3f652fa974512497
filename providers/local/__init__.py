"""Real local delivery providers for demos, drills and tests: two SMTP servers (aiosmtpd) and two HTTP
SMS APIs (aiohttp), each with a runtime-changeable :class:`FaultPlan` and a record of every accepted
message by idempotency key, behind one control API. See ``docs/providers.md``.
"""

from providers.local.faults import FaultInjector, FaultPlan
from providers.local.process import LocalProvidersProcess, ProvidersControl
from providers.local.run import DEFAULT_PROVIDERS, LocalProviders, adapters_for

__all__ = [
    "DEFAULT_PROVIDERS",
    "FaultInjector",
    "FaultPlan",
    "LocalProviders",
    "LocalProvidersProcess",
    "ProvidersControl",
    "adapters_for",
]
