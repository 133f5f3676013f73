"""``connector check`` for Usedesk: every agent the settings name exists, and who there is.

An agent id or e-mail that Usedesk does not know passes the config's validation but leaves
calls without an owner later; here it is an error naming the setting. Usedesk's agents are
listed after the findings, each with the extension it is mapped to, so the operator can fill
in ``users``. The ticket statuses need no request: Usedesk's status ids are a fixed list,
already checked when the config is read.
"""

from __future__ import annotations

from connector_core.plugin import CheckFinding, CheckLevel, CrmError

from .client import Agent, UsedeskClient
from .settings import UsedeskSettings


async def check(settings: UsedeskSettings, client: UsedeskClient) -> list[CheckFinding]:
    """Read Usedesk's agents (three ``/users`` requests) and compare the settings with them."""
    try:
        agents = await client.users_all()
    except CrmError as exc:
        return [CheckFinding(CheckLevel.ERROR, f"cannot read Usedesk's agents: {exc.message}")]
    return findings(settings, agents)


def findings(settings: UsedeskSettings, agents: list[Agent]) -> list[CheckFinding]:
    """Errors for agents the settings name that Usedesk lacks, then the list of agents."""
    by_id = {a.id: a for a in agents}
    by_email = {a.email.lower(): a for a in agents if a.email}
    named: list[tuple[str, int | str, str]] = [
        (f"users[{i}].agent", user.agent, f"extension {user.extension}")
        for i, user in enumerate(settings.users)
    ]
    if settings.on_duty_user is not None:
        named.append(("on_duty_user", settings.on_duty_user, "the on-duty agent"))
    result = []
    for setting, agent, role in named:
        if isinstance(agent, int):
            missing = agent not in by_id
            what = f"id {agent}"
        else:
            missing = agent.lower() not in by_email
            what = f"the e-mail {agent}"
        if missing:
            result.append(
                CheckFinding(
                    CheckLevel.ERROR,
                    f"no Usedesk agent has {what}, so {role} would own no ticket"
                    " (Usedesk's agents are listed below)",
                    setting,
                )
            )
    return result + _agent_list(settings, agents)


def _agent_list(settings: UsedeskSettings, agents: list[Agent]) -> list[CheckFinding]:
    def mapped_to(agent: Agent) -> str:
        ways = {agent.id, (agent.email or "").lower()}
        duties = [
            f"extension {u.extension}"
            for u in settings.users
            if (u.agent.lower() if isinstance(u.agent, str) else u.agent) in ways
        ]
        on_duty = settings.on_duty_user
        if (
            on_duty is not None
            and (on_duty.lower() if isinstance(on_duty, str) else on_duty) in ways
        ):
            duties.append("on duty")
        return ", ".join(duties) or "not mapped"

    if not agents:
        return [CheckFinding(CheckLevel.WARNING, "Usedesk has no agents: tickets get no owner")]
    lines = [
        CheckFinding(
            CheckLevel.INFO,
            f"Usedesk agents ({len(agents)}; map extensions to their id or e-mail in `users`):",
        )
    ]
    for agent in agents:
        email = f" <{agent.email}>" if agent.email else ""
        role = f", {agent.role}" if agent.role else ""
        lines.append(
            CheckFinding(
                CheckLevel.INFO, f"  {agent.id:>6}  {agent.name}{email}{role}: {mapped_to(agent)}"
            )
        )
    return lines
