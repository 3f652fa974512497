"""Online anomaly detection for per-minute delivery metrics: values in, verdicts out.

One :class:`MetricAnomalyDetector` watches one series (tenant x channel x provider x metric). Each
point is scored against state built from earlier points only, then learned (River's score-then-learn
order). The model is deliberately plain, so that every number in a verdict can be explained:

* expected = seasonal baseline x short-term ratio (counts, latency) or + short-term offset (rates,
  values). The baseline remembers the value itself at 24 hourly knots of the day and 168 of the
  week (kernel-weighted means of the points within an hour of each knot), read by linear
  interpolation so minute-level ramps are followed; a knot not seen yet falls back to the coarser
  one (week -> day -> plain EW level). The short-term term (half-life ``level_half_life`` points)
  says how today differs from usual, which also absorbs trend. ``season="auto"`` keeps the plain,
  daily and weekly predictions side by side and drops to a simpler one only when it has been
  clearly better over the last week.
* surprise = a z-score in a variance-stabilised space that knows the sample size: square root for
  counts (Poisson plus a learned negative-binomial over-dispersion), Anscombe's arcsine for rates
  with their denominator ``count`` (binomial plus a learned extra-binomial variance), log for
  latency, raw for other values; latency and values widen when ``count`` is below its usual level.
  So 1/2 -> 0/2 is no news, while 900/1000 -> 0/1000 is.
* evidence = max(|z| / ``threshold``, CUSUM / ``cusum_h``): the two-sided CUSUM (allowance
  ``cusum_k``) catches sustained shifts too small for any single minute.
  ``score = e^2 / (1 + e^2)`` maps it into [0, 1] with ``score >= 0.5`` exactly at the alert line.
* robustness: learning clips residuals at 3 sigma; points beyond ``threshold`` are not learned (an
  outage must not become the baseline) unless the deviation lasts ``accept_shift_after`` points,
  when the short-term terms take the mean deviation of that run and the detector re-arms.

State is 15 scalars plus float32 knots and uint16 knot weights, packed on pickling (~0.4 KB daily,
~1.4 KB weekly/auto). Nothing is random: ``seed`` is kept for River's protocol and explicit configs.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from river import base

Metric = Literal["count", "rate", "latency", "value"]
Season = Literal["daily", "weekly", "none", "auto"]
Kind = Literal["drop", "spike", "level_shift"]
Severity = Literal["none", "minor", "major", "critical"]

ALERT_THRESHOLD = 0.5
"""Scores at or above this are alerts: evidence reached ``threshold`` sigma or the CUSUM limit."""

DAY = 86_400.0
WEEK = 7 * DAY
_DAILY_KNOTS, _WEEKLY_KNOTS = 24, 168
_CLIP = 3.0  # Huber clip for learning, in sigma
_CLIP_AFTER = 30  # points before the noise estimate is trusted enough to clip with
_NOISE_HALF_LIFE = 240.0
_SHADOW_HALF_LIFE = 30.0
_ERROR_HALF_LIFE = 10080.0  # a week, so weekends weigh in the choice of season
# A knot is the kernel-weighted mean of the points within an hour of it. An EW with a fixed rate
# would weight the end of each visit most and shift the profile late, so a knot averages exactly
# until its weight reaches a cap, then forgets slowly: ~4 days of memory for the day profile, ~2
# weeks for the week. Weights are stored as uint16 sixteenths of a point.
_DAILY_MEMORY, _WEEKLY_MEMORY, _WEIGHT_SCALE = 240.0, 120.0, 16.0
_AUTO_MARGIN = 0.98  # a simpler season must beat a richer one by 2% to replace it
# Defaults by metric. Volume moves with the day's business, so its short-term level is quick;
# rates are steady KPIs, so a slow level lets gradual drifts show. Per-minute latency percentiles
# are right-skewed even on a log scale (few samples behind a p95), so their alert line is higher.
_LEVEL_HALF_LIFE = {"count": 60.0, "rate": 480.0, "latency": 120.0, "value": 120.0}
_THRESHOLD = {"count": 4.0, "rate": 4.0, "latency": 5.0, "value": 4.0}
_SCALARS = (
    *("_n", "_t0", "_level", "_short_daily", "_short_weekly", "_shadow", "_noise", "_noise_mu"),
    *("_mean_n", "_up", "_down", "_run", "_err_none", "_err_daily", "_err_weekly"),
)

_Knot = tuple[int, int, float]  # (left knot, right knot, weight of the right one)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The detector's opinion of one point: ``score`` in [0, 1] and, when alerting, a ``kind``."""

    timestamp: float
    observed: float
    expected: float
    score: float
    z: float
    kind: Kind | None
    severity: Severity
    warming_up: bool

    @property
    def is_anomaly(self) -> bool:
        """True when the score reached :data:`ALERT_THRESHOLD` (and ``kind`` says which way)."""
        return self.kind is not None


