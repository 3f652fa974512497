"""The warehouse connection: clickhouse-connect over a ``chdb:///path`` (embedded) or ``http(s)://`` DSN.

Everything else talks to ClickHouse through ``Warehouse``; library errors become WarehouseError here.

Lanes. One process sends the warehouse several kinds of work at once, and none may wait behind
another: each kind has its own engine session (a chDB handle or an HTTP client), so the engine runs
them concurrently and a slow query holds only its own lane.

- the *write* lane: inserts and DDL (ingest, the jobs' results, migrations);
- the *read* lanes (a small pool): Herald's own queries (the API, the jobs, dispatch lookups); in the
  embedded engine they are ``readonly = 2`` sessions, so a read can never write; every read carries
  ``max_execution_time`` (``query_timeout_s``) and fails with WarehouseTimeoutError past it;
- the *share* lane: statements that other workers send through web/clickhouse_http.py;
- the *probe* lane: ``/health``'s ``SELECT 1``;
- people's SQL runs on reader sessions (projections/sql_reader.py), held read-only by the engine.

The embedded engine. A chDB directory can be opened by one process at a time, so opening one takes an
exclusive lock file beside it and a second opener gets a clear error instead of a corrupt store. The
engine starts with Herald's configuration (projections/access.py: the one user's grants without any
file or network source, and the row policies), written beside the data directory with mode 0600, and
Herald's objects live in the database ``herald``.
"""

from __future__ import annotations

import fcntl
import os
import queue
import re
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DataError

from herald.errors import WarehouseError
from herald.settings import mask_dsn
from projections.access import DATABASE, embedded_config, embedded_users

_PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:")
_CODE = re.compile(r"\bCode:\s*(\d+)")
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_MAX_SETTINGS_LANES = 32
OWN_WORK = (("priority", "1"),)
"""Herald's own sessions (ingest, the API, the jobs) run at priority 1; people's SQL at a lower one
(projections/access.py ReaderLimits.priority): the engine pauses the lower while the higher run."""
TIMEOUT_EXCEEDED = 159
_AUTHENTICATION_FAILED = 516
_LIMIT_CODES = frozenset({158, 241, 307, 396})  # TOO_MANY_ROWS, MEMORY_LIMIT, TOO_MANY_BYTES, ..._OR_BYTES
_ACCESS_CODES = frozenset({164, 497})  # READONLY, ACCESS_DENIED
# The engine refused the data itself (a value a column cannot hold, a view's function on it): retrying
# the same block fails the same way.
_DATA_CODES = frozenset({6, 27, 38, 41, 43, 53, 69, 70, 72, 117, 131, 190, 321, 395, 407, 469})


class WarehouseTimeoutError(WarehouseError):
    """The engine cancelled a query at its time limit (or no lane freed up in time)."""


class WarehouseLimitError(WarehouseError):
    """The engine stopped a query at one of its bounds (rows, bytes, memory)."""


class WarehouseAccessError(WarehouseError):
    """The engine refused a statement the session may not run (read-only, missing grant)."""


class WarehouseDataError(WarehouseError):
    """The engine (or the client encoding the block for it) cannot hold the data of an insert: the same
    rows fail again on retry, so the caller must take the offending rows out (projections/writer.py)."""


def engine_code(exc: BaseException) -> int | None:
    """The ClickHouse error code of a driver exception (None when it has none)."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    match = _CODE.search(str(exc))
    return int(match.group(1)) if match else None


def translated(exc: ClickHouseError, what: str) -> WarehouseError:
    """A driver error as Herald's: the subclass says which bound or rule the engine applied."""
    code = engine_code(exc)
    cls: type[WarehouseError] = WarehouseError
    if code == TIMEOUT_EXCEEDED:
        cls = WarehouseTimeoutError
    elif code in _LIMIT_CODES:
        cls = WarehouseLimitError
    elif code in _ACCESS_CODES:
        cls = WarehouseAccessError
    elif code in _DATA_CODES or (code is None and isinstance(exc, DataError)):
        cls = WarehouseDataError  # the engine's refusal of the data, or the client's while encoding it
    out = cls(f"{what}: {exc}")
    out.__cause__ = exc
    return out


class _AsSent:
    """A bind value already in ClickHouse's text form (an HTTP ``param_<name>``): clickhouse-connect
    sends values of types it does not know as ``str(value)``, so this one reaches the engine byte for byte
    instead of being escaped a second time as a Python string would be."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


class _Lane:
    """One engine session and the lock that keeps it to one call at a time (a chDB handle runs one
    statement at a time; an HTTP client without a session could run more, the lock costs nothing)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.retired = False  # its warehouse moved (Warehouse._follow): closed once given back
        self.insert_contexts: dict[tuple[str, tuple[str, ...]], Any] = {}


