"""Tests for bot.engine.declaration: parsing, shape validation, engine rules, local rules."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.engine.declaration import (
    DECLARATION_ERROR_CODES,
    SUPPORTED_LOCAL_PROVIDERS,
    parse_declaration_text,
    split_declaration,
    validate_declaration,
)
from bot.engine.errors import DeclarationError

IS = "InvalidStructureException"
STAGE = "InvalidStageDeclarationException"
ACTION = "InvalidActionDeclarationException"
VALIDATION = "ValidationException"
TAGS = "InvalidTagsException"

AWS_CODES = frozenset({IS, STAGE, ACTION, VALIDATION, TAGS, "TooManyTagsException"})

SHARED_PIPELINES = Path(__file__).resolve().parent / "data" / "pipelines"  # from AWS's user guide
SHARED_PIPELINE_FILES = sorted(SHARED_PIPELINES.glob("*.json"))

ROLE = "arn:aws:iam::123456789012:role/pipebot"
CONNECTION = "arn:aws:codestar-connections:us-east-1:123456789012:connection/example"


# --------------------------------------------------------------------------- fixtures


def codecommit_source(name: str = "Source", output: str = "SourceArtifact") -> dict[str, Any]:
    return {
        "name": name,
        "actionTypeId": {
            "category": "Source",
            "owner": "AWS",
            "provider": "CodeCommit",
            "version": "1",
        },
        "configuration": {"RepositoryName": "app", "BranchName": "main"},
        "outputArtifacts": [{"name": output}],
    }


def approval(name: str = "Approve") -> dict[str, Any]:
    return {
        "name": name,
        "actionTypeId": {
            "category": "Approval",
            "owner": "AWS",
            "provider": "Manual",
            "version": "1",
        },
    }


def commands_action(
    name: str = "Compile",
    inputs: tuple[str, ...] = ("SourceArtifact",),
    outputs: tuple[str, ...] = (),
    run_order: int | None = None,
) -> dict[str, Any]:
    action: dict[str, Any] = {
        "name": name,
        "actionTypeId": {
            "category": "Compute",
            "owner": "AWS",
            "provider": "Commands",
            "version": "1",
        },
        "commands": ["make build", "make test"],
        "inputArtifacts": [{"name": n} for n in inputs],
        "outputArtifacts": [{"name": n, "files": ["dist/**"]} for n in outputs],
    }
    if run_order is not None:
        action["runOrder"] = run_order
    return action


def codebuild_action(name: str = "Build") -> dict[str, Any]:
    return {
        "name": name,
        "actionTypeId": {
            "category": "Build",
            "owner": "AWS",
            "provider": "CodeBuild",
            "version": "1",
        },
        "configuration": {"ProjectName": "app"},
        "inputArtifacts": [{"name": "SourceArtifact"}],
        "outputArtifacts": [{"name": "BuildArtifact"}],
    }


def v1_pipeline() -> dict[str, Any]:
    return {
        "name": "release",
        "roleArn": ROLE,
        "artifactStore": {"type": "S3", "location": "pipebot-artifacts"},
        "stages": [
            {"name": "Source", "actions": [codecommit_source()]},
            {"name": "Approve", "actions": [approval()]},
        ],
    }


def v2_pipeline() -> dict[str, Any]:
    return {
        "name": "release-v2",
        "roleArn": ROLE,
        "pipelineType": "V2",
        "executionMode": "QUEUED",
        "artifactStore": {"type": "S3", "location": "pipebot-artifacts"},
        "variables": [{"name": "TARGET", "defaultValue": "staging"}],
        "stages": [
            {"name": "Source", "actions": [codecommit_source()]},
            {"name": "Build", "actions": [commands_action(outputs=("BuildArtifact",))]},
        ],
    }


def refused(
    decl: dict[str, Any], code: str, *fragments: str, local: bool = True
) -> DeclarationError:
    with pytest.raises(DeclarationError) as info:
        validate_declaration(decl, local=local)
    error = info.value
    assert error.code == code, error.message
    for fragment in fragments:
        assert fragment in error.message, (fragment, error.message)
    return error


def action_of(decl: dict[str, Any], stage: int, action: int = 0) -> dict[str, Any]:
    result: dict[str, Any] = decl["stages"][stage]["actions"][action]
    return result


# --------------------------------------------------------------------------- valid declarations


def test_minimal_v1_pipeline_passes_and_gets_defaults() -> None:
    decl = v1_pipeline()
    original = copy.deepcopy(decl)
    for local in (True, False):
        result = validate_declaration(decl, local=local)
        assert result["version"] == 1
        assert result["pipelineType"] == "V1"
        assert result["executionMode"] == "SUPERSEDED"
        source, gate = action_of(result, 0), action_of(result, 1)
        assert source["runOrder"] == 1
        assert source["inputArtifacts"] == []
        assert gate["configuration"] == {}
        assert gate["inputArtifacts"] == []
        assert gate["outputArtifacts"] == []
    assert decl == original, "the input must not be modified"


def test_minimal_v2_pipeline_passes_and_gets_defaults() -> None:
    decl = v2_pipeline()
    result = validate_declaration(decl, local=True)
    assert result["pipelineType"] == "V2"
    assert result["executionMode"] == "QUEUED"
    assert result["variables"] == [{"name": "TARGET", "defaultValue": "staging"}]
    build = action_of(result, 1)
    assert build["runOrder"] == 1
    assert build["configuration"] == {}
    assert build["commands"] == ["make build", "make test"]
    assert "version" in result and result["version"] == 1


def test_result_is_a_deep_copy() -> None:
    decl = v1_pipeline()
    result = validate_declaration(decl, local=True)
    action_of(result, 0)["configuration"]["BranchName"] = "other"
    assert action_of(decl, 0)["configuration"]["BranchName"] == "main"


def test_existing_values_are_kept() -> None:
    decl = v2_pipeline()
    decl["version"] = 7
    decl["executionMode"] = "PARALLEL"
    build = commands_action("Package", inputs=("BuildArtifact",), run_order=2)
    decl["stages"][1]["actions"].append(build)
    result = validate_declaration(decl, local=True)
    assert result["version"] == 7
    assert result["executionMode"] == "PARALLEL"
    assert action_of(result, 1, 1)["runOrder"] == 2


def test_input_from_an_earlier_run_order_in_the_same_stage_is_accepted() -> None:
    decl = v2_pipeline()
    decl["stages"][1]["actions"].append(
        commands_action("Test", inputs=("BuildArtifact",), run_order=2)
    )
    validate_declaration(decl, local=True)


def test_approval_timeout_bounds_are_accepted() -> None:
    for timeout in (5, 86400):
        decl = v1_pipeline()
        action_of(decl, 1)["timeoutInMinutes"] = timeout
        assert action_of(validate_declaration(decl, local=True), 1)["timeoutInMinutes"] == timeout


def test_codestar_connection_source_and_trigger_pass() -> None:
    decl = v2_pipeline()
    decl["stages"][0]["actions"] = [
        {
            "name": "GitHub",
            "actionTypeId": {
                "category": "Source",
                "owner": "AWS",
                "provider": "CodeStarSourceConnection",
                "version": "1",
            },
            "configuration": {
                "ConnectionArn": CONNECTION,
                "FullRepositoryId": "acme/app",
                "BranchName": "release/1.x",
            },
            "outputArtifacts": [{"name": "SourceArtifact"}],
        }
    ]
    decl["triggers"] = [
        {
            "providerType": "CodeStarSourceConnection",
            "gitConfiguration": {
                "sourceActionName": "GitHub",
                "push": [{"branches": {"includes": ["main"]}}],
            },
        }
    ]
    validate_declaration(decl, local=False)
    validate_declaration(decl, local=True)  # push filters run locally (bot.engine.triggers)
    decl["triggers"][0]["gitConfiguration"]["pullRequest"] = [{"branches": {"includes": ["main"]}}]
    refused(decl, IS, "pullRequest", "AWS backend")


# --------------------------------------------------------------------------- shape (step 1)


def test_missing_required_field_is_an_invalid_structure() -> None:
    decl = v1_pipeline()
    del decl["stages"][0]["name"]
    refused(decl, IS, "name")
    decl = v1_pipeline()
    del decl["roleArn"]
    refused(decl, IS, "roleArn", local=False)  # AWS requires the pipeline's service role


def test_the_embedded_engine_needs_no_role() -> None:
    """Issue 12: roleArn was required on the embedded engine, which never assumes it."""
    decl = v1_pipeline()
    del decl["roleArn"]
    assert "roleArn" not in validate_declaration(decl, local=True)
    decl["roleArn"] = 3  # given, it must still be a role ARN
    refused(decl, IS, "roleArn")


def test_missing_action_type_names_stage_and_action() -> None:
    decl = v1_pipeline()
    del action_of(decl, 1)["actionTypeId"]
    refused(decl, IS, 'Stage "Approve", action "Approve"', "actionTypeId")


def test_unknown_field_is_an_invalid_structure() -> None:
    decl = v1_pipeline()
    action_of(decl, 1)["colour"] = "blue"
    refused(decl, IS, "colour", 'Stage "Approve", action "Approve"')


def test_wrong_types_are_all_listed() -> None:
    decl = v1_pipeline()
    action_of(decl, 0)["configuration"]["PollForSourceChanges"] = False
    action_of(decl, 1)["runOrder"] = "2"
    error = refused(decl, IS, "PollForSourceChanges", "runOrder", "quote")
    assert error.message.count("\n- ") >= 2


def test_boolean_run_order_is_not_an_integer() -> None:
    decl = v1_pipeline()
    action_of(decl, 1)["runOrder"] = True
    refused(decl, IS, "runOrder", 'action "Approve"')


def test_enum_violation_is_a_validation_exception() -> None:
    decl = v1_pipeline()
    action_of(decl, 1)["actionTypeId"]["owner"] = "Somebody"
    refused(decl, VALIDATION, 'Stage "Approve", action "Approve"', "actionTypeId.owner", "enum")


def test_too_long_configuration_value_is_a_validation_exception() -> None:
    """The service's limit (50,000 characters), not botocore's stale 1,000 (issue 11, case 9)."""
    decl = v1_pipeline()
    action_of(decl, 1)["configuration"] = {"CustomData": "x" * 50_001}
    refused(decl, VALIDATION, "configuration.CustomData", "50000")


@pytest.mark.parametrize("local", [True, False])
def test_configuration_values_longer_than_botocore_says_are_accepted(local: bool) -> None:
    """AWS accepts a 1,500-character CustomData although botocore's model says 1,000."""
    decl = v1_pipeline()
    action_of(decl, 1)["configuration"] = {"CustomData": "x" * 1_500}
    assert validate_declaration(decl, local=local)["stages"][1]["actions"][0]["configuration"]


