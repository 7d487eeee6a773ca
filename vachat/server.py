"""Running one node: open the port, serve until SIGTERM/SIGINT, then drain and exit 0.

Shutdown order: stop accepting connections, close sockets with 1001, let in-flight
requests finish (capped by SHUTDOWN_GRACE), close plugins, broker, Redis and the database.
"""

from __future__ import annotations

import asyncio
import faulthandler
import ipaddress
import logging
import signal
import socket
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from .app import VachatApplication
from .config import Settings, redact_url
from .garbage_collection import SurvivorFreezer

__all__ = ["serve", "prepare_database", "bound_sockets", "PendingMigrations", "PortUnavailable"]

log = logging.getLogger("vachat.server")


class PendingMigrations(RuntimeError):
    """Production refuses to serve a schema older than the code."""


class PortUnavailable(RuntimeError):
    """The address and port to listen on cannot be had (taken, or not this machine's)."""


# Connections the kernel queues for a node busy with others (Tornado's own default).
LISTEN_BACKLOG = 128
# Connections taken from the kernel's queue in one turn of the IOLoop. Tornado takes up to its
# backlog (128) in one callback, and each connection costs a stream and a task: during a
# reconnect storm (a node restarted, 10,000 clients coming back) one callback held the loop
# for 13 ms and more, and every open socket's frames and pings waited behind it. What is left
# stays in the kernel's queue and is taken on the next turns, after the loop's other work.
# Four, not sixteen: at sixteen a turn still held the loop 10-19 ms in asyncio's debug mode
# (10,000 sockets connecting), and the connect rate did not fall with four (2,339 → 2,696
# sockets/s in one run each: a turn of the loop costs little next to a connection).
ACCEPTS_PER_TURN = 4


def bound_sockets(config: Settings) -> list[socket.socket]:
    """Bind the port first of all, so that a taken one stops start-up at once, before
    migrations. The sockets listen only when the node is ready to serve (``run_until_signalled``):
    until then a connection is refused, rather than left waiting behind migrations."""
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
                config.host or None, config.port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE):
            if (family, address[:2]) in seen:
                continue
            seen.add((family, address[:2]))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restarts reuse TIME_WAIT ports
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # IPv4 has its own socket
            sock.setblocking(False)
            sock.bind(address)
    except OSError as error:
        for sock in sockets:
            sock.close()
        raise PortUnavailable(
            f"cannot listen on {config.host or '*'}:{config.port} ({error.strerror or error}); "
            f"stop what holds it or choose another port with PORT") from None
    return sockets


def warn_about_production_settings(config: Settings) -> None:
    """Settings that work but are surely a mistake in production: said once, at start."""
    if not config.is_production:
        return
    host = urlsplit(config.public_url).hostname or ""
    if host == "localhost" or host.endswith(".localhost") or _is_loopback(host):
        log.warning("PUBLIC_URL is %s, which points at this machine: links in e-mails will not work "
                    "for anyone else; set PUBLIC_URL to the address users reach", config.public_url)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


class NodeServer(HTTPServer):
    """Tornado's HTTP server, taking at most ``ACCEPTS_PER_TURN`` connections per turn of the
    IOLoop. ``TCPServer.stop`` removes the handlers kept in ``_handlers`` and closes the
    sockets of ``_sockets``, as for its own accept handler (tornado.tcpserver, 6.x)."""

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = accept_in_turns(sock, self._handle_connection)


def accept_in_turns(sock: socket.socket, on_connection: Callable[[socket.socket, Any], None],
                    per_turn: int = ACCEPTS_PER_TURN) -> Callable[[], None]:
    """``tornado.netutil.add_accept_handler`` taking at most ``per_turn`` connections each time
    the listening socket is ready (it stays ready, so the loop comes back for the rest).
    Returns the function that stops accepting."""
    io_loop = IOLoop.current()
    removed = False

    def accept(fd: Any, events: int) -> None:
        for _ in range(per_turn):
            if removed:
                return
            try:
                connection, address = sock.accept()
            except BlockingIOError:
                return  # the queue is empty
            except ConnectionAbortedError:
                continue  # closed by its client while still queued
            on_connection(connection, address)

    def remove() -> None:
        nonlocal removed
        io_loop.remove_handler(sock)
        removed = True

    io_loop.add_handler(sock, accept, IOLoop.READ)
    return remove


def http_server(app: VachatApplication) -> HTTPServer:
    """The listening server. Every body is capped at ``MAX_JSON_BODY`` by the connection itself
    (a ``StreamingBodyHandler`` raises the cap for its own requests); a connection idle, or
    slow to send its headers, past ``HTTP_IDLE_TIMEOUT`` is closed, and one whose body has not
    arrived within ``HTTP_BODY_TIMEOUT`` is dropped."""
    config = app.config
    return NodeServer(app, max_body_size=config.max_json_body,
                      idle_connection_timeout=config.http_idle_timeout,
                      body_timeout=config.http_body_timeout)


async def run_until_signalled(app: VachatApplication, sockets: list[socket.socket], ready: Any = None) -> None:
    """Start, serve on ``sockets``, and on SIGTERM/SIGINT drain and close. Returns when fully
    stopped."""
    config = app.config
    # Before start(), which can take seconds (broker, plugins): a signal meanwhile must still
    # end in a drain and exit 0, not kill the process half-started.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await app.start()
    server = http_server(app)
    for sock in sockets:
        sock.listen(LISTEN_BACKLOG)
    server.add_sockets(sockets)
    # Everything start-up made (modules, schemas, plugins, compiled validators) lives as long
    # as the process, and so do most sockets: out of the collector's sight (see the module),
    # collections walk only what is new, so their pauses stay short.
    freezer = SurvivorFreezer(config.gc_full_collection_interval)
    freezer.start()
    log.info("listening", extra={"host": config.host, "port": config.port, "environment": config.env,
                                 "database": redact_url(config.database_url)})
    if ready is not None:
        ready()
    await stop.wait()
    log.info("shutting down", extra={"inflightRequests": app.inflight_requests})
    freezer.stop()
    server.stop()  # no new connections; requests already accepted carry on
    await app.shutdown()
    await server.close_all_connections()
    log.info("stopped")


def serve(config: Settings) -> None:
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a stuck node is doing.
    # Not over a handler already there (the benchmarks' census hooks answer SIGUSR1 too).
    if hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    sockets = bound_sockets(config)
    warn_about_production_settings(config)
    app = VachatApplication(config)
    prepare_database(app)
    asyncio.run(run_until_signalled(app, sockets))
