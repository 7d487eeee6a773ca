"""What a ``LiveConnection`` knows of each conversation it joined (``Room``): the latest change
seq (a re-join's ``sinceSeq``), the messages already delivered (to drop repeats) and the
assistant reply being generated (to resume it)."""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any

from .models import Message

__all__ = ["Room", "SEEN_IDS_PER_CONVERSATION"]

# Message ids remembered per conversation to drop repeats: far more than a reconnect can replay
# (200 missed, then REST pages of what is newer still), few enough to cost nothing.
SEEN_IDS_PER_CONVERSATION = 5000


@dataclass
class Room:
    """What the connection knows of a joined conversation."""

    conversation_id: str
    last_seen: str | None = None
    last_seq: int | None = None  # the latest change seq known (a re-join's ``sinceSeq``)
    seen: "collections.OrderedDict[str, str]" = field(default_factory=collections.OrderedDict)  # id → updatedAt
    deleted: set[str] = field(default_factory=set)
    generation_id: str | None = None
    generation_index: int = -1
    generation_text: str = ""
    joined: asyncio.Future[dict[str, Any]] | None = None
    joined_on: Any = None  # the socket the room was last joined on

    def saw_seq(self, seq: Any) -> None:
        if isinstance(seq, int) and (self.last_seq is None or seq > self.last_seq):
            self.last_seq = seq

    def remember(self, message: Message) -> None:
        self.seen[message.id] = message.updated_at
        self.seen.move_to_end(message.id)
        while len(self.seen) > SEEN_IDS_PER_CONVERSATION:
            self.seen.popitem(last=False)
