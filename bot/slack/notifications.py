"""Channel notifications: the parent message of an execution and its thread replies.

Pure functions, data in and dicts out, no I/O and no clock (``now`` is passed in). What
they draw comes from ``bot.notify.snapshot``: a stored snapshot of an execution and the
events between two snapshots.

- ``parent_message`` draws the parent from a snapshot.
- ``event_reply`` draws a thread reply; ``resolved_reply`` replaces the buttons
  of an approval or failure reply with its outcome once it was answered anywhere
  (Slack, a command, the AWS console); ``reminder_reply`` nudges approvers;
  ``digest_message`` is the daily digest.

Every message keeps within Slack's Block Kit limits by construction, as the command
replies do: user text is escaped and cut, buttons carry a ``ButtonRef`` and never an
approval token.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from bot.notify.snapshot import (
    APPROVAL,
    FAILED,
    FINISHED,
    MANUAL_RETRY,
    RETRIED,
    ROLLED_BACK,
    STOPPED,
    SUPERSEDED,
    WAITING_FOR_APPROVAL,
    WAITING_TO_ENTER,
    Event,
)
from bot.ops.pipeline_state import RollbackTarget, is_action_failed, is_finished
from bot.slack import buttons
from bot.slack.action_facts import fact_lines
from bot.slack.ids import ButtonRef
from bot.slack.kit import (
    MESSAGE_BLOCKS_MAX,
    MESSAGE_TEXT_BUDGET,
    Block,
    Element,
    actions,
    code,
    context,
    esc,
    escape,
    fallback_text,
    header,
    one_line,
    section,
    text_size,
)
from bot.slack.outcomes import OUTCOME_MAX, outcome_blocks
from bot.slack.text import (
    ENTERING_EMOJI,
    MESSAGE_MAX,
    STATUS_EMOJI,
    STATUS_LABEL,
    SUMMARY_MAX,
    WAITING_EMOJI,
    aware,
    duration,
    flat_name,
    mention,
    pack,
    parse_iso,
    short_id,
    short_revision,
    slack_date,
    status_emoji,
    status_label,
    tail_fit,
    trigger_text,
    trimmed,
)

__all__ = [
    "digest_message",
    "event_reply",
    "parent_message",
    "reminder_reply",
    "resolved_reply",
]

_RUNNING_SHOWN: Final = 5
_CUSTOM_DATA_MAX: Final = 2000  # shown with the request, "…" when longer (AWS keeps 50,000)
_CUSTOM_DATA_SHOWN: Final = 2400  # escaped, in a section of at most 3,000 with the link
_MENTIONS_SHOWN: Final = 20
_LOG_MAX: Final = 2500
_SAFE_URL: Final = re.compile(r"https?://[^\s<>|]+")
_EMOJI: Final = {
    **STATUS_EMOJI,
    WAITING_FOR_APPROVAL: WAITING_EMOJI,
    WAITING_TO_ENTER: ENTERING_EMOJI,
}
_LABEL: Final = {
    **STATUS_LABEL,
    WAITING_FOR_APPROVAL: "Waiting for approval",
    WAITING_TO_ENTER: "Waiting to enter",
}


def _emoji(status: str | None) -> str:
    """``text.status_emoji`` knowing the snapshot's pseudo-statuses."""
    return status_emoji(status, _EMOJI)


def _label(status: str | None) -> str:
    """``text.status_label`` knowing the snapshot's pseudo-statuses."""
    return status_label(status, _LABEL)


def _mentions(subjects: Sequence[str]) -> str:
    shown = [mention(s) for s in subjects[:_MENTIONS_SHOWN]]
    extra = len(subjects) - len(shown)
    return ", ".join(shown) + (f" and {extra} more" if extra > 0 else "")


def _message(blocks: list[Block], **extra: Any) -> dict[str, Any]:
    return {"text": fallback_text(blocks=blocks), "blocks": blocks, **extra}


# --------------------------------------------------------------------------- parent message


