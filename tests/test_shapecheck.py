"""Tests for the botocore output-shape checker in ``tests/shapecheck.py``."""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.shapecheck import assert_output_shape, output_problems

UTC = datetime.UTC
T0 = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
T1 = datetime.datetime(2024, 5, 1, 12, 5, 0, tzinfo=UTC)


def _pipeline_state() -> dict[str, Any]:
    """A GetPipelineState response shaped exactly like boto3's."""
    return {
        "pipelineName": "release",
        "pipelineVersion": 3,
        "stageStates": [
            {
                "stageName": "Source",
                "inboundTransitionState": {"enabled": True},
                "actionStates": [
                    {
                        "actionName": "Checkout",
                        "currentRevision": {
                            "revisionId": "0123456789abcdef",
                            "revisionChangeId": "0123456789abcdef",
                            "created": T0,
                        },
                        "latestExecution": {
                            "actionExecutionId": "a-1",
                            "status": "Succeeded",
                            "summary": "Initial commit",
                            "lastStatusChange": T0,
                            "externalExecutionId": "0123456789abcdef",
                        },
                        "entityUrl": "https://console.aws.amazon.com/codecommit/repo",
                    }
                ],
                "latestExecution": {"pipelineExecutionId": "e-1", "status": "Succeeded"},
            },
            {
                "stageName": "Approve",
                "inboundTransitionState": {
                    "enabled": False,
                    "lastChangedBy": "arn:aws:iam::123456789012:user/alice",
                    "lastChangedAt": T1,
                    "disabledReason": "freeze",
                },
                "actionStates": [
                    {"actionName": "Prepare"},
                    {
                        "actionName": "Manual",
                        "latestExecution": {
                            "actionExecutionId": "a-2",
                            "status": "InProgress",
                            "lastStatusChange": T1,
                            "token": "tok-123",
                            "percentComplete": 0,
                        },
                    },
                ],
                "latestExecution": {
                    "pipelineExecutionId": "e-1",
                    "status": "InProgress",
                    "type": "STANDARD",
                },
                "inboundExecutions": [{"pipelineExecutionId": "e-0", "status": "Stopped"}],
            },
        ],
        "created": T0,
        "updated": T1,
        "ResponseMetadata": {"HTTPStatusCode": 200, "RetryAttempts": 0},
    }


def test_correct_get_pipeline_state_passes() -> None:
    response = _pipeline_state()
    assert output_problems("GetPipelineState", response) == []
    assert_output_shape("GetPipelineState", response)


def test_empty_response_passes_when_nothing_is_required() -> None:
    assert output_problems("GetPipelineState", {}) == []


def _set_unknown_key(r: dict[str, Any]) -> None:
    r["stageStates"][0]["actionStates"][0]["latestExecution"]["statusText"] = "ok"


def _set_bad_enum(r: dict[str, Any]) -> None:
    r["stageStates"][1]["actionStates"][1]["latestExecution"]["status"] = "Running"


def _set_naive_datetime(r: dict[str, Any]) -> None:
    r["stageStates"][1]["inboundTransitionState"]["lastChangedAt"] = datetime.datetime(2024, 5, 1)


def _drop_required(r: dict[str, Any]) -> None:
    del r["stageStates"][0]["actionStates"][0]["currentRevision"]["revisionChangeId"]


def _wrong_type_in_nested_list(r: dict[str, Any]) -> None:
    r["stageStates"][1]["actionStates"][1]["latestExecution"]["percentComplete"] = "50"


def _bool_for_int(r: dict[str, Any]) -> None:
    r["pipelineVersion"] = True


def _int_for_bool(r: dict[str, Any]) -> None:
    r["stageStates"][0]["inboundTransitionState"]["enabled"] = 1


def _string_too_short(r: dict[str, Any]) -> None:
    r["stageStates"][0]["actionStates"][0]["latestExecution"]["summary"] = ""


def _string_too_long(r: dict[str, Any]) -> None:
    r["stageStates"][0]["stageName"] = "x" * 101


def _str_for_timestamp(r: dict[str, Any]) -> None:
    r["created"] = "2024-05-01T12:00:00Z"


