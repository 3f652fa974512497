"""Per-tenant API keys with roles, and the FastAPI dependencies that check them.

Keys live in a YAML file (``HERALD_API_KEYS_FILE``) that holds only SHA-256 hashes, never keys::

    keys:
      - name: acme-dashboard          # who holds the key (logged, shown as the principal)
        tenant: acme-home             # the one tenant it may read, or "*" for every tenant
        role: viewer                  # viewer < analyst < operator < admin
        key_sha256: 9f86d081884c7d65...  # hash_key(<the key>), 64 lowercase hex digits

Global scope (``tenant: "*"``) is for operator and admin keys only; a lower role with ``"*"`` is
refused when the file is loaded.

Behaviour without a keys file (nothing is ever open by accident):
- ``/api/v1/...`` answers 503 "no API keys configured; set HERALD_API_KEYS_FILE";
- ``/health`` and ``/metrics`` stay open (no tenant data);
- ``/sql`` stays open, read-only over every tenant (the API binds to loopback by default), so
  ``cli.py sql`` and the demo work on a fresh machine.
With a keys file, ``/sql`` needs an analyst key or higher: a tenant key's queries run on an engine
session that row policies hold to that tenant's rows (projections/access.py), a global
(operator/admin) key's on one that sees every tenant. Every session is read-only in the engine.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from herald.errors import ConfigError
from herald.redact import redact
from herald.yaml_files import read_yaml

GLOBAL = "*"
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
NO_KEYS = "no API keys configured; set HERALD_API_KEYS_FILE"


class Role(IntEnum):
    """Ordered: a higher role may do everything a lower one may."""

    VIEWER = 1
    ANALYST = 2
    OPERATOR = 3
    ADMIN = 4


RoleName = Literal["viewer", "analyst", "operator", "admin"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name, its tenant (``"*"`` = every tenant) and its role."""

    name: str
    tenant: str
    role: Role

    @property
    def is_global(self) -> bool:
        return self.tenant == GLOBAL


