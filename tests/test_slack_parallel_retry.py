"""Issue 13's Slack leftovers, through the real engine (SQLite and PostgreSQL), the real Bolt
app and the fake Slack:

* a PARALLEL pipeline: the notifier posts the approval request, with Approve/Reject, in the
  thread of EVERY execution that waits (GetPipelineState shows a stage's latest execution
  only), and each button answers its own execution;
* ``/pipeline approve NAME [STAGE/ACTION] [EXECUTION] [COMMENT]``: one execution named,
  answered in PARALLEL mode with its action execution's ``externalExecutionId`` as the token;
* a manual retry (RetryStageExecution) told in the execution's thread like an automatic one,
  naming who retried when pipebot did it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.notify.snapshot import MANUAL_RETRY, RETRIED, Event, snapshot_events
from bot.ops.pipeline_ops import OpsError, PipelineOps
from bot.slack import ids
from bot.slack.notifications import event_reply
from tests.blockcheck import refs, texts
from tests.helpers import (
    approval_action,
    commands_action,
    commit,
    pipeline,
    source_action,
    wait_for,
)
from tests.slack_bot import ADMIN, Bot, text_of
from tests.test_notifier import Harness


@pytest.fixture
def harness(engine: Any, database_url: str, fake: Any) -> Iterator[Harness]:
    made = Harness(engine, database_url, fake)
    yield made
    made.db.dispose()


def gated(mode: str = "PARALLEL") -> dict[str, Any]:
    return pipeline(
        "web",
        [
            ("Source", [source_action()]),
            ("Gate", [approval_action("Approve")]),
            ("Deploy", [commands_action("Deploy", ["cat app.txt"])]),
        ],
        executionMode=mode,
    )


def _executions(engine: Any) -> list[dict[str, Any]]:
    return list(engine.list_pipeline_executions(pipelineName="web")["pipelineExecutionSummaries"])


def _status(engine: Any, execution_id: str) -> str:
    return str(
        engine.get_pipeline_execution(pipelineName="web", pipelineExecutionId=execution_id)[
            "pipelineExecution"
        ]["status"]
    )


def _waiting_ids(engine: Any, execution_ids: list[str]) -> bool:
    """Whether each execution has an approval action execution in progress."""
    for execution_id in execution_ids:
        details = engine.list_action_executions(
            pipelineName="web", filter={"pipelineExecutionId": execution_id}
        )["actionExecutionDetails"]
        if not any(d["stageName"] == "Gate" and d["status"] == "InProgress" for d in details):
            return False
    return True


def _two_waiting(engine: Any) -> tuple[str, str]:
    """Two executions of the PARALLEL pipeline waiting at the gate: (older, newer)."""
    engine.create_pipeline(pipeline=gated())
    first = wait_for(lambda: _executions(engine), what="the first execution")[0]
    older = str(first["pipelineExecutionId"])
    wait_for(lambda: _waiting_ids(engine, [older]), what="the first approval")
    newer = str(engine.start_pipeline_execution(name="web")["pipelineExecutionId"])
    wait_for(lambda: _waiting_ids(engine, [older, newer]), what="both approvals")
    gate = next(
        s for s in engine.get_pipeline_state(name="web")["stageStates"] if s["stageName"] == "Gate"
    )
    assert gate["latestExecution"]["pipelineExecutionId"] == newer  # the state shows one only
    return older, newer


# =========================================================================== PARALLEL approvals


def test_every_waiting_execution_gets_its_approval_request_and_its_buttons_answer_it(
    harness: Harness, bot: Bot
) -> None:
    h = harness
    h.subscribe("web", "CALL")
    older, newer = _two_waiting(h.engine)
    notifier = h.notifier()
    h.pump(
        notifier,
        lambda: len(h.replies_with("CALL", "Approval needed")) >= 2 and not h.pending(),
        "an approval request in each thread",
    )
    requests = h.replies_with("CALL", "Approval needed")
    assert len(requests) == 2
    by_execution = {}
    for request in requests:
        (approve,) = refs(request.params["blocks"], ids.APPROVE)
        (reject,) = refs(request.params["blocks"], ids.REJECT)
        assert approve.execution == reject.execution
        by_execution[approve.execution] = request
    assert set(by_execution) == {older, newer}
    # Each in its own execution's thread.
    assert len({r.params["thread_ts"] for r in requests}) == 2

    # The older execution's Approve button answers the older execution, not the newer one
    # the state shows.
    (approve,) = refs(by_execution[older].params["blocks"], ids.APPROVE)
    bot.click(ids.APPROVE, approve, name="approve-older")
    wait_for(lambda: _status(h.engine, older) == "Succeeded", what="the older execution")
    assert _status(h.engine, newer) == "InProgress"
    h.pump(
        notifier,
        lambda: any(f"<@{ADMIN}>" in text_of(c) for c in h.updates("CALL")) and not h.pending(),
        "the older approval's outcome",
    )
    assert _waiting_ids(h.engine, [newer])
    # The newer execution's request still offers its buttons; the older one's gave way.
    newer_thread = by_execution[newer].params["thread_ts"]
    assert not [
        c for c in h.updates("CALL") if c.params.get("ts") == by_execution[newer].params.get("ts")
    ]
    assert newer_thread != by_execution[older].params["thread_ts"]


def test_approve_command_names_one_execution_and_answers_with_its_external_id(
    bot: Bot,
) -> None:
    older, newer = _two_waiting(bot.engine)
    bot.command(f"approve web {older[:8]} ship the older one", name="older")
    answered = text_of(bot.reply("older"))
    assert "Approved" in answered or "approved" in answered, answered
    wait_for(lambda: _status(bot.engine, older) == "Succeeded", what="the older execution")
    assert _status(bot.engine, newer) == "InProgress"
    summaries = [
        d
        for d in bot.engine.list_action_executions(
            pipelineName="web", filter={"pipelineExecutionId": older}
        )["actionExecutionDetails"]
        if d["stageName"] == "Gate"
    ]
    assert summaries[0]["output"]["executionResult"]["externalExecutionSummary"].endswith(
        "ship the older one"
    )

    bot.command(f"reject web Gate/Approve {newer} not this one", name="newer")
    assert "ejected" in text_of(bot.reply("newer"))
    wait_for(lambda: _status(bot.engine, newer) == "Failed", what="the newer execution")
    # Nothing waits in either any more: a clear refusal naming the execution.
    bot.command(f"approve web {older[:8]}", name="again")
    again = text_of(bot.reply("again"))
    assert f"No approval is waiting in execution `{older[:8]}` of `web`" in again, again


class _Recording:
    """The engine, recording the PutApprovalResult calls pipebot makes."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.answers: list[dict[str, Any]] = []

    def put_approval_result(self, **params: Any) -> dict[str, Any]:
        self.answers.append(params)
        return dict(self._engine.put_approval_result(**params))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def test_parallel_answer_uses_the_action_execution_external_id_as_the_token(
    engine: Any,
) -> None:
    older, _newer = _two_waiting(engine)
    client = _Recording(engine)
    ops = PipelineOps(client=client, local=True)  # type: ignore[arg-type]
    approval = ops.execution_approval("web", older, None, None)
    details = engine.list_action_executions(
        pipelineName="web", filter={"pipelineExecutionId": older}
    )["actionExecutionDetails"]
    external = next(
        d["output"]["executionResult"]["externalExecutionId"]
        for d in details
        if d["stageName"] == "Gate"
    )
    assert approval.token == external and approval.execution_id == older
    ops.answer(approval, approved=True, summary="ok")
    assert client.answers[0]["token"] == external
    with pytest.raises(OpsError, match="No approval Gate / Nope is waiting"):
        ops.execution_approval("web", older, "Gate", "Nope")


