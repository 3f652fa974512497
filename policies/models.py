"""Pydantic models of a guardrails policy file: providers and prices, routing, breakers, limits, SLAs.

Every model forbids unknown keys (a typo is an error, not a silently ignored rule) and is frozen, so a
loaded policy can be shared between agents and hashed into a version. Cross-field rules that need the
whole file (a routing list names a known provider, money budgets are in the providers' currency) are
checked by :class:`GuardrailsPolicy` itself and reported with the field path that is wrong.

Channels are lower-case here (``email``, ``sms``, ``push``); the Avro contract spells them in upper
case, so look-ups normalise with :func:`channel_of`.

>>> policy = GuardrailsPolicy.model_validate({
...     "providers": {"sms": [{"name": "sms-a", "price_micros": 7500, "currency": "USD"}]},
...     "routing": {"default": {"sms": ["sms-a"]}},
... })
>>> policy.providers_for("acme-home", "SMS"), policy.price("sms", "sms-a").price_micros
(['sms-a'], 7500)
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.bounds import COST_MICROS_MAX

__all__ = [
    "BreakerSettings",
    "BudgetSpec",
    "CampaignPolicy",
    "Channel",
    "GuardrailsPolicy",
    "ProviderSpec",
    "QuietHours",
    "RateLimit",
    "Routing",
    "SlaObjective",
    "TenantPolicy",
    "channel_of",
    "quiet_until",
]

Channel = Literal["email", "sms", "push"]
Priority = Literal["critical", "normal", "bulk"]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)]
ProviderList = Annotated[list[Name], Field(min_length=1)]
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def channel_of(channel: str) -> Channel:
    """The policy spelling of a channel name from the contract (``SMS`` -> ``sms``).

    >>> channel_of("EMAIL")
    'email'
    """
    lowered = channel.lower()
    if lowered not in ("email", "sms", "push"):
        raise ValueError(f"unknown channel {channel!r}")
    return lowered  # type: ignore[return-value]  # narrowed by the membership test above


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderSpec(_Model):
    """One delivery provider of a channel and what one message costs there."""

    name: Name
    price_micros: int = Field(
        ge=0,
        le=COST_MICROS_MAX,  # the lifecycle contract's bound on cost_micros: a SENT event must be emittable
        description="Cost of one message in millionths of the currency unit.",
    )
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")


class Routing(_Model):
    """Ordered provider lists: the first healthy one is used, later ones are failovers."""

    default: dict[Channel, ProviderList]
    tenants: dict[Name, dict[Channel, ProviderList]] = {}


class BreakerSettings(_Model):
    """Circuit breaker of one provider x channel.

    Opens when the error rate over ``window_seconds`` reaches ``open_error_rate`` with at least
    ``min_requests`` outcomes; stays open ``open_seconds``; then lets ``half_open_probes`` requests
    through and closes only if their error rate is at most ``recovery_error_rate``. The gap between
    the two rates is the hysteresis: a provider hovering between them neither opens nor recovers.
    ``consecutive_failures`` also opens it after that many failures in a row, however many successes
    the window holds: a provider that went down does not get ``window_seconds`` to prove it.
    """

    window_seconds: int = Field(default=60, ge=1, le=3600)
    min_requests: int = Field(default=20, ge=1)
    open_error_rate: float = Field(default=0.5, gt=0.0, le=1.0)
    recovery_error_rate: float = Field(default=0.1, ge=0.0, lt=1.0)
    open_seconds: float = Field(default=30.0, gt=0.0)
    half_open_probes: int = Field(default=5, ge=1)
    consecutive_failures: int | None = Field(
        default=None, ge=1, description="Open at once after this many failures in a row (a hard outage)."
    )

    @field_validator("recovery_error_rate")
    @classmethod
    def _below_open(cls, value: float, info: Any) -> float:
        open_rate = info.data.get("open_error_rate")
        if open_rate is not None and value >= open_rate:
            raise ValueError(f"must be below open_error_rate ({open_rate}) so the breaker cannot flap")
        return value


class RateLimit(_Model):
    """Messages admitted per fixed second, minute and hour window (epoch-aligned); omitted = unlimited."""

    per_second: int | None = Field(default=None, ge=1)
    per_minute: int | None = Field(default=None, ge=1)
    per_hour: int | None = Field(default=None, ge=1)


class BudgetSpec(_Model):
    """Messages and money per UTC day and in total (the life of a campaign, or of a tenant's policy).

    Omitted limits are unlimited. Money is in micros of ``currency``. An alert is raised once per
    threshold and period; at 1.0 the scope is paused.
    """

    messages_per_day: int | None = Field(default=None, ge=0)
    messages_total: int | None = Field(default=None, ge=0)
    money_micros_per_day: int | None = Field(default=None, ge=0)
    money_micros_total: int | None = Field(default=None, ge=0)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    alert_thresholds: tuple[float, ...] = (0.8, 1.0)

    @field_validator("alert_thresholds")
    @classmethod
    def _sorted_fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.0 < t <= 1.0 for t in value) or list(value) != sorted(set(value)):
            raise ValueError("must be increasing fractions in (0, 1]")
        return value

    @property
    def has_money(self) -> bool:
        return self.money_micros_per_day is not None or self.money_micros_total is not None


def _hhmm(value: Any) -> Any:
    if isinstance(value, int):  # PyYAML reads unquoted 21:00 as the base-60 integer 1260
        raise ValueError("write times as quoted 'HH:MM' strings (YAML reads unquoted 21:00 as a number)")
    if not isinstance(value, str) or not _HHMM.match(value):
        raise ValueError("must be a time 'HH:MM' (00:00 to 23:59)")
    return value


def quiet_until(now: float, start: str, end: str, timezone: str) -> float | None:
    """End of the quiet window containing ``now`` (epoch seconds), or ``None`` outside it.

    The window is in local wall-clock time and may cross midnight. An end that falls in a DST gap
    resolves to the same UTC offset as before the gap (so ``02:30`` on a spring-forward night is
    ``03:30`` local), an ambiguous one to its first occurrence.

    >>> from datetime import UTC
    >>> ny = "America/New_York"
    >>> datetime.fromtimestamp(quiet_until(datetime(2026, 1, 10, 3, 0, tzinfo=UTC).timestamp(),
    ...     "21:00", "08:00", ny), UTC).isoformat()   # 22:00 EST -> 08:00 EST next day
    '2026-01-10T13:00:00+00:00'
    >>> quiet_until(datetime(2026, 1, 10, 18, 0, tzinfo=UTC).timestamp(), "21:00", "08:00", ny) is None
    True
    """
    zone = ZoneInfo(timezone)
    local = datetime.fromtimestamp(now, zone)
    t_start, t_end = time.fromisoformat(start), time.fromisoformat(end)
    clock = local.time().replace(tzinfo=None)
    if t_start < t_end:
        inside, end_day = t_start <= clock < t_end, local.date()
    else:  # crosses midnight: evening part ends tomorrow, morning part today
        inside = clock >= t_start or clock < t_end
        end_day = local.date() + timedelta(days=1) if clock >= t_start else local.date()
    if not inside:
        return None
    return datetime.combine(end_day, t_end, tzinfo=zone).timestamp()


class QuietHours(_Model):
    """Local-time window (may cross midnight) in which messages are deferred to its end."""

    start: str
    end: str
    timezone: str
    channels: list[Channel] = ["email", "sms", "push"]
    exempt_priorities: list[Priority] = ["critical"]

    _check_start = field_validator("start", mode="before")(_hhmm)
    _check_end = field_validator("end", mode="before")(_hhmm)

    @field_validator("end")
    @classmethod
    def _not_empty(cls, value: str, info: Any) -> str:
        if value == info.data.get("start"):
            raise ValueError("must differ from start (an empty or full-day window is ambiguous)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value


class SlaObjective(_Model):
    """``target`` of a channel's messages delivered within ``latency_ms`` over ``window_days``."""

    channel: Channel
    target: float = Field(gt=0.0, lt=1.0)
    latency_ms: int = Field(gt=0)
    window_days: int = Field(default=30, ge=1, le=90)


class CampaignPolicy(_Model):
    rate: RateLimit | None = None
    budget: BudgetSpec | None = None


class TenantPolicy(_Model):
    rate: RateLimit | None = None
    budget: BudgetSpec | None = None
    quiet_hours: QuietHours | None = None
    slas: list[SlaObjective] = []


class GuardrailsPolicy(_Model):
    """A whole guardrails file. Campaigns without an entry get ``campaign_defaults``."""

    providers: dict[Channel, Annotated[list[ProviderSpec], Field(min_length=1)]]
    routing: Routing
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    campaign_defaults: CampaignPolicy = CampaignPolicy()
    campaigns: dict[Name, CampaignPolicy] = {}
    tenants: dict[Name, TenantPolicy] = {}

    @model_validator(mode="after")
    def _references(self) -> GuardrailsPolicy:
        problems = self.reference_problems()
        if problems:
            raise ValueError("; ".join(f"{field}: {reason}" for field, reason in problems))
        return self

    def reference_problems(self) -> list[tuple[str, str]]:
        """(field path, reason) of every rule that names something the file does not define."""
        problems: list[tuple[str, str]] = []
        for channel, specs in self.providers.items():
            seen: set[str] = set()
            for i, spec in enumerate(specs):
                if spec.name in seen:
                    problems.append((f"providers.{channel}[{i}].name", f"duplicate provider {spec.name!r}"))
                seen.add(spec.name)
        lists = [(f"routing.default.{c}", c, names) for c, names in self.routing.default.items()]
        for tenant, by_channel in self.routing.tenants.items():
            lists += [(f"routing.tenants.{tenant}.{c}", c, names) for c, names in by_channel.items()]
        for path, channel, names in lists:
            known = [p.name for p in self.providers.get(channel, [])]
            for i, name in enumerate(names):
                if name not in known:
                    problems.append(
                        (f"{path}[{i}]", f"unknown {channel} provider {name!r} (known: {', '.join(known)})")
                    )
            if len(set(names)) != len(names):
                problems.append((path, "names a provider twice"))
        for channel in self.providers:
            if channel not in self.routing.default:
                problems.append(
                    (f"routing.default.{channel}", "missing: every channel needs a default order")
                )
        scoped: list[tuple[str, CampaignPolicy | TenantPolicy]] = [
            ("campaign_defaults", self.campaign_defaults)
        ]
        scoped += [(f"campaigns.{k}", v) for k, v in self.campaigns.items()]
        scoped += [(f"tenants.{k}", v) for k, v in self.tenants.items()]
        currencies = {p.currency for specs in self.providers.values() for p in specs}
        for path, scope in scoped:
            if scope.budget and scope.budget.has_money and currencies - {scope.budget.currency}:
                problems.append(
                    (
                        f"{path}.budget.currency",
                        f"{scope.budget.currency} differs from provider prices in "
                        + ", ".join(sorted(currencies)),
                    )
                )
        return problems

    def providers_for(self, tenant: str, channel: str) -> list[str]:
        """The tenant's ordered providers of a channel, else the default order (empty if none)."""
        ch = channel_of(channel)
        override = self.routing.tenants.get(tenant, {}).get(ch)
        return list(override if override is not None else self.routing.default.get(ch, []))

    def price(self, channel: str, provider: str) -> ProviderSpec:
        ch = channel_of(channel)
        for spec in self.providers.get(ch, []):
            if spec.name == provider:
                return spec
        raise KeyError(f"no {ch} provider {provider!r}")

    def campaign(self, campaign_id: str) -> CampaignPolicy:
        return self.campaigns.get(campaign_id, self.campaign_defaults)

    def tenant(self, tenant: str) -> TenantPolicy:
        return self.tenants.get(tenant, TenantPolicy())
