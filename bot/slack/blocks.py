"""Block Kit for every message and view pipebot shows: pure functions, data in, dicts out.

Inputs are boto3 CodePipeline responses (GetPipelineState, ListPipelines,
ListPipelineExecutions, GetPipelineExecution, ListActionExecutions), exactly as
either backend returns them: optional members may be missing and timestamps are
aware datetimes. Nothing here reads the clock or does I/O; functions that show
elapsed times take ``now``.

Slack rejects, rather than truncates, a message that breaks a limit (see
``docs/slack-platform.md``), so every renderer keeps within them by construction:
user-controlled text (pipeline, stage and action names, commit messages,
summaries, logs) is escaped for mrkdwn and cut to fit its field; lists are
packed into as few sections as fit and end with a "...and N more" note when they
would not fit 50 blocks (100 in views) or ``MESSAGE_TEXT_BUDGET`` characters.
That last budget exists because Slack refuses messages whose blocks hold about
11-13k characters of text in total (``msg_blocks_too_long``), below any
documented per-field limit.

Buttons carry a ``ButtonRef`` (pipeline, execution, stage, action) and never an
approval token: handlers read the token from get_pipeline_state at click time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from bot.slack.ids import (
    APPROVE,
    COMMENT_BLOCK,
    COMMENT_INPUT,
    DECLARATION_BLOCK,
    DECLARATION_INPUT,
    DELETE_CANCEL,
    DELETE_CONFIRM,
    REFRESH_STATUS,
    REJECT,
    REJECT_VIEW,
    RETRY_ALL,
    RETRY_FAILED,
    START,
    STOP,
    STOP_MODE_BLOCK,
    STOP_MODE_INPUT,
    STOP_REASON_BLOCK,
    STOP_REASON_INPUT,
    STOP_VIEW,
    VIEW_LOG,
    ButtonRef,
)
from bot.slack.kit import (
    ESCAPES as _ESCAPES,
)
from bot.slack.kit import (
    MESSAGE_BLOCKS_MAX,
    SECTION_TEXT_MAX,
    Block,
    escape,
)
from bot.slack.kit import actions as _actions
from bot.slack.kit import button as _button
from bot.slack.kit import clip as _clip
from bot.slack.kit import clip_mrkdwn as _clip_mrkdwn
from bot.slack.kit import code as _code
from bot.slack.kit import confirm_dialog as _confirm
from bot.slack.kit import context as _context
from bot.slack.kit import defuse as _defuse
from bot.slack.kit import divider as _divider
from bot.slack.kit import esc as _esc
from bot.slack.kit import fence as _fence
from bot.slack.kit import header as _header
from bot.slack.kit import one_line as _one_line
from bot.slack.kit import plain as _plain
from bot.slack.kit import section as _section
from bot.slack.kit import text_size as _text_size

__all__ = [
    "COMMENT_MAX_LENGTH",
    "DECLARATION_MAX_BOXES",
    "FINISHED_STATUSES",
    "MESSAGE_TEXT_BUDGET",
    "NO_STATUS_EMOJI",
    "OUTCOME_MAX",
    "STALE_AFTER_CLICK",
    "STATUS_EMOJI",
    "STOP_MODE_ABANDON",
    "STOP_MODE_WAIT",
    "STOP_REASON_MAX_LENGTH",
    "AuditRecord",
    "access_blocks",
    "approval_outcome_text",
    "audit_blocks",
    "declaration_block_id",
    "declaration_from_values",
    "declaration_modal",
    "delete_confirm_blocks",
    "error_blocks",
    "escape",
    "execution_blocks",
    "fallback_text",
    "help_blocks",
    "history_blocks",
    "home_view",
    "list_blocks",
    "mention",
    "notice_blocks",
    "outcome_blocks",
    "outcome_text",
    "reject_modal",
    "slack_date",
    "status_blocks",
    "stop_modal",
]


# --------------------------------------------------------------------------- Slack's limits

VIEW_BLOCKS_MAX = 100
VIEW_TITLE_MAX = 24
VIEW_BUTTON_MAX = 24
PRIVATE_METADATA_MAX = 3000
PLAIN_TEXT_INPUT_MAX = 3000
INPUT_LABEL_MAX = 2000
PLACEHOLDER_MAX = 150
OPTION_TEXT_MAX = 75

MESSAGE_TEXT_BUDGET = 10_000
"""Most characters of text (all text objects summed) one message's blocks may hold."""

VIEW_TEXT_BUDGET = 60_000
"""Same for the App Home (views are capped at 250 kB, not by a text total)."""

# --------------------------------------------------------------------------- pipebot's choices

COMMENT_MAX_LENGTH = 400
"""Reject comment: put_approval_result's summary holds 512; the handler adds who rejected."""
STOP_REASON_MAX_LENGTH = 200
"""stop_pipeline_execution's ``reason`` holds 200 characters."""
STOP_MODE_WAIT = "wait"
STOP_MODE_ABANDON = "abandon"
"""Option values of the stop modal's ``STOP_MODE_INPUT`` select."""

DECLARATION_MAX_BOXES = 20
"""A declaration longer than one text box (3000) continues in up to this many boxes."""

OUTCOME_MAX = 1000
"""Longest outcome line ``outcome_blocks`` appends; messages with buttons leave room for it."""

_NOTE_RESERVE = 300  # text kept free for a "...and N more" note
_SUMMARY_MAX = 300  # an action's summary in a status or execution line
_NAME_MAX = 100  # escaped length of a name in running text
_MESSAGE_MAX = 100  # a commit message's first line
_MAX_APPROVAL_ROWS = 5  # approvals with their own buttons in a status message
_MAX_RETRY_ROWS = 5  # failed stages with their own retry buttons in a status message
_ROWS_BUDGET = 3500  # text for those rows, so that the stages keep the larger part
_MAX_HOME_APPROVALS = 20
_MAX_INBOUND_SHOWN = 5
_EARLIER_SHOWN = 4

FINISHED_STATUSES = frozenset({"Succeeded", "Failed", "Stopped", "Superseded", "Cancelled"})
"""Execution statuses an execution never leaves."""
_FINISHED = FINISHED_STATUSES
STATUS_EMOJI = {
    "InProgress": "🔄",
    "Succeeded": "✅",
    "Failed": "❌",
    "Stopped": "⏹",
    "Stopping": "⏹",
    "Abandoned": "⏹",
    "Superseded": "↷",
    "Cancelled": "🚫",
    "Skipped": "⏭",
}
NO_STATUS_EMOJI = "⚪"
_EMOJI = STATUS_EMOJI
_NO_STATUS = NO_STATUS_EMOJI
_WAITING = "⏳"
_LABEL = {"InProgress": "In progress"}
STALE_AFTER_CLICK = frozenset(
    {APPROVE, REJECT, RETRY_FAILED, RETRY_ALL, STOP, DELETE_CONFIRM, DELETE_CANCEL}
)
"""Buttons that act on the state a message showed: dropped by ``outcome_blocks``."""
_HEX_REVISION = re.compile(r"[0-9a-fA-F]{7,64}")
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
_GROUP_ID = re.compile(r"S[A-Z0-9]{2,}")
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")


# --------------------------------------------------------------------------- text helpers


def _name(value: Any, limit: int = _NAME_MAX) -> str:
    return _esc(str(value) if value is not None else "?", limit)


def _label(status: str | None) -> str:
    if not status:
        return "Not run"
    return _LABEL.get(status, status)


