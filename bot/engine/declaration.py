"""Pipeline declarations: parse what a user pastes, validate it the way CodePipeline does.

A declaration is the JSON of ``aws codepipeline get-pipeline`` (or the input of
``create-pipeline --cli-input-json``), pasted as JSON or YAML. Validation runs in three steps:

1. **Shape**: botocore's own ``PipelineDeclaration`` shape (types, required and unknown fields,
   minimum lengths) -> ``InvalidStructureException``; then the model constraints that botocore's
   client-side validator leaves to the server (enums, maximum lengths, name patterns) ->
   ``ValidationException``, as AWS answers them.
2. **Engine rules** that AWS enforces on top of the shape (names, stage layout, runOrder, artifacts,
   namespaces, V2-only features, per-action-type rules).
3. With ``local=True`` only: what the embedded engine can run (see ``SUPPORTED_LOCAL_PROVIDERS``).

Every refusal is a :class:`~bot.engine.errors.DeclarationError` carrying an AWS error code (one of
``DECLARATION_ERROR_CODES``) and a message naming the stage, action and field at fault.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

import botocore.session
import yaml
from botocore.model import Shape, StructureShape
from botocore.validate import ParamValidator, ValidationErrors

from bot.engine import conditions as stage_conditions
from bot.engine.constraints import Path, violations
from bot.engine.errors import DeclarationError
from bot.engine.input_fields import refused_declaration_field
from bot.engine.providers import codebuild as codebuild_provider
from bot.engine.providers import codedeploy as codedeploy_provider
from bot.engine.providers import s3 as s3_provider

INVALID_STRUCTURE: Final = "InvalidStructureException"
INVALID_STAGE: Final = "InvalidStageDeclarationException"
INVALID_ACTION: Final = "InvalidActionDeclarationException"
VALIDATION: Final = "ValidationException"
INVALID_TAGS: Final = "InvalidTagsException"
TOO_MANY_TAGS: Final = "TooManyTagsException"

#: Every code this module raises (all of them are in CreatePipeline's error list).
DECLARATION_ERROR_CODES: Final[frozenset[str]] = frozenset(
    {INVALID_STRUCTURE, INVALID_STAGE, INVALID_ACTION, VALIDATION, INVALID_TAGS, TOO_MANY_TAGS}
)

CODECOMMIT: Final = ("Source", "AWS", "CodeCommit")
CODESTAR_CONNECTION: Final = ("Source", "AWS", "CodeStarSourceConnection")
COMMANDS: Final = ("Compute", "AWS", "Commands")
MANUAL_APPROVAL: Final = ("Approval", "AWS", "Manual")
CODEBUILD_BUILD: Final = ("Build", "AWS", "CodeBuild")
CODEBUILD_TEST: Final = ("Test", "AWS", "CodeBuild")
S3_SOURCE: Final = ("Source", "AWS", "S3")
S3_DEPLOY: Final = ("Deploy", "AWS", "S3")
CODEDEPLOY: Final = ("Deploy", "AWS", "CodeDeploy")

#: (category, owner, provider) triples the embedded engine can run.
SUPPORTED_LOCAL_PROVIDERS: Final[frozenset[tuple[str, str, str]]] = frozenset(
    {CODECOMMIT, CODESTAR_CONNECTION, COMMANDS, MANUAL_APPROVAL, CODEBUILD_BUILD, CODEBUILD_TEST}
    | {S3_SOURCE, S3_DEPLOY, CODEDEPLOY}
)

# Configuration keys the embedded engine needs for its source providers.
_LOCAL_REQUIRED_CONFIGURATION: Final[dict[tuple[str, str, str], tuple[str, ...]]] = {
    CODECOMMIT: ("RepositoryName", "BranchName"),
    CODESTAR_CONNECTION: ("FullRepositoryId", "BranchName"),
    CODEBUILD_BUILD: ("ProjectName",),
    CODEBUILD_TEST: ("ProjectName",),
    S3_SOURCE: ("S3Bucket", "S3ObjectKey"),
    S3_DEPLOY: ("BucketName", "Extract"),
    CODEDEPLOY: ("ApplicationName", "DeploymentGroupName"),
}

_NAME_RE: Final = re.compile(r"[A-Za-z0-9.@\-_]+")
_VARIABLE_NAME_RE: Final = re.compile(r"[A-Za-z0-9@\-_]+")
_REPO_PART_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,100}")
_BRANCH_BAD_CHARS: Final = frozenset(" ~^:?*[\\")

_RUN_ORDER_RANGE: Final = (1, 999)
_TIMEOUT_RANGE: Final = (5, 86400)
_COMMANDS_RANGE: Final = (1, 50)
_MAX_TAGS: Final = 50
_MAX_NODES: Final = 250_000
_MAX_LISTED_PROBLEMS: Final = 20
_MAX_LINE: Final = 400

# Fields whose range and format the engine rules check themselves, with their own error codes;
# the shape steps leave their min/max/pattern alone so each rule has exactly one code.
_ENGINE_OWNED_FIELDS: Final = re.compile(
    r"\.name"
    r"|\.stages\[\d+\]\.name"
    r"|\.stages\[\d+\]\.actions\[\d+\]\.(?:name|runOrder|timeoutInMinutes|commands)"
    r"|\.variables\[\d+\]\.name"
)
#: Members the model requires that the embedded engine does without (it assumes no role).
_LOCALLY_OPTIONAL: Final = frozenset({"roleArn"})
_LOCATION_RE: Final = re.compile(r"\bstages\[(\d+)\](?:\.actions\[(\d+)\])?")


# --------------------------------------------------------------------------- public API


def parse_declaration_text(text: str) -> dict[str, Any]:
    """Parse a pasted declaration (JSON or YAML) into its raw mapping.

    Accepts the output of ``aws codepipeline get-pipeline`` or the input of
    ``create-pipeline --cli-input-json``, optionally wrapped in a Markdown code fence.
    Malformed text or a top level that is not a mapping raises
    ``DeclarationError("InvalidStructureException")`` with the line and column when known.
    """
    if not isinstance(text, str):
        raise DeclarationError(
            INVALID_STRUCTURE, f"The declaration must be text, got {_type_name(text)}"
        )
    body = _strip_code_fence(text.lstrip("\ufeff"))
    stripped = body.strip()
    if not stripped:
        raise DeclarationError(
            INVALID_STRUCTURE,
            "The declaration is empty: paste the JSON of `aws codepipeline get-pipeline` "
            "or an equivalent YAML document",
        )
    data: Any
    try:
        data = json.loads(body)
    except RecursionError:
        raise DeclarationError(INVALID_STRUCTURE, "The declaration is nested too deeply") from None
    except ValueError as json_error:
        data = _load_yaml(body, json_error if stripped[0] in "{[" else None)
    if not isinstance(data, dict):
        raise DeclarationError(
            INVALID_STRUCTURE,
            "The declaration must be a JSON object / YAML mapping with the pipeline's fields "
            f'(or a single key "pipeline" holding them), got {_type_name(data)}',
        )
    return data


def split_declaration(
    document: Mapping[str, Any],
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Separate a pasted document into the pipeline declaration and its tags.

    Accepts ``{"pipeline": {...}, "tags": [...], "metadata": {...}}`` (get-pipeline output,
    create-pipeline input) or the bare pipeline mapping. ``metadata`` is dropped; ``tags`` (a list
    of ``{"key", "value"}``) is validated and returned. Both results are deep copies.
    """
    if not isinstance(document, Mapping):
        raise DeclarationError(
            INVALID_STRUCTURE, f"The declaration must be a mapping, got {_type_name(document)}"
        )
    doc: dict[Any, Any] = _plain(document)
    if "pipeline" in doc:
        pipeline = doc.pop("pipeline")
        if not isinstance(pipeline, dict):
            raise DeclarationError(
                INVALID_STRUCTURE,
                f'The "pipeline" key must hold a mapping, got {_type_name(pipeline)}',
            )
        unknown = [key for key in doc if key not in ("tags", "metadata")]
        if unknown:
            raise DeclarationError(
                INVALID_STRUCTURE,
                f"Unknown top-level key(s) {', '.join(_q(k) for k in unknown)} next to "
                '"pipeline": expected only "tags" and "metadata"',
            )
    else:
        pipeline = doc
    doc.pop("metadata", None)
    tags = _validate_tags(doc.pop("tags", None))
    return pipeline, tags


