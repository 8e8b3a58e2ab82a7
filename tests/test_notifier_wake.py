"""The push path (issue 12, item 1): every change reaches the channel at once, whatever the
notifier is doing when it lands, whichever process commits it.

The channel lagged the engine by one poll interval: a change whose wake-up landed while a
notifier run was reading or sending was dropped (APScheduler skipped the extra run), and a
change committed by another process woke nobody. These tests run the real background work
(``bot.app.start_background``) with a poll interval of an hour, so only the push path can
pass them.
"""

from __future__ import annotations

import collections
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from bot.app import start_background
from bot.engine import LocalCodePipeline
from bot.notify.context import TickStats
from bot.notify.outbox import CHANNEL_GAP_SECONDS, Outbox
from bot.settings import Settings
from storage import notify_store
from storage.db import make_engine, make_session_factory, transaction
from storage.models import OutboxMessage
from tests.fake_slack import Call, FakeSlack, block_texts
from tests.helpers import wait_for
from tests.slack_bot import ADMIN, release, text_of
from tests.test_notifier import Harness

HOUR = 3600.0
"""The poll interval of these tests: the interval never comes, only the push path does."""
SHOWN_WITHIN = 10.0
"""Seconds a change may take to reach the fake Slack here (generous: a loaded machine)."""


class GatedClient:
    """The engine as the notifier sees it, with a gate: once armed, the next read of a
    pipeline's state (the notifier's, in the middle of a run) waits until released."""

    def __init__(self, engine: LocalCodePipeline) -> None:
        self._engine = engine
        self._armed = threading.Event()
        self.reading = threading.Event()
        self._released = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def arm(self) -> None:
        self.reading.clear()
        self._released.clear()
        self._armed.set()

    def release(self) -> None:
        self._released.set()

    def get_pipeline_state(self, **params: Any) -> Any:
        if self._armed.is_set():
            self._armed.clear()
            self.reading.set()
            self._released.wait(30)
        return self._engine.get_pipeline_state(**params)


class Running:
    """The background work of one `pipebot serve`, on a fake Slack."""

    def __init__(self, client: Any, database_url: str, fake: FakeSlack) -> None:
        self.fake = fake
        self.db = make_engine(database_url)
        self.sessions = make_session_factory(self.db)
        settings = Settings.model_validate(
            {
                "SLACK_BOT_TOKEN": "xoxb-test",
                "SLACK_API_URL": fake.base_url,
                "PIPEBOT_POLL_SECONDS": HOUR,
            }
        )
        self.stop = start_background(
            settings=settings,
            pipeline_client=client,
            sessions=self.sessions,
            web_client=fake.web_client(),
        )

    def subscribe(self, pipeline: str, channel: str) -> None:
        with transaction(self.sessions) as session:
            notify_store.subscribe(
                session=session, pipeline=pipeline, channel_id=channel, created_by=ADMIN
            )

    def parents(self, channel: str, pipeline: str = "web") -> dict[str, list[Call]]:
        """Each parent message's post and updates, by ts, in the order Slack got them."""
        found: dict[str, list[Call]] = collections.defaultdict(list)
        posted: dict[str, str] = {}
        for call in self.fake.calls:
            if not call.ok or call.params.get("channel") != channel:
                continue
            header = ((call.params.get("blocks") or [{}])[0].get("text") or {}).get("text", "")
            if not str(header).startswith(f"{pipeline} · "):
                continue
            if call.method == "chat.postMessage" and not call.params.get("thread_ts"):
                assert call.response is not None
                posted[str(call.response["ts"])] = header
                found[str(call.response["ts"])].append(call)
            elif call.method == "chat.update" and str(call.params.get("ts")) in posted:
                found[str(call.params["ts"])].append(call)
        return found

    def showing(self, channel: str, fragment: str, pipeline: str = "web") -> bool:
        """Whether a parent message of ``pipeline`` in ``channel`` now shows ``fragment``."""
        return any(
            fragment in text_of(calls[-1]) for calls in self.parents(channel, pipeline).values()
        )

    def drained(self) -> bool:
        """Whether everything queued for Slack went out."""
        with self.sessions() as session:
            statement = select(OutboxMessage).where(col(OutboxMessage.done_at).is_(None))
            return session.exec(statement).first() is None

    def close(self) -> None:
        self.stop()
        self.db.dispose()


