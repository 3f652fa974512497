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

Rate limits (web/ratelimit.py), so that no single caller degrades the service for the others; a
refused request answers 429 with a ``Retry-After`` header and a detail naming the limit:
- per key, once the caller is known: ``rate`` requests/s with a bucket of ``burst``
  (``HERALD_API_RATE_PER_S``, ``HERALD_API_RATE_BURST``; rate 0 = no limit);
- per client address, for presented keys that are unknown: 5/s, burst 20, to slow key guessing. The
  address's bucket is checked before the key is, so once it is empty no key from that address is
  tried (a guess cannot succeed there) until it refills: a caller behind the same address, or behind
  the same reverse proxy, waits too. A missing key is not a guess and is not counted.
- per key, /sql queries in flight (``HERALD_API_SQL_CONCURRENCY_PER_KEY``): ``ApiAuth.sql_slot``,
  held by the /sql route while its query runs.
Without a keys file nothing is limited (there is no key to count by, and nothing to guess).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client.core import CounterMetricFamily
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from herald.errors import ConfigError
from herald.redact import redact
from herald.yaml_files import read_yaml
from web.ratelimit import ConcurrencyLimiter, Limit, RateLimiter, Verdict

GLOBAL = "*"
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
NO_KEYS = "no API keys configured; set HERALD_API_KEYS_FILE"
AUTH_FAILURES = Limit(rate=5, burst=20)
"""Unknown keys one client address may present: stricter than any key's limit, to slow guessing."""
UNKNOWN_CLIENT = "unknown"


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


def client_address(request: Request) -> str:
    """The caller's address as this server saw it: behind a reverse proxy, the proxy's. Forwarded
    headers are not read: a client could write any address there and escape its bucket."""
    return request.client.host if request.client is not None else UNKNOWN_CLIENT


ClientAddress = Annotated[str, Depends(client_address)]

Reason = Literal["key", "ip", "sql_concurrency"]


class Refusals:
    """Requests refused by a limit, counted by reason; a Prometheus collector
    (``herald_api_rate_limited_total{reason}``). Never labelled by key or address: those are unbounded."""

    REASONS: tuple[Reason, ...] = ("key", "ip", "sql_concurrency")

    def __init__(self) -> None:
        self._counts = dict.fromkeys(self.REASONS, 0)
        self._lock = threading.Lock()

    def record(self, reason: Reason) -> None:
        with self._lock:
            self._counts[reason] += 1

    def counts(self) -> dict[Reason, int]:
        with self._lock:
            return dict(self._counts)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "herald_api_rate_limited", "API requests refused with 429, by limit", labels=["reason"]
        )
        for reason, count in self.counts().items():
            family.add_metric([reason], count)
        yield family


class ApiAuth:
    """FastAPI dependencies over one KeyRing (None: no keys configured), with the rate limits of the
    module docstring. ``clock`` (seconds, monotonic) drives the buckets; tests pass a fake one."""

    def __init__(
        self,
        keys: KeyRing | None,
        *,
        rate_per_s: float = 20.0,
        rate_burst: int = 60,
        sql_concurrency_per_key: int = 2,
        auth_failures: Limit = AUTH_FAILURES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys
        self.per_key = RateLimiter(Limit(rate_per_s, rate_burst), clock)
        self.per_client = RateLimiter(auth_failures, clock)
        self.sql_slots = ConcurrencyLimiter(sql_concurrency_per_key)
        self.refusals = Refusals()

    def principal(
        self, bearer: Bearer = None, api_key: ApiKeyHeader = None, client: ClientAddress = UNKNOWN_CLIENT
    ) -> Principal:
        """The caller: 503 without a keys file, 401 for a missing or unknown key, 429 past a limit."""
        if self.keys is None:
            raise HTTPException(status_code=503, detail=NO_KEYS)
        presented = bearer.credentials if bearer is not None else api_key
        if not presented:
            raise _unauthorized("missing API key (Authorization: Bearer <key> or X-Api-Key)")
        # Checked before the key is tried: refusing only the failures would still answer 200 to the
        # one guess that is right, which would not slow guessing at all.
        self._refuse_past(self.per_client.check(client), "ip")
        found = self.keys.authenticate(presented)
        if found is None:
            self._refuse_past(self.per_client.take(client), "ip")
            raise _unauthorized("unknown API key")
        self._refuse_past(self.per_key.take(found.name), "key")
        return found

    def require(self, role: Role, tenant: str | None = None) -> Callable[..., Principal]:
        """A dependency: the caller, with at least ``role`` on ``tenant`` (None: every tenant), else 403."""

        def dependency(
            bearer: Bearer = None, api_key: ApiKeyHeader = None, client: ClientAddress = UNKNOWN_CLIENT
        ) -> Principal:
            principal = self.principal(bearer, api_key, client)
            forbid(principal, role, tenant)
            return principal

        return dependency

    def sql_principal(
        self, bearer: Bearer = None, api_key: ApiKeyHeader = None, client: ClientAddress = UNKNOWN_CLIENT
    ) -> Principal | None:
        """Guard of /sql: open (every tenant, read-only) when no keys are configured; else an analyst or
        higher, whose tenant scopes the session (a global operator/admin key reads every tenant)."""
        if self.keys is None:
            return None
        principal = self.principal(bearer, api_key, client)  # rate limited there, once per request
        forbid(principal, Role.ANALYST, principal.tenant)
        return principal

    @contextmanager
    def sql_slot(self, principal: Principal | None) -> Iterator[None]:
        """Hold one of the caller's /sql slots while the block runs; 429 when the key already has
        ``sql_concurrency_per_key`` queries running. Open /sql (no keys, ``principal`` None) has no key
        to count by and is not capped."""
        if principal is None:
            yield
            return
        if not self.sql_slots.acquire(principal.name):
            self.refusals.record("sql_concurrency")
            limit = self.sql_slots.limit
            raise _too_many(
                f"concurrency limit: {limit} /sql {'query' if limit == 1 else 'queries'} in flight per key; "
                "retry when one finishes",
                1,
            )
        try:
            yield
        finally:
            self.sql_slots.release(principal.name)

    def _refuse_past(self, verdict: Verdict, reason: Literal["key", "ip"]) -> None:
        if verdict.allowed:
            return
        self.refusals.record(reason)
        if reason == "key":
            limit, per = self.per_key.limit, "requests/s per key"
        else:
            limit, per = self.per_client.limit, "unknown keys/s per client address"
        raise _too_many(
            f"rate limit: {limit.rate:g} {per} (burst {limit.burst}); retry in {verdict.retry_after_s} s",
            verdict.retry_after_s,
        )


def forbid(principal: Principal, role: Role, tenant: str | None) -> None:
    """Raise 403 when ``principal`` may not act with ``role`` on ``tenant``."""
    problem = access_problem(principal, role, tenant)
    if problem:
        raise HTTPException(status_code=403, detail=problem)


def _too_many(detail: str, retry_after_s: int) -> HTTPException:
    return HTTPException(status_code=429, detail=detail, headers={"Retry-After": str(retry_after_s)})


def _unauthorized(detail: str) -> HTTPException:
    headers: dict[str, Any] = {"WWW-Authenticate": "Bearer"}
    return HTTPException(status_code=401, detail=detail, headers=headers)
