"""The redaction core (herald/redact.py) and the structlog processor over it: each secret pattern, nested
structures, and rendered exceptions."""

from __future__ import annotations

import doctest
from pathlib import Path
from typing import Any

import pytest
import structlog

import herald.logging
import herald.redact
from herald.logging import redact_secrets
from herald.redact import is_secret_name, redact, redact_text
from herald.settings import mask_dsn
from web.auth import new_key

KEY, _ = new_key("acme-dash", "acme", "viewer")
OTHER_KEY, _ = new_key("ops", "*", "operator")


def test_a_herald_key_anywhere_in_text_becomes_hk_stars() -> None:
    """A key in a sentence, a path, a repr or bytes' repr keeps only its hk_ prefix."""
    for text in (f"refused {KEY} twice", f"/api/v1/{KEY}/x", repr({"k": KEY}), repr(KEY.encode())):
        redacted = redact_text(text)
        assert KEY not in redacted and KEY[3:] not in redacted
        assert "hk_***" in redacted


def test_words_that_only_resemble_keys_are_left_alone() -> None:
    """hk_ with a short tail, or glued to a word before it, is not a Herald key."""
    assert redact_text("hk_short") == "hk_short"
    assert redact_text("chk_" + "A" * 30) == "chk_" + "A" * 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.DEF-123", "Authorization: Bearer ***"),
        ("authorization=Basic dXNlcjpwYXNz", "authorization=Basic ***"),
        ("X-Api-Key: not-a-herald-key", "X-Api-Key: ***"),
        ("x-api-key=k1&tenant=acme", "x-api-key=***&tenant=acme"),
        ("sent with bearer eyJhbGciOi.x.y", "sent with bearer ***"),
        ("usage: Authorization: Bearer <key>", "usage: Authorization: Bearer ***"),
    ],
)
def test_bearer_tokens_and_api_key_headers_are_masked(text: str, expected: str) -> None:
    """The token after Bearer (any case) and Authorization / X-Api-Key header values become ***."""
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "dsn",
    [
        "https://ops:s3cret@ch.example:8443/herald",
        "http://u:a:b@h/x",
        "http://u:p@ss@h:1/db",
        "http://u:@h",
        "clickhouse+http://default:pw@10.0.0.1:8123",
        "http://h:8123/x@y",
        "http://u@h/x",
        "chdb:///data/warehouse",
    ],
)
def test_url_passwords_are_masked_as_mask_dsn_masks_them(dsn: str) -> None:
    """In any text, a URL's password is masked exactly as herald.settings.mask_dsn masks a DSN."""
    assert redact_text(dsn) == mask_dsn(dsn)
    assert redact_text(f"cannot open {dsn}: refused") == f"cannot open {mask_dsn(dsn)}: refused"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://h/db?user=ops&password=p1&x=1", "http://h/db?user=ops&password=***&x=1"),
        ("db_password=hunter2 next", "db_password=*** next"),
        ("{'api_key': 'k1', 'tenant': 'acme'}", "{'api_key': '***', 'tenant': 'acme'}"),
        ('{"client_secret": "two words"}', '{"client_secret": "***"}'),
        ("[(b'x-api-key', b'k1'), (b'host', b'h')]", "[(b'x-api-key', b'***'), (b'host', b'h')]"),
        ("access_token: abc", "access_token: ***"),
    ],
)
def test_values_named_like_secrets_are_masked_in_text(text: str, expected: str) -> None:
    """name=value, name: value, a dict's repr and a header pair's repr lose the value of a secret name."""
    assert redact_text(text) == expected


def test_hashes_idempotency_tokens_and_look_alike_names_stay_readable() -> None:
    """key_sha256 (a hash), dedup tokens and names merely containing a secret word are not secrets."""
    text = "key_sha256=9f86d0 insert_deduplication_token=p3-o17 token_count=5 api_keys=/etc/keys.yaml"
    assert redact_text(text) == text
    assert not any(is_secret_name(n) for n in ("key_sha256", "dedup_token", "tokens", "api_keys", "key"))
    assert all(is_secret_name(n) for n in ("password", "PASSWD", "x-api-key", "Authorization", "apikey"))


