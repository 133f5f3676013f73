"""A scheme named by its name first and by its number later, through the real service.

Usedesk (sandbox) sees every call, the amoCRM stub and a recorder only the calls
transferred into «Продажи», and another recorder every call: each hook runs exactly once,
with a scheme that is never ``None``, and no row is left pending. Sending everything again
changes nothing.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from connector_core.appkeys import STORE
from connector_core.simulator import scenarios
from tests.e2e.usedesk_world import World, call_comments, world
from tests.harness import ACCOUNT, seen

pytestmark = pytest.mark.e2e
OTHERS = """
[accounts.012345.integrations.amocrm_stub]
transfer_schemes = ["Продажи"]
users = { "101" = 501, "102" = 502 }

[accounts.012345.integrations.all_calls]
plugin = "recorder"

[accounts.012345.integrations.after_transfer]
plugin = "recorder"
transfer_schemes = ["Продажи"]
"""
RINGS = (1, 2)  # the events of scenarios.scheme_transfer() that ring the legs in sales


def calls() -> list[scenarios.Scenario]:
    """Into sales named first by its name, first by its number, and by both at once."""
    named = scenarios.scheme_transfer(client="79160000031", call_id="1717171700.31")
    numbered = scenarios.scheme_transfer(
        client="79160000032", call_id="1717171800.32", start=scenarios.START + 100
    )
    both = scenarios.scheme_transfer(
        client="79160000033", call_id="1717171900.33", start=scenarios.START + 200
    )
    return [
        scenarios.with_scheme_named_by(named, "treeName", RINGS),
        scenarios.with_scheme_named_by(numbered, "treeNumber", RINGS),
        both,
    ]


async def send_one_by_one(w: World, s: scenarios.Scenario) -> None:
    """Each event processed and its hooks run before the next arrives, as in production."""
    for params in s.events:
        await w.call(replace(s, events=[params]))


def hooks(journal: list[str], call_id: str) -> list[str]:
    return [k.split(":", 2)[2] for k in journal if k.startswith(f"seen:{call_id}:")]


async def observed(w: World) -> tuple[object, ...]:
    amo = await w.app[STORE].effects(f"{ACCOUNT}/amocrm_stub").items("journal:")
    recorded = [await seen(w.app, name) for name in ("all_calls", "after_transfer")]
    return w.state(), amo, recorded


async def check(w: World, sent: list[scenarios.Scenario]) -> None:
    for s in sent:
        number = s.events[0]["src_num"]
        [client] = w.clients_with(number)
        [ticket] = w.tickets_of(client["id"])
        [comment] = call_comments(ticket)
        assert s.call_id in comment["message"]
        # A recorder hook given no scheme raises, and its row would stay pending.
        rows = await w.app[STORE].dispatches_for(ACCOUNT, s.call_id)
        assert {r.status for r in rows} == {"done"}, [(r.key, r.last_error) for r in rows]
        entered = [h for h in hooks(await seen(w.app, "all_calls"), s.call_id) if "scheme" in h]
        assert len(entered) == 1, entered
        assert hooks(await seen(w.app, "after_transfer"), s.call_id)[1:] == [
            "answered:101",
            "finished:answered",
        ]
        reached = [r for r in rows if r.integration.endswith(("/amocrm_stub", "/after_transfer"))]
        assert sorted(r.key for r in reached if r.key.startswith("reached")) == [
            "reached_transfer_scheme",
            "reached_transfer_scheme",
        ]
    actions = {key for key, _ in await w.app[STORE].effects(f"{ACCOUNT}/amocrm_stub").items()}
    for s in sent:
        assert {f"journal:lead:{s.call_id}", f"journal:note:{s.call_id}"} <= actions
    for name in ("all_calls", "after_transfer"):
        assert not [k for k in await seen(w.app, name) if k.startswith("dup")], name


async def test_each_hook_once_with_a_scheme_whatever_its_spelling(
    tmp_path: Path, test_plugins_dir: Path
) -> None:
    named, numbered, both = sent = calls()
    async with world(tmp_path, others=OTHERS) as w:
        for s in sent:
            await send_one_by_one(w, s)
        await check(w, sent)
        journal = await seen(w.app, "after_transfer")
        # The transfer-scheme hook ran while only the name (or only the number) was known.
        assert hooks(journal, named.call_id)[0] == "reached_transfer_scheme:Продажи"
        assert hooks(journal, numbered.call_id)[0] == "reached_transfer_scheme:000-200"
        assert hooks(journal, both.call_id)[0] == "reached_transfer_scheme:000-200"

        before = await observed(w)
        rows = [await w.app[STORE].dispatches_for(ACCOUNT, s.call_id) for s in sent]
        rng = random.Random(11)
        for _ in range(2):  # everything again, twice, in another order
            for s in sent:
                await w.call(scenarios.shuffled(s, rng), method="POST")
        assert await observed(w) == before
        assert [await w.app[STORE].dispatches_for(ACCOUNT, s.call_id) for s in sent] == rows


async def test_all_events_before_any_hook_runs(tmp_path: Path, test_plugins_dir: Path) -> None:
    """Every row proposed while only the name was known runs after the number arrived."""
    sent = calls()
    async with world(tmp_path, others=OTHERS) as w:
        for s in sent:
            await w.call(s)
        await check(w, sent)
        journal = await seen(w.app, "after_transfer")
        for s in sent:
            assert hooks(journal, s.call_id)[0] == "reached_transfer_scheme:000-200"
