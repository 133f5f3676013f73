"""``connector check`` asks Usedesk: the agents the settings name exist, and who there is.

The command runs in-process (``cli.main``) against the Usedesk sandbox serving on a loopback
port in its own thread, as it would against Usedesk; each test reads what a person would see.
The scheme warnings compare the config with the schemes of calls stored by ``connector
replay``, the way an installed service stores them.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from connector_core import cli
from connector_core.simulator import scenarios
from plugins.usedesk.sandbox import UsedeskSandbox
from plugins.usedesk.sandbox.app import create_app
from tests.store_backends import StoreBackend

pytestmark = pytest.mark.e2e
ACCOUNT = "012345"
TOKEN = "check-token-0123456789"
EXIT_OK, EXIT_CHECK_FAILED = 0, 1
PATH = f"accounts.{ACCOUNT}.integrations.usedesk"


class SandboxThread:
    """The sandbox on 127.0.0.1 in a thread of its own: ``cli.main`` runs its own loop."""

    def __init__(self) -> None:
        self.sandbox = UsedeskSandbox()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner = web.AppRunner(create_app(self.sandbox), access_log=None)
        self.url = ""

    async def _start(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> SandboxThread:
        self.thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def usedesk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxThread]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONNECTOR_CONFIG", raising=False)
    with SandboxThread() as served:
        yield served


def write_config(folder: Path, usedesk: SandboxThread, settings: str) -> Path:
    path = folder / "connector.toml"
    path.write_text(
        f"""
[storage]
path = "connector.db"
[accounts.{ACCOUNT}]
token = "{TOKEN}"
[accounts.{ACCOUNT}.integrations.usedesk]
api_token = "{usedesk.sandbox.token}"
base_url = "{usedesk.url}"
rate_limit_per_minute = 1000
burst_per_second = 100
{settings}
""",
        encoding="utf-8",
    )
    path.chmod(0o600)  # as `connector init` writes it: check warns about any other mode
    return path


def run_check(capsys: pytest.CaptureFixture[str], config: Path) -> tuple[int, list[str]]:
    """``connector check``: its exit code and the lines it printed."""
    code = cli.main(["check", "--config", str(config)])
    out, err = capsys.readouterr()
    assert err == ""
    return code, out.splitlines()


@pytest.fixture
def check(
    usedesk: SandboxThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Callable[[str], tuple[int, list[str]]]:
    """Write the Usedesk settings into a config and run ``connector check`` on it."""
    return lambda settings: run_check(capsys, write_config(tmp_path, usedesk, settings))


def head(usedesk: SandboxThread, backend: StoreBackend) -> list[str]:
    store = Path.cwd().resolve() / "connector.db"  # the usedesk fixture's folder
    return [
        "configuration: ok",
        backend.unused_store_line(store),
        f"{ACCOUNT}/usedesk [usedesk]: ok (API key accepted by {usedesk.url})",
    ]


def test_hook_check_settings_all_good_lists_the_agents_and_whom_they_serve(
    usedesk: SandboxThread,
    check: Callable[[str], tuple[int, list[str]]],
    store_backend: StoreBackend,
) -> None:
    code, lines = check(
        """
users = [
  { extension = "201", agent = 1 },
  { extension = "202", agent = "Boris@Example.com" },
]
on_duty_user = "gleb@example.com"
"""
    )
    assert code == EXIT_OK
    assert lines == [
        *head(usedesk, store_backend),
        "  Usedesk agents (4; map extensions to their id or e-mail in `users`):",
        "         1  Анна Админова <anna@example.com>, admin: extension 201",
        "         2  Борис Операторов <boris@example.com>, employee: extension 202",
        "         3  Вера Продажина <vera@example.com>, employee: not mapped",
        "         4  Глеб Саппортов <gleb@example.com>, support: on duty",
    ]


def test_check_names_each_agent_usedesk_does_not_have_by_its_setting(
    usedesk: SandboxThread,
    check: Callable[[str], tuple[int, list[str]]],
    store_backend: StoreBackend,
) -> None:
    code, lines = check(
        """
