"""Every input of the embedded engine's API is checked as AWS checks it, and honoured or refused.

Issue 11, case 3: the model's server-side constraints (maximums, patterns, enums) answer
ValidationException with AWS's message before anything changes; walked from botocore's model.
Case 6: every input field is classified (honoured, refused, ignored on purpose) and a refused one
is refused by name; ``latestInPipelineExecution`` is honoured. Case 9: what AWS accepts is not
refused on the way to it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.model import ListShape, MapShape, Shape, StructureShape
from botocore.stub import Stubber

from bot.engine.constraints import aws_path, maximum_of
from bot.engine.declaration import validate_declaration
from bot.engine.errors import DeclarationError
from bot.engine.input_fields import (
    DECLARATION,
    LOCAL_CONFIGURATION,
    OPERATIONS,
    Handling,
    classify,
)
from bot.engine.source_poller import polls_for_changes
from bot.ops.pipeline_ops import OpsError, PipelineOps
from tests.helpers import approval_action, commands_action, pipeline, source_action, wait_for

MODEL = botocore.session.get_session().get_service_model("codepipeline")
IMPLEMENTED = sorted(OPERATIONS)


def input_of(operation: str) -> StructureShape:
    shape = MODEL.operation_model(operation).input_shape
    assert shape is not None
    return shape


UUID = "11111111-2222-3333-4444-555555555555"


def code_of(caught: pytest.ExceptionInfo[Any]) -> str:
    return str(caught.value.response["Error"]["Code"])


def message_of(caught: pytest.ExceptionInfo[Any]) -> str:
    return str(caught.value.response["Error"]["Message"])


# --------------------------------------------------------------------------- the model walk


def sample(shape: Shape) -> Any:
    """A value of ``shape`` that satisfies every constraint of the model."""
    if isinstance(shape, StructureShape):
        return {name: sample(shape.members[name]) for name in shape.required_members}
    if isinstance(shape, ListShape):
        return [sample(shape.member)] * max(1, shape.metadata.get("min", 0))
    if isinstance(shape, MapShape):
        return {}
    if shape.type_name == "string":
        if shape.metadata.get("enum"):
            return shape.metadata["enum"][0]
        if "[0-9a-f]{8}" in shape.metadata.get("pattern", ""):
            return UUID
        return "a" * max(1, shape.metadata.get("min", 1))
    if shape.type_name in ("integer", "long"):
        return max(1, shape.metadata.get("min", 1))
    if shape.type_name == "boolean":
        return False
    raise AssertionError(f"no sample for {shape.type_name}")


def constrained(
    shape: Shape, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Shape, Any]]:
    """Every (path, shape, value breaking one server-side constraint) under ``shape``; lists get
    one item at position 0. The declaration (``pipeline``) is walked by the declaration tests."""
    if isinstance(shape, StructureShape):
        for name, member in shape.members.items():
            if path == () and name == "pipeline":
                continue
            yield from constrained(member, (*path, name))
        return
    if isinstance(shape, ListShape):
        maximum = maximum_of(shape)
        if maximum is not None:
            yield path, shape, [sample(shape.member)] * (maximum + 1)
        yield from constrained(shape.member, (*path, 0))
        return
    if shape.type_name == "string":
        if shape.metadata.get("enum"):
            yield path, shape, "NOT_IN_THE_ENUM"
        maximum = maximum_of(shape)
        if maximum is not None:
            yield path, shape, "a" * (maximum + 1)
        pattern = shape.metadata.get("pattern")
        if pattern and not re.fullmatch(pattern, "bad#|value", re.DOTALL):
            yield path, shape, "bad#|value"
    elif shape.type_name in ("integer", "long"):
        maximum = maximum_of(shape)
        if maximum is not None:
            yield path, shape, maximum + 1


def put(params: dict[str, Any], path: tuple[str | int, ...], value: Any, shape: Shape) -> None:
    """Set ``value`` at ``path`` in ``params``, creating the containers on the way."""
    target: Any = params
    current: Shape = shape
    for index, part in enumerate(path):
        last = index == len(path) - 1
        if isinstance(current, StructureShape):
            assert isinstance(part, str)
            current = current.members[part]
            if last:
                target[part] = value
            else:
                target = target.setdefault(part, sample(current))
        else:
            assert isinstance(current, ListShape) and part == 0
            current = current.member
            if last:
                target[0] = value
            else:
                target = target[0]


def constraint_cases() -> list[Any]:
    cases = []
    for operation in IMPLEMENTED:
        shape = input_of(operation)
        for path, leaf, value in constrained(shape):
            label = f"{operation}:{aws_path(path)}:{str(value)[:16]}"
            cases.append(pytest.param(operation, path, leaf, value, id=label))
    return cases


@pytest.fixture(scope="module")
def validating_engine(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[Any]:
    """One engine for the walk: validation comes before any database access (the issue's cases
    below check that nothing changed, on both databases)."""
    import shutil

    from bot.engine import LocalCodePipeline

    root = tmp_path_factory.mktemp("walk")
    shutil.copyfile(sqlite_template, root / "pipebot.db")
    client = LocalCodePipeline(
        database_url=f"sqlite:///{root / 'pipebot.db'}",
        data_dir=root / "data",
        repositories_dir=root / "repos",
        run_worker=False,
    )
    yield client
    client.close()


@pytest.mark.parametrize(("operation", "path", "leaf", "value"), constraint_cases())
def test_every_server_side_constraint_is_a_validation_exception(
    validating_engine: Any, operation: str, path: tuple[str | int, ...], leaf: Shape, value: Any
) -> None:
    engine = validating_engine
    shape = input_of(operation)
    params = sample(shape)
    put(params, path, value, shape)
    with pytest.raises(Exception) as caught:
        getattr(engine, botocore.xform_name(operation))(**params)
    assert code_of(caught) == "ValidationException", message_of(caught)
    message = message_of(caught)
    assert message.startswith("1 validation error detected: ")
    assert f"at '{aws_path(path)}' failed to satisfy constraint: Member must" in message


def test_the_walk_covers_the_issues_cases() -> None:
    labels = {case.id.rsplit(":", 1)[0] for case in constraint_cases()}
    for expected in (
        "ListPipelineExecutions:maxResults",
        "ListActionExecutions:maxResults",
        "ListPipelines:maxResults",
        "StopPipelineExecution:reason",
        "PutApprovalResult:result.summary",
        "StartPipelineExecution:variables.1.member.value",
        "DisableStageTransition:reason",
    ):
        assert expected in labels


# --------------------------------------------------------------------------- the issue's cases


@pytest.fixture
def waiting(engine: Any) -> tuple[str, str]:
    """A pipeline whose execution waits at approval Gate/Approve: (name, execution ID)."""
    engine.create_pipeline(
        pipeline=pipeline("limits", [("Source", [source_action()]), ("Gate", [approval_action()])])
    )
    execution_id = engine.list_pipeline_executions(pipelineName="limits")[
        "pipelineExecutionSummaries"
    ][0]["pipelineExecutionId"]

    def token() -> str | None:
        for stage in engine.get_pipeline_state(name="limits")["stageStates"]:
            for action in stage.get("actionStates", []):
                if action["actionName"] == "Approve":
                    found = action.get("latestExecution", {}).get("token")
                    return str(found) if found else None
        return None

    wait_for(token, what="the approval to wait")
    return "limits", execution_id


@pytest.mark.parametrize(
    ("call", "params", "where", "limit"),
    [
        (
            "list_pipeline_executions",
            {"maxResults": 1000},
            "maxResults",
            "value less than or equal to 100",
        ),
        (
            "list_action_executions",
            {"maxResults": 500},
            "maxResults",
            "value less than or equal to 100",
        ),
        ("list_pipelines", {"maxResults": 5000}, "maxResults", "value less than or equal to 1000"),
    ],
)
def test_listing_maxima_are_refused_with_awss_message(
    engine: Any, waiting: tuple[str, str], call: str, params: dict[str, Any], where: str, limit: str
) -> None:
    name, _ = waiting
    if call != "list_pipelines":
        params = {"pipelineName": name, **params}
    with pytest.raises(Exception) as caught:
        getattr(engine, call)(**params)
    assert code_of(caught) == "ValidationException"
    value = params["maxResults"]
    assert message_of(caught) == (
        f"1 validation error detected: Value '{value}' at '{where}' failed to satisfy "
        f"constraint: Member must have {limit}"
    )


def test_a_long_stop_reason_is_refused_and_the_execution_keeps_running(
    engine: Any, waiting: tuple[str, str]
) -> None:
    name, execution_id = waiting
    with pytest.raises(Exception) as caught:
        engine.stop_pipeline_execution(
            pipelineName=name, pipelineExecutionId=execution_id, reason="r" * 250
        )
    assert code_of(caught) == "ValidationException"
    assert "at 'reason'" in message_of(caught)
    assert "length less than or equal to 200" in message_of(caught)
    execution = engine.get_pipeline_execution(pipelineName=name, pipelineExecutionId=execution_id)
    assert execution["pipelineExecution"]["status"] == "InProgress"


def test_a_long_approval_summary_is_refused_and_the_approval_still_waits(
    engine: Any, waiting: tuple[str, str]
) -> None:
    name, execution_id = waiting
    state = engine.get_pipeline_state(name=name)["stageStates"][1]["actionStates"][0]
    with pytest.raises(Exception) as caught:
        engine.put_approval_result(
            pipelineName=name,
            stageName="Gate",
            actionName="Approve",
            result={"summary": "s" * 600, "status": "Approved"},
            token=state["latestExecution"]["token"],
        )
    assert code_of(caught) == "ValidationException"
    assert message_of(caught).endswith(
        "at 'result.summary' failed to satisfy constraint: Member must have length less than "
        "or equal to 512"
    )
    again = engine.get_pipeline_state(name=name)["stageStates"][1]["actionStates"][0]
    assert again["latestExecution"]["status"] == "InProgress"
    # The whole summary fits at 512, and is stored as given.
    engine.put_approval_result(
        pipelineName=name,
        stageName="Gate",
        actionName="Approve",
        result={"summary": "s" * 512, "status": "Approved"},
        token=state["latestExecution"]["token"],
    )
    details = engine.list_action_executions(
        pipelineName=name, filter={"pipelineExecutionId": execution_id}
    )["actionExecutionDetails"]
    approve = next(d for d in details if d["actionName"] == "Approve")
    assert approve["output"]["executionResult"]["externalExecutionSummary"] == "s" * 512


def test_several_problems_are_counted_in_one_message(engine: Any) -> None:
    with pytest.raises(Exception) as caught:
        engine.retry_stage_execution(
            pipelineName="p" * 101,
            stageName="Build",
            pipelineExecutionId=UUID,
            retryMode="SOME_ACTIONS",
        )
    message = message_of(caught)
    assert message.startswith("2 validation errors detected: ")
    assert "at 'pipelineName'" in message and "at 'retryMode'" in message
    assert "; " in message


# --------------------------------------------------------------------------- classification


def model_paths(shape: Shape, path: str, seen: tuple[str, ...] = ()) -> Iterator[str]:
    """Every member path under ``shape`` in input_fields' notation (maps' values not split)."""
    if shape.name in seen:
        return
    seen = (*seen, shape.name)
    if isinstance(shape, StructureShape):
        for name, member in shape.members.items():
            child = f"{path}.{name}" if path else name
            yield child
            yield from model_paths(member, child, seen)
    elif isinstance(shape, ListShape):
        yield from model_paths(shape.member, f"{path}[]", seen)


def test_every_input_field_of_every_implemented_operation_is_classified() -> None:
    unclassified = []
    for operation in IMPLEMENTED:
        shape = input_of(operation)
        table = OPERATIONS[operation]
        for path in model_paths(shape, ""):
            if path == "pipeline" or path.startswith("pipeline."):
                if classify(path, DECLARATION) is None:
                    unclassified.append(f"{operation}: {path}")
            elif classify(path, table) is None:
                unclassified.append(f"{operation}: {path}")
    assert not unclassified, "classify these in bot/engine/input_fields.py:\n" + "\n".join(
        unclassified
    )


def test_every_classified_field_exists_in_the_model() -> None:
    for operation, table in OPERATIONS.items():
        known = set(model_paths(input_of(operation), ""))
        assert set(table) <= known, (operation, set(table) - known)
    declaration = input_of("CreatePipeline")
    assert set(DECLARATION) <= set(model_paths(declaration, ""))


def v2(**extra: Any) -> dict[str, Any]:
    return pipeline(
        "fields",
        [("Source", [source_action()]), ("Build", [commands_action("Run", ["true"])])],
        artifactStore={"type": "S3", "location": "bucket"},
        **extra,
    )


def with_action(**fields: Any) -> dict[str, Any]:
    decl = v2()
    decl["stages"][1]["actions"][0].update(fields)
    return decl


def with_stage(**fields: Any) -> dict[str, Any]:
    decl = v2()
    decl["stages"][1].update(fields)
    return decl


def with_source_configuration(**configuration: str) -> dict[str, Any]:
    decl = v2()
    decl["stages"][0]["actions"][0]["configuration"].update(configuration)
    return decl


TRIGGER = {
    "providerType": "CodeStarSourceConnection",
    "gitConfiguration": {"sourceActionName": "Source", "push": [{"branches": {"includes": ["x"]}}]},
}
RULE = {
    "name": "Check",
    "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": "VariableCheck", "version": "1"},
    "configuration": {
        "Variable": "#{SourceVariables.BranchName}",
        "Value": "main",
        "Operator": "EQ",
    },
}


def with_trigger() -> dict[str, Any]:
    decl = v2(triggers=[TRIGGER])
    decl["stages"][0]["actions"][0] = {
        "name": "Source",
        "actionTypeId": {
            "category": "Source",
            "owner": "AWS",
            "provider": "CodeStarSourceConnection",
            "version": "1",
        },
        "configuration": {
            "ConnectionArn": "arn:aws:codestar-connections:us-east-1:000000000000:connection/x",
            "FullRepositoryId": "acme/app",
            "BranchName": "main",
        },
        "outputArtifacts": [{"name": "SourceArtifact"}],
        "namespace": "SourceVariables",
    }
    return decl


def with_pull_request_trigger() -> dict[str, Any]:
    decl = with_trigger()
    git = {**TRIGGER["gitConfiguration"], "pullRequest": [{"branches": {"includes": ["main"]}}]}
    decl["triggers"] = [{**TRIGGER, "gitConfiguration": git}]
    return decl


#: One declaration per refused declaration field (and per refused value), with the code and a
#: fragment of the message that names it.
REFUSED_DECLARATIONS: dict[str, tuple[dict[str, Any], str, str]] = {
    "pipeline.triggers[].gitConfiguration.pullRequest": (
        with_pull_request_trigger(),
        "InvalidStructureException",
        "pullRequest",
    ),
    "pipeline.stages[].blockers": (
        with_stage(blockers=[{"name": "b", "type": "Schedule"}]),
        "InvalidStageDeclarationException",
        "blockers",
    ),
    "pipeline.stages[].actions[].timeoutInMinutes": (
        with_action(timeoutInMinutes=30),
        "InvalidActionDeclarationException",
        "timeoutInMinutes applies to manual approval actions only",
    ),
    "pipeline.stages[].actions[].environmentVariables[].type": (
        with_action(
            environmentVariables=[
                {"name": "TOKEN", "value": "arn:secret", "type": "SECRETS_MANAGER"}
            ]
        ),
        "InvalidActionDeclarationException",
        'Stage "Build", action "Run": environmentVariables of type SECRETS_MANAGER',
    ),
}


def refused_entries() -> set[str]:
    return {
        path
        for path, field in DECLARATION.items()
        if field.handling is Handling.REFUSED or field.refuse_when is not None
    }


def test_every_refused_declaration_field_has_a_case() -> None:
    assert refused_entries() == set(REFUSED_DECLARATIONS)


@pytest.mark.parametrize("path", sorted(REFUSED_DECLARATIONS))
def test_a_refused_declaration_field_is_refused_by_name(path: str) -> None:
    decl, code, fragment = REFUSED_DECLARATIONS[path]
    validate_declaration(decl, local=False)  # AWS accepts it: only the engine refuses it
    with pytest.raises(DeclarationError) as caught:
        validate_declaration(decl, local=True)
    if code:
        assert caught.value.code == code, caught.value.message
    assert fragment in caught.value.message
    assert "AWS backend" in caught.value.message or "remove" in caught.value.message


def test_refused_fields_reach_the_api_as_refusals_and_nothing_is_created(engine: Any) -> None:
    decl, _, _ = REFUSED_DECLARATIONS["pipeline.stages[].actions[].timeoutInMinutes"]
    with pytest.raises(Exception) as caught:
        engine.create_pipeline(pipeline=decl)
    assert code_of(caught) == "InvalidActionDeclarationException"
    assert 'Stage "Build", action "Run": timeoutInMinutes' in message_of(caught)
    assert engine.list_pipelines()["pipelines"] == []


def test_stage_conditions_are_honoured_and_aws_only_rules_refused_by_name() -> None:
    """Conditions run locally (bot.engine.conditions); a rule provider the engine cannot run
    (here CloudWatchAlarm) is refused naming it and the AWS backend."""
    check = {
        "name": "Check",
        "ruleTypeId": {"category": "Rule", "provider": "VariableCheck"},
        "configuration": {"Variable": "#{variables.X}", "Operator": "EQ", "Value": "y"},
    }
    for field, result in (("beforeEntry", "SKIP"), ("onSuccess", "FAIL"), ("onFailure", None)):
        condition: dict[str, Any] = {"rules": [check]}
        if result:
            condition["result"] = result
        validate_declaration(with_stage(**{field: {"conditions": [condition]}}), local=True)
        alarm = {"name": "Alarm", "ruleTypeId": {"category": "Rule", "provider": "CloudWatchAlarm"}}
        refused = with_stage(**{field: {"conditions": [{"result": "FAIL", "rules": [alarm]}]}})
        if field == "onFailure":
            refused["stages"][1][field]["conditions"][0]["result"] = "ROLLBACK"
        with pytest.raises(DeclarationError) as caught:
            validate_declaration(refused, local=True)
        assert caught.value.code == "InvalidStageDeclarationException"
        assert f'"{field}" rule' in caught.value.message
        assert "CloudWatchAlarm" in caught.value.message
        assert "AWS backend" in caught.value.message


@pytest.mark.parametrize(
    "on_failure",
    [
        {"result": "FAIL"},
        {"result": "RETRY", "retryConfiguration": {"retryMode": "ALL_ACTIONS"}},
        {"result": "ROLLBACK"},
    ],
)
def test_on_failure_results_and_an_approval_timeout_are_honoured(
    on_failure: dict[str, Any],
) -> None:
    decl = with_stage(onFailure=on_failure)
    decl["stages"].append({"name": "Gate", "actions": [approval_action(timeoutInMinutes=30)]})
    validate_declaration(decl, local=True)


@pytest.mark.parametrize(
    ("decl", "unknown"),
    [
        (
            with_source_configuration(
                PollForSourceChanges="false", OutputArtifactFormat="CODE_ZIP"
            ),
            None,
        ),
        (with_source_configuration(Branch="main"), "'Branch'"),
        (with_action(configuration={"ProjectName": "build"}), "'ProjectName'"),
    ],
)
def test_unknown_configuration_keys_are_refused_locally(
    decl: dict[str, Any], unknown: str | None
) -> None:
    validate_declaration(decl, local=False)
    if unknown is None:
        validate_declaration(decl, local=True)
        return
    with pytest.raises(DeclarationError) as caught:
        validate_declaration(decl, local=True)
    assert caught.value.code == "InvalidActionDeclarationException"
    assert unknown in caught.value.message and "known:" in caught.value.message
    # issue 12: "remove it" said nothing of what; the key is named
    assert f"remove {unknown} from the action's configuration" in caught.value.message


def test_every_local_provider_has_its_configuration_classified() -> None:
    from bot.engine.declaration import SUPPORTED_LOCAL_PROVIDERS

    assert set(LOCAL_CONFIGURATION) == set(SUPPORTED_LOCAL_PROVIDERS)


def test_other_source_revision_types_are_refused_by_name(engine: Any) -> None:
    engine.create_pipeline(pipeline=v2())
    with pytest.raises(Exception) as caught:
        engine.start_pipeline_execution(
            name="fields",
            sourceRevisions=[
                {"actionName": "Source", "revisionType": "S3_OBJECT_KEY", "revisionValue": "k"}
            ],
        )
    assert code_of(caught) == "ValidationException"
    assert "COMMIT_ID only" in message_of(caught)


@pytest.mark.parametrize(
    ("configuration", "polls"),
    [
        ({"PollForSourceChanges": "false"}, False),
        ({"DetectChanges": "false"}, False),
        ({"DetectChanges": "FALSE"}, False),
        ({"DetectChanges": "true"}, True),
        ({}, True),
    ],
)
def test_detect_changes_is_honoured_like_poll_for_source_changes(
    configuration: dict[str, str], polls: bool
) -> None:
    assert polls_for_changes(configuration) is polls


# ------------------------------------------------------------------- latestInPipelineExecution


def test_latest_in_pipeline_execution_filters_to_that_execution(
    engine: Any, tmp_path: Path
) -> None:
    """The issue's case: the filter was accepted and other executions' actions came back.
    ``Latest`` keeps each action's newest run; ``All`` keeps the runs a retry replaced too."""
    marker = tmp_path / "second-time"
    engine.create_pipeline(
        pipeline=pipeline(
            "latest",
            [
                ("Source", [source_action()]),
                (
                    "Build",
                    [
                        commands_action(
                            "Run", [f"test -f {marker} || {{ touch {marker}; exit 1; }}"]
                        )
                    ],
                ),
            ],
        )
    )

    def status(execution_id: str) -> str:
        return str(
            engine.get_pipeline_execution(pipelineName="latest", pipelineExecutionId=execution_id)[
                "pipelineExecution"
            ]["status"]
        )

    first = engine.list_pipeline_executions(pipelineName="latest")["pipelineExecutionSummaries"][0][
        "pipelineExecutionId"
    ]
    wait_for(lambda: status(first) == "Failed", what="the first run to fail")
    engine.retry_stage_execution(
        pipelineName="latest",
        pipelineExecutionId=first,
        stageName="Build",
        retryMode="FAILED_ACTIONS",
    )
    wait_for(lambda: status(first) == "Succeeded", what="the retry to succeed")
    marker.unlink()
    marker.write_text("")  # the next execution's Run succeeds at once
    second = engine.start_pipeline_execution(name="latest")["pipelineExecutionId"]
    wait_for(lambda: status(second) == "Succeeded", what="the second execution")

    def listed(range_: str, execution_id: str) -> list[tuple[str, str]]:
        details = engine.list_action_executions(
            pipelineName="latest",
            filter={
                "latestInPipelineExecution": {
                    "pipelineExecutionId": execution_id,
                    "startTimeRange": range_,
                }
            },
        )["actionExecutionDetails"]
        assert {d["pipelineExecutionId"] for d in details} == {execution_id}
        return sorted((d["actionName"], d["status"]) for d in details)

    assert listed("Latest", first) == [("Run", "Succeeded"), ("Source", "Succeeded")]
    assert listed("All", first) == [
        ("Run", "Failed"),
        ("Run", "Succeeded"),
        ("Source", "Succeeded"),
    ]
    assert listed("Latest", second) == [("Run", "Succeeded"), ("Source", "Succeeded")]
    # Naming two different executions in the two filters: no action belongs to both.
    both = engine.list_action_executions(
        pipelineName="latest",
        filter={
            "pipelineExecutionId": first,
            "latestInPipelineExecution": {"pipelineExecutionId": second, "startTimeRange": "All"},
        },
    )
    assert both["actionExecutionDetails"] == []
    with pytest.raises(Exception) as caught:
        engine.list_action_executions(
            pipelineName="latest",
            filter={
                "latestInPipelineExecution": {
                    "pipelineExecutionId": str(uuid.uuid4()),
                    "startTimeRange": "Latest",
                }
            },
        )
    assert code_of(caught) == "PipelineExecutionNotFoundException"


