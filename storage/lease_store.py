"""Storage functions for scheduler leases: which process runs a singleton background job.

Keyword-only functions that take a session; the caller owns the transaction (a lease is
taken in a transaction of its own, so other processes see it at once). Any job may hold a
lease by name: the notifier (``notifier``) and the source poller (``source-poller``) do.
They live apart from ``notify_store`` because they know nothing of notifications.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, or_
from sqlmodel import Session, col, delete, select

from storage.common import dialect_insert
from storage.db import utc
from storage.models import SchedulerLease


def acquire_lease(
    *, session: Session, name: str, holder: str, now: datetime, ttl_seconds: float
) -> bool:
    """Take the lease if free, expired or ours (renewing it to now + ttl); False if held.

    One statement (INSERT ... ON CONFLICT DO UPDATE ... WHERE): on PostgreSQL a concurrent
    taker waits on the row and re-checks the condition against the winner's version.
    """
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, not {ttl_seconds!r}")
    now = utc(now)
    table = SchedulerLease.__table__  # type: ignore[attr-defined]
    insert = dialect_insert(session, SchedulerLease).values(
        name=name, holder=holder, expires_at=now + timedelta(seconds=ttl_seconds)
    )
    statement = insert.on_conflict_do_update(
        index_elements=["name"],
        set_={"holder": insert.excluded.holder, "expires_at": insert.excluded.expires_at},
        where=or_(table.c.holder == holder, table.c.expires_at <= now),
    ).returning(table.c.name)
    return session.execute(statement).first() is not None


def release_lease(*, session: Session, name: str, holder: str) -> bool:
    """Give the lease up (at shutdown) so another process takes it at once; False if not ours."""
    result = session.execute(
        delete(SchedulerLease).where(
            col(SchedulerLease.name) == name, col(SchedulerLease.holder) == holder
        )
    )
    return int(cast(CursorResult[Any], result).rowcount) > 0


def get_lease(*, session: Session, name: str) -> SchedulerLease | None:
    """The lease row, expired or not: who runs the job (diagnostics, and the tests that check
    which process took over)."""
    return session.exec(
        select(SchedulerLease)
        .where(SchedulerLease.name == name)
        .execution_options(populate_existing=True)
    ).first()
