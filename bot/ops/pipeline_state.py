"""CodePipeline's status vocabulary on the bot side, and the readers of its responses.

Every part of the bot that asks "is this execution finished?", "does an approval wait
here?" or "can this stage be retried?" asks it here, on the boto3-shaped responses of
either backend (``GetPipelineState``, ``ListPipelineExecutions``). The embedded engine
keeps its own enums and transition tables in ``bot.engine.states``; these are the same
words as AWS spells them in the API reference:

- PipelineExecutionStatus (``GetPipelineExecution``, ``ListPipelineExecutions``):
  https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_PipelineExecution.html
- StageExecutionStatus and ActionExecutionStatus (``GetPipelineState``):
  https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_StageExecution.html
  https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_ActionExecution.html
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

IN_PROGRESS: Final = frozenset({"InProgress", "Stopping"})
"""Execution statuses of an execution that has not finished."""

FINISHED: Final = frozenset({"Succeeded", "Failed", "Stopped", "Superseded", "Cancelled"})
"""Execution (and stage) statuses that never change again."""

FAILED_OR_STOPPED: Final = frozenset({"Failed", "Stopped", "Stopping"})
"""Execution statuses a "failures" subscription is told about."""

STAGE_DONE: Final = frozenset({"Succeeded", "Failed", "Stopped", "Skipped", "Cancelled"})
"""Stage execution statuses after which the stage holds nothing for that execution."""

APPROVAL_SUMMARY_MAX: Final = 512
"""ApprovalResult.summary's maximum length (the API model's constraint)."""

STOP_REASON_MAX: Final = 200
"""StopPipelineExecution's ``reason``: at most 200 characters (the API model)."""

RETRYABLE_STAGE: Final = frozenset({"Failed", "Stopped"})
"""Stage execution statuses RetryStageExecution accepts (when not superseded)."""


ACTION_FAILED: Final = frozenset({"Failed", "Abandoned"})
"""Action execution statuses of an action that did not succeed (ListActionExecutions and
GetPipelineState; Abandoned is a stop with abandon or an action the engine lost)."""

ENDED_BEFORE_ANSWER: Final = frozenset({"Superseded", "Stopped", "Stopping", "Cancelled"})
"""Execution statuses that end a waiting approval without an answer."""


EXECUTION_ID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""An execution ID as AWS writes them (the API model's pattern of ``PipelineExecutionId``)."""

EXECUTION_PREFIX_MIN: Final = 6
"""The shortest start of an execution ID that pipebot accepts for the whole ID (messages
show the first 8 characters)."""

_EXECUTION_SHAPE: Final = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"


def is_execution_id(value: str) -> bool:
    """Whether ``value`` is a whole execution ID (either case)."""
    return EXECUTION_ID.fullmatch(value.lower()) is not None


def is_execution_prefix(value: str) -> bool:
    """Whether ``value`` is the start of an execution ID, not the whole of it: hexadecimal
    digits (either case), dashes where an ID has them, at least ``EXECUTION_PREFIX_MIN``
    characters."""
    if not EXECUTION_PREFIX_MIN <= len(value) < len(_EXECUTION_SHAPE):
        return False
    for char, shape in zip(value.lower(), _EXECUTION_SHAPE, strict=False):
        if (shape == "-") != (char == "-") or (shape == "x" and char not in "0123456789abcdef"):
            return False
    return True


def is_action_failed(status: object) -> bool:
    """Whether an action execution status is one of ``ACTION_FAILED``."""
    return status in ACTION_FAILED


def is_finished(status: object) -> bool:
    """Whether an execution status is final (``FINISHED``)."""
    return status in FINISHED


def is_in_progress(status: object) -> bool:
    """Whether an execution status is one of ``IN_PROGRESS``."""
    return status in IN_PROGRESS


def is_waiting_approval(latest: Mapping[str, Any] | None) -> bool:
    """Whether an action state's ``latestExecution`` is an approval waiting for an answer:
    ``InProgress`` with a token (only manual approvals carry one, and only while they wait;
    GetPipelineState, ActionExecution.token)."""
    if not latest:
        return False
    return latest.get("status") == "InProgress" and bool(latest.get("token"))


@dataclass(frozen=True)
class PendingApproval:
    """An approval action that waits, as GetPipelineState shows it.

    ``token`` is the approval token PutApprovalResult needs: read at the moment of the
    answer, never stored or sent to Slack (a retry of the stage replaces it).
    """

    pipeline: str
    stage: str
    action: str
    execution_id: str | None
    token: str
    since: datetime | None


def pending_approvals(name: str, state: Mapping[str, Any]) -> list[PendingApproval]:
    """Every approval waiting in a GetPipelineState response, in stage and action order."""
    pending = []
    for stage in state.get("stageStates", []):
        execution_id = (stage.get("latestExecution") or {}).get("pipelineExecutionId")
        for action in stage.get("actionStates", []):
            latest = action.get("latestExecution") or {}
            if is_waiting_approval(latest):
                since = latest.get("lastStatusChange")
                pending.append(
                    PendingApproval(
                        pipeline=name,
                        stage=str(stage["stageName"]),
                        action=str(action["actionName"]),
                        execution_id=execution_id,
                        token=str(latest["token"]),
                        since=since if isinstance(since, datetime) else None,
                    )
                )
    return pending


def retryable_stages(state: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The stage states whose latest execution is Failed or Stopped, in pipeline order."""
    for stage in state.get("stageStates", []):
        latest = stage.get("latestExecution") or {}
        if latest.get("status") in RETRYABLE_STAGE and latest.get("pipelineExecutionId"):
            yield stage
