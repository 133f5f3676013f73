"""The worker: drains the inbox through the tracker and the router into the dispatch outbox.

Each inbox item is processed in one store transaction (new call state + item done + new
dispatches), so after a crash an item is either fully processed or still pending; the
tracker ignores events it has already merged, so reprocessing one changes nothing.

The worker's loops are rounds run by the supervisor (``drain_round``, ``expiry_round``): a
round that raises is logged and backed off there. An item whose processing raises is tried
again at the next rounds and quarantined after ``MAX_ATTEMPTS``; a store that fails as a whole
fails the round instead, so no good item is quarantined for the store's fault.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from connector_core import missed_calls, router, tracker
from connector_core.callstate import CallState
from connector_core.clock import Clock
from connector_core.cluster import Leases, call_lease
from connector_core.errors import describe_error
from connector_core.events import EventError, SipuniEvent, parse_event
from connector_core.hooks import PluginHost
from connector_core.ingest import loggable_call_id
from connector_core.integrations import Integration
from connector_core.logcontext import call_context
from connector_core.store.base import (
    InboxItem,
    Store,
    call_id_of,
    is_store_failure,
)
from connector_core.stored_rows import StoredRows

log = logging.getLogger(__name__)
# Attempts at one inbox item before it is quarantined: a few, as an error that is not the
# store's (a bug met by this event, a constraint) rarely goes away by itself.
MAX_ATTEMPTS = 3
# Pages of the inbox one drain looks through for calls no other worker holds.
MAX_PAGES = 8


@dataclass(frozen=True)
class KnownState:
    """A call's state as this process holds it under the call's lease, so it need not be
    loaded: read for a drain, then what each commit wrote (``None``: the call is new)."""

    account: str
    call_id: str
    state: CallState | None


def _call_key(item: InboxItem) -> tuple[str, str] | None:
    """The ``(account, call_id)`` of the call an inbox item belongs to, if it names one."""
    call_id = item.event.call_id if item.event is not None else call_id_of(item.params)
    return (item.account, call_id) if call_id else None


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
        max_attempts: int = MAX_ATTEMPTS,
        leases: Leases | None = None,
        keep_number_calls: bool = True,
    ) -> None:
        self.store = store
        self.keep_number_calls = keep_number_calls  # for the missed-call lifecycle
        # Another worker process may drain the same inbox: a call's events are processed
        # only under its lease (on SQLite this process holds every lease).
        self.leases = leases or Leases(store)
        self.host = host
        self.integrations = integrations
        self.regions = regions
        self.clock = clock
        self.hangup_timeout = hangup_timeout
        self.finish_settle = finish_settle
        self.on_dispatches = on_dispatches
        self.on_call = on_call
        self.on_processed = on_processed
        self.max_attempts = max_attempts
        self.wakeup = asyncio.Event()
        self.processed = 0
        # Two drains at once could merge two events of one call into two stale copies.
        self._draining = asyncio.Lock()
        # The dispatch rows committed per call: each event sends the store only new ones.
        self.stored_rows = StoredRows()

    def notify(self) -> None:
        """An event was appended to the inbox: process it now rather than at the next poll."""
        self.wakeup.set()

    async def drain_round(self) -> bool:
        """The worker loop's round: ``True`` when it may have left items for the next one."""
        return await self.drain() > 0

    async def drain(self, batch: int = 200) -> int:
        """Process pending inbox items; returns how many were processed or quarantined.

        Items of one call are processed one after another, in inbox order; different calls
        concurrently, so the store can commit many of them with one fsync (group commit).
        An item whose processing raises stops only its own call's chain (the items behind
        it wait until it is processed or quarantined, so a call's events stay in order);
        the other calls go on. A failed attempt that did not quarantine its item is not
        counted, so the loop waits for its next wake-up or poll before the next attempt.
        When the store as a whole is failing, the failure is raised once every chain is
        done, so the round fails and the supervisor backs off.

        Only the chains whose call lease this process takes run (one ``take_leases`` per
        page of the inbox); a call another worker holds is left to it. When every call of a
        page is another's, the next page is looked at (up to ``MAX_PAGES``): with several
        workers the oldest items are often being processed elsewhere, and waiting for them
        would leave this worker idle. The call's state is loaded after its lease is held,
        so no other worker's commit is overwritten.
        """
        async with self._draining:
            chains: dict[str, list[InboxItem]] = {}
            refused: set[str] = set()
            after_id = 0
            try:
                for _ in range(MAX_PAGES):
                    items = await self.store.pending_events(batch, after_id)
                    page: dict[str, list[InboxItem]] = {}
                    for item in items:
                        # As parse_event reads it; an item without one runs alone.
                        call_id = call_id_of(item.params) or f"#{item.id}"
                        page.setdefault(call_lease(item.account, call_id), []).append(item)
                    new = [name for name in page if name not in chains and name not in refused]
                    got = await self.leases.take(new)
                    refused.update(name for name in new if name not in got)
                    for name, page_items in page.items():
                        if name in chains or name in got:
                            chains.setdefault(name, []).extend(page_items)
                    if chains or len(items) < batch:
                        break
                    after_id = items[-1].id
                return await self._run_chains(list(chains.values()))
            finally:
                await self.leases.release(chains)

    async def _run_chains(self, chains: list[list[InboxItem]]) -> int:
        """Run each chain's items in order, the chains concurrently; ``drain`` says how."""
        settled = 0
        # The calls' states in one read (their leases are held: nobody else writes them now);
        # after that each chain goes on with the state its last commit wrote.
        keys = {key for key in map(_call_key, (chain[0] for chain in chains)) if key}
        stored = await self.store.load_calls(sorted(keys))

        async def run(chain: list[InboxItem]) -> None:
            nonlocal settled
            key = _call_key(chain[0])
            known = KnownState(*key, stored.get(key)) if key else None
            for item in chain:
                try:
                    known = await self.process(item, known)
                except Exception as exc:
                    known = None  # what was committed is unknown: the next item loads it
                    if is_store_failure(exc) or not await self._store_writes():
                        # Every item would fail: counting attempts would quarantine
                        # good work. The round fails instead.
                        raise
                    if not await self._count_failure(item, exc):
                        return  # the items behind it wait for its next attempt
                settled += 1

        results = await asyncio.gather(*(run(chain) for chain in chains), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return settled

    async def replay(self, items: list[InboxItem]) -> int:
        """Run stored items through the tracker and router again; returns how many ran.

        The tracker has their events already, so nothing is merged twice: what a replay adds
        is routing (integrations added since, or whose rows were dropped, get the hook calls
        they are owed). Items set aside (quarantined, dropped) are skipped: `connector
        quarantine retry` is their way back. Never beside a drain: two could merge one call's
        events into two stale copies.
        """
        ran = 0
        async with self._draining:
            for item in items:
                if item.status in ("quarantined", "dropped"):
                    continue
                call_id = call_id_of(item.params) or f"#{item.id}"
                # Routed afresh: every row the call is owed is proposed to the store again.
                self.stored_rows.forget((item.account, call_id))
                async with self.leases.holding(call_lease(item.account, call_id)):
                    await self.process(item)
                ran += 1
        return ran

    async def _count_failure(self, item: InboxItem, exc: Exception) -> bool:
        """Record a failed attempt at ``item``; ``True`` if that quarantined it."""
        attempts = item.attempts + 1
        reason = describe_error(exc)
        quarantine = attempts >= self.max_attempts
        await self.store.fail_event(item.id, reason, quarantine=quarantine)
        with call_context(item.account, loggable_call_id(item.params.get("call_id"))):
            if quarantine:
                log.error(
                    "inbox item %s quarantined after %d failed attempt(s): %s; see"
                    " `connector quarantine show %s`, then `connector quarantine retry %s`",
                    item.id,
                    attempts,
                    reason,
                    item.id,
                    item.id,
                    exc_info=exc,
                )
            else:
                log.warning(
                    "inbox item %s failed (attempt %d of %d), tried again at the next round: %s",
                    item.id,
                    attempts,
                    self.max_attempts,
                    reason,
                    exc_info=exc,
                )
        return quarantine

    async def _store_writes(self) -> bool:
        try:
            return await self.store.writable()
        except Exception:
            return False

    async def process(self, item: InboxItem, known: KnownState | None = None) -> KnownState | None:
        """Merge one inbox item into its call and commit; returns the state committed (None
        for an item that is no call event).

        ``known`` is the call's state as this process holds it under the call's lease (loaded
        for the drain, or committed by the item before); without it the state is loaded.
        """
        parsed = self.event_of(item)
        if parsed is None:
            await self.store.commit_event(item.id, None, [])
            return None
        with call_context(item.account, parsed.call_id):
            if known is not None and (known.account, known.call_id) == (
                item.account,
                parsed.call_id,
            ):
                state = known.state
            else:
                state = await self.store.load_call(item.account, parsed.call_id)
            if state is None:  # a new call (or one pruned or forgotten): no rows stored
                self.stored_rows.forget((item.account, parsed.call_id))
            state, new = tracker.apply(
                state,
                parsed,
                account=item.account,
                region=self.regions.get(item.account, "RU"),
                received_at=item.received_at,
            )
            await self._commit(item.id, state)
            if new and log.isEnabledFor(logging.INFO):
                log.info("call %s: %s", state.outcome.value, ", ".join(e.id for e in new))
            self.processed += 1
            self.on_processed()
            return KnownState(item.account, parsed.call_id, state)

    @staticmethod
    def event_of(item: InboxItem) -> SipuniEvent | None:
        """The call event of an inbox item: as ingest stored it, or (a row stored before the
        inbox kept it) parsed from its fields; None for anything else."""
        if item.event is not None:
            return item.event
        try:
            parsed = parse_event(item.params)
        except EventError as exc:  # accepted by an older version, refused by this one
            log.warning("inbox item %s cannot be parsed any more: %s", item.id, exc)
            return None
        return parsed if isinstance(parsed, SipuniEvent) else None

    async def _commit(self, item_id: int | None, state: CallState) -> None:
        routed = router.route(
            state,
            self.integrations.get(state.account, []),
            self.host,
            now=self.clock.now(),
            finish_settle_seconds=self.finish_settle,
        )
        dispatches = routed.dispatches
        # The routing decisions go with the state: the store keeps each one that changed.
        kept = missed_calls.noted(state, dispatches) if self.keep_number_calls else None
        call = (state.account, state.call_id)
        new = self.stored_rows.new(call, dispatches)
        await self.store.commit_event(item_id, state, new, routed.decisions, number_call=kept)
        self.stored_rows.stored(call, new)
        self.on_call(state, [d.key for d in dispatches])
        if new:
            # The store announced them on DISPATCH_CHANNEL too, for other processes.
            self.on_dispatches()

    async def expire_idle(self, batch: int = 500) -> int:
        """Finish calls whose final hang-up never came; returns how many were looked at.

        A call that cannot be finished is logged and skipped (tried again next round), so it
        holds up neither the others nor the loop; a failing store fails the round.
        """
        now = self.clock.now()
        calls = await self.store.idle_open_calls(now - self.hangup_timeout, batch)
        for call in calls:
            with call_context(call.account, call.call_id):
                try:
                    await self._expire(call, now)
                except Exception as exc:
                    if is_store_failure(exc):
                        raise
                    log.exception("the idle call could not be finished by timeout")
        return len(calls)

    async def _expire(self, call: CallState, now: float) -> None:
        state, new = tracker.expire(
            call,
            now=now,
            timeout=self.hangup_timeout,
            region=self.regions.get(call.account, "RU"),
        )
        if new:
            log.info("call finished by timeout after %.0f s idle", self.hangup_timeout)
        await self._commit(None, state)

    async def expiry_round(self, batch: int = 500) -> bool:
        """The expiry loop's round: ``True`` when a full batch suggests more are idle."""
        return await self.expire_idle(batch) >= batch
