"""How executions move: the engine's rules, applied to rows inside one transaction.

``Runtime.advance`` is the single place where stage locks, supersede, queueing,
transitions, run orders, stops and failures are decided. Every caller (an API
call, a finished action, the worker's periodic scan) holds the pipeline's row
lock while it runs, so two processes never decide for the same pipeline at
once. It returns the action executions that need a runner; approvals need none.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from threading import Lock
from typing import Any

from sqlmodel import Session

from bot.engine.model import (
    DEFAULT_APPROVAL_TIMEOUT_MINUTES,
    ActionSpec,
    PipelineSpec,
    StageSpec,
    spec_from_json,
)
from bot.engine.states import (
    ACTION_TRANSITIONS,
    EXECUTION_TRANSITIONS,
    STAGE_TRANSITIONS,
    ActionStatus,
    ExecutionMode,
    ExecutionStatus,
    StageStatus,
    check_transition,
)
from bot.engine.variables import UnresolvedVariableError, resolve_list, resolve_mapping
from storage import engine_store as store
from storage.db import utc
from storage.models import (
    ActionExecution,
    Pipeline,
    PipelineExecution,
    StageExecution,
    StageTransition,
)

MAX_ADVANCE_ROUNDS = 1000


def set_execution_status(
    execution: PipelineExecution, status: ExecutionStatus, now: datetime
) -> None:
    check_transition(EXECUTION_TRANSITIONS, ExecutionStatus(execution.status), status)
    execution.status = status.value
    execution.updated_at = now


def set_stage_status(stage: StageExecution, status: StageStatus, now: datetime) -> None:
    check_transition(STAGE_TRANSITIONS, StageStatus(stage.status), status)
    stage.status = status.value
    stage.updated_at = now


def set_action_status(action: ActionExecution, status: ActionStatus, now: datetime) -> None:
    check_transition(ACTION_TRANSITIONS, ActionStatus(action.status), status)
    action.status = status.value
    action.updated_at = now


@dataclass
class AdvanceResult:
    """What an advance decided that the caller must act on after commit."""

    launches: list[int] = field(default_factory=list)
    kills: list[ActionExecution] = field(default_factory=list)


class SpecCache:
    """Parsed declarations by (pipeline id, version); versions never change once written."""

    def __init__(self) -> None:
        self._specs: dict[tuple[int, int], PipelineSpec] = {}
        self._lock = Lock()

    def get(self, *, session: Session, pipeline_id: int, version: int) -> PipelineSpec:
        key = (pipeline_id, version)
        with self._lock:
            spec = self._specs.get(key)
        if spec is not None:
            return spec
        row = store.get_pipeline_version(session=session, pipeline_id=pipeline_id, version=version)
        if row is None:
            raise LookupError(f"pipeline {pipeline_id} has no version {version}")
        spec = spec_from_json(row.declaration)
        with self._lock:
            self._specs[key] = spec
        return spec

    def forget(self, *, pipeline_id: int) -> None:
        with self._lock:
            for key in [k for k in self._specs if k[0] == pipeline_id]:
                del self._specs[key]


class Runtime:
    """The execution rules. Stateless apart from the declaration cache and paths."""

    def __init__(self, *, data_dir: Path, repositories_dir: Path, specs: SpecCache) -> None:
        self.data_dir = data_dir
        self.repositories_dir = repositories_dir
        self.specs = specs

    # --- paths -----------------------------------------------------------------------------

    def artifact_dir(self, *, execution_id: str, artifact: str) -> Path:
        return self.data_dir / "artifacts" / execution_id / artifact

    def log_path(self, *, action_execution_id: str) -> Path:
        return self.data_dir / "logs" / f"{action_execution_id}.log"

    def work_dir(self, *, action_execution_id: str) -> Path:
        return self.data_dir / "work" / action_execution_id

    # --- the advance loop --------------------------------------------------------------------

    def advance(self, *, session: Session, pipeline: Pipeline, now: datetime) -> AdvanceResult:
        """Apply every rule until nothing changes. The caller holds the pipeline's lock."""
        result = AdvanceResult()
        for _ in range(MAX_ADVANCE_ROUNDS):
            if not self._advance_once(session=session, pipeline=pipeline, now=now, result=result):
                break
        return result

    def _advance_once(
        self, *, session: Session, pipeline: Pipeline, now: datetime, result: AdvanceResult
    ) -> bool:
        assert pipeline.id is not None
        executions = store.active_executions(session=session, pipeline_id=pipeline.id)
        if not executions:
            return False
        pks = [e.id for e in executions if e.id is not None]
        stage_rows = {
            (s.execution_pk, s.stage_name): s
            for s in store.stage_executions_for(session=session, execution_pks=pks)
        }
        actions_by_execution: dict[int, list[ActionExecution]] = defaultdict(list)
        for action in store.action_executions_for_many(session=session, execution_pks=pks):
            actions_by_execution[action.execution_pk].append(action)

        changed = False
        for execution in executions:
            if execution.waiting:
                continue
            assert execution.id is not None
            spec = self.spec_of(session=session, execution=execution)
            stage = spec.stages[execution.stage_index]
            stage_row = stage_rows[(execution.id, stage.name)]
            if self._progress_stage(
                session=session,
                execution=execution,
                spec=spec,
                stage=stage,
                stage_row=stage_row,
                all_actions=actions_by_execution[execution.id],
                now=now,
                result=result,
            ):
                changed = True
        if changed:
            return True
        return self._admit_waiting(
            session=session, pipeline=pipeline, executions=executions, now=now, result=result
        )

    def spec_of(self, *, session: Session, execution: PipelineExecution) -> PipelineSpec:
        return self.specs.get(
            session=session, pipeline_id=execution.pipeline_id, version=execution.pipeline_version
        )

    def _progress_stage(
        self,
        *,
        session: Session,
        execution: PipelineExecution,
        spec: PipelineSpec,
        stage: StageSpec,
        stage_row: StageExecution,
        all_actions: list[ActionExecution],
        now: datetime,
        result: AdvanceResult,
    ) -> bool:
        latest = latest_actions(
            all_actions, stage_name=stage.name, base_attempt=stage_row.base_attempt
        )
        changed = False
        for action in latest.values():
            if (
                action.status == ActionStatus.IN_PROGRESS
                and action.category == "Approval"
                and action.approval_due_at is not None
                and utc(action.approval_due_at) <= now
            ):
                minutes = int(
                    (utc(action.approval_due_at) - utc(action.started_at)).total_seconds() // 60
                )
                set_action_status(action, ActionStatus.FAILED, now)
                action.summary = f"Approval timed out after {minutes} minutes without an answer."
                action.error_code = "TimedOut"
                action.error_message = action.summary
                changed = True
        if any(a.status == ActionStatus.IN_PROGRESS for a in latest.values()):
            return changed
        failed = [
            a for a in latest.values() if a.status in (ActionStatus.FAILED, ActionStatus.ABANDONED)
        ]
        if execution.stop_mode is not None:
            set_stage_status(stage_row, StageStatus.STOPPED, now)
            set_execution_status(execution, ExecutionStatus.STOPPED, now)
            execution.status_summary = stop_summary(execution)
            return True
        if failed:
            first = min(failed, key=lambda a: a.id or 0)
            set_stage_status(stage_row, StageStatus.FAILED, now)
            set_execution_status(execution, ExecutionStatus.FAILED, now)
            execution.status_summary = (
                f'Stage "{stage.name}" failed: action "{first.action_name}": '
                f"{first.summary or 'failed'}"
            )[:2000]
            return True
        if self.start_next_group(
            session=session,
            execution=execution,
            spec=spec,
            stage=stage,
            stage_row=stage_row,
            latest=latest,
            all_actions=all_actions,
            now=now,
            result=result,
        ):
            return True
        set_stage_status(stage_row, StageStatus.SUCCEEDED, now)
        if execution.stage_index == len(spec.stages) - 1:
            set_execution_status(execution, ExecutionStatus.SUCCEEDED, now)
            execution.status_summary = None
        else:
            execution.stage_index += 1
            execution.waiting = True
            execution.arrived_at = now
            execution.updated_at = now
        return True

    def start_next_group(
        self,
        *,
        session: Session,
        execution: PipelineExecution,
        spec: PipelineSpec,
        stage: StageSpec,
        stage_row: StageExecution,
        latest: Mapping[str, ActionExecution],
        all_actions: list[ActionExecution],
        now: datetime,
        result: AdvanceResult,
    ) -> bool:
        """Start the lowest run order that still has actions to run; False if none is left."""
        for run_order in stage.run_orders():
            todo = [
                action
                for action in stage.actions
                if action.run_order == run_order
                and not (
                    action.name in latest and latest[action.name].status == ActionStatus.SUCCEEDED
                )
            ]
            if not todo:
                continue
            namespaces = self.namespaces(execution=execution, spec=spec, all_actions=all_actions)
            for action in todo:
                self._create_action(
                    session=session,
                    execution=execution,
                    stage_row=stage_row,
                    action=action,
                    namespaces=namespaces,
                    now=now,
                    result=result,
                )
            execution.updated_at = now
            return True
        return False

    def _admit_waiting(
        self,
        *,
        session: Session,
        pipeline: Pipeline,
        executions: list[PipelineExecution],
        now: datetime,
        result: AdvanceResult,
    ) -> bool:
        assert pipeline.id is not None
        waiting: dict[int, list[PipelineExecution]] = defaultdict(list)
        for execution in executions:
            if execution.waiting and execution.status == ExecutionStatus.IN_PROGRESS:
                waiting[execution.stage_index].append(execution)
        if not waiting:
            return False
        holders = store.stage_holders(session=session, pipeline_id=pipeline.id)
        transitions = store.get_transitions(session=session, pipeline_id=pipeline.id)
        changed = False
        for index in sorted(waiting, reverse=True):
            group = sorted(waiting[index], key=lambda e: (utc(e.arrived_at), e.id or 0))
            superseding = [e for e in group if e.execution_mode == ExecutionMode.SUPERSEDED]
            if len(superseding) > 1:
                newest = max(superseding, key=lambda e: e.id or 0)
                for older in superseding:
                    if older is newest:
                        continue
                    set_execution_status(older, ExecutionStatus.SUPERSEDED, now)
                    older.status_summary = f"Superseded by execution {newest.execution_id}."
                    older.waiting = False
                    changed = True
                group = [e for e in group if e.status == ExecutionStatus.IN_PROGRESS]
            for execution in group:
                spec = self.spec_of(session=session, execution=execution)
                stage = spec.stages[index]
                transition = transitions.get(stage.name)
                if transition is not None and not transition.enabled:
                    break
                others = [pk for pk in holders.get(stage.name, []) if pk != execution.id]
                parallel = execution.execution_mode == ExecutionMode.PARALLEL
                if others and not parallel:
                    break
                self.enter_stage(
                    session=session,
                    execution=execution,
                    spec=spec,
                    stage=stage,
                    now=now,
                    result=result,
                )
                holders.setdefault(stage.name, []).append(execution.id or 0)
                changed = True
                if not parallel:
                    break
        return changed

    def enter_stage(
        self,
        *,
        session: Session,
        execution: PipelineExecution,
        spec: PipelineSpec,
        stage: StageSpec,
        now: datetime,
        result: AdvanceResult,
    ) -> None:
        assert execution.id is not None
        seq = store.max_entered_seq(session=session, pipeline_id=execution.pipeline_id) + 1
        row = store.get_stage_execution(
            session=session, execution_pk=execution.id, stage_name=stage.name
        )
        if row is None:
            row = StageExecution(
                execution_pk=execution.id,
                pipeline_id=execution.pipeline_id,
                stage_name=stage.name,
                stage_index=stage.index,
                status=StageStatus.IN_PROGRESS.value,
                attempt=1,
                base_attempt=1,
                entered_seq=seq,
                started_at=now,
                updated_at=now,
            )
            store.add_row(session=session, row=row)
        execution.waiting = False
        execution.stage_index = stage.index
        execution.updated_at = now
        all_actions = store.action_executions_for(session=session, execution_pk=execution.id)
        self.start_next_group(
            session=session,
            execution=execution,
            spec=spec,
            stage=stage,
            stage_row=row,
            latest={},
            all_actions=all_actions,
            now=now,
            result=result,
        )

    # --- actions -----------------------------------------------------------------------------

    def namespaces(
        self,
        *,
        execution: PipelineExecution,
        spec: PipelineSpec,
        all_actions: list[ActionExecution],
    ) -> dict[str, dict[str, str]]:
        """Variables visible to actions of ``execution``: codepipeline, variables, namespaces."""
        namespaces: dict[str, dict[str, str]] = {
            "codepipeline": {
                "PipelineExecutionId": execution.execution_id,
                "PipelineName": spec.name,
            },
            "variables": dict(json.loads(execution.variables)),
        }
        declared = {
            (stage.name, action.name): action.namespace
            for stage in spec.stages
            for action in stage.actions
            if action.namespace
        }
        for action in all_actions:
            namespace = declared.get((action.stage_name, action.action_name))
            if namespace and action.status == ActionStatus.SUCCEEDED:
                namespaces[namespace] = dict(json.loads(action.output_variables))
        return namespaces

    def _create_action(
        self,
        *,
        session: Session,
        execution: PipelineExecution,
        stage_row: StageExecution,
        action: ActionSpec,
        namespaces: Mapping[str, Mapping[str, str]],
        now: datetime,
        result: AdvanceResult,
    ) -> ActionExecution:
        action_execution_id = str(uuid.uuid4())
        status = ActionStatus.IN_PROGRESS
        summary: str | None = None
        try:
            resolved = resolve_mapping(action.configuration, namespaces=namespaces)
            commands = resolve_list(list(action.commands), namespaces=namespaces)
            environment = resolve_mapping(action.environment, namespaces=namespaces)
        except UnresolvedVariableError as exc:
            resolved, commands, environment = dict(action.configuration), list(action.commands), {}
            status = ActionStatus.FAILED
            summary = "Unresolved variable references: " + ", ".join(exc.references)
        payload: dict[str, Any] = {
            "actionTypeId": action.action_type_id(),
            "configuration": dict(action.configuration),
            "resolvedConfiguration": resolved,
            "commands": commands,
            "environment": environment,
            "inputArtifacts": list(action.input_artifacts),
            "outputArtifacts": [
                {"name": a.name, "files": list(a.files)} for a in action.output_artifacts
            ],
            "outputVariables": list(action.output_variables),
        }
        if action.namespace:
            payload["namespace"] = action.namespace
        if action.region:
            payload["region"] = action.region
        if action.role_arn:
            payload["roleArn"] = action.role_arn
        row = ActionExecution(
            action_execution_id=action_execution_id,
            execution_pk=execution.id or 0,
            pipeline_id=execution.pipeline_id,
            pipeline_version=execution.pipeline_version,
            stage_name=stage_row.stage_name,
            action_name=action.name,
            category=action.category,
            provider=action.provider,
            run_order=action.run_order,
            stage_attempt=stage_row.attempt,
            status=status.value,
            started_at=now,
            updated_at=now,
            summary=summary,
            error_code="ConfigurationError" if summary else None,
            error_message=summary,
            input=json.dumps(payload),
            output_artifacts="[]",
            output_variables="{}",
        )
        if action.is_approval and status == ActionStatus.IN_PROGRESS:
            token = str(uuid.uuid4())
            row.token = token
            if execution.execution_mode == ExecutionMode.PARALLEL:
                row.external_execution_id = token
            minutes = action.timeout_minutes or DEFAULT_APPROVAL_TIMEOUT_MINUTES
            row.approval_due_at = now + timedelta(minutes=minutes)
        store.add_row(session=session, row=row)
        if status == ActionStatus.IN_PROGRESS and not action.is_approval and row.id is not None:
            result.launches.append(row.id)
        return row

    # --- operations used by the API ------------------------------------------------------------

    def abandon_running(
        self,
        *,
        execution: PipelineExecution,
        actions: list[ActionExecution],
        now: datetime,
        why: str,
    ) -> list[ActionExecution]:
        """Mark the execution's running actions Abandoned; return them (their processes die)."""
        abandoned = []
        for action in actions:
            if action.execution_pk == execution.id and action.status == ActionStatus.IN_PROGRESS:
                set_action_status(action, ActionStatus.ABANDONED, now)
                action.summary = why
                abandoned.append(action)
        return abandoned


def latest_actions(
    actions: list[ActionExecution], *, stage_name: str, base_attempt: int
) -> dict[str, ActionExecution]:
    """The newest action execution of each action in the stage's current retry window."""
    latest: dict[str, ActionExecution] = {}
    for action in actions:
        if action.stage_name == stage_name and action.stage_attempt >= base_attempt:
            previous = latest.get(action.action_name)
            if previous is None or (action.id or 0) > (previous.id or 0):
                latest[action.action_name] = action
    return latest


def stop_summary(execution: PipelineExecution) -> str:
    how = (
        "abandoned"
        if execution.stop_mode == "abandon"
        else "stopped after running actions finished"
    )
    reason = f": {execution.stop_reason}" if execution.stop_reason else ""
    return f"Execution {how}{reason}"


def transition_enabled(transitions: Mapping[str, StageTransition], stage_name: str) -> bool:
    row = transitions.get(stage_name)
    return row is None or row.enabled


KillFn = Callable[[ActionExecution], None]
