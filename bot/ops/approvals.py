"""Approvals answered from Slack: the decision, exactly once, and the summary it leaves.

``decide_approval`` answers the approval that waits once, whichever surface asks (a
command, a button, a form) and however often (double clicks, Slack's retries, several
pipebot processes): a click record per approval attempt (its token) makes the decision
exactly-once, and the outcome says who decided when it was someone else.

The summary pipebot writes into PutApprovalResult (``result.summary``, at most 512
characters: https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_ApprovalResult.html)
is read back by the notifier from GetPipelineState / ListActionExecutions to name the
Slack user who decided rather than pipebot's AWS identity. The format and its parser
live side by side here so they cannot drift apart.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from bot.ops.pipeline_ops import OpsError, PipelineOps
from bot.ops.pipeline_state import PendingApproval
from bot.slack.kit import escape
from storage import bot_store
from storage.db import SessionFactory, transaction, utc

log = logging.getLogger(__name__)

_SLACK_DECISION = re.compile(
    r"(?P<verdict>Approved|Rejected) in Slack by .*? \((?P<user>[UW][A-Z0-9]+)\)"
    r"(?:: (?P<comment>.*))?",
    re.DOTALL,
)


@dataclass(frozen=True)
class SlackDecision:
    """A decision read back from an approval summary pipebot wrote."""

    approved: bool
    user_id: str
    comment: str | None


def decision_summary(*, approved: bool, user_name: str, user_id: str, comment: str | None) -> str:
    """The summary of a decision made in Slack, e.g.
    ``"Approved in Slack by Alice (U123): ship it"``; ``parse_decision_summary`` reads it back.
    """
    verdict = "Approved" if approved else "Rejected"
    return f"{verdict} in Slack by {user_name} ({user_id})" + (f": {comment}" if comment else "")


def parse_decision_summary(summary: str | None) -> SlackDecision | None:
    """The decision in a summary ``decision_summary`` wrote; None for any other summary
    (an answer from the console, the CLI or another tool)."""
    if not summary:
        return None
    found = _SLACK_DECISION.fullmatch(summary.strip())
    if found is None:
        return None
    return SlackDecision(
        approved=found["verdict"] == "Approved",
        user_id=found["user"],
        comment=found["comment"],
    )


# --- the decision ------------------------------------------------------------------------------

PENDING: Final = "pending:"
"""Prefix of a click record's outcome while its answer is on its way to the backend."""
PENDING_TAKEOVER_SECONDS: Final = 30.0
"""A pending answer older than this was cut short (the process died): a new click takes over.
Longer than any backend call (the AWS client's retries included)."""


@dataclass(frozen=True)
class ApprovalOutcome:
    """What became of an answer.

    ``state`` is ``decided`` when this call answered the approval, ``already`` when it had
    been answered (``verdict``, ``user_id`` and ``at`` are that earlier answer's), and
    ``answering`` when another answer is on its way to the backend right now (``user_id``
    is who gave it, ``at`` when).
    """

    state: Literal["decided", "already", "answering"]
    verdict: Literal["approved", "rejected"] | str
    user_id: str
    at: datetime | None
    approval: PendingApproval | None


def approval_key(pipeline: str, execution_id: str | None, stage: str, action: str) -> str:
    """The click record key of the latest decision on one approval gate of one execution."""
    return f"approval:{pipeline}:{execution_id or '-'}:{stage}:{action}"


def _abandoned(outcome: str, at: datetime, now: datetime) -> bool:
    return outcome.startswith(PENDING) and (now - at).total_seconds() > PENDING_TAKEOVER_SECONDS


def decide_approval(
    *,
    ops: PipelineOps,
    sessions: SessionFactory,
    now: datetime,
    user_id: str,
    user_name: Callable[[], str],
    pipeline: str,
    stage: str,
    action: str,
    approved: bool,
    comment: str | None,
    execution_id: str | None = None,
    approval: PendingApproval | None = None,
) -> ApprovalOutcome:
    """Answer the approval that waits, once: a second click or command is told who did.

    ``approval`` is the waiting approval when the caller has just read it (a command looks
    it up to check the permission); otherwise it is read from the pipeline state now, so
    the token is always fresh. ``execution_id``, when given (a button names the execution
    it was drawn for), must be the execution the approval waits for. ``user_name`` gives
    the display name for the summary (called only when the answer is sent).

    Raises ``OpsError`` when nothing waits (and no earlier answer of this execution is
    known), when the approval now waits for another execution, or when the backend refuses.
    """
    if approval is None:
        try:
            approval = ops.find_approval(pipeline, stage, action, execution_id=execution_id)
        except OpsError:
            latest_key = approval_key(pipeline, execution_id, stage, action)
            with sessions() as session:
                earlier = bot_store.get_click(session=session, key=latest_key)
            if earlier is not None and execution_id is not None:
                return ApprovalOutcome(
                    state="already",
                    verdict=earlier.outcome,
                    user_id=earlier.user_id,
                    at=utc(earlier.at),
                    approval=None,
                )
            raise
    if execution_id is not None and approval.execution_id not in (None, execution_id):
        raise OpsError(
            f"That approval is no longer waiting: {escape(stage)} / {escape(action)} now waits "
            f"for execution `{escape(approval.execution_id)}`."
        )
    verdict: Literal["approved", "rejected"] = "approved" if approved else "rejected"
    # One record per approval attempt (its token) makes the decision exactly-once across
    # double clicks, Slack retries and several pipebot processes. It says "pending" until the
    # backend has the answer: a process killed in between must not leave a gate that still
    # waits but is reported as answered (a later click takes a stale pending record over;
    # the backend itself accepts one answer per token, so the gate is never answered twice).
    key = approval_key(pipeline, approval.execution_id, stage, action) + f":{approval.token}"
    pending = PENDING + verdict
    with transaction(sessions) as session:
        record, created = bot_store.record_click_once(
            session=session, key=key, user_id=user_id, outcome=pending, at=now
        )
        if not created and _abandoned(record.outcome, utc(record.at), now):
            log.warning(
                "taking over the unfinished answer of %s/%s in %s by %s (from %s)",
                stage,
                action,
                pipeline,
                record.user_id,
                record.at,
            )
            bot_store.forget_click(session=session, key=key)
            record, created = bot_store.record_click_once(
                session=session, key=key, user_id=user_id, outcome=pending, at=now
            )
    if not created:
        return ApprovalOutcome(
            state="answering" if record.outcome.startswith(PENDING) else "already",
            verdict=record.outcome.removeprefix(PENDING),
            user_id=record.user_id,
            at=utc(record.at),
            approval=approval,
        )
    summary = decision_summary(
        approved=approved, user_name=user_name(), user_id=user_id, comment=comment
    )
    try:
        ops.answer(approval, approved=approved, summary=summary)
    except OpsError:
        with transaction(sessions) as session:
            bot_store.forget_click(session=session, key=key)
        raise
    # The latest decision on this gate, to answer a late click once it no longer waits.
    latest_key = approval_key(pipeline, approval.execution_id, stage, action)
    with transaction(sessions) as session:
        bot_store.set_click_outcome(session=session, key=key, outcome=verdict)
        bot_store.forget_click(session=session, key=latest_key)
        bot_store.record_click_once(
            session=session, key=latest_key, user_id=user_id, outcome=verdict
        )
    return ApprovalOutcome(
        state="decided", verdict=verdict, user_id=user_id, at=now, approval=approval
    )
