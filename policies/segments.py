"""Segments: named, validated rules over recipient attributes and engagement, loaded from YAML.

The rule language lives in policies/segment_parser.py (text to tree) and policies/segment_rules.py
(attributes and meaning); docs/segments.md is the reference for product owners.
Evaluation is a pure function of (recipient attributes, engagement profile, now_ms); nothing here
reads the clock, and a recipient without a profile has zero counts and never opened anything.

>>> gold_es = Segment.parse("gold_es", 'tier in ("gold", "platinum") and language == "es"')
>>> gold_es.matches({"kind": "CUSTOMER", "tier": "gold", "language": "es"}, None, now_ms=0)
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from herald.errors import ConfigError
from herald.yaml_files import read_yaml
from policies.engagement import EngagementProfile
from policies.segment_parser import MAX_RULE_CONDITIONS, MAX_RULE_DEPTH, parse_rule
from policies.segment_rules import ATTRIBUTES, FUNCTIONS, Compare, Condition, Junction, Not, RuleError

__all__ = [
    "ATTRIBUTES",
    "FUNCTIONS",
    "MAX_RULE_CHARS",
    "MAX_RULE_CONDITIONS",
    "MAX_RULE_DEPTH",
    "MAX_SEGMENT_DESCRIPTION_CHARS",
    "MAX_SEGMENT_NAME_CHARS",
    "Condition",
    "RuleError",
    "Segment",
    "SegmentDefinition",
    "load_segments",
    "parse_rule",
]

_EMPTY = EngagementProfile()


# Bounds of one segment, whoever writes it (a file or the API: the same model); the rule's conditions
# and nesting are counted by the parser (MAX_RULE_CONDITIONS, MAX_RULE_DEPTH).
MAX_SEGMENT_NAME_CHARS = 64
MAX_SEGMENT_DESCRIPTION_CHARS = 2_000
MAX_RULE_CHARS = 2_000


class SegmentDefinition(BaseModel):
    """A segment as written in YAML: a stable name, a sentence for humans, and the rule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(max_length=MAX_SEGMENT_NAME_CHARS, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    description: str = Field("", max_length=MAX_SEGMENT_DESCRIPTION_CHARS)
    rule: str = Field(min_length=1, max_length=MAX_RULE_CHARS)


class _SegmentFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    segments: list[dict[str, Any]]  # each entry is checked by Segment.from_data


@dataclass(frozen=True, slots=True)
class Segment:
    """A parsed, type-checked segment; ``matches`` is pure and cheap.

    >>> dormant = Segment.parse("dormant", 'kind == "customer" and not opened_within(30d)')
    >>> dormant.matches({"kind": "CUSTOMER"}, None, now_ms=0)  # no profile: never opened
    True
    """

    definition: SegmentDefinition
    condition: Condition

    @classmethod
    def parse(cls, name: str, rule: str, description: str = "") -> Segment:
        """Validate the definition and parse its rule; raises ConfigError/RuleError."""
        try:
            definition = SegmentDefinition(name=name, rule=rule, description=description)
        except ValidationError as exc:
            raise ConfigError(f"segment {name}: {_first_problem(exc)}") from None
        return cls(definition, parse_rule(rule, name))

    @classmethod
    def from_data(cls, data: Any) -> Segment:
        """A segment from its mapping ``{name, description, rule}`` (a file entry, an API body) with the
        checks of :func:`load_segments`; raises ConfigError ``field: reason`` for the first problem.

        >>> Segment.from_data({"name": "gold", "rule": 'tier == "gold"'}).name
        'gold'
        >>> Segment.from_data({"name": "Gold", "rule": "true"})
        Traceback (most recent call last):
        ...
        herald.errors.ConfigError: name: String should match pattern '^[a-z0-9][a-z0-9_-]{0,63}$'
        """
        try:
            definition = SegmentDefinition.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_first_problem(exc)) from None
        try:
            return cls(definition, parse_rule(definition.rule, definition.name))
        except RuleError as exc:
            raise ConfigError(f"rule: {exc}") from None

    @property
    def name(self) -> str:
        """The segment's stable name."""
        return self.definition.name

    @property
    def reads_engagement(self) -> bool:
        """Whether the rule reads the engagement history (so a caller must look the profile up).

        >>> Segment.parse("a", 'tier == "gold"').reads_engagement
        False
        >>> Segment.parse("b", 'tier == "gold" and not opened_within(30d)').reads_engagement
        True
        """
        return _reads_engagement(self.condition)

    def matches(self, recipient: Mapping[str, Any], profile: EngagementProfile | None, now_ms: int) -> bool:
        """Whether the recipient (contract attributes) with this engagement is in the segment at now_ms.

        A recipient without a profile has zero counts and never opened, clicked or replied.
        """
        return self.condition.evaluate(recipient, profile if profile is not None else _EMPTY, now_ms)


def _reads_engagement(condition: Condition) -> bool:
    if isinstance(condition, Compare):
        return condition.attribute.kind != "text"
    if isinstance(condition, Not):
        return _reads_engagement(condition.operand)
    if isinstance(condition, Junction):
        return any(_reads_engagement(o) for o in condition.operands)
    return False


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
    return f"{where.lstrip('.') or 'file'}: {error['msg']}"


def load_segments(path: str | Path) -> dict[str, Segment]:
    """Segments by name from a YAML file ``segments: [{name, description, rule}, ...]``.

    Raises ConfigError naming the file, the field (``segments[2].rule``) and the reason.

    >>> from pathlib import Path
    >>> sorted(load_segments(Path(__file__).parent / "examples" / "segments.yaml"))[:2]
    ['deliverability_risk', 'dormant_customers']
    """
    data = read_yaml(path, "segments file")
    try:
        parsed = _SegmentFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_first_problem(exc)}") from None
    segments: dict[str, Segment] = {}
    for i, entry in enumerate(parsed.segments):
        try:
            segment = Segment.from_data(entry)
        except ConfigError as exc:
            raise ConfigError(f"{path}: segments[{i}].{exc}") from None
        if segment.name in segments:
            raise ConfigError(f"{path}: segments[{i}].name: duplicate segment name {segment.name!r}")
        segments[segment.name] = segment
    return segments
