"""What every handler is given, and the steps they share: permission, audit, replies."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web import WebClient

from bot.ops.permissions import Decision, Permissions
from bot.ops.pipeline_ops import OpsError, PipelineOps
from bot.settings import Settings
from bot.slack import blocks
from handlers.grammar import suggest
from storage import bot_store
from storage.db import SessionFactory, transaction

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    """Dependencies of the Slack surface, built once by ``bot.app.build_services``."""

    settings: Settings
    ops: PipelineOps
    permissions: Permissions
    sessions: SessionFactory
    now: Callable[[], datetime] = _utcnow
    # The work after an ack runs here, not on Bolt's listener threads: a slow `status`
    # must never delay the next request's ack (benchmarks/ack.py measures it).
    background: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="pipebot-slack-work"
        )
    )

    def later(self, work: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Run ``work`` after the ack; a failure is logged (handlers answer their own errors)."""

        def run() -> None:
            try:
                work(*args, **kwargs)
            except Exception:
                log.exception("work after the ack failed: %s", getattr(work, "__name__", work))

        self.background.submit(run)


@dataclass(frozen=True)
class Actor:
    """Who did something, and where."""

    user_id: str
    channel_id: str | None


def audit(
    services: Services,
    *,
    actor: Actor,
    kind: str,
    what: str,
    outcome: str,
    pipeline: str | None = None,
    execution_id: str | None = None,
    detail: str | None = None,
) -> None:
    """Append an audit entry; a failure to audit is logged, never shown to the user."""
    try:
        with transaction(services.sessions) as session:
            bot_store.append_audit(
                session=session,
                user_id=actor.user_id,
                channel_id=actor.channel_id,
                kind=kind,  # type: ignore[arg-type]
                what=what,
                outcome=outcome,  # type: ignore[arg-type]
                pipeline=pipeline,
                execution_id=execution_id,
                detail=detail[:2000] if detail else None,
            )
    except Exception:
        log.exception("could not write the audit entry for %s by %s", what, actor.user_id)


def check(
    services: Services,
    *,
    actor: Actor,
    permission: str,
    pipeline: str | None,
    kind: str,
    what: str,
    execution_id: str | None = None,
) -> Decision:
    """Decide and, when refused, audit the refusal."""
    starter = None
    if permission == "approve" and execution_id is not None:
        with services.sessions() as session:
            row = bot_store.get_starter(session=session, execution_id=execution_id)
            starter = row.user_id if row is not None else None
    decision = services.permissions.check(
        user_id=actor.user_id,
        permission=permission,  # type: ignore[arg-type]
        pipeline=pipeline,
        execution_starter=starter,
    )
    if not decision.allowed:
        audit(
            services,
            actor=actor,
            kind=kind,
            what=what,
            outcome="refused",
            pipeline=pipeline,
            execution_id=execution_id,
            detail=decision.reason,
        )
    return decision


def explain(services: Services, error: OpsError, *, pipeline: str | None) -> str:
    """The user-facing text of an error, with name suggestions for a mistyped pipeline."""
    message = error.message
    if error.code == "PipelineNotFoundException" and pipeline:
        try:
            close = suggest(pipeline, services.ops.names())
        except OpsError:
            close = []
        if close:
            message += "\nDid you mean " + " or ".join(f"`{c}`" for c in close) + "?"
        else:
            message += "\n`list` shows the pipelines."
    return message


def user_name(client: WebClient, user_id: str) -> str:
    """The user's display name for summaries; their ID when Slack cannot say."""
    try:
        user = client.users_info(user=user_id).get("user") or {}
    except SlackApiError:
        return user_id
    profile = user.get("profile") or {}
    return str(profile.get("display_name") or user.get("real_name") or user.get("name") or user_id)


class HeldReplies:
    """A ``respond`` that holds its replies until ``release``: a mutating command's or
    click's replies go out after its outcome is audited, so a crash in between can never
    leave an outcome the user was told with no audit entry."""

    def __init__(self, respond: Any) -> None:
        self._respond = respond
        self._held: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> None:
        self._held.append(kwargs)

    def release(self) -> None:
        held, self._held = self._held, []
        for kwargs in held:
            self._respond(**kwargs)


def ephemeral(respond: Any, *, message: str, usage: str | None = None) -> None:
    """A private error or notice for the user who asked."""
    respond(
        response_type="ephemeral",
        replace_original=False,
        text=message[:3000],
        blocks=blocks.error_blocks(message=message, usage=usage),
    )


def group_members_via(client: WebClient) -> Callable[[str], frozenset[str]]:
    """Resolve a user group's members with usergroups.users.list (cached by Permissions)."""

    def members(group_id: str) -> frozenset[str]:
        response = client.usergroups_users_list(usergroup=group_id)
        return frozenset(str(u) for u in response.get("users") or [])

    return members
