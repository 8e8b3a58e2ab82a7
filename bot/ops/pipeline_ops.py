"""What the bot does with a pipeline client, whichever backend it is.

``PipelineOps`` turns a user's intent ("approve the gate that waits", "retry
the failed stage of the latest execution") into CodePipeline calls, resolving
defaults from ``get_pipeline_state`` at call time (approval tokens change on
retry, so they are never stored or sent to Slack). Every failure becomes an
``OpsError`` whose message a user can act on; no traceback leaves this module.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)

from bot.engine.declaration import parse_declaration_text, split_declaration, validate_declaration
from bot.engine.errors import DeclarationError
from bot.errors import PipebotError
from bot.ops.client import ActionLogs, ChangeFeed, PipelineClient
from bot.ops.pipeline_state import (
    APPROVAL_SUMMARY_MAX,
    IN_PROGRESS,
    OVERRIDABLE_CONDITIONS,
    STOP_REASON_MAX,
    PendingApproval,
    RollbackTarget,
    is_action_failed,
    is_execution_id,
    is_execution_prefix,
    is_rollback,
    is_source_stage,
    pending_approvals,
    retryable_stages,
    rollback_candidates,
    rollback_target_from,
    stage_conditions,
)
from bot.slack.action_facts import log_markers
from bot.slack.kit import escape
from storage.db import utc

log = logging.getLogger(__name__)
T = TypeVar("T")

ERROR_MESSAGES: Mapping[str, str] = {
    "PipelineNotFoundException": "There is no pipeline with that name.",
    "PipelineNameInUseException": "A pipeline with that name already exists; pick another name "
    "or use `edit`.",
    "PipelineVersionNotFoundException": "That pipeline version does not exist.",
    "PipelineExecutionNotFoundException": "There is no execution with that ID in this pipeline; "
    "`history` lists them.",
    "PipelineExecutionNotStoppableException": "That execution has already finished, so it "
    "cannot be stopped.",
    "DuplicatedStopRequestException": "That execution is already stopping. To abandon its "
    "running actions, stop it again with `--abandon`.",
    "StageNotFoundException": "That stage does not exist in this pipeline; `status` shows the "
    "stages.",
    "ActionNotFoundException": "That action does not exist in this stage.",
    "StageNotRetryableException": "That stage cannot be retried: only a Failed or Stopped stage "
    "of an execution that was not superseded can be.",
    "NotLatestPipelineExecutionException": "A newer execution has entered that stage since; "
    "retry that one instead.",
    "InvalidApprovalTokenException": "That approval is no longer waiting (it was retried, "
    "expired or answered); `status` shows what waits now.",
    "ApprovalAlreadyCompletedException": "That approval has already been answered.",
    "ConflictException": "Another change to this pipeline is in progress; try again in a moment.",
    "ConcurrentModificationException": "Another change to this pipeline is in progress; try "
    "again in a moment.",
    "ConcurrentPipelineExecutionsLimitExceededException": "This pipeline already runs as many "
    "executions as it may; wait for one to finish.",
    "LimitExceededException": "An AWS CodePipeline limit was reached for this account.",
    "InvalidStructureException": "The declaration is not valid.",
    "InvalidStageDeclarationException": "A stage of the declaration is not valid.",
    "InvalidActionDeclarationException": "An action of the declaration is not valid.",
    "InvalidBlockerDeclarationException": "A blocker of the declaration is not valid.",
    "InvalidTagsException": "The tags are not valid.",
    "TooManyTagsException": "There are too many tags (at most 50).",
    "InvalidNextTokenException": "The page token is not valid; start the listing again.",
    "ValidationException": "The request was refused as invalid.",
    "UnableToRollbackStageException": "That stage cannot be rolled back to that execution: "
    "only to an execution that succeeded in the stage, in the pipeline's current version, "
    "that is not itself a rollback; never the source stage, nor in PARALLEL mode.",
    "PipelineExecutionOutdatedException": "That execution ran an older version of the "
    "pipeline; roll back to one that ran the current version.",
    "ConditionNotOverridableException": "That condition cannot be overridden (a condition "
    "whose result is SKIP, or one that is no longer waiting or failed).",
    "ThrottlingException": "AWS is throttling requests right now; try again in a moment.",
    "AccessDeniedException": "pipebot's AWS credentials are not allowed to do that: add the "
    "codepipeline permission to its IAM policy (see README, Running against AWS).",
    "UnrecognizedClientException": "pipebot's AWS credentials are not valid.",
    "ExpiredTokenException": "pipebot's AWS credentials have expired; renew them.",
    "InvalidClientTokenId": "pipebot's AWS access key is not valid.",
}


class OpsError(PipebotError):
    """A pipeline operation that failed; ``code`` is AWS's error code when AWS (or the
    engine, with AWS's codes) refused it.

    ``message`` is mrkdwn: every value in it that a user, a declaration or AWS controls is
    escaped (``bot.slack.kit.escape``) where it is put in, so it can never ping a channel,
    mention someone or hide a link (https://api.slack.com/reference/surfaces/formatting#escaping).
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


_LOCAL_DETAIL_SAYS_NOTHING: Final = frozenset(
    {"PipelineNotFoundException", "PipelineNameInUseException"}
)
"""Codes whose message from the embedded engine adds only its stand-in AWS account
(``000000000000``) to what pipebot already says: left out on that backend."""


def describe_client_error(
    exc: ClientError, *, pipeline: str | None = None, local: bool = False
) -> OpsError:
    """The user's text for an error AWS (or the engine, with AWS's codes) answered.

    ``pipeline`` names the pipeline the call was about, so a PipelineNotFoundException
    says which name was not found; ``local`` (the embedded engine) leaves out details that
    would only show the engine's stand-in account."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    detail = str(error.get("Message", "")).strip()
    known = ERROR_MESSAGES.get(code)
    text = f"AWS CodePipeline refused the request ({escape(code)})." if known is None else known
    if code == "PipelineNotFoundException" and pipeline is not None:
        text = f"There is no pipeline named `{escape(pipeline)}`" + (
            "." if local else " in this AWS account and region."
        )
    if local and code in _LOCAL_DETAIL_SAYS_NOTHING:
        detail = ""
    if detail and detail not in text:
        text = f"{text}\n> {escape(detail[:1500])}"
    return OpsError(text, code=code)


def run_guarded(call: Callable[[], T], *, pipeline: str | None = None, local: bool = False) -> T:
    """Run a backend call; turn every expected failure into an OpsError (``pipeline`` and
    ``local`` as ``describe_client_error`` takes them)."""
    try:
        return call()
    except ClientError as exc:
        raise describe_client_error(exc, pipeline=pipeline, local=local) from None
    except ParamValidationError as exc:
        raise OpsError(f"The request was not valid: {escape(str(exc))}") from None
    except (NoCredentialsError, PartialCredentialsError):
        raise OpsError(
            "pipebot has no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or give it an instance/task role (see README)."
        ) from None
    except NoRegionError:
        raise OpsError("pipebot has no AWS region: set AWS_REGION (see README).") from None
    except EndpointConnectionError as exc:
        raise OpsError(f"pipebot could not reach AWS CodePipeline: {escape(str(exc))}") from None
    except BotoCoreError as exc:
        raise OpsError(f"The AWS call failed: {escape(str(exc))}") from None


@dataclass(frozen=True)
class ExecutionView:
    """One execution as ``execution NAME ID`` shows it. ``rules`` are its rule executions
    (ListRuleExecutions details, oldest first); ``rules_error`` says why they could not be
    read (an IAM policy without ``codepipeline:ListRuleExecutions``, say)."""

    execution: dict[str, Any]
    actions: list[dict[str, Any]]
    log_tail: str | None
    rules: list[dict[str, Any]] = field(default_factory=list)
    rules_error: str | None = None
    markers: list[tuple[str, str, bool]] = field(default_factory=list)
    """The failed action's phase and hook markers (``bot.slack.action_facts.log_markers``),
    read from its whole log where the backend keeps logs (the embedded engine)."""


_TOKEN_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")
PREFIX_SCAN_MAX: Final = 1000
"""How many of a pipeline's newest executions an execution ID prefix is looked for among."""
_CANDIDATES_SHOWN: Final = 5
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def request_token(*parts: str) -> str:
    """A clientRequestToken from Slack identifiers: AWS allows 1-128 of [A-Za-z0-9-].

    Slack's trigger IDs contain dots, so they are mapped; the same click or Slack
    retry maps to the same token, which keeps a start idempotent.
    """
    token = _TOKEN_UNSAFE.sub("-", "-".join(parts)).strip("-")
    return (token or "pipebot")[:128]


class PipelineOps:
    """Pipeline operations on a boto3-shaped client (AWS's or the embedded engine)."""

    def __init__(self, *, client: PipelineClient, local: bool) -> None:
        self._client = client
        self._local = local

    @property
    def local(self) -> bool:
        """Whether the backend is the embedded engine (declarations are checked for it)."""
        return self._local

    def _run(self, call: Callable[[], T], *, pipeline: str | None = None) -> T:
        """``run_guarded`` for this backend; ``pipeline`` is the name the call is about."""
        return run_guarded(call, pipeline=pipeline, local=self._local)

    # --- reads -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        paginator = self._client.get_paginator("list_pipelines")
        return self._run(
            lambda: [p["name"] for page in paginator.paginate() for p in page["pipelines"]]
        )

    def list_with_latest(self) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        def read() -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
            paginator = self._client.get_paginator("list_pipelines")
            result: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
            for page in paginator.paginate():
                for summary in page["pipelines"]:
                    latest = self._client.list_pipeline_executions(
                        pipelineName=summary["name"], maxResults=1
                    )["pipelineExecutionSummaries"]
                    result.append((summary, latest[0] if latest else None))
            return result

        return self._run(read)

    def state(self, name: str) -> dict[str, Any]:
        return self._run(lambda: dict(self._client.get_pipeline_state(name=name)), pipeline=name)

    def executions(self, name: str, limit: int) -> list[dict[str, Any]]:
        return self._run(
            lambda: list(
                self._client.list_pipeline_executions(pipelineName=name, maxResults=limit)[
                    "pipelineExecutionSummaries"
                ]
            ),
            pipeline=name,
        )

    def executions_since(
        self, name: str, since: datetime, *, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """The pipeline's executions started at or after ``since`` (newest first, at most
        ``limit``), page by page until an older one shows up."""

        def read() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            token: str | None = None
            while len(found) < limit:
                page = self._client.list_pipeline_executions(
                    pipelineName=name,
                    maxResults=min(100, limit - len(found)),
                    **({"nextToken": token} if token else {}),
                )
                for summary in page["pipelineExecutionSummaries"]:
                    started = summary.get("startTime")
                    if isinstance(started, datetime) and utc(started) < since:
                        return found
                    found.append(summary)
                token = page.get("nextToken")
                if not token:
                    break
            return found[:limit]

        return self._run(read, pipeline=name)

    def resolve_execution(self, name: str, value: str) -> str:
        """The full ID of the execution of ``name`` that ``value`` names: a full execution ID
        as it is (lower case, as AWS writes them), or the one execution whose ID starts with
        ``value`` when ``value`` is a prefix of at least ``EXECUTION_PREFIX_MIN`` characters
        (the 8 characters every message shows, for one).

        Prefixes are looked up in ListPipelineExecutions, page by page (100 a page, the API's
        maximum), among the newest ``PREFIX_SCAN_MAX`` executions: AWS keeps 12 months of
        them, and an older execution is named by its full ID. Anything else is returned as
        it is, for the backend to answer (a button's value, say). Raises ``OpsError`` naming
        the candidates when several executions share the prefix, and saying so when none
        does. https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_ListPipelineExecutions.html
        """
        wanted = value.strip().lower()
        if is_execution_id(wanted):
            return wanted
        if not is_execution_prefix(wanted):
            return value

        def scan() -> tuple[list[dict[str, Any]], bool]:
            matches: list[dict[str, Any]] = []
            seen = 0
            token: str | None = None
            while seen < PREFIX_SCAN_MAX:
                page = self._client.list_pipeline_executions(
                    pipelineName=name,
                    maxResults=min(100, PREFIX_SCAN_MAX - seen),
                    **({"nextToken": token} if token else {}),
                )
                summaries = page["pipelineExecutionSummaries"]
                seen += len(summaries)
                matches += [
                    s for s in summaries if str(s.get("pipelineExecutionId", "")).startswith(wanted)
                ]
                token = page.get("nextToken")
                if not token or not summaries:
                    return matches, False
            return matches, True

        matches, more = self._run(scan, pipeline=name)
        if len(matches) == 1:
            return str(matches[0]["pipelineExecutionId"])
        if matches:
            listed = ", ".join(
                f"`{escape(str(m['pipelineExecutionId']))}` ({escape(str(m.get('status')))})"
                for m in matches[:_CANDIDATES_SHOWN]
            )
            extra = len(matches) - _CANDIDATES_SHOWN
            if extra > 0:
                listed += f" and {extra} more"
            raise OpsError(
                f"{len(matches)} executions of `{escape(name)}` start with `{escape(wanted)}`: "
                f"{listed}. Give more of the ID."
            )
        among = f" among its latest {PREFIX_SCAN_MAX:,}" if more else ""
        raise OpsError(
            f"No execution of `{escape(name)}`{among} has an ID starting with "
            f"`{escape(wanted)}`: `history {escape(name)}` lists them"
            + (", and an older one is named by its full ID." if more else ".")
        )

    def change_tokens(self) -> dict[str, str] | None:
        """Each pipeline's change token where the backend keeps them (the embedded engine),
        one read for all pipelines; None on AWS, where only reading a pipeline tells."""
        if not isinstance(self._client, ChangeFeed):
            return None
        return dict(self._run(self._client.change_tokens))

    def declaration(self, name: str) -> dict[str, Any]:
        """The pipeline's declaration (GetPipeline's ``pipeline``)."""
        return self._run(
            lambda: dict(self._client.get_pipeline(name=name)["pipeline"]), pipeline=name
        )

    def declaration_text(self, name: str) -> str:
        return json.dumps({"pipeline": self.declaration(name)}, indent=2, default=str)

    def _action_details(self, name: str, execution_id: str) -> list[dict[str, Any]]:
        paginator = self._client.get_paginator("list_action_executions")
        actions = [
            detail
            for page in paginator.paginate(
                pipelineName=name, filter={"pipelineExecutionId": execution_id}
            )
            for detail in page["actionExecutionDetails"]
        ]
        actions.sort(key=lambda a: a.get("startTime") or datetime.min)
        return actions

    def action_details(self, name: str, execution_id: str) -> list[dict[str, Any]]:
        """Every action execution of one pipeline execution (ListActionExecutions), oldest
        first: what the state no longer shows once a newer execution entered a stage."""
        return self._run(lambda: self._action_details(name, execution_id), pipeline=name)

    def execution_view(self, name: str, execution_id: str) -> ExecutionView:
        """One execution with its actions and the failed action's log tail; ``execution_id``
        may be a prefix (``resolve_execution``)."""
        execution_id = self.resolve_execution(name, execution_id)

        def read() -> ExecutionView:
            execution = self._client.get_pipeline_execution(
                pipelineName=name, pipelineExecutionId=execution_id
            )["pipelineExecution"]
            actions = self._action_details(name, execution_id)
            return ExecutionView(
                execution=execution,
                actions=actions,
                log_tail=self._failed_log_tail(actions),
                markers=self._failed_log_markers(actions),
            )

        view = self._run(read, pipeline=name)
        try:
            rules = self.rule_executions(name, execution_id)
        except OpsError as exc:
            # The execution is worth showing without its rules: say why they are missing.
            return replace(view, rules_error=exc.message)
        return replace(view, rules=rules)

    def _failed_log_tail(self, actions: Sequence[Mapping[str, Any]]) -> str | None:
        failed = [a for a in actions if is_action_failed(a.get("status"))]
        if not failed:
            return None
        detail = failed[-1]
        if isinstance(self._client, ActionLogs):
            text = self._client.get_action_log(
                actionExecutionId=detail["actionExecutionId"], tailLines=40
            )
            if text:
                return str(text)
        result = detail.get("output", {}).get("executionResult", {})
        summary = result.get("externalExecutionSummary")
        return str(summary) if summary else None

    def _failed_log_markers(
        self, actions: Sequence[Mapping[str, Any]]
    ) -> list[tuple[str, str, bool]]:
        """The phase and hook markers of the last failed action's whole log (none on AWS,
        whose logs pipebot does not read)."""
        failed = [a for a in actions if is_action_failed(a.get("status"))]
        if not failed or not isinstance(self._client, ActionLogs):
            return []
        return log_markers(
            self._client.get_action_log(actionExecutionId=failed[-1]["actionExecutionId"])
        )

    def action_log(self, name: str, action_execution_id: str) -> str | None:
        if not isinstance(self._client, ActionLogs):
            return None
        return (
            str(self._client.get_action_log(actionExecutionId=action_execution_id, tailLines=60))
            or None
        )

    def pending_approvals(
        self, name: str, state: Mapping[str, Any] | None = None
    ) -> list[PendingApproval]:
        """The approvals waiting in ``name`` (read now, or from ``state`` when given)."""
        return pending_approvals(name, state if state is not None else self.state(name))

    # --- writes ------------------------------------------------------------------------------

    def create(self, text: str) -> dict[str, Any]:
        pipeline, tags = self._declaration(text)
        params: dict[str, Any] = {"pipeline": pipeline}
        if tags:
            params["tags"] = tags
        return self._run(lambda: dict(self._client.create_pipeline(**params)["pipeline"]))

    def update(self, name: str, text: str) -> dict[str, Any]:
        pipeline, _tags = self._declaration(text)
        if pipeline.get("name") != name:
            raise OpsError(
                f"The declaration is for pipeline `{escape(str(pipeline.get('name')))}`, "
                f"not `{escape(name)}`; "
                "renaming is not supported (create a new pipeline instead)."
            )
        return self._run(
            lambda: dict(self._client.update_pipeline(pipeline=pipeline)["pipeline"]),
            pipeline=name,
        )

    def _declaration(self, text: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
        try:
            document = parse_declaration_text(text)
            pipeline, tags = split_declaration(document)
            validate_declaration(pipeline, local=self._local)
        except DeclarationError as exc:
            raise OpsError(escape(exc.message), code=exc.code) from None
        return pipeline, tags

    def delete(self, name: str) -> None:
        self._run(lambda: self._client.get_pipeline(name=name), pipeline=name)
        self._run(lambda: self._client.delete_pipeline(name=name), pipeline=name)

    def start(self, name: str, variables: Mapping[str, str], *, request_token: str) -> str:
        params: dict[str, Any] = {"name": name, "clientRequestToken": request_token}
        if variables:
            params["variables"] = [{"name": k, "value": v} for k, v in variables.items()]
        return self._run(
            lambda: str(self._client.start_pipeline_execution(**params)["pipelineExecutionId"]),
            pipeline=name,
        )

    def stop(
        self, name: str, execution_id: str | None, *, abandon: bool, reason: str | None
    ) -> str:
        """Stop ``execution_id`` (a full ID or a prefix: ``resolve_execution``), or the
        newest execution in progress when None; returns the stopped execution's ID."""
        if execution_id is None:
            running = [e for e in self.executions(name, 20) if e["status"] in IN_PROGRESS]
            if not running:
                raise OpsError(f"No execution of `{escape(name)}` is in progress.")
            execution_id = running[0]["pipelineExecutionId"]
        else:
            execution_id = self.resolve_execution(name, execution_id)
        params: dict[str, Any] = {
            "pipelineName": name,
            "pipelineExecutionId": execution_id,
            "abandon": abandon,
        }
        if reason:
            if len(reason) > STOP_REASON_MAX:
                raise OpsError(
                    f"The stop reason is {len(reason) - STOP_REASON_MAX} characters too long: "
                    f"AWS keeps at most {STOP_REASON_MAX} characters of it "
                    "(StopPipelineExecution), and pipebot writes who stopped the execution "
                    "before your reason. Shorten the reason and stop again."
                )
            params["reason"] = reason
        return self._run(
            lambda: str(self._client.stop_pipeline_execution(**params)["pipelineExecutionId"]),
            pipeline=name,
        )

    def retry(
        self, name: str, stage: str | None, execution_id: str | None, *, mode: str
    ) -> tuple[str, str]:
        """Retry a stage; default: the Failed or Stopped stage of the latest execution.
        ``execution_id`` may be a prefix (``resolve_execution``)."""
        if execution_id is not None:
            execution_id = self.resolve_execution(name, execution_id)
        if stage is None or execution_id is None:
            candidates = [
                s
                for s in retryable_stages(self.state(name))
                if (stage is None or s["stageName"] == stage)
                and (
                    execution_id is None
                    or s["latestExecution"]["pipelineExecutionId"] == execution_id
                )
            ]
            if not candidates:
                where = f" stage `{escape(stage)}` of" if stage else ""
                raise OpsError(
                    f"Nothing to retry:{where} `{escape(name)}` has no failed or stopped stage."
                )
            chosen = candidates[-1]
            stage = chosen["stageName"]
            execution_id = chosen["latestExecution"]["pipelineExecutionId"]
        params = {
            "pipelineName": name,
            "stageName": stage,
            "pipelineExecutionId": execution_id,
            "retryMode": mode,
        }
        self._run(lambda: self._client.retry_stage_execution(**params), pipeline=name)
        return stage, execution_id

    def parallel_approvals(
        self, name: str, executions: Sequence[Mapping[str, Any]]
    ) -> list[PendingApproval]:
        """The approvals waiting in every execution in progress of a PARALLEL pipeline
        (GetPipelineState shows a stage's latest execution only). Each is read from
        ListActionExecutions, its token being the action execution's ``externalExecutionId``
        (CodePipeline's answer to an approval in PARALLEL mode). Empty for other modes.
        https://docs.aws.amazon.com/codepipeline/latest/userguide/concepts-how-it-works.html
        """
        found: list[PendingApproval] = []
        for summary in executions:
            if summary.get("executionMode") != "PARALLEL" or summary.get("status") not in (
                IN_PROGRESS
            ):
                continue
            found += self._waiting_in(name, str(summary["pipelineExecutionId"]))
        return found

    def _waiting_in(self, name: str, execution_id: str) -> list[PendingApproval]:
        """The approvals of one execution waiting with an ``externalExecutionId``."""
        waiting = []
        for detail in self.action_details(name, execution_id):
            kind = ((detail.get("input") or {}).get("actionTypeId") or {}).get("category")
            result = (detail.get("output") or {}).get("executionResult") or {}
            token = result.get("externalExecutionId")
            if detail.get("status") != "InProgress" or kind != "Approval" or not token:
                continue
            since = detail.get("startTime")
            waiting.append(
                PendingApproval(
                    pipeline=name,
                    stage=str(detail.get("stageName")),
                    action=str(detail.get("actionName")),
                    execution_id=execution_id,
                    token=str(token),
                    since=since if isinstance(since, datetime) else None,
                )
            )
        return waiting

    def find_approval(
        self,
        name: str,
        stage: str | None,
        action: str | None,
        *,
        execution_id: str | None = None,
    ) -> PendingApproval:
        """The approval waiting at ``stage``/``action`` (either may be None when only one
        waits). With ``execution_id`` (a button names the execution it was drawn for) and
        no approval of that execution in GetPipelineState, the execution's own action
        executions are read: in PARALLEL mode several executions wait at the same gate."""
        pending = self.pending_approvals(name)
        if execution_id is not None and stage is not None and action is not None:
            shown = [
                p
                for p in pending
                if p.stage == stage and p.action == action and p.execution_id == execution_id
            ]
            if not shown:
                parallel = [
                    p
                    for p in self._run(lambda: self._waiting_in(name, execution_id), pipeline=name)
                    if p.stage == stage and p.action == action
                ]
                if parallel:
                    return parallel[0]
        matching = [
            p
            for p in pending
            if (stage is None or p.stage == stage) and (action is None or p.action == action)
        ]
        if not matching:
            target = f" {escape(stage)} / {escape(action or '')}" if stage else ""
            raise OpsError(f"No approval{target} is waiting in `{escape(name)}`.")
        if len(matching) > 1:
            listed = ", ".join(f"{escape(p.stage)} / {escape(p.action)}" for p in matching)
            first = matching[0]
            raise OpsError(
                f"Several approvals wait in `{escape(name)}` ({listed}): name one as "
                f"STAGE/ACTION, e.g. `approve {escape(name)} "
                f"{escape(first.stage)}/{escape(first.action)}`."
            )
        if execution_id is None:
            found = matching[0]
            waiting = self._executions_waiting_at(name, found.stage, found.action)
            if len(waiting) > 1:
                # PARALLEL mode: several executions wait at this gate; never pick one silently.
                listed = ", ".join(f"`{escape(e[:8])}`" for e in waiting[:5])
                raise OpsError(
                    f"{len(waiting)} executions wait at {escape(found.stage)} / "
                    f"{escape(found.action)} of `{escape(name)}` ({listed}): name one, e.g. "
                    f"`approve {escape(name)} {escape(found.stage)}/{escape(found.action)} "
                    f"{escape(waiting[0][:8])}`."
                )
        return matching[0]

    def _executions_waiting_at(self, name: str, stage: str, action: str) -> list[str]:
        """The executions waiting at approval ``stage``/``action``, newest first (one
        ListActionExecutions call): more than one only in PARALLEL mode, where each waits
        with its own ``externalExecutionId``."""
        paginator = self._client.get_paginator("list_action_executions")
        details = self._run(
            lambda: [
                detail
                for page in paginator.paginate(
                    pipelineName=name, PaginationConfig={"MaxItems": 100, "PageSize": 100}
                )
                for detail in page["actionExecutionDetails"]
            ],
            pipeline=name,
        )
        waiting: list[str] = []
        for detail in details:
            kind = ((detail.get("input") or {}).get("actionTypeId") or {}).get("category")
            execution = str(detail.get("pipelineExecutionId") or "")
            if (
                detail.get("status") == "InProgress"
                and kind == "Approval"
                and detail.get("stageName") == stage
                and detail.get("actionName") == action
                and execution
                and execution not in waiting
            ):
                waiting.append(execution)
        return waiting

    def execution_approval(
        self, name: str, execution: str, stage: str | None, action: str | None
    ) -> PendingApproval:
        """The approval one execution waits at (``approve NAME EXECUTION``); ``execution`` may
        be a prefix (``resolve_execution``), ``stage``/``action`` None when only one waits.

        In PARALLEL mode several executions wait at the same gate and GetPipelineState shows
        the latest only: the approval is read from the execution's ListActionExecutions, and
        its token is the action execution's ``externalExecutionId``
        (https://docs.aws.amazon.com/codepipeline/latest/userguide/concepts-how-it-works.html).
        In other modes it is the approval the state shows for that execution, with the
        state's token. Raises ``OpsError`` when none (or several) wait there."""
        execution_id = self.resolve_execution(name, execution)
        detail = self._run(
            lambda: dict(
                self._client.get_pipeline_execution(
                    pipelineName=name, pipelineExecutionId=execution_id
                )["pipelineExecution"]
            ),
            pipeline=name,
        )
        if detail.get("executionMode") == "PARALLEL":
            waiting = self._run(lambda: self._waiting_in(name, execution_id), pipeline=name)
        else:
            waiting = [p for p in self.pending_approvals(name) if p.execution_id == execution_id]
        matching = [
            p
            for p in waiting
            if (stage is None or p.stage == stage) and (action is None or p.action == action)
        ]
        where = f"execution `{escape(execution_id[:8])}` of `{escape(name)}`"
        if not matching:
            target = f" {escape(stage)} / {escape(action or '')}" if stage else ""
            status = str(detail.get("status") or "")
            raise OpsError(
                f"No approval{target} is waiting in {where}"
                + (f" (it is {escape(status)})." if status and status != "InProgress" else ".")
            )
        if len(matching) > 1:
            listed = ", ".join(f"{escape(p.stage)} / {escape(p.action)}" for p in matching)
            raise OpsError(
                f"Several approvals wait in {where} ({listed}): name one as STAGE/ACTION."
            )
        return matching[0]

    def answer(self, approval: PendingApproval, *, approved: bool, summary: str) -> datetime | None:
        """PutApprovalResult with ``summary``; a summary longer than AWS keeps (512 characters)
        is refused with ``OpsError`` saying by how much, never cut."""
        if len(summary) > APPROVAL_SUMMARY_MAX:
            raise OpsError(
                f"The comment is {len(summary) - APPROVAL_SUMMARY_MAX} characters too long: AWS "
                f"keeps at most {APPROVAL_SUMMARY_MAX} characters of an approval's summary, "
                "and pipebot writes who answered before the comment. Shorten the comment and "
                "answer again."
            )
        status = "Approved" if approved else "Rejected"
        response = self._run(
            lambda: self._client.put_approval_result(
                pipelineName=approval.pipeline,
                stageName=approval.stage,
                actionName=approval.action,
                result={"summary": summary, "status": status},
                token=approval.token,
            ),
            pipeline=approval.pipeline,
        )
        approved_at = response.get("approvedAt")
        return approved_at if isinstance(approved_at, datetime) else None

    def transition_disabled(self, name: str, stage: str) -> bool | None:
        """Whether the transition into ``stage`` is disabled now (GetPipelineState's
        ``inboundTransitionState``); None when the pipeline has no such stage."""
        for stage_state in self.state(name).get("stageStates") or []:
            if stage_state.get("stageName") == stage:
                transition = stage_state.get("inboundTransitionState") or {}
                return not transition.get("enabled", True)
        return None

    def set_transition(self, name: str, stage: str, *, enabled: bool, reason: str | None) -> None:
        params: dict[str, Any] = {
            "pipelineName": name,
            "stageName": stage,
            "transitionType": "Inbound",
        }
        if enabled:
            self._run(lambda: self._client.enable_stage_transition(**params), pipeline=name)
        else:
            params["reason"] = reason or "Disabled from Slack"
            self._run(lambda: self._client.disable_stage_transition(**params), pipeline=name)

    # --- rollback and conditions (2024) ----------------------------------------------------

    def rollback_target(
        self,
        name: str,
        stage: str,
        *,
        state: Mapping[str, Any] | None = None,
        executions: Sequence[Mapping[str, Any]] | None = None,
    ) -> RollbackTarget:
        """The execution ``stage`` of ``name`` rolls back to by default: the most recent one
        that succeeded in the stage (ListPipelineExecutions filtered on ``succeededInStage``)
        before the one whose code the stage runs now (its latest execution, or that one's
        target when it is a rollback: rolling back to it again would change nothing), and is
        not itself a rollback. The pipeline's current version is checked by AWS
        (PipelineExecutionOutdatedException), as the summaries do not carry it.

        ``state`` (GetPipelineState) and ``executions`` (the newest summaries, for the
        execution mode) are read when not given. Raises ``OpsError`` with AWS's code
        ``UnableToRollbackStageException`` for the source stage, a PARALLEL pipeline and a
        stage with no earlier success; ``StageNotFoundException`` for an unknown stage.
        https://docs.aws.amazon.com/codepipeline/latest/userguide/stage-rollback.html
        """
        state = state if state is not None else self.state(name)
        stages = {str(s.get("stageName")): s for s in state.get("stageStates") or []}
        if stage not in stages:
            raise OpsError(
                f"`{escape(name)}` has no stage `{escape(stage)}`; `status` shows the stages.",
                code="StageNotFoundException",
            )
        self._check_rollback(name, stage, state=state, executions=executions)
        latest = stages[stage].get("latestExecution") or {}
        shown = latest.get("pipelineExecutionId")
        if latest.get("type") == "ROLLBACK" and shown:
            # The stage runs its rollback's target's code: that is where "back" starts.
            detail = self._run(
                lambda: dict(
                    self._client.get_pipeline_execution(
                        pipelineName=name, pipelineExecutionId=str(shown)
                    )["pipelineExecution"]
                ),
                pipeline=name,
            )
            shown = (detail.get("rollbackMetadata") or {}).get("rollbackTargetPipelineExecutionId")
        candidates = [s for s in self.succeeded_in(name, stage) if not is_rollback(s)]
        ids = [s.get("pipelineExecutionId") for s in candidates]
        if shown in ids:
            # Newest first: only what ran before the code the stage runs now is "back".
            candidates = candidates[ids.index(shown) + 1 :]
        for summary in candidates:
            return rollback_target_from(name, stage, summary)
        raise OpsError(
            f"*{escape(stage)}* of `{escape(name)}` has no earlier execution that succeeded in "
            "it to roll back to (a rollback is never a target).",
            code="UnableToRollbackStageException",
        )

    def _check_rollback(
        self,
        name: str,
        stage: str,
        *,
        state: Mapping[str, Any],
        executions: Sequence[Mapping[str, Any]] | None,
    ) -> None:
        if is_source_stage(state, stage):
            raise OpsError(
                f"*{escape(stage)}* is the source stage of `{escape(name)}`: a source stage "
                "cannot be rolled back.",
                code="UnableToRollbackStageException",
            )
        latest = list(executions if executions is not None else self.executions(name, 1))
        if latest and latest[0].get("executionMode") == "PARALLEL":
            raise OpsError(
                f"`{escape(name)}` runs in PARALLEL mode, where AWS allows no rollback.",
                code="UnableToRollbackStageException",
            )

    def succeeded_in(self, name: str, stage: str, limit: int = 20) -> list[dict[str, Any]]:
        """The newest executions that succeeded in ``stage`` (ListPipelineExecutions with
        ``filter: {succeededInStage: {stageName}}``), newest first, at most ``limit``."""
        return self._run(
            lambda: list(
                self._client.list_pipeline_executions(
                    pipelineName=name,
                    maxResults=limit,
                    filter={"succeededInStage": {"stageName": stage}},
                )["pipelineExecutionSummaries"]
            ),
            pipeline=name,
        )

    def rollback_targets(
        self,
        name: str,
        state: Mapping[str, Any],
        executions: Sequence[Mapping[str, Any]],
        *,
        limit: int = 5,
    ) -> dict[str, RollbackTarget]:
        """The default target of each stage a status message offers a Roll back for (one
        ListPipelineExecutions call per finished non-source stage, at most ``limit``); none
        in PARALLEL mode. A stage without one is left out."""
        if executions and executions[0].get("executionMode") == "PARALLEL":
            return {}
        targets: dict[str, RollbackTarget] = {}
        for stage in rollback_candidates(state)[:limit]:
            stage_name = str(stage["stageName"])
            try:
                targets[stage_name] = self.rollback_target(
                    name, stage_name, state=state, executions=executions
                )
            except OpsError as exc:
                if exc.code != "UnableToRollbackStageException":
                    raise
        return targets

    def rollback(
        self, name: str, stage: str, target: str | None
    ) -> tuple[RollbackTarget | None, str]:
        """RollbackStage of ``stage`` to ``target`` (a full ID or a prefix:
        ``resolve_execution``), or to ``rollback_target`` when None. Returns the target as
        pipebot found it (None when named and not looked up) and the new execution's ID.
        https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_RollbackStage.html
        """
        found: RollbackTarget | None = None
        if target is None:
            found = self.rollback_target(name, stage)
            target_id = found.execution_id
        else:
            target_id = self.resolve_execution(name, target)
        response = self._run(
            lambda: self._client.rollback_stage(
                pipelineName=name, stageName=stage, targetPipelineExecutionId=target_id
            ),
            pipeline=name,
        )
        return found, str(response["pipelineExecutionId"])

    def describe_target(
        self, name: str, stage: str, target: str, *, state: Mapping[str, Any] | None = None
    ) -> RollbackTarget:
        """The named rollback target (a full ID or a prefix), for the confirmation: its
        source revisions and when it last changed (GetPipelineExecution has no times, so
        they come from its summary among the executions that succeeded in the stage).
        Raises ``OpsError`` as ``rollback_target`` does, and (UnableToRollbackStageException)
        when the target did not succeed in the stage among the newest 100, or is a rollback."""
        state = state if state is not None else self.state(name)
        if not any(s.get("stageName") == stage for s in state.get("stageStates") or []):
            raise OpsError(
                f"`{escape(name)}` has no stage `{escape(stage)}`; `status` shows the stages.",
                code="StageNotFoundException",
            )
        self._check_rollback(name, stage, state=state, executions=None)
        target_id = self.resolve_execution(name, target)
        for summary in self.succeeded_in(name, stage, limit=100):
            if summary.get("pipelineExecutionId") != target_id:
                continue
            if is_rollback(summary):
                raise OpsError(
                    f"`{escape(target_id)}` is itself a rollback: AWS rolls back only to a "
                    "standard execution.",
                    code="UnableToRollbackStageException",
                )
            return rollback_target_from(name, stage, summary)
        raise OpsError(
            f"Execution `{escape(target_id)}` is not among the newest executions of "
            f"`{escape(name)}` that succeeded in *{escape(stage)}*: only those can be rolled "
            "back to.",
            code="UnableToRollbackStageException",
        )

    def override(
        self, name: str, stage: str, execution_id: str | None, condition_type: str | None
    ) -> tuple[str, str]:
        """OverrideStageCondition: let the entry or success condition of ``stage`` pass.
        ``execution_id`` (a full ID or a prefix) and ``condition_type`` (``BEFORE_ENTRY`` or
        ``ON_SUCCESS``) default to the condition of that stage that waits or failed in
        GetPipelineState. Returns the condition type and execution overridden.
        https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_OverrideStageCondition.html
        """
        if execution_id is not None:
            execution_id = self.resolve_execution(name, execution_id)
        if execution_id is None or condition_type is None:
            state = self.state(name)
            stages = [s for s in state.get("stageStates") or [] if s.get("stageName") == stage]
            if not stages:
                raise OpsError(
                    f"`{escape(name)}` has no stage `{escape(stage)}`; `status` shows the stages.",
                    code="StageNotFoundException",
                )
            open_ = [
                c
                for c in stage_conditions(stages[0])
                if c.overridable
                and (condition_type is None or c.condition_type == condition_type)
                and (execution_id is None or c.execution_id == execution_id)
            ]
            if not open_:
                which = {"BEFORE_ENTRY": "entry ", "ON_SUCCESS": "success "}.get(
                    condition_type or "", ""
                )
                raise OpsError(
                    f"No {which}condition of *{escape(stage)}* in `{escape(name)}` is waiting "
                    "or failed: there is nothing to override.",
                    code="ConditionNotOverridableException",
                )
            condition_type = str(open_[0].condition_type)
            execution_id = str(open_[0].execution_id)
        if condition_type not in OVERRIDABLE_CONDITIONS.values():
            raise OpsError(f"`{escape(condition_type)}` is not a condition type AWS overrides.")
        params = {
            "pipelineName": name,
            "stageName": stage,
            "pipelineExecutionId": execution_id,
            "conditionType": condition_type,
        }
        self._run(lambda: self._client.override_stage_condition(**params), pipeline=name)
        return condition_type, execution_id

    def rule_executions(self, name: str, execution_id: str) -> list[dict[str, Any]]:
        """Every rule execution of one pipeline execution (ListRuleExecutions, all pages),
        oldest first: each rule's status and summary, for the execution view.
        https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_ListRuleExecutions.html
        """

        if not hasattr(self._client, "list_rule_executions"):
            return []  # a backend without stage conditions has no rule to list

        def read() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            token: str | None = None
            while True:
                params: dict[str, Any] = {
                    "pipelineName": name,
                    "filter": {"pipelineExecutionId": execution_id},
                }
                if token:
                    params["nextToken"] = token
                page = self._client.list_rule_executions(**params)
                found += page.get("ruleExecutionDetails") or []
                token = page.get("nextToken")
                if not token:
                    break
            found.sort(key=lambda r: utc(r["startTime"]) if r.get("startTime") else _EPOCH)
            return found

        return self._run(read, pipeline=name)
