"""Rollback (manual and automatic) and automatic stage retry on the embedded engine.

The rules are ../shared/docs/codepipeline-v2.md's "Rollback" and "Automatic retry" sections,
from AWS's pages: stage-rollback.html, stage-rollback-auto.html, stage-retry.html and the API
reference (API_RollbackStage, API_RetryStageMetadata, API_PipelineExecution). Each test runs
on SQLite and PostgreSQL (the ``engine`` fixture) through the public API only, every response
checked against botocore's output shape.

The pipeline: Source (the ``app`` repository) -> Build (copies ``app.txt`` into its output
artifact and exports it as a variable) -> Deploy (records, per execution, what it deployed:
the artifact's content and the variable, in ``<gates>/deployed-<execution>``). A Deploy that
finds ``bad`` in the artifact fails.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.helpers import commands_action, commit, source_action, wait_for
from tests.shapecheck import assert_output_shape

NAME = "rollback-pipeline"
EXEC = "#{codepipeline.PipelineExecutionId}"


@contextmanager
def raises(code: str) -> Iterator[pytest.ExceptionInfo[ClientError]]:
    with pytest.raises(ClientError) as info:
        yield info
    assert info.value.response["Error"]["Code"] == code, info.value.response["Error"]


class Pipe:
    """One pipeline on the engine, every response checked against botocore's shapes."""

    def __init__(self, engine: Any, gates: Path, repo: Path) -> None:
        self.engine = engine
        self.gates = gates
        self.repo = repo
        gates.mkdir(parents=True, exist_ok=True)

    def declaration(
        self,
        *,
        deploy_on_failure: dict[str, Any] | None = None,
        mode: str | None = None,
        extra_stage: bool = False,
    ) -> dict[str, Any]:
        deployed = shlex.quote(str(self.gates / f"deployed-{EXEC}"))
        runs = shlex.quote(str(self.gates / f"runs-{EXEC}"))
        hold = shlex.quote(str(self.gates / "hold"))
        go = shlex.quote(str(self.gates / f"go-{EXEC}"))
        build = commands_action(
            "Build",
            [
                "mkdir -p out",
                "cp app.txt out/app.txt",
                'export APP_VERSION="$(cat app.txt)"',
            ],
            outputArtifacts=[{"name": "BuildArtifact", "files": ["out/**/*"]}],
            outputVariables=["APP_VERSION"],
            namespace="BuildVariables",
        )
        deploy = commands_action(
            "Deploy",
            [
                f"echo run >> {runs}",
                # Held while <gates>/hold exists, until the test opens this execution's gate.
                f"if [ -f {hold} ]; then while [ ! -f {go} ]; do sleep 0.05; done; fi",
                f'echo "$(cat out/app.txt) #{{BuildVariables.APP_VERSION}}" > {deployed}',
                "! grep -q bad out/app.txt",
            ],
            inputs=("BuildArtifact",),
        )
        deploy_stage: dict[str, Any] = {"name": "Deploy", "actions": [deploy]}
        if deploy_on_failure is not None:
            deploy_stage["onFailure"] = deploy_on_failure
        stages = [
            {"name": "Source", "actions": [source_action()]},
            {"name": "Build", "actions": [build]},
            deploy_stage,
        ]
        if extra_stage:
            stages.append({"name": "Check", "actions": [commands_action("Check", ["true"])]})
        declaration: dict[str, Any] = {
            "name": NAME,
            "roleArn": "arn:aws:iam::000000000000:role/pipebot",
            "pipelineType": "V2",
            "stages": stages,
        }
        if mode:
            declaration["executionMode"] = mode
        return declaration

    def create(self, **options: Any) -> str:
        response = self.engine.create_pipeline(pipeline=self.declaration(**options))
        assert_output_shape("CreatePipeline", response)
        return str(self.executions()[0]["pipelineExecutionId"])

    def executions(self) -> list[dict[str, Any]]:
        response = self.engine.list_pipeline_executions(pipelineName=NAME)
        assert_output_shape("ListPipelineExecutions", response)
        return list(response["pipelineExecutionSummaries"])

    def execution(self, execution_id: str) -> dict[str, Any]:
        response = self.engine.get_pipeline_execution(
            pipelineName=NAME, pipelineExecutionId=execution_id
        )
        assert_output_shape("GetPipelineExecution", response)
        return dict(response["pipelineExecution"])

    def wait(self, execution_id: str, status: str) -> dict[str, Any]:
        return wait_for(
            lambda: (e := self.execution(execution_id))["status"] == status and e,
            timeout=30,
            what=f"execution {execution_id} to be {status}",
        )

    def start(self) -> str:
        response = self.engine.start_pipeline_execution(name=NAME)
        assert_output_shape("StartPipelineExecution", response)
        return str(response["pipelineExecutionId"])

    def rollback(self, stage: str, target: str) -> str:
        response = self.engine.rollback_stage(
            pipelineName=NAME, stageName=stage, targetPipelineExecutionId=target
        )
        assert_output_shape("RollbackStage", response)
        return str(response["pipelineExecutionId"])

    def stage(self, name: str) -> dict[str, Any]:
        response = self.engine.get_pipeline_state(name=NAME)
        assert_output_shape("GetPipelineState", response)
        return next(s for s in response["stageStates"] if s["stageName"] == name)

    def actions(self, execution_id: str) -> list[dict[str, Any]]:
        response = self.engine.list_action_executions(
            pipelineName=NAME, filter={"pipelineExecutionId": execution_id}
        )
        assert_output_shape("ListActionExecutions", response)
        return list(response["actionExecutionDetails"])

    def deployed(self, execution_id: str) -> str:
        return (self.gates / f"deployed-{execution_id}").read_text().strip()

    def runs(self, execution_id: str) -> int:
        path = self.gates / f"runs-{execution_id}"
        return len(path.read_text().split()) if path.exists() else 0

    def push(self, content: str) -> str:
        return commit(self.repo, {"app.txt": content + "\n"}, f"app {content}")


