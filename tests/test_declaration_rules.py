"""Issue 11, cases 2 and 4: declaration refusals carry AWS's code, and AWS's documented
declaration rules are checked.

Each refusal test names the public report that quotes AWS's answer (case 2) or the page that
documents the rule (case 4). Every rule here is AWS's, so each holds with ``local=False`` (the
AWS backend's pre-validation) as well as for the embedded engine; the declarations pipebot ships
or documents must keep validating for AWS.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from benchmarks.engine import _declaration as benchmark_declaration
from bot.demo import demo_declaration
from bot.engine.declaration import (
    DECLARATION_ERROR_CODES,
    parse_declaration_text,
    split_declaration,
    validate_declaration,
)
from bot.engine.errors import DeclarationError
from tests.blockcheck import release_declaration
from tests.test_contract import Backend
from tests.test_slack_aws import s3_codedeploy_declaration

IS = "InvalidStructureException"
STAGE = "InvalidStageDeclarationException"
ACTION = "InvalidActionDeclarationException"
VALIDATION = "ValidationException"

ROLE = "arn:aws:iam::123456789012:role/pipebot"
CONNECTION = "arn:aws:codestar-connections:us-east-1:123456789012:connection/example"
STORE = {"type": "S3", "location": "pipebot-artifacts"}
SHARED_PIPELINES = Path(__file__).resolve().parent / "data" / "pipelines"  # from AWS's user guide
BOTH = pytest.mark.parametrize("local", [True, False], ids=["local", "aws"])


# --------------------------------------------------------------------------- fixtures


def action(
    name: str,
    kind: tuple[str, str, str],
    *,
    inputs: tuple[str, ...] = (),
    outputs: tuple[str, ...] = (),
    **extra: Any,
) -> dict[str, Any]:
    category, owner, provider = kind
    return {
        "name": name,
        "actionTypeId": {
            "category": category,
            "owner": owner,
            "provider": provider,
            "version": "1",
        },
        "inputArtifacts": [{"name": n} for n in inputs],
        "outputArtifacts": [{"name": n} for n in outputs],
        **extra,
    }


def github(name: str = "GitHub", output: str = "SourceArtifact") -> dict[str, Any]:
    return action(
        name,
        ("Source", "AWS", "CodeStarSourceConnection"),
        outputs=(output,),
        configuration={
            "ConnectionArn": CONNECTION,
            "FullRepositoryId": "acme/app",
            "BranchName": "main",
        },
    )


def codebuild(name: str = "Build", inputs: tuple[str, ...] = ("SourceArtifact",)) -> dict[str, Any]:
    return action(
        name, ("Build", "AWS", "CodeBuild"), inputs=inputs, configuration={"ProjectName": "app"}
    )


def compute(name: str = "Compile", **extra: Any) -> dict[str, Any]:
    return action(
        name,
        ("Compute", "AWS", "Commands"),
        inputs=("SourceArtifact",),
        commands=["make"],
        **extra,
    )


def gate(name: str = "Approve") -> dict[str, Any]:
    return action(name, ("Approval", "AWS", "Manual"))


def pipeline(*later: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A V2 pipeline: a GitHub (connection) source, then one stage per given stage."""
    return {
        "name": "release",
        "roleArn": ROLE,
        "pipelineType": "V2",
        "artifactStore": STORE,
        "stages": [{"name": "Source", "actions": [github()]}, *later],
        **extra,
    }


def stage(name: str, *actions: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "actions": list(actions), **extra}


def with_trigger(**git: Any) -> dict[str, Any]:
    trigger = {
        "providerType": "CodeStarSourceConnection",
        "gitConfiguration": {"sourceActionName": "GitHub", **git},
    }
    return pipeline(stage("Gate", gate()), triggers=[trigger])


def refused(decl: dict[str, Any], code: str, *fragments: str, local: bool) -> DeclarationError:
    with pytest.raises(DeclarationError) as info:
        validate_declaration(decl, local=local)
    error = info.value
    assert error.code == code, error.message
    for fragment in fragments:
        assert fragment in error.message, (fragment, error.message)
    return error


def accepted(decl: dict[str, Any]) -> dict[str, Any]:
    """Valid for AWS; for the engine too, unless only step 3 (what it cannot run) refuses it."""
    result = validate_declaration(decl, local=False)
    try:
        validate_declaration(decl, local=True)
    except DeclarationError as error:
        assert "AWS backend" in error.message or "PIPEBOT_BACKEND=aws" in error.message, error
    return result