users = [
  { extension = "201", agent = 1 },
  { extension = "202", agent = "nobody@example.com" },
  { extension = "203", agent = 77 },
]
on_duty_user = "ghost@example.com"
"""
    )
    assert code == EXIT_CHECK_FAILED
    listed = " (Usedesk's agents are listed below)"
    assert lines[:6] == [
        *head(usedesk, store_backend),
        f"  error: {PATH}.users[1].agent: no Usedesk agent has the e-mail nobody@example.com,"
        f" so extension 202 would own no ticket{listed}",
        f"  error: {PATH}.users[2].agent: no Usedesk agent has id 77,"
        f" so extension 203 would own no ticket{listed}",
        f"  error: {PATH}.on_duty_user: no Usedesk agent has the e-mail ghost@example.com,"
        f" so the on-duty agent would own no ticket{listed}",
    ]
    assert lines[6] == "  Usedesk agents (4; map extensions to their id or e-mail in `users`):"
    assert lines[7] == "         1  Анна Админова <anna@example.com>, admin: extension 201"


def test_check_an_unknown_on_duty_id_fails(check: Callable[[str], tuple[int, list[str]]]) -> None:
    code, lines = check("on_duty_user = 9")
    assert code == EXIT_CHECK_FAILED
    assert lines[3] == (
        f"  error: {PATH}.on_duty_user: no Usedesk agent has id 9, so the on-duty agent would"
        " own no ticket (Usedesk's agents are listed below)"
    )


def test_check_does_not_compare_settings_when_authorisation_fails(
    usedesk: SandboxThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, usedesk, "on_duty_user = 9")
    config.write_text(
        config.read_text(encoding="utf-8").replace(usedesk.sandbox.token, "wrong-token"),
        encoding="utf-8",
    )
    code, lines = run_check(capsys, config)
    assert code == EXIT_CHECK_FAILED
    assert len(lines) == 3 and lines[2].startswith(f"{ACCOUNT}/usedesk [usedesk]: auth_failed")


def replay(tmp_path: Path, config: Path, *calls: scenarios.Scenario) -> None:
    recording = tmp_path / "calls.jsonl"
    recording.write_text(
        "".join(
            json.dumps({"account": c.account, "params": e}, ensure_ascii=False) + "\n"
            for c in calls
            for e in c.events
        ),
        encoding="utf-8",
    )
    assert cli.main(["replay", str(recording), "--config", str(config)]) == EXIT_OK


def test_check_warns_about_scheme_names_no_stored_call_went_through(
    usedesk: SandboxThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    check: Callable[[str], tuple[int, list[str]]],
) -> None:
    settings = """
schemes = ["Входящая", "000-100"]
transfer_schemes = ["Продаджи"]
on_duty_user = 4
"""
    config = write_config(tmp_path, usedesk, settings)
    replay(tmp_path, config, scenarios.inbound_answered(), scenarios.scheme_transfer())
    capsys.readouterr()

    code, lines = check(settings)
    assert code == EXIT_OK  # a warning does not fail the check
    seen = "000-100 «Распределитель», 000-200 «Продажи», 000-913898 «Входящая»"
    assert lines[-1] == (
        f"  warning: {PATH}.transfer_schemes[0]: 'Продаджи' is no scheme the stored calls went"
        f" through; did you mean 'Продажи'? (a scheme is named by its number or its exact"
        f" name; seen: {seen})"
    )
    assert sum("warning" in line for line in lines) == 1


def test_check_with_no_stored_call_says_the_schemes_are_not_compared(
    check: Callable[[str], tuple[int, list[str]]],
) -> None:
    code, lines = check('schemes = ["Поддержка"]')
    assert code == EXIT_OK
    assert lines[-1] == (
        "  no stored call went through a scheme yet, so the scheme names in `schemes` and"
        " `transfer_schemes` cannot be compared with real ones"
    )
