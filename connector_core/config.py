"""The operator's config: one TOML file, validated in two passes, every error reported at once.

Reading a file goes through four steps, and every problem found in any of them ends up in one
``ConfigError`` whose ``errors`` are ``"<toml.path>: <what was expected>"`` lines in the order
the keys appear in the file:

1. **TOML** is parsed with ``tomllib`` (a syntax error stops here, with its line and column);
2. **secrets** written as ``${NAME}`` inside any string are replaced from the environment;
3. **pass 1** validates the core's keys — ``server``, ``storage``, ``tracker``, ``logging``,
   ``accounts`` and each integration's core keys (``plugin``, ``enabled`` and every
   ``RoutingSettings`` field: ``schemes``, ``transfer_schemes``, ``hook_timeout_seconds``…);
4. **pass 2** validates every other key of each integration table with the settings model of
   the plugin it names (``IntegrationType.settings_model``).

Messages are built from pydantic's location and message only, never from the input value, so
a token or password that fails validation never appears in an error.
"""

from __future__ import annotations

import difflib
import hmac
import ipaddress
import json
import os
import re
import tomllib
import typing
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    SerializeAsAny,
    Tag,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from connector_core.console.settings import ConsoleConfig
from connector_core.errors import ConfigError
from connector_core.integrations import IntegrationType, RoutingSettings
from connector_core.missed import Rules
from connector_core.phones import DisplayFormat
from connector_core.sipuni_api import DEFAULT_API_URL
from connector_core.store.urls import url_password, url_problem

__all__ = [
    "DEMO_TOKEN",
    "STORAGE_URL_ENV",
    "AccountConfig",
    "Config",
    "ConsoleConfig",
    "IntegrationConfig",
    "IntegrationTable",
    "LoggingConfig",
    "NotificationsConfig",
    "ServerConfig",
    "StorageConfig",
    "TrackerConfig",
    "config_json_schema",
    "default_config",
    "load_config",
    "parse_config_text",
]

DEMO_TOKEN = "demo-token-change-me-0000"
# When set, the PostgreSQL URL of [storage] url (the file's value, if any, is not used).
STORAGE_URL_ENV = "CONNECTOR_STORAGE_URL"
"""The token of the demo account in the embedded defaults: public, so never for production."""

_ACCOUNT_NUMBER = re.compile(r"[0-9]{6}")
_INSTANCE_NAME = re.compile(r"[a-z0-9_]+")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ENV_REF = re.compile(r"\$(\$)?\{([^}]*)(\}?)")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ACTUAL_LENGTH = re.compile(r", not \d+$")
# What a value of each pattern the settings use looks like, in words: pydantic's message names
# the regular expression, which an operator should not have to read.
_MEANT = re.compile(r"'([^']+)'")
_PATTERN_WORDS = {
    r"^\d{1,8}$": 'an extension: 1 to 8 digits, e.g. "101"',
    r"^[^@\s]+@[^@\s]+\.[^@\s]+$": 'an e-mail address, e.g. "agent@example.ru"',
    r"^https?://[^\s/]+(/[^\s]*)?$": 'an http(s) URL, e.g. "https://api.usedesk.ru"',
    r"\S": "text that is not blank",
    r"^[^,]*$": "text without commas",
    r"^[a-z0-9-]{1,63}$": 'a subdomain: lowercase letters, digits and "-", e.g. "example"',
}
_TOML_POSITION = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$", re.DOTALL)

Loc = tuple[str | int, ...]


