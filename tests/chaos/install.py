"""One isolated Herald installation per scenario (its own namespace and data dir, like the tests'
``herald_factory``) on the suite's broker, and the moves a scenario makes on its workers: start with a
fault plan, kill, pause past the session, find the embedded warehouse's owner and its share."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException

from herald.errors import HeraldError
from herald.settings import Settings, load_settings
from herald.supervise import WorkerProcess
from projections.warehouse import Warehouse
from streams.emitter import Emitter
from streams.topics import ensure_topics
from tests.conftest import Herald

SESSION_TIMEOUT_S = 6  # the settings' minimum: a paused or killed worker's partitions move soonest
PAUSE_S = 10.0  # past the session: the group moves a stopped worker's partitions to the other one
WORKER_ENV = {
    "HERALD_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S),
    # Ingest is what the suite tries to break; the alert monitor and the experiment jobs only read the
    # warehouse and would take CPU the two cores need for the workers, the broker and the engine.
    "HERALD_ALERTS_ENABLED": "false",
}
# Log events of the ingest path that show which of its guarantees a scenario exercised (writer.py).
MECHANISMS = {
    "ingest.repaired": "repairs of an unmarked batch",
    "ingest.run_lost": "first runs lost to another writer",
    "sink.fenced": "fenced batches",
    "ingest.refused_by_warehouse": "refusals bisected",
    "ingest.retrying": "retried stages",
    "fault.kill": "fault-point kills",
    "fault.paused": "fault-point pauses",
    "sink.crashed": "crashes",
}


class ChaosError(HeraldError):
    """A scenario could not do what it set out to (a worker crashed, ingest never caught up)."""


class StalledError(ChaosError):
    """Ingest did not catch up: what is in the warehouse can be counted, but not replayed safely (a
    message that stalls the workers would stall the replay too)."""


def kafka_logger(path: Path) -> logging.Logger:
    """Where the suite's own Kafka clients log (librdkafka would print every refused connection of a
    broker restart on stderr, burying the progress lines)."""
    logger = logging.getLogger(f"chaos.kafka.{path}")
    if not logger.handlers:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


@dataclass
class Installation:
    """A Herald installation under chaos: its workers by name, restarted in place."""

    name: str
    herald: Herald
    kafka_log: logging.Logger
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    exits: Counter[str] = field(default_factory=Counter)  # unexpected exit codes seen, as text

    @classmethod
    def create(cls, root: Path, bootstrap: str, name: str, kafka_log: logging.Logger) -> Installation:
        settings = load_settings(
            data_dir=root / name,
            kafka_bootstrap=bootstrap,
            namespace=f"chaos-{name}-{uuid.uuid4().hex[:8]}",
            api_port=0,
            partitions=4,
            batch_within_s=0.1,
            batch_max_events=2000,
            session_timeout_s=SESSION_TIMEOUT_S,
        )
        ensure_topics(bootstrap, settings.partitions, 1, settings.topics)
        return cls(name, Herald(settings, bootstrap), kafka_log)

    @property
    def settings(self) -> Settings:
        return self.herald.settings

    def emitter(self) -> Emitter:
        return Emitter(
            self.herald.bootstrap,
            self.settings.topics.lifecycle,
            max_event_bytes=10**7,  # bad messages past the workers' limit must reach the log
            producer_config={"logger": self.kafka_log},
        )

    # ------------------------------------------------------------------------------- workers

    def start(self, name: str, faults: str = "") -> WorkerProcess:
        """Start (or restart) worker ``name`` with the fault plan ``faults`` (herald/faults.py)."""
        old = self.workers.get(name)
        if old is not None and old in self.herald.workers:
            self.herald.workers.remove(old)
        worker = self.herald.start_worker(name, **WORKER_ENV, **({"HERALD_FAULTS": faults} if faults else {}))
        self.workers[name] = worker
        return worker

    def alive(self, name: str) -> bool:
        proc = self.workers[name].proc
        return proc is not None and proc.poll() is None

    def exit_code(self, name: str) -> int | None:
        proc = self.workers[name].proc
        return None if proc is None else proc.poll()

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash: no flush, no commit, no goodbye to the group; the run file stays."""
        proc = self.workers[name].proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a stopped process dies as well, but say it plainly
            proc.kill()
            proc.wait(30)

    def pause(self, name: str, seconds: float = PAUSE_S) -> None:
        """SIGSTOP for ``seconds`` (past the group session), then SIGCONT."""
        proc = self.workers[name].proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(proc.pid, signal.SIGCONT)

    def run_info(self, name: str) -> dict[str, str]:
        try:
            info: dict[str, str] = json.loads(self.workers[name].run_file.read_text())
        except (OSError, ValueError):
            return {}
        return info

    def owner(self) -> str | None:
        """The live worker that owns the embedded warehouse (its run file names the share)."""
        for name in sorted(self.workers):
            if self.alive(name) and self.run_info(name).get("warehouse_http"):
                return name
        return None

    def share(self) -> Warehouse:
        """The warehouse through its owner's share (the DSN carries the owner's per-run secret)."""
        owner = self.owner()
        if owner is None:
            raise ChaosError(f"{self.name}: no live worker owns the warehouse")
        return Warehouse(self.run_info(owner)["warehouse_http"])

    def partitions(self, name: str) -> list[int]:
        try:
            return list(self.workers[name].health()["partitions"])
        except Exception:  # a worker starting, stopped or dead has no answer: it owns nothing now
            return []

    def check_exits(self) -> None:
        """Record workers that ended other than by our SIGKILL or a clean stop: a crash is a bug."""
        for name, worker in self.workers.items():
            code = self.exit_code(name)
            if code is not None and code not in (0, -signal.SIGKILL, -signal.SIGTERM):
                key = f"{name} exited with {code}"
                if not self.exits[key]:
                    self.exits[key] += 1
                    raise ChaosError(f"{self.name}: {key}\n{worker.tail()}")

    def stop_all(self) -> None:
        for name, worker in self.workers.items():
            if self.alive(name):
                proc = worker.proc
                assert proc is not None
                os.kill(proc.pid, signal.SIGCONT)
                worker.stop()

    # ------------------------------------------------------------------------------- progress

    def lag(self) -> int | None:
        """Messages the sink group has not committed (None while the broker does not answer)."""
        try:
            return self.herald.lag()
        except (HeraldError, KafkaException):
            return None

    def wait_caught_up(self, timeout: float = 300, stall_s: float = 90) -> float:
        """Wait until every message is applied and committed; the seconds it took. Ingest that makes no
        progress for ``stall_s`` is a failure at once, with the error its workers keep retrying."""
        began = time.monotonic()
        lag, least, progressed = None, None, began
        while time.monotonic() - began < timeout:
            self.check_exits()
            lag = self.lag()
            if lag == 0:
                return time.monotonic() - began
            if lag is not None and (least is None or lag < least):
                least, progressed = lag, time.monotonic()
            if time.monotonic() - progressed > stall_s:
                raise StalledError(
                    f"{self.name}: ingest stalled {lag} behind for {stall_s:.0f} s; the workers keep "
                    f"retrying: {self.last_retry_error()}"
                )
            time.sleep(0.5)
        tails = "\n".join(f"--- {n}\n{w.tail(1500)}" for n, w in self.workers.items())
        raise StalledError(f"{self.name}: still {lag} behind after {timeout:.0f} s\n{tails}")

    def last_retry_error(self) -> str:
        """The error of the newest ``ingest.retrying`` line in any worker's log ('' when none)."""
        newest = ("", "")
        for worker in self.workers.values():
            if not worker.log_path.exists():
                continue
            for line in worker.log_path.read_text(errors="replace").splitlines():
                if '"ingest.retrying"' in line:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    newest = max(newest, (str(entry.get("timestamp", "")), str(entry.get("error", ""))))
        return newest[1]

    def wait_assigned(self, names: list[str], timeout: float = 60) -> None:
        """Wait until each of ``names`` owns partitions and together they own all of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            owned = {n: self.partitions(n) for n in names}
            if all(owned.values()) and sorted(p for ps in owned.values() for p in ps) == list(
                range(self.settings.partitions)
            ):
                return
            time.sleep(0.5)
        raise ChaosError(f"{self.name}: partitions not shared by {names} after {timeout:.0f} s")

    def mechanisms(self) -> dict[str, int]:
        """How often each guarantee's log event appears in the workers' logs."""
        text = "".join(
            w.log_path.read_text(errors="replace") for w in self.workers.values() if w.log_path.exists()
        )
        return {event: text.count(f'"{event}"') for event in MECHANISMS}

    def logs(self) -> dict[str, str]:
        return {name: str(w.log_path) for name, w in self.workers.items()}
