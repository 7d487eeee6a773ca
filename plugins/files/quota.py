"""The storage quota: what a user stores plus what their uploads in progress have reserved.

An upload reserves its size once its body is in (``reserve``), before it is checked,
committed and recorded; ``settle`` turns the reservation into the file's row in one
transaction, and ``release`` gives it back when the upload fails. ``reserve`` and ``settle``
run under a lock on the owner's ``files_usage`` row (``lock_rows``: ``FOR UPDATE`` on
PostgreSQL; SQLite's write transactions run one at a time), so two concurrent uploads can
never both be fitted into the same free space.

Every function here blocks: run it inside ``app.db.run``.
"""

from __future__ import annotations

import datetime
from typing import Callable

import peewee

from vachat.plugin_api import PayloadTooLarge, database, lock_rows, now

from .models import File, Reservation, Usage

__all__ = ["bytes_used", "reserve", "settle", "release", "quota_message", "over_quota", "RESERVATION_TTL"]

#: A reservation stops counting after this long: one left behind by a node that died
#: mid-upload. Far longer than the time from a received body to its stored row (seconds,
#: even for a remote object store), so a live upload never loses its reservation.
RESERVATION_TTL = datetime.timedelta(hours=1)


def quota_message(quota: int) -> str:
    return f"This upload would take you over your storage quota of {quota} bytes; delete some files first"


def over_quota(quota: int) -> PayloadTooLarge:
    return PayloadTooLarge(quota_message(quota), details=[{"field": "file", "message": "would exceed your storage quota"}])


def bytes_used(owner_id: str) -> int:
    """What ``owner_id`` stores now plus what their live uploads reserved, in bytes."""
    stored = File.select(peewee.fn.COALESCE(peewee.fn.SUM(File.size), 0)).where(File.owner_id == owner_id).scalar()
    reserved = (Reservation.select(peewee.fn.COALESCE(peewee.fn.SUM(Reservation.size), 0))
                .where((Reservation.owner_id == owner_id) & (Reservation.created_at > now() - RESERVATION_TTL))
                .scalar())
    return int(stored or 0) + int(reserved or 0)


def _lock_owner(owner_id: str) -> None:
    """Hold the owner's usage row until the transaction ends (created on first use)."""
    Usage.insert(owner_id=owner_id).on_conflict_ignore().execute()
    lock_rows(Usage.select(Usage.id).where(Usage.owner_id == owner_id)).get()


def reserve(owner_id: str, size: int, quota: int) -> str:
    """Hold ``size`` bytes of ``owner_id``'s quota: the reservation's id, or 413 when they
    do not fit beside what is stored and reserved."""
    with database.atomic():
        _lock_owner(owner_id)
        Reservation.delete().where((Reservation.owner_id == owner_id)
                                   & (Reservation.created_at <= now() - RESERVATION_TTL)).execute()
        if bytes_used(owner_id) + size > quota:
            raise over_quota(quota)
        return str(Reservation.create(owner_id=owner_id, size=size).id)


def settle(reservation_id: str, owner_id: str, size: int, quota: int, create: Callable[[], File]) -> File:
    """Replace the reservation by the file ``create`` inserts, of ``size`` bytes (stripping
    may have changed it): checked again, so a file that grew cannot pass the quota."""
    with database.atomic():
        _lock_owner(owner_id)
        Reservation.delete().where(Reservation.id == reservation_id).execute()
        if bytes_used(owner_id) + size > quota:
            raise over_quota(quota)
        return create()


def release(reservation_id: str) -> None:
    """Give a failed upload's reservation back (nothing when it was settled)."""
    Reservation.delete().where(Reservation.id == reservation_id).execute()
