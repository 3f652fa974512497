"""Fault injection at the code's own boundaries, for the chaos suite and the crash tests.

``HERALD_FAULTS`` names points and what happens there, comma-separated: ``point:action[@n]``.

- points (where the ingest writer calls :meth:`Faults.hit`): ``before_intents`` (a batch is decided
  and fenced, its runs not planned yet), ``before_insert`` (a run is planned and fenced, its insert not
  sent), ``after_run`` (a run is in events and every view, the next not
  started), ``before_marker`` (every run of a batch is in, its marker not written);
- actions: ``kill`` (SIGKILL this process: no cleanup, no flush, as a crash), ``pause=S`` (log
  ``fault.paused`` and sleep S seconds: a window for a test to SIGSTOP the process at exactly that
  point); ``@n`` fires on the n-th hit of the point only (default: every hit).

Empty in production. Parsing is pure; only :meth:`Faults.hit` acts.

>>> Faults.parse("after_run:kill@3,before_insert:pause=1.5").rules
(('after_run', 'kill', 0.0, 3), ('before_insert', 'pause', 1.5, 0))
>>> Faults.parse("nowhere:kill")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
herald.errors.ConfigError: HERALD_FAULTS: unknown point 'nowhere' (after_run, before_insert, ...)
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import structlog

from herald.errors import ConfigError

POINTS = ("after_run", "before_insert", "before_intents", "before_marker")
_RULE = re.compile(r"^(?P<point>\w+):(?P<action>kill|pause=(?P<seconds>\d+(\.\d+)?))(@(?P<nth>\d+))?$")
log = structlog.get_logger("herald.faults")


@dataclass
class Faults:
    rules: tuple[tuple[str, str, float, int], ...] = ()
    hits: Counter[str] = field(default_factory=Counter)

    @classmethod
    def parse(cls, text: str) -> Faults:
        rules = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            m = _RULE.match(part)
            if not m:
                raise ConfigError(f"HERALD_FAULTS: {part!r} is not point:kill or point:pause=SECONDS[@n]")
            if m["point"] not in POINTS:
                raise ConfigError(f"HERALD_FAULTS: unknown point {m['point']!r} ({', '.join(POINTS)})")
            action = "kill" if m["action"] == "kill" else "pause"
            rules.append((m["point"], action, float(m["seconds"] or 0), int(m["nth"] or 0)))
        return cls(tuple(rules))

    def hit(self, point: str) -> None:
        """Reached ``point``: act on the rules that name it."""
        if not self.rules:
            return
        self.hits[point] += 1
        for name, action, seconds, nth in self.rules:
            if name != point or (nth and self.hits[point] != nth):
                continue
            if action == "kill":
                log.warning("fault.kill", point=point, hit=self.hits[point])
                os.kill(os.getpid(), signal.SIGKILL)
            log.warning("fault.paused", point=point, hit=self.hits[point], seconds=seconds, pid=os.getpid())
            time.sleep(seconds)


NO_FAULTS = Faults()
