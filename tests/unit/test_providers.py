"""Provider adapters without a network: error classification, requests and results, fault plans, the
message record, and the local runner's configuration."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import pytest
from pydantic import ValidationError

import providers.base
import providers.local.faults
import providers.local.record
import providers.sms_http
import providers.smtp
from providers.base import (
    ERROR_CLASSES,
    ProviderAdapter,
    SendRequest,
    SendResult,
    classify_http,
    classify_smtp,
    is_retryable,
    message_id_for,
)
from providers.local.faults import Fault, FaultInjector, FaultPlan, decide
from providers.local.record import MessageLog
from providers.local.run import LocalProviders, build, parse_args
from providers.sms_http import HttpSmsAdapter, classify_http_error
from providers.smtp import IDEMPOTENCY_HEADER, SmtpAdapter, classify_smtp_error
from schemas.bounds import ERROR_CODE_MAX_CHARS, ERROR_MESSAGE_MAX_CHARS
from schemas.contract import contract_violations
from simulator.model import ERRORS, SEND_TIME_ERRORS


def email(key: str = "n-1", **kw: Any) -> SendRequest:
    fields: dict[str, Any] = {
        "idempotency_key": key,
        "tenant_id": "acme-home",
        "channel": "EMAIL",
        "recipient": "r-42@acme-home.herald.test",
        "template_id": "appointment-reminder",
        "template_version": 3,
        "body": "Your technician arrives at 10:00.",
    }
    return SendRequest(**{**fields, **kw})


# ---- error classes ---------------------------------------------------------------------------------


def test_error_classes_are_the_simulators_plus_unavailable() -> None:
    """Same names and retryability as the simulator's lifecycle events, so both land in the same series."""
    for name, retryable in ERROR_CLASSES.items():
        if name != "unavailable":
            assert ERRORS[name][2] is retryable
    assert set(ERROR_CLASSES) == {*SEND_TIME_ERRORS, "rejected", "invalid_recipient", "unavailable"}
    assert is_retryable("unavailable") and not is_retryable("rejected") and not is_retryable("no-such-class")


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (200, None, (None, False)),
        (201, None, (None, False)),
        (429, None, ("throttled", True)),
        (408, None, ("timeout", True)),
        (500, None, ("provider_5xx", True)),
        (503, "provider_5xx", ("provider_5xx", True)),
        (400, "rejected", ("rejected", False)),
        (400, "invalid_recipient", ("invalid_recipient", False)),
        (400, 21211, ("invalid_recipient", False)),  # Twilio: invalid 'To' number
        (404, None, ("rejected", False)),
        (422, "idempotency_key_reused", ("rejected", False)),
        (302, None, ("rejected", False)),
    ],
)
def test_classify_http(status: int, code: str | int | None, expected: tuple[str | None, bool]) -> None:
    assert classify_http(status, code) == expected


@pytest.mark.parametrize(
    ("code", "message", "stage", "expected"),
    [
        (250, "OK", "data", (None, False)),
        (451, "4.7.1 Rate limit exceeded", "data", ("throttled", True)),
        (450, "mailbox busy", "rcpt", ("throttled", True)),
        (421, "4.3.2 Service not available", "data", ("provider_5xx", True)),
        (421, "too many connections", "connect", ("provider_5xx", True)),
        (452, "4.3.1 Insufficient system storage", "mail", ("provider_5xx", True)),
        (554, "5.7.1 Message rejected", "data", ("rejected", False)),
        (550, "5.1.1 user unknown", "rcpt", ("invalid_recipient", False)),
        (550, "no such user", "rcpt", ("invalid_recipient", False)),
        (553, "mailbox name not allowed", "rcpt", ("invalid_recipient", False)),
        (550, "5.1.1 user unknown", "data", ("invalid_recipient", False)),
        (550, "5.7.1 spam", "data", ("rejected", False)),
        (553, "5.1.8 bad sender domain", "mail", ("rejected", False)),
        (554, "no service", "connect", ("rejected", False)),
    ],
)
def test_classify_smtp(code: int, message: str, stage: Any, expected: tuple[str | None, bool]) -> None:
    assert classify_smtp(code, message, stage) == expected


