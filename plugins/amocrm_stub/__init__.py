"""amoCRM stub: the shortest complete CRM plugin, and the example plugin authors copy.

It makes no network calls. For every call it records, in a journal kept in the connector's
store, the actions it would take in amoCRM: find or create the contact by phone, create a
lead, write the call note, set the responsible user. ``connector journal amocrm_stub``
shows the journal. Every action is keyed, so a hook called again for the same call (a retry,
a redelivered webhook) records nothing new.

It tells the connector what it did, so ``connector trace`` and the console explain each
call: every journaled action is reported as the amoCRM request it stands for
(``integration.on_crm_request``), and every choice with its reason (``integration.report``
with a ``Decision``: which contact, which responsible user and why, the note's text).

It imports only from ``connector_core.plugin``, types its hooks with its own settings and
runtime (``Integration[AmoCrmStubSettings, AmoCrmStubClient]``, so mypy checks every
``integration.settings.…`` without casts), and classifies failures with the core's errors.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connector_core.plugin import (
    AuthResult,
    AuthStatus,
    Callback,
    CallState,
    CardPart,
    CheckFinding,
    CheckLevel,
    Decision,
    Integration,
    IntegrationType,
    InvalidRequestError,
    MissedCall,
    Overdue,
    Questions,
    RegisterIntegrationType,
    SchemeVisit,
    TransientError,
    hookimpl,
)

NAME = "amocrm_stub"
PLACEHOLDER_SUBDOMAIN = "example"
SUBDOMAIN = r"^[a-z0-9-]{1,63}$"
# The amoCRM API request each journaled action stands for (reported as the CRM request).
REQUESTS = {
    "contact_find_or_create": "POST /api/v4/contacts",
    "lead_create": "POST /api/v4/leads",
    "call_note": "POST /api/v4/leads/notes",
    "set_responsible": "PATCH /api/v4/leads",
    "task_create": "POST /api/v4/tasks",
    "task_complete": "PATCH /api/v4/tasks",
}


class AmoCrmStubSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subdomain: str = Field(
        PLACEHOLDER_SUBDOMAIN,
        pattern=SUBDOMAIN,
        description="the account's subdomain: <subdomain>.amocrm.ru",
    )
    # Unused by the stub; a real amoCRM plugin needs it. SecretStr keeps it out of reprs,
    # logs, `connector check` and `connector schema`.
    access_token: SecretStr | None = Field(None, description="amoCRM long-lived access token")
    pipeline_id: int | None = Field(None, description="funnel for new leads (default funnel)")
    users: dict[str, int] = Field(
        default_factory=dict, description="extension → amoCRM user id of the responsible"
    )
    default_responsible: int | None = Field(
        None, description="amoCRM user id responsible for missed calls"
    )


class AmoCrmStubClient:
    """The runtime: where a real plugin keeps its API client, here one that journals.

    The factory makes one per configured integration at start-up; the host awaits
    ``aclose()`` at shutdown (a real client closes its ``aiohttp.ClientSession`` there).
    """

    def __init__(self, integration: Integration[AmoCrmStubSettings]) -> None:
        self.settings = integration.settings
        self.effects = integration.effects
        self.on_request = integration.on_crm_request
        self.closed = False

    async def request(self, key: str, action: str, **fields: Any) -> bool:
        """Journal one action once; ``False`` when it was already recorded.

        Raises ``TransientError`` when the client is closed (the service is stopping: the
        work stays queued and runs again), ``InvalidRequestError`` when the settings can never
        make the request succeed (dead-lettered at once, with the reason).
        """
        if self.closed:
            raise TransientError("the amoCRM client is closed: the service is stopping")
        if self.settings.access_token is not None and (
            self.settings.subdomain == PLACEHOLDER_SUBDOMAIN
        ):
            # What amoCRM answers for an account that does not exist: fix the setting.
            raise InvalidRequestError(
                f"subdomain is still the placeholder '{PLACEHOLDER_SUBDOMAIN}': set it to the "
                "account's <subdomain>.amocrm.ru"
            )
        journaled = await self.effects.put(f"journal:{key}", {"action": action, **fields})
        if journaled:
            # A real client reports each request it makes: metrics, and `connector trace`.
            self.on_request(action, 0.0, "ok", path=REQUESTS[action])
        return journaled

    async def aclose(self) -> None:
        self.closed = True


# What every hook of this plugin receives: mypy knows its settings and runtime.
AmoCrm = Integration[AmoCrmStubSettings, AmoCrmStubClient]


@hookimpl
def connector_register_integration_types(register: RegisterIntegrationType) -> None:
    register(
        IntegrationType(
            NAME,
            AmoCrmStubSettings,
            factory=AmoCrmStubClient,
            description="amoCRM stub: the shortest complete CRM plugin, no network",
        )
    )


@hookimpl
def connector_check_authorization(integration: AmoCrm) -> AuthResult:
    return AuthResult(AuthStatus.OK, "stub: nothing to authorise")


@hookimpl
def connector_check_settings(integration: AmoCrm) -> list[CheckFinding]:
    # A real plugin asks its CRM here (do the users exist?); the stub can only say what its
    # client would refuse on the first call, so `connector check` says it first.
    settings = integration.settings
    if settings.access_token is not None and settings.subdomain == PLACEHOLDER_SUBDOMAIN:
        return [
            CheckFinding(
                CheckLevel.ERROR,
                f"still the placeholder '{PLACEHOLDER_SUBDOMAIN}': with an access_token every"
                " call would be refused; set the account's <subdomain>.amocrm.ru",
                "subdomain",
            )
        ]
    return []


@hookimpl
def connector_setup_integration(questions: Questions) -> dict[str, Any]:
    # `connector init` asks this; ask through `questions`, never input()/print(), so a test
    # can answer from a script. A bad answer raises ValueError in the parse function: the
    # person sees the message and the question again.
    subdomain = questions.ask(
        "amoCRM subdomain (<subdomain>.amocrm.ru)", parse_subdomain, default=PLACEHOLDER_SUBDOMAIN
    )
    return {"subdomain": subdomain}


def parse_subdomain(answer: str) -> str:
    """``acme``, ``acme.amocrm.ru`` and ``https://acme.amocrm.ru/`` all give ``acme``."""
    name = answer.lower().removeprefix("https://").removeprefix("http://")
    name = name.split("/", 1)[0].removesuffix(".amocrm.ru")
    if not re.fullmatch(SUBDOMAIN, name):
        raise ValueError(
            "expected the part before .amocrm.ru: latin letters, digits and -, e.g. acme"
        )
    return name


