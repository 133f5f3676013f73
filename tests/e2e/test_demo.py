"""The README's first experience: ``connector demo`` and ``connector simulate``."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connector_core import demo
from connector_core.cli import KINDS, main
from connector_core.phones import normalize
from tests.e2e.process import ROOT, free_port

pytestmark = pytest.mark.e2e


async def test_demo_turns_simulated_calls_into_usedesk_tickets(capsys) -> None:
    table = await demo.run(
        port=free_port(), sandbox_port=free_port(), speed=100, keep_running=False
    )
    printed = capsys.readouterr().out
    assert table in printed and "connector is serving on http://127.0.0.1:" in printed
    tickets = table.split("Tickets\n")[1].split("\n\n")[0]
    # One new ticket per new caller and one for Мария's missed call, each with an owner; the
    # internal call made nothing.
    assert "Входящий звонок 79035550011" in tickets and "Исходящий звонок 79265550003" in tickets
    rows = [r for r in tickets.splitlines() if "sipuni" in r]
    assert len(rows) == 3 and all("—" not in r for r in rows)
    # No duplicate client: 79161234567 (called twice) is «Иван Петров», stored by an agent as
    # "+7 916 123-45-67"; his two calls went to his open ticket 5001.
    clients = table.split("Clients\n")[1].split("\n\n")[0]
    assert "Клиент 79161234567" not in clients and "Клиент 79035550011" not in clients
    numbers = [
        normalize(phone)
        for row in clients.splitlines()[2:]
        for cell in re.split(r"\s{2,}", row.strip())[2:]
        for phone in cell.split(", ")
    ]
    assert len(numbers) == len(set(numbers)) == 5
    [ivan] = [r for r in tickets.splitlines() if r.startswith("5001 ")]
    assert "Иван Петров" in ivan and ivan.split()[-1] == "2"
    comments = table.split("Call comments (private)\n")[1]
    assert comments.count("Входящий звонок: Отвечен") == 3
    assert "Входящий звонок: Пропущен" in comments and "Исходящий звонок: Отвечен" in comments
    assert "connector check" in printed  # how to point it at a real Usedesk
    assert "connector simulate" not in printed  # --once: nothing left serving to send to
    # The agent page can be tried too: its address, with the demo's agent token, is printed.
    [page] = re.findall(r"Agent page of extension 101: (\S+)", printed)
    assert page.endswith("/agent/?account=012345&extension=101&token=demo-agent-101-change-me")


async def test_the_running_demo_can_be_inspected_with_the_commands_it_names(capsys) -> None:
    """While it serves, the demo prints a config to give `connector calls` and `trace`: they
    read the demo's calls from its store. `--once` names neither (nothing is left to read)."""
    import asyncio

    running = asyncio.create_task(
        demo.run(port=free_port(), sandbox_port=free_port(), speed=100, keep_running=True)
    )
    printed = ""
    try:
        async with asyncio.timeout(120):
            while "Still serving" not in printed:
                assert not running.done()
                await asyncio.sleep(0.2)
                printed += capsys.readouterr().out
        [config] = re.findall(r"`connector calls --config (\S+)`", printed)
        assert f"`connector trace <call id> --config {config}`" in printed
        assert await asyncio.to_thread(main, ["calls", "--config", config]) == 0
        listed = capsys.readouterr().out
        assert "1717171700.1" in listed and "usedesk done" in listed
        assert await asyncio.to_thread(main, ["trace", "1717171700.1", "--config", config]) == 0
        assert "012345/usedesk: done" in capsys.readouterr().out
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert not Path(config).exists()  # the demo's folder goes with it


def test_a_demo_stopped_by_sigterm_leaves_no_store_behind() -> None:
    """A process manager's stop, or `kill`, cleans up as Ctrl-C does: the demo's store holds
    the simulated callers' numbers."""
    argv = ["demo", "--port", str(free_port()), "--sandbox-port", str(free_port())]
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector_core", *argv, "--speed", "100"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline, printed = time.monotonic() + 120, ""
        while "Still serving" not in printed and time.monotonic() < deadline:
            printed += proc.stdout.readline()
        [config] = re.findall(r"`connector calls --config (\S+)`", printed)
        assert Path(config).exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    assert not Path(config).parent.exists()


