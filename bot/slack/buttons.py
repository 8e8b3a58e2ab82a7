"""The buttons that act on an execution, shared by the status message, the App Home and the
channel notifications, so each asks the same question before it acts.

Buttons carry a ``ButtonRef`` (pipeline, execution, stage, action) and never an approval
token: handlers read the token from GetPipelineState at click time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from bot.ops.pipeline_state import RollbackTarget
from bot.slack.ids import (
    APPROVE,
    OVERRIDE,
    REJECT,
    RETRY_ALL,
    RETRY_FAILED,
    ROLLBACK,
    VIEW_LOG,
    VIEW_LOG_SELECT,
    ButtonRef,
)
from bot.slack.kit import OPTION_TEXT_MAX, Element, button, clip, confirm_dialog, plain
from bot.slack.text import short_id, short_revision


def approve_reject(
    *, ref: ButtonRef, pipeline: str, stage: str, action: str, label_names: bool
) -> list[Element | None]:
    """Approve (with a confirm: a tap on a phone must not let an execution through) and
    Reject (which opens a modal asking why). ``label_names`` adds "Stage / Action" to the
    labels, for messages that show several approvals."""
    where = f"{clip(stage, 40)} / {clip(action, 40)}"
    suffix = f": {where}" if label_names else ""
    confirm = confirm_dialog(
        title="Approve?",
        text=(
            f"Approve {clip(stage, 60)} / {clip(action, 60)} of {clip(pipeline, 60)} "
            f"(execution {short_id(ref.execution)})? The execution continues past this gate."
        ),
        confirm="Approve",
        style="primary",
    )
    return [
        button(
            text=f"Approve{suffix}", action_id=APPROVE, ref=ref, style="primary", confirm=confirm
        ),
        button(text=f"Reject{suffix}", action_id=REJECT, ref=ref, style="danger"),
    ]


def retry(
    *,
    pipeline: str,
    stage: str,
    execution_id: str,
    failed_text: str,
    all_text: str,
    failed_style: str | None = None,
) -> list[Element | None]:
    """Retry failed actions and Retry all actions of a failed or stopped stage, each with a
    confirm that says which execution runs again."""
    ref = ButtonRef(pipeline=pipeline, execution=execution_id, stage=stage)
    question = (
        f"Retry {clip(stage, 60)} of {clip(pipeline, 60)} (execution {short_id(execution_id)})?"
    )
    return [
        button(
            text=failed_text,
            action_id=RETRY_FAILED,
            ref=ref,
            style=failed_style,
            confirm=confirm_dialog(
                title="Retry failed actions?",
                text=f"{question} Only the failed actions run again.",
                confirm="Retry",
            ),
        ),
        button(
            text=all_text,
            action_id=RETRY_ALL,
            ref=ref,
            confirm=confirm_dialog(
                title="Retry all actions?",
                text=f"{question} Every action of the stage runs again.",
                confirm="Retry all",
            ),
        ),
    ]


def view_log(
    *, pipeline: str, stage: str, execution_id: str, action: str, text: str
) -> Element | None:
    """View log of an action (``execution``'s view of its run, with its log's end):
    reading a log needs no permission, so it is shown to everyone wherever the backend
    keeps the action's log (a failed action's summary stands in on AWS)."""
    ref = ButtonRef(pipeline=pipeline, execution=execution_id, stage=stage, action=action)
    return button(text=text, action_id=VIEW_LOG, ref=ref)


OPTION_VALUE_MAX: Final = 150
OPTIONS_MAX: Final = 100


def view_log_select(*, choices: Sequence[tuple[ButtonRef, str]]) -> tuple[Element | None, int]:
    """A "View log…" menu, one option per (ref, label) in ``choices``, in order (Slack takes
    100 options, labels of 75 characters and values of 150: a ref whose encoding is longer,
    with names that long, is left out); and how many choices were left out. None when no
    choice is left.
    https://docs.slack.dev/reference/block-kit/block-elements/select-menu-element"""
    options: list[dict[str, Any]] = []
    for ref, label in choices:
        value = ref.encode()
        if len(value) <= OPTION_VALUE_MAX and len(options) < OPTIONS_MAX:
            options.append({"text": plain(label, OPTION_TEXT_MAX), "value": value})
    left = len(choices) - len(options)
    if not options:
        return None, left
    element: Element = {
        "type": "static_select",
        "action_id": VIEW_LOG_SELECT,
        "placeholder": plain("View log…", 150),
        "options": options,
    }
    return element, left


CONDITION_WORDS = {"BEFORE_ENTRY": "entry condition", "ON_SUCCESS": "success condition"}
"""OverrideStageCondition's ``conditionType`` in words."""


def target_words(target: RollbackTarget, *, now: datetime | None = None) -> str:
    """The target of a rollback in plain words, for a confirm dialog (plain text: nothing
    to escape): ``execution 3f2c9d1e (Source@a1b2c3d), which succeeded in Deploy on
    2025-05-06 09:07 UTC``."""
    words = f"execution {short_id(target.execution_id)}"
    if target.revisions:
        shown = ", ".join(
            f"{clip(action, 30)}@{short_revision(revision)}"
            for action, revision in target.revisions[:2]
        )
        words += f" ({shown})"
    words += f", which succeeded in {clip(target.stage, 40)}"
    if target.succeeded_at is not None:
        words += f" on {target.succeeded_at:%Y-%m-%d %H:%M} UTC"
    return words


def rollback(*, target: RollbackTarget, text: str) -> Element | None:
    """Roll back a stage to ``target``, with a confirm naming the target execution, its
    source revision and when it succeeded: a rollback deploys older code again."""
    ref = ButtonRef(pipeline=target.pipeline, execution=target.execution_id, stage=target.stage)
    return button(
        text=text,
        action_id=ROLLBACK,
        ref=ref,
        style="danger",
        confirm=confirm_dialog(
            title="Roll back?",
            # Within the 300 characters of a confirm whatever the names (40 + 40 + the
            # target's words), so the target and its time are never what gets cut.
            text=(
                f"Roll back {clip(target.stage, 40)} of {clip(target.pipeline, 40)} to "
                f"{target_words(target)}? A new execution redeploys it."
            ),
            confirm="Roll back",
            style="danger",
        ),
    )


def override(
    *, pipeline: str, stage: str, execution_id: str, condition_type: str, text: str
) -> Element | None:
    """Override a waiting or failed entry or success condition (``ref.action`` carries the
    condition type), with a confirm: the stage goes on as if its rules had passed."""
    ref = ButtonRef(pipeline=pipeline, execution=execution_id, stage=stage, action=condition_type)
    words = CONDITION_WORDS.get(condition_type, "condition")
    return button(
        text=text,
        action_id=OVERRIDE,
        ref=ref,
        confirm=confirm_dialog(
            title="Override the condition?",
            text=(
                f"Let the {words} of {clip(stage, 60)} in {clip(pipeline, 60)} pass for "
                f"execution {short_id(execution_id)}, whatever its rules say?"
            ),
            confirm="Override",
            style="danger",
        ),
    )
