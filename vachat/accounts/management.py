"""Account management for operators: the queries and writes behind ``app.accounts``'s
listing, searching, changing and deleting of users, the roles, the audit-log query and the
dashboard's user figures.

Every function here is synchronous Peewee: ``AccountsService`` runs it inside ``app.db.run``
and then does what must happen outside the transaction (cache invalidation, closing sockets,
audit rows, the deletion hook). Functions return wire dicts (``to_wire()``), never models.

The last-administrator rule lives here, checked inside the transaction that makes the change:
an account holding ``*`` (through its role) that is active is a *superuser*; no change may take
the number of active superusers from one or more to zero (demoting, disabling or deleting the
last one, or removing ``*`` from the last role that gives it to anyone). On PostgreSQL the
superusers' rows are locked (``FOR UPDATE``) so two administrators demoting each other at the
same moment cannot both succeed; SQLite transactions already take the write lock up front.

This module must never return a password hash or any credential, and never delete audit rows:
they outlive their users (``audit_logs.user_id`` is a plain column, not a foreign key).
"""

from __future__ import annotations

import datetime
from typing import Any, Iterable

import peewee

from ..db import database, now
from ..errors import Conflict, ValidationFailed
from .delegation import SUPERUSER_PERMISSION, Delegate, check_role_change, check_role_grant, check_user_change
from .models import (
    ApiKey, AuditLog, EmailVerification, PasswordReset, Role, Session, User, UserPreferences,
    UserStatistics,
)

__all__ = [
    "SUPERUSER_PERMISSION", "USER_SORT_COLUMNS", "list_users", "change_user", "prepare_deletion",
    "restore_active", "delete_account_rows", "user_figures", "list_roles", "create_role",
    "update_role", "query_audit", "find_user_id_by_email",
]

#: ``sortBy`` values a user list accepts → the column (whitelisted: never user-supplied SQL).
USER_SORT_COLUMNS: dict[str, Any] = {
    "createdAt": User.created_at,
    "email": User.email,
    "lastLoginAt": User.last_login_at,
    "role": User.role,
}
# What "recently" means for the dashboard's figures.
ACTIVE_WINDOW = datetime.timedelta(hours=24)
NEW_WINDOW = datetime.timedelta(days=7)


