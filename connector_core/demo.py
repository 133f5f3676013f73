"""``connector demo``: the service on its embedded defaults, wired to a Usedesk sandbox.

A newcomer sees the product work without any account: the bundled in-memory Usedesk starts
on one loopback port, the service on another, simulated Sipuni calls go in over HTTP, and a
table shows the clients, tickets, owners and comments they became. A Sipuni sandbox stands in
for Sipuni's API: the demo reads its schemes, as ``connector check`` does, and asks it to call
the missed caller back from 101, whose webhooks then come in like any call's.
"""

from __future__ import annotations

import asyncio
import html
import re
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from connector_core import public_url
from connector_core.app import RedactingAccessLogger, create_app
from connector_core.appkeys import STORE
from connector_core.config import AccountConfig, parse_config_text
from connector_core.hooks import PluginHost
from connector_core.settings_check import read_sipuni_schemes
from connector_core.simulator import scenarios as sc
from connector_core.simulator.sender import send_calls
from connector_core.simulator.sipuni_sandbox import SipuniSandbox
from connector_core.sipuni_api import SipuniApi

TOKEN = "demo-token-change-me-0000"
# The agent page of 101 (docs/notifications.md): the demo's cards and «Перезвонить» to try.
AGENT_TOKEN = "demo-agent-101-change-me"
ACCOUNT = "012345"
# The missed call of demo_calls(): the demo's click-to-call rings 101, then this client.
MISSED_CLIENT = "79035550011"
CONFIG = """
[server]
host = "127.0.0.1"
port = {port}

[storage]
path = "{db}"

[tracker]
finish_settle_seconds = 1

[accounts.012345]
token = "{token}"
default_region = "RU"
sipuni_api_key = "{sipuni_key}"
sipuni_api_url = "{sipuni_url}"
agents = {{ "101" = "{agent_token}" }}

[accounts.012345.integrations.usedesk]
api_token = "{sandbox_token}"
base_url = "{sandbox_url}"
notifications = true
# The calls come 20× faster than in life; the local sandbox has no per-IP throttle to spare.
burst_per_second = 20
users = [{{ extension = "101", agent = 2 }}, {{ extension = "102", agent = 3 }},
         {{ extension = "103", agent = "anna@example.com" }}]
on_duty_user = 4

[accounts.012345.integrations.amocrm_stub]
transfer_schemes = ["Продажи"]
"""


def demo_calls() -> list[sc.Scenario]:
    """A morning at a small support desk: one call of each kind, one repeat caller."""
    start = sc.START
    return [
        sc.inbound_answered(
            ["101", "102"], "101", client="89161234567", start=start, call_id=f"{start}.1"
        ),
        sc.inbound_missed(
            ["102", "101"],
            client="79035550011",
            start=start + 60,
            call_id=f"{start + 60}.2",
            ring_gap=1,
        ),
        sc.outbound_answered(
            employee="102", client="+79265550003", start=start + 120, call_id=f"{start + 120}.3"
        ),
        sc.inbound_transferred(
            first="101",
            to="103",
            client="79161234567",
            start=start + 300,
            call_id=f"{start + 300}.4",
        ),
        sc.internal(from_ext="101", to_ext="102", start=start + 400, call_id=f"{start + 400}.5"),
        sc.scheme_transfer(client="79995550005", start=start + 500, call_id=f"{start + 500}.6"),
    ]


def _text(message: str) -> str:
    """A comment's HTML as one line of plain text."""
    text = re.sub(r"<br\s*/?>|</p>", " · ", message)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return re.sub(r"(\s*·\s*)+", " · ", text).strip(" ·")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def render(state: dict[str, Any]) -> str:
    """The sandbox's clients, tickets, owners and call comments, for people."""
    agents = {a["id"]: a["name"] for a in state["agents"]}
    clients = {c["id"]: c for c in state["clients"]}
    client_rows = [
        [str(c["id"]), c["name"], ", ".join(p["phone"] for p in c["phones"])]
        for c in state["clients"]
    ]
    ticket_rows, comment_rows = [], []
    for t in state["tickets"]:
        # A ticket made at the call's end carries that call's comment as its first message.
        mark = t.get("additional_id") or "\0"
        calls = [c for c in t["comments"] if not c["is_first"] or mark in c["message"]]
        ticket_rows.append(
            [
                str(t["id"]),
                clients.get(t["client_id"], {}).get("name", "?"),
                t["subject"],
                t["status"],
                agents.get(t["assignee_id"], "—"),
                ", ".join(t["tags"]),
                str(len(calls)),
            ]
        )
        comment_rows += [[str(t["id"]), _text(c["message"])[:110]] for c in calls]
    return "\n\n".join(
        [
            "Clients\n" + _table(client_rows, ["id", "name", "phones"]),
            "Tickets\n"
            + _table(ticket_rows, ["id", "client", "subject", "status", "owner", "tags", "calls"]),
            "Call comments (private)\n" + _table(comment_rows, ["ticket", "comment"]),
        ]
    )


