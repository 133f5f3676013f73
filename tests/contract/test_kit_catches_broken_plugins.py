"""The contract kit's own tests: each behaviour removed from a plugin fails a kit test.

A tiny but complete CRM plugin (a secret token, an HTTP session for its authorisation
check against a fake CRM, a journal in ``integration.effects``, every lifecycle hook and an
agent card) is written out once per variant, each variant breaking one rule of the contract
and exposed under its own entry-point name through a ``*.dist-info`` folder, as an installed
package would be. pytester then runs the kit against every variant in a fresh pytest process
(pytest-asyncio in strict mode, as a plugin author's suite may be) and the verdicts are read
from its JUnit report: the unbroken plugin passes everything, and every broken one fails at
least the kit test written to catch it.
"""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

TINY = '''
"""A tiny CRM plugin for the kit's own tests. BROKEN names the behaviour taken out of it."""
import asyncio
import logging

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connector_core import hookimpl
from connector_core.integrations import AuthResult, AuthStatus, CardPart, IntegrationType

NAME = "{name}"
BROKEN = "{broken}"
log = logging.getLogger(NAME)


class Settings(BaseModel):
    model_config = ConfigDict(extra="allow" if BROKEN == "extra_allowed" else "forbid")

    api_token: str if BROKEN == "secret_in_repr" else SecretStr
    base_url: str = Field("http://127.0.0.1:9", pattern=r"^https?://")
    timeout_seconds: float = Field(2.0, gt=0, le=3 if BROKEN == "too_strict" else 30)
    users: dict[str, int] = {{}}


class Runtime:
    def __init__(self, integration):
        settings = integration.settings
        token = settings.api_token
        self.token = token if isinstance(token, str) else token.get_secret_value()
        self.base_url = settings.base_url.rstrip("/")
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.timeout_seconds)
        )
        self.tasks = []
        if BROKEN in ("task_leak", "acts_unprompted"):
            self.tasks.append(asyncio.get_running_loop().create_task(self._sync(integration)))

    async def _sync(self, integration):
        n = 0
        while True:
            await asyncio.sleep(0.02)
            if BROKEN == "acts_unprompted":  # "syncs" with the CRM though nobody asked
                n += 1
                await integration.effects.put(f"journal:sync:{{n}}", {{"action": "sync"}})

    async def aclose(self):
        if BROKEN != "session_leak":
            await self.session.close()
        if BROKEN != "task_leak":
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)


@hookimpl
def connector_register_integration_types(register):
    type_name = NAME + "_crm" if BROKEN == "misnamed" else NAME
    register(IntegrationType(type_name, Settings, factory=Runtime))


AUTH_PROBES = []


@hookimpl
async def connector_check_authorization(integration):
    rt = integration.runtime
    if BROKEN == "auth_writes":  # "checks" the token by creating a test lead
        AUTH_PROBES.append(1)
        await integration.effects.put(f"journal:probe:{{len(AUTH_PROBES)}}", {{"action": "lead"}})
    try:
        headers = {{"Authorization": "Bearer " + rt.token}}
        async with rt.session.get(rt.base_url + "/me", headers=headers) as response:
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        if BROKEN == "auth_raises":
            raise
        reason = f"cannot reach {{rt.base_url}}: {{type(exc).__name__}}"
        return AuthResult(AuthStatus.CANNOT_CONNECT, reason)
    if status in (401, 403):
        return AuthResult(AuthStatus.AUTH_FAILED, f"the CRM refused the token (HTTP {{status}})")
    if status != 200:
        return AuthResult(AuthStatus.CANNOT_CONNECT, f"HTTP {{status}} from {{rt.base_url}}")
    return AuthResult(AuthStatus.OK, "token accepted")


@hookimpl
async def connector_setup_integration(questions):
    base_url = questions.ask("CRM address", lambda answer: answer, default="http://127.0.0.1:9")
    while True:
        token = questions.secret("API token")
        async with aiohttp.ClientSession() as session:
            headers = {{"Authorization": "Bearer " + token.value}}
            async with session.get(base_url + "/me", headers=headers) as response:
                if response.status == 200:
                    break
        questions.tell(f"the CRM refused the token (HTTP {{response.status}}); paste it again")
    if BROKEN == "setup_prints":  # talks to the terminal past the questions
        print(f"token for {{base_url}} checked")
    key = "api_key" if BROKEN == "setup_misspelt" else "api_token"  # not a settings key
    return {{key: token.written, "base_url": base_url}}


@hookimpl
async def connector_check_settings(integration):
    from connector_core.integrations import CheckFinding, CheckLevel
    if BROKEN == "settings_check_raises":  # a user id the CRM does not know
        raise KeyError(integration.settings.users.get("101", 0))
    if BROKEN == "settings_check_writes":  # "checks" a user by assigning a test lead
        await integration.effects.put("journal:probe:settings", {{"action": "lead"}})
    return [CheckFinding(CheckLevel.INFO, f"{{len(integration.settings.users)}} user(s) mapped")]


async def _record(integration, key, action, **fields):
    if BROKEN == "not_idempotent":  # a new journal row on every delivery
        n = 0
        while not await integration.effects.put(f"journal:{{key}}:{{n}}", {{"action": action}}):
            n += 1
        return
    await integration.effects.put(f"journal:{{key}}", {{"action": action, **fields}})


@hookimpl
async def connector_call_started(integration, call):
    if BROKEN == "secret_logged":
        log.debug("looking up %s with token %s", call.client_number, integration.runtime.token)
    await _record(integration, f"lead:{{call.call_id}}", "lead", phone=call.client_number)


@hookimpl
async def connector_call_reached_transfer_scheme(integration, call, scheme):
    await _record(integration, f"lead:{{call.call_id}}", "lead", phone=call.client_number)


@hookimpl
async def connector_call_answered(integration, call):
    if BROKEN == "hook_raises" and call.direction.value == "outbound":
        raise RuntimeError("cannot handle an answered outbound call")
    await _record(integration, f"answered:{{call.call_id}}", "answered", by=call.first_answered_by)


@hookimpl
async def connector_call_transferred(integration, call, transfer):
    await _record(integration, f"transfer:{{call.call_id}}:{{transfer.to_extension}}", "transfer")


@hookimpl
async def connector_call_entered_scheme(integration, call, scheme):
    await _record(integration, f"scheme:{{call.call_id}}:{{scheme.key}}", "scheme")


if BROKEN == "misspelt_hook":
    @hookimpl
    async def connector_call_finshed(integration, call):
        await _record(integration, f"note:{{call.call_id}}", "note", outcome=call.outcome.value)
else:
    @hookimpl
    async def connector_call_finished(integration, call):
        await _record(integration, f"note:{{call.call_id}}", "note", outcome=call.outcome.value)


@hookimpl
async def connector_call_missed_again(integration, call, earlier):
    await _record(integration, f"repeat:{{call.call_id}}", "repeat", first=earlier[0].call_id)


@hookimpl
async def connector_call_called_back(integration, call, callback):
    if BROKEN == "callback_misread":  # takes the payload for the missed call itself
        first = callback.call_id
    else:
        first = callback.missed[0].call_id
    await _record(integration, f"callback:{{first}}", "callback", by=callback.by_extension)


@hookimpl
async def connector_call_missed_overdue(integration, call, overdue):
    waited = overdue.waited_seconds
    await _record(integration, f"overdue:{{call.call_id}}", "overdue", waited=waited)


@hookimpl
def connector_agent_card(integration, call, extension):
    if BROKEN == "card_raises" and call.client_number is None:
        raise KeyError("client_number")
    return CardPart(title="Tiny CRM", lines=[f"client {{call.client_number}}"])
'''

