"""Finding, ordering, enabling and calling plugins (on pluggy).

Built-in features and third-party extensions load the same way: through the ``vachat.plugins``
entry-point group. ``CORE_PLUGINS`` are the core's own hook implementations (accounts, for
instance) and always load first. Everything else loads sorted by name, so hooks run in a
defined order; a plugin that fails to import or to declare itself is logged as
``"<name> | <error>"`` and skipped, unless ``strict`` makes that fatal.

This module never imports a plugin's code at import time, and never lets one plugin's
exception escape into another plugin's hook call.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pluggy

from . import __version__, hookspecs

__all__ = ["PluginManager", "LoadedPlugin", "PluginLoadError", "ENTRY_POINT_GROUP", "CORE_PLUGINS"]

log = logging.getLogger("vachat.plugins")

ENTRY_POINT_GROUP = "vachat.plugins"
# The core's own hook implementations: (name, module path). Loaded before any plugin.
CORE_PLUGINS: tuple[tuple[str, str], ...] = (("accounts", "vachat.accounts.plugin"),)


class PluginLoadError(RuntimeError):
    """A plugin could not be loaded and ``strict`` mode is on."""


@dataclass
class LoadedPlugin:
    name: str
    version: str
    source: str  # "core", a distribution name, or "test" for plugins handed in directly
    module: Any = None
    enabled: bool = True
    error: str | None = None
    order: int = 0

    @property
    def directory(self) -> Path | None:
        path = getattr(self.module, "__file__", None)
        return Path(path).parent if path else None

    def _subdirectory(self, name: str) -> Path | None:
        explicit = getattr(self.module, f"{name.upper()}_DIR", None)
        if explicit:
            return Path(explicit)
        directory = self.directory
        candidate = directory / name if directory else None
        return candidate if candidate and candidate.is_dir() else None

    @property
    def migrations_dir(self) -> Path | None:
        """``<plugin package>/migrations`` (or the module's ``MIGRATIONS_DIR``)."""
        return self._subdirectory("migrations")

    @property
    def schemas_dir(self) -> Path | None:
        """``<plugin package>/schemas`` (or the module's ``SCHEMAS_DIR``), namespaced by name."""
        return self._subdirectory("schemas")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "source": self.source,
                "enabled": self.enabled, "error": self.error}


@dataclass
class Selection:
    """``VACHAT_PLUGINS``: plain or ``+name`` entries form an allow-list, ``-name`` disables."""

    allowed: set[str] = field(default_factory=set)
    denied: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> "Selection":
        selection = cls()
        for entry in entries:
            if entry.startswith("-"):
                selection.denied.add(entry[1:])
            elif entry not in ("*", "+*"):
                selection.allowed.add(entry.lstrip("+"))
        return selection

    def enables(self, name: str) -> bool:
        if name in self.denied:
            return False
        return not self.allowed or name in self.allowed


