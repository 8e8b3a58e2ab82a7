"""What a message shows once someone acted on it: the clicked message again with its stale
buttons dropped and an outcome line appended.

The handlers write the outcome line of most clicks themselves; an approval's lines are
here (``approval_answer_line`` for the channel, ``approval_taken_line`` for a decision that
came second), and ``decision_outcome`` is the line of an approval decided in Slack, which
both the click's own answer and the notifier (``bot.notify.snapshot``, when it sees the
approval resolved) draw: one function, so the thread shows the same words whichever of the
two draws last.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from bot.ops.approvals import ApprovalOutcome
from bot.slack.ids import (
    APPROVE,
    DELETE_CANCEL,
    DELETE_CONFIRM,
    OVERRIDE,
    REJECT,
    RETRY_ALL,
    RETRY_FAILED,
    ROLLBACK,
    ROLLBACK_CANCEL,
    ROLLBACK_CONFIRM,
    STOP,
)
from bot.slack.kit import (
    MESSAGE_BLOCKS_MAX,
    Block,
    clip_mrkdwn,
    code,
    context,
    esc,
    escape,
    one_line,
)
from bot.slack.text import flat_name, mention, short_id, slack_date

OUTCOME_MAX: Final = 1000
"""Longest outcome line ``outcome_blocks`` appends; messages with buttons leave room for it."""

STALE_AFTER_CLICK: Final = frozenset(
    {
        APPROVE,
        REJECT,
        RETRY_FAILED,
        RETRY_ALL,
        STOP,
        DELETE_CONFIRM,
        DELETE_CANCEL,
        ROLLBACK,
        ROLLBACK_CONFIRM,
        ROLLBACK_CANCEL,
        OVERRIDE,
    }
)
"""Buttons that act on the state a message showed: dropped by ``outcome_blocks``."""


def outcome_blocks(
    *,
    original: Sequence[Mapping[str, Any]],
    outcome: str,
    drop: Collection[str] = STALE_AFTER_CLICK,
) -> list[Block]:
    """The clicked message again, stale buttons dropped and the outcome appended.

    Buttons that act on a state snapshot (``STALE_AFTER_CLICK``: Approve, Reject,
    Retry, Stop, Delete) no longer apply once someone acted; Start, Refresh and View
    log still do. Pass ``drop=()`` when ``original`` was rendered afresh after the
    action, so its buttons match the current state. An actions block left without
    buttons is removed. ``outcome`` is mrkdwn, cut to ``OUTCOME_MAX`` characters:
    renderers keep that much of the text budget free.
    """
    blocks: list[Block] = []
    for block in original:
        if block.get("type") != "actions":
            blocks.append(dict(block))
            continue
        kept = [
            element
            for element in block.get("elements") or []
            if element.get("action_id") not in drop
        ]
        if kept:
            blocks.append({**block, "elements": kept})
    note = context(clip_mrkdwn(outcome, OUTCOME_MAX))
    return [*blocks[: MESSAGE_BLOCKS_MAX - 1], note]


def decision_outcome(
    *, stage: str, action: str, approved: bool, user_id: str, comment: str | None
) -> str:
    """The outcome line of an approval decided in Slack, as its thread reply shows it:
    the same whether the click's own answer or the notifier draws it last."""
    where = f"{flat_name(stage)} / {flat_name(action)}"
    said = f": “{esc(one_line(comment), 400)}”" if comment else ""
    if approved:
        return f"✅ Approved {where} by {mention(user_id)}{said}"
    return f"❌ Rejected {where} by {mention(user_id)}{said}"


def approval_answer_line(
    *, approved: bool, user_id: str, pipeline: str, stage: str, action: str, comment: str | None
) -> str:
    """The channel's line for an approval answered from a command, a click or a form; the
    names and the comment are escaped (the comment is whatever the user typed)."""
    icon = "✅" if approved else "❌"
    verdict = "approved" if approved else "rejected"
    note = f": {escape(comment)}" if comment else ""
    where = f"*{escape(stage)}/{escape(action)}* of *{escape(pipeline)}*"
    return f"{icon} {mention(user_id)} {verdict} {where}{note}"


def started_line(*, user_id: str, pipeline: str, execution_id: str) -> str:
    """The channel's line for an execution started from Slack: the same for the ``start``
    command and the Start button, so the channel hears of both alike, naming who."""
    return f"{mention(user_id)} started *{escape(pipeline)}*: execution `{execution_id}`."


def stopped_line(*, user_id: str, pipeline: str, execution_id: str, abandon: bool) -> str:
    """The channel's line for an execution stopped from Slack: the same for the ``stop``
    command and the Stop form."""
    how = "stopped and abandoned" if abandon else "is stopping (running actions finish first)"
    return f"⏹ {mention(user_id)}: execution `{execution_id}` of *{escape(pipeline)}* {how}."


def retried_line(
    *, user_id: str, pipeline: str, stage: str, execution_id: str, all_actions: bool
) -> str:
    """The channel's line for a stage retried from Slack: the same for the ``retry`` command
    and the Retry buttons."""
    what = "all actions" if all_actions else "the failed actions"
    return (
        f"{mention(user_id)} retried {what} of stage *{escape(stage)}* in *{escape(pipeline)}* "
        f"(execution `{execution_id}`)."
    )


def rolled_back_line(
    *, user_id: str, pipeline: str, stage: str, target: str, execution_id: str
) -> str:
    """The channel's line for a stage rolled back from Slack: the same for the Roll back
    button and the ``rollback`` command's Confirm."""
    return (
        f"↩ {mention(user_id)} rolled back *{escape(stage)}* of *{escape(pipeline)}* to "
        f"`{escape(target[:8])}`: rollback execution `{escape(execution_id)}`."
    )


def overridden_line(
    *, user_id: str, pipeline: str, stage: str, condition_type: str, execution_id: str
) -> str:
    """The channel's line for a stage condition overridden from Slack (command or button)."""
    words = {"BEFORE_ENTRY": "entry condition", "ON_SUCCESS": "success condition"}.get(
        condition_type, "condition"
    )
    return (
        f"🚦 {mention(user_id)} overrode the {words} of *{escape(stage)}* in "
        f"*{escape(pipeline)}* (execution `{escape(execution_id[:8])}`): the stage goes on."
    )


def approval_taken_line(outcome: ApprovalOutcome, *, now: datetime) -> str:
    """The private answer to someone whose decision came second (``outcome.state`` is not
    ``decided``): who answered, and when; ``answering`` means the first answer is still on
    its way to the backend."""
    at = slack_date(outcome.at or now)
    if outcome.state == "answering":
        return f"<@{outcome.user_id}> is answering this approval right now (since {at})."
    return f"Already {outcome.verdict} by <@{outcome.user_id}> at {at}."


def update_outcome_line(*, version: int, in_flight: Sequence[str]) -> str:
    """What an update did to the executions ``in_flight`` (IDs of those in progress when it was
    saved), as AWS's rule says: "CodePipeline gracefully completes all the running actions and
    then fails the stages and pipeline executions where the running actions were completed"
    (https://docs.aws.amazon.com/codepipeline/latest/userguide/pipelines-edit.html). Empty when
    none was in progress."""
    if not in_flight:
        return ""
    shown = ", ".join(code(short_id(e)) for e in in_flight[:5])
    more = f" and {len(in_flight) - 5} more" if len(in_flight) > 5 else ""
    return (
        f"\n⚠️ In progress when it was saved: {shown}{more}. As on AWS, their running actions "
        "finish and then they fail; one waiting for an approval or in front of a stage is "
        f"cancelled now. Start the pipeline to run version {version}."
    )
