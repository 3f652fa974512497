"""The adapters against the real local providers (aiosmtpd, aiohttp) on free ports: what was sent is
what the providers recorded, every fault mode gives its error class within the adapter's timeout, and
a stopped provider refuses connections at once. One test runs the providers as a child process and
drives them through the control API, as a drill does."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from herald.errors import HeraldError
from providers.base import ProviderAdapter, SendRequest, SendResult
from providers.local import DEFAULT_PROVIDERS, FaultPlan, LocalProviders, LocalProvidersProcess, adapters_for
from providers.sms_http import HttpSmsAdapter
from providers.smtp import SmtpAdapter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TIMEOUT_S = 0.5  # the adapters' timeout: hangs cost this much
DELIVER_AFTER_S = 0.05
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def request(key: str, channel: str = "EMAIL", body: str = "Your technician arrives at 10:00.") -> SendRequest:
    recipient = "r-42@acme-home.herald.test" if channel == "EMAIL" else "+15550100042"
    return SendRequest(key, "acme-home", channel, recipient, "appointment-reminder", 3, body)  # type: ignore[arg-type]


@asynccontextmanager
async def local_providers(**kwargs: Any) -> AsyncIterator[tuple[LocalProviders, dict[str, ProviderAdapter]]]:
    """The four providers in this loop and an adapter for each; closed (ports refused) on exit."""
    async with LocalProviders(deliver_after_s=DELIVER_AFTER_S, **kwargs) as lp:
        adapters = adapters_for(lp.endpoints(), TIMEOUT_S)
        try:
            yield lp, adapters
        finally:
            for adapter in adapters.values():
                await adapter.aclose()
    for provider in lp:
        assert refused(provider.host, provider.port), f"{provider.name} still listens"


def refused(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) != 0


def channel_of(name: str) -> str:
    return "EMAIL" if name.startswith("smtp") else "SMS"


async def control(lp: LocalProviders, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{lp.control_url}{path}", json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


def test_sends_through_both_adapters_are_recorded_and_counted() -> None:
    """Every accepted send is in its provider's record with its key; the control API counts match."""

    async def scenario() -> None:
        async with local_providers() as (lp, adapters):
            sent: dict[str, list[SendResult]] = {name: [] for name in adapters}
            plan = {"smtp-primary": 3, "smtp-secondary": 1, "sms-primary": 4, "sms-secondary": 2}
            for name, n in plan.items():
                for i in range(n):
                    sent[name].append(await adapters[name].send(request(f"{name}-n{i}", channel_of(name))))
            for name, results in sent.items():
                assert all(r.accepted and r.provider == name and r.error_class is None for r in results)
            assert [r.provider_message_id for r in sent["smtp-primary"]] == [
                f"<smtp-primary-n{i}@herald>" for i in range(3)
            ]
            listed = {p["name"]: p for p in await control(lp, "GET", "/providers")}
            assert list(listed) == ["smtp-primary", "smtp-secondary", "sms-primary", "sms-secondary"]
            for name, n in plan.items():
                counts = listed[name]["counts"]
                assert [counts[k] for k in ("requests", "accepted", "unique", "duplicates")] == [n, n, n, 0]
                assert listed[name]["up"] is True and listed[name]["port"] == lp[name].port
                messages = await control(lp, "GET", f"/providers/{name}/messages")
                assert sorted(m["key"] for m in messages) == [f"{name}-n{i}" for i in range(n)]
                assert {m["message_id"] for m in messages} == {r.provider_message_id for r in sent[name]}
                assert all(m["sends"] == 1 and m["tenant"] == "acme-home" for m in messages)
            assert {m["recipient"] for m in await control(lp, "GET", "/providers/smtp-primary/messages")} == {
                "r-42@acme-home.herald.test"
            }

    run(scenario())


