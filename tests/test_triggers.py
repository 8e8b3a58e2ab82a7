"""V2 trigger filters on the embedded engine: the filter rules (pure functions) and scenarios
that drive a real ``LocalCodePipeline`` and ``SourcePoller`` over real git repositories, once on
SQLite and once on PostgreSQL (the ``engine`` fixture).

AWS pages: userguide/pipelines-triggers.html, userguide/pipelines-filter.html,
userguide/syntax-glob.html, APIReference/API_PipelineTriggerDeclaration.html.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlmodel import select

from bot.engine.source_poller import SourcePoller
from bot.engine.triggers import (
    Criteria,
    PushFilter,
    RefMove,
    moved_refs,
    push_matches,
    source_triggers,
    trigger_detail,
)
from storage import trigger_store
from storage.db import SessionFactory, make_engine, make_session_factory
from storage.models import SourceRefSeen
from tests.helpers import commands_action, commit, git, make_repo, pipeline, wait_for
from tests.shapecheck import assert_output_shape

# --------------------------------------------------------------------------- pure rules


@pytest.mark.parametrize(
    ("criteria", "name", "expected"),
    [
        (Criteria(includes=("release/**",)), "release/1.0", True),
        (Criteria(includes=("release/**",)), "release/1/hotfix", True),
        (Criteria(includes=("release/**",)), "release", False),
        (Criteria(includes=("release/*",)), "release/1/hotfix", False),
        (Criteria(includes=("main",)), "main", True),
        (Criteria(includes=("main",)), "mainline", False),
        (Criteria(includes=("v*",)), "v1.2.3", True),
        (Criteria(includes=("v*",)), "release-v1", False),
        (Criteria(includes=("v*",), excludes=("v0*",)), "v0.9", False),
        (Criteria(excludes=("wip/**",)), "feature/x", True),
        (Criteria(excludes=("wip/**",)), "wip/x", False),
        (Criteria(includes=("**/*.md",)), "README.md", True),
        (Criteria(includes=("**/*.md",)), "docs/guide/intro.md", True),
        (Criteria(includes=("*.md",)), "docs/intro.md", False),
        (Criteria(includes=("src/**",), excludes=("**/*.md",)), "src/notes.md", False),
        (Criteria(includes=("*.{java,class}",)), "Main.class", True),
        (Criteria(includes=("foo.?",)), "foo.c", True),
        (Criteria(includes=("foo.?",)), "foo.cc", False),
    ],
)
def test_glob_criteria(criteria: Criteria, name: str, expected: bool) -> None:
    """Excludes win over includes; excludes alone include everything else; ``*`` stays in a
    segment and ``**`` crosses ``/`` [userguide/syntax-glob.html]."""
    assert criteria.matches(name) is expected


def _move(ref: str, old: str | None = None, new: str = "b" * 40) -> RefMove:
    return RefMove(ref=ref, old=old, new=new)


def test_push_filters_by_kind() -> None:
    tags = PushFilter(tags=Criteria(includes=("v*",)))
    branches = PushFilter(branches=Criteria(includes=("main",)))
    no_files: list[str] = []
    assert push_matches(tags, _move("refs/tags/v1"), lambda: no_files)
    assert not push_matches(tags, _move("refs/heads/v1"), lambda: no_files), "a branch is no tag"
    assert push_matches(branches, _move("refs/heads/main"), lambda: no_files)
    assert not push_matches(branches, _move("refs/tags/main"), lambda: no_files)


def test_file_paths_are_read_only_when_a_filter_needs_them() -> None:
    calls: list[str] = []

    def files() -> list[str]:
        calls.append("read")
        return ["docs/a.md", "src/app.py"]

    plain = PushFilter(branches=Criteria(includes=("main",)))
    assert push_matches(plain, _move("refs/heads/main"), files)
    assert calls == []
    paths = PushFilter(
        branches=Criteria(includes=("main",)), file_paths=Criteria(includes=("src/**",))
    )
    assert push_matches(paths, _move("refs/heads/main"), files)
    assert calls == ["read"]
    assert not push_matches(paths, _move("refs/heads/dev"), files), "branch checked first"
    assert calls == ["read"]
    only_docs = PushFilter(
        branches=Criteria(includes=("main",)), file_paths=Criteria(excludes=("**/*.md",))
    )
    assert not push_matches(only_docs, _move("refs/heads/main"), lambda: ["docs/a.md"])
    assert push_matches(only_docs, _move("refs/heads/main"), lambda: ["docs/a.md", "x.py"])
    assert not push_matches(paths, _move("refs/heads/main"), lambda: []), "no file, no match"


def test_a_trigger_without_filters_watches_the_configured_branch() -> None:
    """pipelines-triggers.html, "No filter": any push to the action's BranchName."""
    declaration = {"triggers": [_trigger_declaration({})]}
    trigger = source_triggers(declaration, {"Source": "release[1]"})["Source"]
    assert len(trigger.push) == 1
    push = trigger.push[0]
    assert push_matches(push, _move("refs/heads/release[1]"), list)
    assert not push_matches(push, _move("refs/heads/release1"), list), "the name, not a glob"


