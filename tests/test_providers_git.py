"""Local git source provider, against real repositories made with the git CLI."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.engine.providers.git import (
    SourceError,
    branch_tip,
    export_tree,
    read_commit,
    repository_path,
)

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Ada Lovelace",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada Lovelace",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**GIT_ENV, **(env or {})},
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str, *, date: str | None = None) -> str:
    for name, content in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    git(repo, "add", "-A")
    env = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date} if date else None
    git(repo, "commit", "-q", "-m", message, env=env)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repos" / "app"
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    return path


def test_branch_tip_returns_commit_with_message(repo: Path) -> None:
    sha = commit(
        repo,
        {"README.md": "hello\n"},
        "Add readme\n\nWith a body.",
        date="2024-03-01T12:00:00+09:00",
    )
    tip = branch_tip(repository=repo, branch="main")
    assert tip.revision_id == sha
    assert len(tip.revision_id) == 40
    assert tip.message == "Add readme\n\nWith a body."
    assert tip.author == "Ada Lovelace"
    assert tip.authored_at == datetime(2024, 3, 1, 3, 0, tzinfo=UTC)
    assert tip.committed_at.tzinfo is not None
    assert tip.committed_at.utcoffset() == UTC.utcoffset(None)


def test_second_commit_moves_the_tip(repo: Path) -> None:
    first = commit(repo, {"a.txt": "1"}, "first")
    assert branch_tip(repository=repo, branch="main").revision_id == first
    second = commit(repo, {"a.txt": "2"}, "second")
    tip = branch_tip(repository=repo, branch="main")
    assert tip.revision_id == second != first
    assert tip.message == "second"


def test_other_branch(repo: Path) -> None:
    commit(repo, {"a.txt": "1"}, "first")
    git(repo, "checkout", "-q", "-b", "feature/x")
    feature = commit(repo, {"a.txt": "2"}, "on feature")
    assert branch_tip(repository=repo, branch="feature/x").revision_id == feature


def test_unknown_branch_lists_available_ones(repo: Path) -> None:
    commit(repo, {"a.txt": "1"}, "first")
    git(repo, "branch", "release")
    with pytest.raises(SourceError) as info:
        branch_tip(repository=repo, branch="develop")
    assert "'develop'" in info.value.summary
    assert "main" in info.value.summary and "release" in info.value.summary


def test_branch_in_empty_repository(repo: Path) -> None:
    with pytest.raises(SourceError, match="no commits"):
        branch_tip(repository=repo, branch="main")


@pytest.mark.parametrize("branch", ["main~1", "main^", "-main", "a..b", "", "a b", "x@{1}"])
def test_branch_expressions_are_refused(repo: Path, branch: str) -> None:
    commit(repo, {"a.txt": "1"}, "first")
    commit(repo, {"a.txt": "2"}, "second")
    with pytest.raises(SourceError, match="not a valid git branch name"):
        branch_tip(repository=repo, branch=branch)


def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(SourceError, match="not a git repository") as info:
        branch_tip(repository=plain, branch="main")
    assert "git init" in info.value.summary


def test_plain_directory_inside_another_repository_is_not_taken_for_it(repo: Path) -> None:
    commit(repo, {"a.txt": "1"}, "first")
    nested = repo / "nested"
    nested.mkdir()
    with pytest.raises(SourceError, match="not a git repository"):
        branch_tip(repository=nested, branch="main")


def test_missing_repository_directory(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        branch_tip(repository=tmp_path / "nope", branch="main")


def test_repository_path_codecommit(tmp_path: Path, repo: Path) -> None:
    path = repository_path(
        repositories_dir=tmp_path / "repos",
        provider="CodeCommit",
        configuration={"RepositoryName": "app", "BranchName": "main"},
    )
    assert path == repo


def test_repository_path_codestar_owner_repo(tmp_path: Path) -> None:
    target = tmp_path / "repos" / "octo" / "widget"
    target.mkdir(parents=True)
    path = repository_path(
        repositories_dir=tmp_path / "repos",
        provider="CodeStarSourceConnection",
        configuration={"FullRepositoryId": "octo/widget", "BranchName": "main"},
    )
    assert path == target


def test_repository_path_missing_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        repository_path(
            repositories_dir=tmp_path / "repos",
            provider="CodeCommit",
            configuration={"RepositoryName": "absent", "BranchName": "trunk"},
        )
    summary = info.value.summary
    assert str(tmp_path / "repos" / "absent") in summary
    assert "git init -b trunk" in summary


@pytest.mark.parametrize(
    ("provider", "configuration"),
    [
        ("CodeCommit", {"RepositoryName": ".."}),
        ("CodeCommit", {"RepositoryName": "../other"}),
        ("CodeCommit", {"RepositoryName": "/etc"}),
        ("CodeCommit", {"RepositoryName": ""}),
        ("CodeCommit", {}),
        ("CodeStarSourceConnection", {"FullRepositoryId": "../x"}),
        ("CodeStarSourceConnection", {"FullRepositoryId": "owner/.."}),
        ("CodeStarSourceConnection", {"FullRepositoryId": "/abs/path"}),
        ("CodeStarSourceConnection", {"FullRepositoryId": "a/b/c"}),
        ("CodeStarSourceConnection", {"FullRepositoryId": "noslash"}),
        ("S3", {"S3Bucket": "b"}),
    ],
)
def test_repository_path_refuses_traversal_and_bad_config(
    tmp_path: Path, provider: str, configuration: dict[str, str]
) -> None:
    (tmp_path / "repos" / "other").mkdir(parents=True)
    with pytest.raises(SourceError):
        repository_path(
            repositories_dir=tmp_path / "repos", provider=provider, configuration=configuration
        )


def test_export_tree_writes_files_and_subdirectories(repo: Path, tmp_path: Path) -> None:
    (repo / "build.sh").write_text("#!/bin/sh\necho\n")
    (repo / "build.sh").chmod(0o755)
    sha = commit(repo, {"README.md": "hello\n", "src/pkg/mod.py": "x = 1\n"}, "tree")
    (repo / "untracked.txt").write_text("not committed")
    out = tmp_path / "artifact" / "source"
    export_tree(repository=repo, revision_id=sha, destination=out)
    assert (out / "README.md").read_text() == "hello\n"
    assert (out / "src" / "pkg" / "mod.py").read_text() == "x = 1\n"
    assert os.access(out / "build.sh", os.X_OK)
    assert not (out / "untracked.txt").exists()
    assert not (out / ".git").exists()


def test_export_tree_of_an_older_commit(repo: Path, tmp_path: Path) -> None:
    old = commit(repo, {"v.txt": "old"}, "old")
    commit(repo, {"v.txt": "new", "added.txt": "x"}, "new")
    out = tmp_path / "old"
    export_tree(repository=repo, revision_id=old, destination=out)
    assert (out / "v.txt").read_text() == "old"
    assert not (out / "added.txt").exists()


def test_export_tree_unknown_commit(repo: Path, tmp_path: Path) -> None:
    commit(repo, {"a.txt": "1"}, "first")
    with pytest.raises(SourceError, match="Cannot export commit"):
        export_tree(repository=repo, revision_id="0" * 40, destination=tmp_path / "out")


def test_export_tree_refuses_links_out_of_the_artifact(repo: Path, tmp_path: Path) -> None:
    os.symlink("/etc/passwd", repo / "passwd")
    sha = commit(repo, {"a.txt": "1"}, "with link")
    with pytest.raises(SourceError, match="cannot be exported safely"):
        export_tree(repository=repo, revision_id=sha, destination=tmp_path / "out")


def test_read_commit_of_an_older_sha(repo: Path) -> None:
    old = commit(repo, {"a.txt": "1"}, "old one")
    commit(repo, {"a.txt": "2"}, "new one")
    found = read_commit(repository=repo, revision=old)
    assert found.revision_id == old
    assert found.message == "old one"
    assert read_commit(repository=repo, revision=old[:10]).revision_id == old


@pytest.mark.parametrize("revision", ["f" * 40, "main", "--all", "HEAD~1"])
def test_read_commit_unknown_or_not_a_sha(repo: Path, revision: str) -> None:
    commit(repo, {"a.txt": "1"}, "first")
    with pytest.raises(SourceError):
        read_commit(repository=repo, revision=revision)


def test_bare_repository(repo: Path, tmp_path: Path) -> None:
    first = commit(repo, {"a.txt": "1", "d/b.txt": "2"}, "first")
    bare = tmp_path / "bare" / "app.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True, env=GIT_ENV)
    tip = branch_tip(repository=bare, branch="main")
    assert tip.revision_id == first
    assert read_commit(repository=bare, revision=first).message == "first"
    out = tmp_path / "bare-out"
    export_tree(repository=bare, revision_id=first, destination=out)
    assert (out / "d" / "b.txt").read_text() == "2"

    second = commit(repo, {"a.txt": "changed"}, "second")
    git(repo, "push", "-q", str(bare), "main")
    assert branch_tip(repository=bare, branch="main").revision_id == second
