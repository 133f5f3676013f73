"""``connector init`` without a CRM: the file it writes, the URL it shows, the answers it
checks, and how it treats plugins' set-up hooks (called on the owning plugin only, a refused
table asked again, a broken hook stopping with its name, no hook at all)."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connector_core import init_config, public_url
from connector_core.config import parse_config_text
from connector_core.hooks import PluginHost
from connector_core.init_config import InitAnswers, InitError, Server
from connector_core.plugin import IntegrationType, Questions, RegisterIntegrationType, hookimpl
from connector_core.prompts import ScriptedAsker

TOKEN = "init-test-token-0123456789"
CORE_ANSWERS = ["012345", "https://connector.example.com/", "", ""]  # account, URL, host, port


class CrmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_key: SecretStr
    timeout_seconds: float = Field(5.0, gt=0)


class AskingPlugin:
    """Asks a key and a timeout, and answers with whatever was typed: the host checks it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[str] = []

    @hookimpl
    def connector_register_integration_types(self, register: RegisterIntegrationType) -> None:
        register(IntegrationType(self.name, CrmSettings, description=f"{self.name} CRM"))

    @hookimpl
    def connector_setup_integration(
        self, integration_type: IntegrationType, questions: Questions
    ) -> dict[str, Any]:
        self.calls.append(integration_type.name)
        key = questions.secret(f"{self.name} API key")
        return {"api_key": key.written, "timeout_seconds": questions.text("Timeout, seconds")}


class SilentPlugin:
    """No set-up hook: init asks what its model requires."""

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        api_key: SecretStr = Field(description="the CRM's API key")
        region: str = Field(description="eu or us")
        pipeline: int = 1

    @hookimpl
    def connector_register_integration_types(self, register: RegisterIntegrationType) -> None:
        register(IntegrationType("silent", self.Settings))


class ListAnsweringPlugin:
    """A broken set-up hook: its answer is no table."""

    @hookimpl
    def connector_register_integration_types(self, register: RegisterIntegrationType) -> None:
        register(IntegrationType("listy", CrmSettings))

    @hookimpl
    def connector_setup_integration(self) -> list[str]:
        return ["api_key"]


def host_with(*plugins: tuple[object, str]) -> PluginHost:
    host = PluginHost()
    for plugin, name in plugins:
        host.register(plugin, name)
    return host


async def run_init(tmp_path: Path, host: PluginHost, answers: list[str]) -> ScriptedAsker:
    asker = ScriptedAsker(answers)
    await init_config.run(tmp_path / "connector.toml", Questions(asker, environ={}), host)
    return asker


# --- the file and the URL -------------------------------------------------------------------


def test_the_written_text_reads_back_as_the_answers_with_users_one_per_line() -> None:
    users = [{"extension": "201", "agent": 1}, {"extension": "202", "agent": 2}]
    answers = InitAnswers(
        "012345",
        TOKEN,
        Server("127.0.0.1", 8080, "https://c.example.com"),
        {"usedesk": {"api_token": 'k"ey\\', "users": users, "on_duty_user": None}},
    )
    text = init_config.render(answers)
    assert tomllib.loads(text) == {
        "server": {"host": "127.0.0.1", "port": 8080, "public_url": "https://c.example.com"},
        "storage": {"path": "connector.db"},
        "accounts": {
            "012345": {
                "token": TOKEN,
                "integrations": {"usedesk": {"api_token": 'k"ey\\', "users": users}},
            }
        },
    }
    assert 'users = [\n  {extension = "201", agent = 1},\n' in text


@pytest.mark.parametrize(
    ("server", "url", "note"),
    [
        (Server("127.0.0.1", 8080, "https://c.example.com/x"), "https://c.example.com/x", None),
        (Server("203.0.113.7", 9000), "http://203.0.113.7:9000", None),
        (Server("0.0.0.0", 8080), "http://<this machine's address>:8080", "Replace <this"),
        (Server("::1", 8080), "http://[::1]:8080", "::1 is reached from this machine only"),
        (Server("localhost", 8080), "http://localhost:8080", "localhost is reached from this"),
    ],
)
def test_the_url_for_sipuni_is_public_url_else_the_listening_address(
    server: Server, url: str, note: str | None
) -> None:
    assert public_url.webhook_url(server, "012345", TOKEN) == f"{url}/sipuni/{TOKEN}"
    said = init_config.reachability_note(server)
    assert (said or "").startswith(note or "") and (said is None) == (note is None)


