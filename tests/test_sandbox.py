"""The sandbox: its Slack stand-in (validation, rendering, the Web API, deliveries) and
``pipebot sandbox`` as a process, driven the way the page drives it.

``running_sandbox`` (used by ``tests/test_browser.py`` too) starts exactly what ``make run``
starts without Slack credentials.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SandboxProcess:
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path

    def state(self, user: str, *, thread: str = "") -> dict[str, Any]:
        query = f"?user={user}&since=-1&thread={thread}"
        with urllib.request.urlopen(self.url + "/sandbox/state" + query, timeout=30) as answer:
            data = json.loads(answer.read())
        assert isinstance(data, dict)
        return data

    def act(self, endpoint: str, /, **data: Any) -> tuple[int, dict[str, Any]]:
        """What the page's script does: POST JSON to /sandbox/<action>."""
        request = urllib.request.Request(
            f"{self.url}/sandbox/{endpoint}",
            data=json.dumps(data).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")


def _environment(data_dir: Path, port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "PIPEBOT_", "DATABASE_URL", "AWS_"))
    }
    env.update(
        {
            "PIPEBOT_DATA_DIR": str(data_dir),
            "PIPEBOT_POLL_SECONDS": "1",
            "PORT": str(port),
            "LOG_LEVEL": "WARNING",
        }
    )
    return env


@contextmanager
def running_sandbox(data_dir: Path) -> Iterator[SandboxProcess]:
    """Start ``python -m bot sandbox`` on a free port; wait until it says where it is."""
    port = free_port()
    log = (data_dir.parent / f"sandbox-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "sandbox"],
        env=_environment(data_dir, port),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert process.stdout is not None
        first = process.stdout.readline().decode()
        if f"open {url}" not in first:
            process.kill()
            log.flush()
            errors = (data_dir.parent / f"sandbox-{port}.log").read_text()
            raise AssertionError(f"pipebot sandbox did not start: {first!r}\n{errors}")
        sandbox = SandboxProcess(url=url, process=process, data_dir=data_dir)
        yield sandbox
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        log.close()


def timeline_text(sandbox: SandboxProcess, user: str) -> str:
    return str(sandbox.state(user)["channel"]["html"])


def wait_in_timeline(sandbox: SandboxProcess, user: str, text: str, timeout: float = 60) -> str:
    return wait_for(
        lambda: html if text in (html := timeline_text(sandbox, user)) else None,
        timeout=timeout,
        what=f"{text!r} in #releases as {user}",
    )


# ---------------------------------------------------------------------- unit: validation


def test_valid_bot_blocks_pass_and_broken_ones_are_refused_as_slack_would() -> None:
    from bot.slack.messages import help_blocks
    from sandbox.validate import message_problem, view_problem

    assert message_problem({"text": "help", "blocks": help_blocks(text="hi")}) is None
    assert message_problem({"text": ""}).error == "no_text"  # type: ignore[union-attr]
    unknown = message_problem({"blocks": [{"type": "carousel"}]})
    assert unknown is not None and unknown.error == "invalid_blocks"
    header = {"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}
    too_long = message_problem({"text": "t", "blocks": [header]})
    assert too_long is not None and "150" in too_long.detail
    many = [{"type": "divider"}] * 51
    assert message_problem({"text": "t", "blocks": many}).error == "invalid_blocks"  # type: ignore[union-attr]
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 2900}}
    long_log = message_problem({"text": "t", "blocks": [section] * 5})
    assert long_log is not None and long_log.error == "msg_blocks_too_long"
    assert message_problem({"text": "t", "blocks": [section] * 3}) is None
    title = {"type": "plain_text", "text": "a title longer than 24 chars"}
    refused = view_problem({"type": "modal", "title": title, "blocks": [{"type": "divider"}]})
    assert refused is not None and refused.error == "invalid_arguments"


# ---------------------------------------------------------------------- unit: rendering