@pytest.fixture
def p(engine: Any, tmp_path: Path, repos_dir: Path) -> Pipe:
    return Pipe(engine, tmp_path / "gates", repos_dir / "app")


# --------------------------------------------------------------------------- manual rollback


def test_rollback_runs_the_stage_again_with_the_targets_revision_variables_and_artifacts(
    p: Pipe,
) -> None:
    first = p.create(extra_stage=True)
    p.wait(first, "Succeeded")
    first_revision = p.execution(first)["artifactRevisions"][0]["revisionId"]
    p.push("v2")
    second = p.start()
    p.wait(second, "Succeeded")
    assert p.deployed(second) == "v2 v2"

    rollback = p.rollback("Deploy", first)

    detail = p.wait(rollback, "Succeeded")
    assert detail["executionType"] == "ROLLBACK"
    assert detail["rollbackMetadata"] == {"rollbackTargetPipelineExecutionId": first}
    assert detail["trigger"]["triggerType"] == "ManualRollback"
    assert detail["artifactRevisions"][0]["revisionId"] == first_revision
    # The target's artifact and the target's Build variable, though Build did not run again.
    assert p.deployed(rollback) == "v1 v1"
    ran = {(a["stageName"], a["actionName"]) for a in p.actions(rollback)}
    assert ran == {("Deploy", "Deploy")}  # that stage alone: not Build, not Check after it
    summaries = {s["pipelineExecutionId"]: s for s in p.executions()}
    assert summaries[rollback]["executionType"] == "ROLLBACK"
    assert summaries[rollback]["rollbackMetadata"]["rollbackTargetPipelineExecutionId"] == first
    assert summaries[second]["executionType"] == "STANDARD"
    assert "rollbackMetadata" not in summaries[second]
    latest = p.stage("Deploy")["latestExecution"]
    assert latest == {"pipelineExecutionId": rollback, "status": "Succeeded", "type": "ROLLBACK"}
    assert p.stage("Check")["latestExecution"]["pipelineExecutionId"] == second


