"""The Usedesk settings as an operator meets them: through the config file and its error lines.

Every error is checked the way ``connector check`` prints it — ``parse_config_text`` with the
real plugin's types, so each message carries its TOML path — and no error or repr may show
the API key.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from connector_core import config
from connector_core.config import Config, parse_config_text
from connector_core.errors import ConfigError
from connector_core.hooks import PluginHost
from connector_core.phones import PhoneFormat
from connector_core.templates import VARIABLES
from plugins.amocrm_stub import AmoCrmStubSettings
from plugins.usedesk import setup
from plugins.usedesk.settings import DEFAULT_TEMPLATES, Templates, UsedeskSettings, UserMapping

SECRET = "ud-secret-0123456789abcdef"
UNKNOWN = "unknown key (no such setting here)"
TABLE = "accounts.012345.integrations.usedesk"
TWICE = 'users = [{ extension = "101", agent = 2 }, { extension = "101", agent = 3 }]'


@pytest.fixture(scope="module")
def types() -> dict:
    host = PluginHost()
    host.load(["usedesk"])
    assert "usedesk" in host.types
    return host.types


def config_text(body: str, *, token: bool = True) -> str:
    key = f'api_token = "{SECRET}"\n' if token else ""
    return f"""
[accounts.012345]
token = "sipuni-token-0123456789"

[accounts.012345.integrations.usedesk]
{key}{body}
"""


def load(types: dict, body: str, *, token: bool = True) -> UsedeskSettings:
    config = parse_config_text(config_text(body, token=token), types=types)
    settings = config.accounts["012345"].integrations["usedesk"].settings
    assert isinstance(settings, UsedeskSettings)
    return settings


def errors(types: dict, body: str, *, token: bool = True) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config_text(config_text(body, token=token), types=types)
    for line in caught.value.errors:
        assert SECRET not in line
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
    return caught.value.errors


# --- defaults --------------------------------------------------------------------------------


def test_defaults_match_sipunis_integration(types: dict) -> None:
    s = load(types, "")
    assert s.search_statuses == [8, 1, 5, 6]  # New, Open, On hold, Pending
    assert s.phone_format is PhoneFormat.INTERNATIONAL
    assert s.phone_format.value == "7XXXXXXXXXX"
    assert s.ticket_type == "question"
    assert s.language == "ru"
    assert (s.always_new_ticket, s.create_client, s.create_ticket) == (False, True, True)
    assert s.first_on_line_responsible is False
    assert (s.users, s.on_duty_user, s.channel_id) == ([], None, None)
    assert s.timezone == "Europe/Moscow"
    assert s.base_url == "https://api.usedesk.ru"
    assert s.template("client_name") == DEFAULT_TEMPLATES["ru"]["client_name"] == "Клиент {phone}"


def test_a_full_config_is_read_as_written(types: dict) -> None:
    s = load(
        types,
        """
schemes = ["Входящая"]
notifications = true
search_statuses = [1]
always_new_ticket = true
create_client = false
create_ticket = false
ticket_type = "incident"
first_on_line_responsible = true
language = "en"
timezone = "Asia/Almaty"
phone_format = "+7XXXXXXXXXX"
channel_id = 102
on_duty_user = "gleb@example.com"
users = [{ extension = "101", agent = 2 }, { extension = "102", agent = "vera@example.com" }]
templates = { client_name = "Caller {phone}", comment = "{result} {record_link} {call_id}" }
""",
    )
    assert s.search_statuses == [1]
    assert (s.always_new_ticket, s.create_client, s.create_ticket) == (True, False, False)
    assert (s.ticket_type, s.first_on_line_responsible, s.language) == ("incident", True, "en")
    assert (s.timezone, s.phone_format, s.channel_id) == ("Asia/Almaty", PhoneFormat.PLUS, 102)
    assert s.on_duty_user == "gleb@example.com"
    assert [(u.extension, u.agent) for u in s.users] == [("101", 2), ("102", "vera@example.com")]
    assert s.template("client_name") == "Caller {phone}"
    assert s.template("ticket_subject") == DEFAULT_TEMPLATES["en"]["ticket_subject"]


def test_core_keys_of_the_table_are_not_the_plugins(types: dict) -> None:
    """schemes / notifications sit in the same table but belong to the core's routing."""
    config: Config = parse_config_text(
        config_text('schemes = ["000-200"]\nnotifications = true\nhook_timeout_seconds = 3'),
        types=types,
    )
    integration = config.accounts["012345"].integrations["usedesk"]
    assert integration.routing.schemes == ["000-200"]
    assert integration.routing.notifications is True
    assert integration.routing.hook_timeout_seconds == 3
    assert "schemes" not in UsedeskSettings.model_fields


