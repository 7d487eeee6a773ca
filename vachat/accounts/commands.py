"""``python run.py seed`` and ``python run.py create-admin`` (added through ``vachat_commands``).

Both run outside the IOLoop, with the database bound by the CLI, so they call Peewee
directly. Both apply pending migrations first (a fresh install needs no separate
``migrate``) and are idempotent: ``seed`` creates only missing roles; ``create-admin`` for an
existing address makes that account an active administrator with the given password.
They print one clear line per result and return the process exit code: 0 done, 1 refused
(invalid e-mail or a password the policy rejects; nothing is changed).

``ensure_default_roles`` (and ``apply_default_grants``) is also what the server runs at start-up, so registration works on
a fresh database even without ``seed``.

These commands must never print a password or a hash.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from typing import Any

from ..db import now
from . import audit
from .grants import apply_default_grants
from .models import ADMIN_ROLE, DEFAULT_ROLE, Role, Session, User, normalize_email
from .identity import clean_name, identifier_problem
from .passwords import _hash, policy_problems
from .users import create_account

__all__ = ["seed", "create_admin", "add_commands", "ensure_default_roles", "DEFAULT_ROLES", "EMAIL_PATTERN"]

#: name → (description, permissions). ``*`` grants every permission, present and future.
DEFAULT_ROLES: dict[str, tuple[str, list[str]]] = {
    ADMIN_ROLE: ("Administrators: every permission", ["*"]),
    DEFAULT_ROLE: ("Signed-up users: their own data only", []),
}
# Deliberately loose (one @, a dot in the domain, no spaces): the verification e-mail is the
# real test of an address.
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def ensure_default_roles() -> list[str]:
    """Create the default roles that are missing (synchronous); returns the names created.
    Existing roles are left as they are: an operator may have edited them."""
    created = []
    for name, (description, permissions) in DEFAULT_ROLES.items():
        _, was_created = Role.get_or_create(
            name=name, defaults={"description": description, "permissions": permissions, "is_system": True})
        if was_created:
            created.append(name)
    return created


def _prepare(app: Any) -> None:
    applied = app.migrations().apply()
    for owner, names in applied.items():
        print(f"applied migrations ({owner}): {', '.join(names)}")


def seed(app: Any, args: Any) -> int:
    """Create the default roles (admin with ``*``, user) when missing, and apply the default
    grants of permissions not seen before (as the server does at start-up)."""
    _prepare(app)
    with app.db.engine.atomic():
        created = ensure_default_roles()
    granted = apply_default_grants(app.default_grants)
    for name in DEFAULT_ROLES:
        print(f"role {name}: {'created' if name in created else 'already present'}")
    for name, permissions in granted.items():
        print(f"role {name}: granted {', '.join(permissions)} (default grants)")
    return 0


def create_admin(app: Any, args: Any) -> int:
    """Create (or promote) an administrator from ``args.email``, ``args.password``, ``args.name``;
    prompts for what the command line left out."""
    if not args.email:
        args.email = input("E-mail: ").strip()
    if not args.password:
        args.password = getpass.getpass("Password: ")
    raw_email = getattr(args, "email", "") or ""
    email = normalize_email(raw_email)
    password = getattr(args, "password", "") or ""
    name = clean_name(getattr(args, "name", "") or "") or "Administrator"
    if identifier_problem(raw_email) or not EMAIL_PATTERN.match(email) or len(email) > 254:
        print("create-admin: a valid --email is required", file=sys.stderr)
        return 1
    problems = policy_problems(password, email=email)
    if problems:
        print("create-admin: the password " + "; ".join(problems), file=sys.stderr)
        return 1
    _prepare(app)
    hashed = _hash(password, app.config.bcrypt_rounds)
    first, _, last = name.partition(" ")
    with app.db.engine.atomic():
        ensure_default_roles()
        user = User.by_email(email)
        if user is None and User.email_taken(email):
            print("create-admin: another account's address looks the same as this one", file=sys.stderr)
            return 1
        if user is None:
            user = create_account(email, hashed, role=ADMIN_ROLE, first_name=first[:100], last_name=last[:100],
                                  is_email_verified=True)
            audit.record(audit.USER_CREATED, user_id=user.id, details={"source": "cli", "role": ADMIN_ROLE})
            outcome = "created"
        else:
            previous = user.role_name
            (User.update(password_hash=hashed, role=ADMIN_ROLE, is_active=True, updated_at=now())
             .where(User.id == user.id).execute())
            if previous != ADMIN_ROLE:
                audit.record(audit.USER_ROLE_CHANGED, user_id=user.id,
                             details={"source": "cli", "from": previous, "to": ADMIN_ROLE})
            audit.record(audit.AUTH_PASSWORD_CHANGED, user_id=user.id, details={"source": "cli"})
            # A replaced password ends the account's sessions, as a change through the API does
            # (a running server notices within its auth-cache TTL; it cannot be told from here).
            ended = (Session.update(revoked_at=now(), revoked_reason="password_changed")
                     .where(Session.user == user.id, Session.revoked_at.is_null()).execute())
            outcome = f"updated (now an active admin, password replaced, {ended} session(s) ended)"
    print(f"admin {email}: {outcome} (id {user.id})")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The ``vachat_commands`` hook of the accounts plugin."""
    seed_parser = commands.add_parser("seed", help="create the default roles (admin, user)")
    seed_parser.set_defaults(handler=seed)

    admin = commands.add_parser("create-admin", help="create an administrator (prompts for missing values)")
    admin.add_argument("--email")
    admin.add_argument("--password")
    admin.add_argument("--name", default="Administrator")
    admin.set_defaults(handler=create_admin)
