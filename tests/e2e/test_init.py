"""``connector init`` against the Usedesk sandbox on a loopback port, as against Usedesk.

The questions are answered by a script (``ScriptedAsker``) in-process, and once through the
real command with its answers piped to stdin; each written file is then read by the real
``connector check``. What a person would see is asserted word for word where it is ours.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector_core import cli, init_config
from connector_core.hooks import PluginHost
from connector_core.prompts import Questions, ScriptedAsker
from tests.e2e.process import free_port
from tests.e2e.test_usedesk_check import SandboxThread
from tests.store_backends import StoreBackend

pytestmark = pytest.mark.e2e
ACCOUNT = "012345"
PUBLIC_URL = "https://connector.example.com"
CORE = [ACCOUNT, PUBLIC_URL + "/", "", ""]  # account, public URL, listen host, port
KEY_PROMPT = "Usedesk API key («API-ключ»): "
# The web interface's address, asked for an API address of its own: Enter takes the guess.
WEB = ""
EXTENSIONS = ["201", "202, 205", "", "204"]  # Анна, Борис, Вера, Глеб
REFUSED_KEY = [
    "  This key does not work: Usedesk refused the API token on POST /users (HTTP 401): "
    "Invalid api token; check the API channel's secret key.",
    "  Copy the «API-ключ» of the Usedesk API channel and paste it again.",
]


@pytest.fixture
def usedesk() -> Iterator[SandboxThread]:
    """The sandbox on a loopback port, in a thread of its own: ``cli.main`` runs its own loop."""
    with SandboxThread() as served:
        yield served


def loaded_host() -> PluginHost:
    host = PluginHost()
    host.load(["usedesk", "amocrm_stub"])
    return host


def init(
    path: Path, answers: list[str], environ: dict[str, str] | None = None
) -> tuple[init_config.InitResult, ScriptedAsker]:
    """``connector init`` in-process, its questions answered by ``answers``."""
    asker = ScriptedAsker(answers)
    questions = Questions(asker, environ=environ or {})
    return asyncio.run(init_config.run(path, questions, loaded_host())), asker


def check(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, list[str]]:
    """The real ``connector check`` on the written file: exit code and printed lines."""
    capsys.readouterr()
    code = cli.main(["check", "--config", str(path)])
    out, err = capsys.readouterr()
    assert err == ""
    return code, out.splitlines()


def test_hook_setup_integration_usedesk_writes_a_config_connector_check_accepts(
    usedesk: SandboxThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    store_backend: StoreBackend,
) -> None:
    path = tmp_path / "connector.toml"
    answers = [*CORE, "usedesk, amocrm_stub", usedesk.url, usedesk.sandbox.token]
    result, asker = init(path, [*answers, WEB, *EXTENSIONS, "gleb@example.com", "acme"])

    written = tomllib.loads(path.read_text())
    token = written["accounts"][ACCOUNT]["token"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token)
    assert written["accounts"][ACCOUNT]["integrations"] == {
        "usedesk": {
            "api_token": usedesk.sandbox.token,
            "base_url": usedesk.url,
            "web_url": usedesk.url,  # the guess for an address not api.…: the same host
            "users": [
                {"extension": "201", "agent": 1},
                {"extension": "202", "agent": 2},
                {"extension": "205", "agent": 2},
                {"extension": "204", "agent": 4},
            ],
            "on_duty_user": 4,
        },
        "amocrm_stub": {"subdomain": "acme"},
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    web_prompt = "Usedesk web interface address (for the links in agent cards) "
    assert f"{web_prompt}[{usedesk.url}]: " in asker.prompts
    assert result.webhook_url == f"{PUBLIC_URL}/sipuni/{token}"
    assert asker.told[-9:] == [
        "",
        f"Wrote {path} (only you can read it: it holds the webhook token and keys).",
        "",
        "Paste this URL into Sipuni (Настройки → API → События на АТС):",
        f"  {PUBLIC_URL}/sipuni/{token}",
        "",
        "Next: check the file and every integration's key with the CRM, then start the service:",
        f"  connector check --config {path}",
        f"  connector serve --config {path}",
    ]
    assert usedesk.sandbox.token not in "\n".join(asker.transcript)

    code, lines = check(capsys, path)
    assert (code, lines) == (
        cli.EXIT_OK,
        [
            "configuration: ok",
            store_backend.unused_store_line(tmp_path / "connector.db"),
            f"{ACCOUNT}/usedesk [usedesk]: ok (API key accepted by {usedesk.url})",
            "  Usedesk agents (4; map extensions to their id or e-mail in `users`):",
            "         1  Анна Админова <anna@example.com>, admin: extension 201",
            "         2  Борис Операторов <boris@example.com>, employee: extension 202, "
            "extension 205",
            "         3  Вера Продажина <vera@example.com>, employee: not mapped",
            "         4  Глеб Саппортов <gleb@example.com>, support: extension 204, on duty",
            f"{ACCOUNT}/amocrm_stub [amocrm_stub]: ok (stub: nothing to authorise)",
        ],
    )


def test_a_refused_key_is_explained_and_asked_again(usedesk: SandboxThread, tmp_path: Path) -> None:
    path = tmp_path / "connector.toml"
    answers = [*CORE, "usedesk", usedesk.url, "ud-wrong-key-0000", usedesk.sandbox.token]
    _, asker = init(path, [*answers, WEB, *EXTENSIONS, ""])
    assert asker.prompts.count(KEY_PROMPT) == 2
    refused = asker.transcript.index(f"{KEY_PROMPT}***")
    assert asker.transcript[refused + 1 : refused + 4] == [
        *REFUSED_KEY,
        f"{KEY_PROMPT}***",
    ]
    assert "  The key works: Usedesk at " + usedesk.url + " has 4 agent(s)." in asker.told
    usedesk_table = tomllib.loads(path.read_text())["accounts"][ACCOUNT]["integrations"]["usedesk"]
    assert usedesk_table["api_token"] == usedesk.sandbox.token
    assert "on_duty_user" not in usedesk_table  # Enter: no on-duty agent


def test_an_address_that_does_not_answer_is_asked_again_and_the_key_kept(
    usedesk: SandboxThread, tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    answers = [*CORE, "usedesk", closed, usedesk.sandbox.token, usedesk.url]
    _, asker = init(tmp_path / "connector.toml", [*answers, WEB, *EXTENSIONS, ""])
    failed = next(i for i, line in enumerate(asker.told) if "could not reach" in line)
    assert asker.told[failed].startswith(f"  could not reach Usedesk at {closed} (POST /users): ")
    assert asker.told[failed + 1] == "  Check the address; Enter tries the same one again."
    assert f"Usedesk API address [{closed}]: " in asker.prompts
    assert asker.prompts.count(KEY_PROMPT) == 1


def test_a_key_given_as_an_environment_reference_is_checked_and_written_as_one(
    usedesk: SandboxThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "connector.toml"
    environ = {"INIT_USEDESK_KEY": usedesk.sandbox.token}
    answers = [*CORE, "usedesk", usedesk.url, "${INIT_USEDESK_KEY}", WEB, *EXTENSIONS, "4"]
    init(path, answers, environ)
    assert 'api_token = "${INIT_USEDESK_KEY}"' in path.read_text()
    assert usedesk.sandbox.token not in path.read_text()
    monkeypatch.setenv("INIT_USEDESK_KEY", usedesk.sandbox.token)
    code, lines = check(capsys, path)
    assert code == cli.EXIT_OK and lines[2].endswith(f"ok (API key accepted by {usedesk.url})")


def test_extensions_and_the_on_duty_agent_are_checked_against_usedesk_agents(
    usedesk: SandboxThread, tmp_path: Path
) -> None:
    answers = [*CORE, "usedesk", usedesk.url, usedesk.sandbox.token]
    extensions = ["20a", "201", "201", "202", "", ""]
    _, asker = init(
        tmp_path / "connector.toml",
        [*answers, WEB, *extensions, "nobody@example.com", "Gleb@Example.com"],
    )
    assert asker.told.count("  '20a' is no extension: an extension is 1 to 8 digits, e.g. 101") == 1
    assert (
        "  extension 201 is already Анна Админова's; an extension belongs to one agent"
        in asker.told
    )
    assert "  no agent in the list has the id or e-mail 'nobody@example.com'" in asker.told
    table = tomllib.loads((tmp_path / "connector.toml").read_text())["accounts"][ACCOUNT]
    assert table["integrations"]["usedesk"]["users"] == [
        {"extension": "201", "agent": 1},
        {"extension": "202", "agent": 2},
    ]
    assert table["integrations"]["usedesk"]["on_duty_user"] == 4


def run_command(args: list[str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CONNECTOR_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "connector_core", *args],
        input=stdin,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,  # no controlling terminal: answers come from the pipe only
    )


def test_connector_init_through_the_command_with_answers_piped_in(
    usedesk: SandboxThread, tmp_path: Path
) -> None:
    answers = [*CORE, "usedesk", usedesk.url, "ud-wrong-key-0000", usedesk.sandbox.token]
    stdin = "\n".join([*answers, WEB, *EXTENSIONS, "4"]) + "\n"

    ran = run_command(["init"], tmp_path, stdin)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    token = tomllib.loads((tmp_path / "connector.toml").read_text())["accounts"][ACCOUNT]["token"]
    url = f"{PUBLIC_URL}/sipuni/{token}"
    assert (
        f"Paste this URL into Sipuni (Настройки → API → События на АТС):\n  {url}\n" in ran.stdout
    )
    assert ran.stdout.endswith("  connector check\n  connector serve\n")  # the default file
    assert "\n".join(REFUSED_KEY) in ran.stdout
    assert f"{KEY_PROMPT}***\n" in ran.stdout and usedesk.sandbox.token not in ran.stdout

    checked = run_command(["check"], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{ACCOUNT}/usedesk [usedesk]: ok (API key accepted by {usedesk.url})" in checked.stdout

    again = run_command(["init"], tmp_path, stdin)
    assert (again.returncode, again.stdout) == (1, "")  # refused before any question
    assert again.stderr == (
        "connector init: connector.toml already exists; connector init does not overwrite it. "
        "Pass --force to replace it, or --config OTHER.toml to write another file. Nothing was "
        "asked or written.\n"
    )
    assert (
        tomllib.loads((tmp_path / "connector.toml").read_text())["accounts"][ACCOUNT]["token"]
        == token
    )

    forced = run_command(["init", "--force"], tmp_path, stdin)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    replaced = tomllib.loads((tmp_path / "connector.toml").read_text())
    assert replaced["accounts"][ACCOUNT]["token"] != token  # a new token, a new file

    cut = run_command(["init", "--config", "other.toml"], tmp_path, "\n".join(answers[:6]) + "\n")
    assert cut.returncode == 1
    assert cut.stdout.endswith(
        "\nconnector init: the input ended before every answer; nothing was written\n"
    )
    assert not (tmp_path / "other.toml").exists()
