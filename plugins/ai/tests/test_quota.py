"""The daily AI quota under concurrency, through the real server: each accepted request
reserves its prompt's estimate and a completion allowance (AI_MAX_REPLY_TOKENS) under a lock
on the user's row of the day, so a burst never runs more than the day has left, and each reply
settles to what it really cost. Runs on SQLite (the embedded pass) and PostgreSQL (the second)."""

from __future__ import annotations

import asyncio

import pytest

from vachat.testing import assert_error, eventually

from plugins.ai.models import AiUsage

from .helpers import ask, check_reply, connect, create_conversation, join, reply_frames

DAILY = 300
ALLOWANCE = 20
REQUESTS = 15
# 12 words, 59 characters: a prompt of 7 (the system prompt) + 15 tokens, an echoed reply of
# 13 tokens. Fifteen such requests cost 525 tokens: far over the day's 300.
QUESTION = "q{n:02d} " + "word " * 10 + "end"


def day_row(app, user_id):
    return app.db.run(lambda: AiUsage.get_or_none(AiUsage.user_id == user_id))


@pytest.mark.gen_test(timeout=120)
@pytest.mark.vachat(config={"plugin_sections": {"ai": {"echo_delay": 0, "daily_tokens": f"free={DAILY}",
                                                      "max_reply_tokens": ALLOWANCE}}})
async def test_concurrent_requests_never_run_more_than_the_day_has_left(app, fetch, make_user):
    alice = await make_user()  # tier free
    conversations = [(await create_conversation(fetch, user=alice))["id"] for _ in range(REQUESTS)]
    responses = await asyncio.gather(*(
        ask(fetch, cid, QUESTION.format(n=n), user=alice, expect=None) for n, cid in enumerate(conversations)))
    accepted = [cid for cid, response in zip(conversations, responses) if response.code == 201]
    for response in responses:
        if response.code != 201:
            assert_error(response, 429, "QUOTA_EXCEEDED")
    # Every accepted reply settles: nothing stays reserved, one generation each.
    row = await eventually(lambda: _settled(app, alice.id, len(accepted)), what="every reply settled")
    used = row.prompt_tokens + row.completion_tokens
    print(f"\n{REQUESTS} concurrent requests against free={DAILY}: {len(accepted)} accepted, "
          f"{REQUESTS - len(accepted)} refused; {used} tokens used")
    # Each reserves 22 + 20 and costs 35: seven reservations fit in 300 at once, and one
    # more when replies settled before the last requests arrived; never all fifteen.
    assert DAILY // (22 + ALLOWANCE) <= len(accepted) < REQUESTS
    assert used == 35 * len(accepted) <= DAILY

    async def roles():
        return [[m["role"] for m in (await fetch(f"/api/chat/conversations/{cid}/messages", user=alice)).data["items"]]
                for cid in conversations]

    expected = [["assistant", "user"] if cid in accepted else [] for cid in conversations]
    await eventually(lambda: _same(roles(), expected), what="a reply in every accepted conversation only")
    assert (await fetch("/api/ai/usage", user=alice)).data["used"] == used


async def _same(value, expected):
    return await value == expected


async def _settled(app, user_id, accepted):
    row = await day_row(app, user_id)
    return row if row is not None and row.reserved_tokens == 0 and row.generations == accepted else None


@pytest.mark.gen_test
@pytest.mark.vachat(config={"plugin_sections": {"ai": {"echo_delay": 0, "daily_tokens": "free=1000",
                                                      "max_reply_tokens": 16}}})
async def test_a_reply_is_cut_where_its_allowance_ends(app, fetch, ws_connect, make_user):
    alice = await make_user()
    cid = (await create_conversation(fetch, user=alice))["id"]
    socket = await connect(ws_connect, alice)
    await join(socket, cid)
    words = " ".join(f"w{n}" for n in range(40))
    await ask(fetch, cid, words, user=alice)
    stored = check_reply(await reply_frames(socket), cid)
    assert stored["metadata"]["finishReason"] == "length"
    assert ("Echo: " + words).startswith(stored["content"]) and len(stored["content"]) < len(words)
    assert stored["metadata"]["completionTokens"] <= 16
    row = await eventually(lambda: _settled(app, alice.id, 1), what="the reply settled")
    assert row.completion_tokens == stored["metadata"]["completionTokens"]
