"""Rollback executions and the executions they roll back, as the channel shows them
(issue 13): through the real engine, the notifier and the recording fake Slack, on SQLite
and PostgreSQL.

* A rollback execution's parent shows the one stage it rolls back, with its own status.
* An execution that fails and is rolled back automatically keeps its failure (the stage
  Failed, the usual failure reply) and says in its thread that it was rolled back.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from bot.notify.notifier import Notifier
from bot.notify.snapshot import (
    WAITING_TO_ENTER,
    execution_snapshot,
    needs_action_details,
    snapshot_events,
)
from bot.ops.pipeline_ops import PipelineOps
from bot.slack.notifications import parent_message
from storage import notify_store
from storage.db import make_engine, make_session_factory, transaction
from tests.blockcheck import texts
from tests.helpers import commands_action, commit, pipeline, source_action, wait_for
from tests.shapecheck import assert_output_shape
from tests.slack_bot import text_of
from tests.test_notifier import Clock, Harness
from tests.test_slack_aws import (
    EXECUTION,
    OLDER_EXECUTION,
    SHA,
    action,
    execution_summary,
    stage,
    state_response,
)
from tests.test_slack_aws import source as source_state


@pytest.fixture
def harness(engine: Any, database_url: str, fake: Any) -> Iterator[Harness]:
    made = Harness(engine, database_url, fake)
    yield made
    made.db.dispose()


def three_stages(**deploy_extra: Any) -> dict[str, Any]:
    """Source, Build, Deploy; Deploy fails once app.txt says v2 (the repository starts at v1)."""
    declaration = pipeline(
        "web",
        [
            ("Source", [source_action()]),
            ("Build", [commands_action("Build", ["cat app.txt"])]),
            ("Deploy", [commands_action("Deploy", ["grep -q v1 app.txt"])]),
        ],
    )
    declaration["stages"][2].update(deploy_extra)
    return declaration


def summaries(h: Harness) -> list[dict[str, Any]]:
    return list(h.engine.list_pipeline_executions(pipelineName="web")["pipelineExecutionSummaries"])


def parent_texts(h: Harness, execution_id: str) -> list[str]:
    """Every drawing of an execution's parent message (its post, then its updates), in order."""
    with h.sessions() as session:
        rows = notify_store.posted_executions(session=session, execution_ids=[execution_id])
    row = rows.get(("CALL", execution_id))
    assert row is not None and row.message_ts, f"no parent for {execution_id}"
    post = [
        c
        for c in h.posts("CALL", thread=False)
        if c.response and c.response.get("ts") == row.message_ts
    ]
    return [texts(c.params["blocks"]) for c in [*post, *h.updates("CALL", row.message_ts)]]


def thread_texts(h: Harness, execution_id: str) -> list[str]:
    with h.sessions() as session:
        rows = notify_store.posted_executions(session=session, execution_ids=[execution_id])
    row = rows[("CALL", execution_id)]
    return [
        text_of(c) for c in h.posts("CALL", thread=True) if c.params["thread_ts"] == row.message_ts
    ]


def wait_quiet(h: Harness, notifier: Any, until: Any, what: str) -> None:
    h.pump(notifier, lambda: bool(until()) and not h.pending(), what)


def test_manual_rollback_parent_shows_only_the_stage_it_rolls_back(
    harness: Harness, repos_dir: Path
) -> None:
    h = harness
    h.engine.create_pipeline(pipeline=three_stages())
    h.subscribe("web", "CALL")
    notifier = h.notifier()
    h.pump(notifier, lambda: h.execution_status() == "Succeeded", "the first execution")
    first = summaries(h)[0]["pipelineExecutionId"]
    commit(repos_dir / "app", {"app.txt": "v1 again\n"}, "Second release")
    h.engine.start_pipeline_execution(name="web")
    h.pump(
        notifier,
        lambda: len([s for s in summaries(h) if s["status"] == "Succeeded"]) == 2,
        "the second execution",
    )
    rolled = h.engine.rollback_stage(
        pipelineName="web", stageName="Deploy", targetPipelineExecutionId=first
    )["pipelineExecutionId"]
    wait_quiet(
        h,
        notifier,
        lambda: (
            next(s for s in summaries(h) if s["pipelineExecutionId"] == rolled)["status"]
            == "Succeeded"
        ),
        "the rollback",
    )
    h.pump(notifier, lambda: not h.pending(), "the last messages")
    drawn = parent_texts(h, rolled)
    last = drawn[-1]
    assert f"Rollback of Deploy* to `{first[:8]}`" in last, last
    assert "✅ *Deploy* · Succeeded" in last, last
    for text in drawn:  # never a stage the rollback does not run, nor "Pending"/"Not reached"
        for other in ("*Source*", "*Build*", "Not reached"):
            assert other not in text, text
    thread = thread_texts(h, rolled)
    assert any(f"*Deploy* rolled back to `{first[:8]}`" in t for t in thread), thread
    assert not any("Stage failed" in t for t in thread), thread


