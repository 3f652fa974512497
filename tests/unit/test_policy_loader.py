"""Guardrails files: the example loads, problems name file, field and reason, versions hash content."""

from __future__ import annotations

import copy
import doctest
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from herald.errors import ConfigError
from policies.loader import PolicyError, load_policy, load_policy_text

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "examples" / "guardrails.yaml"


def example_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return data


def problems_of(tmp_path: Path, data: dict[str, Any]) -> list[str]:
    path = tmp_path / "guardrails.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    return [f"{p.field}: {p.reason}" for p in caught.value.problems]


def test_example_policy_loads_with_routing_for_every_simulated_tenant() -> None:
    """The shipped example is valid and routes every simulator tenant on every channel."""
    loaded = load_policy(EXAMPLE)
    assert len(loaded.version) == 12
    for tenant in ("acme-home", "brightfix", "northwind-utilities", "tiny-plumbing"):
        for channel in ("EMAIL", "SMS", "PUSH"):
            assert loaded.policy.providers_for(tenant, channel)
    assert loaded.policy.providers_for("northwind-utilities", "sms") == ["sms-secondary", "sms-primary"]


def test_field_error_names_file_field_path_and_reason(tmp_path: Path) -> None:
    """A negative price is reported as file: providers.sms[1].price_micros: reason."""
    data = example_data()
    data["providers"]["sms"][1]["price_micros"] = -5
    path = tmp_path / "guardrails.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert str(caught.value) == (
        f"{path}: providers.sms[1].price_micros: Input should be greater than or equal to 0"
    )


def test_a_price_above_the_contracts_cost_bound_is_refused(tmp_path: Path) -> None:
    """A price past 10^12 micros would make SENT events the lifecycle contract refuses at emit time."""
    data = example_data()
    data["providers"]["sms"][1]["price_micros"] = 10**12 + 1
    path = tmp_path / "guardrails.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"providers\.sms\[1\]\.price_micros: Input should be less than"):
        load_policy(path)


def test_unknown_keys_are_rejected_not_ignored(tmp_path: Path) -> None:
    """A typo in a key is an error (extra fields are forbidden everywhere)."""
    data = example_data()
    data["breaker"]["open_eror_rate"] = 0.4
    assert problems_of(tmp_path, data) == ["breaker.open_eror_rate: Extra inputs are not permitted"]


def test_routing_to_an_unknown_provider_is_rejected(tmp_path: Path) -> None:
    """A tenant's provider list may only name providers of that channel."""
    data = example_data()
    data["routing"]["tenants"]["northwind-utilities"]["sms"] = ["sms-secondary", "smtp-primary"]
    (problem,) = problems_of(tmp_path, data)
    assert problem.startswith(
        "routing.tenants.northwind-utilities.sms[1]: unknown sms provider 'smtp-primary'"
    )


def test_recovery_threshold_must_be_below_open_threshold(tmp_path: Path) -> None:
    """Hysteresis needs recovery_error_rate < open_error_rate."""
    data = example_data()
    data["breaker"]["recovery_error_rate"] = 0.5
    (problem,) = problems_of(tmp_path, data)
    assert problem.startswith("breaker.recovery_error_rate: must be below open_error_rate (0.5)")


def test_quiet_hours_timezone_must_exist(tmp_path: Path) -> None:
    """Time zones are checked against the IANA database."""
    data = example_data()
    data["tenants"]["brightfix"]["quiet_hours"]["timezone"] = "Europe/Atlantis"
    assert problems_of(tmp_path, data) == [
        "tenants.brightfix.quiet_hours.timezone: unknown IANA time zone 'Europe/Atlantis'"
    ]


def test_unquoted_yaml_time_is_explained(tmp_path: Path) -> None:
    """YAML reads 21:00 as the number 1260; the error says to quote it."""
    text = EXAMPLE.read_text().replace('start: "21:00"', "start: 21:00")
    path = tmp_path / "guardrails.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    (problem,) = caught.value.problems
    assert problem.field == "tenants.acme-home.quiet_hours.start"
    assert "quoted 'HH:MM'" in problem.reason


def test_money_budget_in_another_currency_than_prices_is_rejected(tmp_path: Path) -> None:
    """Budgets in money must be in the providers' currency."""
    data = example_data()
    data["campaigns"]["spring-tuneup"]["budget"]["currency"] = "EUR"
    assert problems_of(tmp_path, data) == [
        "campaigns.spring-tuneup.budget.currency: EUR differs from provider prices in USD"
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Several mistakes give one error listing all of them."""
    data = example_data()
    data["providers"]["email"][0]["currency"] = "usd"
    data["campaigns"]["onboarding"]["rate"]["per_minute"] = 0
    data["tenants"]["acme-home"]["slas"][0]["target"] = 1.5
    fields = [p.split(": ")[0] for p in problems_of(tmp_path, data)]
    assert fields == [
        "providers.email[0].currency",
        "campaigns.onboarding.rate.per_minute",
        "tenants.acme-home.slas[0].target",
    ]


def test_invalid_yaml_and_non_mapping_files_are_reported() -> None:
    """Syntax errors name the line; a file that is not a mapping says so."""
    with pytest.raises(PolicyError, match=r"^p.yaml: invalid YAML: line 3, column 1: expected"):
        load_policy_text("providers:\n  - [unclosed\n", source="p.yaml")
    with pytest.raises(PolicyError, match=r"^p.yaml: must be a mapping of sections, got empty$"):
        load_policy_text("", source="p.yaml")
    with pytest.raises(PolicyError, match=r"cannot read"):
        load_policy("/nonexistent/guardrails.yaml")


def test_version_ignores_formatting_and_key_order() -> None:
    """Reordering keys, reformatting as JSON or spelling out a default keeps the version."""
    original = load_policy(EXAMPLE)
    data = example_data()
    reordered = dict(reversed(list(data.items())))
    reordered["tenants"] = dict(reversed(list(data["tenants"].items())))
    as_json = json.dumps(reordered, indent=7)  # JSON is YAML too
    assert load_policy_text(as_json).version == original.version
    spelled = copy.deepcopy(data)
    spelled["tenants"]["brightfix"]["slas"][0]["window_days"] = 30  # the default
    assert load_policy_text(yaml.safe_dump(spelled)).version == original.version


def test_version_changes_with_content() -> None:
    """Any change of meaning, including provider order, changes the version."""
    original = load_policy(EXAMPLE).version
    data = example_data()
    data["campaigns"]["onboarding"]["rate"]["per_minute"] = 301
    assert load_policy_text(yaml.safe_dump(data)).version != original
    data = example_data()
    data["routing"]["default"]["email"].reverse()
    assert load_policy_text(yaml.safe_dump(data)).version != original


@pytest.mark.parametrize("name", ["models", "loader", "breaker", "limits", "sla"])
def test_doctests_in_policy_modules_pass(name: str) -> None:
    """Docstring examples of the policy cores run as written."""
    module = importlib.import_module(f"policies.{name}")
    assert doctest.testmod(module).failed == 0
