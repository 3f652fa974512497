"""Experiment statistics: checked against scipy/statsmodels, by simulation, on degenerate input, pinned."""

from __future__ import annotations

import doctest
import importlib
import json
import math
from dataclasses import astuple
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportions_ztest
from typer.testing import CliRunner

from experiments.analyze import PayloadError, analyze
from experiments.cli import app
from experiments.sequential import boundary_multiplier, sequential_compare
from experiments.stats import (
    MeanStats,
    ProportionStats,
    SufficientStats,
    benjamini_hochberg,
    chance_to_win,
    compare,
    holm_bonferroni,
    power,
    remaining_sample_size,
    srm_p_value,
)


def mean_stats(n: int, mean: float, sd: float) -> MeanStats:
    return MeanStats(n, mean * n, sd * sd * (n - 1) + n * mean * mean)


def all_finite(*values: object) -> bool:
    return all(math.isfinite(v) for v in values if isinstance(v, float))


def test_proportion_p_values_match_statsmodels_ztest() -> None:
    """The pooled two-proportion z-test agrees with statsmodels' proportions_ztest on 300 random cases."""
    rng = np.random.default_rng(7)
    for _ in range(300):
        n_c, n_t = (int(x) for x in rng.integers(20, 100_000, 2))
        rate = rng.uniform(0.01, 0.5)
        c, t = int(rng.binomial(n_c, rate)), int(rng.binomial(n_t, rate * rng.uniform(0.8, 1.25)))
        _, expected = proportions_ztest([t, c], [n_t, n_c])
        actual = compare(ProportionStats(n_c, c), ProportionStats(n_t, t)).p_value
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_mean_p_values_match_welch_t_test_for_large_samples() -> None:
    """The Welch z-test agrees with scipy's Welch t-test within 1% once each arm has >= 2000 units."""
    rng = np.random.default_rng(8)
    for _ in range(300):
        n_c, n_t = (int(x) for x in rng.integers(2000, 200_000, 2))
        m_c, (s_c, s_t) = rng.normal(10, 1), rng.uniform(1, 5, 2)
        m_t = m_c + rng.normal(0, 0.05)
        expected = sps.ttest_ind_from_stats(m_t, s_t, n_t, m_c, s_c, n_c, equal_var=False).pvalue
        actual = compare(mean_stats(n_c, m_c, s_c), mean_stats(n_t, m_t, s_t)).p_value
        assert actual == pytest.approx(expected, rel=1e-2, abs=1e-6)


@pytest.mark.parametrize("metric", ["proportion", "mean"])
def test_delta_method_ci_covers_the_true_relative_effect_95_percent_of_the_time(metric: str) -> None:
    """Over 2000 simulated experiments (fixed seed) the 95% relative CI covers the true lift 93.5-96.5%."""
    rng = np.random.default_rng(11)
    reps, n, covered, true_lift = 2000, 4000, 0, 0.1
    control: SufficientStats
    treatment: SufficientStats
    for _ in range(reps):
        if metric == "proportion":
            control = ProportionStats(n, int(rng.binomial(n, 0.10)))
            treatment = ProportionStats(n, int(rng.binomial(n, 0.11)))
        else:  # skewed, like revenue per notification: exponential with means 2.0 and 2.2
            c, t = rng.exponential(2.0, n), rng.exponential(2.2, n)
            control = MeanStats(n, float(c.sum()), float((c * c).sum()))
            treatment = MeanStats(n, float(t.sum()), float((t * t).sum()))
        result = compare(control, treatment)
        assert result.ci_low is not None and result.ci_high is not None
        covered += result.ci_low <= true_lift <= result.ci_high
    assert 0.935 <= covered / reps <= 0.965


def test_holm_and_benjamini_hochberg_match_statsmodels_multipletests() -> None:
    """Adjusted p-values equal statsmodels' 'holm' and 'fdr_bh' on random families, ties included."""
    rng = np.random.default_rng(3)
    for size in [*range(1, 12), 20, 50]:
        p_values = list(rng.uniform(0, 0.2, size) ** 2) + [0.01] * (size % 3)
        assert holm_bonferroni(p_values) == pytest.approx(list(multipletests(p_values, method="holm")[1]))
        assert benjamini_hochberg(p_values) == pytest.approx(
            list(multipletests(p_values, method="fdr_bh")[1])
        )
    assert holm_bonferroni([]) == benjamini_hochberg([]) == []