def test_moved_refs_and_detail() -> None:
    seen = {"refs/heads/main": "a" * 40, "refs/tags/v1": "c" * 40}
    current = {"refs/heads/main": "b" * 40, "refs/tags/v1": "c" * 40, "refs/heads/new": "d" * 40}
    moves = moved_refs(seen, current)
    assert moves == [
        RefMove(ref="refs/heads/main", old="a" * 40, new="b" * 40),
        RefMove(ref="refs/heads/new", old=None, new="d" * 40),
    ]
    assert trigger_detail("Source", moves[0]) == f"Source refs/heads/main@{'b' * 40}"


# --------------------------------------------------------------------------- scenarios

REPO = "acme/app"


def _trigger_declaration(git_configuration: dict[str, Any]) -> dict[str, Any]:
    return {
        "providerType": "CodeStarSourceConnection",
        "gitConfiguration": {"sourceActionName": "Source", **git_configuration},
    }


def _connection_source(**configuration: str) -> dict[str, Any]:
    return {
        "name": "Source",
        "actionTypeId": {
            "category": "Source",
            "owner": "AWS",
            "provider": "CodeStarSourceConnection",
            "version": "1",
        },
        "configuration": {
            "ConnectionArn": "arn:aws:codestar-connections:us-east-1:000000000000:connection/x",
            "FullRepositoryId": REPO,
            "BranchName": "main",
            **configuration,
        },
        "outputArtifacts": [{"name": "SourceArtifact"}],
        "namespace": "SourceVariables",
    }


@pytest.fixture
def repo(repos_dir: Path) -> Path:
    path = repos_dir / REPO
    make_repo(path, {"README.md": "hello\n", "src/app.py": "v1\n"})
    return path


@pytest.fixture
def sessions(database_url: str) -> Iterator[SessionFactory]:
    db = make_engine(database_url)
    try:
        yield make_session_factory(db)
    finally:
        db.dispose()


def _create(
    engine: Any,
    name: str,
    git_configuration: dict[str, Any] | None,
    *,
    mode: str = "PARALLEL",
    **configuration: str,
) -> None:
    """A V2 pipeline on ``acme/app`` (trigger unless ``git_configuration`` is None); waits for
    the execution CreatePipeline starts."""
    extra: dict[str, Any] = {"executionMode": mode}
    if git_configuration is not None:
        extra["triggers"] = [_trigger_declaration(git_configuration)]
    engine.create_pipeline(
        pipeline=pipeline(
            name,
            [
                ("Source", [_connection_source(**configuration)]),
                ("Build", [commands_action("B", ["true"])]),
            ],
            **extra,
        )
    )
    (first,) = _executions(engine, name)
    _wait_done(engine, name, str(first["pipelineExecutionId"]))


