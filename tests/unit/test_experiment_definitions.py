"""Experiment definitions: the example loads, problems name file/path/reason, allocation is guarded."""

from __future__ import annotations

import copy
import doctest
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

import experiments.definitions
from experiments.definitions import (
    ExperimentDefinition,
    LoadedExperiments,
    allocation_changes,
    load_experiments,
    load_experiments_text,
    variant_for,
)
from herald.errors import ConfigError
from policies.loader import PolicyError
from policies.segments import Segment, load_segments

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"
SEGMENTS = load_segments(EXAMPLES / "segments.yaml")
GOLD_ES = {"kind": "CUSTOMER", "tier": "gold", "language": "es", "country": "US"}


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def experiment(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "welcome-subject-v2",
        "tenant": "acme-home",
        "template": "welcome-email",
        "variants": [
            {"name": "control", "template_version": 1, "weight": 50},
            {"name": "v2", "template_version": 2, "weight": 50},
        ],
        "segment": "gold_customers_es",
        "start": "2026-12-01T00:00:00Z",
        "stop": "2026-12-21T00:00:00Z",
        "primary_metric": "open_rate",
        "mde": 0.05,
    }
    base.update(overrides)
    return base


def load(*entries: dict[str, Any]) -> LoadedExperiments:
    return load_experiments_text(yaml.safe_dump({"experiments": list(entries)}), SEGMENTS, source="exp.yaml")


def problems(*entries: dict[str, Any]) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load(*entries)
    return [str(p) for p in caught.value.problems]


def defn(**overrides: Any) -> ExperimentDefinition:
    return load(experiment(**overrides)).definitions[overrides.get("id", "welcome-subject-v2")]


def test_example_file_loads_with_the_example_segments() -> None:
    """The shipped example is valid against the shipped segments and covers both tenants."""
    loaded = load_experiments(EXAMPLES / "experiments.yaml", SEGMENTS)
    assert len(loaded.version) == 12
    assert {d.tenant for d in loaded.definitions.values()} == {"acme-home", "brightfix"}
    assert all(d.variants[0].name == "control" for d in loaded.definitions.values())


def test_module_doctests_pass() -> None:
    """The module's docstring examples run."""
    assert doctest.testmod(experiments.definitions).failed == 0


def test_field_problems_are_all_reported_with_file_path_and_reason() -> None:
    """Several field errors across entries come back at once as ``file: experiments[i].field: reason``."""
    found = problems(
        experiment(
            id="Bad Id",
            variants=[
                {"name": "v2", "template_version": 1, "weight": 0},
                {"name": "v2", "template_version": 1, "weight": 1},
            ],
            stop="2026-11-01T00:00:00Z",
            primary_metric="revenue",
            alpha=0.5,
            mde=1.5,
            holdout=0.5,
            layer={"name": "welcome", "buckets": [60, 40]},
            colour="blue",
        ),
        experiment(
            id="ok-but-one-variant", variants=[{"name": "control", "template_version": 1, "weight": 1}]
        ),
    )
    text = "\n".join(found)
    assert all(line.startswith("exp.yaml: experiments[") for line in found)
    for expected in (
        "experiments[0].id: String should match pattern",
        "experiments[0].variants[0].weight: Input should be greater than 0",
        "experiments[0].stop: must be after start",
        "experiments[0].primary_metric: Input should be",
        "experiments[0].alpha: Input should be less than 0.5",
        "experiments[0].mde: Input should be less than 1",
        "experiments[0].holdout: Input should be less than 0.5",
        "experiments[0].layer.buckets: must be [low, high)",
        "experiments[0].colour: Extra inputs are not permitted",
        "experiments[1].variants: Tuple should have at least 2 items",
    ):
        assert expected in text, expected


def test_variant_rules_name_control_first_and_unique_names_and_versions() -> None:
    """The first variant must be the control; names and template versions must not repeat."""
    variants = [
        {"name": "treatment", "template_version": 1, "weight": 1},
        {"name": "treatment", "template_version": 1, "weight": 1},
    ]
    (line,) = problems(experiment(variants=variants))
    assert line.startswith("exp.yaml: experiments[0].variants: the first variant must be named 'control'")
    assert "duplicate name treatment" in line and "duplicate template_version 1" in line


