"""The operator's config: both passes, every error at once with its TOML path, no secret shown."""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connector_core.config import (
    DEMO_TOKEN,
    ClusterConfig,
    Config,
    IntegrationTable,
    LoggingConfig,
    NotificationsConfig,
    ReconcileConfig,
    ServerConfig,
    StorageConfig,
    TrackerConfig,
    config_json_schema,
    default_config,
    load_config,
    parse_config_text,
)
from connector_core.errors import ConfigError
from connector_core.integrations import IntegrationType, RoutingSettings
from connector_core.phones import DisplayFormat

# --- two small plugins' settings models ------------------------------------------------------


class User(BaseModel):
    model_config = ConfigDict(extra="forbid")

    extension: str = Field(pattern=r"^\d+$")
    agent: int


class DeskSettings(BaseModel):
    """Settings of a Usedesk-like test plugin."""

    model_config = ConfigDict(extra="forbid")

    api_token: SecretStr = Field(min_length=20)
    users: list[User] = []
    channel: str | list[str] = "phone"


class StubSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhook_secret: SecretStr = SecretStr("stub-default-secret-value")


TYPES = {
    "usedesk": IntegrationType("usedesk", DeskSettings, description="A helpdesk"),
    "amocrm_stub": IntegrationType("amocrm_stub", StubSettings),
}

SIPUNI_TOKEN = "sipuni-Token_0123456789"
USEDESK_TOKEN = "usedesk-secret-token-abcdef"
ENV = {"SIPUNI_TOKEN_012345": SIPUNI_TOKEN, "USEDESK_TOKEN": USEDESK_TOKEN}

FULL = """
[server]
host = "0.0.0.0"
port = 9000
max_body_bytes = 32768
public_url = "https://connector.example.com/"

[storage]
backend = "sqlite"
path = "data/connector.db"

[tracker]
hangup_timeout_seconds = 600
finish_settle_seconds = 1.5
answered_owner = "first"

[logging]
level = "debug"
json = true

[accounts.012345]
token = "${SIPUNI_TOKEN_012345}"
default_region = "kz"
allowed_ips = ["185.45.152.0/24", "10.1.2.3", "2001:db8::/32"]

[accounts.012345.integrations.usedesk]
schemes = ["000-913898", "Входящая"]
transfer_schemes = ["000-1734445"]
hook_timeout_seconds = 5
notifications = true
api_token = "${USEDESK_TOKEN}"
users = [{ extension = "101", agent = 12 }, { extension = "102", agent = 13 }]

[accounts.012345.integrations.usedesk_sales]
plugin = "usedesk"
enabled = false
api_token = "another-usedesk-token-0001"

[accounts.654321]
token = "second-account-token-0001"

[accounts.654321.integrations.amocrm_stub]
"""


def parse(text: str, env: dict[str, str] | None = None, **kwargs: Any) -> Config:
    return parse_config_text(text, types=TYPES, environ=ENV if env is None else env, **kwargs)


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, env)
    assert str(caught.value) == "\n".join(caught.value.errors)
    return caught.value.errors


ACCOUNT = '[accounts.012345]\ntoken = "abcdefghijklmnop-1"\n'
DESK = '[accounts.012345.integrations.usedesk]\napi_token = "usedesk-secret-token-abcdef"\n'


# --- a valid file -----------------------------------------------------------------------------