@pytest.mark.parametrize("fmt", ["+7XXXXXXXXXX", "7XXXXXXXXXX", "8XXXXXXXXXX"])
def test_each_phone_format_is_accepted(types: dict, fmt: str) -> None:
    assert load(types, f'phone_format = "{fmt}"').phone_format.value == fmt


@pytest.mark.parametrize("kind", ["question", "task", "problem", "incident"])
def test_each_ticket_type_is_accepted(types: dict, kind: str) -> None:
    assert load(types, f'ticket_type = "{kind}"').ticket_type == kind


# --- errors a person reads -------------------------------------------------------------------


def test_unknown_template_variable_is_named_with_its_path(types: dict) -> None:
    [line] = errors(types, 'templates = { ticket_subject = "Звонок {phon} {phone}" }')
    assert line.startswith(f"{TABLE}.templates.ticket_subject: ")
    assert "unknown variable {phon}" in line
    assert "phone" in line.split("known:")[1]  # the list of what exists, to spot the typo


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{phone:>12}", "formats and conversions are not supported"),
        ("{phone!r}", "formats and conversions are not supported"),
        ("Звонок {phone", "broken template"),
        ("a } b", "write {{ and }} for braces"),
    ],
)
def test_template_format_specs_and_broken_braces_are_refused(
    types: dict, template: str, words: str
) -> None:
    [line] = errors(types, f'templates = {{ comment = "{template}" }}')
    assert line.startswith(f"{TABLE}.templates.comment: ") and words in line


def test_every_template_is_checked(types: dict) -> None:
    body = (
        "templates = { "
        + ", ".join(
            f'{name} = "{{nope_{name}}}"'
            for name in ("client_name", "ticket_subject", "ticket_tag", "ticket_message", "comment")
        )
        + " }"
    )
    lines = errors(types, body)
    assert len(lines) == 5
    for name, line in zip(
        ("client_name", "ticket_subject", "ticket_tag", "ticket_message", "comment"),
        lines,
        strict=True,
    ):
        assert line.startswith(f"{TABLE}.templates.{name}: unknown variable {{nope_{name}}}")


def test_unknown_template_name_is_refused(types: dict) -> None:
    [line] = errors(types, 'templates = { subject = "{phone}" }')
    assert line == f"{TABLE}.templates.subject: {UNKNOWN}; did you mean 'ticket_subject'?"


def test_an_extension_mapped_twice_is_refused(types: dict) -> None:
    lines = errors(types, TWICE)
    assert any("extension 101 is mapped twice" in line for line in lines), lines
    assert all(line.startswith(TABLE) for line in lines)


def test_an_extension_mapped_twice_is_reported_on_users(types: dict) -> None:
    [line] = errors(types, TWICE)
    assert line.startswith(f"{TABLE}.users: ")


@pytest.mark.parametrize("extension", ["10a", "", "123456789"])
def test_an_extension_that_is_not_a_short_number_is_refused(types: dict, extension: str) -> None:
    [line] = errors(types, f'users = [{{ extension = "{extension}", agent = 2 }}]')
    assert line.startswith(f"{TABLE}.users[0].extension: ")


@pytest.mark.parametrize("statuses", ["[0]", "[11]", "[1, 42]"])
def test_a_bad_status_id_is_refused_with_the_valid_range(types: dict, statuses: str) -> None:
    [line] = errors(types, f"search_statuses = {statuses}")
    assert line.startswith(f"{TABLE}.search_statuses: ")
    assert "status ids are 1-10" in line and "8 = New" in line


