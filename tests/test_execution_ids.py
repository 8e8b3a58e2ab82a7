"""Execution IDs as users type them (issue 12, item 7): every message shows an execution's
first 8 characters, so every command taking an execution ID takes any unique start of one
(6 characters or more), resolved against the pipeline's executions by one resolver
(``PipelineOps.resolve_execution``) on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from bot.ops.pipeline_ops import PREFIX_SCAN_MAX, OpsError, PipelineOps
from bot.ops.pipeline_state import is_execution_id, is_execution_prefix
from bot.slack import ids
from bot.slack.ids import ButtonRef
from handlers.grammar import CommandError, parse
from tests.helpers import wait_for
from tests.slack_bot import Bot, release, text_of, waiting_approval

FULL = "7131a45f-1b2c-4d3e-8f90-a1b2c3d4e5f6"
T0 = datetime(2025, 5, 6, 9, 0, tzinfo=UTC)
FIRST_PAGE = {"pipelineName": "web", "maxResults": 100}


# --------------------------------------------------------------------------- the shapes


@pytest.mark.parametrize(
    "value", ["7131a4", "7131a45f", "7131A45F", "7131a45f-", "7131a45f-1b", FULL[:-1]]
)
def test_a_start_of_six_or_more_characters_is_a_prefix(value: str) -> None:
    assert is_execution_prefix(value)
    assert not is_execution_id(value)


@pytest.mark.parametrize(
    "value", ["7131a", "7131a45g", "7131a45f1b", "Deploy", "7131a45f--", FULL, "", "-7131a4"]
)
def test_anything_else_is_not_a_prefix(value: str) -> None:
    assert not is_execution_prefix(value)


def test_a_whole_id_in_either_case_is_an_id() -> None:
    assert is_execution_id(FULL) and is_execution_id(FULL.upper())


# --------------------------------------------------------------------------- the grammar


@pytest.mark.parametrize("command", ["execution web {}", "exec web {}", "stop web {}"])
@pytest.mark.parametrize("value", ["7131a4", "7131a45f", FULL])
def test_commands_take_a_prefix(command: str, value: str) -> None:
    assert parse(command.format(value)).args["execution"] == value


def test_retry_tells_a_prefix_from_a_stage() -> None:
    assert parse("retry web 7131a45f").args == {
        "stage": None,
        "execution": "7131a45f",
        "mode": "FAILED_ACTIONS",
    }
    assert parse("retry web Deface").args["stage"] == "Deface"  # hexadecimal, but no digit
    assert parse("retry web Build 7131a4").args["execution"] == "7131a4"


def test_a_prefix_too_short_or_not_an_id_is_a_usage_error_naming_the_pipeline() -> None:
    with pytest.raises(CommandError) as short:
        parse("execution demo 7131a")
    assert "at least 6 characters" in short.value.message
    assert "`/pipeline history demo`" in short.value.message
    assert short.value.usage is not None and "execution demo" in short.value.usage
    with pytest.raises(CommandError) as wrong:
        parse("execution demo not-an-id")
    assert "is not an execution ID" in wrong.value.message


# --------------------------------------------------------------------------- the resolver, AWS


@pytest.fixture
def aws() -> Iterator[tuple[PipelineOps, Stubber]]:
    """PipelineOps on a real boto3 client whose calls botocore's Stubber answers (and checks
    against AWS's API model)."""
    client = boto3.client(
        "codepipeline",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stub:
        yield PipelineOps(client=client, local=False), stub
        stub.assert_no_pending_responses()


def summary(execution_id: str, status: str = "Succeeded") -> dict[str, Any]:
    return {
        "pipelineExecutionId": execution_id,
        "status": status,
        "startTime": T0,
        "lastUpdateTime": T0,
    }


def uuid(n: int, head: str = "0000") -> str:
    return f"{head}{n:04x}-0000-4000-8000-{n:012x}"


def test_a_whole_id_needs_no_lookup(aws: tuple[PipelineOps, Stubber]) -> None:
    ops, _ = aws
    assert ops.resolve_execution("web", FULL.upper()) == FULL  # AWS writes them lower case


def test_a_prefix_is_found_on_a_later_page(aws: tuple[PipelineOps, Stubber]) -> None:
    ops, stub = aws
    stub.add_response(
        "list_pipeline_executions",
        {"pipelineExecutionSummaries": [summary(uuid(i)) for i in range(100)], "nextToken": "p2"},
        {"pipelineName": "web", "maxResults": 100},
    )
    stub.add_response(
        "list_pipeline_executions",
        {"pipelineExecutionSummaries": [summary(FULL), summary(uuid(200))]},
        {"pipelineName": "web", "maxResults": 100, "nextToken": "p2"},
    )
    assert ops.resolve_execution("web", "7131A45F") == FULL


def test_an_ambiguous_prefix_names_the_candidates(aws: tuple[PipelineOps, Stubber]) -> None:
    ops, stub = aws
    twin = "7131a45f-9999-4000-8000-000000000000"
    stub.add_response(
        "list_pipeline_executions",
        {"pipelineExecutionSummaries": [summary(FULL, "InProgress"), summary(twin)]},
        {"pipelineName": "web", "maxResults": 100},
    )
    with pytest.raises(OpsError) as error:
        ops.resolve_execution("web", "7131a45f")
    message = error.value.message
    assert "2 executions of `web` start with `7131a45f`" in message
    assert f"`{FULL}` (InProgress)" in message and f"`{twin}` (Succeeded)" in message
    assert "Give more of the ID" in message


def test_an_unknown_prefix_says_so(aws: tuple[PipelineOps, Stubber]) -> None:
    ops, stub = aws
    stub.add_response(
        "list_pipeline_executions",
        {"pipelineExecutionSummaries": [summary(uuid(1))]},
        {"pipelineName": "web", "maxResults": 100},
    )
    with pytest.raises(OpsError) as error:
        ops.resolve_execution("web", "7131a45f")
    assert "No execution of `web` has an ID starting with `7131a45f`" in error.value.message
    assert "among" not in error.value.message


def test_the_lookup_stops_after_the_newest_thousand(aws: tuple[PipelineOps, Stubber]) -> None:
    ops, stub = aws
    pages = PREFIX_SCAN_MAX // 100
    for page in range(pages):
        stub.add_response(
            "list_pipeline_executions",
            {
                "pipelineExecutionSummaries": [summary(uuid(page * 100 + i)) for i in range(100)],
                "nextToken": f"p{page + 1}",
            },
            {
                "pipelineName": "web",
                "maxResults": 100,
                **({"nextToken": f"p{page}"} if page else {}),
            },
        )
    with pytest.raises(OpsError) as error:
        ops.resolve_execution("web", "7131a45f")
    assert "among its latest 1,000" in error.value.message
    assert "full ID" in error.value.message


def test_stop_and_retry_resolve_the_prefix_before_calling_aws(
    aws: tuple[PipelineOps, Stubber],
) -> None:
    ops, stub = aws
    listing = {"pipelineExecutionSummaries": [summary(FULL, "InProgress")]}
    stub.add_response(
        "list_pipeline_executions", listing, {"pipelineName": "web", "maxResults": 100}
    )
    stub.add_response(
        "stop_pipeline_execution",
        {"pipelineExecutionId": FULL},
        {"pipelineName": "web", "pipelineExecutionId": FULL, "abandon": True},
    )
    assert ops.stop("web", "7131a45f", abandon=True, reason=None) == FULL
    stub.add_response(
        "list_pipeline_executions", listing, {"pipelineName": "web", "maxResults": 100}
    )
    stub.add_response(
        "retry_stage_execution",
        {"pipelineExecutionId": FULL},
        {
            "pipelineName": "web",
            "stageName": "Deploy",
            "pipelineExecutionId": FULL,
            "retryMode": "FAILED_ACTIONS",
        },
    )
    assert ops.retry("web", "Deploy", "7131a4", mode="FAILED_ACTIONS") == ("Deploy", FULL)


# --------------------------------------------------------------------------- the embedded engine


def executions(bot: Bot, name: str = "web") -> list[str]:
    return [
        e["pipelineExecutionId"]
        for e in bot.engine.list_pipeline_executions(pipelineName=name)[
            "pipelineExecutionSummaries"
        ]
    ]


def test_execution_stop_and_retry_take_the_eight_characters_shown(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    execution = executions(bot)[0]
    short = execution[:8]

    bot.command("history web", name="history")
    assert f"*{short}*" in text_of(bot.reply("history"))  # what the user copies

    bot.command(f"execution web {short}", name="execution")
    shown = bot.reply("execution")
    assert shown.params.get("response_type") == "ephemeral"
    assert f"`{execution}`" in text_of(shown) and "Build" in text_of(shown)

    bot.command(f"stop web {short.upper()} --abandon", name="stop")
    stopped = bot.reply("stop")
    assert stopped.params.get("response_type") == "in_channel", text_of(stopped)
    assert execution in text_of(stopped)
    wait_for(
        lambda: (
            bot.engine.get_pipeline_execution(pipelineName="web", pipelineExecutionId=execution)[
                "pipelineExecution"
            ]["status"]
            == "Stopped"
        ),
        what="the execution to stop",
    )

    bot.command(f"retry web Gate {execution[:6]}", name="retry")
    retried = bot.reply("retry")
    assert retried.params.get("response_type") == "in_channel", text_of(retried)
    assert execution in text_of(retried)
    waiting_approval(bot)  # the retried gate waits again


def test_an_unknown_prefix_is_answered_privately(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    execution = executions(bot)[0]
    absent = ("0" if execution[0] != "0" else "1") + execution[1:8]
    bot.command(f"execution web {absent}", name="missing")
    reply = bot.reply("missing")
    assert reply.params.get("response_type") == "ephemeral"
    assert f"No execution of `web` has an ID starting with `{absent}`" in text_of(reply)


def test_a_view_log_button_carrying_a_short_id_works(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    execution = executions(bot)[0]
    ref = ButtonRef(pipeline="web", execution=execution[:8], stage="Build", action="Build")
    bot.click(ids.VIEW_LOG, ref, name="log")
    assert f"`{execution}`" in text_of(bot.reply("log"))