def test_naive_timestamps_are_rejected() -> None:
    """Start and stop need a timezone so the window means the same instant everywhere."""
    (line,) = problems(experiment(start="2026-12-01T00:00:00"))
    assert line.startswith("exp.yaml: experiments[0].start:")


def test_cross_checks_report_duplicate_ids_unknown_segments_and_layer_overlaps() -> None:
    """Duplicate ids, unknown segments (with a suggestion) and overlapping live layer slices are reported."""
    found = problems(
        experiment(layer={"name": "welcome", "buckets": [0, 50]}),
        experiment(segment="gold_customer_es"),
        experiment(id="other", layer={"name": "welcome", "buckets": [40, 100]}, start="2026-12-20T00:00:00Z"),
    )
    assert found == [
        "exp.yaml: experiments[1].id: duplicate id 'welcome-subject-v2' (see experiments[0])",
        "exp.yaml: experiments[1].segment: unknown segment 'gold_customer_es';"
        " did you mean 'gold_customers_es'?",
        "exp.yaml: experiments[2].layer.buckets: overlaps experiments[0] ('welcome-subject-v2') in layer "
        "'welcome' while both run",
    ]


def test_layer_slices_may_overlap_when_time_tenant_or_buckets_do_not() -> None:
    """Overlap needs the same tenant, layer, buckets and time; back-to-back windows are fine."""
    loaded = load(
        experiment(id="a", layer={"name": "welcome", "buckets": [0, 50]}),
        experiment(id="b", layer={"name": "welcome", "buckets": [50, 100]}),
        experiment(
            id="c",
            layer={"name": "welcome", "buckets": [0, 50]},
            start="2026-12-21T00:00:00Z",
            stop="2027-01-01T00:00:00Z",
        ),
        experiment(id="d", tenant="brightfix", layer={"name": "welcome", "buckets": [0, 50]}),
    )
    assert sorted(loaded.definitions) == ["a", "b", "c", "d"]


def test_file_level_problems_are_reported_without_a_field() -> None:
    """A file that is not ``experiments: [...]`` or not YAML is rejected with the file name."""
    for text in ("experiments: {}", "- 1", "experiments: [", "experiments: []\nextra: 1"):
        with pytest.raises(ConfigError, match=r"^exp\.yaml: "):
            load_experiments_text(text, SEGMENTS, source="exp.yaml")


def test_version_ignores_formatting_but_not_meaning() -> None:
    """The content hash is stable under key order and defaults, and moves when a value changes."""
    plain = load(experiment())
    spelled = load(dict(reversed(list(experiment(alpha=0.05, holdout=0.0).items()))))
    assert plain.version == spelled.version
    assert load(experiment(mde=0.1)).version != plain.version


RUNNING = ms("2026-12-10T00:00:00")


@pytest.mark.parametrize(
    "change",
    [
        {
            "variants": [
                {"name": "control", "template_version": 1, "weight": 70},
                {"name": "v2", "template_version": 2, "weight": 30},
            ]
        },
        {"holdout": 0.1},
        {"segment": "spanish_speakers_us"},
        {"layer": {"name": "welcome", "buckets": [0, 40]}},
    ],
)
def test_allocation_change_of_a_running_experiment_is_detected(change: dict[str, Any]) -> None:
    """Weights, holdout, segment or layer of a running experiment cannot change silently."""
    old = load(experiment(layer={"name": "welcome", "buckets": [0, 50]}))
    new = load(experiment(**{"layer": {"name": "welcome", "buckets": [0, 50]}, **change}))
    assert allocation_changes(old, new, RUNNING) == ["welcome-subject-v2"]