def test_bad_artifact_name_pattern_is_a_validation_exception() -> None:
    decl = v1_pipeline()
    action_of(decl, 0)["outputArtifacts"] = [{"name": "source artifact"}]
    refused(decl, VALIDATION, 'Stage "Source", action "Source"', "outputArtifacts[0].name")


def test_not_a_mapping_is_an_invalid_structure() -> None:
    with pytest.raises(DeclarationError) as info:
        validate_declaration([1, 2], local=True)  # type: ignore[arg-type]
    assert info.value.code == IS


# --------------------------------------------------------------------------- names and layout


@pytest.mark.parametrize("name", ["has space", "", "x" * 101, "slash/name"])
def test_invalid_pipeline_name(name: str) -> None:
    decl = v1_pipeline()
    decl["name"] = name
    refused(decl, VALIDATION, "Pipeline name", "at 'pipeline.name' failed to satisfy constraint")


@pytest.mark.parametrize("name", ["Build Stage", "", "y" * 101])
def test_invalid_stage_name(name: str) -> None:
    decl = v1_pipeline()
    decl["stages"][1]["name"] = name
    refused(decl, VALIDATION, "at 'pipeline.stages.2.member.name' failed to satisfy constraint")


@pytest.mark.parametrize("name", ["Approve!", "", "z" * 101])
def test_invalid_action_name(name: str) -> None:
    decl = v1_pipeline()
    action_of(decl, 1)["name"] = name
    refused(decl, VALIDATION, 'Stage "Approve"', "'pipeline.stages.2.member.actions.1.member.name'")


