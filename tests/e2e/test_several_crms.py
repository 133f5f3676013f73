"""Several CRMs on one call: Usedesk sees every call, the amoCRM stub only the calls that a
distributor scheme transferred into the chosen scheme (the seed's «Выберите для каких схем
выполнять обработку перевода»)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from connector_core.appkeys import STORE
from connector_core.simulator import scenarios
from tests.e2e.usedesk_world import call_comments, world

pytestmark = pytest.mark.e2e
AMO = """
[accounts.012345.integrations.amocrm_stub]
transfer_schemes = ["Продажи"]
users = { "101" = 501, "102" = 502 }
"""


def distributor_calls() -> tuple[scenarios.Scenario, scenarios.Scenario]:
    stays = scenarios.scheme_transfer(
        transferred=False, client="79160000011", call_id="1717171700.21"
    )
    moves = scenarios.scheme_transfer(
        transferred=True, client="79160000012", call_id="1717171800.22", start=scenarios.START + 100
    )
    return stays, moves


async def journal(w) -> dict[str, dict]:
    effects = w.app[STORE].effects("012345/amocrm_stub")
    return {key.removeprefix("journal:"): value for key, value in await effects.items("journal:")}


async def check(w, stays: scenarios.Scenario, moves: scenarios.Scenario) -> None:
    # Usedesk: both calls, one client, one ticket and one call comment each.
    for call, number in ((stays, "79160000011"), (moves, "79160000012")):
        [client] = w.clients_with(number)
        [ticket] = w.tickets_of(client["id"])
        [comment] = call_comments(ticket)
        assert call.call_id in comment["message"]
    # amoCRM stub: only the transferred call, each action once.
    actions = await journal(w)
    assert set(actions) == {
        "contact:+79160000012",
        f"lead:{moves.call_id}",
        f"note:{moves.call_id}",
        f"responsible:{moves.call_id}",
    }
    assert actions[f"responsible:{moves.call_id}"]["user_id"] == 501


async def test_usedesk_acts_on_all_calls_amocrm_only_on_transferred(tmp_path: Path) -> None:
    stays, moves = distributor_calls()
    async with world(tmp_path, others=AMO) as w:
        await w.call(stays)
        await w.call(moves, method="POST")
        await check(w, stays, moves)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_duplicated_and_shuffled_events_change_nothing(tmp_path: Path, seed: int) -> None:
    stays, moves = distributor_calls()
    rng = random.Random(seed)
    async with world(tmp_path, others=AMO) as w:
        for call in (stays, moves):
            noisy = scenarios.duplicated(scenarios.shuffled(call, rng), rng.randrange(3))
            await w.call(noisy)
        await check(w, stays, moves)
        before = (w.state(), await journal(w))
        for call in (moves, stays):
            await w.call(scenarios.shuffled(call, rng), method="POST")
        assert (w.state(), await journal(w)) == before
