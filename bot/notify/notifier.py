"""Channel notifications: read subscribed pipelines, queue Slack messages, send them.

One ``Notifier`` per process; only the holder of the ``notifier`` lease ticks, so several
pipebot processes on one database post each message once. A tick reads each pipeline that
is due once (ListPipelineExecutions, then GetPipelineState, whatever the number of channels),
compares each recent execution with what each channel last showed (stored), and queues the
differences in the outbox, all in one transaction per pipeline. ``flush_outbox`` then sends
the queue, in order per channel, about one message per channel per second; a failed call
stays queued and is retried later (never dropped).

Data flows one way: scheduler → pipeline client → notifier → Slack.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import WebClient
from sqlmodel import Session

from bot.ops.permissions import Permissions
from bot.ops.pipeline_ops import IN_PROGRESS, OpsError, PipelineOps, run_guarded
from bot.slack.blocks import fallback_text
from bot.slack.notifications import (
    APPROVAL,
    APPROVAL_RESOLVED,
    FAILED,
    FAILURE_RESOLVED,
    FINISHED,
    STOPPED,
    SUPERSEDED,
    WAITING_FOR_APPROVAL,
    Event,
    digest_message,
    event_reply,
    execution_snapshot,
    needs_action_details,
    parent_message,
    reminder_reply,
    resolved_reply,
    snapshot_events,
)
from storage import bot_store, notify_store
from storage.db import SessionFactory, transaction, utc, utcnow
from storage.models import OutboxMessage, PostedExecution, Subscription

log = logging.getLogger(__name__)

LEASE_NAME: Final = "notifier"
RECENT_EXECUTIONS: Final = 5
IDLE_FACTOR: Final = 6
QUIET_RECHECK_SECONDS: Final = 24 * 60 * 60
"""Where the backend keeps change tokens, an unchanged pipeline is read again only when a
reminder falls due, or after this long (plus up to an hour, spread by name)."""
MAX_BACKOFF_SECONDS: Final = 300
CHANNEL_GAP_SECONDS: Final = 1.0
"""Slack allows about one chat.postMessage per second per channel."""
WAITING_FOR_PARENT_SECONDS: Final = 2.0
APPROVAL_TIMEOUT_MINUTES: Final = 7 * 24 * 60
"""An approval action's timeout when its declaration sets no ``timeoutInMinutes``."""
FINAL_REMINDER_SHARE: Final = 0.1
FINAL_REMINDER_MAX_MINUTES: Final = 15.0
"""The final reminder goes out when less than this share of the timeout, or this many
minutes (whichever is smaller), remains."""
NO_ANSWER: Final = "no answer: "
"""How an outbox message's error starts when the call got no answer (a timeout, a lost
connection): Slack may have applied it, so a post is looked for before it is sent again."""
SENDING: Final = NO_ANSWER + "sent; the process stopped before Slack's answer was recorded"
"""Written before each post: what the next attempt finds when the process died mid-call."""
OUTBOX_EVENT_TYPE: Final = "pipebot_outbox"
"""The message metadata event type of every post: its payload names the outbox entry."""
_TIMEOUTS_KEPT: Final = 1024
_UTC_ZONE: Final = ZoneInfo("UTC")

_FAILURE_KINDS: Final = frozenset({FAILED, FAILURE_RESOLVED, FINISHED, STOPPED, SUPERSEDED})
_APPROVAL_KINDS: Final = frozenset({APPROVAL, APPROVAL_RESOLVED})
_FAILED_EXECUTION: Final = frozenset({"Failed", "Stopped", "Stopping"})
_RESOLVED_KINDS: Final = frozenset({APPROVAL_RESOLVED, FAILURE_RESOLVED})
# Slack answers these for a message that can never go out as it is: retrying would block
# the channel's queue for good, so the message is given up (logged, kept with its error).
_PERMANENT_ERRORS: Final = frozenset(
    {
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
        "invalid_blocks",
        "invalid_blocks_format",
        "msg_too_long",
        "msg_blocks_too_long",
        "no_text",
        "invalid_arguments",
    }
)