def test_valid_name_characters() -> None:
    decl = v1_pipeline()
    decl["name"] = "a.b@c-d_e9"
    decl["stages"][1]["name"] = "Stage.1@x-y_z"
    action_of(decl, 1)["name"] = "A" * 100
    validate_declaration(decl, local=True)


@pytest.mark.parametrize("count", [0, 1])
def test_at_least_two_stages(count: int) -> None:
    decl = v1_pipeline()
    decl["stages"] = decl["stages"][:count]
    refused(decl, IS, "at least 2 stages")


def test_duplicate_stage_names() -> None:
    decl = v1_pipeline()
    decl["stages"].append({"name": "Approve", "actions": [approval()]})
    refused(decl, STAGE, 'Stage "Approve"', "unique")


def test_duplicate_action_names_in_a_stage() -> None:
    decl = v1_pipeline()
    decl["stages"][1]["actions"].append(approval())
    refused(decl, ACTION, 'Stage "Approve", action "Approve"', "unique within a stage")


def test_same_action_name_in_different_stages_is_fine() -> None:
    decl = v1_pipeline()
    decl["stages"].append({"name": "Approve2", "actions": [approval()]})
    validate_declaration(decl, local=True)


def test_stage_without_actions() -> None:
    decl = v1_pipeline()
    decl["stages"][1]["actions"] = []
    refused(decl, STAGE, 'Stage "Approve"', "at least one action")


def test_first_stage_holds_only_source_actions() -> None:
    decl = v1_pipeline()
    decl["stages"][0]["actions"].append(approval("Gate"))
    refused(decl, STAGE, 'Stage "Source", action "Gate"', "first stage", "Approval")


def test_no_source_action_after_the_first_stage() -> None:
    decl = v1_pipeline()
    decl["stages"][1]["actions"].append(codecommit_source("Late", output="LateArtifact"))
    refused(decl, STAGE, 'Stage "Approve", action "Late"', "first stage only")


@pytest.mark.parametrize("run_order", [0, 1000])
def test_run_order_range(run_order: int) -> None:
    decl = v1_pipeline()
    action_of(decl, 1)["runOrder"] = run_order
    bound = "greater than or equal to 1" if run_order < 1 else "less than or equal to 999"
    error = refused(decl, VALIDATION)
    assert error.message == (
        'Stage "Approve", action "Approve": 1 validation error detected: Value '
        f"\"{run_order}\" at 'pipeline.stages.2.member.actions.1.member.runOrder' failed to "
        f"satisfy constraint: Member must have value {bound}"
    )


# --------------------------------------------------------------------------- artifacts, namespaces


def test_duplicate_output_artifact() -> None:
    decl = v2_pipeline()
    decl["stages"][1]["actions"].append(commands_action("Other", outputs=("BuildArtifact",)))
    refused(
        decl,
        IS,
        'Stage "Build", action "Other"',
        "Output Artifact Bundle name must be unique within the pipeline. BuildArtifact has been "
        "used more than once",
        'action "Compile"',
    )


def test_input_artifact_that_nobody_produces() -> None:
    decl = v2_pipeline()
    decl["stages"][1]["actions"][0]["inputArtifacts"] = [{"name": "Missing"}]
    refused(decl, IS, 'Stage "Build", action "Compile"', '"Missing"', "SourceArtifact")


def test_input_artifact_from_a_later_stage() -> None:
    decl = v2_pipeline()
    decl["stages"].insert(
        1, {"name": "Early", "actions": [commands_action("Use", ("BuildArtifact",))]}
    )
    refused(decl, IS, 'Stage "Early", action "Use"', '"BuildArtifact"', "later stage")


def test_input_artifact_from_the_same_run_order() -> None:
    decl = v2_pipeline()
    decl["stages"][1]["actions"].append(commands_action("Test", inputs=("BuildArtifact",)))
    refused(decl, IS, 'Stage "Build", action "Test"', '"BuildArtifact"', "runOrder 1")


