"""What every handler is given, and the one path every mutating surface takes.

``perform`` is that path: check the permission, act, audit, reply. Slash commands
(``handlers.commands``), button clicks (``handlers.actions``) and form submissions
(``handlers.views``) all go through it, so they refuse, fail and succeed alike:

- refused: audited as ``refused``, the reason told privately;
- a domain error (``bot.errors.PipebotError``): audited as ``error`` when the operation
  changes something, its message told privately (with name suggestions for a mistyped
  pipeline);
- anything else: logged with its traceback, audited as ``error``, and the user gets a
  short apology (never the traceback);
- done: audited as ``ok`` with what it acted on.

A mutating operation's replies are held until its audit entry is written, so a crash in
between can never leave an outcome the user was told with no audit entry.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.web import WebClient

from bot.errors import PipebotError
from bot.ops.approvals import decide_approval
from bot.ops.permissions import Decision, Permission, Permissions
from bot.ops.pipeline_ops import OpsError, PipelineOps
from bot.ops.pipeline_state import PendingApproval, is_in_progress
from bot.settings import Settings
from bot.slack.api_errors import Scope, SlackFailure, classify
from bot.slack.execution import has_log
from bot.slack.home import home_view
from bot.slack.ids import ButtonRef
from bot.slack.kit import escape
from bot.slack.messages import error_blocks, notice_blocks
from bot.slack.modals import EXAMPLE_PIPELINE, create_modal, example_declaration
from bot.slack.outcomes import approval_answer_line, approval_taken_line
from handlers.grammar import suggest
from storage import bot_store, notify_store
from storage.bot_store import AuditOutcome
from storage.db import SessionFactory, transaction

log = logging.getLogger(__name__)

Surface = Literal["command", "click", "view"]
"""Where an operation came from; the audit log's ``kind`` (``storage.bot_store.AuditKind``)."""

APOLOGY = (
    "Sorry, something went wrong on pipebot's side; it has been logged. "
    "Try again, or ask an admin to look at pipebot's logs."
)


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

    def later(self, work: Callable[..., object], /, *args: Any, **kwargs: Any) -> None:
        """Run ``work`` after the ack. Work that answers users goes through ``perform``,
        which answers its own errors; anything that still escapes is logged here."""

        def run() -> None:
            try:
                work(*args, **kwargs)
            except Exception:
                log.exception("work after the ack failed: %s", getattr(work, "__name__", work))

        self.background.submit(run)


class Reply(Protocol):
    """Where a surface's answers go, called like Bolt's ``respond``: a slash command's or
    a click's ``response_url`` (``slack_bolt.Respond``), or a form's ``FormReply``."""

    def __call__(
        self,
        *,
        text: str = ...,
        blocks: Sequence[dict[str, Any]] | None = ...,
        response_type: str | None = ...,
        replace_original: bool | None = ...,
    ) -> object: ...


@dataclass(frozen=True)
class Actor:
    """Who did something, and where."""

    user_id: str
    channel_id: str | None


@dataclass(frozen=True)
class Done:
    """What a mutating operation did, for its audit entry: the execution it acted on, and
    the pipeline when it is only known after acting (``create`` names it in its input).
    ``then`` is a visible effect other than a reply (a form redrawing the message it was
    opened from): like the replies, it runs once the audit entry is written. ``detail`` goes
    into the audit entry."""

    execution_id: str | None = None
    pipeline: str | None = None
    then: Callable[[], None] | None = None
    detail: str | None = None
    """What the audit entry adds (e.g. the suspension a subscribe resumed)."""


class RefusedError(PipebotError):
    """A permission refusal found while acting (``require``): ``perform`` audits it as
    refused, not as an error, with the execution it was about."""

    def __init__(self, message: str, *, execution_id: str | None = None) -> None:
        super().__init__(message)
        self.execution_id = execution_id


Work = Callable[[Reply], Done | None]
"""An operation's body: acts, replies through the ``Reply`` it is given, and returns
``Done`` when it changed something (audited), None when not (a read, a form opened,
an approval someone else had already answered)."""


