"""Channel notifications end to end: the embedded engine, the notifier, a recording fake Slack.

The notifier runs with a controlled clock (its ``sleep`` advances it) and is driven by explicit
``run_once`` calls: no timer is asserted. The engine runs in real time in the background.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from slack_sdk.web import WebClient
from sqlalchemy import Engine
from sqlmodel import col, select

from bot.app import make_web_client
from bot.notify.context import TickStats
from bot.notify.notifier import Notifier
from bot.notify.scheduler import JOB_ID, start_scheduler, stop_scheduler, wake
from bot.ops.permissions import Permissions
from bot.ops.pipeline_ops import PipelineOps
from bot.settings import Settings
from bot.slack import ids
from storage import bot_store, notify_store
from storage.db import make_engine, make_session_factory, transaction
from storage.models import OutboxMessage
from tests.fake_slack import Call, FakeSlack
from tests.helpers import approval_action, commands_action, pipeline, source_action, wait_for
from tests.slack_bot import ADMIN, OTHER, make_bot, release, text_of

INTERVAL = 10.0


class Clock:
    """The notifier's clock: starts at the real time, moves only when told (or on sleep)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)


class NoFeedOps(PipelineOps):
    """The engine seen as AWS sees it: no change tokens, only reads tell what changed."""

    def change_tokens(self) -> dict[str, str] | None:
        return None


