"""Two `pipebot worker` processes (engine worker + scheduler each) on one PostgreSQL, posting
to one recording fake Slack: one scheduler at a time, each message posted once, and when the
lease holder is killed (-9) the other takes over and keeps the same messages current."""

from __future__ import annotations

import collections
import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import col, select

from bot.engine import LocalCodePipeline
from storage import lease_store, notify_store
from storage.db import make_engine, make_session_factory, transaction
from storage.models import OutboxMessage
from tests.conftest import PostgresDatabases
from tests.fake_slack import Call, FakeSlack
from tests.helpers import approval_action, commands_action, pipeline, source_action, wait_for

PIPELINES = ("alpha", "beta", "gamma")
CHANNELS = ("CTEAM", "COPS")


def _declaration(name: str) -> dict[str, Any]:
    return pipeline(
        name,
        [
            ("Source", [source_action()]),
            ("Build", [commands_action("Build", ["cat app.txt"])]),
            ("Gate", [approval_action("Release")]),
        ],
    )


@pytest.fixture
def pg_url(postgres: PostgresDatabases | None) -> Iterator[str]:
    if postgres is None:
        pytest.skip("PostgreSQL is not reachable (set TEST_DATABASE_URL; CI never skips)")
    url = postgres.fresh()
    yield url
    postgres.drop(url)


def _start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "bot", "worker"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _token(client: LocalCodePipeline, name: str) -> str | None:
    for stage in client.get_pipeline_state(name=name)["stageStates"]:
        for action in stage.get("actionStates", []):
            latest = action.get("latestExecution") or {}
            if latest.get("status") == "InProgress" and latest.get("token"):
                return str(latest["token"])
    return None


def test_two_worker_processes_post_each_message_once(
    pg_url: str, tmp_path: Path, repos_dir: Path
) -> None:
    fake = FakeSlack().start()
    db = make_engine(pg_url)
    sessions = make_session_factory(db)
    client = LocalCodePipeline(
        database_url=pg_url,
        data_dir=tmp_path / "data",
        repositories_dir=repos_dir,
        run_worker=False,
    )
    env = {
        **os.environ,
        "DATABASE_URL": pg_url,
        "PIPEBOT_DATA_DIR": str(tmp_path / "data"),
        "PIPEBOT_REPOSITORIES_DIR": str(repos_dir),
        "SLACK_BOT_TOKEN": "xoxb-processes",
        "SLACK_API_URL": fake.base_url,
        "PIPEBOT_POLL_SECONDS": "0.5",
        "PIPEBOT_ENGINE_POLL_SECONDS": "0.2",
        "LOG_LEVEL": "INFO",
    }
    workers = [_start_worker(env, tmp_path / f"worker-{i}.log") for i in range(2)]

    def parents(channel: str) -> list[Call]:
        return [
            c
            for c in fake.calls_to("chat.postMessage")
            if c.ok and c.params.get("channel") == channel and not c.params.get("thread_ts")
        ]

    def replies(channel: str, fragment: str) -> list[Call]:
        return [
            c
            for c in fake.calls_to("chat.postMessage")
            if c.ok
            and c.params.get("channel") == channel
            and c.params.get("thread_ts")
            and fragment in json.dumps(c.params)
        ]

    def outbox_empty() -> bool:
        with sessions() as session:
            statement = (
                select(func.count())
                .select_from(OutboxMessage)
                .where(col(OutboxMessage.done_at).is_(None))
            )
            return int(session.exec(statement).one()) == 0

    try:
        with transaction(sessions) as session:
            for name in PIPELINES:
                for channel in CHANNELS:
                    notify_store.subscribe(
                        session=session, pipeline=name, channel_id=channel, created_by="UADMIN"
                    )
        for name in PIPELINES:
            client.create_pipeline(pipeline=_declaration(name))
        for name in PIPELINES:
            wait_for(lambda name=name: _token(client, name), timeout=60, what=f"{name} to wait")
        for channel in CHANNELS:
            wait_for(
                lambda channel=channel: (
                    len(replies(channel, "Approval needed")) == len(PIPELINES) and outbox_empty()
                ),
                timeout=60,
                what=f"the approval requests in {channel}",
            )

        # Kill the lease holder (-9: no release); the other process takes over.
        with sessions() as session:
            lease = lease_store.get_lease(session=session, name="notifier")
        assert lease is not None
        holder_pid = int(lease.holder.split(":")[1])
        holder = next(w for w in workers if w.pid == holder_pid)
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)

        for name in PIPELINES:
            token = _token(client, name)
            assert token is not None
            client.put_approval_result(
                pipelineName=name,
                stageName="Gate",
                actionName="Release",
                result={"summary": "ship it", "status": "Approved"},
                token=token,
            )
        for channel in CHANNELS:
            wait_for(
                lambda channel=channel: (
                    len(replies(channel, "Succeeded")) == len(PIPELINES) and outbox_empty()
                ),
                timeout=60,
                what=f"the finished replies in {channel}",
            )
        with sessions() as session:
            lease = lease_store.get_lease(session=session, name="notifier")
        assert lease is not None and int(lease.holder.split(":")[1]) != holder_pid
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        client.close()
        db.dispose()
        fake.stop()

    for channel in CHANNELS:
        top = parents(channel)
        assert len(top) == len(PIPELINES), "one parent per execution, never two"
        parent_ts = {str(c.response["ts"]) for c in top if c.response}
        thread = [
            c
            for c in fake.calls_to("chat.postMessage")
            if c.ok and c.params.get("channel") == channel and c.params.get("thread_ts")
        ]
        assert {str(c.params["thread_ts"]) for c in thread} <= parent_ts
        # Each reply once: no two replies in one thread say the same thing.
        texts = collections.Counter((c.params["thread_ts"], c.params.get("text")) for c in thread)
        assert all(n == 1 for n in texts.values()), texts
        updates = [
            c for c in fake.calls_to("chat.update") if c.ok and c.params.get("channel") == channel
        ]
        by_ts: dict[str, list[str]] = collections.defaultdict(list)
        for call in updates:
            by_ts[str(call.params["ts"])].append(json.dumps(call.params.get("blocks")))
        for ts, payloads in by_ts.items():
            # No update is applied twice (two schedulers would repeat each other).
            assert all(a != b for a, b in itertools.pairwise(payloads)), ts
        # Every parent ends showing Succeeded (the survivor kept them current).
        for ts in parent_ts:
            assert "Succeeded" in json.dumps(fake.message(channel, ts))
