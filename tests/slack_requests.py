"""Build HTTP requests the way Slack sends them to the bot: shaped like Slack's and signed.

Each builder returns ``(body, headers)``: the raw body string and the headers Slack sends
(``Content-Type``, ``X-Slack-Request-Timestamp``, ``X-Slack-Signature``). Hand them to a Bolt
app with ``app.dispatch(bolt_request(body, headers))`` or POST them to a running server with
``post(url, body, headers)``.

The payload shapes follow Slack's documented examples (slash command parameters,
``block_actions`` and ``view_submission`` interaction payloads, the Events API
``event_callback`` envelope) for a non-Enterprise workspace: ``enterprise`` is null and
``is_enterprise_install`` false. Team and bot IDs match ``tests.fake_slack``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

from slack_bolt import BoltRequest
from slack_sdk.signature import SignatureVerifier

SIGNING_SECRET = "test-signing-secret"
TEAM_ID = "T1"
TEAM_DOMAIN = "pipebot-test"
API_APP_ID = "A1PIPEBOT"
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
# The deprecated verification token Slack still includes in every payload.
VERIFICATION_TOKEN = "verification-token"

Request = tuple[str, dict[str, str]]

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

# Element types whose block_actions payload carries ``selected_option`` rather than ``value``.
_OPTION_ELEMENTS = frozenset({"static_select", "overflow", "radio_buttons"})


def sign(
    body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """The signature headers Slack adds: HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    if signature is None:  # only when the secret is empty
        raise ValueError("a signing secret is required")
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}


def _signed(body: str, content_type: str, extra: dict[str, str] | None = None) -> Request:
    headers = {"Content-Type": content_type, **sign(body), **(extra or {})}
    return body, headers


def bolt_request(body: str, headers: dict[str, str]) -> BoltRequest:
    """A ``BoltRequest`` for ``app.dispatch(...)``."""
    bolt_headers: dict[str, str | Sequence[str]] = {k: v for k, v in headers.items()}
    return BoltRequest(body=body, headers=bolt_headers)


def post(url: str, body: str, headers: dict[str, str], *, timeout: float = 10.0) -> tuple[int, str]:
    """POST a built request to a running HTTP endpoint; returns ``(status, body)``."""
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _user(user_id: str) -> dict[str, str]:
    name = user_id.lower()
    return {"id": user_id, "username": name, "name": name, "team_id": TEAM_ID}


def _team() -> dict[str, str]:
    return {"id": TEAM_ID, "domain": TEAM_DOMAIN}


def _channel_name(channel_id: str) -> str:
    if channel_id.startswith("D"):
        return "directmessage"
    if channel_id.startswith("G"):
        return "privategroup"
    return channel_id.lower()


def _action_ts() -> str:
    return f"{time.time():.6f}"


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def slash_command(
    *,
    text: str,
    user_id: str = "UADMIN",
    channel_id: str = "C1",
    command: str = "/pipeline",
    response_url: str,
    trigger_id: str = "T-trigger",
    channel_name: str | None = None,
) -> Request:
    """A slash command invocation: a form-encoded body, as Slack posts it."""
    fields = {
        "token": VERIFICATION_TOKEN,
        "team_id": TEAM_ID,
        "team_domain": TEAM_DOMAIN,
        "channel_id": channel_id,
        "channel_name": channel_name or _channel_name(channel_id),
        "user_id": user_id,
        "user_name": user_id.lower(),
        "command": command,
        "text": text,
        "api_app_id": API_APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id,
    }
    return _signed(urlencode(fields), FORM)


def interaction(payload: dict[str, Any]) -> Request:
    """Any interaction payload, sent as Slack does: a form body ``payload=<json>``."""
    return _signed("payload=" + quote(json.dumps(payload), safe=""), FORM)


def _find_element(
    blocks: list[dict[str, Any]], action_id: str
) -> tuple[str | None, dict[str, Any] | None]:
    for block in blocks:
        candidates: list[Any] = list(block.get("elements") or [])
        if block.get("accessory"):
            candidates.append(block["accessory"])
        if block.get("element"):
            candidates.append(block["element"])
        for element in candidates:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return block.get("block_id"), element
    return None, None


def _selected_option(element: dict[str, Any], value: str) -> dict[str, Any]:
    options = list(element.get("options") or [])
    for group in element.get("option_groups") or []:
        options.extend(group.get("options") or [])
    for option in options:
        if option.get("value") == value:
            return dict(option)
    return {"text": _plain(value), "value": value}


