"""``stop_task`` (plugin API): a background task is stopped for certain, also one that
swallows a cancellation, and one that will not stop is given up on, saying where it waits."""

import asyncio
import logging

import pytest

from vachat.plugin_api import stop_task


@pytest.mark.gen_test
async def test_a_task_that_swallows_one_cancellation_is_cancelled_again_and_ends():
    swallowed = []

    async def refresh_forever():  # a background loop whose step turned a cancellation into a timeout
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)

    task = asyncio.ensure_future(refresh_forever())
    await asyncio.sleep(0)
    assert await stop_task(task, timeout=5) is True
    assert swallowed and task.cancelled()


@pytest.mark.gen_test
async def test_a_task_that_will_not_stop_is_given_up_on_with_where_it_waits(caplog):
    release = asyncio.Event()

    async def never_stops():
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass

    task = asyncio.ensure_future(never_stops())
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="vachat.tasks"):
        assert await stop_task(task, timeout=0.2) is False
    [warning] = [r for r in caplog.records if r.getMessage() == "a task did not stop when cancelled"]
    assert "never_stops" in warning.awaiting[0]
    release.set()
    await task


@pytest.mark.gen_test
async def test_a_task_that_fails_on_its_way_out_is_stopped_quietly():
    async def fails_when_cancelled():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("teardown failed") from None

    task = asyncio.ensure_future(fails_when_cancelled())
    await asyncio.sleep(0)
    assert await stop_task(task) is True and isinstance(task.exception(), RuntimeError)
    assert await stop_task(None) is True
