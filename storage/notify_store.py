"""Storage functions for channel notifications: subscriptions, posted messages, outbox, polls.

Keyword-only functions that take a session; the caller owns the transaction.
Nothing outside ``storage/`` builds SQL.

The notifier's contract with this module:

- a thread reply is recorded (``record_event_once``) in the same transaction that queues it
  (``enqueue``), so a restart or a second scheduler never queues it twice;
- Slack calls go through the outbox: ``due_outbox`` hands out at most one message per channel,
  the oldest, so a channel's messages go out in order (an ``update`` queued after its
  ``post`` finds the parent's ``ts`` stored by then), and a channel whose head keeps failing
  waits alone;
- sent messages are kept a while, then pruned (``prune_outbox``); a thread reply whose
  buttons still stand is kept until they give way, as its payload is how it is redrawn;
- one process at a time runs the notifier, holding a lease it renews every tick
  (``storage.lease_store``).

Times passed in are normalised to UTC (SQLite compares them as text). Timestamps come back
naive from SQLite: pass them through ``storage.db.utc``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any, Final, Literal, cast

from sqlalchemy import CursorResult, Result, func, or_, update
from sqlmodel import Session, col, delete, select

from storage.common import check_choice, dialect_insert, insert_ignoring_conflict
from storage.db import utc, utcnow
from storage.models import (
    OutboxMessage,
    PipelinePoll,
    PostedEvent,
    PostedExecution,
    Subscription,
)

EventFilter = Literal["all", "failures", "approvals"]
EVENT_FILTERS: Final[tuple[EventFilter, ...]] = ("all", "failures", "approvals")

OutboxKind = Literal["post", "update", "reply"]
OUTBOX_KINDS: Final[tuple[OutboxKind, ...]] = ("post", "update", "reply")

_DIGEST_TIME = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d")


def _at(value: datetime | None) -> datetime:
    return utcnow() if value is None else utc(value)


def _rowcount(result: Result[Any]) -> int:
    """Rows matched by an UPDATE or DELETE (reliable for those on SQLite and psycopg)."""
    return int(cast(CursorResult[Any], result).rowcount)


# --- subscriptions -----------------------------------------------------------------------------


class Keep(Enum):
    """``KEEP``: leave a subscription's setting as it is."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP


def subscribe(
    *,
    session: Session,
    pipeline: str,
    channel_id: str,
    created_by: str,
    events: EventFilter | Keep = KEEP,
    digest_time: str | Keep | None = KEEP,
    digest_sent_on: str | None = None,
    at: datetime | None = None,
) -> tuple[Subscription, bool]:
    """Subscribe the channel, or change its filter and digest; returns (row, created).

    A setting given as ``KEEP`` stays as it is (a new subscription gets every event and no
    digest). ``digest_sent_on`` (YYYY-MM-DD, with a new ``digest_time``) marks that day's
    digest as sent, when the time has passed already: the first goes out the next day.
    """
    if not isinstance(events, Keep):
        check_choice(events, EVENT_FILTERS, "events")
    if isinstance(digest_time, str) and not _DIGEST_TIME.fullmatch(digest_time):
        raise ValueError(f"digest time must be HH:MM (00:00 to 23:59), not {digest_time!r}")
    changes: dict[str, Any] = {}
    if not isinstance(events, Keep):
        changes["events"] = events
    if not isinstance(digest_time, Keep):
        changes["digest_time"] = digest_time
        changes["digest_sent_on"] = digest_sent_on if digest_time is not None else None
    created = insert_ignoring_conflict(
        session,
        Subscription,
        {
            "pipeline": pipeline,
            "channel_id": channel_id,
            "events": "all",
            "digest_time": None,
            "digest_sent_on": None,
            "created_by": created_by,
            "created_at": _at(at),
            **changes,
        },
    )
    where = (col(Subscription.pipeline) == pipeline, col(Subscription.channel_id) == channel_id)
    if not created and changes:
        session.execute(update(Subscription).where(*where).values(**changes))
    row = session.exec(
        select(Subscription).where(*where).execution_options(populate_existing=True)
    ).one()
    # Read the pipeline on the next tick, changed or not: the channel sees it as it is now.
    session.execute(
        update(PipelinePoll)
        .where(col(PipelinePoll.pipeline) == pipeline)
        .values(next_poll_at=_at(at), change_token=None)
    )
    return row, created


