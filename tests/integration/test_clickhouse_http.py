"""The ClickHouse HTTP shim over the real embedded warehouse: a second Warehouse opened with the
``http://`` DSN sees and writes the same data as the process that owns chDB."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from herald.errors import WarehouseError
from projections.migrate import migrate
from projections.rows import EVENT_COLUMNS, event_row
from projections.warehouse import Warehouse
from projections.writer import IngestWriter
from streams.ingest import IngestResult, PartitionProgress, SourceMessage
from web.clickhouse_http import create_clickhouse_http_app, share_dsn
from web.server import ApiServer

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 28, 12, 0, 0, 123000, tzinfo=UTC)
SECRET = "per-run-secret-for-the-shim-tests"


class Shim:
    def __init__(self, direct: Warehouse, http: Warehouse, port: int) -> None:
        self.direct = direct
        self.http = http
        self.port = port


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shim]:
    """One owner of chDB serving the shim, and an HTTP Warehouse in the same test process (the HTTP
    client never touches chDB, so both fit in one process)."""
    path: Path = tmp_path_factory.mktemp("shim") / "warehouse"
    direct = Warehouse(f"chdb://{path}")
    migrate(direct)
    server = ApiServer(create_clickhouse_http_app(direct, SECRET), "127.0.0.1", 0)
    port = server.start()
    http = Warehouse(share_dsn(port, SECRET))
    try:
        yield Shim(direct, http, port)
    finally:
        http.close()
        server.stop()
        direct.close()


def event(event_id: str, at: datetime = T0, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": "DELIVERED",
        "occurred_at": at,
        "tenant_id": "acme",
        "notification_id": f"n-{event_id}",
        "channel": "EMAIL",
        **extra,
    }


def rows_of(topic: str, partition: int, offsets: range, **extra: Any) -> list[list[Any]]:
    return [
        event_row(
            event(f"{topic}-{partition}-{o}", T0 + timedelta(seconds=o), **extra), topic, partition, o, T0
        )
        for o in offsets
    ]


def test_migrate_through_http_finds_every_migration_applied(shim: Shim) -> None:
    """Migrations applied by the owner are seen as applied through the shim: nothing to do."""
    assert migrate(shim.http) == []
    ledger = "SELECT version, checksum FROM schema_migrations FINAL ORDER BY version"
    assert shim.http.rows(ledger) == shim.direct.rows(ledger) != []


def test_insert_with_a_repeated_dedup_token_lands_once(shim: Shim) -> None:
    """The dedup token reaches the engine: a later block with the same token is dropped, whatever its rows."""
    first, other = rows_of("t-dedup", 0, range(50)), rows_of("t-dedup", 0, range(50, 80))
    shim.http.insert("events", first, EVENT_COLUMNS, dedup_token="events|t-dedup/0/0-49")
    shim.http.insert("events", first, EVENT_COLUMNS, dedup_token="events|t-dedup/0/0-49")
    shim.http.insert("events", other, EVENT_COLUMNS, dedup_token="events|t-dedup/0/0-49")
    count = "SELECT count(), uniqExact(event_id) FROM events WHERE _topic = 't-dedup'"
    assert shim.direct.rows(count) == [(50, 50)]
    assert shim.http.rows(count) == [(50, 50)]


def test_writer_reads_back_the_same_positions_through_http(shim: Shim) -> None:
    """applied_upto (Array(UInt16) parameter) and seen_event_ids (by log time) agree between HTTP and chDB."""
    topic = "t-writer"
    accepted = [
        (
            SourceMessage(topic, p, o, b"k", b"", int((T0 + timedelta(seconds=o)).timestamp() * 1000)),
            event(f"{topic}-{p}-{o}", T0 + timedelta(seconds=o)),
        )
        for p in (0, 1, 3)
        for o in range(10 * p, 10 * p + 20)
    ]
    progress = {(topic, p): PartitionProgress(10 * p, 10 * p + 19, rows=20) for p in (0, 1, 3)}
    IngestWriter(shim.http, "w").write(IngestResult(accepted=accepted, progress=progress))

    over_http, direct = IngestWriter(shim.http, "w"), IngestWriter(shim.direct, "w")
    upto = over_http.applied_upto(topic, [0, 1, 2, 3])
    assert upto == direct.applied_upto(topic, [0, 1, 2, 3])
    assert upto == {(topic, 0): 19, (topic, 1): 29, (topic, 2): -1, (topic, 3): 49}
    seen = over_http.seen_event_ids(topic, 3, horizon_s=5, limit=100)
    assert seen == direct.seen_event_ids(topic, 3, horizon_s=5, limit=100)
    assert [e for e, _ in seen] == [f"{topic}-3-{o}" for o in range(49, 43, -1)]


def test_datetime64_and_nullable_columns_round_trip(shim: Shim) -> None:
    """Millisecond UTC timestamps, NULLs and set Nullable values come back as the chDB client reads them."""
    row = rows_of("t-types", 0, range(1), template_version=None, latency_ms=1234, cost_micros=None)
    shim.http.insert("events", row, EVENT_COLUMNS)
    query = (
        "SELECT occurred_at, template_version, latency_ms, cost_micros FROM events "
        "WHERE _topic = 't-types' AND occurred_at = {at:DateTime64(3, 'UTC')}"
    )
    got = shim.http.rows(query, {"at": T0})
    assert got == shim.direct.rows(query, {"at": T0})
    ((occurred_at, template_version, latency_ms, cost_micros),) = got
    assert occurred_at.replace(tzinfo=occurred_at.tzinfo or UTC) == T0  # naive means UTC, as from chDB
    assert (template_version, latency_ms, cost_micros) == (None, 1234, None)


def test_parameters_with_quotes_escapes_and_nulls_reach_the_engine_unchanged(shim: Shim) -> None:
    """Server-side bound values are the values the caller passed, whatever characters they hold."""
    params = {"s": "it's a\tb\\c\nd", "a": ["q'", "z\\", ""], "n": None, "u": [1, 65535]}
    query = "SELECT {s:String}, {a:Array(String)}, {n:Nullable(UInt32)}, {u:Array(UInt16)}"
    assert shim.http.rows(query, params) == shim.direct.rows(query, params)
    assert shim.http.rows(query, params) == [("it's a\tb\\c\nd", ["q'", "z\\", ""], None, [1, 65535])]


def test_per_query_settings_apply_to_that_query_only(shim: Shim) -> None:
    """Settings sent with a query (or a SET without a session) do not leak into the owner's engine handle."""
    before = shim.direct.scalar("SELECT getSetting('max_threads')")
    columns, rows = shim.http.records("SELECT getSetting('max_threads') AS m", settings={"max_threads": 3})
    assert (columns, rows) == (["m"], [(3,)])
    shim.http.command("SET max_threads = 1")
    assert shim.direct.scalar("SELECT getSetting('max_threads')") == before != 3