def test_srm_p_value_matches_scipy_chisquare() -> None:
    """The sample-ratio-mismatch p-value equals scipy's chi-square goodness of fit for 2 to 12 arms."""
    rng = np.random.default_rng(5)
    for arms in [*range(2, 13), 2, 3]:
        weights = rng.uniform(0.1, 1, arms)
        counts = [int(x) for x in rng.multinomial(20_000, weights / weights.sum() * 0.98 + 0.02 / arms)]
        expected = sps.chisquare(counts, np.array(weights) / weights.sum() * sum(counts)).pvalue
        assert srm_p_value(counts, list(weights)) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_srm_edge_cases_are_neutral_or_certain() -> None:
    """No units or one arm gives 1.0; units in an arm planned to get none give 0.0; a 10% skew flags."""
    assert srm_p_value([0, 0]) == 1.0
    assert srm_p_value([500]) == 1.0
    assert srm_p_value([500, 3], [1, 0]) == 0.0
    assert srm_p_value([500, 0], [1, 0]) == 1.0
    assert srm_p_value([50_000, 55_000]) < 0.001


def test_merge_is_associative_commutative_and_empty_is_the_identity() -> None:
    """(a + b) + c == a + (b + c), a + b == b + a and a + empty == a, for both kinds of statistics."""
    a, b, c = ProportionStats(10, 3), ProportionStats(7, 0), ProportionStats(100, 55)
    assert (a + b) + c == a + (b + c) and a + b == b + a and a + ProportionStats() == a
    x, y, z = MeanStats(3, 6.0, 14.0), MeanStats(2, -1.0, 5.0), MeanStats(4, 10.0, 30.0)
    assert astuple((x + y) + z) == pytest.approx(astuple(x + (y + z)))
    assert x + y == y + x and x + MeanStats() == x


def test_merged_partitions_equal_the_statistics_of_the_whole_sample() -> None:
    """Summing per-partition statistics gives the mean and variance of the concatenated data."""
    rng = np.random.default_rng(2)
    parts = [rng.lognormal(0, 1, int(k)) for k in rng.integers(1, 500, 9)]
    merged = sum((MeanStats(len(p), float(p.sum()), float((p * p).sum())) for p in parts), MeanStats())
    whole = np.concatenate(parts)
    assert merged.mean == pytest.approx(whole.mean())
    assert merged.variance == pytest.approx(whole.var(ddof=1))


@pytest.mark.parametrize(
    ("control", "treatment"),
    [
        (ProportionStats(), ProportionStats()),
        (ProportionStats(1, 1), ProportionStats(1, 0)),
        (ProportionStats(1000, 0), ProportionStats(1000, 0)),
        (ProportionStats(1000, 1000), ProportionStats(1000, 1000)),
        (MeanStats(), MeanStats(50, 100.0, 400.0)),
        (MeanStats(1, 3.0, 9.0), MeanStats(1, 5.0, 25.0)),
        (MeanStats(100, 500.0, 2500.0), MeanStats(100, 500.0, 2500.0)),
        (MeanStats(100, 500.0, 2500.0), MeanStats(100, 600.0, 3600.0)),
        (MeanStats(100, 0.0, 0.0), MeanStats(100, 0.0, 0.0)),
    ],
    ids=["empty", "n=1", "no-conversions", "all-converted", "empty-control", "n=1-means", "constant",
         "constant-differs", "all-zero"],
)  # fmt: skip
def test_degenerate_inputs_give_neutral_results_without_nan(
    control: SufficientStats, treatment: SufficientStats
) -> None:
    """Empty, single-unit, zero-variance or zero-mean arms give p=1, chance 0.5, no CI, never NaN."""
    result, seq = compare(control, treatment), sequential_compare(control, treatment)
    assert all_finite(*astuple(result), seq.p_value)
    assert (result.p_value, result.chance_to_win, result.ci_low, result.ci_high) == (1.0, 0.5, None, None)
    assert result.significant is False and result.power == 0.0 and result.remaining_sample_size is None
    assert (seq.decision, seq.relative_ci, seq.p_value) == ("inconclusive", None, 1.0)


