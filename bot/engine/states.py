"""Statuses of executions, stages and actions, and the transitions allowed between them.

State machines as data: each status family is an enum with the exact spelling of
CodePipeline's API model, a set of terminal statuses, and a table of allowed
transitions. ``transition`` is the one function that changes a status.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

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


EXECUTION_TERMINAL = frozenset(
    {
        ExecutionStatus.STOPPED,
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.SUPERSEDED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,
    }
)
STAGE_TERMINAL = frozenset(
    {
        StageStatus.STOPPED,
        StageStatus.SUCCEEDED,
        StageStatus.FAILED,
        StageStatus.CANCELLED,
        StageStatus.SKIPPED,
    }
)
ACTION_TERMINAL = frozenset({ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.ABANDONED})

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

STAGE_TRANSITIONS: dict[StageStatus, frozenset[StageStatus]] = {
    StageStatus.IN_PROGRESS: frozenset(
        {
            StageStatus.STOPPING,
            StageStatus.STOPPED,
            StageStatus.SUCCEEDED,
            StageStatus.FAILED,
            StageStatus.CANCELLED,
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


class InvalidTransitionError(Exception):
    """An attempt to move a status along an edge the table does not have."""


def check_transition(table: dict[S, frozenset[S]], current: S, new: S) -> S:
    """Return ``new`` if ``current -> new`` is allowed by ``table``, else raise."""
    if new not in table[current]:
        raise InvalidTransitionError(f"{type(current).__name__}: {current} -> {new} is not allowed")
    return new