def _error(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


# --- value types shared by the file models and the public ones --------------------------------


def _check_account_number(value: str) -> str:
    if not _ACCOUNT_NUMBER.fullmatch(value):
        raise _error("account_number", "the account number must be 6 digits")
    return value


def _check_instance_name(value: str) -> str:
    if not _INSTANCE_NAME.fullmatch(value):
        raise _error(
            "instance_name",
            "an integration's name must be lower-case latin letters, digits and _",
        )
    return value


def _check_token(value: SecretStr) -> SecretStr:
    if not _TOKEN.fullmatch(value.get_secret_value()):
        raise _error("token", "the token must be at least 16 characters of A-Z a-z 0-9 _ -")
    return value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _check_region(value: str) -> str:
    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise _error(
            "region",
            "expected a two-letter ISO 3166 region that phonenumbers supports, e.g. RU, KZ, UZ",
        )
    return value


def _parse_network(value: Any) -> Any:
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    if not isinstance(value, str):
        raise _error("ip_network", "expected an IP address or a CIDR network as a string")
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            raise _error(
                "ip_network", "the network has host bits set; write its network address"
            ) from None
        raise _error(
            "ip_network", "expected an IP address (10.0.0.1) or a CIDR network (10.0.0.0/8)"
        ) from None


def _check_public_url(value: str) -> str:
    value = value.strip()
    if value and not value.startswith(("http://", "https://")):
        raise _error("url", 'expected "" or a URL starting with http:// or https://')
    return value.rstrip("/")


def webhook_path_in(url: str) -> str | None:
    """Why ``url`` cannot be the service's address: it already ends with the webhook's path
    (pasted from Sipuni's settings, say), to which ``/sipuni/<token>`` would be added again."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if path.endswith("/sipuni") or "/sipuni/" in path:
        # Cut in the path: the host may have "sipuni" in its name too.
        base = f"{parts.scheme}://{parts.netloc}{path[: path.find('/sipuni')]}"
        return (
            "the service's address without the webhook's path: /sipuni/<token> is added to"
            f" it (here: {base})"
        )
    return None


def _check_service_url(value: str) -> str:
    value = _check_public_url(value)
    problem = webhook_path_in(value)
    if problem is not None:
        raise _error("url", f"expected {problem}")
    return value


def _schemes_kind(value: Any) -> str | None:
    if value == "all":
        return "all"
    if isinstance(value, list):
        return "list"
    return None


def _check_scheme_list(value: list[str]) -> list[str]:
    if not value:
        raise _error(
            "schemes",
            'an empty list selects no calls; write "all", list the schemes, or set enabled = false',
        )
    return value


def _check_api_key(value: SecretStr) -> SecretStr:
    # Shorter keys could not be masked in the log (httplog.MIN_SECRET_LENGTH).
    if not re.fullmatch(r"\S{8,}", value.get_secret_value()):
        raise _error(
            "sipuni_api_key",
            "the integration key is at least 8 characters without spaces; copy it from"
            " Sipuni's cabinet (docs/sipuni.md)",
        )
    return value


AccountNumber = Annotated[str, AfterValidator(_check_account_number)]
InstanceName = Annotated[str, AfterValidator(_check_instance_name)]
Extension = Annotated[str, Field(pattern=r"^\d{1,8}$")]
Token = Annotated[
    SecretStr,
    AfterValidator(_check_token),
    Field(json_schema_extra={"minLength": 16, "pattern": "^[A-Za-z0-9_-]{16,}$"}),
]
Region = Annotated[
    str,
    BeforeValidator(_upper),
    AfterValidator(_check_region),
    Field(json_schema_extra={"pattern": "^[A-Za-z]{2}$"}),
]
Network = Annotated[IPv4Network | IPv6Network, BeforeValidator(_parse_network)]
SipuniKey = Annotated[
    SecretStr, AfterValidator(_check_api_key), Field(json_schema_extra={"minLength": 8})
]
ApiUrl = Annotated[str, AfterValidator(_check_public_url), Field(min_length=1)]
SchemeRef = Annotated[str, Field(min_length=1)]
Schemes = Annotated[
    Annotated[Literal["all"], Tag("all")]
    | Annotated[list[SchemeRef], AfterValidator(_check_scheme_list), Tag("list")],
    Discriminator(
        _schemes_kind,
        custom_error_type="schemes",
        custom_error_message=(
            'expected "all" or a list of scheme ids or names, e.g. ["000-913898", "Входящая"]'
        ),
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sections that are the same in the file and in the Config object --------------------------


class ServerConfig(_Strict):
    """``[server]``: where the webhook listener binds."""

    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    max_body_bytes: int = Field(
        65536, ge=1024, description="Largest webhook body accepted; bigger ones get 413."
    )
    public_url: Annotated[str, AfterValidator(_check_service_url)] = Field(
        "", description="The service's address as people reach it, for links; may be empty."
    )
    keepalive_timeout_seconds: float = Field(
        75.0,
        gt=0,
        description="A connection is closed when no complete request head has arrived this long "
        "after it opened or after the last answer: idle keep-alive connections and half-sent "
        "request lines or headers.",
    )
    body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="A webhook's body must arrive within this long after its head; otherwise "
        "the answer is 408 and the connection is closed.",
    )
    readyz_token: Token | None = Field(
        None,
        description="With `Authorization: Bearer <token>`, /readyz shows its details to "
        "any address, not only to loopback.",
    )
    loop_stall_seconds: float = Field(
        120,
        gt=0,
        description="/readyz answers 503 when a background loop with work waiting has "
        "completed no round for this long (beyond its own interval).",
    )


class StorageConfig(_Strict):
    """``[storage]``: where the inbox, call states and effect keys live."""

    backend: Literal["sqlite"] = Field("sqlite", description="Storage backend.")
    path: Path = Field(
        Path("connector.db"),
        validate_default=True,
        description="Database file; a relative path is relative to the config file's folder.",
    )

    @field_validator("path")
    @classmethod
    def _resolve(cls, value: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir") or Path.cwd()
        value = value.expanduser()
        return value if value.is_absolute() else (Path(base) / value).resolve()

    url: SecretStr | None = Field(
        None,
        description="A PostgreSQL database (postgresql://user:password@host:5432/database) "
        "shared by several connector processes; left out, the SQLite file at `path` is used. "
        f"The environment variable {STORAGE_URL_ENV}, when set, takes its place.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and (problem := url_problem(value.get_secret_value())):
            raise _error("storage_url", problem)
        return value


class TrackerConfig(_Strict):
    """``[tracker]``: how events are merged into calls."""

    hangup_timeout_seconds: float = Field(
        7200,
        gt=0,
        description="A call whose final hang-up never comes is finished this long after its "
        "last event.",
    )
    finish_settle_seconds: float = Field(
        3,
        ge=0,
        description="How long a call's end waits for late ring events when none were seen.",
    )
    answered_owner: Literal["last", "first"] = Field(
        "last", description="Who owns an answered call after transfers."
    )


class MissedCallsConfig(_Strict):
    """``[missed_calls]``: the missed-call lifecycle (docs/missed-calls.md)."""

    enabled: bool = Field(
        True,
        description="Keep each number's missed calls and call the missed_again, called_back "
        "and missed_overdue hooks; false: none of them.",
    )
    callback_window_hours: float = Field(
        24,
        gt=0,
        description="A call that reaches the client this long after the first missed call "
        "is no callback of it: the missed calls are closed unanswered.",
    )
    sla_minutes: float = Field(
        15,
        ge=0,
        description="Missed calls nobody called back this long after the first are overdue "
        "(missed_overdue, once); 0: no SLA.",
    )
    settle_seconds: float = Field(
        5,
        ge=0,
        description="How long a number's newest call waits for its calls processed out of "
        "order before the records are decided.",
    )

    def rules(self) -> Rules:
        """The lifecycle's rules from these settings."""
        sla = round(self.sla_minutes * 60) if self.sla_minutes else None
        return Rules(window_seconds=round(self.callback_window_hours * 3600), sla_seconds=sla)


class ClusterConfig(_Strict):
    """``[cluster]``: several connector processes on one store (PostgreSQL)."""

    lease_seconds: float = Field(
        10,
        gt=0,
        description="A process's claim on a call's work (and on the expiry and authorisation "
        "rounds) lapses this long after the process stops renewing it: a killed process's "
        "work is taken over after about this long. Renewed every third of it.",
    )


def _positive_days(value: float) -> float:
    if value <= 0:
        raise _error(
            "retention_days",
            f"must be more than 0 days, not {value:g}; to keep everything for ever,"
            " set [retention] enabled = false",
        )
    return value


RetentionDays = Annotated[float, AfterValidator(_positive_days)]


class RetentionConfig(_Strict):
    """``[retention]``: how long finished work is kept before it is deleted
    (docs/retention.md)."""

    enabled: bool = Field(
        True, description="Off: nothing is ever deleted (the store grows with every call)."
    )
    calls_days: RetentionDays = Field(
        30,
        description="Finished calls (state, records, trace), their hook calls, dead letters, "
        "effect keys and quarantined webhooks are deleted this many days after their last "
        "activity. A fraction of a day is allowed.",
    )
    inbox_days: RetentionDays = Field(
        7,
        description="Processed (and dropped) webhooks and refused webhooks are deleted this "
        "many days after they arrived.",
    )
    interval_minutes: float = Field(10, gt=0, description="How often the background pruning runs.")
    batch_size: int = Field(
        500,
        ge=1,
        le=10_000,
        description="Rows deleted per transaction: small, so webhooks never wait long.",
    )
    batch_pause_seconds: float = Field(
        0.05, ge=0, description="Pause between two batches, for the service's own work."
    )


class ReconcileConfig(_Strict):
    """``[reconcile]``: comparing Sipuni's call history with the calls received
    (docs/sipuni.md); only for accounts with a ``sipuni_api_key``."""

    enabled: bool = Field(
        True, description="Off: no background reconciliation (`connector reconcile` still works)."
    )
    interval_minutes: float = Field(15, gt=0, description="How often the background run goes.")
    lookback_hours: float = Field(
        6,
        gt=0,
        description="Each run reads Sipuni's history of the calls started this long ago or later.",
    )
    settle_minutes: float = Field(
        10,
        ge=0,
        description="Calls that ended less than this long ago are left for a later run: they "
        "may still be going on, or their webhooks still on their way.",
    )


class LoggingConfig(_Strict):
    """``[logging]``."""

    model_config = ConfigDict(populate_by_name=True)

    level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
    ] = Field("INFO", description="Lowest level written (case does not matter).")
    json_format: bool = Field(
        False, alias="json", description="One JSON object per line instead of plain text."
    )


