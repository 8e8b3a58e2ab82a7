"""The real Bolt app wired to a recording fake Slack and a pipeline client, for scenario tests:
``make_bot`` builds it, ``Bot`` sends what Slack would send, ``assert_valid_surfaces`` checks
what the bot sent. The ``fake`` and ``bot`` fixtures (conftest) use these."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from slack_bolt import App, BoltResponse
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot.app import build_app, build_services, make_web_client
from bot.settings import Settings
from bot.slack.ids import ButtonRef
from storage.db import make_engine, make_session_factory
from tests.fake_slack import Call, FakeSlack
from tests.helpers import approval_action, commands_action, pipeline, source_action, wait_for
from tests.slack_requests import SIGNING_SECRET, block_action, bolt_request, slash_command

ADMIN = "UADMIN"
OTHER = "UOTHER"


@dataclass
class Bot:
    app: App
    fake: FakeSlack
    engine: Any
    services: Any

    def command(self, text: str, *, user: str = ADMIN, name: str = "default") -> BoltResponse:
        body, headers = slash_command(
            text=text, user_id=user, response_url=self.fake.response_url(name)
        )
        return self.app.dispatch(bolt_request(body, headers))

    def reply(self, name: str = "default", *, count: int = 1) -> Call:
        """The ``count``-th post to a response_url (after the ack, work continues)."""
        posts = self.fake.wait_for(
            "response_url", count=count, where=lambda c: c.path.endswith("/" + name)
        )
        return posts[count - 1]

    def click(
        self, action_id: str, ref: ButtonRef, *, user: str = ADMIN, name: str = "click"
    ) -> BoltResponse:
        body, headers = block_action(
            action_id=action_id,
            value=ref.encode(),
            user_id=user,
            response_url=self.fake.response_url(name),
        )
        return self.app.dispatch(bolt_request(body, headers))


def text_of(call: Call) -> str:
    return json.dumps(call.params)


def assert_valid_surfaces(calls: list[Call]) -> None:
    """Every message and view the bot sent parses with slack_sdk's models, within limits."""
    for call in calls:
        message_blocks = call.params.get("blocks")
        if isinstance(message_blocks, list):
            assert len(message_blocks) <= 50, call.method
            parsed = Block.parse_all(message_blocks)
            assert None not in parsed and [b.to_dict() for b in parsed if b], call.method
        view = call.params.get("view")
        if isinstance(view, dict):
            View(**view).validate_json()
            assert len(view.get("blocks") or []) <= 100


def make_bot(engine: Any, database_url: str, fake: FakeSlack, *, admins: str) -> Bot:
    config = Settings(
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=fake.base_url,
        PIPEBOT_ADMINS=admins,
        DATABASE_URL=database_url,
    )
    sessions = make_session_factory(make_engine(database_url))
    web_client = make_web_client(config)
    services = build_services(
        settings=config, pipeline_client=engine, sessions=sessions, web_client=web_client
    )
    app = build_app(settings=config, services=services, web_client=web_client)
    return Bot(app=app, fake=fake, engine=engine, services=services)


def release(name: str = "web") -> dict[str, Any]:
    return pipeline(
        name,
        [
            ("Source", [source_action()]),
            ("Build", [commands_action("Build", ["cat app.txt"])]),
            ("Gate", [approval_action("Approve")]),
        ],
    )


def waiting_approval(bot: Bot, name: str = "web") -> str:
    def token() -> str | None:
        state = bot.engine.get_pipeline_state(name=name)
        latest = state["stageStates"][2]["actionStates"][0].get("latestExecution", {})
        return latest.get("token") if latest.get("status") == "InProgress" else None

    return wait_for(token, what="the approval to wait")
