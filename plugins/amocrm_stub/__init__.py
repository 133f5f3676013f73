"""amoCRM stub: the shortest complete CRM plugin, and the example plugin authors copy.

It makes no network calls. For every call it records, in a journal kept in the connector's
store, the actions it would take in amoCRM: find or create the contact by phone, create a
lead, write the call note, set the responsible user. ``connector journal amocrm_stub``
shows the journal. Every action is keyed, so a hook called again for the same call (a retry,
a redelivered webhook) records nothing new.

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
    CallState,
    CardPart,
    CheckFinding,
    CheckLevel,
    Integration,
    IntegrationType,
    InvalidRequestError,
    Questions,
    RegisterIntegrationType,
    SchemeVisit,
    TransientError,
    hookimpl,
)

NAME = "amocrm_stub"
PLACEHOLDER_SUBDOMAIN = "example"
SUBDOMAIN = r"^[a-z0-9-]{1,63}$"


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
        return await self.effects.put(f"journal:{key}", {"action": action, **fields})

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


async def _contact_and_lead(integration: AmoCrm, call: CallState) -> None:
    phone = call.client_number
    if phone is None:
        return
    client = integration.runtime
    await client.request(f"contact:{phone}", "contact_find_or_create", phone=phone)
    await client.request(
        f"lead:{call.call_id}",
        "lead_create",
        phone=phone,
        call_id=call.call_id,
        pipeline_id=integration.settings.pipeline_id,
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


@hookimpl
async def connector_call_finished(integration: AmoCrm, call: CallState) -> None:
    if call.client_number is None:
        return
    settings, client = integration.settings, integration.runtime
    # The operator's tracker.answered_owner: the last or the first employee who answered.
    owner = call.owner(integration.answered_owner)
    responsible = settings.users.get(owner) if owner else settings.default_responsible
    await client.request(
        f"note:{call.call_id}",
        "call_note",
        call_id=call.call_id,
        direction=call.direction.value,
        outcome=call.outcome.value,
        duration=call.duration_seconds,
        talk=call.talk_seconds,
        record_url=call.record_url,
    )
    await client.request(
        f"responsible:{call.call_id}",
        "set_responsible",
        call_id=call.call_id,
        extension=owner,
        user_id=responsible,
    )


@hookimpl
def connector_agent_card(integration: AmoCrm, call: CallState, extension: str) -> CardPart | None:
    if call.client_number is None:
        return None
    subdomain = integration.settings.subdomain
    link = f"https://{subdomain}.amocrm.ru/contacts/list/?term={call.client_number.lstrip('+')}"
    return CardPart(
        title="amoCRM", lines=["contact looked up by phone"], links=[("amoCRM contact", link)]
    )
