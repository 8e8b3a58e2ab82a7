"""One execution in detail (``execution NAME ID``, and the View log button): its facts,
every action execution in the order they started, and the failed action's log tail."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from bot.ops.approvals import parse_decision_summary
from bot.ops.pipeline_state import FINISHED, is_action_failed
from bot.slack import buttons
from bot.slack.action_facts import marker_lines
from bot.slack.ids import ButtonRef
from bot.slack.kit import (
    MESSAGE_BLOCKS_MAX,
    MESSAGE_TEXT_BUDGET,
    SECTION_TEXT_MAX,
    Block,
    clip,
    clip_mrkdwn,
    code,
    context,
    divider,
    esc,
    escape,
    header,
    one_line,
    section,
    text_size,
)
from bot.slack.kit import actions as kit_actions
from bot.slack.status import summary_excerpt, summary_headline
from bot.slack.text import (
    NAME_MAX,
    NOBODY,
    SUMMARY_MAX,
    Who,
    aware,
    caller_text,
    condition_status_text,
    duration,
    mention,
    name,
    pack,
    revision_text,
    rollback_text,
    short_id,
    slack_date,
    status_emoji,
    status_label,
    tail_fit,
    trigger_text,
)

_ARTIFACTS_SHOWN: Final = 3
_NEVER: Final = datetime.min.replace(tzinfo=UTC)  # sorts actions without a time first


def execution_blocks(
    *,
    pipeline: str,
    execution: Mapping[str, Any],
    actions: Sequence[Mapping[str, Any]],
    log_tail: str | None,
    command: str = "/pipeline",
    who: Who = NOBODY,
    rules: Sequence[Mapping[str, Any]] = (),
    rules_error: str | None = None,
    markers: Sequence[tuple[str, str, bool]] = (),
    log_action: Mapping[str, Any] | None = None,
    logs: bool = False,
) -> list[Block]:
    """One execution (GetPipelineExecution's ``pipelineExecution``) with every action
    execution (ListActionExecutions details, any order) and the failed action's log tail;
    ``who`` names the Slack user who started it. ``rules`` are its stage conditions' rule
    executions (ListRuleExecutions details), ``rules_error`` why they could not be read.
    ``markers`` are the failed action's phases and hooks (``action_facts.log_markers``), drawn
    above its log tail. ``log_action`` is the action execution whose log ``log_tail`` is
    (default: the one that failed last). With ``logs`` (the backend keeps logs: the embedded
    engine), each action that keeps one (not a source or an approval) gets a View log
    button, as many as fit; a multi-line status summary shows its first line, and the rest
    in a code block when no log tail is shown (the log tail is that rest)."""
    execution_id = str(execution.get("pipelineExecutionId") or "?")
    ordered = sorted(actions, key=lambda a: aware(a.get("startTime")) or _NEVER)
    blocks: list[Block] = [
        header(f"{pipeline} · execution {short_id(execution_id)}"),
        section(_facts(execution, ordered, started_by=who.started.get(execution_id))),
    ]
    tail: list[Block] = []
    if log_tail is None:
        excerpt = summary_excerpt(execution.get("statusSummary"))
        if excerpt is not None:
            blocks.append(excerpt)
    else:
        tail.append(
            _log_section(
                log_tail=log_tail,
                title="\n".join(
                    [
                        _log_title(ordered) if log_action is None else _title_of(log_action),
                        *marker_lines(markers),
                    ]
                ),
                pipeline=pipeline,
                execution_id=execution_id,
                command=command,
            )
        )
    if logs:
        tail += _log_buttons(ordered, pipeline=pipeline, execution_id=execution_id)
    if rules_error:
        tail.insert(0, context(f"Rule results not shown: {clip_mrkdwn(rules_error, 500)}"))
    rule_chunks = [_rule_execution_chunk(r) for r in rules]
    if ordered or rule_chunks:
        middle = pack(
            [*rule_chunks, *(_action_execution_chunk(a) for a in ordered)],
            max_blocks=MESSAGE_BLOCKS_MAX - len(blocks) - len(tail) - 1,
            budget=MESSAGE_TEXT_BUDGET - text_size(blocks) - text_size(tail),
            more=lambda n: f"…and {n} more action execution{'s' if n != 1 else ''} not shown.",
        )
        blocks += [divider(), *middle]
    else:
        blocks.append(section("_No action has run in this execution yet._"))
    return [*blocks, *tail]


def _facts(
    execution: Mapping[str, Any],
    ordered: Sequence[Mapping[str, Any]],
    *,
    started_by: str | None,
) -> str:
    """Status and ID, version, trigger (and who started it) and mode, times, source
    revisions, summary."""
    execution_id = str(execution.get("pipelineExecutionId") or "?")
    status = execution.get("status")
    lines = [f"{status_emoji(status)} *{status_label(status)}* · {code(execution_id)}"]
    rollback = rollback_text(execution)
    if rollback:
        lines[0] += f" · {rollback}"
    facts = []
    if execution.get("pipelineVersion") is not None:
        facts.append(f"pipeline version {execution['pipelineVersion']}")
    trigger = trigger_text(execution.get("trigger"), by=started_by)
    if trigger:
        facts.append(trigger)
    if execution.get("executionMode"):
        facts.append(f"mode {esc(str(execution['executionMode']), 20)}")
    if facts:
        lines.append(" · ".join(facts))
    starts = [t for t in (aware(a.get("startTime")) for a in ordered) if t is not None]
    ends = [t for t in (aware(a.get("lastUpdateTime")) for a in ordered) if t is not None]
    if starts:
        timing = f"started {slack_date(starts[0])}"
        if status in FINISHED and ends:
            timing += (
                f" · ended {slack_date(max(ends))}"
                f" · took {duration((max(ends) - starts[0]).total_seconds())}"
            )
        lines.append(timing)
    for artifact in list(execution.get("artifactRevisions") or [])[:_ARTIFACTS_SHOWN]:
        revision = revision_text(artifact.get("revisionId"), artifact.get("revisionSummary"))
        if revision:
            lines.append(f"{name(artifact.get('name'), 60)}: {revision}")
    first = summary_headline(execution.get("statusSummary"))
    if first:
        lines.append("_" + esc(first, SUMMARY_MAX) + "_")
    return "\n".join(lines)


_UNLOGGED_CATEGORIES: Final = frozenset({"Source", "Approval"})
"""Action categories whose runs keep no log on the embedded engine (a source fetch, a
manual approval); its build, test, compute and deploy actions write one."""
_MAX_LOG_CHOICES: Final = 40
"""Options of the View log menu (text budget: 40 labels of 75 characters)."""


def has_log(category: Any) -> bool:
    """Whether an embedded engine action of ``category`` keeps a log."""
    return isinstance(category, str) and category not in _UNLOGGED_CATEGORIES


def _log_buttons(
    ordered: Sequence[Mapping[str, Any]], *, pipeline: str, execution_id: str
) -> list[Block]:
    """A "View log…" menu of each action of the execution that keeps a log, in the order
    they first started (``buttons.view_log_select``: one menu, options within Slack's
    limits); a note when some are left out."""
    seen: dict[tuple[str, str], None] = {}
    for detail in ordered:
        category = ((detail.get("input") or {}).get("actionTypeId") or {}).get("category")
        if has_log(category):
            seen[(str(detail.get("stageName") or "?"), str(detail.get("actionName") or "?"))] = None
    choices = [
        (
            ButtonRef(pipeline=pipeline, execution=execution_id, stage=stage, action=action),
            f"{clip(stage, 36)} / {clip(action, 36)}",
        )
        for stage, action in list(seen)[:_MAX_LOG_CHOICES]
    ]
    menu, dropped = buttons.view_log_select(choices=choices)
    blocks = kit_actions([menu])
    left = len(seen) - (len(choices) - dropped)
    if left:
        blocks.append(context(f"…and {left} more action{'s' if left != 1 else ''} with a log."))
    return blocks


def _rule_execution_chunk(detail: Mapping[str, Any]) -> str:
    """One rule execution of a stage condition: stage, rule, status, summary or error."""
    status = detail.get("status")
    where = f"*{name(detail.get('stageName'))}* / rule *{name(detail.get('ruleName'))}*"
    line = f"🚦 {where} · {condition_status_text(status)}"
    result = (detail.get("output") or {}).get("executionResult") or {}
    summary = result.get("externalExecutionSummary") or (result.get("errorDetails") or {}).get(
        "message"
    )
    if isinstance(summary, str) and summary.strip():
        line += " — " + esc(one_line(summary), SUMMARY_MAX)
    return line


def _action_execution_chunk(detail: Mapping[str, Any]) -> str:
    status = detail.get("status")
    where = f"*{name(detail.get('stageName'))}* / *{name(detail.get('actionName'))}*"
    line = f"{status_emoji(status)} {where} · {status_label(status)}"
    started = aware(detail.get("startTime"))
    updated = aware(detail.get("lastUpdateTime"))
    if started is not None:
        line += f" · started {slack_date(started)}"
        if status in FINISHED | {"Abandoned"} and updated is not None:
            line += f" · took {duration((updated - started).total_seconds())}"
    result = (detail.get("output") or {}).get("executionResult") or {}
    summary = result.get("externalExecutionSummary") or (result.get("errorDetails") or {}).get(
        "message"
    )
    decision = parse_decision_summary(summary if isinstance(summary, str) else None)
    if decision is not None and status != "InProgress":
        # Answered in Slack: the person, not the caller AWS recorded (pipebot itself).
        line += f" · by {mention(decision.user_id)}"
    elif detail.get("updatedBy") and status != "InProgress":
        line += f" · by {caller_text(detail['updatedBy'])}"
    lines = [line]
    if isinstance(summary, str) and summary.strip():
        lines.append("      " + esc(one_line(summary), SUMMARY_MAX))
    return "\n".join(lines)


def _title_of(detail: Mapping[str, Any]) -> str:
    return (
        f"*Log tail* of {name(detail.get('stageName'), 60)} / {name(detail.get('actionName'), 60)}:"
    )


def _log_title(ordered: Sequence[Mapping[str, Any]]) -> str:
    """Whose log it is: the action that failed last, when one did."""
    failed = [a for a in ordered if is_action_failed(a.get("status"))]
    if not failed:
        return "*Log tail:*"
    last = max(failed, key=lambda a: aware(a.get("lastUpdateTime")) or _NEVER)
    return f"*Log tail* of {name(last.get('stageName'), 60)} / {name(last.get('actionName'), 60)}:"


def _log_section(
    *, log_tail: str, title: str, pipeline: str, execution_id: str, command: str
) -> Block:
    """The log's last lines in a code block, cut from the top to fit one section."""
    note = (
        f"_(truncated; full log: `{escape(command)} execution {esc(pipeline, NAME_MAX)} "
        f"{esc(execution_id, 64)}`)_"
    )
    raw = log_tail.rstrip("\n")
    if not raw.strip():
        return section(f"{title}\n```\n(empty log)\n```")
    frame = len(title) + len("\n```\n") + len("\n```")
    body, cut = tail_fit(raw, SECTION_TEXT_MAX - frame)
    if not cut:
        return section(f"{title}\n```\n{body}\n```")
    body, _ = tail_fit(raw, SECTION_TEXT_MAX - frame - len("…\n") - len(note) - 1)
    return section(f"{title}\n```\n…\n{body}\n```\n{note}")
