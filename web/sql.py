"""Read-only SQL over the warehouse for analysts and for ``cli.py sql`` while a worker owns chDB."""

from __future__ import annotations

import re

_READ_ONLY = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN|EXISTS)\b", re.IGNORECASE)
_WRITE_WORDS = re.compile(
    r"\b(INSERT|ALTER|DROP|TRUNCATE|CREATE|RENAME|ATTACH|DETACH|OPTIMIZE|SYSTEM|KILL|GRANT|REVOKE|SET|"
    r"DELETE|UPDATE|INTO\s+OUTFILE)\b",
    re.IGNORECASE,
)
_STRINGS = re.compile(r"'(?:[^'\\]|\\.)*'|`[^`]*`|\"[^\"]*\"")


def read_only_problem(query: str) -> str | None:
    """Why ``query`` is not allowed on the read-only endpoint, or None when it is.

    >>> read_only_problem("SELECT count() FROM events") is None
    True
    >>> read_only_problem("SELECT 'drop table' AS s") is None
    True
    >>> read_only_problem("DROP TABLE events")
    'query: only SELECT, WITH, SHOW, DESCRIBE, EXPLAIN and EXISTS are allowed'
    >>> read_only_problem("SELECT 1; DROP TABLE events")
    'query: one statement at a time'
    """
    if not query.strip():
        return "query: is empty"
    bare = _STRINGS.sub("''", query).strip().rstrip(";")
    if ";" in bare:
        return "query: one statement at a time"
    if not _READ_ONLY.match(bare):
        return "query: only SELECT, WITH, SHOW, DESCRIBE, EXPLAIN and EXISTS are allowed"
    word = _WRITE_WORDS.search(bare)
    if word:
        return f"query: {word.group(1).upper()} is not allowed on the read-only endpoint"
    return None
