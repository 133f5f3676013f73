"""``connector init`` for Usedesk: the API key, checked at once, and who works at which extension.

The key is tried right away with the three ``/users`` requests that list Usedesk's agents: a
refused key is said so and asked again; an address that does not answer is asked again with
the key kept. Then the agents are listed, the operator types each one's Sipuni extensions and
chooses the on-duty agent, and the settings name agents by id, which ``connector check``
confirms later.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from connector_core.plugin import AuthError, CrmError, Questions, SecretAnswer

from .client import Agent, UsedeskClient
from .settings import UsedeskSettings

DEFAULT_BASE_URL: str = UsedeskSettings.model_fields["base_url"].default
DEFAULT_WEB_URL: str = UsedeskSettings.model_fields["web_url"].default
CHECK_TIMEOUT_SECONDS = 10.0
_EXTENSION = re.compile(r"\d{1,8}")
KEY_HINT = (
    "The API key is the «API-ключ» of an API channel in Usedesk: «Каналы» → add an «API» "
    "channel, turn on «JSON запрос», save; the key appears (docs/usedesk.md). Type "
    "${NAME} instead to keep it in the environment variable NAME."
)


async def ask(questions: Questions) -> dict[str, Any]:
    """The Usedesk table of ``connector.toml``: key (checked), address, users, on-duty agent."""
    questions.tell(KEY_HINT)
    base_url = questions.ask("Usedesk API address", parse_base_url, default=DEFAULT_BASE_URL)
    key: SecretAnswer | None = None
    while True:
        if key is None:
            key = questions.secret("Usedesk API key («API-ключ»)")
        try:
            agents = await read_agents(base_url, key.value)
        except AuthError as exc:
            questions.tell(f"  This key does not work: {exc.message}.")
            questions.tell("  Copy the «API-ключ» of the Usedesk API channel and paste it again.")
            key = None
            continue
        except CrmError as exc:
            questions.tell(f"  {exc.message}.")
            questions.tell("  Check the address; Enter tries the same one again.")
            base_url = questions.ask("Usedesk API address", parse_base_url, default=base_url)
            continue
        break
    questions.tell(f"  The key works: Usedesk at {base_url} has {len(agents)} agent(s).")
    table: dict[str, Any] = {"api_token": key.written}
    if base_url != DEFAULT_BASE_URL:
        # A boxed Usedesk has its own web interface too: the cards' links go there.
        table["base_url"] = base_url
        web_url = questions.ask(
            "Usedesk web interface address (for the links in agent cards)",
            parse_base_url,
            default=guess_web_url(base_url),
        )
        if web_url != DEFAULT_WEB_URL:
            table["web_url"] = web_url
    users = ask_extensions(questions, agents)
    if users:
        table["users"] = users
    on_duty = ask_on_duty(questions, agents) if agents else None
    if on_duty is not None:
        table["on_duty_user"] = on_duty
    return table


async def read_agents(base_url: str, api_token: str) -> list[Agent]:
    """Every Usedesk agent; raises ``AuthError`` for a refused key, ``CrmError`` otherwise."""
    async with UsedeskClient(
        api_token=api_token, base_url=base_url, timeout=CHECK_TIMEOUT_SECONDS
    ) as client:
        return await client.users_all()


def parse_base_url(answer: str) -> str:
    """``parse`` for the API address, by the settings' own rule."""
    try:
        UsedeskSettings.model_validate({"api_token": "-", "base_url": answer})
    except ValidationError:
        raise ValueError(
            f"expected an address starting with https:// (or http://), e.g. {DEFAULT_BASE_URL}"
        ) from None
    return answer.rstrip("/")


def guess_web_url(base_url: str) -> str:
    """Usedesk's own pair is api.usedesk.ru and secure.usedesk.ru: ``https://api.X`` gives
    ``https://secure.X``; any other API address, its scheme and host."""
    scheme, _, rest = base_url.partition("://")
    host = rest.split("/", 1)[0]
    if host.startswith("api."):
        host = "secure." + host.removeprefix("api.")
    return f"{scheme}://{host}"


def describe(agent: Agent) -> str:
    """``Анна Админова (id 1, anna@example.com, admin)``."""
    details = [f"id {agent.id}", *(x for x in (agent.email, agent.role) if x)]
    return f"{agent.name} ({', '.join(details)})"


def ask_extensions(questions: Questions, agents: list[Agent]) -> list[dict[str, Any]]:
    """``users``: for each agent, the extensions typed for them (an extension has one agent)."""
    if not agents:
        questions.tell(
            "  Usedesk has no agents yet, so tickets will have no owner. Add agents in Usedesk, "
            "then map extensions to them in `users` (connector check lists them)."
        )
        return []
    questions.tell(
        "Which Sipuni extensions (short numbers) does each agent answer? Separate several with "
        "commas; Enter for none."
    )
    taken: dict[str, Agent] = {}
    users: list[dict[str, Any]] = []
    for agent in agents:
        extensions = questions.ask(f"  {describe(agent)}", extensions_parser(taken), default="")
        for extension in extensions:
            taken[extension] = agent
            users.append({"extension": extension, "agent": agent.id})
    return users


def extensions_parser(taken: dict[str, Agent]) -> Callable[[str], list[str]]:
    """``parse`` for one agent's extensions; ``taken`` holds those given to earlier agents."""

    def parse(answer: str) -> list[str]:
        extensions = list(dict.fromkeys(e for e in re.split(r"[\s,;]+", answer) if e))
        for extension in extensions:
            if not _EXTENSION.fullmatch(extension):
                raise ValueError(
                    f"{extension!r} is no extension: an extension is 1 to 8 digits, e.g. 101"
                )
            if extension in taken:
                raise ValueError(
                    f"extension {extension} is already {taken[extension].name}'s; "
                    "an extension belongs to one agent"
                )
        return extensions

    return parse


def ask_on_duty(questions: Questions, agents: list[Agent]) -> int | None:
    """``on_duty_user`` («Дежурный»): the agent who owns tickets of missed calls, or none."""
    questions.tell("The on-duty agent («Дежурный») owns the new tickets of missed calls.")
    return questions.ask(
        "On-duty agent: an id or e-mail from the list above, Enter for none",
        agent_parser(agents),
        default="",
    )


def agent_parser(agents: list[Agent]) -> Callable[[str], int | None]:
    """``parse`` for an agent named by id or e-mail (any case); ``None`` for no answer."""
    by_id = {str(a.id): a.id for a in agents}
    by_email = {a.email.lower(): a.id for a in agents if a.email}

    def parse(answer: str) -> int | None:
        if not answer:
            return None
        found = by_id.get(answer, by_email.get(answer.lower()))
        if found is None:
            raise ValueError(f"no agent in the list has the id or e-mail {answer!r}")
        return found

    return parse