# --------------------------------------------------------------------------- case 9: the AWS path


def aws_ops() -> tuple[PipelineOps, Stubber]:
    import boto3

    client = boto3.client(
        "codepipeline",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return PipelineOps(client=client, local=False), Stubber(client)


def codebuild_pipeline(configuration: dict[str, str]) -> dict[str, Any]:
    decl = pipeline(
        "to-aws",
        [
            ("Source", [source_action()]),
            (
                "Build",
                [
                    {
                        "name": "Build",
                        "actionTypeId": {
                            "category": "Build",
                            "owner": "AWS",
                            "provider": "CodeBuild",
                            "version": "1",
                        },
                        "configuration": configuration,
                        "inputArtifacts": [{"name": "SourceArtifact"}],
                    }
                ],
            ),
        ],
    )
    decl["artifactStore"] = {"type": "S3", "location": "bucket"}
    return decl


@pytest.mark.parametrize(
    "decl",
    [
        pytest.param(
            codebuild_pipeline(
                {
                    "ProjectName": "build",
                    "EnvironmentVariables": '[{"name":"X","value":"' + "v" * 1800 + '"}]',
                }
            ),
            id="codebuild-environment-variables-1828",
        ),
        pytest.param(
            pipeline(
                "to-aws",
                [
                    ("Source", [source_action()]),
                    ("Gate", [approval_action(configuration={"CustomData": "c" * 1500})]),
                ],
                artifactStore={"type": "S3", "location": "bucket"},
            ),
            id="custom-data-1500",
        ),
    ],
)
def test_what_aws_accepts_is_sent_to_aws(decl: dict[str, Any]) -> None:
    import json

    ops, stubber = aws_ops()
    stubber.add_response("create_pipeline", {"pipeline": decl}, {"pipeline": decl})
    with stubber:
        created = ops.create(json.dumps({"pipeline": decl}))
    stubber.assert_no_pending_responses()
    assert created["name"] == "to-aws"


def test_the_bot_never_cuts_an_approval_summary_or_a_stop_reason() -> None:
    """Cut text would reach AWS without a word to the user: refused, saying by how much."""
    from bot.ops.pipeline_state import PendingApproval

    ops, stubber = aws_ops()
    approval = PendingApproval(
        pipeline="p", stage="Gate", action="Approve", token=UUID, execution_id=UUID, since=None
    )
    with stubber, pytest.raises(OpsError) as caught:
        ops.answer(approval, approved=True, summary="s" * 520)
    assert "8 characters too long" in caught.value.message
    with stubber, pytest.raises(OpsError) as stop:
        ops.stop("p", UUID, abandon=False, reason="r" * 250)
    assert "50 characters too long" in stop.value.message
    stubber.assert_no_pending_responses()