@dataclass
class TickStats:
    """What one tick did: pipelines read, backend calls made (``token_reads`` of them the
    one read of every pipeline's change token), Slack calls queued."""

    pipelines_read: int = 0
    backend_calls: int = 0
    token_reads: int = 0
    posts: int = 0
    updates: int = 0
    replies: int = 0


def _state_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _as_datetime(value: Any) -> datetime | None:
    return utc(value) if isinstance(value, datetime) else None


def _parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


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
        return snapshot.get("status") in _FAILED_EXECUTION
    return _has_approval(snapshot)


def _keep_event(subscription: Subscription, event: Event) -> bool:
    if subscription.events == "failures":
        return event.kind in _FAILURE_KINDS
    if subscription.events == "approvals":
        return event.kind in _APPROVAL_KINDS
    return True


class Notifier:
    """Posts and keeps current each subscribed channel's execution messages."""

    def __init__(
        self,
        *,
        ops: PipelineOps,
        sessions: SessionFactory,
        web_client: WebClient,
        holder_id: str,
        clock: Callable[[], datetime] = utcnow,
        interval_seconds: float = 10.0,
        permissions: Permissions | None = None,
        sleep: Callable[[float], None] = time.sleep,
        approval_reminder_minutes: int = 60,
        digest_zone: ZoneInfo = _UTC_ZONE,
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be positive, not {interval_seconds!r}")
        if approval_reminder_minutes < 1:
            raise ValueError(
                f"approval_reminder_minutes must be at least 1, not {approval_reminder_minutes!r}"
            )
        self._ops = ops
        self._sessions = sessions
        self._web = web_client
        self.holder_id = holder_id
        self._clock = clock
        self._interval = float(interval_seconds)
        self._permissions = permissions
        self._sleep = sleep
        self._reminder_minutes = approval_reminder_minutes
        self._digest_zone = digest_zone
        # (pipeline, stage, action, since) → the waiting approval's timeout in minutes: the
        # declaration is read once per approval, not on every tick while it waits.
        self._timeouts: dict[tuple[str, str, str, str], int] = {}
        self._last_sent: dict[str, datetime] = {}
        self._waiting = 0

    # --- the job -----------------------------------------------------------------------------

    def run_once(self) -> TickStats | None:
        """Tick and send the queue if this process holds the lease; None if another does."""
        with transaction(self._sessions) as session:
            held = notify_store.acquire_lease(
                session=session,
                name=LEASE_NAME,
                holder=self.holder_id,
                now=self._clock(),
                ttl_seconds=3 * self._interval,
            )
        if not held:
            return None
        stats = self.tick()
        self.queue_digests(stats)
        # Send what is due; a channel with more queued waits a second between messages,
        # within one interval at most (the rest goes out on the next run).
        for _ in range(max(1, int(self._interval))):
            sent = self.flush_outbox()
            if sent == 0 and self._waiting == 0:
                break
            self._sleep(CHANNEL_GAP_SECONDS)
        return stats

    def close(self) -> None:
        """Give the lease up so another process takes over at once (at shutdown)."""
        with transaction(self._sessions) as session:
            notify_store.release_lease(session=session, name=LEASE_NAME, holder=self.holder_id)

    def wake_pipeline(self, pipeline: str) -> None:
        """Read ``pipeline`` on the next tick, however idle it was."""
        with transaction(self._sessions) as session:
            poll = notify_store.get_poll(session=session, pipeline=pipeline)
            if poll is not None and poll.backoff_seconds == 0:
                notify_store.schedule_poll(
                    session=session, pipeline=pipeline, next_poll_at=self._clock()
                )

    # --- reading -----------------------------------------------------------------------------

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

    def _schedule(
        self,
        pipeline: str,
        *,
        error: str | None,
        idle: bool,
        backoff: int = 0,
        token: str | None = None,
    ) -> None:
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
            else:
                log.warning("notifier: cannot read %s: %s", pipeline, exc.message)
                self._schedule(pipeline, error=exc.message, idle=True, token=token)
            return
        busy = any(s.get("status") in IN_PROGRESS for s in summaries)
        now = self._clock()
        lookups = _Lookups(self._ops, self._permissions, pipeline, stats)
        reminder_due: datetime | None = None
        with transaction(self._sessions) as session:
            subscriptions = notify_store.subscriptions_for_pipeline(
                session=session, pipeline=pipeline
            )
            ids = [str(s.get("pipelineExecutionId")) for s in summaries]
            posted = notify_store.posted_executions(session=session, execution_ids=ids)
            for summary in summaries:
                due = self._follow_execution(
                    session,
                    pipeline=pipeline,
                    summary=summary,
                    state=state,
                    subscriptions=subscriptions,
                    posted=posted,
                    lookups=lookups,
                    stats=stats,
                    now=now,
                )
                reminder_due = _earliest(reminder_due, due)
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
        session: Session,
        *,
        pipeline: str,
        summary: Mapping[str, Any],
        state: Mapping[str, Any],
        subscriptions: Sequence[Subscription],
        posted: Mapping[tuple[str, str], PostedExecution],
        lookups: _Lookups,
        stats: TickStats,
        now: datetime,
    ) -> datetime | None:
        """Queue what each channel has not seen of this execution; returns when one of its
        approval reminders falls due next (None if none will)."""
        execution_id = str(summary.get("pipelineExecutionId") or "")
        if not execution_id:
            return None
        reminder_due: datetime | None = None
        running = summary.get("status") in IN_PROGRESS
        last_change = _as_datetime(summary.get("lastUpdateTime")) or _as_datetime(
            summary.get("startTime")
        )
        starter: str | None = None
        starter_read = False
        for subscription in subscriptions:
            channel = subscription.channel_id
            row = posted.get((channel, execution_id))
            # An execution that ended before the channel subscribed is history, not news.
            if (
                row is None
                and not running
                and last_change is not None
                and last_change < utc(subscription.created_at)
            ):
                continue
            if not starter_read:
                found = bot_store.get_starter(session=session, execution_id=execution_id)
                starter = found.user_id if found is not None else None
                starter_read = True
            previous = json.loads(row.last_state) if row is not None else None
            snapshot = execution_snapshot(
                pipeline=pipeline,
                state=state,
                summary=summary,
                started_by=starter,
                previous=previous,
            )
            if needs_action_details(snapshot, previous):
                # A newer execution entered a stage this one was seen in: the state no
                # longer shows how its actions ended (an approval's answer, say).
                snapshot = execution_snapshot(
                    pipeline=pipeline,
                    state=state,
                    summary=summary,
                    started_by=starter,
                    previous=previous,
                    action_details=lookups.action_details(execution_id),
                )
            text = json.dumps(snapshot, sort_keys=True, separators=(",", ":"))
            digest = _state_hash(text)
            shown = row is not None
            if (row is None or row.last_state_hash != digest) and _wanted(
                subscription, snapshot, row
            ):
                self._show_execution(
                    session,
                    subscription=subscription,
                    pipeline=pipeline,
                    execution_id=execution_id,
                    snapshot=snapshot,
                    previous=previous,
                    text=text,
                    digest=digest,
                    lookups=lookups,
                    stats=stats,
                    now=now,
                )
                shown = True
            if shown and subscription.events != "failures":
                due = self._queue_reminders(
                    session,
                    channel=channel,
                    pipeline=pipeline,
                    execution_id=execution_id,
                    snapshot=snapshot,
                    lookups=lookups,
                    stats=stats,
                    now=now,
                )
                reminder_due = _earliest(reminder_due, due)
        return reminder_due

    def _show_execution(
        self,
        session: Session,
        *,
        subscription: Subscription,
        pipeline: str,
        execution_id: str,
        snapshot: Mapping[str, Any],
        previous: Mapping[str, Any] | None,
        text: str,
        digest: str,
        lookups: _Lookups,
        stats: TickStats,
        now: datetime,
    ) -> None:
        """Queue the parent message (post or update) and the new thread events."""
        channel = subscription.channel_id
        _, created = notify_store.upsert_posted_execution(
            session=session,
            channel_id=channel,
            pipeline=pipeline,
            execution_id=execution_id,
            last_state=text,
            last_state_hash=digest,
            at=now,
        )
        message = parent_message(snapshot=snapshot, now=now)
        _enqueue(
            session,
            channel,
            "post" if created else "update",
            message,
            execution_id,
            key=None,
            now=now,
        )
        if created:
            stats.posts += 1
        else:
            stats.updates += 1
        for event in snapshot_events(before=previous, after=snapshot):
            if _keep_event(subscription, event):
                self._queue_event(
                    session,
                    channel=channel,
                    pipeline=pipeline,
                    execution_id=execution_id,
                    event=event,
                    lookups=lookups,
                    stats=stats,
                    now=now,
                )

    def _queue_reminders(
        self,
        session: Session,
        *,
        channel: str,
        pipeline: str,
        execution_id: str,
        snapshot: Mapping[str, Any],
        lookups: _Lookups,
        stats: TickStats,
        now: datetime,
    ) -> datetime | None:
        """Remind the approvers of each approval this channel was asked that still waits:
        once after the reminder delay, once more shortly before it times out. The event keys
        make each reminder go out once, whichever tick or process sees it. Returns when the
        next reminder falls due (None if none will)."""
        next_due: datetime | None = None
        for event in snapshot_events(before=None, after=snapshot):
            if event.kind != APPROVAL or not event.stage or not event.action:
                continue
            since = _as_datetime(_parse_iso(event.since))
            if since is None:
                continue
            asked = notify_store.get_event(
                session=session, channel_id=channel, execution_id=execution_id, event_key=event.key
            )
            if asked is None or asked.resolved:
                continue  # never asked here (or not yet), or answered already
            first_key = f"reminder:1:{event.key}"
            final_key = f"reminder:final:{event.key}"

            def sent(key: str) -> bool:
                found = notify_store.get_event(
                    session=session, channel_id=channel, execution_id=execution_id, event_key=key
                )
                return found is not None

            if sent(final_key):
                continue  # the final one stands for both: nothing more to send
            timeout = self._approval_timeout(pipeline, event, lookups)
            final_at = timeout - min(timeout * FINAL_REMINDER_SHARE, FINAL_REMINDER_MAX_MINUTES)
            first_at = min(float(self._reminder_minutes), final_at)
            waited = (now - since).total_seconds() / 60
            first_sent = sent(first_key)
            if waited >= final_at:
                keys = [final_key] if first_sent else [final_key, first_key]
                self._remind(
                    session,
                    channel=channel,
                    pipeline=pipeline,
                    execution_id=execution_id,
                    event=event,
                    keys=keys,
                    waited=waited,
                    final=True,
                    lookups=lookups,
                    stats=stats,
                    now=now,
                )
                continue
            if not first_sent and waited >= first_at:
                self._remind(
                    session,
                    channel=channel,
                    pipeline=pipeline,
                    execution_id=execution_id,
                    event=event,
                    keys=[first_key],
                    waited=waited,
                    final=False,
                    lookups=lookups,
                    stats=stats,
                    now=now,
                )
                first_sent = True
            due = since + timedelta(minutes=final_at if first_sent else first_at)
            next_due = _earliest(next_due, due)
        return next_due

    def _remind(
        self,
        session: Session,
        *,
        channel: str,
        pipeline: str,
        execution_id: str,
        event: Event,
        keys: Sequence[str],
        waited: float,
        final: bool,
        lookups: _Lookups,
        stats: TickStats,
        now: datetime,
    ) -> None:
        """Record the reminder's keys (the first names the reply) and queue it once."""
        for index, key in enumerate(keys):
            _, created = notify_store.record_event_once(
                session=session,
                channel_id=channel,
                execution_id=execution_id,
                event_key=key,
                resolved=True,
                at=now,
            )
            if index == 0 and not created:
                return  # another tick or process sent it
        reply = reminder_reply(
            pipeline=pipeline,
            execution_id=execution_id,
            stage=event.stage or "",
            action=event.action or "",
            approvers=lookups.approvers(),
            waited_minutes=int(waited),
            final=final,
            now=now,
        )
        _enqueue(session, channel, "reply", reply, execution_id, key=keys[0], now=now)
        stats.replies += 1

    def _approval_timeout(self, pipeline: str, event: Event, lookups: _Lookups) -> int:
        """The waiting approval's timeout in minutes (its declaration's, else 7 days)."""
        cache_key = (pipeline, event.stage or "", event.action or "", event.since or "")
        found = self._timeouts.get(cache_key)
        if found is None:
            found = lookups.action_timeout(event.stage, event.action) or APPROVAL_TIMEOUT_MINUTES
            if len(self._timeouts) >= _TIMEOUTS_KEPT:
                self._timeouts.clear()
            self._timeouts[cache_key] = found
        return found

    def _queue_event(
        self,
        session: Session,
        *,
        channel: str,
        pipeline: str,
        execution_id: str,
        event: Event,
        lookups: _Lookups,
        stats: TickStats,
        now: datetime,
    ) -> None:
        resolved = event.kind in _RESOLVED_KINDS or event.kind not in (APPROVAL, FAILED)
        _, created = notify_store.record_event_once(
            session=session,
            channel_id=channel,
            execution_id=execution_id,
            event_key=event.key,
            resolved=resolved,
            at=now,
        )
        if not created:
            return
        if event.kind in _RESOLVED_KINDS:
            target = event.resolves or ""
            if not notify_store.mark_event_resolved(
                session=session, channel_id=channel, execution_id=execution_id, event_key=target
            ):
                return  # never posted here (filtered), or already resolved
            original = notify_store.queued_reply_payload(
                session=session, channel_id=channel, execution_id=execution_id, event_key=target
            )
            blocks: list[dict[str, Any]] = (
                list(json.loads(original).get("blocks") or []) if original else []
            )
            outcome = event.outcome or "Resolved"
            new_blocks = resolved_reply(original_blocks=blocks, outcome=outcome)
            payload = {"text": fallback_text(blocks=new_blocks), "blocks": new_blocks}
            _enqueue(session, channel, "update", payload, execution_id, key=target, now=now)
            stats.updates += 1
            return
        approvers: Sequence[str] = ()
        custom_data: str | None = None
        external_link: str | None = None
        log_tail: str | None = None
        if event.kind == APPROVAL:
            approvers = lookups.approvers()
            custom_data, external_link = lookups.approval_config(event.stage, event.action)
        elif event.kind == FAILED and event.action_execution_id:
            log_tail = lookups.log_tail(event.action_execution_id)
        reply = event_reply(
            event=event,
            pipeline=pipeline,
            execution_id=execution_id,
            approvers=approvers,
            custom_data=custom_data,
            external_link=external_link,
            log_tail=log_tail,
            now=now,
        )
        _enqueue(session, channel, "reply", reply, execution_id, key=event.key, now=now)
        stats.replies += 1

    # --- daily digests -----------------------------------------------------------------------

    def queue_digests(self, stats: TickStats | None = None) -> int:
        """Queue each channel's daily digest whose time (in the digest time zone) has come
        and that was not sent today: one message per channel and time, whatever the number
        of pipelines in it; each pipeline read once. Returns the digests queued."""
        now = self._clock()
        local = now.astimezone(self._digest_zone)
        today, time_of_day = local.date().isoformat(), local.strftime("%H:%M")
        with self._sessions() as session:
            due = notify_store.due_digests(session=session, today=today, time_of_day=time_of_day)
        groups: dict[tuple[str, str], list[Subscription]] = {}
        for subscription in due:
            key = (subscription.channel_id, subscription.digest_time or "")
            groups.setdefault(key, []).append(subscription)
        read: dict[str, Sequence[Mapping[str, Any]] | str] = {}
        since = now - timedelta(hours=24)
        for subscription in due:
            if subscription.pipeline in read:
                continue
            if stats is not None:
                stats.backend_calls += 1
            try:
                read[subscription.pipeline] = self._ops.executions_since(
                    subscription.pipeline, since
                )
            except OpsError as exc:
                read[subscription.pipeline] = exc.message
        queued = 0
        for (channel, _), subscriptions in groups.items():
            with transaction(self._sessions) as session:
                claimed = [
                    s
                    for s in subscriptions
                    if s.id is not None
                    and notify_store.claim_digest(
                        session=session, subscription_id=s.id, today=today
                    )
                ]
                if not claimed:
                    continue  # another tick or process sent it
                message = digest_message(
                    channel_pipelines=[(s.pipeline, read[s.pipeline]) for s in claimed], now=now
                )
                notify_store.enqueue(
                    session=session,
                    channel_id=channel,
                    kind="post",
                    payload=json.dumps(message),
                    event_key=f"digest:{today}",
                    at=now,
                )
            queued += 1
            if stats is not None:
                stats.posts += 1
        return queued

    # --- sending -----------------------------------------------------------------------------

    def flush_outbox(self, limit: int = 100) -> int:
        """Send each channel's next due message (one per channel, a second apart); the count."""
        now = self._clock()
        self._waiting = 0
        with self._sessions() as session:
            due = notify_store.due_outbox(session=session, now=now, limit=limit)
            for message in due:
                session.expunge(message)
        sent = 0
        for message in due:
            last = self._last_sent.get(message.channel_id)
            if last is not None and (now - last).total_seconds() < CHANNEL_GAP_SECONDS:
                self._waiting += 1
                continue
            if self._send(message, now):
                sent += 1
        return sent

    def _target_ts(self, message: OutboxMessage) -> tuple[str | None, bool]:
        """The ts a reply threads under or an update edits; (None, True) while not known yet,
        (None, False) when there is none to wait for."""
        with self._sessions() as session:
            if message.kind == "update" and message.event_key is not None:
                event = notify_store.get_event(
                    session=session,
                    channel_id=message.channel_id,
                    execution_id=message.execution_id or "",
                    event_key=message.event_key,
                )
                if event is None:
                    return None, False
                return event.message_ts, event.message_ts is None
            parent = notify_store.get_posted_execution(
                session=session,
                channel_id=message.channel_id,
                execution_id=message.execution_id or "",
            )
            if parent is None:
                return None, False
            return parent.message_ts, parent.message_ts is None

    def _send(self, message: OutboxMessage, now: datetime) -> bool:
        assert message.id is not None
        payload = json.loads(message.payload)
        channel = message.channel_id
        ts: str | None = None
        if message.kind != "post":
            ts, wait = self._target_ts(message)
            if ts is None:
                with transaction(self._sessions) as session:
                    if wait:
                        notify_store.mark_outbox_failed(
                            session=session,
                            message_id=message.id,
                            error="waiting for the message it refers to",
                            next_attempt_at=now + timedelta(seconds=WAITING_FOR_PARENT_SECONDS),
                        )
                    else:
                        log.warning(
                            "notifier: dropping %s %s: nothing to refer to",
                            message.kind,
                            message.id,
                        )
                        notify_store.mark_outbox_done(
                            session=session, message_id=message.id, now=now
                        )
                return False
        new_ts: str | None = None
        if message.kind != "update" and (message.last_error or "").startswith(NO_ANSWER):
            # The last attempt got no answer (or the process died during it): Slack may have
            # posted it all the same.
            new_ts = self._find_posted(message, thread_ts=ts)
        if new_ts is None and message.kind != "update":
            with transaction(self._sessions) as session:
                notify_store.mark_outbox_sending(
                    session=session, message_id=message.id, note=SENDING
                )
        try:
            if new_ts is not None:
                pass  # it went out last time: record it, do not post it again
            elif message.kind == "update" and ts is not None:
                response = self._web.chat_update(
                    channel=channel, ts=ts, text=payload.get("text"), blocks=payload.get("blocks")
                )
                new_ts = str(response.get("ts") or "")
            else:
                response = self._web.chat_postMessage(
                    channel=channel,
                    text=payload.get("text"),
                    blocks=payload.get("blocks"),
                    thread_ts=ts,
                    reply_broadcast=payload.get("reply_broadcast") if ts else None,
                    unfurl_links=False,
                    unfurl_media=False,
                    metadata={
                        "event_type": OUTBOX_EVENT_TYPE,
                        "event_payload": {"outbox_id": message.id},
                    },
                )
                new_ts = str(response.get("ts") or "")
        except (SlackApiError, SlackClientError, OSError) as exc:
            self._failed(message, exc, now)
            return False
        self._last_sent[channel] = now
        with transaction(self._sessions) as session:
            if message.kind == "post" and message.execution_id and new_ts:
                notify_store.set_posted_message_ts(
                    session=session,
                    channel_id=channel,
                    execution_id=message.execution_id,
                    message_ts=new_ts,
                    at=now,
                )
            elif message.kind == "reply" and message.execution_id and message.event_key and new_ts:
                notify_store.mark_event_posted(
                    session=session,
                    channel_id=channel,
                    execution_id=message.execution_id,
                    event_key=message.event_key,
                    message_ts=new_ts,
                )
            notify_store.mark_outbox_done(session=session, message_id=message.id, now=now)
        return True

    def _find_posted(self, message: OutboxMessage, *, thread_ts: str | None) -> str | None:
        """The ts of the message this outbox entry posted on an attempt that got no answer,
        found by its metadata in the channel (or thread); None if it is not there (or the
        history cannot be read: without the history scopes it is posted again)."""
        # The newest 200 of the channel (a few backoff periods' worth), or the whole thread.
        try:
            if thread_ts is not None:
                found = self._web.conversations_replies(
                    channel=message.channel_id,
                    ts=thread_ts,
                    include_all_metadata=True,
                    limit=1000,
                )
            else:
                found = self._web.conversations_history(
                    channel=message.channel_id, include_all_metadata=True, limit=200
                )
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning(
                "notifier: cannot tell whether %s %s reached %s (%s); posting it again",
                message.kind,
                message.id,
                message.channel_id,
                exc,
            )
            return None
        for candidate in found.get("messages") or []:
            metadata = candidate.get("metadata") or {}
            if (
                metadata.get("event_type") == OUTBOX_EVENT_TYPE
                and (metadata.get("event_payload") or {}).get("outbox_id") == message.id
            ):
                log.info(
                    "notifier: %s %s had gone out; not posting it twice", message.kind, message.id
                )
                return str(candidate.get("ts") or "") or None
        return None

    def _failed(self, message: OutboxMessage, exc: Exception, now: datetime) -> None:
        assert message.id is not None
        code = ""
        if isinstance(exc, SlackApiError):
            code = str(exc.response.get("error") or "")
        error = code or f"{NO_ANSWER}{type(exc).__name__}: {exc}"
        with transaction(self._sessions) as session:
            backoff = min(2 ** min(message.attempts + 1, 9), MAX_BACKOFF_SECONDS)
            notify_store.mark_outbox_failed(
                session=session,
                message_id=message.id,
                error=error[:1000],
                next_attempt_at=now + timedelta(seconds=backoff),
            )
            if code in _PERMANENT_ERRORS:
                log.error(
                    "notifier: Slack refused %s %s in %s for good (%s); giving it up",
                    message.kind,
                    message.id,
                    message.channel_id,
                    code,
                )
                notify_store.mark_outbox_done(session=session, message_id=message.id, now=now)
                return
        log.warning(
            "notifier: %s %s to %s failed (%s); retrying in %d s",
            message.kind,
            message.id,
            message.channel_id,
            error,
            backoff,
        )


