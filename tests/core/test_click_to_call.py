"""Click-to-call's rules: whose token starts a call for which extension, and how often."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from connector_core.callstate import CallState, Direction, Leg
from connector_core.click_to_call import (
    RateLimit,
    Refused,
    authorise,
    choices,
    token_owner,
)

AGENTS = {"101": SecretStr("agent-101-token-000"), "102": SecretStr("agent-102-token-000")}


def test_an_agents_own_token_starts_calls_for_their_extension() -> None:
    authorise("012345", AGENTS, "101", "agent-101-token-000")  # no refusal
    assert token_owner(AGENTS, "agent-102-token-000") == "102"


def test_another_agents_token_cannot_start_a_call_for_101() -> None:
    with pytest.raises(Refused) as refused:
        authorise("012345", AGENTS, "101", "agent-102-token-000")
    assert refused.value.status == 403 and refused.value.code == "not_your_extension"
    assert refused.value.message == (
        "this is the page token of extension 102: it starts calls for extension 102 only, not 101"
    )


@pytest.mark.parametrize(
    "token", ["", "agent-101-token-00", "agent-101-token-0000", "AGENT-101-TOKEN-000"]
)
def test_a_token_that_is_no_agents_is_refused(token: str) -> None:
    with pytest.raises(Refused) as refused:
        authorise("012345", AGENTS, "101", token)
    assert refused.value.status == 403 and refused.value.code == "not_authorised"
    assert "not an agent page token of account 012345 (accounts.012345.agents)" in str(
        refused.value
    )


def test_an_extension_without_an_agent_cannot_be_rung_with_any_token() -> None:
    with pytest.raises(Refused) as refused:
        authorise("012345", AGENTS, "103", "agent-101-token-000")
    assert refused.value.code == "not_your_extension"


def test_one_call_every_spacing_seconds_per_extension() -> None:
    limit = RateLimit(spacing=10.0, per_minute=3)
    assert limit.acquire(("012345", "101"), 1000.0) == 0.0
    assert limit.acquire(("012345", "101"), 1004.0) == pytest.approx(6.0)
    # Another extension, or the same one of another account, has its own allowance.
    assert limit.acquire(("012345", "102"), 1004.0) == 0.0
    assert limit.acquire(("999999", "101"), 1004.0) == 0.0
    assert limit.acquire(("012345", "101"), 1010.0) == 0.0


def test_at_most_per_minute_calls_in_any_minute() -> None:
    limit = RateLimit(spacing=10.0, per_minute=3)
    key = ("012345", "101")
    for at in (0.0, 10.0, 20.0):
        assert limit.acquire(key, at) == 0.0
    # Spaced enough, but the minute's three are used: the first leaves the window at 60 s.
    assert limit.acquire(key, 30.0) == pytest.approx(30.0)
    assert limit.acquire(key, 59.0) == pytest.approx(1.0)
    assert limit.acquire(key, 60.0) == 0.0
    assert limit.acquire(key, 65.0) == pytest.approx(5.0)


def test_a_refused_attempt_does_not_use_up_the_allowance() -> None:
    limit = RateLimit(spacing=10.0, per_minute=3)
    key = ("012345", "101")
    assert limit.acquire(key, 0.0) == 0.0
    for at in (1.0, 2.0, 3.0, 9.0):
        assert limit.acquire(key, at) > 0
    assert limit.acquire(key, 10.0) == 0.0


def test_the_console_offers_the_owner_first_then_who_rang_then_the_agents() -> None:
    missed = CallState(
        account="012345",
        call_id="1.1",
        direction=Direction.INBOUND,
        client_number="+79030000001",
        legs=[Leg(extension="102", rang_at=1), Leg(extension="101", rang_at=1)],
    )
    assert choices(missed, ["101", "103"]) == ["102", "101", "103"]
    outbound = CallState(
        account="012345",
        call_id="1.2",
        direction=Direction.OUTBOUND,
        client_number="+79030000001",
        employee="103",
    )
    assert choices(outbound, ["101"]) == ["103", "101"]
