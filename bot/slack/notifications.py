"""Channel notifications: the parent message of an execution and its thread replies.

Pure functions, data in and dicts out, no I/O and no clock (``now`` is passed in).
The scheduler reads a pipeline once per tick and, per execution it follows:

1. ``execution_snapshot`` digests GetPipelineState plus the execution's
   ListPipelineExecutions summary into a small JSON-serialisable dict holding
   only what the parent message shows. The scheduler stores it; an equal
   snapshot on the next tick means no chat.update. Nothing in it moves with the
   clock (no elapsed time, no percentComplete): elapsed time is drawn from the
   start time and ``now`` by ``parent_message``, only when something else changed.
2. ``parent_message`` draws the parent from a snapshot.
3. ``snapshot_events`` compares the stored snapshot with the new one and lists
   the thread events between them. Event keys depend only on the data
   (``approval:Stage/Action:<since>``, ``failed:Stage:<action execution id>``,
   ``finished:<end time>``...), so the scheduler can store the keys it posted and never post
   one twice, whatever the tick or process that sees it.
4. ``event_reply`` draws a thread reply; ``resolved_reply`` replaces the buttons
   of an approval or failure reply with its outcome once it was answered anywhere
   (Slack, a command, the AWS console); ``reminder_reply`` nudges approvers;
   ``digest_message`` is the daily digest.

A GetPipelineState stage shows its *latest* execution only. For the execution a
snapshot follows, a stage whose latest execution is another one is: waiting to
enter (this execution is inbound), passed (this execution is in a later stage),
what the previous snapshot saw (the stage ran for this execution and a newer one
has run it since: pass ``previous``), or not reached. Action states in a stage
that this execution holds but that changed before it started belong to an
earlier execution and are left out.

Every message keeps within Slack's Block Kit limits by construction, as in
``bot/blocks.py``: user text is escaped and cut, buttons carry a ``ButtonRef``
and never an approval token.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from bot.slack.blocks import (
    FINISHED_STATUSES,
    MESSAGE_TEXT_BUDGET,
    NO_STATUS_EMOJI,
    OUTCOME_MAX,
    STATUS_EMOJI,
    duration,
    escape,
    fallback_text,
    mention,
    outcome_blocks,
    short_revision,
    slack_date,
)
from bot.slack.ids import APPROVE, REJECT, RETRY_ALL, RETRY_FAILED, VIEW_LOG, ButtonRef
from bot.slack.kit import ESCAPES, MESSAGE_BLOCKS_MAX, SECTION_TEXT_MAX, Block
from bot.slack.kit import actions as _actions
from bot.slack.kit import button as _button
from bot.slack.kit import clip as _clip
from bot.slack.kit import clip_mrkdwn as _clip_mrkdwn
from bot.slack.kit import code as _code
from bot.slack.kit import confirm_dialog as _confirm
from bot.slack.kit import context as _context
from bot.slack.kit import defuse as _defuse
from bot.slack.kit import esc as _esc
from bot.slack.kit import fence as _fence
from bot.slack.kit import header as _header
from bot.slack.kit import one_line as _one_line
from bot.slack.kit import section as _section
from bot.slack.kit import text_size as _text_size

__all__ = [
    "APPROVAL",
    "APPROVAL_RESOLVED",
    "FAILED",
    "FAILURE_RESOLVED",
    "FINISHED",
    "STOPPED",
    "SUPERSEDED",
    "WAITING_FOR_APPROVAL",
    "WAITING_TO_ENTER",
    "Event",
    "digest_message",
    "event_reply",
    "execution_snapshot",
    "parent_message",
    "reminder_reply",
    "resolved_reply",
    "snapshot_events",
]


# Event kinds. The two *_RESOLVED kinds are not replies of their own: they tell the
# scheduler to call ``resolved_reply`` on the reply whose key is ``Event.resolves``.
APPROVAL: Final = "approval"
FAILED: Final = "failed"
FINISHED: Final = "finished"
SUPERSEDED: Final = "superseded"
STOPPED: Final = "stopped"
APPROVAL_RESOLVED: Final = "approval_resolved"
FAILURE_RESOLVED: Final = "failure_resolved"

# Pseudo-statuses a snapshot uses next to CodePipeline's own.
WAITING_FOR_APPROVAL: Final = "WaitingForApproval"
"""An approval action waiting (InProgress with a token)."""
WAITING_TO_ENTER: Final = "WaitingToEnter"
"""A stage this execution is queued to enter (it is among the stage's inbound executions)."""

_NAME_MAX = 100
_SUMMARY_MAX = 300
_MESSAGE_MAX = 100
_RUNNING_SHOWN = 5
_REVISIONS_KEPT = 3
_CUSTOM_DATA_MAX = 1000  # CodePipeline's own CustomData maximum
_MENTIONS_SHOWN = 20
_LOG_MAX = 2500
_NOTE_RESERVE = 300

_SLACK_DECISION = re.compile(
    r"(?:Approved|Rejected) in Slack by .*? \((?P<user>[UW][A-Z0-9]+)\)(?:: (?P<comment>.*))?"
)
"""The summary pipebot writes for a decision made in Slack (handlers.commands)."""
_OPEN_ACTIONS = frozenset({"InProgress", WAITING_FOR_APPROVAL})
_TERMINAL = FINISHED_STATUSES
_STAGE_DONE = frozenset({"Succeeded", "Failed", "Stopped", "Skipped", "Cancelled"})
_EMOJI = {**STATUS_EMOJI, WAITING_FOR_APPROVAL: "⏳", WAITING_TO_ENTER: "⏸"}
_LABEL = {
    "InProgress": "In progress",
    WAITING_FOR_APPROVAL: "Waiting for approval",
    WAITING_TO_ENTER: "Waiting to enter",
}
_NO_STATUS = NO_STATUS_EMOJI
_SAFE_URL = re.compile(r"https?://[^\s<>|]+")


# --------------------------------------------------------------------------- small helpers


def _name(value: Any, limit: int = _NAME_MAX) -> str:
    return _esc(_one_line(str(value)) if value is not None else "?", limit)


def _short(execution_id: str) -> str:
    return execution_id[:8] or "?"


def _emoji(status: str | None) -> str:
    return _EMOJI.get(status or "", _NO_STATUS)


def _label(status: str | None) -> str:
    return _LABEL.get(status or "", status or "Not run")


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _iso(value: Any) -> str | None:
    when = _aware(value)
    return when.astimezone(UTC).isoformat() if when is not None else None


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return _aware(datetime.fromisoformat(value))
    except ValueError:
        return None


def _text(value: Any, limit: int) -> str | None:
    """A non-empty string cut to ``limit`` (raw, escaped when drawn), else None."""
    if not isinstance(value, str) or not value.strip():
        return None
    return _clip(value.strip(), limit)


def _commit_message(summary: Any) -> str | None:
    """First line of a commit message; CodeStar connections wrap it in JSON."""
    text = _text(summary, 4000)
    if text is None:
        return None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("CommitMessage"), str):
            text = data["CommitMessage"].strip()
    first = text.splitlines()[0].strip() if text.splitlines() else ""
    return _clip(first, 200) if first else None


