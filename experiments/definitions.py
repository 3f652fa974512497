"""Experiment definitions: validated YAML, the allocation they imply, and who gets which variant.

A product owner writes experiments in YAML (see policies/examples/experiments.yaml). Loading reports
every problem at once as ``file: experiments[i].field: reason`` through :class:`PolicyError`, including
the checks across experiments (duplicate ids, unknown segments, overlapping layer ranges).

What decides assignment (id as salt, variant names and weights, layer, holdout, segment) is summed up
by :func:`allocation_fingerprint`; :func:`allocation_changes` lists running experiments whose
allocation a new file would change, so the caller can refuse it: changing it mid-flight reshuffles
recipients and invalidates the comparison. Nothing here reads the clock: ``now_ms`` is passed in.

>>> from policies.segments import Segment
>>> segments = {"gold_es": Segment.parse("gold_es", 'tier == "gold" and language == "es"')}
>>> loaded = load_experiments_text('''
... experiments:
...   - {id: subj-v2, tenant: acme-home, template: welcome-email, segment: gold_es, variants: [
...        {name: control, template_version: 1, weight: 1}, {name: v2, template_version: 2, weight: 1}],
...      start: 2026-12-01T00:00:00Z, stop: 2026-12-21T00:00:00Z, primary_metric: open_rate, mde: 0.05}
... ''', segments, source="mini.yaml")
>>> defn = loaded.definitions["subj-v2"]
>>> variant_for(defn, "user-1", {"tier": "gold", "language": "es"}, None, defn.start_ms, segments)
'v2'
>>> variant_for(defn, "user-1", {"tier": "silver", "language": "es"}, None, defn.start_ms, segments) is None
True
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from experiments.assignment import assign_layer, assign_variant, in_exposure
from herald.dates import OUT_OF_RANGE, in_range
from herald.errors import ConfigError
from policies.engagement import EngagementProfile
from policies.loader import PolicyError, PolicyProblem, read_policy_text
from policies.segments import Segment

__all__ = [
    "MAX_DESCRIPTION_CHARS",
    "MAX_ID_CHARS",
    "MAX_TEMPLATE_VERSION",
    "MAX_VARIANTS",
    "MAX_WEIGHT",
    "METRICS",
    "ExperimentDefinition",
    "LayerRange",
    "LoadedExperiments",
    "VariantSpec",
    "allocation_changes",
    "allocation_fingerprint",
    "check_experiments",
    "exposure",
    "load_experiments",
    "load_experiments_text",
    "variant_for",
]

Metric = Literal[
    "delivery_rate",
    "open_rate",
    "click_rate",
    "reply_rate",
    "unsubscribe_rate",
    "complaint_rate",
    "bounce_rate",
    "latency_mean",
]
METRICS: tuple[str, ...] = get_args(Metric)

# Bounds of what one definition may hold, so that a definition (and so a change event, and every
# snapshot that folds it) stays small whoever writes it: the API, or a file, checked by the same model.
MAX_ID_CHARS = 64
"""Ids and names: experiment, tenant, template, variant, layer, segment (the name pattern says it too)."""
MAX_DESCRIPTION_CHARS = 2_000
MAX_VARIANTS = 20
MAX_WEIGHT = 1_000_000.0
"""Weights are relative; a bound keeps their sum finite (assignment adds them up)."""
MAX_TEMPLATE_VERSION = 2**31 - 1
"""The contract's ``template_version`` is an Avro int: a larger one could not be put on an event."""
_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"  # at most MAX_ID_CHARS
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class VariantSpec(_Frozen):
    """One arm: its name, the template version it sends and its relative traffic weight."""

    name: str = Field(max_length=MAX_ID_CHARS, pattern=_NAME)
    template_version: int = Field(ge=1, le=MAX_TEMPLATE_VERSION)
    weight: float = Field(gt=0, le=MAX_WEIGHT)