def _emoji(status: str | None) -> str:
    return _EMOJI.get(status or "", _NO_STATUS)


def _short_id(execution_id: Any) -> str:
    return str(execution_id or "?")[:8]


def short_revision(revision: str) -> str:
    """A git SHA as its first 7 characters; other revision IDs cut to 20."""
    if _HEX_REVISION.fullmatch(revision):
        return revision[:7]
    return _clip(revision, 20)


def _commit_message(summary: Any) -> str | None:
    """The first line of a commit message from a source action's summary.

    CodeCommit puts the message itself there; CodeStar connections (GitHub,
    Bitbucket, GitLab) put JSON such as ``{"ProviderType":"GitHub","CommitMessage":"..."}``.
    """
    if not isinstance(summary, str) or not summary.strip():
        return None
    text = summary.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("CommitMessage"), str):
            text = data["CommitMessage"].strip()
    lines = text.splitlines()
    return lines[0].strip() if lines and lines[0].strip() else None


def _revision_text(revision_id: Any, summary: Any) -> str:
    """```abc1234` First line of the message`` (escaped, cut), or '' without a revision."""
    if not isinstance(revision_id, str) or not revision_id:
        return ""
    text = _code(short_revision(revision_id), 24)
    message = _commit_message(summary)
    if message:
        text += " " + _esc(message, _MESSAGE_MAX)
    return text