class PluginManager:
    """The plugins of one application and the ordered, failure-isolated way to call them."""

    def __init__(self, *, enabled: Iterable[str] = (), strict: bool = False) -> None:
        self.selection = Selection.parse(enabled)
        self.strict = strict
        self.pm = pluggy.PluginManager("vachat")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, LoadedPlugin] = {}

    # -- loading ---------------------------------------------------------------

    def load(self, extra: Iterable[tuple[str, Any]] = ()) -> None:
        """Load the core plugins, every enabled entry point, then ``extra`` ``(name, module)`` pairs.

        ``extra`` is how tests hand in plugins that are not installed; they obey the same
        enable/disable list and ordering.
        """
        for name, module_path in CORE_PLUGINS:
            self._register(LoadedPlugin(name, __version__, "core"), module_path)
        candidates: list[tuple[LoadedPlugin, Any]] = []
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            distribution = entry_point.dist.name if entry_point.dist else "unknown"
            version = entry_point.dist.version if entry_point.dist else "0"
            candidates.append((LoadedPlugin(entry_point.name, version, distribution), entry_point))
        for name, module in extra:
            candidates.append((LoadedPlugin(name, str(getattr(module, "__version__", "0")), "test"), module))
        for plugin, target in sorted(candidates, key=lambda pair: pair[0].name):
            if plugin.name in self.plugins:
                self._fail(plugin, f"another plugin is already named {plugin.name!r}")
                continue
            if not self.selection.enables(plugin.name):
                plugin.enabled = False
                self.plugins[plugin.name] = plugin
                log.info("%s | disabled by VACHAT_PLUGINS", plugin.name)
                continue
            self._register(plugin, target)

    def _register(self, plugin: LoadedPlugin, target: Any) -> None:
        plugin.order = len(self.plugins)
        self.plugins[plugin.name] = plugin
        try:
            if isinstance(target, str):
                module = importlib.import_module(target)
            elif isinstance(target, importlib.metadata.EntryPoint):
                module = target.load()
            else:
                module = target
            plugin.module = module
            plugin.version = str(getattr(module, "__version__", plugin.version))
            unknown = _unknown_hooks(module)
            if unknown:
                raise ValueError(f"implements hooks that do not exist: {', '.join(unknown)} "
                                 "(see vachat.hookspecs for the hook names)")
            self.pm.register(module, name=plugin.name)
        except Exception as error:  # an import error, a hook signature pluggy rejects, …
            self._fail(plugin, f"failed to load: {error!r}")

    def _fail(self, plugin: LoadedPlugin, message: str) -> None:
        if self.strict:
            raise PluginLoadError(f"{plugin.name} | {message}")
        log.error("%s | %s (skipped; set VACHAT_PLUGINS_STRICT=1 to make this fatal)", plugin.name, message)
        plugin.enabled = False
        plugin.error = message
        self.plugins.setdefault(plugin.name, plugin)
        if plugin.module is not None and self.pm.is_registered(plugin.module):
            self.pm.unregister(plugin.module)

    def disable(self, name: str, reason: str) -> None:
        """Take a plugin out after it failed a declaration hook (fatal when strict)."""
        self._fail(self.plugins[name], reason)

    @property
    def enabled(self) -> list[LoadedPlugin]:
        return sorted((p for p in self.plugins.values() if p.enabled), key=lambda p: p.order)

    def is_enabled(self, name: str) -> bool:
        plugin = self.plugins.get(name)
        return bool(plugin and plugin.enabled)

    # -- calling ---------------------------------------------------------------

    def _implementations(self, hook_name: str) -> list[tuple[LoadedPlugin, Any]]:
        hook = getattr(self.pm.hook, hook_name)
        found = []
        for impl in hook.get_hookimpls():
            plugin = self.plugins.get(impl.plugin_name)
            if plugin is not None and plugin.enabled:
                found.append((plugin, impl))
        return sorted(found, key=lambda pair: pair[0].order)

    def _invoke(self, impl: Any, kwargs: dict[str, Any]) -> Any:
        return impl.function(*(kwargs[name] for name in impl.argnames))

    def collect(self, hook_name: str, **kwargs: Any) -> list[tuple[LoadedPlugin, Any]]:
        """Call a declaration hook; a plugin whose implementation raises is disabled."""
        results = []
        for plugin, impl in self._implementations(hook_name):
            try:
                result = self._invoke(impl, kwargs)
            except Exception as error:
                log.exception("%s | %s failed", plugin.name, hook_name)
                self.disable(plugin.name, f"{hook_name} failed: {error!r}")
                continue
            if result is not None:
                results.append((plugin, result))
        return results

    async def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call a notification hook on every plugin; failures are logged, never raised."""
        for plugin, impl in self._implementations(hook_name):
            try:
                result = self._invoke(impl, kwargs)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("%s | %s failed", plugin.name, hook_name)

    async def first(self, hook_name: str, **kwargs: Any) -> Any:
        """The first non-``None`` answer in plugin order; exceptions propagate (e.g. 401s)."""
        for _plugin, impl in self._implementations(hook_name):
            result = self._invoke(impl, kwargs)
            if inspect.isawaitable(result):
                result = await result
            if result is not None:
                return result
        return None

    def describe(self) -> list[dict[str, Any]]:
        return [plugin.describe() for plugin in sorted(self.plugins.values(), key=lambda p: (p.source != "core", p.name))]


def _unknown_hooks(module: Any) -> list[str]:
    """Names marked ``@hookimpl`` that no hookspec declares: a typo would otherwise be ignored."""
    return sorted(
        name for name in dir(module)
        if getattr(getattr(module, name, None), "vachat_impl", None) is not None
        and not hasattr(hookspecs, name)
    )
