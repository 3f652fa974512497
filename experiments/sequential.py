"""Always-valid inference: a confidence sequence that may be looked at after every event.

A fixed-horizon CI covers the truth with 95% probability at ONE planned look; checking it daily and
stopping at the first significant day inflates false positives far beyond alpha. A confidence
sequence covers the truth at all looks simultaneously, so peeking is free.

We use the asymptotic confidence sequence with a normal mixture (Waudby-Smith, Arbour, Sinha,
Kennedy and Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences", 2023),
the construction behind Eppo's sequential analysis; it is the two-sided mixture SPRT boundary of
Robbins (and Howard et al. 2021) applied to the standardised difference of means. At a total of ``n``
units (both arms) the fixed-horizon multiplier ``z_{1-alpha/2}`` is replaced by

    k(n) = sqrt( (n rho^2 + 1) / (n rho^2) * log((n rho^2 + 1) / alpha^2) )

and ``rho^2 = (-2 log alpha + log(1 - 2 log alpha)) / n_planned`` makes the sequence tightest
around the planned sample size; any fixed ``n_planned`` keeps the guarantee, only the width changes.
The difference of means is ``treatment - control``; the relative effect uses the delta-method
standard error on the same multiplier, as the fixed-horizon CI does. Proportions are means of 0/1.

>>> from experiments.stats import ProportionStats
>>> result = sequential_compare(ProportionStats(20_000, 2000), ProportionStats(20_000, 2300))
>>> result.decision, round(result.relative_ci[0], 3), round(result.relative_ci[1], 3)
('treatment_better', 0.046, 0.254)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from experiments.stats import SufficientStats, relative_effect, standard_errors

__all__ = ["Decision", "SequentialResult", "boundary_multiplier", "sequential_compare"]

Decision = Literal["treatment_better", "control_better", "inconclusive"]

DEFAULT_PLANNED_SAMPLE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class SequentialResult:
    """Time-uniform CIs of the absolute and relative effect, an always-valid p-value and the verdict.

    A CI is None when it is undefined (fewer than two units in an arm, zero variance, and for the
    relative CI a control mean of 0); the decision is then "inconclusive" and the p-value 1.
    """

    absolute_ci: tuple[float, float] | None
    relative_ci: tuple[float, float] | None
    p_value: float
    decision: Decision


def _rho_squared(alpha: float, planned_sample_size: int) -> float:
    log_term = -2 * math.log(alpha)
    return (log_term + math.log(1 + log_term)) / max(1, planned_sample_size)


def boundary_multiplier(
    n: int, alpha: float = 0.05, planned_sample_size: int = DEFAULT_PLANNED_SAMPLE_SIZE
) -> float:
    """How many standard errors the confidence sequence extends each side after ``n`` units in total.

    Always above the fixed-horizon ``z_{1-alpha/2}`` (1.96 at alpha 0.05): that is the price of peeking.

    >>> round(boundary_multiplier(10_000), 3), round(boundary_multiplier(1_000_000), 3)
    (3.035, 3.562)
    """
    if n <= 0:
        return math.inf
    scaled = n * _rho_squared(alpha, planned_sample_size)
    return math.sqrt((scaled + 1) / scaled * math.log((scaled + 1) / alpha**2))


def _always_valid_p_value(z: float, n: int, alpha: float, planned_sample_size: int) -> float:
    # 1 / (mixture likelihood ratio); below alpha exactly when |z| > boundary_multiplier(n).
    scaled = n * _rho_squared(alpha, planned_sample_size)
    log_ratio = z * z * scaled / (2 * (scaled + 1)) - 0.5 * math.log(scaled + 1)
    return math.exp(min(0.0, -log_ratio))


def sequential_compare(
    control: SufficientStats,
    treatment: SufficientStats,
    *,
    alpha: float = 0.05,
    planned_sample_size: int = DEFAULT_PLANNED_SAMPLE_SIZE,
) -> SequentialResult:
    """The confidence sequence of treatment against control at the current counts; safe to call anytime.

    ``planned_sample_size`` is the total number of units (both arms) around which the sequence is
    tightest; it must be fixed in advance, not derived from the data being tested.

    >>> from experiments.stats import MeanStats
    >>> sequential_compare(MeanStats(1, 2.0, 4.0), MeanStats(5, 10.0, 30.0)).decision
    'inconclusive'
    """
    se_abs, se_rel = standard_errors(control, treatment)
    if se_abs <= 0:
        return SequentialResult(None, None, 1.0, "inconclusive")
    n = control.n + treatment.n
    k = boundary_multiplier(n, alpha, planned_sample_size)
    absolute = treatment.mean - control.mean
    absolute_ci = (absolute - k * se_abs, absolute + k * se_abs)
    relative_ci = None
    if se_rel:
        relative = relative_effect(control, treatment)
        relative_ci = (relative - k * se_rel, relative + k * se_rel)
    # Decide on the CI that is reported (relative when defined) so the verdict never contradicts it.
    low, high = relative_ci or absolute_ci
    decision: Decision = "inconclusive"
    if low > 0:
        decision = "treatment_better"
    elif high < 0:
        decision = "control_better"
    p_value = _always_valid_p_value(absolute / se_abs, n, alpha, planned_sample_size)
    return SequentialResult(absolute_ci, relative_ci, p_value, decision)