def _contact_link(settings: AmoCrmStubSettings, phone: str) -> str:
    return f"https://{settings.subdomain}.amocrm.ru/contacts/list/?term={phone.lstrip('+')}"


def _done(journaled: bool) -> str:
    return "recorded" if journaled else "already recorded by an earlier attempt"


async def _contact_and_lead(integration: AmoCrm, call: CallState) -> None:
    phone = call.client_number
    if phone is None:
        integration.report(Decision("nothing to do", "the call has no client number"))
        return
    client = integration.runtime
    journaled = await client.request(f"contact:{phone}", "contact_find_or_create", phone=phone)
    integration.report(
        Decision(
            f"contact {phone}",
            f"found or created by the caller's number ({_done(journaled)})",
            link=_contact_link(integration.settings, phone),
        )
    )
    journaled = await client.request(
        f"lead:{call.call_id}",
        "lead_create",
        phone=phone,
        call_id=call.call_id,
        pipeline_id=integration.settings.pipeline_id,
    )
    funnel = integration.settings.pipeline_id
    where = f"funnel {funnel}" if funnel is not None else "the default funnel"
    integration.report(
        Decision(f"lead for call {call.call_id}", f"in {where} ({_done(journaled)})")
    )


@hookimpl
async def connector_call_started(integration: AmoCrm, call: CallState) -> None:
    await _contact_and_lead(integration, call)


@hookimpl
async def connector_call_reached_transfer_scheme(
    integration: AmoCrm, call: CallState, scheme: SchemeVisit
) -> None:
    # Seen only from the transfer on: the transfer is where the contact and lead come from.
    await _contact_and_lead(integration, call)


