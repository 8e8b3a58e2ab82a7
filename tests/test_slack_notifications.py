"""The channel messages (``bot/slack/notifications.py``): the parent message, the thread
replies, reminders and the daily digest."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from bot.notify.snapshot import (
    APPROVAL_RESOLVED,
    FAILED,
    FINISHED,
    Event,
)
from bot.slack import ids
from bot.slack.ids import ButtonRef
from bot.slack.notifications import (
    digest_message,
    event_reply,
    parent_message,
    reminder_reply,
    resolved_reply,
)
from bot.slack.outcomes import decision_outcome
from tests.blockcheck import (
    E1,
    EVIL,
    NOW,
    action_state,
    ago,
    buttons,
    execution_summary,
    pipeline_state,
    refs,
    stage_state,
    texts,
)
from tests.notifycheck import (
    EVIL_ESCAPED,
    approval,
    approval_event,
    check_message,
    release_state,
    reply,
    snap,
    summary,
)


def test_parent_message_content_and_escaping() -> None:
    waiting = approval("InProgress", changed=ago(minutes=10))
    snapshot = snap(release_state(build="Succeeded", gate=waiting), summary())
    message = parent_message(snapshot=snapshot, now=NOW)
    blocks = check_message(message)
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "release · 11111111", "emoji": True},
    }
    text = texts(blocks)
    assert "🔄 *In progress* · started <!date^" in text
    assert "started by <@U0STARTER>" in text
    assert f"`0123456` Ship it {EVIL_ESCAPED}" in text
    assert "Trigger StartPipelineExecution" in text
    assert "✅ *Source* · Succeeded" in text
    assert "⏳ *Gate* · Waiting for approval · Approve since <!date^" in text
    assert message["text"] == "release · 11111111"
    assert buttons(blocks) == []

    running = snap(release_state(), summary())
    text = texts(parent_message(snapshot=running, now=NOW)["blocks"])
    since = int(ago(minutes=28).timestamp())
    assert f"🔄 *Build* · In progress · running Compile since <!date^{since}^{{time_secs}}|" in text

    finished = snap(
        release_state(
            build="Succeeded",
            gate=approval("Succeeded", changed=ago(minutes=25)),
            deploy="Succeeded",
        ),
        summary("Succeeded", updated=ago(minutes=18)),
    )
    text = texts(parent_message(snapshot=finished, now=NOW)["blocks"])
    assert "✅ *Succeeded* in 12m 00s" in text
    # Rendering a finished execution later shows the same duration.
    later = parent_message(snapshot=finished, now=NOW + timedelta(hours=5))
    assert later == parent_message(snapshot=finished, now=NOW)


def test_a_parent_no_longer_updated_never_shows_a_duration_that_goes_stale() -> None:
    """Issue 12: a parent waiting for approval kept "In progress for 11s" an hour on (a
    parent is redrawn only when its execution changes). It says when things started."""
    waiting = snap(
        release_state(build="Succeeded", gate=approval("InProgress", changed=ago(minutes=10))),
        summary(),
    )
    running = snap(release_state(), summary())
    for snapshot in (waiting, running):
        now = parent_message(snapshot=snapshot, now=NOW)
        assert parent_message(snapshot=snapshot, now=NOW + timedelta(hours=1)) == now
        text = texts(now["blocks"])
        assert "* for " not in text and not re.search(r"\b\d+m \d+s\b|\b\d+s\b", text), text
        assert "started <!date^" in text


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
    message = parent_message(snapshot=snapshot, now=NOW)
    blocks = check_message(message)
    assert len(blocks) <= 50
    assert "more stages" in texts(blocks) or texts(blocks).count("· In progress") == 50


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


def test_a_long_custom_data_is_shown_up_to_slacks_limit_and_says_where_the_rest_is() -> None:
    """AWS keeps CustomData of up to 50,000 characters; Slack's section holds 3,000."""
    message = reply(approval_event(), custom_data="<" * 5_000, external_link="https://x.test/r")
    text = texts(message["blocks"])
    assert "&lt;" * 100 in text and "…" in text
    assert "CustomData is 5,000 characters; the rest is in the pipeline's declaration" in text
    assert "`/pipeline edit release`" in text
    whole = reply(approval_event(), custom_data="fits " * 300, external_link=None)
    assert "the rest is" not in texts(whole["blocks"])