def test_a_full_config_file_is_read_into_typed_models(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "connector.toml"
    path.parent.mkdir()
    path.write_text(FULL, encoding="utf-8")

    config = load_config(path, types=TYPES, environ=ENV)

    assert config.server == ServerConfig(
        host="0.0.0.0", port=9000, max_body_bytes=32768, public_url="https://connector.example.com"
    )
    # Relative to the config file's folder, not to the working directory.
    assert config.storage.path == tmp_path / "etc" / "data" / "connector.db"
    assert config.tracker == TrackerConfig(
        hangup_timeout_seconds=600, finish_settle_seconds=1.5, answered_owner="first"
    )
    assert config.logging.level == "DEBUG" and config.logging.json_format is True

    account = config.accounts["012345"]
    assert account.number == "012345"
    assert account.token.get_secret_value() == SIPUNI_TOKEN
    assert account.default_region == "KZ"
    assert account.allowed_ips == [
        ip_network("185.45.152.0/24"),
        ip_network("10.1.2.3/32"),
        ip_network("2001:db8::/32"),
    ]
    assert list(account.integrations) == ["usedesk", "usedesk_sales"]

    desk = account.integrations["usedesk"]
    assert (desk.name, desk.plugin, desk.enabled) == ("usedesk", "usedesk", True)
    assert desk.routing == RoutingSettings(
        schemes=["000-913898", "Входящая"],
        transfer_schemes=["000-1734445"],
        hook_timeout_seconds=5,
        notifications=True,
    )
    assert isinstance(desk.settings, DeskSettings)
    assert desk.settings.api_token.get_secret_value() == USEDESK_TOKEN
    assert [u.extension for u in desk.settings.users] == ["101", "102"]

    # A second instance of the same plugin on the same account, with its own settings.
    sales = account.integrations["usedesk_sales"]
    assert (sales.plugin, sales.enabled, sales.routing.schemes) == ("usedesk", False, "all")
    assert isinstance(sales.settings, DeskSettings)
    assert sales.settings.api_token.get_secret_value() == "another-usedesk-token-0001"

    stub = config.accounts["654321"].integrations["amocrm_stub"]
    assert stub.plugin == "amocrm_stub" and isinstance(stub.settings, StubSettings)
    assert config.warnings == []


def test_helpers_find_the_account_by_token_and_list_enabled_integrations() -> None:
    config = parse(FULL)

    assert config.account_by_token(SIPUNI_TOKEN) is config.accounts["012345"]
    assert config.account_by_token("second-account-token-0001") is config.accounts["654321"]
    assert config.account_by_token("no-such-token-at-all") is None
    assert [(a.number, i.name) for a, i in config.enabled_integrations()] == [
        ("012345", "usedesk"),
        ("654321", "amocrm_stub"),
    ]


def test_the_allow_list_accepts_addresses_inside_its_networks_only() -> None:
    account = parse(FULL).accounts["012345"]
    open_account = parse(FULL).accounts["654321"]

    assert account.allows("185.45.152.17") and account.allows("10.1.2.3")
    assert account.allows("2001:db8::1")
    assert not account.allows("10.1.2.4") and not account.allows("not an ip")
    assert open_account.allows("203.0.113.9")  # an empty list allows anyone


def test_every_routing_setting_is_a_core_key_of_an_integration_table() -> None:
    assert set(RoutingSettings.model_fields) <= set(IntegrationTable.model_fields)
    assert {"plugin", "enabled"} <= set(IntegrationTable.model_fields)


def test_an_absolute_storage_path_is_kept_and_text_is_relative_to_base_dir(
    tmp_path: Path,
) -> None:
    absolute = parse(f'[storage]\npath = "{tmp_path / "x.db"}"\n' + ACCOUNT)
    relative = parse('[storage]\npath = "db/x.db"\n' + ACCOUNT, base_dir=tmp_path)

    assert absolute.storage.path == tmp_path / "x.db"
    assert relative.storage.path == tmp_path / "db" / "x.db"


# --- the embedded defaults ------------------------------------------------------------------


def test_the_embedded_defaults_give_a_demo_account_on_the_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    config = default_config(TYPES, environ={})

    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.storage.backend == "sqlite"
    assert config.storage.path == tmp_path / "connector.db"
    account = config.accounts["012345"]
    assert account.token.get_secret_value() == DEMO_TOKEN == "demo-token-change-me-0000"
    stub = account.integrations["amocrm_stub"]
    assert (stub.plugin, stub.enabled) == ("amocrm_stub", True)
    assert isinstance(stub.settings, StubSettings)
    assert config.warnings == ["accounts.012345.token: the demo token is public; set your own"]


def test_the_embedded_defaults_skip_the_stub_when_it_is_not_installed() -> None:
    config = default_config({"usedesk": TYPES["usedesk"]}, environ={})

    assert config.accounts["012345"].integrations == {}


def test_the_embedded_defaults_file_states_the_models_defaults() -> None:
    text = resources.files("connector_core").joinpath("defaults.toml").read_text("utf-8")
    raw = tomllib.loads(text)

    assert ServerConfig(**raw["server"]) == ServerConfig()
    assert TrackerConfig(**raw["tracker"]) == TrackerConfig()
    assert LoggingConfig(**raw["logging"]) == LoggingConfig()
    assert StorageConfig(**raw["storage"]) == StorageConfig()
    assert ClusterConfig(**raw["cluster"]) == ClusterConfig()
    assert NotificationsConfig(**raw["notifications"]) == NotificationsConfig()
    assert ReconcileConfig(**raw["reconcile"]) == ReconcileConfig()
    core = raw["accounts"]["012345"]["integrations"]["amocrm_stub"]
    assert set(core) == set(IntegrationTable.model_fields)  # every core key is written out
    assert IntegrationTable(**core) == IntegrationTable(plugin="amocrm_stub")


# --- secrets from the environment -------------------------------------------------------------


def test_references_to_environment_variables_are_replaced() -> None:
    text = (
        '[server]\npublic_url = "https://${HOST}/connector"\nport = "${PORT}"\n'
        '[accounts.012345]\ntoken = "${SIPUNI_TOKEN_012345}"\n'
        + DESK.replace('"usedesk-secret-token-abcdef"', '"${USEDESK_TOKEN}"')
        + 'users = [{ extension = "${EXT}", agent = 1 }]\n'
    )
    config = parse(text, env={**ENV, "HOST": "crm.example.com", "PORT": "9100", "EXT": "105"})

    assert config.server.public_url == "https://crm.example.com/connector"
    assert config.server.port == 9100  # a string from the environment becomes the number
    assert config.accounts["012345"].token.get_secret_value() == SIPUNI_TOKEN
    settings = config.accounts["012345"].integrations["usedesk"].settings
    assert isinstance(settings, DeskSettings)
    assert settings.api_token.get_secret_value() == USEDESK_TOKEN
    assert settings.users[0].extension == "105"


def test_a_doubled_dollar_keeps_a_literal_reference() -> None:
    config = parse('[server]\npublic_url = "https://x.example/$${NOT_A_VAR}"\n' + ACCOUNT, env={})

    assert config.server.public_url == "https://x.example/${NOT_A_VAR}"


def test_a_missing_variable_is_one_error_with_the_path_and_the_name() -> None:
    text = '[accounts.012345]\ntoken = "${SIPUNI_TOKEN_012345}"\n' + DESK.replace(
        '"usedesk-secret-token-abcdef"', '"${USEDESK_TOKEN}"'
    )

    errors = errors_of(text, env={})

    # Not followed by "token too short" / "Field required" for the value left empty.
    assert errors == [
        "accounts.012345.token: the environment variable SIPUNI_TOKEN_012345 is not set",
        "accounts.012345.integrations.usedesk.api_token: "
        "the environment variable USEDESK_TOKEN is not set",
    ]


def test_a_malformed_reference_is_an_error() -> None:
    errors = errors_of('[server]\npublic_url = "https://${HOST"\n' + ACCOUNT, env={"HOST": "x"})

    assert len(errors) == 1 and errors[0].startswith("server.public_url: ")
    assert "$${" in errors[0]


# --- all errors at once ----------------------------------------------------------------------


def test_three_mistakes_in_different_places_are_all_reported_with_their_paths() -> None:
    text = """
[server]
port = 80800

[accounts.012345]
token = "abcdefghijklmnop-1"

[accounts.012345.integrations.usedesk]
api_token = "usedesk-secret-token-abcdef"
users = [{ extension = "101", agent = 1 }, { extension = "102", agent = 2 }, { agent = 3 }]

[tracker]
answered_ownr = "first"
"""
    assert errors_of(text) == [
        "server.port: Input should be less than or equal to 65535",
        "accounts.012345.integrations.usedesk.users[2].extension: Field required",
        "tracker.answered_ownr: unknown key (no such setting here); did you mean 'answered_owner'?",
    ]


def test_errors_follow_the_order_of_the_file_across_both_passes() -> None:
    text = (
        "[accounts.012345]\n"
        'token = "abcdefghijklmnop-1"\n'
        "[accounts.012345.integrations.usedesk]\n"
        "users = 3\n"  # pass 2
        "schemes = 7\n"  # pass 1
        "[logging]\n"
        'level = "LOUD"\n'  # pass 1
    )
    assert errors_of(text) == [
        "accounts.012345.integrations.usedesk.users: Input should be a valid list",
        'accounts.012345.integrations.usedesk.schemes: expected "all" or a list of scheme ids '
        'or names, e.g. ["000-913898", "Входящая"]',
        # A key that is missing comes after the keys that are there.
        "accounts.012345.integrations.usedesk.api_token: Field required",
        "logging.level: Input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'",
    ]


def test_the_members_of_a_union_are_one_line_at_one_path() -> None:
    errors = errors_of(ACCOUNT + DESK + "channel = 5\n")

    assert errors == [
        "accounts.012345.integrations.usedesk.channel: Input should be a valid string"
        " (a number here: write it in quotes); or Input should be a valid list"
    ]


def test_a_disabled_integration_is_still_validated() -> None:
    errors = errors_of(
        ACCOUNT + "[accounts.012345.integrations.usedesk]\nenabled = false\napi_token = 1\n"
    )

    assert errors == [
        "accounts.012345.integrations.usedesk.api_token: Input should be a valid string"
        " (a number here: write it in quotes)"
    ]


# --- plugins ----------------------------------------------------------------------------------


def test_an_unknown_plugin_is_an_error_naming_the_known_ones() -> None:
    text = ACCOUNT + '[accounts.012345.integrations.crm]\nplugin = "bitrix"\nurl = "x"\n'

    assert errors_of(text) == [
        'accounts.012345.integrations.crm.plugin: unknown plugin "bitrix"; '
        "known plugins: amocrm_stub, usedesk"
    ]


def test_the_plugin_defaults_to_the_instance_name() -> None:
    assert errors_of(ACCOUNT + "[accounts.012345.integrations.bitrix]\n") == [
        'accounts.012345.integrations.bitrix: no plugin is named "bitrix" (the instance name, '
        "as `plugin` is not set); known plugins: amocrm_stub, usedesk"
    ]


def test_a_disabled_integration_of_a_plugin_not_installed_is_a_warning() -> None:
    text = ACCOUNT + '[accounts.012345.integrations.old]\nplugin = "bitrix"\nenabled = false\n'

    config = parse(text)

    assert config.accounts["012345"].integrations == {}
    assert config.warnings == [
        'accounts.012345.integrations.old.plugin: unknown plugin "bitrix"; '
        "known plugins: amocrm_stub, usedesk; not checked"
    ]


def test_an_integration_name_must_be_lower_case() -> None:
    errors = errors_of(ACCOUNT + '[accounts.012345.integrations.Desk]\nplugin = "amocrm_stub"\n')

    assert errors == [
        "accounts.012345.integrations.Desk: "
        "an integration's name must be lower-case latin letters, digits and _"
    ]


# --- single mistakes ------------------------------------------------------------------------


def test_a_toml_syntax_error_gives_one_error_with_its_line_and_column() -> None:
    with pytest.raises(ConfigError) as caught:
        parse('[server]\nhost = "127.0.0.1"\nport = = 8080\n', origin="connector.toml")

    assert caught.value.errors == ["connector.toml, line 3, column 8: invalid TOML: Invalid value"]


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigError) as caught:
        load_config(missing, types=TYPES, environ=ENV)

    assert caught.value.errors == [f"{missing}: the config file does not exist"]


