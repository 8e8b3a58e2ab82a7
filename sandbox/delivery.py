"""What users do on the sandbox page, sent to the bot as Slack sends it.

``Gateway`` turns a typed command, a click, a modal submission or close, and opening the
Home tab into signed HTTP requests to the bot's Slack endpoint, and shows the bot's
answer (the ack) the way Slack shows it: an ack message as an ephemeral or channel
message, ``response_action`` errors under the modal's inputs, a missing or slow ack as
Slack's own error text. What the page says is never trusted for a button's value: the
element is looked up in the message or view the workspace holds.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandbox import payloads
from sandbox.workspace import ResponseTarget, Workspace

ACK_SECONDS = 3.0
# Slack's client refuses these before anything is sent.
REQUIRED = "Please complete this required field."

Poster = Callable[[str, str, dict[str, str], float], tuple[int, str] | None]


def http_post(
    url: str, body: str, headers: dict[str, str], timeout: float
) -> tuple[int, str] | None:
    """POST; ``(status, body)``, or None when the bot did not answer within ``timeout``."""
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        return None


@dataclass(frozen=True)
class Outcome:
    """What the page is told after an interaction: ok, or why nothing happened."""

    ok: bool
    error: str = ""
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "error": self.error, "note": self.note}


def escape_command_text(text: str, workspace: Workspace) -> str:
    """Escape ``&<>`` and turn ``@name`` / ``@group`` into mentions, as Slack does for a
    command with ``should_escape: true``."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    users = {u.name: u.id for u in workspace.users.values()}
    groups = {g.handle: g.id for g in workspace.usergroups.values()}

    def mention(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in users:
            return f"<@{users[name]}|{name}>"
        if name in groups:
            return f"<!subteam^{groups[name]}|@{name}>"
        if name in ("here", "channel", "everyone"):
            return f"<!{name}>"
        return match.group(0)

    return re.sub(r"(?<![\w<])@([a-z0-9][a-z0-9._-]*)", mention, escaped)


def find_element(
    blocks: list[dict[str, Any]], block_id: str, action_id: str
) -> dict[str, Any] | None:
    for block in blocks:
        if str(block.get("block_id", "")) != block_id and block_id != "":
            continue
        candidates = [*list(block.get("elements") or [])]
        for key in ("accessory", "element"):
            if isinstance(block.get(key), dict):
                candidates.append(block[key])
        for element in candidates:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return element
    return None


def _options(element: dict[str, Any]) -> list[dict[str, Any]]:
    options = list(element.get("options") or [])
    for group in element.get("option_groups") or []:
        options.extend(group.get("options") or [])
    return options


def _option(element: dict[str, Any], value: str | None) -> dict[str, Any] | None:
    return next((dict(o) for o in _options(element) if o.get("value") == value), None)


class Gateway:
    """Sends the bot what users do on the page."""

    def __init__(
        self,
        *,
        workspace: Workspace,
        bot_url: str,
        signing_secret: str,
        root_url: str,
        command: str = "/pipeline",
        post: Poster = http_post,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._workspace = workspace
        self._bot_url = bot_url
        self._secret = signing_secret
        self._root_url = root_url.rstrip("/")
        self.command_name = command
        self._post = post
        self._clock = clock

    def _send(self, body: str, content_type: str) -> tuple[int, str] | None:
        signed_body, headers = payloads.signed(
            body, content_type, secret=self._secret, timestamp=int(self._clock())
        )
        return self._post(self._bot_url, signed_body, headers, ACK_SECONDS)

    def _response_url(self, target: ResponseTarget) -> str:
        return f"{self._root_url}/response/{self._workspace.issue_response_url(target)}"

    # ------------------------------------------------------------------ the message box

    def message_box(
        self, *, user: str, channel: str, text: str, thread_ts: str | None = None
    ) -> Outcome:
        """Text typed in a message box: a slash command, or a plain message."""
        ws = self._workspace
        text = text.strip()
        if user not in ws.users or (channel not in ws.channels and channel != ws.dm_channel(user)):
            return Outcome(False, "unknown user or channel")
        if not text:
            return Outcome(False, "type a message or a command")
        if channel in ws.archived:  # Slack shows no message box in an archived channel
            name = ws.channels.get(channel, channel)
            return Outcome(False, f"#{name} is archived: unarchive it to post or run commands")
        if not text.startswith("/"):
            ws.post_user_message(user=user, channel=channel, text=text, thread_ts=thread_ts)
            return Outcome(True)
        name, _, rest = text.partition(" ")
        if thread_ts is not None:
            ws.post_ephemeral_notice(
                user=user,
                channel=channel,
                thread_ts=thread_ts,
                text=f"{name} is not supported in threads. Sorry!",
            )
            return Outcome(True)
        if name != self.command_name:
            ws.post_ephemeral_notice(
                user=user,
                channel=channel,
                text=f"{name} is not a valid command. In Slack, all messages that start with "
                'the "/" character are interpreted as commands.',
            )
            return Outcome(True)
        return self.slash_command(user=user, channel=channel, text=rest.strip())

    def slash_command(self, *, user: str, channel: str, text: str) -> Outcome:
        ws = self._workspace
        response_url = self._response_url(
            ResponseTarget(channel=channel, user=user, created=self._clock())
        )
        body, content_type = payloads.slash_command_body(
            command=self.command_name,
            text=escape_command_text(text, ws),
            user_id=user,
            user_name=ws.user_name(user),
            channel_id=channel,
            channel_name=ws.channels.get(channel, "directmessage"),
            response_url=response_url,
            trigger_id=ws.issue_trigger(user),
        )
        answer = self._send(body, content_type)
        failure = self._failure(answer)
        if failure:
            ws.post_ephemeral_notice(
                user=user,
                channel=channel,
                text=f'{self.command_name} failed with the error "{failure}"',
            )
            return Outcome(True)
        assert answer is not None
        if answer[1].strip():
            try:
                ack = json.loads(answer[1])
            except ValueError:
                ack = {"text": answer[1]}
            if isinstance(ack, dict) and (ack.get("text") or ack.get("blocks")):
                ws.show_ack(user=user, channel=channel, body=ack)
        return Outcome(True)

    @staticmethod
    def _failure(answer: tuple[int, str] | None) -> str:
        if answer is None:
            return "operation_timeout"
        if answer[0] != 200:
            return "dispatch_failed"
        return ""

    # ------------------------------------------------------------------ clicks

    def click_message(
        self,
        *,
        user: str,
        channel: str,
        ts: str,
        block_id: str,
        action_id: str,
        selected: str | None = None,
    ) -> Outcome:
        ws = self._workspace
        message = ws.message(channel, ts)
        if message is None or (message.ephemeral_for not in (None, user)):
            return Outcome(False, "that message is gone")
        element = find_element(message.blocks, block_id, action_id)
        if element is None:
            return Outcome(False, "that button is gone")
        action = self._action(element, block_id, selected)
        if action is None:
            return Outcome(False, "choose one of the options")
        ephemeral = message.ephemeral_for is not None
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": ts,
            "channel_id": channel,
            "is_ephemeral": ephemeral,
        }
        if message.thread_ts:
            container["thread_ts"] = message.thread_ts
        response_url = self._response_url(
            ResponseTarget(
                channel=channel,
                user=user,
                created=self._clock(),
                message_ts=ts,
                ephemeral=ephemeral,
                thread_ts=message.thread_ts,
            )
        )
        payload = payloads.block_action_payload(
            user_id=user,
            user_name=ws.user_name(user),
            action=action,
            trigger_id=ws.issue_trigger(user),
            container=container,
            channel=(channel, ws.channels.get(channel, "directmessage")),
            message=None if ephemeral else message.api_shape(),
            response_url=response_url,
        )
        return self._interaction(payload, user=user, channel=channel, thread_ts=message.thread_ts)

    def click_view(
        self,
        *,
        user: str,
        view_id: str,
        block_id: str,
        action_id: str,
        selected: str | None = None,
    ) -> Outcome:
        ws = self._workspace
        view = ws.view(view_id)
        if view is None:
            return Outcome(False, "that view is gone")
        element = find_element(list(view.get("blocks") or []), block_id, action_id)
        if element is None:
            return Outcome(False, "that button is gone")
        action = self._action(element, block_id, selected)
        if action is None:
            return Outcome(False, "choose one of the options")
        payload = payloads.block_action_payload(
            user_id=user,
            user_name=ws.user_name(user),
            action=action,
            trigger_id=ws.issue_trigger(user),
            container={"type": "view", "view_id": view_id},
            view=view,
        )
        return self._interaction(payload, user=user, channel=ws.dm_channel(user), thread_ts=None)

    def _action(
        self, element: dict[str, Any], block_id: str, selected: str | None
    ) -> dict[str, Any] | None:
        kind = str(element.get("type", "button"))
        action: dict[str, Any] = {
            "type": kind,
            "action_id": element["action_id"],
            "block_id": block_id,
            "action_ts": f"{self._clock():.6f}",
        }
        if kind in ("static_select", "overflow", "radio_buttons"):
            option = _option(element, selected)
            if option is None:
                return None
            action["selected_option"] = option
        else:
            if "value" in element:
                action["value"] = element["value"]
            action["text"] = element.get("text")
            if "style" in element:
                action["style"] = element["style"]
        return action

    def _interaction(
        self, payload: dict[str, Any], *, user: str, channel: str, thread_ts: str | None
    ) -> Outcome:
        body, content_type = payloads.interaction_body(payload)
        failure = self._failure(self._send(body, content_type))
        if failure:
            self._workspace.post_ephemeral_notice(
                user=user,
                channel=channel,
                thread_ts=thread_ts,
                text=f"pipebot did not respond to that click ({failure}).",
            )
        return Outcome(True)

    # ------------------------------------------------------------------ modals

    def submit_view(
        self, *, user: str, view_id: str, inputs: dict[str, dict[str, str | None]]
    ) -> Outcome:
        """Submit the modal on top of ``user``'s stack. ``inputs`` is block_id -> action_id ->
        the typed text or chosen option value."""
        ws = self._workspace
        view = ws.modal(user)
        if view is None or view.get("id") != view_id:
            return Outcome(False, "that form is no longer open")
        values, missing = self._state_values(view, inputs)
        if missing:
            ws.set_modal_errors(view_id, missing)
            return Outcome(True)
        clean = {k: v for k, v in view.items() if not k.startswith("_")}
        payload = payloads.view_payload(
            kind="view_submission",
            user_id=user,
            user_name=ws.user_name(user),
            view=clean,
            state_values=values,
            trigger_id=ws.issue_trigger(user),
        )
        body, content_type = payloads.interaction_body(payload)
        answer = self._send(body, content_type)
        if self._failure(answer):
            ws.set_modal_errors(view_id, {"": "We had some trouble connecting. Try again?"})
            return Outcome(True)
        assert answer is not None
        ack: Any = {}
        if answer[1].strip():
            try:
                ack = json.loads(answer[1])
            except ValueError:
                ack = None
        if not isinstance(ack, dict):
            ws.set_modal_errors(view_id, {"": "We had some trouble connecting. Try again?"})
            return Outcome(True)
        action = ack.get("response_action")
        if action is None:
            ws.close_modal(user)
        elif action == "errors" and isinstance(ack.get("errors"), dict):
            ws.set_modal_errors(view_id, {str(k): str(v) for k, v in ack["errors"].items()})
        elif action == "update" and isinstance(ack.get("view"), dict):
            self._refused_view(ws.replace_modal(user, ack["view"]), view_id)
        elif action == "push" and isinstance(ack.get("view"), dict):
            self._refused_view(ws.push_modal(user, ack["view"]), view_id)
        elif action == "clear":
            ws.close_modal(user, all_views=True)
        else:
            ws.set_modal_errors(view_id, {"": "We had some trouble connecting. Try again?"})
        return Outcome(True)

    def _refused_view(self, rejection: Any, view_id: str) -> None:
        if rejection is not None:
            self._workspace.set_modal_errors(
                view_id, {"": "We had some trouble connecting. Try again?"}
            )

    @staticmethod
    def _state_values(
        view: dict[str, Any], inputs: dict[str, dict[str, str | None]]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        values: dict[str, Any] = {}
        missing: dict[str, str] = {}
        for block in view.get("blocks") or []:
            element = block.get("element")
            if block.get("type") != "input" or not isinstance(element, dict):
                continue
            block_id = str(block.get("block_id", ""))
            action_id = str(element.get("action_id", ""))
            typed = (inputs.get(block_id) or {}).get(action_id)
            kind = element.get("type")
            state: dict[str, Any] = {"type": kind}
            if kind == "static_select":
                option = _option(element, typed)
                state["selected_option"] = option
                empty = option is None
            else:
                text = (typed or "").strip()
                state["value"] = typed if text else None
                empty = not text
                limit = element.get("max_length")
                if not empty and isinstance(limit, int) and len(typed or "") > limit:
                    missing[block_id] = f"Must be {limit} characters or fewer."
                least = element.get("min_length")
                if not empty and isinstance(least, int) and len(typed or "") < least:
                    missing[block_id] = f"Must be at least {least} characters."
            if empty and not block.get("optional"):
                missing[block_id] = REQUIRED
            values.setdefault(block_id, {})[action_id] = state
        return values, missing

    def close_view(self, *, user: str, view_id: str) -> Outcome:
        """The user closed the modal (Cancel or the close button); ``view_closed`` if asked."""
        ws = self._workspace
        view = ws.modal(user)
        if view is None or view.get("id") != view_id:
            return Outcome(False, "that form is no longer open")
        ws.close_modal(user)
        if view.get("notify_on_close"):
            clean = {k: v for k, v in view.items() if not k.startswith("_")}
            payload = payloads.view_payload(
                kind="view_closed",
                user_id=user,
                user_name=ws.user_name(user),
                view=clean,
                state_values={},
            )
            body, content_type = payloads.interaction_body(payload)
            self._send(body, content_type)
        return Outcome(True)

    # ------------------------------------------------------------------ events

    def open_home(self, *, user: str) -> Outcome:
        ws = self._workspace
        if user not in ws.users:
            return Outcome(False, "unknown user")
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user,
            "channel": ws.dm_channel(user),
            "tab": "home",
            "event_ts": f"{self._clock():.6f}",
        }
        home = ws.home(user)
        if home is not None:
            event["view"] = home
        body, content_type = payloads.event_body(event, event_time=int(self._clock()))
        failure = self._failure(self._send(body, content_type))
        return Outcome(not failure, failure)
