"""What Slack sends an app, built as Slack builds it: pure functions, then signed.

Slash commands are form-encoded; interactions are a form body ``payload=<json>``; events
are JSON in an ``event_callback`` envelope. ``signed`` adds Slack's headers: HMAC-SHA256 of
``v0:{timestamp}:{body}`` with the signing secret.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote, urlencode

from slack_sdk.signature import SignatureVerifier

from sandbox.workspace import APP_ID, BOT_USER_ID, TEAM_DOMAIN, TEAM_ID

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

Request = tuple[str, dict[str, str]]


def signed(body: str, content_type: str, *, secret: str, timestamp: int) -> Request:
    """``(body, headers)`` with the signature headers Slack adds."""
    ts = str(timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    if signature is None:
        raise ValueError("a signing secret is required")
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
    }
    return body, headers


def _user(user_id: str, name: str) -> dict[str, str]:
    return {"id": user_id, "username": name, "name": name, "team_id": TEAM_ID}


def _team() -> dict[str, str]:
    return {"id": TEAM_ID, "domain": TEAM_DOMAIN}


def slash_command_body(
    *,
    command: str,
    text: str,
    user_id: str,
    user_name: str,
    channel_id: str,
    channel_name: str,
    response_url: str,
    trigger_id: str,
) -> tuple[str, str]:
    """A slash command invocation: ``(body, content type)``."""
    fields = {
        "token": "sandbox-verification-token",
        "team_id": TEAM_ID,
        "team_domain": TEAM_DOMAIN,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id,
    }
    return urlencode(fields), FORM


def interaction_body(payload: dict[str, Any]) -> tuple[str, str]:
    return "payload=" + quote(json.dumps(payload), safe=""), FORM


def block_action_payload(
    *,
    user_id: str,
    user_name: str,
    action: dict[str, Any],
    trigger_id: str,
    container: dict[str, Any],
    channel: tuple[str, str] | None = None,
    message: dict[str, Any] | None = None,
    view: dict[str, Any] | None = None,
    response_url: str | None = None,
    state_values: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``block_actions`` interaction: a click on a message (``channel``, ``message``,
    ``response_url``) or on a view (``view``)."""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": _user(user_id, user_name),
        "api_app_id": APP_ID,
        "token": "sandbox-verification-token",
        "container": container,
        "trigger_id": trigger_id,
        "team": _team(),
        "enterprise": None,
        "is_enterprise_install": False,
        "state": {"values": state_values or {}},
        "actions": [action],
    }
    if channel is not None:
        payload["channel"] = {"id": channel[0], "name": channel[1]}
    if message is not None:
        payload["message"] = message
    if view is not None:
        payload["view"] = view
    if response_url is not None:
        payload["response_url"] = response_url
    return payload


def view_payload(
    *,
    kind: str,
    user_id: str,
    user_name: str,
    view: dict[str, Any],
    state_values: dict[str, Any],
    trigger_id: str | None = None,
) -> dict[str, Any]:
    """A ``view_submission`` or ``view_closed`` interaction for ``view`` with its state."""
    payload: dict[str, Any] = {
        "type": kind,
        "team": _team(),
        "user": _user(user_id, user_name),
        "api_app_id": APP_ID,
        "token": "sandbox-verification-token",
        "view": {**view, "state": {"values": state_values}},
        "enterprise": None,
        "is_enterprise_install": False,
    }
    if kind == "view_submission":
        payload["trigger_id"] = trigger_id
        payload["response_urls"] = []
    else:
        payload["is_cleared"] = False
    return payload


def event_body(event: dict[str, Any], *, event_time: int) -> tuple[str, str]:
    """An Events API delivery (``event_callback``)."""
    envelope = {
        "token": "sandbox-verification-token",
        "team_id": TEAM_ID,
        "context_team_id": TEAM_ID,
        "context_enterprise_id": None,
        "api_app_id": APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": event_time,
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
    return json.dumps(envelope), JSON
