"""Creating accounts: the one function that register, ``create-admin`` and the test fixtures share.

An account is a ``User`` row plus its ``UserPreferences`` and ``UserStatistics`` rows, written
together. Callers check what is theirs to check first (policy, uniqueness with a clear error,
rate limits) and hash the password off the IOLoop; this function only writes.

It is synchronous: run it inside ``app.db.run`` (alone or within a larger transaction).
"""

from __future__ import annotations

from typing import Any

from .models import Role, User, UserPreferences, UserStatistics

__all__ = ["create_account"]


def create_account(email: str, password_hash: str, *, role: str, **fields: Any) -> User:
    """Insert a user with ``role`` (created without permissions if missing) and its companion
    rows, atomically. ``fields`` are other ``User`` columns (``first_name``, ``tier`` …)."""
    with User._meta.database.atomic():
        if not Role.select().where(Role.name == role).exists():
            Role.create(name=role, permissions=[])
        user = User.create(email=email, password_hash=password_hash, role=role, **fields)
        UserPreferences.create(user=user.id)
        UserStatistics.create(user=user.id)
    return user
