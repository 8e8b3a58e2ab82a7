"""Rendering tests for ``bot/blocks.py``.

Every message and view is validated three ways: slack_sdk's models parse it
(``Block.parse_all`` / ``View``) and give back the same dicts; a walker checks
Slack's limits from ``docs/slack-platform.md`` (which the SDK checks only in
part) plus mrkdwn escaping and the text total; and buttons never carry a token.
Inputs are handcrafted boto3 responses checked against botocore's output shapes,
and, in one scenario, real responses from the embedded engine.

Snapshots of representative messages live in ``tests/snapshots/blocks/``; run with
``UPDATE_SNAPSHOTS=1`` to rewrite them after an intended change.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot.slack import blocks as render
from bot.slack import ids
from bot.slack.ids import ButtonRef
from tests.helpers import approval_action, commands_action, pipeline, source_action, wait_for
from tests.shapecheck import assert_output_shape

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
E1 = "11111111-aaaa-4bbb-8ccc-000000000001"
E2 = "22222222-aaaa-4bbb-8ccc-000000000002"
E3 = "33333333-aaaa-4bbb-8ccc-000000000003"
SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "tok-3f9a1c2e-SECRET-approval-token"
EVIL = "we<b>&amp;<!channel>"
SNAPSHOTS = Path(__file__).parent / "snapshots" / "blocks"

STAGE_STATUSES = [
    "Cancelled",
    "InProgress",
    "Failed",
    "Stopped",
    "Stopping",
    "Succeeded",
    "Skipped",
]
EXECUTION_STATUSES = [
    "Cancelled",
    "InProgress",
    "Stopped",
    "Stopping",
    "Succeeded",
    "Superseded",
    "Failed",
]
ACTION_STATUSES = ["InProgress", "Abandoned", "Succeeded", "Failed"]
EMOJI = {
    "Cancelled": "🚫",
    "InProgress": "🔄",
    "Failed": "❌",
    "Stopped": "⏹",
    "Stopping": "⏹",
    "Succeeded": "✅",
    "Skipped": "⏭",
    "Superseded": "↷",
    "Abandoned": "⏹",
}


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


# --------------------------------------------------------------------------- validation


SLACK_TOKEN = re.compile(
    r"<(!date\^\d+\^[^|>]*\|[^<>]*|@[UW][A-Z0-9]+|!subteam\^S[A-Z0-9]+|#C[A-Z0-9]+)>"
)
BARE_AMPERSAND = re.compile(r"&(?!amp;|lt;|gt;)")


def walk(value: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, Mapping):
        yield value
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def text_size(value: Any) -> int:
    return sum(
        len(obj["text"])
        for obj in walk(value)
        if obj.get("type") in ("plain_text", "mrkdwn") and isinstance(obj.get("text"), str)
    )


def check_text(obj: Mapping[str, Any], limit: int, *, plain: bool = False) -> None:
    assert obj["type"] in (("plain_text",) if plain else ("plain_text", "mrkdwn")), obj
    text = obj["text"]
    assert isinstance(text, str) and text, obj
    assert len(text) <= limit, (len(text), limit, text[:200])
    if obj["type"] == "mrkdwn":
        rest = SLACK_TOKEN.sub("", text)
        assert "<" not in rest and ">" not in rest, f"unescaped markup in {text!r}"
        assert not BARE_AMPERSAND.search(text), f"unescaped & in {text!r}"


def check_confirm(confirm: Mapping[str, Any]) -> None:
    check_text(confirm["title"], 100, plain=True)
    check_text(confirm["text"], 300)
    check_text(confirm["confirm"], 30, plain=True)
    check_text(confirm["deny"], 30, plain=True)
    assert confirm.get("style") in (None, "primary", "danger")


def check_element(element: Mapping[str, Any]) -> None:
    assert len(element.get("action_id", "")) <= 255
    if element["type"] == "button":
        check_text(element["text"], 75, plain=True)
        assert element["action_id"] in ids.BUTTON_ACTIONS
        value = element["value"]
        assert len(value) <= 2000
        ButtonRef.decode(value)  # only identifiers
        assert "token" not in value.lower()
        assert element.get("style") in (None, "primary", "danger")
        if "confirm" in element:
            check_confirm(element["confirm"])
    elif element["type"] == "plain_text_input":
        assert 0 < element["max_length"] <= 3000
        assert len(element.get("initial_value", "")) <= element["max_length"]
        if "placeholder" in element:
            check_text(element["placeholder"], 150, plain=True)
    elif element["type"] == "static_select":
        for option in element["options"]:
            check_text(option["text"], 75, plain=True)
            assert len(option["value"]) <= 150
            if "description" in option:
                check_text(option["description"], 75, plain=True)
    else:
        raise AssertionError(f"unexpected element {element['type']}")


def check_limits(blocks: Sequence[Mapping[str, Any]], *, max_blocks: int, budget: int) -> None:
    assert 0 < len(blocks) <= max_blocks, len(blocks)
    block_ids = [b["block_id"] for b in blocks if "block_id" in b]
    assert len(block_ids) == len(set(block_ids))
    assert all(len(i) <= 255 for i in block_ids)
    for block in blocks:
        kind = block["type"]
        if kind == "section":
            check_text(block["text"], 3000)
            assert len(block.get("fields", [])) <= 10
            for field in block.get("fields", []):
                check_text(field, 2000)
        elif kind == "header":
            check_text(block["text"], 150, plain=True)
        elif kind == "context":
            assert 0 < len(block["elements"]) <= 10
            for element in block["elements"]:
                check_text(element, 3000)
        elif kind == "actions":
            elements = block["elements"]
            assert 0 < len(elements) <= 25
            action_ids = [e["action_id"] for e in elements]
            assert len(action_ids) == len(set(action_ids)), "action_id repeated in a block"
            for element in elements:
                check_element(element)
        elif kind == "input":
            check_text(block["label"], 2000, plain=True)
            if "hint" in block:
                check_text(block["hint"], 2000, plain=True)
            check_element(block["element"])
        else:
            assert kind == "divider", kind
    assert text_size(blocks) <= budget, text_size(blocks)
    assert TOKEN not in json.dumps(blocks)


def check_message(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Parse through slack_sdk, round-trip, and check every limit of a message."""
    parsed = Block.parse_all(blocks)
    assert None not in parsed
    assert [b.to_dict() for b in parsed] == blocks
    check_limits(blocks, max_blocks=50, budget=render.MESSAGE_TEXT_BUDGET)
    fallback = render.fallback_text(blocks=blocks)
    assert 0 < len(fallback) <= 3000
    return blocks


