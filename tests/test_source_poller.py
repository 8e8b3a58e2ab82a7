"""Source-change polling on the embedded engine (SQLite and PostgreSQL via ``engine``)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, cast

import pytest

from bot.engine.source_poller import LEASE_NAME, SourcePoller
from bot.notify.lease import JobLease
from bot.notify.scheduler import JOB_ID, SOURCE_POLLER_JOB_ID, start_scheduler, stop_scheduler
from storage import lease_store
from storage.db import SessionFactory, make_engine, make_session_factory
from tests.helpers import commands_action, commit, pipeline, source_action, wait_for


def _create(engine: Any, name: str, **configuration: str) -> str:
    """Create a pipeline on repo ``app`` (or ``configuration["repo"]``); wait for its first run."""
    repo = configuration.pop("repo", "app")
    source = source_action(repo=repo)
    source["configuration"].update(configuration)
    engine.create_pipeline(
        pipeline=pipeline(name, [("Source", [source]), ("Build", [commands_action("B", ["true"])])])
    )
    first = engine.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"]
    execution_id = str(first[0]["pipelineExecutionId"])
    _wait_done(engine, name, execution_id)
    return execution_id


def _wait_done(engine: Any, name: str, execution_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        detail: dict[str, Any] = engine.get_pipeline_execution(
            pipelineName=name, pipelineExecutionId=execution_id
        )["pipelineExecution"]
        return detail if detail["status"] in {"Succeeded", "Failed", "Stopped"} else None

    return wait_for(done, what=f"execution {execution_id} to finish")


def _executions(engine: Any, name: str) -> list[dict[str, Any]]:
    summaries: list[dict[str, Any]] = engine.list_pipeline_executions(pipelineName=name)[
        "pipelineExecutionSummaries"
    ]
    return summaries


def _poller(engine: Any, repos_dir: Path, **extra: Any) -> SourcePoller:
    return SourcePoller(client=engine, repositories_dir=repos_dir, **extra)


def test_a_new_commit_starts_one_execution_with_the_new_revision(
    engine: Any, repos_dir: Path
) -> None:
    _create(engine, "polled")
    poller = _poller(engine, repos_dir)
    assert poller.poll_once() == []

    sha = commit(repos_dir / "app", {"app.txt": "v2\n"}, "Ship v2")
    started = poller.poll_once()
    assert len(started) == 1
    assert poller.poll_once() == [], "the same commit never starts a second execution"
    detail = _wait_done(engine, "polled", started[0])
    assert detail["status"] == "Succeeded"
    assert detail["trigger"]["triggerType"] == "PollForSourceChanges"
    assert detail["trigger"]["triggerDetail"] == f"Source@{sha[:7]}"
    assert detail["artifactRevisions"][0]["revisionId"] == sha
    assert len(_executions(engine, "polled")) == 2


def test_no_change_starts_nothing(engine: Any, repos_dir: Path) -> None:
    _create(engine, "quiet", PollForSourceChanges="true")
    poller = _poller(engine, repos_dir)
    assert poller.poll_once() == []
    assert poller.poll_once() == []
    assert len(_executions(engine, "quiet")) == 1


@pytest.mark.parametrize("value", ["false", "FALSE"])
def test_poll_for_source_changes_false_is_not_polled(
    engine: Any, repos_dir: Path, value: str
) -> None:
    _create(engine, "manual", PollForSourceChanges=value)
    poller = _poller(engine, repos_dir)
    assert poller.poll_once() == []
    commit(repos_dir / "app", {"app.txt": "v2\n"}, "Ship v2")
    assert poller.poll_once() == []
    assert len(_executions(engine, "manual")) == 1


def test_a_restarted_poller_does_not_rebuild_a_built_commit(engine: Any, repos_dir: Path) -> None:
    _create(engine, "restart")
    assert _poller(engine, repos_dir).poll_once() == []

    commit(repos_dir / "app", {"app.txt": "v2\n"}, "Ship v2")
    started = _poller(engine, repos_dir).poll_once()
    assert len(started) == 1
    _wait_done(engine, "restart", started[0])
    assert _poller(engine, repos_dir).poll_once() == [], "the built commit is already seen"
    assert len(_executions(engine, "restart")) == 2


def test_a_commit_made_while_down_is_built_after_a_restart(engine: Any, repos_dir: Path) -> None:
    _create(engine, "catchup")
    commit(repos_dir / "app", {"app.txt": "v2\n"}, "Ship v2 while the poller is down")
    assert len(_poller(engine, repos_dir).poll_once()) == 1


def test_a_missing_repository_does_not_stop_the_other_pipelines(
    engine: Any, repos_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _create(engine, "broken", repo="nope")
    _create(engine, "good")
    poller = _poller(engine, repos_dir)
    with caplog.at_level(logging.WARNING, logger="bot.engine.source_poller"):
        assert poller.poll_once() == []
        sha = commit(repos_dir / "app", {"app.txt": "v2\n"}, "Ship v2")
        started = poller.poll_once()
    assert len(started) == 1
    detail = _wait_done(engine, "good", started[0])
    assert detail["artifactRevisions"][0]["revisionId"] == sha
    warnings = [r for r in caplog.records if "broken/Source" in r.getMessage()]
    assert len(warnings) == 1, "warned once per (pipeline, action, message)"
    assert len(_executions(engine, "broken")) == 1


def _lease(sessions: SessionFactory, holder_id: str) -> JobLease:
    return JobLease(sessions=sessions, name=LEASE_NAME, holder_id=holder_id, interval_seconds=10.0)


def test_only_the_lease_holder_polls(engine: Any, repos_dir: Path, database_url: str) -> None:
    _create(engine, "leased")
    db = make_engine(database_url)
    try:
        sessions = make_session_factory(db)
        first = _poller(engine, repos_dir, lease=_lease(sessions, "a"))
        second = _poller(engine, repos_dir, lease=_lease(sessions, "b"))
        assert first.run_once() == []
        commit(repos_dir / "app", {"app.txt": "v2\n"}, "Ship v2")
        assert second.run_once() is None, "another process holds the lease"
        first.close()
        started = second.run_once()
        assert started is not None and len(started) == 1
        with sessions() as session:
            lease = lease_store.get_lease(session=session, name=LEASE_NAME)
            assert lease is not None and lease.holder == "b"
        second.close()
    finally:
        db.dispose()


def test_the_scheduler_registers_the_source_poller_job() -> None:
    ran = threading.Event()

    class Stub:
        def run_once(self) -> None:
            ran.set()

        def close(self) -> None:
            pass

    scheduler = start_scheduler(
        notifier=None, interval_seconds=3600, source_poller=cast(SourcePoller, Stub())
    )
    try:
        assert scheduler.get_job(JOB_ID) is None, "no notifier: no notifier job"
        job = scheduler.get_job(SOURCE_POLLER_JOB_ID)
        assert job is not None
        assert job.coalesce and job.max_instances == 1
        assert job.trigger.interval.total_seconds() == 3600
        assert ran.wait(5), "the first poll is at once"
    finally:
        stop_scheduler(scheduler, source_poller=cast(SourcePoller, Stub()))
    assert not scheduler.running


def test_a_commit_already_built_by_a_start_by_hand_is_not_built_again(
    engine: Any, repos_dir: Path
) -> None:
    """Push, then `/pipeline start` at once: the poller saw the push only after the start had
    captured it, and started a second execution of the same commit (found by a new user)."""
    _create(engine, "by-hand")
    poller = _poller(engine, repos_dir)
    assert poller.poll_once() == []
    sha = commit(repos_dir / "app", {"app.txt": "v3\n"}, "Ship v3")
    by_hand = engine.start_pipeline_execution(name="by-hand")["pipelineExecutionId"]
    assert _wait_done(engine, "by-hand", by_hand)["artifactRevisions"][0]["revisionId"] == sha
    assert poller.poll_once() == [], "the commit the start built is seen"
    assert len(_executions(engine, "by-hand")) == 2
    later = commit(repos_dir / "app", {"app.txt": "v4\n"}, "Ship v4")
    started = poller.poll_once()
    assert len(started) == 1, "a commit nobody built still starts one"
    assert _wait_done(engine, "by-hand", started[0])["artifactRevisions"][0]["revisionId"] == later