def test_approve_command_with_an_execution_in_other_modes_reads_the_state(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=gated("QUEUED"))
    execution = wait_for(lambda: _executions(bot.engine), what="the execution")[0][
        "pipelineExecutionId"
    ]
    wait_for(lambda: _waiting_ids(bot.engine, [execution]), what="the approval")
    bot.command("approve web 0123abcd-0000-4000-8000-000000000000", name="unknown")
    assert "0123abcd" in text_of(bot.reply("unknown"))
    bot.command(f"approve web {execution}", name="ok")
    wait_for(lambda: _status(bot.engine, execution) == "Succeeded", what="the execution")


# =========================================================================== manual retries


def checked_deploy() -> dict[str, Any]:
    """Deploy fails once app.txt says v2 (the repository starts at v1)."""
    return pipeline(
        "web",
        [
            ("Source", [source_action()]),
            ("Deploy", [commands_action("Deploy", ["grep -q v1 app.txt"])]),
        ],
    )


def _deploy_failed(engine: Any) -> bool:
    state = engine.get_pipeline_state(name="web")
    stage = next(s for s in state["stageStates"] if s["stageName"] == "Deploy")
    return (stage.get("latestExecution") or {}).get("status") == "Failed"


def test_manual_retries_are_told_in_the_thread_with_who_retried(
    harness: Harness, bot: Bot, repos_dir: Path
) -> None:
    h = harness
    commit(repos_dir / "app", {"app.txt": "v2\n"}, "Break the deploy")
    h.engine.create_pipeline(pipeline=checked_deploy())
    h.subscribe("web", "CALL")
    notifier = h.notifier()
    h.pump(
        notifier,
        lambda: bool(h.replies_with("CALL", "Stage failed")) and not h.pending(),
        "the failure reply",
    )
    bot.command("retry web Deploy", name="retry")
    assert "retried" in text_of(bot.reply("retry")).lower()
    h.pump(
        notifier,
        lambda: bool(h.replies_with("CALL", "retried by")) and not h.pending(),
        "the manual retry's thread event",
    )
    told = texts(h.replies_with("CALL", "retried by")[0].params["blocks"])
    assert f"🔁 *Deploy* retried by <@{ADMIN}> (attempt 1)" in told, told
    assert not h.replies_with("CALL", "retried automatically")

    # Retried outside Slack (the console, the CLI): told without a name.
    wait_for(lambda: _deploy_failed(h.engine), what="the retry to fail again")
    execution = h.engine.list_pipeline_executions(pipelineName="web")["pipelineExecutionSummaries"][
        0
    ]["pipelineExecutionId"]
    h.engine.retry_stage_execution(
        pipelineName="web",
        stageName="Deploy",
        pipelineExecutionId=execution,
        retryMode="FAILED_ACTIONS",
    )
    h.pump(
        notifier,
        lambda: bool(h.replies_with("CALL", "(attempt 2)")) and not h.pending(),
        "the second manual retry",
    )
    second = texts(h.replies_with("CALL", "(attempt 2)")[0].params["blocks"])
    assert "🔁 *Deploy* retried (attempt 2)" in second, second
    assert len(h.replies_with("CALL", "retried by")) == 1  # each attempt told once


