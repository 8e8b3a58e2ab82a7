"""The ``/pipeline`` slash command: parse, ack, then act and answer.

Parsing is pure and fast, so a bad command is answered in the ack itself
(privately, with the subcommand's usage). Everything that touches the backend,
the database or Slack's Web API happens after ``ack()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from slack_bolt import App
from slack_sdk.web import WebClient

from bot.ops.pipeline_ops import OpsError, request_token
from bot.slack import blocks, ids
from bot.slack.ids import ButtonRef
from handlers.common import (
    Actor,
    HeldReplies,
    Services,
    audit,
    check,
    ephemeral,
    explain,
    user_name,
)
from handlers.grammar import (
    CommandError,
    ParsedCommand,
    Permission,
    UnknownCommandError,
    help_text,
    normalize_reason,
    parse,
    spec_for,
)
from storage import bot_store, notify_store
from storage.db import transaction, utc, utcnow

log = logging.getLogger(__name__)

Respond = Any


def register(app: App, services: Services) -> None:
    def on_command(ack: Any, command: dict[str, Any], respond: Respond, client: WebClient) -> None:
        text = command.get("text") or ""
        try:
            parsed = parse(text, slash=services.settings.command)
        except CommandError as exc:
            message = exc.message
            usage = exc.usage
            if isinstance(exc, UnknownCommandError):
                usage = help_text(
                    command=None,
                    slash=services.settings.command,
                    trial_mode=services.permissions.trial_mode,
                )
            ack(
                response_type="ephemeral",
                text=message[:3000],
                blocks=blocks.error_blocks(message=message, usage=usage),
            )
            return
        ack()
        actor = Actor(user_id=command["user_id"], channel_id=command.get("channel_id"))
        services.later(
            run_command,
            services,
            parsed=parsed,
            actor=actor,
            respond=respond,
            client=client,
            trigger_id=command.get("trigger_id"),
        )

    app.command(services.settings.command)(on_command)


def run_command(
    services: Services,
    *,
    parsed: ParsedCommand,
    actor: Actor,
    respond: Respond,
    client: WebClient,
    trigger_id: str | None,
) -> None:
    """Carry out a parsed command; every failure becomes a private answer."""
    spec = spec_for(parsed.name)
    assert spec is not None
    handler = HANDLERS.get(parsed.name)
    if handler is None or not spec.available:
        ephemeral(
            respond,
            message=f"`{parsed.name}` is not available yet in this version of pipebot: channel "
            "notifications come with a later release.",
        )
        return
    mutating = spec.permission not in (Permission.READ,)
    if spec.permission != Permission.READ or parsed.name == "access":
        needed = _needed_permission(parsed)
        if needed != Permission.READ:
            decision = check(
                services,
                actor=actor,
                permission=needed.value,
                pipeline=parsed.pipeline,
                kind="command",
                what=parsed.name,
            )
            if not decision.allowed:
                ephemeral(respond, message=decision.reason)
                return
    held = HeldReplies(respond)
    request = Request(
        services=services,
        parsed=parsed,
        actor=actor,
        respond=held if mutating else respond,
        client=client,
        trigger_id=trigger_id,
    )
    try:
        _carry_out(services, handler, request, mutating=mutating, respond=respond)
    finally:
        held.release()  # after the audit entry


def _carry_out(
    services: Services,
    handler: Callable[[Request], str | None],
    request: Request,
    *,
    mutating: bool,
    respond: Respond,
) -> None:
    parsed, actor = request.parsed, request.actor
    try:
        outcome = handler(request)
    except OpsError as exc:
        message = explain(services, exc, pipeline=parsed.pipeline)
        if mutating:
            audit(
                services,
                actor=actor,
                kind="command",
                what=parsed.name,
                outcome="error",
                pipeline=parsed.pipeline,
                detail=exc.message,
            )
        ephemeral(respond, message=message)
        return
    except Exception:
        log.exception("/pipeline %s failed for %s", parsed.name, actor.user_id)
        if mutating:
            audit(
                services,
                actor=actor,
                kind="command",
                what=parsed.name,
                outcome="error",
                pipeline=parsed.pipeline,
                detail="internal error",
            )
        ephemeral(
            respond,
            message="Sorry, something went wrong on pipebot's side; it has been logged. "
            "Try again, or ask an admin to look at pipebot's logs.",
        )
        return
    if mutating and outcome is not None:
        audit(
            services,
            actor=actor,
            kind="command",
            what=parsed.name,
            outcome="ok",
            pipeline=request.audit_pipeline,
            execution_id=outcome or None,
        )


def _needed_permission(parsed: ParsedCommand) -> Permission:
    if parsed.name == "access" and parsed.args.get("op") == "show":
        return Permission.READ
    spec = spec_for(parsed.name)
    assert spec is not None
    return spec.permission


class Request:
    """One command being carried out (what the per-command functions need)."""

    def __init__(
        self,
        *,
        services: Services,
        parsed: ParsedCommand,
        actor: Actor,
        respond: Respond,
        client: WebClient,
        trigger_id: str | None,
    ) -> None:
        self.services = services
        self.ops = services.ops
        self.parsed = parsed
        self.args = parsed.args
        self.name = parsed.pipeline or ""
        self.actor = actor
        self.respond = respond
        self.client = client
        self.trigger_id = trigger_id
        # The pipeline to audit, when the command names it only inside its arguments (create).
        self.audit_pipeline: str | None = parsed.pipeline

    def private(self, blocks_: list[dict[str, Any]], text: str) -> None:
        self.respond(
            response_type="ephemeral", replace_original=False, text=text[:3000], blocks=blocks_
        )

    def public(self, message: str) -> None:
        """An outcome the channel should see (who did what)."""
        self.respond(
            response_type="in_channel",
            replace_original=False,
            text=message[:3000],
            blocks=blocks.notice_blocks(message=message),
        )

    def allowed(self, permission: Permission) -> bool:
        return self.services.permissions.check(
            user_id=self.actor.user_id, permission=permission.value, pipeline=self.name
        ).allowed


# --- the commands -------------------------------------------------------------------------------
# Each returns the execution ID it acted on (for the audit), "" when it acted on none, or
# None for a read-only answer.


def _help(r: Request) -> str | None:
    text = help_text(
        command=r.args.get("topic"),
        slash=r.services.settings.command,
        trial_mode=r.services.permissions.trial_mode,
    )
    r.private(blocks.help_blocks(text=text), text)
    return None


def _list(r: Request) -> str | None:
    pipelines = r.ops.list_with_latest()
    r.private(
        blocks.list_blocks(pipelines=pipelines, now=r.services.now()),
        f"{len(pipelines)} pipeline(s)",
    )
    return None


def _status(r: Request) -> str | None:
    state = r.ops.state(r.name)
    executions = r.ops.executions(r.name, 5)
    r.private(
        blocks.status_blocks(
            state=state,
            executions=executions,
            approvals_allowed=r.allowed(Permission.APPROVE),
            operate_allowed=r.allowed(Permission.OPERATE),
            now=r.services.now(),
        ),
        f"Status of {r.name}",
    )
    return None


def _history(r: Request) -> str | None:
    executions = r.ops.executions(r.name, int(r.args.get("count") or 10))
    r.private(blocks.history_blocks(pipeline=r.name, executions=executions), f"History of {r.name}")
    return None


def _execution(r: Request) -> str | None:
    view = r.ops.execution_view(r.name, str(r.args["execution"]))
    r.private(
        blocks.execution_blocks(
            pipeline=r.name, execution=view.execution, actions=view.actions, log_tail=view.log_tail
        ),
        f"Execution {r.args['execution']} of {r.name}",
    )
    return None


def _create(r: Request) -> str | None:
    declaration = r.args.get("declaration")
    if not declaration:
        _open_modal(
            r,
            blocks.declaration_modal(
                callback_id=ids.CREATE_VIEW,
                initial=None,
                title="Create a pipeline",
                private_metadata=ButtonRef(pipeline="-", channel=r.actor.channel_id).encode(),
            ),
        )
        return None
    created = r.ops.create(str(declaration))
    name = created["name"]
    r.audit_pipeline = name
    note = subscribe_on_create(r.services, pipeline=name, actor=r.actor)
    r.public(
        f"<@{r.actor.user_id}> created pipeline *{name}* (version {created['version']}).{note}"
    )
    return ""


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


def _edit(r: Request) -> str | None:
    text = r.ops.declaration_text(r.name)
    _open_modal(
        r,
        blocks.declaration_modal(
            callback_id=ids.EDIT_VIEW,
            initial=text,
            title=f"Edit {r.name}"[:24],
            private_metadata=ButtonRef(pipeline=r.name, channel=r.actor.channel_id).encode(),
        ),
    )
    return None


def _open_modal(r: Request, view: dict[str, Any]) -> None:
    if not r.trigger_id:
        raise OpsError("Slack did not send a trigger to open the form; run the command again.")
    r.client.views_open(trigger_id=r.trigger_id, view=view)


def _delete(r: Request) -> str | None:
    r.ops.state(r.name)  # the pipeline must exist before we ask
    r.private(blocks.delete_confirm_blocks(pipeline=r.name), f"Delete {r.name}?")
    return None


def _start(r: Request) -> str | None:
    token = request_token("slack", r.trigger_id or r.services.now().isoformat())
    execution_id = r.ops.start(r.name, dict(r.args.get("variables") or {}), request_token=token)
    with transaction(r.services.sessions) as session:
        bot_store.record_starter(
            session=session, execution_id=execution_id, pipeline=r.name, user_id=r.actor.user_id
        )
    r.public(f"<@{r.actor.user_id}> started *{r.name}*: execution `{execution_id}`.")
    return execution_id


def _stop(r: Request) -> str | None:
    abandon = bool(r.args.get("abandon"))
    reason = r.args.get("reason")
    full_reason = f"Stopped by {user_name(r.client, r.actor.user_id)} in Slack" + (
        f": {reason}" if reason else ""
    )
    execution_id = r.ops.stop(r.name, r.args.get("execution"), abandon=abandon, reason=full_reason)
    how = "stopped and abandoned" if abandon else "is stopping (running actions finish first)"
    r.public(f"<@{r.actor.user_id}>: execution `{execution_id}` of *{r.name}* {how}.")
    return execution_id


def _retry(r: Request) -> str | None:
    mode = str(r.args.get("mode") or "FAILED_ACTIONS")
    stage, execution_id = r.ops.retry(
        r.name, r.args.get("stage"), r.args.get("execution"), mode=mode
    )
    what = "all actions" if mode == "ALL_ACTIONS" else "the failed actions"
    r.public(
        f"<@{r.actor.user_id}> retried {what} of stage *{stage}* in *{r.name}* "
        f"(execution `{execution_id}`)."
    )
    return execution_id


def _answer(r: Request, *, approved: bool) -> str | None:
    approval = r.ops.find_approval(r.name, r.args.get("stage"), r.args.get("action"))
    decision = check(
        r.services,
        actor=r.actor,
        permission="approve",
        pipeline=r.name,
        kind="command",
        what="approve" if approved else "reject",
        execution_id=approval.execution_id,
    )
    if not decision.allowed:
        ephemeral(r.respond, message=decision.reason)
        return None
    outcome = decide_approval(
        r.services,
        client=r.client,
        actor=r.actor,
        pipeline=r.name,
        stage=approval.stage,
        action=approval.action,
        approved=approved,
        comment=r.args.get("comment"),
    )
    if outcome.already is not None:
        ephemeral(r.respond, message=outcome.already)
        return None
    r.public(outcome.message)
    return approval.execution_id or ""


def _approve(r: Request) -> str | None:
    return _answer(r, approved=True)


def _reject(r: Request) -> str | None:
    return _answer(r, approved=False)


def _disable(r: Request) -> str | None:
    reason, changed = normalize_reason(str(r.args["reason"]))
    r.ops.set_transition(r.name, str(r.args["stage"]), enabled=False, reason=reason)
    note = (
        f"\n(The reason was shortened to the characters AWS allows: _{reason}_.)" if changed else ""
    )
    r.public(
        f"<@{r.actor.user_id}> disabled the transition into *{r.args['stage']}* of *{r.name}*: "
        f"{reason}{note}"
    )
    return ""


def _enable(r: Request) -> str | None:
    r.ops.set_transition(r.name, str(r.args["stage"]), enabled=True, reason=None)
    r.public(f"<@{r.actor.user_id}> enabled the transition into *{r.args['stage']}* of *{r.name}*.")
    return ""


def _access(r: Request) -> str | None:
    op = r.args.get("op")
    if op in ("add", "remove"):
        role = str(r.args["role"])
        with transaction(r.services.sessions) as session:
            for subject in r.args.get("subjects") or []:
                if op == "add":
                    bot_store.add_access(
                        session=session,
                        pipeline=r.name,
                        role=role,  # type: ignore[arg-type]
                        subject=subject,
                        added_by=r.actor.user_id,
                    )
                else:
                    bot_store.remove_access(
                        session=session,
                        pipeline=r.name,
                        role=role,  # type: ignore[arg-type]
                        subject=subject,
                    )
    elif op == "self_approval":
        with transaction(r.services.sessions) as session:
            bot_store.set_policy(
                session=session,
                pipeline=r.name,
                no_self_approval=not bool(r.args.get("enabled")),
                updated_by=r.actor.user_id,
            )
    lists = r.services.permissions.access_lists(r.name)
    r.private(
        blocks.access_blocks(
            pipeline=r.name,
            operators=list(lists.operators),
            approvers=list(lists.approvers),
            no_self_approval=lists.no_self_approval,
            admins=sorted(r.services.permissions.admins),
        ),
        f"Access to {r.name}",
    )
    return "" if op != "show" else None


def _audit(r: Request) -> str | None:
    with r.services.sessions() as session:
        entries = bot_store.list_audit(session=session, pipeline=r.parsed.pipeline, limit=20)
    r.private(blocks.audit_blocks(entries=entries), "Audit log")
    return None


_FILTER_WORDS = {
    "all": "every execution, approval and failure",
    "failures": "failed and stopped executions",
    "approvals": "approval requests and their outcome",
}


def _channel(r: Request) -> str:
    if not r.actor.channel_id:
        raise OpsError("Run this command in the channel it is about.")
    return r.actor.channel_id


def _subscribe(r: Request) -> str | None:
    channel = _channel(r)
    r.ops.state(r.name)  # the pipeline must exist
    events = r.args.get("events")
    digest = r.args.get("digest")
    zone = r.services.settings.digest_zone
    local_now = utcnow().astimezone(zone)
    today = local_now.date().isoformat()
    digest_time: str | notify_store.Keep | None = notify_store.KEEP
    if digest is not None:
        digest_time = None if digest == "off" else str(digest)
    with transaction(r.services.sessions) as session:
        row, created = notify_store.subscribe(
            session=session,
            pipeline=r.name,
            channel_id=channel,
            created_by=r.actor.user_id,
            events=notify_store.KEEP if events is None else events,
            digest_time=digest_time,
            # A time already past today: the first digest goes out tomorrow.
            digest_sent_on=today
            if isinstance(digest_time, str) and digest_time <= local_now.strftime("%H:%M")
            else None,
        )
    verb = "subscribed this channel to" if created else "changed this channel's subscription to"
    if not created and events is None and digest is None:
        verb = "kept this channel's subscription to"
    text = (
        f"<@{r.actor.user_id}> {verb} *{r.name}*: {_FILTER_WORDS.get(row.events, row.events)} "
        "are posted here, one message per execution kept up to date, events in its thread."
    )
    if row.digest_time is not None:
        text += f" A digest of the last 24 hours is posted daily at {row.digest_time} ({zone.key})."
    elif digest == "off":
        text += " No daily digest."
    r.public(text)
    return ""


def _unsubscribe(r: Request) -> str | None:
    channel = _channel(r)
    with transaction(r.services.sessions) as session:
        removed = notify_store.unsubscribe(session=session, pipeline=r.name, channel_id=channel)
    if not removed:
        ephemeral(r.respond, message=f"This channel is not subscribed to *{r.name}*.")
        return None
    r.public(f"<@{r.actor.user_id}> unsubscribed this channel from *{r.name}*.")
    return ""


def _subscriptions(r: Request) -> str | None:
    channel = _channel(r)
    with r.services.sessions() as session:
        rows = notify_store.subscriptions_for_channel(session=session, channel_id=channel)
    if not rows:
        text = (
            "This channel follows no pipeline: "
            f"`{r.services.settings.command} subscribe NAME` posts one's executions here."
        )
    else:
        lines = [f"*This channel's subscriptions* ({len(rows)}):"]
        zone = r.services.settings.digest_zone.key
        lines += [
            f"• *{row.pipeline}* — {_FILTER_WORDS.get(row.events, row.events)}"
            + (f"; daily digest at {row.digest_time} ({zone})" if row.digest_time else "")
            for row in rows[:40]
        ]
        if len(rows) > 40:
            lines.append(f"…and {len(rows) - 40} more.")
        text = "\n".join(lines)
    r.private(blocks.notice_blocks(message=text), text)
    return None


HANDLERS: dict[str, Callable[[Request], str | None]] = {
    "help": _help,
    "list": _list,
    "status": _status,
    "history": _history,
    "execution": _execution,
    "create": _create,
    "edit": _edit,
    "delete": _delete,
    "start": _start,
    "stop": _stop,
    "retry": _retry,
    "approve": _approve,
    "reject": _reject,
    "disable": _disable,
    "enable": _enable,
    "access": _access,
    "audit": _audit,
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "subscriptions": _subscriptions,
}


# --- approvals, shared with the buttons ---------------------------------------------------------


class ApprovalOutcome:
    def __init__(self, *, message: str, already: str | None) -> None:
        self.message = message
        self.already = already


PENDING = "pending:"
"""Prefix of a click record's outcome while its answer is on its way to the backend."""
PENDING_TAKEOVER_SECONDS = 30.0
"""A pending answer older than this was cut short (the process died): a new click takes over.
Longer than any backend call (the AWS client's retries included)."""