def _wait_done(engine: Any, name: str, execution_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        response = engine.get_pipeline_execution(
            pipelineName=name, pipelineExecutionId=execution_id
        )
        detail: dict[str, Any] = response["pipelineExecution"]
        if detail["status"] not in {"Succeeded", "Failed", "Stopped"}:
            return None
        assert_output_shape("GetPipelineExecution", response)
        return detail

    return wait_for(done, what=f"execution {execution_id} to finish")


def _executions(engine: Any, name: str) -> list[dict[str, Any]]:
    response = engine.list_pipeline_executions(pipelineName=name)
    assert_output_shape("ListPipelineExecutions", response)
    summaries: list[dict[str, Any]] = response["pipelineExecutionSummaries"]
    return summaries


def _poller(engine: Any, repos_dir: Path, sessions: SessionFactory) -> SourcePoller:
    return SourcePoller(client=engine, repositories_dir=repos_dir, sessions=sessions)


def _ran(engine: Any, name: str, execution_id: str, ref: str, sha: str) -> None:
    """The execution succeeded on ``sha``, started by a WebhookV2 trigger naming ``ref``."""
    detail = _wait_done(engine, name, execution_id)
    assert detail["status"] == "Succeeded"
    assert detail["trigger"] == {
        "triggerType": "WebhookV2",
        "triggerDetail": f"Source {ref}@{sha}",
    }
    assert [a["revisionId"] for a in detail["artifactRevisions"]] == [sha]
    (summary,) = [s for s in _executions(engine, name) if s["pipelineExecutionId"] == execution_id]
    assert summary["trigger"]["triggerType"] == "WebhookV2"
    assert [s["revisionId"] for s in summary["sourceRevisions"]] == [sha]
    # The source's BranchName variable names the branch pushed to (a tag push: the configured
    # branch), as CodeStarSourceConnection's output variables do.
    actions = engine.list_action_executions(
        pipelineName=name, filter={"pipelineExecutionId": execution_id}
    )["actionExecutionDetails"]
    (source,) = [a for a in actions if a["stageName"] == "Source"]
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else "main"
    assert source["output"]["outputVariables"]["BranchName"] == branch


def _branch(repo: Path, branch: str, files: dict[str, str], message: str) -> str:
    """Commit ``files`` on ``branch`` (created from main if new); return the commit."""
    git(repo, "checkout", "-q", "-B", branch, branch if _has(repo, branch) else "main")
    try:
        return commit(repo, files, message)
    finally:
        git(repo, "checkout", "-q", "main")


def _has(repo: Path, branch: str) -> bool:
    return bool(git(repo, "branch", "--list", branch))


def test_a_matching_branch_push_runs_the_pushed_commit(
    engine: Any, repos_dir: Path, repo: Path, sessions: SessionFactory
) -> None:
    _branch(repo, "release/0.9", {"app.txt": "old\n"}, "An existing release branch")
    _create(
        engine,
        "branches",
        {"push": [{"branches": {"includes": ["release/**"], "excludes": ["release/old/**"]}}]},
    )
    poller = _poller(engine, repos_dir, sessions)
    assert poller.poll_once() == [], "first poll: the existing refs are the baseline"

    commit(repo, {"src/app.py": "v2\n"}, "On the configured branch")
    assert poller.poll_once() == [], "with a trigger, BranchName moving starts nothing"
    _branch(repo, "release/old/1", {"x": "1"}, "Excluded")
    _branch(repo, "feature/x", {"x": "2"}, "Not included")
    assert poller.poll_once() == []

    sha = _branch(repo, "release/1.0", {"app.txt": "1.0\n"}, "Release 1.0")
    started = poller.poll_once()
    assert len(started) == 1
    assert poller.poll_once() == [], "the same push never starts twice"
    _ran(engine, "branches", started[0], "refs/heads/release/1.0", sha)

    moved = _branch(repo, "release/0.9", {"app.txt": "0.9.1\n"}, "A fix on an old release")
    (again,) = poller.poll_once()
    _ran(engine, "branches", again, "refs/heads/release/0.9", moved)
    assert len(_executions(engine, "branches")) == 3


def test_several_refs_pushed_at_once_start_one_execution_each(
    engine: Any, repos_dir: Path, repo: Path, sessions: SessionFactory
) -> None:
    _create(engine, "many", {"push": [{"branches": {"includes": ["release/*"]}}]})
    poller = _poller(engine, repos_dir, sessions)
    assert poller.poll_once() == []
    first = _branch(repo, "release/a", {"a": "1"}, "a")
    second = _branch(repo, "release/b", {"b": "1"}, "b")
    started = poller.poll_once()
    assert len(started) == 2
    _ran(engine, "many", started[0], "refs/heads/release/a", first)
    _ran(engine, "many", started[1], "refs/heads/release/b", second)


def test_tags(engine: Any, repos_dir: Path, repo: Path, sessions: SessionFactory) -> None:
    old = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "v0.9")
    _create(engine, "tags", {"push": [{"tags": {"includes": ["v*"], "excludes": ["v0*"]}}]})
    poller = _poller(engine, repos_dir, sessions)
    assert poller.poll_once() == [], "an existing tag is the baseline"
    commit(repo, {"src/app.py": "v2\n"}, "Newer than the tag below")

    git(repo, "tag", "v1.0", old)
    (lightweight,) = poller.poll_once()
    _ran(engine, "tags", lightweight, "refs/tags/v1.0", old)  # the tagged commit, not the tip

    tip = git(repo, "rev-parse", "HEAD")
    git(repo, "-c", "user.name=T", "-c", "user.email=t@example.com", "tag", "-a", "v1.1", "-m", "x")
    (annotated,) = poller.poll_once()
    _ran(engine, "tags", annotated, "refs/tags/v1.1", tip)

    git(repo, "tag", "v0.1")
    git(repo, "tag", "other")
    assert poller.poll_once() == [], "excluded or not included"

    git(repo, "tag", "-d", "v1.0")
    assert poller.poll_once() == []
    with sessions() as session:
        refs = set(session.exec(select(SourceRefSeen.ref)))
    assert "refs/tags/v1.0" not in refs, "a deleted ref is forgotten"
    assert {"refs/tags/v1.1", trigger_store.BASELINE_REF} <= refs
    git(repo, "tag", "v1.0", old)
    assert len(poller.poll_once()) == 1, "a tag created again is a new push"


