"""Source-change polling on the embedded engine (``PollForSourceChanges`` and trigger filters).

Every ``PIPEBOT_POLL_SECONDS`` the scheduler calls ``SourcePoller.poll_once``, which checks each
pipeline's first-stage CodeCommit / CodeStarSourceConnection actions in one of two ways.

**Change detection** (an action no trigger names). An action whose configuration does not say
``PollForSourceChanges: "false"`` or ``DetectChanges: "false"`` (absent means poll, as AWS does
for CodeCommit) has its branch tip read; a tip other than the one last seen starts one execution
of the pipeline with trigger ``PollForSourceChanges`` (one per pipeline per poll, however many
sources changed). "Last seen" is kept in memory per (pipeline, action) and initialised on first
sight from GetPipelineState's ``currentRevision`` (the revision the last run captured), so a
restart does not rebuild an already-built commit; a new tip that a run has captured since (a
start by hand, a retry) counts as seen too, checked the same way before an execution is started.
Without a captured revision, the tip at first sight counts as seen, unless the pipeline never
ran.

**Trigger filters** (an action a V2 ``triggers`` entry names; :mod:`bot.engine.triggers`). "When
a trigger configuration is specified, default change detection for repository and branch commits
is disabled" [APIReference/API_PipelineTriggerDeclaration.html]: the action's ``BranchName`` tip
moving no longer starts anything by itself, and ``DetectChanges`` has no effect on it (it
controls that default detection). Instead every branch and tag of the repository is read; each
ref whose commit moved since last seen (or that is new) is a push, and a push that matches the
trigger's filters starts one execution with trigger type ``WebhookV2`` that runs **the pushed
commit** (the source action's revision override, as StartPipelineExecution's
``sourceRevisions``), its ``triggerDetail`` naming the action, the ref and the commit. A push
that matches no filter starts nothing. Several refs moved at once start one execution per
matching ref, each running its own commit. AWS's pages do not say what one push of several refs
does; the providers behind connections send one push event per ref (GitHub's ``push`` webhook
names one ``ref``), and "the execution will use the commit from the branch that you're pushing
to" [userguide/pipelines-filter.html], so each matching ref is an execution.

The refs seen are kept in the database (``SourceRefSeen``, :mod:`storage.trigger_store`) when
the poller is given ``sessions``, so a restart starts nothing already seen (in memory without).
Baseline rule: the first time an action's trigger is polled (pipeline created with it, trigger
added by UpdatePipeline, or its repository changed), the refs as they are then are recorded and
start nothing, so existing branches and tags never start a flood of executions; only pushes after
that poll count (a push landing between CreatePipeline and that first poll is taken into the
baseline). Tags created later start executions; deleted refs are forgotten (a ref created again
counts as new). A ref is recorded as seen right after its execution started: a crash in between
starts it again at the next poll (at least once, never lost). With several processes only the
holder of the ``source-poller`` lease polls.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

from bot.engine import LocalCodePipeline
from bot.engine.providers.git import (
    CODECOMMIT,
    CODESTAR,
    SourceError,
    branch_tip,
    changed_files,
    list_refs,
    repository_path,
)
from bot.engine.providers.s3 import s3_revision
from bot.engine.states import TriggerType
from bot.engine.triggers import (
    RefMove,
    SourceTrigger,
    moved_refs,
    source_triggers,
    trigger_detail,
    trigger_matches,
)
from storage import engine_store, trigger_store
from storage.db import SessionFactory, transaction, utcnow

log = logging.getLogger(__name__)

LEASE_NAME: Final = "source-poller"
POLLED_PROVIDERS: Final = frozenset({CODECOMMIT, CODESTAR, "S3"})
_NEVER: Final = ""  # "seen" value of an action whose pipeline never captured a revision
_MAX_REF_LENGTH: Final = 255  # SourceRefSeen.ref; longer ref names are not watched


def polls_for_changes(configuration: Mapping[str, Any]) -> bool:
    """Whether a change starts the pipeline: on unless ``PollForSourceChanges`` (CodeCommit) or
    ``DetectChanges`` (CodeStarSourceConnection) says "false" (case-insensitive); absent = on.
    https://docs.aws.amazon.com/codepipeline/latest/userguide/action-reference-CodestarConnectionSource.html
    """
    return all(
        str(configuration.get(key, "true")).strip().lower() != "false"
        for key in ("PollForSourceChanges", "DetectChanges")
    )


class Lease(Protocol):
    """The lease that lets one process at a time poll (``bot.notify.lease.JobLease``, named
    ``LEASE_NAME``), passed in so the engine needs nothing from the rest of the bot."""

    def acquire(self) -> bool: ...

    def release(self) -> None: ...


class SourcePoller:
    """Starts executions when a polled source's branch has a new commit, or a push matches a
    trigger's filters."""

    def __init__(
        self,
        *,
        client: LocalCodePipeline,
        repositories_dir: Path,
        lease: Lease | None = None,
        sessions: SessionFactory | None = None,
    ) -> None:
        """``sessions``: the engine's database, where the refs that triggers watch are kept
        across restarts; without it they are kept in memory (a restart takes a new baseline)."""
        self._client = client
        self._repositories_dir = repositories_dir
        # No lease: every run polls (one process, or a test).
        self._lease = lease
        self._seen: dict[tuple[str, str], str] = {}
        self._refs: RefLedger = (
            DatabaseRefLedger(sessions=sessions) if sessions is not None else MemoryRefLedger()
        )
        self._warned: set[tuple[str, str, str]] = set()

    # --- the job -----------------------------------------------------------------------------

    def run_once(self) -> list[str] | None:
        """Poll if this process holds the lease (always without a lease); None if another does."""
        if self._lease is not None and not self._lease.acquire():
            return None
        return self.poll_once()

    def close(self) -> None:
        """Give the lease up so another process takes over at once (at shutdown)."""
        if self._lease is not None:
            self._lease.release()

    def poll_once(self) -> list[str]:
        """Check every pipeline once; return the IDs of the executions started."""
        started: list[str] = []
        for name in self._pipeline_names():
            try:
                started += self._poll_pipeline(name)
            except Exception as exc:  # one pipeline never stops the others
                self._warn_once(name, "", f"cannot poll pipeline {name!r}: {exc}", exc_info=True)
        return started

    # --- one pipeline ------------------------------------------------------------------------

    def _pipeline_names(self) -> list[str]:
        names: list[str] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"nextToken": token} if token else {}
            page = self._client.list_pipelines(**params)
            names += [p["name"] for p in page.get("pipelines", [])]
            token = page.get("nextToken")
            if not token:
                return names

    def _poll_pipeline(self, name: str) -> list[str]:
        declaration = self._client.get_pipeline(name=name)["pipeline"]
        stages = declaration.get("stages") or []
        if not stages:
            return []
        sources = [
            action
            for action in stages[0].get("actions", [])
            if action.get("actionTypeId", {}).get("provider") in POLLED_PROVIDERS
        ]
        # Triggers are git-only (pipelines-triggers.html): an S3 source is never one's.
        triggers = source_triggers(
            declaration,
            {
                str(a["name"]): str((a.get("configuration") or {}).get("BranchName") or "")
                for a in sources
                if a.get("actionTypeId", {}).get("provider") != "S3"
            },
        )
        self._refs.keep_only(pipeline=name, actions=triggers)
        started: list[str] = []
        execution_id = self._poll_branches(
            name,
            str(stages[0]["name"]),
            [
                action
                for action in sources
                if action["name"] not in triggers
                and polls_for_changes(action.get("configuration") or {})
            ],
        )
        if execution_id is not None:
            started.append(execution_id)
        for action in sources:
            trigger = triggers.get(str(action["name"]))
            if trigger is not None:
                started += self._poll_trigger(name, action, trigger)
        return started

    # --- change detection: the configured branch ---------------------------------------------

    def _poll_branches(
        self, name: str, first_stage: str, actions: list[dict[str, Any]]
    ) -> str | None:
        if not actions:
            return None
        state: _FirstSight | None = None
        changed: list[tuple[str, str]] = []  # (action name, new tip)
        for action in actions:
            action_name = str(action["name"])
            key = (name, action_name)
            if key not in self._seen:
                if state is None:
                    state = _FirstSight(self._client, name, first_stage)
                captured = state.revision(action_name)
                if captured is not None:
                    self._seen[key] = captured
            tip = self._tip(
                name,
                action_name,
                action.get("actionTypeId", {}).get("provider", ""),
                action.get("configuration") or {},
            )
            if key not in self._seen:
                assert state is not None
                # No captured revision: a pipeline that never ran is due a first run; otherwise
                # the tip at first sight counts as seen (unknown tip: the next one readable is new).
                self._seen[key] = _NEVER if tip is None or not state.ever_ran() else tip
            if tip is not None and tip != self._seen[key]:
                changed.append((action_name, tip))
        if changed:
            # A commit a run has captured since (a start by hand, a retry) is built already:
            # "the last revision a run captured counts as seen", whoever started the run.
            # Read in this poll already (first sight), or now.
            latest = state or _FirstSight(self._client, name, first_stage)
            built = {a for a, tip in changed if latest.revision(a) == tip}
            for action_name in built:
                self._seen[(name, action_name)] = dict(changed)[action_name]
            changed = [(a, tip) for a, tip in changed if a not in built]
        if not changed:
            return None
        detail = ", ".join(f"{action_name}@{tip[:7]}" for action_name, tip in changed)
        response = self._client.start_from_trigger(
            name=name, trigger=TriggerType.POLL_FOR_SOURCE_CHANGES, trigger_detail=detail
        )
        for action_name, tip in changed:
            self._seen[(name, action_name)] = tip
        execution_id = str(response["pipelineExecutionId"])
        log.info("source change on %s (%s): started execution %s", name, detail, execution_id)
        return execution_id

    def _tip(
        self, pipeline: str, action: str, provider: str, configuration: Mapping[str, Any]
    ) -> str | None:
        """The branch tip's SHA (an S3 source: the object's MD5, as its ETag); None (warned
        once per message) if it cannot be read."""
        if provider == "S3":
            bucket = str(configuration.get("S3Bucket") or "")
            key = str(configuration.get("S3ObjectKey") or "")
            etag = s3_revision(self._client.data_dir, bucket, key)
            if etag is None:
                self._warn_once(pipeline, action, f"S3 object s3://{bucket}/{key} is missing")
            return etag
        try:
            repository = repository_path(
                repositories_dir=self._repositories_dir,
                provider=provider,
                configuration=configuration,
            )
            branch = str(configuration.get("BranchName") or "main")
            return branch_tip(repository=repository, branch=branch).revision_id
        except SourceError as exc:
            self._warn_once(pipeline, action, exc.summary)
            return None

    # --- trigger filters: every branch and tag -----------------------------------------------

    def _poll_trigger(
        self, name: str, action: Mapping[str, Any], trigger: SourceTrigger
    ) -> list[str]:
        """Start one execution per ref pushed since the last poll that matches ``trigger``."""
        action_name = trigger.action_name
        try:
            repository = repository_path(
                repositories_dir=self._repositories_dir,
                provider=str(action.get("actionTypeId", {}).get("provider", "")),
                configuration=action.get("configuration") or {},
            )
            current = list_refs(repository=repository)
        except SourceError as exc:
            self._warn_once(name, action_name, exc.summary)
            return []
        current = {ref: sha for ref, sha in current.items() if len(ref) <= _MAX_REF_LENGTH}
        identity = _repository_identity(repository)
        seen = self._refs.seen(pipeline=name, action=action_name)
        if seen.pop(trigger_store.BASELINE_REF, None) != identity:
            self._refs.baseline(
                pipeline=name,
                action=action_name,
                refs={**current, trigger_store.BASELINE_REF: identity},
            )
            log.info(
                "trigger on %s/%s: %d branches and tags recorded as seen (baseline)",
                name,
                action_name,
                len(current),
            )
            return []
        gone = sorted(seen.keys() - current.keys())
        if gone:
            self._refs.forget(pipeline=name, action=action_name, refs=gone)
        started: list[str] = []
        for move in moved_refs(seen, current):
            files = _ChangedFiles(repository, move, seen)
            if trigger_matches(trigger, move, files):
                detail = trigger_detail(action_name, move)
                response = self._client.start_from_trigger(
                    name=name,
                    trigger=TriggerType.WEBHOOK_V2,
                    trigger_detail=detail,
                    source_revisions={action_name: move.new},
                    source_branches={} if move.is_tag else {action_name: move.short_name},
                )
                execution_id = str(response["pipelineExecutionId"])
                started.append(execution_id)
                log.info("push on %s (%s): started execution %s", name, detail, execution_id)
            self._refs.record(pipeline=name, action=action_name, refs={move.ref: move.new})
        return started

    def _warn_once(
        self, pipeline: str, action: str, message: str, *, exc_info: bool = False
    ) -> None:
        key = (pipeline, action, message)
        if key in self._warned:
            return
        self._warned.add(key)
        where = f"{pipeline}/{action}" if action else pipeline
        log.warning("source polling skipped %s: %s", where, message, exc_info=exc_info)


