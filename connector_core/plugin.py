"""Everything a CRM plugin imports, from one module: ``from connector_core.plugin import …``.

The names here are the plugin API; the modules they come from are the core's own business
and may move. A plugin that imports only from this module keeps working across them.

- ``hookimpl`` marks hook implementations (the hooks are in ``connector_core.hookspecs`` and
  docs/hooks.md).
- ``IntegrationType`` is what a plugin registers (``RegisterIntegrationType`` is the type of
  ``register``); ``Integration[Settings, Runtime]`` is what every hook receives, typed with
  the plugin's settings model and the runtime its factory makes.
- ``AuthResult``/``AuthStatus`` answer the authorisation check; ``CheckFinding`` (with a
  ``CheckLevel``) is a line of ``connector check`` about the settings; ``CardPart`` is a part
  of the agent's ringing card.
- ``CallState`` and what it holds (``Direction``, ``Outcome``, ``Leg``, ``Answer``,
  ``Transfer``, ``SchemeVisit``, ``Hangup``) describe the call.
- ``TransientError``, ``AuthError``, ``InvalidRequestError`` (all ``CrmError``) tell the core
  to retry, to hold the work until the credentials are fixed, or to give up at once;
  ``RetryLater`` asks for another run after a wait that is not a failure (no circuit breaker).
- ``EffectStore`` (``integration.effects``) and ``KeyedLocks`` (``integration.locks``) make
  hooks safe to run again; the locks hold across processes when several share the store.
- ``SharedRate`` (``integration.shared_rate``, ``None`` unless several processes share the
  store) is a rate window every process counts in: a CRM's per-account limit held in total.
- ``queue_wait()`` wraps a wait that is not the CRM's time (a rate limiter, a lock of the
  plugin's own), so the hook's timeout stops meanwhile; a runtime with a rate budget reports
  it as a ``Budget`` through the ``Paced`` protocol, and the dispatcher starts work at its pace.
  ``work_urgency()`` is the running hook call's ``Urgency``: its ``priority`` (a ``Priority``,
  ``COMPLETING`` once the call hung up) may rise while the hook waits, and a rate limiter of
  the plugin's own serves waiters by it (``prioritised`` sets it for a block).
- ``Questions`` is what ``connector_setup_integration`` asks the operator through (``ask``
  with a ``parse`` function, ``text``, ``confirm``, ``secret`` giving a ``SecretAnswer``,
  ``tell``), for ``connector init``.
- ``Decision`` is what a hook reports through ``integration.report(...)``: what it decided
  about the call and why (``owner 514``, ``missed call, on-duty agent``), with the CRM
  object's link and the text written; ``connector trace`` and the console show it. A CRM
  client reports each request through ``integration.on_crm_request(method, seconds,
  outcome, status=..., path=...)``.
- ``Sink`` is what ``connector_register_notification_sinks`` hands over: an object with
  ``async deliver(account, extension, card)``.
- ``Linking``: a runtime with ``call_link(record)`` names the CRM object a call made, for the
  operator console's links.
"""

from __future__ import annotations

from connector_core.callrecords import Decision
from connector_core.callstate import (
    Answer,
    Callback,
    CallState,
    Direction,
    Hangup,
    Leg,
    MissedCall,
    Outcome,
    Overdue,
    SchemeVisit,
    Transfer,
)
from connector_core.console.links import Linking
from connector_core.errors import (
    AuthError,
    CrmError,
    InvalidRequestError,
    RetryLater,
    TransientError,
)
from connector_core.hookspecs import hookimpl
from connector_core.hooktime import queue_wait
from connector_core.integrations import (
    AuthResult,
    AuthStatus,
    CardPart,
    CheckFinding,
    CheckLevel,
    Integration,
    IntegrationType,
    KeyedLocks,
    RegisterIntegrationType,
    RoutingSettings,
    SharedRate,
)
from connector_core.notifications import Sink
from connector_core.pacing import Budget, Paced, Priority, Urgency, prioritised, work_urgency
from connector_core.prompts import Questions, SecretAnswer
from connector_core.store.base import EffectStore

__all__ = [
    "Answer",
    "AuthError",
    "AuthResult",
    "AuthStatus",
    "Budget",
    "CallState",
    "Callback",
    "CardPart",
    "CheckFinding",
    "CheckLevel",
    "CrmError",
    "Decision",
    "Direction",
    "EffectStore",
    "Hangup",
    "Integration",
    "IntegrationType",
    "InvalidRequestError",
    "KeyedLocks",
    "Leg",
    "Linking",
    "MissedCall",
    "Outcome",
    "Overdue",
    "Paced",
    "Priority",
    "Questions",
    "RegisterIntegrationType",
    "RetryLater",
    "RoutingSettings",
    "SchemeVisit",
    "SecretAnswer",
    "SharedRate",
    "Sink",
    "Transfer",
    "TransientError",
    "Urgency",
    "hookimpl",
    "prioritised",
    "queue_wait",
    "work_urgency",
]
