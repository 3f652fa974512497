"""Runs the FastAPI app with uvicorn in its own thread and event loop, so a slow request can never
stall the stream loop (and uvicorn installs no signal handlers outside the main thread)."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI

from herald.errors import HeraldError


class ApiServer:
    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="api", daemon=True)
        self.host = host

    def start(self, timeout: float = 20.0) -> int:
        """Start serving; return the bound port (useful with port 0)."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise HeraldError("the API server did not start (is the port in use? set HERALD_API_PORT)")
            time.sleep(0.05)
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
