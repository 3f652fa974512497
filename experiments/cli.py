"""``experiments analyze``: offline verdict of one experiment metric from a JSON file or stdin.

A thin shell over ``experiments.analyze.analyze``: read, call, print. Bad input (unreadable file,
invalid JSON, a payload failing validation) exits with code 2 and names the field.

>>> from typer.testing import CliRunner
>>> payload = '{"metric": "proportion", "variants": [{"name": "a", "n": 10, "conversions": 11}]}'
>>> result = CliRunner().invoke(app, ["analyze", "--input", "-"], input=payload)
>>> result.exit_code
2
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from experiments.analyze import PayloadError, analyze

__all__ = ["app", "format_table"]

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.callback()
def _experiments() -> None:
    """Experiment analysis (pure statistics over per-variant counts)."""


def _read(source: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise PayloadError([f"input: cannot read {source!r}: {exc.strerror or exc}"]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise PayloadError([f"input: not valid JSON: {exc.msg} at {where}"]) from None


def _cell(value: Any, percent: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:+.2%}" if percent else f"{value:.4g}"
    return str(value)


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of an ``analyze`` report for people; ``--json`` is the stable format."""
    sequential = any("seq_decision" in row for row in report["results"])
    header = [
        "variant",
        "abs effect",
        "rel effect",
        "rel CI",
        "p",
        "adj p",
        "chance",
        "sig",
        "power",
        "more n",
    ]
    if sequential:
        header += ["seq rel CI", "seq decision"]
    rows = [header]
    for r in report["results"]:
        ci = f"[{_cell(r['ci_low'], True)}, {_cell(r['ci_high'], True)}]" if r["ci_low"] is not None else "-"
        row = [
            r["variant"],
            _cell(r["absolute_effect"]),
            _cell(r["relative_effect"], True),
            ci,
            _cell(r["p_value"]),
            _cell(r["adjusted_p_value"]),
            _cell(r["chance_to_win"], True).lstrip("+"),
            _cell(r["significant"]),
            _cell(r["power"], True).lstrip("+"),
            _cell(r["remaining_sample_size"]),
        ]
        if sequential:
            seq_ci = "-"
            if r["seq_ci_low"] is not None:
                seq_ci = f"[{_cell(r['seq_ci_low'], True)}, {_cell(r['seq_ci_high'], True)}]"
            row += [seq_ci, r["seq_decision"]]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    srm = "  << SAMPLE RATIO MISMATCH: do not trust these results" if report["srm_flag"] else ""
    intro = (
        f"metric={report['metric']} control={report['control']} alpha={report['alpha']} "
        f"correction={report['correction']} srm_p={report['srm_p_value']:.4g}{srm}"
    )
    return "\n".join([intro, *lines])


@app.command("analyze")
def analyze_command(
    input_path: Annotated[str, typer.Option("--input", "-i", help="JSON payload file, or - for stdin.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Analyze per-variant counts (first variant = control) and print the verdict."""
    try:
        report = analyze(_read(input_path))
    except PayloadError as exc:
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(json.dumps(report, indent=2, allow_nan=False) if as_json else format_table(report))


if __name__ == "__main__":
    app()
