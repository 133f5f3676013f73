"""``connector init``: the questions that write a first ``connector.toml``.

It asks for the Sipuni account number, makes the account's webhook token, asks how Sipuni
reaches the service and where it listens, which integrations to enable, and then each
integration's own questions through the ``connector_setup_integration`` hook (a plugin
without the hook is asked the settings its model requires). Every integration's answers are
checked the way ``connector check`` reads a file before anything is written; a refused one
shows the errors and its questions are asked again. The file is written readable by its owner
only, since it holds the token and the keys as they were typed (a secret typed as ``${NAME}``
stays a reference). Last, the URL to paste into Sipuni and the next command are shown.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretBytes, SecretStr

from connector_core import public_url
from connector_core.config import parse_config_text, webhook_path_in
from connector_core.errors import ConfigError, describe_error
from connector_core.hooks import PluginHost
from connector_core.integrations import IntegrationType
from connector_core.prompts import Questions
from connector_core.tomlwrite import toml_key, toml_value

DEFAULT_FILE = Path("connector.toml")
DEFAULT_PORT = 8080
STORAGE_PATH = "connector.db"
TOKEN_BYTES = 24  # token_urlsafe: 32 characters of A-Z a-z 0-9 _ -
SIPUNI_SETTING = "Настройки → API → События на АТС"
_ACCOUNT = re.compile(r"[0-9]{6}")


class InitError(Exception):
    """``connector init`` cannot go on; the message says why, and nothing was written."""


@dataclass(frozen=True)
class Server:
    """How Sipuni reaches the service (``public_url``) and where it listens."""

    host: str
    port: int
    public_url: str = ""


@dataclass(frozen=True)
class InitAnswers:
    """Everything ``connector init`` asked, ready to be written as a config file."""

    account: str
    token: str
    server: Server
    integrations: dict[str, dict[str, Any]]  # instance name → its table


@dataclass(frozen=True)
class InitResult:
    """What ``connector init`` wrote, and where Sipuni must send its events."""

    path: Path
    answers: InitAnswers
    webhook_url: str


# --- the pure parts: the file's text, the URL ------------------------------------------------


def render(answers: InitAnswers) -> str:
    """The config file for ``answers``, with a comment saying what each part is."""
    server = answers.server
    lines = [
        "# Written by `connector init`; every key is in docs/configuration.md.",
        "# It holds the webhook token and the CRM keys: keep it readable by its owner only.",
        "",
        "[server]",
        f"host = {toml_value(server.host)}",
        f"port = {server.port}",
        (
            f"public_url = {toml_value(server.public_url)}  # how Sipuni reaches this service"
            if server.public_url
            else '# public_url = "https://connector.example.ru"  # how Sipuni reaches this'
            " service, when not at the address above (behind a proxy)"
        ),
        "",
        "[storage]",
        f"path = {toml_value(STORAGE_PATH)}  # next to this file",
        "",
        f"[accounts.{toml_key(answers.account)}]",
        f"token = {toml_value(answers.token)}  # the secret part of the webhook URL",
    ]
    for name, table in answers.integrations.items():
        lines += ["", f"[accounts.{toml_key(answers.account)}.integrations.{toml_key(name)}]"]
        lines += [_setting(key, value) for key, value in table.items() if value is not None]
    return "\n".join(lines) + "\n"


def _setting(key: str, value: Any) -> str:
    # A list of tables (Usedesk's users) one per line: the operator reads and edits them.
    if isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value):
        items = "".join(f"  {toml_value(v)},\n" for v in value)
        return f"{toml_key(key)} = [\n{items}]"
    return f"{toml_key(key)} = {toml_value(value)}"


def reachability_note(server: Server) -> str | None:
    """What to do when the URL Sipuni gets is not one it can reach; ``None`` when it is."""
    if server.public_url:
        return None
    if server.host in public_url.WILDCARD_HOSTS:
        return (
            f"Replace {public_url.UNKNOWN_ADDRESS} with the address Sipuni reaches this machine"
            " at, or set server.public_url in the file and the URL is shown whole."
        )
    if _is_loopback(server.host):
        return (
            f"{server.host} is reached from this machine only, not by Sipuni: put a web server "
            "in front of the service and set server.public_url to its address, or listen on "
            '0.0.0.0 (server.host = "0.0.0.0").'
        )
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def closing_lines(result: InitResult) -> list[str]:
    """What the operator reads last: the file, the URL for Sipuni, the next command."""
    config = "" if result.path == DEFAULT_FILE else f" --config {result.path}"
    lines = [
        "",
        f"Wrote {result.path} (only you can read it: it holds the webhook token and keys).",
        "",
        f"Paste this URL into Sipuni ({SIPUNI_SETTING}):",
        f"  {result.webhook_url}",
    ]
    note = reachability_note(result.answers.server)
    if note:
        lines.append(note)
    lines += [
        "",
        "Next: check the file and every integration's key with the CRM, then start the service:",
        f"  connector check{config}",
        f"  connector serve{config}",
    ]
    return lines


# --- the answers' checks ---------------------------------------------------------------------


def parse_account(answer: str) -> str:
    """A Sipuni account number: exactly 6 digits, leading zeros kept."""
    if not _ACCOUNT.fullmatch(answer):
        raise ValueError(
            "the account number is 6 digits (leading zeros kept, e.g. 012345): the first six "
            "digits of your employees' full numbers, 012345101 for extension 101"
        )
    return answer


def parse_public_url(answer: str) -> str:
    """``""``, or an ``http(s)://host[/path]`` URL without its trailing ``/``."""
    if not answer:
        return ""
    parts = urlsplit(answer)
    if parts.scheme not in ("http", "https") or not parts.netloc or " " in answer:
        raise ValueError(
            "expected an address starting with https:// (or http://), e.g. "
            "https://connector.example.com, or nothing"
        )
    problem = webhook_path_in(answer)
    if problem is not None:
        raise ValueError(f"expected {problem}")
    return answer.rstrip("/")


