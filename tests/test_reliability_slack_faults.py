"""Issue 6, point 3: Slack answers 429 (Retry-After), 500s and too late for a while.

The notifier (the one `pipebot serve` runs, with the same WebClient and retry handlers, its
timeout shortened to 1 s) follows 2 pipelines in 2 channels on the embedded engine while a
scripted fault injector makes Slack fail: 429 with Retry-After, HTTP 500, and answers held
back past the client's timeout (the call was applied; the client does not know: a post is
then looked up by its metadata before it is sent again, the test at the end). Afterwards
every execution has exactly one parent message at its final status, and the updates of each
parent were applied in order: its status never went back from finished to in progress.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from bot.app import make_web_client
from bot.notify.notifier import Notifier
from bot.ops.pipeline_ops import PipelineOps
from bot.settings import Settings
from reliability.faults import FaultySlack
from reliability.figures import record
from reliability.workload import TERMINAL, build_pipeline, notification_problems
from storage import notify_store
from storage.db import make_engine, make_session_factory, transaction

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

PIPELINES = ["alpha", "beta"]
FAULT_SECONDS = 15.0


def _channel(name: str) -> str:
    return "C" + name.upper()


@pytest.fixture
def fake() -> Iterator[FaultySlack]:
    server = FaultySlack()
    server.start()
    try:
        yield server
    finally:
        server.stop()


FAULTS: list[tuple[float, str, str]] = [
    # (seconds after the start, method, fault): bursts, each a few calls long.
    (0.0, "chat.postMessage", "429"),
    (0.0, "chat.postMessage", "500"),
    (2.0, "chat.update", "timeout"),
    (2.0, "chat.update", "500"),
    (4.0, "chat.postMessage", "500"),
    (5.0, "chat.update", "429"),
    (6.0, "chat.update", "timeout"),
    (8.0, "chat.update", "500"),
    (9.0, "chat.postMessage", "429"),
    (10.0, "chat.update", "timeout"),
]


def _inject(fake: FaultySlack, stop: threading.Event) -> Counter[str]:
    injected: Counter[str] = Counter()
    started = time.monotonic()
    for at, method, kind in FAULTS:
        if stop.wait(max(0.0, at - (time.monotonic() - started))):
            break
        if kind == "429":
            fake.fail_next(method, status=429, retry_after=1)
        elif kind == "500":
            fake.fail_next(method, status=500, times=2)
        else:
            fake.delay_next(method, seconds=1.5)
        injected[f"{kind} {method}"] += 1
    return injected


def _head_rank(params: dict[str, Any]) -> int:
    """0 while the execution runs, 1 once its parent shows a final status."""
    blocks = params.get("blocks") or []
    head = json.dumps(blocks[1], ensure_ascii=False) if len(blocks) > 1 else ""
    return 1 if any(f"*{status}*" in head for status in TERMINAL) else 0


def _notifier(engine: Any, database_url: str, fake: FaultySlack) -> tuple[Notifier, Any]:
    """The notifier as `pipebot serve` builds it; the client's timeout shortened to 1 s."""
    config = Settings(
        SLACK_BOT_TOKEN=SecretStr("xoxb-faults"),
        SLACK_API_URL=fake.base_url,
        DATABASE_URL=database_url,
    )
    web_client = make_web_client(config)
    web_client.timeout = 1  # an answer held back 1.5 s is a timeout
    db = make_engine(database_url)
    notifier = Notifier(
        ops=PipelineOps(client=engine, local=True),
        sessions=make_session_factory(db),
        web_client=web_client,
        holder_id="faults",
        interval_seconds=1.0,
    )
    return notifier, db


def test_slack_faults_lose_nothing_and_keep_updates_in_order(
    engine: Any, database_url: str, fake: FaultySlack
) -> None:
    notifier, db = _notifier(engine, database_url, fake)
    sessions = make_session_factory(db)
    for name in PIPELINES:
        with transaction(sessions) as session:
            notify_store.subscribe(
                session=session, pipeline=name, channel_id=_channel(name), created_by="UADMIN"
            )
        engine.create_pipeline(pipeline=build_pipeline(name, seconds=1.0))
    stop = threading.Event()
    injected: Counter[str] = Counter()

    def injector() -> None:
        injected.update(_inject(fake, stop))

    thread = threading.Thread(target=injector, daemon=True)
    thread.start()
    started = time.monotonic()
    starts = 0
    try:
        while time.monotonic() - started < FAULT_SECONDS:
            if starts < 4 and time.monotonic() - started > starts * 3:
                for name in PIPELINES:
                    engine.start_pipeline_execution(name=name)
                starts += 1
            notifier.run_once()
        stop.set()
        thread.join(timeout=10)
        fake.reset_failures()
        finals: dict[str, list[dict[str, Any]]] = {}
        problems: list[str] = ["not checked"]
        deadline = time.monotonic() + 180
        while problems and time.monotonic() < deadline:
            notifier.run_once()
            finals = {
                name: engine.list_pipeline_executions(pipelineName=name)[
                    "pipelineExecutionSummaries"
                ]
                for name in PIPELINES
            }
            if all(s["status"] in TERMINAL for ex in finals.values() for s in ex):
                problems, duplicates, parents = notification_problems(fake, finals, _channel)
            time.sleep(0.2)
    finally:
        stop.set()
        notifier.close()
        db.dispose()
    assert duplicates == 0 and not problems, problems
    # Updates of one parent were applied in order: never back from finished to running.
    applied: dict[tuple[str, str], list[int]] = {}
    for call in fake.calls_to("chat.update"):
        if call.ok:
            key = (str(call.params.get("channel")), str(call.params.get("ts")))
            applied.setdefault(key, []).append(_head_rank(call.params))
    out_of_order = [key for key, ranks in applied.items() if ranks != sorted(ranks)]
    assert not out_of_order, out_of_order
    failed_calls = sum(1 for c in fake.calls if not c.ok)
    assert failed_calls > 0 and fake.delayed > 0, "the faults must have fired"
    record(
        "slack_faults",
        faults_injected=failed_calls + fake.delayed,
        http_429=sum(1 for c in fake.calls if c.status == 429),
        http_500=sum(1 for c in fake.calls if c.status == 500),
        timeouts=fake.delayed,
        executions=sum(len(ex) for ex in finals.values()),
        parent_messages=parents,
        updates_applied=sum(len(r) for r in applied.values()),
        out_of_order=len(out_of_order),
        duplicates=duplicates,
        lost=0,
    )


def test_a_parent_post_answered_after_the_timeout_is_not_posted_twice(
    engine: Any, database_url: str, fake: FaultySlack
) -> None:
    notifier, db = _notifier(engine, database_url, fake)
    try:
        with transaction(make_session_factory(db)) as session:
            notify_store.subscribe(
                session=session, pipeline="late", channel_id="CLATE", created_by="UADMIN"
            )
        fake.delay_next("chat.postMessage", seconds=1.5)  # applied, answered too late
        engine.create_pipeline(pipeline=build_pipeline("late", seconds=0.1))
        deadline = time.monotonic() + 60
        finals: dict[str, list[dict[str, Any]]] = {}
        problems: list[str] = ["not checked"]
        while problems and time.monotonic() < deadline:
            notifier.run_once()
            finals = {
                "late": engine.list_pipeline_executions(pipelineName="late")[
                    "pipelineExecutionSummaries"
                ]
            }
            problems, duplicates, _ = notification_problems(fake, finals, lambda _: "CLATE")
            if duplicates:
                break
            time.sleep(0.2)
    finally:
        notifier.close()
        db.dispose()
    assert fake.delayed == 1
    assert duplicates == 0, problems