def test_mrkdwn_is_escaped_and_formatted() -> None:
    from sandbox.render import Directory, mrkdwn

    names = Directory(users={"U1": "alice"}, groups={"S1": "release-team"})
    rendered = mrkdwn(
        "*bold* _it_ `x<y` <script>alert(1)</script> &lt;b&gt; <@U1> <!subteam^S1> "
        "<https://example.com|site> ```a & b```",
        names,
        now=0,
    )
    assert "<script>" not in rendered and "&lt;script&gt;" in rendered
    assert "<b>bold</b>" in rendered and "<i>it</i>" in rendered
    assert "<code>x&lt;y</code>" in rendered
    assert "&lt;b&gt;" in rendered  # Slack-escaped text shows as typed, never as markup
    assert "@alice" in rendered and "@release-team" in rendered
    assert 'href="https://example.com"' in rendered and ">site</a>" in rendered
    assert "<pre>a &amp; b</pre>" in rendered


def test_dates_render_in_utc_with_relative_days() -> None:
    from sandbox.render import format_date

    now = 1_700_000_000  # 2023-11-14 22:13:20 UTC
    assert format_date(now, "{date_short_pretty} {time}", now=now) == "today 22:13"
    assert format_date(now - 86_400, "{date_short_pretty}", now=now) == "yesterday"
    assert format_date(now, "{date_num}", now=now + 10 * 86_400) == "2023-11-14"


def test_buttons_carry_their_confirm_dialog_and_inputs_their_errors() -> None:
    from sandbox.render import Directory, blocks_html, modal_html

    button = {
        "type": "button",
        "action_id": "go",
        "text": {"type": "plain_text", "text": "Go"},
        "style": "danger",
        "confirm": {
            "title": {"type": "plain_text", "text": "Sure?"},
            "text": {"type": "plain_text", "text": "It <really> goes"},
            "confirm": {"type": "plain_text", "text": "Yes"},
            "deny": {"type": "plain_text", "text": "No"},
        },
    }
    html = blocks_html(
        [{"type": "actions", "block_id": "b", "elements": [button]}], Directory(), now=0
    )
    assert 'data-action="go"' in html and "data-confirm=" in html and "<really>" not in html
    view = {
        "id": "V1",
        "hash": "h",
        "title": {"type": "plain_text", "text": "Form"},
        "submit": {"type": "plain_text", "text": "Save"},
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {"type": "plain_text_input", "action_id": "r", "multiline": True},
            }
        ],
        "_errors": {"reason": "Say why"},
    }
    form = modal_html(view, Directory(), now=0)
    assert "<textarea" in form and "Say why" in form and "Save" in form


# ---------------------------------------------------------------------- unit: the workspace API


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _workspace(clock: Clock) -> Any:
    from sandbox.workspace import User, Workspace

    return Workspace(
        bot_token="xoxb-test",
        users=[User("U0A", "alice", "Alice", "admin"), User("U0B", "bob", "Bob", "dev")],
        clock=clock,
    )


def test_the_web_api_refuses_what_slack_refuses() -> None:
    from sandbox.workspace import RELEASES

    clock = Clock()
    ws = _workspace(clock)
    assert ws.api("chat.postMessage", {"channel": RELEASES, "text": "x"}, None)["error"] == (
        "not_authed"
    )
    assert (
        ws.api("chat.postMessage", {"channel": RELEASES, "text": "x"}, "xoxb-other")["error"]
        == "invalid_auth"
    )
    assert (
        ws.api("chat.postMessage", {"channel": "CNOPE", "text": "x"}, "xoxb-test")["error"]
        == "channel_not_found"
    )
    posted = ws.api("chat.postMessage", {"channel": RELEASES, "text": "hello"}, "xoxb-test")
    assert posted["ok"]
    updated = ws.api(
        "chat.update", {"channel": RELEASES, "ts": posted["ts"], "text": "edited"}, "xoxb-test"
    )
    assert updated["ok"] and ws.message(RELEASES, posted["ts"]).text == "edited"
    missing = ws.api("chat.update", {"channel": RELEASES, "ts": "1.0", "text": "x"}, "xoxb-test")
    assert missing["error"] == "message_not_found"
    mine = ws.post_user_message(user="U0A", channel=RELEASES, text="hi")
    theirs = ws.api("chat.update", {"channel": RELEASES, "ts": mine.ts, "text": "x"}, "xoxb-test")
    assert theirs["error"] == "cant_update_message"
    assert [p.error for p in ws.problems] == [
        "channel_not_found",
        "message_not_found",
        "cant_update_message",
    ]