def test_rollback_refusals_carry_aws_codes(p: Pipe, engine: Any) -> None:
    first = p.create()
    p.wait(first, "Succeeded")
    p.push("bad")
    failed = p.start()
    p.wait(failed, "Failed")
    with raises("UnableToRollbackStageException") as source:
        p.rollback("Source", first)
    assert "source stage" in source.value.response["Error"]["Message"]
    with raises("UnableToRollbackStageException") as not_succeeded:
        p.rollback("Deploy", failed)
    assert "did not succeed" in not_succeeded.value.response["Error"]["Message"]
    with raises("StageNotFoundException"):
        p.rollback("Nowhere", first)
    with raises("PipelineExecutionNotFoundException"):
        p.rollback("Deploy", "00000000-0000-4000-8000-000000000000")
    with raises("PipelineNotFoundException"):
        engine.rollback_stage(
            pipelineName="missing", stageName="Deploy", targetPipelineExecutionId=first
        )
    with raises("ValidationException"):  # the model's pattern for an execution ID
        p.rollback("Deploy", "not-an-execution-id")

    rollback = p.rollback("Deploy", first)
    p.wait(rollback, "Succeeded")
    with raises("UnableToRollbackStageException") as to_rollback:
        p.rollback("Deploy", rollback)
    assert "rollback execution" in to_rollback.value.response["Error"]["Message"]

    response = engine.update_pipeline(pipeline=p.declaration(extra_stage=True))
    assert_output_shape("UpdatePipeline", response)
    with raises("PipelineExecutionOutdatedException"):
        p.rollback("Deploy", first)


def test_a_second_rollback_of_a_stage_being_rolled_back_is_a_conflict(p: Pipe) -> None:
    first = p.create()
    p.wait(first, "Succeeded")
    second = p.start()
    p.wait(second, "Succeeded")
    (p.gates / "hold").touch()  # the rollback's Deploy waits for its gate
    rollback = p.rollback("Deploy", first)
    wait_for(lambda: p.runs(rollback) == 1, timeout=30, what="the rollback's Deploy to run")
    with raises("ConflictException") as info:
        p.rollback("Deploy", second)
    assert rollback in info.value.response["Error"]["Message"]
    (p.gates / f"go-{rollback}").touch()
    p.wait(rollback, "Succeeded")
    (p.gates / "hold").unlink()
    again = p.rollback("Deploy", second)
    p.wait(again, "Succeeded")
    assert p.deployed(again) == "v1 v1"


def test_parallel_pipelines_cannot_roll_back(p: Pipe) -> None:
    first = p.create(mode="PARALLEL")
    p.wait(first, "Succeeded")
    with raises("UnableToRollbackStageException") as info:
        p.rollback("Deploy", first)
    assert "PARALLEL" in info.value.response["Error"]["Message"]


# --------------------------------------------------------------------------- automatic rollback


def test_a_failed_stage_rolls_back_automatically_to_its_latest_success(p: Pipe) -> None:
    first = p.create(deploy_on_failure={"result": "ROLLBACK"})
    p.wait(first, "Succeeded")
    p.push("v2")
    second = p.start()
    p.wait(second, "Succeeded")
    p.push("bad")
    failed = p.start()
    p.wait(failed, "Failed")

    rollback = wait_for(
        lambda: next((e for e in p.executions() if e["executionType"] == "ROLLBACK"), None),
        timeout=30,
        what="the automatic rollback",
    )
    detail = p.wait(rollback["pipelineExecutionId"], "Succeeded")
    assert detail["trigger"] == {"triggerType": "AutomatedRollback", "triggerDetail": failed}
    # The most recent success in the stage, not the first one.
    assert detail["rollbackMetadata"] == {"rollbackTargetPipelineExecutionId": second}
    assert p.deployed(rollback["pipelineExecutionId"]) == "v2 v2"


