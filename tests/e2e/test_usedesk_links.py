"""Usedesk links that heal: a number's cached client deleted or merged in Usedesk between two
calls, the integration pointed at another account, and ``connector forget``.

Each test runs the real service against the sandbox; the second call must reach the right
client with no dead letter and no id from the old link or the old account.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from connector_core import cli
from connector_core.appkeys import STORE
from connector_core.simulator import scenarios
from tests.e2e.usedesk_world import World, call_comments, world
from tests.harness import ACCOUNT, TOKEN

pytestmark = pytest.mark.e2e
NEW = "79160000001"
IVAN = 1001  # seeded «Иван Петров», "+7 916 123-45-67", open ticket 5001


def first_call() -> scenarios.Scenario:
    return scenarios.inbound_answered(ring=["101"], client=NEW, call_id="1717171700.1")


def second_call() -> scenarios.Scenario:
    return scenarios.inbound_answered(
        ring=["101"], client=NEW, call_id="1717179000.2", start=scenarios.START + 7300
    )


async def no_dead_letters(w: World) -> None:
    assert await w.app[STORE].dead_dispatches() == []


def create_ticket_clients(w: World) -> list[str]:
    """``client_id`` of each /create/ticket: an id, or ``new_client`` (made with the ticket)."""
    return [str(r.params["client_id"]) for r in w.sandbox.requests("/create/ticket")]


async def test_a_client_deleted_between_two_calls_is_made_again(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await w.call(first_call())
        [old] = w.clients_with(NEW)
        w.sandbox.delete_client(old["id"])  # an agent deletes the card (and its tickets)
        await w.call(second_call())
        [new] = w.clients_with(NEW)
        assert new["id"] != old["id"]
        [ticket] = w.tickets_of(new["id"])
        [comment] = call_comments(ticket)
        assert "1717179000.2" in comment["message"]
        await no_dead_letters(w)
        # The first call made the client with its ticket; the second found the link's ticket
        # gone (Usedesk refused it), searched again and made the client anew: never the old id.
        assert create_ticket_clients(w) == ["new_client", "new_client"]
        assert "/ticket" in [r.path for r in w.sandbox.requests() if r.error]


async def test_a_client_merged_into_another_sends_the_call_to_the_survivor(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        await w.call(first_call())
        [made] = w.clients_with(NEW)
        [made_ticket] = w.tickets_of(made["id"])
        w.sandbox.merge_clients(into=IVAN, merged=made["id"])  # the agent merges the duplicate
        await w.call(second_call())
        assert [c["id"] for c in w.state()["clients"] if c["id"] == made["id"]] == []
        assert [c["id"] for c in w.clients_with(NEW)] == [IVAN]  # no third card for the number
        # The survivor's newest open ticket (the merged one, still New) gets the call.
        [ticket] = [t for t in w.tickets_of(IVAN) if t["id"] == made_ticket["id"]]
        assert [c["message"] for c in call_comments(ticket) if "1717179000.2" in c["message"]]
        await no_dead_letters(w)
        assert create_ticket_clients(w) == ["new_client"]  # only the first call's


async def test_another_account_under_the_same_name_never_gets_the_old_ids(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        await w.call(first_call())
        [old] = w.clients_with(NEW)
    # The same integration, now pointed at another Usedesk (another base_url), same database.
    async with world(tmp_path) as w:
        # There the old id belongs to a stranger: reusing it would write to that person.
        while (stranger := w.sandbox.call("/create/client", {"name": "Чужой"})[1])[
            "client_id"
        ] < old["id"]:
            pass
        assert stranger["client_id"] == old["id"]
        await w.call(second_call())
        [new] = w.clients_with(NEW)
        assert new["id"] != old["id"]
        assert w.tickets_of(old["id"]) == []  # the stranger got nothing
        assert str(old["id"]) not in create_ticket_clients(w)
        assert len(call_comments(w.tickets_of(new["id"])[0])) == 1
        await no_dead_letters(w)


async def forget(argv: list[str]) -> int:
    """``connector forget`` as a person runs it, beside the running service (its own loop)."""
    return await asyncio.to_thread(cli.main, ["forget", *argv])


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "connector.toml"
    path.write_text(
        f"""
