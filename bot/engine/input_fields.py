"""What the embedded engine does with every input field of the API it implements.

Every member of every implemented operation's input shape (botocore's model) and of the pipeline
declaration is in one of three classes, with a note saying how:

- ``HONOURED``: the engine does what CodePipeline does with it (some values may still be refused:
  ``refuse_when``);
- ``REFUSED``: a request or declaration using it is refused with a clear error naming it, because
  the engine cannot do what AWS would (it needs the AWS backend);
- ``IGNORED``: accepted and deliberately without local effect (an IAM role, a KMS key, an S3
  bucket: things that exist only in an AWS account), each documented in the README's list of
  known differences.

A field is classified by its own entry or, failing that, by its nearest classified ancestor
(``pipeline.triggers`` covers everything under it). Paths are dotted wire names with ``[]`` for
list items and ``{}`` for map values: ``pipeline.stages[].actions[].roleArn``.
``tests/test_input_fields.py`` walks botocore's model and fails for any field not classified here,
so a new model field cannot be accepted and silently ignored.

The configuration keys of the providers the engine runs are classified per provider in
``LOCAL_CONFIGURATION`` (from the CodePipeline user guide's action structure reference,
https://docs.aws.amazon.com/codepipeline/latest/userguide/action-reference.html); a key the
engine does not know is refused, since AWS would act on it and the engine cannot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from bot.engine.errors import RefusedError

AWS_BACKEND: Final = "run this pipeline on the AWS backend (PIPEBOT_BACKEND=aws)"


class Handling(StrEnum):
    HONOURED = "honoured"
    REFUSED = "refused"
    IGNORED = "ignored"


@dataclass(frozen=True)
class Field:
    """How the engine handles one input field. ``note`` says what it does (HONOURED, IGNORED) or
    is the refusal's message (REFUSED). ``refuse_when(value, parent)`` True refuses an honoured
    field for that value, with ``refusal`` as the message."""

    handling: Handling
    note: str
    refuse_when: Callable[[Any, Mapping[str, Any]], bool] | None = None
    refusal: str = ""


def _honoured(note: str) -> Field:
    return Field(Handling.HONOURED, note)


def _ignored(note: str) -> Field:
    return Field(Handling.IGNORED, note)


def _refused(message: str) -> Field:
    return Field(Handling.REFUSED, message)


_EVERYTHING: Final = _honoured("as CodePipeline does")

#: The implemented operations' own input fields (the declaration is in ``DECLARATION``).
OPERATIONS: Final[dict[str, dict[str, Field]]] = {
    "CreatePipeline": {
        "pipeline": _honoured("see DECLARATION"),
        "tags": _honoured("stored with the pipeline and returned by CreatePipeline"),
    },
    "UpdatePipeline": {"pipeline": _honoured("see DECLARATION")},
    "GetPipeline": {"name": _EVERYTHING, "version": _honoured("any stored version")},
    "ListPipelines": {"maxResults": _EVERYTHING, "nextToken": _EVERYTHING},
    "DeletePipeline": {"name": _EVERYTHING},
    "StartPipelineExecution": {
        "name": _EVERYTHING,
        "variables": _honoured("resolved against the declared variables and their defaults"),
        "clientRequestToken": _honoured("a repeated token returns the first execution's ID"),
        "sourceRevisions": _honoured("the source action checks out the given commit"),
        "sourceRevisions[].revisionType": Field(
            Handling.HONOURED,
            "COMMIT_ID",
            refuse_when=lambda value, _parent: value != "COMMIT_ID",
            refusal="sourceRevisions: the embedded engine's git sources take revisionType "
            "COMMIT_ID only (IMAGE_DIGEST, S3_OBJECT_VERSION_ID and S3_OBJECT_KEY name ECR and "
            "S3 sources, which need the AWS backend)",
        ),
    },
    "StopPipelineExecution": {
        "pipelineName": _EVERYTHING,
        "pipelineExecutionId": _EVERYTHING,
        "abandon": _honoured("abandon kills the running actions; otherwise they finish"),
        "reason": _honoured("returned as stopTrigger.reason by GetPipelineExecution"),
    },
    "RetryStageExecution": {
        "pipelineName": _EVERYTHING,
        "stageName": _EVERYTHING,
        "pipelineExecutionId": _EVERYTHING,
        "retryMode": _honoured("FAILED_ACTIONS and ALL_ACTIONS"),
    },
    "RollbackStage": {
        "pipelineName": _EVERYTHING,
        "stageName": _EVERYTHING,
        "targetPipelineExecutionId": _honoured(
            "the execution whose revisions, variables and artifacts the rollback runs"
        ),
    },
    "PutApprovalResult": {
        "pipelineName": _EVERYTHING,
        "stageName": _EVERYTHING,
        "actionName": _EVERYTHING,
        "result": _honoured("the status decides the action; the summary is stored and shown"),
        "token": _EVERYTHING,
    },
    "GetPipelineState": {"name": _EVERYTHING},
    "ListPipelineExecutions": {
        "pipelineName": _EVERYTHING,
        "maxResults": _EVERYTHING,
        "nextToken": _EVERYTHING,
        "filter": _honoured("succeededInStage keeps executions whose stage succeeded"),
    },
    "GetPipelineExecution": {"pipelineName": _EVERYTHING, "pipelineExecutionId": _EVERYTHING},
    "ListActionExecutions": {
        "pipelineName": _EVERYTHING,
        "maxResults": _EVERYTHING,
        "nextToken": _EVERYTHING,
        "filter": _honoured("by its two members"),
        "filter.pipelineExecutionId": _honoured("only that execution's actions"),
        "filter.latestInPipelineExecution": _honoured(
            "only that execution's actions; startTimeRange Latest keeps the latest run of each "
            "action (a retried action's earlier runs are left out), All keeps every run"
        ),
    },
    "DisableStageTransition": {
        "pipelineName": _EVERYTHING,
        "stageName": _EVERYTHING,
        "transitionType": _honoured("Inbound, or Outbound as the next stage's inbound"),
        "reason": _honoured("shown in GetPipelineState's inboundTransitionState"),
    },
    "EnableStageTransition": {
        "pipelineName": _EVERYTHING,
        "stageName": _EVERYTHING,
        "transitionType": _honoured("Inbound, or Outbound as the next stage's inbound"),
    },
    "OverrideStageCondition": {
        "pipelineName": _EVERYTHING,
        "stageName": _EVERYTHING,
        "pipelineExecutionId": _honoured("the latest execution in the stage only"),
        "conditionType": _honoured("BEFORE_ENTRY and ON_SUCCESS, waiting or failed"),
    },
    "ListRuleExecutions": {
        "pipelineName": _EVERYTHING,
        "maxResults": _EVERYTHING,
        "nextToken": _EVERYTHING,
        "filter": _honoured("by its two members"),
        "filter.pipelineExecutionId": _honoured("only that execution's rule runs"),
        "filter.latestInPipelineExecution": _honoured(
            "only that execution's rule runs; startTimeRange Latest keeps the latest run of each "
            "rule of each stage, All keeps every run"
        ),
    },
    "ListRuleTypes": {
        "ruleOwnerFilter": _honoured("AWS, the owner of every rule type"),
        "regionFilter": _ignored("one machine, one region: the rule types the engine runs"),
    },
}

_ACTION: Final = "pipeline.stages[].actions[]"
_MANUAL: Final = ("Approval", "AWS", "Manual")


def _not_manual_approval(_value: Any, action: Mapping[str, Any]) -> bool:
    type_id = action.get("actionTypeId") or {}
    return (type_id.get("category"), type_id.get("owner"), type_id.get("provider")) != _MANUAL


def _is_secret(value: Any, _parent: Mapping[str, Any]) -> bool:
    return bool(value == "SECRETS_MANAGER")


#: The declaration's fields, for the embedded engine (CreatePipeline and UpdatePipeline).
DECLARATION: Final[dict[str, Field]] = {
    "pipeline": _honoured("by its members, below"),
    "pipeline.name": _EVERYTHING,
    "pipeline.version": _honoured("set by the engine: 1, then one more per update"),
    "pipeline.pipelineType": _honoured("V1 or V2, with V2's rules for its features"),
    "pipeline.executionMode": _honoured("SUPERSEDED, QUEUED and PARALLEL"),
    "pipeline.roleArn": _ignored(
        "no IAM locally: actions run as the user of the pipebot process; kept and returned"
    ),
    "pipeline.artifactStore": _ignored(
        "no S3 locally: artifacts are kept under the data directory; kept and returned"
    ),
    "pipeline.artifactStores": _ignored(
        "one machine, one region: artifacts are kept under the data directory; kept and returned"
    ),
    "pipeline.variables": _honoured("resolved at start; #{variables.NAME} in configuration"),
    "pipeline.triggers": _honoured(
        "the source poller reads the repository's branches and tags; a push matching a filter "
        "runs the pushed commit (trigger WebhookV2); see bot.engine.triggers"
    ),
    "pipeline.triggers[].gitConfiguration.push": _honoured(
        "tags, branches, and branches with filePaths (the files the pushed commits changed)"
    ),
    "pipeline.triggers[].gitConfiguration.pullRequest": _refused(
        "Pull-request triggers (pullRequest) cannot be evaluated by the embedded engine: a git "
        "repository under the repositories directory has no pull requests. Remove pullRequest "
        "(push filters work locally), or " + AWS_BACKEND
    ),
    "pipeline.stages": _honoured("run in order"),
    "pipeline.stages[].name": _EVERYTHING,
    "pipeline.stages[].blockers": _refused(
        "Stage blockers are reserved by CodePipeline and not run by the embedded engine; "
        "remove them"
    ),
    # Stage conditions run with VariableCheck, DeploymentWindow and Commands rules; a rule of
    # another provider is refused by declaration._check_local_stage_conditions, named.
    "pipeline.stages[].beforeEntry": _honoured(
        "evaluated when an execution enters the stage, before its actions: FAIL fails the "
        "stage, SKIP skips it (bot.engine.conditions)"
    ),
    "pipeline.stages[].onSuccess": _honoured(
        "evaluated after the stage's actions succeed: FAIL fails the stage, ROLLBACK rolls it back"
    ),
    "pipeline.stages[].onFailure": _honoured(
        "result FAIL fails the stage; RETRY retries it once (retryConfiguration.retryMode); "
        "ROLLBACK rolls it back to its latest success (Runtime._on_stage_failure)"
    ),
    "pipeline.stages[].onFailure.conditions": _honoured(
        "evaluated when the stage fails: when met, ROLLBACK rolls it back"
    ),
    **{
        f"pipeline.stages[].{kind}.conditions[].rules[].{name}": field
        for kind in ("beforeEntry", "onSuccess", "onFailure")
        for name, field in (
            ("roleArn", _ignored("no IAM locally; kept, and shown in the rule's input")),
            ("region", _ignored("one machine, one region; kept, and shown in the rule's input")),
            (
                "timeoutInMinutes",
                _honoured("a Commands rule that runs longer fails as timed out"),
            ),
        )
    },
    "pipeline.stages[].actions": _honoured("run by runOrder, in parallel within one"),
    f"{_ACTION}.name": _EVERYTHING,
    f"{_ACTION}.actionTypeId": _honoured("the providers in SUPPORTED_LOCAL_PROVIDERS run"),
    f"{_ACTION}.runOrder": _EVERYTHING,
    f"{_ACTION}.configuration": _honoured("per provider: LOCAL_CONFIGURATION"),
    f"{_ACTION}.commands": _honoured("run in one shell, in order, in the input's directory"),
    f"{_ACTION}.outputArtifacts": _EVERYTHING,
    f"{_ACTION}.outputArtifacts[].files": _honoured("glob patterns, relative to the input"),
    f"{_ACTION}.inputArtifacts": _EVERYTHING,
    f"{_ACTION}.outputVariables": _honoured("exported from the commands' environment"),
    f"{_ACTION}.roleArn": _ignored("no IAM locally; kept, and shown in the action's input"),
    f"{_ACTION}.region": _ignored("one machine, one region; kept, and shown in the action's input"),
    f"{_ACTION}.namespace": _honoured("#{NAMESPACE.VARIABLE} resolves to the action's output"),
    f"{_ACTION}.timeoutInMinutes": Field(
        Handling.HONOURED,
        "a manual approval fails when it times out",
        refuse_when=_not_manual_approval,
        refusal="timeoutInMinutes applies to manual approval actions only (CodePipeline's "
        "ActionDeclaration); remove it from this action",
    ),
    f"{_ACTION}.environmentVariables": _honoured("set in the commands' environment"),
    f"{_ACTION}.environmentVariables[].type": Field(
        Handling.HONOURED,
        "PLAINTEXT",
        refuse_when=_is_secret,
        refusal="environmentVariables of type SECRETS_MANAGER are read from AWS Secrets "
        "Manager, which the embedded engine cannot reach; " + AWS_BACKEND,
    ),
}

_POLL: Final = _honoured('"false": changes do not start the pipeline')
_OUTPUT_FORMAT: Final = _ignored(
    "the artifact is the commit's files either way (CODE_ZIP); with CODEBUILD_CLONE_REF, AWS "
    "passes a git clone instead"
)

#: The CodeBuild action's configuration keys (action-reference-CodeBuild.html); the values the
#: engine refuses are checked by ``bot.engine.providers.codebuild.configuration_problems``.
_CODEBUILD: Final = {
    "ProjectName": _honoured(
        "a project of the local registry (codebuild-projects.yml, PIPEBOT_CODEBUILD_PROJECTS); "
        "an unregistered project runs buildspec.yml at the primary source's root"
    ),
    "PrimarySource": _honoured("the input artifact holding the buildspec and the work directory"),
    "EnvironmentVariables": _honoured(
        "PLAINTEXT variables, above the project's and the buildspec's; PARAMETER_STORE and "
        "SECRETS_MANAGER variables are refused, each named"
    ),
    "BatchEnabled": _honoured('"false" runs one build; "true" (a batch build) is refused'),
    "CombineArtifacts": _ignored("applies to batch builds only, which are refused"),
    "BuildspecOverride": _honoured(
        "an inline buildspec or a path in the primary source; an S3 ARN is refused"
    ),
}

#: The configuration keys of each provider the engine runs; any other key is refused.
LOCAL_CONFIGURATION: Final[dict[tuple[str, str, str], dict[str, Field]]] = {
    ("Source", "AWS", "CodeCommit"): {
        "RepositoryName": _honoured("a git repository under the repositories directory"),
        "BranchName": _EVERYTHING,
        "PollForSourceChanges": _POLL,
        "OutputArtifactFormat": _OUTPUT_FORMAT,
    },
    ("Source", "AWS", "CodeStarSourceConnection"): {
        "ConnectionArn": _ignored(
            "no connection locally: the repository is read from the repositories directory; "
            "the ARN is the action's ConnectionArn variable"
        ),
        "FullRepositoryId": _honoured("owner/name under the repositories directory"),
        "BranchName": _EVERYTHING,
        "DetectChanges": _POLL,
        "OutputArtifactFormat": _OUTPUT_FORMAT,
    },
    ("Approval", "AWS", "Manual"): {
        "CustomData": _honoured("shown with the approval request in Slack"),
        "ExternalEntityLink": _honoured("linked from the approval request in Slack"),
        "NotificationArn": _ignored("no SNS locally: the approval request is posted in Slack"),
    },
    ("Compute", "AWS", "Commands"): {},
    ("Build", "AWS", "CodeBuild"): _CODEBUILD,
    ("Test", "AWS", "CodeBuild"): _CODEBUILD,
    # bot.engine.providers.s3 and .codedeploy; keys from the action references
    # (action-reference-S3.html, action-reference-S3Deploy.html, action-reference-CodeDeploy.html).
    ("Source", "AWS", "S3"): {
        "S3Bucket": _honoured("a local bucket: the directory <data dir>/s3/<S3Bucket>"),
        "S3ObjectKey": _honoured("the zip at <data dir>/s3/<S3Bucket>/<S3ObjectKey>"),
        "PollForSourceChanges": _honoured(
            '"false": changes do not start the pipeline; otherwise the source poller starts '
            "an execution when the object's content hash (its ETag) changes"
        ),
        "AllowOverrideForS3ObjectKey": _ignored(
            "StartPipelineExecution's S3_OBJECT_KEY source revisions are refused by the engine, "
            "so there is no override to allow; kept"
        ),
    },
    ("Deploy", "AWS", "S3"): {
        "BucketName": _honoured("a local bucket: the directory <data dir>/s3/<BucketName>"),
        "Extract": _honoured('"true" writes the files under ObjectKey; "false" the zip'),
        "ObjectKey": _honoured("the key prefix (Extract true) or the zip's key (Extract false)"),
        "CannedACL": _ignored("local buckets have no ACLs; kept"),
        "CacheControl": _ignored("local buckets serve no HTTP, so no Cache-Control; kept"),
        "KMSEncryptionKeyARN": _ignored(
            "no KMS locally: objects are written unencrypted under the data directory; kept"
        ),
    },
    ("Deploy", "AWS", "CodeDeploy"): {
        "ApplicationName": _honoured(
            "with DeploymentGroupName, the local instance <data dir>/codedeploy/<application>/"
            "<deployment group>"
        ),
        "DeploymentGroupName": _honoured("one local instance per deployment group"),
    },
}


# --------------------------------------------------------------------------- lookups


def classify(path: str, table: Mapping[str, Field]) -> Field | None:
    """The entry for ``path`` or its nearest classified ancestor in ``table``; None if neither."""
    probe = path
    while probe:
        if probe in table:
            return table[probe]
        cut = max(probe.rfind("."), probe.rfind("["), probe.rfind("{"))
        probe = probe[:cut] if cut > 0 else ""
    return None


@dataclass(frozen=True)
class Refusal:
    """A field the engine refuses: the AWS error code to answer with and the message."""

    code: str
    message: str


def _present(value: Any) -> bool:
    return value not in (None, "", [], {})


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any, Mapping[str, Any]]]:
    """Every (path, value, parent mapping) under ``value`` in the table's path notation."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            yield child, item, value
            yield from _walk(item, child)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, f"{path}[]")