def test_an_empty_status_list_is_refused(types: dict) -> None:
    [line] = errors(types, "search_statuses = []")
    assert line.startswith(f"{TABLE}.search_statuses: ") and "at least 1 item" in line


def test_calls_without_a_number_default_to_a_ticket_under_the_hidden_number_client(
    types: dict,
) -> None:
    s = load(types, "")
    assert (s.hidden_number, s.hidden_number_client) == ("ticket", "Скрытый номер")
    s = load(types, 'hidden_number = "skip"\nhidden_number_client = "Аноним"')
    assert (s.hidden_number, s.hidden_number_client) == ("skip", "Аноним")


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('hidden_number = "create"', "hidden_number"),
        ('hidden_number_client = " "', "hidden_number_client"),
    ],
)
def test_a_bad_hidden_number_setting_is_named(types: dict, body: str, key: str) -> None:
    [line] = errors(types, body)
    assert line.startswith(f"{TABLE}.{key}: ")


def test_a_bad_time_zone_is_named(types: dict) -> None:
    [line] = errors(types, 'timezone = "Europe/Moskva"')
    assert line == f"{TABLE}.timezone: unknown time zone 'Europe/Moskva' (e.g. Europe/Moscow)"


@pytest.mark.parametrize("agent", ['"anna@"', '"anna.example.com"', '"anna @example.com"'])
def test_a_bad_email_for_an_agent_is_refused(types: dict, agent: str) -> None:
    [line] = errors(types, f'users = [{{ extension = "101", agent = {agent} }}]')
    assert line.startswith(f"{TABLE}.users[0].agent: ")


def test_a_bad_email_for_the_on_duty_agent_is_refused(types: dict) -> None:
    [line] = errors(types, 'on_duty_user = "gleb"')
    assert line.startswith(f"{TABLE}.on_duty_user: ")


def test_a_boolean_is_not_an_agent_id(types: dict) -> None:
    [line] = errors(types, 'users = [{ extension = "101", agent = true }]')
    assert line.startswith(f"{TABLE}.users[0].agent: ")


def test_agents_by_id_or_email_are_accepted(types: dict) -> None:
    s = load(
        types,
        'users = [{ extension = "101", agent = 7 }, { extension = "1", agent = '
        '"Anna.K+ops@mail.example.com" }]\non_duty_user = 4',
    )
    assert [u.agent for u in s.users] == [7, "Anna.K+ops@mail.example.com"]


def test_missing_api_token_is_reported(types: dict) -> None:
    [line] = errors(types, "create_client = false", token=False)
    assert line == f"{TABLE}.api_token: Field required"


def test_a_value_of_the_wrong_form_is_described_in_words_not_by_its_pattern(types: dict) -> None:
    lines = errors(
        types,
        'users = [{ extension = "10x", agent = 1 }, { extension = "102", agent = "anna@" }]\n'
        'base_url = "api.usedesk.ru"',
    )
    assert lines == [
        f'{TABLE}.users[0].extension: expected an extension: 1 to 8 digits, e.g. "101"',
        f"{TABLE}.users[1].agent: Input should be a valid integer, unable to parse string as an"
        ' integer; or expected an e-mail address, e.g. "agent@example.ru"',
        f'{TABLE}.base_url: expected an http(s) URL, e.g. "https://api.usedesk.ru"',
    ]


def _models(model: type[BaseModel]) -> Iterator[type[BaseModel]]:
    yield model
    for field in model.model_fields.values():
        for inner in _annotated_models(field.annotation):
            yield from _models(inner)


def _annotated_models(annotation: object) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _annotated_models(arg)


def _patterns(annotation: object, metadata: Iterable[object]) -> Iterator[str]:
    """The regular expressions of a field: its own, and those of the types it is made of."""
    for meta in metadata:
        if isinstance(meta, FieldInfo):
            yield from _patterns(None, meta.metadata)
        elif isinstance(pattern := getattr(meta, "pattern", None), str):
            yield pattern
    for arg in typing.get_args(annotation):
        yield from _patterns(arg, getattr(arg, "__metadata__", ()))