@dataclass(frozen=True, slots=True)
class _Assessment:
    verdict: Verdict
    up: float
    down: float
    y_hat: float
    sd: float
    candidates: tuple[float, float, float]
    baselines: tuple[float, float]
    knots: tuple[_Knot, _Knot]


def _rate(half_life: float, n: float) -> float:
    """EW learning rate that averages exactly while ``n`` is small, then forgets with ``half_life``."""
    return max(1.0 / n, 1.0 - math.exp(-math.log(2.0) / half_life))


class MetricAnomalyDetector(base.AnomalyDetector):
    """Seasonal, count-aware, score-then-learn detector for one metric series.

    ``x`` in :meth:`score_one` / :meth:`learn_one` is a mapping with ``timestamp`` (unix seconds),
    ``value`` and optionally ``count`` (the rate's denominator, or the sample size behind a value).
    Parameters: ``metric`` count | rate | latency | value; ``season`` daily | weekly | none | auto;
    ``seed`` (recorded; nothing is random); ``grace_period`` points learned before any alert (a day
    of minutes); ``threshold`` |z| of a single-point alert (4, 5 for latency); ``cusum_k`` /
    ``cusum_h`` CUSUM allowance and limit in sigma; ``level_half_life`` of the short-term level in
    points (60 count, 480 rate, 120 otherwise); ``accept_shift_after`` alerting points before a
    persistent shift becomes the new normal. Cadence is assumed per-minute for those point counts.

    >>> det = MetricAnomalyDetector(metric="count", season="none", grace_period=60)
    >>> for minute in range(180):
    ...     _ = det.update(60.0 * minute, 200.0 + 10 * (minute % 3))
    >>> verdict = det.update(180 * 60.0, 3.0)
    >>> verdict.kind, verdict.severity, round(verdict.expected)
    ('drop', 'critical', 210)
    >>> det.score_one({"timestamp": 181 * 60.0, "value": 207.0}) < ALERT_THRESHOLD
    True

    Rates use their denominator: one failure out of two messages is not an alert.

    >>> rate = MetricAnomalyDetector(metric="rate", season="none", grace_period=60)
    >>> rate.warm_up((60.0 * m, 0.5 + 0.5 * (m % 2), 2.0) for m in range(300))
    >>> rate.update(300 * 60.0, 0.0, count=2.0).is_anomaly
    False
    """

    def __init__(
        self,
        metric: Metric = "value",
        season: Season = "auto",
        seed: int = 0,
        grace_period: int = 1440,
        threshold: float | None = None,
        cusum_k: float = 0.75,
        cusum_h: float = 12.0,
        level_half_life: float | None = None,
        accept_shift_after: int = 240,
    ) -> None:
        if metric not in _LEVEL_HALF_LIFE:
            raise ValueError(f"metric must be count, rate, latency or value, not {metric!r}")
        if season not in ("daily", "weekly", "none", "auto"):
            raise ValueError(f"season must be daily, weekly, none or auto, not {season!r}")
        if (threshold or 1) <= 0 or cusum_h <= 0 or cusum_k < 0 or (level_half_life or 1) <= 0:
            raise ValueError("threshold, cusum_h and level_half_life must be > 0, cusum_k >= 0")
        if grace_period < 0 or accept_shift_after < 1:
            raise ValueError("grace_period must be >= 0 and accept_shift_after >= 1")
        self.metric: Metric = metric
        self.season: Season = season
        self.seed = seed
        self.grace_period = grace_period
        self.threshold = threshold
        self.cusum_k = cusum_k
        self.cusum_h = cusum_h
        self.level_half_life = level_half_life
        self.accept_shift_after = accept_shift_after
        self._reset()

    def _reset(self) -> None:
        self._mult = self.metric in ("count", "latency")
        self._half_life = self.level_half_life or _LEVEL_HALF_LIFE[self.metric]
        self._threshold = self.threshold or _THRESHOLD[self.metric]
        self._neutral = 1.0 if self._mult else 0.0
        self._has_daily = self.season != "none"
        self._has_weekly = self.season in ("weekly", "auto")
        n_knots = _DAILY_KNOTS * self._has_daily + _WEEKLY_KNOTS * self._has_weekly
        self._knots = array("f", [math.nan] * n_knots)  # NaN: never visited
        self._weights = array("H", [0] * n_knots)
        self._n = self._level = self._noise = self._noise_mu = self._mean_n = 0.0
        self._t0 = math.nan
        self._short_daily = self._short_weekly = self._shadow = self._neutral
        self._up = self._down = self._run = 0.0
        self._err_none = self._err_daily = self._err_weekly = 0.0

    # Pickling packs the state into byte strings: 15 float64 scalars, float32 knots, uint16 weights.
    def __getstate__(self) -> tuple[tuple[Any, ...], bytes, bytes, bytes]:
        params = (
            *(self.metric, self.season, self.seed, self.grace_period, self.threshold, self.cusum_k),
            *(self.cusum_h, self.level_half_life, self.accept_shift_after),
        )
        scalars = array("d", [getattr(self, name) for name in _SCALARS])
        return params, scalars.tobytes(), self._knots.tobytes(), self._weights.tobytes()

    def __setstate__(self, state: tuple[tuple[Any, ...], bytes, bytes, bytes]) -> None:
        params, scalars, knots, weights = state
        self.__init__(*params)  # type: ignore[misc]  # rebuilds the layout, then state is restored
        for name, value in zip(_SCALARS, array("d", scalars), strict=True):
            setattr(self, name, value)
        self._knots, self._weights = array("f"), array("H")
        self._knots.frombytes(knots)
        self._weights.frombytes(weights)

    # -- River protocol -------------------------------------------------------------------------
    def score_one(self, x: Mapping[Any, Any]) -> float:
        """Score ``x`` against what was learned so far, without learning it."""
        return self._assess(*_unpack(x)).verdict.score

    def learn_one(self, x: Mapping[Any, Any]) -> None:
        """Learn ``x`` (after scoring it, so alerting points stay out of the baseline)."""
        point = _unpack(x)
        self._learn(*point, self._assess(*point))

    def update(self, timestamp: float, value: float, count: float | None = None) -> Verdict:
        """Score the point, then learn it; the verdict uses earlier points only."""
        assessment = self._assess(timestamp, value, count)
        self._learn(timestamp, value, count, assessment)
        return assessment.verdict

    def warm_up(self, points: Iterable[tuple[float, float] | tuple[float, float, float | None]]) -> None:
        """Learn history ``(timestamp, value[, count])`` in order, as if it had been streamed."""
        for point in points:
            self.update(*point)

    @property
    def warming_up(self) -> bool:
        """True until ``grace_period`` points have been learned (no alerts before that)."""
        return self._n < self.grace_period

    # -- model ----------------------------------------------------------------------------------
    def _combine(self, a: float, b: float) -> float:
        return a * b if self._mult else a + b

    def _remove(self, x: float, b: float) -> float:
        if self._mult:
            return x / b if b > 1e-9 else self._neutral
        return x - b

    def _choice(self) -> int:
        if self.season != "auto":
            return {"none": 0, "daily": 1, "weekly": 2}[self.season]
        # Ties go to the richer season: squared error is dominated by noise, but a plain level
        # lags every daily ramp, and that bias is exactly what the CUSUM would alert on.
        choice, error = 2, self._err_weekly
        if self._err_daily < _AUTO_MARGIN * error:
            choice, error = 1, self._err_daily
        return 0 if self._err_none < _AUTO_MARGIN * error else choice

    def _transform(self, x: float) -> float:
        """The metric's variance-stabilised scale, where prediction errors are compared."""
        if self.metric == "count":
            return math.sqrt(max(x, 0.0) + 0.375)
        if self.metric == "rate":
            return math.asin(math.sqrt(min(max(x, 0.0), 1.0)))
        return math.log(max(x, 1e-9)) if self.metric == "latency" else x

    def _standardize(self, x: float, mu: float, n: float | None) -> tuple[float, float, float]:
        """``(z, y_hat, sd)`` of ``x`` against ``mu`` in the metric's variance-stabilised space."""
        if self.metric == "count":
            y_hat = math.sqrt(max(mu, 0.0) + 0.375)
            # Negative binomial: 4 var(sqrt x) = 1 + phi * mu, phi = noise / noise_mu (ratio of EWs)
            phi = self._noise / self._noise_mu if self._noise_mu > 0 else 0.0
            sd = 0.5 * math.sqrt(1.0 + max(phi, 0.0) * max(mu, 0.0))
            return (math.sqrt(max(x, 0.0) + 0.375) - y_hat) / sd, y_hat, sd
        if self.metric == "rate":
            p, q = min(max(mu, 0.0), 1.0), min(max(x, 0.0), 1.0)
            if n is None:
                y, y_hat, var = math.asin(math.sqrt(q)), math.asin(math.sqrt(p)), 1e-4
            else:  # Anscombe's arcsine: variance 1/(4n+2) whatever p is, even at 0 or 1
                y = math.asin(math.sqrt((q * n + 0.375) / (n + 0.75)))
                y_hat = math.asin(math.sqrt((p * n + 0.375) / (n + 0.75)))
                var = 1.0 / (4.0 * n + 2.0)
            sd = math.sqrt(var + max(self._noise, 0.0))
            return (y - y_hat) / sd, y_hat, sd
        if self.metric == "latency":  # log scale: latency noise is multiplicative and right-skewed
            y, y_hat = math.log(max(x, 1e-9)), math.log(max(mu, 1e-9))
            sd = math.sqrt(max(self._noise * self._count_widening(n), 1e-6))
            return (y - y_hat) / sd, y_hat, sd
        var = max(self._noise * self._count_widening(n), (1e-3 * abs(mu)) ** 2 + 1e-12)
        sd = math.sqrt(var)
        return (x - mu) / sd, mu, sd

    def _count_widening(self, n: float | None) -> float:
        """Variance factor for a point backed by ``n`` samples when ``mean_n`` is usual."""
        return 1.0 if n is None or self._mean_n <= 0 else min(max(self._mean_n / max(n, 1e-9), 0.25), 100.0)

    def _invert(self, y: float) -> float:
        if self.metric == "count":
            return max(y, 0.0) ** 2 - 0.375
        if self.metric == "rate":
            return math.sin(min(max(y, 0.0), math.pi / 2)) ** 2
        return math.exp(y) if self.metric == "latency" else y

    def _assess(self, t: float, x: float, n: float | None) -> _Assessment:
        daily = weekly = self._level
        knot_d = knot_w = (0, 0, 0.0)
        if self._has_daily:
            daily, knot_d = _lookup(self._knots, t, DAY, 0, _DAILY_KNOTS, self._level)
            weekly = daily
        if self._has_weekly:
            weekly, knot_w = _lookup(self._knots, t, WEEK, _DAILY_KNOTS, _WEEKLY_KNOTS, daily)
        candidates = (
            self._level,  # plain EW level
            self._combine(daily, self._short_daily),
            self._combine(weekly, self._short_weekly),
        )
        mu = candidates[self._choice()]
        if self.metric == "rate":
            mu = min(max(mu, 0.0), 1.0)
        usable = math.isfinite(x) and not (self.metric == "rate" and n is not None and n <= 0)
        if self.warming_up or not usable:
            verdict = Verdict(t, x, mu, 0.0, 0.0, None, "none", self.warming_up)
            return _Assessment(verdict, 0.0, 0.0, mu, 0.0, candidates, (daily, weekly), (knot_d, knot_w))
        z, y_hat, sd = self._standardize(x, mu, n)
        z_step = min(max(z, -self._threshold), self._threshold)
        cap = 1.5 * self.cusum_h  # bounded so the CUSUM lets go within minutes of a recovery
        up = min(max(0.0, self._up + z_step - self.cusum_k), cap)
        down = min(max(0.0, self._down - z_step - self.cusum_k), cap)
        point, sustained = abs(z) / self._threshold, max(up, down) / self.cusum_h
        evidence = max(point, sustained)
        score = evidence * evidence / (1.0 + evidence * evidence)
        kind: Kind | None = None
        if score >= ALERT_THRESHOLD:  # sustained evidence, or a run about to be accepted, is a shift
            shift = sustained > point or abs(self._run) + 1 >= self.accept_shift_after
            kind = "level_shift" if shift else "drop" if z < 0 else "spike"
        # Severity by evidence: 1x the alert line is minor, 2x major, 4x critical.
        severity: Severity = "critical" if score >= 0.94 else "major" if score >= 0.8 else "minor"
        verdict = Verdict(t, x, mu, score, z, kind, severity if kind else "none", False)
        return _Assessment(verdict, up, down, y_hat, sd, candidates, (daily, weekly), (knot_d, knot_w))

    def _learn(self, t: float, x: float, n: float | None, a: _Assessment) -> None:
        if not math.isfinite(x) or (self.metric == "rate" and n is not None and n <= 0):
            return
        self._n += 1.0
        if math.isnan(self._t0):  # the first point sets the level; knots start from it next time
            self._t0, self._level = t, x
            return
        verdict = a.verdict
        if abs(verdict.z) >= self._threshold:  # a point alert is kept out of the baseline...
            sign = 1.0 if verdict.z > 0 else -1.0
            self._run = self._run + sign if self._run * sign > 0 else sign
            # The shadow is the mean deviation of this run of alerts: the new level if it lasts.
            deviation = self._remove(x, verdict.expected)
            self._shadow += _rate(_SHADOW_HALF_LIFE, abs(self._run)) * (deviation - self._shadow)
            if abs(self._run) >= self.accept_shift_after:  # ...until it has lasted long enough
                self._level = self._combine(self._level, self._shadow)
                self._short_daily = self._combine(self._short_daily, self._shadow)
                self._short_weekly = self._combine(self._short_weekly, self._shadow)
                self._shadow, self._up, self._down, self._run = self._neutral, 0.0, 0.0, 0.0
            return
        self._run, self._up, self._down = 0.0, a.up, a.down
        x_c = x
        if self._n > _CLIP_AFTER and abs(verdict.z) > _CLIP and a.sd > 0:
            x_c = self._invert(a.y_hat + math.copysign(_CLIP * a.sd, verdict.z))
        self._learn_noise(x_c, verdict.expected, n)
        if self.season == "auto" and not self.warming_up:  # unlearned seasons are not judged
            rate = _rate(_ERROR_HALF_LIFE, self._n - self.grace_period + 1)
            y = self._transform(x_c)
            plain, daily, weekly = ((y - self._transform(mu)) ** 2 for mu in a.candidates)
            self._err_none += rate * (plain - self._err_none)
            self._err_daily += rate * (daily - self._err_daily)
            self._err_weekly += rate * (weekly - self._err_weekly)
        alpha = _rate(self._half_life, self._n)
        self._level += alpha * (x_c - self._level)
        # The knots remember the value itself; the short-term terms learn the point relative to
        # the knots, so "today is busier" and "this hour is usually busy" are kept apart.
        daily_base, weekly_base = a.baselines
        if self._has_daily:
            self._short_daily += alpha * (self._remove(x_c, daily_base) - self._short_daily)
            _nudge(self._knots, self._weights, a.knots[0], x_c, _DAILY_MEMORY)
        if self._has_weekly:
            self._short_weekly += alpha * (self._remove(x_c, weekly_base) - self._short_weekly)
            _nudge(self._knots, self._weights, a.knots[1], x_c, _WEEKLY_MEMORY)

    def _learn_noise(self, x_c: float, mu: float, n: float | None) -> None:
        rate = _rate(_NOISE_HALF_LIFE, self._n - 1)
        if n is not None and n > 0:
            self._mean_n += rate * (n - self._mean_n)
        if self.metric == "count":
            sample = 4.0 * (math.sqrt(max(x_c, 0.0) + 0.375) - math.sqrt(max(mu, 0.0) + 0.375)) ** 2 - 1.0
            self._noise_mu += rate * (max(mu, 0.0) - self._noise_mu)
        elif self.metric == "rate":
            z, _, sd = self._standardize(x_c, mu, n)
            binomial = 0.0 if n is None else 1.0 / (4.0 * n + 2.0)
            sample = (z * sd) ** 2 - binomial  # signed, so the extra-binomial part stays unbiased
        else:
            sample = (self._transform(x_c) - self._transform(mu)) ** 2 / self._count_widening(n)
        self._noise += rate * (sample - self._noise)


