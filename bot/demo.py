"""The demo: the seed pipeline (``bot/seed``) and its repository, on the embedded engine.

The seed pipeline is the original product document's release pipeline: Source (CodeCommit) ->
Build (CodeBuild build, then CodeBuild unit tests with a JUnit report) -> Staging (CodeDeploy to
a staging instance, then a CodeBuild link check) -> Approval -> Production (CodeDeploy). Its
declaration (``bot/seed/pipeline.json``) is valid for AWS as written and runs unchanged on the
embedded engine; the demo only names it ``demo`` and gives its CodeBuild projects a short pause
(``DEMO_PAUSE``) so each stage can be watched running.

``run_demo`` (``pipebot demo``) runs it on the embedded engine and follows it on the
terminal; the sandbox seeds the same pipeline into its stand-in workspace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TextIO

import yaml
from botocore.exceptions import ClientError

from bot.engine import LocalCodePipeline
from bot.ops.pipeline_state import FINISHED, is_waiting_approval

STATUS_MARK = {
    "InProgress": "…",
    "Succeeded": "✓",
    "Failed": "✗",
    "Stopped": "■",
    "Stopping": "■",
    "Superseded": "↷",
    "Abandoned": "✗",
    "Cancelled": "✗",
    "Skipped": "⏭",
    None: " ",
}
"""How the terminal follower marks a stage or action status."""

SEED_DIR: Final = Path(__file__).resolve().parent / "seed"
"""The seed pipeline: ``pipeline.json``, ``codebuild-projects.yml`` and ``repo/``."""

DEMO_PIPELINE = "demo"
DEMO_REPOSITORY = "MyDemoRepo"
"""The seed declaration's CodeCommit repository, created under the repositories directory."""
DEMO_PAUSE_SECONDS: Final = 2
"""How long the demo's build and deployments pause (``DEMO_PAUSE`` in its CodeBuild projects):
their real work takes a fraction of a second, and a stage that finishes before anyone can see it
run hides what the walkthrough shows (each stage moving in the channel)."""


def seed_declaration() -> dict[str, Any]:
    """The seed pipeline's declaration as shipped (``bot/seed/pipeline.json``)."""
    document: dict[str, Any] = json.loads((SEED_DIR / "pipeline.json").read_text())
    return dict(document["pipeline"])


def demo_declaration() -> dict[str, Any]:
    """The seed pipeline under the demo's name."""
    declaration = seed_declaration()
    declaration["name"] = DEMO_PIPELINE
    return declaration


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "pipebot demo",
        "GIT_AUTHOR_EMAIL": "demo@pipebot.invalid",
        "GIT_COMMITTER_NAME": "pipebot demo",
        "GIT_COMMITTER_EMAIL": "demo@pipebot.invalid",
    }
    result = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return result.stdout.strip()


def ensure_demo_repository(repositories_dir: Path) -> Path:
    """Create the demo git repository from ``bot/seed/repo`` once (file modes kept: the hook
    scripts are executable); later calls leave it as it is."""
    repo = repositories_dir / DEMO_REPOSITORY
    if (repo / ".git").exists():
        return repo
    repo.mkdir(parents=True, exist_ok=True)
    _git(repo, "init", "-q", "-b", "main")
    shutil.copytree(SEED_DIR / "repo", repo, dirs_exist_ok=True)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "Create the demo app")
    return repo


