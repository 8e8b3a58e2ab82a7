"""Storage functions for stage conditions and their rule runs (``ConditionExecution``,
``RuleExecution``).

Keyword-only functions that take a session; the caller owns the transaction. The engine's
condition rules (``bot.engine.conditions``) and the worker's rule runner read and write
these rows only through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from storage.models import ConditionExecution, RuleExecution

IN_PROGRESS = "InProgress"


def add_condition(*, session: Session, row: ConditionExecution) -> ConditionExecution:
    """Insert a condition execution and give it its key (flushes)."""
    session.add(row)
    session.flush()
    return row


def add_rules(*, session: Session, rows: Sequence[RuleExecution]) -> None:
    """Insert rule executions and give them their keys (one flush)."""
    session.add_all(rows)
    session.flush()


def latest_condition(
    *, session: Session, execution_pk: int, stage_name: str, condition_type: str
) -> ConditionExecution | None:
    """The newest evaluation of one condition type of one execution's stage, or None."""
    statement = (
        select(ConditionExecution)
        .where(
            ConditionExecution.execution_pk == execution_pk,
            ConditionExecution.stage_name == stage_name,
            ConditionExecution.condition_type == condition_type,
        )
        .order_by(col(ConditionExecution.id).desc())
        .limit(1)
    )
    return session.exec(statement).first()


def conditions_for(*, session: Session, execution_pks: Sequence[int]) -> list[ConditionExecution]:
    """Every condition execution of these pipeline executions, oldest first."""
    if not execution_pks:
        return []
    statement = (
        select(ConditionExecution)
        .where(col(ConditionExecution.execution_pk).in_(execution_pks))
        .order_by(col(ConditionExecution.id))
    )
    return list(session.exec(statement))


def running_conditions(*, session: Session, execution_pk: int) -> list[ConditionExecution]:
    """The execution's conditions still being evaluated (InProgress)."""
    statement = select(ConditionExecution).where(
        ConditionExecution.execution_pk == execution_pk,
        ConditionExecution.status == IN_PROGRESS,
    )
    return list(session.exec(statement))


def rules_of(*, session: Session, condition_pks: Sequence[int]) -> list[RuleExecution]:
    """The rule executions of these conditions, in declaration order (by key)."""
    if not condition_pks:
        return []
    statement = (
        select(RuleExecution)
        .where(col(RuleExecution.condition_pk).in_(condition_pks))
        .order_by(col(RuleExecution.id))
        .execution_options(populate_existing=True)
    )
    return list(session.exec(statement))


def get_rule(*, session: Session, pk: int) -> RuleExecution | None:
    return session.get(RuleExecution, pk)


def claim_rule(*, session: Session, pk: int, worker_id: str, host: str) -> RuleExecution | None:
    """Claim an unclaimed, in-progress rule run for ``worker_id``; None if another got it
    (a conditional UPDATE, atomic on both databases, as ``engine_store.claim_action``)."""
    result = session.execute(
        update(RuleExecution)
        .where(
            col(RuleExecution.id) == pk,
            col(RuleExecution.status) == IN_PROGRESS,
            col(RuleExecution.claimed_by).is_(None),
        )
        .values(claimed_by=worker_id, host=host)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(RuleExecution, pk, populate_existing=True)


def unclaimed_rules(*, session: Session, provider: str, limit: int = 200) -> list[int]:
    """In-progress runs of a worker-run rule ``provider`` that no worker has claimed yet."""
    statement = (
        select(RuleExecution.id)
        .where(
            RuleExecution.status == IN_PROGRESS,
            col(RuleExecution.claimed_by).is_(None),
            RuleExecution.provider == provider,
        )
        .order_by(col(RuleExecution.id))
        .limit(limit)
    )
    return [pk for pk in session.exec(statement) if pk is not None]


def claimed_in_progress_rules(*, session: Session) -> list[RuleExecution]:
    statement = (
        select(RuleExecution)
        .where(RuleExecution.status == IN_PROGRESS, col(RuleExecution.claimed_by).is_not(None))
        .execution_options(populate_existing=True)
    )
    return list(session.exec(statement))


def rule_statuses(*, session: Session, pks: Sequence[int]) -> dict[int, str]:
    if not pks:
        return {}
    statement = select(RuleExecution.id, RuleExecution.status).where(col(RuleExecution.id).in_(pks))
    return {pk: status for pk, status in session.exec(statement) if pk is not None}


def next_rule_due(*, session: Session) -> datetime | None:
    """When the earliest waiting rule (a DeploymentWindow outside its window) is due."""
    statement = select(func.min(RuleExecution.due_at)).where(RuleExecution.status == IN_PROGRESS)
    return session.exec(statement).first()


def pipelines_with_due_rules(*, session: Session, now: datetime) -> list[int]:
    """Pipelines with a waiting rule whose time to be evaluated again has come."""
    statement = (
        select(RuleExecution.pipeline_id)
        .where(RuleExecution.status == IN_PROGRESS, col(RuleExecution.due_at) <= now)
        .distinct()
    )
    return list(session.exec(statement))


def list_rule_executions(
    *,
    session: Session,
    pipeline_id: int,
    execution_pk: int | None,
    before_pk: int | None,
    limit: int,
) -> list[RuleExecution]:
    """A pipeline's rule runs, newest first (optionally one execution's), ``limit`` at most,
    keyed below ``before_pk`` (the paging position)."""
    statement = select(RuleExecution).where(RuleExecution.pipeline_id == pipeline_id)
    if execution_pk is not None:
        statement = statement.where(RuleExecution.execution_pk == execution_pk)
    if before_pk is not None:
        statement = statement.where(col(RuleExecution.id) < before_pk)
    statement = statement.order_by(col(RuleExecution.id).desc()).limit(limit)
    return list(session.exec(statement))
