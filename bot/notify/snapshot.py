"""What a channel notification shows, as data: the snapshot of one execution and the thread
events between two snapshots. Pure functions, data in and dicts out, no I/O and no clock.

The notifier reads a pipeline once per tick and, per execution it follows:

1. ``execution_snapshot`` digests GetPipelineState plus the execution's
   ListPipelineExecutions summary into a small JSON-serialisable dict holding
   only what the parent message shows. The notifier stores it; an equal
   snapshot on the next tick means no chat.update. Nothing in it moves with the
   clock (no elapsed time, no percentComplete): elapsed time is drawn from the
   start time and ``now`` by ``bot.slack.notifications.parent_message``, only when
   something else changed.
2. ``snapshot_events`` compares the stored snapshot with the new one and lists
   the thread events between them. Event keys depend only on the data
   (``approval:Stage/Action:<since>``, ``failed:Stage:<action execution id>``,
   ``finished:<end time>``...), so the notifier can store the keys it posted and never post
   one twice, whatever the tick or process that sees it.
3. ``bot.slack.notifications`` draws the parent message and the replies.

A GetPipelineState stage shows its *latest* execution only. For the execution a
snapshot follows, a stage whose latest execution is another one is: waiting to
enter (this execution is inbound), passed (this execution is in a later stage),
what the previous snapshot saw (the stage ran for this execution and a newer one
has run it since: pass ``previous``), or not reached. Action states in a stage
that this execution holds but that changed before it started belong to an
earlier execution and are left out.

A rollback execution (executionType ROLLBACK) runs one stage: its snapshot shows
that stage only, with its own status (waiting to enter, in progress, succeeded, failed).
An execution whose stages newer executions took before the notifier read it (an
automatic rollback right after its failure, a fast re-run in QUEUED mode, a superseding
execution) is filled in from its ListActionExecutions (``needs_action_details``); one
that an automatic rollback rolled back says so in its thread (``rolled_back_by``).

A resolved event carries its outcome line already drawn (``Event.outcome``): the
notifier stores events and edits the reply later, so the line is fixed when the
change is seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from bot.ops.approvals import parse_decision_summary
from bot.ops.pipeline_state import (
    ENDED_BEFORE_ANSWER,
    STAGE_DONE,
    is_action_failed,
    is_finished,
    is_rollback,
    is_waiting_approval,
    rollback_target_of,
)
from bot.slack.action_facts import read_facts
from bot.slack.kit import clip, esc, one_line
from bot.slack.outcomes import decision_outcome
from bot.slack.text import (
    SUMMARY_MAX,
    aware,
    commit_message,
    flat_name,
    iso,
    mention,
    status_emoji,
    status_label,
    trimmed,
)

__all__ = [
    "APPROVAL",
    "APPROVAL_RESOLVED",
    "AUTOMATED_RETRY",
    "FAILED",
    "FAILURE_RESOLVED",
    "FINISHED",
    "MANUAL_RETRY",
    "RETRIED",
    "ROLLED_BACK",
    "STOPPED",
    "SUPERSEDED",
    "WAITING_FOR_APPROVAL",
    "WAITING_TO_ENTER",
    "Event",
    "execution_snapshot",
    "needs_action_details",
    "snapshot_events",
]


# Event kinds. The two *_RESOLVED kinds are not replies of their own: they tell the
# notifier to call ``resolved_reply`` on the reply whose key is ``Event.resolves``.
APPROVAL: Final = "approval"
FAILED: Final = "failed"
FINISHED: Final = "finished"
SUPERSEDED: Final = "superseded"
STOPPED: Final = "stopped"
APPROVAL_RESOLVED: Final = "approval_resolved"
FAILURE_RESOLVED: Final = "failure_resolved"
RETRIED: Final = "retried"
"""A stage retried, automatically (``onFailure: RETRY``) or by someone (RetryStageExecution):
retryStageMetadata's attempt counts; ``Event.trigger`` says which."""
AUTOMATED_RETRY: Final = "AutomatedStageRetry"
MANUAL_RETRY: Final = "ManualStageRetry"
"""``Event.trigger`` of a RETRIED event: retryStageMetadata's ``latestRetryTrigger`` values
(https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_RetryStageMetadata.html)."""
ROLLED_BACK: Final = "rolled_back"
"""A rollback execution: the rollback it is, said in its own thread."""

