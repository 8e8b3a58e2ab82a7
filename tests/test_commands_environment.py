"""A Commands action sees CodeBuild's environment, as it does on AWS (issue 11, case 1).

AWS runs Compute/AWS/Commands actions on CodeBuild compute, so the commands see the variables of
"Environment variables in build environments" (CodeBuild user guide) and ``outputVariables`` may
name them: AWS's own example exports ``CODEBUILD_BUILD_ID``. Every test drives a real
``LocalCodePipeline`` (SQLite and PostgreSQL) through its public API; each command that shows a
variable prints ``NAME=<value>`` to the action's log, which ``seen`` reads back.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.engine.providers import commands as commands_provider
from tests.helpers import commands_action, git, pipeline, source_action, wait_for
from tests.shapecheck import assert_output_shape

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def show(*names: str) -> list[str]:
    """Commands printing ``NAME=<value>`` (``NAME=<unset>`` when absent) for each name."""
    return [f'echo "{name}=${{{name}-<unset>}}"' for name in names]


def seen(log: str, name: str) -> str:
    """The value a ``show(name)`` command printed in ``log``."""
    values = re.findall(rf"^{re.escape(name)}=(.*)$", log, flags=re.MULTILINE)
    assert len(values) == 1, f"{name} printed {len(values)} times in:\n{log}"
    return str(values[0])


class Run:
    """One pipeline on an engine: create, start, wait, and read its action executions."""

    def __init__(self, engine: Any, name: str = "env-pipeline") -> None:
        self.engine = engine
        self.name = name

    def create(self, *stages: tuple[str, list[dict[str, Any]]]) -> str:
        declaration = pipeline(self.name, [("Source", [source_action()]), *stages])
        assert_output_shape("CreatePipeline", self.engine.create_pipeline(pipeline=declaration))
        return str(self.executions()[0]["pipelineExecutionId"])

    def start(self) -> str:
        response = self.engine.start_pipeline_execution(name=self.name)
        return str(response["pipelineExecutionId"])

    def executions(self) -> list[dict[str, Any]]:
        response = self.engine.list_pipeline_executions(pipelineName=self.name)
        assert_output_shape("ListPipelineExecutions", response)
        return list(response["pipelineExecutionSummaries"])

    def status(self, execution_id: str) -> str:
        response = self.engine.get_pipeline_execution(
            pipelineName=self.name, pipelineExecutionId=execution_id
        )
        return str(response["pipelineExecution"]["status"])

    def wait(self, execution_id: str, status: str) -> None:
        wait_for(
            lambda: self.status(execution_id) in (status, "Failed", "Succeeded", "Stopped"),
            timeout=30,
            what=f"execution {execution_id} to finish",
        )
        if self.status(execution_id) != status:
            details = [
                (a["actionName"], a["status"], a["output"]["executionResult"])
                for a in self.runs(execution_id)
            ]
            raise AssertionError(f"{execution_id} is {self.status(execution_id)}: {details}")

    def runs(self, execution_id: str, action: str | None = None) -> list[dict[str, Any]]:
        """The execution's action executions (of ``action`` only, if given), oldest first."""
        response = self.engine.list_action_executions(
            pipelineName=self.name, filter={"pipelineExecutionId": execution_id}
        )
        assert_output_shape("ListActionExecutions", response)
        details = reversed(response["actionExecutionDetails"])
        return [a for a in details if action is None or a["actionName"] == action]

    def log(self, run: dict[str, Any]) -> str:
        return str(self.engine.get_action_log(actionExecutionId=run["actionExecutionId"]))


@pytest.fixture
def regional_engine(database_url: str, tmp_path: Path, repos_dir: Path) -> Iterator[Any]:
    """The ``engine`` fixture's engine, configured with a real AWS Region."""
    from bot.engine import LocalCodePipeline

    client = LocalCodePipeline(
        database_url=database_url,
        data_dir=tmp_path / "data",
        repositories_dir=repos_dir,
        poll_seconds=0.2,
        region="eu-west-1",
    )
    yield client
    client.close()