def _contains(column: Any, term: str) -> Any:
    """Case-insensitive "contains ``term``", with ``%``, ``_`` and ``\\`` in the term taken
    literally (a search for ``50%`` must not match everything)."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = peewee.NodeList((peewee.Value(f"%{escaped}%"), peewee.SQL("ESCAPE '\\'")))
    return peewee.Expression(column, peewee.OP.ILIKE, pattern)


def _page(query: Any, page: int, limit: int) -> tuple[list[Any], int]:
    total = query.count()
    return list(query.paginate(page, limit)), total


# ---------------------------------------------------------------------------
# users
# ---------------------------------------------------------------------------


def list_users(*, page: int = 1, limit: int = 20, search: str | None = None, role: str | None = None,
               active: bool | None = None, tier: str | None = None, sort_by: str = "createdAt",
               sort_order: str = "desc") -> tuple[list[dict[str, Any]], int]:
    """One page of users (wire dicts) and how many match in all."""
    query = User.select()
    if search:
        term = search.strip()
        query = query.where(_contains(User.email, term) | _contains(User.first_name, term)
                            | _contains(User.last_name, term) | _contains(User.display_name, term)
                            | _contains(User.username, term))
    if role is not None:
        query = query.where(User.role == role)
    if active is not None:
        query = query.where(User.is_active == active)
    if tier is not None:
        query = query.where(User.tier == tier)
    column = USER_SORT_COLUMNS.get(sort_by, User.created_at)
    ordering = (column.desc(), User.id.desc()) if sort_order == "desc" else (column.asc(), User.id.asc())
    rows, total = _page(query.order_by(*ordering), page, limit)
    return [user.to_wire() for user in rows], total


def find_user_id_by_email(email: str) -> str | None:
    user = User.by_email(email)
    return user.id if user is not None else None


def _superuser_roles() -> list[str]:
    return [role.name for role in Role.select(Role.name, Role.permissions)
            if SUPERUSER_PERMISSION in role.permission_set()]


def _active_superuser_ids(excluding_role: str | None = None) -> list[str]:
    roles = [name for name in _superuser_roles() if name != excluding_role]
    if not roles:
        return []
    query = User.select(User.id).where(User.role.in_(roles), User.is_active == True)  # noqa: E712
    if database.obj is not None and isinstance(database.obj, peewee.PostgresqlDatabase):
        query = query.for_update()
    return [row.id for row in query]


def _refuse_if_last_superuser(user: User, what: str) -> None:
    holders = _active_superuser_ids()
    if holders == [user.id]:
        raise Conflict(f"Refusing to {what} the last active administrator (the only holder of '*')")


def _permissions_of(role_name: str) -> frozenset[str]:
    role = Role.get_or_none(Role.name == role_name)
    return role.permission_set() if role is not None else frozenset()


def change_user(user_id: str, *, role: str | None = None, tier: str | None = None,
                is_active: bool | None = None, is_email_verified: bool | None = None,
                delegate: Delegate | None = None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Apply the given changes atomically; ``(before, after)`` wire dicts, or None when there is
    no such user. ``ValidationFailed`` for a role that does not exist, ``EscalationRefused``
    when ``delegate`` may not make this change (``delegation``), ``Conflict`` when the change
    would leave no active holder of ``*``."""
    with database.atomic():
        user = User.get_or_none(User.id == user_id)
        if user is None:
            return None
        before = user.to_wire()
        new_role_permissions = None
        if role is not None and role != user.role_name:
            target = Role.get_or_none(Role.name == role)
            if target is None:
                raise ValidationFailed("No such role", details=[{"field": "role", "message": f"no role named {role!r}"}])
            new_role_permissions = target.permission_set()
        check_user_change(delegate, user_id=user.id, user_permissions=_permissions_of(user.role_name),
                          self_sensitive=new_role_permissions is not None or (tier is not None and tier != user.tier),
                          new_role_permissions=new_role_permissions)
        if new_role_permissions is not None and SUPERUSER_PERMISSION not in new_role_permissions:
            _refuse_if_last_superuser(user, "demote")
        if is_active is False and user.is_active:
            _refuse_if_last_superuser(user, "disable")
        changes: dict[Any, Any] = {}
        for column, value in ((User.role, role), (User.tier, tier), (User.is_active, is_active),
                              (User.is_email_verified, is_email_verified)):
            if value is not None:
                changes[column] = value
        if changes:
            changes[User.updated_at] = now()
            User.update(changes).where(User.id == user_id).execute()
        after = User.get(User.id == user_id).to_wire()
    return before, after


def prepare_deletion(user_id: str, delegate: Delegate | None = None) -> dict[str, Any] | None:
    """First step of deleting: refuse an account exceeding ``delegate`` and the last
    superuser, then disable the account (so nothing new arrives while the plugins remove their
    data). The user's wire dict before, or None."""
    with database.atomic():
        user = User.get_or_none(User.id == user_id)
        if user is None:
            return None
        check_user_change(delegate, user_id=user.id, user_permissions=_permissions_of(user.role_name))
        _refuse_if_last_superuser(user, "delete")
        before = user.to_wire()
        User.update(is_active=False, updated_at=now()).where(User.id == user_id).execute()
    return before


def restore_active(user_id: str, active: bool) -> None:
    """Undo ``prepare_deletion``'s disabling when a plugin refused the deletion."""
    User.update(is_active=active).where(User.id == user_id).execute()


def delete_account_rows(user_id: str) -> bool:
    """Delete the account and every accounts row of it; audit rows stay. Returns whether the
    user row existed."""
    with database.atomic():
        for model in (ApiKey, Session, PasswordReset, EmailVerification, UserPreferences, UserStatistics):
            model.delete().where(model.user == user_id).execute()
        return User.delete().where(User.id == user_id).execute() > 0


def user_figures() -> dict[str, int]:
    """``{total, active24h, new7d}``: all accounts, distinct users with a session used (signed
    in or refreshed; clients refresh every 15 minutes) in the last 24 hours (a range of the
    covering ``sessions (last_used_at, user_id)`` index, migration 003), accounts created in
    the last 7 days (the ``created_at`` index)."""
    moment = now()
    total = User.select().count()
    new = User.select().where(User.created_at >= moment - NEW_WINDOW).count()
    active = (Session.select(peewee.fn.COUNT(Session.user.distinct()))
              .where(Session.last_used_at >= moment - ACTIVE_WINDOW).scalar()) or 0
    return {"total": total, "active24h": int(active), "new7d": new}