def approval_key(pipeline: str, execution_id: str | None, stage: str, action: str) -> str:
    return f"approval:{pipeline}:{execution_id or '-'}:{stage}:{action}"


def _abandoned(outcome: str, at: datetime, now: datetime) -> bool:
    return outcome.startswith(PENDING) and (now - at).total_seconds() > PENDING_TAKEOVER_SECONDS


def decide_approval(
    services: Services,
    *,
    client: WebClient,
    actor: Actor,
    pipeline: str,
    stage: str,
    action: str,
    approved: bool,
    comment: str | None,
    execution_id: str | None = None,
) -> ApprovalOutcome:
    """Answer the approval that waits, once: a second click or command is told who did.

    The token is read from the pipeline state now; the click record makes the decision
    exactly-once across double clicks, Slack retries and several pipebot processes.
    """
    latest_key = approval_key(pipeline, execution_id, stage, action)
    try:
        approval = services.ops.find_approval(pipeline, stage, action)
    except OpsError:
        with services.sessions() as session:
            earlier = bot_store.get_click(session=session, key=latest_key)
        if earlier is not None and execution_id is not None:
            return ApprovalOutcome(
                message="",
                already=f"Already {earlier.outcome} by <@{earlier.user_id}> at "
                f"{blocks.slack_date(utc(earlier.at))}.",
            )
        raise
    if execution_id is not None and approval.execution_id not in (None, execution_id):
        raise OpsError(
            f"That approval is no longer waiting: `{stage}/{action}` now waits for execution "
            f"`{approval.execution_id}`."
        )
    verdict = "approved" if approved else "rejected"
    # One record per approval attempt (its token) makes the decision exactly-once across
    # double clicks, Slack retries and several pipebot processes. It says "pending" until the
    # backend has the answer: a process killed in between must not leave a gate that still
    # waits but is reported as answered (a later click takes a stale pending record over;
    # the backend itself accepts one answer per token, so the gate is never answered twice).
    key = approval_key(pipeline, approval.execution_id, stage, action) + f":{approval.token}"
    pending = PENDING + verdict
    now = services.now()
    with transaction(services.sessions) as session:
        record, created = bot_store.record_click_once(
            session=session, key=key, user_id=actor.user_id, outcome=pending, at=now
        )
        if not created and _abandoned(record.outcome, utc(record.at), now):
            log.warning(
                "taking over the unfinished answer of %s/%s in %s by %s (from %s)",
                stage,
                action,
                pipeline,
                record.user_id,
                record.at,
            )
            bot_store.forget_click(session=session, key=key)
            record, created = bot_store.record_click_once(
                session=session, key=key, user_id=actor.user_id, outcome=pending, at=now
            )
    if not created:
        if record.outcome.startswith(PENDING):
            return ApprovalOutcome(
                message="",
                already=f"<@{record.user_id}> is answering this approval right now "
                f"(since {blocks.slack_date(utc(record.at))}).",
            )
        return ApprovalOutcome(
            message="",
            already=f"Already {record.outcome} by <@{record.user_id}> at "
            f"{blocks.slack_date(utc(record.at))}.",
        )
    name = user_name(client, actor.user_id)
    summary = f"{verdict.capitalize()} in Slack by {name} ({actor.user_id})" + (
        f": {comment}" if comment else ""
    )
    try:
        services.ops.answer(approval, approved=approved, summary=summary)
    except OpsError:
        with transaction(services.sessions) as session:
            bot_store.forget_click(session=session, key=key)
        raise
    # The latest decision on this gate, to answer a late click once it no longer waits.
    latest_key = approval_key(pipeline, approval.execution_id, stage, action)
    with transaction(services.sessions) as session:
        bot_store.set_click_outcome(session=session, key=key, outcome=verdict)
        bot_store.forget_click(session=session, key=latest_key)
        bot_store.record_click_once(
            session=session, key=latest_key, user_id=actor.user_id, outcome=verdict
        )
    icon = "✅" if approved else "❌"
    note = f": {comment}" if comment else ""
    return ApprovalOutcome(
        message=f"{icon} <@{actor.user_id}> {verdict} *{stage}/{action}* of *{pipeline}*{note}",
        already=None,
    )
