"""Stage conditions: ``beforeEntry``, ``onSuccess`` and ``onFailure.conditions``.

"Conditions contain one or more rules ... If all rules in a condition succeed, then the
condition is met ... when the criteria are not met, the specified result engages"
(https://docs.aws.amazon.com/codepipeline/latest/userguide/stage-conditions.html). A failure
condition's result engages when it *is* met ("The specified result for when the failure
conditions are met, such as rolling back the stage",
https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_FailureConditions.html).

The rules run by the embedded engine [userguide/rule-reference.html]:

- **VariableCheck** (``Variable``, ``Value``, ``Operator`` EQ | NE | CONTAINS | MATCHES): decided
  at once from the execution's variables. MATCHES is a whole-string regular expression match
  (Java's ``Pattern.matches``, which CodePipeline uses; Python's ``re`` reads the same syntax for
  common patterns).
- **DeploymentWindow** (``Cron``, ``TimeZone``): met while the current time (to the second)
  matches the cron expression, evaluated by APScheduler's ``CronTrigger``; outside the window
  the rule stays InProgress with ``due_at`` at the window's next opening, when the worker
  evaluates it again.
- **Commands**: shell commands run by the worker with the rule's input artifacts, as the
  Commands action runs (``bot.engine.rule_runner``).

Every other provider (CloudWatchAlarm, LambdaInvoke, CodeBuild, ...) needs the AWS backend and is
refused when the pipeline is created (``bot.engine.declaration``).

While a stage's condition is evaluated the stage execution is InProgress (it holds the stage's
lock, as its actions would) and ``StageExecution.condition_phase`` names the condition. The
runtime calls ``begin`` where a condition starts (entry to the stage, its actions all succeeded,
an action failed) and ``progress`` while the phase is set; statuses change only through
``states.transition``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from sqlmodel import Session

from bot.engine.errors import RefusedError
from bot.engine.model import PipelineSpec, StageSpec
from bot.engine.states import (
    ConditionStatus,
    ConditionType,
    ExecutionStatus,
    ExecutionType,
    RuleStatus,
    StageStatus,
    transition,
)
from bot.engine.variables import UnresolvedVariableError, resolve_list, resolve_mapping
from storage import condition_store as cstore
from storage.db import utc
from storage.models import (
    ActionExecution,
    ConditionExecution,
    PipelineExecution,
    RuleExecution,
    StageExecution,
)

if TYPE_CHECKING:
    from bot.engine.runtime import AdvanceResult, Runtime

VARIABLE_CHECK: Final = "VariableCheck"
DEPLOYMENT_WINDOW: Final = "DeploymentWindow"
COMMANDS: Final = "Commands"

#: The rule providers the embedded engine runs.
LOCAL_RULE_PROVIDERS: Final = (VARIABLE_CHECK, DEPLOYMENT_WINDOW, COMMANDS)
#: Rule providers CodePipeline has that need the AWS backend [userguide/rule-reference.html].
AWS_RULE_PROVIDERS: Final = ("CloudWatchAlarm", "LambdaInvoke", "CodeBuild")
OPERATORS: Final = ("EQ", "NE", "CONTAINS", "MATCHES")

#: The declaration field of each condition type.
FIELDS: Final = {
    ConditionType.BEFORE_ENTRY: "beforeEntry",
    ConditionType.ON_SUCCESS: "onSuccess",
    ConditionType.ON_FAILURE: "onFailure",
}
#: A condition's result when it declares none: an entry or success condition fails the stage,
#: a failure condition rolls it back (its only result, stage-conditions.html).
DEFAULT_RESULTS: Final = {
    ConditionType.BEFORE_ENTRY: "FAIL",
    ConditionType.ON_SUCCESS: "FAIL",
    ConditionType.ON_FAILURE: "ROLLBACK",
}


@dataclass(frozen=True)
class RuleProperty:
    """One configuration property of a rule type (API RuleConfigurationProperty)."""

    name: str
    required: bool
    description: str


@dataclass(frozen=True)
class RuleType:
    """A rule type as ListRuleTypes shows it: its properties and input artifact counts."""

    provider: str
    properties: tuple[RuleProperty, ...]
    min_inputs: int
    max_inputs: int


#: The rule types the embedded engine runs, with their configuration properties as the rule
#: reference lists them [userguide/rule-reference-VariableCheck.html, -DeploymentWindow.html,
#: -Commands.html].
RULE_TYPES: Final[dict[str, RuleType]] = {
    VARIABLE_CHECK: RuleType(
        VARIABLE_CHECK,
        (
            RuleProperty("Variable", True, "The pipeline variable to check"),
            RuleProperty("Value", True, "The value to check the variable against"),
            RuleProperty("Operator", True, "EQ, NE, CONTAINS or MATCHES"),
        ),
        0,
        10,
    ),
    DEPLOYMENT_WINDOW: RuleType(
        DEPLOYMENT_WINDOW,
        (
            RuleProperty("Cron", True, "When deployments are allowed: a cron expression"),
            RuleProperty("TimeZone", False, "The cron expression's time zone (default UTC)"),
        ),
        0,
        0,
    ),
    COMMANDS: RuleType(COMMANDS, (), 0, 10),
}


# --------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class RuleSpec:
    """One rule of a condition, as declared (API RuleDeclaration)."""

    name: str
    provider: str
    version: str
    configuration: Mapping[str, str]
    commands: tuple[str, ...]
    input_artifacts: tuple[str, ...]
    timeout_minutes: int | None
    region: str | None
    role_arn: str | None

    def type_id(self) -> dict[str, str]:
        return {
            "category": "Rule",
            "owner": "AWS",
            "provider": self.provider,
            "version": self.version,
        }


@dataclass(frozen=True)
class ConditionSpec:
    """A stage's condition of one type: its result and its rules (API Condition)."""

    kind: ConditionType
    result: str
    rules: tuple[RuleSpec, ...]


