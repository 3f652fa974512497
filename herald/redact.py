"""Secrets out of text and structured values, before anyone can read them: every log line goes
through ``redact`` (herald/logging.py), and so do the CLI's error line (cli.py) and the values a
configuration error repeats (herald/settings.py, web/auth.py).

Replaced by ``***``, keeping what is around them so that a line can still be debugged:

- a Herald API key, ``hk_`` and the urlsafe token of ``web.auth.new_key`` (16 characters or more,
  not glued to a letter or digit before it): ``hk_***``;
- the password of a URL or DSN: ``scheme://user:***@host``, as ``herald.settings.mask_dsn`` does;
- the token after ``Bearer``, and the value of an ``Authorization`` or ``X-Api-Key`` header;
- a value written ``name=value`` or ``name: value`` (a query string, a dict's repr, a header line)
  whose name looks secret;
- in a mapping, the whole value of a key whose name looks secret (None and booleans are kept: they
  say whether something is set, not what).

A name looks secret when, lower case with ``-`` read as ``_``, it is or ends in ``_`` + one of
``SECRET_WORDS`` (``password``, ``db_password``, ``api_key``, ``x-api-key``, ``access_token``...).
Not secret, on purpose (``NOT_SECRET``): ``key_sha256``, the hash the keys file stores (SHA-256 of a
256-bit random key cannot be turned back into it, and it tells which key acted), and the idempotency
tokens ``dedup_token`` / ``insert_deduplication_token``, derived from partitions and offsets and needed
to follow a retried insert.

Over-redaction is the accepted failure: a word after "bearer" in prose is hidden too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
SECRET_WORDS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "credentials",
    "private_key",
    "secret_key",
)
NOT_SECRET = frozenset({"key_sha256", "dedup_token", "insert_deduplication_token"})
_MAX_DEPTH = 32  # deeper (or cyclic) structures are redacted through their repr

# A name: optional prefix words ("db_", "x-"), then a secret word; in text "_" may also be "-" or nothing.
_SECRET_NAME = re.compile(rf"(?:[a-z0-9]+_)*(?:{'|'.join(SECRET_WORDS)})")
_NAME = "|".join(w.replace("_", "[_-]?") for w in SECRET_WORDS)
# Each pattern keeps group "keep" and masks the rest of the match.
_PATTERNS = (
    # The password of scheme://user:password@host: up to the last @ of the authority, as urlsplit reads it.
    re.compile(r"(?P<keep>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@?#]*:)[^\s/?#]*(?=@)"),
    re.compile(r"(?<![A-Za-z0-9])(?P<keep>hk_)[A-Za-z0-9_\-]{16,}"),
    # A secret-looking name, then = or : (or a quoted pair's comma), an optional auth scheme, the value:
    # up to its closing quote when quoted, else up to a space or delimiter.
    re.compile(
        rf"(?i)(?<![A-Za-z0-9_\-])(?P<keep>(?P<name>(?:[A-Za-z0-9]+[_\-])*(?:{_NAME}))"
        r"(?:[\"']?\s*[:=]\s*|[\"']\s*,\s*)(?:b?(?P<quote>[\"']))?(?:(?:bearer|basic|digest|token)\s+)?)"
        r"(?(quote)(?:(?!(?P=quote))[^\r\n])+|[^\s'\",;&)}\]]+)"
    ),
    re.compile(r"(?i)(?P<keep>\bbearer\s+)[A-Za-z0-9\-._~+/]+=*"),
)
# Cheap gate, on the lower-cased text: a string that holds none of these (most event names, ids and
# times) cannot match a pattern, and skips them. Case-sensitive literals: several times faster than (?i).
_MAYBE = re.compile(
    "|".join(re.escape(w) for w in sorted({"://", "hk_", "bearer", *(w.split("_")[0] for w in SECRET_WORDS)}))
)


@functools.lru_cache(maxsize=4096)  # the same few hundred key names, event after event
def is_secret_name(name: str) -> bool:
    """Whether a value named ``name`` is a secret (see the module docstring).

    >>> [is_secret_name(n) for n in ("password", "DB-Password", "x-api-key", "access_token", "tokens")]
    [True, True, True, True, False]
    >>> [is_secret_name(n) for n in ("key_sha256", "dedup_token", "token_count", "api_keys")]
    [False, False, False, False]
    """
    lowered = name.lower().replace("-", "_")
    return lowered not in NOT_SECRET and _SECRET_NAME.fullmatch(lowered) is not None


def _mask(match: re.Match[str]) -> str:
    name = match.groupdict().get("name")
    if name is not None and not is_secret_name(name):
        return match.group(0)
    return match.group("keep") + MASK


def redact_text(text: str) -> str:
    """``text`` with every secret pattern it contains replaced by ``***``.

    >>> redact_text("GET /x X-Api-Key: hk_Zm9vYmFyYmF6cXV4cXV1eA Authorization: Bearer abc.def")
    'GET /x X-Api-Key: *** Authorization: Bearer ***'
    >>> redact_text("cannot open http://ops:s3cret@ch.example:8443/herald?password=p&user=ops")
    'cannot open http://ops:***@ch.example:8443/herald?password=***&user=ops'
    >>> redact_text("worker.started")
    'worker.started'
    """
    if not _MAYBE.search(text.lower()):
        return text
    for pattern in _PATTERNS:
        text = pattern.sub(_mask, text)
    return text


def redact(value: Any, _depth: int = 0) -> Any:
    """``value`` with secrets redacted: strings by ``redact_text``, mappings, lists and tuples item by
    item (values under secret-looking keys masked whole), anything else through its repr when that
    repr carries a secret (that repr is what a renderer would write). Unchanged values are returned
    as they are, so redacting a clean event copies nothing but its containers.

    >>> redact({"event": "api.called", "password": "hunter2", "headers": [("x-api-key", "k1")]})
    {'event': 'api.called', 'password': '***', 'headers': [('x-api-key', '***')]}
    """
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if _depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {
                redact(k, _depth + 1): _secret_value(v) if isinstance(k, str) and is_secret_name(k)
                else redact(v, _depth + 1)
                for k, v in value.items()
            }  # fmt: skip
        if isinstance(value, list | tuple):
            items = [_item(item, i, value, _depth) for i, item in enumerate(value)]
            return items if isinstance(value, list) else tuple(items)
    try:
        shown = repr(value)
    except Exception:  # a broken __repr__ breaks the renderer too; not this function's business
        return value
    redacted = redact_text(shown)
    return value if redacted == shown else redacted


def _secret_value(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    return MASK


def _item(item: Any, index: int, items: list[Any] | tuple[Any, ...], depth: int) -> Any:
    # A (name, value) pair, as headers travel in ASGI scopes and in lists of tuples.
    if index == 1 and len(items) == 2 and isinstance(items[0], str | bytes):
        name = items[0].decode("latin-1") if isinstance(items[0], bytes) else items[0]
        if is_secret_name(name):
            return _secret_value(item)
    return redact(item, depth + 1)
