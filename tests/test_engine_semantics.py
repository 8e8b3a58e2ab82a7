"""Scenario tests for the embedded engine: every rule of ../shared/docs/codepipeline-semantics.md.

Each test drives a real ``LocalCodePipeline`` (the ``engine`` fixture, once on SQLite and once on
PostgreSQL) through its public API only, and checks every response against botocore's output shape.
The exceptions are the last section, which checks ``states.transition`` (the one function that
changes a status) on rows in memory, and one approval test that narrows its table.
Executions are held at the points a scenario needs by Commands actions that wait for a *gate* file
the test creates (``Driver.hold``), or by manual approvals; nothing waits on the clock: ``wait_for``
polls for the behaviour the rule promises.

Gate and marker names may contain ``#{codepipeline.PipelineExecutionId}`` (``EXEC``): the engine
resolves it per execution, so a test opens the gate of one execution while the others stay held.
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bot.engine.states import (
    ACTION_TRANSITIONS,
    EXECUTION_TRANSITIONS,
    STAGE_TRANSITIONS,
    ActionStatus,
    ExecutionStatus,
    InvalidTransitionError,
    StageStatus,
    transition,
)
from storage import engine_store as store
from storage.db import make_engine, make_session_factory, transaction, utc, utcnow
from storage.models import ActionExecution, PipelineExecution, StageExecution
from tests.helpers import (
    approval_action,
    commands_action,
    commit,
    make_repo,
    pipeline,
    process_alive,
    source_action,
    wait_for,
)
from tests.shapecheck import assert_output_shape

NAME = "app-pipeline"
EXEC = "#{codepipeline.PipelineExecutionId}"
Stages = list[tuple[str, list[dict[str, Any]]]]


# --------------------------------------------------------------------------- helpers


@contextmanager
def raises(code: str) -> Iterator[pytest.ExceptionInfo[ClientError]]:
    """Expect a ``ClientError`` with AWS's error ``code``, as boto3 raises it."""
    with pytest.raises(ClientError) as info:
        yield info
    assert info.value.response["Error"]["Code"] == code, info.value.response["Error"]


class Driver:
    """The engine's public API for one pipeline, every response checked against botocore.

    Also the test's side of the gates: ``hold(name)`` is a command line that blocks until
    ``open(name)`` is called; ``mark(name)`` a line that leaves a marker ``seen(name)`` reports.
    """

    def __init__(self, engine: Any, root: Path, name: str = NAME) -> None:
        self.engine = engine
        self.name = name
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    # --- gates and markers ---------------------------------------------------------------------

    def path(self, name: str) -> Path:
        return self.root / name

    def hold(self, name: str) -> str:
        gate = shlex.quote(str(self.root / name))
        return f"while [ ! -f {gate} ]; do sleep 0.05; done"

    def mark(self, name: str) -> str:
        return f"touch {shlex.quote(str(self.root / name))}"

    def open(self, name: str) -> None:
        (self.root / name).touch()

    def seen(self, name: str) -> bool:
        return (self.root / name).exists()

    def wait_seen(self, *names: str) -> None:
        wait_for(lambda: all(self.seen(n) for n in names), timeout=15, what=f"markers {names}")

    def held_build(self, name: str = "Build", **extra: Any) -> dict[str, Any]:
        """A Commands action: marks ``started-<execution>``, waits for ``go-<execution>``."""
        return commands_action(
            name, [self.mark(f"started-{EXEC}"), self.hold(f"go-{EXEC}")], **extra
        )

    # --- pipelines -----------------------------------------------------------------------------

    def create(self, stages: Stages, **extra: Any) -> str:
        """Create the pipeline; return the ID of the execution that creation started."""
        response = self.engine.create_pipeline(pipeline=pipeline(self.name, stages, **extra))
        assert_output_shape("CreatePipeline", response)
        summaries = self.executions()
        assert len(summaries) == 1
        return str(summaries[0]["pipelineExecutionId"])

    def update(self, stages: Stages, **extra: Any) -> dict[str, Any]:
        response = self.engine.update_pipeline(pipeline=pipeline(self.name, stages, **extra))
        assert_output_shape("UpdatePipeline", response)
        return dict(response["pipeline"])

    # --- reads ---------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        response = self.engine.get_pipeline_state(name=self.name)
        assert_output_shape("GetPipelineState", response)
        return dict(response)

    def stage(self, stage: str) -> dict[str, Any]:
        return next(s for s in self.state()["stageStates"] if s["stageName"] == stage)

    def action_state(self, stage: str, action: str) -> dict[str, Any]:
        states = self.stage(stage)["actionStates"]
        return next(a for a in states if a["actionName"] == action)

    def inbound(self, stage: str) -> list[str]:
        """IDs of the executions waiting in front of ``stage``, next to enter first."""
        state = self.stage(stage)
        entries = state.get("inboundExecutions", [])
        if entries:
            assert state["inboundExecution"] == entries[0]
        else:
            assert "inboundExecution" not in state
        return [e["pipelineExecutionId"] for e in entries]

    def executions(self, **params: Any) -> list[dict[str, Any]]:
        response = self.engine.list_pipeline_executions(pipelineName=self.name, **params)
        assert_output_shape("ListPipelineExecutions", response)
        return list(response["pipelineExecutionSummaries"])

    def summary(self, execution_id: str) -> dict[str, Any]:
        return next(s for s in self.executions() if s["pipelineExecutionId"] == execution_id)

    def execution(self, execution_id: str) -> dict[str, Any]:
        response = self.engine.get_pipeline_execution(
            pipelineName=self.name, pipelineExecutionId=execution_id
        )
        assert_output_shape("GetPipelineExecution", response)
        return dict(response["pipelineExecution"])

    def status(self, execution_id: str) -> str:
        return str(self.execution(execution_id)["status"])

    def wait_status(self, execution_id: str, status: str, *, timeout: float = 15) -> None:
        try:
            wait_for(lambda: self.status(execution_id) == status, timeout=timeout)
        except AssertionError:
            actions = [(a["stageName"], a["actionName"], a["status"]) for a in self.actions()]
            raise AssertionError(
                f"execution {execution_id} is {self.status(execution_id)}, not {status}; "
                f"actions: {actions}"
            ) from None

    def actions(self, execution_id: str | None = None, **params: Any) -> list[dict[str, Any]]:
        if execution_id is not None:
            params["filter"] = {"pipelineExecutionId": execution_id}
        response = self.engine.list_action_executions(pipelineName=self.name, **params)
        assert_output_shape("ListActionExecutions", response)
        return list(response["actionExecutionDetails"])

    def runs(self, execution_id: str, stage: str, action: str) -> list[dict[str, Any]]:
        """The action executions of one action in one execution, oldest first."""
        return [
            a
            for a in reversed(self.actions(execution_id))
            if a["stageName"] == stage and a["actionName"] == action
        ]

    def wait_run(self, execution_id: str, stage: str, action: str, status: str) -> dict[str, Any]:
        """Wait until the latest run of the action has ``status``; return it."""

        def latest() -> dict[str, Any] | None:
            runs = self.runs(execution_id, stage, action)
            return runs[-1] if runs and runs[-1]["status"] == status else None

        return wait_for(latest, timeout=15, what=f"{stage}.{action} to be {status}")

    def log(self, action_execution_id: str) -> str:
        return str(self.engine.get_action_log(actionExecutionId=action_execution_id))

    # --- writes --------------------------------------------------------------------------------

    def start(self, **params: Any) -> str:
        response = self.engine.start_pipeline_execution(name=self.name, **params)
        assert_output_shape("StartPipelineExecution", response)
        return str(response["pipelineExecutionId"])

    def stop(self, execution_id: str, *, abandon: bool = False, reason: str | None = None) -> None:
        params: dict[str, Any] = {"abandon": abandon}
        if reason is not None:
            params["reason"] = reason
        response = self.engine.stop_pipeline_execution(
            pipelineName=self.name, pipelineExecutionId=execution_id, **params
        )
        assert_output_shape("StopPipelineExecution", response)
        assert response["pipelineExecutionId"] == execution_id

    def retry(self, execution_id: str, stage: str, mode: str = "FAILED_ACTIONS") -> None:
        response = self.engine.retry_stage_execution(
            pipelineName=self.name,
            stageName=stage,
            pipelineExecutionId=execution_id,
            retryMode=mode,
        )
        assert_output_shape("RetryStageExecution", response)
        assert response["pipelineExecutionId"] == execution_id

    def answer(
        self, stage: str, action: str, token: str, status: str = "Approved", summary: str = "ok"
    ) -> None:
        response = self.engine.put_approval_result(
            pipelineName=self.name,
            stageName=stage,
            actionName=action,
            result={"summary": summary, "status": status},
            token=token,
        )
        assert_output_shape("PutApprovalResult", response)

    def disable(self, stage: str, reason: str, transition: str = "Inbound") -> None:
        response = self.engine.disable_stage_transition(
            pipelineName=self.name, stageName=stage, transitionType=transition, reason=reason
        )
        assert_output_shape("DisableStageTransition", response)

    def enable(self, stage: str, transition: str = "Inbound") -> None:
        response = self.engine.enable_stage_transition(
            pipelineName=self.name, stageName=stage, transitionType=transition
        )
        assert_output_shape("EnableStageTransition", response)


