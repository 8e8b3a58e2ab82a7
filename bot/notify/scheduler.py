"""The background scheduler of ``pipebot serve`` and ``pipebot worker``: the notifier's job
and, on the embedded engine, the source poller's job.

APScheduler 3.x runs ``Notifier.run_once`` and ``SourcePoller.run_once`` every
``PIPEBOT_POLL_SECONDS``. Each job has an
explicit ID with ``replace_existing``, ``coalesce`` (missed runs collapse into one) and
``max_instances=1`` (a slow run is never overlapped). Several processes may run a scheduler:
each job's database lease lets one of them run it at a time.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Protocol

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

if TYPE_CHECKING:
    from bot.engine.source_poller import SourcePoller
    from bot.notify.notifier import Notifier

log = logging.getLogger(__name__)

JOB_ID: Final = "pipebot-notifier"
SOURCE_POLLER_JOB_ID: Final = "pipebot-source-poller"


class _Job(Protocol):
    """A scheduled job: each run takes (or renews) the job's lease and does nothing unless
    it holds it; ``close`` gives the lease up."""

    def run_once(self) -> object: ...

    def close(self) -> None: ...


def _run(job: _Job, failure: str) -> None:
    try:
        job.run_once()
    except Exception:  # logged here with context; the next run tries again
        log.exception(failure)


def start_scheduler(
    *,
    notifier: Notifier | None,
    interval_seconds: float,
    source_poller: SourcePoller | None = None,
) -> BackgroundScheduler:
    """Start a daemon scheduler running the notifier and/or the source poller (when given)
    now and every ``interval_seconds``."""
    scheduler = BackgroundScheduler(timezone=UTC, daemon=True)
    jobs: list[tuple[str, str, _Job, str]] = []
    if notifier is not None:
        jobs.append((JOB_ID, "channel notifications", notifier, "notifier run failed"))
    if source_poller is not None:
        jobs.append(
            (SOURCE_POLLER_JOB_ID, "source-change polling", source_poller, "source polling failed")
        )
    for job_id, name, job, failure in jobs:
        scheduler.add_job(
            _run,
            trigger="interval",
            seconds=interval_seconds,
            args=[job, failure],
            id=job_id,
            name=name,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            next_run_time=datetime.now(UTC),
        )
    scheduler.start()
    return scheduler


def wake(scheduler: BackgroundScheduler) -> None:
    """Run the notifier at once (e.g. the embedded engine saw a change)."""
    try:
        scheduler.modify_job(JOB_ID, next_run_time=datetime.now(UTC))
    except JobLookupError:
        log.debug("notifier job not scheduled; nothing to wake")


def stop_scheduler(
    scheduler: BackgroundScheduler,
    *,
    notifier: Notifier | None = None,
    source_poller: SourcePoller | None = None,
) -> None:
    """Stop the scheduler (waiting for a running job) and give up the jobs' leases."""
    if scheduler.running:
        scheduler.shutdown(wait=True)
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