class _Lookups:
    """Reads an event reply needs, made at most once per pipeline per tick and only when an
    event needs them."""

    def __init__(
        self, ops: PipelineOps, permissions: Permissions | None, pipeline: str, stats: TickStats
    ) -> None:
        self._ops = ops
        self._permissions = permissions
        self._pipeline = pipeline
        self._stats = stats
        self._approvers: list[str] | None = None
        self._declaration: dict[str, Any] | None = None
        self._details: dict[str, list[dict[str, Any]]] = {}

    def approvers(self) -> list[str]:
        if self._approvers is None:
            self._approvers = []
            if self._permissions is not None:
                lists = self._permissions.access_lists(self._pipeline)
                chosen = lists.approvers if lists.approving_role == "approvers" else lists.operators
                self._approvers = list(chosen)
        return self._approvers

    def _action_declaration(self, stage: str | None, action: str | None) -> Mapping[str, Any]:
        if self._declaration is None:
            self._stats.backend_calls += 1
            try:
                self._declaration = dict(
                    run_guarded(lambda: self._ops.client.get_pipeline(name=self._pipeline))[
                        "pipeline"
                    ]
                )
            except (OpsError, KeyError, TypeError):
                self._declaration = {}
        for stage_decl in self._declaration.get("stages") or []:
            if stage_decl.get("name") != stage:
                continue
            for action_decl in stage_decl.get("actions") or []:
                if action_decl.get("name") == action:
                    return dict(action_decl)
        return {}

    def approval_config(
        self, stage: str | None, action: str | None
    ) -> tuple[str | None, str | None]:
        config = self._action_declaration(stage, action).get("configuration") or {}
        data, link = config.get("CustomData"), config.get("ExternalEntityLink")
        return (
            data if isinstance(data, str) else None,
            link if isinstance(link, str) else None,
        )

    def action_timeout(self, stage: str | None, action: str | None) -> int | None:
        """The action's ``timeoutInMinutes``, None when its declaration sets none."""
        timeout = self._action_declaration(stage, action).get("timeoutInMinutes")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            return None
        return int(timeout)

    def action_details(self, execution_id: str) -> list[dict[str, Any]]:
        """The execution's ListActionExecutions details (read once per tick), [] if unreadable."""
        found = self._details.get(execution_id)
        if found is None:
            self._stats.backend_calls += 1
            try:
                found = self._ops.action_details(self._pipeline, execution_id)
            except OpsError as exc:
                log.info("notifier: no action details for %s: %s", execution_id, exc.message)
                found = []
            self._details[execution_id] = found
        return found

    def log_tail(self, action_execution_id: str) -> str | None:
        self._stats.backend_calls += 1
        try:
            return self._ops.action_log(self._pipeline, action_execution_id)
        except Exception:
            log.info("notifier: no log for %s", action_execution_id, exc_info=True)
            return None


def _earliest(first: datetime | None, second: datetime | None) -> datetime | None:
    if first is None:
        return second
    if second is None:
        return first
    return min(first, second)


def _enqueue(
    session: Session,
    channel: str,
    kind: str,
    payload: Mapping[str, Any],
    execution_id: str,
    *,
    key: str | None,
    now: datetime,
) -> None:
    """Queue one Slack call for this execution in the outbox (sent in order per channel)."""
    notify_store.enqueue(
        session=session,
        channel_id=channel,
        kind=kind,  # type: ignore[arg-type]
        payload=json.dumps(payload),
        execution_id=execution_id,
        event_key=key,
        at=now,
    )