FAKE_CRM = '''
"""The tiny plugin's CRM: GET /me answers 200 for the right bearer token, 401 otherwise."""
import socket
from contextlib import asynccontextmanager

from aiohttp import web

from connector_core.testing import PluginContract

TOKEN = "kit-crm-token-5550123"


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def serve():
    async def me(request):
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "invalid token"}, status=401)
        return web.json_response({"id": 1})

    app = web.Application()
    app.router.add_get("/me", me)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


class TinyContract(PluginContract):
    valid_settings = [
        {"api_token": "kit-token-1234"},
        {"api_token": "kit-token-1234", "base_url": "https://crm.example", "timeout_seconds": 5,
         "users": {"101": 7}},
    ]
    invalid_settings = [
        ({}, "api_token"),
        ({"api_token": "kit-token-1234", "timeout_seconds": 0}, "timeout_seconds"),
        ({"api_token": "kit-token-1234", "base_url": "crm.example"}, "base_url"),
        ({"api_token": "kit-token-1234", "users": {"101": "anna"}}, "users.101"),
    ]
    secret_settings = {"api_token": "kit-very-secret-9911"}
    secrets = ["kit-very-secret-9911"]

    @asynccontextmanager
    async def environment(self, tmp_path):
        async with serve() as url:
            yield {"api_token": TOKEN, "base_url": url, "timeout_seconds": 2}

    def setup_answers(self, settings):
        return [settings["base_url"], "kit-wrong-token-000", settings["api_token"]]

    async def auth_cases(self, settings):
        return {
            "ok": settings,
            "auth_failed": {**settings, "api_token": "kit-wrong-token-000"},
            "cannot_connect": {**settings, "base_url": f"http://127.0.0.1:{closed_port()}"},
        }
'''

