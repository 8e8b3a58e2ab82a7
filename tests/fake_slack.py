"""A recording fake of the Slack Web API, for tests that must not talk to Slack.

Modelled on how bolt-python tests itself (a local HTTP server the ``WebClient`` is pointed
at through ``base_url``), but recording every call so tests can assert on what the bot sent::

    with FakeSlack() as fake:
        client = WebClient(token="xoxb-test", base_url=fake.base_url)
        client.chat_postMessage(channel="C1", text="hi")
        assert fake.calls_to("chat.postMessage")[0].params["text"] == "hi"

Besides ``/api/<method>`` the server answers ``response_url(name)`` posts (recorded with
method ``"response_url"``) and the upload URLs handed out by ``files.getUploadURLExternal``
(recorded with method ``"upload_url"``), so ``respond()`` and ``files_upload_v2`` work too.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from slack_sdk import WebClient

TEAM_ID = "T1"
TEAM_NAME = "Pipebot Test"
TEAM_DOMAIN = "pipebot-test"
TEAM_URL = f"https://{TEAM_DOMAIN}.slack.com/"
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
APP_ID = "A1PIPEBOT"

# Request fields Slack expects as JSON-encoded strings in form bodies; decoded when recorded.
JSON_FIELDS = frozenset(
    {"attachments", "blocks", "files", "metadata", "unfurls", "user_auth_blocks", "view"}
)
# Limits from the Block Kit docs; Slack rejects payloads above them.
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100

Answer = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class Call:
    """One request the fake received.

    ``params`` merges the query string and the body (form, JSON or multipart); fields in
    ``JSON_FIELDS`` sent as JSON strings are decoded to Python objects. ``headers`` has
    lower-case names. ``status`` and ``response`` are what the fake answered (``response`` is
    ``None`` when the answer was not JSON).
    """

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    at: float
    path: str = ""
    status: int = 200
    response: dict[str, Any] | None = None

    @property
    def token(self) -> str | None:
        """The bearer token of the request (``xoxb-...``), if any."""
        auth = self.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            return auth.removeprefix("Bearer ")
        token = self.params.get("token")
        return token if isinstance(token, str) else None

    @property
    def ok(self) -> bool:
        return self.status == 200 and (self.response is None or self.response.get("ok") is True)


@dataclass
class _Failure:
    status: int
    retry_after: int
    error: str | None


@dataclass
class _Message:
    channel: str
    ts: str
    data: dict[str, Any] = field(default_factory=dict)


def _json_bytes(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode("utf-8")


def _decode_json_fields(params: dict[str, Any]) -> dict[str, Any]:
    for key in JSON_FIELDS & params.keys():
        value = params[key]
        if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            with contextlib.suppress(ValueError):
                params[key] = json.loads(value)
    return params


def _flatten(multi: dict[str, list[str]]) -> dict[str, Any]:
    return {k: v[0] if len(v) == 1 else v for k, v in multi.items()}


def _parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    raw = f"Content-Type: {content_type}\r\n\r\n".encode() + body
    message = BytesParser(policy=HTTP).parsebytes(raw)
    params: dict[str, Any] = {}
    for part in message.walk():
        if part.is_multipart():
            continue
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if part.get_filename() is not None:
            params[name] = data
        else:
            params[name] = data.decode("utf-8", errors="replace")
    return params


def _parse_body(content_type: str, body: bytes, query: str) -> dict[str, Any]:
    params: dict[str, Any] = _flatten(parse_qs(query, keep_blank_values=True))
    if body:
        kind = content_type.split(";", 1)[0].strip().lower()
        if kind == "multipart/form-data":
            params.update(_parse_multipart(content_type, body))
        else:
            text = body.decode("utf-8", errors="replace")
            if kind == "application/json" or text.lstrip().startswith("{"):
                try:
                    decoded = json.loads(text)
                except ValueError:
                    decoded = {"_raw": text}
                params.update(decoded if isinstance(decoded, dict) else {"_json": decoded})
            else:
                params.update(_flatten(parse_qs(text, keep_blank_values=True)))
    return _decode_json_fields(params)


def _tz_info(tz: str) -> tuple[str, int]:
    try:
        now = datetime.now(ZoneInfo(tz))
    except (ZoneInfoNotFoundError, ValueError):
        now = datetime.now(UTC)
    offset = now.utcoffset()
    return now.tzname() or tz, int(offset.total_seconds()) if offset is not None else 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeSlack


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeSlack/1.0"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        parts = urlsplit(self.path)
        fake = cast(_Server, self.server).fake
        status, extra_headers, payload = fake._dispatch(parts.path, parts.query, headers, body)
        self.send_response(status)
        for name, value in extra_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.close_connection = True


class FakeSlack:
    """A threaded HTTP server on 127.0.0.1 (ephemeral port) answering Slack Web API calls.

    The port is bound on construction, so ``base_url`` is usable before ``start()``.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._calls: list[Call] = []
        self._failures: dict[str, collections.deque[_Failure]] = {}
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._messages: dict[tuple[str, str], _Message] = {}
        self._home_views: dict[str, str] = {}
        self._views: dict[str, dict[str, Any]] = {}
        self._upload_names: dict[str, str] = {}
        self.uploads: dict[str, bytes] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.usergroup_handles: dict[str, str] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.set_user(BOT_USER_ID, "pipebot", is_bot=True)
        self.set_user("UADMIN", "admin", is_admin=True)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.port: int = self._server.server_address[1]
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root_url}/api/"
        # Where apps.connections.open sends a Socket Mode client (a test's WebSocket server).
        self.socket_mode_url: str | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeSlack:
        if self._stopped:
            raise RuntimeError("FakeSlack cannot be restarted; create a new one")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"FakeSlack:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def web_client(self, token: str = "xoxb-test", **kwargs: Any) -> WebClient:
        """A real ``WebClient`` pointed at this fake."""
        return WebClient(token=token, base_url=self.base_url, **kwargs)

    def response_url(self, name: str = "default") -> str:
        """A ``response_url`` for payloads; posts to it are recorded as ``"response_url"``."""
        return f"{self.root_url}/response/{name}"

    # ------------------------------------------------------------------ recording

    @property
    def calls(self) -> list[Call]:
        """A snapshot of every recorded call, oldest first."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if c.method == method]

    def response_url_posts(self, name: str | None = None) -> list[Call]:
        """Posts to ``response_url(name)`` (to any response URL when ``name`` is None)."""
        calls = self.calls_to("response_url")
        if name is None:
            return calls
        return [c for c in calls if c.path == f"/response/{name}"]

    def wait_for(
        self,
        method: str,
        *,
        count: int = 1,
        timeout: float = 10.0,
        where: Callable[[Call], bool] | None = None,
    ) -> list[Call]:
        """Block until ``count`` calls to ``method`` (matching ``where``) are recorded.

        Returns every matching call recorded so far (at least ``count``). A ``where`` that
        raises ``KeyError``/``IndexError``/``TypeError``/``AttributeError`` counts as no match.
        Raises ``AssertionError`` listing what was recorded on timeout.
        """

        def matches(call: Call) -> bool:
            if call.method != method:
                return False
            if where is None:
                return True
            try:
                return bool(where(call))
            except (KeyError, IndexError, TypeError, AttributeError):
                return False

        with self._cond:
            done = self._cond.wait_for(
                lambda: sum(1 for c in self._calls if matches(c)) >= count, timeout
            )
            found = [c for c in self._calls if matches(c)]
            recorded = [c.method for c in self._calls]
        if not done:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {count} {method} call(s)"
                f"{' matching the filter' if where else ''}; got {len(found)}. "
                f"Recorded: {recorded}"
            )
        return found

    def clear(self) -> None:
        """Forget recorded calls (injected failures, users, messages and views stay)."""
        with self._lock:
            self._calls.clear()

    def reset_failures(self) -> None:
        """Drop failures queued by ``fail_next`` that have not fired yet."""
        with self._lock:
            self._failures.clear()

    # ------------------------------------------------------------------ configuration

    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: int = 1,
        times: int = 1,
        error: str | None = None,
    ) -> None:
        """Make the next ``times`` calls to ``method`` fail.

        With ``error``: HTTP 200 ``{"ok": false, "error": error}``. Otherwise HTTP ``status``:
        429 answers ``{"ok": false, "error": "ratelimited"}`` with a ``Retry-After`` header,
        any other status ``{"ok": false, "error": "internal_error"}``. Works for
        ``"response_url"`` too (plain-text body, as Slack's webhooks answer).
        """
        with self._lock:
            queue = self._failures.setdefault(method, collections.deque())
            for _ in range(times):
                queue.append(_Failure(status=status, retry_after=retry_after, error=error))

    def set_user(
        self,
        user_id: str,
        name: str,
        *,
        tz: str = "UTC",
        real_name: str | None = None,
        email: str | None = None,
        is_admin: bool = False,
        is_bot: bool = False,
        deleted: bool = False,
    ) -> dict[str, Any]:
        """Add or replace a user returned by ``users.info``; returns the user object."""
        tz_label, tz_offset = _tz_info(tz)
        full_name = real_name or name.replace(".", " ").title()
        user: dict[str, Any] = {
            "id": user_id,
            "team_id": TEAM_ID,
            "name": name,
            "deleted": deleted,
            "real_name": full_name,
            "tz": tz,
            "tz_label": tz_label,
            "tz_offset": tz_offset,
            "profile": {
                "real_name": full_name,
                "real_name_normalized": full_name,
                "display_name": name,
                "display_name_normalized": name,
                "email": email or f"{name}@example.com",
                "team": TEAM_ID,
            },
            "is_admin": is_admin,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": int(time.time()),
        }
        with self._lock:
            self.users[user_id] = user
        return user

    def set_usergroup(self, group_id: str, users: list[str], *, handle: str | None = None) -> None:
        """Set the members returned by ``usergroups.users.list`` for ``group_id``."""
        with self._lock:
            self.usergroups[group_id] = list(users)
            self.usergroup_handles[group_id] = handle or group_id.lower()

    def set_channel(
        self,
        channel_id: str,
        name: str,
        *,
        is_private: bool = False,
        is_member: bool = True,
        is_archived: bool = False,
        deleted: bool = False,
    ) -> dict[str, Any]:
        """Configure what ``conversations.info`` answers for ``channel_id``, and how the
        ``chat.*`` methods treat it, as Slack's method pages document: an archived channel
        answers ``is_archived`` to chat.postMessage and chat.postEphemeral and
        ``is_inactive`` to chat.update; one the bot is no member of, ``not_in_channel`` to
        chat.postMessage and chat.postEphemeral; a ``deleted`` one ``channel_not_found`` to
        every method. Call again to change it (unarchived, invited back)."""
        channel = self._channel_object(channel_id, name)
        channel.update(
            is_private=is_private,
            is_group=is_private,
            is_member=is_member,
            is_archived=is_archived,
            deleted=deleted,
        )
        with self._lock:
            self.channels[channel_id] = channel
        return channel

    def _channel_refusal(self, method: str, channel: str) -> str | None:
        """The error Slack answers ``method`` in ``channel`` as configured by
        ``set_channel`` (None: it is accepted)."""
        with self._lock:
            info = self.channels.get(channel)
        if info is None:
            return None
        if info.get("deleted"):
            return "channel_not_found"
        if info.get("is_archived"):
            return "is_inactive" if method == "chat.update" else "is_archived"
        if not info.get("is_member") and method != "chat.update":
            return "not_in_channel"
        return None

    # ------------------------------------------------------------------ state for assertions

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The current state of a posted message (after any ``chat.update``), else None."""
        with self._lock:
            stored = self._messages.get((self._resolve_channel(channel), ts))
            return dict(stored.data) if stored else None

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Current messages (not deleted), oldest first, optionally in one channel."""
        with self._lock:
            found = [
                dict(m.data)
                for m in self._messages.values()
                if channel is None or m.channel == self._resolve_channel(channel)
            ]
        return sorted(found, key=lambda m: float(m["ts"]))

    def view(self, view_id: str) -> dict[str, Any] | None:
        """The latest state of a view opened, pushed, updated or published."""
        with self._lock:
            stored = self._views.get(view_id)
            return dict(stored) if stored else None

    def home_view(self, user_id: str) -> dict[str, Any] | None:
        """The Home tab last published for ``user_id``."""
        with self._lock:
            view_id = self._home_views.get(user_id)
        return self.view(view_id) if view_id else None

    # ------------------------------------------------------------------ request handling

    def _dispatch(self, path: str, query: str, headers: dict[str, str], body: bytes) -> Answer:
        if path.startswith("/api/"):
            method = path.removeprefix("/api/")
            params = _parse_body(headers.get("content-type", ""), body, query)
            return self._record(method, path, params, headers, self._answer_api)
        if path.startswith("/response/"):
            params = _parse_body(headers.get("content-type", ""), body, query)
            return self._record("response_url", path, params, headers, self._answer_webhook)
        if path.startswith("/upload/"):
            file_id = path.removeprefix("/upload/")
            with self._lock:
                self.uploads[file_id] = body
            text = body.decode("utf-8", errors="replace")
            params = {"file_id": file_id, "size": len(body), "content": text}
            return self._record("upload_url", path, params, headers, self._answer_webhook)
        return 404, {"Content-Type": "text/plain"}, b"not found"

    def _record(
        self,
        method: str,
        path: str,
        params: dict[str, Any],
        headers: dict[str, str],
        answer: Callable[[str, dict[str, Any], dict[str, str]], Answer],
    ) -> Answer:
        with self._lock:
            queue = self._failures.get(method)
            failure = queue.popleft() if queue else None
        if failure is not None:
            result = self._answer_failure(method, failure)
        else:
            try:
                result = answer(method, params, headers)
            except Exception as exc:  # a bug in the fake must not look like a network error
                result = (
                    500,
                    {"Content-Type": "application/json"},
                    _json_bytes({"ok": False, "error": "fake_slack_error", "detail": repr(exc)}),
                )
        status, _, payload = result
        response: dict[str, Any] | None
        try:
            loaded = json.loads(payload)
            response = loaded if isinstance(loaded, dict) else None
        except ValueError:
            response = None
        call = Call(method, params, headers, time.time(), path, status, response)
        with self._cond:
            self._calls.append(call)
            self._cond.notify_all()
        return result

    def _answer_failure(self, method: str, failure: _Failure) -> Answer:
        if method in ("response_url", "upload_url"):
            text = failure.error or ("ratelimited" if failure.status == 429 else "internal_error")
            status = failure.status if failure.error is None else 404
            return status, {"Content-Type": "text/plain"}, text.encode()
        if failure.error is not None:
            return self._json(200, {"ok": False, "error": failure.error})
        if failure.status == 429:
            headers = {"Content-Type": "application/json", "Retry-After": str(failure.retry_after)}
            return 429, headers, _json_bytes({"ok": False, "error": "ratelimited"})
        return self._json(failure.status, {"ok": False, "error": "internal_error"})

    def _answer_webhook(
        self, method: str, params: dict[str, Any], headers: dict[str, str]
    ) -> Answer:
        return 200, {"Content-Type": "text/html"}, b"ok"

    @staticmethod
    def _json(status: int, data: dict[str, Any]) -> Answer:
        return status, {"Content-Type": "application/json; charset=utf-8"}, _json_bytes(data)

    def _answer_api(self, method: str, params: dict[str, Any], headers: dict[str, str]) -> Answer:
        auth = headers.get("authorization", "")
        token = params.get("token")
        # An app-level token (xapp-) opens Socket Mode connections and does nothing else.
        kind = "xapp-" if method == "apps.connections.open" else "xoxb-"
        if not (
            auth.startswith("Bearer " + kind)
            or (not auth and isinstance(token, str) and token.startswith(kind))
        ):
            return self._json(200, {"ok": False, "error": "not_authed"})
        handler = _API_HANDLERS.get(method)
        data: dict[str, Any] = handler(self, params) if handler else {"ok": True}
        if data.get("ok"):
            data.setdefault("response_metadata", {"warnings": []})
        return self._json(200, data)

    # ------------------------------------------------------------------ helpers for answers

    def _next_ts(self) -> str:
        micros = next(self._seq) * 100
        return f"{1700000000 + micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):08d}"

    @staticmethod
    def _resolve_channel(channel: str) -> str:
        """Posting to a user ID posts into the bot's DM with that user, as Slack does."""
        if channel[:1] in ("U", "W") and channel != BOT_USER_ID:
            return "D" + channel[1:]
        return channel

    @staticmethod
    def _channel_object(channel_id: str, name: str) -> dict[str, Any]:
        is_im = channel_id.startswith("D")
        return {
            "id": channel_id,
            "name": name,
            "is_channel": not is_im,
            "is_group": channel_id.startswith("G"),
            "is_im": is_im,
            "is_mpim": False,
            "is_private": channel_id.startswith("G") or is_im,
            "is_archived": False,
            "is_general": False,
            "is_member": True,
            "is_ext_shared": False,
            "is_org_shared": False,
            "context_team_id": TEAM_ID,
            "created": 1600000000,
            "creator": "UADMIN",
        }

    def _bot_message(self, ts: str, params: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": TEAM_ID,
            "ts": ts,
            "text": params.get("text") or "",
        }
        for key in ("blocks", "attachments", "metadata", "thread_ts"):
            if params.get(key) not in (None, ""):
                message[key] = params[key]
        return message

    @staticmethod
    def _has_content(params: dict[str, Any]) -> bool:
        return any(params.get(k) not in (None, "", []) for k in ("text", "blocks", "attachments"))

    @staticmethod
    def _too_many_blocks(blocks: Any, limit: int) -> bool:
        return isinstance(blocks, list) and len(blocks) > limit

    # ------------------------------------------------------------------ API methods

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": TEAM_URL,
            "team": TEAM_NAME,
            "user": "pipebot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        refusal = self._channel_refusal("chat.postMessage", str(channel))
        if refusal:
            return {"ok": False, "error": refusal}
        if not self._has_content(params):
            return {"ok": False, "error": "no_text"}
        if self._too_many_blocks(params.get("blocks"), MAX_MESSAGE_BLOCKS):
            return {"ok": False, "error": "invalid_blocks"}
        channel = self._resolve_channel(str(channel))
        with self._lock:
            ts = self._next_ts()
            message = self._bot_message(ts, params)
            self._messages[(channel, ts)] = _Message(channel, ts, message)
        return {"ok": True, "channel": channel, "ts": ts, "message": dict(message)}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = params.get("channel"), params.get("ts")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        refusal = self._channel_refusal("chat.update", str(channel))
        if refusal:
            return {"ok": False, "error": refusal}
        if not ts:
            return {"ok": False, "error": "message_not_found"}
        if not self._has_content(params):
            return {"ok": False, "error": "no_text"}
        if self._too_many_blocks(params.get("blocks"), MAX_MESSAGE_BLOCKS):
            return {"ok": False, "error": "invalid_blocks"}
        channel, ts = self._resolve_channel(str(channel)), str(ts)
        with self._lock:
            stored = self._messages.get((channel, ts))
            message = dict(stored.data) if stored else self._bot_message(ts, {})
            for key in ("text", "blocks", "attachments", "metadata"):
                if key in params:
                    message[key] = params[key]
            message["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
            self._messages[(channel, ts)] = _Message(channel, ts, message)
        return {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "text": message.get("text", ""),
            "message": dict(message),
        }

    def _chat_post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        refusal = self._channel_refusal("chat.postEphemeral", str(params["channel"]))
        if refusal:
            return {"ok": False, "error": refusal}
        if not params.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        if not self._has_content(params):
            return {"ok": False, "error": "no_text"}
        with self._lock:
            ts = self._next_ts()
        return {"ok": True, "message_ts": ts}

    def _chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(params.get("channel") or ""), str(params.get("ts") or "")
        channel = self._resolve_channel(channel)
        with self._lock:
            self._messages.pop((channel, ts), None)
        return {"ok": True, "channel": channel, "ts": ts}

    def _store_view(self, view: Any, view_id: str, previous: str | None) -> dict[str, Any]:
        base: dict[str, Any] = dict(view) if isinstance(view, dict) else {}
        stored: dict[str, Any] = {
            **base,
            "id": view_id,
            "team_id": TEAM_ID,
            "type": base.get("type", "modal"),
            "blocks": base.get("blocks", []),
            "private_metadata": base.get("private_metadata", ""),
            "callback_id": base.get("callback_id", ""),
            "external_id": base.get("external_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{view_id[-8:]}",
            "clear_on_close": base.get("clear_on_close", False),
            "notify_on_close": base.get("notify_on_close", False),
            "previous_view_id": previous,
            "root_view_id": view_id,
            "app_id": APP_ID,
            "app_installed_team_id": TEAM_ID,
            "bot_id": BOT_ID,
        }
        with self._lock:
            self._views[view_id] = stored
        return dict(stored)

    def _view_error(self, params: dict[str, Any]) -> dict[str, Any] | None:
        view = params.get("view")
        if not isinstance(view, dict):
            return {"ok": False, "error": "invalid_arguments"}
        if self._too_many_blocks(view.get("blocks"), MAX_VIEW_BLOCKS):
            return {"ok": False, "error": "invalid_arguments"}
        return None

    def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("trigger_id") and not params.get("interactivity_pointer"):
            return {"ok": False, "error": "invalid_arguments"}
        error = self._view_error(params)
        if error:
            return error
        with self._lock:
            view_id = self._next_id("V")
        return {"ok": True, "view": self._store_view(params["view"], view_id, None)}

    def _views_push(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._views_open(params)

    def _views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        error = self._view_error(params)
        if error:
            return error
        view_id = params.get("view_id")
        external_id = params.get("external_id")
        with self._lock:
            if not view_id and external_id:
                view_id = next(
                    (k for k, v in self._views.items() if v.get("external_id") == external_id),
                    None,
                )
                if view_id is None:
                    return {"ok": False, "error": "not_found"}
            if not view_id:
                return {"ok": False, "error": "invalid_arguments"}
            previous = self._views.get(str(view_id), {}).get("previous_view_id")
        return {"ok": True, "view": self._store_view(params["view"], str(view_id), previous)}

    def _views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        error = self._view_error(params)
        if error:
            return error
        user_id = params.get("user_id")
        if not user_id:
            return {"ok": False, "error": "invalid_arguments"}
        with self._lock:
            view_id = self._home_views.get(str(user_id)) or self._next_id("V")
            self._home_views[str(user_id)] = view_id
        return {"ok": True, "view": self._store_view(params["view"], view_id, None)}

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            user = self.users.get(str(params.get("user")))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": json.loads(json.dumps(user))}

    def _usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            users = self.usergroups.get(str(params.get("usergroup")))
        if users is None:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(users)}

    def _usergroups_list(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            groups = [
                {
                    "id": group_id,
                    "team_id": TEAM_ID,
                    "handle": self.usergroup_handles.get(group_id, group_id.lower()),
                    "name": self.usergroup_handles.get(group_id, group_id),
                    "is_usergroup": True,
                    "user_count": len(users),
                    "users": list(users),
                }
                for group_id, users in self.usergroups.items()
            ]
        return {"ok": True, "usergroups": groups}

    def _conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel_id = str(params.get("channel") or "")
        if not channel_id:
            return {"ok": False, "error": "channel_not_found"}
        with self._lock:
            channel = self.channels.get(channel_id)
        if channel is None:
            channel = self._channel_object(channel_id, channel_id.lower())
        if channel.get("deleted"):
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": {k: v for k, v in channel.items() if k != "deleted"}}

    def _conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        """Top-level messages of a channel, newest first (metadata only when asked for)."""
        channel = self._resolve_channel(str(params.get("channel") or ""))
        limit = int(params.get("limit") or 100)
        with self._lock:
            found = [
                m.data
                for (c, ts), m in self._messages.items()
                if c == channel and m.data.get("thread_ts") in (None, ts)
            ]
        found.sort(key=lambda m: float(m["ts"]), reverse=True)
        with_metadata = _flag(params.get("include_all_metadata"))
        return {
            "ok": True,
            "messages": [_listed(m, with_metadata) for m in found[:limit]],
            "has_more": len(found) > limit,
        }

    def _conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        """A thread: its parent, then its replies, oldest first."""
        channel = self._resolve_channel(str(params.get("channel") or ""))
        parent = str(params.get("ts") or "")
        limit = int(params.get("limit") or 100)
        with self._lock:
            if (channel, parent) not in self._messages:
                return {"ok": False, "error": "thread_not_found"}
            found = [
                m.data
                for (c, ts), m in self._messages.items()
                if c == channel and (ts == parent or m.data.get("thread_ts") == parent)
            ]
        found.sort(key=lambda m: float(m["ts"]))
        with_metadata = _flag(params.get("include_all_metadata"))
        return {
            "ok": True,
            "messages": [_listed(m, with_metadata) for m in found[:limit]],
            "has_more": len(found) > limit,
        }

    def _apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        """Socket Mode: the WebSocket URL to connect to (set ``socket_mode_url`` first)."""
        del params
        if self.socket_mode_url is None:
            return {"ok": False, "error": "not_allowed_token_type"}
        return {"ok": True, "url": self.socket_mode_url}

    def _conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        users = str(params.get("users") or "").split(",")
        if len(users) != 1 or not users[0]:
            with self._lock:
                return {"ok": True, "channel": {"id": self._next_id("G")}}
        return {"ok": True, "channel": {"id": self._resolve_channel(users[0])}}

    def _get_upload_url(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("filename") or not params.get("length"):
            return {"ok": False, "error": "invalid_arguments"}
        with self._lock:
            file_id = self._next_id("F")
            self._upload_names[file_id] = str(params["filename"])
        return {"ok": True, "upload_url": f"{self.root_url}/upload/{file_id}", "file_id": file_id}

    def _complete_upload(self, params: dict[str, Any]) -> dict[str, Any]:
        files = params.get("files")
        if not isinstance(files, list) or not files:
            return {"ok": False, "error": "invalid_arguments"}
        out = []
        with self._lock:
            for item in files:
                file_id = str(item.get("id"))
                if file_id not in self._upload_names:
                    return {"ok": False, "error": "file_not_found"}
                name = self._upload_names[file_id]
                out.append(
                    {
                        "id": file_id,
                        "name": name,
                        "title": item.get("title") or name,
                        "size": len(self.uploads.get(file_id, b"")),
                        "user": BOT_USER_ID,
                    }
                )
        return {"ok": True, "files": out}


def _flag(value: Any) -> bool:
    return str(value).lower() in ("true", "1")


def _listed(message: dict[str, Any], with_metadata: bool) -> dict[str, Any]:
    shown = dict(message)
    if not with_metadata:
        shown.pop("metadata", None)
    return shown


_API_HANDLERS: dict[str, Callable[[FakeSlack, dict[str, Any]], dict[str, Any]]] = {
    "auth.test": FakeSlack._auth_test,
    "apps.connections.open": FakeSlack._apps_connections_open,
    "chat.postMessage": FakeSlack._chat_post_message,
    "chat.update": FakeSlack._chat_update,
    "chat.postEphemeral": FakeSlack._chat_post_ephemeral,
    "chat.delete": FakeSlack._chat_delete,
    "views.open": FakeSlack._views_open,
    "views.push": FakeSlack._views_push,
    "views.update": FakeSlack._views_update,
    "views.publish": FakeSlack._views_publish,
    "users.info": FakeSlack._users_info,
    "usergroups.users.list": FakeSlack._usergroups_users_list,
    "usergroups.list": FakeSlack._usergroups_list,
    "conversations.info": FakeSlack._conversations_info,
    "conversations.history": FakeSlack._conversations_history,
    "conversations.replies": FakeSlack._conversations_replies,
    "conversations.open": FakeSlack._conversations_open,
    "files.getUploadURLExternal": FakeSlack._get_upload_url,
    "files.completeUploadExternal": FakeSlack._complete_upload,
}


def block_texts(value: Any) -> list[str]:
    """Every ``text`` string inside Block Kit blocks (or any JSON value), in document order."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                found.append(item)
            else:
                found.extend(block_texts(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(block_texts(item))
    return found
