"""Token usage per user and UTC day, and the per-tier daily quotas it is checked against.

``AI_DAILY_TOKENS`` (``[plugins.ai] daily_tokens``) is ``tier=tokens`` pairs
(``free=20000,pro=200000``); a tier it does not name is unlimited.

Under a cap, a request reserves what it may cost when it is accepted, before anything is
stored or sent upstream: the estimate of its prompt (the context it will send, ceil(characters
/ 4)) plus a completion allowance, ``AI_MAX_REPLY_TOKENS`` or what is left of the day when that
is less. The reservation is taken under a lock on the user's row of the day (``lock_rows``), so
concurrent requests each see the others' reservations; one that cannot get
``MIN_REPLY_TOKENS`` of allowance beside its prompt is refused with ``QUOTA_EXCEEDED`` (429).
The reply is cut where its allowance ends (finishReason ``length``), and when it ends the
reservation is settled to what it really cost: accepted work never exceeds what was left.

All queries run on database threads; this module must never query on the IOLoop.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Mapping

from peewee import EXCLUDED, fn

from vachat.plugin_api import App, QuotaExceeded, database, lock_rows

from .models import AiUsage
from .providers import Usage

__all__ = ["parse_daily_tokens", "today", "seconds_to_midnight", "UsageBook", "Reservation", "MIN_REPLY_TOKENS"]

#: The least completion allowance a request is accepted with: a reply cut shorter than a
#: sentence is no answer, so such a request is refused (429) rather than run.
MIN_REPLY_TOKENS = 16


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


@dataclass(frozen=True)
class Reservation:
    """Tokens held for one accepted request until its reply settles them."""

    user_id: str
    day: datetime.date
    #: Held in the day's ``reserved_tokens`` (0 under no cap).
    tokens: int
    #: The completion allowance: the reply is cut there (None: no cap).
    reply_tokens: int | None

    @classmethod
    def unlimited(cls, user_id: str) -> "Reservation":
        return cls(user_id, today(), 0, None)

    def reply_allowance(self, prompt_tokens: int) -> int | None:
        """What the reply may produce once the real prompt is known: what the reservation
        leaves beside it, never more than the allowance it was accepted with."""
        if self.reply_tokens is None:
            return None
        return max(0, min(self.reply_tokens, self.tokens - prompt_tokens))


class UsageBook:
    """Reads and writes ``AiUsage`` for one application."""

    def __init__(self, app: App, config: Mapping[str, Any]) -> None:
        self.app = app
        self.caps = parse_daily_tokens(config.get("daily_tokens", ""))
        self.max_reply_tokens = int(config["max_reply_tokens"])

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

    async def reserve(self, user_id: str, tier: str, prompt_tokens: int) -> Reservation:
        """Hold ``prompt_tokens`` and a completion allowance of the caller's day, or refuse
        with ``QuotaExceeded`` when what is left (after usage and other reservations) cannot
        cover the prompt and ``MIN_REPLY_TOKENS``."""
        limit = self.limit_for(tier)
        if limit is None:
            return Reservation.unlimited(user_id)
        day = today()

        def write() -> tuple[Reservation | None, int]:
            with database.atomic():
                AiUsage.insert(user_id=user_id, day=day).on_conflict_ignore().execute()
                row = lock_rows(AiUsage.select().where(AiUsage.user_id == user_id, AiUsage.day == day)).get()
                taken = row.prompt_tokens + row.completion_tokens + row.reserved_tokens
                reply_tokens = min(self.max_reply_tokens, limit - taken - prompt_tokens)
                if reply_tokens < MIN_REPLY_TOKENS:
                    return None, taken
                tokens = prompt_tokens + reply_tokens
                AiUsage.update(reserved_tokens=AiUsage.reserved_tokens + tokens).where(AiUsage.id == row.id).execute()
                return Reservation(user_id, day, tokens, reply_tokens), taken

        reservation, taken = await self.app.db.run(write)
        if reservation is None:
            raise QuotaExceeded(f"Daily AI token quota reached ({taken} of {limit} for tier {tier!r} used or "
                                "reserved by replies in progress); it resets at midnight UTC",
                                headers={"Retry-After": str(seconds_to_midnight())})
        return reservation

    async def settle(self, reservation: Reservation, usage: Usage | None) -> None:
        """A reply ended: give its reservation back and add what it really cost (nothing
        when it never reached the provider) to the user's row of the reservation's day."""
        if reservation.tokens == 0 and (usage is None or not usage.total_tokens):
            return
        prompt = usage.prompt_tokens if usage else 0
        completion = usage.completion_tokens if usage else 0

        def write() -> None:
            (AiUsage.insert(user_id=reservation.user_id, day=reservation.day, prompt_tokens=prompt,
                            completion_tokens=completion, generations=1 if usage else 0)
             .on_conflict(conflict_target=[AiUsage.user_id, AiUsage.day],
                          update={AiUsage.prompt_tokens: AiUsage.prompt_tokens + EXCLUDED.prompt_tokens,
                                  AiUsage.completion_tokens: AiUsage.completion_tokens + EXCLUDED.completion_tokens,
                                  AiUsage.generations: AiUsage.generations + EXCLUDED.generations,
                                  AiUsage.reserved_tokens: AiUsage.reserved_tokens - reservation.tokens})
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