def _refusal_of(
    table: Mapping[str, Field], path: str, value: Any, parent: Mapping[str, Any]
) -> str | None:
    """The refusal of ``value`` at ``path``: a REFUSED field refuses its whole subtree; a
    ``refuse_when`` judges its own field's value only."""
    field = classify(path, table)
    if field is None or not _present(value):
        return None
    if field.handling is Handling.REFUSED:
        return field.note
    if path in table and field.refuse_when is not None and field.refuse_when(value, parent):
        return field.refusal
    return None


def refused_field(operation: str, params: Mapping[str, Any]) -> Refusal | None:
    """The first field of an operation's ``params`` that the engine refuses, if any
    (``ValidationException``). The declaration of Create/UpdatePipeline is checked by
    ``refused_declaration_field`` once the declaration is valid."""
    table = OPERATIONS.get(operation, {})
    for path, value, parent in _walk(params, ""):
        if path == "pipeline" or path.startswith("pipeline."):
            continue
        message = _refusal_of(table, path, value, parent)
        if message is not None:
            return Refusal("ValidationException", message)
    return None


def refused_declaration_field(declaration: Mapping[str, Any]) -> RefusedError | None:
    """The first field or configuration key of a valid declaration that the embedded engine
    refuses, as the refusal CreatePipeline answers (the code names the level: stage or action
    declaration, else structure), or None."""
    for path, value, parent in _walk({"pipeline": declaration}, ""):
        message = _refusal_of(DECLARATION, path, value, parent)
        if message is None and path.endswith(".configuration") and isinstance(value, Mapping):
            message = _configuration_refusal(parent, value)
        if message is not None:
            where = _where(declaration, parent, path)
            code = (
                "InvalidActionDeclarationException"
                if path.startswith(_ACTION)
                else "InvalidStageDeclarationException"
                if path.startswith("pipeline.stages[]")
                else "InvalidStructureException"
            )
            return RefusedError(code, f"{where}{message}")
    return None