def test_the_agent_pages_phone_format_is_one_of_its_names() -> None:
    config = parse('[notifications]\nphone_format = "national"\n' + ACCOUNT)
    assert config.notifications == NotificationsConfig(phone_format=DisplayFormat.NATIONAL)
    # The CRMs' «Формат номеров» spellings are another setting's.
    assert errors_of('[notifications]\nphone_format = "+7XXXXXXXXXX"\n' + ACCOUNT) == [
        "notifications.phone_format: Input should be 'e164', 'international' or 'national'"
    ]


def test_a_misspelt_required_table_is_one_error_not_two() -> None:
    """``[acounts.012345]``: the did-you-mean line says it all; "accounts: Field required"
    beside it would send the operator looking for a second mistake."""
    assert errors_of('[acounts.012345]\ntoken = "abcdefghijklmnop-1"\n') == [
        "acounts: unknown key (no such setting here); did you mean 'accounts'?"
    ]


def test_a_number_where_text_goes_says_to_quote_it_and_an_extension_is_in_words() -> None:
    text = (
        ACCOUNT
        + '[accounts.012345.agents]\n"1x" = "agent-token-0123456789"\n'
        + DESK
        + "users = [{ extension = 101, agent = 1 }]\n"
    )
    assert errors_of(text) == [
        'accounts.012345.agents.1x: expected an extension: 1 to 8 digits, e.g. "101"',
        "accounts.012345.integrations.usedesk.users[0].extension: Input should be a valid"
        " string (a number here: write it in quotes)",
    ]


