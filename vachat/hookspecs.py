"""The core's hooks: one bare, documented function per hook.

Implement a hook by defining a function of the same name decorated with
``vachat.plugin_api.hookimpl`` in your plugin module; take only the arguments you need.
Every hook that takes ``app`` is handed the ``vachat.plugin_api.App`` interface.

Plugins declare hooks of their own (``vachat_addhooks``), named ``<plugin>_<event>``
(``chat_message_created``); the core's are ``vachat_*`` and name no domain plugin.

Order: ``@hookimpl(tryfirst=True)`` implementations first, ``trylast=True`` ones last, the rest
in plugin load order (the core first, then plugins sorted by name); wrappers are refused at
load. Call a hook as ``app.hooks.<name>(…)`` (or ``.notify(…)``): arguments not in the spec
are the caller's ``TypeError``. Isolation: a plugin whose hook raises is logged (``"<plugin> | <hook> failed"``) and the
other plugins' implementations still run; hooks that collect start-up declarations (routes,
events, permissions, services) disable a plugin that fails them, unless
``VACHAT_PLUGINS_STRICT`` is set. Hooks may return awaitables where the docstring says so; the
core awaits them. A hook whose answer is one value says ``firstresult=True`` in its spec.

A test (``tests/platform/test_hookspecs.py``) fails if a hook here lacks a docstring.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client import CollectorRegistry

    from .actor import Actor
    from .exports import UserExport
    from .interfaces import App, HookRegistrar, MaybeAwaitable, Route

hookspec = pluggy.HookspecMarker("vachat")

# ---------------------------------------------------------------------------
# Declarations: collected once, when the application is built
# ---------------------------------------------------------------------------


@hookspec
def vachat_addhooks(pluginmanager: "HookRegistrar") -> None:
    """Declare the hooks this plugin offers to others.

    Called once, when the plugin loads and before any plugin registers its implementations.
    Call ``pluginmanager.add_hookspecs(module_or_class)`` with functions marked
    ``@vachat.plugin_api.hookspec``; every name must start with ``<plugin>_``. Other plugins
    implement them as usual; an implementation of a hook whose owner may be absent is marked
    ``@hookimpl(optionalhook=True)`` (it is then never called, and no error), while a name the
    loaded owner does not declare is a load failure (a typo).

    :param pluginmanager: a registrar with ``add_hookspecs(module_or_class)``.
    """


@hookspec
def vachat_routes(app: "App") -> "list[Route]":
    """Return REST routes as ``(pattern, HandlerClass)`` or ``(pattern, HandlerClass, kwargs)``.

    Patterns are Tornado URL patterns. Namespace them by plugin name
    (``/api/<name>/…``); a pattern already taken by the core or an earlier plugin is refused
    and logged. Handlers extend ``vachat.plugin_api.ApiHandler`` and declare each method with
    ``@endpoint(...)``: every schema id named there must exist, or the plugin does not load.
    """


@hookspec
def vachat_ws_events(app: "App") -> list[Callable[..., Awaitable[Any]]]:
    """Return WebSocket event handlers, each made with ``@ws_event("type", schema=…)``.

    A client frame ``{"type": "<type>", "id"?, "data"?}`` is validated against the event's
    schema and passed to the handler with an ``EventContext``; its return value becomes the
    ``ack`` data (or return a ``Reply``). An event type already registered is refused and
    logged; a schema id that does not exist stops the plugin from loading.
    """


@hookspec
def vachat_server_events(app: "App") -> list[Any]:
    """Return the frames this plugin sends to sockets, each made with
    ``vachat.plugin_api.server_event("type", "summary", schema=…, audience=…)``.

    They are listed with their schemas in the AsyncAPI document (``/api/asyncapi.json``), beside
    the client events of ``vachat_ws_events``. A schema id that does not exist stops the plugin
    from loading; a type already declared is refused and logged.
    """


@hookspec
def vachat_permissions() -> list[Any]:
    """Return the permissions this plugin introduces: ``Permission`` values (or
    ``(name, description)`` pairs).

    Names are dotted and start with the plugin's name or the resource it owns
    (``conversations.read_all``). The admin role's ``*`` grants them; other roles get them by
    name (``vachat roles grant ROLE PERMISSION``, the admin API), and the admin plugin validates
    role changes against this list. ``Permission("notes.write", grant_to=("user",))`` adds it
    to the named roles once, when a database first sees it; an operator's later revoke stays.
    """


@hookspec
def vachat_services(app: "App") -> Mapping[str, Any]:
    """Return the service objects this plugin publishes: ``{name: object}``.

    Names start with the plugin's name (``"chat"``, ``"chat.history"``). Other plugins look
    them up with ``app.service(name)`` (declare ``REQUIRES = ("chat",)`` in the module when the
    service is not optional). Collected before routes, so handlers built later may use them.
    """


@hookspec
def vachat_metrics(registry: "CollectorRegistry", app: "App") -> None:
    """Register the plugin's Prometheus collectors on ``registry`` (a ``CollectorRegistry``).

    Name metrics ``vachat_<plugin>_…``. Called once per application; keep the collectors in
    ``app.plugin_state(name)`` to update them later (several applications may share a process,
    each with its own registry).
    """


@hookspec
def vachat_health_checks(app: "App") -> dict[str, Callable[[], Awaitable[dict[str, Any]]]]:
    """Return extra ``/health`` checks: ``{name: async callable returning a dict}``.

    A check returns ``{"status": "ok"}`` or ``{"status": "down", "error": …}``; one that raises
    or reports anything but ok/disabled makes the server report degraded (503).
    """


@hookspec
def vachat_commands(commands: "argparse._SubParsersAction") -> None:
    """Add command-line commands to ``vachat`` / ``python run.py``.

    ``commands`` is the argparse sub-parser collection: ``parser = commands.add_parser(name,
    help=…)``, add arguments, then ``parser.set_defaults(handler=fn)`` where
    ``fn(app: App, args) -> int`` (the exit status). The application is built (plugins loaded,
    database bound, migrations not applied) before ``fn`` runs. Name commands after the
    plugin (``files reconcile``) so they cannot collide with the core's.
    """


# ---------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------


@hookspec
def vachat_startup(app: "App") -> "MaybeAwaitable[None]":
    """Called once the database, broker and hub are ready, before the port opens.

    May return an awaitable. Start background tasks here and keep their handles in
    ``app.plugin_state(name)``. Raise ``StartupRefused`` when the node cannot work (start-up
    stops, exit status 2); any other error is logged and start-up goes on.
    """


@hookspec
def vachat_shutdown(app: "App") -> "MaybeAwaitable[None]":
    """Called on shutdown after sockets are closed and in-flight requests drained, before the
    database closes.

    May return an awaitable. Stop background tasks started in ``vachat_startup`` and persist
    what must not be lost.
    """


# ---------------------------------------------------------------------------
# Who is calling
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def vachat_actor_from_request(app: "App", headers: Mapping[str, str], remote_ip: str) -> "MaybeAwaitable[Actor | None]":
    """Identify the caller of a REST request or WebSocket upgrade from its credentials.

    Return an ``Actor``, ``None`` when these credentials are not yours (another plugin may
    know them), or an awaitable of either. Raise ``Unauthorized`` / ``TokenExpired`` when the
    credentials are yours but invalid. The first non-``None`` answer, in plugin order, wins.

    :param headers: the request headers (``Authorization``, ``X-API-Key``, …). A WebSocket
        ``auth`` frame's token arrives as ``Authorization: Bearer <token>``.
    :param remote_ip: the client address (after trusted proxies).
    """


@hookspec
def vachat_socket_actors_changed(app: "App", sockets: list[Any]) -> Any:
    """These sockets' ``actor`` was just replaced on this node: their user's role, its
    permissions or their tier changed. Re-check what each socket was let into with its old
    permissions (rooms joined, subscriptions) and take it out of what it may no longer see.
    Runs on every node that holds such a socket, before the change's refresh returns there.
    May return an awaitable."""


# ---------------------------------------------------------------------------
# Users: notifications about the core's accounts
# ---------------------------------------------------------------------------


@hookspec
def vachat_user_registered(app: "App", user: dict[str, Any]) -> "MaybeAwaitable[None]":
    """A user account was created (``user`` as the API shows it). May return an awaitable."""


@hookspec
def vachat_user_deleting(app: "App", user_id: str) -> "MaybeAwaitable[None]":
    """A user is about to be deleted: remove everything of theirs that this plugin holds
    (rows, files on disk, live state). May return an awaitable.

    Every plugin that stores a user's data implements it. It runs before the account row goes,
    in plugin order, asked as ``app.hooks.vachat_user_deleting(user_id=…)``: raising an ``ApiError`` stops the deletion
    (the caller sees it); any other failure is logged and the other plugins still run. Make it
    idempotent: an operator may retry a deletion.
    """


@hookspec
def vachat_user_exporting(app: "App", user_id: str, export: "UserExport") -> Any:
    """A user asked for a copy of their data (``GET /api/users/me/export``): add what this
    plugin holds of theirs to ``export``. May return an awaitable.

    Add small documents with ``export.add_json("name.json", data)`` and large ones (file
    contents, long lists) with ``export.add_stream("folder/name", opener)``, where ``opener()``
    returns an async iterator of ``bytes``: it runs only when the archive reaches that entry,
    so nothing is held in memory. Leave out secrets (password hashes, signing keys). The core
    adds ``profile.json``; an ``ApiError`` raised here reaches the caller before anything was
    sent.
    """

