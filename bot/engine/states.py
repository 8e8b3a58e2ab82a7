"""Statuses of executions, stages and actions, and the transitions allowed between them.

State machines as data: each status family is an enum with the exact spelling of
CodePipeline's API model and a table of allowed transitions; executions also have a
set of terminal statuses. ``transition`` is the one function that changes a status:
apart from the first status a row is created with, every status the engine writes goes
through it and its table.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import TypeVar, overload

from bot.engine.errors import EngineError
from storage.models import (
    ActionExecution,
    ConditionExecution,
    PipelineExecution,
    RuleExecution,
    StageExecution,
)

S = TypeVar("S", bound=StrEnum)


class ExecutionStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    SUCCEEDED = "Succeeded"
    SUPERSEDED = "Superseded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class StageStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    SKIPPED = "Skipped"


class ActionStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ABANDONED = "Abandoned"


class ExecutionMode(StrEnum):
    SUPERSEDED = "SUPERSEDED"
    QUEUED = "QUEUED"
    PARALLEL = "PARALLEL"


class TriggerType(StrEnum):
    CREATE_PIPELINE = "CreatePipeline"
    START_PIPELINE_EXECUTION = "StartPipelineExecution"
    POLL_FOR_SOURCE_CHANGES = "PollForSourceChanges"
    WEBHOOK = "Webhook"
    WEBHOOK_V2 = "WebhookV2"
    MANUAL_ROLLBACK = "ManualRollback"
    AUTOMATED_ROLLBACK = "AutomatedRollback"


class ExecutionType(StrEnum):
    """API_PipelineExecution ``executionType``."""

    STANDARD = "STANDARD"
    ROLLBACK = "ROLLBACK"


class RetryTrigger(StrEnum):
    """API_RetryStageMetadata ``latestRetryTrigger``."""

    AUTOMATED = "AutomatedStageRetry"
    MANUAL = "ManualStageRetry"


class ConditionType(StrEnum):
    """Which of a stage's conditions (API ConditionType has the first two; ON_FAILURE is
    the engine's name for ``onFailure.conditions``, shown as ``onFailureConditionState``)."""

    BEFORE_ENTRY = "BEFORE_ENTRY"
    ON_SUCCESS = "ON_SUCCESS"
    ON_FAILURE = "ON_FAILURE"


class ConditionStatus(StrEnum):
    """API ConditionExecutionStatus."""

    IN_PROGRESS = "InProgress"
    FAILED = "Failed"
    ERRORED = "Errored"
    SUCCEEDED = "Succeeded"
    CANCELLED = "Cancelled"
    ABANDONED = "Abandoned"
    OVERRIDDEN = "Overridden"


class RuleStatus(StrEnum):
    """API RuleExecutionStatus."""

    IN_PROGRESS = "InProgress"
    ABANDONED = "Abandoned"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


EXECUTION_TERMINAL = frozenset(
    {
        ExecutionStatus.STOPPED,
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.SUPERSEDED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,
    }
)

# Stopped and Failed executions come back to InProgress through RetryStageExecution.
EXECUTION_TRANSITIONS: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    ExecutionStatus.IN_PROGRESS: frozenset(
        {
            ExecutionStatus.STOPPING,
            ExecutionStatus.STOPPED,
            ExecutionStatus.SUCCEEDED,
            ExecutionStatus.SUPERSEDED,
            ExecutionStatus.FAILED,
            ExecutionStatus.CANCELLED,
        }
    ),
    ExecutionStatus.STOPPING: frozenset({ExecutionStatus.STOPPED}),
    ExecutionStatus.STOPPED: frozenset({ExecutionStatus.IN_PROGRESS}),
    ExecutionStatus.FAILED: frozenset({ExecutionStatus.IN_PROGRESS}),
    ExecutionStatus.SUCCEEDED: frozenset(),
    ExecutionStatus.SUPERSEDED: frozenset(),
    ExecutionStatus.CANCELLED: frozenset(),
}

# A stage whose beforeEntry condition has the SKIP result ends Skipped (stage-conditions).
STAGE_TRANSITIONS: dict[StageStatus, frozenset[StageStatus]] = {
    StageStatus.IN_PROGRESS: frozenset(
        {
            StageStatus.STOPPING,
            StageStatus.STOPPED,
            StageStatus.SUCCEEDED,
            StageStatus.FAILED,
            StageStatus.CANCELLED,
            StageStatus.SKIPPED,
        }
    ),
    StageStatus.STOPPING: frozenset({StageStatus.STOPPED, StageStatus.FAILED}),
    StageStatus.STOPPED: frozenset({StageStatus.IN_PROGRESS}),
    StageStatus.FAILED: frozenset({StageStatus.IN_PROGRESS}),
    StageStatus.SUCCEEDED: frozenset(),
    StageStatus.CANCELLED: frozenset(),
    StageStatus.SKIPPED: frozenset(),
}

