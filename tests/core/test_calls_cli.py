"""``connector calls`` / ``connector trace`` and the read model under them: a number in any
spelling, filters checked with a reason, a trace for people and as JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector_core.calls_view import CallFilter, ViewError, store_query
from connector_core.simulator import scenarios
from tests.core.test_cli import AMOCRM, create_store, run, write_config

ACCOUNT, OTHER = "012345", "054321"
EXIT_OK, EXIT_NOT_FOUND, EXIT_BAD_INPUT = 0, 1, 2


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONNECTOR_CONFIG", raising=False)
    yield tmp_path


def replay(folder: Path, capsys, *calls: scenarios.Scenario, account: str = ACCOUNT) -> None:
    lines = [
        json.dumps({"account": account, "params": params}) for c in calls for params in c.events
    ]
    (folder / "calls.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, _, err = run(capsys, "replay", "calls.jsonl")
    assert code == EXIT_OK, err


# -- the read model's query ----------------------------------------------------------------------


REGIONS = {ACCOUNT: "RU", OTHER: "KZ", "777777": "DE"}


@pytest.mark.parametrize(
    "spelling", ["8 (916) 123-45-67", "+7 916 123 45 67", "79161234567", "9161234567"]
)
def test_a_number_in_any_spelling_is_read_in_each_accounts_region(spelling: str) -> None:
    query = store_query(CallFilter(phone=spelling, account=ACCOUNT), REGIONS)
    assert query.numbers == ((ACCOUNT, "+79161234567"),)


def test_without_an_account_the_number_is_read_in_every_accounts_region() -> None:
    query = store_query(CallFilter(phone="030 1234567"), REGIONS)
    assert query.numbers is not None
    assert ("777777", "+49301234567") in query.numbers
    assert all(account != "777777" or number == "+49301234567" for account, number in query.numbers)


@pytest.mark.parametrize(
    ("wanted", "reason"),
    [
        (
            CallFilter(phone="call me"),
            "'call me' cannot be read as a phone number (region DE, KZ, RU)",
        ),
        (CallFilter(account="999999"), "account 999999 is not in the config (accounts: 012345,"),
        (CallFilter(outcome="lost"), "outcome 'lost' is not one of: ringing, talking, answered,"),
        (CallFilter(status="failed"), "status 'failed' is not one of: dead, retrying, pending,"),
        (CallFilter(limit=0), "limit must be between 1 and 1000, not 0"),
    ],
)
def test_a_filter_that_cannot_be_applied_says_why(wanted: CallFilter, reason: str) -> None:
    with pytest.raises(ViewError) as caught:
        store_query(wanted, REGIONS)
    assert str(caught.value).startswith(reason)


# -- the commands ------------------------------------------------------------------------------


def test_calls_lists_newest_first_and_finds_a_number_spelt_otherwise(workdir: Path, capsys) -> None:
    write_config(workdir, AMOCRM)
    first = scenarios.inbound_answered(client="89161234567", call_id="1717171700.1")
    second = scenarios.inbound_missed(
        client="79035550011", call_id="1717171760.2", start=scenarios.START + 60
    )
    replay(workdir, capsys, first, second)

    code, out, _ = run(capsys, "calls")
    assert code == EXIT_OK
    header, *rows = out.splitlines()
    assert header.startswith("started (UTC") and header.endswith("outcome   length  integrations")
    assert [row.split()[2] for row in rows] == ["1717171760.2", "1717171700.1"]
    assert rows[0].split()[4:] == [
        "in", "+79035550011", "101,102", "-", "missed", "0:40", "amocrm_stub", "done",
    ]  # fmt: skip

    code, out, _ = run(capsys, "calls", "--phone", "+7 (916) 123-45-67", "--json")
    assert code == EXIT_OK
    [found] = json.loads(out)["calls"]
    assert (found["call_id"], found["number"], found["outcome"]) == (
        "1717171700.1",
        "+79161234567",
        "answered",
    )
    assert found["integrations"] == [
        {
            "integration": f"{ACCOUNT}/amocrm_stub",
            "status": "done",
            "link": "https://acme.amocrm.ru/contacts/list/?term=79161234567",
        }
    ]

    assert run(capsys, "calls", "--outcome", "missed", "--extension", "101")[1].count("\n") == 2
    assert run(capsys, "calls", "--since", "2000-01-01", "--phone", "89990000000")[1] == (
        "no stored call matches\n"
    )


def test_calls_with_a_filter_it_cannot_apply_exits_2_saying_why(workdir: Path, capsys) -> None:
    write_config(workdir, AMOCRM)
    create_store(workdir / "connector.db")
    code, out, err = run(capsys, "calls", "--phone", "not a number")
    assert (code, out) == (EXIT_BAD_INPUT, "")
    assert err == "connector calls: 'not a number' cannot be read as a phone number (region RU)\n"


def test_calls_takes_an_integration_by_the_name_its_table_shows(workdir: Path, capsys) -> None:
    """The list heads the column ``amocrm_stub``: that name finds its calls; a misspelt one
    is said to be unknown, with the names there are, rather than matching nothing."""
    write_config(workdir, AMOCRM)
    replay(workdir, capsys, scenarios.inbound_answered(call_id="1717171700.1"))

    code, out, _ = run(capsys, "calls", "--status", "done", "--integration", "amocrm_stub")
    assert code == EXIT_OK and out.splitlines()[1].split()[2] == "1717171700.1"

    code, out, err = run(capsys, "calls", "--status", "done", "--integration", "amocrm")
    assert (code, out) == (EXIT_BAD_INPUT, "")
    assert err == (
        "connector calls: integration 'amocrm' is not in the config; give it as ACCOUNT/NAME"
        f" ({ACCOUNT}/amocrm_stub)\n"
    )

    code, out, err = run(capsys, "calls", "--status", "done", "--integration", f"{ACCOUNT}/amo")
    assert (code, out) == (EXIT_OK, "no stored call matches\n")
    assert err == (
        f"note: {ACCOUNT}/amo is not in the config (integrations: {ACCOUNT}/amocrm_stub);"
        " its stored calls are shown, if any\n"
    )


def test_trace_of_an_unknown_call_exits_1_saying_where_to_look(workdir: Path, capsys) -> None:
    write_config(workdir, AMOCRM)
    create_store(workdir / "connector.db")
    code, out, err = run(capsys, "trace", "1717171700.404")
    assert (code, out) == (EXIT_NOT_FOUND, "")
    assert err == (
        "connector trace: no stored call has the id '1717171700.404' (see `connector calls`)\n"
    )
    # The number a person has in hand, typed where the call id goes.
    code, out, err = run(capsys, "trace", "+7 916 105-87-56")
    assert (code, out) == (EXIT_NOT_FOUND, "")
    assert err == (
        "connector trace: no stored call has the id '+7 916 105-87-56' (it looks like a phone"
        " number: `connector calls --phone '+7 916 105-87-56'` lists its calls)\n"
    )


def test_trace_asks_which_account_when_two_have_the_call(workdir: Path, capsys) -> None:
    write_config(workdir, AMOCRM + f'[accounts.{OTHER}]\ntoken = "other-token-0123456789"')
    call = scenarios.inbound_answered(call_id="1717171700.7")
    replay(workdir, capsys, call)
    replay(
        workdir,
        capsys,
        scenarios.inbound_answered(call_id="1717171700.7", account=OTHER),
        account=OTHER,
    )
    code, _, err = run(capsys, "trace", call.call_id)
    assert code == EXIT_NOT_FOUND
    assert err == (
        f"connector trace: call '1717171700.7' is in accounts {ACCOUNT} and {OTHER}:"
        " name one with --account\n"
    )
    code, out, _ = run(capsys, "trace", call.call_id, "--account", OTHER, "--json")
    assert code == EXIT_OK
    trace = json.loads(out)
    assert trace["summary"]["account"] == OTHER and trace["integrations"] == []


def test_trace_for_people_tells_the_calls_story(workdir: Path, capsys) -> None:
    write_config(workdir, AMOCRM)
    call = scenarios.inbound_missed(client="79035550011", call_id="1717171760.2")
    replay(workdir, capsys, call)
    code, out, _ = run(capsys, "trace", call.call_id)
    assert code == EXIT_OK
    lines = [line.strip() for line in out.splitlines()]
    assert lines[0] == f"Call {call.call_id} of account {ACCOUNT}"
    assert "inbound from +79035550011" in lines
    assert "rang 101, 102" in lines
    assert "outcome missed, length 0:40 (talk 0:00), finished by hangup" in lines
    events = [line for line in lines if " ring " in line or " hangup " in line]
    assert len(events) == len(call.events)
    assert (
        f"{ACCOUNT}/amocrm_stub: done  https://acme.amocrm.ru/contacts/list/?term=79035550011"
        in lines
    )
    assert "routing at" in out and 'sees the call: schemes = "all": every call' in out
    assert any(
        line.startswith("connector_call_finished (finished): done, 1 attempt(s)") for line in lines
    )
    assert "request set_responsible PATCH /api/v4/leads: ok, 0.000 s" in lines
    assert (
        "decided responsible user 5999: missed call: nobody answered, default_responsible"
        " (recorded)"
    ) in lines
    assert f"| inbound call {call.call_id}: missed, 40 s (talk 0 s)" in lines


def test_an_outbound_call_is_to_the_client_and_dialled_by_the_employee(
    workdir: Path, capsys
) -> None:
    write_config(workdir, AMOCRM)
    call = scenarios.outbound_answered("103", client="79265550003", call_id="1717171800.3")
    replay(workdir, capsys, call)
    code, out, _ = run(capsys, "trace", call.call_id)
    assert code == EXIT_OK
    assert "outbound to +79265550003 dialled by 103" in [line.strip() for line in out.splitlines()]
    code, out, _ = run(capsys, "calls")
    [row] = [line for line in out.splitlines() if call.call_id in line]
    assert row.split()[4:7] == ["out", "+79265550003", "103"]  # the number, and who dialled it
