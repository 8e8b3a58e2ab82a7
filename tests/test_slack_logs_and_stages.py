"""Issue 13's reading fixes in Slack: View log for every action that keeps a log (not only a
failed one), a SKIP entry condition drawn as having skipped its stage, close stage names
suggested for a mistyped STAGE, and a multi-line summary shown as a first line and an
excerpt. Renderers on GetPipelineState-shaped data; the real Bolt app, fake Slack and
embedded engine (SQLite and PostgreSQL) where a backend matters; a Stubber for AWS."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import boto3
from botocore.stub import Stubber

from bot.ops.pipeline_ops import PipelineOps
from bot.slack import ids
from bot.slack.execution import execution_blocks
from bot.slack.ids import VIEW_LOG_SELECT, ButtonRef
from bot.slack.kit import ACTIONS_ELEMENTS_MAX
from bot.slack.status import status_blocks
from handlers.common import logged_actions
from tests.blockcheck import (
    E1,
    NOW,
    STAGE_STATUSES,
    action_detail,
    action_state,
    ago,
    check_message,
    execution_summary,
    pipeline_state,
    refs,
    rich_executions,
    rich_state,
    stage_state,
    texts,
)
from tests.helpers import commands_action, pipeline, source_action, wait_for
from tests.slack_bot import Bot, text_of
from tests.slack_requests import block_action, bolt_request
from tests.test_slack_conditions import deploy_stage, skipped_on_main

# --------------------------------------------------------------------------- View log


def _status(state: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    return check_message(
        status_blocks(
            state=state,
            executions=rich_executions(),
            approvals_allowed=True,
            operate_allowed=True,
            now=NOW,
            **extra,
        )
    )


def menu_refs(blocks: list[dict[str, Any]]) -> list[ButtonRef]:
    """The refs of the "View log…" menu's options (a message has at most one menu)."""
    menus = [
        e
        for b in blocks
        if b["type"] == "actions"
        for e in b["elements"]
        if e.get("action_id") == VIEW_LOG_SELECT
    ]
    assert len(menus) <= 1
    return [ButtonRef.decode(o["value"]) for m in menus for o in m["options"]]


def _log_refs(blocks: list[dict[str, Any]]) -> list[tuple[str | None, str | None]]:
    return [(r.stage, r.action) for r in menu_refs(blocks)]


def _button_refs(blocks: list[dict[str, Any]]) -> list[tuple[str | None, str | None]]:
    return [(r.stage, r.action) for r in refs(blocks, ids.VIEW_LOG)]


def test_view_log_for_every_logged_action_that_ran_once_each() -> None:
    logged = {("Build", "Lint"), ("Build", "Unit"), ("Prod", "Deploy")}
    blocks = _status(rich_state(), logged=logged)
    # Lint succeeded and Unit failed: both in the menu (Unit's button stays beside Retry);
    # Deploy never ran; Source and the approval keep no log.
    assert _log_refs(blocks) == [("Build", "Lint"), ("Build", "Unit")]
    assert _button_refs(blocks) == [("Build", "Unit")]
    lint = menu_refs(blocks)[0]
    assert lint.pipeline == "web-app" and lint.execution is not None
    # Without logs (AWS), only the failed action's button, as before.
    assert _log_refs(_status(rich_state())) == []
    assert _button_refs(_status(rich_state())) == [("Build", "Unit")]


def test_view_log_buttons_stay_within_slack_limits_for_a_huge_pipeline() -> None:
    long_name = ("<&>" * 40)[:100]
    stages = [
        stage_state(
            f"{long_name[:90]}{s:03d}",
            STAGE_STATUSES[s % len(STAGE_STATUSES)] or "Succeeded",
            [action_state(f"{long_name[:90]}{a:03d}", "Succeeded") for a in range(50)],
        )
        for s in range(50)
    ]
    state = pipeline_state(long_name, stages, check=False)
    logged = {
        (str(s["stageName"]), str(a["actionName"])) for s in stages for a in s["actionStates"]
    }
    blocks = _status(state, logged=logged)  # check_message: 50 blocks, text budget
    for block in blocks:
        if block["type"] == "actions":
            assert len(block["elements"]) <= ACTIONS_ELEMENTS_MAX
    # 100-character names make refs longer than an option's 150 characters: none fits.
    assert menu_refs(blocks) == []
    assert "more logs" in texts(blocks)
    # Short names: as many options as the budget allows, the rest counted in the note.
    stages = [
        stage_state(
            f"S{s:02d}", "Succeeded", [action_state(f"A{a:02d}", "Succeeded") for a in range(50)]
        )
        for s in range(50)
    ]
    state = pipeline_state("web", stages)
    logged = {(f"S{s:02d}", f"A{a:02d}") for s in range(50) for a in range(50)}
    blocks = _status(state, logged=logged)
    shown = menu_refs(blocks)
    assert 8 <= len(shown) <= 100 and shown[0].stage == "S00" and shown[0].action == "A00"
    assert "more logs" in texts(blocks)


