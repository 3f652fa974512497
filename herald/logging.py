"""structlog setup: JSON lines in production, console rendering for people; stdlib logs (Faust,
aiokafka, uvicorn) go through the same pipeline so one stream carries everything.

No secret reaches the stream: tracebacks are rendered without frame locals (a request's API key, a
client's password sit in those), and ``redact_secrets`` runs on every event right before rendering."""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.typing import EventDict, WrappedLogger

from herald.redact import redact


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """The event with every secret replaced by ``***`` (herald/redact.py says what counts as one):
    API keys, bearer tokens and API key headers, passwords in URLs and DSNs, values named like
    secrets, in nested dicts, lists and tuples and in a rendered exception (its message and frames).
    An unrendered ``exc_info`` passes through as it is: the traceback renderer needs the exception
    itself, and its output is redacted by the next pass, right before rendering.

    >>> event = {"event": "api.called", "api_key": "hk_Zm9vYmFyYmF6cXV4cXV1eA", "key_sha256": "9f86d0",
    ...          "exception": [{"exc_value": "cannot open http://ops:s3cret@ch.example/herald"}]}
    >>> redacted = redact_secrets(None, "info", event)
    >>> redacted["api_key"], redacted["key_sha256"], redacted["exception"][0]["exc_value"]
    ('***', '9f86d0', 'cannot open http://ops:***@ch.example/herald')
    """
    redacted: EventDict = redact({k: v for k, v in event_dict.items() if k != "exc_info"})
    if "exc_info" in event_dict:
        redacted["exc_info"] = event_dict["exc_info"]
    return redacted


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    tracebacks: structlog.types.Processor = (
        structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        if fmt == "json"
        else structlog.processors.format_exc_info
    )
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # Redacted before it enters stdlib logging as well: any other handler (a library's, pytest's
        # caplog) reads the event dict from the record, not our formatter's output.
        processors=[*shared, redact_secrets, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            # Both kinds of event end here: structlog's (handed over by wrap_for_formatter) and stdlib
            # records (after foreign_pre_chain). Redaction comes after the traceback is rendered, so the
            # exception's message and frames are redacted too, and right before the renderer, so nothing
            # added on the way escapes it.
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                tracebacks,
                redact_secrets,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Chatty libraries: their INFO lines are per-connection noise.
    for name in ("aiokafka", "kafka", "faust", "mode", "uvicorn.access", "httpx"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