def _rule(raw: Mapping[str, Any]) -> RuleSpec:
    type_id = raw["ruleTypeId"]
    return RuleSpec(
        name=raw["name"],
        provider=type_id["provider"],
        version=str(type_id.get("version") or "1"),
        configuration={str(k): str(v) for k, v in (raw.get("configuration") or {}).items()},
        commands=tuple(raw.get("commands") or ()),
        input_artifacts=tuple(a["name"] for a in raw.get("inputArtifacts") or ()),
        timeout_minutes=raw.get("timeoutInMinutes"),
        region=raw.get("region"),
        role_arn=raw.get("roleArn"),
    )


def condition_of(spec: PipelineSpec, stage: StageSpec, kind: ConditionType) -> ConditionSpec | None:
    """The stage's condition of type ``kind`` (the API allows exactly one per type), or None."""
    declared = spec.declaration["stages"][stage.index]
    conditions = (declared.get(FIELDS[kind]) or {}).get("conditions") or []
    if not conditions:
        return None
    condition = conditions[0]
    result = condition.get("result")
    if kind == ConditionType.ON_FAILURE:
        result = result or (declared.get("onFailure") or {}).get("result")
    return ConditionSpec(
        kind=kind,
        result=str(result or DEFAULT_RESULTS[kind]),
        rules=tuple(_rule(r) for r in condition.get("rules") or ()),
    )


# --------------------------------------------------------------------------- DeploymentWindow

_QUARTZ_DAYS: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_ORDINALS: Final = {"1": "1st", "2": "2nd", "3": "3rd", "4": "4th", "5": "5th"}


class CronError(ValueError):
    """A DeploymentWindow cron expression the engine cannot read."""


def _day_name(token: str) -> str:
    if token.isdigit():
        number = int(token)
        if not 1 <= number <= 7:
            raise CronError(f"day-of-week {token} is not 1-7 (SUN-SAT)")
        return _QUARTZ_DAYS[number - 1]
    if token.lower() not in _QUARTZ_DAYS:
        raise CronError(f"day-of-week {token!r} is not SUN-SAT or 1-7")
    return token.lower()