def check_view(view: dict[str, Any]) -> dict[str, Any]:
    model = View(**view)
    model.validate_json()
    assert model.to_dict() == view
    parsed = Block.parse_all(view["blocks"])
    assert None not in parsed
    if view["type"] == "modal":
        check_text(view["title"], 24, plain=True)
        check_text(view["submit"], 24, plain=True)
        check_text(view["close"], 24, plain=True)
        assert len(view.get("private_metadata", "")) <= 3000
        budget = render.MESSAGE_TEXT_BUDGET
    else:
        budget = 60_000
    check_limits(view["blocks"], max_blocks=100, budget=budget)
    assert len(json.dumps(view)) < 250_000
    return view


def texts(blocks: Any) -> str:
    return "\n".join(
        obj["text"]
        for obj in walk(blocks)
        if obj.get("type") in ("plain_text", "mrkdwn") and isinstance(obj.get("text"), str)
    )


def buttons(blocks: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


def action_ids(blocks: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(b["action_id"]) for b in buttons(blocks)]


def refs(blocks: Sequence[Mapping[str, Any]], action_id: str) -> list[ButtonRef]:
    return [ButtonRef.decode(b["value"]) for b in buttons(blocks) if b["action_id"] == action_id]


def snapshot(name: str, data: Any) -> None:
    path = SNAPSHOTS / f"{name}.json"
    rendered = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not path.exists():
        if os.environ.get("CI", "").lower() == "true" and not path.exists():
            pytest.fail(f"snapshot {path} is missing (run with UPDATE_SNAPSHOTS=1)")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered)
    assert rendered == path.read_text(), f"{path} differs (UPDATE_SNAPSHOTS=1 to accept)"


# --------------------------------------------------------------------------- input builders