@pytest.fixture
def d(engine: Any, tmp_path: Path) -> Driver:
    return Driver(engine, tmp_path / "gates")


def source_and(*stages: tuple[str, list[dict[str, Any]]]) -> Stages:
    return [("Source", [source_action()]), *stages]


# --------------------------------------------------------------------------- rule 1: start


def test_create_starts_an_execution_and_start_records_its_trigger(
    d: Driver, repos_dir: Path
) -> None:
    first = d.create(source_and(("Build", [commands_action("Build", ["cat app.txt"])])))
    d.wait_status(first, "Succeeded")
    summary = d.summary(first)
    assert summary["trigger"]["triggerType"] == "CreatePipeline"
    assert summary["executionMode"] == "SUPERSEDED"

    sha = commit(repos_dir / "app", {"app.txt": "v2\n"}, "Ship v2\n\nWith a body.")
    second = d.start()
    d.wait_status(second, "Succeeded")
    summary = d.summary(second)
    assert summary["trigger"]["triggerType"] == "StartPipelineExecution"
    assert summary["sourceRevisions"] == [
        {"actionName": "Source", "revisionId": sha, "revisionSummary": "Ship v2\n\nWith a body."}
    ]
    detail = d.execution(second)
    assert detail["pipelineVersion"] == 1
    assert detail["artifactRevisions"][0]["name"] == "SourceArtifact"
    assert detail["artifactRevisions"][0]["revisionId"] == sha
    assert d.action_state("Source", "Source")["currentRevision"]["revisionId"] == sha
    build = d.runs(second, "Build", "Build")[0]
    assert "v2" in d.log(build["actionExecutionId"])


def test_later_stages_use_the_revision_captured_at_start(d: Driver, repos_dir: Path) -> None:
    first_sha = commit(repos_dir / "app", {"app.txt": "captured\n"}, "Captured revision")
    first = d.create(
        source_and(
            ("Build", [d.held_build(), commands_action("Show", ["cat app.txt"], run_order=2)]),
            (
                "Deploy",
                [
                    commands_action(
                        "Deploy", ["cat app.txt", "echo commit=#{SourceVariables.CommitId}"]
                    )
                ],
            ),
        )
    )
    d.wait_seen(f"started-{first}")
    assert d.summary(first)["sourceRevisions"][0]["revisionId"] == first_sha

    # A new commit lands while the execution is in Build: it must not leak into this execution.
    second_sha = commit(repos_dir / "app", {"app.txt": "landed mid-run\n"}, "Mid-run commit")
    d.open(f"go-{first}")
    d.wait_status(first, "Succeeded")
    show = d.runs(first, "Build", "Show")[0]
    deploy = d.runs(first, "Deploy", "Deploy")[0]
    assert "captured" in d.log(show["actionExecutionId"])
    assert "landed mid-run" not in d.log(show["actionExecutionId"])
    assert "captured" in d.log(deploy["actionExecutionId"])
    assert f"commit={first_sha}" in d.log(deploy["actionExecutionId"])
    assert d.summary(first)["sourceRevisions"][0]["revisionId"] == first_sha

    second = d.start()
    d.open(f"go-{second}")
    d.wait_status(second, "Succeeded")
    assert d.summary(second)["sourceRevisions"][0]["revisionId"] == second_sha
    deploy = d.runs(second, "Deploy", "Deploy")[0]
    assert "landed mid-run" in d.log(deploy["actionExecutionId"])


def test_start_can_pin_the_source_revision(d: Driver, repos_dir: Path) -> None:
    first = d.create(source_and(("Build", [commands_action("Build", ["cat app.txt"])])))
    d.wait_status(first, "Succeeded")
    old_sha = d.summary(first)["sourceRevisions"][0]["revisionId"]
    commit(repos_dir / "app", {"app.txt": "v2\n"}, "Ship v2")

    pinned = d.start(
        sourceRevisions=[
            {"actionName": "Source", "revisionType": "COMMIT_ID", "revisionValue": old_sha}
        ]
    )
    d.wait_status(pinned, "Succeeded")
    assert d.summary(pinned)["sourceRevisions"] == [
        {"actionName": "Source", "revisionId": old_sha, "revisionSummary": "Initial commit"}
    ]
    assert "v1" in d.log(d.runs(pinned, "Build", "Build")[0]["actionExecutionId"])
    with raises("ValidationException"):
        d.start(
            sourceRevisions=[
                {"actionName": "Nope", "revisionType": "COMMIT_ID", "revisionValue": old_sha}
            ]
        )


def test_codestar_connection_source_reads_owner_repo(d: Driver, repos_dir: Path) -> None:
    sha = make_repo(repos_dir / "acme" / "web", {"index.html": "<h1>acme</h1>\n"}, "Acme web")
    source = {
        **source_action(),
        "actionTypeId": {
            "category": "Source",
            "owner": "AWS",
            "provider": "CodeStarSourceConnection",
            "version": "1",
        },
        "configuration": {
            "ConnectionArn": "arn:aws:codestar-connections:eu-west-1:000000000000:connection/x",
            "FullRepositoryId": "acme/web",
            "BranchName": "main",
        },
    }
    build = commands_action(
        "Build", ["cat index.html", "echo repo=#{SourceVariables.FullRepositoryName}"]
    )
    first = d.create([("Source", [source]), ("Build", [build])])
    d.wait_status(first, "Succeeded")
    assert d.summary(first)["sourceRevisions"][0]["revisionId"] == sha
    log = d.log(d.runs(first, "Build", "Build")[0]["actionExecutionId"])
    assert "<h1>acme</h1>" in log
    assert "repo=acme/web" in log


# --------------------------------------------------------------------------- rule 2: runOrder


def test_same_run_order_runs_in_parallel_and_higher_waits_for_it(d: Driver) -> None:
    # Left and Right each wait for the other's marker: they can only succeed if both run at once.
    left = commands_action("Left", [d.mark("left"), d.hold("right")])
    right = commands_action("Right", [d.mark("right"), d.hold("left"), d.hold("go")])
    after = commands_action("After", [d.mark("after")], run_order=2)
    first = d.create(source_and(("Build", [left, right, after])))

    d.wait_run(first, "Build", "Left", "Succeeded")
    # Right still runs (held by "go"): the higher runOrder has not started.
    assert [r["status"] for r in d.runs(first, "Build", "Right")] == ["InProgress"]
    assert d.runs(first, "Build", "After") == []
    assert "latestExecution" not in d.action_state("Build", "After")
    assert d.stage("Build")["latestExecution"]["status"] == "InProgress"

    d.open("go")
    d.wait_status(first, "Succeeded")
    after_run = d.runs(first, "Build", "After")[0]
    right_run = d.runs(first, "Build", "Right")[0]
    assert after_run["startTime"] >= right_run["lastUpdateTime"]
    assert d.seen("after")