def test_sms_idempotency_key_sends_once_and_counts_the_replay() -> None:
    async def scenario() -> None:
        async with local_providers() as (lp, adapters):
            sms = adapters["sms-primary"]
            first, again = await sms.send(request("n-1", "SMS")), await sms.send(request("n-1", "SMS"))
            assert first.accepted and again.accepted
            assert first.provider_message_id == again.provider_message_id
            assert (first.code, again.code) == ("201", "200")
            conflict = await sms.send(request("n-1", "SMS", body="another text"))  # same key, new content
            assert (conflict.accepted, conflict.error_class, conflict.retryable) == (False, "rejected", False)
            counts = lp["sms-primary"].info()["counts"]
            assert [counts[k] for k in ("accepted", "unique", "replays", "conflicts")] == [1, 1, 1, 1]
            [message] = lp["sms-primary"].messages()
            assert (message["key"], message["sends"], message["replays"]) == ("n-1", 1, 1)

    run(scenario())


def test_smtp_records_the_same_key_sent_twice() -> None:
    """SMTP has no idempotency: the server keeps both sends so a drill can count the double send."""

    async def scenario() -> None:
        async with local_providers() as (lp, adapters):
            smtp = adapters["smtp-primary"]
            results = [await smtp.send(request("n-1")) for _ in range(2)]
            assert all(r.accepted and r.provider_message_id == "<n-1@herald>" for r in results)
            counts = lp["smtp-primary"].info()["counts"]
            assert (counts["accepted"], counts["unique"], counts["duplicates"]) == (2, 1, 1)
            [message] = lp["smtp-primary"].messages()
            assert (message["key"], message["message_id"], message["sends"]) == ("n-1", "<n-1@herald>", 2)
            assert message["last_at"] >= message["first_at"]

    run(scenario())


FAULTS = [
    # plan, error class, retryable, accepted by the provider (recorded) although the answer failed
    (FaultPlan(mode="5xx"), "provider_5xx", True, False),
    (FaultPlan(mode="reject"), "rejected", False, False),
    (FaultPlan(mode="error_rate", error="throttled"), "throttled", True, False),
    (FaultPlan(mode="error_rate", error="invalid_recipient"), "invalid_recipient", False, False),
    (FaultPlan(mode="error_rate", error="timeout"), "timeout", True, False),
    (FaultPlan(mode="hang"), "timeout", True, False),
    (FaultPlan(mode="slow", delay_ms=2000), "timeout", True, True),  # answered too late, but sent
]


@pytest.mark.parametrize("name", ["smtp-primary", "sms-primary"])
@pytest.mark.parametrize(
    ("plan", "error_class", "retryable", "recorded"),
    FAULTS,
    ids=["5xx", "reject", "throttled", "invalid_recipient", "error_rate-timeout", "hang", "slow-too-late"],
)
def test_fault_modes_give_their_error_class(
    name: str, plan: FaultPlan, error_class: str, retryable: bool, recorded: bool
) -> None:
    async def scenario() -> None:
        async with local_providers(faults={name: plan}) as (lp, adapters):
            started = time.monotonic()
            result = await adapters[name].send(request("n-1", channel_of(name)))
            elapsed = time.monotonic() - started
            assert (result.accepted, result.error_class, result.retryable) == (False, error_class, retryable)
            assert result.provider_message_id is None and result.detail
            assert elapsed < TIMEOUT_S + 0.3 and result.latency_ms <= elapsed * 1000 + 1
            if error_class == "timeout":
                assert result.latency_ms >= TIMEOUT_S * 1000 - 20
            counts = lp[name].info()["counts"]
            assert counts["requests"] == 1 and counts["accepted"] == int(recorded)
            if plan.mode in ("5xx", "reject", "error_rate") and error_class != "timeout":
                assert counts["failed"] == {error_class: 1}

    run(scenario())


@pytest.mark.parametrize("name", ["smtp-primary", "sms-primary"])
def test_slow_within_the_timeout_is_accepted_late(name: str) -> None:
    async def scenario() -> None:
        async with local_providers(faults={name: FaultPlan(mode="slow", delay_ms=200)}) as (_, adapters):
            result = await adapters[name].send(request("n-1", channel_of(name)))
            assert result.accepted and 200 <= result.latency_ms < TIMEOUT_S * 1000

    run(scenario())


