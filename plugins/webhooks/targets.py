"""Where a webhook may point: an ``http``/``https`` URL whose host resolves only to public
addresses.

A webhook makes the server send requests where a user says, so without this check any user
could reach what only the server can: its own loopback services, the private network, a cloud's
metadata endpoint (169.254.169.254). The check runs when a webhook is created or changed (a
clear 400 on ``url``) and again before every attempt, on the addresses the name resolves to
*then*: a name that resolved to a public address at creation and to a private one later (DNS
rebinding) is refused at delivery. Redirects are never followed, so a public receiver cannot
bounce a delivery inward. ``WEBHOOKS_ALLOW_PRIVATE=true`` lifts the address rule (development,
tests against a receiver on this machine).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

__all__ = ["TargetRefused", "check_url_shape", "check_addresses"]

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
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise TargetRefused(f"names a host that does not resolve ({host})") from error
    if allow_private:
        return
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not _is_public(address):
            raise TargetRefused(f"resolves to a non-public address ({address}); deliveries go only to public addresses")
