"""Storage functions for the embedded engine.

Keyword-only functions that take a session; the caller owns the transaction.
Nothing outside ``storage/`` builds SQL. ``lock=True`` takes a row lock
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already
serialises writers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import event, func, text, update
from sqlalchemy.orm import UOWTransaction
from sqlmodel import Session, SQLModel, col, delete, select

from storage.db import SessionFactory, utc
from storage.models import (
    ActionExecution,
    ConditionExecution,
    EngineWorker,
    Pipeline,
    PipelineExecution,
    PipelineVersion,
    RuleExecution,
    SourceRefSeen,
    StageExecution,
    StageTransition,
)

ACTIVE_EXECUTION_STATUSES = ("InProgress", "Stopping")
_CHANGED_KEY = "pipebot_changed_pipelines"
_PIPELINE_ROWS = (
    PipelineExecution,
    StageExecution,
    ActionExecution,
    ConditionExecution,
    RuleExecution,
    StageTransition,
)


# --- change feed -------------------------------------------------------------------------------


def track_changes(factory: SessionFactory) -> None:
    """Make every write transaction of ``factory`` bump ``change_seq`` of each pipeline whose
    declaration, executions, stages, actions or transitions it changed, once, at commit.

    Readers (the notifier) compare ``change_tokens`` with what they last read and skip the
    pipelines that did not change. Bulk statements that bypass the ORM (an action's claim,
    a pipeline's deletion) change nothing a reader shows, or remove the pipeline.
    """
    event.listen(factory.writer_maker, "after_flush", _collect_changes)
    event.listen(factory.writer_maker, "before_commit", _bump_changes)


def _collect_changes(session: Session, _flush: UOWTransaction) -> None:
    changed: set[int] = session.info.setdefault(_CHANGED_KEY, set())
    # ``session.dirty`` holds every row an attribute was set on, even to the same value (a
    # sweep that found nothing to do): only a net change counts.
    dirty = [row for row in session.dirty if session.is_modified(row)]
    for row in (*session.new, *dirty, *session.deleted):
        if isinstance(row, _PIPELINE_ROWS):
            changed.add(row.pipeline_id)
        elif isinstance(row, Pipeline) and row.id is not None and row not in session.deleted:
            changed.add(row.id)


def _bump_changes(session: Session) -> None:
    session.flush()  # the last changes are collected before the count moves
    changed: set[int] | None = session.info.pop(_CHANGED_KEY, None)
    if not changed:
        return
    session.execute(
        update(Pipeline)
        .where(col(Pipeline.id).in_(sorted(changed)))
        .values(change_seq=col(Pipeline.change_seq) + 1)
        .execution_options(synchronize_session=False)
    )


def change_tokens(*, session: Session) -> dict[str, str]:
    """Every pipeline's change token: equal tokens mean nothing changed in between (the row's
    ID and creation time are part of it, so a pipeline deleted and created again under its
    name differs, even where SQLite hands out the same ID again)."""
    statement = select(Pipeline.name, Pipeline.id, Pipeline.created_at, Pipeline.change_seq)
    return {
        name: f"{pk}.{utc(created).timestamp():.6f}.{seq}"
        for name, pk, created, seq in session.execute(statement)
    }


def add_row(*, session: Session, row: SQLModel) -> None:
    """Add ``row`` and flush so its generated key is available."""
    session.add(row)
    session.flush()


# --- pipelines ---------------------------------------------------------------------------------


def get_pipeline(*, session: Session, name: str, lock: bool = False) -> Pipeline | None:
    statement = select(Pipeline).where(Pipeline.name == name)
    if lock:
        statement = statement.with_for_update()
    return session.exec(statement).first()


def get_pipeline_by_id(
    *, session: Session, pipeline_id: int, lock: bool = False
) -> Pipeline | None:
    statement = select(Pipeline).where(Pipeline.id == pipeline_id)
    if lock:
        statement = statement.with_for_update()
    return session.exec(statement).first()


def list_pipelines(*, session: Session, after_name: str | None, limit: int) -> list[Pipeline]:
    statement = select(Pipeline).order_by(col(Pipeline.name)).limit(limit)
    if after_name is not None:
        statement = statement.where(Pipeline.name > after_name)
    return list(session.exec(statement))


def delete_pipeline(*, session: Session, pipeline: Pipeline) -> None:
    """Delete a pipeline and everything that belongs to it (children first, for SQLite)."""
    pipeline_id = pipeline.id
    for model in (
        RuleExecution,
        ConditionExecution,
        ActionExecution,
        StageExecution,
        StageTransition,
        SourceRefSeen,
        PipelineVersion,
    ):
        session.execute(delete(model).where(model.pipeline_id == pipeline_id))  # type: ignore[arg-type]
    session.execute(
        delete(PipelineExecution).where(col(PipelineExecution.pipeline_id) == pipeline_id)
    )
    session.delete(pipeline)
    session.flush()


def get_pipeline_version(
    *, session: Session, pipeline_id: int, version: int
) -> PipelineVersion | None:
    return session.get(PipelineVersion, (pipeline_id, version))


def pipeline_ids_with_active_executions(*, session: Session) -> list[int]:
    statement = (
        select(PipelineExecution.pipeline_id)
        .where(col(PipelineExecution.status).in_(ACTIVE_EXECUTION_STATUSES))
        .distinct()
    )
    return list(session.exec(statement))


# --- executions --------------------------------------------------------------------------------


def active_executions(*, session: Session, pipeline_id: int) -> list[PipelineExecution]:
    """In-progress and stopping executions, oldest first.

    Sorted here, not in SQL: an ORDER BY id would lead SQLite to walk the pipeline's whole
    history by (pipeline_id, id) instead of the few active rows by (status, pipeline_id).
    """
    statement = select(PipelineExecution).where(
        PipelineExecution.pipeline_id == pipeline_id,
        col(PipelineExecution.status).in_(ACTIVE_EXECUTION_STATUSES),
    )
    return sorted(session.exec(statement), key=lambda e: e.id or 0)


def get_execution(
    *, session: Session, pipeline_id: int, execution_id: str
) -> PipelineExecution | None:
    statement = select(PipelineExecution).where(
        PipelineExecution.pipeline_id == pipeline_id,
        PipelineExecution.execution_id == execution_id,
    )
    return session.exec(statement).first()


def get_executions_by_pk(*, session: Session, pks: Iterable[int]) -> dict[int, PipelineExecution]:
    wanted = sorted(set(pks))
    if not wanted:
        return {}
    statement = select(PipelineExecution).where(col(PipelineExecution.id).in_(wanted))
    return {row.id: row for row in session.exec(statement) if row.id is not None}


def execution_by_request_token(
    *, session: Session, pipeline_id: int, token: str
) -> PipelineExecution | None:
    statement = select(PipelineExecution).where(
        PipelineExecution.pipeline_id == pipeline_id,
        PipelineExecution.client_request_token == token,
    )
    return session.exec(statement).first()


def list_executions(
    *,
    session: Session,
    pipeline_id: int,
    before_pk: int | None,
    limit: int,
    succeeded_in_stage: str | None = None,
) -> list[PipelineExecution]:
    """Newest first; ``before_pk`` continues a previous page."""
    statement = (
        select(PipelineExecution)
        .where(PipelineExecution.pipeline_id == pipeline_id)
        # Ordering by the whole (pipeline_id, id) index lets PostgreSQL walk it backwards
        # and stop after ``limit`` rows whatever its statistics say.
        .order_by(col(PipelineExecution.pipeline_id).desc(), col(PipelineExecution.id).desc())
        .limit(limit)
    )
    if before_pk is not None:
        statement = statement.where(col(PipelineExecution.id) < before_pk)
    if succeeded_in_stage is not None:
        succeeded = select(StageExecution.execution_pk).where(
            StageExecution.pipeline_id == pipeline_id,
            StageExecution.stage_name == succeeded_in_stage,
            StageExecution.status == "Succeeded",
        )
        statement = statement.where(col(PipelineExecution.id).in_(succeeded))
    return list(session.exec(statement))


# --- stage executions --------------------------------------------------------------------------


def stage_executions_for(*, session: Session, execution_pks: Sequence[int]) -> list[StageExecution]:
    if not execution_pks:
        return []
    statement = select(StageExecution).where(col(StageExecution.execution_pk).in_(execution_pks))
    return list(session.exec(statement))


def get_stage_execution(
    *, session: Session, execution_pk: int, stage_name: str
) -> StageExecution | None:
    statement = select(StageExecution).where(
        StageExecution.execution_pk == execution_pk, StageExecution.stage_name == stage_name
    )
    return session.exec(statement).first()


def latest_stage_executions(*, session: Session, pipeline_id: int) -> dict[str, StageExecution]:
    """For each stage, the stage execution of the execution that entered it last."""
    latest = (
        select(StageExecution.stage_name, func.max(StageExecution.entered_seq).label("seq"))
        .where(StageExecution.pipeline_id == pipeline_id)
        .group_by(col(StageExecution.stage_name))
        .subquery()
    )
    statement = (
        select(StageExecution)
        .join(
            latest,
            (col(StageExecution.stage_name) == latest.c.stage_name)
            & (col(StageExecution.entered_seq) == latest.c.seq),
        )
        .where(StageExecution.pipeline_id == pipeline_id)
    )
    return {row.stage_name: row for row in session.exec(statement)}


def latest_success_in_stage(
    *, session: Session, pipeline_id: int, stage_name: str, version: int
) -> PipelineExecution | None:
    """The execution that most recently succeeded in ``stage_name`` among the STANDARD
    executions of pipeline version ``version``: an automatic rollback's target
    [userguide/stage-rollback-auto.html]. None if there is none."""
    statement = (
        select(PipelineExecution)
        .join(StageExecution, col(StageExecution.execution_pk) == col(PipelineExecution.id))
        .where(
            StageExecution.pipeline_id == pipeline_id,
            StageExecution.stage_name == stage_name,
            StageExecution.status == "Succeeded",
            PipelineExecution.pipeline_version == version,
            PipelineExecution.execution_type == "STANDARD",
        )
        .order_by(col(StageExecution.entered_seq).desc())
        .limit(1)
    )
    return session.exec(statement).first()


def stage_execution_status(*, session: Session, execution_pk: int, stage_name: str) -> str | None:
    """The status of ``execution_pk``'s passage through ``stage_name``; None if it never
    entered it."""
    statement = select(StageExecution.status).where(
        StageExecution.execution_pk == execution_pk, StageExecution.stage_name == stage_name
    )
    value = session.exec(statement).first()
    return str(value) if value is not None else None


def max_entered_seq(*, session: Session, pipeline_id: int) -> int:
    statement = select(func.max(StageExecution.entered_seq)).where(
        StageExecution.pipeline_id == pipeline_id
    )
    value = session.exec(statement).first()
    return int(value or 0)


# --- action executions -------------------------------------------------------------------------


def action_executions_for(
    *, session: Session, execution_pk: int, stage_name: str | None = None
) -> list[ActionExecution]:
    statement = (
        select(ActionExecution)
        .where(ActionExecution.execution_pk == execution_pk)
        .order_by(col(ActionExecution.id))
    )
    if stage_name is not None:
        statement = statement.where(ActionExecution.stage_name == stage_name)
    return list(session.exec(statement))


def action_executions_for_many(
    *, session: Session, execution_pks: Sequence[int]
) -> list[ActionExecution]:
    if not execution_pks:
        return []
    statement = (
        select(ActionExecution)
        .where(col(ActionExecution.execution_pk).in_(execution_pks))
        .order_by(col(ActionExecution.id))
    )
    return list(session.exec(statement))


def count_action_runs(
    *,
    session: Session,
    pipeline_id: int,
    stage_name: str,
    action_name: str,
    provider: str,
    up_to_pk: int,
) -> int:
    """How many executions of one action of a pipeline exist up to and including ``up_to_pk``:
    every attempt of every pipeline execution, counted in creation order (rows are never
    deleted except with their pipeline). A Commands action's CODEBUILD_BUILD_NUMBER."""
    statement = select(func.count(col(ActionExecution.id))).where(
        ActionExecution.pipeline_id == pipeline_id,
        ActionExecution.stage_name == stage_name,
        ActionExecution.action_name == action_name,
        ActionExecution.provider == provider,
        col(ActionExecution.id) <= up_to_pk,
    )
    return int(session.exec(statement).one())


