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
  (``storage.lease_store``);
- a channel Slack refuses for good has its subscriptions suspended (``suspend_channel``):
  ``due_outbox`` skips its messages, ``due_pipelines`` and ``due_digests`` its
  subscriptions, until someone subscribes there again (``subscribe`` calls
  ``resume_channel``, which drops what the current state will replace).

Times passed in are normalised to UTC (SQLite compares them as text). Timestamps come back
naive from SQLite: pass them through ``storage.db.utc``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
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
    A suspended channel is resumed (``resume_channel``: call it first to learn what was).
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
    # Someone subscribing here means the channel takes messages again.
    resume_channel(session=session, channel_id=channel_id, at=at)
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
    """Remove the channel's subscription to the pipeline; False if there was none.

    Removing a suspended subscription, when it was the channel's last, drops the messages
    that waited for the channel (Slack refused it: they could only fail again)."""
    where = (col(Subscription.pipeline) == pipeline, col(Subscription.channel_id) == channel_id)
    row = session.exec(select(Subscription).where(*where)).first()
    if row is None:
        return False
    suspended = row.suspended_at is not None
    session.execute(delete(Subscription).where(*where))
    if suspended and not _has_subscription(session, channel_id):
        _drop_outbox(
            session,
            [m.id for m in _undone(session, channel_id) if m.id is not None],
            error="dropped: the suspended channel's last subscription was removed",
            now=utcnow(),
        )
    return True


def _has_subscription(session: Session, channel_id: str) -> bool:
    return (
        session.exec(select(Subscription.id).where(Subscription.channel_id == channel_id)).first()
        is not None
    )


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


def end_pipeline_subscriptions(*, session: Session, pipeline: str) -> list[Subscription]:
    """Remove every channel's subscription to a deleted pipeline, and its poll bookkeeping
    (the notifier reads it no more); returns the subscriptions as they were, in the order
    they were made. A suspended channel whose last subscription this was has its waiting
    messages dropped, as ``unsubscribe`` does. Nothing to remove: []."""
    rows = subscriptions_for_pipeline(session=session, pipeline=pipeline)
    for row in rows:
        session.expunge(row)  # kept as they were, for the caller
        unsubscribe(session=session, pipeline=pipeline, channel_id=row.channel_id)
    session.execute(delete(PipelinePoll).where(col(PipelinePoll.pipeline) == pipeline))
    return rows


# --- suspension ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suspension:
    """A suspended subscription as it was (``resume_channel`` returns them once cleared)."""

    pipeline: str
    channel_id: str
    error: str
    detail: str | None
    suspended_at: datetime
    created_by: str


def suspend_channel(
    *,
    session: Session,
    channel_id: str,
    error: str,
    detail: str | None = None,
    message_id: int | None = None,
    at: datetime | None = None,
) -> list[Subscription]:
    """Suspend the channel's active subscriptions: Slack answered ``error`` (its code, at
    most 64 characters) to the call carried by outbox message ``message_id``, described by
    ``detail``. Returns the subscriptions this call suspended, by pipeline ([] when there
    were none, or all were suspended already: tell whoever subscribed only once)."""
    where = (
        col(Subscription.channel_id) == channel_id,
        col(Subscription.suspended_at).is_(None),
    )
    ids = list(session.exec(select(Subscription.id).where(*where)))
    if not ids:
        return []
    session.execute(
        update(Subscription)
        .where(col(Subscription.id).in_(ids), *where)
        .values(
            suspended_at=_at(at),
            suspended_error=error[:64],
            suspended_detail=detail,
            suspended_message_id=message_id,
        )
    )
    return list(
        session.exec(
            select(Subscription)
            .where(col(Subscription.id).in_(ids), col(Subscription.suspended_at).is_not(None))
            .order_by(col(Subscription.pipeline))
            .execution_options(populate_existing=True)
        )
    )


def suspended_subscriptions(
    *, session: Session, channel_id: str | None = None, limit: int | None = None
) -> list[Subscription]:
    """Suspended subscriptions (of one channel, or everywhere), by channel and pipeline."""
    statement = select(Subscription).where(col(Subscription.suspended_at).is_not(None))
    if channel_id is not None:
        statement = statement.where(Subscription.channel_id == channel_id)
    statement = statement.order_by(col(Subscription.channel_id), col(Subscription.pipeline))
    return list(session.exec(statement.limit(limit)))


