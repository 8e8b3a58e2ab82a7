"""The sandbox's demo pipeline end to end on the embedded engine (SQLite and PostgreSQL):
every Commands action does real work on the demo app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.demo import DEMO_PIPELINE, demo_declaration, ensure_demo_repository, push_change
from tests.helpers import wait_for


@pytest.fixture
def repos_dir(tmp_path: Path) -> Path:
    """The engine fixture's repositories: the demo app, as ``make run`` creates it."""
    repos = tmp_path / "repos"
    ensure_demo_repository(repos)
    return repos


def _status(engine: Any, execution_id: str) -> str:
    return str(
        engine.get_pipeline_execution(pipelineName=DEMO_PIPELINE, pipelineExecutionId=execution_id)[
            "pipelineExecution"
        ]["status"]
    )


def _approval_token(engine: Any, execution_id: str) -> str | None:
    state = engine.get_pipeline_state(name=DEMO_PIPELINE)
    stage = next(s for s in state["stageStates"] if s["stageName"] == "Approval")
    if stage.get("latestExecution", {}).get("pipelineExecutionId") != execution_id:
        return None
    latest = stage["actionStates"][0].get("latestExecution", {})
    return latest.get("token") if latest.get("status") == "InProgress" else None


def _log(engine: Any, execution_id: str, action: str) -> str:
    details = engine.list_action_executions(
        pipelineName=DEMO_PIPELINE, filter={"pipelineExecutionId": execution_id}
    )["actionExecutionDetails"]
    found = [d for d in details if f"{d['stageName']}/{d['actionName']}" == action]
    assert found, action
    return str(engine.get_action_log(actionExecutionId=found[0]["actionExecutionId"]))


def test_the_demo_pipeline_builds_tests_deploys_and_releases(
    engine: Any, tmp_path: Path, repos_dir: Path
) -> None:
    deploy = tmp_path / "deploy"
    engine.create_pipeline(pipeline=demo_declaration(deploy_root=deploy))
    first = engine.list_pipeline_executions(pipelineName=DEMO_PIPELINE)[
        "pipelineExecutionSummaries"
    ][0]["pipelineExecutionId"]
    token = wait_for(lambda: _approval_token(engine, first), what="the approval to wait")
    assert (deploy / "staging" / "index.html").exists()
    assert not (deploy / "production").exists()  # nothing reaches production unapproved
    assert "ok" in _log(engine, first, "Build/BuildAndTest")
    assert "-> about.html" in _log(engine, first, "Staging/LinkCheck")
    engine.put_approval_result(
        pipelineName=DEMO_PIPELINE,
        stageName="Approval",
        actionName="ReleaseToProduction",
        result={"summary": "ship it", "status": "Approved"},
        token=token,
    )
    wait_for(lambda: _status(engine, first) == "Succeeded", what="the release")
    released = (deploy / "production" / "index.html").read_text()
    assert "Hello from pipebot" in released and "<footer>version " in released

    sha = push_change(repos_dir, message="Say hello to newcomers")
    second = engine.start_pipeline_execution(name=DEMO_PIPELINE)["pipelineExecutionId"]
    wait_for(lambda: _approval_token(engine, second), what="the second approval")
    staged = (deploy / "staging" / "index.html").read_text()
    assert "Say hello to newcomers" in staged and f"version {sha}" in staged
    assert "Say hello to newcomers" not in (deploy / "production" / "index.html").read_text()