async def test_simulate_sends_every_kind_of_call(aiohttp_server, capsys) -> None:
    from aiohttp import web

    seen: list[dict[str, str]] = []

    async def sipuni(request: web.Request) -> web.Response:
        assert request.match_info["token"] == "tok-0123456789abcdef"
        seen.append(dict(request.query) or dict(await request.post()))
        return web.json_response({"success": True})

    app = web.Application()
    app.router.add_route("*", "/sipuni/{token}", sipuni)
    server = await aiohttp_server(app)
    import asyncio

    code = await asyncio.to_thread(
        main,
        [
            "simulate",
            "--url",
            str(server.make_url("")),
            "--token",
            "tok-0123456789abcdef",
            "--count",
            "7",
            "--speed",
            "1000",
            "--method",
            "POST",
        ],
    )
    assert code == 0
    out = capsys.readouterr().out
    assert f"sent 7 call(s), {len(seen)} webhook(s): {len(seen)} acknowledged, 0 refused" in out
    assert len({e["call_id"] for e in seen}) == 7
    assert {e["event"] for e in seen} == {"1", "2", "3", "4"}
    # Each call's id and kind, to trace it by.
    listed = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert {call_id for call_id, _ in listed} == {e["call_id"] for e in seen}
    assert [kind for _, kind in listed] == list(KINDS)
    assert "what became of each: `connector trace <call id>`" in out


async def test_simulate_with_a_wrong_token_says_where_the_right_one_is(
    aiohttp_server, capsys
) -> None:
    import asyncio

    from aiohttp import web

    async def sipuni(request: web.Request) -> web.Response:
        return web.json_response({"success": False, "error": "not found"}, status=404)

    app = web.Application()
    app.router.add_route("*", "/sipuni/{token}", sipuni)
    server = await aiohttp_server(app)
    argv = ["simulate", "--url", str(server.make_url("")), "--token", "wrong-token-00000000"]
    code = await asyncio.to_thread(main, [*argv, "--count", "1", "--speed", "1000"])
    assert code == 1
    out, err = capsys.readouterr()
    assert "what became of each" not in out  # nothing was taken
    assert err.splitlines()[-1] == (
        "404: the service has no account with this token; give the account's token"
        " (accounts.<number>.token in its config) with --token, or its config with --config"
    )


def test_simulate_with_nothing_listening_says_so_in_one_line(capsys) -> None:
    port = free_port()
    code = main(["simulate", "--url", f"http://127.0.0.1:{port}", "--count", "1"])
    assert code != 0
    err = capsys.readouterr().err
    assert err.startswith(f"cannot reach the service at http://127.0.0.1:{port}: ")
    assert "start it with `connector serve`" in err and "Traceback" not in err


async def test_simulate_sends_to_the_configured_service_as_its_account(
    aiohttp_server, capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a connector.toml and no --url or --token, simulate sends where the service
    listens, with the account's own token (the demo's token would get 404 there)."""
    import asyncio

    from aiohttp import web

    tokens: list[str] = []

    async def sipuni(request: web.Request) -> web.Response:
        tokens.append(request.match_info["token"])
        return web.json_response({"success": True})

    app = web.Application()
    app.router.add_route("*", "/sipuni/{token}", sipuni)
    server = await aiohttp_server(app, host="127.0.0.1")
    (tmp_path / "connector.toml").write_text(
        f'[server]\nhost = "0.0.0.0"\nport = {server.port}\n'
        '[accounts.012345]\ntoken = "first-account-token-0001"\n'
        '[accounts.054321]\ntoken = "other-account-token-0002"\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONNECTOR_CONFIG", raising=False)
    args = ["simulate", "--count", "1", "--speed", "1000"]
    assert await asyncio.to_thread(main, args) == 0
    assert await asyncio.to_thread(main, [*args, "--account", "054321"]) == 0
    assert tokens and set(tokens) == {"first-account-token-0001", "other-account-token-0002"}
    assert tokens[0] == "first-account-token-0001"
    capsys.readouterr()
    assert await asyncio.to_thread(main, [*args, "--account", "999999"]) == 2
    assert capsys.readouterr().err.strip() == (
        "--account 999999: no such account; the config has 012345, 054321"
    )
