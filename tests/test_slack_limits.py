"""A user's text is never cut on its way to AWS: what does not fit is refused, saying by how much,
and nothing changes (issue 11, cases 3 and 9, the bot's side). Through the real Bolt app, the
embedded engine and the fake Slack, on both databases."""

from __future__ import annotations

from tests.slack_bot import Bot, release, waiting_approval


def _still_waiting(bot: Bot) -> bool:
    state = bot.engine.get_pipeline_state(name="web")
    latest = state["stageStates"][2]["actionStates"][0].get("latestExecution", {})
    return bool(latest.get("status") == "InProgress")


def test_an_approval_comment_too_long_for_awss_summary_is_refused_not_cut(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    bot.command("reject web Gate/Approve " + "n" * 600, name="long")
    answer = str(bot.reply("long").params)
    assert "characters too long" in answer and "512" in answer
    assert _still_waiting(bot)
    assert not bot.fake.calls_to("chat.postMessage")  # nothing was announced
    # The same answer with a comment that fits goes through whole.
    bot.command("reject web Gate/Approve " + "n" * 400, name="fits")
    assert "rejected" in str(bot.reply("fits").params)
    details = bot.engine.list_action_executions(pipelineName="web")["actionExecutionDetails"]
    approve = next(d for d in details if d["actionName"] == "Approve")
    assert approve["output"]["executionResult"]["externalExecutionSummary"].endswith("n" * 400)


def test_a_stop_reason_too_long_for_aws_is_refused_and_the_execution_runs_on(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    prefix = len("Stopped by admin in Slack: ")
    bot.command("stop web --reason " + "r" * 250, name="stop")
    answer = str(bot.reply("stop").params)
    assert f"{250 + prefix - 200} characters too long" in answer
    summaries = bot.engine.list_pipeline_executions(pipelineName="web")
    assert summaries["pipelineExecutionSummaries"][0]["status"] == "InProgress"


def test_a_transition_reason_too_long_for_aws_is_refused(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    response = bot.command("disable web Gate " + "d" * 301, name="disable")
    answer = response.body  # a refusal found while parsing is the ack's own answer
    assert "301 characters long" in answer and "at most 300" in answer
    state = bot.engine.get_pipeline_state(name="web")
    gate = next(s for s in state["stageStates"] if s["stageName"] == "Gate")
    assert gate["inboundTransitionState"]["enabled"] is True
