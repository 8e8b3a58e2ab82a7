"""The buttons that act on an execution, shared by the status message, the App Home and the
channel notifications, so each asks the same question before it acts.

Buttons carry a ``ButtonRef`` (pipeline, execution, stage, action) and never an approval
token: handlers read the token from GetPipelineState at click time.
"""

from __future__ import annotations

from bot.slack.ids import APPROVE, REJECT, RETRY_ALL, RETRY_FAILED, VIEW_LOG, ButtonRef
from bot.slack.kit import Element, button, clip, confirm_dialog
from bot.slack.text import short_id


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
    """View log of a failed action: reading a log needs no permission, so it is always shown."""
    ref = ButtonRef(pipeline=pipeline, execution=execution_id, stage=stage, action=action)
    return button(text=text, action_id=VIEW_LOG, ref=ref)
