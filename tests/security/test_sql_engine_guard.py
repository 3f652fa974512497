"""People's SQL against the real engine: a corpus of bypass attempts, each refused by the engine itself
(the text check of projections/sql_reader.py is switched off), and row policies that show a tenant
reader only its tenant's rows in every object of the warehouse."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from herald.errors import WarehouseError
from projections.access import (
    GLOBAL_TABLES,
    KNOWN_SYSTEM_TABLES,
    MATERIALIZED_VIEWS,
    SHARED_ROWS,
    SYSTEM_TABLES_FOR_TENANTS,
    TENANT_TABLES,
    VIEWS,
)
from projections.sql_reader import SqlRefusedError
from projections.warehouse import WarehouseAccessError
from tests.security.warehouse_env import A, B, Filled, distinct, fill, objects

pytestmark = pytest.mark.integration

OUTFILE = "/tmp/herald-sql-guard-outfile"


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    yield from fill(tmp_path_factory.mktemp("sqlguard"))


# Each attempt must fail in the engine (a parse error of the wrapped statement, read-only mode, a
# missing grant, an unknown function or table) when the text check is off.
ENGINE_REFUSES = {
    # several statements, hidden by comments, strings, dollar quoting
    "two statements": "SELECT 1; DROP TABLE events",
    "statement after a comment": "SELECT 1 -- x\n; DROP TABLE events",
    "statement after a block comment": "SELECT 1 /* x */; TRUNCATE TABLE events",
    "statement after a string": "SELECT 'a;b'; DROP TABLE events",
    "statement after dollar quoting": "SELECT $$ ' $$; DROP TABLE events",
    "statement after a tagged dollar string": "SELECT $t$ x $t$; DROP TABLE events",
    "escaped quote then a statement": "SELECT 'it\\'s'; DROP TABLE events",
    # writes and DDL
    "drop": "DROP TABLE events",
    "truncate": "TRUNCATE TABLE events",
    "insert": "INSERT INTO events (event_id) VALUES ('x')",
    "insert select": "INSERT INTO events SELECT * FROM events",
    "alter delete": "ALTER TABLE events DELETE WHERE 1",
    "alter update": "ALTER TABLE events UPDATE tenant_id = 'x' WHERE 1",
    "create table": "CREATE TABLE evil (a UInt8) ENGINE = Memory",
    "create table as select": "CREATE TABLE evil ENGINE = Memory AS SELECT * FROM events",
    "create function": "CREATE FUNCTION evil AS x -> x",
    "rename": "RENAME TABLE events TO evil",
    "detach": "DETACH TABLE events",
    "optimize": "OPTIMIZE TABLE events FINAL",
    "system": "SYSTEM DROP MARK CACHE",
    "kill": "KILL QUERY WHERE 1",
    "grant": "GRANT ALL ON *.* TO default",
    "create user": "CREATE USER evil",
    "set": "SET readonly = 0",
    "use": "USE system",
    "backup": "BACKUP TABLE events TO File('/tmp/x')",
    "explain": "EXPLAIN SELECT 1",
    "show": "SHOW TABLES",
    "describe": "DESCRIBE TABLE events",
    # client-side output and closing the wrapper
    "into outfile": f"SELECT * FROM events INTO OUTFILE '{OUTFILE}'",
    "into outfile after closing the wrapper": f"SELECT 1) INTO OUTFILE '{OUTFILE}' --",
    "settings after closing the wrapper": "SELECT 1) SETTINGS readonly = 0 --",
    "format clause": "SELECT 1 FORMAT JSON",
    # files, network, processes: table functions
    "file table function": "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "file table function on the keys file": "SELECT * FROM file('keys.yaml', 'LineAsString')",
    "url": "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
    "url to the share": "SELECT * FROM url('http://127.0.0.1:8123/?query=DROP%20TABLE%20events', 'TSV')",
    "s3": "SELECT * FROM s3('http://127.0.0.1:1/bucket/x.csv', 'CSV')",
    "remote": "SELECT * FROM remote('127.0.0.1:9000', system.one)",
    "remote secure": "SELECT * FROM remoteSecure('127.0.0.1:9440', system.one)",
    "cluster": "SELECT * FROM cluster('default', system.one)",
    "executable": "SELECT * FROM executable('id', 'LineAsString', 'x String')",
    "mysql": "SELECT * FROM mysql('127.0.0.1:3306', 'db', 't', 'u', 'p')",
    "postgresql": "SELECT * FROM postgresql('127.0.0.1:5432', 'db', 't', 'u', 'p')",
    "hdfs": "SELECT * FROM hdfs('hdfs://127.0.0.1:9000/x', 'TSV', 'a String')",
    "azure": "SELECT * FROM azureBlobStorage('http://127.0.0.1:1', 'c', 'x', 'TSV')",
    "python objects of the worker": "SELECT * FROM Python(globals)",
    "format": "SELECT * FROM format('CSV', 'a\n')",
    "loop": "SELECT * FROM loop(events) LIMIT 1",
    "input": "SELECT * FROM input('a String')",
    "index bypassing row policies": "SELECT * FROM mergeTreeIndex(currentDatabase(), 'events')",
    "file-system database": "SELECT * FROM default.`/etc/passwd`",
    "relative file-system table": "SELECT * FROM `/etc/passwd`",
    # engine internals
    "users": "SELECT * FROM system.users",
    "grants": "SELECT * FROM system.grants",
    "row policies": "SELECT * FROM system.row_policies",
    "introspection": "SELECT addressToSymbol(toUInt64(1))",
    "other database": "SELECT * FROM information_schema.nonexistent",
}

# A SETTINGS clause: refused at the top of a statement (readonly), ignored in the subquery a reader
# wraps every query in; either way the session's settings hold.
SETTINGS_OVERRIDES = {
    "readonly": "readonly = 0",
    "tenant marker": f"log_comment = 'herald-tenant:{B}'",
    "clear marker": "log_comment = ''",
    "time limit": "max_execution_time = 0",
    "row limit": "max_result_rows = 0",
    "table filter": "additional_table_filters = {'events': '1'}",
    "memory limit": "max_memory_usage = 0",
}

# Each runs (nothing to refuse) but shows tenant A nothing of tenant B.
SHOWS_ONLY_OWN_ROWS = {
    "filter on another tenant": f"SELECT DISTINCT tenant_id FROM events WHERE tenant_id = '{B}'",
    "qualified name": "SELECT DISTINCT tenant_id FROM herald.events",
    "merge table function": "SELECT DISTINCT tenant_id FROM merge(currentDatabase(), '^events$')",
    "view table function": "SELECT DISTINCT tenant_id FROM view(SELECT tenant_id FROM events)",
    "scalar subquery": "SELECT arrayJoin((SELECT groupUniqArray(tenant_id) FROM events))",
    "join": "SELECT DISTINCT e.tenant_id FROM events AS e JOIN delivery_minute AS d USING (tenant_id)",
    "materialized view": "SELECT DISTINCT tenant_id FROM delivery_minute_mv",
    "view": "SELECT DISTINCT tenant_id FROM alerts_current WHERE tenant_id != '*'",
    "union": "SELECT DISTINCT tenant_id FROM events UNION ALL SELECT DISTINCT tenant_id FROM delivery_hour",
    "dollar string": "SELECT DISTINCT tenant_id FROM events WHERE $$ ; DROP TABLE events $$ != ''",
    "comment": "SELECT DISTINCT tenant_id FROM events /* ; DROP TABLE events */",
    "error message channel": f"SELECT DISTINCT tenant_id FROM events WHERE throwIf(tenant_id = '{B}') = 0",
}


@pytest.mark.parametrize("sql", ENGINE_REFUSES.values(), ids=ENGINE_REFUSES.keys())
def test_the_engine_refuses_each_bypass_attempt(filled: Filled, sql: str) -> None:
    """With the text check off, the engine itself refuses the attempt, and nothing changed."""
    before = filled.warehouse.rows("SELECT count(), uniqExact(tenant_id) FROM events")
    with pytest.raises(WarehouseError) as refused:
        filled.readers.query(A, sql, 1000, check=False)
    assert not isinstance(refused.value, SqlRefusedError), "refused by Herald's text, not by the engine"
    assert "Code: " in str(refused.value)
    assert filled.warehouse.rows("SELECT count(), uniqExact(tenant_id) FROM events") == before
    assert not filled.warehouse.scalar("EXISTS TABLE evil")
    assert not Path(OUTFILE).exists()


@pytest.mark.parametrize("setting", SETTINGS_OVERRIDES.values(), ids=SETTINGS_OVERRIDES.keys())
def test_a_settings_clause_cannot_lift_the_sessions_settings(filled: Filled, setting: str) -> None:
    """Top level: the engine refuses it (readonly); inside the reader's subquery: the engine ignores it
    and the tenant still sees only its rows under its own marker and limits."""
    read = "SELECT DISTINCT tenant_id, getSetting('log_comment'), getSetting('readonly') FROM events"
    with pytest.raises(WarehouseAccessError, match="readonly"):
        filled.readers.execute_unchecked(A, f"{read} SETTINGS {setting}")
    rows = filled.readers.query(A, f"{read} SETTINGS {setting}", 1000, check=False).rows
    assert rows == [(A, f"herald-tenant:{A}", 1)]
    with pytest.raises(SqlRefusedError, match="SETTINGS clause"):
        filled.readers.query(A, f"{read} SETTINGS {setting}", 1000)


@pytest.mark.parametrize("sql", ENGINE_REFUSES.values(), ids=ENGINE_REFUSES.keys())
def test_with_the_text_check_on_the_attempt_is_refused_all_the_same(filled: Filled, sql: str) -> None:
    """The friendly check may answer first; either way the attempt fails."""
    with pytest.raises(WarehouseError):
        filled.readers.query(A, sql, 1000)


@pytest.mark.parametrize("sql", SHOWS_ONLY_OWN_ROWS.values(), ids=SHOWS_ONLY_OWN_ROWS.keys())
def test_reads_around_the_row_policy_show_only_the_tenant(filled: Filled, sql: str) -> None:
    """Qualified names, table functions, views, subqueries and joins all read through the row policies;
    the same read by a global reader shows the other tenant (so the data it would leak is there)."""
    assert distinct(filled.readers, A, sql) <= {A}
    if "throwIf" in sql:
        with pytest.raises(WarehouseError, match=r"throwIf|FUNCTION_THROW"):
            filled.readers.query(None, sql, 1000)
    else:
        assert B in distinct(filled.readers, None, sql)


def test_the_scalar_file_function_is_refused_by_the_check_on_the_engines_parse(filled: Filled) -> None:
    """chDB evaluates file() without an access check (module docstring of projections/access.py): the
    check on the engine's canonical form refuses it however it is spelled."""
    for sql in ("SELECT file('/etc/passwd')", "SELECT `file`('/etc/passwd')", "SELECT\tfile\n('/etc/hosts')"):
        with pytest.raises(SqlRefusedError, match=r"file\(\) is not available"):
            filled.readers.query(A, sql, 10)
        with pytest.raises(SqlRefusedError):
            filled.readers.query(None, sql, 10)