class Harness:
    def __init__(self, engine: Any, database_url: str, fake: FakeSlack) -> None:
        self.engine = engine
        self.database_url = database_url
        self.fake = fake
        self.clock = Clock()
        self.db: Engine = make_engine(database_url)
        self.sessions = make_session_factory(self.db)
        self.settings = Settings.model_validate(
            {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_API_URL": fake.base_url}
        )

    def notifier(
        self, holder: str = "process-a", *, change_feed: bool = True, **extra: Any
    ) -> Notifier:
        ops_class = PipelineOps if change_feed else NoFeedOps
        return Notifier(
            ops=ops_class(client=self.engine, local=True),
            sessions=self.sessions,
            web_client=make_web_client(self.settings),
            holder_id=holder,
            clock=self.clock,
            sleep=self.clock.sleep,
            interval_seconds=INTERVAL,
            **extra,
        )

    def subscribe(self, pipeline_name: str, channel: str, events: str = "all") -> None:
        with transaction(self.sessions) as session:
            notify_store.subscribe(
                session=session,
                pipeline=pipeline_name,
                channel_id=channel,
                created_by=ADMIN,
                events=events,  # type: ignore[arg-type]
            )

    def pump(self, notifier: Notifier, until: Callable[[], bool], what: str) -> None:
        """Run the notifier an interval apart until ``until()`` holds (or 30 s pass)."""
        deadline = time.monotonic() + 30
        while True:
            self.clock.advance(INTERVAL)
            notifier.run_once()
            if until():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def pending(self) -> list[OutboxMessage]:
        with self.sessions() as session:
            return list(
                session.exec(select(OutboxMessage).where(OutboxMessage.done_at == None))  # noqa: E711
            )

    def posts(self, channel: str, *, thread: bool | None = None) -> list[Call]:
        found = [
            c
            for c in self.fake.calls_to("chat.postMessage")
            if c.ok and c.params.get("channel") == channel
        ]
        if thread is not None:
            found = [c for c in found if bool(c.params.get("thread_ts")) == thread]
        return found

    def updates(self, channel: str, ts: str | None = None) -> list[Call]:
        return [
            c
            for c in self.fake.calls_to("chat.update")
            if c.ok and c.params.get("channel") == channel and (ts is None or c.params["ts"] == ts)
        ]

    def replies_with(self, channel: str, fragment: str) -> list[Call]:
        return [c for c in self.posts(channel, thread=True) if fragment in text_of(c)]

    def execution_status(self, name: str = "web") -> str:
        summaries = self.engine.list_pipeline_executions(pipelineName=name, maxResults=1)
        return str(summaries["pipelineExecutionSummaries"][0]["status"])

    def approval_token(self, name: str = "web") -> str | None:
        state = self.engine.get_pipeline_state(name=name)
        for stage in state["stageStates"]:
            for action in stage["actionStates"]:
                latest = action.get("latestExecution") or {}
                if latest.get("status") == "InProgress" and latest.get("token"):
                    return str(latest["token"])
        return None

    def answer(self, *, approved: bool, name: str = "web") -> None:
        token = self.approval_token(name)
        assert token is not None
        verdict = "Approved" if approved else "Rejected"
        self.engine.put_approval_result(
            pipelineName=name,
            stageName="Gate",
            actionName="Approve",
            result={"summary": f"{verdict} from the engine", "status": verdict},
            token=token,
        )


@pytest.fixture
def h(engine: Any, database_url: str, fake: FakeSlack) -> Iterator[Harness]:
    harness = Harness(engine, database_url, fake)
    yield harness
    harness.db.dispose()


def buttons_of(call: Call) -> list[str]:
    return [
        element.get("action_id", "")
        for block in call.params.get("blocks") or []
        if block.get("type") == "actions"
        for element in block.get("elements") or []
    ]


# --- a full execution ----------------------------------------------------------------------------


def test_one_parent_updated_in_place_with_thread_replies_across_a_restart(h: Harness) -> None:
    h.engine.create_pipeline(pipeline=release())  # starts an execution
    h.subscribe("web", "C1")
    first = h.notifier("process-a")
    h.pump(first, lambda: bool(h.replies_with("C1", "Approval needed")), "the approval reply")

    parents = h.posts("C1", thread=False)
    assert len(parents) == 1
    parent_ts = str(parents[0].response["ts"])  # type: ignore[index]
    approval = h.replies_with("C1", "Approval needed")
    assert len(approval) == 1
    assert approval[0].params["thread_ts"] == parent_ts
    assert approval[0].params.get("reply_broadcast") in (True, "true", "1", 1)
    assert ids.APPROVE in buttons_of(approval[0]) and ids.REJECT in buttons_of(approval[0])
    approval_ts = str(approval[0].response["ts"])  # type: ignore[index]
    assert h.updates("C1", parent_ts), "the parent is updated in place as stages progress"

    # A restart: the old process is gone, a new one (another holder) takes the lease over.
    first.close()
    second = h.notifier("process-b")
    # Answered through the engine directly, not through Slack.
    h.answer(approved=True)
    h.pump(
        second,
        lambda: bool(h.replies_with("C1", "Succeeded")) and not h.pending(),
        "the finished reply",
    )

    assert len(h.posts("C1", thread=False)) == 1, "nothing is posted twice"
    assert all(c.params["ts"] in (parent_ts, approval_ts) for c in h.updates("C1"))
    final_parent = h.fake.message("C1", parent_ts)
    assert final_parent is not None and "Succeeded" in json.dumps(final_parent)
    resolved = h.updates("C1", approval_ts)
    assert len(resolved) == 1
    assert ids.APPROVE not in buttons_of(resolved[0])
    assert "Approved" in text_of(resolved[0])
    thread = h.posts("C1", thread=True)
    assert len(thread) == 2  # the approval, then the end; each once
    assert all(c.params["thread_ts"] == parent_ts for c in thread)

    # Nothing changes any more: further runs call Slack no more.
    calls = len(h.fake.calls)
    for _ in range(3):
        h.clock.advance(6 * INTERVAL)
        stats = second.run_once()
        assert stats is not None and stats.posts == stats.updates == stats.replies == 0
    assert len(h.fake.calls) == calls


def test_an_approval_answered_before_a_newer_execution_entered_keeps_its_outcome(
    h: Harness,
) -> None:
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    notifier = h.notifier()
    h.pump(notifier, lambda: bool(h.replies_with("C1", "Approval needed")), "the approval")
    approval_ts = h.replies_with("C1", "Approval needed")[0].response["ts"]  # type: ignore[index]
    first = h.engine.list_pipeline_executions(pipelineName="web")["pipelineExecutionSummaries"][0]
    token = h.approval_token()
    assert token is not None
    # Between two ticks: approved (the execution ends), and a newer one reaches the gate,
    # so GetPipelineState shows only the newer one there.
    h.engine.put_approval_result(
        pipelineName="web",
        stageName="Gate",
        actionName="Approve",
        result={"summary": "looks good", "status": "Approved"},
        token=token,
    )
    second = h.engine.start_pipeline_execution(name="web")["pipelineExecutionId"]

    def newer_waits() -> bool:
        for stage in h.engine.get_pipeline_state(name="web")["stageStates"]:
            if stage["stageName"] == "Gate":
                latest = stage.get("latestExecution") or {}
                return bool(latest.get("pipelineExecutionId") == second)
        return False

    wait_for(newer_waits, what="the newer execution at the gate")
    h.pump(notifier, lambda: bool(h.updates("C1", approval_ts)), "the approval's outcome")
    outcome = text_of(h.updates("C1", approval_ts)[-1])
    assert "Approved" in outcome and "looks good" in outcome, outcome
    assert ids.APPROVE not in buttons_of(h.updates("C1", approval_ts)[-1])
    parent = h.fake.message("C1", h.posts("C1", thread=False)[0].response["ts"])  # type: ignore[index]
    assert first["pipelineExecutionId"] in json.dumps(parent)
    assert "Succeeded" in json.dumps(parent)


def test_approve_clicked_in_the_thread_keeps_the_reply_and_drops_its_buttons(h: Harness) -> None:
    from bot.slack.ids import ButtonRef
    from tests.slack_requests import block_action, bolt_request

    bot = make_bot(
        h.engine, str(h.db.url.render_as_string(hide_password=False)), h.fake, admins=ADMIN
    )
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    notifier = h.notifier()
    h.pump(notifier, lambda: bool(h.replies_with("C1", "Approval needed")), "the approval")
    reply = h.replies_with("C1", "Approval needed")[0]
    approve = next(
        element
        for block in reply.params["blocks"]
        if block.get("type") == "actions"
        for element in block["elements"]
        if element.get("action_id") == ids.APPROVE
    )
    body, headers = block_action(
        action_id=ids.APPROVE,
        value=approve["value"],
        user_id=ADMIN,
        channel_id="C1",
        message_ts=str(reply.response["ts"]),  # type: ignore[index]
        message_blocks=reply.params["blocks"],
        thread_ts=str(reply.params["thread_ts"]),
        response_url=h.fake.response_url("approve"),
    )
    assert ButtonRef.decode(approve["value"]).pipeline == "web"
    bot.app.dispatch(bolt_request(body, headers))
    answer = bot.reply("approve")
    assert answer.params.get("replace_original") in (True, "true")
    shown = text_of(answer)
    assert "Approval needed" in shown, "the reply still says what it asked"
    assert "approved" in shown.lower()
    assert ids.APPROVE not in buttons_of(answer) and ids.REJECT not in buttons_of(answer)
    assert "Source" not in json.dumps(answer.params.get("blocks")), "not the status message"
    wait_for(lambda: h.execution_status() == "Succeeded", what="the approved execution")
    # The notifier then resolves the same reply: it reads exactly as the click left it, so
    # whichever of the two lands last, the thread shows one outcome.
    reply_ts = str(reply.response["ts"])  # type: ignore[index]
    h.pump(notifier, lambda: bool(h.updates("C1", reply_ts)), "the notifier's resolution")
    assert h.updates("C1", reply_ts)[-1].params["blocks"] == answer.params["blocks"]


def test_reject_from_the_thread_keeps_the_reply_and_says_who_and_why(h: Harness) -> None:
    from bot.slack.ids import ButtonRef
    from tests.slack_requests import block_action, bolt_request, view_submission

    bot = make_bot(
        h.engine, str(h.db.url.render_as_string(hide_password=False)), h.fake, admins=ADMIN
    )
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    notifier = h.notifier()
    h.pump(notifier, lambda: bool(h.replies_with("C1", "Approval needed")), "the approval")
    reply = h.replies_with("C1", "Approval needed")[0]
    reply_ts = str(reply.response["ts"])  # type: ignore[index]
    reject = next(
        element
        for block in reply.params["blocks"]
        if block.get("type") == "actions"
        for element in block["elements"]
        if element.get("action_id") == ids.REJECT
    )
    body, headers = block_action(
        action_id=ids.REJECT,
        value=reject["value"],
        channel_id="C1",
        message_ts=reply_ts,
        message_blocks=reply.params["blocks"],
        thread_ts=str(reply.params["thread_ts"]),
        response_url=h.fake.response_url("reject"),
    )
    assert ButtonRef.decode(reject["value"]).action == "Approve"
    bot.app.dispatch(bolt_request(body, headers))
    opened = h.fake.wait_for("views.open")[0]
    body, headers = view_submission(
        callback_id=ids.REJECT_VIEW,
        values={
            ids.COMMENT_BLOCK: {
                ids.COMMENT_INPUT: {"type": "plain_text_input", "value": "not <today>"}
            }
        },
        private_metadata=opened.params["view"]["private_metadata"],
    )
    assert bot.app.dispatch(bolt_request(body, headers)).status == 200
    redrawn = h.fake.wait_for("chat.update", where=lambda c: c.params.get("ts") == reply_ts)[0]
    shown = text_of(redrawn)
    assert "Approval needed" in shown and "Rejected Gate / Approve by <@UADMIN>" in shown
    assert "not &lt;today&gt;" in shown
    assert ids.REJECT not in buttons_of(redrawn)
    wait_for(lambda: h.execution_status() == "Failed", what="the rejected execution")
    h.pump(
        notifier,
        lambda: len(h.updates("C1", reply_ts)) >= 2,
        "the notifier's resolution of the reply",
    )
    assert h.updates("C1", reply_ts)[-1].params["blocks"] == redrawn.params["blocks"]


def test_pipeline_is_read_once_per_tick_whatever_the_channels(h: Harness) -> None:
    h.engine.create_pipeline(pipeline=release())
    for channel in ("C1", "C2", "C3"):
        h.subscribe("web", channel)
    # Wait for the approval first, so the tick's reads do not depend on how far it got.
    wait_for(lambda: h.approval_token() is not None, what="the approval")
    notifier = h.notifier()
    h.clock.advance(INTERVAL)
    stats = notifier.run_once()
    assert stats is not None
    assert stats.pipelines_read == 1
    # The change tokens of all pipelines, then ListPipelineExecutions + GetPipelineState,
    # ListActionExecutions once for the approval's resolved CustomData and link, and
    # GetPipeline once for its timeout (the reminder): the same five whatever the number of
    # channels.
    assert stats.token_reads == 1
    assert stats.backend_calls == 5
    assert stats.posts == 3
    for channel in ("C1", "C2", "C3"):
        assert len(h.posts(channel, thread=False)) == 1


def test_an_unchanged_pipeline_is_not_read_until_it_changes(h: Harness) -> None:
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    notifier = h.notifier(approval_reminder_minutes=10_000)
    h.pump(notifier, lambda: bool(h.replies_with("C1", "Approval needed")), "the approval")
    quiet = TickStats(token_reads=1, backend_calls=1)
    for _ in range(50):  # until the engine has settled and everything was read
        h.clock.advance(INTERVAL)
        if notifier.run_once() == quiet:
            break
        time.sleep(0.05)
    for _ in range(3):  # an execution waits at its approval, yet nothing changed: no read
        h.clock.advance(INTERVAL)
        assert notifier.run_once() == quiet
    h.engine.disable_stage_transition(
        pipelineName="web", stageName="Build", transitionType="Inbound", reason="freeze"
    )
    h.clock.advance(INTERVAL)
    stats = notifier.run_once()
    assert stats is not None and stats.pipelines_read == 1
    # A new subscriber gets the pipeline read at once, changed or not.
    h.subscribe("web", "C2")
    h.clock.advance(INTERVAL)
    stats = notifier.run_once()
    assert stats is not None and stats.pipelines_read == 1 and stats.posts == 1


def test_an_idle_pipeline_is_read_less_often_without_change_tokens(h: Harness) -> None:
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    notifier = h.notifier(change_feed=False)
    h.pump(notifier, lambda: h.approval_token() is not None, "the approval")
    h.engine.stop_pipeline_execution(
        pipelineName="web",
        pipelineExecutionId=h.engine.list_pipeline_executions(pipelineName="web")[
            "pipelineExecutionSummaries"
        ][0]["pipelineExecutionId"],
        abandon=True,
        reason="test",
    )
    h.pump(notifier, lambda: h.execution_status() == "Stopped" and not h.pending(), "the stop")
    h.pump(notifier, lambda: bool(h.replies_with("C1", "Stopped")), "the stopped reply")
    h.clock.advance(INTERVAL)
    stats = notifier.run_once()
    assert stats == TickStats()  # idle: not due after one interval
    h.clock.advance(6 * INTERVAL)
    stats = notifier.run_once()
    assert stats is not None and stats.pipelines_read == 1


# --- Slack failures ------------------------------------------------------------------------------


def test_a_429_is_retried_and_nothing_is_lost(h: Harness) -> None:
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    h.fake.fail_next("chat.postMessage", status=429, retry_after=1)
    notifier = h.notifier()
    h.pump(notifier, lambda: bool(h.posts("C1", thread=False)), "the parent")
    assert any(c.status == 429 for c in h.fake.calls_to("chat.postMessage"))
    assert len(h.posts("C1", thread=False)) == 1


class Crash(BaseException):
    """The process dying at this point: nothing after it runs."""


def test_a_post_cut_short_by_a_crash_is_not_posted_twice(h: Harness) -> None:
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    dying = h.notifier("process-a")

    class DiesAfterSlackAnswers(WebClient):
        def chat_postMessage(self, **kwargs: Any) -> Any:  # noqa: N802 (slack_sdk's name)
            super().chat_postMessage(**kwargs)
            raise Crash  # Slack posted it; the process dies before recording that

    dying._outbox.web_client = DiesAfterSlackAnswers(token="xoxb-test", base_url=h.fake.base_url)
    h.clock.advance(INTERVAL)
    dying.tick()
    with pytest.raises(Crash):
        dying.flush_outbox()
    assert len(h.posts("C1", thread=False)) == 1
    # A new process takes over: it finds the post by its metadata instead of posting again,
    # and keeps updating that message.
    survivor = h.notifier("process-b")
    h.pump(
        survivor,
        lambda: bool(h.replies_with("C1", "Approval needed")) and not h.pending(),
        "the approval reply",
    )
    parents = h.posts("C1", thread=False)
    assert len(parents) == 1, "posted once"
    parent_ts = parents[0].response["ts"]  # type: ignore[index]
    assert h.replies_with("C1", "Approval needed")[0].params["thread_ts"] == parent_ts
    assert h.fake.calls_to("conversations.history"), "it looked before posting again"


def test_a_failed_post_stays_queued_and_goes_out_later(h: Harness) -> None:
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    h.fake.fail_next("chat.postMessage", status=500, times=5)
    notifier = h.notifier()
    h.clock.advance(INTERVAL)
    notifier.run_once()
    assert not h.posts("C1")
    pending = h.pending()
    assert pending and pending[0].kind == "post" and pending[0].attempts >= 1
    h.pump(
        notifier,
        lambda: bool(h.replies_with("C1", "Approval needed")) and not h.pending(),
        "the parent and the approval",
    )
    parents = h.posts("C1", thread=False)
    assert len(parents) == 1
    parent_ts = parents[0].response["ts"]  # type: ignore[index]
    assert all(c.params["ts"] == parent_ts for c in h.updates("C1"))


def test_sent_messages_are_pruned_a_day_on_and_unsent_ones_never(h: Harness) -> None:
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    notifier = h.notifier(approval_reminder_minutes=10_000)  # no reminder within the test
    h.pump(
        notifier,
        lambda: bool(h.replies_with("C1", "Approval needed")) and not h.pending(),
        "the approval reply",
    )
    approval_ts = str(h.replies_with("C1", "Approval needed")[0].response["ts"])  # type: ignore[index]
    with transaction(h.sessions) as session:
        held = notify_store.enqueue(
            session=session, channel_id="CHELD", kind="post", payload='{"text": "held"}'
        )
        assert held.id is not None
        notify_store.mark_outbox_failed(
            session=session,
            message_id=held.id,
            error="ratelimited",
            next_attempt_at=h.clock() + timedelta(days=30),
        )

    def outbox() -> list[tuple[str, bool]]:
        with h.sessions() as session:
            rows = session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id)))
            return [(row.kind, row.done_at is not None) for row in rows]

    assert len(outbox()) > 2
    h.clock.advance(25 * 60 * 60)
    notifier.run_once()
    # Kept: the approval reply, whose buttons still stand (its payload redraws it once
    # answered), and the message not sent yet.
    assert outbox() == [("reply", True), ("post", False)]

    h.answer(approved=True)
    h.pump(notifier, lambda: bool(h.updates("C1", approval_ts)), "the approval's outcome")
    resolved = text_of(h.updates("C1", approval_ts)[-1])
    assert "Approval needed" in resolved and "Approved" in resolved, resolved