def validate_declaration(pipeline: Mapping[str, Any], *, local: bool) -> dict[str, Any]:
    """Validate a pipeline declaration (the mapping under ``"pipeline"``) and normalize it.

    Returns a deep copy with defaults filled: ``version`` 1, ``pipelineType`` "V1" (or "V2"
    when V2 parameters are used, as AWS does), ``executionMode`` "SUPERSEDED", and on every
    action ``runOrder`` 1, ``configuration`` {}, ``inputArtifacts`` [] and
    ``outputArtifacts`` []. ``local=True`` also refuses what the
    embedded engine cannot run. Raises :class:`DeclarationError`.
    """
    if not isinstance(pipeline, Mapping):
        raise DeclarationError(
            INVALID_STRUCTURE,
            f"The pipeline declaration must be a mapping, got {_type_name(pipeline)}",
        )
    decl: dict[str, Any] = _plain(pipeline)
    _check_shape(decl, local=local)
    _fill_defaults(decl)
    _check_layout(decl)
    _check_artifact_store(decl, local=local)
    _check_source_placement(decl)
    _check_v2_features(decl)
    _check_stage_conditions(decl)
    _check_action_kinds(decl)
    _check_configuration(decl, local=local)
    _check_artifacts(decl)
    _check_namespaces(decl)
    _check_variables(decl)
    _check_triggers(decl)
    if local:
        _check_local(decl)
        refusal = refused_declaration_field(decl)
        if refusal is not None:
            raise DeclarationError(refusal.code, refusal.message)
    return decl


# --------------------------------------------------------------------------- parsing helpers


def _strip_code_fence(text: str) -> str:
    """Remove a Markdown ``` fence around the text (as pasted in chat), if there is one."""
    stripped = text.strip()
    if not stripped.startswith("```"):
        return text
    lines = stripped.splitlines()
    body = lines[1:]
    if body and body[-1].strip() == "```":
        body = body[:-1]
    return "\n".join(body)


def _load_yaml(text: str, json_error: ValueError | None) -> Any:
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise DeclarationError(INVALID_STRUCTURE, "The declaration is nested too deeply") from None
    except Exception as yaml_error:  # PyYAML constructors also raise ValueError, TypeError...
        if isinstance(json_error, json.JSONDecodeError):
            where = f"line {json_error.lineno}, column {json_error.colno}"
            detail = f"invalid JSON at {where}: {json_error.msg}"
        else:
            detail = f"invalid YAML{_yaml_location(yaml_error)}: {_yaml_problem(yaml_error)}"
        raise DeclarationError(
            INVALID_STRUCTURE, f"Could not parse the declaration: {detail}"
        ) from None


def _yaml_location(error: Exception) -> str:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    line, column = getattr(mark, "line", None), getattr(mark, "column", None)
    if isinstance(line, int) and isinstance(column, int):
        return f" at line {line + 1}, column {column + 1}"
    return ""


def _yaml_problem(error: Exception) -> str:
    if isinstance(error, yaml.MarkedYAMLError):
        parts = [part for part in (error.context, error.problem) if part]
        if parts:
            return "; ".join(parts)
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _plain(value: Any) -> Any:
    """Deep-copy into plain dicts and lists; refuse cycles (YAML aliases) and alias bombs."""
    count = 0
    active: set[int] = set()

    def convert(item: Any) -> Any:
        nonlocal count
        count += 1
        if count > _MAX_NODES:
            raise DeclarationError(
                INVALID_STRUCTURE,
                f"The declaration is too large (more than {_MAX_NODES} values once YAML "
                "aliases are expanded)",
            )
        if isinstance(item, Mapping | list | tuple):
            if id(item) in active:
                raise DeclarationError(
                    INVALID_STRUCTURE, "The declaration refers to itself (a YAML alias cycle)"
                )
            active.add(id(item))
            try:
                if isinstance(item, Mapping):
                    return {key: convert(sub) for key, sub in item.items()}
                return [convert(sub) for sub in item]
            finally:
                active.discard(id(item))
        return item

    try:
        return convert(value)
    except RecursionError:
        raise DeclarationError(INVALID_STRUCTURE, "The declaration is nested too deeply") from None


# --------------------------------------------------------------------------- shape (step 1)


@functools.cache
def _create_pipeline_input() -> StructureShape:
    model = botocore.session.get_session().get_service_model("codepipeline")
    shape = model.operation_model("CreatePipeline").input_shape
    if shape is None:  # pragma: no cover - the model always has one
        raise RuntimeError("botocore's CreatePipeline operation has no input shape")
    return shape


def _pipeline_shape() -> Shape:
    return _create_pipeline_input().members["pipeline"]


def _tags_shape() -> Shape:
    return _create_pipeline_input().members["tags"]


@functools.cache
def _validator() -> ParamValidator:
    return ParamValidator()


def _check_shape(decl: dict[str, Any], *, local: bool) -> None:
    """Step 1. The pipeline's ``roleArn`` is required by the model and by AWS
    [APIReference/API_PipelineDeclaration.html: "roleArn ... Required: Yes"], but the embedded
    engine never assumes a role (``bot.engine.input_fields``: ignored on purpose), so with
    ``local`` a declaration without one is accepted."""
    type_problems = _botocore_problems(
        decl,
        _pipeline_shape(),
        owned=_ENGINE_OWNED_FIELDS,
        optional=_LOCALLY_OPTIONAL if local else frozenset(),
    )
    constraint_problems: list[str] = []
    _walk_constraints(decl, _pipeline_shape(), "", type_problems, constraint_problems)
    if type_problems:
        lines = [_with_location(decl, line) for line in type_problems]
        raise DeclarationError(
            INVALID_STRUCTURE,
            "The pipeline declaration does not match CodePipeline's PipelineDeclaration "
            f"structure ({_count(len(lines), 'problem')}):\n{_bullets(lines)}",
        )
    if constraint_problems:
        lines = [_with_location(decl, line) for line in constraint_problems]
        raise DeclarationError(
            VALIDATION,
            f"{_count(len(lines), 'validation error')} detected:\n{_bullets(lines)}",
        )


def _botocore_problems(
    params: Any,
    shape: Shape,
    *,
    owned: re.Pattern[str] | None,
    optional: frozenset[str] = frozenset(),
) -> list[str]:
    """botocore's client-side validation, one readable line per problem.

    Range/length errors on ``owned`` fields are dropped: the engine rules report them; so
    are missing top-level members named in ``optional``.
    """
    report = _validator().validate(params, shape)
    if not report.has_errors():
        return []
    raw = _structured_errors(getattr(report, "_errors", None))
    if raw is None:
        skipped = {f'Missing required parameter in input: "{key}"' for key in optional}
        report_lines = report.generate_report().splitlines()
        return [line for line in report_lines if line and line.strip() not in skipped]
    lines: list[str] = []
    hint = False
    for reason, name, details in raw:
        if reason in ("invalid range", "invalid length") and owned and owned.fullmatch(name):
            continue
        if (
            reason == "missing required field"
            and not name
            and details.get("required_name") in optional
        ):
            continue
        single = ValidationErrors()
        single.report(name, reason, **details)
        line = single.generate_report().replace(" in input:", " in the declaration:")
        lines.append(line)
        if reason == "invalid type" and isinstance(details.get("param"), bool | int | float):
            hint = hint or "<class 'str'>" in details.get("valid_types", [])
    if hint:
        lines.append(
            'Hint: in YAML, quote values such as "false", "yes" or "1" so they stay strings'
        )
    return lines


