"""A channel's subscriptions, and what is said when Slack refuses a channel for good.

Pure functions, data in, mrkdwn and Block Kit out: the ``subscriptions`` listing, the
direct message to whoever subscribed when a subscription is suspended, the App Home's
suspended subscriptions, and the audit entry's words. Which errors suspend a subscription
is decided in ``bot.slack.api_errors`` (``Scope.CHANNEL``); what each means to the people
who can fix it is ``SUSPENSION_WORDS``, worded after each code's description on the method
pages (https://docs.slack.dev/reference/methods/chat.postMessage, ``chat.update``,
``chat.postEphemeral``, ``conversations.history``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Protocol

from bot.slack.kit import (
    MESSAGE_BLOCKS_MAX,
    MESSAGE_TEXT_BUDGET,
    Block,
    code,
    context,
    escape,
    fallback_text,
    section,
    text_size,
)
from bot.slack.text import as_utc, date_and_ago, name, pack

FILTER_WORDS: Final[Mapping[str, str]] = {
    "all": "every execution, approval and failure",
    "failures": "failed and stopped executions",
    "approvals": "approval requests and their outcome",
}
"""What a subscription's ``events`` filter posts, in words."""

SUSPENDED_EMOJI: Final = "⏸️"

_REJOIN = "run `{subscribe}` there again"
SUSPENSION_WORDS: Final[Mapping[str, tuple[str, str]]] = {
    # Slack's code: (what happened, how to fix it). ``{subscribe}`` is the command to run.
    "is_archived": ("the channel was archived", "unarchive it and " + _REJOIN),
    "is_inactive": ("the channel was archived or frozen", "unarchive it and " + _REJOIN),
    "channel_not_found": (
        "Slack cannot find the channel (deleted, or private and pipebot was removed)",
        "invite pipebot back and " + _REJOIN + ", or subscribe another channel",
    ),
    "not_in_channel": ("pipebot is not a member of the channel", "invite pipebot and " + _REJOIN),
    "no_permission": ("pipebot may not post in the channel", "invite pipebot and " + _REJOIN),
    "restricted_action": (
        "a workspace setting stops pipebot from posting there",
        "ask a workspace admin to allow it, then " + _REJOIN,
    ),
    "restricted_action_read_only_channel": (
        "the channel is read-only",
        "let pipebot post there (or subscribe another channel), then " + _REJOIN,
    ),
    "restricted_action_thread_only_channel": (
        "the channel takes thread replies only, and pipebot posts one message per execution",
        "allow top-level messages there (or subscribe another channel), then " + _REJOIN,
    ),
    "restricted_action_non_threadable_channel": (
        "the channel takes no thread replies, and pipebot posts each execution's events "
        "in its thread",
        "allow threads there (or subscribe another channel), then " + _REJOIN,
    ),
    "ekm_access_denied": (
        "the workspace's admins have disabled sending messages to the channel",
        "ask them to allow it, then " + _REJOIN,
    ),
}
_DEFAULT_WORDS: Final = (
    "Slack refuses pipebot's messages there",
    "fix the channel's access for pipebot, then " + _REJOIN,
)
_CHANNEL_ID: Final = re.compile(r"[CGD][A-Z0-9]+")


class SubscriptionRecord(Protocol):
    """What these drawings read of a subscription (``storage.models.Subscription``)."""

    @property
    def pipeline(self) -> str: ...
    @property
    def channel_id(self) -> str: ...
    @property
    def events(self) -> str: ...
    @property
    def digest_time(self) -> str | None: ...
    @property
    def suspended_at(self) -> datetime | None: ...
    @property
    def suspended_error(self) -> str | None: ...


def channel_ref(channel_id: str) -> str:
    """``<#C…>`` for a channel ID (Slack shows its name), the escaped text otherwise."""
    return f"<#{channel_id}>" if _CHANNEL_ID.fullmatch(channel_id) else escape(channel_id)


def suspension_reason(*, error: str, pipeline: str, command: str = "/pipeline") -> str:
    """What Slack's ``error`` means and how to fix it, as mrkdwn: "the channel was archived:
    unarchive it and run `/pipeline subscribe web` there again"."""
    what, fix = SUSPENSION_WORDS.get(error, _DEFAULT_WORDS)
    subscribe = f"{escape(command)} subscribe {name(pipeline)}"
    return f"{what}: {fix.format(subscribe=subscribe)}"


def suspension_line(
    *, error: str, pipeline: str, since: datetime, now: datetime, command: str = "/pipeline"
) -> str:
    """One suspended subscription's state: since when (naive means UTC, as SQLite hands
    it back), Slack's code, and the fix."""
    return (
        f"{SUSPENDED_EMOJI} *suspended* since {date_and_ago(as_utc(since), now)} — Slack "
        f"answered {code(error, 64)}; "
        f"{suspension_reason(error=error, pipeline=pipeline, command=command)}."
    )


