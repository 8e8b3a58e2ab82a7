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
from botocore.model import ListShape, MapShape, Shape, StructureShape
from botocore.validate import ParamValidator, ValidationErrors

from bot.engine.errors import DeclarationError

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

#: (category, owner, provider) triples the embedded engine can run.
SUPPORTED_LOCAL_PROVIDERS: Final[frozenset[tuple[str, str, str]]] = frozenset(
    {CODECOMMIT, CODESTAR_CONNECTION, COMMANDS, MANUAL_APPROVAL}
)

# Configuration keys the embedded engine needs for its source providers.
_LOCAL_REQUIRED_CONFIGURATION: Final[dict[tuple[str, str, str], tuple[str, ...]]] = {
    CODECOMMIT: ("RepositoryName", "BranchName"),
    CODESTAR_CONNECTION: ("FullRepositoryId", "BranchName"),
}

_NAME_RE: Final = re.compile(r"[A-Za-z0-9.@\-_]+")
_NAME_CHARS: Final = "letters, digits and . @ - _"
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
# Patterns in the model that AWS documentation examples do not follow (roleArn "ARN").
_UNCHECKED_PATTERNS: Final = frozenset({"RoleArn"})
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

    Returns a deep copy with defaults filled: ``version`` 1, ``pipelineType`` "V1",
    ``executionMode`` "SUPERSEDED", and on every action ``runOrder`` 1, ``configuration`` {},
    ``inputArtifacts`` [] and ``outputArtifacts`` []. ``local=True`` also refuses what the
    embedded engine cannot run. Raises :class:`DeclarationError`.
    """
    if not isinstance(pipeline, Mapping):
        raise DeclarationError(
            INVALID_STRUCTURE,
            f"The pipeline declaration must be a mapping, got {_type_name(pipeline)}",
        )
    decl: dict[str, Any] = _plain(pipeline)
    _check_shape(decl)
    _fill_defaults(decl)
    _check_layout(decl)
    _check_artifact_store(decl, local=local)
    _check_source_placement(decl)
    _check_v2_features(decl)
    _check_action_kinds(decl)
    _check_artifacts(decl)
    _check_namespaces(decl)
    _check_variables(decl)
    _check_triggers(decl)
    if local:
        _check_local(decl)
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


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error:  # pragma: no cover - the model's patterns are all Python-compatible
        return None


def _check_shape(decl: dict[str, Any]) -> None:
    type_problems = _botocore_problems(decl, _pipeline_shape(), owned=_ENGINE_OWNED_FIELDS)
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


def _botocore_problems(params: Any, shape: Shape, *, owned: re.Pattern[str] | None) -> list[str]:
    """botocore's client-side validation, one readable line per problem.

    Range/length errors on ``owned`` fields are dropped: the engine rules report them.
    """
    report = _validator().validate(params, shape)
    if not report.has_errors():
        return []
    raw = _structured_errors(getattr(report, "_errors", None))
    if raw is None:
        return [line for line in report.generate_report().splitlines() if line]
    lines: list[str] = []
    hint = False
    for reason, name, details in raw:
        if reason in ("invalid range", "invalid length") and owned and owned.fullmatch(name):
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
    """Check what botocore's client-side validator skips: bools as integers, enums, maximums
    and patterns. Tolerates wrong types (botocore reports those)."""
    owned = bool(_ENGINE_OWNED_FIELDS.fullmatch(path))
    shown = path.lstrip(".") or "declaration"
    metadata = shape.metadata
    if isinstance(shape, StructureShape):
        if isinstance(value, dict):
            for key, member in shape.members.items():
                if key in value:
                    _walk_constraints(value[key], member, f"{path}.{key}", type_problems, problems)
    elif isinstance(shape, ListShape):
        if isinstance(value, list | tuple):
            maximum = metadata.get("max")
            if not owned and maximum is not None and len(value) > maximum:
                problems.append(
                    f"Value at '{shown}' failed to satisfy constraint: Member must have length "
                    f"less than or equal to {maximum} (it has {len(value)} entries)"
                )
            for index, item in enumerate(value):
                _walk_constraints(item, shape.member, f"{path}[{index}]", type_problems, problems)
    elif isinstance(shape, MapShape):
        if isinstance(value, dict):
            for key, item in value.items():
                _walk_constraints(key, shape.key, f"{path} (key: {key})", type_problems, problems)
                _walk_constraints(item, shape.value, f"{path}.{key}", type_problems, problems)
    elif shape.type_name == "string":
        if isinstance(value, str) and not owned:
            problem = _string_constraint_problem(value, shape)
            if problem:
                problems.append(f"Value {_q(value)} at '{shown}' failed to satisfy {problem}")
    elif shape.type_name in ("integer", "long"):
        if isinstance(value, bool):
            type_problems.append(
                f"Invalid type for parameter {shown}, value: {value}, type: <class 'bool'>, "
                "valid types: <class 'int'>"
            )
        elif isinstance(value, int) and not owned:
            maximum = metadata.get("max")
            if maximum is not None and value > maximum:
                problems.append(
                    f"Value {value} at '{shown}' failed to satisfy constraint: Member must have "
                    f"value less than or equal to {maximum}"
                )


def _string_constraint_problem(value: str, shape: Shape) -> str | None:
    metadata = shape.metadata
    enum = metadata.get("enum")
    if enum and value not in enum:
        return f"constraint: Member must satisfy enum value set: [{', '.join(enum)}]"
    maximum = metadata.get("max")
    if maximum is not None and len(value) > maximum:
        return (
            f"constraint: Member must have length less than or equal to {maximum} "
            f"(it has {len(value)} characters)"
        )
    pattern = metadata.get("pattern")
    if pattern and shape.name not in _UNCHECKED_PATTERNS:
        compiled = _compiled(pattern)
        if compiled is not None and not compiled.fullmatch(value):
            return f"constraint: Member must satisfy regular expression pattern: {pattern}"
    return None


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


def _fill_defaults(decl: dict[str, Any]) -> None:
    decl.setdefault("version", 1)
    decl.setdefault("pipelineType", "V1")
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
    """Names, stage count, uniqueness, non-empty stages, runOrder and timeout ranges."""
    problem = _name_problem(decl["name"])
    if problem:
        raise DeclarationError(
            INVALID_STRUCTURE, f"Pipeline name {_q(decl['name'])} is invalid: {problem}"
        )
    stages = decl["stages"]
    if len(stages) < 2:
        raise DeclarationError(
            INVALID_STRUCTURE,
            "A pipeline needs at least 2 stages (a source stage and at least one more), "
            f"this one has {len(stages)}",
        )
    stage_names: set[str] = set()
    for stage in stages:
        where = _stage_label(stage)
        problem = _name_problem(stage["name"])
        if problem:
            raise DeclarationError(INVALID_STAGE, f"{where}: the stage name is invalid: {problem}")
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
        for action in stage["actions"]:
            where = _action_label(stage, action)
            problem = _name_problem(action["name"])
            if problem:
                raise DeclarationError(
                    INVALID_ACTION, f"{where}: the action name is invalid: {problem}"
                )
            if action["name"] in action_names:
                raise DeclarationError(
                    INVALID_ACTION,
                    f"{where}: the action name is used more than once in the stage; action "
                    "names must be unique within a stage",
                )
            action_names.add(action["name"])
            low, high = _RUN_ORDER_RANGE
            if not low <= action["runOrder"] <= high:
                raise DeclarationError(
                    INVALID_ACTION,
                    f"{where}: runOrder {action['runOrder']} is out of range ({low}-{high})",
                )
            timeout = action.get("timeoutInMinutes")
            low, high = _TIMEOUT_RANGE
            if timeout is not None and not low <= timeout <= high:
                raise DeclarationError(
                    INVALID_ACTION,
                    f"{where}: timeoutInMinutes {timeout} is out of range ({low}-{high}, "
                    "i.e. 5 minutes to 60 days)",
                )


def _check_artifact_store(decl: Mapping[str, Any], *, local: bool) -> None:
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


def _check_source_placement(decl: Mapping[str, Any]) -> None:
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


def _check_v2_features(decl: Mapping[str, Any]) -> None:
    if decl["pipelineType"] != "V1":
        return

    def refuse(what: str) -> DeclarationError:
        return DeclarationError(
            VALIDATION,
            f"{what} requires pipelineType V2, and this pipeline is V1; set "
            '"pipelineType": "V2" or remove it',
        )

    mode = decl["executionMode"]
    if mode != "SUPERSEDED":
        raise refuse(f"executionMode {mode}")
    for field in ("variables", "triggers"):
        if decl.get(field):
            raise refuse(f'The field "{field}"')
    for stage in decl["stages"]:
        for field in ("beforeEntry", "onSuccess", "onFailure"):
            if stage.get(field):
                raise refuse(f'{_stage_label(stage)}: the field "{field}"')
    for _, stage, action in _actions(decl):
        if _type_key(action) == COMMANDS:
            raise refuse(f"{_action_label(stage, action)}: the Compute/AWS/Commands action")


def _check_action_kinds(decl: Mapping[str, Any]) -> None:
    for _, stage, action in _actions(decl):
        where = _action_label(stage, action)
        key = _type_key(action)
        inputs, outputs = action["inputArtifacts"], action["outputArtifacts"]
        if key[0] == "Source":
            if inputs:
                raise DeclarationError(
                    INVALID_ACTION,
                    f"{where}: inputArtifacts must be empty for a Source action "
                    f"(got {_names(inputs)})",
                )
            if len(outputs) != 1:
                raise DeclarationError(
                    INVALID_ACTION,
                    f"{where}: a Source action needs exactly 1 output artifact in "
                    f"outputArtifacts, got {len(outputs)}",
                )
        if key == MANUAL_APPROVAL:
            for field in ("inputArtifacts", "outputArtifacts"):
                if action[field]:
                    raise DeclarationError(
                        INVALID_ACTION,
                        f"{where}: {field} must be empty for a manual approval "
                        f"(Approval/AWS/Manual), got {_names(action[field])}",
                    )
        if key == COMMANDS:
            commands = action.get("commands")
            low, high = _COMMANDS_RANGE
            if not commands:
                raise DeclarationError(
                    INVALID_ACTION,
                    f"{where}: a Compute/AWS/Commands action needs commands (1-50 lines)",
                )
            if not low <= len(commands) <= high:
                raise DeclarationError(
                    INVALID_ACTION,
                    f"{where}: commands has {len(commands)} entries; a Commands action takes "
                    f"{low}-{high}",
                )
            if not inputs:
                raise DeclarationError(
                    INVALID_ACTION,
                    f"{where}: a Compute/AWS/Commands action needs at least one input artifact "
                    "in inputArtifacts",
                )
        elif "commands" in action:
            raise DeclarationError(
                INVALID_ACTION,
                f"{where}: commands is only valid for Compute/AWS/Commands actions, not "
                f"{_type_text(key)}",
            )


def _check_artifacts(decl: Mapping[str, Any]) -> None:
    # artifact name -> (stage index, runOrder, label of the producing action)
    producers: dict[str, tuple[int, int, str]] = {}
    for index, stage, action in _actions(decl):
        where = _action_label(stage, action)
        for artifact in action["outputArtifacts"]:
            name = artifact["name"]
            if name in producers:
                raise DeclarationError(
                    INVALID_STRUCTURE,
                    f"{where}: output artifact {_q(name)} is also produced by "
                    f"{_lower_first(producers[name][2])}; output artifact names must be unique "
                    "in the pipeline",
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
    owners: dict[str, str] = {}
    for _, stage, action in _actions(decl):
        namespace = action.get("namespace")
        if namespace is None:
            continue
        where = _action_label(stage, action)
        if namespace in owners:
            raise DeclarationError(
                INVALID_STRUCTURE,
                f"{where}: namespace {_q(namespace)} is already used by "
                f"{_lower_first(owners[namespace])}; namespaces must be unique in the pipeline",
            )
        owners[namespace] = where


def _check_variables(decl: Mapping[str, Any]) -> None:
    seen: set[str] = set()
    for variable in decl.get("variables") or []:
        name = variable["name"]
        if not 1 <= len(name) <= 128 or not _VARIABLE_NAME_RE.fullmatch(name):
            raise DeclarationError(
                VALIDATION,
                f"Pipeline variable {_q(name)}: the name must be 1-128 characters of letters, "
                "digits and @ - _",
            )
        if name in seen:
            raise DeclarationError(
                VALIDATION,
                f"Pipeline variable {_q(name)} is declared more than once; variable names must "
                "be unique",
            )
        seen.add(name)


def _check_triggers(decl: Mapping[str, Any]) -> None:
    sources = {
        action["name"]: _type_key(action)
        for action in decl["stages"][0]["actions"]
        if action["actionTypeId"]["category"] == "Source"
    }
    for number, trigger in enumerate(decl.get("triggers") or [], start=1):
        name = trigger["gitConfiguration"]["sourceActionName"]
        if name not in sources:
            raise DeclarationError(
                INVALID_STRUCTURE,
                f"Trigger {number}: gitConfiguration.sourceActionName {_q(name)} does not name a "
                f"source action of this pipeline (source actions: "
                f"{', '.join(_q(n) for n in sources)})",
            )
        if sources[name] != CODESTAR_CONNECTION:
            raise DeclarationError(
                INVALID_STRUCTURE,
                f"Trigger {number}: source action {_q(name)} is {_type_text(sources[name])}; "
                "triggers need a Source/AWS/CodeStarSourceConnection action",
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
        problem = _local_source_problem(key, configuration)
        if problem:
            raise DeclarationError(INVALID_ACTION, f"{where}: {problem}")


def _check_local_stage_conditions(stage: Mapping[str, Any]) -> None:
    where = _stage_label(stage)
    for field in ("beforeEntry", "onSuccess", "onFailure"):
        value = stage.get(field)
        if not value:
            continue
        if field == "onFailure" and value == {"result": "FAIL"}:
            continue  # what every stage does anyway
        detail = "stage conditions"
        if field == "onFailure" and not value.get("conditions"):
            result = value.get("result")
            detail = f"automatic {result.lower()} on failure" if result else "onFailure settings"
        raise DeclarationError(
            INVALID_STAGE,
            f'{where}: "{field}" ({detail}) is not supported by the embedded engine yet; '
            "remove it, or run this pipeline on the AWS backend (PIPEBOT_BACKEND=aws)",
        )


def _local_alternative(category: str) -> str:
    if category == "Source":
        return (
            "a Source/AWS/CodeCommit action (RepositoryName, BranchName) or a "
            "Source/AWS/CodeStarSourceConnection action (FullRepositoryId, BranchName) reading "
            "a local git repository"
        )
    if category == "Approval":
        return "an Approval/AWS/Manual action"
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


def _name_problem(name: str) -> str | None:
    if not 1 <= len(name) <= 100:
        return f"names must be 1-100 characters long (this one has {len(name)})"
    if not _NAME_RE.fullmatch(name):
        bad = sorted({c for c in name if not _NAME_RE.fullmatch(c)})
        shown = " ".join(json.dumps(c, ensure_ascii=False) for c in bad[:10])
        return f"it contains {shown}; names may use only {_NAME_CHARS}"
    return None


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
