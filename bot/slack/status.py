"""The status message of one pipeline (``status NAME``, and its Refresh): every stage and
action, what waits, and the buttons that apply.

Input is a GetPipelineState response plus the newest ListPipelineExecutions summaries.
A pipeline can hold 50 stages of 50 actions, more than one message can show: the stages
fill what the header, the rows of buttons and the footer leave of Slack's budgets, in
less detail when they must (see ``_stages``). ``OUTCOME_MAX`` stays free so that the
outcome line of a click fits below the message.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, NamedTuple

from bot.ops.pipeline_state import (
    EXECUTION_TYPE_ROLLBACK,
    IN_PROGRESS,
    ConditionView,
    PendingApproval,
    RollbackTarget,
    is_action_failed,
    is_rollback,
    is_waiting_approval,
    open_conditions,
    retryable_stages,
    stage_conditions,
)
from bot.slack import buttons
from bot.slack.action_facts import fact_lines, read_facts
from bot.slack.ids import REFRESH_STATUS, START, STOP, ButtonRef
from bot.slack.kit import (
    MESSAGE_BLOCKS_MAX,
    MESSAGE_TEXT_BUDGET,
    SECTION_TEXT_MAX,
    Block,
    Element,
    actions,
    button,
    clip,
    clip_mrkdwn,
    code,
    confirm_dialog,
    context,
    divider,
    esc,
    escape,
    header,
    one_line,
    section,
    text_size,
)
from bot.slack.outcomes import OUTCOME_MAX
from bot.slack.text import (
    ENTERING_EMOJI,
    NAME_MAX,
    NOBODY,
    SUMMARY_MAX,
    WAITING_EMOJI,
    WAITING_LABEL,
    Who,
    ago,
    aware,
    caller_text,
    condition_status_text,
    date_and_ago,
    fits,
    join_lines,
    mention,
    name,
    pack,
    revision_text,
    rollback_text,
    short_id,
    slack_date,
    source_revisions_text,
    status_emoji,
    status_label,
    stop_reason_text,
    tail_fit,
    trigger_text,
)

_MAX_APPROVAL_ROWS: Final = 5  # approvals with their own buttons
_MAX_RETRY_ROWS: Final = 5  # failed stages with their own retry buttons
_MAX_OVERRIDE_ROWS: Final = 5  # conditions with their own Override button
_MAX_RULES_SHOWN: Final = 10  # rules under one condition
EXCERPT_MAX: Final = 900
"""Characters of a multi-line status summary's excerpt (its code block and title)."""
_ROWS_BUDGET: Final = 3500  # text for those rows, so that the stages keep the larger part
_MAX_INBOUND_SHOWN: Final = 5
_EARLIER_SHOWN: Final = 4
_INDENT: Final = "      "
_ACTION_MARK: Final = "↳ "
"""Begins an action's line under its stage's, so the two never look alike."""
_FACT_INDENT: Final = "    "
"""Indents an action's facts (failed phase or hook, tests, deployed revision) under it."""
_FACT_STATUSES: Final = frozenset({"Succeeded", "Failed", "Abandoned"})


