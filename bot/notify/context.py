"""What the notifier's jobs share within one tick: the counts, the context, the lazy reads.

A tick reads each due pipeline once and, in one transaction per pipeline, queues what each
channel has not seen. Every step of that (the parent message, the thread events, the
reminders) needs the same few things: the session, the pipeline, its lazy reads, the
counts and the time. ``TickContext`` carries them for one pipeline; ``ThreadContext`` adds
the channel and the execution whose thread the messages go to, so no step takes them one
by one (as Prefect's rules receive one ``OrchestrationContext``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from bot.ops.permissions import Permissions
from bot.ops.pipeline_ops import OpsError, PipelineOps
from bot.ops.pipeline_state import RollbackTarget
from storage import bot_store, notify_store
from storage.models import PostedEvent
from storage.notify_store import OutboxKind

log = logging.getLogger(__name__)


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

    def add(self, other: TickStats) -> None:
        """Count ``other``'s work in this one (a run that read again when woken)."""
        self.pipelines_read += other.pipelines_read
        self.backend_calls += other.backend_calls
        self.token_reads += other.token_reads
        self.posts += other.posts
        self.updates += other.updates
        self.replies += other.replies


@dataclass(frozen=True)
class TickContext:
    """One pipeline's read within a tick; ``session`` is that read's one write transaction."""

    session: Session
    pipeline: str
    lookups: Lookups
    stats: TickStats
    now: datetime

    def thread(self, channel: str, execution_id: str) -> ThreadContext:
        """The same read, queueing into one execution's thread in one channel (its lookups
        read that execution's resolved configuration, sharing this read's caches)."""
        return ThreadContext(
            session=self.session,
            pipeline=self.pipeline,
            lookups=self.lookups.for_execution(execution_id),
            stats=self.stats,
            now=self.now,
            channel=channel,
            execution_id=execution_id,
        )


@dataclass(frozen=True)
class ThreadContext(TickContext):
    """Where a step's messages go: one execution's parent message and thread in a channel."""

    channel: str
    execution_id: str

    def enqueue(self, kind: OutboxKind, payload: Mapping[str, Any], *, key: str | None) -> None:
        """Queue one Slack call in the outbox (sent in order per channel); ``key`` names the
        thread event it shows (None for the parent message)."""
        notify_store.enqueue(
            session=self.session,
            channel_id=self.channel,
            kind=kind,
            payload=json.dumps(payload),
            execution_id=self.execution_id,
            event_key=key,
            at=self.now,
        )

    def event(self, key: str) -> PostedEvent | None:
        """The thread event recorded under ``key`` here, if any."""
        return notify_store.get_event(
            session=self.session,
            channel_id=self.channel,
            execution_id=self.execution_id,
            event_key=key,
        )

    def record_once(self, key: str, *, resolved: bool) -> bool:
        """Record the thread event ``key``; True only for the first to record it (whichever
        tick or process): the caller queues its message only then, in this transaction."""
        _, created = notify_store.record_event_once(
            session=self.session,
            channel_id=self.channel,
            execution_id=self.execution_id,
            event_key=key,
            resolved=resolved,
            at=self.now,
        )
        return created