def _day_of_week(field: str) -> str:
    """Quartz's day-of-week (1-7 = SUN-SAT, ``?``, ``L``, ``6L``, ``6#3``) in APScheduler's
    words (names, ``last fri``, ``3rd fri``): the field is translated, never evaluated here."""
    parts = []
    for part in field.split(","):
        if part in ("*", "?"):
            parts.append("*")
        elif part == "L":
            parts.append("sat")
        elif part.endswith("L"):
            parts.append(f"last {_day_name(part[:-1])}")
        elif "#" in part:
            day, _, nth = part.partition("#")
            if nth not in _ORDINALS:
                raise CronError(f"day-of-week {part!r}: the occurrence must be 1-5")
            parts.append(f"{_ORDINALS[nth]} {_day_name(day)}")
        elif "/" in part:
            raise CronError(f"day-of-week increments ({part!r}) are not supported locally")
        elif "-" in part:
            low, _, high = part.partition("-")
            parts.append(f"{_day_name(low)}-{_day_name(high)}")
        else:
            parts.append(_day_name(part))
    return ",".join(parts)


def _day_of_month(field: str) -> str:
    if field == "?":
        return "*"
    if field == "L":
        return "last"
    if "W" in field or "L" in field:
        raise CronError(
            f"day-of-month {field!r}: W and L offsets are not supported by the embedded engine"
        )
    return field


def deployment_window(cron: str, time_zone: str | None) -> CronTrigger:
    """The CronTrigger of a DeploymentWindow rule's ``Cron`` (six fields plus an optional year:
    seconds, minutes, hours, day-of-month, month, day-of-week in Quartz's notation) in
    ``TimeZone`` (default UTC). AWS's rule reference takes only ``*`` for seconds; the engine
    evaluates whatever the field says (``*``: every second of the allowed minutes). Raises
    ``CronError`` with what is wrong."""
    fields = cron.split()
    if len(fields) not in (6, 7):
        raise CronError(
            f"the cron expression {cron!r} has {len(fields)} fields; it takes 6 (seconds, "
            "minutes, hours, day-of-month, month, day-of-week) and an optional year"
        )
    try:
        zone = ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CronError(f"unknown TimeZone {time_zone!r}") from exc
    second, minute, hour, day, month, weekday, *year = fields
    try:
        return CronTrigger(
            year=year[0] if year else "*",
            month=month,
            day=_day_of_month(day),
            day_of_week=_day_of_week(weekday),
            hour=hour,
            minute=minute,
            second=second,
            timezone=zone,
        )
    except ValueError as exc:
        raise CronError(f"the cron expression {cron!r} is not valid: {exc}") from exc


def window_opening(trigger: CronTrigger, now: datetime) -> tuple[bool, datetime | None]:
    """(True, None) when ``now`` is inside the window; else (False, when it next opens), the
    opening None for a window that never opens again (a cron bounded by a past year)."""
    start = now.replace(microsecond=0)
    fire = trigger.get_next_fire_time(None, start)
    if fire is not None and fire <= start:
        return True, None
    return False, (utc(fire) if fire is not None else None)


# --------------------------------------------------------------------------- starting


@dataclass
class _Context:
    runtime: Runtime
    session: Session
    execution: PipelineExecution
    spec: PipelineSpec
    stage: StageSpec
    stage_row: StageExecution
    all_actions: list[ActionExecution]
    now: datetime
    result: AdvanceResult


def begin(
    *,
    runtime: Runtime,
    session: Session,
    execution: PipelineExecution,
    spec: PipelineSpec,
    stage: StageSpec,
    stage_row: StageExecution,
    kind: ConditionType,
    all_actions: list[ActionExecution],
    now: datetime,
    result: AdvanceResult,
) -> bool:
    """Start evaluating the stage's ``kind`` condition; False when it has none or it was
    already evaluated in this attempt of the stage (a stage retry evaluates it again).

    Creates the ConditionExecution and a RuleExecution per rule; VariableCheck and
    DeploymentWindow rules are evaluated at once, Commands rules are handed to the worker
    (``result.rule_launches``). The runtime's next round decides (``progress``).
    """
    condition = condition_of(spec, stage, kind)
    assert execution.id is not None
    if condition is None:
        return False
    previous = cstore.latest_condition(
        session=session, execution_pk=execution.id, stage_name=stage.name, condition_type=kind
    )
    if previous is not None and previous.stage_attempt == stage_row.attempt:
        return False
    row = cstore.add_condition(
        session=session,
        row=ConditionExecution(
            execution_pk=execution.id,
            pipeline_id=execution.pipeline_id,
            stage_name=stage.name,
            stage_attempt=stage_row.attempt,
            condition_type=kind.value,
            result=condition.result,
            status=ConditionStatus.IN_PROGRESS.value,
            started_at=now,
            updated_at=now,
        ),
    )
    ctx = _Context(runtime, session, execution, spec, stage, stage_row, all_actions, now, result)
    namespaces = runtime.namespaces(
        session=session, execution=execution, spec=spec, all_actions=all_actions
    )
    rules = [_new_rule(ctx, row, rule, namespaces) for rule in condition.rules]
    cstore.add_rules(session=session, rows=rules)
    for rule_row in rules:
        if rule_row.status == RuleStatus.IN_PROGRESS and rule_row.provider == COMMANDS:
            assert rule_row.id is not None
            result.rule_launches.append(rule_row.id)
    stage_row.condition_phase = kind.value
    stage_row.updated_at = now
    execution.updated_at = now
    return True


