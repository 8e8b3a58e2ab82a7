"""The sandbox's demo pipeline, the seed pipeline (bot/seed), end to end on the embedded engine
(SQLite and PostgreSQL): CodeBuild builds and tests the demo app, CodeDeploy deploys it to the
local staging and production instances."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.demo import (
    DEMO_PIPELINE,
    demo_declaration,
    ensure_demo_projects,
    ensure_demo_repository,
    push_change,
    seed_declaration,
)
from bot.engine.declaration import validate_declaration
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


def _site(engine: Any, group: str) -> Path:
    """The demo's web root on the local CodeDeploy instance of ``group``."""
    return Path(engine.data_dir) / "codedeploy" / "MyDemoApplication" / group / "var/www/html"


def test_the_seed_pipeline_is_valid_for_aws_as_written_and_the_demo_is_it() -> None:
    seed = seed_declaration()
    validate_declaration(seed, local=False)
    validate_declaration(seed, local=True)
    assert {**demo_declaration(), "name": seed["name"]} == seed


def test_the_demo_pipeline_builds_tests_deploys_and_releases(
    engine: Any, tmp_path: Path, repos_dir: Path
) -> None:
    ensure_demo_projects(Path(engine.data_dir) / "codebuild-projects.yml", pause_seconds=0)
    engine.create_pipeline(pipeline=demo_declaration())
    first = engine.list_pipeline_executions(pipelineName=DEMO_PIPELINE)[
        "pipelineExecutionSummaries"
    ][0]["pipelineExecutionId"]
    token = wait_for(lambda: _approval_token(engine, first), what="the approval to wait")
    assert (_site(engine, "Staging") / "index.html").exists()
    assert not _site(engine, "Production").exists()  # nothing reaches production unapproved
    assert "2 tests, 0 failed" in _log(engine, first, "Build/UnitTests")
    assert "ok index.html -> about.html" in _log(engine, first, "Staging/LinkCheck")
    assert "[CodeDeploy] LifecycleEvent - ValidateService" in _log(engine, first, "Staging/Deploy")
    engine.put_approval_result(
        pipelineName=DEMO_PIPELINE,
        stageName="Approval",
        actionName="ReleaseToProduction",
        result={"summary": "ship it", "status": "Approved"},
        token=token,
    )
    wait_for(lambda: _status(engine, first) == "Succeeded", what="the release")
    released = (_site(engine, "Production") / "index.html").read_text()
    assert "Hello from the seed pipeline" in released and "<footer>release-" in released

    sha = push_change(repos_dir, message="Say hello to newcomers")
    second = engine.start_pipeline_execution(name=DEMO_PIPELINE)["pipelineExecutionId"]
    wait_for(lambda: _approval_token(engine, second), what="the second approval")
    staged = (_site(engine, "Staging") / "index.html").read_text()
    assert "Say hello to newcomers" in staged and f"release-{sha[:8]}" in staged
    assert "Say hello to newcomers" not in (_site(engine, "Production") / "index.html").read_text()
