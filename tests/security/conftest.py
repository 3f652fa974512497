"""The logging pipeline as the worker configures it, writing to a string the tests read back."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from herald.logging import configure_logging

# Loggers whose level configure_logging raises; put back afterwards like the root logger.
CHATTY = ("aiokafka", "kafka", "faust", "mode", "uvicorn.access", "httpx")


class CapturedLog:
    """What the root handler wrote, as text and (for the JSON format) as parsed events."""

    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    @property
    def text(self) -> str:
        return self._stream.getvalue()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event]


@pytest.fixture
def capture_log() -> Iterator[Callable[[str], CapturedLog]]:
    """configure_logging(fmt) with its handler's stream swapped for a StringIO; the previous logging
    and structlog configuration come back after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in CHATTY}
    config = structlog.get_config()

    def configure(fmt: str) -> CapturedLog:
        configure_logging(fmt, "info")
        stream = io.StringIO()
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
        return CapturedLog(stream)

    try:
        yield configure
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, old in levels.items():
            logging.getLogger(name).setLevel(old)
        structlog.configure(**config)