def test_a_file_without_accounts_is_an_error() -> None:
    assert errors_of("[server]\nport = 8080\n") == ["accounts: Field required"]
    assert errors_of("[accounts]\n") == [
        "accounts: at least one [accounts.<number>] table is needed"
    ]


def test_two_accounts_cannot_share_a_token() -> None:
    text = ACCOUNT + '[accounts.111111]\ntoken = "abcdefghijklmnop-1"\n'

    assert errors_of(text) == [
        "accounts.111111.token: account 012345 already uses this token; "
        "every account needs its own (the token identifies the account)"
    ]


@pytest.mark.parametrize("number", ["12345", "0123456", "01234a", '"01 234"'])
def test_an_account_number_must_be_six_digits(number: str) -> None:
    errors = errors_of(f'[accounts.{number}]\ntoken = "abcdefghijklmnop-1"\n')

    assert errors == [f"accounts.{number}: the account number must be 6 digits"]


def test_a_region_must_be_one_phonenumbers_supports() -> None:
    errors = errors_of(ACCOUNT + 'default_region = "XX"\n')

    assert errors == [
        "accounts.012345.default_region: "
        "expected a two-letter ISO 3166 region that phonenumbers supports, e.g. RU, KZ, UZ"
    ]
    assert parse(ACCOUNT + 'default_region = "uz"\n').accounts["012345"].default_region == "UZ"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"Входящая"', 'expected "all" or a list of scheme ids or names'),
        ("7", 'expected "all" or a list of scheme ids or names'),
        ("[]", "an empty list selects no calls"),
    ],
)
def test_schemes_must_be_all_or_a_list(value: str, message: str) -> None:
    errors = errors_of(ACCOUNT + DESK + f"schemes = {value}\n")

    assert len(errors) == 1
    assert errors[0].startswith(f"accounts.012345.integrations.usedesk.schemes: {message}")