class NotificationsConfig(_Strict):
    """``[notifications]``: the agent page (docs/notifications.md)."""

    phone_format: DisplayFormat = Field(
        DisplayFormat.E164,
        description='How the caller\'s number is shown on cards: "e164" (+79161234567), '
        '"international" (+7 916 123-45-67) or "national" (8 (916) 123-45-67; numbers of '
        "other countries stay international).",
    )
    sound: bool = Field(
        False,
        description="Whether the agent page rings while the phone does, until the agent "
        "switches it on or off on the page (the browser remembers that choice).",
    )


# --- pass 1: the file's shape, core keys only --------------------------------------------------


class _IntegrationBase(_Strict):
    """The core's keys of an ``[accounts.<number>.integrations.<name>]`` table."""

    model_config = ConfigDict(title="Integration (core keys)")

    plugin: str | None = Field(
        None, description="Integration type (plugin) name; defaults to the instance name."
    )
    enabled: bool = Field(True, description="Off: validated, but sees no calls.")


# Every RoutingSettings field is a core key of the integration table, so a routing setting
# added there is accepted here at once; these three get the file's own checks and wording.
_ROUTING_KEYS: dict[str, Any] = {
    "schemes": (
        Schemes,
        Field("all", description='"all", or the ids / names of the schemes whose calls it sees.'),
    ),
    "transfer_schemes": (
        list[SchemeRef],
        Field([], description="Scheme ids / names whose entry fires the transfer-scheme hook."),
    ),
    "hook_timeout_seconds": (
        float,
        Field(
            10.0,
            gt=0,
            description="Longest a single hook call of this integration may work (waiting for"
            " its turn at a rate limit or a lock not counted).",
        ),
    ),
}

