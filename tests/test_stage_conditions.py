"""Scenario tests for stage conditions on the embedded engine (issue 13).

Each test drives a real ``LocalCodePipeline`` (the ``engine`` fixture: SQLite and PostgreSQL)
through its public API and checks every response against botocore's output shape: entry
conditions (FAIL, SKIP), success conditions, failure conditions, the three local rule
providers (VariableCheck, DeploymentWindow, Commands), OverrideStageCondition,
ListRuleExecutions, ListRuleTypes and GetPipelineState's condition states. Executions are
held by Commands rules waiting for a gate file; a deployment window is computed from the
current time, so the test knows when it opens.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bot.engine import LocalCodePipeline
from bot.engine.conditions import deployment_window, window_opening
from storage.db import utcnow
from tests.helpers import commands_action, pipeline, process_alive, source_action, wait_for
from tests.shapecheck import assert_output_shape

NAME = "cond-pipeline"
EXEC = "#{codepipeline.PipelineExecutionId}"


@contextmanager
def raises(code: str) -> Iterator[pytest.ExceptionInfo[ClientError]]:
    with pytest.raises(ClientError) as info:
        yield info
    assert info.value.response["Error"]["Code"] == code, info.value.response["Error"]


def rule(name: str, provider: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": provider, "version": "1"},
        **fields,
    }


def variable_check(variable: str, operator: str, value: str, name: str = "Check") -> dict[str, Any]:
    return rule(
        name,
        "VariableCheck",
        configuration={"Variable": variable, "Operator": operator, "Value": value},
    )


def commands_rule(commands: list[str], name: str = "Gate") -> dict[str, Any]:
    return rule(name, "Commands", commands=commands, inputArtifacts=[{"name": "SourceArtifact"}])


class Conditions:
    """The engine's API for one pipeline with a ``Deploy`` stage (and an ``After`` stage)
    whose conditions each test declares; responses are checked against botocore."""

    def __init__(self, engine: Any, root: Path, name: str = NAME) -> None:
        self.engine = engine
        self.root = root
        self.name = name
        root.mkdir(parents=True, exist_ok=True)

    def gate(self, name: str) -> str:
        path = shlex.quote(str(self.root / name))
        return f"while [ ! -f {path} ]; do sleep 0.05; done"

    def marker(self, name: str) -> str:
        return f"touch {shlex.quote(str(self.root / name))}"

    def seen(self, name: str) -> bool:
        return (self.root / name).exists()

    def declaration(self, conditions: dict[str, Any], **extra: Any) -> dict[str, Any]:
        decl = pipeline(
            self.name,
            [
                ("Source", [source_action()]),
                ("Deploy", [commands_action("Run", [self.marker(f"deployed-{EXEC}")])]),
                ("After", [commands_action("Finish", [self.marker(f"after-{EXEC}")])]),
            ],
            variables=[{"name": "ENV", "defaultValue": "prod"}],
            **extra,
        )
        decl["stages"][1].update(conditions)
        return decl

    def create(self, conditions: dict[str, Any]) -> str:
        response = self.engine.create_pipeline(pipeline=self.declaration(conditions))
        assert_output_shape("CreatePipeline", response)
        return str(self.executions()[0]["pipelineExecutionId"])

    def start(self, env: str | None = None) -> str:
        params: dict[str, Any] = {}
        if env is not None:
            params["variables"] = [{"name": "ENV", "value": env}]
        response = self.engine.start_pipeline_execution(name=self.name, **params)
        assert_output_shape("StartPipelineExecution", response)
        return str(response["pipelineExecutionId"])

    def executions(self) -> list[dict[str, Any]]:
        response = self.engine.list_pipeline_executions(pipelineName=self.name)
        assert_output_shape("ListPipelineExecutions", response)
        return list(response["pipelineExecutionSummaries"])

    def execution(self, execution_id: str) -> dict[str, Any]:
        response = self.engine.get_pipeline_execution(
            pipelineName=self.name, pipelineExecutionId=execution_id
        )
        assert_output_shape("GetPipelineExecution", response)
        return dict(response["pipelineExecution"])

    def wait_status(self, execution_id: str, status: str, timeout: float = 20) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            execution = self.execution(execution_id)
            return execution if execution["status"] == status else None

        try:
            return wait_for(reached, timeout=timeout, what=f"{execution_id} {status}")
        except AssertionError:
            raise AssertionError(
                f"execution is {self.execution(execution_id)}; rules: {self.rules()}"
            ) from None

    def stage(self, stage: str = "Deploy") -> dict[str, Any]:
        response = self.engine.get_pipeline_state(name=self.name)
        assert_output_shape("GetPipelineState", response)
        return next(s for s in response["stageStates"] if s["stageName"] == stage)

    def condition(self, key: str = "beforeEntryConditionState") -> dict[str, Any]:
        return dict(self.stage()[key])

    def wait_condition(self, status: str, key: str = "beforeEntryConditionState") -> None:
        wait_for(
            lambda: self.stage().get(key, {}).get("latestExecution", {}).get("status") == status,
            timeout=20,
            what=f"{key} {status}",
        )

    def rules(self, **params: Any) -> list[dict[str, Any]]:
        response = self.engine.list_rule_executions(pipelineName=self.name, **params)
        assert_output_shape("ListRuleExecutions", response)
        return list(response["ruleExecutionDetails"])

    def override(self, execution_id: str, condition_type: str = "BEFORE_ENTRY") -> None:
        response = self.engine.override_stage_condition(
            pipelineName=self.name,
            stageName="Deploy",
            pipelineExecutionId=execution_id,
            conditionType=condition_type,
        )
        assert_output_shape("OverrideStageCondition", response)


@pytest.fixture
def cond(engine: Any, tmp_path: Path) -> Conditions:
    return Conditions(engine, tmp_path / "gates")


def before_entry(result: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"beforeEntry": {"conditions": [{"result": result, "rules": list(rules)}]}}


# --------------------------------------------------------------------------- VariableCheck


@pytest.mark.parametrize(
    ("operator", "met_value", "not_met_value"),
    [
        ("EQ", "prod", "dev"),
        ("NE", "dev", "prod"),
        ("CONTAINS", "ro", "xyz"),
        ("MATCHES", "p.*d", "d"),
    ],
)
def test_variable_check_each_operator_met_and_not_met(
    cond: Conditions, operator: str, met_value: str, not_met_value: str
) -> None:
    """A met entry condition lets the actions run; one not met (result FAIL) fails the stage
    before any action runs, and GetPipelineState and ListRuleExecutions say why."""
    check = variable_check("#{variables.ENV}", operator, met_value)
    first = cond.create(before_entry("FAIL", check))
    cond.wait_status(first, "Succeeded")
    assert cond.seen(f"deployed-{first}")
    assert cond.condition()["latestExecution"]["status"] == "Succeeded"

    response = cond.engine.update_pipeline(
        pipeline=cond.declaration(
            before_entry("FAIL", variable_check("#{variables.ENV}", operator, not_met_value))
        )
    )
    assert_output_shape("UpdatePipeline", response)
    third = cond.start()  # ENV is "prod" again
    failed = cond.wait_status(third, "Failed")
    assert "entry condition was not met" in failed["statusSummary"]
    assert not cond.seen(f"deployed-{third}")
    state = cond.condition()
    assert state["latestExecution"]["status"] == "Failed"
    rule_state = state["conditionStates"][0]["ruleStates"][0]
    assert rule_state["ruleName"] == "Check"
    assert rule_state["latestExecution"]["status"] == "Failed"
    assert "not met" in rule_state["latestExecution"]["summary"]
    assert cond.stage()["latestExecution"]["status"] == "Failed"
    runs = cond.rules(filter={"pipelineExecutionId": third})
    assert [(r["ruleName"], r["status"]) for r in runs] == [("Check", "Failed")]
    assert runs[0]["input"]["resolvedConfiguration"]["Variable"] == "prod"
    assert runs[0]["input"]["configuration"]["Variable"] == "#{variables.ENV}"


def test_variable_check_reads_action_output_variables(cond: Conditions) -> None:
    """A rule resolves an earlier action's namespace (the source's BranchName), and a
    variable that never resolves fails the rule, naming it."""
    check = variable_check("#{SourceVariables.BranchName}", "EQ", "main")
    first = cond.create(before_entry("FAIL", check))
    cond.wait_status(first, "Succeeded")
    missing = variable_check("#{SourceVariables.Nope}", "EQ", "main")
    cond.engine.update_pipeline(pipeline=cond.declaration(before_entry("FAIL", missing)))
    second = cond.start()
    cond.wait_status(second, "Failed")
    run = cond.rules(filter={"pipelineExecutionId": second})[0]
    assert "SourceVariables.Nope" in run["output"]["executionResult"]["errorDetails"]["message"]


# --------------------------------------------------------------------------- SKIP


def test_skip_result_skips_the_stage_and_the_next_stage_runs(cond: Conditions) -> None:
    first = cond.create(before_entry("SKIP", variable_check("#{variables.ENV}", "EQ", "dev")))
    execution = cond.wait_status(first, "Succeeded")
    assert "statusSummary" not in execution
    assert not cond.seen(f"deployed-{first}")  # the skipped stage ran no action
    assert cond.seen(f"after-{first}")  # the next stage did
    deploy = cond.stage()
    assert deploy["latestExecution"]["status"] == "Skipped"
    assert deploy["beforeEntryConditionState"]["latestExecution"]["status"] == "Failed"
    assert cond.stage("After")["latestExecution"]["status"] == "Succeeded"
    with raises("ConditionNotOverridableException") as info:
        cond.override(first)
    assert "SKIP" in info.value.response["Error"]["Message"]


# --------------------------------------------------------------------------- DeploymentWindow


def _window_opening_in(seconds: int, width: int = 30) -> str:
    """A cron expression whose window opens ``seconds`` from now and stays open ``width``
    seconds (the seconds field lists them; every minute and hour)."""
    now = utcnow()
    allowed = sorted({(now + timedelta(seconds=seconds + k)).second for k in range(width)})
    return f"{','.join(str(s) for s in allowed)} * * ? * * *"


def test_deployment_window_cron_semantics() -> None:
    """Quartz's fields through APScheduler: day-of-week 1-7 is SUN-SAT, ``?`` is any, an
    optional year bounds the window."""
    trigger = deployment_window("* * 9-17 ? * MON-FRI", "UTC")
    monday_noon = utcnow().replace(year=2030, month=1, day=7, hour=12, minute=0, second=0)
    assert window_opening(trigger, monday_noon) == (True, None)
    saturday = monday_noon.replace(day=12)
    inside, opening = window_opening(trigger, saturday)
    assert not inside and opening is not None and opening.day == 14 and opening.hour == 9
    sunday_only = deployment_window("* * * ? * 1", "UTC")
    assert window_opening(sunday_only, monday_noon.replace(day=6))[0]
    assert not window_opening(sunday_only, monday_noon)[0]
    past = deployment_window("* * * ? * * 2020", "UTC")
    assert window_opening(past, monday_noon) == (False, None)
    berlin = deployment_window("* * 9 ? * *", "Europe/Berlin")
    assert window_opening(berlin, monday_noon.replace(hour=8))[0]  # 09:00 in Berlin


def test_deployment_window_outside_waits_then_runs_when_it_opens(cond: Conditions) -> None:
    window = rule("Window", "DeploymentWindow", configuration={"Cron": _window_opening_in(8)})
    first = cond.create(before_entry("FAIL", window))

    def waiting() -> bool:
        state = cond.stage().get("beforeEntryConditionState")
        if state is None:
            return False
        latest = state["conditionStates"][0]["ruleStates"][0]["latestExecution"]
        return latest["status"] == "InProgress" and "Outside" in latest.get("summary", "")

    wait_for(waiting, timeout=10, what="the stage waiting for its window")
    assert cond.stage()["latestExecution"]["status"] == "InProgress"  # it holds the stage
    assert cond.execution(first)["status"] == "InProgress"
    assert not cond.seen(f"deployed-{first}")
    cond.wait_status(first, "Succeeded", timeout=30)
    assert cond.seen(f"deployed-{first}")
    run = cond.rules()[0]
    assert run["status"] == "Succeeded"
    assert run["output"]["executionResult"]["externalExecutionSummary"] == (
        "Inside the deployment window."
    )


def test_waiting_window_survives_a_restart(
    database_url: str, tmp_path: Path, repos_dir: Path
) -> None:
    """A waiting condition is rows, not memory: a new engine on the same database evaluates
    it when its window opens."""

    def open_engine() -> LocalCodePipeline:
        return LocalCodePipeline(
            database_url=database_url,
            data_dir=tmp_path / "data",
            repositories_dir=repos_dir,
            poll_seconds=0.2,
        )

    engine = open_engine()
    try:
        cond = Conditions(engine, tmp_path / "gates")
        window = rule("Window", "DeploymentWindow", configuration={"Cron": _window_opening_in(8)})
        first = cond.create(before_entry("FAIL", window))
        cond.wait_condition("InProgress")
    finally:
        engine.close()
    engine = open_engine()
    try:
        cond = Conditions(engine, tmp_path / "gates")
        assert cond.execution(first)["status"] == "InProgress"
        cond.wait_status(first, "Succeeded", timeout=30)
    finally:
        engine.close()


# --------------------------------------------------------------------------- Commands rules


def test_commands_rule_passes_with_its_input_artifact_and_log(cond: Conditions) -> None:
    check = commands_rule(["test -f README.md", "echo rule-$CODEPIPELINE_RULE_NAME-ran"])
    first = cond.create(before_entry("FAIL", check))
    cond.wait_status(first, "Succeeded")
    run = cond.rules()[0]
    assert run["status"] == "Succeeded"
    assert run["input"]["inputArtifacts"] == [{"name": "SourceArtifact"}]
    log = cond.engine.get_action_log(actionExecutionId=run["ruleExecutionId"])
    assert "rule-Gate-ran" in log


def test_commands_rule_failure_fails_the_stage_with_its_log(cond: Conditions) -> None:
    first = cond.create(before_entry("FAIL", commands_rule(["echo failing-check", "exit 3"])))
    failed = cond.wait_status(first, "Failed")
    assert "exited with status 3" in failed["statusSummary"]
    run = cond.rules()[0]
    assert run["status"] == "Failed"
    assert run["output"]["executionResult"]["errorDetails"]["code"] == "JobFailed"
    assert "failing-check" in cond.engine.get_action_log(actionExecutionId=run["ruleExecutionId"])
    assert not cond.seen(f"deployed-{first}")


# --------------------------------------------------------------------------- OverrideStageCondition


def test_override_a_waiting_condition_lets_the_stage_run(cond: Conditions) -> None:
    """The override ends the condition Overridden and its running rule Abandoned; the rule's
    process is killed, and the stage's actions run."""
    pid_file = shlex.quote(str(cond.root / "rule.pid"))
    holding = commands_rule([f"echo $$ > {pid_file}", cond.gate("never")])
    first = cond.create(before_entry("FAIL", holding))
    cond.wait_condition("InProgress")
    wait_for(lambda: cond.seen("rule.pid"), timeout=10, what="the rule's commands")
    pid = int((cond.root / "rule.pid").read_text())
    assert process_alive(pid)
    cond.override(first)
    cond.wait_status(first, "Succeeded")
    assert cond.seen(f"deployed-{first}")
    state = cond.condition()
    assert state["latestExecution"]["status"] == "Overridden"
    assert state["conditionStates"][0]["ruleStates"][0]["latestExecution"]["status"] == (
        "Abandoned"
    )
    with raises("ConditionNotOverridableException"):  # nothing waits or failed any more
        cond.override(first)
    wait_for(lambda: not process_alive(pid), timeout=10, what="the abandoned rule's process to die")