def _repository_identity(repository: Path) -> str:
    """What the baseline row stores: a digest of the repository's path (64 hex characters),
    so a trigger whose action now reads another repository takes a new baseline."""
    return hashlib.sha256(str(repository.resolve()).encode()).hexdigest()


class _ChangedFiles:
    """The files a push changed, read from git on first use (only file-path filters need them).

    The pushed commits are those the new commit reaches and the commit seen before does not;
    for a new ref (or an old commit git no longer has), those no ref seen before reaches.
    """

    def __init__(self, repository: Path, move: RefMove, seen: Mapping[str, str]) -> None:
        self._repository = repository
        self._move = move
        self._before = sorted({sha for ref, sha in seen.items() if ref != move.ref})
        self._files: list[str] | None = None

    def __call__(self) -> Sequence[str]:
        if self._files is None:
            self._files = self._read()
        return self._files

    def _read(self) -> list[str]:
        move = self._move
        if move.old is not None:
            try:
                return changed_files(
                    repository=self._repository, revision_id=move.new, since=[move.old]
                )
            except SourceError:
                pass  # the old commit is gone (a force push, then gc): as for a new ref
        return changed_files(
            repository=self._repository,
            revision_id=move.new,
            since=self._before,
            ignore_missing=True,
        )


# --- where the refs seen are kept ------------------------------------------------------------