def test_removing_a_running_experiment_counts_as_an_allocation_change() -> None:
    """Dropping a running experiment is a change; ending it early is done by moving stop."""
    old = load(experiment(), experiment(id="other"))
    assert allocation_changes(old, load(experiment(id="other")), RUNNING) == ["welcome-subject-v2"]
    assert (
        allocation_changes(
            old, load(experiment(stop="2026-12-11T00:00:00Z"), experiment(id="other")), RUNNING
        )
        == []
    )


def test_non_allocation_fields_and_finished_or_future_experiments_may_change() -> None:
    """Description, mde, metrics and template versions are free; so is anything not running now."""
    old = load(experiment())
    free = experiment(description="new words", mde=0.1, guardrail_metrics=["delivery_rate"], alpha=0.01)
    assert allocation_changes(old, load(free), RUNNING) == []
    reweighted = load(experiment(holdout=0.2))
    assert allocation_changes(old, reweighted, ms("2026-11-30T23:59:59")) == []  # not started
    assert allocation_changes(old, reweighted, ms("2026-12-21T00:00:00")) == []  # stop is exclusive


def test_variant_for_is_none_outside_the_time_window() -> None:
    """Before start and from stop on, nobody is in the experiment."""
    d = defn()
    assert variant_for(d, "user-1", GOLD_ES, None, d.start_ms - 1, SEGMENTS) is None
    assert variant_for(d, "user-1", GOLD_ES, None, d.stop_ms, SEGMENTS) is None
    assert variant_for(d, "user-1", GOLD_ES, None, d.start_ms, SEGMENTS) in {"control", "v2"}


def test_variant_for_is_none_outside_the_segment() -> None:
    """A recipient the segment does not match gets no variant."""
    d = defn()
    assert variant_for(d, "user-1", {**GOLD_ES, "tier": "silver"}, None, RUNNING, SEGMENTS) is None


def test_variant_for_is_sticky_and_splits_by_weight() -> None:
    """The same recipient always gets the same variant, and both variants get traffic."""
    d = defn()
    first = [variant_for(d, f"user-{i}", GOLD_ES, None, RUNNING, SEGMENTS) for i in range(2000)]
    again = [variant_for(d, f"user-{i}", GOLD_ES, None, RUNNING + 86_400_000, SEGMENTS) for i in range(2000)]
    assert first == again
    assert 900 < first.count("control") < 1100


def test_holdout_keeps_its_fraction_out_of_every_variant() -> None:
    """About ``holdout`` of recipients get None, the same ones every time."""
    d = defn(holdout=0.2)
    out = [variant_for(d, f"user-{i}", GOLD_ES, None, RUNNING, SEGMENTS) for i in range(4000)]
    assert 700 < out.count(None) < 900
    assert {v for v in out if v is not None} == {"control", "v2"}


def test_layer_slices_partition_recipients_between_experiments() -> None:
    """Two experiments on disjoint halves of a layer never share a recipient and together cover all."""
    halves = load(
        experiment(id="a", layer={"name": "welcome", "buckets": [0, 50]}),
        experiment(id="b", layer={"name": "welcome", "buckets": [50, 100]}),
    ).definitions
    ids = [f"user-{i}" for i in range(2000)]
    in_a = {u for u in ids if variant_for(halves["a"], u, GOLD_ES, None, RUNNING, SEGMENTS)}
    in_b = {u for u in ids if variant_for(halves["b"], u, GOLD_ES, None, RUNNING, SEGMENTS)}
    assert not in_a & in_b
    assert in_a | in_b == set(ids)
    assert 900 < len(in_a) < 1100


def test_variant_for_raises_when_the_segment_was_not_loaded() -> None:
    """Asking with a different segment mapping than the one loaded against is a bug, not a None."""
    with pytest.raises(ConfigError, match="gold_customers_es"):
        variant_for(defn(), "user-1", GOLD_ES, None, RUNNING, {"x": Segment.parse("x", 'tier == "gold"')})


def test_definitions_are_frozen() -> None:
    """A loaded definition cannot be mutated behind the fingerprint's back."""
    d = defn()
    with pytest.raises(ValueError):
        d.holdout = 0.3
    assert copy.deepcopy(d) == d
