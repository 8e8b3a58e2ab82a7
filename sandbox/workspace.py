"""The sandbox's stand-in for a Slack workspace: its state and its Web API.

``Workspace`` keeps what a workspace shows (channels, messages, threads, ephemeral
messages, modals, Home tabs) and answers the Web API methods the bot calls, refusing
what Slack refuses (``sandbox.validate``): unknown channels, messages the bot did not
post, expired or reused ``trigger_id``s, ``response_url``s past 5 uses or 30 minutes,
invalid blocks. Every change bumps ``version`` so the page can wait for the next one.

A channel can be archived and unarchived from the page (``set_archived``), so the bot's
handling of a channel Slack refuses can be seen: posts there are answered ``is_archived``
and updates ``is_inactive``, as Slack's method pages list them (chat.postMessage,
chat.postEphemeral: "Channel has been archived"; chat.update: "within a frozen, archived or
deleted channel"), and ``conversations.info`` says ``is_archived``.

It never talks to the bot; ``sandbox.delivery`` sends the bot what users do.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sandbox.validate import Rejection, message_problem, view_problem

log = logging.getLogger(__name__)

TEAM_ID = "T0SANDBOX"
TEAM_DOMAIN = "pipebot-sandbox"
APP_ID = "A0PIPEBOT"
BOT_USER_ID = "U0PIPEBOT"
BOT_ID = "B0PIPEBOT"
RELEASES = "C0RELEASES"

TRIGGER_SECONDS = 3.0
RESPONSE_URL_USES = 5
RESPONSE_URL_SECONDS = 30 * 60
MAX_PUSHED_VIEWS = 3
MAX_PROBLEMS = 20
MAX_SAVED_MESSAGES = 1000


@dataclass(frozen=True)
class User:
    id: str
    name: str
    real_name: str
    title: str = ""


@dataclass(frozen=True)
class UserGroup:
    id: str
    handle: str
    members: tuple[str, ...]


@dataclass
class Message:
    """A message as a channel shows it. ``ephemeral_for`` is set for ephemeral messages."""

    channel: str
    ts: str
    user: str
    text: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    reply_broadcast: bool = False
    edited: bool = False
    ephemeral_for: str | None = None
    is_bot: bool = False
    metadata: dict[str, Any] | None = None

    def api_shape(self, *, with_metadata: bool = False) -> dict[str, Any]:
        shape: dict[str, Any] = {
            "type": "message",
            "ts": self.ts,
            "user": self.user,
            "text": self.text,
            "team": TEAM_ID,
        }
        if self.blocks:
            shape["blocks"] = self.blocks
        if self.thread_ts:
            shape["thread_ts"] = self.thread_ts
        if self.is_bot:
            shape.update(bot_id=BOT_ID, app_id=APP_ID)
        if with_metadata and self.metadata:
            shape["metadata"] = self.metadata
        return shape


@dataclass
class ResponseTarget:
    """Where a ``response_url`` posts: the channel and user of the request, and the message
    the request came from (a click), if any."""

    channel: str
    user: str
    created: float
    message_ts: str | None = None
    ephemeral: bool = False
    thread_ts: str | None = None
    uses: int = 0


@dataclass
class _Trigger:
    user: str
    issued: float
    used: bool = False


@dataclass(frozen=True)
class Problem:
    """A call Slack would have refused, shown on the page so the bug is visible."""

    method: str
    error: str
    detail: str
    at: float


class Workspace:
    """One sandbox workspace. Thread-safe; ``clock`` is injected for tests."""

    def __init__(
        self,
        *,
        bot_token: str,
        users: list[User],
        usergroups: Sequence[UserGroup] = (),
        channels: dict[str, str] | None = None,
        state_file: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bot_token = bot_token
        self._clock = clock
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self.version = 0
        self.users: dict[str, User] = {u.id: u for u in users}
        self.users[BOT_USER_ID] = User(BOT_USER_ID, "pipebot", "pipebot")
        self.usergroups: dict[str, UserGroup] = {g.id: g for g in usergroups}
        self.channels: dict[str, str] = dict(channels or {RELEASES: "releases"})
        self.archived: set[str] = set()
        self._messages: dict[tuple[str, str], Message] = {}
        self._ephemeral: list[Message] = []
        self._views: dict[str, dict[str, Any]] = {}
        self._view_owner: dict[str, str] = {}
        self._modal_stack: dict[str, list[str]] = {}
        self._modal_errors: dict[str, dict[str, str]] = {}
        self._home: dict[str, str] = {}
        self._triggers: dict[str, _Trigger] = {}
        self._responses: dict[str, ResponseTarget] = {}
        self._view_ids = itertools.count(1)
        self._last_ts = 0.0
        self.problems: list[Problem] = []
        self._state_file = state_file
        self._load()

    # ------------------------------------------------------------------ changes and waiting

    def _bump(self, *, persist: bool = False) -> None:
        self.version += 1
        if persist:
            self._save()
        self._changed.notify_all()

    def wait_for_change(self, since: int, timeout: float) -> int:
        """Block until ``version`` differs from ``since`` (or ``timeout``); return it."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != since, timeout)
            return self.version

    def _next_ts(self) -> str:
        now = max(self._clock(), self._last_ts + 0.000001)
        self._last_ts = now
        return f"{now:.6f}"

    # ------------------------------------------------------------------ persistence

    def _load(self) -> None:
        if self._state_file is None or not self._state_file.exists():
            return
        try:
            saved = json.loads(self._state_file.read_text())
            for item in saved.get("messages", []):
                message = Message(**item)
                self._messages[(message.channel, message.ts)] = message
            self._last_ts = float(saved.get("last_ts", 0.0))
            self.archived = {c for c in saved.get("archived", []) if c in self.channels}
        except (OSError, ValueError, TypeError) as exc:
            log.warning(
                "sandbox: starting with an empty workspace (%s unreadable: %s)",
                self._state_file,
                exc,
            )
            self._messages.clear()

    def _save(self) -> None:
        if self._state_file is None:
            return
        messages = sorted(self._messages.values(), key=lambda m: float(m.ts))
        data = {
            "messages": [asdict(m) for m in messages[-MAX_SAVED_MESSAGES:]],
            "last_ts": self._last_ts,
            "archived": sorted(self.archived),
        }
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(data))
        os.replace(temporary, self._state_file)

    # ------------------------------------------------------------------ what the page reads

    def user_name(self, user_id: str) -> str:
        user = self.users.get(user_id)
        return user.name if user else user_id

    def group_handle(self, group_id: str) -> str:
        group = self.usergroups.get(group_id)
        return group.handle if group else group_id

    def channel_messages(self, channel: str, *, viewer: str) -> list[Message]:
        """The channel's timeline as ``viewer`` sees it: top-level messages, broadcast
        replies, and ``viewer``'s ephemeral messages, oldest first."""
        with self._lock:
            public = [
                m
                for m in self._messages.values()
                if m.channel == channel and (m.thread_ts in (None, m.ts) or m.reply_broadcast)
            ]
            private = [
                m
                for m in self._ephemeral
                if m.channel == channel and m.ephemeral_for == viewer and m.thread_ts is None
            ]
            return sorted([*public, *private], key=lambda m: float(m.ts))

    def thread(self, channel: str, thread_ts: str, *, viewer: str) -> list[Message]:
        """The parent and its replies (with ``viewer``'s ephemeral ones), oldest first."""
        with self._lock:
            found = [
                m
                for m in self._messages.values()
                if m.channel == channel and (m.ts == thread_ts or m.thread_ts == thread_ts)
            ]
            found += [
                m
                for m in self._ephemeral
                if m.channel == channel and m.thread_ts == thread_ts and m.ephemeral_for == viewer
            ]
            return sorted(found, key=lambda m: float(m.ts))

    def reply_count(self, channel: str, ts: str) -> int:
        with self._lock:
            return sum(
                1
                for m in self._messages.values()
                if m.channel == channel and m.thread_ts == ts and m.ts != ts
            )

    def message(self, channel: str, ts: str) -> Message | None:
        with self._lock:
            found = self._messages.get((channel, ts))
            if found is None:
                found = next(
                    (m for m in self._ephemeral if m.channel == channel and m.ts == ts), None
                )
            return found

    def modal(self, user: str) -> dict[str, Any] | None:
        """The modal on top of ``user``'s stack, with its inline errors under ``_errors``."""
        with self._lock:
            stack = self._modal_stack.get(user) or []
            if not stack:
                return None
            view = dict(self._views[stack[-1]])
            view["_errors"] = dict(self._modal_errors.get(stack[-1], {}))
            view["_depth"] = len(stack)
            return view

    def view(self, view_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._views.get(view_id)
            return dict(found) if found else None

    def home(self, user: str) -> dict[str, Any] | None:
        with self._lock:
            view_id = self._home.get(user)
            return dict(self._views[view_id]) if view_id else None

    def dm_channel(self, user: str) -> str:
        return "D" + user[1:]

    # ------------------------------------------------------------------ what users do

    def _prune(self) -> None:
        """Forget triggers and response URLs that can no longer be used."""
        now = self._clock()
        self._triggers = {
            k: t for k, t in self._triggers.items() if now - t.issued <= 10 * TRIGGER_SECONDS
        }
        self._responses = {
            k: r for k, r in self._responses.items() if now - r.created <= RESPONSE_URL_SECONDS
        }

    def issue_trigger(self, user: str) -> str:
        with self._lock:
            self._prune()
            trigger = f"{int(self._clock())}.{secrets.token_hex(6)}"
            self._triggers[trigger] = _Trigger(user=user, issued=self._clock())
            return trigger

    def issue_response_url(self, target: ResponseTarget) -> str:
        """A response URL id for ``target`` (the server turns it into a URL)."""
        with self._lock:
            response_id = secrets.token_urlsafe(12)
            self._responses[response_id] = target
            return response_id

    def post_user_message(
        self, *, user: str, channel: str, text: str, thread_ts: str | None = None
    ) -> Message:
        with self._lock:
            message = Message(
                channel=channel, ts=self._next_ts(), user=user, text=text, thread_ts=thread_ts
            )
            self._messages[(channel, message.ts)] = message
            self._bump(persist=True)
            return message

    def post_ephemeral_notice(
        self,
        *,
        user: str,
        channel: str,
        text: str,
        thread_ts: str | None = None,
        author: str = "USLACKBOT",
    ) -> None:
        """A message only ``user`` sees (Slackbot's answers, failed commands)."""
        with self._lock:
            self._ephemeral.append(
                Message(
                    channel=channel,
                    ts=self._next_ts(),
                    user=author,
                    text=text,
                    thread_ts=thread_ts,
                    ephemeral_for=user,
                )
            )
            self._bump()

    def dismiss_ephemeral(self, *, user: str, ts: str) -> None:
        with self._lock:
            self._ephemeral = [
                m for m in self._ephemeral if not (m.ts == ts and m.ephemeral_for == user)
            ]
            self._bump()

    def set_archived(self, *, user: str, channel: str, archived: bool) -> str | None:
        """Archive (or unarchive) a channel as ``user``, who is shown doing it in the
        channel, as Slack shows it. None when done, else Slack's error code
        (``already_archived``, ``not_archived``, ``channel_not_found``)."""
        with self._lock:
            if channel not in self.channels:
                return "channel_not_found"
            if archived == (channel in self.archived):
                return "already_archived" if archived else "not_archived"
            verb = "archived" if archived else "unarchived"
            message = Message(
                channel=channel, ts=self._next_ts(), user=user, text=f"_{verb} the channel_"
            )
            self._messages[(channel, message.ts)] = message
            if archived:
                self.archived.add(channel)
            else:
                self.archived.discard(channel)
            self._bump(persist=True)
            return None

    def _refuse_if_archived(self, channel: str, error: str) -> None:
        if channel in self.archived:
            name = self.channels.get(channel, channel)
            raise RefusedError(Rejection(error, f"#{name} is archived"))

    def set_modal_errors(self, view_id: str, errors: dict[str, str]) -> None:
        with self._lock:
            self._modal_errors[view_id] = dict(errors)
            self._bump()

    def close_modal(self, user: str, *, all_views: bool = False) -> str | None:
        """Pop the top modal (or the whole stack); returns the closed view's id."""
        with self._lock:
            stack = self._modal_stack.get(user) or []
            if not stack:
                return None
            closed = stack[-1]
            if all_views:
                stack.clear()
            else:
                stack.pop()
            self._bump()
            return closed

    def replace_modal(self, user: str, view: dict[str, Any]) -> Rejection | None:
        """``response_action: update`` from a submission."""
        with self._lock:
            stack = self._modal_stack.get(user) or []
            if not stack:
                return Rejection("not_found", "no modal is open")
            problem = view_problem(view)
            if problem is not None:
                self._problem("view_submission update", problem)
                return problem
            self._store_view(view, stack[-1], user)
            self._modal_errors.pop(stack[-1], None)
            self._bump()
            return None

    def push_modal(self, user: str, view: dict[str, Any]) -> Rejection | None:
        """``response_action: push`` from a submission."""
        with self._lock:
            stack = self._modal_stack.setdefault(user, [])
            if len(stack) >= MAX_PUSHED_VIEWS:
                return Rejection("push_limit_reached", "at most 3 views can be stacked")
            problem = view_problem(view)
            if problem is not None:
                self._problem("view_submission push", problem)
                return problem
            view_id = self._new_view_id()
            self._store_view(view, view_id, user)
            stack.append(view_id)
            self._bump()
            return None

    # ------------------------------------------------------------------ the Web API

    def api(self, method: str, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        """Answer one Web API call as Slack would."""
        if token is None:
            return {"ok": False, "error": "not_authed"}
        if not secrets.compare_digest(token, self.bot_token):
            return {"ok": False, "error": "invalid_auth"}
        handler = _API.get(method)
        if handler is None:
            return {"ok": False, "error": "unknown_method"}
        with self._lock:
            try:
                answer = handler(self, params)
            except RefusedError as refused:
                self._problem(method, refused.rejection)
                return refused.rejection.response()
        answer.setdefault("response_metadata", {"warnings": []})
        return answer

    def respond(self, response_id: str, body: dict[str, Any]) -> tuple[int, str]:
        """A post to a ``response_url``: (HTTP status, plain-text body) as Slack answers."""
        with self._lock:
            target = self._responses.get(response_id)
            if target is None:
                return 404, "no_active_hooks"
            if self._clock() - target.created > RESPONSE_URL_SECONDS:
                return 404, "expired_url"
            if target.uses >= RESPONSE_URL_USES:
                return 404, "used_url"
            target.uses += 1
            if body.get("delete_original"):
                if target.message_ts is None:
                    return 404, "message_not_found"
                self._delete(target.channel, target.message_ts, viewer=target.user)
                self._bump(persist=True)
                return 200, "ok"
            problem = message_problem(body)
            if problem is not None:
                self._problem("response_url", problem)
                return 400, problem.error
            text, blocks = str(body.get("text") or ""), list(body.get("blocks") or [])
            if body.get("replace_original") and target.message_ts is not None:
                original = self.message(target.channel, target.message_ts)
                if original is None:
                    return 404, "message_not_found"
                original.text, original.blocks, original.edited = text, blocks, True
                self._bump(persist=original.ephemeral_for is None)
                return 200, "ok"
            thread_ts = body.get("thread_ts") or target.thread_ts
            if body.get("response_type") == "in_channel":
                message = Message(
                    channel=target.channel,
                    ts=self._next_ts(),
                    user=BOT_USER_ID,
                    text=text,
                    blocks=blocks,
                    thread_ts=thread_ts,
                    is_bot=True,
                )
                self._messages[(message.channel, message.ts)] = message
                self._bump(persist=True)
                return 200, "ok"
            self._ephemeral.append(
                Message(
                    channel=target.channel,
                    ts=self._next_ts(),
                    user=BOT_USER_ID,
                    text=text,
                    blocks=blocks,
                    thread_ts=thread_ts,
                    ephemeral_for=target.user,
                    is_bot=True,
                )
            )
            self._bump()
            return 200, "ok"

    def show_ack(
        self, *, user: str, channel: str, body: dict[str, Any], thread_ts: str | None = None
    ) -> None:
        """A slash command's ack carrying a message: shown like a response_url post."""
        target = ResponseTarget(
            channel=channel, user=user, created=self._clock(), thread_ts=thread_ts
        )
        with self._lock:
            response_id = self.issue_response_url(target)
            status, error = self.respond(response_id, body)
            self._responses.pop(response_id, None)
        if status != 200:
            self.post_ephemeral_notice(
                user=user,
                channel=channel,
                text=f"pipebot answered with a message Slack refuses ({error}).",
            )

    # ------------------------------------------------------------------ helpers

    def _problem(self, method: str, rejection: Rejection) -> None:
        log.warning(
            "sandbox: Slack would refuse %s: %s (%s)", method, rejection.error, rejection.detail
        )
        self.problems.append(Problem(method, rejection.error, rejection.detail, self._clock()))
        del self.problems[:-MAX_PROBLEMS]
        self._bump()

    def _channel(self, params: dict[str, Any]) -> str:
        channel = str(params.get("channel") or "")
        if channel[:1] in ("U", "W") and channel in self.users:
            return self.dm_channel(channel)
        if channel in self.channels or (
            channel.startswith("D") and ("U" + channel[1:]) in self.users
        ):
            return channel
        raise RefusedError(Rejection("channel_not_found", f"no channel {channel!r}"))

    def _delete(self, channel: str, ts: str, *, viewer: str) -> None:
        self._messages.pop((channel, ts), None)
        self._ephemeral = [
            m
            for m in self._ephemeral
            if not (m.channel == channel and m.ts == ts and m.ephemeral_for == viewer)
        ]

    def _new_view_id(self) -> str:
        return f"V{next(self._view_ids):08d}"

    def _store_view(self, view: dict[str, Any], view_id: str, user: str) -> dict[str, Any]:
        stored: dict[str, Any] = {
            **view,
            "id": view_id,
            "team_id": TEAM_ID,
            "blocks": view.get("blocks", []),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""),
            "state": {"values": {}},
            "hash": f"{int(self._clock())}.{secrets.token_hex(4)}",
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": APP_ID,
            "app_installed_team_id": TEAM_ID,
            "bot_id": BOT_ID,
        }
        self._views[view_id] = stored
        self._view_owner[view_id] = user
        return dict(stored)

    def _use_trigger(self, params: dict[str, Any]) -> str:
        trigger_id = str(params.get("trigger_id") or "")
        trigger = self._triggers.get(trigger_id)
        if trigger is None:
            raise RefusedError(Rejection("invalid_trigger_id", "unknown trigger_id"))
        if trigger.used:
            raise RefusedError(Rejection("exchanged_trigger_id", "trigger_id already used"))
        if self._clock() - trigger.issued > TRIGGER_SECONDS:
            raise RefusedError(Rejection("expired_trigger_id", "trigger_id older than 3 seconds"))
        trigger.used = True
        return trigger.user

    @staticmethod
    def _view_param(params: dict[str, Any]) -> dict[str, Any]:
        view = params.get("view")
        if isinstance(view, str):
            try:
                view = json.loads(view)
            except ValueError:
                raise RefusedError(Rejection("invalid_arguments", "view is not JSON")) from None
        problem = view_problem(view)
        if problem is not None:
            raise RefusedError(problem)
        assert isinstance(view, dict)
        return view

    # ------------------------------------------------------------------ API methods

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": f"https://{TEAM_DOMAIN}.slack.com/",
            "team": "pipebot sandbox",
            "user": "pipebot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        self._refuse_if_archived(channel, "is_archived")
        problem = message_problem(params)
        if problem is not None:
            raise RefusedError(problem)
        thread_ts = params.get("thread_ts") or None
        message = Message(
            channel=channel,
            ts=self._next_ts(),
            user=BOT_USER_ID,
            text=str(params.get("text") or ""),
            blocks=list(params.get("blocks") or []),
            thread_ts=str(thread_ts) if thread_ts else None,
            reply_broadcast=bool(thread_ts) and _truthy(params.get("reply_broadcast")),
            is_bot=True,
            metadata=params["metadata"] if isinstance(params.get("metadata"), dict) else None,
        )
        self._messages[(channel, message.ts)] = message
        self._bump(persist=True)
        return {"ok": True, "channel": channel, "ts": message.ts, "message": message.api_shape()}

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        self._refuse_if_archived(channel, "is_inactive")
        ts = str(params.get("ts") or "")
        message = self._messages.get((channel, ts))
        if message is None:
            raise RefusedError(Rejection("message_not_found", f"no message {ts!r} in {channel}"))
        if message.user != BOT_USER_ID:
            raise RefusedError(Rejection("cant_update_message", "only the bot's own messages"))
        problem = message_problem(params)
        if problem is not None:
            raise RefusedError(problem)
        if "text" in params:
            message.text = str(params.get("text") or "")
        if "blocks" in params:
            message.blocks = list(params.get("blocks") or [])
        message.edited = True
        self._bump(persist=True)
        return {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "text": message.text,
            "message": message.api_shape(),
        }

    def _post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        self._refuse_if_archived(channel, "is_archived")
        user = str(params.get("user") or "")
        if user not in self.users:
            raise RefusedError(Rejection("user_not_in_channel", f"no user {user!r}"))
        problem = message_problem(params)
        if problem is not None:
            raise RefusedError(problem)
        thread_ts = params.get("thread_ts") or None
        message = Message(
            channel=channel,
            ts=self._next_ts(),
            user=BOT_USER_ID,
            text=str(params.get("text") or ""),
            blocks=list(params.get("blocks") or []),
            thread_ts=str(thread_ts) if thread_ts else None,
            ephemeral_for=user,
            is_bot=True,
        )
        self._ephemeral.append(message)
        self._bump()
        return {"ok": True, "message_ts": message.ts}

    def _chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        ts = str(params.get("ts") or "")
        message = self._messages.get((channel, ts))
        if message is None:
            raise RefusedError(Rejection("message_not_found", f"no message {ts!r}"))
        if message.user != BOT_USER_ID:
            raise RefusedError(Rejection("cant_delete_message", "only the bot's own messages"))
        del self._messages[(channel, ts)]
        self._bump(persist=True)
        return {"ok": True, "channel": channel, "ts": ts}

    def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        view = self._view_param(params)
        user = self._use_trigger(params)
        if view.get("type") != "modal":
            raise RefusedError(Rejection("invalid_arguments", "views.open takes a modal"))
        view_id = self._new_view_id()
        stored = self._store_view(view, view_id, user)
        self._modal_stack[user] = [view_id]
        self._bump()
        return {"ok": True, "view": stored}

    def _views_push(self, params: dict[str, Any]) -> dict[str, Any]:
        view = self._view_param(params)
        user = self._use_trigger(params)
        stack = self._modal_stack.setdefault(user, [])
        if not stack:
            raise RefusedError(Rejection("not_found", "views.push needs an open modal"))
        if len(stack) >= MAX_PUSHED_VIEWS:
            raise RefusedError(Rejection("push_limit_reached", "at most 3 views can be stacked"))
        view_id = self._new_view_id()
        stored = self._store_view(view, view_id, user)
        stack.append(view_id)
        self._bump()
        return {"ok": True, "view": stored}

    def _views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        view = self._view_param(params)
        view_id = str(params.get("view_id") or "")
        external_id = params.get("external_id")
        if not view_id and external_id:
            view_id = next(
                (k for k, v in self._views.items() if v.get("external_id") == external_id), ""
            )
        current = self._views.get(view_id)
        if current is None:
            raise RefusedError(Rejection("not_found", f"no view {view_id!r}"))
        if params.get("hash") and params["hash"] != current["hash"]:
            raise RefusedError(Rejection("hash_conflict", "the view changed since that hash"))
        user = self._view_owner[view_id]
        is_open = view_id in (self._modal_stack.get(user) or []) or self._home.get(user) == view_id
        if not is_open:
            raise RefusedError(Rejection("not_found", "that view was closed"))
        stored = self._store_view(view, view_id, user)
        self._modal_errors.pop(view_id, None)
        self._bump()
        return {"ok": True, "view": stored}

    def _views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        view = self._view_param(params)
        user = str(params.get("user_id") or "")
        if user not in self.users:
            raise RefusedError(Rejection("user_not_found", f"no user {user!r}"))
        if view.get("type") != "home":
            raise RefusedError(Rejection("invalid_arguments", "views.publish takes a home view"))
        view_id = self._home.get(user) or self._new_view_id()
        self._home[user] = view_id
        stored = self._store_view(view, view_id, user)
        self._bump()
        return {"ok": True, "view": stored}

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(params.get("user") or ""))
        if user is None:
            raise RefusedError(Rejection("user_not_found", "no such user"))
        return {
            "ok": True,
            "user": {
                "id": user.id,
                "team_id": TEAM_ID,
                "name": user.name,
                "real_name": user.real_name,
                "deleted": False,
                "is_bot": user.id == BOT_USER_ID,
                "tz": "UTC",
                "tz_offset": 0,
                "profile": {
                    "display_name": user.name,
                    "real_name": user.real_name,
                    "title": user.title,
                },
            },
        }

    def _usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        group = self.usergroups.get(str(params.get("usergroup") or ""))
        if group is None:
            raise RefusedError(Rejection("no_such_subteam", "no such user group"))
        return {"ok": True, "users": list(group.members)}

    def _usergroups_list(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "usergroups": [
                {
                    "id": g.id,
                    "handle": g.handle,
                    "name": g.handle,
                    "users": list(g.members),
                    "user_count": len(g.members),
                    "team_id": TEAM_ID,
                }
                for g in self.usergroups.values()
            ],
        }

    def _conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        """A channel's top-level messages, newest first (what the notifier reads to tell
        whether a post that got no answer went out)."""
        channel = self._channel(params)
        limit = max(1, min(int(params.get("limit") or 100), 1000))
        found = sorted(
            (
                m
                for (c, ts), m in self._messages.items()
                if c == channel and m.ephemeral_for is None and m.thread_ts in (None, ts)
            ),
            key=lambda m: float(m.ts),
            reverse=True,
        )
        with_metadata = _truthy(params.get("include_all_metadata"))
        return {
            "ok": True,
            "messages": [m.api_shape(with_metadata=with_metadata) for m in found[:limit]],
            "has_more": len(found) > limit,
        }

    def _conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        """A thread: its parent, then its replies, oldest first."""
        channel = self._channel(params)
        parent = str(params.get("ts") or "")
        if (channel, parent) not in self._messages:
            raise RefusedError(Rejection("thread_not_found", f"no message {parent!r} in {channel}"))
        limit = max(1, min(int(params.get("limit") or 100), 1000))
        found = sorted(
            (
                m
                for (c, ts), m in self._messages.items()
                if c == channel
                and m.ephemeral_for is None
                and (ts == parent or m.thread_ts == parent)
            ),
            key=lambda m: float(m.ts),
        )
        with_metadata = _truthy(params.get("include_all_metadata"))
        return {
            "ok": True,
            "messages": [m.api_shape(with_metadata=with_metadata) for m in found[:limit]],
            "has_more": len(found) > limit,
        }

    def _conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        return {
            "ok": True,
            "channel": {
                "id": channel,
                "name": self.channels.get(channel, "directmessage"),
                "is_channel": channel.startswith("C"),
                "is_im": channel.startswith("D"),
                "is_private": not channel.startswith("C"),
                "is_member": True,
                "is_archived": channel in self.archived,
            },
        }


class RefusedError(Exception):
    """Carries Slack's refusal out of an API method."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.error)
        self.rejection = rejection


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true"))


_API: dict[str, Callable[[Workspace, dict[str, Any]], dict[str, Any]]] = {
    "auth.test": Workspace._auth_test,
    "chat.postMessage": Workspace._post_message,
    "chat.update": Workspace._update,
    "chat.postEphemeral": Workspace._post_ephemeral,
    "chat.delete": Workspace._chat_delete,
    "views.open": Workspace._views_open,
    "views.push": Workspace._views_push,
    "views.update": Workspace._views_update,
    "views.publish": Workspace._views_publish,
    "users.info": Workspace._users_info,
    "usergroups.users.list": Workspace._usergroups_users_list,
    "usergroups.list": Workspace._usergroups_list,
    "conversations.info": Workspace._conversations_info,
    "conversations.history": Workspace._conversations_history,
    "conversations.replies": Workspace._conversations_replies,
}