# --- several processes ---------------------------------------------------------------------------


def test_two_notifiers_on_one_database_only_one_ticks(h: Harness) -> None:
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    a, b = h.notifier("process-a"), h.notifier("process-b")
    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(8):
            h.clock.advance(INTERVAL)
            results = list(pool.map(lambda n: n.run_once(), [a, b]))
            assert sum(r is not None for r in results) == 1
            if h.replies_with("C1", "Approval needed") and not h.pending():
                break
            time.sleep(0.2)
    assert len(h.posts("C1", thread=False)) == 1
    assert len(h.replies_with("C1", "Approval needed")) <= 1
    # The holder gives the lease up: the other takes over at once.
    holder, other = (a, b) if a.run_once() is not None else (b, a)
    holder.close()
    assert other.run_once() is not None
    assert holder.run_once() is None


# --- filters ---------------------------------------------------------------------------------


def test_failures_and_approvals_filters(h: Harness) -> None:
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "CALL", "all")
    h.subscribe("web", "CFAIL", "failures")
    h.subscribe("web", "CAPPR", "approvals")
    notifier = h.notifier()
    h.pump(
        notifier,
        lambda: bool(h.replies_with("CAPPR", "Approval needed")) and not h.pending(),
        "the approval",
    )
    assert not h.posts("CFAIL"), "no failure yet"
    assert len(h.posts("CAPPR", thread=False)) == 1
    approval_ts = str(h.replies_with("CAPPR", "Approval needed")[0].response["ts"])  # type: ignore[index]

    h.answer(approved=False)
    h.pump(
        notifier,
        lambda: (
            h.execution_status() == "Failed"
            and bool(h.posts("CFAIL", thread=False))
            and bool(h.updates("CAPPR", approval_ts))
            and not h.pending()
        ),
        "the rejection",
    )
    assert len(h.posts("CFAIL", thread=False)) == 1
    assert h.replies_with("CFAIL", "Stage failed")
    assert not h.replies_with("CFAIL", "Approval needed")
    assert "Rejected" in text_of(h.updates("CAPPR", approval_ts)[0])
    assert not h.replies_with("CAPPR", "Stage failed")
    assert len(h.posts("CAPPR", thread=True)) == 1  # the approval only
    assert h.replies_with("CALL", "Approval needed") and h.replies_with("CALL", "Stage failed")


