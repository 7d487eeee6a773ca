"""Accounts: real users with real credentials (``make_user``, ``admin_user``, ``AccountUser``)."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from ..app import VachatApplication


# Meets the password policy and is on no common list; tests may log in with it.
DEFAULT_TEST_PASSWORD = "Vachat-Test-9x!"
_user_numbers = itertools.count(1)


@dataclass
class AccountUser:
    """A user made by ``make_user``: its credentials and a signed-in session."""

    id: str
    email: str
    password: str
    role: str
    access_token: str
    refresh_token: str
    session_id: str

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@pytest.fixture
def make_user(app: VachatApplication) -> Callable[..., Any]:
    """``await make_user(email=None, password=None, role="user", permissions=None, **fields)``
    → ``AccountUser`` with ``.id .email .password .access_token .refresh_token .session_id
    .auth_headers``, signed in through the same session code as ``POST /api/auth/login``.

    The user is written directly (no request, so no rate limit is spent); ``fields`` are
    ``User`` columns (``is_active=False``, ``tier="pro"``, ``first_name=…``). A ``role`` that
    does not exist is created with ``permissions`` (default none).
    """
    from ..accounts.models import Role
    from ..accounts.passwords import hash_password
    from ..accounts.sessions import create_session
    from ..accounts.users import create_account

    async def make_user(email: str | None = None, password: str | None = None, role: str = "user",
                        permissions: list[str] | None = None, **fields: Any) -> AccountUser:
        number = next(_user_numbers)
        email = (email or f"user{number}-{secrets.token_hex(3)}@example.test").strip().lower()
        password = password or DEFAULT_TEST_PASSWORD
        hashed = await hash_password(app, password)

        def create() -> str:
            with Role._meta.database.atomic():
                if not Role.select().where(Role.name == role).exists():
                    Role.create(name=role, permissions=list(permissions or []))
                elif permissions is not None:
                    Role.update(permissions=list(permissions)).where(Role.name == role).execute()
                return create_account(email, hashed, role=role, **fields).id

        user_id = await app.db.run(create)
        session_id, tokens = await create_session(app, user_id, ip="127.0.0.1", user_agent="vachat-tests")
        return AccountUser(user_id, email, password, role, tokens["accessToken"], tokens["refreshToken"], session_id)

    return make_user


@pytest.fixture
def admin_user(io_loop: Any, make_user: Callable[..., Any]) -> AccountUser:
    """A signed-in user with the seeded ``admin`` role (permission ``*``)."""
    return io_loop.run_sync(lambda: make_user(role="admin"))
