"""The in-memory limiter never forgets a live sign-in bucket (issue #7, item 3).

The table's size is driven down (1,000 keys instead of 100,000) so the flood that fills it is
1,500 requests rather than 100,500; everything else is the real server and the real limiter.
"""

import asyncio

import pytest

from vachat.config import Rate
from vachat.ratelimit import MemoryRateLimiter
from vachat.testing import login

TABLE_SIZE = 1_000
FLOOD = TABLE_SIZE + 500
CONCURRENCY = 50


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.gen_test(timeout=60)
@pytest.mark.vachat(config={"trusted_proxies": "127.0.0.1", "rate_limit_auth": "5/900s",
                            "rate_limit_auth_account": "5/900s"})
async def test_a_locked_account_stays_locked_after_a_flood_of_addresses(app, fetch, make_user):
    app.limiter = limiter = MemoryRateLimiter(max_keys=TABLE_SIZE)
    victim = await make_user()

    def from_address(address: str) -> dict[str, str]:
        return {"X-Forwarded-For": address}

    for _ in range(5):
        assert (await login(fetch, victim.email, "Wrong-Guess-1!", headers=from_address("203.0.113.1"))).code == 401
    locked = await login(fetch, victim.email, victim.password, headers=from_address("203.0.113.2"))
    assert locked.code == 429, locked.body

    # The flood: failed sign-ins from 1,500 distinct addresses (to distinct accounts, so each
    # one counts under any policy), far more keys than the table holds.
    async def flood(number: int) -> int:
        address = f"10.{number // 65536}.{number // 256 % 256}.{number % 256}"
        response = await login(fetch, f"flood{number}@example.test", "Wrong-Guess-1!", headers=from_address(address))
        return response.code

    codes = []
    for start in range(0, FLOOD, CONCURRENCY):
        codes += await asyncio.gather(*(flood(n) for n in range(start, min(start + CONCURRENCY, FLOOD))))
    # The table was full (less the keys a refused attempt gave back: it counts nowhere)...
    assert len(limiter) > TABLE_SIZE - CONCURRENCY
    # ...and new keys were refused rather than live ones forgotten (every flood bucket is fresh:
    # a full table is the only reason for a 429 here).
    assert codes.count(429) > 0

    still_locked = await login(fetch, victim.email, victim.password, headers=from_address("203.0.113.3"))
    assert still_locked.code == 429, still_locked.body


@pytest.mark.gen_test
async def test_protected_keys_survive_a_flood_of_unprotected_ones():
    limiter = MemoryRateLimiter(max_keys=100, clock=FakeClock())
    login_rate = Rate(1, 900)
    assert (await limiter.hit("auth:login:account:victim", login_rate)).allowed
    for number in range(1_000):
        assert (await limiter.hit(f"global:10.0.{number // 256}.{number % 256}", Rate(1, 60))).allowed
    assert len(limiter) == 100
    assert not (await limiter.hit("auth:login:account:victim", login_rate)).allowed


@pytest.mark.gen_test
async def test_a_full_table_of_live_protected_keys_refuses_new_keys_until_they_expire():
    clock = FakeClock()
    limiter = MemoryRateLimiter(max_keys=50, clock=clock)
    rate = Rate(5, 60)
    # One account hit hard (its bucket stays live longest) at the old end, then the rest.
    for _ in range(5):
        await limiter.hit("auth:login:account:locked", rate)
    clock.advance(1)
    for number in range(49):
        assert (await limiter.hit(f"auth:login:ip:{number}", rate)).allowed

    refused = await limiter.hit("auth:login:ip:newcomer", rate)
    assert not refused.allowed and refused.retry_after > 0
    refused = await limiter.hit("global:newcomer", Rate(100, 60))
    assert not refused.allowed
    assert len(limiter) == 50

    # The one-hit buckets drain in 12 s; the locked one (5 hits) is live for 59 s more. Expired
    # keys behind a live one are found, and make room.
    clock.advance(13)
    assert (await limiter.hit("auth:login:ip:newcomer", rate)).allowed
    remembered = await limiter.hit("auth:login:account:locked", rate)
    assert remembered.allowed and remembered.remaining == 0  # a forgotten bucket would have 4 left


@pytest.mark.gen_test
async def test_ordinary_hits_leave_live_sign_in_buckets_alone_and_sign_in_hits_sweep_dead_ones():
    clock = FakeClock()
    limiter = MemoryRateLimiter(max_keys=1_000, clock=clock)
    for number in range(40):
        await limiter.hit(f"auth:login:ip:{number}", Rate(1, 900 if number % 2 else 10))
    order = list(limiter._protected)
    for number in range(100):  # requests and upgrades: no rotation of the sign-in buckets
        await limiter.hit(f"global:10.0.0.{number}", Rate(100, 60))
    assert list(limiter._protected) == order
    clock.advance(11)  # the 20 ten-second buckets are dead now; sign-in hits sweep them, 32 keys a hit
    await limiter.hit("auth:login:ip:new", Rate(1, 900))
    assert len(limiter._protected) < 41
    await limiter.hit("auth:login:ip:new", Rate(1, 900))
    assert len(limiter._protected) == 21 and all(int(key.rsplit(":", 1)[1]) % 2 for key in limiter._protected
                                                 if not key.endswith("new"))
