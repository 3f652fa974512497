"""The warehouse connection: clickhouse-connect over a ``chdb:///path`` (embedded) or ``http(s)://`` DSN.

Everything else talks to ClickHouse through ``Warehouse``; library errors become WarehouseError here.
An embedded (chDB) directory can be opened by one process at a time, so opening one takes an
exclusive lock file beside it and a second opener gets a clear error instead of a corrupt store.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError

from herald.errors import WarehouseError
from herald.settings import mask_dsn

_PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:")


class _AsSent:
    """A bind value already in ClickHouse's text form (an HTTP ``param_<name>``): clickhouse-connect
    sends values of types it does not know as ``str(value)``, so this one reaches the engine byte for byte
    instead of being escaped a second time as a Python string would be."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


class Warehouse:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._lock_file: Any = None
        self._mutex = threading.Lock()  # one engine call at a time: chDB handles are not thread-safe
        self._insert_contexts: dict[tuple[str, tuple[str, ...]], Any] = {}
        if self.embedded:
            self._lock_embedded()
        try:
            # Server connections: no session (requests may run concurrently) and no compression on loopback.
            extra: dict[str, Any] = (
                {} if self.embedded else {"compress": False, "autogenerate_session_id": False}
            )
            self._client = clickhouse_connect.get_client(dsn=dsn, **extra)
        except (ClickHouseError, OSError) as exc:
            self._release_lock()
            raise WarehouseError(f"cannot open warehouse {mask_dsn(dsn)}: {exc}") from exc

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb:")

    @property
    def path(self) -> Path | None:
        return Path(urlsplit(self.dsn).path) if self.embedded else None

    def _lock_embedded(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        f = open(lock_path, "a+")  # noqa: SIM115 - held for the life of the Warehouse
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "another process"
            f.close()
            raise WarehouseError(
                f"the embedded warehouse {self.path} is in use by {owner}; stop it, or query through its "
                "SQL endpoint (cli.py sql does this when a worker runs)"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        self._lock_file = f

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        with self._mutex:
            self._insert_contexts.clear()  # DDL may change a table's structure
            try:
                return self._client.command(sql, parameters=parameters)
            except ClickHouseError as exc:
                raise WarehouseError(f"warehouse command failed: {exc}") from exc

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self._mutex:
            try:
                return [tuple(r) for r in self._client.query(sql, parameters=parameters).result_rows]
            except ClickHouseError as exc:
                raise WarehouseError(f"warehouse query failed: {exc}") from exc

    def records(
        self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._mutex:
            try:
                result = self._client.query(sql, parameters=parameters, settings=settings)
            except ClickHouseError as exc:
                raise WarehouseError(f"warehouse query failed: {exc}") from exc
            return list(result.column_names), [tuple(r) for r in result.result_rows]

    def scalar(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        rows = self.rows(sql, parameters)
        return rows[0][0] if rows else None

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        columns: Sequence[str],
        dedup_token: str | None = None,
    ) -> None:
        """Insert rows as one block. ``dedup_token`` makes a retried insert of the same block a no-op
        (tables carry non_replicated_deduplication_window)."""
        if not rows:
            return
        with self._mutex:
            try:
                # A cached insert context skips the table-structure lookup each new context costs
                # (about a fifth of a small insert); only the dedup token changes between inserts.
                key = (table, tuple(columns))
                context = self._insert_contexts.get(key)
                if context is None:
                    context = self._client.create_insert_context(table, list(columns))
                    self._insert_contexts[key] = context
                context.settings.pop("insert_deduplication_token", None)
                if dedup_token:
                    context.settings["insert_deduplication_token"] = dedup_token
                context.data = rows
                try:
                    self._client.insert(context=context)
                finally:
                    context.data = None
            except ClickHouseError as exc:
                self._insert_contexts.pop((table, tuple(columns)), None)  # the table may have changed
                raise WarehouseError(f"insert into {table} failed: {exc}") from exc

    def raw_query(
        self,
        sql: str,
        fmt: str | None = None,
        parameters: dict[str, str] | None = None,
        settings: dict[str, str] | None = None,
    ) -> bytes:
        """Run one statement and return the engine's output bytes, for the HTTP shim (web/clickhouse_http.py).

        ``fmt`` is appended as ``FORMAT fmt`` (None: the statement's own FORMAT clause, else TabSeparated).
        ``parameters`` fill ``{name:Type}`` placeholders and are already in ClickHouse's text form, exactly
        as an HTTP client sends them in ``param_<name>`` (``[1,2]``, ``\\N``, escaped strings).
        Settings the engine handle already has (clickhouse-connect repeats its session defaults on every
        request) are skipped: each remaining one costs a SET and a restore around the statement.
        On failure the WarehouseError's ``__cause__`` is the ClickHouseError, whose ``code`` and message
        are the engine's.
        """
        # only placeholders' values: with no placeholder in the SQL, clickhouse-connect binds client-side
        used = set(_PLACEHOLDER.findall(sql))
        bound = {k: _AsSent(v) for k, v in (parameters or {}).items() if k in used}
        with self._mutex:
            changed = self._changed(settings)
            if self.embedded and changed and "readonly" in changed:
                # chDB applies per-call settings with SET and restores them after; once readonly is set,
                # the restore is refused and the engine handle would stay read-only for good.
                raise WarehouseError(
                    "the setting readonly cannot be applied to one query of the embedded engine"
                )
            try:
                return self._client.raw_query(sql, parameters=bound or None, settings=changed, fmt=fmt)
            except ClickHouseError as exc:
                raise WarehouseError(f"warehouse query failed: {exc}") from exc

    def raw_insert(
        self,
        table: str,
        columns: Sequence[str] | None,
        data: bytes,
        fmt: str,
        settings: dict[str, str] | None = None,
    ) -> int:
        """Insert ``data`` already encoded in ``fmt`` (e.g. Native) into ``table`` (SQL text, used as is);
        return the rows written. ``insert_deduplication_token`` in ``settings`` makes a retry a no-op,
        as in ``insert``. Errors as in ``raw_query``."""
        with self._mutex:
            try:
                summary = self._client.raw_insert(
                    table, columns, data, settings=self._changed(settings), fmt=fmt
                )
            except ClickHouseError as exc:
                raise WarehouseError(f"insert into {table} failed: {exc}") from exc
            return summary.written_rows

    def _changed(self, settings: dict[str, str] | None) -> dict[str, str] | None:
        changed = {k: v for k, v in (settings or {}).items() if self._client.get_client_setting(k) != str(v)}
        return changed or None

    def close(self) -> None:
        with self._mutex:
            try:
                self._client.close()
            finally:
                self._release_lock()