def test_override_a_failed_condition_resumes_the_execution(cond: Conditions) -> None:
    first = cond.create(before_entry("FAIL", variable_check("#{variables.ENV}", "EQ", "dev")))
    cond.wait_status(first, "Failed")
    cond.override(first)
    cond.wait_status(first, "Succeeded")
    assert cond.seen(f"deployed-{first}") and cond.seen(f"after-{first}")
    assert cond.condition()["latestExecution"]["status"] == "Overridden"


def test_override_refusals(cond: Conditions) -> None:
    first = cond.create(before_entry("FAIL", variable_check("#{variables.ENV}", "EQ", "dev")))
    cond.wait_status(first, "Failed")
    with raises("ConditionNotOverridableException"):  # no success condition was evaluated
        cond.override(first, "ON_SUCCESS")
    second = cond.start()
    cond.wait_status(second, "Failed")
    with raises("NotLatestPipelineExecutionException"):
        cond.override(first)
    with raises("StageNotFoundException"):
        cond.engine.override_stage_condition(
            pipelineName=NAME,
            stageName="Nope",
            pipelineExecutionId=second,
            conditionType="BEFORE_ENTRY",
        )


# --------------------------------------------------------------------------- onSuccess, onFailure


def test_on_success_fail_fails_the_stage_after_its_actions(cond: Conditions) -> None:
    success = {
        "onSuccess": {
            "conditions": [
                {"result": "FAIL", "rules": [variable_check("#{variables.ENV}", "EQ", "dev")]}
            ]
        }
    }
    first = cond.create(success)
    failed = cond.wait_status(first, "Failed")
    assert "success condition was not met" in failed["statusSummary"]
    assert cond.seen(f"deployed-{first}")  # the actions ran first
    assert not cond.seen(f"after-{first}")
    assert cond.condition("onSuccessConditionState")["latestExecution"]["status"] == "Failed"
    assert "beforeEntryConditionState" not in cond.stage()
    cond.override(first, "ON_SUCCESS")
    cond.wait_status(first, "Succeeded")
    assert cond.seen(f"after-{first}")


