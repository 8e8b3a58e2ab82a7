"""Source-change polling on the embedded engine (``PollForSourceChanges``).

Every ``PIPEBOT_POLL_SECONDS`` the scheduler calls ``SourcePoller.poll_once``: for each pipeline,
each CodeCommit / CodeStarSourceConnection action of the first stage whose configuration does
not say ``PollForSourceChanges: "false"`` (absent means poll, as AWS does for CodeCommit) has its
branch tip read; a tip other than the one last seen starts one execution of the pipeline with
trigger ``PollForSourceChanges`` (one per pipeline per poll, however many sources changed).

"Last seen" is kept in memory per (pipeline, action) and initialised on first sight from
GetPipelineState's ``currentRevision`` (the revision the last run captured), so a restart does
not rebuild an already-built commit; a new tip that a run has captured since (a start by hand, a
retry) counts as seen too, checked the same way before an execution is started. Without a
captured revision, the tip at first sight counts as seen, unless the pipeline never ran. With
several processes only the holder of the ``source-poller`` lease polls.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Protocol

from bot.engine import LocalCodePipeline
from bot.engine.providers.git import (
    CODECOMMIT,
    CODESTAR,
    SourceError,
    branch_tip,
    repository_path,
)
from bot.engine.states import TriggerType

log = logging.getLogger(__name__)

LEASE_NAME: Final = "source-poller"
POLLED_PROVIDERS: Final = frozenset({CODECOMMIT, CODESTAR})
_NEVER: Final = ""  # "seen" value of an action whose pipeline never captured a revision


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
    """Starts an execution when a polled source's branch has a new commit."""

    def __init__(
        self,
        *,
        client: LocalCodePipeline,
        repositories_dir: Path,
        lease: Lease | None = None,
    ) -> None:
        self._client = client
        self._repositories_dir = repositories_dir
        # No lease: every run polls (one process, or a test).
        self._lease = lease
        self._seen: dict[tuple[str, str], str] = {}
        self._warned: set[tuple[str, str, str]] = set()

    # --- the job -----------------------------------------------------------------------------

    def run_once(self) -> list[str] | None:
        """Poll if this process holds the lease (always, without sessions); None if another does."""
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
                execution_id = self._poll_pipeline(name)
            except Exception as exc:  # one pipeline never stops the others
                self._warn_once(name, "", f"cannot poll pipeline {name!r}: {exc}", exc_info=True)
                continue
            if execution_id is not None:
                started.append(execution_id)
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

    def _poll_pipeline(self, name: str) -> str | None:
        declaration = self._client.get_pipeline(name=name)["pipeline"]
        stages = declaration.get("stages") or []
        if not stages:
            return None
        actions = [
            action
            for action in stages[0].get("actions", [])
            if action.get("actionTypeId", {}).get("provider") in POLLED_PROVIDERS
            and polls_for_changes(action.get("configuration") or {})
        ]
        if not actions:
            return None
        state: _FirstSight | None = None
        changed: list[tuple[str, str]] = []  # (action name, new tip)
        for action in actions:
            action_name = str(action["name"])
            key = (name, action_name)
            if key not in self._seen:
                if state is None:
                    state = _FirstSight(self._client, name, stages[0]["name"])
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
            latest = state or _FirstSight(self._client, name, stages[0]["name"])
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
        """The branch tip's SHA; None (warned once per message) if it cannot be read."""
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

    def _warn_once(
        self, pipeline: str, action: str, message: str, *, exc_info: bool = False
    ) -> None:
        key = (pipeline, action, message)
        if key in self._warned:
            return
        self._warned.add(key)
        where = f"{pipeline}/{action}" if action else pipeline
        log.warning("source polling skipped %s: %s", where, message, exc_info=exc_info)


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