def test_output_variables_export_codebuilds_build_id(engine: Any) -> None:
    """AWS's own example: ``outputVariables: ["MY_OUTPUT", "CODEBUILD_BUILD_ID"]``."""
    run = Run(engine)
    build = commands_action(
        "Commands",
        ["export MY_OUTPUT=my-key", *show("CODEBUILD_BUILD_ID")],
        outputVariables=["MY_OUTPUT", "CODEBUILD_BUILD_ID"],
        namespace="BuildVariables",
    )
    # A later action reads the exported value through the namespace, as on AWS.
    deploy = commands_action("Deploy", ["echo deploying #{BuildVariables.CODEBUILD_BUILD_ID}"])
    first = run.create(("Build", [build]), ("Deploy", [deploy]))
    run.wait(first, "Succeeded")

    [built] = run.runs(first, "Commands")
    variables = built["output"]["outputVariables"]
    assert variables["MY_OUTPUT"] == "my-key"
    build_id = variables["CODEBUILD_BUILD_ID"]
    # <project-name>:<uuid>; the project is <pipeline>-<stage>-<action>, the uuid the run's ID.
    assert re.fullmatch(rf"[A-Za-z0-9][A-Za-z0-9_-]*:{UUID}", build_id), build_id
    assert build_id == f"env-pipeline-Build-Commands:{built['actionExecutionId']}"
    # The value exported is the one the commands saw.
    assert seen(run.log(built), "CODEBUILD_BUILD_ID") == build_id
    [deployed] = run.runs(first, "Deploy")
    assert f"deploying {build_id}" in run.log(deployed)


def test_resolved_source_version_is_the_commit_of_the_primary_input(
    engine: Any, repos_dir: Path
) -> None:
    run = Run(engine)
    names = ("CODEBUILD_RESOLVED_SOURCE_VERSION", "CODEBUILD_INITIATOR", "CODEBUILD_SRC_DIR")
    build = commands_action(
        "Build",
        [*show(*names), 'test "$PWD" = "$CODEBUILD_SRC_DIR"', "echo built > out.txt"],
        outputArtifacts=[{"name": "BuildOutput", "files": ["out.txt"]}],
    )
    # Its primary input was built by an action, not taken from a source: it has no revision.
    package = commands_action(
        "Package", show("CODEBUILD_RESOLVED_SOURCE_VERSION"), inputs=("BuildOutput",)
    )
    first = run.create(("Build", [build]), ("Package", [package]))
    run.wait(first, "Succeeded")

    commit = git(repos_dir / "app", "rev-parse", "HEAD")
    [source_revision] = run.executions()[0]["sourceRevisions"]
    assert source_revision["revisionId"] == commit
    log = run.log(run.runs(first, "Build")[0])
    assert seen(log, "CODEBUILD_RESOLVED_SOURCE_VERSION") == commit
    assert seen(log, "CODEBUILD_INITIATOR") == "codepipeline/env-pipeline"
    assert seen(run.log(run.runs(first, "Package")[0]), "CODEBUILD_RESOLVED_SOURCE_VERSION") == (
        "<unset>"
    )