def _new_rule(
    ctx: _Context,
    condition: ConditionExecution,
    rule: RuleSpec,
    namespaces: Mapping[str, Mapping[str, str]],
) -> RuleExecution:
    payload: dict[str, Any] = {
        "ruleTypeId": rule.type_id(),
        "configuration": dict(rule.configuration),
        "resolvedConfiguration": dict(rule.configuration),
        "inputArtifacts": list(rule.input_artifacts),
    }
    if rule.region:
        payload["region"] = rule.region
    if rule.role_arn:
        payload["roleArn"] = rule.role_arn
    row = RuleExecution(
        rule_execution_id=str(uuid.uuid4()),
        condition_pk=condition.id or 0,
        execution_pk=ctx.execution.id or 0,
        pipeline_id=ctx.execution.pipeline_id,
        pipeline_version=ctx.execution.pipeline_version,
        stage_name=ctx.stage.name,
        rule_name=rule.name,
        provider=rule.provider,
        status=RuleStatus.IN_PROGRESS.value,
        started_at=ctx.now,
        updated_at=ctx.now,
        input="{}",
        output="{}",
    )
    try:
        payload["resolvedConfiguration"] = resolve_mapping(
            rule.configuration, namespaces=namespaces
        )
        if rule.provider == COMMANDS:
            payload["commands"] = resolve_list(list(rule.commands), namespaces=namespaces)
            payload["timeoutInMinutes"] = rule.timeout_minutes
    except UnresolvedVariableError as exc:
        row.input = json.dumps(payload)
        _finish_rule(
            row, succeeded=False, summary=exc.summary, now=ctx.now, code="ConfigurationError"
        )
        return row
    row.input = json.dumps(payload)
    if rule.provider != COMMANDS:
        _evaluate_inline(row, payload["resolvedConfiguration"], now=ctx.now)
    return row


def _finish_rule(
    row: RuleExecution, *, succeeded: bool, summary: str, now: datetime, code: str = "RuleFailed"
) -> None:
    transition(row, RuleStatus.SUCCEEDED if succeeded else RuleStatus.FAILED, now=now)
    row.summary = summary[:2048]
    row.due_at = None
    if not succeeded:
        row.error_code = code
        row.error_message = row.summary


def _evaluate_inline(
    row: RuleExecution, configuration: Mapping[str, str], *, now: datetime
) -> None:
    """Decide a VariableCheck or DeploymentWindow rule now (a window that is closed leaves the
    rule InProgress until ``due_at``)."""
    if row.provider == VARIABLE_CHECK:
        met, summary = variable_check(configuration)
        _finish_rule(row, succeeded=met, summary=summary, now=now)
        return
    try:
        trigger = deployment_window(configuration["Cron"], configuration.get("TimeZone"))
    except CronError as exc:
        _finish_rule(row, succeeded=False, summary=str(exc), now=now, code="ConfigurationError")
        return
    inside, opening = window_opening(trigger, now)
    if inside:
        _finish_rule(row, succeeded=True, summary="Inside the deployment window.", now=now)
        return
    if opening is None:
        summary = f"The deployment window ({configuration['Cron']}) never opens again."
        _finish_rule(row, succeeded=False, summary=summary, now=now)
        return
    row.due_at = opening
    row.summary = (
        f"Outside the deployment window ({configuration['Cron']}); the stage waits until it "
        f"opens at {opening.isoformat()}."
    )
    row.updated_at = now


