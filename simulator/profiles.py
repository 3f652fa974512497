"""What the simulated traffic looks like: tenants, channels, providers, funnels, templates. Pure data.

Frozen dataclasses, validated on construction (``ConfigError`` names every problem).
``DEFAULT_MODEL`` is a home-services platform: four tenants of very different volume (one tiny),
customers and field technicians, email/SMS/push through two email, two SMS and one push provider.

>>> DEFAULT_MODEL.channel("SMS").providers[0].name
'sms-primary'
>>> [t.tenant_id for t in DEFAULT_MODEL.tenants][-1]
'tiny-plumbing'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

from herald.errors import ConfigError

T = TypeVar("T")
Weighted = tuple[tuple[T, float], ...]  # (item, relative weight)


@dataclass(frozen=True)
class LogNormal:
    """A delay in ms: ``median_ms * exp(sigma * N(0, 1))``, capped."""

    median_ms: float
    sigma: float
    cap_ms: float = 7_200_000


@dataclass(frozen=True)
class Funnel:
    """Step probabilities of one provider, each conditional on the step before it."""

    delivered: float  # P(DELIVERED | DISPATCHED)
    bounce: float  # P(BOUNCED | DISPATCHED); FAILED takes the rest (see ``fail``)
    open: float = 0.0  # P(OPENED | DELIVERED)
    click: float = 0.0  # P(CLICKED | OPENED)
    reply: float = 0.0  # P(REPLIED | DELIVERED) for technicians; customers x customer_reply_factor
    unsubscribe: float = 0.0  # P(UNSUBSCRIBED | DELIVERED), customers only
    complain: float = 0.0  # P(COMPLAINED | DELIVERED), customers only

    @property
    def fail(self) -> float:
        return 1.0 - self.delivered - self.bounce


@dataclass(frozen=True)
class Provider:
    name: str
    weight: float  # share of the channel's dispatches
    funnel: Funnel
    to_sent: LogNormal  # requested -> sent
    to_receipt: LogNormal  # sent -> delivered / bounced / failed
    cost_micros: int  # per SENT message
    fail_classes: Weighted[str] = (
        ("provider_5xx", 0.3),
        ("timeout", 0.2),
        ("throttled", 0.2),
        ("rejected", 0.3),
    )
    bounce_classes: Weighted[str] = (("invalid_recipient", 1.0),)


@dataclass(frozen=True)
class ChannelProfile:
    channel: str  # EMAIL, SMS or PUSH
    providers: tuple[Provider, ...]
    suppress: float  # P(SUPPRESSED | REQUESTED)
    to_opened: LogNormal = LogNormal(600_000, 1.1)
    to_clicked: LogNormal = LogNormal(25_000, 0.9)
    to_replied: LogNormal = LogNormal(120_000, 1.0)
    to_unsubscribed: LogNormal = LogNormal(60_000, 1.0)
    to_complained: LogNormal = LogNormal(1_800_000, 1.0)


@dataclass(frozen=True)
class Template:
    template_id: str
    version: int
    channel: str
    kind: str  # audience: CUSTOMER or TECHNICIAN
    weight: float = 1.0


@dataclass(frozen=True)
class Campaign:
    """Marketing sends to customers; its template is used for nothing else."""

    campaign_id: str
    template_id: str
    steps: int
    share: float  # of customer notifications on the template's channel


@dataclass(frozen=True)
class Experiment:
    """Variants of one template; a recipient always gets the same variant (sticky by recipient)."""

    experiment_id: str
    template_id: str
    variants: Weighted[str]  # (variant, multiplier of the open rate); equal split


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    volume: float  # relative share of all notifications
    technician_share: float
    tiers: Weighted[str]
    roles: Weighted[str]
    locales: Weighted[tuple[str, str]]  # (BCP 47 language, ISO country)
    customers: int  # recipient pool sizes
    technicians: int


@dataclass(frozen=True)
class TrafficModel:
    tenants: tuple[Tenant, ...]
    channels: tuple[ChannelProfile, ...]
    templates: tuple[Template, ...]
    customer_channels: Weighted[str]
    technician_channels: Weighted[str]
    campaigns: tuple[Campaign, ...] = ()
    experiments: tuple[Experiment, ...] = ()
    suppress_reasons: Weighted[str] = (
        ("opted_out", 0.4),
        ("quiet_hours", 0.3),
        ("frequency_cap", 0.2),
        ("duplicate", 0.1),
    )
    customer_reply_factor: float = 0.2
    currency: str = "USD"
    source: str = "herald-sim"
    policy_version: str = "sim-routing-v1"

    def __post_init__(self) -> None:
        _validate(self)

    def channel(self, name: str) -> ChannelProfile:
        for profile in self.channels:
            if profile.channel == name:
                return profile
        raise ConfigError(f"channel {name!r} is not in the traffic model")


def _validate(model: TrafficModel) -> None:
    problems: list[str] = []
    for tenant in model.tenants:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", tenant.tenant_id):
            problems.append(f"tenant_id {tenant.tenant_id!r} does not match [a-z0-9][a-z0-9_-]{{0,63}}")
    channels = {p.channel for p in model.channels}
    marketing = {c.template_id for c in model.campaigns}
    transactional = [t for t in model.templates if t.template_id not in marketing]
    for profile in model.channels:
        for p in profile.providers:
            f = p.funnel
            rates = (
                f.delivered,
                f.bounce,
                f.open,
                f.click,
                f.reply,
                f.unsubscribe,
                f.complain,
                f.fail + 1e-12,
            )
            if not all(0.0 <= r <= 1.0 for r in rates):
                problems.append(
                    f"provider {p.name}: funnel rates must be in [0, 1] and delivered + bounce <= 1"
                )
    for kind, mix in (("CUSTOMER", model.customer_channels), ("TECHNICIAN", model.technician_channels)):
        for channel, weight in mix:
            if channel not in channels:
                problems.append(f"{kind} channel mix names unknown channel {channel}")
            elif weight > 0 and not any((t.kind, t.channel) == (kind, channel) for t in transactional):
                problems.append(f"no template for {kind} on {channel}")
    known = {t.template_id for t in model.templates}
    for ref in [c.template_id for c in model.campaigns] + [e.template_id for e in model.experiments]:
        if ref not in known:
            problems.append(f"campaign or experiment names unknown template {ref}")
    if problems:
        raise ConfigError("invalid traffic model: " + "; ".join(problems))


_EN_US = (("en", "US"), 1.0)
_EMAIL_BOUNCES = (("invalid_recipient", 0.7), ("mailbox_full", 0.3))
_EMAIL_ENGAGEMENT = {"open": 0.30, "click": 0.15, "unsubscribe": 0.004, "complain": 0.001}
_SMS_ENGAGEMENT = {"reply": 0.35, "unsubscribe": 0.003, "complain": 0.0005}

DEFAULT_MODEL = TrafficModel(
    tenants=(
        Tenant("acme-home", 0.50, 0.20, (("standard", 0.6), ("plus", 0.3), ("premium", 0.1)),
               (("installer", 0.4), ("field_tech", 0.45), ("supervisor", 0.15)),
               ((("en", "US"), 0.7), (("es", "US"), 0.2), (("en", "CA"), 0.05), (("fr", "CA"), 0.05)),
               customers=40_000, technicians=600),
        Tenant("brightfix", 0.28, 0.30, (("basic", 0.5), ("gold", 0.35), ("platinum", 0.15)),
               (("field_tech", 0.6), ("installer", 0.3), ("dispatcher", 0.1)),
               ((("en", "GB"), 0.6), (("de", "DE"), 0.25), (("nl", "NL"), 0.15)),
               customers=20_000, technicians=300),
        Tenant("northwind-utilities", 0.20, 0.10, (("residential", 0.8), ("business", 0.2)),
               (("meter_reader", 0.5), ("field_tech", 0.5)),
               ((("es", "MX"), 0.5), (("en", "US"), 0.3), (("pt-BR", "BR"), 0.2)),
               customers=25_000, technicians=200),
        Tenant("tiny-plumbing", 0.02, 0.35, (("standard", 1.0),), (("plumber", 1.0),), (_EN_US,),
               customers=300, technicians=4),
    ),
    channels=(
        ChannelProfile("EMAIL", (
            Provider("smtp-primary", 0.8, Funnel(0.955, 0.030, **_EMAIL_ENGAGEMENT),
                     LogNormal(900, 0.5), LogNormal(2_500, 0.8), 90, bounce_classes=_EMAIL_BOUNCES),
            Provider("smtp-secondary", 0.2, Funnel(0.940, 0.035, **_EMAIL_ENGAGEMENT),
                     LogNormal(1_200, 0.6), LogNormal(4_000, 0.9), 120, bounce_classes=_EMAIL_BOUNCES),
        ), suppress=0.03),
        ChannelProfile("SMS", (
            Provider("sms-primary", 0.7, Funnel(0.965, 0.012, **_SMS_ENGAGEMENT),
                     LogNormal(400, 0.4), LogNormal(3_000, 0.7), 7_500),
            Provider("sms-secondary", 0.3, Funnel(0.945, 0.015, **_SMS_ENGAGEMENT),
                     LogNormal(700, 0.5), LogNormal(6_000, 0.8), 6_200),
        ), suppress=0.02),
        ChannelProfile("PUSH", (
            Provider("fcm", 1.0, Funnel(0.930, 0.050, open=0.12, click=0.30),
                     LogNormal(150, 0.4), LogNormal(600, 0.9), 0),
        ), suppress=0.04, to_opened=LogNormal(90_000, 1.3)),
    ),
    templates=(
        Template("appointment-confirmation", 4, "EMAIL", "CUSTOMER", 3.0),
        Template("invoice-ready", 2, "EMAIL", "CUSTOMER", 2.0),
        Template("service-survey", 1, "EMAIL", "CUSTOMER", 1.0),
        Template("promo-spring", 1, "EMAIL", "CUSTOMER"),
        Template("onboarding-welcome", 3, "EMAIL", "CUSTOMER"),
        Template("appointment-reminder", 7, "SMS", "CUSTOMER", 4.0),
        Template("technician-en-route", 3, "SMS", "CUSTOMER", 3.0),
        Template("renewal-offer", 2, "SMS", "CUSTOMER"),
        Template("appointment-reminder-push", 2, "PUSH", "CUSTOMER", 2.0),
        Template("technician-en-route-push", 1, "PUSH", "CUSTOMER", 1.0),
        Template("job-assigned", 5, "SMS", "TECHNICIAN", 4.0),
        Template("schedule-change", 2, "SMS", "TECHNICIAN", 1.0),
        Template("job-assigned-push", 3, "PUSH", "TECHNICIAN", 3.0),
        Template("route-update", 1, "PUSH", "TECHNICIAN", 1.0),
        Template("weekly-schedule", 1, "EMAIL", "TECHNICIAN", 1.0),
    ),
    customer_channels=(("EMAIL", 0.55), ("SMS", 0.30), ("PUSH", 0.15)),
    technician_channels=(("SMS", 0.50), ("PUSH", 0.45), ("EMAIL", 0.05)),
    campaigns=(
        Campaign("spring-tuneup", "promo-spring", steps=3, share=0.12),
        Campaign("onboarding", "onboarding-welcome", steps=4, share=0.05),
        Campaign("renewal-2026", "renewal-offer", steps=2, share=0.06),
    ),
    experiments=(
        Experiment("subject-line-test", "appointment-confirmation",
                   (("control", 1.0), ("short-subject", 1.15))),
        Experiment("push-copy-test", "appointment-reminder-push", (("control", 1.0), ("emoji", 0.9))),
    ),
)  # fmt: skip