class LayerRange(_Frozen):
    """The slice ``[buckets[0], buckets[1])`` of a layer's 100 buckets this experiment owns.

    Experiments in one layer with disjoint slices never share a recipient.
    """

    name: str = Field(max_length=MAX_ID_CHARS, pattern=_NAME)
    buckets: tuple[int, int]

    @field_validator("buckets")
    @classmethod
    def _range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 0 <= low < high <= 100:
            raise ValueError(f"must be [low, high) with 0 <= low < high <= 100, got [{low}, {high}]")
        return value

    def overlaps(self, other: LayerRange) -> bool:
        """Whether both ranges are in the same layer and share a bucket."""
        return (
            self.name == other.name
            and self.buckets[0] < other.buckets[1]
            and other.buckets[0] < self.buckets[1]
        )


class ExperimentDefinition(_Frozen):
    """One experiment as a product owner writes it; the first variant is the control."""

    id: str = Field(max_length=MAX_ID_CHARS, pattern=_NAME)
    tenant: str = Field(max_length=MAX_ID_CHARS, pattern=_NAME)
    template: str = Field(max_length=MAX_ID_CHARS, pattern=_NAME)
    description: str = Field("", max_length=MAX_DESCRIPTION_CHARS)
    variants: tuple[VariantSpec, ...] = Field(min_length=2, max_length=MAX_VARIANTS)
    segment: str | None = Field(None, max_length=MAX_ID_CHARS)  # an unknown name is a cross check
    start: AwareDatetime
    stop: AwareDatetime
    primary_metric: Metric
    guardrail_metrics: tuple[Metric, ...] = Field((), max_length=len(METRICS))
    mde: float = Field(gt=0, lt=1)
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    layer: LayerRange | None = None
    holdout: float = Field(default=0.0, ge=0, lt=0.5)

    @field_validator("variants")
    @classmethod
    def _variants(cls, variants: tuple[VariantSpec, ...]) -> tuple[VariantSpec, ...]:
        problems: list[str] = []
        if variants and variants[0].name != "control":
            problems.append(f"the first variant must be named 'control', got {variants[0].name!r}")
        for attribute in ("name", "template_version"):
            values = [getattr(v, attribute) for v in variants]
            duplicates = sorted({str(v) for v in values if values.count(v) > 1})
            if duplicates:
                problems.append(f"duplicate {attribute} {', '.join(duplicates)}")
        if problems:
            raise ValueError("; ".join(problems))
        return variants

    @field_validator("start", "stop")
    @classmethod
    def _in_range(cls, value: datetime) -> datetime:
        if not in_range(value):
            raise PydanticCustomError("date_range", OUT_OF_RANGE)
        return value

    @field_validator("stop")
    @classmethod
    def _stop_after_start(cls, stop: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("start")  # absent when start itself was invalid (reported there)
        if start is not None and stop <= start:
            raise ValueError(f"must be after start ({start.isoformat()})")
        return stop

    @field_validator("guardrail_metrics")
    @classmethod
    def _unique_metrics(cls, metrics: tuple[str, ...]) -> tuple[str, ...]:
        duplicates = sorted({m for m in metrics if metrics.count(m) > 1})
        if duplicates:
            raise ValueError(f"duplicate metric {', '.join(duplicates)}")
        return metrics

    @property
    def start_ms(self) -> int:
        """Start of the window in epoch milliseconds (inclusive)."""
        return (self.start - _EPOCH) // _MS

    @property
    def stop_ms(self) -> int:
        """End of the window in epoch milliseconds (exclusive)."""
        return (self.stop - _EPOCH) // _MS

    def running_at(self, now_ms: int) -> bool:
        """Whether ``start <= now < stop``."""
        return self.start_ms <= now_ms < self.stop_ms


@dataclass(frozen=True, slots=True)
class LoadedExperiments:
    """Validated experiments by id, the content version of the file and where it came from."""

    definitions: dict[str, ExperimentDefinition]
    version: str
    source: str = "<experiments>"


def load_experiments(path: str | Path, segments: Mapping[str, Segment]) -> LoadedExperiments:
    """Read and validate an experiments file; raise :class:`PolicyError` naming every problem."""
    source = str(path)
    return load_experiments_text(read_policy_text(path, source), segments, source=source)


def load_experiments_text(
    text: str, segments: Mapping[str, Segment], *, source: str = "<experiments>"
) -> LoadedExperiments:
    """Validate YAML text ``experiments: [...]`` against the known segments; ``source`` names it."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError([PolicyProblem(source, "", f"invalid YAML: {exc}")]) from None
    entries = data.get("experiments") if isinstance(data, dict) else None
    if not isinstance(entries, list) or set(data) != {"experiments"}:
        raise PolicyError([PolicyProblem(source, "", "must be a mapping with one key, experiments: [...]")])
    return check_experiments(entries, segments, source=source)


def check_experiments(
    entries: Sequence[Any], segments: Mapping[str, Segment], *, source: str = "<experiments>"
) -> LoadedExperiments:
    """Validate parsed entries (each a mapping as in the file) as one experiments file: the field checks,
    then the checks across experiments; raise :class:`PolicyError` naming every problem."""
    problems: list[PolicyProblem] = []
    valid: list[tuple[int, ExperimentDefinition]] = []
    # Each entry is validated alone so one bad experiment does not hide the others' problems.
    for i, entry in enumerate(entries):
        try:
            valid.append((i, ExperimentDefinition.model_validate(entry)))
        except ValidationError as exc:
            problems += _field_problems(source, f"experiments[{i}]", exc)
    problems += _cross_problems(source, valid, segments)
    if problems:
        raise PolicyError(problems)
    definitions = {defn.id: defn for _, defn in valid}
    return LoadedExperiments(definitions, _version(definitions), source)


def _field_problems(source: str, prefix: str, exc: ValidationError) -> list[PolicyProblem]:
    problems: list[PolicyProblem] = []
    for error in exc.errors():
        path = prefix
        for part in error["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif "[" not in part and "(" not in part:  # skip pydantic's names of union members
                path += f".{part}"
        ctx: dict[str, Any] = error.get("ctx") or {}
        reason = str(ctx["error"]) if error["type"] == "value_error" and "error" in ctx else error["msg"]
        problems.append(PolicyProblem(source, path, reason))
    return problems


def _cross_problems(
    source: str, valid: list[tuple[int, ExperimentDefinition]], segments: Mapping[str, Segment]
) -> list[PolicyProblem]:
    problems: list[PolicyProblem] = []
    first_index: dict[str, int] = {}
    for n, (i, defn) in enumerate(valid):
        if defn.id in first_index:
            problems.append(
                PolicyProblem(
                    source,
                    f"experiments[{i}].id",
                    f"duplicate id {defn.id!r} (see experiments[{first_index[defn.id]}])",
                )
            )
        first_index.setdefault(defn.id, i)
        if defn.segment is not None and defn.segment not in segments:
            close = difflib.get_close_matches(defn.segment, list(segments), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                PolicyProblem(source, f"experiments[{i}].segment", f"unknown segment {defn.segment!r}{hint}")
            )
        for j, other in valid[:n]:
            if _share_recipients(defn, other):
                assert defn.layer is not None  # _share_recipients checked it
                problems.append(
                    PolicyProblem(
                        source,
                        f"experiments[{i}].layer.buckets",
                        f"overlaps experiments[{j}] ({other.id!r}) in layer {defn.layer.name!r}"
                        " while both run",
                    )
                )
    return problems


def _share_recipients(a: ExperimentDefinition, b: ExperimentDefinition) -> bool:
    # Recipient ids are per tenant, so layers of different tenants never share a recipient.
    return (
        a.layer is not None
        and b.layer is not None
        and a.tenant == b.tenant
        and a.layer.overlaps(b.layer)
        and a.start < b.stop
        and b.start < a.stop
    )


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _version(definitions: Mapping[str, ExperimentDefinition]) -> str:
    """Short content hash of the validated file: stable across formatting, key order and entry order."""
    return _digest({key: defn.model_dump(mode="json") for key, defn in definitions.items()})


def allocation_fingerprint(defn: ExperimentDefinition) -> str:
    """Hash of what decides who gets which variant.

    That is the id (the salt), variant names and weights, layer, holdout and segment name.

    Weights are hashed as written, so rescaling them (1:1 to 50:50) counts as a change: cheap to
    avoid and safer than reasoning about float equivalence.
    """
    return _digest(
        {
            "salt": defn.id,
            "variants": [[v.name, v.weight] for v in defn.variants],
            "layer": defn.layer.model_dump(mode="json") if defn.layer else None,
            "holdout": defn.holdout,
            "segment": defn.segment,
        }
    )


def allocation_changes(old: LoadedExperiments, new: LoadedExperiments, now_ms: int) -> list[str]:
    """Ids of experiments running at ``now_ms`` in ``old`` whose allocation ``new`` changes or drops.

    The caller refuses such a file: a running experiment's allocation cannot be silently changed.
    Ending one early means moving its ``stop``, which keeps the allocation of who was already in.
    """
    changed: list[str] = []
    for key, before in sorted(old.definitions.items()):
        if not before.running_at(now_ms):
            continue
        after = new.definitions.get(key)
        if after is None or allocation_fingerprint(after) != allocation_fingerprint(before):
            changed.append(key)
    return changed


def variant_for(
    defn: ExperimentDefinition,
    recipient_id: str,
    recipient: Mapping[str, Any],
    profile: EngagementProfile | None,
    now_ms: int,
    segments: Mapping[str, Segment],
) -> str | None:
    """The variant ``recipient_id`` gets at ``now_ms``, or None when not in the experiment.

    Not in it means: outside ``[start, stop)``, outside the layer range, in the holdout, or not in
    the segment. ``segments`` is the mapping the definitions were loaded against. Sticky: the
    answer depends only on the definition's allocation and the recipient.
    """
    if not defn.running_at(now_ms):
        return None
    if defn.layer is not None:
        low, high = defn.layer.buckets
        # The "before" bucket takes the layer's first ``low`` percent; "in" is this experiment's slice.
        buckets = [("before", low / 100), ("in", (high - low) / 100)]
        if assign_layer(defn.layer.name, recipient_id, buckets) != "in":
            return None
    if defn.holdout and not in_exposure(defn.id, recipient_id, 1.0 - defn.holdout):
        return None
    if defn.segment is not None:
        segment = segments.get(defn.segment)
        if segment is None:
            raise ConfigError(f"experiment {defn.id}: segment {defn.segment!r} is not loaded")
        if not segment.matches(recipient, profile, now_ms):
            return None
    return assign_variant(defn.id, recipient_id, [(v.name, v.weight) for v in defn.variants])


def exposure(
    loaded: LoadedExperiments,
    segments: Mapping[str, Segment],
    tenant: str,
    template: str,
    recipient: Mapping[str, Any],
    now_ms: int,
    profile: EngagementProfile | None = None,
) -> tuple[ExperimentDefinition, VariantSpec] | None:
    """The experiment and variant a notification of ``template`` to ``recipient`` is exposed to: the
    first running experiment on this tenant and template the recipient is in, or None. What dispatch
    (and the simulator, standing in for it) stamps on the notification's events.
    """
    for defn in loaded.definitions.values():
        if defn.tenant != tenant or defn.template != template:
            continue
        variant = variant_for(defn, str(recipient["id"]), recipient, profile, now_ms, segments)
        if variant is not None:
            return defn, next(v for v in defn.variants if v.name == variant)
    return None
