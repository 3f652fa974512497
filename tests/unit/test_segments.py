"""Segment rules: parsing, type checking, precise errors, pure evaluation and YAML loading."""

from __future__ import annotations

import doctest
from pathlib import Path
from typing import Any

import pytest

import policies.segment_parser
import policies.segment_rules
import policies.segments
from herald.errors import ConfigError
from policies.engagement import EngagementProfile
from policies.segments import ATTRIBUTES, RuleError, Segment, load_segments, parse_rule

DAY = 86_400_000
NOW = 1_700_000_000_000
EXAMPLES = Path(policies.segments.__file__).parent / "examples" / "segments.yaml"

GOLD_ES = {"id": "r-1", "kind": "CUSTOMER", "tier": "gold", "role": None, "language": "es", "country": "US"}
INSTALLER_CA = {
    "id": "r-2",
    "kind": "TECHNICIAN",
    "tier": None,
    "role": "installer",
    "language": "fr",
    "country": "CA",
}
ENGAGED = EngagementProfile(
    sent=20, delivered=18, opened=9, clicked=3, replied=1, bounced=2, complained=0,
    last_open=NOW - 2 * DAY, last_click=NOW - 10 * DAY, last_reply=NOW - 40 * DAY,
)  # fmt: skip


def matches(
    rule: str, recipient: dict[str, Any] | None = None, profile: EngagementProfile | None = None
) -> bool:
    return Segment.parse("test", rule).matches(recipient if recipient is not None else GOLD_ES, profile, NOW)


def rule_error(rule: str) -> RuleError:
    with pytest.raises(RuleError) as caught:
        parse_rule(rule, "gold_es")
    return caught.value


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ('tier == "gold"', True),
        ('tier != "gold"', False),
        ('tier in ("gold", "platinum")', True),
        ('tier not in ("gold", "platinum")', False),
        ('language == "es" and country == "US"', True),
        ('kind == "customer"', True),
        ('KIND == "Customer" AND Country == "us"', True),
        ('role == "installer"', False),
        ('role != "installer"', True),
        ("true", True),
        ("false", False),
    ],
)
def test_text_attributes_compare_case_insensitively(rule: str, expected: bool) -> None:
    """Recipient text attributes support ==, !=, in and not in; values and keywords ignore case."""
    assert matches(rule) is expected


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("sent == 20", True),
        ("delivered != 18", False),
        ("opened > 8", True),
        ("clicked >= 4", False),
        ("replied < 2", True),
        ("bounces <= 1", False),
        ("complaints == 0", True),
        ("bounces in (1, 2, 3)", True),
        ("open_rate == 0.5", True),
        ("click_rate >= 0.1", True),
        ("click_rate > 0.2", False),
        ("unsubscribed", False),
        ("not unsubscribed", True),
        ("unsubscribed == false", True),
        ("unsubscribed != false", False),
    ],
)
def test_engagement_attributes_support_every_comparison(rule: str, expected: bool) -> None:
    """Counts, rates and the unsubscribed flag read the profile with all six comparison operators."""
    assert matches(rule, profile=ENGAGED) is expected


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("opened_within(30d)", True),
        ("opened_within(1d)", False),
        ("clicked_within(10d)", True),  # the boundary is inclusive
        ("clicked_within(239h)", False),
        ("replied_within(30d)", False),
        ("last_reply_within(41d)", True),
        ("last_open < 3d", True),
        ("last_click > 9d", True),
        ("last_reply >= 40d", True),
        ("last_reply <= 57600m", True),
        ("last_open > 172800s", False),
    ],
)
def test_time_since_functions_and_attributes_measure_from_now(rule: str, expected: bool) -> None:
    """*_within(d) and last_* compare the age of the latest event at now_ms with a duration."""
    assert matches(rule, profile=ENGAGED) is expected


def test_durations_convert_days_hours_minutes_and_seconds() -> None:
    """30d, 720h, 43200m and 2592000s are the same duration."""
    rules = ["opened_within(30d)", "opened_within(720h)", "opened_within(43200m)", "opened_within(2592000s)"]
    assert {parse_rule(r).value for r in rules} == {30 * DAY}  # type: ignore[union-attr]  # all Compare


def test_recipient_without_profile_has_zero_counts_and_never_engaged() -> None:
    """A missing profile reads as empty: zero counts, 0.0 rates, and never opened, clicked or replied."""
    assert matches("sent == 0 and bounces == 0 and click_rate == 0 and not unsubscribed")
    assert not matches("opened_within(3650d) or clicked_within(3650d) or replied_within(3650d)")
    assert matches("last_open > 3650d and not opened_within(30d)")