def test_on_success_rollback_rolls_the_stage_back(cond: Conditions) -> None:
    """A success condition not met with the ROLLBACK result fails the stage and rolls it back
    to the latest execution that succeeded in it, whose variables then meet the condition."""
    success = {
        "onSuccess": {
            "conditions": [
                {"result": "ROLLBACK", "rules": [variable_check("#{variables.ENV}", "EQ", "prod")]}
            ]
        }
    }
    good = cond.create(success)
    cond.wait_status(good, "Succeeded")
    bad = cond.start(env="dev")
    failed = cond.wait_status(bad, "Failed")
    assert "success condition was not met" in failed["statusSummary"]
    assert cond.seen(f"deployed-{bad}") and not cond.seen(f"after-{bad}")

    def rollback() -> dict[str, Any] | None:
        found = [e for e in cond.executions() if e.get("executionType") == "ROLLBACK"]
        return found[0] if found else None

    rolled = wait_for(rollback, timeout=20, what="the automatic rollback")
    assert rolled["rollbackMetadata"]["rollbackTargetPipelineExecutionId"] == good
    cond.wait_status(rolled["pipelineExecutionId"], "Succeeded")
    assert cond.condition("onSuccessConditionState")["latestExecution"]["status"] == "Succeeded"


def test_on_failure_condition_is_evaluated_when_the_stage_fails(cond: Conditions) -> None:
    """A failure condition is evaluated when an action fails; not met, the stage just fails
    (a met ROLLBACK condition rolls it back: the runtime's automatic rollback)."""
    decl = cond.declaration(
        {
            "onFailure": {
                "conditions": [
                    {
                        "result": "ROLLBACK",
                        "rules": [variable_check("#{variables.ENV}", "EQ", "dev")],
                    }
                ]
            }
        }
    )
    decl["stages"][1]["actions"] = [commands_action("Run", ["exit 1"])]
    assert_output_shape("CreatePipeline", cond.engine.create_pipeline(pipeline=decl))
    first = cond.executions()[0]["pipelineExecutionId"]
    failed = cond.wait_status(first, "Failed")
    assert 'action "Run"' in failed["statusSummary"]
    state = cond.condition("onFailureConditionState")
    assert state["latestExecution"]["status"] == "Failed"
    assert len(cond.executions()) == 1  # not met: no rollback


