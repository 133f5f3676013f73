"""Agent notifications: a card for each ringing extension, built from every CRM's part.

When a call rings, each employee whose phone rings gets a card: the caller's number, and
what each CRM that sees the call knows (``connector_agent_card``). The first card goes out at
once with what the tracker knows; it is sent again when the CRMs' parts arrive, when the call
is answered (here or elsewhere), and when it ends. Cards go to every registered sink
(``connector_register_notification_sinks``) and to the built-in board, which keeps only the
latest card per extension, so nothing queues up for an agent who is not looking.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict
from typing import Any, Protocol

from connector_core import router
from connector_core.callstate import CallState
from connector_core.hooks import PluginHost
from connector_core.integrations import CardPart, Integration
from connector_core.phones import DisplayFormat, display_number
from connector_core.store.base import CARD_CHANNEL, Store

log = logging.getLogger(__name__)
# Card parts being fetched at once, at most. Past it a card goes out with what the tracker
# knows only: with a CRM slower than the calls, fetches waiting for it would pile up (each
# holding its call's state) and no agent would see them in time anyway.
MAX_PART_FETCHES = 100


class Sink(Protocol):
    async def deliver(self, account: str, extension: str, card: dict[str, Any]) -> None: ...


class CardBoard:
    """The latest card per (account, extension), and waiters for the next one."""

    def __init__(self, origin: str = "") -> None:
        # This process's name on the card channel: its own cards are put here directly.
        self.origin = origin
        self.cards: dict[tuple[str, str], dict[str, Any]] = {}
        self._changed: dict[tuple[str, str], asyncio.Event] = {}

    async def deliver(self, account: str, extension: str, card: dict[str, Any]) -> None:
        self.put(account, extension, card)

    def on_message(self, payload: str) -> None:
        """A card from ``CARD_CHANNEL`` (``ChannelSink``), made by whichever process's worker
        saw the call; an empty payload (the channel may have missed some) changes nothing,
        and nor does this process's own card, which ``ChannelSink`` put here already."""
        if not payload:
            return
        try:
            message = json.loads(payload)
            if message.get("origin") == self.origin:
                return
            self.put(message["account"], message["extension"], message["card"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("a card message could not be read: %s", exc)

    def put(self, account: str, extension: str, card: dict[str, Any]) -> None:
        """Keep ``card`` as the extension's latest (an ended call's card clears it)."""
        key = (account, extension)
        if card["state"] != "ended":
            self.cards[key] = card
        elif self.cards.get(key, {}).get("call_id") == card["call_id"]:
            # Only this call's card goes: the phone may be ringing with the next call already.
            del self.cards[key]
        event = self._changed.pop(key, None)
        if event is not None:
            event.set()

    async def wait_change(self, account: str, extension: str) -> None:
        await self._changed.setdefault((account, extension), asyncio.Event()).wait()


class ChannelSink:
    """Puts cards on this process's ``board`` at once, and sends them on the store's
    ``CARD_CHANNEL`` for every other process's board, so an agent's stream gets a card
    whichever process holds the stream. (Through the channel only, a card would reach this
    process's own agents a database round trip later, and out of step with what the worker
    knows.)"""

    def __init__(self, store: Store, board: CardBoard) -> None:
        self.store, self.board = store, board

    async def deliver(self, account: str, extension: str, card: dict[str, Any]) -> None:
        self.board.put(account, extension, card)
        message = {"origin": self.board.origin, "account": account, "extension": extension}
        text = json.dumps({**message, "card": card}, ensure_ascii=False)
        await self.store.publish(CARD_CHANNEL, text)


def with_parts(card: dict[str, Any], parts: list[CardPart]) -> dict[str, Any]:
    """``card`` with the CRMs' parts, and the caller's name and the main link taken from the
    first part that has one (parts come in the account's integration order)."""
    name = next((p.caller_name for p in parts if p.caller_name), "")
    link = next((p.main_link for p in parts if p.main_link), None)
    return {
        **card,
        "parts": [asdict(part) for part in parts],
        "caller_name": name,
        "main_link": {"label": link[0], "url": link[1]} if link else None,
    }


def card_state(call: CallState, extension: str) -> str:
    if call.finished:
        return "ended"
    if call.answered_by == extension:
        return "answered"
    if call.answers:
        return "answered_elsewhere"
    return "ringing"


class Notifier:
    def __init__(
        self,
        host: PluginHost,
        integrations: dict[str, list[Integration]],
        sinks: list[Sink],
        *,
        part_timeout: float = 2.0,
        phone_format: DisplayFormat = DisplayFormat.E164,
        regions: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.integrations = integrations
        self.sinks = sinks
        self.part_timeout = part_timeout
        self.phone_format = phone_format
        self.regions = regions or {}  # account -> its default_region, for national numbers
        self._sent: dict[tuple[str, str, str], str] = {}  # (account, call, ext) -> state
        self._tasks: set[asyncio.Task[None]] = set()
        self._fetching = 0

    def on_call(self, call: CallState) -> None:
        """Called by the worker after each event; sends what changed, in the background."""
        if not any(i.routing.notifications for i in self.integrations.get(call.account, [])):
            return
        for leg in call.legs:
            key = (call.account, call.call_id, leg.extension)
            state = card_state(call, leg.extension)
            if self._sent.get(key) == state:
                continue
            self._sent[key] = state
            if state == "ended":
                self._sent.pop(key, None)
            task = asyncio.create_task(self._send(call, leg.extension, state))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _card(self, call: CallState, extension: str, state: str) -> dict[str, Any]:
        """The card for ``extension`` without the CRMs' parts (``with_parts`` adds them)."""
        return {
            "call_id": call.call_id,
            "extension": extension,
            "caller": self._caller(call),
            "number": call.client_number,
            "caller_name": "",
            "main_link": None,
            "direction": call.direction.value,
            "state": state,
            "answered_by": call.answered_by,
            "parts": [],
            "complete": state == "ended",
        }

    async def _send(self, call: CallState, extension: str, state: str) -> None:
        card = self._card(call, extension, state)
        await self._deliver(call.account, extension, card)
        if state == "ended":
            return
        if self._fetching >= MAX_PART_FETCHES:
            log.warning("too many card parts waiting for the CRM: card without parts")
            await self._deliver(call.account, extension, {**card, "complete": True})
            return
        self._fetching += 1
        try:
            parts = await self._parts(call, extension)
        finally:
            self._fetching -= 1
        await self._deliver(call.account, extension, {**with_parts(card, parts), "complete": True})

    def _caller(self, call: CallState) -> str | None:
        """The caller's number as the operator chose to show it (``[notifications]
        phone_format``); a number that is not one (hidden, internal) as Sipuni sent it."""
        if call.client_number is None:
            return call.client_number_raw or call.employee
        region = self.regions.get(call.account, "RU")
        return display_number(call.client_number, self.phone_format, region)

    async def _parts(self, call: CallState, extension: str) -> list[CardPart]:
        # Only integrations that see the call (schemes, transfer schemes) add a part.
        wanted = [
            i
            for i in self.integrations.get(call.account, [])
            if i.routing.notifications and router.due(call, i, self.host)
        ]

        async def one(integration: Integration) -> CardPart | None:
            try:
                return await asyncio.wait_for(
                    self.host.agent_card(integration, call, extension), self.part_timeout
                )
            except Exception as exc:  # a slow or broken CRM leaves its part out, not the card
                log.warning("%s: no card part: %s", integration.key, type(exc).__name__)
                return None

        results = await asyncio.gather(*(one(i) for i in wanted))
        return [part for part in results if part is not None]

    async def notice(self, extension: str, call: CallState, part: CardPart, state: str) -> None:
        """A plugin's card outside the ring (``integration.notify``): ``part`` alone, complete,
        kept on the extension's page until its next card replaces it."""
        card = with_parts(self._card(call, extension, state), [part])
        await self._deliver(call.account, extension, {**card, "complete": True})

    async def _deliver(self, account: str, extension: str, card: dict[str, Any]) -> None:
        for sink in self.sinks:
            try:
                await sink.deliver(account, extension, card)
            except Exception:
                log.exception("notification sink %r failed", sink)

    async def wait_idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