def test_automatic_rollback_keeps_the_failure_on_the_failed_execution(
    harness: Harness, repos_dir: Path
) -> None:
    h = harness
    h.engine.create_pipeline(pipeline=three_stages(onFailure={"result": "ROLLBACK"}))
    h.subscribe("web", "CALL")
    notifier = h.notifier()
    h.pump(notifier, lambda: h.execution_status() == "Succeeded", "the first execution")
    first = summaries(h)[0]["pipelineExecutionId"]
    commit(repos_dir / "app", {"app.txt": "v2\n"}, "Break the deploy")
    failed = h.engine.start_pipeline_execution(name="web")["pipelineExecutionId"]

    def rollback_done() -> str | None:
        for s in summaries(h):
            if s.get("executionType") == "ROLLBACK" and s["status"] == "Succeeded":
                return str(s["pipelineExecutionId"])
        return None

    # The engine runs without the notifier: the rollback takes Deploy before it reads.
    rolled = wait_for(rollback_done, timeout=60, what="the automatic rollback")
    wait_quiet(h, notifier, lambda: bool(thread_texts_or_none(h, rolled)), "the threads")
    h.pump(notifier, lambda: not h.pending(), "the last messages")

    failed_parent = parent_texts(h, failed)[-1]
    assert "❌ *Deploy* · Failed" in failed_parent, failed_parent
    assert "✅ *Source* · Succeeded" in failed_parent and "✅ *Build* · Succeeded" in failed_parent
    assert "Not reached" not in failed_parent
    failed_thread = thread_texts(h, failed)
    assert any("Stage failed" in t for t in failed_thread), failed_thread
    assert any(
        f"*Deploy* rolled back automatically to `{first[:8]}`" in t
        and f"rollback execution `{rolled[:8]}`" in t
        for t in failed_thread
    ), failed_thread

    rollback_parent = parent_texts(h, rolled)[-1]
    assert f"Rollback of Deploy* to `{first[:8]}`" in rollback_parent, rollback_parent
    assert "✅ *Deploy* · Succeeded" in rollback_parent
    assert "*Source*" not in rollback_parent and "*Build*" not in rollback_parent
    rollback_thread = thread_texts(h, rolled)
    assert any(
        f"*Deploy* rolled back automatically to `{first[:8]}`" in t for t in rollback_thread
    ), rollback_thread
    assert not any("Stage failed" in t for t in rollback_thread), rollback_thread


def thread_texts_or_none(h: Harness, execution_id: str) -> list[str]:
    with h.sessions() as session:
        rows = notify_store.posted_executions(session=session, execution_ids=[execution_id])
    if ("CALL", execution_id) not in rows or not rows[("CALL", execution_id)].message_ts:
        return []
    return thread_texts(h, execution_id)


# =========================================================================== AWS backend

ROLLED = "5d1e7c2a-9b3f-4e6d-8a1c-2f4b6d8e0a13"


