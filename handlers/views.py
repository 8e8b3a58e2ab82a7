"""Modal submissions: create/edit a pipeline, reject with a comment, stop options.

A declaration is validated before the ack, locally and fast, so its errors show
inline in the modal; the backend is called after the ack, through
``handlers.common.perform`` like commands and clicks, and its answer is posted to the
user in the channel the modal came from (``FormReply``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk.errors import SlackApiError
from slack_sdk.web import WebClient

from bot.engine.declaration import parse_declaration_text, split_declaration, validate_declaration
from bot.engine.errors import DeclarationError
from bot.ops.permissions import Permission
from bot.ops.pipeline_ops import OpsError
from bot.ops.pipeline_state import IN_PROGRESS
from bot.slack import ids, notifications
from bot.slack.ids import ButtonRef
from bot.slack.kit import Block
from bot.slack.modals import (
    CREATE_BOXES,
    FormOrigin,
    declaration_block_id,
    declaration_from_values,
    full_box,
    full_box_error,
)
from bot.slack.outcomes import (
    decision_outcome,
    outcome_blocks,
    stopped_line,
    update_outcome_line,
)
from bot.slack.status import status_blocks
from bot.slack.text import slack_date
from handlers.commands import who_did
from handlers.common import (
    Actor,
    Done,
    FormReply,
    Reply,
    Services,
    answer_approval,
    ephemeral,
    logged_actions,
    notice,
    perform,
    publish_home,
    subscribe_on_create,
    user_name,
)
from storage import notify_store

log = logging.getLogger(__name__)

Listener = Callable[..., None]


def register(app: App, services: Services) -> None:
    app.view(ids.CREATE_VIEW)(_declaration_listener(services, editing=False))
    app.view(ids.EDIT_VIEW)(_declaration_listener(services, editing=True))
    app.view(ids.REJECT_VIEW)(_reject_listener(services))
    app.view(ids.STOP_VIEW)(_stop_listener(services))


def _value(view: dict[str, Any], block: str, element: str) -> Any:
    state = ((view.get("state") or {}).get("values") or {}).get(block) or {}
    item = state.get(element) or {}
    if "selected_option" in item:
        return (item.get("selected_option") or {}).get("value")
    return item.get("value")


def _origin(view: dict[str, Any]) -> FormOrigin | None:
    try:
        return FormOrigin.decode(str(view.get("private_metadata") or ""))
    except ValueError:
        return None


def _ref(view: dict[str, Any]) -> ButtonRef | None:
    origin = _origin(view)
    return origin.ref if origin is not None else None


def _boxes(view: dict[str, Any], *, editing: bool, full: int) -> int:
    """How many declaration boxes the submitted form has (its blocks say; else the Create
    form's number, or just enough for the ``full`` one)."""
    ids_ = {declaration_block_id(i) for i in range(100)}
    found = sum(1 for b in view.get("blocks") or [] if b.get("block_id") in ids_)
    return found or (full + 1 if editing else CREATE_BOXES)


def _exists(services: Services, name: str) -> bool:
    """Whether a pipeline is called ``name`` (one GetPipeline). Any other answer than "not
    found" counts as no: the save itself then says what went wrong."""
    try:
        services.ops.declaration(name)
    except OpsError:
        return False
    return True


def _submitter(body: dict[str, Any], ref: ButtonRef | None) -> Actor:
    """Who submitted the form, in the channel it was opened from (none if it says none)."""
    return Actor(
        user_id=(body.get("user") or {}).get("id", "?"),
        channel_id=ref.channel if ref is not None else None,
    )


# --- create and edit ----------------------------------------------------------------------------


def _declaration_listener(services: Services, *, editing: bool) -> Listener:
    def listen(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        values = (view.get("state") or {}).get("values") or {}
        full = full_box(values)
        if full is not None:
            # Slack's client cuts a paste at the box's 3000 characters without a word: what
            # the box holds may be only the start, so it is never saved as it is.
            message = full_box_error(
                index=full,
                boxes=_boxes(view, editing=editing, full=full),
                command=services.settings.command,
                editing=editing,
            )
            ack(response_action="errors", errors={declaration_block_id(full): message})
            return
        text = declaration_from_values(values)
        ref = _ref(view)
        try:
            pipeline, _tags = split_declaration(parse_declaration_text(text))
            validate_declaration(pipeline, local=services.ops.local)
        except DeclarationError as exc:
            ack(response_action="errors", errors={ids.DECLARATION_BLOCK: exc.message[:2000]})
            return
        name = str(pipeline.get("name"))
        if not editing and _exists(services, name):
            # Said under the box, so the pasted declaration stays in the open form.
            command = services.settings.command
            ack(
                response_action="errors",
                errors={
                    ids.DECLARATION_BLOCK: f"A pipeline named {name} already exists: give this "
                    f"one another name, or change that one with {command} edit {name}."
                },
            )
            return
        if editing and ref is not None and pipeline.get("name") != ref.pipeline:
            ack(
                response_action="errors",
                errors={
                    ids.DECLARATION_BLOCK: f"This form edits {ref.pipeline}; the declaration "
                    f"is named {pipeline.get('name')}. Renaming is not supported."
                },
            )
            return
        ack()
        actor = _submitter(body, ref)
        services.later(
            perform,
            services,
            actor=actor,
            surface="view",
            what="edit" if editing else "create",
            permission=Permission.OPERATE,
            pipeline=name,
            respond=FormReply(client=client, actor=actor),
            work=lambda reply: _save(
                services, reply, actor=actor, name=name, text=text, editing=editing
            ),
        )

    return listen


def _save(
    services: Services, reply: Reply, *, actor: Actor, name: str, text: str, editing: bool
) -> Done:
    in_flight: list[str] = []
    if editing:
        in_flight = [
            str(e["pipelineExecutionId"])
            for e in services.ops.executions(name, 20)
            if e["status"] in IN_PROGRESS
        ]
    result = services.ops.update(name, text) if editing else services.ops.create(text)
    verb = "updated" if editing else "created"
    note = (
        update_outcome_line(version=int(result["version"]), in_flight=in_flight)
        if editing
        else subscribe_on_create(services, pipeline=name, actor=actor)
    )
    notice(
        reply,
        message=f"<@{actor.user_id}> {verb} pipeline *{name}* (version {result['version']})."
        + note,
        public=True,
    )
    return Done()


# --- reject -------------------------------------------------------------------------------------


def _reject_listener(services: Services) -> Listener:
    def listen(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        comment = str(_value(view, ids.COMMENT_BLOCK, ids.COMMENT_INPUT) or "").strip()
        if not comment:
            ack(response_action="errors", errors={ids.COMMENT_BLOCK: "Say why you reject."})
            return
        ack()
        origin = _origin(view)
        ref = origin.ref if origin is not None else None
        actor = _submitter(body, ref)
        reply = FormReply(client=client, actor=actor)
        if origin is None or ref is None or ref.stage is None or ref.action is None:
            services.later(
                ephemeral,
                reply,
                message="That form no longer says which approval it answers; use `reject`.",
            )
            return
        services.later(
            perform,
            services,
            actor=actor,
            surface="view",
            what="reject",
            permission=Permission.APPROVE,
            pipeline=ref.pipeline,
            execution_id=ref.execution,
            respond=reply,
            work=lambda reply_: _reject(
                services, reply_, client=client, actor=actor, origin=origin, comment=comment
            ),
        )

    return listen


def _reject(
    services: Services,
    reply: Reply,
    *,
    client: WebClient,
    actor: Actor,
    origin: FormOrigin,
    comment: str,
) -> Done | None:
    ref = origin.ref
    stage, action = ref.stage or "?", ref.action or "?"
    line = answer_approval(
        services,
        reply,
        client=client,
        actor=actor,
        pipeline=ref.pipeline,
        stage=stage,
        action=action,
        approved=False,
        comment=comment,
        execution_id=ref.execution,
    )
    if line is None:
        return None
    notice(reply, message=line, public=True)
    thread_line = decision_outcome(
        stage=stage, action=action, approved=False, user_id=actor.user_id, comment=comment
    )
    return Done(
        then=lambda: _update_origin(
            services,
            client,
            origin,
            f"{line} at {slack_date(services.now())}",
            actor_id=actor.user_id,
            reply_outcome=thread_line,
        )
    )


# --- stop ---------------------------------------------------------------------------------------


def _stop_listener(services: Services) -> Listener:
    def listen(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        ack()
        origin = _origin(view)
        ref = origin.ref if origin is not None else None
        actor = _submitter(body, ref)
        reply = FormReply(client=client, actor=actor)
        if origin is None or ref is None:
            services.later(
                ephemeral,
                reply,
                message="That form no longer says which execution it stops; use `stop`.",
            )
            return
        abandon = _value(view, ids.STOP_MODE_BLOCK, ids.STOP_MODE_INPUT) == "abandon"
        reason = str(_value(view, ids.STOP_REASON_BLOCK, ids.STOP_REASON_INPUT) or "").strip()
        services.later(
            perform,
            services,
            actor=actor,
            surface="view",
            what="stop",
            permission=Permission.OPERATE,
            pipeline=ref.pipeline,
            execution_id=ref.execution,
            respond=reply,
            work=lambda reply_: _stop(
                services,
                reply_,
                client=client,
                actor=actor,
                origin=origin,
                abandon=abandon,
                reason=reason,
            ),
        )

    return listen


def _stop(
    services: Services,
    reply: Reply,
    *,
    client: WebClient,
    actor: Actor,
    origin: FormOrigin,
    abandon: bool,
    reason: str,
) -> Done:
    ref = origin.ref
    full = f"Stopped by {user_name(client, actor.user_id)} in Slack" + (
        f": {reason}" if reason else ""
    )
    execution_id = services.ops.stop(ref.pipeline, ref.execution, abandon=abandon, reason=full)
    message = stopped_line(
        user_id=actor.user_id, pipeline=ref.pipeline, execution_id=execution_id, abandon=abandon
    )
    notice(reply, message=message, public=True)
    return Done(
        execution_id=execution_id,
        then=lambda: _update_origin(
            services,
            client,
            origin,
            message.removesuffix(".") + f" at {slack_date(services.now())}.",
            actor_id=actor.user_id,
        ),
    )


# --- the message a form came from -----------------------------------------------------------------


def _update_origin(
    services: Services,
    client: WebClient,
    origin: FormOrigin,
    outcome: str,
    *,
    actor_id: str,
    reply_outcome: str | None = None,
) -> None:
    """Redraw the message a modal was opened from: a status message with the current status
    (through the click's ``response_url`` when it was ephemeral, which ``chat.update`` cannot
    change), a notification's thread reply keeping what it says, its buttons giving way to
    ``reply_outcome`` (else ``outcome``) as the notifier draws it. A form opened from App
    Home (no channel) redraws the submitter's Home tab."""
    ref = origin.ref
    if ref.channel is None:
        publish_home(services, client, actor_id)
        return
    if origin.response_url is not None:
        blocks = _fresh_status(services, ref.pipeline, actor_id=actor_id)
        if blocks is None:
            return
        respond = Respond(response_url=origin.response_url, proxy=client.proxy, ssl=client.ssl)
        try:
            answer = respond(
                replace_original=True,
                text=outcome[:3000],
                blocks=outcome_blocks(original=blocks, outcome=outcome, drop=()),
            )
        except OSError:
            log.info("could not redraw the ephemeral message of %s in %s", actor_id, ref.channel)
            return
        if answer.status_code != 200:
            # Past 30 minutes or 5 uses Slack refuses the response_url; the outcome is told.
            log.info(
                "could not redraw the ephemeral message of %s in %s (%s: %s)",
                actor_id,
                ref.channel,
                answer.status_code,
                answer.body,
            )
        return
    if ref.message_ts is None:
        return
    with services.sessions() as session:
        payload = notify_store.event_reply_payload(
            session=session, channel_id=ref.channel, message_ts=ref.message_ts
        )
    if payload is not None:
        shown = reply_outcome or outcome
        original = list(json.loads(payload).get("blocks") or [])
        try:
            client.chat_update(
                channel=ref.channel,
                ts=ref.message_ts,
                text=shown[:3000],
                blocks=notifications.resolved_reply(original_blocks=original, outcome=shown),
            )
        except SlackApiError:
            log.info("could not redraw reply %s in %s", ref.message_ts, ref.channel)
        return
    fresh = _fresh_status(services, ref.pipeline, actor_id=actor_id)
    if fresh is None:
        return
    try:
        client.chat_update(
            channel=ref.channel,
            ts=ref.message_ts,
            text=outcome[:3000],
            blocks=outcome_blocks(original=fresh, outcome=outcome, drop=()),
        )
    except SlackApiError:
        log.info("could not redraw message %s in %s", ref.message_ts, ref.channel)


def _fresh_status(services: Services, pipeline: str, *, actor_id: str) -> list[Block] | None:
    """The pipeline's status drawn afresh for ``actor_id`` (the buttons they may use); None
    when it cannot be read (the outcome is told anyway)."""

    def may(permission: Permission) -> bool:
        return services.permissions.check(
            user_id=actor_id, permission=permission, pipeline=pipeline
        ).allowed

    try:
        state = services.ops.state(pipeline)
        executions = services.ops.executions(pipeline, 5)
        return status_blocks(
            state=state,
            executions=executions,
            approvals_allowed=may(Permission.APPROVE),
            operate_allowed=may(Permission.OPERATE),
            now=services.now(),
            who=who_did(services, pipeline=pipeline, state=state, executions=executions),
            logged=logged_actions(services, pipeline),
        )
    except OpsError:
        log.info("could not read %s to redraw its status", pipeline)
        return None
