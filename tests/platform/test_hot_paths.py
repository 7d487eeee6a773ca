"""The pieces the hot paths are built from: the JSON encoder, the memo of parsed query strings
and the thread pool behind ``app.db.run`` and ``app.run_blocking``. Each is faster than what
it replaced; these tests hold it to the same behaviour."""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import os
import platform
import re
import sys
import threading
from pathlib import Path

import pytest

from tests.plugins import sample
from vachat.app import HASH_THREADS_SLICE_NS
from vachat.errors import ValidationFailed
from vachat.threads import ThreadPool
from vachat.web import QUERY_MEMO_MAX_LENGTH, QueryMemo
from vachat.wire import json_dumpb, json_dumps


# -- json_dumpb ------------------------------------------------------------------------


def test_datetimes_are_utc_with_milliseconds_and_z():
    naive = datetime.datetime(2026, 11, 29, 18, 0, 20, 123456)
    aware = datetime.datetime(2026, 11, 29, 19, 0, 20, 123456, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    assert json_dumpb({"at": naive, "also": aware}) == b'{"at":"2026-11-29T18:00:20.123Z","also":"2026-11-29T18:00:20.123Z"}'


@pytest.mark.parametrize("value", [
    {"big": 2 ** 70},  # past 64 bits: orjson refuses, the standard library writes it
    {1: "one", None: "none"},  # non-string keys, as the standard library writes them
    {"deep": functools.reduce(lambda inner, _: [inner], range(300), 1)},  # deeper than orjson goes
    {"set": {1}, "tuple": (1, 2), "text": "é ☃ 😀", "quote": '"</script>'},
])
def test_what_orjson_refuses_is_written_as_the_standard_library_writes_it(value):
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=list)
    assert json_dumpb(value) == expected.encode("utf-8")
    assert json_dumps(value) == expected


def test_a_lone_surrogate_is_escaped_so_the_bytes_stay_utf8():
    encoded = json_dumpb({"text": "a\ud800b"})
    encoded.decode("utf-8")  # valid UTF-8
    assert json.loads(encoded) == {"text": "a\ud800b"}


def test_a_value_no_encoder_can_write_is_a_type_error():
    with pytest.raises(TypeError):
        json_dumpb({"what": object()})


# -- QueryMemo -------------------------------------------------------------------------


def test_the_memo_parses_a_query_once_and_hands_out_copies():
    memo = QueryMemo()
    parsed = []

    def parse():
        parsed.append(1)
        return {"limit": 20, "tags": ["a"]}

    first = memo.get("chat/list", "limit=20&tags=a", parse)
    first["limit"] = 0
    first["tags"].append("changed")
    second = memo.get("chat/list", "limit=20&tags=a", parse)
    assert second == {"limit": 20, "tags": ["a"]} and len(parsed) == 1
    memo.get("other/schema", "limit=20&tags=a", parse)  # the schema is part of the key
    assert len(parsed) == 2


def test_refused_and_long_queries_are_not_remembered():
    memo = QueryMemo()
    calls = []

    def refuse():
        calls.append(1)
        raise ValidationFailed("Invalid query parameters")

    for _ in range(2):
        with pytest.raises(ValidationFailed):
            memo.get("s", "limit=x", refuse)
    long_query = "q=" + "x" * QUERY_MEMO_MAX_LENGTH
    for _ in range(2):
        memo.get("s", long_query, lambda: calls.append(2) or {})
    assert calls == [1, 1, 2, 2]


def test_the_memo_forgets_the_least_recently_used_query_first():
    memo = QueryMemo(size=2)
    parsed = []

    def parse_as(name):
        return lambda: parsed.append(name) or {"name": name}

    memo.get("s", "a", parse_as("a"))
    memo.get("s", "b", parse_as("b"))
    memo.get("s", "a", parse_as("a"))  # a is now the most recent
    memo.get("s", "c", parse_as("c"))  # b goes
    memo.get("s", "a", parse_as("a"))
    memo.get("s", "b", parse_as("b"))
    assert parsed == ["a", "b", "c", "b"]


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=[("sample", sample)])
async def test_a_remembered_query_answers_as_the_first_did_and_a_refused_one_stays_refused(fetch):
    answers = [await fetch("/api/sample/widgets?page=2&tag=a,b") for _ in range(2)]
    assert [a.code for a in answers] == [200, 200]
    assert answers[0].json["data"]["query"] == answers[1].json["data"]["query"] == {
        "page": 2, "limit": 20, "tag": ["a", "b"], "sortOrder": "desc"}
    refused = [await fetch("/api/sample/widgets?page=abc") for _ in range(2)]
    assert [r.code for r in refused] == [400, 400]


# -- ThreadPool ------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_calls_run_on_the_pool_threads_and_answer_results_and_errors():
    pool = ThreadPool(2, "test-pool")
    try:
        names = await asyncio.gather(*(pool.run(lambda: threading.current_thread().name) for _ in range(10)))
        assert set(names) <= {"test-pool-0", "test-pool-1"}
        with pytest.raises(ZeroDivisionError):
            await pool.run(lambda: 1 / 0)

        def stop():
            raise StopIteration

        with pytest.raises(RuntimeError):  # a future cannot carry StopIteration
            await pool.run(stop)
    finally:
        pool.shutdown()