def test_aws_failed_execution_rolled_back_before_the_read_keeps_its_failure(
    database_url: str, fake: Any
) -> None:
    """On AWS (boto3 with botocore's Stubber): GetPipelineState shows Deploy's rollback only;
    the failed execution's Deploy comes from ListActionExecutions filtered on it."""
    failed = "3137f7cb-7cf7-4c6a-9f5b-7c1f4d0e6a21"
    now = datetime.now(UTC).replace(microsecond=0)
    t1, t2, t3 = (
        now + timedelta(seconds=5),
        now + timedelta(seconds=40),
        now + timedelta(seconds=90),
    )
    state = state_response(
        [
            stage("Source", "Succeeded", [source_state()], execution=failed),
            stage(
                "Deploy",
                "Succeeded",
                [action("Deploy", "Succeeded", lastStatusChange=t3)],
                execution=ROLLED,
            ),
        ]
    )
    state["stageStates"][1]["latestExecution"]["type"] = "ROLLBACK"
    failed_summary = {
        **execution_summary(failed, "Failed"),
        "startTime": t1,
        "lastUpdateTime": t2,
        "statusSummary": 'Stage "Deploy" failed: Deployment d-XYZ failed',
    }
    rollback_summary = {
        **execution_summary(ROLLED, "Succeeded"),
        "startTime": t2,
        "lastUpdateTime": t3,
        "executionType": "ROLLBACK",
        "rollbackMetadata": {"rollbackTargetPipelineExecutionId": OLDER_EXECUTION},
        "trigger": {"triggerType": "AutomatedRollback", "triggerDetail": failed},
    }
    listed = {"pipelineExecutionSummaries": [rollback_summary, failed_summary]}
    details = {
        "actionExecutionDetails": [
            {
                "pipelineExecutionId": failed,
                "actionExecutionId": "deploy-5f2c1a0e",
                "pipelineVersion": 3,
                "stageName": "Deploy",
                "actionName": "Deploy",
                "startTime": t1 + timedelta(seconds=10),
                "lastUpdateTime": t2,
                "status": "Failed",
                "input": {
                    "actionTypeId": {
                        "category": "Deploy",
                        "owner": "AWS",
                        "provider": "CodeDeploy",
                        "version": "1",
                    }
                },
                "output": {
                    "executionResult": {
                        "externalExecutionId": "d-XYZ",
                        "externalExecutionSummary": "Deployment d-XYZ failed: 2 of 4 instances",
                    }
                },
            },
            {
                "pipelineExecutionId": failed,
                "actionExecutionId": "source-5f2c1a0e",
                "pipelineVersion": 3,
                "stageName": "Source",
                "actionName": "Source",
                "startTime": t1,
                "lastUpdateTime": t1,
                "status": "Succeeded",
                "output": {"executionResult": {"externalExecutionId": SHA}},
            },
        ]
    }
    assert_output_shape("GetPipelineState", state)
    assert_output_shape("ListPipelineExecutions", listed)
    assert_output_shape("ListActionExecutions", details)

    client = boto3.client(
        "codepipeline",
        region_name="us-east-1",
        aws_access_key_id="AKIAFAKEFAKEFAKEFAKE",
        aws_secret_access_key="fake-secret-key-for-stubber-only-000000",
    )
    stub = Stubber(client)
    stub.add_response("list_pipeline_executions", listed, {"pipelineName": "web", "maxResults": 5})
    stub.add_response("get_pipeline_state", state, {"name": "web"})
    stub.add_response(
        "list_action_executions",
        details,
        {"pipelineName": "web", "filter": {"pipelineExecutionId": failed}},
    )
    db = make_engine(database_url)
    sessions = make_session_factory(db)
    try:
        with transaction(sessions) as session:
            notify_store.subscribe(
                session=session, pipeline="web", channel_id="CALL", created_by="U1"
            )
        with stub:
            clock = Clock()
            notifier = Notifier(
                ops=PipelineOps(client=client, local=False),
                sessions=sessions,
                web_client=fake.web_client(),
                holder_id="aws",
                clock=clock,
                sleep=clock.sleep,
                interval_seconds=30.0,  # one run reads once and sends it all (fake time)
            )
            notifier.run_once()
            stub.assert_no_pending_responses()
            notifier.close()
    finally:
        db.dispose()
    posted = [c for c in fake.calls_to("chat.postMessage") if c.ok]
    parents = {
        c.response["ts"]: texts(c.params["blocks"])
        for c in posted
        if not c.params.get("thread_ts") and c.response
    }
    failed_ts = next(ts for ts, text in parents.items() if text.startswith(f"web · {failed[:8]}"))
    rolled_ts = next(ts for ts, text in parents.items() if text.startswith(f"web · {ROLLED[:8]}"))
    assert "❌ *Deploy* · Failed" in parents[failed_ts], parents[failed_ts]
    assert "✅ *Source* · Succeeded" in parents[failed_ts]
    assert "Rollback of Deploy* to `0b5a6f2e`" in parents[rolled_ts]
    assert "*Source*" not in parents[rolled_ts]
    in_failed = [text_of(c) for c in posted if c.params.get("thread_ts") == failed_ts]
    in_rolled = [text_of(c) for c in posted if c.params.get("thread_ts") == rolled_ts]
    assert any("Stage failed" in t and "2 of 4 instances" in t for t in in_failed), in_failed
    assert any(
        "rolled back automatically to `0b5a6f2e` by the rollback execution `5d1e7c2a`" in t
        for t in in_failed
    ), in_failed
    assert not any("Stage failed" in t for t in in_rolled), in_rolled
    assert any("rolled back automatically to `0b5a6f2e`" in t for t in in_rolled), in_rolled


