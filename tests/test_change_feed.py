"""The embedded engine's change feed: a pipeline's change token moves with every committed
change of what a reader can see (state, executions, declaration), and only then."""

from __future__ import annotations

import itertools
import json
from typing import Any

from tests.helpers import approval_action, commands_action, pipeline, source_action, wait_for


def _visible(engine: Any, name: str) -> str:
    """Everything a notifier reads of a pipeline, as one comparable string."""
    state = engine.get_pipeline_state(name=name)
    state.pop("ResponseMetadata", None)
    executions = engine.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"]
    declaration = engine.get_pipeline(name=name)["pipeline"]
    return json.dumps([state, executions, declaration], sort_keys=True, default=str)


def _built(engine: Any, name: str, execution_id: str) -> bool:
    for stage in engine.get_pipeline_state(name=name)["stageStates"]:
        if stage["stageName"] == "Build":
            latest = stage.get("latestExecution") or {}
            return bool(
                latest.get("pipelineExecutionId") == execution_id
                and latest.get("status") == "Succeeded"
            )
    return False


def _approval_token(engine: Any, name: str) -> str | None:
    for stage in engine.get_pipeline_state(name=name)["stageStates"]:
        for action in stage.get("actionStates", []):
            latest = action.get("latestExecution") or {}
            if latest.get("status") == "InProgress" and latest.get("token"):
                return str(latest["token"])
    return None


def test_token_moves_with_every_visible_change_and_only_then(engine: Any) -> None:
    name = "feed"
    engine.create_pipeline(
        pipeline=pipeline(
            name,
            [
                ("Source", [source_action()]),
                ("Build", [commands_action("Compile", ["true"])]),
                ("Gate", [approval_action("Release")]),
            ],
        )
    )
    other = "bystander"
    engine.create_pipeline(
        pipeline=pipeline(other, [("Source", [source_action()]), ("Gate", [approval_action()])])
    )
    wait_for(lambda: _approval_token(engine, other), what="the bystander to wait")
    wait_for(lambda: _approval_token(engine, name), what="the first execution to wait")
    bystander = engine.change_tokens()[other]

    seen: list[tuple[str, str]] = []

    def observe() -> None:
        seen.append((engine.change_tokens()[name], _visible(engine, name)))

    observe()
    observe()  # reading changes nothing
    assert seen[0][0] == seen[1][0]

    token = _approval_token(engine, name)
    assert token is not None
    engine.put_approval_result(
        pipelineName=name,
        stageName="Gate",
        actionName="Release",
        result={"summary": "ok", "status": "Approved"},
        token=token,
    )
    observe()
    engine.disable_stage_transition(
        pipelineName=name, stageName="Gate", transitionType="Inbound", reason="freeze"
    )
    observe()
    started = engine.start_pipeline_execution(name=name)["pipelineExecutionId"]
    observe()
    wait_for(lambda: _built(engine, name, started), what="the second execution to reach Gate")
    observe()
    engine.stop_pipeline_execution(
        pipelineName=name, pipelineExecutionId=started, abandon=True, reason="enough"
    )
    observe()
    engine.enable_stage_transition(pipelineName=name, stageName="Gate", transitionType="Inbound")
    observe()
    declaration = engine.get_pipeline(name=name)["pipeline"]
    declaration["stages"][1]["actions"][0]["commands"] = ["echo changed"]
    engine.update_pipeline(pipeline=declaration)
    observe()
    observe()

    for (token_a, view_a), (token_b, view_b) in itertools.pairwise(seen):
        if view_a != view_b:
            assert token_a != token_b, "a visible change left the token as it was"
    assert seen[-1][0] == seen[-2][0]
    # Another pipeline's changes never move this one's token, nor the reverse.
    assert engine.change_tokens()[other] == bystander


def test_token_of_a_pipeline_created_again_differs(engine: Any) -> None:
    declaration = pipeline("again", [("Source", [source_action()]), ("Gate", [approval_action()])])
    engine.create_pipeline(pipeline=declaration)
    first = engine.change_tokens()["again"]
    engine.delete_pipeline(name="again")
    assert "again" not in engine.change_tokens()
    engine.create_pipeline(pipeline=declaration)
    assert engine.change_tokens()["again"] != first
