"""Monte Carlo check of the experiment statistics under continuous peeking.

    python bench/sim_experiments.py [--experiments 1000] [--peeks 100] [--seed 7]

A/A experiments (no true effect) are looked at ``peeks`` times each; an analyst who stops at the
first significant look commits a false positive. The naive fixed-horizon z-test inflates that rate
far above alpha; the always-valid confidence sequence keeps it below alpha. A/B experiments with a
known lift show the power each procedure buys. Prints a table and writes bench/results/experiments.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from experiments.sequential import sequential_compare
from experiments.stats import MeanStats, ProportionStats, SufficientStats, compare, power

ALPHA = 0.05
RESULTS = Path(__file__).resolve().parent / "results" / "experiments.json"


@dataclass(frozen=True)
class Scenario:
    name: str
    metric: str  # "proportion" or "mean"
    lift: float  # true relative effect of the treatment
    experiments: int
    peeks: int
    step: int  # units per arm added between looks


def _cumulative_stats(
    scenario: Scenario, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
    """Per (experiment, arm, look): cumulative conversions or sums (and sums of squares)."""
    shape = (scenario.experiments, 2, scenario.peeks)
    scale = np.array([1.0, 1.0 + scenario.lift])[None, :, None]
    if scenario.metric == "proportion":
        return rng.binomial(scenario.step, 0.10 * scale, size=shape).cumsum(axis=2).astype(float), None
    # Revenue-like skewed metric: lognormal(0, 1) scaled by the lift, generated unit by unit.
    values = rng.lognormal(0.0, 1.0, size=(*shape, scenario.step)) * scale[..., None]
    return values.sum(axis=3).cumsum(axis=2), (values * values).sum(axis=3).cumsum(axis=2)


def _arm(scenario: Scenario, n: int, first: float, second: float | None) -> SufficientStats:
    if scenario.metric == "proportion":
        return ProportionStats(n, int(first))
    assert second is not None
    return MeanStats(n, first, second)


def run(scenario: Scenario, rng: np.random.Generator) -> dict[str, Any]:
    sums, squares = _cumulative_stats(scenario, rng)
    planned = 2 * scenario.step * scenario.peeks  # fixed in advance: the full horizon, both arms
    naive_stops = seq_stops = fixed_end = 0
    stop_fraction: list[float] = []
    for e in range(scenario.experiments):
        naive_hit = seq_hit = False
        for k in range(scenario.peeks):
            n = scenario.step * (k + 1)
            arms = [
                _arm(scenario, n, sums[e, a, k], None if squares is None else squares[e, a, k])
                for a in (0, 1)
            ]
            if not naive_hit and compare(arms[0], arms[1], alpha=ALPHA).p_value < ALPHA:
                naive_hit = True
            if not seq_hit:
                verdict = sequential_compare(arms[0], arms[1], alpha=ALPHA, planned_sample_size=planned)
                if verdict.decision != "inconclusive":
                    seq_hit = True
                    stop_fraction.append((k + 1) / scenario.peeks)
            if k == scenario.peeks - 1:
                fixed_end += compare(arms[0], arms[1], alpha=ALPHA).p_value < ALPHA
        naive_stops += naive_hit
        seq_stops += seq_hit
    count = scenario.experiments
    return {
        "scenario": scenario.name,
        "metric": scenario.metric,
        "true_lift": scenario.lift,
        "experiments": count,
        "peeks": scenario.peeks,
        "units_per_arm": scenario.step * scenario.peeks,
        "fixed_horizon_single_look": fixed_end / count,
        "naive_with_peeking": naive_stops / count,
        "sequential_with_peeking": seq_stops / count,
        "monte_carlo_se_bound": math.sqrt(0.25 / count),
        "sequential_mean_stop_fraction": float(np.mean(stop_fraction)) if stop_fraction else None,
    }


def _planned_power(n: int, lift: float) -> float:
    """Fixed-horizon power of the proportion design from the formula (cross-check of the simulation)."""
    control = ProportionStats(n, round(0.1 * n))
    treatment = ProportionStats(n, round(0.1 * (1 + lift) * n))
    return power(control, treatment, mde=lift, alpha=ALPHA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--peeks", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    n, p = args.experiments, args.peeks
    scenarios = [
        Scenario("A/A proportion", "proportion", 0.0, n, p, 200),
        Scenario("A/A mean (lognormal)", "mean", 0.0, n // 2, p // 2, 200),
        Scenario("A/B proportion +10%", "proportion", 0.10, n // 2, p, 200),
        Scenario("A/B mean +4% (lognormal)", "mean", 0.04, n // 4, p // 2, 400),
    ]
    started = time.perf_counter()
    rows = [run(scenario, rng) for scenario in scenarios]
    elapsed = time.perf_counter() - started

    header = f"{'scenario':28} {'exps':>5} {'looks':>5} {'n/arm':>7} {'fixed 1 look':>12} {'naive peek':>10}"
    print(header + f" {'sequential':>10} {'seq stop':>8}")
    for row in rows:
        stop = row["sequential_mean_stop_fraction"]
        print(
            f"{row['scenario']:28} {row['experiments']:5d} {row['peeks']:5d} {row['units_per_arm']:7d} "
            f"{row['fixed_horizon_single_look']:12.3f} {row['naive_with_peeking']:10.3f} "
            f"{row['sequential_with_peeking']:10.3f} {'-' if stop is None else f'{stop:.2f}':>8}"
        )
    print(
        f"A/A rows are false-positive rates (alpha={ALPHA}); A/B rows are power. 'seq stop' = mean fraction "
        f"of the horizon at which the sequence decided. Formula power of the A/B proportion design at one "
        f"look: {_planned_power(200 * p, 0.10):.3f}. {elapsed:.1f}s."
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"alpha": ALPHA, "seed": args.seed, "seconds": elapsed, "scenarios": rows}, indent=2)
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
