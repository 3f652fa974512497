"""People's SQL (``/sql``, ``cli.py sql``) on reader sessions the engine holds to reading.

A reader session is opened for one scope (a tenant, or ``None`` for every tenant) with the settings of
projections/access.py: the tenant marker the row policies compare with, the limits, then
``readonly = 1``. From then on the engine refuses any write, DDL, setting change, ``KILL``, file or
network table function, and shows a tenant only its rows. Sessions are pooled per scope (at most
``per_scope`` open, ``max_idle`` kept idle over every scope).

A query goes through three steps, all on the reader session:

1. the engine parses it: ``formatQuerySingleLine`` of the text, bound as a parameter (so the text is
   data, never SQL here), gives its one canonical statement or the engine's syntax error (several
   statements are an error);
2. :func:`statement_problem` refuses, with a clear message, what the engine would refuse anyway
   (anything but one SELECT, ``INTO OUTFILE``, a ``SETTINGS`` or ``FORMAT`` clause) and chDB's
   ``file()`` function, the one thing the embedded engine would not refuse (module docstring of
   projections/access.py);
3. the engine runs ``SELECT * FROM (<canonical>) LIMIT n + 1``: wrapped as a subquery, the statement
   can only be a SELECT, whatever step 2 thinks.

Over a ClickHouse server (an ``http(s)://`` DSN) the reader is an HTTP client whose every request
carries the same settings (``readonly = 1`` last); the server's users, grants and row policies are
those of ``projections.access.server_access_sql``.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from herald.errors import WarehouseError
from projections.access import ReaderLimits, reader_settings
from projections.warehouse import Warehouse, translated

TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
MAX_QUERY_CHARS = 100_000
_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'")
_FIRST_WORD = re.compile(r"^\s*\(*\s*([A-Za-z]+)")
_DENIED_FUNCTIONS = re.compile(r"(?<![\w.`])`?(file)`?\s*\(")
_CLAUSES = re.compile(r"\b(INTO\s+OUTFILE|SETTINGS|FORMAT)\b")


class SqlRefusedError(WarehouseError):
    """A query that reader sessions do not run; the message says why."""


def statement_problem(canonical: str) -> str | None:
    """Why the engine's canonical form of a query is not run on a reader session (None: it is).

    >>> statement_problem("SELECT count() FROM events") is None
    True
    >>> statement_problem("WITH x AS (SELECT 1) SELECT * FROM x") is None
    True
    >>> statement_problem("SELECT 'file(x) INTO OUTFILE' AS s") is None
    True
    >>> print(statement_problem("SHOW TABLES").replace("; ", "\\n"))
    query: only SELECT (or WITH … SELECT) statements are allowed, not SHOW
    try system.tables or system.columns
    >>> statement_problem("SELECT file('/etc/passwd')")
    'query: the function file() is not available'
    >>> statement_problem("SELECT 1 INTO OUTFILE 'x'")
    'query: INTO OUTFILE is not allowed (results come back in the response)'
    """
    bare = _LITERAL.sub("''", canonical)
    first = _FIRST_WORD.match(bare)
    word = first.group(1).upper() if first else ""
    if word not in ("SELECT", "WITH"):
        hint = (
            "; try system.tables or system.columns" if word in ("SHOW", "DESCRIBE", "DESC", "EXISTS") else ""
        )
        return f"query: only SELECT (or WITH … SELECT) statements are allowed, not {word or 'this'}{hint}"
    if _DENIED_FUNCTIONS.search(bare):
        return "query: the function file() is not available"
    clause = _CLAUSES.search(bare)
    if clause:
        found = " ".join(clause.group(1).split())
        if found == "INTO OUTFILE":
            return "query: INTO OUTFILE is not allowed (results come back in the response)"
        return f"query: a {found} clause is not allowed (the session's settings and format are fixed)"
    return None


def bounded_select(canonical: str, max_rows: int) -> str:
    """The statement a reader runs: the canonical query as a subquery, one row over ``max_rows`` so
    that too many rows can be told from exactly enough.

    >>> bounded_select("SELECT 1", 10)
    'SELECT * FROM (\\nSELECT 1\\n) LIMIT 11'
    """
    return f"SELECT * FROM (\n{canonical}\n) LIMIT {int(max_rows) + 1}"


@dataclass(frozen=True)
class SqlAnswer:
    columns: list[str]
    rows: list[tuple[Any, ...]]


class SqlReaders:
    """Reader sessions of one warehouse, pooled per scope."""

    def __init__(
        self,
        warehouse: Warehouse,
        limits: ReaderLimits | None = None,
        per_scope: int = 4,
        max_idle: int = 32,
        dsn: str | None = None,
    ) -> None:
        """``dsn``: on a ClickHouse server, the reader user's DSN (``herald_reader`` of
        ``cli.py access-sql``); None reads as the warehouse's own user, still read-only per request."""
        self.warehouse = warehouse
        self.dsn = dsn
        self.limits = limits or ReaderLimits()
        self.per_scope = per_scope
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: OrderedDict[str | None, list[Client]] = OrderedDict()
        self._open: dict[str | None, int] = {}
        self._closed = False
        warehouse.on_close(self.close)

    def query(self, tenant: str | None, text: str, max_rows: int, *, check: bool = True) -> SqlAnswer:
        """Run one read-only query for ``tenant`` (None: every tenant) and return at most ``max_rows``
        rows; raises SqlRefusedError for a refused statement or too many rows, WarehouseError (its
        subclasses for timeouts, bounds and refusals by the engine) for the engine's errors.
        ``check=False`` skips step 2, to test what the engine refuses by itself."""
        if not text.strip():
            raise SqlRefusedError("query: is empty")
        if len(text) > MAX_QUERY_CHARS:
            raise SqlRefusedError(f"query: at most {MAX_QUERY_CHARS} characters")
        if not 1 <= max_rows <= self.limits.max_result_rows:
            raise SqlRefusedError(f"max_rows: must be between 1 and {self.limits.max_result_rows}")
        with self._session(tenant) as client:
            canonical = self._run(client, "SELECT formatQuerySingleLine({q:String})", {"q": text})[1][0][0]
            problem = statement_problem(str(canonical)) if check else None
            if problem:
                raise SqlRefusedError(problem)
            columns, rows = self._run(client, bounded_select(str(canonical), max_rows), None)
        if len(rows) > max_rows:
            raise SqlRefusedError(f"query: more than max_rows ({max_rows}) rows; add a LIMIT or aggregate")
        return SqlAnswer(columns, rows)

    def execute_unchecked(self, tenant: str | None, sql: str) -> SqlAnswer:
        """Run ``sql`` on a reader session as it is, without steps 1-3: for tests that check what the
        engine itself refuses."""
        with self._session(tenant) as client:
            return SqlAnswer(*self._run(client, sql, None))

    @staticmethod
    def _run(
        client: Client, sql: str, parameters: dict[str, Any] | None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        try:
            result = client.query(sql, parameters=parameters)
        except ClickHouseError as exc:
            raise translated(exc, "query refused") from exc
        return list(result.column_names), [tuple(r) for r in result.result_rows]

    @contextmanager
    def _session(self, tenant: str | None) -> Iterator[Client]:
        if tenant is not None and not TENANT.match(tenant):
            raise SqlRefusedError(f"tenant: {tenant!r} is not a tenant id")
        client = self._acquire(tenant)
        healthy = False
        try:
            yield client
            healthy = True
        except WarehouseError:
            healthy = True  # the engine answered: the session is fine
            raise
        finally:
            self._release(tenant, client, healthy)

    def _acquire(self, tenant: str | None) -> Client:
        with self._lock:
            if self._closed:
                raise WarehouseError("the warehouse is closed")
            idle = self._idle.get(tenant)
            if idle:
                return idle.pop()
            if self._open.get(tenant, 0) >= self.per_scope:
                raise WarehouseError(
                    f"too many queries in flight for this scope (at most {self.per_scope}); retry shortly"
                )
            self._open[tenant] = self._open.get(tenant, 0) + 1
        try:
            return self._new_session(tenant)
        except BaseException:
            with self._lock:
                self._open[tenant] -= 1
            raise

    def _new_session(self, tenant: str | None) -> Client:
        settings = reader_settings(tenant, self.limits)
        try:
            return self.warehouse.session(
                readonly=1, settings=[(k, v) for k, v in settings if k != "readonly"], dsn=self.dsn
            )
        except ClickHouseError as exc:
            raise translated(exc, "cannot open a reader session") from exc

    def _release(self, tenant: str | None, client: Client, healthy: bool) -> None:
        evicted: list[Client] = []
        with self._lock:
            if healthy and not self._closed:
                self._idle.setdefault(tenant, []).append(client)
                self._idle.move_to_end(tenant)
                while sum(len(v) for v in self._idle.values()) > self.max_idle:
                    scope, clients = next(iter(self._idle.items()))
                    evicted.append(clients.pop(0))
                    self._open[scope] -= 1
                    if not clients:
                        del self._idle[scope]
            else:
                evicted.append(client)
                self._open[tenant] -= 1
        for c in evicted:
            c.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients = [c for v in self._idle.values() for c in v]
            self._idle.clear()
        for c in clients:
            c.close()
