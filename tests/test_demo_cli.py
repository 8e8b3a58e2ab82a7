"""``pipebot demo`` (issue 12, item 13): ``--approve ask`` never approves the production gate
behind the user's back, and on a terminal it asks once the printout shows where the
execution stands."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.demo import (
    DEMO_PIPELINE,
    ensure_demo_projects,
    ensure_demo_repository,
    refuse_ask_without_terminal,
    run_demo,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repos_dir(tmp_path: Path) -> Path:
    """The engine fixture's repositories: the demo app, and its CodeBuild projects in the
    engine fixture's data directory (without the demo's pause)."""
    repos = tmp_path / "repos"
    ensure_demo_repository(repos)
    ensure_demo_projects(tmp_path / "data" / "codebuild-projects.yml", pause_seconds=0)
    return repos


def _production(engine: Any) -> Path:
    return Path(engine.data_dir) / "codedeploy/MyDemoApplication/Production/var/www/html"


def _environment(data_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "PIPEBOT_", "DATABASE_URL", "AWS_"))
    }
    env.update({"PIPEBOT_DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING"})
    return env


def test_ask_without_a_terminal_is_refused_before_anything_starts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "bot", "demo"],  # --approve ask is the default
        cwd=REPO,
        env=_environment(data_dir),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "--approve ask needs a terminal" in result.stderr
    assert "--approve yes" in result.stderr and "--approve no" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Approved" not in result.stdout
    assert not (data_dir / "repos").exists() and not (data_dir / "pipebot.db").exists()


def test_the_refusal_names_the_values_to_use() -> None:
    assert refuse_ask_without_terminal("ask", interactive=True) is None
    assert refuse_ask_without_terminal("yes", interactive=False) is None
    assert refuse_ask_without_terminal("no", interactive=False) is None
    refused = refuse_ask_without_terminal("ask", interactive=False)
    assert refused is not None and "--approve yes" in refused
    wrong = refuse_ask_without_terminal("maybe", interactive=True)
    assert wrong is not None and "ask, yes, no" in wrong


def test_run_demo_without_a_terminal_starts_nothing(engine: Any, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = run_demo(engine, approve="ask", out=out, err=err, interactive=False)
    assert code == 2 and "--approve yes" in err.getvalue() and out.getvalue() == ""
    assert engine.list_pipelines()["pipelines"] == []


def _last_printout(text: str) -> str:
    """The stages as last printed (each printout starts with ``[HH:MM:SS] status``)."""
    blocks = [b for b in text.split("\n[") if b.strip()]
    return blocks[-1]


def test_on_a_terminal_the_question_comes_after_the_stages_as_they_stand(
    engine: Any, tmp_path: Path
) -> None:
    out = io.StringIO()
    asked: list[tuple[str, str]] = []

    def ask(question: str) -> str:
        asked.append((question, _last_printout(out.getvalue())))
        return "y"

    code = run_demo(engine, approve="ask", out=out, interactive=True, ask=ask)
    assert code == 0, out.getvalue()
    assert len(asked) == 1
    question, shown = asked[0]
    assert "Approval/ReleaseToProduction is waiting" in question
    # Each stage line: two spaces, its mark, a space, its name in 12 columns, its actions.
    lines = {line[4:16].strip(): line for line in shown.splitlines()[1:] if line.strip()}
    assert [lines[s][2] for s in ("Source", "Build", "Staging")] == ["✓", "✓", "✓"], shown
    assert "ReleaseToProduction waiting for approval" in lines["Approval"], shown
    assert lines["Production"][2] == " ", shown
    assert "-> Approved" in out.getvalue()
    assert "Hello from the seed pipeline" in (_production(engine) / "index.html").read_text()
    summaries = engine.list_pipeline_executions(pipelineName=DEMO_PIPELINE)
    assert summaries["pipelineExecutionSummaries"][0]["status"] == "Succeeded"


def test_approve_no_rejects_at_once_and_says_so(engine: Any, tmp_path: Path) -> None:
    out = io.StringIO()

    def never(question: str) -> str:
        raise AssertionError(f"asked {question!r} with --approve no")

    code = run_demo(engine, approve="no", out=out, interactive=False, ask=never)
    assert code == 1
    assert "-> Rejected" in out.getvalue()
    assert not _production(engine).exists()