def test_input_artifact_produced_by_the_action_itself() -> None:
    decl = v2_pipeline()
    action_of(decl, 1)["inputArtifacts"].append({"name": "BuildArtifact"})
    refused(decl, IS, 'action "Compile"', "this action itself")


def test_input_artifact_listed_twice() -> None:
    decl = v2_pipeline()
    action_of(decl, 1)["inputArtifacts"].append({"name": "SourceArtifact"})
    refused(decl, ACTION, 'action "Compile"', "more than once")


def test_duplicate_namespace() -> None:
    decl = v2_pipeline()
    action_of(decl, 0)["namespace"] = "SourceVariables"
    action_of(decl, 1)["namespace"] = "SourceVariables"
    refused(
        decl,
        ACTION,
        'Stage "Build", action "Compile"',
        "Namespaces must be unique across the pipeline definition. The following occur more "
        "than once in the pipeline. StageName=[Source], ActionName=[Source], "
        "Namespace=[SourceVariables]; StageName=[Build], ActionName=[Compile], "
        "Namespace=[SourceVariables]",
    )


# --------------------------------------------------------------------------- V2-only features


@pytest.mark.parametrize("mode", ["QUEUED", "PARALLEL"])
def test_v1_refuses_v2_execution_modes(mode: str) -> None:
    decl = {**v1_pipeline(), "pipelineType": "V1"}
    decl["executionMode"] = mode
    error = refused(decl, IS, f"executionMode {mode} can only be used with V2 pipelines")
    # Issue 12: it ended "...or remove it", naming nothing; both ways out are named now.
    assert 'set "pipelineType" to "V2", or set "executionMode" to "SUPERSEDED"' in error.message
    assert "remove it" not in error.message


def test_v1_refuses_variables() -> None:
    decl = {**v1_pipeline(), "pipelineType": "V1"}
    decl["variables"] = [{"name": "X"}]
    refused(
        decl,
        IS,
        '"variables" can only be used with V2 pipelines',
        'set "pipelineType" to "V2", or remove the field "variables"',
    )


def test_v1_refuses_triggers() -> None:
    """AWS: ``InvalidStructureException: Triggers on tag can only be used with V2 pipelines``."""
    decl = {**v1_pipeline(), "pipelineType": "V1"}
    decl["triggers"] = [
        {"providerType": "CodeStarSourceConnection", "gitConfiguration": {"sourceActionName": "S"}}
    ]
    refused(decl, IS, '"triggers" can only be used with V2 pipelines', local=False)


def test_v1_refuses_commands_actions() -> None:
    decl = v2_pipeline()
    del decl["executionMode"], decl["variables"]
    decl["pipelineType"] = "V1"
    refused(
        decl,
        IS,
        'Stage "Build", action "Compile"',
        "Commands",
        "V2 pipelines",
        'or replace action "Compile" of stage "Build"',
    )


CONDITION = {"conditions": [{"result": "FAIL", "rules": []}]}
RULE = {"name": "NoAlarms", "ruleTypeId": {"category": "Rule", "provider": "CloudWatchAlarm"}}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("beforeEntry", {"conditions": [{"result": "FAIL", "rules": [RULE]}]}),
        ("onSuccess", {"conditions": [{"result": "FAIL", "rules": [RULE]}]}),
        ("onFailure", {"conditions": [{"result": "ROLLBACK", "rules": [RULE]}]}),
    ],
)
def test_stage_conditions(field: str, value: dict[str, Any]) -> None:
    v1 = {**v1_pipeline(), "pipelineType": "V1"}
    v1["stages"][1][field] = value
    refused(v1, IS, 'Stage "Approve"', f'"{field}"', "V2")

    v2 = v2_pipeline()
    v2["stages"][1][field] = value
    validate_declaration(v2, local=False)
    refused(
        v2,
        STAGE,
        'Stage "Build"',
        f'"{field}" rule "NoAlarms"',
        "rule provider CloudWatchAlarm is not available in the embedded engine",
        "it needs the AWS backend (set PIPEBOT_BACKEND=aws)",
    )


def test_on_failure_fail_is_the_default_and_accepted_locally() -> None:
    decl = v2_pipeline()
    decl["stages"][1]["onFailure"] = {"result": "FAIL"}
    validate_declaration(decl, local=True)


@pytest.mark.parametrize(
    "on_failure",
    [
        {"result": "ROLLBACK"},
        {"result": "RETRY", "retryConfiguration": {"retryMode": "FAILED_ACTIONS"}},
        {"result": "RETRY", "retryConfiguration": {"retryMode": "ALL_ACTIONS"}},
        {"result": "RETRY"},
    ],
)
def test_automatic_retry_and_rollback_run_locally_on_v2_only(on_failure: dict[str, Any]) -> None:
    decl = v2_pipeline()
    decl["stages"][1]["onFailure"] = on_failure
    validate_declaration(decl, local=False)
    validate_declaration(decl, local=True)
    v1 = {**v1_pipeline(), "pipelineType": "V1"}
    v1["stages"][1]["onFailure"] = on_failure
    refused(v1, IS, 'Stage "Approve"', '"onFailure"', "V2")


@pytest.mark.parametrize("name", ["has.dot", "has space", "", "v" * 129])
def test_invalid_variable_name(name: str) -> None:
    decl = v2_pipeline()
    decl["variables"] = [{"name": name}]
    refused(decl, VALIDATION, "Pipeline variable", "at 'pipeline.variables.1.member.name'")


