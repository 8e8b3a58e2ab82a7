"""Buttons (block_actions). Each click is acked first, then acted on through
``handlers.common.perform`` (check, act, audit, reply), as commands and forms are.

Buttons carry a ``ButtonRef`` (identifiers only). After a click, the message it
came from is redrawn from the pipeline's current state with the outcome (who,
when) appended, so buttons that no longer apply are gone. ``ACTIONS`` is the one
table of buttons: each action ID with the permission it needs and its handler.

Every click is answered where it was made (``ClickReply``): on a message, through its
``response_url``, except that a private answer to a click on an approval request also sent
to the channel goes to the channel (not into a thread the user may never open), and that
what the channel should hear (who started, who retried) is posted to the channel as the
commands post it; on App Home, which has no ``response_url``, by a direct message, and the
tab is drawn again after every click.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk.errors import SlackApiError
from slack_sdk.web import WebClient

from bot.notify.deletion import close_deleted_pipeline
from bot.ops.permissions import Permission
from bot.ops.pipeline_ops import OpsError, request_token
from bot.ops.pipeline_state import is_action_failed
from bot.slack import ids, notifications
from bot.slack.action_facts import log_markers
from bot.slack.api_errors import classify
from bot.slack.execution import execution_blocks
from bot.slack.ids import ButtonRef
from bot.slack.kit import escape
from bot.slack.messages import notice_blocks
from bot.slack.modals import reject_modal, stop_modal
from bot.slack.outcomes import (
    decision_outcome,
    outcome_blocks,
    overridden_line,
    retried_line,
    rolled_back_line,
    started_line,
)
from bot.slack.status import status_blocks
from bot.slack.text import slack_date
from handlers.commands import who_did, who_did_view
from handlers.common import (
    Actor,
    Done,
    FormReply,
    Reply,
    Services,
    answer_approval,
    ephemeral,
    log_slack_failure,
    logged_actions,
    notice,
    perform,
    publish_home,
)
from storage import bot_store, notify_store
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
        return on_home(self.body)

    def in_thread(self) -> bool:
        """Whether the clicked message is a thread reply (a notification's event reply)."""
        return in_thread(self.body)

    def ephemeral_origin(self) -> str | None:
        """The click's ``response_url`` when the clicked message is ephemeral: a form opened
        from it redraws it through that (``chat.update`` cannot change an ephemeral message)."""
        if not (self.body.get("container") or {}).get("is_ephemeral"):
            return None
        url = self.body.get("response_url")
        return str(url) if url else None

    def redraw(self, outcome: str, *, reply_outcome: str | None = None) -> None:
        """Replace the clicked message with the pipeline's current status and the outcome;
        a notification's thread reply (an approval request, a failure) keeps what it says,
        its buttons giving way to ``reply_outcome`` (else ``outcome``), drawn as the
        notifier draws it (whichever of the two lands last, the reply reads the same).
        On App Home the outcome is told privately (the tab is drawn afresh after every
        click there)."""
        if self.on_home():
            notice(self.respond, message=outcome, public=False)
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
            operate = self._may(Permission.OPERATE)
            fresh = status_blocks(
                state=state,
                executions=executions,
                approvals_allowed=self._may(Permission.APPROVE),
                operate_allowed=operate,
                now=self.services.now(),
                who=who_did(
                    self.services, pipeline=self.ref.pipeline, state=state, executions=executions
                ),
                rollback_targets=(
                    ops.rollback_targets(self.ref.pipeline, state, executions) if operate else None
                ),
                parallel_approvals=ops.parallel_approvals(self.ref.pipeline, executions),
                logged=logged_actions(self.services, self.ref.pipeline),
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


def on_home(body: dict[str, Any]) -> bool:
    """Whether a click was on the App Home tab."""
    return (body.get("view") or {}).get("type") == "home"


def in_thread(body: dict[str, Any]) -> bool:
    """Whether the clicked message is a thread reply (a notification's event reply)."""
    message = body.get("message") or {}
    container = body.get("container") or {}
    thread_ts = message.get("thread_ts") or container.get("thread_ts")
    return bool(thread_ts) and thread_ts != message.get("ts", container.get("message_ts"))


def broadcast(services: Services, body: dict[str, Any]) -> bool:
    """Whether the clicked thread reply was also sent to the channel (an approval request):
    Slack marks it ``thread_broadcast``, and pipebot kept what it posted. Slack does not say
    whether it was clicked in the channel or in the thread."""
    message = body.get("message") or {}
    if message.get("subtype") == "thread_broadcast":
        return True
    container = body.get("container") or {}
    channel, ts = container.get("channel_id"), container.get("message_ts")
    if not channel or not ts:
        return False
    with services.sessions() as session:
        payload = notify_store.event_reply_payload(
            session=session, channel_id=str(channel), message_ts=str(ts)
        )
    return payload is not None and bool(json.loads(payload).get("reply_broadcast"))


class ClickReply:
    """A ``Reply`` that answers a click on a message where it was made.

    - Redraws (``replace_original``) go through the click's ``response_url``.
    - Private answers too, but for a thread reply also sent to the channel (an approval
      request): as Slack does not say which of the two was clicked, the answer goes to the
      channel (chat.postEphemeral), seen by whoever clicked there, rather than into a thread
      they may never open.
    - Answers for the channel (who started, who retried) go to the channel, not into the
      thread of the clicked reply: posted with chat.postMessage, exactly where the commands'
      ``in_channel`` answers appear.

    A Web API call Slack refuses falls back to the ``response_url``, so the click is answered.
    """

    def __init__(
        self, *, respond: Reply, client: WebClient, actor: Actor, thread: bool, broadcast: bool
    ) -> None:
        self._respond = respond
        self._client = client
        self._actor = actor
        self._thread = thread
        self._broadcast = broadcast

    def __call__(
        self,
        *,
        text: str = "",
        blocks: Sequence[dict[str, Any]] | None = None,
        response_type: str | None = None,
        replace_original: bool | None = None,
    ) -> None:
        channel = self._actor.channel_id
        public = response_type == "in_channel"
        try:
            if channel and not replace_original and public and self._thread:
                self._client.chat_postMessage(channel=channel, text=text, blocks=list(blocks or []))
                return
            if channel and not replace_original and not public and self._broadcast:
                self._client.chat_postEphemeral(
                    channel=channel, user=self._actor.user_id, text=text, blocks=list(blocks or [])
                )
                return
        except SlackApiError as exc:
            log_slack_failure(classify(exc), f"answering {self._actor.user_id}'s click")
        self._respond(
            text=text,
            blocks=blocks,
            response_type=response_type,
            replace_original=replace_original,
        )


def clicker(body: dict[str, Any]) -> Actor:
    """Who clicked, and in which channel (none on App Home)."""
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
        "channel_id"
    )
    return Actor(user_id=(body.get("user") or {}).get("id", "?"), channel_id=channel)


def register(app: App, services: Services) -> None:
    for action_id, button in ACTIONS.items():
        app.action(action_id)(_listener(services, action_id, button))
    # The "View log…" menu: the chosen option's ref, handled as the View log button.
    app.action(ids.VIEW_LOG_SELECT)(_listener(services, ids.VIEW_LOG, ACTIONS[ids.VIEW_LOG]))


def _listener(services: Services, action_id: str, button: Button) -> Callable[..., None]:
    def listen(ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
        ack()
        services.later(handle, body, respond, client)

    def handle(body: dict[str, Any], respond: Respond, client: WebClient) -> None:
        actions = body.get("actions") or [{}]
        actor = clicker(body)
        answer: Reply
        if body.get("response_url"):
            thread = in_thread(body)
            answer = ClickReply(
                respond=respond,
                client=client,
                actor=actor,
                thread=thread,
                broadcast=thread and broadcast(services, body),
            )
        else:
            # A click on App Home (or in a modal) comes with no response_url to answer through.
            answer = FormReply(client=client, actor=actor)
        try:
            chosen = actions[0].get("selected_option") or {}  # a menu's, else a button's
            ref = ButtonRef.decode(str(chosen.get("value") or actions[0].get("value", "")))
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
        if on_home(body):
            # Whatever the outcome (a refusal too), the tab shows what is true now.
            publish_home(services, client, actor.user_id)

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
    notice(
        c.respond,
        message=started_line(
            user_id=c.actor.user_id, pipeline=c.ref.pipeline, execution_id=execution_id
        ),
        public=True,
    )
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
    c.client.views_open(
        trigger_id=c.trigger_id, view=stop_modal(ref=ref, response_url=c.ephemeral_origin())
    )
    return None


def _retry(mode: str) -> Callable[[Click], Done | None]:
    def retry(c: Click) -> Done | None:
        stage, execution_id = c.services.ops.retry(
            c.ref.pipeline, c.ref.stage, c.ref.execution, mode=mode
        )
        what = "all actions" if mode == "ALL_ACTIONS" else "failed actions"
        c.redraw(f"🔁 <@{c.actor.user_id}> retried {what} of *{escape(stage)}* at {c.when()}")
        notice(
            c.respond,
            message=retried_line(
                user_id=c.actor.user_id,
                pipeline=c.ref.pipeline,
                stage=stage,
                execution_id=execution_id,
                all_actions=mode == "ALL_ACTIONS",
            ),
            public=True,
        )
        # The stage in the audit entry tells who retried it (``bot_store.last_actor``).
        return Done(execution_id=execution_id, detail=bot_store.stage_detail(stage))

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
    c.client.views_open(
        trigger_id=c.trigger_id, view=reject_modal(ref=ref, response_url=c.ephemeral_origin())
    )
    return None


def _view_log(c: Click) -> Done | None:
    """The execution the button names, with the log of the action it names (its latest
    run in that execution) where the backend keeps one; else the failed action's."""
    if c.ref.execution is None:
        raise OpsError("That button does not say which execution it shows.")
    view = c.services.ops.execution_view(c.ref.pipeline, c.ref.execution)
    log_tail, markers = view.log_tail, view.markers
    runs = [
        a
        for a in view.actions
        if a.get("stageName") == c.ref.stage and a.get("actionName") == c.ref.action
    ]
    failed = [a for a in view.actions if is_action_failed(a.get("status"))]
    shown: Mapping[str, Any] | None = None
    # Oldest first: the last run is the latest. The failed action's log is the view's own.
    if runs and not (failed and runs[-1] is failed[-1]):
        text = c.services.ops.action_log(c.ref.pipeline, str(runs[-1].get("actionExecutionId")))
        if text is not None:  # None where no log is kept (AWS): the execution as before
            log_tail, markers, shown = text, log_markers(text), runs[-1]
    c.respond(
        response_type="ephemeral",
        replace_original=False,
        text=f"Execution {c.ref.execution}",
        blocks=execution_blocks(
            pipeline=c.ref.pipeline,
            execution=view.execution,
            actions=view.actions,
            log_tail=log_tail,
            who=who_did_view(c.services, pipeline=c.ref.pipeline, view=view),
            rules=view.rules,
            rules_error=view.rules_error,
            markers=markers,
            log_action=shown,
            logs=c.services.ops.local,
        ),
    )
    return None


def _delete_confirm(c: Click) -> Done | None:
    c.services.ops.delete(c.ref.pipeline)
    close_deleted_pipeline(
        sessions=c.services.sessions,
        pipeline=c.ref.pipeline,
        deleted_by=c.actor.user_id,
        now=c.services.now(),
    )
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


def _roll_back(c: Click) -> Done | None:
    """Roll back ``ref.stage`` to ``ref.execution`` (the target the confirm named)."""
    stage, target = c.ref.stage, c.ref.execution
    if stage is None or target is None:
        raise OpsError("That button does not say which stage to roll back, and to what.")
    _found, execution_id = c.services.ops.rollback(c.ref.pipeline, stage, target)
    with transaction(c.services.sessions) as session:
        # Who started the rollback execution: status, history and the channel name them.
        bot_store.record_starter(
            session=session,
            execution_id=execution_id,
            pipeline=c.ref.pipeline,
            user_id=c.actor.user_id,
        )
    line = rolled_back_line(
        user_id=c.actor.user_id,
        pipeline=c.ref.pipeline,
        stage=stage,
        target=target,
        execution_id=execution_id,
    )
    if c.in_thread() or c.on_home():
        c.redraw(f"{line} ({c.when()})")
    elif c.body.get("actions", [{}])[0].get("action_id") == ids.ROLLBACK_CONFIRM:
        # The command's question: answered in place, the channel told below.
        c.respond(
            replace_original=True,
            text=line[:3000],
            blocks=notice_blocks(message=f"{line} ({c.when()})"),
        )
    else:
        c.redraw(f"{line} ({c.when()})")
    notice(c.respond, message=line, public=True)
    return Done(execution_id=execution_id, detail=bot_store.stage_detail(stage, f"to {target}"))


def _rollback_cancel(c: Click) -> Done | None:
    c.respond(
        replace_original=True,
        text="Rollback cancelled",
        blocks=notice_blocks(
            message=f"Nothing rolled back: *{escape(c.ref.stage or '?')}* of "
            f"*{escape(c.ref.pipeline)}* stays as it is."
        ),
    )
    return None


def _override(c: Click) -> Done | None:
    stage, execution_id, condition = c.ref.stage, c.ref.execution, c.ref.action
    if stage is None or execution_id is None or condition is None:
        raise OpsError("That button does not say which condition it overrides.")
    condition, execution_id = c.services.ops.override(
        c.ref.pipeline, stage, execution_id, condition
    )
    line = overridden_line(
        user_id=c.actor.user_id,
        pipeline=c.ref.pipeline,
        stage=stage,
        condition_type=condition,
        execution_id=execution_id,
    )
    c.redraw(f"{line} ({c.when()})")
    notice(c.respond, message=line, public=True)
    return Done(execution_id=execution_id, detail=bot_store.stage_detail(stage, condition))


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
    ids.ROLLBACK: Button(Permission.OPERATE, _roll_back),
    ids.ROLLBACK_CONFIRM: Button(Permission.OPERATE, _roll_back),
    ids.ROLLBACK_CANCEL: Button(Permission.READ, _rollback_cancel),
    ids.OVERRIDE: Button(Permission.OPERATE, _override),
}
"""Every button: its action ID (``bot.slack.ids``), the permission it needs, its handler."""
