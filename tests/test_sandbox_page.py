"""The sandbox's server and workspace after issue 12: a dropped long poll is not an error
(item 9), an archived channel answers as Slack does, and what the page is given to draw.
What the page shows is checked in Chromium by ``tests/test_browser_page.py``."""

from __future__ import annotations

import json
import logging
import socket
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.server import SandboxServer
from sandbox.workspace import BOT_USER_ID, RELEASES, User, Workspace

TOKEN = "xoxb-sandbox-test"
ALICE = User("U0ALICE", "alice", "Alice Admin", title="admin")
BOB = User("U0BOB", "bob", "Bob Builder", title="developer")


@pytest.fixture
def workspace() -> Workspace:
    return Workspace(bot_token=TOKEN, users=[ALICE, BOB])


@pytest.fixture
def server(workspace: Workspace) -> Iterator[SandboxServer]:
    running = SandboxServer(workspace=workspace, port=0).start()
    yield running
    running.stop()


def _get(server: SandboxServer, path: str) -> dict[str, Any]:
    request = urllib.request.Request(server.url + path)
    with urllib.request.urlopen(request, timeout=30) as answer:
        data = json.loads(answer.read())
    assert isinstance(data, dict)
    return data


def test_a_long_poll_the_page_dropped_is_no_error(
    server: SandboxServer,
    workspace: Workspace,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The page aborts its long poll on every reload or user switch; the answer then meets a
    closed connection. It used to print a BrokenPipeError traceback each time."""
    caplog.set_level(logging.DEBUG, logger="sandbox.server")
    for _ in range(3):
        client = socket.create_connection(("127.0.0.1", server.port))
        since = workspace.version
        client.sendall(
            f"GET /sandbox/state?user=U0ALICE&since={since} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n\r\n".encode()
        )
        time.sleep(0.3)  # the server now waits for a change
        # Closed with a reset, as a browser drops an aborted fetch's connection.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        workspace.post_user_message(user="U0ALICE", channel=RELEASES, text="a change")
        deadline = time.monotonic() + 10
        while not [r for r in caplog.records if "went away" in r.getMessage()]:
            assert time.monotonic() < deadline, "the dropped poll was never answered"
            time.sleep(0.05)
        caplog.clear()
    assert _get(server, "/healthz")["ok"] is True  # it keeps serving
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_unexpected_failure_is_logged_with_its_traceback(
    server: SandboxServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(query: dict[str, str]) -> dict[str, Any]:
        raise RuntimeError("a bug in the page's state")

    monkeypatch.setattr(server, "state", broken)
    request = urllib.request.Request(f"{server.url}/sandbox/state?user=U0ALICE&since=-1")
    with pytest.raises(OSError):
        urllib.request.urlopen(request, timeout=10).read()
    deadline = time.monotonic() + 10
    while not [r for r in caplog.records if r.levelno == logging.ERROR]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    record = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert record.exc_info is not None and "a bug in the page's state" in str(record.exc_info[1])


def test_bot_posts_keep_their_author(workspace: Workspace) -> None:
    answer = workspace.api("chat.postMessage", {"channel": RELEASES, "text": "hi"}, TOKEN)
    assert answer["ok"] is True
    assert workspace.message(RELEASES, answer["ts"]).user == BOT_USER_ID  # type: ignore[union-attr]


# ---------------------------------------------------------------------- an archived channel


def test_an_archived_channel_refuses_the_bot_as_slack_does(workspace: Workspace) -> None:
    posted = workspace.api("chat.postMessage", {"channel": RELEASES, "text": "before"}, TOKEN)
    info = workspace.api("conversations.info", {"channel": RELEASES}, TOKEN)
    assert info["channel"]["is_archived"] is False

    assert workspace.set_archived(user="U0ALICE", channel=RELEASES, archived=True) is None
    assert workspace.set_archived(user="U0ALICE", channel=RELEASES, archived=True) == (
        "already_archived"
    )
    shown = [m.text for m in workspace.channel_messages(RELEASES, viewer="U0BOB")]
    assert shown[-1] == "_archived the channel_"
    info = workspace.api("conversations.info", {"channel": RELEASES}, TOKEN)
    assert info["channel"]["is_archived"] is True
    # chat.postMessage and chat.postEphemeral: "Channel has been archived"; chat.update:
    # "The message cannot be edited within a frozen, archived or deleted channel".
    post = workspace.api("chat.postMessage", {"channel": RELEASES, "text": "x"}, TOKEN)
    assert post["ok"] is False and post["error"] == "is_archived"
    ephemeral = workspace.api(
        "chat.postEphemeral", {"channel": RELEASES, "user": "U0BOB", "text": "x"}, TOKEN
    )
    assert ephemeral["ok"] is False and ephemeral["error"] == "is_archived"
    update = workspace.api(
        "chat.update", {"channel": RELEASES, "ts": posted["ts"], "text": "after"}, TOKEN
    )
    assert update["ok"] is False and update["error"] == "is_inactive"
    assert workspace.message(RELEASES, posted["ts"]).text == "before"  # type: ignore[union-attr]
    history = workspace.api("conversations.history", {"channel": RELEASES}, TOKEN)
    assert history["ok"] is True  # its history stays readable
    assert [p.error for p in workspace.problems] == ["is_archived", "is_archived", "is_inactive"]
    assert all(p.detail == "#releases is archived" for p in workspace.problems)

    assert workspace.set_archived(user="U0ALICE", channel=RELEASES, archived=False) is None
    assert workspace.set_archived(user="U0ALICE", channel=RELEASES, archived=False) == (
        "not_archived"
    )
    assert workspace.api("chat.postMessage", {"channel": RELEASES, "text": "y"}, TOKEN)["ok"]
    assert workspace.set_archived(user="U0ALICE", channel="C0NOPE", archived=True) == (
        "channel_not_found"
    )


def test_archiving_survives_a_restart(tmp_path: Any) -> None:
    state = tmp_path / "workspace.json"
    first = Workspace(bot_token=TOKEN, users=[ALICE], state_file=state)
    first.set_archived(user="U0ALICE", channel=RELEASES, archived=True)
    again = Workspace(bot_token=TOKEN, users=[ALICE], state_file=state)
    assert RELEASES in again.archived


def _post(server: SandboxServer, action: str, **data: Any) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{server.url}/sandbox/{action}",
        data=json.dumps(data).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_the_page_archives_and_unarchives_and_is_told_so(
    server: SandboxServer, workspace: Workspace
) -> None:
    class NoBot:
        command_name = "/pipeline"

    server.attach(NoBot())  # type: ignore[arg-type]
    state = _get(server, "/sandbox/state?user=U0BOB&since=-1")
    assert state["channel"]["archived"] is False
    assert {u["name"]: u["title"] for u in state["users"]} == {
        "alice": "admin",
        "bob": "developer",
    }
    status, answer = _post(server, "archive", user="U0BOB", channel=RELEASES)
    assert status == 200 and "is_archived" in answer["note"]
    assert _get(server, "/sandbox/state?user=U0BOB&since=-1")["channel"]["archived"] is True
    status, answer = _post(server, "archive", user="U0BOB", channel=RELEASES)
    assert status == 400 and answer["error"] == "already_archived"
    workspace.api("chat.postMessage", {"channel": RELEASES, "text": "x"}, TOKEN)
    problems = _get(server, "/sandbox/state?user=U0BOB&since=-1")["problems"]
    assert [(p["error"], p["detail"]) for p in problems] == [
        ("is_archived", "#releases is archived")
    ]
    assert isinstance(problems[0]["at"], float)
    status, answer = _post(server, "unarchive", user="U0BOB", channel=RELEASES)
    assert status == 200 and "/pipeline subscribe NAME" in answer["note"]
    assert _get(server, "/sandbox/state?user=U0BOB&since=-1")["channel"]["archived"] is False


def test_nothing_is_typed_into_an_archived_channel(workspace: Workspace) -> None:
    from sandbox.delivery import Gateway

    sent: list[str] = []

    def post(url: str, body: str, headers: dict[str, str], timeout: float) -> tuple[int, str]:
        sent.append(url)
        return 200, ""

    gateway = Gateway(
        workspace=workspace,
        bot_url="http://bot.invalid/slack/events",
        signing_secret="secret",
        root_url="http://127.0.0.1:1",
        post=post,
    )
    workspace.set_archived(user="U0ALICE", channel=RELEASES, archived=True)
    before = len(workspace.channel_messages(RELEASES, viewer="U0BOB"))
    for text in ("hello", "/pipeline status demo"):
        outcome = gateway.message_box(user="U0BOB", channel=RELEASES, text=text)
        assert not outcome.ok and outcome.error == (
            "#releases is archived: unarchive it to post or run commands"
        )
    assert sent == [] and len(workspace.channel_messages(RELEASES, viewer="U0BOB")) == before


def test_a_message_longer_than_slack_takes_is_refused_not_cut(server: SandboxServer) -> None:
    """The page cut a message at 40,000 characters without a word; the bot then answered
    about broken JSON at column 39,958 (found by a new user)."""

    class NoBot:
        command_name = "/pipeline"

    server.attach(NoBot())  # type: ignore[arg-type]
    status, answer = _post(
        server, "message", user="U0ALICE", channel=RELEASES, text="/pipeline create " + "x" * 40_000
    )
    assert status == 400, answer
    said = answer.get("error") or answer.get("note") or ""
    assert "40,017 characters" in said and "at most 40,000" in said and "Nothing was sent" in said
