"""Short replies to the invoking user: help, errors, notices, and the questions asked
before deleting a pipeline and before rolling a stage back."""

from __future__ import annotations

from datetime import datetime

from bot.ops.pipeline_state import RollbackTarget
from bot.slack.ids import (
    DELETE_CANCEL,
    DELETE_CONFIRM,
    ROLLBACK_CANCEL,
    ROLLBACK_CONFIRM,
    ButtonRef,
)
from bot.slack.kit import (
    MESSAGE_BLOCKS_MAX,
    MESSAGE_TEXT_BUDGET,
    SECTION_TEXT_MAX,
    Block,
    actions,
    button,
    clip_mrkdwn,
    code,
    esc,
    escape,
    section,
)
from bot.slack.text import date_and_ago, name, pack, short_id, short_revision


def help_blocks(*, text: str, command: str = "/pipeline") -> list[Block]:
    """Help text (trusted mrkdwn) in sections of at most 3000 characters, cut at line ends.

    A ``` code block that has to continue in the next section is closed and reopened.
    """
    limit = SECTION_TEXT_MAX - 8  # room to close and reopen a fence
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    in_fence = False
    for raw in text.splitlines() or [""]:
        for line in _split_long_line(raw, limit - 8):
            if current and size + 1 + len(line) + 4 > limit:
                chunks.append("\n".join(current) + ("\n```" if in_fence else ""))
                current = ["```"] if in_fence else []
                size = 3 if in_fence else 0
            size += len(line) + (1 if current else 0)
            current.append(line)
            if line.count("```") % 2:
                in_fence = not in_fence
    if current:
        chunks.append("\n".join(current) + ("\n```" if in_fence else ""))
    return pack(
        [c if c.strip() else " " for c in chunks],
        max_blocks=MESSAGE_BLOCKS_MAX,
        budget=MESSAGE_TEXT_BUDGET,
        more=lambda n: f"…help cut short. `{escape(command)} help COMMAND` shows one command.",
    )


def _split_long_line(line: str, limit: int) -> list[str]:
    return [line[i : i + limit] for i in range(0, len(line), limit)] or [""]


def error_blocks(*, message: str, usage: str | None = None) -> list[Block]:
    """An error for the invoking user. ``message`` and ``usage`` (a command's usage line and
    example, ``handlers.grammar.usage_text``) are mrkdwn: escape user input with
    ``kit.escape``. The usage goes in a section of its own, as it is written (its code
    spans are the command to type)."""
    blocks = [section(f"⚠️ {clip_mrkdwn(message, SECTION_TEXT_MAX - 3)}")]
    if usage:
        blocks.append(section(clip_mrkdwn(usage, SECTION_TEXT_MAX)))
    return blocks


def notice_blocks(*, message: str) -> list[Block]:
    """A short mrkdwn notice (``message`` is mrkdwn: escape user input with ``kit.escape``)."""
    return [section(message)]


def delete_confirm_blocks(*, pipeline: str) -> list[Block]:
    """Asks before deleting a pipeline: Delete (danger) and Cancel."""
    ref = ButtonRef(pipeline=pipeline)
    return [
        section(
            f"Delete pipeline *{name(pipeline)}*? Its declaration and execution history "
            "are removed and running actions are stopped. This cannot be undone."
        ),
        *actions(
            [
                button(text="Delete", action_id=DELETE_CONFIRM, ref=ref, style="danger"),
                button(text="Cancel", action_id=DELETE_CANCEL, ref=ref),
            ]
        ),
    ]


def rollback_confirm_blocks(*, target: RollbackTarget, now: datetime) -> list[Block]:
    """Asks before rolling a stage back (the ``rollback`` command): the target execution,
    its source revisions and when it succeeded, then Roll back (danger) and Cancel."""
    ref = ButtonRef(pipeline=target.pipeline, execution=target.execution_id, stage=target.stage)
    revisions = ", ".join(
        f"{esc(action, 60)}@{code(short_revision(revision), 24)}"
        for action, revision in target.revisions[:3]
    )
    lines = [
        f"Roll back *{name(target.stage)}* of *{name(target.pipeline)}* to execution "
        f"{code(target.execution_id, 40)}?",
        f"• It succeeded in {name(target.stage)} {date_and_ago(target.succeeded_at, now)}",
    ]
    if revisions:
        lines.append(f"• Source revision{'s' if len(target.revisions) > 1 else ''}: {revisions}")
    lines.append(
        "A new execution runs the stage again with that execution's revisions, variables and "
        "artifacts."
    )
    return [
        section("\n".join(lines)),
        *actions(
            [
                button(
                    text=f"Roll back to {short_id(target.execution_id)}",
                    action_id=ROLLBACK_CONFIRM,
                    ref=ref,
                    style="danger",
                ),
                button(text="Cancel", action_id=ROLLBACK_CANCEL, ref=ref),
            ]
        ),
    ]
