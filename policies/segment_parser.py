"""The segment rule language's front end: a tokenizer and a recursive-descent, type-checking parser.

A rule is parsed once into a small tree of ``Compare``/``Not``/``Junction``/``Constant`` nodes; user
text is never handed to ``eval`` or Python's parser, so a rule can only read the fixed ``ATTRIBUTES``
and call the fixed ``FUNCTIONS``. Types are checked at parse time, and every error is a ``RuleError``
(a ConfigError) with the 1-based column and a caret line. docs/segments.md is the reference.

Grammar (keywords are case-insensitive)::

    rule       := or_expr END
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | atom
    atom       := "(" or_expr ")" | "true" | "false" | FUNCTION "(" DURATION ")"
                | FLAG | ATTRIBUTE OP literal | ATTRIBUTE ["not"] "in" "(" literal ("," literal)* [","] ")"
    literal    := STRING | NUMBER | DURATION | "true" | "false"

>>> print(parse_rule("not unsubscribed and bounces < 3 or opened_within(30d)"))
((not unsubscribed and bounces < 3) or last_open <= 30d)
>>> from policies.engagement import EngagementProfile
>>> parse_rule('tier == "gold"').evaluate({"tier": "Gold"}, EngagementProfile(), 0)
True
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from policies.segment_rules import (
    ATTRIBUTES,
    FUNCTIONS,
    KINDS,
    SPEC,
    Attribute,
    Compare,
    Condition,
    Constant,
    Junction,
    Not,
    RuleError,
)

__all__ = ["MAX_RULE_CONDITIONS", "MAX_RULE_DEPTH", "parse_rule"]

_KEYWORDS = ("and", "or", "not", "in", "true", "false")
MAX_RULE_DEPTH = 32
"""Nesting (``not`` and parentheses) a rule may have: the parser recurses once per level."""
MAX_RULE_CONDITIONS = 50
"""Conditions a rule may combine (a comparison, a flag, a function call, ``true``; a list such as
``country in ("US", "CA")`` is one): every recipient of every dispatch is evaluated against them."""
_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000}


# --- tokens -------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<duration>\d+[dhms](?![\w.]))
    |(?P<number>(?:\d+\.\d+|\d+)(?![\w.]))
    |(?P<badnumber>\d[\w.]*)
    |(?P<string>"[^"\n]*"|'[^'\n]*')
    |(?P<unterminated>["'])
    |(?P<name>[A-Za-z_]\w*)
    |(?P<op>==|!=|<=|>=|<|>)
    |(?P<assign>=)
    |(?P<punct>[(),])""",
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # duration, number, string, name, keyword, op, punct, end
    text: str
    column: int
    value: Any = None


def _tokenize(rule: str, fail: Callable[[int, str, str], RuleError]) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(rule):
        match = _TOKEN.match(rule, pos)
        column = pos + 1
        if match is None:
            raise fail(column, f"unexpected character {rule[pos]!r}", "")
        kind, text = match.lastgroup or "", match.group()
        pos = match.end()
        if kind == "ws":
            continue
        if kind == "badnumber":
            hint = "durations look like 30d, 12h, 15m, 45s"
            raise fail(column, f"invalid number or duration {text!r}", hint)
        if kind == "unterminated":
            raise fail(column, "unterminated string", f"close it with {text}")
        if kind == "assign":
            raise fail(column, "'=' is not an operator", "use '==' to compare")
        if kind == "duration":
            tokens.append(_Token(kind, text, column, int(text[:-1]) * _UNIT_MS[text[-1]]))
        elif kind == "number":
            tokens.append(_Token(kind, text, column, float(text) if "." in text else int(text)))
        elif kind == "string":
            tokens.append(_Token(kind, text, column, text[1:-1]))
        elif kind == "name" and text.lower() in _KEYWORDS:
            tokens.append(_Token("keyword", text.lower(), column))
        else:
            tokens.append(_Token(kind, text, column))
    tokens.append(_Token("end", "", len(rule) + 1))
    return tokens


# --- parser -------------------------------------------------------------------------------------------


