"""Rows to API responses, with botocore's output field names, enums and types.

Pure functions: rows in, dicts out. Timestamps come out as aware datetimes, as
boto3's parser returns them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.engine.states import ActionStatus
from storage.db import utc
from storage.models import (
    ActionExecution,
    ConditionExecution,
    Pipeline,
    PipelineExecution,
    RuleExecution,
    StageExecution,
    StageTransition,
)

ACCOUNT = "000000000000"
REGION = "local"


def metadata() -> dict[str, Any]:
    """boto3 adds ResponseMetadata to every response; so do we."""
    return {
        "RequestId": str(uuid.uuid4()),
        "HTTPStatusCode": 200,
        "HTTPHeaders": {},
        "RetryAttempts": 0,
    }


def with_metadata(body: dict[str, Any]) -> dict[str, Any]:
    body["ResponseMetadata"] = metadata()
    return body


def pipeline_arn(name: str, *, region: str | None = None) -> str:
    return f"arn:aws:codepipeline:{region or REGION}:{ACCOUNT}:{name}"


def pipeline_summary(pipeline: Pipeline) -> dict[str, Any]:
    return {
        "name": pipeline.name,
        "version": pipeline.version,
        "pipelineType": pipeline.pipeline_type,
        "executionMode": pipeline.execution_mode,
        "created": utc(pipeline.created_at),
        "updated": utc(pipeline.updated_at),
    }


def _trigger(execution: PipelineExecution) -> dict[str, Any]:
    trigger: dict[str, Any] = {"triggerType": execution.trigger_type}
    if execution.trigger_detail:
        trigger["triggerDetail"] = execution.trigger_detail
    return trigger


def execution_type(execution: PipelineExecution) -> dict[str, Any]:
    """``executionType`` and, for a ROLLBACK execution, ``rollbackMetadata`` naming its
    target (API_PipelineExecution, API_PipelineExecutionSummary)."""
    shown: dict[str, Any] = {"executionType": execution.execution_type}
    if execution.rollback_target_execution_id:
        shown["rollbackMetadata"] = {
            "rollbackTargetPipelineExecutionId": execution.rollback_target_execution_id
        }
    return shown


def execution_summary(execution: PipelineExecution) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "pipelineExecutionId": execution.execution_id,
        "status": execution.status,
        "startTime": utc(execution.started_at),
        "lastUpdateTime": utc(execution.updated_at),
        "sourceRevisions": json.loads(execution.source_revisions),
        "trigger": _trigger(execution),
        "executionMode": execution.execution_mode,
        **execution_type(execution),
    }
    if execution.status_summary:
        summary["statusSummary"] = execution.status_summary
    if execution.stop_mode is not None and execution.stop_reason:
        summary["stopTrigger"] = {"reason": execution.stop_reason}
    return summary


def execution_detail(*, execution: PipelineExecution, pipeline_name: str) -> dict[str, Any]:
    artifacts = []
    for artifact in json.loads(execution.artifact_revisions):
        item = dict(artifact)
        if "created" in item:
            item["created"] = utc(datetime.fromisoformat(item["created"]))
        artifacts.append(item)
    detail: dict[str, Any] = {
        "pipelineName": pipeline_name,
        "pipelineVersion": execution.pipeline_version,
        "pipelineExecutionId": execution.execution_id,
        "status": execution.status,
        "artifactRevisions": artifacts,
        "variables": [
            {"name": name, "resolvedValue": value}
            for name, value in json.loads(execution.variables).items()
        ],
        "trigger": _trigger(execution),
        "executionMode": execution.execution_mode,
        **execution_type(execution),
    }
    if execution.status_summary:
        detail["statusSummary"] = execution.status_summary
    return detail


def _error_details(action: ActionExecution) -> dict[str, str]:
    return {
        "code": action.error_code or "JobFailed",
        "message": (action.error_message or action.summary or action.status)[:5000],
    }


def action_state_execution(action: ActionExecution) -> dict[str, Any]:
    latest: dict[str, Any] = {
        "actionExecutionId": action.action_execution_id,
        "status": action.status,
        "lastStatusChange": utc(action.updated_at),
    }
    if action.summary:
        latest["summary"] = action.summary[:2048]
    if action.updated_by:
        latest["lastUpdatedBy"] = action.updated_by
    if action.external_execution_id:
        latest["externalExecutionId"] = action.external_execution_id
    if action.token and action.status == ActionStatus.IN_PROGRESS:
        latest["token"] = action.token
    if action.status in (ActionStatus.FAILED, ActionStatus.ABANDONED):
        latest["errorDetails"] = _error_details(action)
    return latest


def stage_state(
    *,
    stage_name: str,
    action_names: Sequence[str],
    latest_stage: StageExecution | None,
    latest_stage_execution: PipelineExecution | None,
    latest_actions: dict[str, ActionExecution],
    current_revisions: dict[str, ActionExecution],
    inbound: list[PipelineExecution],
    transition: StageTransition | None,
) -> dict[str, Any]:
    """A StageState: ``action_names`` in order, each with its latest action execution if any.

    The caller chooses the names (the latest declaration's, then any its latest execution ran
    under an earlier version's names; see ``LocalCodePipeline.get_pipeline_state``).
    """
    transition_state: dict[str, Any] = {"enabled": True}
    if transition is not None:
        transition_state = {
            "enabled": transition.enabled,
            "lastChangedAt": utc(transition.changed_at),
        }
        if transition.changed_by:
            transition_state["lastChangedBy"] = transition.changed_by
        if not transition.enabled and transition.disabled_reason:
            transition_state["disabledReason"] = transition.disabled_reason
    action_states = []
    for action_name in action_names:
        state: dict[str, Any] = {"actionName": action_name}
        latest = latest_actions.get(action_name)
        if latest is not None:
            state["latestExecution"] = action_state_execution(latest)
        revision = current_revisions.get(action_name)
        if revision is not None and revision.external_execution_id:
            state["currentRevision"] = {
                "revisionId": revision.external_execution_id,
                "revisionChangeId": revision.external_execution_id,
                "created": utc(revision.updated_at),
            }
        action_states.append(state)
    result: dict[str, Any] = {
        "stageName": stage_name,
        "inboundTransitionState": transition_state,
        "actionStates": action_states,
    }
    if inbound:
        entries = [
            {"pipelineExecutionId": e.execution_id, "status": e.status, "type": e.execution_type}
            for e in inbound
        ]
        result["inboundExecution"] = entries[0]
        result["inboundExecutions"] = entries
    if latest_stage is not None and latest_stage_execution is not None:
        result["latestExecution"] = {
            "pipelineExecutionId": latest_stage_execution.execution_id,
            "status": latest_stage.status,
            "type": latest_stage_execution.execution_type,
        }
        if latest_stage.latest_retry_trigger:
            # API_RetryStageMetadata: how many times the stage was retried, and how.
            # The counts' minimum is 1 in the model: a kind of retry that never happened is
            # left out.
            metadata: dict[str, Any] = {"latestRetryTrigger": latest_stage.latest_retry_trigger}
            if latest_stage.auto_retry_attempt:
                metadata["autoStageRetryAttempt"] = latest_stage.auto_retry_attempt
            if latest_stage.manual_retry_attempt:
                metadata["manualStageRetryAttempt"] = latest_stage.manual_retry_attempt
            result["retryStageMetadata"] = metadata
    return result


def action_execution_detail(
    *, action: ActionExecution, execution_id: str, region: str | None
) -> dict[str, Any]:
    payload = json.loads(action.input)
    execution_input: dict[str, Any] = {
        "actionTypeId": payload["actionTypeId"],
        "configuration": payload["configuration"],
        "resolvedConfiguration": payload["resolvedConfiguration"],
        "inputArtifacts": [{"name": name} for name in payload["inputArtifacts"]],
    }
    if payload.get("namespace"):
        execution_input["namespace"] = payload["namespace"]
    if payload.get("roleArn"):
        execution_input["roleArn"] = payload["roleArn"]
    if payload.get("region") or region:
        execution_input["region"] = payload.get("region") or region
    result: dict[str, Any] = {}
    if action.external_execution_id:
        result["externalExecutionId"] = action.external_execution_id
    if action.summary:
        result["externalExecutionSummary"] = action.summary[:2048]
    if action.status in (ActionStatus.FAILED, ActionStatus.ABANDONED):
        result["errorDetails"] = _error_details(action)
    detail: dict[str, Any] = {
        "pipelineExecutionId": execution_id,
        "actionExecutionId": action.action_execution_id,
        "pipelineVersion": action.pipeline_version,
        "stageName": action.stage_name,
        "actionName": action.action_name,
        "startTime": utc(action.started_at),
        "lastUpdateTime": utc(action.updated_at),
        "status": action.status,
        "input": execution_input,
        "output": {
            "outputArtifacts": [{"name": n} for n in json.loads(action.output_artifacts)],
            "executionResult": result,
            "outputVariables": json.loads(action.output_variables),
        },
    }
    if action.updated_by:
        detail["updatedBy"] = action.updated_by
    return detail


# --- stage conditions (bot.engine.conditions) -----------------------------------------------


def _rule_error(rule: RuleExecution) -> dict[str, str]:
    return {
        "code": rule.error_code or "RuleFailed",
        "message": (rule.error_message or rule.summary or rule.status)[:5000],
    }


def rule_state_execution(rule: RuleExecution) -> dict[str, Any]:
    """A rule's latest run as GetPipelineState's RuleState.latestExecution (API_RuleExecution)."""
    latest: dict[str, Any] = {
        "ruleExecutionId": rule.rule_execution_id,
        "status": rule.status,
        "lastStatusChange": utc(rule.updated_at),
    }
    if rule.summary:
        latest["summary"] = rule.summary[:2048]
    if rule.updated_by:
        latest["lastUpdatedBy"] = rule.updated_by
    if rule.external_execution_id:
        latest["externalExecutionId"] = rule.external_execution_id
    if rule.status == "Failed":
        latest["errorDetails"] = _rule_error(rule)
    return latest


def stage_condition_state(
    *, condition: ConditionExecution, rules: Sequence[RuleExecution]
) -> dict[str, Any]:
    """A stage's condition of one type in GetPipelineState (API_StageConditionState): the
    latest evaluation's status and summary, and each of its rules' latest run."""
    shown: dict[str, Any] = {"status": condition.status}
    if condition.summary:
        shown["summary"] = condition.summary[:2048]
    return {
        "latestExecution": shown,
        "conditionStates": [
            {
                "latestExecution": {**shown, "lastStatusChange": utc(condition.updated_at)},
                "ruleStates": [
                    {"ruleName": rule.rule_name, "latestExecution": rule_state_execution(rule)}
                    for rule in rules
                ],
            }
        ],
    }


def rule_execution_detail(
    *, rule: RuleExecution, execution_id: str, region: str | None
) -> dict[str, Any]:
    """One run of one rule, as ListRuleExecutions shows it (API_RuleExecutionDetail)."""
    payload = json.loads(rule.input)
    execution_input: dict[str, Any] = {
        "ruleTypeId": payload["ruleTypeId"],
        "configuration": payload["configuration"],
        "resolvedConfiguration": payload["resolvedConfiguration"],
        "inputArtifacts": [{"name": name} for name in payload["inputArtifacts"]],
    }
    if payload.get("roleArn"):
        execution_input["roleArn"] = payload["roleArn"]
    if payload.get("region") or region:
        execution_input["region"] = payload.get("region") or region
    result: dict[str, Any] = {}
    if rule.external_execution_id:
        result["externalExecutionId"] = rule.external_execution_id
    if rule.summary:
        result["externalExecutionSummary"] = rule.summary[:2048]
    if rule.status == "Failed":
        result["errorDetails"] = _rule_error(rule)
    detail: dict[str, Any] = {
        "pipelineExecutionId": execution_id,
        "ruleExecutionId": rule.rule_execution_id,
        "pipelineVersion": rule.pipeline_version,
        "stageName": rule.stage_name,
        "ruleName": rule.rule_name,
        "startTime": utc(rule.started_at),
        "lastUpdateTime": utc(rule.updated_at),
        "status": rule.status,
        "input": execution_input,
        "output": {"executionResult": result},
    }
    if rule.updated_by:
        detail["updatedBy"] = rule.updated_by
    return detail


def rule_type(
    *,
    provider: str,
    properties: Sequence[tuple[str, bool, str]],
    min_inputs: int,
    max_inputs: int,
) -> dict[str, Any]:
    """A rule type as ListRuleTypes shows it (API_RuleType); ``properties`` are (name,
    required, description)."""
    return {
        "id": {"category": "Rule", "owner": "AWS", "provider": provider, "version": "1"},
        "ruleConfigurationProperties": [
            {
                "name": name,
                "required": required,
                "key": required,
                "secret": False,
                "queryable": False,
                "description": description[:160],
                "type": "String",
            }
            for name, required, description in properties
        ],
        "inputArtifactDetails": {"minimumCount": min_inputs, "maximumCount": max_inputs},
    }