def _responsible(integration: AmoCrm, call: CallState) -> tuple[str | None, int | None, str]:
    """The employee who owns the call, their amoCRM user, and why, in words."""
    settings = integration.settings
    # The operator's tracker.answered_owner: the last or the first employee who answered.
    owner = call.owner(integration.answered_owner)
    if owner is None:
        why = f"{call.outcome.value} call: nobody answered, default_responsible"
        return None, settings.default_responsible, why
    user = settings.users.get(owner)
    if call.answers:
        why = f"extension {owner} answered (answered_owner = {integration.answered_owner})"
    else:
        why = f"extension {owner} made the call"
    if user is None:
        why += f"; extension {owner} has no user in users"
    return owner, user, why


@hookimpl
async def connector_call_finished(integration: AmoCrm, call: CallState) -> None:
    if call.client_number is None:
        integration.report(Decision("nothing to do", "the call has no client number"))
        return
    client = integration.runtime
    owner, responsible, why = _responsible(integration, call)
    note = (
        f"{call.direction.value} call {call.call_id}: {call.outcome.value},"
        f" {call.duration_seconds or 0} s (talk {call.talk_seconds} s)"
    )
    journaled = await client.request(
        f"note:{call.call_id}",
        "call_note",
        call_id=call.call_id,
        direction=call.direction.value,
        outcome=call.outcome.value,
        duration=call.duration_seconds,
        talk=call.talk_seconds,
        record_url=call.record_url,
    )
    integration.report(Decision("call note", _done(journaled), text=note))
    journaled = await client.request(
        f"responsible:{call.call_id}",
        "set_responsible",
        call_id=call.call_id,
        extension=owner,
        user_id=responsible,
    )
    user = f"user {responsible}" if responsible is not None else "nobody"
    integration.report(Decision(f"responsible {user}", f"{why} ({_done(journaled)})"))


# The missed-call lifecycle (docs/missed-calls.md): one person's missed calls are one lead
# (the first missed call's) with a callback task, completed when somebody calls back.


@hookimpl
async def connector_call_missed_again(
    integration: AmoCrm, call: CallState, earlier: tuple[MissedCall, ...]
) -> None:
    first = earlier[0].call_id
    note = f"missed again: {len(earlier) + 1} missed calls since call {first}"
    journaled = await integration.runtime.request(
        f"note:{call.call_id}:missed_again",
        "call_note",
        lead_of_call=first,
        call_id=call.call_id,
        missed_times=len(earlier) + 1,
    )
    integration.report(Decision(f"note on the lead of call {first}", _done(journaled), text=note))


@hookimpl
async def connector_call_called_back(
    integration: AmoCrm, call: CallState, callback: Callback
) -> None:
    first = callback.missed[0].call_id
    journaled = await integration.runtime.request(
        f"callback:{first}",
        "task_complete",
        lead_of_call=first,
        callback_call=call.call_id,
        by_extension=callback.by_extension,
        after_seconds=callback.after_seconds,
        talk_seconds=callback.talk_seconds,
    )
    who = f"extension {callback.by_extension}" if callback.by_extension else "somebody"
    integration.report(
        Decision(
            f"callback task of call {first} done",
            f"{who} reached the client {callback.after_seconds} s after the first miss"
            f" ({_done(journaled)})",
        )
    )


@hookimpl
async def connector_call_missed_overdue(
    integration: AmoCrm, call: CallState, overdue: Overdue
) -> None:
    journaled = await integration.runtime.request(
        f"overdue:{call.call_id}",
        "task_create",
        lead_of_call=call.call_id,
        missed_times=len(overdue.missed),
        waited_seconds=overdue.waited_seconds,
        responsible=integration.settings.default_responsible,
    )
    integration.report(
        Decision(
            "urgent callback task",
            f"nobody called back within {overdue.sla_seconds // 60} min ({_done(journaled)})",
        )
    )


@hookimpl
def connector_agent_card(integration: AmoCrm, call: CallState, extension: str) -> CardPart | None:
    if call.client_number is None:
        return None
    link = _contact_link(integration.settings, call.client_number)
    return CardPart(
        title="amoCRM", lines=["contact looked up by phone"], links=[("amoCRM contact", link)]
    )
