"""The dispatcher's trips to the store for a call group: one read for the rows and the
call's state together, then one write per row's result (with its record), whatever the
number of rows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from connector_core.appkeys import DISPATCHER, STORE, WORKER
from connector_core.simulator import scenarios
from tests.harness import ACCOUNT, TOKEN, app_for, make_config, seen

RECORDER = '[accounts.012345.integrations.rec]\nplugin = "recorder"\n'


class CountingStore:
    """The store, with a count of each method the dispatcher calls on it."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        self.calls[name] += 1
        return getattr(self.store, name)


async def test_a_group_is_read_once_and_each_result_written_once(
    tmp_path: Path, test_plugins_dir: Path, aiohttp_client
) -> None:
    config, host = make_config(tmp_path, RECORDER)
    app = app_for(config, host)
    client = await aiohttp_client(app)
    call = scenarios.inbound_answered(call_id="1717171700.1")
    for params in call.events:
        assert (await (await client.get(f"/sipuni/{TOKEN}", params=params)).json())["success"]
    await app[WORKER].drain()
    rows = await app[STORE].pending_dispatches(100)
    assert len(rows) >= 3  # started, answered, finished: one group of several rows
    dispatcher = app[DISPATCHER]
    counting = dispatcher.store = CountingStore(app[STORE])

    assert await dispatcher.dispatch_due() == 1
    await dispatcher.wait_idle()

    assert await app[STORE].pending_dispatches(100) == []
    assert len(await seen(app, "rec")) >= len(rows)  # every hook ran
    reads = {name: n for name, n in counting.calls.items() if name != "complete_dispatch"}
    assert reads == {"due_heads": 1, "group_work": 1}
    assert counting.calls["complete_dispatch"] == len(rows)
    records = await app[STORE].call_records(ACCOUNT, call.call_id)
    assert len([r for r in records if r.entry.kind == "hook"]) == len(rows)