def _dt(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def slack_date(when: datetime) -> str:
    """``<!date^EPOCH^{date_short_pretty} {time}|fallback>``: shown in the reader's time zone."""
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    fallback = aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(aware.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def duration(seconds: float) -> str:
    """``45s``, ``3m 12s``, ``1h 05m``, ``2d 3h``."""
    total = max(int(seconds), 0)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def _ago(when: datetime | None, now: datetime) -> str:
    """``just now``, ``45s ago``, ``12m ago``, ``2h 05m ago``, ``3d 4h ago``."""
    if when is None:
        return ""
    seconds = int((now - when).total_seconds())
    if seconds < 1:
        return "just now"
    if 60 <= seconds < 3600:
        return f"{seconds // 60}m ago"
    return f"{duration(seconds)} ago"


def _when(when: datetime | None, now: datetime) -> str:
    """``<date> (5m 02s ago)``."""
    if when is None:
        return "unknown time"
    return f"{slack_date(when)} ({_ago(when, now)})"


# --------------------------------------------------------------------------- block builders


def _fill(
    chunks: Sequence[str], *, max_blocks: int, budget: int, sep: str
) -> tuple[list[str], int]:
    """Greedily join chunks into section texts; stop at the first chunk that does not fit."""
    texts: list[str] = []
    used = 0
    for count, chunk in enumerate(chunks):
        if texts and len(texts[-1]) + len(sep) + len(chunk) <= SECTION_TEXT_MAX:
            cost = len(sep) + len(chunk)
            if used + cost > budget:
                return texts, count
            texts[-1] += sep + chunk
        else:
            if len(texts) >= max_blocks or used + len(chunk) > budget:
                return texts, count
            cost = len(chunk)
            texts.append(chunk)
        used += cost
    return texts, len(chunks)


def _pack(
    chunks: Sequence[str],
    *,
    max_blocks: int,
    budget: int,
    more: Callable[[int], str],
    sep: str = "\n",
) -> list[Block]:
    """Sections holding the chunks (each at most 3000 characters), within the block and text
    budgets; when some do not fit, the last block is a context note built by ``more(left)``.
    """
    chunks = [_clip_mrkdwn(c, SECTION_TEXT_MAX) for c in chunks]
    texts, taken = _fill(chunks, max_blocks=max_blocks, budget=budget, sep=sep)
    if taken == len(chunks):
        return [_section(t) for t in texts]
    if max_blocks < 1:
        return []
    texts, taken = _fill(
        chunks, max_blocks=max_blocks - 1, budget=max(budget - _NOTE_RESERVE, 0), sep=sep
    )
    note = _clip_mrkdwn(more(len(chunks) - taken), _NOTE_RESERVE)
    return [*(_section(t) for t in texts), _context(note)]


def _fits(chunks: Sequence[str], *, max_blocks: int, budget: int, sep: str = "\n") -> bool:
    return _fill(chunks, max_blocks=max_blocks, budget=budget, sep=sep)[1] == len(chunks)


def _join_lines(lines: Sequence[str], *, limit: int, more: Callable[[int], str]) -> str:
    """Lines joined by newlines within ``limit`` characters, the rest summarised by ``more``."""
    out: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        cost = len(line) + (1 if out else 0)
        room = limit if index == len(lines) - 1 else limit - _NOTE_RESERVE
        if size + cost > room:
            out.append(_clip_mrkdwn(more(len(lines) - index), _NOTE_RESERVE - 1))
            break
        out.append(line)
        size += cost
    return "\n".join(out)


# --------------------------------------------------------------------------- fallback text


def fallback_text(*, blocks: Sequence[Mapping[str, Any]], limit: int = 3000) -> str:
    """The notification text for a message (``text`` next to ``blocks``).

    The header if there is one, else the first section's text; chat.update documents a
    4,000-character limit for ``text``, so it is cut to ``limit``.
    """
    for wanted in ("header", "section", "context"):
        for block in blocks:
            if block.get("type") != wanted:
                continue
            text = block.get("text")
            if wanted == "context":
                elements = block.get("elements") or []
                text = elements[0] if elements else None
            if isinstance(text, Mapping) and isinstance(text.get("text"), str):
                if text.get("type") == "plain_text":
                    return _esc(str(text["text"]), limit)
                return _clip_mrkdwn(str(text["text"]), limit)
    return "pipebot"


# --------------------------------------------------------------------------- status


def _action_line(
    action: Mapping[str, Any], *, now: datetime, summaries: bool = True
) -> tuple[str, bool]:
    """One action of a stage; returns the line and whether it is an approval waiting."""
    name = _name(action.get("actionName"))
    latest = action.get("latestExecution") or {}
    status = latest.get("status")
    changed = _dt(latest.get("lastStatusChange"))
    waiting = status == "InProgress" and bool(latest.get("token"))
    if waiting:
        line = f"{_WAITING} {name} · waiting for approval since {_when(changed, now)}"
    else:
        line = f"{_emoji(status)} {name} · {_label(status)}"
        if status == "InProgress":
            line += f" · started {_ago(changed, now)}" if changed else ""
            percent = latest.get("percentComplete")
            if isinstance(percent, int):
                line += f" · {percent}%"
        elif changed is not None:
            line += f" {_ago(changed, now)}"
    revision = action.get("currentRevision") or {}
    if revision.get("revisionId"):
        # A source action's summary is the commit message only when it succeeded.
        message = latest.get("summary") if status == "Succeeded" else None
        line += " · " + _revision_text(revision["revisionId"], message)
    if summaries and status in ("Failed", "Abandoned"):
        error = latest.get("errorDetails") or {}
        summary = latest.get("summary") or error.get("message")
        if isinstance(summary, str) and summary.strip():
            line += " — " + _esc(_one_line(summary), _SUMMARY_MAX)
    return line, waiting


def _transition_line(stage: Mapping[str, Any], *, now: datetime) -> str | None:
    transition = stage.get("inboundTransitionState") or {}
    if transition.get("enabled", True):
        return None
    line = f"⛔ _Transition into {_name(stage.get('stageName'))} disabled_"
    if transition.get("lastChangedBy"):
        line += f" by {_esc(str(transition['lastChangedBy']), 120)}"
    changed = _dt(transition.get("lastChangedAt"))
    if changed is not None:
        line += f" {_when(changed, now)}"
    if transition.get("disabledReason"):
        line += f": “{_esc(_one_line(str(transition['disabledReason'])), 320)}”"
    return line


def _inbound(stage: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    many = stage.get("inboundExecutions")
    if many:
        return list(many)
    one = stage.get("inboundExecution")
    return [one] if one else []


def _inbound_line(stage: Mapping[str, Any]) -> str | None:
    inbound = _inbound(stage)
    if not inbound:
        return None
    shown = [
        f"{_code(_short_id(e.get('pipelineExecutionId')))} ({_label(e.get('status'))})"
        for e in inbound[:_MAX_INBOUND_SHOWN]
    ]
    extra = len(inbound) - len(shown)
    tail = f" and {extra} more" if extra > 0 else ""
    return f"⏸ _Waiting to enter {_name(stage.get('stageName'))}:_ {', '.join(shown)}{tail}"


def _stage_heading(stage: Mapping[str, Any]) -> str:
    latest = stage.get("latestExecution") or {}
    status = latest.get("status")
    line = f"{_emoji(status)} *{_name(stage.get('stageName'))}* · {_label(status)}"
    if latest.get("pipelineExecutionId"):
        line += f" · {_code(_short_id(latest['pipelineExecutionId']))}"
    retry = stage.get("retryStageMetadata") or {}
    attempts = (retry.get("manualStageRetryAttempt") or 0) + (
        retry.get("autoStageRetryAttempt") or 0
    )
    if attempts:
        line += f" · retry {attempts}"
    return line


def _stage_chunk(stage: Mapping[str, Any], *, now: datetime, compact: bool) -> str:
    lines = [
        line
        for line in (_transition_line(stage, now=now), _inbound_line(stage))
        if line is not None
    ]
    heading = _stage_heading(stage)
    actions = list(stage.get("actionStates") or [])
    if compact:
        marks = []
        waiting = [a for a in actions if _action_line(a, now=now, summaries=False)[1]]
        failed = [
            a
            for a in actions
            if (a.get("latestExecution") or {}).get("status") in ("Failed", "Abandoned")
        ]
        if waiting:
            marks.append(f"{_WAITING} approval waiting")
        if failed:
            marks.append(f"❌ {_name(failed[0].get('actionName'), 60)}")
        marks.append(f"{len(actions)} action{'s' if len(actions) != 1 else ''}")
        heading += " · " + " · ".join(marks)
        if lines:
            # The transition and inbound lines matter more than the actions: keep them short.
            lines = [_clip_mrkdwn(line, 400) for line in lines]
        return "\n".join([*lines, heading])
    action_lines = ["      " + _action_line(a, now=now)[0] for a in actions]
    body = _join_lines(
        [*lines, heading, *action_lines],
        limit=SECTION_TEXT_MAX,
        more=lambda n: f"      …and {n} more action{'s' if n != 1 else ''}",
    )
    return body


def _is_quiet(stage: Mapping[str, Any], *, now: datetime) -> bool:
    """Nothing to act on or look at: succeeded or never run, nothing waiting or disabled."""
    status = (stage.get("latestExecution") or {}).get("status")
    if status not in (None, "Succeeded", "Skipped"):
        return False
    if _inbound(stage) or _transition_line(stage, now=now):
        return False
    for action in stage.get("actionStates") or []:
        action_status = (action.get("latestExecution") or {}).get("status")
        if action_status not in (None, "Succeeded"):
            return False
    return True


def _latest_text(
    latest: Mapping[str, Any] | None, *, name: str, now: datetime, command: str
) -> str:
    if latest is None:
        return (
            "*Latest execution:* none yet. Start one with "
            f"`{escape(command)} start {_esc(name, _NAME_MAX)}`."
        )
    status = latest.get("status")
    started = _dt(latest.get("startTime"))
    updated = _dt(latest.get("lastUpdateTime"))
    lines = [
        f"*Latest execution* {_code(_short_id(latest.get('pipelineExecutionId')))} · "
        f"{_emoji(status)} {_label(status)}"
    ]
    times = []
    if started is not None:
        times.append(f"started {_when(started, now)}")
    if updated is not None:
        times.append(f"last change {_when(updated, now)}")
    if times:
        lines.append(" · ".join(times))
    trigger = _trigger_text(latest.get("trigger"))
    revisions = _source_revisions_text(latest.get("sourceRevisions"))
    detail = " · ".join(t for t in (trigger, revisions) if t)
    if detail:
        lines.append(detail)
    summary = latest.get("statusSummary")
    if isinstance(summary, str) and summary.strip():
        lines.append("_" + _esc(_one_line(summary), _SUMMARY_MAX) + "_")
    stop = latest.get("stopTrigger") or {}
    if stop.get("reason"):
        lines.append(f"Stop reason: {_esc(_one_line(str(stop['reason'])), 220)}")
    return "\n".join(lines)


def _trigger_text(trigger: Any) -> str:
    if not isinstance(trigger, Mapping) or not trigger.get("triggerType"):
        return ""
    text = f"trigger {_esc(str(trigger['triggerType']), 40)}"
    detail = trigger.get("triggerDetail")
    if isinstance(detail, str) and detail.strip():
        text += f" ({_esc(_one_line(detail), 120)})"
    return text


def _source_revisions_text(revisions: Any, limit: int = 2) -> str:
    if not isinstance(revisions, Sequence) or not revisions:
        return ""
    parts = []
    for revision in list(revisions)[:limit]:
        text = _revision_text(revision.get("revisionId"), revision.get("revisionSummary"))
        if text:
            parts.append(text)
    extra = len(revisions) - limit
    if extra > 0 and parts:
        parts.append(f"+{extra} more")
    return ", ".join(parts)


def _earlier_text(executions: Sequence[Mapping[str, Any]], *, now: datetime) -> str | None:
    shown = []
    for execution in executions[:_EARLIER_SHOWN]:
        when = _dt(execution.get("lastUpdateTime")) or _dt(execution.get("startTime"))
        shown.append(
            f"{_emoji(execution.get('status'))} "
            f"{_code(_short_id(execution.get('pipelineExecutionId')))} {_ago(when, now)}".rstrip()
        )
    return "Earlier: " + " · ".join(shown) if shown else None


def _approve_reject(
    *, ref: ButtonRef, pipeline: str, stage: str, action: str, label_names: bool
) -> list[dict[str, Any] | None]:
    where = f"{_clip(stage, 40)} / {_clip(action, 40)}"
    suffix = f": {where}" if label_names else ""
    confirm = _confirm(
        title="Approve?",
        text=(
            f"Approve {_clip(stage, 60)} / {_clip(action, 60)} of {_clip(pipeline, 60)} "
            f"(execution {_short_id(ref.execution)})? The execution continues past this gate."
        ),
        confirm="Approve",
        style="primary",
    )
    return [
        _button(
            text=f"Approve{suffix}", action_id=APPROVE, ref=ref, style="primary", confirm=confirm
        ),
        _button(text=f"Reject{suffix}", action_id=REJECT, ref=ref, style="danger"),
    ]


def _approval_row(
    *,
    pipeline: str,
    stage: str,
    action: str,
    execution_id: str | None,
    since: datetime | None,
    allowed: bool,
    label_names: bool,
    now: datetime,
) -> list[Block]:
    """A waiting approval: what and since when, then Approve/Reject if the viewer may."""
    text = (
        f"{_WAITING} *Approval waiting:* {_name(stage)} / {_name(action)}"
        f" · execution {_code(_short_id(execution_id))} · since {_when(since, now)}"
    )
    row = [_section(text)]
    if allowed and execution_id:
        ref = ButtonRef(pipeline=pipeline, execution=execution_id, stage=stage, action=action)
        row += _actions(
            _approve_reject(
                ref=ref, pipeline=pipeline, stage=stage, action=action, label_names=label_names
            )
        )
    return row


def _retry_row(
    *, pipeline: str, stage: str, execution_id: str, failed_action: str | None, allowed: bool
) -> list[Block]:
    """Retry buttons for a failed or stopped stage (if allowed) and View log (always)."""
    ref = ButtonRef(pipeline=pipeline, execution=execution_id, stage=stage)
    buttons: list[dict[str, Any] | None] = []
    if allowed:
        question = (
            f"Retry {_clip(stage, 60)} of {_clip(pipeline, 60)} "
            f"(execution {_short_id(execution_id)})?"
        )
        buttons.append(
            _button(
                text=f"Retry failed actions: {_clip(stage, 40)}",
                action_id=RETRY_FAILED,
                ref=ref,
                confirm=_confirm(
                    title="Retry failed actions?",
                    text=f"{question} Only the failed actions run again.",
                    confirm="Retry",
                ),
            )
        )
        buttons.append(
            _button(
                text=f"Retry all actions: {_clip(stage, 40)}",
                action_id=RETRY_ALL,
                ref=ref,
                confirm=_confirm(
                    title="Retry all actions?",
                    text=f"{question} Every action of the stage runs again.",
                    confirm="Retry all",
                ),
            )
        )
    if failed_action is not None:
        buttons.append(
            _button(
                text=f"View log: {_clip(failed_action, 50)}",
                action_id=VIEW_LOG,
                ref=ButtonRef(
                    pipeline=pipeline, execution=execution_id, stage=stage, action=failed_action
                ),
            )
        )
    return _actions(buttons)


def _take_rows(groups: Sequence[list[Block]], rows: list[Block], *, budget: int) -> int:
    """Append whole groups to ``rows`` while ``rows`` stays within ``budget`` characters;
    return how many groups were taken."""
    for taken, group in enumerate(groups):
        if _text_size(rows) + _text_size(group) > budget:
            return taken
        rows.extend(group)
    return len(groups)


def status_blocks(
    *,
    state: Mapping[str, Any],
    executions: Sequence[Mapping[str, Any]],
    approvals_allowed: bool,
    operate_allowed: bool,
    now: datetime,
    command: str = "/pipeline",
) -> list[Block]:
    """A pipeline's status: every stage and action, what waits, and the buttons that apply.

    ``state`` is a GetPipelineState response; ``executions`` the newest few
    ListPipelineExecutions summaries, newest first. Start/Stop/Retry buttons appear
    only with ``operate_allowed``, Approve/Reject only with ``approvals_allowed``;
    Refresh and View log always. ``command`` is the slash command, for hints.
    """
    name = str(state.get("pipelineName") or "?")
    version = state.get("pipelineVersion")
    stages: list[Mapping[str, Any]] = list(state.get("stageStates") or [])
    latest = executions[0] if executions else None
    pipeline_ref = ButtonRef(pipeline=name)

    top: list[Block] = [_header(f"{name} · v{version}" if version is not None else name)]
    top.append(_section(_latest_text(latest, name=name, now=now, command=command)))
    earlier = _earlier_text(executions[1:], now=now)
    if earlier:
        top.append(_context(earlier))
    top.append(_divider())

    # Approvals waiting, failed stages: their own rows with buttons.
    approvals: list[tuple[str, str, str | None, datetime | None]] = []
    failed_stages: list[tuple[str, str, str | None]] = []
    for stage in stages:
        stage_name = str(stage.get("stageName") or "?")
        stage_latest = stage.get("latestExecution") or {}
        execution_id = stage_latest.get("pipelineExecutionId")
        first_failed: str | None = None
        for action in stage.get("actionStates") or []:
            action_latest = action.get("latestExecution") or {}
            if action_latest.get("status") == "InProgress" and action_latest.get("token"):
                approvals.append(
                    (
                        stage_name,
                        str(action.get("actionName") or "?"),
                        execution_id,
                        _dt(action_latest.get("lastStatusChange")),
                    )
                )
            if first_failed is None and action_latest.get("status") == "Failed":
                first_failed = str(action.get("actionName") or "?")
        if stage_latest.get("status") in ("Failed", "Stopped") and execution_id:
            failed_stages.append((stage_name, str(execution_id), first_failed))

    approval_rows = [
        _approval_row(
            pipeline=name,
            stage=stage_name,
            action=action_name,
            execution_id=execution_id,
            since=since,
            allowed=approvals_allowed,
            label_names=len(approvals) > 1,
            now=now,
        )
        for stage_name, action_name, execution_id, since in approvals[:_MAX_APPROVAL_ROWS]
    ]
    retry_rows = [
        _retry_row(
            pipeline=name,
            stage=stage_name,
            execution_id=execution_id,
            failed_action=failed_action,
            allowed=operate_allowed,
        )
        for stage_name, execution_id, failed_action in failed_stages[:_MAX_RETRY_ROWS]
    ]
    # Rows share a slice of the text budget: long names make buttons and confirms costly.
    rows: list[Block] = []
    shown_approvals = _take_rows(approval_rows, rows, budget=_ROWS_BUDGET)
    if len(approvals) > shown_approvals:
        extra = len(approvals) - shown_approvals
        rows.append(
            _context(
                f"…and {extra} more approval{'s' if extra != 1 else ''} waiting: "
                f"`{escape(command)} approve {_esc(name, _NAME_MAX)} STAGE/ACTION`"
            )
        )
    shown_retries = _take_rows(retry_rows, rows, budget=_ROWS_BUDGET)
    if len(failed_stages) > shown_retries and any(retry_rows):
        extra = len(failed_stages) - shown_retries
        rows.append(
            _context(
                f"…and {extra} more failed stage{'s' if extra != 1 else ''}: "
                f"`{escape(command)} retry {_esc(name, _NAME_MAX)} STAGE`"
            )
        )

    controls: list[dict[str, Any] | None] = []
    if operate_allowed:
        controls.append(
            _button(
                text="Start",
                action_id=START,
                ref=pipeline_ref,
                style="primary",
                confirm=_confirm(
                    title="Start a new execution?",
                    text=f"Start a new execution of {_clip(name, 100)} from the latest source?",
                    confirm="Start",
                ),
            )
        )
        if latest is not None and latest.get("status") in ("InProgress", "Stopping"):
            controls.append(
                _button(
                    text="Stop",
                    action_id=STOP,
                    ref=ButtonRef(pipeline=name, execution=latest.get("pipelineExecutionId")),
                    style="danger",
                )
            )
    controls.append(_button(text="Refresh", action_id=REFRESH_STATUS, ref=pipeline_ref))
    bottom = [*rows, *_actions(controls), _context(f"Updated {slack_date(now)}")]

    # Stages fill what is left of the block and text budgets, in less detail if they must.
    max_blocks = MESSAGE_BLOCKS_MAX - len(top) - len(bottom)
    budget = MESSAGE_TEXT_BUDGET - OUTCOME_MAX - _text_size(top) - _text_size(bottom)
    if not stages:
        middle = [_section("_No stage has run yet._")]
    else:
        chunks = [_stage_chunk(s, now=now, compact=False) for s in stages]
        if not _fits(chunks, max_blocks=max_blocks, budget=budget):
            chunks = [_stage_chunk(s, now=now, compact=_is_quiet(s, now=now)) for s in stages]
        if not _fits(chunks, max_blocks=max_blocks, budget=budget):
            chunks = [_stage_chunk(s, now=now, compact=True) for s in stages]
        middle = _pack(
            chunks,
            max_blocks=max_blocks,
            budget=budget,
            more=lambda n: (
                f"…and {n} more stage{'s' if n != 1 else ''}: the pipeline is too long for one "
                "message. Each stage's actions are in "
                f"`{escape(command)} execution {_esc(name, 100)} ID`."
            ),
        )
    return [*top, *middle, *bottom]


# --------------------------------------------------------------------------- list


def _pipeline_line(
    summary: Mapping[str, Any], latest: Mapping[str, Any] | None, *, now: datetime
) -> str:
    name = _name(summary.get("name"))
    version = summary.get("version")
    head = f"*{name}*" + (f" v{version}" if version is not None else "")
    if latest is None:
        return f"{_NO_STATUS} {head} · never run"
    status = latest.get("status")
    if status in _FINISHED:
        when = _dt(latest.get("lastUpdateTime")) or _dt(latest.get("startTime"))
        timing = f"{_ago(when, now)}" if when else ""
    else:
        started = _dt(latest.get("startTime"))
        timing = f"· started {_ago(started, now)}" if started else ""
    line = f"{_emoji(status)} {head} · {_label(status)}"
    if timing:
        line += f" {timing}"
    return line + f" · {_code(_short_id(latest.get('pipelineExecutionId')))}"


def _empty_pipelines_text(command: str) -> str:
    cmd = escape(command)
    return (
        "*No pipelines yet.*\n"
        f"Create one with `{cmd} create`: it opens a form where you paste a declaration "
        "(CodePipeline's JSON or YAML, as `aws codepipeline get-pipeline` prints it). "
        f"`{cmd} help create` shows an example."
    )


def list_blocks(
    *,
    pipelines: Sequence[tuple[Mapping[str, Any], Mapping[str, Any] | None]],
    now: datetime,
    command: str = "/pipeline",
) -> list[Block]:
    """One line per pipeline (ListPipelines summary, latest execution summary or None)."""
    blocks: list[Block] = [_header(f"Pipelines ({len(pipelines)})")]
    if not pipelines:
        return [*blocks, _section(_empty_pipelines_text(command))]
    lines = [_pipeline_line(summary, latest, now=now) for summary, latest in pipelines]
    blocks += _pack(
        lines,
        max_blocks=MESSAGE_BLOCKS_MAX - len(blocks),
        budget=MESSAGE_TEXT_BUDGET - _text_size(blocks),
        more=lambda n: (
            f"…and {n} more pipeline{'s' if n != 1 else ''}. "
            f"`{escape(command)} status NAME` shows one."
        ),
    )
    return blocks


# --------------------------------------------------------------------------- history


def _history_chunk(execution: Mapping[str, Any]) -> str:
    execution_id = str(execution.get("pipelineExecutionId") or "?")
    status = execution.get("status")
    first = f"{_emoji(status)} *{_esc(_short_id(execution_id), 8)}* · {_label(status)}"
    trigger = _trigger_text(execution.get("trigger"))
    if trigger:
        first += f" · {trigger}"
    revisions = _source_revisions_text(execution.get("sourceRevisions"))
    if revisions:
        first += f" · {revisions}"
    started = _dt(execution.get("startTime"))
    updated = _dt(execution.get("lastUpdateTime"))
    times = []
    if started is not None:
        times.append(f"started {slack_date(started)}")
    if status in _FINISHED and updated is not None:
        times.append(f"ended {slack_date(updated)}")
        if started is not None:
            times.append(f"took {duration((updated - started).total_seconds())}")
    elif status not in _FINISHED:
        times.append("still running")
    lines = [first, "      " + " · ".join(times)]
    summary = execution.get("statusSummary")
    if isinstance(summary, str) and summary.strip():
        lines.append("      _" + _esc(_one_line(summary), 200) + "_")
    stop = execution.get("stopTrigger") or {}
    if stop.get("reason"):
        lines.append(f"      stop reason: {_esc(_one_line(str(stop['reason'])), 220)}")
    lines.append(f"      {_code(execution_id)}")
    return "\n".join(lines)


def history_blocks(
    *,
    pipeline: str,
    executions: Sequence[Mapping[str, Any]],
    command: str = "/pipeline",
) -> list[Block]:
    """Executions (ListPipelineExecutions summaries, newest first) with ID, status, trigger,
    source revision, start, end and duration."""
    blocks: list[Block] = [_header(f"History · {pipeline}")]
    if not executions:
        return [*blocks, _section(f"*{_name(pipeline)}* has no executions yet.")]
    blocks += _pack(
        [_history_chunk(e) for e in executions],
        max_blocks=MESSAGE_BLOCKS_MAX - len(blocks),
        budget=MESSAGE_TEXT_BUDGET - _text_size(blocks),
        more=lambda n: (
            f"…and {n} older execution{'s' if n != 1 else ''} not shown: "
            f"`{escape(command)} execution {_esc(pipeline, _NAME_MAX)} ID` shows one."
        ),
        sep="\n\n",
    )
    return blocks


# --------------------------------------------------------------------------- execution


def _action_execution_chunk(detail: Mapping[str, Any]) -> str:
    status = detail.get("status")
    where = f"*{_name(detail.get('stageName'))}* / *{_name(detail.get('actionName'))}*"
    line = f"{_emoji(status)} {where} · {_label(status)}"
    started = _dt(detail.get("startTime"))
    updated = _dt(detail.get("lastUpdateTime"))
    if started is not None:
        line += f" · started {slack_date(started)}"
        if status in _FINISHED | {"Abandoned"} and updated is not None:
            line += f" · took {duration((updated - started).total_seconds())}"
    if detail.get("updatedBy") and status != "InProgress":
        line += f" · by {_esc(str(detail['updatedBy']), 120)}"
    result = (detail.get("output") or {}).get("executionResult") or {}
    summary = result.get("externalExecutionSummary") or (result.get("errorDetails") or {}).get(
        "message"
    )
    lines = [line]
    if isinstance(summary, str) and summary.strip():
        lines.append("      " + _esc(_one_line(summary), _SUMMARY_MAX))
    return "\n".join(lines)


def _tail_fit(raw: str, room: int) -> tuple[str, bool]:
    """The end of ``raw``, escaped for a code block, in at most ``room`` characters, whole
    lines where possible; and whether anything was cut."""
    full = _fence(raw)
    if len(full) <= room:
        return full, False
    lines = raw.split("\n")
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        piece = _fence(line)
        cost = len(piece) + (1 if kept else 0)
        if size + cost > room:
            break
        kept.append(piece)
        size += cost
    if kept:
        return "\n".join(reversed(kept)), True
    chars: list[str] = []  # one huge last line: its end, never starting inside an entity
    size = 0
    for char in reversed(lines[-1]):
        piece = _ESCAPES.get(char, char)
        if size + len(piece) > room:
            break
        chars.append(piece)
        size += len(piece)
    return _defuse("".join(reversed(chars))), True


def _log_section(
    *, log_tail: str, title: str, pipeline: str, execution_id: str, command: str
) -> Block:
    """The log's last lines in a code block, cut from the top to fit one section."""
    note = (
        f"_(truncated; full log: `{escape(command)} execution {_esc(pipeline, _NAME_MAX)} "
        f"{_esc(execution_id, 64)}`)_"
    )
    raw = log_tail.rstrip("\n")
    if not raw.strip():
        return _section(f"{title}\n```\n(empty log)\n```")
    frame = len(title) + len("\n```\n") + len("\n```")
    body, cut = _tail_fit(raw, SECTION_TEXT_MAX - frame)
    if not cut:
        return _section(f"{title}\n```\n{body}\n```")
    body, _ = _tail_fit(raw, SECTION_TEXT_MAX - frame - len("…\n") - len(note) - 1)
    return _section(f"{title}\n```\n…\n{body}\n```\n{note}")


def execution_blocks(
    *,
    pipeline: str,
    execution: Mapping[str, Any],
    actions: Sequence[Mapping[str, Any]],
    log_tail: str | None,
    command: str = "/pipeline",
) -> list[Block]:
    """One execution (GetPipelineExecution's ``pipelineExecution``) with every action
    execution (ListActionExecutions details, any order) and the failed action's log tail."""
    execution_id = str(execution.get("pipelineExecutionId") or "?")
    status = execution.get("status")
    blocks: list[Block] = [_header(f"{pipeline} · execution {_short_id(execution_id)}")]
    lines = [f"{_emoji(status)} *{_label(status)}* · {_code(execution_id)}"]
    facts = []
    if execution.get("pipelineVersion") is not None:
        facts.append(f"pipeline version {execution['pipelineVersion']}")
    trigger = _trigger_text(execution.get("trigger"))
    if trigger:
        facts.append(trigger)
    if execution.get("executionMode"):
        facts.append(f"mode {_esc(str(execution['executionMode']), 20)}")
    if facts:
        lines.append(" · ".join(facts))
    ordered = sorted(
        actions,
        key=lambda a: _dt(a.get("startTime")) or datetime.min.replace(tzinfo=UTC),
    )
    starts = [t for t in (_dt(a.get("startTime")) for a in ordered) if t is not None]
    ends = [t for t in (_dt(a.get("lastUpdateTime")) for a in ordered) if t is not None]
    if starts:
        timing = f"started {slack_date(starts[0])}"
        if status in _FINISHED and ends:
            timing += (
                f" · ended {slack_date(max(ends))}"
                f" · took {duration((max(ends) - starts[0]).total_seconds())}"
            )
        lines.append(timing)
    for artifact in list(execution.get("artifactRevisions") or [])[:3]:
        revision = _revision_text(artifact.get("revisionId"), artifact.get("revisionSummary"))
        if revision:
            lines.append(f"{_name(artifact.get('name'), 60)}: {revision}")
    summary = execution.get("statusSummary")
    if isinstance(summary, str) and summary.strip():
        lines.append("_" + _esc(_one_line(summary), _SUMMARY_MAX) + "_")
    blocks.append(_section("\n".join(lines)))

    tail: list[Block] = []
    if log_tail is not None:
        failed = [a for a in ordered if a.get("status") in ("Failed", "Abandoned")]
        if failed:
            last = max(
                failed,
                key=lambda a: _dt(a.get("lastUpdateTime")) or datetime.min.replace(tzinfo=UTC),
            )
            title = (
                f"*Log tail* of {_name(last.get('stageName'), 60)} / "
                f"{_name(last.get('actionName'), 60)}:"
            )
        else:
            title = "*Log tail:*"
        tail.append(
            _log_section(
                log_tail=log_tail,
                title=title,
                pipeline=pipeline,
                execution_id=execution_id,
                command=command,
            )
        )
    if ordered:
        chunks = [_action_execution_chunk(a) for a in ordered]
        middle = _pack(
            chunks,
            max_blocks=MESSAGE_BLOCKS_MAX - len(blocks) - len(tail) - 1,
            budget=MESSAGE_TEXT_BUDGET - _text_size(blocks) - _text_size(tail),
            more=lambda n: f"…and {n} more action execution{'s' if n != 1 else ''} not shown.",
        )
        blocks += [_divider(), *middle]
    else:
        blocks.append(_section("_No action has run in this execution yet._"))
    return [*blocks, *tail]


# --------------------------------------------------------------------------- help, errors


def _split_long_line(line: str, limit: int) -> list[str]:
    return [line[i : i + limit] for i in range(0, len(line), limit)] or [""]


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
    return _pack(
        [c if c.strip() else " " for c in chunks],
        max_blocks=MESSAGE_BLOCKS_MAX,
        budget=MESSAGE_TEXT_BUDGET,
        more=lambda n: f"…help cut short. `{escape(command)} help COMMAND` shows one command.",
    )


def error_blocks(*, message: str, usage: str | None = None) -> list[Block]:
    """An error for the invoking user. ``message`` is mrkdwn (escape user input with
    ``escape``); ``usage`` is plain text, shown as code."""
    blocks = [_section(f"⚠️ {_clip_mrkdwn(message, SECTION_TEXT_MAX - 3)}")]
    if usage:
        blocks.append(
            _section(f"*Usage*\n```\n{_clip_mrkdwn(_fence(usage), SECTION_TEXT_MAX - 20)}\n```")
        )
    return blocks


def notice_blocks(*, message: str) -> list[Block]:
    """A short mrkdwn notice (``message`` is mrkdwn: escape user input with ``escape``)."""
    return [_section(message)]


# --------------------------------------------------------------------------- after a click


def outcome_text(
    *, emoji: str, what: str, user_id: str, at: datetime, comment: str | None = None
) -> str:
    """``✅ Approved by <@U1> at <date>: “comment”`` (``what`` and ``comment`` escaped)."""
    who = f"<@{user_id}>" if _USER_ID.fullmatch(user_id) else _esc(user_id, 40)
    text = f"{emoji} {_esc(what, 300)} by {who} at {slack_date(at)}"
    if comment and comment.strip():
        text += f": “{_esc(_one_line(comment), 600)}”"
    return text


def approval_outcome_text(
    *,
    approved: bool,
    user_id: str,
    at: datetime,
    stage: str,
    action: str,
    comment: str | None = None,
) -> str:
    """The outcome line of an approval: ``✅ Approved Deploy / Gate by <@U1> at <date>``."""
    verb = "Approved" if approved else "Rejected"
    return outcome_text(
        emoji="✅" if approved else "❌",
        what=f"{verb} {_clip(stage, 100)} / {_clip(action, 100)}",
        user_id=user_id,
        at=at,
        comment=comment,
    )


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
    buttons is removed. ``outcome`` is mrkdwn (see ``outcome_text``), cut to
    ``OUTCOME_MAX`` characters: renderers keep that much of the text budget free.
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
    note = _context(_clip_mrkdwn(outcome, OUTCOME_MAX))
    return [*blocks[: MESSAGE_BLOCKS_MAX - 1], note]


def delete_confirm_blocks(*, pipeline: str) -> list[Block]:
    """Asks before deleting a pipeline: Delete (danger) and Cancel."""
    ref = ButtonRef(pipeline=pipeline)
    return [
        _section(
            f"Delete pipeline *{_name(pipeline)}*? Its declaration and execution history "
            "are removed and running actions are stopped. This cannot be undone."
        ),
        *_actions(
            [
                _button(text="Delete", action_id=DELETE_CONFIRM, ref=ref, style="danger"),
                _button(text="Cancel", action_id=DELETE_CANCEL, ref=ref),
            ]
        ),
    ]


# --------------------------------------------------------------------------- modals


def declaration_block_id(index: int) -> str:
    """Block ID of the declaration's ``index``-th text box (0: ``DECLARATION_BLOCK``).

    Slack caps a text box at 3000 characters; longer declarations continue in
    ``declaration_2``, ``declaration_3`` ... (each with action ID ``DECLARATION_INPUT``).
    """
    return DECLARATION_BLOCK if index == 0 else f"{DECLARATION_BLOCK}_{index + 1}"


def declaration_from_values(values: Mapping[str, Any]) -> str:
    """The declaration typed into the modal: every box's text joined in order.

    ``values`` is the view_submission's ``view.state.values``.
    """
    parts = []
    for index in range(DECLARATION_MAX_BOXES):
        block = values.get(declaration_block_id(index))
        if not isinstance(block, Mapping):
            continue
        value = (block.get(DECLARATION_INPUT) or {}).get("value")
        if isinstance(value, str):
            parts.append(value)
    return "".join(parts)


def _split_declaration(text: str) -> list[str]:
    """Pieces of at most 3000 characters, cut after a newline where possible; joined with
    "" they give ``text`` back exactly."""
    pieces: list[str] = []
    rest = text
    while len(rest) > PLAIN_TEXT_INPUT_MAX:
        cut = rest.rfind("\n", 0, PLAIN_TEXT_INPUT_MAX) + 1
        if cut <= 0:
            cut = PLAIN_TEXT_INPUT_MAX
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    return pieces


def _text_input(
    *,
    block_id: str,
    action_id: str,
    label: str,
    multiline: bool,
    max_length: int,
    optional: bool,
    initial: str | None = None,
    placeholder: str | None = None,
    hint: str | None = None,
) -> Block:
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": action_id,
        "multiline": multiline,
        "max_length": max_length,
    }
    if initial:
        element["initial_value"] = initial
    if placeholder:
        element["placeholder"] = _plain(placeholder, PLACEHOLDER_MAX)
    block: Block = {
        "type": "input",
        "block_id": block_id,
        "label": _plain(label, INPUT_LABEL_MAX),
        "element": element,
        "optional": optional,
    }
    if hint:
        block["hint"] = _plain(hint, INPUT_LABEL_MAX)
    return block


def _modal(
    *,
    callback_id: str,
    title: str,
    submit: str,
    blocks: list[Block],
    private_metadata: str,
) -> dict[str, Any]:
    if len(private_metadata) > PRIVATE_METADATA_MAX:
        raise ValueError(
            f"private_metadata is {len(private_metadata)} characters; Slack allows 3000"
        )
    view: dict[str, Any] = {
        "type": "modal",
        "callback_id": callback_id,
        "title": _plain(title, VIEW_TITLE_MAX),
        "submit": _plain(submit, VIEW_BUTTON_MAX),
        "close": _plain("Cancel", VIEW_BUTTON_MAX),
        "blocks": blocks[:VIEW_BLOCKS_MAX],
    }
    if private_metadata:
        view["private_metadata"] = private_metadata
    return view


def declaration_modal(
    *,
    callback_id: str,
    initial: str | None,
    title: str,
    private_metadata: str,
    min_boxes: int = 1,
) -> dict[str, Any]:
    """The create/edit modal (``CREATE_VIEW`` or ``EDIT_VIEW``): a declaration to paste.

    Text boxes hold 3000 characters; a longer ``initial`` declaration is spread over
    several boxes (see ``declaration_block_id``; read them back with
    ``declaration_from_values``), and ``min_boxes`` offers empty extra boxes for long
    pastes. Validation errors go to ``DECLARATION_BLOCK`` (``response_action: errors``).
    """
    pieces = _split_declaration(initial) if initial else []
    too_long = len(pieces) > DECLARATION_MAX_BOXES
    if too_long:
        pieces = []
    boxes = min(max(len(pieces), min_boxes, 1), DECLARATION_MAX_BOXES)
    intro = (
        "Paste the pipeline declaration: CodePipeline's JSON or YAML, with or without the "
        "outer `pipeline` key (as `aws codepipeline get-pipeline` prints it)."
    )
    if boxes > 1:
        intro += (
            " Slack holds 3000 characters per box: a longer declaration continues in the "
            "next box; the boxes are joined in order."
        )
    if too_long:
        intro += (
            f"\n⚠️ The current declaration is longer than {DECLARATION_MAX_BOXES} boxes: "
            "paste the changed declaration instead."
        )
    blocks: list[Block] = [_section(intro)]
    for index in range(boxes):
        blocks.append(
            _text_input(
                block_id=declaration_block_id(index),
                action_id=DECLARATION_INPUT,
                label="Declaration" if index == 0 else f"Declaration, continued ({index + 1})",
                multiline=True,
                max_length=PLAIN_TEXT_INPUT_MAX,
                optional=index > 0,
                initial=pieces[index] if index < len(pieces) else None,
                placeholder='{"name": "my-app", "stages": [...]}' if index == 0 else None,
            )
        )
    return _modal(
        callback_id=callback_id,
        title=title,
        submit="Save",
        blocks=blocks,
        private_metadata=private_metadata,
    )


def _approval_where(ref: ButtonRef) -> str:
    stage = _name(ref.stage or "?", 80)
    action = _name(ref.action or "?", 80)
    text = f"*{stage} / {action}* of *{_name(ref.pipeline)}*"
    if ref.execution:
        text += f" (execution {_code(ref.execution, 40)})"
    return text


def reject_modal(*, ref: ButtonRef) -> dict[str, Any]:
    """Asks for the reason of a rejection (required); ``private_metadata`` is ``ref``."""
    return _modal(
        callback_id=REJECT_VIEW,
        title="Reject approval",
        submit="Reject",
        blocks=[
            _section(f"Reject {_approval_where(ref)}? The stage fails."),
            _text_input(
                block_id=COMMENT_BLOCK,
                action_id=COMMENT_INPUT,
                label="Why?",
                multiline=True,
                max_length=COMMENT_MAX_LENGTH,
                optional=False,
                hint="Recorded in the approval's summary with your name.",
            ),
        ],
        private_metadata=ref.encode(),
    )


def _option(text: str, value: str, description: str) -> dict[str, Any]:
    return {
        "text": _plain(text, OPTION_TEXT_MAX),
        "value": value,
        "description": _plain(description, OPTION_TEXT_MAX),
    }


def stop_modal(*, ref: ButtonRef) -> dict[str, Any]:
    """Stop an execution: wait for running actions or abandon them, with an optional reason."""
    wait = _option("Stop and wait", STOP_MODE_WAIT, "Running actions finish first")
    abandon = _option("Stop and abandon", STOP_MODE_ABANDON, "Running actions are abandoned")
    where = f"*{_name(ref.pipeline)}*"
    if ref.execution:
        where += f" execution {_code(ref.execution, 40)}"
    return _modal(
        callback_id=STOP_VIEW,
        title="Stop execution",
        submit="Stop",
        blocks=[
            _section(f"Stop {where}?"),
            {
                "type": "input",
                "block_id": STOP_MODE_BLOCK,
                "label": _plain("How", INPUT_LABEL_MAX),
                "element": {
                    "type": "static_select",
                    "action_id": STOP_MODE_INPUT,
                    "options": [wait, abandon],
                    "initial_option": wait,
                },
            },
            _text_input(
                block_id=STOP_REASON_BLOCK,
                action_id=STOP_REASON_INPUT,
                label="Reason",
                multiline=False,
                max_length=STOP_REASON_MAX_LENGTH,
                optional=True,
            ),
        ],
        private_metadata=ref.encode(),
    )


# --------------------------------------------------------------------------- App Home


def home_view(
    *,
    pipelines: Sequence[tuple[Mapping[str, Any], Mapping[str, Any] | None]],
    approvals: Sequence[tuple[str, str, str, str, datetime | None]],
    now: datetime,
    trial_mode: bool,
    command: str = "/pipeline",
) -> dict[str, Any]:
    """The App Home tab: approvals waiting for the viewer (with buttons), then every pipeline.

    ``approvals`` are (pipeline, stage, action, execution ID, waiting since).
    """
    blocks: list[Block] = [_header("pipebot")]
    if trial_mode:
        blocks.append(
            _context(
                "🧪 *Trial mode:* no admins are configured, so everyone may do everything. "
                "Set `PIPEBOT_ADMINS` to restrict who operates and approves."
            )
        )
    blocks.append(_section(f"*Waiting for your approval* ({len(approvals)})"))
    if not approvals:
        blocks.append(_context("Nothing waits for you."))
    for pipeline, stage, action, execution_id, since in approvals[:_MAX_HOME_APPROVALS]:
        blocks.append(
            _section(
                f"{_WAITING} *{_name(pipeline)}* · {_name(stage)} / {_name(action)}"
                f" · execution {_code(_short_id(execution_id))} · since {_when(since, now)}"
            )
        )
        ref = ButtonRef(
            pipeline=pipeline, execution=execution_id or None, stage=stage, action=action
        )
        blocks += _actions(
            _approve_reject(
                ref=ref, pipeline=pipeline, stage=stage, action=action, label_names=False
            )
        )
    if len(approvals) > _MAX_HOME_APPROVALS:
        extra = len(approvals) - _MAX_HOME_APPROVALS
        blocks.append(
            _context(
                f"…and {extra} more: `{escape(command)} approve NAME STAGE/ACTION` answers one."
            )
        )
    blocks += [_divider(), _section(f"*Pipelines* ({len(pipelines)})")]
    footer = _context(f"Updated {slack_date(now)} · `{escape(command)} help` for commands")
    if not pipelines:
        blocks.append(_section(_empty_pipelines_text(command)))
    else:
        blocks += _pack(
            [_pipeline_line(summary, latest, now=now) for summary, latest in pipelines],
            max_blocks=VIEW_BLOCKS_MAX - len(blocks) - 1,
            budget=VIEW_TEXT_BUDGET - _text_size(blocks) - _text_size(footer),
            more=lambda n: f"…and {n} more pipeline{'s' if n != 1 else ''}.",
        )
    blocks.append(footer)
    return {"type": "home", "blocks": blocks}


# --------------------------------------------------------------------------- access and audit


def mention(subject: str) -> str:
    """A user ID as ``<@U..>``, a user group ID as ``<!subteam^S..>``, anything else escaped."""
    if _USER_ID.fullmatch(subject):
        return f"<@{subject}>"
    if _GROUP_ID.fullmatch(subject):
        return f"<!subteam^{subject}>"
    return _esc(subject, 40)


def _mentions(subjects: Sequence[str], *, limit: int = 1500) -> str:
    return _join_lines(
        [mention(s) for s in subjects],
        limit=limit,
        more=lambda n: f"and {n} more",
    ).replace("\n", ", ")


def access_blocks(
    *,
    pipeline: str,
    operators: Sequence[str],
    approvers: Sequence[str],
    no_self_approval: bool,
    admins: Sequence[str],
    command: str = "/pipeline",
) -> list[Block]:
    """Who may operate and approve one pipeline (``access NAME``)."""
    if admins:
        admin_text = f"*Admins* (every right, every pipeline): {_mentions(admins)}"
    else:
        admin_text = (
            "*Admins:* none configured, so pipebot runs in *trial mode*: everyone may do "
            "everything. Set `PIPEBOT_ADMINS` to restrict."
        )
    operator_text = _mentions(operators) if operators else "nobody listed"
    if not operators and admins:
        operator_text += ": only admins"
    approver_text = _mentions(approvers) if approvers else "nobody listed: the operators approve"
    lines = [
        f"*Operators* (start, stop, retry, enable/disable, edit): {operator_text}",
        f"*Approvers* (approve, reject): {approver_text}",
        "*Self-approval:* "
        + (
            "refused (whoever started an execution cannot approve it)"
            if no_self_approval
            else "allowed"
        ),
    ]
    cmd = escape(command)
    return [
        _header(f"Access to {pipeline}"),
        _section("\n".join(lines)),
        _section(admin_text),
        _context(
            f"`{cmd} access {_esc(pipeline, _NAME_MAX)} operators add @someone` · "
            f"`{cmd} access {_esc(pipeline, _NAME_MAX)} self-approval off`"
        ),
    ]


class AuditRecord(Protocol):
    """What ``audit_blocks`` reads from an audit row (``storage.models.AuditEntry``)."""

    @property
    def at(self) -> datetime: ...
    @property
    def user_id(self) -> str: ...
    @property
    def channel_id(self) -> str | None: ...
    @property
    def what(self) -> str: ...
    @property
    def pipeline(self) -> str | None: ...
    @property
    def execution_id(self) -> str | None: ...
    @property
    def outcome(self) -> str: ...
    @property
    def detail(self) -> str | None: ...


def _audit_line(entry: AuditRecord) -> str:
    line = f"{slack_date(entry.at)} {mention(entry.user_id)} {_code(entry.what, 40)}"
    if entry.pipeline:
        line += f" *{_name(entry.pipeline)}*"
    if entry.execution_id:
        line += f" {_code(_short_id(entry.execution_id))}"
    line += f" → {_esc(entry.outcome, 40)}"
    if entry.channel_id and _CHANNEL_ID.fullmatch(entry.channel_id):
        line += f" in <#{entry.channel_id}>"
    if entry.detail and entry.detail.strip():
        line += f" — {_esc(_one_line(entry.detail), 200)}"
    return line


def audit_blocks(*, entries: Sequence[AuditRecord], pipeline: str | None = None) -> list[Block]:
    """Recent audit entries, newest first (``audit [NAME]``)."""
    title = f"Audit · {pipeline}" if pipeline else "Audit"
    blocks: list[Block] = [_header(title)]
    if not entries:
        return [*blocks, _section("_Nothing recorded yet._")]
    blocks += _pack(
        [_audit_line(e) for e in entries],
        max_blocks=MESSAGE_BLOCKS_MAX - len(blocks),
        budget=MESSAGE_TEXT_BUDGET - _text_size(blocks),
        more=lambda n: f"…and {n} more entr{'ies' if n != 1 else 'y'} not shown.",
    )
    return blocks
