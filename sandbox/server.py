"""The sandbox's HTTP server: the page, the page's actions, and Slack's side of the wire.

One threaded server on 127.0.0.1 (by default) answers:

- ``GET /`` and ``/static/...``: the page (plain HTML, CSS and a little JavaScript);
- ``GET /sandbox/state``: what one user sees, as HTML fragments; waits (long poll) until
  something changes, so the page updates live;
- ``POST /sandbox/...``: what the user does (type, click, submit, close, open Home, push a
  change), handed to ``sandbox.delivery.Gateway``, which signs it and sends it to the bot;
  and what only a workspace can do (archive or unarchive #releases);
- ``POST /api/<method>``: the Slack Web API the bot calls (``SLACK_API_URL``);
- ``POST /response/<id>``: the ``response_url``s handed to the bot.

The page's endpoints take JSON only and check ``Host`` and ``Origin``, so another web page
open in the same browser cannot drive the sandbox (a form post cannot send JSON, and a
rebound DNS name does not match ``Host``).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from sandbox import render
from sandbox.delivery import Gateway, Outcome
from sandbox.validate import MAX_MESSAGE_TEXT
from sandbox.workspace import RELEASES, Workspace

log = logging.getLogger(__name__)

LONG_POLL_SECONDS = 20.0
MAX_SHOWN = 300  # the latest messages of the channel the page shows
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
JSON_FIELDS = ("blocks", "attachments", "view", "metadata")

PushChange = Callable[[], str]


def _static(name: str) -> bytes | None:
    if "/" in name or name.startswith(".") or not any(name.endswith(s) for s in STATIC_TYPES):
        return None
    try:
        return (resources.files("sandbox") / "static" / name).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


def parse_api_body(content_type: str, body: bytes, query: str) -> dict[str, Any]:
    """A Web API call's arguments: query string plus form, JSON or multipart body, with
    JSON-encoded fields (``blocks``, ``view``...) decoded."""
    params: dict[str, Any] = {k: v[0] for k, v in parse_qs(query).items()}
    kind = content_type.split(";", 1)[0].strip().lower()
    if body:
        if kind == "application/json":
            decoded = json.loads(body.decode("utf-8"))
            if isinstance(decoded, dict):
                params.update(decoded)
        elif kind == "multipart/form-data":
            raw = f"Content-Type: {content_type}\r\n\r\n".encode() + body
            for part in BytesParser(policy=HTTP).parsebytes(raw).walk():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                if isinstance(name, str) and isinstance(payload, bytes):
                    params[name] = payload.decode("utf-8", errors="replace")
        else:
            params.update(
                {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
            )
    for key in JSON_FIELDS:
        value = params.get(key)
        if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            try:
                params[key] = json.loads(value)
            except ValueError:
                params[key] = value
    return params


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    sandbox: SandboxServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A page that went away before its answer was written is expected, not an error:
        the page drops its long poll on every reload, closed tab, user switch or thread
        opened (``refresh`` in sandbox.js aborts it), and the answer then meets a closed
        connection (``BrokenPipeError``, ``ConnectionResetError``). That is logged at DEBUG;
        anything else with its traceback, through logging (socketserver would print it)."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            log.debug("sandbox http: %s went away before its answer (%s)", client_address, error)
            return
        log.exception("sandbox http: a request from %s failed", client_address)


class _Handler(BaseHTTPRequestHandler):
    server_version = "pipebot-sandbox"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("sandbox http: " + format, *args)

    @property
    def _sandbox(self) -> SandboxServer:
        return cast(_Server, self.server).sandbox

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        if content_type.startswith("text/html"):
            self.send_header(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
            )
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: dict[str, Any]) -> None:
        self._reply(status, "application/json; charset=utf-8", json.dumps(data).encode())

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path in ("/", "/index.html"):
            page = _static("index.html")
            assert page is not None
            self._reply(200, STATIC_TYPES[".html"], page)
        elif parts.path.startswith("/static/"):
            name = parts.path.removeprefix("/static/")
            content = _static(name)
            if content is None:
                self._reply(404, "text/plain", b"not found")
            else:
                self._reply(200, STATIC_TYPES["." + name.rsplit(".", 1)[-1]], content)
        elif parts.path == "/healthz":
            self._json(200, {"ok": True, "ready": self._sandbox.gateway is not None})
        elif parts.path == "/sandbox/state":
            if not self._same_origin():
                self._json(403, {"ok": False, "error": "forbidden"})
                return
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            self._json(200, self._sandbox.state(query))
        else:
            self._reply(404, "text/plain", b"not found")

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type", "")
        if parts.path.startswith("/api/"):
            auth = self.headers.get("Authorization", "")
            try:
                params = parse_api_body(content_type, body, parts.query)
            except ValueError:
                self._json(200, {"ok": False, "error": "invalid_json"})
                return
            token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
            token = token or (params.pop("token", None) if "token" in params else None)
            method = parts.path.removeprefix("/api/")
            self._json(200, self._sandbox.workspace.api(method, params, token))
        elif parts.path.startswith("/response/"):
            try:
                data = json.loads(body.decode("utf-8")) if body else {}
            except ValueError:
                self._reply(400, "text/plain", b"invalid_payload")
                return
            if not isinstance(data, dict):
                self._reply(400, "text/plain", b"invalid_payload")
                return
            status, text = self._sandbox.workspace.respond(
                parts.path.removeprefix("/response/"), data
            )
            self._reply(status, "text/html", text.encode())
        elif parts.path.startswith("/sandbox/"):
            if not self._same_origin() or not content_type.startswith("application/json"):
                self._json(403, {"ok": False, "error": "forbidden"})
                return
            try:
                data = json.loads(body.decode("utf-8") or "{}")
            except ValueError:
                data = None
            if not isinstance(data, dict):
                self._json(400, {"ok": False, "error": "send a JSON object"})
                return
            outcome = self._sandbox.act(parts.path.removeprefix("/sandbox/"), data)
            self._json(200 if outcome.ok else 400, outcome.as_json())
        else:
            self._reply(404, "text/plain", b"not found")

    def _same_origin(self) -> bool:
        host = self.headers.get("Host", "")
        if host not in self._sandbox.allowed_hosts:
            return False
        origin = self.headers.get("Origin")
        return origin is None or origin == f"http://{host}"


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


class SandboxServer:
    """The sandbox's HTTP server. Binds on construction; ``attach`` the gateway to the bot,
    then ``start``."""

    def __init__(
        self,
        *,
        workspace: Workspace,
        host: str = "127.0.0.1",
        port: int = 3000,
        push_change: PushChange | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.workspace = workspace
        self.gateway: Gateway | None = None
        self._push_change = push_change
        self._clock = clock
        self._http = _Server((host, port), _Handler)
        self._http.sandbox = self
        self.port = int(self._http.server_address[1])
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.url = f"http://{shown}:{self.port}"
        self.allowed_hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        if host not in ("0.0.0.0", "", "127.0.0.1", "localhost"):
            self.allowed_hosts.add(f"{host}:{self.port}")
        self._thread: threading.Thread | None = None

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def attach(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def start(self) -> SandboxServer:
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="pipebot-sandbox-http",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._http.shutdown()
            self._thread.join(timeout=5)
        self._http.server_close()

    # ------------------------------------------------------------------ the page's reads

    def directory(self) -> render.Directory:
        ws = self.workspace
        return render.Directory(
            users={u.id: u.name for u in ws.users.values()},
            groups={g.id: g.handle for g in ws.usergroups.values()},
            channels=dict(ws.channels),
        )

    def state(self, query: dict[str, str]) -> dict[str, Any]:
        """What ``user`` sees; waits up to 20 s for a change past version ``since``."""
        ws = self.workspace
        try:
            since = int(query.get("since", "-1"))
        except ValueError:
            since = -1
        if since == ws.version:
            ws.wait_for_change(since, LONG_POLL_SECONDS)
        user = query.get("user", "")
        if user not in ws.users:
            user = next(iter(ws.users))
        version = ws.version
        now = self._clock()
        directory = self.directory()
        channel = RELEASES
        timeline = "".join(
            render.message_html(m, directory, now=now, replies=ws.reply_count(m.channel, m.ts))
            for m in ws.channel_messages(channel, viewer=user)[-MAX_SHOWN:]
        )
        thread_ts = query.get("thread") or ""
        thread_html = ""
        if thread_ts:
            thread_html = "".join(
                render.message_html(m, directory, now=now, in_thread=True)
                for m in ws.thread(channel, thread_ts, viewer=user)
            )
        modal = ws.modal(user)
        dms = "".join(
            render.message_html(m, directory, now=now, in_thread=True)
            for m in ws.channel_messages(ws.dm_channel(user), viewer=user)
        )
        problems = [
            {"method": p.method, "error": p.error, "detail": p.detail, "at": p.at}
            for p in ws.problems
        ]
        return {
            "version": version,
            "user": user,
            "users": [
                {"id": u.id, "name": u.name, "title": u.title} for u in ws.users.values() if u.title
            ],
            "channel": {
                "id": channel,
                "name": ws.channels[channel],
                "html": timeline,
                "archived": channel in ws.archived,
            },
            "thread": {"ts": thread_ts, "html": thread_html} if thread_ts else None,
            "modal": (
                {
                    "id": modal["id"],
                    "hash": modal["hash"],
                    "errors": modal["_errors"],
                    "html": render.modal_html(modal, directory, now=now),
                }
                if modal
                else None
            ),
            "home": render.home_html(ws.home(user), directory, now=now),
            "dms": dms,
            "problems": problems,
            "ready": self.gateway is not None,
            "can_push": self._push_change is not None,
        }

    # ------------------------------------------------------------------ the page's actions

    def act(self, action: str, data: dict[str, Any]) -> Outcome:
        gateway = self.gateway
        if gateway is None:
            return Outcome(False, "the sandbox is still starting")
        user = _text(data, "user")
        if user not in self.workspace.users:
            return Outcome(False, "choose a user")
        try:
            return self._act(gateway, action, user, data)
        except Exception:
            log.exception("sandbox: %s failed", action)
            return Outcome(False, "the sandbox failed to do that; see its log")

    def _act(self, gateway: Gateway, action: str, user: str, data: dict[str, Any]) -> Outcome:
        if action == "message":
            text = _text(data, "text")
            if len(text) > MAX_MESSAGE_TEXT:  # said, never cut: Slack's composer refuses too
                return Outcome(
                    False,
                    f"That message is {len(text):,} characters; Slack takes at most "
                    f"{MAX_MESSAGE_TEXT:,}. Nothing was sent.",
                )
            return gateway.message_box(
                user=user,
                channel=_text(data, "channel") or RELEASES,
                text=text,
                thread_ts=_text(data, "thread_ts") or None,
            )
        if action == "click":
            selected = _text(data, "selected") or None
            if _text(data, "view"):
                return gateway.click_view(
                    user=user,
                    view_id=_text(data, "view"),
                    block_id=_text(data, "block"),
                    action_id=_text(data, "action"),
                    selected=selected,
                )
            return gateway.click_message(
                user=user,
                channel=_text(data, "channel"),
                ts=_text(data, "ts"),
                block_id=_text(data, "block"),
                action_id=_text(data, "action"),
                selected=selected,
            )
        if action == "submit":
            raw = data.get("inputs")
            inputs: dict[str, dict[str, str | None]] = {}
            if isinstance(raw, dict):
                for block, elements in raw.items():
                    if isinstance(elements, dict):
                        inputs[str(block)] = {
                            str(k): v if isinstance(v, str) else None for k, v in elements.items()
                        }
            return gateway.submit_view(user=user, view_id=_text(data, "view"), inputs=inputs)
        if action == "close":
            return gateway.close_view(user=user, view_id=_text(data, "view"))
        if action == "home":
            return gateway.open_home(user=user)
        if action == "dismiss":
            self.workspace.dismiss_ephemeral(user=user, ts=_text(data, "ts"))
            return Outcome(True)
        if action in ("archive", "unarchive"):
            channel = _text(data, "channel") or RELEASES
            error = self.workspace.set_archived(
                user=user, channel=channel, archived=action == "archive"
            )
            if error is not None:
                return Outcome(False, error)
            name = self.workspace.channels.get(channel, channel)
            if action == "archive":
                return Outcome(
                    True,
                    note=f"#{name} is archived: Slack now refuses pipebot's messages there "
                    "(is_archived), and pipebot suspends the channel's subscriptions at its "
                    "next message.",
                )
            return Outcome(
                True,
                note=f"#{name} is unarchived: run {gateway.command_name} subscribe NAME "
                "there to resume its suspended subscriptions.",
            )
        if action == "push":
            if self._push_change is None:
                return Outcome(False, "this sandbox has no demo repository")
            return Outcome(True, note=self._push_change())
        return Outcome(False, f"unknown action {action!r}")