def audit(
    services: Services,
    *,
    actor: Actor,
    kind: Surface,
    what: str,
    outcome: AuditOutcome,
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
                kind=kind,
                what=what,
                outcome=outcome,
                pipeline=pipeline,
                execution_id=execution_id,
                detail=detail[:2000] if detail else None,
            )
    except Exception:
        log.exception("could not write the audit entry for %s by %s", what, actor.user_id)


def decide(
    services: Services,
    *,
    actor: Actor,
    permission: Permission,
    pipeline: str | None,
    execution_id: str | None = None,
) -> Decision:
    """May ``actor`` do this? With an execution, its starter is looked up, so the
    pipeline's no-self-approval rule applies."""
    starter = None
    if permission == Permission.APPROVE and execution_id is not None:
        with services.sessions() as session:
            row = bot_store.get_starter(session=session, execution_id=execution_id)
            starter = row.user_id if row is not None else None
    return services.permissions.check(
        user_id=actor.user_id,
        permission=permission,
        pipeline=pipeline,
        execution_starter=starter,
    )


def require(
    services: Services,
    *,
    actor: Actor,
    permission: Permission,
    pipeline: str | None,
    execution_id: str | None = None,
) -> None:
    """Raise ``RefusedError`` unless ``actor`` may do this: for the checks an operation can only
    make once it has read what it acts on (the execution an approval waits for)."""
    decision = decide(
        services, actor=actor, permission=permission, pipeline=pipeline, execution_id=execution_id
    )
    if not decision.allowed:
        raise RefusedError(decision.reason, execution_id=execution_id)


def perform(
    services: Services,
    *,
    actor: Actor,
    surface: Surface,
    what: str,
    permission: Permission,
    pipeline: str | None,
    execution_id: str | None = None,
    respond: Reply,
    work: Work,
    stage: str | None = None,
) -> None:
    """Check, act, audit, reply: the one path of every command, click and form.

    ``what`` names the operation in the audit log (the command, the button's action ID, the
    form); ``execution_id`` is the execution it acts on when known before acting; ``stage``
    the stage a command named (an error then suggests close stage names). A
    ``READ`` operation is neither checked nor audited. See the module docstring for what
    each outcome is told and audited.
    """
    mutating = permission != Permission.READ

    def record(outcome: AuditOutcome, **fields: Any) -> None:
        if mutating:
            audit(services, actor=actor, kind=surface, what=what, outcome=outcome, **fields)

    if mutating:
        decision = decide(
            services,
            actor=actor,
            permission=permission,
            pipeline=pipeline,
            execution_id=execution_id,
        )
        if not decision.allowed:
            record("refused", pipeline=pipeline, execution_id=execution_id, detail=decision.reason)
            ephemeral(respond, message=decision.reason)
            return
    held = HeldReplies(respond)
    done: Done | None = None
    try:
        try:
            done = work(held if mutating else respond)
        except RefusedError as exc:
            record(
                "refused",
                pipeline=pipeline,
                execution_id=exc.execution_id or execution_id,
                detail=exc.message,
            )
            ephemeral(held, message=exc.message)
            return
        except PipebotError as exc:
            record("error", pipeline=pipeline, execution_id=execution_id, detail=exc.message)
            ephemeral(held, message=explain(services, exc, pipeline=pipeline, stage=stage))
            return
        except Exception:
            log.exception("%s %s failed for %s", surface, what, actor.user_id)
            record("error", pipeline=pipeline, execution_id=execution_id, detail="internal error")
            ephemeral(held, message=APOLOGY)
            return
        if done is not None:
            record(
                "ok",
                pipeline=done.pipeline or pipeline,
                execution_id=done.execution_id or execution_id,
                detail=done.detail,
            )
    finally:
        held.release()  # after the audit entry
    if done is not None and done.then is not None:
        done.then()


