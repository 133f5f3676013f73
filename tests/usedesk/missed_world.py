"""Driving the Usedesk plugin through the missed-call lifecycle, in one place to lift.

The real ``PluginHost`` with the usedesk plugin registered, an integration on a SQLite store's
effects and a running sandbox; calls are built by the tracker from the simulator's webhooks,
each lifecycle record handed to ``PluginHost.call_lifecycle`` as the dispatcher does. The
missed-call records (which the core's lifecycle emits) are built here from those calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plugins.usedesk as usedesk_plugin
from connector_core import tracker
from connector_core.callstate import (
    Callback,
    CallState,
    LifecycleEvent,
    LifecycleKind,
    MissedCall,
    Overdue,
)
from connector_core.events import SipuniEvent, parse_event
from connector_core.hooks import PluginHost
from connector_core.integrations import Integration, RoutingSettings
from connector_core.notifications import CardBoard, Notifier
from connector_core.simulator import scenarios
from connector_core.store.sqlite import SQLiteStore
from plugins.usedesk import flow
from plugins.usedesk.sandbox import UsedeskSandbox
from plugins.usedesk.settings import UsedeskSettings

ACCOUNT = scenarios.ACCOUNT
# The sandbox's seeded agents: 2 Борис Операторов, 3 Вера Продажина, 4 Глеб Саппортов.
USERS = [
    {"extension": "101", "agent": 2},
    {"extension": "102", "agent": 3},
    {"extension": "104", "agent": 4},
]
ON_DUTY = 4
CLIENT = "79035550177"  # a number the sandbox's seed has no client with


@dataclass
class MissedWorld:
    host: PluginHost
    integration: Integration[UsedeskSettings, flow.UsedeskRuntime]
    sandbox: UsedeskSandbox
    board: CardBoard
    seeded: frozenset[int] = frozenset()

    async def call(self, scenario: scenarios.Scenario) -> CallState:
        """The call's webhooks through the tracker, each new lifecycle record to the plugin."""
        state: CallState | None = None
        for params in scenario.events:
            event = parse_event(params)
            assert isinstance(event, SipuniEvent)
            state, records = tracker.apply(
                state, event, account=ACCOUNT, region="RU", received_at=1.0
            )
            for record in records:
                await self.host.call_lifecycle(self.integration, state, record)
        assert state is not None and state.finished
        return state

    async def missed_again(self, call: CallState, *earlier: CallState) -> None:
        record = LifecycleEvent(
            kind=LifecycleKind.MISSED_AGAIN,
            id="missed_again",
            earlier=tuple(missed(e) for e in earlier),
        )
        await self.host.call_lifecycle(self.integration, call, record)

    async def called_back(self, call: CallState, *missed_calls: CallState) -> None:
        assert call.answered_at is not None
        callback = Callback(
            missed=tuple(missed(m) for m in missed_calls),
            by_extension=call.owner("last"),
            direction=call.direction,
            answered_at=call.answered_at,
            after_seconds=call.answered_at - (missed_calls[0].started_at or 0),
            talk_seconds=call.talk_seconds or 0,
        )
        record = LifecycleEvent(kind=LifecycleKind.CALLED_BACK, id="called_back", callback=callback)
        await self.host.call_lifecycle(self.integration, call, record)

    async def overdue(self, first: CallState, *missed_calls: CallState, sla: int = 900) -> None:
        overdue = Overdue(
            missed=tuple(missed(m) for m in (first, *missed_calls)),
            sla_seconds=sla,
            waited_seconds=sla + 5,
        )
        record = LifecycleEvent(kind=LifecycleKind.MISSED_OVERDUE, id="overdue", overdue=overdue)
        await self.host.call_lifecycle(self.integration, first, record)

    def tickets(self) -> list[dict[str, Any]]:
        """The tickets the calls made (not the sandbox's seed), oldest first."""
        return [t for t in self.sandbox.snapshot()["tickets"] if t["id"] not in self.seeded]

    def writes(self) -> list[str]:
        return [r.path for r in self.sandbox.requests(writes_only=True)]

    def card(self, extension: str) -> dict[str, Any] | None:
        """The card the agent page of ``extension`` shows now."""
        return self.board.cards.get((ACCOUNT, extension))


def missed(call: CallState) -> MissedCall:
    """The call as the missed-call lifecycle remembers it."""
    return MissedCall(
        call_id=call.call_id,
        started_at=call.started_at or 0,
        extensions=tuple(leg.extension for leg in call.legs),
    )


def missed_call(minute: int, seq: int) -> scenarios.Scenario:
    """The client's inbound call ``minute`` minutes after the scenarios' start; nobody answers."""
    return scenarios.inbound_missed(
        ("101", "102"), client=CLIENT, start=scenarios.START + 60 * minute, seq=seq
    )


def callback_by(employee: str, minute: int, seq: int) -> scenarios.Scenario:
    """``employee`` calls the client back ``minute`` minutes after the start; answered."""
    return scenarios.outbound_answered(
        employee, client=CLIENT, start=scenarios.START + 60 * minute, seq=seq, talk=135
    )


def comments_with(ticket: dict[str, Any], text: str) -> list[str]:
    return [c["message"] for c in ticket["comments"] if text.casefold() in c["message"].casefold()]


@asynccontextmanager
async def missed_world(tmp_path: Path, **settings: Any) -> AsyncIterator[MissedWorld]:
    """A sandbox, a store and the usedesk integration with ``settings`` (users 101→2,
    102→3, 104→4, on duty 4, notifications on) on the real plugin host."""
    sandbox = UsedeskSandbox()
    store = SQLiteStore(tmp_path / "store.db")
    await store.open()
    host = PluginHost()
    host.register(usedesk_plugin, "usedesk")
    try:
        async with sandbox.serve() as base_url:
            integration: Integration[UsedeskSettings, flow.UsedeskRuntime] = Integration(
                account=ACCOUNT,
                name="usedesk",
                type=host.types["usedesk"],
                settings=UsedeskSettings.model_validate(
                    {
                        "api_token": sandbox.token,
                        "base_url": base_url,
                        "burst_per_second": 100,
                        "users": USERS,
                        "on_duty_user": ON_DUTY,
                        **settings,
                    }
                ),
                routing=RoutingSettings(notifications=True),
                effects=store.effects(f"{ACCOUNT}/usedesk"),
            )
            integration.runtime = flow.UsedeskRuntime(integration)
            board = CardBoard()
            # As the service wires it: the plugin's cards go through the notifier's sinks.
            integration.notify = Notifier(host, {ACCOUNT: [integration]}, [board]).notice
            seeded = frozenset(t["id"] for t in sandbox.snapshot()["tickets"])
            world = MissedWorld(host, integration, sandbox, board, seeded)
            try:
                yield world
            finally:
                await integration.runtime.aclose()
    finally:
        await store.close()
