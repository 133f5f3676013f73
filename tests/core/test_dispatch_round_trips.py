"""The dispatcher's trips to the store for a call group: one read for the rows and the
call's state together, then one write per row's result (with its record), whatever the
number of rows; the rows added while the group runs are read in the write of its last
result, not by a read of their own."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from connector_core.appkeys import DISPATCHER, STORE, WORKER
from connector_core.simulator import scenarios
from tests.harness import ACCOUNT, TOKEN, app_for, make_config, seen

RECORDER = '[accounts.012345.integrations.rec]\nplugin = "recorder"\n'


class CountingStore:
    """The store, with a count of each method the dispatcher calls on it."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()
        # Run before the first result is written: what happens while a hook call runs.
        self.meanwhile: Callable[[], Awaitable[None]] | None = None

    def __getattr__(self, name: str) -> Any:
        self.calls[name] += 1
        method = getattr(self.store, name)
        if not name.startswith("complete") or self.meanwhile is None:
            return method

        async def after_meanwhile(*args: Any) -> Any:
            assert self.meanwhile is not None
            meanwhile, self.meanwhile = self.meanwhile, None
            await meanwhile()
            return await method(*args)

        return after_meanwhile


Receive = Callable[[dict[str, str]], Awaitable[None]]


async def started(tmp_path: Path, aiohttp_client: Any) -> tuple[web.Application, Receive]:
    """A service with the recorder, and how to send it a webhook."""
    config, host = make_config(tmp_path, RECORDER)
    app = app_for(config, host)
    client = await aiohttp_client(app)

    async def receive(params: dict[str, str]) -> None:
        assert (await (await client.get(f"/sipuni/{TOKEN}", params=params)).json())["success"]

    return app, receive


async def test_a_group_is_read_once_and_each_result_written_once(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client
) -> None:
    app, receive = await started(tmp_path, aiohttp_client)
    call = scenarios.inbound_answered(call_id="1717171700.1")
    for params in call.events:
        await receive(params)
    await app[WORKER].drain()
    rows = await app[STORE].pending_dispatches(100)
    assert len(rows) >= 3  # started, answered, finished: one group of several rows
    dispatcher = app[DISPATCHER]
    counting = dispatcher.store = CountingStore(app[STORE])

    assert await dispatcher.dispatch_due() == 1
    await dispatcher.wait_idle()

    assert await app[STORE].pending_dispatches(100) == []
    assert len(await seen(app, "rec")) >= len(rows)  # every hook ran
    writes = {"complete_dispatch", "complete_and_read_group"}
    reads = {name: n for name, n in counting.calls.items() if name not in writes}
    assert reads == {"due_heads": 1, "group_work": 1}
    # The last row's write reads what was added meanwhile (nothing here).
    assert counting.calls["complete_dispatch"] == len(rows) - 1
    assert counting.calls["complete_and_read_group"] == 1
    records = await app[STORE].call_records(ACCOUNT, call.call_id)
    assert len([r for r in records if r.entry.kind == "hook"]) == len(rows)


async def test_rows_added_while_a_group_runs_run_in_the_same_turn(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client
) -> None:
    app, receive = await started(tmp_path, aiohttp_client)
    call = scenarios.inbound_answered(call_id="1717171700.2")
    first, rest = call.events[0], call.events[1:]
    await receive(first)
    await app[WORKER].drain()
    assert len(await app[STORE].pending_dispatches(100)) == 1  # started
    dispatcher = app[DISPATCHER]
    counting = dispatcher.store = CountingStore(app[STORE])

    async def the_call_goes_on() -> None:
        for params in rest:
            await receive(params)
        await app[WORKER].drain()

    counting.meanwhile = the_call_goes_on  # while the started hook runs
    assert await dispatcher.dispatch_due() == 1
    await dispatcher.wait_idle()

    assert await app[STORE].pending_dispatches(100) == []
    ran = await seen(app, "rec")
    kinds = [key.split(":")[2] for key in ran]
    assert kinds == ["started", "answered", "finished"]  # in order, each once
    # One scan and one read of the group; every row after the first came with a result's write.
    assert counting.calls["due_heads"] == 1
    assert counting.calls["group_work"] == 1
    records = await app[STORE].call_records(ACCOUNT, call.call_id)
    assert len([r for r in records if r.entry.kind == "hook"]) == len(ran)


async def test_a_group_whose_hook_ran_while_the_service_began_to_stop_ends_its_turn(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client
) -> None:
    """Whether a group goes on is asked again once its hook is done: rows added while it ran
    wait for the next start when the service began to stop meanwhile (stop() waits for the
    groups, and a shutdown has its limit)."""
    app, receive = await started(tmp_path, aiohttp_client)
    call = scenarios.inbound_answered(call_id="1717171700.3")
    first, rest = call.events[0], call.events[1:]
    await receive(first)
    await app[WORKER].drain()
    dispatcher = app[DISPATCHER]
    counting = dispatcher.store = CountingStore(app[STORE])
    stopping: list[asyncio.Future[None]] = []

    async def the_call_goes_on_and_the_service_stops() -> None:
        for params in rest:
            await receive(params)
        await app[WORKER].drain()
        stopping.append(asyncio.ensure_future(dispatcher.stop()))
        await asyncio.sleep(0)  # stop() has begun: it waits for this group

    counting.meanwhile = the_call_goes_on_and_the_service_stops
    assert await dispatcher.dispatch_due() == 1
    await stopping[0] if stopping else await dispatcher.wait_idle()

    assert stopping, "the hook's result was never written"
    ran = await seen(app, "rec")
    assert [key.split(":")[2] for key in ran] == ["started"]
    pending = await app[STORE].pending_dispatches(100)
    assert [d.key for d in pending] == ["answered", "finished"]  # for the next start
