"""Templates with call variables, for client names, ticket subjects, tags and comments.

A template is text with ``{variable}`` placeholders («Общие переменные»). Only the names in
``VARIABLES`` exist; ``check`` reports an unknown one when the config loads, so a typo is a
config error rather than a broken ticket at 3 a.m. No attribute access, indexing or format
specs: templates come from operators and stay plain substitution.
"""

from __future__ import annotations

import html
import string
from collections.abc import Mapping
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from connector_core.callstate import CallState, Direction, Outcome, SchemeVisit
from connector_core.phones import PhoneFormat, format_number

VARIABLES: dict[str, str] = {
    "phone": "the client's number in the chosen number format",
    "line": "the company line the client called (inbound), in the chosen number format",
    "direction": "Входящий / Исходящий / Внутренний (Inbound / Outbound / Internal)",
    "direction_code": "inbound, outbound or internal",
    "result": "Отвечен / Пропущен / Не отвечен (Answered / Missed / Not answered)",
    "result_code": "answered, missed or not_answered",
    "employee": "the employee who owns the call (extension), empty when nobody",
    "employees": "every employee who answered, comma-separated",
    "agent": "the CRM agent's name of {employee} (the extension when no agent is mapped)",
    "agents": "the CRM agents' names of {employees}, comma-separated",
    "dialled_by": "the employee who dialled (outbound / internal), by agent name or extension",
    "first_extension": "the first extension that rang",
    "scheme": "the name (or id) of the scheme the call entered first",
    "final_scheme": "the name (or id) of the scheme the call ended in",
    "schemes": "every scheme on the call's path, in order, joined by →",
    "end": "Сообщён / Не сообщён (Reported / Not reported): whether the PBX reported the end",
    "end_code": "reported, timeout (finished by the hang-up timeout), or empty while going on",
    "date": "the call's start date, YYYY-MM-DD, in the configured time zone",
    "time": "the call's start time, HH:MM:SS, in the configured time zone",
    "started_at": "the call's start, YYYY-MM-DD HH:MM:SS, in the configured time zone",
    "duration": "the whole call, M:SS",
    "talk_duration": "talk time, M:SS",
    "record_url": "the link to the call's recording",
    "record_link": "the recording as an HTML link «Запись звонка» (empty when there is none)",
    "call_id": "Sipuni's call id",
}

LABELS = {
    "ru": {
        Direction.INBOUND: "Входящий",
        Direction.OUTBOUND: "Исходящий",
        Direction.INTERNAL: "Внутренний",
        Direction.UNKNOWN: "Звонок",
        Outcome.ANSWERED: "Отвечен",
        Outcome.MISSED: "Пропущен",
        Outcome.NOT_ANSWERED: "Не отвечен",
        Outcome.RINGING: "Идёт вызов",
        Outcome.TALKING: "Идёт разговор",
        "reported": "Сообщён",
        "timeout": "Не сообщён: звонок закрыт по тайм-ауту",
    },
    "en": {
        Direction.INBOUND: "Inbound",
        Direction.OUTBOUND: "Outbound",
        Direction.INTERNAL: "Internal",
        Direction.UNKNOWN: "Call",
        Outcome.ANSWERED: "Answered",
        Outcome.MISSED: "Missed",
        Outcome.NOT_ANSWERED: "Not answered",
        Outcome.RINGING: "Ringing",
        Outcome.TALKING: "Talking",
        "reported": "Reported",
        "timeout": "Not reported: the call was closed by the time-out",
    },
}


class TemplateError(ValueError):
    pass


def check(template: str) -> None:
    """Raise ``TemplateError`` naming what is wrong with ``template``."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"broken template: {exc} (write {{{{ and }}}} for braces)") from None
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in VARIABLES:
            known = ", ".join(sorted(VARIABLES))
            raise TemplateError(f"unknown variable {{{name}}}; known: {known}")
        if spec or conversion:
            raise TemplateError(f"{{{name}}}: formats and conversions are not supported")


def _clock(seconds: int | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds // 60}:{seconds % 60:02d}"


def _scheme_name(visit: SchemeVisit) -> str:
    return visit.name or visit.id or ""


def variables(
    call: CallState,
    *,
    phone_format: PhoneFormat | str = PhoneFormat.INTERNATIONAL,
    language: str = "ru",
    timezone: str = "Europe/Moscow",
    answered_owner: str = "last",
    agent_names: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The value of every variable for ``call``.

    ``agent_names`` maps extensions to the CRM agents' names (a plugin reads them from its
    CRM); an extension without a name is shown as itself, so a comment always names somebody.
    """
    names = agent_names or {}
    end = {"hangup": "reported", "timeout": "timeout"}.get(call.finished_by or "", "")

    def person(extension: str | None) -> str:
        return (names.get(extension) or extension) if extension else ""

    labels = LABELS[language]
    started = (
        datetime.fromtimestamp(call.started_at, UTC).astimezone(ZoneInfo(timezone))
        if call.started_at is not None
        else None
    )
    phone = call.client_number
    return {
        "phone": format_number(phone, phone_format) if phone else (call.client_number_raw or ""),
        "line": format_number(call.line_number, phone_format) if call.line_number else "",
        "direction": labels[call.direction],
        "direction_code": call.direction.value,
        "result": labels[call.outcome],
        "result_code": call.outcome.value,
        "employee": call.owner(answered_owner) or "",
        "employees": ", ".join(a.extension for a in call.answers),
        "agent": person(call.owner(answered_owner)),
        "agents": ", ".join(person(a.extension) for a in call.answers),
        "dialled_by": person(call.employee),
        "first_extension": call.first_extension or "",
        "scheme": _scheme_name(call.scheme) if call.scheme else "",
        "final_scheme": _scheme_name(call.schemes[-1]) if call.schemes else "",
        "schemes": " → ".join(_scheme_name(v) for v in call.schemes),
        "end": labels[end] if end else "",
        "end_code": end,
        "date": started.strftime("%Y-%m-%d") if started else "",
        "time": started.strftime("%H:%M:%S") if started else "",
        "started_at": started.strftime("%Y-%m-%d %H:%M:%S") if started else "",
        "duration": _clock(call.duration_seconds),
        # Unknown until the call has ended (not 0:00, which would be a claim).
        "talk_duration": _clock(call.talk_seconds) if call.ended_at is not None else "",
        "record_url": call.record_url or "",
        "record_link": call.record_url or "",
        "call_id": call.call_id,
    }


RECORD_LINK_TEXT = {"ru": "Запись звонка", "en": "Call recording"}


def render(
    template: str, values: Mapping[str, str], *, escape_html: bool = False, language: str = "ru"
) -> str:
    """Fill ``template``.

    With ``escape_html`` (comments are HTML) every value is escaped, and ``record_link``
    becomes an anchor; without it, ``record_link`` is the bare URL.
    """
    if escape_html:
        url = values.get("record_link", "")
        values = {k: html.escape(v, quote=True) for k, v in values.items()}
        values["record_link"] = (
            f'<a href="{html.escape(url, quote=True)}">{RECORD_LINK_TEXT[language]}</a>'
            if url
            else ""
        )
    return template.format_map(values)