def status_blocks(
    *,
    state: Mapping[str, Any],
    executions: Sequence[Mapping[str, Any]],
    approvals_allowed: bool,
    operate_allowed: bool,
    now: datetime,
    command: str = "/pipeline",
    who: Who = NOBODY,
    rollback_targets: Mapping[str, RollbackTarget] | None = None,
    parallel_approvals: Sequence[PendingApproval] = (),
    logged: Collection[tuple[str, str]] = frozenset(),
) -> list[Block]:
    """A pipeline's status: every stage and action, what waits, and the buttons that apply.

    ``state`` is a GetPipelineState response; ``executions`` the newest few
    ListPipelineExecutions summaries, newest first. Start/Stop/Retry buttons appear
    only with ``operate_allowed``, Approve/Reject only with ``approvals_allowed``;
    Refresh and View log always. ``command`` is the slash command, for hints; ``who``
    names the Slack users who started, retried or disabled what the state shows.
    ``rollback_targets`` (stage → the execution it rolls back to, ``PipelineOps.
    rollback_targets``) draw a Roll back button per stage for operators; each stage's
    conditions and their rules are drawn under it, with Override on a waiting or failed
    entry or success condition for operators. ``parallel_approvals``
    (``PipelineOps.parallel_approvals``) are the approvals waiting in the other executions of
    a PARALLEL pipeline, each drawn with its own Approve/Reject. ``logged`` holds the
    (stage, action) pairs whose runs keep a log (``handlers.common.logged_actions``: the
    embedded engine's build, test, compute and deploy actions; none on AWS): each one that
    ran is an option of one "View log…" menu (Slack wants an action_id unique within its
    block; a failed action keeps its button beside its stage's Retry), as many as fit, and
    a note names ``execution`` for the rest. A multi-line ``statusSummary`` of the latest
    execution shows its first line, and the rest as an excerpt in a code block.
    """
    pipeline = str(state.get("pipelineName") or "?")
    latest = executions[0] if executions else None
    latest_id = latest.get("pipelineExecutionId") if latest is not None else None
    top = _top(state, executions, pipeline=pipeline, now=now, command=command, who=who)
    rows = _button_rows(
        state,
        pipeline=pipeline,
        approvals_allowed=approvals_allowed,
        operate_allowed=operate_allowed,
        now=now,
        command=command,
        rollback_targets=rollback_targets or {},
        parallel_approvals=parallel_approvals,
        logged=logged,
    )
    bottom = [
        *rows,
        *actions(_controls(pipeline, latest, operate_allowed=operate_allowed)),
        context(f"Updated {slack_date(now)}"),
    ]
    middle = _stages(
        list(state.get("stageStates") or []),
        pipeline=pipeline,
        max_blocks=MESSAGE_BLOCKS_MAX - len(top) - len(bottom),
        budget=MESSAGE_TEXT_BUDGET - OUTCOME_MAX - text_size(top) - text_size(bottom),
        now=now,
        command=command,
        view=_View(latest_id=latest_id, who=who),
    )
    return [*top, *middle, *bottom]


# --------------------------------------------------------------------------- header


def _top(
    state: Mapping[str, Any],
    executions: Sequence[Mapping[str, Any]],
    *,
    pipeline: str,
    now: datetime,
    command: str,
    who: Who,
) -> list[Block]:
    """Header, the latest execution, the few before it, then a divider."""
    version = state.get("pipelineVersion")
    latest = executions[0] if executions else None
    top: list[Block] = [header(f"{pipeline} · v{version}" if version is not None else pipeline)]
    top.append(section(_latest_text(latest, pipeline=pipeline, now=now, command=command, who=who)))
    excerpt = summary_excerpt(latest.get("statusSummary") if latest is not None else None)
    if excerpt is not None:
        top.append(excerpt)
    earlier = _earlier_text(executions[1:], now=now)
    if earlier:
        top.append(context(earlier))
    top.append(divider())
    return top


def _latest_text(
    latest: Mapping[str, Any] | None,
    *,
    pipeline: str,
    now: datetime,
    command: str,
    who: Who,
) -> str:
    """The latest execution: its status, times, what and who started it, its summary and
    stop reason. (An execution waiting at an approval is "In progress", as the channel's
    message says; its stage says "Waiting for approval".)"""
    if latest is None:
        return (
            "*Latest execution:* none yet. Start one with "
            f"`{escape(command)} start {esc(pipeline, NAME_MAX)}`."
        )
    status = latest.get("status")
    started = aware(latest.get("startTime"))
    updated = aware(latest.get("lastUpdateTime"))
    execution_id = latest.get("pipelineExecutionId")
    lines = [
        f"*Latest execution* {code(short_id(execution_id))} · "
        f"{status_emoji(status)} {status_label(status)}"
    ]
    rollback = rollback_text(latest)
    if rollback:
        lines[0] += f" · {rollback}"
    times = []
    if started is not None:
        times.append(f"started {date_and_ago(started, now)}")
    if updated is not None:
        times.append(f"last change {date_and_ago(updated, now)}")
    if times:
        lines.append(" · ".join(times))
    trigger = trigger_text(
        latest.get("trigger"), by=who.started.get(str(execution_id)), capital=True
    )
    revisions = source_revisions_text(latest.get("sourceRevisions"))
    detail = " · ".join(t for t in (trigger, revisions) if t)
    if detail:
        lines.append(detail)
    first = summary_headline(latest.get("statusSummary"))
    if first:
        lines.append("_" + esc(first, SUMMARY_MAX) + "_")
    stop = stop_reason_text(latest)
    if stop:
        lines.append(stop)
    return "\n".join(lines)


