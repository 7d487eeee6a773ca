"""Finding, ordering, enabling and calling plugins (on pluggy).

Built-in features and third-party extensions load the same way: through the ``vachat.plugins``
entry-point group. ``CORE_PLUGINS`` are the core's own hook implementations (accounts, for
instance) and always load first. Everything else loads sorted by name; a plugin that fails to
import or to declare itself is logged as ``"<name> | <error>"`` and skipped, unless ``strict``
makes that fatal.

Hook order is pluggy's: ``@hookimpl(tryfirst=True)`` implementations first, ``trylast`` ones
last, the rest in registration order. pluggy calls the last registered first, so plugins are
registered in reverse load order: without ``tryfirst``/``trylast`` the core runs first, then
plugins by name. ``wrapper``/``hookwrapper`` implementations are refused at load: vachat awaits
each implementation in turn (hooks may be coroutines) and isolates their failures, which
pluggy's own calling does neither of (it stops at the first exception, and a ``firstresult``
hook would stop at the first coroutine, whatever it resolves to). A call's arguments are
checked against the hook's spec before any plugin runs: a caller's typo is the caller's
``TypeError``, never logged as some plugin's failure.

Loading runs in phases, so that the order plugins happen to load in never matters: import
every selected plugin, add the hook specs each declares (``vachat_addhooks``), register their
implementations, then check what only the whole set can tell: hooks nobody declares (typos)
and requirements (``REQUIRES = ("chat",)``) that are absent. A plugin failing a phase is
disabled with the reason, and so is every plugin requiring it.

This module never imports a plugin's code at import time, and never lets one plugin's
exception escape into another plugin's hook call.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pluggy

from . import __version__, hookspecs
from .config import StartupRefused
from .errors import ApiError
from .tasks import finish_within

__all__ = ["PluginManager", "LoadedPlugin", "PluginLoadError", "HookCaller", "BoundHook", "ENTRY_POINT_GROUP",
           "CORE_PLUGINS"]

log = logging.getLogger("vachat.plugins")

ENTRY_POINT_GROUP = "vachat.plugins"
# The core's own hook implementations: (name, module path). Loaded before any plugin.
CORE_PLUGINS: tuple[tuple[str, str], ...] = (("accounts", "vachat.accounts.plugin"),)


@functools.lru_cache(maxsize=1)
def installed_entry_points() -> tuple[tuple[importlib.metadata.EntryPoint, str, str], ...]:
    """Every ``vachat.plugins`` entry point installed, with its distribution's version and name.

    Read once per process: finding them parses every installed distribution's metadata (tens
    of milliseconds), and a plugin installed under a running process could not be imported
    into it cleanly anyway; it loads at the next start. (The test suite builds an application
    per test, each loading the plugins.)"""
    return tuple((entry_point, entry_point.dist.version if entry_point.dist else "0",
                  entry_point.dist.name if entry_point.dist else "unknown")
                 for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


# pluggy options vachat does not honour (see the module docstring): refused at load.
REFUSED_IMPL_OPTIONS = ("wrapper", "hookwrapper")


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
    #: Plugins this one needs (its module's ``REQUIRES``); checked once every plugin loaded.
    requires: tuple[str, ...] = ()
    #: Hook names this plugin declares for others (``vachat_addhooks``).
    declared_hooks: tuple[str, ...] = ()

    @property
    def directory(self) -> Path | None:
        path = getattr(self.module, "__file__", None)
        return Path(path).parent if path else None

    def _subdirectory(self, name: str) -> Path | None:
        explicit = getattr(self.module, f"{name.upper()}_DIR", None)
        if explicit:
            if not Path(explicit).is_dir():
                raise PluginLoadError(
                    f"its {name.upper()}_DIR {explicit} is not a folder (was the package installed "
                    f"without its {name}? list them as package data)")
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
                "enabled": self.enabled, "error": self.error, "requires": list(self.requires),
                "hooks": list(self.declared_hooks)}


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
        #: hook name → the plugin that declared it ("core" for ``vachat_*``).
        self.hook_owners: dict[str, str] = {
            name: "core" for name in dir(hookspecs) if name.startswith("vachat_")}
        self._arguments: dict[str, tuple[str, ...]] = {}
        self._argument_sets: dict[str, frozenset[str]] = {}
        # hook name → its enabled implementations in call order: every message sent asks for
        # several hooks' (a few µs each when listed afresh); emptied whenever a plugin is
        # registered, unregistered or disabled (``load``, ``_fail``).
        self._implementations_of: dict[str, list[tuple[LoadedPlugin, Any]]] = {}

    # -- loading ---------------------------------------------------------------

    def load(self, extra: Iterable[tuple[str, Any]] = (), *, only: Iterable[str] | None = None) -> None:
        """Load the core plugins, every enabled entry point, then ``extra`` ``(name, module)`` pairs.

        ``extra`` is how tests hand in plugins that are not installed; they obey the same
        enable/disable list and ordering. ``only`` (tests) restricts the installed plugins to
        the names given and what they require; ``extra`` always loads.
        """
        for name, module_path in CORE_PLUGINS:
            self._import(LoadedPlugin(name, __version__, "core"), module_path)
        installed: dict[str, tuple[LoadedPlugin, Any]] = {}
        for entry_point, version, distribution in installed_entry_points():
            installed.setdefault(entry_point.name, (LoadedPlugin(entry_point.name, version, distribution), entry_point))
        extras = [(LoadedPlugin(name, str(getattr(module, "__version__", "0")), "test"), module)
                  for name, module in extra]
        if only is None:
            candidates = [*installed.values(), *extras]
        else:
            wanted = set(only)
            candidates = [installed[name] for name in sorted(wanted) if name in installed] + extras
        for plugin, target in sorted(candidates, key=lambda pair: pair[0].name):
            if plugin.name in self.plugins:
                self._fail(plugin, f"another plugin is already named {plugin.name!r}")
                continue
            if not self.selection.enables(plugin.name):
                plugin.enabled = False
                self.plugins[plugin.name] = plugin
                log.info("%s | disabled by VACHAT_PLUGINS", plugin.name)
                continue
            self._import(plugin, target)
        if only is not None:
            self._import_requirements(installed)
        self._add_declared_hooks()
        self._register_all()
        self._check_requirements()
        self._check_hooks()
        self._implementations_of.clear()

    def _import(self, plugin: LoadedPlugin, target: Any) -> None:
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
            plugin.requires = tuple(getattr(module, "REQUIRES", ()))
            _ = plugin.migrations_dir, plugin.schemas_dir  # a declared folder that is missing fails here
        except Exception as error:  # an import error, a missing folder, …
            self._fail(plugin, f"failed to load: {error}" if isinstance(error, PluginLoadError)
                       else f"failed to load: {error!r}")

    def _import_requirements(self, installed: dict[str, tuple[LoadedPlugin, Any]]) -> None:
        """With ``only``: bring in what the chosen plugins require, transitively."""
        pending = True
        while pending:
            pending = False
            for plugin in list(self.enabled):
                for name in plugin.requires:
                    if name not in self.plugins and name in installed and self.selection.enables(name):
                        self._import(*installed[name])
                        pending = True

    def _add_declared_hooks(self) -> None:
        for plugin in self.enabled:
            declare = getattr(plugin.module, "vachat_addhooks", None)
            if declare is None or plugin.source == "core":
                continue
            registrar = _HookRegistrar(self, plugin)
            try:
                declare(pluginmanager=registrar)
            except Exception as error:
                self._fail(plugin, f"vachat_addhooks failed: {error}")
            plugin.declared_hooks = tuple(registrar.added)

    def _register_all(self) -> None:
        # Reverse load order: pluggy calls the last registered first (see the module docstring).
        for plugin in reversed(self.enabled):
            refused = [f"{name} ({option}=True)" for name, options in _hook_implementations(plugin.module)
                       for option in REFUSED_IMPL_OPTIONS if options.get(option)]
            if refused:
                self._fail(plugin, f"implements hooks as wrappers, which vachat does not support: "
                                   f"{', '.join(refused)} (hooks are awaited one by one; use a plain "
                                   "@hookimpl, with tryfirst=True or trylast=True to choose its place)")
                continue
            try:
                self.pm.register(plugin.module, name=plugin.name)
            except Exception as error:  # a hook signature pluggy rejects, …
                self._fail(plugin, f"failed to load: {error}")

    def _check_hooks(self) -> None:
        """A hook name nobody declares is a typo, unless marked optional for an absent owner."""
        for plugin in self.enabled:
            unknown = []
            for name, options in _hook_implementations(plugin.module):
                if name in self.hook_owners:
                    continue
                owner = next((p for p in self.plugins if name.startswith(f"{p}_")), None)
                if options.get("optionalhook") and not (owner and self.is_enabled(owner)):
                    continue
                unknown.append(name)
            if unknown:
                self._fail(plugin, f"implements hooks that no plugin declares: {', '.join(unknown)} "
                                   "(a typo? the core's are in vachat.hookspecs; mark an implementation of "
                                   "another plugin's hook @hookimpl(optionalhook=True) if it may be absent)")

    def _check_requirements(self) -> None:
        changed = True
        while changed:
            changed = False
            for plugin in self.enabled:
                missing = [name for name in plugin.requires if not self.is_enabled(name)]
                if missing:
                    self._fail(plugin, "requires " + ", ".join(
                        f"plugin {name!r}, which {self._absence(name)}" for name in missing))
                    changed = True

    def _absence(self, name: str) -> str:
        plugin = self.plugins.get(name)
        if plugin is None:
            return "is not installed"
        return f"failed to load ({plugin.error})" if plugin.error else "is disabled (VACHAT_PLUGINS)"

    def _fail(self, plugin: LoadedPlugin, message: str) -> None:
        if self.strict:
            raise PluginLoadError(f"{plugin.name} | {message}")
        log.error("%s | %s (skipped; set VACHAT_PLUGINS_STRICT=1 to make this fatal)", plugin.name, message)
        plugin.enabled = False
        plugin.error = message
        self._implementations_of.clear()
        self.plugins.setdefault(plugin.name, plugin)
        if plugin.module is not None and self.pm.is_registered(plugin.module):
            self.pm.unregister(plugin.module)

    def disable(self, name: str, reason: str) -> None:
        """Take a plugin out after it failed a declaration hook (fatal when strict); plugins
        that require it go too."""
        self._fail(self.plugins[name], reason)
        self._check_requirements()

    @property
    def enabled(self) -> list[LoadedPlugin]:
        return sorted((p for p in self.plugins.values() if p.enabled), key=lambda p: p.order)

    def is_enabled(self, name: str) -> bool:
        plugin = self.plugins.get(name)
        return bool(plugin and plugin.enabled)

    # -- calling ---------------------------------------------------------------

    def _caller(self, hook_name: str) -> Any:
        if hook_name not in self.hook_owners:
            raise LookupError(f"no plugin declares a hook named {hook_name!r}")
        return getattr(self.pm.hook, hook_name, None)

    def _implementations(self, hook_name: str) -> list[tuple[LoadedPlugin, Any]]:
        """The enabled plugins' implementations, in the order pluggy would call them (the
        caller must not change the list)."""
        found = self._implementations_of.get(hook_name)
        if found is not None:
            return found
        hook = self._caller(hook_name)
        found = []
        for impl in reversed(hook.get_hookimpls()) if hook is not None else ():
            plugin = self.plugins.get(impl.plugin_name)
            if plugin is not None and plugin.enabled:
                found.append((plugin, impl))
        self._implementations_of[hook_name] = found
        return found

    def is_firstresult(self, hook_name: str) -> bool:
        hook = self._caller(hook_name)
        return bool(hook is not None and hook.spec is not None and hook.spec.opts.get("firstresult"))

    def arguments(self, hook_name: str) -> tuple[str, ...]:
        """The argument names of a declared hook's spec (memoised: every hook call checks them,
        and specs are all added while loading, before the first call)."""
        known = self._arguments.get(hook_name)
        if known is None:
            hook = self._caller(hook_name)
            spec = hook.spec if hook is not None else None
            known = (*spec.argnames, *spec.kwargnames) if spec is not None else ()
            self._arguments[hook_name] = known
        return known

    def check_arguments(self, hook_name: str, kwargs: dict[str, Any]) -> None:
        """``TypeError`` naming the hook and the argument unless ``kwargs`` are its spec's."""
        names = self._argument_sets.get(hook_name)
        if names is None:
            names = self._argument_sets[hook_name] = frozenset(self.arguments(hook_name))
        if kwargs.keys() == names:  # every call that is right: one set comparison
            return
        expected = self.arguments(hook_name)
        unknown = [name for name in kwargs if name not in expected]
        missing = [name for name in expected if name not in kwargs]
        if unknown or missing:
            problems = ([f"unexpected argument{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}"]
                        if unknown else []) + \
                       ([f"missing argument{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))}"]
                        if missing else [])
            raise TypeError(f"hook {hook_name}: {'; '.join(problems)} "
                            f"(it takes {', '.join(expected) or 'no arguments'})")

    def _invoke(self, impl: Any, kwargs: dict[str, Any]) -> Any:
        return impl.function(*(kwargs[name] for name in impl.argnames))

    def collect(self, hook_name: str, **kwargs: Any) -> list[tuple[LoadedPlugin, Any]]:
        """Call a declaration hook; a plugin whose implementation raises is disabled."""
        self.check_arguments(hook_name, kwargs)
        results = []
        for plugin, impl in self._implementations(hook_name):
            if not plugin.enabled:  # disabled by an earlier answer in this same call
                continue
            try:
                result = self._invoke(impl, kwargs)
            except Exception as error:
                log.exception("%s | %s failed", plugin.name, hook_name)
                self.disable(plugin.name, f"{hook_name} failed: {error!r}")
                continue
            if result is not None:
                results.append((plugin, result))
        return results

    async def notify(self, hook_name: str, *, each_within: float | None = None, **kwargs: Any) -> None:
        """Call a notification hook on every plugin; failures are logged, never raised, but a
        ``StartupRefused`` (start-up must stop; a caller's wrong arguments are the caller's
        ``TypeError``). With ``each_within``, an implementation still running after that many
        seconds is logged and cancelled, and the next one called."""
        self.check_arguments(hook_name, kwargs)
        for plugin, impl in self._implementations(hook_name):
            try:
                result = self._invoke(impl, kwargs)
                if inspect.isawaitable(result):
                    if each_within is None:
                        await result
                    else:
                        await finish_within(result, each_within, f"{plugin.name} | {hook_name}")
            except StartupRefused:
                raise
            except Exception:
                log.exception("%s | %s failed", plugin.name, hook_name)

    async def call(self, hook_name: str, **kwargs: Any) -> Any:
        """Ask every plugin in order. ``ApiError``s reach the caller (a refusal); other
        exceptions are logged and that plugin skipped, except in ``firstresult`` hooks, whose
        answer is the first non-``None`` one and whose errors are the answer too (a 401)."""
        self.check_arguments(hook_name, kwargs)
        first_only = self.is_firstresult(hook_name)
        answers = []
        for plugin, impl in self._implementations(hook_name):
            try:
                result = self._invoke(impl, kwargs)
                if inspect.isawaitable(result):
                    result = await result
            except ApiError:
                raise
            except Exception:
                if first_only:
                    raise
                log.exception("%s | %s failed", plugin.name, hook_name)
                continue
            if result is not None:
                if first_only:
                    return result
                answers.append(result)
        return None if first_only else answers

    def describe(self) -> list[dict[str, Any]]:
        return [plugin.describe() for plugin in sorted(self.plugins.values(), key=lambda p: (p.source != "core", p.name))]


