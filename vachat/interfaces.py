"""The typed interface a plugin is handed: what it may call on the application, and nothing else.

Every hook receives ``app: App`` and every handler reaches the same object as
``self.app``. These ``Protocol`` classes are the promise the core keeps to plugin authors
(``VachatApplication`` implements them); anything on the application that is not named here
is private and may change without notice.

This module holds types only: it must never import the rest of vachat at run time, so that
``hookspecs`` and ``plugin_api`` can both import it.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import (TYPE_CHECKING, Any, Awaitable, Callable, Generic, Mapping, Protocol, Sequence, TypeAlias,
                    TypeVar, overload)

if TYPE_CHECKING:  # pragma: no cover - imported for annotations only
    import asyncio

    from .config import Rate, Settings

__all__ = [
    "App", "Database", "Hub", "Limiter", "RateDecisionLike", "Mailer", "Hooks", "Hook", "Accounts", "ServiceKey",
    "HookRegistrar", "Route", "MaybeAwaitable",
]

T = TypeVar("T")
S = TypeVar("S")

#: What a notification hook returns: nothing, or an awaitable the core awaits.
MaybeAwaitable: TypeAlias = "T | Awaitable[T]"
#: A REST route as ``vachat_routes`` returns it: ``(pattern, HandlerClass)`` or
#: ``(pattern, HandlerClass, initialize_kwargs)``.
Route: TypeAlias = "tuple[str, type[Any]] | tuple[str, type[Any], dict[str, Any]]"


class HookRegistrar(Protocol):
    """What ``vachat_addhooks`` is handed: where a plugin declares the hooks it offers."""

    def add_hookspecs(self, module_or_class: object) -> None:
        """Add the ``@hookspec`` functions of a module or class; every name must start with
        ``<plugin>_``."""


class ServiceKey(Generic[S]):
    """The name a service is published under, typed with the ``Protocol`` it keeps.

    The plugin that publishes a service exports its key beside the ``Protocol`` (the chat
    plugin: ``plugins.chat.api.CHAT``, a ``ServiceKey[ChatService]``); a plugin using it calls
    ``app.service(CHAT)`` and gets a ``ChatService``, checked by mypy, instead of ``Any``.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"ServiceKey({self.name!r})"