def unsubscribe(*, session: Session, pipeline: str, channel_id: str) -> bool:
    """Remove the channel's subscription to the pipeline; False if there was none."""
    result = session.execute(
        delete(Subscription).where(
            col(Subscription.pipeline) == pipeline, col(Subscription.channel_id) == channel_id
        )
    )
    return _rowcount(result) > 0


def subscriptions_for_channel(*, session: Session, channel_id: str) -> list[Subscription]:
    """The channel's subscriptions, by pipeline name."""
    return list(
        session.exec(
            select(Subscription)
            .where(Subscription.channel_id == channel_id)
            .order_by(col(Subscription.pipeline))
        )
    )


def subscriptions_for_pipeline(*, session: Session, pipeline: str) -> list[Subscription]:
    """The channels subscribed to the pipeline, in the order they subscribed."""
    return list(
        session.exec(
            select(Subscription)
            .where(Subscription.pipeline == pipeline)
            .order_by(col(Subscription.id))
        )
    )


# --- parent messages ---------------------------------------------------------------------------


def due_digests(*, session: Session, today: str, time_of_day: str) -> list[Subscription]:
    """Subscriptions whose digest time (HH:MM, local) has come today (YYYY-MM-DD, local)
    and whose digest for today has not been sent; by channel, time, pipeline."""
    statement = (
        select(Subscription)
        .where(
            col(Subscription.digest_time).is_not(None),
            col(Subscription.digest_time) <= time_of_day,
            or_(
                col(Subscription.digest_sent_on).is_(None),
                col(Subscription.digest_sent_on) != today,
            ),
        )
        .order_by(
            col(Subscription.channel_id), col(Subscription.digest_time), col(Subscription.pipeline)
        )
    )
    return list(session.exec(statement))


def claim_digest(*, session: Session, subscription_id: int, today: str) -> bool:
    """Mark today's digest of the subscription as sent; False if it was already (by another
    tick or process): the caller queues the digest only on True, in the same transaction."""
    result = session.execute(
        update(Subscription)
        .where(
            col(Subscription.id) == subscription_id,
            or_(
                col(Subscription.digest_sent_on).is_(None),
                col(Subscription.digest_sent_on) != today,
            ),
        )
        .values(digest_sent_on=today)
    )
    return _rowcount(result) == 1


def get_posted_execution(
    *, session: Session, channel_id: str, execution_id: str
) -> PostedExecution | None:
    """The execution's parent message in the channel, if one was ever queued."""
    return session.exec(
        select(PostedExecution).where(
            PostedExecution.channel_id == channel_id,
            PostedExecution.execution_id == execution_id,
        )
    ).first()


def upsert_posted_execution(
    *,
    session: Session,
    channel_id: str,
    pipeline: str,
    execution_id: str,
    last_state: str,
    last_state_hash: str,
    at: datetime | None = None,
) -> tuple[PostedExecution, bool]:
    """Record what the parent message shows now; returns (row, created: queue the post)."""
    now = _at(at)
    created = insert_ignoring_conflict(
        session,
        PostedExecution,
        {
            "channel_id": channel_id,
            "pipeline": pipeline,
            "execution_id": execution_id,
            "last_state": last_state,
            "last_state_hash": last_state_hash,
            "updated_at": now,
        },
    )
    where = (
        col(PostedExecution.channel_id) == channel_id,
        col(PostedExecution.execution_id) == execution_id,
    )
    if not created:
        session.execute(
            update(PostedExecution)
            .where(*where)
            .values(last_state=last_state, last_state_hash=last_state_hash, updated_at=now)
        )
    row = session.exec(
        select(PostedExecution).where(*where).execution_options(populate_existing=True)
    ).one()
    return row, created