def answer_approval(
    services: Services,
    reply: Reply,
    *,
    client: WebClient,
    actor: Actor,
    pipeline: str,
    stage: str,
    action: str,
    approved: bool,
    comment: str | None,
    execution_id: str | None = None,
    approval: PendingApproval | None = None,
) -> str | None:
    """Answer an approval from any surface (``bot.ops.approvals.decide_approval``). Returns
    the channel's line for the answer; when someone else answered first (or is answering),
    tells ``actor`` so privately and returns None (nothing changed, nothing to audit)."""
    outcome = decide_approval(
        ops=services.ops,
        sessions=services.sessions,
        now=services.now(),
        user_id=actor.user_id,
        user_name=lambda: user_name(client, actor.user_id),
        pipeline=pipeline,
        stage=stage,
        action=action,
        approved=approved,
        comment=comment,
        execution_id=execution_id,
        approval=approval,
    )
    if outcome.state != "decided":
        ephemeral(reply, message=approval_taken_line(outcome, now=services.now()))
        return None
    return approval_answer_line(
        approved=approved,
        user_id=actor.user_id,
        pipeline=pipeline,
        stage=stage,
        action=action,
        comment=comment,
    )


def explain(
    services: Services, error: PipebotError, *, pipeline: str | None, stage: str | None = None
) -> str:
    """The user-facing text of an error, with name suggestions for a mistyped pipeline, and
    for a ``stage`` the pipeline does not have (whatever the error: a retry, an approval or
    a transition of an unknown stage each fail in their own words)."""
    message = error.message
    if not isinstance(error, OpsError) or not pipeline:
        return message
    if error.code == "PipelineNotFoundException":
        try:
            close = suggest(pipeline, services.ops.names())
        except OpsError:
            close = []
        if close:
            message += "\nDid you mean " + " or ".join(f"`{c}`" for c in close) + "?"
        else:
            message += "\n`list` shows the pipelines."
    elif stage:
        message += _unknown_stage_hint(services, pipeline=pipeline, stage=stage, said=message)
    return message


def _unknown_stage_hint(services: Services, *, pipeline: str, stage: str, said: str) -> str:
    """A line naming the stages close to ``stage`` when ``pipeline`` has no such stage (''
    when it has one, or its stages cannot be read)."""
    try:
        names = [
            str(s.get("stageName"))
            for s in services.ops.state(pipeline).get("stageStates") or []
            if s.get("stageName")
        ]
    except OpsError:
        return ""
    if stage in names:
        return ""
    close = suggest(stage, names)
    unknown = "has no stage" in said
    if close:
        lead = "" if unknown else f"`{escape(pipeline)}` has no stage `{escape(stage)}`. "
        return "\n" + lead + "Did you mean " + " or ".join(f"`{escape(c)}`" for c in close) + "?"
    if unknown:
        return ""
    return f"\n`{escape(pipeline)}` has no stage `{escape(stage)}`; `status` shows the stages."


def logged_actions(services: Services, pipeline: str) -> frozenset[tuple[str, str]]:
    """The (stage, action) pairs of ``pipeline`` whose runs keep a log that View log can
    show: on the embedded engine (the backend with ``ActionLogs``) every action but a source
    or an approval (``execution.has_log``, read from the declaration); none on AWS, whose
    logs pipebot does not read. Empty when the declaration cannot be read."""
    if not services.ops.local:
        return frozenset()
    try:
        declaration = services.ops.declaration(pipeline)
    except OpsError:
        return frozenset()
    return frozenset(
        (str(stage.get("name")), str(action.get("name")))
        for stage in declaration.get("stages") or []
        for action in stage.get("actions") or []
        if has_log((action.get("actionTypeId") or {}).get("category"))
    )


def user_name(client: WebClient, user_id: str) -> str:
    """The user's display name for summaries; their ID when Slack cannot say."""
    try:
        user = client.users_info(user=user_id).get("user") or {}
    except SlackApiError:
        return user_id
    profile = user.get("profile") or {}
    return str(profile.get("display_name") or user.get("real_name") or user.get("name") or user_id)


