"""The local CodeBuild project registry: what a CodeBuild project holds on AWS, in one YAML file.

On AWS a CodePipeline CodeBuild action names a build project (``ProjectName``), and the project
holds the buildspec's location and the build environment's variables (CodeBuild user guide,
"Create a build project", https://docs.aws.amazon.com/codebuild/latest/userguide/create-project.html).
The embedded engine has no CodeBuild service, so a YAML file stands in for the projects
(../shared/docs/local-providers.md, "CodeBuild"): ``<data dir>/codebuild-projects.yml``, or the
path in ``PIPEBOT_CODEBUILD_PROJECTS``, shaped::

    my-project:
      buildspec: ci/buildspec.yml      # a path relative to the primary source's root, or an
                                       # inline buildspec (a YAML mapping, or a YAML string)
      environmentVariables:
        - {name: STAGE, value: test}   # type PLAINTEXT (the default) only: see below
      timeoutInMinutes: 60             # 5-2160, CodeBuild's default 60

A project absent from the file (or a missing file) uses ``buildspec.yml`` at the primary source's
root, as CodeBuild does when a project names no buildspec (buildspec reference, "Buildspec file
name and storage location", https://docs.aws.amazon.com/codebuild/latest/userguide/build-spec-ref.html).
The file is read at every build, so editing it needs no restart.

Variables of type ``PARAMETER_STORE`` or ``SECRETS_MANAGER`` cannot be resolved locally; they are
kept with their type so that the build refuses them by name before any command runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from bot.engine.errors import EngineError

__all__ = [
    "DEFAULT_TIMEOUT_MINUTES",
    "ENVIRONMENT_VARIABLE",
    "PROJECT_NAME",
    "REGISTRY_FILE",
    "VARIABLE_TYPES",
    "Project",
    "ProjectRegistryError",
    "ProjectVariable",
    "find_project",
    "load_registry",
    "registry_path",
]

REGISTRY_FILE: Final = "codebuild-projects.yml"
ENVIRONMENT_VARIABLE: Final = "PIPEBOT_CODEBUILD_PROJECTS"
#: CodeBuild's project name pattern (CodeBuild API reference, CreateProject ``name``).
PROJECT_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-_]{1,254}")
#: CodeBuild's ``EnvironmentVariable.type`` values (API_EnvironmentVariable.html).
VARIABLE_TYPES: Final = ("PLAINTEXT", "PARAMETER_STORE", "SECRETS_MANAGER")
#: ``timeoutInMinutes``: CodeBuild's default and range (API_CreateProject.html).
DEFAULT_TIMEOUT_MINUTES: Final = 60
_TIMEOUT_RANGE: Final = (5, 2160)
_PROJECT_KEYS: Final = frozenset({"buildspec", "environmentVariables", "timeoutInMinutes"})


class ProjectRegistryError(EngineError):
    """The registry file cannot be read or a project in it is malformed; the message names the
    file and the project, and is suitable as an action's failure summary."""


@dataclass(frozen=True, kw_only=True)
class ProjectVariable:
    """One of a project's ``environmentVariables``; ``type`` is one of ``VARIABLE_TYPES``."""

    name: str
    value: str
    type: str = "PLAINTEXT"


@dataclass(frozen=True, kw_only=True)
class Project:
    """One registry entry. ``buildspec`` is None (use ``buildspec.yml``), a path relative to the
    primary source's root, or an inline buildspec's YAML text (``inline`` says which)."""

    name: str
    buildspec: str | None = None
    inline: bool = False
    environment_variables: tuple[ProjectVariable, ...] = ()
    timeout_minutes: int = DEFAULT_TIMEOUT_MINUTES


def registry_path(*, data_dir: Path, configured: Path | None) -> Path:
    """The registry ``configured`` names (``PIPEBOT_CODEBUILD_PROJECTS``, ``~`` expanded,
    relative to the current directory), else ``<data_dir>/codebuild-projects.yml``."""
    if configured is not None and str(configured).strip():
        return Path(os.path.expanduser(str(configured))).resolve()
    return data_dir / REGISTRY_FILE


def load_registry(path: Path) -> dict[str, Project]:
    """Every project of the registry at ``path``; ``{}`` when the file does not exist.

    Raises ``ProjectRegistryError`` for a file that is not YAML, not a mapping of project names,
    or holds a malformed project (each problem names the project and the key).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ProjectRegistryError(
            f"Cannot read the CodeBuild project registry {path}: {exc}"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProjectRegistryError(
            f"The CodeBuild project registry {path} is not valid YAML: {exc}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ProjectRegistryError(
            f"The CodeBuild project registry {path} must map project names to projects"
        )
    return {str(name): _project(str(name), entry, path) for name, entry in data.items()}


def find_project(*, path: Path, name: str) -> Project | None:
    """The project ``name`` of the registry at ``path``, or None when it is not registered."""
    return load_registry(path).get(name)


def _project(name: str, entry: Any, path: Path) -> Project:
    where = f"Project {name!r} of the CodeBuild project registry {path}"
    if entry is None:
        return Project(name=name)
    if not isinstance(entry, Mapping):
        raise ProjectRegistryError(
            f"{where} must be a mapping with buildspec, environmentVariables, timeoutInMinutes"
        )
    unknown = sorted(str(key) for key in entry if key not in _PROJECT_KEYS)
    if unknown:
        raise ProjectRegistryError(
            f"{where} has unknown keys {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_PROJECT_KEYS))})"
        )
    buildspec, inline = _buildspec(entry.get("buildspec"), where)
    timeout = entry.get("timeoutInMinutes", DEFAULT_TIMEOUT_MINUTES)
    low, high = _TIMEOUT_RANGE
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not low <= timeout <= high:
        raise ProjectRegistryError(
            f"{where}: timeoutInMinutes must be a whole number of minutes from {low} to {high}"
        )
    return Project(
        name=name,
        buildspec=buildspec,
        inline=inline,
        environment_variables=_variables(entry.get("environmentVariables"), where),
        timeout_minutes=timeout,
    )


def _buildspec(value: Any, where: str) -> tuple[str | None, bool]:
    """(text or path, inline?): a mapping or a string that parses as a mapping is inline, as
    CodeBuild tells an inline buildspec from a file path (ProjectSource ``buildspec``)."""
    if value is None or value == "":
        return None, False
    if isinstance(value, Mapping):
        return yaml.safe_dump(dict(value), sort_keys=False), True
    if not isinstance(value, str):
        raise ProjectRegistryError(f"{where}: buildspec must be a path or an inline buildspec")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = None
    if isinstance(parsed, Mapping):
        return value, True
    return value.strip(), False


def _variables(value: Any, where: str) -> tuple[ProjectVariable, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ProjectRegistryError(
            f"{where}: environmentVariables must be a list of {{name, value}}"
        )
    variables = []
    for item in value:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ProjectRegistryError(
                f"{where}: each environmentVariables item needs a name and a value"
            )
        kind = str(item.get("type") or "PLAINTEXT")
        if kind not in VARIABLE_TYPES:
            raise ProjectRegistryError(
                f"{where}: environment variable {item['name']} has type {kind}; "
                f"the types are {', '.join(VARIABLE_TYPES)}"
            )
        raw = item.get("value", "")
        value = ("true" if raw else "false") if isinstance(raw, bool) else raw
        variables.append(
            ProjectVariable(name=item["name"], value="" if raw is None else str(value), type=kind)
        )
    return tuple(variables)
