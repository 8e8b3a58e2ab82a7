"""The snapshot of an execution and the thread events between snapshots
(``bot/notify/snapshot.py``), over sequences of ticks as the notifier sees them, and
one scenario on real responses of the embedded engine."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.notify.snapshot import (
    APPROVAL,
    APPROVAL_RESOLVED,
    FAILED,
    FAILURE_RESOLVED,
    FINISHED,
    STOPPED,
    SUPERSEDED,
    WAITING_TO_ENTER,
    execution_snapshot,
    snapshot_events,
)
from bot.slack.notifications import (
    event_reply,
    parent_message,
)
from tests.blockcheck import (
    E1,
    E2,
    EVIL,
    NOW,
    SHA,
    action_state,
    ago,
    release_declaration,
    texts,
)
from tests.helpers import wait_for
from tests.notifycheck import (
    EVIL_ESCAPED,
    approval,
    check_message,
    release_state,
    reply,
    run,
    snap,
    stage_of,
    summary,
)
from tests.shapecheck import assert_output_shape

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
        WAITING_TO_ENTER,
        None,
    ]
    # An action whose latest run predates the execution belongs to an earlier one.
    stale = action_state("Compile", "Succeeded", changed=ago(hours=3))
    early = snap(release_state(compile_action=stale), summary())
    assert stage_of(early, "Build")["actions"] == []
    message = parent_message(snapshot=theirs, now=NOW)
    assert "⏸ *Gate* · Waiting to enter" in texts(message["blocks"])
    assert "⚪ *Deploy* · Pending" in texts(message["blocks"])


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
    assert [e.kind for e in events] == [APPROVAL, APPROVAL_RESOLVED, FINISHED]
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
    assert snapshot_events(before=None, after=ticks[4])[0].key == approval_event.key


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
        (FAILED, "failed:Build:run-1"),
        (FINISHED, f"finished:{ago(minutes=20).isoformat()}"),
        (FAILURE_RESOLVED, "failed:Build:run-1:resolved"),
        (FAILED, "failed:Build:run-2"),
        (FINISHED, f"finished:{ago(minutes=10).isoformat()}"),
        (FAILURE_RESOLVED, "failed:Build:run-2:resolved"),
        (FINISHED, f"finished:{ago(minutes=1).isoformat()}"),
    ]
    failed = events[0]
    assert failed.action == "Compile" and failed.summary == "exit 2 <&>"
    assert events[2].outcome == "🔁 Build was retried"
    text = texts(parent_message(snapshot=ticks[1], now=NOW)["blocks"])
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
        APPROVAL,
        APPROVAL_RESOLVED,
        SUPERSEDED,
    ]
    assert events[1].outcome == "↷ No longer needed: the execution was superseded"
    text = texts(reply(events[2])["blocks"])
    assert "↷ *Superseded* by a newer execution" in text
    parent = texts(parent_message(snapshot=gone, now=NOW)["blocks"])
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
    assert [e.kind for e in events] == [STOPPED]
    assert events[0].reason == reason
    text = texts(reply(events[0])["blocks"])
    assert "⏹ *Stopped:* *release* · execution `11111111` · after 27m 00s" in text
    assert f"“Stopped by Alice in Slack: {EVIL_ESCAPED}”" in text
    parent = texts(parent_message(snapshot=stopped, now=NOW)["blocks"])
    assert f"Stop reason: Stopped by Alice in Slack: {EVIL_ESCAPED}" in parent
    assert "⏹ *Build* · Stopped · ⏹ Compile" in parent


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
        resolved = [e for e in events if e.kind == APPROVAL_RESOLVED]
        assert [e.outcome for e in resolved] == [expected]


# --------------------------------------------------------------------------- the real engine


def test_real_engine_execution_with_an_approval(engine: Any, tmp_path: Path) -> None:
    engine.create_pipeline(pipeline=release_declaration())

    def observe(previous: Mapping[str, Any] | None) -> dict[str, Any]:
        # The summary first: the state read after it is never behind it.
        listed = engine.list_pipeline_executions(pipelineName="release", maxResults=1)
        assert_output_shape("ListPipelineExecutions", listed)
        state = engine.get_pipeline_state(name="release")
        assert_output_shape("GetPipelineState", state)
        return execution_snapshot(
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
    check_message(parent_message(snapshot=waiting, now=now))
    events = snapshot_events(before=None, after=waiting)
    assert [e.kind for e in events] == [APPROVAL]
    check_message(
        event_reply(
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
    later = snapshot_events(before=waiting, after=done)
    assert [e.kind for e in later] == [APPROVAL_RESOLVED, FINISHED]
    assert later[0].outcome is not None and "Approved Gate / Approve" in later[0].outcome
    assert "“ship it”" in later[0].outcome
    parent = check_message(parent_message(snapshot=done, now=now))
    assert [s["status"] for s in done["stages"]] == ["Succeeded"] * 4, done
    assert "✅ *Deploy* · Succeeded" in texts(parent)


def test_a_failure_resolved_by_a_newer_execution_never_says_failed_again() -> None:
    """A newer execution failing in the stage took it over: this execution was never retried
    (it said "Build failed again", found by trying it as a user would)."""

    def failed_build(actions: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "status": "Failed",
            "stages": [
                {"name": "Source", "status": "Succeeded", "actions": []},
                {"name": "Build", "status": "Failed", "actions": actions},
            ],
        }

    def compile_failed(run_id: str) -> dict[str, Any]:
        return {"name": "Compile", "status": "Failed", "id": run_id, "summary": "exit 2"}

    before = failed_build([compile_failed("run-1")])
    retried_and_failed = snapshot_events(
        before=before, after=failed_build([compile_failed("run-2")])
    )
    assert [e.outcome for e in retried_and_failed if e.kind == FAILURE_RESOLVED] == [
        "❌ Build failed again"
    ]
    taken_over = snapshot_events(before=before, after=failed_build([]))
    assert [e.outcome for e in taken_over if e.kind == FAILURE_RESOLVED] == [
        "↷ Build can no longer be retried: a newer execution ran it"
    ]
