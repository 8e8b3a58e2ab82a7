"""Storage functions for the Slack bot: access lists, policies, audit, clicks, starters.

Keyword-only functions that take a session; the caller owns the transaction.
Nothing outside ``storage/`` builds SQL.

Inserts that may race with another process (a second click, a Slack retry, two admins
editing one list) use ``INSERT ... ON CONFLICT``, which SQLite and PostgreSQL both
support: the loser neither raises nor poisons its transaction. On PostgreSQL the
loser's insert waits for the winner's transaction, then its next statement (READ
COMMITTED) sees the winner's row.

Timestamps come back naive from SQLite: pass them through ``storage.db.utc``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Final, Literal

from sqlmodel import Session, col, delete, select

from storage.common import check_choice, dialect_insert, insert_ignoring_conflict
from storage.db import utc, utcnow
from storage.models import (
    AuditEntry,
    ClickRecord,
    ExecutionStarter,
    PipelineAccess,
    PipelinePolicy,
)

Role = Literal["operators", "approvers"]
ROLES: Final[tuple[Role, ...]] = ("operators", "approvers")

AuditKind = Literal["command", "click", "view", "notifier"]
"""Where an audited change came from: a person's command, click or form, or the notifier
acting on its own (a subscription suspended because Slack refused its channel)."""
AuditOutcome = Literal["ok", "refused", "error"]
AUDIT_KINDS: Final[tuple[AuditKind, ...]] = ("command", "click", "view", "notifier")
NOTIFIER_ACTOR: Final = "pipebot"
"""The audit entries' ``user_id`` for what the notifier did on its own."""
AUDIT_OUTCOMES: Final[tuple[AuditOutcome, ...]] = ("ok", "refused", "error")


# --- access lists ------------------------------------------------------------------------------


def add_access(
    *,
    session: Session,
    pipeline: str,
    role: Role,
    subject: str,
    added_by: str,
    at: datetime | None = None,
) -> bool:
    """Add ``subject`` to the pipeline's ``role`` list; False if it was already there."""
    check_choice(role, ROLES, "role")
    return insert_ignoring_conflict(
        session,
        PipelineAccess,
        {
            "pipeline": pipeline,
            "role": role,
            "subject": subject,
            "added_by": added_by,
            "added_at": at or utcnow(),
        },
    )