def _structured_errors(raw: Any) -> list[tuple[str, str, dict[str, Any]]] | None:
    """botocore's recorded (reason, name, details) tuples, or None if their layout changed."""
    if isinstance(raw, list) and all(
        isinstance(entry, tuple)
        and len(entry) == 3
        and isinstance(entry[0], str)
        and isinstance(entry[1], str)
        and isinstance(entry[2], dict)
        for entry in raw
    ):
        return raw
    return None


def _walk_constraints(
    value: Any, shape: Shape, path: str, type_problems: list[str], problems: list[str]
) -> None:
    """Check what botocore's client-side validator skips (bools as integers, enums, maximums and
    patterns; :mod:`bot.engine.constraints` knows them), one readable line per problem."""
    for found in violations(value, shape, skip=lambda at: _owned(path, at)):
        shown = (path + _dotted(found.path)).lstrip(".") or "declaration"
        if found.in_map == "key":
            shown = f"{shown} (key: {found.value})"
        if found.kind == "type":
            type_problems.append(
                f"Invalid type for parameter {shown}, value: {found.value}, type: <class 'bool'>, "
                "valid types: <class 'int'>"
            )
        elif found.kind == "size":
            problems.append(
                f"Value at '{shown}' failed to satisfy constraint: {found.constraint} "
                f"(it has {len(found.value)} entries)"
            )
        elif found.kind == "value":
            problems.append(
                f"Value {found.value} at '{shown}' failed to satisfy constraint: {found.constraint}"
            )
        else:
            extra = f" (it has {len(found.value)} characters)" if found.kind == "length" else ""
            problems.append(
                f"Value {_q(found.value)} at '{shown}' failed to satisfy constraint: "
                f"{found.constraint}{extra}"
            )


def _dotted(path: Path) -> str:
    """``("stages", 0, "name")`` -> ``.stages[0].name``; a map entry ``"{KEY}"`` -> ``.KEY``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.startswith("{") and part.endswith("}"):
            text += "." + part[1:-1]
        else:
            text += "." + part
    return text


def _owned(root: str, path: Path) -> bool:
    """True for a field whose range and format an engine rule checks with its own code."""
    return bool(_ENGINE_OWNED_FIELDS.fullmatch(root + _dotted(path)))


def _validate_tags(raw: Any) -> list[dict[str, str]]:
    if raw is None:
        return []
    problems = _botocore_problems(raw, _tags_shape(), owned=None)
    constraint_problems: list[str] = []
    _walk_constraints(raw, _tags_shape(), "tags", problems, constraint_problems)
    problems += constraint_problems
    if problems:
        raise DeclarationError(
            INVALID_TAGS,
            f"The tags are invalid ({_count(len(problems), 'problem')}); expected a list of "
            f'{{"key": ..., "value": ...}}:\n{_bullets(problems)}',
        )
    tags = [{"key": tag["key"], "value": tag["value"]} for tag in raw]
    if len(tags) > _MAX_TAGS:
        raise DeclarationError(
            TOO_MANY_TAGS, f"A pipeline can have at most {_MAX_TAGS} tags, got {len(tags)}"
        )
    seen: set[str] = set()
    for tag in tags:
        key = tag["key"]
        if key.lower().startswith("aws:"):
            raise DeclarationError(
                INVALID_TAGS, f"Tag key {_q(key)} is invalid: the aws: prefix is reserved"
            )
        if key in seen:
            raise DeclarationError(INVALID_TAGS, f"Tag key {_q(key)} is given more than once")
        seen.add(key)
    return tags


# --------------------------------------------------------------------------- engine rules (2)
#
# Rules AWS enforces on top of the model's shape. Each names the page that documents it and,
# where a public report quotes AWS's answer, that report: the code is then AWS's, and so is the
# wording where it was quoted. Rules whose code no public report confirms are listed as
# "unconfirmed" in the README's table of refusals. Every rule here holds for both backends: what
# only the embedded engine cannot run is in step 3 (``_check_local``).

# Pages cited as [userguide/...] and [APIReference/...] are under
# https://docs.aws.amazon.com/codepipeline/latest/.

_NAME_LENGTH: Final = (1, 100)
_VARIABLE_NAME_LENGTH: Final = (1, 128)

#: AWS's answer to a push or pull-request filter that combines fields it does not accept,
#: quoted in https://github.com/hashicorp/terraform-provider-aws/issues/43105.
_INVALID_FILTER_COMBINATION: Final = (
    "The trigger configuration for the source action is not valid. Make sure to choose valid "
    "filter combinations."
)
#: AWS's answer to a trigger on anything but one CodeStarSourceConnection source action,
#: quoted in https://github.com/aws/aws-cdk/issues/28694.
_INVALID_TRIGGER_SOURCE: Final = (
    "Triggers for connection must reference a CodeStarSourceConnection action. Note that when "
    "you specify a trigger, you can't specify more than one trigger per source action."
)
#: Valid filter combinations per event type [userguide/pipelines-filter.html]: a push filters on
#: tags, on branches, or on branches and file paths; a pull request on branches, optionally with
#: file paths (and ``events``, which is not a filter field).
_PUSH_FILTERS: Final = (("tags",), ("branches",), ("branches", "filePaths"))
_PULL_REQUEST_FILTERS: Final = (("branches",), ("branches", "filePaths"))

Counts = tuple[int, int | None]

#: (category, owner, provider) -> valid numbers of (input, output) artifacts, from the table
#: "Action type constraints for artifacts" [userguide/reference-action-artifacts.html]. Source
#: actions of AWS and ThirdParty providers all take 0 inputs and exactly 1 output; Custom actions
#: at most 5 of each; the Commands action needs at least one input
#: [userguide/action-reference-Commands.html].
_ARTIFACT_COUNTS: Final[dict[tuple[str, str, str], tuple[Counts, Counts]]] = {
    ("Build", "AWS", "CodeBuild"): ((1, 5), (0, 5)),
    ("Test", "AWS", "CodeBuild"): ((1, 5), (0, 5)),
    ("Test", "AWS", "DeviceFarm"): ((1, 1), (0, 0)),
    ("Approval", "AWS", "Manual"): ((0, 0), (0, 0)),
    ("Deploy", "AWS", "S3"): ((1, 1), (0, 0)),
    ("Deploy", "AWS", "CloudFormation"): ((0, 10), (0, 1)),
    ("Deploy", "AWS", "CodeDeploy"): ((1, 1), (0, 0)),
    ("Deploy", "AWS", "ElasticBeanstalk"): ((1, 1), (0, 0)),
    ("Deploy", "AWS", "OpsWorks"): ((1, 1), (0, 0)),
    ("Deploy", "AWS", "ECS"): ((1, 1), (0, 0)),
    ("Deploy", "AWS", "ServiceCatalog"): ((1, 1), (0, 0)),
    ("Invoke", "AWS", "Lambda"): ((0, 5), (0, 5)),
    ("Deploy", "ThirdParty", "AlexaSkillsKit"): ((1, 2), (0, 0)),
    COMMANDS: ((1, None), (0, None)),
}
_SOURCE_COUNTS: Final[tuple[Counts, Counts]] = ((0, 0), (1, 1))
_CUSTOM_COUNTS: Final[tuple[Counts, Counts]] = ((0, 5), (0, 5))

#: Configuration keys the action references mark "Required: Yes", for the providers whose
#: pages pipebot's users meet most [userguide/action-reference-<provider>.html].
_REQUIRED_CONFIGURATION: Final[dict[tuple[str, str, str], tuple[str, ...]]] = {
    CODECOMMIT: ("RepositoryName", "BranchName"),
    CODESTAR_CONNECTION: ("ConnectionArn", "FullRepositoryId", "BranchName"),
    ("Source", "AWS", "S3"): ("S3Bucket", "S3ObjectKey"),
    ("Source", "AWS", "ECR"): ("RepositoryName",),
    ("Build", "AWS", "CodeBuild"): ("ProjectName",),
    ("Test", "AWS", "CodeBuild"): ("ProjectName",),
    ("Deploy", "AWS", "CodeDeploy"): ("ApplicationName", "DeploymentGroupName"),
}
#: Keys the embedded engine does without: it reads a local git repository, not a connection.
_NOT_NEEDED_LOCALLY: Final = frozenset({"ConnectionArn"})

#: Results each condition type takes [userguide/stage-conditions.html]: entry conditions FAIL
#: or SKIP, success conditions ROLLBACK or FAIL. SKIP only before entry, and only with rules that
#: can decide it (LambdaInvoke, VariableCheck; ../shared/docs/codepipeline-v2.md).
_CONDITION_RESULTS: Final = {"beforeEntry": ("FAIL", "SKIP"), "onSuccess": ("ROLLBACK", "FAIL")}
_SKIP_RULE_PROVIDERS: Final = ("LambdaInvoke", "VariableCheck")


def _fill_defaults(decl: dict[str, Any]) -> None:
    """AWS's defaults. A declaration without ``pipelineType`` that uses V2 parameters becomes V2:
    "Including V2 parameters ... in the pipeline JSON when creating or updating a pipeline will
    result in the pipeline having the V2 type" [APIReference/API_PipelineDeclaration.html]."""
    decl.setdefault("version", 1)
    decl.setdefault("pipelineType", "V2" if _v2_features(decl) else "V1")
    decl.setdefault("executionMode", "SUPERSEDED")
    for stage in decl["stages"]:
        for action in stage["actions"]:
            action.setdefault("runOrder", 1)
            action.setdefault("configuration", {})
            action.setdefault("inputArtifacts", [])
            action.setdefault("outputArtifacts", [])