@pytest.mark.gen_test
async def test_start_hands_the_call_over_before_anyone_awaits_and_its_future_answers():
    pool = ThreadPool(1, "test-pool")
    ran = threading.Event()
    try:
        future = pool.start(lambda: ran.set() or "done")
        assert await asyncio.get_running_loop().run_in_executor(None, ran.wait, 10)  # not awaited yet
        assert await future == "done"
        failing = pool.start(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            await failing
    finally:
        pool.shutdown()


@pytest.mark.gen_test
async def test_a_call_cancelled_before_it_starts_never_runs():
    pool = ThreadPool(1, "test-pool")
    gate = threading.Event()
    ran = []
    try:
        blocker = asyncio.ensure_future(pool.run(gate.wait))
        queued = asyncio.ensure_future(pool.run(lambda: ran.append("queued")))
        await asyncio.sleep(0)  # both are on the queue
        queued.cancel()
        gate.set()
        assert await blocker is True
        assert await pool.run(lambda: "after") == "after"  # the queue moved past the cancelled call
        assert ran == []
    finally:
        pool.shutdown()


@pytest.mark.gen_test
async def test_threads_start_only_when_none_is_idle_up_to_the_size():
    pool = ThreadPool(3, "test-pool")
    try:
        for _ in range(20):  # one after the other: one thread does it all
            await pool.run(lambda: None)
        assert len(pool._threads) == 1
        gate = threading.Event()
        waiting = [asyncio.ensure_future(pool.run(gate.wait)) for _ in range(5)]
        await asyncio.sleep(0)
        assert len(pool._threads) == 3  # all busy at once: as many as allowed, no more
        gate.set()
        assert await asyncio.gather(*waiting) == [True] * 5
    finally:
        pool.shutdown()


@pytest.mark.gen_test
async def test_the_thread_that_went_idle_last_takes_the_next_call():
    """Calls one after the other stay on one thread once several exist (its database
    connection keeps its page cache), instead of going round them in turn."""
    pool = ThreadPool(3, "test-pool")
    try:
        gate = threading.Event()
        busy = [asyncio.ensure_future(pool.run(gate.wait)) for _ in range(3)]
        await asyncio.sleep(0)
        assert len(pool._threads) == 3
        gate.set()
        await asyncio.gather(*busy)
        names = [await pool.run(lambda: threading.current_thread().name) for _ in range(30)]
        assert len(set(names)) == 1, names
    finally:
        pool.shutdown()


@pytest.mark.gen_test
@pytest.mark.skipif(not hasattr(threading, "get_native_id") or sys.platform != "linux",
                    reason="per-thread priorities are a Linux feature")
async def test_a_pool_with_niceness_runs_its_calls_at_a_lower_priority_than_the_ioloop():
    def own_niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    ioloop_niceness = own_niceness()
    pool = ThreadPool(1, "test-pool", niceness=5)
    try:
        assert await pool.run(own_niceness) == min(19, ioloop_niceness + 5)
        assert own_niceness() == ioloop_niceness  # the IOLoop's thread keeps its priority
    finally:
        pool.shutdown()


def _own_sched() -> tuple[int | None, int]:
    """This thread's time slice (ns; None where the kernel does not show it) and nice value."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/thread-self/sched").read_text().splitlines()
                      if ":" in line)
    except OSError:
        fields = {}
    slice_ns = next((int(value) for key, value in fields.items() if key.strip() == "se.slice"), None)
    return slice_ns, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _custom_slices_supported() -> bool:
    """Linux 6.12 and later, with its scheduler's per-thread figures shown in /proc."""
    release = tuple(int(part) for part in re.findall(r"\d+", platform.release())[:2])
    return sys.platform == "linux" and release >= (6, 12) and _own_sched()[0] is not None


@pytest.mark.gen_test
@pytest.mark.skipif(not _custom_slices_supported(), reason="custom time slices: Linux 6.12+, shown in /proc")
async def test_the_hashing_threads_run_in_a_short_slice_at_a_lower_priority(app):
    ioloop_slice, ioloop_niceness = _own_sched()
    assert await app.hash_threads.run(_own_sched) == (HASH_THREADS_SLICE_NS, min(19, ioloop_niceness + 10))
    assert _own_sched() == (ioloop_slice, ioloop_niceness)  # the IOLoop's thread keeps its own


@pytest.mark.gen_test
@pytest.mark.skipif(sys.platform != "linux", reason="SCHED_BATCH is a Linux policy")
async def test_a_batch_pool_runs_its_calls_under_sched_batch_and_the_ioloop_keeps_its_policy():
    def own_policy() -> int:
        return os.sched_getscheduler(threading.get_native_id())

    ioloop_policy = own_policy()
    pool = ThreadPool(1, "test-pool", batch=True)
    try:
        assert await pool.run(own_policy) == os.SCHED_BATCH
        assert own_policy() == ioloop_policy
    finally:
        pool.shutdown()


@pytest.mark.gen_test
@pytest.mark.skipif(sys.platform != "linux", reason="SCHED_BATCH is a Linux policy")
async def test_the_database_threads_run_under_sched_batch(app):
    assert await app.db.run(lambda: os.sched_getscheduler(threading.get_native_id())) == os.SCHED_BATCH


@pytest.mark.gen_test
async def test_shutdown_runs_on_exit_on_every_thread_and_refuses_later_calls():
    exited = []
    pool = ThreadPool(3, "test-pool", on_exit=lambda: exited.append(threading.current_thread().name))
    gate = threading.Event()
    busy = [asyncio.ensure_future(pool.run(gate.wait)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*busy)
    pool.shutdown()
    assert sorted(exited) == ["test-pool-0", "test-pool-1", "test-pool-2"]
    with pytest.raises(RuntimeError):
        await pool.run(lambda: None)
