"""The AI plugin's table: tokens used per user and day (UTC), for quotas and the dashboard."""

from __future__ import annotations

import peewee

from vachat.plugin_api import BaseModel

__all__ = ["AiUsage"]


class AiUsage(BaseModel):
    user_id = peewee.CharField(max_length=64)
    day = peewee.DateField()
    prompt_tokens = peewee.BigIntegerField(default=0)
    completion_tokens = peewee.BigIntegerField(default=0)
    generations = peewee.IntegerField(default=0)
    #: Held by requests accepted and not yet settled (see ``usage``).
    reserved_tokens = peewee.BigIntegerField(default=0)

    class Meta:
        table_name = "ai_usage"
        indexes = (
            # One row per user and day, added to in place; also the quota check's lookup.
            (("user_id", "day"), True),
            # Today's total for the admin dashboard reads one day's rows.
            (("day",), False),
        )
