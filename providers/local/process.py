"""The local providers as a child process, and a client of their control API (drills, demos, tests).

>>> with LocalProvidersProcess(Path("/tmp/providers.log")) as lp:  # doctest: +SKIP
...     lp.control.stop("sms-primary")
...     lp.control.set_faults("smtp-primary", FaultPlan(mode="error_rate", p=0.2, error="throttled"))
...     lp.control.messages("sms-secondary")
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from herald.errors import HeraldError
from herald.supervise import end_process, log_tail
from providers.local.faults import FaultPlan

__all__ = ["LocalProvidersProcess", "ProvidersControl"]

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ProvidersControl:
    """Synchronous client of the control API at ``url`` (``http://host:port``)."""

    url: str
    timeout_s: float = 10.0

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = httpx.request(method, f"{self.url}{path}", json=body, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise HeraldError(f"provider control API {self.url} unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise HeraldError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()

    def health(self) -> bool:
        try:
            return bool(self._call("GET", "/health").get("ok"))
        except HeraldError:
            return False

    def providers(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/providers"))

    def provider(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/providers/{name}"))

    def counts(self) -> dict[str, dict[str, Any]]:
        """``{provider: counts}`` (requests, accepted, unique, duplicates, replays, dropped, ...)."""
        return {p["name"]: p["counts"] for p in self.providers()}

    def stop(self, name: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/providers/{name}/stop"))

    def start(self, name: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/providers/{name}/start"))

    def reset(self, name: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/providers/{name}/reset"))

    def set_faults(self, name: str, plan: FaultPlan | Mapping[str, Any]) -> dict[str, Any]:
        body = plan.model_dump() if isinstance(plan, FaultPlan) else dict(plan)
        return dict(self._call("PUT", f"/providers/{name}/faults", body))

    def messages(self, name: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/providers/{name}/messages"))


@dataclass
class LocalProvidersProcess:
    """``python -m providers.local`` as a child process; ``start`` returns once the control API answers."""

    log_path: Path
    ports: Mapping[str, int] = field(default_factory=dict)
    faults: Mapping[str, FaultPlan] = field(default_factory=dict)
    control_port: int = 0
    deliver_after_ms: int = 200
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    _log: Any = field(default=None, repr=False)

    @property
    def ready_file(self) -> Path:
        return self.log_path.with_name(self.log_path.name + ".ready.json")

    @property
    def control(self) -> ProvidersControl:
        if not self.info:
            raise HeraldError("local providers not started")
        return ProvidersControl(self.info["control"])

    @property
    def endpoints(self) -> dict[str, dict[str, Any]]:
        return dict(self.info.get("endpoints", {}))

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "providers.local",
            "--host",
            self.host,
            "--ready-file",
            str(self.ready_file),
        ]
        cmd += ["--control-port", str(self.control_port), "--deliver-after-ms", str(self.deliver_after_ms)]
        for name, port in self.ports.items():
            cmd += ["--port", f"{name}={port}"]
        for name, plan in self.faults.items():
            cmd += ["--fault", f"{name}={plan.model_dump_json()}"]
        return cmd

    def start(self, timeout: float = 30) -> LocalProvidersProcess:
        self.ready_file.unlink(missing_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(), env={**os.environ}, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._close_log()
                raise HeraldError(
                    f"local providers exited with {self.proc.returncode}; log: {self.log_path}\n{self.tail()}"
                )
            if self.ready_file.exists():
                info = json.loads(self.ready_file.read_text())
                if info.get("pid") == self.proc.pid:
                    self.info = info
                    return self
            time.sleep(0.05)
        self.kill()
        raise HeraldError(
            f"local providers did not start within {timeout}s; log: {self.log_path}\n{self.tail()}"
        )

    def tail(self, chars: int = 3000) -> str:
        return log_tail(self.log_path, chars)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM: the servers close their sockets and the process exits."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int:
        return self._signal(signal.SIGKILL, 10)

    def _signal(self, sig: int, timeout: float) -> int:
        if self.proc is None:
            return 0
        code = end_process(self.proc, sig, timeout)
        self._close_log()
        self.ready_file.unlink(missing_ok=True)
        return code

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalProvidersProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