def _pack_lines(lines: Sequence[str], *, max_blocks: int, budget: int, more: str) -> list[Block]:
    """Sections of whole lines (each section at most 3000 characters) within the block and
    text budgets; when lines are left over, a context note ``more`` (``{n}`` = how many)."""

    def fill(blocks_left: int, room: int) -> tuple[list[str], int]:
        texts: list[str] = []
        used = 0
        for taken, raw in enumerate(lines):
            line = _clip_mrkdwn(raw, SECTION_TEXT_MAX)
            if texts and len(texts[-1]) + 1 + len(line) <= SECTION_TEXT_MAX:
                if used + 1 + len(line) > room:
                    return texts, taken
                texts[-1] += "\n" + line
                used += 1 + len(line)
            else:
                if len(texts) >= blocks_left or used + len(line) > room:
                    return texts, taken
                texts.append(line)
                used += len(line)
        return texts, len(lines)

    texts, taken = fill(max_blocks, budget)
    if taken == len(lines):
        return [_section(t) for t in texts]
    texts, taken = fill(max_blocks - 1, budget - _NOTE_RESERVE)
    note = _clip_mrkdwn(more.format(n=len(lines) - taken), _NOTE_RESERVE)
    return [*(_section(t) for t in texts), _context(note)]


def _mentions(subjects: Sequence[str]) -> str:
    shown = [mention(s) for s in subjects[:_MENTIONS_SHOWN]]
    extra = len(subjects) - len(shown)
    return ", ".join(shown) + (f" and {extra} more" if extra > 0 else "")


def _log_tail(raw: str, room: int) -> tuple[str, bool]:
    """The end of ``raw`` for a code block in at most ``room`` characters, whole lines where
    possible; and whether anything was cut."""
    full = _fence(raw)
    if len(full) <= room:
        return full, False
    kept: list[str] = []
    size = 0
    lines = raw.split("\n")
    for line in reversed(lines):
        piece = _fence(line)
        if size + len(piece) + 1 > room:
            break
        kept.append(piece)
        size += len(piece) + 1
    if kept:
        return "\n".join(reversed(kept)), True
    chars: list[str] = []
    for char in reversed(lines[-1]):
        piece = ESCAPES.get(char, char)
        if size + len(piece) > room:
            break
        chars.append(piece)
        size += len(piece)
    return _defuse("".join(reversed(chars))), True