def test_file_paths(engine: Any, repos_dir: Path, repo: Path, sessions: SessionFactory) -> None:
    _create(
        engine,
        "paths",
        {
            "push": [
                {
                    "branches": {"includes": ["main"]},
                    "filePaths": {"includes": ["src/**"], "excludes": ["**/*.md"]},
                }
            ]
        },
    )
    poller = _poller(engine, repos_dir, sessions)
    assert poller.poll_once() == []
    commit(repo, {"docs/guide.py": "x\n"}, "Outside src")
    assert poller.poll_once() == []
    commit(repo, {"src/notes.md": "x\n"}, "Inside src but excluded")
    assert poller.poll_once() == []
    _branch(repo, "dev", {"src/app.py": "dev\n"}, "Right files, wrong branch")
    assert poller.poll_once() == []

    commit(repo, {"src/app.py": "v2\n"}, "Included")
    sha = commit(repo, {"README.md": "docs\n"}, "Docs on top, pushed together")
    (started,) = poller.poll_once()
    _ran(engine, "paths", started, "refs/heads/main", sha)


def test_a_trigger_without_filters_starts_on_the_configured_branch(
    engine: Any, repos_dir: Path, repo: Path, sessions: SessionFactory
) -> None:
    _create(engine, "nofilter", {})
    poller = _poller(engine, repos_dir, sessions)
    assert poller.poll_once() == []
    _branch(repo, "dev", {"x": "1"}, "Another branch")
    assert poller.poll_once() == []
    sha = commit(repo, {"src/app.py": "v2\n"}, "Main")
    (started,) = poller.poll_once()
    _ran(engine, "nofilter", started, "refs/heads/main", sha)


def test_seen_refs_survive_a_restart(
    engine: Any, repos_dir: Path, repo: Path, sessions: SessionFactory, database_url: str
) -> None:
    _create(engine, "durable", {"push": [{"branches": {"includes": ["main"]}}]})
    assert _poller(engine, repos_dir, sessions).poll_once() == []
    sha = commit(repo, {"src/app.py": "v2\n"}, "Seen by the first process")
    assert len(_poller(engine, repos_dir, sessions).poll_once()) == 1

    other = make_engine(database_url)  # a new process: new poller, new connections
    try:
        restarted = _poller(engine, repos_dir, make_session_factory(other))
        assert restarted.poll_once() == [], "nothing already seen starts again"
        later = commit(repo, {"src/app.py": "v3\n"}, "Pushed while the poller was down")
        (started,) = _poller(engine, repos_dir, make_session_factory(other)).poll_once()
    finally:
        other.dispose()
    _ran(engine, "durable", started, "refs/heads/main", later)
    assert sha != later
    assert len(_executions(engine, "durable")) == 3