def test_manual_retry_events_come_once_per_attempt_from_the_snapshots() -> None:
    def snapshot(manual: int, auto: int = 0) -> dict[str, Any]:
        stage: dict[str, Any] = {"name": "Deploy", "status": "InProgress", "actions": []}
        if manual:
            stage["manualRetries"] = manual
        if auto:
            stage["autoRetries"] = auto
        return {"execution": "e", "status": "InProgress", "stages": [stage]}

    events = snapshot_events(before=snapshot(0, 1), after=snapshot(2, 1))
    assert [(e.key, e.trigger, e.attempt) for e in events if e.kind == RETRIED] == [
        ("retried:Deploy:manual:1", MANUAL_RETRY, 1),
        ("retried:Deploy:manual:2", MANUAL_RETRY, 2),
    ]
    assert snapshot_events(before=snapshot(2), after=snapshot(2)) == []

    def reply(event: Event) -> str:
        drawn = event_reply(
            event=event,
            pipeline="web",
            execution_id="e",
            approvers=(),
            custom_data=None,
            external_link=None,
            log_tail=None,
            now=None,  # type: ignore[arg-type]
        )
        return texts(drawn["blocks"])

    manual = Event(key="k", kind=RETRIED, stage="Deploy", attempt=2, trigger=MANUAL_RETRY)
    assert reply(manual) == "🔁 *Deploy* retried (attempt 2)"
    assert reply(replace(manual, by="U123ABC")) == "🔁 *Deploy* retried by <@U123ABC> (attempt 2)"
    automatic = replace(manual, trigger=None, attempt=1)
    assert reply(automatic) == "🔁 *Deploy* failed, retried automatically (attempt 1)"
