"""Which warehouse objects are derived from the lifecycle log, read from the migrations themselves.

The migrations are the one list of Herald's objects. This module reads their statements into a catalog
(each object's name, kind, the TO table of a materialized view and the objects its SELECT reads) and
follows it from the ingest projection's own tables: everything a replay must drop and rebuild, in an
order that can be dropped. Pure: statements in, objects out (``projections/migrate.py`` reads the files).

The parser knows the shapes the migrations use and refuses the rest, so a migration it cannot read
fails the unit tests instead of leaving an object out of a replay:

- ``CREATE TABLE [IF NOT EXISTS] name (columns …) ENGINE …``
- ``CREATE [OR REPLACE] VIEW [IF NOT EXISTS] name AS SELECT …``
- ``CREATE MATERIALIZED VIEW [IF NOT EXISTS] name TO target [(columns)] AS SELECT …``
- ``DROP TABLE|VIEW [IF EXISTS] name``, ``ALTER TABLE name …`` (``MODIFY QUERY SELECT …`` too)

What a SELECT reads is every name after FROM or JOIN at query level (subqueries included, the inside
of function calls such as ``extract(DAY FROM t)`` not), less table functions, ``ARRAY JOIN`` and the
names of its own ``WITH name AS (SELECT …)`` expressions.

>>> objects = catalog([
...     "CREATE TABLE IF NOT EXISTS events (event_id String) ENGINE = MergeTree ORDER BY event_id",
...     "CREATE TABLE IF NOT EXISTS daily (day Date, n UInt64) ENGINE = SummingMergeTree ORDER BY day",
...     "CREATE MATERIALIZED VIEW IF NOT EXISTS daily_mv TO daily AS "
...     "SELECT toDate(occurred_at) AS day, count() AS n FROM events AS e GROUP BY day",
...     "CREATE TABLE IF NOT EXISTS alerts (id String) ENGINE = MergeTree ORDER BY id",
...     "CREATE VIEW IF NOT EXISTS busy_days AS SELECT day FROM daily JOIN alerts ON 1 WHERE n > 9",
... ])
>>> objects["daily_mv"].kind, objects["daily_mv"].target, sorted(objects["busy_days"].reads)
(<Kind.MATERIALIZED_VIEW: 'MATERIALIZED VIEW'>, 'daily', ['alerts', 'daily'])
>>> [o.name for o in derived(objects, roots=("events",))]
['daily_mv', 'busy_days', 'daily', 'events']
>>> derived(objects, roots=("events",))[0].drop_statement
'DROP VIEW IF EXISTS daily_mv'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from herald.errors import HeraldError

INGEST_TABLES = ("events", "ingest_batches", "ingest_intents")
"""The tables the ingest projection writes itself (projections/writer.py): the roots of the lineage.

