"""The hooks a plugin may implement. One bare, documented function per hook.

Implement a hook by defining a function of the same name decorated with
``vachat.plugin_api.hookimpl`` in your plugin module; take only the arguments you need.

Order: implementations run in plugin load order (the core first, then plugins sorted by
name). Isolation: a plugin whose hook raises is logged (``"<plugin> | <hook> failed"``) and the
other plugins' implementations still run; hooks that collect start-up declarations (routes,
events, permissions) disable a plugin that fails them, unless ``VACHAT_PLUGINS_STRICT`` is set.
Hooks may return awaitables where the docstring says so; the core awaits them.

A test (``tests/test_hookspecs.py``) fails if a hook here lacks a docstring.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("vachat")

# ---------------------------------------------------------------------------
# Declarations: collected once, when the application is built
# ---------------------------------------------------------------------------


@hookspec
def vachat_routes(app: Any) -> list[tuple]:
    """Return REST routes as ``(pattern, HandlerClass)`` or ``(pattern, HandlerClass, kwargs)``.

    Patterns are Tornado URL patterns. Namespace them by plugin name
    (``/api/<name>/…``); a pattern already taken by the core or an earlier plugin is refused
    and logged. Handlers should extend ``vachat.plugin_api.ApiHandler`` and declare each method
    with ``@endpoint(...)`` so the request is validated and the method appears in OpenAPI.

    :param app: the ``VachatApplication`` being built (settings, database, hub, …).
    """


@hookspec
def vachat_ws_events(app: Any) -> list[Any]:
    """Return WebSocket event handlers, each made with ``@ws_event("type", schema=…)``.

    A client frame ``{"type": "<type>", "id"?, "data"?}`` is validated against the event's
    schema and passed to the handler; its return value becomes the ``ack`` data. An event
    type already registered is refused and logged.

    :param app: the ``VachatApplication`` being built.
    """


@hookspec
def vachat_permissions() -> list[tuple[str, str]]:
    """Return the permissions this plugin introduces as ``(name, description)`` pairs.

    Names are dotted and start with the plugin's name (``example.write``). The admin role's
    ``*`` grants them; other roles get them by name.
    """


@hookspec
def vachat_metrics(registry: Any) -> None:
    """Register the plugin's Prometheus collectors on ``registry`` (a ``CollectorRegistry``).

    Name metrics ``vachat_<plugin>_…``. Called once per application.
    """


@hookspec
def vachat_health_checks(app: Any) -> dict[str, Any]:
    """Return extra ``/health`` checks: ``{name: async callable returning a dict}``.

    A check returns ``{"status": "ok"}`` or ``{"status": "down", "error": …}``; one that raises
    or reports anything but ok/disabled makes the server report degraded (503).
    """


# ---------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------


@hookspec
def vachat_startup(app: Any) -> Any:
    """Called once the database, broker and hub are ready, before the port opens.

    May return an awaitable. Start background tasks here and keep their handles.
    """


@hookspec
def vachat_shutdown(app: Any) -> Any:
    """Called on shutdown after sockets are closed and before the database closes.

    May return an awaitable. Stop background tasks started in ``vachat_startup``.
    """


# ---------------------------------------------------------------------------
# Who is calling
# ---------------------------------------------------------------------------


@hookspec
def vachat_actor_from_request(app: Any, headers: Any, remote_ip: str) -> Any:
    """Identify the caller of a REST request or WebSocket upgrade from its credentials.

    Return an ``Actor``, ``None`` when these credentials are not yours (another plugin may
    know them), or an awaitable of either. Raise ``Unauthorized`` / ``TokenExpired`` when the
    credentials are yours but invalid. The first non-``None`` answer, in plugin order, wins.

    :param headers: the request headers (``Authorization``, ``X-API-Key``, …). A WebSocket
        ``auth`` frame's token arrives as ``Authorization: Bearer <token>``.
    :param remote_ip: the client address (after trusted proxies).
    """


# ---------------------------------------------------------------------------
# Domain events: notifications, called after the fact; return values are ignored
# ---------------------------------------------------------------------------


@hookspec
def vachat_user_registered(app: Any, user: Any) -> Any:
    """A user account was created (``user`` is the stored model). May return an awaitable."""


@hookspec
def vachat_message_created(app: Any, message: Any) -> Any:
    """A chat message was stored and broadcast. May return an awaitable."""


@hookspec
def vachat_file_uploaded(app: Any, file: Any) -> Any:
    """An uploaded file was stored. May return an awaitable."""


@hookspec
def vachat_before_ai_request(app: Any, conversation: Any, messages: list[dict]) -> Any:
    """Inspect or edit the message list sent to the AI provider, in place.

    Called just before a generation starts; ``messages`` is the chat-completions style list
    of ``{"role", "content"}`` dicts. May return an awaitable.
    """
