"""amoCRM stub: the shortest complete CRM plugin, and the example plugin authors copy.

It makes no network calls. For every call it records, in a journal kept in the connector's
store, the actions it would take in amoCRM: find or create the contact by phone, create a
lead, write the call note, set the responsible user. ``connector journal amocrm_stub``
shows the journal. Every action is keyed, so a hook called again for the same call (a retry,
a redelivered webhook) records nothing new.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connector_core import hookimpl
from connector_core.callstate import CallState, SchemeVisit
from connector_core.integrations import (
    AuthResult,
    AuthStatus,
    CardPart,
    Integration,
    IntegrationType,
)

NAME = "amocrm_stub"


class AmoCrmStubSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subdomain: str = Field(
        "example",
        pattern=r"^[a-z0-9-]{1,63}$",
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


@hookimpl
def connector_register_integration_types(register: Callable[[IntegrationType], None]) -> None:
    register(IntegrationType(NAME, AmoCrmStubSettings, description=__doc__.splitlines()[0]))


@hookimpl
def connector_check_authorization(integration: Integration) -> AuthResult:
    return AuthResult(AuthStatus.OK, "stub: nothing to authorise")


async def _record(integration: Integration, key: str, action: str, **fields: Any) -> bool:
    """Journal one action once; ``False`` when it was already recorded."""
    return await integration.effects.put(f"journal:{key}", {"action": action, **fields})


async def _contact_and_lead(integration: Integration, call: CallState) -> None:
    phone = call.client_number
    if phone is None:
        return
    await _record(integration, f"contact:{phone}", "contact_find_or_create", phone=phone)
    await _record(
        integration,
        f"lead:{call.call_id}",
        "lead_create",
        phone=phone,
        call_id=call.call_id,
        pipeline_id=integration.settings.pipeline_id,
    )  # type: ignore[attr-defined]


@hookimpl
async def connector_call_started(integration: Integration, call: CallState) -> None:
    await _contact_and_lead(integration, call)


@hookimpl
async def connector_call_reached_transfer_scheme(
    integration: Integration, call: CallState, scheme: SchemeVisit
) -> None:
    # Seen only from the transfer on: the transfer is where the contact and lead come from.
    await _contact_and_lead(integration, call)


@hookimpl
async def connector_call_finished(integration: Integration, call: CallState) -> None:
    if call.client_number is None:
        return
    settings: AmoCrmStubSettings = integration.settings  # type: ignore[assignment]
    owner = call.owner()
    responsible = settings.users.get(owner) if owner else settings.default_responsible
    await _record(
        integration,
        f"note:{call.call_id}",
        "call_note",
        call_id=call.call_id,
        direction=call.direction.value,
        outcome=call.outcome.value,
        duration=call.duration_seconds,
        talk=call.talk_seconds,
        record_url=call.record_url,
    )
    await _record(
        integration,
        f"responsible:{call.call_id}",
        "set_responsible",
        call_id=call.call_id,
        extension=owner,
        user_id=responsible,
    )


@hookimpl
def connector_agent_card(
    integration: Integration, call: CallState, extension: str
) -> CardPart | None:
    if call.client_number is None:
        return None
    subdomain = integration.settings.subdomain  # type: ignore[attr-defined]
    link = f"https://{subdomain}.amocrm.ru/contacts/list/?term={call.client_number.lstrip('+')}"
    return CardPart(
        title="amoCRM", lines=["contact looked up by phone"], links=[("amoCRM contact", link)]
    )
