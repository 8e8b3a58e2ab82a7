"""What the commands say, as a new user meets it (issue 12: items 10 and 11 and the polish):
a mistyped command gets its suggestion alone, usage and help name pipelines that exist, the
replies name the Slack user who did something where pipebot knows, and the same thing is
said the same way everywhere. The real Bolt app on the embedded engine, the fake Slack."""

from __future__ import annotations

import json
from typing import Any

from bot.slack import ids
from bot.slack.ids import ButtonRef
from tests.fake_slack import Call
from tests.helpers import wait_for
from tests.slack_bot import ADMIN, OTHER, Bot, release, waiting_approval


def ack_blocks(bot: Bot, text: str) -> list[dict[str, Any]]:
    response = bot.command(text, name="ack")
    assert response.status == 200
    body = json.loads(response.body)
    assert body["response_type"] == "ephemeral"
    return list(body["blocks"])


def block_texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [str(b["text"]["text"]) for b in blocks if b.get("type") == "section"]


def text_of(call: Call) -> str:
    """Everything a reply says, as typed (not JSON-escaped)."""
    return json.dumps(call.params, ensure_ascii=False)


def latest_execution(bot: Bot, name: str = "web") -> str:
    return str(
        bot.engine.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"][0][
            "pipelineExecutionId"
        ]
    )


# --------------------------------------------------------------------------- item 10


def test_a_mistyped_command_gets_the_suggestion_alone(bot: Bot) -> None:
    blocks = ack_blocks(bot, "stauts demo")
    texts = block_texts(blocks)
    assert len(texts) == 1, texts  # no help dumped under it
    assert "Did you mean `status`?" in texts[0]
    assert "`/pipeline help` lists every command." in texts[0]
    assert "```" not in texts[0] and "pipebot commands" not in texts[0]
    help_topic = block_texts(ack_blocks(bot, "help strat"))
    assert len(help_topic) == 1 and "Did you mean `start`?" in help_topic[0]


def test_a_usage_error_shows_usage_and_example_once_as_commands(bot: Bot) -> None:
    texts = block_texts(ack_blocks(bot, "history web lots"))
    assert len(texts) == 2
    # Written as mrkdwn: no code block showing backticks literally, no second "Usage".
    assert texts[1] == (
        "*Usage:* `/pipeline history NAME [N]`\n*Example:* `/pipeline history web 20`"
    )


# --------------------------------------------------------------------------- help examples


