"""The ClickHouse HTTP interface, served by the process that owns the embedded (chDB) warehouse.

Why it exists: a chDB directory can be opened by one process only, so other workers on the same machine
cannot open the embedded warehouse themselves. The owner serves this app and they connect with the DSN
``http://127.0.0.1:PORT`` (``Warehouse`` passes ``compress=False`` to http DSNs), running the very
clickhouse-connect code they would run against a ClickHouse server. It binds to 127.0.0.1 only and
every request must carry the owner's per-run secret (``Authorization: Basic`` of ``herald:<secret>``,
as clickhouse-connect sends a DSN's password, or ``X-ClickHouse-User``/``X-ClickHouse-Key``): the
owner writes it, with the address, into its run file (mode 0600 in a 0700 directory), which only the
workers' user can read. A request without it gets 401 before anything reaches the engine. The engine's
own rules hold on top: no file or network source is granted to anybody (projections/access.py), so
``/sql``'s table functions cannot reach this port either.

A request whose settings include ``readonly`` runs on an engine session opened with exactly those
settings (``readonly`` set last), as a session-less server applies a request's settings: that is how a
reader session of projections/sql_reader.py on another worker stays read-only and tenant-bound here.

Supported, as far as clickhouse-connect uses it: GET and POST on ``/`` with the SQL in the ``query``
parameter, the body, or both (ClickHouse runs ``query + "\\n" + body``); ``INSERT ... FORMAT <fmt>``
followed by data in any format chDB reads (clickhouse-connect sends Native); ``{name:Type}`` placeholders
bound from ``param_<name>``; ``default_format``; other URL parameters as settings scoped to the request
(transport-only ones are dropped); request bodies compressed with gzip, deflate, lz4 or zstd (responses
are never compressed); ``/ping``. Response headers X-ClickHouse-Format, -Timezone, -Query-Id, -Summary,
and errors as HTTP 500 with X-ClickHouse-Exception-Code and a ``Code: N. DB::Exception: ...`` body.

Not supported: sessions (SET and USE are accepted and do nothing, as on a server without a session);
databases other than the current one; ``compress``/``decompress``
(ClickHouse's own block compression); multipart external data and form-encoded queries; streamed
responses and progress headers; a SETTINGS clause inside an ``INSERT ... FORMAT`` statement.

Every call goes through ``Warehouse``, which serializes engine access (chDB is not thread-safe).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hmac
import json
import re
import uuid
import zlib
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from herald.errors import WarehouseError
from projections.warehouse import Warehouse

# URL parameters that steer the HTTP transport rather than the query; they never reach chDB.
_TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "quota_key",
        "role",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "close_session",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "stacktrace",
        "client_protocol_version",
        "enable_http_compression",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "cancel_http_readonly_queries_on_client_close",
    }
)
_IDENT = rb"`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"|[\w.]"
# The statement of an INSERT whose data follows it; the data starts after one optional newline.
_INSERT_WITH_DATA = re.compile(
    rb"\s*INSERT\s+INTO\s+(?:TABLE\s+)?(?P<table>(?:" + _IDENT + rb")+)\s*"
    rb"(?:\((?P<columns>(?:`(?:[^`\\]|\\.)*`|[^)`])*)\)\s*)?"
    rb"FORMAT\s+(?P<fmt>\w+)(?:[ \t]*\r?\n)?",
    re.IGNORECASE,
)
_COLUMN = re.compile(r"`((?:[^`\\]|\\.)*)`|([^,\s`]+)")
_LEADING_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*$", re.IGNORECASE)
_RESULT_STATEMENT = re.compile(r"(?:\(|(?:SELECT|WITH|SHOW|DESC|DESCRIBE|EXPLAIN|EXISTS|CHECK)\b)", re.I)
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SESSION_STATEMENT = re.compile(r"(?:SET|USE)\b", re.IGNORECASE)
_BINARY_FORMATS = ("Native", "RowBinary", "Parquet", "Arrow", "ORC", "Avro", "Protobuf", "MsgPack")

# ClickHouse error codes used for problems the shim finds itself.
_BAD_ARGUMENTS = 36
_NOT_IMPLEMENTED = 48
_UNKNOWN_EXCEPTION = 1002
_AUTHENTICATION_FAILED = 516
SHARE_USER = "herald"


class _RefusedError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def share_dsn(port: int, secret: str) -> str:
    """The DSN other workers use for the share on ``port``."""
    return f"http://{SHARE_USER}:{secret}@127.0.0.1:{port}"


def _authorized(request: Request, secret: str) -> bool:
    """Whether the request carries the share's secret (compared in constant time)."""
    presented = request.headers.get("x-clickhouse-key")
    user = request.headers.get("x-clickhouse-user")
    auth = request.headers.get("authorization", "")
    if presented is None and auth[:6].lower() == "basic ":
        try:
            user, _, presented = base64.b64decode(auth[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
    if presented is None or user != SHARE_USER:
        return False
    return hmac.compare_digest(presented.encode(), secret.encode())


def create_clickhouse_http_app(warehouse: Warehouse, secret: str) -> FastAPI:
    """An ASGI app speaking enough of the ClickHouse HTTP protocol for clickhouse-connect clients, open to
    requests that carry ``secret``."""
    if len(secret) < 16:
        raise ValueError("the share's secret must have at least 16 characters")
    timezone = str(warehouse.scalar("SELECT timezone()"))
    database = str(warehouse.scalar("SELECT currentDatabase()"))
    app = FastAPI(title="Herald warehouse (ClickHouse HTTP)", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/ping", response_class=PlainTextResponse)
    def ping() -> str:
        return "Ok.\n"

    @app.api_route("/", methods=["GET", "POST"])
    async def execute(request: Request) -> Response:
        params = dict(request.query_params)
        query_id = params.get("query_id") or str(uuid.uuid4())
        headers = {"X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Timezone": timezone}
        if not _authorized(request, secret):
            response = _error(_AUTHENTICATION_FAILED, "the warehouse share needs the owner's secret", headers)
            response.status_code = 401
            return response
        try:
            if params.get("database", database) != database:
                raise _RefusedError(_NOT_IMPLEMENTED, f"only database {database} is served over HTTP")
            if params.get("compress", "0") != "0" or params.get("decompress", "0") != "0":
                raise _RefusedError(_NOT_IMPLEMENTED, "ClickHouse block compression is not supported")
            body = _decoded(await request.body(), request.headers.get("content-encoding"))
            sql = params.get("query", "").encode()
            text = sql + b"\n" + body if sql else body
            settings = {k: v for k, v in params.items() if k not in _TRANSPORT_PARAMS and k[:6] != "param_"}
            insert = _INSERT_WITH_DATA.match(text, 0, min(len(text), 1 << 16))
            if insert:
                written = await run_in_threadpool(_insert, warehouse, insert, text, settings)
                summary = {"written_rows": str(written)}
                return Response(b"", headers={**headers, "X-ClickHouse-Summary": json.dumps(summary)})
            bound = {k[6:]: v for k, v in params.items() if k[:6] == "param_"}
            out, fmt = await run_in_threadpool(
                _query, warehouse, _statement(text), bound, settings, params.get("default_format")
            )
        except _RefusedError as exc:
            return _error(exc.code, str(exc), headers)
        except WarehouseError as exc:
            cause = exc.__cause__
            code = getattr(cause, "code", None) or _UNKNOWN_EXCEPTION
            return _error(int(code), str(cause or exc), headers)
        if fmt:
            headers["X-ClickHouse-Format"] = fmt
        binary = fmt is None or fmt.startswith(_BINARY_FORMATS)
        media = "application/octet-stream" if binary else "text/plain; charset=UTF-8"
        return Response(out, media_type=media, headers={**headers, "X-ClickHouse-Summary": "{}"})

    return app


def _statement(text: bytes) -> str:
    try:
        sql = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _RefusedError(_BAD_ARGUMENTS, f"the query is not UTF-8: {exc}") from None
    sql = sql.strip().rstrip(";").rstrip()
    if not sql:
        raise _RefusedError(_BAD_ARGUMENTS, "empty query")
    return sql


def _query(
    warehouse: Warehouse,
    sql: str,
    bound: dict[str, str],
    settings: dict[str, str],
    default_format: str | None,
) -> tuple[bytes, str | None]:
    """Output and its format (None for statements without a result, which carry no X-ClickHouse-Format)."""
    head = _LEADING_COMMENTS.sub("", sql, count=1)
    if _SESSION_STATEMENT.match(head):
        return b"", None  # without a session a SET or USE lasts one request: it would change nothing
    own_format = _TRAILING_FORMAT.search(sql)
    if own_format or _RESULT_STATEMENT.match(head):
        fmt = own_format.group(1) if own_format else default_format or "TabSeparated"
        sql = sql if own_format else f"{sql}\n FORMAT {fmt}"
        if settings and "readonly" in settings:
            return warehouse.raw_query(sql, None, bound, settings), fmt  # a session with exactly these
        if settings:
            # After FORMAT, SETTINGS scope to this query and yield to the query's own SETTINGS clause, as URL
            # settings do on a server; chDB would otherwise SET and restore each one around the call.
            sql += " SETTINGS " + ", ".join(f"{_setting_name(k)} = {_quoted(v)}" for k, v in settings.items())
        return warehouse.raw_query(sql, None, bound, None), fmt
    return warehouse.raw_query(sql, None, bound, settings), None


def _setting_name(name: str) -> str:
    if not _SETTING_NAME.fullmatch(name):
        raise _RefusedError(_BAD_ARGUMENTS, f"{name!r} is not a setting name")
    return name


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _insert(warehouse: Warehouse, insert: re.Match[bytes], text: bytes, settings: dict[str, str]) -> int:
    columns = insert.group("columns")
    names = None
    if columns is not None:
        found = _COLUMN.findall(columns.decode())
        names = [re.sub(r"\\(.)", r"\1", quoted) if quoted else bare for quoted, bare in found]
    table = insert.group("table").decode()
    return warehouse.raw_insert(table, names, text[insert.end() :], insert.group("fmt").decode(), settings)


def _decoded(body: bytes, encoding: str | None) -> bytes:
    """The request body without its Content-Encoding (clickhouse-connect compresses inserts by default)."""
    if not encoding or encoding == "identity" or not body:
        return body
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
        if encoding == "lz4":
            import lz4.frame

            out, rest = [], body
            while rest:  # one frame per block
                decompressor = lz4.frame.LZ4FrameDecompressor()
                out.append(decompressor.decompress(rest))
                rest = decompressor.unused_data
            return b"".join(out)
        if encoding == "zstd":
            from backports import zstd  # the zstd clickhouse-connect itself uses before Python 3.14

            return bytes(zstd.decompress(body))
    except Exception as exc:  # each codec has its own error types; all mean a body we cannot read
        raise _RefusedError(_BAD_ARGUMENTS, f"cannot decode a {encoding} request body: {exc}") from None
    raise _RefusedError(_NOT_IMPLEMENTED, f"unsupported Content-Encoding {encoding}")


def _error(code: int, message: str, headers: dict[str, Any]) -> Response:
    if not message.startswith("Code:"):
        message = f"Code: {code}. DB::Exception: {message}."
    return PlainTextResponse(
        message.rstrip("\n") + "\n",
        status_code=500,
        headers={**headers, "X-ClickHouse-Exception-Code": str(code)},
    )
