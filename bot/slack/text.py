"""The text every pipebot message shares: names, statuses, times, revisions, mentions, log
tails, and the packing of lines into sections. Pure functions; no I/O and no clock.

The command replies (``status``, ``history``, ...) and the channel notifications
(``notifications``, ``bot.notify.snapshot``) draw the same things, so they draw them with
these helpers: one status emoji per status, one way to show a commit message, one way to
fit a list into a message. Inputs are boto3 CodePipeline responses (optional members may
be missing; timestamps are datetimes) and user-controlled text, which is escaped for
mrkdwn and cut to fit here (``kit.esc``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from bot.ops.pipeline_state import is_rollback, rollback_target_of
from bot.slack.kit import (
    ESCAPES,
    SECTION_TEXT_MAX,
    Block,
    clip,
    clip_mrkdwn,
    code,
    context,
    defuse,
    esc,
    fence,
    one_line,
    section,
)

NAME_MAX: Final = 100
"""Escaped length of a pipeline, stage or action name in running text."""
SUMMARY_MAX: Final = 300
"""An action's or execution's summary on one line."""
MESSAGE_MAX: Final = 100
"""A commit message's first line next to its revision."""
NOTE_RESERVE: Final = 300
"""Text a packed list keeps free for its "...and N more" note."""