def test_failed_reply_with_log_tail() -> None:
    event = Event(
        key="failed:Build:run-1",
        kind=FAILED,
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


FAILURE_LOG = (
    "[Container] Running command echo compiling\n"
    "compiling\n"
    "[Container] Running command ls missing-file\n"
    "ls: cannot access 'missing-file': No such file or directory\n"
    "[Container] Command did not exit successfully ls missing-file exit status 2"
)


def test_a_failure_is_told_once_with_its_log_line_by_line() -> None:
    """Issue 12: one failure's text appeared four times in one thread (the parent's summary
    and its stage line, the stage's reply, the end), flattened into one line with the
    output glued to the commands. The parent says it in one line; the thread shows the log
    once, in a code block, line by line; the end does not repeat it."""
    summary_text = f"Commands exited with status 2.\n{FAILURE_LOG}"
    failed_build = action_state("Compile", "Failed", changed=ago(minutes=2), summary=summary_text)
    execution_summary_ = summary(
        "Failed",
        updated=ago(minutes=1),
        statusSummary=f'Stage "Build" failed: action "Compile": {summary_text}',
    )
    snapshot = snap(release_state(build="Failed", compile_action=failed_build), execution_summary_)
    parent = texts(parent_message(snapshot=snapshot, now=NOW)["blocks"])
    assert parent.count("Commands exited with status 2.") == 1
    assert '_Stage "Build" failed: action "Compile": Commands exited with status 2._' in parent
    assert "❌ *Build* · Failed · ❌ Compile\n" in parent
    assert "[Container]" not in parent

    event = Event(
        key="failed:Build:run-1",
        kind=FAILED,
        stage="Build",
        action="Compile",
        action_execution_id="run-1",
        summary=summary_text,
    )
    with_log = texts(reply(event, log_tail=FAILURE_LOG + "\n")["blocks"])
    without_log = texts(reply(event)["blocks"])  # AWS: no log, the summary is all there is
    for thread in (with_log, without_log):
        assert thread.count("Commands exited with status 2.") == 1
        assert thread.count("Running command ls missing-file") == 1
        assert "```\n[Container] Running command echo compiling\ncompiling\n[Container]" in thread
    assert "*Log tail:*" in with_log and "*Details:*" in without_log

    end = Event(
        key="finished:x",
        kind=FINISHED,
        status="Failed",
        started=snapshot["started"],
        ended=snapshot["ended"],
        reason=execution_summary_["statusSummary"],
    )
    ended = texts(reply(end)["blocks"])
    assert ended.startswith("❌ *Failed:* *release*") and "exited" not in ended
    succeeded = Event(
        key="finished:y", kind=FINISHED, status="Succeeded", reason="Released\nby the bot"
    )
    assert texts(reply(succeeded)["blocks"]).endswith("_Released_")


def test_resolved_reply_replaces_buttons() -> None:
    original = reply(approval_event())["blocks"]
    outcome = decision_outcome(
        stage="Gate", action="Approve", approved=True, user_id="U0APPROVER", comment=None
    )
    resolved = resolved_reply(original_blocks=original, outcome=outcome)
    check_message({"text": "x", "blocks": resolved})
    assert buttons(resolved) == []
    assert "✅ Approved Gate / Approve by <@U0APPROVER>" in texts(resolved)

    failed = reply(Event(key="failed:Build:r", kind=FAILED, stage="Build", action="Compile"))[
        "blocks"
    ]
    retried = resolved_reply(original_blocks=failed, outcome="🔁 Build was retried")
    check_message({"text": "x", "blocks": retried})
    assert [b["action_id"] for b in buttons(retried)] == [ids.VIEW_LOG]
    assert texts(retried).endswith("🔁 Build was retried")


def test_resolved_events_have_no_reply_of_their_own() -> None:
    with pytest.raises(ValueError, match="resolved_reply"):
        event_reply(
            event=Event(key="k", kind=APPROVAL_RESOLVED),
            pipeline="release",
            execution_id=E1,
            approvers=[],
            custom_data=None,
            external_link=None,
            log_tail=None,
            now=NOW,
        )


def test_reminder_reply() -> None:
    first = reminder_reply(
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
    last = reminder_reply(
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
    message = digest_message(
        channel_pipelines=[("release", release), (EVIL, []), ("quiet", [done("Succeeded", 30, 1)])],
        now=NOW,
    )
    check_message(message)
    text = texts(message["blocks"])
    assert "*release* · 6 executions · 75% success (3/4) · median 10m 00s" in text
    assert "❌ 1 failed" in text and "🔄 1 in progress" in text and "↷ 1 superseded" in text
    assert f"*{EVIL_ESCAPED}* · no executions" in text
    assert "*quiet* · no executions" in text

    crowded = digest_message(
        channel_pipelines=[(f"{'p' * 100}{n}", release) for n in range(300)], now=NOW
    )
    check_message(crowded)
    assert "more pipelines" in texts(crowded["blocks"])
    empty = digest_message(channel_pipelines=[], now=NOW)
    check_message(empty)


def test_the_parent_says_who_started_as_status_does_and_a_stop_reason_once() -> None:
    """Issue 12: the channel said ``Trigger StartPipelineExecution (pipebot)`` where `status`
    named the person, and a stop reason appeared twice (in the summary and on its own line)."""
    base = snap(release_state(), summary(), started_by=None)
    by_arn = {
        **base,
        "trigger": "StartPipelineExecution",
        "triggerDetail": "arn:aws:iam::123456789012:user/ci",
    }
    text = texts(parent_message(snapshot=by_arn, now=NOW)["blocks"])
    assert (
        "Trigger StartPipelineExecution · started by AWS caller `arn:aws:iam::123456789012:user/ci`"
        in text
    )
    by_person = {**by_arn, "startedBy": "U0ALICE"}
    text = texts(parent_message(snapshot=by_person, now=NOW)["blocks"])
    assert "Trigger StartPipelineExecution · started by <@U0ALICE>" in text
    assert "arn:aws" not in text
    stopped = {
        **by_person,
        "status": "Stopped",
        "statusSummary": "Execution abandoned: Stopped by alice in Slack: bad build",
        "stopReason": "Stopped by alice in Slack: bad build",
    }
    text = texts(parent_message(snapshot=stopped, now=NOW)["blocks"])
    assert text.count("bad build") == 1 and "Stop reason" not in text
    other = {**stopped, "statusSummary": "Stopped"}
    assert "Stop reason: Stopped by alice in Slack: bad build" in texts(
        parent_message(snapshot=other, now=NOW)["blocks"]
    )
