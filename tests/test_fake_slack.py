"""The fake Slack Web API and the signed-request builders work with the real SDK and Bolt."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from tests.fake_slack import FakeSlack, block_texts
from tests.slack_requests import (
    SIGNING_SECRET,
    app_home_opened,
    block_action,
    bolt_request,
    event_callback,
    home_block_action,
    sign,
    slash_command,
    view_submission,
)

BLOCKS: list[dict[str, Any]] = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "*deploy* is running"}},
    {
        "type": "actions",
        "block_id": "approval",
        "elements": [
            {
                "type": "button",
                "action_id": "approve",
                "text": {"type": "plain_text", "text": "Approve"},
                "style": "primary",
                "value": "exec-1",
            },
            {
                "type": "static_select",
                "action_id": "pick_stage",
                "placeholder": {"type": "plain_text", "text": "Stage"},
                "options": [
                    {"text": {"type": "plain_text", "text": "Build"}, "value": "build"},
                    {"text": {"type": "plain_text", "text": "Deploy"}, "value": "deploy"},
                ],
            },
        ],
    },
]


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> WebClient:
    return WebClient(token="xoxb-test", base_url=fake.base_url)


# --------------------------------------------------------------------------- Web API


def test_post_then_update_recorded_with_decoded_blocks(fake: FakeSlack, client: WebClient) -> None:
    posted = client.chat_postMessage(channel="C1", text="deploy running", blocks=BLOCKS)
    assert posted["ok"] is True
    assert posted["channel"] == "C1"
    assert posted["ts"] == "1700000000.000100"
    assert posted["message"]["blocks"] == BLOCKS

    updated = client.chat_update(channel="C1", ts=posted["ts"], text="done", blocks=BLOCKS[:1])
    assert (updated["channel"], updated["ts"]) == ("C1", posted["ts"])

    post_call, update_call = fake.calls_to("chat.postMessage") + fake.calls_to("chat.update")
    assert post_call.params["blocks"] == BLOCKS
    assert post_call.params["text"] == "deploy running"
    assert post_call.headers["authorization"] == "Bearer xoxb-test"
    assert post_call.token == "xoxb-test"
    assert update_call.params["blocks"] == BLOCKS[:1]
    assert update_call.params["ts"] == posted["ts"]
    assert [c.method for c in fake.calls] == ["chat.postMessage", "chat.update"]

    current = fake.message("C1", posted["ts"])
    assert current is not None
    assert current["text"] == "done"
    assert block_texts(current["blocks"]) == ["*deploy* is running"]


def test_form_encoded_json_fields_are_decoded(fake: FakeSlack, client: WebClient) -> None:
    # The SDK sends some methods form-encoded, with Block Kit fields as JSON strings.
    client.api_call(
        "chat.postMessage",
        params={"channel": "C1", "text": "x", "blocks": json.dumps(BLOCKS)},
    )
    call = fake.calls_to("chat.postMessage")[0]
    assert call.headers["content-type"] == "application/x-www-form-urlencoded"
    assert call.params["blocks"] == BLOCKS


def test_ts_unique_increasing_and_threads(fake: FakeSlack, client: WebClient) -> None:
    parent = client.chat_postMessage(channel="C1", text="parent")["ts"]
    reply = client.chat_postMessage(channel="C1", text="reply", thread_ts=parent)
    other = client.chat_postMessage(channel="C2", text="other")["ts"]
    assert float(parent) < float(reply["ts"]) < float(other)
    assert reply["message"]["thread_ts"] == parent
    assert [m["text"] for m in fake.messages("C1")] == ["parent", "reply"]

    dm = client.chat_postMessage(channel="UADMIN", text="psst")
    assert dm["channel"] == "DADMIN"

    ephemeral = client.chat_postEphemeral(channel="C1", user="UADMIN", text="only you")
    assert float(ephemeral["message_ts"]) > float(other)

    client.chat_delete(channel="C2", ts=other)
    assert fake.message("C2", other) is None


def test_auth_test_and_missing_token(fake: FakeSlack, client: WebClient) -> None:
    auth = client.auth_test()
    assert (auth["user_id"], auth["bot_id"], auth["team_id"]) == ("UBOT", "BBOT", "T1")
    assert auth["url"].startswith("https://")

    for token in (None, "xoxp-user-token"):
        with pytest.raises(SlackApiError) as raised:
            WebClient(token=token, base_url=fake.base_url).chat_postMessage(channel="C1", text="x")
        assert raised.value.response["error"] == "not_authed"
    assert fake.calls_to("chat.postMessage")[0].headers.get("authorization") is None
    assert not fake.calls_to("chat.postMessage")[0].ok


def test_rate_limit_retried_by_sdk_handler(fake: FakeSlack) -> None:
    client = WebClient(
        token="xoxb-test",
        base_url=fake.base_url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)],
    )
    fake.fail_next("chat.postMessage", status=429, retry_after=1)

    response = client.chat_postMessage(channel="C1", text="hello")

    assert response["ok"] is True
    first, second = fake.calls_to("chat.postMessage")
    assert (first.status, first.response) == (429, {"ok": False, "error": "ratelimited"})
    assert second.ok
    assert second.params == first.params


def test_rate_limit_without_handler_surfaces_retry_after(
    fake: FakeSlack, client: WebClient
) -> None:
    fake.fail_next("chat.update", retry_after=7)
    with pytest.raises(SlackApiError) as raised:
        client.chat_update(channel="C1", ts="1.2", text="x")
    assert raised.value.response.status_code == 429
    assert raised.value.response.headers["Retry-After"] in ("7", ["7"])
    assert raised.value.response["error"] == "ratelimited"
    # Only the next call fails.
    assert client.chat_update(channel="C1", ts="1.2", text="x")["ok"] is True


def test_error_and_server_error_injection(fake: FakeSlack, client: WebClient) -> None:
    fake.fail_next("chat.update", error="message_not_found", times=2)
    fake.fail_next("views.open", status=500)
    for _ in range(2):
        with pytest.raises(SlackApiError) as raised:
            client.chat_update(channel="C1", ts="1.2", text="x")
        assert raised.value.response.status_code == 200
        assert raised.value.response["error"] == "message_not_found"
    assert client.chat_update(channel="C1", ts="1.2", text="x")["ok"] is True

    with pytest.raises(SlackApiError) as raised:
        client.views_open(trigger_id="t", view={"type": "modal", "blocks": []})
    assert raised.value.response.status_code == 500

    fake.fail_next("chat.postMessage", error="channel_not_found")
    fake.clear()
    assert fake.calls == []
    with pytest.raises(SlackApiError):  # clear() keeps pending failures
        client.chat_postMessage(channel="C1", text="x")
    fake.fail_next("chat.postMessage", error="channel_not_found")
    fake.reset_failures()
    assert client.chat_postMessage(channel="C1", text="x")["ok"] is True


def test_users_and_usergroups(fake: FakeSlack, client: WebClient) -> None:
    fake.set_usergroup("S0RELEASE", ["U1", "U2"])
    fake.set_user("U1", "alice", tz="Europe/Paris")

    assert client.usergroups_users_list(usergroup="S0RELEASE")["users"] == ["U1", "U2"]
    with pytest.raises(SlackApiError) as raised:
        client.usergroups_users_list(usergroup="S0NOPE")
    assert raised.value.response["error"] == "no_such_subteam"

    user = client.users_info(user="U1")["user"]
    assert (user["id"], user["name"], user["tz"]) == ("U1", "alice", "Europe/Paris")
    assert user["tz_offset"] in (3600, 7200)
    with pytest.raises(SlackApiError) as raised:
        client.users_info(user="U404")
    assert raised.value.response["error"] == "user_not_found"

    assert fake.calls_to("usergroups.users.list")[0].params["usergroup"] == "S0RELEASE"
    assert client.conversations_info(channel="C1")["channel"]["id"] == "C1"


def test_channels_refuse_as_slack_documents(fake: FakeSlack, client: WebClient) -> None:
    """Archived, deleted and not-joined channels answer the errors their method pages list."""
    posted = client.chat_postMessage(channel="C1", text="before")["ts"]

    def error(call: Any) -> str:
        with pytest.raises(SlackApiError) as raised:
            call()
        return str(raised.value.response["error"])

    fake.set_channel("C1", "deploys", is_archived=True)
    assert error(lambda: client.chat_postMessage(channel="C1", text="x")) == "is_archived"
    assert error(lambda: client.chat_update(channel="C1", ts=posted, text="x")) == "is_inactive"
    assert (
        error(lambda: client.chat_postEphemeral(channel="C1", user="U1", text="x")) == "is_archived"
    )
    fake.set_channel("C1", "deploys", is_member=False)
    assert error(lambda: client.chat_postMessage(channel="C1", text="x")) == "not_in_channel"
    assert client.chat_update(channel="C1", ts=posted, text="edited")["ok"]
    fake.set_channel("C1", "deploys", deleted=True)
    assert error(lambda: client.chat_update(channel="C1", ts=posted, text="x")) == (
        "channel_not_found"
    )
    assert error(lambda: client.conversations_info(channel="C1")) == "channel_not_found"
    fake.set_channel("C1", "deploys")  # back to normal
    assert client.chat_postMessage(channel="C1", text="after")["ok"]
    assert client.conversations_info(channel="C1")["channel"]["is_archived"] is False
    assert client.chat_postMessage(channel="C2", text="elsewhere")["ok"]


def test_views(fake: FakeSlack, client: WebClient) -> None:
    modal = {"type": "modal", "callback_id": "reject", "title": {"type": "plain_text", "text": "x"}}
    opened = client.views_open(trigger_id="T-trigger", view=modal)["view"]
    assert opened["id"].startswith("V")
    assert opened["callback_id"] == "reject"
    updated = client.views_update(view_id=opened["id"], view={**modal, "blocks": BLOCKS})["view"]
    assert updated["id"] == opened["id"]
    assert fake.calls_to("views.update")[0].params["view"]["blocks"] == BLOCKS

    home = {"type": "home", "blocks": BLOCKS[:1]}
    first = client.views_publish(user_id="UADMIN", view=home)["view"]
    again = client.views_publish(user_id="UADMIN", view=home)["view"]
    assert first["id"] == again["id"]
    published = fake.home_view("UADMIN")
    assert published is not None
    assert published["blocks"] == BLOCKS[:1]
    assert client.reactions_add(channel="C1", timestamp="1.2", name="rocket")["ok"] is True


def test_files_upload_v2(fake: FakeSlack, client: WebClient) -> None:
    result = client.files_upload_v2(
        channel="C1", content="line 1\nline 2\n", filename="deploy.log", title="Deploy log"
    )
    assert result["file"]["title"] == "Deploy log"
    file_id = result["file"]["id"]
    assert fake.uploads[file_id] == b"line 1\nline 2\n"
    complete = fake.calls_to("files.completeUploadExternal")[0]
    assert complete.params["files"] == [{"id": file_id, "title": "Deploy log"}]
    assert complete.params["channel_id"] == "C1"


def test_wait_for_blocks_until_recorded(fake: FakeSlack, client: WebClient) -> None:
    def later() -> None:
        time.sleep(0.2)
        client.chat_postMessage(channel="C1", text="one")
        client.chat_postMessage(channel="C1", text="two", thread_ts="1700000000.000100")

    worker = threading.Thread(target=later)
    worker.start()
    calls = fake.wait_for("chat.postMessage", count=2, timeout=5)
    worker.join()
    assert [c.params["text"] for c in calls] == ["one", "two"]
    # A filter that raises KeyError on some calls simply does not match them.
    threaded = fake.wait_for("chat.postMessage", where=lambda c: bool(c.params["thread_ts"]))
    assert [c.params["text"] for c in threaded] == ["two"]

    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"chat\.update"):
        fake.wait_for("chat.update", timeout=0.2)
    assert time.monotonic() - started < 2


def test_response_url_posts_recorded(fake: FakeSlack) -> None:
    response = WebhookClient(fake.response_url("cmd-1")).send(
        text="only you", response_type="ephemeral"
    )
    assert response.status_code == 200
    WebhookClient(fake.response_url()).send(text="replace", replace_original=True)

    call = fake.wait_for("response_url", where=lambda c: c.path.endswith("/cmd-1"))[0]
    assert call.params == {"text": "only you", "response_type": "ephemeral"}
    assert [c.params["text"] for c in fake.response_url_posts("default")] == ["replace"]
    assert len(fake.response_url_posts()) == 2


# --------------------------------------------------------------------------- signed requests


@pytest.fixture
def app(fake: FakeSlack) -> App:
    return App(
        token="xoxb-test",
        signing_secret=SIGNING_SECRET,
        client=WebClient(token="xoxb-test", base_url=fake.base_url),
        token_verification_enabled=False,
    )


def test_slash_command_dispatch(fake: FakeSlack, app: App) -> None:
    seen: list[dict[str, Any]] = []

    @app.command("/pipeline")
    def handle(ack: Ack, command: dict[str, Any], respond: Respond, client: WebClient) -> None:
        seen.append(command)
        ack()
        respond(text=f"running {command['text']}", response_type="ephemeral")
        client.chat_postMessage(channel=command["channel_id"], text="started")

    body, headers = slash_command(text="run deploy", response_url=fake.response_url("cmd"))
    assert parse_qs(body)["command"] == ["/pipeline"]
    response = app.dispatch(bolt_request(body, headers))

    assert response.status == 200
    reply = fake.wait_for("response_url")[0]
    assert reply.path == "/response/cmd"
    assert reply.params["text"] == "running run deploy"
    fake.wait_for("chat.postMessage")
    assert seen[0]["user_id"] == "UADMIN"
    assert seen[0]["api_app_id"] and seen[0]["team_id"] == "T1"
    assert fake.calls_to("auth.test"), "Bolt authorizes through auth.test on the fake"


def test_block_action_dispatch(fake: FakeSlack, app: App) -> None:
    seen: list[dict[str, Any]] = []

    @app.action("approve")
    def approve(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        seen.append(body)  # before ack(): dispatch returns once the listener acks
        ack()

    @app.action("pick_stage")
    def pick(ack: Ack, action: dict[str, Any]) -> None:
        seen.append(action)
        ack()

    body, headers = block_action(
        action_id="approve",
        value="exec-1",
        message_blocks=BLOCKS,
        response_url=fake.response_url(),
    )
    assert app.dispatch(bolt_request(body, headers)).status == 200
    payload = seen[0]
    action = payload["actions"][0]
    assert (action["block_id"], action["value"], action["style"]) == (
        "approval",
        "exec-1",
        "primary",
    )
    assert payload["container"]["message_ts"] == "1700000000.000100"
    assert payload["message"]["blocks"] == BLOCKS
    assert payload["enterprise"] is None and payload["is_enterprise_install"] is False

    body, headers = block_action(
        action_id="pick_stage", value="deploy", message_blocks=BLOCKS, response_url="x"
    )
    assert app.dispatch(bolt_request(body, headers)).status == 200
    assert seen[1]["selected_option"]["value"] == "deploy"

    body, headers = home_block_action(action_id="approve", value="exec-2", view_blocks=BLOCKS)
    assert app.dispatch(bolt_request(body, headers)).status == 200
    assert seen[2]["container"] == {"type": "view", "view_id": "VHOME"}


def test_view_submission_dispatch(fake: FakeSlack, app: App) -> None:
    seen: list[dict[str, Any]] = []

    @app.view("reject_reason")
    def submit(ack: Ack, view: dict[str, Any]) -> None:
        seen.append(view)
        ack()

    values = {"reason": {"reason_input": {"type": "plain_text_input", "value": "flaky"}}}
    body, headers = view_submission(
        callback_id="reject_reason", values=values, private_metadata='{"execution": "e-1"}'
    )
    assert app.dispatch(bolt_request(body, headers)).status == 200
    assert seen[0]["state"]["values"] == values
    assert json.loads(seen[0]["private_metadata"]) == {"execution": "e-1"}


def test_event_dispatch(fake: FakeSlack, app: App) -> None:
    @app.event("app_home_opened")
    def home(event: dict[str, Any], client: WebClient) -> None:
        client.views_publish(user_id=event["user"], view={"type": "home", "blocks": BLOCKS[:1]})

    body, headers = app_home_opened(user_id="UADMIN")
    assert app.dispatch(bolt_request(body, headers)).status == 200
    publish = fake.wait_for("views.publish")[0]
    assert publish.params["user_id"] == "UADMIN"
    assert publish.params["view"]["blocks"] == BLOCKS[:1]

    body, headers = event_callback({"type": "app_mention", "user": "U1"}, retry_num=1)
    assert headers["X-Slack-Retry-Num"] == "1"


def test_tampered_or_stale_requests_are_rejected(fake: FakeSlack, app: App) -> None:
    @app.command("/pipeline")
    def handle(ack: Ack) -> None:
        ack()

    body, headers = slash_command(text="run deploy", response_url=fake.response_url())
    tampered = body.replace("run+deploy", "run+prod")
    assert tampered != body
    assert app.dispatch(bolt_request(tampered, headers)).status == 401

    stale = {**headers, **sign(body, timestamp=int(time.time()) - 600)}
    assert app.dispatch(bolt_request(body, stale)).status == 401

    wrong_secret = {**headers, **sign(body, secret="other-secret")}
    assert app.dispatch(bolt_request(body, wrong_secret)).status == 401

    assert app.dispatch(bolt_request(body, headers)).status == 200