def test_execution_offers_view_log_per_logged_action() -> None:
    details = [
        action_detail(
            "Build", "Compile", "Succeeded", started=ago(minutes=9), updated=ago(minutes=8)
        ),
        action_detail("Test", "Unit", "Succeeded", started=ago(minutes=7), updated=ago(minutes=6)),
    ]
    approval = action_detail(
        "Gate", "Approve", "Succeeded", started=ago(minutes=5), updated=ago(minutes=4)
    )
    approval["input"]["actionTypeId"] = {
        "category": "Approval",
        "owner": "AWS",
        "provider": "Manual",
        "version": "1",
    }
    execution = {"pipelineExecutionId": E1, "status": "Succeeded", "pipelineName": "web"}
    kwargs: dict[str, Any] = {
        "pipeline": "web",
        "execution": execution,
        "actions": [*details, approval],
        "log_tail": None,
    }
    shown = check_message(execution_blocks(**kwargs, logs=True))
    assert _log_refs(shown) == [("Build", "Compile"), ("Test", "Unit")]
    assert {r.execution for r in menu_refs(shown)} == {E1}
    assert menu_refs(check_message(execution_blocks(**kwargs))) == []


def test_on_aws_no_action_is_offered_a_log() -> None:
    client = boto3.client(
        "codepipeline",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    services = SimpleNamespace(ops=PipelineOps(client=client, local=False))
    with Stubber(client) as stub:  # no response queued: any call would fail the test
        assert logged_actions(services, "web") == frozenset()  # type: ignore[arg-type]
        stub.assert_no_pending_responses()


def built(name: str = "web") -> dict[str, Any]:
    return pipeline(
        name,
        [
            ("Source", [source_action()]),
            ("Build", [commands_action("Compile", ["echo compiled-ok-4242"])]),
            ("Production", [commands_action("Ship", ["echo shipped-5151"])]),
        ],
    )


def _succeeded(bot: Bot, name: str = "web") -> str:
    def done() -> str | None:
        summaries = bot.engine.list_pipeline_executions(pipelineName=name)
        found = summaries["pipelineExecutionSummaries"]
        if found and found[0]["status"] == "Succeeded":
            return str(found[0]["pipelineExecutionId"])
        return None

    return wait_for(done, timeout=60, what="the execution to succeed")


def test_view_log_of_a_succeeded_action_on_the_engine(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=built())
    execution = _succeeded(bot)
    bot.command("status web", name="status")
    status = bot.reply("status").params["blocks"]
    offered = _log_refs(status)
    assert offered == [("Build", "Compile"), ("Production", "Ship")]  # not the source
    ref = menu_refs(status)[0]
    assert ref.execution == execution
    choose(bot, status, ref, name="log")
    shown = text_of(bot.reply("log"))
    assert "compiled-ok-4242" in shown and "shipped-5151" not in shown
    assert "*Log tail* of Build / Compile:" in shown
    # `execution` offers the same, one per action that keeps a log.
    bot.command(f"execution web {execution}", name="execution")
    blocks = bot.reply("execution").params["blocks"]
    assert _log_refs(blocks) == offered
    choose(bot, blocks, menu_refs(blocks)[1], name="ship")
    assert "shipped-5151" in text_of(bot.reply("ship"))


def choose(bot: Bot, blocks: list[dict[str, Any]], ref: ButtonRef, *, name: str) -> None:
    """Pick ``ref`` in the message's "View log…" menu, as Slack sends it."""
    body, headers = block_action(
        action_id=VIEW_LOG_SELECT,
        value=ref.encode(),
        message_blocks=blocks,
        response_url=bot.fake.response_url(name),
    )
    bot.app.dispatch(bolt_request(body, headers))


# --------------------------------------------------------------------------- SKIP conditions


def test_a_skip_condition_that_was_not_met_reads_as_skipping_the_stage(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=skipped_on_main())
    wait_for(
        lambda: (deploy_stage(bot).get("latestExecution") or {}).get("status") == "Skipped",
        timeout=60,
        what="Deploy to be skipped",
    )
    bot.command("status web", name="status")
    rendered = texts(bot.reply("status").params["blocks"])
    entry = next(line for line in rendered.splitlines() if "Entry condition" in line)
    assert "skipped the stage" in entry
    assert "❌" not in entry and "Failed" not in entry


def test_a_failed_entry_condition_of_a_stage_not_skipped_still_reads_failed() -> None:
    stage = stage_state("Deploy", "Failed", [action_state("Push")])
    stage["beforeEntryConditionState"] = {
        "latestExecution": {"status": "Failed", "summary": "window closed"},
        "conditionStates": [],
    }
    state = pipeline_state("web", [stage])
    rendered = texts(_status(state))
    assert "❌ Failed" in rendered and "skipped the stage" not in rendered


# --------------------------------------------------------------------------- stage names


def test_a_mistyped_stage_gets_close_names_for_every_stage_command(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=built())
    _succeeded(bot)
    for index, command in enumerate(
        [
            "rollback web Prod",
            "override web Prodction",
            "retry web Prodution",
            "disable web Prod release freeze",
            "enable web Produktion",
            "approve web Prodution/Ship",
        ]
    ):
        bot.command(command, name=f"c{index}")
        said = text_of(bot.reply(f"c{index}"))
        assert "Did you mean `Production`?" in said, (command, said)
    # A stage that exists is not second-guessed.
    bot.command("rollback web Production", name="exists")
    assert "Did you mean" not in text_of(bot.reply("exists"))


# --------------------------------------------------------------------------- summaries

MULTI = "Stage Build failed: Build failed in phase BUILD.\nline one <&>\nline two\nthe end"


def test_a_multi_line_summary_shows_its_first_line_then_an_excerpt() -> None:
    executions = [execution_summary(E1, "Failed", statusSummary=MULTI)]
    blocks = check_message(
        status_blocks(
            state=rich_state(),
            executions=executions,
            approvals_allowed=False,
            operate_allowed=False,
            now=NOW,
        )
    )
    latest = blocks[1]["text"]["text"]
    assert "_Stage Build failed: Build failed in phase BUILD._" in latest
    assert "line one" not in latest
    excerpt = blocks[2]["text"]["text"]
    assert excerpt.startswith("*Details:*\n```\n") and excerpt.endswith("\n```")
    assert "line one &lt;&amp;&gt;\nline two\nthe end" in excerpt

    execution = {"pipelineExecutionId": E1, "status": "Failed", "statusSummary": MULTI}
    shown = check_message(
        execution_blocks(pipeline="web", execution=execution, actions=[], log_tail=None)
    )
    assert "_Stage Build failed: Build failed in phase BUILD._" in shown[1]["text"]["text"]
    assert "line two\nthe end" in shown[2]["text"]["text"]
    # With the log tail shown, the rest of the summary is not repeated above it.
    with_log = check_message(
        execution_blocks(pipeline="web", execution=execution, actions=[], log_tail="the end")
    )
    assert "line one" not in texts(with_log)


def test_a_long_excerpt_keeps_its_end_within_limits() -> None:
    summary = "Failed.\n" + "\n".join(f"log line {i} " + "x" * 80 for i in range(500))
    executions = [execution_summary(E1, "Failed", statusSummary=summary, check=False)]
    blocks = check_message(
        status_blocks(
            state=rich_state(),
            executions=executions,
            approvals_allowed=True,
            operate_allowed=True,
            now=NOW,
        )
    )
    excerpt = blocks[2]["text"]["text"]
    assert len(excerpt) <= 900
    assert "log line 499" in excerpt and "log line 0 " not in excerpt and "…" in excerpt