def test_values_under_secret_keys_are_masked_whole() -> None:
    """A mapping's value under a secret-looking key becomes *** whatever its type; None and booleans stay."""
    event = {"password": "hunter2", "api_key": {"nested": KEY}, "token": 1234, "secret": None, "cookie": True}
    assert redact(event) == {
        "password": "***",
        "api_key": "***",
        "token": "***",
        "secret": None,
        "cookie": True,
    }


def test_nested_dicts_lists_and_tuples_are_redacted_at_every_depth() -> None:
    """Strings inside dicts in lists in tuples, and header pairs, are redacted; the shape is kept."""
    event: dict[str, Any] = {
        "event": "api.called",
        "requests": [({"url": "http://u:pw@h/x", "keys": [KEY, "ok"]}, 3)],
        "headers": [("authorization", f"Bearer {KEY}"), ("accept", "*/*")],
        "deep": {"a": {"b": {"c": [f"see {OTHER_KEY}"]}}},
    }
    assert redact(event) == {
        "event": "api.called",
        "requests": [({"url": "http://u:***@h/x", "keys": ["hk_***", "ok"]}, 3)],
        "headers": [("authorization", "***"), ("accept", "*/*")],
        "deep": {"a": {"b": {"c": ["see hk_***"]}}},
    }


def test_objects_are_redacted_through_their_repr_only_when_it_carries_a_secret() -> None:
    """An exception with a DSN becomes its redacted repr; a Path without secrets stays the Path itself."""
    path = Path("/var/herald")
    redacted = redact({"error": RuntimeError("cannot open http://ops:pw@h/db"), "dir": path})
    assert redacted == {"error": "RuntimeError('cannot open http://ops:***@h/db')", "dir": path}
    assert redacted["dir"] is path


def test_a_clean_event_comes_back_equal() -> None:
    """Events without secrets are unchanged: same keys, same values, same types."""
    event = {"event": "warehouse.flushed", "rows": 10, "rate": 0.5, "ok": True, "when": None, "t": ("a", 1)}
    assert redact(event) == event


def test_cyclic_structures_are_redacted_without_endless_recursion() -> None:
    """A list that contains itself is redacted through its repr once it is too deep to walk."""
    loop: list[Any] = [KEY]
    loop.append(loop)
    assert KEY not in str(redact({"loop": loop}))


def test_the_processor_redacts_a_rendered_exception_even_one_with_locals() -> None:
    """Message, notes and frame locals of a rendered exception (a cause chain too) are redacted."""

    def fail() -> None:
        presented = KEY  # noqa: F841 - a local a traceback with locals would show
        try:
            raise OSError(f"refused {OTHER_KEY}")
        except OSError as exc:
            error = RuntimeError("cannot open http://ops:s3cret@warehouse:8123/herald")
            error.add_note(f"X-Api-Key: {KEY}")
            raise error from exc

    with_locals = structlog.processors.ExceptionRenderer(
        structlog.tracebacks.ExceptionDictTransformer(show_locals=True)
    )
    try:
        fail()
    except RuntimeError as exc:
        rendered = with_locals(None, "error", {"event": "x.failed", "exc_info": exc})
    assert KEY in str(rendered) and "s3cret" in str(rendered)  # what would have been written
    redacted = redact_secrets(None, "error", rendered)
    assert KEY not in str(redacted) and OTHER_KEY not in str(redacted) and "s3cret" not in str(redacted)
    assert redacted["exception"][0]["exc_value"] == "cannot open http://ops:***@warehouse:8123/herald"
    assert redacted["exception"][1]["exc_value"] == "refused hk_***"


def test_doctests_in_the_redaction_and_logging_modules_pass() -> None:
    """The examples in the docstrings run and hold."""
    for module in (herald.redact, herald.logging):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
