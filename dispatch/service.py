"""The dispatch shell: requests in, provider calls out, lifecycle events emitted, on one asyncio loop.

:class:`DispatchService` owns a :class:`dispatch.core.Dispatcher` (the decisions) and the provider
adapters (providers/). ``submit`` decides a request and, when it is routed, sends it through the
chosen provider's adapter concurrently with other sends (at most ``max_in_flight``); each answer goes
back to the dispatcher, which may order the one failover retry. Deferred requests wait in a timer
heap and are decided again when due. Every event of every step goes to ``emit`` in order (the
lifecycle emitter in production, a list in tests and drills). Single-threaded: the dispatcher is only
touched from the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from dispatch.core import Attempt, Dispatcher, Step
from providers.base import ProviderAdapter, SendRequest, SendResult

log = structlog.get_logger("herald.dispatch")

Emit = Callable[[dict[str, Any]], None]
Render = Callable[[Mapping[str, Any]], tuple[str, str]]  # record -> (address, body)


def default_render(record: Mapping[str, Any]) -> tuple[str, str]:
    """A pseudonymous address and a body naming the template (the local providers accept any)."""
    recipient = record["recipient"]
    ref = str(recipient.get("address_ref") or recipient["id"]).replace(":", "-")
    # A stable digest, not hash(): a send resumed by another worker process must render the same
    # message, or a provider that honours the idempotency key refuses it as a different message.
    number = int.from_bytes(hashlib.blake2b(ref.encode(), digest_size=4).digest(), "big") % 10**7
    address = f"{ref}@example.test" if record["channel"] == "EMAIL" else f"+1555{number:07d}"
    return address, f"{record['template_id']} v{record.get('template_version') or 1}"


async def call_provider(
    adapter: ProviderAdapter | None,
    attempt: Attempt,
    record: Mapping[str, Any],
    render: Render = default_render,
) -> SendResult:
    """Send one attempt; the idempotency key is the notification id, the same over the failover retry."""
    if adapter is None:
        return SendResult(attempt.provider, False, None, "unavailable", True, 0, "no adapter configured")
    address, body = render(record)
    request = SendRequest(
        idempotency_key=str(record["notification_id"]),
        tenant_id=str(record["tenant_id"]),
        channel=record["channel"],
        recipient=address,
        template_id=str(record["template_id"]),
        template_version=int(record.get("template_version") or 1),
        body=body,
    )
    return await adapter.send(request)


class DispatchService:
    def __init__(
        self,
        dispatcher: Dispatcher,
        adapters: Mapping[str, ProviderAdapter],
        emit: Emit,
        *,
        render: Render = default_render,
        clock: Callable[[], float] = time.time,
        max_in_flight: int = 200,
    ) -> None:
        self.dispatcher = dispatcher
        self.adapters = dict(adapters)
        self._emit = emit
        self._render = render
        self._clock = clock
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._records: dict[str, Mapping[str, Any]] = {}
        self.sends = 0

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def submit(self, record: Mapping[str, Any]) -> Step:
        """Decide one request; a routed one is sent in the background (``drain`` waits for it)."""
        step = self.dispatcher.decide(record, self.now_ms())
        self._follow(record, step)
        return step

    def _follow(self, record: Mapping[str, Any], step: Step) -> None:
        for event in step.events:
            self._emit(event)
        if step.attempt is not None:
            self._records[step.attempt.request_id] = record
            self._spawn(self._send(step.attempt))
        elif step.defer_until_ms is not None:
            self._spawn(self._later(record, step.defer_until_ms))

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _later(self, record: Mapping[str, Any], due_ms: int) -> None:
        await asyncio.sleep(max(0.0, due_ms / 1000 - self._clock()))
        self._follow(record, self.dispatcher.decide(record, self.now_ms()))

    async def _send(self, attempt: Attempt) -> None:
        record = self._records[attempt.request_id]
        async with self._slots:
            self.sends += 1
            result = await call_provider(self.adapters.get(attempt.provider), attempt, record, self._render)
        step = self.dispatcher.outcome(attempt, result, self.now_ms())
        if step.attempt is None:
            self._records.pop(attempt.request_id, None)
        self._follow(record, step)

    async def drain(self, timeout: float = 60.0) -> None:
        """Wait until no send or deferral is pending (deferrals due later than ``timeout`` are left)."""
        deadline = time.monotonic() + timeout
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - time.monotonic()))

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for adapter in self.adapters.values():
            await adapter.aclose()