def action_state(
    name: str,
    status: str | None = None,
    *,
    changed: datetime | None = None,
    summary: str | None = None,
    token: str | None = None,
    revision: str | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = {"actionName": name}
    if status is not None:
        latest: dict[str, Any] = {
            "actionExecutionId": f"act-{name}",
            "status": status,
            "lastStatusChange": changed or ago(minutes=5),
        }
        if summary is not None:
            latest["summary"] = summary
        if token is not None:
            latest["token"] = token
        if status in ("Failed", "Abandoned"):
            latest["errorDetails"] = {"code": "JobFailed", "message": summary or status}
        state["latestExecution"] = latest
    if revision is not None:
        state["currentRevision"] = {
            "revisionId": revision,
            "revisionChangeId": revision,
            "created": ago(minutes=30),
        }
    return state


def stage_state(
    name: str,
    status: str | None,
    actions: list[dict[str, Any]],
    *,
    execution: str = E1,
    inbound: Sequence[str] = (),
    disabled: str | None = None,
) -> dict[str, Any]:
    stage: dict[str, Any] = {
        "stageName": name,
        "inboundTransitionState": {"enabled": True},
        "actionStates": actions,
    }
    if status is not None:
        stage["latestExecution"] = {
            "pipelineExecutionId": execution,
            "status": status,
            "type": "STANDARD",
        }
    if inbound:
        entries = [
            {"pipelineExecutionId": e, "status": "InProgress", "type": "STANDARD"} for e in inbound
        ]
        stage["inboundExecution"] = entries[0]
        stage["inboundExecutions"] = entries
    if disabled is not None:
        stage["inboundTransitionState"] = {
            "enabled": False,
            "lastChangedBy": "arn:aws:iam::000000000000:user/alice",
            "lastChangedAt": ago(hours=3),
            "disabledReason": disabled,
        }
    return stage


def pipeline_state(
    name: str, stages: list[dict[str, Any]], version: int = 3, *, check: bool = True
) -> dict[str, Any]:
    state = {
        "pipelineName": name,
        "pipelineVersion": version,
        "stageStates": stages,
        "created": ago(days=30),
        "updated": ago(days=1),
    }
    if check:  # unchecked only to go past the model's own maxima
        assert_output_shape("GetPipelineState", state)
    return state


def execution_summary(
    execution_id: str,
    status: str,
    *,
    started: datetime | None = None,
    updated: datetime | None = None,
    message: str = "Fix the login redirect\n\nLonger body",
    trigger: str = "StartPipelineExecution",
    detail: str = "arn:aws:iam::000000000000:user/bob",
    check: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    summary = {
        "pipelineExecutionId": execution_id,
        "status": status,
        "startTime": started or ago(minutes=30),
        "lastUpdateTime": updated or ago(minutes=20),
        "sourceRevisions": [
            {"actionName": "Source", "revisionId": SHA, "revisionSummary": message}
        ],
        "trigger": {"triggerType": trigger, "triggerDetail": detail},
        "executionMode": "SUPERSEDED",
        "executionType": "STANDARD",
        **extra,
    }
    if check:
        assert_output_shape("ListPipelineExecutions", {"pipelineExecutionSummaries": [summary]})
    return summary


def pipeline_summary(name: str, version: int = 1) -> dict[str, Any]:
    summary = {
        "name": name,
        "version": version,
        "pipelineType": "V2",
        "executionMode": "SUPERSEDED",
        "created": ago(days=10),
        "updated": ago(days=2),
    }
    assert_output_shape("ListPipelines", {"pipelines": [summary]})
    return summary


def action_detail(
    stage: str,
    action: str,
    status: str,
    *,
    started: datetime,
    updated: datetime,
    summary: str | None = None,
    execution: str = E1,
    check: bool = True,
) -> dict[str, Any]:
    result: dict[str, Any] = {"externalExecutionId": f"ext-{action}"}
    if summary is not None:
        result["externalExecutionSummary"] = summary
    if status in ("Failed", "Abandoned"):
        result["errorDetails"] = {"code": "JobFailed", "message": summary or status}
    detail = {
        "pipelineExecutionId": execution,
        "actionExecutionId": f"{stage}-{action}-run",
        "pipelineVersion": 3,
        "stageName": stage,
        "actionName": action,
        "startTime": started,
        "lastUpdateTime": updated,
        "status": status,
        "input": {
            "actionTypeId": {
                "category": "Compute",
                "owner": "AWS",
                "provider": "Commands",
                "version": "1",
            },
            "configuration": {},
            "resolvedConfiguration": {},
            "inputArtifacts": [{"name": "SourceArtifact"}],
        },
        "output": {"outputArtifacts": [], "executionResult": result, "outputVariables": {}},
    }
    if check:
        assert_output_shape("ListActionExecutions", {"actionExecutionDetails": [detail]})
    return detail


def rich_state(name: str = "web-app") -> dict[str, Any]:
    """Source done, Build failed, an approval waiting with an execution in front of it, a
    disabled transition into Prod."""
    return pipeline_state(
        name,
        [
            stage_state(
                "Source",
                "Succeeded",
                [
                    action_state(
                        "Source",
                        "Succeeded",
                        summary="Fix the login redirect\n\nLonger body",
                        revision=SHA,
                    )
                ],
                execution=E2,
            ),
            stage_state(
                "Build",
                "Failed",
                [
                    action_state("Lint", "Succeeded"),
                    action_state("Unit", "Failed", summary="exit 1: 3 tests failed"),
                ],
                execution=E2,
            ),
            stage_state(
                "Gate",
                "InProgress",
                [action_state("Approve", "InProgress", token=TOKEN, changed=ago(hours=2))],
                inbound=[E3],
            ),
            stage_state("Prod", None, [action_state("Deploy")], disabled="Change freeze"),
        ],
    )


def rich_executions() -> list[dict[str, Any]]:
    return [
        execution_summary(E2, "Failed"),
        execution_summary(E1, "InProgress", started=ago(hours=3), updated=ago(hours=2)),
    ]


def render_status(
    state: dict[str, Any],
    executions: Sequence[dict[str, Any]] = (),
    *,
    approve: bool = True,
    operate: bool = True,
) -> list[dict[str, Any]]:
    return check_message(
        render.status_blocks(
            state=state,
            executions=list(executions),
            approvals_allowed=approve,
            operate_allowed=operate,
            now=NOW,
        )
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
    assert "❌ *Build* · Failed · `22222222`" in text
    assert "❌ Unit · Failed 5m ago — exit 1: 3 tests failed" in text
    assert "✅ Lint · Succeeded 5m ago" in text
    assert "⚪ *Prod* · Not run" in text
    # source revision: short SHA and the commit message's first line
    assert "`0123456` Fix the login redirect" in text
    assert "Longer body" not in text
    # inbound execution, disabled transition, pending approval
    assert "⏸ _Waiting to enter Gate:_ `33333333` (In progress)" in text
    assert "⛔ _Transition into Prod disabled_ by arn:aws:iam::000000000000:user/alice" in text
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
    check_message(render.outcome_blocks(original=blocks, outcome="x" * 5000))


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


# --------------------------------------------------------------------------- list


def test_list_shows_each_pipeline_with_its_latest_execution() -> None:
    rows = [
        (pipeline_summary("never-run"), None),
        *[
            (pipeline_summary(f"p-{status.lower()}", 2), execution_summary(E1, status))
            for status in EXECUTION_STATUSES
        ],
    ]
    blocks = check_message(render.list_blocks(pipelines=rows, now=NOW))
    text = texts(blocks)
    assert blocks[0]["text"]["text"] == "Pipelines (8)"
    assert "⚪ *never-run* v1 · never run" in text
    assert "✅ *p-succeeded* v2 · Succeeded 20m ago · `11111111`" in text
    assert "🔄 *p-inprogress* v2 · In progress · started 30m ago · `11111111`" in text
    assert "↷ *p-superseded* v2 · Superseded 20m ago" in text
    snapshot("list", blocks)


def test_list_without_pipelines_says_how_to_create_one() -> None:
    blocks = check_message(render.list_blocks(pipelines=[], now=NOW))
    assert "No pipelines yet" in texts(blocks)
    assert "`/pipeline create`" in texts(blocks)
    custom = check_message(render.list_blocks(pipelines=[], now=NOW, command="/deploy"))
    assert "`/deploy create`" in texts(custom)


def test_list_of_200_pipelines_stays_within_limits() -> None:
    rows = [
        (pipeline_summary(f"{i:03d}-" + "&" * 60), execution_summary(E1, "Succeeded"))
        for i in range(200)
    ]
    blocks = check_message(render.list_blocks(pipelines=rows, now=NOW))
    text = texts(blocks)
    assert "*000-&amp;" in text
    shown = text.count("· Succeeded")
    assert 0 < shown < 200
    assert f"…and {200 - shown} more pipelines" in text
    short = [(pipeline_summary(f"app-{i:03d}"), None) for i in range(200)]
    blocks = check_message(render.list_blocks(pipelines=short, now=NOW))
    assert texts(blocks).count("never run") == 200  # short lines all fit
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")


# --------------------------------------------------------------------------- history


def test_history_shows_id_status_trigger_revision_times_and_duration() -> None:
    executions = [
        execution_summary(E3, "InProgress", started=ago(minutes=2), updated=ago(minutes=1)),
        execution_summary(
            E2,
            "Stopped",
            started=ago(hours=2),
            updated=ago(hours=1, minutes=45),
            stopTrigger={"reason": "wrong <branch>"},
        ),
        execution_summary(
            E1,
            "Succeeded",
            started=ago(days=1, minutes=4, seconds=12),
            updated=ago(days=1),
            trigger="CreatePipeline",
            detail="",
        ),
    ]
    blocks = check_message(render.history_blocks(pipeline="web-app", executions=executions))
    text = texts(blocks)
    assert blocks[0]["text"]["text"] == "History · web-app"
    assert f"`{E1}`" in text and "✅ *11111111* · Succeeded · trigger CreatePipeline" in text
    assert "`0123456` Fix the login redirect" in text
    assert "took 4m 12s" in text and "ended <!date^" in text
    assert "🔄 *33333333* · In progress" in text and "still running" in text
    assert "stop reason: wrong &lt;branch&gt;" in text
    assert "(arn:aws:iam::000000000000:user/bob)" in text
    snapshot("history", blocks)


def test_history_empty_and_huge() -> None:
    blocks = check_message(render.history_blocks(pipeline="a<b>", executions=[]))
    assert "*a&lt;b&gt;* has no executions yet." in texts(blocks)
    huge = "<&>" * 4000
    executions = [
        execution_summary(
            f"{i:08d}-aaaa-4bbb-8ccc-000000000000",
            EXECUTION_STATUSES[i % 7],
            message=huge,
            statusSummary=huge,
            detail=huge,
            check=False,
        )
        for i in range(100)
    ]
    blocks = check_message(render.history_blocks(pipeline="app", executions=executions))
    assert "older executions not shown" in texts(blocks)


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
        render.execution_blocks(
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
        render.execution_blocks(
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
        render.execution_blocks(
            pipeline="p", execution=execution_detail(), actions=[], log_tail=one_line
        )
    )
    assert "&amp;&amp;" in blocks[-1]["text"]["text"]
    empty = check_message(
        render.execution_blocks(pipeline="p", execution=execution_detail(), actions=[], log_tail="")
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
        render.execution_blocks(pipeline="app", execution=execution, actions=actions, log_tail=huge)
    )
    assert "more action executions not shown" in texts(blocks)
    assert blocks[-1]["text"]["text"].startswith("*Log tail* of S")
    no_log = check_message(
        render.execution_blocks(pipeline="app", execution=execution, actions=actions, log_tail=None)
    )
    assert "Log tail" not in texts(no_log)


# --------------------------------------------------------------------------- help, errors, notices


def test_help_wraps_long_text_and_keeps_code_fences_balanced() -> None:
    lines = ["*Commands*"]
    for i in range(120):
        lines += [f"`/pipeline cmd{i} NAME` does thing {i}", "```", f"/pipeline cmd{i} web", "```"]
    lines.append("y" * 7000)
    blocks = check_message(render.help_blocks(text="\n".join(lines)))
    for block in blocks:
        if block["type"] == "section":
            assert block["text"]["text"].count("```") % 2 == 0
    assert "`/pipeline cmd0 NAME`" in texts(blocks)
    short = check_message(render.help_blocks(text="*help*\n`/pipeline list`"))
    assert short == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*help*\n`/pipeline list`"}}
    ]
    assert check_message(render.help_blocks(text=""))


def test_error_and_notice_blocks() -> None:
    blocks = check_message(
        render.error_blocks(
            message=f"No pipeline named *{render.escape('x<y>')}*.",
            usage="status NAME <stage> & more",
        )
    )
    assert blocks[0]["text"]["text"] == "⚠️ No pipeline named *x&lt;y&gt;*."
    assert "```\nstatus NAME &lt;stage&gt; &amp; more\n```" in blocks[1]["text"]["text"]
    assert len(check_message(render.error_blocks(message="boom"))) == 1
    check_message(render.error_blocks(message=render.escape("<&>" * 3000), usage="u" * 5000))
    assert check_message(render.notice_blocks(message="Started `abc`")) == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "Started `abc`"}}
    ]
    check_message(render.notice_blocks(message="&amp;" * 1000))


