"""Fixed-horizon statistics of an experiment over mergeable sufficient statistics.

Each arm is summarised by counts that add up across partitions, days or workers (``a + b``), so a
verdict can be recomputed from any split of the event log. Every function is total: empty, tiny or
constant samples give the neutral answer (p-value 1, effects 0, chance to win 0.5, CI ``None``,
power 0, remaining sample size ``None``) instead of raising or returning NaN.

Conventions: the effect is treatment minus control (higher is better); the p-value of proportions is
the pooled two-proportion z-test, that of means the Welch z-test (the Welch t-test for large n); the
CI is of the relative effect ``(treatment - control) / |control|`` by the delta method, as in gbstats
(the absolute value keeps the sign meaningful for metrics with a negative control mean).

>>> control, treatment = ProportionStats(1000, 100), ProportionStats(1000, 130)
>>> result = compare(control, treatment)
>>> round(result.relative_effect, 3), round(result.p_value, 4), result.significant
(0.3, 0.0355, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

__all__ = [
    "Comparison",
    "MeanStats",
    "ProportionStats",
    "SufficientStats",
    "benjamini_hochberg",
    "chance_to_win",
    "compare",
    "holm_bonferroni",
    "power",
    "relative_effect",
    "remaining_sample_size",
    "srm_p_value",
    "standard_errors",
]

_NORMAL = NormalDist()


@dataclass(frozen=True, slots=True)
class ProportionStats:
    """Units and how many of them converted in one arm.

    >>> ProportionStats(10, 2) + ProportionStats(30, 4)
    ProportionStats(n=40, conversions=6)
    """

    n: int = 0
    conversions: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.conversions <= self.n:
            raise ValueError(f"conversions must be between 0 and n={self.n}, got {self.conversions}")

    def __add__(self, other: ProportionStats) -> ProportionStats:
        return ProportionStats(self.n + other.n, self.conversions + other.conversions)

    @property
    def mean(self) -> float:
        return self.conversions / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """Per-unit variance p(1 - p), the one the z-test uses."""
        return self.mean * (1.0 - self.mean)


@dataclass(frozen=True, slots=True)
class MeanStats:
    """Units, sum and sum of squares of a numeric metric in one arm.

    >>> s = MeanStats(2, 3.0, 5.0) + MeanStats(1, 3.0, 9.0)
    >>> s, s.mean, s.variance
    (MeanStats(n=3, sum=6.0, sum_squares=14.0), 2.0, 1.0)
    """

    n: int = 0
    sum: float = 0.0
    sum_squares: float = 0.0

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")

    def __add__(self, other: MeanStats) -> MeanStats:
        return MeanStats(self.n + other.n, self.sum + other.sum, self.sum_squares + other.sum_squares)

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """Sample variance (n - 1 denominator); 0 below two units, never negative from rounding."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.sum_squares - self.sum * self.sum / self.n) / (self.n - 1))


SufficientStats = ProportionStats | MeanStats


@dataclass(frozen=True, slots=True)
class Comparison:
    """One treatment against the control; ``ci_*`` bound the relative effect.

    ``significant`` is the unadjusted ``p_value < alpha``; with several treatments or metrics adjust
    the p-values first (``holm_bonferroni``, ``benjamini_hochberg``), as ``analyze`` does.
    """

    absolute_effect: float
    relative_effect: float
    p_value: float
    ci_low: float | None
    ci_high: float | None
    chance_to_win: float
    significant: bool
    power: float
    remaining_sample_size: int | None


def _informative(control: SufficientStats, treatment: SufficientStats) -> bool:
    if type(control) is not type(treatment):
        raise TypeError(f"cannot compare {type(control).__name__} with {type(treatment).__name__}")
    return control.n >= 2 and treatment.n >= 2


def standard_errors(control: SufficientStats, treatment: SufficientStats) -> tuple[float, float | None]:
    """Unpooled standard errors of the absolute and (delta method) relative effect; 0 / None if undefined.

    >>> se_abs, se_rel = standard_errors(MeanStats(100, 1000.0, 10_400.0), MeanStats(100, 1100.0, 12_500.0))
    >>> round(se_abs, 4), round(se_rel, 4)
    (0.2843, 0.0299)
    """
    if not _informative(control, treatment):
        return 0.0, None
    var_c, var_t = control.variance / control.n, treatment.variance / treatment.n
    se_abs = math.sqrt(var_c + var_t)
    mean_c = control.mean
    if mean_c == 0:
        return se_abs, None
    # Delta method for treatment/control with independent arms.
    ratio = treatment.mean / mean_c
    return se_abs, math.sqrt(var_t / mean_c**2 + ratio**2 * var_c / mean_c**2)