def test_secondary_inputs_are_copies_named_by_artifact(engine: Any) -> None:
    run = Run(engine)
    build = commands_action(
        "Build",
        ["mkdir dist", "echo app > dist/app.bin"],
        outputArtifacts=[{"name": "Build-Output", "files": ["dist/**/*"]}],
    )
    deploy = commands_action(
        "Deploy",
        [
            *show("CODEBUILD_SRC_DIR_SourceArtifact", "CODEBUILD_SRC_DIR"),
            'cat "$CODEBUILD_SRC_DIR_SourceArtifact/app.txt"',
            # Writable, as in CodeBuild's container, without changing the stored artifact.
            'echo overwritten > "$CODEBUILD_SRC_DIR_SourceArtifact/app.txt"',
            "cat dist/app.bin",
        ],
        inputs=("Build-Output", "SourceArtifact"),
        outputArtifacts=[{"name": "Bundle", "files": ["**/*"]}],
    )
    check = commands_action("Check", ["cat app.txt", "test ! -e app.txt.orig"])
    bundle = commands_action("Bundle", ["find . -type f | sort"], inputs=("Bundle",))
    first = run.create(("Build", [build]), ("Deploy", [deploy]), ("Check", [check, bundle]))
    run.wait(first, "Succeeded")

    log = run.log(run.runs(first, "Deploy")[0])
    secondary = seen(log, "CODEBUILD_SRC_DIR_SourceArtifact")
    assert Path(secondary).name == "SourceArtifact"
    assert not Path(secondary).is_relative_to(seen(log, "CODEBUILD_SRC_DIR"))
    assert "v1" in log and "app" in log
    assert "v1" in run.log(run.runs(first, "Check")[0])  # the artifact was not overwritten
    # The secondary input is not part of the primary source, so "**/*" did not collect it.
    listed = run.log(run.runs(first, "Bundle")[0]).splitlines()
    assert "./dist/app.bin" in listed
    assert not any("app.txt" in line for line in listed if line.startswith("./"))


def test_build_number_counts_the_actions_builds_across_executions_and_retries(
    engine: Any, tmp_path: Path
) -> None:
    run = Run(engine)
    flag = shlex.quote(str(tmp_path / "let-it-pass"))
    flaky = commands_action("Flaky", [*show("CODEBUILD_BUILD_NUMBER"), f"test -f {flag}"])
    steady = commands_action("Steady", show("CODEBUILD_BUILD_NUMBER"))
    first = run.create(("Build", [flaky, steady]))
    run.wait(first, "Failed")

    (tmp_path / "let-it-pass").touch()
    engine.retry_stage_execution(
        pipelineName=run.name,
        stageName="Build",
        pipelineExecutionId=first,
        retryMode="FAILED_ACTIONS",
    )
    run.wait(first, "Succeeded")
    second = run.start()
    run.wait(second, "Succeeded")

    def numbers(action: str) -> list[str]:
        runs = run.runs(first, action) + run.runs(second, action)
        return [seen(run.log(r), "CODEBUILD_BUILD_NUMBER") for r in runs]

    assert numbers("Flaky") == ["1", "2", "3"]  # first attempt, its retry, the next execution
    assert numbers("Steady") == ["1", "2"]  # a project of its own, not retried


def test_region_arns_and_start_time(regional_engine: Any) -> None:
    run = Run(regional_engine)
    names = (
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "CODEBUILD_BUILD_ARN",
        "CODEBUILD_PROJECT_ARN",
        "CODEBUILD_BUILD_ID",
        "CODEBUILD_START_TIME",
        "CODEBUILD_BUILD_SUCCEEDING",
        "CODEBUILD_BUILD_IMAGE",
    )
    before_ms = time.time_ns() // 1_000_000
    first = run.create(("Build", [commands_action("Test", show(*names))]))
    run.wait(first, "Succeeded")
    after_ms = time.time_ns() // 1_000_000

    log = run.log(run.runs(first, "Test")[0])
    assert seen(log, "AWS_REGION") == seen(log, "AWS_DEFAULT_REGION") == "eu-west-1"
    build_id = seen(log, "CODEBUILD_BUILD_ID")
    assert seen(log, "CODEBUILD_BUILD_ARN") == (
        f"arn:aws:codebuild:eu-west-1:000000000000:build/{build_id}"
    )
    assert seen(log, "CODEBUILD_PROJECT_ARN") == (
        "arn:aws:codebuild:eu-west-1:000000000000:project/env-pipeline-Build-Test"
    )
    assert before_ms <= int(seen(log, "CODEBUILD_START_TIME")) <= after_ms
    assert seen(log, "CODEBUILD_BUILD_SUCCEEDING") == "1"
    assert seen(log, "CODEBUILD_BUILD_IMAGE") == commands_provider.LOCAL_BUILD_IMAGE
    pipeline_arn = regional_engine.get_pipeline(name=run.name)["metadata"]["pipelineArn"]
    assert pipeline_arn.startswith("arn:aws:codepipeline:eu-west-1:000000000000:")