def parse_port(answer: str) -> int:
    """A TCP port, 1-65535."""
    if not answer.isdigit() or not 1 <= int(answer) <= 65535:
        raise ValueError("expected a port number from 1 to 65535, e.g. 8080")
    return int(answer)


def parse_host(answer: str) -> str:
    """An address to listen on: an IP address or a host name."""
    if not answer or any(c.isspace() for c in answer) or "/" in answer:
        raise ValueError("expected an address such as 0.0.0.0 (every interface) or 127.0.0.1")
    return answer


def integration_parser(types: Mapping[str, IntegrationType[Any, Any]]) -> Any:
    """``parse`` for the integrations to enable: known type names, separated by commas."""

    def parse(answer: str) -> list[str]:
        names = [n for n in re.split(r"[\s,]+", answer.lower()) if n]
        if not names:
            raise ValueError(f"name at least one of: {', '.join(types)}")
        unknown = [n for n in names if n not in types]
        if unknown:
            raise ValueError(
                f"no installed plugin provides {', '.join(unknown)}; choose among: "
                f"{', '.join(types)}"
            )
        return list(dict.fromkeys(names))

    return parse


# --- the conversation ------------------------------------------------------------------------


async def ask(
    questions: Questions,
    host: PluginHost,
    *,
    base_dir: Path,
) -> InitAnswers:
    """Ask every question; return answers whose config ``connector check`` would read."""
    types = dict(sorted(host.types.items()))
    if not types:
        raise InitError("no CRM plugin is installed: install one, then run connector init again")
    questions.tell(
        "connector init writes the configuration file. Enter takes the [value in brackets]; "
        "Ctrl-C stops without writing anything."
    )
    account = questions.ask("Sipuni account number (6 digits)", parse_account)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    server = ask_server(questions)
    questions.tell("Installed integrations:")
    for name, kind in types.items():
        questions.tell(f"  {name:<14} {kind.description}".rstrip())
    chosen: list[str] = questions.ask(
        "Integrations to enable, separated by commas",
        integration_parser(types),
        default="usedesk" if "usedesk" in types else next(iter(types)),
    )
    integrations: dict[str, dict[str, Any]] = {}
    for name in chosen:
        questions.tell(f"\n— {name}: {types[name].description}".rstrip(": "))
        draft = InitAnswers(account, token, server, {})
        integrations[name] = await ask_integration(
            questions, host, draft, types[name], base_dir=base_dir
        )
    return InitAnswers(account, token, server, integrations)


def ask_server(questions: Questions) -> Server:
    """``public_url``, then where to listen (loopback behind a web server, else everywhere)."""
    questions.tell(
        "Sipuni sends call events to this service over HTTP(S). If a web server (nginx, say) "
        "passes them on, give its address; if Sipuni reaches this machine directly, "
        "press Enter."
    )
    public_url = questions.ask(
        "Address Sipuni reaches the service at (e.g. https://connector.example.com)",
        parse_public_url,
        default="",
    )
    host = questions.ask(
        "Listen on (127.0.0.1: only a web server on this machine; 0.0.0.0: every interface)",
        parse_host,
        default="127.0.0.1" if public_url else "0.0.0.0",
    )
    port = questions.ask("Port", parse_port, default=str(DEFAULT_PORT))
    return Server(host=host, port=port, public_url=public_url)


