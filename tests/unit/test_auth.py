"""API keys: loading and validating the keys file, authentication, and role/tenant checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials

from herald.errors import ConfigError
from web.auth import (
    NO_KEYS,
    ApiAuth,
    KeyRing,
    Principal,
    Role,
    access_problem,
    entry_yaml,
    hash_key,
    load_key_ring,
    new_key,
)
from web.ratelimit import Limit

HASH = hash_key("k-viewer")


def write(tmp_path: Path, keys: object) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": keys}))
    return path


def entry(**over: str) -> dict[str, str]:
    return {"name": "acme-dash", "tenant": "acme", "role": "viewer", "key_sha256": HASH, **over}


def ring(tmp_path: Path) -> KeyRing:
    loaded = load_key_ring(
        write(
            tmp_path,
            [
                entry(),
                entry(name="ops", tenant="*", role="operator", key_sha256=hash_key("k-ops")),
                entry(name="bright", tenant="brightfix", role="analyst", key_sha256=hash_key("k-bright")),
            ],
        )
    )
    assert loaded is not None
    return loaded


def failure(path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load_key_ring(path)
    return str(err.value)


def test_a_listed_key_authenticates_as_its_principal(tmp_path: Path) -> None:
    """A presented key whose hash is listed yields that entry's name, tenant and role."""
    keys = ring(tmp_path)
    assert len(keys) == 3
    assert keys.authenticate("k-viewer") == Principal("acme-dash", "acme", Role.VIEWER)
    assert keys.authenticate("k-ops") == Principal("ops", "*", Role.OPERATOR)


def test_an_unlisted_key_or_a_hash_presented_as_key_is_refused(tmp_path: Path) -> None:
    """Only the key itself authenticates; its stored hash is not a key."""
    keys = ring(tmp_path)
    assert keys.authenticate("k-unknown") is None
    assert keys.authenticate(HASH) is None
    assert keys.authenticate("") is None


def test_no_configured_file_means_no_key_ring() -> None:
    """An unset HERALD_API_KEYS_FILE loads nothing (the API then answers 503)."""
    assert load_key_ring(None) is None


def test_global_scope_for_a_viewer_is_refused_naming_file_entry_and_field(tmp_path: Path) -> None:
    """tenant "*" with role viewer is reported as <file>: keys[i].tenant: reason."""
    path = write(tmp_path, [entry(), entry(name="wide", tenant="*", key_sha256=hash_key("x"))])
    message = failure(path)
    assert message.startswith(f"{path}: keys[1].tenant: ")
    assert '"*" (global) is only allowed for operator or admin, not viewer' in message


def test_global_scope_for_an_analyst_is_refused(tmp_path: Path) -> None:
    """Global scope is for operator and admin only."""
    assert "keys[0].tenant" in failure(write(tmp_path, [entry(tenant="*", role="analyst")]))


def test_bad_fields_are_each_named_with_their_reason(tmp_path: Path) -> None:
    """An unknown role, a malformed hash and a missing name are all reported with their entry index."""
    path = write(
        tmp_path,
        [entry(role="superuser"), entry(name="b", key_sha256="not-a-hash"), {"tenant": "a", "role": "admin"}],
    )
    message = failure(path)
    assert "keys[0].role: Input should be 'viewer', 'analyst', 'operator' or 'admin'" in message
    assert "keys[1].key_sha256: String should match pattern" in message
    assert "keys[2].name: Field required" in message
    assert "not-a-hash" not in message  # hashes are not echoed back


def test_a_plaintext_key_field_is_refused(tmp_path: Path) -> None:
    """Entries hold only hashes: an extra field such as ``key`` is an error, not silently kept."""
    assert "keys[0].key: Extra inputs are not permitted" in failure(write(tmp_path, [entry(key="secret")]))


def test_duplicate_names_and_repeated_keys_are_refused(tmp_path: Path) -> None:
    """Two entries may not share a name or a key (the principal would be ambiguous)."""
    path = write(tmp_path, [entry(), entry(tenant="other"), entry(name="c", tenant="x")])
    message = failure(path)
    assert "keys[1].name: duplicate of keys[0] ('acme-dash')" in message
    assert "keys[1].key_sha256: the same key as keys[0]" in message
    assert "keys[2].key_sha256: the same key as keys[0]" in message


def test_missing_unreadable_or_empty_files_are_config_errors(tmp_path: Path) -> None:
    """A missing file, broken YAML and an empty key list each name the file."""
    missing = tmp_path / "absent.yaml"
    assert failure(missing).startswith(f"{missing}: cannot read API keys file")
    broken = tmp_path / "broken.yaml"
    broken.write_text("keys: [unclosed")
    assert failure(broken).startswith(f"{broken}: not valid YAML")
    assert "keys: List should have at least 1 item" in failure(write(tmp_path, []))