async def _until_processed(app: web.Application) -> None:
    async with asyncio.timeout(60):
        while True:
            stats = await app[STORE].stats()
            if stats["inbox_pending"] == 0 and stats["dispatches_pending"] == 0:
                return
            await asyncio.sleep(0.2)


async def run(
    *, port: int = 8080, sandbox_port: int = 8091, speed: float = 20.0, keep_running: bool = True
) -> str:
    """Run the demo; returns the table it printed."""
    try:
        from plugins.usedesk.sandbox import UsedeskSandbox
    except ImportError:  # pragma: no cover - the bundled plugin is part of the package
        raise SystemExit("the demo needs the bundled Usedesk plugin (plugins.usedesk)") from None
    sandbox = UsedeskSandbox()
    # The click-to-call's webhooks come as fast as the simulated calls'.
    sipuni = SipuniSandbox(account=ACCOUNT, speed=max(speed, 1.0))
    with tempfile.TemporaryDirectory(prefix="connector-demo-") as tmp:
        async with (
            sandbox.serve(port=sandbox_port) as sandbox_url,
            sipuni.serve() as sipuni_url,
        ):
            host = PluginHost()
            host.load(["usedesk", "amocrm_stub"])
            text = CONFIG.format(
                port=port,
                db=Path(tmp) / "connector.db",
                token=TOKEN,
                sandbox_token=sandbox.token,
                sandbox_url=sandbox_url,
                sipuni_key=sipuni.key,
                sipuni_url=sipuni_url,
                agent_token=AGENT_TOKEN,
            )
            config = parse_config_text(text, types=host.types, origin="<demo>")
            # On disk while the demo runs, so that `connector calls` and `trace` can read
            # what it did (the folder and everything in it go when it stops).
            config_file = Path(tmp) / "connector.toml"
            config_file.write_text(text, encoding="utf-8")
            app = create_app(config, host=host)
            runner = web.AppRunner(app, access_log_class=RedactingAccessLogger)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", port)
            await site.start()
            url = public_url.base_url(config.server)
            webhook = public_url.webhook_url(config.server, ACCOUNT, TOKEN)
            try:
                print(f"connector is serving on {url} (webhook: {webhook})")
                print(f"Usedesk sandbox on {sandbox_url} (state: {sandbox_url}/_sandbox/state)")
                agent_page = public_url.agent_page_url(config.server, ACCOUNT, "101", AGENT_TOKEN)
                print(f"Agent page of extension 101: {agent_page}")
                calls = demo_calls()
                print(f"Sending {len(calls)} simulated Sipuni calls ({speed:g}× real time)…\n")
                await send_calls(webhook, calls, speed=speed, stagger=0.3, method="mixed")
                sipuni.webhook_url = webhook
                print(await _click_to_call(config.accounts[ACCOUNT], sipuni_url))
                await sipuni.settled()
                await _until_processed(app)
                table = render(sandbox.snapshot())
                print(table)
                print(NEXT_STEPS)
                if keep_running:
                    print(WHILE_SERVING.format(url=url, config=config_file))
                    await asyncio.Event().wait()
                return table
            finally:
                await runner.cleanup()


async def _click_to_call(account: AccountConfig, api_url: str) -> str:
    """Read the sandbox's schemes and call the missed caller back from 101; what happened."""
    schemes = await read_sipuni_schemes(account)
    names = ", ".join(f"«{s.name}»" for s in schemes.schemes or [])
    if account.sipuni_api_key is None:  # the demo's config sets it
        return "no Sipuni sandbox key: no click-to-call"
    async with SipuniApi(
        account=ACCOUNT, key=account.sipuni_api_key.get_secret_value(), base_url=api_url
    ) as api:
        started = await api.call_number(MISSED_CLIENT, "101")
    return (
        f"Sipuni sandbox on {api_url}: schemes {names or schemes.problem};"
        f" click-to-call {started.callback_id}: 101 is rung, then {MISSED_CLIENT}.\n"
    )


NEXT_STEPS = """
That was the Usedesk sandbox. To use your real Usedesk and Sipuni:
  1. `connector init` asks for your Sipuni account number and the Usedesk API channel key
     (checked at once), makes a secret webhook token and writes connector.toml (every
     setting: docs/configuration.md and docs/usedesk.md);
  2. `connector check` tells you what is wrong before anything runs;
  3. `connector serve`, and set Sipuni's «События на АТС» URL to
     https://<your host>/sipuni/<your token>."""

WHILE_SERVING = """
While the demo runs:
  more simulated calls: `connector simulate --url {url} --token {token}`
  what the connector did with each call: `connector calls --config {config}`, then
  `connector trace <call id> --config {config}`
Still serving; send your own events, or Ctrl-C to stop.""".replace("{token}", TOKEN)
