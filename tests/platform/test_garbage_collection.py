"""The node's garbage collection (``vachat.garbage_collection``): what survives is frozen out of
the collector's walk, and the periodic full collection frees what reference cycles kept."""

from __future__ import annotations

import contextlib
import gc
import json
import weakref
from typing import Iterator

import pytest

from vachat.garbage_collection import SurvivorFreezer
from vachat.testing import eventually


class Node:
    """Something that can be in a reference cycle."""

    def __init__(self) -> None:
        self.other: object = None


@contextlib.contextmanager
def started(interval: float = 3600) -> Iterator[SurvivorFreezer]:
    """A started ``SurvivorFreezer`` (no timer due during the test); the process's objects are
    handed back to the collector afterwards."""
    freezer = SurvivorFreezer(interval)
    freezer.start()
    try:
        yield freezer
    finally:
        freezer.stop()
        gc.unfreeze()


def walked(objects: list[object]) -> list[object]:
    """Those of ``objects`` that collections walk (``gc.get_objects`` lists all of them; frozen
    objects are left out)."""
    ids = {id(o) for o in gc.get_objects()}
    return [o for o in objects if id(o) in ids]


@pytest.mark.gen_test
async def test_survivors_are_frozen_and_the_periodic_collection_frees_what_cycles_kept():
    with started() as freezer:
        survivors = [Node() for _ in range(1000)]
        gc.collect(1)  # a collection of the middle generation: its survivors are frozen
        assert walked(survivors) == []

        first, second = survivors[0], survivors[1]
        first.other, second.other = second, first  # a cycle among frozen objects...
        gone = weakref.ref(first)
        del survivors, first, second  # ...which is all that holds them now
        gc.collect()
        assert gone() is not None  # no collection walks frozen objects

        assert freezer.collect_everything() >= 2
        assert gone() is None
        assert gc.get_freeze_count() > 0  # what survived is frozen again


@pytest.mark.gen_test
async def test_frozen_objects_are_still_freed_when_their_last_reference_goes():
    with started():
        kept = Node()
        gone = weakref.ref(kept)
        gc.collect(1)
        assert walked([kept]) == []
        del kept
        assert gone() is None  # reference counting frees frozen objects as any other


@pytest.mark.gen_test
async def test_interval_zero_leaves_the_collector_as_python_runs_it():
    with started(interval=0) as freezer:
        assert freezer._after_collection not in gc.callbacks
        survivor = Node()
        gc.collect(1)
        assert walked([survivor]) == [survivor]


@pytest.mark.gen_test(timeout=90)
async def test_a_serving_node_collects_everything_once_per_interval(server_process):
    server = server_process({"GC_FULL_COLLECTION_INTERVAL": "0.5", "LOG_LEVEL": "INFO"})
    await server.wait_ready()

    def collections():
        return [json.loads(line) for line in server.output().splitlines() if '"full garbage collection"' in line]

    done = await eventually(lambda: len(collections()) >= 2, what="two periodic full collections")
    assert done
    record = collections()[0]
    assert record["collected"] >= 0 and record["frozen"] > 0 and record["cpuMs"] >= 0