def test_a_bad_scheme_in_the_list_is_reported_at_its_index() -> None:
    assert errors_of(ACCOUNT + DESK + 'schemes = ["000-913898", 5]\n') == [
        "accounts.012345.integrations.usedesk.schemes[1]: Input should be a valid string"
        " (a number here: write it in quotes)"
    ]


def test_allowed_ips_are_addresses_or_networks() -> None:
    errors = errors_of(ACCOUNT + 'allowed_ips = ["10.0.0.1/8", "nope", 7]\n')

    assert errors == [
        "accounts.012345.allowed_ips[0]: the network has host bits set; write its network address",
        "accounts.012345.allowed_ips[1]: "
        "expected an IP address (10.0.0.1) or a CIDR network (10.0.0.0/8)",
        "accounts.012345.allowed_ips[2]: expected an IP address or a CIDR network as a string",
    ]


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ("[server]\nprot = 1\n", "server.prot"),
        ("[storage]\nbackned = 1\n", "storage.backned"),
        ("[tracker]\ntimeout = 1\n", "tracker.timeout"),
        ("[logging]\nformat = 1\n", "logging.format"),
        ("[metrics]\nport = 1\n", "metrics"),
        (
            '[accounts.012345]\ntoken = "abcdefghijklmnop-1"\nregion = "RU"\n',
            "accounts.012345.region",
        ),
    ],
)
def test_unknown_keys_in_core_sections_are_errors(section: str, path: str) -> None:
    text = section if section.startswith("[accounts") else section + ACCOUNT

    [error] = errors_of(text)
    assert error.startswith(f"{path}: unknown key (no such setting here)"), error


