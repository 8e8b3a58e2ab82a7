"""A deleted pipeline's channels: close its open messages, end its subscriptions, say so.

Without this a deleted pipeline's parent message kept showing "In progress" forever, its
channels kept it in ``subscriptions``, the watcher failed to read it every tick, and only
the person who deleted it was told. ``close_deleted_pipeline`` does, in one transaction:

- every parent message (in a channel that follows the pipeline) of an execution that had
  not finished is redrawn as ended ("the pipeline was deleted by @x"), and the buttons of
  its thread replies (an approval, a failed stage) give way to why they are gone;
- the channel gets one message saying the pipeline was deleted and no longer followed;
- the pipeline's subscriptions and poll bookkeeping are removed: the watcher reads it no
  more, and ``subscriptions`` lists it no more.

Two paths lead here: the Delete button's confirmation (``handlers.actions``), and the
watcher when a read answers ``PipelineNotFoundException`` (deleted on AWS, by another
process, by CloudFormation). The watcher acts on the second such answer in a row, an
interval apart (``pipeline_not_found``): a pipeline deleted and re-created at once, or a
read that raced a replacement, is not closed. Messages go out through the outbox, in order
behind what each channel already has queued. Everything is idempotent: closing a pipeline
twice finds nothing open and no subscription the second time.

(A suspended channel refuses pipebot: its subscription is removed with the others, and
nothing is queued for it.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from sqlmodel import Session

from bot.slack.deletion import (
    deleted_parent,
    deleted_snapshot,
    deletion_notice,
    deletion_outcome,
    is_open,
)
from bot.slack.kit import fallback_text
from bot.slack.notifications import resolved_reply
from storage import bot_store, notify_store
from storage.db import SessionFactory, transaction

log = logging.getLogger(__name__)

PIPELINE_NOT_FOUND: Final = "PipelineNotFoundException"
"""AWS's (and the engine's) answer to reading a pipeline that does not exist."""
NOT_FOUND_MARK: Final = "not found: read again before closing its messages"
"""The poll bookkeeping's error after a first ``PipelineNotFoundException``."""


@dataclass(frozen=True)
class Closed:
    """What closing a deleted pipeline queued: the channels told, and per channel the
    executions whose parent messages now say they ended."""

    pipeline: str
    channels: list[str] = field(default_factory=list)
    ended: dict[str, list[str]] = field(default_factory=dict)
    replies: int = 0
    """Thread replies whose buttons gave way."""


def close_deleted_pipeline(
    *,
    sessions: SessionFactory,
    pipeline: str,
    deleted_by: str | None,
    now: datetime,
) -> Closed:
    """Close a deleted pipeline's open messages, end its subscriptions and tell its channels
    (see the module docstring). ``deleted_by`` is the Slack user who deleted it, None when
    it was deleted outside pipebot (then an audit entry records it, as pipebot's)."""
    ended_here: dict[str, list[str]] = {}
    replies = 0
    with transaction(sessions) as session:
        ended = notify_store.end_pipeline_subscriptions(session=session, pipeline=pipeline)
        channels = [s.channel_id for s in ended if s.suspended_at is None]
        for posted in notify_store.pipeline_posted_executions(
            session=session, pipeline=pipeline, channel_ids=channels
        ):
            snapshot = json.loads(posted.last_state)
            if not is_open(snapshot):
                continue
            ended_here.setdefault(posted.channel_id, []).append(posted.execution_id)
            replies += _close_execution(
                session,
                channel_id=posted.channel_id,
                execution_id=posted.execution_id,
                snapshot=snapshot,
                deleted_by=deleted_by,
                now=now,
            )
        for channel in channels:
            notice = deletion_notice(
                pipeline=pipeline, deleted_by=deleted_by, ended=len(ended_here.get(channel, []))
            )
            _queue(
                session,
                channel,
                "post",
                notice,
                execution_id=None,
                key=f"deleted:{pipeline}",
                at=now,
            )
        if deleted_by is None and ended:
            bot_store.append_audit(
                session=session,
                user_id=bot_store.NOTIFIER_ACTOR,
                kind="notifier",
                what="deleted",
                outcome="ok",
                pipeline=pipeline,
                detail=(
                    "deleted outside pipebot (not found twice in a row): the subscriptions "
                    f"of {', '.join(s.channel_id for s in ended)} ended, "
                    f"{sum(len(v) for v in ended_here.values())} open messages closed"
                ),
                at=now,
            )
    closed = Closed(pipeline=pipeline, channels=channels, ended=ended_here, replies=replies)
    if ended:
        log.info(
            "notifier: %s was deleted; %d subscription(s) ended, %d message(s) closed",
            pipeline,
            len(ended),
            sum(len(v) for v in ended_here.values()),
        )
    return closed