# --- approval reminders ------------------------------------------------------------------------


def _with_approver(h: Harness, name: str = "web") -> Permissions:
    with transaction(h.sessions) as session:
        bot_store.add_access(
            session=session, pipeline=name, role="approvers", subject=OTHER, added_by=ADMIN
        )
    return Permissions(
        admins=frozenset({ADMIN}), sessions=h.sessions, group_members=lambda _: frozenset()
    )


def _reminders(h: Harness, channel: str) -> list[Call]:
    return h.replies_with(channel, "Reminder:")


def test_a_waiting_approval_is_reminded_once_then_once_before_it_times_out(h: Harness) -> None:
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    h.subscribe("web", "CFAIL", "failures")
    first = h.notifier("process-a", permissions=_with_approver(h))
    h.pump(
        first,
        lambda: bool(h.replies_with("C1", "Approval needed")) and not h.pending(),
        "the approval reply",
    )
    parent_ts = str(h.posts("C1", thread=False)[0].response["ts"])  # type: ignore[index]
    h.clock.advance(30 * 60)
    first.run_once()
    assert not _reminders(h, "C1"), "not yet: the approval has waited less than an hour"

    h.clock.advance(31 * 60)
    first.run_once()
    reminders = _reminders(h, "C1")
    assert len(reminders) == 1
    assert reminders[0].params["thread_ts"] == parent_ts
    assert f"<@{OTHER}>" in text_of(reminders[0])
    assert "times out soon" not in text_of(reminders[0])
    h.clock.advance(INTERVAL)
    first.run_once()
    assert len(_reminders(h, "C1")) == 1, "reminded once"

    # A restart: the reminder is not sent again.
    first.close()
    second = h.notifier("process-b", permissions=_with_approver(h))
    h.clock.advance(2 * 60 * 60)
    second.run_once()
    assert len(_reminders(h, "C1")) == 1

    # The default timeout is 7 days: the final reminder comes in its last 15 minutes, once.
    h.clock.advance((7 * 24 * 60 - 15 - 3 * 60) * 60 + 60)
    second.run_once()
    reminders = _reminders(h, "C1")
    assert len(reminders) == 2
    final = reminders[1]
    assert "times out soon" in text_of(final) and f"<@{OTHER}>" in text_of(final)
    assert final.params["thread_ts"] == parent_ts
    assert final.params.get("reply_broadcast") in (True, "true", "1", 1)
    h.clock.advance(INTERVAL)
    second.run_once()
    assert len(_reminders(h, "C1")) == 2
    assert not h.posts("CFAIL"), "a failures channel is not reminded of approvals"