def summary_headline(summary: Any) -> str:
    """A status summary's first non-blank line, on one line ('' when there is none): the
    rest of a multi-line summary (the engine appends the failed action's log) is
    ``summary_excerpt``'s."""
    if not isinstance(summary, str):
        return ""
    for line in summary.splitlines():
        if line.strip():
            return one_line(line)
    return ""


def summary_excerpt(summary: Any, *, room: int = EXCERPT_MAX) -> Block | None:
    """What follows a status summary's first line, as the thread reply of a failure shows
    a log: its end in a code block of at most ``room`` characters of text (whole lines
    where possible, "…" above when cut); None when the summary is one line."""
    if not isinstance(summary, str):
        return None
    lines = summary.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    rest = "\n".join(lines[start + 1 :]).strip("\n")
    if not rest.strip():
        return None
    title = "*Details:*"
    frame = len(title) + len("\n```\n") + len("…\n") + len("\n```")
    body, cut = tail_fit(rest, room - frame)
    return section(f"{title}\n```\n{'…' + chr(10) if cut else ''}{body}\n```")


def _earlier_text(executions: Sequence[Mapping[str, Any]], *, now: datetime) -> str | None:
    shown = []
    for execution in executions[:_EARLIER_SHOWN]:
        when = aware(execution.get("lastUpdateTime")) or aware(execution.get("startTime"))
        mark = " ↩ rollback" if is_rollback(execution) else ""
        shown.append(
            f"{status_emoji(execution.get('status'))} "
            f"{code(short_id(execution.get('pipelineExecutionId')))}{mark} "
            f"{ago(when, now)}".rstrip()
        )
    return "Earlier: " + " · ".join(shown) if shown else None


# --------------------------------------------------------------------------- rows of buttons