def _close_execution(
    session: Session,
    *,
    channel_id: str,
    execution_id: str,
    snapshot: dict[str, Any],
    deleted_by: str | None,
    now: datetime,
) -> int:
    """Queue the ended parent and the updates that take the buttons off its thread's
    replies; returns how many replies."""
    message = deleted_parent(snapshot=snapshot, deleted_by=deleted_by, now=now)
    text = json.dumps(deleted_snapshot(snapshot, now=now), sort_keys=True, separators=(",", ":"))
    notify_store.upsert_posted_execution(
        session=session,
        channel_id=channel_id,
        pipeline=str(snapshot.get("pipeline") or ""),
        execution_id=execution_id,
        last_state=text,
        last_state_hash="deleted",
        at=now,
    )
    _queue(session, channel_id, "update", message, execution_id=execution_id, key=None, at=now)
    replies = 0
    outcome = deletion_outcome(deleted_by=deleted_by)
    for event in notify_store.unresolved_events(
        session=session, channel_id=channel_id, execution_id=execution_id
    ):
        if not notify_store.mark_event_resolved(
            session=session,
            channel_id=channel_id,
            execution_id=execution_id,
            event_key=event.event_key,
        ):
            continue
        original = notify_store.queued_reply_payload(
            session=session,
            channel_id=channel_id,
            execution_id=execution_id,
            event_key=event.event_key,
        )
        if original is None:
            continue  # pruned: nothing to redraw it from (its buttons stay, and fail politely)
        blocks = resolved_reply(
            original_blocks=list(json.loads(original).get("blocks") or []), outcome=outcome
        )
        payload = {"text": fallback_text(blocks=blocks), "blocks": blocks}
        _queue(
            session,
            channel_id,
            "update",
            payload,
            execution_id=execution_id,
            key=event.event_key,
            at=now,
        )
        replies += 1
    return replies


def _queue(
    session: Session,
    channel_id: str,
    kind: notify_store.OutboxKind,
    payload: dict[str, Any],
    *,
    execution_id: str | None,
    key: str | None,
    at: datetime,
) -> None:
    notify_store.enqueue(
        session=session,
        channel_id=channel_id,
        kind=kind,
        payload=json.dumps(payload),
        execution_id=execution_id,
        event_key=key,
        at=at,
    )


def pipeline_not_found(
    *,
    sessions: SessionFactory,
    pipeline: str,
    clock: Callable[[], datetime],
    read_again_in: float,
    token: str | None,
) -> Closed | None:
    """The watcher's read of ``pipeline`` answered ``PipelineNotFoundException``. The first
    time, read it again ``read_again_in`` seconds on (None); the second time in a row, close
    it as deleted outside pipebot (``close_deleted_pipeline``)."""
    now = clock()
    with sessions() as session:
        poll = notify_store.get_poll(session=session, pipeline=pipeline)
    if poll is not None and poll.last_error == NOT_FOUND_MARK:
        return close_deleted_pipeline(
            sessions=sessions, pipeline=pipeline, deleted_by=None, now=now
        )
    log.info("notifier: %s was not found; reading it again before closing its messages", pipeline)
    with transaction(sessions) as session:
        notify_store.schedule_poll(
            session=session,
            pipeline=pipeline,
            next_poll_at=now + timedelta(seconds=read_again_in),
            error=NOT_FOUND_MARK,
            polled_at=now,
            change_token=token,
        )
    return None
