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

A run reads, then sends until nothing is due. A change that lands meanwhile (``wake``,
called by the embedded engine after each commit) is read in the same run, and one that
lands between runs starts the next at once (``wait_for_wake``): no change waits for the
next interval (``bot.notify.scheduler`` runs it).

Data flows one way: scheduler → pipeline client → notifier → Slack.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from slack_sdk.web import WebClient

from bot.notify.context import TickStats
from bot.notify.digest import Digests
from bot.notify.lease import JobLease
from bot.notify.outbox import Outbox
from bot.notify.reminders import Reminders
from bot.notify.watcher import Watcher
from bot.ops.permissions import Permissions
from bot.ops.pipeline_ops import PipelineOps
from bot.slack.api_errors import SlackFailure
from storage.db import SessionFactory, utcnow

LEASE_NAME: Final = "notifier"
_MAX_ROUNDS_PER_SECOND: Final = 100
"""A safety net: a run ends after one interval of its clock, or after this many flushes per
second of its interval (each follows a pause, a wake's read or a message given up)."""
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
        sleep: Callable[[float], object] | None = None,
        approval_reminder_minutes: int = 60,
        digest_zone: ZoneInfo = _UTC_ZONE,
        command: str = "/pipeline",
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be positive, not {interval_seconds!r}")
        self.holder_id = holder_id
        self._interval = float(interval_seconds)
        self._clock = clock
        self._woken = threading.Event()
        self._stopping = False
        # The pause between flushes ends early on a wake (tests inject a clock's sleep).
        self._sleep = sleep if sleep is not None else self._woken.wait
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
        """Tick and send if this process holds the lease; None if another does.

        After the tick the run sends what is due until nothing is left, within one
        interval: edits at once, posts about a second apart per channel (the run waits for
        that). A wake meanwhile reads again at once: what changed while this run read or
        sent is queued in this run."""
        if self._stopping or not self._lease.acquire():
            return None
        deadline = self._clock() + timedelta(seconds=self._interval)
        stats = self._read()
        self.queue_digests(stats)
        for _ in range(_MAX_ROUNDS_PER_SECOND * max(1, int(self._interval))):
            self.flush_outbox()
            now = self._clock()
            if self._stopping or now >= deadline:
                break  # what is left goes out on the next run
            if not self._woken.is_set():
                due = self._outbox.next_due
                if due is None or due > deadline:
                    break
                self._sleep(max(0.0, (due - now).total_seconds()))
            if self._woken.is_set():
                stats.add(self._read())
        self._outbox.prune()
        return stats

    def _read(self) -> TickStats:
        """A tick, consuming the wakes that came before it (it reads what they announced)."""
        self._woken.clear()
        return self.tick()

    def wake(self) -> None:
        """Something changed (the embedded engine committed): a run in progress reads again
        before it ends, and ``wait_for_wake`` returns at once. Thread-safe and instant, so
        a burst of changes costs one read, not one per change."""
        self._woken.set()

    def wait_for_wake(self, seconds: float) -> bool:
        """Wait until woken (True) or ``seconds`` pass (False); a wake that came during the
        last run counts, so none is lost between runs."""
        return self._woken.wait(seconds)

    def next_send_in(self) -> float | None:
        """Seconds until a message the last run left queued may go (a channel's next post,
        a retry); None if the last run left none. The next run may start then."""
        due = self._outbox.next_due
        return None if due is None else (due - self._clock()).total_seconds()

    def due(self) -> bool:
        """Whether a run now would read something (``Watcher.due``: a change another process
        committed, a new subscription, a reminder); reads only."""
        return self._watcher.due()

    def stop(self) -> None:
        """Let a run in progress end after its current step, and start none (at shutdown)."""
        self._stopping = True
        self._woken.set()

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
