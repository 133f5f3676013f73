"""The plugin host: finds plugins, checks them, registers integration types, calls hooks safely.

Plugins come from the ``connector_core`` entry-point group, bundled ones included, and only
those the config names are loaded. A plugin is checked as it is registered, as pluggy's
``check_pending()`` would and a little more: a function marked ``@hookimpl`` whose name is
no hook (a misspelt ``connector_call_finshed``), a ``connector_*`` function left unmarked, a
wrapper, or a hook argument the specification does not have refuses the plugin with a
message naming the plugin and the function; ``connector plugins``, ``connector check`` and
``connector serve`` show it.

The rest of the service calls hooks only through the typed methods of ``PluginHost``, one per
hook (as tox 4 wraps pluggy): ``await host.call_started(integration, call)``,
``host.filter_call(integration, call)``… Lifecycle, authorisation and card hooks are called
on the plugin that registered the integration's type, under a timeout, and awaited here, so a
slow or failing plugin is contained to its own call. Routing hooks are asked across every
plugin one implementation at a time: one that raises is skipped and logged, and the next
answers (the built-in one last), so a broken routing hook cannot stop other integrations.
"""

from __future__ import annotations

import difflib
import inspect
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from connector_core import builtin_routing, hookspecs
from connector_core.callstate import (
    Callback,
    CallState,
    LifecycleEvent,
    LifecycleKind,
    MissedCall,
    Overdue,
    SchemeVisit,
    Transfer,
)
from connector_core.hooktime import hook_deadline
from connector_core.integrations import (
    AuthResult,
    CardPart,
    CheckFinding,
    Integration,
    IntegrationType,
)
from connector_core.prompts import Questions

if TYPE_CHECKING:
    from connector_core.notifications import Sink

log = logging.getLogger(__name__)
_Answer = TypeVar("_Answer")
ENTRY_POINT_GROUP = "connector_core"
HOOK_PREFIX = "connector_"
# The name the core's own routing (``builtin_routing``) is registered under.
BUILTIN_ROUTING = "builtin_routing"
# Routing hooks and the answer each must give (``None`` leaves the decision to the next).
ROUTING_ANSWERS: dict[str, type] = {
    "connector_filter_call": bool,
    "connector_transfer_scheme": SchemeVisit,
}


@dataclass(frozen=True)
class PluginInfo:
    name: str
    module: str
    version: str | None
    loaded: bool
    hooks: tuple[str, ...]
    integration_types: tuple[str, ...]
    error: str | None = None