IntegrationTable = create_model(
    "IntegrationTable",
    __base__=_IntegrationBase,
    **{
        name: _ROUTING_KEYS.get(name, (info.annotation, info))
        for name, info in RoutingSettings.model_fields.items()
    },
)

_CORE_KEYS = frozenset(IntegrationTable.model_fields)


class AccountTable(_Strict):
    model_config = ConfigDict(title="Account")

    token: Token = Field(description="Secret in the webhook URL /sipuni/<token>.")
    default_region: Region = Field(
        "RU", description="Region of phone numbers written without a country code."
    )
    allowed_ips: list[Network] = Field(
        [], description="Addresses allowed to send webhooks; empty allows any."
    )
    integrations: dict[InstanceName, IntegrationTable] = Field(
        {}, description="Integration instances, by name."
    )
    agents: dict[Extension, Token] = Field(
        {}, description="Agent page tokens by extension: who may watch whose ringing phone."
    )
    sipuni_api_key: SipuniKey | None = Field(
        None,
        description="The account's integration key for Sipuni's API (schemes check; write it"
        " as ${SIPUNI_KEY} and keep it in the environment). Left out: no API calls.",
    )
    sipuni_api_url: ApiUrl = Field(
        DEFAULT_API_URL, description="Sipuni's API; another URL only for a sandbox."
    )


def _check_accounts(value: dict[str, AccountTable]) -> dict[str, AccountTable]:
    if not value:
        raise _error("accounts", "at least one [accounts.<number>] table is needed")
    return value


