"""Client addresses behind a trusted proxy (issue #7, items 4 and 9), through the real server.

Item 9: ``X-Forwarded-For`` hops written ``ip:port``, ``[v6]`` or ``[v6]:port`` are the client,
not garbage that makes every client look like the proxy. Item 4: per-IP limits count an IPv6
client by its /64 and an IPv4-mapped address as the IPv4 address it maps.
"""

import pytest

from vachat.testing import assert_error, login

PROXY = {"trusted_proxies": "127.0.0.1"}


def forwarded(hop: str) -> dict[str, str]:
    return {"X-Forwarded-For": f"198.51.100.77, {hop}"}


async def session_ip(fetch, user, hop: str) -> str:
    """Sign in with ``hop`` as the last forwarded hop; the address the new session recorded."""
    signed_in = await login(fetch, user.email, user.password, headers=forwarded(hop))
    assert signed_in.code == 200, signed_in.body
    listing = await fetch("/api/auth/sessions",
                          headers={"Authorization": f"Bearer {signed_in.data['tokens']['accessToken']}"})
    assert listing.code == 200, listing.body
    (current,) = [session for session in listing.data if session["current"]]
    return current["ip"]


@pytest.mark.gen_test
@pytest.mark.vachat(config=PROXY)
@pytest.mark.parametrize("hop, client", [
    ("203.0.113.9", "203.0.113.9"),
    ("203.0.113.9:51234", "203.0.113.9"),
    ("[2001:db8::7]", "2001:db8::7"),
    ("[2001:db8::7]:443", "2001:db8::7"),
    ("2001:db8:0:0::7", "2001:db8::7"),
    (" \"[2001:db8::7]:443\" ", "2001:db8::7"),
    ("::ffff:203.0.113.9", "203.0.113.9"),
    ("[::ffff:203.0.113.9]:8080", "203.0.113.9"),
])
async def test_forwarded_hop_forms_name_the_client(fetch, make_user, hop, client):
    user = await make_user()
    assert await session_ip(fetch, user, hop) == client


@pytest.mark.gen_test
@pytest.mark.vachat(config=PROXY)
@pytest.mark.parametrize("hop", ["not-an-address", "203.0.113.9:port", "[2001:db8::7", "[2001:db8::7]x"])
async def test_a_hop_that_is_no_address_makes_the_proxy_the_client(fetch, make_user, hop):
    user = await make_user()
    assert await session_ip(fetch, user, hop) == "127.0.0.1"


@pytest.mark.gen_test
@pytest.mark.vachat(config={**PROXY, "rate_limit_global": "2/60s"})
async def test_ports_do_not_split_one_client_into_many_buckets(fetch):
    for port in (1001, 1002):
        assert (await fetch("/api/auth/me", headers=forwarded(f"203.0.113.20:{port}"))).code == 401
    assert_error(await fetch("/api/auth/me", headers=forwarded("203.0.113.20:1003")), 429, "RATE_LIMITED")
    # Another client behind the same proxy has its own bucket: the proxy is not the client.
    assert (await fetch("/api/auth/me", headers=forwarded("[2001:db8::20]:1001"))).code == 401


# -- item 4: IPv6 by /64, IPv4-mapped as IPv4 ----------------------------------------------


async def failed_logins(fetch, addresses: list[str]) -> list[int]:
    codes = []
    for number, address in enumerate(addresses):
        response = await login(fetch, f"nobody{number}@example.test", "Wrong-Password-1!",
                               headers={"X-Forwarded-For": address})
        codes.append(response.code)
    return codes


@pytest.mark.gen_test
@pytest.mark.vachat(config={**PROXY, "rate_limit_auth": "5/900s"})
async def test_one_ipv6_64_shares_the_login_bucket(fetch):
    addresses = [f"2001:db8:aa:bb:{index:x}::{index + 1:x}" for index in range(12)]
    codes = await failed_logins(fetch, addresses)
    assert codes[:5] == [401] * 5
    assert codes[5:] == [429] * 7, codes


@pytest.mark.gen_test
@pytest.mark.vachat(config={**PROXY, "rate_limit_auth": "5/900s"})
async def test_different_ipv6_64s_have_their_own_buckets(fetch):
    addresses = [f"2001:db8:aa:{index:x}::1" for index in range(12)]
    assert await failed_logins(fetch, addresses) == [401] * 12


@pytest.mark.gen_test
@pytest.mark.vachat(config={**PROXY, "rate_limit_auth": "5/900s"})
async def test_ipv4_mapped_addresses_count_as_ipv4(fetch):
    addresses = ["203.0.113.50", "::ffff:203.0.113.50", "[::ffff:203.0.113.50]:9", "203.0.113.50:80",
                 "::ffff:cb00:7132", "203.0.113.50"]
    codes = await failed_logins(fetch, addresses)
    assert codes == [401] * 5 + [429], codes