# --------------------------------------------------------------------------- after a click


def test_outcome_drops_buttons_that_no_longer_apply() -> None:
    original = render_status(rich_state(), [execution_summary(E1, "InProgress")])
    outcome = render.approval_outcome_text(
        approved=True, user_id="U123ABC", at=NOW, stage="Gate", action="Approve<&>"
    )
    assert outcome == (
        "✅ Approved Gate / Approve&lt;&amp;&gt; by <@U123ABC> at "
        "<!date^1714564800^{date_short_pretty} {time}|2024-05-01 12:00 UTC>"
    )
    after = check_message(render.outcome_blocks(original=original, outcome=outcome))
    assert set(action_ids(original)) == {
        ids.APPROVE,
        ids.REJECT,
        ids.RETRY_FAILED,
        ids.RETRY_ALL,
        ids.VIEW_LOG,
        ids.START,
        ids.STOP,
        ids.REFRESH_STATUS,
    }
    assert action_ids(after) == [ids.VIEW_LOG, ids.START, ids.REFRESH_STATUS]
    assert after[-1] == {"type": "context", "elements": [{"type": "mrkdwn", "text": outcome}]}
    non_actions = [b for b in original if b["type"] != "actions"]
    assert [b for b in after[:-1] if b["type"] != "actions"] == non_actions
    # a second outcome is appended below the first
    again = check_message(
        render.outcome_blocks(
            original=after,
            outcome=render.outcome_text(
                emoji="🔁", what="Retried <Build>", user_id="U999", at=NOW, comment="x & y"
            ),
        )
    )
    assert again[-2] == after[-1]
    assert again[-1]["elements"][0]["text"].startswith("🔁 Retried &lt;Build&gt; by <@U999>")
    assert again[-1]["elements"][0]["text"].endswith(": “x &amp; y”")