@pytest.mark.parametrize("name", ["smtp-primary", "sms-primary"])
def test_stopped_provider_is_unavailable_at_once_and_accepts_after_start(name: str) -> None:
    async def scenario() -> None:
        async with local_providers() as (lp, adapters):
            adapter, channel, port = adapters[name], channel_of(name), lp[name].port
            assert (await adapter.send(request("n-before", channel))).accepted
            await control(lp, "POST", f"/providers/{name}/stop")
            assert refused(lp[name].host, port)
            started = time.monotonic()
            down = await adapter.send(request("n-down", channel))
            assert time.monotonic() - started < 1.0
            assert (down.accepted, down.error_class, down.retryable) == (False, "unavailable", True)
            info = await control(lp, "GET", f"/providers/{name}")
            assert (info["up"], info["port"], info["stops"]) == (False, port, 1)
            await control(lp, "POST", f"/providers/{name}/start")
            up = await adapter.send(request("n-after", channel))
            assert up.accepted and lp[name].port == port
            assert sorted(m["key"] for m in lp[name].messages()) == ["n-after", "n-before"]  # history kept

    run(scenario())


@pytest.mark.parametrize("name", ["smtp-primary", "sms-primary"])
def test_stopping_a_provider_mid_request_drops_the_connection(name: str) -> None:
    """A request hanging when the provider dies ends at once as `unavailable`, not after the timeout."""

    async def scenario() -> None:
        async with local_providers(faults={name: FaultPlan(mode="hang")}) as (lp, _):
            # a patient adapter: the stop, not its timeout, ends the send
            patient: ProviderAdapter = (
                HttpSmsAdapter(name, lp[name].url, 5.0)
                if name.startswith("sms")
                else SmtpAdapter(name, lp[name].host, lp[name].port, 5.0)
            )
            try:
                sending = asyncio.create_task(patient.send(request("n-1", channel_of(name))))
                await asyncio.sleep(0.2)
                started = time.monotonic()
                await lp[name].stop()
                result = await sending
                assert time.monotonic() - started < 1.0
                assert (result.error_class, result.retryable) == ("unavailable", True)
            finally:
                await patient.aclose()

    run(scenario())


def test_dropped_sms_is_accepted_but_never_delivered() -> None:
    async def scenario() -> None:
        drop_half = FaultPlan(mode="drop", p=0.5, seed=1)
        async with local_providers(faults={"sms-primary": drop_half}) as (lp, adapters):
            sms = adapters["sms-primary"]
            assert isinstance(sms, HttpSmsAdapter)
            results = {f"n-{i}": await sms.send(request(f"n-{i}", "SMS")) for i in range(8)}
            assert all(r.accepted for r in results.values())
            dropped = {m["key"] for m in lp["sms-primary"].messages() if m["dropped_sends"]}
            assert 0 < len(dropped) < 8  # p=0.5 with this seed drops some, not all
            statuses: dict[str, str | None] = {}
            deadline = time.monotonic() + 0.5  # ten times the delivery delay
            while time.monotonic() < deadline:
                statuses = {k: await sms.status(r.provider_message_id or "") for k, r in results.items()}
                await asyncio.sleep(0.05)
            assert {k for k, s in statuses.items() if s == "sent"} == dropped
            assert {k for k, s in statuses.items() if s == "delivered"} == set(results) - dropped
            assert await sms.status("SMnosuchmessage") == "unknown"
            counts = lp["sms-primary"].info()["counts"]
            assert (counts["accepted"], counts["dropped"]) == (8, len(dropped))
            assert counts["delivered"] == 8 - len(dropped)

    run(scenario())


def test_dropped_email_stays_sent() -> None:
    async def scenario() -> None:
        async with local_providers(faults={"smtp-secondary": FaultPlan(mode="drop")}) as (lp, adapters):
            assert (await adapters["smtp-secondary"].send(request("n-1"))).accepted
            assert (await adapters["smtp-primary"].send(request("n-2"))).accepted
            await asyncio.sleep(DELIVER_AFTER_S * 4)
            assert [m["status"] for m in lp["smtp-secondary"].messages()] == ["sent"]
            assert [m["status"] for m in lp["smtp-primary"].messages()] == ["delivered"]

    run(scenario())