def resume_channel(
    *, session: Session, channel_id: str, at: datetime | None = None
) -> list[Suspension]:
    """Resume the channel's suspended subscriptions; returns them as they were ([] if none).

    What waited for the channel is sorted so that it converges to the current state rather
    than replaying stale progress one message at a time:

    - dropped: parent message updates, digests, and everything of an execution whose parent
      message never went out (its records are deleted: the next read posts it afresh, with
      the thread events its current state shows);
    - kept, due at once: thread replies under parent messages that are out, and the
      updates that resolve their buttons (they are the thread's events);
    - every parent message that is out is redrawn from the current state on the next read
      (its recorded state is marked stale), and the channel's pipelines are read at once.
    """
    rows = suspended_subscriptions(session=session, channel_id=channel_id)
    if not rows:
        return []
    was = [
        Suspension(
            pipeline=row.pipeline,
            channel_id=row.channel_id,
            error=row.suspended_error or "",
            detail=row.suspended_detail,
            suspended_at=utc(row.suspended_at or _at(at)),
            created_by=row.created_by,
        )
        for row in rows
    ]
    now = _at(at)
    session.execute(
        update(Subscription)
        .where(
            col(Subscription.channel_id) == channel_id,
            col(Subscription.suspended_at).is_not(None),
        )
        .values(
            suspended_at=None,
            suspended_error=None,
            suspended_detail=None,
            suspended_message_id=None,
        )
    )
    unposted = set(
        session.exec(
            select(PostedExecution.execution_id).where(
                PostedExecution.channel_id == channel_id,
                col(PostedExecution.message_ts).is_(None),
            )
        )
    )
    dropped: list[int] = []
    kept: list[int] = []
    for message in _undone(session, channel_id):
        assert message.id is not None
        stale = (
            message.execution_id is None
            or message.execution_id in unposted
            or (message.kind != "reply" and message.event_key is None)
        )
        (dropped if stale else kept).append(message.id)
    _drop_outbox(
        session, dropped, error="dropped on resume: the current state replaces it", now=now
    )
    if kept:
        session.execute(
            update(OutboxMessage).where(col(OutboxMessage.id).in_(kept)).values(next_attempt_at=now)
        )
    if unposted:
        session.execute(
            delete(PostedEvent).where(
                col(PostedEvent.channel_id) == channel_id,
                col(PostedEvent.execution_id).in_(unposted),
            )
        )
        session.execute(
            delete(PostedExecution).where(
                col(PostedExecution.channel_id) == channel_id,
                col(PostedExecution.execution_id).in_(unposted),
            )
        )
    session.execute(
        update(PostedExecution)
        .where(col(PostedExecution.channel_id) == channel_id)
        .values(last_state_hash="")
    )
    session.execute(
        update(PipelinePoll)
        .where(col(PipelinePoll.pipeline).in_([s.pipeline for s in was]))
        .values(next_poll_at=now, change_token=None)
    )
    return was


def _undone(session: Session, channel_id: str) -> list[OutboxMessage]:
    return list(
        session.exec(
            select(OutboxMessage)
            .where(OutboxMessage.channel_id == channel_id, col(OutboxMessage.done_at).is_(None))
            .order_by(col(OutboxMessage.id))
        )
    )


def _drop_outbox(session: Session, message_ids: list[int], *, error: str, now: datetime) -> None:
    """Mark messages done without sending them, saying why in ``last_error``."""
    if message_ids:
        session.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.id).in_(message_ids), col(OutboxMessage.done_at).is_(None))
            .values(done_at=utc(now), last_error=error)
        )


# --- parent messages ---------------------------------------------------------------------------