def test_duplicate_variable_names() -> None:
    decl = v2_pipeline()
    decl["variables"] = [{"name": "A"}, {"name": "A", "defaultValue": "x"}]
    refused(decl, VALIDATION, 'Pipeline variable "A"', "more than once")


def test_trigger_must_name_a_source_action() -> None:
    decl = v2_pipeline()
    decl["triggers"] = [
        {"providerType": "CodeStarSourceConnection", "gitConfiguration": {"sourceActionName": "X"}}
    ]
    refused(decl, IS, "Trigger 1", '"X"')
    decl["triggers"][0]["gitConfiguration"]["sourceActionName"] = "Source"
    refused(decl, IS, "Trigger 1", "CodeStarSourceConnection")


# --------------------------------------------------------------------------- per-action-type rules


@pytest.mark.parametrize("field", ["inputArtifacts", "outputArtifacts"])
def test_manual_approval_has_no_artifacts(field: str) -> None:
    decl = v1_pipeline()
    action_of(decl, 1)[field] = [{"name": "SourceArtifact" if field == "inputArtifacts" else "X"}]
    kind = field.removesuffix("Artifacts")
    refused(
        decl,
        ACTION,
        'Stage "Approve", action "Approve"',
        f"declares 1 {kind} artifacts which is more than the maximum count (0)",
    )


@pytest.mark.parametrize("timeout", [4, 86401])
def test_approval_timeout_range(timeout: int) -> None:
    decl = v1_pipeline()
    action_of(decl, 1)["timeoutInMinutes"] = timeout
    refused(
        decl,
        VALIDATION,
        'Stage "Approve", action "Approve"',
        f"Value \"{timeout}\" at 'pipeline.stages.2.member.actions.1.member.timeoutInMinutes'",
    )


def test_source_has_no_input_artifacts() -> None:
    decl = v1_pipeline()
    action_of(decl, 0)["inputArtifacts"] = [{"name": "Other"}]
    refused(
        decl,
        ACTION,
        'Stage "Source", action "Source"',
        "declares 1 input artifacts which is more than the maximum count (0)",
    )


@pytest.mark.parametrize("outputs", [[], [{"name": "A"}, {"name": "B"}]])
def test_source_has_exactly_one_output(outputs: list[dict[str, str]]) -> None:
    decl = v1_pipeline()
    action_of(decl, 0)["outputArtifacts"] = outputs
    bound = "less than the minimum count (1)" if not outputs else "more than the maximum count (1)"
    refused(
        decl,
        ACTION,
        'Stage "Source", action "Source"',
        f"declares {len(outputs)} output artifacts which is {bound}",
    )


def test_commands_required() -> None:
    decl = v2_pipeline()
    del action_of(decl, 1)["commands"]
    refused(decl, ACTION, 'Stage "Build", action "Compile"', "must have a non-empty commands field")


def test_commands_count() -> None:
    decl = v2_pipeline()
    action_of(decl, 1)["commands"] = []
    refused(decl, ACTION, "Action Compile must have a non-empty commands field")
    action_of(decl, 1)["commands"] = ["echo hi"] * 51
    refused(
        decl,
        VALIDATION,
        'Stage "Build", action "Compile"',
        "at 'pipeline.stages.2.member.actions.1.member.commands' failed to satisfy constraint: "
        "Member must have length less than or equal to 50",
    )


def test_fifty_commands_are_fine() -> None:
    decl = v2_pipeline()
    action_of(decl, 1)["commands"] = ["echo hi"] * 50
    validate_declaration(decl, local=True)


def test_commands_need_an_input_artifact() -> None:
    decl = v2_pipeline()
    action_of(decl, 1)["inputArtifacts"] = []
    refused(
        decl,
        ACTION,
        'Stage "Build", action "Compile"',
        "Action Compile declares 0 input artifacts which is less than the minimum count (1)",
    )


def test_commands_only_on_commands_actions() -> None:
    decl = v1_pipeline()
    action_of(decl, 1)["commands"] = ["echo hi"]
    refused(
        decl,
        ACTION,
        'action "Approve"',
        "The following action cannot contain a commands field: Approve",
        "Approval/AWS/Manual",
    )


# --------------------------------------------------------------------------- artifact store


def test_artifact_store_and_stores_together() -> None:
    decl = v1_pipeline()
    decl["artifactStores"] = {"us-east-1": {"type": "S3", "location": "bucket-east"}}
    refused(decl, IS, "artifactStore", "not both")


def test_artifact_store_required_for_aws_only() -> None:
    decl = v1_pipeline()
    del decl["artifactStore"]
    refused(decl, IS, "artifactStore", local=False)
    validate_declaration(decl, local=True)


# --------------------------------------------------------------------------- local rules (step 3)


def test_supported_local_providers() -> None:
    assert {
        ("Source", "AWS", "CodeCommit"),
        ("Source", "AWS", "CodeStarSourceConnection"),
        ("Compute", "AWS", "Commands"),
        ("Approval", "AWS", "Manual"),
        ("Source", "AWS", "S3"),
        ("Deploy", "AWS", "S3"),
        ("Deploy", "AWS", "CodeDeploy"),
        ("Build", "AWS", "CodeBuild"),
        ("Test", "AWS", "CodeBuild"),
    } == SUPPORTED_LOCAL_PROVIDERS