def _closest(name: str, candidates: Any) -> str:
    found = difflib.get_close_matches(name.lower(), list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{found[0]}'?" if found else ""


class _Parser:
    """rule := or; or := and ("or" and)*; and := not ("and" not)*; not := "not" not | atom."""

    def __init__(self, segment: str, rule: str) -> None:
        self.segment, self.rule = segment, rule
        self.tokens = _tokenize(rule, self.fail)
        self.pos = 0
        self.depth = 0
        self.conditions = 0

    def fail(self, column: int, problem: str, hint: str = "") -> RuleError:
        return RuleError(self.segment, self.rule, column, problem, hint)

    @property
    def token(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def at(self, kind: str, text: str | None = None) -> bool:
        return self.token.kind == kind and (text is None or self.token.text == text)

    def expect(self, kind: str, text: str, what: str) -> _Token:
        if not self.at(kind, text):
            raise self.unexpected(what)
        return self.take()

    def unexpected(self, what: str) -> RuleError:
        found = "end of rule" if self.token.kind == "end" else repr(self.token.text)
        return self.fail(self.token.column, f"expected {what} but found {found}")

    def parse(self) -> Condition:
        if self.at("end"):
            raise self.fail(1, "empty rule", 'e.g. tier == "gold"')
        condition = self.junction("or")
        if not self.at("end"):
            raise self.unexpected("'and', 'or' or the end of the rule")
        return condition

    def junction(self, op: Literal["and", "or"]) -> Condition:
        parts = [self.junction("and") if op == "or" else self.negation()]
        while self.at("keyword", op):
            self.take()
            parts.append(self.junction("and") if op == "or" else self.negation())
        return parts[0] if len(parts) == 1 else Junction(op, tuple(parts))

    def negation(self) -> Condition:
        self.depth += 1
        if self.depth > MAX_RULE_DEPTH:
            raise self.fail(self.token.column, f"rule nests deeper than {MAX_RULE_DEPTH} levels")
        try:
            if self.at("keyword", "not"):
                self.take()
                return Not(self.negation())
            return self.atom()
        finally:
            self.depth -= 1

    def atom(self) -> Condition:
        token = self.token
        if self.at("punct", "("):
            self.take()
            inner = self.junction("or")
            self.expect("punct", ")", "')'")
            return inner
        self.conditions += 1
        if self.conditions > MAX_RULE_CONDITIONS:
            hint = 'simplify it, or put the values of one attribute in a list: country in ("US", "CA")'
            raise self.fail(token.column, f"rule has more than {MAX_RULE_CONDITIONS} conditions", hint)
        if token.kind == "keyword" and token.text in ("true", "false"):
            self.take()
            return Constant(token.text == "true")
        if token.kind != "name":
            raise self.unexpected("a condition")
        self.take()
        name = token.text.lower()
        if self.at("punct", "("):
            return self.call(token)
        if name in FUNCTIONS:
            hint = f"call it with a duration, e.g. {name}(30d)"
            raise self.fail(token.column, f"'{name}' is a function", hint)
        attribute = ATTRIBUTES.get(name)
        if attribute is None:
            hint = _closest(name, [*ATTRIBUTES, *FUNCTIONS])
            raise self.fail(token.column, f"unknown attribute '{token.text}'", hint)
        if self.token.kind == "op" or self.at("keyword", "in") or self.at("keyword", "not"):
            return self.comparison(attribute, token)
        if attribute.kind == "flag":
            return Compare(attribute, "==", True, "")  # a bare flag
        spec = SPEC[attribute.kind]
        raise self.fail(token.column, f"'{name}' is a {spec.noun}, not a condition", f"e.g. {spec.example}")

    def call(self, name: _Token) -> Condition:
        function = name.text.lower()
        if function not in FUNCTIONS:
            raise self.fail(name.column, f"unknown function '{name.text}'", _closest(function, FUNCTIONS))
        self.take()
        argument = self.token
        if argument.kind != "duration":
            raise self.unexpected(f"a duration such as 30d in {function}()")
        self.take()
        self.expect("punct", ")", "')'")
        return Compare(ATTRIBUTES[FUNCTIONS[function]], "<=", argument.value, argument.text)

    def comparison(self, attribute: Attribute, name: _Token) -> Condition:
        negated = self.at("keyword", "not")
        if negated:
            self.take()
            if not self.at("keyword", "in"):
                raise self.unexpected("'in' after 'not'")
        op_token = self.take()
        op = op_token.text
        if op not in SPEC[attribute.kind].ops:
            shown = "not in" if negated else op
            problem = f"operator '{shown}' does not apply to {SPEC[attribute.kind].noun} '{attribute.name}'"
            raise self.fail(op_token.column, problem, "use " + ", ".join(SPEC[attribute.kind].ops))
        if op == "in":
            values, shown = self.tuple_literal(attribute)
            compare = Compare(attribute, "in", frozenset(values), shown)
            return Not(compare) if negated else compare
        value, shown = self.literal(attribute)
        return Compare(attribute, op, value, shown)

    def tuple_literal(self, attribute: Attribute) -> tuple[list[Any], str]:
        self.expect("punct", "(", '\'(\' to start a list such as ("US", "CA")')
        values: list[Any] = []
        shown: list[str] = []
        while True:
            value, text = self.literal(attribute)
            values.append(value)
            shown.append(text)
            if not self.at("punct", ","):
                break
            self.take()
            if self.at("punct", ")"):  # a trailing comma is fine
                break
        self.expect("punct", ")", "',' or ')'")
        return values, "(" + ", ".join(shown) + ")"

    def literal(self, attribute: Attribute) -> tuple[Any, str]:
        token, kind = self.token, attribute.kind
        wanted = SPEC[kind].token
        if token.kind != wanted or (wanted == "keyword" and token.text not in ("true", "false")):
            hint = f"use {SPEC[kind].wanted}, e.g. {SPEC[kind].example}"
            if token.kind == "name" and kind == "text":
                raise self.fail(token.column, f"expected a quoted string but found {token.text}", hint)
            if token.kind in ("string", "number", "duration") or token.text in ("true", "false"):
                problem = f"{SPEC[kind].noun} '{attribute.name}' cannot be compared with {token.text}"
                raise self.fail(token.column, problem, hint)
            raise self.unexpected(SPEC[kind].wanted)
        self.take()
        if attribute.kind == "rate" and not 0 <= token.value <= 1:
            raise self.fail(token.column, f"rate {token.text} is outside 0..1", "write 10% as 0.1")
        if attribute.kind == "flag":
            return token.text == "true", token.text
        if attribute.kind == "text":
            value = token.value.casefold()
            if attribute.name == "kind" and value not in KINDS:
                hint = _closest(value, KINDS) or "use one of " + ", ".join(KINDS)
                raise self.fail(token.column, f"unknown recipient kind {token.text}", hint)
            return value, token.text
        return token.value, token.text


def parse_rule(rule: str, segment: str = "rule") -> Condition:
    """The typed condition tree of ``rule``; raises RuleError (a ConfigError) with column and caret.

    >>> print(parse_rule('kind == "technician" and role == "installer" and country in ("US", "CA")'))
    (kind == "technician" and role == "installer" and country in ("US", "CA"))
    """
    return _Parser(segment, rule).parse()
