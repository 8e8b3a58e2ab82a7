"""The watcher: read each due pipeline once, compare, and queue what each channel has not seen.

A tick reads each pipeline that is due once (ListPipelineExecutions, then GetPipelineState,
whatever the number of channels), builds each recent execution's snapshot as each channel
would see it, compares its hash with what the channel last showed (stored), and queues the
differences in the outbox: the parent message (a post, then updates in place) and the
thread events (each recorded once under its key, in the same transaction that queues it).
All of a pipeline's writes are one transaction. On the embedded engine the change tokens
tell which pipelines changed since their last read; only those, and those with a reminder
due, are read.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Final

from sqlmodel import Session

from bot.notify.context import Lookups, ThreadContext, TickContext, TickStats, earliest
from bot.notify.deletion import PIPELINE_NOT_FOUND, pipeline_not_found
from bot.notify.reminders import Reminders
from bot.notify.snapshot import (
    APPROVAL,
    APPROVAL_RESOLVED,
    FAILED,
    FAILURE_RESOLVED,
    FINISHED,
    MANUAL_RETRY,
    RETRIED,
    ROLLED_BACK,
    STOPPED,
    SUPERSEDED,
    WAITING_FOR_APPROVAL,
    Event,
    execution_snapshot,
    needs_action_details,
    snapshot_events,
)
from bot.ops.permissions import Permissions
from bot.ops.pipeline_ops import OpsError, PipelineOps
from bot.ops.pipeline_state import FAILED_OR_STOPPED, RollbackTarget, is_in_progress
from bot.slack.access import OPERATIONS_CREATED, OPERATIONS_RETRIED
from bot.slack.kit import fallback_text
from bot.slack.notifications import event_reply, parent_message, resolved_reply
from storage import bot_store, notify_store
from storage.db import SessionFactory, transaction, utc
from storage.models import PostedExecution, Subscription

log = logging.getLogger(__name__)

RECENT_EXECUTIONS: Final = 5
"""Executions read per pipeline: older ones no longer change what a channel shows."""
IDLE_FACTOR: Final = 6
"""Without change tokens, a pipeline with no execution in progress is read this many
times less often than a busy one."""
QUIET_RECHECK_SECONDS: Final = 24 * 60 * 60
"""Where the backend keeps change tokens, an unchanged pipeline is read again only when a
reminder falls due, or after this long (plus up to an hour, spread by name)."""
MAX_BACKOFF_SECONDS: Final = 300
"""The longest wait before a throttled pipeline is read again."""
RETRY_AUDIT_WINDOW: Final = timedelta(days=7)
"""How long after a failed run a retry recorded in the audit log can be the stage's retry."""

_FAILURE_KINDS: Final = frozenset(
    {FAILED, FAILURE_RESOLVED, FINISHED, STOPPED, SUPERSEDED, RETRIED, ROLLED_BACK}
)
_APPROVAL_KINDS: Final = frozenset({APPROVAL, APPROVAL_RESOLVED})
_RESOLVED_KINDS: Final = frozenset({APPROVAL_RESOLVED, FAILURE_RESOLVED})


def _state_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _as_datetime(value: Any) -> datetime | None:
    return utc(value) if isinstance(value, datetime) else None


def _has_approval(snapshot: Mapping[str, Any]) -> bool:
    return any(
        action.get("status") == WAITING_FOR_APPROVAL
        for stage in snapshot.get("stages") or []
        for action in stage.get("actions") or []
    )


def _wanted(
    subscription: Subscription, snapshot: Mapping[str, Any], posted: PostedExecution | None
) -> bool:
    """Whether the channel sees this execution's parent message (now or already)."""
    if posted is not None or subscription.events == "all":
        return True
    if subscription.events == "failures":
        return snapshot.get("status") in FAILED_OR_STOPPED
    return _has_approval(snapshot)


