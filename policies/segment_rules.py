"""The vocabulary and meaning of segment rules: attributes, their types, and the condition tree.

A rule (see policies/segment_parser.py for the grammar, docs/segments.md for the reference) becomes a
small tree of ``Compare``/``Not``/``Junction``/``Constant`` nodes that can only read the fixed
``ATTRIBUTES``; ``evaluate`` is a pure function of (recipient attributes, engagement profile, now_ms).
Time-since attributes (``last_open`` ...) are ages in ms: never is infinitely long ago.

>>> rule = Compare(ATTRIBUTES["bounces"], "<", 3, "3")
>>> print(rule)
bounces < 3
>>> rule.evaluate({}, EngagementProfile(bounced=5), now_ms=0)
False
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from herald.errors import ConfigError
from policies.engagement import EngagementProfile

__all__ = ["ATTRIBUTES", "FUNCTIONS", "Attribute", "Compare", "Condition", "Constant", "Junction", "Not"]
__all__ += ["SPEC", "RuleError", "TypeSpec"]

Kind = Literal["text", "number", "rate", "flag", "age"]
Reader = Callable[[Mapping[str, Any], EngagementProfile, int], Any]
_NEVER = float("inf")  # the age of something that never happened: older than any duration
KINDS = ("customer", "technician", "other")  # RecipientKind in the contract, casefolded


def _casefold(value: object) -> str | None:
    # Case-insensitive: the contract says CUSTOMER, product owners write "customer"; "US" == "us".
    return value.casefold() if isinstance(value, str) else None


def _text(name: str) -> Reader:
    return lambda recipient, profile, now_ms: _casefold(recipient.get(name))


def _field(name: str) -> Reader:
    return lambda recipient, profile, now_ms: getattr(profile, name)


def _age(name: str) -> Reader:
    return lambda recipient, profile, now_ms: (
        _NEVER if (at := getattr(profile, name)) is None else now_ms - at
    )


@dataclass(frozen=True, slots=True)
class Attribute:
    """One name a rule may read: its type and how to read it from (recipient, profile, now_ms)."""

    name: str
    kind: Kind
    read: Reader


ATTRIBUTES: Mapping[str, Attribute] = {
    a.name: a
    for a in (
        *(Attribute(n, "text", _text(n)) for n in ("kind", "tier", "role", "language", "country")),
        *(Attribute(n, "number", _field(n)) for n in ("sent", "delivered", "opened", "clicked", "replied")),
        Attribute("bounces", "number", _field("bounced")),
        Attribute("complaints", "number", _field("complained")),
        Attribute("unsubscribed", "flag", _field("unsubscribed")),
        Attribute("open_rate", "rate", _field("open_rate")),
        Attribute("click_rate", "rate", _field("click_rate")),
        *(Attribute(n, "age", _age(n)) for n in ("last_open", "last_click", "last_reply")),
    )
}
# f(d) is shorthand for "the age attribute <= d" (never opened is never within any duration).
FUNCTIONS: Mapping[str, str] = {
    "opened_within": "last_open",
    "clicked_within": "last_click",
    "replied_within": "last_reply",
    "last_reply_within": "last_reply",
}
_OPS: Mapping[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """How rules may use one attribute type, and the words its error messages use."""

    noun: str
    ops: tuple[str, ...]
    token: str  # the literal token kind it compares with
    wanted: str
    example: str


SPEC: Mapping[Kind, TypeSpec] = {
    "text": TypeSpec("text attribute", ("==", "!=", "in"), "string", "a quoted string", 'tier == "gold"'),
    "number": TypeSpec("count", (*_OPS, "in"), "number", "a number", "bounces < 3"),
    "rate": TypeSpec("rate", tuple(_OPS), "number", "a number between 0 and 1", "click_rate >= 0.1"),
    "flag": TypeSpec("flag", ("==", "!="), "keyword", "true or false", "not unsubscribed"),
    "age": TypeSpec("duration", ("<", "<=", ">", ">="), "duration", "a duration like 30d", "last_open > 30d"),
}


class RuleError(ConfigError):
    """A rule does not parse or type-check; ``column`` is 1-based in ``rule``."""

    def __init__(self, segment: str, rule: str, column: int, problem: str, hint: str = "") -> None:
        shown = rule.replace("\n", " ").replace("\t", " ")  # one char each, so the caret stays aligned
        suffix = f" ({hint})" if hint else ""
        super().__init__(
            f"segment {segment}: {problem} at column {column}{suffix}\n  {shown}\n  {' ' * (column - 1)}^"
        )
        self.segment, self.rule, self.column, self.problem, self.hint = segment, rule, column, problem, hint


# --- tree ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compare:
    """``attribute op value``; for ``in`` the value is a frozenset."""

    attribute: Attribute
    op: str
    value: Any
    shown: str  # the literal as written, for str()

    def evaluate(self, recipient: Mapping[str, Any], profile: EngagementProfile, now_ms: int) -> bool:
        actual = self.attribute.read(recipient, profile, now_ms)
        if self.op == "in":
            return actual in self.value
        if self.op == "!=":  # a missing attribute differs from every value (tier != "gold" for technicians)
            return bool(actual != self.value)
        return actual is not None and _OPS[self.op](actual, self.value)

    def __str__(self) -> str:
        if self.attribute.kind == "flag" and self.shown == "":
            return self.attribute.name
        return f"{self.attribute.name} {self.op} {self.shown}"


@dataclass(frozen=True, slots=True)
class Not:
    """Negation of a condition."""

    operand: Condition

    def evaluate(self, recipient: Mapping[str, Any], profile: EngagementProfile, now_ms: int) -> bool:
        return not self.operand.evaluate(recipient, profile, now_ms)

    def __str__(self) -> str:
        return f"not {self.operand}"


@dataclass(frozen=True, slots=True)
class Junction:
    """``and``/``or`` over two or more conditions, short-circuiting left to right."""

    op: Literal["and", "or"]
    operands: tuple[Condition, ...]

    def evaluate(self, recipient: Mapping[str, Any], profile: EngagementProfile, now_ms: int) -> bool:
        test = all if self.op == "and" else any
        return test(o.evaluate(recipient, profile, now_ms) for o in self.operands)

    def __str__(self) -> str:
        return "(" + f" {self.op} ".join(map(str, self.operands)) + ")"


@dataclass(frozen=True, slots=True)
class Constant:
    """``true`` or ``false``."""

    value: bool

    def evaluate(self, recipient: Mapping[str, Any], profile: EngagementProfile, now_ms: int) -> bool:
        return self.value

    def __str__(self) -> str:
        return "true" if self.value else "false"


Condition = Compare | Not | Junction | Constant
