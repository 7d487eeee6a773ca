"""Running one node: open the port, serve until SIGTERM/SIGINT, then drain and exit 0.

Shutdown order: stop accepting connections, close sockets with 1001, let in-flight
requests finish (capped by SHUTDOWN_GRACE), close plugins, broker, Redis and the database.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import Any

from tornado.httpserver import HTTPServer

from .app import VachatApplication
from .config import Settings, redact_url

__all__ = ["serve", "prepare_database", "PendingMigrations"]

log = logging.getLogger("vachat.server")


class PendingMigrations(RuntimeError):
    """Production refuses to serve a schema older than the code."""


def prepare_database(app: VachatApplication) -> None:
    """Apply pending migrations when allowed; otherwise refuse to start if any are pending."""
    try:
        _migrate_or_refuse(app)
    finally:
        # The check ran on this thread, which goes on to run the IOLoop and never queries
        # again: its connection must go back to the pool now. Kept, it left the database
        # threads one connection short (there is one per thread), and one of them waited for
        # it on every request it took until the pool's timeout failed the request.
        app.db.engine.close()


def _migrate_or_refuse(app: VachatApplication) -> None:
    migrations = app.migrations()
    pending = migrations.pending()
    if not pending:
        return
    if app.config.should_auto_migrate:
        applied = migrations.apply()
        log.info("applied pending migrations", extra={"migrations": applied})
        return
    listing = "; ".join(f"{owner}: {', '.join(names)}" for owner, names in pending.items())
    raise PendingMigrations(
        f"pending migrations ({listing}). Run `python run.py migrate` first, "
        "or set AUTO_MIGRATE=1 to apply them at start-up.")


def http_server(app: VachatApplication) -> HTTPServer:
    """The listening server. Every body is capped at ``MAX_JSON_BODY`` by the connection itself
    (a ``StreamingBodyHandler`` raises the cap for its own requests); a connection idle, or
    slow to send its headers, past ``HTTP_IDLE_TIMEOUT`` is closed, and one whose body has not
    arrived within ``HTTP_BODY_TIMEOUT`` is dropped."""
    config = app.config
    return HTTPServer(app, max_body_size=config.max_json_body,
                      idle_connection_timeout=config.http_idle_timeout,
                      body_timeout=config.http_body_timeout)


async def run_until_signalled(app: VachatApplication, ready: Any = None) -> None:
    """Start, listen, and on SIGTERM/SIGINT drain and close. Returns when fully stopped."""
    config = app.config
    # Before start(), which can take seconds (broker, plugins): a signal meanwhile must still
    # end in a drain and exit 0, not kill the process half-started.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await app.start()
    server = http_server(app)
    server.listen(config.port, config.host)
    # Everything start-up made (modules, schemas, plugins, compiled validators) lives as long
    # as the process: moved out of the collector's sight, full collections only walk what
    # requests and sockets create, so their pauses stay short.
    gc.collect()
    gc.freeze()
    log.info("listening", extra={"host": config.host, "port": config.port, "environment": config.env,
                                 "database": redact_url(config.database_url)})
    if ready is not None:
        ready()
    await stop.wait()
    log.info("shutting down", extra={"inflightRequests": app.inflight_requests})
    server.stop()  # no new connections; requests already accepted carry on
    await app.shutdown()
    await server.close_all_connections()
    log.info("stopped")


def serve(config: Settings) -> None:
    app = VachatApplication(config)
    prepare_database(app)
    asyncio.run(run_until_signalled(app))