def test_zero_control_mean_keeps_the_absolute_test_and_drops_the_relative_ci() -> None:
    """0/5000 vs 25/5000: the absolute effect and p-value are reported; the relative CI is None."""
    result = compare(ProportionStats(5000, 0), ProportionStats(5000, 25))
    assert result.absolute_effect == pytest.approx(0.005) and result.relative_effect == 0.0
    assert result.p_value < 0.001 and result.ci_low is None and result.chance_to_win > 0.99
    assert result.remaining_sample_size is None and result.power == 0.0


def test_negative_control_mean_keeps_the_sign_of_the_improvement() -> None:
    """For a metric below zero (e.g. net margin), a higher treatment mean is a positive lift that wins."""
    control, treatment = mean_stats(2000, -10.0, 2.0), mean_stats(2000, -9.5, 2.0)
    result, seq = compare(control, treatment), sequential_compare(control, treatment)
    assert result.relative_effect == pytest.approx(0.05) and result.chance_to_win > 0.99
    assert result.ci_low is not None and result.ci_low > 0 and seq.decision == "treatment_better"


def test_random_small_inputs_never_produce_nan_or_exceptions() -> None:
    """Thousands of tiny arms (0-5 units, any conversions) always give finite, bounded results."""
    for n_c in range(6):
        for n_t in range(6):
            for c in range(n_c + 1):
                for t in range(n_t + 1):
                    pair = ProportionStats(n_c, c), ProportionStats(n_t, t)
                    result, seq = compare(*pair), sequential_compare(*pair)
                    assert all_finite(*astuple(result), seq.p_value)
                    assert 0 <= result.p_value <= 1 and 0 <= result.chance_to_win <= 1


def test_golden_numbers_for_a_proportion_and_a_mean_experiment() -> None:
    """Pinned outputs (hand-checked against the formulas) guard against silent changes."""
    p = compare(ProportionStats(10_000, 1000), ProportionStats(10_000, 1100), mde=0.1)
    assert (p.absolute_effect, p.relative_effect) == pytest.approx((0.01, 0.1))
    assert p.p_value == pytest.approx(0.021075, abs=1e-6)
    assert (p.ci_low, p.ci_high) == pytest.approx((0.010870, 0.189130), abs=1e-6)
    assert p.chance_to_win == pytest.approx(0.986061, abs=1e-6)
    assert p.power == pytest.approx(0.635706, abs=1e-6) and p.remaining_sample_size == 9_497
    m = compare(mean_stats(400, 10.0, 4.0), mean_stats(500, 10.5, 5.0))
    assert m.p_value == pytest.approx(0.095581, abs=1e-6)
    assert (m.ci_low, m.ci_high) == pytest.approx((-0.010123, 0.110123), abs=1e-6)
    seq = sequential_compare(ProportionStats(10_000, 1000), ProportionStats(10_000, 1100))
    assert seq.relative_ci == pytest.approx((-0.0392, 0.2392), abs=1e-4)


def test_power_matches_statsmodels_normal_power() -> None:
    """With equal variances, power equals statsmodels NormalIndPower at the same effect size and ratio."""
    for n_c, n_t, mde in [(1000, 1000, 0.05), (5000, 2500, 0.02), (300, 900, 0.1)]:
        control, treatment = mean_stats(n_c, 10.0, 2.0), mean_stats(n_t, 10.0, 2.0)
        expected = NormalIndPower().power(mde * 10 / 2, nobs1=n_c, alpha=0.05, ratio=n_t / n_c)
        assert power(control, treatment, mde=mde) == pytest.approx(expected, rel=1e-9)


def test_remaining_sample_size_reaches_the_target_power() -> None:
    """Adding the remaining units at the current 1:2 ratio lifts the power to the 80% target."""
    control, treatment = mean_stats(1000, 10.0, 2.0), mean_stats(2000, 10.0, 2.0)
    more = remaining_sample_size(control, treatment, mde=0.02)
    assert more is not None and more > 0
    grown_c, grown_t = (
        mean_stats(1000 + round(more / 3), 10.0, 2.0),
        mean_stats(2000 + round(2 * more / 3), 10.0, 2.0),
    )
    assert power(grown_c, grown_t, mde=0.02) == pytest.approx(0.8, abs=1e-3)
    assert remaining_sample_size(mean_stats(10**6, 10, 2), mean_stats(10**6, 10, 2), mde=0.02) == 0


