"""What the console's buttons do: the same store operations as ``connector dlq``,
``connector quarantine`` and ``connector replay``, then a nudge to the running loops.

Each returns the i18n key of the message the operator sees next, and logs what was done (by
row id: never a secret).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from connector_core.click_to_call import ClickToCallService, Refused
from connector_core.dispatcher import Dispatcher
from connector_core.logcontext import call_context
from connector_core.store.base import Store
from connector_core.worker import Worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Done:
    """An action's outcome: the message key, and whether it changed anything."""

    message: str
    changed: bool


async def retry_dead_letter(store: Store, dispatcher: Dispatcher, row_id: int) -> Done:
    """`connector dlq retry`: a dead hook call gets a fresh start at once."""
    row = await store.get_dispatch(row_id)
    if row is None or not await store.requeue_dispatch(row_id):
        return Done("flash.not_dead", False)
    with call_context(row.account, row.call_id, row.integration):
        log.info("console: dead letter %s (%s) queued again", row_id, row.key)
    dispatcher.notify()
    return Done("flash.retried", True)


async def drop_dead_letter(store: Store, row_id: int) -> Done:
    """`connector dlq drop`: give a dead hook call up for good (it stays visible)."""
    row = await store.get_dispatch(row_id)
    if row is None or not await store.drop_dispatch(row_id):
        return Done("flash.not_dead", False)
    with call_context(row.account, row.call_id, row.integration):
        log.info("console: dead letter %s (%s) dropped", row_id, row.key)
    return Done("flash.dropped", True)


async def retry_quarantined(store: Store, worker: Worker, item_id: int) -> Done:
    """`connector quarantine retry`: a quarantined webhook goes back into the queue."""
    if not await store.requeue_event(item_id):
        return Done("flash.not_quarantined", False)
    log.info("console: quarantined inbox item %s queued again", item_id)
    worker.notify()
    return Done("flash.retried", True)


async def drop_quarantined(store: Store, item_id: int) -> Done:
    """`connector quarantine drop`: give a quarantined webhook up for good."""
    if not await store.drop_event(item_id):
        return Done("flash.not_quarantined", False)
    log.info("console: quarantined inbox item %s dropped", item_id)
    return Done("flash.dropped", True)


async def replay_call(
    store: Store, worker: Worker, dispatcher: Dispatcher, account: str, call_id: str
) -> Done:
    """`connector replay --since`, for one call: its stored events through routing again."""
    items = await store.call_events(account, call_id)
    if not items:
        return Done("flash.no_events", False)
    ran = await worker.replay(items)
    with call_context(account, call_id):
        log.info("console: call replayed (%d of %d stored event(s))", ran, len(items))
    dispatcher.notify()
    return Done("flash.replayed", True)


# What the operator reads after «Перезвонить», by the refusal's code; the details (Sipuni's
# own words) are kept on the call and shown in its click-to-call section.
CALL_BACK_REFUSED = {
    "no_api_key": "flash.call_back_off",
    "no_number": "flash.call_back_no_number",
    "rate_limited": "flash.call_back_too_often",
    "sipuni_refused": "flash.call_back_refused",
    "sipuni_unavailable": "flash.call_back_unavailable",
}


async def call_back(
    service: ClickToCallService, account: str, call_id: str, extension: str
) -> Done:
    """«Перезвонить»: Sipuni rings ``extension``, then the call's client."""
    try:
        await service.start(account, call_id, extension, "console")
    except Refused as refused:
        with call_context(account, call_id):
            log.warning("console: click-to-call for %s refused: %s", extension, refused)
        return Done(CALL_BACK_REFUSED.get(refused.code, "flash.call_back_failed"), False)
    return Done("flash.called_back", True)
