"""The pipeline list and the execution history (``bot/slack/history.py``)."""

from __future__ import annotations

from bot.slack.history import history_blocks, list_blocks
from tests.blockcheck import (
    E1,
    E2,
    E3,
    EXECUTION_STATUSES,
    NOW,
    ago,
    check_message,
    execution_summary,
    pipeline_summary,
    snapshot,
    texts,
)

# --------------------------------------------------------------------------- list


def test_list_shows_each_pipeline_with_its_latest_execution() -> None:
    rows = [
        (pipeline_summary("never-run"), None),
        *[
            (pipeline_summary(f"p-{status.lower()}", 2), execution_summary(E1, status))
            for status in EXECUTION_STATUSES
        ],
    ]
    blocks = check_message(list_blocks(pipelines=rows, now=NOW))
    text = texts(blocks)
    assert blocks[0]["text"]["text"] == "Pipelines (8)"
    assert "⚪ *never-run* v1 · never run" in text
    assert "✅ *p-succeeded* v2 · Succeeded 20m ago · `11111111`" in text
    assert "🔄 *p-inprogress* v2 · In progress · started 30m ago · `11111111`" in text
    assert "↷ *p-superseded* v2 · Superseded 20m ago" in text
    snapshot("list", blocks)


def test_list_without_pipelines_says_how_to_create_one() -> None:
    blocks = check_message(list_blocks(pipelines=[], now=NOW))
    assert "No pipelines yet" in texts(blocks)
    assert "`/pipeline create`" in texts(blocks)
    custom = check_message(list_blocks(pipelines=[], now=NOW, command="/deploy"))
    assert "`/deploy create`" in texts(custom)


def test_list_of_200_pipelines_stays_within_limits() -> None:
    rows = [
        (pipeline_summary(f"{i:03d}-" + "&" * 60), execution_summary(E1, "Succeeded"))
        for i in range(200)
    ]
    blocks = check_message(list_blocks(pipelines=rows, now=NOW))
    text = texts(blocks)
    assert "*000-&amp;" in text
    shown = text.count("· Succeeded")
    assert 0 < shown < 200
    assert f"…and {200 - shown} more pipelines" in text
    short = [(pipeline_summary(f"app-{i:03d}"), None) for i in range(200)]
    blocks = check_message(list_blocks(pipelines=short, now=NOW))
    assert texts(blocks).count("never run") == 200  # short lines all fit
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")


# --------------------------------------------------------------------------- history


def test_history_shows_id_status_trigger_revision_times_and_duration() -> None:
    executions = [
        execution_summary(E3, "InProgress", started=ago(minutes=2), updated=ago(minutes=1)),
        execution_summary(
            E2,
            "Stopped",
            started=ago(hours=2),
            updated=ago(hours=1, minutes=45),
            stopTrigger={"reason": "wrong <branch>"},
        ),
        execution_summary(
            E1,
            "Succeeded",
            started=ago(days=1, minutes=4, seconds=12),
            updated=ago(days=1),
            trigger="CreatePipeline",
            detail="",
        ),
    ]
    blocks = check_message(history_blocks(pipeline="web-app", executions=executions))
    text = texts(blocks)
    assert blocks[0]["text"]["text"] == "History · web-app"
    assert f"`{E1}`" in text and "✅ *11111111* · Succeeded · trigger CreatePipeline" in text
    assert "`0123456` Fix the login redirect" in text
    assert "took 4m 12s" in text and "ended <!date^" in text
    assert "🔄 *33333333* · In progress" in text and "still running" in text
    assert "Stop reason: wrong &lt;branch&gt;" in text
    # On AWS the trigger detail of a start is the caller's IAM identity: said as such.
    assert "started by AWS caller `arn:aws:iam::000000000000:user/bob`" in text
    snapshot("history", blocks)


def test_history_empty_and_huge() -> None:
    blocks = check_message(history_blocks(pipeline="a<b>", executions=[]))
    assert "*a&lt;b&gt;* has no executions yet." in texts(blocks)
    huge = "<&>" * 4000
    executions = [
        execution_summary(
            f"{i:08d}-aaaa-4bbb-8ccc-000000000000",
            EXECUTION_STATUSES[i % 7],
            message=huge,
            statusSummary=huge,
            detail=huge,
            check=False,
        )
        for i in range(100)
    ]
    blocks = check_message(history_blocks(pipeline="app", executions=executions))
    assert "older executions not shown" in texts(blocks)