# entry-point name: (what is broken, the kit tests written to catch it)
VARIANTS: dict[str, tuple[str, set[str]]] = {
    "kit_good": ("nothing", set()),
    "kit_callback_misread": (
        "reads connector_call_called_back's payload wrongly (callback.call_id: no such field)",
        {"test_missed_call_hooks_accepted_and_idempotent"},
    ),
    "kit_misnamed": (
        "registers its integration type under another name than its entry point",
        {"test_registered_through_entry_point"},
    ),
    "kit_misspelt_hook": (
        "implements connector_call_finshed (a hook that does not exist)",
        {"test_registered_through_entry_point"},
    ),
    "kit_too_strict": (
        "its settings model refuses valid settings (timeout_seconds at most 3)",
        {"test_valid_settings_accepted"},
    ),
    "kit_extra_allowed": (
        "its settings model accepts unknown keys (extra='allow')",
        {"test_registered_through_entry_point", "test_invalid_settings_rejected"},
    ),
    "kit_secret_in_repr": (
        "api_token is a plain str, shown in reprs",
        {"test_secrets_not_shown"},
    ),
    "kit_secret_logged": ("logs the api token at DEBUG", {"test_secrets_not_logged"}),
    "kit_auth_raises": (
        "the authorisation check raises when the CRM cannot be reached",
        {"test_authorization_check_reports_each_status"},
    ),
    "kit_auth_writes": (
        "the authorisation check writes to the CRM",
        {"test_authorization_check_reports_each_status"},
    ),
    "kit_settings_check_raises": (
        "connector_check_settings raises instead of reporting an error finding",
        {"test_settings_check_reads_only_and_never_raises"},
    ),
    "kit_settings_check_writes": (
        "connector_check_settings writes to the CRM",
        {"test_settings_check_reads_only_and_never_raises"},
    ),
    "kit_setup_misspelt": (
        "its set-up questions make a table with a key its settings do not have",
        {"test_setup_questions_make_valid_settings"},
    ),
    "kit_setup_prints": (
        "its set-up questions print to the terminal instead of telling through `questions`",
        {"test_setup_questions_make_valid_settings"},
    ),
    "kit_hook_raises": (
        "connector_call_answered raises for outbound calls",
        {"test_every_canonical_call_handled"},
    ),
    "kit_card_raises": (
        "connector_agent_card raises for calls without a client number",
        {"test_agent_card_never_raises"},
    ),
    "kit_not_idempotent": (
        "writes a new journal row on every delivery",
        {"test_redelivery_is_idempotent", "test_missed_call_hooks_accepted_and_idempotent"},
    ),
    "kit_session_leak": (
        "aclose() does not close its aiohttp.ClientSession",
        {"test_clean_shutdown"},
    ),
    "kit_task_leak": (
        "aclose() leaves its background task running",
        {"test_clean_shutdown"},
    ),
    "kit_acts_unprompted": (
        "acts in its CRM without being called (a background 'sync'), so the CRM changes "
        "while only unknown events arrive",
        {"test_unknown_events_skipped"},
    ),
}