# --------------------------------------------------------------------------- case 2: AWS's codes


@BOTH
def test_duplicate_namespace_is_an_invalid_action_declaration(local: bool) -> None:
    """https://github.com/aws/aws-cdk/issues/16142: InvalidActionDeclarationException."""
    decl = pipeline(stage("Build", compute(namespace="Vars"), compute("Test", namespace="Vars")))
    refused(
        decl,
        ACTION,
        "Namespaces must be unique across the pipeline definition. The following occur more "
        "than once in the pipeline.",
        "StageName=[Build], ActionName=[Compile], Namespace=[Vars]",
        "StageName=[Build], ActionName=[Test], Namespace=[Vars]",
        local=local,
    )


@BOTH
def test_namespaces_in_different_stages_must_differ_too(local: bool) -> None:
    decl = pipeline(stage("Build", compute(namespace="Vars")))
    decl["stages"][0]["actions"][0]["namespace"] = "Vars"
    refused(decl, ACTION, "StageName=[Source], ActionName=[GitHub], Namespace=[Vars]", local=local)


@BOTH
def test_action_name_pattern_is_a_validation_exception(local: bool) -> None:
    """https://github.com/aws-cloudformation/cfn-lint/issues/2149 quotes AWS's answer."""
    decl = pipeline(stage("Build", compute("Build Step")))
    error = refused(decl, VALIDATION, local=local)
    assert error.message == (
        'Stage "Build", action "Build Step": 1 validation error detected: Value "Build Step" at '
        "'pipeline.stages.2.member.actions.1.member.name' failed to satisfy constraint: Member "
        r"must satisfy regular expression pattern: [A-Za-z0-9.@\-_]+"
    )


@BOTH
def test_run_order_and_timeout_ranges_are_validation_exceptions(local: bool) -> None:
    """Model constraints (ActionRunOrder 1-999, ActionTimeout 5-86400): ValidationException."""
    decl = pipeline(stage("Build", compute(runOrder=1000)))
    refused(decl, VALIDATION, "Member must have value less than or equal to 999", local=local)
    approval = gate()
    approval["timeoutInMinutes"] = 86401
    refused(
        pipeline(stage("Gate", approval)),
        VALIDATION,
        "'pipeline.stages.2.member.actions.1.member.timeoutInMinutes'",
        "Member must have value less than or equal to 86400",
        local=local,
    )


@BOTH
def test_explicit_v1_with_triggers_is_an_invalid_structure(local: bool) -> None:
    """https://github.com/cloudposse/terraform-aws-ecs-codepipeline/issues/145:
    ``InvalidStructureException: Triggers on tag can only be used with V2 pipelines``."""
    decl = with_trigger(push=[{"tags": {"includes": ["v*"]}}])
    decl["pipelineType"] = "V1"
    refused(decl, IS, '"triggers" can only be used with V2 pipelines', local=local)


@BOTH
def test_missing_input_artifact_uses_aws_count_wording(local: bool) -> None:
    """https://github.com/awsdocs/aws-cloudformation-user-guide/pull/941:
    ``InvalidActionDeclarationException: Action X declares 0 input artifacts which is less than
    the minimum count (1)``."""
    refused(
        pipeline(stage("Build", codebuild(inputs=()))),
        ACTION,
        "Action Build declares 0 input artifacts which is less than the minimum count (1)",
        local=local,
    )


@BOTH
def test_empty_commands_use_aws_wording(local: bool) -> None:
    """https://github.com/hashicorp/terraform-provider-aws/issues/42997."""
    build = compute()
    del build["commands"]
    refused(
        pipeline(stage("Build", build)),
        ACTION,
        "Action Compile must have a non-empty commands field",
        local=local,
    )


def test_every_code_is_one_createpipeline_can_return() -> None:
    assert {IS, STAGE, ACTION, VALIDATION} <= DECLARATION_ERROR_CODES


# --------------------------------------------------------------------------- case 4: triggers


@BOTH
def test_push_filter_with_branches_and_tags_is_refused(local: bool) -> None:
    """https://github.com/hashicorp/terraform-provider-aws/issues/43105 (UpdatePipeline)."""
    decl = with_trigger(
        push=[{"branches": {"includes": ["dev"]}, "tags": {"includes": ["*hotfix*"]}}]
    )
    refused(
        decl,
        IS,
        "Trigger 1, push filter 1: The trigger configuration for the source action is not "
        "valid. Make sure to choose valid filter combinations.",
        "tags + branches given",
        local=local,
    )