# Pseudo-statuses a snapshot uses next to CodePipeline's own.
WAITING_FOR_APPROVAL: Final = "WaitingForApproval"
"""An approval action waiting (InProgress with a token)."""
WAITING_TO_ENTER: Final = "WaitingToEnter"
"""A stage this execution is queued to enter (it is among the stage's inbound executions)."""

_REVISIONS_KEPT: Final = 3
_COMMIT_MESSAGE_MAX: Final = 200
_OPEN_ACTIONS: Final = frozenset({"InProgress", WAITING_FOR_APPROVAL})


# --------------------------------------------------------------------------- snapshot


def execution_snapshot(
    *,
    pipeline: str,
    state: Mapping[str, Any],
    summary: Mapping[str, Any],
    started_by: str | None,
    previous: Mapping[str, Any] | None = None,
    action_details: Sequence[Mapping[str, Any]] | None = None,
    rolled_back_by: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What the parent message of one execution shows, as a small JSON-serialisable dict.

    ``state`` is GetPipelineState, ``summary`` the execution's ListPipelineExecutions
    summary, ``started_by`` a Slack user ID when started from Slack. ``previous`` is the
    snapshot stored for this execution, if any: it keeps the result of stages a newer
    execution has run since (the state no longer shows them). Equal inputs give equal
    snapshots; nothing in it changes with the clock. Read ``summary`` before ``state``:
    the state is then never behind the summary (a finished execution with a stage still
    running would otherwise be stored as its last snapshot). ``action_details`` (this
    execution's ListActionExecutions, when ``needs_action_details``) fill in the actions
    of stages a newer execution has entered since. ``rolled_back_by`` is the
    ListPipelineExecutions summary of the automatic rollback this (failed) execution led
    to, if any: its thread says so.

    A rollback execution (``executionType`` ROLLBACK) shows only the stage it rolls back,
    with that stage's own status, and a ``rollback`` entry (its target and stage).
    """
    execution_id = str(summary.get("pipelineExecutionId") or "?")
    status = str(summary.get("status") or "InProgress")
    trigger = summary.get("trigger") or {}
    stage_states = list(state.get("stageStates") or [])
    rolled_back_stage: str | None = None
    if is_rollback(summary):
        # A rollback execution runs one stage and no other: its parent shows that one only.
        rolled_back_stage = _rolled_back_stage(state, execution_id, previous, action_details)
        stage_states = [s for s in stage_states if s.get("stageName") == rolled_back_stage]
    snapshot: dict[str, Any] = {
        "pipeline": pipeline,
        "execution": execution_id,
        "status": status,
        "statusSummary": trimmed(summary.get("statusSummary"), SUMMARY_MAX),
        "trigger": trimmed(trigger.get("triggerType"), 60),
        "triggerDetail": trimmed(trigger.get("triggerDetail"), 200),
        "startedBy": started_by,
        "revisions": _revisions(summary),
        "moreRevisions": max(len(summary.get("sourceRevisions") or []) - _REVISIONS_KEPT, 0),
        "started": iso(summary.get("startTime")),
        "ended": iso(summary.get("lastUpdateTime")) if is_finished(status) else None,
        "stopReason": trimmed((summary.get("stopTrigger") or {}).get("reason"), SUMMARY_MAX),
        "stages": _stages(
            stage_states,
            execution_id=execution_id,
            status=status,
            started=aware(summary.get("startTime")),
            previous=previous,
            action_details=action_details,
        ),
    }
    if is_rollback(summary):
        # Only for a rollback, so that other executions' stored snapshots stay as they were.
        snapshot["rollback"] = {"target": rollback_target_of(summary), "stage": rolled_back_stage}
    elif rolled_back_by:
        # Only when rolled back, so that other executions' stored snapshots stay as they were.
        snapshot["rolledBackBy"] = {
            "execution": str(rolled_back_by.get("pipelineExecutionId") or "?"),
            "target": rollback_target_of(rolled_back_by),
            "trigger": trimmed((rolled_back_by.get("trigger") or {}).get("triggerType"), 60),
        }
    return snapshot


def _rolled_back_stage(
    state: Mapping[str, Any],
    execution_id: str,
    previous: Mapping[str, Any] | None,
    action_details: Sequence[Mapping[str, Any]] | None,
) -> str | None:
    """The stage a rollback execution rolls back: the one GetPipelineState shows running it
    (StageExecution.type ROLLBACK) or holding it inbound (it waits in front of the stage
    like any execution), else the stage of its action executions, else what an earlier
    snapshot saw; None while none says. A ROLLBACK execution runs that one stage
    (https://docs.aws.amazon.com/codepipeline/latest/userguide/stage-rollback.html)."""
    for stage in state.get("stageStates") or []:
        latest = stage.get("latestExecution") or {}
        if latest.get("pipelineExecutionId") == execution_id:
            return str(stage.get("stageName") or "") or None
    for stage in state.get("stageStates") or []:
        if execution_id in _inbound_ids(stage):
            return str(stage.get("stageName") or "") or None
    for detail in action_details or []:
        if detail.get("stageName"):
            return str(detail["stageName"])
    seen = (previous or {}).get("rollback") or {}
    return str(seen["stage"]) if seen.get("stage") else None


def needs_action_details(
    snapshot: Mapping[str, Any], previous: Mapping[str, Any] | None, *, parallel: bool = False
) -> bool:
    """Whether a stage this execution was last seen running actions in no longer shows
    them (a newer execution entered it): their outcome then comes from ListActionExecutions.

    ``parallel`` (the execution's ``executionMode`` is PARALLEL): several executions run a
    stage at once and GetPipelineState shows the latest only, so an execution in progress
    that the state shows running nothing is read from its action executions too (an
    approval it waits at, which the state never showed, is found there)."""
    shown = {str(s.get("name")): s for s in snapshot.get("stages") or []}
    if _end_unexplained(snapshot):
        return True
    if parallel and snapshot.get("status") == "InProgress":
        running = any(
            a.get("status") in _OPEN_ACTIONS
            for stage in snapshot.get("stages") or []
            for a in stage.get("actions") or []
        )
        if not running:
            return True
    for stage in (previous or {}).get("stages") or []:
        had = [a for a in stage.get("actions") or [] if a.get("status") in _OPEN_ACTIONS]
        now = shown.get(str(stage.get("name"))) or {}
        if had and not now.get("actions"):
            return True
    return False


def _end_unexplained(snapshot: Mapping[str, Any]) -> bool:
    """Whether a finished execution's stages do not show how it ended: it succeeded with a
    stage not shown done (or no stage at all), it failed with no stage shown Failed, or it
    was stopped or superseded with no stage shown at all. Newer executions took its stages
    before the notifier read it (an automatic rollback, a fast re-run in QUEUED mode, a
    superseding execution): GetPipelineState shows a stage's latest execution only
    (https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_StageState.html),
    and this execution's own stage statuses are in its action executions."""
    stages = list(snapshot.get("stages") or [])
    status = snapshot.get("status")
    if status == "Succeeded":
        return not stages or any(s.get("status") is None for s in stages)
    if status == "Failed":
        return not any(s.get("status") == "Failed" for s in stages)
    if status in ("Stopped", "Superseded"):
        return not any(s.get("status") for s in stages)
    return False


def _revisions(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The first source revisions with their commit message's first line."""
    return [
        {
            "action": r.get("actionName"),
            "id": str(r["revisionId"]),
            "message": _commit_message(r.get("revisionSummary")),
        }
        for r in list(summary.get("sourceRevisions") or [])[:_REVISIONS_KEPT]
        if r.get("revisionId")
    ]


def _commit_message(summary: Any) -> str | None:
    """``text.commit_message`` cut for storage (and read from at most 4000 characters)."""
    first = commit_message(trimmed(summary, 4000))
    return clip(first, _COMMIT_MESSAGE_MAX) if first else None


def _stages(
    stages: Sequence[Mapping[str, Any]],
    *,
    execution_id: str,
    status: str,
    started: datetime | None,
    previous: Mapping[str, Any] | None,
    action_details: Sequence[Mapping[str, Any]] | None,
) -> list[dict[str, Any]]:
    """Every stage as this execution sees it (see the module docstring)."""
    seen = {str(s.get("name")): s.get("status") for s in (previous or {}).get("stages") or []}
    details: dict[str, dict[str, Mapping[str, Any]]] = {}
    for detail in action_details or []:  # oldest first: the last attempt wins
        stage_details = details.setdefault(str(detail.get("stageName")), {})
        stage_details[str(detail.get("actionName"))] = detail
    holds = [_holds(stage, execution_id) for stage in stages]
    digests = []
    for index, stage in enumerate(stages):
        name = str(stage.get("stageName") or "?")
        latest = stage.get("latestExecution") or {}
        if latest.get("pipelineExecutionId") == execution_id:
            stage_actions = (
                _action_digest(a, started=started) for a in stage.get("actionStates") or []
            )
            digest = {
                "name": name,
                "status": latest.get("status"),
                "actions": [a for a in stage_actions if a is not None],
            }
            retry = stage.get("retryStageMetadata") or {}
            if retry.get("autoStageRetryAttempt"):
                # Only when retried, so that other stored snapshots stay as they were.
                digest["autoRetries"] = int(retry["autoStageRetryAttempt"])
            if retry.get("manualStageRetryAttempt"):
                digest["manualRetries"] = int(retry["manualStageRetryAttempt"])
        elif execution_id in _inbound_ids(stage):
            digest = {"name": name, "status": WAITING_TO_ENTER, "actions": []}
        else:
            found = (_detail_digest(d) for d in details.get(name, {}).values())
            actions = [a for a in found if a is not None]
            stage_status = _status_elsewhere(
                seen=seen.get(name),
                passed=any(holds[index + 1 :]),
                execution_status=status,
                actions=actions,
            )
            digest = {"name": name, "status": stage_status, "actions": actions}
        digests.append(digest)
    return digests


def _holds(stage: Mapping[str, Any], execution_id: str) -> bool:
    """Whether the execution is in the stage now: its latest execution, or inbound."""
    latest = stage.get("latestExecution") or {}
    return latest.get("pipelineExecutionId") == execution_id or execution_id in _inbound_ids(stage)


def _inbound_ids(stage: Mapping[str, Any]) -> set[str]:
    many = stage.get("inboundExecutions") or []
    one = stage.get("inboundExecution")
    entries = [*many, *([one] if one else [])]
    return {str(e.get("pipelineExecutionId")) for e in entries if e.get("pipelineExecutionId")}


def _status_elsewhere(
    *,
    seen: Any,
    passed: bool,
    execution_status: str,
    actions: Iterable[Mapping[str, Any]],
) -> str | None:
    """The status of a stage whose latest execution is another one: what the previous
    snapshot saw if it was done, Succeeded if this execution went further, the execution's
    end if it was superseded or stopped while waiting here, else what its action
    executions say; None when it was not reached."""
    if seen in STAGE_DONE:
        return str(seen)
    if passed:
        return "Succeeded"
    if seen in ("InProgress", WAITING_TO_ENTER) and execution_status in ("Superseded", "Stopped"):
        return execution_status
    found = {"InProgress" if a["status"] in _OPEN_ACTIONS else a["status"] for a in actions}
    if not found:
        return None
    return next(
        (s for s in ("Failed", "InProgress", "Stopped") if s in found),
        "Succeeded" if found == {"Succeeded"} else None,
    )


def _action_digest(action: Mapping[str, Any], *, started: datetime | None) -> dict[str, Any] | None:
    """One action of a stage this execution holds, or None if it has not run in it."""
    latest = action.get("latestExecution") or {}
    status = latest.get("status")
    if not status:
        return None
    changed = aware(latest.get("lastStatusChange"))
    if started is not None and changed is not None and changed < started:
        return None  # its latest run belongs to an earlier execution
    digest: dict[str, Any] = {"name": str(action.get("actionName") or "?"), "status": status}
    if status == "InProgress":
        if is_waiting_approval(latest):
            digest["status"] = WAITING_FOR_APPROVAL
        digest["since"] = iso(changed)
    elif is_action_failed(status):
        error = latest.get("errorDetails") or {}
        digest["id"] = latest.get("actionExecutionId")
        digest["summary"] = trimmed(latest.get("summary") or error.get("message"), SUMMARY_MAX)
        _add_facts(digest, latest.get("summary"))
    elif status == "Succeeded" and latest.get("lastUpdatedBy"):
        # Who answered an approval, and their comment: the outcome of an approval reply.
        digest["by"] = trimmed(latest.get("lastUpdatedBy"), 200)
        digest["summary"] = trimmed(latest.get("summary"), SUMMARY_MAX)
    return digest


def _detail_digest(detail: Mapping[str, Any]) -> dict[str, Any] | None:
    """One action from its ListActionExecutions detail, shaped like ``_action_digest``."""
    status = detail.get("status")
    if not status:
        return None
    digest: dict[str, Any] = {"name": str(detail.get("actionName") or "?"), "status": status}
    result = (detail.get("output") or {}).get("executionResult") or {}
    summary = trimmed(result.get("externalExecutionSummary"), SUMMARY_MAX)
    if status == "InProgress":
        digest["since"] = iso(detail.get("lastUpdateTime") or detail.get("startTime"))
        category = ((detail.get("input") or {}).get("actionTypeId") or {}).get("category")
        if category == "Approval" and result.get("externalExecutionId"):
            # An approval waiting in a PARALLEL pipeline: answered with this ID as the token.
            digest["status"] = WAITING_FOR_APPROVAL
    elif is_action_failed(status):
        digest["id"] = detail.get("actionExecutionId")
        digest["summary"] = summary
        _add_facts(digest, result.get("externalExecutionSummary"))
    elif status == "Succeeded" and detail.get("updatedBy"):
        digest["by"] = trimmed(detail.get("updatedBy"), 200)
        digest["summary"] = summary
    return digest


def _add_facts(digest: dict[str, Any], summary: Any) -> None:
    """A failed action's facts (failed phase or hook, test counts and names), read from its
    whole summary (the stored one is cut): only when there are some, so that other stored
    snapshots stay as they were."""
    facts = read_facts(summary)
    if facts:
        digest["facts"] = facts


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    """A thread event between two snapshots. ``key`` is stable: the same event has the
    same key whichever tick or process sees it, so the notifier posts each key once."""

    key: str
    kind: str
    stage: str | None = None
    action: str | None = None
    since: str | None = None
    """ISO time the approval started waiting."""
    action_execution_id: str | None = None
    summary: str | None = None
    status: str | None = None
    started: str | None = None
    ended: str | None = None
    reason: str | None = None
    resolves: str | None = None
    """For *_RESOLVED: the key of the reply whose buttons give way to ``outcome``."""
    outcome: str | None = None
    """For *_RESOLVED: the mrkdwn line for ``resolved_reply``."""
    attempt: int | None = None
    """For RETRIED: which automatic (or manual) retry of the stage (1 for the first)."""
    target: str | None = None
    """For ROLLED_BACK: the execution rolled back to."""
    trigger: str | None = None
    """For ROLLED_BACK: ``ManualRollback`` or ``AutomatedRollback``; for RETRIED:
    ``AUTOMATED_RETRY`` or ``MANUAL_RETRY``."""
    by: str | None = None
    """For ROLLED_BACK and RETRIED: the Slack user who rolled back or retried, when pipebot
    knows."""
    facts: Mapping[str, Any] | None = None
    """For FAILED: the failed action's facts (``bot.slack.action_facts.read_facts``)."""
    rollback_execution: str | None = None
    """For ROLLED_BACK in the thread of the execution that was rolled back (not the
    rollback's own): the rollback execution's ID."""


def snapshot_events(*, before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[Event]:
    """The thread events between two snapshots of one execution, in a fixed order:
    resolutions, then new failures and approvals (pipeline order), then the end.

    ``before`` is None for the first snapshot: what it already shows is an event.
    Comparing a snapshot with itself gives no event.
    """
    events: list[Event] = []
    old_approvals, new_approvals = _approvals(before), _approvals(after)
    old_failures, new_failures = _failures(before), _failures(after)

    for key, (stage, action, _since) in old_approvals.items():
        if key not in new_approvals:
            events.append(
                Event(
                    key=f"{key}:resolved",
                    kind=APPROVAL_RESOLVED,
                    stage=stage,
                    action=action,
                    resolves=key,
                    outcome=_approval_outcome(after, stage, action),
                )
            )
    for key, (stage, _failed) in old_failures.items():
        if key not in new_failures:
            events.append(
                Event(
                    key=f"{key}:resolved",
                    kind=FAILURE_RESOLVED,
                    stage=stage,
                    resolves=key,
                    outcome=_failure_outcome(
                        after, stage, failed_again=any(s == stage for s, _ in new_failures.values())
                    ),
                )
            )
    for key, (stage, failed) in new_failures.items():
        if key not in old_failures:
            events.append(
                Event(
                    key=key,
                    kind=FAILED,
                    stage=stage,
                    action=str(failed.get("name")),
                    action_execution_id=failed.get("id"),
                    summary=failed.get("summary"),
                    facts=failed.get("facts"),
                )
            )
    for key, (stage, action, since) in new_approvals.items():
        if key not in old_approvals:
            events.append(Event(key=key, kind=APPROVAL, stage=stage, action=action, since=since))
    events += _retry_events(before, after)
    rollback = _rollback_event(before, after)
    if rollback is not None:
        events.insert(0, rollback)
    rolled_back = _rolled_back_by_event(before, after)
    if rolled_back is not None:
        events.append(rolled_back)
    end = _end_event(before, after)
    if end is not None:
        events.append(end)
    return events


def _retry_events(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[Event]:
    """A stage retried, once per attempt: automatically (``retried:Deploy:auto:1``) or by
    someone (``retried:Deploy:manual:1``; the notifier looks up who when pipebot did it)."""
    events = []
    for field, kind, trigger in (
        ("autoRetries", "auto", AUTOMATED_RETRY),
        ("manualRetries", "manual", MANUAL_RETRY),
    ):
        seen = {
            str(s.get("name")): int(s.get(field) or 0) for s in (before or {}).get("stages") or []
        }
        for stage in after.get("stages") or []:
            name = str(stage.get("name"))
            attempts = int(stage.get(field) or 0)
            for attempt in range(seen.get(name, 0) + 1, attempts + 1):
                events.append(
                    Event(
                        key=f"retried:{name}:{kind}:{attempt}",
                        kind=RETRIED,
                        stage=name,
                        attempt=attempt,
                        trigger=trigger,
                    )
                )
    return events


def _rollback_event(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> Event | None:
    """A rollback execution, once its stage is known (or at its first sight when it never
    is): who or what rolled back which stage to which execution."""
    rollback = after.get("rollback")
    if not rollback:
        return None
    was = (before or {}).get("rollback") or {}
    if rollback.get("stage"):
        if was.get("stage"):
            return None  # told already
    elif not is_finished(after.get("status")) or is_finished((before or {}).get("status")):
        # The state names the stage once the rollback runs it: wait for it, unless the
        # execution ended without it ever showing.
        return None
    return Event(
        key=f"rollback:{after.get('execution')}",
        kind=ROLLED_BACK,
        stage=rollback.get("stage"),
        target=rollback.get("target"),
        trigger=after.get("trigger"),
        by=after.get("startedBy"),
    )


def _rolled_back_by_event(
    before: Mapping[str, Any] | None, after: Mapping[str, Any]
) -> Event | None:
    """An execution rolled back by a later one (its failed stage, automatically): said once
    in its own thread, naming the rollback execution and its target. The stage is the one
    it failed in (a ROLLBACK result rolls back the stage that failed,
    https://docs.aws.amazon.com/codepipeline/latest/userguide/stage-rollback-auto.html)."""
    by = after.get("rolledBackBy")
    if not by or (before or {}).get("rolledBackBy"):
        return None
    failed = [s for s in after.get("stages") or [] if s.get("status") == "Failed"]
    return Event(
        key=f"rolled-back-by:{by.get('execution')}",
        kind=ROLLED_BACK,
        stage=str(failed[-1].get("name")) if failed else None,
        target=by.get("target"),
        trigger=by.get("trigger"),
        rollback_execution=by.get("execution"),
    )


def _end_event(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> Event | None:
    """The execution's end, when ``after`` is the first snapshot to show it."""
    status = after.get("status")
    was = (before or {}).get("status")
    if not is_finished(status) or is_finished(was):
        return None
    kind = {"Superseded": SUPERSEDED, "Stopped": STOPPED}.get(str(status), FINISHED)
    # An execution can end more than once (a failed one retried): the end time tells
    # the ends apart and stays the same on every later tick.
    return Event(
        key=f"{kind}:{after.get('ended') or status}",
        kind=kind,
        status=str(status),
        started=after.get("started"),
        ended=after.get("ended"),
        reason=after.get("stopReason") if kind == STOPPED else after.get("statusSummary"),
    )


def _approvals(snapshot: Mapping[str, Any] | None) -> dict[str, tuple[str, str, str | None]]:
    found: dict[str, tuple[str, str, str | None]] = {}
    for stage in (snapshot or {}).get("stages") or []:
        for action in stage.get("actions") or []:
            if action.get("status") == WAITING_FOR_APPROVAL:
                stage_name, action_name = str(stage.get("name")), str(action.get("name"))
                key = f"approval:{stage_name}/{action_name}:{action.get('since') or ''}"
                found[key] = (stage_name, action_name, action.get("since"))
    return found


def _failures(snapshot: Mapping[str, Any] | None) -> dict[str, tuple[str, Mapping[str, Any]]]:
    found: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for stage in (snapshot or {}).get("stages") or []:
        failed = [a for a in stage.get("actions") or [] if a.get("status") in ("Failed",)]
        if stage.get("status") != "Failed" or not failed:
            continue
        first = failed[0]
        ident = (
            first.get("id")
            or hashlib.sha256(f"{first.get('name')}|{first.get('summary')}".encode()).hexdigest()[
                :12
            ]
        )
        found[f"failed:{stage.get('name')}:{ident}"] = (str(stage.get("name")), first)
    return found


def _action_in(snapshot: Mapping[str, Any], stage: str, action: str) -> Mapping[str, Any]:
    for entry in snapshot.get("stages") or []:
        if entry.get("name") == stage:
            for item in entry.get("actions") or []:
                if item.get("name") == action:
                    return dict(item)
    return {}


def _stage_status(snapshot: Mapping[str, Any], stage: str) -> str | None:
    for entry in snapshot.get("stages") or []:
        if entry.get("name") == stage:
            status = entry.get("status")
            return str(status) if status else None
    return None


# The outcome lines below only ever show CodePipeline's own statuses (never the
# pseudo-statuses above), so the shared status words and emoji draw them.


def _approval_outcome(after: Mapping[str, Any], stage: str, action: str) -> str:
    where = f"{flat_name(stage)} / {flat_name(action)}"
    found = _action_in(after, stage, action)
    status = found.get("status")
    by = f" by {mention(str(found['by']))}" if found.get("by") else ""
    summary = str(found.get("summary") or "")
    comment = (
        f": “{esc(one_line(summary), 400)}”"
        if summary and summary not in ("Approved", "Rejected")
        else ""
    )
    decision = parse_decision_summary(one_line(summary))
    if decision is not None and status in ("Succeeded", "Failed"):
        # Decided in Slack: name the person, not the bot's identity. Whether it was
        # approved is the action's status, which AWS sets; the summary is free text.
        return decision_outcome(
            stage=stage,
            action=action,
            approved=status == "Succeeded",
            user_id=decision.user_id,
            comment=decision.comment,
        )
    if status == "Succeeded":
        return f"✅ Approved {where}{by}{comment}"
    if status == "Failed":
        return f"❌ Rejected {where}{by}{comment}"
    if status == "InProgress":
        return f"⏹ The approval {where} was replaced (the stage was retried)"
    execution = after.get("status")
    if execution in ENDED_BEFORE_ANSWER:
        return (
            f"{status_emoji(execution)} No longer needed: the execution was "
            f"{status_label(execution).lower()}"
        )
    return f"⏹ The approval {where} is no longer waiting"


def _failure_outcome(after: Mapping[str, Any], stage: str, *, failed_again: bool) -> str:
    """How a failure of ``stage`` was resolved. ``failed_again``: the execution shows a new
    failure in that stage (a retry failed). A stage still Failed without one lost its failure
    to a newer execution, which now holds the stage: it was never retried."""
    status = _stage_status(after, stage)
    if status in ("InProgress", "Succeeded", WAITING_TO_ENTER):
        return f"🔁 {flat_name(stage)} was retried"
    if status == "Failed" and failed_again:
        return f"❌ {flat_name(stage)} failed again"
    if status == "Failed":
        return f"↷ {flat_name(stage)} can no longer be retried: a newer execution ran it"
    if status is None or after.get("status") == "Superseded":
        return f"↷ {flat_name(stage)} can no longer be retried: a newer execution ran it"
    return f"{status_emoji(status)} {flat_name(stage)} is {status_label(status).lower()}"