def test_error_rate_is_seeded_and_faults_change_at_runtime() -> None:
    """The same plan gives the same failures; PUT /faults takes effect on the next request."""

    async def failures(lp: LocalProviders, adapter: ProviderAdapter, prefix: str) -> list[int]:
        plan = {"mode": "error_rate", "p": 0.4, "seed": 5}
        await control(lp, "PUT", "/providers/sms-secondary/faults", plan)
        results = [await adapter.send(request(f"{prefix}-{i}", "SMS")) for i in range(30)]
        assert {r.error_class for r in results if not r.accepted} == {"provider_5xx"}
        return [i for i, r in enumerate(results) if not r.accepted]

    async def scenario() -> None:
        async with local_providers() as (lp, adapters):
            sms = adapters["sms-secondary"]
            first, second = await failures(lp, sms, "a"), await failures(lp, sms, "b")
            assert first == second and 0 < len(first) < 30
            counts = lp["sms-secondary"].info()["counts"]
            assert counts["failed"] == {"provider_5xx": 2 * len(first)}
            assert counts["accepted"] == 60 - 2 * len(first) and counts["requests"] == 60
            await control(lp, "PUT", "/providers/sms-secondary/faults", {"mode": "ok"})
            assert (await sms.send(request("c-1", "SMS"))).accepted
            async with aiohttp.ClientSession() as session:
                bad = f"{lp.control_url}/providers/sms-secondary/faults"
                async with session.put(bad, json={"mode": "flaky"}) as resp:
                    assert resp.status == 422
                async with session.get(f"{lp.control_url}/providers/smtp-tertiary") as resp:
                    assert resp.status == 404

    run(scenario())


def test_runner_process_is_driven_through_the_control_api(tmp_path: Path) -> None:
    """`python -m providers.local` as a drill runs it: stop/start/faults/messages from another process."""
    providers = LocalProvidersProcess(tmp_path / "providers.log", deliver_after_ms=50)
    providers.start(timeout=30)
    try:
        ctl, endpoints = providers.control, providers.endpoints
        assert [p["name"] for p in ctl.providers()] == list(DEFAULT_PROVIDERS)

        async def send_all(keys: list[str]) -> dict[str, SendResult]:
            adapters = adapters_for(endpoints, TIMEOUT_S)
            try:
                return {
                    f"{name}/{key}": await adapter.send(request(key, adapter.channel))
                    for name, adapter in adapters.items()
                    for key in keys
                }
            finally:
                for adapter in adapters.values():
                    await adapter.aclose()

        assert all(r.accepted for r in run(send_all(["n-1", "n-2"])).values())
        ctl.stop("smtp-primary")
        ctl.set_faults("sms-primary", FaultPlan(mode="error_rate", error="throttled"))
        outcomes = run(send_all(["n-3"]))
        assert outcomes["smtp-primary/n-3"].error_class == "unavailable"
        assert outcomes["sms-primary/n-3"].error_class == "throttled"
        assert outcomes["smtp-secondary/n-3"].accepted and outcomes["sms-secondary/n-3"].accepted
        ctl.start("smtp-primary")
        ctl.set_faults("sms-primary", {"mode": "ok"})
        assert all(r.accepted for r in run(send_all(["n-1"])).values())  # n-1 again: a double send on SMTP

        counts = ctl.counts()
        assert counts["smtp-primary"]["accepted"] == 3 and counts["smtp-primary"]["duplicates"] == 1
        assert counts["sms-primary"]["accepted"] == 2 and counts["sms-primary"]["replays"] == 1
        assert counts["sms-primary"]["failed"] == {"throttled": 1}
        assert counts["smtp-secondary"]["accepted"] == 4 and counts["sms-secondary"]["accepted"] == 3
        sends = {m["key"]: m["sends"] for m in ctl.messages("smtp-primary")}
        assert sends == {"n-1": 2, "n-2": 1}
        with pytest.raises(HeraldError, match="422"):
            ctl.set_faults("sms-primary", {"mode": "error_rate", "p": 2})
        ports = [spec["port"] for spec in endpoints.values()]
    finally:
        code = providers.stop()
    assert code == 0
    assert all(refused("127.0.0.1", port) for port in ports)
    assert not providers.ready_file.exists()