def test_the_final_reminder_follows_the_declared_timeout(h: Harness) -> None:
    h.engine.create_pipeline(
        pipeline=pipeline(
            "web",
            [
                ("Source", [source_action()]),
                ("Gate", [approval_action("Approve", timeoutInMinutes=20)]),
            ],
        )
    )
    h.subscribe("web", "CAPPR", "approvals")
    notifier = h.notifier()
    h.pump(
        notifier,
        lambda: bool(h.replies_with("CAPPR", "Approval needed")) and not h.pending(),
        "the approval reply",
    )
    h.clock.advance(10 * 60)
    notifier.run_once()
    assert not _reminders(h, "CAPPR")
    # 20 minutes: the final reminder when less than 2 minutes (10%) remain.
    h.clock.advance(9 * 60)
    notifier.run_once()
    reminders = _reminders(h, "CAPPR")
    assert len(reminders) == 1 and "times out soon" in text_of(reminders[0])
    # The first reminder (after 60 minutes) never comes after the final one.
    h.clock.advance(60 * 60)
    notifier.run_once()
    assert len(_reminders(h, "CAPPR")) == 1


def test_an_answered_approval_gets_no_reminder(h: Harness) -> None:
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    notifier = h.notifier(approval_reminder_minutes=5)
    h.pump(
        notifier,
        lambda: bool(h.replies_with("C1", "Approval needed")) and not h.pending(),
        "the approval reply",
    )
    h.answer(approved=True)
    h.pump(
        notifier,
        lambda: bool(h.replies_with("C1", "Succeeded")) and not h.pending(),
        "the finished reply",
    )
    for _ in range(3):
        h.clock.advance(7 * 24 * 60 * 60 / 3)
        notifier.run_once()
    assert not _reminders(h, "C1")