REFUSED_RCPT = aiosmtplib.SMTPRecipientRefused(550, "user unknown", "a@b.test")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (aiosmtplib.SMTPDataError(451, "4.7.1 Rate limit exceeded"), ("throttled", True, "451")),
        (aiosmtplib.SMTPDataError(421, "4.3.2 Service not available"), ("provider_5xx", True, "421")),
        (aiosmtplib.SMTPDataError(554, "5.7.1 Message rejected"), ("rejected", False, "554")),
        (aiosmtplib.SMTPRecipientsRefused([REFUSED_RCPT]), ("invalid_recipient", False, "550")),
        (aiosmtplib.SMTPSenderRefused(553, "5.1.8 bad sender", "x@y.test"), ("rejected", False, "553")),
        (aiosmtplib.SMTPConnectResponseError(421, "4.3.2 busy"), ("provider_5xx", True, "421")),
        (aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response"), ("timeout", True, None)),
        (aiosmtplib.SMTPConnectTimeoutError("Timed out connecting"), ("timeout", True, None)),
        (TimeoutError(), ("timeout", True, None)),
        (aiosmtplib.SMTPConnectError("Error connecting: [Errno 111] refused"), ("unavailable", True, None)),
        (aiosmtplib.SMTPServerDisconnected("Connection lost"), ("unavailable", True, None)),
        (ConnectionResetError(104, "reset"), ("unavailable", True, None)),
        (aiosmtplib.SMTPNotSupported("SMTPUTF8 not supported"), ("rejected", False, None)),
    ],
)
def test_classify_smtp_error(exc: BaseException, expected: tuple[str, bool, str | None]) -> None:
    classified = classify_smtp_error(exc)
    assert classified is not None
    assert classified[:3] == expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError(), ("timeout", True)),
        (aiohttp.ServerTimeoutError("read timeout"), ("timeout", True)),
        (aiohttp.ClientOSError(111, "Connect call failed"), ("unavailable", True)),
        (aiohttp.ServerDisconnectedError(), ("unavailable", True)),
        (ConnectionRefusedError(111, "refused"), ("unavailable", True)),
    ],
)
def test_classify_http_error(exc: BaseException, expected: tuple[str, bool]) -> None:
    classified = classify_http_error(exc)
    assert classified is not None
    assert classified[:2] == expected


def test_programming_errors_are_not_classified() -> None:
    """A bug is raised by the adapter, not disguised as a provider failure."""
    assert classify_smtp_error(ValueError("bug")) is None
    assert classify_http_error(KeyError("bug")) is None


# ---- requests and results --------------------------------------------------------------------------


def test_send_request_refuses_malformed_requests() -> None:
    with pytest.raises(ValueError, match="idempotency_key"):
        email("")
    with pytest.raises(ValueError, match="idempotency_key"):
        email("n-1\r\nBcc: x@y.test")  # would inject a header
    with pytest.raises(ValueError, match="channel"):
        email(channel="PUSH")
    with pytest.raises(ValueError, match="recipient"):
        email(recipient="")


def test_result_becomes_a_lifecycle_event() -> None:
    sent = SendResult("smtp-primary", True, "<n-1@herald>", None, False, 35, "250 accepted", "250")
    failed = SendResult("sms-primary", False, None, "provider_5xx", True, 12, "Service Unavailable", "503")
    assert (sent.event_type, sent.error_record()) == ("SENT", None)
    assert failed.event_type == "FAILED"
    assert failed.error_record() == {
        "error_class": "provider_5xx",
        "code": "503",
        "message": "Service Unavailable",
        "retryable": True,
    }


def test_a_long_provider_reply_is_cut_to_the_contracts_bounds() -> None:
    """A provider's 10,000-character reply and 100-character code still make a FAILED event the
    contract accepts."""
    result = SendResult("smtp-primary", False, None, "rejected", False, 12, "5" * 10_000, "x" * 100)
    error = result.error_record()
    assert error is not None
    assert (len(error["message"]), len(error["code"])) == (ERROR_MESSAGE_MAX_CHARS, ERROR_CODE_MAX_CHARS)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    event = {"event_id": "e1", "event_type": "FAILED", "occurred_at": at, "tenant_id": "acme",
             "notification_id": "n1", "channel": "EMAIL", "error": error}  # fmt: skip
    assert contract_violations(event, at) == []