def ensure_demo_projects(registry: Path, *, pause_seconds: int = DEMO_PAUSE_SECONDS) -> list[str]:
    """Add the seed pipeline's CodeBuild projects (``bot/seed/codebuild-projects.yml``) to the
    local project registry at ``registry``, with ``DEMO_PAUSE`` set to ``pause_seconds`` (none
    when 0); projects already there are left as they are. Returns the names added."""
    seed: dict[str, Any] = yaml.safe_load((SEED_DIR / "codebuild-projects.yml").read_text())
    existing: dict[str, Any] = {}
    if registry.exists():
        loaded = yaml.safe_load(registry.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{registry} is not a mapping of CodeBuild projects")
        existing = loaded
    added = [name for name in seed if name not in existing]
    if not added:
        return []
    for name in added:
        project = dict(seed[name])
        if pause_seconds:
            project["environmentVariables"] = [{"name": "DEMO_PAUSE", "value": str(pause_seconds)}]
        existing[name] = project
    registry.parent.mkdir(parents=True, exist_ok=True)
    registry.write_text(yaml.safe_dump(existing, sort_keys=True))
    return added


def push_change(repositories_dir: Path, *, message: str) -> str:
    """Commit an edit to the demo app's home page (what a developer's push would do); returns
    the new commit's SHA. ``message`` is the commit message and the paragraph added."""
    repo = ensure_demo_repository(repositories_dir)
    page = repo / "site" / "index.html"
    paragraph = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    page.write_text(page.read_text().replace("</h1>", "</h1><p>" + paragraph + "</p>", 1))
    _git(repo, "commit", "-q", "-am", message)
    return _git(repo, "rev-parse", "HEAD")


APPROVE_CHOICES: Final = ("ask", "yes", "no")
"""``pipebot demo --approve``: ask on a terminal, or approve / reject at once."""

Ask = Callable[[str], str]
"""Asks the person at the terminal a question and returns their answer (``input``)."""


def refuse_ask_without_terminal(approve: str, *, interactive: bool) -> str | None:
    """Why ``approve`` cannot be honoured here (None when it can): ``ask`` needs a terminal
    to ask on. Without one the gate is never approved behind the user's back: the demo
    stops before it starts anything and says which ``--approve`` to use."""
    if approve not in APPROVE_CHOICES:
        return f"--approve must be one of {', '.join(APPROVE_CHOICES)} (got {approve!r})."
    if approve == "ask" and not interactive:
        return (
            "pipebot demo: --approve ask needs a terminal to ask on, and standard input is "
            "not one. Run it again with --approve yes to approve the production gate, or "
            "--approve no to reject it."
        )
    return None


def run_demo(
    client: LocalCodePipeline,
    *,
    approve: str,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    interactive: bool | None = None,
    ask: Ask = input,
) -> int:
    """Create the demo pipeline (or start it again) and follow its execution on ``out``.

    ``approve`` answers the approval gate: ``ask`` on a terminal, ``yes`` or ``no`` at once.
    ``interactive`` says whether standard input is a terminal (read from it when None);
    without one ``ask`` is refused on ``err`` before anything starts (exit status 2).
    Returns the process exit code: 0 when the execution succeeded, else 1.
    """
    if interactive is None:
        interactive = sys.stdin.isatty()
    refusal = refuse_ask_without_terminal(approve, interactive=interactive)
    if refusal is not None:
        print(refusal, file=err)
        return 2
    try:
        client.get_pipeline(name=DEMO_PIPELINE)
        execution_id = client.start_pipeline_execution(name=DEMO_PIPELINE)["pipelineExecutionId"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "PipelineNotFoundException":
            raise
        client.create_pipeline(pipeline=demo_declaration())
        execution_id = client.list_pipeline_executions(pipelineName=DEMO_PIPELINE, maxResults=1)[
            "pipelineExecutionSummaries"
        ][0]["pipelineExecutionId"]
    print(f"pipeline {DEMO_PIPELINE}: execution {execution_id}", file=out)
    return follow(client, DEMO_PIPELINE, execution_id, approve=approve, out=out, ask=ask)


def _stage_lines(state: dict[str, Any], execution_id: str) -> list[str]:
    """Each stage as the execution sees it, one line each; a waiting approval says so."""
    lines = []
    for stage in state["stageStates"]:
        latest = stage.get("latestExecution", {})
        mine = latest.get("pipelineExecutionId") == execution_id
        status = latest.get("status") if mine else None
        actions = []
        for action in stage["actionStates"] if mine else []:
            action_latest = action.get("latestExecution", {})
            if is_waiting_approval(action_latest):
                actions.append(f"{action['actionName']} waiting for approval")
            else:
                actions.append(
                    f"{action['actionName']} {STATUS_MARK.get(action_latest.get('status'))}"
                )
        lines.append(
            f"  {STATUS_MARK.get(status, ' ')} {stage['stageName']:<12} {', '.join(actions)}"
        )
    return lines


def follow(
    client: LocalCodePipeline,
    name: str,
    execution_id: str,
    *,
    approve: str,
    out: TextIO,
    ask: Ask = input,
) -> int:
    """Print each stage's progress as it changes until the execution finishes; answer its
    approvals (``approve``: ``ask`` puts the question to ``ask``, once the printout shows
    the stages as they are while it waits)."""
    last = ""
    answered: set[str] = set()
    while True:
        execution = client.get_pipeline_execution(
            pipelineName=name, pipelineExecutionId=execution_id
        )["pipelineExecution"]
        state = client.get_pipeline_state(name=name)
        text = "\n".join(_stage_lines(state, execution_id))
        if text != last:
            print(f"[{time.strftime('%H:%M:%S')}] {execution['status']}\n{text}", file=out)
            out.flush()
            last = text
        for stage in state["stageStates"]:
            if stage.get("latestExecution", {}).get("pipelineExecutionId") != execution_id:
                continue
            for action in stage["actionStates"]:
                action_latest = action.get("latestExecution", {})
                token = action_latest.get("token")
                if not is_waiting_approval(action_latest) or token in answered:
                    continue
                answered.add(token)
                verdict = _verdict(stage["stageName"], action["actionName"], approve, ask)
                client.put_approval_result(
                    pipelineName=name,
                    stageName=stage["stageName"],
                    actionName=action["actionName"],
                    result={"summary": f"{verdict} from the pipebot demo", "status": verdict},
                    token=token,
                )
                print(f"  -> {verdict}", file=out)
                out.flush()
        if execution["status"] in FINISHED:
            summary = execution.get("statusSummary")
            detail = f" ({summary})" if summary else ""
            print(f"execution {execution_id}: {execution['status']}{detail}", file=out)
            return 0 if execution["status"] == "Succeeded" else 1
        time.sleep(0.25)


def _verdict(stage: str, action: str, approve: str, ask: Ask) -> str:
    if approve == "ask":
        reply = ask(f"Approval {stage}/{action} is waiting. Approve? [y/N] ").strip().lower()
        return "Approved" if reply in ("y", "yes") else "Rejected"
    return "Rejected" if approve == "no" else "Approved"
