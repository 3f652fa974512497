"""Manage a local single-node KRaft broker through infra/kafka/broker.sh (jars fetched from Maven)."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from herald.errors import KafkaUnavailableError

BROKER_SH = Path(__file__).parent / "kafka" / "broker.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*args: str, timeout: float = 600) -> str:
    proc = subprocess.run(
        ["bash", str(BROKER_SH), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise KafkaUnavailableError((proc.stderr or proc.stdout).strip() or f"broker.sh {args[0]} failed")
    return proc.stdout.strip()


@dataclass
class LocalKafka:
    data_dir: Path
    port: int
    controller_port: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def running(self) -> bool:
        try:
            _run("status", str(self.data_dir.resolve()))
        except KafkaUnavailableError:
            return False
        return True

    def start(self, wait_s: float = 90) -> str:
        """Start (formatting on first use) and wait until it accepts connections. Idempotent. A restart
        on the same data dir (after ``stop``) is the same broker: its topics, offsets and groups, on the
        same port and the controller port it first had."""
        _run("fetch")
        if not self.running():
            recorded = self.data_dir / "controller.port"
            if self.controller_port is None and recorded.exists():
                self.controller_port = int(recorded.read_text())
            self.controller_port = self.controller_port or free_port()
            _run("start", str(self.data_dir.resolve()), str(self.port), str(self.controller_port))
        try:
            _run("wait", str(self.port), str(int(wait_s)))
        except KafkaUnavailableError as exc:
            log = self.data_dir / "stdout.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise KafkaUnavailableError(f"{exc}\n{tail}") from exc
        wait_for_metadata(self.bootstrap, wait_s)
        return self.bootstrap

    def stop(self) -> None:
        _run("stop", str(self.data_dir.resolve()))


def fetch_jars() -> None:
    _run("fetch")


def wait_for_metadata(bootstrap: str, wait_s: float = 60) -> None:
    """The port opens before the broker serves metadata; wait for the latter."""
    import time

    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + wait_s
    while True:
        try:
            admin.list_topics(timeout=5)
            return
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"broker {bootstrap} serves no metadata after {wait_s}s: {exc}"
                ) from exc
            time.sleep(0.5)
