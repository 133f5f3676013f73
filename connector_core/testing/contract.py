"""``PluginContract``: the tests every CRM plugin passes, inherited by one class in its suite.

    from connector_core.testing import PluginContract

    class TestMyCrmContract(PluginContract):
        plugin = "mycrm"                                   # entry-point name = type name
        valid_settings = ({"api_key": "k-123456"}, {"api_key": "k-123456", "region": "eu"})
        invalid_settings = (({}, "api_key"), ({"api_key": "k-123456", "region": "mars"}, "region"))
        secret_settings: ClassVar[dict[str, Any]] = {"api_key": "k-very-secret-42"}
        secrets = ("k-very-secret-42",)

Each test runs the real service in-process (``connector_core.testing.service``) with
integrations of the plugin and fails naming the contract rule that was broken. Override
``environment`` (a working CRM or its sandbox), ``auth_cases`` and ``observe`` when the
defaults do not fit; see docs/writing-plugins.md.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import json
import logging
import random
import traceback
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp import web
from pluggy import PluginValidationError
from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError

from connector_core.appkeys import MISSED_CALLS, STORE
from connector_core.callstate import LifecycleKind
from connector_core.config import config_json_schema
from connector_core.errors import ConfigError
from connector_core.hooks import ENTRY_POINT_GROUP, PluginHost
from connector_core.integrations import (
    AuthResult,
    AuthStatus,
    CardPart,
    CheckFinding,
    Integration,
    IntegrationType,
)
from connector_core.prompts import Questions, ScriptedAsker, ScriptExhausted
from connector_core.simulator import scenarios
from connector_core.simulator.scenarios import Scenario
from connector_core.store.base import Dispatch
from connector_core.testing.service import (
    ACCOUNT,
    KitService,
    hook_for,
    load_host,
    parse_config,
    run_service,
)
from connector_core.testing.watch import ResourceWatch, plugin_paths

CONTRACT = "contract"
"""Instance name of the integration the kit runs (``accounts.012345.integrations.contract``)."""
TRANSFER = "contract_transfer"
"""A second instance, with ``transfer_schemes``: ``connector_call_reached_transfer_scheme``."""
UNKNOWN_KEY = "contract_kit_unknown_key"
NO_SCHEME = "contract-kit-no-such-scheme"  # routes no call to the authorisation instances
AUTH_STATUSES = ("ok", "auth_failed", "cannot_connect")
_RECORD_ATTRS = {*vars(logging.makeLogRecord({})), "message", "asctime"}
MIN_SECRET = 4  # shorter "secrets" would match by accident
MISSED_CALL_KINDS = (
    LifecycleKind.MISSED_AGAIN,
    LifecycleKind.CALLED_BACK,
    LifecycleKind.MISSED_OVERDUE,
)


class PluginContract:
    """Subclass as ``Test<Something>`` in the plugin's tests; set the class attributes below."""

    plugin: ClassVar[str] = ""
    """The entry-point name in the ``connector_core`` group, also the integration type's name."""
    valid_settings: ClassVar[Sequence[Mapping[str, Any]]] = ()
    """Settings tables (the plugin's keys only) that must be accepted. At least one."""
    invalid_settings: ClassVar[Sequence[tuple[Mapping[str, Any], str]]] = ()
    """(settings, fragment): refused, with ``fragment`` (a TOML path or words) in the errors."""
    secret_settings: ClassVar[Mapping[str, Any]] = {}
    """A valid settings table holding secret values (tokens, passwords)."""
    secrets: ClassVar[Sequence[str]] = ()
    """The secret values of ``secret_settings``: never shown in a repr, an error or a schema."""
    hook_timeout_seconds: ClassVar[float] = 5.0
    """``hook_timeout_seconds`` of the kit's integrations."""
    quiet_seconds: ClassVar[float] = 0.2
    """How long the kit watches for actions nobody asked for (unknown events)."""
    transfer_schemes: ClassVar[Sequence[str]] = (scenarios.SALES[0],)
    """Schemes of the transfer instance; empty to run without it."""

    # -- what a plugin may override ------------------------------------------------------------

    def calls(self) -> list[Scenario]:
        """The canonical calls, each with its own call id (one of every kind)."""
        return scenarios.catalogue()

    @asynccontextmanager
    async def environment(self, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
        """A working CRM for one test; yields the settings that reach it.

        Start a sandbox here (and keep it on ``self`` for ``observe``). The default is for
        plugins that need nothing: ``{}``.
        """
        yield {}

    async def auth_cases(self, settings: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
        """Settings for each authorisation outcome the plugin can report.

        Keys: ``"ok"`` (required; normally ``settings``, the environment's), ``"auth_failed"``
        (a wrong credential), ``"cannot_connect"`` (an address nobody answers; keep the
        plugin's request timeout short).
        """
        return {"ok": settings}

    def setup_answers(self, settings: Mapping[str, Any]) -> Sequence[str]:
        """What an operator types at the plugin's ``connector init`` questions, in order.

        ``settings`` are the environment's (its address, its working key). Needed only when
        the plugin implements ``connector_setup_integration``; the default answers nothing.
        """
        return ()

    async def observe(self, app: web.Application, integration: Integration) -> Any:
        """A comparable snapshot of what ``integration`` has done in its CRM.

        The default is the integration's effect records in the store (``integration.effects``),
        right for plugins that journal there; a plugin with a sandbox returns its state.
        """
        return await app[STORE].effects(integration.key).items()

    # -- 1. registration -----------------------------------------------------------------------

    def test_registered_through_entry_point(self) -> None:
        name = self._name()
        found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        assert name in found, (
            f"no entry point named {name!r} in the {ENTRY_POINT_GROUP!r} group (installed: "
            f"{sorted(found)}); declare it in pyproject.toml: "
            f'[project.entry-points.{ENTRY_POINT_GROUP}] {name} = "<your module>"'
        )
        host = PluginHost()
        host.load([name])
        assert not host.errors, f"the entry point {name!r} does not load: {host.errors[name]}"
        kind = host.types.get(name)
        owned = [t for info in host.info() if info.name == name for t in info.integration_types]
        assert kind is not None, (
            f"the entry point {name!r} ({found[name].value}) registered integration type(s) "
            f'{owned or "none"}, not one named {name!r}: operators write plugin = "{name}" '
            "and the service loads the entry point of that name, so the two must match"
        )
        assert isinstance(kind, IntegrationType), f"register() got {type(kind).__name__}"
        model = kind.settings_model
        assert isinstance(model, type) and issubclass(model, BaseModel), (
            f"the settings model of {name!r} must be a pydantic BaseModel, got {model!r}"
        )
        try:
            host.pm.check_pending()
        except PluginValidationError as exc:
            pytest.fail(
                f"{name} implements a hook the host does not have (a misspelt name is never "
                f"called): {exc}"
            )
        extra = model.model_config.get("extra")
        assert extra == "forbid", (
            f"{model.__name__} must forbid unknown keys (model_config = "
            f'ConfigDict(extra="forbid"); it has extra={extra!r}): a misspelt setting in the '
            "operator's file must be an error, not silently ignored"
        )

    # -- 2. settings ---------------------------------------------------------------------------

    def test_valid_settings_accepted(self, tmp_path: Path) -> None:
        kind = self._kind()
        assert self.valid_settings, "the contract needs valid_settings: at least one sample"
        host = load_host([self._name()])
        problems = []
        for i, sample in enumerate(self.valid_settings):
            try:
                config = parse_config(self._table(sample), host, tmp_path)
            except ConfigError as exc:
                problems.append(f"valid_settings[{i}] was refused: " + "; ".join(exc.errors))
                continue
            settings = config.accounts[ACCOUNT].integrations[CONTRACT].settings
            if not isinstance(settings, kind.settings_model):
                problems.append(f"valid_settings[{i}] became a {type(settings).__name__}")
        assert not problems, "\n".join(problems)

    def test_invalid_settings_rejected(self, tmp_path: Path) -> None:
        self._kind()
        host = load_host([self._name()])
        base = dict(self.valid_settings[0]) if self.valid_settings else {}
        samples = [
            (dict(sample), fragment, f"invalid_settings[{i}]")
            for i, (sample, fragment) in enumerate(self.invalid_settings)
        ]
        samples.append(
            ({**base, UNKNOWN_KEY: 1}, UNKNOWN_KEY, f"valid_settings[0] + the key {UNKNOWN_KEY!r}")
        )
        prefix = f"accounts.{ACCOUNT}.integrations.{CONTRACT}"
        problems = []
        for sample, fragment, label in samples:
            try:
                parse_config(self._table(sample), host, tmp_path)
            except ConfigError as exc:
                lines = [line for line in exc.errors if line.startswith(prefix)]
                if not any(fragment in line for line in lines):
                    problems.append(
                        f"{label}: refused, but no error under {prefix} mentions {fragment!r}: "
                        f"{exc.errors}"
                    )
            except Exception as exc:
                problems.append(
                    f"{label}: validating it raised {type(exc).__name__}: {exc} — validators must "
                    "raise ValueError (pydantic reports it with the setting's TOML path)"
                )
            else:
                problems.append(f"{label} was accepted; it must be refused mentioning {fragment!r}")
        assert not problems, "\n".join(problems)

    # -- 3. secrets ----------------------------------------------------------------------------

    def test_secrets_not_shown(self, tmp_path: Path) -> None:
        kind = self._kind()
        secrets = self._declared_secrets(kind)
        host = load_host([self._name()])
        try:
            config = parse_config(self._table(self.secret_settings), host, tmp_path)
        except ConfigError as exc:
            pytest.fail(f"secret_settings must be valid settings: {exc.errors}")
        item = config.accounts[ACCOUNT].integrations[CONTRACT]
        integration = Integration(
            account=ACCOUNT,
            name=CONTRACT,
            type=kind,
            settings=item.settings,
            routing=item.routing,
            effects=None,  # type: ignore[arg-type]
        )
        shown = {
            "repr(settings)": repr(item.settings),
            "str(settings)": str(item.settings),
            "settings.model_dump_json()": item.settings.model_dump_json(),
            "repr(Integration)": repr(integration),
            "str(Integration)": str(integration),
            "repr(IntegrationType)": repr(kind),
            "repr(the integration's config)": repr(item),
            "repr(Config)": repr(config),
            "str(Config)": str(config),
            "config_json_schema (connector schema)": json.dumps(config_json_schema(host.types)),
            "settings JSON schema (connector plugins --json)": json.dumps(
                kind.settings_model.model_json_schema()
            ),
        }
        # Errors of configs that hold the secrets and are wrong elsewhere.
        wrong: list[tuple[str, dict[str, Any]]] = [
            ("an unknown key", {**self.secret_settings, UNKNOWN_KEY: "x"}),
            ("a bad core key", {**self.secret_settings, "hook_timeout_seconds": "soon"}),
        ]
        wrong += [
            (f"invalid_settings[{i}]", {**self.secret_settings, **sample})
            for i, (sample, _) in enumerate(self.invalid_settings)
        ]
        for label, table in wrong:
            try:
                parse_config(self._table(table), host, tmp_path)
            except ConfigError as exc:
                shown[f"ConfigError for secret_settings with {label}"] = "\n".join(
                    [str(exc), repr(exc), *exc.errors]
                )
            except Exception as exc:
                shown[f"{type(exc).__name__} for secret_settings with {label}"] = f"{exc}\n{exc!r}"
        leaks = [
            f"{where} shows the secret {_masked(secret)}"
            for where, text in shown.items()
            for secret in secrets
            if secret in text
        ]
        assert not leaks, (
            "secrets must never be shown (declare them as pydantic SecretStr, with no default, "
            "and never put a value into an error message):\n" + "\n".join(leaks)
        )

    @pytest.mark.asyncio
    async def test_secrets_not_logged(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
    ) -> None:
        kind = self._kind()
        declared = self._declared_secrets(kind)
        caplog.set_level(logging.DEBUG)
        async with self._environment(tmp_path) as settings:
            cases = await self._auth_cases(settings)
            tables = {**self._tables(settings), **self._auth_tables(cases)}
            secrets = set(declared)
            for table in [settings, *cases.values()]:
                secrets |= _secret_values(kind.settings_model, table)
            secrets = {s for s in secrets if len(s) >= MIN_SECRET}
            if not secrets:
                pytest.skip(f"{self.plugin}'s settings hold no secret in this environment")
            async with run_service(tmp_path, tables) as service:
                for name in self._auth_tables(cases):
                    await service.check_authorization(name)
                await self._send_calls(service, self.calls())
                await self._send_unknown_events(service, "logged")
                await service.settle()
        texts = [(f"log record {r.name}:{r.levelname}", _record_text(r)) for r in caplog.records]
        out = capsys.readouterr()
        texts += [("stdout", out.out), ("stderr", out.err)]
        leaks = [
            f"{where} shows the secret {_masked(secret)}: {_excerpt(text, secret)}"
            for where, text in texts
            for secret in secrets
            if secret in text
        ]
        assert not leaks, (
            f"{len(leaks)} log record(s) or output line(s) of a run with every canonical call "
            "and authorisation check show a secret:\n" + "\n".join(leaks[:20])
        )

    # -- 4. authorisation ----------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_authorization_check_reports_each_status(self, tmp_path: Path) -> None:
        kind = self._kind()
        async with self._environment(tmp_path) as settings:
            cases = await self._auth_cases(settings)
            secrets = set(self.secrets)
            for table in cases.values():
                secrets |= _secret_values(kind.settings_model, table)
            secrets = {s for s in secrets if len(s) >= MIN_SECRET}
            problems: list[str] = []
            async with run_service(tmp_path, self._auth_tables(cases)) as service:
                before = await self._observe(service)
                for status in cases:
                    name = f"auth_{status}"
                    integration = service.integrations[name]
                    try:
                        direct = await service.host.call(
                            "connector_check_authorization", integration
                        )
                    except TimeoutError:
                        problems.append(
                            f"{status}: connector_check_authorization did not return within "
                            f"hook_timeout_seconds ({self.hook_timeout_seconds} s); give its "
                            "requests a shorter timeout"
                        )
                    except Exception as exc:
                        problems.append(
                            f"{status}: connector_check_authorization raised "
                            f"{type(exc).__name__}: {exc} — it must never raise; return "
                            "AuthResult(AuthStatus.CANNOT_CONNECT or AUTH_FAILED, reason)"
                        )
                    else:
                        if direct is not None and not isinstance(direct, AuthResult):
                            problems.append(
                                f"{status}: connector_check_authorization returned "
                                f"{type(direct).__name__}, not an AuthResult"
                            )
                    result = await service.check_authorization(name)
                    if result.status != AuthStatus(status):
                        problems.append(
                            f"with the {status!r} settings the check reported "
                            f"{result.status.value!r} ({result.reason})"
                        )
                    if status != "ok" and not result.reason.strip():
                        problems.append(f"{status}: the check gives no reason to act on")
                    for secret in secrets:
                        if secret in result.reason:
                            problems.append(
                                f"{status}: the check's reason shows the secret {_masked(secret)}"
                            )
                after = await self._observe(service)
        assert not problems, "\n".join(problems)
        assert after == before, (
            "the authorisation check changed the CRM (it must be a cheap, read-only request; "
            "the service runs it at start-up and every few minutes):\n" + _diff(before, after)
        )

    @pytest.mark.asyncio
    async def test_settings_check_reads_only_and_never_raises(self, tmp_path: Path) -> None:
        """``connector_check_settings`` (when the plugin has it) against the working CRM."""
        async with self._environment(tmp_path) as settings:
            secrets = set(self.secrets) | _secret_values(self._kind().settings_model, settings)
            secrets = {s for s in secrets if len(s) >= MIN_SECRET}
            async with run_service(tmp_path, self._tables(settings)) as service:
                integration = service.integrations[CONTRACT]
                before = await self._observe(service)
                try:
                    findings = await service.host.check_settings(integration)
                except TimeoutError:
                    pytest.fail(
                        "connector_check_settings did not return within hook_timeout_seconds "
                        f"({self.hook_timeout_seconds} s); give its requests a shorter timeout"
                    )
                except Exception as exc:
                    pytest.fail(
                        f"connector_check_settings raised {type(exc).__name__}: {exc} — it "
                        "must never raise; return a CheckFinding(CheckLevel.ERROR, reason)"
                    )
                after = await self._observe(service)
        problems = [
            f"a finding shows the secret {_masked(secret)}: {finding.message}"
            for finding in findings
            for secret in secrets
            if secret in finding.message
        ]
        problems += [
            f"an empty message ({finding!r})"
            for finding in findings
            if isinstance(finding, CheckFinding) and not finding.message.strip()
        ]
        assert not problems, "\n".join(problems)
        assert after == before, "the settings check changed the CRM (it must only read):\n" + _diff(
            before, after
        )

    @pytest.mark.asyncio
    async def test_setup_questions_make_valid_settings(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``connector_setup_integration`` (when the plugin has it), answered by a script."""
        kind = self._kind()
        host = load_host([self._name()])
        if not host.pm.hook.connector_setup_integration.get_hookimpls():
            pytest.skip(f"{self.plugin} does not implement connector_setup_integration")
        async with self._environment(tmp_path) as settings:
            asker = ScriptedAsker(self.setup_answers(settings))
            try:
                table = await host.setup_integration(kind, Questions(asker, environ={}))
            except ScriptExhausted as exc:
                pytest.fail(
                    "connector_setup_integration asked more questions than setup_answers() "
                    f"answers; return what an operator types there, in order. {exc}"
                )
            except Exception as exc:
                pytest.fail(
                    f"connector_setup_integration raised {type(exc).__name__}: {exc} — a bad "
                    "answer is a ValueError in the question's parse function (the person sees "
                    "the message and the question again), never an exception out of the hook"
                )
        out = capsys.readouterr()
        assert not (out.out or out.err), (
            "connector_setup_integration wrote to the terminal itself; ask and tell through "
            f"`questions` (a test answers them from a script):\n{out.out}{out.err}"
        )
        assert table is not None
        try:
            parse_config(self._table(table), host, tmp_path)
        except ConfigError as exc:
            pytest.fail(
                f"the settings made from the answers ({sorted(table)}) would be refused by "
                "connector check; check each answer as it is typed:\n" + str(exc)
            )
        assert not asker.answers, (
            f"setup_answers() gives {len(asker.answers)} answer(s) the plugin never asked "
            f"for: {asker.answers}; the transcript:\n" + "\n".join(asker.transcript)
        )
        echoed = [
            f"{line!r} shows a secret typed at a secret question"
            for line in asker.told
            for secret in asker.secrets
            if len(secret) >= MIN_SECRET and secret in line
        ]
        assert not echoed, "\n".join(echoed)

    # -- 5. lifecycle --------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_every_canonical_call_handled(self, tmp_path: Path) -> None:
        self._kind()
        calls = self.calls()
        first = _first_answered(calls)
        async with self._running(tmp_path) as service:
            before = await self._observe(service)
            await service.call(first, settle=True)
            after_first = await self._observe(service)
            await self._send_calls(service, [c for c in calls if c is not first])
            failures = await self._unfinished(service, calls)
            missing = await self._undispatched(service, calls)
        assert not missing, (
            "the service did not dispatch every lifecycle hook of the canonical calls to the "
            "plugin (a problem of the core or of the plugin's routing hooks):\n"
            + "\n".join(missing)
        )
        assert not failures, (
            "every lifecycle hook must handle every canonical call; these hook calls did not "
            "succeed:\n" + "\n".join(failures)
        )
        assert after_first != before, (
            f"the plugin did nothing in its CRM for an answered inbound call ({first.name}): "
            "observe() shows no change (override observe() to show the CRM's state)"
        )

    @pytest.mark.asyncio
    async def test_agent_card_never_raises(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        self._kind()
        caplog.set_level(logging.WARNING, logger="connector_core.notifications")
        calls = self.calls()
        async with self._running(tmp_path, notifications=True) as service:
            integration = service.integrations[CONTRACT]
            if not service.host.has_impl("connector_agent_card", integration):
                pytest.skip(f"{self.plugin} does not implement connector_agent_card")
            problems = []
            for scenario in calls:
                await service.call(scenario)
                await service.settle()
                call = await service.load_call(scenario.call_id)
                assert call is not None
                for leg in call.legs:
                    try:
                        part = await service.host.call(
                            "connector_agent_card", integration, call=call, extension=leg.extension
                        )
                    except Exception as exc:
                        problems.append(
                            f"{scenario.name}, extension {leg.extension}: connector_agent_card "
                            f"raised {type(exc).__name__}: {exc}"
                        )
                        continue
                    if part is not None and not _valid_card(part):
                        problems.append(
                            f"{scenario.name}, extension {leg.extension}: connector_agent_card "
                            f"returned {part!r}; expected None or CardPart(title: str, "
                            "lines: list[str], links: list[(label, url)], caller_name: str, "
                            "main_link: (label, url) | None)"
                        )
        problems += [
            f"while {r.getMessage()}"
            for r in caplog.records
            if r.name == "connector_core.notifications"
        ]
        assert not problems, "the agent card part must never fail:\n" + "\n".join(problems)

    # -- 6. unknown events ---------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_unknown_events_skipped(self, tmp_path: Path) -> None:
        self._kind()
        first = _first_answered(self.calls())
        async with self._running(tmp_path) as service:
            await service.call(first, settle=True)
            rows = await service.dispatches(first.call_id)
            before = await self._observe(service)
            answers = await self._send_unknown_events(service, "skipped")
            await service.settle()
            await asyncio.sleep(self.quiet_seconds)
            await service.settle()
            after = await self._observe(service)
            stored = [
                p["call_id"]
                for _, p in answers
                if p.get("call_id") not in (None, first.call_id)
                and await service.load_call(p["call_id"])
            ]
            rows_after = await service.dispatches(first.call_id)
        refused = [
            f"{_describe_params(params)}: HTTP {answer[0]} {answer[1]}"
            for answer, params in answers
            if answer != (200, {"success": True})
        ]
        assert not refused, (
            'probes and unknown event types must be acknowledged with 200 {"success": true}:\n'
            + "\n".join(refused)
        )
        assert not stored and rows_after == rows, (
            f"the service made calls {stored} or hook calls out of unknown event types"
        )
        assert after == before, (
            "the plugin changed its CRM while the service received only a probe and unknown "
            "event types (5-12) and had nothing to ask of it; a plugin acts only when a hook "
            "is called:\n" + _diff(before, after)
        )

    # -- 7. redelivery -------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_redelivery_is_idempotent(self, tmp_path: Path) -> None:
        self._kind()
        calls = self.calls()
        async with self._running(tmp_path) as service:
            await self._send_calls(service, calls)
            failures = await self._unfinished(service, calls)
            if failures:
                pytest.fail(
                    "the canonical calls must succeed before redelivery can be checked (see "
                    "test_every_canonical_call_handled):\n" + "\n".join(failures)
                )
            rows = {c.call_id: await service.dispatches(c.call_id) for c in calls}
            before = await self._observe(service)

            # (a) Sipuni sends every webhook again, in another order.
            events = [params for c in calls for params in c.events]
            random.Random(20240531).shuffle(events)
            for params in events:
                await service.send(params)
            await service.settle()
            after_webhooks = await self._observe(service)
            rows_again = {c.call_id: await service.dispatches(c.call_id) for c in calls}

            # (b) every hook call runs again (a crash after the hook, before the row was done).
            problems = []
            for scenario in calls:
                problems += await _redeliver(
                    service, rows[scenario.call_id], f"{scenario.name} ({{integration}})"
                )
            after_hooks = await self._observe(service)
        assert rows_again == rows, "repeated webhooks made new hook calls (a core problem)"
        assert after_webhooks == before, "webhooks sent again changed the CRM:\n" + _diff(
            before, after_webhooks
        )
        assert not problems, "\n".join(problems)
        assert after_hooks == before, (
            "delivery is at least once: every hook called again for a call it already handled "
            "must change nothing (record each effect in integration.effects under a key and "
            "look before you create):\n" + _diff(before, after_hooks)
        )

    # -- 7b. the missed-call lifecycle ------------------------------------------------------------

    def missed_calls(self) -> list[Scenario]:
        """Two missed calls of one number, then a callback after the SLA (docs/missed-calls.md):
        every missed-call hook is due. Override with calls the plugin's CRM knows."""
        return scenarios.missed_then_called_back(callback_after=1200)

    @pytest.mark.asyncio
    async def test_missed_call_hooks_accepted_and_idempotent(self, tmp_path: Path) -> None:
        self._kind()
        calls = self.missed_calls()
        async with self._running(tmp_path) as service:
            integration = service.integrations[CONTRACT]
            hooks = [k.hook for k in MISSED_CALL_KINDS]
            if not any(service.host.has_impl(hook, integration) for hook in hooks):
                pytest.skip(f"{self.plugin} implements none of {', '.join(hooks)}")
            await self._send_calls(service, calls)
            # The SLA has passed and the callback is known: the loop decides all three.
            end = max(int(p["timestamp"]) for c in calls for p in c.events)
            number = await service.load_call(calls[0].call_id)
            assert number is not None and number.client_number, "the calls need a number"
            await service.app[MISSED_CALLS].settle(ACCOUNT, number.client_number, float(end + 1))
            await service.settle()
            failures = await self._unfinished(service, calls)
            rows = [
                row
                for c in calls
                for row in await service.dispatches(c.call_id)
                if row.integration == integration.key and row.kind in MISSED_CALL_KINDS
            ]
            before = await self._observe(service)
            problems = await _redeliver(service, rows, "call {call_id}")
            after = await self._observe(service)
        assert sorted(row.key for row in rows) == sorted(k.value for k in MISSED_CALL_KINDS), (
            "the service did not dispatch every missed-call hook (a core problem): got "
            f"{sorted(row.key for row in rows)}"
        )
        assert not failures, (
            "every missed-call hook the plugin implements must accept its payload (earlier, "
            "callback, overdue); these hook calls did not succeed:\n" + "\n".join(failures)
        )
        assert not problems, "\n".join(problems)
        assert after == before, (
            "delivery is at least once: a missed-call hook called again must change nothing "
            "(record each effect in integration.effects under a key and look before you "
            "create):\n" + _diff(before, after)
        )

    # -- 8. shutdown ---------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_clean_shutdown(self, tmp_path: Path) -> None:
        self._kind()
        module = load_host([self._name()]).pm.get_plugin(self._name())
        assert module is not None, f"plugin {self._name()!r} is not registered"
        async with self._environment(tmp_path) as settings:
            cases = await self._auth_cases(settings)
            tables = {**self._tables(settings), **self._auth_tables(cases)}
            watch = ResourceWatch(plugin_paths(module))
            try:
                with watch:
                    async with run_service(tmp_path, tables) as service:
                        own = service.client.session
                        for name in self._auth_tables(cases):
                            await service.check_authorization(name)
                        await self._send_calls(service, self.calls())
                    for _ in range(5):  # let tasks cancelled at shutdown finish
                        await asyncio.sleep(0)
                    await asyncio.sleep(0.01)
                    unclosed = watch.unclosed_sessions(exclude=[own])
                    pending = watch.pending_tasks()
            finally:
                await watch.release()  # the verdict is taken; do not leak into other tests
        assert not unclosed, (
            f"{len(unclosed)} aiohttp.ClientSession(s) left open after the service stopped; "
            "give the runtime an async aclose() that closes them (the host awaits it at "
            "shutdown). Created at:\n" + "\n".join(unclosed)
        )
        assert not pending, (
            "tasks the plugin started are still running after the service stopped; cancel "
            "and await them in the runtime's aclose():\n" + "\n".join(pending)
        )

    # -- helpers -------------------------------------------------------------------------------

    def _name(self) -> str:
        assert self.plugin, f'{type(self).__name__} must set plugin = "<entry-point name>"'
        return self.plugin

    def _kind(self) -> IntegrationType:
        name = self._name()
        host = load_host([name])
        kind = host.types.get(name)
        if kind is None:
            pytest.fail(
                f"no integration type {name!r} is registered through the entry point {name!r} "
                f"(loaded types: {sorted(host.types)}, errors: {host.errors}); see "
                "test_registered_through_entry_point"
            )
        return kind

    def _declared_secrets(self, kind: IntegrationType) -> list[str]:
        fields = _secret_fields(kind.settings_model)
        if not self.secrets:
            if fields:
                pytest.fail(
                    f"{kind.settings_model.__name__} has secret field(s) {fields}, but the "
                    "contract declares none: set secret_settings (valid settings with secret "
                    "values) and secrets (those values)"
                )
            pytest.skip(f"{kind.settings_model.__name__} has no secret fields")
        assert self.secret_settings, "secrets are declared; set secret_settings that hold them"
        short = [s for s in self.secrets if len(s) < MIN_SECRET]
        assert not short, f"secrets must be at least {MIN_SECRET} characters to be looked for"
        return list(self.secrets)

    def _table(self, settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The config's one integration, for the settings tests."""
        return {CONTRACT: {"plugin": self.plugin, **settings}}

    def _tables(self, settings: Mapping[str, Any], **core: Any) -> dict[str, dict[str, Any]]:
        """The integrations the service runs: the contract one, and the transfer instance."""
        main = {"plugin": self.plugin, "hook_timeout_seconds": self.hook_timeout_seconds}
        main |= core
        main |= dict(settings)
        tables = {CONTRACT: main}
        if self.transfer_schemes:
            tables[TRANSFER] = {**main, "transfer_schemes": list(self.transfer_schemes)}
        return tables

    def _auth_tables(self, cases: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        return {
            f"auth_{status}": {
                "plugin": self.plugin,
                "hook_timeout_seconds": self.hook_timeout_seconds,
                "schemes": [NO_SCHEME],  # sees no call: only its authorisation is checked
                **dict(settings),
            }
            for status, settings in cases.items()
        }

    async def _auth_cases(self, settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        cases = {k: dict(v) for k, v in (await self.auth_cases(dict(settings))).items()}
        assert "ok" in cases, "auth_cases() must include 'ok': the environment's settings"
        unknown = sorted(set(cases) - set(AUTH_STATUSES))
        assert not unknown, f"auth_cases() keys must be among {AUTH_STATUSES}, not {unknown}"
        return cases

    def _environment(self, tmp_path: Path) -> Any:
        made = self.environment(tmp_path)
        if hasattr(made, "__aenter__"):
            return made
        if inspect.isasyncgen(made):
            return _from_generator(made)
        raise TypeError("environment() must be an async context manager (@asynccontextmanager)")

    @asynccontextmanager
    async def _running(self, tmp_path: Path, **core: Any) -> AsyncIterator[KitService]:
        async with self._environment(tmp_path) as settings:
            async with run_service(tmp_path, self._tables(settings, **core)) as service:
                yield service

    async def _observe(self, service: KitService) -> list[Any]:
        return [
            await self.observe(service.app, integration)
            for _, integration in sorted(service.integrations.items())
        ]

    async def _send_calls(self, service: KitService, calls: Sequence[Scenario]) -> None:
        for scenario in calls:
            await service.call(scenario)
        await service.settle()

    async def _send_unknown_events(
        self, service: KitService, tag: str
    ) -> list[tuple[tuple[int, Any], dict[str, str]]]:
        """A probe, then event types 5-12 for a new call id and for an existing one."""
        first = _first_answered(self.calls())
        sent: list[dict[str, str]] = [{}]
        for event in range(5, 13):
            common = {
                "event": str(event),
                "timestamp": str(scenarios.START + event),
                "src_num": scenarios.CLIENT,
                "src_type": "1",
                "dst_num": scenarios.LINE,
                "dst_type": "1",
                "status": "ANSWER",
            }
            sent.append({**common, "call_id": f"contract-kit-{tag}-{event}"})
            sent.append({**common, "call_id": first.call_id})
        return [(await service.send(params), params) for params in sent]

    async def _unfinished(self, service: KitService, calls: Sequence[Scenario]) -> list[str]:
        failures = []
        for scenario in calls:
            for row in await service.dispatches(scenario.call_id):
                if row.status != "done":
                    failures.append(_describe_row(scenario, row))
        return failures

    async def _undispatched(self, service: KitService, calls: Sequence[Scenario]) -> list[str]:
        main = service.integrations[CONTRACT].key
        missing = []
        for scenario in calls:
            keys = {
                r.key for r in await service.dispatches(scenario.call_id) if r.integration == main
            }
            for key in scenario.expected.get("lifecycle", []):
                if key not in keys:
                    missing.append(f"{scenario.name}: {key} was never dispatched to {main}")
        return missing


# --- helpers ----------------------------------------------------------------------------------


async def _redeliver(service: KitService, rows: Sequence[Dispatch], what: str) -> list[str]:
    """Each row's hook called again; what went wrong, naming ``what`` (``{call_id}`` and
    ``{integration}`` filled from the row)."""
    problems = []
    for row in rows:
        try:
            await service.redeliver(row)
        except Exception as exc:
            named = what.format(call_id=row.call_id, integration=row.integration)
            problems.append(
                f"{hook_for(row)} for {named}, delivered again, raised {type(exc).__name__}: {exc}"
            )
    return problems


@asynccontextmanager
async def _from_generator(gen: Any) -> AsyncIterator[Any]:
    value = await gen.__anext__()
    try:
        yield value
    finally:
        await gen.aclose()


def _first_answered(calls: Sequence[Scenario]) -> Scenario:
    for scenario in calls:
        if scenario.name == "inbound_answered":
            return scenario
    return calls[0]


def _describe_row(scenario: Scenario, row: Dispatch) -> str:
    state = {"pending": "failed, waiting for a retry", "dead": "failed for good"}.get(
        row.status, row.status
    )
    if row.status == "pending" and not row.attempts:
        state = "never ran (a hook call before it failed)"
    error = f": {row.last_error}" if row.last_error else ""
    return (
        f"{hook_for(row)} ({row.key}) for {scenario.name} on {row.integration}: "
        f"{state} after {row.attempts} attempt(s){error}"
    )


def _describe_params(params: Mapping[str, str]) -> str:
    if not params:
        return "a probe (no parameters)"
    return f"event {params.get('event')} for call {params.get('call_id')}"


def _valid_card(part: Any) -> bool:
    return (
        isinstance(part, CardPart)
        and isinstance(part.title, str)
        and all(isinstance(line, str) for line in part.lines)
        and all(_valid_link(link) for link in part.links)
        and isinstance(part.caller_name, str)
        and (part.main_link is None or _valid_link(part.main_link))
    )


def _valid_link(link: Any) -> bool:
    return (
        isinstance(link, tuple | list) and len(link) == 2 and all(isinstance(x, str) for x in link)
    )


def _secret_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted names of the model's fields typed SecretStr/SecretBytes, nested models included."""
    found: list[str] = []

    def walk(annotation: Any, path: str, seen: set[int]) -> None:
        if annotation in (SecretStr, SecretBytes):
            found.append(path)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if id(annotation) in seen:
                return
            for name, field in annotation.model_fields.items():
                walk(field.annotation, f"{path}.{name}" if path else name, seen | {id(annotation)})
        else:
            for arg in getattr(annotation, "__args__", ()) or ():
                walk(arg, path, seen)
            origin = getattr(annotation, "__origin__", None)
            if origin is not None and getattr(annotation, "__metadata__", None):
                walk(origin, path, seen)

    walk(model, prefix, set())
    return found


def _secret_values(model: type[BaseModel], table: Mapping[str, Any]) -> set[str]:
    """The SecretStr/SecretBytes values of ``table`` once validated by ``model``."""
    try:
        settings = model.model_validate(dict(table))
    except ValidationError:
        return set()
    values: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            values.add(value.get_secret_value())
        elif isinstance(value, SecretBytes):
            values.add(value.get_secret_value().decode(errors="replace"))
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                walk(item)

    walk(settings)
    return {v for v in values if v}


def _record_text(record: logging.LogRecord) -> str:
    try:
        parts = [record.getMessage()]
    except Exception:
        parts = [str(record.msg), repr(record.args)]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append("".join(traceback.format_exception(*record.exc_info)))
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    parts += [str(v) for k, v in vars(record).items() if k not in _RECORD_ATTRS]
    return "\n".join(parts)


def _masked(secret: str) -> str:
    return f"{secret[:2]}…({len(secret)} chars)"


def _excerpt(text: str, secret: str) -> str:
    at = text.find(secret)
    start = max(0, at - 60)
    snippet = text[start : at + len(secret) + 60].replace(secret, _masked(secret))
    return " ".join(snippet.split())


def _diff(before: Any, after: Any, limit: int = 40) -> str:
    """A unified diff of two snapshots, one line per item (two levels deep)."""

    def lines(value: Any, path: str = "", depth: int = 0) -> list[str]:
        if depth < 3 and isinstance(value, Mapping) and value:
            keys = sorted(value, key=str)
            return [x for k in keys for x in lines(value[k], f"{path}.{k}", depth + 1)]
        if depth < 3 and isinstance(value, list | tuple) and value:
            return [x for i, v in enumerate(value) for x in lines(v, f"{path}[{i}]", depth + 1)]
        text = json.dumps(value, default=repr, ensure_ascii=False, sort_keys=True)
        return [f"{path or '.'}: {text[:300]}"]

    changed = [
        line
        for line in difflib.unified_diff(lines(before), lines(after), lineterm="", n=0)
        if not line.startswith(("---", "+++", "@@"))
    ]
    more = f"\n… {len(changed) - limit} more line(s)" if len(changed) > limit else ""
    return "\n".join(changed[:limit]) + more
