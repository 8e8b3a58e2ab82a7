"""Modal submissions: create/edit a pipeline, reject with a comment, stop options.

A declaration is validated before the ack, locally and fast, so its errors show
inline in the modal; the backend is called after the ack and its answer is
posted privately to the user in the channel the modal came from.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from slack_bolt import App
from slack_sdk.errors import SlackApiError
from slack_sdk.web import WebClient

from bot.engine.declaration import parse_declaration_text, split_declaration, validate_declaration
from bot.engine.errors import DeclarationError
from bot.ops.pipeline_ops import OpsError
from bot.slack import blocks, ids, notifications
from bot.slack.ids import ButtonRef
from handlers.commands import decide_approval, subscribe_on_create
from handlers.common import Actor, Services, audit, check, explain, user_name
from handlers.grammar import Permission
from storage import notify_store

log = logging.getLogger(__name__)


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


class Reply:
    """Where a modal's outcome goes: privately to its user, in the channel it came from."""

    def __init__(self, *, client: WebClient, actor: Actor) -> None:
        self.client = client
        self.actor = actor

    def tell(self, message: str, *, public: bool = False) -> None:
        kwargs: dict[str, Any] = {
            "text": message[:3000],
            "blocks": blocks.notice_blocks(message=message),
        }
        try:
            if self.actor.channel_id is None:
                self.client.chat_postMessage(channel=self.actor.user_id, **kwargs)
            elif public:
                self.client.chat_postMessage(channel=self.actor.channel_id, **kwargs)
            else:
                self.client.chat_postEphemeral(
                    channel=self.actor.channel_id, user=self.actor.user_id, **kwargs
                )
        except SlackApiError:
            log.warning("could not tell %s the outcome of a form", self.actor.user_id)