@BOTH
@pytest.mark.parametrize(
    "criteria",
    [
        {"filePaths": {"includes": ["src/**"]}},
        {"tags": {"includes": ["v*"]}, "filePaths": {"includes": ["src/**"]}},
        {
            "tags": {"includes": ["v*"]},
            "branches": {"includes": ["main"]},
            "filePaths": {"includes": ["src/**"]},
        },
        {},
    ],
    ids=["file-paths-alone", "tags-and-file-paths", "all-three", "empty"],
)
def test_other_invalid_push_combinations(criteria: dict[str, Any], local: bool) -> None:
    """Valid push combinations: tags; branches; branches + file paths [pipelines-filter]."""
    refused(with_trigger(push=[criteria]), IS, "valid filter combinations", local=local)


@BOTH
@pytest.mark.parametrize(
    "criteria",
    [
        {"filePaths": {"includes": ["src/**"]}},
        {"events": ["OPEN"]},
        {"events": ["CLOSED"], "filePaths": {"includes": ["src/**"]}},
    ],
    ids=["file-paths-alone", "events-alone", "events-and-file-paths"],
)
def test_invalid_pull_request_combinations(criteria: dict[str, Any], local: bool) -> None:
    """Valid pull-request combinations: branches; branches + file paths [pipelines-filter]."""
    decl = with_trigger(pullRequest=[criteria])
    refused(decl, IS, "pullRequest filter 1", "valid filter combinations", local=local)


@pytest.mark.parametrize(
    "git",
    [
        {},
        {"push": [{"tags": {"includes": ["v*"], "excludes": ["v0*"]}}]},
        {"push": [{"branches": {"excludes": ["wip/**"]}}]},
        {"push": [{"branches": {"includes": ["main"]}, "filePaths": {"includes": ["src/**"]}}]},
        {
            "push": [
                {"tags": {"includes": ["v*"]}},
                {"branches": {"includes": ["main"]}},
                {"branches": {"includes": ["release/**"]}, "filePaths": {"excludes": ["*.md"]}},
            ],
            "pullRequest": [
                {"branches": {"includes": ["main"]}},
                {
                    "events": ["OPEN", "UPDATED"],
                    "branches": {"includes": ["main"]},
                    "filePaths": {"includes": ["src/**"]},
                },
            ],
        },
    ],
    ids=["no-filter", "tags", "branches", "branches-and-file-paths", "all-valid-kinds"],
)
def test_valid_trigger_combinations_are_accepted(git: dict[str, Any]) -> None:
    accepted(with_trigger(**git))


@BOTH
def test_one_trigger_per_source_action(local: bool) -> None:
    """API_GitConfiguration: "You can only specify one trigger configuration per source action";
    AWS's words in https://github.com/aws/aws-cdk/issues/28694."""
    decl = with_trigger(push=[{"tags": {"includes": ["v*"]}}])
    decl["triggers"].append(copy.deepcopy(decl["triggers"][0]))
    refused(
        decl,
        IS,
        "Trigger 2: Triggers for connection must reference a CodeStarSourceConnection action",
        "more than one trigger per source action",
        "trigger 1 already names source action",
        local=local,
    )


@BOTH
def test_triggers_need_a_connection_source_action(local: bool) -> None:
    decl = with_trigger()
    codecommit = action(
        "Mirror",
        ("Source", "AWS", "CodeCommit"),
        outputs=("MirrorArtifact",),
        configuration={"RepositoryName": "app", "BranchName": "main"},
    )
    decl["stages"][0]["actions"].append(codecommit)
    decl["triggers"][0]["gitConfiguration"]["sourceActionName"] = "Mirror"
    refused(decl, IS, "CodeStarSourceConnection action", "Source/AWS/CodeCommit", local=local)
    decl["triggers"][0]["gitConfiguration"]["sourceActionName"] = "Gate"
    refused(decl, IS, '"Gate" is not a source action of this pipeline', local=local)


