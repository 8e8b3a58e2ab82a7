"""The Build/Test AWS CodeBuild action run on the local machine: a buildspec 0.2 in one shell.

The contract is ../shared/docs/local-providers.md, "CodeBuild"; the rules are AWS's:

- CodePipeline's CodeBuild action (configuration ``ProjectName``, ``PrimarySource``,
  ``EnvironmentVariables``, ``BatchEnabled``, ``CombineArtifacts``, ``BuildspecOverride``; output
  artifacts matched to secondary artifact identifiers):
  https://docs.aws.amazon.com/codepipeline/latest/userguide/action-reference-CodeBuild.html
- the buildspec syntax (``env``, ``phases``, ``on-failure``, ``finally``, ``artifacts``,
  ``secondary-artifacts``, ``reports``, variable precedence):
  https://docs.aws.amazon.com/codebuild/latest/userguide/build-spec-ref.html
- the phase transitions (a failed INSTALL or PRE_BUILD goes to FINALIZING; a failed BUILD still
  runs POST_BUILD): https://docs.aws.amazon.com/codebuild/latest/userguide/view-build-details-phases.html
- CodeBuild's environment variables (``CODEBUILD_BUILD_SUCCEEDING`` turns ``0`` once a phase
  failed): https://docs.aws.amazon.com/codebuild/latest/userguide/build-env-ref-env-vars.html
- test reports (JUnit XML, the default ``file-format``):
  https://docs.aws.amazon.com/codebuild/latest/userguide/test-reporting.html

The build runs in steps the engine's worker sequences, as for a Commands action (whose helpers,
``bot.engine.providers.commands``, this module reuses for the work directory, CodeBuild's own
variables, the environment's layers and the process group):

1. ``plan_build`` reads the project registry and the buildspec and merges the variables; what
   cannot run locally (Parameter Store, Secrets Manager, batch builds, buildspec 0.1) raises
   ``CodeBuildError`` there, before any command runs;
2. ``start_build`` starts ONE shell running every phase (``build_script``);
3. ``finish_build`` reads the phases' results, the JUnit reports, the exported variables and
   collects the output artifacts; ``BuildResult.summary`` is the action's summary.

Test results reach users through the action's summary (``externalExecutionSummary`` in
ListActionExecutions): a line ``12 tests: 11 passed, 1 failed`` and a line starting with
``FAILED_TESTS_PREFIX`` naming the failed tests; ``parse_test_summary`` reads them back.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import yaml
from junitparser import Error as JUnitError
from junitparser import Failure as JUnitFailure
from junitparser import JUnitXml, TestCase, TestSuite
from junitparser import Skipped as JUnitSkipped
from wcmatch import glob as wglob

from bot.engine import codebuild_projects as projects
from bot.engine.providers.commands import CommandsError

__all__ = [
    "ACTION_TYPES",
    "FAILED_TESTS_PREFIX",
    "PHASES",
    "ActionVariable",
    "ArtifactSpec",
    "BuildPlan",
    "BuildResult",
    "Buildspec",
    "CodeBuildError",
    "OnFailure",
    "Phase",
    "PhaseResult",
    "ReportGroup",
    "TestReport",
    "build_script",
    "configuration_problems",
    "finish_build",
    "next_build_number",
    "parse_buildspec",
    "parse_environment_variables",
    "parse_test_summary",
    "plan_build",
    "primary_source",
    "read_reports",
    "start_build",
    "write_log",
]

ACTION_TYPES: Final = (("Build", "AWS", "CodeBuild"), ("Test", "AWS", "CodeBuild"))
#: The buildspec's command phases, in CodeBuild's order, and their names in CodeBuild's logs.
PHASES: Final = ("install", "pre_build", "build", "post_build")
_PHASE_LABEL: Final = {
    "install": "INSTALL",
    "pre_build": "PRE_BUILD",
    "build": "BUILD",
    "post_build": "POST_BUILD",
}
#: Phases whose failure skips the later command phases (unless ``on-failure: CONTINUE``).
_ABORTING_PHASES: Final = frozenset({"install", "pre_build"})
#: The start of the summary line naming the failed tests.
FAILED_TESTS_PREFIX: Final = "Failed tests: "
_TESTS_LINE: Final = re.compile(
    r"^(?P<total>\d+) tests?: (?P<passed>\d+) passed, (?P<failed>\d+) failed"
    r"(?:, (?P<skipped>\d+) skipped)?$"
)
_SHELL_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SUMMARY_MAX: Final = 2048
_MAX_FAILED_NAMES: Final = 20
_SECRET_TYPES: Final = ("PARAMETER_STORE", "SECRETS_MANAGER")
_GLOB_FLAGS: Final = wglob.GLOBSTAR | wglob.DOTGLOB | wglob.BRACE


class CodeBuildError(CommandsError):
    """The CodeBuild action cannot run or finish for a reason other than a command's status.

    ``summary`` (from ``CommandsError``) is the action's failure summary, shown to users as is.
    """


class OnFailure(StrEnum):
    """A phase's ``on-failure``: ABORT (the default) or CONTINUE. CodeBuild's RETRY forms retry
    the phase and are refused locally."""

    ABORT = "ABORT"
    CONTINUE = "CONTINUE"


@dataclass(frozen=True, kw_only=True)
class Phase:
    """One buildspec phase: ``commands`` then ``finally`` (which runs even when a command
    failed; a failed command skips the rest of ``commands``)."""

    name: str
    commands: tuple[str, ...] = ()
    finally_commands: tuple[str, ...] = ()
    on_failure: OnFailure = OnFailure.ABORT

    @property
    def label(self) -> str:
        """``INSTALL``, ``PRE_BUILD``, ``BUILD``, ``POST_BUILD``: the name in CodeBuild's logs."""
        return _PHASE_LABEL[self.name]