def _token(engine: Any, name: str) -> str:
    state = engine.get_pipeline_state(name=name)
    latest = state["stageStates"][2]["actionStates"][0].get("latestExecution", {})
    return str(latest["token"])


def _approve(client: Any, name: str, token: str) -> None:
    client.put_approval_result(
        pipelineName=name,
        stageName="Gate",
        actionName="Approve",
        result={"summary": "ship it", "status": "Approved"},
        token=token,
    )


def _shown(check: Callable[[], bool], what: str) -> None:
    wait_for(check, timeout=SHOWN_WITHIN, what=what)


@pytest.fixture
def h(engine: Any, database_url: str, fake: FakeSlack) -> Iterator[Harness]:
    harness = Harness(engine, database_url, fake)
    yield harness
    harness.db.dispose()


@pytest.fixture
def gated(engine: Any) -> GatedClient:
    return GatedClient(engine)


@pytest.fixture
def running(gated: GatedClient, database_url: str, fake: FakeSlack) -> Iterator[Running]:
    background = Running(gated, database_url, fake)
    try:
        yield background
    finally:
        gated.release()
        background.close()


def test_a_change_committed_while_a_run_reads_is_shown_without_waiting_for_the_interval(
    engine: Any, gated: GatedClient, running: Running
) -> None:
    """The issue's lag: a wake-up that landed while a run was going was dropped."""
    running.subscribe("web", "C1")
    running.subscribe("api", "C1")
    engine.create_pipeline(pipeline=release("web"))
    engine.create_pipeline(pipeline=release("api"))
    for name in ("web", "api"):
        _shown(lambda name=name: running.showing("C1", "Waiting for approval", name), name)

    # api's answer starts a run, which stops in the middle of reading api...
    gated.arm()
    _approve(engine, "api", _token(engine, "api"))
    assert gated.reading.wait(SHOWN_WITHIN), "a change runs the notifier at once"
    # ...and web's answer (its execution ends: nothing follows it) lands during that run.
    _approve(engine, "web", _token(engine, "web"))
    time.sleep(1.5)  # the old code's one-second throttle fired (and was dropped) meanwhile
    gated.release()

    _shown(lambda: running.showing("C1", "*Succeeded*", "api"), "api's end")
    _shown(lambda: running.showing("C1", "*Succeeded*", "web"), "web's end, not an hour on")


def test_a_change_committed_by_another_process_is_shown_without_waiting_either(
    engine: Any, running: Running, database_url: str, tmp_path: Path, repos_dir: Path
) -> None:
    """`pipebot serve` with PIPEBOT_RUN_WORKER=false and a `pipebot worker`: the process
    that commits a change is not the one that notifies. The lease holder's due check sees
    the change tokens move; a new subscription is due at once the same way."""
    elsewhere = LocalCodePipeline(
        database_url=database_url,
        data_dir=tmp_path / "data",
        repositories_dir=repos_dir,
        run_worker=False,
    )
    try:
        elsewhere.create_pipeline(pipeline=release("web"))
        running.subscribe("web", "C1")  # after the change: no wake-up at all
        _shown(lambda: running.showing("C1", "Waiting for approval"), "the new subscription")
        _approve(elsewhere, "web", _token(engine, "web"))
        _shown(lambda: running.showing("C1", "*Succeeded*"), "another process's answer")
    finally:
        elsewhere.close()


def test_build_and_each_stage_are_shown_running_one_after_another(
    engine: Any, running: Running, fake: FakeSlack
) -> None:
    """What the walkthrough promises: the parent moves through the stages. Each stage runs
    1.5 s here; every one is drawn running, and no update repeats the one before it."""
    from tests.helpers import approval_action, commands_action, pipeline, source_action

    running.subscribe("slow", "C1")
    stages = ["Build", "Test", "Deploy"]
    engine.create_pipeline(
        pipeline=pipeline(
            "slow",
            [
                ("Source", [source_action()]),
                *[(stage, [commands_action(stage, ["sleep 1.5"])]) for stage in stages],
                ("Gate", [approval_action("Approve")]),
            ],
        )
    )
    _shown(lambda: running.showing("C1", "Waiting for approval", "slow"), "the approval")
    (calls,) = running.parents("C1", "slow").values()
    texts = ["\n".join(block_texts(call.params.get("blocks"))) for call in calls]
    for stage in stages:
        assert any(f"*{stage}* · In progress" in text for text in texts), (stage, texts)
    assert all(a != b for a, b in itertools.pairwise(json.dumps(c.params) for c in calls))


