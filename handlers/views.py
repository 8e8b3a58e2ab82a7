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

from slack_bolt import Ack, App
from slack_sdk.errors import SlackApiError
from slack_sdk.web import WebClient

from bot.engine.declaration import parse_declaration_text, split_declaration, validate_declaration
from bot.engine.errors import DeclarationError
from bot.ops.permissions import Permission
from bot.ops.pipeline_ops import OpsError
from bot.ops.pipeline_state import IN_PROGRESS
from bot.slack import ids, notifications
from bot.slack.ids import ButtonRef
from bot.slack.modals import declaration_from_values
from bot.slack.outcomes import (
    decision_outcome,
    outcome_blocks,
    update_outcome_line,
)
from bot.slack.status import status_blocks
from bot.slack.text import slack_date
from handlers.common import (
    Actor,
    Done,
    FormReply,
    Reply,
    Services,
    answer_approval,
    ephemeral,
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


def _ref(view: dict[str, Any]) -> ButtonRef | None:
    try:
        return ButtonRef.decode(str(view.get("private_metadata") or ""))
    except ValueError:
        return None


def _submitter(body: dict[str, Any], ref: ButtonRef | None) -> Actor:
    """Who submitted the form, in the channel it was opened from (none if it says none)."""
    return Actor(
        user_id=(body.get("user") or {}).get("id", "?"),
        channel_id=ref.channel if ref is not None else None,
    )


# --- create and edit ----------------------------------------------------------------------------


def _declaration_listener(services: Services, *, editing: bool) -> Listener:
    def listen(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        text = declaration_from_values((view.get("state") or {}).get("values") or {})
        ref = _ref(view)
        try:
            pipeline, _tags = split_declaration(parse_declaration_text(text))
            validate_declaration(pipeline, local=services.ops.local)
        except DeclarationError as exc:
            ack(response_action="errors", errors={ids.DECLARATION_BLOCK: exc.message[:2000]})
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
        name = str(pipeline.get("name"))
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
        ref = _ref(view)
        actor = _submitter(body, ref)
        reply = FormReply(client=client, actor=actor)
        if ref is None or ref.stage is None or ref.action is None:
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
                services, reply_, client=client, actor=actor, ref=ref, comment=comment
            ),
        )

    return listen


def _reject(
    services: Services,
    reply: Reply,
    *,
    client: WebClient,
    actor: Actor,
    ref: ButtonRef,
    comment: str,
) -> Done | None:
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
            ref,
            f"{line} at {slack_date(services.now())}",
            actor_id=actor.user_id,
            reply_outcome=thread_line,
        )
    )


# --- stop ---------------------------------------------------------------------------------------


def _stop_listener(services: Services) -> Listener:
    def listen(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        ack()
        ref = _ref(view)
        actor = _submitter(body, ref)
        reply = FormReply(client=client, actor=actor)
        if ref is None:
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
                ref=ref,
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
    ref: ButtonRef,
    abandon: bool,
    reason: str,
) -> Done:
    full = f"Stopped by {user_name(client, actor.user_id)} in Slack" + (
        f": {reason}" if reason else ""
    )
    execution_id = services.ops.stop(ref.pipeline, ref.execution, abandon=abandon, reason=full)
    how = "stopped and abandoned" if abandon else "is stopping"
    message = f"⏹ <@{actor.user_id}>: execution `{execution_id}` of *{ref.pipeline}* {how}"
    notice(reply, message=message, public=True)
    return Done(
        execution_id=execution_id,
        then=lambda: _update_origin(
            services,
            client,
            ref,
            f"{message} at {slack_date(services.now())}",
            actor_id=actor.user_id,
        ),
    )


# --- the message a form came from -----------------------------------------------------------------


def _update_origin(
    services: Services,
    client: WebClient,
    ref: ButtonRef,
    outcome: str,
    *,
    actor_id: str,
    reply_outcome: str | None = None,
) -> None:
    """Redraw the message a modal was opened from, when it is a channel message: a status
    message with the current status, a notification's thread reply keeping what it says,
    its buttons giving way to ``reply_outcome`` (else ``outcome``) as the notifier draws it.
    A form opened from App Home (no channel) redraws the submitter's Home tab."""
    if ref.channel is None:
        publish_home(services, client, actor_id)
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
    try:
        state = services.ops.state(ref.pipeline)
        executions = services.ops.executions(ref.pipeline, 5)
        fresh = status_blocks(
            state=state,
            executions=executions,
            approvals_allowed=True,
            operate_allowed=True,
            now=services.now(),
        )
        client.chat_update(
            channel=ref.channel,
            ts=ref.message_ts,
            text=outcome[:3000],
            blocks=outcome_blocks(original=fresh, outcome=outcome, drop=()),
        )
    except (OpsError, SlackApiError):
        # An ephemeral message cannot be updated by chat.update; the outcome is still told.
        log.info("could not redraw message %s in %s", ref.message_ts, ref.channel)