def _message(blocks: list[Block], **extra: Any) -> dict[str, Any]:
    return {"text": fallback_text(blocks=blocks), "blocks": blocks, **extra}


# --------------------------------------------------------------------------- snapshot


def _inbound_ids(stage: Mapping[str, Any]) -> set[str]:
    many = stage.get("inboundExecutions") or []
    one = stage.get("inboundExecution")
    entries = [*many, *([one] if one else [])]
    return {str(e.get("pipelineExecutionId")) for e in entries if e.get("pipelineExecutionId")}


def _action_digest(action: Mapping[str, Any], *, started: datetime | None) -> dict[str, Any] | None:
    """One action of a stage this execution holds, or None if it has not run in it."""
    latest = action.get("latestExecution") or {}
    status = latest.get("status")
    if not status:
        return None
    changed = _aware(latest.get("lastStatusChange"))
    if started is not None and changed is not None and changed < started:
        return None  # its latest run belongs to an earlier execution
    digest: dict[str, Any] = {"name": str(action.get("actionName") or "?"), "status": status}
    if status == "InProgress":
        if latest.get("token"):
            digest["status"] = WAITING_FOR_APPROVAL
        digest["since"] = _iso(changed)
    elif status in ("Failed", "Abandoned"):
        error = latest.get("errorDetails") or {}
        digest["id"] = latest.get("actionExecutionId")
        digest["summary"] = _text(latest.get("summary") or error.get("message"), _SUMMARY_MAX)
    elif status == "Succeeded" and latest.get("lastUpdatedBy"):
        # Who answered an approval, and their comment: the outcome of an approval reply.
        digest["by"] = _text(latest.get("lastUpdatedBy"), 200)
        digest["summary"] = _text(latest.get("summary"), _SUMMARY_MAX)
    return digest


def _detail_digest(detail: Mapping[str, Any]) -> dict[str, Any] | None:
    """One action from its ListActionExecutions detail, shaped like ``_action_digest``."""
    status = detail.get("status")
    if not status:
        return None
    digest: dict[str, Any] = {"name": str(detail.get("actionName") or "?"), "status": status}
    result = (detail.get("output") or {}).get("executionResult") or {}
    summary = _text(result.get("externalExecutionSummary"), _SUMMARY_MAX)
    if status == "InProgress":
        digest["since"] = _iso(detail.get("lastUpdateTime") or detail.get("startTime"))
    elif status in ("Failed", "Abandoned"):
        digest["id"] = detail.get("actionExecutionId")
        digest["summary"] = summary
    elif status == "Succeeded" and detail.get("updatedBy"):
        digest["by"] = _text(detail.get("updatedBy"), 200)
        digest["summary"] = summary
    return digest


def needs_action_details(snapshot: Mapping[str, Any], previous: Mapping[str, Any] | None) -> bool:
    """Whether a stage this execution was last seen running actions in no longer shows
    them (a newer execution entered it): their outcome then comes from ListActionExecutions."""
    shown = {str(s.get("name")): s for s in snapshot.get("stages") or []}
    for stage in (previous or {}).get("stages") or []:
        had = [a for a in stage.get("actions") or [] if a.get("status") in _OPEN_ACTIONS]
        now = shown.get(str(stage.get("name"))) or {}
        if had and not now.get("actions"):
            return True
    return False