def test_an_unknown_key_in_an_integration_goes_to_the_plugin_model() -> None:
    assert errors_of(ACCOUNT + DESK + 'api_tokn = "x"\n') == [
        "accounts.012345.integrations.usedesk.api_tokn: unknown key (no such setting here);"
        " did you mean 'api_token'?"
    ]


def test_a_value_that_should_be_a_table_says_so() -> None:
    errors = errors_of('server = 5\n[accounts]\n012345 = "x"\n')

    assert errors == ["server: Input should be a table", "accounts.012345: Input should be a table"]


def test_core_values_out_of_range_are_reported() -> None:
    errors = errors_of(
        '[server]\nmax_body_bytes = 10\npublic_url = "connector.example.com"\n'
        '[tracker]\nhangup_timeout_seconds = 0\nanswered_owner = "middle"\n'
        '[storage]\nbackend = "redis"\n' + ACCOUNT + DESK + "hook_timeout_seconds = -1\n"
    )

    assert errors == [
        "server.max_body_bytes: Input should be greater than or equal to 1024",
        'server.public_url: expected "" or a URL starting with http:// or https://',
        "tracker.hangup_timeout_seconds: Input should be greater than 0",
        "tracker.answered_owner: Input should be 'last' or 'first'",
        "storage.backend: Input should be 'sqlite'",
        "accounts.012345.integrations.usedesk.hook_timeout_seconds: Input should be greater than 0",
    ]


@pytest.mark.parametrize(
    ("pasted", "base"),
    [
        ("https://c.example.com/sipuni/", "https://c.example.com"),
        ("https://c.example.com/sipuni/abcdefgh12345678", "https://c.example.com"),
        ("https://sipuni.example.com/in/sipuni", "https://sipuni.example.com/in"),
    ],
)
def test_a_public_url_with_the_webhooks_path_says_it_is_added(pasted: str, base: str) -> None:
    """Sipuni's URL pasted whole: /sipuni/<token> would be added to it again, and every
    webhook would get a 404. The token is not repeated in the message."""
    errors = errors_of(f'[server]\npublic_url = "{pasted}"\n' + ACCOUNT)
    assert errors == [
        "server.public_url: expected the service's address without the webhook's path:"
        f" /sipuni/<token> is added to it (here: {base})"
    ]
    assert parse('[server]\npublic_url = "https://c.example.com/sipuni-in"\n' + ACCOUNT)


def test_a_lease_time_that_is_not_positive_is_refused() -> None:
    errors = errors_of("[cluster]\nlease_seconds = 0\n" + ACCOUNT)

    assert errors == ["cluster.lease_seconds: Input should be greater than 0"]


def test_the_lease_time_is_read_from_the_cluster_table() -> None:
    config = parse("[cluster]\nlease_seconds = 4.5\n" + ACCOUNT)

    assert config.cluster.lease_seconds == 4.5


