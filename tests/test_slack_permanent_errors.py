"""Issue 11, case 8: Slack's permanent errors stop retries and suspend a subscription visibly.

A subscribed channel is archived (or deleted, or pipebot is removed from it): the first call
Slack refuses for good suspends the channel's subscriptions instead of retrying every five
minutes for ever. The suspension shows in ``/pipeline subscriptions``, on App Home and in
the audit log; whoever subscribed gets one direct message; subscribing there again resumes
it and each execution's message converges to its current state. Errors about one message
give that message up (or post a deleted parent again) and leave the subscription alone;
errors about pipebot's token stop all sending without a retry storm; transient ones are
still retried. Slack is the recording fake at its HTTP edge; the engine runs for real; the
notifier's clock moves only when told.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse
from sqlmodel import col, select

from bot.slack.api_errors import ERROR_SCOPES, NO_ANSWER_CODE, Scope, classify
from bot.slack.subscriptions import suspended_home_blocks, suspension_reason
from storage import bot_store, notify_store
from storage.db import SessionFactory, make_engine, make_session_factory, transaction
from storage.models import OutboxMessage, PostedEvent, PostedExecution, Subscription
from tests.blockcheck import check_view, texts
from tests.fake_slack import Call, FakeSlack
from tests.helpers import wait_for
from tests.slack_bot import ADMIN, Bot, make_bot, release, text_of, waiting_approval
from tests.slack_requests import app_home_opened, bolt_request
from tests.test_notifier import INTERVAL, Harness

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


# --- the classification ------------------------------------------------------------------------


def _api_error(
    code: str | None,
    *,
    status: int = 200,
    method: str = "chat.postMessage",
    headers: dict[str, str] | None = None,
) -> SlackApiError:
    data: dict[str, Any] = {"ok": False}
    if code is not None:
        data["error"] = code
    response = SlackResponse(
        client=None,
        http_verb="POST",
        api_url=f"https://slack.com/api/{method}",
        req_args={},
        data=data,
        headers=headers or {},
        status_code=status,
    )
    return SlackApiError("failed", response)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("code", "scope"),
    [
        # per channel
        ("is_archived", Scope.CHANNEL),
        ("is_inactive", Scope.CHANNEL),
        ("channel_not_found", Scope.CHANNEL),
        ("not_in_channel", Scope.CHANNEL),
        ("restricted_action", Scope.CHANNEL),
        ("restricted_action_read_only_channel", Scope.CHANNEL),
        ("restricted_action_thread_only_channel", Scope.CHANNEL),
        ("restricted_action_non_threadable_channel", Scope.CHANNEL),
        ("ekm_access_denied", Scope.CHANNEL),
        # per message
        ("message_not_found", Scope.MESSAGE),
        ("cant_update_message", Scope.MESSAGE),
        ("edit_window_closed", Scope.MESSAGE),
        ("msg_too_long", Scope.MESSAGE),
        ("msg_blocks_too_long", Scope.MESSAGE),
        ("invalid_blocks", Scope.MESSAGE),
        ("no_text", Scope.MESSAGE),
        ("too_many_attachments", Scope.MESSAGE),
        ("restricted_action_thread_locked", Scope.MESSAGE),
        # the whole installation
        ("invalid_auth", Scope.INSTALLATION),
        ("account_inactive", Scope.INSTALLATION),
        ("token_revoked", Scope.INSTALLATION),
        ("token_expired", Scope.INSTALLATION),
        ("not_authed", Scope.INSTALLATION),
        ("missing_scope", Scope.INSTALLATION),
        ("not_allowed_token_type", Scope.INSTALLATION),
        # transient
        ("service_unavailable", Scope.TRANSIENT),
        ("internal_error", Scope.TRANSIENT),
        ("fatal_error", Scope.TRANSIENT),
        ("request_timeout", Scope.TRANSIENT),
    ],
)
def test_each_documented_code_has_its_scope(code: str, scope: Scope) -> None:
    assert ERROR_SCOPES[code] is scope
    failure = classify(_api_error(code, method="chat.update"))
    assert (failure.scope, failure.code, failure.method, failure.known) == (
        scope,
        code,
        "chat.update",
        True,
    )


def test_rate_limits_server_errors_unknown_codes_and_no_answer_are_transient() -> None:
    limited = classify(_api_error("ratelimited", status=429, headers={"Retry-After": "7"}))
    assert (limited.scope, limited.retry_after) == (Scope.TRANSIENT, 7.0)
    # A 5xx is transient whatever its body says; without a code it is named by its status.
    assert classify(_api_error("is_archived", status=503)).scope is Scope.TRANSIENT
    assert classify(_api_error(None, status=502)).code == "http_502"
    odd = classify(_api_error("something_new"))
    assert (odd.scope, odd.known) == (Scope.TRANSIENT, False)
    lost = classify(TimeoutError("timed out"))
    assert (lost.scope, lost.code, lost.answered) == (Scope.TRANSIENT, NO_ANSWER_CODE, False)
    assert "TimeoutError" in lost.detail


def test_every_channel_error_is_explained_with_its_fix() -> None:
    for code, scope in ERROR_SCOPES.items():
        if scope is not Scope.CHANNEL:
            continue
        words = suspension_reason(error=code, pipeline="web", command="/ci")
        assert "`/ci subscribe web`" in words, code
    assert suspension_reason(error="is_archived", pipeline="web") == (
        "the channel was archived: unarchive it and run `/pipeline subscribe web` there again"
    )


# --- storage (SQLite and PostgreSQL) ------------------------------------------------------------


@pytest.fixture
def sessions(database_url: str) -> Iterator[SessionFactory]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _queue(session: Any, channel: str, kind: Any, execution: str | None, key: str | None) -> int:
    message = notify_store.enqueue(
        session=session,
        channel_id=channel,
        kind=kind,
        payload=json.dumps({"text": f"{kind} {execution} {key}"}),
        execution_id=execution,
        event_key=key,
        at=T0,
    )
    assert message.id is not None
    return message.id


def test_suspend_holds_the_channel_and_resume_keeps_only_what_the_current_state_needs(
    sessions: SessionFactory,
) -> None:
    with transaction(sessions) as session:
        for pipeline in ("web", "api"):
            notify_store.subscribe(
                session=session, pipeline=pipeline, channel_id="C1", created_by="U1", at=T0
            )
        notify_store.subscribe(
            session=session,
            pipeline="web",
            channel_id="C2",
            created_by="U2",
            digest_time="00:00",
            at=T0,
        )
        notify_store.subscribe(
            session=session,
            pipeline="api",
            channel_id="C1",
            created_by="U1",
            digest_time="00:00",
            at=T0,
        )
        # E1's parent message is out, E2's never went out.
        for execution in ("E1", "E2"):
            notify_store.upsert_posted_execution(
                session=session,
                channel_id="C1",
                pipeline="web",
                execution_id=execution,
                last_state="{}",
                last_state_hash="h",
                at=T0,
            )
            notify_store.record_event_once(
                session=session, channel_id="C1", execution_id=execution, event_key="k", at=T0
            )
        notify_store.set_posted_message_ts(
            session=session, channel_id="C1", execution_id="E1", message_ts="1.1"
        )
        parent_update = _queue(session, "C1", "update", "E1", None)
        reply = _queue(session, "C1", "reply", "E1", "k")
        reply_update = _queue(session, "C1", "update", "E1", "k")
        unposted_post = _queue(session, "C1", "post", "E2", None)
        unposted_reply = _queue(session, "C1", "reply", "E2", "k")
        digest = _queue(session, "C1", "post", None, "digest:2026-01-02")
        other = _queue(session, "C2", "post", "E9", None)

    with transaction(sessions) as session:
        suspended = notify_store.suspend_channel(
            session=session,
            channel_id="C1",
            error="is_archived",
            detail="chat.postMessage: outbox message 1",
            message_id=parent_update,
            at=T0,
        )
        assert [(s.pipeline, s.suspended_error) for s in suspended] == [
            ("api", "is_archived"),
            ("web", "is_archived"),
        ]
        # Once: a second refusal suspends nothing more (nobody is told twice).
        assert notify_store.suspend_channel(session=session, channel_id="C1", error="x") == []
    with sessions() as session:
        assert [m.id for m in notify_store.due_outbox(session=session, now=T0)] == [other]
        # Suspended subscriptions are read by nobody: C1's "api" only, so it is not due.
        assert notify_store.due_pipelines(session=session, now=T0) == ["web"]
        due = notify_store.due_digests(session=session, today="2026-01-02", time_of_day="01:00")
        assert [(s.channel_id, s.pipeline) for s in due] == [("C2", "web")]
        listed = notify_store.suspended_subscriptions(session=session)
        assert [(s.channel_id, s.pipeline, s.suspended_message_id) for s in listed] == [
            ("C1", "api", parent_update),
            ("C1", "web", parent_update),
        ]

    later = T0 + timedelta(days=3)
    with transaction(sessions) as session:
        resumed = notify_store.resume_channel(session=session, channel_id="C1", at=later)
        assert [(r.pipeline, r.error, r.created_by) for r in resumed] == [
            ("api", "is_archived", "U1"),
            ("web", "is_archived", "U1"),
        ]
        assert resumed[0].suspended_at == T0
        assert notify_store.resume_channel(session=session, channel_id="C1", at=later) == []
    with sessions() as session:
        rows = {m.id: m for m in session.exec(select(OutboxMessage))}
        for dropped in (parent_update, unposted_post, unposted_reply, digest):
            assert rows[dropped].done_at is not None, dropped
            assert "current state" in (rows[dropped].last_error or "")
        for kept in (reply, reply_update):
            assert rows[kept].done_at is None, kept
        assert [m.id for m in notify_store.due_outbox(session=session, now=later)] == [
            reply,
            other,
        ]
        posted = {p.execution_id: p for p in session.exec(select(PostedExecution))}
        # E2 is forgotten (posted afresh), E1 is redrawn on the next read.
        assert set(posted) == {"E1"} and posted["E1"].last_state_hash == ""
        events = [(e.execution_id, e.event_key) for e in session.exec(select(PostedEvent))]
        assert events == [("E1", "k")]
        assert not notify_store.suspended_subscriptions(session=session)
        assert sorted(notify_store.due_pipelines(session=session, now=later)) == ["api", "web"]


def test_subscribe_resumes_and_unsubscribing_the_last_suspended_drops_the_queue(
    sessions: SessionFactory,
) -> None:
    with transaction(sessions) as session:
        notify_store.subscribe(session=session, pipeline="web", channel_id="C1", created_by="U1")
        notify_store.subscribe(session=session, pipeline="web", channel_id="C2", created_by="U1")
        notify_store.suspend_channel(session=session, channel_id="C1", error="is_archived")
        notify_store.suspend_channel(session=session, channel_id="C2", error="not_in_channel")
        waiting = _queue(session, "C2", "reply", "E1", "k")
    with transaction(sessions) as session:
        # Any subscribe in the channel resumes it, even to another pipeline.
        notify_store.subscribe(session=session, pipeline="api", channel_id="C1", created_by="U2")
        rows = notify_store.subscriptions_for_channel(session=session, channel_id="C1")
        assert [(r.pipeline, r.suspended_at) for r in rows] == [("api", None), ("web", None)]
        assert notify_store.unsubscribe(session=session, pipeline="web", channel_id="C2")
    with sessions() as session:
        message = session.get(OutboxMessage, waiting)
        assert message is not None and message.done_at is not None
        assert "last subscription was removed" in (message.last_error or "")


def test_outbox_helpers_coalesce_updates_and_turn_a_lost_parent_into_a_post(
    sessions: SessionFactory,
) -> None:
    with transaction(sessions) as session:
        notify_store.upsert_posted_execution(
            session=session,
            channel_id="C1",
            pipeline="web",
            execution_id="E1",
            last_state="{}",
            last_state_hash="h",
        )
        notify_store.set_posted_message_ts(
            session=session, channel_id="C1", execution_id="E1", message_ts="1.1"
        )
        first = _queue(session, "C1", "update", "E1", None)
        reply_update = _queue(session, "C1", "update", "E1", "k")
        second = _queue(session, "C1", "update", "E1", None)
    with transaction(sessions) as session:
        messages = {m.id: m for m in session.exec(select(OutboxMessage))}
        assert notify_store.newer_update_queued(session=session, message=messages[first])
        assert not notify_store.newer_update_queued(session=session, message=messages[second])
        assert not notify_store.newer_update_queued(session=session, message=messages[reply_update])
        assert notify_store.is_queued(
            session=session, channel_id="C1", execution_id="E1", kind="update", event_key="k"
        )
        assert not notify_store.is_queued(
            session=session, channel_id="C1", execution_id="E1", kind="post", event_key=None
        )
        assert not notify_store.repost_parent(
            session=session, message_id=reply_update, error="message_not_found", now=T0
        )
        assert notify_store.repost_parent(
            session=session, message_id=first, error="message_not_found", now=T0
        )
    with sessions() as session:
        message = session.get(OutboxMessage, first)
        assert message is not None and message.kind == "post" and message.done_at is None
        parent = notify_store.get_posted_execution(
            session=session, channel_id="C1", execution_id="E1"
        )
        assert parent is not None and parent.message_ts is None


# --- end to end: the notifier, the commands, App Home, the audit log ---------------------------


@pytest.fixture
def h(engine: Any, database_url: str, fake: FakeSlack) -> Iterator[Harness]:
    harness = Harness(engine, database_url, fake)
    yield harness
    harness.db.dispose()


@pytest.fixture
def slack(engine: Any, database_url: str, fake: FakeSlack) -> Bot:
    return make_bot(engine, database_url, fake, admins=ADMIN)


def _calls_to(fake: FakeSlack, channel: str) -> list[Call]:
    return [
        c
        for c in fake.calls
        if c.method in ("chat.postMessage", "chat.update") and c.params.get("channel") == channel
    ]


def _subscription(h: Harness, channel: str = "C1", pipeline: str = "web") -> Subscription:
    with h.sessions() as session:
        found = [
            s
            for s in notify_store.subscriptions_for_channel(session=session, channel_id=channel)
            if s.pipeline == pipeline
        ]
    assert found, f"no subscription to {pipeline} in {channel}"
    return found[0]


def _run(h: Harness, notifier: Any, *, times: int, seconds: float) -> None:
    for _ in range(times):
        h.clock.advance(seconds)
        notifier.run_once()


def _finish(h: Harness, slack: Bot) -> None:
    waiting_approval(slack)
    h.answer(approved=True)
    wait_for(lambda: h.execution_status() == "Succeeded", what="the execution to succeed")


def test_an_archived_channel_is_suspended_once_shown_everywhere_and_resumed_by_subscribe(
    h: Harness, slack: Bot
) -> None:
    h.fake.set_channel("C1", "deploys", is_archived=True)
    h.engine.create_pipeline(pipeline=release())
    slack.command("subscribe web", name="sub")
    assert "subscribed this channel to *web*" in text_of(slack.reply("sub"))
    notifier = h.notifier()
    h.pump(notifier, lambda: bool(h.posts(ADMIN)), "the direct message to the subscriber")

    refused = _calls_to(h.fake, "C1")
    assert [(c.method, (c.response or {}).get("error")) for c in refused] == [
        ("chat.postMessage", "is_archived")
    ]
    row = _subscription(h)
    assert row.suspended_at is not None and row.suspended_error == "is_archived"
    assert "chat.postMessage" in (row.suspended_detail or "")
    dm = h.posts(ADMIN)
    assert len(dm) == 1
    assert "unarchive it and run `/pipeline subscribe web` there again" in text_of(dm[0])
    assert "<#C1>" in text_of(dm[0])

    # Suspended: the execution goes on, nothing is queued or tried in C1, whatever the wait.
    waiting = sorted(m.id or 0 for m in h.pending())
    assert waiting and {m.channel_id for m in h.pending()} == {"C1"}
    _finish(h, slack)
    _run(h, notifier, times=12, seconds=10 * 60)
    assert len(_calls_to(h.fake, "C1")) == 1, "no retry after the first permanent error"
    assert len(h.posts(ADMIN)) == 1, "one direct message, not one per message"
    assert sorted(m.id or 0 for m in h.pending()) == waiting, "nothing new is queued"

    slack.command("subscriptions", name="list")
    listing = text_of(slack.reply("list"))
    assert "1 suspended" in listing and "`is_archived`" in listing
    assert "the channel was archived: unarchive it and run `/pipeline subscribe web`" in listing

    body, headers = app_home_opened(user_id=ADMIN)
    assert slack.app.dispatch(bolt_request(body, headers)).status == 200
    home = json.dumps(h.fake.wait_for("views.publish")[0].params["view"])
    assert "Suspended subscriptions" in home and "unarchive it" in home and "<#C1>" in home

    with h.sessions() as session:
        entries = bot_store.list_audit(session=session, pipeline="web")
    suspensions = [e for e in entries if e.kind == "notifier"]
    assert len(suspensions) == 1
    entry = suspensions[0]
    assert (entry.user_id, entry.what, entry.outcome, entry.channel_id) == (
        bot_store.NOTIFIER_ACTOR,
        "suspend",
        "error",
        "C1",
    )
    assert "is_archived" in (entry.detail or "") and "chat.postMessage" in (entry.detail or "")

    # Unarchived, subscribed again: the channel gets the execution as it is now.
    h.fake.set_channel("C1", "deploys")
    slack.command("subscribe web", name="resume")
    resumed = text_of(slack.reply("resume"))
    assert "resumed this channel's subscription to *web*" in resumed and "is_archived" in resumed
    assert _subscription(h).suspended_at is None
    h.pump(
        notifier,
        lambda: bool(h.replies_with("C1", "Succeeded")) and not h.pending(),
        "the execution in C1",
    )
    parents = h.posts("C1", thread=False)
    assert len(parents) == 1, "the parent is posted once, at its current state"
    parent_ts = str(parents[0].response["ts"])  # type: ignore[index]
    final = h.fake.message("C1", parent_ts)
    assert final is not None and "Succeeded" in json.dumps(final)
    assert not h.replies_with("C1", "Approval needed"), "stale progress is not replayed"
    assert all(c.params["thread_ts"] == parent_ts for c in h.posts("C1", thread=True))
    assert len(h.posts(ADMIN)) == 1
    with h.sessions() as session:
        entries = bot_store.list_audit(session=session, pipeline="web")
    subscribe = next(e for e in entries if e.what == "subscribe" and "resumed" in (e.detail or ""))
    assert "is_archived" in (subscribe.detail or "")


def test_a_deleted_channel_on_an_update_suspends_and_the_parent_converges_in_place(
    h: Harness, slack: Bot
) -> None:
    h.engine.create_pipeline(pipeline=release())
    slack.command("subscribe web", name="sub")
    slack.reply("sub")
    notifier = h.notifier()
    h.pump(
        notifier,
        lambda: bool(h.replies_with("C1", "Approval needed")) and not h.pending(),
        "the approval reply",
    )
    parent_ts = str(h.posts("C1", thread=False)[0].response["ts"])  # type: ignore[index]
    approval_ts = str(h.replies_with("C1", "Approval needed")[0].response["ts"])  # type: ignore[index]

    h.fake.set_channel("C1", "deploys", deleted=True)
    _finish(h, slack)
    h.pump(notifier, lambda: _subscription(h).suspended_at is not None, "the suspension")
    failed = [c for c in _calls_to(h.fake, "C1") if not c.ok]
    assert [(c.method, (c.response or {}).get("error")) for c in failed] == [
        ("chat.update", "channel_not_found")
    ]
    _run(h, notifier, times=6, seconds=10 * 60)
    assert len([c for c in _calls_to(h.fake, "C1") if not c.ok]) == 1

    h.fake.set_channel("C1", "deploys")  # pipebot invited back
    before = len(h.updates("C1", parent_ts))
    slack.command("subscribe web", name="resume")
    slack.reply("resume")
    h.pump(
        notifier,
        lambda: bool(h.replies_with("C1", "Succeeded")) and not h.pending(),
        "the channel to catch up",
    )
    assert len(h.posts("C1", thread=False)) == 1, "the same parent message, updated in place"
    assert len(h.updates("C1", parent_ts)) == before + 1, "one update to the current state"
    final = h.fake.message("C1", parent_ts)
    assert final is not None and "Succeeded" in json.dumps(final)
    resolved = h.updates("C1", approval_ts)
    assert len(resolved) == 1 and "Approved" in text_of(resolved[0])
    assert len(h.posts(ADMIN)) == 1


def test_a_deleted_parent_message_is_posted_again_without_suspending(
    h: Harness, slack: Bot
) -> None:
    h.engine.create_pipeline(pipeline=release())
    slack.command("subscribe web", name="sub")
    slack.reply("sub")
    notifier = h.notifier()
    h.pump(
        notifier,
        lambda: bool(h.replies_with("C1", "Approval needed")) and not h.pending(),
        "the approval reply",
    )
    h.fake.fail_next("chat.update", error="message_not_found")  # someone deleted the parent
    _finish(h, slack)
    h.pump(
        notifier,
        lambda: bool(h.replies_with("C1", "Succeeded")) and not h.pending(),
        "the finished reply",
    )
    parents = h.posts("C1", thread=False)
    assert len(parents) == 2, "the lost parent is posted again, once"
    new_ts = str(parents[1].response["ts"])  # type: ignore[index]
    final = h.fake.message("C1", new_ts)
    assert final is not None and "Succeeded" in json.dumps(final)
    assert h.replies_with("C1", "Succeeded")[0].params["thread_ts"] == new_ts
    assert _subscription(h).suspended_at is None
    assert not h.posts(ADMIN), "nobody is told: nothing is wrong with the channel"


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_a_message_slack_refuses_is_given_up_and_the_channel_goes_on(h: Harness) -> None:
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    with transaction(h.sessions) as session:
        for text in ("", "after it"):  # an empty message: Slack answers no_text
            notify_store.enqueue(
                session=session,
                channel_id="C1",
                kind="post",
                payload=json.dumps({"text": text}),
                at=h.clock.now,
            )
    notifier = h.notifier()
    _run(h, notifier, times=3, seconds=INTERVAL)
    # (Only the two queued here: the pipeline's own parent message is not this test's.)
    posts = [
        c for c in h.fake.calls_to("chat.postMessage") if c.params.get("text") in ("", "after it")
    ]
    assert [(c.params.get("text"), (c.response or {}).get("error")) for c in posts] == [
        ("", "no_text"),
        ("after it", None),
    ]
    with h.sessions() as session:
        refused = session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))).first()
    assert refused is not None and refused.done_at is not None
    assert refused.last_error == "no_text"
    assert _subscription(h).suspended_at is None


def test_a_channel_pipebot_is_not_in_is_suspended_with_its_own_fix(h: Harness, slack: Bot) -> None:
    h.fake.set_channel("C1", "deploys", is_member=False)
    h.engine.create_pipeline(pipeline=release())
    slack.command("subscribe web", name="sub")
    slack.reply("sub")
    notifier = h.notifier()
    h.pump(notifier, lambda: bool(h.posts(ADMIN)), "the direct message")
    assert _subscription(h).suspended_error == "not_in_channel"
    slack.command("subscriptions", name="list")
    listing = text_of(slack.reply("list"))
    assert "pipebot is not a member of the channel: invite pipebot and run" in listing


def test_a_refused_token_stops_all_sending_without_a_storm(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    h.subscribe("web", "C2")
    h.fake.fail_next("chat.postMessage", error="invalid_auth", times=1000)
    notifier = h.notifier()
    with caplog.at_level(logging.ERROR, logger="bot.notify.outbox"):
        _run(h, notifier, times=1, seconds=INTERVAL)
        assert notifier.halted is not None and notifier.halted.code == "invalid_auth"
        # Within the recheck period nothing is tried, in any channel.
        _run(h, notifier, times=50, seconds=INTERVAL)
        assert len(h.fake.calls_to("chat.postMessage")) == 1
        # Then one message is tried, and only one.
        _run(h, notifier, times=1, seconds=10 * 60)
        assert len(h.fake.calls_to("chat.postMessage")) == 2
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "invalid_auth" in critical[0].getMessage()
    # Nothing was dropped or suspended: it is pipebot's token, not the channels.
    assert {m.channel_id for m in h.pending() if m.kind == "post"} == {"C1", "C2"}
    assert _subscription(h, "C1").suspended_at is None
    assert _subscription(h, "C2").suspended_at is None

    h.fake.reset_failures()  # the token is fixed
    h.clock.advance(10 * 60)
    h.pump(
        notifier,
        lambda: bool(h.posts("C1", thread=False)) and bool(h.posts("C2", thread=False)),
        "the parents",
    )
    assert notifier.halted is None
    assert len(h.posts("C1", thread=False)) == len(h.posts("C2", thread=False)) == 1


def test_a_transient_error_is_still_retried(h: Harness) -> None:
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    h.fake.fail_next("chat.postMessage", error="service_unavailable", times=2)
    notifier = h.notifier()
    h.pump(notifier, lambda: bool(h.posts("C1", thread=False)), "the parent")
    refused = [c for c in h.fake.calls_to("chat.postMessage") if not c.ok]
    assert [(c.response or {}).get("error") for c in refused] == ["service_unavailable"] * 2
    assert len(h.posts("C1", thread=False)) == 1
    assert _subscription(h).suspended_at is None and notifier.halted is None


def test_a_home_tab_slack_refuses_is_logged_by_what_the_error_means(
    slack: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    slack.fake.fail_next("views.publish", error="not_enabled")  # the Home tab is switched off
    with caplog.at_level(logging.WARNING, logger="handlers.common"):
        body, headers = app_home_opened(user_id=ADMIN)
        assert slack.app.dispatch(bolt_request(body, headers)).status == 200
        slack.fake.wait_for("views.publish")
        record = wait_for(
            lambda: next((r for r in caplog.records if "Home tab" in r.getMessage()), None),
            what="the log record",
        )
    assert record.levelno == logging.CRITICAL
    assert "not_enabled to views.publish: installation" in record.getMessage()


# --- drawings ------------------------------------------------------------------------------------


def test_app_home_lists_at_most_ten_suspended_subscriptions() -> None:
    from bot.slack.home import home_view

    rows = [
        Subscription(
            pipeline=f"p{i:02d}<&>",
            channel_id="C1",
            events="all",
            created_by=ADMIN,
            created_at=T0,
            suspended_at=T0,
            suspended_error="channel_not_found",
        )
        for i in range(12)
    ]
    view = check_view(
        home_view(pipelines=[], approvals=[], now=T0, trial_mode=False, suspended=rows)
    )
    text = texts(view)
    assert "Suspended subscriptions* (12)" in text and "…and 2 more" in text
    assert "p00&lt;&amp;&gt;" in text and "p11" not in text
    assert suspended_home_blocks(subscriptions=[], now=T0) == []
