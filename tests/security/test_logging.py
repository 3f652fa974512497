"""configure_logging end to end: what reaches the stream from structlog loggers and from stdlib loggers
(uvicorn, Faust, aiokafka), in JSON and on the console, carries no key and no password."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import structlog

from web.auth import new_key

from .conftest import CapturedLog

KEY, _ = new_key("acme-dash", "acme", "viewer")
PASSWORD = "Wh-p4ssw0rd-9c1e"
DSN = f"https://herald:{PASSWORD}@warehouse.internal:8443/herald"


def failing_call(key: str) -> None:
    """Raises with the key in a local variable and the DSN with its password in the message."""
    presented = key  # noqa: F841 - what a traceback with locals would print
    dsn = DSN  # noqa: F841
    raise RuntimeError(f"cannot reach {DSN}")


def test_json_tracebacks_carry_no_frame_locals(capture_log: Callable[[str], CapturedLog]) -> None:
    """A logged exception keeps its type, message and frames, but no frame has locals."""
    log = capture_log("json")
    try:
        failing_call(KEY)
    except RuntimeError:
        structlog.get_logger("herald.test").exception("test.failed")
    (event,) = log.named("test.failed")
    (error,) = event["exception"]
    assert error["exc_type"] == "RuntimeError"
    assert error["exc_value"] == "cannot reach https://herald:***@warehouse.internal:8443/herald"
    assert [f["name"] for f in error["frames"]][-1] == "failing_call"
    assert all("locals" not in frame for frame in error["frames"])
    assert KEY not in log.text and PASSWORD not in log.text


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secrets_in_structlog_event_fields_are_masked(
    capture_log: Callable[[str], CapturedLog], fmt: str
) -> None:
    """Keys, headers, DSNs and secret-named fields logged by Herald's own code are masked."""
    log = capture_log(fmt)
    structlog.get_logger("herald.test").warning(
        "test.request",
        headers={"X-Api-Key": KEY, "Authorization": f"Bearer {KEY}"},
        warehouse=DSN,
        password=PASSWORD,
        note=f"presented {KEY}",
    )
    assert "test.request" in log.text and "hk_***" in log.text
    assert KEY not in log.text and PASSWORD not in log.text


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_stdlib_records_are_redacted_like_structlog_events(
    capture_log: Callable[[str], CapturedLog], fmt: str
) -> None:
    """A library's log record (message arguments, extras, exc_info) is redacted on its way out."""
    log = capture_log(fmt)
    try:
        failing_call(KEY)
    except RuntimeError:
        logging.getLogger("uvicorn.error").error(
            "Exception in ASGI application: %s", f"Authorization: Bearer {KEY}", exc_info=True
        )
    logging.getLogger("aiokafka").warning("connect to %s failed", DSN, extra={"api_key": KEY})
    assert "Exception in ASGI application" in log.text and "RuntimeError" in log.text
    assert "connect to https://herald:***@warehouse.internal:8443/herald failed" in log.text
    assert KEY not in log.text and PASSWORD not in log.text


def test_a_key_in_a_chained_exception_message_is_masked(capture_log: Callable[[str], CapturedLog]) -> None:
    """The message of the exception's cause is redacted too."""
    log = capture_log("json")
    try:
        try:
            raise PermissionError(f"unknown API key {KEY}")
        except PermissionError as exc:
            raise RuntimeError("request failed") from exc
    except RuntimeError:
        structlog.get_logger("herald.test").exception("test.failed")
    (event,) = log.named("test.failed")
    assert [e["exc_value"] for e in event["exception"]] == ["request failed", "unknown API key hk_***"]
    assert KEY not in log.text


def test_an_exception_passed_as_exc_info_is_still_rendered_then_redacted(
    capture_log: Callable[[str], CapturedLog],
) -> None:
    """exc_info=<exception> outside its except block keeps its traceback; only the rendered text is masked."""
    log = capture_log("json")
    try:
        failing_call(KEY)
    except RuntimeError as exc:
        error = exc
    structlog.get_logger("herald.test").error("test.failed", exc_info=error)
    (event,) = log.named("test.failed")
    (rendered,) = event["exception"]
    assert rendered["exc_type"] == "RuntimeError" and rendered["frames"][-1]["name"] == "failing_call"
    assert PASSWORD not in log.text
