"""One execution in detail with its log tail (``bot/slack/execution.py``)."""

from __future__ import annotations

from typing import Any

from bot.slack.execution import execution_blocks
from bot.slack.text import Who
from tests.blockcheck import (
    ACTION_STATUSES,
    E1,
    SHA,
    action_detail,
    ago,
    check_message,
    snapshot,
    texts,
)
from tests.shapecheck import assert_output_shape

# --------------------------------------------------------------------------- execution


def execution_detail(status: str = "Failed") -> dict[str, Any]:
    response = {
        "pipelineExecution": {
            "pipelineName": "web-app",
            "pipelineVersion": 3,
            "pipelineExecutionId": E1,
            "status": status,
            "statusSummary": "Build/Unit failed: exit 1",
            "artifactRevisions": [
                {
                    "name": "SourceArtifact",
                    "revisionId": SHA,
                    "revisionSummary": "Fix the login redirect\nbody",
                    "created": ago(hours=1),
                }
            ],
            "variables": [],
            "trigger": {"triggerType": "StartPipelineExecution", "triggerDetail": "bob"},
            "executionMode": "SUPERSEDED",
            "executionType": "STANDARD",
        }
    }
    assert_output_shape("GetPipelineExecution", response)
    return dict(response["pipelineExecution"])


def detail_actions() -> list[dict[str, Any]]:
    return [
        action_detail(
            "Build",
            "Unit",
            "Failed",
            started=ago(minutes=50),
            updated=ago(minutes=48),
            summary="exit 1 <&>",
        ),
        action_detail(
            "Source",
            "Source",
            "Succeeded",
            started=ago(hours=1),
            updated=ago(minutes=59),
            summary="Fix the login redirect",
        ),
    ]


def test_execution_lists_actions_in_order_with_the_log_tail() -> None:
    log = "compiling\nerror: <widget.c> & friends\n```\nexit 1"
    blocks = check_message(
        execution_blocks(
            pipeline="web-app", execution=execution_detail(), actions=detail_actions(), log_tail=log
        )
    )
    text = texts(blocks)
    assert blocks[0]["text"]["text"] == "web-app · execution 11111111"
    assert f"❌ *Failed* · `{E1}`" in text
    assert "SourceArtifact: `0123456` Fix the login redirect" in text
    assert text.index("*Source* / *Source*") < text.index("*Build* / *Unit*")
    assert "❌ *Build* / *Unit* · Failed · started <!date^" in text and "took 2m 00s" in text
    assert "exit 1 &lt;&amp;&gt;" in text
    last = blocks[-1]["text"]["text"]
    assert last.startswith("*Log tail* of Build / Unit:\n```\ncompiling\n")
    assert "error: &lt;widget.c&gt; &amp; friends" in last
    assert last.count("```") == 2  # the log's own fence cannot close the block
    assert "truncated" not in last
    snapshot("execution", blocks)


def test_execution_log_tail_is_cut_from_the_top_with_a_pointer() -> None:
    log = "".join(f"line {i} <&> ```\n" for i in range(5000)) + "the last line"
    blocks = check_message(
        execution_blocks(
            pipeline="web-app", execution=execution_detail(), actions=detail_actions(), log_tail=log
        )
    )
    last = blocks[-1]["text"]["text"]
    assert len(last) <= 3000
    assert "line 4999 &lt;&amp;&gt;" in last and last.count("```") == 2
    assert "\n```\n…\nline " in last  # whole lines
    assert last.endswith(f"_(truncated; full log: `/pipeline execution web-app {E1}`)_")
    one_line = "&" * 20_000
    blocks = check_message(
        execution_blocks(pipeline="p", execution=execution_detail(), actions=[], log_tail=one_line)
    )
    assert "&amp;&amp;" in blocks[-1]["text"]["text"]
    empty = check_message(
        execution_blocks(pipeline="p", execution=execution_detail(), actions=[], log_tail="")
    )
    assert "(empty log)" in texts(empty)
    assert "No action has run" in texts(empty)


def test_execution_of_many_actions_with_huge_summaries() -> None:
    huge = "<&>" * 4000
    actions = [
        action_detail(
            f"S{i % 50:02d}<&>",
            f"A{i:03d}<&>",
            ACTION_STATUSES[i % 4],
            started=ago(minutes=500 - i),
            updated=ago(minutes=499 - i),
            summary=huge,
            check=False,
        )
        for i in range(300)
    ]
    execution = execution_detail("InProgress")
    execution["statusSummary"] = huge
    blocks = check_message(
        execution_blocks(pipeline="app", execution=execution, actions=actions, log_tail=huge)
    )
    assert "more action executions not shown" in texts(blocks)
    assert blocks[-1]["text"]["text"].startswith("*Log tail* of S")
    no_log = check_message(
        execution_blocks(pipeline="app", execution=execution, actions=actions, log_tail=None)
    )
    assert "Log tail" not in texts(no_log)


def test_execution_names_who_started_it_and_who_answered_an_approval() -> None:
    approval = action_detail(
        "Gate",
        "Approve",
        "Succeeded",
        started=ago(minutes=40),
        updated=ago(minutes=30),
        summary="Approved in Slack by alice (UALICE): ship it",
    )
    approval["updatedBy"] = "arn:aws:sts::123456789012:assumed-role/pipebot/session"
    build = action_detail(
        "Build", "Unit", "Succeeded", started=ago(minutes=50), updated=ago(minutes=45)
    )
    build["updatedBy"] = "arn:aws:iam::123456789012:user/ci"
    text = texts(
        check_message(
            execution_blocks(
                pipeline="web-app",
                execution=execution_detail("Succeeded"),
                actions=[approval, build],
                log_tail=None,
                who=Who(started={E1: "UBOB"}),
            )
        )
    )
    assert "trigger StartPipelineExecution · started by <@UBOB>" in text
    # The approval was answered in Slack: the person, not pipebot's own AWS identity.
    assert "*Gate* / *Approve* · Succeeded" in text and "· by <@UALICE>" in text
    assert "assumed-role/pipebot" not in text
    assert "· by AWS caller `arn:aws:iam::123456789012:user/ci`" in text
