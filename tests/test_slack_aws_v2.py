"""The AWS backend's side of issue 13 from Slack: rollback, condition overrides, rule results,
rollback executions in ``history`` and PARALLEL approvals, through the real Bolt app on a real
boto3 client under botocore's Stubber (the fixtures of ``tests/test_slack_aws.py``). Each stub
checks the request pipebot sends (operation and parameters); botocore checks every stubbed
response against AWS's API model, so the response shapes are the model's.
"""

from __future__ import annotations

# The fixtures imported from tests/test_slack_aws.py are parameters of the tests below.
# ruff: noqa: F811
from typing import Any

import pytest

from bot.slack import ids
from bot.slack.ids import ButtonRef
from storage import bot_store
from tests.helpers import wait_for
from tests.test_slack_aws import (  # noqa: F401  (aws_env, fake and stubbed are fixtures)
    ADMIN,
    EXECUTION,
    OLDER_EXECUTION,
    T2,
    StubbedBot,
    action,
    action_ids,
    assert_private_error,
    aws_env,
    button_value,
    execution_summary,
    failed_state,
    fake,
    message_text,
    source,
    stage,
    state_response,
    stubbed,
)
from tests.test_slack_aws import text_of as aws_text_of

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

ROLLBACK_EXECUTION = "5d1e7c2a-9b3f-4e6d-8a1c-2f4b6d8e0a13"
TARGET_FILTER = {"succeededInStage": {"stageName": "Deploy"}}


def succeeded_deploy_state() -> dict[str, Any]:
    """Source and Deploy succeeded in the latest execution."""
    return state_response(
        [
            stage("Source", "Succeeded", [source()]),
            stage("Deploy", "Succeeded", [action("Deploy", "Succeeded")]),
        ]
    )


def summaries(*items: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "pipelineExecutionSummaries": [
            {**execution_summary(execution, status), **extra} for execution, status in items
        ]
    }


# =========================================================================== rollback


def test_rollback_command_asks_naming_target_revision_and_time_then_rolls_back(
    stubbed: StubbedBot,
) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response("get_pipeline_state", succeeded_deploy_state(), {"name": "web"})
    stub.add_response(
        "list_pipeline_executions",
        summaries((EXECUTION, "Succeeded")),
        {"pipelineName": "web", "maxResults": 1},
    )
    # The stage shows EXECUTION now: the target is the newest *other* success.
    stub.add_response(
        "list_pipeline_executions",
        summaries((EXECUTION, "Succeeded"), (OLDER_EXECUTION, "Succeeded")),
        {"pipelineName": "web", "maxResults": 20, "filter": TARGET_FILTER},
    )
    bot.command("rollback web Deploy", name="ask")
    asked = bot.reply("ask")
    assert asked.params.get("response_type") == "ephemeral"  # only the asker sees the question
    rendered = aws_text_of(asked)
    assert OLDER_EXECUTION in rendered  # the target execution
    assert "a1b2c3d" in rendered  # its source revision
    assert str(int(T2.timestamp())) in rendered  # when it succeeded (<!date^...>)
    assert {ids.ROLLBACK_CONFIRM, ids.ROLLBACK_CANCEL} <= action_ids(asked.params["blocks"])
    stub.assert_no_pending_responses()
    assert bot.audit("web") == []  # asking changes nothing, so nothing is audited

    value = button_value(asked.params["blocks"], ids.ROLLBACK_CONFIRM)
    assert ButtonRef.decode(value) == ButtonRef(
        pipeline="web", execution=OLDER_EXECUTION, stage="Deploy"
    )
    stub.add_response(
        "rollback_stage",
        {"pipelineExecutionId": ROLLBACK_EXECUTION},
        {
            "pipelineName": "web",
            "stageName": "Deploy",
            "targetPipelineExecutionId": OLDER_EXECUTION,
        },
    )
    bot.click(ids.ROLLBACK_CONFIRM, value, name="confirm", message_blocks=asked.params["blocks"])
    answered = bot.reply("confirm")
    assert answered.params.get("replace_original") is True
    assert "rolled back *Deploy*" in message_text(answered)
    assert ids.ROLLBACK_CONFIRM not in action_ids(answered.params["blocks"])
    told = bot.fake.wait_for(
        "response_url",
        count=2,
        where=lambda c: c.path.endswith("/confirm"),
    )[1]
    assert told.params.get("response_type") == "in_channel"  # the channel hears who did it
    assert f"<@{ADMIN}>" in message_text(told) and ROLLBACK_EXECUTION in message_text(told)
    stub.assert_no_pending_responses()
    wait_for(
        lambda: (
            (ids.ROLLBACK_CONFIRM, "ok", f"stage Deploy: to {OLDER_EXECUTION}") in bot.audit("web")
        ),
        what="the rollback in the audit log",
    )
    with bot.services.sessions() as session:
        starter = bot_store.get_starter(session=session, execution_id=ROLLBACK_EXECUTION)
    assert starter is not None and starter.user_id == ADMIN