def _configuration_refusal(
    action: Mapping[str, Any], configuration: Mapping[str, Any]
) -> str | None:
    type_id = action.get("actionTypeId") or {}
    key = (type_id.get("category"), type_id.get("owner"), type_id.get("provider"))
    known = LOCAL_CONFIGURATION.get(key)  # type: ignore[arg-type]
    if known is None:
        return None
    unknown = [name for name in configuration if name not in known]
    if not unknown:
        return None
    listed = ", ".join(sorted(known)) or "none (Commands actions take `commands`)"
    names = ", ".join(repr(n) for n in unknown)
    return (
        f"configuration {names} is not a configuration property "
        f"of {'/'.join(str(part) for part in key)} that the embedded engine knows (known: "
        f"{listed}); remove {names} from the action's configuration, or " + AWS_BACKEND
    )


def _where(declaration: Mapping[str, Any], parent: Mapping[str, Any], path: str) -> str:
    """``Stage "Deploy", action "Run": `` for a field inside an action, and so on."""
    for stage in declaration.get("stages") or []:
        if parent is stage:
            return f'Stage "{stage.get("name")}": '
        for action in stage.get("actions") or []:
            if parent is action or any(parent is item for item in _mappings_in(action)):
                return f'Stage "{stage.get("name")}", action "{action.get("name")}": '
    return ""


def _mappings_in(value: Any) -> Iterator[Mapping[str, Any]]:
    """Every mapping inside ``value``, list items included."""
    if isinstance(value, Mapping):
        for item in value.values():
            if isinstance(item, Mapping):
                yield item
            yield from _mappings_in(item)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, Mapping):
                yield item
            yield from _mappings_in(item)


__all__ = [
    "DECLARATION",
    "LOCAL_CONFIGURATION",
    "OPERATIONS",
    "Field",
    "Handling",
    "Refusal",
    "classify",
    "refused_declaration_field",
    "refused_field",
]
