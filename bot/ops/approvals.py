"""Approvals answered from Slack: the decision, exactly once, and the summary it leaves.

The summary pipebot writes into PutApprovalResult (``result.summary``, at most 512
characters: https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_ApprovalResult.html)
is read back by the notifier from GetPipelineState / ListActionExecutions to name the
Slack user who decided rather than pipebot's AWS identity. The format and its parser
live side by side here so they cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

SUMMARY_MAX: Final = 512
"""ApprovalResult.summary's maximum length (the API model's constraint)."""

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
