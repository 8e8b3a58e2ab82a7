"""Checks and inputs of the channel-notification tests: the snapshot model
(``bot/notify/snapshot.py``) and its drawing (``bot/slack/notifications.py``).

Inputs are handcrafted boto3 responses checked against botocore's output shapes (the
builders come from ``tests/blockcheck.py``). Every message is parsed by slack_sdk and
walked for Slack's limits, escaping and tokens.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import Block

from bot.notify.snapshot import (
    APPROVAL,
    Event,
    execution_snapshot,
    snapshot_events,
)
from bot.slack.kit import MESSAGE_TEXT_BUDGET
from bot.slack.notifications import (
    event_reply,
    parent_message,
)
from tests.blockcheck import (
    E1,
    EVIL,
    NOW,
    SHA,
    TOKEN,
    action_state,
    ago,
    buttons,
    check_limits,
    execution_summary,
    pipeline_state,
    stage_state,
    text_size,
    walk,
)

LINK = re.compile(r"<https?://[^<>|\s]+\|([^<>]*)>")
EVIL_ESCAPED = "we&lt;b&gt;&amp;amp;&lt;!channel&gt;"


# --------------------------------------------------------------------------- validation


def check_message(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """slack_sdk parses and round-trips the blocks; every limit, escaping and no token."""
    blocks = list(message["blocks"])
    parsed = Block.parse_all(blocks)
    assert None not in parsed
    assert [b.to_dict() for b in parsed] == blocks
    assert text_size(blocks) <= MESSAGE_TEXT_BUDGET
    # The shared walker knows no links: check them here, then hand over their labels.
    plain = copy.deepcopy(blocks)
    for obj in walk(plain):
        if obj.get("type") == "mrkdwn":
            obj["text"] = LINK.sub(lambda m: m[1], obj["text"])  # type: ignore[index]
    check_limits(plain, max_blocks=50, budget=MESSAGE_TEXT_BUDGET)
    text = message["text"]
    assert isinstance(text, str) and 0 < len(text) <= 3000
    assert TOKEN not in json.dumps(message)
    for button in buttons(blocks):
        assert "token" not in button["value"].lower()
    return blocks


def reply(event: Event, **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "event": event,
        "pipeline": "release",
        "execution_id": E1,
        "approvers": ["U0APPROVER", "S0GROUP"],
        "custom_data": None,
        "external_link": None,
        "log_tail": None,
        "now": NOW,
    }
    params.update(overrides)
    message = event_reply(**params)
    check_message(message)
    return message


# --------------------------------------------------------------------------- input builders


def approval(status: str, *, changed: datetime, **latest: Any) -> dict[str, Any]:
    state = action_state(
        "Approve", status, changed=changed, token=TOKEN if status == "InProgress" else None
    )
    state["latestExecution"].update(latest)
    return state


def release_state(
    *,
    build: str | None = "InProgress",
    gate: dict[str, Any] | None = None,
    deploy: str | None = None,
    execution: str = E1,
    source_execution: str | None = None,
    build_execution: str | None = None,
    compile_action: dict[str, Any] | None = None,
    inbound_gate: Sequence[str] = (),
) -> dict[str, Any]:
    """Source → Build (Compile) → Gate (Approve) → Deploy (Push)."""
    stages = [
        stage_state(
            "Source",
            "Succeeded",
            [
                action_state(
                    "Source",
                    "Succeeded",
                    changed=ago(minutes=29),
                    summary="Fix the login redirect",
                    revision=SHA,
                )
            ],
            execution=source_execution or execution,
        )
    ]
    if build is not None:
        compile_state = compile_action or action_state(
            "Compile", build, changed=ago(minutes=28), summary="Build log ready"
        )
        stages.append(
            stage_state("Build", build, [compile_state], execution=build_execution or execution)
        )
    else:
        stages.append(stage_state("Build", None, [action_state("Compile")]))
    if gate is not None:
        gate_status = {"InProgress": "InProgress", "Succeeded": "Succeeded", "Failed": "Failed"}[
            gate["latestExecution"]["status"]
        ]
        stages.append(stage_state("Gate", gate_status, [gate], execution=execution))
    else:
        stages.append(stage_state("Gate", None, [action_state("Approve")], inbound=inbound_gate))
    if deploy is not None:
        stages.append(
            stage_state("Deploy", deploy, [action_state("Push", deploy, changed=ago(minutes=2))])
        )
    else:
        stages.append(stage_state("Deploy", None, [action_state("Push")]))
    return pipeline_state("release", stages)


def summary(
    status: str = "InProgress",
    execution: str = E1,
    *,
    updated: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return execution_summary(
        execution,
        status,
        started=ago(minutes=30),
        updated=updated or ago(minutes=1),
        message=f"Ship it {EVIL}\n\nbody",
        **extra,
    )


def snap(
    state: Mapping[str, Any],
    execution_summary_: Mapping[str, Any],
    previous: Mapping[str, Any] | None = None,
    started_by: str | None = "U0STARTER",
) -> dict[str, Any]:
    snapshot = execution_snapshot(
        pipeline="release",
        state=state,
        summary=execution_summary_,
        started_by=started_by,
        previous=previous,
    )
    assert json.loads(json.dumps(snapshot)) == snapshot
    check_message(parent_message(snapshot=snapshot, now=NOW))
    return snapshot


def stage_of(snapshot: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    return next(s for s in snapshot["stages"] if s["name"] == name)


def run(snapshots: Sequence[Mapping[str, Any]]) -> list[Event]:
    """Events over a sequence of ticks, as the scheduler sees them (keys posted once)."""
    events: list[Event] = []
    before: Mapping[str, Any] | None = None
    for after in snapshots:
        found = snapshot_events(before=before, after=after)
        assert found == snapshot_events(before=before, after=after)  # deterministic
        assert snapshot_events(before=after, after=after) == []
        events += found
        before = after
    keys = [e.key for e in events]
    assert len(keys) == len(set(keys)), keys
    return events


# --------------------------------------------------------------------------- replies


def approval_event() -> Event:
    return Event(
        key="approval:Gate/Approve:x",
        kind=APPROVAL,
        stage="Gate",
        action="Approve",
        since=ago(minutes=10).isoformat(),
    )
