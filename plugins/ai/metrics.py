"""The AI plugin's Prometheus metrics, per provider and model, on each application's registry.

Generations by outcome (finishReason), tokens by kind, time to the first token, whole-reply
latency, and provider errors by kind. Kept in ``app.plugin_state("ai").metrics``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

from vachat.plugin_api import App

__all__ = ["AiMetrics"]

# Seconds: a fast local model answers within tens of milliseconds, a loaded remote one within
# seconds; past a minute the idle timeout is near anyway.
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


class AiMetrics:
    def __init__(self, registry: Any) -> None:
        labels = ("provider", "model")
        self.generations = Counter("vachat_ai_generations", "AI replies generated, by how they ended",
                                   (*labels, "finish_reason"), registry=registry)
        self.tokens = Counter("vachat_ai_tokens", "AI tokens used (prompt or completion)",
                              (*labels, "kind"), registry=registry)
        self.first_token = Histogram("vachat_ai_time_to_first_token_seconds", "From the request to the first delta",
                                     labels, buckets=FIRST_TOKEN_BUCKETS, registry=registry)
        self.latency = Histogram("vachat_ai_latency_seconds", "From the request to the stored reply",
                                 labels, buckets=LATENCY_BUCKETS, registry=registry)
        self.errors = Counter("vachat_ai_errors", "AI provider failures (timeout or error)",
                              (*labels, "kind"), registry=registry)

    @classmethod
    def of(cls, app: App) -> "AiMetrics | None":
        return getattr(app.plugin_state("ai"), "metrics", None)