def test_rollback_command_cancel_changes_nothing(stubbed: StubbedBot) -> None:
    bot = stubbed.bot
    ref = ButtonRef(pipeline="web", execution=OLDER_EXECUTION, stage="Deploy")
    bot.click(ids.ROLLBACK_CANCEL, ref.encode(), name="cancel")
    cancelled = bot.reply("cancel")
    assert cancelled.params.get("replace_original") is True
    assert "Nothing rolled back" in aws_text_of(cancelled)
    stubbed.stub.assert_no_pending_responses()  # no AWS call at all


def test_status_roll_back_button_confirm_names_target_revision_and_time(
    stubbed: StubbedBot,
) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response("get_pipeline_state", failed_state(), {"name": "web"})
    stub.add_response(
        "list_pipeline_executions",
        summaries((EXECUTION, "Failed"), (OLDER_EXECUTION, "Succeeded")),
        {"pipelineName": "web", "maxResults": 5},
    )
    stub.add_response(
        "list_pipeline_executions",
        summaries((OLDER_EXECUTION, "Succeeded")),
        {"pipelineName": "web", "maxResults": 20, "filter": TARGET_FILTER},
    )
    bot.command("status web", name="status")
    status = bot.reply("status")
    blocks = status.params["blocks"]
    button = next(
        e
        for b in blocks
        for e in b.get("elements") or []
        if isinstance(e, dict) and e.get("action_id") == ids.ROLLBACK
    )
    confirm = button["confirm"]["text"]["text"]
    assert "execution 0b5a6f2e" in confirm  # the target
    assert "Source@a1b2c3d" in confirm  # its revision
    assert "2025-05-06 09:07 UTC" in confirm  # when it succeeded
    assert button["style"] == "danger"
    stub.assert_no_pending_responses()

    stub.add_response(
        "rollback_stage",
        {"pipelineExecutionId": ROLLBACK_EXECUTION},
        {
            "pipelineName": "web",
            "stageName": "Deploy",
            "targetPipelineExecutionId": OLDER_EXECUTION,
        },
    )
    # The message is redrawn from the state as it is now: Deploy runs the rollback.
    running = state_response(
        [
            stage("Source", "Succeeded", [source()]),
            {
                **stage(
                    "Deploy",
                    "InProgress",
                    [action("Deploy", "InProgress")],
                    execution=ROLLBACK_EXECUTION,
                ),
            },
        ]
    )
    running["stageStates"][1]["latestExecution"]["type"] = "ROLLBACK"
    stub.add_response("get_pipeline_state", running, {"name": "web"})
    rollback_summary = {
        **execution_summary(ROLLBACK_EXECUTION, "InProgress"),
        "executionType": "ROLLBACK",
        "rollbackMetadata": {"rollbackTargetPipelineExecutionId": OLDER_EXECUTION},
        "trigger": {"triggerType": "ManualRollback", "triggerDetail": "arn:aws:iam::1:user/x"},
    }
    stub.add_response(
        "list_pipeline_executions",
        {
            "pipelineExecutionSummaries": [
                rollback_summary,
                execution_summary(OLDER_EXECUTION, "Succeeded"),
            ]
        },
        {"pipelineName": "web", "maxResults": 5},
    )
    value = button_value(blocks, ids.ROLLBACK)
    bot.click(ids.ROLLBACK, value, name="rollback", message_blocks=blocks)
    redrawn = bot.reply("rollback")
    assert redrawn.params.get("replace_original") is True
    rendered = aws_text_of(redrawn)
    assert "↩ Rollback to `0b5a6f2e`" in rendered  # the latest execution is the rollback
    assert "↩ rollback" in rendered  # and Deploy runs it
    assert "manual rollback" in rendered and f"<@{ADMIN}>" in rendered  # rolled back by
    assert ids.ROLLBACK not in action_ids(redrawn.params["blocks"])  # nothing finished
    stub.assert_no_pending_responses()
    wait_for(
        lambda: (ids.ROLLBACK, "ok", f"stage Deploy: to {OLDER_EXECUTION}") in bot.audit("web"),
        what="the rollback click in the audit log",
    )


