"""Outbox delivery: send the queued Slack calls, in order per channel, each exactly once.

The watcher, the reminders and the digest only queue messages (``notify_store.enqueue``);
this job sends them. Each channel's oldest unsent message goes next: a post (a parent or a
thread reply) about a second after the channel's last post (Slack's rate for
chat.postMessage), an edit (chat.update) at once. Before each post the message is marked
"being sent", and every post carries message metadata naming its outbox entry: a post
whose answer never came (a timeout, a crash) is looked for in the channel before it is
sent again, so Slack never shows it twice. Of several queued updates of one message only
the newest goes out. Sent messages are pruned a day on.

A failed call is handled by what Slack's answer means (``bot.slack.api_errors``):

- transient (``ratelimited``, ``service_unavailable``, HTTP 5xx, no answer): the message
  stays queued and is tried again with a growing delay, never dropped; after a 429 the
  whole outbox waits ``Retry-After`` seconds;
- this message only (``invalid_blocks``, ``message_not_found``...): it is given up and kept
  with its error, except a parent message that was deleted, which is posted again; an
  error no table lists is given up after ``UNKNOWN_ERROR_ATTEMPTS`` attempts;
- the channel (``is_archived``, ``channel_not_found``, ``not_in_channel``...): the
  channel's subscriptions are suspended, audited, and whoever subscribed gets one direct
  message; the channel's messages wait, untried, until someone subscribes there again
  (``notify_store.resume_channel`` says what then goes out);
- the installation (``invalid_auth``, ``token_revoked``, ``missing_scope``...): nothing is
  sent, the log says so at CRITICAL once, and one message is tried every
  ``INSTALLATION_RECHECK`` to see whether the token works again. Nothing is dropped.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import WebClient
from sqlmodel import Session

from bot.slack.api_errors import (
    REPOST_ERRORS,
    UNKNOWN_ERROR_ATTEMPTS,
    Scope,
    SlackFailure,
    classify,
)
from bot.slack.subscriptions import suspended_notice, suspension_audit_detail
from bot.slack.text import short_id
from storage import bot_store, notify_store
from storage.db import SessionFactory, transaction
from storage.models import OutboxMessage, Subscription

log = logging.getLogger(__name__)

CHANNEL_GAP_SECONDS: Final = 1.0
"""Slack allows about one chat.postMessage per second per channel ("Posting messages: 1 per
second, short bursts >1 allowed", https://docs.slack.dev/apis/web-api/rate-limits). An edit
is another method, ``chat.update``, Tier 3 (50+ per minute per workspace, "sporadic bursts
are welcome"): it does not wait for the channel's second, so a parent message shows a
change at once even right after a reply was posted; a 429 pauses everything anyway."""
WAITING_FOR_PARENT_SECONDS: Final = 2.0
"""How soon a reply or update is tried again while the message it refers to is queued."""
MAX_BACKOFF_SECONDS: Final = 300
"""The longest wait before a failed call is tried again."""
INSTALLATION_RECHECK: Final = timedelta(minutes=10)
"""While Slack refuses pipebot's token, how often one message is tried (no retry storm:
Slack warns that apps which keep calling after being refused risk being disabled)."""
NO_ANSWER: Final = "no answer: "
"""How an outbox message's error starts when the call got no answer (a timeout, a lost
connection) or Slack says it may have been applied (``internal_error``, ``fatal_error``):
a post is looked for before it is sent again."""
SENDING: Final = NO_ANSWER + "sent; the process stopped before Slack's answer was recorded"
"""Written before each post: what the next attempt finds when the process died mid-call."""
OUTBOX_EVENT_TYPE: Final = "pipebot_outbox"
"""The message metadata event type of every post: its payload names the outbox entry."""
SENT_KEPT_FOR: Final = timedelta(days=1)
"""How long a sent message is kept. Nothing reads a sent message once its thread event is
resolved (a reply whose buttons still stand is kept until they give way, whatever its age:
see ``notify_store.prune_outbox``); a day leaves a modal opened from a reply just before it
was resolved time to redraw it, and a day of history to look into when a message is
missed, while the table stays as small as a day's traffic."""
PRUNE_EVERY: Final = timedelta(hours=1)
"""How often the sent messages are pruned: one DELETE an hour is plenty for a one-day
retention, and keeps it off every run."""
_MAYBE_APPLIED: Final = frozenset({"internal_error", "fatal_error"})
"""Answers after which Slack says "it's possible some aspect of the operation succeeded"."""
_SLACK_CALL_ERRORS: Final = (SlackApiError, SlackClientError, OSError, http.client.HTTPException)
_USER_ID: Final = re.compile(r"[UW][A-Z0-9]{2,}")


