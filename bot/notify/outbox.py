"""Outbox delivery: send the queued Slack calls, in order per channel, each exactly once.

The watcher, the reminders and the digest only queue messages (``notify_store.enqueue``);
this job sends them. Each channel's oldest unsent message goes next, about one per channel
per second (Slack's rate for chat.postMessage). A failed call stays queued and is retried
with a growing delay, never dropped, unless Slack refuses it for good. Before each post the
message is marked "being sent", and every post carries message metadata naming its outbox
entry: a post whose answer never came (a timeout, a crash) is looked for in the channel
before it is sent again, so Slack never shows it twice. Sent messages are pruned a day on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import WebClient

from storage import notify_store
from storage.db import SessionFactory, transaction
from storage.models import OutboxMessage

log = logging.getLogger(__name__)

CHANNEL_GAP_SECONDS: Final = 1.0
"""Slack allows about one chat.postMessage per second per channel."""
WAITING_FOR_PARENT_SECONDS: Final = 2.0
"""How soon a reply or update is tried again while the message it refers to is not out."""
MAX_BACKOFF_SECONDS: Final = 300
"""The longest wait before a failed call is tried again."""
NO_ANSWER: Final = "no answer: "
"""How an outbox message's error starts when the call got no answer (a timeout, a lost
connection): Slack may have applied it, so a post is looked for before it is sent again."""
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


class Outbox:
    """Sends the queued messages; remembers when each channel was last sent to."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        web_client: WebClient,
        clock: Callable[[], datetime],
    ) -> None:
        self._sessions = sessions
        self.web_client = web_client
        self._clock = clock
        self._last_sent: dict[str, datetime] = {}
        self._waiting = 0
        self._pruned_at: datetime | None = None

    @property
    def waiting(self) -> int:
        """Messages the last flush held back because their channel was sent to under a
        second ago: flush again a second on."""
        return self._waiting

    def flush(self, limit: int = 100) -> int:
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
        """Make the message's Slack call and record it; False if it did not go out (yet)."""
        assert message.id is not None
        payload = json.loads(message.payload)
        channel = message.channel_id
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
        except (SlackApiError, SlackClientError, OSError) as exc:
            self._failed(message, exc, now)
            return False
        self._last_sent[channel] = now
        self._record_sent(message, new_ts=new_ts, now=now)
        return True

    def _hold(self, message: OutboxMessage, *, wait: bool, now: datetime) -> None:
        """A reply or update whose target message is not out yet waits for it (``wait``);
        one with no target at all is dropped."""
        assert message.id is not None
        with transaction(self._sessions) as session:
            if wait:
                notify_store.mark_outbox_failed(
                    session=session,
                    message_id=message.id,
                    error="waiting for the message it refers to",
                    next_attempt_at=now + timedelta(seconds=WAITING_FOR_PARENT_SECONDS),
                )
                return
            log.warning("notifier: dropping %s %s: nothing to refer to", message.kind, message.id)
            notify_store.mark_outbox_done(session=session, message_id=message.id, now=now)

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

    def _find_posted(self, message: OutboxMessage, *, thread_ts: str | None) -> str | None:
        """The ts of the message this outbox entry posted on an attempt that got no answer,
        found by its metadata in the channel (or thread); None if it is not there (or the
        history cannot be read: without the history scopes it is posted again)."""
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