def test_help_examples_name_a_pipeline_the_user_has(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    short = latest_execution(bot)[:8]
    bot.command("help", name="help")
    text = text_of(bot.reply("help"))
    assert "web-release" not in text and " demo" not in text
    for example in (
        "/pipeline status web",
        f"/pipeline execution web {short}",
        "/pipeline retry web Build",
        "/pipeline approve web Gate/Approve looks good",
        "/pipeline disable web Gate release freeze until Monday",
        "/pipeline start web`",  # the pipeline declares no variable: no --var in its example
    ):
        assert example in text, example
    bot.command("help start", name="start")
    one = text_of(bot.reply("start"))
    assert "*`" not in one and "`*" not in one  # no bold around code: stray asterisks
    assert "Example: `/pipeline start web`" in one


def test_help_without_pipelines_uses_the_demo(bot: Bot) -> None:
    bot.command("help", name="help")
    text = text_of(bot.reply("help"))
    assert "/pipeline status demo" in text and "web-release" not in text


# --------------------------------------------------------------------------- item 11: who did it


def test_status_history_and_execution_name_who_started_and_disabled(bot: Bot) -> None:
    bot.command("create " + json.dumps({"pipeline": release()}), name="create")
    bot.reply("create")
    waiting_approval(bot)
    created = latest_execution(bot)
    bot.command(f"stop web {created[:8]} --abandon", name="stop")
    bot.reply("stop")
    bot.command("start web", name="start")
    bot.reply("start")
    started = latest_execution(bot)
    assert started != created
    bot.command("disable web Gate release freeze", name="disable")
    bot.reply("disable")

    bot.command("status web", name="status")
    status = text_of(bot.reply("status"))
    assert f"Trigger StartPipelineExecution · started by <@{ADMIN}>" in status
    assert f"Transition into Gate disabled_ by <@{ADMIN}>" in status
    assert "(pipebot)" not in status and "by pipebot" not in status

    bot.command("history web", name="history")
    history = text_of(bot.reply("history"))
    assert f"trigger StartPipelineExecution · started by <@{ADMIN}>" in history
    assert f"trigger CreatePipeline · created by <@{ADMIN}>" in history  # `create` started it

    bot.command(f"execution web {started[:8]}", name="execution")
    assert f"started by <@{ADMIN}>" in text_of(bot.reply("execution"))


def test_an_approval_answered_in_slack_names_the_person_and_a_retry_its_author(
    bot: Bot,
) -> None:
    bot.command("create " + json.dumps({"pipeline": release()}), name="create")
    bot.reply("create")
    waiting_approval(bot)
    execution = latest_execution(bot)
    bot.command("reject web not today", name="reject")
    bot.reply("reject")
    wait_for(
        lambda: (
            bot.engine.get_pipeline_execution(pipelineName="web", pipelineExecutionId=execution)[
                "pipelineExecution"
            ]["status"]
            == "Failed"
        ),
        what="the rejection to fail the execution",
    )
    bot.command(f"execution web {execution[:8]}", name="execution")
    shown = text_of(bot.reply("execution"))
    assert "*Gate* / *Approve* · Failed" in shown
    assert f"· by <@{ADMIN}>" in shown and "by pipebot" not in shown
    assert "1 command succeeded." in shown  # not "1 command(s)"

    bot.command("retry web Gate", name="retry")
    bot.reply("retry")
    waiting_approval(bot)
    bot.command("status web", name="status")
    assert f"retry 1, retried by <@{ADMIN}>" in text_of(bot.reply("status"))


# --------------------------------------------------------------------------- polish


def test_an_unknown_pipeline_is_named_without_the_engines_account(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    bot.command("status wbe", name="typo")
    reply = text_of(bot.reply("typo"))
    assert "There is no pipeline named `wbe`." in reply
    assert "Did you mean `web`?" in reply
    assert "000000000000" not in reply and "arn:aws" not in reply
    bot.command("history nothing-like-it", name="none")
    none = text_of(bot.reply("none"))
    assert "There is no pipeline named `nothing-like-it`." in none
    assert "000000000000" not in none


def test_the_stop_reason_is_shown_once(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    bot.command("stop web --abandon --reason bad build", name="stop")
    bot.reply("stop")
    bot.command("status web", name="status")
    latest = block_texts(bot.reply("status").params["blocks"])[0]
    assert latest.count("bad build") == 1, latest  # no "Stop reason:" under the summary
    bot.command("history web", name="history")
    history = text_of(bot.reply("history"))
    assert history.count("bad build") == 1, history


def test_the_access_card_suggests_the_switch_that_changes_something(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    bot.command("access web", name="shown")
    assert "self-approval off`" in text_of(bot.reply("shown"))
    bot.command("access web self-approval off", name="off")
    after = text_of(bot.reply("off"))
    assert "self-approval on`" in after and "self-approval off`" not in after


def test_audit_lines_say_what_happened_in_words_with_real_mentions(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    execution = latest_execution(bot)
    ref = ButtonRef(pipeline="web", execution=execution, stage="Gate", action="Approve")
    bot.click(ids.APPROVE, ref, name="approve")
    bot.reply("approve")
    bot.command("start web", user=OTHER, name="refused")
    bot.reply("refused")
    bot.command("audit web", name="audit")
    audit = text_of(bot.reply("audit"))
    assert "clicked *Approve*" in audit and ids.APPROVE not in audit
    assert "ran `/pipeline start` *web* → refused" in audit
    # The refusal names who may act: as mentions, not as escaped markup.
    assert f"<@{ADMIN}>" in audit and "&lt;@" not in audit
