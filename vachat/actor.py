"""Who is calling: the ``Actor`` every REST handler and WebSocket event sees.

An actor is resolved from credentials by the ``vachat_actor_from_request`` hook (the core's
accounts for sessions and API keys) and is immutable: a change of role replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Actor"]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is calling: a user through a session or an API key. ``permissions`` may hold ``*``.

    Slotted: every authenticated socket holds one for its whole life."""

    id: str
    name: str = ""
    email: str = ""
    permissions: frozenset[str] = frozenset()
    roles: tuple[str, ...] = ()
    session_id: str | None = None
    api_key_id: str | None = None
    tier: str = "free"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def has(self, permission: str) -> bool:
        return "*" in self.permissions or permission in self.permissions
