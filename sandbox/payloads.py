"""What Slack sends an app, built as Slack builds it: the one builder of Slack's requests.

The sandbox (``sandbox.delivery``) turns what users do on its page into these requests; the
tests (``tests.slack_requests``) build theirs with the same functions. Pure functions build each
body, for a non-Enterprise workspace (``enterprise`` null, ``is_enterprise_install`` false):

* a slash command is a form-encoded body
  (https://api.slack.com/interactivity/slash-commands);
* an interaction is a form body ``payload=<json>``: ``block_actions``
  (https://api.slack.com/reference/interaction-payloads/block-actions), ``view_submission`` and
  ``view_closed`` (https://api.slack.com/reference/interaction-payloads/views);
* an event is JSON in an ``event_callback`` envelope (https://api.slack.com/apis/events-api).

``signed`` then adds Slack's headers: ``X-Slack-Signature``, the HMAC-SHA256 of
``v0:{timestamp}:{body}`` with the signing secret, and ``X-Slack-Request-Timestamp``
(https://api.slack.com/authentication/verifying-requests-from-slack).

The IDs every request carries (team, app, bot user, verification token) are an
``Installation``'s: ``SANDBOX`` (the sandbox's workspace) unless one is given.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode

from slack_sdk.signature import SignatureVerifier

from sandbox.workspace import APP_ID, BOT_USER_ID, TEAM_DOMAIN, TEAM_ID

FORM: Final = "application/x-www-form-urlencoded"
JSON: Final = "application/json"

Request = tuple[str, dict[str, str]]
"""``(body, headers)``: the raw body string and the headers Slack sends with it."""


@dataclass(frozen=True)
class Installation:
    """The app as installed in one workspace: the IDs Slack puts in every request to it."""

    team_id: str
    team_domain: str
    api_app_id: str
    bot_user_id: str
    verification_token: str
    """The deprecated verification token Slack still includes in every payload."""


SANDBOX: Final = Installation(
    team_id=TEAM_ID,
    team_domain=TEAM_DOMAIN,
    api_app_id=APP_ID,
    bot_user_id=BOT_USER_ID,
    verification_token="sandbox-verification-token",
)


def signature_headers(body: str, *, secret: str, timestamp: int) -> dict[str, str]:
    """The headers Slack signs a request with: ``X-Slack-Request-Timestamp`` and
    ``X-Slack-Signature`` (``v0=`` and the hex HMAC-SHA256 of ``v0:{timestamp}:{body}``)."""
    ts = str(timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    if signature is None:  # typed Optional: None only without a timestamp
        raise ValueError("a signing secret is required")
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}


def signed(body: str, content_type: str, *, secret: str, timestamp: int) -> Request:
    """``(body, headers)``: ``Content-Type`` and the signature headers Slack adds."""
    headers = {
        "Content-Type": content_type,
        **signature_headers(body, secret=secret, timestamp=timestamp),
    }
    return body, headers


def _user(user_id: str, name: str, installation: Installation) -> dict[str, str]:
    return {"id": user_id, "username": name, "name": name, "team_id": installation.team_id}


def _team(installation: Installation) -> dict[str, str]:
    return {"id": installation.team_id, "domain": installation.team_domain}


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
    installation: Installation = SANDBOX,
) -> tuple[str, str]:
    """A slash command invocation, ``(body, content type)``: the form fields ``token``,
    ``team_id``, ``team_domain``, ``channel_id``, ``channel_name``, ``user_id``, ``user_name``,
    ``command``, ``text``, ``api_app_id``, ``is_enterprise_install``, ``response_url`` and
    ``trigger_id``, form-encoded."""
    fields = {
        "token": installation.verification_token,
        "team_id": installation.team_id,
        "team_domain": installation.team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": installation.api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id,
    }
    return urlencode(fields), FORM


def interaction_body(payload: dict[str, Any]) -> tuple[str, str]:
    """Any interaction payload as Slack sends it, ``(body, content type)``: the form body
    ``payload=<json>``."""
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
    installation: Installation = SANDBOX,
) -> dict[str, Any]:
    """A ``block_actions`` interaction: ``type``, ``user``, ``api_app_id``, ``token``,
    ``container``, ``trigger_id``, ``team``, ``enterprise``, ``is_enterprise_install``,
    ``state`` (``{"values": state_values}``) and ``actions`` (the one ``action``); then, for a
    click on a message, ``channel`` (from ``(id, name)``), ``message`` (left out for an ephemeral
    one, as Slack does) and ``response_url``, or for a click on a view (a modal or the Home tab)
    ``view``."""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": _user(user_id, user_name, installation),
        "api_app_id": installation.api_app_id,
        "token": installation.verification_token,
        "container": container,
        "trigger_id": trigger_id,
        "team": _team(installation),
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
    installation: Installation = SANDBOX,
) -> dict[str, Any]:
    """A ``view_submission`` or ``view_closed`` interaction (``kind``): ``type``, ``team``,
    ``user``, ``api_app_id``, ``token``, ``view`` (``view`` with ``state``
    ``{"values": state_values}``), ``enterprise`` and ``is_enterprise_install``; then
    ``trigger_id`` and ``response_urls`` (empty) for a submission, ``is_cleared`` (false) for a
    close."""
    payload: dict[str, Any] = {
        "type": kind,
        "team": _team(installation),
        "user": _user(user_id, user_name, installation),
        "api_app_id": installation.api_app_id,
        "token": installation.verification_token,
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


def event_body(
    event: dict[str, Any],
    *,
    event_time: int,
    event_id: str | None = None,
    installation: Installation = SANDBOX,
) -> tuple[str, str]:
    """An Events API delivery, ``(body, content type)``: ``event`` in the JSON
    ``event_callback`` envelope, with one ``authorizations`` entry (the bot user) and a fresh
    ``event_id`` unless one is given."""
    envelope = {
        "token": installation.verification_token,
        "team_id": installation.team_id,
        "context_team_id": installation.team_id,
        "context_enterprise_id": None,
        "api_app_id": installation.api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": event_time,
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": installation.team_id,
                "user_id": installation.bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-{uuid.uuid4().hex}",
    }
    return json.dumps(envelope), JSON
