"""Contract tests: the embedded engine and boto3's real client are interchangeable.

Two techniques, one promise (``../shared/docs/codepipeline-semantics.md``, "The API surface"):

* **Same scenario, both backends.** The ``client`` fixture is the embedded engine (through
  ``make_client`` with ``PIPEBOT_BACKEND=local``, on SQLite and on PostgreSQL) or boto3's real
  client under moto (``PIPEBOT_BACKEND=aws``). Each scenario uses only calls moto implements
  (create/get/list/update/delete pipelines, start/list executions) and must hold on both.
* **Replay through botocore's Stubber.** moto implements no state, stop, retry, approval,
  transition or action-history call. For those the engine is driven through a scenario, and every
  request it accepted and every response it gave is replayed through a real boto3 client with a
  ``Stubber``: the client validates the request against AWS's API model, ``add_response`` validates
  the response against the operation's output shape, and the boto3 client must hand back exactly
  the engine's response. Errors are replayed the same way: the engine's error code must be one the
  API model declares for that operation, and the ``ClientError`` boto3 raises for it must read the
  same as the engine's.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.client
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ParamValidationError
from botocore.stub import Stubber
from moto import mock_aws

from bot.engine import LocalCodePipeline
from bot.ops.client import make_client
from bot.settings import Settings
from tests.helpers import approval_action, commands_action, pipeline, source_action, wait_for
from tests.shapecheck import assert_output_shape

REGION = "us-east-1"
LOCAL_ROLE = "arn:aws:iam::000000000000:role/pipebot"
TRUST_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "codepipeline.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)

# Where moto answers differently from AWS, the scenario names the difference instead of
# skipping, so that a moto upgrade that fixes it shows up as a failure to clean up.
MOTO_ERROR_CODES = {
    # moto raises InvalidStructureException for a duplicate name; AWS's model (and the engine)
    # use PipelineNameInUseException.
    "PipelineNameInUseException": "InvalidStructureException",
}


def _isolate_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials, a fixed region and no shared config from the machine."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


# =========================================================================== both backends


@dataclass
class Backend:
    """A codepipeline client and what a declaration needs to be accepted by it."""

    kind: str  # "local" or "aws"
    client: Any
    role_arn: str

    def declaration(self, name: str, **extra: Any) -> dict[str, Any]:
        """CodeCommit source + manual approval: valid for AWS and runnable by the engine."""
        declaration = pipeline(
            name,
            [
                ("Source", [source_action()]),
                ("Approve", [approval_action(configuration={"CustomData": "Ship it?"})]),
            ],
            **extra,
        )
        declaration["roleArn"] = self.role_arn
        return declaration

    def error_code(self, aws_code: str) -> str:
        """The code this backend raises where AWS raises ``aws_code``."""
        return MOTO_ERROR_CODES.get(aws_code, aws_code) if self.kind == "aws" else aws_code


BOTH_BACKENDS = pytest.mark.parametrize(
    ("backend_kind", "database_url"),
    [("local", "sqlite"), ("local", "postgresql"), ("aws", "sqlite")],
    ids=["local-sqlite", "local-postgresql", "aws-moto"],
    indirect=["database_url"],
)


@pytest.fixture
def client(
    backend_kind: str,
    database_url: str,
    tmp_path: Path,
    repos_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Backend]:
    """The embedded engine or boto3's client under moto, both made by ``make_client``.

    (The moto variant gets a throwaway SQLite ``database_url`` it never uses: the parameter is
    shared so that the local variants run on both databases and the moto one runs once.)
    """
    _isolate_aws_environment(monkeypatch, tmp_path)
    if backend_kind == "local":
        monkeypatch.setenv("PIPEBOT_BACKEND", "local")
        monkeypatch.setenv("DATABASE_URL", database_url)
        monkeypatch.setenv("PIPEBOT_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("PIPEBOT_REPOSITORIES_DIR", str(repos_dir))
        monkeypatch.setenv("PIPEBOT_ENGINE_POLL_SECONDS", "0.2")
        engine = make_client(Settings())
        assert isinstance(engine, LocalCodePipeline)
        try:
            yield Backend("local", engine, LOCAL_ROLE)
        finally:
            engine.close()
        return
    monkeypatch.setenv("PIPEBOT_BACKEND", "aws")
    with mock_aws():
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(
            RoleName="pipebot-codepipeline", AssumeRolePolicyDocument=TRUST_POLICY
        )
        aws = make_client(Settings())
        assert isinstance(aws, botocore.client.BaseClient)
        yield Backend("aws", aws, role["Role"]["Arn"])


def _body(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


def assert_contains(expected: Any, actual: Any, path: str = "pipeline") -> None:
    """Every key given in ``expected`` has the same value in ``actual`` (defaults may be added)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected a dict, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} is missing from {sorted(actual)}"
            assert_contains(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: expected a list, got {actual!r}"
        assert len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            assert_contains(want, got, f"{path}[{index}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def _error(call: Any, **params: Any) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call(**params)
    return caught.value


@BOTH_BACKENDS
def test_create_then_get_returns_the_declaration_at_version_1(client: Backend) -> None:
    declaration = client.declaration("contract-create")

    created = client.client.create_pipeline(pipeline=copy.deepcopy(declaration))
    assert_output_shape("CreatePipeline", created)
    assert created["pipeline"]["version"] == 1
    assert_contains(declaration, created["pipeline"])

    got = client.client.get_pipeline(name="contract-create")
    assert_output_shape("GetPipeline", got)
    assert got["pipeline"] == created["pipeline"]
    assert got["pipeline"]["version"] == 1
    assert_contains(declaration, got["pipeline"])
    metadata = got["metadata"]
    assert re.fullmatch(
        r"arn:aws:codepipeline:[^:]+:\d{12}:contract-create", metadata["pipelineArn"]
    )
    assert metadata["created"] <= metadata["updated"]


@BOTH_BACKENDS
def test_update_increments_the_version(client: Backend) -> None:
    client.client.create_pipeline(pipeline=client.declaration("contract-update"))
    current = client.client.get_pipeline(name="contract-update")["pipeline"]
    changed = copy.deepcopy(current)
    changed["stages"][1]["actions"][0]["configuration"]["CustomData"] = "Really ship it?"

    updated = client.client.update_pipeline(pipeline=changed)
    assert_output_shape("UpdatePipeline", updated)
    assert updated["pipeline"]["version"] == 2

    got = client.client.get_pipeline(name="contract-update")
    assert_output_shape("GetPipeline", got)
    assert got["pipeline"]["version"] == 2
    approval = got["pipeline"]["stages"][1]["actions"][0]
    assert approval["configuration"]["CustomData"] == "Really ship it?"

    again = client.client.update_pipeline(pipeline=got["pipeline"])
    assert again["pipeline"]["version"] == 3


@BOTH_BACKENDS
def test_list_pipelines_contains_the_pipeline_with_its_summary(client: Backend) -> None:
    client.client.create_pipeline(pipeline=client.declaration("contract-list-b"))
    client.client.create_pipeline(pipeline=client.declaration("contract-list-a"))
    current = client.client.get_pipeline(name="contract-list-a")["pipeline"]
    client.client.update_pipeline(pipeline=current)

    listed = client.client.list_pipelines()
    assert_output_shape("ListPipelines", listed)
    summaries = {s["name"]: s for s in listed["pipelines"]}
    assert set(summaries) == {"contract-list-a", "contract-list-b"}
    for name, version in (("contract-list-a", 2), ("contract-list-b", 1)):
        summary = summaries[name]
        assert summary["version"] == version
        assert summary["created"] <= summary["updated"]
        assert summary["created"].tzinfo is not None


@BOTH_BACKENDS
def test_get_of_a_missing_pipeline_is_pipeline_not_found(client: Backend) -> None:
    error = _error(client.client.get_pipeline, name="contract-missing")
    assert error.response["Error"]["Code"] == "PipelineNotFoundException"
    assert error.operation_name == "GetPipeline"
    assert "contract-missing" in error.response["Error"]["Message"]


@BOTH_BACKENDS
def test_creating_the_same_name_twice_is_name_in_use(client: Backend) -> None:
    client.client.create_pipeline(pipeline=client.declaration("contract-twice"))
    error = _error(client.client.create_pipeline, pipeline=client.declaration("contract-twice"))
    assert error.response["Error"]["Code"] == client.error_code("PipelineNameInUseException")
    assert error.operation_name == "CreatePipeline"
    assert client.client.get_pipeline(name="contract-twice")["pipeline"]["version"] == 1


@BOTH_BACKENDS
def test_delete_then_get_is_pipeline_not_found(client: Backend) -> None:
    client.client.create_pipeline(pipeline=client.declaration("contract-delete"))
    deleted = client.client.delete_pipeline(name="contract-delete")
    assert_output_shape("DeletePipeline", deleted)
    assert _body(deleted) == {}

    error = _error(client.client.get_pipeline, name="contract-delete")
    assert error.response["Error"]["Code"] == "PipelineNotFoundException"
    assert client.client.list_pipelines()["pipelines"] == []
    # Deleting what is not there is not an error on either side.
    assert _body(client.client.delete_pipeline(name="contract-delete")) == {}


@BOTH_BACKENDS
def test_started_execution_is_listed(client: Backend) -> None:
    client.client.create_pipeline(pipeline=client.declaration("contract-start"))
    started = client.client.start_pipeline_execution(name="contract-start")
    assert_output_shape("StartPipelineExecution", started)
    execution_id = started["pipelineExecutionId"]
    uuid.UUID(execution_id)

    listed = client.client.list_pipeline_executions(pipelineName="contract-start")
    assert_output_shape("ListPipelineExecutions", listed)
    summaries = {s["pipelineExecutionId"]: s for s in listed["pipelineExecutionSummaries"]}
    assert execution_id in summaries
    assert summaries[execution_id]["trigger"]["triggerType"] == "StartPipelineExecution"

    for call, params in (
        (client.client.start_pipeline_execution, {"name": "contract-nope"}),
        (client.client.list_pipeline_executions, {"pipelineName": "contract-nope"}),
    ):
        assert _error(call, **params).response["Error"]["Code"] == "PipelineNotFoundException"


@BOTH_BACKENDS
def test_invalid_parameters_are_rejected_before_any_call(client: Backend) -> None:
    """boto3 validates parameters client-side; the engine raises the same exception."""
    with pytest.raises(ParamValidationError):
        client.client.get_pipeline()
    with pytest.raises(ParamValidationError):
        client.client.get_pipeline(name="x", unknownParameter=1)
    with pytest.raises(ParamValidationError):
        client.client.list_pipelines(maxResults="ten")


# =========================================================================== make_client


def test_make_client_local_backend_returns_the_embedded_engine(
    tmp_path: Path, repos_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPEBOT_BACKEND", "local")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("PIPEBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PIPEBOT_REPOSITORIES_DIR", str(repos_dir))
    engine = make_client(Settings(), run_worker=False)
    try:
        assert isinstance(engine, LocalCodePipeline)
        assert engine.worker is None
        assert engine.list_pipelines()["pipelines"] == []
    finally:
        engine.close()


def test_make_client_aws_backend_returns_boto3_codepipeline_with_adaptive_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("PIPEBOT_BACKEND", "aws")
    aws = make_client(Settings())
    assert isinstance(aws, botocore.client.BaseClient)
    assert aws.meta.service_model.service_name == "codepipeline"
    assert aws.meta.region_name == REGION
    config: Any = aws.meta.config
    assert config.retries["mode"] == "adaptive"
    # botocore turns max_attempts (retries) into total_max_attempts (the first try included).
    assert config.retries["total_max_attempts"] > 1


# =========================================================================== Stubber replay


@dataclass
class Twin:
    """The embedded engine and a stubbed boto3 client answered with the engine's responses."""

    engine: Any
    aws: Any
    stubber: Stubber

    def operation(self, method: str) -> str:
        return str(self.aws.meta.method_to_api_mapping[method])

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Call the engine, then replay request and response through boto3; return the body."""
        response = getattr(self.engine, method)(**copy.deepcopy(params))
        operation = self.operation(method)
        assert_output_shape(operation, response)
        body = _body(response)
        # add_response validates ``body`` against the operation's output shape.
        self.stubber.add_response(method, copy.deepcopy(body), expected_params=params)
        # The boto3 client validates ``params`` against the operation's input shape.
        replayed = getattr(self.aws, method)(**copy.deepcopy(params))
        assert _body(replayed) == body
        return body

    def error(self, method: str, code: str, **params: Any) -> ClientError:
        """The engine raises ``code``, AWS declares it, and boto3 raises the same error for it."""
        operation = self.operation(method)
        declared = [
            shape.name
            for shape in self.aws.meta.service_model.operation_model(operation).error_shapes
        ]
        assert code in declared, f"{code} is not an error of {operation}: {declared}"
        with pytest.raises(ClientError) as engine_caught:
            getattr(self.engine, method)(**copy.deepcopy(params))
        engine_error = engine_caught.value
        assert engine_error.response["Error"]["Code"] == code, engine_error.response
        assert engine_error.operation_name == operation
        assert engine_error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        message = engine_error.response["Error"]["Message"]
        self.stubber.add_client_error(
            method,
            service_error_code=code,
            service_message=message,
            http_status_code=400,
            expected_params=params,
        )
        with pytest.raises(ClientError) as aws_caught:
            getattr(self.aws, method)(**copy.deepcopy(params))
        aws_error = aws_caught.value
        assert aws_error.response["Error"]["Code"] == code
        assert aws_error.operation_name == engine_error.operation_name
        assert str(aws_error) == str(engine_error)
        return engine_error


@pytest.fixture
def twin(engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Twin]:
    _isolate_aws_environment(monkeypatch, tmp_path)
    aws = boto3.session.Session(region_name=REGION).client("codepipeline")
    with Stubber(aws) as stubber:
        yield Twin(engine=engine, aws=aws, stubber=stubber)
        stubber.assert_no_pending_responses()


def _executions(twin: Twin, name: str) -> list[dict[str, Any]]:
    response = twin.engine.list_pipeline_executions(pipelineName=name)
    return list(response["pipelineExecutionSummaries"])


def _only_execution(twin: Twin, name: str) -> str:
    summaries = _executions(twin, name)
    assert len(summaries) == 1
    return str(summaries[0]["pipelineExecutionId"])


def _status(twin: Twin, name: str, execution_id: str) -> str:
    response = twin.engine.get_pipeline_execution(
        pipelineName=name, pipelineExecutionId=execution_id
    )
    return str(response["pipelineExecution"]["status"])


def _wait_status(twin: Twin, name: str, execution_id: str, status: str) -> None:
    wait_for(
        lambda: _status(twin, name, execution_id) == status,
        what=f"execution {execution_id} to be {status} (is {_status(twin, name, execution_id)})",
    )


def _stage(state: dict[str, Any], stage: str) -> dict[str, Any]:
    return next(s for s in state["stageStates"] if s["stageName"] == stage)


def _latest_action(twin: Twin, name: str, stage: str, action: str) -> dict[str, Any] | None:
    stage_state = _stage(twin.engine.get_pipeline_state(name=name), stage)
    action_state = next(a for a in stage_state["actionStates"] if a["actionName"] == action)
    latest: dict[str, Any] | None = action_state.get("latestExecution")
    return latest


def _approval_token(twin: Twin, name: str, stage: str = "Approve") -> str:
    def token() -> str | None:
        latest = _latest_action(twin, name, stage, "Approve")
        if latest and latest["status"] == "InProgress":
            return latest.get("token")
        return None

    return wait_for(token, what="the approval to wait with a token")


def test_approval_flow_replays_on_boto3(twin: Twin) -> None:
    name = "replay-approval"
    declaration = pipeline(
        name,
        [
            ("Source", [source_action()]),
            ("Approve", [approval_action(configuration={"CustomData": "Ship it?"})]),
            ("Deploy", [commands_action("Deploy", ["echo deployed"])]),
        ],
    )
    twin.call("create_pipeline", pipeline=declaration)
    execution_id = _only_execution(twin, name)
    token = _approval_token(twin, name)

    waiting = twin.call("get_pipeline_state", name=name)
    assert _stage(waiting, "Approve")["actionStates"][0]["latestExecution"]["token"] == token
    twin.call("get_pipeline_execution", pipelineName=name, pipelineExecutionId=execution_id)

    result = {"summary": "Looks good", "status": "Approved"}
    approve = {"pipelineName": name, "stageName": "Approve", "actionName": "Approve"}
    twin.error(
        "put_approval_result",
        "InvalidApprovalTokenException",
        **approve,
        result=result,
        token=str(uuid.uuid4()),
    )
    twin.error(
        "put_approval_result",
        "StageNotFoundException",
        **{**approve, "stageName": "Nope"},
        result=result,
        token=token,
    )
    twin.error(
        "put_approval_result",
        "ActionNotFoundException",
        **{**approve, "actionName": "Nope"},
        result=result,
        token=token,
    )
    twin.error(
        "put_approval_result",
        "PipelineNotFoundException",
        **{**approve, "pipelineName": "nope"},
        result=result,
        token=token,
    )

    approved = twin.call("put_approval_result", **approve, result=result, token=token)
    assert approved["approvedAt"].tzinfo is not None
    _wait_status(twin, name, execution_id, "Succeeded")

    done = twin.call("get_pipeline_state", name=name)
    assert all(s["latestExecution"]["status"] == "Succeeded" for s in done["stageStates"])
    detail = twin.call(
        "get_pipeline_execution", pipelineName=name, pipelineExecutionId=execution_id
    )
    assert detail["pipelineExecution"]["artifactRevisions"]
    actions = twin.call(
        "list_action_executions", pipelineName=name, filter={"pipelineExecutionId": execution_id}
    )
    assert {a["actionName"] for a in actions["actionExecutionDetails"]} == {
        "Source",
        "Approve",
        "Deploy",
    }
    twin.call("list_action_executions", pipelineName=name, maxResults=1)
    twin.call("list_pipeline_executions", pipelineName=name)
    twin.call("get_pipeline", name=name)
    twin.call("list_pipelines")


def test_transitions_replay_on_boto3(twin: Twin) -> None:
    name = "replay-transitions"
    declaration = pipeline(
        name,
        [
            ("Source", [source_action()]),
            ("Approve", [approval_action()]),
            ("Build", [commands_action("Build", ["echo built"])]),
        ],
    )
    twin.call("create_pipeline", pipeline=declaration)
    execution_id = _only_execution(twin, name)
    inbound = {"pipelineName": name, "stageName": "Build", "transitionType": "Inbound"}
    twin.call("disable_stage_transition", **inbound, reason="Frozen for release (QA)")
    twin.error(
        "disable_stage_transition",
        "StageNotFoundException",
        **{**inbound, "stageName": "Nope"},
        reason="Frozen",
    )
    twin.error(
        "disable_stage_transition",
        "ValidationException",
        **inbound,
        reason="no <html> & no commas, please",
    )
    twin.error(
        "enable_stage_transition",
        "PipelineNotFoundException",
        **{**inbound, "pipelineName": "nope"},
    )

    token = _approval_token(twin, name)
    twin.call(
        "put_approval_result",
        pipelineName=name,
        stageName="Approve",
        actionName="Approve",
        result={"summary": "ok", "status": "Approved"},
        token=token,
    )
    wait_for(
        lambda: "inboundExecution" in _stage(twin.engine.get_pipeline_state(name=name), "Build"),
        what="the execution to wait in front of Build",
    )
    held = twin.call("get_pipeline_state", name=name)
    build = _stage(held, "Build")
    assert build["inboundTransitionState"]["enabled"] is False
    assert build["inboundTransitionState"]["disabledReason"] == "Frozen for release (QA)"
    assert build["inboundExecution"]["pipelineExecutionId"] == execution_id

    # The outbound transition of Approve is the inbound transition of Build.
    twin.call(
        "enable_stage_transition", pipelineName=name, stageName="Approve", transitionType="Outbound"
    )
    _wait_status(twin, name, execution_id, "Succeeded")
    released = twin.call("get_pipeline_state", name=name)
    assert _stage(released, "Build")["inboundTransitionState"]["enabled"] is True


def test_stop_and_retry_replay_on_boto3(twin: Twin, tmp_path: Path) -> None:
    name = "replay-stop"
    marker = shlex.quote(str(tmp_path / "marker"))
    started = tmp_path / "started"
    build = commands_action(
        "Build",
        [
            f"touch {shlex.quote(str(started))}",
            f"if [ -f {marker} ]; then echo resumed; else sleep 60; fi",
        ],
    )
    twin.call(
        "create_pipeline",
        pipeline=pipeline(name, [("Source", [source_action()]), ("Build", [build])]),
    )
    execution_id = _only_execution(twin, name)
    wait_for(started.exists, what="the Build command to start")
    stop = {"pipelineName": name, "pipelineExecutionId": execution_id}

    stopping = twin.call("stop_pipeline_execution", **stop, abandon=False, reason="Hold on")
    assert stopping["pipelineExecutionId"] == execution_id
    assert _status(twin, name, execution_id) == "Stopping"
    twin.error("stop_pipeline_execution", "DuplicatedStopRequestException", **stop, abandon=False)
    twin.call("stop_pipeline_execution", **stop, abandon=True, reason="Abandon it")
    _wait_status(twin, name, execution_id, "Stopped")

    state = twin.call("get_pipeline_state", name=name)
    build_state = _stage(state, "Build")
    assert build_state["latestExecution"]["status"] == "Stopped"
    assert build_state["actionStates"][0]["latestExecution"]["status"] == "Abandoned"
    twin.call("get_pipeline_execution", **stop)
    twin.call(
        "list_action_executions", pipelineName=name, filter={"pipelineExecutionId": execution_id}
    )
    twin.call("list_pipeline_executions", pipelineName=name)
    twin.error("stop_pipeline_execution", "PipelineExecutionNotStoppableException", **stop)

    retry = {**stop, "retryMode": "FAILED_ACTIONS"}
    twin.error("retry_stage_execution", "StageNotRetryableException", **retry, stageName="Source")
    twin.error("retry_stage_execution", "StageNotFoundException", **retry, stageName="Nope")
    twin.error(
        "retry_stage_execution",
        "PipelineNotFoundException",
        **{**retry, "pipelineName": "nope"},
        stageName="Build",
    )
    (tmp_path / "marker").touch()
    retried = twin.call("retry_stage_execution", **retry, stageName="Build")
    assert retried["pipelineExecutionId"] == execution_id
    _wait_status(twin, name, execution_id, "Succeeded")

    after = twin.call("get_pipeline_state", name=name)
    assert _stage(after, "Build")["retryStageMetadata"]["manualStageRetryAttempt"] == 1
    history = twin.call(
        "list_action_executions", pipelineName=name, filter={"pipelineExecutionId": execution_id}
    )
    builds = [a["status"] for a in history["actionExecutionDetails"] if a["actionName"] == "Build"]
    assert sorted(builds) == ["Abandoned", "Succeeded"]


def test_retrying_an_older_execution_replays_not_latest(twin: Twin) -> None:
    name = "replay-not-latest"
    twin.call(
        "create_pipeline",
        pipeline=pipeline(
            name, [("Source", [source_action()]), ("Build", [commands_action("Build", ["exit 3"])])]
        ),
    )
    first = _only_execution(twin, name)
    _wait_status(twin, name, first, "Failed")
    second = twin.call("start_pipeline_execution", name=name)["pipelineExecutionId"]
    _wait_status(twin, name, second, "Failed")

    failed = twin.call("get_pipeline_execution", pipelineName=name, pipelineExecutionId=second)
    assert "Build" in failed["pipelineExecution"]["statusSummary"]
    twin.call("get_pipeline_state", name=name)
    twin.error(
        "retry_stage_execution",
        "NotLatestPipelineExecutionException",
        pipelineName=name,
        pipelineExecutionId=first,
        stageName="Build",
        retryMode="FAILED_ACTIONS",
    )
    retried = twin.call(
        "retry_stage_execution",
        pipelineName=name,
        pipelineExecutionId=second,
        stageName="Build",
        retryMode="ALL_ACTIONS",
    )
    assert retried["pipelineExecutionId"] == second
    _wait_status(twin, name, second, "Failed")


def test_missing_resources_replay_the_same_errors(twin: Twin) -> None:
    name = "replay-missing"
    declaration = pipeline(name, [("Source", [source_action()]), ("Approve", [approval_action()])])
    twin.call("create_pipeline", pipeline=declaration)
    nobody = str(uuid.uuid4())

    twin.error("create_pipeline", "PipelineNameInUseException", pipeline=declaration)
    twin.error("get_pipeline", "PipelineNotFoundException", name="nope")
    twin.error("get_pipeline", "PipelineVersionNotFoundException", name=name, version=7)
    twin.error("get_pipeline_state", "PipelineNotFoundException", name="nope")
    twin.error("start_pipeline_execution", "PipelineNotFoundException", name="nope")
    twin.error("list_pipeline_executions", "PipelineNotFoundException", pipelineName="nope")
    twin.error(
        "get_pipeline_execution",
        "PipelineNotFoundException",
        pipelineName="nope",
        pipelineExecutionId=nobody,
    )
    twin.error(
        "get_pipeline_execution",
        "PipelineExecutionNotFoundException",
        pipelineName=name,
        pipelineExecutionId=nobody,
    )
    twin.error("list_action_executions", "PipelineNotFoundException", pipelineName="nope")
    twin.error(
        "list_action_executions",
        "PipelineExecutionNotFoundException",
        pipelineName=name,
        filter={"pipelineExecutionId": nobody},
    )
    twin.error(
        "list_action_executions",
        "InvalidNextTokenException",
        pipelineName=name,
        nextToken="not-a-token",
    )
    twin.error(
        "stop_pipeline_execution",
        "PipelineNotFoundException",
        pipelineName="nope",
        pipelineExecutionId=nobody,
    )
    twin.error(
        "retry_stage_execution",
        "PipelineNotFoundException",
        pipelineName="nope",
        pipelineExecutionId=nobody,
        stageName="Approve",
        retryMode="FAILED_ACTIONS",
    )
    twin.error(
        "enable_stage_transition",
        "StageNotFoundException",
        pipelineName=name,
        stageName="Nope",
        transitionType="Inbound",
    )
    twin.error(
        "disable_stage_transition",
        "PipelineNotFoundException",
        pipelineName="nope",
        stageName="Approve",
        transitionType="Inbound",
        reason="x",
    )
    twin.call("delete_pipeline", name=name)
    twin.error("get_pipeline_state", "PipelineNotFoundException", name=name)


def test_engine_and_boto3_reject_the_same_invalid_parameters(twin: Twin) -> None:
    # A Stubber answers before parameters are validated, so boto3's side is an unstubbed
    # client; its endpoint refuses connections, should a request ever get that far.
    aws = boto3.session.Session(region_name=REGION).client(
        "codepipeline",
        endpoint_url="http://127.0.0.1:9",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1),
    )
    for method, params in (
        ("get_pipeline_state", {}),
        (
            "stop_pipeline_execution",
            {"pipelineName": "p", "pipelineExecutionId": "e", "abandon": "yes"},
        ),
        (
            "retry_stage_execution",
            {"pipelineName": "p", "pipelineExecutionId": "e", "stageName": "s"},
        ),
        (
            "put_approval_result",
            {
                "pipelineName": "p",
                "stageName": "s",
                "actionName": "a",
                "result": {"status": "Approved"},
                "token": "t",
            },
        ),
        ("list_action_executions", {"pipelineName": "p", "bogus": 1}),
    ):
        with pytest.raises(ParamValidationError):
            getattr(twin.engine, method)(**params)
        with pytest.raises(ParamValidationError):
            getattr(aws, method)(**params)


def test_rollback_and_automatic_retry_replay_on_boto3(twin: Twin, tmp_path: Path) -> None:
    """Issue 13: RollbackStage, automatic rollback and retry, through boto3's model."""
    name = "replay-rollback"
    bad = shlex.quote(str(tmp_path / "bad"))
    deploy = commands_action("Deploy", [f"test ! -f {bad}"])
    declaration = pipeline(name, [("Source", [source_action()]), ("Deploy", [deploy])])
    declaration["stages"][1]["onFailure"] = {
        "result": "RETRY",
        "retryConfiguration": {"retryMode": "FAILED_ACTIONS"},
    }
    twin.call("create_pipeline", pipeline=declaration)
    good = _only_execution(twin, name)
    _wait_status(twin, name, good, "Succeeded")

    (tmp_path / "bad").touch()
    failed = twin.call("start_pipeline_execution", name=name)["pipelineExecutionId"]
    _wait_status(twin, name, failed, "Failed")
    state = twin.call("get_pipeline_state", name=name)
    assert _stage(state, "Deploy")["retryStageMetadata"] == {
        "autoStageRetryAttempt": 1,
        "latestRetryTrigger": "AutomatedStageRetry",
    }
    target = {"pipelineName": name, "stageName": "Deploy"}
    twin.error(
        "rollback_stage",
        "UnableToRollbackStageException",
        **target,
        targetPipelineExecutionId=failed,
    )
    twin.error(
        "rollback_stage",
        "UnableToRollbackStageException",
        **{**target, "stageName": "Source"},
        targetPipelineExecutionId=good,
    )
    twin.error(
        "rollback_stage",
        "PipelineExecutionNotFoundException",
        **target,
        targetPipelineExecutionId=str(uuid.uuid4()),
    )
    (tmp_path / "bad").unlink()
    rollback = twin.call("rollback_stage", **target, targetPipelineExecutionId=good)
    rollback_id = rollback["pipelineExecutionId"]
    _wait_status(twin, name, rollback_id, "Succeeded")
    detail = twin.call("get_pipeline_execution", pipelineName=name, pipelineExecutionId=rollback_id)
    assert detail["pipelineExecution"]["executionType"] == "ROLLBACK"
    assert detail["pipelineExecution"]["trigger"]["triggerType"] == "ManualRollback"
    listed = twin.call("list_pipeline_executions", pipelineName=name)
    types = {
        s["pipelineExecutionId"]: s["executionType"] for s in listed["pipelineExecutionSummaries"]
    }
    assert types == {good: "STANDARD", failed: "STANDARD", rollback_id: "ROLLBACK"}
    after = twin.call("get_pipeline_state", name=name)
    assert _stage(after, "Deploy")["latestExecution"]["type"] == "ROLLBACK"
    twin.error(
        "rollback_stage",
        "UnableToRollbackStageException",
        **target,
        targetPipelineExecutionId=rollback_id,
    )


def test_stage_conditions_replay_on_boto3(twin: Twin) -> None:
    """Issue 13: a failed entry condition, its rule executions, the rule types, an override
    and the condition states, through boto3's model (requests and responses)."""
    name = "replay-conditions"
    declaration = pipeline(
        name,
        [
            ("Source", [source_action()]),
            ("Deploy", [commands_action("Deploy", ["true"])]),
        ],
        variables=[{"name": "ENV", "defaultValue": "prod"}],
    )
    declaration["stages"][1]["beforeEntry"] = {
        "conditions": [
            {
                "result": "FAIL",
                "rules": [
                    {
                        "name": "OnlyDev",
                        "ruleTypeId": {
                            "category": "Rule",
                            "owner": "AWS",
                            "provider": "VariableCheck",
                            "version": "1",
                        },
                        "configuration": {
                            "Variable": "#{variables.ENV}",
                            "Operator": "EQ",
                            "Value": "dev",
                        },
                    }
                ],
            }
        ]
    }
    twin.call("create_pipeline", pipeline=declaration)
    first = _only_execution(twin, name)
    _wait_status(twin, name, first, "Failed")
    state = twin.call("get_pipeline_state", name=name)
    entry = _stage(state, "Deploy")["beforeEntryConditionState"]
    assert entry["latestExecution"]["status"] == "Failed"
    assert entry["conditionStates"][0]["ruleStates"][0]["ruleName"] == "OnlyDev"
    rules = twin.call(
        "list_rule_executions", pipelineName=name, filter={"pipelineExecutionId": first}
    )
    (detail,) = rules["ruleExecutionDetails"]
    assert (detail["ruleName"], detail["status"]) == ("OnlyDev", "Failed")
    types = twin.call("list_rule_types")
    providers = {t["id"]["provider"] for t in types["ruleTypes"]}
    assert {"VariableCheck", "DeploymentWindow", "Commands"} <= providers
    override = {"pipelineName": name, "stageName": "Deploy", "pipelineExecutionId": first}
    twin.error(
        "override_stage_condition",
        "ConditionNotOverridableException",
        **override,
        conditionType="ON_SUCCESS",
    )
    twin.error(
        "override_stage_condition",
        "StageNotFoundException",
        **{**override, "stageName": "Nope"},
        conditionType="BEFORE_ENTRY",
    )
    twin.call("override_stage_condition", **override, conditionType="BEFORE_ENTRY")
    _wait_status(twin, name, first, "Succeeded")
    after = twin.call("get_pipeline_state", name=name)
    assert _stage(after, "Deploy")["beforeEntryConditionState"]["latestExecution"]["status"] == (
        "Overridden"
    )