class PluginError(Exception):
    """A plugin refused at registration; ``problems`` name its functions and what is wrong."""

    def __init__(self, plugin: str, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.plugin = plugin
        self.problems = problems


class PluginHost:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.pm.register(builtin_routing, name=BUILTIN_ROUTING)
        self.types: dict[str, IntegrationType[Any, Any]] = {}
        self._owner: dict[str, object] = {}  # integration type name -> plugin that owns it
        self._entry_points: dict[str, EntryPoint] = {}
        self._errors: dict[str, str] = {}
        self._callers: dict[tuple[str, int], Any] = {}
        # (hook, integration type) -> the owning plugin's implementations, in call order.
        self._impls: dict[tuple[str, str], tuple[pluggy.HookImpl, ...]] = {}
        # (plugin, hook) -> how many times a routing implementation raised and was skipped.
        self.routing_errors: Counter[tuple[str, str]] = Counter()
        # on_routing_error(plugin, hook): each skip, for /metrics (the app wires it).
        self.on_routing_error: Callable[[str, str], None] = lambda plugin, hook: None

    # -- discovery --------------------------------------------------------------------------

    def available(self) -> dict[str, EntryPoint]:
        """Installed plugins, by entry-point name (nothing is imported)."""
        if not self._entry_points:
            self._entry_points = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        return self._entry_points

    def load(self, names: Iterable[str] | None = None) -> None:
        """Import and register the named plugins (all installed ones when ``None``).

        A plugin that fails to import or is refused by ``register`` is reported by ``info()``
        and ``errors``; the others load.
        """
        available = self.available()
        for name in sorted(available if names is None else set(names)):
            if self.pm.has_plugin(name) or name in self._errors:
                continue
            entry = available.get(name)
            if entry is None:
                self._errors[name] = f"no installed plugin named '{name}'"
                continue
            # A broken third-party package must not stop the others.
            try:
                module = entry.load()
            except Exception as exc:
                self._errors[name] = f"cannot import {entry.value}: {exc}"
                log.error("plugin %s failed to load: %s", name, exc)
                continue
            try:
                self.register(module, name)
            except PluginError as exc:
                self._errors[name] = f"refused: {exc}"
                log.error("plugin %s refused: %s", name, exc)
            except Exception as exc:  # a hook argument the spec does not have, a type twice
                self._errors[name] = f"cannot register {entry.value}: {exc}"
                log.error("plugin %s failed to register: %s", name, exc)

    def register(self, plugin: ModuleType | object, name: str) -> None:
        """Register a plugin object, check its hooks, and collect its integration types.

        Raises ``PluginError`` (nothing of the plugin stays registered) when a function is
        marked as a hook that does not exist, a ``connector_*`` function is not marked, or a
        hook is a wrapper; pluggy's own ``PluginValidationError`` for a hook argument the
        specification does not have; ``ValueError`` for an integration type taken already.
        """
        self.pm.register(plugin, name=name)
        try:
            problems = _problems(self.pm, plugin)
            if problems:
                raise PluginError(name, problems)
            self.pm.check_pending()  # pluggy's own rule; _problems has said it in more words
            types = self._integration_types(plugin)
        except BaseException:
            self.pm.unregister(plugin)
            raise
        self.types.update(types)
        self._owner.update(dict.fromkeys(types, plugin))
        self._callers.clear()
        self._impls.clear()

    def _integration_types(self, plugin: object) -> dict[str, IntegrationType[Any, Any]]:
        found: dict[str, IntegrationType[Any, Any]] = {}

        def register_type(kind: IntegrationType[Any, Any]) -> None:
            if kind.name in self.types or kind.name in found:
                raise ValueError(f"integration type '{kind.name}' registered twice")
            found[kind.name] = kind

        for impl in self.pm.hook.connector_register_integration_types.get_hookimpls():
            if impl.plugin is plugin:
                impl.function(register=register_type)
        return found

    @property
    def errors(self) -> dict[str, str]:
        return dict(self._errors)

    def info(self) -> list[PluginInfo]:
        result = []
        for name, entry in sorted(self.available().items()):
            plugin = self.pm.get_plugin(name)
            hooks = (
                tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or []))
                if (plugin is not None)
                else ()
            )
            types = tuple(t for t, owner in self._owner.items() if owner is plugin)
            version = entry.dist.version if entry.dist else None
            result.append(
                PluginInfo(
                    name,
                    entry.value,
                    version,
                    plugin is not None,
                    hooks,
                    types,
                    self._errors.get(name),
                )
            )
        return result

    # -- the typed facade: one method per hook ----------------------------------------------

    async def check_authorization(self, integration: Integration) -> AuthResult | None:
        """``connector_check_authorization`` on the owning plugin; ``None`` when it has none."""
        result = await self.call("connector_check_authorization", integration)
        return _expect(result, AuthResult, "connector_check_authorization", integration)

    async def check_settings(self, integration: Integration) -> list[CheckFinding]:
        """``connector_check_settings`` on the owning plugin; ``[]`` when it has none.

        Raises what the plugin raised, ``TimeoutError`` after ``hook_timeout_seconds``, and
        ``TypeError`` for an answer that is not a list of ``CheckFinding``.
        """
        result = await self.call("connector_check_settings", integration)
        if result is None:
            return []
        if not isinstance(result, list) or not all(isinstance(f, CheckFinding) for f in result):
            raise TypeError(
                f"connector_check_settings of {integration.type.name} returned "
                f"{type(result).__name__}, not a list of CheckFinding"
            )
        return result

    async def setup_integration(
        self, kind: IntegrationType[Any, Any], questions: Questions
    ) -> dict[str, Any] | None:
        """``connector_setup_integration`` on the plugin that registered ``kind``.

        ``None`` when that plugin has no such hook (``connector init`` then asks the settings
        its model requires); ``{}`` when the hook answered ``None``. No timeout: a person is
        answering. Raises what the plugin raised, and ``TypeError`` for an answer that is
        not a table.
        """
        caller = self._type_caller("connector_setup_integration", kind.name)
        if not caller.get_hookimpls():
            return None
        result: object = None
        for answer in caller(integration_type=kind, questions=questions):
            result = await answer if inspect.isawaitable(answer) else answer
            if result is not None:
                break
        if result is None:
            return {}
        if not isinstance(result, dict) or not all(isinstance(k, str) for k in result):
            raise TypeError(
                f"connector_setup_integration of {kind.name} returned {type(result).__name__}, "
                "not a table (a dict of setting names to values)"
            )
        return result

    async def call_started(self, integration: Integration, call: CallState) -> None:
        """``connector_call_started`` on the plugin owning ``integration``."""
        await self.call("connector_call_started", integration, call=call)

    async def call_answered(self, integration: Integration, call: CallState) -> None:
        """``connector_call_answered`` on the plugin owning ``integration``."""
        await self.call("connector_call_answered", integration, call=call)

    async def call_transferred(
        self, integration: Integration, call: CallState, transfer: Transfer
    ) -> None:
        """``connector_call_transferred`` on the plugin owning ``integration``."""
        await self.call("connector_call_transferred", integration, call=call, transfer=transfer)

    async def call_entered_scheme(
        self, integration: Integration, call: CallState, scheme: SchemeVisit
    ) -> None:
        """``connector_call_entered_scheme`` on the plugin owning ``integration``."""
        await self.call("connector_call_entered_scheme", integration, call=call, scheme=scheme)

    async def call_reached_transfer_scheme(
        self, integration: Integration, call: CallState, scheme: SchemeVisit
    ) -> None:
        """``connector_call_reached_transfer_scheme`` on the plugin owning ``integration``."""
        await self.call(
            "connector_call_reached_transfer_scheme", integration, call=call, scheme=scheme
        )

    async def call_finished(self, integration: Integration, call: CallState) -> None:
        """``connector_call_finished`` on the plugin owning ``integration``."""
        await self.call("connector_call_finished", integration, call=call)

    async def call_missed_again(
        self, integration: Integration, call: CallState, earlier: tuple[MissedCall, ...]
    ) -> None:
        """``connector_call_missed_again`` on the plugin owning ``integration``."""
        await self.call("connector_call_missed_again", integration, call=call, earlier=earlier)

    async def call_called_back(
        self, integration: Integration, call: CallState, callback: Callback
    ) -> None:
        """``connector_call_called_back`` on the plugin owning ``integration``."""
        await self.call("connector_call_called_back", integration, call=call, callback=callback)

    async def call_missed_overdue(
        self, integration: Integration, call: CallState, overdue: Overdue
    ) -> None:
        """``connector_call_missed_overdue`` on the plugin owning ``integration``."""
        await self.call("connector_call_missed_overdue", integration, call=call, overdue=overdue)

    async def call_lifecycle(
        self, integration: Integration, call: CallState, record: LifecycleEvent
    ) -> None:
        """The hook a lifecycle record calls, with its payload (a dispatch row's work)."""
        match record.kind:
            case LifecycleKind.STARTED:
                await self.call_started(integration, call)
            case LifecycleKind.ANSWERED:
                await self.call_answered(integration, call)
            case LifecycleKind.TRANSFERRED if record.transfer is not None:
                await self.call_transferred(integration, call, record.transfer)
            case LifecycleKind.ENTERED_SCHEME if record.scheme is not None:
                await self.call_entered_scheme(integration, call, record.scheme)
            case LifecycleKind.REACHED_TRANSFER_SCHEME if record.scheme is not None:
                await self.call_reached_transfer_scheme(integration, call, record.scheme)
            case LifecycleKind.FINISHED:
                await self.call_finished(integration, call)
            case LifecycleKind.MISSED_AGAIN if record.earlier:
                await self.call_missed_again(integration, call, record.earlier)
            case LifecycleKind.CALLED_BACK if record.callback is not None:
                await self.call_called_back(integration, call, record.callback)
            case LifecycleKind.MISSED_OVERDUE if record.overdue is not None:
                await self.call_missed_overdue(integration, call, record.overdue)
            case _:  # LifecycleEvent's validator refuses a record without its payload
                raise AssertionError(f"lifecycle record {record.id!r} has no payload")

    async def agent_card(
        self, integration: Integration, call: CallState, extension: str
    ) -> CardPart | None:
        """``connector_agent_card`` on the owning plugin: its part of the ringing card."""
        result = await self.call(
            "connector_agent_card", integration, call=call, extension=extension
        )
        return _expect(result, CardPart, "connector_agent_card", integration)

    def has_agent_card(self, integration: Integration) -> bool:
        """Whether the plugin owning ``integration`` contributes to agent cards."""
        return self.has_impl("connector_agent_card", integration)

    def filter_call(self, integration: Integration, call: CallState) -> bool:
        """``connector_filter_call`` across plugins: does ``integration`` see ``call``?

        Plugins answer first, the built-in scheme filter last; one that raises is skipped
        (see ``routing_errors``). No answer at all hides the call.
        """
        return self.filter_call_by(integration, call)[0]

    def filter_call_by(self, integration: Integration, call: CallState) -> tuple[bool, str | None]:
        """``filter_call``, and the name of the plugin that answered (``None``: nobody did)."""
        answer, by = self._answer_by("connector_filter_call", integration, call=call)
        return answer is True, by

    def transfer_scheme(self, integration: Integration, call: CallState) -> SchemeVisit | None:
        """``connector_transfer_scheme`` across plugins: the visit that opens ``call``."""
        return self.transfer_scheme_by(integration, call)[0]

    def transfer_scheme_by(
        self, integration: Integration, call: CallState
    ) -> tuple[SchemeVisit | None, str | None]:
        """``transfer_scheme``, and the name of the plugin that answered."""
        answer, by = self._answer_by("connector_transfer_scheme", integration, call=call)
        return (answer, by) if isinstance(answer, SchemeVisit) else (None, by)

    def notification_sinks(self) -> list[Sink]:
        """Every sink the plugins hand over through ``connector_register_notification_sinks``."""
        sinks: list[Sink] = []
        self.pm.hook.connector_register_notification_sinks(register=sinks.append)
        return sinks

    # -- the primitives under the facade ----------------------------------------------------

    def _owner_caller(self, hook_name: str, integration: Integration) -> Any:
        return self._type_caller(hook_name, integration.type.name)

    def _type_caller(self, hook_name: str, type_name: str) -> Any:
        """The hook's caller restricted to the plugin that registered ``type_name``."""
        owner = self._owner[type_name]
        cache_key = (hook_name, id(owner))
        caller = self._callers.get(cache_key)
        if caller is None:
            others = [p for p in self.pm.get_plugins() if p is not owner]
            caller = self.pm.subset_hook_caller(hook_name, remove_plugins=others)
            self._callers[cache_key] = caller
        return caller

    async def call(self, hook_name: str, integration: Integration, **kwargs: Any) -> Any:
        """Call a hook on the plugin owning ``integration`` and await it under its timeout.

        Returns the first non-``None`` result. Raises what the plugin raised, or
        ``TimeoutError`` when it took longer than ``hook_timeout_seconds``, not counting
        the time it spent in ``hooktime.queue_wait`` (a rate limiter, another call's lock).
        The typed methods above are built on it; new code calls those.
        """
        kwargs["integration"] = integration
        # The owner's implementations called here as pluggy would (last registered first,
        # the first answer wins), without its generic call path on every hook call; each
        # is called only when the ones before it answered nothing.
        impls = self._owner_impls(hook_name, integration.type.name)
        async with hook_deadline(integration.routing.hook_timeout_seconds):
            for impl in impls:
                result = impl.function(*_arguments(hook_name, impl, kwargs))
                if inspect.isawaitable(result):
                    result = await result
                if result is not None:
                    return result
            return None

    def _owner_impls(self, hook_name: str, type_name: str) -> tuple[pluggy.HookImpl, ...]:
        """The implementations of ``hook_name`` by the plugin owning ``type_name``, in the
        order pluggy calls them."""
        impls = self._impls.get((hook_name, type_name))
        if impls is None:
            caller = self._type_caller(hook_name, type_name)
            impls = self._impls[hook_name, type_name] = tuple(reversed(caller.get_hookimpls()))
        return impls

    def has_impl(self, hook_name: str, integration: Integration) -> bool:
        return bool(self._owner_caller(hook_name, integration).get_hookimpls())

    def decide(self, hook_name: str, integration: Integration, **kwargs: Any) -> Any:
        """A routing hook by name, guarded as ``filter_call`` and ``transfer_scheme`` are."""
        if hook_name not in ROUTING_ANSWERS:
            raise ValueError(f"{hook_name} is not a routing hook ({', '.join(ROUTING_ANSWERS)})")
        return self._first_answer(hook_name, integration, **kwargs)

    def _first_answer(self, hook_name: str, integration: Integration, **kwargs: Any) -> Any:
        return self._answer_by(hook_name, integration, **kwargs)[0]

    def _answer_by(
        self, hook_name: str, integration: Integration, **kwargs: Any
    ) -> tuple[Any, str | None]:
        """pluggy's firstresult, one implementation at a time, skipping those that fail;
        with the name of the plugin that answered.

        ``get_hookimpls()`` lists implementations in registration order, adjusted by
        tryfirst/trylast; pluggy calls them last to first, and so does this loop, so the
        built-in implementation (registered first) still answers last.
        """
        kwargs["integration"] = integration
        wanted = ROUTING_ANSWERS[hook_name]
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            try:
                answer = impl.function(*(kwargs[name] for name in impl.argnames))
                if inspect.iscoroutine(answer):
                    answer.close()  # never awaited: close it so Python does not warn later
                    raise TypeError("it is async; routing hooks must be plain functions")
                if answer is not None and not isinstance(answer, wanted):
                    raise TypeError(
                        f"it returned {type(answer).__name__}, not {wanted.__name__} or None"
                    )
            except Exception as exc:
                self._routing_failed(impl, hook_name, integration, exc)
                continue
            if answer is not None:
                return answer, impl.plugin_name
        return None, None

    def _routing_failed(
        self, impl: pluggy.HookImpl, hook_name: str, integration: Integration, exc: Exception
    ) -> None:
        key = (impl.plugin_name, hook_name)
        self.routing_errors[key] += 1
        self.on_routing_error(*key)
        # The traceback once per implementation: a broken hook fails on every event.
        log.error(
            "routing hook %s of plugin '%s' failed for %s, skipped (the next implementation "
            "decides, the built-in one last): %s: %s",
            _where(impl.function),
            impl.plugin_name,
            integration.key,
            type(exc).__name__,
            exc,
            exc_info=self.routing_errors[key] == 1,
        )


