"""The warehouse connection: clickhouse-connect over a ``chdb:///path`` (embedded) or ``http(s)://`` DSN.

Everything else talks to ClickHouse through ``Warehouse``; library errors become WarehouseError here.
An embedded (chDB) directory can be opened by one process at a time, so opening one takes an
exclusive lock file beside it and a second opener gets a clear error instead of a corrupt store.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError

from herald.errors import WarehouseError
from herald.settings import mask_dsn


class Warehouse:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._lock_file: Any = None
        self._mutex = threading.Lock()  # one engine call at a time: chDB handles are not thread-safe
        if self.embedded:
            self._lock_embedded()
        try:
            # Server connections: no session (requests may run concurrently) and no compression on loopback.
            extra = {} if self.embedded else {"compress": False, "autogenerate_session_id": False}
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
        settings = {"insert_deduplication_token": dedup_token} if dedup_token else None
        with self._mutex:
            try:
                self._client.insert(table, rows, column_names=list(columns), settings=settings)
            except ClickHouseError as exc:
                raise WarehouseError(f"insert into {table} failed: {exc}") from exc

    def close(self) -> None:
        with self._mutex:
            try:
                self._client.close()
            finally:
                self._release_lock()