class KeyEntry(BaseModel):
    """One entry of the keys file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$")
    role: RoleName  # before tenant: the tenant check reads it
    tenant: str = Field(pattern=rf"{TENANT_PATTERN}|^\*$")
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hash_key(key): lowercase hex SHA-256")

    @field_validator("tenant")
    @classmethod
    def _global_needs_operator(cls, tenant: str, info: ValidationInfo) -> str:
        role = info.data.get("role")
        if tenant == GLOBAL and role is not None and Role[role.upper()] < Role.OPERATOR:
            raise ValueError(f'"*" (global) is only allowed for operator or admin, not {role}')
        return tenant


class KeyFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    keys: list[KeyEntry] = Field(min_length=1)


def hash_key(key: str) -> str:
    """The hex SHA-256 of a key, as stored in the keys file.

    >>> hash_key("test")
    '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08'
    """
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(name: str, tenant: str, role: RoleName) -> tuple[str, dict[str, str]]:
    """A fresh random key and its keys-file entry (validated); show the key once, store only the entry."""
    key = "hk_" + secrets.token_urlsafe(32)
    try:
        entry = KeyEntry(name=name, tenant=tenant, role=role, key_sha256=hash_key(key))
    except ValidationError as exc:
        raise ConfigError("invalid key entry: " + _problems(exc)) from None
    return key, entry.model_dump()


def entry_yaml(entry: dict[str, str]) -> str:
    """An entry as a YAML list item to append under ``keys:``."""
    return yaml.safe_dump([entry], sort_keys=False)


class KeyRing:
    """The loaded keys; finds the principal of a presented key."""

    def __init__(self, entries: list[KeyEntry]) -> None:
        self._entries = [(bytes.fromhex(e.key_sha256), e) for e in entries]

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, key: str) -> Principal | None:
        """The principal of ``key``, or None. Compares hashes in constant time against every entry."""
        presented = hashlib.sha256(key.encode()).digest()
        found: KeyEntry | None = None
        for stored, entry in self._entries:  # no early exit: timing does not reveal the position
            if hmac.compare_digest(presented, stored):
                found = entry
        if found is None:
            return None
        return Principal(found.name, found.tenant, Role[found.role.upper()])


def load_key_ring(path: Path | None) -> KeyRing | None:
    """Keys from ``path`` (None when no file is configured); a bad file raises ConfigError naming the
    file, the entry index, the field and the reason."""
    if path is None:
        return None
    data = read_yaml(path, "API keys file")
    try:
        ring = KeyFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + _problems(exc)) from None
    problems = _duplicates(ring.keys)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return KeyRing(ring.keys)


# Fields whose rejected value an error may echo. Not key_sha256, nor an unknown field (a key pasted as
# ``key:`` by mistake), nor a whole entry: this message reaches the worker's log and the terminal.
_ECHOED = ("name", "role", "tenant")


def _problems(exc: ValidationError) -> str:
    out = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        msg = err["msg"].removeprefix("Value error, ")
        echoed = bool(err["loc"]) and err["loc"][-1] in _ECHOED
        out.append(f"{loc or 'file'}: {msg}" + (f" (got {redact(err['input'])!r})" if echoed else ""))
    return "; ".join(out)


def _duplicates(entries: list[KeyEntry]) -> list[str]:
    problems: list[str] = []
    names: dict[str, int] = {}
    hashes: dict[str, int] = {}
    for i, e in enumerate(entries):
        if e.name in names:
            problems.append(f"keys[{i}].name: duplicate of keys[{names[e.name]}] ({e.name!r})")
        if e.key_sha256 in hashes:
            problems.append(f"keys[{i}].key_sha256: the same key as keys[{hashes[e.key_sha256]}]")
        names.setdefault(e.name, i)
        hashes.setdefault(e.key_sha256, i)
    return problems


def access_problem(principal: Principal, role: Role, tenant: str | None = None) -> str | None:
    """Why ``principal`` may not act with ``role`` on ``tenant`` (None: every tenant), or None if it may.

    >>> viewer = Principal("a", "acme", Role.VIEWER)
    >>> access_problem(viewer, Role.VIEWER, "acme") is None
    True
    >>> access_problem(viewer, Role.VIEWER, "other")
    'key a is scoped to tenant acme'
    >>> access_problem(viewer, Role.ANALYST, "acme")
    'role viewer is below analyst'
    """
    if principal.role < role:
        return f"role {principal.role.name.lower()} is below {role.name.lower()}"
    if not principal.is_global and tenant != principal.tenant:
        return f"key {principal.name} is scoped to tenant {principal.tenant}"
    return None


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_api_key = APIKeyHeader(name="X-Api-Key", auto_error=False, description="The API key in X-Api-Key")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
ApiKeyHeader = Annotated[str | None, Security(_api_key)]


class ApiAuth:
    """FastAPI dependencies over one KeyRing (None: no keys configured)."""

    def __init__(self, keys: KeyRing | None) -> None:
        self.keys = keys

    def principal(self, bearer: Bearer = None, api_key: ApiKeyHeader = None) -> Principal:
        """The caller: 503 without a keys file, 401 for a missing or unknown key."""
        if self.keys is None:
            raise HTTPException(status_code=503, detail=NO_KEYS)
        presented = bearer.credentials if bearer is not None else api_key
        if not presented:
            raise _unauthorized("missing API key (Authorization: Bearer <key> or X-Api-Key)")
        found = self.keys.authenticate(presented)
        if found is None:
            raise _unauthorized("unknown API key")
        return found

    def require(self, role: Role, tenant: str | None = None) -> Callable[..., Principal]:
        """A dependency: the caller, with at least ``role`` on ``tenant`` (None: every tenant), else 403."""

        def dependency(bearer: Bearer = None, api_key: ApiKeyHeader = None) -> Principal:
            principal = self.principal(bearer, api_key)
            forbid(principal, role, tenant)
            return principal

        return dependency

    def sql_principal(self, bearer: Bearer = None, api_key: ApiKeyHeader = None) -> Principal | None:
        """Guard of /sql: open (every tenant, read-only) when no keys are configured; else an analyst or
        higher, whose tenant scopes the session (a global operator/admin key reads every tenant)."""
        if self.keys is None:
            return None
        principal = self.principal(bearer, api_key)
        forbid(principal, Role.ANALYST, principal.tenant)
        return principal


def forbid(principal: Principal, role: Role, tenant: str | None) -> None:
    """Raise 403 when ``principal`` may not act with ``role`` on ``tenant``."""
    problem = access_problem(principal, role, tenant)
    if problem:
        raise HTTPException(status_code=403, detail=problem)


def _unauthorized(detail: str) -> HTTPException:
    headers: dict[str, Any] = {"WWW-Authenticate": "Bearer"}
    return HTTPException(status_code=401, detail=detail, headers=headers)