def test_message_id_is_derived_from_the_idempotency_key() -> None:
    assert message_id_for("n-1") == message_id_for("n-1") == "<n-1@herald>"
    odd = message_id_for("tenant/notification 1@x")
    assert odd == message_id_for("tenant/notification 1@x") != message_id_for("tenant/notification 2@x")
    assert odd.startswith("<k-") and odd.endswith("@herald>") and " " not in odd


def test_smtp_message_carries_the_idempotency_key() -> None:
    adapter = SmtpAdapter("smtp-primary", "127.0.0.1", 25, sender="noreply@herald.test")
    msg = adapter.build_message(email("n-7", metadata={"subject": "Reminder"}))
    assert msg["Message-ID"] == "<n-7@herald>"
    assert msg[IDEMPOTENCY_HEADER] == "n-7"
    assert (msg["From"], msg["To"], msg["Subject"]) == (
        "noreply@herald.test",
        "r-42@acme-home.herald.test",
        "Reminder",
    )
    assert msg.get_content().strip() == "Your technician arrives at 10:00."


def test_adapters_implement_the_protocol_and_refuse_the_wrong_channel() -> None:
    import asyncio

    smtp, sms = SmtpAdapter("smtp-primary", "127.0.0.1", 25), HttpSmsAdapter("sms-primary", "http://x")
    assert isinstance(smtp, ProviderAdapter) and isinstance(sms, ProviderAdapter)
    assert (smtp.channel, sms.channel) == ("EMAIL", "SMS")
    with pytest.raises(ValueError, match="sends SMS"):
        asyncio.run(sms.send(email()))


# ---- fault plans -----------------------------------------------------------------------------------


def test_fault_plan_is_deterministic_per_seed() -> None:
    plan = FaultPlan(mode="error_rate", p=0.3, error="throttled", seed=11)
    a, b = FaultInjector(plan), FaultInjector(plan)
    run_a, run_b = [a.next() for _ in range(500)], [b.next() for _ in range(500)]
    assert run_a == run_b
    other = FaultInjector(plan.model_copy(update={"seed": 12}))
    assert [other.next() for _ in range(500)] != run_a
    hits = sum(f.action == "error" for f in run_a)
    assert 110 <= hits <= 190  # p=0.3 of 500: 150 +- 4 sd
    assert {f.error for f in run_a if f.action == "error"} == {"throttled"}


def test_replacing_the_plan_restarts_its_rng() -> None:
    plan = FaultPlan(mode="drop", p=0.5, seed=3)
    injector = FaultInjector(plan)
    before = [injector.next() for _ in range(50)]
    injector.set(FaultPlan(mode="5xx"))
    assert injector.next() == Fault("error", "provider_5xx")
    injector.set(plan)
    assert [injector.next() for _ in range(50)] == before


@pytest.mark.parametrize(
    ("plan", "fault"),
    [
        (FaultPlan(), Fault("accept")),
        (FaultPlan(mode="ok", p=0.0), Fault("accept")),
        (FaultPlan(mode="5xx"), Fault("error", "provider_5xx")),
        (FaultPlan(mode="reject"), Fault("error", "rejected")),
        (FaultPlan(mode="error_rate", error="invalid_recipient"), Fault("error", "invalid_recipient")),
        (FaultPlan(mode="error_rate", error="timeout"), Fault("hang")),
        (FaultPlan(mode="slow", delay_ms=250), Fault("slow", delay_ms=250)),
        (FaultPlan(mode="hang"), Fault("hang")),
        (FaultPlan(mode="drop"), Fault("drop")),
    ],
)
def test_each_mode_decides_its_fault(plan: FaultPlan, fault: Fault) -> None:
    assert decide(plan, 0.0) == fault
    assert decide(plan.model_copy(update={"p": 0.5}), 0.7) == Fault("accept")  # outside the share p


@pytest.mark.parametrize(
    "body",
    [{"mode": "flaky"}, {"mode": "drop", "p": 1.5}, {"mode": "error_rate", "error": "boom"}, {"delay": 5}],
)
def test_invalid_fault_plans_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FaultPlan.model_validate(body)


# ---- the record ------------------------------------------------------------------------------------