def test_no_automatic_rollback_without_an_earlier_success(p: Pipe) -> None:
    p.push("bad")
    first = p.create(deploy_on_failure={"result": "ROLLBACK"})
    detail = p.wait(first, "Failed")
    assert "Not rolled back" in detail["statusSummary"]
    assert [e["executionType"] for e in p.executions()] == ["STANDARD"]


# --------------------------------------------------------------------------- automatic retry


def test_a_failed_stage_is_retried_once_automatically(p: Pipe, engine: Any) -> None:
    p.push("bad")
    retry = {"result": "RETRY", "retryConfiguration": {"retryMode": "FAILED_ACTIONS"}}
    first = p.create(deploy_on_failure=retry)
    p.wait(first, "Failed")
    assert p.runs(first) == 2  # the failure, then one automatic retry, then no more
    deploy = p.stage("Deploy")
    assert deploy["retryStageMetadata"] == {  # no manual retry yet: its count is left out
        "autoStageRetryAttempt": 1,
        "latestRetryTrigger": "AutomatedStageRetry",
    }
    response = engine.retry_stage_execution(
        pipelineName=NAME, stageName="Deploy", pipelineExecutionId=first, retryMode="ALL_ACTIONS"
    )
    assert_output_shape("RetryStageExecution", response)
    p.wait(first, "Failed")
    assert p.runs(first) == 3  # a manual retry after the automatic one: no second automatic one
    assert p.stage("Deploy")["retryStageMetadata"] == {
        "autoStageRetryAttempt": 1,
        "manualStageRetryAttempt": 1,
        "latestRetryTrigger": "ManualStageRetry",
    }


def test_an_automatic_retry_that_succeeds_lets_the_execution_go_on(p: Pipe, tmp_path: Path) -> None:
    flaky = tmp_path / "flaky"
    declaration = p.declaration(
        deploy_on_failure={"result": "RETRY", "retryConfiguration": {"retryMode": "ALL_ACTIONS"}}
    )
    deploy = declaration["stages"][2]["actions"][0]
    # Fails the first time it runs, succeeds after.
    quoted = shlex.quote(str(flaky))
    deploy["commands"] = [f"if [ ! -f {quoted} ]; then touch {quoted}; exit 1; fi"]
    response = p.engine.create_pipeline(pipeline=declaration)
    assert_output_shape("CreatePipeline", response)
    first = p.executions()[0]["pipelineExecutionId"]
    p.wait(first, "Succeeded")
    runs = [a for a in p.actions(first) if a["actionName"] == "Deploy"]
    assert sorted(a["status"] for a in runs) == ["Failed", "Succeeded"]
    assert p.stage("Deploy")["retryStageMetadata"]["latestRetryTrigger"] == "AutomatedStageRetry"


# --------------------------------------------------------------------------- durability


def test_a_rollback_waiting_for_its_stage_survives_a_restart(
    p: Pipe, engine: Any, database_url: str, tmp_path: Path, repos_dir: Path
) -> None:
    from bot.engine import LocalCodePipeline

    first = p.create()
    p.wait(first, "Succeeded")
    (p.gates / "hold").touch()
    p.push("v2")
    second = p.start()
    wait_for(lambda: p.runs(second) == 1, timeout=30, what="the second Deploy to run")
    rollback = p.rollback("Deploy", first)
    assert p.stage("Deploy")["inboundExecutions"] == [
        {"pipelineExecutionId": rollback, "status": "InProgress", "type": "ROLLBACK"}
    ]
    engine.close()
    (p.gates / "hold").unlink()
    (p.gates / f"go-{second}").touch()
    with LocalCodePipeline(
        database_url=database_url,
        data_dir=tmp_path / "data",
        repositories_dir=repos_dir,
        poll_seconds=0.2,
    ) as reopened:
        p.engine = reopened
        detail = p.wait(rollback, "Succeeded")
        assert detail["executionType"] == "ROLLBACK"
        assert detail["rollbackMetadata"] == {"rollbackTargetPipelineExecutionId": first}
        assert p.deployed(rollback) == "v1 v1"