# ---------------------------------------------------------------------------
# roles
# ---------------------------------------------------------------------------


def _role_wire(role: Role, user_count: int) -> dict[str, Any]:
    return {**role.to_wire(), "userCount": user_count}


def _user_counts() -> dict[str, int]:
    rows = User.select(User.role, peewee.fn.COUNT(User.id).alias("n")).group_by(User.role).tuples()
    return {name: count for name, count in rows}


def list_roles() -> list[dict[str, Any]]:
    """Every role, by name, with how many users hold it."""
    counts = _user_counts()
    return [_role_wire(role, counts.get(role.name, 0)) for role in Role.select().order_by(Role.name)]


def check_permissions_known(permissions: Iterable[str], known: Iterable[str]) -> list[str]:
    """The permissions, deduplicated and sorted; ``ValidationFailed`` naming unknown ones."""
    allowed = set(known) | {SUPERUSER_PERMISSION}
    wanted = sorted(set(permissions))
    unknown = [name for name in wanted if name not in allowed]
    if unknown:
        raise ValidationFailed("Unknown permissions", details=[
            {"field": "permissions", "message": f"{name!r} is not a declared permission"} for name in unknown])
    return wanted


def create_role(name: str, description: str, permissions: list[str],
                delegate: Delegate | None = None) -> dict[str, Any]:
    """Insert a role; ``EscalationRefused`` when it grants what ``delegate`` does not hold,
    ``Conflict`` when the name is taken."""
    check_role_grant(delegate, permissions)
    with database.atomic():
        if Role.select().where(Role.name == name).exists():
            raise Conflict(f"A role named {name!r} already exists")
        role = Role.create(name=name, description=description, permissions=permissions)
    return _role_wire(role, 0)


def update_role(role_id: str, *, description: str | None = None, permissions: list[str] | None = None,
                delegate: Delegate | None = None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Change a role's description and permissions: ``(before, after)`` or None when there is
    no such role. ``EscalationRefused`` when ``delegate`` may not change its permissions so,
    ``Conflict`` when it would take ``*`` from the last active superusers."""
    with database.atomic():
        role = Role.get_or_none(Role.id == role_id)
        if role is None:
            return None
        if permissions is not None and set(permissions) != role.permission_set():
            check_role_change(delegate, role_name=role.name, current=role.permission_set(), wanted=permissions)
        counts = _user_counts()
        before = _role_wire(role, counts.get(role.name, 0))
        if permissions is not None and SUPERUSER_PERMISSION in role.permission_set() \
                and SUPERUSER_PERMISSION not in permissions:
            holders_here = (User.select().where(User.role == role.name, User.is_active == True)  # noqa: E712
                            .exists())
            if holders_here and not _active_superuser_ids(excluding_role=role.name):
                raise Conflict("Refusing to remove '*' from the last role that gives it to an active user")
        changes: dict[Any, Any] = {Role.updated_at: now()}
        if description is not None:
            changes[Role.description] = description
        if permissions is not None:
            changes[Role.permissions] = permissions
        Role.update(changes).where(Role.id == role_id).execute()
        after = _role_wire(Role.get(Role.id == role_id), counts.get(role.name, 0))
    return before, after


# ---------------------------------------------------------------------------
# audit log
# ---------------------------------------------------------------------------


def query_audit(*, page: int = 1, limit: int = 20, user_id: str | None = None, action: str | None = None,
                since: datetime.datetime | None = None,
                until: datetime.datetime | None = None) -> tuple[list[dict[str, Any]], int]:
    """One page of audit entries, newest first, and how many match (each filter has an index:
    ``(user_id, created_at)``, ``(action, created_at)``, ``created_at``)."""
    query = AuditLog.select()
    if user_id is not None:
        query = query.where(AuditLog.user_id == user_id)
    if action is not None:
        query = query.where(AuditLog.action == action)
    if since is not None:
        query = query.where(AuditLog.created_at >= since)
    if until is not None:
        query = query.where(AuditLog.created_at < until)
    rows, total = _page(query.order_by(AuditLog.created_at.desc(), AuditLog.id.desc()), page, limit)
    return [row.to_wire() for row in rows], total