def _describe(message: OutboxMessage) -> str:
    """Which message a call carried, for logs, the audit log and the suspension record."""
    execution = f" of execution {short_id(message.execution_id)}" if message.execution_id else ""
    key = message.event_key or ""
    if message.execution_id is None:
        kinds = {"digest": "the daily digest", "suspended": "the direct message on a suspension"}
        what = kinds.get(key.split(":", 1)[0], "a post")
    elif message.event_key is None:
        what = f"the parent message{execution}"
    elif message.kind == "update":
        what = f"the update of thread reply {message.event_key}{execution}"
    else:
        what = f"thread reply {message.event_key}{execution}"
    return f"outbox message {message.id} ({what})"


class Outbox:
    """Sends the queued messages; remembers when each channel was last sent to, and whether
    Slack asked it to wait (``Retry-After``) or refuses pipebot altogether."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        web_client: WebClient,
        clock: Callable[[], datetime],
        command: str = "/pipeline",
    ) -> None:
        self._sessions = sessions
        self.web_client = web_client
        self._clock = clock
        self._command = command
        self._last_post: dict[str, datetime] = {}
        self._next_due: datetime | None = None
        self._pruned_at: datetime | None = None
        self._paused_until: datetime | None = None
        self._halted: SlackFailure | None = None
        self._halted_until: datetime | None = None

    @property
    def next_due(self) -> datetime | None:
        """When to flush next: at once after a flush that sent something or gave a message
        up (the channels' next messages), when a held post's channel second is over, at a
        failed call's retry, or when a reply waiting for its parent message is tried
        again; None when the last flush sent nothing and left nothing due."""
        return self._next_due

    def _due_at(self, at: datetime) -> None:
        """Flush again at ``at`` at the latest (a message may go then)."""
        if self._next_due is None or at < self._next_due:
            self._next_due = at

    @property
    def halted(self) -> SlackFailure | None:
        """Why nothing is sent (Slack refuses pipebot's token or app), None while sending."""
        return self._halted

    def _stopped(self, now: datetime) -> bool:
        """Whether Slack asked for a pause (429) or refuses pipebot, until after ``now``."""
        return any(
            until is not None and now < until for until in (self._paused_until, self._halted_until)
        )

    def flush(self, limit: int = 100) -> int:
        """Send each channel's next due message, one per channel (posts a second apart).

        Nothing while a 429's ``Retry-After`` runs or while Slack refuses pipebot (then one
        message every ``INSTALLATION_RECHECK``, to find out whether it is fixed)."""
        now = self._clock()
        self._next_due = None
        if self._stopped(now):
            return 0
        with self._sessions() as session:
            due = notify_store.due_outbox(session=session, now=now, limit=limit)
            for message in due:
                session.expunge(message)
        sent = 0
        for message in due:
            posting = message.kind != "update"
            last = self._last_post.get(message.channel_id)
            if posting and last is not None and (now - last).total_seconds() < CHANNEL_GAP_SECONDS:
                self._due_at(last + timedelta(seconds=CHANNEL_GAP_SECONDS))
                continue
            if self._send(message, now):
                sent += 1
                # Flush again at once: the channel's next message, if any, goes then (an
                # edit) or is found held for the channel's second (a post).
                self._due_at(now)
            if self._stopped(now):
                break
        return sent

    def prune(self) -> int:
        """Delete the messages sent more than ``SENT_KEPT_FOR`` ago, at most every
        ``PRUNE_EVERY`` (the first call prunes at once); the count."""
        now = self._clock()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return 0
        self._pruned_at = now
        with transaction(self._sessions) as session:
            return notify_store.prune_outbox(session=session, done_before=now - SENT_KEPT_FOR)

    def _target_ts(self, message: OutboxMessage) -> tuple[str | None, bool]:
        """The ts a reply threads under or an update edits; (None, True) while the message
        it refers to is still queued, (None, False) when there is none to wait for (never
        queued here, or given up)."""
        execution_id = message.execution_id or ""
        with self._sessions() as session:
            if message.kind == "update" and message.event_key is not None:
                event = notify_store.get_event(
                    session=session,
                    channel_id=message.channel_id,
                    execution_id=execution_id,
                    event_key=message.event_key,
                )
                if event is None:
                    return None, False
                if event.message_ts is not None:
                    return event.message_ts, False
                kind: notify_store.OutboxKind = "reply"
                key: str | None = message.event_key
            else:
                parent = notify_store.get_posted_execution(
                    session=session, channel_id=message.channel_id, execution_id=execution_id
                )
                if parent is None:
                    return None, False
                if parent.message_ts is not None:
                    return parent.message_ts, False
                kind, key = "post", None
            queued = notify_store.is_queued(
                session=session,
                channel_id=message.channel_id,
                execution_id=execution_id,
                kind=kind,
                event_key=key,
            )
            return None, queued

    def _send(self, message: OutboxMessage, now: datetime) -> bool:
        """Make the message's Slack call and record it; False if it did not go out (yet)."""
        assert message.id is not None
        payload = json.loads(message.payload)
        channel = message.channel_id
        if message.kind == "update":
            with transaction(self._sessions) as session:
                if notify_store.newer_update_queued(session=session, message=message):
                    notify_store.drop_outbox(
                        session=session,
                        message_id=message.id,
                        error="superseded by a newer update of the same message",
                        now=now,
                    )
                    self._due_at(now)
                    return False
        ts: str | None = None
        if message.kind != "post":
            ts, wait = self._target_ts(message)
            if ts is None:
                self._hold(message, wait=wait, now=now)
                return False
        new_ts: str | None = None
        if message.kind != "update" and (message.last_error or "").startswith(NO_ANSWER):
            # The last attempt got no answer (or the process died during it): Slack may have
            # posted it all the same.
            new_ts, lookup_failure = self._find_posted(message, thread_ts=ts)
            if lookup_failure is not None:
                self._retry(message, lookup_failure, now, error=NO_ANSWER + "not looked up yet")
                return False
        if new_ts is None and message.kind != "update":
            with transaction(self._sessions) as session:
                notify_store.mark_outbox_sending(
                    session=session, message_id=message.id, note=SENDING
                )
        try:
            if new_ts is not None:
                pass  # it went out last time: record it, do not post it again
            elif message.kind == "update" and ts is not None:
                response = self.web_client.chat_update(
                    channel=channel, ts=ts, text=payload.get("text"), blocks=payload.get("blocks")
                )
                new_ts = str(response.get("ts") or "")
            else:
                response = self.web_client.chat_postMessage(
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
        except _SLACK_CALL_ERRORS as exc:
            self._failed(message, classify(exc), now)
            return False
        if self._halted is not None:
            log.warning("notifier: Slack accepts pipebot's calls again; sending resumes")
            self._halted = self._halted_until = None
        if message.kind != "update":
            self._last_post[channel] = now
        self._record_sent(message, new_ts=new_ts, now=now)
        return True

    def _hold(self, message: OutboxMessage, *, wait: bool, now: datetime) -> None:
        """A reply or update whose target message is still queued waits for it (``wait``);
        one whose target is not there and will not be (given up, or never queued here) is
        dropped."""
        assert message.id is not None
        with transaction(self._sessions) as session:
            if wait:
                notify_store.mark_outbox_failed(
                    session=session,
                    message_id=message.id,
                    error="waiting for the message it refers to",
                    next_attempt_at=now + timedelta(seconds=WAITING_FOR_PARENT_SECONDS),
                )
                self._due_at(now + timedelta(seconds=WAITING_FOR_PARENT_SECONDS))
                return
            log.warning("notifier: dropping %s: nothing to refer to", _describe(message))
            notify_store.drop_outbox(
                session=session,
                message_id=message.id,
                error="dropped: the message it refers to is not in the channel",
                now=now,
            )
        self._due_at(now)

    def _record_sent(self, message: OutboxMessage, *, new_ts: str | None, now: datetime) -> None:
        """Mark the message sent and store the ts later replies and updates refer to."""
        assert message.id is not None
        channel = message.channel_id
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

    def _find_posted(
        self, message: OutboxMessage, *, thread_ts: str | None
    ) -> tuple[str | None, SlackFailure | None]:
        """The ts of the message this outbox entry posted on an attempt that got no answer,
        found by its metadata in the channel (or thread); None if it is not there. When the
        history cannot be read for now (a transient failure) the failure comes back: post
        later rather than risk posting twice. When it cannot be read at all (no history
        scope, the channel refuses pipebot) it is posted again: the post's own answer tells
        the rest."""
        # The newest 200 of the channel (a few backoff periods' worth), or the whole thread.
        try:
            if thread_ts is not None:
                found = self.web_client.conversations_replies(
                    channel=message.channel_id,
                    ts=thread_ts,
                    include_all_metadata=True,
                    limit=1000,
                )
            else:
                found = self.web_client.conversations_history(
                    channel=message.channel_id, include_all_metadata=True, limit=200
                )
        except _SLACK_CALL_ERRORS as exc:
            failure = classify(exc)
            if failure.scope is Scope.TRANSIENT and failure.known:
                return None, failure
            log.warning(
                "notifier: cannot tell whether %s reached %s (%s); posting it again",
                _describe(message),
                message.channel_id,
                failure.code,
            )
            return None, None
        for candidate in found.get("messages") or []:
            metadata = candidate.get("metadata") or {}
            if (
                metadata.get("event_type") == OUTBOX_EVENT_TYPE
                and (metadata.get("event_payload") or {}).get("outbox_id") == message.id
            ):
                log.info("notifier: %s had gone out; not posting it twice", _describe(message))
                return str(candidate.get("ts") or "") or None, None
        return None, None

    # --- failures ------------------------------------------------------------------------

    def _failed(self, message: OutboxMessage, failure: SlackFailure, now: datetime) -> None:
        """Act on a failed call by what Slack's answer means (see the module docstring)."""
        if failure.scope is Scope.INSTALLATION:
            self._halt(message, failure, now)
        elif failure.scope is Scope.CHANNEL:
            self._refused_channel(message, failure, now)
        elif failure.scope is Scope.MESSAGE or (
            not failure.known and message.attempts + 1 >= UNKNOWN_ERROR_ATTEMPTS
        ):
            self._refused_message(message, failure, now)
        else:
            maybe_applied = not failure.answered or failure.code in _MAYBE_APPLIED
            error = (
                f"{NO_ANSWER}{failure.detail or failure.code}" if maybe_applied else failure.code
            )
            self._retry(message, failure, now, error=error)

    def _retry(
        self, message: OutboxMessage, failure: SlackFailure, now: datetime, *, error: str
    ) -> None:
        """Keep the message queued and try it again later (Slack's ``Retry-After`` if
        longer); after a 429 the whole outbox waits that long."""
        assert message.id is not None
        wait = float(min(2 ** min(message.attempts + 1, 9), MAX_BACKOFF_SECONDS))
        if failure.retry_after is not None:
            wait = max(wait, failure.retry_after)
            self._paused_until = now + timedelta(seconds=failure.retry_after)
        with transaction(self._sessions) as session:
            notify_store.mark_outbox_failed(
                session=session,
                message_id=message.id,
                error=error[:1000],
                next_attempt_at=now + timedelta(seconds=wait),
            )
        self._due_at(now + timedelta(seconds=wait))
        log.warning(
            "notifier: %s to %s failed (%s%s); retrying in %d s",
            _describe(message),
            message.channel_id,
            failure.code,
            "" if failure.known else ", an error Slack's method pages do not list",
            wait,
        )

    def _refused_message(
        self, message: OutboxMessage, failure: SlackFailure, now: datetime
    ) -> None:
        """Slack refused this message for good: a deleted parent message is posted again
        (same place in the queue); anything else is given up, kept with its error."""
        assert message.id is not None
        with transaction(self._sessions) as session:
            if failure.code in REPOST_ERRORS and notify_store.repost_parent(
                session=session, message_id=message.id, error=failure.code, now=now
            ):
                log.warning(
                    "notifier: %s in %s is gone (%s); posting it again",
                    _describe(message),
                    message.channel_id,
                    failure.code,
                )
                self._due_at(now)
                return
            given_up = (
                failure.code
                if failure.known
                else f"{failure.code} (given up after {message.attempts + 1} attempts)"
            )
            notify_store.drop_outbox(
                session=session, message_id=message.id, error=given_up[:1000], now=now
            )
        log.error(
            "notifier: Slack refused %s in %s for good (%s to %s); giving it up",
            _describe(message),
            message.channel_id,
            failure.code,
            failure.method or "Slack",
        )
        self._due_at(now)

    def _refused_channel(
        self, message: OutboxMessage, failure: SlackFailure, now: datetime
    ) -> None:
        """Slack refuses the channel: suspend its subscriptions (audited, one direct message
        per person who subscribed); the message waits, untried, with the channel's others.
        A channel nobody subscribes (a direct message, a digest after an unsubscribe) has
        nothing to suspend: the message is given up."""
        assert message.id is not None
        channel = message.channel_id
        what = _describe(message)
        with transaction(self._sessions) as session:
            if not notify_store.subscriptions_for_channel(session=session, channel_id=channel):
                notify_store.drop_outbox(
                    session=session, message_id=message.id, error=failure.code, now=now
                )
                suspended = None
            else:
                suspended = notify_store.suspend_channel(
                    session=session,
                    channel_id=channel,
                    error=failure.code,
                    detail=f"{failure.method or 'Slack'}: {what}",
                    message_id=message.id,
                    at=now,
                )
                notify_store.mark_outbox_failed(
                    session=session, message_id=message.id, error=failure.code, next_attempt_at=now
                )
                self._record_suspension(session, message, failure, suspended, now=now)
        if suspended is None:
            log.warning(
                "notifier: Slack refused %s (%s to %s); no subscription there: %s given up",
                channel,
                failure.code,
                failure.method or "Slack",
                what,
            )
            self._due_at(now)
            return
        log.error(
            "notifier: Slack refused channel %s for good (%s to %s, %s): %s suspended; its "
            "messages wait until someone subscribes there again",
            channel,
            failure.code,
            failure.method or "Slack",
            what,
            ", ".join(s.pipeline for s in suspended) or "its subscriptions were already",
        )
        self._due_at(now)  # the direct messages just queued: no need to wait a whole tick

    def _record_suspension(
        self,
        session: Session,
        message: OutboxMessage,
        failure: SlackFailure,
        suspended: list[Subscription],
        *,
        now: datetime,
    ) -> None:
        """In the suspending transaction: an audit entry per subscription, and one direct
        message to each person who subscribed (queued: it goes out like any message)."""
        by_user: dict[str, list[str]] = {}
        for subscription in suspended:
            bot_store.append_audit(
                session=session,
                user_id=bot_store.NOTIFIER_ACTOR,
                channel_id=message.channel_id,
                kind="notifier",
                what="suspend",
                outcome="error",
                pipeline=subscription.pipeline,
                execution_id=message.execution_id,
                detail=suspension_audit_detail(
                    error=failure.code,
                    method=failure.method,
                    what=_describe(message),
                    pipeline=subscription.pipeline,
                    command=self._command,
                )[:2000],
                at=now,
            )
            by_user.setdefault(subscription.created_by, []).append(subscription.pipeline)
        for user_id, pipelines in by_user.items():
            if not _USER_ID.fullmatch(user_id):
                continue  # subscribed by no person (a script): nobody to tell
            notice = suspended_notice(
                channel_id=message.channel_id,
                pipelines=pipelines,
                error=failure.code,
                method=failure.method,
                command=self._command,
            )
            notify_store.enqueue(
                session=session,
                channel_id=user_id,
                kind="post",
                payload=json.dumps(notice),
                event_key=f"suspended:{message.channel_id}",
                at=now,
            )

    def _halt(self, message: OutboxMessage, failure: SlackFailure, now: datetime) -> None:
        """Slack refuses pipebot itself: send nothing for ``INSTALLATION_RECHECK``, then try
        one message. The message stays queued; CRITICAL in the log the first time."""
        assert message.id is not None
        first = self._halted is None
        self._halted = failure
        self._halted_until = now + INSTALLATION_RECHECK
        with transaction(self._sessions) as session:
            notify_store.mark_outbox_failed(
                session=session,
                message_id=message.id,
                error=failure.code,
                next_attempt_at=self._halted_until,
            )
        log.log(
            logging.CRITICAL if first else logging.ERROR,
            "notifier: Slack refuses pipebot's token or app (%s to %s): nothing is sent to "
            "any channel; fix the token, its scopes or the app's installation (messages "
            "stay queued). Trying again at %s.",
            failure.code,
            failure.method or "Slack",
            self._halted_until.isoformat(timespec="seconds"),
        )