class HeldReplies:
    """A ``Reply`` that holds its replies until ``release``: a mutating operation's
    replies go out after its outcome is audited."""

    def __init__(self, respond: Reply) -> None:
        self._respond = respond
        self._held: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> None:
        self._held.append(kwargs)

    def release(self) -> None:
        held, self._held = self._held, []
        for kwargs in held:
            self._respond(**kwargs)


class FormReply:
    """A ``Reply`` for a surface with no ``response_url`` (a form, a click on App Home):
    privately to its user in the channel it came from (chat.postEphemeral), in the channel
    for an ``in_channel`` answer (chat.postMessage), or as a direct message from the app
    when it came from no channel (App Home). ``replace_original`` has no meaning here and
    is ignored."""

    def __init__(self, *, client: WebClient, actor: Actor) -> None:
        self._client = client
        self._actor = actor

    def __call__(
        self,
        *,
        text: str = "",
        blocks: Sequence[dict[str, Any]] | None = None,
        response_type: str | None = None,
        replace_original: bool | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"text": text, "blocks": list(blocks or [])}
        actor = self._actor
        try:
            if actor.channel_id is None:
                self._client.chat_postMessage(channel=actor.user_id, **kwargs)
            elif response_type == "in_channel":
                self._client.chat_postMessage(channel=actor.channel_id, **kwargs)
            else:
                self._client.chat_postEphemeral(
                    channel=actor.channel_id, user=actor.user_id, **kwargs
                )
        except SlackApiError as exc:
            log_slack_failure(classify(exc), f"telling {actor.user_id} the outcome of a form")


def ephemeral(respond: Reply, *, message: str, usage: str | None = None) -> None:
    """A private error or notice for the user who asked."""
    respond(
        response_type="ephemeral",
        replace_original=False,
        text=message[:3000],
        blocks=error_blocks(message=message, usage=usage),
    )


def notice(respond: Reply, *, message: str, public: bool) -> None:
    """An outcome as a notice: ``public`` ones are for the channel (who did what)."""
    respond(
        response_type="in_channel" if public else "ephemeral",
        replace_original=False,
        text=message[:3000],
        blocks=notice_blocks(message=message),
    )


def subscribe_on_create(services: Services, *, pipeline: str, actor: Actor) -> str:
    """Subscribe the channel a pipeline was created from; the sentence saying so (or "")."""
    if not actor.channel_id:
        return ""
    with transaction(services.sessions) as session:
        notify_store.subscribe(
            session=session,
            pipeline=pipeline,
            channel_id=actor.channel_id,
            created_by=actor.user_id,
        )
    return (
        f" This channel is subscribed to its executions "
        f"(`{services.settings.command} unsubscribe {pipeline}` to stop)."
    )


_REPOSITORY_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


def example_source(repositories: Path) -> tuple[str, str] | None:
    """A git repository of the embedded engine's repositories directory for the Create form's
    example, and the branch its HEAD names (the first by name; None when there is none)."""
    try:
        candidates = sorted(repositories.iterdir())
    except OSError:
        return None
    for path in candidates:
        if not _REPOSITORY_NAME.fullmatch(path.name):
            continue
        head = path / ".git" / "HEAD" if (path / ".git").is_dir() else path / "HEAD"
        try:
            ref = head.read_text().strip()
        except OSError:
            continue
        if ref.startswith("ref: refs/heads/"):
            return path.name, ref.removeprefix("ref: refs/heads/")
    return None