def test_outcome_of_a_delete_confirmation_removes_both_buttons() -> None:
    original = check_message(render.delete_confirm_blocks(pipeline="a<b>"))
    assert "Delete pipeline *a&lt;b&gt;*?" in texts(original)
    delete, cancel = buttons(original)
    assert delete["action_id"] == ids.DELETE_CONFIRM and delete["style"] == "danger"
    assert cancel["action_id"] == ids.DELETE_CANCEL and "style" not in cancel
    assert ButtonRef.decode(delete["value"]) == ButtonRef(pipeline="a<b>")
    after = check_message(render.outcome_blocks(original=original, outcome="🗑 Deleted"))
    assert action_ids(after) == []
    assert after[-1]["elements"][0]["text"] == "🗑 Deleted"


def test_outcome_of_blocks_as_slack_returns_them_and_of_a_full_message() -> None:
    original = render_status(rich_state(), rich_executions())
    from_slack = [{**b, "block_id": f"b{i}"} for i, b in enumerate(original)]
    after = check_message(render.outcome_blocks(original=from_slack, outcome="done"))
    assert all("block_id" in b for b in after[:-1])
    full = [{"type": "section", "text": {"type": "mrkdwn", "text": f"{i}"}} for i in range(50)]
    assert len(check_message(render.outcome_blocks(original=full, outcome="done"))) == 50


def test_outcome_keeps_every_button_of_a_fresh_rendering_when_asked() -> None:
    fresh = render_status(rich_state(), [execution_summary(E1, "InProgress")])
    after = check_message(render.outcome_blocks(original=fresh, outcome="done", drop=()))
    assert action_ids(after) == action_ids(fresh)
    assert after[:-1] == fresh


def test_outcome_text_escapes_a_user_id_that_is_not_one() -> None:
    text = render.outcome_text(emoji="⏹", what="Stopped", user_id="<!channel>", at=NOW)
    assert text.startswith("⏹ Stopped by &lt;!channel&gt; at <!date^")


