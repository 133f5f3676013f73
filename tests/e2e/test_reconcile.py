"""Reconciliation end to end: the Sipuni sandbox sends 20 calls' webhooks to a running
connector but drops every webhook of 5 of them and the final hang-up of 2 more; reading
Sipuni's history records them, and the Usedesk sandbox ends with all 20 calls, once each."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from connector_core import app as service
from connector_core import calls_view, cli
from connector_core.appkeys import STORE, SUPERVISOR
from connector_core.config import parse_config_text
from connector_core.hooks import PluginHost
from connector_core.simulator import scenarios as sc
from connector_core.simulator.sipuni_sandbox import Delivery, SipuniSandbox
from plugins.usedesk.sandbox import UsedeskSandbox
from tests.e2e.test_usedesk_calls import eventually
from tests.e2e.usedesk_world import USERS, call_comments
from tests.harness import ACCOUNT, TOKEN, app_for, make_config, settle

pytestmark = pytest.mark.e2e
KEY = "0.sipuni-KEY-reconcile-7f3a"
AGENTS = {"101": 2, "102": 3}
ON_DUTY = 4
# Every webhook of these calls is lost: inbound answered, missed, outbound.
DROPPED = {2, 4, 9, 15, 19}
UNENDED = {5, 10}  # these lose their final hang-up: an answered call, a missed one


def _call(i: int, start: int) -> tuple[sc.Scenario, int]:
    """The i-th call (a mix of directions and outcomes, each from its own number) and the
    Usedesk agent who must own it."""
    client, at, call_id = f"7916100{i:04d}", start + 120 * i, f"{start + 120 * i}.{6000 + i}"
    kind = i % 4
    if kind in (0, 1):
        answerer = "102" if kind == 0 else "101"
        ring = ["101", "102"]
        answered = sc.inbound_answered(ring, answerer, client=client, start=at, call_id=call_id)
        return answered, AGENTS[answerer]
    if kind == 2:
        return sc.inbound_missed(client=client, start=at, call_id=call_id), ON_DUTY
    return sc.outbound_answered("102", client=client, start=at, call_id=call_id), AGENTS["102"]


@dataclass
class Setting:
    app: web.Application
    client: TestClient
    usedesk: UsedeskSandbox
    sipuni: SipuniSandbox
    config_path: Path

    async def reconcile(self) -> None:
        """One round of the service's reconciliation loop, then everything it caused."""
        await service.reconcile_round(self.app)()
        await settle(self.app)

    async def metric(self, missing: str) -> float:
        text = await (await self.client.get("/metrics")).text()
        found = re.search(
            rf'connector_reconciled_calls_total{{account="{ACCOUNT}",missing="{missing}"}} (\S+)',
            text,
        )
        assert found, text
        return float(found.group(1))

    def tickets_of_call(self, call_id: str) -> list[dict[str, Any]]:
        return [t for t in self.usedesk.snapshot()["tickets"] if t["additional_id"] == call_id]


@asynccontextmanager
async def setting(tmp_path: Path, *, settle_minutes: float = 10) -> AsyncIterator[Setting]:
    usedesk, sipuni = UsedeskSandbox(), SipuniSandbox(key=KEY, speed=2000.0)
    async with usedesk.serve() as usedesk_url, sipuni.serve() as sipuni_url:
        text = f"""
[storage]
path = "{tmp_path / "connector.db"}"
[tracker]
finish_settle_seconds = 0
[reconcile]
settle_minutes = {settle_minutes}
[accounts.{ACCOUNT}]
token = "{TOKEN}"
sipuni_api_key = "{KEY}"
sipuni_api_url = "{sipuni_url}"
[accounts.{ACCOUNT}.integrations.usedesk]
api_token = "{usedesk.token}"
base_url = "{usedesk_url}"
rate_limit_per_minute = 1000
burst_per_second = 100
users = {USERS}
on_duty_user = {ON_DUTY}
"""
        path = tmp_path / "connector.toml"
        path.write_text(text, encoding="utf-8")
        host = PluginHost()
        host.load()
        config = parse_config_text(text, types=host.types)
        app = app_for(config, host)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            sipuni.webhook_url = str(client.make_url(f"/sipuni/{TOKEN}"))
            yield Setting(app, client, usedesk, sipuni, path)


async def _play(s: Setting, calls: list[sc.Scenario], dropped: set[int], unended: set[int]) -> None:
    """The calls one after another, as they happened, each processed before the next."""
    for i, call in enumerate(calls):
        delivery: Delivery = (
            "none" if i in dropped else "no_final_hangup" if i in unended else "all"
        )
        s.sipuni.play(call, delivery)
        await s.sipuni.settled()
        await settle(s.app)


async def _cli(s: Setting, *args: str) -> int:
    return await asyncio.to_thread(
        cli.main, ["reconcile", "--config", str(s.config_path), "--since", "2h", *args]
    )


