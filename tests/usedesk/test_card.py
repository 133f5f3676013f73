"""The Usedesk part of the agent card: the caller's name, the ticket one click away, and the
ticket's owner by name, read from Usedesk's agents once and cached.

Against the sandbox on loopback: client 1001 (Иван Петров, +7 916 123-45-67) has open
ticket 5001, owned by agent 2 (Борис Операторов).
"""

from __future__ import annotations

from plugins.usedesk import card
from plugins.usedesk.card import AgentNames
from plugins.usedesk.flow import AGENTS_TTL
from plugins.usedesk.sandbox import UsedeskSandbox
from tests.usedesk.test_flow_lookup import CALL, usedesk

KNOWN = CALL.model_copy(
    update={"client_number": "+79161234567", "client_number_raw": "79161234567"}
)
# /users is read once per user type (employees, admins, support).
READ = 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_known_callers_part_names_the_caller_and_the_tickets_owner() -> None:
    sandbox = UsedeskSandbox()
    async with sandbox.serve() as base_url:
        integration = usedesk(base_url, sandbox.token)
        try:
            part = await card.card(integration, KNOWN)
            again = await card.card(integration, KNOWN)
        finally:
            await integration.runtime.aclose()
    assert part is not None and part == again
    assert part.caller_name == "Иван Петров"
    assert part.lines == [
        "Иван Петров (известный клиент)",
        "Тикет #5001: Не работает доставка · Открыт · агент Борис Операторов",
    ]
    assert part.main_link == ("Открыть тикет #5001", "https://secure.usedesk.ru/tickets/5001")
    # The second card asked for nobody's name again.
    assert len(sandbox.requests("/users")) == READ


async def test_a_new_callers_part_has_no_name_to_show() -> None:
    sandbox = UsedeskSandbox()
    async with sandbox.serve() as base_url:
        integration = usedesk(base_url, sandbox.token)
        try:
            part = await card.card(
                integration, KNOWN.model_copy(update={"client_number": "+79990001122"})
            )
        finally:
            await integration.runtime.aclose()
    assert part is not None and part.caller_name == "" and part.main_link is None


async def test_names_are_read_again_after_the_ttl_and_a_failed_read_leaves_ids_for_a_while() -> (
    None
):
    sandbox = UsedeskSandbox()
    clock = FakeClock()
    async with sandbox.serve() as base_url:
        integration = usedesk(base_url, sandbox.token)
        try:
            names = AgentNames(integration.runtime.client, clock)
            assert await names.name(2) == "Борис Операторов"
            assert await names.name(3) == "Вера Продажина"
            assert await names.name(99) is None  # not a Usedesk agent
            assert len(sandbox.requests("/users")) == READ

            clock.now += AGENTS_TTL
            sandbox.set_faults(mode="error", message="Сервис недоступен", paths=["/users"])
            # The old names are kept while Usedesk cannot say.
            assert await names.name(2) == "Борис Операторов"
            failed = len(sandbox.requests("/users"))
            assert failed > READ
            clock.now += card.NAMES_RETRY_SECONDS - 1
            assert await names.name(2) == "Борис Операторов"
            assert len(sandbox.requests("/users")) == failed  # not asked again yet

            sandbox.clear_faults()
            clock.now += 1
            assert await names.name(4) == "Глеб Саппортов"
            assert len(sandbox.requests("/users")) == failed + READ
        finally:
            await integration.runtime.aclose()


async def test_the_owner_is_shown_by_id_when_usedesk_cannot_name_agents() -> None:
    sandbox = UsedeskSandbox()
    async with sandbox.serve() as base_url:
        integration = usedesk(base_url, sandbox.token)
        sandbox.set_faults(mode="error", message="Сервис недоступен", paths=["/users"])
        try:
            part = await card.card(integration, KNOWN)
        finally:
            await integration.runtime.aclose()
    assert part is not None
    assert part.lines[1] == "Тикет #5001: Не работает доставка · Открыт · агент 2"
