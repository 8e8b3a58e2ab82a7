"""Who may do what (``access NAME``) and what they did (``audit [NAME]``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Final, Protocol

from bot.slack.kit import (
    MESSAGE_BLOCKS_MAX,
    MESSAGE_TEXT_BUDGET,
    Block,
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
        header(f"Access to {pipeline}"),
        section("\n".join(lines)),
        section(admin_text),
        context(
            f"`{cmd} access {esc(pipeline, NAME_MAX)} operators add @someone` · "
            f"`{cmd} access {esc(pipeline, NAME_MAX)} self-approval off`"
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
    def what(self) -> str: ...
    @property
    def pipeline(self) -> str | None: ...
    @property
    def execution_id(self) -> str | None: ...
    @property
    def outcome(self) -> str: ...
    @property
    def detail(self) -> str | None: ...


def audit_blocks(*, entries: Sequence[AuditRecord], pipeline: str | None = None) -> list[Block]:
    """Recent audit entries, newest first (``audit [NAME]``)."""
    title = f"Audit · {pipeline}" if pipeline else "Audit"
    blocks: list[Block] = [header(title)]
    if not entries:
        return [*blocks, section("_Nothing recorded yet._")]
    blocks += pack(
        [_audit_line(e) for e in entries],
        max_blocks=MESSAGE_BLOCKS_MAX - len(blocks),
        budget=MESSAGE_TEXT_BUDGET - text_size(blocks),
        more=lambda n: f"…and {n} more entr{'ies' if n != 1 else 'y'} not shown.",
    )
    return blocks


def _audit_line(entry: AuditRecord) -> str:
    line = f"{slack_date(entry.at)} {mention(entry.user_id)} {code(entry.what, 40)}"
    if entry.pipeline:
        line += f" *{name(entry.pipeline)}*"
    if entry.execution_id:
        line += f" {code(short_id(entry.execution_id))}"
    line += f" → {esc(entry.outcome, 40)}"
    if entry.channel_id and _CHANNEL_ID.fullmatch(entry.channel_id):
        line += f" in <#{entry.channel_id}>"
    if entry.detail and entry.detail.strip():
        line += f" — {esc(one_line(entry.detail), 200)}"
    return line