def test_every_pattern_of_the_settings_is_described_in_words() -> None:
    """A new ``Field(pattern=…)`` in the core or a bundled plugin needs its words in
    ``config._PATTERN_WORDS``, or its error would show the regular expression."""
    found: set[str] = set()
    for root in (Config, UsedeskSettings, AmoCrmStubSettings):
        for model in _models(root):
            for field in model.model_fields.values():
                found.update(_patterns(field.annotation, field.metadata))
    assert len(found) >= 6, found  # the walk finds the six there are today
    assert found <= set(config._PATTERN_WORDS), found - set(config._PATTERN_WORDS)


def test_an_unknown_key_is_refused(types: dict) -> None:
    """A typo of a setting's name must not be silently ignored."""
    lines = errors(types, "always_new_tickets = true\nfirst_on_line = true")
    assert lines == [
        f"{TABLE}.always_new_tickets: {UNKNOWN}; did you mean 'always_new_ticket'?",
        f"{TABLE}.first_on_line: {UNKNOWN}; did you mean 'first_on_line_responsible'?",
    ]


def test_unknown_keys_inside_a_user_are_refused(types: dict) -> None:
    [line] = errors(types, 'users = [{ extension = "101", agent = 2, name = "Анна" }]')
    assert line == f"{TABLE}.users[0].name: {UNKNOWN}"


def test_bad_choices_name_the_allowed_values(types: dict) -> None:
    lines = errors(types, 'ticket_type = "bug"\nlanguage = "de"\nphone_format = "+7 (XXX)"')
    assert lines[0].startswith(f"{TABLE}.ticket_type: ") and "'incident'" in lines[0]
    assert lines[1].startswith(f"{TABLE}.language: ") and "'ru' or 'en'" in lines[1]
    assert lines[2].startswith(f"{TABLE}.phone_format: ") and "'8XXXXXXXXXX'" in lines[2]


def test_every_error_is_reported_at_once(types: dict) -> None:
    lines = errors(
        types,
        'timezone = "Nowhere"\nsearch_statuses = [99]\ntemplates = { comment = "{x}" }',
        token=False,
    )
    paths = sorted(line.split(":")[0] for line in lines)
    assert paths == sorted(
        f"{TABLE}.{key}"
        for key in ("timezone", "search_statuses", "templates.comment", "api_token")
    )


# --- secrets -----------------------------------------------------------------------------------


def test_the_api_token_is_not_in_errors_of_its_own_field(types: dict) -> None:
    # A token of the wrong type: the error says so without repeating anything of it.
    with pytest.raises(ConfigError) as caught:
        parse_config_text(config_text(f'api_token = ["{SECRET}"]', token=False), types=types)
    [line] = caught.value.errors
    assert line.startswith(f"{TABLE}.api_token: ") and SECRET not in str(caught.value)


def test_the_api_token_is_not_in_reprs_or_dumps(types: dict) -> None:
    config = parse_config_text(config_text(""), types=types)
    settings = config.accounts["012345"].integrations["usedesk"].settings
    assert isinstance(settings, UsedeskSettings)
    assert settings.api_token.get_secret_value() == SECRET
    for text in (repr(settings), str(settings), repr(config), settings.model_dump_json()):
        assert SECRET not in text


def test_other_errors_do_not_echo_the_values_they_refuse(types: dict) -> None:
    """Only the path and the rule: a value pasted in the wrong key may be a secret, too."""
    lines = errors(types, f'channel_id = "{SECRET}"\nbase_url = "{SECRET} x"')
    assert len(lines) == 2


def test_variables_listed_in_errors_are_the_real_ones(types: dict) -> None:
    [line] = errors(types, 'templates = { comment = "{nope}" }')
    listed = line.split("known: ")[1].split(", ")
    assert listed == sorted(VARIABLES)