``events`` holds the log's rows. ``ingest_batches`` holds the projection's position in the log and what
it refused there; it is derived from the log as much as ``events`` is and a replay must rebuild it with
them: the replay re-applies the log from offset 0 and writes its own batch rows as it goes, so the live
run's rows left in place would count every dead letter and duplicate twice, and could record positions
the rebuilt ``events`` never reached (a replay stopped part way, a log whose oldest segments were
deleted). A worker resumes at the highest offset of either table, so it would skip offsets whose rows
are not in the warehouse."""


class LineageError(HeraldError):
    """A migration statement has a shape the lineage cannot read, or the objects form no drop order."""


class Kind(StrEnum):
    TABLE = "TABLE"
    VIEW = "VIEW"
    MATERIALIZED_VIEW = "MATERIALIZED VIEW"


@dataclass(frozen=True)
class WarehouseObject:
    """One table or view as the migrations leave it."""

    name: str
    kind: Kind
    reads: frozenset[str] = frozenset()
    """Objects its SELECT reads (FROM / JOIN); empty for a table."""
    target: str | None = None
    """The table a materialized view writes to (its TO)."""
    select: str | None = None
    """The SELECT of a view or materialized view, comments removed."""

    @property
    def drop_statement(self) -> str:
        word = "TABLE" if self.kind is Kind.TABLE else "VIEW"  # DROP VIEW drops a materialized view too
        return f"DROP {word} IF EXISTS {self.name}"


class HasStatements(Protocol):
    """A migration (projections/migrate.py Migration): its statements in order."""

    def statements(self) -> list[str]: ...


# ---------------------------------------------------------------------------------------- tokens

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>--[^\n]*|/\*.*?\*/)
    | (?P<string>'(?:[^'\\]|\\.|'')*')
    | (?P<quoted>`(?:[^`\\]|\\.)*`|"(?:[^"\\]|\\.)*")
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<number>\d[\w.]*)
    | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class _Token:
    text: str
    kind: str  # word (unquoted), name (quoted identifier), string, number, punct
    end: int  # offset just past the token in the statement without comments

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else ""

    @property
    def identifier(self) -> str | None:
        if self.kind == "word":
            return self.text
        if self.kind == "name":
            return self.text[1:-1]
        return None


def _tokens(sql: str) -> tuple[str, list[_Token]]:
    """The statement with its comments blanked out, and its tokens."""
    clean: list[str] = []
    tokens: list[_Token] = []
    at = 0
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup or "punct"
        text = match.group()
        if kind == "comment":
            text = " " * len(text) if text.startswith("--") else " "
        clean.append(text)
        at += len(text)
        if kind in ("space", "comment"):
            continue
        tokens.append(_Token(text, "name" if kind == "quoted" else kind, at))
    return "".join(clean), tokens


# ---------------------------------------------------------------------------------------- SELECTs

_NOT_ALIASES = frozenset(
    {
        *("WHERE", "PREWHERE", "GROUP", "ORDER", "LIMIT", "HAVING", "SETTINGS", "FORMAT", "UNION"),
        *("EXCEPT", "INTERSECT", "WINDOW", "QUALIFY", "FINAL", "SAMPLE", "ARRAY", "LEFT", "RIGHT"),
        *("INNER", "OUTER", "FULL", "CROSS", "GLOBAL", "ANY", "ALL", "ASOF", "SEMI", "ANTI", "PASTE"),
        *("JOIN", "ON", "USING"),
    }
)
"""Words that may follow a table in FROM and are not its alias."""


def select_reads(tokens: Sequence[_Token]) -> frozenset[str]:
    """The objects a SELECT's tokens read after FROM or JOIN.

    >>> sorted(select_reads(_tokens(
    ...     "WITH recent AS (SELECT * FROM events WHERE extract(DAY FROM occurred_at) > 1) "
    ...     "SELECT * FROM recent AS r, herald.delivery_minute m ARRAY JOIN tags "
    ...     "LEFT JOIN (SELECT id FROM alerts AS a FINAL) USING id JOIN numbers(3) ON 1")[1]))
    ['alerts', 'delivery_minute', 'events']
    """
    reads: set[str] = set()
    ctes: set[str] = set()
    stack: list[bool] = []  # per open parenthesis: does it hold a query?
    i = 0
    while i < len(tokens):
        token = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        i += 1
        if token.text == "(":
            stack.append(nxt is not None and nxt.upper in ("SELECT", "WITH"))
        elif token.text == ")":
            if stack:
                stack.pop()
        elif stack and not stack[-1]:
            continue  # inside a function call or a list: extract(… FROM …), trim(… FROM …)
        elif token.upper == "FROM" or (
            token.upper == "JOIN" and not (i > 1 and tokens[i - 2].upper == "ARRAY")
        ):
            i = _read_tables(tokens, i, reads)
        elif token.identifier is not None and _opens_cte(tokens, i):
            ctes.add(token.identifier)  # WITH name AS (SELECT …)
    return frozenset(reads - ctes)


def _opens_cte(tokens: Sequence[_Token], at: int) -> bool:
    """Do the tokens from ``at`` read ``AS (SELECT`` (after a name: a WITH expression's)?"""
    ahead = [t.upper or t.text for t in tokens[at : at + 3]]
    return ahead in (["AS", "(", "SELECT"], ["AS", "(", "WITH"])


def _read_tables(tokens: Sequence[_Token], at: int, reads: set[str]) -> int:
    """Read the tables named from ``at`` (just after FROM or JOIN), ``a [AS x] [FINAL], b …``; return
    where the scan goes on. A subquery or a table function is left to the scan."""
    while at < len(tokens) and tokens[at].identifier is not None:
        name, end = tokens[at].identifier, at + 1
        if end + 1 < len(tokens) and tokens[end].text == "." and tokens[end + 1].identifier is not None:
            name, end = tokens[end + 1].identifier, end + 2  # database.table: Herald's objects share one
        if end < len(tokens) and tokens[end].text == "(":
            return at  # a table function, not an object
        assert name is not None
        reads.add(name)
        at = end
        if at < len(tokens) and tokens[at].upper == "AS":
            at += 2
        elif at < len(tokens) and tokens[at].identifier is not None and tokens[at].upper not in _NOT_ALIASES:
            at += 1
        if at < len(tokens) and tokens[at].upper == "FINAL":
            at += 1
        if not (at < len(tokens) and tokens[at].text == ","):
            break
        at += 1
    return at


# ---------------------------------------------------------------------------------------- statements


def _shape_error(sql: str, why: str) -> LineageError:
    head = " ".join(sql.split())[:120]
    return LineageError(
        f"projections/lineage.py cannot read the statement {head!r}: {why}; teach it this shape "
        "before a migration uses it (a replay must know every object derived from the log)"
    )


class _Reader:
    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.clean, self.tokens = _tokens(sql)
        self.at = 0

    def peek(self, *words: str) -> bool:
        ahead = self.tokens[self.at : self.at + len(words)]
        return len(ahead) == len(words) and all(t.upper == w for t, w in zip(ahead, words, strict=True))

    def accept(self, *words: str) -> bool:
        if self.peek(*words):
            self.at += len(words)
            return True
        return False

    def name(self) -> str:
        if self.at >= len(self.tokens) or self.tokens[self.at].identifier is None:
            raise _shape_error(self.sql, "expected a name")
        found = self.tokens[self.at].identifier
        self.at += 1
        if self.at + 1 < len(self.tokens) and self.tokens[self.at].text == ".":
            found = self.tokens[self.at + 1].identifier  # database.name: the name
            self.at += 2
        assert found is not None
        return found

    def skip_parens(self) -> None:
        depth = 0
        while self.at < len(self.tokens):
            text = self.tokens[self.at].text
            self.at += 1
            depth += (text == "(") - (text == ")")
            if depth == 0:
                return
        raise _shape_error(self.sql, "unbalanced parentheses")

    def select(self) -> tuple[str, frozenset[str]]:
        """The rest of the statement, which must be a SELECT (or WITH … SELECT)."""
        if not (self.peek("SELECT") or self.peek("WITH")):
            raise _shape_error(self.sql, "expected AS SELECT")
        start = self.tokens[self.at - 1].end if self.at else 0
        return self.clean[start:].strip(), select_reads(self.tokens[self.at :])


@dataclass(frozen=True)
class Change:
    """What one statement does to the catalog: ``create`` (or ``replace``) an object, ``drop`` or
    ``alter`` one, or give a materialized view a new query (``modify_query``: ``reads`` and ``select``
    of ``obj`` are the new ones, the rest is the view's)."""

    action: str
    name: str
    obj: WarehouseObject | None = None


def parse_statement(sql: str) -> Change:
    """What a migration statement does to the catalog.

    >>> parse_statement("DROP VIEW IF EXISTS delivery_minute_mv")
    Change(action='drop', name='delivery_minute_mv', obj=None)
    >>> parse_statement("ALTER TABLE events ADD COLUMN IF NOT EXISTS sent_at Nullable(DateTime64(3))").action
    'alter'
    >>> try:
    ...     parse_statement("INSERT INTO events SELECT * FROM old")
    ... except LineageError as refused:
    ...     print(str(refused)[:100])
    projections/lineage.py cannot read the statement 'INSERT INTO events SELECT * FROM old': only CREATE
    """
    r = _Reader(sql)
    if r.accept("DROP"):
        if not (r.accept("TABLE") or r.accept("VIEW")):
            raise _shape_error(sql, "only DROP TABLE and DROP VIEW are known")
        r.accept("IF", "EXISTS")
        return Change("drop", r.name())
    if r.accept("ALTER", "TABLE"):
        name = r.name()
        for i in range(r.at, len(r.tokens) - 1):
            if r.tokens[i].upper == "MODIFY" and r.tokens[i + 1].upper == "QUERY":
                r.at = i + 2
                select, reads = r.select()
                return Change(
                    "modify_query", name, WarehouseObject(name, Kind.MATERIALIZED_VIEW, reads, None, select)
                )
        return Change("alter", name)
    if not r.accept("CREATE"):
        raise _shape_error(sql, "only CREATE, DROP and ALTER TABLE are known")
    action = "replace" if r.accept("OR", "REPLACE") else "create"
    if r.accept("TABLE"):
        r.accept("IF", "NOT", "EXISTS")
        name = r.name()
        if not (r.at < len(r.tokens) and r.tokens[r.at].text == "("):
            raise _shape_error(
                sql, "a table is created with its column list (not AS another table or SELECT)"
            )
        return Change(action, name, WarehouseObject(name, Kind.TABLE))
    if r.accept("VIEW"):
        r.accept("IF", "NOT", "EXISTS")
        name = r.name()
        if not r.accept("AS"):
            raise _shape_error(sql, "expected AS SELECT after the view's name")
        select, reads = r.select()
        return Change(action, name, WarehouseObject(name, Kind.VIEW, reads, None, select))
    if action == "create" and r.accept("MATERIALIZED", "VIEW"):
        r.accept("IF", "NOT", "EXISTS")
        name = r.name()
        if not r.accept("TO"):
            raise _shape_error(
                sql,
                "a materialized view without TO keeps its rows in a hidden table; name the table it "
                "writes (TO table) so that replays and fingerprints see it",
            )
        target = r.name()
        if r.at < len(r.tokens) and r.tokens[r.at].text == "(":
            r.skip_parens()  # TO target (columns)
        if not r.accept("AS"):
            raise _shape_error(sql, "expected AS SELECT after TO table")
        select, reads = r.select()
        return Change(action, name, WarehouseObject(name, Kind.MATERIALIZED_VIEW, reads, target, select))
    raise _shape_error(sql, "only CREATE TABLE, VIEW and MATERIALIZED VIEW are known")


def catalog(statements: Iterable[str]) -> dict[str, WarehouseObject]:
    """The objects the statements leave, in the order they were (last) created. A CREATE … IF NOT EXISTS
    of an object that exists changes nothing, as in the engine; a DROP removes it."""
    objects: dict[str, WarehouseObject] = {}
    for sql in statements:
        change = parse_statement(sql)
        old = objects.get(change.name)
        if change.action == "drop":
            objects.pop(change.name, None)
        elif change.action == "alter":
            if old is None:
                raise _shape_error(sql, f"ALTER TABLE of {change.name}, which no earlier statement created")
        elif change.action == "modify_query":
            if old is None or old.kind is not Kind.MATERIALIZED_VIEW or change.obj is None:
                raise _shape_error(sql, "MODIFY QUERY of something that is not a materialized view")
            objects[change.name] = replace(old, reads=change.obj.reads, select=change.obj.select)
        elif change.obj is not None and (old is None or change.action == "replace"):
            objects.pop(change.name, None)
            objects[change.name] = change.obj
    return objects


def statements_of(migrations: Iterable[HasStatements]) -> list[str]:
    return [statement for migration in migrations for statement in migration.statements()]


# ---------------------------------------------------------------------------------------- lineage

_DROP_RANK = {Kind.MATERIALIZED_VIEW: 0, Kind.VIEW: 1, Kind.TABLE: 2}


def derived(
    objects: Mapping[str, WarehouseObject], roots: Sequence[str] = INGEST_TABLES
) -> tuple[WarehouseObject, ...]:
    """The objects derived from the log, in a safe drop order.

    Derived: the ``roots``; every materialized view that reads a derived object, and the table it
    writes; every view that reads a derived object. Everything else (tables other components write,
    such as alerts, experiment_results, segment_*, definition_changes) is not derived, however much
    it reads from derived ones outside the warehouse.

    Order: an object comes before every object it reads or writes (views and materialized views before
    their tables); among those free to go, materialized views first (nothing is written into a table
    while it is being dropped), then views, then tables, each by name.
    """
    missing = [r for r in roots if r not in objects]
    if missing:
        raise LineageError(f"no migration creates {', '.join(missing)}")
    found = set(roots)
    grew = True
    while grew:
        grew = False
        for obj in objects.values():
            if obj.name in found or obj.kind is Kind.TABLE or not obj.reads & found:
                continue
            found.add(obj.name)
            if obj.target is not None:
                if obj.target not in objects:
                    raise LineageError(f"{obj.name} writes to {obj.target}, which no migration creates")
                found.add(obj.target)
            grew = True
    return _drop_order([objects[name] for name in found])


def _drop_order(objects: Sequence[WarehouseObject]) -> tuple[WarehouseObject, ...]:
    remaining = {o.name: o for o in objects}
    ordered: list[WarehouseObject] = []
    while remaining:

        def held(name: str) -> bool:
            return any(name in o.reads or name == o.target for o in remaining.values() if o.name != name)

        free = [o for o in remaining.values() if not held(o.name)]
        if not free:
            raise LineageError(f"objects read each other in a cycle: {', '.join(sorted(remaining))}")
        first = min(free, key=lambda o: (_DROP_RANK[o.kind], o.name))
        ordered.append(first)
        del remaining[first.name]
    return tuple(ordered)


def derived_objects(
    migrations: Iterable[HasStatements], roots: Sequence[str] = INGEST_TABLES
) -> tuple[WarehouseObject, ...]:
    """The objects derived from the log, as the migrations leave them, in a safe drop order."""
    return derived(catalog(statements_of(migrations)), roots)