def remove_access(*, session: Session, pipeline: str, role: Role, subject: str) -> bool:
    """Remove ``subject`` from the pipeline's ``role`` list; False if it was not there."""
    check_choice(role, ROLES, "role")
    result = session.execute(
        delete(PipelineAccess).where(
            col(PipelineAccess.pipeline) == pipeline,
            col(PipelineAccess.role) == role,
            col(PipelineAccess.subject) == subject,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def list_access(
    *, session: Session, pipeline: str, role: Role | None = None
) -> list[PipelineAccess]:
    """The pipeline's list entries, by role then in the order they were added."""
    statement = (
        select(PipelineAccess)
        .where(PipelineAccess.pipeline == pipeline)
        .order_by(col(PipelineAccess.role), col(PipelineAccess.id))
    )
    if role is not None:
        check_choice(role, ROLES, "role")
        statement = statement.where(PipelineAccess.role == role)
    return list(session.exec(statement))


# --- policies ----------------------------------------------------------------------------------


def get_policy(*, session: Session, pipeline: str) -> PipelinePolicy | None:
    return session.exec(select(PipelinePolicy).where(PipelinePolicy.pipeline == pipeline)).first()


def set_policy(
    *,
    session: Session,
    pipeline: str,
    no_self_approval: bool,
    updated_by: str,
    at: datetime | None = None,
) -> PipelinePolicy:
    """Create or replace the pipeline's policy (an upsert: concurrent setters don't collide)."""
    values = {
        "pipeline": pipeline,
        "no_self_approval": no_self_approval,
        "updated_by": updated_by,
        "updated_at": at or utcnow(),
    }
    statement = (
        dialect_insert(session, PipelinePolicy)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["pipeline"],
            set_={name: value for name, value in values.items() if name != "pipeline"},
        )
    )
    session.execute(statement)
    policy = session.exec(
        select(PipelinePolicy)
        .where(PipelinePolicy.pipeline == pipeline)
        .execution_options(populate_existing=True)
    ).one()
    return policy


# --- audit -------------------------------------------------------------------------------------


def append_audit(
    *,
    session: Session,
    user_id: str,
    kind: AuditKind,
    what: str,
    outcome: AuditOutcome,
    channel_id: str | None = None,
    pipeline: str | None = None,
    execution_id: str | None = None,
    detail: str | None = None,
    at: datetime | None = None,
) -> AuditEntry:
    check_choice(kind, AUDIT_KINDS, "kind")
    check_choice(outcome, AUDIT_OUTCOMES, "outcome")
    entry = AuditEntry(
        at=at or utcnow(),
        user_id=user_id,
        channel_id=channel_id,
        kind=kind,
        what=what,
        pipeline=pipeline,
        execution_id=execution_id,
        outcome=outcome,
        detail=detail,
    )
    session.add(entry)
    session.flush()
    return entry


def list_audit(
    *,
    session: Session,
    pipeline: str | None = None,
    limit: int = 20,
    before_id: int | None = None,
) -> list[AuditEntry]:
    """Newest first; ``before_id`` continues a previous page."""
    statement = select(AuditEntry).limit(limit)
    if pipeline is None:
        statement = statement.order_by(col(AuditEntry.id).desc())
    else:
        # The whole (pipeline, id) index in the ORDER BY lets the planner walk it backwards.
        statement = statement.where(AuditEntry.pipeline == pipeline).order_by(
            col(AuditEntry.pipeline).desc(), col(AuditEntry.id).desc()
        )
    if before_id is not None:
        statement = statement.where(col(AuditEntry.id) < before_id)
    return list(session.exec(statement))


def stage_detail(stage: str, rest: str | None = None) -> str:
    """The audit ``detail`` of an operation on one stage (a retry, a disabled transition):
    ``stage Build`` or ``stage Prod: release freeze``; ``last_actor`` finds it by stage."""
    return f"stage {stage}" + (f": {rest}" if rest else "")


def detail_stage(detail: str | None) -> str | None:
    """The stage a ``stage_detail`` names; None for any other detail."""
    if not detail or not detail.startswith("stage "):
        return None
    stage = detail[len("stage ") :].split(":", 1)[0].strip()
    return stage or None


LAST_ACTOR_SCAN: Final = 50
"""How many of a pipeline's newest matching audit entries ``last_actor`` looks through."""


def last_actor(
    *,
    session: Session,
    pipeline: str,
    operations: Sequence[str],
    execution_id: str | None = None,
    stage: str | None = None,
    around: datetime | None = None,
    before: timedelta = timedelta(minutes=1),
    after: timedelta = timedelta(minutes=5),
) -> AuditEntry | None:
    """Who did one of ``operations`` to ``pipeline`` from Slack: the newest audit entry with
    outcome ``ok`` whose ``what`` is one of them (a command's name, a button's action ID, a
    form's callback ID: ``bot.slack.access`` groups them), its ``user_id`` the Slack user.

    Narrowed to one execution by ``execution_id``; to one stage by ``stage`` (entries whose
    detail names another stage through ``stage_detail`` are skipped, entries naming none are
    kept); and to the time the backend says the change was made by ``around`` (the entry is
    written just after the call: from ``before`` earlier, for clocks apart, to ``after``
    later), so a change made since outside Slack (the console, the CLI) is not pinned on
    whoever made the previous one. None when Slack did not do it, as far as pipebot knows.
    """
    statement = (
        select(AuditEntry)
        .where(
            AuditEntry.pipeline == pipeline,
            AuditEntry.outcome == "ok",
            col(AuditEntry.what).in_(list(operations)),
        )
        .order_by(col(AuditEntry.pipeline).desc(), col(AuditEntry.id).desc())
        .limit(LAST_ACTOR_SCAN)
    )
    if execution_id is not None:
        statement = statement.where(AuditEntry.execution_id == execution_id)
    if around is not None:
        statement = statement.where(
            col(AuditEntry.at) >= utc(around - before),
            col(AuditEntry.at) <= utc(around + after),
        )
    for entry in session.exec(statement):
        named = detail_stage(entry.detail)
        if stage is None or named is None or named == stage:
            return entry
    return None


# --- clicks (idempotency of human decisions) ---------------------------------------------------


def record_click_once(
    *,
    session: Session,
    key: str,
    user_id: str,
    outcome: str,
    at: datetime | None = None,
) -> tuple[ClickRecord, bool]:
    """Record the first decision on ``key``; return (the recorded row, whether it is ours).

    When ``created`` is False the row is the earlier decision, whoever made it, so the caller
    can answer "already approved by <@U…> at …" and do nothing. Safe across processes: a
    concurrent second click waits for the first transaction and then sees its row.
    """
    created = insert_ignoring_conflict(
        session,
        ClickRecord,
        {"key": key, "user_id": user_id, "at": at or utcnow(), "outcome": outcome},
    )
    row = session.exec(
        select(ClickRecord).where(ClickRecord.key == key).execution_options(populate_existing=True)
    ).one()
    return row, created


def get_click(*, session: Session, key: str) -> ClickRecord | None:
    return session.exec(select(ClickRecord).where(ClickRecord.key == key)).first()


def set_click_outcome(*, session: Session, key: str, outcome: str) -> bool:
    """Replace a recorded click's outcome (e.g. "pending" → "approved"); False if none."""
    row = get_click(session=session, key=key)
    if row is None:
        return False
    row.outcome = outcome
    session.add(row)
    session.flush()
    return True


def forget_click(*, session: Session, key: str) -> bool:
    """Delete a recorded click so the decision can be made again (the action failed)."""
    result = session.execute(delete(ClickRecord).where(col(ClickRecord.key) == key))
    return bool(result.rowcount)  # type: ignore[attr-defined]


# --- execution starters ------------------------------------------------------------------------


def record_starter(
    *,
    session: Session,
    execution_id: str,
    pipeline: str,
    user_id: str,
    at: datetime | None = None,
) -> bool:
    """Remember who started ``execution_id``; the first record stands (False if one existed)."""
    return insert_ignoring_conflict(
        session,
        ExecutionStarter,
        {
            "execution_id": execution_id,
            "pipeline": pipeline,
            "user_id": user_id,
            "at": at or utcnow(),
        },
    )


def get_starter(*, session: Session, execution_id: str) -> ExecutionStarter | None:
    return session.exec(
        select(ExecutionStarter).where(ExecutionStarter.execution_id == execution_id)
    ).first()


def starters(*, session: Session, execution_ids: Iterable[str]) -> dict[str, str]:
    """Who started each of ``execution_ids`` from Slack (execution ID → Slack user ID), in
    one query; executions started elsewhere are left out."""
    wanted = sorted({e for e in execution_ids if e})
    if not wanted:
        return {}
    rows = session.exec(
        select(ExecutionStarter).where(col(ExecutionStarter.execution_id).in_(wanted))
    )
    return {row.execution_id: row.user_id for row in rows}
