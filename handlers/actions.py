"""Buttons (block_actions). Each click is acked first, then acted on through
``handlers.common.perform`` (check, act, audit, reply), as commands and forms are.

Buttons carry a ``ButtonRef`` (identifiers only). After a click, the message it
came from is redrawn from the pipeline's current state with the outcome (who,
when) appended, so buttons that no longer apply are gone. ``ACTIONS`` is the one
table of buttons: each action ID with the permission it needs and its handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk.web import WebClient

from bot.ops.permissions import Permission
from bot.ops.pipeline_ops import OpsError, request_token
from bot.slack import ids, notifications
from bot.slack.execution import execution_blocks
from bot.slack.ids import ButtonRef
from bot.slack.kit import escape
from bot.slack.messages import notice_blocks
from bot.slack.modals import reject_modal, stop_modal
from bot.slack.outcomes import (
    decision_outcome,
    outcome_blocks,
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
)
from storage import bot_store
from storage.db import transaction

log = logging.getLogger(__name__)


class Click:
    """One button click being handled."""

    def __init__(
        self,
        *,
        services: Services,
        body: dict[str, Any],
        ref: ButtonRef,
        respond: Reply,
        client: WebClient,
    ) -> None:
        self.services = services
        self.body = body
        self.ref = ref
        self.respond = respond
        self.client = client
        self.actor = clicker(body)
        self.message_ts = (body.get("container") or {}).get("message_ts")
        self.trigger_id = body.get("trigger_id")

    def on_home(self) -> bool:
        """Whether the button is on the App Home tab (a view, with no message to redraw)."""
        return (self.body.get("view") or {}).get("type") == "home"

    def in_thread(self) -> bool:
        """Whether the clicked message is a thread reply (a notification's event reply)."""
        message = self.body.get("message") or {}
        thread_ts = message.get("thread_ts") or (self.body.get("container") or {}).get("thread_ts")
        return bool(thread_ts) and thread_ts != message.get("ts", self.message_ts)

    def redraw(self, outcome: str, *, reply_outcome: str | None = None) -> None:
        """Replace the clicked message with the pipeline's current status and the outcome;
        a notification's thread reply (an approval request, a failure) keeps what it says,
        its buttons giving way to ``reply_outcome`` (else ``outcome``), drawn as the
        notifier draws it (whichever of the two lands last, the reply reads the same).
        On App Home the outcome is told privately and the tab is drawn afresh."""
        if self.on_home():
            notice(self.respond, message=outcome, public=False)
            publish_home(self.services, self.client, self.actor.user_id)
            return
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
            fresh = status_blocks(
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
            blocks=outcome_blocks(original=fresh, outcome=outcome, drop=()),
        )

    def _may(self, permission: Permission) -> bool:
        return self.services.permissions.check(
            user_id=self.actor.user_id, permission=permission, pipeline=self.ref.pipeline
        ).allowed

    def when(self) -> str:
        return slack_date(self.services.now())


def clicker(body: dict[str, Any]) -> Actor:
    """Who clicked, and in which channel (none on App Home)."""
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
        "channel_id"
    )
    return Actor(user_id=(body.get("user") or {}).get("id", "?"), channel_id=channel)


def register(app: App, services: Services) -> None:
    for action_id, button in ACTIONS.items():
        app.action(action_id)(_listener(services, action_id, button))


