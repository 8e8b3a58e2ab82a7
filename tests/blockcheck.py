"""Checks of pipebot's Block Kit output and builders of the boto3 responses it draws.

Every message and view is validated three ways: slack_sdk's models parse it
(``Block.parse_all`` / ``View``) and give back the same dicts; a walker checks
Slack's limits (https://api.slack.com/reference/block-kit/blocks, which the SDK checks
only in part) plus mrkdwn escaping and the text total; and buttons never carry a token.
Inputs are handcrafted boto3 responses checked against botocore's output shapes.

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

from bot.slack import ids
from bot.slack.ids import ButtonRef
from bot.slack.kit import MESSAGE_TEXT_BUDGET, fallback_text
from bot.slack.status import status_blocks
from tests.helpers import approval_action, commands_action, pipeline, source_action
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
    check_limits(blocks, max_blocks=50, budget=MESSAGE_TEXT_BUDGET)
    fallback = fallback_text(blocks=blocks)
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
        budget = MESSAGE_TEXT_BUDGET
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


def release_declaration() -> dict[str, Any]:
    """Source → Build (Compile) → Gate (Approve) → Deploy (Push), for the embedded engine."""
    return pipeline(
        "release",
        [
            ("Source", [source_action()]),
            ("Build", [commands_action("Compile", ["echo 'compiled <&>'"])]),
            ("Gate", [approval_action("Approve")]),
            ("Deploy", [commands_action("Push", ["echo pushed"])]),
        ],
    )


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
        status_blocks(
            state=state,
            executions=list(executions),
            approvals_allowed=approve,
            operate_allowed=operate,
            now=NOW,
        )
    )
