"""/health says degraded, with the reason, when the warehouse does not answer; a stuck warehouse cannot
hold the health check itself."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from projections.warehouse import Warehouse
from streams.pipeline import IngestTotals
from web.app import create_api


class _Unanswering:
    """The warehouse surface /health needs, with a probe that reports what a stuck engine would."""

    def __init__(self, problem: str | None) -> None:
        self.problem = problem

    def probe(self, timeout_s: float = 2.0) -> str | None:
        return self.problem

    def on_close(self, _closer: Any) -> None:
        return None


@pytest.mark.parametrize(
    ("problem", "status"), [(None, "ok"), ("warehouse not answering within 2 s", "degraded")]
)
def test_health_reports_the_warehouse_probe(problem: str | None, status: str) -> None:
    """The probe's problem turns /health degraded and is listed; without one it stays ok."""
    app = create_api(_Unanswering(problem), IngestTotals, "w")  # type: ignore[arg-type]  # the surface used
    body = TestClient(app).get("/health").json()
    assert (body["status"], body["problems"]) == (status, [problem] if problem else [])


class _Stuck(Warehouse):
    """A real warehouse whose probe never comes back until released, as an engine that hangs."""

    release = threading.Event()

    def _probe_once(self, timeout_s: float) -> None:
        self.release.wait(60)


@pytest.mark.integration
def test_a_hung_probe_says_so_and_holds_neither_the_caller_nor_the_next_check(tmp_path: Any) -> None:
    """The probe gives up on its own and says why; while it hangs, later checks answer at once with the
    reason instead of piling up threads; once the engine answers again, the probe is clean."""
    warehouse = _Stuck(f"chdb://{tmp_path / 'wh'}")
    try:
        assert "not answering within" in str(warehouse.probe(timeout_s=0.2))
        assert "previous probe" in str(warehouse.probe(timeout_s=0.2))
        _Stuck.release.set()
        for _ in range(200):  # the hung probe comes back, then a probe is clean again
            if warehouse.probe() is None:
                break
            time.sleep(0.05)
        assert warehouse.probe() is None
    finally:
        warehouse.close()
