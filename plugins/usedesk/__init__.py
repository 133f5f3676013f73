"""Usedesk (Юздеск): Sipuni's built-in Usedesk integration, rebuilt as a connector plugin.

On ring: the client and its open ticket are found by the caller's number, so the agent's
card can show them. A missing ticket (and client) is created on ring, on answer (with its
owner) or at the end (with owner and comment), per ``ticket_created_on``. On hang-up: the
ticket gets its owner and one private comment with the call's details and recording link.
Missed calls: a repeat and the callback go to the first miss's ticket, which records the
callback (and may change owner and status) or, past the SLA, gets a tag and a higher
priority (``missed.py``). See docs/usedesk.md for every setting.
"""

from __future__ import annotations

from typing import Any

from connector_core.callstate import Callback, MissedCall, Overdue
from connector_core.plugin import (
    AuthError,
    AuthResult,
    AuthStatus,
    CallState,
    CardPart,
    CheckFinding,
    CrmError,
    Integration,
    IntegrationType,
    InvalidRequestError,
    Questions,
    RegisterIntegrationType,
    SchemeVisit,
    TransientError,
    hookimpl,
)

from . import card, check, flow, missed, setup
from .settings import UsedeskSettings

NAME = "usedesk"
# What every hook of this plugin receives: its settings model and its runtime.
Usedesk = Integration[UsedeskSettings, flow.UsedeskRuntime]


@hookimpl
def connector_register_integration_types(register: RegisterIntegrationType) -> None:
    register(
        IntegrationType(
            NAME,
            UsedeskSettings,
            factory=flow.UsedeskRuntime,
            description="Usedesk helpdesk: clients, tickets, call comments",
        )
    )


@hookimpl
async def connector_check_authorization(integration: Usedesk) -> AuthResult:
    try:
        await flow.runtime(integration).client.check_auth()
    except AuthError as exc:
        return AuthResult(AuthStatus.AUTH_FAILED, exc.message)
    except (TransientError, InvalidRequestError) as exc:
        return AuthResult(AuthStatus.CANNOT_CONNECT, exc.message)
    except CrmError as exc:
        return AuthResult(AuthStatus.CANNOT_CONNECT, exc.message)
    return AuthResult(AuthStatus.OK, f"API key accepted by {integration.settings.base_url}")


@hookimpl
async def connector_check_settings(integration: Usedesk) -> list[CheckFinding]:
    return await check.check(integration.settings, flow.runtime(integration).client)


@hookimpl
async def connector_setup_integration(questions: Questions) -> dict[str, Any]:
    return await setup.ask(questions)


@hookimpl
async def connector_call_started(integration: Usedesk, call: CallState) -> None:
    await flow.on_ring(integration, call)


@hookimpl
async def connector_call_answered(integration: Usedesk, call: CallState) -> None:
    await flow.on_answer(integration, call)


@hookimpl
async def connector_call_reached_transfer_scheme(
    integration: Usedesk, call: CallState, scheme: SchemeVisit
) -> None:
    await flow.on_ring(integration, call)


@hookimpl
async def connector_call_finished(integration: Usedesk, call: CallState) -> None:
    await flow.finish(integration, call)


@hookimpl
async def connector_call_missed_again(
    integration: Usedesk, call: CallState, earlier: tuple[MissedCall, ...]
) -> None:
    await missed.missed_again(integration, call, earlier)


@hookimpl
async def connector_call_called_back(
    integration: Usedesk, call: CallState, callback: Callback
) -> None:
    await missed.called_back(integration, call, callback)


@hookimpl
async def connector_call_missed_overdue(
    integration: Usedesk, call: CallState, overdue: Overdue
) -> None:
    await missed.missed_overdue(integration, call, overdue)


@hookimpl
async def connector_agent_card(
    integration: Usedesk, call: CallState, extension: str
) -> CardPart | None:
    return await card.card(integration, call)
