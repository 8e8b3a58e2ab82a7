"""What a channel shows when a pipeline it follows is deleted: pure functions, no I/O.

A deletion ends every execution the pipeline had (the embedded engine abandons the running
actions; on AWS the executions go with the pipeline), so each parent message still showing
one as unfinished is redrawn as ended, the buttons of its thread replies (Approve, Retry)
give way to a line saying why, and the channel gets one message saying the pipeline was
deleted and that the channel no longer follows it. ``bot.notify.deletion`` queues them.

Everything a user or a declaration controls is escaped (``flat_name``, ``mention``), as in
every notification (https://api.slack.com/reference/surfaces/formatting#escaping).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from bot.notify.snapshot import WAITING_FOR_APPROVAL, WAITING_TO_ENTER
from bot.ops.pipeline_state import is_finished
from bot.slack.kit import fallback_text, section
from bot.slack.notifications import parent_message
from bot.slack.text import duration, flat_name, iso, mention, parse_iso, slack_date

__all__ = [
    "DELETED_EMOJI",
    "deleted_parent",
    "deleted_snapshot",
    "deletion_notice",
    "deletion_outcome",
    "is_open",
]

DELETED_EMOJI: Final = "🗑"
ENDED_STATUS: Final = "Cancelled"
"""The status a deleted pipeline's unfinished execution is drawn with: CodePipeline's word
for an execution that ended without running to its end (it never was Failed or Stopped)."""
ENDED_ACTION_STATUS: Final = "Abandoned"
"""What became of the stages and actions that were running: the engine abandons them (their
processes are killed) when their pipeline is deleted."""
_OPEN_STAGES: Final = frozenset({"InProgress", "Stopping"})
_OPEN_ACTIONS: Final = frozenset({"InProgress", WAITING_FOR_APPROVAL})


def is_open(snapshot: Mapping[str, Any]) -> bool:
    """Whether a stored parent snapshot shows an execution that has not finished."""
    return not is_finished(snapshot.get("status"))


def _by(deleted_by: str | None) -> str:
    return f"by {mention(deleted_by)}" if deleted_by else "outside pipebot"


def deleted_snapshot(snapshot: Mapping[str, Any], *, now: datetime) -> dict[str, Any]:
    """The snapshot of an unfinished execution as its pipeline's deletion left it: ended at
    ``now``; running stages and actions abandoned; a stage it waited to enter not reached."""
    stages = []
    for stage in snapshot.get("stages") or []:
        status = stage.get("status")
        if status == WAITING_TO_ENTER:
            status = None
        elif status in _OPEN_STAGES:
            status = ENDED_ACTION_STATUS
        actions = [
            {**action, "status": ENDED_ACTION_STATUS}
            if action.get("status") in _OPEN_ACTIONS
            else dict(action)
            for action in stage.get("actions") or []
        ]
        stages.append({**stage, "status": status, "actions": actions})
    return {**snapshot, "status": ENDED_STATUS, "ended": iso(now), "stages": stages}


def deleted_parent(
    *, snapshot: Mapping[str, Any], deleted_by: str | None, now: datetime
) -> dict[str, Any]:
    """The parent message of an execution its pipeline's deletion ended: the parent as
    ``parent_message`` draws it (``deleted_snapshot``), its first line saying who ended it
    and how: ``🗑 Ended: the pipeline was deleted by @alice after 2m 10s``."""
    ended = deleted_snapshot(snapshot, now=now)
    message = parent_message(snapshot=ended, now=now)
    blocks = [dict(block) for block in message["blocks"]]
    head = f"{DELETED_EMOJI} *Ended: the pipeline was deleted* {_by(deleted_by)}"
    started = parse_iso(ended.get("started"))
    if started is not None:
        head += f" after {duration((now - started).total_seconds())}"
        head += f" · started {slack_date(started)}"
    # parent_message draws [header, section(status line + facts), stages..., footer].
    body = str(blocks[1]["text"]["text"]).split("\n")
    blocks[1] = section("\n".join([head, *body[1:]]))
    return {"text": fallback_text(blocks=blocks), "blocks": blocks}


def deletion_outcome(*, deleted_by: str | None) -> str:
    """What replaces the buttons of a thread reply (an approval to give, a failure to
    retry) once its pipeline is deleted."""
    return f"{DELETED_EMOJI} No longer possible: the pipeline was deleted {_by(deleted_by)}."


def deletion_notice(*, pipeline: str, deleted_by: str | None, ended: int) -> dict[str, Any]:
    """The message posted to each channel that followed the pipeline. ``ended`` counts the
    unfinished executions whose parent messages here now say they ended."""
    if deleted_by:
        text = f"{DELETED_EMOJI} Pipeline *{flat_name(pipeline)}* was deleted {_by(deleted_by)}."
    else:
        text = (
            f"{DELETED_EMOJI} Pipeline *{flat_name(pipeline)}* no longer exists: it was deleted "
            "outside pipebot (it was not found on two reads in a row)."
        )
    text += " This channel no longer follows it."
    if ended:
        what = "execution" if ended == 1 else "executions"
        text += f" Its unfinished {what} ({ended}) are shown as ended."
    if not deleted_by:
        text += " If it comes back, subscribe this channel to it again."
    blocks = [section(text)]
    return {"text": fallback_text(blocks=blocks), "blocks": blocks}