def test_record_counts_sends_duplicates_replays_and_delivery() -> None:
    log = MessageLog()
    log.requests = 5
    first = log.accept("n-1", "m-1", "a@b.test", "acme", "f1", now=100.0)
    log.accept("n-1", "m-1", "a@b.test", "acme", "f1", now=101.0)  # the same key sent again
    log.replay(log.accept("n-2", "m-2", "a@b.test", "acme", "f2", now=100.0), now=102.0)
    log.accept("n-3", "m-3", "a@b.test", "acme", "f3", now=100.0, dropped=True)
    log.failed["throttled"] += 1
    stats = log.stats(now=100.1, deliver_after_s=0.5)
    assert stats == {
        "requests": 5,
        "accepted": 4,
        "unique": 3,
        "duplicates": 1,
        "replays": 1,
        "dropped": 1,
        "delivered": 0,
        "failed": {"throttled": 1},
        "hung": 0,
        "conflicts": 0,
    }
    assert (first.sends, first.first_at, first.last_at) == (2, 100.0, 101.0)
    assert log.stats(now=1e9, deliver_after_s=0.5)["delivered"] == 2  # the dropped one never
    by_key = {m["key"]: m for m in log.messages(now=1e9, deliver_after_s=0.5)}
    assert [by_key[k]["status"] for k in ("n-1", "n-2", "n-3")] == ["delivered", "delivered", "sent"]
    assert by_key["n-1"]["delivered_at"] == 100.5 and by_key["n-3"]["delivered_at"] is None


# ---- the runner's configuration --------------------------------------------------------------------


def test_runner_configuration_from_file_and_arguments(tmp_path: Path) -> None:
    config = tmp_path / "providers.yaml"
    config.write_text(
        "control_port: 9999\ndeliver_after_ms: 50\nproviders:\n"
        "  smtp-primary: {port: 2525, faults: {mode: slow, delay_ms: 300}}\n"
        "  sms-primary: {port: 8025}\n"
    )
    drop = 'sms-secondary={"mode": "drop"}'
    args = ["--config", str(config), "--port", "sms-primary=8026", "--fault", drop]
    lp = build(parse_args(args))
    assert list(lp.providers) == ["smtp-primary", "smtp-secondary", "sms-primary", "sms-secondary"]
    assert (lp["smtp-primary"].port, lp["sms-primary"].port, lp["smtp-secondary"].port) == (2525, 8026, 0)
    assert lp["smtp-primary"].faults == FaultPlan(mode="slow", delay_ms=300)
    assert lp["sms-secondary"].faults.mode == "drop" and lp["sms-primary"].faults == FaultPlan()
    assert lp.control_port == 9999 and lp["sms-primary"].deliver_after_s == 0.05
    with pytest.raises(ValueError, match="unknown providers"):
        LocalProviders(ports={"smtp-tertiary": 1})


MODULES_WITH_DOCTESTS = [providers.base, providers.smtp, providers.sms_http, providers.local.faults]


@pytest.mark.parametrize("module", [*MODULES_WITH_DOCTESTS, providers.local.record])
def test_doctests_pass(module: Any) -> None:
    assert doctest.testmod(module).failed == 0


def test_an_endpoints_file_is_read_from_the_ready_file_shape_and_bad_entries_name_the_field(
    tmp_path: Path,
) -> None:
    from herald.errors import ConfigError
    from providers.endpoints import adapters_for, load_endpoints

    good = tmp_path / "ready.json"
    good.write_text(
        '{"pid": 1, "endpoints": {"smtp-primary": {"channel": "EMAIL", "host": "127.0.0.1", "port": 2525},'
        ' "sms-primary": {"channel": "SMS", "url": "http://127.0.0.1:8081"}}}'
    )
    endpoints = load_endpoints(good)
    assert sorted(endpoints) == ["sms-primary", "smtp-primary"]
    assert {name: a.channel for name, a in adapters_for(endpoints).items()} == {
        "smtp-primary": "EMAIL",
        "sms-primary": "SMS",
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoints:\n  sms-primary: {channel: SMS, url: ftp://x}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: endpoints.sms-primary.url: an SMS provider needs"):
        load_endpoints(bad)
    bad.write_text("endpoints:\n  fax: {channel: FAX}\n")
    with pytest.raises(ConfigError, match=r"endpoints.fax.channel: 'FAX' is not EMAIL or SMS"):
        load_endpoints(bad)