def test_chance_to_win_is_one_half_for_equal_arms_and_symmetric() -> None:
    """Identical arms give 0.5; swapping the arms of an absolute comparison mirrors the probability."""
    assert chance_to_win(ProportionStats(1000, 100), ProportionStats(1000, 100)) == pytest.approx(0.5)
    up = chance_to_win(ProportionStats(5000, 0), ProportionStats(5000, 4))
    down = chance_to_win(ProportionStats(5000, 4), ProportionStats(5000, 0))
    assert up > 0.9 and down < up  # the second is relative (control mean > 0); direction is what matters


def test_confidence_sequence_contains_the_fixed_horizon_ci_and_matches_its_p_value() -> None:
    """The sequential CI contains the fixed one and excludes 0 exactly when the always-valid p < alpha."""
    rng = np.random.default_rng(4)
    for _ in range(200):
        n = int(rng.integers(100, 50_000))
        control = ProportionStats(n, int(rng.binomial(n, 0.1)))
        treatment = ProportionStats(n, int(rng.binomial(n, 0.1 * rng.uniform(0.9, 1.2))))
        fixed, seq = compare(control, treatment), sequential_compare(control, treatment)
        assert seq.relative_ci is not None and seq.absolute_ci is not None
        assert fixed.ci_low is not None and fixed.ci_high is not None
        assert seq.relative_ci[0] < fixed.ci_low and fixed.ci_high < seq.relative_ci[1]
        assert (seq.absolute_ci[0] > 0 or seq.absolute_ci[1] < 0) == (seq.p_value < 0.05)
    assert boundary_multiplier(1) > boundary_multiplier(10_000) > sps.norm.ppf(0.975)


def test_continuous_peeking_inflates_the_naive_test_but_not_the_confidence_sequence() -> None:
    """In 300 A/A tests peeked 40 times, the naive test stops falsely > alpha, the sequence < alpha."""
    rng = np.random.default_rng(2024)
    experiments, peeks, step = 300, 40, 250
    conversions = rng.binomial(step, 0.1, size=(experiments, 2, peeks)).cumsum(axis=2)
    naive = sequential = 0
    for e in range(experiments):
        looks = [(ProportionStats(step * k, int(c)), ProportionStats(step * k, int(t))) for k, c, t in
                 zip(range(1, peeks + 1), conversions[e, 0], conversions[e, 1], strict=True)]  # fmt: skip
        naive += any(compare(c, t).p_value < 0.05 for c, t in looks)
        sequential += any(
            sequential_compare(c, t, planned_sample_size=2 * step * peeks).decision != "inconclusive"
            for c, t in looks
        )
    assert naive / experiments > 0.1
    assert sequential / experiments <= 0.05


def test_sequential_decision_follows_the_direction_of_a_clear_effect() -> None:
    """A large lift is 'treatment_better', a large drop 'control_better'."""
    assert sequential_compare(ProportionStats(20_000, 2000), ProportionStats(20_000, 2400)).decision == (
        "treatment_better"
    )
    assert sequential_compare(mean_stats(5000, 10, 3), mean_stats(5000, 9, 3)).decision == "control_better"


PAYLOAD: dict[str, Any] = {
    "metric": "proportion",
    "sequential": True,
    "variants": [
        {"name": "control", "n": 10_000, "conversions": 1000},
        {"name": "short", "n": 10_000, "conversions": 1100},
        {"name": "emoji", "n": 10_000, "conversions": 1010},
    ],
}


def test_analyze_reports_every_documented_field_with_holm_adjustment() -> None:
    """analyze() returns the documented JSON shape; 'significant' uses the Holm-adjusted p-value."""
    out = analyze(PAYLOAD)
    assert out["srm_flag"] is False and out["srm_p_value"] > 0.001 and out["control"] == "control"
    short, emoji = out["results"]
    assert set(short) == {
        "variant", "absolute_effect", "relative_effect", "p_value", "adjusted_p_value", "ci_low", "ci_high",
        "chance_to_win", "significant", "power", "remaining_sample_size", "seq_ci_low", "seq_ci_high",
        "seq_decision",
    }  # fmt: skip
    assert short["adjusted_p_value"] == pytest.approx(2 * short["p_value"])
    assert short["significant"] is True and emoji["significant"] is False
    json.dumps(out, allow_nan=False)