def test_triggers_are_single_use_and_expire_after_3_seconds() -> None:
    clock = Clock()
    ws = _workspace(clock)
    view = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "T"},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}],
    }
    trigger = ws.issue_trigger("U0A")
    assert ws.api("views.open", {"trigger_id": trigger, "view": view}, "xoxb-test")["ok"]
    again = ws.api("views.open", {"trigger_id": trigger, "view": view}, "xoxb-test")
    assert again["error"] == "exchanged_trigger_id"
    late = ws.issue_trigger("U0A")
    clock.now += 3.5
    assert ws.api("views.open", {"trigger_id": late, "view": view}, "xoxb-test")["error"] == (
        "expired_trigger_id"
    )
    assert ws.modal("U0A") is not None and ws.modal("U0B") is None


def test_response_urls_allow_5_posts_and_ephemeral_messages_stay_private() -> None:
    from sandbox.workspace import RELEASES, ResponseTarget

    clock = Clock()
    ws = _workspace(clock)
    response = ws.issue_response_url(
        ResponseTarget(channel=RELEASES, user="U0B", created=clock.now)
    )
    for _ in range(5):
        assert ws.respond(response, {"text": "only bob"}) == (200, "ok")
    assert ws.respond(response, {"text": "sixth"}) == (404, "used_url")
    assert len(ws.channel_messages(RELEASES, viewer="U0B")) == 5
    assert ws.channel_messages(RELEASES, viewer="U0A") == []
    fresh = ws.issue_response_url(ResponseTarget(channel=RELEASES, user="U0B", created=clock.now))
    clock.now += 31 * 60
    assert ws.respond(fresh, {"text": "late"}) == (404, "expired_url")


def test_slash_command_text_is_escaped_with_mentions_as_slack_does() -> None:
    from sandbox.delivery import escape_command_text
    from sandbox.workspace import User, UserGroup, Workspace

    ws = Workspace(
        bot_token="xoxb-test",
        users=[User("U0A", "alice", "Alice", "admin")],
        usergroups=[UserGroup("S0R", "release-team", ("U0A",))],
    )
    assert escape_command_text("access demo operators add @alice @release-team", ws) == (
        "access demo operators add <@U0A|alice> <!subteam^S0R|@release-team>"
    )
    assert escape_command_text("approve demo a<b & c>d mail@alice", ws) == (
        "approve demo a&lt;b &amp; c&gt;d mail@alice"
    )


def test_what_slack_answers_itself_never_reaches_the_bot() -> None:
    from sandbox.delivery import Gateway
    from sandbox.workspace import RELEASES

    clock = Clock()
    ws = _workspace(clock)
    sent: list[str] = []

    def post(url: str, body: str, headers: dict[str, str], timeout: float) -> tuple[int, str]:
        sent.append(body)
        return 200, ""

    gateway = Gateway(
        workspace=ws,
        bot_url="http://bot",
        signing_secret="s",
        root_url="http://x",
        post=post,
        clock=clock,
    )
    gateway.message_box(user="U0A", channel=RELEASES, text="/deploy now")
    gateway.message_box(user="U0A", channel=RELEASES, text="/pipeline list", thread_ts="1.0")
    assert sent == []
    notices = [m.text for m in ws.channel_messages(RELEASES, viewer="U0A")]
    assert notices == [
        "/deploy is not a valid command. In Slack, all messages that start with "
        'the "/" character are interpreted as commands.'
    ]
    assert "not supported in threads" in ws.thread(RELEASES, "1.0", viewer="U0A")[0].text
    gateway.message_box(user="U0A", channel=RELEASES, text="/pipeline list")
    assert len(sent) == 1 and "command=%2Fpipeline" in sent[0]


