"""``anomaly`` commands: score a ``timestamp,value`` CSV online (wired into cli.py as a sub-app)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from analytics.anomaly import MetricAnomalyDetector
from analytics.series import SeriesFormatError, format_scores, read_series

app = typer.Typer(help="Online anomaly scoring of metric series.", no_args_is_help=True)


class SeasonChoice(StrEnum):
    """Seasonal baseline of the detector."""

    DAILY = "daily"
    WEEKLY = "weekly"
    NONE = "none"
    AUTO = "auto"


class MetricChoice(StrEnum):
    """What the values are: counts (volume), rates in [0, 1], latencies (> 0), or any number."""

    COUNT = "count"
    RATE = "rate"
    LATENCY = "latency"
    VALUE = "value"


@app.callback()
def anomaly() -> None:
    """Online anomaly scoring of metric series."""


@app.command()
def score(
    source: Annotated[
        Path, typer.Option("--input", help="CSV with a timestamp,value[,count] header", dir_okay=False)
    ],
    target: Annotated[Path, typer.Option("--output", help="CSV to write timestamp,value,anomaly_score")],
    seed: Annotated[int, typer.Option(help="Detector seed")] = 0,
    season: Annotated[SeasonChoice, typer.Option(help="Seasonal baseline")] = SeasonChoice.AUTO,
    metric: Annotated[
        MetricChoice,
        typer.Option(help="count, rate in [0,1] (count column = denominator), latency > 0, value"),
    ] = MetricChoice.VALUE,
    grace_period: Annotated[int, typer.Option(help="Points learned before any alert")] = 1440,
) -> None:
    """Score each row using only the rows before it; one output row per input row, same order."""
    try:
        with source.open(newline="", encoding="utf-8") as handle:
            rows = read_series(handle)
    except OSError as error:
        typer.echo(f"error: cannot read {source}: {error.strerror}", err=True)
        raise typer.Exit(2) from None
    except SeriesFormatError as error:
        typer.echo(f"error: {source}: {error}", err=True)
        raise typer.Exit(2) from None
    detector = MetricAnomalyDetector(
        metric=metric.value,
        season=season.value,
        seed=seed,
        grace_period=grace_period,
    )
    scores = [detector.update(row.timestamp, row.value, row.count).score for row in rows]
    # Written in one go after parsing succeeded, so a bad file never leaves half an output behind.
    target.write_text(format_scores(rows, scores), encoding="utf-8")
    typer.echo(f"scored {len(rows)} rows -> {target}", err=True)
