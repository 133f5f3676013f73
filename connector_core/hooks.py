"""The plugin host: finds plugins, registers integration types, calls hooks safely.

Plugins come from the ``connector_core`` entry-point group, bundled ones included, and only
those the config names are loaded. Lifecycle hooks are called per integration instance on
the plugin that registered its type, under a timeout, and their coroutines are awaited here,
at the call site, so a slow or failing plugin is contained to its own call.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from connector_core import builtin_routing, hookspecs
from connector_core.hooktime import hook_deadline
from connector_core.integrations import Integration, IntegrationType

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "connector_core"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    module: str
    version: str | None
    loaded: bool
    hooks: tuple[str, ...]
    integration_types: tuple[str, ...]
    error: str | None = None


class PluginHost:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.pm.register(builtin_routing, name="builtin_routing")
        self.types: dict[str, IntegrationType] = {}
        self._owner: dict[str, object] = {}  # integration type name -> plugin that owns it
        self._entry_points: dict[str, EntryPoint] = {}
        self._errors: dict[str, str] = {}
        self._callers: dict[tuple[str, int], Any] = {}

    # -- discovery --------------------------------------------------------------------------

    def available(self) -> dict[str, EntryPoint]:
        """Installed plugins, by entry-point name (nothing is imported)."""
        if not self._entry_points:
            self._entry_points = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        return self._entry_points

    def load(self, names: Iterable[str] | None = None) -> None:
        """Import and register the named plugins (all installed ones when ``None``).

        A plugin that fails to import is reported by ``info()`` and ``errors``; the others load.
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
            except Exception as exc:  # a hook that does not match its spec, a type twice
                if self.pm.has_plugin(name):
                    self.pm.unregister(name=name)
                self._errors[name] = f"cannot register {entry.value}: {exc}"
                log.error("plugin %s failed to register: %s", name, exc)

    def register(self, plugin: ModuleType | object, name: str) -> None:
        """Register a plugin object and collect the integration types it provides."""
        self.pm.register(plugin, name=name)
        impls = self.pm.hook.connector_register_integration_types.get_hookimpls()
        for impl in impls:
            if impl.plugin is plugin:

                def register_type(kind: IntegrationType, _plugin: object = plugin) -> None:
                    if kind.name in self.types:
                        raise ValueError(f"integration type '{kind.name}' registered twice")
                    self.types[kind.name] = kind
                    self._owner[kind.name] = _plugin

                impl.function(register=register_type)
        self._callers.clear()

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

    # -- calling ----------------------------------------------------------------------------

    def _owner_caller(self, hook_name: str, integration: Integration) -> Any:
        owner = self._owner[integration.type.name]
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
        """
        caller = self._owner_caller(hook_name, integration)
        timeout = integration.routing.hook_timeout_seconds

        async def run() -> Any:
            results = caller(integration=integration, **kwargs)
            for result in results:
                if inspect.isawaitable(result):
                    result = await result
                if result is not None:
                    return result
            return None

        async with hook_deadline(timeout):
            return await run()

    def has_impl(self, hook_name: str, integration: Integration) -> bool:
        return bool(self._owner_caller(hook_name, integration).get_hookimpls())

    def decide(self, hook_name: str, integration: Integration, **kwargs: Any) -> Any:
        """Call a firstresult routing hook across every plugin (built-in answers last)."""
        return getattr(self.pm.hook, hook_name)(integration=integration, **kwargs)