def register(app: App, services: Services) -> None:
    def declaration_listener(callback_id: str) -> Any:
        def listen(ack: Any, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
            text = blocks.declaration_from_values((view.get("state") or {}).get("values") or {})
            ref = _ref(view)
            try:
                pipeline, _tags = split_declaration(parse_declaration_text(text))
                validate_declaration(pipeline, local=services.ops.local)
            except DeclarationError as exc:
                ack(response_action="errors", errors={ids.DECLARATION_BLOCK: exc.message[:2000]})
                return
            editing = callback_id == ids.EDIT_VIEW
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
            services.later(work, body, client, ref, pipeline, text, editing)

        def work(
            body: dict[str, Any],
            client: WebClient,
            ref: ButtonRef | None,
            pipeline: dict[str, Any],
            text: str,
            editing: bool,
        ) -> None:
            actor = Actor(
                user_id=(body.get("user") or {}).get("id", "?"),
                channel_id=ref.channel if ref is not None else None,
            )
            name = str(pipeline.get("name"))
            reply = Reply(client=client, actor=actor)
            what = "edit" if editing else "create"
            decision = check(
                services,
                actor=actor,
                permission=Permission.OPERATE.value,
                pipeline=name,
                kind="view",
                what=what,
            )
            if not decision.allowed:
                reply.tell(decision.reason)
                return
            try:
                result = services.ops.update(name, text) if editing else services.ops.create(text)
            except OpsError as exc:
                _failed(
                    services,
                    reply,
                    exc,
                    what=what,
                    pipeline=name,
                    execution_id=None,
                    suggest=False,
                )
                return
            audit(services, actor=actor, kind="view", what=what, outcome="ok", pipeline=name)
            verb = "updated" if editing else "created"
            note = "" if editing else subscribe_on_create(services, pipeline=name, actor=actor)
            reply.tell(
                f"<@{actor.user_id}> {verb} pipeline *{name}* (version {result['version']})."
                + note,
                public=True,
            )

        return listen

    app.view(ids.CREATE_VIEW)(declaration_listener(ids.CREATE_VIEW))
    app.view(ids.EDIT_VIEW)(declaration_listener(ids.EDIT_VIEW))

    def reject_listener(
        ack: Any, body: dict[str, Any], view: dict[str, Any], client: WebClient
    ) -> None:
        comment = str(_value(view, ids.COMMENT_BLOCK, ids.COMMENT_INPUT) or "").strip()
        if not comment:
            ack(response_action="errors", errors={ids.COMMENT_BLOCK: "Say why you reject."})
            return
        ack()
        services.later(reject_work, body, view, client, comment)

    def reject_work(
        body: dict[str, Any], view: dict[str, Any], client: WebClient, comment: str
    ) -> None:
        ref = _ref(view)
        actor = Actor(
            user_id=(body.get("user") or {}).get("id", "?"),
            channel_id=ref.channel if ref is not None else None,
        )
        reply = Reply(client=client, actor=actor)
        if ref is None or ref.stage is None or ref.action is None:
            reply.tell("That form no longer says which approval it answers; use `reject`.")
            return
        decision = check(
            services,
            actor=actor,
            permission=Permission.APPROVE.value,
            pipeline=ref.pipeline,
            kind="view",
            what="reject",
            execution_id=ref.execution,
        )
        if not decision.allowed:
            reply.tell(decision.reason)
            return
        try:
            outcome = decide_approval(
                services,
                client=client,
                actor=actor,
                pipeline=ref.pipeline,
                stage=ref.stage,
                action=ref.action,
                approved=False,
                comment=comment,
                execution_id=ref.execution,
            )
        except OpsError as exc:
            _failed(
                services,
                reply,
                exc,
                what="reject",
                pipeline=ref.pipeline,
                execution_id=ref.execution,
                suggest=True,
            )
            return
        if outcome.already is not None:
            reply.tell(outcome.already)
            return
        audit(
            services,
            actor=actor,
            kind="view",
            what="reject",
            outcome="ok",
            pipeline=ref.pipeline,
            execution_id=ref.execution,
        )
        _update_origin(
            client,
            ref,
            outcome.message + f" at {blocks.slack_date(services.now())}",
            services,
            reply_outcome=notifications.decision_outcome(
                stage=ref.stage or "?",
                action=ref.action or "?",
                approved=False,
                user_id=actor.user_id,
                comment=comment,
            ),
        )
        reply.tell(outcome.message, public=True)

    app.view(ids.REJECT_VIEW)(reject_listener)

    def stop_listener(
        ack: Any, body: dict[str, Any], view: dict[str, Any], client: WebClient
    ) -> None:
        ack()
        services.later(stop_work, body, view, client)

    def stop_work(body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        ref = _ref(view)
        actor = Actor(
            user_id=(body.get("user") or {}).get("id", "?"),
            channel_id=ref.channel if ref is not None else None,
        )
        reply = Reply(client=client, actor=actor)
        if ref is None:
            reply.tell("That form no longer says which execution it stops; use `stop`.")
            return
        abandon = _value(view, ids.STOP_MODE_BLOCK, ids.STOP_MODE_INPUT) == "abandon"
        reason = str(_value(view, ids.STOP_REASON_BLOCK, ids.STOP_REASON_INPUT) or "").strip()
        decision = check(
            services,
            actor=actor,
            permission=Permission.OPERATE.value,
            pipeline=ref.pipeline,
            kind="view",
            what="stop",
        )
        if not decision.allowed:
            reply.tell(decision.reason)
            return
        full = f"Stopped by {user_name(client, actor.user_id)} in Slack" + (
            f": {reason}" if reason else ""
        )
        try:
            execution_id = services.ops.stop(
                ref.pipeline, ref.execution, abandon=abandon, reason=full
            )
        except OpsError as exc:
            _failed(
                services,
                reply,
                exc,
                what="stop",
                pipeline=ref.pipeline,
                execution_id=ref.execution,
                suggest=True,
            )
            return
        audit(
            services,
            actor=actor,
            kind="view",
            what="stop",
            outcome="ok",
            pipeline=ref.pipeline,
            execution_id=execution_id,
        )
        how = "stopped and abandoned" if abandon else "is stopping"
        message = f"⏹ <@{actor.user_id}>: execution `{execution_id}` of *{ref.pipeline}* {how}"
        _update_origin(client, ref, f"{message} at {blocks.slack_date(services.now())}", services)
        reply.tell(message, public=True)

    app.view(ids.STOP_VIEW)(stop_listener)


def _failed(
    services: Services,
    reply: Reply,
    exc: OpsError,
    *,
    what: str,
    pipeline: str | None,
    execution_id: str | None,
    suggest: bool,
) -> None:
    """Audit a form's failed backend call and tell its user what went wrong."""
    audit(
        services,
        actor=reply.actor,
        kind="view",
        what=what,
        outcome="error",
        pipeline=pipeline,
        execution_id=execution_id,
        detail=exc.message,
    )
    reply.tell(explain(services, exc, pipeline=pipeline if suggest else None))


def _update_origin(
    client: WebClient,
    ref: ButtonRef,
    outcome: str,
    services: Services,
    *,
    reply_outcome: str | None = None,
) -> None:
    """Redraw the message a modal was opened from, when it is a channel message: a status
    message with the current status, a notification's thread reply keeping what it says,
    its buttons giving way to ``reply_outcome`` (else ``outcome``) as the notifier draws it."""
    if ref.channel is None or ref.message_ts is None:
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
        fresh = blocks.status_blocks(
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
            blocks=blocks.outcome_blocks(original=fresh, outcome=outcome, drop=()),
        )
    except (OpsError, SlackApiError):
        # An ephemeral message cannot be updated by chat.update; the outcome is still told.
        log.info("could not redraw message %s in %s", ref.message_ts, ref.channel)
