"""Rollback from Slack (issue 13): the ``rollback`` command and its question, the Roll back
button and its confirm, refusals, rollback executions in ``history``, ``status`` and the
channel's parent message, and automatic retries and rollbacks as thread events.

* **AWS backend**: in ``tests/test_slack_aws_v2.py`` (botocore's Stubber on a real boto3
  client, with the fixtures of ``tests/test_slack_aws.py``).
* **Embedded engine**: the real Bolt app on ``LocalCodePipeline`` (SQLite and PostgreSQL)
  with the recording fake Slack: a real rollback execution, refusals, the audit log.
* **Thread events**: ``snapshot_events`` and ``event_reply`` on GetPipelineState-shaped data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.notify.snapshot import RETRIED, ROLLED_BACK, execution_snapshot, snapshot_events
from bot.ops.pipeline_state import RollbackTarget
from bot.slack import ids
from bot.slack.history import history_blocks
from bot.slack.ids import ButtonRef
from bot.slack.notifications import event_reply, parent_message
from bot.slack.status import status_blocks
from storage import bot_store
from storage.db import transaction
from tests.blockcheck import check_message, refs, texts
from tests.helpers import commands_action, commit, pipeline, source_action, wait_for
from tests.shapecheck import assert_output_shape
from tests.slack_bot import ADMIN, OTHER, Bot, text_of
from tests.test_notifier import Harness
from tests.test_slack_aws import (
    EXECUTION,
    OLDER_EXECUTION,
    SHA,
    T2,
    action,
    execution_summary,
    failed_state,
    source,
    stage,
    state_response,
)

ROLLBACK_EXECUTION = "5d1e7c2a-9b3f-4e6d-8a1c-2f4b6d8e0a13"


# =========================================================================== embedded engine


def deploy_pipeline() -> dict[str, Any]:
    return pipeline(
        "web",
        [
            ("Source", [source_action()]),
            ("Deploy", [commands_action("Deploy", ["cat app.txt"])]),
        ],
    )


def succeeded(bot: Bot, count: int) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        found = bot.engine.list_pipeline_executions(pipelineName="web")[
            "pipelineExecutionSummaries"
        ]
        ok = [e for e in found if e["status"] == "Succeeded"]
        return ok if len(ok) >= count else None

    return wait_for(done, timeout=60, what=f"{count} successful executions")


def test_engine_rollback_command_confirm_runs_a_rollback_execution(
    bot: Bot, repos_dir: Path
) -> None:
    bot.engine.create_pipeline(pipeline=deploy_pipeline())
    first = succeeded(bot, 1)[0]["pipelineExecutionId"]
    commit(repos_dir / "app", {"app.txt": "v2\n"}, "Second <b>release</b>")
    bot.engine.start_pipeline_execution(name="web")
    second = next(
        e["pipelineExecutionId"] for e in succeeded(bot, 2) if e["pipelineExecutionId"] != first
    )

    bot.command("rollback web Deploy", name="ask")
    asked = bot.reply("ask")
    assert first in text_of(asked) and second not in text_of(asked)
    ref = ButtonRef(pipeline="web", execution=first, stage="Deploy")
    bot.click(ids.ROLLBACK_CONFIRM, ref, name="confirm")
    answered = bot.reply("confirm")
    assert "rolled back *Deploy*" in text_of(answered), text_of(answered)

    def rollback() -> dict[str, Any] | None:
        for summary in bot.engine.list_pipeline_executions(pipelineName="web")[
            "pipelineExecutionSummaries"
        ]:
            if summary.get("executionType") == "ROLLBACK":
                return dict(summary)
        return None

    summary = wait_for(rollback, timeout=60, what="the rollback execution")
    assert_output_shape("ListPipelineExecutions", {"pipelineExecutionSummaries": [summary]})
    assert summary["rollbackMetadata"]["rollbackTargetPipelineExecutionId"] == first
    assert summary["trigger"]["triggerType"] == "ManualRollback"

    bot.command("history web", name="history")
    shown = text_of(bot.reply("history"))
    assert f"Rollback to `{first[:8]}`" in shown
    assert f"rolled back by <@{ADMIN}>" in shown  # pipebot recorded who rolled back
    wait_for(
        lambda: any(e.what == ids.ROLLBACK_CONFIRM and e.outcome == "ok" for e in _audit(bot)),
        what="the rollback in the audit log",
    )


def _audit(bot: Bot) -> list[Any]:
    with bot.services.sessions() as session:
        return list(bot_store.list_audit(session=session, pipeline="web"))


def test_engine_rollback_is_refused_without_the_operate_permission(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=deploy_pipeline())
    first = succeeded(bot, 1)[0]["pipelineExecutionId"]
    bot.command("rollback web Deploy", user=OTHER, name="cmd")
    refused = bot.reply("cmd")
    assert refused.params.get("response_type") == "ephemeral"
    assert "admins:" in text_of(refused).lower()
    ref = ButtonRef(pipeline="web", execution=first, stage="Deploy")
    for action_id in (ids.ROLLBACK, ids.ROLLBACK_CONFIRM):
        bot.click(action_id, ref, user=OTHER, name=f"btn-{action_id}")
        assert "admins:" in text_of(bot.reply(f"btn-{action_id}")).lower()
    executions = bot.engine.list_pipeline_executions(pipelineName="web")
    assert all(
        e.get("executionType") != "ROLLBACK" for e in executions["pipelineExecutionSummaries"]
    )
    wait_for(
        lambda: len([e for e in _audit(bot) if e.outcome == "refused"]) == 3,
        what="three refusals in the audit log",
    )


def test_engine_source_stage_and_first_execution_are_refused(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=deploy_pipeline())
    succeeded(bot, 1)
    bot.command("rollback web Source", name="source")
    assert "source stage cannot be rolled back" in text_of(bot.reply("source"))
    # One execution only: the stage shows it, there is nothing earlier to go back to.
    bot.command("rollback web Deploy", name="first")
    assert "no earlier execution that succeeded in it" in text_of(bot.reply("first"))
    bot.command("rollback web Nope", name="nope")
    assert "has no stage `Nope`" in text_of(bot.reply("nope"))


# =========================================================================== thread events


def _summary(**extra: Any) -> dict[str, Any]:
    return {**execution_summary(ROLLBACK_EXECUTION, "InProgress"), **extra}


def _rollback_state() -> dict[str, Any]:
    state = state_response(
        [
            stage("Source", "Succeeded", [source()]),
            stage(
                "Deploy",
                "InProgress",
                [action("Deploy", "InProgress")],
                execution=ROLLBACK_EXECUTION,
            ),
        ]
    )
    state["stageStates"][1]["latestExecution"]["type"] = "ROLLBACK"
    assert_output_shape("GetPipelineState", state)
    return state


@pytest.mark.parametrize(
    ("trigger", "by", "said"),
    [
        ("ManualRollback", "UBOB", "↩ *Deploy* rolled back to `0b5a6f2e` by <@UBOB>"),
        ("AutomatedRollback", None, "↩ *Deploy* rolled back automatically to `0b5a6f2e`"),
    ],
)
def test_rollback_execution_is_a_thread_event_and_marks_its_parent(
    trigger: str, by: str | None, said: str
) -> None:
    summary = _summary(
        executionType="ROLLBACK",
        rollbackMetadata={"rollbackTargetPipelineExecutionId": OLDER_EXECUTION},
        trigger={"triggerType": trigger, "triggerDetail": EXECUTION},
    )
    assert_output_shape("ListPipelineExecutions", {"pipelineExecutionSummaries": [summary]})
    snapshot = execution_snapshot(
        pipeline="web", state=_rollback_state(), summary=summary, started_by=by
    )
    json.dumps(snapshot)  # stored as JSON
    events = snapshot_events(before=None, after=snapshot)
    rolled = [e for e in events if e.kind == ROLLED_BACK]
    assert len(rolled) == 1
    reply = event_reply(
        event=rolled[0],
        pipeline="web",
        execution_id=ROLLBACK_EXECUTION,
        approvers=(),
        custom_data=None,
        external_link=None,
        log_tail=None,
        now=T2,
    )
    assert said in texts(check_message(reply["blocks"]))
    assert snapshot_events(before=snapshot, after=snapshot) == []  # told once
    parent = parent_message(snapshot=snapshot, now=T2)
    assert "↩ *Rollback of Deploy* to `0b5a6f2e`" in texts(check_message(parent["blocks"]))


def test_standard_execution_snapshot_has_no_rollback_key() -> None:
    """Snapshots of other executions stay as they were stored (no needless chat.update)."""
    snapshot = execution_snapshot(
        pipeline="web",
        state=failed_state(),
        summary=execution_summary(EXECUTION, "Failed"),
        started_by=None,
    )
    assert "rollback" not in snapshot
    assert all("autoRetries" not in s for s in snapshot["stages"])


def test_automatic_retry_is_a_thread_event_per_attempt() -> None:
    failed = failed_state()
    before = execution_snapshot(
        pipeline="web",
        state=failed,
        summary=execution_summary(EXECUTION, "InProgress"),
        started_by=None,
    )
    retried = failed_state()
    retried["stageStates"][1]["latestExecution"]["status"] = "InProgress"
    retried["stageStates"][1]["retryStageMetadata"] = {
        "autoStageRetryAttempt": 1,
        "manualStageRetryAttempt": 0,
        "latestRetryTrigger": "AutomatedStageRetry",
    }
    assert_output_shape("GetPipelineState", retried)
    after = execution_snapshot(
        pipeline="web",
        state=retried,
        summary=execution_summary(EXECUTION, "InProgress"),
        started_by=None,
    )
    events = [e for e in snapshot_events(before=before, after=after) if e.kind == RETRIED]
    assert [(e.key, e.attempt) for e in events] == [("retried:Deploy:auto:1", 1)]
    reply = event_reply(
        event=events[0],
        pipeline="web",
        execution_id=EXECUTION,
        approvers=(),
        custom_data=None,
        external_link=None,
        log_tail=None,
        now=T2,
    )
    assert "*Deploy* failed, retried automatically (attempt 1)" in texts(
        check_message(reply["blocks"])
    )
    assert not [e for e in snapshot_events(before=after, after=after) if e.kind == RETRIED]


def test_failure_reply_offers_roll_back_with_a_confirm_when_a_target_exists() -> None:
    before = None
    after = execution_snapshot(
        pipeline="web",
        state=failed_state(),
        summary=execution_summary(EXECUTION, "Failed"),
        started_by=None,
    )
    failure = next(e for e in snapshot_events(before=before, after=after) if e.kind == "failed")
    target = RollbackTarget(
        pipeline="web",
        stage="Deploy",
        execution_id=OLDER_EXECUTION,
        revisions=(("Source", SHA),),
        succeeded_at=T2,
    )
    common: dict[str, Any] = {
        "event": failure,
        "pipeline": "web",
        "execution_id": EXECUTION,
        "approvers": (),
        "custom_data": None,
        "external_link": None,
        "log_tail": None,
        "now": T2,
    }
    with_target = check_message(event_reply(**common, rollback_target=target)["blocks"])
    button = next(
        e
        for b in with_target
        for e in b.get("elements") or []
        if isinstance(e, dict) and e.get("action_id") == ids.ROLLBACK
    )
    assert "0b5a6f2e" in button["text"]["text"]
    assert "Source@a1b2c3d" in button["confirm"]["text"]["text"]
    assert "2025-05-06 09:07 UTC" in button["confirm"]["text"]["text"]
    without = check_message(event_reply(**common)["blocks"])
    assert ids.ROLLBACK not in json.dumps(without)  # no earlier success: no button


def test_status_draws_skipped_stages_as_skipped_not_unknown() -> None:
    state = state_response(
        [
            stage("Source", "Succeeded", [source()]),
            stage("Deploy", "Skipped", [action("Deploy")]),
        ]
    )
    assert_output_shape("GetPipelineState", state)
    blocks = check_message(
        status_blocks(
            state=state,
            executions=[execution_summary(EXECUTION, "Succeeded")],
            approvals_allowed=True,
            operate_allowed=True,
            now=datetime(2025, 5, 6, 10, tzinfo=UTC),
        )
    )
    assert "⏭ *Deploy* · Skipped" in texts(blocks)
    history = check_message(
        history_blocks(pipeline="web", executions=[execution_summary(EXECUTION, "Succeeded")])
    )
    assert "Rollback" not in texts(history)


# =========================================================================== the notifier


@pytest.fixture
def harness(engine: Any, database_url: str, fake: Any) -> Iterator[Harness]:
    made = Harness(engine, database_url, fake)
    yield made
    made.db.dispose()


def checked_deploy(**stage_extra: Any) -> dict[str, Any]:
    """Deploy fails once app.txt says v2 (the repository starts at v1)."""
    declaration = pipeline(
        "web",
        [
            ("Source", [source_action()]),
            ("Deploy", [commands_action("Deploy", ["grep -q v1 app.txt"])]),
        ],
    )
    declaration["stages"][1].update(stage_extra)
    return declaration


def test_notifier_failure_reply_rolls_back_and_the_rollback_is_told_in_its_thread(
    harness: Harness, repos_dir: Path
) -> None:
    h = harness
    h.engine.create_pipeline(pipeline=checked_deploy())
    h.subscribe("web", "CALL")
    notifier = h.notifier()
    h.pump(notifier, lambda: h.execution_status() == "Succeeded", "the first execution")
    first = h.engine.list_pipeline_executions(pipelineName="web")["pipelineExecutionSummaries"][0][
        "pipelineExecutionId"
    ]
    commit(repos_dir / "app", {"app.txt": "v2\n"}, "Break the deploy")
    h.engine.start_pipeline_execution(name="web")
    h.pump(
        notifier,
        lambda: bool(h.replies_with("CALL", "Stage failed")) and not h.pending(),
        "the failure reply",
    )
    failure = h.replies_with("CALL", "Stage failed")[0]
    rollbacks = refs(failure.params["blocks"], ids.ROLLBACK)
    assert rollbacks == [ButtonRef(pipeline="web", execution=first, stage="Deploy")]
    assert f"execution {first[:8]}" in text_of(failure)  # the confirm names the target

    rolled = h.engine.rollback_stage(
        pipelineName="web", stageName="Deploy", targetPipelineExecutionId=first
    )["pipelineExecutionId"]
    with transaction(h.sessions) as session:  # as the Roll back button records it
        bot_store.record_starter(
            session=session, execution_id=rolled, pipeline="web", user_id=ADMIN
        )
    h.pump(
        notifier,
        lambda: bool(h.replies_with("CALL", "rolled back")) and not h.pending(),
        "the rollback's thread event",
    )
    told = texts(h.replies_with("CALL", "rolled back")[0].params["blocks"])
    assert f"*Deploy* rolled back to `{first[:8]}` by <@{ADMIN}>" in told
    parents = [
        c for c in [*h.posts("CALL", thread=False), *h.updates("CALL")] if rolled[:8] in text_of(c)
    ]
    assert any(
        f"Rollback of Deploy* to `{first[:8]}`" in texts(c.params["blocks"]) for c in parents
    )


def test_notifier_tells_an_automatic_retry_in_the_thread(harness: Harness, repos_dir: Path) -> None:
    h = harness
    commit(repos_dir / "app", {"app.txt": "v2\n"}, "Break the deploy")
    h.engine.create_pipeline(
        pipeline=checked_deploy(
            onFailure={"result": "RETRY", "retryConfiguration": {"retryMode": "FAILED_ACTIONS"}}
        )
    )
    h.subscribe("web", "CALL")
    notifier = h.notifier()
    h.pump(
        notifier,
        lambda: bool(h.replies_with("CALL", "retried automatically")) and not h.pending(),
        "the automatic retry's thread event",
    )
    told = texts(h.replies_with("CALL", "retried automatically")[0].params["blocks"])
    assert "*Deploy* failed, retried automatically (attempt 1)" in told


def test_roll_back_confirm_keeps_target_and_time_with_the_longest_names() -> None:
    long_name = "S" * 100
    target = RollbackTarget(
        pipeline="P" * 100,
        stage=long_name,
        execution_id=OLDER_EXECUTION,
        revisions=(("A" * 100, SHA), ("B" * 100, "x" * 200)),
        succeeded_at=T2,
    )
    blocks = check_message(
        status_blocks(
            state=state_response([stage("Source", "Succeeded", [source()])]),
            executions=[],
            approvals_allowed=True,
            operate_allowed=True,
            now=T2,
            rollback_targets={long_name: target},
        )
    )
    button = next(
        e
        for b in blocks
        for e in b.get("elements") or []
        if isinstance(e, dict) and e.get("action_id") == ids.ROLLBACK
    )
    confirm = button["confirm"]["text"]["text"]
    assert len(confirm) <= 300
    assert "execution 0b5a6f2e" in confirm and "2025-05-06 09:07 UTC" in confirm


def test_status_says_a_stage_was_retried_automatically() -> None:
    state = failed_state()
    state["stageStates"][1]["retryStageMetadata"] = {
        "autoStageRetryAttempt": 1,
        "manualStageRetryAttempt": 0,
        "latestRetryTrigger": "AutomatedStageRetry",
    }
    assert_output_shape("GetPipelineState", state)
    blocks = check_message(
        status_blocks(
            state=state,
            executions=[execution_summary(EXECUTION, "Failed")],
            approvals_allowed=True,
            operate_allowed=True,
            now=T2,
        )
    )
    assert "❌ *Deploy* · Failed · retry 1, retried automatically" in texts(blocks)