def test_fallback_text() -> None:
    assert render.fallback_text(blocks=render_status(rich_state())) == "web-app · v3"
    assert render.fallback_text(blocks=render.error_blocks(message="nope")) == "⚠️ nope"
    status = render.status_blocks(
        state=pipeline_state(EVIL, []),
        executions=[],
        approvals_allowed=False,
        operate_allowed=False,
        now=NOW,
    )
    assert render.fallback_text(blocks=status) == render.escape(EVIL) + " · v3"
    assert render.fallback_text(blocks=[{"type": "divider"}]) == "pipebot"


# --------------------------------------------------------------------------- modals


def test_declaration_modal_short_and_prefilled() -> None:
    view = check_view(
        render.declaration_modal(
            callback_id=ids.CREATE_VIEW, initial=None, title="Create pipeline", private_metadata=""
        )
    )
    assert view["callback_id"] == ids.CREATE_VIEW
    inputs = [b for b in view["blocks"] if b["type"] == "input"]
    assert len(inputs) == 1
    assert inputs[0]["block_id"] == ids.DECLARATION_BLOCK
    element = inputs[0]["element"]
    assert element["action_id"] == ids.DECLARATION_INPUT
    assert element["multiline"] is True and element["max_length"] == 3000
    assert "initial_value" not in element
    meta = ButtonRef(pipeline="web-app", channel="C1", message_ts="1.2").encode()
    edit = check_view(
        render.declaration_modal(
            callback_id=ids.EDIT_VIEW,
            initial="name: web-app\n",
            title="Edit web-app, a pipeline with a long name",
            private_metadata=meta,
        )
    )
    assert edit["private_metadata"] == meta
    assert len(edit["title"]["text"]) == 24
    assert edit["blocks"][1]["element"]["initial_value"] == "name: web-app\n"
    snapshot("declaration_modal", edit)


def test_declaration_modal_spreads_a_long_declaration_over_boxes() -> None:
    declaration = "".join(f'  - name: "stage-{i}" # <&> {"z" * (i % 90)}\n' for i in range(400))
    declaration += "w" * 4000  # one line longer than a box
    view = check_view(
        render.declaration_modal(
            callback_id=ids.EDIT_VIEW, initial=declaration, title="Edit", private_metadata="{}"
        )
    )
    inputs = [b for b in view["blocks"] if b["type"] == "input"]
    assert len(inputs) > 1
    assert [b["block_id"] for b in inputs] == [
        render.declaration_block_id(i) for i in range(len(inputs))
    ]
    assert inputs[0]["optional"] is False and all(b["optional"] for b in inputs[1:])
    values = {
        b["block_id"]: {
            ids.DECLARATION_INPUT: {
                "type": "plain_text_input",
                "value": b["element"]["initial_value"],
            }
        }
        for b in inputs
    }
    assert render.declaration_from_values(values) == declaration
    # an empty continuation box (value None) is skipped
    values[render.declaration_block_id(len(inputs))] = {ids.DECLARATION_INPUT: {"value": None}}
    assert render.declaration_from_values(values) == declaration
    extra = check_view(
        render.declaration_modal(
            callback_id=ids.CREATE_VIEW,
            initial=None,
            title="Create",
            private_metadata="",
            min_boxes=3,
        )
    )
    assert len([b for b in extra["blocks"] if b["type"] == "input"]) == 3
    too_long = check_view(
        render.declaration_modal(
            callback_id=ids.EDIT_VIEW, initial="x\n" * 40_000, title="Edit", private_metadata=""
        )
    )
    assert "paste the changed declaration" in texts(too_long)
    with pytest.raises(ValueError, match="private_metadata"):
        render.declaration_modal(
            callback_id=ids.EDIT_VIEW, initial=None, title="Edit", private_metadata="m" * 3001
        )


def test_reject_modal_requires_a_comment() -> None:
    ref = ButtonRef(pipeline=EVIL, execution=E1, stage="Gate", action="Ok", channel="C1")
    view = check_view(render.reject_modal(ref=ref))
    assert view["callback_id"] == ids.REJECT_VIEW
    assert ButtonRef.decode(view["private_metadata"]) == ref
    comment = next(b for b in view["blocks"] if b["type"] == "input")
    assert comment["block_id"] == ids.COMMENT_BLOCK and comment["optional"] is False
    assert comment["element"]["action_id"] == ids.COMMENT_INPUT
    assert comment["element"]["multiline"] is True
    assert comment["element"]["max_length"] == render.COMMENT_MAX_LENGTH
    assert "*Gate / Ok* of *we&lt;b&gt;&amp;amp;&lt;!channel&gt;*" in texts(view)
    snapshot("reject_modal", view)


