"""Fault plans of the local provider servers: what a provider does to each request, seeded, changeable.

A :class:`FaultPlan` has one ``mode``; every mode but ``ok`` hits a share ``p`` of the requests (1 by
default: all of them), chosen by a RNG seeded with ``seed``, so the same plan and the same sequence of
requests give the same outcomes. Replacing the plan restarts its RNG.

======================  ===========================================================================
mode                    what the provider does to a request the fault hits
======================  ===========================================================================
``ok``                  accepts it (and delivers it shortly after)
``error_rate``          answers with the error ``error`` (``provider_5xx``, ``throttled``,
                        ``rejected``, ``invalid_recipient``; ``timeout`` = hangs)
``5xx``                 answers with a provider failure (HTTP 503, SMTP 421 4.3.2)
``reject``              refuses it for good (HTTP 400, SMTP 554 5.7.1)
``slow``                accepts it at once but answers after ``delay_ms`` (a client that gave up
                        before has still sent it: a retry sends it twice)
``hang``                never answers (until the client gives up or the provider stops); not accepted
``drop``                accepts it and never delivers it: its status stays ``sent``
======================  ===========================================================================

>>> injector = FaultInjector(FaultPlan(mode="error_rate", p=0.5, error="throttled", seed=7))
>>> [f.action for f in (injector.next() for _ in range(6))]
['error', 'error', 'accept', 'error', 'accept', 'error']
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Fault", "FaultAction", "FaultInjector", "FaultKind", "FaultMode", "FaultPlan", "decide"]

FaultMode = Literal["ok", "error_rate", "5xx", "reject", "slow", "hang", "drop"]
FaultKind = Literal["provider_5xx", "throttled", "rejected", "invalid_recipient", "timeout"]
FaultAction = Literal["accept", "drop", "error", "slow", "hang"]


class FaultPlan(BaseModel):
    """How a local provider misbehaves; see the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: FaultMode = "ok"
    p: float = Field(default=1.0, ge=0.0, le=1.0, description="Share of the requests the fault hits.")
    error: FaultKind = Field(default="provider_5xx", description="The error of mode error_rate.")
    delay_ms: int = Field(default=1000, ge=0, le=3_600_000, description="How late mode slow answers.")
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do with one request: ``error`` names the error kind, ``delay_ms`` the delay of ``slow``."""

    action: FaultAction
    error: str | None = None
    delay_ms: int = 0


ACCEPT = Fault("accept")


def decide(plan: FaultPlan, u: float) -> Fault:
    """The fault for one request given ``u``, a uniform draw in [0, 1): hit when ``u < p``.

    >>> decide(FaultPlan(mode="5xx"), 0.99), decide(FaultPlan(mode="drop", p=0.3), 0.5)
    (Fault(action='error', error='provider_5xx', delay_ms=0), Fault(action='accept', error=None, delay_ms=0))
    """
    if plan.mode == "ok" or u >= plan.p:
        return ACCEPT
    if plan.mode == "error_rate":
        return Fault("hang") if plan.error == "timeout" else Fault("error", plan.error)
    if plan.mode == "5xx":
        return Fault("error", "provider_5xx")
    if plan.mode == "reject":
        return Fault("error", "rejected")
    if plan.mode == "slow":
        return Fault("slow", delay_ms=plan.delay_ms)
    return Fault(plan.mode)  # hang, drop


class FaultInjector:
    """The current plan of one provider and its RNG: one draw per request, whatever the mode."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self.plan = plan or FaultPlan()
        self._rng = random.Random(self.plan.seed)

    def set(self, plan: FaultPlan) -> None:
        """Replace the plan (at runtime); its RNG starts over from its seed."""
        self.plan = plan
        self._rng = random.Random(plan.seed)

    def next(self) -> Fault:
        return decide(self.plan, self._rng.random())