def test_a_parent_is_never_updated_to_what_it_already_shows(engine: Any, running: Running) -> None:
    """A newer execution entering the stages a finished one was seen in changes what is
    stored of the finished one, not what its parent shows: no chat.update for it (each
    would be a Slack call for nothing, and the channel's next messages would wait)."""
    running.subscribe("web", "C1")
    engine.create_pipeline(pipeline=release("web"))
    _shown(lambda: running.showing("C1", "Waiting for approval"), "the approval")
    _approve(engine, "web", _token(engine, "web"))
    _shown(lambda: running.showing("C1", "*Succeeded*"), "the first execution's end")
    engine.start_pipeline_execution(name="web")

    def both() -> bool:
        parents = list(running.parents("C1").values())
        return len(parents) == 2 and "Waiting for approval" in text_of(parents[1][-1])

    _shown(lambda: both() and running.drained(), "the second execution at its approval")
    first, _ = running.parents("C1").values()
    drawn = [json.dumps(call.params["blocks"]) for call in first]
    assert all(a != b for a, b in itertools.pairwise(drawn)), len(drawn)


# --- the notifier's run ----------------------------------------------------------------------


def test_a_run_reads_again_when_woken_while_it_reads(h: Harness) -> None:
    """A change committed during a tick is queued in the same run, not an interval on
    (the notifier's clock is frozen here: only the wake can make it read again)."""
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    notifier = h.notifier()
    h.pump(notifier, lambda: bool(h.replies_with("C1", "Approval needed")), "the approval")
    h.clock.advance(10)
    ticks: list[TickStats] = []
    original = notifier.tick

    def tick() -> TickStats:
        stats = original()
        ticks.append(stats)
        if len(ticks) == 1:  # the engine commits a change while this run reads
            h.answer(approved=True)
            notifier.wake()
        return stats

    notifier.tick = tick  # type: ignore[method-assign]
    notifier.run_once()
    assert len(ticks) == 2, "woken during its read, the run read again"
    parent = h.posts("C1", thread=False)[0]
    ts = str(parent.response["ts"])  # type: ignore[index]
    assert "*Succeeded*" in text_of(h.updates("C1", ts)[-1])


def test_an_edit_does_not_wait_for_the_channels_second_but_a_post_does(h: Harness) -> None:
    """Slack paces chat.postMessage at about one a second per channel; chat.update is Tier
    3 and has no such rule: a parent shows a change at once even right after a post."""
    h.engine.create_pipeline(pipeline=release())
    h.subscribe("web", "C1")
    notifier = h.notifier()
    h.pump(
        notifier,
        lambda: bool(h.replies_with("C1", "Approval needed")) and not h.pending(),
        "the approval",
    )
    parent_ts = str(h.posts("C1", thread=False)[0].response["ts"])  # type: ignore[index]
    outbox = Outbox(sessions=h.sessions, web_client=h.fake.web_client(), clock=h.clock)
    now = h.clock()
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "x"}}
    payload = json.dumps({"text": "x", "blocks": [section]})
    execution = h.engine.list_pipeline_executions(pipelineName="web")["pipelineExecutionSummaries"][
        0
    ]["pipelineExecutionId"]
    with transaction(h.sessions) as session:
        for kind, key in (("reply", "one"), ("update", None), ("reply", "two")):
            notify_store.enqueue(
                session=session,
                channel_id="C1",
                kind=kind,
                payload=payload,
                execution_id=execution,
                event_key=key,
                at=now,
            )
    assert outbox.flush() == 1  # the first reply
    assert outbox.next_due == now, "flush again at once: the channel may have more"
    assert outbox.flush() == 1, "the edit goes at once, the same second"
    assert [c.params.get("ts") for c in h.fake.calls_to("chat.update")][-1] == parent_ts
    assert outbox.flush() == 0, "the next post waits for the channel's second"
    assert outbox.next_due == now + timedelta(seconds=CHANNEL_GAP_SECONDS)
    h.clock.advance(CHANNEL_GAP_SECONDS)
    assert outbox.flush() == 1