def test_met_failure_condition_rolls_the_stage_back(cond: Conditions) -> None:
    """A met failure condition with the ROLLBACK result starts the automatic rollback of the
    stage to the latest execution that succeeded in it (trigger AutomatedRollback)."""
    decl = cond.declaration(
        {
            "onFailure": {
                "conditions": [
                    {
                        "result": "ROLLBACK",
                        "rules": [variable_check("#{variables.ENV}", "EQ", "broken")],
                    }
                ]
            }
        }
    )
    decl["stages"][1]["actions"] = [
        commands_action("Run", ["test '#{variables.ENV}' != broken", cond.marker(f"ran-{EXEC}")])
    ]
    assert_output_shape("CreatePipeline", cond.engine.create_pipeline(pipeline=decl))
    good = cond.executions()[0]["pipelineExecutionId"]
    cond.wait_status(good, "Succeeded")
    bad = cond.start(env="broken")
    cond.wait_status(bad, "Failed")
    runs = cond.rules(filter={"pipelineExecutionId": bad})
    assert [(r["ruleName"], r["status"]) for r in runs] == [("Check", "Succeeded")]  # met

    def rollback() -> dict[str, Any] | None:
        found = [e for e in cond.executions() if e.get("executionType") == "ROLLBACK"]
        return found[0] if found else None

    rolled = wait_for(rollback, timeout=20, what="the automatic rollback")
    assert rolled["trigger"]["triggerType"] == "AutomatedRollback"
    assert rolled["rollbackMetadata"]["rollbackTargetPipelineExecutionId"] == good
    cond.wait_status(rolled["pipelineExecutionId"], "Succeeded")
    assert cond.seen(f"ran-{rolled['pipelineExecutionId']}")