def test_a_generated_key_and_entry_load_back_as_that_principal(tmp_path: Path) -> None:
    """new_key gives a random key and an entry holding only its hash; the entry loads and matches."""
    key, new_entry = new_key("brightfix-ops", "brightfix", "analyst")
    assert key.startswith("hk_") and key not in entry_yaml(new_entry)
    assert new_entry["key_sha256"] == hash_key(key)
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n" + entry_yaml(new_entry))
    loaded = load_key_ring(path)
    assert loaded is not None
    assert loaded.authenticate(key) == Principal("brightfix-ops", "brightfix", Role.ANALYST)


def test_generating_a_global_viewer_key_is_refused() -> None:
    """new_key validates the entry like the loader does."""
    with pytest.raises(ConfigError, match="tenant"):
        new_key("wide", "*", "viewer")


def test_roles_are_ordered_and_scoped_keys_see_only_their_tenant() -> None:
    """A role covers the ones below it; a scoped key is refused for another tenant or every tenant."""
    analyst = Principal("a", "acme", Role.ANALYST)
    assert access_problem(analyst, Role.VIEWER, "acme") is None
    assert access_problem(analyst, Role.OPERATOR, "acme") == "role analyst is below operator"
    assert access_problem(analyst, Role.VIEWER, "brightfix") == "key a is scoped to tenant acme"
    assert access_problem(analyst, Role.VIEWER, None) == "key a is scoped to tenant acme"


def test_a_global_key_reaches_every_tenant_within_its_role() -> None:
    """An operator with "*" reads any tenant and all tenants, but not admin actions."""
    ops = Principal("ops", "*", Role.OPERATOR)
    assert access_problem(ops, Role.VIEWER, "anyone") is None
    assert access_problem(ops, Role.OPERATOR, None) is None
    assert access_problem(ops, Role.ADMIN, None) == "role operator is below admin"


def status_of(call: object) -> int:
    assert callable(call)
    with pytest.raises(HTTPException) as err:
        call()
    return err.value.status_code


def test_dependency_reads_bearer_or_x_api_key_and_refuses_missing_or_unknown(tmp_path: Path) -> None:
    """Authorization: Bearer and X-Api-Key both work; no key or an unknown one is 401."""
    auth = ApiAuth(ring(tmp_path))
    bearer = HTTPAuthorizationCredentials(scheme="Bearer", credentials="k-viewer")
    assert auth.principal(bearer=bearer).name == "acme-dash"
    assert auth.principal(api_key="k-ops").name == "ops"
    assert status_of(auth.principal) == 401
    assert status_of(lambda: auth.principal(api_key="wrong")) == 401


def test_without_keys_the_api_answers_503_and_sql_stays_open() -> None:
    """No keys file: analytics callers get 503 with the fix; /sql keeps its open behaviour."""
    auth = ApiAuth(None)
    with pytest.raises(HTTPException) as err:
        auth.principal(api_key="anything")
    assert (err.value.status_code, err.value.detail) == (503, NO_KEYS)
    assert auth.sql_principal(api_key=None) is None


def test_sql_needs_an_analyst_key_once_keys_are_configured(tmp_path: Path) -> None:
    """A viewer gets 403; a tenant analyst passes (its session is scoped), and so does a global operator."""
    auth = ApiAuth(ring(tmp_path))
    assert status_of(auth.sql_principal) == 401
    assert status_of(lambda: auth.sql_principal(api_key="k-viewer")) == 403
    assert auth.sql_principal(api_key="k-bright").tenant == "brightfix"
    assert auth.sql_principal(api_key="k-ops") == Principal("ops", "*", Role.OPERATOR)


def test_require_refuses_a_role_below_the_endpoint_with_403(tmp_path: Path) -> None:
    """A viewer is refused an operator-level dependency; an operator passes it."""
    need_operator = ApiAuth(ring(tmp_path)).require(Role.OPERATOR)
    assert status_of(lambda: need_operator(api_key="k-viewer")) == 403
    assert need_operator(api_key="k-ops").role is Role.OPERATOR


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def refusal(call: object) -> HTTPException:
    assert callable(call)
    with pytest.raises(HTTPException) as err:
        call()
    return err.value


def test_a_key_past_its_burst_gets_429_naming_the_limit_with_retry_after(tmp_path: Path) -> None:
    """Burst requests pass; the next is 429 with the limit and the whole seconds to wait; then it passes."""
    clock = FakeClock()
    auth = ApiAuth(ring(tmp_path), rate_per_s=0.5, rate_burst=3, clock=clock)
    for _ in range(3):
        assert auth.principal(api_key="k-viewer").name == "acme-dash"
    refused = refusal(lambda: auth.principal(api_key="k-viewer"))
    assert refused.status_code == 429
    assert refused.detail == "rate limit: 0.5 requests/s per key (burst 3); retry in 2 s"
    assert refused.headers == {"Retry-After": "2"}
    assert auth.principal(api_key="k-ops").name == "ops"  # another key has its own bucket
    clock.now = 2.0
    assert auth.principal(api_key="k-viewer").name == "acme-dash"


