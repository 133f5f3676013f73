"""The Usedesk integration's settings: every setting of Sipuni's built-in integration.

Each field's description names the Russian label operators know from Sipuni's cabinet;
docs/usedesk.md lists them with defaults and an example.
"""

from __future__ import annotations

from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
)

from connector_core import templates
from connector_core.phones import PhoneFormat

STATUS_NEW, STATUS_OPEN, STATUS_ON_HOLD, STATUS_PENDING = 8, 1, 5, 6

DEFAULT_TEMPLATES = {
    "ru": {
        "client_name": "Клиент {phone}",
        "ticket_subject": "{direction} звонок {phone}",
        "ticket_tag": "sipuni, {direction_code}",
        "ticket_message": "{direction} звонок {phone}, {started_at}",
        "comment": (
            "<p><b>{direction} звонок</b>: {result}</p>"
            "<p>Клиент: {phone}<br>Линия: {line}<br>Сотрудник: {agent}<br>"
            "Схема: {final_scheme}<br>Начало: {started_at}<br>"
            "Длительность: {duration}, разговор: {talk_duration}<br>Конец звонка: {end}</p>"
            "<p>{record_link}</p><p>ID: {call_id}</p>"
        ),
    },
    "en": {
        "client_name": "Client {phone}",
        "ticket_subject": "{direction} call {phone}",
        "ticket_tag": "sipuni, {direction_code}",
        "ticket_message": "{direction} call {phone}, {started_at}",
        "comment": (
            "<p><b>{direction} call</b>: {result}</p>"
            "<p>Client: {phone}<br>Line: {line}<br>Employee: {agent}<br>"
            "Scheme: {final_scheme}<br>Started: {started_at}<br>"
            "Duration: {duration}, talk: {talk_duration}<br>Call end: {end}</p>"
            "<p>{record_link}</p><p>ID: {call_id}</p>"
        ),
    },
}

Email = Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]


def _agent(value: object) -> object:
    # pydantic's lax int takes true/false as 1/0: `agent = true` would map to agent 1.
    if isinstance(value, bool):
        raise ValueError("expected a Usedesk agent id (a number) or the agent's e-mail")
    if isinstance(value, str) and not value.strip().isdigit() and "@" not in value:
        raise ValueError(f"expected a Usedesk agent id (a number) or an e-mail, got {value!r}")
    return value


# A Usedesk agent id, or an e-mail resolved through /users.
Agent = Annotated[int | Email, BeforeValidator(_agent)]


class UserMapping(BaseModel):
    """«Пользователи»: a Sipuni extension and the Usedesk agent who works at it."""

    model_config = ConfigDict(extra="forbid")

    extension: str = Field(pattern=r"^\d{1,8}$", description="Sipuni extension (short number)")
    agent: Agent = Field(description="Usedesk agent id, or the agent's e-mail")