def test_missing_recipient_attributes_equal_nothing_and_differ_from_everything() -> None:
    """A technician has no tier: tier == x and tier in (...) are false, tier != x is true."""
    assert not matches('tier == "gold"', INSTALLER_CA)
    assert not matches('tier in ("gold")', INSTALLER_CA)
    assert matches('tier != "gold" and tier not in ("gold")', INSTALLER_CA)
    assert not matches('country == "US"', {})


@pytest.mark.parametrize(
    ("rule", "shape"),
    [
        (
            "unsubscribed or bounces > 1 and complaints > 0",
            "(unsubscribed or (bounces > 1 and complaints > 0))",
        ),
        ("not unsubscribed and bounces > 1", "(not unsubscribed and bounces > 1)"),
        ("not (unsubscribed and bounces > 1)", "not (unsubscribed and bounces > 1)"),
        (
            "(unsubscribed or bounces > 1) and complaints > 0",
            "((unsubscribed or bounces > 1) and complaints > 0)",
        ),
        ("not not unsubscribed", "not not unsubscribed"),
    ],
)
def test_precedence_is_not_then_and_then_or(rule: str, shape: str) -> None:
    """not binds tighter than and, and tighter than or; parentheses override."""
    assert str(parse_rule(rule)) == shape


def test_parentheses_change_the_result() -> None:
    """The same atoms give different answers with and without parentheses."""
    assert matches("true or true and false")
    assert not matches("(true or true) and false")
    assert matches("not false and true")
    assert not matches("not (false or true)")


def test_rules_from_the_brief_parse_and_evaluate() -> None:
    """The issue's example rules work on realistic recipients."""
    assert matches('tier in ("gold", "platinum") and language == "es"')
    kind_rule = 'kind == "technician" and role == "installer" and country in ("US", "CA",)'
    assert matches(kind_rule, INSTALLER_CA) and not matches(kind_rule)
    assert matches("opened_within(30d) and click_rate >= 0.1", profile=ENGAGED)
    assert matches("bounces < 3 and not unsubscribed", profile=ENGAGED)
    assert not matches("last_reply_within(7d)", profile=ENGAGED)


@pytest.mark.parametrize(
    ("rule", "column", "fragment"),
    [
        (
            'tier in ("gold") and langauge == "es"',
            22,
            "unknown attribute 'langauge' at column 22 (did you mean 'language'?)",
        ),
        (
            "opend_within(3d)",
            1,
            "unknown function 'opend_within' at column 1 (did you mean 'opened_within'?)",
        ),
        ("tier == 5", 9, "text attribute 'tier' cannot be compared with 5"),
        ("tier == gold", 9, "expected a quoted string but found gold"),
        ('tier < "a"', 6, "operator '<' does not apply to text attribute 'tier'"),
        ("last_open == 30d", 11, "operator '==' does not apply to duration 'last_open'"),
        ("bounces > 2d", 11, "count 'bounces' cannot be compared with 2d"),
        ("unsubscribed == 1", 17, "flag 'unsubscribed' cannot be compared with 1"),
        ("click_rate > 10", 14, "rate 10 is outside 0..1"),
        (
            'kind == "techncian"',
            9,
            "unknown recipient kind \"techncian\" at column 9 (did you mean 'technician'?)",
        ),
        ("bounces", 1, "'bounces' is a count, not a condition"),
        ("opened_within", 1, "'opened_within' is a function"),
        ("opened_within(30)", 15, "expected a duration such as 30d"),
        ("opened_within(30days)", 15, "invalid number or duration '30days'"),
        ("bounces < 2.5.1", 11, "invalid number or duration '2.5.1'"),
        ('tier = "gold"', 6, "'=' is not an operator"),
        ('tier == "gold', 9, "unterminated string"),
        ('(tier == "gold"', 16, "expected ')' but found end of rule"),
        ("bounces < 3 extra", 13, "expected 'and', 'or' or the end of the rule but found 'extra'"),
        ('country not "US"', 13, "expected 'in' after 'not'"),
        ('country in "US"', 12, "expected '(' to start a list"),
        ("bounces < 3 and", 16, "expected a condition but found end of rule"),
        ("tier.upper()", 5, "unexpected character '.'"),
        ("   ", 1, "empty rule"),
        ("not " * 40 + "true", 129, "rule nests deeper than 32 levels"),
        ("true or " * 50 + "true", 401, "rule has more than 50 conditions"),
    ],
)
def test_errors_name_the_segment_the_problem_and_the_column(rule: str, column: int, fragment: str) -> None:
    """Every error is a ConfigError with a 1-based column, the rule text and a caret under the column."""
    error = rule_error(rule)
    assert isinstance(error, ConfigError)
    assert error.column == column
    first, text, caret = str(error).split("\n")
    assert first.startswith("segment gold_es: ") and fragment in first
    assert f"at column {column}" in first
    assert text == "  " + rule and caret == "  " + " " * (column - 1) + "^"