def _action(action_id: str, value: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
    block_id, element = _find_element(blocks, action_id)
    element = element or {"type": "button", "text": _plain(action_id)}
    kind = element.get("type", "button")
    action: dict[str, Any] = {
        "type": kind,
        "action_id": action_id,
        "block_id": block_id or "actions",
        "action_ts": _action_ts(),
    }
    if kind in _OPTION_ELEMENTS:
        action["selected_option"] = _selected_option(element, value)
        if "placeholder" in element:
            action["placeholder"] = element["placeholder"]
    else:
        action["value"] = value
        action["text"] = element.get("text", _plain(action_id))
        if "style" in element:
            action["style"] = element["style"]
    return action


def block_action(
    *,
    action_id: str,
    value: str,
    user_id: str = "UADMIN",
    channel_id: str = "C1",
    message_ts: str = "1700000000.000100",
    message_blocks: list[dict[str, Any]] | None = None,
    response_url: str,
    trigger_id: str = "T-trigger",
    message_text: str = "",
    thread_ts: str | None = None,
    is_ephemeral: bool = False,
) -> Request:
    """A button click (or menu choice) on a message the bot posted.

    ``block_id``, button text and style come from the element with ``action_id`` in
    ``message_blocks`` when present; for select/overflow elements the payload carries
    ``selected_option`` (the option with ``value``). Ephemeral messages, as in real payloads,
    have no ``message``.
    """
    blocks = message_blocks or []
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": _user(user_id),
        "api_app_id": API_APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": is_ephemeral,
        },
        "trigger_id": trigger_id,
        "team": _team(),
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": _channel_name(channel_id)},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [_action(action_id, value, blocks)],
    }
    if thread_ts is not None:
        payload["container"]["thread_ts"] = thread_ts
    if not is_ephemeral:
        message: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": API_APP_ID,
            "team": TEAM_ID,
            "ts": message_ts,
            "text": message_text,
            "blocks": blocks,
        }
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
        payload["message"] = message
    return interaction(payload)


def _view(
    *,
    view_id: str,
    kind: str,
    blocks: list[dict[str, Any]],
    callback_id: str = "",
    private_metadata: str = "",
    values: dict[str, dict[str, dict[str, Any]]] | None = None,
    title: str = "Pipebot",
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": view_id,
        "team_id": TEAM_ID,
        "type": kind,
        "blocks": blocks,
        "private_metadata": private_metadata,
        "callback_id": callback_id,
        "state": {"values": values or {}},
        "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
        "clear_on_close": False,
        "notify_on_close": False,
        "previous_view_id": None,
        "root_view_id": view_id,
        "app_id": API_APP_ID,
        "external_id": "",
        "app_installed_team_id": TEAM_ID,
        "bot_id": BOT_ID,
    }
    if kind == "modal":
        view["title"] = _plain(title)
        view["close"] = _plain("Cancel")
        view["submit"] = _plain("Submit")
    return view


def home_block_action(
    *,
    action_id: str,
    value: str,
    user_id: str = "UADMIN",
    view_blocks: list[dict[str, Any]] | None = None,
    view_id: str = "VHOME",
    trigger_id: str = "T-trigger",
) -> Request:
    """A click on the App Home tab: container ``view``, no channel, message or response_url."""
    blocks = view_blocks or []
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": _user(user_id),
        "api_app_id": API_APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": {"type": "view", "view_id": view_id},
        "trigger_id": trigger_id,
        "team": _team(),
        "enterprise": None,
        "is_enterprise_install": False,
        "view": _view(view_id=view_id, kind="home", blocks=blocks),
        "actions": [_action(action_id, value, blocks)],
    }
    return interaction(payload)


def view_submission(
    *,
    callback_id: str,
    values: dict[str, dict[str, dict[str, Any]]],
    private_metadata: str = "",
    user_id: str = "UADMIN",
    view_id: str = "V1",
    blocks: list[dict[str, Any]] | None = None,
    trigger_id: str = "T-trigger",
    title: str = "Pipebot",
) -> Request:
    """A modal submission. ``values`` is ``view.state.values``: block_id -> action_id -> state,
    e.g. ``{"reason": {"reason_input": {"type": "plain_text_input", "value": "flaky"}}}``."""
    payload: dict[str, Any] = {
        "type": "view_submission",
        "team": _team(),
        "user": _user(user_id),
        "api_app_id": API_APP_ID,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id,
        "view": _view(
            view_id=view_id,
            kind="modal",
            blocks=blocks or [],
            callback_id=callback_id,
            private_metadata=private_metadata,
            values=values,
            title=title,
        ),
        "response_urls": [],
        "enterprise": None,
        "is_enterprise_install": False,
    }
    return interaction(payload)


def event_callback(
    event: dict[str, Any],
    *,
    event_id: str | None = None,
    retry_num: int | None = None,
    retry_reason: str = "http_timeout",
) -> Request:
    """An Events API delivery (JSON). ``retry_num`` adds Slack's redelivery headers."""
    now = int(time.time())
    envelope: dict[str, Any] = {
        "token": VERIFICATION_TOKEN,
        "team_id": TEAM_ID,
        "context_team_id": TEAM_ID,
        "context_enterprise_id": None,
        "api_app_id": API_APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": now,
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-{uuid.uuid4().hex}",
    }
    extra: dict[str, str] = {}
    if retry_num is not None:
        extra = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason}
    return _signed(json.dumps(envelope), JSON, extra)


def app_home_opened(
    *,
    user_id: str = "UADMIN",
    tab: str = "home",
    view: dict[str, Any] | None = None,
) -> Request:
    """The ``app_home_opened`` event; ``view`` is the Home tab last published, if any."""
    event: dict[str, Any] = {
        "type": "app_home_opened",
        "user": user_id,
        "channel": "D" + user_id[1:],
        "tab": tab,
        "event_ts": f"{time.time():.6f}",
    }
    if view is not None:
        event["view"] = view
    return event_callback(event)