def execution_snapshot(
    *,
    pipeline: str,
    state: Mapping[str, Any],
    summary: Mapping[str, Any],
    started_by: str | None,
    previous: Mapping[str, Any] | None = None,
    action_details: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """What the parent message of one execution shows, as a small JSON-serialisable dict.

    ``state`` is GetPipelineState, ``summary`` the execution's ListPipelineExecutions
    summary, ``started_by`` a Slack user ID when started from Slack. ``previous`` is the
    snapshot stored for this execution, if any: it keeps the result of stages a newer
    execution has run since (the state no longer shows them). Equal inputs give equal
    snapshots; nothing in it changes with the clock. Read ``summary`` before ``state``:
    the state is then never behind the summary (a finished execution with a stage still
    running would otherwise be stored as its last snapshot). ``action_details`` (this
    execution's ListActionExecutions, when ``needs_action_details``) fill in the actions
    of stages a newer execution has entered since.
    """
    latest_detail: dict[tuple[str, str], Mapping[str, Any]] = {}
    for detail in action_details or []:  # oldest first: the last attempt wins
        latest_detail[(str(detail.get("stageName")), str(detail.get("actionName")))] = detail
    execution_id = str(summary.get("pipelineExecutionId") or "?")
    status = str(summary.get("status") or "InProgress")
    started = _aware(summary.get("startTime"))
    stages_in: list[Mapping[str, Any]] = list(state.get("stageStates") or [])
    before: dict[str, Mapping[str, Any]] = {
        str(s.get("name")): s for s in (previous or {}).get("stages") or []
    }

    holds = [
        (s.get("latestExecution") or {}).get("pipelineExecutionId") == execution_id
        or execution_id in _inbound_ids(s)
        for s in stages_in
    ]
    stages: list[dict[str, Any]] = []
    for index, stage in enumerate(stages_in):
        name = str(stage.get("stageName") or "?")
        latest = stage.get("latestExecution") or {}
        entry: dict[str, Any] = {"name": name, "status": None, "actions": []}
        if latest.get("pipelineExecutionId") == execution_id:
            entry["status"] = latest.get("status")
            entry["actions"] = [
                d
                for d in (
                    _action_digest(a, started=started) for a in stage.get("actionStates") or []
                )
                if d is not None
            ]
        elif execution_id in _inbound_ids(stage):
            entry["status"] = WAITING_TO_ENTER
        else:
            details = [d for (st, _), d in latest_detail.items() if st == name]
            entry["actions"] = [x for x in (_detail_digest(d) for d in details) if x is not None]
            seen = before.get(name, {}).get("status")
            if seen in _STAGE_DONE:
                entry["status"] = seen
            elif any(holds[index + 1 :]):
                entry["status"] = "Succeeded"  # passed: this execution is further on
            elif seen in ("InProgress", WAITING_TO_ENTER) and status in ("Superseded", "Stopped"):
                entry["status"] = status
            if entry["status"] is None and entry["actions"]:
                found = {a["status"] for a in entry["actions"]}
                entry["status"] = next(
                    (s for s in ("Failed", "InProgress", "Stopped") if s in found),
                    "Succeeded" if found == {"Succeeded"} else None,
                )
        stages.append(entry)

    revisions = [
        {
            "action": r.get("actionName"),
            "id": str(r["revisionId"]),
            "message": _commit_message(r.get("revisionSummary")),
        }
        for r in list(summary.get("sourceRevisions") or [])[:_REVISIONS_KEPT]
        if r.get("revisionId")
    ]
    trigger = summary.get("trigger") or {}
    return {
        "pipeline": pipeline,
        "execution": execution_id,
        "status": status,
        "statusSummary": _text(summary.get("statusSummary"), _SUMMARY_MAX),
        "trigger": _text(trigger.get("triggerType"), 60),
        "triggerDetail": _text(trigger.get("triggerDetail"), 200),
        "startedBy": started_by,
        "revisions": revisions,
        "moreRevisions": max(len(summary.get("sourceRevisions") or []) - _REVISIONS_KEPT, 0),
        "started": _iso(started),
        "ended": _iso(summary.get("lastUpdateTime")) if status in _TERMINAL else None,
        "stopReason": _text((summary.get("stopTrigger") or {}).get("reason"), _SUMMARY_MAX),
        "stages": stages,
    }


# --------------------------------------------------------------------------- parent message


def _took(snapshot: Mapping[str, Any], now: datetime) -> str | None:
    started = _parse(snapshot.get("started"))
    if started is None:
        return None
    ended = _parse(snapshot.get("ended")) or now
    return duration((ended - started).total_seconds())


def _who(subject: str) -> str:
    """A Slack user or group ID as a mention, anything else (an ARN) escaped."""
    return mention(subject) if subject else "?"


def _stage_line(stage: Mapping[str, Any], *, finished: bool, now: datetime, compact: bool) -> str:
    status = stage.get("status")
    actions: list[Mapping[str, Any]] = list(stage.get("actions") or [])
    approvals = [a for a in actions if a.get("status") == WAITING_FOR_APPROVAL]
    running = [a for a in actions if a.get("status") == "InProgress"]
    failed = [a for a in actions if a.get("status") in ("Failed", "Abandoned")]
    shown = WAITING_FOR_APPROVAL if approvals and not running else status
    label = ("Not reached" if finished else "Pending") if status is None else _label(shown)
    line = f"{_emoji(shown)} *{_name(stage.get('name'))}* · {label}"
    if compact:
        return line
    if approvals:
        first = approvals[0]
        since = _parse(first.get("since"))
        line += f" · {_name(first.get('name'))}"
        if since is not None:
            line += f" since {slack_date(since)}"
        if len(approvals) > 1:
            line += f" (+{len(approvals) - 1} more)"
    if running:
        names = ", ".join(_name(a.get("name"), 60) for a in running[:_RUNNING_SHOWN])
        extra = len(running) - _RUNNING_SHOWN
        line += f" · running {names}" + (f" +{extra} more" if extra > 0 else "")
        starts = [t for t in (_parse(a.get("since")) for a in running) if t is not None]
        if starts:
            line += f" · {duration((now - min(starts)).total_seconds())}"
    for action in failed[:2]:
        line += f" · {_emoji(action.get('status'))} {_name(action.get('name'), 60)}"
        if action.get("summary"):
            line += " — " + _esc(_one_line(str(action["summary"])), _SUMMARY_MAX)
    return line


def _revision_line(snapshot: Mapping[str, Any]) -> str | None:
    parts = []
    for revision in snapshot.get("revisions") or []:
        text = _code(short_revision(str(revision.get("id"))), 24)
        if revision.get("message"):
            text += " " + _esc(str(revision["message"]), _MESSAGE_MAX)
        parts.append(text)
    if not parts:
        return None
    more = snapshot.get("moreRevisions") or 0
    return ", ".join(parts) + (f" +{more} more" if more else "")


def parent_message(*, snapshot: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The parent message of an execution (``text`` fallback and ``blocks``)."""
    pipeline = str(snapshot.get("pipeline") or "?")
    execution_id = str(snapshot.get("execution") or "?")
    status = snapshot.get("status")
    finished = status in _TERMINAL
    blocks: list[Block] = [_header(f"{pipeline} · {_short(execution_id)}")]

    head = f"{_emoji(status)} *{_label(status)}*"
    took = _took(snapshot, now)
    started = _parse(snapshot.get("started"))
    if finished and took is not None:
        head += f" in {took}"
    elif took is not None:
        head += f" for {took}"
    if started is not None:
        head += f" · started {slack_date(started)}"
    lines = [head]
    facts = []
    if snapshot.get("trigger"):
        trigger = f"Trigger {_esc(str(snapshot['trigger']), 60)}"
        if snapshot.get("triggerDetail") and not snapshot.get("startedBy"):
            trigger += f" ({_esc(_one_line(str(snapshot['triggerDetail'])), 120)})"
        facts.append(trigger)
    if snapshot.get("startedBy"):
        facts.append(f"started by {_who(str(snapshot['startedBy']))}")
    if facts:
        lines.append(" · ".join(facts))
    revision = _revision_line(snapshot)
    if revision:
        lines.append(revision)
    if snapshot.get("statusSummary"):
        lines.append("_" + _esc(_one_line(str(snapshot["statusSummary"])), _SUMMARY_MAX) + "_")
    if status in ("Stopped", "Stopping") and snapshot.get("stopReason"):
        lines.append(f"Stop reason: {_esc(_one_line(str(snapshot['stopReason'])), 220)}")
    blocks.append(_section("\n".join(lines)))

    footer = _context(f"Execution {_code(execution_id)}")
    stages: list[Mapping[str, Any]] = list(snapshot.get("stages") or [])
    max_blocks = MESSAGE_BLOCKS_MAX - len(blocks) - 1
    budget = MESSAGE_TEXT_BUDGET - OUTCOME_MAX - _text_size(blocks) - _text_size(footer)
    if not stages:
        middle = [_section("_No stage has run yet._")]
    else:
        full = [_stage_line(s, finished=finished, now=now, compact=False) for s in stages]
        if sum(len(line) + 1 for line in full) <= budget:
            chosen = full
        else:  # long pipelines: every stage on a short line
            chosen = [_stage_line(s, finished=finished, now=now, compact=True) for s in stages]
        middle = _pack_lines(
            chosen, max_blocks=max_blocks, budget=budget, more="…and {n} more stages."
        )
    blocks = [*blocks, *middle, footer]
    return _message(blocks)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    """A thread event between two snapshots. ``key`` is stable: the same event has the
    same key whichever tick or process sees it, so the scheduler posts each key once."""

    key: str
    kind: str
    stage: str | None = None
    action: str | None = None
    since: str | None = None
    """ISO time the approval started waiting."""
    action_execution_id: str | None = None
    summary: str | None = None
    status: str | None = None
    started: str | None = None
    ended: str | None = None
    reason: str | None = None
    resolves: str | None = None
    """For *_RESOLVED: the key of the reply whose buttons give way to ``outcome``."""
    outcome: str | None = None
    """For *_RESOLVED: the mrkdwn line for ``resolved_reply``."""


def _approvals(snapshot: Mapping[str, Any] | None) -> dict[str, tuple[str, str, str | None]]:
    found: dict[str, tuple[str, str, str | None]] = {}
    for stage in (snapshot or {}).get("stages") or []:
        for action in stage.get("actions") or []:
            if action.get("status") == WAITING_FOR_APPROVAL:
                stage_name, action_name = str(stage.get("name")), str(action.get("name"))
                key = f"approval:{stage_name}/{action_name}:{action.get('since') or ''}"
                found[key] = (stage_name, action_name, action.get("since"))
    return found


def _failures(snapshot: Mapping[str, Any] | None) -> dict[str, tuple[str, Mapping[str, Any]]]:
    found: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for stage in (snapshot or {}).get("stages") or []:
        failed = [a for a in stage.get("actions") or [] if a.get("status") in ("Failed",)]
        if stage.get("status") != "Failed" or not failed:
            continue
        first = failed[0]
        ident = (
            first.get("id")
            or hashlib.sha256(f"{first.get('name')}|{first.get('summary')}".encode()).hexdigest()[
                :12
            ]
        )
        found[f"failed:{stage.get('name')}:{ident}"] = (str(stage.get("name")), first)
    return found


def _action_in(snapshot: Mapping[str, Any], stage: str, action: str) -> Mapping[str, Any]:
    for entry in snapshot.get("stages") or []:
        if entry.get("name") == stage:
            for item in entry.get("actions") or []:
                if item.get("name") == action:
                    return dict(item)
    return {}


def _stage_status(snapshot: Mapping[str, Any], stage: str) -> str | None:
    for entry in snapshot.get("stages") or []:
        if entry.get("name") == stage:
            status = entry.get("status")
            return str(status) if status else None
    return None


def decision_outcome(
    *, stage: str, action: str, approved: bool, user_id: str, comment: str | None
) -> str:
    """The outcome line of an approval decided in Slack, as its thread reply shows it:
    the same whether the click's own answer or the notifier draws it last."""
    where = f"{_name(stage)} / {_name(action)}"
    said = f": “{_esc(_one_line(comment), 400)}”" if comment else ""
    if approved:
        return f"✅ Approved {where} by {mention(user_id)}{said}"
    return f"❌ Rejected {where} by {mention(user_id)}{said}"


def _approval_outcome(after: Mapping[str, Any], stage: str, action: str) -> str:
    where = f"{_name(stage)} / {_name(action)}"
    found = _action_in(after, stage, action)
    status = found.get("status")
    by = f" by {_who(str(found['by']))}" if found.get("by") else ""
    summary = str(found.get("summary") or "")
    comment = (
        f": “{_esc(_one_line(summary), 400)}”"
        if summary and summary not in ("Approved", "Rejected")
        else ""
    )
    slack = _SLACK_DECISION.fullmatch(_one_line(summary))
    if slack is not None and status in ("Succeeded", "Failed"):
        # Decided in Slack: name the person, not the bot's identity.
        return decision_outcome(
            stage=stage,
            action=action,
            approved=status == "Succeeded",
            user_id=slack["user"],
            comment=slack["comment"],
        )
    if status == "Succeeded":
        return f"✅ Approved {where}{by}{comment}"
    if status == "Failed":
        return f"❌ Rejected {where}{by}{comment}"
    if status == "InProgress":
        return f"⏹ The approval {where} was replaced (the stage was retried)"
    execution = after.get("status")
    if execution in ("Superseded", "Stopped", "Stopping", "Cancelled"):
        return (
            f"{_emoji(execution)} No longer needed: the execution was {_label(execution).lower()}"
        )
    return f"⏹ The approval {where} is no longer waiting"


def _failure_outcome(after: Mapping[str, Any], stage: str) -> str:
    status = _stage_status(after, stage)
    if status in ("InProgress", "Succeeded", WAITING_TO_ENTER):
        return f"🔁 {_name(stage)} was retried"
    if status == "Failed":
        return f"❌ {_name(stage)} failed again"
    if status is None or after.get("status") == "Superseded":
        return f"↷ {_name(stage)} can no longer be retried: a newer execution ran it"
    return f"{_emoji(status)} {_name(stage)} is {_label(status).lower()}"


def snapshot_events(*, before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[Event]:
    """The thread events between two snapshots of one execution, in a fixed order:
    resolutions, then new failures and approvals (pipeline order), then the end.

    ``before`` is None for the first snapshot: what it already shows is an event.
    Comparing a snapshot with itself gives no event.
    """
    events: list[Event] = []
    old_approvals, new_approvals = _approvals(before), _approvals(after)
    old_failures, new_failures = _failures(before), _failures(after)

    for key, (stage, action, _since) in old_approvals.items():
        if key not in new_approvals:
            events.append(
                Event(
                    key=f"{key}:resolved",
                    kind=APPROVAL_RESOLVED,
                    stage=stage,
                    action=action,
                    resolves=key,
                    outcome=_approval_outcome(after, stage, action),
                )
            )
    for key, (stage, _failed) in old_failures.items():
        if key not in new_failures:
            events.append(
                Event(
                    key=f"{key}:resolved",
                    kind=FAILURE_RESOLVED,
                    stage=stage,
                    resolves=key,
                    outcome=_failure_outcome(after, stage),
                )
            )
    for key, (stage, failed) in new_failures.items():
        if key not in old_failures:
            events.append(
                Event(
                    key=key,
                    kind=FAILED,
                    stage=stage,
                    action=str(failed.get("name")),
                    action_execution_id=failed.get("id"),
                    summary=failed.get("summary"),
                )
            )
    for key, (stage, action, since) in new_approvals.items():
        if key not in old_approvals:
            events.append(Event(key=key, kind=APPROVAL, stage=stage, action=action, since=since))

    status = after.get("status")
    was = (before or {}).get("status")
    if status in _TERMINAL and was not in _TERMINAL:
        kind = {"Superseded": SUPERSEDED, "Stopped": STOPPED}.get(str(status), FINISHED)
        # An execution can end more than once (a failed one retried): the end time tells
        # the ends apart and stays the same on every later tick.
        events.append(
            Event(
                key=f"{kind}:{after.get('ended') or status}",
                kind=kind,
                status=str(status),
                started=after.get("started"),
                ended=after.get("ended"),
                reason=after.get("stopReason") if kind == STOPPED else after.get("statusSummary"),
            )
        )
    return events


# --------------------------------------------------------------------------- replies


def _where(event: Event) -> str:
    return f"*{_name(event.stage)}* / *{_name(event.action)}*"


def _approval_blocks(
    *,
    event: Event,
    pipeline: str,
    execution_id: str,
    approvers: Sequence[str],
    custom_data: str | None,
    external_link: str | None,
) -> list[Block]:
    since = _parse(event.since)
    text = f"⏳ *Approval needed:* {_where(event)} in *{_name(pipeline)}*"
    text += f"\nExecution {_code(_short(execution_id))}"
    if since is not None:
        text += f" · waiting since {slack_date(since)}"
    if approvers:
        text += f"\nApprovers: {_mentions(approvers)}"
    blocks = [_section(text)]
    details = []
    data = _text(custom_data, _CUSTOM_DATA_MAX)
    if data:
        details.append("*Details:* " + _esc(data, 1200))
    link = (external_link or "").strip()
    if link and len(link) <= 1000 and _SAFE_URL.fullmatch(link):
        details.append(f"<{escape(link)}|Open the review link>")
    elif link:
        details.append(f"Review link: {_esc(link, 300)}")
    if details:
        blocks.append(_section("\n".join(details)))
    stage, action = event.stage or "?", event.action or "?"
    ref = ButtonRef(pipeline=pipeline, execution=execution_id, stage=stage, action=action)
    confirm = _confirm(
        title="Approve?",
        text=(
            f"Approve {_clip(stage, 60)} / {_clip(action, 60)} of {_clip(pipeline, 60)} "
            f"(execution {_short(execution_id)})? The execution continues past this gate."
        ),
        confirm="Approve",
    )
    confirm["style"] = "primary"
    blocks += _actions(
        [
            _button(text="Approve", action_id=APPROVE, ref=ref, style="primary", confirm=confirm),
            _button(text="Reject", action_id=REJECT, ref=ref, style="danger"),
        ]
    )
    return blocks


def _failed_blocks(
    *, event: Event, pipeline: str, execution_id: str, log_tail: str | None
) -> list[Block]:
    stage = event.stage or "?"
    text = f"❌ *Stage failed:* *{_name(stage)}* · action *{_name(event.action)}*"
    text += f" · execution {_code(_short(execution_id))}"
    if event.summary:
        text += "\n" + _esc(_one_line(event.summary), _SUMMARY_MAX)
    blocks = [_section(text)]
    if log_tail is not None and log_tail.strip():
        title = "*Log tail:*"
        body, cut = _log_tail(log_tail.rstrip("\n"), _LOG_MAX)
        blocks.append(_section(f"{title}\n```\n{'…' + chr(10) if cut else ''}{body}\n```"))
    ref = ButtonRef(pipeline=pipeline, execution=execution_id, stage=stage)
    question = (
        f"Retry {_clip(stage, 60)} of {_clip(pipeline, 60)} (execution {_short(execution_id)})?"
    )
    buttons = [
        _button(
            text="Retry failed",
            action_id=RETRY_FAILED,
            ref=ref,
            style="primary",
            confirm=_confirm(
                title="Retry failed actions?",
                text=f"{question} Only the failed actions run again.",
                confirm="Retry",
            ),
        ),
        _button(
            text="Retry all",
            action_id=RETRY_ALL,
            ref=ref,
            confirm=_confirm(
                title="Retry all actions?",
                text=f"{question} Every action of the stage runs again.",
                confirm="Retry all",
            ),
        ),
    ]
    if event.action:
        buttons.append(
            _button(
                text="View log",
                action_id=VIEW_LOG,
                ref=ButtonRef(
                    pipeline=pipeline, execution=execution_id, stage=stage, action=event.action
                ),
            )
        )
    return [*blocks, *_actions(buttons)]


def _end_blocks(*, event: Event, pipeline: str, execution_id: str) -> list[Block]:
    status = event.status
    started, ended = _parse(event.started), _parse(event.ended)
    took = duration((ended - started).total_seconds()) if started and ended else None
    where = f"*{_name(pipeline)}* · execution {_code(_short(execution_id))}"
    if event.kind == SUPERSEDED:
        text = f"{_emoji(status)} *Superseded* by a newer execution: {where}"
        if took:
            text += f" · after {took}"
    elif event.kind == STOPPED:
        text = f"{_emoji(status)} *Stopped:* {where}"
        if took:
            text += f" · after {took}"
        if event.reason:
            text += f"\n“{_esc(_one_line(event.reason), _SUMMARY_MAX)}”"
    else:
        text = f"{_emoji(status)} *{_label(status)}:* {where}"
        if took:
            text += f" · took {took}"
        if event.reason:
            text += f"\n_{_esc(_one_line(event.reason), _SUMMARY_MAX)}_"
    return [_section(text)]


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
) -> dict[str, Any]:
    """The thread reply for an event: ``text``, ``blocks`` and ``reply_broadcast`` (True
    for an approval, so the channel sees it). ``approvers`` are user or group IDs to
    mention; ``custom_data`` and ``external_link`` come from the approval action's
    configuration; ``log_tail`` is the failed action's log. ValueError for *_RESOLVED
    events, which edit a reply (``resolved_reply``) instead of posting one."""
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
            event=event, pipeline=pipeline, execution_id=execution_id, log_tail=log_tail
        )
        return _message(blocks, reply_broadcast=False)
    if event.kind in (FINISHED, SUPERSEDED, STOPPED):
        blocks = _end_blocks(event=event, pipeline=pipeline, execution_id=execution_id)
        return _message(blocks, reply_broadcast=False)
    raise ValueError(f"event {event.kind!r} has no reply of its own: use resolved_reply")


def resolved_reply(*, original_blocks: Sequence[Mapping[str, Any]], outcome: str) -> list[Block]:
    """An approval or failure reply with Approve/Reject/Retry replaced by ``outcome``
    (mrkdwn, e.g. ``Event.outcome`` or ``bot.slack.blocks.approval_outcome_text``);
    View log stays."""
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
        f"⏰ *Reminder:* *{_name(stage)}* / *{_name(action)}* in *{_name(pipeline)}* "
        f"(execution {_code(_short(execution_id))}) has waited {waited} for approval."
    )
    if final:
        text += "\n⚠️ It times out soon: without an answer the approval fails and so does the run."
    if approvers:
        text += f"\n{_mentions(approvers)}"
    blocks = [_section(text), _context("Approve or reject with the buttons above in this thread.")]
    return _message(blocks, reply_broadcast=final)