def test_unsupported_provider_is_refused_locally_only() -> None:
    decl = v2_pipeline()
    decl["stages"][1]["actions"] = [
        {
            "name": "Deploy",
            "actionTypeId": {
                "category": "Deploy",
                "owner": "AWS",
                "provider": "ECS",
                "version": "1",
            },
            "configuration": {"ClusterName": "c", "ServiceName": "s"},
            "inputArtifacts": [{"name": "SourceArtifact"}],
        }
    ]
    validate_declaration(decl, local=False)
    refused(
        decl,
        ACTION,
        'Stage "Build", action "Deploy"',
        "ECS",
        "PIPEBOT_BACKEND=aws",
        "Compute/AWS/Commands",
    )


def test_unsupported_source_suggests_local_sources() -> None:
    decl = v1_pipeline()
    action_of(decl, 0)["actionTypeId"]["provider"] = "ECR"
    action_of(decl, 0)["configuration"] = {"RepositoryName": "app"}
    validate_declaration(decl, local=False)
    refused(
        decl,
        ACTION,
        "ECR",
        "PIPEBOT_BACKEND=aws",
        "CodeCommit",
        "CodeStarSourceConnection",
        "Source/AWS/S3",
    )


def test_unsupported_approval_suggests_manual() -> None:
    decl = v1_pipeline()
    action_of(decl, 1)["actionTypeId"]["owner"] = "Custom"
    refused(decl, ACTION, "Approval/Custom/Manual", "Approval/AWS/Manual")


@pytest.mark.parametrize("local", [True, False])
@pytest.mark.parametrize("missing", ["RepositoryName", "BranchName"])
def test_codecommit_configuration_required(missing: str, local: bool) -> None:
    """Both are "Required: Yes" in the CodeCommit action reference: refused on both backends."""
    decl = v1_pipeline()
    del action_of(decl, 0)["configuration"][missing]
    refused(
        decl,
        ACTION,
        'Stage "Source", action "Source"',
        f"Action configuration for action Source is missing required configuration {missing}",
        local=local,
    )


def test_codestar_configuration_required_locally() -> None:
    decl = v1_pipeline()
    action_of(decl, 0)["actionTypeId"]["provider"] = "CodeStarSourceConnection"
    refused(decl, ACTION, "FullRepositoryId")
    action_of(decl, 0)["configuration"] = {"FullRepositoryId": "acme/app"}
    refused(decl, ACTION, "BranchName")


@pytest.mark.parametrize("repository", ["noslash", "a/b/c", "../app", "acme/..", "/app"])
def test_full_repository_id_must_be_owner_slash_repo(repository: str) -> None:
    decl = v1_pipeline()
    action_of(decl, 0)["actionTypeId"]["provider"] = "CodeStarSourceConnection"
    action_of(decl, 0)["configuration"] = {"FullRepositoryId": repository, "BranchName": "main"}
    refused(decl, ACTION, "FullRepositoryId", "owner/repository")


@pytest.mark.parametrize("name", ["..", "a/b", "../../etc"])
def test_repository_name_cannot_escape(name: str) -> None:
    decl = v1_pipeline()
    action_of(decl, 0)["configuration"]["RepositoryName"] = name
    refused(decl, ACTION, "RepositoryName")


@pytest.mark.parametrize("branch", ["-x", "a..b", "a b", "feature/", ".hidden", "x.lock", "a@{1}"])
def test_branch_name_must_be_a_git_branch(branch: str) -> None:
    decl = v1_pipeline()
    action_of(decl, 0)["configuration"]["BranchName"] = branch
    validate_declaration(decl, local=False)
    refused(decl, ACTION, "BranchName")


def test_variables_in_source_configuration_are_left_to_the_engine() -> None:
    decl = v2_pipeline()
    action_of(decl, 0)["configuration"]["BranchName"] = "#{variables.BRANCH}"
    validate_declaration(decl, local=True)


# --------------------------------------------------------------------------- shared declarations


def test_shared_pipeline_declarations_exist() -> None:
    assert SHARED_PIPELINES.is_dir(), f"missing directory {SHARED_PIPELINES}"
    assert SHARED_PIPELINE_FILES, f"no *.json declarations in {SHARED_PIPELINES}"


@pytest.mark.parametrize("path", SHARED_PIPELINE_FILES, ids=lambda path: path.name)
def test_shared_declarations(path: Path) -> None:
    pipeline, tags = split_declaration(parse_declaration_text(path.read_text()))
    result = validate_declaration(pipeline, local=False)
    assert result["name"] == pipeline["name"]
    assert all(set(tag) == {"key", "value"} for tag in tags)

    aws_only = [
        action["actionTypeId"]["provider"]
        for stage in pipeline["stages"]
        for action in stage["actions"]
        if tuple(action["actionTypeId"][k] for k in ("category", "owner", "provider"))
        not in SUPPORTED_LOCAL_PROVIDERS
    ]
    if not aws_only:
        # Every provider runs locally (S3, CodeDeploy, ...): the declaration runs as written.
        assert validate_declaration(pipeline, local=True)["name"] == pipeline["name"]
        return
    error = refused(pipeline, ACTION, aws_only[0], "PIPEBOT_BACKEND=aws")
    assert aws_only[0] in {"S3", "CodeDeploy", "CodeBuild", "Lambda", "CloudFormation", "ECS"}
    assert error.message.startswith("Stage ")


# --------------------------------------------------------------------------- text and documents


