"""Stage conditions from Slack (issue 13) on the embedded engine, through the real Bolt app and
the recording fake Slack (SQLite and PostgreSQL): a deployment window that holds a stage is
drawn in ``status`` with its rule's result and an Override button; the button and the
``override`` command let it pass (operators only, audited); a SKIP condition draws the stage
``Skipped``. The renderers' own rules (escaping, which conditions an Override is offered for)
are tested on GetPipelineState-shaped data; the AWS backend's side is in
``tests/test_slack_aws_v2.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bot.ops.pipeline_state import open_conditions, stage_conditions
from bot.slack import ids
from bot.slack.ids import ButtonRef
from bot.slack.status import status_blocks
from handlers.grammar import CommandError, parse
from storage import bot_store
from tests.blockcheck import check_message, refs, texts
from tests.helpers import commands_action, pipeline, source_action, wait_for
from tests.shapecheck import assert_output_shape
from tests.slack_bot import ADMIN, OTHER, Bot, text_of

NEVER_OPEN = {"Cron": "0 0 3 ? * SUN 2099", "TimeZone": "UTC"}
"""A deployment window that opens in 2099: the stage waits for it."""


def windowed(*, result: str = "FAIL") -> dict[str, Any]:
    """Source, then Deploy behind an entry condition: a deployment window."""
    declaration = pipeline(
        "web",
        [
            ("Source", [source_action()]),
            ("Deploy", [commands_action("Deploy", ["cat app.txt"])]),
        ],
    )
    declaration["stages"][1]["beforeEntry"] = {
        "conditions": [
            {
                "result": result,
                "rules": [
                    {
                        "name": "Window",
                        "ruleTypeId": {
                            "category": "Rule",
                            "owner": "AWS",
                            "provider": "DeploymentWindow",
                            "version": "1",
                        },
                        "configuration": NEVER_OPEN,
                    }
                ],
            }
        ]
    }
    return declaration


def skipped_on_main() -> dict[str, Any]:
    """Deploy is skipped unless the source branch is ``release`` (a VariableCheck SKIP)."""
    declaration = windowed(result="SKIP")
    declaration["stages"][1]["beforeEntry"]["conditions"][0]["rules"] = [
        {
            "name": "OnRelease",
            "ruleTypeId": {
                "category": "Rule",
                "owner": "AWS",
                "provider": "VariableCheck",
                "version": "1",
            },
            "configuration": {
                "Variable": "#{SourceVariables.BranchName}",
                "Value": "release",
                "Operator": "EQ",
            },
        }
    ]
    return declaration


def deploy_stage(bot: Bot) -> dict[str, Any]:
    state = bot.engine.get_pipeline_state(name="web")
    assert_output_shape("GetPipelineState", state)
    return dict(state["stageStates"][1])


def waiting_at_window(bot: Bot) -> str:
    bot.engine.create_pipeline(pipeline=windowed())

    def waiting() -> str | None:
        stage = deploy_stage(bot)
        condition = (stage.get("beforeEntryConditionState") or {}).get("latestExecution") or {}
        if condition.get("status") == "InProgress":
            return str(stage["latestExecution"]["pipelineExecutionId"])
        return None

    return wait_for(waiting, timeout=60, what="Deploy to wait at its window")


def execution_status(bot: Bot, execution: str) -> str:
    return str(
        bot.engine.get_pipeline_execution(pipelineName="web", pipelineExecutionId=execution)[
            "pipelineExecution"
        ]["status"]
    )


def audit(bot: Bot) -> list[tuple[str, str, str | None]]:
    with bot.services.sessions() as session:
        entries = bot_store.list_audit(session=session, pipeline="web")
    return [(e.what, e.outcome, e.detail) for e in entries]


# =========================================================================== embedded engine


def test_status_shows_the_window_and_override_lets_the_stage_run(bot: Bot) -> None:
    execution = waiting_at_window(bot)
    bot.command("status web", name="status")
    status = bot.reply("status")
    rendered = text_of(status)
    assert "Entry condition" in rendered and "Waiting (in progress)" in rendered
    assert "Window" in rendered and "Outside the deployment window" in rendered
    overrides = refs(status.params["blocks"], ids.OVERRIDE)
    assert overrides == [
        ButtonRef(pipeline="web", execution=execution, stage="Deploy", action="BEFORE_ENTRY")
    ]

    bot.click(ids.OVERRIDE, overrides[0], name="override")
    redrawn = bot.reply("override")
    assert "overrode the entry condition of *Deploy*" in text_of(redrawn), text_of(redrawn)
    wait_for(
        lambda: execution_status(bot, execution) == "Succeeded",
        timeout=60,
        what="the execution to go on past the overridden window",
    )
    wait_for(
        lambda: (ids.OVERRIDE, "ok", "stage Deploy: BEFORE_ENTRY") in audit(bot),
        what="the override in the audit log",
    )


def test_override_command_lets_the_waiting_condition_pass(bot: Bot) -> None:
    execution = waiting_at_window(bot)
    bot.command("override web Deploy", name="override")
    told = bot.reply("override")
    assert told.params.get("response_type") == "in_channel"
    assert f"<@{ADMIN}> overrode the entry condition of *Deploy*" in text_of(told)
    wait_for(
        lambda: execution_status(bot, execution) == "Succeeded",
        timeout=60,
        what="the execution to go on",
    )
    bot.command("override web Deploy", name="again")
    assert "nothing to override" in text_of(bot.reply("again"))
    # The execution shows its rule's executions (ListRuleExecutions).
    bot.command(f"execution web {execution}", name="execution")
    shown = texts(bot.reply("execution").params["blocks"])
    assert "🚦 *Deploy* / rule *Window*" in shown, shown
    assert "Rule results not shown" not in shown


def test_override_is_an_operator_right(bot: Bot) -> None:
    execution = waiting_at_window(bot)
    bot.command("override web Deploy", user=OTHER, name="cmd")
    assert "admins:" in text_of(bot.reply("cmd")).lower()
    ref = ButtonRef(pipeline="web", execution=execution, stage="Deploy", action="BEFORE_ENTRY")
    bot.click(ids.OVERRIDE, ref, user=OTHER, name="btn")
    assert "admins:" in text_of(bot.reply("btn")).lower()
    # Still waiting: neither reached the engine.
    condition = deploy_stage(bot)["beforeEntryConditionState"]["latestExecution"]
    assert condition["status"] == "InProgress"
    # Someone who may read but not operate sees no Override.
    bot.command("status web", user=OTHER, name="status")
    assert ids.OVERRIDE not in text_of(bot.reply("status"))
    wait_for(
        lambda: [o for _, o, _ in audit(bot)].count("refused") == 2,
        what="both refusals in the audit log",
    )


def test_skip_condition_draws_the_stage_skipped(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=skipped_on_main())
    wait_for(
        lambda: (deploy_stage(bot).get("latestExecution") or {}).get("status") == "Skipped",
        timeout=60,
        what="Deploy to be skipped",
    )
    bot.command("status web", name="status")
    status = bot.reply("status")
    rendered = texts(status.params["blocks"])
    assert "⏭ *Deploy* · Skipped" in rendered
    assert "🚦 _Entry condition_" in rendered and "OnRelease" in rendered
    assert refs(status.params["blocks"], ids.OVERRIDE) == []  # SKIP cannot be overridden
    bot.command("override web Deploy", name="override")
    assert "nothing to override" in text_of(bot.reply("override"))


# =========================================================================== renderers


def _state(stage: dict[str, Any]) -> dict[str, Any]:
    state = {
        "pipelineName": "web",
        "pipelineVersion": 1,
        "stageStates": [
            {
                "stageName": "Source",
                "latestExecution": {
                    "pipelineExecutionId": "e" * 8 + "-0000-0000-0000-" + "0" * 12,
                    "status": "Succeeded",
                },
                "actionStates": [{"actionName": "Source"}],
            },
            stage,
        ],
    }
    assert_output_shape("GetPipelineState", state)
    return state


EXECUTION = "3137f7cb-7cf7-4c6a-9f5b-7c1f4d0e6a21"


def _condition(status: str, rules: list[tuple[str, str, str]]) -> dict[str, Any]:
    return {
        "latestExecution": {"status": status},
        "conditionStates": [
            {
                "latestExecution": {"status": status},
                "ruleStates": [
                    {"ruleName": n, "latestExecution": {"status": s, "summary": text}}
                    for n, s, text in rules
                ],
            }
        ],
    }


def test_only_entry_and_success_conditions_that_wait_or_failed_offer_override() -> None:
    stage = {
        "stageName": "Deploy",
        "latestExecution": {"pipelineExecutionId": EXECUTION, "status": "Failed"},
        "actionStates": [{"actionName": "Deploy"}],
        "beforeEntryConditionState": _condition("Succeeded", [("Vars", "Succeeded", "ok")]),
        "onSuccessConditionState": _condition("Failed", [("Alarm", "Failed", "alarm <!channel>")]),
        "onFailureConditionState": _condition("Failed", [("Roll", "Failed", "x")]),
    }
    state = _state(stage)
    kinds = [(c.member, c.condition_type, c.overridable) for c in stage_conditions(stage)]
    assert kinds == [
        ("beforeEntryConditionState", "BEFORE_ENTRY", False),  # it passed
        ("onSuccessConditionState", "ON_SUCCESS", True),
        ("onFailureConditionState", None, False),  # AWS overrides no failure condition
    ]
    assert [c.condition_type for c in open_conditions(state)] == ["ON_SUCCESS"]
    blocks = check_message(
        status_blocks(
            state=state,
            executions=[],
            approvals_allowed=True,
            operate_allowed=True,
            now=datetime(2025, 5, 6, tzinfo=UTC),
        )
    )
    text = texts(blocks)
    assert "alarm &lt;!channel&gt;" in text and "<!channel>" not in text
    assert "Success condition" in text and "Failure condition" in text
    assert [r.action for r in refs(blocks, ids.OVERRIDE)] == ["ON_SUCCESS"]
    viewer = check_message(
        status_blocks(
            state=state,
            executions=[],
            approvals_allowed=True,
            operate_allowed=False,
            now=datetime(2025, 5, 6, tzinfo=UTC),
        )
    )
    assert refs(viewer, ids.OVERRIDE) == []


@pytest.mark.parametrize(
    ("text", "args"),
    [
        ("override web Deploy", {"stage": "Deploy", "condition": None, "execution": None}),
        (
            "override web Deploy before",
            {"stage": "Deploy", "condition": "BEFORE_ENTRY", "execution": None},
        ),
        (
            f"override web Deploy success {EXECUTION}",
            {"stage": "Deploy", "condition": "ON_SUCCESS", "execution": EXECUTION},
        ),
        (
            "override web Deploy 3137f7cb",
            {"stage": "Deploy", "condition": None, "execution": "3137f7cb"},
        ),
        ("rollback web Deploy", {"stage": "Deploy", "execution": None}),
        ("rollback web Deploy 3137f7cb", {"stage": "Deploy", "execution": "3137f7cb"}),
    ],
)
def test_grammar_of_override_and_rollback(text: str, args: dict[str, Any]) -> None:
    parsed = parse(text)
    assert parsed.pipeline == "web"
    assert dict(parsed.args) == args


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("override web", "needs STAGE"),
        ("override web Deploy later", "neither `before` nor `success`"),
        ("override web Deploy before success", "Too many arguments"),
        ("rollback web", "needs STAGE"),
        ("rollback web Deploy nope", "is not an execution ID"),
        ("rollback web Deploy 3137f7cb extra", "Too many arguments"),
    ],
)
def test_grammar_refuses_bad_override_and_rollback(text: str, said: str) -> None:
    with pytest.raises(CommandError) as info:
        parse(text)
    assert said in info.value.message
    assert info.value.usage is not None
