"""Tests for ``bot/notify_blocks.py``: snapshots, events and the channel messages.

Inputs are handcrafted boto3 responses checked against botocore's output shapes
(the builders come from ``tests/test_blocks.py``) and, in one scenario, real
responses from the embedded engine. Every message is parsed by slack_sdk and
walked for Slack's limits, escaping and tokens.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from bot.slack import blocks as render
from bot.slack import ids
from bot.slack import notifications as notify
from bot.slack.ids import ButtonRef
from bot.slack.notifications import Event
from tests.helpers import approval_action, commands_action, pipeline, source_action, wait_for
from tests.shapecheck import assert_output_shape
from tests.test_blocks import (
    E1,
    E2,
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
    refs,
    stage_state,
    text_size,
    texts,
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
    assert text_size(blocks) <= render.MESSAGE_TEXT_BUDGET
    # The shared walker knows no links: check them here, then hand over their labels.
    plain = copy.deepcopy(blocks)
    for obj in walk(plain):
        if obj.get("type") == "mrkdwn":
            obj["text"] = LINK.sub(lambda m: m[1], obj["text"])  # type: ignore[index]
    check_limits(plain, max_blocks=50, budget=render.MESSAGE_TEXT_BUDGET)
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
    message = notify.event_reply(**params)
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
    snapshot = notify.execution_snapshot(
        pipeline="release",
        state=state,
        summary=execution_summary_,
        started_by=started_by,
        previous=previous,
    )
    assert json.loads(json.dumps(snapshot)) == snapshot
    check_message(notify.parent_message(snapshot=snapshot, now=NOW))
    return snapshot


def stage_of(snapshot: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    return next(s for s in snapshot["stages"] if s["name"] == name)


def run(snapshots: Sequence[Mapping[str, Any]]) -> list[Event]:
    """Events over a sequence of ticks, as the scheduler sees them (keys posted once)."""
    events: list[Event] = []
    before: Mapping[str, Any] | None = None
    for after in snapshots:
        found = notify.snapshot_events(before=before, after=after)
        assert found == notify.snapshot_events(before=before, after=after)  # deterministic
        assert notify.snapshot_events(before=after, after=after) == []
        events += found
        before = after
    keys = [e.key for e in events]
    assert len(keys) == len(set(keys)), keys
    return events


# --------------------------------------------------------------------------- snapshots


def test_snapshot_is_stable_across_ticks_and_changes_with_a_stage() -> None:
    first = snap(release_state(), summary())
    # A later tick: fresh objects, a newer percentComplete and lastUpdateTime; no real change.
    state = release_state()
    state["stageStates"][1]["actionStates"][0]["latestExecution"]["percentComplete"] = 40
    again = snap(state, summary(updated=ago(seconds=5)))
    assert again == first
    assert "elapsed" not in json.dumps(first)

    done = snap(release_state(build="Succeeded"), summary())
    assert done != first
    assert stage_of(done, "Build")["status"] == "Succeeded"
    assert stage_of(first, "Build")["status"] == "InProgress"
    assert stage_of(first, "Build")["actions"] == [
        {"name": "Compile", "status": "InProgress", "since": ago(minutes=28).isoformat()}
    ]
    assert first["revisions"] == [{"action": "Source", "id": SHA, "message": f"Ship it {EVIL}"}]
    assert first["startedBy"] == "U0STARTER"
    assert first["ended"] is None


def test_snapshot_shows_only_this_execution() -> None:
    # E2 waits to enter Gate while E1 (ours, further on) is at Deploy; E2 holds Source/Build.
    state = release_state(
        build="Succeeded",
        source_execution=E2,
        build_execution=E2,
        inbound_gate=[E2],
    )
    ours = snap(state, summary(execution=E1))
    assert [s["status"] for s in ours["stages"]] == [None, None, None, None]
    theirs = snap(state, summary(execution=E2))
    assert [s["status"] for s in theirs["stages"]] == [
        "Succeeded",
        "Succeeded",
        notify.WAITING_TO_ENTER,
        None,
    ]
    # An action whose latest run predates the execution belongs to an earlier one.
    stale = action_state("Compile", "Succeeded", changed=ago(hours=3))
    early = snap(release_state(compile_action=stale), summary())
    assert stage_of(early, "Build")["actions"] == []
    message = notify.parent_message(snapshot=theirs, now=NOW)
    assert "⏸ *Gate* · Waiting to enter" in texts(message["blocks"])
    assert "⚪ *Deploy* · Pending" in texts(message["blocks"])


def test_parent_message_content_and_escaping() -> None:
    waiting = approval("InProgress", changed=ago(minutes=10))
    snapshot = snap(release_state(build="Succeeded", gate=waiting), summary())
    message = notify.parent_message(snapshot=snapshot, now=NOW)
    blocks = check_message(message)
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "release · 11111111", "emoji": True},
    }
    text = texts(blocks)
    assert "🔄 *In progress* for 30m 00s" in text
    assert "started by <@U0STARTER>" in text
    assert f"`0123456` Ship it {EVIL_ESCAPED}" in text
    assert "Trigger StartPipelineExecution" in text
    assert "✅ *Source* · Succeeded" in text
    assert "⏳ *Gate* · Waiting for approval · Approve since <!date^" in text
    assert message["text"] == "release · 11111111"
    assert buttons(blocks) == []

    running = snap(release_state(), summary())
    text = texts(notify.parent_message(snapshot=running, now=NOW)["blocks"])
    assert "🔄 *Build* · In progress · running Compile · 28m 00s" in text

    finished = snap(
        release_state(
            build="Succeeded",
            gate=approval("Succeeded", changed=ago(minutes=25)),
            deploy="Succeeded",
        ),
        summary("Succeeded", updated=ago(minutes=18)),
    )
    text = texts(notify.parent_message(snapshot=finished, now=NOW)["blocks"])
    assert "✅ *Succeeded* in 12m 00s" in text
    # Rendering a finished execution later shows the same duration.
    later = notify.parent_message(snapshot=finished, now=NOW + timedelta(hours=5))
    assert later == notify.parent_message(snapshot=finished, now=NOW)


def test_parent_message_of_a_huge_pipeline_keeps_within_limits() -> None:
    long = "S" * 100 + EVIL
    stages = []
    for index in range(50):
        actions = [
            action_state(f"{long}{index}-{n}", "InProgress", changed=ago(minutes=3))
            for n in range(20)
        ]
        stages.append(stage_state(f"{long}{index}", "InProgress", actions))
    state = pipeline_state("release", stages, check=False)
    snapshot = snap(state, summary())
    message = notify.parent_message(snapshot=snapshot, now=NOW)
    blocks = check_message(message)
    assert len(blocks) <= 50
    assert "more stages" in texts(blocks) or texts(blocks).count("· In progress") == 50


# --------------------------------------------------------------------------- events


def test_approval_waiting_then_approved_then_finished() -> None:
    since = ago(minutes=10)
    ticks = [
        snap(release_state(), summary()),
        snap(release_state(), summary()),
        snap(release_state(build="Succeeded"), summary()),
        snap(
            release_state(build="Succeeded", gate=approval("InProgress", changed=since)), summary()
        ),
        snap(
            release_state(build="Succeeded", gate=approval("InProgress", changed=since)), summary()
        ),
        snap(
            release_state(
                build="Succeeded",
                gate=approval(
                    "Succeeded",
                    changed=ago(minutes=4),
                    summary="Looks <good>",
                    lastUpdatedBy="arn:aws:iam::000000000000:user/carol",
                ),
                deploy="InProgress",
            ),
            summary(),
        ),
        snap(
            release_state(
                build="Succeeded",
                gate=approval("Succeeded", changed=ago(minutes=4)),
                deploy="Succeeded",
            ),
            summary("Succeeded", updated=ago(minutes=1)),
        ),
    ]
    events = run(ticks)
    assert [e.kind for e in events] == [notify.APPROVAL, notify.APPROVAL_RESOLVED, notify.FINISHED]
    approval_event, resolved, finished = events
    assert approval_event.key == f"approval:Gate/Approve:{since.isoformat()}"
    assert resolved.resolves == approval_event.key
    assert resolved.outcome is not None
    assert resolved.outcome.startswith("✅ Approved Gate / Approve by arn:aws:iam::")
    assert "“Looks &lt;good&gt;”" in resolved.outcome
    assert finished.key == f"finished:{ago(minutes=1).isoformat()}"
    text = texts(reply(finished)["blocks"])
    assert "✅ *Succeeded:* *release* · execution `11111111` · took 29m 00s" in text
    # A restart that lost the stored snapshot sees the approval again with the same key.
    assert notify.snapshot_events(before=None, after=ticks[4])[0].key == approval_event.key


def test_failure_retry_success() -> None:
    def compile_failed(run_id: str) -> dict[str, Any]:
        state = action_state("Compile", "Failed", changed=ago(minutes=20), summary="exit 2 <&>")
        state["latestExecution"]["actionExecutionId"] = run_id
        return state

    ticks = [
        snap(release_state(), summary()),
        snap(
            release_state(build="Failed", compile_action=compile_failed("run-1")),
            summary("Failed", updated=ago(minutes=20)),
        ),
        snap(
            release_state(build="Failed", compile_action=compile_failed("run-1")),
            summary("Failed", updated=ago(minutes=20)),
        ),
        snap(release_state(build="InProgress"), summary("InProgress")),
        snap(
            release_state(build="Failed", compile_action=compile_failed("run-2")),
            summary("Failed", updated=ago(minutes=10)),
        ),
        snap(release_state(build="InProgress"), summary("InProgress")),
        snap(
            release_state(
                build="Succeeded",
                gate=approval("Succeeded", changed=ago(minutes=2)),
                deploy="Succeeded",
            ),
            summary("Succeeded", updated=ago(minutes=1)),
        ),
    ]
    events = run(ticks)
    assert [(e.kind, e.key) for e in events] == [
        (notify.FAILED, "failed:Build:run-1"),
        (notify.FINISHED, f"finished:{ago(minutes=20).isoformat()}"),
        (notify.FAILURE_RESOLVED, "failed:Build:run-1:resolved"),
        (notify.FAILED, "failed:Build:run-2"),
        (notify.FINISHED, f"finished:{ago(minutes=10).isoformat()}"),
        (notify.FAILURE_RESOLVED, "failed:Build:run-2:resolved"),
        (notify.FINISHED, f"finished:{ago(minutes=1).isoformat()}"),
    ]
    failed = events[0]
    assert failed.action == "Compile" and failed.summary == "exit 2 <&>"
    assert events[2].outcome == "🔁 Build was retried"
    text = texts(notify.parent_message(snapshot=ticks[1], now=NOW)["blocks"])
    assert "❌ *Build* · Failed · ❌ Compile — exit 2 &lt;&amp;&gt;" in text
    assert "❌ *Failed* in 10m 00s" in text
    assert "⚪ *Deploy* · Not reached" in text


def test_superseded_execution() -> None:
    waiting = approval("InProgress", changed=ago(minutes=10))
    at_gate = snap(release_state(build="Succeeded", gate=waiting), summary())
    # E2 started and holds Source and Build: E1's earlier stages show as passed.
    e2_building = release_state(
        build="InProgress", gate=waiting, source_execution=E2, build_execution=E2
    )
    passed = snap(e2_building, summary(), previous=at_gate)
    assert passed == snap(e2_building, summary())  # same with or without the stored one
    assert [s["status"] for s in passed["stages"]][:3] == ["Succeeded", "Succeeded", "InProgress"]
    # E2 reaches Gate: E1 is superseded and holds no stage any more.
    e2_at_gate = release_state(
        build="Succeeded",
        gate=approval("InProgress", changed=ago(minutes=1)),
        execution=E2,
    )
    gone = snap(e2_at_gate, summary("Superseded", updated=ago(minutes=1)), previous=passed)
    assert [s["status"] for s in gone["stages"]] == [
        "Succeeded",
        "Succeeded",
        "Superseded",
        None,
    ]
    events = run([at_gate, passed, gone])
    assert [e.kind for e in events] == [
        notify.APPROVAL,
        notify.APPROVAL_RESOLVED,
        notify.SUPERSEDED,
    ]
    assert events[1].outcome == "↷ No longer needed: the execution was superseded"
    text = texts(reply(events[2])["blocks"])
    assert "↷ *Superseded* by a newer execution" in text
    parent = texts(notify.parent_message(snapshot=gone, now=NOW)["blocks"])
    assert "↷ *Gate* · Superseded" in parent and "⚪ *Deploy* · Not reached" in parent


def test_stopped_execution() -> None:
    reason = f"Stopped by Alice in Slack: {EVIL}"
    running = snap(release_state(), summary())
    abandoned = action_state("Compile", "Abandoned", changed=ago(minutes=3))
    stopped = snap(
        release_state(build="Stopped", compile_action=abandoned),
        summary("Stopped", updated=ago(minutes=3), stopTrigger={"reason": reason}),
    )
    events = run([running, stopped])
    assert [e.kind for e in events] == [notify.STOPPED]
    assert events[0].reason == reason
    text = texts(reply(events[0])["blocks"])
    assert "⏹ *Stopped:* *release* · execution `11111111` · after 27m 00s" in text
    assert f"“Stopped by Alice in Slack: {EVIL_ESCAPED}”" in text
    parent = texts(notify.parent_message(snapshot=stopped, now=NOW)["blocks"])
    assert f"Stop reason: Stopped by Alice in Slack: {EVIL_ESCAPED}" in parent
    assert "⏹ *Build* · Stopped · ⏹ Compile" in parent


# --------------------------------------------------------------------------- replies


def approval_event() -> Event:
    return Event(
        key="approval:Gate/Approve:x",
        kind=notify.APPROVAL,
        stage="Gate",
        action="Approve",
        since=ago(minutes=10).isoformat(),
    )


def test_a_decision_made_in_slack_names_the_person_not_the_bot() -> None:
    since = ago(minutes=20)
    for status, summary_text, expected in [
        (
            "Succeeded",
            "Approved in Slack by Alice (U0ALICE): ship <it>",
            "✅ Approved Gate / Approve by <@U0ALICE>: “ship &lt;it&gt;”",
        ),
        (
            "Succeeded",
            "Approved in Slack by Alice (U0ALICE)",
            "✅ Approved Gate / Approve by <@U0ALICE>",
        ),
        (
            "Failed",
            "Rejected in Slack by Bob (U0BOB): not today",
            "❌ Rejected Gate / Approve by <@U0BOB>: “not today”",
        ),
    ]:
        events = run(
            [
                snap(
                    release_state(build="Succeeded", gate=approval("InProgress", changed=since)),
                    summary(),
                ),
                snap(
                    release_state(
                        build="Succeeded",
                        gate=approval(
                            status,
                            changed=ago(minutes=4),
                            summary=summary_text,
                            lastUpdatedBy="pipebot",
                        ),
                    ),
                    summary(),
                ),
            ]
        )
        resolved = [e for e in events if e.kind == notify.APPROVAL_RESOLVED]
        assert [e.outcome for e in resolved] == [expected]


def test_approval_reply() -> None:
    message = reply(
        approval_event(),
        custom_data=f"Check {EVIL}\nsecond line",
        external_link="https://example.com/review?a=1&b=2",
    )
    assert message["reply_broadcast"] is True
    blocks = message["blocks"]
    text = texts(blocks)
    assert "⏳ *Approval needed:* *Gate* / *Approve* in *release*" in text
    assert "Approvers: <@U0APPROVER>, <!subteam^S0GROUP>" in text
    assert f"*Details:* Check {EVIL_ESCAPED}\nsecond line" in text
    assert "<https://example.com/review?a=1&amp;b=2|Open the review link>" in text
    assert [b["action_id"] for b in buttons(blocks)] == [ids.APPROVE, ids.REJECT]
    expected = ButtonRef(pipeline="release", execution=E1, stage="Gate", action="Approve")
    assert refs(blocks, ids.APPROVE) == [expected]
    assert refs(blocks, ids.REJECT) == [expected]
    approve = buttons(blocks)[0]
    assert approve["confirm"]["style"] == "primary"
    assert "Approve Gate / Approve of release" in approve["confirm"]["text"]["text"]

    sneaky = reply(approval_event(), external_link="javascript:alert(1)|<!channel>")
    assert "Review link: javascript:alert(1)|&lt;!channel&gt;" in texts(sneaky["blocks"])
    bare = reply(approval_event(), approvers=[], custom_data="", external_link=None)
    assert "Approvers" not in texts(bare["blocks"])
    many = reply(approval_event(), approvers=[f"U{n:08d}" for n in range(300)])
    assert "and 280 more" in texts(many["blocks"])


def test_failed_reply_with_log_tail() -> None:
    event = Event(
        key="failed:Build:run-1",
        kind=notify.FAILED,
        stage="Build",
        action="Compile",
        action_execution_id="run-1",
        summary=f"exit 2 {EVIL}",
    )
    log = "\n".join(f"line {n} <&> ```" for n in range(2000))
    message = reply(event, log_tail=log)
    assert message["reply_broadcast"] is False
    blocks = message["blocks"]
    text = texts(blocks)
    assert f"exit 2 {EVIL_ESCAPED}" in text
    assert "line 1999 &lt;&amp;&gt; \u02cb\u02cb\u02cb\n```" in text
    assert "line 0 " not in text
    assert text.count("```") == 2
    assert [b["action_id"] for b in buttons(blocks)] == [
        ids.RETRY_FAILED,
        ids.RETRY_ALL,
        ids.VIEW_LOG,
    ]
    stage_ref = ButtonRef(pipeline="release", execution=E1, stage="Build")
    assert refs(blocks, ids.RETRY_FAILED) == [stage_ref]
    assert refs(blocks, ids.RETRY_ALL) == [stage_ref]
    assert refs(blocks, ids.VIEW_LOG) == [
        ButtonRef(pipeline="release", execution=E1, stage="Build", action="Compile")
    ]
    assert all("confirm" in b for b in buttons(blocks)[:2])

    one_line = reply(event, log_tail="x" * 10_000)
    assert "x" * 2000 in texts(one_line["blocks"])
    no_log = reply(event)
    assert "```" not in texts(no_log["blocks"])


def test_resolved_reply_replaces_buttons() -> None:
    original = reply(approval_event())["blocks"]
    outcome = render.approval_outcome_text(
        approved=True, user_id="U0APPROVER", at=NOW, stage="Gate", action="Approve"
    )
    resolved = notify.resolved_reply(original_blocks=original, outcome=outcome)
    check_message({"text": "x", "blocks": resolved})
    assert buttons(resolved) == []
    assert "✅ Approved Gate / Approve by <@U0APPROVER>" in texts(resolved)

    failed = reply(
        Event(key="failed:Build:r", kind=notify.FAILED, stage="Build", action="Compile")
    )["blocks"]
    retried = notify.resolved_reply(original_blocks=failed, outcome="🔁 Build was retried")
    check_message({"text": "x", "blocks": retried})
    assert [b["action_id"] for b in buttons(retried)] == [ids.VIEW_LOG]
    assert texts(retried).endswith("🔁 Build was retried")


def test_resolved_events_have_no_reply_of_their_own() -> None:
    with pytest.raises(ValueError, match="resolved_reply"):
        notify.event_reply(
            event=Event(key="k", kind=notify.APPROVAL_RESOLVED),
            pipeline="release",
            execution_id=E1,
            approvers=[],
            custom_data=None,
            external_link=None,
            log_tail=None,
            now=NOW,
        )


def test_reminder_reply() -> None:
    first = notify.reminder_reply(
        pipeline="release",
        execution_id=E1,
        stage="Gate",
        action=EVIL,
        approvers=["U0APPROVER"],
        waited_minutes=75,
        final=False,
        now=NOW,
    )
    check_message(first)
    text = texts(first["blocks"])
    assert f"*Gate* / *{EVIL_ESCAPED}*" in text and "has waited 1h 15m" in text
    assert "<@U0APPROVER>" in text and "times out soon" not in text
    assert first["reply_broadcast"] is False
    last = notify.reminder_reply(
        pipeline="release",
        execution_id=E1,
        stage="Gate",
        action="Approve",
        approvers=[],
        waited_minutes=60 * 24 * 6,
        final=True,
        now=NOW,
    )
    check_message(last)
    assert "times out soon" in texts(last["blocks"])
    assert last["reply_broadcast"] is True


def test_digest_message() -> None:
    def done(status: str, started_hours: float, minutes: float) -> dict[str, Any]:
        start = ago(hours=started_hours)
        return execution_summary(
            f"{int(started_hours * 100):08d}-aaaa-4bbb-8ccc-000000000000",
            status,
            started=start,
            updated=start + timedelta(minutes=minutes),
        )

    release = [
        done("Succeeded", 1, 5),
        done("Succeeded", 2, 10),
        done("Succeeded", 3, 20),
        done("Failed", 4, 2),
        done("Superseded", 5, 1),
        done("InProgress", 0.1, 1),
        done("Failed", 25, 1),  # older than a day
    ]
    message = notify.digest_message(
        channel_pipelines=[("release", release), (EVIL, []), ("quiet", [done("Succeeded", 30, 1)])],
        now=NOW,
    )
    check_message(message)
    text = texts(message["blocks"])
    assert "*release* · 6 executions · 75% success (3/4) · median 10m 00s" in text
    assert "❌ 1 failed" in text and "🔄 1 in progress" in text and "↷ 1 superseded" in text
    assert f"*{EVIL_ESCAPED}* · no executions" in text
    assert "*quiet* · no executions" in text

    crowded = notify.digest_message(
        channel_pipelines=[(f"{'p' * 100}{n}", release) for n in range(300)], now=NOW
    )
    check_message(crowded)
    assert "more pipelines" in texts(crowded["blocks"])
    empty = notify.digest_message(channel_pipelines=[], now=NOW)
    check_message(empty)


# --------------------------------------------------------------------------- the real engine


def test_real_engine_execution_with_an_approval(engine: Any, tmp_path: Path) -> None:
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

    def observe(previous: Mapping[str, Any] | None) -> dict[str, Any]:
        # The summary first: the state read after it is never behind it.
        listed = engine.list_pipeline_executions(pipelineName="release", maxResults=1)
        assert_output_shape("ListPipelineExecutions", listed)
        state = engine.get_pipeline_state(name="release")
        assert_output_shape("GetPipelineState", state)
        return notify.execution_snapshot(
            pipeline="release",
            state=state,
            summary=listed["pipelineExecutionSummaries"][0],
            started_by=None,
            previous=previous,
        )

    def gate_waiting() -> dict[str, Any] | None:
        snapshot = observe(None)
        return snapshot if stage_of(snapshot, "Gate")["status"] == "InProgress" else None

    waiting = wait_for(gate_waiting, timeout=30, what="the approval to wait")
    assert observe(waiting) == waiting  # nothing moved: no update
    now = datetime.now(waiting_tz := ago().tzinfo)
    assert waiting_tz is not None
    check_message(notify.parent_message(snapshot=waiting, now=now))
    events = notify.snapshot_events(before=None, after=waiting)
    assert [e.kind for e in events] == [notify.APPROVAL]
    check_message(
        notify.event_reply(
            event=events[0],
            pipeline="release",
            execution_id=waiting["execution"],
            approvers=["U0APPROVER"],
            custom_data=None,
            external_link=None,
            log_tail=None,
            now=now,
        )
    )

    state = engine.get_pipeline_state(name="release")
    gate = next(s for s in state["stageStates"] if s["stageName"] == "Gate")
    engine.put_approval_result(
        pipelineName="release",
        stageName="Gate",
        actionName="Approve",
        result={"summary": "ship it", "status": "Approved"},
        token=gate["actionStates"][0]["latestExecution"]["token"],
    )

    def succeeded() -> dict[str, Any] | None:
        snapshot = observe(waiting)
        return snapshot if snapshot["status"] == "Succeeded" else None

    done = wait_for(succeeded, timeout=30, what="the execution to succeed")
    later = notify.snapshot_events(before=waiting, after=done)
    assert [e.kind for e in later] == [notify.APPROVAL_RESOLVED, notify.FINISHED]
    assert later[0].outcome is not None and "Approved Gate / Approve" in later[0].outcome
    assert "“ship it”" in later[0].outcome
    parent = check_message(notify.parent_message(snapshot=done, now=now))
    assert [s["status"] for s in done["stages"]] == ["Succeeded"] * 4, done
    assert "✅ *Deploy* · Succeeded" in texts(parent)
