"""The application factory: builds one ``VachatApplication`` from settings and plugins.

Construction is synchronous and side-effect free apart from reading files (plugins, schemas);
``start()`` connects what needs connecting and ``shutdown()`` drains and closes it again, in the
order a graceful drain needs. The application is what plugins are handed: it implements
``vachat.interfaces.App`` (config, db, hub, limiter, mailer, hooks, services, per-plugin
config and state, accounts); the rest of it is the core's own.

Declarations are checked while the application is built, plugin by plugin: a plugin whose
routes or events name a schema that does not exist or does not compile, or whose services
are misnamed, is disabled with that reason (fatal with ``VACHAT_PLUGINS_STRICT``), and the
plugins requiring it with it. The core's server modules name no domain plugin.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import ipaddress
import logging
import inspect
import os
import time
from types import SimpleNamespace
from typing import Any, Awaitable, Callable, Iterable, Mapping, TypeVar
from urllib.parse import urlparse

import tornado.web

from . import __version__
from .broker import make_broker
from .config import Settings
from .db import Database
from .events import EventRegistry, ServerEventRegistry
from .hub import Hub
from .interfaces import ServiceKey
from .logs import log_request
from .mail import make_mailer
from .metrics import Metrics
from .migrate import CORE_MIGRATIONS, MigrationSource, Migrations
from .plugin_config import PluginConfigError, resolve_plugin_config
from .plugin_manager import HookCaller, LoadedPlugin, PluginManager
from .rbac import Permission
from .ratelimit import make_rate_limiter
from .redis_client import RedisGuard, make_redis
from .resources import core_resource
from .schemas import SchemaError, SchemaRegistry
from .tasks import finish_within
from .threads import ThreadPool
from .errors import Unauthorized
from .actor import Actor
from .web import NotFoundHandler, QueryMemo

__all__ = ["VachatApplication", "make_app", "CORE_SCHEMAS"]

log = logging.getLogger("vachat.app")
T = TypeVar("T")

CORE_SCHEMAS = core_resource("schemas")
# How long one plugin's shutdown hook, or one step of closing (mail, broker, limiter, Redis,
# database), may take before the shutdown goes on without it (s), logging where it waits. Each
# has its own timeouts; this bounds the ones that have none. It is above the AI plugin's wait
# for replies being stored (10 s).
CLOSE_STEP_TIMEOUT = 15.0
# How much lower the hashing threads' CPU priority is than the IOLoop's: at nice 10 a thread
# weighs a tenth of a normal one, so the IOLoop's thread gets ~90 % of a core it shares with
# one of them, and preempts it as soon as it wakes.
HASH_THREADS_NICENESS = 10
# The hashing threads' time slice (ns; Linux 6.12+, see ThreadPool): the IOLoop's thread, woken
# on a core where one hashes, runs within 0.1 ms instead of after the rest of a default slice.
# A WebSocket ping's p99 under ten bcrypt-12 sign-ins a second: 2.85x the idle figure with the
# default slice, 1.2x with this one (bench/README.md, ninth round).
HASH_THREADS_SLICE_NS = 100_000


def unrecognised_credentials(headers: Any) -> str:
    """What is wrong with credentials no authentication plugin accepted."""
    if (headers.get("X-API-Key") or "").strip():
        return "Invalid API key"
    scheme = (headers.get("Authorization") or "").strip().partition(" ")[0]
    if scheme.lower() != "bearer":
        return "Unsupported authorization scheme; send Authorization: Bearer <token>"
    return "Invalid token"


class VachatApplication(tornado.web.Application):
    """A Tornado application plus the services every handler and plugin shares."""

    def __init__(self, config: Settings, *, extra_plugins: Iterable[tuple[str, Any]] = (),
                 only_plugins: Iterable[str] | None = None) -> None:
        self.config = config
        self.version = __version__
        self.started_at = time.time()
        self.shutting_down = False
        self.trusted_networks = [ipaddress.ip_network(n, strict=False) for n in config.trusted_proxies]
        self._inflight: set[Any] = set()
        self._drained = asyncio.Event()
        self._drained.set()

        self.plugins = PluginManager(enabled=config.plugins_enabled, strict=config.fail_on_plugin_errors)
        self.plugins.load(extra=[*_modules_named(config.plugin_modules), *extra_plugins], only=only_plugins)
        self.hooks = HookCaller(self.plugins, self)
        self._plugin_configs: dict[str, Mapping[str, Any]] = {}
        self._plugin_states: dict[str, SimpleNamespace] = {}
        self._services: dict[str, Any] = {}
        self.schemas = SchemaRegistry()
        self._load_schemas()
        self.metrics = Metrics()
        self.metrics.gauge_from("vachat_http_requests_in_flight", "HTTP requests accepted and not yet answered",
                                lambda: len(self._inflight))
        self.db = Database(config.database_url, config.database_pool_size, config.database_pool_timeout)
        # File I/O and SMTP run here, apart from the database threads, so slow work never
        # starves queries.
        self.work_threads = ThreadPool(config.executor_threads, "vachat-work")
        # bcrypt runs here: CPU-bound, and it lets go of the GIL, so what it competes with is
        # the IOLoop's thread for a core. As many hashes at once as this process has cores
        # (more would only queue in the kernel, beside the IOLoop), at a lower priority than
        # the IOLoop. With eight at normal priority on one core, a sign-in burst at cost 12 (a
        # quarter of a second of CPU each) took each its equal share of the core from the
        # IOLoop: a WebSocket ping's p99 went from ~5 to 20-50 ms (bench/event_loop.py).
        self.hash_threads = ThreadPool(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                       else os.cpu_count() or 1, "vachat-hash", niceness=HASH_THREADS_NICENESS,
                                       slice_ns=HASH_THREADS_SLICE_NS)
        self.query_memo = QueryMemo()  # parsed query strings (ApiHandler._parse_query)
        self.redis = make_redis(config.redis_url) if config.redis_url else None
        self.redis_guard = RedisGuard() if self.redis is not None else None
        self.limiter = make_rate_limiter(self.redis, self.redis_guard)
        self.mailer = make_mailer(config, self.run_blocking)
        self.broker = make_broker(self.redis, self.redis_guard)
        self.hub = Hub(self)
        self.permissions: dict[str, str] = {}
        #: Permission name → the roles it is granted to when first seen (``Permission.grant_to``).
        self.default_grants: dict[str, tuple[str, ...]] = {}
        self.events = EventRegistry()
        self.server_events = ServerEventRegistry()
        routes = self._collect_declarations()
        self.route_table = routes
        self._route_names = {}
        for pattern, handler, *_ in routes:
            self._route_names.setdefault(handler, pattern)
        self.plugins.collect("vachat_metrics", registry=self.metrics.registry, app=self)
        # Collected once, like every declaration: /health must not run (and on a failure
        # disable, or in strict mode fail on) plugin declaration code per request.
        self.health_checks = self.plugins.collect("vachat_health_checks", app=self)

        super().__init__(
            routes,
            default_handler_class=NotFoundHandler,
            log_function=log_request,
            # Pings are the hub's (vachat.pings: one timer for every socket), not Tornado's
            # (a task per socket).
            websocket_ping_interval=0,
            websocket_max_message_size=config.ws_max_message_size,
            serve_traceback=False,
            xsrf_cookies=False,
        )

    # -- construction ----------------------------------------------------------

    def _load_schemas(self) -> None:
        self.schemas.add_directory("core", CORE_SCHEMAS)
        self.schemas.compile_namespace("core")  # the core's own schemas must hold: fatal if not
        for plugin in self.plugins.enabled:
            if plugin.source == "core":
                continue
            try:
                if plugin.schemas_dir is not None:
                    self.schemas.add_directory(plugin.name, plugin.schemas_dir)
                    self.schemas.compile_namespace(plugin.name)
                config_schema = f"{plugin.name}/config"
                self._plugin_configs[plugin.name] = resolve_plugin_config(
                    plugin.name, self.config.plugin_config(plugin.name), self.config.environ,
                    self.schemas if config_schema in self.schemas else None, config_schema)
            except (SchemaError, PluginConfigError) as error:
                self.schemas.remove_namespace(plugin.name)
                self.plugins.disable(plugin.name, str(error))

    def _collect_declarations(self) -> list[tuple]:
        from .health import HEALTH_ROUTES
        from .asyncapi import ASYNCAPI_ROUTES
        from .docs_page import DOCS_ROUTES
        from .openapi import OPENAPI_ROUTES
        from .ws import CORE_EVENTS, CORE_SERVER_EVENTS, SocketHandler

        routes: list[tuple] = [*HEALTH_ROUTES, *OPENAPI_ROUTES, *ASYNCAPI_ROUTES, *DOCS_ROUTES, (r"/ws", SocketHandler)]
        for handler in CORE_EVENTS:
            self.events.register(handler, "core")
        for server_event in CORE_SERVER_EVENTS:
            self.server_events.register(server_event, "core")
        taken = {route[0] for route in routes}

        # Declarations are collected through the manager by name, not app.hooks: a plugin that
        # fails one is disabled (app.hooks only logs), and the answers come with their plugin.
        for plugin, declared in self.plugins.collect("vachat_permissions"):
            try:
                permissions = [Permission.of(entry) for entry in declared]
            except (TypeError, ValueError) as error:
                self.plugins.disable(plugin.name, f"vachat_permissions returned {error}")
                continue
            for permission in permissions:
                self.permissions.setdefault(permission.name, permission.description)
                self.default_grants.setdefault(permission.name, permission.grant_to)
        for plugin, declared in self.plugins.collect("vachat_services", app=self):
            self._add_services(plugin, dict(declared))
        declared_routes = self._checked(self.plugins.collect("vachat_routes", app=self), _route_schema_ids)
        declared_events = self._checked(self.plugins.collect("vachat_ws_events", app=self), _event_schema_ids)
        declared_server_events = self._checked(self.plugins.collect("vachat_server_events", app=self),
                                               _server_event_schema_ids)
        # A plugin disabled by a later check (or as a requirement of one) contributes nothing.
        for name in [name for name in self._services if not self.plugins.is_enabled(name.partition(".")[0])]:
            del self._services[name]
        for plugin, declared in declared_routes:
            if not plugin.enabled:
                continue
            for route in declared:
                if route[0] in taken:
                    log.error("%s | route %s is already taken; refused", plugin.name, route[0])
                    continue
                taken.add(route[0])
                routes.append(tuple(route))
        for registry, declarations in ((self.events, declared_events), (self.server_events, declared_server_events)):
            for plugin, declared in declarations:
                if not plugin.enabled:
                    continue
                for item in declared:
                    try:
                        registry.register(item, plugin.name)
                    except (TypeError, ValueError) as error:
                        log.error("%s | %s; refused", plugin.name, error)
        return routes

    def _checked(self, declarations: list[tuple[LoadedPlugin, Any]],
                 schema_ids: Callable[[Any], Iterable[tuple[str, str]]]) -> list[tuple[LoadedPlugin, Any]]:
        """Keep the declarations whose schema ids all exist; disable a plugin naming one that
        does not (its schemas folder was not installed, or a typo), with the id and the cause."""
        kept = []
        for plugin, declared in declarations:
            missing = [(where, schema_id) for item in declared for where, schema_id in schema_ids(item)
                       if schema_id not in self.schemas]
            if missing:
                where, schema_id = missing[0]
                self.plugins.disable(plugin.name, (
                    f"{where} names schema {schema_id!r}, which does not exist (is "
                    f"schemas/{schema_id.partition('/')[2]}.json missing, or not installed as package data?)"))
                continue
            kept.append((plugin, declared))
        return kept

    def _add_services(self, plugin: LoadedPlugin, services: dict[str, Any]) -> None:
        for name in services:
            if name != plugin.name and not name.startswith(f"{plugin.name}."):
                self.plugins.disable(plugin.name, f"service {name!r} must be named {plugin.name} or {plugin.name}.<name>")
                return
        self._services.update(services)

    def route_of(self, handler: tornado.web.RequestHandler) -> str:
        """The URL pattern a handler serves (a bounded label for logs and metrics)."""
        return self._route_names.get(type(handler), "(unmatched)")

    def migrations(self) -> Migrations:
        sources = [MigrationSource("core", CORE_MIGRATIONS)]
        sources += [MigrationSource(p.name, p.migrations_dir) for p in self.plugins.enabled
                    if p.migrations_dir is not None and p.source != "core"]
        return Migrations(self.db.engine, sources)

    # -- services for handlers -------------------------------------------------

    async def resolve_actor(self, headers: Any, remote_ip: str) -> Actor | None:
        """Who presents these credentials, via the ``vachat_actor_from_request`` hook."""
        if not (headers.get("Authorization") or headers.get("X-API-Key")):
            return None
        actor = await self.hooks.vachat_actor_from_request(headers=headers, remote_ip=remote_ip)
        if actor is None:
            # Credentials were sent but no plugin knows them: say so, the same way on REST and
            # WebSocket, rather than "Authentication required" as if none had been sent.
            raise Unauthorized(unrecognised_credentials(headers))
        return actor

    def origin_allowed(self, origin: str, request: Any) -> bool:
        allowed = self.config.cors_origins
        if "*" in allowed or origin in allowed:
            return True
        # Same-origin pages (a front end served on this host) need no configuration.
        return urlparse(origin).netloc.lower() == (request.host or "").lower()

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run disk- or network-bound work (files, SMTP) off the IOLoop."""
        return await self.work_threads.run(functools.partial(fn, *args))

    async def run_hashing(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU-bound work that releases the GIL (bcrypt) off the IOLoop, one call per core
        at a time, at a lower CPU priority than the IOLoop's thread."""
        return await self.hash_threads.run(functools.partial(fn, *args))

    # -- the plugin API (vachat.interfaces.App) ----------------------------------

    def plugin_config(self, name: str) -> Mapping[str, Any]:
        """``[plugins.<name>]`` with its schema's defaults and environment variables applied."""
        if name not in self._plugin_configs:
            return self.config.plugin_config(name)
        return self._plugin_configs[name]

    def plugin_state(self, name: str) -> SimpleNamespace:
        """Plugin ``name``'s state on this application, created empty on first use."""
        state = self._plugin_states.get(name)
        if state is None:
            state = self._plugin_states[name] = SimpleNamespace()
        return state

    def service(self, key: ServiceKey[Any] | str) -> Any:
        name = key if isinstance(key, str) else key.name
        try:
            return self._services[name]
        except KeyError:
            owner = name.partition(".")[0]
            raise LookupError(f"no service {name!r}: the {owner!r} plugin that provides it "
                              f"{self.plugins._absence(owner)}") from None

    def has_service(self, key: ServiceKey[Any] | str) -> bool:
        return (key if isinstance(key, str) else key.name) in self._services

    def plugin_enabled(self, name: str) -> bool:
        return self.plugins.is_enabled(name)

    @property
    def accounts(self) -> Any:
        """The core's accounts service (``vachat.interfaces.Accounts``)."""
        return self.service("accounts")

    async def publish(self, room: str, event_type: str, data: Any) -> int:
        return await self.hub.publish(room, event_type, data)

    async def with_redis(self, source: str, operation: Callable[[Any], Awaitable[T]],
                         fallback: Callable[[], Any]) -> T:
        """``operation(redis)`` when Redis is configured and up, else ``fallback()``."""
        if self.redis is None or self.redis_guard is None:
            result = fallback()
        else:
            return await self.redis_guard.attempt(source, lambda: operation(self.redis), fallback)
        return await result if inspect.isawaitable(result) else result

    # -- request accounting for graceful shutdown ------------------------------

    def request_started(self, handler: Any) -> None:
        self._inflight.add(handler)
        self._drained.clear()

    def request_finished(self, handler: Any) -> None:
        self._inflight.discard(handler)
        if not self._inflight:
            self._drained.set()

    @property
    def inflight_requests(self) -> int:
        return len(self._inflight)

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Bind the database, start the broker and hub, run plugins' start-up hooks."""
        self.db.bind()
        self.db.start_checkpoints()
        await self.hub.start()
        await self.hooks.vachat_startup.notify()
        log.info("vachat started", extra={
            "version": self.version, "environment": self.config.env,
            "plugins": [p.name for p in self.plugins.enabled],
            "database": "postgresql" if self.db.is_postgres else "sqlite",
            "redis": "configured" if self.redis is not None else "embedded",
        })

    async def shutdown(self, grace: float | None = None) -> None:
        """Drain and close: sockets get 1001, in-flight requests finish (capped), then the
        plugins (one by one), mail, broker, limiter, Redis and database close, in that order,
        each given up on (and logged with where it waits) after ``CLOSE_STEP_TIMEOUT``."""
        if self.shutting_down:
            return
        self.shutting_down = True
        grace = self.config.shutdown_grace if grace is None else grace
        await self.hub.close_all(1001, "Server shutting down")
        if self._inflight:
            log.info("waiting for in-flight requests", extra={"requests": len(self._inflight), "graceSeconds": grace})
            try:
                await asyncio.wait_for(self._drained.wait(), grace)
            except asyncio.TimeoutError:
                log.warning("in-flight requests still running after the grace period",
                            extra={"requests": len(self._inflight)})
        # Each plugin bounded on its own: one that hangs must not keep the next from storing
        # its state (the AI plugin, its replies). They still use what closes below.
        await self.hooks.vachat_shutdown.notify_each_within(CLOSE_STEP_TIMEOUT)
        loop = asyncio.get_running_loop()
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("mail", self.mailer.drain),  # e-mails already promised (reset links) go out first
            ("broker", self.broker.close),
            ("rate limiter", self.limiter.close),
            ("redis", self.redis.aclose if self.redis is not None else None),
            ("database", lambda: loop.run_in_executor(None, self.db.close)),
        ]
        # Each step on its own: one failing or hanging must not leave the database open, nor
        # keep the process from exiting (a process manager would kill it mid-close instead).
        for name, step in steps:
            if step is None:
                continue
            try:
                await finish_within(step(), CLOSE_STEP_TIMEOUT, f"closing the {name}")
            except Exception:
                log.exception("closing the %s failed", name)
        self.work_threads.shutdown(wait=False)
        self.hash_threads.shutdown(wait=False)


