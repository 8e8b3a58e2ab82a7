"""``LocalCodePipeline``: a drop-in for ``boto3.client("codepipeline")``.

This is the API adapter only. Each method takes the same keyword arguments as
boto3's, validates them against botocore's input shape (raising
``ParamValidationError`` as boto3 does), looks up what they name, and hands the
request to the execution rules in ``runtime.Runtime``, in one transaction with
the pipeline's row locked. It returns a response with botocore's output field
names. Errors are ``ClientError`` with AWS's codes; a rule's ``RefusedError``
becomes the ClientError of the operation that was called.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import botocore.session
from botocore import xform_name
from botocore.exceptions import ClientError, OperationNotPageableError, ParamValidationError
from botocore.model import OperationModel, ServiceModel
from botocore.paginate import Paginator, PaginatorModel
from botocore.validate import ParamValidator, ValidationErrors
from sqlmodel import Session

from bot.engine import conditions, responses
from bot.engine.constraints import aws_message, violations
from bot.engine.declaration import validate_declaration
from bot.engine.errors import DeclarationError, RefusedError, client_error, client_exceptions
from bot.engine.input_fields import refused_field
from bot.engine.model import PipelineSpec, StageSpec, parse_spec
from bot.engine.providers.commands import log_tail
from bot.engine.runtime import AdvanceResult, Runtime, SpecCache, latest_actions
from bot.engine.states import (
    EXECUTION_TERMINAL,
    ConditionType,
    ExecutionMode,
    ExecutionStatus,
    ExecutionType,
    StageStatus,
    TriggerType,
)
from bot.engine.worker import HOST, Worker
from storage import condition_store
from storage import engine_store as store
from storage.db import make_engine, make_session_factory, transaction, utc, utcnow
from storage.migrate import is_current
from storage.models import (
    ActionExecution,
    ConditionExecution,
    Pipeline,
    PipelineExecution,
    PipelineVersion,
    RuleExecution,
    StageTransition,
)

log = logging.getLogger(__name__)
CALLER = "pipebot"


@functools.cache
def _service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("codepipeline")


@functools.cache
def _paginator_model() -> PaginatorModel:
    return botocore.session.get_session().get_paginator_model("codepipeline")


_PAGINATED = frozenset(
    {"ListPipelines", "ListPipelineExecutions", "ListActionExecutions", "ListRuleExecutions"}
)


def _xform_name_to_operation(name: str) -> str:
    """``list_pipelines`` -> ``ListPipelines`` (boto3 accepts the snake_case name)."""
    if "_" not in name and name[:1].isupper():
        return name
    return "".join(part.capitalize() for part in name.split("_"))


def _operation(name: str) -> OperationModel:
    return _service_model().operation_model(name)


def _locally_optional(error: tuple[Any, ...]) -> bool:
    """Whether a botocore validation error is the pipeline's missing ``roleArn``, which AWS
    requires [APIReference/API_PipelineDeclaration.html] and the embedded engine does not
    (it runs actions as pipebot's OS user: ``bot.engine.input_fields`` ignores the field)."""
    reason, name, details = error
    return (
        reason == "missing required field"
        and str(name).lstrip(".") == "pipeline"
        and isinstance(details, dict)
        and details.get("required_name") == "roleArn"
    )


def _validate_params(operation: str, params: dict[str, Any]) -> None:
    """Validate a call as boto3 and then the service would, before anything is read or changed.

    botocore's client-side checks (types, required members, minimums) raise
    ``ParamValidationError``; the model's server-side constraints (maximums, patterns, enums;
    :mod:`bot.engine.constraints`) raise ``ValidationException`` with AWS's message. A
    declaration (``pipeline`` of CreatePipeline/UpdatePipeline) is left to
    ``validate_declaration``, which reports the same constraints stage by stage. Then every input
    field the engine does not honour is refused (:mod:`bot.engine.input_fields`).

    One difference from boto3: a declaration without the pipeline's ``roleArn`` is accepted
    (``_locally_optional``), as the engine never assumes a role.
    """
    shape = _operation(operation).input_shape
    assert shape is not None
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        errors = getattr(report, "_errors", None)
        if isinstance(errors, list) and all(isinstance(e, tuple) and len(e) == 3 for e in errors):
            kept = [e for e in errors if not _locally_optional(e)]
            if kept:
                narrowed = ValidationErrors()
                for reason, name, details in kept:
                    narrowed.report(name, reason, **details)
                raise ParamValidationError(report=narrowed.generate_report())
        else:  # botocore changed how it records errors: refuse as boto3 does
            raise ParamValidationError(report=report.generate_report())
    # The declaration is left out of the walk, not walked and filtered.
    found = violations({k: v for k, v in params.items() if k != "pipeline"}, shape)
    if found:
        raise client_error("ValidationException", aws_message(found), operation=operation)
    refusal = refused_field(operation, params)
    if refusal is not None:
        raise client_error(refusal.code, refusal.message, operation=operation)


def _encode_token(value: int | str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"k": value}).encode()).decode()