def test_readonly_applies_to_one_request_and_the_owner_stays_writable(shim: Shim) -> None:
    """A request with readonly runs on a read-only session (the engine refuses its DDL); others write."""
    readonly = "SELECT getSetting('readonly')"
    assert shim.http.raw_query(readonly, "TabSeparated", settings={"readonly": "1"}) == b"1\n"
    shim.direct.command("CREATE TABLE IF NOT EXISTS shim_kept (a UInt8) ENGINE = Memory")
    with pytest.raises(WarehouseError, match="readonly"):
        shim.http.raw_query("DROP TABLE shim_kept", settings={"readonly": "1"})
    assert shim.direct.scalar("EXISTS TABLE shim_kept") == 1
    assert shim.http.raw_query(readonly, "TabSeparated") == b"0\n"
    assert shim.direct.scalar(readonly) == 2  # Herald's own reads: readonly = 2 sessions, never 1
    shim.direct.command("CREATE TABLE IF NOT EXISTS shim_writable (a UInt8) ENGINE = Memory")
    shim.direct.command("DROP TABLE shim_writable")


def test_bad_sql_raises_warehouse_error_with_the_clickhouse_message(shim: Shim) -> None:
    """Engine errors cross HTTP with their code and message."""
    with pytest.raises(WarehouseError, match=r"(?s)code: 62.*SYNTAX_ERROR"):
        shim.http.rows("SELEC 1")
    with pytest.raises(WarehouseError, match=r"(?s)code: 60.*UNKNOWN_TABLE"):
        shim.http.insert("no_such_table", [("x",)], ["a"])


