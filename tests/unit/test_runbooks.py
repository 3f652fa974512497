"""Every alert key resolves to a runbook heading that exists, and runbook URLs are built correctly."""

from __future__ import annotations

import doctest
import re
from pathlib import Path
from typing import get_args

import pytest

import analytics.runbooks
import web.dashboard
from analytics.anomaly import Kind
from analytics.runbooks import RUNBOOKS, SERIES_METRICS, UnknownRunbookError, runbook_key, runbook_url
from herald.errors import HeraldError
from web.dashboard import PANEL_RUNBOOKS, heading_anchor, panel_runbook_url

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_CONDITIONS = ("error_rate_high", "latency_high", "throughput_drop")
INGEST_CONDITIONS = ("dead_letters", "duplicates", "lag", "stall")


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub gives the headings: lowercase, punctuation dropped, spaces to '-', repeats -1, -2."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match is None:
            continue
        text = re.sub(r"`([^`]*)`", r"\1", match[1]).lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_github_anchors_follow_githubs_slug_rules() -> None:
    """The slugger drops punctuation, keeps '-' and '_', and numbers repeated headings."""
    text = "# Delivery runbooks\n## Latency p95: spike!\n### Check\n```\n# not a heading\n```\n### Check\n"
    assert github_anchors(text) == {"delivery-runbooks", "latency-p95-spike", "check", "check-1"}


@pytest.mark.parametrize("key", sorted(RUNBOOKS))
def test_every_runbook_points_to_an_existing_file_and_heading(key: str) -> None:
    """The value of each RUNBOOKS key names a file under docs/runbooks and one of its headings."""
    path, _, anchor = RUNBOOKS[key].partition("#")
    assert path.startswith("docs/runbooks/") and path.endswith(".md")
    page = ROOT / path
    assert page.is_file(), f"{key}: {path} does not exist"
    assert anchor in github_anchors(page.read_text()), f"{key}: no heading with anchor #{anchor} in {path}"


@pytest.mark.parametrize("anchor", sorted({v.partition("#")[2] for v in RUNBOOKS.values()}))
def test_every_runbook_section_has_symptoms_check_act_and_escalate(anchor: str) -> None:
    """Each linked section gives on-call the same four steps, and its check runs SQL."""
    path = next(v.partition("#")[0] for v in RUNBOOKS.values() if v.endswith(f"#{anchor}"))
    text = (ROOT / path).read_text()
    sections = re.split(r"^## ", text, flags=re.MULTILINE)
    section = next(s for s in sections if github_anchors("## " + s.splitlines()[0]) == {anchor})
    for step in ("### Symptoms", "### Check", "### Act", "### Escalate"):
        assert step in section, f"{path}#{anchor} lacks {step}"
    assert "```sql" in section or "](" in section.split("### Check")[1].split("### Act")[0]


@pytest.mark.parametrize("kind", get_args(Kind))
@pytest.mark.parametrize("metric", SERIES_METRICS)
def test_every_metric_and_detector_kind_maps_to_a_runbook(metric: str, kind: str) -> None:
    """Any verdict the detector can give on any watched series has a runbook to link."""
    assert runbook_key(metric, kind) in RUNBOOKS


def test_level_shift_uses_the_shared_runbook_and_drops_their_own() -> None:
    """A level shift of any metric links the shared section; drops and spikes are metric-specific."""
    assert runbook_key("volume", "level_shift") == "level_shift"
    assert runbook_key("delivery_rate", "drop") == "delivery_rate.drop"
    assert runbook_key("latency_p95", "spike") == "latency_p95.spike"


def test_provider_and_ingest_conditions_have_runbooks() -> None:
    """Provider-health and ingest conditions are keyed provider.<condition> and ingest.<condition>."""
    for condition in PROVIDER_CONDITIONS:
        assert f"provider.{condition}" in RUNBOOKS
    for condition in INGEST_CONDITIONS:
        assert f"ingest.{condition}" in RUNBOOKS


def test_runbook_url_joins_base_and_anchor_with_one_slash() -> None:
    """The base may end with '/' or not; the URL keeps the path and the anchor unchanged."""
    expected = "https://docs.example.com/herald/docs/runbooks/providers.md#provider-latency-high"
    assert runbook_url("provider.latency_high", "https://docs.example.com/herald") == expected
    assert runbook_url("provider.latency_high", "https://docs.example.com/herald/") == expected
    assert (
        runbook_url("ingest.lag", "${runbook_base}") == "${runbook_base}/docs/runbooks/ingest.md#ingest-lag"
    )


def test_unknown_keys_raise_a_herald_error_naming_the_key() -> None:
    """An unmapped key or metric is refused with an error in Herald's hierarchy that names it."""
    with pytest.raises(UnknownRunbookError, match=r"volume\.sideways"):
        runbook_url("volume.sideways", "https://x")
    with pytest.raises(HeraldError, match="'cost'"):
        runbook_key("cost", "wobble")


def test_doctests_in_runbooks_module_pass() -> None:
    """The module's examples run as documented."""
    assert doctest.testmod(analytics.runbooks).failed == 0


def test_every_dashboard_panel_links_an_existing_runbook_heading() -> None:
    """Each panel of web/static/dashboard.html has a runbook link, and each link names an existing
    page and heading, with the anchor the dashboard's own runbook rendering gives that heading."""
    page_html = (ROOT / "web" / "static" / "dashboard.html").read_text()
    assert set(re.findall(r'data-panel="([^"]+)"', page_html)) == set(PANEL_RUNBOOKS)
    assert set(re.findall(r'data-testid="panel-([^"]+)"', page_html)) == set(PANEL_RUNBOOKS)
    for panel, key in PANEL_RUNBOOKS.items():
        path, _, anchor = panel_runbook_url(key, "").lstrip("/").partition("#")
        assert path.startswith("docs/runbooks/") and (ROOT / path).is_file(), f"{panel}: {path}"
        markdown = (ROOT / path).read_text()
        assert anchor in github_anchors(markdown), f"{panel}: no heading #{anchor} in {path}"
        headings = re.findall(r"^#{1,6}\s+(.*)$", markdown, flags=re.MULTILINE)
        assert anchor in {heading_anchor(h) for h in headings}, f"{panel}: {anchor}"


def test_doctests_in_dashboard_module_pass() -> None:
    """web/dashboard.py's examples (anchors, panel links) run as documented."""
    assert doctest.testmod(web.dashboard).failed == 0


def test_links_between_runbooks_resolve() -> None:
    """Every relative link in docs/runbooks names an existing page and, when anchored, its heading."""
    pages = sorted((ROOT / "docs" / "runbooks").glob("*.md"))
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if "://" in target:
                continue
            path, _, anchor = target.partition("#")
            linked = page.parent / path if path else page
            if not linked.is_file() or (anchor and anchor not in github_anchors(linked.read_text())):
                broken.append(f"{page.name} -> {target}")
    assert broken == []