# --- commands --------------------------------------------------------------------------------


def test_subscription_commands(engine: Any, database_url: str, fake: FakeSlack) -> None:
    bot = make_bot(engine, database_url, fake, admins=ADMIN)
    bot.engine.create_pipeline(pipeline=release())

    bot.command("subscriptions", name="none")
    assert "follows no pipeline" in text_of(bot.reply("none"))

    bot.command("subscribe web", name="sub")
    reply = bot.reply("sub")
    assert reply.params.get("response_type") == "in_channel"
    assert "subscribed this channel to *web*" in text_of(reply)

    bot.command("subscribe web --events failures", name="change")
    assert "changed this channel's subscription" in text_of(bot.reply("change"))

    bot.command("subscriptions", name="list")
    listing = bot.reply("list")
    assert listing.params.get("response_type") == "ephemeral"
    assert "web" in text_of(listing) and "failed and stopped" in text_of(listing)

    bot.command("subscribe web", user=OTHER, name="denied")
    assert bot.reply("denied").params.get("response_type") == "ephemeral"
    with bot.services.sessions() as session:
        rows = notify_store.subscriptions_for_channel(session=session, channel_id="C1")
        assert [(r.pipeline, r.events) for r in rows] == [("web", "failures")]

    bot.command("subscribe web --digest 09:30", name="digest")
    assert "daily at 09:30 (UTC)" in text_of(bot.reply("digest"))
    bot.command("subscriptions", name="list2")
    assert "daily digest at 09:30 (UTC)" in text_of(bot.reply("list2"))
    refused = bot.command("subscribe web --digest 25:00", name="bad")
    assert "not a time of day" in refused.body  # a usage error is answered in the ack
    bot.command("subscribe web --digest off", name="off")
    assert "No daily digest" in text_of(bot.reply("off"))
    with bot.services.sessions() as session:
        rows = notify_store.subscriptions_for_channel(session=session, channel_id="C1")
        assert [(r.events, r.digest_time) for r in rows] == [("failures", None)]

    bot.command("subscribe nope", name="missing")
    assert "no pipeline" in text_of(bot.reply("missing"))

    bot.command("unsubscribe web", name="unsub")
    assert "unsubscribed this channel from *web*" in text_of(bot.reply("unsub"))
    bot.command("unsubscribe web", name="again")
    assert "not subscribed" in text_of(bot.reply("again"))