class ConfigFile(_Strict):
    model_config = ConfigDict(title="connector config")

    server: ServerConfig = Field(default_factory=ServerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    missed_calls: MissedCallsConfig = Field(default_factory=MissedCallsConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    accounts: Annotated[dict[AccountNumber, AccountTable], AfterValidator(_check_accounts)] = Field(
        description="Sipuni accounts, by their 6-digit number."
    )


# --- the validated Config object ----------------------------------------------------------------


class IntegrationConfig(_Strict):
    """One integration instance, ``accounts.<number>.integrations.<name>``, fully validated."""

    name: InstanceName
    plugin: str
    enabled: bool = True
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    settings: SerializeAsAny[BaseModel]


class AccountConfig(_Strict):
    """One Sipuni account, ``accounts.<number>``."""

    number: AccountNumber
    token: Token
    default_region: Region = "RU"
    allowed_ips: list[Network] = []
    integrations: dict[str, IntegrationConfig] = {}
    agents: dict[str, Token] = {}
    sipuni_api_key: SipuniKey | None = None
    sipuni_api_url: ApiUrl = DEFAULT_API_URL

    def allows(self, address: str) -> bool:
        """Whether a webhook from ``address`` is allowed (an empty allow-list allows all)."""
        if not self.allowed_ips:
            return True
        try:
            ip: IPv4Address | IPv6Address = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.allowed_ips)


class Config(_Strict):
    """The whole validated config."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    missed_calls: MissedCallsConfig = Field(default_factory=MissedCallsConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    accounts: dict[str, AccountConfig]
    warnings: list[str] = Field(
        [], description="Things worth telling the operator that are not errors."
    )

    def account_by_token(self, token: str) -> AccountConfig | None:
        """The account whose webhook token is ``token`` (compared in constant time)."""
        found = None
        given = token.encode()
        for account in self.accounts.values():
            if hmac.compare_digest(account.token.get_secret_value().encode(), given):
                found = account
        return found

    def secrets(self) -> list[str]:
        """Every secret value in the config (account and agent tokens, plugin ``SecretStr``
        settings), for the log to mask."""
        found = _secret_values(self)
        url = self.storage.url
        if url is not None and (password := url_password(url.get_secret_value())):
            found.add(password)  # as a driver's error may quote it alone
        return sorted(found)

    def enabled_integrations(self) -> Iterator[tuple[AccountConfig, IntegrationConfig]]:
        """Every enabled integration instance with its account, in file order."""
        for account in self.accounts.values():
            for integration in account.integrations.values():
                if integration.enabled:
                    yield account, integration

    def integration_keys(self, name: str | None = None) -> list[str]:
        """``ACCOUNT/NAME`` of every integration in the file (enabled or not), in file order;
        with ``name``, of those called ``name`` only."""
        return [
            f"{account.number}/{integration}"
            for account in self.accounts.values()
            for integration in account.integrations
            if name is None or integration == name
        ]

    def integrations_named(self, given: str) -> list[str]:
        """What a command's ``--integration`` names: an ``ACCOUNT/NAME`` as given (a removed
        integration's stored rows may be asked for), or every integration called ``given``
        (the bare name the calls table shows)."""
        return [given] if "/" in given else self.integration_keys(given)

    def integrations_listed(self) -> str:
        """The file's integrations for a message: ``012345/usedesk, 012345/amocrm_stub``."""
        return ", ".join(self.integration_keys()) or "none configured"

    def not_configured(self, keys: Iterable[str]) -> str | None:
        """What to say of the ``ACCOUNT/NAME`` given that are not in the file (a typo, or an
        integration removed since, whose stored rows a command may still be asked for)."""
        known = self.integration_keys()
        unknown = [key for key in keys if key not in known]
        if not unknown:
            return None
        listed = self.integrations_listed()
        return f"{', '.join(unknown)} is not in the config (integrations: {listed})"


# --- public API -----------------------------------------------------------------------------


def load_config(
    source: str | Path,
    *,
    types: Mapping[str, IntegrationType],
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Read and validate the config file at ``source``.

    :param types: the registered integration types, by name (what ``plugin = "…"`` names).
    :param environ: where ``${NAME}`` references are looked up; ``os.environ`` by default.
    :param base_dir: what relative paths are relative to; the file's folder by default.
    :raises ConfigError: with every problem found.
    """
    path = Path(source)
    try:
        text = read_config_text(path)
    except FileNotFoundError:
        raise ConfigError([f"{path}: the config file does not exist"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: {not_utf8(exc)}"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file ({exc.strerror})"]) from None
    return parse_config_text(
        text,
        types=types,
        environ=environ,
        base_dir=base_dir if base_dir is not None else path.resolve().parent,
        origin=str(path),
    )


def read_config_text(path: Path) -> str:
    """The config file's text. A byte-order mark that a Windows editor put first is dropped:
    TOML does not allow one, and nothing in the editor shows it."""
    return path.read_bytes().decode("utf-8-sig")


def not_utf8(exc: UnicodeDecodeError) -> str:
    """What to tell about a config file that is not UTF-8: where, and what to do about it."""
    data = bytes(exc.object)
    line = data[: exc.start].count(b"\n") + 1
    return (
        f"the config file is not UTF-8 text (byte 0x{data[exc.start]:02X} on line {line}):"
        " save it as UTF-8; an editor on Windows may have saved the Russian letters in"
        " Windows-1251"
    )


def parse_config_text(
    text: str,
    *,
    types: Mapping[str, IntegrationType],
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    origin: str = "<text>",
) -> Config:
    """Validate config ``text``; relative paths are relative to ``base_dir`` (default: cwd).

    ``origin`` names the text in errors that have no TOML path (syntax errors).
    """
    return _build(_parse_toml(text, origin), types, environ, base_dir, origin)


def default_config(
    types: Mapping[str, IntegrationType], environ: Mapping[str, str] | None = None
) -> Config:
    """The embedded defaults (``connector_core/defaults.toml``): a demo account on 127.0.0.1.

    Integrations whose plugin is not among ``types`` are left out quietly.
    """
    origin = "<embedded defaults.toml>"
    text = resources.files("connector_core").joinpath("defaults.toml").read_text("utf-8")
    raw = _parse_toml(text, origin)
    for account in (raw.get("accounts") or {}).values():
        integrations = account.get("integrations") or {}
        for name in list(integrations):
            if integrations[name].get("plugin", name) not in types:
                del integrations[name]
    return _build(raw, types, environ, None, origin)


def config_json_schema(types: Mapping[str, IntegrationType]) -> dict[str, Any]:
    """The JSON schema of the whole file, each plugin's settings included.

    An integration table is ``anyOf`` one variant per plugin: the core keys, ``plugin`` as a
    ``const`` of the plugin's name, and the plugin's settings. Secret fields carry no default.
    """
    schema = ConfigFile.model_json_schema(mode="validation")
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    core_ref = f"#/$defs/{IntegrationTable.__name__}"
    core = defs[IntegrationTable.__name__]
    integrations = defs[AccountTable.__name__]["properties"]["integrations"]
    integrations["propertyNames"] = {"pattern": "^[a-z0-9_]+$"}
    schema["properties"]["accounts"]["propertyNames"] = {"pattern": "^[0-9]{6}$"}
    schema["properties"]["accounts"]["minProperties"] = 1
    if types:
        variants = []
        for name in sorted(types):
            variants.append(_plugin_variant(name, types[name], core, defs))
        integrations["additionalProperties"] = {"anyOf": variants}
        if core_ref not in json.dumps(schema):
            del defs[IntegrationTable.__name__]
    scrub_secrets(schema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# --- the steps ------------------------------------------------------------------------------


def _parse_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_POSITION.match(str(exc))
        if match:
            what, line, column = match.groups()
            where = f"{origin}, line {line}, column {column}"
        else:
            what, where = str(exc), origin
        raise ConfigError([f"{where}: invalid TOML: {what}"]) from None


def _build(
    raw: dict[str, Any],
    types: Mapping[str, IntegrationType],
    environ: Mapping[str, str] | None,
    base_dir: Path | None,
    origin: str,
) -> Config:
    env_problems: list[tuple[Loc, str]] = []
    problems: list[tuple[Loc, str]] = []
    warnings: list[tuple[Loc, str]] = []
    unresolved: list[Loc] = []
    env = os.environ if environ is None else environ
    raw = _substitute(raw, env, (), env_problems, unresolved)
    storage = raw.get("storage", {})
    if env.get(STORAGE_URL_ENV) and isinstance(storage, dict):
        # The database password stays out of the file; the tests run the suites on PostgreSQL.
        raw = {**raw, "storage": {**storage, "url": env[STORAGE_URL_ENV]}}
        if problem := url_problem(env[STORAGE_URL_ENV]):
            # The file may not even have the key: name where the bad value came from.
            env_problems.append((("storage", "url"), f"{problem} (from {STORAGE_URL_ENV})"))
            unresolved.append(("storage", "url"))
    context = {"base_dir": base_dir or Path.cwd()}

    # Pass 1: the core keys (plugin keys are split off each integration table first).
    core_raw, plugin_parts = _split_plugin_keys(raw)
    file: ConfigFile | None = None
    try:
        file = ConfigFile.model_validate(core_raw, context=context)
    except ValidationError as exc:
        problems += _located(exc, (), core_raw, ConfigFile)

    # Pass 2: each integration's own keys, by its plugin's settings model.
    settings: dict[tuple[str, str], BaseModel] = {}
    for (number, name), (table, part) in plugin_parts.items():
        loc: Loc = ("accounts", number, "integrations", name)
        plugin = table.get("plugin", name)
        if not isinstance(plugin, str):
            continue  # pass 1 said so
        known = types.get(plugin)
        if known is None:
            where = (*loc, "plugin") if "plugin" in table else loc
            if table.get("enabled", True) is False:
                warnings.append((where, f"{_unknown_plugin(plugin, table, types)}; not checked"))
            else:
                problems.append((where, _unknown_plugin(plugin, table, types)))
            continue
        try:
            settings[(number, name)] = known.settings_model.model_validate(part, context=context)
        except ValidationError as exc:
            problems += _located(exc, loc, part, known.settings_model)

    problems += _duplicate_tokens(raw)
    # A value whose ${NAME} could not be resolved has one error: the missing variable.
    problems = env_problems + [p for p in problems if not _under(p[0], unresolved)]
    if problems or file is None:
        raise ConfigError(_format(problems, raw, origin))

    accounts: dict[str, AccountConfig] = {}
    for number, account in file.accounts.items():
        integrations = {
            name: IntegrationConfig(
                name=name,
                plugin=integration.plugin or name,
                enabled=integration.enabled,
                routing=RoutingSettings(
                    **{key: getattr(integration, key) for key in RoutingSettings.model_fields}
                ),
                settings=settings[(number, name)],
            )
            for name, integration in account.integrations.items()
            if (number, name) in settings
        }
        accounts[number] = AccountConfig(
            number=number,
            token=account.token,
            default_region=account.default_region,
            allowed_ips=account.allowed_ips,
            integrations=integrations,
            agents=account.agents,
            sipuni_api_key=account.sipuni_api_key,
            sipuni_api_url=account.sipuni_api_url,
        )
        if account.token.get_secret_value() == DEMO_TOKEN:
            warnings.append(
                (("accounts", number, "token"), "the demo token is public; set your own")
            )
    return Config(
        server=file.server,
        storage=file.storage,
        tracker=file.tracker,
        missed_calls=file.missed_calls,
        cluster=file.cluster,
        retention=file.retention,
        reconcile=file.reconcile,
        logging=file.logging,
        console=file.console,
        notifications=file.notifications,
        accounts=accounts,
        warnings=_format(warnings, raw, origin),
    )


def _substitute(
    value: Any, env: Mapping[str, str], loc: Loc, problems: list[tuple[Loc, str]], bad: list[Loc]
) -> Any:
    """A copy of ``value`` with ``${NAME}`` in every string replaced from ``env``."""
    if isinstance(value, dict):
        return {k: _substitute(v, env, (*loc, k), problems, bad) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, (*loc, i), problems, bad) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        escaped, name, closed = match.groups()
        if escaped:
            return "${" + name + closed
        if not closed or not _ENV_NAME.fullmatch(name):
            problems.append(
                (loc, 'a "${" here must start a variable like ${NAME} (write $${ for a literal ${)')
            )
            bad.append(loc)
            return ""
        if name not in env:
            problems.append((loc, f"the environment variable {name} is not set"))
            bad.append(loc)
            return ""
        return env[name]

    return _ENV_REF.sub(replace, value)


def _split_plugin_keys(
    raw: dict[str, Any],
) -> tuple[dict[str, Any], dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]]]:
    """The file without plugin keys, and each integration's (table, plugin keys)."""
    parts: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]] = {}
    accounts = raw.get("accounts")
    if not isinstance(accounts, dict):
        return raw, parts
    core_accounts: dict[str, Any] = {}
    for number, account in accounts.items():
        integrations = account.get("integrations") if isinstance(account, dict) else None
        if not isinstance(integrations, dict):
            core_accounts[number] = account
            continue
        core_integrations: dict[str, Any] = {}
        for name, table in integrations.items():
            if not isinstance(table, dict):
                core_integrations[name] = table
                continue
            core_integrations[name] = {k: v for k, v in table.items() if k in _CORE_KEYS}
            parts[(number, name)] = (table, {k: v for k, v in table.items() if k not in _CORE_KEYS})
        core_accounts[number] = {**account, "integrations": core_integrations}
    return {**raw, "accounts": core_accounts}, parts


