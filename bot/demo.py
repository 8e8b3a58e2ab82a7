"""The demo: a small static web app in a local git repository and its pipeline.

Source -> Build (build the site, run its unit tests) -> Staging (deploy to a
local folder, check every link of the deployed pages) -> Approval -> Production
(deploy to another local folder). Every Commands action does real work.

``run_demo`` (``pipebot demo``) runs it on the embedded engine and follows it on the
terminal; the sandbox seeds the same pipeline into its stand-in workspace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TextIO

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
    None: " ",
}
"""How the terminal follower marks a stage or action status."""

DEMO_PIPELINE = "demo"
DEMO_REPOSITORY = "demo-app"
DEMO_PAUSE = "sleep 2  # the demo's pause: real builds and deploys take minutes; watch it run"
"""The first command of the demo's Build, Staging and Production actions: their real work
takes a fraction of a second, and a stage that finishes before anyone can see it run
hides what the walkthrough shows (each stage moving in the channel)."""

DEMO_FILES: dict[str, str] = {
    "README.md": "# demo-app\n\nA tiny static site released by pipebot's demo pipeline.\n",
    "src/index.html": (
        "<!doctype html>\n<html><head><title>Demo app</title></head>\n"
        '<body><h1>Hello from pipebot</h1><a href="about.html">About</a></body></html>\n'
    ),
    "src/about.html": (
        "<!doctype html>\n<html><head><title>About</title></head>\n"
        '<body><p>Released through a pipeline.</p><a href="index.html">Home</a></body></html>\n'
    ),
    "build.sh": (
        "#!/bin/sh\n# Build: copy the pages to dist/ and stamp the version into each.\n"
        "set -e\nrm -rf dist && mkdir -p dist\n"
        "for page in src/*.html; do\n"
        '  sed "s/<\\/body>/<footer>version $VERSION<\\/footer><\\/body>/" '
        '"$page" > "dist/$(basename "$page")"\n'
        'done\necho "built $(ls dist | wc -l) pages"\n'
    ),
    "test.sh": (
        "#!/bin/sh\n# Unit tests: every page has a title and a footer with the version.\n"
        "set -e\nfor page in dist/*.html; do\n"
        '  grep -q "<title>" "$page" || { echo "FAIL: $page has no title"; exit 1; }\n'
        '  grep -q "<footer>version" "$page" || { echo "FAIL: $page has no version"; exit 1; }\n'
        '  echo "ok $page"\ndone\n'
    ),
    "linkcheck.sh": (
        "#!/bin/sh\n# Integration test: every local link of the deployed site resolves.\n"
        'set -e\nsite="$1"\nfor page in "$site"/*.html; do\n'
        '  for link in $(grep -o \'href="[^"]*"\' "$page" | sed \'s/href="//; s/"$//\'); do\n'
        '    [ -f "$site/$link" ] || { echo "BROKEN: $page -> $link"; exit 1; }\n'
        '    echo "ok $page -> $link"\n  done\ndone\n'
    ),
}


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
    """Create the demo git repository once; later calls leave it as it is."""
    repo = repositories_dir / DEMO_REPOSITORY
    if (repo / ".git").exists():
        return repo
    repo.mkdir(parents=True, exist_ok=True)
    _git(repo, "init", "-q", "-b", "main")
    for name, content in DEMO_FILES.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "Create the demo app")
    return repo


def push_change(repositories_dir: Path, *, message: str) -> str:
    """Commit an edit to the demo app's home page (what a developer's push would do); returns
    the new commit's SHA. ``message`` is the commit message and the paragraph added."""
    repo = ensure_demo_repository(repositories_dir)
    page = repo / "src" / "index.html"
    paragraph = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    page.write_text(page.read_text().replace("</h1>", "</h1><p>" + paragraph + "</p>", 1))
    _git(repo, "commit", "-q", "-am", message)
    return _git(repo, "rev-parse", "HEAD")


def demo_declaration(*, deploy_root: Path) -> dict[str, Any]:
    staging = deploy_root / "staging"
    production = deploy_root / "production"

    def commands(name: str, lines: list[str], inputs: list[str], **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "actionTypeId": {
                "category": "Compute",
                "owner": "AWS",
                "provider": "Commands",
                "version": "1",
            },
            "commands": lines,
            "inputArtifacts": [{"name": n} for n in inputs],
            **extra,
        }

    return {
        "name": DEMO_PIPELINE,
        "roleArn": "arn:aws:iam::000000000000:role/pipebot-demo",
        "pipelineType": "V2",
        "executionMode": "SUPERSEDED",
        "variables": [{"name": "RELEASE", "defaultValue": "demo", "description": "Release name"}],
        "stages": [
            {
                "name": "Source",
                "actions": [
                    {
                        "name": "Source",
                        "actionTypeId": {
                            "category": "Source",
                            "owner": "AWS",
                            "provider": "CodeCommit",
                            "version": "1",
                        },
                        "configuration": {
                            "RepositoryName": DEMO_REPOSITORY,
                            "BranchName": "main",
                            "PollForSourceChanges": "true",
                        },
                        "outputArtifacts": [{"name": "SourceArtifact"}],
                        "namespace": "SourceVariables",
                    }
                ],
            },
            {
                "name": "Build",
                "actions": [
                    commands(
                        "BuildAndTest",
                        [
                            DEMO_PAUSE,
                            "export VERSION=#{SourceVariables.CommitId}",
                            "sh build.sh",
                            "sh test.sh",
                        ],
                        ["SourceArtifact"],
                        outputArtifacts=[{"name": "Site", "files": ["dist/**/*", "linkcheck.sh"]}],
                    )
                ],
            },
            {
                "name": "Staging",
                "actions": [
                    commands(
                        "Deploy",
                        [
                            DEMO_PAUSE,
                            f"rm -rf {staging}",
                            f"mkdir -p {staging}",
                            f"cp dist/*.html {staging}/",
                        ],
                        ["Site"],
                    ),
                    commands("LinkCheck", [f"sh linkcheck.sh {staging}"], ["Site"], runOrder=2),
                ],
            },
            {
                "name": "Approval",
                "actions": [
                    {
                        "name": "ReleaseToProduction",
                        "actionTypeId": {
                            "category": "Approval",
                            "owner": "AWS",
                            "provider": "Manual",
                            "version": "1",
                        },
                        "configuration": {
                            "CustomData": "Staging passed its link check: release to production?"
                        },
                    }
                ],
            },
            {
                "name": "Production",
                "actions": [
                    commands(
                        "Deploy",
                        [
                            DEMO_PAUSE,
                            f"rm -rf {production}",
                            f"mkdir -p {production}",
                            f"cp dist/*.html {production}/",
                        ],
                        ["Site"],
                    )
                ],
            },
        ],
    }


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
    deploy_root: Path,
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
        client.create_pipeline(pipeline=demo_declaration(deploy_root=deploy_root))
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
