"""Canonical forms of warehouse tables: SQL that reads a table as the content it stands for, whatever
its part layout and merge state, for fingerprints and recounts (projections/fingerprint.py runs it).

A table's form follows its engine (its shape comes from system.tables and system.columns):

- **plain MergeTree** (and Log, Memory …): every row, in no order;
- **Replacing/Collapsing MergeTree**: every row ``FINAL``, as the merges will leave them;
- **Summing/AggregatingMergeTree** (rollups): one row per sorting key as a merge of everything leaves
  it: summed columns summed (a SummingMergeTree drops a key whose sums are all 0 when it merges, so
  the form drops it too), ``SimpleAggregateFunction(f, …)`` columns by ``f``, ``AggregateFunction``
  states merged (``fMerge``) and finalised;
- **regrouped**: a table the caller names with its own key, summed like a SummingMergeTree (for rows
  that follow the consumer's batching, such as ``ingest_batches``).

Exceptions, because no form of them is independent of merge order:

- **t-digest sketches** (``quantileTDigest`` and its kin): the merged sketch depends on the order the
  parts were merged in (measured: about 0.2 % on a median of 400 to 1,600 values; a sketch of up to
  about 200 values keeps every value and is exact). Their form is the exact count of values in the
  sketch (the sum of its centroids' weights, read from the state) and each quantile rounded to
  ``digest_digits`` significant digits (2: within 1 % to 10 %). Equal content still gives a different
  rounding when a quantile lies that close to a rounding boundary, which the fingerprint then reports.
- **picks** (``any``, ``anyLast``, ``anyHeavy``, and a SummingMergeTree's or AggregatingMergeTree's
  columns outside the key that are not aggregated): a merge keeps one of the values, whichever it
  met first or last. The form takes their ``min``, which equals what any merge keeps while the value
  is the same on every row of a key (recipient attributes are, per recipient) and differs otherwise.
- **floating-point sums** depend on the order of the additions unless the summands are integers below
  2^53 (the latency sums are); they are hashed as stored.

>>> shape = TableShape("daily", "SummingMergeTree", "SummingMergeTree ORDER BY (day)", ("day",),
...     (Column("day", "Date"), Column("sent", "UInt64"), Column("note", "String")))
>>> print(canonical_select(shape))
SELECT day AS _k0, sum(sent) AS _v0, min(note) AS _v1 FROM daily GROUP BY _k0 HAVING NOT (_v0 = 0)
>>> print(checksum_select(shape))  # doctest: +NORMALIZE_WHITESPACE
SELECT count(), sum(cityHash64(tuple(_k0, _v0, _v1))) FROM (SELECT day AS _k0, sum(sent) AS _v0,
min(note) AS _v1 FROM daily GROUP BY _k0 HAVING NOT (_v0 = 0))
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from herald.errors import HeraldError

ORDER_DEPENDENT = frozenset({"any", "anyLast", "anyHeavy"})
"""Aggregates whose merged value depends on the order of the rows (picks)."""
EXACT_SIMPLE = frozenset({"sum", "sumWithOverflow", "min", "max", "groupBitAnd", "groupBitOr", "groupBitXor"})
"""SimpleAggregateFunction functions whose value a recount from the source must reproduce exactly."""
EXACT_STATES = frozenset({"count", "sum", "min", "max", "uniqExact", "groupBitmap"})
"""AggregateFunction functions whose finalised value a recount must reproduce exactly."""
_RESULT_IS_ARRAY = re.compile(r"^quantiles")
_TDIGEST = re.compile(r"^quantiles?TDigest")
_SUMMABLE = re.compile(r"^(U?Int\d+|Float\d+|Decimal.*)$")
_PREFIXES = ("Replicated", "Shared")
_ROW_ENGINES = ("MergeTree", "ReplacingMergeTree", "CollapsingMergeTree", "VersionedCollapsingMergeTree")
_FINAL_ENGINES = frozenset(_ROW_ENGINES[1:])
_ROLLUP_ENGINES = frozenset({"SummingMergeTree", "AggregatingMergeTree"})


class CanonicalError(HeraldError):
    """A table has no canonical form here (a view, or an engine this module does not know)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str


