"""Prometheus metrics of one application, on its own registry (so several apps in one test
process never collide), rendered in the text exposition format at ``/metrics``."""

from __future__ import annotations

import gc
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = ["Metrics"]

# Latency buckets (s): a JSON API answers in milliseconds; the tail shows lock or pool waits.
# Labelled request metrics remembered at most (see ``Metrics._request_children``).
MAX_REMEMBERED_CHILDREN = 4096
REQUEST_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        # The collector's work: each full collection (python_gc_collections_total, generation 2)
        # holds the IOLoop for as long as it takes to walk every object it tracks, which grows
        # with open sockets. Start-up's objects and the survivors of collections are frozen
        # out of that walk (vachat.garbage_collection).
        GCCollector(registry=self.registry)
        self.gauge_from("vachat_gc_frozen_objects",
                        "Objects out of the garbage collector's sight (gc.freeze): start-up's, and those that "
                        "survived two collections, walked only by the periodic full collection",
                        gc.get_freeze_count)
        self.requests = Counter(
            "vachat_http_requests", "HTTP requests by route, method and status",
            ("method", "route", "status"), registry=self.registry)
        self.latency = Histogram(
            "vachat_http_request_duration_seconds", "HTTP request latency by route and method",
            ("method", "route"), buckets=REQUEST_LATENCY_BUCKETS, registry=self.registry)
        # The labelled children of each (method, route, status) met so far: ``labels()`` checks
        # and looks its arguments up under a lock on every call. Routes are the app's route
        # patterns, not paths, so this stays as small as the route table.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
            if len(self._request_children) < MAX_REMEMBERED_CHILDREN:  # odd methods must not grow it forever
                self._request_children[key] = children
        count, latency = children
        count.inc()
        latency.observe(seconds)

    def gauge_from(self, name: str, documentation: str, read: Callable[[], float]) -> Gauge:
        """A gauge whose value is read from ``read()`` at scrape time."""
        gauge = Gauge(name, documentation, registry=self.registry)
        gauge.set_function(read)
        return gauge

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def value(self, name: str, labels: dict[str, Any] | None = None) -> float | None:
        """A sample's current value (tests and the admin dashboard read through this)."""
        return self.registry.get_sample_value(name, {k: str(v) for k, v in (labels or {}).items()})