def _actions(decl: Mapping[str, Any]) -> Iterator[tuple[int, Mapping[str, Any], Mapping[str, Any]]]:
    """(stage index, stage, action) for every action, in declaration order."""
    for index, stage in enumerate(decl["stages"]):
        for action in stage["actions"]:
            yield index, stage, action


def _type_key(action: Mapping[str, Any]) -> tuple[str, str, str]:
    type_id = action["actionTypeId"]
    return (type_id["category"], type_id["owner"], type_id["provider"])


def _type_text(key: tuple[str, str, str]) -> str:
    return "/".join(key)


def _check_layout(decl: Mapping[str, Any]) -> None:
    """Names, stage count, uniqueness, non-empty stages, runOrder and timeout ranges.

    At least two stages, unique stage names, action names unique within their stage
    [userguide/reference-pipeline-structure.html]. Names, ``runOrder`` and ``timeoutInMinutes``
    are model constraints [APIReference/API_ActionDeclaration.html]: AWS answers them with
    ``ValidationException`` in its Coral wording, as quoted for an action name in
    https://github.com/aws-cloudformation/cfn-lint/issues/2149. A gap in runOrder numbers is
    fine ("The numbering of serial actions do not have to be in strict sequence").
    """
    _check_model_value("Pipeline name", decl["name"], "pipeline.name", text=_NAME_RE.pattern)
    stages = decl["stages"]
    if len(stages) < 2:
        raise DeclarationError(
            INVALID_STRUCTURE,
            "A pipeline needs at least 2 stages (a source stage and at least one more), "
            f"this one has {len(stages)}",
        )
    stage_names: set[str] = set()
    for s, stage in enumerate(stages, start=1):
        where = _stage_label(stage)
        at = f"pipeline.stages.{s}.member"
        _check_model_value(where, stage["name"], f"{at}.name", text=_NAME_RE.pattern)
        if stage["name"] in stage_names:
            raise DeclarationError(
                INVALID_STAGE,
                f"{where}: the stage name is used more than once; stage names must be unique "
                "in a pipeline",
            )
        stage_names.add(stage["name"])
        if not stage["actions"]:
            raise DeclarationError(INVALID_STAGE, f"{where}: a stage needs at least one action")
        action_names: set[str] = set()
        for a, action in enumerate(stage["actions"], start=1):
            where = _action_label(stage, action)
            member = f"{at}.actions.{a}.member"
            _check_model_value(where, action["name"], f"{member}.name", text=_NAME_RE.pattern)
            if action["name"] in action_names:
                raise DeclarationError(
                    INVALID_ACTION,
                    f"{where}: the action name is used more than once in the stage; action "
                    "names must be unique within a stage",
                )
            action_names.add(action["name"])
            _check_model_value(
                where, action["runOrder"], f"{member}.runOrder", number=_RUN_ORDER_RANGE
            )
            timeout = action.get("timeoutInMinutes")
            if timeout is not None:
                _check_model_value(
                    where, timeout, f"{member}.timeoutInMinutes", number=_TIMEOUT_RANGE
                )
            commands = action.get("commands")
            if commands is not None and len(commands) > _COMMANDS_RANGE[1]:
                _refuse_model_values(
                    where,
                    [
                        f"Value at '{member}.commands' failed to satisfy constraint: Member must "
                        f"have length less than or equal to {_COMMANDS_RANGE[1]} (it has "
                        f"{len(commands)} entries)"
                    ],
                )


def _check_model_value(
    where: str,
    value: Any,
    at: str,
    *,
    text: str | None = None,
    length: tuple[int, int] = _NAME_LENGTH,
    number: tuple[int, int] | None = None,
) -> None:
    """Refuse ``value`` (a name, or with ``number`` an integer) breaking its model constraints,
    in AWS's words: ``1 validation error detected: Value 'x' at 'pipeline.name' failed to
    satisfy constraint: Member must satisfy regular expression pattern: [A-Za-z0-9.@\\-_]+``."""
    problems: list[str] = []
    shown = f"Value {_q(value)} at '{at}' failed to satisfy constraint: Member must"
    if number is not None:
        low, high = number
        if value < low:
            problems.append(f"{shown} have value greater than or equal to {low}")
        if value > high:
            problems.append(f"{shown} have value less than or equal to {high}")
    else:
        low, high = length
        if len(value) > high:
            problems.append(f"{shown} have length less than or equal to {high}")
        if len(value) < low:
            problems.append(f"{shown} have length greater than or equal to {low}")
        if text is not None and not re.fullmatch(text, value):
            problems.append(f"{shown} satisfy regular expression pattern: {text}")
    if problems:
        _refuse_model_values(where, problems)


def _refuse_model_values(where: str, problems: list[str]) -> None:
    raise DeclarationError(
        VALIDATION,
        f"{where}: {_count(len(problems), 'validation error')} detected: {'; '.join(problems)}",
    )


