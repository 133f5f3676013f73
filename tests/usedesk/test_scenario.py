"""The Usedesk scenario's pure decisions, on calls the real tracker made from Sipuni events.

Every ``CallState`` here comes from feeding a simulator scenario's requests through
``parse_event`` and ``tracker.apply``: the decisions are checked on the calls the plugin will
really see, not on hand-built states. Nothing is mocked and nothing does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from connector_core import templates, tracker
from connector_core.callstate import CallState, Direction, Outcome
from connector_core.events import SipuniEvent, parse_event
from connector_core.simulator import scenarios as sc
from plugins.usedesk import scenario
from plugins.usedesk.client import ClientSummary, TicketSummary
from plugins.usedesk.scenario import Assignment, HiddenLookup, Lookup, Skip, Wait
from plugins.usedesk.settings import UsedeskSettings

REGION = "RU"
RECEIVED = 1_717_180_000.0
TIMEOUT = 7200.0

# Extensions → Usedesk agent ids, as flow.UsedeskRuntime.agents() resolves them.
AGENTS = {"101": 2, "102": 3, "103": 1}
ON_DUTY = 4
KNOWN = {1, 2, 3, 4}


def settings(**values: Any) -> UsedeskSettings:
    return UsedeskSettings(api_token="secret-token-value", **values)


def play(events: Sequence[dict[str, str]], account: str = sc.ACCOUNT) -> CallState:
    """Feed raw Sipuni requests to the real tracker, one second apart."""
    state: CallState | None = None
    received = RECEIVED
    for raw in events:
        event = parse_event(raw)
        assert isinstance(event, SipuniEvent), event
        received += 1.0
        state, _ = tracker.apply(state, event, account=account, region=REGION, received_at=received)
    assert state is not None
    return state


def ended(s: sc.Scenario) -> CallState:
    """The call as it is when it ends (by its hang-up, or by the timeout if that was lost)."""
    state = play(s.events)
    if not state.finished:
        state, _ = tracker.expire(
            state, now=state.last_received_at + TIMEOUT, timeout=TIMEOUT, region=REGION
        )
    assert state.finished
    return state


def decide(
    call: CallState,
    config: UsedeskSettings | None = None,
    *,
    new: bool = True,
    assignee: int | None = None,
    agents: dict[str, int] | None = None,
    on_duty: int | None = ON_DUTY,
    known: set[int] | None = None,
    answered_owner: str = "last",
) -> Assignment:
    return scenario.assignment(
        call,
        config or settings(),
        ticket_is_new=new,
        ticket_assignee=assignee,
        agents=AGENTS if agents is None else agents,
        on_duty=on_duty,
        known_agents=KNOWN if known is None else known,
        answered_owner=answered_owner,
    )


# --- the calls ---------------------------------------------------------------------------------

ANSWERED = ended(sc.inbound_answered(["101", "102"], "101"))
ANSWERED_BY_102 = ended(sc.inbound_answered(["101", "102"], "102", seq=2))
# 102 rang first, 101 twenty seconds later; Sipuni's final event names 101 in last_called.
MISSED = ended(sc.inbound_missed(["102", "101"], ring_gap=20))
MISSED_UNMAPPED_FIRST = ended(sc.inbound_missed(["105", "101"], ring_gap=20, seq=3))
MISSED_LOST_HANGUP = ended(
    sc.without_final_hangup(sc.inbound_missed(["102", "101"], ring_gap=20, seq=4))
)
OUTBOUND = ended(sc.outbound_answered("102"))
OUTBOUND_UNANSWERED = ended(sc.outbound_unanswered("102"))
TRANSFERRED = ended(sc.inbound_transferred("101", "102"))
INTERNAL = ended(sc.internal("101", "102"))


def test_the_calls_are_what_the_decisions_assume() -> None:
    """Guard: if the tracker read these calls differently, the tests below would mean little."""
    assert (ANSWERED.direction, ANSWERED.outcome, ANSWERED.answered_by) == (
        Direction.INBOUND,
        Outcome.ANSWERED,
        "101",
    )
    assert (MISSED.outcome, MISSED.first_extension, MISSED.last_called) == (
        Outcome.MISSED,
        "102",
        "101",
    )
    assert MISSED_LOST_HANGUP.outcome is Outcome.MISSED
    assert MISSED_LOST_HANGUP.finished_by == "timeout"
    assert (OUTBOUND.direction, OUTBOUND.employee) == (Direction.OUTBOUND, "102")
    assert OUTBOUND_UNANSWERED.outcome is Outcome.NOT_ANSWERED
    assert [a.extension for a in TRANSFERRED.answers] == ["101", "102"]
    assert INTERNAL.direction is Direction.INTERNAL


# --- lookup_plan -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [ANSWERED, MISSED, OUTBOUND, OUTBOUND_UNANSWERED, TRANSFERRED],
    ids=["answered", "missed", "outbound", "outbound-unanswered", "transferred"],
)
def test_every_external_call_is_looked_up_by_the_clients_e164_number(call: CallState) -> None:
    assert scenario.lookup_plan(call, settings()) == Lookup(
        phone="+79161234567", search_tickets=True, create_client=True, create_ticket=True
    )


@pytest.mark.parametrize("spelling", ["8", "7", "+7"])
def test_every_spelling_of_the_number_is_looked_up_the_same(spelling: str) -> None:
    s = sc.with_number_spelling(sc.inbound_answered(), spelling)  # type: ignore[arg-type]
    plan = scenario.lookup_plan(ended(s), settings())
    assert isinstance(plan, Lookup) and plan.phone == "+79161234567"


def test_the_lookup_can_start_on_the_first_ring() -> None:
    """The client and ticket are looked up as the phone rings, before anybody answers."""
    ringing = play(sc.inbound_answered().events[:1])
    assert ringing.outcome is Outcome.RINGING
    plan = scenario.lookup_plan(ringing, settings())
    assert isinstance(plan, Lookup) and plan.phone == "+79161234567"


def test_internal_calls_are_skipped() -> None:
    plan = scenario.lookup_plan(INTERNAL, settings())
    assert plan == Skip("internal call")


def test_a_call_of_unknown_direction_is_skipped() -> None:
    # A bare event 1 (SIP-originated calls repeat it with nothing in it) tells nothing more.
    bare = play([{"event": "1", "call_id": "1717171700.9", "timestamp": "1717171700"}])
    assert bare.direction is Direction.UNKNOWN
    plan = scenario.lookup_plan(bare, settings())
    assert isinstance(plan, Skip) and "direction is unknown" in plan.reason


@pytest.mark.parametrize("raw", ["12", "anonymous"])
def test_a_call_without_a_usable_number_is_skipped_and_says_what_came(raw: str) -> None:
    call = ended(sc.inbound_answered(client=raw))
    assert call.client_number is None
    plan = scenario.lookup_plan(call, settings())
    assert isinstance(plan, Skip)
    assert "no usable client number" in plan.reason and raw in plan.reason


@pytest.mark.parametrize("always_new", [False, True])
@pytest.mark.parametrize("statuses", [[8, 1, 5, 6], [5]])
def test_always_new_ticket_turns_the_ticket_search_off_whatever_the_statuses(
    always_new: bool, statuses: list[int]
) -> None:
    """«Создавать новый тикет…»: the status search is ignored, a ticket is made every call."""
    plan = scenario.lookup_plan(
        ANSWERED, settings(always_new_ticket=always_new, search_statuses=statuses)
    )
    assert isinstance(plan, Lookup)
    assert plan.search_tickets is (not always_new)


@pytest.mark.parametrize("create_client", [True, False])
@pytest.mark.parametrize("create_ticket", [True, False])
def test_create_client_and_create_ticket_are_carried_independently(
    create_client: bool, create_ticket: bool
) -> None:
    plan = scenario.lookup_plan(
        MISSED, settings(create_client=create_client, create_ticket=create_ticket)
    )
    assert plan == Lookup(
        phone="+79161234567",
        search_tickets=True,
        create_client=create_client,
        create_ticket=create_ticket,
    )


def test_a_foreign_number_is_looked_up_in_e164() -> None:
    call = ended(sc.inbound_answered(["205"], "205", client="+998901234567"))
    plan = scenario.lookup_plan(call, settings())
    assert isinstance(plan, Lookup) and plan.phone == "+998901234567"


# --- calls without a usable number ------------------------------------------------------------

HIDDEN = HiddenLookup(client_name="Скрытый номер", search_tickets=True, create_ticket=True)


@pytest.mark.parametrize("raw", ["", "anonymous", "unknown", "12"])
def test_a_missed_call_without_a_usable_number_goes_to_the_hidden_number_client(raw: str) -> None:
    call = ended(sc.inbound_missed(client=raw))
    assert (call.direction, call.outcome, call.client_number) == (
        Direction.INBOUND,
        Outcome.MISSED,
        None,
    )
    assert scenario.lookup_plan(call, settings()) == HIDDEN


def test_a_hidden_missed_call_whose_hang_up_was_lost_still_goes_to_the_hidden_client() -> None:
    call = ended(sc.without_final_hangup(sc.inbound_missed(client="anonymous")))
    assert call.finished_by == "timeout"
    assert scenario.lookup_plan(call, settings()) == HIDDEN


def test_the_hidden_number_client_and_the_ticket_settings_are_carried() -> None:
    plan = scenario.lookup_plan(
        ended(sc.inbound_missed(client="anonymous")),
        settings(hidden_number_client="Аноним", always_new_ticket=True, create_ticket=False),
    )
    assert plan == HiddenLookup(client_name="Аноним", search_tickets=False, create_ticket=False)


def test_hidden_number_skip_skips_a_missed_call_and_says_why() -> None:
    plan = scenario.lookup_plan(
        ended(sc.inbound_missed(client="anonymous")), settings(hidden_number="skip")
    )
    assert plan == Skip('no usable client number (anonymous); hidden_number = "skip"')


def test_a_ringing_call_without_a_number_waits_for_its_end_rather_than_being_skipped() -> None:
    """Skipping at the first ring would be recorded, and the missed call would get nothing."""
    ringing = play(sc.inbound_missed(client="anonymous").events[:1])
    assert ringing.outcome is Outcome.RINGING
    plan = scenario.lookup_plan(ringing, settings())
    assert isinstance(plan, Wait) and "anonymous" in plan.reason


def test_an_answered_call_without_a_number_is_skipped_the_agent_knows_of_it() -> None:
    plan = scenario.lookup_plan(ended(sc.inbound_answered(client="anonymous")), settings())
    assert isinstance(plan, Skip) and "answered" in plan.reason


def test_with_skip_even_a_ringing_call_without_a_number_is_skipped_at_once() -> None:
    ringing = play(sc.inbound_missed(client="anonymous").events[:1])
    assert isinstance(scenario.lookup_plan(ringing, settings(hidden_number="skip")), Skip)


# --- pick_ticket -------------------------------------------------------------------------------


def ticket(id: int, status: int | None, assignee: int | None = None) -> TicketSummary:
    return TicketSummary(id=id, subject=f"#{id}", status_id=status, assignee_id=assignee)


def test_pick_ticket_takes_the_first_in_list_order_not_the_highest_id() -> None:
    """Usedesk is asked for newest first; whatever order it answers in, the first one wins."""
    listed = [ticket(9, 1), ticket(12, 1), ticket(3, 1)]
    assert scenario.pick_ticket(listed, [1]) == listed[0]
    assert scenario.pick_ticket(list(reversed(listed)), [1]) == listed[2]


def test_pick_ticket_skips_tickets_in_statuses_not_searched() -> None:
    listed = [ticket(30, 3), ticket(20, 2), ticket(10, 5), ticket(5, 1)]  # Closed, Solved, …
    assert scenario.pick_ticket(listed, [8, 1, 5, 6]) == ticket(10, 5)
    assert scenario.pick_ticket(listed, [1]) == ticket(5, 1)
    assert scenario.pick_ticket(listed, [8]) is None


@pytest.mark.parametrize(("statuses", "picked"), [([8, 1, 5, 6], 40), ([5], 40), ([8, 1], 10)])
def test_pick_ticket_follows_search_statuses_from_the_settings(
    statuses: list[int], picked: int
) -> None:
    """An On hold (5) ticket counts when 5 is searched, and is passed over when it is not."""
    config = settings(search_statuses=statuses)
    listed = [ticket(40, 5), ticket(10, 1)]
    found = scenario.pick_ticket(listed, config.search_statuses)
    assert found is not None and found.id == picked


def test_pick_ticket_ignores_a_ticket_without_a_status_and_an_empty_list() -> None:
    assert scenario.pick_ticket([ticket(7, None)], [8, 1, 5, 6]) is None
    assert scenario.pick_ticket([], [8, 1, 5, 6]) is None


# --- assignment: inbound answered --------------------------------------------------------------


def test_answered_call_new_ticket_goes_to_who_answered() -> None:
    assert decide(ANSWERED) == Assignment(2, "answered (extension 101)")
    assert decide(ANSWERED_BY_102).agent == 3


def test_answered_call_on_an_existing_unassigned_ticket_gives_it_to_who_answered() -> None:
    """The seed is silent; an unowned ticket gets the agent who actually spoke to the client."""
    assert decide(ANSWERED, new=False, assignee=None) == Assignment(2, "answered (extension 101)")


def test_answered_call_on_an_existing_assigned_ticket_keeps_its_owner() -> None:
    decision = decide(ANSWERED, new=False, assignee=3)
    assert decision.agent is None
    assert "already has an owner (3)" in decision.reason


@pytest.mark.parametrize("first_on_line", [False, True])
def test_first_on_line_responsible_does_not_touch_answered_calls(first_on_line: bool) -> None:
    """The setting is about *missed* calls: an answered one still goes to who answered."""
    config = settings(first_on_line_responsible=first_on_line)
    assert decide(ANSWERED_BY_102, config).agent == 3


# --- assignment: missed ------------------------------------------------------------------------


def test_missed_new_ticket_goes_to_the_on_duty_agent() -> None:
    assert decide(MISSED) == Assignment(ON_DUTY, "on duty (missed call)")


def test_missed_new_ticket_without_an_on_duty_agent_stays_unassigned() -> None:
    decision = decide(MISSED, on_duty=None)
    assert decision.agent is None and "no on-duty agent" in decision.reason


def test_missed_with_first_on_line_goes_to_the_first_leg_not_last_called() -> None:
    config = settings(first_on_line_responsible=True)
    decision = decide(MISSED, config)
    assert decision == Assignment(3, "first on the line (102)")  # 102 rang first; 101 was last


def test_missed_with_first_on_line_when_the_hangup_was_lost() -> None:
    config = settings(first_on_line_responsible=True)
    assert decide(MISSED_LOST_HANGUP, config).agent == 3
    assert decide(MISSED_LOST_HANGUP).agent == ON_DUTY


def test_missed_with_first_on_line_unmapped_falls_back_to_on_duty() -> None:
    config = settings(first_on_line_responsible=True)
    decision = decide(MISSED_UNMAPPED_FIRST, config)
    assert decision.agent == ON_DUTY
    assert "extension 105 has no agent" in decision.reason


def test_missed_with_first_on_line_unmapped_and_no_on_duty_stays_unassigned() -> None:
    config = settings(first_on_line_responsible=True)
    decision = decide(MISSED_UNMAPPED_FIRST, config, on_duty=None)
    assert decision.agent is None
    assert "105 has no agent mapped and there is no on-duty agent" in decision.reason


@pytest.mark.parametrize("first_on_line", [False, True])
@pytest.mark.parametrize("assignee", [None, 2])
def test_missed_call_on_an_existing_ticket_leaves_its_owner(
    first_on_line: bool, assignee: int | None
) -> None:
    config = settings(first_on_line_responsible=first_on_line)
    decision = decide(MISSED, config, new=False, assignee=assignee)
    assert decision == Assignment(None, "missed call on an existing ticket: owner unchanged")


# --- assignment: outbound ----------------------------------------------------------------------


@pytest.mark.parametrize("call", [OUTBOUND, OUTBOUND_UNANSWERED], ids=["answered", "unanswered"])
def test_outbound_call_goes_to_the_employee_who_dialled(call: CallState) -> None:
    """An unanswered outbound call is not missed: it stays with the caller, not on duty."""
    assert decide(call) == Assignment(3, "called (extension 102)")


@pytest.mark.parametrize("first_on_line", [False, True])
def test_unanswered_outbound_ignores_the_missed_call_settings(first_on_line: bool) -> None:
    config = settings(first_on_line_responsible=first_on_line)
    assert decide(OUTBOUND_UNANSWERED, config, on_duty=ON_DUTY).agent == 3


def test_outbound_call_on_an_existing_assigned_ticket_keeps_its_owner() -> None:
    assert decide(OUTBOUND, new=False, assignee=2).agent is None
    assert decide(OUTBOUND, new=False, assignee=None).agent == 3


# --- assignment: transfers ---------------------------------------------------------------------


def test_transferred_call_goes_to_the_last_to_answer_by_default() -> None:
    assert decide(TRANSFERRED) == Assignment(3, "answered (extension 102)")


def test_transferred_call_with_answered_owner_first() -> None:
    assert decide(TRANSFERRED, answered_owner="first") == Assignment(2, "answered (extension 101)")


# --- assignment: agents that cannot be used ----------------------------------------------------


def test_extension_with_no_agent_mapped_leaves_the_ticket_unassigned() -> None:
    call = ended(sc.inbound_answered(["105"], "105", seq=7))
    decision = decide(call)
    assert decision == Assignment(None, "extension 105 has no agent mapped")


def test_outbound_from_an_unmapped_extension_is_not_given_to_on_duty() -> None:
    call = ended(sc.outbound_unanswered("105"))
    decision = decide(call, on_duty=ON_DUTY)
    assert decision.agent is None and "105 has no agent mapped" in decision.reason


@pytest.mark.parametrize(
    ("call", "config"),
    [
        (ANSWERED, settings()),
        (OUTBOUND, settings()),
        (MISSED, settings(first_on_line_responsible=True)),
    ],
    ids=["answered", "outbound", "missed-first-on-line"],
)
def test_an_agent_unknown_to_usedesk_is_not_assigned(
    call: CallState, config: UsedeskSettings
) -> None:
    """A mapping to a deleted agent is caught before Usedesk refuses the update."""
    agents = {"101": 99, "102": 99}
    decision = decide(call, config, agents=agents, known={1, 2, 3, 4})
    assert decision.agent is None
    assert "agent 99" in decision.reason and "does not exist in Usedesk" in decision.reason


def test_an_on_duty_agent_unknown_to_usedesk_is_not_assigned() -> None:
    decision = decide(MISSED, on_duty=77, known={1, 2, 3, 4})
    assert decision.agent is None and "agent 77" in decision.reason


def test_agents_are_not_checked_when_usedesks_list_is_unknown() -> None:
    decision = scenario.assignment(
        ANSWERED,
        settings(),
        ticket_is_new=True,
        ticket_assignee=None,
        agents={"101": 99},
        on_duty=None,
        known_agents=None,
    )
    assert decision.agent == 99


def test_a_call_nobody_on_our_side_took_part_in_is_left_alone() -> None:
    ringing = play(sc.inbound_answered().events[:2])  # still ringing: no answer, not missed
    assert ringing.outcome is Outcome.RINGING
    decision = decide(ringing)
    assert decision.agent is None and "nobody on our side" in decision.reason


def test_a_call_of_unknown_direction_gets_no_owner() -> None:
    bare = play([{"event": "1", "call_id": "1717171700.9", "timestamp": "1717171700"}])
    assert decide(bare).agent is None


# --- settings that pick templates --------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "subject"),
    [("ru", "{direction} звонок {phone}"), ("en", "{direction} call {phone}")],
)
def test_language_chooses_the_default_templates(language: str, subject: str) -> None:
    config = settings(language=language)
    assert config.template("ticket_subject") == subject


def test_an_overridden_template_wins_over_the_language_default() -> None:
    config = settings(language="en", templates={"client_name": "Абонент {phone}"})
    assert config.template("client_name") == "Абонент {phone}"
    assert config.template("ticket_subject") == "{direction} call {phone}"


NAMES = {"101": "Борис Операторов", "102": "Вера Продажина", "103": "Анна Админова"}


def default_comment(call: CallState, language: str = "ru") -> str:
    """The call's comment as the default template writes it, with the agents' Usedesk names."""
    config = settings(language=language)
    values = templates.variables(call, language=language, agent_names=NAMES)
    return templates.render(config.template("comment"), values, escape_html=True)


def test_the_default_comment_of_an_unanswered_outbound_call_names_who_dialled() -> None:
    comment = default_comment(ended(sc.outbound_unanswered(employee="103")))
    assert "Исходящий звонок</b>: Не отвечен" in comment
    assert "Сотрудник: Анна Админова<br>" in comment


def test_the_default_comment_of_an_answered_call_names_the_agent_and_the_scheme() -> None:
    comment = default_comment(ended(sc.inbound_transferred(first="101", to="102")))
    assert "Сотрудник: Вера Продажина<br>" in comment  # the last to answer
    assert "Схема: Входящая<br>" in comment
    assert "Конец звонка: Сообщён</p>" in comment


def test_the_default_comment_of_a_call_moved_to_another_scheme_names_where_it_ended() -> None:
    comment = default_comment(ended(sc.scheme_transfer(target=("000-300", "Поддержка"))))
    assert "Схема: Поддержка<br>" in comment


def test_the_default_comment_of_a_timed_out_call_says_its_end_was_not_reported() -> None:
    lost = ended(sc.without_final_hangup(sc.inbound_answered(["101"], "101")))
    assert lost.finished_by == "timeout"
    comment = default_comment(lost)
    assert "Конец звонка: Не сообщён: звонок закрыт по тайм-ауту</p>" in comment
    english = default_comment(lost, "en")
    assert "Call end: Not reported: the call was closed by the time-out</p>" in english
    assert "Employee: Борис Операторов<br>" in english


# --- pick_client -------------------------------------------------------------------------------


def card(id: int, name: str = "") -> ClientSummary:
    return ClientSummary(id=id, name=name or f"client {id}")


def test_pick_client_prefers_the_client_with_an_open_ticket() -> None:
    clients = [card(3), card(7), card(9)]
    choice = scenario.pick_client(clients, {3: None, 7: ticket(50, 1), 9: None})
    assert choice.client.id == 7
    assert choice.reason == "it has the newest open ticket, 50"


def test_pick_client_of_several_with_open_tickets_takes_the_newest_ticket() -> None:
    clients = [card(3), card(7), card(9)]
    choice = scenario.pick_client(clients, {3: ticket(80, 8), 7: ticket(50, 1)})
    assert choice.client.id == 3


@pytest.mark.parametrize("order", [[3, 7, 9], [9, 3, 7], [7, 9, 3]])
def test_pick_client_without_open_tickets_takes_the_lowest_id_in_any_order(
    order: list[int],
) -> None:
    choice = scenario.pick_client([card(i) for i in order], {7: None})
    assert choice.client.id == 3
    assert choice.reason == "none has an open ticket: the lowest id"


def test_pick_client_needs_a_candidate() -> None:
    with pytest.raises(ValueError, match="at least one candidate"):
        scenario.pick_client([], {})