def test_removing_and_adding_a_trigger_takes_a_new_baseline(
    engine: Any, repos_dir: Path, repo: Path, sessions: SessionFactory
) -> None:
    _create(engine, "edited", {"push": [{"tags": {"includes": ["v*"]}}]})
    poller = _poller(engine, repos_dir, sessions)
    assert poller.poll_once() == []
    declaration = engine.get_pipeline(name="edited")["pipeline"]
    triggers = declaration.pop("triggers")
    engine.update_pipeline(pipeline=declaration)
    assert poller.poll_once() == []
    with sessions() as session:
        rows = list(session.exec(select(SourceRefSeen)))
    assert rows == [], "a removed trigger's refs are forgotten"
    git(repo, "tag", "v1")
    declaration = engine.get_pipeline(name="edited")["pipeline"]
    engine.update_pipeline(pipeline={**declaration, "triggers": triggers})
    assert poller.poll_once() == [], "a tag made before the trigger came back is the baseline"
    git(repo, "tag", "v2")
    assert len(poller.poll_once()) == 1


@pytest.mark.parametrize("value", ["false", "FALSE"])
def test_detect_changes_false_without_a_trigger_never_starts(
    engine: Any, repos_dir: Path, repo: Path, sessions: SessionFactory, value: str
) -> None:
    _create(engine, "manual", None, DetectChanges=value)
    poller = _poller(engine, repos_dir, sessions)
    assert poller.poll_once() == []
    commit(repo, {"src/app.py": "v2\n"}, "Ship")
    git(repo, "tag", "v1")
    assert poller.poll_once() == []
    assert len(_executions(engine, "manual")) == 1


def test_detect_changes_true_without_a_trigger_polls_the_branch(
    engine: Any, repos_dir: Path, repo: Path, sessions: SessionFactory
) -> None:
    _create(engine, "polled", None, DetectChanges="true")
    poller = _poller(engine, repos_dir, sessions)
    assert poller.poll_once() == []
    sha = commit(repo, {"src/app.py": "v2\n"}, "Ship")
    (started,) = poller.poll_once()
    detail = _wait_done(engine, "polled", started)
    assert detail["trigger"]["triggerType"] == "PollForSourceChanges"
    assert detail["artifactRevisions"][0]["revisionId"] == sha


def test_a_trigger_decides_whatever_detect_changes_says(
    engine: Any, repos_dir: Path, repo: Path, sessions: SessionFactory
) -> None:
    """API_PipelineTriggerDeclaration: with a trigger, default change detection (what
    DetectChanges controls) is disabled and the trigger's filters decide."""
    _create(engine, "both", {"push": [{"tags": {"includes": ["v*"]}}]}, DetectChanges="false")
    poller = _poller(engine, repos_dir, sessions)
    assert poller.poll_once() == []
    sha = commit(repo, {"src/app.py": "v2\n"}, "Ship")
    assert poller.poll_once() == []
    git(repo, "tag", "v1")
    (started,) = poller.poll_once()
    _ran(engine, "both", started, "refs/tags/v1", sha)


def test_pull_request_filters_are_refused_locally(engine: Any, repo: Path) -> None:
    declaration = pipeline(
        "prs",
        [("Source", [_connection_source()]), ("Build", [commands_action("B", ["true"])])],
        triggers=[
            _trigger_declaration(
                {
                    "push": [{"branches": {"includes": ["main"]}}],
                    "pullRequest": [{"events": ["OPEN"], "branches": {"includes": ["main"]}}],
                }
            )
        ],
    )
    with pytest.raises(ClientError) as caught:
        engine.create_pipeline(pipeline=declaration)
    error = caught.value.response["Error"]
    assert error["Code"] == "InvalidStructureException"
    assert "pullRequest" in error["Message"]
    assert "PIPEBOT_BACKEND=aws" in error["Message"]
    with pytest.raises(ClientError):
        engine.get_pipeline(name="prs")
