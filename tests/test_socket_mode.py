"""`pipebot serve` in Socket Mode: a real serve process with SLACK_APP_TOKEN opens its
connection through apps.connections.open (the fake Slack), receives a slash command
envelope over a WebSocket served here, acks it with its envelope ID, and answers through
the command's response_url, as Slack's Socket Mode works."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.server import Server, ServerConnection, serve

from tests.fake_slack import FakeSlack
from tests.helpers import wait_for
from tests.slack_requests import API_APP_ID, TEAM_ID

REPO = Path(__file__).resolve().parents[1]
APP_TOKEN = "xapp-1-socket-mode-test"
BOT_TOKEN = "xoxb-socket-mode-test"


class SocketModeSlack:
    """The WebSocket half of Slack's Socket Mode: greets each client with ``hello``, then
    sends the envelopes a test queues and collects the client's acks."""

    def __init__(self) -> None:
        self.outgoing: queue.Queue[dict[str, Any]] = queue.Queue()
        self.acks: queue.Queue[dict[str, Any]] = queue.Queue()
        self.connections = 0
        self._server: Server = serve(self._handle, "127.0.0.1", 0)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        return f"ws://{host}:{port}/link/?ticket=test"

    def __enter__(self) -> SocketModeSlack:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)

    def _handle(self, connection: ServerConnection) -> None:
        self.connections += 1
        connection.send(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "connection_info": {"app_id": API_APP_ID},
                    "debug_info": {"host": "fake", "approximate_connection_time": 3600},
                }
            )
        )
        while True:
            try:
                envelope = self.outgoing.get(timeout=0.1)
            except queue.Empty:
                envelope = None
            if envelope is not None:
                connection.send(json.dumps(envelope))
            try:
                message = connection.recv(timeout=0.05)
            except TimeoutError:
                continue
            except Exception:  # the client went away
                return
            self.acks.put(json.loads(message))


@pytest.fixture
def serve_socket_mode(tmp_path: Path) -> Iterator[tuple[FakeSlack, SocketModeSlack]]:
    with FakeSlack() as fake, SocketModeSlack() as socket_mode:
        fake.socket_mode_url = socket_mode.url
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SLACK_", "PIPEBOT_", "AWS_")) and key != "DATABASE_URL"
        }
        env.update(
            PIPEBOT_DATA_DIR=str(tmp_path / "data"),
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_APP_TOKEN=APP_TOKEN,
            SLACK_API_URL=fake.base_url,
            PIPEBOT_RUN_WORKER="false",
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            yield fake, socket_mode
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            errors = process.stderr.read().decode(errors="replace") if process.stderr else ""
            if process.stderr is not None:
                process.stderr.close()
            assert APP_TOKEN not in errors and BOT_TOKEN not in errors
            assert "Traceback" not in errors, errors


def test_socket_mode_acks_a_command_and_answers_it(
    serve_socket_mode: tuple[FakeSlack, SocketModeSlack],
) -> None:
    fake, socket_mode = serve_socket_mode
    wait_for(lambda: socket_mode.connections > 0, timeout=60, what="the Socket Mode connection")
    opened = fake.calls_to("apps.connections.open")
    assert opened and opened[0].ok
    socket_mode.outgoing.put(
        {
            "envelope_id": "env-1",
            "type": "slash_commands",
            "accepts_response_payload": True,
            "payload": {
                "token": "legacy",
                "team_id": TEAM_ID,
                "team_domain": "pipebot-test",
                "channel_id": "C1",
                "channel_name": "releases",
                "user_id": "UADMIN",
                "user_name": "admin",
                "command": "/pipeline",
                "text": "help",
                "api_app_id": API_APP_ID,
                "is_enterprise_install": "false",
                "response_url": fake.response_url("socket"),
                "trigger_id": "T-socket",
            },
        }
    )
    ack = socket_mode.acks.get(timeout=30)
    assert ack["envelope_id"] == "env-1"
    reply = fake.wait_for("response_url", where=lambda c: c.path.endswith("/socket"), timeout=30)
    assert reply[0].params.get("response_type") == "ephemeral"
    assert "/pipeline start" in json.dumps(reply[0].params)
