"""The pipeline list (``list``) and an execution history (``history NAME``): one line per
pipeline, one short paragraph per execution, as many as fit one message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from bot.ops.pipeline_state import FINISHED
from bot.slack.kit import (
    MESSAGE_BLOCKS_MAX,
    MESSAGE_TEXT_BUDGET,
    Block,
    code,
    esc,
    escape,
    header,
    one_line,
    section,
    text_size,
)
from bot.slack.text import (
    NAME_MAX,
    NO_STATUS_EMOJI,
    NOBODY,
    Who,
    ago,
    aware,
    duration,
    name,
    pack,
    rollback_text,
    short_id,
    slack_date,
    source_revisions_text,
    status_emoji,
    status_label,
    stop_reason_text,
    trigger_text,
)

# --------------------------------------------------------------------------- list


def list_blocks(
    *,
    pipelines: Sequence[tuple[Mapping[str, Any], Mapping[str, Any] | None]],
    now: datetime,
    command: str = "/pipeline",
) -> list[Block]:
    """One line per pipeline (ListPipelines summary, latest execution summary or None)."""
    blocks: list[Block] = [header(f"Pipelines ({len(pipelines)})")]
    if not pipelines:
        return [*blocks, section(empty_pipelines_text(command))]
    lines = [pipeline_line(summary, latest, now=now) for summary, latest in pipelines]
    blocks += pack(
        lines,
        max_blocks=MESSAGE_BLOCKS_MAX - len(blocks),
        budget=MESSAGE_TEXT_BUDGET - text_size(blocks),
        more=lambda n: (
            f"…and {n} more pipeline{'s' if n != 1 else ''}. "
            f"`{escape(command)} status NAME` shows one."
        ),
    )
    return blocks


def pipeline_line(
    summary: Mapping[str, Any], latest: Mapping[str, Any] | None, *, now: datetime
) -> str:
    """A pipeline and how its latest execution went (also the App Home's pipeline list)."""
    escaped = name(summary.get("name"))
    version = summary.get("version")
    head = f"*{escaped}*" + (f" v{version}" if version is not None else "")
    if latest is None:
        return f"{NO_STATUS_EMOJI} {head} · never run"
    status = latest.get("status")
    if status in FINISHED:
        when = aware(latest.get("lastUpdateTime")) or aware(latest.get("startTime"))
        timing = f"{ago(when, now)}" if when else ""
    else:
        started = aware(latest.get("startTime"))
        timing = f"· started {ago(started, now)}" if started else ""
    line = f"{status_emoji(status)} {head} · {status_label(status)}"
    if timing:
        line += f" {timing}"
    return line + f" · {code(short_id(latest.get('pipelineExecutionId')))}"


def empty_pipelines_text(command: str) -> str:
    """What to say when there is no pipeline: how to create the first one."""
    cmd = escape(command)
    return (
        "*No pipelines yet.*\n"
        f"Create one with `{cmd} create`: it opens a form where you paste a declaration "
        "(CodePipeline's JSON or YAML, as `aws codepipeline get-pipeline` prints it). "
        f"`{cmd} help create` shows an example."
    )


# --------------------------------------------------------------------------- history


def history_blocks(
    *,
    pipeline: str,
    executions: Sequence[Mapping[str, Any]],
    command: str = "/pipeline",
    who: Who = NOBODY,
) -> list[Block]:
    """Executions (ListPipelineExecutions summaries, newest first) with ID, status, trigger
    and who started it (``who``), source revision, start, end and duration."""
    blocks: list[Block] = [header(f"History · {pipeline}")]
    if not executions:
        return [*blocks, section(f"*{name(pipeline)}* has no executions yet.")]
    blocks += pack(
        [_history_chunk(e, who=who) for e in executions],
        max_blocks=MESSAGE_BLOCKS_MAX - len(blocks),
        budget=MESSAGE_TEXT_BUDGET - text_size(blocks),
        more=lambda n: (
            f"…and {n} older execution{'s' if n != 1 else ''} not shown: "
            f"`{escape(command)} execution {esc(pipeline, NAME_MAX)} ID` shows one."
        ),
        sep="\n\n",
    )
    return blocks


def _history_chunk(execution: Mapping[str, Any], *, who: Who) -> str:
    execution_id = str(execution.get("pipelineExecutionId") or "?")
    status = execution.get("status")
    first = f"{status_emoji(status)} *{esc(short_id(execution_id), 8)}* · {status_label(status)}"
    rollback = rollback_text(execution)
    if rollback:
        first += f" · {rollback}"
    trigger = trigger_text(execution.get("trigger"), by=who.started.get(execution_id))
    if trigger:
        first += f" · {trigger}"
    revisions = source_revisions_text(execution.get("sourceRevisions"))
    if revisions:
        first += f" · {revisions}"
    started = aware(execution.get("startTime"))
    updated = aware(execution.get("lastUpdateTime"))
    times = []
    if started is not None:
        times.append(f"started {slack_date(started)}")
    if status in FINISHED and updated is not None:
        times.append(f"ended {slack_date(updated)}")
        if started is not None:
            times.append(f"took {duration((updated - started).total_seconds())}")
    elif status not in FINISHED:
        times.append("still running")
    lines = [first, "      " + " · ".join(times)]
    summary = execution.get("statusSummary")
    if isinstance(summary, str) and summary.strip():
        lines.append("      _" + esc(one_line(summary), 200) + "_")
    stop = stop_reason_text(execution)
    if stop:
        lines.append(f"      {stop}")
    lines.append(f"      {code(execution_id)}")
    return "\n".join(lines)