def relative_effect(control: SufficientStats, treatment: SufficientStats) -> float:
    """(treatment - control) / |control|: the lift, whose sign follows the absolute effect; 0 if undefined.

    >>> relative_effect(MeanStats(2, 20.0, 200.0), MeanStats(2, 22.0, 242.0))
    0.1
    >>> relative_effect(MeanStats(2, -20.0, 200.0), MeanStats(2, -18.0, 162.0))  # less negative is up
    0.1
    """
    if control.n == 0 or treatment.n == 0 or control.mean == 0:
        return 0.0
    return (treatment.mean - control.mean) / abs(control.mean)


def _p_value(control: SufficientStats, treatment: SufficientStats, se_abs: float) -> float:
    if isinstance(control, ProportionStats) and isinstance(treatment, ProportionStats):
        pooled = (control.conversions + treatment.conversions) / (control.n + treatment.n)
        se_abs = math.sqrt(pooled * (1 - pooled) * (1 / control.n + 1 / treatment.n))
    if se_abs <= 0:
        return 1.0
    z = (treatment.mean - control.mean) / se_abs
    return min(1.0, math.erfc(abs(z) / math.sqrt(2)))


def chance_to_win(control: SufficientStats, treatment: SufficientStats) -> float:
    """Posterior probability that the treatment beats the control (flat prior, normal approximation).

    Taken on the relative effect when the control mean is non-zero, else on the absolute effect.

    >>> round(chance_to_win(ProportionStats(1000, 100), ProportionStats(1000, 120)), 3)
    0.904
    """
    se_abs, se_rel = standard_errors(control, treatment)
    if se_rel:
        return _NORMAL.cdf(relative_effect(control, treatment) / se_rel)
    if se_abs > 0 and se_rel is None:
        return _NORMAL.cdf((treatment.mean - control.mean) / se_abs)
    return 0.5


def _mde_effect(control: SufficientStats, mde: float) -> float:
    """The relative MDE on the absolute scale of the metric."""
    return abs(mde * control.mean)


def power(
    control: SufficientStats, treatment: SufficientStats, mde: float = 0.05, alpha: float = 0.05
) -> float:
    """Chance of a significant two-sided result at the current sizes if the true lift were ``mde``.

    ``mde`` is relative (0.05 = a 5% lift over the control mean); variances are the observed ones.

    >>> round(power(ProportionStats(10_000, 1000), ProportionStats(10_000, 1000), mde=0.1), 3)
    0.654
    """
    if not _informative(control, treatment):
        return 0.0
    effect = _mde_effect(control, mde)
    variance = control.variance / control.n + treatment.variance / treatment.n
    if effect == 0 or variance <= 0:
        return 0.0
    shift, z = effect / math.sqrt(variance), _NORMAL.inv_cdf(1 - alpha / 2)
    return _NORMAL.cdf(shift - z) + _NORMAL.cdf(-shift - z)


def remaining_sample_size(
    control: SufficientStats,
    treatment: SufficientStats,
    mde: float = 0.05,
    alpha: float = 0.05,
    target_power: float = 0.8,
) -> int | None:
    """More units needed, control and treatment together at their current ratio, to reach ``target_power``.

    0 when the target is already reached; None when it cannot be estimated (too little data, zero
    variance, control mean 0).

    >>> remaining_sample_size(ProportionStats(10_000, 1000), ProportionStats(10_000, 1000), mde=0.1)
    8256
    """
    if not _informative(control, treatment):
        return None
    effect, var_c, var_t = _mde_effect(control, mde), control.variance, treatment.variance
    if effect == 0 or var_c + var_t <= 0:
        return None
    # se^2 = var_c / n_c + var_t / (ratio n_c) must shrink to (effect / (z_alpha + z_power))^2.
    ratio = treatment.n / control.n
    z_sum = _NORMAL.inv_cdf(1 - alpha / 2) + _NORMAL.inv_cdf(target_power)
    n_control = (z_sum / effect) ** 2 * (var_c + var_t / ratio)
    total = n_control * (1 + ratio)
    return max(0, math.ceil(total - control.n - treatment.n - 1e-9))