def variable_check(configuration: Mapping[str, str]) -> tuple[bool, str]:
    """Whether a VariableCheck rule's resolved ``Variable`` passes ``Operator`` against
    ``Value`` [userguide/rule-reference-VariableCheck.html], and a summary saying why."""
    actual, expected = configuration["Variable"], configuration["Value"]
    operator = configuration["Operator"]
    if operator == "EQ":
        met = actual == expected
    elif operator == "NE":
        met = actual != expected
    elif operator == "CONTAINS":
        met = expected in actual
    else:
        try:
            met = re.fullmatch(expected, actual) is not None
        except re.error as exc:
            return False, f"Value {expected!r} is not a valid regular expression: {exc}"
    verdict = "met" if met else "not met"
    return met, f"Variable value {actual!r} {operator} {expected!r}: {verdict}."


# --------------------------------------------------------------------------- deciding


def progress(
    *,
    runtime: Runtime,
    session: Session,
    executions: list[PipelineExecution],
    execution: PipelineExecution,
    spec: PipelineSpec,
    stage: StageSpec,
    stage_row: StageExecution,
    all_actions: list[ActionExecution],
    now: datetime,
    result: AdvanceResult,
) -> bool | None:
    """Move the stage's condition on; the runtime calls it while ``condition_phase`` is set.

    Returns False while the condition waits (a Commands rule runs, a window is closed), True
    when it decided the stage (failed, skipped, rolled back), None when the stage goes on as
    it would without the condition: actions start after an entry condition is met or
    overridden, a stage succeeds after its success condition, and a stop ends it Stopped (the
    condition is then Cancelled, its rules Abandoned). ``executions`` is the advance's list of
    live executions: an automatic rollback joins it.
    """
    assert execution.id is not None
    kind = ConditionType(str(stage_row.condition_phase))
    row = cstore.latest_condition(
        session=session, execution_pk=execution.id, stage_name=stage.name, condition_type=kind
    )
    if row is None or row.stage_attempt != stage_row.attempt:
        stage_row.condition_phase = None
        return None
    rules = cstore.rules_of(session=session, condition_pks=[row.id or 0])
    if execution.stop_mode is not None:
        if row.status == ConditionStatus.IN_PROGRESS:
            why = "Cancelled: the execution was stopped" + (
                f" ({execution.stop_reason})" if execution.stop_reason else ""
            )
            _end(row, rules, ConditionStatus.CANCELLED, why=why, now=now)
        stage_row.condition_phase = None
        return None
    if row.status == ConditionStatus.IN_PROGRESS and not _decide(row, rules, now=now):
        return False
    stage_row.condition_phase = None
    met = row.status in (ConditionStatus.SUCCEEDED, ConditionStatus.OVERRIDDEN)
    ctx = _Context(runtime, session, execution, spec, stage, stage_row, all_actions, now, result)
    if kind == ConditionType.ON_FAILURE:
        _after_failure_condition(ctx, row, met=met, executions=executions)
        return True
    if met:
        return None
    why = _not_met_summary(kind, stage, row, rules)
    if row.result == "SKIP":
        transition(stage_row, StageStatus.SKIPPED, now=now)
        _move_on(ctx)
        return True
    transition(stage_row, StageStatus.FAILED, now=now)
    transition(execution, ExecutionStatus.FAILED, now=now)
    execution.status_summary = why
    if row.result == "ROLLBACK":
        _roll_back(ctx, why=why, executions=executions)
    return True


def _decide(row: ConditionExecution, rules: list[RuleExecution], *, now: datetime) -> bool:
    """Evaluate the waiting rules that are due; record the condition's status once every rule
    succeeded or one failed (the others are then abandoned). True when decided."""
    for rule in rules:
        if (
            rule.status == RuleStatus.IN_PROGRESS
            and rule.due_at is not None
            and utc(rule.due_at) <= now
        ):
            _evaluate_inline(rule, json.loads(rule.input)["resolvedConfiguration"], now=now)
    failed = [r for r in rules if r.status == RuleStatus.FAILED]
    if failed:
        for rule in rules:
            if rule.status == RuleStatus.IN_PROGRESS:
                transition(rule, RuleStatus.ABANDONED, now=now)
                rule.summary = f'Abandoned: rule "{failed[0].rule_name}" failed first.'
                rule.due_at = None
        transition(row, ConditionStatus.FAILED, now=now)
        row.summary = f'Rule "{failed[0].rule_name}" failed: {failed[0].summary or "failed"}'[:2048]
        return True
    if all(r.status == RuleStatus.SUCCEEDED for r in rules):
        transition(row, ConditionStatus.SUCCEEDED, now=now)
        row.summary = f"All {len(rules)} rule(s) succeeded."
        return True
    return False