# --------------------------------------------------------------------------- digest


def _pipeline_digest(
    name: str, summaries: Sequence[Mapping[str, Any]] | str, since: datetime
) -> str:
    head = f"*{_name(name)}*"
    if isinstance(summaries, str):
        return f"{head} · :warning: could not be read: {_esc(summaries, 200)}"
    recent = [
        s
        for s in summaries
        if (_aware(s.get("startTime")) or datetime.min.replace(tzinfo=UTC)) >= since
    ]
    if not recent:
        return f"{head} · no executions"
    counts: dict[str, int] = {}
    for summary in recent:
        status = str(summary.get("status") or "?")
        counts[status] = counts.get(status, 0) + 1
    finished = [s for s in recent if s.get("status") in _TERMINAL]
    succeeded = counts.get("Succeeded", 0)
    parts = [f"{len(recent)} execution{'s' if len(recent) != 1 else ''}"]
    decided = sum(counts.get(s, 0) for s in ("Succeeded", "Failed", "Stopped", "Cancelled"))
    if decided:
        parts.append(f"{round(100 * succeeded / decided)}% success ({succeeded}/{decided})")
    durations = [
        (end - start).total_seconds()
        for s in finished
        if s.get("status") == "Succeeded"
        for start, end in [(_aware(s.get("startTime")), _aware(s.get("lastUpdateTime")))]
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
    blocks: list[Block] = [_header("Daily pipeline digest")]
    footer = _context(f"Executions started since {slack_date(since)}")
    if not channel_pipelines:
        middle = [_section("_This channel follows no pipeline._")]
    else:
        lines = [_pipeline_digest(name, summaries, since) for name, summaries in channel_pipelines]
        middle = _pack_lines(
            lines,
            max_blocks=MESSAGE_BLOCKS_MAX - 2,
            budget=MESSAGE_TEXT_BUDGET - _text_size(blocks) - _text_size(footer),
            more="…and {n} more pipelines.",
        )
    return _message([*blocks, *middle, footer])
