"""Variant assignment: deterministic, sticky, balanced, independent across experiments, validated."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections import Counter
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps

from experiments.assignment import (
    assign_layer,
    assign_variant,
    assign_variants,
    exposure_mask,
    in_exposure,
    unit_positions,
)
from herald.errors import ConfigError

FIFTY_FIFTY = [("control", 0.5), ("treatment", 0.5)]
THREE_WAY = [("control", 0.5), ("short", 0.3), ("emoji", 0.2)]
SRM_ALPHA = 0.001


@pytest.fixture(scope="module")
def million_ids() -> list[str]:
    return [f"recipient-{i:07d}" for i in range(1_000_000)]


def test_assignment_matches_golden_values() -> None:
    """The hash is a published contract: these pinned answers must never change between releases."""
    assert [assign_variant("exp-subject-line", f"user-{i}", FIFTY_FIFTY) for i in range(1, 9)] == [
        "control",
        "control",
        "control",
        "treatment",
        "control",
        "control",
        "control",
        "treatment",
    ]
    assert unit_positions("exp-1", ["a"]).tolist() == [0.39146374287434416]


def test_position_follows_the_published_formula() -> None:
    """Position = top 53 bits of blake2b-64(person=purpose, u32le(len salt) + salt + unit) / 2**53."""
    salt, unit = "exp-ünïcode", "técnico-7"
    data = len(salt.encode()).to_bytes(4, "little") + salt.encode() + unit.encode()
    digest = hashlib.blake2b(data, digest_size=8, person=b"herald.variant").digest()
    expected = (int.from_bytes(digest, "little") >> 11) / 2**53
    assert unit_positions(salt, [unit]).tolist() == [expected]


def test_assignment_is_identical_across_processes_with_different_hash_seeds() -> None:
    """Another Python process (different PYTHONHASHSEED) assigns every unit the same variant."""
    ids = [f"u{i}" for i in range(200)]
    script = (
        "from experiments.assignment import assign_variants;"
        f"print(','.join(assign_variants('exp-x', {ids!r}, {THREE_WAY!r})))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().split(",") == assign_variants("exp-x", ids, THREE_WAY)


def test_assignment_is_sticky_for_repeated_calls() -> None:
    """Asking again for the same unit returns the same variant."""
    first = [assign_variant("exp-1", f"u{i}", THREE_WAY) for i in range(1000)]
    assert first == [assign_variant("exp-1", f"u{i}", THREE_WAY) for i in range(1000)]


def test_batch_path_agrees_with_single_path_including_unicode_ids() -> None:
    """assign_variants and exposure_mask give exactly the single-unit answers, non-ASCII ids included."""
    ids = [f"u{i}" for i in range(2000)] + ["técnico-7", "用户-1", "", "a" * 300]
    assert assign_variants("exp-2", ids, THREE_WAY) == [assign_variant("exp-2", u, THREE_WAY) for u in ids]
    mask = exposure_mask("exp-2", ids, 0.3).tolist()
    assert mask == [in_exposure("exp-2", u, 0.3) for u in ids]


def test_weights_are_scale_free() -> None:
    """Weights 1:1 and 0.5:0.5 (or 50:30:20 and 0.5:0.3:0.2) assign identically."""
    ids = [f"u{i}" for i in range(2000)]
    assert assign_variants("e", ids, [("a", 1), ("b", 1)]) == assign_variants(
        "e", ids, [("a", 0.5), ("b", 0.5)]
    )
    assert assign_variants("e", ids, [("a", 50), ("b", 30), ("c", 20)]) == assign_variants(
        "e", ids, [("a", 0.5), ("b", 0.3), ("c", 0.2)]
    )


@pytest.mark.parametrize("variants", [FIFTY_FIFTY, THREE_WAY], ids=["50-50", "50-30-20"])
def test_one_million_assignments_pass_the_sample_ratio_test(
    million_ids: list[str], variants: list[tuple[str, float]]
) -> None:
    """Observed counts over 1M ids match the weights: chi-square SRM p-value above 0.001."""
    counts = Counter(assign_variants("exp-balance", million_ids, variants))
    observed = [counts[name] for name, _ in variants]
    expected = [w * len(million_ids) for _, w in variants]
    assert sps.chisquare(observed, expected).pvalue > SRM_ALPHA


def test_assignments_of_two_experiments_are_independent(million_ids: list[str]) -> None:
    """A unit's variant in one experiment says nothing of its variant in another (contingency test)."""
    first = np.array(assign_variants("exp-a", million_ids, FIFTY_FIFTY))
    second = np.array(assign_variants("exp-b", million_ids, THREE_WAY))
    table = [[np.sum((first == a) & (second == b)) for b, _ in THREE_WAY] for a, _ in FIFTY_FIFTY]
    assert sps.chi2_contingency(table).pvalue > SRM_ALPHA