def test_first_failure_fails_the_stage_running_actions_finish(d: Driver) -> None:
    fails = commands_action("Fails", ["echo about to fail", "exit 4"])
    slow = commands_action("Slow", [d.hold("go"), "echo slow done"])
    later = commands_action("Later", [d.mark("later")], run_order=2)
    first = d.create(source_and(("Build", [fails, slow, later])))

    d.wait_run(first, "Build", "Fails", "Failed")
    # The running action is not cut short.
    assert d.runs(first, "Build", "Slow")[0]["status"] == "InProgress"
    d.open("go")
    d.wait_status(first, "Failed")

    slow_run = d.runs(first, "Build", "Slow")[0]
    assert slow_run["status"] == "Succeeded"  # its result is kept
    assert "slow done" in d.log(slow_run["actionExecutionId"])
    assert d.runs(first, "Build", "Later") == []
    assert not d.seen("later")
    build = d.stage("Build")
    assert build["latestExecution"] == {
        "pipelineExecutionId": first,
        "status": "Failed",
        "type": "STANDARD",
    }
    fails_state = d.action_state("Build", "Fails")["latestExecution"]
    assert fails_state["status"] == "Failed"
    assert fails_state["errorDetails"]["code"] == "JobFailed"
    assert "Fails" in d.execution(first)["statusSummary"]


# --------------------------------------------------------------------------- rule 3: stage lock


def test_stage_lock_holds_the_next_execution_until_failure_or_stop_releases_it(
    d: Driver,
) -> None:
    build = commands_action(
        "Build",
        [
            d.mark(f"started-{EXEC}"),
            d.hold(f"go-{EXEC}"),
            f"test ! -f {shlex.quote(str(d.path('fail-' + EXEC)))}",
        ],
    )
    a = d.create(source_and(("Build", [build])))
    d.wait_seen(f"started-{a}")

    b = d.start()
    wait_for(lambda: d.inbound("Build") == [b], what="B waiting in front of Build")
    build_state = d.stage("Build")
    assert build_state["inboundExecution"] == {
        "pipelineExecutionId": b,
        "status": "InProgress",
        "type": "STANDARD",
    }
    assert build_state["latestExecution"]["pipelineExecutionId"] == a
    assert d.stage("Source")["latestExecution"] == {
        "pipelineExecutionId": b,
        "status": "Succeeded",
        "type": "STANDARD",
    }
    assert d.status(b) == "InProgress"
    assert not d.seen(f"started-{b}")

    # A failure releases the lock: B enters.
    d.open(f"fail-{a}")
    d.open(f"go-{a}")
    d.wait_status(a, "Failed")
    d.wait_seen(f"started-{b}")
    assert d.inbound("Build") == []
    assert d.stage("Build")["latestExecution"]["pipelineExecutionId"] == b

    # A stop releases it too: C enters once B is stopped.
    c = d.start()
    wait_for(lambda: d.inbound("Build") == [c], what="C waiting in front of Build")
    d.stop(b, abandon=True)
    d.wait_seen(f"started-{c}")
    d.open(f"go-{c}")
    d.wait_status(c, "Succeeded")
    assert d.status(b) == "Stopped"


# --------------------------------------------------------------------------- rule 4: supersede


def test_newer_execution_supersedes_the_one_waiting_in_front_of_a_locked_stage(d: Driver) -> None:
    a = d.create(source_and(("Build", [d.held_build()])))
    d.wait_seen(f"started-{a}")
    b = d.start()
    wait_for(lambda: d.inbound("Build") == [b], what="B waiting in front of Build")

    c = d.start()
    d.wait_status(b, "Superseded")
    assert d.inbound("Build") == [c]
    assert c in d.execution(b)["statusSummary"]
    assert d.status(a) == "InProgress"  # an execution inside a stage is never superseded
    assert d.summary(b)["status"] == "Superseded"

    d.open(f"go-{a}")
    d.wait_status(a, "Succeeded")
    d.wait_seen(f"started-{c}")
    d.open(f"go-{c}")
    d.wait_status(c, "Succeeded")
    assert not d.seen(f"started-{b}")
    assert {a["stageName"] for a in d.actions(b)} == {"Source"}

    # A superseded execution can never be retried, whatever the stage.
    for stage in ("Source", "Build"):
        with raises("StageNotRetryableException"):
            d.retry(b, stage)
    assert d.status(b) == "Superseded"


# --------------------------------------------------------------------------- rule 5: queue


def test_queued_executions_enter_one_by_one_in_arrival_order(d: Driver) -> None:
    order = d.path("order.txt")
    build = commands_action(
        "Build",
        [f"echo {EXEC} >> {shlex.quote(str(order))}", d.hold(f"go-{EXEC}")],
    )
    a = d.create(source_and(("Build", [build])), executionMode="QUEUED")
    wait_for(order.exists, what="A in Build")
    b = d.start()
    wait_for(lambda: d.inbound("Build") == [b], what="B queued")
    c = d.start()
    wait_for(lambda: d.inbound("Build") == [b, c], what="C queued behind B")
    assert [d.status(x) for x in (a, b, c)] == ["InProgress"] * 3
    assert d.summary(c)["executionMode"] == "QUEUED"

    for running, waiting in ((a, [b, c]), (b, [c]), (c, [])):
        wait_for(
            lambda running=running: order.read_text().split()[-1] == running,
            what=f"{running} in Build",
        )
        assert d.inbound("Build") == waiting
        assert d.stage("Build")["latestExecution"]["pipelineExecutionId"] == running
        d.open(f"go-{running}")
        d.wait_status(running, "Succeeded")

    assert order.read_text().split() == [a, b, c]
    assert [s["status"] for s in d.executions()] == ["Succeeded"] * 3


# --------------------------------------------------------------------------- rule 6: parallel


def test_parallel_executions_run_at_once_and_approve_with_external_execution_id(
    d: Driver,
) -> None:
    a = d.create(
        source_and(("Build", [d.held_build()]), ("Approve", [approval_action()])),
        executionMode="PARALLEL",
    )
    b = d.start()
    # Both are in Build at the same time: no stage lock.
    d.wait_seen(f"started-{a}", f"started-{b}")
    assert d.inbound("Build") == []
    assert d.summary(b)["executionMode"] == "PARALLEL"

    d.open(f"go-{a}")
    d.open(f"go-{b}")
    tokens = {}
    for execution in (a, b):
        run = d.wait_run(execution, "Approve", "Approve", "InProgress")
        tokens[execution] = run["output"]["executionResult"]["externalExecutionId"]
    assert tokens[a] != tokens[b]
    with raises("InvalidApprovalTokenException"):
        d.answer("Approve", "Approve", "00000000-0000-0000-0000-000000000000")
    d.answer("Approve", "Approve", tokens[b], summary="ship b")
    d.wait_status(b, "Succeeded")
    assert d.status(a) == "InProgress"
    d.answer("Approve", "Approve", tokens[a], summary="ship a")
    d.wait_status(a, "Succeeded")
    assert (
        d.runs(a, "Approve", "Approve")[0]["output"]["executionResult"]["externalExecutionSummary"]
        == "ship a"
    )


# --------------------------------------------------------------------------- rule 7: transitions


