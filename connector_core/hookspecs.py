"""The plugin author's contract: every hook the host calls, when, and with what.

Implement hooks with ``hookimpl`` from ``connector_core.plugin`` (the one module plugin
authors import from) in a module exposed through the ``connector_core`` entry-point group.
Lifecycle, authorisation and card hooks may be ``async def``; the host awaits them under the
integration's ``hook_timeout_seconds``, so a plugin that hangs or raises never holds up
another. Routing hooks (``connector_filter_call``, ``connector_transfer_scheme``) are plain
functions: they decide, they do no I/O; one that raises is skipped and logged, and the next
implementation decides (the built-in one last).

``connector_setup_integration`` is called by ``connector init`` only, while a person answers
its questions.

Lifecycle hooks are called once per configured integration instance, only on the plugin that
registered the instance's type, and at least once per call event: a crash or a retry may
call a hook again for the same call, so record effects in ``integration.effects`` (keyed by
call id and action) and look before you create.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pluggy

from connector_core.callstate import Callback, CallState, MissedCall, Overdue, SchemeVisit, Transfer
from connector_core.integrations import (
    AuthResult,
    CardPart,
    CheckFinding,
    Integration,
    IntegrationType,
    RegisterIntegrationType,
)
from connector_core.prompts import Questions

if TYPE_CHECKING:  # notifications imports the host, which imports these specs
    from connector_core.notifications import Sink

PROJECT = "connector_core"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def connector_register_integration_types(register: RegisterIntegrationType) -> None:
    """Hand the host the integration types this plugin provides.

    Called once at start-up, before the config's plugin settings are validated.

    :param register: call it once per type, e.g.
        ``register(IntegrationType("usedesk", UsedeskSettings, factory=make_usedesk))``.
        The type's name is what operators write as ``plugin = "…"`` in the config.
    """


@hookspec
def connector_check_authorization(integration: Integration) -> AuthResult | Awaitable[AuthResult]:
    """Check that the integration's credentials work, with one cheap request to the CRM.

    Called by ``connector check``, at start-up and then periodically for ``/readyz``. It must
    not raise: report ``AuthStatus.AUTH_FAILED`` or ``AuthStatus.CANNOT_CONNECT`` with a
    reason an operator can act on (never containing a secret).

    :param integration: the configured instance to check.
    :return: an ``AuthResult``.
    """
    # pluggy reads a specification's name, arguments and docstring and never calls it; the
    # body says so, which lets the signature promise an AuthResult.
    raise NotImplementedError("a hook specification is not called")


@hookspec
def connector_check_settings(
    integration: Integration,
) -> list[CheckFinding] | Awaitable[list[CheckFinding]]:
    """Check the settings against the CRM: does every id, e-mail, group… they name exist there?

    Called by ``connector check`` only, after ``connector_check_authorization`` answered
    ``ok`` (never at start-up or for ``/readyz``), so it may make a few read-only requests.
    Return one ``CheckFinding`` per thing the operator should know: ``ERROR`` for a setting
    that will fail when calls come (an agent that does not exist), ``WARNING`` for one that
    looks wrong, ``INFO`` for what helps to fill the settings in (the CRM's users, so
    extensions can be mapped). Name the setting in ``setting`` (``users[2].agent``). It must
    not raise: a finding says what could not be checked.

    :param integration: the configured instance to check; its authorisation has succeeded.
    :return: the findings, in the order they should be printed; ``[]`` when all is well.
    """
    raise NotImplementedError("a hook specification is not called")


@hookspec
def connector_setup_integration(
    integration_type: IntegrationType, questions: Questions
) -> dict[str, Any] | Awaitable[dict[str, Any] | None] | None:
    """Ask the operator this integration's settings, for ``connector init``.

    Called by ``connector init`` only, once for each integration the operator chose to
    enable, on the plugin that registered the type, with no timeout (a person is typing).
    Ask through ``questions`` (never ``input()`` or ``print()``: a test answers them from a
    script), check what can be checked at once (a key with one request to the CRM), and ask
    again with a message when an answer is wrong. A plugin without this hook is asked the
    settings its model requires, one plain question each.

    :param integration_type: the type being set up; a plugin that registers several tells
        them apart by ``integration_type.name``.
    :param questions: ``questions.ask(prompt, parse, default=…)`` (``parse`` raises
        ``ValueError("what to type")`` and the question is asked again), ``text``,
        ``confirm``, ``secret`` (a ``SecretAnswer``: use ``.value``, write ``.written``, which
        is ``${NAME}`` when the operator typed that) and ``tell`` to show a list or a hint.
    :return: the integration's table for the config file: the plugin's keys (and core keys
        such as ``notifications`` if it asks them) with values TOML can hold (strings,
        numbers, booleans, lists, tables); leave a key out to keep its default. The host
        checks it as ``connector check`` would and, if it is refused, shows the errors and
        calls the hook again.
    """
    raise NotImplementedError("a hook specification is not called")


@hookspec
def connector_call_started(integration: Integration, call: CallState) -> Awaitable[None] | None:
    """A call this integration sees has started ringing (or its first event arrived).

    Called once per call, with the state as it is when the hook runs. This is the moment to
    find or create the client and ticket, so the agent's card can show them.

    :param integration: the configured instance the call is routed to.
    :param call: the merged call state; ``call.legs`` lists the phones rung so far.
    """


@hookspec
def connector_call_answered(integration: Integration, call: CallState) -> Awaitable[None] | None:
    """Somebody picked up: an employee for inbound calls, the client for outbound ones.

    Called once per call. ``call.first_answered_by`` is who answered first.

    :param integration: the configured instance the call is routed to.
    :param call: the merged call state.
    """


@hookspec
def connector_call_transferred(
    integration: Integration, call: CallState, transfer: Transfer
) -> Awaitable[None] | None:
    """The call passed from one employee to another, who answered.

    Called once per employee who took the call over (a call answered by 101, then 102, then
    103 gives two calls of this hook).

    :param integration: the configured instance the call is routed to.
    :param call: the merged call state.
    :param transfer: ``from_extension`` (may be ``None`` when unknown), ``to_extension``, ``at``.
    """


@hookspec
def connector_call_entered_scheme(
    integration: Integration, call: CallState, scheme: SchemeVisit
) -> Awaitable[None] | None:
    """The call moved into another routing scheme (after the one it entered first).

    :param integration: the configured instance the call is routed to.
    :param call: the merged call state; ``call.schemes`` is the path so far.
    :param scheme: the scheme the call moved into (``id`` = treeNumber, ``name`` = treeName).
    """


@hookspec
def connector_call_finished(integration: Integration, call: CallState) -> Awaitable[None] | None:
    """The call is over: final hang-up, or no event for the tracker's timeout (``finished_by``).

    Called once per call. Write the owner and the call's one comment here:
    ``call.outcome``, ``call.owner()``, ``call.talk_seconds``, ``call.record_url`` are final.

    :param integration: the configured instance the call is routed to.
    :param call: the merged call state.
    """


@hookspec
def connector_call_missed_again(
    integration: Integration, call: CallState, earlier: tuple[MissedCall, ...]
) -> Awaitable[None] | None:
    """The number called and was missed again, before anybody called it back.

    Called once per missed call (inbound, nobody answered) whose number already had open
    missed calls, after that call's ``connector_call_finished``. Put it with the earlier
    ones (one ticket for one person's missed calls) rather than treating it as new.

    :param integration: the configured instance the call is routed to.
    :param call: the new missed call, finished.
    :param earlier: the number's open missed calls before this one, oldest first (never
        empty); ``len(earlier) + 1`` is how many times the person has been missed.
    """


@hookspec
def connector_call_called_back(
    integration: Integration, call: CallState, callback: Callback
) -> Awaitable[None] | None:
    """A call reached the person whose calls were missed: the missed calls are answered.

    Called once per callback, after the callback call's ``connector_call_finished``, on the
    integrations that saw the first of the missed calls it answers (they hold its ticket),
    whether or not they see the callback call itself. A callback is an outbound call the
    client answered, or an inbound call from the number that an employee answered, within
    the callback window (``[missed_calls] callback_window_hours``) of the first missed call.

    :param integration: an integration that saw the first missed call.
    :param call: the callback call, finished.
    :param callback: the missed calls it answers (``callback.missed``, oldest first), who
        called back (``by_extension``), when it was answered (``answered_at``), how long
        after the first miss (``after_seconds``) and the talk time (``talk_seconds``).
    """


@hookspec
def connector_call_missed_overdue(
    integration: Integration, call: CallState, overdue: Overdue
) -> Awaitable[None] | None:
    """A number's missed calls have waited past the SLA with nobody calling back.

    Called once per group of open missed calls, when the first of them has waited
    ``[missed_calls] sla_minutes`` without a callback.

    :param integration: the configured instance the first missed call was routed to.
    :param call: the first open missed call of the number, finished.
    :param overdue: the open missed calls (``overdue.missed``, oldest first), the SLA
        (``sla_seconds``) and how long the first has waited (``waited_seconds``).
    """


@hookspec(firstresult=True)
def connector_filter_call(integration: Integration, call: CallState) -> bool | None:
    """Decide whether ``integration`` sees ``call`` at all (scheme filtering).

    Called for every integration of the call's account each time the call changes. The
    first non-``None`` answer wins; the built-in implementation, called last, applies the
    integration's ``schemes`` setting. Return ``False`` to hide a call, ``True`` to show it,
    ``None`` to leave the decision to others. Must be a plain, fast function.

    :param integration: an integration of the call's account.
    :param call: the merged call state.
    """


@hookspec(firstresult=True)
def connector_transfer_scheme(integration: Integration, call: CallState) -> SchemeVisit | None:
    """For an integration with ``transfer_schemes``: the scheme visit that opens the call to it.

    Such an integration sees a call only from the moment it is transferred into one of its
    transfer schemes (a distributor scheme hands calls on). The built-in implementation, called
    last, returns the first visit after the entry scheme that one of ``transfer_schemes``
    names, or ``None`` while there is none. Must be a plain, fast function.

    :param integration: an integration of the call's account with ``transfer_schemes`` set.
    :param call: the merged call state; ``call.schemes`` is the path so far.
    """


@hookspec
def connector_call_reached_transfer_scheme(
    integration: Integration, call: CallState, scheme: SchemeVisit
) -> Awaitable[None] | None:
    """Transfer-scheme processing: the call entered one of this integration's transfer schemes.

    Called once per call, only for integrations with ``transfer_schemes``, and before any
    other lifecycle hook for that call: for such an integration this hook takes the place of
    ``connector_call_started``. Later it gets ``answered``, ``transferred`` and ``finished``.

    :param integration: the configured instance with ``transfer_schemes``.
    :param call: the merged call state.
    :param scheme: the transfer scheme the call entered.
    """


@hookspec
def connector_agent_card(
    integration: Integration, call: CallState, extension: str
) -> CardPart | Awaitable[CardPart | None] | None:
    """Contribute this CRM's part of the card shown to an agent whose phone is ringing.

    Called for each rung extension of a call the integration sees, when agent notifications
    are on. Return quickly with what is known (the host shows the card at once and updates it
    when slower parts arrive); return ``None`` to add nothing.

    :param integration: the configured instance the call is routed to.
    :param call: the merged call state.
    :param extension: the ringing employee's extension.
    """


@hookspec
def connector_register_notification_sinks(register: Callable[[Sink], None]) -> None:
    """Hand the host extra places to deliver agent cards (for example a web-phone push).

    Called once at start-up. The built-in sink serves the agent page's event stream.

    :param register: call it with an object that has ``async deliver(account, extension,
        card)``; the card is a dict (caller, parts, state) ready to render.
    """