def test_without_a_region_arns_say_local_and_aws_region_is_the_hosts(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "host-region")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    run = Run(engine)
    names = ("AWS_REGION", "AWS_DEFAULT_REGION", "CODEBUILD_BUILD_ARN")
    first = run.create(("Build", [commands_action("Test", show(*names))]))
    run.wait(first, "Succeeded")

    log = run.log(run.runs(first, "Test")[0])
    assert seen(log, "CODEBUILD_BUILD_ARN").startswith("arn:aws:codebuild:local:000000000000:")
    assert seen(log, "AWS_REGION") == "host-region"
    assert seen(log, "AWS_DEFAULT_REGION") == "<unset>"


def test_declared_variables_replace_the_images_but_not_codebuilds(regional_engine: Any) -> None:
    run = Run(regional_engine)
    build = commands_action(
        "Build",
        show("AWS_REGION", "CODEBUILD_BUILD_ID", "GREETING"),
        environmentVariables=[
            {"name": "AWS_REGION", "value": "us-west-2"},
            {"name": "CODEBUILD_BUILD_ID", "value": "mine"},
            {"name": "GREETING", "value": "#{codepipeline.PipelineExecutionId}"},
        ],
        outputVariables=["CODEBUILD_BUILD_ID"],
    )
    first = run.create(("Build", [build]))
    run.wait(first, "Succeeded")

    [built] = run.runs(first, "Build")
    log = run.log(built)
    assert seen(log, "AWS_REGION") == "us-west-2"
    assert seen(log, "GREETING") == first
    assert (
        seen(log, "CODEBUILD_BUILD_ID") == built["output"]["outputVariables"]["CODEBUILD_BUILD_ID"]
    )
    assert seen(log, "CODEBUILD_BUILD_ID").endswith(f":{built['actionExecutionId']}")
    assert "[Container] Ignoring environment variable CODEBUILD_BUILD_ID" in log


def test_commands_fail_when_the_build_times_out(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 55 minutes on AWS; a second here, read by the worker when the action starts.
    monkeypatch.setattr(commands_provider, "BUILD_TIMEOUT_SECONDS", 1)
    run = Run(engine)
    first = run.create(("Build", [commands_action("Slow", ["echo started", "sleep 60"])]))
    started = time.monotonic()
    run.wait(first, "Failed")
    assert time.monotonic() - started < 20

    [slow] = run.runs(first, "Slow")
    summary = slow["output"]["executionResult"]["externalExecutionSummary"]
    assert summary.startswith("Commands timed out after 1 second (the Commands build timeout).")
    assert "started" in summary


def test_pipebots_own_secrets_never_reach_the_commands(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CodeBuild container never has the bot's Slack tokens or its database URL; locally an
    ``env`` in a command would print them into a log that Slack shows."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-never-in-a-log")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "signing-never-in-a-log")
    monkeypatch.setenv("PIPEBOT_HARMLESS", "kept")
    run = Run(engine)
    execution = run.create(("Build", [commands_action("Env", ["env"])]))
    run.wait(execution, "Succeeded")
    log = run.log(run.runs(execution, "Env")[-1])
    assert "never-in-a-log" not in log
    assert "PIPEBOT_HARMLESS=kept" in log


def test_every_secret_setting_is_kept_from_the_commands() -> None:
    from bot.settings import Settings

    secret = {
        str(field.alias)
        for field in Settings.model_fields.values()
        if "SecretStr" in str(field.annotation) and not str(field.alias).startswith("AWS_")
    }
    assert secret | {"DATABASE_URL"} <= commands_provider.PIPEBOT_SECRETS