def test_disabled_transition_holds_executions_and_enable_admits_the_latest(d: Driver) -> None:
    a = d.create(source_and(("Build", [d.held_build()])))
    d.wait_seen(f"started-{a}")

    for bad in ("no/slashes", "semi;colon", "quote'd"):
        with raises("ValidationException"):
            d.disable("Build", bad)
    with raises("StageNotFoundException"):
        d.disable("Nope", "Hold it")
    reason = "Freeze for release 1.2 (QA) - ask @ops!"
    d.disable("Build", reason)
    transition = d.stage("Build")["inboundTransitionState"]
    assert transition["enabled"] is False
    assert transition["disabledReason"] == reason
    assert transition["lastChangedBy"]
    assert transition["lastChangedAt"] is not None
    assert d.stage("Source")["inboundTransitionState"] == {"enabled": True}

    # The stage becomes free, but the disabled transition still holds B.
    b = d.start()
    wait_for(lambda: d.inbound("Build") == [b], what="B held")
    d.open(f"go-{a}")
    d.wait_status(a, "Succeeded")
    assert d.inbound("Build") == [b]
    assert not d.seen(f"started-{b}")

    # SUPERSEDED: a newer execution supersedes the held one.
    c = d.start()
    d.wait_status(b, "Superseded")
    assert d.inbound("Build") == [c]

    # Enabling (here as Source's outbound transition) lets the latest one in.
    d.enable("Source", transition="Outbound")
    transition = d.stage("Build")["inboundTransitionState"]
    assert transition["enabled"] is True
    assert "disabledReason" not in transition
    d.wait_seen(f"started-{c}")
    d.open(f"go-{c}")
    d.wait_status(c, "Succeeded")
    assert not d.seen(f"started-{b}")
    assert d.status(b) == "Superseded"


def test_queued_executions_held_by_a_disabled_transition_are_never_superseded(d: Driver) -> None:
    a = d.create(
        source_and(
            ("Prepare", [d.held_build("Prepare")]),
            ("Build", [commands_action("Build", [d.mark(f"built-{EXEC}")])]),
        ),
        executionMode="QUEUED",
    )
    d.wait_seen(f"started-{a}")
    d.disable("Build", "Queue them up")
    b = d.start()
    wait_for(lambda: d.inbound("Prepare") == [b], what="B queued in front of Prepare")
    d.open(f"go-{a}")
    d.wait_seen(f"started-{b}")
    d.open(f"go-{b}")
    wait_for(lambda: d.inbound("Build") == [a, b], what="A and B held in front of Build")
    assert [d.status(x) for x in (a, b)] == ["InProgress", "InProgress"]

    d.enable("Build")
    d.wait_status(a, "Succeeded")
    d.wait_status(b, "Succeeded")
    d.wait_seen(f"built-{a}", f"built-{b}")


# --------------------------------------------------------------------------- rule 8: stop


def test_stop_and_wait_lets_running_actions_finish_and_starts_nothing_new(d: Driver) -> None:
    hold = commands_action("Hold", [d.mark("started"), d.hold("go"), "echo finished"])
    after = commands_action("After", [d.mark("after")], run_order=2)
    first = d.create(
        source_and(
            ("Build", [hold, after]), ("Deploy", [commands_action("Deploy", [d.mark("deploy")])])
        )
    )
    d.wait_seen("started")

    d.stop(first, reason="Operator stop")
    assert d.status(first) == "Stopping"
    assert d.summary(first)["status"] == "Stopping"
    assert d.stage("Build")["latestExecution"]["status"] == "Stopping"
    assert d.runs(first, "Build", "Hold")[0]["status"] == "InProgress"
    with raises("DuplicatedStopRequestException"):
        d.stop(first)

    d.open("go")
    d.wait_status(first, "Stopped")
    hold_run = d.runs(first, "Build", "Hold")[0]
    assert hold_run["status"] == "Succeeded"
    assert "finished" in d.log(hold_run["actionExecutionId"])
    assert d.runs(first, "Build", "After") == []
    assert d.runs(first, "Deploy", "Deploy") == []
    assert not d.seen("after") and not d.seen("deploy")
    assert d.stage("Build")["latestExecution"]["status"] == "Stopped"
    summary = d.summary(first)
    assert summary["stopTrigger"] == {"reason": "Operator stop"}
    assert "Operator stop" in summary["statusSummary"]

    for abandon in (False, True):
        with raises("PipelineExecutionNotStoppableException"):
            d.stop(first, abandon=abandon)


def test_stop_and_abandon_kills_the_running_process_group(d: Driver) -> None:
    pid_file, shell_pid_file = d.path("sleep.pid"), d.path("shell.pid")
    sleeper = commands_action(
        "Sleeper",
        [
            f"echo $$ > {shlex.quote(str(shell_pid_file))}",
            f"sleep 60 & echo $! > {shlex.quote(str(pid_file))}; wait",
        ],
    )
    first = d.create(source_and(("Build", [sleeper])))
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the pid file")
    pids = [int(shell_pid_file.read_text()), int(pid_file.read_text())]
    assert all(process_alive(pid) for pid in pids)

    d.stop(first, abandon=True, reason="Abandon it")
    # Abandoned at once, not when the process gets round to exiting.
    run = d.runs(first, "Build", "Sleeper")[0]
    assert run["status"] == "Abandoned"
    assert run["output"]["executionResult"]["errorDetails"]["code"]
    assert d.status(first) == "Stopped"
    assert d.action_state("Build", "Sleeper")["latestExecution"]["status"] == "Abandoned"
    assert d.stage("Build")["latestExecution"]["status"] == "Stopped"
    assert d.summary(first)["stopTrigger"] == {"reason": "Abandon it"}
    wait_for(
        lambda: not any(process_alive(pid) for pid in pids), timeout=10, what="the processes to die"
    )
    # The killed process's exit does not overwrite the verdict.
    d.engine.run_worker_scan()
    assert d.runs(first, "Build", "Sleeper")[0]["status"] == "Abandoned"
    assert d.status(first) == "Stopped"


def test_a_stopping_execution_may_still_be_abandoned(d: Driver) -> None:
    pid_file = d.path("sleep.pid")
    sleeper = commands_action(
        "Sleeper", [f"sleep 60 & echo $! > {shlex.quote(str(pid_file))}; wait"]
    )
    first = d.create(source_and(("Build", [sleeper])))
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the pid file")
    pid = int(pid_file.read_text())

    d.stop(first, reason="wait first")
    assert d.status(first) == "Stopping"
    d.stop(first, abandon=True, reason="then abandon")
    assert d.status(first) == "Stopped"
    assert d.runs(first, "Build", "Sleeper")[0]["status"] == "Abandoned"
    assert d.summary(first)["stopTrigger"] == {"reason": "then abandon"}
    wait_for(lambda: not process_alive(pid), timeout=10, what="the sleeper to die")


def test_an_inbound_execution_can_be_stopped(d: Driver) -> None:
    a = d.create(source_and(("Build", [d.held_build()])))
    d.wait_seen(f"started-{a}")
    b = d.start()
    wait_for(lambda: d.inbound("Build") == [b], what="B waiting in front of Build")

    d.stop(b, reason="Not this one")
    assert d.status(b) == "Stopped"
    assert d.inbound("Build") == []
    assert d.summary(b)["stopTrigger"] == {"reason": "Not this one"}
    assert d.status(a) == "InProgress"
    with raises("PipelineExecutionNotStoppableException"):
        d.stop(b)

    d.open(f"go-{a}")
    d.wait_status(a, "Succeeded")
    d.engine.run_worker_scan()
    assert not d.seen(f"started-{b}")
    assert d.status(b) == "Stopped"


# --------------------------------------------------------------------------- rule 9: retry


def flaky_stage(d: Driver) -> tuple[str, list[dict[str, Any]]]:
    """Build: Good always succeeds; Flaky fails until the test creates the "fixed" marker."""
    good = commands_action("Good", ["echo good"])
    flaky = commands_action(
        "Flaky", ["echo flaky attempt", f"test -f {shlex.quote(str(d.path('fixed')))}"]
    )
    return ("Build", [good, flaky])


