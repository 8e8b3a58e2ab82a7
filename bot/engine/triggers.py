"""Trigger filters of V2 pipelines: which git pushes start an execution (pure functions).

A V2 declaration's ``triggers`` [userguide/pipelines-triggers.html,
userguide/pipelines-filter.html, APIReference/API_GitConfiguration.html] name a
CodeStarSourceConnection source action and, per event type, up to three filters. The embedded
engine evaluates push filters (pull requests do not exist in a bare git repository: the
declaration refuses ``pullRequest`` locally); this module decides, for the refs whose commit
moved, which pushes match. The source poller (:mod:`bot.engine.source_poller`) reads the refs
and starts the executions.

Rules, as AWS documents them:

- A push filter is ``tags``, ``branches``, or ``branches`` with ``filePaths`` (checked by
  :mod:`bot.engine.declaration`). Each criteria object has ``includes`` and ``excludes``
  glob lists; **excludes win** over includes, and a criteria object with excludes only
  includes everything else. A branch filter with file paths matches when the branch matches and
  at least one file the pushed commits changed is included and not excluded.
- Several filters of one trigger are alternatives: a push that matches any of them starts the
  pipeline, once.
- A trigger without push (and pull-request) filters starts the pipeline on any push to the
  action's ``BranchName`` ("No filter" in pipelines-triggers.html).
- Patterns are globs [userguide/syntax-glob.html]: ``*`` and ``?`` stay within one path segment,
  ``**`` crosses ``/``, ``[...]`` and ``{a,b}`` work, ``\\`` escapes. Matching uses wcmatch's
  ``globmatch`` with GLOBSTAR and BRACE; where AWS's page is silent the library decides (a
  ``**/`` also matches zero directories, so ``**/*.md`` matches ``README.md`` at the root, and a
  leading dot is matched like any character). Branch and tag patterns are matched against the
  short name (``release/1.2``, ``v1.0``), as AWS's examples write them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from wcmatch import glob

BRANCH_PREFIX: Final = "refs/heads/"
TAG_PREFIX: Final = "refs/tags/"

_GLOB_FLAGS: Final = glob.GLOBSTAR | glob.BRACE | glob.DOTGLOB


@dataclass(frozen=True)
class Criteria:
    """One ``includes``/``excludes`` pair of glob patterns (``GitBranchFilterCriteria``,
    ``GitTagFilterCriteria``, ``GitFilePathFilterCriteria``)."""

    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: Mapping[str, Any] | None) -> Criteria | None:
        if value is None:
            return None
        return cls(
            includes=tuple(str(p) for p in value.get("includes") or ()),
            excludes=tuple(str(p) for p in value.get("excludes") or ()),
        )

    def matches(self, name: str) -> bool:
        """Whether ``name`` is included (by a pattern, or by having no includes) and not
        excluded: excludes take priority over includes [API_GitBranchFilterCriteria]."""
        if any(_glob(name, pattern) for pattern in self.excludes):
            return False
        return not self.includes or any(_glob(name, pattern) for pattern in self.includes)


def _glob(name: str, pattern: str) -> bool:
    return bool(glob.globmatch(name, pattern, flags=_GLOB_FLAGS))


@dataclass(frozen=True)
class PushFilter:
    """One ``push`` entry of a ``gitConfiguration`` (``GitPushFilter``)."""

    branches: Criteria | None = None
    tags: Criteria | None = None
    file_paths: Criteria | None = None


@dataclass(frozen=True)
class SourceTrigger:
    """The trigger of one source action: its push filters (never empty: a trigger without
    filters gets one for the action's ``BranchName``)."""

    action_name: str
    push: tuple[PushFilter, ...]


@dataclass(frozen=True)
class RefMove:
    """A ref whose commit changed since the poller last saw it: ``ref`` is the full name
    (``refs/heads/main``, ``refs/tags/v1.0``), ``old`` the commit seen before (None for a ref
    created since), ``new`` the commit it points at now."""

    ref: str
    old: str | None
    new: str

    @property
    def is_tag(self) -> bool:
        return self.ref.startswith(TAG_PREFIX)

    @property
    def short_name(self) -> str:
        """``main`` for ``refs/heads/main``, ``v1.0`` for ``refs/tags/v1.0``."""
        for prefix in (BRANCH_PREFIX, TAG_PREFIX):
            if self.ref.startswith(prefix):
                return self.ref[len(prefix) :]
        return self.ref


def source_triggers(
    declaration: Mapping[str, Any], branch_names: Mapping[str, str]
) -> dict[str, SourceTrigger]:
    """The triggers of a (valid) declaration by source action name.

    ``branch_names`` maps each source action to its configured ``BranchName`` (for a trigger
    without filters). Pull-request filters are not read: the engine refuses them at create
    time. A declaration without ``triggers`` gives ``{}``.
    """
    found: dict[str, SourceTrigger] = {}
    for trigger in declaration.get("triggers") or []:
        git = trigger.get("gitConfiguration") or {}
        name = str(git.get("sourceActionName", ""))
        filters = tuple(
            PushFilter(
                branches=Criteria.parse(entry.get("branches")),
                tags=Criteria.parse(entry.get("tags")),
                file_paths=Criteria.parse(entry.get("filePaths")),
            )
            for entry in git.get("push") or []
        )
        if not filters and not git.get("pullRequest"):
            branch = branch_names.get(name) or "main"
            filters = (PushFilter(branches=Criteria(includes=(_escape(branch),))),)
        found[name] = SourceTrigger(action_name=name, push=filters)
    return found


def _escape(name: str) -> str:
    """A glob pattern matching exactly the branch ``name``."""
    return str(glob.escape(name))


def push_matches(
    push: PushFilter, move: RefMove, changed_files: Callable[[], Sequence[str]]
) -> bool:
    """Whether the push of ``move`` matches one push filter.

    ``changed_files`` is called only for a branch filter with file paths (it costs a git
    process): it returns the paths the pushed commits changed.
    """
    if move.is_tag:
        return push.tags is not None and push.tags.matches(move.short_name)
    if push.branches is None or not move.ref.startswith(BRANCH_PREFIX):
        return False
    if not push.branches.matches(move.short_name):
        return False
    if push.file_paths is None:
        return True
    return any(push.file_paths.matches(path) for path in changed_files())


def trigger_matches(
    trigger: SourceTrigger, move: RefMove, changed_files: Callable[[], Sequence[str]]
) -> bool:
    """Whether the push of ``move`` starts the pipeline: any of the trigger's filters match."""
    return any(push_matches(push, move, changed_files) for push in trigger.push)


def moved_refs(seen: Mapping[str, str], current: Mapping[str, str]) -> list[RefMove]:
    """The refs of ``current`` (name -> commit) that are new or point elsewhere than in
    ``seen``, sorted by name (tags after branches, as ``refs/heads`` < ``refs/tags``)."""
    return [
        RefMove(ref=ref, old=seen.get(ref), new=sha)
        for ref, sha in sorted(current.items())
        if seen.get(ref) != sha
    ]


def trigger_detail(action_name: str, move: RefMove) -> str:
    """The execution's ``trigger.triggerDetail`` for a push: the source action, the full ref
    and the full commit ID, e.g. ``Source refs/heads/main@3f2a...`` (AWS documents the field
    only as "detail related to the event" [API_ExecutionTrigger]; at most 1024 characters)."""
    return f"{action_name} {move.ref}@{move.new}"[:1024]


__all__ = [
    "BRANCH_PREFIX",
    "TAG_PREFIX",
    "Criteria",
    "PushFilter",
    "RefMove",
    "SourceTrigger",
    "moved_refs",
    "push_matches",
    "source_triggers",
    "trigger_detail",
    "trigger_matches",
]