def test_json_with_outer_key_metadata_and_tags() -> None:
    document = {
        "pipeline": v1_pipeline(),
        "metadata": {"pipelineArn": "arn:aws:codepipeline:us-east-1:1:release", "created": 1.5},
        "tags": [{"key": "team", "value": "ops"}],
    }
    pipeline, tags = split_declaration(parse_declaration_text(json.dumps(document, indent=2)))
    assert pipeline == v1_pipeline()
    assert tags == [{"key": "team", "value": "ops"}]
    validate_declaration(pipeline, local=True)


def test_json_without_outer_key() -> None:
    pipeline, tags = split_declaration(parse_declaration_text(json.dumps(v2_pipeline())))
    assert pipeline == v2_pipeline()
    assert tags == []


@pytest.mark.parametrize("outer", [True, False])
def test_yaml_with_and_without_outer_key(outer: bool) -> None:
    document: dict[str, Any] = (
        {"pipeline": v2_pipeline(), "metadata": {"updated": 3}} if outer else v2_pipeline()
    )
    if not outer:
        document["metadata"] = {"updated": 3}
    text = yaml.safe_dump(document, sort_keys=False)
    pipeline, _ = split_declaration(parse_declaration_text(text))
    assert "metadata" not in pipeline
    assert pipeline == v2_pipeline()
    validate_declaration(pipeline, local=True)


def test_code_fence_is_removed() -> None:
    text = "```json\n" + json.dumps({"pipeline": v1_pipeline()}) + "\n```"
    pipeline, _ = split_declaration(parse_declaration_text(text))
    assert pipeline == v1_pipeline()


def test_handwritten_yaml() -> None:
    text = """
pipeline:
  name: release
  roleArn: arn:aws:iam::123456789012:role/pipebot
  pipelineType: V2
  stages:
    - name: Source
      actions:
        - name: Source
          actionTypeId: {category: Source, owner: AWS, provider: CodeCommit, version: "1"}
          configuration: {RepositoryName: app, BranchName: main}
          outputArtifacts: [{name: SourceArtifact}]
    - name: Test
      actions:
        - name: Unit
          actionTypeId: {category: Compute, owner: AWS, provider: Commands, version: "1"}
          inputArtifacts: [{name: SourceArtifact}]
          commands:
            - pytest -q
"""
    pipeline, _ = split_declaration(parse_declaration_text(text))
    result = validate_declaration(pipeline, local=True)
    assert action_of(result, 1)["commands"] == ["pytest -q"]


def test_yaml_unquoted_boolean_gets_a_hint() -> None:
    text = yaml.safe_dump(v1_pipeline()).replace("BranchName: main", "BranchName: false")
    pipeline, _ = split_declaration(parse_declaration_text(text))
    refused(pipeline, IS, "BranchName", "quote")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('{"pipeline": {"name": "x",\n  "stages": [}', ("JSON", "line 2", "column")),
        ("pipeline:\n  name: [x\n  stages: 1\n", ("YAML", "line", "column")),
        ("pipeline:\n\tname: x\n", ("YAML", "line 2")),
        ("", ("empty",)),
        ("   \n", ("empty",)),
        ("[1, 2]", ("mapping", "list")),
        ("just text", ("mapping", "string")),
        ("null", ("mapping",)),
        ("a: &a [*a]\n", ()),
    ],
)
def test_malformed_text(text: str, fragments: tuple[str, ...]) -> None:
    with pytest.raises(DeclarationError) as info:
        split_declaration(parse_declaration_text(text))
    assert info.value.code == IS
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message


def test_yaml_alias_bomb_is_refused() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    document = parse_declaration_text("\n".join(lines))
    with pytest.raises(DeclarationError) as info:
        split_declaration(document)
    assert info.value.code == IS
    assert "too large" in info.value.message


def test_unknown_top_level_key_next_to_pipeline() -> None:
    with pytest.raises(DeclarationError) as info:
        split_declaration({"pipeline": v1_pipeline(), "extra": 1})
    assert info.value.code == IS
    assert '"extra"' in info.value.message


def test_pipeline_key_must_hold_a_mapping() -> None:
    with pytest.raises(DeclarationError) as info:
        split_declaration({"pipeline": [1]})
    assert info.value.code == IS


@pytest.mark.parametrize(
    ("tags", "code", "fragment"),
    [
        ([{"key": "a"}], TAGS, "value"),
        ({"key": "a", "value": "b"}, TAGS, "tags"),
        ([{"key": "", "value": "b"}], TAGS, "key"),
        ([{"key": "a", "value": "b"}, {"key": "a", "value": "c"}], TAGS, "more than once"),
        ([{"key": "aws:owner", "value": "b"}], TAGS, "reserved"),
        ([{"key": f"k{i}", "value": ""} for i in range(51)], "TooManyTagsException", "50"),
    ],
)
def test_invalid_tags(tags: Any, code: str, fragment: str) -> None:
    with pytest.raises(DeclarationError) as info:
        split_declaration({"pipeline": v1_pipeline(), "tags": tags})
    assert info.value.code == code
    assert fragment in info.value.message


def test_error_codes_are_aws_codes() -> None:
    assert DECLARATION_ERROR_CODES == AWS_CODES