def test_stop_modal_offers_wait_or_abandon_and_an_optional_reason() -> None:
    ref = ButtonRef(pipeline="web-app", execution=E1, channel="C1", message_ts="1.2")
    view = check_view(render.stop_modal(ref=ref))
    assert view["callback_id"] == ids.STOP_VIEW
    assert ButtonRef.decode(view["private_metadata"]) == ref
    mode = next(b for b in view["blocks"] if b.get("block_id") == ids.STOP_MODE_BLOCK)
    assert mode["element"]["type"] == "static_select"
    assert mode["element"]["action_id"] == ids.STOP_MODE_INPUT
    assert [o["value"] for o in mode["element"]["options"]] == [
        render.STOP_MODE_WAIT,
        render.STOP_MODE_ABANDON,
    ]
    assert mode["element"]["initial_option"]["value"] == render.STOP_MODE_WAIT
    reason = next(b for b in view["blocks"] if b.get("block_id") == ids.STOP_REASON_BLOCK)
    assert reason["optional"] is True
    assert reason["element"]["action_id"] == ids.STOP_REASON_INPUT
    assert reason["element"]["max_length"] == 200
    snapshot("stop_modal", view)


def test_modals_with_the_longest_names() -> None:
    name = "<&>" * 34
    ref = ButtonRef(pipeline=name[:100], execution=E1, stage=name[:100], action=name[:100])
    check_view(render.reject_modal(ref=ref))
    check_view(render.stop_modal(ref=ref))


# --------------------------------------------------------------------------- App Home


def test_home_lists_approvals_for_the_viewer_and_pipelines() -> None:
    view = check_view(
        render.home_view(
            pipelines=[
                (pipeline_summary("web-app"), execution_summary(E1, "InProgress")),
                (pipeline_summary("docs"), None),
            ],
            approvals=[("web-app", "Gate", "Approve", E1, ago(hours=1))],
            now=NOW,
            trial_mode=True,
        )
    )
    assert view["type"] == "home"
    text = texts(view)
    assert "Trial mode" in text and "`PIPEBOT_ADMINS`" in text
    assert "⏳ *web-app* · Gate / Approve · execution `11111111` · since <!date^" in text
    assert "🔄 *web-app* v1 · In progress" in text and "⚪ *docs* v1 · never run" in text
    expected = ButtonRef(pipeline="web-app", execution=E1, stage="Gate", action="Approve")
    assert refs(view["blocks"], ids.APPROVE) == refs(view["blocks"], ids.REJECT) == [expected]
    snapshot("home", view)
    quiet = check_view(render.home_view(pipelines=[], approvals=[], now=NOW, trial_mode=False))
    assert "Trial mode" not in texts(quiet)
    assert "Nothing waits for you." in texts(quiet) and "No pipelines yet" in texts(quiet)


def test_home_with_many_approvals_and_pipelines_stays_within_100_blocks() -> None:
    name = ("<&>" * 40)[:100]
    view = check_view(
        render.home_view(
            pipelines=[
                (pipeline_summary(f"{name[:95]}{i:03d}"), execution_summary(E1, "Failed"))
                for i in range(200)
            ],
            approvals=[(name, name, name, E1, None) for _ in range(60)],
            now=NOW,
            trial_mode=True,
        )
    )
    assert len(refs(view["blocks"], ids.APPROVE)) == 20
    assert "…and 40 more" in texts(view)


# --------------------------------------------------------------------------- the real engine