def compare(
    control: SufficientStats,
    treatment: SufficientStats,
    *,
    alpha: float = 0.05,
    mde: float = 0.05,
    target_power: float = 0.8,
) -> Comparison:
    """Everything about one treatment against the control, for one metric.

    >>> neutral = compare(MeanStats(), MeanStats(1, 5.0, 25.0))
    >>> neutral.p_value, neutral.relative_effect, neutral.ci_low, neutral.chance_to_win
    (1.0, 0.0, None, 0.5)
    """
    se_abs, se_rel = standard_errors(control, treatment)
    if not _informative(control, treatment):
        return Comparison(0.0, 0.0, 1.0, None, None, 0.5, False, 0.0, None)
    absolute = treatment.mean - control.mean
    relative = relative_effect(control, treatment)
    p_value = _p_value(control, treatment, se_abs)
    ci_low = ci_high = None
    if se_rel:
        half_width = _NORMAL.inv_cdf(1 - alpha / 2) * se_rel
        ci_low, ci_high = relative - half_width, relative + half_width
    return Comparison(
        absolute_effect=absolute,
        relative_effect=relative,
        p_value=p_value,
        ci_low=ci_low,
        ci_high=ci_high,
        chance_to_win=chance_to_win(control, treatment),
        significant=p_value < alpha,
        power=power(control, treatment, mde, alpha),
        remaining_sample_size=remaining_sample_size(control, treatment, mde, alpha, target_power),
    )


def _chi2_sf(statistic: float, df: int) -> float:
    """Survival function of the chi-square distribution for an integer df (exact closed form)."""
    if statistic <= 0:
        return 1.0
    half = statistic / 2
    # Q(df) = Q(df - 2) + (x/2)^(df/2 - 1) e^(-x/2) / Γ(df/2), from Q(1) = erfc(sqrt(x/2)), Q(2) = e^(-x/2).
    if df % 2:
        total, k = math.erfc(math.sqrt(half)), 0.5
    else:
        total, k = math.exp(-half), 1.0
    while k + 1 <= df / 2:
        total += math.exp(k * math.log(half) - half - math.lgamma(k + 1))
        k += 1
    return min(1.0, max(0.0, total))


def srm_p_value(observed: Sequence[int], weights: Sequence[float] | None = None) -> float:
    """Sample-ratio-mismatch p-value: chi-square of observed units against the planned weights.

    A tiny value (< 0.001) means assignment or logging is broken and the results cannot be trusted.

    >>> round(srm_p_value([5000, 5200]), 4), round(srm_p_value([4000, 1000], [0.8, 0.2]), 4)
    (0.0477, 1.0)
    """
    planned = list(weights) if weights is not None else [1.0] * len(observed)
    if len(planned) != len(observed):
        raise ValueError(f"weights: expected {len(observed)} weights, got {len(planned)}")
    total, weight_total = sum(observed), math.fsum(planned)
    if total <= 0 or weight_total <= 0:
        return 1.0
    statistic, cells = 0.0, 0
    for count, weight in zip(observed, planned, strict=True):
        expected = total * weight / weight_total
        if expected <= 0:
            if count > 0:
                return 0.0  # units in an arm planned to get none: a mismatch beyond doubt
            continue
        statistic += (count - expected) ** 2 / expected
        cells += 1
    return _chi2_sf(statistic, cells - 1) if cells > 1 else 1.0


def holm_bonferroni(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error rate), in the input order.

    >>> [round(p, 3) for p in holm_bonferroni([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), in the input order.

    >>> [round(p, 3) for p in benjamini_hochberg([0.01, 0.04, 0.03])]
    [0.03, 0.04, 0.04]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i], reverse=True)
    adjusted = [1.0] * m
    running = 1.0
    for position, i in enumerate(order):
        rank = m - position
        running = min(running, p_values[i] * m / rank)
        adjusted[i] = running
    return adjusted