@dataclass(frozen=True)
class TableShape:
    """A table as system.tables and system.columns describe it."""

    name: str
    engine: str
    engine_full: str
    sorting_key: tuple[str, ...]
    columns: tuple[Column, ...]

    @property
    def family(self) -> str:
        """The engine without its replication prefix.

        >>> TableShape("t", "ReplicatedSummingMergeTree", "", (), ()).family
        'SummingMergeTree'
        """
        for prefix in _PREFIXES:
            if self.engine.startswith(prefix) and self.engine != prefix:
                return self.engine[len(prefix) :]
        return self.engine

    @property
    def is_rollup(self) -> bool:
        return self.family in _ROLLUP_ENGINES

    def summed_columns(self) -> frozenset[str] | None:
        """The columns a SummingMergeTree sums when its engine names them (None: every numeric one).

        >>> shape = TableShape("t", "SummingMergeTree", "SummingMergeTree((a, b)) ORDER BY k", (), ())
        >>> sorted(shape.summed_columns() or ())
        ['a', 'b']
        """
        if not self.engine_full.startswith(self.engine + "("):
            return None
        inside = _balanced(self.engine_full, len(self.engine))
        if inside.startswith("(") and inside.endswith(")"):
            inside = inside[1:-1]
        return frozenset(part.strip().strip("`") for part in split_top_level(inside) if part.strip())


@dataclass(frozen=True)
class AggregateType:
    """``AggregateFunction(name(params), …)`` or ``SimpleAggregateFunction(name, …)``."""

    simple: bool
    function: str
    parameters: str

    def merge(self, column: str) -> str:
        """The aggregate that merges the column's values over rows."""
        if self.simple:
            return f"{self.function}({column})"
        params = f"({self.parameters})" if self.parameters else ""
        return f"{self.function}Merge{params}({column})"

    def merge_state(self, column: str) -> str:
        params = f"({self.parameters})" if self.parameters else ""
        return f"{self.function}MergeState{params}({column})"


def aggregate_type(type_: str) -> AggregateType | None:
    """The aggregate of a column type, None for a plain type.

    >>> aggregate_type("AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt64)")
    AggregateType(simple=False, function='quantilesTDigest', parameters='0.5, 0.95, 0.99')
    >>> aggregate_type("SimpleAggregateFunction(anyLast, LowCardinality(String))").function
    'anyLast'
    >>> aggregate_type("LowCardinality(String)") is None
    True
    """
    for prefix, simple in (("AggregateFunction(", False), ("SimpleAggregateFunction(", True)):
        if type_.startswith(prefix):
            args = split_top_level(type_[len(prefix) : -1])
            if args and args[0].strip().isdigit():
                args = args[1:]  # a state version: AggregateFunction(1, sumMap, …)
            head = args[0].strip()
            name, _, rest = head.partition("(")
            return AggregateType(simple, name.strip(), rest[:-1].strip() if rest else "")
    return None


def split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses and quotes.

    >>> split_top_level("tenant_id, toStartOfHour(at), tuple(a, 'x,y')")
    ['tenant_id', 'toStartOfHour(at)', "tuple(a, 'x,y')"]
    """
    parts: list[str] = []
    depth, quote, start = 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = ""
        elif ch in "'`\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    last = text[start:].strip()
    return [*parts, last] if last or parts else []


def _balanced(text: str, at: int) -> str:
    """The text inside the parentheses that open at ``at``."""
    depth = 0
    for i in range(at, len(text)):
        depth += (text[i] == "(") - (text[i] == ")")
        if depth == 0:
            return text[at + 1 : i]
    raise CanonicalError(f"unbalanced parentheses in {text!r}")


def _unwrapped(type_: str) -> str:
    for wrapper in ("LowCardinality(", "Nullable("):
        if type_.startswith(wrapper):
            return _unwrapped(type_[len(wrapper) : -1])
    return type_


def summable(type_: str) -> bool:
    """A type a SummingMergeTree sums (numbers and decimals, not Bool, enums or dates).

    >>> [summable(t) for t in ("UInt64", "Nullable(Float64)", "Bool", "DateTime('UTC')")]
    [True, True, False, False]
    """
    return bool(_SUMMABLE.match(_unwrapped(type_)))


# ---------------------------------------------------------------------------------------- values


def rounded(value: str, digits: int) -> str:
    """``value`` rounded to ``digits`` significant digits; NaN and infinities (an empty sketch) as NULL."""
    return (
        f"if(isNaN({value}) OR isInfinite({value}), NULL, if({value} = 0, 0, "
        f"round({value}, {digits - 1} - toInt32(floor(log10(abs({value})))))))"
    )


def digest_count(state: str) -> str:
    """The number of values in a t-digest state: the sum of its centroids' weights. The state serialises
    as a varint centroid count and then (mean, weight) Float32 pairs (ClickHouse QuantileTDigest), so the
    pairs start after the varint's 1 to 3 bytes and number (length - varint) / 8."""
    byte = "reinterpretAsUInt8(substring(s, {}, 1))"
    head = f"if({byte.format(1)} < 128, 1, if({byte.format(2)} < 128, 2, 3))"
    weights = f"arrayMap(i -> toFloat64(reinterpretAsFloat32(substring(s, {head} + 5 + 8 * i, 4))), "
    pairs = f"range(intDiv(length(s) - {head}, 8))"
    return f"arrayMap(s -> arraySum({weights}{pairs})), [CAST({state} AS String)])[1]"


