"""Scenario tests: the real Bolt app, signed requests, a recording fake Slack, the real engine.

Each test sends what Slack would send (slash commands, block_actions, view_submission,
app_home_opened) through ``app.dispatch`` and asserts on the Web API calls and
response_url posts the fake recorded, and on the engine's state.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.slack import ids
from bot.slack.ids import ButtonRef
from storage import bot_store
from tests.helpers import commands_action, pipeline, source_action, wait_for
from tests.slack_bot import (
    ADMIN,
    OTHER,
    Bot,
    release,
    text_of,
    waiting_approval,
)
from tests.slack_requests import (
    app_home_opened,
    bolt_request,
    view_submission,
)

# --- commands ------------------------------------------------------------------------------------


def test_help_lists_every_command_privately(bot: Bot) -> None:
    assert bot.command("help").status == 200
    reply = bot.reply()
    assert reply.params.get("response_type") == "ephemeral"
    for word in ("status", "start", "approve", "retry", "history", "access"):
        assert word in text_of(reply)


def test_unknown_command_is_answered_in_the_ack_with_help(bot: Bot) -> None:
    response = bot.command("frobnicate web")
    assert response.status == 200
    body = json.loads(response.body)
    assert body["response_type"] == "ephemeral"
    assert "Unknown command" in response.body
    assert "status" in response.body


def test_bad_arguments_get_the_usage(bot: Bot) -> None:
    response = bot.command("history web lots")
    body = json.loads(response.body)
    assert body["response_type"] == "ephemeral"
    assert "Usage" in response.body


def test_create_inline_then_status_shows_the_approval_buttons(bot: Bot) -> None:
    bot.command("create " + json.dumps({"pipeline": release()}))
    created = bot.reply()
    assert created.params.get("response_type") == "in_channel"
    assert "created pipeline" in text_of(created)
    waiting_approval(bot)
    bot.command("status web", name="status")
    status = bot.reply("status")
    rendered = text_of(status)
    assert ids.APPROVE in rendered and ids.REJECT in rendered
    token = waiting_approval(bot)
    assert token not in rendered  # approval tokens never leave the server


def test_mistyped_pipeline_name_gets_suggestions(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release("web-release"))
    bot.command("status web-relase")
    reply = bot.reply()
    assert "web-release" in text_of(reply)
    assert reply.params.get("response_type") == "ephemeral"


def test_start_stop_history_and_execution(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)

    def audited() -> set[tuple[str, str]]:
        with bot.services.sessions() as session:
            entries = bot_store.list_audit(session=session, pipeline="web")
        return {(e.what, e.outcome) for e in entries}

    bot.command("start web", name="start")
    started = text_of(bot.reply("start"))
    # The audit entry is written before the reply goes out: a crash in between can never
    # leave an outcome the user was told that the audit log does not have.
    assert ("start", "ok") in audited()
    execution_id = started.split("`")[1]
    bot.command(f"stop web {execution_id} --abandon --reason testing", name="stop")
    assert "stopped" in text_of(bot.reply("stop"))
    assert ("stop", "ok") in audited()
    bot.command("history web 5", name="history")
    assert execution_id[:8] in text_of(bot.reply("history"))
    bot.command(f"execution web {execution_id}", name="execution")
    assert "Source" in text_of(bot.reply("execution"))
    bot.click(ids.START, ButtonRef(pipeline="web"), name="clicked")
    assert "Started by" in text_of(bot.reply("clicked"))
    assert (ids.START, "ok") in audited()


def test_approve_button_acts_once_and_redraws_the_message(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    execution = bot.engine.list_pipeline_executions(pipelineName="web")[
        "pipelineExecutionSummaries"
    ][0]["pipelineExecutionId"]
    ref = ButtonRef(pipeline="web", execution=execution, stage="Gate", action="Approve")
    bot.click(ids.APPROVE, ref, name="first")
    redrawn = bot.reply("first")
    assert redrawn.params.get("replace_original") is True
    assert "approved" in text_of(redrawn)
    wait_for(
        lambda: (
            bot.engine.get_pipeline_execution(pipelineName="web", pipelineExecutionId=execution)[
                "pipelineExecution"
            ]["status"]
            == "Succeeded"
        ),
        what="the execution to succeed",
    )
    details = bot.engine.list_action_executions(
        pipelineName="web", filter={"pipelineExecutionId": execution}
    )["actionExecutionDetails"]
    gate = next(d for d in details if d["actionName"] == "Approve")
    assert "admin" in gate["output"]["executionResult"]["externalExecutionSummary"]
    bot.click(ids.APPROVE, ref, name="second")
    second = text_of(bot.reply("second"))
    assert "no longer waiting" in second or "Already approved" in second


def test_reject_modal_fails_the_stage_with_the_comment(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    execution = bot.engine.list_pipeline_executions(pipelineName="web")[
        "pipelineExecutionSummaries"
    ][0]["pipelineExecutionId"]
    ref = ButtonRef(pipeline="web", execution=execution, stage="Gate", action="Approve")
    bot.click(ids.REJECT, ref)
    opened = bot.fake.wait_for("views.open")[0]
    metadata = opened.params["view"]["private_metadata"]
    body, headers = view_submission(
        callback_id=ids.REJECT_VIEW,
        values={
            ids.COMMENT_BLOCK: {
                ids.COMMENT_INPUT: {"type": "plain_text_input", "value": "not today"}
            }
        },
        private_metadata=metadata,
    )
    assert bot.app.dispatch(bolt_request(body, headers)).status == 200
    wait_for(
        lambda: (
            bot.engine.get_pipeline_execution(pipelineName="web", pipelineExecutionId=execution)[
                "pipelineExecution"
            ]["status"]
            == "Failed"
        ),
        what="the rejection to fail the execution",
    )


def test_create_modal_shows_declaration_errors_inline(bot: Bot) -> None:
    bot.command("create")
    view = bot.fake.wait_for("views.open")[0].params["view"]
    assert view["callback_id"] == ids.CREATE_VIEW
    bad = release()
    bad["stages"] = bad["stages"][:1]
    body, headers = view_submission(
        callback_id=ids.CREATE_VIEW,
        values={
            ids.DECLARATION_BLOCK: {
                ids.DECLARATION_INPUT: {"type": "plain_text_input", "value": json.dumps(bad)}
            }
        },
        private_metadata=view["private_metadata"],
    )
    response = bot.app.dispatch(bolt_request(body, headers))
    assert response.status == 200
    answer = json.loads(response.body)
    assert answer["response_action"] == "errors"
    assert "stage" in answer["errors"][ids.DECLARATION_BLOCK].lower()


def test_non_operator_is_refused_and_audited(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    bot.command("start web", user=OTHER)
    reply = bot.reply()
    assert reply.params.get("response_type") == "ephemeral"
    assert "operator" in text_of(reply).lower()

    def refused() -> bool:
        with bot.services.sessions() as session:
            entries = bot_store.list_audit(session=session, pipeline="web")
        return any(e.outcome == "refused" and e.user_id == OTHER for e in entries)

    wait_for(refused, what="the refusal in the audit log")
    bot.command(f"access web operators add <@{OTHER}>", name="access")
    assert OTHER in text_of(bot.reply("access"))
    bot.command("start web", user=OTHER, name="again")
    assert "started" in text_of(bot.reply("again"))


def test_disable_and_enable_a_transition(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    bot.command("disable web Gate waiting for QA: sign-off #42", name="disable")
    # What was done to the reason is said to the user alone, in words (issue 12, polish).
    note = bot.reply("disable")
    assert note.params.get("response_type") == "ephemeral"
    assert "pipebot removed `:` `#`" in text_of(note) and "shortened" not in text_of(note)
    disabled = bot.reply("disable", count=2)
    assert disabled.params.get("response_type") == "in_channel"
    assert "waiting for QA sign-off 42" in text_of(disabled)
    state = bot.engine.get_pipeline_state(name="web")
    assert state["stageStates"][2]["inboundTransitionState"]["enabled"] is False
    bot.command("enable web Gate", name="enable")
    assert bot.reply("enable").params.get("response_type") == "in_channel"
    state = bot.engine.get_pipeline_state(name="web")
    assert state["stageStates"][2]["inboundTransitionState"]["enabled"] is True
    # Enabling it again changes nothing: told privately, not announced to the channel.
    bot.command("enable web Gate", name="again")
    again = bot.reply("again")
    assert again.params.get("response_type") == "ephemeral"
    assert "is not disabled: nothing to enable" in text_of(again)
    with bot.services.sessions() as session:
        enables = [
            e for e in bot_store.list_audit(session=session, pipeline="web") if e.what == "enable"
        ]
    assert [e.outcome for e in enables] == ["ok"]


def test_home_tab_lists_pipelines_and_waiting_approvals(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    body, headers = app_home_opened(user_id=ADMIN)
    assert bot.app.dispatch(bolt_request(body, headers)).status == 200
    published = bot.fake.wait_for("views.publish")[0]
    rendered = json.dumps(published.params["view"])
    assert "web" in rendered and ids.APPROVE in rendered


def test_a_button_from_a_deleted_pipeline_is_answered(bot: Bot) -> None:
    bot.click(ids.RETRY_FAILED, ButtonRef(pipeline="gone", execution="x", stage="Build"))
    reply = bot.reply("click")
    assert reply.params.get("response_type") == "ephemeral"
    assert "pipeline" in text_of(reply).lower()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=80))
def test_random_command_text_is_always_acked_privately(bot: Bot, text: str) -> None:
    response = bot.command(text, name="fuzz")
    assert response.status == 200
    if response.body:
        assert json.loads(response.body)["response_type"] == "ephemeral"


def test_edit_modal_saves_a_new_version(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    execution = bot.engine.list_pipeline_executions(pipelineName="web")[
        "pipelineExecutionSummaries"
    ][0]["pipelineExecutionId"]
    bot.command("edit web")
    view = bot.fake.wait_for("views.open")[0].params["view"]
    assert view["callback_id"] == ids.EDIT_VIEW
    assert "Approve" in json.dumps(view)  # prefilled with the current declaration
    changed = release()
    changed["stages"][2]["actions"][0]["name"] = "SignOff"
    body, headers = view_submission(
        callback_id=ids.EDIT_VIEW,
        values={
            ids.DECLARATION_BLOCK: {
                ids.DECLARATION_INPUT: {"type": "plain_text_input", "value": json.dumps(changed)}
            }
        },
        private_metadata=view["private_metadata"],
    )
    assert bot.app.dispatch(bolt_request(body, headers)).status == 200
    wait_for(
        lambda: bot.engine.get_pipeline(name="web")["pipeline"]["version"] == 2,
        what="version 2",
    )
    assert (
        bot.engine.get_pipeline(name="web")["pipeline"]["stages"][2]["actions"][0]["name"]
        == "SignOff"
    )
    # The execution waiting at the renamed approval is cancelled (AWS's rule), and the notice
    # says so instead of leaving it to be found.
    notice = bot.fake.wait_for(
        "chat.postMessage", where=lambda c: "updated pipeline" in str(c.params)
    )[0]
    said = str(notice.params)
    assert f"In progress when it was saved: `{execution[:8]}`" in said
    assert "cancelled now" in said and "run version 2" in said
    status = bot.engine.get_pipeline_execution(pipelineName="web", pipelineExecutionId=execution)
    assert status["pipelineExecution"]["status"] == "Cancelled"


def test_delete_asks_first_then_deletes_on_confirm(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    bot.command("delete web")
    question = bot.reply()
    assert ids.DELETE_CONFIRM in text_of(question)
    assert bot.engine.list_pipelines()["pipelines"]  # nothing deleted yet
    bot.click(ids.DELETE_CONFIRM, ButtonRef(pipeline="web"))
    assert "deleted" in text_of(bot.reply("click"))
    assert bot.engine.list_pipelines()["pipelines"] == []


def test_retry_command_defaults_to_the_failed_stage(bot: Bot) -> None:
    failing = pipeline(
        "flaky",
        [
            ("Source", [source_action()]),
            ("Build", [commands_action("Build", ["test -f /nonexistent/marker"])]),
        ],
    )
    bot.engine.create_pipeline(pipeline=failing)
    execution = bot.engine.list_pipeline_executions(pipelineName="flaky")[
        "pipelineExecutionSummaries"
    ][0]["pipelineExecutionId"]

    def status() -> str:
        return str(
            bot.engine.get_pipeline_execution(pipelineName="flaky", pipelineExecutionId=execution)[
                "pipelineExecution"
            ]["status"]
        )

    wait_for(lambda: status() == "Failed", what="the build to fail")
    bot.command("retry flaky")
    assert "retried" in text_of(bot.reply()) and "Build" in text_of(bot.reply())
    wait_for(lambda: status() == "Failed", what="the retried build to fail again")
    details = bot.engine.list_action_executions(
        pipelineName="flaky", filter={"pipelineExecutionId": execution}
    )["actionExecutionDetails"]
    assert sum(1 for d in details if d["actionName"] == "Build") == 2


def test_approve_command_and_no_self_approval(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    first = bot.engine.list_pipeline_executions(pipelineName="web")["pipelineExecutionSummaries"][0]
    bot.engine.stop_pipeline_execution(
        pipelineName="web", pipelineExecutionId=first["pipelineExecutionId"], abandon=True
    )  # frees the gate for the execution started from Slack
    bot.command("access web self-approval off", name="policy")
    assert "self" in text_of(bot.reply("policy")).lower()
    bot.command("start web", name="start")
    started = text_of(bot.reply("start")).split("`")[1]

    def mine_waits() -> bool:
        state = bot.engine.get_pipeline_state(name="web")
        latest = state["stageStates"][2].get("latestExecution", {})
        return latest.get("pipelineExecutionId") == started and latest.get("status") == (
            "InProgress"
        )

    wait_for(mine_waits, what="the new execution at the gate")
    bot.command("approve web Gate/Approve ship it", name="self")
    refused = bot.reply("self")
    assert refused.params.get("response_type") == "ephemeral"
    assert "started" in text_of(refused).lower()
    bot.fake.set_user(OTHER, "other")
    bot.command(f"access web approvers add <@{OTHER}>", name="grant")
    bot.reply("grant")
    bot.command("approve web Gate/Approve ship it", user=OTHER, name="other")
    assert "approved" in text_of(bot.reply("other"))
