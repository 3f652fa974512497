"""Named traffic scenarios: pure modifiers of the funnel at simulated time, with labelled anomalies.

A scenario is a set of ``AnomalyWindow``s. Each window names its kind, its span as offsets in
seconds from the simulation start, what it affects (tenant / channel / provider; None = all) and
the ``Effect`` the generator applies to notifications dispatched inside it. The same windows are
the ground truth for evaluating an anomaly detector. Windows are placed at fixed fractions of the
run so a scenario looks the same at any duration.

>>> s = build_scenario("provider_outage", duration_s=600)
>>> w = s.windows[0]
>>> (w.kind, w.start_s, w.end_s, w.channel, w.provider)
('provider_outage', 240.0, 360.0, 'EMAIL', 'smtp-primary')
>>> s.effect_at(300, "acme-home", "EMAIL", "smtp-primary")
Effect(outage=True, delivered_factor=1.0, latency_factor=1.0)
>>> s.effect_at(100, "acme-home", "EMAIL", "smtp-primary") is None
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from herald.errors import ConfigError
from simulator.model import DEFAULT_MODEL, Effect, TrafficModel

DELIVERY_DROP_FACTOR: Final = 0.3
LATENCY_SPIKE_FACTOR: Final = 10.0


@dataclass(frozen=True)
class AnomalyWindow:
    """One labelled anomaly: ``kind`` affects matching notifications dispatched in [start_s, end_s)."""

    kind: str  # provider_outage | delivery_drop | latency_spike
    start_s: float
    end_s: float
    effect: Effect
    tenant_id: str | None = None  # None = every tenant
    channel: str | None = None
    provider: str | None = None

    def covers(self, offset_s: float, tenant_id: str, channel: str, provider: str) -> bool:
        return (
            self.start_s <= offset_s < self.end_s
            and self.tenant_id in (None, tenant_id)
            and self.channel in (None, channel)
            and self.provider in (None, provider)
        )


@dataclass(frozen=True)
class Scenario:
    name: str
    windows: tuple[AnomalyWindow, ...] = ()
    bad_input: bool = False  # run.py mixes bad messages into the stream

    def effect_at(self, offset_s: float, tenant_id: str, channel: str, provider: str) -> Effect | None:
        """The combined effect of every window covering this notification; None when untouched."""
        found: Effect | None = None
        for window in self.windows:
            if window.covers(offset_s, tenant_id, channel, provider):
                e = window.effect
                found = (
                    e
                    if found is None
                    else Effect(
                        outage=found.outage or e.outage,
                        delivered_factor=found.delivered_factor * e.delivered_factor,
                        latency_factor=found.latency_factor * e.latency_factor,
                    )
                )
        return found


def provider_outage(model: TrafficModel, start_s: float, end_s: float) -> AnomalyWindow:
    """The primary (first) email provider answers every send with provider_5xx or a timeout."""
    channel = _channel(model, "EMAIL")
    provider = model.channel(channel).providers[0].name
    return AnomalyWindow(
        "provider_outage", start_s, end_s, Effect(outage=True), channel=channel, provider=provider
    )


def delivery_drop(model: TrafficModel, start_s: float, end_s: float) -> AnomalyWindow:
    """The busiest tenant's delivery rate on its primary SMS provider drops to 30 % (carriers reject
    after SENT): one series, so one alert."""
    tenant = max(model.tenants, key=lambda t: t.volume).tenant_id
    channel = _channel(model, "SMS")
    provider = model.channel(channel).providers[0].name
    effect = Effect(delivered_factor=DELIVERY_DROP_FACTOR)
    return AnomalyWindow(
        "delivery_drop", start_s, end_s, effect, tenant_id=tenant, channel=channel, provider=provider
    )


def latency_spike(model: TrafficModel, start_s: float, end_s: float) -> AnomalyWindow:
    """The primary SMS provider's requested->sent and sent->delivered latencies grow tenfold."""
    channel = _channel(model, "SMS")
    provider = model.channel(channel).providers[0].name
    effect = Effect(latency_factor=LATENCY_SPIKE_FACTOR)
    return AnomalyWindow("latency_spike", start_s, end_s, effect, channel=channel, provider=provider)


def _channel(model: TrafficModel, preferred: str) -> str:
    names = [p.channel for p in model.channels]
    return preferred if preferred in names else names[0]


Anomaly = Callable[[TrafficModel, float, float], AnomalyWindow]
# name -> (windows as (anomaly, start fraction, end fraction), mixes bad input)
_SCENARIOS: Final[dict[str, tuple[tuple[tuple[Anomaly, float, float], ...], bool]]] = {
    "normal": ((), False),
    "provider_outage": (((provider_outage, 0.4, 0.6),), False),
    "delivery_drop": (((delivery_drop, 0.5, 0.75),), False),
    "latency_spike": (((latency_spike, 0.3, 0.5),), False),
    "bad_input": ((), True),
    "mixed": (((provider_outage, 0.1, 0.2), (delivery_drop, 0.35, 0.5), (latency_spike, 0.6, 0.7)), True),
    # The demo's incident: over 150 simulated minutes, an hour of judged normal traffic after the
    # monitor's warm-up, a 15-minute drop on one series from minute 90, then recovery; bad input mixed in.
    "alert_drill": (((delivery_drop, 0.6, 0.7),), True),
}
SCENARIO_NAMES: Final = tuple(_SCENARIOS)


def build_scenario(name: str, duration_s: float, model: TrafficModel = DEFAULT_MODEL) -> Scenario:
    """The scenario called ``name`` laid over a run of ``duration_s`` seconds.

    >>> build_scenario("calm", 60)
    Traceback (most recent call last):
    ...
    herald.errors.ConfigError: unknown scenario 'calm'; valid: normal, provider_outage, delivery_drop, latency_spike, bad_input, mixed, alert_drill
    """  # noqa: E501  (a doctest traceback line cannot be wrapped)
    if name not in _SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r}; valid: {', '.join(SCENARIO_NAMES)}")
    spans, bad_input = _SCENARIOS[name]
    windows = tuple(anomaly(model, lo * duration_s, hi * duration_s) for anomaly, lo, hi in spans)
    return Scenario(name, windows, bad_input)