def _lookup(
    knots: array[float], t: float, period: float, offset: int, k: int, fallback: float
) -> tuple[float, _Knot]:
    """Profile value at ``t`` (linear between hourly knots; unseen knots read as ``fallback``)."""
    u = (t % period) * (k / period)
    i = min(int(u), k - 1)
    f = u - i
    j = offset + (i + 1 if i + 1 < k else 0)
    i += offset
    a, b = knots[i], knots[j]
    value = (fallback if math.isnan(a) else a) * (1.0 - f) + (fallback if math.isnan(b) else b) * f
    return value, (i, j, f)


def _nudge(knots: array[float], weights: array[int], pos: _Knot, x: float, memory: float) -> None:
    """Fold ``x`` into the two knots around it, each by its kernel weight (1 - distance in hours)."""
    i, j, f = pos
    for index, weight in ((i, 1.0 - f), (j, f)):
        if weight > 0.0:
            total = min(weights[index] / _WEIGHT_SCALE + weight, memory)
            old = knots[index]
            knots[index] = x if math.isnan(old) else old + weight / total * (x - old)
            weights[index] = round(total * _WEIGHT_SCALE)


def _unpack(x: Mapping[Any, Any]) -> tuple[float, float, float | None]:
    count = x.get("count")
    return float(x["timestamp"]), float(x["value"]), None if count is None else float(count)