def _keep_event(subscription: Subscription, event: Event) -> bool:
    if subscription.events == "failures":
        return event.kind in _FAILURE_KINDS
    if subscription.events == "approvals":
        return event.kind in _APPROVAL_KINDS
    return True


def _automatic_rollbacks(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The automatic rollbacks among the summaries, by the execution whose failure started
    each: an ``AutomatedRollback`` trigger's ``triggerDetail`` is that execution's ID (the
    embedded engine sets it so; on AWS a detail that names no listed execution matches
    nothing)."""
    found: dict[str, Mapping[str, Any]] = {}
    for summary in summaries:
        trigger = summary.get("trigger") or {}
        if trigger.get("triggerType") == "AutomatedRollback" and trigger.get("triggerDetail"):
            found.setdefault(str(trigger["triggerDetail"]), summary)
    return found


def _starter(
    session: Session, pipeline: str, execution_id: str, summary: Mapping[str, Any]
) -> str | None:
    """Who started the execution from Slack, as `status` says it: the recorded starter, or for
    the execution a creation started, whoever created the pipeline in Slack then."""
    found = bot_store.get_starter(session=session, execution_id=execution_id)
    if found is not None:
        return found.user_id
    trigger = summary.get("trigger") or {}
    at = summary.get("startTime")
    if trigger.get("triggerType") != "CreatePipeline" or not isinstance(at, datetime):
        return None
    entry = bot_store.last_actor(
        session=session, pipeline=pipeline, operations=OPERATIONS_CREATED, around=at
    )
    return entry.user_id if entry is not None else None


class Watcher:
    """Reads the subscribed pipelines and queues what changed for each channel."""

    def __init__(
        self,
        *,
        ops: PipelineOps,
        sessions: SessionFactory,
        clock: Callable[[], datetime],
        interval_seconds: float,
        permissions: Permissions | None,
        reminders: Reminders,
    ) -> None:
        self._ops = ops
        self._sessions = sessions
        self._clock = clock
        self._interval = float(interval_seconds)
        self._permissions = permissions
        self._reminders = reminders

    def tick(self) -> TickStats:
        """Read every due pipeline once and queue what changed.

        On the embedded engine one query first tells which pipelines changed since their
        last read (change tokens): only those, and those with a reminder due, are read. On
        AWS, pipelines with an execution in progress are read every tick, idle ones every
        ``IDLE_FACTOR`` ticks."""
        stats = TickStats()
        now = self._clock()
        tokens: dict[str, str] | None = None
        try:
            tokens = self._ops.change_tokens()
            if tokens is not None:
                stats.backend_calls += 1
                stats.token_reads += 1
        except OpsError as exc:
            log.warning("notifier: cannot read change tokens: %s", exc.message)
        with self._sessions() as session:
            due = notify_store.due_pipelines(session=session, now=now, tokens=tokens)
        for pipeline in due:
            token = None if tokens is None else tokens.get(pipeline)
            try:
                self._tick_pipeline(pipeline, stats, token=token)
            except Exception:  # one broken pipeline must not stop the others
                log.exception("notifier: reading %s failed", pipeline)
                self._schedule(pipeline, error="internal error", idle=True, token=token)
        return stats

    def due(self) -> bool:
        """Whether a tick now would read a pipeline: one changed since its last read (the
        change tokens, whichever process changed it), one never read (a new subscription),
        or one due by its schedule (a reminder, a resumed channel, AWS's interval). Reads
        only, two queries: cheap enough to ask twice a second between runs."""
        try:
            tokens = self._ops.change_tokens()
        except OpsError as exc:
            log.debug("notifier: cannot read change tokens: %s", exc.message)
            return False
        with self._sessions() as session:
            return bool(
                notify_store.due_pipelines(
                    session=session, now=self._clock(), tokens=tokens, limit=1
                )
            )

    def _schedule(
        self,
        pipeline: str,
        *,
        error: str | None,
        idle: bool,
        backoff: int = 0,
        token: str | None = None,
    ) -> None:
        """Record a read that failed, and when to try again."""
        now = self._clock()
        wait = backoff or (self._interval * (IDLE_FACTOR if idle else 1))
        with transaction(self._sessions) as session:
            notify_store.schedule_poll(
                session=session,
                pipeline=pipeline,
                next_poll_at=now + timedelta(seconds=wait),
                backoff_seconds=backoff,
                error=error,
                polled_at=now,
                change_token=token,
            )

    def _next_read(
        self,
        *,
        pipeline: str,
        now: datetime,
        busy: bool,
        token: str | None,
        reminder_due: datetime | None,
    ) -> datetime:
        if token is not None:  # the change token tells when to read again
            # Spread over an hour by name: pipelines read together are not re-read together.
            wait = float(QUIET_RECHECK_SECONDS + zlib.crc32(pipeline.encode()) % 3600)
        else:
            wait = self._interval * (1 if busy else IDLE_FACTOR)
        next_read = now + timedelta(seconds=wait)
        return next_read if reminder_due is None else max(now, min(next_read, reminder_due))

    def _tick_pipeline(self, pipeline: str, stats: TickStats, *, token: str | None) -> None:
        stats.pipelines_read += 1
        try:
            # The summaries first: the state read after them is never behind them.
            stats.backend_calls += 1
            summaries = self._ops.executions(pipeline, RECENT_EXECUTIONS)
            stats.backend_calls += 1
            state = self._ops.state(pipeline)
        except OpsError as exc:
            if exc.code == "ThrottlingException":
                with self._sessions() as session:
                    poll = notify_store.get_poll(session=session, pipeline=pipeline)
                previous = poll.backoff_seconds if poll is not None else 0
                backoff = min(max(previous * 2, int(self._interval)), MAX_BACKOFF_SECONDS)
                log.warning("notifier: %s throttled; next read in %d s", pipeline, backoff)
                self._schedule(pipeline, error=exc.message, idle=False, backoff=backoff)
            elif exc.code == PIPELINE_NOT_FOUND:  # deleted outside Slack: close it
                pipeline_not_found(
                    sessions=self._sessions,
                    pipeline=pipeline,
                    clock=self._clock,
                    read_again_in=self._interval,
                    token=token,
                )
            else:
                log.warning("notifier: cannot read %s: %s", pipeline, exc.message)
                self._schedule(pipeline, error=exc.message, idle=True, token=token)
            return
        busy = any(is_in_progress(s.get("status")) for s in summaries)
        now = self._clock()
        lookups = Lookups(
            ops=self._ops, permissions=self._permissions, pipeline=pipeline, stats=stats
        )
        reminder_due: datetime | None = None
        with transaction(self._sessions) as session:
            tick = TickContext(
                session=session, pipeline=pipeline, lookups=lookups, stats=stats, now=now
            )
            # A suspended subscription's channel refuses pipebot: nothing is queued for it
            # until someone subscribes there again (then its messages catch up at once).
            subscriptions = [
                s
                for s in notify_store.subscriptions_for_pipeline(session=session, pipeline=pipeline)
                if s.suspended_at is None
            ]
            ids = [str(s.get("pipelineExecutionId")) for s in summaries]
            posted = notify_store.posted_executions(session=session, execution_ids=ids)
            rollbacks = _automatic_rollbacks(summaries)
            for summary in summaries:
                due = self._follow_execution(
                    tick,
                    summary=summary,
                    state=state,
                    subscriptions=subscriptions,
                    posted=posted,
                    rolled_back_by=rollbacks.get(str(summary.get("pipelineExecutionId"))),
                )
                reminder_due = earliest(reminder_due, due)
            notify_store.schedule_poll(
                session=session,
                pipeline=pipeline,
                next_poll_at=self._next_read(
                    pipeline=pipeline, now=now, busy=busy, token=token, reminder_due=reminder_due
                ),
                polled_at=now,
                change_token=token,
            )

    def _follow_execution(
        self,
        tick: TickContext,
        *,
        summary: Mapping[str, Any],
        state: Mapping[str, Any],
        subscriptions: Sequence[Subscription],
        posted: Mapping[tuple[str, str], PostedExecution],
        rolled_back_by: Mapping[str, Any] | None = None,
    ) -> datetime | None:
        """Queue what each channel has not seen of this execution; returns when one of its
        approval reminders falls due next (None if none will). ``rolled_back_by``: the
        summary of the automatic rollback this execution's failure led to, if any."""
        execution_id = str(summary.get("pipelineExecutionId") or "")
        if not execution_id:
            return None
        reminder_due: datetime | None = None
        running = is_in_progress(summary.get("status"))
        last_change = _as_datetime(summary.get("lastUpdateTime")) or _as_datetime(
            summary.get("startTime")
        )
        starter: str | None = None
        starter_read = False
        for subscription in subscriptions:
            row = posted.get((subscription.channel_id, execution_id))
            # An execution that ended before the channel subscribed is history, not news.
            if (
                row is None
                and not running
                and last_change is not None
                and last_change < utc(subscription.created_at)
            ):
                continue
            if not starter_read:
                starter = _starter(tick.session, tick.pipeline, execution_id, summary)
                starter_read = True
            thread = tick.thread(subscription.channel_id, execution_id)
            previous = json.loads(row.last_state) if row is not None else None
            snapshot_of = functools.partial(
                execution_snapshot,
                pipeline=tick.pipeline,
                state=state,
                summary=summary,
                started_by=starter,
                previous=previous,
                rolled_back_by=rolled_back_by,
            )
            snapshot = snapshot_of()
            if needs_action_details(
                snapshot, previous, parallel=summary.get("executionMode") == "PARALLEL"
            ):
                # A newer execution entered a stage this one was seen in: the state no
                # longer shows how its actions ended (an approval's answer, say).
                snapshot = snapshot_of(action_details=tick.lookups.action_details(execution_id))
            text = json.dumps(snapshot, sort_keys=True, separators=(",", ":"))
            digest = _state_hash(text)
            shown = row is not None
            if (row is None or row.last_state_hash != digest) and _wanted(
                subscription, snapshot, row
            ):
                _show_execution(
                    thread,
                    subscription,
                    snapshot,
                    previous=previous,
                    text=text,
                    digest=digest,
                    redraw=row is not None and not row.last_state_hash,
                )
                shown = True
            if shown and subscription.events != "failures":
                reminder_due = earliest(reminder_due, self._reminders.queue(thread, snapshot))
        return reminder_due


def _show_execution(
    thread: ThreadContext,
    subscription: Subscription,
    snapshot: Mapping[str, Any],
    *,
    previous: Mapping[str, Any] | None,
    text: str,
    digest: str,
    redraw: bool = False,
) -> None:
    """Queue the parent message (post or update) and the new thread events.

    An update that would draw the parent exactly as it stands is not queued (a newer
    execution entering a stage changes what is stored of this one, not what it shows): it
    would be a Slack call for nothing, and the channel's messages queued behind it would
    wait for it. ``redraw`` (set after a resume) queues it all the same."""
    _, created = notify_store.upsert_posted_execution(
        session=thread.session,
        channel_id=thread.channel,
        pipeline=thread.pipeline,
        execution_id=thread.execution_id,
        last_state=text,
        last_state_hash=digest,
        at=thread.now,
    )
    message = parent_message(snapshot=snapshot, now=thread.now)
    if created:
        thread.enqueue("post", message, key=None)
        thread.stats.posts += 1
    elif redraw or previous is None or parent_message(snapshot=previous, now=thread.now) != message:
        thread.enqueue("update", message, key=None)
        thread.stats.updates += 1
    for event in snapshot_events(before=previous, after=snapshot):
        if _keep_event(subscription, event):
            _queue_event(thread, event)


def _queue_event(thread: ThreadContext, event: Event) -> None:
    """Queue a thread event once: a new reply, or the update of the reply it resolves."""
    resolved = event.kind in _RESOLVED_KINDS or event.kind not in (APPROVAL, FAILED)
    if not thread.record_once(event.key, resolved=resolved):
        return
    if event.kind in _RESOLVED_KINDS:
        _resolve(thread, event)
        return
    if event.kind == RETRIED and event.trigger == MANUAL_RETRY:
        event = replace(event, by=_retried_by(thread, event.stage))
    approvers: Sequence[str] = ()
    custom_data: str | None = None
    external_link: str | None = None
    log_tail: str | None = None
    rollback_target: RollbackTarget | None = None
    if event.kind == APPROVAL:
        approvers = thread.lookups.approvers(
            session=thread.session, execution_id=thread.execution_id
        )
        custom_data, external_link = thread.lookups.approval_config(event.stage, event.action)
    elif event.kind == FAILED:
        if event.action_execution_id:
            log_tail = thread.lookups.log_tail(event.action_execution_id)
        rollback_target = thread.lookups.rollback_target(event.stage)
    reply = event_reply(
        event=event,
        pipeline=thread.pipeline,
        execution_id=thread.execution_id,
        approvers=approvers,
        custom_data=custom_data,
        external_link=external_link,
        log_tail=log_tail,
        now=thread.now,
        rollback_target=rollback_target,
    )
    thread.enqueue("reply", reply, key=event.key)
    thread.stats.replies += 1


def _retried_by(thread: ThreadContext, stage: str | None) -> str | None:
    """Who retried ``stage`` of the thread's execution from Slack (the audit log: the retry
    command or a Retry button), None when it was retried elsewhere.

    Only a retry recorded after the stage's previous run failed can be this one: an earlier
    retry from Slack must not be pinned on a later one made from the console. That failure
    is the last action execution of the stage to end unsuccessfully before the latest one
    started (ListActionExecutions, read once per tick); when none can be read, the latest
    retry from Slack of that stage and execution is named."""
    details = [
        d
        for d in thread.lookups.action_details(thread.execution_id)
        if d.get("stageName") == stage and isinstance(d.get("startTime"), datetime)
    ]
    latest_start = max((d["startTime"] for d in details), default=None)
    previous_end = max(
        (
            d["lastUpdateTime"]
            for d in details
            if d["startTime"] < latest_start
            and d.get("status") not in ("Succeeded", "InProgress")
            and isinstance(d.get("lastUpdateTime"), datetime)
        ),
        default=None,
    )
    entry = bot_store.last_actor(
        session=thread.session,
        pipeline=thread.pipeline,
        operations=OPERATIONS_RETRIED,
        execution_id=thread.execution_id,
        stage=stage,
        around=previous_end,
        before=timedelta(0),
        after=RETRY_AUDIT_WINDOW,
    )
    return entry.user_id if entry is not None else None


def _resolve(thread: ThreadContext, event: Event) -> None:
    """Queue the update that replaces a reply's buttons with the outcome (an approval
    answered, a failure retried), keeping what the reply said."""
    target = event.resolves or ""
    if not notify_store.mark_event_resolved(
        session=thread.session,
        channel_id=thread.channel,
        execution_id=thread.execution_id,
        event_key=target,
    ):
        return  # never posted here (filtered), or already resolved
    original = notify_store.queued_reply_payload(
        session=thread.session,
        channel_id=thread.channel,
        execution_id=thread.execution_id,
        event_key=target,
    )
    blocks: list[dict[str, Any]] = (
        list(json.loads(original).get("blocks") or []) if original else []
    )
    outcome = event.outcome or "Resolved"
    new_blocks = resolved_reply(original_blocks=blocks, outcome=outcome)
    payload = {"text": fallback_text(blocks=new_blocks), "blocks": new_blocks}
    thread.enqueue("update", payload, key=target)
    thread.stats.updates += 1