# ---------------------------------------------------------------------- the sandbox process


ALICE, BOB = "U0ALICE", "U0BOB"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxProcess]:
    with running_sandbox(tmp_path / "data") as running:
        yield running


def _messages(sandbox: SandboxProcess, user: str) -> str:
    return str(sandbox.state(user)["channel"]["html"])


def test_first_start_creates_the_demo_from_releases_and_follows_it(
    sandbox: SandboxProcess,
) -> None:
    html = wait_in_timeline(sandbox, ALICE, "Approval needed")
    assert "created pipeline <b>demo</b>" in html and "subscribed" in html
    assert "demo · " in html and "Waiting for approval" in html
    home = sandbox.data_dir / "repos" / "MyDemoRepo" / ".git"
    assert home.is_dir()
    assert sandbox.state(ALICE)["problems"] == []


def test_permissions_garbage_and_double_clicks_behave_as_in_slack(sandbox: SandboxProcess) -> None:
    wait_in_timeline(sandbox, ALICE, "Approval needed")
    status, answer = sandbox.act(
        "message", user=BOB, channel="C0RELEASES", text="/pipeline start demo"
    )
    assert status == 200 and answer["ok"]
    refusal = wait_in_timeline(sandbox, BOB, "Only visible to you")
    assert "operator" in refusal
    assert "Only visible to you" not in _messages(sandbox, ALICE)
    sandbox.act("message", user=ALICE, channel="C0RELEASES", text="/pipeline frobnicate ]]] <x>")
    assert "Unknown command" in wait_in_timeline(sandbox, ALICE, "Unknown command")
    # Double click on Approve: two block_actions reach the bot, the approval happens once.
    state = sandbox.state(ALICE)
    match = re.search(
        r'data-ts="([0-9.]+)"[^>]*>(?:(?!data-ts).)*?pipebot\.approve',
        state["channel"]["html"],
        re.S,
    )
    assert match is not None
    ts = match.group(1)
    for _ in range(2):
        status, answer = sandbox.act(
            "click", user=ALICE, channel="C0RELEASES", ts=ts, block="", action="pipebot.approve"
        )
        assert status == 200, answer
    wait_in_timeline(sandbox, ALICE, "Production</b> · Succeeded")
    # The second click is answered privately where it was made: the approval request is also
    # shown in the channel, and the click came from there (issue 12, item 8).
    thread_ts = re.findall(
        r'data-thread="([0-9.]+)">replied to a thread', state["channel"]["html"]
    )[0]

    def thread() -> str:
        return str(sandbox.state(ALICE, thread=thread_ts)["thread"]["html"])

    answered = wait_for(
        lambda: (
            t
            if "Already approved" in (t := timeline_text(sandbox, ALICE))
            or "no longer waiting" in t
            else None
        ),
        what="the answer to the second click",
    )
    assert "Only visible to you" in answered
    assert "Already approved" not in timeline_text(sandbox, BOB)
    assert "Only visible to you" not in str(sandbox.state(BOB, thread=thread_ts)["thread"]["html"])
    # The notifier shows the outcome on the approval reply, naming who decided in Slack.
    outcome = re.compile(
        r"Approved Approval / ReleaseToProduction by\s*"
        r'<span class="mention">@alice</span>'
    )
    recorded = wait_for(
        lambda: t if outcome.search(t := thread()) else None,
        what="the approval recorded in the thread",
    )
    assert len(outcome.findall(recorded)) == 1  # acted once
    # "@bob" typed in the box reaches the bot as a mention, as Slack escapes it.
    sandbox.act(
        "message", user=ALICE, channel="C0RELEASES", text="/pipeline access demo operators add @bob"
    )
    wait_in_timeline(sandbox, ALICE, '<span class="mention">@bob</span>')
    sandbox.act("message", user=BOB, channel="C0RELEASES", text="/pipeline start demo")
    wait_in_timeline(sandbox, BOB, '<span class="mention">@bob</span> started <b>demo</b>')
    assert sandbox.state(ALICE)["problems"] == []


