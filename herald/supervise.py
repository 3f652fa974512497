"""Start, find and stop worker processes (the demo, the drills and the integration tests use it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from herald.errors import HeraldError

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class WorkerProcess:
    """A `cli.py worker` child process configured by HERALD_* variables in ``env``."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    api: str = ""
    _log: Any = field(default=None, repr=False)

    @property
    def run_file(self) -> Path:
        data_dir = Path(self.env.get("HERALD_DATA_DIR", ".herald"))
        return data_dir / "run" / f"{self.env.get('HERALD_WORKER_NAME', 'worker-1')}.json"

    def start(self, timeout: float = 90) -> WorkerProcess:
        self.run_file.unlink(missing_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "worker"],
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HeraldError(
                    f"worker exited with {self.proc.returncode}; log: {self.log_path}\n{self.tail()}"
                )
            if self.run_file.exists():
                try:
                    info = json.loads(self.run_file.read_text())
                except (OSError, ValueError):  # an older writer's file being replaced: look again
                    info = {}
                if info.get("pid") == self.proc.pid:
                    self.api = info["api"]
                    return self
            time.sleep(0.1)
        raise HeraldError(f"worker did not start within {timeout}s; log: {self.log_path}\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return log_tail(self.log_path, chars)

    def health(self) -> dict[str, Any]:
        response = httpx.get(f"{self.api}/health", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait: Faust commits what it processed and the worker closes the warehouse."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int:
        """SIGKILL: no chance to flush or commit (what a crash looks like)."""
        return self._signal(signal.SIGKILL, 30)

    def _signal(self, sig: int, timeout: float) -> int:
        if self.proc is None:
            return 0
        code = end_process(self.proc, sig, timeout)
        if self._log:
            self._log.close()
        return code


def end_process(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> int:
    """Send ``sig`` to a child still running, wait ``timeout`` (then SIGKILL); its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return int(proc.returncode)


def log_tail(path: Path, chars: int = 3000) -> str:
    """The end of a child's log file ('' before it exists)."""
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""