def _digest(agg: AggregateType, column: str, grouped: bool, digits: int) -> str:
    state = agg.merge_state(column) if grouped else column
    quantiles = agg.merge(column) if grouped else f"finalizeAggregation({column})"
    if not _RESULT_IS_ARRAY.match(agg.function):
        quantiles = f"[{quantiles}]"
    return f"tuple({digest_count(state)}, arrayMap(q -> {rounded('q', digits)}, {quantiles}))"


def merged_value(column: Column, summed: bool, digits: int) -> str:
    """The value of a non-key column over the rows of one key, as a merge of them all leaves it."""
    agg = aggregate_type(column.type)
    if agg is None:
        return f"sum({column.name})" if summed else f"min({column.name})"
    if agg.simple and agg.function in ORDER_DEPENDENT:
        return f"min({column.name})"
    if agg.simple and agg.function.startswith("group") and agg.function.endswith("Array"):
        return f"arraySort({agg.merge(column.name)})"  # groupArrayArray and kin: order is arbitrary
    if not agg.simple and _TDIGEST.match(agg.function):
        return _digest(agg, column.name, True, digits)
    return agg.merge(column.name)


def row_value(column: Column, digits: int) -> str:
    """The value of a column in one row (a state of an aggregate finalised)."""
    agg = aggregate_type(column.type)
    if agg is None or agg.simple:
        return column.name
    if _TDIGEST.match(agg.function):
        return _digest(agg, column.name, False, digits)
    return f"finalizeAggregation({column.name})"


# ---------------------------------------------------------------------------------------- forms


def canonical_select(
    shape: TableShape,
    exclude: Collection[str] = (),
    group_by: Sequence[str] | None = None,
    digest_digits: int = 2,
) -> str:
    """A SELECT of the table's canonical form: ``_k…`` key columns and ``_v…`` value columns (the
    aliases never shadow a column name inside an aggregate). ``exclude`` names columns left out;
    ``group_by`` regroups the table by those columns, summing the rest."""
    return _canonical(shape, exclude, group_by, digest_digits)[0]


def checksum_select(
    shape: TableShape,
    exclude: Collection[str] = (),
    group_by: Sequence[str] | None = None,
    digest_digits: int = 2,
) -> str:
    """``SELECT count(), checksum`` over the canonical form: the sum (mod 2^64) of a hash of each row,
    which no order of rows changes. A sum rather than an XOR: two equal rows add up instead of
    cancelling out, so a row counted twice changes the checksum."""
    inner, aliases = _canonical(shape, exclude, group_by, digest_digits)
    hashed = f"sum(cityHash64(tuple({', '.join(aliases)})))" if aliases else "toUInt64(0)"
    return f"SELECT count(), {hashed} FROM ({inner})"


def _canonical(
    shape: TableShape, exclude: Collection[str], group_by: Sequence[str] | None, digits: int
) -> tuple[str, list[str]]:
    family = shape.family
    if family in ("View", "MaterializedView", "LiveView", "WindowView"):
        raise CanonicalError(f"{shape.name} is a {family}: only tables have a canonical form")
    if group_by is None and family not in _ROLLUP_ENGINES:
        if family.endswith("MergeTree") and family not in _ROW_ENGINES:
            raise CanonicalError(f"{shape.name}: no canonical form for the engine {shape.engine} here")
        values = [row_value(c, digits) for c in shape.columns if c.name not in exclude]
        final = " FINAL" if family in _FINAL_ENGINES else ""
        aliases = [f"_v{i}" for i in range(len(values))]
        select = ", ".join(f"{v} AS {a}" for v, a in zip(values, aliases, strict=True)) or "1"
        return f"SELECT {select} FROM {shape.name}{final}", aliases
    keys = list(group_by) if group_by is not None else list(shape.sorting_key)
    named = shape.summed_columns() if family == "SummingMergeTree" else None
    values, zero_checks = [], []
    for column in shape.columns:
        if column.name in keys or column.name in exclude:
            continue
        summed = family != "AggregatingMergeTree" and summable(column.type)
        summed = summed and (named is None or column.name in named)
        if summed and family == "SummingMergeTree":
            alias = f"_v{len(values)}"
            zero_checks.append(f"ifNull({alias}, 0) = 0" if "Nullable(" in column.type else f"{alias} = 0")
        values.append(merged_value(column, summed, digits))
    shown = [k for k in keys if k not in exclude]
    aliases = [f"_k{i}" for i in range(len(shown))] + [f"_v{i}" for i in range(len(values))]
    select = ", ".join(f"{e} AS {a}" for e, a in zip([*shown, *values], aliases, strict=True)) or "1"
    group = ", ".join([*aliases[: len(shown)], *(k for k in keys if k in exclude)])
    sql = f"SELECT {select} FROM {shape.name}" + (f" GROUP BY {group}" if group else "")
    if zero_checks:
        # SummingMergeTree drops a key whose sums are all 0 when it merges its rows
        sql += f" HAVING NOT ({' AND '.join(zero_checks)})"
    return sql, aliases


