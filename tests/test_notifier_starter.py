"""The channel's parent names who created a pipeline in Slack, as `status` does (issue 12,
item 11: the parent said "created by pipebot" where `status` said "created by @alice")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fake_slack import FakeSlack
from tests.slack_bot import ADMIN, Bot, make_bot, release
from tests.test_notifier import Harness


@pytest.fixture
def h(engine: Any, database_url: str, fake: FakeSlack) -> Iterator[Harness]:
    harness = Harness(engine, database_url, fake)
    yield harness
    harness.db.dispose()


@pytest.fixture
def slack(engine: Any, database_url: str, fake: FakeSlack) -> Bot:
    return make_bot(engine, database_url, fake, admins=ADMIN)


def test_the_parent_of_a_creation_names_who_created_the_pipeline(h: Harness, slack: Bot) -> None:
    slack.command("create " + json.dumps({"pipeline": release()}), name="create")
    assert "created pipeline" in json.dumps(slack.reply("create").params)
    notifier = h.notifier()

    def parent_text() -> str:
        parents = [
            c
            for c in h.fake.calls_to("chat.postMessage")
            if not c.params.get("thread_ts") and "Trigger CreatePipeline" in json.dumps(c.params)
        ]
        return json.dumps(parents[0].params) if parents else ""

    h.pump(notifier, lambda: bool(parent_text()), "the creation's parent message")
    text = parent_text()
    assert f"created by <@{ADMIN}>" in text
    assert "created by pipebot" not in text