# --------------------------------------------------------------------------- stop and update


def test_stop_cancels_a_waiting_condition(cond: Conditions) -> None:
    first = cond.create(
        before_entry("FAIL", commands_rule([cond.marker("rule-started"), cond.gate("never")]))
    )
    wait_for(lambda: cond.seen("rule-started"), timeout=10, what="the rule's commands")
    response = cond.engine.stop_pipeline_execution(
        pipelineName=NAME, pipelineExecutionId=first, abandon=True, reason="enough"
    )
    assert_output_shape("StopPipelineExecution", response)
    cond.wait_status(first, "Stopped")
    assert cond.condition()["latestExecution"]["status"] == "Cancelled"
    assert cond.rules()[0]["status"] == "Abandoned"


def test_update_abandons_a_waiting_condition(cond: Conditions) -> None:
    first = cond.create(
        before_entry("FAIL", commands_rule([cond.marker("rule-started"), cond.gate("never")]))
    )
    wait_for(lambda: cond.seen("rule-started"), timeout=10, what="the rule's commands")
    cond.engine.update_pipeline(pipeline=cond.declaration({}))
    cond.wait_status(first, "Cancelled")
    run = cond.rules(filter={"pipelineExecutionId": first})[0]
    assert run["status"] == "Abandoned"


