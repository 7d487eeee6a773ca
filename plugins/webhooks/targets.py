"""Where a webhook may point: an ``http``/``https`` URL whose host resolves only to public
addresses.

A webhook makes the server send requests where a user says, so without this check any user
could reach what only the server can: its own loopback services, the private network, a cloud's
metadata endpoint (169.254.169.254). The check runs when a webhook is created or changed (a
clear 400 on ``url``) and again each time a delivery opens a connection: ``CheckedConnections``
resolves the name once, checks every address, and connects to one of exactly those addresses.
A name that resolved to a public address at creation and to a private one later (DNS
rebinding) is refused at delivery; and since nothing resolves the name a second time between
the check and the connection, a name whose answers alternate cannot pass the check with one
address and be reached at another. Redirects are never followed, so a public receiver cannot
bounce a delivery inward. ``WEBHOOKS_ALLOW_PRIVATE=true`` lifts the address rule (development,
tests against a receiver on this machine).
"""

from __future__ import annotations

import ipaddress
import socket
import typing
from typing import Awaitable, Callable
from urllib.parse import urlsplit

import httpcore

__all__ = ["TargetRefused", "check_url_shape", "check_addresses", "allowed_addresses", "CheckedConnections"]

_SCHEMES = ("http", "https")


class TargetRefused(Exception):
    """The URL may not receive deliveries; the message says why, for its owner."""


def check_url_shape(url: str) -> tuple[str, int]:
    """The host and port of a well-formed delivery URL, or ``TargetRefused``."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise TargetRefused(f"is not a valid URL ({error})") from None
    if parts.scheme.lower() not in _SCHEMES:
        raise TargetRefused("must be an http or https URL")
    if not parts.hostname:
        raise TargetRefused("must name a host")
    if parts.username or parts.password:
        raise TargetRefused("must not carry credentials")
    return parts.hostname, port or (443 if parts.scheme.lower() == "https" else 80)


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def check_addresses(url: str, allow_private: bool) -> None:
    """Refuse ``url`` unless every address its host resolves to now is public (blocking: DNS;
    run it off the IOLoop)."""
    host, port = check_url_shape(url)
    allowed_addresses(host, port, allow_private)


def allowed_addresses(host: str, port: int, allow_private: bool) -> list[str]:
    """The addresses ``host`` resolves to now, in the resolver's order, once every one of them
    is public (or ``allow_private``); ``TargetRefused`` otherwise. Blocking (DNS)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise TargetRefused(f"names a host that does not resolve ({host})") from error
    addresses: list[str] = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]
        address = ipaddress.ip_address(text)
        if not allow_private and not _is_public(address):
            raise TargetRefused(f"resolves to a non-public address ({address}); deliveries go only to public addresses")
        if text not in addresses:
            addresses.append(text)
    return addresses


class CheckedConnections(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that opens TCP connections only to checked addresses.

    ``resolve(host, port)`` returns the host's addresses once they pass the rule (or raises
    ``TargetRefused``); the connection goes to the first of them that accepts it. The request
    itself still names the host, so TLS checks the certificate against that name (and sends it
    as SNI) and a kept-alive connection serves only requests to the same host and port.
    """

    def __init__(self, resolve: Callable[[str, int], Awaitable[list[str]]],
                 inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._resolve = resolve
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: typing.Iterable[typing.Any] | None = None) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for address in await self._resolve(host, port):
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error  # the next address may answer
        assert failure is not None  # getaddrinfo never answers an empty list
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: typing.Iterable[typing.Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("names a Unix socket; deliveries go over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