def _listener(services: Services, action_id: str, button: Button) -> Callable[..., None]:
    def listen(ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
        ack()
        services.later(handle, body, respond, client)

    def handle(body: dict[str, Any], respond: Respond, client: WebClient) -> None:
        actions = body.get("actions") or [{}]
        actor = clicker(body)
        # A click on App Home (or in a modal) comes with no response_url to answer through.
        answer: Reply = (
            respond if body.get("response_url") else FormReply(client=client, actor=actor)
        )
        try:
            ref = ButtonRef.decode(str(actions[0].get("value", "")))
        except ValueError:
            ephemeral(answer, message="That button is not one pipebot understands any more.")
            return

        def work(reply: Reply) -> Done | None:
            click = Click(services=services, body=body, ref=ref, respond=reply, client=client)
            return button.handler(click)

        perform(
            services,
            actor=actor,
            surface="click",
            what=action_id,
            permission=button.permission,
            pipeline=ref.pipeline,
            execution_id=ref.execution,
            respond=answer,
            work=work,
        )

    return listen


def _start(c: Click) -> Done | None:
    execution_id = c.services.ops.start(
        c.ref.pipeline,
        {},
        request_token=request_token("slack-click", c.trigger_id or c.services.now().isoformat()),
    )
    with transaction(c.services.sessions) as session:
        bot_store.record_starter(
            session=session,
            execution_id=execution_id,
            pipeline=c.ref.pipeline,
            user_id=c.actor.user_id,
        )
    c.redraw(f"▶️ Started by <@{c.actor.user_id}> at {c.when()}: execution `{execution_id}`")
    return Done(execution_id=execution_id)


def _stop(c: Click) -> Done | None:
    if not c.trigger_id:
        raise OpsError("Slack did not send a trigger to open the form; click again.")
    ref = ButtonRef(
        pipeline=c.ref.pipeline,
        execution=c.ref.execution,
        channel=c.actor.channel_id,
        message_ts=c.message_ts,
    )
    c.client.views_open(trigger_id=c.trigger_id, view=stop_modal(ref=ref))
    return None


def _retry(mode: str) -> Callable[[Click], Done | None]:
    def retry(c: Click) -> Done | None:
        stage, execution_id = c.services.ops.retry(
            c.ref.pipeline, c.ref.stage, c.ref.execution, mode=mode
        )
        what = "all actions" if mode == "ALL_ACTIONS" else "failed actions"
        c.redraw(f"🔁 <@{c.actor.user_id}> retried {what} of *{stage}* at {c.when()}")
        return Done(execution_id=execution_id)

    return retry


def _approve(c: Click) -> Done | None:
    stage, action = c.ref.stage, c.ref.action
    if stage is None or action is None:
        raise OpsError("That button does not say which approval it answers.")
    line = answer_approval(
        c.services,
        c.respond,
        client=c.client,
        actor=c.actor,
        pipeline=c.ref.pipeline,
        stage=stage,
        action=action,
        approved=True,
        comment=None,
        execution_id=c.ref.execution,
    )
    if line is None:
        return None
    c.redraw(
        f"{line} at {c.when()}",
        reply_outcome=decision_outcome(
            stage=stage, action=action, approved=True, user_id=c.actor.user_id, comment=None
        ),
    )
    return Done(execution_id=c.ref.execution)


def _reject(c: Click) -> Done | None:
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
    c.client.views_open(trigger_id=c.trigger_id, view=reject_modal(ref=ref))
    return None


def _view_log(c: Click) -> Done | None:
    if c.ref.execution is None:
        raise OpsError("That button does not say which execution it shows.")
    view = c.services.ops.execution_view(c.ref.pipeline, c.ref.execution)
    c.respond(
        response_type="ephemeral",
        replace_original=False,
        text=f"Execution {c.ref.execution}",
        blocks=execution_blocks(
            pipeline=c.ref.pipeline,
            execution=view.execution,
            actions=view.actions,
            log_tail=view.log_tail,
        ),
    )
    return None


def _delete_confirm(c: Click) -> Done | None:
    c.services.ops.delete(c.ref.pipeline)
    c.respond(
        replace_original=True,
        text=f"Pipeline {c.ref.pipeline} deleted",
        blocks=notice_blocks(
            message=f"🗑 Pipeline *{escape(c.ref.pipeline)}* deleted by "
            f"<@{c.actor.user_id}> at {c.when()}."
        ),
    )
    return Done()


def _delete_cancel(c: Click) -> Done | None:
    c.respond(
        replace_original=True,
        text="Kept",
        blocks=notice_blocks(message=f"Kept pipeline *{escape(c.ref.pipeline)}*."),
    )
    return None


def _refresh(c: Click) -> Done | None:
    c.redraw(f"Refreshed by <@{c.actor.user_id}> at {c.when()}")
    return None


@dataclass(frozen=True)
class Button:
    """What a button's click needs: its permission and its handler."""

    permission: Permission
    handler: Callable[[Click], Done | None]


ACTIONS: dict[str, Button] = {
    ids.START: Button(Permission.OPERATE, _start),
    ids.STOP: Button(Permission.OPERATE, _stop),
    ids.RETRY_FAILED: Button(Permission.OPERATE, _retry("FAILED_ACTIONS")),
    ids.RETRY_ALL: Button(Permission.OPERATE, _retry("ALL_ACTIONS")),
    ids.APPROVE: Button(Permission.APPROVE, _approve),
    ids.REJECT: Button(Permission.APPROVE, _reject),
    ids.VIEW_LOG: Button(Permission.READ, _view_log),
    ids.DELETE_CONFIRM: Button(Permission.OPERATE, _delete_confirm),
    ids.DELETE_CANCEL: Button(Permission.READ, _delete_cancel),
    ids.REFRESH_STATUS: Button(Permission.READ, _refresh),
}
"""Every button: its action ID (``bot.slack.ids``), the permission it needs, its handler."""
