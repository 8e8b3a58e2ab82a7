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


# --- rollback, conditions and retries (2024: RollbackStage, stage conditions, onFailure) ------

EXECUTION_TYPE_ROLLBACK: Final = "ROLLBACK"
"""``executionType`` of an execution RollbackStage (or an automatic rollback) started
(PipelineExecutionSummary, PipelineExecution; StageExecution.type in GetPipelineState):
https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_PipelineExecutionSummary.html"""

ROLLBACK_TRIGGERS: Final = frozenset({"ManualRollback", "AutomatedRollback"})
"""Trigger types of a rollback execution (ExecutionTrigger.triggerType)."""

ROLLBACK_STAGE_DONE: Final = frozenset({"Succeeded", "Failed", "Stopped"})
"""Stage statuses from which pipebot offers a rollback: the stage has finished for the
execution it shows (a stage in progress is busy; a Skipped stage ran nothing to undo)."""

OVERRIDABLE_CONDITIONS: Final = {
    "beforeEntryConditionState": "BEFORE_ENTRY",
    "onSuccessConditionState": "ON_SUCCESS",
}
"""The GetPipelineState members whose condition OverrideStageCondition can let pass, with
the ``conditionType`` it takes (onFailure conditions have none):
https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_OverrideStageCondition.html"""

CONDITION_MEMBERS: Final = {
    "beforeEntryConditionState": "Entry condition",
    "onSuccessConditionState": "Success condition",
    "onFailureConditionState": "Failure condition",
}
"""Each condition member of a GetPipelineState stage, as pipebot names it."""

CONDITION_OPEN: Final = frozenset({"InProgress", "Failed", "Errored"})
"""Condition execution statuses of a condition that waits or did not pass: an Override can
let it pass (ConditionExecutionStatus)."""


def is_rollback(execution: Mapping[str, Any] | None) -> bool:
    """Whether an execution summary (or GetPipelineExecution's execution) is a rollback:
    ``executionType: ROLLBACK``, or a rollback trigger where the type is missing."""
    if not execution:
        return False
    if execution.get("executionType") == EXECUTION_TYPE_ROLLBACK:
        return True
    trigger = execution.get("trigger") or {}
    return trigger.get("triggerType") in ROLLBACK_TRIGGERS


def rollback_target_of(execution: Mapping[str, Any] | None) -> str | None:
    """The execution a rollback rolled back to (``rollbackMetadata``), if any."""
    metadata = (execution or {}).get("rollbackMetadata") or {}
    target = metadata.get("rollbackTargetPipelineExecutionId")
    return str(target) if target else None


def is_source_stage(state: Mapping[str, Any], stage: str) -> bool:
    """Whether ``stage`` is the pipeline's source stage: the first one (CodePipeline requires
    the first stage to hold the source actions, and only them). RollbackStage refuses it."""
    stages = list(state.get("stageStates") or [])
    return bool(stages) and stages[0].get("stageName") == stage