def test_retry_failed_actions_reruns_only_the_failed_ones(d: Driver) -> None:
    first = d.create(source_and(flaky_stage(d)))
    d.wait_status(first, "Failed")
    failed_run = d.runs(first, "Build", "Flaky")[0]
    good_run = d.runs(first, "Build", "Good")[0]

    d.open("fixed")
    d.retry(first, "Build", "FAILED_ACTIONS")
    d.wait_status(first, "Succeeded")
    assert len(d.executions()) == 1  # the same execution continued
    assert d.runs(first, "Build", "Good") == [good_run]
    flaky_runs = d.runs(first, "Build", "Flaky")
    assert [r["status"] for r in flaky_runs] == ["Failed", "Succeeded"]
    assert flaky_runs[0] == failed_run
    assert flaky_runs[1]["actionExecutionId"] != failed_run["actionExecutionId"]
    assert {r["pipelineExecutionId"] for r in flaky_runs} == {first}
    assert len(d.runs(first, "Source", "Source")) == 1
    build = d.stage("Build")
    assert build["latestExecution"]["status"] == "Succeeded"
    assert build["retryStageMetadata"] == {
        "manualStageRetryAttempt": 1,
        "latestRetryTrigger": "ManualStageRetry",
    }
    assert "statusSummary" not in d.execution(first)


def test_retry_all_actions_reruns_the_whole_stage(d: Driver) -> None:
    first = d.create(source_and(flaky_stage(d)))
    d.wait_status(first, "Failed")
    d.open("fixed")
    d.retry(first, "Build", "ALL_ACTIONS")
    d.wait_status(first, "Succeeded")
    assert [r["status"] for r in d.runs(first, "Build", "Good")] == ["Succeeded", "Succeeded"]
    assert [r["status"] for r in d.runs(first, "Build", "Flaky")] == ["Failed", "Succeeded"]
    assert len({r["actionExecutionId"] for r in d.runs(first, "Build", "Good")}) == 2
    assert len(d.runs(first, "Source", "Source")) == 1


def test_retry_refused_when_a_newer_execution_entered_the_stage(d: Driver) -> None:
    a = d.create(source_and(flaky_stage(d)))
    d.wait_status(a, "Failed")
    b = d.start()
    d.wait_status(b, "Failed")
    with raises("NotLatestPipelineExecutionException"):
        d.retry(a, "Build")
    assert d.status(a) == "Failed"
    d.open("fixed")
    d.retry(b, "Build")
    d.wait_status(b, "Succeeded")
    assert d.status(a) == "Failed"


def test_retry_refused_for_a_stage_that_did_not_fail_or_stop(d: Driver) -> None:
    first = d.create(source_and(flaky_stage(d)))
    d.wait_status(first, "Failed")
    with raises("StageNotRetryableException"):
        d.retry(first, "Source")  # succeeded
    with raises("StageNotFoundException"):
        d.retry(first, "Nope")

    d.update(
        source_and(("Build", [d.held_build()]), ("Deploy", [commands_action("Deploy", ["true"])]))
    )
    second = d.start()
    d.wait_seen(f"started-{second}")
    with raises("StageNotRetryableException"):
        d.retry(second, "Build")  # in progress
    with raises("StageNotRetryableException"):
        d.retry(second, "Deploy")  # never entered
    d.open(f"go-{second}")
    d.wait_status(second, "Succeeded")
    with raises("StageNotRetryableException"):
        d.retry(second, "Build")  # succeeded


def test_retry_of_a_stopped_stage_reruns_the_abandoned_action(d: Driver) -> None:
    hold = commands_action("Hold", [d.mark(f"started-{EXEC}"), d.hold("go"), "echo released"])
    quick = commands_action("Quick", ["echo quick"])
    first = d.create(source_and(("Build", [quick, hold])))
    d.wait_run(first, "Build", "Quick", "Succeeded")
    d.wait_seen(f"started-{first}")
    d.stop(first, abandon=True)
    assert d.status(first) == "Stopped"
    assert "stopTrigger" not in d.summary(first)  # no reason given

    d.open("go")
    d.retry(first, "Build", "FAILED_ACTIONS")
    assert d.status(first) == "InProgress"
    d.wait_status(first, "Succeeded")
    assert [r["status"] for r in d.runs(first, "Build", "Hold")] == ["Abandoned", "Succeeded"]
    assert len(d.runs(first, "Build", "Quick")) == 1
    assert "stopTrigger" not in d.summary(first)


# --------------------------------------------------------------------------- rule 10: approval


def approval_pipeline(**approval: Any) -> Stages:
    gate = approval_action(
        configuration={"CustomData": "Ship it?", "ExternalEntityLink": "https://example.com/r/1"},
        **approval,
    )
    return source_and(
        ("Approve", [gate]), ("Deploy", [commands_action("Deploy", ["echo deployed"])])
    )


def pending_token(d: Driver) -> str:
    def token() -> str | None:
        latest = d.action_state("Approve", "Approve").get("latestExecution", {})
        return latest.get("token") if latest.get("status") == "InProgress" else None

    return wait_for(token, what="an approval token")


def test_manual_approval_waits_for_its_token_and_approve_continues(d: Driver) -> None:
    first = d.create(approval_pipeline())
    token = pending_token(d)
    assert d.stage("Approve")["latestExecution"]["status"] == "InProgress"
    assert d.runs(first, "Deploy", "Deploy") == []
    d.engine.run_worker_scan()
    assert d.status(first) == "InProgress"  # it waits for an answer, however long

    with raises("InvalidApprovalTokenException"):
        d.answer("Approve", "Approve", "11111111-1111-1111-1111-111111111111")
    with raises("ActionNotFoundException"):
        d.answer("Approve", "Nope", token)
    with raises("StageNotFoundException"):
        d.answer("Nope", "Approve", token)

    # The pending approval holds the stage lock: the next execution waits in front of it.
    second = d.start()
    wait_for(lambda: d.inbound("Approve") == [second], what="the next execution to wait")

    d.answer("Approve", "Approve", token, summary="LGTM")
    d.wait_status(first, "Succeeded")
    second_token = wait_for(
        lambda: d.runs(second, "Approve", "Approve") and pending_token(d),
        what="the next execution's approval",
    )
    assert second_token != token
    assert d.inbound("Approve") == []
    run = d.runs(first, "Approve", "Approve")[0]
    assert run["status"] == "Succeeded"
    assert run["input"]["configuration"]["CustomData"] == "Ship it?"
    assert run["output"]["executionResult"]["externalExecutionSummary"] == "LGTM"
    assert d.runs(first, "Deploy", "Deploy")[0]["status"] == "Succeeded"

    d.answer("Approve", "Approve", second_token, summary="Also fine")
    d.wait_status(second, "Succeeded")
    latest = d.action_state("Approve", "Approve")["latestExecution"]
    assert latest["status"] == "Succeeded"
    assert latest["summary"] == "Also fine"
    assert "token" not in latest

    for status in ("Approved", "Rejected"):
        with raises("ApprovalAlreadyCompletedException"):
            d.answer("Approve", "Approve", token, status=status)


def test_rejection_fails_the_stage_and_a_retry_issues_a_new_token(d: Driver) -> None:
    first = d.create(approval_pipeline())
    old = pending_token(d)
    d.answer("Approve", "Approve", old, status="Rejected", summary="Not today")
    d.wait_status(first, "Failed")
    latest = d.action_state("Approve", "Approve")["latestExecution"]
    assert latest["status"] == "Failed"
    assert "Not today" in latest["errorDetails"]["message"]
    assert d.stage("Approve")["latestExecution"]["status"] == "Failed"
    assert d.runs(first, "Deploy", "Deploy") == []
    with raises("ApprovalAlreadyCompletedException"):
        d.answer("Approve", "Approve", old)

    d.retry(first, "Approve")
    new = pending_token(d)
    assert new != old
    # The first attempt's token belongs to an attempt that is over: it is refused.
    with raises("InvalidApprovalTokenException"):
        d.answer("Approve", "Approve", old)
    assert d.status(first) == "InProgress"
    d.answer("Approve", "Approve", new)
    d.wait_status(first, "Succeeded")
    assert [r["status"] for r in d.runs(first, "Approve", "Approve")] == ["Failed", "Succeeded"]