KIT_TESTS = {
    "test_registered_through_entry_point",
    "test_valid_settings_accepted",
    "test_invalid_settings_rejected",
    "test_secrets_not_shown",
    "test_secrets_not_logged",
    "test_authorization_check_reports_each_status",
    "test_settings_check_reads_only_and_never_raises",
    "test_setup_questions_make_valid_settings",
    "test_every_canonical_call_handled",
    "test_agent_card_never_raises",
    "test_unknown_events_skipped",
    "test_redelivery_is_idempotent",
    "test_missed_call_hooks_accepted_and_idempotent",
    "test_clean_shutdown",
}


def class_name(variant: str) -> str:
    return "Test" + "".join(part.title() for part in variant.split("_"))


def write_variants(root: Path) -> None:
    """The plugins as an installed distribution would leave them: modules and a dist-info."""
    for variant in VARIANTS:
        broken = variant.removeprefix("kit_")
        source = textwrap.dedent(TINY).format(name=variant, broken=broken)
        (root / f"{variant}.py").write_text(source)
    (root / "kit_fake_crm.py").write_text(textwrap.dedent(FAKE_CRM))
    dist = root / "kit_variants-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kit-variants\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[connector_core]\n" + "".join(f"{v} = {v}\n" for v in VARIANTS)
    )
    (root / "conftest.py").write_text('pytest_plugins = ["connector_core.testing"]\n')
    (root / "test_variants.py").write_text(
        "from kit_fake_crm import TinyContract\n\n"
        + "".join(
            f"\n\nclass {class_name(v)}(TinyContract):\n    plugin = {v!r}\n" for v in VARIANTS
        )
    )


def verdicts(junit: Path) -> dict[str, dict[str, str]]:
    """class name → test name → passed | failed | error | skipped."""
    found: dict[str, dict[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
        cls = case.get("classname", "").rpartition(".")[2]
        found.setdefault(cls, {})[case.get("name", "")] = outcome
    return found


@pytest.mark.timeout(320)  # the inner run's own limit is 300 s
def test_kit_fails_every_broken_plugin_and_passes_the_unbroken_one(
    pytester: pytest.Pytester,
) -> None:
    write_variants(pytester.path)
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--junitxml={junit}", "-q", timeout=300
    )
    found = verdicts(junit)
    output = "\n".join(result.outlines[-60:])

    matrix, problems = [], []
    for variant, (broken, catchers) in VARIANTS.items():
        tests = found.get(class_name(variant), {})
        if set(tests) != KIT_TESTS:
            problems.append(f"{variant}: the kit ran {sorted(tests)}, expected {sorted(KIT_TESTS)}")
            continue
        failed = {t for t, outcome in tests.items() if outcome in ("failed", "error")}
        matrix.append(f"{variant:22} {broken}\n{'':22} fails: {', '.join(sorted(failed)) or '-'}")
        if variant == "kit_good":
            if any(outcome != "passed" for outcome in tests.values()):
                problems.append(f"the unbroken plugin did not pass everything: {tests}")
        elif not catchers <= failed:
            problems.append(
                f"{variant} ({broken}): expected {sorted(catchers)} to fail, "
                f"failed: {sorted(failed)}"
            )
    print("\n".join(matrix))
    assert not problems, "\n".join(problems) + "\n\ninner run:\n" + output


def test_the_matrix_covers_every_kit_test_and_the_docs_list_them() -> None:
    from connector_core.testing import PluginContract

    inherited = {name for name in dir(PluginContract) if name.startswith("test_")}
    assert inherited == KIT_TESTS
    caught = set().union(*(catchers for _, catchers in VARIANTS.values()))
    # Every kit test has a broken plugin that proves it bites.
    assert caught == KIT_TESTS
    docs = (Path(__file__).resolve().parents[2] / "docs" / "writing-plugins.md").read_text()
    assert [name for name in sorted(KIT_TESTS) if f"`{name}`" not in docs] == []