class RefLedger(Protocol):
    """The refs each trigger has seen, per (pipeline name, source action name)."""

    def seen(self, *, pipeline: str, action: str) -> dict[str, str]: ...

    def baseline(self, *, pipeline: str, action: str, refs: Mapping[str, str]) -> None: ...

    def record(self, *, pipeline: str, action: str, refs: Mapping[str, str]) -> None: ...

    def forget(self, *, pipeline: str, action: str, refs: Sequence[str]) -> None: ...

    def keep_only(self, *, pipeline: str, actions: Mapping[str, Any]) -> None: ...


class DatabaseRefLedger:
    """Refs seen, in ``SourceRefSeen``: durable across restarts and shared by the processes that
    take the poller's lease in turn. Each call is one short transaction; a pipeline deleted
    meanwhile reads as nothing seen and writes nothing."""

    def __init__(self, *, sessions: SessionFactory) -> None:
        self._sessions = sessions

    def seen(self, *, pipeline: str, action: str) -> dict[str, str]:
        with self._sessions() as session:
            row = engine_store.get_pipeline(session=session, name=pipeline)
            if row is None or row.id is None:
                return {}
            return trigger_store.seen_refs(session=session, pipeline_id=row.id, action_name=action)

    def baseline(self, *, pipeline: str, action: str, refs: Mapping[str, str]) -> None:
        with transaction(self._sessions) as session:
            row = engine_store.get_pipeline(session=session, name=pipeline)
            if row is not None and row.id is not None:
                trigger_store.replace_refs(
                    session=session, pipeline_id=row.id, action_name=action, refs=refs, now=utcnow()
                )

    def record(self, *, pipeline: str, action: str, refs: Mapping[str, str]) -> None:
        with transaction(self._sessions) as session:
            row = engine_store.get_pipeline(session=session, name=pipeline)
            if row is not None and row.id is not None:
                trigger_store.record_refs(
                    session=session, pipeline_id=row.id, action_name=action, refs=refs, now=utcnow()
                )

    def forget(self, *, pipeline: str, action: str, refs: Sequence[str]) -> None:
        with transaction(self._sessions) as session:
            row = engine_store.get_pipeline(session=session, name=pipeline)
            if row is not None and row.id is not None:
                trigger_store.forget_refs(
                    session=session, pipeline_id=row.id, action_name=action, refs=refs
                )

    def keep_only(self, *, pipeline: str, actions: Mapping[str, Any]) -> None:
        with self._sessions() as session:
            row = engine_store.get_pipeline(session=session, name=pipeline)
            if row is None or row.id is None:
                return
            stale = trigger_store.watched_actions(session=session, pipeline_id=row.id) - set(
                actions
            )
        if not stale:
            return  # the usual case: no write transaction
        with transaction(self._sessions) as session:
            row = engine_store.get_pipeline(session=session, name=pipeline)
            if row is not None and row.id is not None:
                trigger_store.forget_actions(session=session, pipeline_id=row.id, keep=actions)