def _not_met_summary(
    kind: ConditionType, stage: StageSpec, row: ConditionExecution, rules: list[RuleExecution]
) -> str:
    what = "entry" if kind == ConditionType.BEFORE_ENTRY else "success"
    if row.result == "SKIP":
        return f'Stage "{stage.name}" skipped: its {what} condition was not met: {row.summary}'
    return (f'Stage "{stage.name}" failed: its {what} condition was not met: {row.summary}')[:2000]


def _move_on(ctx: _Context) -> None:
    """The execution leaves the stage for the next one (or ends Succeeded after the last)."""
    from bot.engine.runtime import is_last_stage

    execution = ctx.execution
    if is_last_stage(execution, spec=ctx.spec, stage=ctx.stage):
        transition(execution, ExecutionStatus.SUCCEEDED, now=ctx.now)
        execution.status_summary = None
    else:
        execution.stage_index += 1
        execution.waiting = True
        execution.arrived_at = ctx.now
        execution.updated_at = ctx.now


def _roll_back(ctx: _Context, *, why: str, executions: list[PipelineExecution]) -> None:
    """A condition's ROLLBACK result: the runtime's automatic rollback of the stage to the
    most recent execution that succeeded in it (stage-rollback-auto.html); a rollback
    execution is never rolled back itself."""
    if ctx.execution.execution_type != ExecutionType.STANDARD:
        return
    rollback = ctx.runtime.start_automatic_rollback(
        session=ctx.session,
        pipeline_id=ctx.execution.pipeline_id,
        execution=ctx.execution,
        stage=ctx.stage,
        now=ctx.now,
    )
    if rollback is None:
        ctx.execution.status_summary = (
            f"{why} Not rolled back: no earlier execution of this pipeline version succeeded "
            f'in stage "{ctx.stage.name}".'
        )[:2000]
    else:
        executions.append(rollback)


def _after_failure_condition(
    ctx: _Context, row: ConditionExecution, *, met: bool, executions: list[PipelineExecution]
) -> None:
    """The stage failed and its failure condition is decided: the stage and the execution
    fail; a met condition with the ROLLBACK result also rolls the stage back."""
    from bot.engine.runtime import latest_actions

    latest = latest_actions(
        ctx.all_actions, stage_name=ctx.stage.name, base_attempt=ctx.stage_row.base_attempt
    )
    failed = [a for a in latest.values() if a.status != "Succeeded"]
    first = min(failed, key=lambda a: a.id or 0) if failed else None
    why = f'Stage "{ctx.stage.name}" failed'
    if first is not None:
        why += f': action "{first.action_name}": {first.summary or "failed"}'
    transition(ctx.stage_row, StageStatus.FAILED, now=ctx.now)
    transition(ctx.execution, ExecutionStatus.FAILED, now=ctx.now)
    ctx.execution.status_summary = why[:2000]
    if met and row.result == "ROLLBACK":
        _roll_back(ctx, why=why[:1500], executions=executions)


def _end(
    row: ConditionExecution,
    rules: list[RuleExecution],
    status: ConditionStatus,
    *,
    why: str,
    now: datetime,
) -> None:
    transition(row, status, now=now)
    row.summary = why[:2048]
    for rule in rules:
        if rule.status == RuleStatus.IN_PROGRESS:
            transition(rule, RuleStatus.ABANDONED, now=now)
            rule.summary = why[:2048]
            rule.due_at = None


def end_running(
    *,
    session: Session,
    execution: PipelineExecution,
    stage_row: StageExecution | None,
    why: str,
    now: datetime,
) -> None:
    """Abandon the execution's conditions still being evaluated (an update winds it down, its
    pipeline is deleted): the conditions end Abandoned, their running rules too. A Commands
    rule's process is killed by the worker's next scan (``RuleRunner.kill_abandoned``)."""
    assert execution.id is not None
    running = cstore.running_conditions(session=session, execution_pk=execution.id)
    rules = cstore.rules_of(session=session, condition_pks=[c.id or 0 for c in running])
    for row in running:
        _end(
            row,
            [r for r in rules if r.condition_pk == row.id],
            ConditionStatus.ABANDONED,
            why=why,
            now=now,
        )
    if stage_row is not None:
        stage_row.condition_phase = None


