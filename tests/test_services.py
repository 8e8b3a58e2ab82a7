"""PipelineOps' error mapping: every error a backend call can raise has a specific message."""

from __future__ import annotations

import botocore.session
from botocore.exceptions import ClientError

from bot.ops.pipeline_ops import ERROR_MESSAGES, describe_client_error

CALLED = (
    "CreatePipeline",
    "UpdatePipeline",
    "GetPipeline",
    "ListPipelines",
    "DeletePipeline",
    "StartPipelineExecution",
    "StopPipelineExecution",
    "RetryStageExecution",
    "PutApprovalResult",
    "GetPipelineState",
    "ListPipelineExecutions",
    "GetPipelineExecution",
    "ListActionExecutions",
    "EnableStageTransition",
    "DisableStageTransition",
)


def test_every_modeled_error_of_the_calls_we_make_has_a_message() -> None:
    model = botocore.session.get_session().get_service_model("codepipeline")
    codes = {shape.name for name in CALLED for shape in model.operation_model(name).error_shapes}
    missing = sorted(codes - set(ERROR_MESSAGES))
    assert missing == []


def test_message_keeps_aws_detail_and_unknown_codes_are_named() -> None:
    error = ClientError(
        {"Error": {"Code": "NotLatestPipelineExecutionException", "Message": "newer: abc"}},
        "RetryStageExecution",
    )
    described = describe_client_error(error)
    assert "newer execution" in described.message and "newer: abc" in described.message
    unknown = describe_client_error(
        ClientError({"Error": {"Code": "Weird", "Message": ""}}, "GetPipeline")
    )
    assert "Weird" in unknown.message
