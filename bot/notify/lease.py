"""The database lease of a singleton background job (the notifier, the source poller).

Several pipebot processes may share one database, each running a scheduler: a job that must
run in one place at a time (one message per event, one execution per new commit) takes its
lease at the start of every run and renews it that way. A process that dies stops renewing,
and another takes over once the lease expires; one that stops gives it up at once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Final

from storage import lease_store
from storage.db import SessionFactory, transaction, utcnow

LEASE_INTERVALS: Final = 3
"""A lease lasts this many job intervals: a slow or skipped run does not lose it, and a dead
holder's job moves to another process within three intervals."""


class JobLease:
    """One job's lease, held under ``holder_id`` (unique per process)."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        name: str,
        holder_id: str,
        interval_seconds: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self.name = name
        self.holder_id = holder_id
        self._ttl = LEASE_INTERVALS * float(interval_seconds)
        self._clock = clock

    def acquire(self) -> bool:
        """Take or renew the lease (in a transaction of its own, so the other processes see it
        at once); False while another process holds it: skip this run."""
        with transaction(self._sessions) as session:
            return lease_store.acquire_lease(
                session=session,
                name=self.name,
                holder=self.holder_id,
                now=self._clock(),
                ttl_seconds=self._ttl,
            )

    def release(self) -> None:
        """Give the lease up so another process takes over at once (at shutdown)."""
        with transaction(self._sessions) as session:
            lease_store.release_lease(session=session, name=self.name, holder=self.holder_id)