def _expect(
    result: object, wanted: type[_Answer], hook_name: str, integration: Integration
) -> _Answer | None:
    if result is None:
        return None
    if not isinstance(result, wanted):
        raise TypeError(
            f"{hook_name} of {integration.type.name} returned {type(result).__name__}, "
            f"not {wanted.__name__} or None"
        )
    return result


def _arguments(hook_name: str, impl: pluggy.HookImpl, kwargs: dict[str, Any]) -> list[Any]:
    """The arguments ``impl`` takes, from the hook call's ``kwargs``."""
    try:
        return [kwargs[name] for name in impl.argnames]
    except KeyError as exc:
        raise TypeError(
            f"{hook_name} was called without its argument {exc.args[0]!r}, which "
            f"{_where(impl.function)} of plugin '{impl.plugin_name}' takes"
        ) from None


def _where(function: Any) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', function)}"


def _problems(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """What is wrong with a registered plugin's hooks, each naming the function."""
    hooks = sorted(n for n in vars(hookspecs) if n.startswith(HOOK_PREFIX))
    problems = []
    for caller in pm.get_hookcallers(plugin) or []:
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            where = _where(impl.function)
            if caller.spec is None and not impl.optionalhook:
                close = difflib.get_close_matches(caller.name, hooks, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                problems.append(
                    f"{where} is marked @hookimpl, but {caller.name} is not a hook{hint}"
                )
            elif impl.wrapper or impl.hookwrapper:
                problems.append(
                    f"{where} is a hook wrapper; the host awaits hooks itself, so wrappers "
                    "would see coroutines, not results: implement the hook plainly"
                )
    marker = f"{hookspecs.PROJECT}_impl"
    for attr in sorted(dir(plugin)):
        value = getattr(plugin, attr, None)
        if attr.startswith(HOOK_PREFIX) and inspect.isroutine(value) and not hasattr(value, marker):
            problems.append(
                f"{_where(value)} looks like a hook but is not marked @hookimpl, so it would "
                "never be called"
            )
    return problems