@pytest.mark.parametrize(
    ("parse", "answer", "message"),
    [
        (init_config.parse_account, "12345", "the account number is 6 digits"),
        (init_config.parse_account, "0123456", "the account number is 6 digits"),
        (init_config.parse_public_url, "connector.example.com", "expected an address starting"),
        (init_config.parse_public_url, "https://", "expected an address starting"),
        (
            init_config.parse_public_url,
            "https://c.example.com/sipuni/",
            r"without the webhook's path: /sipuni/<token> is added to it \(here: https://c\.",
        ),
        (init_config.parse_port, "80800", "expected a port number from 1 to 65535"),
        (init_config.parse_host, "0.0.0.0 8080", "expected an address such as 0.0.0.0"),
    ],
)
def test_a_wrong_core_answer_is_refused_with_what_to_type(
    parse: Any, answer: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse(answer)


def test_the_file_is_readable_by_its_owner_only_and_replaced_in_one_step(tmp_path: Path) -> None:
    path = tmp_path / "connector.toml"
    init_config.write_config(path, "a = 1\n", force=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(InitError, match="was created while the questions were answered"):
        init_config.write_config(path, "a = 2\n", force=False)
    path.chmod(0o644)
    init_config.write_config(path, "a = 3\n", force=True)
    assert path.read_text() == "a = 3\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["connector.toml"]  # no temporary left


# --- plugins' set-up hooks ------------------------------------------------------------------


async def test_hook_setup_integration_is_called_on_the_owning_plugin_only(
    tmp_path: Path,
) -> None:
    alpha, beta = AskingPlugin("alpha"), AskingPlugin("beta")
    host = host_with((alpha, "alpha"), (beta, "beta"))
    asker = await run_init(tmp_path, host, [*CORE_ANSWERS, "beta", "b-key-123456", "7.5"])
    assert (alpha.calls, beta.calls) == ([], ["beta"])
    assert "  alpha          alpha CRM" in asker.told and "  beta           beta CRM" in asker.told
    written = tomllib.loads((tmp_path / "connector.toml").read_text())
    assert written["accounts"]["012345"]["integrations"] == {
        "beta": {"api_key": "b-key-123456", "timeout_seconds": "7.5"}
    }
    assert written["server"] == {
        "host": "127.0.0.1",  # a web server at public_url passes the events on
        "port": 8080,
        "public_url": "https://connector.example.com",
    }
    config = parse_config_text(
        (tmp_path / "connector.toml").read_text(), types=host.types, base_dir=tmp_path
    )
    assert config.accounts["012345"].integrations["beta"].settings.timeout_seconds == 7.5  # type: ignore[attr-defined]


async def test_hook_setup_integration_answers_the_config_refuses_are_shown_and_asked_again(
    tmp_path: Path,
) -> None:
    host = host_with((AskingPlugin("alpha"), "alpha"))
    asker = await run_init(
        tmp_path, host, [*CORE_ANSWERS, "", "a-key-123456", "0", "a-key-123456", "3"]
    )
    refused = asker.told.index("The alpha settings from these answers would be refused:")
    assert asker.told[refused : refused + 3] == [
        "The alpha settings from these answers would be refused:",
        "  - accounts.012345.integrations.alpha.timeout_seconds: Input should be greater than 0",
        "The alpha questions again:",
    ]
    assert asker.prompts.count("alpha API key: ") == 2
    written = tomllib.loads((tmp_path / "connector.toml").read_text())
    assert written["accounts"]["012345"]["integrations"]["alpha"]["timeout_seconds"] == "3"


async def test_hook_setup_integration_answer_that_is_no_table_stops_init_naming_the_plugin(
    tmp_path: Path,
) -> None:
    host = host_with((ListAnsweringPlugin(), "listy"))
    with pytest.raises(InitError) as caught:
        await run_init(tmp_path, host, [*CORE_ANSWERS, ""])
    assert str(caught.value) == (
        "the set-up questions of the listy plugin failed (TypeError: "
        "connector_setup_integration of listy returned list, not a table (a dict of setting "
        "names to values)); nothing was written. Write its settings by hand (see its "
        "documentation) or report the failure to the plugin's authors"
    )
    assert not (tmp_path / "connector.toml").exists()


async def test_a_plugin_without_the_hook_is_asked_the_settings_its_model_requires(
    tmp_path: Path,
) -> None:
    host = host_with((SilentPlugin(), "silent"))
    asker = await run_init(tmp_path, host, [*CORE_ANSWERS, "", "s-key-123456", "eu"])
    assert "The silent plugin has no set-up questions; it needs these settings:" in asker.told
    asked = asker.transcript.index("api_key (the CRM's API key): ***")
    assert asker.transcript[asked + 1] == "region (eu or us): eu"
    written = tomllib.loads((tmp_path / "connector.toml").read_text())
    assert written["accounts"]["012345"]["integrations"] == {
        "silent": {"api_key": "s-key-123456", "region": "eu"}
    }


async def test_an_existing_file_is_refused_before_any_question(tmp_path: Path) -> None:
    (tmp_path / "connector.toml").write_text("# mine\n")
    asker = ScriptedAsker([])
    with pytest.raises(InitError, match=r"connector\.toml already exists; connector init does"):
        await init_config.run(
            tmp_path / "connector.toml", Questions(asker), host_with((SilentPlugin(), "silent"))
        )
    assert asker.transcript == [] and (tmp_path / "connector.toml").read_text() == "# mine\n"


def test_a_public_url_left_empty_is_written_as_a_commented_example() -> None:
    """Not ``public_url = ""``, which reads as a setting someone forgot to fill in."""
    answers = InitAnswers(
        account="012345", token=TOKEN, server=Server(host="0.0.0.0", port=8080), integrations={}
    )
    text = init_config.render(answers)
    assert "\npublic_url" not in text
    assert '\n# public_url = "https://connector.example.ru"  # how Sipuni reaches' in text
    assert not parse_config_text(text, types={}).server.public_url