async def ask_integration(
    questions: Questions,
    host: PluginHost,
    draft: InitAnswers,
    kind: IntegrationType[Any, Any],
    *,
    base_dir: Path,
) -> dict[str, Any]:
    """One integration's table: the plugin's questions, asked again until the config takes it."""
    name = kind.name
    while True:
        try:
            table = await host.setup_integration(kind, questions)
        except EOFError:
            raise  # the input ended: the caller says nothing was written
        except Exception as exc:
            raise InitError(
                f"the set-up questions of the {name} plugin failed ({describe_error(exc)}); "
                "nothing was written. Write its settings by hand (see its documentation) "
                "or report the failure to the plugin's authors"
            ) from exc
        if table is None:
            table = ask_required_settings(questions, kind)
        errors = refused(
            draft, name, table, host.types, base_dir=base_dir, environ=questions.environ
        )
        if not errors:
            return table
        questions.tell(f"The {name} settings from these answers would be refused:")
        for line in errors:
            questions.tell(f"  - {line}")
        questions.tell(f"The {name} questions again:")


def refused(
    draft: InitAnswers,
    name: str,
    table: dict[str, Any],
    types: Mapping[str, IntegrationType[Any, Any]],
    *,
    base_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """The errors ``connector check`` would report for ``draft`` with this one integration."""
    answers = InitAnswers(draft.account, draft.token, draft.server, {name: table})
    try:
        text = render(answers)
    except TypeError as exc:  # a value TOML cannot hold
        return [f"accounts.{draft.account}.integrations.{name}: {exc}"]
    try:
        parse_config_text(text, types=types, environ=environ, base_dir=base_dir)
    except ConfigError as exc:
        return exc.errors
    return []


def ask_required_settings(questions: Questions, kind: IntegrationType[Any, Any]) -> dict[str, Any]:
    """For a plugin without set-up questions: each setting its model requires, as text.

    The config reads a number or a boolean spelt as text, so one plain question per setting
    does; what the model then refuses is shown and asked again by the caller.
    """
    fields = {n: f for n, f in kind.settings_model.model_fields.items() if f.is_required()}
    if not fields:
        questions.tell(f"The {kind.name} plugin asks nothing at set-up; its defaults are used.")
        return {}
    questions.tell(f"The {kind.name} plugin has no set-up questions; it needs these settings:")
    table: dict[str, Any] = {}
    for field_name, info in fields.items():
        prompt = f"{field_name} ({info.description})" if info.description else field_name
        if info.annotation in (SecretStr, SecretBytes):
            table[field_name] = questions.secret(prompt).written
        else:
            table[field_name] = questions.text(prompt)
    return table


# --- the file --------------------------------------------------------------------------------


def refuse_existing(path: Path, *, force: bool) -> None:
    """``InitError`` when ``path`` exists and ``force`` is off; checked before any question."""
    if path.exists() and not force:
        raise InitError(
            f"{path} already exists; connector init does not overwrite it. Pass --force to "
            "replace it, or --config OTHER.toml to write another file. Nothing was asked or "
            "written."
        )
    if not path.parent.is_dir():
        raise InitError(f"{path.parent} is no folder: create it first, or choose another --config")


def write_config(path: Path, text: str, *, force: bool) -> None:
    """Write ``text`` to ``path``, readable and writable by its owner only (mode 600).

    Without ``force`` the file is created only if it still does not exist (another process
    may have written it while the questions were answered); with ``force`` it replaces the
    old file in one step, so a reader never sees half a file.
    """
    flags = os.O_WRONLY | os.O_CREAT
    target = path.with_name(f".{path.name}.{os.getpid()}.tmp") if force else path
    try:
        fd = os.open(target, flags | (os.O_TRUNC if force else os.O_EXCL), 0o600)
    except FileExistsError:
        raise InitError(
            f"{path} was created while the questions were answered; nothing was written "
            "(run connector init again with --force to replace it)"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        if force:
            os.replace(target, path)
    except BaseException:
        target.unlink(missing_ok=True)  # no half-written config left behind
        raise


async def run(
    path: Path,
    questions: Questions,
    host: PluginHost,
    *,
    force: bool = False,
) -> InitResult:
    """``connector init``: ask, write ``path``, tell where Sipuni must send its events.

    Raises ``InitError`` (nothing written) when the file exists without ``force`` or a
    plugin's questions fail, and ``EOFError`` when the answers ran out.
    """
    refuse_existing(path, force=force)
    answers = await ask(questions, host, base_dir=path.parent)
    write_config(path, render(answers), force=force)
    url = public_url.webhook_url(answers.server, answers.account, answers.token)
    result = InitResult(path, answers, url)
    for line in closing_lines(result):
        questions.tell(line)
    return result
