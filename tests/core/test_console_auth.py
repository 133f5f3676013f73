"""The console's password: scrypt at rest, ``[console]``, ``connector console-password``."""

from __future__ import annotations

import io
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from connector_core import cli
from connector_core.config import parse_config_text
from connector_core.console.auth import (
    HashFormatError,
    hash_password,
    parse_hash,
    verify_password,
)
from connector_core.console.settings import ConsoleConfig
from connector_core.errors import ConfigError

PASSWORD = "correct horse battery staple"
ACCOUNT = '[accounts.012345]\ntoken = "console-test-token-0000"\n'


def config_errors(console: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config_text(f"[console]\n{console}\n{ACCOUNT}", types={})
    return caught.value.errors


def test_a_hash_verifies_its_password_only_and_holds_no_trace_of_it() -> None:
    made = hash_password(PASSWORD)
    stored = parse_hash(made)

    assert made.startswith("scrypt:32768:8:1$") and PASSWORD not in made
    assert verify_password(PASSWORD, stored)
    assert not verify_password(PASSWORD + " ", stored)
    assert not verify_password(PASSWORD.upper(), stored)
    assert hash_password(PASSWORD) != made  # a fresh salt each time


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("hunter2", "expected a password hash scrypt:<n>:<r>:<p>$<salt>$<hash>"),
        ("scrypt:1024:8:1$AAAAAAAAAAAAAAAAAAAAAA$" + "A" * 43, "too weak"),
        ("scrypt:32768:8:1$AAAA$" + "A" * 43, "wrong length"),
    ],
)
def test_a_malformed_hash_is_refused_saying_how_to_make_one(text: str, says: str) -> None:
    with pytest.raises(HashFormatError, match="connector console-password") as caught:
        parse_hash(text)
    assert says in str(caught.value)


def test_a_short_password_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 10 characters"):
        hash_password("short")


def test_the_console_is_off_by_default_and_the_defaults_file_says_so() -> None:
    config = parse_config_text(ACCOUNT, types={})
    assert config.console == ConsoleConfig() and not config.console.enabled
    text = resources.files("connector_core").joinpath("defaults.toml").read_text("utf-8")
    assert ConsoleConfig(**tomllib.loads(text)["console"]) == ConsoleConfig()


def test_an_enabled_console_without_a_hash_is_a_config_error_saying_what_to_run() -> None:
    [error] = config_errors("enabled = true")
    assert error.startswith("console.password_hash: the console is enabled but has no password")
    assert "`connector console-password`" in error


def test_a_wrong_hash_a_time_zone_and_a_language_are_reported_at_their_paths() -> None:
    errors = config_errors(
        'enabled = true\npassword_hash = "plain-text-password"\n'
        'timezone = "Moscow"\nlanguage = "de"'
    )
    assert [e.split(":", 1)[0] for e in errors] == [
        "console.password_hash",
        "console.timezone",
        "console.language",
    ]
    assert "plain-text-password" not in "\n".join(errors)  # never echo what was given


def test_the_hash_is_a_secret_of_the_config_masked_in_logs() -> None:
    made = hash_password(PASSWORD)
    config = parse_config_text(
        f'[console]\nenabled = true\npassword_hash = "{made}"\n{ACCOUNT}', types={}
    )
    assert config.console.enabled and made in config.secrets()
    assert made not in repr(config)


def test_console_password_prints_a_line_the_config_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert cli.main(["console-password"]) == 0
    out = capsys.readouterr().out
    [line] = [x for x in out.splitlines() if x.startswith("password_hash")]
    assert PASSWORD not in out

    config = parse_config_text(f"[console]\nenabled = true\n{line}\n{ACCOUNT}", types={})
    assert config.console.password_hash is not None
    assert verify_password(PASSWORD, parse_hash(config.console.password_hash.get_secret_value()))


def test_console_password_generates_a_token_shown_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["console-password", "--generate"]) == 0
    captured = capsys.readouterr()
    token = captured.err.split("sign in with it): ", 1)[1].strip()
    line = captured.out.splitlines()[-1]
    assert token not in captured.out
    assert verify_password(token, parse_hash(line.split('"')[1]))


def test_console_password_refuses_a_short_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["console-password", "--stdin"]) == 2
    captured = capsys.readouterr()
    assert "at least 10 characters; nothing was made" in captured.err and captured.out == ""
