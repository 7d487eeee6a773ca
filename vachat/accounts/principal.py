"""Who a credential authenticates, as the accounts code caches and compares it, and the close
code of a socket whose credential ended.

Sessions and API keys resolve a credential to this principal; ``live`` re-reads it for open
sockets when an account or a role changes. It is a leaf of the accounts package (models only),
so both can import it without importing each other.
"""

from __future__ import annotations

from typing import Any

from .delegation import SUPERUSER_PERMISSION
from .models import Role, User

__all__ = ["principal_of", "key_permissions", "CLOSE_SESSION_ENDED"]

# WebSocket close code for a socket whose session or credentials ended (4401).
CLOSE_SESSION_ENDED = 4401


def principal_of(user: User, role: Role | None) -> dict[str, Any]:
    """The cacheable description of who a credential authenticates (JSON-able)."""
    permissions = sorted(role.permission_set()) if role is not None else []
    return {"uid": user.id, "email": user.email, "name": user.name, "role": user.role_name,
            "perms": permissions, "tier": user.tier}


def key_permissions(owner: frozenset[str], given: list[str] | None) -> frozenset[str]:
    """What a key given ``given`` (None: everything) acts with while its owner holds ``owner``."""
    if given is None:
        return owner
    if SUPERUSER_PERMISSION in owner:
        return frozenset(given)
    return owner & frozenset(given)
