"""The four local providers in one event loop, one control API over them, and the command line.

:class:`LocalProviders` starts smtp-primary, smtp-secondary (SMTP) and sms-primary, sms-secondary
(HTTP SMS) on given or free ports, plus a control API (aiohttp) that a separate process (a drill, a
worker) uses to break and inspect them:

=======================================  ==========================================================
``GET /health``                          ``{"ok": true}``
``GET /providers``                       every provider: name, channel, port, url, up, faults, counts
``GET /providers/{name}``                one provider
``POST /providers/{name}/stop``          close its listening socket and connections (refused after)
``POST /providers/{name}/start``         listen again on the same port
``PUT /providers/{name}/faults``         replace its fault plan (JSON :class:`FaultPlan`)
``GET /providers/{name}/messages``       accepted messages: key, message id, sends, replays,
                                         first/last time, status
``POST /providers/{name}/reset``         forget its messages and counters
=======================================  ==========================================================

``python -m providers.local [--config providers.yaml] [--port NAME=PORT ...] [--fault NAME=JSON ...]
[--control-port N] [--ready-file PATH]`` runs them until SIGTERM/SIGINT; the ready file (JSON:
pid, control URL, providers) appears once everything listens. :mod:`providers.local.process` starts
it as a child process and talks to the control API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
import yaml
from aiohttp import web

from providers.base import Channel
from providers.endpoints import adapters_for
from providers.local.common import LocalProvider
from providers.local.faults import FaultPlan
from providers.local.sms_server import LocalSmsServer, apply_faults
from providers.local.smtp_server import LocalSmtpServer

__all__ = ["DEFAULT_PROVIDERS", "LocalProviders", "adapters_for", "main"]

log = structlog.get_logger("herald.providers")

# the simulator's provider names (simulator/profiles.py)
DEFAULT_PROVIDERS: dict[str, Channel] = {
    "smtp-primary": "EMAIL",
    "smtp-secondary": "EMAIL",
    "sms-primary": "SMS",
    "sms-secondary": "SMS",
}


class LocalProviders:
    """The local providers and their control API, in the running event loop.

    >>> async def demo():  # doctest: +SKIP
    ...     async with LocalProviders() as lp:
    ...         await lp["sms-primary"].stop()
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        ports: Mapping[str, int] | None = None,
        faults: Mapping[str, FaultPlan] | None = None,
        control_port: int = 0,
        deliver_after_s: float = 0.2,
        providers: Mapping[str, Channel] | None = None,
    ) -> None:
        ports, faults = dict(ports or {}), dict(faults or {})
        wanted = dict(providers or DEFAULT_PROVIDERS)
        unknown = (set(ports) | set(faults)) - set(wanted)
        if unknown:
            raise ValueError(f"unknown providers {sorted(unknown)}; known: {sorted(wanted)}")
        self.host = host
        self.control_port = control_port
        self.providers: dict[str, LocalProvider] = {}
        for name, channel in wanted.items():
            cls = LocalSmtpServer if channel == "EMAIL" else LocalSmsServer
            self.providers[name] = cls(name, host, ports.get(name, 0), faults.get(name), deliver_after_s)
        self._runner: web.AppRunner | None = None

    def __getitem__(self, name: str) -> LocalProvider:
        return self.providers[name]

    def __iter__(self) -> Iterator[LocalProvider]:
        return iter(self.providers.values())

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.control_port}"

    def endpoints(self) -> dict[str, dict[str, Any]]:
        """``{name: {channel, host, port, url}}``: what adapters are built from."""
        return {p.name: {"channel": p.channel, "host": p.host, "port": p.port, "url": p.url} for p in self}

    async def start(self) -> LocalProviders:
        try:
            for provider in self:
                await provider.start()
            runner = web.AppRunner(
                control_app(self), access_log=None, handle_signals=False, shutdown_timeout=0.05
            )
            await runner.setup()
            self._runner = runner
            await web.TCPSite(runner, self.host, self.control_port, reuse_address=True).start()
            self.control_port = int(runner.addresses[0][1])
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        for provider in self:
            await provider.stop()

    async def __aenter__(self) -> LocalProviders:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def snapshot(self) -> dict[str, Any]:
        return {"control": self.control_url, "providers": [p.info() for p in self]}