# --- docs/usedesk.md stays in step with the settings ----------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "usedesk.md"
SEED_LABELS = [
    "API-ключ",
    "Поиск тикетов по статусу",
    "Создавать новый тикет, если уже есть созданные тикеты",
    "Создавать Клиента",
    "Создавать Тикет",
    "Тип создаваемого тикета",
    "Ставить ответственным первого пользователя на линии",
    "Шаблоны",
    "Имя клиента",
    "Тема тикета",
    "Общие переменные",
    "Пользователи",
    "Дежурный",
    "Схемы",
    "Все",
    "Выберите для каких схем выполнять обработку перевода",
    "Формат номеров",
    "Уведомления для расширения",
]


def test_every_setting_is_documented_with_its_default() -> None:
    text = DOCS.read_text(encoding="utf-8")
    rows: dict[str, str] = {}  # the first table row that starts with the key
    for m in re.finditer(r"^\| `([\w.]+)`[^\n]*$", text, flags=re.MULTILINE):
        rows.setdefault(m.group(1), m.group(0))
    names = [*UsedeskSettings.model_fields, *(f"templates.{k}" for k in Templates.model_fields)]
    missing = [name for name in names if name not in rows and name != "templates"]
    assert not missing, f"settings missing from docs/usedesk.md: {missing}"
    for name, field in UsedeskSettings.model_fields.items():
        if name == "templates" or field.is_required():
            continue
        default = field.get_default(call_default_factory=True)
        shown = default.value if isinstance(default, PhoneFormat) else default
        if shown is None:
            continue
        literal = json.dumps(shown, ensure_ascii=False)
        literal = literal if not isinstance(shown, float) else f"{shown:g}"
        assert f"`{literal}`" in rows[name], (name, literal, rows[name])


def test_every_russian_label_of_the_settings_and_the_seed_is_in_the_docs() -> None:
    text = DOCS.read_text(encoding="utf-8")
    labels = set(SEED_LABELS)
    for model in (UsedeskSettings, Templates, UserMapping):
        for field in model.model_fields.values():
            labels |= set(re.findall(r"«([^»]+)»", field.description or ""))
    missing = sorted(label for label in labels if f"«{label}»" not in text)
    assert not missing, f"labels missing from docs/usedesk.md: {missing}"


def test_the_full_example_in_the_docs_is_a_valid_config(types: dict) -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## 7. A full example", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2
    env = {
        "SIPUNI_TOKEN": "sipuni-token-0123456789",
        "USEDESK_API_TOKEN": SECRET,
        "USEDESK_SALES_TOKEN": SECRET + "-sales",
    }
    config = parse_config_text("\n".join(blocks), types=types, environ=env)
    integrations = config.accounts["012345"].integrations
    main = integrations["usedesk"].settings
    assert isinstance(main, UsedeskSettings)
    assert main.first_on_line_responsible is True
    assert main.phone_format is PhoneFormat.PLUS
    assert main.on_duty_user == "gleb@example.com"
    assert integrations["usedesk"].routing.notifications is True
    assert integrations["usedesk_sales"].routing.schemes == ["Продажи"]


def test_a_misspelt_key_inside_a_user_names_the_key_it_may_have_meant(types: dict) -> None:
    lines = errors(types, 'users = [{ extension = "101", agnet = 2 }]')
    assert f"{TABLE}.users[0].agnet: {UNKNOWN}; did you mean 'agent'?" in lines


@pytest.mark.parametrize(
    ("api", "web"),
    [
        ("https://api.usedesk.kz", "https://secure.usedesk.kz"),
        ("https://api.company.ru/uapi", "https://secure.company.ru"),
        ("http://usedesk.local:8080/api", "http://usedesk.local:8080"),
    ],
)
def test_init_guesses_the_web_interface_from_a_boxed_api_address(api: str, web: str) -> None:
    """``connector init`` offers this as the default ``web_url`` for an API address of its own
    (Usedesk's own pair is api.usedesk.ru and secure.usedesk.ru)."""
    assert setup.guess_web_url(api) == web