# --------------------------------------------------------------------------- hypothesis


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["Source", "Compute", "AWS", "Commands", "V2", "QUEUED", "", "x" * 120])
)
FIELD_NAMES = [
    "name",
    "roleArn",
    "stages",
    "actions",
    "actionTypeId",
    "category",
    "owner",
    "provider",
    "version",
    "runOrder",
    "configuration",
    "inputArtifacts",
    "outputArtifacts",
    "commands",
    "namespace",
    "variables",
    "triggers",
    "pipelineType",
    "executionMode",
    "onFailure",
    "conditions",
    "result",
    "artifactStore",
    "timeoutInMinutes",
    "pipeline",
    "tags",
    "metadata",
    "key",
    "value",
]
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=25,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


SAME_TYPE_STRINGS = [
    "Source",
    "Build",
    "Approve",
    "Compile",
    "SourceArtifact",
    "BuildArtifact",
    "Compute",
    "Approval",
    "Deploy",
    "AWS",
    "Custom",
    "Commands",
    "Manual",
    "CodeCommit",
    "CodeStarSourceConnection",
    "CodeBuild",
    "S3",
    "V1",
    "V2",
    "QUEUED",
    "PARALLEL",
    "SUPERSEDED",
    "FAIL",
    "ROLLBACK",
    "bad name",
    "",
    "-x",
    "..",
    "a/b",
]
OPERATIONS = [
    "delete",
    "replace",
    "wrong-type",
    "duplicate",
    "unknown-key",
    "same-type",
    "same-type",
    "same-type",
    "rename-duplicate",
]


def rich_pipeline() -> dict[str, Any]:
    """A V2 pipeline using most features, so that mutations reach most rules."""
    decl = v2_pipeline()
    action_of(decl, 0)["namespace"] = "SourceVariables"
    decl["stages"][1]["actions"].append(
        commands_action("Test", inputs=("BuildArtifact", "SourceArtifact"), run_order=2)
    )
    decl["stages"][1]["onFailure"] = {"result": "FAIL"}
    gate = approval()
    gate["timeoutInMinutes"] = 60
    decl["stages"].append({"name": "Approve", "actions": [gate]})
    return decl


def _same_type_value(data: st.DataObject, current: Any) -> Any:
    if isinstance(current, bool):
        return not current
    if isinstance(current, int):
        return data.draw(st.integers(min_value=-2, max_value=1001), label="int")
    if isinstance(current, str):
        return data.draw(st.sampled_from(SAME_TYPE_STRINGS), label="str")
    if isinstance(current, list) and current:
        return data.draw(st.permutations(current), label="permutation")
    return current


def _garble(data: st.DataObject, decl: dict[str, Any]) -> dict[str, Any]:
    for _ in range(data.draw(st.integers(min_value=1, max_value=6), label="mutations")):
        paths = [p for p in _paths(decl) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        parent: Any = decl
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        operation = data.draw(st.sampled_from(OPERATIONS), label="operation")
        if operation == "delete":
            del parent[last]
        elif operation == "replace":
            parent[last] = data.draw(json_values, label="value")
        elif operation == "wrong-type":
            current = parent[last]
            parent[last] = data.draw(
                st.sampled_from([None, True, 0, 1000, -1, "", "text", [], {}, [current], 1.5]),
                label="wrong",
            )
        elif operation == "same-type":
            parent[last] = _same_type_value(data, parent[last])
        elif operation == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        elif operation == "unknown-key" and isinstance(parent[last], dict):
            key = data.draw(st.sampled_from(FIELD_NAMES) | st.text(max_size=5), label="key")
            parent[last][key] = data.draw(json_values, label="value")
        elif operation == "rename-duplicate" and isinstance(parent[last], dict):
            parent[last]["name"] = "Source"  # a stage or action renamed to a duplicate
    return decl


def _only_declaration_errors(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except DeclarationError as error:
        assert error.code in AWS_CODES, error.code
        assert error.message
        return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    base=st.sampled_from([v1_pipeline, v2_pipeline, rich_pipeline]),
    local=st.booleans(),
)
def test_garbled_declarations_only_raise_declaration_errors(
    data: st.DataObject, base: Any, local: bool
) -> None:
    decl = _garble(data, base())
    result = _only_declaration_errors(validate_declaration, decl, local=local)
    if result is not None:
        assert isinstance(result, dict)
        assert {"version", "pipelineType", "executionMode"} <= set(result)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), local=st.booleans())
def test_garbled_documents_through_text_only_raise_declaration_errors(
    data: st.DataObject, local: bool
) -> None:
    document = _garble(data, {"pipeline": rich_pipeline(), "tags": [{"key": "a", "value": "b"}]})
    dumps: list[Callable[[Any], str]] = [json.dumps, yaml.safe_dump]
    dump = data.draw(st.sampled_from(dumps), label="format")
    text = dump(document)

    def run() -> None:
        pipeline, _ = split_declaration(parse_declaration_text(text))
        validate_declaration(pipeline, local=local)

    _only_declaration_errors(run)


@settings(max_examples=300, deadline=None)
@given(
    document=st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), json_values),
    local=st.booleans(),
)
def test_random_objects_only_raise_declaration_errors(
    document: dict[Any, Any], local: bool
) -> None:
    _only_declaration_errors(validate_declaration, document, local=local)

    def run() -> None:
        pipeline, _ = split_declaration(document)
        validate_declaration(pipeline, local=local)

    _only_declaration_errors(run)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200) | st.text(alphabet='{}[]:,"-\n #&*!|>a1', max_size=60))
def test_random_text_only_raises_invalid_structure(text: str) -> None:
    try:
        parse_declaration_text(text)
    except DeclarationError as error:
        assert error.code == IS