def set_posted_message_ts(
    *,
    session: Session,
    channel_id: str,
    execution_id: str,
    message_ts: str,
    at: datetime | None = None,
) -> bool:
    """Store the parent message's ``ts`` once Slack has it; False if no such row."""
    result = session.execute(
        update(PostedExecution)
        .where(
            col(PostedExecution.channel_id) == channel_id,
            col(PostedExecution.execution_id) == execution_id,
        )
        .values(message_ts=message_ts, updated_at=_at(at))
    )
    return _rowcount(result) > 0


# --- thread replies ----------------------------------------------------------------------------


def record_event_once(
    *,
    session: Session,
    channel_id: str,
    execution_id: str,
    event_key: str,
    resolved: bool = False,
    at: datetime | None = None,
) -> tuple[PostedEvent, bool]:
    """Record a thread reply before queueing it; returns (row, created: queue it only then).

    ``resolved=True`` suits replies without buttons ("finished"): nothing to replace later.
    Safe across processes, like ``bot_store.record_click_once``.
    """
    created = insert_ignoring_conflict(
        session,
        PostedEvent,
        {
            "channel_id": channel_id,
            "execution_id": execution_id,
            "event_key": event_key,
            "resolved": resolved,
            "created_at": _at(at),
        },
    )
    row = get_event(
        session=session, channel_id=channel_id, execution_id=execution_id, event_key=event_key
    )
    assert row is not None  # inserted above, by us or by whoever won the race
    return row, created


def get_event(
    *, session: Session, channel_id: str, execution_id: str, event_key: str
) -> PostedEvent | None:
    """The recorded thread reply, if any (always re-read from the database)."""
    return session.exec(
        select(PostedEvent)
        .where(
            PostedEvent.channel_id == channel_id,
            PostedEvent.execution_id == execution_id,
            PostedEvent.event_key == event_key,
        )
        .execution_options(populate_existing=True)
    ).first()


def mark_event_posted(
    *, session: Session, channel_id: str, execution_id: str, event_key: str, message_ts: str
) -> bool:
    """Store the reply's ``ts`` once Slack has it; False if no such event."""
    result = session.execute(
        update(PostedEvent)
        .where(
            col(PostedEvent.channel_id) == channel_id,
            col(PostedEvent.execution_id) == execution_id,
            col(PostedEvent.event_key) == event_key,
        )
        .values(message_ts=message_ts)
    )
    return _rowcount(result) > 0


def mark_event_resolved(
    *, session: Session, channel_id: str, execution_id: str, event_key: str
) -> bool:
    """Flag the reply's buttons as replaced; True only for the call that flipped it."""
    result = session.execute(
        update(PostedEvent)
        .where(
            col(PostedEvent.channel_id) == channel_id,
            col(PostedEvent.execution_id) == execution_id,
            col(PostedEvent.event_key) == event_key,
            col(PostedEvent.resolved).is_(False),
        )
        .values(resolved=True)
    )
    return _rowcount(result) > 0


# --- outbox ------------------------------------------------------------------------------------