class Database(Protocol):
    """The database, reached only from worker threads."""

    #: True on PostgreSQL, False on SQLite (for the rare query that must differ).
    is_postgres: bool

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` (Peewee queries) on a database thread and await it.

        A connection loss becomes a 503 ``UNAVAILABLE``; wrap several writes that must land
        together in ``with database.atomic():`` inside ``fn``.
        """

    def start(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """``run`` without a coroutine: ``fn`` is handed to a database thread now and the
        future its outcome is set on is returned; for code that settles several waiters from
        one call (a batch) without a task of its own. Raises ``Unavailable`` at once when the
        database is shutting down."""


class Hub(Protocol):
    """WebSocket rooms on this node, with delivery to every node through the broker."""

    async def publish(self, room: str, event_type: str, data: Any, *, exclude: Any = None) -> int:
        """Send ``{"type": event_type, "data": data}`` to every socket in ``room`` on every
        node; encoded and framed once. Returns how many local sockets it was handed to."""

    def publish_local(self, room: str, event_type: str, data: Any, *, exclude: Any = None) -> int:
        """Like ``publish`` but for this node's sockets only (replays, per-node state)."""

    def send(self, conn: Any, event_type: str, data: Any = None, id: Any = None) -> bool:
        """Send one event to one socket."""

    def join(self, conn: Any, room: str, *, hold: bool = False) -> Awaitable[None]:
        """Add a socket to a room; await it to be sure other nodes' events reach it. With
        ``hold``, the room's frames for this socket wait until ``release`` (answer a join with
        a snapshot first, then go live without a gap)."""

    def release(self, conn: Any, room: str, drop: Callable[[str, Any], "bool | None"] | None = None, *,
                seq: int | None = None) -> int:
        """Deliver, in order, the frames held for a socket joined with ``hold=True``, skipping
        those its snapshot carries: in a sequenced room the changes numbered up to ``seq``
        (also when they arrive later); other frames ``(type, data)`` for which ``drop``
        answers True. ``drop`` keeps filtering the room's unnumbered frames to that socket
        until it answers None (spent)."""

    def sequence_rooms(self, prefix: str,
                       read_after: Callable[[str, int], Awaitable[tuple[list[tuple[int, str, Any]], int]]]) -> None:
        """Make the rooms named ``prefix…`` sequenced: frames whose ``data.seq`` is an integer
        (a change numbered in its transaction) reach each local socket once and in order, and
        what this node misses (a broker outage, a lost publication) it reads back with
        ``read_after(room, seq)``: ``([(seq, type, data)…], the seq they bring it up to)``."""

    def watch(self, prefix: str, event_type: str, callback: Callable[[str, Any], None]) -> None:
        """Call ``callback(room, data)`` on the IOLoop for every ``event_type`` publication, from
        this node or another, to a room named ``prefix…`` that has members on this node, as it
        arrives (before any holding or ordering; a change of a sequenced room may be told more
        than once). For per-node state that follows other nodes' events, such as expiring a
        typing indicator whose node went away. Register at start-up; the callback must be quick
        and must not block."""

    def leave(self, conn: Any, room: str) -> None:
        """Take a socket out of a room."""

    def rooms_of(self, conn: Any) -> set[str]:
        """The rooms a socket is in."""

    def room_size(self, room: str) -> int:
        """How many sockets of this node are in ``room``."""

    @property
    def connection_count(self) -> int:
        """Sockets open on this node, authenticated or not (a property)."""

    async def disconnect(self, *, user_id: str | None = None, session_id: str | None = None,
                         code: int = 4401, reason: str = "") -> None:
        """Close every socket of a user or a session, on every node."""

    def on_control(self, op: str, handler: Callable[[dict[str, Any]], Any]) -> None:
        """Run ``handler(message)`` on this node when another node sends control message ``op``
        (every node hears control messages, whatever rooms it has). Register once, at start-up
        (``vachat_startup``); name ops after your plugin (``ai-stop``). The handler runs on the
        IOLoop and must not block: start a task for async work."""

    async def send_control(self, op: str, message: dict[str, Any]) -> None:
        """Send ``message`` to every *other* node's ``on_control`` handler for ``op`` (nothing
        without Redis: there are no other nodes). Act on this node yourself."""


class RateDecisionLike(Protocol):
    allowed: bool
    limit: int
    remaining: int
    retry_after: float


class Limiter(Protocol):
    """Rate limits shared by every node (Redis) or kept in memory (embedded)."""

    async def hit(self, key: str, rate: "Rate") -> RateDecisionLike:
        """Count one event against ``key``; the decision says whether it is allowed."""

    async def reset(self, key: str) -> None:
        """Forget ``key``'s count."""


class Mailer(Protocol):
    """E-mail: the console in development, SMTP when configured. Sends off the IOLoop."""

    async def send(self, to: str, subject: str, text: str, html: str | None = None) -> bool:
        """Send now; returns whether it was handed over."""

    def send_soon(self, to: str, subject: str, text: str, html: str | None = None) -> Any:
        """Send in the background (the answer need not wait); drained at shutdown."""


class Hook(Protocol):
    """One hook, ``app.hooks.<name>``, with ``app`` passed for you. Arguments are checked
    against the hook's spec before any plugin runs: a wrong name is a ``TypeError`` here."""

    async def __call__(self, **kwargs: Any) -> Any:
        """A question or a filter: implementations run in order (``tryfirst`` ones first,
        ``trylast`` ones last, the rest in plugin load order) and may refuse with an
        ``ApiError``, which reaches the caller. Any other exception is logged and that
        implementation skipped. Returns the list of non-``None`` answers, or for a hook whose
        spec says ``firstresult=True`` the first one (``None`` when nobody answered)."""

    async def notify(self, **kwargs: Any) -> None:
        """A notification (after the fact): every implementation runs in order; one that
        raises is logged and the others still run. Return values are ignored."""

    def implemented(self) -> bool:
        """Whether any enabled plugin implements this hook."""

    def implementations(self) -> list[Callable[..., Any]]:
        """The enabled plugins' implementing functions, in calling order: for the hook's owner
        to read what an implementation declared on itself (chat's ``acts_on``)."""


class Hooks(Protocol):
    """Calling hooks, the core's and the ones plugins declare: ``await
    app.hooks.chat_message_created.notify(conversation=…, message=…, actor=…)``. A hook name no
    loaded plugin declares is an ``AttributeError`` at once, naming the near ones."""

    def __getattr__(self, hook_name: str) -> Hook:
        """The hook named ``hook_name``."""

    async def notify(self, hook_name: str, **kwargs: Any) -> None:
        """``app.hooks.<hook_name>.notify(**kwargs)``, for a hook name held in a variable."""

    async def call(self, hook_name: str, **kwargs: Any) -> Any:
        """``app.hooks.<hook_name>(**kwargs)``, for a hook name held in a variable."""

    def implemented(self, hook_name: str) -> bool:
        """``app.hooks.<hook_name>.implemented()``, for a hook name held in a variable."""


class Accounts(Protocol):
    """The core's users, sessions and audit log, as plugins may use them."""

    async def get_user(self, user_id: str) -> dict[str, Any] | None:
        """The user as the API shows it (``id``, ``email``, ``firstName``, ``role``, …) or None."""

    async def get_users(self, user_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Several users at once, by id (ids that do not exist are left out)."""

    async def set_user_active(self, user_id: str, active: bool, *, actor_id: str | None = None,
                              request: Any = None) -> bool:
        """Enable or disable an account; disabling ends its sessions, keys and sockets on every
        node at once. Audited. Returns whether it changed. Disabling the last active holder of
        ``*`` raises ``Conflict``."""

    async def set_avatar_url(self, user_id: str, url: str | None) -> bool:
        """Set (or clear, with ``None``) the user's ``avatarUrl``, as the plugin that stores
        avatars serves them. Returns whether the user exists."""

    async def end_sessions(self, user_id: str, *, reason: str = "ended") -> int:
        """End every session of a user and close their sockets (4401). Returns how many."""

    async def invalidate_user(self, user_id: str) -> None:
        """After changing a user's role, tier or name: the next request reads the new state."""

    async def invalidate_role(self, role_name: str) -> None:
        """After changing a role's permissions: the next request and open sockets see them."""

    async def audit(self, action: str, *, user_id: str | None = None, actor_id: str | None = None,
                    request: Any = None, details: dict[str, Any] | None = None) -> None:
        """Record an audit entry (``<plugin>.<what>``); ``request`` (a handler or event context)
        fills in the caller's address and user agent. Never fails the caller."""

    # -- management: what an administration plugin needs ------------------------------
    # Changes below are audited with ``actor_id`` (default: ``request``'s caller) and
    # ``request``'s address and user agent. The last-administrator rule: no change may leave
    # no active user holding ``*`` (``Conflict``, 409). The delegation rule: a change made for
    # an actor (``request``'s caller, else ``actor_id``) never gives anyone more than that
    # actor holds, nor changes its own role, tier or role permissions (``Forbidden``, 403,
    # audited as ``access.escalation_refused``); with neither, the change is the operator's.

    async def get_user_by_email(self, email: str) -> dict[str, Any] | None:
        """The user with this address (any case), or None."""

    async def list_users(self, *, page: int = 1, limit: int = 20, search: str | None = None,
                         role: str | None = None, active: bool | None = None, tier: str | None = None,
                         sort_by: str = "createdAt", sort_order: str = "desc") -> tuple[list[dict[str, Any]], int]:
        """One page of users and the number matching: ``search`` is a case-insensitive
        substring of the e-mail, first, last, display or user name; ``sort_by`` is one of
        ``createdAt``, ``email``, ``lastLoginAt``, ``role``; ``sort_order`` ``asc``/``desc``."""

    async def update_user(self, user_id: str, *, role: str | None = None, tier: str | None = None,
                          is_active: bool | None = None, is_email_verified: bool | None = None,
                          actor_id: str | None = None, request: Any = None) -> dict[str, Any] | None:
        """Change the fields given (None: unchanged) in one transaction; the user after, or None
        when there is no such user. A new role takes effect on the next request; disabling ends
        sessions, keys and sockets on every node at once. ``ValidationFailed`` for an unknown
        role. Audited as ``user.role_changed``, ``user.disabled``/``user.enabled``,
        ``user.updated`` (tier, verified)."""

    async def delete_user(self, user_id: str, *, actor_id: str | None = None, request: Any = None) -> bool:
        """Delete an account and everything of it: disables it (sessions, keys and sockets end
        on every node), calls ``vachat_user_deleting`` so every plugin removes its data (an
        ``ApiError`` there stops the deletion and restores the active flag), then deletes the
        account's rows. Audit rows stay (they name the user id as plain text) and a
        ``user.deleted`` row is added. Returns False when there is no such user."""

    async def user_figures(self) -> dict[str, int]:
        """``{total, active24h, new7d}``: accounts; users with a session used (sign-in or token
        refresh) in the last 24 hours; accounts created in the last 7 days."""

    async def list_roles(self) -> list[dict[str, Any]]:
        """Every role (``id``, ``name``, ``description``, ``permissions``, ``isSystem``,
        ``userCount`` …), by name."""

    async def create_role(self, name: str, *, description: str = "", permissions: Sequence[str] = (),
                          actor_id: str | None = None, request: Any = None) -> dict[str, Any]:
        """Create a role. ``permissions`` must be declared ones (``App.permissions``) or ``*``
        (``ValidationFailed`` naming the others); a taken name is ``Conflict``. Audited
        (``role.created``)."""

    async def update_role(self, role_id: str, *, description: str | None = None,
                          permissions: list[str] | None = None, actor_id: str | None = None,
                          request: Any = None) -> dict[str, Any] | None:
        """Change a role's description and/or permissions (checked as in ``create_role``); the
        role after, or None when there is no such role. Holders see the change on their next
        request and on open sockets. Audited (``role.updated``)."""

    async def query_audit(self, *, page: int = 1, limit: int = 20, user_id: str | None = None,
                          action: str | None = None, since: Any = None,
                          until: Any = None) -> tuple[list[dict[str, Any]], int]:
        """One page of audit entries, newest first, and the number matching; ``since``
        (inclusive) and ``until`` (exclusive) are datetimes (naive means UTC)."""


class App(Protocol):
    """The application as a plugin sees it."""

    #: The validated settings (``config.env``, ``config.public_url`` …); read-only.
    config: "Settings"
    version: str
    #: Permission name → description, the core's and every plugin's.
    permissions: Mapping[str, str]
    db: Database
    hub: Hub
    limiter: Limiter
    mailer: Mailer
    hooks: Hooks

    @property
    def accounts(self) -> Accounts:
        """Users, sessions and the audit log (the core's accounts)."""

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU- or disk-bound work (hashing, files, SMTP) on a worker thread."""

    async def publish(self, room: str, event_type: str, data: Any) -> int:
        """``hub.publish`` without the keyword arguments: one event to a room, every node."""

    def plugin_config(self, name: str) -> Mapping[str, Any]:
        """The ``[plugins.<name>]`` section, with its schema's defaults and environment
        variables applied, validated at start-up."""

    def plugin_state(self, name: str) -> SimpleNamespace:
        """The per-application state of plugin ``name``: one namespace per application (tests
        run several), created empty on first use. Keep caches, tasks and backends here."""

    @overload
    def service(self, key: ServiceKey[S]) -> S: ...

    @overload
    def service(self, key: str) -> object: ...

    def service(self, key: ServiceKey[S] | str) -> S | object:
        """The service object a plugin published under ``key`` (the ``vachat_services`` hook);
        raises ``LookupError`` naming the plugin that would provide it when it is absent.

        Pass the owner's ``ServiceKey`` to get the service typed as its ``Protocol``; a bare
        name gives an ``object`` the caller must narrow."""

    def has_service(self, key: ServiceKey[Any] | str) -> bool:
        """Whether a service is published (an optional collaboration)."""

    def plugin_enabled(self, name: str) -> bool:
        """Whether plugin ``name`` is loaded and enabled."""

    async def with_redis(self, source: str, operation: Callable[[Any], Awaitable[T]],
                         fallback: Callable[[], T | Awaitable[T]]) -> T:
        """Run ``operation(redis_client)`` when Redis is configured and reachable, else (or when
        it fails) ``fallback()``; failures are recorded once for ``/health`` and the logs."""
