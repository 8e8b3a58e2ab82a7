"""How executions move: the engine's rules, applied to rows inside one transaction.

``Runtime.advance`` is the single place where stage locks, supersede, queueing,
transitions, run orders, stops and failures are decided; an execution of an earlier
version than its pipeline's only winds down there (``_wind_down``). The rules of the API's
requests live beside it (``apply_update``, ``stop``, ``retry_stage``, ``answer_approval``,
``abandon_pipeline``): a rule refuses a request with a ``RefusedError`` carrying
AWS's error code, or records it on the rows, then advances (a deletion needs no
advance). Statuses change only
through ``states.transition``. Every caller (an API call, a finished action, the
worker's periodic scan) holds the pipeline's row lock while a rule runs, so two
processes never decide for the same pipeline at once. The rules return what the
caller must do after commit: the action executions that need a runner (approvals
need none) and the abandoned ones whose processes must die.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from threading import Lock
from typing import Any

from sqlmodel import Session

from bot.engine import conditions
from bot.engine.errors import RefusedError
from bot.engine.model import (
    DEFAULT_APPROVAL_TIMEOUT_MINUTES,
    ActionSpec,
    PipelineSpec,
    StageSpec,
    spec_from_json,
)
from bot.engine.providers.commands import kill_process_group
from bot.engine.states import (
    EXECUTION_TERMINAL,
    ActionStatus,
    ConditionType,
    ExecutionMode,
    ExecutionStatus,
    ExecutionType,
    RetryTrigger,
    StageStatus,
    TriggerType,
    transition,
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


@dataclass
class AdvanceResult:
    """What an advance decided that the caller must act on after commit."""

    launches: list[int] = field(default_factory=list)
    jobs: list[ActionJob] = field(default_factory=list)
    kills: list[ActionExecution] = field(default_factory=list)
    # Commands rule runs of stage conditions for the worker (bot.engine.conditions).
    rule_launches: list[int] = field(default_factory=list)

    def merge(self, other: AdvanceResult) -> None:
        self.launches += other.launches
        self.jobs += other.jobs
        self.kills += other.kills
        self.rule_launches += other.rule_launches


@dataclass(frozen=True)
class ActionJob:
    """Everything a runner needs to run one claimed action, read inside a transaction."""

    pk: int
    action_execution_id: str
    execution_id: str
    pipeline_id: int
    pipeline_name: str
    stage_name: str
    action_name: str
    category: str
    provider: str
    payload: dict[str, Any]
    source_override: str | None
    # The branch a trigger's pushed commit is on: the source's BranchName variable.
    source_branch: str | None = None
    # Artifact name -> the revision (commit ID) of the source action that produced it; artifacts
    # made by other actions have none, as in CodePipeline's job data.
    input_revisions: dict[str, str] = field(default_factory=dict)
    # A ROLLBACK execution's target: input artifacts this execution did not make itself are
    # the target's (stage-rollback.html: the rollback uses the target's artifacts).
    artifacts_from: str | None = None


def action_job(
    *, row: ActionExecution, execution: PipelineExecution, pipeline_name: str
) -> ActionJob:
    assert row.id is not None
    # An action's override: a commit ID, or {"revision", "branch"} for a trigger's push.
    override = json.loads(execution.source_overrides).get(row.action_name)
    if isinstance(override, dict):
        revision, branch = override.get("revision"), override.get("branch")
    else:
        revision, branch = override, None
    revisions = {a["name"]: a["revisionId"] for a in json.loads(execution.artifact_revisions)}
    return ActionJob(
        pk=row.id,
        action_execution_id=row.action_execution_id,
        execution_id=execution.execution_id,
        pipeline_id=row.pipeline_id,
        pipeline_name=pipeline_name,
        stage_name=row.stage_name,
        action_name=row.action_name,
        category=row.category,
        provider=row.provider,
        payload=json.loads(row.input),
        source_override=revision,
        source_branch=branch,
        input_revisions=revisions,
        artifacts_from=execution.rollback_target_execution_id,
    )


ACTIVE = (ExecutionStatus.IN_PROGRESS.value, ExecutionStatus.STOPPING.value)


@dataclass
class _PipelineState:
    """One pipeline's live executions, read once per advance and kept current in memory."""

    executions: list[PipelineExecution]
    stage_rows: dict[tuple[int, str], StageExecution]
    actions: defaultdict[int, list[ActionExecution]]
    transitions: dict[str, StageTransition]
    # The pipeline's latest version: an execution of an earlier one only winds down.
    version: int
    next_seq: int | None = None

    def holders(self) -> dict[str, set[int]]:
        """Stage name -> executions holding its lock (a stage execution in progress)."""
        holders: dict[str, set[int]] = {}
        for (execution_pk, stage_name), row in self.stage_rows.items():
            if row.status in ACTIVE:
                holders.setdefault(stage_name, set()).add(execution_pk)
        return holders


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
    """The execution rules. Stateless apart from the declaration cache, paths and claimant."""

    def __init__(
        self,
        *,
        data_dir: Path,
        repositories_dir: Path,
        specs: SpecCache,
        region: str | None = None,
        codebuild_projects: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        # The local CodeBuild project registry (PIPEBOT_CODEBUILD_PROJECTS); None:
        # <data dir>/codebuild-projects.yml (bot.engine.codebuild_projects.registry_path).
        self.codebuild_projects = codebuild_projects
        self.repositories_dir = repositories_dir
        self.specs = specs
        # The engine's AWS Region (None: none configured, ARNs say "local"); Commands actions
        # see it as AWS_REGION.
        self.region = region
        # (worker id, host) of this process's worker, which claims the actions it creates;
        # None when no worker runs here (another process's worker claims them).
        self.claimant: tuple[str, str] | None = None

    # --- paths -----------------------------------------------------------------------------

    def artifact_dir(self, *, execution_id: str, artifact: str) -> Path:
        return self.data_dir / "artifacts" / execution_id / artifact

    def input_artifact_dir(self, *, job: ActionJob, artifact: str) -> Path:
        """Where ``job`` reads its input ``artifact``: its own execution's, or for a ROLLBACK
        execution whose stage did not make it, its target's."""
        own = self.artifact_dir(execution_id=job.execution_id, artifact=artifact)
        if job.artifacts_from and not own.exists():
            return self.artifact_dir(execution_id=job.artifacts_from, artifact=artifact)
        return own

    def log_path(self, *, action_execution_id: str) -> Path:
        return self.data_dir / "logs" / f"{action_execution_id}.log"

    def work_dir(self, *, action_execution_id: str) -> Path:
        return self.data_dir / "work" / action_execution_id

    def _pid_file(self, *, action_execution_id: str) -> Path:
        return self.data_dir / "work" / f"{action_execution_id}.pid"

    def record_process(self, *, action_execution_id: str, pid: int) -> None:
        """Note a running action's process for other processes on this host (abandon, recovery).

        A file beside the work directory, not a row: no transaction on the hot path.
        """
        self._pid_file(action_execution_id=action_execution_id).write_text(str(pid))

    def forget_process(self, *, action_execution_id: str) -> None:
        self._pid_file(action_execution_id=action_execution_id).unlink(missing_ok=True)

    def kill_recorded_process(self, *, action_execution_id: str) -> None:
        """Kill the process group an action of this host recorded, if it still runs."""
        path = self._pid_file(action_execution_id=action_execution_id)
        try:
            pid = int(path.read_text())
        except (FileNotFoundError, ValueError):
            return
        if pid > 1:
            kill_process_group(pid)
        path.unlink(missing_ok=True)

    # --- the advance loop --------------------------------------------------------------------

    def advance(self, *, session: Session, pipeline: Pipeline, now: datetime) -> AdvanceResult:
        """Apply every rule until nothing changes. The caller holds the pipeline's lock.

        The pipeline's live state is read once (a handful of queries); the rounds then run
        in memory, writing only what changes.
        """
        result = AdvanceResult()
        assert pipeline.id is not None
        executions = store.active_executions(session=session, pipeline_id=pipeline.id)
        if not executions:
            return result
        pks = [e.id for e in executions if e.id is not None]
        state = _PipelineState(
            executions=executions,
            stage_rows={
                (s.execution_pk, s.stage_name): s
                for s in store.stage_executions_for(session=session, execution_pks=pks)
            },
            actions=defaultdict(list),
            transitions=store.get_transitions(session=session, pipeline_id=pipeline.id),
            version=pipeline.version,
        )
        for action in store.action_executions_for_many(session=session, execution_pks=pks):
            state.actions[action.execution_pk].append(action)
        for _ in range(MAX_ADVANCE_ROUNDS):
            if not self._advance_once(session=session, state=state, now=now, result=result):
                break
        return result

    def _advance_once(
        self, *, session: Session, state: _PipelineState, now: datetime, result: AdvanceResult
    ) -> bool:
        changed = False
        for execution in state.executions:
            if execution.status not in ACTIVE:
                continue
            if execution.pipeline_version < state.version:
                if self._wind_down(session=session, state=state, execution=execution, now=now):
                    changed = True
                continue
            if execution.waiting:
                continue
            assert execution.id is not None
            spec = self.spec_of(session=session, execution=execution)
            stage = spec.stages[execution.stage_index]
            if self._progress_stage(
                session=session,
                state=state,
                execution=execution,
                spec=spec,
                stage=stage,
                stage_row=state.stage_rows[(execution.id, stage.name)],
                all_actions=state.actions[execution.id],
                now=now,
                result=result,
            ):
                changed = True
        if changed:
            return True
        return self._admit_waiting(session=session, state=state, now=now, result=result)

    def spec_of(self, *, session: Session, execution: PipelineExecution) -> PipelineSpec:
        """The declaration ``execution`` runs: the version it started on, never a later one."""
        return self.specs.get(
            session=session, pipeline_id=execution.pipeline_id, version=execution.pipeline_version
        )

    def _wind_down(
        self,
        *,
        session: Session,
        state: _PipelineState,
        execution: PipelineExecution,
        now: datetime,
    ) -> bool:
        """Finish an execution of an earlier version than the pipeline's: it never goes on.

        "When you update a pipeline, CodePipeline gracefully completes all the running actions
        and then fails the stages and pipeline executions where the running actions were
        completed" (https://docs.aws.amazon.com/codepipeline/latest/userguide/pipelines-edit.html).
        Its running actions finish; then its stage and itself fail (a stop asked for before
        ends it Stopped, as asked). No further run order, stage or approval starts. One waiting
        in front of a stage has nothing running: it is cancelled, like the executions that
        ``apply_update`` cancels in the update's own transaction.
        """
        assert execution.id is not None
        if execution.waiting:
            transition(execution, ExecutionStatus.CANCELLED, now=now)
            execution.waiting = False
            execution.status_summary = cancelled_summary(execution, version=state.version)
            return True
        spec = self.spec_of(session=session, execution=execution)
        stage = spec.stages[execution.stage_index]
        stage_row = state.stage_rows[(execution.id, stage.name)]
        if stage_row.condition_phase is not None:  # a condition under evaluation never decides
            conditions.end_running(
                session=session,
                execution=execution,
                stage_row=stage_row,
                why=f"Abandoned: the pipeline was updated to version {state.version}.",
                now=now,
            )
        latest = latest_actions(
            state.actions[execution.id], stage_name=stage.name, base_attempt=stage_row.base_attempt
        )
        if any(a.status == ActionStatus.IN_PROGRESS for a in latest.values()):
            return False
        if execution.stop_mode is not None:
            transition(stage_row, StageStatus.STOPPED, now=now)
            transition(execution, ExecutionStatus.STOPPED, now=now)
            execution.status_summary = stop_summary(execution)
            return True
        transition(stage_row, StageStatus.FAILED, now=now)
        transition(execution, ExecutionStatus.FAILED, now=now)
        execution.status_summary = (
            f'Stage "{stage.name}" failed: the pipeline was updated to version {state.version} '
            f"while this execution of version {execution.pipeline_version} ran; its running "
            "actions completed and the execution does not go on. Start the pipeline to run "
            f"version {state.version}."
        )
        return True

    def _progress_stage(
        self,
        *,
        session: Session,
        state: _PipelineState,
        execution: PipelineExecution,
        spec: PipelineSpec,
        stage: StageSpec,
        stage_row: StageExecution,
        all_actions: list[ActionExecution],
        now: datetime,
        result: AdvanceResult,
    ) -> bool:
        if stage_row.condition_phase is not None:  # a stage condition is being evaluated
            decided = conditions.progress(
                runtime=self,
                session=session,
                executions=state.executions,
                execution=execution,
                spec=spec,
                stage=stage,
                stage_row=stage_row,
                all_actions=all_actions,
                now=now,
                result=result,
            )
            if decided is not None:
                return decided
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
                waited = utc(action.approval_due_at) - utc(action.started_at)
                minutes = int(waited.total_seconds() // 60)
                transition(action, ActionStatus.FAILED, now=now)
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
            transition(stage_row, StageStatus.STOPPED, now=now)
            transition(execution, ExecutionStatus.STOPPED, now=now)
            execution.status_summary = stop_summary(execution)
            return True
        if failed:
            if self._begin_condition(
                ConditionType.ON_FAILURE,
                session,
                execution,
                spec,
                stage,
                stage_row,
                all_actions,
                now,
                result,
            ):
                return True
            first = min(failed, key=lambda a: a.id or 0)
            transition(stage_row, StageStatus.FAILED, now=now)
            self._on_stage_failure(
                session=session,
                state=state,
                execution=execution,
                spec=spec,
                stage=stage,
                stage_row=stage_row,
                why=(
                    f'Stage "{stage.name}" failed: action "{first.action_name}": '
                    f"{first.summary or 'failed'}"
                )[:2000],
                now=now,
                result=result,
            )
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
        if self._begin_condition(
            ConditionType.ON_SUCCESS,
            session,
            execution,
            spec,
            stage,
            stage_row,
            all_actions,
            now,
            result,
        ):
            return True
        transition(stage_row, StageStatus.SUCCEEDED, now=now)
        if is_last_stage(execution, spec=spec, stage=stage):
            transition(execution, ExecutionStatus.SUCCEEDED, now=now)
            execution.status_summary = None
        else:
            execution.stage_index += 1
            execution.waiting = True
            execution.arrived_at = now
            execution.updated_at = now
        return True

    def _begin_condition(
        self,
        kind: ConditionType,
        session: Session,
        execution: PipelineExecution,
        spec: PipelineSpec,
        stage: StageSpec,
        stage_row: StageExecution,
        all_actions: list[ActionExecution],
        now: datetime,
        result: AdvanceResult,
    ) -> bool:
        """Start the stage's ``kind`` condition (``conditions.begin``); False if it has none
        or it was already evaluated in this attempt."""
        return conditions.begin(
            runtime=self,
            session=session,
            execution=execution,
            spec=spec,
            stage=stage,
            stage_row=stage_row,
            kind=kind,
            all_actions=all_actions,
            now=now,
            result=result,
        )

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
        """Start the lowest run order that still has actions to run; False if none is left.

        New action executions are appended to ``all_actions``.
        """
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
            namespaces = self.namespaces(
                session=session, execution=execution, spec=spec, all_actions=all_actions
            )
            rows = [
                self._create_action(
                    execution=execution,
                    stage_row=stage_row,
                    action=action,
                    namespaces=namespaces,
                    now=now,
                )
                for action in todo
            ]
            # One flush for the whole group: the rows get their keys together.
            session.add_all(rows)
            session.flush()
            all_actions.extend(rows)
            for row, action in zip(rows, todo, strict=True):
                self._launch(row=row, action=action, spec=spec, execution=execution, result=result)
            execution.updated_at = now
            return True
        return False

    def _on_stage_failure(
        self,
        *,
        session: Session,
        state: _PipelineState,
        execution: PipelineExecution,
        spec: PipelineSpec,
        stage: StageSpec,
        stage_row: StageExecution,
        why: str,
        now: datetime,
        result: AdvanceResult,
    ) -> None:
        """What a failed stage (``stage_row`` already Failed) leads to, by its ``onFailure``.

        - ``RETRY``: the stage is retried once automatically, in ``retryConfiguration``'s
          mode, and the execution goes on ("automatic retry ... a failed stage is retried one
          time", https://docs.aws.amazon.com/codepipeline/latest/userguide/stage-retry.html);
          a stage that already had its automatic retry fails as usual (a manual retry stays
          possible). ``retryStageMetadata`` counts it as ``AutomatedStageRetry``.
        - otherwise the execution fails; with ``ROLLBACK`` a new ROLLBACK execution (trigger
          ``AutomatedRollback``) runs the stage again with the most recent execution that
          succeeded in it, when there is one
          (https://docs.aws.amazon.com/codepipeline/latest/userguide/stage-rollback-auto.html).
          A rollback execution that fails is not itself rolled back (its target succeeded in
          the stage; rolling back to it again would loop).
        """
        if stage.on_failure_result == "RETRY" and stage_row.auto_retry_attempt == 0:
            stage_row.auto_retry_attempt += 1
            stage_row.latest_retry_trigger = RetryTrigger.AUTOMATED.value
            self._restart_stage(
                session=session,
                execution=execution,
                spec=spec,
                stage=stage,
                stage_row=stage_row,
                retry_mode=stage.retry_mode,
                all_actions=state.actions[execution.id or 0],
                now=now,
                result=result,
            )
            return
        transition(execution, ExecutionStatus.FAILED, now=now)
        execution.status_summary = why
        if (
            stage.on_failure_result == "ROLLBACK"
            and execution.execution_type == ExecutionType.STANDARD
        ):
            rollback = self.start_automatic_rollback(
                session=session,
                pipeline_id=execution.pipeline_id,
                execution=execution,
                stage=stage,
                now=now,
            )
            if rollback is not None:
                state.executions.append(rollback)
            else:
                execution.status_summary = (
                    f"{why} Not rolled back: no earlier execution of this pipeline version "
                    f'succeeded in stage "{stage.name}".'
                )[:2000]

    def start_automatic_rollback(
        self,
        *,
        session: Session,
        pipeline_id: int,
        execution: PipelineExecution,
        stage: StageSpec,
        now: datetime,
    ) -> PipelineExecution | None:
        """Start the automatic rollback of ``stage`` after ``execution`` failed in it (by its
        ``onFailure`` result, or a failure condition's ROLLBACK result): a ROLLBACK execution
        targeting the most recent STANDARD execution of the same pipeline version that
        succeeded in the stage. Returns it, or None when no execution succeeded there."""
        target = store.latest_success_in_stage(
            session=session,
            pipeline_id=pipeline_id,
            stage_name=stage.name,
            version=execution.pipeline_version,
        )
        if target is None:
            return None
        return self.new_rollback_execution(
            session=session,
            target=target,
            stage=stage,
            trigger=TriggerType.AUTOMATED_ROLLBACK,
            trigger_detail=execution.execution_id,
            now=now,
        )

    def new_rollback_execution(
        self,
        *,
        session: Session,
        target: PipelineExecution,
        stage: StageSpec,
        trigger: TriggerType,
        trigger_detail: str | None,
        now: datetime,
    ) -> PipelineExecution:
        """A ROLLBACK execution of ``stage`` to ``target``: it waits in front of the stage
        like any execution arriving there, then runs that stage alone with the target's
        source revisions, variables and artifacts ("CodePipeline will use the variables and
        artifacts from the execution to which it is rolling back",
        https://docs.aws.amazon.com/codepipeline/latest/userguide/stage-rollback.html), and
        ends with the stage."""
        execution = PipelineExecution(
            execution_id=str(uuid.uuid4()),
            pipeline_id=target.pipeline_id,
            pipeline_version=target.pipeline_version,
            status=ExecutionStatus.IN_PROGRESS.value,
            trigger_type=trigger.value,
            trigger_detail=trigger_detail,
            execution_mode=target.execution_mode,
            started_at=now,
            updated_at=now,
            variables=target.variables,
            source_overrides="{}",
            source_revisions=target.source_revisions,
            artifact_revisions=target.artifact_revisions,
            stage_index=stage.index,
            waiting=True,
            arrived_at=now,
            execution_type=ExecutionType.ROLLBACK.value,
            rollback_target_execution_id=target.execution_id,
            rollback_stage=stage.name,
        )
        store.add_row(session=session, row=execution)
        return execution

    def _restart_stage(
        self,
        *,
        session: Session,
        execution: PipelineExecution,
        spec: PipelineSpec,
        stage: StageSpec,
        stage_row: StageExecution,
        retry_mode: str,
        all_actions: list[ActionExecution],
        now: datetime,
        result: AdvanceResult,
    ) -> None:
        """Run a Failed or Stopped stage again (a manual or an automatic retry):
        ``FAILED_ACTIONS`` re-runs the actions that did not succeed, ``ALL_ACTIONS`` all."""
        stage_row.attempt += 1
        if retry_mode == "ALL_ACTIONS":
            stage_row.base_attempt = stage_row.attempt
        transition(stage_row, StageStatus.IN_PROGRESS, now=now)
        if execution.status != ExecutionStatus.IN_PROGRESS:
            transition(execution, ExecutionStatus.IN_PROGRESS, now=now)
        execution.stop_mode = None
        execution.stop_reason = None
        execution.status_summary = None
        execution.waiting = False
        execution.stage_index = stage.index
        execution.updated_at = now
        self.start_next_group(
            session=session,
            execution=execution,
            spec=spec,
            stage=stage,
            stage_row=stage_row,
            latest=latest_actions(
                all_actions, stage_name=stage.name, base_attempt=stage_row.base_attempt
            ),
            all_actions=all_actions,
            now=now,
            result=result,
        )

    def _admit_waiting(
        self,
        *,
        session: Session,
        state: _PipelineState,
        now: datetime,
        result: AdvanceResult,
    ) -> bool:
        waiting: dict[int, list[PipelineExecution]] = defaultdict(list)
        for execution in state.executions:
            if execution.waiting and execution.status == ExecutionStatus.IN_PROGRESS:
                waiting[execution.stage_index].append(execution)
        if not waiting:
            return False
        holders = state.holders()
        changed = False
        for index in sorted(waiting, reverse=True):
            group = sorted(waiting[index], key=lambda e: (utc(e.arrived_at), e.id or 0))
            superseding = [e for e in group if e.execution_mode == ExecutionMode.SUPERSEDED]
            if len(superseding) > 1:
                newest = max(superseding, key=lambda e: e.id or 0)
                for older in superseding:
                    if older is newest:
                        continue
                    transition(older, ExecutionStatus.SUPERSEDED, now=now)
                    older.status_summary = f"Superseded by execution {newest.execution_id}."
                    older.waiting = False
                    changed = True
                group = [e for e in group if e.status == ExecutionStatus.IN_PROGRESS]
            for execution in group:
                spec = self.spec_of(session=session, execution=execution)
                stage = spec.stages[index]
                if not transition_enabled(state.transitions, stage.name):
                    break
                others = holders.get(stage.name, set()) - {execution.id or 0}
                parallel = execution.execution_mode == ExecutionMode.PARALLEL
                if others and not parallel:
                    break
                self._enter_stage(
                    session=session,
                    state=state,
                    execution=execution,
                    spec=spec,
                    stage=stage,
                    now=now,
                    result=result,
                )
                holders.setdefault(stage.name, set()).add(execution.id or 0)
                changed = True
                if not parallel:
                    break
        return changed

    def _enter_stage(
        self,
        *,
        session: Session,
        state: _PipelineState,
        execution: PipelineExecution,
        spec: PipelineSpec,
        stage: StageSpec,
        now: datetime,
        result: AdvanceResult,
    ) -> None:
        assert execution.id is not None
        if state.next_seq is None:
            state.next_seq = store.max_entered_seq(
                session=session, pipeline_id=execution.pipeline_id
            )
        state.next_seq += 1
        row = state.stage_rows.get((execution.id, stage.name))
        if row is None:
            row = StageExecution(
                execution_pk=execution.id,
                pipeline_id=execution.pipeline_id,
                stage_name=stage.name,
                stage_index=stage.index,
                status=StageStatus.IN_PROGRESS.value,
                attempt=1,
                base_attempt=1,
                entered_seq=state.next_seq,
                started_at=now,
                updated_at=now,
            )
            session.add(row)
            state.stage_rows[(execution.id, stage.name)] = row
        execution.waiting = False
        execution.stage_index = stage.index
        execution.updated_at = now
        # An entry condition is evaluated once the execution holds the stage, before any action.
        if self._begin_condition(
            ConditionType.BEFORE_ENTRY,
            session,
            execution,
            spec,
            stage,
            row,
            state.actions[execution.id],
            now,
            result,
        ):
            return
        self.start_next_group(
            session=session,
            execution=execution,
            spec=spec,
            stage=stage,
            stage_row=row,
            latest={},
            all_actions=state.actions[execution.id],
            now=now,
            result=result,
        )

    # --- actions -----------------------------------------------------------------------------

    def namespaces(
        self,
        *,
        session: Session,
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
        for action in [*self._target_actions(session, execution), *all_actions]:
            namespace = declared.get((action.stage_name, action.action_name))
            if namespace and action.status == ActionStatus.SUCCEEDED:
                namespaces[namespace] = dict(json.loads(action.output_variables))
        return namespaces

    def _target_actions(
        self, session: Session, execution: PipelineExecution
    ) -> list[ActionExecution]:
        """A ROLLBACK execution's target's action executions (their output variables are
        the rollback's namespaces); none for a STANDARD execution."""
        target_id = execution.rollback_target_execution_id
        if not target_id:
            return []
        target = store.get_execution(
            session=session, pipeline_id=execution.pipeline_id, execution_id=target_id
        )
        if target is None or target.id is None:
            return []
        return store.action_executions_for(session=session, execution_pk=target.id)

    def _create_action(
        self,
        *,
        execution: PipelineExecution,
        stage_row: StageExecution,
        action: ActionSpec,
        namespaces: Mapping[str, Mapping[str, str]],
        now: datetime,
    ) -> ActionExecution:
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
            action_execution_id=str(uuid.uuid4()),
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
        elif status == ActionStatus.IN_PROGRESS and self.claimant is not None:
            # Claimed in the transaction that creates it: the worker of this process runs it
            # straight after commit, without a claim transaction of its own.
            row.claimed_by, row.host = self.claimant
        return row

    def _launch(
        self,
        *,
        row: ActionExecution,
        action: ActionSpec,
        spec: PipelineSpec,
        execution: PipelineExecution,
        result: AdvanceResult,
    ) -> None:
        if row.status != ActionStatus.IN_PROGRESS or action.is_approval or row.id is None:
            return
        if row.claimed_by is None:
            result.launches.append(row.id)
            return
        result.jobs.append(action_job(row=row, execution=execution, pipeline_name=spec.name))

    # --- the rules of the API's requests ------------------------------------------------------

    def apply_update(self, *, session: Session, pipeline: Pipeline, now: datetime) -> AdvanceResult:
        """UpdatePipeline's rule for the executions of earlier versions, in the update's
        transaction (``pipeline.version`` is already the new one).

        AWS: running actions complete, then their stages and executions fail
        (https://docs.aws.amazon.com/codepipeline/latest/userguide/pipelines-edit.html; the
        advance does that part, ``_wind_down``). An execution with nothing running is
        ``Cancelled``, the status the API reference gives an execution (and a stage) whose
        "pipeline's definition was updated before the pipeline execution could be completed"
        (https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_PipelineExecution.html,
        API_StageExecution.html): one waiting in front of a stage, or one whose only running
        actions are manual approvals. A waiting approval is work nobody is doing: its answer
        could no longer let the execution go on, so it is ``Abandoned`` now rather than left
        to hold its stage until its timeout (7 days by default).
        """
        assert pipeline.id is not None
        for execution in store.active_executions(session=session, pipeline_id=pipeline.id):
            if execution.pipeline_version >= pipeline.version or execution.waiting:
                continue  # the advance below cancels a waiting one (_wind_down)
            assert execution.id is not None
            spec = self.spec_of(session=session, execution=execution)
            stage_name = spec.stages[execution.stage_index].name
            stage_row = store.get_stage_execution(
                session=session, execution_pk=execution.id, stage_name=stage_name
            )
            assert stage_row is not None
            latest = latest_actions(
                store.action_executions_for(
                    session=session, execution_pk=execution.id, stage_name=stage_name
                ),
                stage_name=stage_name,
                base_attempt=stage_row.base_attempt,
            )
            running = [a for a in latest.values() if a.status == ActionStatus.IN_PROGRESS]
            for action in running:
                if action.category == "Approval":
                    transition(action, ActionStatus.ABANDONED, now=now)
                    action.summary = (
                        f"Abandoned: the pipeline was updated to version {pipeline.version} "
                        "before this approval was answered."
                    )
                    action.error_code = "Abandoned"
                    action.error_message = action.summary
            if execution.stop_mode is not None or any(
                a.status == ActionStatus.IN_PROGRESS for a in running
            ):
                continue  # a stop ends it Stopped; running work completes first (_wind_down)
            conditions.end_running(
                session=session,
                execution=execution,
                stage_row=stage_row,
                why=f"Abandoned: the pipeline was updated to version {pipeline.version}.",
                now=now,
            )
            transition(stage_row, StageStatus.CANCELLED, now=now)
            transition(execution, ExecutionStatus.CANCELLED, now=now)
            execution.status_summary = cancelled_summary(execution, version=pipeline.version)
        return self.advance(session=session, pipeline=pipeline, now=now)

    def stop(
        self,
        *,
        session: Session,
        pipeline: Pipeline,
        execution: PipelineExecution,
        abandon: bool,
        reason: str | None,
        now: datetime,
    ) -> AdvanceResult:
        """Stop and wait (running actions finish), or stop and abandon them (rule 8).

        A finished execution cannot be stopped, nor a stopping one stopped again without
        abandon. An execution waiting in front of a stage stops at once.
        """
        assert execution.id is not None
        status = ExecutionStatus(execution.status)
        if status in EXECUTION_TERMINAL:
            raise RefusedError(
                "PipelineExecutionNotStoppableException",
                f"Pipeline execution '{execution.execution_id}' is {status.value} and "
                "cannot be stopped",
            )
        if status == ExecutionStatus.STOPPING and not abandon:
            raise RefusedError(
                "DuplicatedStopRequestException",
                f"Pipeline execution '{execution.execution_id}' is already stopping; "
                "stop it with abandon to abandon its running actions",
            )
        execution.stop_mode = "abandon" if abandon else "wait"
        execution.stop_reason = reason
        execution.updated_at = now
        kills: list[ActionExecution] = []
        if execution.waiting:
            transition(execution, ExecutionStatus.STOPPED, now=now)
            execution.waiting = False
            execution.status_summary = "Stopped while waiting to enter a stage" + (
                f": {reason}" if reason else ""
            )
        else:
            spec = self.spec_of(session=session, execution=execution)
            stage_name = spec.stages[execution.stage_index].name
            stage_row = store.get_stage_execution(
                session=session, execution_pk=execution.id, stage_name=stage_name
            )
            assert stage_row is not None
            if abandon:
                actions = store.action_executions_for(
                    session=session, execution_pk=execution.id, stage_name=stage_name
                )
                kills = self._abandon_running(
                    execution=execution,
                    actions=actions,
                    now=now,
                    why="Abandoned: the execution was stopped" + (f" ({reason})" if reason else ""),
                )
                for action in kills:
                    action.error_code = "Abandoned"
                    action.error_message = action.summary
                if stage_row.status == StageStatus.IN_PROGRESS:
                    transition(stage_row, StageStatus.STOPPING, now=now)
                if status == ExecutionStatus.IN_PROGRESS:
                    transition(execution, ExecutionStatus.STOPPING, now=now)
            else:
                transition(stage_row, StageStatus.STOPPING, now=now)
                transition(execution, ExecutionStatus.STOPPING, now=now)
        result = self.advance(session=session, pipeline=pipeline, now=now)
        result.kills += kills
        return result

    def retry_stage(
        self,
        *,
        session: Session,
        pipeline: Pipeline,
        execution: PipelineExecution,
        spec: PipelineSpec,
        stage: StageSpec,
        retry_mode: str,
        now: datetime,
    ) -> AdvanceResult:
        """Continue ``execution`` at its Failed or Stopped ``stage`` (rule 9).

        Only the execution that entered the stage last may retry it, never a superseded one,
        nor one of an earlier version than the pipeline's: "you may not be able to retry
        actions [when] the overall pipeline structure changed after an action failed"
        (https://docs.aws.amazon.com/codepipeline/latest/userguide/actions-retry.html), which
        the API answers with StageNotRetryableException ("The pipeline structure or stage
        state might have changed while actions awaited retry").
        ``retry_mode`` is ``FAILED_ACTIONS`` (re-run failed and abandoned actions) or
        ``ALL_ACTIONS`` (re-run the whole stage); ``spec`` is the execution's declaration.
        """
        assert pipeline.id is not None and execution.id is not None
        if execution.status == ExecutionStatus.SUPERSEDED:
            raise RefusedError(
                "StageNotRetryableException",
                f"Execution '{execution.execution_id}' was superseded; superseded executions "
                "cannot be retried",
            )
        if execution.pipeline_version != pipeline.version:
            raise RefusedError(
                "StageNotRetryableException",
                f"Execution '{execution.execution_id}' ran version {execution.pipeline_version} "
                f"of pipeline '{pipeline.name}', which was updated to version "
                f"{pipeline.version} since: the pipeline structure changed, so its stages "
                "cannot be retried. Start the pipeline to run the new version.",
            )
        stage_row = store.get_stage_execution(
            session=session, execution_pk=execution.id, stage_name=stage.name
        )
        retryable = (StageStatus.FAILED.value, StageStatus.STOPPED.value)
        if (
            stage_row is None
            or stage_row.status not in retryable
            or execution.status not in (ExecutionStatus.FAILED, ExecutionStatus.STOPPED)
        ):
            state = "never entered" if stage_row is None else stage_row.status
            raise RefusedError(
                "StageNotRetryableException",
                f"Stage '{stage.name}' of execution '{execution.execution_id}' is {state}; "
                "only a Failed or Stopped stage can be retried",
            )
        latest = store.latest_stage_executions(session=session, pipeline_id=pipeline.id)
        newest = latest.get(stage.name)
        if newest is not None and newest.execution_pk != execution.id:
            raise RefusedError(
                "NotLatestPipelineExecutionException",
                f"A newer execution has entered stage '{stage.name}' since "
                f"'{execution.execution_id}'; only the latest execution in a stage can be "
                "retried",
            )
        stage_row.manual_retry_attempt += 1
        stage_row.latest_retry_trigger = RetryTrigger.MANUAL.value
        result = AdvanceResult()
        self._restart_stage(
            session=session,
            execution=execution,
            spec=spec,
            stage=stage,
            stage_row=stage_row,
            retry_mode=retry_mode,
            all_actions=store.action_executions_for(session=session, execution_pk=execution.id),
            now=now,
            result=result,
        )
        result.merge(self.advance(session=session, pipeline=pipeline, now=now))
        return result

    def answer_approval(
        self,
        *,
        session: Session,
        pipeline: Pipeline,
        spec: PipelineSpec,
        stage_name: str,
        action_name: str,
        token: str,
        verdict: str,
        summary: str,
        answered_by: str,
        now: datetime,
    ) -> AdvanceResult:
        """Complete the approval ``token`` was issued for: Approved succeeds it, Rejected fails it.

        Only the current attempt's token of an approval still waiting is accepted (rule 10).
        The token's action execution is found under the stage and action names of the version
        its execution runs; names that match no such action and that the pipeline's latest
        declaration ``spec`` lacks are StageNotFoundException / ActionNotFoundException, so an
        approval of an earlier version is answered for what it is, never "not found".
        """
        assert pipeline.id is not None
        candidates = [
            a
            for a in store.actions_with_token(session=session, pipeline_id=pipeline.id, token=token)
            if a.stage_name == stage_name and a.action_name == action_name
        ]
        if not candidates:
            declared = spec.stage(stage_name)
            if declared is None:
                raise RefusedError(
                    "StageNotFoundException",
                    f"Stage '{stage_name}' does not exist in pipeline '{spec.name}'",
                )
            if declared.action(action_name) is None:
                raise RefusedError(
                    "ActionNotFoundException",
                    f"Action '{action_name}' does not exist in stage '{stage_name}'",
                )
            raise RefusedError(
                "InvalidApprovalTokenException",
                f"The token is not valid for approval action '{action_name}' in stage "
                f"'{stage_name}'",
            )
        action = candidates[0]
        retried = any(
            a.action_name == action.action_name and (a.id or 0) > (action.id or 0)
            for a in store.action_executions_for(
                session=session, execution_pk=action.execution_pk, stage_name=stage_name
            )
        )
        if retried:
            raise RefusedError(
                "InvalidApprovalTokenException",
                f"The token belongs to an earlier attempt of approval action "
                f"'{action_name}' that a stage retry replaced; use the current token",
            )
        if action.status != ActionStatus.IN_PROGRESS:
            if action.approval_status is not None:
                raise RefusedError(
                    "ApprovalAlreadyCompletedException",
                    f"This approval was already {action.approval_status.lower()}",
                )
            raise RefusedError(
                "InvalidApprovalTokenException",
                f"The approval request is no longer valid ({action.summary or action.status})",
            )
        approved = verdict == "Approved"
        transition(action, ActionStatus.SUCCEEDED if approved else ActionStatus.FAILED, now=now)
        action.approval_status = verdict
        action.updated_by = answered_by
        action.summary = summary or verdict
        if not approved:
            action.error_code = "ApprovalRejected"
            action.error_message = f"Rejected: {summary}" if summary else "Rejected"
        return self.advance(session=session, pipeline=pipeline, now=now)

    def abandon_pipeline(
        self, *, session: Session, pipeline: Pipeline, now: datetime
    ) -> list[ActionExecution]:
        """Abandon the running actions of a pipeline about to be deleted; return them to kill."""
        assert pipeline.id is not None
        kills: list[ActionExecution] = []
        for execution in store.active_executions(session=session, pipeline_id=pipeline.id):
            assert execution.id is not None
            actions = store.action_executions_for(session=session, execution_pk=execution.id)
            kills += self._abandon_running(
                execution=execution, actions=actions, now=now, why="Pipeline deleted."
            )
        return kills

    def _abandon_running(
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
                transition(action, ActionStatus.ABANDONED, now=now)
                action.summary = why
                abandoned.append(action)
        return abandoned


def is_last_stage(execution: PipelineExecution, *, spec: PipelineSpec, stage: StageSpec) -> bool:
    """Whether ``execution`` ends when ``stage`` does: the declaration's last stage, or the one
    stage a ROLLBACK execution runs."""
    return stage.index == len(spec.stages) - 1 or execution.rollback_stage == stage.name


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


def cancelled_summary(execution: PipelineExecution, *, version: int) -> str:
    """Why an execution of an earlier version was cancelled by an update (API reference,
    PipelineExecution.status ``Cancelled``), and what to do instead."""
    return (
        f"Cancelled: the pipeline's definition was updated to version {version} before this "
        f"execution of version {execution.pipeline_version} could be completed. Start the "
        f"pipeline to run version {version}."
    )


def transition_enabled(transitions: Mapping[str, StageTransition], stage_name: str) -> bool:
    row = transitions.get(stage_name)
    return row is None or row.enabled