# =========================================================================== snapshots


def _rollback_summary(status: str) -> dict[str, Any]:
    return {
        **execution_summary(ROLLED, status),
        "executionType": "ROLLBACK",
        "rollbackMetadata": {"rollbackTargetPipelineExecutionId": OLDER_EXECUTION},
        "trigger": {"triggerType": "ManualRollback", "triggerDetail": "arn:aws:iam::1:user/bob"},
    }


def _three(deploy: dict[str, Any], *, inbound: str | None = None) -> dict[str, Any]:
    """Source and Build last run by EXECUTION (a newer standard run), Deploy as given."""
    stages = [
        stage("Source", "Succeeded", [source_state()], execution=EXECUTION),
        stage("Build", "Succeeded", [action("Build", "Succeeded")], execution=EXECUTION),
        deploy,
    ]
    if inbound:
        stages[2]["inboundExecutions"] = [{"pipelineExecutionId": inbound, "status": "InProgress"}]
    state = state_response(stages)
    assert_output_shape("GetPipelineState", state)
    return state


def _lines(snapshot: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(s["name"], s["status"]) for s in snapshot["stages"]]


def test_rollback_snapshot_shows_its_stage_only_as_it_moves() -> None:
    waiting = _three(
        stage("Deploy", "Succeeded", [action("Deploy", "Succeeded")], execution=EXECUTION),
        inbound=ROLLED,
    )
    first = execution_snapshot(
        pipeline="web", state=waiting, summary=_rollback_summary("InProgress"), started_by=None
    )
    assert _lines(first) == [("Deploy", WAITING_TO_ENTER)]
    assert first["rollback"] == {"target": OLDER_EXECUTION, "stage": "Deploy"}

    running = _three(
        stage("Deploy", "InProgress", [action("Deploy", "InProgress")], execution=ROLLED)
    )
    running["stageStates"][2]["latestExecution"]["type"] = "ROLLBACK"
    second = execution_snapshot(
        pipeline="web",
        state=running,
        summary=_rollback_summary("InProgress"),
        started_by=None,
        previous=first,
    )
    assert _lines(second) == [("Deploy", "InProgress")]
    drawn = texts(parent_message(snapshot=second, now=datetime.now(UTC))["blocks"])
    assert "🔄 *Deploy* · In progress" in drawn
    assert "Source" not in drawn and "Build" not in drawn and "Pending" not in drawn

    failed = _three(
        stage(
            "Deploy",
            "Failed",
            [action("Deploy", "Failed", errorDetails={"code": "JobFailed", "message": "boom"})],
            execution=ROLLED,
        )
    )
    third = execution_snapshot(
        pipeline="web",
        state=failed,
        summary=_rollback_summary("Failed"),
        started_by=None,
        previous=second,
    )
    assert _lines(third) == [("Deploy", "Failed")]
    assert [e.kind for e in snapshot_events(before=second, after=third)] == ["failed", "finished"]

    # A newer execution has run Deploy since: the status seen stays.
    taken = _three(
        stage("Deploy", "Succeeded", [action("Deploy", "Succeeded")], execution=EXECUTION)
    )
    fourth = execution_snapshot(
        pipeline="web",
        state=taken,
        summary=_rollback_summary("Failed"),
        started_by=None,
        previous=third,
    )
    assert _lines(fourth) == [("Deploy", "Failed")]
    assert not needs_action_details(fourth, third)


