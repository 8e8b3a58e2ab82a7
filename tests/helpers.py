"""Shared helpers for engine tests: real git repositories, declarations, waiting."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
}


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def make_repo(
    path: Path, files: Mapping[str, str] | None = None, message: str = "Initial commit"
) -> str:
    """Create a git repository at ``path`` with one commit on ``main``; return its SHA."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    return commit(path, files or {"README.md": "hello\n"}, message)


def commit(repo: Path, files: Mapping[str, str], message: str) -> str:
    for name, content in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def wait_for(
    predicate: Callable[[], T | None], *, timeout: float = 30.0, what: str = "condition"
) -> T:
    """Poll ``predicate`` until it returns a truthy value (behaviour, not timing, is asserted)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


def source_action(repo: str = "app", branch: str = "main", name: str = "Source") -> dict[str, Any]:
    return {
        "name": name,
        "actionTypeId": {
            "category": "Source",
            "owner": "AWS",
            "provider": "CodeCommit",
            "version": "1",
        },
        "configuration": {"RepositoryName": repo, "BranchName": branch},
        "outputArtifacts": [{"name": "SourceArtifact"}],
        "namespace": "SourceVariables",
    }


def commands_action(
    name: str,
    commands: list[str],
    *,
    run_order: int = 1,
    inputs: tuple[str, ...] = ("SourceArtifact",),
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "actionTypeId": {
            "category": "Compute",
            "owner": "AWS",
            "provider": "Commands",
            "version": "1",
        },
        "runOrder": run_order,
        "commands": commands,
        "inputArtifacts": [{"name": n} for n in inputs],
        **extra,
    }


def approval_action(name: str = "Approve", *, run_order: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "actionTypeId": {
            "category": "Approval",
            "owner": "AWS",
            "provider": "Manual",
            "version": "1",
        },
        "runOrder": run_order,
        **extra,
    }


def pipeline(
    name: str, stages: list[tuple[str, list[dict[str, Any]]]], **extra: Any
) -> dict[str, Any]:
    """A V2 declaration; the first stage is usually ``("Source", [source_action()])``."""
    return {
        "name": name,
        "roleArn": "arn:aws:iam::000000000000:role/pipebot",
        "pipelineType": "V2",
        "stages": [{"name": n, "actions": a} for n, a in stages],
        **extra,
    }


def process_alive(pid: int) -> bool:
    """Whether ``pid`` still runs. A zombie counts as gone: a killed grandchild is re-parented
    to the container's init, which may never reap it. The process may exit between any two
    looks, so a missing ``/proc`` entry at any point means gone."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