def test_every_object_of_the_warehouse_is_classified(filled: Filled) -> None:
    """A new table or view must be given a row policy (or be a view over tables that have one)."""
    found = set(objects(filled.warehouse))
    assert found == set(TENANT_TABLES) | GLOBAL_TABLES | VIEWS | set(MATERIALIZED_VIEWS)


def test_every_system_table_of_the_engine_is_known(filled: Filled) -> None:
    """An engine upgrade that adds a system table fails here until the table is classified."""
    tables = {r[0] for r in filled.warehouse.rows("SELECT name FROM system.tables WHERE database = 'system'")}
    assert tables - KNOWN_SYSTEM_TABLES == set()


def test_every_object_shows_a_tenant_reader_only_its_rows(filled: Filled) -> None:
    """Every table and view: a tenant analyst sees its tenant (and shared alerts), a global reader both
    tenants; a global-only table shows a tenant nothing."""
    seen: dict[str, tuple[set[object], set[object]]] = {}
    for name, columns in objects(filled.warehouse).items():
        if "tenant_id" in columns:
            sql = f"SELECT DISTINCT tenant_id FROM {name}"
            seen[name] = (distinct(filled.readers, A, sql), distinct(filled.readers, None, sql))
        else:
            sql = f"SELECT count() FROM {name}"
            seen[name] = (distinct(filled.readers, A, sql), distinct(filled.readers, None, sql))
    for name, (tenant_view, global_view) in seen.items():
        if name in GLOBAL_TABLES:
            assert tenant_view == {0} and global_view != {0}, name
            continue
        shared = {SHARED_ROWS.get(name.removesuffix("_current"), "")} - {""}
        assert tenant_view == {A} | shared, name
        assert {A, B} <= global_view, name


def test_system_tables_outside_the_reference_list_show_a_tenant_nothing(filled: Filled) -> None:
    """Processes, parts, errors, settings profiles …: no row for a tenant reader (or the engine refuses)."""
    present = {
        r[0] for r in filled.warehouse.rows("SELECT name FROM system.tables WHERE database = 'system'")
    }
    leaking = []
    for table in sorted((present & KNOWN_SYSTEM_TABLES) - SYSTEM_TABLES_FOR_TENANTS):
        try:
            count = filled.readers.query(A, f"SELECT count() FROM system.{table}", 10).rows[0][0]
        except WarehouseError:
            continue
        if count:
            leaking.append((table, count))
    assert leaking == []


def test_a_tenant_reader_sees_its_own_marker_and_cannot_change_it(filled: Filled) -> None:
    """The session's tenant marker is fixed before readonly: a SETTINGS clause cannot move it."""
    assert filled.readers.query(A, "SELECT getSetting('log_comment')", 1).rows == [(f"herald-tenant:{A}",)]
    with pytest.raises(WarehouseAccessError, match="readonly"):
        filled.readers.execute_unchecked(A, "SELECT 1 SETTINGS log_comment = ''")