@BOTH
def test_filter_list_sizes_are_the_model_s(local: bool) -> None:
    """GitPushFilterList max 3, GitBranchPatternList max 8 (API_GitConfiguration,
    API_GitBranchFilterCriteria): ValidationException from step 1."""
    eight = [f"b{i}" for i in range(8)]
    accepted(with_trigger(push=[{"branches": {"includes": eight}}] * 3))
    refused(
        with_trigger(push=[{"branches": {"includes": [*eight, "b8"]}}]),
        VALIDATION,
        "less than or equal to 8",
        local=local,
    )
    refused(
        with_trigger(push=[{"tags": {"includes": ["v*"]}}] * 4),
        VALIDATION,
        "less than or equal to 3",
        local=local,
    )


# --------------------------------------------------------------------------- case 4: other rules


@BOTH
@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (codebuild(inputs=("A", "B", "C", "D", "E", "F")), "6 input artifacts which is more"),
        (
            action(
                "Deploy",
                ("Deploy", "AWS", "CodeDeploy"),
                inputs=("SourceArtifact",),
                outputs=("Out",),
                configuration={"ApplicationName": "a", "DeploymentGroupName": "g"},
            ),
            "1 output artifacts which is more than the maximum count (0)",
        ),
        (
            action("Invoke", ("Invoke", "AWS", "Lambda"), inputs=("SourceArtifact",))
            | {"outputArtifacts": [{"name": f"O{i}"} for i in range(6)]},
            "6 output artifacts which is more than the maximum count (5)",
        ),
    ],
    ids=["codebuild-inputs", "codedeploy-outputs", "lambda-outputs"],
)
def test_artifact_counts_per_action_type(build: dict[str, Any], fragment: str, local: bool) -> None:
    """reference-action-artifacts: the valid numbers of artifacts per action type."""
    decl = pipeline(stage("Build", build))
    producers = [
        action(n, ("Source", "AWS", "S3"), outputs=(n,), configuration={"S3Bucket": "b"})
        for n in "ABCDEF"
    ]
    for producer in producers:
        producer["configuration"]["S3ObjectKey"] = "k.zip"
    decl["stages"][0]["actions"] += producers
    refused(decl, ACTION, fragment, local=local)


@BOTH
def test_custom_actions_take_at_most_five_artifacts(local: bool) -> None:
    decl = pipeline(stage("Build", action("Jenkins", ("Build", "Custom", "Jenkins"))))
    decl["stages"][1]["actions"][0]["outputArtifacts"] = [{"name": f"O{i}"} for i in range(6)]
    refused(decl, ACTION, "more than the maximum count (5) for Build/Custom/Jenkins", local=local)


def test_run_order_gaps_are_fine() -> None:
    """AWS: "The numbering of serial actions do not have to be in strict sequence"."""
    accepted(pipeline(stage("Build", compute(runOrder=1), compute("Ship", runOrder=7))))


@BOTH
def test_a_cross_region_action_needs_its_artifact_store(local: bool) -> None:
    """API_PipelineDeclaration: an artifact store for each cross-region action's Region."""
    decl = pipeline(stage("Build", codebuild() | {"region": "eu-west-1"}))
    del decl["artifactStore"]
    decl["artifactStores"] = {"us-east-1": STORE}
    refused(decl, IS, 'no artifact store for its region "eu-west-1"', '"us-east-1"', local=local)
    decl["artifactStores"]["eu-west-1"] = STORE
    accepted(decl)


@BOTH
@pytest.mark.parametrize(
    ("kind", "configuration", "missing"),
    [
        (("Source", "AWS", "S3"), {"S3Bucket": "b"}, "S3ObjectKey"),
        (("Source", "AWS", "CodeStarSourceConnection"), {"ConnectionArn": CONNECTION}, "Full"),
    ],
)
def test_required_configuration(
    kind: tuple[str, str, str], configuration: dict[str, str], missing: str, local: bool
) -> None:
    decl = pipeline(stage("Gate", gate()))
    decl["stages"][0]["actions"] = [
        action("Src", kind, outputs=("SourceArtifact",), configuration=configuration)
    ]
    refused(decl, ACTION, "is missing required configuration", missing, local=local)


def test_connection_arn_is_required_by_aws_only() -> None:
    """The embedded engine reads a local git repository: it needs no connection."""
    decl = pipeline(stage("Gate", gate()))
    del decl["stages"][0]["actions"][0]["configuration"]["ConnectionArn"]
    refused(decl, ACTION, "missing required configuration ConnectionArn", local=False)
    validate_declaration(decl, local=True)


