"""Channel notifications: the job that reads subscribed pipelines and keeps channels current.

One ``Notifier`` per process; only the holder of the ``notifier`` lease runs, so several
pipebot processes on one database post each message once. Each run composes four jobs,
one module each (as Prefect's background services are):

- ``watcher``: read each due pipeline once, queue what each channel has not seen;
- ``reminders``: remind the approvers of approvals that still wait (called by the watcher);
- ``digest``: queue the daily digests that are due;
- ``outbox``: send the queue, in order per channel, about one message per channel per
  second; a failed call is retried, given up, or suspends its channel's subscriptions,
  by what Slack's answer means (``bot.slack.api_errors``).

Data flows one way: scheduler → pipeline client → notifier → Slack.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

from slack_sdk.web import WebClient

from bot.notify.context import TickStats
from bot.notify.digest import Digests
from bot.notify.lease import JobLease
from bot.notify.outbox import CHANNEL_GAP_SECONDS, Outbox
from bot.notify.reminders import Reminders
from bot.notify.watcher import Watcher
from bot.ops.permissions import Permissions
from bot.ops.pipeline_ops import PipelineOps
from bot.slack.api_errors import SlackFailure
from storage.db import SessionFactory, utcnow

LEASE_NAME: Final = "notifier"
_UTC_ZONE: Final = ZoneInfo("UTC")


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
        command: str = "/pipeline",
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be positive, not {interval_seconds!r}")
        self.holder_id = holder_id
        self._interval = float(interval_seconds)
        self._sleep = sleep
        self._lease = JobLease(
            sessions=sessions,
            name=LEASE_NAME,
            holder_id=holder_id,
            interval_seconds=interval_seconds,
            clock=clock,
        )
        self._watcher = Watcher(
            ops=ops,
            sessions=sessions,
            clock=clock,
            interval_seconds=interval_seconds,
            permissions=permissions,
            reminders=Reminders(reminder_minutes=approval_reminder_minutes),
        )
        self._digests = Digests(ops=ops, sessions=sessions, clock=clock, zone=digest_zone)
        self._outbox = Outbox(
            sessions=sessions, web_client=web_client, clock=clock, command=command
        )

    def run_once(self) -> TickStats | None:
        """Tick and send the queue if this process holds the lease; None if another does."""
        if not self._lease.acquire():
            return None
        stats = self.tick()
        self.queue_digests(stats)
        # Send what is due; a channel with more queued waits a second between messages,
        # within one interval at most (the rest goes out on the next run).
        for _ in range(max(1, int(self._interval))):
            sent = self.flush_outbox()
            if sent == 0 and self._outbox.waiting == 0:
                break
            self._sleep(CHANNEL_GAP_SECONDS)
        self._outbox.prune()
        return stats

    @property
    def halted(self) -> SlackFailure | None:
        """Why nothing is sent to Slack (it refuses pipebot's token or app); None if sending."""
        return self._outbox.halted

    def close(self) -> None:
        """Give the lease up so another process takes over at once (at shutdown)."""
        self._lease.release()

    def tick(self) -> TickStats:
        """Read every due pipeline once and queue what changed (see ``Watcher.tick``)."""
        return self._watcher.tick()

    def queue_digests(self, stats: TickStats | None = None) -> int:
        """Queue the daily digests whose time has come; the count (see ``Digests.queue``)."""
        return self._digests.queue(stats)

    def flush_outbox(self, limit: int = 100) -> int:
        """Send each channel's next due message; the count (see ``Outbox.flush``)."""
        return self._outbox.flush(limit)
