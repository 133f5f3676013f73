"""Questions with checked answers: a refused answer shows its message and the question again,
Enter takes the default, a secret may be a ``${NAME}`` reference, and a script that runs out
stops like a terminal whose input ended, with the transcript."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector_core.config import parse_config_text
from connector_core.hooks import PluginHost
from connector_core.prompts import Questions, ScriptedAsker, ScriptExhausted


def port(answer: str) -> int:
    if not answer.isdigit() or not 1 <= int(answer) <= 65535:
        raise ValueError("expected a port number from 1 to 65535")
    return int(answer)


def test_a_refused_answer_shows_its_message_and_the_same_question_again() -> None:
    asker = ScriptedAsker(["eighty", "80800", " 8081 "])
    assert Questions(asker).ask("Port", port) == 8081
    assert asker.prompts == ["Port: "] * 3
    assert asker.told == ["  expected a port number from 1 to 65535"] * 2


def test_enter_takes_the_default_shown_in_brackets() -> None:
    asker = ScriptedAsker(["", ""])
    questions = Questions(asker)
    assert questions.ask("Port", port, default="8080") == 8080
    assert questions.text("Name", default="usedesk") == "usedesk"
    assert asker.prompts == ["Port [8080]: ", "Name [usedesk]: "]


def test_a_required_text_refuses_an_empty_answer() -> None:
    asker = ScriptedAsker(["  ", "acme"])
    assert Questions(asker).text("Subdomain") == "acme"
    assert asker.told == ["  an answer is needed"]


def test_confirm_takes_yes_and_no_in_english_and_russian() -> None:
    asker = ScriptedAsker(["Да", "n", "maybe", "YES", ""])
    questions = Questions(asker)
    assert questions.confirm("Go on?", default=False) is True
    assert questions.confirm("Go on?", default=True) is False
    assert questions.confirm("Go on?", default=False) is True
    assert asker.told == ["  answer y (yes) or n (no)"]
    assert questions.confirm("Go on?", default=True) is True
    assert asker.prompts[-1] == "Go on? [y]: "


def test_a_secret_typed_as_a_reference_is_read_from_the_environment_and_written_as_one() -> None:
    asker = ScriptedAsker(["${USEDESK_KEY}"])
    answer = Questions(asker, environ={"USEDESK_KEY": "ud-real-key-42"}).secret("API key")
    assert (answer.value, answer.written) == ("ud-real-key-42", "${USEDESK_KEY}")
    assert answer.from_environment
    assert repr(answer) == "SecretAnswer(${USEDESK_KEY})"


def test_a_reference_to_an_unset_variable_is_refused_naming_it() -> None:
    asker = ScriptedAsker(["${USEDESK_KEY}", "ud-typed-key-42"])
    answer = Questions(asker, environ={}).secret("API key")
    assert asker.told == [
        "  the environment variable USEDESK_KEY is not set: set it before running this again, "
        "or type the value itself"
    ]
    assert (answer.value, answer.written) == ("ud-typed-key-42", "ud-typed-key-42")
    assert "ud-typed-key-42" not in repr(answer)


def test_a_secret_is_masked_in_the_transcript() -> None:
    asker = ScriptedAsker(["ud-typed-key-42"])
    Questions(asker).secret("API key")
    assert asker.transcript == ["API key: ***"]
    assert asker.secrets == ["ud-typed-key-42"]


def test_a_typed_dollar_brace_is_written_so_the_config_reads_back_what_was_typed(
    tmp_path: Path,
) -> None:
    answer = Questions(ScriptedAsker(["amo${x}token"]), environ={}).secret("Access token")
    assert answer.value == "amo${x}token"
    host = PluginHost()
    host.load(["amocrm_stub"])
    text = (
        '[accounts.012345]\ntoken = "init-test-token-0123456789"\n'
        "[accounts.012345.integrations.amocrm_stub]\n"
        f'subdomain = "acme"\naccess_token = "{answer.written}"\n'
    )
    config = parse_config_text(text, types=host.types, environ={}, base_dir=tmp_path)
    settings = config.accounts["012345"].integrations["amocrm_stub"].settings
    assert settings.access_token.get_secret_value() == "amo${x}token"  # type: ignore[attr-defined]


def test_a_script_that_runs_out_stops_like_an_ended_input_with_the_transcript() -> None:
    asker = ScriptedAsker(["80800"])
    with pytest.raises(EOFError) as caught:
        Questions(asker).ask("Port", port)
    assert isinstance(caught.value, ScriptExhausted)
    assert str(caught.value) == (
        "no scripted answer left for 'Port: '; the transcript so far:\n"
        "Port: 80800\n  expected a port number from 1 to 65535"
    )