def test_zero_weight_variants_never_receive_units() -> None:
    """A variant with weight 0, first, middle or last, gets nobody; the others split the traffic."""
    ids = [f"u{i}" for i in range(20_000)]
    for variants in (
        [("a", 0), ("b", 1), ("c", 1)],
        [("a", 1), ("b", 0), ("c", 1)],
        [("a", 1), ("b", 1), ("c", 0)],
    ):
        counts = Counter(assign_variants("exp-z", ids, variants))
        zero = next(name for name, w in variants if w == 0)
        assert counts[zero] == 0
        assert sum(counts.values()) == len(ids)


def test_exposure_honours_the_fraction_and_only_grows_when_ramped() -> None:
    """About f of units are exposed; raising f keeps everyone already exposed; 0 and 1 are exact."""
    ids = [f"u{i}" for i in range(100_000)]
    ten, fifty = exposure_mask("exp-r", ids, 0.1), exposure_mask("exp-r", ids, 0.5)
    assert sps.binomtest(int(ten.sum()), len(ids), 0.1).pvalue > SRM_ALPHA
    assert np.all(fifty[ten])
    assert not exposure_mask("exp-r", ids, 0.0).any() and exposure_mask("exp-r", ids, 1.0).all()


def test_exposure_is_independent_of_the_variant() -> None:
    """Exposed units are split across variants like everyone else (no bias to the first variant)."""
    ids = [f"u{i}" for i in range(200_000)]
    exposed = exposure_mask("exp-i", ids, 0.3)
    variants = np.array(assign_variants("exp-i", ids, FIFTY_FIFTY))
    table = [[np.sum(exposed & (variants == v)), np.sum(~exposed & (variants == v))] for v, _ in FIFTY_FIFTY]
    assert sps.chi2_contingency(table).pvalue > SRM_ALPHA


def test_layer_buckets_are_mutually_exclusive_and_honour_fractions() -> None:
    """Each unit lands in at most one bucket of a layer, in proportion to the fractions, or in none."""
    buckets = [("exp-a", 0.2), ("exp-b", 0.3)]
    ids = [f"u{i}" for i in range(100_000)]
    counts = Counter(assign_layer("layer-push", u, buckets) for u in ids)
    observed = [counts["exp-a"], counts["exp-b"], counts[None]]
    assert sps.chisquare(observed, [20_000, 30_000, 50_000]).pvalue > SRM_ALPHA
    assert assign_layer("layer-push", "u1", []) is None
    tenths = [(f"exp-{k}", 0.1) for k in range(10)]
    assert all(assign_layer("layer-push", u, tenths) is not None for u in ids[:20_000])


def test_layer_and_experiment_inside_it_are_independent() -> None:
    """The variant inside a layer's bucket does not depend on which bucket the unit fell into."""
    ids = [f"u{i}" for i in range(100_000)]
    layer = np.array([assign_layer("layer-1", u, [("x", 0.5), ("y", 0.5)]) for u in ids])
    variants = np.array(assign_variants("exp-in-layer", ids, FIFTY_FIFTY))
    table = [[np.sum((layer == b) & (variants == v)) for v, _ in FIFTY_FIFTY] for b in ("x", "y")]
    assert sps.chi2_contingency(table).pvalue > SRM_ALPHA


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([], "variants: must name at least one variant"),
        ([("a", 0), ("b", 0)], "variants: weights must not all be zero"),
        ([("a", 1), ("b", -0.5)], "variants[1] ('b'): weight must be a finite number >= 0"),
        ([("a", float("nan"))], "variants[0] ('a'): weight must be a finite number >= 0"),
        ([("a", 1), ("a", 1)], "variants[1]: duplicate name 'a'"),
        ([("a", "heavy")], "variants[0]: must be a (name, weight) pair"),
        ([["a", 1], ["b", -1]], "variants[1] ('b'): weight must be"),
    ],
)
def test_invalid_weights_raise_config_error_naming_the_problem(variants: list[Any], message: str) -> None:
    """Empty, all-zero, negative, NaN, duplicate or malformed variants raise ConfigError saying why."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        assign_variant("exp", "u1", variants)


def test_invalid_salt_fraction_and_layer_raise_config_error() -> None:
    """An empty salt, a fraction outside [0, 1] and layer fractions above 1 are rejected."""
    with pytest.raises(ConfigError, match="salt"):
        assign_variant("", "u1", FIFTY_FIFTY)
    with pytest.raises(ConfigError, match="traffic_fraction"):
        in_exposure("exp", "u1", 1.5)
    with pytest.raises(ConfigError, match="sum to <= 1"):
        assign_layer("layer", "u1", [("a", 0.6), ("b", 0.6)])