def _unknown_plugin(
    plugin: str, table: dict[str, Any], types: Mapping[str, IntegrationType]
) -> str:
    known = ", ".join(sorted(types)) or "none"
    if "plugin" in table:
        return f'unknown plugin "{plugin}"; known plugins: {known}'
    return (
        f'no plugin is named "{plugin}" (the instance name, as `plugin` is not set); '
        f"known plugins: {known}"
    )


def _duplicate_tokens(raw: dict[str, Any]) -> list[tuple[Loc, str]]:
    accounts = raw.get("accounts")
    if not isinstance(accounts, dict):
        return []
    first_with: dict[str, str] = {}
    problems: list[tuple[Loc, str]] = []
    for number, account in accounts.items():
        token = account.get("token") if isinstance(account, dict) else None
        if not isinstance(token, str) or not token:
            continue
        if token in first_with:
            problems.append(
                (
                    ("accounts", number, "token"),
                    f"account {first_with[token]} already uses this token; "
                    "every account needs its own (the token identifies the account)",
                )
            )
        else:
            first_with[token] = number
    return problems


def _under(loc: Loc, unresolved: list[Loc]) -> bool:
    return any(loc[: len(bad)] == bad for bad in unresolved)


def _located(
    exc: ValidationError, prefix: Loc, data: Any, model: type[BaseModel] | None = None
) -> list[tuple[Loc, str]]:
    """pydantic's errors as (TOML location, message): never with the input value. An unknown
    key of ``model`` (or of a table nested in it) names the keys it may have been meant as."""
    found = []
    for error in exc.errors(include_url=False, include_input=False):
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = _unknown_key(model, error["loc"])
        elif error["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        elif error["type"] in ("model_type", "model_attributes_type", "dict_type"):
            message = "Input should be a table"  # not "a valid dictionary or instance of …"
        elif error["type"] in ("too_short", "too_long"):
            # "…at least 20 items after validation, not 11": the length of a secret is a hint.
            message = _ACTUAL_LENGTH.sub("", message)
        elif error["type"] == "string_pattern_mismatch":
            words = _PATTERN_WORDS.get(str((error.get("ctx") or {}).get("pattern")))
            message = f"expected {words}" if words else message
        loc = _real_loc(error["loc"], data, missing=error["type"] == "missing")
        if error["type"] == "string_type" and _is_number(_value_at(loc, data)):
            message += " (a number here: write it in quotes)"
        found.append(((*prefix, *loc), message))
    return found


def _value_at(loc: Loc, data: Any) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _unknown_key(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str:
    """``unknown key; did you mean "on_duty_user"?`` for a key no setting has."""
    fields = _fields_at(model, loc[:-1]) if model is not None else []
    close = difflib.get_close_matches(str(loc[-1]), fields, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(f'{name!r}' for name in close)}?" if close else ""
    return f"unknown key (no such setting here){hint}"


def _fields_at(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The keys of the table at ``path`` inside ``model`` (following tables, lists of tables
    and tables of tables); none when the path leads elsewhere."""
    current: Any = model
    keyed = False  # the step before was a table of tables: this step is one of its keys
    for step in path:
        if keyed or isinstance(step, int):  # a key or an item: its type came with the field
            keyed = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(step))
        if field is None:
            return []
        keyed = _is_table_of_tables(field.annotation)
        current = _table_type(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _is_table_of_tables(annotation: Any) -> bool:
    if typing.get_origin(annotation) is dict:
        return True
    return any(_is_table_of_tables(arg) for arg in typing.get_args(annotation))


def _table_type(annotation: Any) -> Any:
    """The model a field holds: itself, or the items of a list or the values of a dict."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _table_type(arg)
        if found is not None:
            return found
    return None


def _real_loc(loc: tuple[Any, ...], data: Any, *, missing: bool) -> Loc:
    """Keep the parts of pydantic's ``loc`` that are keys or indexes in the input.

    pydantic adds union member tags (``list[str]``), ``[key]`` for a dict key's own errors and
    validator names; none of them are in the file, so following the data drops them.
    """
    kept: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            kept.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            kept.append(part)
            node = node[part]
        elif missing and i == len(loc) - 1 and isinstance(part, str | int):
            kept.append(part)
    return tuple(kept)


def _document_order(loc: Loc, data: Any) -> tuple[int, ...]:
    order = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            order.append(list(node).index(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            order.append(part)
            node = node[part]
        else:
            order.append(1 << 30)
            node = None
    return tuple(order)


def _toml_path(loc: Loc) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            path += f".{key}" if path else key
    return path


def _format(problems: list[tuple[Loc, str]], raw: dict[str, Any], origin: str) -> list[str]:
    """One line per TOML path, in the order the keys appear in the file. A required key
    reported missing is left out when a misspelt key beside it was taken for it ("did you
    mean 'accounts'?"): that line already says what to do."""
    meant = {
        (*loc[:-1], name)
        for loc, message in problems
        if message.startswith("unknown key")
        for name in _MEANT.findall(message)
    }
    problems = [(loc, m) for loc, m in problems if not (m == "Field required" and loc in meant)]
    by_path: dict[Loc, list[str]] = {}
    for loc, message in sorted(problems, key=lambda p: _document_order(p[0], raw)):
        messages = by_path.setdefault(loc, [])
        if message not in messages:
            messages.append(message)
    return [f"{_toml_path(loc) or origin}: {'; or '.join(msgs)}" for loc, msgs in by_path.items()]


# --- JSON schema helpers --------------------------------------------------------------------


def _plugin_variant(
    name: str, kind: IntegrationType, core: dict[str, Any], defs: dict[str, Any]
) -> dict[str, Any]:
    prefix = f"{name}."
    own = kind.settings_model.model_json_schema(
        mode="validation", ref_template="#/$defs/" + prefix + "{model}"
    )
    for def_name, definition in own.pop("$defs", {}).items():
        defs[prefix + def_name] = definition
    plugin = {
        "const": name,
        "description": f"Integration type; may be left out when the instance is {name}.",
    }
    # The core's keys never reach the plugin's model, so they win a clash here as well.
    properties = {**core["properties"], "plugin": plugin}
    properties.update({k: v for k, v in own.get("properties", {}).items() if k not in properties})
    variant: dict[str, Any] = {
        "title": f"{name} integration",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    description = kind.description or own.get("description")
    if description:
        variant["description"] = description
    required = [key for key in own.get("required", []) if key not in core["properties"]]
    if required:
        variant["required"] = required
    return variant


def _has_secret(schema: Any) -> bool:
    if isinstance(schema, dict):
        if schema.get("format") == "password" or schema.get("writeOnly") is True:
            return True
        return any(_has_secret(v) for k, v in schema.items() if k != "properties")
    if isinstance(schema, list):
        return any(_has_secret(v) for v in schema)
    return False


def scrub_secrets(schema: Any) -> None:
    """Drop defaults and examples of every secret field, wherever it is in the schema."""
    if isinstance(schema, dict):
        if _has_secret(schema):
            schema.pop("default", None)
            schema.pop("examples", None)
        for value in schema.values():
            scrub_secrets(value)
    elif isinstance(schema, list):
        for value in schema:
            scrub_secrets(value)


def _secret_values(value: Any) -> set[str]:
    """The values of every ``SecretStr`` in a model, however deep in models, dicts and lists."""
    if isinstance(value, SecretStr):
        return {value.get_secret_value()}
    if isinstance(value, BaseModel):
        value = [getattr(value, name) for name in type(value).model_fields]
    elif isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return set().union(*(_secret_values(item) for item in value))
    return set()