def control_app(providers: LocalProviders) -> web.Application:
    def provider(request: web.Request) -> LocalProvider:
        name = request.match_info["name"]
        if name not in providers.providers:
            raise web.HTTPNotFound(
                text=json.dumps({"error": {"code": "unknown_provider", "message": f"no provider {name}"}}),
                content_type="application/json",
            )
        return providers[name]

    async def health(request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True})

    async def list_providers(request: web.Request) -> web.StreamResponse:
        return web.json_response([p.info() for p in providers])

    async def one(request: web.Request) -> web.StreamResponse:
        return web.json_response(provider(request).info())

    async def stop(request: web.Request) -> web.StreamResponse:
        target = provider(request)
        await target.stop()
        log.info("providers.stopped", provider=target.name, port=target.port)
        return web.json_response(target.info())

    async def start(request: web.Request) -> web.StreamResponse:
        target = provider(request)
        await target.start()
        log.info("providers.started", provider=target.name, port=target.port)
        return web.json_response(target.info())

    async def faults(request: web.Request) -> web.StreamResponse:
        target = provider(request)
        response = await apply_faults(target, request)
        if response.status == 200:
            log.info("providers.faults", provider=target.name, faults=target.faults.model_dump())
        return response

    async def messages(request: web.Request) -> web.StreamResponse:
        return web.json_response(provider(request).messages())

    async def reset(request: web.Request) -> web.StreamResponse:
        target = provider(request)
        target.reset()
        return web.json_response(target.info())

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/providers", list_providers)
    app.router.add_get("/providers/{name}", one)
    app.router.add_post("/providers/{name}/stop", stop)
    app.router.add_post("/providers/{name}/start", start)
    app.router.add_put("/providers/{name}/faults", faults)
    app.router.add_get("/providers/{name}/messages", messages)
    app.router.add_post("/providers/{name}/reset", reset)
    return app


def _pairs(values: Sequence[str], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name:
            raise SystemExit(f"{option} takes NAME=VALUE, got {value!r}")
        out[name] = rest
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m providers.local",
        description="Local SMTP and HTTP SMS providers with fault injection.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML: host, control_port, deliver_after_ms, providers: {name: {port, faults}}",
    )
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--control-port", type=int, help="control API port (default 0: a free port)")
    parser.add_argument("--port", action="append", default=[], metavar="NAME=PORT", help="a provider's port")
    parser.add_argument(
        "--fault", action="append", default=[], metavar="NAME=JSON", help="initial fault plan"
    )
    parser.add_argument("--deliver-after-ms", type=int, help="accepted -> delivered delay (default 200)")
    parser.add_argument("--ready-file", type=Path, help="written (JSON) once everything listens")
    parser.add_argument("--log-format", default="json", choices=["json", "console"])
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> LocalProviders:
    config: dict[str, Any] = {}
    if args.config is not None:
        config = yaml.safe_load(args.config.read_text()) or {}
    configured: dict[str, Any] = config.get("providers") or {}
    ports = {name: int(spec.get("port", 0)) for name, spec in configured.items() if spec}
    faults = {
        name: FaultPlan.model_validate(spec["faults"])
        for name, spec in configured.items()
        if spec and spec.get("faults")
    }
    ports.update({name: int(port) for name, port in _pairs(args.port, "--port").items()})
    faults.update(
        {name: FaultPlan.model_validate_json(plan) for name, plan in _pairs(args.fault, "--fault").items()}
    )
    deliver_after_ms = (
        args.deliver_after_ms if args.deliver_after_ms is not None else config.get("deliver_after_ms", 200)
    )
    return LocalProviders(
        host=args.host or config.get("host", "127.0.0.1"),
        ports=ports,
        faults=faults,
        control_port=args.control_port
        if args.control_port is not None
        else int(config.get("control_port", 0)),
        deliver_after_s=float(deliver_after_ms) / 1000,
    )


async def serve(providers: LocalProviders, ready_file: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with providers:
        ready = {"pid": os.getpid(), **providers.snapshot(), "endpoints": providers.endpoints()}
        if ready_file is not None:
            ready_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = ready_file.with_name(ready_file.name + ".tmp")
            tmp.write_text(json.dumps(ready, indent=2))
            tmp.replace(ready_file)  # atomic: a reader never sees half a file
        log.info("providers.ready", control=providers.control_url, endpoints=providers.endpoints())
        try:
            await stop.wait()
        finally:
            if ready_file is not None:
                ready_file.unlink(missing_ok=True)
    log.info("providers.stopped_all")


def main(argv: Sequence[str] | None = None) -> int:
    from herald.logging import configure_logging

    args = parse_args(argv)
    configure_logging(args.log_format)
    providers = build(args)
    asyncio.run(serve(providers, args.ready_file))
    return 0
