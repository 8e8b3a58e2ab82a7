"""Who may do what (``access NAME``) and what they did (``audit [NAME]``), and the words
for what the audit log records (its ``what`` is a command's name, a button's action ID or a
form's name: ``OPERATIONS_*`` group them for ``storage.bot_store.last_actor``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final, Protocol

from bot.slack import ids
from bot.slack.kit import (
    MESSAGE_BLOCKS_MAX,
    MESSAGE_TEXT_BUDGET,
    Block,
    clip_mrkdwn,
    code,
    context,
    esc,
    escape,
    header,
    one_line,
    section,
    text_size,
)
from bot.slack.text import NAME_MAX, join_lines, mention, name, pack, short_id, slack_date

_CHANNEL_ID: Final = re.compile(r"[CGD][A-Z0-9]{2,}")
_MARKUP: Final = re.compile(
    r"<(@[UW][A-Z0-9]{2,}|!subteam\^S[A-Z0-9]{2,}|#[CG][A-Z0-9]{2,})(?:\|[^<>]*)?>"
)
"""A user, user group or channel mention in an audit detail (refusals name who may act)."""

OPERATIONS_STARTED: Final = ("start", ids.START)
"""Audit ``what``s of starting an execution: the command and the Start button."""
OPERATIONS_RETRIED: Final = ("retry", ids.RETRY_FAILED, ids.RETRY_ALL)
"""Audit ``what``s of retrying a stage: the command and both Retry buttons."""
OPERATIONS_DISABLED: Final = ("disable",)
"""Audit ``what``s of disabling a transition (the command only)."""
OPERATIONS_STOPPED: Final = ("stop",)
"""Audit ``what``s of stopping an execution: the command and the Stop form."""
OPERATIONS_CREATED: Final = ("create",)
"""Audit ``what``s of creating a pipeline: the command and the Create form."""

OPERATOR_RIGHTS: Final = (
    "start, stop, retry, rollback, override, enable/disable, create, edit, delete, "
    "subscribe/unsubscribe"
)
"""What operators may do, as help and the access card say it (every ``operate`` command of
``handlers.grammar.REGISTRY``: a test keeps them together)."""
APPROVER_RIGHTS: Final = "approve, reject"
"""What approvers may do."""

_BUTTON_WORDS: Final[Mapping[str, str]] = {
    ids.START: "Start",
    ids.STOP: "Stop",
    ids.RETRY_FAILED: "Retry failed actions",
    ids.RETRY_ALL: "Retry all actions",
    ids.APPROVE: "Approve",
    ids.REJECT: "Reject",
    ids.VIEW_LOG: "View log",
    ids.DELETE_CONFIRM: "Delete",
    ids.DELETE_CANCEL: "Cancel",
    ids.REFRESH_STATUS: "Refresh",
    ids.ROLLBACK: "Roll back",
    ids.ROLLBACK_CONFIRM: "Roll back (confirmed)",
    ids.ROLLBACK_CANCEL: "Cancel rollback",
    ids.OVERRIDE: "Override condition",
}
_NOTIFIER_WORDS: Final[Mapping[str, str]] = {
    "suspend": "suspended the channel's subscription",
    "deleted": "found the pipeline deleted",
}
_OUTCOME_WORDS: Final[Mapping[str, str]] = {"ok": "done", "refused": "refused", "error": "failed"}


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
        f"*Operators* ({OPERATOR_RIGHTS}): {operator_text}",
        f"*Approvers* ({APPROVER_RIGHTS}): {approver_text}",
        "*Self-approval:* "
        + (
            "refused (whoever started an execution cannot approve it)"
            if no_self_approval
            else "allowed"
        ),
    ]
    cmd = escape(command)
    # Suggest the switch that changes something: `off` while self-approval is allowed.
    switch = "on" if no_self_approval else "off"
    return [
        header(f"Access to {pipeline}"),
        section("\n".join(lines)),
        section(admin_text),
        context(
            f"`{cmd} access {esc(pipeline, NAME_MAX)} operators add @someone` · "
            f"`{cmd} access {esc(pipeline, NAME_MAX)} self-approval {switch}`"
        ),
    ]


def _mentions(subjects: Sequence[str], *, limit: int = 1500) -> str:
    """Every subject as a mention, comma-separated, within ``limit`` characters."""
    return join_lines(
        [mention(s) for s in subjects],
        limit=limit,
        more=lambda n: f"and {n} more",
    ).replace("\n", ", ")


class AuditRecord(Protocol):
    """What ``audit_blocks`` reads from an audit row (``storage.models.AuditEntry``)."""

    @property
    def at(self) -> datetime: ...
    @property
    def user_id(self) -> str: ...
    @property
    def channel_id(self) -> str | None: ...
    @property
    def kind(self) -> str: ...
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


def audit_blocks(
    *, entries: Sequence[AuditRecord], pipeline: str | None = None, command: str = "/pipeline"
) -> list[Block]:
    """Recent audit entries, newest first (``audit [NAME]``): who did what, in words."""
    title = f"Audit · {pipeline}" if pipeline else "Audit"
    blocks: list[Block] = [header(title)]
    if not entries:
        return [*blocks, section("_Nothing recorded yet._")]
    blocks += pack(
        [_audit_line(e, command=command) for e in entries],
        max_blocks=MESSAGE_BLOCKS_MAX - len(blocks),
        budget=MESSAGE_TEXT_BUDGET - text_size(blocks),
        more=lambda n: f"…and {n} more entr{'ies' if n != 1 else 'y'} not shown.",
    )
    return blocks


def operation_words(kind: str, what: str, *, command: str = "/pipeline") -> str:
    """What an audit entry records, as the audit log says it (mrkdwn): ``ran `/pipeline
    start` ``, ``clicked *Approve*``, ``submitted the *Reject* form``."""
    if kind == "command":
        return f"ran {code(f'{command} {what}', 60)}"
    if kind == "click":
        label = _BUTTON_WORDS.get(what)
        return f"clicked *{label}*" if label else f"clicked {code(what, 60)}"
    if kind == "view":
        return f"submitted the *{esc(what.capitalize(), 40)}* form"
    return _NOTIFIER_WORDS.get(what) or esc(what, 60)


def _audit_line(entry: AuditRecord, *, command: str) -> str:
    line = (
        f"{slack_date(entry.at)} {mention(entry.user_id)} "
        f"{operation_words(entry.kind, entry.what, command=command)}"
    )
    if entry.pipeline:
        line += f" *{name(entry.pipeline)}*"
    if entry.execution_id:
        line += f" {code(short_id(entry.execution_id))}"
    line += f" → {_OUTCOME_WORDS.get(entry.outcome) or esc(entry.outcome, 40)}"
    if entry.channel_id and _CHANNEL_ID.fullmatch(entry.channel_id):
        line += f" in <#{entry.channel_id}>"
    if entry.detail and entry.detail.strip():
        line += f" — {_detail_text(one_line(entry.detail), 200)}"
    return line


def _detail_text(detail: str, limit: int) -> str:
    """An audit detail escaped for mrkdwn, its mentions (who may act, in a refusal) kept as
    mentions, cut to about ``limit`` characters."""
    pieces: list[str] = []
    position = 0
    for match in _MARKUP.finditer(detail):
        pieces.append(escape(detail[position : match.start()]))
        pieces.append(f"<{match.group(1)}>")
        position = match.end()
    pieces.append(escape(detail[position:]))
    return clip_mrkdwn("".join(pieces), limit)
