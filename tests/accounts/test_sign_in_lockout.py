"""Sign-in lock-outs belong to an (account, address) pair: a guesser locks out themselves, not
the account's owner; a slower per-account limit across addresses still slows a distributed
guess. Through the real server, with the in-memory limiter, or Redis's when
VACHAT_TEST_REDIS_URL is set (the same buckets: ``vachat.ratelimit``)."""

from __future__ import annotations

import pytest

from vachat.testing import assert_error, login

WRONG = "Wrong-Guess-77!"
# Five per (account, address) and per address, as shipped; a small account limit to reach.
LIMITS = {"rate_limit_auth": "5/900s", "rate_limit_auth_account": "8/3600s", "trusted_proxies": ["127.0.0.1/32"]}


def from_address(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}  # the test client is the trusted proxy


ATTACKER = from_address("203.0.113.66")


async def victim_of_five_wrong_guesses(fetch, make_user):
    """A new account that ``ATTACKER`` has just guessed wrong five times."""
    victim = await make_user()
    for _ in range(5):
        assert_error(await login(fetch, victim.email, WRONG, headers=ATTACKER), 401, "UNAUTHORIZED")
    return victim


@pytest.mark.gen_test
@pytest.mark.vachat(config=LIMITS)
async def test_a_guesser_locks_out_only_its_own_address(fetch, make_user):
    victim = await victim_of_five_wrong_guesses(fetch, make_user)
    # The guesser's pair is locked, even for the right password...
    locked = await login(fetch, victim.email, victim.password, headers=ATTACKER)
    assert_error(locked, 429, "RATE_LIMITED")
    assert int(locked.headers["Retry-After"]) >= 1
    # ...but the owner, from an address with no failures, signs in.
    assert (await login(fetch, victim.email, victim.password, headers=from_address("198.51.100.10"))).code == 200
    # A typo of the owner's is an ordinary 401, not a lock-out.
    assert_error(await login(fetch, victim.email, WRONG, headers=from_address("198.51.100.10")), 401, "UNAUTHORIZED")


@pytest.mark.gen_test
@pytest.mark.vachat(config=LIMITS)
async def test_refused_attempts_count_nowhere(fetch, make_user):
    victim = await victim_of_five_wrong_guesses(fetch, make_user)
    # Hammering the locked pair spends nothing of the account's own limit (8, 5 used).
    for _ in range(20):
        assert_error(await login(fetch, victim.email, WRONG, headers=ATTACKER), 429, "RATE_LIMITED")
    for number in range(3):
        assert_error(await login(fetch, victim.email, WRONG, headers=from_address(f"192.0.2.{number + 1}")),
                     401, "UNAUTHORIZED")
    assert_error(await login(fetch, victim.email, WRONG, headers=from_address("192.0.2.9")), 429, "RATE_LIMITED")


@pytest.mark.gen_test
@pytest.mark.vachat(config=LIMITS)
async def test_a_distributed_guess_meets_the_account_limit(fetch, make_user):
    victim, bystander = await make_user(), await make_user()
    for number in range(7):  # one failure from each of seven addresses: no pair nears its limit
        assert_error(await login(fetch, victim.email, WRONG, headers=from_address(f"10.0.0.{number + 1}")),
                     401, "UNAUTHORIZED")
    # While the account's limit has room, the right password from a clean address gets in
    # (and, being right, is given back).
    assert (await login(fetch, victim.email, victim.password, headers=from_address("198.51.100.10"))).code == 200
    assert_error(await login(fetch, victim.email, WRONG, headers=from_address("10.0.0.8")), 401, "UNAUTHORIZED")
    # Eight failures across addresses: the account is slowed for every address now.
    for address in ("10.0.0.9", "198.51.100.10"):
        limited = await login(fetch, victim.email, victim.password, headers=from_address(address))
        assert_error(limited, 429, "RATE_LIMITED")
        assert int(limited.headers["Retry-After"]) >= 1
    # Other accounts are untouched, even from the addresses that guessed.
    assert (await login(fetch, bystander.email, bystander.password, headers=from_address("10.0.0.1"))).code == 200


@pytest.mark.gen_test
@pytest.mark.vachat(config=LIMITS)
async def test_one_address_guessing_many_accounts_is_limited_per_address(fetch, make_user):
    user = await make_user()
    guesser = from_address("203.0.113.77")
    for number in range(5):
        assert_error(await login(fetch, f"someone{number}@example.test", WRONG, headers=guesser), 401, "UNAUTHORIZED")
    assert_error(await login(fetch, user.email, user.password, headers=guesser), 429, "RATE_LIMITED")
    assert (await login(fetch, user.email, user.password, headers=from_address("203.0.113.78"))).code == 200
