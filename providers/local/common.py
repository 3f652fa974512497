"""What every local provider server shares: a name and a port, a fault plan, a message log, start/stop.

``stop`` really closes the listening socket and aborts open connections (what a crashed provider
looks like: connection refused afterwards); ``start`` listens again on the same port with the same
record, so a drill sees one provider history across an outage.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from typing import Any

from providers.base import Channel
from providers.local.faults import FaultInjector, FaultPlan
from providers.local.record import MessageLog

__all__ = ["LocalProvider"]


class LocalProvider(ABC):
    """A real server on ``host:port`` (0 = a free port, kept across restarts)."""

    channel: Channel
    scheme: str

    def __init__(
        self,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultPlan | None = None,
        deliver_after_s: float = 0.2,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.injector = FaultInjector(faults)
        self.log = MessageLog()
        self.deliver_after_s = deliver_after_s
        self.up = False
        self.starts = 0
        self.stops = 0
        self._stopped = asyncio.Event()
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, port={self.port}, up={self.up})"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def faults(self) -> FaultPlan:
        return self.injector.plan

    def set_faults(self, plan: FaultPlan) -> None:
        self.injector.set(plan)

    def reset(self) -> None:
        """Forget every message and counter (the fault plan stays)."""
        self.log = MessageLog()

    async def start(self) -> None:
        async with self._lock:
            if self.up:
                return
            self._stopped = asyncio.Event()
            self.port = await self._listen()
            self.up = True
            self.starts += 1

    async def stop(self) -> None:
        """Close the listening socket and abort open connections; requests in progress never answer."""
        async with self._lock:
            if not self.up:
                return
            self.up = False
            try:
                await self._close()
            finally:
                self._stopped.set()  # wakes hanging and slow requests, whose connections are gone
                self.stops += 1

    async def pause(self, seconds: float) -> bool:
        """Sleep ``seconds``; False if the provider stopped meanwhile."""
        try:
            await asyncio.wait_for(self._stopped.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "channel": self.channel,
            "host": self.host,
            "port": self.port,
            "url": self.url,
            "up": self.up,
            "starts": self.starts,
            "stops": self.stops,
            "deliver_after_s": self.deliver_after_s,
            "faults": self.faults.model_dump(),
            "counts": self.log.stats(time.time(), self.deliver_after_s),
        }

    def messages(self) -> list[dict[str, Any]]:
        return self.log.messages(time.time(), self.deliver_after_s)

    @abstractmethod
    async def _listen(self) -> int:
        """Open the listening socket on ``self.port``; return the bound port."""

    @abstractmethod
    async def _close(self) -> None:
        """Close the listening socket and abort every open connection."""