def subscriptions_blocks(
    *,
    subscriptions: Sequence[SubscriptionRecord],
    zone: str,
    now: datetime,
    command: str = "/pipeline",
) -> list[Block]:
    """The channel's subscriptions (``subscriptions``), suspended ones with why and the fix."""
    cmd = escape(command)
    if not subscriptions:
        return [
            section(
                f"This channel follows no pipeline: `{cmd} subscribe NAME` posts one's "
                "executions here."
            )
        ]
    suspended = sum(1 for s in subscriptions if s.suspended_at is not None)
    title = f"*This channel's subscriptions* ({len(subscriptions)}"
    title += f", {suspended} suspended):" if suspended else "):"
    lines: list[str] = []
    for row in subscriptions:
        line = f"• *{name(row.pipeline)}* — {FILTER_WORDS.get(row.events, escape(row.events))}"
        if row.digest_time:
            line += f"; daily digest at {escape(row.digest_time)} ({escape(zone)})"
        if row.suspended_at is not None:
            line += "\n    " + suspension_line(
                error=row.suspended_error or "",
                pipeline=row.pipeline,
                since=row.suspended_at,
                now=now,
                command=command,
            )
        lines.append(line)
    blocks = [section(title)]
    return blocks + pack(
        lines,
        max_blocks=MESSAGE_BLOCKS_MAX - len(blocks),
        budget=MESSAGE_TEXT_BUDGET - text_size(blocks),
        more=lambda n: f"…and {n} more.",
    )


class SuspensionRecord(Protocol):
    """What ``resumed_text`` reads of a suspension (``storage.notify_store.Suspension``)."""

    @property
    def pipeline(self) -> str: ...
    @property
    def error(self) -> str: ...
    @property
    def suspended_at(self) -> datetime: ...


def resumed_text(resumed: Sequence[SuspensionRecord], *, now: datetime) -> str:
    """The channel's answer to the subscribe that resumed suspended subscriptions (mrkdwn)."""
    items = [
        f"*{name(s.pipeline)}* (suspended since {date_and_ago(as_utc(s.suspended_at), now)}: Slack "
        f"answered {code(s.error, 64)})"
        for s in resumed[:20]
    ]
    if len(resumed) > 20:
        items.append(f"{len(resumed) - 20} more")
    return (
        f"{SUSPENDED_EMOJI}➡️ Resumed: {', '.join(items)}. Each execution's message here is "
        "brought up to its current state; the progress in between is not replayed."
    )


def suspended_notice(
    *,
    channel_id: str,
    pipelines: Sequence[str],
    error: str,
    method: str | None,
    command: str = "/pipeline",
) -> dict[str, Any]:
    """The direct message to whoever subscribed the channel to ``pipelines`` when Slack
    refused the channel with ``error`` (to ``method``): one message per suspension and
    person, however many messages were waiting. A chat.postMessage payload (text, blocks)."""
    names = ", ".join(f"*{name(p)}*" for p in pipelines[:20])
    if len(pipelines) > 20:
        names += f" and {len(pipelines) - 20} more"
    plural = "s" if len(pipelines) != 1 else ""
    first = pipelines[0] if pipelines else "NAME"
    answered = f"Slack answered {code(error, 64)}" + (f" to `{method}`" if method else "")
    blocks = [
        section(
            f"{SUSPENDED_EMOJI} pipebot stopped posting to {channel_ref(channel_id)}: "
            f"{answered}, so the subscription{plural} to {names} "
            f"{'are' if plural else 'is'} suspended."
        ),
        section(
            "*To resume:* "
            + suspension_reason(error=error, pipeline=first, command=command)
            + (" (one subscribe resumes them all)" if plural else "")
            + ". Until then nothing is posted or retried there; on resuming, each "
            "execution's message is brought up to date rather than replayed."
        ),
        context(
            f"You subscribed this channel. `{escape(command)} subscriptions` in it shows "
            f"the state; `{escape(command)} unsubscribe NAME` stops for good."
        ),
    ]
    return {"text": fallback_text(blocks=blocks), "blocks": blocks}


def suspended_home_blocks(
    *,
    subscriptions: Sequence[SubscriptionRecord],
    now: datetime,
    command: str = "/pipeline",
    max_rows: int = 10,
) -> list[Block]:
    """App Home: the suspended subscriptions (at most ``max_rows``; [] when none)."""
    if not subscriptions:
        return []
    lines = [
        f"*{name(row.pipeline)}* in {channel_ref(row.channel_id)} — "
        + suspension_line(
            error=row.suspended_error or "",
            pipeline=row.pipeline,
            since=row.suspended_at or now,
            now=now,
            command=command,
        )
        for row in subscriptions[:max_rows]
    ]
    blocks = [section(f"*{SUSPENDED_EMOJI} Suspended subscriptions* ({len(subscriptions)})")]
    blocks += [section(line) for line in lines]
    if len(subscriptions) > max_rows:
        blocks.append(
            context(
                f"…and {len(subscriptions) - max_rows} more: `{escape(command)} subscriptions` "
                "in a channel shows its own."
            )
        )
    return blocks


def suspension_audit_detail(
    *, error: str, method: str | None, what: str, pipeline: str, command: str = "/pipeline"
) -> str:
    """The audit entry's detail for a suspension (plain text, escaped when drawn)."""
    what_happened, fix = SUSPENSION_WORDS.get(error, _DEFAULT_WORDS)
    fix = fix.format(subscribe=f"{command} subscribe {pipeline}")
    call = f"{method} of {what}" if method else what
    return f"Slack answered {error} to {call}: {what_happened}; to resume, {fix}."
