"""Local git repositories as CodePipeline source providers (CodeCommit, CodeStarSourceConnection).

The embedded engine maps a Source action onto a git repository under a configured repositories
directory: ``CodeCommit`` -> ``<dir>/<RepositoryName>``, ``CodeStarSourceConnection`` ->
``<dir>/<owner>/<repo>``. The revision is the branch tip's commit SHA and the output artifact is the
tree at that commit, exactly what the AWS providers deliver.

The ``git`` CLI is used through ``subprocess`` (no GitPython): it is always present where
repositories are, understands every repository format (bare, worktree, SHA-256), and each function
here costs one git process on its success path, which keeps source polling cheap.

Every failure is a ``SourceError`` whose ``summary`` is written for the person reading the failed
action in chat: it says what was looked for, where, and how to fix it.
"""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from bot.engine.errors import EngineError

__all__ = [
    "Commit",
    "SourceError",
    "branch_tip",
    "changed_files",
    "export_tree",
    "list_refs",
    "read_commit",
    "repository_path",
]

CODECOMMIT = "CodeCommit"
CODESTAR = "CodeStarSourceConnection"

# Environment variables that redirect git to another repository or inject configuration (git's
# own ``local_repo_env`` list). If pipebot runs under a git hook or a shell with GIT_DIR set, they
# would silently make every command below read the wrong repository, so they are dropped.
_REPOSITORY_ENV = frozenset(
    {
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_CONFIG",
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG_PARAMETERS",
        "GIT_DIR",
        "GIT_GRAFT_FILE",
        "GIT_IMPLICIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_NAMESPACE",
        "GIT_NO_REPLACE_OBJECTS",
        "GIT_OBJECT_DIRECTORY",
        "GIT_PREFIX",
        "GIT_REPLACE_REF_BASE",
        "GIT_SHALLOW_FILE",
        "GIT_WORK_TREE",
    }
)

# Fields separated by NUL, which git never puts in names or timestamps; the message comes last so
# that it may contain anything, including newlines.
_COMMIT_FORMAT = "--format=%H%x00%an%x00%at%x00%ct%x00%B"

# A commit ID as CodePipeline's sourceRevisions (COMMIT_ID) carries it: hex only, so it can never be
# read as an option or a revision expression. Abbreviations are accepted (git resolves them).
_COMMIT_ID = re.compile(r"[0-9a-fA-F]{4,64}")

# Characters and sequences git forbids in ref names (git-check-ref-format(1)). Checking them here
# stops a BranchName such as ``main~1`` or ``main^`` from being evaluated as a revision expression.
_BAD_BRANCH = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(?:/|$)")


class SourceError(EngineError):
    """A source action cannot produce its revision or artifact.

    ``summary`` is suitable as the action execution's failure summary (shown to users as is).
    """

    def __init__(self, summary: str) -> None:
        self.summary = summary
        super().__init__(summary)


@dataclass(frozen=True)
class Commit:
    """The commit a source action captured: its SHA becomes the execution's source revision."""

    revision_id: str
    message: str
    author: str
    authored_at: datetime
    committed_at: datetime


