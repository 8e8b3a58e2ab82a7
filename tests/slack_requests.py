"""Build HTTP requests the way Slack sends them to the bot: shaped like Slack's and signed.

Each builder returns ``(body, headers)``: the raw body string and the headers Slack sends
(``Content-Type``, ``X-Slack-Request-Timestamp``, ``X-Slack-Signature``). Hand them to a Bolt
app with ``app.dispatch(bolt_request(body, headers))`` or POST them to a running server with
``post(url, body, headers)``.

The shapes and the signature are ``sandbox.payloads``', the one builder of Slack's requests the
sandbox uses too (it cites Slack's docs for each). What is added here is only what tests need:
the workspace ``tests.fake_slack`` plays (``TEST_APP``) and the secret test bots are given,
signed now; defaults (``UADMIN`` in ``C1``); the message or view a click comes from, made up when
no workspace holds one; an action for whatever value a test picks (forged ones included); Slack's
redelivery headers on an event.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from typing import Any

from slack_bolt import BoltRequest

from sandbox import payloads
from sandbox.payloads import Installation, Request
from tests.fake_slack import APP_ID as API_APP_ID
from tests.fake_slack import BOT_ID, BOT_USER_ID, TEAM_DOMAIN, TEAM_ID

__all__ = [
    "API_APP_ID",
    "SIGNING_SECRET",
    "TEAM_ID",
    "TEST_APP",
    "Request",
    "app_home_opened",
    "block_action",
    "bolt_request",
    "event_callback",
    "home_block_action",
    "interaction",
    "post",
    "sign",
    "slash_command",
    "view_submission",
]

SIGNING_SECRET = "test-signing-secret"
TEST_APP = Installation(
    team_id=TEAM_ID,
    team_domain=TEAM_DOMAIN,
    api_app_id=API_APP_ID,
    bot_user_id=BOT_USER_ID,
    verification_token="verification-token",
)
"""The app as installed in the workspace ``tests.fake_slack`` plays."""

# Element types whose block_actions payload carries ``selected_option`` rather than ``value``.
_OPTION_ELEMENTS = frozenset({"static_select", "overflow", "radio_buttons"})


def sign(
    body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """The signature headers Slack adds: HMAC-SHA256 of ``v0:{timestamp}:{body}`` (now unless
    ``timestamp`` is given)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return payloads.signature_headers(body, secret=secret, timestamp=ts)


def _signed(body: str, content_type: str, extra: dict[str, str] | None = None) -> Request:
    body, headers = payloads.signed(
        body, content_type, secret=SIGNING_SECRET, timestamp=int(time.time())
    )
    return body, {**headers, **(extra or {})}


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


def _user_name(user_id: str) -> str:
    return user_id.lower()


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
    body, content_type = payloads.slash_command_body(
        command=command,
        text=text,
        user_id=user_id,
        user_name=_user_name(user_id),
        channel_id=channel_id,
        channel_name=channel_name or _channel_name(channel_id),
        response_url=response_url,
        trigger_id=trigger_id,
        installation=TEST_APP,
    )
    return _signed(body, content_type)


def interaction(payload: dict[str, Any]) -> Request:
    """Any interaction payload, sent as Slack does: a form body ``payload=<json>``."""
    return _signed(*payloads.interaction_body(payload))


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
    container: dict[str, Any] = {
        "type": "message",
        "message_ts": message_ts,
        "channel_id": channel_id,
        "is_ephemeral": is_ephemeral,
    }
    if thread_ts is not None:
        container["thread_ts"] = thread_ts
    message: dict[str, Any] | None = None
    if not is_ephemeral:
        message = {
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
    payload = payloads.block_action_payload(
        user_id=user_id,
        user_name=_user_name(user_id),
        action=_action(action_id, value, blocks),
        trigger_id=trigger_id,
        container=container,
        channel=(channel_id, _channel_name(channel_id)),
        message=message,
        response_url=response_url,
        installation=TEST_APP,
    )
    return interaction(payload)


def _view(
    *,
    view_id: str,
    kind: str,
    blocks: list[dict[str, Any]],
    callback_id: str = "",
    private_metadata: str = "",
    title: str = "Pipebot",
) -> dict[str, Any]:
    """The view a test's click or submission comes from, as Slack holds it (its ``state`` is
    empty; ``view_submission`` fills in the submitted one)."""
    view: dict[str, Any] = {
        "id": view_id,
        "team_id": TEAM_ID,
        "type": kind,
        "blocks": blocks,
        "private_metadata": private_metadata,
        "callback_id": callback_id,
        "state": {"values": {}},
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
    payload = payloads.block_action_payload(
        user_id=user_id,
        user_name=_user_name(user_id),
        action=_action(action_id, value, blocks),
        trigger_id=trigger_id,
        container={"type": "view", "view_id": view_id},
        view=_view(view_id=view_id, kind="home", blocks=blocks),
        installation=TEST_APP,
    )
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
    view = _view(
        view_id=view_id,
        kind="modal",
        blocks=blocks or [],
        callback_id=callback_id,
        private_metadata=private_metadata,
        title=title,
    )
    payload = payloads.view_payload(
        kind="view_submission",
        user_id=user_id,
        user_name=_user_name(user_id),
        view=view,
        state_values=values,
        trigger_id=trigger_id,
        installation=TEST_APP,
    )
    return interaction(payload)


def event_callback(
    event: dict[str, Any],
    *,
    event_id: str | None = None,
    retry_num: int | None = None,
    retry_reason: str = "http_timeout",
) -> Request:
    """An Events API delivery (JSON). ``retry_num`` adds Slack's redelivery headers."""
    body, content_type = payloads.event_body(
        event, event_time=int(time.time()), event_id=event_id, installation=TEST_APP
    )
    extra: dict[str, str] = {}
    if retry_num is not None:
        extra = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason}
    return _signed(body, content_type, extra)


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
