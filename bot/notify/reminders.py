"""Approval reminders: a waiting approval's approvers are reminded in its thread, twice.

Once after the reminder delay (``PIPEBOT_APPROVAL_REMINDER_MINUTES``), once more shortly
before the approval times out. Each reminder is a thread event like any other: recorded
under its key in the same transaction that queues it, so it goes out once whichever tick or
process sees it due. The watcher calls ``Reminders.queue`` for every execution a channel
was shown, and reads the execution again when the next reminder falls due.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from bot.notify.context import ThreadContext, earliest
from bot.notify.snapshot import APPROVAL, Event, snapshot_events
from bot.slack.notifications import reminder_reply
from storage.db import utc

APPROVAL_TIMEOUT_MINUTES: Final = 7 * 24 * 60
"""An approval action's timeout when its declaration sets no ``timeoutInMinutes``."""
FINAL_REMINDER_SHARE: Final = 0.1
FINAL_REMINDER_MAX_MINUTES: Final = 15.0
"""The final reminder goes out when less than this share of the timeout, or this many
minutes (whichever is smaller), remains."""
_TIMEOUTS_KEPT: Final = 1024


def _asked_at(event: Event) -> datetime | None:
    """When the approval started waiting (its ``since``), None if unknown."""
    if not event.since:
        return None
    try:
        return utc(datetime.fromisoformat(event.since))
    except ValueError:
        return None


class Reminders:
    """Queues the reminders of the approvals a channel was asked that still wait."""

    def __init__(self, *, reminder_minutes: int) -> None:
        if reminder_minutes < 1:
            raise ValueError(
                f"approval_reminder_minutes must be at least 1, not {reminder_minutes!r}"
            )
        self._reminder_minutes = reminder_minutes
        # (pipeline, stage, action, since) → the waiting approval's timeout in minutes: the
        # declaration is read once per approval, not on every tick while it waits.
        self._timeouts: dict[tuple[str, str, str, str], int] = {}

    def queue(self, thread: ThreadContext, snapshot: Mapping[str, Any]) -> datetime | None:
        """Remind the approvers of each approval this channel was asked that still waits:
        once after the reminder delay, once more shortly before it times out. The event keys
        make each reminder go out once, whichever tick or process sees it. Returns when the
        next reminder falls due (None if none will)."""
        next_due: datetime | None = None
        for event in snapshot_events(before=None, after=snapshot):
            if event.kind != APPROVAL or not event.stage or not event.action:
                continue
            since = _asked_at(event)
            if since is None:
                continue
            asked = thread.event(event.key)
            if asked is None or asked.resolved:
                continue  # never asked here (or not yet), or answered already
            first_key = f"reminder:1:{event.key}"
            final_key = f"reminder:final:{event.key}"
            if thread.event(final_key) is not None:
                continue  # the final one stands for both: nothing more to send
            timeout = self._approval_timeout(thread, event)
            final_at = timeout - min(timeout * FINAL_REMINDER_SHARE, FINAL_REMINDER_MAX_MINUTES)
            first_at = min(float(self._reminder_minutes), final_at)
            waited = (thread.now - since).total_seconds() / 60
            first_sent = thread.event(first_key) is not None
            if waited >= final_at:
                keys = [final_key] if first_sent else [final_key, first_key]
                self._remind(thread, event, keys=keys, waited=waited, final=True)
                continue
            if not first_sent and waited >= first_at:
                self._remind(thread, event, keys=[first_key], waited=waited, final=False)
                first_sent = True
            due = since + timedelta(minutes=final_at if first_sent else first_at)
            next_due = earliest(next_due, due)
        return next_due

    def _remind(
        self,
        thread: ThreadContext,
        event: Event,
        *,
        keys: Sequence[str],
        waited: float,
        final: bool,
    ) -> None:
        """Record the reminder's keys (the first names the reply) and queue it once."""
        for index, key in enumerate(keys):
            created = thread.record_once(key, resolved=True)
            if index == 0 and not created:
                return  # another tick or process sent it
        reply = reminder_reply(
            pipeline=thread.pipeline,
            execution_id=thread.execution_id,
            stage=event.stage or "",
            action=event.action or "",
            approvers=thread.lookups.approvers(
                session=thread.session, execution_id=thread.execution_id
            ),
            waited_minutes=int(waited),
            final=final,
            now=thread.now,
        )
        thread.enqueue("reply", reply, key=keys[0])
        thread.stats.replies += 1

    def _approval_timeout(self, thread: ThreadContext, event: Event) -> int:
        """The waiting approval's timeout in minutes (its declaration's, else 7 days)."""
        cache_key = (thread.pipeline, event.stage or "", event.action or "", event.since or "")
        found = self._timeouts.get(cache_key)
        if found is None:
            found = (
                thread.lookups.action_timeout(event.stage, event.action) or APPROVAL_TIMEOUT_MINUTES
            )
            if len(self._timeouts) >= _TIMEOUTS_KEPT:
                self._timeouts.clear()
            self._timeouts[cache_key] = found
        return found
