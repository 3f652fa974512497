"""The registry's pure core: the snapshot of files plus change events, and what happens when the files
change after API objects were written (the files win, the reasons are listed)."""

from __future__ import annotations

import doctest
from typing import Any

import pytest

import experiments.registry
from experiments.definitions import load_experiments_text
from experiments.registry import (
    Change,
    ConflictError,
    FileDefinitions,
    InvalidDefinitionError,
    RegistrySnapshot,
    create_experiment,
    create_segment,
    delete_experiment,
    fold,
    update_experiment,
)
from policies.segments import Segment

NOW_MS = 1_765_000_000_000  # 2025-12-06, inside every window below
GOLD = {"gold": Segment.parse("gold", 'tier == "gold"')}
LAYERED = """
experiments:
  - {id: file-exp, tenant: acme, template: t, variants: [{name: control, template_version: 1, weight: 1},
       {name: v2, template_version: 2, weight: 1}], start: 2025-12-01T00:00:00Z, stop: 2025-12-31T00:00:00Z,
     primary_metric: open_rate, mde: 0.05, layer: {name: l, buckets: [0, 50]}}
"""


def body(experiment_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "id": experiment_id,
        "template": "t",
        "variants": [
            {"name": "control", "template_version": 1, "weight": 1},
            {"name": "v2", "template_version": 2, "weight": 1},
        ],
        "start": "2025-12-01T00:00:00Z",
        "stop": "2025-12-31T00:00:00Z",
        "primary_metric": "open_rate",
        "mde": 0.05,
        **overrides,
    }


def written(files: FileDefinitions, *plans: Any) -> list[Change]:
    """The changes of ``plans`` (each ``snapshot -> Change``) applied one after another."""
    changes: list[Change] = []
    for plan in plans:
        changes.append(plan(fold(files, changes)))
    return changes


def test_module_doctests_pass() -> None:
    assert doctest.testmod(experiments.registry).failed == 0


def test_api_experiments_that_a_changed_file_invalidates_are_left_out_with_the_reason() -> None:
    """Written against a file without layers; the file then takes the layer range and the id."""
    plain = FileDefinitions(segments=GOLD)
    changes = written(
        plain,
        lambda s: create_experiment(
            s, "acme", body("api-exp", layer={"name": "l", "buckets": [25, 75]}), NOW_MS, "a"
        ),
        lambda s: create_experiment(s, "acme", body("file-exp"), NOW_MS, "a"),
        lambda s: create_experiment(s, "acme", body("fine", segment="gold"), NOW_MS, "a"),
    )
    assert set(fold(plain, changes).experiments.definitions) == {"api-exp", "file-exp", "fine"}

    layered = FileDefinitions(load_experiments_text(LAYERED, GOLD, source="exp.yaml"), GOLD)
    snapshot = fold(layered, changes)
    assert set(snapshot.experiments.definitions) == {"file-exp", "fine"}
    assert snapshot.experiment_entries["file-exp"].source == "file"
    assert snapshot.problems == (
        "acme/experiment/file-exp v1: left out: exp.yaml defines the same id",
        "acme/experiment/api-exp: left out: layer.buckets: overlaps experiment 'file-exp' in layer 'l' "
        "while both run",
    )
    without_gold = fold(FileDefinitions(), changes)
    assert "fine" not in without_gold.experiments.definitions
    assert "acme/experiment/fine: left out: segment: unknown segment 'gold'" in without_gold.problems


def test_a_file_segment_taking_a_tenant_segment_name_leaves_the_tenant_its_own() -> None:
    """The tenant's experiments keep their segment (their allocation); other tenants get the file's."""
    plain = FileDefinitions(segments=GOLD)
    changes = written(
        plain,
        lambda s: create_segment(s, "acme", {"name": "vip", "rule": "opened > 3"}, NOW_MS, "a"),
        lambda s: create_experiment(s, "acme", body("vip-exp", segment="vip"), NOW_MS, "a"),
    )
    with_vip = FileDefinitions(segments={**GOLD, "vip": Segment.parse("vip", "clicked > 9")})
    snapshot = fold(with_vip, changes)
    assert snapshot.experiments.definitions["vip-exp"].segment == "acme/vip"
    assert snapshot.segments["acme/vip"].definition.rule == "opened > 3"
    assert snapshot.segments_for("acme")["vip"].definition.rule == "opened > 3"
    assert snapshot.segments_for("other")["vip"].definition.rule == "clicked > 9"
    assert len(snapshot.problems) == 1 and "now defines the same name" in snapshot.problems[0]


def test_versions_count_per_object_and_go_on_after_a_delete() -> None:
    files = FileDefinitions(segments=GOLD)
    later = body("later", start="2026-01-01T00:00:00Z", stop="2026-02-01T00:00:00Z")
    changes = written(
        files,
        lambda s: create_experiment(s, "acme", later, NOW_MS, "a"),
        lambda s: update_experiment(s, "acme", "later", {**later, "description": "x"}, NOW_MS, "a"),
        lambda s: delete_experiment(s, "acme", "later", NOW_MS, "a"),
        lambda s: create_experiment(s, "acme", later, NOW_MS, "a"),
        lambda s: create_experiment(s, "other", body("other-exp"), NOW_MS, "b"),
    )
    assert [(c.tenant, c.object_id, c.version, c.action) for c in changes] == [
        ("acme", "later", 1, "created"),
        ("acme", "later", 2, "updated"),
        ("acme", "later", 3, "deleted"),
        ("acme", "later", 4, "created"),
        ("other", "other-exp", 1, "created"),
    ]
    assert changes[2].body == "" and changes[2].definition() is None
    snapshot: RegistrySnapshot = fold(files, changes)
    assert snapshot.experiment_entries["later"].version == 4
    assert snapshot.experiment("other", "later") is None


def test_a_running_experiments_allocation_is_refused_naming_each_changed_field() -> None:
    files = FileDefinitions(segments=GOLD)
    snapshot = fold(files, written(files, lambda s: create_experiment(s, "acme", body("run"), NOW_MS, "a")))
    moved = body("run", holdout=0.1, layer={"name": "l", "buckets": [0, 10]}, stop="2025-12-20T00:00:00Z")
    with pytest.raises(ConflictError, match=r"\(layer, holdout changed\)"):
        update_experiment(snapshot, "acme", "run", moved, NOW_MS, "a")
    template_only = body("run", variants=[
        {"name": "control", "template_version": 1, "weight": 1},
        {"name": "v2", "template_version": 3, "weight": 1},
    ], stop="2025-12-20T00:00:00Z")  # fmt: skip
    assert update_experiment(snapshot, "acme", "run", template_only, NOW_MS, "a").action == "updated"
    with pytest.raises(InvalidDefinitionError) as caught:
        update_experiment(snapshot, "acme", "run", body("renamed"), NOW_MS, "a")
    assert caught.value.problems == ["id: must be 'run' as in the path, got 'renamed'"]