def test_caret_stays_aligned_on_multi_line_rules() -> None:
    """Newlines in a YAML folded rule are shown as spaces so the caret points at the column."""
    error = rule_error('tier == "gold"\nand langauge == "es"')
    _, text, caret = str(error).split("\n")
    assert text[caret.index("^") :].startswith("langauge")


@pytest.mark.parametrize(
    "rule",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "eval('1')",
        "open('/etc/passwd')",
        "tier.__class__",
        "lambda: 1",
        "[x for x in ()]",
        "tier == 'a' if True else 1",
        "1 + 1",
        'tier == "a"; import os',
    ],
)
def test_a_rule_cannot_execute_python(rule: str) -> None:
    """Python syntax is just an error: there is no eval, no attribute access and no calls but ours."""
    rule_error(rule)


def test_example_segments_load_and_classify_realistic_recipients() -> None:
    """policies/examples/segments.yaml loads; its segments pick the recipients they describe."""
    segments = load_segments(EXAMPLES)
    assert {"gold_customers_es", "installers_us", "dormant_customers", "engaged_technicians"} <= set(segments)
    assert segments["gold_customers_es"].matches(GOLD_ES, None, NOW)
    assert not segments["installers_us"].matches(INSTALLER_CA, None, NOW)
    assert segments["installers_north_america"].matches(INSTALLER_CA, None, NOW)
    dormant = EngagementProfile(delivered=5, opened=1, last_open=NOW - 45 * DAY)
    assert segments["dormant_customers"].matches(GOLD_ES, dormant, NOW)
    assert not segments["dormant_customers"].matches(GOLD_ES, ENGAGED, NOW)
    replied = EngagementProfile(replied=1, last_reply=NOW - DAY)
    assert segments["engaged_technicians"].matches(INSTALLER_CA, replied, NOW)
    assert all(s.definition.description for s in segments.values())


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("segments: [{name: a, rule: 'bounces <'}]", "segments[0].rule: segment a: expected a number"),
        ("segments: [{name: a, rule: 'true'}, {name: a, rule: 'true'}]", "segments[1].name: duplicate"),
        ("segments: [{name: a}]", "segments[0].rule: Field required"),
        ("segments: [{name: a, rule: 'true', owner: x}]", "segments[0].owner: Extra inputs"),
        ("segments: [{name: 'Gold ES', rule: 'true'}]", "segments[0].name: String should match"),
        ("segments: [{name: a, rule: ''}]", "segments[0].rule: String should have at least 1 character"),
        ("segment: []", "segments: Field required"),
        ("", "file: Input should be a valid dictionary"),
        ("segments: [", "not valid YAML"),
    ],
)
def test_loading_errors_name_the_file_the_field_and_the_reason(
    tmp_path: Path, text: str, fragment: str
) -> None:
    """A bad segments file raises ConfigError ``<file>: <field>: <reason>``."""
    path = tmp_path / "segments.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_segments(path)
    assert str(caught.value).startswith(f"{path}: ") and fragment in str(caught.value)


def test_missing_segments_file_is_a_config_error(tmp_path: Path) -> None:
    """A path that does not exist is reported, not a raw OSError."""
    with pytest.raises(ConfigError, match="cannot read segments file"):
        load_segments(tmp_path / "absent.yaml")


def test_segment_names_are_validated() -> None:
    """Segment.parse checks the name as the YAML loader does."""
    with pytest.raises(ConfigError, match="segment Gold ES: name"):
        Segment.parse("Gold ES", "true")


def test_every_attribute_is_documented_in_the_reference() -> None:
    """docs/segments.md lists every attribute and function the parser accepts."""
    reference = (Path(__file__).parents[2] / "docs" / "segments.md").read_text()
    for name in [*ATTRIBUTES, *policies.segments.FUNCTIONS]:
        assert f"`{name}" in reference, name


@pytest.mark.parametrize("module", [policies.segments, policies.segment_rules, policies.segment_parser])
def test_doctests_in_segment_modules_pass(module: Any) -> None:
    """The docstring examples run."""
    assert doctest.testmod(module).failed == 0