def _git_env(repository: Path) -> dict[str, str]:
    """Environment for git: no repository redirection, discovery confined to ``repository``.

    ``GIT_CEILING_DIRECTORIES`` set to the parent stops git from walking up: without it a plain
    directory inside some other checkout (a repositories dir kept in a dotfiles repo, say) would be
    taken for that outer repository. ``LC_ALL=C`` keeps git's messages in English so failures can be
    classified.
    """
    env = {key: value for key, value in os.environ.items() if key not in _REPOSITORY_ENV}
    env["GIT_CEILING_DIRECTORIES"] = str(repository.absolute().parent)
    env["LC_ALL"] = "C"
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def _run_git(repository: Path, args: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    """Run ``git <args>`` in ``repository``; a missing repository or git binary is a SourceError."""
    try:
        return subprocess.run(
            ["git", "-c", "log.showSignature=false", *args],
            cwd=repository,
            env=_git_env(repository),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError as exc:
        if not repository.is_dir():
            raise SourceError(f"Repository directory {repository} does not exist") from exc
        raise SourceError("The git command is not installed or not on PATH") from exc
    except NotADirectoryError as exc:
        raise SourceError(f"Repository path {repository} is not a directory") from exc


def _stderr(result: subprocess.CompletedProcess[bytes]) -> str:
    """Git's error output as one line, for inclusion in a summary."""
    return " ".join(result.stderr.decode(errors="replace").split())


def _is_not_a_repository(result: subprocess.CompletedProcess[bytes]) -> bool:
    return b"not a git repository" in result.stderr


def _not_a_repository(repository: Path, result: subprocess.CompletedProcess[bytes]) -> SourceError:
    return SourceError(
        f"{repository} is not a git repository ({_stderr(result)}); "
        f"create one with `git init -b main {repository}` and commit to it"
    )


def _parse_commit(output: bytes) -> Commit:
    """Build a Commit from ``git log -1`` output in ``_COMMIT_FORMAT``."""
    sha, author, authored, committed, message = output.decode(errors="replace").split("\0", 4)
    return Commit(
        revision_id=sha.strip(),
        message=message.strip(),
        author=author,
        authored_at=datetime.fromtimestamp(int(authored), tz=UTC),
        committed_at=datetime.fromtimestamp(int(committed), tz=UTC),
    )


def _safe_segment(value: str, *, what: str) -> str:
    """Return ``value`` if it names a single directory entry, else refuse it.

    Repository names come from pipeline declarations, which chat users can edit; a name such as
    ``../../etc`` must not make the engine read outside the repositories directory.
    """
    if (
        not value
        or value in {".", ".."}
        or "/" in value
        or "\\" in value
        or "\0" in value
        or value.startswith("-")
    ):
        raise SourceError(
            f"{what} {value!r} is not a valid repository name: it must be a single path segment "
            "(no '/', '\\', '..' or leading '-')"
        )
    return value


def repository_path(
    *, repositories_dir: Path, provider: str, configuration: Mapping[str, str]
) -> Path:
    """Map a source action's configuration onto its local repository directory.

    Only checks that the directory exists (git itself verifies it is a repository, on the first
    command): the message for a missing one tells the user exactly which directory to create.
    """
    if provider == CODECOMMIT:
        name = configuration.get("RepositoryName", "")
        if not name:
            raise SourceError("CodeCommit source action has no RepositoryName in its configuration")
        path = repositories_dir / _safe_segment(name, what="RepositoryName")
    elif provider == CODESTAR:
        full = configuration.get("FullRepositoryId", "")
        if not full:
            raise SourceError(
                "CodeStarSourceConnection source action has no FullRepositoryId in its "
                "configuration (expected 'owner/repo')"
            )
        parts = full.split("/")
        if len(parts) != 2 or PurePosixPath(full).is_absolute():
            raise SourceError(
                f"FullRepositoryId {full!r} must have the form 'owner/repo' (exactly one '/')"
            )
        owner = _safe_segment(parts[0], what="FullRepositoryId owner")
        repo = _safe_segment(parts[1], what="FullRepositoryId repository")
        path = repositories_dir / owner / repo
    else:
        raise SourceError(
            f"Source provider {provider!r} has no local implementation; "
            f"use {CODECOMMIT} or {CODESTAR} with the embedded engine"
        )
    if not path.is_dir():
        branch = configuration.get("BranchName", "main") or "main"
        raise SourceError(
            f"No git repository at {path} (looked for {provider} repository under "
            f"{repositories_dir}); create it with `git init -b {branch} {path}` and commit to "
            f"branch {branch!r}, or clone an existing one there"
        )
    return path


def _check_branch(branch: str) -> None:
    if not branch or branch.startswith(("-", "/")) or branch.endswith((".", "/")):
        raise SourceError(f"BranchName {branch!r} is not a valid git branch name")
    if _BAD_BRANCH.search(branch):
        raise SourceError(f"BranchName {branch!r} is not a valid git branch name")


def _check_commit_id(revision: str) -> None:
    if not _COMMIT_ID.fullmatch(revision):
        raise SourceError(
            f"Revision {revision!r} is not a commit ID (expected a hexadecimal git commit SHA)"
        )


def branch_tip(*, repository: Path, branch: str) -> Commit:
    """Return the commit at the tip of ``branch`` (bare or non-bare repository).

    One git process when the branch exists; on failure a second one lists the branches so the
    summary can say which ones would have worked.
    """
    _check_branch(branch)
    result = _run_git(repository, ["log", "-1", _COMMIT_FORMAT, f"refs/heads/{branch}", "--"])
    if result.returncode == 0 and result.stdout:
        return _parse_commit(result.stdout)
    if _is_not_a_repository(result):
        raise _not_a_repository(repository, result)
    listing = _run_git(repository, ["for-each-ref", "--format=%(refname:short)", "refs/heads/"])
    if listing.returncode != 0:
        if _is_not_a_repository(listing):
            raise _not_a_repository(repository, listing)
        raise SourceError(f"Cannot read branches of {repository}: {_stderr(listing)}")
    branches = listing.stdout.decode(errors="replace").split()
    if not branches:
        raise SourceError(
            f"Branch {branch!r} does not exist in {repository}: the repository has no commits yet"
        )
    shown = ", ".join(branches[:20]) + (", ..." if len(branches) > 20 else "")
    raise SourceError(
        f"Branch {branch!r} does not exist in {repository}; available branches: {shown}"
    )


def read_commit(*, repository: Path, revision: str) -> Commit:
    """Return the commit with ID ``revision`` (full or abbreviated SHA).

    Used when a start overrides the source revision (``sourceRevisions`` of type COMMIT_ID); the
    returned ``revision_id`` is always the full SHA.
    """
    _check_commit_id(revision)
    result = _run_git(repository, ["log", "-1", _COMMIT_FORMAT, f"{revision}^{{commit}}", "--"])
    if result.returncode == 0 and result.stdout:
        return _parse_commit(result.stdout)
    if _is_not_a_repository(result):
        raise _not_a_repository(repository, result)
    raise SourceError(f"Commit {revision} does not exist in {repository}")


def export_tree(*, repository: Path, revision_id: str, destination: Path) -> None:
    """Write the tree of commit ``revision_id`` as plain files under ``destination``.

    ``git archive`` streams a tar that is extracted on the fly with tarfile's ``data`` filter, which
    refuses absolute paths, ``..`` and links escaping ``destination``: the tree comes from a
    repository users push to, so it is untrusted input. As with ``git archive`` generally, paths
    marked ``export-ignore`` in ``.gitattributes`` are left out and submodules are not included.
    """
    _check_commit_id(revision_id)
    destination.mkdir(parents=True, exist_ok=True)
    # Git's stderr goes to a file, not a pipe: only stdout is read while git runs, so a pipe for
    # stderr could fill and deadlock both processes.
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(
                ["git", "archive", "--format=tar", f"{revision_id}^{{commit}}"],
                cwd=repository,
                env=_git_env(repository),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
            )
        except FileNotFoundError as exc:
            if not repository.is_dir():
                raise SourceError(f"Repository directory {repository} does not exist") from exc
            raise SourceError("The git command is not installed or not on PATH") from exc
        assert proc.stdout is not None
        failure: tarfile.TarError | OSError | None = None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
                archive.extractall(destination, filter="data")
        except (tarfile.TarError, OSError) as exc:
            failure = exc
            proc.kill()
        finally:
            proc.stdout.close()
            returncode = proc.wait()
        # A refused member is reported even though git was killed for it; otherwise git's own
        # message (unknown commit, not a repository) explains a failure better than tarfile's
        # "empty file" that follows from it.
        if isinstance(failure, tarfile.FilterError):
            raise SourceError(
                f"Commit {revision_id} of {repository} cannot be exported safely: {failure}; "
                "the embedded engine refuses paths or links that point outside the artifact"
            ) from failure
        if returncode != 0:
            errors.seek(0)
            message = " ".join(errors.read().decode(errors="replace").split())
            if "not a git repository" in message:
                raise SourceError(
                    f"{repository} is not a git repository ({message}); "
                    f"create one with `git init -b main {repository}` and commit to it"
                )
            raise SourceError(
                f"Cannot export commit {revision_id} from {repository}: {message or 'git failed'}"
            )
        if failure is not None:
            raise SourceError(
                f"Cannot extract commit {revision_id} of {repository} into {destination}: {failure}"
            ) from failure


# ``for-each-ref`` fields, NUL-separated: the ref, its object's type and ID, and for an annotated
# tag the type and ID of the object the tag points at (empty otherwise).
_REF_FORMAT = (
    "--format=%(refname)%00%(objecttype)%00%(objectname)%00%(*objecttype)%00%(*objectname)"
)


def list_refs(*, repository: Path) -> dict[str, str]:
    """Every branch and tag of ``repository`` with the commit it points at, as
    ``{"refs/heads/main": sha, "refs/tags/v1.0": sha, ...}`` (full ref names, full SHAs).

    An annotated tag maps to the commit it tags (not the tag object), as the revision a push of
    that tag builds; a tag of anything but a commit (a tree, a blob, a tag of a tag) is left out,
    as no execution could build it. One git process.
    """
    result = _run_git(repository, ["for-each-ref", _REF_FORMAT, "refs/heads/", "refs/tags/"])
    if result.returncode != 0:
        if _is_not_a_repository(result):
            raise _not_a_repository(repository, result)
        raise SourceError(f"Cannot read the branches and tags of {repository}: {_stderr(result)}")
    refs: dict[str, str] = {}
    for line in result.stdout.decode(errors="replace").splitlines():
        name, kind, sha, peeled_kind, peeled_sha = (line.split("\0") + [""] * 5)[:5]
        if kind == "commit":
            refs[name] = sha
        elif kind == "tag" and peeled_kind == "commit":
            refs[name] = peeled_sha
    return refs


def changed_files(
    *, repository: Path, revision_id: str, since: Sequence[str], ignore_missing: bool = False
) -> list[str]:
    """The paths (relative to the repository root, ``/``-separated) changed by the commits that
    ``revision_id`` reaches and none of ``since`` reaches: for a branch that moved from ``old``,
    ``since=[old]`` gives the files the pushed commits changed; for a new branch, ``since`` = the
    other refs' tips gives the files of the commits the push brought.

    Each commit counts with its diff against its first parent (a merge contributes what it
    brought into the branch), the root commit with all its files; renames count as a deletion
    and an addition (both paths). Sorted, without duplicates. One git process.

    A commit of ``since`` that the repository does not have is a SourceError, unless
    ``ignore_missing`` (then it is left out, as ``git log --ignore-missing`` does).
    """
    _check_commit_id(revision_id)
    for revision in since:
        _check_commit_id(revision)
    result = _run_git(
        repository,
        [
            "-c",
            "log.showRoot=true",
            "log",
            "-z",
            "--format=",
            "--name-only",
            "--no-renames",
            "--diff-merges=first-parent",
            *(["--ignore-missing"] if ignore_missing else []),
            revision_id,
            *(["--not", *since] if since else []),
            "--",
        ],
    )
    if result.returncode != 0:
        if _is_not_a_repository(result):
            raise _not_a_repository(repository, result)
        raise SourceError(
            f"Cannot list the files changed up to commit {revision_id} in {repository}: "
            f"{_stderr(result)}"
        )
    names = result.stdout.decode(errors="replace").split("\0")
    return sorted({name.strip("\n") for name in names if name.strip("\n")})