def test_real_engine_responses_render(engine: Any, tmp_path: Path) -> None:
    """A pipeline with an approval waiting, an execution in front of it and a disabled
    transition; another whose build failed with a long log: every renderer on real data."""
    gates = tmp_path / "gates"
    gates.mkdir()
    engine.create_pipeline(
        pipeline=pipeline(
            "release",
            [
                ("Source", [source_action()]),
                ("Build", [commands_action("Compile", ["echo 'compiled <&>'"])]),
                ("Gate", [approval_action("Approve")]),
                ("Deploy", [commands_action("Push", ["echo pushed"])]),
            ],
        )
    )
    noisy = 'for i in $(seq 1 800); do echo "log line $i <&> \\`\\`\\`"; done'
    engine.create_pipeline(
        pipeline=pipeline(
            "broken",
            [
                ("Source", [source_action()]),
                ("Build", [commands_action("Unit", [noisy, "exit 3"])]),
            ],
        )
    )

    def state_of(name: str) -> dict[str, Any]:
        response = engine.get_pipeline_state(name=name)
        assert_output_shape("GetPipelineState", response)
        return dict(response)

    def stage(name: str, stage_name: str) -> dict[str, Any]:
        return next(s for s in state_of(name)["stageStates"] if s["stageName"] == stage_name)

    def token() -> str | None:
        latest = stage("release", "Gate")["actionStates"][0].get("latestExecution") or {}
        return latest.get("token")

    wait_for(token, timeout=30, what="the approval to wait")
    second = engine.start_pipeline_execution(name="release")["pipelineExecutionId"]
    wait_for(
        lambda: stage("release", "Gate").get("inboundExecutions"),
        timeout=30,
        what="an inbound execution at Gate",
    )
    engine.disable_stage_transition(
        pipelineName="release", stageName="Deploy", transitionType="Inbound", reason="Freeze"
    )
    wait_for(
        lambda: stage("broken", "Build").get("latestExecution", {}).get("status") == "Failed",
        timeout=30,
        what="the broken build to fail",
    )

    def executions_of(name: str) -> list[dict[str, Any]]:
        response = engine.list_pipeline_executions(pipelineName=name, maxResults=5)
        assert_output_shape("ListPipelineExecutions", response)
        return list(response["pipelineExecutionSummaries"])

    now = datetime.now(UTC)
    release = render_status(state_of("release"), executions_of("release"))
    text = texts(release)
    assert "⏳ *Approval waiting:* Gate / Approve" in text
    assert f"⏸ _Waiting to enter Gate:_ `{second[:8]}`" in text
    assert "⛔ _Transition into Deploy disabled_" in text and "“Freeze”" in text
    assert re.search(r"✅ Source · Succeeded .* · `[0-9a-f]{7}` Initial commit", text)
    assert len(refs(release, ids.APPROVE)) == 1
    broken = render_status(state_of("broken"), executions_of("broken"))
    assert refs(broken, ids.RETRY_FAILED)[0].stage == "Build"
    assert "exited with status 3" in texts(broken)

    pipelines = engine.list_pipelines()
    assert_output_shape("ListPipelines", pipelines)
    rows: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    for summary in pipelines["pipelines"]:
        latest = executions_of(summary["name"])
        rows.append((summary, latest[0] if latest else None))
    check_message(render.list_blocks(pipelines=rows, now=now))
    check_message(render.history_blocks(pipeline="release", executions=executions_of("release")))

    failed_id = executions_of("broken")[0]["pipelineExecutionId"]
    execution = engine.get_pipeline_execution(pipelineName="broken", pipelineExecutionId=failed_id)
    assert_output_shape("GetPipelineExecution", execution)
    actions = engine.list_action_executions(
        pipelineName="broken", filter={"pipelineExecutionId": failed_id}
    )
    assert_output_shape("ListActionExecutions", actions)
    unit = next(a for a in actions["actionExecutionDetails"] if a["actionName"] == "Unit")
    log = engine.get_action_log(actionExecutionId=unit["actionExecutionId"])
    blocks = check_message(
        render.execution_blocks(
            pipeline="broken",
            execution=execution["pipelineExecution"],
            actions=actions["actionExecutionDetails"],
            log_tail=log,
        )
    )
    assert "log line 800 &lt;&amp;&gt;" in blocks[-1]["text"]["text"]
    assert "(truncated; full log:" in blocks[-1]["text"]["text"]

    gate = stage("release", "Gate")
    approvals = [
        (
            "release",
            "Gate",
            "Approve",
            gate["latestExecution"]["pipelineExecutionId"],
            gate["actionStates"][0]["latestExecution"]["lastStatusChange"],
        )
    ]
    check_view(render.home_view(pipelines=rows, approvals=approvals, now=now, trial_mode=False))


# --------------------------------------------------------------------------- access and audit


def test_access_blocks_mention_users_and_groups() -> None:
    blocks = check_message(
        render.access_blocks(
            pipeline="web<app>",
            operators=["U111", "S222", "<!channel>"],
            approvers=[],
            no_self_approval=True,
            admins=["UADMIN1"],
        )
    )
    text = texts(blocks)
    assert blocks[0]["text"]["text"] == "Access to web<app>"
    assert (
        "*Operators* (start, stop, retry, enable/disable, edit): <@U111>, <!subteam^S222>" in text
    )
    assert "&lt;!channel&gt;" in text
    assert "*Approvers* (approve, reject): nobody listed: the operators approve" in text
    assert "*Self-approval:* refused" in text
    assert "*Admins* (every right, every pipeline): <@UADMIN1>" in text
    trial = check_message(
        render.access_blocks(
            pipeline="p", operators=[], approvers=["U1AB"], no_self_approval=False, admins=[]
        )
    )
    assert "trial mode" in texts(trial) and "*Self-approval:* allowed" in texts(trial)
    many = check_message(
        render.access_blocks(
            pipeline="p",
            operators=[f"U{i:08d}" for i in range(1000)],
            approvers=[f"S{i:08d}" for i in range(1000)],
            no_self_approval=False,
            admins=[f"W{i:08d}" for i in range(1000)],
        )
    )
    assert "more" in texts(many)


class Entry:
    def __init__(self, i: int, **overrides: Any) -> None:
        self.at = ago(minutes=i)
        self.user_id = "U123"
        self.channel_id: str | None = "C999"
        self.kind = "command"
        self.what = "approve"
        self.pipeline: str | None = "web-app"
        self.execution_id: str | None = E1
        self.outcome = "ok"
        self.detail: str | None = None
        self.__dict__.update(overrides)


def test_audit_blocks() -> None:
    entries = [
        Entry(1, detail="approved <Gate> & went on"),
        Entry(2, pipeline=None, execution_id=None, channel_id=None, outcome="refused"),
    ]
    blocks = check_message(render.audit_blocks(entries=entries, pipeline="web-app"))
    text = texts(blocks)
    assert blocks[0]["text"]["text"] == "Audit · web-app"
    assert "<@U123> `approve` *web-app* `11111111` → ok in <#C999> — approved &lt;Gate&gt;" in text
    assert "<@U123> `approve` → refused" in text
    assert "Nothing recorded yet" in texts(check_message(render.audit_blocks(entries=[])))
    many = [Entry(i, detail="<&>" * 1000, pipeline="&" * 100) for i in range(500)]
    assert "more entries not shown" in texts(check_message(render.audit_blocks(entries=many)))