def test_counts_and_raw_queries_through_http_equal_the_direct_ones(shim: Shim) -> None:
    """The same statement gives the same answer over HTTP and in process."""
    assert shim.http.scalar("SELECT count() FROM events") == shim.direct.scalar("SELECT count() FROM events")
    sql = "SELECT tenant_id, count() AS n FROM events WHERE _offset < {o:UInt64} GROUP BY tenant_id"
    raw = shim.http.raw_query(sql, "JSONEachRow", {"o": "40"})
    assert raw == shim.direct.raw_query(sql, "JSONEachRow", {"o": "40"}) and raw.startswith(b'{"tenant_id"')
    ddl = "CREATE TABLE IF NOT EXISTS shim_scratch (a UInt8) ENGINE = Memory"
    assert shim.http.raw_query(ddl) == b""
    shim.http.command("DROP TABLE shim_scratch")
    assert not shim.direct.scalar("EXISTS TABLE shim_scratch")


@pytest.mark.parametrize("compress", ["lz4", "zstd", "gzip"])
def test_a_client_that_compresses_its_inserts_is_understood(shim: Shim, compress: str) -> None:
    """clickhouse-connect compresses inserts unless told not to; the shim decodes them."""
    client = clickhouse_connect.get_client(dsn=share_dsn(shim.port, SECRET), compress=compress)
    try:
        topic = f"t-{compress}"
        client.insert("events", rows_of(topic, 0, range(7)), column_names=list(EVENT_COLUMNS))
    finally:
        client.close()
    assert shim.direct.scalar(f"SELECT count() FROM events WHERE _topic = '{topic}'") == 7


@pytest.mark.parametrize("password", [None, "wrong-secret-of-the-same-size-xx"])
def test_a_request_without_the_secret_is_refused_before_the_engine(shim: Shim, password: str | None) -> None:
    """No secret or a wrong one: 401 with ClickHouse's authentication error, and nothing runs."""
    dsn = f"http://127.0.0.1:{shim.port}" if password is None else share_dsn(shim.port, password)
    with pytest.raises(Exception, match=r"516|[Aa]uthentication"):
        clickhouse_connect.get_client(dsn=dsn).command("CREATE TABLE shim_intruder (a UInt8) ENGINE = Memory")
    assert not shim.direct.scalar("EXISTS TABLE shim_intruder")


def test_ping_answers_like_clickhouse(shim: Shim) -> None:
    """/ping returns ClickHouse's 'Ok.' so health checks written for a server work unchanged."""
    with urllib.request.urlopen(f"http://127.0.0.1:{shim.port}/ping", timeout=5) as response:
        assert response.read() == b"Ok.\n"


def test_embedded_inserts_reuse_their_context_and_still_honour_each_token(shim: Shim) -> None:
    """A cached insert context carries each insert's own dedup token: a repeat drops, a new one lands."""
    first, second = rows_of("t-ctx", 0, range(20)), rows_of("t-ctx", 0, range(20, 30))
    shim.direct.insert("events", first, EVENT_COLUMNS, dedup_token="ctx/0-19")
    shim.direct.insert("events", first, EVENT_COLUMNS, dedup_token="ctx/0-19")
    shim.direct.insert("events", second, EVENT_COLUMNS, dedup_token="ctx/20-29")
    assert shim.direct.scalar("SELECT count() FROM events WHERE _topic = 't-ctx'") == 30