def parent_message(*, snapshot: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The parent message of an execution (``text`` fallback and ``blocks``).

    Nothing in it depends on ``now``: a parent is redrawn only when its execution changes,
    so a duration counted to "now" would freeze and lie while, say, an approval waits
    ("In progress for 11s" an hour on). It shows when things started instead (Slack draws
    ``<!date>`` in each reader's time zone), and a duration only once it is final."""
    del now  # kept for a uniform signature; see above
    pipeline = str(snapshot.get("pipeline") or "?")
    execution_id = str(snapshot.get("execution") or "?")
    finished = is_finished(snapshot.get("status"))
    said = _headline(snapshot.get("statusSummary"))
    blocks: list[Block] = [
        header(f"{pipeline} · {short_id(execution_id)}"),
        section(_parent_text(snapshot, finished=finished)),
    ]
    footer = context(f"Execution {code(execution_id)}")
    stages: list[Mapping[str, Any]] = list(snapshot.get("stages") or [])
    max_blocks = MESSAGE_BLOCKS_MAX - len(blocks) - 1
    budget = MESSAGE_TEXT_BUDGET - OUTCOME_MAX - text_size(blocks) - text_size(footer)
    if not stages:
        middle = [section("_No stage has run yet._")]
    else:
        full = [_stage_line(s, finished=finished, said=said, compact=False) for s in stages]
        if sum(len(line) + 1 for line in full) <= budget:
            chosen = full
        else:  # long pipelines: every stage on a short line
            chosen = [_stage_line(s, finished=finished, said=said, compact=True) for s in stages]
        middle = pack(
            chosen,
            max_blocks=max_blocks,
            budget=budget,
            more=lambda n: f"…and {n} more stages.",
        )
    return _message([*blocks, *middle, footer])


def _parent_text(snapshot: Mapping[str, Any], *, finished: bool) -> str:
    """Status (and how long it took, once finished), when it started, trigger and who
    started it, revisions, the first line of its summary."""
    status = snapshot.get("status")
    head = f"{_emoji(status)} *{_label(status)}*"
    took = _took(snapshot) if finished else None
    started = parse_iso(snapshot.get("started"))
    if took is not None:
        head += f" in {took}"
    if started is not None:
        head += f" · started {slack_date(started)}"
    rollback = snapshot.get("rollback")
    if rollback:
        head = f"{rollback_words(rollback)} · {head}"
    lines = [head]
    by = snapshot.get("startedBy")
    trigger = trigger_text(
        {"triggerType": snapshot.get("trigger"), "triggerDetail": snapshot.get("triggerDetail")},
        by=str(by) if by else None,
        capital=True,
    )
    if trigger:  # the words status, history and execution use for the same start
        lines.append(trigger)
    elif by:
        lines.append(f"started by {mention(str(by))}")
    revision = _revision_line(snapshot)
    if revision:
        lines.append(revision)
    summary = _headline(snapshot.get("statusSummary"))
    if summary:  # its first line: a failure's log is in the thread, once
        lines.append("_" + esc(summary, SUMMARY_MAX) + "_")
    reason = one_line(str(snapshot.get("stopReason") or ""))
    said = one_line(str(snapshot.get("statusSummary") or ""))
    if status in ("Stopped", "Stopping") and reason and reason not in said:  # never twice
        lines.append(f"Stop reason: {esc(reason, 220)}")
    return "\n".join(lines)


def rollback_words(rollback: Mapping[str, Any]) -> str:
    """``↩ *Rollback of Deploy to `3f2c9d1e`*``: a rollback execution's mark, from a
    snapshot's ``rollback`` (its stage when known, its target)."""
    text = "↩ *Rollback"
    if rollback.get("stage"):
        text += f" of {flat_name(rollback['stage'])}"
    text += "*"
    if rollback.get("target"):
        text += f" to {code(short_id(rollback['target']))}"
    return text


def _took(snapshot: Mapping[str, Any]) -> str | None:
    """How long a finished execution took; None without both ends."""
    started, ended = parse_iso(snapshot.get("started")), parse_iso(snapshot.get("ended"))
    if started is None or ended is None:
        return None
    return duration((ended - started).total_seconds())


def _headline(text: Any) -> str:
    """The first non-blank line of a summary, spaces folded: an action's failure summary is
    a sentence then its log ("Commands exited with status 2." then the output), and the
    log is drawn once, in the thread, with its line breaks."""
    if not isinstance(text, str):
        return ""
    for line in text.splitlines():
        if line.strip():
            return one_line(line)
    return ""


def _time_of_day(when: datetime) -> str:
    """``<!date^EPOCH^{time_secs}|HH:MM:SS UTC>``: a time of today in the reader's zone."""
    moment = aware(when) or when
    fallback = moment.astimezone(UTC).strftime("%H:%M:%S UTC")
    return f"<!date^{int(moment.timestamp())}^{{time_secs}}|{fallback}>"


def _revision_line(snapshot: Mapping[str, Any]) -> str | None:
    parts = []
    for revision in snapshot.get("revisions") or []:
        text = code(short_revision(str(revision.get("id"))), 24)
        if revision.get("message"):
            text += " " + esc(str(revision["message"]), MESSAGE_MAX)
        parts.append(text)
    if not parts:
        return None
    more = snapshot.get("moreRevisions") or 0
    return ", ".join(parts) + (f" +{more} more" if more else "")


def _stage_line(stage: Mapping[str, Any], *, finished: bool, said: str, compact: bool) -> str:
    """One stage: status, waiting approvals, running actions (since when), failed actions
    with the first line of their summary unless the execution's summary (``said``, shown
    above) already says it."""
    status = stage.get("status")
    stage_actions: list[Mapping[str, Any]] = list(stage.get("actions") or [])
    approvals = [a for a in stage_actions if a.get("status") == WAITING_FOR_APPROVAL]
    running = [a for a in stage_actions if a.get("status") == "InProgress"]
    failed = [a for a in stage_actions if is_action_failed(a.get("status"))]
    shown = WAITING_FOR_APPROVAL if approvals and not running else status
    label = ("Not reached" if finished else "Pending") if status is None else _label(shown)
    line = f"{_emoji(shown)} *{flat_name(stage.get('name'))}* · {label}"
    if compact:
        return line
    if approvals:
        first = approvals[0]
        since = parse_iso(first.get("since"))
        line += f" · {flat_name(first.get('name'))}"
        if since is not None:
            line += f" since {slack_date(since)}"
        if len(approvals) > 1:
            line += f" (+{len(approvals) - 1} more)"
    if running:
        names = ", ".join(flat_name(a.get("name"), 60) for a in running[:_RUNNING_SHOWN])
        extra = len(running) - _RUNNING_SHOWN
        line += f" · running {names}" + (f" +{extra} more" if extra > 0 else "")
        starts = [t for t in (parse_iso(a.get("since")) for a in running) if t is not None]
        if starts:
            line += f" since {_time_of_day(min(starts))}"
    for action in failed[:2]:
        line += f" · {_emoji(action.get('status'))} {flat_name(action.get('name'), 60)}"
        why = _headline(action.get("summary"))
        if why and why not in said:
            line += " — " + esc(why, SUMMARY_MAX)
    return line


# --------------------------------------------------------------------------- replies


def event_reply(
    *,
    event: Event,
    pipeline: str,
    execution_id: str,
    approvers: Sequence[str],
    custom_data: str | None,
    external_link: str | None,
    log_tail: str | None,
    now: datetime,
    rollback_target: RollbackTarget | None = None,
) -> dict[str, Any]:
    """The thread reply for an event: ``text``, ``blocks`` and ``reply_broadcast`` (True
    for an approval, so the channel sees it). ``approvers`` are user or group IDs to
    mention; ``custom_data`` and ``external_link`` come from the approval action's
    configuration; ``log_tail`` is the failed action's log; ``rollback_target`` (a failure)
    the earlier execution that succeeded in the stage, for a Roll back button. ValueError
    for *_RESOLVED events, which edit a reply (``resolved_reply``) instead of posting one."""
    del now  # replies show absolute times only; kept for a uniform signature
    if event.kind == APPROVAL:
        blocks = _approval_blocks(
            event=event,
            pipeline=pipeline,
            execution_id=execution_id,
            approvers=approvers,
            custom_data=custom_data,
            external_link=external_link,
        )
        return _message(blocks, reply_broadcast=True)
    if event.kind == FAILED:
        blocks = _failed_blocks(
            event=event,
            pipeline=pipeline,
            execution_id=execution_id,
            log_tail=log_tail,
            rollback_target=rollback_target,
        )
        return _message(blocks, reply_broadcast=False)
    if event.kind == RETRIED:
        return _message([section(retried_text(event))], reply_broadcast=False)
    if event.kind == ROLLED_BACK:
        return _message([section(rolled_back_text(event))], reply_broadcast=False)
    if event.kind in (FINISHED, SUPERSEDED, STOPPED):
        blocks = _end_blocks(event=event, pipeline=pipeline, execution_id=execution_id)
        return _message(blocks, reply_broadcast=False)
    raise ValueError(f"event {event.kind!r} has no reply of its own: use resolved_reply")


def retried_text(event: Event) -> str:
    """A retry in words: ``🔁 *Deploy* failed, retried automatically (attempt 1)``
    (onFailure RETRY), ``🔁 *Deploy* retried by @bob (attempt 2)`` (RetryStageExecution from
    Slack), ``🔁 *Deploy* retried (attempt 2)`` (from elsewhere: the console, the CLI)."""
    attempt = f"(attempt {event.attempt or 1})"
    if event.trigger == MANUAL_RETRY:
        by = f" by {mention(event.by)}" if event.by else ""
        return f"🔁 *{flat_name(event.stage)}* retried{by} {attempt}"
    return f"🔁 *{flat_name(event.stage)}* failed, retried automatically {attempt}"


def rolled_back_text(event: Event) -> str:
    """A rollback in words: ``↩ *Deploy* rolled back to `3f2c9d1e` by @bob`` (manual, by
    whom when pipebot knows), ``… rolled back automatically to `3f2c9d1e` (the stage
    failed)`` (AutomatedRollback); in the thread of the execution that failed, ``… rolled
    back automatically to `3f2c9d1e` by the rollback execution `5d1e7c2a```."""
    what = f"*{flat_name(event.stage)}*" if event.stage else "A stage"
    text = f"↩ {what} rolled back"
    automatic = event.trigger == "AutomatedRollback"
    if automatic:
        text += " automatically"
    if event.target:
        text += f" to {code(short_id(event.target))}"
    if event.rollback_execution:  # in the thread of the execution rolled back
        text += f" by the rollback execution {code(short_id(event.rollback_execution))}"
    elif automatic:
        text += " (the stage failed)"
    elif event.by:
        text += f" by {mention(event.by)}"
    return text


def _where(event: Event) -> str:
    return f"*{flat_name(event.stage)}* / *{flat_name(event.action)}*"


def _approval_blocks(
    *,
    event: Event,
    pipeline: str,
    execution_id: str,
    approvers: Sequence[str],
    custom_data: str | None,
    external_link: str | None,
) -> list[Block]:
    since = parse_iso(event.since)
    text = f"⏳ *Approval needed:* {_where(event)} in *{flat_name(pipeline)}*"
    text += f"\nExecution {code(short_id(execution_id))}"
    if since is not None:
        text += f" · waiting since {slack_date(since)}"
    if approvers:
        text += f"\nApprovers: {_mentions(approvers)}"
    blocks = [section(text)]
    details = []
    data = trimmed(custom_data, _CUSTOM_DATA_MAX)
    if data:
        details.append("*Details:* " + esc(data, _CUSTOM_DATA_SHOWN))
        whole = len((custom_data or "").strip())
        if whole > len(data) or len(escape(data)) > _CUSTOM_DATA_SHOWN:
            details.append(
                f"_(CustomData is {whole:,} characters; the rest is in the pipeline's "
                f"declaration: `/pipeline edit {flat_name(pipeline)}`)_"
            )
    link = (external_link or "").strip()
    if link and len(link) <= 1000 and _SAFE_URL.fullmatch(link):
        details.append(f"<{escape(link)}|Open the review link>")
    elif link:
        details.append(f"Review link: {esc(link, 300)}")
    if details:
        blocks.append(section("\n".join(details)))
    stage, action = event.stage or "?", event.action or "?"
    ref = ButtonRef(pipeline=pipeline, execution=execution_id, stage=stage, action=action)
    blocks += actions(
        buttons.approve_reject(
            ref=ref, pipeline=pipeline, stage=stage, action=action, label_names=False
        )
    )
    return blocks


def _failed_blocks(
    *,
    event: Event,
    pipeline: str,
    execution_id: str,
    log_tail: str | None,
    rollback_target: RollbackTarget | None = None,
) -> list[Block]:
    stage = event.stage or "?"
    text = f"❌ *Stage failed:* *{flat_name(stage)}* · action *{flat_name(event.action)}*"
    text += f" · execution {code(short_id(execution_id))}"
    first = _headline(event.summary)
    if first:
        text += "\n" + esc(first, SUMMARY_MAX)
    # The failed phase or hook, the test counts and the failed tests' names, when the
    # summary says them (an engine CodeBuild or CodeDeploy action).
    text += "".join("\n" + line for line in fact_lines(event.facts))
    blocks = [section(text)]
    # The failure once: its first line above, then the log with its line breaks. An
    # engine action's summary ends with its log tail, read in full when the backend keeps
    # logs; elsewhere the rest of the summary is all there is.
    if log_tail is not None and log_tail.strip():
        title, raw = "*Log tail:*", log_tail
    else:
        title, raw = "*Details:*", _after_headline(event.summary)
    if raw.strip():
        body, cut = tail_fit(raw.strip("\n"), _LOG_MAX, line_room=_LOG_MAX - 1)
        blocks.append(section(f"{title}\n```\n{'…' + chr(10) if cut else ''}{body}\n```"))
    row: list[Element | None] = buttons.retry(
        pipeline=pipeline,
        stage=stage,
        execution_id=execution_id,
        failed_text="Retry failed",
        all_text="Retry all",
        failed_style="primary",
    )
    if rollback_target is not None:
        row.append(
            buttons.rollback(
                target=rollback_target,
                text=f"Roll back to {short_id(rollback_target.execution_id)}",
            )
        )
    if event.action:
        row.append(
            buttons.view_log(
                pipeline=pipeline,
                stage=stage,
                execution_id=execution_id,
                action=event.action,
                text="View log",
            )
        )
    return [*blocks, *actions(row)]


def _after_headline(text: str | None) -> str:
    """What follows a summary's first line (its log, for an engine action), as it is."""
    lines = (text or "").splitlines()
    for index, line in enumerate(lines):
        if line.strip():
            return "\n".join(lines[index + 1 :])
    return ""


def _end_blocks(*, event: Event, pipeline: str, execution_id: str) -> list[Block]:
    status = event.status
    started, ended = parse_iso(event.started), parse_iso(event.ended)
    took = duration((ended - started).total_seconds()) if started and ended else None
    where = f"*{flat_name(pipeline)}* · execution {code(short_id(execution_id))}"
    if event.kind == SUPERSEDED:
        text = f"{_emoji(status)} *Superseded* by a newer execution: {where}"
        if took:
            text += f" · after {took}"
    elif event.kind == STOPPED:
        text = f"{_emoji(status)} *Stopped:* {where}"
        if took:
            text += f" · after {took}"
        if event.reason:
            text += f"\n“{esc(one_line(event.reason), SUMMARY_MAX)}”"
    else:
        text = f"{_emoji(status)} *{_label(status)}:* {where}"
        if took:
            text += f" · took {took}"
        # A failure was told in this thread by its stage's reply (and on the parent): the
        # end does not repeat it.
        reason = _headline(event.reason) if status != "Failed" else ""
        if reason:
            text += f"\n_{esc(reason, SUMMARY_MAX)}_"
    return [section(text)]


def resolved_reply(*, original_blocks: Sequence[Mapping[str, Any]], outcome: str) -> list[Block]:
    """An approval or failure reply with Approve/Reject/Retry replaced by ``outcome``
    (mrkdwn, e.g. ``Event.outcome`` or ``outcomes.decision_outcome``); View log stays."""
    return outcome_blocks(original=original_blocks, outcome=outcome)


def reminder_reply(
    *,
    pipeline: str,
    execution_id: str,
    stage: str,
    action: str,
    approvers: Sequence[str],
    waited_minutes: int,
    final: bool,
    now: datetime,
) -> dict[str, Any]:
    """A reminder in the approval's thread; the ``final`` one says it times out soon and is
    broadcast to the channel. The buttons stay on the approval reply itself."""
    del now
    waited = duration(max(waited_minutes, 0) * 60)
    text = (
        f"⏰ *Reminder:* *{flat_name(stage)}* / *{flat_name(action)}* in *{flat_name(pipeline)}* "
        f"(execution {code(short_id(execution_id))}) has waited {waited} for approval."
    )
    if final:
        text += "\n⚠️ It times out soon: without an answer the approval fails and so does the run."
    if approvers:
        text += f"\n{_mentions(approvers)}"
    blocks = [section(text), context("Approve or reject with the buttons above in this thread.")]
    return _message(blocks, reply_broadcast=final)


# --------------------------------------------------------------------------- digest


def digest_message(
    *,
    channel_pipelines: Sequence[tuple[str, Sequence[Mapping[str, Any]] | str]],
    now: datetime,
) -> dict[str, Any]:
    """The daily digest of a channel: per pipeline, its executions started in the last 24
    hours (ListPipelineExecutions summaries, any order), their success rate (succeeded
    among finished, superseded left out) and the median duration of successful ones; a
    string instead of summaries says why the pipeline could not be read."""
    since = now - timedelta(hours=24)
    blocks: list[Block] = [header("Daily pipeline digest")]
    footer = context(f"Executions started since {slack_date(since)}")
    if not channel_pipelines:
        middle = [section("_This channel follows no pipeline._")]
    else:
        lines = [_pipeline_digest(name, summaries, since) for name, summaries in channel_pipelines]
        middle = pack(
            lines,
            max_blocks=MESSAGE_BLOCKS_MAX - 2,
            budget=MESSAGE_TEXT_BUDGET - text_size(blocks) - text_size(footer),
            more=lambda n: f"…and {n} more pipelines.",
        )
    return _message([*blocks, *middle, footer])


def _pipeline_digest(
    name: str, summaries: Sequence[Mapping[str, Any]] | str, since: datetime
) -> str:
    head = f"*{flat_name(name)}*"
    if isinstance(summaries, str):
        return f"{head} · :warning: could not be read: {esc(summaries, 200)}"
    recent = [
        s
        for s in summaries
        if (aware(s.get("startTime")) or datetime.min.replace(tzinfo=UTC)) >= since
    ]
    if not recent:
        return f"{head} · no executions"
    counts: dict[str, int] = {}
    for summary in recent:
        status = str(summary.get("status") or "?")
        counts[status] = counts.get(status, 0) + 1
    finished = [s for s in recent if is_finished(s.get("status"))]
    succeeded = counts.get("Succeeded", 0)
    parts = [f"{len(recent)} execution{'s' if len(recent) != 1 else ''}"]
    decided = sum(counts.get(s, 0) for s in ("Succeeded", "Failed", "Stopped", "Cancelled"))
    if decided:
        parts.append(f"{round(100 * succeeded / decided)}% success ({succeeded}/{decided})")
    durations = [
        (end - start).total_seconds()
        for s in finished
        if s.get("status") == "Succeeded"
        for start, end in [(aware(s.get("startTime")), aware(s.get("lastUpdateTime")))]
        if start is not None and end is not None
    ]
    if durations:
        parts.append(f"median {duration(statistics.median(durations))}")
    others = [
        f"{_emoji(status)} {count} {_label(status).lower()}"
        for status, count in sorted(counts.items())
        if status != "Succeeded"
    ]
    line = f"{head} · " + " · ".join(parts)
    return line + (f"\n      {', '.join(others)}" if others else "")