# ---------------------------------------------------------------------------------------- recounts


@dataclass(frozen=True)
class Recount:
    """The SQL that compares a rollup with its materialized view's SELECT run over all its source rows.
    Its rows are the differing keys: key values, then (recounted, stored) per compared column."""

    sql: str
    keys: tuple[str, ...]
    compared: tuple[str, ...]
    skipped: tuple[str, ...]


def exact(column: Column, family: str, named: frozenset[str] | None) -> bool:
    """Whether a rollup column's merged value is exact (a count, a sum, an exact set size, a max …)."""
    agg = aggregate_type(column.type)
    if agg is None:
        return (
            family == "SummingMergeTree" and summable(column.type) and (named is None or column.name in named)
        )
    return agg.function in (EXACT_SIMPLE if agg.simple else EXACT_STATES)


def recount_select(view_select: str, shape: TableShape, limit: int = 20) -> Recount:
    """Compare the exact columns of a rollup with the same columns recounted by running its
    materialized view's SELECT over the whole source at once (a temporary comparison, nothing is
    written). Grouping every source row at once gives what grouping each inserted block and merging
    the blocks gives (what the rollup holds) as long as each column of the view is an aggregate the
    rollup merges the same way: a count or sum merged by sum, a max by max, a state by its merge, as in
    every rollup here. A column such as ``count() > 5`` merged by max would differ, and show up here.

    >>> shape = TableShape("daily", "SummingMergeTree", "SummingMergeTree", ("day",),
    ...     (Column("day", "Date"), Column("sent", "UInt64")))
    >>> print(recount_select("SELECT toDate(at) AS day, count() AS sent FROM events GROUP BY day", shape).sql)
    ... # doctest: +NORMALIZE_WHITESPACE
    SELECT _k0, _recount._v0, _stored._v0
    FROM (SELECT day AS _k0, sum(sent) AS _v0
          FROM (SELECT toDate(at) AS day, count() AS sent FROM events GROUP BY day) GROUP BY _k0) AS _recount
    FULL OUTER JOIN (SELECT day AS _k0, sum(sent) AS _v0 FROM daily GROUP BY _k0) AS _stored USING (_k0)
    WHERE _recount._v0 != _stored._v0 ORDER BY _k0 LIMIT 20
    """
    if not shape.is_rollup:
        raise CanonicalError(f"{shape.name} is a {shape.engine}, not a rollup: compare it by fingerprint")
    named = shape.summed_columns() if shape.family == "SummingMergeTree" else None
    keys = tuple(shape.sorting_key)
    compared = tuple(c for c in shape.columns if c.name not in keys and exact(c, shape.family, named))
    skipped = tuple(c.name for c in shape.columns if c.name not in keys and c not in compared)
    values = []
    for c in compared:
        value = merged_value(c, aggregate_type(c.type) is None, 2)
        values.append(f"ifNull({value}, 0)" if "Nullable(" in c.type else value)
    key_list = ", ".join(f"_k{i}" for i in range(len(keys)))
    select = ", ".join(
        [*(f"{k} AS _k{i}" for i, k in enumerate(keys)), *(f"{v} AS _v{i}" for i, v in enumerate(values))]
    )
    group = f" GROUP BY {key_list}" if keys else ""
    recounted = f"SELECT {select} FROM ({view_select}){group}"
    stored = f"SELECT {select} FROM {shape.name}{group}"
    pairs = ", ".join(f"_recount._v{i}, _stored._v{i}" for i in range(len(values)))
    differ = " OR ".join(f"_recount._v{i} != _stored._v{i}" for i in range(len(values))) or "0"
    sql = (
        f"SELECT {', '.join(filter(None, [key_list, pairs]))} FROM ({recounted}) AS _recount "
        f"FULL OUTER JOIN ({stored}) AS _stored "
        + (f"USING ({key_list}) " if keys else "ON 1 ")
        + f"WHERE {differ}"
        + (f" ORDER BY {key_list}" if keys else "")
        + f" LIMIT {int(limit)}"
    )
    return Recount(sql, keys, tuple(c.name for c in compared), skipped)