def test_sql_and_role_checked_dependencies_spend_the_same_key_bucket(tmp_path: Path) -> None:
    """/sql and require() go through principal(): one token per request, whichever guard runs."""
    auth = ApiAuth(ring(tmp_path), rate_per_s=1, rate_burst=2, clock=FakeClock())
    assert auth.sql_principal(api_key="k-ops") is not None
    assert auth.require(Role.OPERATOR)(api_key="k-ops").name == "ops"
    assert status_of(lambda: auth.sql_principal(api_key="k-ops")) == 429
    assert status_of(lambda: auth.require(Role.VIEWER)(api_key="k-ops")) == 429


def test_a_zero_rate_turns_the_per_key_limit_off(tmp_path: Path) -> None:
    """HERALD_API_RATE_PER_S=0: a key is never refused for its rate."""
    auth = ApiAuth(ring(tmp_path), rate_per_s=0, rate_burst=1, clock=FakeClock())
    assert all(auth.principal(api_key="k-viewer") for _ in range(500))


def test_unknown_keys_from_one_address_get_429_once_its_bucket_is_empty(tmp_path: Path) -> None:
    """Past the address's burst of unknown keys, even a valid key from there is not tried (a guess could
    not succeed); another address and a missing key are unaffected; the bucket refills."""
    clock = FakeClock()
    auth = ApiAuth(ring(tmp_path), auth_failures=Limit(rate=1, burst=2), clock=clock)
    guesses = [status_of(lambda: auth.principal(api_key="guess", client="10.0.0.9")) for _ in range(3)]
    assert guesses == [401, 401, 429]
    refused = refusal(lambda: auth.principal(api_key="k-viewer", client="10.0.0.9"))
    assert refused.detail == "rate limit: 1 unknown keys/s per client address (burst 2); retry in 1 s"
    assert refused.headers == {"Retry-After": "1"}
    assert status_of(lambda: auth.principal(client="10.0.0.9")) == 401  # no key: not a guess
    assert auth.principal(api_key="k-viewer", client="10.0.0.7").name == "acme-dash"
    clock.now = 1.0
    assert auth.principal(api_key="k-viewer", client="10.0.0.9").name == "acme-dash"


def test_without_keys_nothing_is_limited() -> None:
    """No keys file: /api/v1 stays 503 and open /sql is never 429, however often it is called."""
    auth = ApiAuth(None, rate_per_s=1, rate_burst=1, clock=FakeClock())
    assert {status_of(lambda: auth.principal(api_key="x")) for _ in range(50)} == {503}
    assert all(auth.sql_principal() is None for _ in range(50))
    with auth.sql_slot(None), auth.sql_slot(None), auth.sql_slot(None):
        pass


def test_sql_slot_refuses_a_key_with_too_many_queries_in_flight(tmp_path: Path) -> None:
    """A third /sql query of one key while two run is 429; another key runs; a finished or failed query
    gives its slot back."""
    auth = ApiAuth(ring(tmp_path), sql_concurrency_per_key=2)
    ops, other = Principal("ops", "*", Role.OPERATOR), Principal("admin", "*", Role.ADMIN)
    with auth.sql_slot(ops), auth.sql_slot(ops):
        with pytest.raises(HTTPException) as err, auth.sql_slot(ops):
            pass
        refused = err.value
        assert refused.status_code == 429 and refused.headers == {"Retry-After": "1"}
        assert (
            refused.detail == "concurrency limit: 2 /sql queries in flight per key; retry when one finishes"
        )
        with auth.sql_slot(other):
            assert auth.sql_slots.in_flight("admin") == 1
    with pytest.raises(RuntimeError), auth.sql_slot(ops):
        raise RuntimeError("query failed")
    assert auth.sql_slots.in_flight("ops") == 0


def test_refusals_are_counted_by_reason_only(tmp_path: Path) -> None:
    """Each 429 counts once under key, ip or sql_concurrency; no key name or address becomes a label."""
    auth = ApiAuth(
        ring(tmp_path), rate_per_s=1, rate_burst=1, sql_concurrency_per_key=1,
        auth_failures=Limit(rate=1, burst=1), clock=FakeClock(),
    )  # fmt: skip
    auth.principal(api_key="k-viewer")
    status_of(lambda: auth.principal(api_key="k-viewer"))
    status_of(lambda: auth.principal(api_key="guess", client="10.0.0.9"))
    status_of(lambda: auth.principal(api_key="guess", client="10.0.0.9"))
    status_of(lambda: auth.principal(api_key="guess", client="10.0.0.9"))
    ops = Principal("ops", "*", Role.OPERATOR)
    with auth.sql_slot(ops), pytest.raises(HTTPException), auth.sql_slot(ops):
        pass
    assert auth.refusals.counts() == {"key": 1, "ip": 2, "sql_concurrency": 1}
    [family] = auth.refusals.collect()
    assert family.name == "herald_api_rate_limited"
    assert [(s.name, s.labels, s.value) for s in family.samples] == [
        ("herald_api_rate_limited_total", {"reason": "key"}, 1),
        ("herald_api_rate_limited_total", {"reason": "ip"}, 2),
        ("herald_api_rate_limited_total", {"reason": "sql_concurrency"}, 1),
    ]