def _check_artifact_store(decl: Mapping[str, Any], *, local: bool) -> None:
    """Either ``artifactStore`` or ``artifactStores``, never both; AWS needs one of them
    [APIReference/API_CreatePipeline.html]. "There must be an artifact store for the pipeline
    Region and for each cross-region action in the pipeline"
    [APIReference/API_PipelineDeclaration.html]: an action's ``region`` needs its bucket. The
    pipeline's own Region is the client's, unknown here, so that one is left to AWS. Artifact
    store refusals are ``InvalidStructureException`` (AWS's answer to a missing bucket in
    https://github.com/aws-samples/aws-ecs-anywhere-workshop-samples/issues/4)."""
    if "artifactStore" in decl and "artifactStores" in decl:
        raise DeclarationError(
            INVALID_STRUCTURE,
            "Use either artifactStore (a single region) or artifactStores (cross-region "
            "actions), not both",
        )
    if not local and "artifactStore" not in decl and "artifactStores" not in decl:
        raise DeclarationError(
            INVALID_STRUCTURE,
            "CodePipeline needs an artifactStore (the S3 bucket holding artifacts) or "
            "artifactStores for a cross-region pipeline",
        )
    stores = decl.get("artifactStores")
    if stores is None:
        return
    for _, stage, action in _actions(decl):
        region = action.get("region")
        if region is not None and region not in stores:
            raise DeclarationError(
                INVALID_STRUCTURE,
                f"{_action_label(stage, action)}: there is no artifact store for its region "
                f"{_q(region)}; artifactStores needs one for each Region where an action runs "
                f"(it has {', '.join(_q(name) for name in stores)})",
            )


def _check_source_placement(decl: Mapping[str, Any]) -> None:
    """Source actions: "The first stage of a pipeline must contain at least one source action.
    It can contain source actions only. Only the first stage of a pipeline can contain source
    actions." [userguide/reference-pipeline-structure.html]"""
    for index, stage, action in _actions(decl):
        category = action["actionTypeId"]["category"]
        where = _action_label(stage, action)
        if index == 0 and category != "Source":
            raise DeclarationError(
                INVALID_STAGE,
                f"{where}: the first stage may hold only Source actions, but this action's "
                f"category is {category}; move it to a later stage",
            )
        if index > 0 and category == "Source":
            raise DeclarationError(
                INVALID_STAGE,
                f"{where}: Source actions belong in the first stage only (this is stage "
                f"{index + 1}); move the action to the first stage",
            )


def _v2_features(decl: Mapping[str, Any]) -> list[str]:
    """What in the declaration needs a V2 pipeline [userguide/pipeline-types-planning.html]:
    QUEUED and PARALLEL modes, pipeline variables, triggers, stage conditions and automatic
    retry or rollback, the Commands action."""
    return [what for what, _ in _v2_uses(decl)]