ACTION_TRANSITIONS: dict[ActionStatus, frozenset[ActionStatus]] = {
    ActionStatus.IN_PROGRESS: frozenset(
        {ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.ABANDONED}
    ),
    ActionStatus.SUCCEEDED: frozenset(),
    ActionStatus.FAILED: frozenset(),
    ActionStatus.ABANDONED: frozenset(),
}


# A condition is evaluated (InProgress), then met (Succeeded), not met (Failed), unable to
# decide (Errored), ended with its stage (Cancelled, Abandoned) or let pass (Overridden,
# OverrideStageCondition: from a waiting or a failed condition).
CONDITION_TRANSITIONS: dict[ConditionStatus, frozenset[ConditionStatus]] = {
    ConditionStatus.IN_PROGRESS: frozenset(
        {
            ConditionStatus.FAILED,
            ConditionStatus.ERRORED,
            ConditionStatus.SUCCEEDED,
            ConditionStatus.CANCELLED,
            ConditionStatus.ABANDONED,
            ConditionStatus.OVERRIDDEN,
        }
    ),
    ConditionStatus.FAILED: frozenset({ConditionStatus.OVERRIDDEN}),
    ConditionStatus.ERRORED: frozenset({ConditionStatus.OVERRIDDEN}),
    ConditionStatus.SUCCEEDED: frozenset(),
    ConditionStatus.CANCELLED: frozenset(),
    ConditionStatus.ABANDONED: frozenset(),
    ConditionStatus.OVERRIDDEN: frozenset(),
}

RULE_TRANSITIONS: dict[RuleStatus, frozenset[RuleStatus]] = {
    RuleStatus.IN_PROGRESS: frozenset(
        {RuleStatus.SUCCEEDED, RuleStatus.FAILED, RuleStatus.ABANDONED}
    ),
    RuleStatus.SUCCEEDED: frozenset(),
    RuleStatus.FAILED: frozenset(),
    RuleStatus.ABANDONED: frozenset(),
}


class InvalidTransitionError(EngineError):
    """An attempt to move a status along an edge the table does not have."""


def _check(table: Mapping[S, frozenset[S]], current: S, new: S) -> None:
    if new not in table[current]:
        raise InvalidTransitionError(f"{type(current).__name__}: {current} -> {new} is not allowed")


@overload
def transition(row: PipelineExecution, to: ExecutionStatus, *, now: datetime) -> None: ...
@overload
def transition(row: StageExecution, to: StageStatus, *, now: datetime) -> None: ...
@overload
def transition(row: ActionExecution, to: ActionStatus, *, now: datetime) -> None: ...
@overload
def transition(row: ConditionExecution, to: ConditionStatus, *, now: datetime) -> None: ...
@overload
def transition(row: RuleExecution, to: RuleStatus, *, now: datetime) -> None: ...
def transition(
    row: PipelineExecution | StageExecution | ActionExecution | ConditionExecution | RuleExecution,
    to: ExecutionStatus | StageStatus | ActionStatus | ConditionStatus | RuleStatus,
    *,
    now: datetime,
) -> None:
    """Move ``row`` to status ``to`` at ``now``, or raise InvalidTransitionError naming both.

    The row's table decides: ``EXECUTION_TRANSITIONS`` for an execution,
    ``STAGE_TRANSITIONS`` for a stage execution, ``ACTION_TRANSITIONS`` for an action
    execution, ``CONDITION_TRANSITIONS`` and ``RULE_TRANSITIONS`` for a stage condition's
    and a rule's. Nothing is written when the transition is refused.
    """
    if isinstance(row, PipelineExecution):
        _check(EXECUTION_TRANSITIONS, ExecutionStatus(row.status), ExecutionStatus(to))
    elif isinstance(row, StageExecution):
        _check(STAGE_TRANSITIONS, StageStatus(row.status), StageStatus(to))
    elif isinstance(row, ConditionExecution):
        _check(CONDITION_TRANSITIONS, ConditionStatus(row.status), ConditionStatus(to))
    elif isinstance(row, RuleExecution):
        _check(RULE_TRANSITIONS, RuleStatus(row.status), RuleStatus(to))
    else:
        _check(ACTION_TRANSITIONS, ActionStatus(row.status), ActionStatus(to))
    row.status = to.value
    row.updated_at = now