def _button_rows(
    state: Mapping[str, Any],
    *,
    pipeline: str,
    approvals_allowed: bool,
    operate_allowed: bool,
    now: datetime,
    command: str,
    rollback_targets: Mapping[str, RollbackTarget],
    parallel_approvals: Sequence[PendingApproval] = (),
    logged: Collection[tuple[str, str]] = frozenset(),
) -> list[Block]:
    """Waiting approvals, conditions to override, failed or stopped stages, the stages that
    can be rolled back, then the View log buttons, each a row with its buttons.

    Both kinds share one slice of the text budget (``_ROWS_BUDGET``: long names make
    buttons and confirms costly) so that the stages keep the larger part; what does not
    fit is counted in a note naming the command that reaches it.
    """
    rows: list[Block] = []
    waiting = _waiting_approvals(state)
    known = {(w.execution_id, w.stage, w.action) for w in waiting}
    waiting += [
        _Waiting(stage=p.stage, action=p.action, execution_id=p.execution_id, since=p.since)
        for p in parallel_approvals
        if (p.execution_id, p.stage, p.action) not in known
    ]
    shown = _take_rows(
        [
            _approval_row(
                approval,
                pipeline=pipeline,
                allowed=approvals_allowed,
                label_names=len(waiting) > 1,
                now=now,
            )
            for approval in waiting[:_MAX_APPROVAL_ROWS]
        ],
        rows,
        budget=_ROWS_BUDGET,
    )
    if len(waiting) > shown:
        extra = len(waiting) - shown
        rows.append(
            context(
                f"…and {extra} more approval{'s' if extra != 1 else ''} waiting: "
                f"`{escape(command)} approve {esc(pipeline, NAME_MAX)} STAGE/ACTION`"
            )
        )
    if operate_allowed:
        conditions = open_conditions(state)
        shown = _take_rows(
            [_override_row(c, pipeline=pipeline) for c in conditions[:_MAX_OVERRIDE_ROWS]],
            rows,
            budget=_ROWS_BUDGET,
        )
        if len(conditions) > shown:
            extra = len(conditions) - shown
            rows.append(
                context(
                    f"…and {extra} more condition{'s' if extra != 1 else ''} to override: "
                    f"`{escape(command)} override {esc(pipeline, NAME_MAX)} STAGE`"
                )
            )
    failed = list(retryable_stages(state))
    retry_rows = [
        _retry_row(stage, pipeline=pipeline, allowed=operate_allowed)
        for stage in failed[:_MAX_RETRY_ROWS]
    ]
    shown = _take_rows(retry_rows, rows, budget=_ROWS_BUDGET)
    if len(failed) > shown and any(retry_rows):
        extra = len(failed) - shown
        rows.append(
            context(
                f"…and {extra} more failed stage{'s' if extra != 1 else ''}: "
                f"`{escape(command)} retry {esc(pipeline, NAME_MAX)} STAGE`"
            )
        )
    if operate_allowed and rollback_targets:
        _take_rows([_rollback_row(rollback_targets)], rows, budget=_ROWS_BUDGET)
    rows += _log_rows(
        state,
        pipeline=pipeline,
        logged=logged,
        budget=_ROWS_BUDGET - text_size(rows),
        command=command,
    )
    return rows


class _Logged(NamedTuple):
    """An action that ran and keeps a log, in the execution its stage last ran."""

    stage: str
    action: str
    execution_id: str


def _logged_runs(state: Mapping[str, Any], logged: Collection[tuple[str, str]]) -> list[_Logged]:
    runs = []
    for stage in state.get("stageStates") or []:
        stage_name = str(stage.get("stageName") or "?")
        execution_id = (stage.get("latestExecution") or {}).get("pipelineExecutionId")
        if not execution_id:
            continue
        for action in stage.get("actionStates") or []:
            action_name = str(action.get("actionName") or "?")
            latest = action.get("latestExecution") or {}
            if (stage_name, action_name) in logged and latest.get("status"):
                runs.append(_Logged(stage_name, action_name, str(execution_id)))
    return runs