async def test_reconciliation_brings_every_call_to_usedesk_once_and_a_second_run_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = int(time.time()) - 3 * 3600 // 2  # every call over well before the settle margin
    calls, owners = zip(*(_call(i, start) for i in range(20)), strict=True)
    async with setting(tmp_path) as s:
        await _play(s, list(calls), DROPPED, UNENDED)
        # Without reconciliation the lost calls are nowhere, the unended ones have no comment.
        for i, call in enumerate(calls):
            tickets = s.tickets_of_call(call.call_id)
            if i in DROPPED:
                assert tickets == [], i
            elif i in UNENDED:
                assert all(call_comments(t) == [] for t in tickets), i
            else:
                assert len(tickets) == 1, i
        assert await s.metric("call") == 0 and await s.metric("end") == 0

        await s.reconcile()
        for i, (call, owner) in enumerate(zip(calls, owners, strict=True)):
            [ticket] = s.tickets_of_call(call.call_id)
            assert ticket["assignee_id"] == owner, i
            [comment] = call_comments(ticket)
            assert call.call_id in comment["message"], i
            comments = [c for t in s.usedesk.snapshot()["tickets"] for c in t["comments"]]
            assert sum(call.call_id in c["message"] for c in comments) == 1, i
        assert await s.metric("call") == len(DROPPED)
        assert await s.metric("end") == len(UNENDED)
        trace = await calls_view.load_trace(s.app[STORE], calls[2].call_id, ACCOUNT)
        assert any("reconciled from Sipuni's call history" in n for n in trace.notes)

        before = s.usedesk.snapshot()
        writes = len(s.usedesk.requests(writes_only=True))
        await s.reconcile()
        assert s.usedesk.snapshot() == before
        assert len(s.usedesk.requests(writes_only=True)) == writes
        assert await s.metric("call") + await s.metric("end") == 7

        capsys.readouterr()
        assert await _cli(s) == 0
        await settle(s.app)
        out = capsys.readouterr().out
        assert (
            "20 call(s) in Sipuni's history from" in out
            and ": 20 received whole, 0 never received" in out
        ), out
        assert "added to the inbox" not in out
        assert s.usedesk.snapshot() == before


async def test_the_cli_says_per_call_what_it_found_and_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = int(time.time()) - 3600
    calls = [_call(i, start)[0] for i in range(3)]
    async with setting(tmp_path) as s:
        await _play(s, calls, dropped={1}, unended={2})
        capsys.readouterr()

        assert await _cli(s, "--dry-run") == 0
        out = capsys.readouterr().out
        lines = out.splitlines()
        assert f"{calls[0].call_id} inbound {calls[0].events[0]['src_num']} →" in lines[0]
        assert lines[0].endswith("answered by 102: received whole: nothing to do")
        assert lines[1].endswith(": never received: would be recorded (3 webhook(s))")
        assert lines[2].endswith(": no final hang-up received: the hang-up would be recorded")
        assert "1 received whole, 1 never received (would be recorded from the history)" in out
        assert "1 without their final hang-up (would be recorded)" in out
        await settle(s.app)
        assert await s.app[STORE].load_call(ACCOUNT, calls[1].call_id) is None  # dry run

        assert await _cli(s) == 0
        out = capsys.readouterr().out
        assert ": never received: recorded from Sipuni's history (3 webhook(s))" in out
        assert ": no final hang-up received: the hang-up recorded from Sipuni's history" in out
        assert f"account {ACCOUNT}: 4 webhook(s) added to the inbox" in out
        await settle(s.app)
        for call in calls[1:]:
            state = await s.app[STORE].load_call(ACCOUNT, call.call_id)
            assert state is not None and state.finished_by == "hangup"
        assert KEY not in out


async def test_the_cli_says_why_it_cannot_read_sipunis_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with setting(tmp_path) as s:
        s.sipuni.key = "0.another-key-0000"  # Sipuni refuses the configured key
        assert await _cli(s) == 1
        err = capsys.readouterr().err
        assert f"connector reconcile: account {ACCOUNT}: Sipuni's call history could not" in err
        assert "AuthError: Sipuni refused statistic/export" in err and KEY not in err
        assert await _cli(s, "--account", "999999") == 1
        assert "account 999999 is not in the config (accounts: 012345)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("keyed", "section", "runs"),
    [(True, "", True), (False, "", False), (True, "[reconcile]\nenabled = false\n", False)],
)
async def test_the_background_run_goes_only_for_accounts_with_a_key_and_when_enabled(
    tmp_path: Path, keyed: bool, section: str, runs: bool
) -> None:
    sipuni = SipuniSandbox(key=KEY)
    async with sipuni.serve() as url:
        keys = f'sipuni_api_key = "{KEY}"\nsipuni_api_url = "{url}"\n' if keyed else ""
        config, host = make_config(tmp_path, keys, extra=section)
        app = service.create_app(config, host=host)
        async with TestClient(TestServer(app, host="127.0.0.1")):
            assert ("reconcile" in app[SUPERVISOR].loops) is runs
            if runs:
                await eventually(lambda: app[SUPERVISOR].loops["reconcile"].rounds >= 1)
                assert ("statistic/export",) == tuple(m for m, _ in sipuni.requests[:1])