def test_rollback_of_the_source_stage_is_refused_before_any_write(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response("get_pipeline_state", succeeded_deploy_state(), {"name": "web"})
    bot.command("rollback web Source", name="source")
    assert_private_error(bot.reply("source"), "a source stage cannot be rolled back")
    stub.assert_no_pending_responses()
    wait_for(lambda: bot.audit("web"), what="the refusal in the audit log")
    assert bot.audit("web")[0][:2] == ("rollback", "error")


def test_rollback_without_an_earlier_success_is_refused(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response("get_pipeline_state", succeeded_deploy_state(), {"name": "web"})
    stub.add_response(
        "list_pipeline_executions",
        summaries((EXECUTION, "Succeeded")),
        {"pipelineName": "web", "maxResults": 1},
    )
    # Only the execution the stage shows now, and an earlier rollback: no target.
    stub.add_response(
        "list_pipeline_executions",
        {
            "pipelineExecutionSummaries": [
                execution_summary(EXECUTION, "Succeeded"),
                {**execution_summary(OLDER_EXECUTION, "Succeeded"), "executionType": "ROLLBACK"},
            ]
        },
        {"pipelineName": "web", "maxResults": 20, "filter": TARGET_FILTER},
    )
    bot.command("rollback web Deploy", name="none")
    assert_private_error(bot.reply("none"), "no earlier execution that succeeded in it")
    stub.assert_no_pending_responses()


def test_rollback_in_parallel_mode_is_refused(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response("get_pipeline_state", succeeded_deploy_state(), {"name": "web"})
    stub.add_response(
        "list_pipeline_executions",
        summaries((EXECUTION, "Succeeded"), executionMode="PARALLEL"),
        {"pipelineName": "web", "maxResults": 1},
    )
    bot.command("rollback web Deploy", name="parallel")
    assert_private_error(bot.reply("parallel"), "PARALLEL mode")
    stub.assert_no_pending_responses()


def test_rollback_refused_by_aws_is_told_with_its_reason(stubbed: StubbedBot) -> None:
    """The target named on the command ran an older pipeline version: AWS refuses."""
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response("get_pipeline_state", succeeded_deploy_state(), {"name": "web"})
    stub.add_response(
        "list_pipeline_executions",
        summaries((EXECUTION, "Succeeded")),
        {"pipelineName": "web", "maxResults": 1},
    )
    stub.add_response(
        "list_pipeline_executions",
        summaries((EXECUTION, "Succeeded"), (OLDER_EXECUTION, "Succeeded")),
        {"pipelineName": "web", "maxResults": 100, "filter": TARGET_FILTER},
    )
    bot.command(f"rollback web Deploy {OLDER_EXECUTION}", name="ask")
    asked = bot.reply("ask")
    assert OLDER_EXECUTION in aws_text_of(asked)
    stub.add_client_error(
        "rollback_stage",
        service_error_code="PipelineExecutionOutdatedException",
        service_message="The target execution ran an earlier pipeline version.",
        http_status_code=400,
    )
    value = button_value(asked.params["blocks"], ids.ROLLBACK_CONFIRM)
    bot.click(ids.ROLLBACK_CONFIRM, value, name="confirm")
    assert_private_error(bot.reply("confirm"), "ran an older version of the pipeline")
    stub.assert_no_pending_responses()


def test_rollback_to_a_target_that_did_not_succeed_in_the_stage_is_refused(
    stubbed: StubbedBot,
) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response("get_pipeline_state", succeeded_deploy_state(), {"name": "web"})
    stub.add_response(
        "list_pipeline_executions",
        summaries((EXECUTION, "Succeeded")),
        {"pipelineName": "web", "maxResults": 1},
    )
    stub.add_response(
        "list_pipeline_executions",
        summaries((EXECUTION, "Succeeded")),
        {"pipelineName": "web", "maxResults": 100, "filter": TARGET_FILTER},
    )
    bot.command(f"rollback web Deploy {OLDER_EXECUTION}", name="ask")
    assert_private_error(bot.reply("ask"), "only those can be rolled back to")
    stub.assert_no_pending_responses()


def test_history_marks_rollback_executions_and_their_trigger(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    automated = {
        **execution_summary(ROLLBACK_EXECUTION, "Succeeded"),
        "executionType": "ROLLBACK",
        "rollbackMetadata": {"rollbackTargetPipelineExecutionId": OLDER_EXECUTION},
        "trigger": {"triggerType": "AutomatedRollback", "triggerDetail": EXECUTION},
    }
    webhook = {
        **execution_summary(EXECUTION, "Failed"),
        "trigger": {"triggerType": "WebhookV2", "triggerDetail": "Source"},
    }
    stub.add_response(
        "list_pipeline_executions",
        {
            "pipelineExecutionSummaries": [
                automated,
                webhook,
                execution_summary(OLDER_EXECUTION, "Succeeded"),
            ]
        },
        {"pipelineName": "web", "maxResults": 10},
    )
    bot.command("history web", name="history")
    rendered = aws_text_of(bot.reply("history"))
    assert "↩ Rollback to `0b5a6f2e`" in rendered
    assert "automatic rollback" in rendered
    assert "push matching a trigger filter" in rendered  # WebhookV2 in words
    assert rendered.count("↩ Rollback") == 1  # only the rollback is marked
    stub.assert_no_pending_responses()


# =========================================================================== conditions

RULE_EXECUTION = "7e2b9c41-0a5d-4f3e-9b8c-1d2e3f4a5b6c"


def condition_state(*, status: str = "InProgress", deploy: str = "InProgress") -> dict[str, Any]:
    """Deploy waits at its entry condition: a deployment window (waiting) and an alarm rule
    (passed); its rule summary holds mrkdwn that must not ping anyone."""
    state = state_response(
        [
            stage("Source", "Succeeded", [source()]),
            stage("Deploy", deploy, [action("Deploy")]),
        ]
    )
    state["stageStates"][1]["beforeEntryConditionState"] = {
        "latestExecution": {"status": status, "summary": "Waiting for the window"},
        "conditionStates": [
            {
                "latestExecution": {"status": status, "summary": "1 of 2 rules passed"},
                "ruleStates": [
                    {
                        "ruleName": "BusinessHours",
                        "latestExecution": {
                            "ruleExecutionId": RULE_EXECUTION,
                            "status": "InProgress" if status == "InProgress" else "Failed",
                            "summary": "Outside the window <!here> until 09:00",
                            "lastStatusChange": T2,
                        },
                    },
                    {
                        "ruleName": "NoAlarm",
                        "latestExecution": {"status": "Succeeded", "summary": "OK"},
                    },
                ],
            }
        ],
    }
    return state


def override_params(condition: str = "BEFORE_ENTRY") -> dict[str, str]:
    return {
        "pipelineName": "web",
        "stageName": "Deploy",
        "pipelineExecutionId": EXECUTION,
        "conditionType": condition,
    }


def test_status_shows_conditions_and_rules_and_override_overrides(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response("get_pipeline_state", condition_state(), {"name": "web"})
    stub.add_response(
        "list_pipeline_executions",
        summaries((EXECUTION, "InProgress")),
        {"pipelineName": "web", "maxResults": 5},
    )
    bot.command("status web", name="status")
    status = bot.reply("status")
    rendered = aws_text_of(status)
    assert "🚦 _Entry condition_ · ⏳ Waiting (in progress) — Waiting for the window" in rendered
    assert "BusinessHours · ⏳ Waiting (in progress) — Outside the window &lt;!here&gt;" in rendered
    assert "<!here>" not in rendered  # a rule's summary never pings the channel
    assert "NoAlarm · ✅ Succeeded — OK" in rendered
    blocks = status.params["blocks"]
    assert ids.OVERRIDE in action_ids(blocks)
    value = button_value(blocks, ids.OVERRIDE)
    assert ButtonRef.decode(value) == ButtonRef(
        pipeline="web", execution=EXECUTION, stage="Deploy", action="BEFORE_ENTRY"
    )
    stub.assert_no_pending_responses()

    stub.add_response("override_stage_condition", {}, override_params())
    passed = condition_state(status="Overridden")
    stub.add_response("get_pipeline_state", passed, {"name": "web"})
    stub.add_response(
        "list_pipeline_executions",
        summaries((EXECUTION, "InProgress")),
        {"pipelineName": "web", "maxResults": 5},
    )
    bot.click(ids.OVERRIDE, value, name="override", message_blocks=blocks)
    redrawn = bot.reply("override")
    assert redrawn.params.get("replace_original") is True
    assert "overrode the entry condition of *Deploy*" in message_text(redrawn)
    assert ids.OVERRIDE not in action_ids(redrawn.params["blocks"])  # nothing waits now
    stub.assert_no_pending_responses()
    wait_for(
        lambda: (ids.OVERRIDE, "ok", "stage Deploy: BEFORE_ENTRY") in bot.audit("web"),
        what="the override in the audit log",
    )


def test_override_command_finds_the_waiting_condition(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response("get_pipeline_state", condition_state(status="Failed"), {"name": "web"})
    stub.add_response("override_stage_condition", {}, override_params())
    bot.command("override web Deploy", name="override")
    told = bot.reply("override")
    assert told.params.get("response_type") == "in_channel"
    assert f"<@{ADMIN}> overrode the entry condition of *Deploy*" in message_text(told)
    stub.assert_no_pending_responses()
    wait_for(
        lambda: ("override", "ok", "stage Deploy: BEFORE_ENTRY") in bot.audit("web"),
        what="the override in the audit log",
    )


def test_override_with_execution_and_type_makes_one_call(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response("override_stage_condition", {}, override_params("ON_SUCCESS"))
    bot.command(f"override web Deploy success {EXECUTION}", name="override")
    assert "success condition" in message_text(bot.reply("override"))
    stub.assert_no_pending_responses()


def test_override_of_a_condition_that_does_not_wait_is_refused(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response("get_pipeline_state", condition_state(), {"name": "web"})
    bot.command("override web Deploy success", name="nothing")
    assert_private_error(bot.reply("nothing"), "No success condition of *Deploy*")
    stub.assert_no_pending_responses()


def test_override_refused_by_aws_is_told_why(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_client_error(
        "override_stage_condition",
        service_error_code="ConditionNotOverridableException",
        service_message="The condition has a SKIP result and cannot be overridden.",
        http_status_code=400,
    )
    bot.command(f"override web Deploy before {EXECUTION}", name="skip")
    assert_private_error(bot.reply("skip"), "That condition cannot be overridden")
    stub.assert_no_pending_responses()


def test_skipped_stage_offers_no_override(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response(
        "get_pipeline_state", condition_state(status="Failed", deploy="Skipped"), {"name": "web"}
    )
    stub.add_response(
        "list_pipeline_executions",
        summaries((EXECUTION, "Succeeded")),
        {"pipelineName": "web", "maxResults": 5},
    )
    bot.command("status web", name="status")
    status = bot.reply("status")
    rendered = aws_text_of(status)
    assert "⏭ *Deploy* · Skipped" in rendered
    # A SKIP condition that was not met did what it was declared for: no error drawn.
    assert "🚦 _Entry condition_ · ⏭ not met: skipped the stage" in rendered
    assert ids.OVERRIDE not in action_ids(status.params["blocks"])
    assert ids.ROLLBACK not in action_ids(status.params["blocks"])  # nothing ran to undo
    stub.assert_no_pending_responses()


def test_execution_shows_rule_results_from_list_rule_executions(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response(
        "get_pipeline_execution",
        {
            "pipelineExecution": {
                "pipelineName": "web",
                "pipelineVersion": 3,
                "pipelineExecutionId": EXECUTION,
                "status": "InProgress",
                "executionType": "STANDARD",
            }
        },
        {"pipelineName": "web", "pipelineExecutionId": EXECUTION},
    )
    stub.add_response(
        "list_action_executions",
        {"actionExecutionDetails": []},
        {"pipelineName": "web", "filter": {"pipelineExecutionId": EXECUTION}},
    )
    stub.add_response(
        "list_rule_executions",
        {
            "ruleExecutionDetails": [
                {
                    "pipelineExecutionId": EXECUTION,
                    "ruleExecutionId": RULE_EXECUTION,
                    "pipelineVersion": 3,
                    "stageName": "Deploy",
                    "ruleName": "BusinessHours",
                    "startTime": T2,
                    "lastUpdateTime": T2,
                    "status": "Failed",
                    "input": {
                        "ruleTypeId": {
                            "category": "Rule",
                            "owner": "AWS",
                            "provider": "DeploymentWindow",
                            "version": "1",
                        },
                        "configuration": {"Cron": "0 0 9-17 ? * MON-FRI *"},
                    },
                    "output": {
                        "executionResult": {
                            "externalExecutionSummary": "Outside the window <@U999>",
                        }
                    },
                }
            ]
        },
        {"pipelineName": "web", "filter": {"pipelineExecutionId": EXECUTION}},
    )
    bot.command(f"execution web {EXECUTION}", name="execution")
    rendered = aws_text_of(bot.reply("execution"))
    assert "🚦 *Deploy* / rule *BusinessHours* · ❌ Failed — Outside the window &lt;@U999&gt;" in (
        rendered
    )
    stub.assert_no_pending_responses()


def test_execution_without_list_rule_executions_permission_still_shows(
    stubbed: StubbedBot,
) -> None:
    """An IAM policy from before pipebot called ListRuleExecutions: the rest is shown."""
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response(
        "get_pipeline_execution",
        {
            "pipelineExecution": {
                "pipelineName": "web",
                "pipelineExecutionId": EXECUTION,
                "status": "Succeeded",
            }
        },
        {"pipelineName": "web", "pipelineExecutionId": EXECUTION},
    )
    stub.add_response(
        "list_action_executions",
        {"actionExecutionDetails": []},
        {"pipelineName": "web", "filter": {"pipelineExecutionId": EXECUTION}},
    )
    stub.add_client_error(
        "list_rule_executions",
        service_error_code="AccessDeniedException",
        service_message="not authorized to perform: codepipeline:ListRuleExecutions",
        http_status_code=400,
    )
    bot.command(f"execution web {EXECUTION}", name="execution")
    shown = bot.reply("execution")
    assert shown.params.get("response_type") == "ephemeral"
    rendered = aws_text_of(shown)
    assert "Rule results not shown" in rendered and "IAM policy" in rendered
    stub.assert_no_pending_responses()


# =========================================================================== PARALLEL approvals


def parallel_details(execution: str, token: str) -> dict[str, Any]:
    return {
        "actionExecutionDetails": [
            {
                "pipelineExecutionId": execution,
                "actionExecutionId": f"approve-{token[:8]}",
                "pipelineVersion": 3,
                "stageName": "Gate",
                "actionName": "Approve",
                "startTime": T2,
                "lastUpdateTime": T2,
                "status": "InProgress",
                "input": {
                    "actionTypeId": {
                        "category": "Approval",
                        "owner": "AWS",
                        "provider": "Manual",
                        "version": "1",
                    }
                },
                "output": {"executionResult": {"externalExecutionId": token}},
            }
        ]
    }


def test_parallel_pipeline_offers_approve_for_every_waiting_execution(
    stubbed: StubbedBot,
) -> None:
    """GetPipelineState shows the gate's latest execution only; the older one waits too, and
    is answered with its action execution's externalExecutionId."""
    bot, stub = stubbed.bot, stubbed.stub
    newer_token, older_token = "tok-newer-0001", "tok-older-0002"
    state = state_response(
        [
            stage("Source", "Succeeded", [source()]),
            stage("Gate", "InProgress", [action("Approve", "InProgress", token=newer_token)]),
        ]
    )
    running = summaries(
        (EXECUTION, "InProgress"), (OLDER_EXECUTION, "InProgress"), executionMode="PARALLEL"
    )
    stub.add_response("get_pipeline_state", state, {"name": "web"})
    stub.add_response("list_pipeline_executions", running, {"pipelineName": "web", "maxResults": 5})
    for execution, token in ((EXECUTION, newer_token), (OLDER_EXECUTION, older_token)):
        stub.add_response(
            "list_action_executions",
            parallel_details(execution, token),
            {"pipelineName": "web", "filter": {"pipelineExecutionId": execution}},
        )
    bot.command("status web", name="status")
    status = bot.reply("status")
    blocks = status.params["blocks"]
    approves = [
        ButtonRef.decode(e["value"])
        for b in blocks
        for e in b.get("elements") or []
        if isinstance(e, dict) and e.get("action_id") == ids.APPROVE
    ]
    assert {r.execution for r in approves} == {EXECUTION, OLDER_EXECUTION}
    assert older_token not in aws_text_of(status) and newer_token not in aws_text_of(status)
    stub.assert_no_pending_responses()

    older = next(r for r in approves if r.execution == OLDER_EXECUTION)
    stub.add_response("get_pipeline_state", state, {"name": "web"})
    stub.add_response(
        "list_action_executions",
        parallel_details(OLDER_EXECUTION, older_token),
        {"pipelineName": "web", "filter": {"pipelineExecutionId": OLDER_EXECUTION}},
    )
    stub.add_response(
        "put_approval_result",
        {"approvedAt": T2},
        {
            "pipelineName": "web",
            "stageName": "Gate",
            "actionName": "Approve",
            "result": {"summary": f"Approved in Slack by admin ({ADMIN})", "status": "Approved"},
            "token": older_token,
        },
    )
    # The redraw after the click.
    stub.add_response("get_pipeline_state", state, {"name": "web"})
    stub.add_response("list_pipeline_executions", running, {"pipelineName": "web", "maxResults": 5})
    stub.add_response(
        "list_action_executions",
        parallel_details(EXECUTION, newer_token),
        {"pipelineName": "web", "filter": {"pipelineExecutionId": EXECUTION}},
    )
    stub.add_response(
        "list_action_executions",
        {"actionExecutionDetails": []},
        {"pipelineName": "web", "filter": {"pipelineExecutionId": OLDER_EXECUTION}},
    )
    bot.click(ids.APPROVE, older.encode(), name="approve", message_blocks=blocks)
    redrawn = bot.reply("approve")
    assert "approved" in message_text(redrawn), aws_text_of(redrawn)
    stub.assert_no_pending_responses()