class Templates(BaseModel):
    """«Шаблоны». Unset templates take the defaults of ``language``."""

    model_config = ConfigDict(extra="forbid")

    client_name: str | None = Field(None, description="«Имя клиента»: a new client card's name")
    ticket_subject: str | None = Field(None, description="«Тема тикета»: a new ticket's subject")
    ticket_tag: str | None = Field(
        None, description="«Тема тикета» → tag: tags of a new ticket, comma-separated"
    )
    ticket_message: str | None = Field(None, description="a new ticket's first (private) message")
    comment: str | None = Field(None, description="the call's comment (HTML)")

    @field_validator("*")
    @classmethod
    def _known_variables(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                templates.check(value)
            except templates.TemplateError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("comment")
    @classmethod
    def _comment_names_the_call(cls, value: str | None) -> str | None:
        # After a crash mid-request the connector finds its own comment by the call id;
        # without it, the comment could be written twice.
        if value is not None and "{call_id}" not in value:
            raise ValueError(
                "the comment template must contain {call_id}: it is how the "
                "connector recognises its own comment after a crash"
            )
        return value


class UsedeskSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # «Авторизация»
    api_token: SecretStr = Field(description="«API-ключ»: the secret key of a Usedesk API channel")
    base_url: str = Field(
        "https://api.usedesk.ru",
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="API address; boxed installs have their own",
    )
    web_url: str = Field(
        "https://secure.usedesk.ru",
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="Usedesk's web interface, for links in agent cards",
    )
    channel_id: int | None = Field(
        None, description="channel for new tickets (default: the API channel)"
    )

    # «Сценарии»
    search_statuses: list[int] = Field(
        [STATUS_NEW, STATUS_OPEN, STATUS_ON_HOLD, STATUS_PENDING],
        min_length=1,
        description="«Поиск тикетов по статусу»: only the client's tickets in these statuses count",
    )
    always_new_ticket: bool = Field(
        False, description="«Создавать новый тикет, если уже есть созданные тикеты»"
    )
    create_client: bool = Field(True, description="«Создавать Клиента»")
    create_ticket: bool = Field(True, description="«Создавать Тикет»")
    ticket_type: Literal["question", "task", "problem", "incident"] = Field(
        "question", description="«Тип создаваемого тикета»"
    )
    first_on_line_responsible: bool = Field(
        False, description="«Ставить ответственным первого пользователя на линии»"
    )

    # When a ticket is created for a call whose client has none open (Sipuni's integration
    # creates it on ring and has no such setting): see docs/usedesk.md for the trade-off.
    ticket_created_on: Literal["ring", "answer", "end"] = Field(
        "answer",
        description="create a call's new ticket when the phone rings, when it is answered"
        " (owner set at creation), or at the end (owner and comment in the one request)",
    )

    # «Шаблоны»
    language: Literal["ru", "en"] = Field("ru", description="language of the default templates")
    templates: Templates = Field(default_factory=Templates)
    timezone: str = Field("Europe/Moscow", description="time zone of dates in templates")

    # «Пользователи»
    users: list[UserMapping] = Field(default_factory=list)
    on_duty_user: Agent | None = Field(
        None, description="«Дежурный»: owner of new tickets from missed calls"
    )

    # Calls without a usable caller number (hidden, "anonymous", too short); Sipuni's
    # integration has no such setting, so no Russian label.
    hidden_number: Literal["ticket", "skip"] = Field(
        "ticket",
        description="a missed call without a usable number: a ticket under hidden_number_client"
        " for the on-duty agent, or skip it",
    )
    hidden_number_client: str = Field(
        "Скрытый номер",
        min_length=1,
        max_length=255,
        pattern=r"\S",
        description="name of the Usedesk client that missed calls without a number go to;"
        " found by this name, created if absent",
    )

    # «Пропущенные звонки»: what the core's missed-call lifecycle does to the ticket
    # (docs/usedesk.md). Sipuni's integration has none of these; the labels are ours.
    missed_same_ticket_hours: int = Field(
        24,
        ge=0,
        le=24 * 30,
        description="«Повторные пропущенные — в тикет первого»: for this many hours after a"
        " number's first missed call, its calls (missed again, the callback) go to that call's"
        " ticket while it is open, even with always_new_ticket; 0: off",
    )
    callback_comment: bool = Field(
        True, description="«Комментарий «Перезвонили»» on the missed call's ticket"
    )
    callback_owner: bool = Field(
        False, description="«Ответственный — кто перезвонил»: the missed ticket's new owner"
    )
    callback_status: int | None = Field(
        None, description="«Статус после перезвона»: the missed ticket's status (2 = Выполнен)"
    )
    # TOML has no null: an empty string turns these two off.
    overdue_tag: str = Field(
        "не перезвонили",
        max_length=100,
        pattern=r"^[^,]*$",
        description="«Тег просроченного пропущенного»: added past the SLA; empty: no tag",
    )
    overdue_priority: Literal["", "low", "medium", "urgent", "extreme"] = Field(
        "urgent", description="«Приоритет просроченного пропущенного»; empty: unchanged"
    )
    overdue_card: bool = Field(
        True, description="«Карточка дежурному»: the on-duty agent's page shows the overdue call"
    )

    # «Дополнительные настройки» (schemes, transfer schemes and notifications are core keys)
    phone_format: PhoneFormat = Field(
        PhoneFormat.INTERNATIONAL, description="«Формат номеров» in client cards and tickets"
    )
    rate_limit_per_minute: int = Field(
        100, ge=1, le=1000, description="requests per minute to Usedesk (its limit: ~150)"
    )
    burst_per_second: int = Field(
        5, ge=1, le=100, description="at most this many requests in any one second"
    )
    request_timeout_seconds: float = Field(10.0, gt=0, le=120)
    write_settle_seconds: float = Field(
        60.0,
        ge=0,
        le=600,
        description="how long a create Usedesk never answered may still be carried out: the"
        " next attempt looks for it this long after it was sent, before creating again",
    )
    phone_search: Literal["auto", "pattern", "spellings"] = Field(
        "auto",
        description="how /clients is searched for a number: one LIKE pattern (123%45%67), three"
        " spellings, or auto (the pattern when the account's search takes wildcards)",
    )

    @field_validator("callback_status")
    @classmethod
    def _callback_status(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= 10:
            raise ValueError(f"a Usedesk status id is 1-10 (2 = Solved, 3 = Closed); got {value}")
        return value

    @field_validator("search_statuses")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        bad = [s for s in value if not 1 <= s <= 10]
        if bad:
            raise ValueError(f"Usedesk status ids are 1-10 (8 = New, 1 = Open); got {bad}")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. Europe/Moscow)") from None
        return value

    @field_validator("users")
    @classmethod
    def _unique_extensions(cls, value: list[UserMapping]) -> list[UserMapping]:
        first: dict[str, int] = {}
        for i, user in enumerate(value):
            if user.extension in first:
                raise ValueError(
                    f"extension {user.extension} is mapped twice: "
                    f"users[{first[user.extension]}] and users[{i}]"
                )
            first[user.extension] = i
        return value

    def template(self, name: str) -> str:
        return getattr(self.templates, name) or DEFAULT_TEMPLATES[self.language][name]