# --- secrets stay secret -----------------------------------------------------------------------


def test_secrets_never_appear_in_errors() -> None:
    short_secret = "Sh0rt$ecret"  # too short for both the account and the plugin model
    text = (
        f'[accounts.012345]\ntoken = "{short_secret}"\n'
        f'[accounts.012345.integrations.usedesk]\napi_token = "{short_secret}"\n'
        "[accounts.012345.integrations.amocrm_stub]\nwebhook_secret = 12345678987654321\n"
    )

    with pytest.raises(ConfigError) as caught:
        parse(text)

    assert caught.value.errors == [
        "accounts.012345.token: the token must be at least 16 characters of A-Z a-z 0-9 _ -",
        "accounts.012345.integrations.usedesk.api_token: "
        "Value should have at least 20 items after validation",
        "accounts.012345.integrations.amocrm_stub.webhook_secret: Input should be a valid string"
        " (a number here: write it in quotes)",
    ]
    for shown in (str(caught.value), repr(caught.value)):
        assert short_secret not in shown and "12345678987654321" not in shown


def test_secrets_never_appear_in_the_config_repr_or_dump() -> None:
    config = parse(FULL)

    for shown in (repr(config), str(config), config.model_dump_json(), str(config.model_dump())):
        assert SIPUNI_TOKEN not in shown
        assert USEDESK_TOKEN not in shown
        assert "another-usedesk-token-0001" not in shown
    assert "**********" in repr(config)


# --- JSON schema ---------------------------------------------------------------------------------


def test_the_json_schema_describes_the_core_and_every_plugins_settings() -> None:
    schema = config_json_schema(TYPES)

    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["properties"]) == {
        "server",
        "storage",
        "tracker",
        "missed_calls",
        "cluster",
        "retention",
        "reconcile",
        "logging",
        "console",
        "notifications",
        "accounts",
    }
    assert schema["properties"]["accounts"]["propertyNames"] == {"pattern": "^[0-9]{6}$"}
    account = schema["$defs"]["AccountTable"]
    integrations = account["properties"]["integrations"]
    variants = {
        v["properties"]["plugin"]["const"]: v for v in integrations["additionalProperties"]["anyOf"]
    }
    assert set(variants) == {"usedesk", "amocrm_stub"}

    desk = variants["usedesk"]
    assert desk["additionalProperties"] is False
    assert desk["description"] == "A helpdesk"
    assert desk["required"] == ["api_token"]
    assert set(RoutingSettings.model_fields) | {"plugin", "enabled"} <= set(desk["properties"])
    assert {"api_token", "users", "channel"} <= set(desk["properties"])
    # The plugin's nested models are kept under its own name.
    assert desk["properties"]["users"]["items"] == {"$ref": "#/$defs/usedesk.User"}
    assert set(schema["$defs"]["usedesk.User"]["properties"]) == {"extension", "agent"}
    assert desk["properties"]["api_token"]["format"] == "password"


def test_the_json_schema_carries_no_secret_values() -> None:
    schema = config_json_schema(TYPES)
    text = json.dumps(schema, ensure_ascii=False)

    stub = next(
        v
        for v in schema["$defs"]["AccountTable"]["properties"]["integrations"][
            "additionalProperties"
        ]["anyOf"]
        if v["properties"]["plugin"]["const"] == "amocrm_stub"
    )
    assert "default" not in stub["properties"]["webhook_secret"]
    assert "default" not in schema["$defs"]["AccountTable"]["properties"]["token"]
    assert "stub-default-secret-value" not in text and "**********" not in text


def test_the_json_schema_without_plugins_still_describes_the_core_keys() -> None:
    schema = config_json_schema({})

    core = schema["$defs"]["AccountTable"]["properties"]["integrations"]["additionalProperties"]
    assert core == {"$ref": "#/$defs/IntegrationTable"}
    assert set(schema["$defs"]["IntegrationTable"]["properties"]) == (
        set(RoutingSettings.model_fields) | {"plugin", "enabled"}
    )
