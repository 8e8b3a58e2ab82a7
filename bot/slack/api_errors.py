"""Slack's Web API errors, classified: what a failed call means for what pipebot does next.

Every Web API method's page lists the errors it returns (the "Errors" table of
``https://docs.slack.dev/reference/methods/<method>``). ``ERROR_SCOPES`` sorts every code
of the pages of the methods pipebot calls (chat.postMessage, chat.update,
chat.postEphemeral, conversations.history, conversations.replies, views.publish,
users.info, usergroups.users.list), and of the errors common to every method
(``invalid_auth``, ``internal_error``, ``fatal_error``...), into one of four ``Scope``s.
The tables were read on docs.slack.dev through their machine-readable mirror,
https://github.com/slack-ruby/slack-api-ref (``methods/<group>/<method>.json``, commit
f4837c0, 2026-08-20); each entry below quotes the page's words where they decide.

A code no page lists is retried like a transient one, but only ``UNKNOWN_ERROR_ATTEMPTS``
times (Slack: "other errors can be returned in the case where the service is down or
other unexpected factors affect processing"). Pure data and one pure function; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from slack_sdk.errors import BotUserAccessError, SlackApiError, SlackRequestError


class Scope(StrEnum):
    """What a failed call says about the calls after it."""

    TRANSIENT = "transient"
    """Slack could not do it now: retry with a growing delay (``Retry-After`` when given)."""
    MESSAGE = "message"
    """This call can never succeed as it is: give the message up (or re-post it); the
    channel and its subscriptions are fine."""
    CHANNEL = "channel"
    """The channel refuses pipebot: every call there fails until a person changes the
    channel. Suspend its subscriptions and tell whoever subscribed."""
    INSTALLATION = "installation"
    """The token or the app is refused everywhere: stop sending, log loudly, and try again
    rarely (a new token means a restart; added scopes keep the token)."""


UNKNOWN_ERROR_ATTEMPTS: Final = 10
"""Attempts made at a message that keeps failing with a code no table lists before it is
given up (the delays between them grow to 5 minutes: about half an hour in all)."""

_TRANSIENT: Final = (
    "ratelimited",  # every method: "Refer to the Retry-After header for when to retry"
    "rate_limited",  # chat.postMessage: "Application has posted too many messages"
    "service_unavailable",  # every method: "The service is temporarily unavailable"
    "internal_error",  # common: "likely due to a transient issue on our end"
    "fatal_error",  # common: "some aspect of the operation succeeded" (posts are looked up)
    "request_timeout",  # every method: "the POST data was either missing or truncated"
    "team_added_to_org",  # "intermittently unavailable until the transition is complete"
    "org_login_required",  # "will not be available until migration is complete"
    "message_limit_exceeded",  # chat.*: a free workspace's usage limit, lifted over time
    "external_channel_migrating",  # chat.update: "cannot be updated at this time"
    "update_failed",  # chat.update: "Internal update failure"
    "streaming_state_conflict",  # chat.update: "currently streaming text"
    "hash_conflict",  # views.publish: the view changed meanwhile
)
_MESSAGE: Final = (
    # chat.update: the message is gone or may not be edited. A parent whose message was
    # deleted is posted again (``REPOST_ERRORS``); anything else is given up.
    "message_not_found",
    "cant_update_message",
    "edit_window_closed",
    "block_mismatch",
    "cant_broadcast_message",
    "no_dual_broadcast_content_update",
    # chat.*: the content is refused as it is.
    "invalid_blocks",
    "invalid_blocks_format",
    "invalid_attachments",
    "msg_too_long",
    "msg_blocks_too_long",
    "no_text",
    "too_many_attachments",
    "too_many_contact_cards",
    "attachment_payload_limit_exceeded",
    "markdown_text_conflict",
    "invalid_metadata_format",
    "invalid_metadata_schema",
    "metadata_too_large",
    "metadata_must_be_sent_from_app",
    "as_user_not_supported",
    "slack_connect_canvas_sharing_blocked",
    "slack_connect_file_link_sharing_blocked",
    "slack_connect_lists_sharing_blocked",
    "posting_to_channel_denied",
    # chat.postMessage: this one thread takes no reply; the channel does.
    "cannot_reply_to_message",
    "restricted_action_thread_locked",
    # chat.postEphemeral, users.info, usergroups.users.list: this one recipient or lookup.
    "user_not_in_channel",
    "user_not_found",
    "user_not_visible",
    "no_such_subteam",
    # conversations.history / replies: this one lookup.
    "thread_not_found",
    "invalid_cursor",
    "invalid_ts_latest",
    "invalid_ts_oldest",
    "invalid_metadata_filter_keys",
    # views.publish: this one view.
    "view_too_large",
    "duplicate_external_id",
    "missing_profile_id",
    "not_implemented",
    # every method: a malformed call, which the same call repeats.
    "invalid_arg_name",
    "invalid_array_arg",
    "invalid_charset",
    "invalid_form_data",
    "invalid_post_type",
    "missing_post_type",
    "invalid_arguments",
)
_CHANNEL: Final = (
    "channel_not_found",  # "Value passed for channel was invalid" (deleted, or left private)
    "is_archived",  # chat.postMessage, chat.postEphemeral: "Channel has been archived"
    "is_inactive",  # chat.update: "within a frozen, archived or deleted channel"
    "not_in_channel",  # chat.postMessage, conversations.history: pipebot is no member
    "no_permission",  # "Make sure your app is a member of the conversation"
    "restricted_action",  # "A workspace preference prevents the authenticated user from posting"
    "restricted_action_read_only_channel",  # "Cannot post any message into a read-only channel"
    "restricted_action_thread_only_channel",  # no top-level messages: no parent message
    "restricted_action_non_threadable_channel",  # no thread replies: no thread events
    "ekm_access_denied",  # "admins have disabled sending messages to this channel"
    "access_denied",  # "Access to a resource specified in the request is denied"
    "channel_is_limited_access",  # conversations.history
    "method_not_supported_for_channel_type",  # conversations.replies
    "messages_tab_disabled",  # a direct message: the app's Messages tab is off
    "team_not_found",  # chat.postMessage with an org-wide token and a channel name
)
_INSTALLATION: Final = (
    "invalid_auth",  # auth.test: "Method was called with invalid credentials"
    "not_authed",  # "No authentication token provided"
    "account_inactive",  # "token is for a deleted user or workspace"
    "token_revoked",  # "the app has been removed"
    "token_expired",  # "Authentication token has expired"
    "missing_scope",  # "not granted the specific scope permissions required"
    "not_allowed_token_type",  # "The token type used in this request is not allowed"
    "is_bot",  # "cannot be called by a legacy bot"
    "app_access_restricted",  # chat.postMessage: "does not have permission to use this app"
    "accesslimited",  # "limited on the current network"
    "enterprise_is_restricted",  # "cannot be called from an Enterprise"
    "two_factor_setup_required",
    "deprecated_endpoint",
    "method_deprecated",
    "unknown_method",  # "This method is currently not available"
    "not_enabled",  # views.publish: "the Home tab isn't enabled for the app"
)


def _table() -> dict[str, Scope]:
    table: dict[str, Scope] = {}
    for scope, codes in (
        (Scope.TRANSIENT, _TRANSIENT),
        (Scope.MESSAGE, _MESSAGE),
        (Scope.CHANNEL, _CHANNEL),
        (Scope.INSTALLATION, _INSTALLATION),
    ):
        for code in codes:
            if code in table:
                raise ValueError(f"{code} is classified twice")
            table[code] = scope
    return table


ERROR_SCOPES: Final[Mapping[str, Scope]] = _table()
"""Slack's error code → what it means for the calls after it (see the module docstring)."""

