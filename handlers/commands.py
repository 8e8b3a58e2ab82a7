"""The ``/pipeline`` slash command: parse, ack, then act and answer.

Parsing is pure and fast, so a bad command is answered in the ack itself
(privately, with the subcommand's usage). Everything that touches the backend,
the database or Slack's Web API happens after ``ack()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk.web import WebClient

from bot.ops.permissions import Permission
from bot.ops.pipeline_ops import ExecutionView, OpsError, request_token
from bot.slack import ids
from bot.slack.access import (
    OPERATIONS_CREATED,
    OPERATIONS_DISABLED,
    OPERATIONS_RETRIED,
    access_blocks,
    audit_blocks,
)
from bot.slack.execution import execution_blocks
from bot.slack.history import history_blocks, list_blocks
from bot.slack.ids import ButtonRef
from bot.slack.kit import escape
from bot.slack.messages import (
    delete_confirm_blocks,
    error_blocks,
    help_blocks,
    rollback_confirm_blocks,
)
from bot.slack.modals import declaration_modal
from bot.slack.outcomes import overridden_line, retried_line, started_line, stopped_line
from bot.slack.status import status_blocks
from bot.slack.subscriptions import FILTER_WORDS, resumed_text, subscriptions_blocks
from bot.slack.text import Who
from handlers.common import (
    Actor,
    Done,
    Reply,
    Services,
    answer_approval,
    create_form,
    ephemeral,
    logged_actions,
    notice,
    perform,
    require,
    subscribe_on_create,
    user_name,
)
from handlers.grammar import (
    DEMO_NAMES,
    CommandError,
    ExampleNames,
    ParsedCommand,
    UnknownCommandError,
    examples_from,
    help_text,
    normalize_reason,
    parse,
    reason_changes,
)
from storage import bot_store, notify_store
from storage.db import transaction, utcnow

log = logging.getLogger(__name__)


def register(app: App, services: Services) -> None:
    def on_command(ack: Ack, command: dict[str, Any], respond: Respond, client: WebClient) -> None:
        text = command.get("text") or ""
        try:
            parsed = parse(text, slash=services.settings.command)
        except CommandError as exc:
            # An unknown command gets its suggestion and a pointer to `help`, not the help.
            usage = None if isinstance(exc, UnknownCommandError) else exc.usage
            ack(
                response_type="ephemeral",
                text=exc.message[:3000],
                blocks=error_blocks(message=exc.message, usage=usage),
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
    respond: Reply,
    client: WebClient,
    trigger_id: str | None,
) -> None:
    """Carry out a parsed command through ``perform``: every outcome is answered privately
    or in the channel, and every outcome of a mutating command is audited."""
    handler = HANDLERS[parsed.name]

    def work(reply: Reply) -> Done | None:
        return handler(
            Request(
                services=services,
                parsed=parsed,
                actor=actor,
                respond=reply,
                client=client,
                trigger_id=trigger_id,
            )
        )

    perform(
        services,
        actor=actor,
        surface="command",
        what=parsed.name,
        permission=_needed_permission(parsed),
        pipeline=parsed.pipeline,
        respond=respond,
        work=work,
        stage=stage if isinstance(stage := parsed.args.get("stage"), str) else None,
    )


def _needed_permission(parsed: ParsedCommand) -> Permission:
    if parsed.name == "access" and parsed.args.get("op") == "show":
        return Permission.READ
    return parsed.spec.permission


class Request:
    """One command being carried out (what the per-command functions need)."""

    def __init__(
        self,
        *,
        services: Services,
        parsed: ParsedCommand,
        actor: Actor,
        respond: Reply,
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

    def private(self, blocks_: list[dict[str, Any]], text: str) -> None:
        self.respond(
            response_type="ephemeral", replace_original=False, text=text[:3000], blocks=blocks_
        )

    def public(self, message: str) -> None:
        """An outcome the channel should see (who did what)."""
        notice(self.respond, message=message, public=True)

    def allowed(self, permission: Permission) -> bool:
        return self.services.permissions.check(
            user_id=self.actor.user_id, permission=permission, pipeline=self.name
        ).allowed


# --- the commands -------------------------------------------------------------------------------
# Each returns ``Done`` when it changed something (audited with the execution it acted on),
# or None when it only answered (a read, a form opened, an approval someone else answered).


def _help(r: Request) -> Done | None:
    text = help_text(
        command=r.args.get("topic"),
        slash=r.services.settings.command,
        trial_mode=r.services.permissions.trial_mode,
        names=example_names(r.services, channel_id=r.actor.channel_id),
    )
    r.private(help_blocks(text=text, command=r.services.settings.command), text)
    return None


def example_names(services: Services, *, channel_id: str | None) -> ExampleNames:
    """Names for help's examples from a pipeline the user has, so each example can be run
    as it is: one this channel follows, else ``demo`` (the sandbox's), else the first by
    name; its stages, approval, variable and latest execution. The demo's names when there
    is no pipeline yet, or the backend cannot be read (help must answer anyway)."""
    try:
        names = services.ops.names()
        if not names:
            return DEMO_NAMES
        followed: list[str] = []
        if channel_id:
            with services.sessions() as session:
                followed = [
                    row.pipeline
                    for row in notify_store.subscriptions_for_channel(
                        session=session, channel_id=channel_id
                    )
                ]
        choice = next(
            (n for n in followed if n in names),
            DEMO_NAMES.pipeline if DEMO_NAMES.pipeline in names else sorted(names)[0],
        )
        latest = services.ops.executions(choice, 1)
        return examples_from(
            choice,
            services.ops.declaration(choice),
            execution_id=str(latest[0]["pipelineExecutionId"]) if latest else None,
        )
    except OpsError as exc:
        log.info("help shows the demo's names: %s", exc.message)
        return DEMO_NAMES


def _list(r: Request) -> Done | None:
    pipelines = r.ops.list_with_latest()
    count = len(pipelines)
    r.private(
        list_blocks(pipelines=pipelines, now=r.services.now()),
        f"{count} pipeline{'s' if count != 1 else ''}",
    )
    return None


def who_did(
    services: Services,
    *,
    pipeline: str,
    state: Mapping[str, Any] | None = None,
    executions: Sequence[Mapping[str, Any]] = (),
) -> Who:
    """Who did, from Slack, what ``state`` (GetPipelineState) and ``executions``
    (ListPipelineExecutions summaries or one GetPipelineExecution) show: who started each
    execution (or created the pipeline that started it), who disabled each disabled
    transition and who retried each retried stage, from pipebot's starter records and audit
    log (``storage.bot_store``). Where pipebot did not record it, the backend's own caller
    is shown instead."""
    stages = list((state or {}).get("stageStates") or [])
    ids_shown = {str(e.get("pipelineExecutionId")) for e in executions}
    ids_shown |= {
        str((s.get("latestExecution") or {}).get("pipelineExecutionId"))
        for s in stages
        if (s.get("latestExecution") or {}).get("pipelineExecutionId")
    }
    with services.sessions() as session:
        started = bot_store.starters(session=session, execution_ids=ids_shown)
        for execution in executions:
            execution_id = str(execution.get("pipelineExecutionId"))
            trigger = execution.get("trigger") or {}
            at = execution.get("startTime")
            if (
                execution_id not in started
                and trigger.get("triggerType") == "CreatePipeline"
                and isinstance(at, datetime)
            ):
                entry = bot_store.last_actor(
                    session=session, pipeline=pipeline, operations=OPERATIONS_CREATED, around=at
                )
                if entry is not None:
                    started[execution_id] = entry.user_id
        disabled: dict[str, str] = {}
        retried: dict[str, str] = {}
        for stage in stages:
            stage_name = str(stage.get("stageName") or "")
            transition = stage.get("inboundTransitionState") or {}
            if not transition.get("enabled", True):
                changed = transition.get("lastChangedAt")
                entry = bot_store.last_actor(
                    session=session,
                    pipeline=pipeline,
                    operations=OPERATIONS_DISABLED,
                    stage=stage_name,
                    around=changed if isinstance(changed, datetime) else None,
                )
                if entry is not None:
                    disabled[stage_name] = entry.user_id
            retry = stage.get("retryStageMetadata") or {}
            stage_execution = (stage.get("latestExecution") or {}).get("pipelineExecutionId")
            if retry.get("manualStageRetryAttempt") and stage_execution:
                entry = bot_store.last_actor(
                    session=session,
                    pipeline=pipeline,
                    operations=OPERATIONS_RETRIED,
                    execution_id=str(stage_execution),
                    stage=stage_name,
                )
                if entry is not None:
                    retried[stage_name] = entry.user_id
    return Who(started=started, disabled=disabled, retried=retried)


def who_did_view(services: Services, *, pipeline: str, view: ExecutionView) -> Who:
    """``who_did`` for one execution's view (``execution``, View log)."""
    # GetPipelineExecution has no start time: its first action's tells when it began.
    began = min(
        (a["startTime"] for a in view.actions if isinstance(a.get("startTime"), datetime)),
        default=None,
    )
    return who_did(services, pipeline=pipeline, executions=[{"startTime": began, **view.execution}])


def _status(r: Request) -> Done | None:
    state = r.ops.state(r.name)
    executions = r.ops.executions(r.name, 5)
    operate = r.allowed(Permission.OPERATE)
    r.private(
        status_blocks(
            state=state,
            executions=executions,
            approvals_allowed=r.allowed(Permission.APPROVE),
            operate_allowed=operate,
            now=r.services.now(),
            command=r.services.settings.command,
            who=who_did(r.services, pipeline=r.name, state=state, executions=executions),
            rollback_targets=(
                r.ops.rollback_targets(r.name, state, executions) if operate else None
            ),
            parallel_approvals=r.ops.parallel_approvals(r.name, executions),
            logged=logged_actions(r.services, r.name),
        ),
        f"Status of {r.name}",
    )
    return None


def _history(r: Request) -> Done | None:
    executions = r.ops.executions(r.name, int(r.args.get("count") or 10))
    r.private(
        history_blocks(
            pipeline=r.name,
            executions=executions,
            command=r.services.settings.command,
            who=who_did(r.services, pipeline=r.name, executions=executions),
        ),
        f"History of {r.name}",
    )
    return None


def _execution(r: Request) -> Done | None:
    view = r.ops.execution_view(r.name, str(r.args["execution"]))
    execution_id = str(view.execution.get("pipelineExecutionId") or r.args["execution"])
    r.private(
        execution_blocks(
            pipeline=r.name,
            execution=view.execution,
            actions=view.actions,
            log_tail=view.log_tail,
            command=r.services.settings.command,
            who=who_did_view(r.services, pipeline=r.name, view=view),
            rules=view.rules,
            rules_error=view.rules_error,
            markers=view.markers,
            logs=r.ops.local,
        ),
        f"Execution {execution_id} of {r.name}",
    )
    return None


def _create(r: Request) -> Done | None:
    declaration = r.args.get("declaration")
    if not declaration:
        _open_modal(r, create_form(r.services, channel_id=r.actor.channel_id))
        return None
    created = r.ops.create(str(declaration))
    name = created["name"]
    note = subscribe_on_create(r.services, pipeline=name, actor=r.actor)
    r.public(
        f"<@{r.actor.user_id}> created pipeline *{name}* (version {created['version']}).{note}"
    )
    return Done(pipeline=name)


def _edit(r: Request) -> Done | None:
    text = r.ops.declaration_text(r.name)
    _open_modal(
        r,
        declaration_modal(
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


def _delete(r: Request) -> Done | None:
    r.ops.state(r.name)  # the pipeline must exist before we ask
    r.private(delete_confirm_blocks(pipeline=r.name), f"Delete {r.name}?")
    return None


def _start(r: Request) -> Done | None:
    token = request_token("slack", r.trigger_id or r.services.now().isoformat())
    execution_id = r.ops.start(r.name, dict(r.args.get("variables") or {}), request_token=token)
    with transaction(r.services.sessions) as session:
        bot_store.record_starter(
            session=session, execution_id=execution_id, pipeline=r.name, user_id=r.actor.user_id
        )
    r.public(started_line(user_id=r.actor.user_id, pipeline=r.name, execution_id=execution_id))
    return Done(execution_id=execution_id)


def _stop(r: Request) -> Done | None:
    abandon = bool(r.args.get("abandon"))
    reason = r.args.get("reason")
    full_reason = f"Stopped by {user_name(r.client, r.actor.user_id)} in Slack" + (
        f": {reason}" if reason else ""
    )
    execution_id = r.ops.stop(r.name, r.args.get("execution"), abandon=abandon, reason=full_reason)
    r.public(
        stopped_line(
            user_id=r.actor.user_id, pipeline=r.name, execution_id=execution_id, abandon=abandon
        )
    )
    return Done(execution_id=execution_id)


def _retry(r: Request) -> Done | None:
    mode = str(r.args.get("mode") or "FAILED_ACTIONS")
    stage, execution_id = r.ops.retry(
        r.name, r.args.get("stage"), r.args.get("execution"), mode=mode
    )
    r.public(
        retried_line(
            user_id=r.actor.user_id,
            pipeline=r.name,
            stage=stage,
            execution_id=execution_id,
            all_actions=mode == "ALL_ACTIONS",
        )
    )
    # The stage in the audit entry tells whoever asks who retried it (``who_did``).
    return Done(execution_id=execution_id, detail=bot_store.stage_detail(stage))


def _rollback(r: Request) -> Done | None:
    """Asks first: the target execution, its revisions and when it succeeded, with Roll back
    and Cancel buttons (the Confirm click rolls back, audited as ``ROLLBACK_CONFIRM``). A
    rollback redeploys older code, so like ``delete`` it shows what it will do before it
    does it, privately, rather than acting on a typo in a stage name or an ID."""
    stage = str(r.args["stage"])
    state = r.ops.state(r.name)
    execution = r.args.get("execution")
    if execution:
        target = r.ops.describe_target(r.name, stage, str(execution), state=state)
    else:
        target = r.ops.rollback_target(r.name, stage, state=state)
    r.private(
        rollback_confirm_blocks(target=target, now=r.services.now()),
        f"Roll back {stage} of {r.name} to {target.execution_id}?",
    )
    return None


def _override(r: Request) -> Done | None:
    condition_type, execution_id = r.ops.override(
        r.name, str(r.args["stage"]), r.args.get("execution"), r.args.get("condition")
    )
    stage = str(r.args["stage"])
    r.public(
        overridden_line(
            user_id=r.actor.user_id,
            pipeline=r.name,
            stage=stage,
            condition_type=condition_type,
            execution_id=execution_id,
        )
    )
    return Done(execution_id=execution_id, detail=bot_store.stage_detail(stage, condition_type))


def _answer(r: Request, *, approved: bool) -> Done | None:
    execution = r.args.get("execution")
    if execution:
        # One execution named: in PARALLEL mode, the approval it waits at, whichever
        # execution the pipeline's state shows.
        approval = r.ops.execution_approval(
            r.name, str(execution), r.args.get("stage"), r.args.get("action")
        )
    else:
        approval = r.ops.find_approval(r.name, r.args.get("stage"), r.args.get("action"))
    # Only now is the execution known, so the pipeline's no-self-approval rule applies here.
    require(
        r.services,
        actor=r.actor,
        permission=Permission.APPROVE,
        pipeline=r.name,
        execution_id=approval.execution_id,
    )
    line = answer_approval(
        r.services,
        r.respond,
        client=r.client,
        actor=r.actor,
        pipeline=r.name,
        stage=approval.stage,
        action=approval.action,
        approved=approved,
        comment=r.args.get("comment"),
        approval=approval,
    )
    if line is None:
        return None
    r.public(line)
    return Done(execution_id=approval.execution_id)


def _approve(r: Request) -> Done | None:
    return _answer(r, approved=True)


def _reject(r: Request) -> Done | None:
    return _answer(r, approved=False)


def _disable(r: Request) -> Done | None:
    typed = str(r.args["reason"])
    reason, _ = normalize_reason(typed)
    stage = str(r.args["stage"])
    r.ops.set_transition(r.name, stage, enabled=False, reason=reason)
    changes = reason_changes(typed)
    if changes:  # the user's own text was changed: tell them (only them) how
        notice(r.respond, message=f"{changes} The reason reads: _{escape(reason)}_", public=False)
    r.public(
        f"<@{r.actor.user_id}> disabled the transition into *{escape(stage)}* of "
        f"*{escape(r.name)}*: {escape(reason)}"
    )
    # The stage in the audit entry tells whoever asks who disabled it (``who_did``).
    return Done(detail=bot_store.stage_detail(stage, reason))


def _enable(r: Request) -> Done | None:
    stage = str(r.args["stage"])
    if r.ops.transition_disabled(r.name, stage) is False:
        # Nothing changes, so nothing is announced (or audited): only the user is told.
        notice(
            r.respond,
            message=f"The transition into *{escape(stage)}* of *{escape(r.name)}* is not "
            "disabled: nothing to enable.",
            public=False,
        )
        return None
    r.ops.set_transition(r.name, stage, enabled=True, reason=None)
    r.public(
        f"<@{r.actor.user_id}> enabled the transition into *{escape(stage)}* of *{escape(r.name)}*."
    )
    return Done()


def _access(r: Request) -> Done | None:
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
        access_blocks(
            pipeline=r.name,
            operators=list(lists.operators),
            approvers=list(lists.approvers),
            no_self_approval=lists.no_self_approval,
            admins=sorted(r.services.permissions.admins),
            command=r.services.settings.command,
        ),
        f"Access to {r.name}",
    )
    return Done() if op != "show" else None


def _audit(r: Request) -> Done | None:
    with r.services.sessions() as session:
        entries = bot_store.list_audit(session=session, pipeline=r.parsed.pipeline, limit=20)
    r.private(
        audit_blocks(
            entries=entries, pipeline=r.parsed.pipeline, command=r.services.settings.command
        ),
        "Audit log",
    )
    return None


def _channel(r: Request) -> str:
    if not r.actor.channel_id:
        raise OpsError("Run this command in the channel it is about.")
    return r.actor.channel_id


def _subscribe(r: Request) -> Done | None:
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
        # Subscribing in a channel whose subscriptions were suspended resumes them all.
        resumed = notify_store.resume_channel(session=session, channel_id=channel)
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
    if resumed and not created:
        verb = "resumed this channel's subscription to"
    text = (
        f"<@{r.actor.user_id}> {verb} *{r.name}*: {FILTER_WORDS.get(row.events, row.events)} "
        "are posted here, one message per execution kept up to date, events in its thread."
    )
    if row.digest_time is not None:
        text += f" A digest of the last 24 hours is posted daily at {row.digest_time} ({zone.key})."
    elif digest == "off":
        text += " No daily digest."
    detail = None
    if resumed:
        text += " " + resumed_text(resumed, now=utcnow())
        detail = "resumed after " + ", ".join(
            f"{s.pipeline} (suspended {s.suspended_at:%Y-%m-%d %H:%M} UTC: {s.error})"
            for s in resumed
        )
    r.public(text)
    return Done(detail=detail)


def _unsubscribe(r: Request) -> Done | None:
    channel = _channel(r)
    with transaction(r.services.sessions) as session:
        removed = notify_store.unsubscribe(session=session, pipeline=r.name, channel_id=channel)
    if not removed:
        ephemeral(r.respond, message=f"This channel is not subscribed to *{r.name}*.")
        return None
    r.public(f"<@{r.actor.user_id}> unsubscribed this channel from *{r.name}*.")
    return Done()


def _subscriptions(r: Request) -> Done | None:
    channel = _channel(r)
    with r.services.sessions() as session:
        rows = notify_store.subscriptions_for_channel(session=session, channel_id=channel)
    blocks = subscriptions_blocks(
        subscriptions=rows,
        zone=r.services.settings.digest_zone.key,
        now=utcnow(),
        command=r.services.settings.command,
    )
    text = "\n".join(
        str(block["text"]["text"]) for block in blocks if block.get("type") == "section"
    )
    r.private(blocks, text)
    return None


HANDLERS: dict[str, Callable[[Request], Done | None]] = {
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
    "rollback": _rollback,
    "override": _override,
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
