"""Token usage per user and UTC day, and the per-tier daily quotas it is checked against.

``AI_DAILY_TOKENS`` (``[plugins.ai] daily_tokens``) is ``tier=tokens`` pairs
(``free=20000,pro=200000``); a tier it does not name is unlimited. A request is refused with
``QUOTA_EXCEEDED`` (429) once the day's recorded usage has reached the cap, before anything is
stored or sent upstream; a reply that starts under the cap finishes, and its tokens count.

All queries run on database threads; this module must never query on the IOLoop.
"""

from __future__ import annotations

import datetime
from typing import Any, Mapping

from peewee import EXCLUDED, fn

from vachat.plugin_api import App, QuotaExceeded

from .models import AiUsage
from .providers import Usage

__all__ = ["parse_daily_tokens", "today", "seconds_to_midnight", "UsageBook"]


def parse_daily_tokens(text: str) -> dict[str, int]:
    """``"free=20000, pro=200000"`` → ``{"free": 20000, "pro": 200000}`` (the schema checked the form)."""
    caps: dict[str, int] = {}
    for pair in filter(None, (item.strip() for item in text.split(","))):
        tier, _, tokens = pair.partition("=")
        caps[tier.strip()] = int(tokens.strip())
    return caps


def today() -> datetime.date:
    return datetime.datetime.now(datetime.timezone.utc).date()


def seconds_to_midnight() -> int:
    """Until the day's usage resets (UTC): the ``Retry-After`` of a refusal."""
    moment = datetime.datetime.now(datetime.timezone.utc)
    midnight = datetime.datetime.combine(moment.date() + datetime.timedelta(days=1), datetime.time(),
                                         tzinfo=datetime.timezone.utc)
    return max(1, int((midnight - moment).total_seconds()) + 1)


class UsageBook:
    """Reads and writes ``AiUsage`` for one application."""

    def __init__(self, app: App, config: Mapping[str, Any]) -> None:
        self.app = app
        self.caps = parse_daily_tokens(config.get("daily_tokens", ""))

    def limit_for(self, tier: str) -> int | None:
        return self.caps.get(tier)

    async def used_today(self, user_id: str) -> int:
        day = today()

        def read() -> int:
            row = AiUsage.get_or_none(AiUsage.user_id == user_id, AiUsage.day == day)
            return row.prompt_tokens + row.completion_tokens if row else 0

        return await self.app.db.run(read)

    async def report(self, user_id: str, tier: str) -> dict[str, Any]:
        """``GET /api/ai/usage``: ``{date, tier, used, limit}`` (limit None: unlimited)."""
        return {"date": today().isoformat(), "tier": tier, "used": await self.used_today(user_id),
                "limit": self.limit_for(tier)}

    async def check(self, user_id: str, tier: str) -> None:
        """Refuse with ``QuotaExceeded`` when the caller's tier cap is reached today."""
        limit = self.limit_for(tier)
        if limit is None:
            return
        used = await self.used_today(user_id)
        if used >= limit:
            raise QuotaExceeded(f"Daily AI token quota reached ({used} of {limit} for tier {tier!r}); "
                                "it resets at midnight UTC",
                                headers={"Retry-After": str(seconds_to_midnight())})

    async def record(self, user_id: str, usage: Usage) -> None:
        """Add one reply's tokens to the user's row of today (created on first use)."""
        day = today()

        def write() -> None:
            (AiUsage.insert(user_id=user_id, day=day, prompt_tokens=usage.prompt_tokens,
                            completion_tokens=usage.completion_tokens, generations=1)
             .on_conflict(conflict_target=[AiUsage.user_id, AiUsage.day],
                          update={AiUsage.prompt_tokens: AiUsage.prompt_tokens + EXCLUDED.prompt_tokens,
                                  AiUsage.completion_tokens: AiUsage.completion_tokens + EXCLUDED.completion_tokens,
                                  AiUsage.generations: AiUsage.generations + 1})
             .execute())

        await self.app.db.run(write)

    async def tokens_today(self) -> int:
        """Every user's tokens today (the admin dashboard's figure)."""
        day = today()

        def read() -> int:
            total = (AiUsage.select(fn.COALESCE(fn.SUM(AiUsage.prompt_tokens + AiUsage.completion_tokens), 0))
                     .where(AiUsage.day == day).scalar())
            return int(total or 0)

        return await self.app.db.run(read)

    async def forget_user(self, user_id: str) -> None:
        await self.app.db.run(lambda: AiUsage.delete().where(AiUsage.user_id == user_id).execute())
