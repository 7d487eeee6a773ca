"""What a request says about its sender: the client address behind trusted proxies, the
subject per-IP limits count (IPv6 by /64), and whether a body follows.

This module must never believe ``X-Forwarded-For`` from a peer that is not a trusted proxy:
a client could otherwise spoof its way past rate limits.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any

from tornado.httputil import HTTPHeaders

# One IPv6 /64 is what an ISP hands a single customer (RFC 6177); counting its addresses apart
# would give one client 2^64 buckets.
IPV6_LIMIT_PREFIX = 64

__all__ = ["client_ip", "limit_subject", "normalize_ip", "forwarded_hop_address", "declares_body",
           "declared_length", "BODILESS_METHODS", "is_loopback", "in_networks"]

# A Content-Length of more digits than this is malformed: no body is that long (2**63 has 19
# digits), and Python's int() refuses a string of over 4,300 digits with an error.
MAX_CONTENT_LENGTH_DIGITS = 19
# ASCII digits only: "²".isdigit() is true, and int("²") fails.
_CONTENT_LENGTH = re.compile(rf"[0-9]{{1,{MAX_CONTENT_LENGTH_DIGITS}}}")


def client_ip(remote_ip: str, headers: HTTPHeaders, trusted: list[Any]) -> str:
    """The client's address: the peer, or the last untrusted hop of ``X-Forwarded-For`` when
    the peer is a trusted proxy. A client cannot spoof its way past rate limits otherwise.

    Hops may be written ``ip``, ``ip:port``, ``[v6]`` or ``[v6]:port``; IPv4-mapped IPv6
    addresses (``::ffff:192.0.2.1``) come back as IPv4. A hop that is no address at all makes
    the proxy itself the client: the chain cannot be believed past it."""
    peer = normalize_ip(remote_ip) or remote_ip
    if not trusted or not in_networks(peer, trusted):
        return peer
    hops = [hop for hop in headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        address = forwarded_hop_address(hop)
        if address is None:
            return peer
        if not in_networks(address, trusted):
            return address
    first = forwarded_hop_address(hops[0]) if hops else None
    return first or peer


# ``[v6]``, ``[v6]:port`` and ``v4:port``; a bare address (v4 or v6) needs no pattern.
_BRACKETED_HOP = re.compile(r"^\[(?P<address>[^\]]+)\](?::[0-9]{1,5})?$")


_V4_PORT_HOP = re.compile(r"^(?P<address>[0-9.]+):[0-9]{1,5}$")


def forwarded_hop_address(hop: str) -> str | None:
    """The address of one ``X-Forwarded-For`` hop in any of the forms proxies write, or None."""
    text = hop.strip().strip('"')
    match = _BRACKETED_HOP.match(text) or _V4_PORT_HOP.match(text)
    return normalize_ip(match.group("address") if match else text)


# Parsing an address costs ~5 us; every request and upgrade asks, mostly for the same few
# addresses (and the answers are pure). Bounded: a flood of distinct ones only evicts.
@functools.lru_cache(maxsize=4096)
def normalize_ip(text: str) -> str | None:
    """``text`` as a canonical address string (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


@functools.lru_cache(maxsize=4096)
def limit_subject(address: str) -> str:
    """What per-IP limits count ``address`` under: IPv4 by address, IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # no address (a Unix socket): one bucket, as before
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_LIMIT_PREFIX), strict=False))
    return str(ip)


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(normalize_ip(address) or address).is_loopback
    except ValueError:
        return False


def in_networks(address: str, networks: list[Any]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


# Methods whose requests have no business carrying a body (RFC 9110 gives it no meaning): one
# is refused before a byte of it is read.
BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def declared_length(headers: HTTPHeaders) -> int | None:
    """The body length ``Content-Length`` declares, ``None`` without one; ``ValueError`` when
    it is not one plain decimal number. Repeats of the same number, which some proxies make
    (``5, 5``), count as that number, as Tornado reads them."""
    value = headers.get("Content-Length")
    if value is None:
        return None
    numbers = {piece.strip() for piece in value.split(",")}
    if len(numbers) != 1:
        raise ValueError("Content-Length gives different lengths")
    number = numbers.pop()
    if not _CONTENT_LENGTH.fullmatch(number):
        raise ValueError("Content-Length is not a decimal number of at most "
                         f"{MAX_CONTENT_LENGTH_DIGITS} digits")
    return int(number)


def declares_body(request: Any) -> bool:
    """Whether a request says a body follows (a non-zero Content-Length, or any transfer coding)."""
    headers = request.headers
    length = headers.get("Content-Length")
    return "Transfer-Encoding" in headers or (length is not None and length.strip() not in ("", "0"))