def test_a_modal_closed_midway_and_bad_forms(sandbox: SandboxProcess) -> None:
    wait_in_timeline(sandbox, ALICE, "created pipeline")
    sandbox.act("message", user=ALICE, channel="C0RELEASES", text="/pipeline create")
    modal = wait_for(lambda: sandbox.state(ALICE)["modal"], what="the create form")
    assert sandbox.state(BOB)["modal"] is None
    status, _ = sandbox.act("submit", user=ALICE, view=modal["id"], inputs={})
    assert status == 200
    errors = wait_for(lambda: sandbox.state(ALICE)["modal"]["errors"], what="a required error")
    assert "required" in json.dumps(errors)
    status, _ = sandbox.act("close", user=ALICE, view=modal["id"])
    assert status == 200 and sandbox.state(ALICE)["modal"] is None
    status, answer = sandbox.act("submit", user=ALICE, view=modal["id"], inputs={})
    assert status == 400 and "no longer open" in answer["error"]
    status, answer = sandbox.act(
        "click", user=ALICE, channel="C0RELEASES", ts="1.0", block="", action="x"
    )
    assert status == 400 and answer["error"]


def test_pushing_a_change_starts_an_execution_through_source_polling(
    sandbox: SandboxProcess,
) -> None:
    wait_in_timeline(sandbox, ALICE, "Approval needed")
    status, answer = sandbox.act("push", user=ALICE)
    assert status == 200 and "Pushed" in answer["note"]
    sha = answer["note"].split()[1]
    wait_in_timeline(sandbox, ALICE, "PollForSourceChanges")  # posted as it starts
    html = wait_in_timeline(sandbox, ALICE, "Update the home page")  # once Source read it
    assert sha in html


def test_home_tab_and_the_page_refuses_other_origins(sandbox: SandboxProcess) -> None:
    wait_in_timeline(sandbox, ALICE, "created pipeline")
    status, _ = sandbox.act("home", user=ALICE)
    assert status == 200
    home = wait_for(lambda: "demo" in sandbox.state(ALICE)["home"], what="the Home tab")
    assert home
    request = urllib.request.Request(
        sandbox.url + "/sandbox/message",
        data=b"user=U0ALICE&text=/pipeline+start+demo",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as form_post:
        urllib.request.urlopen(request, timeout=10)
    assert form_post.value.code == 403
    rebound = urllib.request.Request(
        sandbox.url + "/sandbox/state?user=U0ALICE", headers={"Host": "evil.example:80"}
    )
    with pytest.raises(urllib.error.HTTPError) as wrong_host:
        urllib.request.urlopen(rebound, timeout=10)
    assert wrong_host.value.code == 403
    forged = urllib.request.Request(
        sandbox.url + "/api/chat.postMessage",
        data=b"channel=C0RELEASES&text=forged",
        headers={"Authorization": "Bearer xoxb-guess"},
        method="POST",
    )
    with urllib.request.urlopen(forged, timeout=10) as answer:
        assert json.loads(answer.read())["error"] == "invalid_auth"


def test_the_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "bot", "sandbox", "--port", str(port)],
            env=_environment(tmp_path / "data", port),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2
    assert "cannot listen" in result.stdout and "Traceback" not in result.stderr


def test_the_sandbox_refuses_the_aws_backend(tmp_path: Path) -> None:
    env = dict(_environment(tmp_path / "data", free_port()), PIPEBOT_BACKEND="aws")
    result = subprocess.run(
        [sys.executable, "-m", "bot", "sandbox"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "embedded engine" in result.stderr and "Traceback" not in result.stderr