class BoundHook:
    """One hook with ``app`` filled in: ``await app.hooks.<name>(**kwargs)`` asks (``call``),
    ``.notify(**kwargs)`` tells, ``.implemented()`` says whether anyone listens."""

    def __init__(self, manager: PluginManager, app: Any, name: str) -> None:
        self._manager = manager
        self._app = app
        self.name = name

    def _with_app(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        # Hooks that take ``app`` get it from here; a few declarations (permissions) take none.
        if "app" in self._manager.arguments(self.name):
            return {"app": self._app, **kwargs}
        return kwargs

    async def __call__(self, **kwargs: Any) -> Any:
        return await self._manager.call(self.name, **self._with_app(kwargs))

    async def notify(self, **kwargs: Any) -> None:
        await self._manager.notify(self.name, **self._with_app(kwargs))

    async def notify_each_within(self, seconds: float, **kwargs: Any) -> None:
        """``notify``, each implementation given up on (logged, cancelled) after ``seconds``."""
        await self._manager.notify(self.name, each_within=seconds, **self._with_app(kwargs))

    def implemented(self) -> bool:
        return bool(self._manager._implementations(self.name))

    def implementations(self) -> list[Callable[..., Any]]:
        return [impl.function for _, impl in self._manager._implementations(self.name)]

    def __repr__(self) -> str:
        return f"<hook {self.name}>"


class HookCaller:
    """``app.hooks``: the plugin API's way to call hooks, with ``app`` filled in.

    ``app.hooks.chat_message_created`` is the hook as a ``BoundHook``; a name no loaded plugin
    declares is an ``AttributeError`` at once, naming the near ones. The string forms
    (``call("name", …)``) remain for a hook name that is data.
    """

    def __init__(self, manager: PluginManager, app: Any) -> None:
        self._manager = manager
        self._app = app

    def __getattr__(self, name: str) -> BoundHook:
        if name.startswith("_") or name not in self._manager.hook_owners:
            near = difflib.get_close_matches(name, self._manager.hook_owners, n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else " (the core's are vachat_*)"
            raise AttributeError(f"no loaded plugin declares a hook named {name!r}{hint}")
        bound = BoundHook(self._manager, self._app, name)
        # Kept as an attribute, so the next ``app.hooks.<name>`` skips ``__getattr__``: a
        # declared hook stays declared (``hook_owners`` only grows), and ``BoundHook`` asks the
        # manager afresh on every call.
        setattr(self, name, bound)
        return bound

    async def notify(self, hook_name: str, **kwargs: Any) -> None:
        await self.__getattr__(hook_name).notify(**kwargs)

    async def call(self, hook_name: str, **kwargs: Any) -> Any:
        return await self.__getattr__(hook_name)(**kwargs)

    def implemented(self, hook_name: str) -> bool:
        return self.__getattr__(hook_name).implemented()


class _HookRegistrar:
    """What ``vachat_addhooks`` receives: adds one plugin's hook specs, checking their names."""

    def __init__(self, manager: PluginManager, plugin: LoadedPlugin) -> None:
        self._manager = manager
        self._plugin = plugin
        self.added: list[str] = []

    def add_hookspecs(self, module_or_class: Any) -> None:
        names = [name for name in dir(module_or_class)
                 if getattr(getattr(module_or_class, name, None), "vachat_spec", None) is not None]
        if not names:
            raise ValueError(f"{module_or_class!r} has no function marked @hookspec")
        prefix = f"{self._plugin.name}_"
        for name in names:
            if not name.startswith(prefix):
                raise ValueError(f"hook {name!r} must be named {prefix}<event>")
            owner = self._manager.hook_owners.get(name)
            if owner is not None:
                raise ValueError(f"hook {name!r} is already declared by {owner}")
        self._manager.pm.add_hookspecs(module_or_class)
        for name in names:
            self._manager.hook_owners[name] = self._plugin.name
        self.added.extend(names)


def _hook_implementations(module: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(hook name, options)`` of every function in ``module`` marked ``@hookimpl``."""
    found = []
    for name in dir(module):
        options = getattr(getattr(module, name, None), "vachat_impl", None)
        if options is not None:
            found.append((options.get("specname") or name, options))
    return sorted(found)
