"""Load a guardrails YAML file into a validated policy and its content version.

The version is the first 12 hex digits of the SHA-256 of the canonical JSON of the *validated*
model (sorted keys, defaults filled in), so reformatting, reordering keys or spelling out a default
does not change it, while any change of meaning does. Every decision event carries it.

Every problem is reported at once, one per line, as ``file: field.path[i]: reason``; the raised
:class:`PolicyError` is a :class:`herald.errors.ConfigError` and also keeps them as data.

>>> loaded = load_policy_text('''
... providers: {push: [{name: fcm, price_micros: 0, currency: USD}]}
... routing: {default: {push: [fcm]}}
... ''', source="mini.yaml")
>>> len(loaded.version), loaded.policy.providers_for("tiny-plumbing", "push")
(12, ['fcm'])
>>> try:
...     load_policy_text("providers: {push: [{name: fcm, price_micros: -1, currency: USD}]}", source="x.yaml")
... except PolicyError as error:
...     print(error)
x.yaml: providers.push[0].price_micros: Input should be greater than or equal to 0
x.yaml: routing: Field required
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from herald.errors import ConfigError
from policies.models import GuardrailsPolicy

__all__ = [
    "LoadedPolicy",
    "PolicyError",
    "PolicyProblem",
    "load_policy",
    "load_policy_text",
    "policy_version",
]


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    """One thing wrong with a policy file: where and why."""

    file: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.reason}" if self.field else f"{self.file}: {self.reason}"


class PolicyError(ConfigError):
    """A policy file was rejected; ``problems`` lists every reason."""

    def __init__(self, problems: list[PolicyProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """A validated policy, its content version and the file it came from."""

    policy: GuardrailsPolicy
    version: str
    source: str


def policy_version(policy: GuardrailsPolicy) -> str:
    """Short content hash of the validated policy (stable across formatting and key order)."""
    canonical = json.dumps(policy.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def load_policy(path: str | Path) -> LoadedPolicy:
    """Read, parse and validate a guardrails file; raise :class:`PolicyError` naming every problem."""
    source = str(path)
    return load_policy_text(read_policy_text(path, source), source=source)


def read_policy_text(path: Path | str, source: str) -> str:
    """The file's text, or a PolicyError naming ``source`` when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([PolicyProblem(source, "", f"cannot read: {exc.strerror or exc}")]) from exc


def load_policy_text(text: str, *, source: str = "<policy>") -> LoadedPolicy:
    """Validate YAML text; ``source`` names it in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise PolicyError([PolicyProblem(source, "", f"invalid YAML: {where}{reason}")]) from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise PolicyError([PolicyProblem(source, "", f"must be a mapping of sections, got {kind}")])
    try:
        policy = GuardrailsPolicy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_problems(source, exc)) from None
    return LoadedPolicy(policy, policy_version(policy), source)


def _problems(source: str, exc: ValidationError) -> list[PolicyProblem]:
    problems: list[PolicyProblem] = []
    for error in exc.errors():
        loc = _path(error["loc"])
        ctx: dict[str, Any] = error.get("ctx") or {}
        if error["type"] == "value_error" and "error" in ctx:
            message = str(ctx["error"])
            if not loc:  # whole-model checks carry their own "field: reason" pairs
                for part in message.split("; "):
                    field, _, reason = part.partition(": ")
                    problems.append(PolicyProblem(source, field, reason))
                continue
        else:
            message = error["msg"]
        problems.append(PolicyProblem(source, loc, message))
    return problems


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or "(" in part:  # pydantic's names of union members/functions, not user keys
            continue
        else:
            out += f".{part}" if out else part
    return out