# --------------------------------------------------------------------------- rule runs


def complete_rule(
    *, rule: RuleExecution, succeeded: bool, summary: str, external_id: str | None, now: datetime
) -> None:
    """Record a Commands rule run's outcome (the caller checked it is still InProgress)."""
    _finish_rule(rule, succeeded=succeeded, summary=summary, now=now, code="JobFailed")
    rule.external_execution_id = external_id


# --------------------------------------------------------------------------- override


def override(
    *,
    session: Session,
    latest_in_stage: StageExecution | None,
    execution: PipelineExecution,
    spec: PipelineSpec,
    stage: StageSpec,
    kind: ConditionType,
    overridden_by: str,
    now: datetime,
) -> None:
    """OverrideStageCondition: let a waiting or failed entry or success condition pass
    (https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_OverrideStageCondition.html).

    A waiting condition ends Overridden and its running rules Abandoned; the caller's advance
    then starts the stage's actions (entry) or completes the stage (success). A failed
    condition also brings its Failed stage and execution back to InProgress first. Refusals:
    a SKIP condition, or nothing waiting or failed to let pass, is
    ConditionNotOverridableException; an execution other than the stage's latest is
    NotLatestPipelineExecutionException.
    """
    assert execution.id is not None
    declared = condition_of(spec, stage, kind)
    if declared is not None and declared.result == "SKIP":
        raise RefusedError(
            "ConditionNotOverridableException",
            f"The {FIELDS[kind]} condition of stage '{stage.name}' has the result SKIP; "
            "conditions with the SKIP result cannot be overridden",
        )
    if latest_in_stage is None or latest_in_stage.execution_pk != execution.id:
        raise RefusedError(
            "NotLatestPipelineExecutionException",
            f"Execution '{execution.execution_id}' is not the latest execution in stage "
            f"'{stage.name}'; only the latest execution's conditions can be overridden",
        )
    row = cstore.latest_condition(
        session=session, execution_pk=execution.id, stage_name=stage.name, condition_type=kind
    )
    stage_row = latest_in_stage
    overridable = (ConditionStatus.IN_PROGRESS, ConditionStatus.FAILED, ConditionStatus.ERRORED)
    if row is None or row.status not in overridable or row.stage_attempt != stage_row.attempt:
        state = "was never evaluated" if row is None else f"is {row.status}"
        raise RefusedError(
            "ConditionNotOverridableException",
            f"The {FIELDS[kind]} condition of stage '{stage.name}' in execution "
            f"'{execution.execution_id}' {state}; only a waiting or failed condition can be "
            "overridden",
        )
    if row.status != ConditionStatus.IN_PROGRESS:
        if stage_row.status != StageStatus.FAILED or execution.status != ExecutionStatus.FAILED:
            raise RefusedError(
                "ConditionNotOverridableException",
                f"Stage '{stage.name}' of execution '{execution.execution_id}' is "
                f"{stage_row.status}; a failed condition is overridden while its stage is "
                "Failed",
            )
        transition(stage_row, StageStatus.IN_PROGRESS, now=now)
        transition(execution, ExecutionStatus.IN_PROGRESS, now=now)
        execution.status_summary = None
        execution.waiting = False
        execution.stage_index = stage.index
        stage_row.condition_phase = kind.value
    rules = cstore.rules_of(session=session, condition_pks=[row.id or 0])
    _end(
        row,
        rules,
        ConditionStatus.OVERRIDDEN,
        why=f"Overridden by {overridden_by}.",
        now=now,
    )
    row.overridden_by = overridden_by
    execution.updated_at = now
    stage_row.updated_at = now


__all__ = [
    "AWS_RULE_PROVIDERS",
    "LOCAL_RULE_PROVIDERS",
    "RULE_TYPES",
    "ConditionSpec",
    "CronError",
    "RuleSpec",
    "begin",
    "condition_of",
    "deployment_window",
    "end_running",
    "override",
    "progress",
    "variable_check",
]
