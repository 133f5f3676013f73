"""The amoCRM stub passes the contract kit (it journals in the store, the kit's default
observe), and shows what plugin authors copy: the operator's ``answered_owner``, a runtime
closed at shutdown, and the core's error classes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp import web

from connector_core.appkeys import INTEGRATIONS, STORE
from connector_core.plugin import TransientError
from connector_core.simulator import scenarios
from connector_core.testing import PluginContract
from plugins.amocrm_stub import AmoCrmStubClient
from tests.harness import TOKEN, app_for, make_config, settle

# Every test here runs on SQLite and on PostgreSQL (tests/backends.py).
pytestmark = pytest.mark.usefixtures("on_store_backend")


class TestAmoCrmStubContract(PluginContract):
    plugin = "amocrm_stub"
    valid_settings = (
        {},
        {"subdomain": "acme", "pipeline_id": 7, "users": {"101": 11, "102": 12}},
        {"subdomain": "acme-2", "default_responsible": 11},
    )
    invalid_settings = (
        ({"subdomain": "Not A Subdomain"}, "subdomain"),
        ({"pipeline_id": "funnel"}, "pipeline_id"),
        ({"users": {"101": "anna"}}, "users.101"),
        ({"users": ["101"]}, "users"),
    )
    secret_settings: ClassVar[dict[str, object]] = {
        "subdomain": "acme",
        "access_token": "amo-secret-token-123456",
    }
    secrets = ("amo-secret-token-123456",)

    def setup_answers(self, settings: Mapping[str, Any]) -> list[str]:
        return ["https://acme.amocrm.ru/"]  # the subdomain, as a person may paste it


# --- what the stub shows plugin authors, beyond the contract ---------------------------------

STUB = """
[accounts.012345.integrations.amo]
plugin = "amocrm_stub"
subdomain = "acme"
users = { "101" = 501, "102" = 502 }
"""


async def journal(app: web.Application) -> dict[str, dict[str, Any]]:
    rows = await app[STORE].effects("012345/amo").items("journal:")
    return {key.removeprefix("journal:"): value for key, value in rows}


@pytest.mark.parametrize(("answered_owner", "user_id"), [("last", 502), ("first", 501)])
async def test_the_stub_gives_the_call_to_the_owner_the_operator_chose(
    tmp_path: Path, aiohttp_client: Any, answered_owner: str, user_id: int
) -> None:
    config, host = make_config(tmp_path, STUB, extra=f'answered_owner = "{answered_owner}"')
    app = app_for(config, host)
    client = await aiohttp_client(app)
    call = scenarios.inbound_transferred(first="101", to="102")
    for params in call.events:
        assert (await client.get(f"/sipuni/{TOKEN}", params=params)).status == 200
    await settle(app)
    assert (await journal(app))[f"responsible:{call.call_id}"]["user_id"] == user_id


async def test_a_placeholder_subdomain_with_a_token_is_dead_lettered_with_the_reason(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    table = '[accounts.012345.integrations.amo]\nplugin = "amocrm_stub"\naccess_token = "amo-t"\n'
    config, host = make_config(tmp_path, table)
    app = app_for(config, host)
    client = await aiohttp_client(app)
    call = scenarios.inbound_answered()
    for params in call.events:
        await client.get(f"/sipuni/{TOKEN}", params=params)
    await settle(app)
    rows = await app[STORE].dispatches_for("012345", call.call_id)
    # InvalidRequestError: no retry can help, so the row is dead at its first attempt.
    started = next(r for r in rows if r.key == "started")
    assert (started.status, started.attempts) == ("dead", 1)
    assert started.last_error == (
        "InvalidRequestError: subdomain is still the placeholder 'example': set it to the "
        "account's <subdomain>.amocrm.ru"
    )
    assert await journal(app) == {}


async def test_the_runtime_is_made_per_instance_and_closed_at_shutdown(tmp_path: Path) -> None:
    config, host = make_config(tmp_path, STUB)
    app = app_for(config, host)
    runner = web.AppRunner(app)
    await runner.setup()
    runtime = app[INTEGRATIONS]["012345/amo"].runtime
    assert isinstance(runtime, AmoCrmStubClient) and not runtime.closed
    await runner.cleanup()
    assert runtime.closed
    # A hook still running after the close: TransientError, so the work is retried later.
    with pytest.raises(TransientError, match="the service is stopping"):
        await runtime.request("late", "call_note")