def rollback_candidates(state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The stage states pipebot offers a rollback of, in pipeline order: every stage but the
    source stage whose latest execution has finished (``ROLLBACK_STAGE_DONE``)."""
    stages = list(state.get("stageStates") or [])
    return [
        stage
        for stage in stages[1:]
        if (stage.get("latestExecution") or {}).get("status") in ROLLBACK_STAGE_DONE
        and stage.get("stageName")
    ]


@dataclass(frozen=True)
class RollbackTarget:
    """The execution a stage can be rolled back to, as a confirmation names it.

    ``revisions`` are ``(action, revision ID)`` of its source revisions; ``succeeded_at``
    when it last changed (its ListPipelineExecutions ``lastUpdateTime``: the summary holds
    no per-stage time)."""

    pipeline: str
    stage: str
    execution_id: str
    revisions: tuple[tuple[str, str], ...]
    succeeded_at: datetime | None


def rollback_target_from(pipeline: str, stage: str, summary: Mapping[str, Any]) -> RollbackTarget:
    """A ``RollbackTarget`` from a ListPipelineExecutions summary."""
    revisions = tuple(
        (str(r.get("actionName") or "?"), str(r["revisionId"]))
        for r in summary.get("sourceRevisions") or []
        if r.get("revisionId")
    )
    at = summary.get("lastUpdateTime") or summary.get("startTime")
    return RollbackTarget(
        pipeline=pipeline,
        stage=stage,
        execution_id=str(summary["pipelineExecutionId"]),
        revisions=revisions,
        succeeded_at=at if isinstance(at, datetime) else None,
    )


@dataclass(frozen=True)
class RuleView:
    """One rule of a condition as GetPipelineState shows it (RuleState)."""

    name: str
    status: str | None
    summary: str | None


@dataclass(frozen=True)
class ConditionView:
    """One stage condition as GetPipelineState shows it (StageConditionState).

    ``member`` is the state's member (``beforeEntryConditionState``...), ``condition_type``
    what OverrideStageCondition takes for it (None for onFailure), ``status`` the latest
    condition execution's status."""

    stage: str
    member: str
    condition_type: str | None
    execution_id: str | None
    status: str | None
    summary: str | None
    rules: tuple[RuleView, ...]

    @property
    def label(self) -> str:
        return CONDITION_MEMBERS[self.member]

    @property
    def overridable(self) -> bool:
        """Whether an Override may let it pass: an entry or success condition that waits or
        did not pass, in a stage that was not skipped (a SKIP condition cannot be overridden,
        ConditionNotOverridableException)."""
        return (
            self.condition_type is not None
            and self.status in CONDITION_OPEN
            and self.execution_id is not None
        )


def stage_conditions(stage: Mapping[str, Any]) -> list[ConditionView]:
    """Every condition of a GetPipelineState stage with its rules, in entry, success,
    failure order."""
    stage_name = str(stage.get("stageName") or "?")
    latest = stage.get("latestExecution") or {}
    execution_id = latest.get("pipelineExecutionId")
    skipped = latest.get("status") == "Skipped"
    views = []
    for member in CONDITION_MEMBERS:
        state = stage.get(member)
        if not state:
            continue
        overall = state.get("latestExecution") or {}
        rules: list[RuleView] = []
        statuses: list[str] = []
        for condition in state.get("conditionStates") or []:
            condition_latest = condition.get("latestExecution") or {}
            if condition_latest.get("status"):
                statuses.append(str(condition_latest["status"]))
            for rule in condition.get("ruleStates") or []:
                rule_latest = rule.get("latestExecution") or {}
                summary = rule_latest.get("summary") or (rule_latest.get("errorDetails") or {}).get(
                    "message"
                )
                rules.append(
                    RuleView(
                        name=str(rule.get("ruleName") or "?"),
                        status=rule_latest.get("status"),
                        summary=str(summary) if summary else None,
                    )
                )
        status = overall.get("status") or _condition_status(statuses)
        views.append(
            ConditionView(
                stage=stage_name,
                member=member,
                condition_type=None if skipped else OVERRIDABLE_CONDITIONS.get(member),
                execution_id=str(execution_id) if execution_id else None,
                status=str(status) if status else None,
                summary=str(overall["summary"]) if overall.get("summary") else None,
                rules=tuple(rules),
            )
        )
    return views


def _condition_status(statuses: list[str]) -> str | None:
    """A stage's condition status from its conditions' when the state leaves it out."""
    for status in ("Failed", "Errored", "InProgress", "Overridden", "Cancelled", "Abandoned"):
        if status in statuses:
            return status
    return "Succeeded" if statuses else None


def open_conditions(state: Mapping[str, Any]) -> list[ConditionView]:
    """Every condition an Override may let pass now, in pipeline order."""
    return [
        view
        for stage in state.get("stageStates") or []
        for view in stage_conditions(stage)
        if view.overridable
    ]
