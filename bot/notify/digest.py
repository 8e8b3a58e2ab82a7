"""The daily digest: one message per channel and digest time, summing up the last 24 hours.

A subscription with a digest time (HH:MM in the digest time zone) gets the day's digest
once that time has come. Each subscription's day is claimed in the same transaction that
queues the message, so another tick or process finds it sent; the channel's pipelines share
one message, and each pipeline is read once however many channels want it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.notify.context import TickStats
from bot.ops.pipeline_ops import OpsError, PipelineOps
from bot.slack.notifications import digest_message
from storage import notify_store
from storage.db import SessionFactory, transaction
from storage.models import Subscription


class Digests:
    """Queues the daily digests that are due."""

    def __init__(
        self,
        *,
        ops: PipelineOps,
        sessions: SessionFactory,
        clock: Callable[[], datetime],
        zone: ZoneInfo,
    ) -> None:
        self._ops = ops
        self._sessions = sessions
        self._clock = clock
        self._zone = zone

    def queue(self, stats: TickStats | None = None) -> int:
        """Queue each channel's daily digest whose time (in the digest time zone) has come
        and that was not sent today: one message per channel and time, whatever the number
        of pipelines in it; each pipeline read once. Returns the digests queued."""
        now = self._clock()
        local = now.astimezone(self._zone)
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
            except OpsError as exc:  # the digest says the pipeline could not be read
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