def _decode_token(token: str | None, operation: str, kind: type[int] | type[str]) -> Any:
    """The position a nextToken of ``operation`` encodes (a ``kind``), or None for no token.

    A token from another listing (a pipeline name given to an execution listing) is as invalid
    as garbage: it must not reach the database as a key of the wrong type.
    """
    if token is None:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))["k"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        value = None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise client_error(
            "InvalidNextTokenException", "The nextToken is not valid.", operation=operation
        )
    return value


def _execution_ids(
    session: Session, rows: Sequence[ActionExecution | RuleExecution]
) -> dict[int, str]:
    """The pipeline execution ID of each row's execution, by its key (one query)."""
    executions = store.get_executions_by_pk(session=session, pks=[r.execution_pk for r in rows])
    return {pk: e.execution_id for pk, e in executions.items()}


def _stage(spec: PipelineSpec, name: str, operation: str) -> StageSpec:
    stage = spec.stage(name)
    if stage is None:
        raise client_error(
            "StageNotFoundException",
            f"Stage '{name}' does not exist in pipeline '{spec.name}'",
            operation=operation,
        )
    return stage


@dataclass
class _Write:
    """One write call in its transaction: the locked pipeline, the call's clock, and what the
    rules decided that must happen after commit (``None``: nothing to launch, kill or tell)."""

    session: Session
    pipeline: Pipeline
    now: datetime
    result: AdvanceResult | None = None


class LocalCodePipeline:
    """The embedded CodePipeline engine behind boto3's client interface."""

    def __init__(
        self,
        *,
        database_url: str,
        data_dir: str | Path,
        repositories_dir: str | Path,
        run_worker: bool = True,
        poll_seconds: float = 1.0,
        max_parallel_actions: int = 16,
        region: str | None = None,
        codebuild_projects: str | Path | None = None,
        drain_seconds: float = 0.0,
    ) -> None:
        self._engine = make_engine(database_url)
        if not is_current(self._engine):
            self._engine.dispose()
            raise RuntimeError(
                "The pipebot database is not at the latest schema: run `pipebot migrate` first."
            )
        self._sessions = make_session_factory(self._engine)
        store.track_changes(self._sessions)
        self._data_dir = Path(data_dir).resolve()
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._region = region
        self._specs = SpecCache()
        self._runtime = Runtime(
            data_dir=self._data_dir,
            repositories_dir=Path(repositories_dir).resolve(),
            specs=self._specs,
            region=region,
            codebuild_projects=Path(codebuild_projects) if codebuild_projects else None,
        )
        self._listeners: list[Callable[[], None]] = []
        # How long close() lets running actions finish (PIPEBOT_ENGINE_DRAIN_SECONDS).
        self._drain_seconds = drain_seconds
        self._worker: Worker | None = None
        if run_worker:
            self._worker = Worker(
                sessions=self._sessions,
                runtime=self._runtime,
                poll_seconds=poll_seconds,
                max_parallel_actions=max_parallel_actions,
                on_change=self._changed,
            )
            self._worker.start()
            self._runtime.claimant = (self._worker.id, HOST)

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the worker (actions still running after ``drain_seconds`` are marked
        interrupted) and release the database."""
        if self._worker is not None:
            self._worker.close(drain_seconds=self._drain_seconds)
            self._worker = None
        self._engine.dispose()

    def __enter__(self) -> LocalCodePipeline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def worker(self) -> Worker | None:
        return self._worker

    @property
    def data_dir(self) -> Path:
        """The engine's data directory: artifacts, logs, local S3 buckets and instances."""
        return self._data_dir

    # --- plumbing ----------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with transaction(self._sessions) as session:
            yield session

    @contextmanager
    def _write(self, operation: str, pipeline_name: str) -> Iterator[_Write]:
        """The frame of every call that changes an existing pipeline.

        Opens a transaction with the pipeline's row locked (PipelineNotFoundException if it
        does not exist), turns the rules' refusals into ``operation``'s ClientError, and
        after commit hands ``result``, if any, to the worker and tells the change listeners.
        """
        now = utcnow()
        try:
            with self._tx() as session:
                pipeline = self._pipeline(session, pipeline_name, operation, lock=True)
                write = _Write(session=session, pipeline=pipeline, now=now)
                yield write
        except RefusedError as exc:
            raise exc.to_client_error(operation=operation) from None
        if write.result is not None:
            self._after(write.result)

    def _after(self, result: AdvanceResult) -> None:
        if self._worker is not None:
            self._worker.after_commit(result)
        self._changed()

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every change this process commits (an API call that
        changed something, a finished action): the notifier wakes at once instead of
        waiting for its next poll. Listeners must be quick and must not raise."""
        self._listeners.append(listener)

    def change_tokens(self) -> dict[str, str]:
        """Each pipeline's change token (not a CodePipeline operation): a token equal to one
        read before means nothing of the pipeline, its executions, stages, actions or
        transitions changed since, whichever process changed it. One query for all."""
        with self._sessions() as session:
            return store.change_tokens(session=session)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("a change listener failed")

    def _pipeline(self, session: Session, name: str, operation: str, *, lock: bool) -> Pipeline:
        pipeline = store.get_pipeline(session=session, name=name, lock=lock)
        if pipeline is None:
            raise client_error(
                "PipelineNotFoundException",
                f"Account '{responses.ACCOUNT}' does not have a pipeline with name '{name}'",
                operation=operation,
            )
        return pipeline

    def _spec(self, session: Session, pipeline: Pipeline) -> PipelineSpec:
        assert pipeline.id is not None
        return self._specs.get(session=session, pipeline_id=pipeline.id, version=pipeline.version)

    def _execution(
        self, session: Session, pipeline: Pipeline, execution_id: str, operation: str, code: str
    ) -> PipelineExecution:
        assert pipeline.id is not None
        execution = store.get_execution(
            session=session, pipeline_id=pipeline.id, execution_id=execution_id
        )
        if execution is None:
            raise client_error(
                code,
                f"Pipeline execution with id '{execution_id}' does not exist in pipeline "
                f"'{pipeline.name}'",
                operation=operation,
            )
        return execution

    @staticmethod
    def _declaration(pipeline: dict[str, Any], operation: str) -> dict[str, Any]:
        try:
            return validate_declaration(pipeline, local=True)
        except DeclarationError as exc:
            raise exc.to_client_error(operation=operation) from None

    # --- pipelines ---------------------------------------------------------------------------

    def create_pipeline(self, **params: Any) -> dict[str, Any]:
        _validate_params("CreatePipeline", params)
        declaration = self._declaration(params["pipeline"], "CreatePipeline")
        declaration["version"] = 1
        tags = params.get("tags") or []
        now = utcnow()
        with self._tx() as session:
            if store.get_pipeline(session=session, name=declaration["name"]) is not None:
                raise client_error(
                    "PipelineNameInUseException",
                    f"A pipeline with the name '{declaration['name']}' already exists in "
                    f"account '{responses.ACCOUNT}'",
                    operation="CreatePipeline",
                )
            pipeline = Pipeline(
                name=declaration["name"],
                version=1,
                pipeline_type=declaration["pipelineType"],
                execution_mode=declaration["executionMode"],
                declaration=json.dumps(declaration),
                tags=json.dumps(tags),
                created_at=now,
                updated_at=now,
            )
            store.add_row(session=session, row=pipeline)
            assert pipeline.id is not None
            store.add_row(
                session=session,
                row=PipelineVersion(
                    pipeline_id=pipeline.id,
                    version=1,
                    declaration=pipeline.declaration,
                    created_at=now,
                ),
            )
            spec = parse_spec(declaration)
            self._new_execution(
                session=session,
                pipeline=pipeline,
                spec=spec,
                trigger=TriggerType.CREATE_PIPELINE,
                trigger_detail=CALLER,
                variables={name: value for name, value in spec.variables if value is not None},
                overrides={},
                request_token=None,
                now=now,
            )
            result = self._runtime.advance(session=session, pipeline=pipeline, now=now)
        self._after(result)
        response: dict[str, Any] = {"pipeline": copy.deepcopy(declaration)}
        if tags:
            response["tags"] = tags
        return responses.with_metadata(response)

    def update_pipeline(self, **params: Any) -> dict[str, Any]:
        """A new version of the declaration; executions of earlier versions never go on.

        "When you update a pipeline, CodePipeline gracefully completes all the running actions
        and then fails the stages and pipeline executions where the running actions were
        completed" (https://docs.aws.amazon.com/codepipeline/latest/userguide/pipelines-edit.html):
        ``Runtime.apply_update``, in this call's transaction, so the rule holds across restarts.
        """
        _validate_params("UpdatePipeline", params)
        declaration = self._declaration(params["pipeline"], "UpdatePipeline")
        with self._write("UpdatePipeline", declaration["name"]) as write:
            session, pipeline, now = write.session, write.pipeline, write.now
            assert pipeline.id is not None
            pipeline.version += 1
            declaration["version"] = pipeline.version
            pipeline.declaration = json.dumps(declaration)
            pipeline.pipeline_type = declaration["pipelineType"]
            pipeline.execution_mode = declaration["executionMode"]
            pipeline.updated_at = now
            store.add_row(
                session=session,
                row=PipelineVersion(
                    pipeline_id=pipeline.id,
                    version=pipeline.version,
                    declaration=pipeline.declaration,
                    created_at=now,
                ),
            )
            write.result = self._runtime.apply_update(session=session, pipeline=pipeline, now=now)
        return responses.with_metadata({"pipeline": copy.deepcopy(declaration)})

    def get_pipeline(self, **params: Any) -> dict[str, Any]:
        _validate_params("GetPipeline", params)
        with self._sessions() as session:
            pipeline = self._pipeline(session, params["name"], "GetPipeline", lock=False)
            assert pipeline.id is not None
            version = params.get("version", pipeline.version)
            row = store.get_pipeline_version(
                session=session, pipeline_id=pipeline.id, version=version
            )
            if row is None:
                raise client_error(
                    "PipelineVersionNotFoundException",
                    f"Pipeline '{pipeline.name}' has no version {version}",
                    operation="GetPipeline",
                )
            return responses.with_metadata(
                {
                    "pipeline": json.loads(row.declaration),
                    "metadata": {
                        "pipelineArn": responses.pipeline_arn(pipeline.name, region=self._region),
                        "created": utc(pipeline.created_at),
                        "updated": utc(pipeline.updated_at),
                    },
                }
            )

    def list_pipelines(self, **params: Any) -> dict[str, Any]:
        _validate_params("ListPipelines", params)
        limit = params.get("maxResults", 100)
        after = _decode_token(params.get("nextToken"), "ListPipelines", str)
        with self._sessions() as session:
            rows = store.list_pipelines(session=session, after_name=after, limit=limit + 1)
        body: dict[str, Any] = {"pipelines": [responses.pipeline_summary(p) for p in rows[:limit]]}
        if len(rows) > limit:
            body["nextToken"] = _encode_token(rows[limit - 1].name)
        return responses.with_metadata(body)

    def delete_pipeline(self, **params: Any) -> dict[str, Any]:
        _validate_params("DeletePipeline", params)
        now = utcnow()
        kills: list[ActionExecution] = []
        with self._tx() as session:
            pipeline = store.get_pipeline(session=session, name=params["name"], lock=True)
            if pipeline is not None:
                assert pipeline.id is not None
                kills = self._runtime.abandon_pipeline(session=session, pipeline=pipeline, now=now)
                session.flush()
                store.delete_pipeline(session=session, pipeline=pipeline)
                self._specs.forget(pipeline_id=pipeline.id)
        self._after(AdvanceResult(kills=kills))
        return responses.with_metadata({})

    # --- executions --------------------------------------------------------------------------

    def _new_execution(
        self,
        *,
        session: Session,
        pipeline: Pipeline,
        spec: PipelineSpec,
        trigger: TriggerType,
        trigger_detail: str | None,
        variables: dict[str, str],
        overrides: Mapping[str, Any],
        request_token: str | None,
        now: datetime,
    ) -> PipelineExecution:
        assert pipeline.id is not None
        execution = PipelineExecution(
            execution_id=str(uuid.uuid4()),
            pipeline_id=pipeline.id,
            pipeline_version=pipeline.version,
            status=ExecutionStatus.IN_PROGRESS.value,
            trigger_type=trigger.value,
            trigger_detail=trigger_detail,
            execution_mode=spec.execution_mode,
            started_at=now,
            updated_at=now,
            variables=json.dumps(variables),
            source_overrides=json.dumps(overrides),
            source_revisions="[]",
            artifact_revisions="[]",
            stage_index=0,
            waiting=True,
            arrived_at=now,
            client_request_token=request_token,
        )
        store.add_row(session=session, row=execution)
        return execution

    def _resolve_variables(
        self, spec: PipelineSpec, given: list[dict[str, str]], operation: str
    ) -> dict[str, str]:
        declared = dict(spec.variables)
        values: dict[str, str] = {}
        for item in given:
            if item["name"] not in declared:
                known = ", ".join(sorted(declared)) or "none"
                raise client_error(
                    "ValidationException",
                    f"Variable '{item['name']}' is not declared in pipeline '{spec.name}' "
                    f"(declared: {known})",
                    operation=operation,
                )
            values[item["name"]] = item["value"]
        for name, default in spec.variables:
            if name not in values:
                if default is None:
                    raise client_error(
                        "ValidationException",
                        f"Variable '{name}' has no default value and must be given at start",
                        operation=operation,
                    )
                values[name] = default
        return values

    def _source_overrides(
        self, spec: PipelineSpec, given: list[dict[str, str]], operation: str
    ) -> dict[str, str]:
        sources = {a.name for a in spec.stages[0].actions}
        overrides: dict[str, str] = {}
        for item in given:
            if item["actionName"] not in sources:
                raise client_error(
                    "ValidationException",
                    f"sourceRevisions: '{item['actionName']}' is not a source action of "
                    f"pipeline '{spec.name}'",
                    operation=operation,
                )
            if item["revisionType"] != "COMMIT_ID":
                raise client_error(
                    "ValidationException",
                    f"sourceRevisions: revisionType {item['revisionType']} is not supported by "
                    "git sources; use COMMIT_ID",
                    operation=operation,
                )
            overrides[item["actionName"]] = item["revisionValue"]
        return overrides

    def start_pipeline_execution(self, **params: Any) -> dict[str, Any]:
        _validate_params("StartPipelineExecution", params)
        return self._start(
            name=params["name"],
            variables=params.get("variables") or [],
            source_revisions=params.get("sourceRevisions") or [],
            request_token=params.get("clientRequestToken"),
            trigger=TriggerType.START_PIPELINE_EXECUTION,
            trigger_detail=CALLER,
        )

    def start_from_trigger(
        self,
        *,
        name: str,
        trigger: TriggerType,
        trigger_detail: str,
        source_revisions: dict[str, str] | None = None,
        source_branches: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Start an execution for a non-API trigger (source polling, trigger filters).

        ``source_revisions`` maps source action names to the commit each must check out
        (a trigger's pushed commit), as StartPipelineExecution's ``sourceRevisions`` of type
        COMMIT_ID; the other source actions take their branch tip. ``source_branches`` maps
        a source action to the branch its commit was pushed to, which its ``BranchName``
        output variable then names instead of the configured branch. ValidationException for
        a name that is not a source action of the pipeline.
        """
        return self._start(
            name=name,
            variables=[],
            source_revisions=[
                {"actionName": action, "revisionType": "COMMIT_ID", "revisionValue": commit}
                for action, commit in (source_revisions or {}).items()
            ],
            request_token=None,
            trigger=trigger,
            trigger_detail=trigger_detail,
            source_branches=source_branches or {},
        )

    def _start(
        self,
        *,
        name: str,
        variables: list[dict[str, str]],
        source_revisions: list[dict[str, str]],
        request_token: str | None,
        trigger: TriggerType,
        trigger_detail: str | None,
        source_branches: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        operation = "StartPipelineExecution"
        with self._write(operation, name) as write:
            session, pipeline, now = write.session, write.pipeline, write.now
            assert pipeline.id is not None
            if request_token is not None:
                existing = store.execution_by_request_token(
                    session=session, pipeline_id=pipeline.id, token=request_token
                )
                if existing is not None:
                    return responses.with_metadata({"pipelineExecutionId": existing.execution_id})
            spec = self._spec(session, pipeline)
            values = self._resolve_variables(spec, variables, operation)
            overrides: dict[str, Any] = dict(
                self._source_overrides(spec, source_revisions, operation)
            )
            for action_name, branch in (source_branches or {}).items():
                if action_name in overrides:
                    overrides[action_name] = {
                        "revision": overrides[action_name],
                        "branch": branch,
                    }
            execution = self._new_execution(
                session=session,
                pipeline=pipeline,
                spec=spec,
                trigger=trigger,
                trigger_detail=trigger_detail,
                variables=values,
                overrides=overrides,
                request_token=request_token,
                now=now,
            )
            write.result = self._runtime.advance(session=session, pipeline=pipeline, now=now)
            execution_id = execution.execution_id
        return responses.with_metadata({"pipelineExecutionId": execution_id})

    def stop_pipeline_execution(self, **params: Any) -> dict[str, Any]:
        operation = "StopPipelineExecution"
        _validate_params(operation, params)
        with self._write(operation, params["pipelineName"]) as write:
            execution = self._execution(
                write.session,
                write.pipeline,
                params["pipelineExecutionId"],
                operation,
                "PipelineExecutionNotStoppableException",
            )
            write.result = self._runtime.stop(
                session=write.session,
                pipeline=write.pipeline,
                execution=execution,
                abandon=bool(params.get("abandon", False)),
                reason=params.get("reason"),
                now=write.now,
            )
            execution_id = execution.execution_id
        return responses.with_metadata({"pipelineExecutionId": execution_id})

    def retry_stage_execution(self, **params: Any) -> dict[str, Any]:
        operation = "RetryStageExecution"
        _validate_params(operation, params)
        with self._write(operation, params["pipelineName"]) as write:
            execution = self._execution(
                write.session,
                write.pipeline,
                params["pipelineExecutionId"],
                operation,
                "PipelineExecutionNotFoundException",
            )
            spec = self._runtime.spec_of(session=write.session, execution=execution)
            write.result = self._runtime.retry_stage(
                session=write.session,
                pipeline=write.pipeline,
                execution=execution,
                spec=spec,
                stage=_stage(spec, params["stageName"], operation),
                retry_mode=params["retryMode"],
                now=write.now,
            )
            execution_id = execution.execution_id
        return responses.with_metadata({"pipelineExecutionId": execution_id})

    def rollback_stage(self, **params: Any) -> dict[str, Any]:
        """RollbackStage: a new ROLLBACK execution (trigger ``ManualRollback``) runs
        ``stageName`` again with ``targetPipelineExecutionId``'s source revisions, variables
        and artifacts (``Runtime.new_rollback_execution``).

        Refused, as AWS's considerations say
        (https://docs.aws.amazon.com/codepipeline/latest/userguide/stage-rollback.html;
        codes from API_RollbackStage's error list):
        - the source (first) stage, a PARALLEL pipeline, a target that is itself a rollback,
          a target that did not succeed in the stage: ``UnableToRollbackStageException``;
        - a target started on an earlier pipeline version than the current structure:
          ``PipelineExecutionOutdatedException``;
        - an unknown target: ``PipelineExecutionNotFoundException``; an unknown stage:
          ``StageNotFoundException``;
        - a rollback of the same stage already waiting or running: ``ConflictException``
          (the pipeline "is busy handling ongoing activities"; AWS does not document this
          case, pipebot refuses a second one rather than queue it).
        """
        operation = "RollbackStage"
        _validate_params(operation, params)
        with self._write(operation, params["pipelineName"]) as write:
            session, pipeline, now = write.session, write.pipeline, write.now
            assert pipeline.id is not None
            spec = self._spec(session, pipeline)
            stage = _stage(spec, params["stageName"], operation)
            target_id = params["targetPipelineExecutionId"]

            def refuse(code: str, message: str) -> NoReturn:
                raise client_error(code, message, operation=operation)

            if stage.index == 0:
                refuse(
                    "UnableToRollbackStageException",
                    f"Stage '{stage.name}' is the source stage of pipeline '{pipeline.name}'; "
                    "a source stage cannot be rolled back",
                )
            if spec.execution_mode == ExecutionMode.PARALLEL:
                refuse(
                    "UnableToRollbackStageException",
                    f"Pipeline '{pipeline.name}' runs in PARALLEL mode; stage rollback is not "
                    "available in PARALLEL mode",
                )
            target = self._execution(
                session, pipeline, target_id, operation, "PipelineExecutionNotFoundException"
            )
            if target.execution_type == ExecutionType.ROLLBACK:
                refuse(
                    "UnableToRollbackStageException",
                    f"Execution '{target_id}' is a rollback execution; a stage cannot be rolled "
                    "back to a rollback execution",
                )
            if target.pipeline_version != pipeline.version:
                refuse(
                    "PipelineExecutionOutdatedException",
                    f"Execution '{target_id}' ran version {target.pipeline_version} of pipeline "
                    f"'{pipeline.name}', which is at version {pipeline.version}: a stage can "
                    "only be rolled back to an execution started in the current pipeline "
                    "structure version",
                )
            assert target.id is not None
            status = store.stage_execution_status(
                session=session, execution_pk=target.id, stage_name=stage.name
            )
            if status != StageStatus.SUCCEEDED:
                refuse(
                    "UnableToRollbackStageException",
                    f"Execution '{target_id}' did not succeed in stage '{stage.name}' "
                    f"({status or 'never entered it'}); a stage can only be rolled back to an "
                    "execution that succeeded in it",
                )
            busy = [
                e
                for e in store.active_executions(session=session, pipeline_id=pipeline.id)
                if e.execution_type == ExecutionType.ROLLBACK and e.rollback_stage == stage.name
            ]
            if busy:
                refuse(
                    "ConflictException",
                    f"Stage '{stage.name}' is already being rolled back by execution "
                    f"'{busy[0].execution_id}'; wait for it to finish",
                )
            execution = self._runtime.new_rollback_execution(
                session=session,
                target=target,
                stage=stage,
                trigger=TriggerType.MANUAL_ROLLBACK,
                trigger_detail=CALLER,
                now=now,
            )
            write.result = self._runtime.advance(session=session, pipeline=pipeline, now=now)
            execution_id = execution.execution_id
        return responses.with_metadata({"pipelineExecutionId": execution_id})

    def put_approval_result(self, **params: Any) -> dict[str, Any]:
        operation = "PutApprovalResult"
        _validate_params(operation, params)
        with self._write(operation, params["pipelineName"]) as write:
            # The names are those of the version the approval's execution runs, which may be
            # earlier than the latest: the rule resolves them from the token's action.
            write.result = self._runtime.answer_approval(
                session=write.session,
                pipeline=write.pipeline,
                spec=self._spec(write.session, write.pipeline),
                stage_name=params["stageName"],
                action_name=params["actionName"],
                token=params["token"],
                verdict=params["result"]["status"],
                summary=params["result"]["summary"],
                answered_by=CALLER,
                now=write.now,
            )
        return responses.with_metadata({"approvedAt": write.now})

    # --- reads -------------------------------------------------------------------------------

    def get_pipeline_state(self, **params: Any) -> dict[str, Any]:
        """Each stage of the latest version with its latest stage execution and actions.

        As on AWS, stages and actions are those of the latest declaration. An execution of an
        earlier version that is still finishing its running actions after an update
        (``Runtime._wind_down``) stays visible under its own names: a stage the latest version
        no longer has is listed after the declared ones while that execution is in it, and the
        actions a stage's latest execution ran under names the latest declaration lacks are
        listed after the declared actions while that execution is the stage's latest.
        """
        _validate_params("GetPipelineState", params)
        with self._sessions() as session:
            pipeline = self._pipeline(session, params["name"], "GetPipelineState", lock=False)
            assert pipeline.id is not None
            spec = self._spec(session, pipeline)
            latest_stages = store.latest_stage_executions(session=session, pipeline_id=pipeline.id)
            active = store.active_executions(session=session, pipeline_id=pipeline.id)
            transitions = store.get_transitions(session=session, pipeline_id=pipeline.id)
            executions = store.get_executions_by_pk(
                session=session, pks=[s.execution_pk for s in latest_stages.values()]
            )
            # One query for the actions of every stage's latest execution.
            rows_by_execution: dict[int, list[ActionExecution]] = {}
            for row in store.action_executions_for_many(
                session=session,
                execution_pks=sorted({s.execution_pk for s in latest_stages.values()}),
            ):
                rows_by_execution.setdefault(row.execution_pk, []).append(row)
            actions_by_stage: dict[str, dict[str, ActionExecution]] = {
                stage_name: latest_actions(
                    rows_by_execution.get(stage_row.execution_pk, []),
                    stage_name=stage_name,
                    base_attempt=0,
                )
                for stage_name, stage_row in latest_stages.items()
            }
            revisions: dict[str, ActionExecution] = {}
            for row in store.source_revisions_of_latest(
                session=session, pipeline_id=pipeline.id, stage_name=spec.stages[0].name
            ):
                revisions.setdefault(row.action_name, row)
            # Where each waiting execution waits: a stage name of the version it runs.
            inbound: dict[str, list[PipelineExecution]] = {}
            for execution in sorted(active, key=lambda e: (utc(e.arrived_at), e.id or 0)):
                if execution.waiting and execution.status == ExecutionStatus.IN_PROGRESS:
                    own = self._runtime.spec_of(session=session, execution=execution)
                    name = own.stages[execution.stage_index].name
                    inbound.setdefault(name, []).append(execution)
            shown: list[tuple[str, list[str]]] = []
            for stage in spec.stages:
                names = [a.name for a in stage.actions]
                stage_row = latest_stages.get(stage.name)
                ran = executions.get(stage_row.execution_pk) if stage_row else None
                if ran is not None and ran.pipeline_version != pipeline.version:
                    names += [
                        name
                        for name in self._actions_run(session, ran, stage.name)
                        if name not in names and name in actions_by_stage.get(stage.name, {})
                    ]
                shown.append((stage.name, names))
            for stage_row in sorted(latest_stages.values(), key=lambda r: r.entered_seq):
                ran = executions.get(stage_row.execution_pk)
                if (
                    spec.stage(stage_row.stage_name) is None
                    and stage_row.status in (StageStatus.IN_PROGRESS, StageStatus.STOPPING)
                    and ran is not None
                    and ExecutionStatus(ran.status) not in EXECUTION_TERMINAL
                ):
                    names = self._actions_run(session, ran, stage_row.stage_name)
                    shown.append((stage_row.stage_name, names))
            stage_states = []
            for index, (stage_name, action_names) in enumerate(shown):
                latest_stage = latest_stages.get(stage_name)
                stage_states.append(
                    responses.stage_state(
                        stage_name=stage_name,
                        action_names=action_names,
                        latest_stage=latest_stage,
                        latest_stage_execution=(
                            executions.get(latest_stage.execution_pk) if latest_stage else None
                        ),
                        latest_actions=actions_by_stage.get(stage_name, {}),
                        current_revisions=revisions if index == 0 else {},
                        inbound=inbound.get(stage_name, []),
                        transition=transitions.get(stage_name),
                    )
                )
            self._add_condition_states(session, stage_states, latest_stages)
            return responses.with_metadata(
                {
                    "pipelineName": pipeline.name,
                    "pipelineVersion": pipeline.version,
                    "stageStates": stage_states,
                    "created": utc(pipeline.created_at),
                    "updated": utc(pipeline.updated_at),
                }
            )

    @staticmethod
    def _add_condition_states(
        session: Session, stage_states: list[dict[str, Any]], latest_stages: dict[str, Any]
    ) -> None:
        """Each stage's ``beforeEntryConditionState``, ``onSuccessConditionState`` and
        ``onFailureConditionState``: the latest evaluation of each of its conditions by the
        stage's latest execution (API_StageConditionState)."""
        rows = condition_store.conditions_for(
            session=session, execution_pks=sorted({s.execution_pk for s in latest_stages.values()})
        )
        latest: dict[tuple[str, str], ConditionExecution] = {}
        for condition in rows:
            stage_row = latest_stages.get(condition.stage_name)
            if stage_row is not None and stage_row.execution_pk == condition.execution_pk:
                # oldest first: the newest evaluation of each type wins
                latest[(condition.stage_name, condition.condition_type)] = condition
        rules = condition_store.rules_of(
            session=session, condition_pks=[c.id for c in latest.values() if c.id is not None]
        )
        keys = {
            "BEFORE_ENTRY": "beforeEntryConditionState",
            "ON_SUCCESS": "onSuccessConditionState",
            "ON_FAILURE": "onFailureConditionState",
        }
        for state in stage_states:
            for kind, key in keys.items():
                row = latest.get((state["stageName"], kind))
                if row is not None:
                    state[key] = responses.stage_condition_state(
                        condition=row, rules=[r for r in rules if r.condition_pk == row.id]
                    )

    def _actions_run(
        self, session: Session, execution: PipelineExecution, stage_name: str
    ) -> list[str]:
        """The action names of ``stage_name`` in the version ``execution`` runs, in order."""
        stage = self._runtime.spec_of(session=session, execution=execution).stage(stage_name)
        return [a.name for a in stage.actions] if stage is not None else []

    def list_pipeline_executions(self, **params: Any) -> dict[str, Any]:
        operation = "ListPipelineExecutions"
        _validate_params(operation, params)
        limit = params.get("maxResults", 100)
        before = _decode_token(params.get("nextToken"), operation, int)
        stage_filter = (params.get("filter") or {}).get("succeededInStage", {}).get("stageName")
        with self._sessions() as session:
            pipeline = self._pipeline(session, params["pipelineName"], operation, lock=False)
            assert pipeline.id is not None
            rows = store.list_executions(
                session=session,
                pipeline_id=pipeline.id,
                before_pk=before,
                limit=limit + 1,
                succeeded_in_stage=stage_filter,
            )
        body: dict[str, Any] = {
            "pipelineExecutionSummaries": [responses.execution_summary(e) for e in rows[:limit]]
        }
        if len(rows) > limit:
            body["nextToken"] = _encode_token(rows[limit - 1].id or 0)
        return responses.with_metadata(body)

    def get_pipeline_execution(self, **params: Any) -> dict[str, Any]:
        operation = "GetPipelineExecution"
        _validate_params(operation, params)
        with self._sessions() as session:
            pipeline = self._pipeline(session, params["pipelineName"], operation, lock=False)
            execution = self._execution(
                session,
                pipeline,
                params["pipelineExecutionId"],
                operation,
                "PipelineExecutionNotFoundException",
            )
            return responses.with_metadata(
                {
                    "pipelineExecution": responses.execution_detail(
                        execution=execution, pipeline_name=pipeline.name
                    )
                }
            )

    def list_action_executions(self, **params: Any) -> dict[str, Any]:
        operation = "ListActionExecutions"
        _validate_params(operation, params)
        limit = params.get("maxResults", 100)
        before = _decode_token(params.get("nextToken"), operation, int)
        given = params.get("filter") or {}
        latest: dict[str, str] = given.get("latestInPipelineExecution") or {}
        named = (given.get("pipelineExecutionId"), latest.get("pipelineExecutionId"))
        wanted = {str(execution_id) for execution_id in named if execution_id is not None}
        with self._sessions() as session:
            pipeline = self._pipeline(session, params["pipelineName"], operation, lock=False)
            assert pipeline.id is not None
            execution_pk = None
            for execution_id in sorted(wanted):
                execution_pk = self._execution(
                    session, pipeline, execution_id, operation, "PipelineExecutionNotFoundException"
                ).id
            if len(wanted) > 1:  # two different executions: no action belongs to both
                rows: list[ActionExecution] = []
            else:
                rows = store.list_action_executions(
                    session=session,
                    pipeline_id=pipeline.id,
                    execution_pk=execution_pk,
                    before_pk=before,
                    limit=limit + 1,
                    latest_only=latest.get("startTimeRange") == "Latest",
                )
            ids = _execution_ids(session, rows)
        body: dict[str, Any] = {
            "actionExecutionDetails": [
                responses.action_execution_detail(
                    action=a, execution_id=ids[a.execution_pk], region=self._region
                )
                for a in rows[:limit]
            ]
        }
        if len(rows) > limit:
            body["nextToken"] = _encode_token(rows[limit - 1].id or 0)
        return responses.with_metadata(body)

    # --- stage conditions ---------------------------------------------------------------------

    def override_stage_condition(self, **params: Any) -> dict[str, Any]:
        """OverrideStageCondition: a waiting or failed entry or success condition of the
        stage's latest execution passes (``conditions.override``)."""
        operation = "OverrideStageCondition"
        _validate_params(operation, params)
        with self._write(operation, params["pipelineName"]) as write:
            assert write.pipeline.id is not None
            execution = self._execution(
                write.session,
                write.pipeline,
                params["pipelineExecutionId"],
                operation,
                "PipelineExecutionNotFoundException",
            )
            spec = self._runtime.spec_of(session=write.session, execution=execution)
            stage = _stage(spec, params["stageName"], operation)
            latest = store.latest_stage_executions(
                session=write.session, pipeline_id=write.pipeline.id
            )
            conditions.override(
                session=write.session,
                latest_in_stage=latest.get(stage.name),
                execution=execution,
                spec=spec,
                stage=stage,
                kind=ConditionType(params["conditionType"]),
                overridden_by=CALLER,
                now=write.now,
            )
            write.result = self._runtime.advance(
                session=write.session, pipeline=write.pipeline, now=write.now
            )
        return responses.with_metadata({})

    def list_rule_executions(self, **params: Any) -> dict[str, Any]:
        """ListRuleExecutions: the pipeline's rule runs, newest first, 100 a page by default
        (API_ListRuleExecutions); ``filter`` as ListActionExecutions' (by execution, or the
        latest run of each rule of each stage of one execution)."""
        operation = "ListRuleExecutions"
        _validate_params(operation, params)
        limit = params.get("maxResults", 100)
        before = _decode_token(params.get("nextToken"), operation, int)
        given = params.get("filter") or {}
        latest_filter: dict[str, str] = given.get("latestInPipelineExecution") or {}
        named = (given.get("pipelineExecutionId"), latest_filter.get("pipelineExecutionId"))
        wanted = {str(execution_id) for execution_id in named if execution_id is not None}
        with self._sessions() as session:
            pipeline = self._pipeline(session, params["pipelineName"], operation, lock=False)
            assert pipeline.id is not None
            execution_pk = None
            for execution_id in sorted(wanted):
                execution_pk = self._execution(
                    session, pipeline, execution_id, operation, "PipelineExecutionNotFoundException"
                ).id
            rows = []
            if len(wanted) <= 1:  # two different executions: no rule run belongs to both
                rows = condition_store.list_rule_executions(
                    session=session,
                    pipeline_id=pipeline.id,
                    execution_pk=execution_pk,
                    before_pk=before,
                    limit=limit + 1,
                )
            if latest_filter.get("startTimeRange") == "Latest":
                seen: set[tuple[str, str]] = set()
                kept = []
                for row in rows:  # newest first: the first of each rule is its latest run
                    if (row.stage_name, row.rule_name) not in seen:
                        seen.add((row.stage_name, row.rule_name))
                        kept.append(row)
                rows = kept
            ids = _execution_ids(session, rows)
        body: dict[str, Any] = {
            "ruleExecutionDetails": [
                responses.rule_execution_detail(
                    rule=r, execution_id=ids[r.execution_pk], region=self._region
                )
                for r in rows[:limit]
            ]
        }
        if len(rows) > limit:
            body["nextToken"] = _encode_token(rows[limit - 1].id or 0)
        return responses.with_metadata(body)

    def list_rule_types(self, **params: Any) -> dict[str, Any]:
        """ListRuleTypes: the rule types the embedded engine runs (VariableCheck,
        DeploymentWindow, Commands), with their configuration properties as the rule reference
        lists them; the AWS-only ones are left out, as the engine refuses them
        (API_ListRuleTypes). Every rule type is owned by AWS, in every region."""
        operation = "ListRuleTypes"
        _validate_params(operation, params)
        return responses.with_metadata(
            {
                "ruleTypes": [
                    responses.rule_type(
                        provider=rule_type.provider,
                        properties=[
                            (p.name, p.required, p.description) for p in rule_type.properties
                        ],
                        min_inputs=rule_type.min_inputs,
                        max_inputs=rule_type.max_inputs,
                    )
                    for rule_type in conditions.RULE_TYPES.values()
                ]
            }
        )

    # --- transitions -------------------------------------------------------------------------

    def _transition_stage(
        self, session: Session, pipeline: Pipeline, params: dict[str, Any], operation: str
    ) -> str:
        spec = self._spec(session, pipeline)
        stage = _stage(spec, params["stageName"], operation)
        if params["transitionType"] == "Inbound":
            return stage.name
        if stage.index == len(spec.stages) - 1:
            raise client_error(
                "ValidationException",
                f"Stage '{stage.name}' is the last stage and has no outbound transition",
                operation=operation,
            )
        return spec.stages[stage.index + 1].name

    def disable_stage_transition(self, **params: Any) -> dict[str, Any]:
        operation = "DisableStageTransition"
        _validate_params(operation, params)
        return self._set_transition(params, operation, enabled=False, reason=params["reason"])

    def enable_stage_transition(self, **params: Any) -> dict[str, Any]:
        operation = "EnableStageTransition"
        _validate_params(operation, params)
        return self._set_transition(params, operation, enabled=True, reason=None)

    def _set_transition(
        self, params: dict[str, Any], operation: str, *, enabled: bool, reason: str | None
    ) -> dict[str, Any]:
        with self._write(operation, params["pipelineName"]) as write:
            session, pipeline, now = write.session, write.pipeline, write.now
            assert pipeline.id is not None
            stage_name = self._transition_stage(session, pipeline, params, operation)
            row = store.get_transition(
                session=session, pipeline_id=pipeline.id, stage_name=stage_name
            )
            if row is None:
                row = StageTransition(
                    pipeline_id=pipeline.id, stage_name=stage_name, changed_at=now
                )
            row.enabled = enabled
            row.disabled_reason = reason
            row.changed_by = CALLER
            row.changed_at = now
            store.add_row(session=session, row=row)
            write.result = self._runtime.advance(session=session, pipeline=pipeline, now=now)
        return responses.with_metadata({})

    # --- boto3 client conveniences ----------------------------------------------------------

    @property
    def exceptions(self) -> Any:
        """The modeled exception classes, as ``boto3.client("codepipeline").exceptions``."""
        return client_exceptions()

    def can_paginate(self, operation_name: str) -> bool:
        return _xform_name_to_operation(operation_name) in _PAGINATED

    def get_paginator(self, operation_name: str) -> Paginator[Any]:
        """botocore's own Paginator over this engine's method, as boto3's client returns."""
        operation = _xform_name_to_operation(operation_name)
        if operation not in _PAGINATED:
            raise OperationNotPageableError(operation_name=operation_name)
        config = _paginator_model().get_paginator(operation)
        method = getattr(self, xform_name(operation))
        return Paginator(method, config, _operation(operation))

    # --- engine-only extras ------------------------------------------------------------------

    def get_action_log(self, *, actionExecutionId: str, tailLines: int | None = None) -> str:  # noqa: N803
        """The output of a Commands action (all of it, or its last ``tailLines`` lines)."""
        path = self._runtime.log_path(action_execution_id=actionExecutionId)
        if not re.fullmatch(r"[0-9a-f-]{36}", actionExecutionId) or not path.exists():
            return ""
        if tailLines is None:
            return path.read_text(errors="replace")
        return log_tail(log_path=path, lines=tailLines, max_chars=1_000_000)

    def run_worker_scan(self) -> None:
        """Run one worker pass now (tests and the benchmark use it to skip the poll wait)."""
        if self._worker is not None:
            self._worker.scan()


__all__ = ["ClientError", "LocalCodePipeline"]