def _log_rows(
    state: Mapping[str, Any],
    *,
    pipeline: str,
    logged: Collection[tuple[str, str]],
    budget: int,
    command: str,
) -> list[Block]:
    """A "View log…" menu of every action that ran and keeps a log, with as many options
    as ``budget`` characters allow (one menu: an action_id is unique within its block); a
    note names ``execution`` for the rest."""
    runs = _logged_runs(state, logged)
    if not runs:
        return []
    note = context(
        f"…and more logs: `{escape(command)} execution {esc(pipeline, NAME_MAX)} ID` "
        "offers each action's"
    )
    choices = [
        (
            ButtonRef(
                pipeline=pipeline, execution=run.execution_id, stage=run.stage, action=run.action
            ),
            f"{clip(run.stage, 36)} / {clip(run.action, 36)}",
        )
        for run in runs
    ]
    while choices:
        menu, dropped = buttons.view_log_select(choices=choices)
        rows = actions([menu])
        if len(choices) - dropped < len(runs):
            rows.append(note)
        if text_size(rows) <= budget:
            return rows
        choices = choices[: len(choices) // 2] if len(choices) > 8 else choices[:-1]
    return [note] if text_size([note]) <= budget else []


def _override_row(condition: ConditionView, *, pipeline: str) -> list[Block]:
    """A condition that waits or failed: what, then Override (operators only reach here)."""
    text = (
        f"🚦 *{condition.label} of {name(condition.stage)}:* "
        f"{condition_status_text(condition.status)} · execution "
        f"{code(short_id(condition.execution_id))}"
    )
    return [
        section(text),
        *actions(
            [
                buttons.override(
                    pipeline=pipeline,
                    stage=condition.stage,
                    execution_id=str(condition.execution_id),
                    condition_type=str(condition.condition_type),
                    text=f"Override: {clip(condition.stage, 50)}",
                )
            ]
        ),
    ]


def _rollback_row(targets: Mapping[str, RollbackTarget]) -> list[Block]:
    """One row of Roll back buttons, one per stage with an earlier success."""
    return actions(
        [
            buttons.rollback(
                target=target,
                text=f"Roll back {clip(stage, 30)} to {short_id(target.execution_id)}",
            )
            for stage, target in targets.items()
        ]
    )


def condition_lines(stage: Mapping[str, Any]) -> list[str]:
    """Each condition of a stage and its rules' results (GetPipelineState's
    ``*ConditionState``), rule summaries escaped."""
    lines = []
    for condition in stage_conditions(stage):
        line = f"🚦 _{condition.label}_ · {_condition_result(condition, stage)}"
        if condition.summary:
            line += " — " + esc(one_line(condition.summary), SUMMARY_MAX)
        lines.append(line)
        for rule in condition.rules[:_MAX_RULES_SHOWN]:
            rule_line = f"{_ACTION_MARK}{name(rule.name)} · {condition_status_text(rule.status)}"
            if rule.summary:
                rule_line += " — " + esc(one_line(rule.summary), SUMMARY_MAX)
            lines.append(_INDENT + rule_line)
        extra = len(condition.rules) - _MAX_RULES_SHOWN
        if extra > 0:
            lines.append(f"{_INDENT}…and {extra} more rule{'s' if extra != 1 else ''}")
    return lines


_SKIPPED_THE_STAGE: Final = "⏭ not met: skipped the stage"


def _condition_result(condition: ConditionView, stage: Mapping[str, Any]) -> str:
    """A condition's status in words; an entry condition that was not met in a stage that
    was skipped is one whose result is SKIP (the only result that skips a stage) and did
    what it was declared to do, not an error: "skipped the stage".
    https://docs.aws.amazon.com/codepipeline/latest/userguide/stage-conditions.html"""
    skipped = (stage.get("latestExecution") or {}).get("status") == "Skipped"
    if (
        skipped
        and condition.member == "beforeEntryConditionState"
        and condition.status in ("Failed", "Errored")
    ):
        return _SKIPPED_THE_STAGE
    return condition_status_text(condition.status)


class _Waiting(NamedTuple):
    """An approval waiting, as the status message shows it (never its token)."""

    stage: str
    action: str
    execution_id: str | None
    since: datetime | None


def _waiting_approvals(state: Mapping[str, Any]) -> list[_Waiting]:
    """Every approval waiting, in pipeline order.

    Not ``pipeline_state.pending_approvals``: that one reads the token for an answer and
    requires stage and action names, which the API model leaves optional; a status
    message draws whatever it is given ("?" for a missing name).
    """
    waiting = []
    for stage in state.get("stageStates") or []:
        execution_id = (stage.get("latestExecution") or {}).get("pipelineExecutionId")
        for action in stage.get("actionStates") or []:
            latest = action.get("latestExecution") or {}
            if is_waiting_approval(latest):
                waiting.append(
                    _Waiting(
                        stage=str(stage.get("stageName") or "?"),
                        action=str(action.get("actionName") or "?"),
                        execution_id=execution_id,
                        since=aware(latest.get("lastStatusChange")),
                    )
                )
    return waiting


def _approval_row(
    approval: _Waiting, *, pipeline: str, allowed: bool, label_names: bool, now: datetime
) -> list[Block]:
    """A waiting approval: what and since when, then Approve/Reject if the viewer may."""
    stage, action, execution_id = approval.stage, approval.action, approval.execution_id
    text = (
        f"{WAITING_EMOJI} *Approval waiting:* {name(stage)} / {name(action)}"
        f" · execution {code(short_id(execution_id))} · since {date_and_ago(approval.since, now)}"
    )
    row = [section(text)]
    if allowed and execution_id:
        ref = ButtonRef(pipeline=pipeline, execution=execution_id, stage=stage, action=action)
        row += actions(
            buttons.approve_reject(
                ref=ref, pipeline=pipeline, stage=stage, action=action, label_names=label_names
            )
        )
    return row


def _retry_row(stage: Mapping[str, Any], *, pipeline: str, allowed: bool) -> list[Block]:
    stage_name = str(stage.get("stageName") or "?")
    execution_id = str((stage.get("latestExecution") or {}).get("pipelineExecutionId"))
    row: list[Element | None] = []
    if allowed:
        row += buttons.retry(
            pipeline=pipeline,
            stage=stage_name,
            execution_id=execution_id,
            failed_text=f"Retry failed actions: {clip(stage_name, 40)}",
            all_text=f"Retry all actions: {clip(stage_name, 40)}",
        )
    failed_action = _failed_action(stage)
    if failed_action is not None:
        row.append(
            buttons.view_log(
                pipeline=pipeline,
                stage=stage_name,
                execution_id=execution_id,
                action=failed_action,
                text=f"View log: {clip(failed_action, 50)}",
            )
        )
    return actions(row)


def _failed_action(stage: Mapping[str, Any]) -> str | None:
    """The first failed action of a stage, whose View log sits beside the stage's Retry."""
    return next(
        (
            str(a.get("actionName") or "?")
            for a in stage.get("actionStates") or []
            if (a.get("latestExecution") or {}).get("status") == "Failed"
        ),
        None,
    )


def _take_rows(groups: Sequence[list[Block]], rows: list[Block], *, budget: int) -> int:
    """Append whole groups to ``rows`` while ``rows`` stays within ``budget`` characters;
    return how many groups were taken."""
    for taken, group in enumerate(groups):
        if text_size(rows) + text_size(group) > budget:
            return taken
        rows.extend(group)
    return len(groups)


def _controls(
    pipeline: str, latest: Mapping[str, Any] | None, *, operate_allowed: bool
) -> list[Element | None]:
    """Start (and Stop while the latest execution runs) for operators; Refresh for all."""
    pipeline_ref = ButtonRef(pipeline=pipeline)
    controls: list[Element | None] = []
    if operate_allowed:
        controls.append(
            button(
                text="Start",
                action_id=START,
                ref=pipeline_ref,
                style="primary",
                confirm=confirm_dialog(
                    title="Start a new execution?",
                    text=f"Start a new execution of {clip(pipeline, 100)} from the latest source?",
                    confirm="Start",
                ),
            )
        )
        if latest is not None and latest.get("status") in IN_PROGRESS:
            controls.append(
                button(
                    text="Stop",
                    action_id=STOP,
                    ref=ButtonRef(pipeline=pipeline, execution=latest.get("pipelineExecutionId")),
                    style="danger",
                )
            )
    controls.append(button(text="Refresh", action_id=REFRESH_STATUS, ref=pipeline_ref))
    return controls


# --------------------------------------------------------------------------- stages


def _stages(
    stages: Sequence[Mapping[str, Any]],
    *,
    pipeline: str,
    max_blocks: int,
    budget: int,
    now: datetime,
    command: str,
    view: _View,
) -> list[Block]:
    """Every stage within what is left of the budgets: in full if they fit, else quiet
    stages compact, else every stage compact, and what still does not fit is counted."""
    if not stages:
        return [section("_No stage has run yet._")]
    chunks = [_stage_chunk(s, now=now, compact=False, view=view) for s in stages]
    if not fits(chunks, max_blocks=max_blocks, budget=budget):
        chunks = [
            _stage_chunk(s, now=now, compact=_is_quiet(s, now=now), view=view) for s in stages
        ]
    if not fits(chunks, max_blocks=max_blocks, budget=budget):
        chunks = [_stage_chunk(s, now=now, compact=True, view=view) for s in stages]
    return pack(
        chunks,
        max_blocks=max_blocks,
        budget=budget,
        more=lambda n: (
            f"…and {n} more stage{'s' if n != 1 else ''}: the pipeline is too long for one "
            "message. Each stage's actions are in "
            f"`{escape(command)} execution {esc(pipeline, 100)} ID`."
        ),
    )


class _View(NamedTuple):
    """What every stage's drawing needs to know beyond the stage itself."""

    latest_id: Any
    who: Who


def _stage_chunk(stage: Mapping[str, Any], *, now: datetime, compact: bool, view: _View) -> str:
    lines = [
        line
        for line in (_transition_line(stage, now=now, who=view.who), _inbound_line(stage))
        if line is not None
    ]
    heading = _stage_heading(stage, view=view)
    stage_actions = list(stage.get("actionStates") or [])
    if compact:
        marks = []
        if any(is_waiting_approval(a.get("latestExecution")) for a in stage_actions):
            marks.append(f"{WAITING_EMOJI} approval waiting")
        failed = [
            a
            for a in stage_actions
            if is_action_failed((a.get("latestExecution") or {}).get("status"))
        ]
        if failed:
            marks.append(f"❌ {name(failed[0].get('actionName'), 60)}")
        marks.append(f"{len(stage_actions)} action{'s' if len(stage_actions) != 1 else ''}")
        marks += [
            f"🚦 {c.label.lower()} {_condition_result(c, stage)}"
            for c in stage_conditions(stage)
            if c.status != "Succeeded"
        ]
        heading += " · " + " · ".join(marks)
        if lines:
            # The transition and inbound lines matter more than the actions: keep them short.
            lines = [clip_mrkdwn(line, 400) for line in lines]
        return "\n".join([*lines, heading])
    action_lines = [_INDENT + _ACTION_MARK + _action_line(a, now=now) for a in stage_actions]
    conditions = [_INDENT + line for line in condition_lines(stage)]
    return join_lines(
        [*lines, heading, *conditions, *action_lines],
        limit=SECTION_TEXT_MAX,
        more=lambda n: f"{_INDENT}…and {n} more action{'s' if n != 1 else ''}",
    )


def _stage_heading(stage: Mapping[str, Any], *, view: _View) -> str:
    """The stage's name and status ("Waiting for approval" while one of its approvals
    waits); the execution it shows when that is not the latest; its retries and by whom."""
    latest = stage.get("latestExecution") or {}
    status = latest.get("status")
    stage_name = str(stage.get("stageName") or "?")
    if status == "InProgress" and any(
        is_waiting_approval(a.get("latestExecution")) for a in stage.get("actionStates") or []
    ):
        line = f"{WAITING_EMOJI} *{name(stage_name)}* · {WAITING_LABEL}"
    else:
        line = f"{status_emoji(status)} *{name(stage_name)}* · {status_label(status)}"
    if latest.get("type") == EXECUTION_TYPE_ROLLBACK:
        line += " · ↩ rollback"
    execution_id = latest.get("pipelineExecutionId")
    if execution_id and view.latest_id is None:
        line += f" · {code(short_id(execution_id))}"
    elif execution_id and execution_id != view.latest_id:
        # Not the latest execution's run of the stage: say so, it is easily misread.
        line += f" · in earlier execution {code(short_id(execution_id))}"
    retry = stage.get("retryStageMetadata") or {}
    attempts = (retry.get("manualStageRetryAttempt") or 0) + (
        retry.get("autoStageRetryAttempt") or 0
    )
    if attempts:
        line += f" · retry {attempts}"
        if retry.get("latestRetryTrigger") == "AutomatedStageRetry":
            line += ", retried automatically"
        elif stage_name in view.who.retried:
            line += f", retried by {mention(view.who.retried[stage_name])}"
    return line


def _action_line(action: Mapping[str, Any], *, now: datetime) -> str:
    """One action of a stage: status and since when, its revision, why it failed."""
    action_name = name(action.get("actionName"))
    latest = action.get("latestExecution") or {}
    status = latest.get("status")
    changed = aware(latest.get("lastStatusChange"))
    if is_waiting_approval(latest):
        since = date_and_ago(changed, now)
        line = f"{WAITING_EMOJI} {action_name} · waiting for approval since {since}"
    else:
        line = f"{status_emoji(status)} {action_name} · {status_label(status)}"
        if status == "InProgress":
            line += f" · started {ago(changed, now)}" if changed else ""
            percent = latest.get("percentComplete")
            if isinstance(percent, int):
                line += f" · {percent}%"
        elif changed is not None:
            line += f" {ago(changed, now)}"
    revision = action.get("currentRevision") or {}
    if revision.get("revisionId"):
        # A source action's summary is the commit message only when it succeeded.
        message = latest.get("summary") if status == "Succeeded" else None
        line += " · " + revision_text(revision["revisionId"], message)
    facts = read_facts(latest.get("summary")) if status in _FACT_STATUSES else None
    if is_action_failed(status):
        error = latest.get("errorDetails") or {}
        summary = latest.get("summary") or error.get("message")
        if isinstance(summary, str) and summary.strip():
            # With facts, the summary's first line says how it failed; the rest (the test
            # lines, the log's end) is drawn as the facts below, or left to View log.
            shown = summary.strip().splitlines()[0] if facts else summary
            line += " — " + esc(one_line(shown), SUMMARY_MAX)
    return "".join([line, *(f"\n{_INDENT}{_FACT_INDENT}{fact}" for fact in fact_lines(facts))])


def _transition_line(stage: Mapping[str, Any], *, now: datetime, who: Who = NOBODY) -> str | None:
    """A disabled transition into the stage: by whom (the Slack user when pipebot knows,
    else the caller the backend recorded), when, and why."""
    transition = stage.get("inboundTransitionState") or {}
    if transition.get("enabled", True):
        return None
    stage_name = str(stage.get("stageName") or "?")
    line = f"⛔ _Transition into {name(stage_name)} disabled_"
    if stage_name in who.disabled:
        line += f" by {mention(who.disabled[stage_name])}"
    elif transition.get("lastChangedBy"):
        line += f" by {caller_text(transition['lastChangedBy'])}"
    changed = aware(transition.get("lastChangedAt"))
    if changed is not None:
        line += f" {date_and_ago(changed, now)}"
    if transition.get("disabledReason"):
        line += f": “{esc(one_line(str(transition['disabledReason'])), 320)}”"
    return line


def _inbound(stage: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    many = stage.get("inboundExecutions")
    if many:
        return list(many)
    one = stage.get("inboundExecution")
    return [one] if one else []


def _inbound_line(stage: Mapping[str, Any]) -> str | None:
    inbound = _inbound(stage)
    if not inbound:
        return None
    shown = [
        f"{code(short_id(e.get('pipelineExecutionId')))} ({status_label(e.get('status'))})"
        for e in inbound[:_MAX_INBOUND_SHOWN]
    ]
    extra = len(inbound) - len(shown)
    tail = f" and {extra} more" if extra > 0 else ""
    return (
        f"{ENTERING_EMOJI} _Waiting to enter {name(stage.get('stageName'))}:_ "
        f"{', '.join(shown)}{tail}"
    )


def _is_quiet(stage: Mapping[str, Any], *, now: datetime) -> bool:
    """Nothing to act on or look at: succeeded or never run, nothing waiting or disabled."""
    status = (stage.get("latestExecution") or {}).get("status")
    if status not in (None, "Succeeded", "Skipped"):
        return False
    if _inbound(stage) or _transition_line(stage, now=now):
        return False
    if any(c.status not in (None, "Succeeded") for c in stage_conditions(stage)):
        return False
    for action in stage.get("actionStates") or []:
        action_status = (action.get("latestExecution") or {}).get("status")
        if action_status not in (None, "Succeeded"):
            return False
    return True