def test_unanswered_approval_times_out_as_a_failed_action(d: Driver, database_url: str) -> None:
    first = d.create(approval_pipeline(timeoutInMinutes=5))
    token = pending_token(d)
    action_execution_id = d.action_state("Approve", "Approve")["latestExecution"][
        "actionExecutionId"
    ]

    # A test cannot wait 5 minutes. Instead, move the approval's clock back by its timeout, through
    # the storage layer (what the engine reads as "requested 5 minutes ago, due now"), then ask the
    # worker for a pass instead of waiting for its poll.
    db = make_engine(database_url)
    try:
        with transaction(make_session_factory(db)) as session:
            (row,) = [
                a
                for a in store.pending_approvals(session=session)
                if a.action_execution_id == action_execution_id
            ]
            assert row.approval_due_at is not None
            assert utc(row.approval_due_at) - utc(row.started_at) == timedelta(minutes=5)
            now = utcnow()
            row.started_at = now - timedelta(minutes=5, seconds=1)
            row.approval_due_at = now - timedelta(seconds=1)
    finally:
        db.dispose()
    d.engine.run_worker_scan()

    d.wait_status(first, "Failed")
    latest = d.action_state("Approve", "Approve")["latestExecution"]
    assert latest["status"] == "Failed"
    assert "timed out after 5 minutes" in latest["summary"]
    assert "timed out" in d.execution(first)["statusSummary"]
    assert d.runs(first, "Deploy", "Deploy") == []
    with raises("InvalidApprovalTokenException"):
        d.answer("Approve", "Approve", token)


def test_an_answer_to_an_approval_no_longer_waiting_is_refused_and_changes_nothing(
    d: Driver,
) -> None:
    first = d.create(approval_pipeline())
    token = pending_token(d)
    d.stop(first, abandon=True, reason="Not this release")
    (abandoned,) = d.runs(first, "Approve", "Approve")
    assert abandoned["status"] == "Abandoned"

    for verdict in ("Approved", "Rejected"):
        with raises("InvalidApprovalTokenException") as info:
            d.answer("Approve", "Approve", token, status=verdict, summary="Too late")
        assert "no longer valid" in info.value.response["Error"]["Message"]
    assert d.runs(first, "Approve", "Approve") == [abandoned]
    assert d.status(first) == "Stopped"
    assert d.runs(first, "Deploy", "Deploy") == []