STATUS_EMOJI: Final = {
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
"""Emoji of each CodePipeline execution, stage and action status."""
NO_STATUS_EMOJI: Final = "⚪"
"""A stage or action that has not run (or a status pipebot does not know)."""
WAITING_EMOJI: Final = "⏳"
"""An approval waiting for an answer."""
ENTERING_EMOJI: Final = "⏸"
"""An execution queued to enter a stage."""
STATUS_LABEL: Final = {"InProgress": "In progress"}
"""Status words shown differently from how CodePipeline spells them."""
WAITING_LABEL: Final = "Waiting for approval"
"""What a stage, or an execution in progress, is while an approval of it waits: said so
rather than "In progress" wherever the state shows the approval."""

_HEX_REVISION: Final = re.compile(r"[0-9a-fA-F]{7,64}")
_USER_ID: Final = re.compile(r"[UW][A-Z0-9]{2,}")
_GROUP_ID: Final = re.compile(r"S[A-Z0-9]{2,}")


# --------------------------------------------------------------------------- names and statuses


def name(value: Any, limit: int = NAME_MAX) -> str:
    """A name in running text: escaped, cut to ``limit``; ``?`` when missing."""
    return esc(str(value) if value is not None else "?", limit)


def flat_name(value: Any, limit: int = NAME_MAX) -> str:
    """``name`` on one line (whitespace runs collapsed): channel notifications show names
    read back from stored snapshots, where a newline would break the line layout."""
    return name(one_line(str(value)) if value is not None else None, limit)


def status_emoji(status: str | None, table: Mapping[str, str] = STATUS_EMOJI) -> str:
    """The emoji of a status; ``table`` lets notifications add their pseudo-statuses."""
    return table.get(status or "", NO_STATUS_EMOJI)


def status_label(status: str | None, table: Mapping[str, str] = STATUS_LABEL) -> str:
    """A status as a word for people: ``Not run`` when there is none."""
    if not status:
        return "Not run"
    return table.get(status, status)


def trimmed(value: Any, limit: int) -> str | None:
    """A non-empty string stripped and cut to ``limit`` (raw: escape it when drawn), else
    None: what the notifier keeps of free text in its stored snapshots."""
    if not isinstance(value, str) or not value.strip():
        return None
    return clip(value.strip(), limit)


def short_id(execution_id: Any) -> str:
    """An execution ID's first 8 characters, enough to tell executions apart on screen."""
    return str(execution_id or "?")[:8]


def mention(subject: str) -> str:
    """A user ID as ``<@U..>``, a user group ID as ``<!subteam^S..>``, anything else escaped.

    (``bot.ops.permissions.mention``, used in refusal messages, trusts its input to be an
    ID: it neither checks the pattern nor escapes. The two are not merged here.)
    """
    if _USER_ID.fullmatch(subject):
        return f"<@{subject}>"
    if _GROUP_ID.fullmatch(subject):
        return f"<!subteam^{subject}>"
    return esc(subject, 40)


# --------------------------------------------------------------------------- revisions


def short_revision(revision: str) -> str:
    """A git SHA as its first 7 characters; other revision IDs cut to 20."""
    if _HEX_REVISION.fullmatch(revision):
        return revision[:7]
    return clip(revision, 20)


def commit_message(summary: Any) -> str | None:
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


def revision_text(revision_id: Any, message: Any) -> str:
    """```abc1234` First line of the message`` (escaped, cut), or '' without a revision.

    ``message`` is a source action's summary; ``commit_message`` finds the line in it.
    """
    if not isinstance(revision_id, str) or not revision_id:
        return ""
    text = code(short_revision(revision_id), 24)
    first = commit_message(message)
    if first:
        text += " " + esc(first, MESSAGE_MAX)
    return text


def source_revisions_text(revisions: Any, limit: int = 2) -> str:
    """An execution's source revisions (``sourceRevisions``), the first ``limit`` of them."""
    if not isinstance(revisions, Sequence) or not revisions:
        return ""
    parts = []
    for revision in list(revisions)[:limit]:
        text = revision_text(revision.get("revisionId"), revision.get("revisionSummary"))
        if text:
            parts.append(text)
    extra = len(revisions) - limit
    if extra > 0 and parts:
        parts.append(f"+{extra} more")
    return ", ".join(parts)


@dataclass(frozen=True)
class Who:
    """Who did what from Slack, as pipebot recorded it (Slack user IDs), for the renderers
    to name where the backend names only its own caller (pipebot's IAM identity on AWS,
    ``pipebot`` on the embedded engine).

    ``started``: execution ID → who started it (``start``, the Start button) or created the
    pipeline that started it; ``disabled``: stage → who disabled the transition into it;
    ``retried``: stage → who last retried it in the execution the stage shows. Filled by
    ``handlers.commands.who_did`` from ``storage.bot_store``.
    """

    started: Mapping[str, str] = field(default_factory=dict)
    disabled: Mapping[str, str] = field(default_factory=dict)
    retried: Mapping[str, str] = field(default_factory=dict)


NOBODY: Final = Who()
"""Nothing known about who did what (every renderer's default)."""

_CALLER_TRIGGERS: Final = frozenset({"StartPipelineExecution", "CreatePipeline", "ManualRollback"})
"""Trigger types whose ``triggerDetail`` is the caller's identity (the user ARN for a
user-initiated start, AWS API reference, ExecutionTrigger)."""


TRIGGER_WORDS: Final = {
    "ManualRollback": "manual rollback",
    "AutomatedRollback": "automatic rollback",
    "WebhookV2": "push matching a trigger filter (WebhookV2)",
}
"""Trigger types (2024 and later) said in words rather than AWS's identifier
(ExecutionTrigger: https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_ExecutionTrigger.html)."""


def caller_text(caller: Any) -> str:
    """An identity the backend recorded (``triggerDetail``, ``lastChangedBy``,
    ``updatedBy``), said as what it is: an ARN is AWS's caller (an IAM user or role, shown as
    code), anything else as it is (the embedded engine writes ``pipebot``)."""
    value = one_line(str(caller or "?"))
    if value.startswith("arn:"):
        return f"AWS caller {code(value, 200)}"
    return esc(value, 120)


def trigger_text(trigger: Any, *, by: str | None = None, capital: bool = False) -> str:
    """What started an execution: ``trigger StartPipelineExecution · started by @alice``
    when ``by`` (a Slack user ID) is known, ``… · started by AWS caller `arn:…``` from the
    trigger detail of a start or a creation, ``trigger PollForSourceChanges (Source@0123abc)``
    for the others. ``capital`` when it begins a line ("Trigger ..."), as the channel's
    parent message says it.
    """
    if not isinstance(trigger, Mapping) or not trigger.get("triggerType"):
        return ""
    kind = str(trigger["triggerType"])
    text = f"{'Trigger' if capital else 'trigger'} {TRIGGER_WORDS.get(kind) or esc(kind, 40)}"
    verb = {"CreatePipeline": "created", "ManualRollback": "rolled back"}.get(kind, "started")
    detail = trigger.get("triggerDetail")
    has_detail = isinstance(detail, str) and bool(detail.strip())
    if by:
        return f"{text} · {verb} by {mention(by)}"
    if has_detail and kind in _CALLER_TRIGGERS:
        return f"{text} · {verb} by {caller_text(detail)}"
    if has_detail:
        text += f" ({esc(one_line(str(detail)), 120)})"
    return text


def rollback_text(execution: Mapping[str, Any] | None) -> str:
    """``↩ Rollback to `3f2c9d1e``` for a rollback execution (executionType ROLLBACK and
    rollbackMetadata), '' otherwise."""
    if not is_rollback(execution):
        return ""
    target = rollback_target_of(execution)
    return "↩ Rollback" + (f" to {code(short_id(target))}" if target else "")


CONDITION_EMOJI: Final = {
    "InProgress": "⏳",
    "Succeeded": "✅",
    "Failed": "❌",
    "Errored": "❌",
    "Cancelled": "🚫",
    "Abandoned": "⏹",
    "Overridden": "⏭",
}
"""Emoji of each condition and rule execution status (ConditionExecutionStatus,
RuleExecutionStatus)."""

CONDITION_LABEL: Final = {"InProgress": "Waiting (in progress)", "Overridden": "Overridden"}


def condition_status_text(status: str | None) -> str:
    """A condition's or rule's status with its emoji, "not run" when it has none."""
    if not status:
        return "⚪ not run"
    return f"{CONDITION_EMOJI.get(status, '⚪')} {CONDITION_LABEL.get(status, esc(status, 30))}"


def stop_reason_text(execution: Mapping[str, Any], limit: int = 220) -> str:
    """``Stop reason: ...`` of a stopped execution (``stopTrigger.reason``), or '' when
    there is none or its status summary already says it (the embedded engine writes
    "Execution abandoned: <reason>" there), so the reason is never shown twice."""
    stop = execution.get("stopTrigger")
    reason = stop.get("reason") if isinstance(stop, Mapping) else None
    if not isinstance(reason, str) or not reason.strip():
        return ""
    reason = one_line(reason)
    summary = execution.get("statusSummary")
    if isinstance(summary, str) and reason in one_line(summary):
        return ""
    return f"Stop reason: {esc(reason, limit)}"


# --------------------------------------------------------------------------- times


def as_utc(when: datetime) -> datetime:
    """``when`` with a time zone: naive datetimes (some stores drop it) are taken as UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def aware(value: Any) -> datetime | None:
    """A timestamp member of a response as an aware datetime; None if it is not one."""
    if not isinstance(value, datetime):
        return None
    return as_utc(value)


def iso(value: Any) -> str | None:
    """A timestamp as ISO 8601 in UTC, for the JSON snapshots the notifier stores."""
    when = aware(value)
    return when.astimezone(UTC).isoformat() if when is not None else None


def parse_iso(value: Any) -> datetime | None:
    """An ``iso`` string back as an aware datetime; None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        return aware(datetime.fromisoformat(value))
    except ValueError:
        return None


def slack_date(when: datetime) -> str:
    """``<!date^EPOCH^{date_short_pretty} {time}|fallback>``: shown in the reader's time zone."""
    moment = as_utc(when)
    fallback = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


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


def ago(when: datetime | None, now: datetime) -> str:
    """``just now``, ``45s ago``, ``12m ago``, ``2h 05m ago``, ``3d 4h ago``."""
    if when is None:
        return ""
    seconds = int((now - when).total_seconds())
    if seconds < 1:
        return "just now"
    if 60 <= seconds < 3600:
        return f"{seconds // 60}m ago"
    return f"{duration(seconds)} ago"


def date_and_ago(when: datetime | None, now: datetime) -> str:
    """``<date> (5m 02s ago)``: the date in the reader's zone, the wait at a glance."""
    if when is None:
        return "unknown time"
    return f"{slack_date(when)} ({ago(when, now)})"


# --------------------------------------------------------------------------- logs


def tail_fit(raw: str, room: int, *, line_room: int | None = None) -> tuple[str, bool]:
    """The end of ``raw``, escaped for a code block, in at most ``room`` characters, whole
    lines where possible; and whether anything was cut.

    ``line_room`` (default ``room``) bounds the whole lines kept: the thread reply of a
    failure has always kept one character spare there, and its output must not move.
    """
    full = fence(raw)
    if len(full) <= room:
        return full, False
    lines_limit = room if line_room is None else line_room
    lines = raw.split("\n")
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        piece = fence(line)
        cost = len(piece) + (1 if kept else 0)
        if size + cost > lines_limit:
            break
        kept.append(piece)
        size += cost
    if kept:
        return "\n".join(reversed(kept)), True
    chars: list[str] = []  # one huge last line: its end, never starting inside an entity
    size = 0
    for char in reversed(lines[-1]):
        piece = ESCAPES.get(char, char)
        if size + len(piece) > room:
            break
        chars.append(piece)
        size += len(piece)
    return defuse("".join(reversed(chars))), True


# --------------------------------------------------------------------------- packing


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


def pack(
    chunks: Sequence[str],
    *,
    max_blocks: int,
    budget: int,
    more: Callable[[int], str],
    sep: str = "\n",
) -> list[Block]:
    """Sections holding the chunks (each at most 3000 characters), within the block and text
    budgets; when some do not fit, the last block is a context note built by ``more(left)``.

    Slack rejects a message past 50 blocks or ``MESSAGE_TEXT_BUDGET``, so long lists are
    cut here, visibly, rather than by Slack.
    """
    chunks = [clip_mrkdwn(c, SECTION_TEXT_MAX) for c in chunks]
    texts, taken = _fill(chunks, max_blocks=max_blocks, budget=budget, sep=sep)
    if taken == len(chunks):
        return [section(t) for t in texts]
    if max_blocks < 1:
        return []
    texts, taken = _fill(
        chunks, max_blocks=max_blocks - 1, budget=max(budget - NOTE_RESERVE, 0), sep=sep
    )
    note = clip_mrkdwn(more(len(chunks) - taken), NOTE_RESERVE)
    return [*(section(t) for t in texts), context(note)]


def fits(chunks: Sequence[str], *, max_blocks: int, budget: int, sep: str = "\n") -> bool:
    """Whether ``pack`` would show every chunk (so a more detailed drawing can be kept)."""
    return _fill(chunks, max_blocks=max_blocks, budget=budget, sep=sep)[1] == len(chunks)


def join_lines(lines: Sequence[str], *, limit: int, more: Callable[[int], str]) -> str:
    """Lines joined by newlines within ``limit`` characters, the rest summarised by ``more``."""
    out: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        cost = len(line) + (1 if out else 0)
        room = limit if index == len(lines) - 1 else limit - NOTE_RESERVE
        if size + cost > room:
            out.append(clip_mrkdwn(more(len(lines) - index), NOTE_RESERVE - 1))
            break
        out.append(line)
        size += cost
    return "\n".join(out)