def enqueue(
    *,
    session: Session,
    channel_id: str,
    kind: OutboxKind,
    payload: str,
    execution_id: str | None = None,
    event_key: str | None = None,
    at: datetime | None = None,
) -> OutboxMessage:
    """Queue a Slack call (``payload`` is JSON text) behind the channel's earlier ones."""
    check_choice(kind, OUTBOX_KINDS, "kind")
    now = _at(at)
    message = OutboxMessage(
        channel_id=channel_id,
        kind=kind,
        execution_id=execution_id,
        event_key=event_key,
        payload=payload,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(message)
    session.flush()
    return message


def due_outbox(*, session: Session, now: datetime, limit: int = 100) -> list[OutboxMessage]:
    """Each channel's oldest undone message, if due, oldest first; a waiting head blocks its
    channel only."""
    heads = (
        select(func.min(OutboxMessage.id))
        .where(col(OutboxMessage.done_at).is_(None))
        .group_by(col(OutboxMessage.channel_id))
    )
    statement = (
        select(OutboxMessage)
        .where(col(OutboxMessage.id).in_(heads), col(OutboxMessage.next_attempt_at) <= utc(now))
        .order_by(col(OutboxMessage.id))
        .limit(limit)
        .execution_options(populate_existing=True)
    )
    return list(session.exec(statement))


def mark_outbox_done(*, session: Session, message_id: int, now: datetime) -> bool:
    """Mark a message sent; False if unknown or already done."""
    result = session.execute(
        update(OutboxMessage)
        .where(col(OutboxMessage.id) == message_id, col(OutboxMessage.done_at).is_(None))
        .values(done_at=utc(now))
    )
    return _rowcount(result) > 0


def mark_outbox_sending(*, session: Session, message_id: int, note: str) -> bool:
    """Record, before the call, that the message is being sent: if the process dies before
    Slack's answer is recorded, the next attempt reads ``note`` and knows it may have gone
    out (attempts and schedule unchanged)."""
    result = session.execute(
        update(OutboxMessage)
        .where(col(OutboxMessage.id) == message_id, col(OutboxMessage.done_at).is_(None))
        .values(last_error=note)
    )
    return _rowcount(result) > 0


def mark_outbox_failed(
    *, session: Session, message_id: int, error: str, next_attempt_at: datetime
) -> bool:
    """Count a failed attempt and hold the message (and its channel) until ``next_attempt_at``."""
    result = session.execute(
        update(OutboxMessage)
        .where(col(OutboxMessage.id) == message_id, col(OutboxMessage.done_at).is_(None))
        .values(
            attempts=OutboxMessage.attempts + 1,
            last_error=error,
            next_attempt_at=utc(next_attempt_at),
        )
    )
    return _rowcount(result) > 0


def prune_outbox(*, session: Session, done_before: datetime) -> int:
    """Delete messages sent before ``done_before``; the count.

    Undone messages are never deleted, nor is a thread reply whose buttons still stand (its
    event unresolved): its queued payload is the only copy of what it says, read to redraw
    it when its buttons give way (``queued_reply_payload``, ``event_reply_payload``), which
    may be days later (an approval waits up to its timeout, a failure until it is retried).
    """
    buttons_stand = (
        select(PostedEvent.id)
        .where(
            col(PostedEvent.channel_id) == col(OutboxMessage.channel_id),
            col(PostedEvent.execution_id) == col(OutboxMessage.execution_id),
            col(PostedEvent.event_key) == col(OutboxMessage.event_key),
            col(PostedEvent.resolved).is_(False),
        )
        .exists()
    )
    result = session.execute(
        delete(OutboxMessage).where(
            col(OutboxMessage.done_at).is_not(None),
            col(OutboxMessage.done_at) < utc(done_before),
            or_(col(OutboxMessage.kind) != "reply", ~buttons_stand),
        )
    )
    return _rowcount(result)


# --- poll bookkeeping --------------------------------------------------------------------------


def due_pipelines(
    *,
    session: Session,
    now: datetime,
    tokens: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> list[str]:
    """Subscribed pipelines due for a read: never read, due by their schedule, or, when the
    backend keeps change tokens (``tokens``: pipeline -> token), changed since their last
    read. Never read first, then the longest overdue, then the changed ones."""
    subscribed = select(Subscription.pipeline).distinct().subquery()
    statement = select(
        subscribed.c.pipeline, PipelinePoll.next_poll_at, PipelinePoll.change_token
    ).outerjoin(PipelinePoll, col(PipelinePoll.pipeline) == subscribed.c.pipeline)
    now = utc(now)
    due: list[tuple[int, datetime, str]] = []
    for name, next_poll_at, token in session.execute(statement):
        if next_poll_at is None:
            due.append((0, now, name))
        elif utc(next_poll_at) <= now:
            due.append((1, utc(next_poll_at), name))
        elif tokens is not None and tokens.get(name) != token:
            due.append((2, utc(next_poll_at), name))
    due.sort()
    return [name for _, _, name in due[:limit]]


def schedule_poll(
    *,
    session: Session,
    pipeline: str,
    next_poll_at: datetime,
    backoff_seconds: int = 0,
    error: str | None = None,
    polled_at: datetime | None = None,
    change_token: str | None = None,
) -> PipelinePoll:
    """Set when the pipeline is read next (and the backoff and error that led to it).

    ``polled_at`` records a read, with the ``change_token`` it saw (None where the backend
    keeps none); leave it out to move ``next_poll_at`` alone (e.g. to wake the pipeline at
    once on a change).
    """
    if backoff_seconds < 0:
        raise ValueError(f"backoff_seconds must not be negative, not {backoff_seconds!r}")
    values = {
        "pipeline": pipeline,
        "next_poll_at": utc(next_poll_at),
        "backoff_seconds": backoff_seconds,
        "last_error": error,
        "last_polled_at": None if polled_at is None else utc(polled_at),
        "change_token": change_token,
    }
    updated = {name: value for name, value in values.items() if name != "pipeline"}
    if polled_at is None:
        del updated["last_polled_at"]
        del updated["change_token"]
    session.execute(
        dialect_insert(session, PipelinePoll)
        .values(**values)
        .on_conflict_do_update(index_elements=["pipeline"], set_=updated)
    )
    poll = get_poll(session=session, pipeline=pipeline)
    assert poll is not None
    return poll


def get_poll(*, session: Session, pipeline: str) -> PipelinePoll | None:
    """The pipeline's poll bookkeeping, if it was ever scheduled."""
    return session.exec(
        select(PipelinePoll)
        .where(PipelinePoll.pipeline == pipeline)
        .execution_options(populate_existing=True)
    ).first()


# --- notifier helpers --------------------------------------------------------------------------


def posted_executions(
    *, session: Session, execution_ids: list[str]
) -> dict[tuple[str, str], PostedExecution]:
    """The parent messages of these executions in every channel, by (channel, execution)."""
    if not execution_ids:
        return {}
    rows = session.exec(
        select(PostedExecution)
        .where(col(PostedExecution.execution_id).in_(execution_ids))
        .execution_options(populate_existing=True)
    )
    return {(row.channel_id, row.execution_id): row for row in rows}


def event_reply_payload(*, session: Session, channel_id: str, message_ts: str) -> str | None:
    """The payload of the notification thread reply posted as ``message_ts`` in the channel,
    None when that message is not one (a status message, say)."""
    event = session.exec(
        select(PostedEvent).where(
            PostedEvent.channel_id == channel_id, PostedEvent.message_ts == message_ts
        )
    ).first()
    if event is None:
        return None
    return queued_reply_payload(
        session=session,
        channel_id=channel_id,
        execution_id=event.execution_id,
        event_key=event.event_key,
    )


def queued_reply_payload(
    *, session: Session, channel_id: str, execution_id: str, event_key: str
) -> str | None:
    """The payload a thread reply was queued with (to redraw it once resolved), if still kept."""
    return session.exec(
        select(OutboxMessage.payload)
        .where(
            OutboxMessage.channel_id == channel_id,
            OutboxMessage.execution_id == execution_id,
            OutboxMessage.event_key == event_key,
            OutboxMessage.kind == "reply",
        )
        .order_by(col(OutboxMessage.id))
    ).first()
