"""A deleted pipeline's channels (issue 12, item 6): its open parent messages say it ended,
the buttons of their threads give way, its subscriptions end, its channels are told, and the
watcher stops reading it, whether it was deleted from Slack (the Delete button, through the
real Bolt app) or outside it (the watcher finds it gone twice in a row). SQLite and
PostgreSQL; the engine runs for real, Slack is the recording fake."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from sqlmodel import select

from bot.notify.deletion import NOT_FOUND_MARK
from bot.slack import ids
from bot.slack.deletion import deleted_parent, deletion_notice, deletion_outcome, is_open
from bot.slack.ids import ButtonRef
from storage import bot_store, notify_store
from storage.models import AuditEntry
from tests.fake_slack import FakeSlack
from tests.slack_bot import ADMIN, make_bot, release, text_of
from tests.test_notifier import INTERVAL, Harness, buttons_of

EVIL = "<!channel> & <@U0EVIL>"


@pytest.fixture
def h(engine: Any, database_url: str, fake: FakeSlack) -> Iterator[Harness]:
    harness = Harness(engine, database_url, fake)
    yield harness
    harness.db.dispose()


def _wait_for_approval(h: Harness, notifier: Any) -> tuple[str, str]:
    """Run the notifier until C1 shows the approval reply; (parent ts, reply ts)."""
    h.pump(notifier, lambda: bool(h.replies_with("C1", "Approval needed")), "the approval reply")
    parent = h.posts("C1", thread=False)[0]
    reply = h.replies_with("C1", "Approval needed")[0]
    return str(parent.response["ts"]), str(reply.response["ts"])  # type: ignore[index]


def _channel_posts(h: Harness, channel: str, fragment: str) -> list[Any]:
    return [c for c in h.posts(channel, thread=False) if fragment in text_of(c)]


def _poll_row(h: Harness, pipeline: str = "web") -> Any:
    with h.sessions() as session:
        return notify_store.get_poll(session=session, pipeline=pipeline)


def test_deleting_from_slack_closes_messages_ends_subscriptions_and_tells_the_channels(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    bot = make_bot(
        h.engine, str(h.db.url.render_as_string(hide_password=False)), h.fake, admins=ADMIN
    )
    h.engine.create_pipeline(pipeline=release())  # its first execution waits for approval
    h.subscribe("web", "C1")
    h.subscribe("web", "C2", events="failures")  # never shown the execution
    notifier = h.notifier()
    parent_ts, reply_ts = _wait_for_approval(h, notifier)
    assert "Waiting for approval" in json.dumps(h.fake.message("C1", parent_ts))

    bot.command("delete web", name="ask")
    assert "Delete" in text_of(bot.reply("ask"))
    bot.click(ids.DELETE_CONFIRM, ButtonRef(pipeline="web"), name="confirm")
    assert "deleted" in text_of(bot.reply("confirm"))
    assert h.engine.list_pipelines()["pipelines"] == []

    h.pump(notifier, lambda: not h.pending(), "the closing messages")
    parent = json.dumps(h.fake.message("C1", parent_ts), ensure_ascii=False)
    assert "Ended: the pipeline was deleted* by <@UADMIN>" in parent
    assert "In progress" not in parent and "Waiting for approval" not in parent
    assert "Gate* · Abandoned" in parent
    reply = h.updates("C1", reply_ts)[-1]
    assert "Approval needed" in text_of(reply), "the reply still says what it asked"
    assert ids.APPROVE not in buttons_of(reply) and ids.REJECT not in buttons_of(reply)
    assert "No longer possible: the pipeline was deleted by <@UADMIN>" in text_of(reply)
    told = _channel_posts(h, "C1", "Pipeline *web* was deleted by <@UADMIN>")
    assert len(told) == 1 and "(1) are shown as ended" in text_of(told[0])
    assert len(_channel_posts(h, "C2", "Pipeline *web* was deleted by <@UADMIN>")) == 1
    assert len(h.posts("C1", thread=False)) == 2  # the parent, then the notice: no new parent

    with h.sessions() as session:
        assert notify_store.subscriptions_for_pipeline(session=session, pipeline="web") == []
    assert _poll_row(h) is None
    bot.command("subscriptions", name="list")
    assert "follows no pipeline" in text_of(bot.reply("list"))

    # The watcher reads it no more: no "cannot read web" tick after tick, no Slack call.
    calls = len(h.fake.calls)
    with caplog.at_level(logging.INFO, logger="bot.notify"):
        for _ in range(3):
            h.clock.advance(6 * INTERVAL)
            stats = notifier.run_once()
            assert stats is not None and stats.pipelines_read == 0
    assert not [r for r in caplog.records if "web" in r.getMessage()]
    assert len(h.fake.calls) == calls

    # A second confirmation (a double click) changes nothing and posts nothing.
    bot.click(ids.DELETE_CONFIRM, ButtonRef(pipeline="web"), name="again")
    bot.reply("again")
    h.clock.advance(INTERVAL)
    notifier.run_once()
    assert len(h.posts("C1", thread=False)) == 2


def test_a_pipeline_deleted_outside_slack_is_closed_on_the_second_read_that_misses_it(
    h: Harness,
) -> None:
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    notifier = h.notifier()
    parent_ts, reply_ts = _wait_for_approval(h, notifier)

    h.engine.delete_pipeline(name="web")  # the AWS console, another process...
    h.clock.advance(INTERVAL)
    notifier.run_once()  # first miss: read again before closing anything
    poll = _poll_row(h)
    assert poll is not None and poll.last_error == NOT_FOUND_MARK
    assert not [c for c in h.updates("C1", parent_ts) if "Ended" in text_of(c)]
    with h.sessions() as session:
        assert len(notify_store.subscriptions_for_pipeline(session=session, pipeline="web")) == 1

    h.pump(notifier, lambda: bool(_channel_posts(h, "C1", "no longer exists")), "the notice")
    h.pump(notifier, lambda: not h.pending(), "the closing messages")
    parent = json.dumps(h.fake.message("C1", parent_ts), ensure_ascii=False)
    assert "Ended: the pipeline was deleted* outside pipebot" in parent
    reply = h.updates("C1", reply_ts)[-1]
    assert ids.APPROVE not in buttons_of(reply)
    assert "the pipeline was deleted outside pipebot" in text_of(reply)
    notice = text_of(_channel_posts(h, "C1", "no longer exists")[0])
    assert "If it comes back, subscribe this channel to it again" in notice
    with h.sessions() as session:
        assert notify_store.subscriptions_for_pipeline(session=session, pipeline="web") == []
        audit = session.exec(
            select(AuditEntry).where(AuditEntry.pipeline == "web", AuditEntry.what == "deleted")
        ).all()
    assert [(a.user_id, a.kind, a.outcome) for a in audit] == [
        (bot_store.NOTIFIER_ACTOR, "notifier", "ok")
    ]
    assert _poll_row(h) is None


def test_a_pipeline_re_created_between_two_reads_is_not_closed(h: Harness) -> None:
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    notifier = h.notifier()
    _wait_for_approval(h, notifier)
    h.engine.delete_pipeline(name="web")
    h.clock.advance(INTERVAL)
    notifier.run_once()
    assert _poll_row(h).last_error == NOT_FOUND_MARK
    h.engine.create_pipeline(pipeline=release())  # replaced under the same name
    h.clock.advance(INTERVAL)
    notifier.run_once()
    poll = _poll_row(h)
    assert poll is not None and poll.last_error is None
    with h.sessions() as session:
        assert len(notify_store.subscriptions_for_pipeline(session=session, pipeline="web")) == 1
    assert not _channel_posts(h, "C1", "no longer exists")


# --- the drawing (pure) ----------------------------------------------------------------------

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _snapshot(**changes: Any) -> dict[str, Any]:
    snapshot: dict[str, Any] = {
        "pipeline": "web",
        "execution": "11111111-2222-3333-4444-555555555555",
        "status": "InProgress",
        "trigger": "StartPipelineExecution",
        "startedBy": "U0ALICE",
        "started": (NOW - timedelta(minutes=2, seconds=10)).isoformat(),
        "ended": None,
        "revisions": [{"action": "Source", "id": "0123456789abcdef", "message": EVIL}],
        "stages": [
            {"name": "Source", "status": "Succeeded", "actions": []},
            {
                "name": "Build",
                "status": "InProgress",
                "actions": [{"name": "Compile", "status": "InProgress", "since": None}],
            },
            {"name": "Gate", "status": "WaitingToEnter", "actions": []},
            {"name": "Deploy", "status": None, "actions": []},
        ],
    }
    return snapshot | changes


def _valid(message: dict[str, Any]) -> str:
    parsed = Block.parse_all(message["blocks"])
    assert None not in parsed
    assert message["text"]
    return json.dumps(message["blocks"], ensure_ascii=False)


def test_the_ended_parent_says_who_ended_it_and_what_became_of_each_stage() -> None:
    text = _valid(deleted_parent(snapshot=_snapshot(), deleted_by="U0BOB", now=NOW))
    assert "🗑 *Ended: the pipeline was deleted* by <@U0BOB> after 2m 10s" in text
    assert "started by <@U0ALICE>" in text  # the rest of the parent stays
    assert "&lt;!channel&gt; &amp; &lt;@U0EVIL&gt;" in text and "<!channel>" not in text
    assert "✅ *Source* · Succeeded" in text
    assert "*Build* · Abandoned" in text and "running Compile" not in text
    assert "*Gate* · Not reached" in text and "*Deploy* · Not reached" in text
    assert "In progress" not in text
    outside = _valid(deleted_parent(snapshot=_snapshot(), deleted_by=None, now=NOW))
    assert "deleted* outside pipebot" in outside
    assert is_open(_snapshot()) and not is_open(_snapshot(status="Succeeded"))


def test_the_notice_and_the_outcome_escape_what_users_control() -> None:
    notice = deletion_notice(pipeline=EVIL, deleted_by="U0BOB", ended=2)
    text = _valid(notice)
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert "was deleted by <@U0BOB>" in text and "(2) are shown as ended" in text
    none = _valid(deletion_notice(pipeline="web", deleted_by=None, ended=0))
    assert "shown as ended" not in none and "deleted outside pipebot" in none
    assert deletion_outcome(deleted_by="U0BOB").endswith("deleted by <@U0BOB>.")
    assert "<@" not in deletion_outcome(deleted_by="<!here>")
