"""Buttons (block_actions). Each click is acked first, then acted on.

Buttons carry a ``ButtonRef`` (identifiers only). After a click, the message it
came from is redrawn from the pipeline's current state with the outcome (who,
when) appended, so buttons that no longer apply are gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import App
from slack_sdk.web import WebClient

from bot.ops.pipeline_ops import OpsError, request_token
from bot.slack import blocks, ids, notifications
from bot.slack.ids import ButtonRef
from handlers.commands import decide_approval
from handlers.common import Actor, HeldReplies, Services, audit, check, ephemeral, explain
from handlers.grammar import Permission

log = logging.getLogger(__name__)

PERMISSIONS: dict[str, Permission] = {
    ids.START: Permission.OPERATE,
    ids.STOP: Permission.OPERATE,
    ids.RETRY_FAILED: Permission.OPERATE,
    ids.RETRY_ALL: Permission.OPERATE,
    ids.APPROVE: Permission.APPROVE,
    ids.REJECT: Permission.APPROVE,
    ids.VIEW_LOG: Permission.READ,
    ids.DELETE_CONFIRM: Permission.OPERATE,
    ids.DELETE_CANCEL: Permission.READ,
    ids.REFRESH_STATUS: Permission.READ,
}


class Click:
    """One button click being handled."""

    def __init__(
        self,
        *,
        services: Services,
        body: dict[str, Any],
        ref: ButtonRef,
        respond: Any,
        client: WebClient,
    ) -> None:
        self.services = services
        self.body = body
        self.ref = ref
        self.respond = respond
        self.client = client
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
            "channel_id"
        )
        self.actor = Actor(user_id=(body.get("user") or {}).get("id", "?"), channel_id=channel)
        self.message_ts = (body.get("container") or {}).get("message_ts")
        self.trigger_id = body.get("trigger_id")

    def in_thread(self) -> bool:
        """Whether the clicked message is a thread reply (a notification's event reply)."""
        message = self.body.get("message") or {}
        thread_ts = message.get("thread_ts") or (self.body.get("container") or {}).get("thread_ts")
        return bool(thread_ts) and thread_ts != message.get("ts", self.message_ts)

    def redraw(self, outcome: str, *, reply_outcome: str | None = None) -> None:
        """Replace the clicked message with the pipeline's current status and the outcome;
        a notification's thread reply (an approval request, a failure) keeps what it says,
        its buttons giving way to ``reply_outcome`` (else ``outcome``), drawn as the
        notifier draws it (whichever of the two lands last, the reply reads the same)."""
        if self.in_thread():
            original = list((self.body.get("message") or {}).get("blocks") or [])
            shown = reply_outcome or outcome
            self.respond(
                replace_original=True,
                text=shown[:3000],
                blocks=notifications.resolved_reply(original_blocks=original, outcome=shown),
            )
            return
        ops = self.services.ops
        try:
            state = ops.state(self.ref.pipeline)
            executions = ops.executions(self.ref.pipeline, 5)
            fresh = blocks.status_blocks(
                state=state,
                executions=executions,
                approvals_allowed=self._may(Permission.APPROVE),
                operate_allowed=self._may(Permission.OPERATE),
                now=self.services.now(),
            )
        except OpsError:
            fresh = list((self.body.get("message") or {}).get("blocks") or [])
        self.respond(
            replace_original=True,
            text=outcome[:3000],
            blocks=blocks.outcome_blocks(original=fresh, outcome=outcome, drop=()),
        )

    def _may(self, permission: Permission) -> bool:
        return self.services.permissions.check(
            user_id=self.actor.user_id, permission=permission.value, pipeline=self.ref.pipeline
        ).allowed

    def when(self) -> str:
        return blocks.slack_date(self.services.now())


def register(app: App, services: Services) -> None:
    for action_id, handler in HANDLERS.items():
        app.action(action_id)(_listener(services, action_id, handler))


def _listener(
    services: Services, action_id: str, handler: Callable[[Click], str | None]
) -> Callable[..., None]:
    def listen(ack: Any, body: dict[str, Any], respond: Any, client: WebClient) -> None:
        ack()
        services.later(handle, body, respond, client)

    def handle(body: dict[str, Any], respond: Any, client: WebClient) -> None:
        actions = body.get("actions") or [{}]
        try:
            ref = ButtonRef.decode(str(actions[0].get("value", "")))
        except ValueError:
            ephemeral(respond, message="That button is not one pipebot understands any more.")
            return
        permission = PERMISSIONS[action_id]
        # A mutating click's replies go out after its audit entry (see HeldReplies).
        held = HeldReplies(respond)
        mutating = permission != Permission.READ
        click = Click(
            services=services,
            body=body,
            ref=ref,
            respond=held if mutating else respond,
            client=client,
        )
        try:
            _carry_out(click, action_id, handler, permission=permission, respond=respond)
        finally:
            held.release()

    return listen


def _carry_out(
    click: Click,
    action_id: str,
    handler: Callable[[Click], str | None],
    *,
    permission: Permission,
    respond: Any,
) -> None:
    services, ref = click.services, click.ref
    if permission != Permission.READ:
        decision = check(
            services,
            actor=click.actor,
            permission=permission.value,
            pipeline=ref.pipeline,
            kind="click",
            what=action_id,
            execution_id=ref.execution,
        )
        if not decision.allowed:
            ephemeral(respond, message=decision.reason)
            return
    try:
        execution = handler(click)
    except OpsError as exc:
        if permission != Permission.READ:
            audit(
                services,
                actor=click.actor,
                kind="click",
                what=action_id,
                outcome="error",
                pipeline=ref.pipeline,
                execution_id=ref.execution,
                detail=exc.message,
            )
        ephemeral(respond, message=explain(services, exc, pipeline=ref.pipeline))
        return
    except Exception:
        log.exception("button %s failed for %s", action_id, click.actor.user_id)
        ephemeral(
            respond,
            message="Sorry, something went wrong on pipebot's side; it has been logged.",
        )
        return
    if permission != Permission.READ and execution is not None:
        audit(
            services,
            actor=click.actor,
            kind="click",
            what=action_id,
            outcome="ok",
            pipeline=ref.pipeline,
            execution_id=execution or ref.execution,
        )


def _start(c: Click) -> str | None:
    execution_id = c.services.ops.start(
        c.ref.pipeline,
        {},
        request_token=request_token("slack-click", c.trigger_id or c.services.now().isoformat()),
    )
    from storage import bot_store
    from storage.db import transaction

    with transaction(c.services.sessions) as session:
        bot_store.record_starter(
            session=session,
            execution_id=execution_id,
            pipeline=c.ref.pipeline,
            user_id=c.actor.user_id,
        )
    c.redraw(f"▶️ Started by <@{c.actor.user_id}> at {c.when()}: execution `{execution_id}`")
    return execution_id


def _stop(c: Click) -> str | None:
    if not c.trigger_id:
        raise OpsError("Slack did not send a trigger to open the form; click again.")
    ref = ButtonRef(
        pipeline=c.ref.pipeline,
        execution=c.ref.execution,
        channel=c.actor.channel_id,
        message_ts=c.message_ts,
    )
    c.client.views_open(trigger_id=c.trigger_id, view=blocks.stop_modal(ref=ref))
    return None


def _retry(mode: str) -> Callable[[Click], str | None]:
    def retry(c: Click) -> str | None:
        stage, execution_id = c.services.ops.retry(
            c.ref.pipeline, c.ref.stage, c.ref.execution, mode=mode
        )
        what = "all actions" if mode == "ALL_ACTIONS" else "failed actions"
        c.redraw(f"🔁 <@{c.actor.user_id}> retried {what} of *{stage}* at {c.when()}")
        return execution_id

    return retry


def _approve(c: Click) -> str | None:
    if c.ref.stage is None or c.ref.action is None:
        raise OpsError("That button does not say which approval it answers.")
    outcome = decide_approval(
        c.services,
        client=c.client,
        actor=c.actor,
        pipeline=c.ref.pipeline,
        stage=c.ref.stage,
        action=c.ref.action,
        approved=True,
        comment=None,
        execution_id=c.ref.execution,
    )
    if outcome.already is not None:
        ephemeral(c.respond, message=outcome.already)
        return None
    c.redraw(
        f"{outcome.message} at {c.when()}",
        reply_outcome=notifications.decision_outcome(
            stage=c.ref.stage,
            action=c.ref.action,
            approved=True,
            user_id=c.actor.user_id,
            comment=None,
        ),
    )
    return c.ref.execution or ""


def _reject(c: Click) -> str | None:
    if not c.trigger_id:
        raise OpsError("Slack did not send a trigger to open the form; click again.")
    ref = ButtonRef(
        pipeline=c.ref.pipeline,
        execution=c.ref.execution,
        stage=c.ref.stage,
        action=c.ref.action,
        channel=c.actor.channel_id,
        message_ts=c.message_ts,
    )
    c.client.views_open(trigger_id=c.trigger_id, view=blocks.reject_modal(ref=ref))
    return None


def _view_log(c: Click) -> str | None:
    if c.ref.execution is None:
        raise OpsError("That button does not say which execution it shows.")
    view = c.services.ops.execution_view(c.ref.pipeline, c.ref.execution)
    c.respond(
        response_type="ephemeral",
        replace_original=False,
        text=f"Execution {c.ref.execution}",
        blocks=blocks.execution_blocks(
            pipeline=c.ref.pipeline,
            execution=view.execution,
            actions=view.actions,
            log_tail=view.log_tail,
        ),
    )
    return None


def _delete_confirm(c: Click) -> str | None:
    c.services.ops.delete(c.ref.pipeline)
    c.respond(
        replace_original=True,
        text=f"Pipeline {c.ref.pipeline} deleted",
        blocks=blocks.notice_blocks(
            message=f"🗑 Pipeline *{blocks.escape(c.ref.pipeline)}* deleted by "
            f"<@{c.actor.user_id}> at {c.when()}."
        ),
    )
    return ""


def _delete_cancel(c: Click) -> str | None:
    c.respond(
        replace_original=True,
        text="Kept",
        blocks=blocks.notice_blocks(message=f"Kept pipeline *{blocks.escape(c.ref.pipeline)}*."),
    )
    return None


def _refresh(c: Click) -> str | None:
    c.redraw(f"Refreshed by <@{c.actor.user_id}> at {c.when()}")
    return None


HANDLERS: dict[str, Callable[[Click], str | None]] = {
    ids.START: _start,
    ids.STOP: _stop,
    ids.RETRY_FAILED: _retry("FAILED_ACTIONS"),
    ids.RETRY_ALL: _retry("ALL_ACTIONS"),
    ids.APPROVE: _approve,
    ids.REJECT: _reject,
    ids.VIEW_LOG: _view_log,
    ids.DELETE_CONFIRM: _delete_confirm,
    ids.DELETE_CANCEL: _delete_cancel,
    ids.REFRESH_STATUS: _refresh,
}