def test_create_subscribes_the_channel(engine: Any, database_url: str, fake: FakeSlack) -> None:
    bot = make_bot(engine, database_url, fake, admins=ADMIN)
    bot.command("create " + json.dumps({"pipeline": release("made")}))
    reply = bot.reply()
    assert "created pipeline" in text_of(reply)
    assert "subscribed" in text_of(reply)
    with bot.services.sessions() as session:
        rows = notify_store.subscriptions_for_pipeline(session=session, pipeline="made")
        assert [(r.channel_id, r.events) for r in rows] == [("C1", "all")]


# --- daily digest ----------------------------------------------------------------------------


def test_daily_digest_goes_out_once_a_day_at_its_time(h: Harness) -> None:
    from zoneinfo import ZoneInfo

    quick = pipeline(
        "quick", [("Source", [source_action()]), ("Build", [commands_action("B", ["true"])])]
    )
    h.engine.create_pipeline(pipeline=quick)
    h.engine.create_pipeline(pipeline=release())
    wait_for(lambda: h.execution_status("quick") == "Succeeded", what="quick to succeed")
    h.engine.start_pipeline_execution(name="quick")
    wait_for(
        lambda: (
            [
                s["status"]
                for s in h.engine.list_pipeline_executions(pipelineName="quick")[
                    "pipelineExecutionSummaries"
                ]
            ]
            == ["Succeeded", "Succeeded"]
        ),
        what="the second run",
    )
    zone = ZoneInfo("Asia/Tokyo")  # the digest's HH:MM is local to this zone
    with transaction(h.sessions) as session:
        for name in ("quick", "web"):
            notify_store.subscribe(
                session=session,
                pipeline=name,
                channel_id="CDIGEST",
                created_by=ADMIN,
                events="failures",
                digest_time="09:00",
            )
    # One minute before the next 09:00 in Tokyo (within 24 hours of the runs).
    local = datetime.now(UTC).astimezone(zone)
    nine = local.replace(hour=9, minute=0, second=0, microsecond=0)
    if nine <= local:
        nine += timedelta(days=1)
    h.clock.now = (nine - timedelta(minutes=1)).astimezone(UTC)
    first = h.notifier(digest_zone=zone)
    second = h.notifier("process-b", digest_zone=zone)

    def digests() -> list[Call]:
        return [
            c for c in h.posts("CDIGEST", thread=False) if "Daily pipeline digest" in text_of(c)
        ]

    assert first.queue_digests() == 0
    h.clock.advance(60)
    assert first.queue_digests() == 1
    assert second.queue_digests() == 0, "another process finds it sent"
    first.flush_outbox()
    sent = digests()
    assert len(sent) == 1
    body = text_of(sent[0])
    assert "*quick* \\u00b7 2 executions \\u00b7 100% success (2/2)" in body
    assert "*web* \\u00b7 1 execution" in body
    h.clock.advance(6 * 3600)
    assert first.queue_digests() == 0, "once a day"
    h.clock.advance(18 * 3600)
    assert first.queue_digests() == 1, "the next day again"