REPOST_ERRORS: Final = frozenset({"message_not_found"})
"""chat.update errors after which a parent message is posted again, as a new message: it
was deleted, and the channel still wants the execution."""

NO_ANSWER_CODE: Final = "no_answer"
"""``SlackFailure.code`` of a call that got no answer (a timeout, a lost connection)."""


@dataclass(frozen=True)
class SlackFailure:
    """A failed Web API call, classified.

    ``code`` is Slack's error code (``is_archived``), ``http_<status>`` when an answer came
    without one, or ``no_answer``; ``method`` the Web API method (``chat.update``) when
    known; ``retry_after`` Slack's ``Retry-After`` in seconds (HTTP 429); ``known`` is
    False for a code ``ERROR_SCOPES`` does not list (retried, a bounded number of times);
    ``detail`` says what happened when no answer came (the exception)."""

    scope: Scope
    code: str
    method: str | None = None
    retry_after: float | None = None
    known: bool = True
    detail: str = ""

    @property
    def answered(self) -> bool:
        """False when Slack may or may not have applied the call (no answer came)."""
        return self.code != NO_ANSWER_CODE


def _method_of(response: Any) -> str | None:
    url = str(getattr(response, "api_url", "") or "")
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return name or None


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None) or {}
    for key, value in dict(headers).items():
        if str(key).lower() == "retry-after":
            try:
                return max(float(value[0] if isinstance(value, list) else value), 0.0)
            except (TypeError, ValueError, IndexError):
                return None
    return None


def classify(error: BaseException) -> SlackFailure:
    """What a Web API call's exception means (slack_sdk's ``SlackApiError`` for an answer
    with ``ok: false`` or a non-200 status; ``OSError`` or ``http.client.HTTPException``
    for no answer). HTTP 429 and 5xx are transient whatever the code; any exception other
    than slack_sdk's API, token-type and request errors counts as no answer (transient)."""
    if isinstance(error, SlackApiError):
        response = error.response
        status = int(getattr(response, "status_code", 200) or 200)
        data = getattr(response, "data", None)
        code = str(data.get("error") or "") if isinstance(data, dict) else ""
        method = _method_of(response)
        if status == 429 or code in ("ratelimited", "rate_limited"):
            return SlackFailure(
                scope=Scope.TRANSIENT,
                code=code or "ratelimited",
                method=method,
                retry_after=_retry_after(response),
            )
        if status >= 500:
            known = code in ERROR_SCOPES or not code
            return SlackFailure(
                scope=Scope.TRANSIENT, code=code or f"http_{status}", method=method, known=known
            )
        if not code:
            code = f"http_{status}"
        scope = ERROR_SCOPES.get(code)
        if scope is None:
            return SlackFailure(scope=Scope.TRANSIENT, code=code, method=method, known=False)
        return SlackFailure(scope=scope, code=code, method=method)
    if isinstance(error, BotUserAccessError):  # a bot token used where a user token is needed
        return SlackFailure(scope=Scope.INSTALLATION, code="not_allowed_token_type")
    if isinstance(error, SlackRequestError):  # refused by slack_sdk before it was sent
        return SlackFailure(scope=Scope.MESSAGE, code="invalid_arguments", detail=str(error))
    # OSError (timeouts, refused or lost connections), http.client.HTTPException (a cut
    # answer), any other SlackClientError: no answer to go by.
    return SlackFailure(
        scope=Scope.TRANSIENT, code=NO_ANSWER_CODE, detail=f"{type(error).__name__}: {error}"
    )
