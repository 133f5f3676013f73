"""The missed-call loop: decides each number's lifecycle (``missed``) and writes its records.

The worker keeps every finished call of a client's number with the call's own commit
(``Store.commit_event(number_call=…)``); this loop, one per cluster (the lease
``singleton:missed``), looks at a number once its newest call has settled for
``settle_seconds`` (calls of one number processed out of their time order within that time
give the records their times say) and whenever one of its groups falls due for the SLA. It
works the number's groups out from all its kept calls and writes, in one transaction, the
links, the calls now decided and a dispatch row per new record and integration: rows are
unique on (integration, call, record id), so a round repeated after a crash adds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from connector_core import missed
from connector_core.callstate import CallState, LifecycleKind
from connector_core.clock import Clock
from connector_core.missed import Emission, NumberCall, Rules
from connector_core.store.base import NewDispatch, NumberSettlement, Store

log = logging.getLogger(__name__)
BATCH = 200


def noted(state: CallState, dispatches: Iterable[NewDispatch]) -> NumberCall | None:
    """What the worker keeps of a finished call: the integrations that saw it are those the
    router gave its ``finished`` record to."""
    seen_by = [d.integration for d in dispatches if d.kind is LifecycleKind.FINISHED]
    return missed.number_call(state, seen_by)


class MissedCalls:
    """The loop's round over a store (``settle_round``)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        rules: Rules,
        *,
        settle_seconds: float = 5.0,
        on_settled: Callable[[str, list[NumberCall], list[Emission]], None] = (
            lambda account, new, emissions: None
        ),
    ) -> None:
        self.store = store
        self.clock = clock
        self.rules = rules
        self.settle_seconds = settle_seconds
        # on_settled(account, calls decided now, records written): the metrics.
        self.on_settled = on_settled
        # Whether numbers wait to be decided (a round left some, or failed): /readyz reports
        # the loop when such a state lasts with no round completed.
        self.waiting = False

    async def settle_round(self) -> bool:
        """Decide the numbers whose calls have settled or whose SLA fell due; ``True`` when
        a full batch suggests more wait."""
        self.waiting = True
        now = self.clock.now()
        numbers = await self.store.unsettled_numbers(now - self.settle_seconds, now, BATCH)
        for account, number in numbers:
            await self.settle(account, number, now)
        self.waiting = len(numbers) >= BATCH
        return self.waiting

    async def settle(self, account: str, number: str, now: float) -> list[Emission]:
        """Decide one number at ``now``: its links, and the records not written before."""
        kept = await self.store.number_calls(account, number)
        calls = [k.call for k in kept]
        new = {k.call.call_id for k in kept if not k.decided}
        sent = {k.call.call_id for k in kept if k.overdue_sent}
        found = missed.groups(calls, self.rules)
        emissions = missed.records(found, self.rules, now=now, new=new, overdue_sent=sent)
        overdue = tuple(
            e.call_id for e in emissions if e.record.kind is LifecycleKind.MISSED_OVERDUE
        )
        await self.store.settle_number(
            NumberSettlement(
                account=account,
                number=number,
                decided=tuple(sorted(new)),
                links=missed.links(found, self.rules, now=now, overdue_sent=sent | set(overdue)),
                overdue_sent=overdue,
                dispatches=tuple(
                    (e.call_id, NewDispatch(integration, e.record, now))
                    for e in emissions
                    for integration in e.integrations
                ),
            )
        )
        for e in emissions:
            log.info("call %s of %s: %s", e.call_id, account, e.record.kind.value)
        self.on_settled(account, [c for c in calls if c.call_id in new], emissions)
        return emissions
