"""The status message (``bot/slack/status.py``): stages, actions, approvals, retries,
buttons per permission, and the largest pipelines within Slack's limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.slack import ids
from bot.slack.ids import ButtonRef
from bot.slack.outcomes import outcome_blocks
from bot.slack.status import status_blocks
from bot.slack.text import Who
from tests.blockcheck import (
    ACTION_STATUSES,
    E1,
    E2,
    E3,
    EMOJI,
    EVIL,
    EXECUTION_STATUSES,
    NOW,
    SHA,
    STAGE_STATUSES,
    TOKEN,
    action_ids,
    action_state,
    buttons,
    check_confirm,
    check_message,
    execution_summary,
    pipeline_state,
    refs,
    render_status,
    rich_executions,
    rich_state,
    snapshot,
    stage_state,
    texts,
)

# --------------------------------------------------------------------------- status


def test_status_shows_every_part_of_the_pipeline() -> None:
    blocks = render_status(rich_state(), rich_executions())
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "web-app · v3", "emoji": True},
    }
    text = texts(blocks)
    # latest execution and its last change
    assert "*Latest execution* `22222222` · ❌ Failed" in text
    assert "last change <!date^" in text and "(20m ago)" in text
    # stages and actions with status
    assert "✅ *Source* · Succeeded" in text
    assert "❌ *Build* · Failed\n" in text  # the latest execution's: no ID repeated
    assert "❌ Unit · Failed 5m ago — exit 1: 3 tests failed" in text
    assert "✅ Lint · Succeeded 5m ago" in text
    assert "⚪ *Prod* · Not run" in text
    # source revision: short SHA and the commit message's first line
    assert "`0123456` Fix the login redirect" in text
    assert "Longer body" not in text
    # inbound execution, disabled transition, pending approval
    assert "⏸ _Waiting to enter Gate:_ `33333333` (In progress)" in text
    assert (
        "⛔ _Transition into Prod disabled_ by AWS caller `arn:aws:iam::000000000000:user/alice`"
        in text
    )
    assert "“Change freeze”" in text and "(3h 00m ago)" in text
    assert "⏳ Approve · waiting for approval since <!date^" in text
    assert "⏳ *Approval waiting:* Gate / Approve · execution `11111111`" in text
    assert "{date_short_pretty} {time}|2024-05-01 10:00 UTC>" in text
    assert "Updated <!date^1714564800^" in text
    snapshot("status_rich", blocks)


def test_status_approval_buttons_carry_identifiers_and_a_confirm_never_the_token() -> None:
    blocks = render_status(rich_state(), rich_executions())
    assert TOKEN not in json.dumps(blocks)
    approve = [b for b in buttons(blocks) if b["action_id"] == ids.APPROVE]
    reject = [b for b in buttons(blocks) if b["action_id"] == ids.REJECT]
    assert len(approve) == len(reject) == 1
    assert approve[0]["style"] == "primary" and approve[0]["confirm"]["style"] == "primary"
    assert "Approve Gate / Approve of web-app" in approve[0]["confirm"]["text"]["text"]
    assert reject[0]["style"] == "danger" and "confirm" not in reject[0]
    expected = ButtonRef(pipeline="web-app", execution=E1, stage="Gate", action="Approve")
    assert refs(blocks, ids.APPROVE) == refs(blocks, ids.REJECT) == [expected]


def test_status_retry_buttons_for_the_failed_stage() -> None:
    blocks = render_status(rich_state(), rich_executions())
    expected = ButtonRef(pipeline="web-app", execution=E2, stage="Build")
    assert refs(blocks, ids.RETRY_FAILED) == refs(blocks, ids.RETRY_ALL) == [expected]
    assert refs(blocks, ids.VIEW_LOG) == [
        ButtonRef(pipeline="web-app", execution=E2, stage="Build", action="Unit")
    ]
    for button in buttons(blocks):
        if button["action_id"] in (ids.RETRY_FAILED, ids.RETRY_ALL, ids.START):
            check_confirm(button["confirm"])


@pytest.mark.parametrize("status", [*STAGE_STATUSES, None])
def test_status_every_stage_status(status: str | None) -> None:
    state = pipeline_state(
        "app",
        [
            stage_state("Source", "Succeeded", [action_state("Source", "Succeeded")]),
            stage_state("Build", status, [action_state("Compile", "Succeeded")]),
        ],
    )
    blocks = render_status(state, [execution_summary(E1, "Failed")])
    label = {None: "Not run", "InProgress": "In progress"}.get(status, status)
    emoji = EMOJI.get(status or "", "⚪")
    assert f"{emoji} *Build* · {label}" in texts(blocks)
    retry = refs(blocks, ids.RETRY_FAILED)
    if status in ("Failed", "Stopped"):
        assert retry == [ButtonRef(pipeline="app", execution=E1, stage="Build")]
        assert refs(blocks, ids.RETRY_ALL) == retry
    else:
        assert retry == [] and refs(blocks, ids.RETRY_ALL) == []


@pytest.mark.parametrize("status", [*ACTION_STATUSES, None])
def test_status_every_action_status(status: str | None) -> None:
    state = pipeline_state(
        "app",
        [
            stage_state("Source", "Succeeded", [action_state("Source", "Succeeded")]),
            stage_state(
                "Build", "InProgress", [action_state("Compile", status, summary="it broke")]
            ),
        ],
    )
    text = texts(render_status(state))
    label = {None: "Not run", "InProgress": "In progress"}.get(status, status)
    assert f"{EMOJI.get(status or '', '⚪')} Compile · {label}" in text
    assert ("— it broke" in text) == (status in ("Failed", "Abandoned"))


@pytest.mark.parametrize("status", EXECUTION_STATUSES)
@pytest.mark.parametrize("operate", [True, False])
@pytest.mark.parametrize("approve", [True, False])
def test_status_buttons_per_execution_status_and_permission(
    status: str, operate: bool, approve: bool
) -> None:
    blocks = render_status(
        rich_state(), [execution_summary(E2, status)], approve=approve, operate=operate
    )
    present = set(action_ids(blocks))
    assert ids.REFRESH_STATUS in present
    assert ids.VIEW_LOG in present  # reading a log needs no permission
    assert (ids.START in present) == operate
    assert (ids.STOP in present) == (operate and status in ("InProgress", "Stopping"))
    assert (ids.RETRY_FAILED in present) == operate
    assert (ids.RETRY_ALL in present) == operate
    assert (ids.APPROVE in present) == approve
    assert (ids.REJECT in present) == approve
    if ids.STOP in present:
        assert refs(blocks, ids.STOP) == [ButtonRef(pipeline="web-app", execution=E2)]
    assert refs(blocks, ids.START) == ([ButtonRef(pipeline="web-app")] if operate else [])
    assert f"{EMOJI[status]} " in texts(blocks)
    # The waiting approval is listed even for those who may not answer it.
    assert "*Approval waiting:* Gate / Approve" in texts(blocks)


def test_status_without_executions_or_stage_history() -> None:
    state = pipeline_state(
        "fresh",
        [
            stage_state("Source", None, [action_state("Source")]),
            stage_state("Build", None, [action_state("Compile")]),
        ],
        version=1,
    )
    blocks = render_status(state)
    text = texts(blocks)
    assert "none yet. Start one with `/pipeline start fresh`" in text
    assert action_ids(blocks) == [ids.START, ids.REFRESH_STATUS]
    empty = render_status(pipeline_state("bare", []))
    assert "_No stage has run yet._" in texts(empty)


def test_status_revision_from_a_codestar_connection_summary() -> None:
    summary = json.dumps({"ProviderType": "GitHub", "CommitMessage": "Add <dark> mode\nbody"})
    state = pipeline_state(
        "app",
        [
            stage_state(
                "Source",
                "Succeeded",
                [action_state("Source", "Succeeded", summary=summary, revision=SHA)],
            ),
            stage_state("Build", "Succeeded", [action_state("Compile", "Succeeded")]),
        ],
    )
    assert "`0123456` Add &lt;dark&gt; mode" in texts(render_status(state))


def test_status_escapes_user_controlled_text() -> None:
    state = pipeline_state(
        EVIL,
        [
            stage_state(
                "S<&>",
                "Succeeded",
                [action_state("A<&>", "Succeeded", summary="msg <@U123> & <!here>", revision=SHA)],
            ),
            stage_state(
                "B<&>",
                "Failed",
                [action_state("T<&>", "Failed", summary="<script>&")],
                disabled="no <deploys> & no fun",
                inbound=[E2],
            ),
            stage_state(
                "G<&>",
                "InProgress",
                [action_state("Ok<&>", "InProgress", token=TOKEN)],
            ),
        ],
    )
    blocks = render_status(state, [execution_summary(E1, "InProgress", message="<@U1> & co")])
    text = texts(blocks)
    assert "msg &lt;@U123&gt; &amp; &lt;!here&gt;" in text
    assert "&lt;script&gt;&amp;" in text
    assert "no &lt;deploys&gt; &amp; no fun" in text
    assert "*B&lt;&amp;&gt;*" in text
    assert refs(blocks, ids.APPROVE) == [
        ButtonRef(pipeline=EVIL, execution=E1, stage="G<&>", action="Ok<&>")
    ]


def test_status_of_a_huge_pipeline_stays_within_limits() -> None:
    """50 stages of 50 actions (CodePipeline's maxima), 100-character names full of markup,
    approvals and failures everywhere, and 10,000-character summaries, reasons and commit
    messages (beyond the model's own maxima, so those inputs skip the shape check)."""
    long_name = ("<&>" * 40)[:100]
    huge = "x<&>" * 2500
    stages = []
    for s in range(50):
        actions = []
        for a in range(50):
            status = ["Succeeded", "Failed", "InProgress", "Abandoned"][(s + a) % 4]
            actions.append(
                action_state(
                    f"{long_name[:90]}{a:03d}",
                    status,
                    summary=huge if status != "InProgress" else None,
                    token=TOKEN if status == "InProgress" and a % 7 == 0 else None,
                    revision=SHA if s == 0 else None,
                )
            )
        stages.append(
            stage_state(
                f"{long_name[:90]}{s:03d}",
                STAGE_STATUSES[s % len(STAGE_STATUSES)],
                actions,
                inbound=[E2, E3] * 3 if s % 3 == 0 else (),
                disabled=huge if s % 5 == 0 else None,
            )
        )
    state = pipeline_state(long_name, stages, check=False)
    executions = [
        execution_summary(
            E1,
            "InProgress",
            message=huge,
            statusSummary=huge,
            stopTrigger={"reason": huge},
            detail=huge,
            check=False,
        ),
        *[execution_summary(E2, s) for s in EXECUTION_STATUSES],
    ]
    blocks = render_status(state, executions)
    assert "more stage" in texts(blocks) or "action" in texts(blocks)
    assert len(refs(blocks, ids.APPROVE)) <= 5
    assert "more approvals waiting" in texts(blocks)
    # room is left for the outcome line of a click
    check_message(outcome_blocks(original=blocks, outcome="x" * 5000))


def test_status_of_many_quiet_stages_keeps_the_interesting_ones_detailed() -> None:
    stages = [
        stage_state(
            f"Stage{i:02d}",
            "Succeeded",
            [action_state(f"Action{j:02d}-" + "n" * 60, "Succeeded") for j in range(8)],
        )
        for i in range(49)
    ]
    stages.append(
        stage_state("Deploy", "Failed", [action_state("Push", "Failed", summary="denied")])
    )
    blocks = render_status(pipeline_state("long", stages))
    text = texts(blocks)
    assert "❌ Push · Failed 5m ago — denied" in text  # detailed
    assert "✅ *Stage00* · Succeeded · `11111111` · 8 actions" in text  # compact


# --------------------------------------------------------------------------- issue 12: polish


def _render_with(who: Who, state: dict[str, Any], executions: list[dict[str, Any]]) -> str:
    return texts(
        check_message(
            status_blocks(
                state=state,
                executions=executions,
                approvals_allowed=True,
                operate_allowed=True,
                now=NOW,
                who=who,
            )
        )
    )


def test_stage_and_action_lines_do_not_look_alike() -> None:
    text = texts(render_status(rich_state(), rich_executions()))
    for line in text.splitlines():
        if line.lstrip().startswith(("✅ Lint", "❌ Unit", "⏳ Approve", "⚪ Deploy")):
            pytest.fail(f"an action line without its mark: {line!r}")
    assert "↳ ❌ Unit · Failed 5m ago" in text and "❌ *Build* · Failed" in text


def test_a_stage_of_an_earlier_execution_says_so_and_a_waiting_one_says_waiting() -> None:
    text = texts(render_status(rich_state(), rich_executions()))
    # Gate still shows execution 1111… while the latest is 2222…: said, not left to guess.
    assert "⏳ *Gate* · Waiting for approval · in earlier execution `11111111`" in text
    assert "*Source* · Succeeded\n" in text  # the latest execution's: no ID to misread
    assert "*Latest execution* `22222222`" in text


def test_status_names_the_slack_users_pipebot_knows() -> None:
    state = rich_state()
    retried = state["stageStates"][1]
    retried["retryStageMetadata"] = {"manualStageRetryAttempt": 1}
    text = _render_with(
        Who(started={E2: "UALICE"}, disabled={"Prod": "UBOB"}, retried={"Build": "UCAROL"}),
        state,
        rich_executions(),
    )
    assert "Trigger StartPipelineExecution · started by <@UALICE>" in text
    assert "⛔ _Transition into Prod disabled_ by <@UBOB>" in text
    assert "arn:aws:iam::000000000000:user/alice" not in text
    assert "❌ *Build* · Failed · retry 1, retried by <@UCAROL>" in text
    # Without a record the backend's caller is named, as what it is.
    plain = _render_with(Who(), rich_state(), rich_executions())
    assert "started by AWS caller `arn:aws:iam::000000000000:user/bob`" in plain


def test_the_stop_reason_is_not_repeated_under_a_summary_that_says_it() -> None:
    stopped = execution_summary(
        E2,
        "Stopped",
        statusSummary="Execution abandoned: Stopped by alice in Slack: bad build",
        stopTrigger={"reason": "Stopped by alice in Slack: bad build"},
    )
    text = _render_with(Who(), rich_state(), [stopped])
    assert text.count("bad build") == 1
    only_reason = execution_summary(E2, "Stopped", stopTrigger={"reason": "bad build"})
    assert "Stop reason: bad build" in _render_with(Who(), rich_state(), [only_reason])
