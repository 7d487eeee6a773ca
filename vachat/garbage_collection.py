"""Garbage collection for a node whose objects mostly live long (``SurvivorFreezer``).

Python 3.11's collector is not incremental: a full collection walks every object it tracks in
one go, on the IOLoop. A node's objects are mostly long-lived (an idle socket is about fifty
of them: its handler, stream, coroutines, futures), so a node holding 10,000 sockets tracks
about half a million, and each full collection held the loop for 150–700 ms. Python starts
one whenever the objects that survived since the last have grown by a quarter: while sockets
pile up (a deploy, a reconnect storm), again and again, with nothing to free.

So, once the node serves:

- start-up's objects, and from then on every object that survives a collection of the middle
  generation (it has survived two collections), are moved out of the collector's sight
  (``gc.freeze``): collections walk only what came since, and stay short;
- a frozen object is still freed as soon as its last reference goes (a closed socket, a
  finished request: see ``vachat.ws``); what no collection sees is garbage that reference
  cycles keep among frozen objects. Every ``GC_FULL_COLLECTION_INTERVAL`` seconds the frozen
  objects are handed back and one full collection frees that garbage, logged with what it
  found and took; then what survived is frozen again. That collection is the one long pause
  left, once per interval, whatever the node does meanwhile.

``GC_FULL_COLLECTION_INTERVAL=0`` leaves the collector as Python runs it (start-up's objects
still frozen).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

__all__ = ["SurvivorFreezer"]

log = logging.getLogger("vachat.server")


class SurvivorFreezer:
    """The policy above, for the running loop: ``start`` once the node serves, ``stop`` as it
    shuts down."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        gc.collect()
        gc.freeze()
        if self.interval > 0:
            self._timer = loop.call_later(self.interval, self._collect_on_time)
            gc.callbacks.append(self._after_collection)

    def stop(self) -> None:
        if self._after_collection in gc.callbacks:
            gc.callbacks.remove(self._after_collection)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def collect_everything(self) -> int:
        """Hand the frozen objects back, collect once, freeze the survivors: the number of
        objects found unreachable (what cycles kept since the last time)."""
        started, cpu_started = time.perf_counter(), time.thread_time()
        gc.unfreeze()
        found = gc.collect()  # _after_collection freezes what survived
        log.info("full garbage collection", extra={
            "collected": found, "frozen": gc.get_freeze_count(),
            "ms": round((time.perf_counter() - started) * 1000, 1),
            "cpuMs": round((time.thread_time() - cpu_started) * 1000, 1)})
        return found

    def _collect_on_time(self) -> None:
        self.collect_everything()
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._collect_on_time)

    def _after_collection(self, phase: str, info: dict[str, Any]) -> None:
        # After a collection of the middle or the oldest generation, its survivors are in the
        # oldest one and the younger ones are empty: freezing takes exactly the survivors.
        if phase == "stop" and info["generation"] >= 1:
            gc.freeze()