def test_finished_execution_whose_stages_were_all_taken_reads_its_action_executions() -> None:
    """A fast re-run (QUEUED mode, say) ran every stage of OLDER_EXECUTION again before the
    notifier read it: the state shows none of OLDER_EXECUTION's; its action executions do."""
    state = _three(
        stage("Deploy", "InProgress", [action("Deploy", "InProgress")], execution=EXECUTION)
    )
    summary = execution_summary(OLDER_EXECUTION, "Succeeded")
    bare = execution_snapshot(pipeline="web", state=state, summary=summary, started_by=None)
    assert _lines(bare) == [("Source", None), ("Build", None), ("Deploy", None)]
    assert needs_action_details(bare, None)
    details = [
        {
            "pipelineExecutionId": OLDER_EXECUTION,
            "actionExecutionId": f"{name.lower()}-0001",
            "stageName": name,
            "actionName": name,
            "startTime": datetime(2025, 5, 6, 9, i, tzinfo=UTC),
            "lastUpdateTime": datetime(2025, 5, 6, 9, i, 30, tzinfo=UTC),
            "status": "Succeeded",
        }
        for i, name in enumerate(("Source", "Build", "Deploy"))
    ]
    assert_output_shape("ListActionExecutions", {"actionExecutionDetails": details})
    full = execution_snapshot(
        pipeline="web", state=state, summary=summary, started_by=None, action_details=details
    )
    assert _lines(full) == [
        ("Source", "Succeeded"),
        ("Build", "Succeeded"),
        ("Deploy", "Succeeded"),
    ]
    assert not needs_action_details(full, None)
    # Standard executions still in progress are not read from their action executions.
    running = execution_snapshot(
        pipeline="web",
        state=state,
        summary=execution_summary(EXECUTION, "InProgress"),
        started_by=None,
    )
    assert not needs_action_details(running, None)


def test_queued_rerun_that_took_every_stage_leaves_the_first_execution_its_statuses(
    harness: Harness,
) -> None:
    """QUEUED mode, two executions run back to back before the notifier reads: the state
    shows the second one in every stage; the first still shows its own (Succeeded)."""
    h = harness
    declaration = three_stages()
    declaration["executionMode"] = "QUEUED"
    h.engine.create_pipeline(pipeline=declaration)
    wait_for(
        lambda: bool(summaries(h)) and summaries(h)[0]["status"] == "Succeeded",
        timeout=60,
        what="the first execution",
    )
    h.subscribe("web", "CALL")  # after the first: it is history; the next two are news
    one = h.engine.start_pipeline_execution(name="web")["pipelineExecutionId"]
    two = h.engine.start_pipeline_execution(name="web")["pipelineExecutionId"]
    wait_for(
        lambda: all(
            s["status"] == "Succeeded"
            for s in summaries(h)
            if s["pipelineExecutionId"] in (one, two)
        ),
        timeout=60,
        what="both executions",
    )
    state = h.engine.get_pipeline_state(name="web")
    assert all(s["latestExecution"]["pipelineExecutionId"] == two for s in state["stageStates"])
    notifier = h.notifier()
    h.pump(notifier, lambda: bool(thread_texts_or_none(h, one)) and not h.pending(), "the parents")
    for execution in (one, two):
        drawn = parent_texts(h, execution)[-1]
        for name in ("Source", "Build", "Deploy"):
            assert f"✅ *{name}* · Succeeded" in drawn, drawn
        assert "Not reached" not in drawn


def test_superseded_execution_never_seen_reads_its_action_executions() -> None:
    state = _three(
        stage("Deploy", "InProgress", [action("Deploy", "InProgress")], execution=EXECUTION)
    )
    summary = execution_summary(OLDER_EXECUTION, "Superseded")
    bare = execution_snapshot(pipeline="web", state=state, summary=summary, started_by=None)
    assert needs_action_details(bare, None)
    details = [
        {
            "pipelineExecutionId": OLDER_EXECUTION,
            "actionExecutionId": "source-0001",
            "stageName": "Source",
            "actionName": "Source",
            "startTime": datetime(2025, 5, 6, 9, 0, tzinfo=UTC),
            "lastUpdateTime": datetime(2025, 5, 6, 9, 1, tzinfo=UTC),
            "status": "Succeeded",
        }
    ]
    full = execution_snapshot(
        pipeline="web", state=state, summary=summary, started_by=None, action_details=details
    )
    assert _lines(full) == [("Source", "Succeeded"), ("Build", None), ("Deploy", None)]
    assert not needs_action_details(full, None)