class Lookups:
    """Reads an event reply needs, made at most once per pipeline per tick and only when an
    event needs them."""

    def __init__(
        self,
        *,
        ops: PipelineOps,
        permissions: Permissions | None,
        pipeline: str,
        stats: TickStats,
        execution_id: str | None = None,
    ) -> None:
        self._ops = ops
        self._permissions = permissions
        self._pipeline = pipeline
        self._stats = stats
        self._execution_id = execution_id
        self._approvers: dict[str, list[str]] = {}
        self._declarations: dict[str, dict[str, Any]] = {}  # one entry: the pipeline's
        self._details: dict[str, list[dict[str, Any]]] = {}
        self._targets: dict[str, RollbackTarget | None] = {}

    def for_execution(self, execution_id: str) -> Lookups:
        """These lookups for one execution's thread: the same caches (nothing is read twice
        in a tick), and ``approval_config`` reads that execution's resolved values."""
        bound = Lookups(
            ops=self._ops,
            permissions=self._permissions,
            pipeline=self._pipeline,
            stats=self._stats,
            execution_id=execution_id,
        )
        bound._approvers = self._approvers
        bound._declarations = self._declarations
        bound._details = self._details
        bound._targets = self._targets
        return bound

    def approvers(self, *, session: Session, execution_id: str) -> list[str]:
        """Who may answer the approvals of ``execution_id`` (to name and mention them), by
        ``Permissions.approvers``: never its starter when self-approval is off, the admins when
        no one else may; [] without permissions."""
        if self._permissions is None:
            return []
        if execution_id not in self._approvers:
            found = bot_store.get_starter(session=session, execution_id=execution_id)
            self._approvers[execution_id] = list(
                self._permissions.approvers(
                    self._pipeline, execution_starter=found.user_id if found else None
                )
            )
        return self._approvers[execution_id]

    def _action_declaration(self, stage: str | None, action: str | None) -> Mapping[str, Any]:
        if self._pipeline not in self._declarations:
            self._stats.backend_calls += 1
            try:
                self._declarations[self._pipeline] = self._ops.declaration(self._pipeline)
            except (OpsError, KeyError, TypeError):  # unreadable: the reply goes without it
                self._declarations[self._pipeline] = {}
        declaration = self._declarations[self._pipeline]
        for stage_decl in declaration.get("stages") or []:
            if stage_decl.get("name") != stage:
                continue
            for action_decl in stage_decl.get("actions") or []:
                if action_decl.get("name") == action:
                    return dict(action_decl)
        return {}

    def approval_config(
        self, stage: str | None, action: str | None, *, execution_id: str | None = None
    ) -> tuple[str | None, str | None]:
        """The approval action's ``CustomData`` and ``ExternalEntityLink`` as the execution
        resolved them (``#{BuildVariables.RELEASE_NAME}`` replaced by its value), else as
        declared; (None, None) where neither sets them.

        The values come from ``execution_id`` (default: the thread's execution) by
        ListActionExecutions' ``input.resolvedConfiguration``, which AWS and the engine both
        return:
        https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_ActionExecutionInput.html
        """
        config = self.resolved_configuration(stage, action, execution_id=execution_id)
        if config is None:
            config = self._action_declaration(stage, action).get("configuration") or {}
        data, link = config.get("CustomData"), config.get("ExternalEntityLink")
        return (
            data if isinstance(data, str) else None,
            link if isinstance(link, str) else None,
        )

    def resolved_configuration(
        self, stage: str | None, action: str | None, *, execution_id: str | None = None
    ) -> Mapping[str, Any] | None:
        """The action's ``input.resolvedConfiguration`` in its newest action execution of
        ``execution_id`` (default: the thread's execution); None when none can be read."""
        execution = execution_id or self._execution_id
        if not execution:
            return None
        return resolved_configuration(self.action_details(execution), stage, action)

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

    def rollback_target(self, stage: str | None) -> RollbackTarget | None:
        """The execution a failed ``stage`` can be rolled back to, for the failure reply's
        Roll back button (``PipelineOps.rollback_target``); None when there is none (the
        source stage, PARALLEL mode, no earlier success) or it cannot be read now."""
        if not stage:
            return None
        if stage not in self._targets:
            self._stats.backend_calls += 3
            try:
                self._targets[stage] = self._ops.rollback_target(self._pipeline, stage)
            except OpsError as exc:
                log.info("notifier: no rollback for %s/%s: %s", self._pipeline, stage, exc.code)
                self._targets[stage] = None
        return self._targets[stage]

    def log_tail(self, action_execution_id: str) -> str | None:
        """The end of a failed action's log, where the backend keeps one; None otherwise."""
        self._stats.backend_calls += 1
        try:
            return self._ops.action_log(self._pipeline, action_execution_id)
        except Exception:  # a reply without its log beats no reply
            log.info("notifier: no log for %s", action_execution_id, exc_info=True)
            return None


def resolved_configuration(
    details: Sequence[Mapping[str, Any]], stage: str | None, action: str | None
) -> Mapping[str, Any] | None:
    """``input.resolvedConfiguration`` of the newest of ``details`` (ListActionExecutions'
    ``actionExecutionDetails``) run by ``stage``/``action``; None when it has none (a retried
    stage runs an action again: its latest run's values are the ones shown)."""
    runs = [
        d
        for d in details
        if d.get("stageName") == stage
        and d.get("actionName") == action
        and isinstance((d.get("input") or {}).get("resolvedConfiguration"), Mapping)
    ]
    if not runs:
        return None
    newest = max(
        enumerate(runs),
        key=lambda pair: (_sort_time(pair[1].get("startTime")), pair[0]),
    )[1]
    return dict(newest["input"]["resolvedConfiguration"])


def _sort_time(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else float("-inf")


def earliest(first: datetime | None, second: datetime | None) -> datetime | None:
    """The earlier of two optional times (None means never)."""
    if first is None:
        return second
    if second is None:
        return first
    return min(first, second)