def test_restart_fails_a_running_commands_rule_as_interrupted(
    database_url: str, tmp_path: Path, repos_dir: Path
) -> None:
    """A worker that stops leaves its running rule Failed as interrupted, as its actions."""
    engine = LocalCodePipeline(
        database_url=database_url,
        data_dir=tmp_path / "data",
        repositories_dir=repos_dir,
        poll_seconds=0.2,
    )
    try:
        cond = Conditions(engine, tmp_path / "gates")
        first = cond.create(
            before_entry("FAIL", commands_rule([cond.marker("rule-started"), cond.gate("never")]))
        )
        wait_for(lambda: cond.seen("rule-started"), timeout=10, what="the rule's commands")
    finally:
        engine.close()
    engine = LocalCodePipeline(
        database_url=database_url,
        data_dir=tmp_path / "data",
        repositories_dir=repos_dir,
        poll_seconds=0.2,
    )
    try:
        cond = Conditions(engine, tmp_path / "gates")
        failed = cond.wait_status(first, "Failed")
        assert "Interrupted" in failed["statusSummary"]
        assert cond.rules()[0]["status"] == "Failed"
    finally:
        engine.close()


# --------------------------------------------------------------------------- declarations


@pytest.mark.parametrize("provider", ["CloudWatchAlarm", "LambdaInvoke", "CodeBuild"])
def test_aws_only_rule_providers_are_refused_by_name(cond: Conditions, provider: str) -> None:
    decl = cond.declaration(
        before_entry("FAIL", rule("Alarm", provider, configuration={"AlarmName": "x"}))
    )
    with raises("InvalidStageDeclarationException") as info:
        cond.engine.create_pipeline(pipeline=decl)
    message = info.value.response["Error"]["Message"]
    assert provider in message and "AWS backend" in message