@dataclass(frozen=True, kw_only=True)
class ArtifactSpec:
    """``artifacts`` or one ``secondary-artifacts`` entry. ``files`` are globs relative to
    ``base_directory`` (the work directory when None); ``name`` is accepted and has no effect:
    for builds CodePipeline starts, "CodePipeline manages its build output names" (CodeBuild API
    reference, ProjectArtifacts ``name``)."""

    files: tuple[str, ...]
    base_directory: str | None = None
    discard_paths: bool = False
    exclude_paths: tuple[str, ...] = ()
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class ReportGroup:
    """One ``reports`` group of JUnit XML files (globs relative to ``base_directory``)."""

    name: str
    files: tuple[str, ...]
    base_directory: str | None = None


@dataclass(frozen=True, kw_only=True)
class Buildspec:
    """A parsed buildspec version 0.2. ``variables`` are ``env.variables``; ``notes`` say which
    keys were accepted without local effect (written to the build's log)."""

    shell: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)
    exported_variables: tuple[str, ...] = ()
    parameter_store: Mapping[str, str] = field(default_factory=dict)
    secrets_manager: Mapping[str, str] = field(default_factory=dict)
    phases: tuple[Phase, ...] = ()
    artifacts: ArtifactSpec | None = None
    secondary_artifacts: Mapping[str, ArtifactSpec] = field(default_factory=dict)
    reports: tuple[ReportGroup, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ActionVariable:
    """One item of the action's ``EnvironmentVariables`` (``{name, value, type}``)."""

    name: str
    value: str
    type: str = "PLAINTEXT"


@dataclass(frozen=True, kw_only=True)
class BuildPlan:
    """Everything a build needs before its shell starts.

    ``environment`` is the declared variables after precedence (action > project > buildspec),
    ``timeout_seconds`` the project's ``timeoutInMinutes``, ``notes`` lines for the log.
    """

    project: str
    primary: str | None
    buildspec: Buildspec
    buildspec_origin: str
    environment: Mapping[str, str]
    timeout_seconds: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PhaseResult:
    """How one phase ended: SUCCEEDED, FAILED, SKIPPED, or INTERRUPTED (the shell stopped in it:
    killed, timed out, or a command ran ``exit``). ``failed_command`` is the first command that
    failed, with ``exit_status``."""

    phase: Phase
    status: str
    failed_command: str | None = None
    exit_status: int | None = None


@dataclass(frozen=True, kw_only=True)
class TestReport:
    """The counts of every JUnit report of a build and the failed tests' names
    (``classname.name``; errors count as failures, as in the summary)."""

    total: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failed_names: tuple[str, ...] = ()

    def line(self) -> str:
        """``12 tests: 11 passed, 1 failed`` (``, 2 skipped`` when some were)."""
        text = f"{self.total} test{'s' if self.total != 1 else ''}: {self.passed} passed, "
        text += f"{self.failed} failed"
        if self.skipped:
            text += f", {self.skipped} skipped"
        return text


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    """The outcome of ``finish_build``: ``succeeded``, the action's ``summary``, the exported
    ``variables`` and the output artifacts ``produced`` (empty when the build failed)."""

    succeeded: bool
    summary: str
    phases: tuple[PhaseResult, ...] = ()
    report: TestReport | None = None
    variables: Mapping[str, str] = field(default_factory=dict)
    produced: tuple[str, ...] = ()


# --------------------------------------------------------------------------- configuration


def parse_environment_variables(raw: str | None) -> list[ActionVariable]:
    """The action's ``EnvironmentVariables``: a JSON array of ``{name, value, type}`` objects,
    ``type`` ``PLAINTEXT`` (the default), ``PARAMETER_STORE`` or ``SECRETS_MANAGER``
    (action-reference-CodeBuild.html). Raises ``CodeBuildError`` when it is not that shape."""
    if raw is None or not raw.strip():
        return []
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CodeBuildError(
            f"EnvironmentVariables must be a JSON array of {{name, value, type}} objects: {exc}"
        ) from None
    if not isinstance(data, list):
        raise CodeBuildError("EnvironmentVariables must be a JSON array of {name, value, type}")
    variables = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise CodeBuildError("Each EnvironmentVariables item must be an object with a name")
        kind = item.get("type", "PLAINTEXT")
        if kind not in projects.VARIABLE_TYPES:
            raise CodeBuildError(
                f"EnvironmentVariables {item['name']} has type {kind!r}; the types are "
                + ", ".join(projects.VARIABLE_TYPES)
            )
        value = item.get("value", "")
        variables.append(ActionVariable(name=item["name"], value=str(value), type=kind))
    return variables


def _secret_refusal(names: Sequence[str]) -> str:
    return (
        "cannot be resolved by the embedded engine (no Parameter Store or Secrets Manager "
        "locally), and a build never runs with a secret silently empty: "
        + ", ".join(names)
        + ". Give the values as PLAINTEXT variables, or run this pipeline on the AWS backend "
        "(PIPEBOT_BACKEND=aws)"
    )


def configuration_problems(
    configuration: Mapping[str, Any], input_artifacts: Sequence[str], *, secrets: bool = True
) -> list[str]:
    """What in a CodeBuild action's configuration the embedded engine refuses at create time.

    ``BatchEnabled`` ``"true"`` (batch builds need CodeBuild), an ``EnvironmentVariables`` that
    is not a JSON array of variables, variables of type ``PARAMETER_STORE`` or
    ``SECRETS_MANAGER`` (each named), a ``PrimarySource`` missing with several input artifacts or
    naming none of them, and a ``BuildspecOverride`` in S3. Values holding ``#{...}`` variables
    are checked when the action runs. ``secrets=False`` leaves the secret variables out (the
    run names them together with the buildspec's and the project's).
    """
    problems: list[str] = []
    batch = str(configuration.get("BatchEnabled", "")).strip().lower()
    if batch == "true":
        problems.append(
            'BatchEnabled "true" (a batch build) is not available in the embedded engine; '
            "remove BatchEnabled or run this pipeline on the AWS backend (PIPEBOT_BACKEND=aws)"
        )
    raw = configuration.get("EnvironmentVariables")
    if isinstance(raw, str) and raw.strip():
        try:
            variables = parse_environment_variables(raw)
        except CodeBuildError as exc:
            problems.append(exc.summary)
        else:
            named = [f"{v.name} ({v.type})" for v in variables if v.type in _SECRET_TYPES]
            if named and secrets:
                problems.append("EnvironmentVariables " + _secret_refusal(named))
    primary = configuration.get("PrimarySource")
    if primary is None and len(input_artifacts) > 1:
        problems.append(
            "PrimarySource is required when a CodeBuild action has several input artifacts "
            f"({', '.join(input_artifacts)}): name the one holding the buildspec"
        )
    elif primary is not None and "#{" not in primary and primary not in input_artifacts:
        problems.append(
            f"PrimarySource {primary!r} must be the name of one of the action's input artifacts "
            f"({', '.join(input_artifacts) or 'none'})"
        )
    override = configuration.get("BuildspecOverride")
    if isinstance(override, str) and override.strip().startswith("arn:"):
        problems.append(
            "BuildspecOverride in S3 is not available in the embedded engine; give a path "
            "relative to the primary source or an inline buildspec"
        )
    project = configuration.get("ProjectName")
    if (
        isinstance(project, str)
        and "#{" not in project
        and not projects.PROJECT_NAME.fullmatch(project)
    ):
        problems.append(
            f"ProjectName {project!r} is not a CodeBuild project name (2-255 letters, "
            "digits, - and _, starting with a letter or digit)"
        )
    return problems


def primary_source(*, configuration: Mapping[str, Any], inputs: Sequence[str]) -> str | None:
    """The input artifact holding the buildspec: ``PrimarySource``, or the only input artifact
    ("When there is only one source for the action, the PrimarySource artifact defaults to that
    artifact", action-reference-CodeBuild.html). Raises ``CodeBuildError`` otherwise."""
    primary = configuration.get("PrimarySource")
    if primary:
        if primary not in inputs:
            raise CodeBuildError(
                f"PrimarySource {primary!r} is not one of the input artifacts ({', '.join(inputs)})"
            )
        return str(primary)
    if len(inputs) > 1:
        raise CodeBuildError("PrimarySource is required with several input artifacts")
    return inputs[0] if inputs else None


# --------------------------------------------------------------------------- buildspec


def _strings(value: Any, where: str) -> tuple[str, ...]:
    """A YAML sequence of commands or paths (a lone string counts as one item)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(i, str | int | float) for i in value):
        raise CodeBuildError(f"Invalid buildspec: {where} must be a list of strings")
    return tuple(_scalar(item) for item in value)


def _scalar(value: Any) -> str:
    """A YAML scalar as CodeBuild reads it into a string (``true`` stays ``true``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _yes(value: Any, where: str) -> bool:
    """``discard-paths``: ``yes``/``no`` (YAML 1.1 reads them as booleans) or true/false."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("yes", "no", "true", "false"):
        return value.strip().lower() in ("yes", "true")
    raise CodeBuildError(f"Invalid buildspec: {where} must be yes or no")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CodeBuildError(f"Invalid buildspec: {where} must be a mapping")
    return value


def _unknown(section: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(str(key) for key in section if key not in known)
    if unknown:
        raise CodeBuildError(
            f"Invalid buildspec: unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)} in {where} (known: {', '.join(sorted(known))})"
        )


def _relative(path: str, where: str) -> str:
    parts = [part for part in path.replace("\\", "/").split("/") if part not in ("", ".")]
    if path.startswith(("/", "\\")) or ".." in parts or "\0" in path:
        raise CodeBuildError(
            f"Invalid buildspec: {where} {path!r} must stay inside the build's directory"
        )
    return "/".join(parts)


def _artifact(section: Mapping[str, Any], where: str, *, secondary: bool) -> ArtifactSpec:
    known = {"files", "name", "discard-paths", "base-directory", "exclude-paths"}
    known |= {"enable-symlinks", "s3-prefix"} | (set() if secondary else {"secondary-artifacts"})
    _unknown(section, known, where)
    files = _strings(section.get("files"), f"{where}/files")
    if not files:
        raise CodeBuildError(f"Invalid buildspec: {where}/files is required")
    for pattern in files:
        _relative(pattern, f"{where}/files pattern")
    excludes = _strings(section.get("exclude-paths"), f"{where}/exclude-paths")
    base = section.get("base-directory")
    name = section.get("name")
    return ArtifactSpec(
        files=files,
        base_directory=_relative(str(base), f"{where}/base-directory") if base else None,
        discard_paths=_yes(section.get("discard-paths"), f"{where}/discard-paths"),
        exclude_paths=excludes,
        name=None if name is None else str(name),
    )


def _phase(name: str, section: Any) -> tuple[Phase, list[str]]:
    where = f"phases/{name}"
    body = _mapping(section, where)
    _unknown(body, {"run-as", "on-failure", "runtime-versions", "commands", "finally"}, where)
    notes = []
    if "run-as" in body:
        notes.append(f"{where}/run-as is ignored: the commands run as pipebot's OS user")
    if "runtime-versions" in body:
        if name != "install":
            raise CodeBuildError("Invalid buildspec: runtime-versions belongs to phases/install")
        notes.append(
            f"{where}/runtime-versions is ignored: the build uses the tools installed on "
            "pipebot's host"
        )
    raw = body.get("on-failure", "ABORT")
    try:
        on_failure = OnFailure(str(raw))
    except ValueError:
        raise CodeBuildError(
            f"Invalid buildspec: {where}/on-failure {raw!r} is not available locally "
            "(ABORT or CONTINUE; RETRY needs CodeBuild)"
        ) from None
    phase = Phase(
        name=name,
        commands=_strings(body.get("commands"), f"{where}/commands"),
        finally_commands=_strings(body.get("finally"), f"{where}/finally"),
        on_failure=on_failure,
    )
    return phase, notes


def parse_buildspec(text: str, *, origin: str) -> Buildspec:
    """Parse a buildspec (YAML text) into a ``Buildspec``; ``origin`` names it in errors.

    Version 0.2 only: version 0.1 runs each command in a separate shell, which the engine does
    not reproduce, so it is refused (build-spec-ref.html, "Buildspec versions"). Keys with no
    local meaning (``run-as``, ``proxy``, ``cache``, ``batch``, ``git-credential-helper``,
    ``runtime-versions``, ``enable-symlinks``, ``s3-prefix``) are accepted and named in
    ``notes``. Raises ``CodeBuildError`` for YAML errors, unknown keys, and wrong shapes.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CodeBuildError(f"Invalid buildspec ({origin}): not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise CodeBuildError(f"Invalid buildspec ({origin}): it must be a YAML mapping")
    try:
        return _buildspec(data)
    except CodeBuildError as exc:
        message = exc.summary.replace("Invalid buildspec", f"Invalid buildspec ({origin})", 1)
        raise CodeBuildError(message) from None


def _buildspec(data: Mapping[str, Any]) -> Buildspec:
    version = _scalar(data.get("version"))
    if version != "0.2":
        raise CodeBuildError(
            f"Invalid buildspec: version {version or '(missing)'} is not supported locally; "
            "use version: 0.2 (one shell for the whole build)"
        )
    known = {"version", "run-as", "env", "proxy", "batch", "phases", "reports", "artifacts"}
    _unknown(data, known | {"cache"}, "the buildspec")
    notes = [
        f"{key} is ignored by the embedded engine"
        + {
            "run-as": ": the commands run as pipebot's OS user",
            "proxy": ": the build uses the host's network",
            "batch": ": batch builds need CodeBuild (BatchEnabled is refused locally)",
            "cache": ": there is no build cache locally",
        }[key]
        for key in ("run-as", "proxy", "batch", "cache")
        if key in data
    ]
    env = _mapping(data.get("env"), "env")
    _unknown(
        env,
        {
            "shell",
            "variables",
            "parameter-store",
            "exported-variables",
            "secrets-manager",
            "git-credential-helper",
        },
        "env",
    )
    if "git-credential-helper" in env:
        notes.append("env/git-credential-helper is ignored: git uses the host's credentials")
    shell = env.get("shell")
    if shell is not None and shell not in ("bash", "/bin/sh"):
        raise CodeBuildError(
            f"Invalid buildspec: env/shell {shell!r} is not a Linux shell CodeBuild supports "
            "(bash or /bin/sh)"
        )
    variables = {str(k): _scalar(v) for k, v in _mapping(env.get("variables"), "env").items()}
    exported = _strings(env.get("exported-variables"), "env/exported-variables")
    bad = [name for name in exported if not _SHELL_NAME.fullmatch(name)]
    if bad:
        raise CodeBuildError(
            f"Invalid buildspec: env/exported-variables {', '.join(bad)} are not variable names"
        )
    phases_section = _mapping(data.get("phases"), "phases")
    _unknown(phases_section, set(PHASES), "phases")
    phases = []
    for name in PHASES:
        if name in phases_section:
            phase, phase_notes = _phase(name, phases_section[name])
            phases.append(phase)
            notes += phase_notes
    artifacts = None
    secondary: dict[str, ArtifactSpec] = {}
    if data.get("artifacts") is not None:
        section = _mapping(data["artifacts"], "artifacts")
        if "files" in section:
            artifacts = _artifact(section, "artifacts", secondary=False)
        else:
            _unknown(section, {"secondary-artifacts"}, "artifacts (without files)")
        for identifier, body in _mapping(
            section.get("secondary-artifacts"), "artifacts/secondary-artifacts"
        ).items():
            where = f"artifacts/secondary-artifacts/{identifier}"
            secondary[str(identifier)] = _artifact(_mapping(body, where), where, secondary=True)
        for key in ("enable-symlinks", "s3-prefix"):
            if key in section:
                notes.append(f"artifacts/{key} is ignored: artifacts are directories locally")
    reports = []
    for group, body in _mapping(data.get("reports"), "reports").items():
        where = f"reports/{group}"
        section = _mapping(body, where)
        _unknown(section, {"files", "base-directory", "discard-paths", "file-format"}, where)
        file_format = str(section.get("file-format", "JUNITXML"))
        if file_format != "JUNITXML":
            raise CodeBuildError(
                f"Invalid buildspec: {where}/file-format {file_format} is not available locally "
                "(JUNITXML only)"
            )
        files = _strings(section.get("files"), f"{where}/files")
        if not files:
            raise CodeBuildError(f"Invalid buildspec: {where}/files is required")
        base = section.get("base-directory")
        reports.append(
            ReportGroup(
                name=str(group),
                files=files,
                base_directory=_relative(str(base), f"{where}/base-directory") if base else None,
            )
        )
    return Buildspec(
        shell=shell,
        variables=variables,
        exported_variables=exported,
        parameter_store={
            str(k): _scalar(v) for k, v in _mapping(env.get("parameter-store"), "env").items()
        },
        secrets_manager={
            str(k): _scalar(v) for k, v in _mapping(env.get("secrets-manager"), "env").items()
        },
        phases=tuple(phases),
        artifacts=artifacts,
        secondary_artifacts=secondary,
        reports=tuple(reports),
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- planning


def _buildspec_text(
    *, project: projects.Project | None, override: str | None, source_root: Path | None
) -> tuple[str, str]:
    """(buildspec text, where it came from): ``BuildspecOverride``, else the project's
    buildspec, else ``buildspec.yml`` at the primary source's root."""
    if override and override.strip():
        try:
            parsed = yaml.safe_load(override)
        except yaml.YAMLError:
            parsed = None
        if isinstance(parsed, Mapping):
            return override, "the action's inline BuildspecOverride"
        path, origin = override.strip(), "BuildspecOverride"
    elif project is not None and project.buildspec and project.inline:
        return project.buildspec, f"the inline buildspec of project {project.name}"
    elif project is not None and project.buildspec:
        path, origin = project.buildspec, f"project {project.name}'s buildspec"
    else:
        path, origin = "buildspec.yml", "the default buildspec"
    if source_root is None:
        raise CodeBuildError(f"No input artifact holds {origin} {path}")
    parts = [part for part in path.replace("\\", "/").split("/") if part not in ("", ".")]
    if path.startswith(("/", "\\")) or ".." in parts or not parts:
        raise CodeBuildError(f"{origin} {path!r} must be a path inside the primary source")
    file = source_root.joinpath(*parts)
    real_root = Path(os.path.realpath(source_root))
    if not Path(os.path.realpath(file)).is_relative_to(real_root) or not file.is_file():
        raise CodeBuildError(
            f"YAML_FILE_ERROR: {origin} {path} was not found in the primary source"
        )
    return file.read_text(encoding="utf-8", errors="replace"), f"{origin} {path}"


def plan_build(
    *,
    configuration: Mapping[str, Any],
    inputs: Sequence[str],
    source_root: Path | None,
    registry: Path,
) -> BuildPlan:
    """Read the project from ``registry``, the buildspec from ``source_root`` (the primary
    source's copy) or the registry, and merge the variables.

    Precedence, highest first: the action's ``EnvironmentVariables``, the project's
    ``environmentVariables``, the buildspec's ``env.variables`` ("If you specify the same
    environment variable name in multiple places ... the value in the start build operation call
    takes highest precedence", build-spec-ref.html). Raises ``CodeBuildError`` (before any
    command runs) for batch builds, an unknown input, a buildspec that cannot run locally, and
    every Parameter Store or Secrets Manager variable, all named in one message.
    """
    problems = configuration_problems(configuration, inputs, secrets=False)
    if problems:
        raise CodeBuildError("; ".join(problems))
    name = str(configuration.get("ProjectName", ""))
    if not projects.PROJECT_NAME.fullmatch(name):
        raise CodeBuildError(f"ProjectName {name!r} is not a CodeBuild project name")
    primary = primary_source(configuration=configuration, inputs=inputs)
    try:
        project = projects.find_project(path=registry, name=name)
    except projects.ProjectRegistryError as exc:
        raise CodeBuildError(str(exc)) from None
    text, origin = _buildspec_text(
        project=project, override=configuration.get("BuildspecOverride"), source_root=source_root
    )
    buildspec = parse_buildspec(text, origin=origin)
    action_variables = parse_environment_variables(configuration.get("EnvironmentVariables"))
    secrets = [f"parameter-store {key}" for key in buildspec.parameter_store]
    secrets += [f"secrets-manager {key}" for key in buildspec.secrets_manager]
    if project is not None:
        secrets += [
            f"project variable {v.name} ({v.type})"
            for v in project.environment_variables
            if v.type in _SECRET_TYPES
        ]
    secrets += [
        f"EnvironmentVariables {v.name} ({v.type})"
        for v in action_variables
        if v.type in _SECRET_TYPES
    ]
    if secrets:
        raise CodeBuildError("These variables " + _secret_refusal(secrets))
    environment = dict(buildspec.variables)
    if project is not None:
        environment.update((v.name, v.value) for v in project.environment_variables)
    environment.update((v.name, v.value) for v in action_variables)
    timeout = (project.timeout_minutes if project else projects.DEFAULT_TIMEOUT_MINUTES) * 60
    notes = [f"Project {name}: {'registered' if project else 'not in the registry'}; {origin}"]
    if configuration.get("CombineArtifacts"):
        notes.append("CombineArtifacts is ignored: it applies to batch builds only")
    return BuildPlan(
        project=name,
        primary=primary,
        buildspec=buildspec,
        buildspec_origin=origin,
        environment=environment,
        timeout_seconds=timeout,
        notes=(*notes, *buildspec.notes),
    )


def next_build_number(*, data_dir: Path, project: str) -> int:
    """The project's next ``CODEBUILD_BUILD_NUMBER``, counting from 1 across every pipeline and
    process that uses the project, as CodeBuild numbers a project's builds.

    A counter file ``<data_dir>/codebuild/build-numbers/<project>`` updated under an exclusive
    ``flock``, so concurrent builds of one project never share a number.
    """
    if not projects.PROJECT_NAME.fullmatch(project):
        raise CodeBuildError(f"ProjectName {project!r} is not a CodeBuild project name")
    path = data_dir / "codebuild" / "build-numbers" / project
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="ascii") as counter:
        fcntl.flock(counter, fcntl.LOCK_EX)
        counter.seek(0)
        text = counter.read().strip()
        number = (int(text) if text.isdigit() else 0) + 1
        counter.seek(0)
        counter.truncate()
        counter.write(str(number))
        counter.flush()
    return number


# --------------------------------------------------------------------------- the shell


def _printf(text: str) -> str:
    return f"printf '%s\\n' {shlex.quote('[Container] ' + text)}"


def _run_block(
    phase: Phase, block: str, commands: Sequence[str], flag: str, results: str
) -> list[str]:
    """Run ``commands`` while ``$flag`` is 1; the first failure sets it to 0 and is recorded."""
    lines = []
    for index, command in enumerate(commands):
        lines += [
            f'if [ "${flag}" = 1 ]; then',
            "  " + _printf(f"Running command {command}"),
            # Read by the EXIT trap when the command exits the shell itself (``exit 3``).
            f"  __pb_running={shlex.quote(f'FAIL {phase.name} {block} {index}')}",
            f"  __pb_command={shlex.quote(command)}",
            f"  eval {shlex.quote(command)}",
            "  __pb_status=$?",
            "  __pb_running=",
            '  if [ "$__pb_status" -ne 0 ]; then',
            "    printf '%s%s\\n' "
            + shlex.quote(f"[Container] Command did not exit successfully {command} exit status ")
            + ' "$__pb_status"',
            f"    {flag}=0",
            "    __pb_context="
            + shlex.quote(f"Error while executing command: {command}. Reason: exit status ")
            + '"$__pb_status"',
            f"    printf 'FAIL {phase.name} {block} {index} %s\\n' \"$__pb_status\" >> {results}",
            "  fi",
            "fi",
        ]
    return lines


def _indent(lines: Sequence[str]) -> list[str]:
    return ["  " + line for line in lines]


def build_script(
    buildspec: Buildspec, *, results_path: Path, variables_path: Path, env_program: str
) -> str:
    """The POSIX shell script running every phase of ``buildspec`` in one shell.

    Each command is ``eval``-ed in that shell, so ``cd`` and variables carry from command to
    command and phase to phase. In a phase the first failing command skips the rest of its
    ``commands``; its ``finally`` commands run anyway (a failure there skips the rest of
    ``finally``). A failed phase sets ``CODEBUILD_BUILD_SUCCEEDING=0``; a failed ``install`` or
    ``pre_build`` with ``on-failure: ABORT`` skips the later phases, a failed ``build`` still
    runs ``post_build``. After ``post_build`` the ``exported-variables`` that are set are
    exported and the environment is dumped NUL-separated to ``variables_path``. The script
    records its progress in ``results_path`` (``START``/``FAIL``/``END``/``SKIP``/``DONE`` lines,
    read by ``finish_build``) and exits 0 only when every phase succeeded.
    """
    results = shlex.quote(str(results_path.absolute()))
    lines = [
        "# Generated by pipebot for a CodeBuild action (buildspec 0.2): one shell, every phase.",
        f": > {results}",
        "__pb_running=",
        # A command that exits the shell (``exit 3``) ends the build there; say which one
        # and with what status, as CodeBuild does.
        "__pb_on_exit() {",
        "  __pb_rc=$?",
        '  if [ -n "$__pb_running" ] && [ "$__pb_rc" -ne 0 ]; then',
        "    printf '%s%s%s%s\\n' "
        + shlex.quote("[Container] Command did not exit successfully ")
        + ' "$__pb_command" '
        + shlex.quote(" exit status ")
        + ' "$__pb_rc"',
        f'    printf \'%s %s\\n\' "$__pb_running" "$__pb_rc" >> {results}',
        "  fi",
        "}",
        "trap __pb_on_exit EXIT",
        "__pb_succeeding=1",
        "__pb_abort=0",
        "CODEBUILD_BUILD_SUCCEEDING=1",
        "export CODEBUILD_BUILD_SUCCEEDING",
    ]
    for phase in buildspec.phases:
        label = phase.label
        lines += [
            'if [ "$__pb_abort" = 0 ]; then',
            "  " + _printf(f"Entering phase {label}"),
            f"  printf 'START {phase.name}\\n' >> {results}",
            "  __pb_ok=1",
            *_indent(_run_block(phase, "commands", phase.commands, "__pb_ok", results)),
            "  __pb_fin=1",
            *_indent(_run_block(phase, "finally", phase.finally_commands, "__pb_fin", results)),
            '  if [ "$__pb_fin" = 0 ]; then __pb_ok=0; fi',
            '  if [ "$__pb_ok" = 1 ]; then',
            "    " + _printf(f"Phase complete: {label} State: SUCCEEDED"),
            f"    printf 'END {phase.name} SUCCEEDED\\n' >> {results}",
            "  else",
            "    " + _printf(f"Phase complete: {label} State: FAILED"),
            "    printf '%s%s\\n' "
            + shlex.quote(
                "[Container] Phase context status code: COMMAND_EXECUTION_ERROR Message: "
            )
            + ' "$__pb_context"',
            f"    printf 'END {phase.name} FAILED\\n' >> {results}",
            "    __pb_succeeding=0",
            "    CODEBUILD_BUILD_SUCCEEDING=0",
            "    export CODEBUILD_BUILD_SUCCEEDING",
        ]
        if phase.name in _ABORTING_PHASES and phase.on_failure is OnFailure.ABORT:
            lines.append("    __pb_abort=1")
        lines += [
            "  fi",
            "else",
            "  " + _printf(f"Phase skipped: {label} (an earlier phase failed)"),
            f"  printf 'SKIP {phase.name}\\n' >> {results}",
            "fi",
        ]
    for name in buildspec.exported_variables:
        lines.append(f'if [ "${{{name}+set}}" = set ]; then export {name}; fi')
    target = shlex.quote(str(variables_path.absolute()))
    lines += [
        f"{shlex.quote(env_program)} -0 > {target}",
        f"printf 'DONE\\n' >> {results}",
        'if [ "$__pb_succeeding" = 1 ]; then',
        "  " + _printf("Build completed: State: SUCCEEDED"),
        "  exit 0",
        "fi",
        _printf("Build completed: State: FAILED"),
        "exit 1",
        "",
    ]
    return "\n".join(lines)


def _program(name: str, env: Mapping[str, str]) -> str | None:
    return shutil.which(name, path=env.get("PATH")) or shutil.which(name)


def write_log(log_path: Path, lines: Sequence[str]) -> None:
    """Append ``[Container]`` lines to the action's log (the log ``get_action_log`` reads)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as log:
        log.write("".join(f"[Container] {line}\n" for line in lines))


def start_build(
    *,
    plan: BuildPlan,
    workdir: Path,
    env: Mapping[str, str],
    log_path: Path,
    results_path: Path,
    variables_path: Path,
    notes: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Start the build's one shell in ``workdir`` and return at once with the running process.

    The shell is the buildspec's ``env.shell`` (``bash`` or ``/bin/sh``), else bash when the host
    has it (as the Commands action). The script is written next to the log as ``<log>.sh``; the
    plan's notes and ``notes`` go to the log first, then the shell appends its output. The
    process leads a new session, so ``commands.kill_process_group(proc.pid)`` reaches everything
    the build started.
    """
    wanted = plan.buildspec.shell
    if wanted == "/bin/sh":
        shell = "/bin/sh"
    elif wanted == "bash":
        found = _program("bash", env)
        if found is None:
            raise CodeBuildError("env/shell is bash, and bash is not installed on this host")
        shell = found
    else:
        shell = _program("bash", env) or _program("sh", env) or "/bin/sh"
    env_program = _program("env", env) or "env"
    for path in (results_path, variables_path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
    script_path = log_path.with_name(log_path.name + ".sh")
    script_path.parent.mkdir(parents=True, exist_ok=True)
    script_path.write_text(
        build_script(
            plan.buildspec,
            results_path=results_path,
            variables_path=variables_path,
            env_program=env_program,
        ),
        encoding="utf-8",
    )
    write_log(log_path, [*plan.notes, *notes])
    try:
        with log_path.open("ab") as log:
            return subprocess.Popen(
                [shell, str(script_path.absolute())],
                cwd=workdir,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as exc:
        raise CodeBuildError(f"Cannot start the build with {shell} in {workdir}: {exc}") from exc


# --------------------------------------------------------------------------- results


def _phase_results(*, results_path: Path, buildspec: Buildspec) -> tuple[list[PhaseResult], bool]:
    """Each declared phase's result from the script's records, and whether the script got to
    its end (``DONE``)."""
    try:
        records = results_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        records = []
    by_name = {phase.name: phase for phase in buildspec.phases}
    started: set[str] = set()
    ended: dict[str, str] = {}
    failures: dict[str, tuple[str, int]] = {}
    for record in records:
        parts = record.split()
        if len(parts) >= 2 and parts[1] in by_name:
            phase = by_name[parts[1]]
            if parts[0] == "START":
                started.add(phase.name)
            elif parts[0] == "END" and len(parts) == 3:
                ended[phase.name] = parts[2]
            elif parts[0] == "SKIP":
                ended[phase.name] = "SKIPPED"
            elif parts[0] == "FAIL" and len(parts) == 5 and phase.name not in failures:
                commands = phase.commands if parts[2] == "commands" else phase.finally_commands
                text = commands[int(parts[3])]
                if parts[2] == "finally":
                    text += " (finally)"
                failures[phase.name] = (text, int(parts[4]))
    outcome = []
    for phase in buildspec.phases:
        status = ended.get(phase.name, "INTERRUPTED" if phase.name in started else "NOT_RUN")
        command: str | None = None
        code: int | None = None
        if phase.name in failures:
            command, code = failures[phase.name]
        outcome.append(
            PhaseResult(phase=phase, status=status, failed_command=command, exit_status=code)
        )
    return outcome, "DONE" in records


def _files(
    root: Path, base: Path, patterns: Sequence[str], excludes: Sequence[str]
) -> dict[str, Path]:
    """Files under ``base`` matched by ``patterns`` (``**`` spans directories, dotfiles match;
    a matched directory brings every file below it), minus those ``excludes`` match; relative
    POSIX path -> file. Nothing whose real path leaves ``root`` is ever taken (symlinks)."""
    real_root = Path(os.path.realpath(root))
    if not base.is_dir() or not Path(os.path.realpath(base)).is_relative_to(real_root):
        return {}
    found: dict[str, Path] = {}

    def take(rel: str, path: Path) -> None:
        real = Path(os.path.realpath(path))
        if real.is_relative_to(real_root) and real.is_file():
            found[rel] = real

    expanded: set[str] = set()
    matches = wglob.glob(list(patterns), flags=_GLOB_FLAGS, root_dir=str(base))
    for match in sorted(matches):
        rel = match.replace(os.sep, "/").rstrip("/")
        path = base / rel
        if path.is_dir() and not path.is_symlink():
            # ``**/*`` matches every directory too: walk each subtree once, not once per level.
            parts = rel.split("/")
            if any("/".join(parts[:depth]) in expanded for depth in range(1, len(parts) + 1)):
                continue
            expanded.add(rel)
            for folder, dirs, names in os.walk(path):
                dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink()]
                for name in names:
                    full = Path(folder) / name
                    take(full.relative_to(base).as_posix(), full)
        elif path.is_file() or path.is_symlink():
            take(rel, path)
    if excludes:
        found = {
            rel: path
            for rel, path in found.items()
            if not wglob.globmatch(rel, list(excludes), flags=_GLOB_FLAGS)
        }
    return found


def _collect(workdir: Path, spec: ArtifactSpec, destination: Path, label: str) -> int:
    """Copy one artifact's files into ``destination`` (emptied first); return their count."""
    base = workdir / spec.base_directory if spec.base_directory else workdir
    files = _files(workdir, base, spec.files, spec.exclude_paths)
    if not files:
        listed = ", ".join(repr(p) for p in spec.files)
        where = f" under base-directory {spec.base_directory!r}" if spec.base_directory else ""
        raise CodeBuildError(
            f"CLIENT_ERROR: no matching artifact paths found for {label} (files {listed}{where})"
        )
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    for rel, source in files.items():
        target = destination / (Path(rel).name if spec.discard_paths else rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return len(files)


def _artifact_specs(buildspec: Buildspec, outputs: Sequence[str]) -> dict[str, ArtifactSpec]:
    """Output artifact name -> its buildspec section. One output artifact takes ``artifacts``
    (or the secondary artifact of its name); with several, "each output artifact name must match
    a secondary artifact identifier" (action-reference-CodeBuild.html, "Output artifacts")."""
    if not outputs:
        return {}
    if len(outputs) == 1:
        spec = buildspec.artifacts or buildspec.secondary_artifacts.get(outputs[0])
        if spec is None:
            raise CodeBuildError(
                f"The action declares output artifact {outputs[0]} and the buildspec has no "
                "artifacts section (artifacts/files) for it"
            )
        return {outputs[0]: spec}
    missing = [name for name in outputs if name not in buildspec.secondary_artifacts]
    if missing:
        raise CodeBuildError(
            f"Output artifacts {', '.join(missing)} match no secondary artifact identifier of "
            f"the buildspec (identifiers: {', '.join(buildspec.secondary_artifacts) or 'none'}); "
            "with several output artifacts, each name must match one"
        )
    return {name: buildspec.secondary_artifacts[name] for name in outputs}


def _test_cases(path: Path) -> Iterator[TestCase]:
    """Every test case of a JUnit XML file, nested suites included, in document order."""

    def walk(node: Any) -> Iterator[TestCase]:
        for child in node:
            if isinstance(child, TestSuite):
                yield from walk(child)
            elif isinstance(child, TestCase):
                yield child

    return walk(JUnitXml.fromfile(str(path)))


def read_reports(*, workdir: Path, buildspec: Buildspec) -> tuple[TestReport | None, list[str]]:
    """Count the tests of every ``reports`` group's JUnit XML files (parsed with junitparser);
    None when the buildspec has no reports or no report file was found. The second value holds
    log lines for files that are not JUnit XML (they are skipped, as CodeBuild skips them)."""
    if not buildspec.reports:
        return None, []
    total = passed = failed = skipped = 0
    names: list[str] = []
    notes: list[str] = []
    seen = False
    for group in buildspec.reports:
        base = workdir / group.base_directory if group.base_directory else workdir
        files = _files(workdir, base, group.files, ())
        if not files:
            notes.append(f"Report group {group.name}: no file matches {', '.join(group.files)}")
        for rel, path in sorted(files.items()):
            try:
                cases = list(_test_cases(path))
            except Exception as exc:  # junitparser raises lxml/etree errors of several kinds
                notes.append(f"Report group {group.name}: {rel} is not JUnit XML ({exc})")
                continue
            seen = True
            for case in cases:
                total += 1
                kinds = {type(result) for result in case.result}
                if kinds & {JUnitFailure, JUnitError}:
                    failed += 1
                    names.append(f"{case.classname}.{case.name}" if case.classname else case.name)
                elif JUnitSkipped in kinds:
                    skipped += 1
                else:
                    passed += 1
            notes.append(f"Report group {group.name}: read {rel}")
    if not seen:
        return None, notes
    report = TestReport(
        total=total, passed=passed, failed=failed, skipped=skipped, failed_names=tuple(names)
    )
    return report, notes


def parse_test_summary(summary: str | None) -> tuple[TestReport | None, list[str]]:
    """Read back the test counts and failed test names from an action's summary (what Slack
    shows); (None, []) when the summary holds no test line."""
    report = None
    failed: list[str] = []
    for line in (summary or "").splitlines():
        match = _TESTS_LINE.match(line.strip())
        if match and report is None:
            report = TestReport(
                total=int(match["total"]),
                passed=int(match["passed"]),
                failed=int(match["failed"]),
                skipped=int(match["skipped"] or 0),
            )
        elif line.startswith(FAILED_TESTS_PREFIX) and not failed:
            body = line[len(FAILED_TESTS_PREFIX) :]
            body = re.sub(r" \(and \d+ more\)$", "", body)
            failed = [name for name in body.split(", ") if name]
    return report, failed


def _report_lines(report: TestReport | None) -> list[str]:
    if report is None:
        return []
    lines = [report.line()]
    if report.failed_names:
        shown = list(report.failed_names[:_MAX_FAILED_NAMES])
        more = len(report.failed_names) - len(shown)
        more_text = f" (and {more} more)" if more else ""
        lines.append(FAILED_TESTS_PREFIX + ", ".join(shown) + more_text)
    return lines


def _failure_line(phases: Sequence[PhaseResult], done: bool, stopped: str | None) -> str:
    failed = [p for p in phases if p.status in ("FAILED", "INTERRUPTED")]
    if stopped:
        where = next((p.phase.label for p in phases if p.status == "INTERRUPTED"), None)
        return f"Build {stopped}" + (f" in phase {where}." if where else ".")
    parts = []
    for result in failed:
        if result.status == "INTERRUPTED" and result.failed_command is None:
            parts.append(f"{result.phase.label}: the shell exited during the phase")
        elif result.failed_command is not None:
            parts.append(
                f"{result.phase.label}: `{result.failed_command}` exited with status "
                f"{result.exit_status}"
            )
        else:
            parts.append(result.phase.label)
    if not parts:
        return "Build failed." if done else "Build failed: the shell stopped before it completed."
    noun = "phase" if len(parts) == 1 else "phases"
    return f"Build failed in {noun} " + "; ".join(parts) + "."


def finish_build(
    *,
    plan: BuildPlan,
    workdir: Path,
    log_path: Path,
    results_path: Path,
    variables_path: Path,
    outputs: Sequence[str],
    destination: Callable[[str], Path],
    stopped: str | None = None,
    log_tail: str = "",
) -> BuildResult:
    """Judge a finished build and gather its results.

    ``stopped`` says how the worker ended the shell (``"timed out after 60 minutes"``, ``"was
    stopped (signal 9)"``), None when it exited by itself. The build succeeded when every
    declared phase succeeded and the script reached its end. The reports are read whether it
    failed or not (a failing test run is what they are for). On success the ``exported-variables``
    that were set become ``variables`` (those never set are named in the log and left out, so a
    downstream ``#{Namespace.NAME}`` fails as unresolved instead of reading an empty value) and
    each output artifact is collected into ``destination(name)``. Artifact problems raise
    ``CodeBuildError``. The summary's first line says how the build ended; then the test counts
    and failed test names (``TestReport.line``, ``FAILED_TESTS_PREFIX``); for a failure, the end
    of the log, within 2048 characters.
    """
    phases, done = _phase_results(results_path=results_path, buildspec=plan.buildspec)
    report, report_notes = read_reports(workdir=workdir, buildspec=plan.buildspec)
    succeeded = stopped is None and done and all(p.status == "SUCCEEDED" for p in phases)
    notes = list(report_notes)
    variables: dict[str, str] = {}
    produced: list[str] = []
    if succeeded:
        environment = _read_environment(variables_path)
        for name in plan.buildspec.exported_variables:
            if name in environment:
                variables[name] = environment[name]
            else:
                notes.append(f"Exported variable {name} was never set, so it is not exported")
        for name, spec in _artifact_specs(plan.buildspec, outputs).items():
            count = _collect(workdir, spec, destination(name), f"output artifact {name}")
            produced.append(name)
            notes.append(f"Output artifact {name}: {count} file{'s' if count != 1 else ''}")
    if report is not None:
        notes.append(report.line())
    write_log(log_path, notes)
    lines = _report_lines(report)
    if succeeded:
        ran = ", ".join(p.phase.label for p in phases) or "no phases"
        summary = "\n".join([f"Build succeeded ({ran}).", *lines])
    else:
        head = "\n".join([_failure_line(phases, done, stopped), *lines])
        room = _SUMMARY_MAX - len(head) - 1
        tail = log_tail[-room:] if room > 0 and log_tail else ""
        summary = f"{head}\n{tail}".strip()
    return BuildResult(
        succeeded=succeeded,
        summary=summary[:_SUMMARY_MAX],
        phases=tuple(phases),
        report=report,
        variables=variables,
        produced=tuple(produced),
    )


def _read_environment(path: Path) -> dict[str, str]:
    environment: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in path.read_bytes().split(b"\0"):
            key, sep, value = entry.partition(b"=")
            if sep:
                environment[key.decode(errors="replace")] = value.decode(errors="replace")
    return environment
