"""A call through the real service into the Usedesk sandbox and the amoCRM stub, then
``connector calls`` and ``connector trace`` (real processes) on the same database: the
caller found by a number spelt otherwise, each hook attempt with its CRM requests, the
plugins' decisions, and no token anywhere in what they print or what is stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from connector_core import callrecords
from connector_core.cli import load
from connector_core.clock import FakeClock
from connector_core.simulator import scenarios
from plugins.usedesk.sandbox import UsedeskSandbox
from tests.e2e.process import ROOT
from tests.harness import app_for, settle
from tests.store_backends import StoreBackend

pytestmark = pytest.mark.e2e
ACCOUNT = "012345"
SIPUNI_TOKEN = "trace-sipuni-token-0123456789"
USEDESK_TOKEN = "trace-usedesk-api-token-0123456789"
AMO_TOKEN = "trace-amocrm-access-token-0123456789"
SECRETS = (SIPUNI_TOKEN, USEDESK_TOKEN, AMO_TOKEN)


def config_file(folder: Path, usedesk_url: str) -> Path:
    path = folder / "connector.toml"
    path.write_text(
        f"""
[storage]
path = "connector.db"
[tracker]
finish_settle_seconds = 0
[accounts.{ACCOUNT}]
token = "{SIPUNI_TOKEN}"
[accounts.{ACCOUNT}.integrations.usedesk]
api_token = "{USEDESK_TOKEN}"
base_url = "{usedesk_url}"
rate_limit_per_minute = 1000
burst_per_second = 100
users = [{{ extension = "101", agent = 2 }}, {{ extension = "102", agent = 3 }}]
on_duty_user = 4
[accounts.{ACCOUNT}.integrations.amocrm_stub]
subdomain = "acme"
access_token = "{AMO_TOKEN}"
users = {{ "101" = 5001 }}
""",
        encoding="utf-8",
    )
    return path


def connector(folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "connector_core", *argv, "--config", str(folder / "connector.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    for secret in SECRETS:
        assert secret not in done.stdout + done.stderr, (argv, secret)
    return done


async def test_calls_and_trace_tell_what_happened_to_a_call(
    tmp_path: Path, store_backend: StoreBackend
) -> None:
    sandbox = UsedeskSandbox(api_token=USEDESK_TOKEN)
    call = scenarios.inbound_answered(ring=["101", "102"], answered_by="101", client="89160000001")
    async with sandbox.serve() as usedesk_url:
        config, host = load(str(config_file(tmp_path, usedesk_url)))
        clock = FakeClock()
        app = app_for(config, host, clock=clock)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            # Usedesk fails the first ticket it is asked for: that hook call is retried.
            sandbox.faults.configure({"mode": "500", "count": 1, "paths": ["/create/ticket"]})
            for params in call.events:
                response = await client.get(f"/sipuni/{SIPUNI_TOKEN}", params=params)
                assert await response.json() == {"success": True}
            await settle(app)
            clock.advance(3600)  # past the retry's backoff
            await settle(app)

    listed = connector(tmp_path, "calls", "--phone", "8 (916) 000-00-01")
    assert listed.returncode == 0, listed.stderr
    _, row = listed.stdout.splitlines()
    assert call.call_id in row.split()
    assert row.endswith("usedesk done  amocrm_stub done")

    traced = connector(tmp_path, "trace", call.call_id, "--json")
    assert traced.returncode == 0, traced.stderr
    trace = json.loads(traced.stdout)
    assert trace["summary"]["number"] == "+79160000001"
    assert trace["state"]["outcome"] == "answered" and "events" not in trace["state"]
    # Sipuni's webhooks, in the order they arrived, each with its own timestamp.
    assert [e["params"] for e in trace["events"]] == call.events
    assert [e["timestamp"] for e in trace["events"]] == [int(p["timestamp"]) for p in call.events]
    assert [e["event_name"] for e in trace["events"]] == ["ring", "ring", "answer", "hangup"]

    usedesk, amo = trace["integrations"]
    assert (usedesk["integration"], usedesk["status"]) == (f"{ACCOUNT}/usedesk", "done")
    assert usedesk["routing"][0]["sees"] is True
    attempts = [(h["record"], h["attempt"], h["outcome"]) for h in usedesk["hook_calls"]]
    failed = next(h for h in usedesk["hook_calls"] if h["outcome"] == "retry")
    assert (failed["record"], failed["attempt"]) in {(r, 1) for r, _, _ in attempts}
    assert "500" in failed["error"] and failed["retry_at"] > failed["started_at"]
    assert (failed["record"], 2, "done") in attempts  # the retry went through
    assert [r["method"] for r in failed["requests"]][-1] == "create/ticket"
    assert failed["requests"][-1]["outcome"] == "server_error"
    requests = [r for h in usedesk["hook_calls"] for r in h["requests"]]
    assert [r["outcome"] for r in requests if r["method"] == "create/ticket"] == [
        "server_error",
        "ok",
    ]
    assert all(r["seconds"] >= 0 and r["at"] > 0 for r in requests)
    # The HTTP status and path of each request: the failed create, then the one that worked.
    made = [(r["status"], r["path"]) for r in requests if r["method"] == "create/ticket"]
    assert made == [(500, "POST /create/ticket"), (200, "POST /create/ticket")]
    # What Usedesk's plugin decided and why, with the ticket's link and the comment it wrote.
    [ticket] = [t for t in sandbox.snapshot()["tickets"] if t["additional_id"] == call.call_id]
    link = f"https://secure.usedesk.ru/tickets/{ticket['id']}"
    assert usedesk["link"] == link
    said = {d["what"]: d["why"] for d in usedesk["decisions"]}
    # The hooks ran after the hang-up here, so the ticket was made with owner and comment.
    assert said[f"new client, new ticket {ticket['id']}"] == (
        "no ticket in search_statuses; made once the call had ended, with its owner and comment"
    )
    assert said["owner 2"] == "answered (extension 101)"
    [comment] = [d for d in usedesk["decisions"] if d["what"].startswith("comment")]
    assert comment["link"] == link and call.call_id in comment["text"]

    assert (amo["integration"], amo["status"]) == (f"{ACCOUNT}/amocrm_stub", "done")
    assert amo["link"] == "https://acme.amocrm.ru/contacts/list/?term=79160000001"
    decisions = [f"{d['what']}: {d['why']}" for d in amo["decisions"]]
    assert (
        decisions[0] == "contact +79160000001: found or created by the caller's number (recorded)"
    )
    assert decisions[-1] == (
        "responsible user 5001: extension 101 answered (answered_owner = last) (recorded)"
    )
    assert [h["hook"] for h in amo["hook_calls"]] == [
        "connector_call_started",
        "connector_call_answered",
        "connector_call_finished",
    ]

    # And nothing stored for the call holds a token either.
    async with store_backend.opened() as store:
        records = await store.call_records(ACCOUNT, call.call_id)
    stored = "\n".join(callrecords.encode(r.entry) for r in records)
    assert "create/ticket" in stored
    for secret in SECRETS:
        assert secret not in stored