def due_digests(*, session: Session, today: str, time_of_day: str) -> list[Subscription]:
    """Active subscriptions whose digest time (HH:MM, local) has come today (YYYY-MM-DD,
    local) and whose digest for today has not been sent; by channel, time, pipeline."""
    statement = (
        select(Subscription)
        .where(
            col(Subscription.suspended_at).is_(None),
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
    channel only, and a suspended channel's messages wait until it is resumed."""
    suspended = select(Subscription.channel_id).where(col(Subscription.suspended_at).is_not(None))
    heads = (
        select(func.min(OutboxMessage.id))
        .where(
            col(OutboxMessage.done_at).is_(None),
            col(OutboxMessage.channel_id).not_in(suspended),
        )
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


def drop_outbox(*, session: Session, message_id: int, error: str, now: datetime) -> bool:
    """Give a message up: done without being sent, ``error`` saying why; False if unknown
    or already done."""
    result = session.execute(
        update(OutboxMessage)
        .where(col(OutboxMessage.id) == message_id, col(OutboxMessage.done_at).is_(None))
        .values(done_at=utc(now), last_error=error)
    )
    return _rowcount(result) > 0


def newer_update_queued(*, session: Session, message: OutboxMessage) -> bool:
    """Whether an update of the same message (parent or thread reply) is queued after this
    one: then this one is stale, and only the newest need go out."""
    if message.kind != "update" or message.id is None:
        return False
    key = (
        col(OutboxMessage.event_key).is_(None)
        if message.event_key is None
        else col(OutboxMessage.event_key) == message.event_key
    )
    return (
        session.exec(
            select(OutboxMessage.id).where(
                OutboxMessage.channel_id == message.channel_id,
                OutboxMessage.execution_id == message.execution_id,
                OutboxMessage.kind == "update",
                key,
                col(OutboxMessage.done_at).is_(None),
                col(OutboxMessage.id) > message.id,
            )
        ).first()
        is not None
    )


def is_queued(
    *,
    session: Session,
    channel_id: str,
    execution_id: str,
    kind: OutboxKind,
    event_key: str | None,
) -> bool:
    """Whether an unsent ``kind`` message of this execution (``event_key`` None: its parent)
    waits in the channel's queue."""
    key = (
        col(OutboxMessage.event_key).is_(None)
        if event_key is None
        else col(OutboxMessage.event_key) == event_key
    )
    return (
        session.exec(
            select(OutboxMessage.id).where(
                OutboxMessage.channel_id == channel_id,
                OutboxMessage.execution_id == execution_id,
                OutboxMessage.kind == kind,
                key,
                col(OutboxMessage.done_at).is_(None),
            )
        ).first()
        is not None
    )


def repost_parent(*, session: Session, message_id: int, error: str, now: datetime) -> bool:
    """Turn a parent message's update into a post of a new parent message, due at once, in
    the same place in its channel's queue (the old message is gone: ``message_not_found``);
    the execution's recorded ``ts`` is cleared until the new one is out. False if the
    message is not an undone parent update."""
    message = session.get(OutboxMessage, message_id)
    if (
        message is None
        or message.done_at is not None
        or message.kind != "update"
        or message.event_key is not None
        or message.execution_id is None
    ):
        return False
    session.execute(
        update(OutboxMessage)
        .where(col(OutboxMessage.id) == message_id)
        .values(kind="post", last_error=error, next_attempt_at=utc(now))
    )
    session.execute(
        update(PostedExecution)
        .where(
            col(PostedExecution.channel_id) == message.channel_id,
            col(PostedExecution.execution_id) == message.execution_id,
        )
        .values(message_ts=None, updated_at=utc(now))
    )
    return True


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
    """Pipelines with an active subscription due for a read: never read, due by their
    schedule, or, when the backend keeps change tokens (``tokens``: pipeline -> token),
    changed since their last read. Never read first, then the longest overdue, then the
    changed ones."""
    subscribed = (
        select(Subscription.pipeline)
        .where(col(Subscription.suspended_at).is_(None))
        .distinct()
        .subquery()
    )
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


def pipeline_posted_executions(
    *, session: Session, pipeline: str, channel_ids: list[str]
) -> list[PostedExecution]:
    """The pipeline's parent messages in these channels, oldest first."""
    if not channel_ids:
        return []
    return list(
        session.exec(
            select(PostedExecution)
            .where(
                PostedExecution.pipeline == pipeline,
                col(PostedExecution.channel_id).in_(channel_ids),
            )
            .order_by(col(PostedExecution.id))
            .execution_options(populate_existing=True)
        )
    )


def unresolved_events(*, session: Session, channel_id: str, execution_id: str) -> list[PostedEvent]:
    """The execution's thread replies in the channel whose buttons still stand (an approval
    not answered, a failure not retried), oldest first."""
    return list(
        session.exec(
            select(PostedEvent)
            .where(
                PostedEvent.channel_id == channel_id,
                PostedEvent.execution_id == execution_id,
                col(PostedEvent.resolved).is_(False),
            )
            .order_by(col(PostedEvent.id))
        )
    )


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
