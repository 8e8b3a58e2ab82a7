"""The background work of ``pipebot serve``, ``pipebot worker`` and the sandbox: the notifier
on a thread of its own and, on the embedded engine, the source poller's job.

**The notifier** runs on its own thread (``NotifierRunner``, named ``pipebot-notifier``): a
first run at once, then a run at once after every ``wake``, when a message left queued may
go, and at least every ``PIPEBOT_POLL_SECONDS``. A wake is an event, never a job
submission: one that lands while a run reads or sends is read in that run or the next one
starts at once, so no change waits for the interval. (It used to be an APScheduler job
woken with ``modify_job``; with ``max_instances=1`` APScheduler skipped the wake-up that
landed while a run was still going, and the channel lagged one interval: issue 12.) While
this process holds the notifier's lease the runner also asks every ``DUE_CHECK_SECONDS``
whether a run would read anything (``Notifier.due``: two read queries), so a change
another process committed, a new subscription or a resumed channel is shown within about
half a second too.

**The source poller** is an APScheduler 3.x job run every ``PIPEBOT_POLL_SECONDS`` with an
explicit ID, ``replace_existing``, ``coalesce`` (missed runs collapse into one) and
``max_instances=1`` (a slow run is never overlapped).

Several processes may run all this: each job's database lease lets one of them run it at a
time.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from apscheduler.schedulers.background import BackgroundScheduler

if TYPE_CHECKING:
    from bot.engine.source_poller import SourcePoller
    from bot.notify.notifier import Notifier

log = logging.getLogger(__name__)

JOB_ID: Final = "pipebot-notifier"
"""The notifier's thread (its name in logs and thread dumps)."""
SOURCE_POLLER_JOB_ID: Final = "pipebot-source-poller"
DUE_CHECK_SECONDS: Final = 0.5
"""Between runs, the lease holder asks this often whether a run would read anything."""
MIN_PAUSE_SECONDS: Final = 0.05
"""The shortest wait between two runs."""
STOP_TIMEOUT_SECONDS: Final = 60.0
"""How long a shutdown waits for the notifier's run in progress to end its step."""


class _Job(Protocol):
    """A scheduled job: each run takes (or renews) the job's lease and does nothing unless
    it holds it; ``close`` gives the lease up."""

    def run_once(self) -> object: ...

    def close(self) -> None: ...


class _Notifier(_Job, Protocol):
    """What the runner needs of ``Notifier``."""

    def wake(self) -> None: ...

    def wait_for_wake(self, seconds: float) -> bool: ...

    def due(self) -> bool: ...

    def next_send_in(self) -> float | None: ...

    def stop(self) -> None: ...


def _run(job: _Job, failure: str) -> None:
    try:
        job.run_once()
    except Exception:  # logged here with context; the next run tries again
        log.exception(failure)


class NotifierRunner:
    """Runs the notifier on a thread of its own: now, at once after each wake, and at least
    every ``interval_seconds``; while this process holds the lease, also as soon as
    ``Notifier.due`` says a run would read something (asked every ``check_seconds``)."""

    def __init__(
        self,
        *,
        notifier: _Notifier,
        interval_seconds: float,
        check_seconds: float = DUE_CHECK_SECONDS,
    ) -> None:
        if interval_seconds <= 0 or check_seconds <= 0:
            raise ValueError("interval_seconds and check_seconds must be positive")
        self._notifier = notifier
        self._interval = float(interval_seconds)
        self._check = float(check_seconds)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=JOB_ID, daemon=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Run at once (a change was committed); thread-safe, instant, never lost."""
        self._notifier.wake()

    def stop(self, *, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """End the loop: the run in progress ends after its current step; waits for it."""
        self._stopping.set()
        self._notifier.stop()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the notifier's run did not end within %.0f s", timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            holding = False
            try:
                holding = self._notifier.run_once() is not None
            except Exception:  # logged here with context; the next run tries again
                log.exception("notifier run failed")
            self._wait(holding=holding)

    def _wait(self, *, holding: bool) -> None:
        """Until woken, the interval is over, or (holding the lease) a run is due: a read
        (``due``) or a message the last run left queued (a channel's next post, a retry)."""
        pause = self._interval
        soon = self._notifier.next_send_in() if holding else None
        if soon is not None:
            pause = min(pause, max(soon, MIN_PAUSE_SECONDS))
        deadline = time.monotonic() + pause
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            step = min(remaining, self._check) if holding else remaining
            if self._notifier.wait_for_wake(step) or self._stopping.is_set():
                return
            if holding and step < remaining and self._due():
                return

    def _due(self) -> bool:
        try:
            return self._notifier.due()
        except Exception:  # the next run reads and logs the failure in full
            log.debug("notifier: cannot tell whether a run is due", exc_info=True)
            return False


class Background:
    """One process's background work: APScheduler's periodic jobs (``get_job``) and the
    notifier's runner (``notifier_runner``), started and stopped together."""

    def __init__(
        self, *, scheduler: BackgroundScheduler, notifier_runner: NotifierRunner | None
    ) -> None:
        self.scheduler = scheduler
        self.notifier_runner = notifier_runner

    @property
    def running(self) -> bool:
        runner = self.notifier_runner
        return bool(self.scheduler.running) or (runner is not None and runner.running)

    def get_job(self, job_id: str) -> Any:
        """APScheduler's job with this ID (None if there is none)."""
        return self.scheduler.get_job(job_id)

    def shutdown(self) -> None:
        """Stop the runner and the scheduler, each after the run in progress."""
        if self.notifier_runner is not None:
            self.notifier_runner.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)


def start_scheduler(
    *,
    notifier: Notifier | None,
    interval_seconds: float,
    source_poller: SourcePoller | None = None,
    check_seconds: float = DUE_CHECK_SECONDS,
) -> Background:
    """Start the notifier's runner (when a notifier is given: its first run is now) and a
    daemon scheduler running the source poller (when given) now and every
    ``interval_seconds``."""
    scheduler = BackgroundScheduler(timezone=UTC, daemon=True)
    if source_poller is not None:
        scheduler.add_job(
            _run,
            trigger="interval",
            seconds=interval_seconds,
            args=[source_poller, "source polling failed"],
            id=SOURCE_POLLER_JOB_ID,
            name="source-change polling",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            next_run_time=datetime.now(UTC),
        )
    scheduler.start()
    runner = None
    if notifier is not None:
        runner = NotifierRunner(
            notifier=notifier,
            interval_seconds=interval_seconds,
            check_seconds=min(check_seconds, interval_seconds),
        )
        runner.start()
    return Background(scheduler=scheduler, notifier_runner=runner)


def wake(background: Background) -> None:
    """Run the notifier at once (e.g. the embedded engine committed a change)."""
    if background.notifier_runner is None:
        log.debug("no notifier runs here; nothing to wake")
        return
    background.notifier_runner.wake()


def stop_scheduler(
    background: Background,
    *,
    notifier: Notifier | None = None,
    source_poller: SourcePoller | None = None,
) -> None:
    """Stop the background work (waiting for the runs in progress) and give up the jobs'
    leases."""
    background.shutdown()
    leases: list[tuple[_Job | None, str]] = [
        (notifier, "the notifier lease"),
        (source_poller, "the source poller's lease"),
    ]
    for job, lease in leases:
        if job is None:
            continue
        try:
            job.close()
        except Exception:
            log.warning("could not release %s", lease, exc_info=True)