def _dict_for_list(r: dict[str, Any]) -> None:
    r["stageStates"][1]["inboundExecutions"] = {"pipelineExecutionId": "e-0"}


def _str_for_structure(r: dict[str, Any]) -> None:
    r["stageStates"][0]["latestExecution"] = "Succeeded"


def _bad_item_in_list(r: dict[str, Any]) -> None:
    r["stageStates"][1]["actionStates"][0] = "Prepare"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            _set_unknown_key,
            "stageStates[0].actionStates[0].latestExecution.statusText: "
            "unknown key (not a member of ActionExecution)",
            id="unknown-key",
        ),
        pytest.param(
            _set_bad_enum,
            "stageStates[1].actionStates[1].latestExecution.status: 'Running' is not one of "
            "ActionExecutionStatus enum ['InProgress', 'Abandoned', 'Succeeded', 'Failed']",
            id="bad-enum",
        ),
        pytest.param(
            _set_naive_datetime,
            "stageStates[1].inboundTransitionState.lastChangedAt: expected timezone-aware "
            "datetime, got naive datetime.datetime(2024, 5, 1, 0, 0)",
            id="naive-datetime",
        ),
        pytest.param(
            _drop_required,
            "stageStates[0].actionStates[0].currentRevision.revisionChangeId: "
            "required member missing",
            id="missing-required",
        ),
        pytest.param(
            _wrong_type_in_nested_list,
            "stageStates[1].actionStates[1].latestExecution.percentComplete: expected int, got str",
            id="wrong-type-nested-list",
        ),
        pytest.param(_bool_for_int, "pipelineVersion: expected int, got bool", id="bool-not-int"),
        pytest.param(
            _int_for_bool,
            "stageStates[0].inboundTransitionState.enabled: expected bool, got int",
            id="int-not-bool",
        ),
        pytest.param(
            _string_too_short,
            "stageStates[0].actionStates[0].latestExecution.summary: "
            "length 0 is below ExecutionSummary min 1",
            id="string-min",
        ),
        pytest.param(
            _string_too_long,
            "stageStates[0].stageName: length 101 is above StageName max 100",
            id="string-max",
        ),
        pytest.param(
            _str_for_timestamp, "created: expected datetime, got str", id="str-not-timestamp"
        ),
        pytest.param(
            _dict_for_list,
            "stageStates[1].inboundExecutions: expected list, got dict",
            id="dict-not-list",
        ),
        pytest.param(
            _str_for_structure,
            "stageStates[0].latestExecution: expected dict (structure StageExecution), got str",
            id="str-not-structure",
        ),
        pytest.param(
            _bad_item_in_list,
            "stageStates[1].actionStates[0]: expected dict (structure ActionState), got str",
            id="bad-list-item",
        ),
    ],
)
def test_single_defect_gives_exactly_one_problem(
    mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    response = _pipeline_state()
    mutate(response)
    assert output_problems("GetPipelineState", response) == [expected]
    with pytest.raises(AssertionError, match="1 problem"):
        assert_output_shape("GetPipelineState", response)


def test_several_defects_are_all_reported() -> None:
    response = _pipeline_state()
    _set_unknown_key(response)
    _drop_required(response)
    _set_naive_datetime(response)
    problems = output_problems("GetPipelineState", response)
    assert len(problems) == 3
    with pytest.raises(AssertionError) as excinfo:
        assert_output_shape("GetPipelineState", response)
    message = str(excinfo.value)
    assert "GetPipelineState" in message
    for problem in problems:
        assert problem in message


def test_response_metadata_ignored_only_at_top_level() -> None:
    response = _pipeline_state()
    response["stageStates"][0]["ResponseMetadata"] = {}
    assert output_problems("GetPipelineState", response) == [
        "stageStates[0].ResponseMetadata: unknown key (not a member of StageState)"
    ]


def _get_pipeline() -> dict[str, Any]:
    return {
        "pipeline": {
            "name": "release",
            "roleArn": "arn:aws:iam::123456789012:role/cp",
            "artifactStore": {"type": "S3", "location": "bucket"},
            "stages": [
                {
                    "name": "Source",
                    "actions": [
                        {
                            "name": "Src",
                            "actionTypeId": {
                                "category": "Source",
                                "owner": "AWS",
                                "provider": "CodeCommit",
                                "version": "1",
                            },
                            "configuration": {"RepositoryName": "repo", "BranchName": "main"},
                            "outputArtifacts": [{"name": "out"}],
                        }
                    ],
                }
            ],
            "version": 1,
        },
        "metadata": {
            "pipelineArn": "arn:aws:codepipeline:us-east-1:123456789012:release",
            "created": T0,
            "updated": T0,
        },
    }


def test_map_values_and_keys_are_checked() -> None:
    response = _get_pipeline()
    assert output_problems("GetPipeline", response) == []
    config = response["pipeline"]["stages"][0]["actions"][0]["configuration"]
    config["BranchName"] = 5
    config["x" * 51] = "v"
    assert output_problems("GetPipeline", response) == [
        "pipeline.stages[0].actions[0].configuration['BranchName']: expected str, got int",
        f"pipeline.stages[0].actions[0].configuration['{'x' * 51}'] (map key): "
        "length 51 is above ActionConfigurationKey max 50",
    ]
    response["pipeline"]["stages"][0]["actions"][0]["configuration"] = [("a", "b")]
    assert output_problems("GetPipeline", response) == [
        "pipeline.stages[0].actions[0].configuration: expected dict (map), got list"
    ]


def test_required_members_at_top_level() -> None:
    response = _get_pipeline()
    del response["pipeline"]["name"]
    assert output_problems("GetPipeline", response) == ["pipeline.name: required member missing"]
    assert output_problems("StartPipelineExecution", {}) == []
    assert output_problems("PutWebhook", {"webhook": {}}) == [
        "webhook.definition: required member missing",
        "webhook.url: required member missing",
    ]


def test_operations_without_output() -> None:
    assert output_problems("DeletePipeline", {"ResponseMetadata": {}}) == []
    assert output_problems("DeletePipeline", {"deleted": True}) == [
        "deleted: unknown key (DeletePipeline has no output)"
    ]
    assert output_problems("TagResource", {"ResponseMetadata": {}}) == []


def test_aware_timestamps_with_any_offset_pass() -> None:
    response = _get_pipeline()
    response["metadata"]["created"] = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    response["metadata"]["updated"] = datetime.datetime(
        2024, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )
    assert output_problems("GetPipeline", response) == []


# --- moto round trip ----------------------------------------------------------------------

_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "codepipeline.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield


def test_moto_responses_pass(aws: None) -> None:
    iam = boto3.client("iam", region_name="us-east-1")
    role_arn = iam.create_role(
        RoleName="codepipeline-service",
        AssumeRolePolicyDocument=json.dumps(_TRUST_POLICY),
    )["Role"]["Arn"]
    client = boto3.client("codepipeline", region_name="us-east-1")
    pipeline = copy.deepcopy(_get_pipeline()["pipeline"])
    pipeline["roleArn"] = role_arn
    pipeline["stages"].append(
        {
            "name": "Approve",
            "actions": [
                {
                    "name": "Manual",
                    "actionTypeId": {
                        "category": "Approval",
                        "owner": "AWS",
                        "provider": "Manual",
                        "version": "1",
                    },
                }
            ],
        }
    )
    del pipeline["version"]

    created = client.create_pipeline(pipeline=pipeline, tags=[{"key": "team", "value": "x"}])
    assert_output_shape("CreatePipeline", created)
    got = client.get_pipeline(name="release")
    assert_output_shape("GetPipeline", got)
    listed = client.list_pipelines()
    assert_output_shape("ListPipelines", listed)
    assert [p["name"] for p in listed["pipelines"]] == ["release"]

    # Sanity: the moto responses are non-trivial, so passing means something.
    assert got["pipeline"]["stages"][1]["actions"][0]["actionTypeId"]["provider"] == "Manual"
    assert got["metadata"]["created"].tzinfo is not None