class Warehouse:
    def __init__(
        self,
        dsn: str,
        *,
        read_lanes: int = 4,
        query_timeout_s: float = 30.0,
        resolve: Callable[[], str | None] | None = None,
    ) -> None:
        """``resolve`` (server DSNs only) finds the warehouse again after it moved: when a call cannot
        reach it or is refused its credentials, the DSN ``resolve`` returns replaces this one for the
        next calls (another worker's share after its owner restarted on a new port and secret)."""
        self.dsn = dsn
        self.query_timeout_s = query_timeout_s
        self._resolve = resolve
        self._read_lanes = max(1, read_lanes)
        self._moving = threading.Lock()
        self._lock_file: Any = None
        self._closed = False
        self._closers: list[Callable[[], None]] = []
        self._extra: dict[str, Any] = (
            {"database": DATABASE} if self.embedded else {"compress": False, "autogenerate_session_id": False}
        )
        if self.embedded:
            self._lock_embedded()
        try:
            self._write = _Lane(self._open_owner())
            self._reads: queue.Queue[_Lane] = queue.Queue()
            self._all_read_lanes = [
                _Lane(self.session(readonly=2, settings=OWN_WORK)) for _ in range(self._read_lanes)
            ]
            for lane in self._all_read_lanes:
                self._reads.put(lane)
            self._share: _Lane | None = None
            self._probe: _Lane | None = None
            self._probe_guard = threading.Lock()
            self._probe_thread: threading.Thread | None = None
            self._settings_lock = threading.Lock()
            self._settings_lanes: OrderedDict[tuple[tuple[str, str], ...], _Lane] = OrderedDict()
        except (ClickHouseError, OSError) as exc:
            self._release_lock()
            raise WarehouseError(f"cannot open warehouse {mask_dsn(dsn)}: {exc}") from exc

    # ------------------------------------------------------------------------------------ opening

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb:")

    @property
    def path(self) -> Path | None:
        return Path(urlsplit(self.dsn).path) if self.embedded else None

    @property
    def database(self) -> str:
        """The database Herald's objects are in."""
        if self.embedded:
            return DATABASE
        return urlsplit(self.dsn).path.strip("/").split("/")[0] or "default"

    def _open_owner(self) -> Client:
        if not self.embedded:
            return clickhouse_connect.get_client(dsn=self.dsn, **self._extra)
        config = self._write_engine_config()
        # The first handle of the process starts the engine with Herald's configuration; it creates
        # the database, and the lanes then open on it.
        boot = clickhouse_connect.get_client(dsn=self.dsn, chdb_options={"config-file": str(config)})
        try:
            legacy = boot.query(
                "SELECT count() FROM system.tables WHERE database = 'default' AND name = 'events'"
            ).result_rows[0][0]
            if legacy:
                raise WarehouseError(
                    f"the embedded warehouse {self.path} keeps Herald's tables in the database 'default', "
                    f"as versions before the '{DATABASE}' database did; start from a fresh "
                    "HERALD_DATA_DIR (the log on Kafka rebuilds it: cli.py replay)"
                )
            boot.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE} ENGINE = Atomic")
            owner = clickhouse_connect.get_client(dsn=self.dsn, **self._extra)
            for name, value in OWN_WORK:
                owner.command(f"SET {name} = {quote(value)}")
            return owner
        finally:
            boot.close()

    def _write_engine_config(self) -> Path:
        """Herald's engine configuration beside the data directory, readable by this user only."""
        assert self.path is not None
        folder = self.path.with_name(self.path.name + ".config")
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
        users = folder / "users.xml"
        config = folder / "config.xml"
        for path, text in ((users, embedded_users()), (config, embedded_config(str(users)))):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(path, 0o600)
        return config

    def session(
        self, readonly: int = 0, settings: Sequence[tuple[str, str]] = (), dsn: str | None = None
    ) -> Client:
        """A new engine session on Herald's database with ``settings``, then ``readonly`` (after
        ``readonly = 1`` the session cannot change any setting again). In the embedded engine they are
        SET on the session in order; a server client (as ``dsn``'s user when given) sends them with
        every request, ``readonly`` last."""
        for name, _ in settings:
            if not _SETTING_NAME.fullmatch(name):
                raise WarehouseError(f"{name!r} is not a setting name")
        if not self.embedded:
            pairs = [*settings, *([("readonly", str(int(readonly)))] if readonly else [])]
            return clickhouse_connect.get_client(dsn=dsn or self.dsn, **self._extra, settings=dict(pairs))
        client = clickhouse_connect.get_client(dsn=self.dsn, **self._extra)
        for name, value in settings:
            client.command(f"SET {name} = {quote(value)}")
        if readonly:
            client.command(f"SET readonly = {int(readonly)}")
        return client

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

    # ------------------------------------------------------------------------------------ writes

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        with self._write.lock:
            self._write.insert_contexts.clear()  # DDL may change a table's structure
            try:
                return self._write.client.command(sql, parameters=parameters)
            except ClickHouseError as exc:
                self._follow(exc)
                raise translated(exc, "warehouse command failed") from exc

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        columns: Sequence[str],
        dedup_token: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Insert rows as one block. ``dedup_token`` makes a repeated insert of the same block a no-op
        (tables carry non_replicated_deduplication_window); ``settings`` apply to this insert only.
        A value the client cannot encode for its column raises WarehouseDataError, as the engine's
        refusals of the data do."""
        if not rows:
            return
        lane = self._write
        key = (table, tuple(columns))
        with lane.lock:
            try:
                # A cached insert context skips the table-structure lookup each new context costs
                # (about a fifth of a small insert); only the token and settings change between inserts.
                context = lane.insert_contexts.get(key)
                if context is None:
                    context = lane.client.create_insert_context(table, list(columns))
                    lane.insert_contexts[key] = context
                added = {
                    **({"insert_deduplication_token": dedup_token} if dedup_token else {}),
                    **(settings or {}),
                }
                context.settings.update(added)
                context.data = rows
                try:
                    lane.client.insert(context=context)
                finally:
                    context.data = None
                    for name in added:
                        context.settings.pop(name, None)
            except ClickHouseError as exc:
                lane.insert_contexts.pop(key, None)  # the table may have changed
                self._follow(exc)
                raise translated(exc, f"insert into {table} failed") from exc
            except (ArithmeticError, ValueError, TypeError, struct.error) as exc:
                # raised while encoding the block (e.g. an int out of its column's range): nothing was sent
                lane.insert_contexts.pop(key, None)
                raise WarehouseDataError(f"insert into {table} failed: cannot encode a value: {exc}") from exc

    # ------------------------------------------------------------------------------------ reads

    @contextmanager
    def _read_lane(self) -> Iterator[_Lane]:
        try:
            lane = self._reads.get(timeout=self.query_timeout_s)
        except queue.Empty:
            raise WarehouseTimeoutError(
                f"no warehouse session came free within {self.query_timeout_s:g} s: every read lane is busy"
            ) from None
        try:
            with lane.lock:
                yield lane
        finally:
            if lane.retired:
                lane.client.close()
            else:
                self._reads.put(lane)

    def _read_settings(self, settings: dict[str, Any] | None) -> dict[str, Any]:
        return {"max_execution_time": self.query_timeout_s, **(settings or {})}

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self.records(sql, parameters)[1]

    def records(
        self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._read_lane() as lane:
            try:
                result = lane.client.query(sql, parameters=parameters, settings=self._read_settings(settings))
            except ClickHouseError as exc:
                self._follow(exc)
                raise translated(exc, "warehouse query failed") from exc
            return list(result.column_names), [tuple(r) for r in result.result_rows]

    def scalar(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        rows = self.rows(sql, parameters)
        return rows[0][0] if rows else None

    def probe(self, timeout_s: float = 2.0) -> str | None:
        """Why the warehouse is not answering (None when ``SELECT 1`` came back within ``timeout_s``).
        The probe runs on its own session in a helper thread, so a stuck engine cannot hold the caller;
        while an earlier probe is still waiting, no other is started."""
        with self._probe_guard:
            if self._probe_thread is not None and self._probe_thread.is_alive():
                return "warehouse not answering: the previous probe has not come back"
            answer: list[str | None] = []

            def ask() -> None:
                try:
                    self._probe_once(timeout_s)
                    answer.append(None)
                except (ClickHouseError, OSError) as exc:
                    answer.append(f"warehouse probe failed: {str(exc)[:200]}")

            thread = threading.Thread(target=ask, name="warehouse-probe", daemon=True)
            self._probe_thread = thread
            thread.start()
        thread.join(timeout_s)
        if not answer:
            return f"warehouse not answering within {timeout_s:g} s"
        return answer[0]

    def _probe_once(self, timeout_s: float) -> None:
        if self._probe is None:
            self._probe = _Lane(self.session())
        with self._probe.lock:
            self._probe.client.query("SELECT 1", settings={"max_execution_time": timeout_s})

    # ------------------------------------------------------------------------------------ the share

    def _share_lane(self) -> _Lane:
        if self._share is None:
            self._share = _Lane(self.session(settings=OWN_WORK))
        return self._share

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
        if settings and "readonly" in settings:
            lane = self._settings_lane(settings)
            with lane.lock:
                try:
                    return lane.client.raw_query(sql, parameters=bound or None, fmt=fmt)
                except ClickHouseError as exc:
                    raise translated(exc, "warehouse query failed") from exc
        lane = self._share_lane()
        with lane.lock:
            try:
                return lane.client.raw_query(
                    sql, parameters=bound or None, settings=_changed(lane.client, settings), fmt=fmt
                )
            except ClickHouseError as exc:
                raise translated(exc, "warehouse query failed") from exc

    def _settings_lane(self, settings: dict[str, str]) -> _Lane:
        """A session opened with exactly ``settings`` (``readonly`` last), kept for the next request with
        the same ones: a read-only request cannot be served by undoing settings on a shared session."""
        key = tuple(sorted(settings.items()))
        with self._settings_lock:
            lane = self._settings_lanes.pop(key, None)
            if lane is None:
                ordered = [(k, v) for k, v in settings.items() if k != "readonly"]
                lane = _Lane(self.session(readonly=int(settings["readonly"]), settings=ordered))
            self._settings_lanes[key] = lane
            while len(self._settings_lanes) > _MAX_SETTINGS_LANES:
                _, old = self._settings_lanes.popitem(last=False)
                with old.lock:
                    old.client.close()
            return lane

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
        lane = self._share_lane()
        with lane.lock:
            try:
                summary = lane.client.raw_insert(
                    table, columns, data, settings=_changed(lane.client, settings), fmt=fmt
                )
            except ClickHouseError as exc:
                raise translated(exc, f"insert into {table} failed") from exc
            return summary.written_rows

    # ------------------------------------------------------------------------------------ closing

    def _follow(self, exc: ClickHouseError) -> None:
        """After a failure to reach the warehouse or a refusal of its credentials, ask ``resolve`` where
        it is now and reopen every session there; the failed call still fails (its caller retries)."""
        if self._resolve is None or engine_code(exc) not in (None, _AUTHENTICATION_FAILED):
            return
        if not self._moving.acquire(blocking=False):
            return  # another thread is already moving the sessions
        try:
            moved = self._resolve()
            if not moved or moved == self.dsn:
                return
            fresh: list[_Lane] = []
            try:
                # every new session first, so a warehouse that is not quite there leaves the old ones
                fresh.append(_Lane(clickhouse_connect.get_client(dsn=moved, **self._extra)))
                for _ in range(self._read_lanes):
                    fresh.append(_Lane(self.session(readonly=2, settings=OWN_WORK, dsn=moved)))
            except (ClickHouseError, OSError):
                for lane in fresh:
                    lane.client.close()
                return  # not there yet: the next failure asks again
            old = [self._write, self._share, self._probe, *self._settings_lanes.values()]
            reads: queue.Queue[_Lane] = queue.Queue()
            for lane in fresh[1:]:
                reads.put(lane)
            while not self._reads.empty():
                old.append(self._reads.get_nowait())
            self._mark_read_lanes_retired()
            self._all_read_lanes = fresh[1:]
            self.dsn, self._write, self._reads = moved, fresh[0], reads
            self._share, self._probe = None, None
            self._settings_lanes.clear()
            for gone in old:
                if gone is not None:
                    gone.client.close()
        finally:
            self._moving.release()

    def _mark_read_lanes_retired(self) -> None:
        for lane in self._all_read_lanes:
            lane.retired = True
        self._all_read_lanes = []

    def on_close(self, closer: Callable[[], None]) -> None:
        """Call ``closer`` first when the warehouse closes (sessions opened on it elsewhere)."""
        self._closers.append(closer)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for closer in self._closers:
            closer()
        lanes = [self._write, self._share, self._probe, *self._settings_lanes.values()]
        while not self._reads.empty():
            lanes.append(self._reads.get_nowait())
        try:
            for lane in lanes:
                if lane is not None:
                    with lane.lock:
                        lane.client.close()
        finally:
            self._release_lock()


def _changed(client: Client, settings: dict[str, str] | None) -> dict[str, str] | None:
    changed = {k: v for k, v in (settings or {}).items() if client.get_client_setting(k) != str(v)}
    return changed or None


def quote(value: str) -> str:
    """A ClickHouse string literal.

    >>> quote("it's")
    "'it\\\\'s'"
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