def get_action(*, session: Session, pk: int) -> ActionExecution | None:
    return session.get(ActionExecution, pk)


def claim_action(*, session: Session, pk: int, worker_id: str, host: str) -> ActionExecution | None:
    """Claim an unclaimed, in-progress action for ``worker_id``; None if another got it.

    A conditional UPDATE is atomic on both databases, so two workers can never
    both run the same action.
    """
    result = session.execute(
        update(ActionExecution)
        .where(
            col(ActionExecution.id) == pk,
            col(ActionExecution.status) == "InProgress",
            col(ActionExecution.claimed_by).is_(None),
        )
        .values(claimed_by=worker_id, host=host)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    row = session.get(ActionExecution, pk, populate_existing=True)
    return row


def other_actions_running(*, session: Session, action: ActionExecution) -> bool:
    """Whether another action of the same execution and stage is still in progress."""
    statement = (
        select(ActionExecution.id)
        .where(
            ActionExecution.execution_pk == action.execution_pk,
            ActionExecution.stage_name == action.stage_name,
            ActionExecution.status == "InProgress",
            ActionExecution.id != action.id,
        )
        .limit(1)
    )
    return session.exec(statement).first() is not None


def unclaimed_actions(*, session: Session, limit: int = 200) -> list[int]:
    """In-progress actions that no worker has claimed yet (approvals never are)."""
    statement = (
        select(ActionExecution.id)
        .where(
            ActionExecution.status == "InProgress",
            col(ActionExecution.claimed_by).is_(None),
            ActionExecution.category != "Approval",
        )
        .order_by(col(ActionExecution.id))
        .limit(limit)
    )
    return [pk for pk in session.exec(statement) if pk is not None]


def claimed_in_progress_actions(*, session: Session) -> list[ActionExecution]:
    statement = (
        select(ActionExecution)
        .where(ActionExecution.status == "InProgress", col(ActionExecution.claimed_by).is_not(None))
        .execution_options(populate_existing=True)  # as committed now, not as read before
    )
    return list(session.exec(statement))


def action_statuses(*, session: Session, pks: Sequence[int]) -> dict[int, str]:
    if not pks:
        return {}
    statement = select(ActionExecution.id, ActionExecution.status).where(
        col(ActionExecution.id).in_(pks)
    )
    return {pk: status for pk, status in session.exec(statement) if pk is not None}


def actions_with_token(*, session: Session, pipeline_id: int, token: str) -> list[ActionExecution]:
    statement = select(ActionExecution).where(
        ActionExecution.pipeline_id == pipeline_id, ActionExecution.token == token
    )
    return list(session.exec(statement))


def pending_approvals(*, session: Session, pipeline_id: int | None = None) -> list[ActionExecution]:
    statement = select(ActionExecution).where(
        ActionExecution.status == "InProgress", ActionExecution.category == "Approval"
    )
    if pipeline_id is not None:
        statement = statement.where(ActionExecution.pipeline_id == pipeline_id)
    return list(session.exec(statement))


def next_approval_due(*, session: Session) -> datetime | None:
    statement = select(func.min(ActionExecution.approval_due_at)).where(
        ActionExecution.status == "InProgress", ActionExecution.category == "Approval"
    )
    return session.exec(statement).first()


def pipelines_with_due_approvals(*, session: Session, now: datetime) -> list[int]:
    statement = (
        select(ActionExecution.pipeline_id)
        .where(
            ActionExecution.status == "InProgress",
            ActionExecution.category == "Approval",
            col(ActionExecution.approval_due_at) <= now,
        )
        .distinct()
    )
    return list(session.exec(statement))


def list_action_executions(
    *,
    session: Session,
    pipeline_id: int,
    execution_pk: int | None,
    before_pk: int | None,
    limit: int,
    latest_only: bool = False,
) -> list[ActionExecution]:
    """A pipeline's action executions, newest first (``id`` below ``before_pk``), of one
    execution when ``execution_pk`` is given; ``latest_only`` keeps the newest run of each
    (stage, action) of that execution, leaving out runs a retry replaced."""
    statement = (
        select(ActionExecution)
        .where(ActionExecution.pipeline_id == pipeline_id)
        .order_by(col(ActionExecution.pipeline_id).desc(), col(ActionExecution.id).desc())
        .limit(limit)
    )
    if execution_pk is not None:
        statement = statement.where(ActionExecution.execution_pk == execution_pk)
        if latest_only:
            newest = (
                select(func.max(ActionExecution.id))
                .where(ActionExecution.execution_pk == execution_pk)
                .group_by(col(ActionExecution.stage_name), col(ActionExecution.action_name))
            )
            statement = statement.where(col(ActionExecution.id).in_(newest))
    if before_pk is not None:
        statement = statement.where(col(ActionExecution.id) < before_pk)
    return list(session.exec(statement))


def source_revisions_of_latest(
    *, session: Session, pipeline_id: int, stage_name: str
) -> list[ActionExecution]:
    """Latest succeeded action executions of a stage, newest first (current revisions)."""
    statement = (
        select(ActionExecution)
        .where(
            ActionExecution.pipeline_id == pipeline_id,
            ActionExecution.stage_name == stage_name,
            ActionExecution.status == "Succeeded",
        )
        .order_by(col(ActionExecution.id).desc())
        .limit(50)
    )
    return list(session.exec(statement))


# --- transitions -------------------------------------------------------------------------------


def get_transitions(*, session: Session, pipeline_id: int) -> dict[str, StageTransition]:
    statement = select(StageTransition).where(StageTransition.pipeline_id == pipeline_id)
    return {row.stage_name: row for row in session.exec(statement)}


def get_transition(
    *, session: Session, pipeline_id: int, stage_name: str
) -> StageTransition | None:
    return session.get(StageTransition, (pipeline_id, stage_name))


# --- workers -----------------------------------------------------------------------------------


def upsert_worker(*, session: Session, worker: EngineWorker) -> None:
    existing = session.get(EngineWorker, worker.id)
    if existing is None:
        session.add(worker)
    else:
        existing.heartbeat_at = worker.heartbeat_at
    session.flush()


def heartbeat_worker(*, session: Session, worker_id: str, now: datetime) -> bool:
    result = session.execute(
        update(EngineWorker).where(col(EngineWorker.id) == worker_id).values(heartbeat_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def list_workers(*, session: Session) -> list[EngineWorker]:
    return list(session.exec(select(EngineWorker)))


def delete_worker(*, session: Session, worker_id: str) -> None:
    session.execute(delete(EngineWorker).where(col(EngineWorker.id) == worker_id))


def add_rows(*, session: Session, rows: Sequence[SQLModel]) -> None:
    """Insert many rows at once (benchmarks and imports)."""
    session.add_all(rows)
    session.flush()


def analyze(*, session: Session) -> None:
    """Refresh the planner's statistics (autovacuum's job on PostgreSQL; used after bulk loads)."""
    session.execute(text("ANALYZE"))