def create_form(services: Services, *, channel_id: str | None) -> dict[str, Any]:
    """The Create form, its first box holding an example that works on the engine in use."""
    command = services.settings.command
    if services.ops.local:
        found = example_source(services.settings.resolved_repositories_dir)
        repository, branch = found if found is not None else (None, "main")
        if found is not None:
            note = (
                f"The example builds the git repository `{escape(found[0])}` (branch "
                f"`{escape(found[1])}`) of the embedded engine's repositories directory."
            )
        else:
            note = (
                f"The example's source is a git repository `{EXAMPLE_PIPELINE}`, which the "
                "embedded engine looks for in its repositories directory "
                "(`PIPEBOT_REPOSITORIES_DIR`): create it there, or name one that is."
            )
        note += " The embedded engine needs no `roleArn` and no artifact store."
    else:
        repository, branch = None, "main"
        note = (
            "On AWS CodePipeline, replace the example's service role (`roleArn`), artifact "
            "bucket and CodeStar connection with your account's."
        )
    return create_modal(
        example=example_declaration(local=services.ops.local, repository=repository, branch=branch),
        private_metadata=ButtonRef(pipeline="-", channel=channel_id).encode(),
        command=command,
        example_note=note,
    )


def home_view_for(services: Services, user_id: str) -> dict[str, Any]:
    """The App Home view for ``user_id``: an approval is listed, with its buttons, only when
    they may answer it, by the same check a click makes (``decide``: an execution they
    started is not theirs to approve when the pipeline does not allow self-approval)."""
    pipelines = services.ops.list_with_latest()
    viewer = Actor(user_id=user_id, channel_id=None)
    approvals = []
    for summary, latest in pipelines:
        if latest is None or not is_in_progress(latest.get("status")):
            continue
        name = summary["name"]
        if not decide(services, actor=viewer, permission=Permission.APPROVE, pipeline=name):
            continue
        waiting = services.ops.pending_approvals(name)
        if latest.get("executionMode") == "PARALLEL":
            # GetPipelineState shows each gate's latest execution only: the others wait too.
            shown = {(p.execution_id, p.stage, p.action) for p in waiting}
            waiting += [
                p
                for p in services.ops.parallel_approvals(name, services.ops.executions(name, 20))
                if (p.execution_id, p.stage, p.action) not in shown
            ]
        for pending in waiting:
            if pending.execution_id and not decide(
                services,
                actor=viewer,
                permission=Permission.APPROVE,
                pipeline=name,
                execution_id=pending.execution_id,
            ):
                continue
            approvals.append(
                (name, pending.stage, pending.action, pending.execution_id or "", pending.since)
            )
    with services.sessions() as session:
        suspended = notify_store.suspended_subscriptions(session=session)
    return home_view(
        pipelines=pipelines,
        approvals=approvals,
        now=services.now(),
        trial_mode=services.permissions.trial_mode,
        command=services.settings.command,
        suspended=suspended,
    )


def publish_home(services: Services, client: WebClient, user_id: str) -> None:
    """Draw ``user_id``'s App Home tab afresh (views.publish); an error drawn in its place."""
    try:
        view = home_view_for(services, user_id)
    except OpsError as exc:
        view = {"type": "home", "blocks": error_blocks(message=exc.message)}
    try:
        client.views_publish(user_id=user_id, view=view)
    except SlackApiError as exc:
        # Not retried: the tab is drawn afresh the next time it is opened.
        log_slack_failure(classify(exc), f"publishing the Home tab for {user_id}")


def log_slack_failure(failure: SlackFailure, what: str) -> None:
    """Log a failed Web API call made while answering someone, as loud as what it means
    (``bot.slack.api_errors``): CRITICAL when Slack refuses pipebot's token or app, an
    error when it refuses a channel or the message, a warning when it may work later."""
    level = {
        Scope.INSTALLATION: logging.CRITICAL,
        Scope.CHANNEL: logging.ERROR,
        Scope.MESSAGE: logging.ERROR,
    }.get(failure.scope, logging.WARNING)
    log.log(
        level,
        "Slack refused %s (%s to %s: %s)",
        what,
        failure.code,
        failure.method or "Slack",
        failure.scope.value,
    )


def group_members_via(client: WebClient) -> Callable[[str], frozenset[str]]:
    """Resolve a user group's members with usergroups.users.list (cached by Permissions)."""

    def members(group_id: str) -> frozenset[str]:
        response = client.usergroups_users_list(usergroup=group_id)
        return frozenset(str(u) for u in response.get("users") or [])

    return members
