"""Every command renderer on real responses of the embedded engine: a pipeline with an
approval waiting, an execution in front of it and a disabled transition; another whose
build failed with a long log."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.slack import ids
from bot.slack.execution import execution_blocks
from bot.slack.history import history_blocks, list_blocks
from bot.slack.home import home_view
from tests.blockcheck import (
    check_message,
    check_view,
    refs,
    release_declaration,
    render_status,
    texts,
)
from tests.helpers import commands_action, pipeline, source_action, wait_for
from tests.shapecheck import assert_output_shape

# --------------------------------------------------------------------------- the real engine


def test_real_engine_responses_render(engine: Any, tmp_path: Path) -> None:
    """A pipeline with an approval waiting, an execution in front of it and a disabled
    transition; another whose build failed with a long log: every renderer on real data."""
    gates = tmp_path / "gates"
    gates.mkdir()
    engine.create_pipeline(pipeline=release_declaration())
    noisy = 'for i in $(seq 1 800); do echo "log line $i <&> \\`\\`\\`"; done'
    engine.create_pipeline(
        pipeline=pipeline(
            "broken",
            [
                ("Source", [source_action()]),
                ("Build", [commands_action("Unit", [noisy, "exit 3"])]),
            ],
        )
    )

    def state_of(name: str) -> dict[str, Any]:
        response = engine.get_pipeline_state(name=name)
        assert_output_shape("GetPipelineState", response)
        return dict(response)

    def stage(name: str, stage_name: str) -> dict[str, Any]:
        return next(s for s in state_of(name)["stageStates"] if s["stageName"] == stage_name)

    def token() -> str | None:
        latest = stage("release", "Gate")["actionStates"][0].get("latestExecution") or {}
        return latest.get("token")

    wait_for(token, timeout=30, what="the approval to wait")
    second = engine.start_pipeline_execution(name="release")["pipelineExecutionId"]
    wait_for(
        lambda: stage("release", "Gate").get("inboundExecutions"),
        timeout=30,
        what="an inbound execution at Gate",
    )
    engine.disable_stage_transition(
        pipelineName="release", stageName="Deploy", transitionType="Inbound", reason="Freeze"
    )
    wait_for(
        lambda: stage("broken", "Build").get("latestExecution", {}).get("status") == "Failed",
        timeout=30,
        what="the broken build to fail",
    )

    def executions_of(name: str) -> list[dict[str, Any]]:
        response = engine.list_pipeline_executions(pipelineName=name, maxResults=5)
        assert_output_shape("ListPipelineExecutions", response)
        return list(response["pipelineExecutionSummaries"])

    now = datetime.now(UTC)
    release = render_status(state_of("release"), executions_of("release"))
    text = texts(release)
    assert "⏳ *Approval waiting:* Gate / Approve" in text
    assert f"⏸ _Waiting to enter Gate:_ `{second[:8]}`" in text
    assert "⛔ _Transition into Deploy disabled_" in text and "“Freeze”" in text
    assert re.search(r"✅ Source · Succeeded .* · `[0-9a-f]{7}` Initial commit", text)
    assert len(refs(release, ids.APPROVE)) == 1
    broken = render_status(state_of("broken"), executions_of("broken"))
    assert refs(broken, ids.RETRY_FAILED)[0].stage == "Build"
    assert "exited with status 3" in texts(broken)

    pipelines = engine.list_pipelines()
    assert_output_shape("ListPipelines", pipelines)
    rows: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    for summary in pipelines["pipelines"]:
        latest = executions_of(summary["name"])
        rows.append((summary, latest[0] if latest else None))
    check_message(list_blocks(pipelines=rows, now=now))
    check_message(history_blocks(pipeline="release", executions=executions_of("release")))

    failed_id = executions_of("broken")[0]["pipelineExecutionId"]
    execution = engine.get_pipeline_execution(pipelineName="broken", pipelineExecutionId=failed_id)
    assert_output_shape("GetPipelineExecution", execution)
    actions = engine.list_action_executions(
        pipelineName="broken", filter={"pipelineExecutionId": failed_id}
    )
    assert_output_shape("ListActionExecutions", actions)
    unit = next(a for a in actions["actionExecutionDetails"] if a["actionName"] == "Unit")
    log = engine.get_action_log(actionExecutionId=unit["actionExecutionId"])
    blocks = check_message(
        execution_blocks(
            pipeline="broken",
            execution=execution["pipelineExecution"],
            actions=actions["actionExecutionDetails"],
            log_tail=log,
        )
    )
    assert "log line 800 &lt;&amp;&gt;" in blocks[-1]["text"]["text"]
    assert "(truncated; full log:" in blocks[-1]["text"]["text"]

    gate = stage("release", "Gate")
    approvals = [
        (
            "release",
            "Gate",
            "Approve",
            gate["latestExecution"]["pipelineExecutionId"],
            gate["actionStates"][0]["latestExecution"]["lastStatusChange"],
        )
    ]
    check_view(home_view(pipelines=rows, approvals=approvals, now=now, trial_mode=False))