@pytest.mark.parametrize(
    ("conditions", "words"),
    [
        (
            before_entry("SKIP", commands_rule(["true"])),
            "only LambdaInvoke and VariableCheck",
        ),
        (
            before_entry("FAIL", rule("Check", "VariableCheck", configuration={"Variable": "x"})),
            "missing required configuration Value and Operator",
        ),
        (
            before_entry("FAIL", variable_check("x", "GT", "1")),
            'Operator "GT" is not one of',
        ),
        (
            before_entry("FAIL", rule("W", "DeploymentWindow", configuration={"Cron": "* *"})),
            "has 2 fields",
        ),
        (
            before_entry(
                "FAIL", rule("W", "DeploymentWindow", configuration={"Cron": "* * * 15W * ?"})
            ),
            "W and L offsets",
        ),
        (
            before_entry(
                "FAIL", rule("C", "Commands", inputArtifacts=[{"name": "SourceArtifact"}])
            ),
            "non-empty commands",
        ),
        (
            {
                "onFailure": {
                    "result": "RETRY",
                    "conditions": [
                        {"result": "ROLLBACK", "rules": [variable_check("a", "EQ", "a")]}
                    ],
                }
            },
            "cannot combine automatic retry",
        ),
        (
            before_entry(
                "FAIL",
                rule("C", "Commands", commands=["true"], inputArtifacts=[{"name": "Nope"}]),
            ),
            "is not produced before",
        ),
    ],
)
def test_condition_declaration_rules(
    cond: Conditions, conditions: dict[str, Any], words: str
) -> None:
    with pytest.raises(ClientError) as info:
        cond.engine.create_pipeline(pipeline=cond.declaration(conditions))
    error = info.value.response["Error"]
    assert error["Code"] in ("InvalidStageDeclarationException", "InvalidStructureException")
    assert words in error["Message"], error["Message"]


# --------------------------------------------------------------------------- listings


def test_list_rule_executions_pages_and_filters(cond: Conditions) -> None:
    checks = before_entry(
        "FAIL",
        variable_check("#{variables.ENV}", "EQ", "prod", name="One"),
        variable_check("#{variables.ENV}", "NE", "dev", name="Two"),
    )
    first = cond.create(checks)
    cond.wait_status(first, "Succeeded")
    second = cond.start()
    cond.wait_status(second, "Succeeded")
    runs = cond.rules()
    assert len(runs) == 4
    assert [r["pipelineExecutionId"] for r in runs] == [second, second, first, first]
    page = cond.engine.list_rule_executions(pipelineName=NAME, maxResults=3)
    assert_output_shape("ListRuleExecutions", page)
    rest = cond.rules(maxResults=3, nextToken=page["nextToken"])
    ids = [r["ruleExecutionId"] for r in page["ruleExecutionDetails"] + rest]
    assert ids == [r["ruleExecutionId"] for r in runs]
    paged = [
        r["ruleExecutionId"]
        for p in cond.engine.get_paginator("list_rule_executions").paginate(
            pipelineName=NAME, PaginationConfig={"PageSize": 1}
        )
        for r in p["ruleExecutionDetails"]
    ]
    assert paged == ids
    assert {r["ruleName"] for r in cond.rules(filter={"pipelineExecutionId": first})} == {
        "One",
        "Two",
    }
    latest = cond.rules(
        filter={
            "latestInPipelineExecution": {"pipelineExecutionId": first, "startTimeRange": "All"}
        }
    )
    assert len(latest) == 2
    with raises("PipelineExecutionNotFoundException"):
        cond.rules(filter={"pipelineExecutionId": "00000000-0000-0000-0000-000000000000"})
    with raises("InvalidNextTokenException"):
        cond.rules(nextToken="garbage")


def test_list_rule_types(engine: Any) -> None:
    response = engine.list_rule_types()
    assert_output_shape("ListRuleTypes", response)
    types = {t["id"]["provider"]: t for t in response["ruleTypes"]}
    assert set(types) == {"VariableCheck", "DeploymentWindow", "Commands"}
    variable = {
        p["name"]: p["required"] for p in types["VariableCheck"]["ruleConfigurationProperties"]
    }
    assert variable == {"Variable": True, "Value": True, "Operator": True}
    window = {
        p["name"]: p["required"] for p in types["DeploymentWindow"]["ruleConfigurationProperties"]
    }
    assert window == {"Cron": True, "TimeZone": False}
    filtered = engine.list_rule_types(ruleOwnerFilter="AWS", regionFilter="eu-west-1")
    assert_output_shape("ListRuleTypes", filtered)
    assert len(filtered["ruleTypes"]) == 3