RULE = {"name": "Alarm", "ruleTypeId": {"category": "Rule", "provider": "CloudWatchAlarm"}}
CHECK = {
    "name": "Check",
    "ruleTypeId": {"category": "Rule", "provider": "VariableCheck"},
    "configuration": {"Variable": "#{variables.X}", "Operator": "EQ", "Value": "y"},
}


@BOTH
@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("onSuccess", {"conditions": [{"result": "SKIP", "rules": [CHECK]}]}, "ROLLBACK or FAIL"),
        ("beforeEntry", {"conditions": [{"result": "ROLLBACK", "rules": [RULE]}]}, "FAIL or SKIP"),
        ("beforeEntry", {"conditions": [{"result": "SKIP", "rules": [RULE]}]}, "cannot decide"),
        ("onFailure", {"result": "SKIP"}, "SKIP can only be used with conditions evaluated"),
        (
            "onFailure",
            {
                "result": "RETRY",
                "retryConfiguration": {"retryMode": "ALL_ACTIONS"},
                "conditions": [{"result": "ROLLBACK", "rules": [RULE]}],
            },
            "cannot combine automatic retry",
        ),
    ],
    ids=["skip-on-success", "rollback-before-entry", "skip-alarm", "skip-on-failure", "retry"],
)
def test_stage_condition_rules(
    field: str, value: dict[str, Any], fragment: str, local: bool
) -> None:
    """stage-conditions, stage-retry and the skipping-stage announcement (2024-10)."""
    decl = pipeline(stage("Build", compute(), **{field: value}))
    refused(decl, STAGE, 'Stage "Build"', fragment, local=local)


@BOTH
def test_parallel_pipelines_cannot_roll_back(local: bool) -> None:
    """execution-modes: "failure conditions with a rollback result type cannot be added to a
    PARALLEL mode pipeline"."""
    decl = pipeline(stage("Build", compute(), onFailure={"result": "ROLLBACK"}))
    decl["executionMode"] = "PARALLEL"
    refused(decl, STAGE, "PARALLEL", local=local)
    decl["executionMode"] = "QUEUED"
    validate_declaration(decl, local=False)


def test_skip_before_entry_with_a_variable_check_is_valid_for_aws() -> None:
    before = {"conditions": [{"result": "SKIP", "rules": [CHECK]}]}
    validate_declaration(pipeline(stage("Build", compute(), beforeEntry=before)), local=False)


def test_v2_parameters_without_a_type_make_a_v2_pipeline() -> None:
    """API_PipelineDeclaration: "Including V2 parameters ... will result in the pipeline having
    the V2 type"; an explicit V1 is refused instead (above)."""
    decl = pipeline(stage("Build", compute()), executionMode="QUEUED")
    del decl["pipelineType"]
    assert accepted(decl)["pipelineType"] == "V2"
    plain = pipeline(stage("Gate", gate()))
    del plain["pipelineType"]
    assert accepted(plain)["pipelineType"] == "V1"


# --------------------------------------------------------------------------- real declarations


def _shipped_declarations() -> list[tuple[str, dict[str, Any]]]:
    found = [
        (path.name, split_declaration(parse_declaration_text(path.read_text()))[0])
        for path in sorted(SHARED_PIPELINES.glob("*.json"))
    ]
    found += [
        ("demo", demo_declaration()),
        ("benchmark", benchmark_declaration("bench", stages=3, actions=3, mode="QUEUED")),
        ("blockcheck-release", release_declaration()),
        ("slack-aws", s3_codedeploy_declaration("web", ROLE)["pipeline"]),
        ("contract", Backend(kind="aws", client=None, role_arn=ROLE).declaration("c")),
    ]
    return found


SHIPPED = _shipped_declarations()


def test_the_shared_declarations_are_there() -> None:
    assert [name for name, _ in SHIPPED if name.endswith(".json")], SHARED_PIPELINES


@pytest.mark.parametrize(("name", "decl"), SHIPPED, ids=[name for name, _ in SHIPPED])
def test_real_declarations_still_validate_for_aws(name: str, decl: dict[str, Any]) -> None:
    """Pre-validation for AWS must never refuse a declaration AWS accepts. The engine-only
    examples carry no artifact bucket (the engine needs none): AWS gets one added."""
    for_aws = copy.deepcopy(decl)
    if "artifactStore" not in for_aws and "artifactStores" not in for_aws:
        for_aws["artifactStore"] = STORE
    assert validate_declaration(for_aws, local=False)["name"] == decl["name"]
