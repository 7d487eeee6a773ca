"""``vachat users …`` and ``vachat roles …``: account administration for operators without the API.

    vachat users list [--search TEXT] [--role ROLE] [--inactive] [--page N] [--limit N]
    vachat users disable EMAIL
    vachat users enable EMAIL
    vachat users grant-role EMAIL ROLE
    vachat roles list
    vachat roles grant ROLE PERMISSION
    vachat roles revoke ROLE PERMISSION

A grant adds the permission to the role's list (it must be declared: ``vachat roles list``
names them); ``*`` (every permission) is only ever granted to the admin role.

Added through ``vachat_commands``. A command runs outside any server, with the database bound
and no IOLoop: each one runs the same async accounts service the API uses under
``asyncio.run``, so the rules (last administrator, known roles) and the effects are the same.
With Redis configured, a disabled account's tokens are refused and its sockets closed at once
on every running node (the auth cache and the broker are shared); without Redis a running
server may honour its cached sessions for up to the auth-cache TTL (30 s).

Exit status: 0 done, 1 refused or not found (a line on stderr says why).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Callable, Coroutine

from vachat.plugin_api import ApiError, App

__all__ = ["add_commands"]

# Rows `users list` prints unless told otherwise: a screenful.
DEFAULT_LIST_LIMIT = 50
# The one role that may hold "*" (every permission): the core's seeded administrators' role.
ADMIN_ROLE = "admin"
EVERY_PERMISSION = "*"


def _run(work: Callable[[], Coroutine[Any, Any, int]], command: str = "users") -> int:
    try:
        return asyncio.run(work())
    except ApiError as error:
        detail = "; ".join(f"{d.get('field')}: {d.get('message')}" for d in (error.details or [])
                           if isinstance(d, dict))
        print(f"{command}: {error.message}" + (f" ({detail})" if detail else ""), file=sys.stderr)
        return 1


async def _user_id(app: App, email: str) -> str | None:
    user = await app.accounts.get_user_by_email(email)
    if user is None:
        print(f"users: no account with the address {email}", file=sys.stderr)
        return None
    user_id: str = user["id"]
    return user_id


def list_users(app: App, args: argparse.Namespace) -> int:
    async def work() -> int:
        users, total = await app.accounts.list_users(
            page=args.page, limit=args.limit, search=args.search, role=args.role,
            active=False if args.inactive else None)
        print(f"{'id':<26}  {'email':<40} {'role':<12} {'tier':<8} active")
        for user in users:
            print(f"{user['id']:<26}  {user['email']:<40} {user['role']:<12} {user['tier']:<8} "
                  f"{'yes' if user['isActive'] else 'no'}")
        print(f"{len(users)} of {total} shown (page {args.page})")
        return 0

    return _run(work)


def _set_active(active: bool) -> Callable[[App, argparse.Namespace], int]:
    def command(app: App, args: argparse.Namespace) -> int:
        async def work() -> int:
            user_id = await _user_id(app, args.email)
            if user_id is None:
                return 1
            changed = await app.accounts.set_user_active(user_id, active)
            state = "enabled" if active else "disabled (sessions ended, sockets closed)"
            print(f"{args.email}: {state}" if changed else f"{args.email}: already {'enabled' if active else 'disabled'}")
            return 0

        return _run(work)

    return command


def grant_role(app: App, args: argparse.Namespace) -> int:
    async def work() -> int:
        user_id = await _user_id(app, args.email)
        if user_id is None:
            return 1
        user = await app.accounts.update_user(user_id, role=args.role)
        if user is None:  # deleted since it was looked up
            print(f"users: no account with the address {args.email}", file=sys.stderr)
            return 1
        print(f"{args.email}: role {user['role']}")
        return 0

    return _run(work)


def list_roles(app: App, args: argparse.Namespace) -> int:
    async def work() -> int:
        print(f"{'role':<16} {'users':>5}  permissions")
        for role in await app.accounts.list_roles():
            print(f"{role['name']:<16} {role.get('userCount', 0):>5}  {', '.join(role['permissions']) or '-'}")
        print("declared permissions: " + ", ".join(sorted(app.permissions)))
        return 0

    return _run(work, "roles")


def _change_permission(grant: bool) -> Callable[[App, argparse.Namespace], int]:
    def command(app: App, args: argparse.Namespace) -> int:
        async def work() -> int:
            role = next((r for r in await app.accounts.list_roles() if r["name"] == args.role), None)
            if role is None:
                print(f"roles: no role named {args.role!r}", file=sys.stderr)
                return 1
            if grant and args.permission == EVERY_PERMISSION and args.role != ADMIN_ROLE:
                print(f"roles: {EVERY_PERMISSION!r} (every permission) is only for the {ADMIN_ROLE} role; "
                      "grant the permissions this role needs by name", file=sys.stderr)
                return 1
            held = set(role["permissions"])
            if (args.permission in held) == grant:
                print(f"{args.role}: already {'holds' if grant else 'without'} {args.permission}")
                return 0
            wanted = held | {args.permission} if grant else held - {args.permission}
            after = await app.accounts.update_role(role["id"], permissions=sorted(wanted))
            print(f"{args.role}: {', '.join(after['permissions']) if after and after['permissions'] else '-'}")
            return 0

        return _run(work, "roles")

    return command


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def add_commands(commands: Any) -> None:
    """The admin plugin's ``vachat_commands``."""
    users = commands.add_parser("users", help="list accounts, disable or enable them, grant roles")
    actions = users.add_subparsers(dest="users_action", metavar="action", required=True)

    listing = actions.add_parser("list", help="list accounts, newest first")
    listing.add_argument("--search", help="part of an e-mail address or name")
    listing.add_argument("--role", help="only holders of this role")
    listing.add_argument("--inactive", action="store_true", help="only disabled accounts")
    listing.add_argument("--page", type=_positive, default=1)
    listing.add_argument("--limit", type=_positive, default=DEFAULT_LIST_LIMIT)
    listing.set_defaults(handler=list_users)

    disable = actions.add_parser("disable", help="disable an account: its sessions and sockets end")
    disable.add_argument("email")
    disable.set_defaults(handler=_set_active(False))

    enable = actions.add_parser("enable", help="enable a disabled account")
    enable.add_argument("email")
    enable.set_defaults(handler=_set_active(True))

    grant = actions.add_parser("grant-role", help="give an account a role (it must exist)")
    grant.add_argument("email")
    grant.add_argument("role")
    grant.set_defaults(handler=grant_role)

    roles = commands.add_parser("roles", help="list roles, grant or revoke a role's permissions")
    role_actions = roles.add_subparsers(dest="roles_action", metavar="action", required=True)
    role_actions.add_parser("list", help="every role, its holders and permissions").set_defaults(handler=list_roles)
    for verb, grants, summary in (("grant", True, "add a declared permission to a role"),
                                  ("revoke", False, "take a permission from a role")):
        change = role_actions.add_parser(verb, help=summary)
        change.add_argument("role")
        change.add_argument("permission")
        change.set_defaults(handler=_change_permission(grants))