def _modules_named(entries: Iterable[str]) -> list[tuple[str, Any]]:
    """``VACHAT_PLUGIN_MODULES`` entries (``name=module`` or ``module``) as (name, module)."""
    modules = []
    for entry in entries:
        name, _, path = entry.partition("=") if "=" in entry else (entry.rsplit(".", 1)[-1], "", entry)
        modules.append((name.strip(), importlib.import_module(path.strip())))
    return modules


def _route_schema_ids(route: tuple) -> Iterable[tuple[str, str]]:
    """``(where, schema id)`` of every schema a route's ``@endpoint`` methods name."""
    pattern, handler = route[0], route[1]
    for method in ("get", "post", "put", "patch", "delete"):
        spec = getattr(getattr(handler, method, None), "endpoint", None)
        if spec is None:
            continue
        for schema_id in (spec.body, spec.query, spec.response):
            if schema_id:
                yield f"{method.upper()} {pattern}", schema_id


def _event_schema_ids(handler: Any) -> Iterable[tuple[str, str]]:
    spec = getattr(handler, "ws_event", None)
    if spec is not None and spec.schema:
        yield f"event {spec.type!r}", spec.schema


def _server_event_schema_ids(event: Any) -> Iterable[tuple[str, str]]:
    schema = getattr(event, "schema", None)
    if schema:
        yield f"server event {getattr(event, 'type', event)!r}", schema


def make_app(config: Settings, *, extra_plugins: Iterable[tuple[str, Any]] = (),
             only_plugins: Iterable[str] | None = None) -> VachatApplication:
    return VachatApplication(config, extra_plugins=extra_plugins, only_plugins=only_plugins)