class MemoryRefLedger:
    """Refs seen, in this process only (a poller given no database)."""

    def __init__(self) -> None:
        self._refs: dict[tuple[str, str], dict[str, str]] = {}

    def seen(self, *, pipeline: str, action: str) -> dict[str, str]:
        return dict(self._refs.get((pipeline, action), {}))

    def baseline(self, *, pipeline: str, action: str, refs: Mapping[str, str]) -> None:
        self._refs[(pipeline, action)] = dict(refs)

    def record(self, *, pipeline: str, action: str, refs: Mapping[str, str]) -> None:
        self._refs.setdefault((pipeline, action), {}).update(refs)

    def forget(self, *, pipeline: str, action: str, refs: Sequence[str]) -> None:
        known = self._refs.get((pipeline, action), {})
        for ref in refs:
            known.pop(ref, None)

    def keep_only(self, *, pipeline: str, actions: Mapping[str, Any]) -> None:
        for key in [k for k in self._refs if k[0] == pipeline and k[1] not in actions]:
            del self._refs[key]


class _FirstSight:
    """What a pipeline's history says about its sources (read lazily, once per poll)."""

    def __init__(self, client: LocalCodePipeline, name: str, first_stage: str) -> None:
        self._client = client
        self._name = name
        self._first_stage = first_stage
        self._revisions: dict[str, str] | None = None
        self._ever_ran: bool | None = None

    def revision(self, action: str) -> str | None:
        if self._revisions is None:
            self._revisions = {}
            state = self._client.get_pipeline_state(name=self._name)
            for stage in state.get("stageStates", []):
                if stage.get("stageName") != self._first_stage:
                    continue
                for action_state in stage.get("actionStates", []):
                    revision = (action_state.get("currentRevision") or {}).get("revisionId")
                    if revision:
                        self._revisions[str(action_state["actionName"])] = str(revision)
        return self._revisions.get(action)

    def ever_ran(self) -> bool:
        if self._ever_ran is None:
            page = self._client.list_pipeline_executions(pipelineName=self._name, maxResults=1)
            self._ever_ran = bool(page.get("pipelineExecutionSummaries"))
        return self._ever_ran