def test_analyze_flags_sample_ratio_mismatch_against_given_weights() -> None:
    """Counts 50/50 against planned weights 80/20 set srm_flag."""
    payload = {**PAYLOAD, "variants": PAYLOAD["variants"][:2], "weights": [0.8, 0.2], "sequential": False}
    out = analyze(payload)
    assert out["srm_flag"] is True and "seq_decision" not in out["results"][0]


def test_analyze_handles_mean_metrics() -> None:
    """A mean payload with sum and sum of squares gives a Welch comparison."""
    out = analyze({"metric": "mean", "variants": [
        {"name": "control", "n": 400, "sum": 4000.0, "sum_squares": 4000 * 10 + 16 * 399},
        {"name": "b", "n": 500, "sum": 5250.0, "sum_squares": 5250 * 10.5 + 25 * 499}]})  # fmt: skip
    assert out["results"][0]["p_value"] == pytest.approx(0.095581, abs=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"variants": [{"name": "a", "n": 10, "conversions": 1}, {"name": "b", "n": 10, "conversions": 11}]},
         "variants[1].conversions: must be <= n (10)"),
        ({"metric": "ratio"}, "metric: must be 'proportion' or 'mean', got 'ratio'"),
        ({"alpha": 1.5}, "alpha: input should be less than 1"),
        ({"variants": [{"name": "a", "n": 10, "conversions": 1}]},
         "variants: list should have at least 2 items"),
        ({"variants": [{"name": "a", "n": -1, "conversions": 0}, {"name": "b", "n": 1, "conversions": 0}]},
         "variants[0].n: input should be greater than or equal to 0"),
        ({"variants": [{"name": "a", "n": 5, "conversion": 1}, {"name": "b", "n": 5, "conversions": 1}]},
         "variants[0].conversions: field required"),
        ({"variants": [{"name": "a", "n": 5, "conversions": 1}, {"name": "a", "n": 5, "conversions": 1}]},
         "variants[1].name: duplicate of variants[0] ('a')"),
        ({"weights": [1, 1]}, "weights: must give one weight per variant (3), got 2"),
        ({"weights": [1, 0, 1]}, "weights[1]: input should be greater than 0"),
        ({"metric": "mean", "variants": [{"name": "a", "n": 2, "sum": 4.0, "sum_squares": 1.0},
                                         {"name": "b", "n": 2, "sum": 4.0, "sum_squares": 8.0}]},
         "variants[0].sum_squares: must be >= sum**2 / n"),
    ],
)  # fmt: skip
def test_analyze_rejects_bad_payloads_naming_the_field(change: dict[str, Any], message: str) -> None:
    """Each invalid payload raises PayloadError whose problems name the field and what is wrong."""
    with pytest.raises(PayloadError) as caught:
        analyze({**PAYLOAD, **change})
    assert any(problem.startswith(message) for problem in caught.value.problems), caught.value.problems


def test_cli_prints_json_or_a_table_and_exits_2_on_bad_input() -> None:
    """`analyze --input - --json` prints the report; a bad payload exits 2 naming the field on stderr."""
    runner = CliRunner()
    ok = runner.invoke(app, ["analyze", "--input", "-", "--json"], input=json.dumps(PAYLOAD))
    assert ok.exit_code == 0 and json.loads(ok.stdout) == analyze(PAYLOAD)
    table = runner.invoke(app, ["analyze", "--input", "-"], input=json.dumps(PAYLOAD))
    assert table.exit_code == 0 and "short" in table.stdout and "seq decision" in table.stdout
    bad = {
        **PAYLOAD,
        "variants": [{"name": "a", "n": 1, "conversions": 2}, {"name": "b", "n": 1, "conversions": 0}],
    }
    failed = runner.invoke(app, ["analyze", "--input", "-"], input=json.dumps(bad))
    assert failed.exit_code == 2 and "variants[0].conversions: must be <= n" in failed.stderr
    missing = runner.invoke(app, ["analyze", "--input", "/nonexistent/payload.json"])
    assert missing.exit_code == 2 and "input: cannot read" in missing.stderr


@pytest.mark.parametrize("module", ["assignment", "stats", "sequential", "analyze", "cli", "__init__"])
def test_docstring_examples_run(module: str) -> None:
    """Every example in the experiments docstrings runs and prints what it shows."""
    name = "experiments" if module == "__init__" else f"experiments.{module}"
    failures, _ = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert failures == 0