def test_an_approval_answer_moves_the_action_through_its_transition_table(
    d: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = d.create(approval_pipeline())
    token = pending_token(d)
    (waiting,) = d.runs(first, "Approve", "Approve")

    # With InProgress -> Succeeded taken out of the table, approving must be refused by it.
    with monkeypatch.context() as patch:
        patch.setitem(
            ACTION_TRANSITIONS,
            ActionStatus.IN_PROGRESS,
            frozenset({ActionStatus.FAILED, ActionStatus.ABANDONED}),
        )
        with pytest.raises(InvalidTransitionError, match="InProgress -> Succeeded"):
            d.answer("Approve", "Approve", token)
    assert d.runs(first, "Approve", "Approve") == [waiting]

    d.answer("Approve", "Approve", token)
    d.wait_status(first, "Succeeded")


# --------------------------------------------------------------------------- rule 11: history


def test_execution_history_lists_newest_first_with_pagination(d: Driver) -> None:
    fail_marker = shlex.quote(str(d.path("fail")))
    build = commands_action("Build", ["echo building", f"test ! -f {fail_marker}"])
    e1 = d.create(source_and(("Build", [build])))
    d.wait_status(e1, "Succeeded")
    d.open("fail")
    e2 = d.start()
    d.wait_status(e2, "Failed")
    d.path("fail").unlink()
    e3 = d.start()
    d.wait_status(e3, "Succeeded")

    summaries = d.executions()
    assert [s["pipelineExecutionId"] for s in summaries] == [e3, e2, e1]
    assert [s["status"] for s in summaries] == ["Succeeded", "Failed", "Succeeded"]
    starts = [s["startTime"] for s in summaries]
    assert starts == sorted(starts, reverse=True)
    assert all(s["lastUpdateTime"] >= s["startTime"] for s in summaries)
    assert [s["trigger"]["triggerType"] for s in summaries] == [
        "StartPipelineExecution",
        "StartPipelineExecution",
        "CreatePipeline",
    ]
    assert "Build" in summaries[1]["statusSummary"]

    page = d.engine.list_pipeline_executions(pipelineName=d.name, maxResults=2)
    assert_output_shape("ListPipelineExecutions", page)
    assert [s["pipelineExecutionId"] for s in page["pipelineExecutionSummaries"]] == [e3, e2]
    rest = d.engine.list_pipeline_executions(
        pipelineName=d.name, maxResults=2, nextToken=page["nextToken"]
    )
    assert_output_shape("ListPipelineExecutions", rest)
    assert [s["pipelineExecutionId"] for s in rest["pipelineExecutionSummaries"]] == [e1]
    assert "nextToken" not in rest
    with raises("InvalidNextTokenException"):
        d.executions(nextToken="not-a-token")

    succeeded = d.executions(filter={"succeededInStage": {"stageName": "Build"}})
    assert [s["pipelineExecutionId"] for s in succeeded] == [e3, e1]

    detail = d.execution(e2)
    assert detail["pipelineName"] == d.name
    assert detail["pipelineExecutionId"] == e2
    assert detail["status"] == "Failed"
    assert detail["pipelineVersion"] == 1
    assert detail["trigger"]["triggerType"] == "StartPipelineExecution"
    assert detail["executionMode"] == "SUPERSEDED"
    with raises("PipelineExecutionNotFoundException"):
        d.execution("00000000-0000-0000-0000-000000000000")


def test_action_execution_history_filters_and_pages(d: Driver) -> None:
    e1 = d.create(source_and(("Build", [commands_action("Build", ["echo one"])])))
    d.wait_status(e1, "Succeeded")
    e2 = d.start()
    d.wait_status(e2, "Succeeded")

    everything = d.actions()
    assert len(everything) == 4
    ids = [a["actionExecutionId"] for a in everything]
    assert len(set(ids)) == 4
    assert [a["pipelineExecutionId"] for a in everything] == [e2, e2, e1, e1]
    assert [a["stageName"] for a in everything] == ["Build", "Source", "Build", "Source"]

    mine = d.actions(e1)
    assert {a["pipelineExecutionId"] for a in mine} == {e1}
    assert [a["stageName"] for a in mine] == ["Build", "Source"]
    build, source = mine
    assert build["status"] == "Succeeded"
    assert build["pipelineVersion"] == 1
    assert build["lastUpdateTime"] >= build["startTime"] >= source["lastUpdateTime"]
    assert build["input"]["actionTypeId"]["provider"] == "Commands"
    assert build["input"]["inputArtifacts"] == [{"name": "SourceArtifact"}]
    assert source["output"]["outputArtifacts"] == [{"name": "SourceArtifact"}]
    assert (
        source["output"]["outputVariables"]["CommitId"]
        == d.summary(e1)["sourceRevisions"][0]["revisionId"]
    )

    paged: list[str] = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {"maxResults": 1}
        if token:
            params["nextToken"] = token
        response = d.engine.list_action_executions(pipelineName=d.name, **params)
        assert_output_shape("ListActionExecutions", response)
        paged += [a["actionExecutionId"] for a in response["actionExecutionDetails"]]
        token = response.get("nextToken")
        if not token:
            break
    assert paged == ids

    page = d.engine.list_action_executions(
        pipelineName=d.name, filter={"pipelineExecutionId": e2}, maxResults=1
    )
    assert_output_shape("ListActionExecutions", page)
    rest = d.actions(e2, nextToken=page["nextToken"])
    assert [a["stageName"] for a in page["actionExecutionDetails"] + rest] == ["Build", "Source"]
    with raises("InvalidNextTokenException"):
        d.actions(nextToken="%%%")
    with raises("PipelineExecutionNotFoundException"):
        d.actions("00000000-0000-0000-0000-000000000000")


def test_a_next_token_from_another_listing_is_refused(d: Driver, engine: Any) -> None:
    d.create(source_and(("Build", [commands_action("Build", ["true"])])))
    other = Driver(engine, d.root, name="other-pipeline")
    other.create(source_and(("Build", [commands_action("Build", ["true"])])))
    pipelines = engine.list_pipelines(maxResults=1)
    assert_output_shape("ListPipelines", pipelines)
    token = pipelines["nextToken"]  # a pipeline-name token, not an execution one
    with raises("InvalidNextTokenException"):
        d.executions(nextToken=token)
    with raises("InvalidNextTokenException"):
        d.actions(nextToken=token)


# --------------------------------------------------------------------------- rule 12: variables


def test_variables_are_resolved_in_commands(d: Driver) -> None:
    produce = commands_action(
        "Produce",
        ['export GREETING="hello-$(cat app.txt)"', "export UNUSED=x"],
        namespace="BuildVariables",
        outputVariables=["GREETING"],
    )
    show = commands_action(
        "Show",
        [
            f"echo exec={EXEC}",
            "echo env=#{variables.DEPLOY_ENV} region=#{variables.REGION}",
            "echo commit=#{SourceVariables.CommitId}",
            "echo greeting=#{BuildVariables.GREETING}",
        ],
        run_order=2,
    )
    deploy = commands_action("Deploy", ["echo deploy-greeting=#{BuildVariables.GREETING}"])
    first = d.create(
        source_and(("Build", [produce, show]), ("Deploy", [deploy])),
        variables=[
            {"name": "DEPLOY_ENV", "defaultValue": "dev", "description": "where to deploy"},
            {"name": "REGION", "defaultValue": "eu-west-1"},
        ],
    )
    d.wait_status(first, "Succeeded")
    commit_id = d.summary(first)["sourceRevisions"][0]["revisionId"]
    log = d.log(d.runs(first, "Build", "Show")[0]["actionExecutionId"])
    assert f"exec={first}" in log
    assert "env=dev region=eu-west-1" in log
    assert f"commit={commit_id}" in log
    assert "greeting=hello-v1" in log
    assert "deploy-greeting=hello-v1" in d.log(
        d.runs(first, "Deploy", "Deploy")[0]["actionExecutionId"]
    )
    produced = d.runs(first, "Build", "Produce")[0]
    assert produced["output"]["outputVariables"] == {"GREETING": "hello-v1"}
    assert produced["input"]["namespace"] == "BuildVariables"
    assert {v["name"]: v["resolvedValue"] for v in d.execution(first)["variables"]} == {
        "DEPLOY_ENV": "dev",
        "REGION": "eu-west-1",
    }

    second = d.start(variables=[{"name": "DEPLOY_ENV", "value": "prod"}])
    d.wait_status(second, "Succeeded")
    log = d.log(d.runs(second, "Build", "Show")[0]["actionExecutionId"])
    assert f"exec={second}" in log
    assert "env=prod region=eu-west-1" in log
    assert {v["name"]: v["resolvedValue"] for v in d.execution(second)["variables"]} == {
        "DEPLOY_ENV": "prod",
        "REGION": "eu-west-1",
    }

    with raises("ValidationException") as info:
        d.start(variables=[{"name": "NOT_DECLARED", "value": "x"}])
    assert "NOT_DECLARED" in info.value.response["Error"]["Message"]
    assert len(d.executions()) == 2


def test_variables_resolve_in_action_configuration(d: Driver) -> None:
    gate = approval_action(
        configuration={
            "CustomData": "Deploy #{SourceVariables.CommitId} to #{variables.DEPLOY_ENV}"
        }
    )
    first = d.create(
        source_and(("Approve", [gate])),
        variables=[{"name": "DEPLOY_ENV", "defaultValue": "staging"}],
    )
    run = d.wait_run(first, "Approve", "Approve", "InProgress")
    commit_id = d.summary(first)["sourceRevisions"][0]["revisionId"]
    assert run["input"]["resolvedConfiguration"]["CustomData"] == f"Deploy {commit_id} to staging"
    assert run["input"]["configuration"]["CustomData"].startswith("Deploy #{SourceVariables")


def test_an_unresolvable_reference_fails_the_action_with_a_clear_summary(d: Driver) -> None:
    broken = commands_action("Broken", ["echo #{Nowhere.VALUE} #{variables.MISSING}"])
    first = d.create(source_and(("Build", [broken])))
    d.wait_status(first, "Failed")
    run = d.runs(first, "Build", "Broken")[0]
    summary = run["output"]["executionResult"]["externalExecutionSummary"]
    assert "Nowhere.VALUE" in summary and "variables.MISSING" in summary
    assert "nresolved" in summary
    assert "Nowhere.VALUE" in d.execution(first)["statusSummary"]
    assert d.log(run["actionExecutionId"]) == ""  # nothing ran


# --------------------------------------------------------------------------- API errors and extras


def test_error_codes_for_unknown_names_and_refused_declarations(d: Driver, engine: Any) -> None:
    missing = Driver(engine, d.root, name="missing")
    for call in (
        missing.state,
        missing.start,
        missing.executions,
        missing.actions,
        lambda: engine.get_pipeline(name="missing"),
        lambda: missing.execution("00000000-0000-0000-0000-000000000000"),
        lambda: missing.stop("00000000-0000-0000-0000-000000000000"),
        lambda: missing.disable("Build", "why not"),
        lambda: missing.update(source_and(("Build", [commands_action("Build", ["true"])]))),
    ):
        with raises("PipelineNotFoundException"):
            call()

    first = d.create(source_and(("Build", [commands_action("Build", ["true"])])))
    with raises("PipelineNameInUseException"):
        d.create(source_and(("Build", [commands_action("Build", ["true"])])))
    with raises("StageNotFoundException"):
        d.retry(first, "Nope")
    with raises("StageNotFoundException"):
        d.enable("Nope")
    with raises("PipelineExecutionNotFoundException"):
        d.retry("00000000-0000-0000-0000-000000000000", "Build")
    with raises("PipelineExecutionNotStoppableException"):
        d.stop("00000000-0000-0000-0000-000000000000")

    ecs = {
        "name": "Deploy",
        "actionTypeId": {"category": "Deploy", "owner": "AWS", "provider": "ECS", "version": "1"},
        "configuration": {"ClusterName": "c", "ServiceName": "s"},
        "inputArtifacts": [{"name": "SourceArtifact"}],
    }
    aws_only = Driver(engine, d.root, name="aws-only")
    with raises("InvalidActionDeclarationException") as info:
        aws_only.create(source_and(("Deploy", [ecs])))
    message = info.value.response["Error"]["Message"]
    assert "ECS" in message and "Commands" in message
    with raises("PipelineNotFoundException"):
        aws_only.state()
    d.wait_status(first, "Succeeded")


def test_client_request_token_makes_start_idempotent(d: Driver) -> None:
    first = d.create(source_and(("Build", [commands_action("Build", ["true"])])))
    d.wait_status(first, "Succeeded")
    token = "deploy-2024-05-01-a"
    started = d.start(clientRequestToken=token)
    assert d.start(clientRequestToken=token) == started
    d.wait_status(started, "Succeeded")
    assert d.start(clientRequestToken=token) == started
    other = d.start(clientRequestToken="deploy-2024-05-01-b")
    assert other != started
    assert [s["pipelineExecutionId"] for s in d.executions()] == [other, started, first]


def test_update_pipeline_increments_version_and_running_actions_finish_then_the_execution_fails(
    d: Driver,
) -> None:
    """AWS: "When you update a pipeline, CodePipeline gracefully completes all the running actions
    and then fails the stages and pipeline executions where the running actions were completed"
    (https://docs.aws.amazon.com/codepipeline/latest/userguide/pipelines-edit.html)."""

    def stages(version: str) -> Stages:
        return source_and(
            (
                "Build",
                [d.held_build(), commands_action("Tag", [f"echo build-{version}"], run_order=2)],
            ),
            ("Deploy", [commands_action("Deploy", [f"echo deploy-{version}"])]),
        )

    first = d.create(stages("v1"))
    d.wait_seen(f"started-{first}")
    updated = d.update(stages("v2"))
    assert updated["version"] == 2
    got = d.engine.get_pipeline(name=d.name)
    assert_output_shape("GetPipeline", got)
    assert got["pipeline"]["version"] == 2
    old = d.engine.get_pipeline(name=d.name, version=1)
    assert_output_shape("GetPipeline", old)
    assert old["pipeline"]["version"] == 1
    assert d.state()["pipelineVersion"] == 2
    assert d.status(first) == "InProgress"  # its running action completes first

    d.open(f"go-{first}")
    d.wait_status(first, "Failed")
    execution = d.execution(first)
    assert execution["pipelineVersion"] == 1
    assert "updated to version 2" in execution["statusSummary"]
    (build,) = d.runs(first, "Build", "Build")
    assert build["status"] == "Succeeded" and build["pipelineVersion"] == 1
    assert d.runs(first, "Build", "Tag") == []  # no later run order, no later stage
    assert d.runs(first, "Deploy", "Deploy") == []
    assert d.stage("Build")["latestExecution"] == {
        "pipelineExecutionId": first,
        "status": "Failed",
        "type": "STANDARD",
    }

    second = d.start()
    d.open(f"go-{second}")
    d.wait_status(second, "Succeeded")
    assert d.execution(second)["pipelineVersion"] == 2
    assert "build-v2" in d.log(d.runs(second, "Build", "Tag")[0]["actionExecutionId"])
    assert "deploy-v2" in d.log(d.runs(second, "Deploy", "Deploy")[0]["actionExecutionId"])


def test_delete_pipeline_kills_its_running_actions(d: Driver) -> None:
    pid_file = d.path("sleep.pid")
    sleeper = commands_action(
        "Sleeper", [f"sleep 60 & echo $! > {shlex.quote(str(pid_file))}; wait"]
    )
    d.create(source_and(("Build", [sleeper])))
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the pid file")
    pid = int(pid_file.read_text())
    assert process_alive(pid)

    response = d.engine.delete_pipeline(name=d.name)
    assert_output_shape("DeletePipeline", response)
    wait_for(lambda: not process_alive(pid), timeout=10, what="the sleeper to die")
    with raises("PipelineNotFoundException"):
        d.state()
    listing = d.engine.list_pipelines()
    assert_output_shape("ListPipelines", listing)
    assert listing["pipelines"] == []
    d.engine.delete_pipeline(name=d.name)  # deleting again is not an error, as on AWS
    d.engine.run_worker_scan()


def test_commands_output_artifacts_reach_later_stages(d: Driver) -> None:
    build = commands_action(
        "Build",
        [
            "mkdir -p dist/sub",
            "echo built-from-$(cat app.txt) > dist/app.bin",
            "echo x > dist/sub/extra.txt",
            "echo skip > notes.txt",
        ],
        outputArtifacts=[{"name": "BuildOutput", "files": ["dist/**/*"]}],
    )
    deploy = commands_action(
        "Deploy",
        [
            "cat dist/app.bin",
            "ls dist/sub",
            "test ! -e notes.txt",
            'cat "$CODEBUILD_SRC_DIR_SourceArtifact/README.md"',
        ],
        inputs=("BuildOutput", "SourceArtifact"),
    )
    first = d.create(source_and(("Build", [build]), ("Deploy", [deploy])))
    d.wait_status(first, "Succeeded")
    built = d.runs(first, "Build", "Build")[0]
    assert built["output"]["outputArtifacts"] == [{"name": "BuildOutput"}]
    deployed = d.runs(first, "Deploy", "Deploy")[0]
    assert deployed["input"]["inputArtifacts"] == [
        {"name": "BuildOutput"},
        {"name": "SourceArtifact"},
    ]
    log = d.log(deployed["actionExecutionId"])
    assert "built-from-v1" in log
    assert "extra.txt" in log
    assert "hello" in log


def test_failure_summary_holds_the_log_tail(d: Driver) -> None:
    broken = commands_action(
        "Broken", ["echo compiling", "echo 'error: widget.c:42: missing semicolon' >&2", "exit 3"]
    )
    first = d.create(source_and(("Build", [broken])))
    d.wait_status(first, "Failed")

    latest = d.action_state("Build", "Broken")["latestExecution"]
    for text in (latest["summary"], latest["errorDetails"]["message"]):
        assert "exited with status 3" in text
        assert "widget.c:42: missing semicolon" in text
    run = d.runs(first, "Build", "Broken")[0]
    assert run["output"]["executionResult"]["errorDetails"]["code"] == "JobFailed"
    assert "missing semicolon" in run["output"]["executionResult"]["externalExecutionSummary"]
    assert "missing semicolon" in d.execution(first)["statusSummary"]
    log = d.log(run["actionExecutionId"])
    assert "missing semicolon" in log
    tail = d.engine.get_action_log(actionExecutionId=run["actionExecutionId"], tailLines=1)
    assert tail.strip() == log.strip().splitlines()[-1]


# --------------------------------------------------------------------------- status transitions

Row = PipelineExecution | StageExecution | ActionExecution


def test_a_status_change_outside_its_table_is_refused_naming_both_states() -> None:
    then = utcnow() - timedelta(minutes=1)
    execution = PipelineExecution(status=ExecutionStatus.SUCCEEDED.value, updated_at=then)
    with pytest.raises(InvalidTransitionError) as info:
        transition(execution, ExecutionStatus.IN_PROGRESS, now=utcnow())
    assert str(info.value) == "ExecutionStatus: Succeeded -> InProgress is not allowed"
    assert (execution.status, execution.updated_at) == ("Succeeded", then)


def test_transition_applies_each_rows_own_table_to_every_pair_of_statuses() -> None:
    then = utcnow() - timedelta(minutes=1)
    now = utcnow()
    families: list[tuple[Callable[[str], Row], Any, Mapping[Any, frozenset[Any]]]] = [
        (
            lambda status: PipelineExecution(status=status, updated_at=then),
            ExecutionStatus,
            EXECUTION_TRANSITIONS,
        ),
        (
            lambda status: StageExecution(status=status, updated_at=then),
            StageStatus,
            STAGE_TRANSITIONS,
        ),
        (
            lambda status: ActionExecution(status=status, updated_at=then),
            ActionStatus,
            ACTION_TRANSITIONS,
        ),
    ]
    for make, statuses, table in families:
        assert set(table) == set(statuses), f"{statuses.__name__}: every status has a table row"
        for current, to in itertools.product(statuses, statuses):
            row = make(current.value)
            if to in table[current]:
                transition(row, to, now=now)
                assert (row.status, row.updated_at) == (to.value, now)
            else:
                with pytest.raises(InvalidTransitionError, match=f"{current} -> {to} is not"):
                    transition(row, to, now=now)
                assert (row.status, row.updated_at) == (current.value, then)