def _v2_uses(decl: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Each V2 feature the declaration uses (``_v2_features``), with how to do without it."""
    found: list[tuple[str, str]] = []
    mode = decl.get("executionMode", "SUPERSEDED")
    if mode != "SUPERSEDED":
        found.append((f"executionMode {mode}", 'set "executionMode" to "SUPERSEDED" (its default)'))
    found += [
        (f'The field "{field}"', f'remove the field "{field}"')
        for field in ("variables", "triggers")
        if decl.get(field)
    ]
    for stage in decl["stages"]:
        for field in ("beforeEntry", "onSuccess", "onFailure"):
            if stage.get(field):
                found.append(
                    (
                        f'{_stage_label(stage)}: the field "{field}"',
                        f'remove the field "{field}" from {_lower_first(_stage_label(stage))}',
                    )
                )
    found += [
        (
            f"{_action_label(stage, action)}: the Compute/AWS/Commands action",
            f"replace action {_q(action['name'])} of {_lower_first(_stage_label(stage))} with "
            "one V1 pipelines run",
        )
        for _, stage, action in _actions(decl)
        if _type_key(action) == COMMANDS
    ]
    return found


def _check_v2_features(decl: Mapping[str, Any]) -> None:
    """A pipeline declared V1 cannot use V2 features. AWS answers
    ``InvalidStructureException: Triggers on tag can only be used with V2 pipelines``
    (https://github.com/cloudposse/terraform-aws-ecs-codepipeline/issues/145); the same code is
    used for the other V2 features (unconfirmed). The refusal says both ways out, naming what
    to change."""
    if decl["pipelineType"] != "V1":
        return
    for what, without in _v2_uses(decl):
        raise DeclarationError(
            INVALID_STRUCTURE,
            f"{what} can only be used with V2 pipelines, and this pipeline is V1: set "
            f'"pipelineType" to "V2", or {without}',
        )


def _check_stage_conditions(decl: Mapping[str, Any]) -> None:
    """Declaration rules of stage conditions, automatic retry and rollback.

    - results per condition type, and SKIP only before entry [userguide/stage-conditions.html,
      https://aws.amazon.com/about-aws/whats-new/2024/10/aws-codepipeline-skipping-stage/];
    - SKIP only with LambdaInvoke or VariableCheck rules (../shared/docs/codepipeline-v2.md);
    - automatic retry cannot be combined with failure conditions [userguide/stage-retry.html];
    - "failure conditions with a rollback result type cannot be added to a PARALLEL mode
      pipeline" [userguide/execution-modes.html].

    The rules of each condition are checked by ``_check_rules``.
    """
    parallel = decl["executionMode"] == "PARALLEL"
    for index, stage in enumerate(decl["stages"]):
        where = _stage_label(stage)
        for field, allowed in _CONDITION_RESULTS.items():
            for condition in (stage.get(field) or {}).get("conditions") or []:
                result = condition.get("result")
                if result is not None and result not in allowed:
                    raise DeclarationError(
                        INVALID_STAGE,
                        f'{where}: a "{field}" condition cannot have the result {result}; it '
                        f"takes {' or '.join(allowed)}",
                    )
                if result == "SKIP":
                    for rule in condition.get("rules") or []:
                        provider = rule["ruleTypeId"]["provider"]
                        if provider not in _SKIP_RULE_PROVIDERS:
                            raise DeclarationError(
                                INVALID_STAGE,
                                f"{where}: rule {_q(rule['name'])} ({provider}) cannot decide "
                                "a SKIP result; only "
                                f"{' and '.join(_SKIP_RULE_PROVIDERS)} rules can",
                            )
        on_failure = stage.get("onFailure") or {}
        conditions = on_failure.get("conditions") or []
        results = [on_failure.get("result"), *(c.get("result") for c in conditions)]
        if "SKIP" in results:
            raise DeclarationError(
                INVALID_STAGE,
                f'{where}: "onFailure" cannot have the result SKIP; SKIP can only be used with '
                'conditions evaluated before entry ("beforeEntry")',
            )
        if on_failure.get("result") == "RETRY" and conditions:
            raise DeclarationError(
                INVALID_STAGE,
                f'{where}: "onFailure" cannot combine automatic retry (result RETRY) with '
                "failure conditions",
            )
        if parallel and "ROLLBACK" in results:
            raise DeclarationError(
                INVALID_STAGE,
                f'{where}: "onFailure" with a ROLLBACK result cannot be added to a PARALLEL '
                "mode pipeline (stage rollback is not available in PARALLEL mode)",
            )
        _check_rules(decl, index, stage)


def _check_rules(decl: Mapping[str, Any], index: int, stage: Mapping[str, Any]) -> None:
    """A condition's rules [userguide/rule-reference.html, APIReference/API_RuleDeclaration.html]:
    rule names unique in the condition; ``commands`` on Commands rules only, and required there;
    the configuration properties a rule type requires (VariableCheck: Variable, Value, Operator
    EQ | NE | CONTAINS | MATCHES; DeploymentWindow: Cron), and no property the type lacks; input
    artifacts produced before the condition runs (an entry condition's by an earlier stage).
    The codes are unconfirmed: InvalidStageDeclarationException, as the other condition rules."""
    where = _stage_label(stage)
    produced = _produced_before(decl, index)
    for field in ("beforeEntry", "onSuccess", "onFailure"):
        available = produced if field == "beforeEntry" else produced | _produced_in(stage)
        for condition in (stage.get(field) or {}).get("conditions") or []:
            names: set[str] = set()
            for rule in condition.get("rules") or []:
                label = f'{where}, "{field}" rule {_q(rule["name"])}'
                if rule["name"] in names:
                    raise DeclarationError(
                        INVALID_STAGE,
                        f"{label}: the rule name is used more than once in the condition",
                    )
                names.add(rule["name"])
                _check_rule(label, rule, available)


def _check_rule(label: str, rule: Mapping[str, Any], available: set[str]) -> None:
    provider = rule["ruleTypeId"]["provider"]
    if provider == stage_conditions.COMMANDS and not rule.get("commands"):
        raise DeclarationError(
            INVALID_STAGE, f"{label}: a Commands rule must have a non-empty commands field"
        )
    if provider != stage_conditions.COMMANDS and "commands" in rule:
        raise DeclarationError(
            INVALID_STAGE,
            f"{label}: only Commands rules take a commands field, not {provider} rules",
        )
    rule_type = stage_conditions.RULE_TYPES.get(provider)
    configuration = rule.get("configuration") or {}
    if rule_type is not None:
        known = {p.name for p in rule_type.properties}
        missing = [
            p.name for p in rule_type.properties if p.required and p.name not in configuration
        ]
        if missing:
            raise DeclarationError(
                INVALID_STAGE,
                f"{label}: rule configuration is missing required configuration "
                f"{' and '.join(missing)} ({provider})",
            )
        unknown = [key for key in configuration if key not in known]
        if unknown:
            listed = ", ".join(sorted(known)) or "none"
            raise DeclarationError(
                INVALID_STAGE,
                f"{label}: {', '.join(_q(k) for k in unknown)} is not a configuration property "
                f"of {provider} rules (properties: {listed})",
            )
        operator = configuration.get("Operator")
        if (
            provider == stage_conditions.VARIABLE_CHECK
            and operator not in stage_conditions.OPERATORS
        ):
            raise DeclarationError(
                INVALID_STAGE,
                f"{label}: Operator {_q(operator)} is not one of "
                f"{', '.join(stage_conditions.OPERATORS)}",
            )
    for artifact in rule.get("inputArtifacts") or []:
        if artifact["name"] not in available:
            names = ", ".join(_q(n) for n in sorted(available)) or "none"
            raise DeclarationError(
                INVALID_STAGE,
                f"{label}: input artifact {_q(artifact['name'])} is not produced before the "
                f"condition is evaluated (available: {names})",
            )


def _produced_before(decl: Mapping[str, Any], index: int) -> set[str]:
    return {
        artifact["name"]
        for stage in decl["stages"][:index]
        for action in stage["actions"]
        for artifact in action.get("outputArtifacts") or []
    }


def _produced_in(stage: Mapping[str, Any]) -> set[str]:
    return {
        artifact["name"]
        for action in stage["actions"]
        for artifact in action.get("outputArtifacts") or []
    }


def _check_action_kinds(decl: Mapping[str, Any]) -> None:
    """Per-action-type rules: input and output artifact counts [userguide/reference-action-
    artifacts.html], answered ``InvalidActionDeclarationException: Action X declares 0 input
    artifacts which is less than the minimum count (1)``
    (https://github.com/awsdocs/aws-cloudformation-user-guide/pull/941); the Commands action's
    ``commands`` (``InvalidActionDeclarationException: Action X must have a non-empty commands
    field``, https://github.com/hashicorp/terraform-provider-aws/issues/42997), a field no other
    action takes (wording from https://github.com/aws/aws-cdk/issues/38843, code unconfirmed)."""
    for _, stage, action in _actions(decl):
        where = _action_label(stage, action)
        key = _type_key(action)
        if key == COMMANDS and not action.get("commands"):
            raise DeclarationError(
                INVALID_ACTION,
                f"{where}: Action {action['name']} must have a non-empty commands field (1-50 "
                "shell commands)",
            )
        if key != COMMANDS and "commands" in action:
            raise DeclarationError(
                INVALID_ACTION,
                f"{where}: The following action cannot contain a commands field: "
                f"{action['name']}. To use the commands field, use a compute action "
                f"(Compute/AWS/Commands), not {_type_text(key)}",
            )
        counts = _artifact_counts(key)
        if counts is None:
            continue
        for field, kind, (low, high) in zip(
            ("inputArtifacts", "outputArtifacts"), ("input", "output"), counts, strict=True
        ):
            number = len(action[field])
            if number < low:
                bound = f"less than the minimum count ({low})"
            elif high is not None and number > high:
                bound = f"more than the maximum count ({high})"
            else:
                continue
            listed = f": {_names(action[field])}" if action[field] else ""
            raise DeclarationError(
                INVALID_ACTION,
                f"{where}: Action {action['name']} declares {number} {kind} artifacts which is "
                f"{bound} for {_type_text(key)}{listed}",
            )


def _artifact_counts(key: tuple[str, str, str]) -> tuple[Counts, Counts] | None:
    category, owner, _ = key
    if key in _ARTIFACT_COUNTS:
        return _ARTIFACT_COUNTS[key]
    if owner == "Custom":
        return _CUSTOM_COUNTS
    if category == "Source":
        return _SOURCE_COUNTS
    return None


def _check_configuration(decl: Mapping[str, Any], *, local: bool) -> None:
    """Configuration keys the action reference of a provider marks required
    [userguide/action-reference-CodeCommit.html, -CodestarConnectionSource, -S3, -ECR,
    -CodeBuild, -CodeDeploy]. The code is unconfirmed (InvalidActionDeclarationException, the
    code of every other per-action refusal)."""
    for _, stage, action in _actions(decl):
        required = _REQUIRED_CONFIGURATION.get(_type_key(action), ())
        missing = [
            name
            for name in required
            if name not in action["configuration"] and not (local and name in _NOT_NEEDED_LOCALLY)
        ]
        if missing:
            raise DeclarationError(
                INVALID_ACTION,
                f"{_action_label(stage, action)}: Action configuration for action "
                f"{action['name']} is missing required configuration "
                f"{' and '.join(missing)} ({_type_text(_type_key(action))})",
            )


def _check_artifacts(decl: Mapping[str, Any]) -> None:
    """Artifacts: "Output artifact names must be unique in a pipeline"; "the input artifact of
    an action must exactly match the output artifact declared in a preceding action"
    [userguide/reference-pipeline-structure.html]. The wording of the first is AWS's
    (https://github.com/aws-cloudformation/cfn-lint/issues/1688); the codes are unconfirmed."""
    # artifact name -> (stage index, runOrder, label of the producing action)
    producers: dict[str, tuple[int, int, str]] = {}
    for index, stage, action in _actions(decl):
        where = _action_label(stage, action)
        for artifact in action["outputArtifacts"]:
            name = artifact["name"]
            if name in producers:
                raise DeclarationError(
                    INVALID_STRUCTURE,
                    f"{where}: Output Artifact Bundle name must be unique within the pipeline. "
                    f"{name} has been used more than once (also by "
                    f"{_lower_first(producers[name][2])})",
                )
            producers[name] = (index, action["runOrder"], where)
    for index, stage, action in _actions(decl):
        where = _action_label(stage, action)
        seen: set[str] = set()
        for artifact in action["inputArtifacts"]:
            name = artifact["name"]
            if name in seen:
                raise DeclarationError(
                    INVALID_ACTION,
                    f"{where}: input artifact {_q(name)} is listed more than once",
                )
            seen.add(name)
            producer = producers.get(name)
            if producer is None:
                known = ", ".join(_q(n) for n in producers) or "none"
                raise DeclarationError(
                    INVALID_STRUCTURE,
                    f"{where}: input artifact {_q(name)} is not the output artifact of any "
                    f"action (output artifacts in this pipeline: {known})",
                )
            producer_stage, producer_order, producer_label = producer
            if producer_stage > index:
                raise DeclarationError(
                    INVALID_STRUCTURE,
                    f"{where}: input artifact {_q(name)} is produced by "
                    f"{_lower_first(producer_label)}, in a later stage; an input artifact must "
                    "come from an earlier stage or an earlier runOrder in the same stage",
                )
            if producer_stage == index and producer_order >= action["runOrder"]:
                by = (
                    "this action itself"
                    if producer_label == where
                    else f"{_lower_first(producer_label)} (runOrder {producer_order})"
                )
                raise DeclarationError(
                    INVALID_STRUCTURE,
                    f"{where}: input artifact {_q(name)} is produced by {by}, which does not "
                    f"run before this action (runOrder {action['runOrder']}); an input artifact "
                    "must come from an earlier stage or an earlier runOrder in the same stage",
                )


def _check_namespaces(decl: Mapping[str, Any]) -> None:
    """Variable namespaces are unique in the pipeline [userguide/reference-variables.html].
    AWS answers ``InvalidActionDeclarationException: Namespaces must be unique across the
    pipeline definition. The following occur more than once in the pipeline. StageName=[...],
    ActionName=[...], Namespace=[...]`` (https://github.com/aws/aws-cdk/issues/16142,
    https://github.com/aws/aws-cdk/issues/6111)."""
    owners: dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]] = {}
    for _, stage, action in _actions(decl):
        namespace = action.get("namespace")
        if namespace is None:
            continue
        if namespace in owners:
            listed = "; ".join(
                f"StageName=[{s['name']}], ActionName=[{a['name']}], Namespace=[{namespace}]"
                for s, a in (owners[namespace], (stage, action))
            )
            raise DeclarationError(
                INVALID_ACTION,
                f"{_action_label(stage, action)}: Namespaces must be unique across the pipeline "
                f"definition. The following occur more than once in the pipeline. {listed}",
            )
        owners[namespace] = (stage, action)


def _check_variables(decl: Mapping[str, Any]) -> None:
    """Pipeline variable names: a model constraint (``ValidationException``,
    [APIReference/API_PipelineVariableDeclaration.html]) and unique in the pipeline
    [userguide/reference-variables.html] (code unconfirmed)."""
    seen: set[str] = set()
    for k, variable in enumerate(decl.get("variables") or [], start=1):
        name = variable["name"]
        _check_model_value(
            f"Pipeline variable {_q(name)}",
            name,
            f"pipeline.variables.{k}.member.name",
            text=_VARIABLE_NAME_RE.pattern,
            length=_VARIABLE_NAME_LENGTH,
        )
        if name in seen:
            raise DeclarationError(
                VALIDATION,
                f"Pipeline variable {_q(name)} is declared more than once; variable names must "
                "be unique",
            )
        seen.add(name)


def _check_triggers(decl: Mapping[str, Any]) -> None:
    """Trigger rules [userguide/pipelines-triggers.html, userguide/pipelines-filter.html,
    APIReference/API_GitConfiguration.html]: a trigger names a CodeStarSourceConnection source
    action of the pipeline, one trigger per source action, and each push or pull-request filter
    uses a valid combination of fields. Counts and sizes (3 filters per event, 8 patterns per
    list, 255 characters per pattern) are model constraints checked in step 1.

    A push filter must be tags, branches, or branches with file paths; a pull-request filter
    branches, optionally with file paths. AWS answers ``InvalidStructureException: The trigger
    configuration for the source action is not valid. Make sure to choose valid filter
    combinations.`` (https://github.com/hashicorp/terraform-provider-aws/issues/43105). For the
    source action AWS says "Triggers for connection must reference a CodeStarSourceConnection
    action..." (https://github.com/aws/aws-cdk/issues/28694; its code is unconfirmed).
    """
    sources = {
        action["name"]: _type_key(action)
        for action in decl["stages"][0]["actions"]
        if action["actionTypeId"]["category"] == "Source"
    }
    claimed: dict[str, int] = {}
    for number, trigger in enumerate(decl.get("triggers") or [], start=1):
        git = trigger["gitConfiguration"]
        name = git["sourceActionName"]
        if name not in sources:
            detail = (
                f"{_q(name)} is not a source action of this pipeline (source actions: "
                f"{', '.join(_q(n) for n in sources)})"
            )
        elif sources[name] != CODESTAR_CONNECTION:
            detail = f"source action {_q(name)} is {_type_text(sources[name])}"
        elif name in claimed:
            detail = f"trigger {claimed[name]} already names source action {_q(name)}"
        else:
            detail = ""
        if detail:
            raise DeclarationError(
                INVALID_STRUCTURE, f"Trigger {number}: {_INVALID_TRIGGER_SOURCE} ({detail})"
            )
        claimed[name] = number
        for event, valid in (("push", _PUSH_FILTERS), ("pullRequest", _PULL_REQUEST_FILTERS)):
            for index, criteria in enumerate(git.get(event) or [], start=1):
                fields = tuple(f for f in ("tags", "branches", "filePaths") if f in criteria)
                if fields not in valid:
                    combos = "; ".join(" + ".join(combo) for combo in valid)
                    given = " + ".join(fields) or "no filter field"
                    raise DeclarationError(
                        INVALID_STRUCTURE,
                        f"Trigger {number}, {event} filter {index}: {_INVALID_FILTER_COMBINATION} "
                        f"({given} given; a {event} filter takes {combos})",
                    )


# --------------------------------------------------------------------------- local rules (3)


def _check_local(decl: Mapping[str, Any]) -> None:
    for stage in decl["stages"]:
        _check_local_stage_conditions(stage)
    for _, stage, action in _actions(decl):
        where = _action_label(stage, action)
        key = _type_key(action)
        if key not in SUPPORTED_LOCAL_PROVIDERS:
            raise DeclarationError(
                INVALID_ACTION,
                f"{where}: provider {action['actionTypeId']['provider']} "
                f"({_type_text(key)}) is not available in the embedded engine; it needs the "
                "AWS backend (set PIPEBOT_BACKEND=aws). Locally, use "
                f"{_local_alternative(key[0])}",
            )
        configuration = action["configuration"]
        required = _LOCAL_REQUIRED_CONFIGURATION.get(key, ())
        missing = [name for name in required if not configuration.get(name)]
        if missing:
            raise DeclarationError(
                INVALID_ACTION,
                f"{where}: {_type_text(key)} needs configuration "
                f"{' and '.join(missing)} in the embedded engine",
            )
        problem = _local_source_problem(key, configuration) or _local_s3_codedeploy_problem(
            key, configuration
        )
        if problem:
            raise DeclarationError(INVALID_ACTION, f"{where}: {problem}")
        if key in (CODEBUILD_BUILD, CODEBUILD_TEST):
            _check_local_codebuild(where, action)


def _check_local_codebuild(where: str, action: Mapping[str, Any]) -> None:
    """A CodeBuild action the embedded engine cannot run as declared: BatchEnabled "true",
    Parameter Store and Secrets Manager variables (each named), a missing or unknown
    PrimarySource, a BuildspecOverride in S3 (``codebuild.configuration_problems``). What the
    buildspec itself uses is only known when the action runs, and refused then, before any
    command (../shared/docs/local-providers.md, "CodeBuild")."""
    inputs = [artifact["name"] for artifact in action.get("inputArtifacts") or []]
    problems = codebuild_provider.configuration_problems(action["configuration"], inputs)
    if problems:
        raise DeclarationError(INVALID_ACTION, f"{where}: " + "; ".join(problems))


def _check_local_stage_conditions(stage: Mapping[str, Any]) -> None:
    """Conditions run locally with VariableCheck, DeploymentWindow and Commands rules
    (``bot.engine.conditions``); a rule of another provider (CloudWatchAlarm, LambdaInvoke,
    CodeBuild, ...) needs the AWS backend and is refused by name, as is a DeploymentWindow
    cron expression the engine cannot evaluate."""
    where = _stage_label(stage)
    for field in ("beforeEntry", "onSuccess", "onFailure"):
        for condition in (stage.get(field) or {}).get("conditions") or []:
            for rule in condition.get("rules") or []:
                label = f'{where}, "{field}" rule {_q(rule["name"])}'
                provider = rule["ruleTypeId"]["provider"]
                if provider not in stage_conditions.LOCAL_RULE_PROVIDERS:
                    raise DeclarationError(
                        INVALID_STAGE,
                        f"{label}: rule provider {provider} is not available in the embedded "
                        "engine; it needs the AWS backend (set PIPEBOT_BACKEND=aws). Locally, "
                        f"use {', '.join(stage_conditions.LOCAL_RULE_PROVIDERS)} rules",
                    )
                if provider == stage_conditions.DEPLOYMENT_WINDOW:
                    configuration = rule.get("configuration") or {}
                    try:
                        stage_conditions.deployment_window(
                            configuration["Cron"], configuration.get("TimeZone")
                        )
                    except stage_conditions.CronError as exc:
                        raise DeclarationError(INVALID_STAGE, f"{label}: {exc}") from None


def _local_alternative(category: str) -> str:
    if category == "Source":
        return (
            "a Source/AWS/CodeCommit action (RepositoryName, BranchName) or a "
            "Source/AWS/CodeStarSourceConnection action (FullRepositoryId, BranchName) reading "
            "a local git repository, or a Source/AWS/S3 action (S3Bucket, S3ObjectKey) reading "
            "a zip under the data directory"
        )
    if category == "Approval":
        return "an Approval/AWS/Manual action"
    if category == "Deploy":
        return (
            "a Deploy/AWS/CodeDeploy action (an appspec.yml deployed to a local instance), a "
            "Deploy/AWS/S3 action (a local bucket), or a Compute/AWS/Commands action "
            "(pipelineType V2) whose commands do the deploy step"
        )
    return (
        "a Compute/AWS/Commands action (pipelineType V2) whose commands do the "
        f"{category.lower()} step"
    )


def _local_source_problem(
    key: tuple[str, str, str], configuration: Mapping[str, str]
) -> str | None:
    """Refuse repository and branch names that would escape the repositories directory or be
    read as git options. Values holding #{variables} are checked by the engine once resolved."""
    if key == CODECOMMIT:
        repository = configuration["RepositoryName"]
        if "#{" not in repository and not _repo_part_ok(repository):
            return (
                f"RepositoryName {_q(repository)} is not a valid repository name (letters, "
                "digits and . _ - only)"
            )
    elif key == CODESTAR_CONNECTION:
        full_id = configuration["FullRepositoryId"]
        parts = full_id.split("/")
        if "#{" not in full_id and (len(parts) != 2 or not all(map(_repo_part_ok, parts))):
            return (
                f"FullRepositoryId {_q(full_id)} must be owner/repository (letters, digits and "
                ". _ - in each part)"
            )
    else:
        return None
    branch = configuration["BranchName"]
    if "#{" not in branch and not _branch_ok(branch):
        return f"BranchName {_q(branch)} is not a valid git branch name"
    return None


def _local_s3_codedeploy_problem(
    key: tuple[str, str, str], configuration: Mapping[str, str]
) -> str | None:
    """S3 bucket and key names, S3 deploy's Extract / ObjectKey pair, and CodeDeploy application
    and group names that cannot name local directories (``bot.engine.providers.s3`` and
    ``.codedeploy``); values holding #{variables} are checked when the action runs."""
    if key == S3_SOURCE:
        return s3_provider.source_configuration_problem(configuration)
    if key == S3_DEPLOY:
        return s3_provider.deploy_configuration_problem(configuration)
    if key == CODEDEPLOY:
        return codedeploy_provider.configuration_problem(configuration)
    return None


def _repo_part_ok(part: str) -> bool:
    return bool(_REPO_PART_RE.fullmatch(part)) and part not in (".", "..")


def _branch_ok(branch: str) -> bool:
    """A subset of ``git check-ref-format --branch``."""
    if branch.startswith(("-", "/")) or branch.endswith(("/", ".", ".lock")) or branch == "@":
        return False
    if any(seq in branch for seq in ("..", "@{", "//")):
        return False
    if any(part.startswith(".") for part in branch.split("/")):
        return False
    return not any(c in _BRANCH_BAD_CHARS or ord(c) < 32 or ord(c) == 127 for c in branch)


# --------------------------------------------------------------------------- messages


def _q(value: Any) -> str:
    """A value quoted for a message, shortened if long."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return json.dumps(text, ensure_ascii=False)


def _stage_label(stage: Mapping[str, Any]) -> str:
    return f"Stage {_q(stage['name'])}"


def _action_label(stage: Mapping[str, Any], action: Mapping[str, Any]) -> str:
    return f"{_stage_label(stage)}, action {_q(action['name'])}"


def _lower_first(label: str) -> str:
    return label[:1].lower() + label[1:]


def _names(artifacts: list[Mapping[str, Any]]) -> str:
    return ", ".join(_q(artifact["name"]) for artifact in artifacts)


def _type_name(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing (null)"}
    return names.get(type(value), f"a {type(value).__name__}")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _bullets(lines: list[str]) -> str:
    shown = [_shorten(line) for line in lines[:_MAX_LISTED_PROBLEMS]]
    if len(lines) > _MAX_LISTED_PROBLEMS:
        shown.append(f"... and {len(lines) - _MAX_LISTED_PROBLEMS} more")
    return "\n".join(f"- {line}" for line in shown)


def _shorten(line: str) -> str:
    return line if len(line) <= _MAX_LINE else line[: _MAX_LINE - 3] + "..."


def _with_location(decl: Mapping[str, Any], line: str) -> str:
    """Prefix a problem about ``stages[i].actions[j]...`` with the stage and action names."""
    match = _LOCATION_RE.search(line)
    if not match:
        return line
    stage_index = int(match.group(1))
    stages = decl.get("stages")
    stage = stages[stage_index] if isinstance(stages, list) and stage_index < len(stages) else None
    label = _label_of(stage, "Stage", stage_index)
    if match.group(2) is not None:
        action_index = int(match.group(2))
        actions = stage.get("actions") if isinstance(stage, dict) else None
        action = (
            actions[action_index]
            if isinstance(actions, list) and action_index < len(actions)
            else None
        )
        label += ", " + _label_of(action, "action", action_index)
    return f"{label}: {line}"


def _label_of(item: Any, kind: str, index: int) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"{kind} {_q(name)}" if isinstance(name, str) else f"{kind} #{index + 1}"
