"""Operations endpoints: ``/health`` (full report, plugins skipped at start included), ``/health/live``, ``/health/ready``,
``/metrics``. None of them needs credentials or counts against rate limits, and none may hang:
every check has a deadline."""

from __future__ import annotations

import asyncio
import datetime
import functools
import os
import resource
import shutil
import time
from typing import Any

from .web import ApiHandler, endpoint

__all__ = ["HEALTH_ROUTES", "health_report"]

# A check that takes longer than this (s) counts as down: a load balancer needs an answer.
CHECK_TIMEOUT = 2.0
# Below this much free disk (bytes) uploads and logs are about to fail.
MIN_FREE_DISK = 100 * 1024 * 1024


async def _check_database(app: Any) -> dict[str, Any]:
    await app.db.ping()
    return {"status": "ok", "engine": "postgresql" if app.db.is_postgres else "sqlite"}


async def _check_redis(app: Any) -> dict[str, Any]:
    if app.redis is None:
        return {"status": "disabled"}
    await app.redis.ping()
    # PING answering is not enough: cross-node delivery needs the broker's subscription.
    broker = app.broker.status().get("status")
    if broker == "down":
        return {"status": "down", "error": "pub/sub connection is down", "broker": broker}
    return {"status": "ok", "broker": broker}


async def _check_memory(app: Any) -> dict[str, Any]:
    rss = _rss_bytes()
    return {"status": "ok", "rssBytes": rss}


async def _check_disk(app: Any) -> dict[str, Any]:
    path = app.config.data_dir  # where the database, uploads and logs go by default
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    status = "ok" if usage.free >= MIN_FREE_DISK else "down"
    return {"status": status, "freeBytes": usage.free, "totalBytes": usage.total}


async def _check_plugins(app: Any) -> dict[str, Any]:
    """Plugins that failed to load and were skipped (outside production; there they stop the
    start): the server runs, without features an operator asked for."""
    skipped = {plugin.name: plugin.error for plugin in app.plugins.plugins.values() if plugin.error}
    return {"status": "down", "skipped": skipped} if skipped else {"status": "ok"}


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


CORE_CHECKS = {"database": _check_database, "redis": _check_redis, "memory": _check_memory, "disk": _check_disk,
               "plugins": _check_plugins}


async def _run_check(name: str, check: Any) -> tuple[str, dict[str, Any]]:
    try:
        result = await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except asyncio.TimeoutError:
        result = {"status": "down", "error": f"no answer within {CHECK_TIMEOUT:g}s"}
    except Exception as error:
        result = {"status": "down", "error": type(error).__name__ + (f": {error}" if str(error) else "")}
    return name, result


async def health_report(app: Any) -> tuple[bool, dict[str, Any]]:
    checks = {name: functools.partial(check, app) for name, check in CORE_CHECKS.items()}
    for plugin, declared in app.health_checks:
        if not plugin.enabled:
            continue
        for name, check in declared.items():
            checks.setdefault(f"{plugin.name}.{name}", check)
    results = dict(await asyncio.gather(*(_run_check(name, check) for name, check in checks.items())))
    healthy = all(result.get("status") in ("ok", "disabled") for result in results.values())
    if app.shutting_down:
        healthy = False
    return healthy, {
        "status": "healthy" if healthy else ("shutting-down" if app.shutting_down else "degraded"),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "uptime": round(time.time() - app.started_at, 3),
        "version": app.version,
        "environment": app.config.env,
        "checks": results,
    }


class OperationsHandler(ApiHandler):
    """Probes and scrapes: never rate limited, never authenticated."""

    rate_limited = False


class HealthHandler(OperationsHandler):
    @endpoint("Health report: database, Redis, memory, disk and plugin checks (503 when degraded)",
              auth=False, response="core/health", tags=("operations",), errors=(503,), envelope=False,
              error_response=None)
    async def get(self) -> None:
        healthy, report = await health_report(self.application)
        self.set_status(200 if healthy else 503)
        self.write_json(report)


class LiveHandler(OperationsHandler):
    @endpoint("Liveness: the process answers", auth=False, response="core/health", tags=("operations",),
              envelope=False, error_response=None)
    async def get(self) -> None:
        self.write_json({"status": "ok"})


class ReadyHandler(OperationsHandler):
    @endpoint("Readiness: the database answers and the server is not shutting down",
              auth=False, response="core/health", tags=("operations",), errors=(503,), envelope=False,
              error_response=None)
    async def get(self) -> None:
        app = self.application
        _, database = await _run_check("database", functools.partial(_check_database, app))
        ready = database["status"] == "ok" and not app.shutting_down
        self.set_status(200 if ready else 503)
        self.write_json({"status": "ready" if ready else "not-ready", "checks": {"database": database}})


class MetricsHandler(OperationsHandler):
    @endpoint("Prometheus metrics in the text exposition format", auth=False, tags=("operations",),
              envelope=False, media_type="text/plain")
    async def get(self) -> None:
        body, content_type = self.application.metrics.render()
        self.set_header("Content-Type", content_type)
        self.finish(body)


HEALTH_ROUTES = [
    (r"/health", HealthHandler),
    (r"/health/live", LiveHandler),
    (r"/health/ready", ReadyHandler),
    (r"/metrics", MetricsHandler),
]
