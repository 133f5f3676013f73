"""The worker: drains the inbox through the tracker and the router into the dispatch outbox.

Each inbox item is processed in one store transaction (new call state + item done + new
dispatches), so after a crash an item is either fully processed or still pending; the
tracker ignores events it has already merged, so reprocessing one changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from connector_core import router, tracker
from connector_core.callstate import CallState
from connector_core.clock import Clock
from connector_core.events import EventError, SipuniEvent, parse_event
from connector_core.hooks import PluginHost
from connector_core.integrations import Integration
from connector_core.logcontext import call_context
from connector_core.store.base import InboxItem, Store

log = logging.getLogger(__name__)


class Worker:
    def __init__(
        self,
        store: Store,
        host: PluginHost,
        integrations: dict[str, list[Integration]],
        regions: dict[str, str],
        clock: Clock,
        *,
        hangup_timeout: float = 7200.0,
        finish_settle: float = 3.0,
        on_dispatches: Callable[[], None] = lambda: None,
        on_call: Callable[[CallState, list[str]], None] = lambda call, keys: None,
        on_processed: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.host = host
        self.integrations = integrations
        self.regions = regions
        self.clock = clock
        self.hangup_timeout = hangup_timeout
        self.finish_settle = finish_settle
        self.on_dispatches = on_dispatches
        self.on_call = on_call
        self.on_processed = on_processed
        self.wakeup = asyncio.Event()
        self.processed = 0
        # Two drains at once could merge two events of one call into two stale copies.
        self._draining = asyncio.Lock()

    def notify(self) -> None:
        """An event was appended to the inbox: process it now rather than at the next poll."""
        self.wakeup.set()

    async def run(self, poll_seconds: float = 1.0) -> None:
        while True:
            self.wakeup.clear()
            if not await self.drain():
                # Not asyncio.wait_for: on Python 3.11 it drops a cancellation that lands as
                # the event is set, and shutdown would then wait for this loop forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll_seconds):
                        await self.wakeup.wait()

    async def drain(self, batch: int = 200) -> int:
        """Process pending inbox items; returns how many were processed.

        Items of one call are processed one after another, in inbox order; different calls
        concurrently, so the store can commit many of them with one fsync (group commit).
        """
        async with self._draining:
            items = await self.store.pending_events(batch)
            chains: dict[tuple[str, str], list[InboxItem]] = {}
            for item in items:
                # As parse_event reads it; an item without one runs alone.
                call_id = str(item.params.get("call_id") or "").strip() or f"#{item.id}"
                chains.setdefault((item.account, call_id), []).append(item)

            async def run(chain: list[InboxItem]) -> None:
                for item in chain:
                    await self.process(item)

            results = await asyncio.gather(
                *(run(chain) for chain in chains.values()), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            return len(items)

    async def process(self, item: InboxItem) -> None:
        try:
            parsed = parse_event(item.params)
        except EventError as exc:  # accepted by an older version, refused by this one
            log.warning("inbox item %s cannot be parsed any more: %s", item.id, exc)
            parsed = None
        if not isinstance(parsed, SipuniEvent):
            await self.store.commit_event(item.id, None, [])
            return
        with call_context(item.account, parsed.call_id):
            state = await self.store.load_call(item.account, parsed.call_id)
            state, new = tracker.apply(
                state,
                parsed,
                account=item.account,
                region=self.regions.get(item.account, "RU"),
                received_at=item.received_at,
            )
            await self._commit(item.id, state)
            if new:
                log.info("call %s: %s", state.outcome.value, ", ".join(e.id for e in new))
            self.processed += 1
            self.on_processed()

    async def _commit(self, item_id: int | None, state: CallState) -> None:
        dispatches = router.plan(
            state,
            self.integrations.get(state.account, []),
            self.host,
            now=self.clock.now(),
            finish_settle_seconds=self.finish_settle,
        )
        await self.store.commit_event(item_id, state, dispatches)
        self.on_call(state, [d.key for d in dispatches])
        if dispatches:
            self.on_dispatches()

    async def expire_idle(self, batch: int = 500) -> int:
        """Finish calls whose final hang-up never came; returns how many."""
        now = self.clock.now()
        calls = await self.store.idle_open_calls(now - self.hangup_timeout, batch)
        for call in calls:
            with call_context(call.account, call.call_id):
                state, new = tracker.expire(
                    call,
                    now=now,
                    timeout=self.hangup_timeout,
                    region=self.regions.get(call.account, "RU"),
                )
                if new:
                    log.info("call finished by timeout after %.0f s idle", self.hangup_timeout)
                await self._commit(None, state)
        return len(calls)

    async def run_expiry(self, interval: float = 60.0) -> None:
        while True:
            await self.expire_idle()
            await asyncio.sleep(interval)