# --- the scheduler ---------------------------------------------------------------------------


class StubNotifier:
    """The runner's view of a notifier: each run waits for ``proceed`` (when set up to);
    ``holding`` says whether it holds the lease; ``due`` whether a run would read."""

    def __init__(self, *, holding: bool = True) -> None:
        self.woken = threading.Event()
        self.runs: list[float] = []
        self.ran = threading.Semaphore(0)
        self.proceed: threading.Event | None = None
        self.holding = holding
        self.due_answers: list[bool] = []
        self.due_calls = 0
        self.send_in: list[float | None] = []
        self.closed = False

    def run_once(self) -> TickStats | None:
        self.woken.clear()
        self.runs.append(time.monotonic())
        self.ran.release()
        if self.proceed is not None:
            self.proceed.wait(10)
        return TickStats() if self.holding else None

    def wake(self) -> None:
        self.woken.set()

    def wait_for_wake(self, seconds: float) -> bool:
        return self.woken.wait(seconds)

    def due(self) -> bool:
        self.due_calls += 1
        return self.due_answers.pop(0) if self.due_answers else False

    def next_send_in(self) -> float | None:
        return self.send_in.pop(0) if self.send_in else None

    def stop(self) -> None:
        self.woken.set()

    def close(self) -> None:
        self.closed = True


def test_the_runner_runs_at_once_and_after_every_wake_even_one_during_a_run() -> None:
    stub = StubNotifier()
    stub.proceed = threading.Event()
    background = start_scheduler(
        notifier=cast(Notifier, stub), interval_seconds=3600, check_seconds=3600
    )
    try:
        runner = background.notifier_runner
        assert runner is not None and runner.running
        assert background.get_job(JOB_ID) is None, "the notifier is not an APScheduler job"
        assert stub.ran.acquire(timeout=5), "the first run is at once"
        wake(background)  # lands while the first run is still going
        stub.proceed.set()
        assert stub.ran.acquire(timeout=5), "a wake during a run is not lost"
        wake(background)
        assert stub.ran.acquire(timeout=5), "nor one between runs"
        assert not stub.ran.acquire(timeout=0.5), "and each wake makes one run"
    finally:
        stop_scheduler(background, notifier=cast(Notifier, stub))
    assert not background.running and stub.closed


def test_the_lease_holder_runs_early_when_a_run_is_due_or_a_message_may_go() -> None:
    holder = StubNotifier()
    holder.due_answers = [False, False, True]
    background = start_scheduler(
        notifier=cast(Notifier, holder), interval_seconds=3600, check_seconds=0.05
    )
    try:
        assert holder.ran.acquire(timeout=5)
        assert holder.ran.acquire(timeout=5), "a run is due: it runs, an interval early"
        assert holder.due_calls >= 3
    finally:
        stop_scheduler(background)

    queued = StubNotifier()
    queued.send_in = [0.2]  # the first run left a post for the channel's next second
    background = start_scheduler(
        notifier=cast(Notifier, queued), interval_seconds=3600, check_seconds=3600
    )
    try:
        assert queued.ran.acquire(timeout=5)
        assert queued.ran.acquire(timeout=5), "the next run sends it, an interval early"
        assert not queued.ran.acquire(timeout=0.5)
    finally:
        stop_scheduler(background)

    other = StubNotifier(holding=False)
    background = start_scheduler(
        notifier=cast(Notifier, other), interval_seconds=3600, check_seconds=0.05
    )
    try:
        assert other.ran.acquire(timeout=5)
        time.sleep(0.3)
        assert other.due_calls == 0, "a process without the lease does not ask"
    finally:
        stop_scheduler(background)
