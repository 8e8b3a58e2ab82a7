"""The App Home tab: the approvals waiting for the viewer, with their buttons, then every
pipeline. A view holds 100 blocks and far more text than a message, so it shows more."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from bot.slack import buttons
from bot.slack.history import empty_pipelines_text, pipeline_line
from bot.slack.ids import ButtonRef
from bot.slack.kit import (
    VIEW_BLOCKS_MAX,
    VIEW_TEXT_BUDGET,
    Block,
    actions,
    code,
    context,
    divider,
    escape,
    header,
    section,
    text_size,
)
from bot.slack.subscriptions import SubscriptionRecord, suspended_home_blocks
from bot.slack.text import WAITING_EMOJI, date_and_ago, name, pack, short_id, slack_date

_MAX_HOME_APPROVALS: Final = 20


def home_view(
    *,
    pipelines: Sequence[tuple[Mapping[str, Any], Mapping[str, Any] | None]],
    approvals: Sequence[tuple[str, str, str, str, datetime | None]],
    now: datetime,
    trial_mode: bool,
    command: str = "/pipeline",
    suspended: Sequence[SubscriptionRecord] = (),
) -> dict[str, Any]:
    """The App Home tab: approvals waiting for the viewer (with buttons), the suspended
    subscriptions (channels Slack refused, with the fix: shown only when there are some),
    then every pipeline.

    ``approvals`` are (pipeline, stage, action, execution ID, waiting since).
    """
    blocks: list[Block] = [header("pipebot")]
    if trial_mode:
        blocks.append(
            context(
                "🧪 *Trial mode:* no admins are configured, so everyone may do everything. "
                "Set `PIPEBOT_ADMINS` to restrict who operates and approves."
            )
        )
    blocks += _approvals(approvals, now=now, command=command)
    if suspended:
        blocks += [
            divider(),
            *suspended_home_blocks(subscriptions=suspended, now=now, command=command),
        ]
    blocks += [divider(), section(f"*Pipelines* ({len(pipelines)})")]
    footer = context(f"Updated {slack_date(now)} · `{escape(command)} help` for commands")
    if not pipelines:
        blocks.append(section(empty_pipelines_text(command)))
    else:
        blocks += pack(
            [pipeline_line(summary, latest, now=now) for summary, latest in pipelines],
            max_blocks=VIEW_BLOCKS_MAX - len(blocks) - 1,
            budget=VIEW_TEXT_BUDGET - text_size(blocks) - text_size(footer),
            more=lambda n: f"…and {n} more pipeline{'s' if n != 1 else ''}.",
        )
    blocks.append(footer)
    return {"type": "home", "blocks": blocks}


def _approvals(
    approvals: Sequence[tuple[str, str, str, str, datetime | None]],
    *,
    now: datetime,
    command: str,
) -> list[Block]:
    """Each approval waiting for the viewer with Approve/Reject, the first 20 of them."""
    blocks = [section(f"*Waiting for your approval* ({len(approvals)})")]
    if not approvals:
        blocks.append(context("Nothing waits for you."))
    for pipeline, stage, action, execution_id, since in approvals[:_MAX_HOME_APPROVALS]:
        blocks.append(
            section(
                f"{WAITING_EMOJI} *{name(pipeline)}* · {name(stage)} / {name(action)}"
                f" · execution {code(short_id(execution_id))} · since {date_and_ago(since, now)}"
            )
        )
        ref = ButtonRef(
            pipeline=pipeline, execution=execution_id or None, stage=stage, action=action
        )
        blocks += actions(
            buttons.approve_reject(
                ref=ref, pipeline=pipeline, stage=stage, action=action, label_names=False
            )
        )
    if len(approvals) > _MAX_HOME_APPROVALS:
        extra = len(approvals) - _MAX_HOME_APPROVALS
        blocks.append(
            context(
                f"…and {extra} more: `{escape(command)} approve NAME STAGE/ACTION` answers one."
            )
        )
    return blocks
