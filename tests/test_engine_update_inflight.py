"""UpdatePipeline while executions run (issue 11, case 5): no execution of an earlier version is
left unanswerable, invisible or holding a stage.

AWS's rule, from the user guide's "Edit a pipeline in CodePipeline"
(https://docs.aws.amazon.com/codepipeline/latest/userguide/pipelines-edit.html): "When you update
a pipeline, CodePipeline gracefully completes all the running actions and then fails the stages
and pipeline executions where the running actions were completed." An execution with nothing
running (waiting in front of a stage, or waiting only for a manual approval) is ``Cancelled``, the
status the API reference gives an execution whose "pipeline's definition was updated before the
pipeline execution could be completed"
(https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_PipelineExecution.html); its
waiting approval is abandoned at once instead of holding the stage until its 7-day timeout. A
stage of an earlier version cannot be retried: "you may not be able to retry actions [when] the
overall pipeline structure changed after an action failed"
(https://docs.aws.amazon.com/codepipeline/latest/userguide/actions-retry.html).

Each test drives a real ``LocalCodePipeline`` (SQLite and PostgreSQL) through its public API, every
response checked against botocore's output shapes (``Driver``, shared with the semantics tests).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import approval_action, commands_action, pipeline, source_action, wait_for
from tests.shapecheck import assert_output_shape
from tests.test_engine_durability import (
    Place,
    crash,
    engine_process,
    engines,
    kill_group_quietly,
    only_execution,
    status,
    wait_status,
)
from tests.test_engine_semantics import Driver, Stages, raises, source_and


@pytest.fixture
def d(engine: Any, tmp_path: Path) -> Driver:
    return Driver(engine, tmp_path / "gates")


def gate_pipeline(action: str) -> Stages:
    """Source, then stage ``Gate`` holding the manual approval ``action``, then ``Deploy``."""
    return source_and(
        ("Gate", [approval_action(action, configuration={"CustomData": "Ship it?"})]),
        ("Deploy", [commands_action("Deploy", ["echo deployed"])]),
    )


def waiting_token(d: Driver, stage: str, action: str) -> str:
    def token() -> str | None:
        latest = d.action_state(stage, action).get("latestExecution", {})
        return latest.get("token") if latest.get("status") == "InProgress" else None

    return wait_for(token, what=f"{stage}.{action} to wait with a token")


def action_names(d: Driver, stage: str) -> list[str]:
    return [a["actionName"] for a in d.stage(stage)["actionStates"]]


# --------------------------------------------------------------------------- the reported case


def test_an_approval_waiting_when_an_update_renames_it_ends_at_once_and_stays_visible(
    d: Driver,
) -> None:
    first = d.create(gate_pipeline("Approve"))
    old_token = waiting_token(d, "Gate", "Approve")

    d.update(gate_pipeline("Approve2"))

    # Nothing was running but the approval: the update cancels the execution in its own call,
    # no worker pass and no 7-day timeout needed.
    execution = d.execution(first)
    assert execution["status"] == "Cancelled"
    assert execution["pipelineVersion"] == 1
    assert "definition was updated to version 2" in execution["statusSummary"]
    gate = d.stage("Gate")
    assert gate["latestExecution"]["pipelineExecutionId"] == first
    assert gate["latestExecution"]["status"] == "Cancelled"
    # The latest declaration's action first, then the one this execution ran, under its own name.
    assert action_names(d, "Gate") == ["Approve2", "Approve"]
    assert "latestExecution" not in d.action_state("Gate", "Approve2")
    old = d.action_state("Gate", "Approve")["latestExecution"]
    assert old["status"] == "Abandoned"
    assert "token" not in old
    assert "updated to version 2" in old["errorDetails"]["message"]
    (history,) = d.runs(first, "Gate", "Approve")
    assert history["status"] == "Abandoned"
    assert history["pipelineVersion"] == 1

    # Answered for what it is under its own names, never ActionNotFoundException.
    with raises("InvalidApprovalTokenException") as info:
        d.answer("Gate", "Approve", old_token)
    message = info.value.response["Error"]["Message"]
    assert "no longer valid" in message and "updated to version 2" in message
    with raises("InvalidApprovalTokenException"):
        d.answer("Gate", "Approve2", old_token)
    with raises("ActionNotFoundException"):
        d.answer("Gate", "Nope", old_token)
    with raises("StageNotFoundException"):
        d.answer("Nope", "Approve", old_token)
    with raises("StageNotRetryableException") as refused:
        d.retry(first, "Gate")
    assert "version 2" in refused.value.response["Error"]["Message"]

    # The stage is free: the next execution runs version 2 and waits at the renamed approval.
    second = d.start()
    new_token = waiting_token(d, "Gate", "Approve2")
    assert new_token != old_token
    assert d.stage("Gate")["latestExecution"]["pipelineExecutionId"] == second
    assert action_names(d, "Gate") == ["Approve2"]  # version 2 only, now that it is the latest
    d.answer("Gate", "Approve2", new_token)
    d.wait_status(second, "Succeeded")
    assert d.execution(second)["pipelineVersion"] == 2
    assert d.status(first) == "Cancelled"


# --------------------------------------------------------------------------- running actions


def test_a_running_action_in_a_stage_the_update_removes_is_shown_then_fails_its_execution(
    d: Driver,
) -> None:
    first = d.create(
        source_and(
            ("Build", [d.held_build()]),
            ("Deploy", [commands_action("Deploy", ["echo v1"])]),
        )
    )
    d.wait_seen(f"started-{first}")
    d.update(source_and(("Ship", [commands_action("Ship", ["echo v2"])])))

    # Version 2 has no Build stage, but the execution still running there stays visible after
    # the declared stages, with its own action.
    assert d.status(first) == "InProgress"
    state = d.state()
    assert [s["stageName"] for s in state["stageStates"]] == ["Source", "Ship", "Build"]
    build = d.stage("Build")
    assert build["latestExecution"] == {
        "pipelineExecutionId": first,
        "status": "InProgress",
        "type": "STANDARD",
    }
    assert [a["actionName"] for a in build["actionStates"]] == ["Build"]
    assert build["actionStates"][0]["latestExecution"]["status"] == "InProgress"
    (running,) = d.runs(first, "Build", "Build")
    assert running["status"] == "InProgress" and running["pipelineVersion"] == 1

    d.open(f"go-{first}")
    d.wait_status(first, "Failed")
    summary = d.execution(first)["statusSummary"]
    assert 'Stage "Build" failed' in summary and "updated to version 2" in summary
    assert d.runs(first, "Build", "Build")[0]["status"] == "Succeeded"  # it was let finish
    assert d.runs(first, "Deploy", "Deploy") == []  # the next stage of version 1 never starts
    assert [s["stageName"] for s in d.state()["stageStates"]] == ["Source", "Ship"]

    second = d.start()
    d.wait_status(second, "Succeeded")
    assert [a["stageName"] for a in d.actions(second)] == ["Ship", "Source"]


def test_a_running_action_renamed_by_the_update_is_shown_under_its_own_name(d: Driver) -> None:
    first = d.create(source_and(("Build", [d.held_build("Build")])))
    d.wait_seen(f"started-{first}")
    d.update(source_and(("Build", [commands_action("Compile", ["echo v2"])])))

    assert action_names(d, "Build") == ["Compile", "Build"]
    assert "latestExecution" not in d.action_state("Build", "Compile")
    assert d.action_state("Build", "Build")["latestExecution"]["status"] == "InProgress"

    d.open(f"go-{first}")
    d.wait_status(first, "Failed")
    assert d.stage("Build")["latestExecution"]["status"] == "Failed"
    # Still the stage's latest execution: what it ran stays listed with its result.
    assert d.action_state("Build", "Build")["latestExecution"]["status"] == "Succeeded"
    with raises("StageNotRetryableException"):
        d.retry(first, "Build")


def test_an_execution_waiting_in_front_of_a_stage_is_cancelled_by_the_update(d: Driver) -> None:
    first = d.create(source_and(("Build", [d.held_build()])))
    d.wait_seen(f"started-{first}")
    second = d.start()
    wait_for(lambda: d.inbound("Build") == [second], what="the second execution to wait")

    d.update(source_and(("Build", [d.held_build()]), ("Test", [commands_action("Test", ["true"])])))

    execution = d.execution(second)
    assert execution["status"] == "Cancelled"
    assert "before this execution of version 1 could be completed" in execution["statusSummary"]
    assert d.inbound("Build") == []
    assert d.status(first) == "InProgress"  # its running Build completes first

    third = d.start()
    wait_for(lambda: d.inbound("Build") == [third], what="the new execution to wait")
    d.open(f"go-{first}")
    d.wait_status(first, "Failed")
    d.wait_seen(f"started-{third}")  # the lock the old execution held is released
    d.open(f"go-{third}")
    d.wait_status(third, "Succeeded")
    assert [r["status"] for r in d.runs(third, "Test", "Test")] == ["Succeeded"]


def test_a_stop_asked_before_the_running_action_completes_still_ends_stopped(d: Driver) -> None:
    first = d.create(source_and(("Build", [d.held_build()])))
    d.wait_seen(f"started-{first}")
    d.update(source_and(("Build", [commands_action("Build", ["true"])])))
    d.stop(first, reason="Not this one")
    assert d.status(first) == "Stopping"

    d.open(f"go-{first}")
    d.wait_status(first, "Stopped")
    assert d.runs(first, "Build", "Build")[0]["status"] == "Succeeded"
    with raises("StageNotRetryableException"):
        d.retry(first, "Build")


# --------------------------------------------------------------------------- retry after update


def test_a_failed_stage_of_an_earlier_version_cannot_be_retried(d: Driver) -> None:
    stages = source_and(("Build", [commands_action("Build", ["exit 1"])]))
    first = d.create(stages)
    d.wait_status(first, "Failed")
    d.retry(first, "Build")  # retryable while the pipeline is unchanged
    d.wait_status(first, "Failed")

    d.update(stages)  # a new version, even with the same stages
    with raises("StageNotRetryableException") as info:
        d.retry(first, "Build")
    assert "version 2" in info.value.response["Error"]["Message"]
    assert [r["status"] for r in d.runs(first, "Build", "Build")] == ["Failed", "Failed"]
    assert d.status(first) == "Failed"


# --------------------------------------------------------------------------- durability


@pytest.mark.parametrize("worker_fate", ["survives", "crashes"])
def test_the_update_rule_holds_whichever_process_updates_and_across_a_worker_crash(
    database_url: str, tmp_path: Path, repos_dir: Path, worker_fate: str
) -> None:
    """The update is made by a process without a worker; the worker process runs the action.

    "survives": the worker finishes the action and ends the execution from what the database
    says (the version), not from anything it was told. "crashes": the worker dies before the
    action finishes, and the worker of the next process recovers the action and ends the
    execution by the same rule.
    """
    place = Place(database_url, tmp_path / "data", repos_dir, tmp_path)
    name = "update-inflight"
    gate = tmp_path / "go"
    pid_file = tmp_path / "build.pid"
    q = shlex.quote
    held = commands_action(
        "Build",
        [f"echo $$ > {q(str(pid_file))}", f"while [ ! -f {q(str(gate))} ]; do sleep 0.05; done"],
    )
    v1 = pipeline(
        name,
        [
            ("Source", [source_action()]),
            ("Build", [held, commands_action("Tag", ["echo tag"], run_order=2)]),
        ],
    )
    v2 = pipeline(
        name, [("Source", [source_action()]), ("Build", [commands_action("Build", ["true"])])]
    )
    try:
        with engines(place, worker=False) as observer:
            with engine_process(place, "worker", [("create_pipeline", {"pipeline": v1})]) as proc:
                execution_id = only_execution(observer, name)
                wait_for(pid_file.exists, what="the Build action to run")
                assert_output_shape("UpdatePipeline", observer.update_pipeline(pipeline=v2))
                assert status(observer, name, execution_id) == "InProgress"
                if worker_fate == "survives":
                    gate.touch()
                    wait_status(observer, name, execution_id, "Failed")
                else:
                    crash(proc)
                    assert status(observer, name, execution_id) == "InProgress"
            if worker_fate == "crashes":
                with engines(place, worker=True) as recovered:
                    wait_status(recovered, name, execution_id, "Failed")
            detail = observer.get_pipeline_execution(
                pipelineName=name, pipelineExecutionId=execution_id
            )["pipelineExecution"]
            assert 'Stage "Build" failed' in detail["statusSummary"]
            assert "updated to version 2" in detail["statusSummary"]
            history = observer.list_action_executions(
                pipelineName=name, filter={"pipelineExecutionId": execution_id}
            )["actionExecutionDetails"]
            builds = [a for a in history if a["stageName"] == "Build"]
            assert [a["actionName"] for a in builds] == ["Build"]  # Tag never started
            expected = "Succeeded" if worker_fate == "survives" else "Failed"
            assert builds[0]["status"] == expected
    finally:
        kill_group_quietly(pid_file)
