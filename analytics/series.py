"""Reading and writing ``timestamp,value[,count]`` series as CSV text (pure: lines in, rows out).

>>> rows = read_series(["timestamp,value", "", "2024-01-01T00:01:00Z,5", "60,7.5"])
>>> [(row.line, row.timestamp, row.value) for row in rows]
[(3, 1704067260.0, 5.0), (4, 60.0, 7.5)]
>>> try:
...     read_series(["timestamp,value", "yesterday,5"])
... except SeriesFormatError as error:
...     print(error)
line 2: timestamp 'yesterday' is neither ISO-8601 nor unix seconds
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from herald.errors import HeraldError


class SeriesFormatError(HeraldError):
    """A series file is malformed; ``line`` is the 1-based physical line that is wrong."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """One point of a series, with its source line and the original text for faithful echoing."""

    line: int
    timestamp: float
    value: float
    count: float | None
    raw_timestamp: str
    raw_value: str


def parse_timestamp(text: str) -> float:
    """Unix seconds from unix seconds or ISO-8601 text (naive times are taken as UTC).

    >>> parse_timestamp("1700000000"), parse_timestamp("1970-01-02T00:00:00+00:00")
    (1700000000.0, 86400.0)
    """
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"timestamp {text!r} is neither ISO-8601 nor unix seconds") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if not math.isfinite(seconds):
        raise ValueError(f"timestamp {text!r} is not finite")
    return seconds


def _number(text: str, column: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{column} {text!r} is not finite")
    return number


def read_series(lines: Iterable[str]) -> list[SeriesRow]:
    """Parse CSV lines with a header naming ``timestamp`` and ``value`` (and optionally ``count``).

    Blank lines are skipped; any other bad row raises :class:`SeriesFormatError` naming its line.
    """
    reader = csv.reader(lines)
    columns: dict[str, int] | None = None
    width = 0
    rows: list[SeriesRow] = []
    for fields in reader:
        line = reader.line_num
        if not any(field.strip() for field in fields):
            continue
        if columns is None:
            columns, width = _header(fields, line), len(fields)
            continue
        if len(fields) != width:
            raise SeriesFormatError(line, f"expected {width} fields, found {len(fields)}")
        try:
            raw_ts, raw_value = fields[columns["timestamp"]].strip(), fields[columns["value"]].strip()
            count = None
            if "count" in columns and (raw_count := fields[columns["count"]].strip()):
                count = _number(raw_count, "count")
            rows.append(
                SeriesRow(
                    line, parse_timestamp(raw_ts), _number(raw_value, "value"), count, raw_ts, raw_value
                )
            )
        except ValueError as error:
            raise SeriesFormatError(line, str(error)) from None
    if columns is None:
        raise SeriesFormatError(1, "missing header row 'timestamp,value'")
    return rows


def _header(fields: Sequence[str], line: int) -> dict[str, int]:
    names = [field.strip().lower() for field in fields]
    missing = [name for name in ("timestamp", "value") if name not in names]
    if missing:
        raise SeriesFormatError(line, f"header must name timestamp and value columns, missing {missing}")
    return {name: index for index, name in enumerate(names)}


def format_scores(rows: Iterable[SeriesRow], scores: Iterable[float]) -> str:
    """CSV text ``timestamp,value,anomaly_score``, echoing the input text of each row.

    >>> print(format_scores(read_series(["timestamp,value", "60,1"]), [0.25]), end="")
    timestamp,value,anomaly_score
    60,1,0.250000
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("timestamp", "value", "anomaly_score"))
    for row, score in zip(rows, scores, strict=True):
        writer.writerow((row.raw_timestamp, row.raw_value, f"{score:.6f}"))
    return out.getvalue()