[storage]
path = "{tmp_path / "connector.db"}"
[accounts.{ACCOUNT}]
token = "{TOKEN}"
[accounts.{ACCOUNT}.integrations.usedesk]
api_token = "not-used-by-forget"
"""
    )
    return path


async def test_forget_phone_drops_the_link_and_the_next_call_looks_up_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    async with world(tmp_path) as w:
        await w.call(first_call())
        [client] = w.clients_with(NEW)
        searches = len(w.sandbox.requests("/clients"))
        capsys.readouterr()
        code = await forget(["--phone", "+7 916 000-00-01", "--config", config])
        out = capsys.readouterr().out.splitlines()
        assert code == 0
        assert out[0].startswith(f"forgot {ACCOUNT}/usedesk phone:+{NEW}:client@")
        assert out[1:] == [f"1 link(s) of +{NEW} dropped; the next call looks it up again"]
        # Forgetting again finds nothing, and says so.
        assert await forget(["--phone", NEW, "--config", config]) == 0
        assert capsys.readouterr().out == f"no stored links of +{NEW}; nothing to forget\n"
        # A misspelt integration finds nothing either: that is said, with the right names.
        typo = ["--phone", NEW, "--integration", f"{ACCOUNT}/usedsk", "--config", config]
        assert await forget(typo) == 0
        assert capsys.readouterr() == (
            f"no stored links of +{NEW}; nothing to forget\n",
            f"note: {ACCOUNT}/usedsk is not in the config (integrations: {ACCOUNT}/usedesk)\n",
        )
        await w.call(second_call())
        assert len(w.sandbox.requests("/clients")) > searches  # looked up, not remembered
        assert [c["id"] for c in w.clients_with(NEW)] == [client["id"]]  # found, not made
        await no_dead_letters(w)


async def test_forget_call_drops_the_calls_link_in_one_integration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    async with world(tmp_path) as w:
        await w.call(first_call())
        effects = w.app[STORE].effects(f"{ACCOUNT}/usedesk")
        assert await effects.get("call:1717171700.1") is not None
        capsys.readouterr()
        argv = ["--call", "1717171700.1", "--integration", "usedesk"]
        assert await forget([*argv, "--config", config]) == 0
        assert capsys.readouterr().out.splitlines() == [
            f"forgot {ACCOUNT}/usedesk call:1717171700.1",
            "1 link(s) of call 1717171700.1 dropped; the next call looks it up again",
        ]
        assert await effects.get("call:1717171700.1") is None
        assert await effects.get("comment:1717171700.1") is not None  # done steps are kept


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--phone", "abc"],
            "connector forget: cannot read 'abc' as a phone number (region RU);"
            " give it as the caller's number, e.g. +79161234567\n",
        ),
        (
            ["--phone", NEW, "--integration", "amocrm"],
            "connector forget: no integration named 'amocrm' in the config;"
            f" give it as ACCOUNT/NAME ({ACCOUNT}/usedesk)\n",
        ),
    ],
)
def test_forget_explains_what_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    config = str(write_config(tmp_path))
    assert cli.main(["forget", *argv, "--config", config]) == 2
    assert capsys.readouterr().err == message


async def test_a_ticket_deleted_during_the_call_is_replaced_at_hang_up(tmp_path: Path) -> None:
    async with world(tmp_path, 'ticket_created_on = "ring"') as w:
        call = first_call()
        ring, rest = call.events[:1], call.events[1:]
        await w.call(scenarios.Scenario(**{**vars(call), "events": ring}))
        [client] = w.clients_with(NEW)
        [gone] = w.tickets_of(client["id"])  # made when the phone rang
        del w.sandbox.state.tickets[gone["id"]]  # an agent deletes it before the hang-up
        await w.call(scenarios.Scenario(**{**vars(call), "events": rest}))
        [ticket] = w.tickets_of(client["id"])
        assert ticket["id"] != gone["id"] and ticket["assignee_id"] == 2
        assert len(call_comments(ticket)) == 1
        await no_dead_letters(w)


async def test_an_agent_removed_after_agents_were_read_is_read_again_not_dead_lettered(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        await w.call(first_call())  # reads /users: agent 2 (extension 101) exists
        reads = len(w.sandbox.requests("/users"))
        del w.sandbox.state.agents[2]  # removed from Usedesk within the agents' cache time
        other = "79160000002"  # a new caller, so a new ticket whose owner is set
        await w.call(
            scenarios.inbound_answered(
                ring=["101"], client=other, call_id="1717179000.3", start=scenarios.START + 7300
            )
        )
        [client] = w.clients_with(other)
        [ticket] = w.tickets_of(client["id"])
        assert ticket["assignee_id"] is None  # agent 2 is gone: the ticket stays unowned
        [comment] = call_comments(ticket)
        assert comment["user_id"] != 2
        assert len(w.sandbox.requests("/users")) > reads  # read again after the refusal
        await no_dead_letters(w)
