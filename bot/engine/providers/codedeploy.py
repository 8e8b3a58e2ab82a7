"""The Deploy/AWS/CodeDeploy action (EC2/on-premises compute platform) on a local instance.

On AWS, CodePipeline hands the input artifact (the revision bundle) to CodeDeploy, whose agent on
each instance of the deployment group runs an in-place deployment driven by ``appspec.yml`` at the
bundle's root. Locally, a deployment group is one instance whose filesystem root is
``<data dir>/codedeploy/<ApplicationName>/<DeploymentGroupName>/`` (``instance_root``): an appspec
destination ``/var/www/html`` lands in ``<root>/var/www/html``, and the engine writes nothing
outside that root. The rules, from CodeDeploy's user guide and its agent
(https://github.com/aws/aws-codedeploy-agent, ``lib/instance_agent/plugins/codedeploy``):

- **AppSpec** (``parse_appspec``): ``version: 0.0`` and ``os: linux``, ``files``, ``permissions``,
  ``hooks`` and ``file_exists_behavior``
  (https://docs.aws.amazon.com/codedeploy/latest/userguide/reference-appspec-file-structure.html).
- **Lifecycle** (``deploy``), in CodeDeploy's order for an in-place deployment without a load
  balancer: ApplicationStop, DownloadBundle, BeforeInstall, Install, AfterInstall,
  ApplicationStart, ValidateService. "The AppSpec file and scripts used for this deployment
  lifecycle event [ApplicationStop] are from the last successfully deployed application revision",
  and it does not run on the group's first deployment ("An AppSpec file does not exist on an
  instance before you deploy to it")
  (https://docs.aws.amazon.com/codedeploy/latest/userguide/reference-appspec-file-structure-hooks.html#appspec-hooks-server).
- **Install** removes the files the previous deployment installed (the agent's per-group
  ``<deployment group id>-cleanup`` file), then copies the ``files`` mappings, refusing, replacing
  or keeping other existing files per ``file_exists_behavior`` (DISALLOW by default), and applies
  ``permissions``
  (https://docs.aws.amazon.com/codedeploy/latest/userguide/reference-appspec-file-structure-files.html,
  https://docs.aws.amazon.com/codedeploy/latest/userguide/reference-appspec-file-structure-permissions.html).
- **Hook scripts** run with ``LIFECYCLE_EVENT``, ``DEPLOYMENT_ID``, ``APPLICATION_NAME``,
  ``DEPLOYMENT_GROUP_NAME`` and ``DEPLOYMENT_GROUP_ID`` ("Environment variable availability for
  hooks", same hooks page), plus pipebot's ``PIPEBOT_INSTANCE_ROOT``; each script's ``timeout``
  (seconds, default 3600) fails the hook when exceeded; the first failing script fails the
  deployment.

The agent's own state lives where the agent keeps it, under the instance root:
``<root>/opt/codedeploy-agent/deployment-root/`` holds each deployment's copy of its revision
(``<deployment group id>/<deployment id>/deployment-archive``), and ``deployment-instructions/``
the cleanup list, ``<deployment group id>_last_successful_install`` (the previous revision whose
ApplicationStop runs next time) and ``<deployment group id>_pipebot.json`` (the deployed revision,
read by ``deployed_revision``).

Everything here is synchronous and keeps no state between calls: ``deploy`` runs one deployment
to the end and returns a ``Deployment``; the caller (the engine's worker) turns it into the action's
outcome and may be told about each script's process through ``ProcessTracker``.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import grp
import hashlib
import json
import os
import posixpath
import pwd
import re
import shutil
import stat
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Final, Protocol

import yaml

from bot.engine.errors import EngineError
from bot.engine.providers.commands import kill_process_group

__all__ = [
    "APPSPEC_NAME",
    "DEFAULT_SCRIPT_TIMEOUT_SECONDS",
    "HOOK_MARKER",
    "LIFECYCLE_HOOKS",
    "SCRIPT_MARKER",
    "AppSpec",
    "AppSpecError",
    "DeployedRevision",
    "Deployment",
    "FileMapping",
    "Permission",
    "ProcessTracker",
    "Script",
    "bundle_digest",
    "configuration_problem",
    "deploy",
    "deployed_revision",
    "deployment_group_id",
    "deployment_id",
    "instance_root",
    "parse_appspec",
]

APPSPEC_NAME: Final = "appspec.yml"
""""The AppSpec file for an EC2/On-Premises deployment must be named appspec.yml" and be at the
root of the revision's directory structure
(https://docs.aws.amazon.com/codedeploy/latest/userguide/reference-appspec-file.html)."""

DEFAULT_SCRIPT_TIMEOUT_SECONDS: Final = 3600
"""A script's ``timeout`` when the AppSpec gives none: "The default is 3600 seconds (1 hour)"."""

#: The scriptable lifecycle events of an in-place EC2/on-premises deployment, in run order
#: (DownloadBundle and Install cannot be scripted; they happen between ApplicationStop and
#: BeforeInstall, and between BeforeInstall and AfterInstall).
LIFECYCLE_HOOKS: Final = (
    "ApplicationStop",
    "BeforeInstall",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
)
#: Events that exist only with a load balancer, which a local instance has not: never run.
_TRAFFIC_HOOKS: Final = frozenset(
    {"BeforeBlockTraffic", "AfterBlockTraffic", "BeforeAllowTraffic", "AfterAllowTraffic"}
)
_UNSCRIPTABLE: Final = frozenset({"Start", "DownloadBundle", "Install", "End"})

HOOK_MARKER: Final = "[CodeDeploy] LifecycleEvent - "
"""Starts the log line opening each lifecycle event (the agent's ``scripts.log`` wording), e.g.
``[CodeDeploy] LifecycleEvent - BeforeInstall``; Install and DownloadBundle have one too."""
SCRIPT_MARKER: Final = "[CodeDeploy] Script - "
"""Starts the log line before each script's output, e.g. ``[CodeDeploy] Script - scripts/a.sh``."""

_FILE_EXISTS_BEHAVIORS: Final = ("DISALLOW", "OVERWRITE", "RETAIN")
_AGENT_ROOT: Final = "opt/codedeploy-agent/deployment-root"
_INSTRUCTIONS: Final = f"{_AGENT_ROOT}/deployment-instructions"
_NAME_MAX: Final = 100
_MODE_RE: Final = re.compile(r"[0-7]{3,4}")
_GROUP_ID_NAMESPACE: Final = uuid.UUID("7d7c2f3e-4f0b-4a53-9a47-6a3f5bd0c1de")


class AppSpecError(EngineError):
    """The AppSpec file is missing or invalid; the message says what to change."""


class _DeploymentError(EngineError):
    """A step failed; ``summary`` is the action's failure summary."""

    def __init__(self, summary: str, *, hook: str | None = None, script: str | None = None):
        self.summary = summary
        self.hook = hook
        self.script = script
        super().__init__(summary)


# --------------------------------------------------------------------------- the AppSpec


@dataclass(frozen=True, kw_only=True)
class Script:
    """One hook script: ``location`` relative to the revision's root, ``timeout`` in seconds,
    ``runas`` a user name (honoured only when pipebot runs as root)."""

    location: str
    timeout: float = DEFAULT_SCRIPT_TIMEOUT_SECONDS
    runas: str | None = None


@dataclass(frozen=True, kw_only=True)
class FileMapping:
    """``source`` (relative to the revision's root; ``/`` is all of it) copied to ``destination``
    (an absolute path on the instance)."""

    source: str
    destination: str


@dataclass(frozen=True, kw_only=True)
class Permission:
    """One ``permissions`` entry for Linux. ``pattern`` and ``except_`` use the agent's simple
    globs (``*`` only, on one level) except that ``**`` matches everything below ``object``;
    ``mode`` is the octal mode as an int (0o644); ``acls`` and ``context`` are kept for the log."""

    object: str
    pattern: str = "**"
    except_: tuple[str, ...] = ()
    types: tuple[str, ...] = ("file", "directory")
    owner: str | None = None
    group: str | None = None
    mode: int | None = None
    acls: tuple[str, ...] = ()
    context: Mapping[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class AppSpec:
    """A parsed ``appspec.yml`` for the EC2/on-premises compute platform."""

    version: float
    os: str
    files: tuple[FileMapping, ...] = ()
    permissions: tuple[Permission, ...] = ()
    hooks: Mapping[str, tuple[Script, ...]] = field(default_factory=dict)
    file_exists_behavior: str = "DISALLOW"


def parse_appspec(text: str) -> AppSpec:
    """Parse and validate an EC2/on-premises AppSpec file's text (YAML, or JSON which is YAML).

    Validation follows the agent's ``ApplicationSpecification``: ``version`` must be the number
    ``0.0`` (a quoted "0.0" fails on AWS too), ``os`` ``linux`` (``windows`` needs a Windows
    instance), every script has a ``location``, every permission an ``object``, permission
    ``type`` is ``file`` and/or ``directory``, ``file_exists_behavior`` one of DISALLOW, OVERWRITE,
    RETAIN. ``mode`` is 3 or 4 octal digits (``644`` or ``"0644"``). Raises ``AppSpecError``.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AppSpecError(f"{APPSPEC_NAME} is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise AppSpecError(f"{APPSPEC_NAME} must be a mapping with version, os, files and hooks")
    version = data.get("version")
    if isinstance(version, bool) or version != 0.0 or not isinstance(version, float | int):
        raise AppSpecError(
            f"{APPSPEC_NAME}: invalid version value ({version!r}); an EC2/on-premises AppSpec "
            'file specifies "0.0" as the version (the number 0.0, unquoted)'
        )
    os_name = data.get("os")
    if os_name != "linux":
        raise AppSpecError(
            f"{APPSPEC_NAME}: os {os_name!r} is not supported by the local instance; specify "
            '"linux" (a "windows" revision needs a Windows instance on AWS)'
        )
    behavior = data.get("file_exists_behavior", "DISALLOW")
    if behavior not in _FILE_EXISTS_BEHAVIORS:
        raise AppSpecError(
            f"{APPSPEC_NAME}: file_exists_behavior {behavior!r} is not one of "
            + ", ".join(_FILE_EXISTS_BEHAVIORS)
        )
    return AppSpec(
        version=float(version),
        os=os_name,
        files=tuple(_parse_files(data.get("files"))),
        permissions=tuple(_parse_permissions(data.get("permissions"))),
        hooks=_parse_hooks(data.get("hooks")),
        file_exists_behavior=behavior,
    )


def _list_of_mappings(value: Any, section: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise AppSpecError(f"{APPSPEC_NAME}: '{section}' must be a list of mappings")
    return value


def _parse_files(value: Any) -> Iterator[FileMapping]:
    for item in _list_of_mappings(value, "files"):
        source, destination = item.get("source"), item.get("destination")
        if not isinstance(source, str) or not source.strip():
            raise AppSpecError(f"{APPSPEC_NAME}: every 'files' entry needs a source")
        if not isinstance(destination, str) or not destination.strip().startswith("/"):
            raise AppSpecError(
                f"{APPSPEC_NAME}: the destination of 'files' source {source!r} must be an "
                f"absolute path on the instance (got {destination!r})"
            )
        if "\0" in source or "\0" in destination:
            raise AppSpecError(f"{APPSPEC_NAME}: 'files' paths cannot contain NUL characters")
        yield FileMapping(source=source.strip(), destination=destination.strip())


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise AppSpecError(f"{APPSPEC_NAME}: {what} must be a list of strings")
    return tuple(value)


def _parse_mode(value: Any, obj: str) -> int | None:
    """The agent's ``ModeInfo``: the value's text, left-padded with 0 to 3 characters, must be
    1 to 4 octal digits. YAML reads an unquoted ``0700`` as the octal number 448, whose text
    ``448`` is refused, on AWS too; ``700`` or ``'0700'`` work."""
    if value is None:
        return None
    text = str(value).strip().rjust(3, "0")
    if isinstance(value, bool) or not _MODE_RE.fullmatch(text):
        raise AppSpecError(
            f"{APPSPEC_NAME}: permission mode {value!r} for {obj} must be 1 to 4 octal digits "
            "(such as 644, 755 or '0755'; YAML reads an unquoted 0755 as the number 493)"
        )
    return int(text, 8)


def _parse_permissions(value: Any) -> Iterator[Permission]:
    for item in _list_of_mappings(value, "permissions"):
        obj = item.get("object")
        if not isinstance(obj, str) or not obj.strip():
            raise AppSpecError(
                f"{APPSPEC_NAME}: a permission has no object value; update the permissions section"
            )
        obj = obj.strip()
        if not obj.startswith("/"):
            raise AppSpecError(
                f"{APPSPEC_NAME}: permission object {obj!r} must be an absolute path on the "
                "instance"
            )
        types = _strings(item.get("type"), "permission type") or ("file", "directory")
        unknown = [t for t in types if t not in ("file", "directory")]
        if unknown:
            raise AppSpecError(
                f"{APPSPEC_NAME}: permission type {unknown[0]!r} for {obj} is not supported "
                "(file or directory)"
            )
        context = item.get("context")
        if context is not None and not isinstance(context, Mapping):
            raise AppSpecError(f"{APPSPEC_NAME}: permission context for {obj} must be a mapping")
        yield Permission(
            object=obj,
            pattern=str(item.get("pattern") or "**"),
            except_=_strings(item.get("except"), f"permission except for {obj}"),
            types=types,
            owner=None if item.get("owner") is None else str(item["owner"]),
            group=None if item.get("group") is None else str(item["group"]),
            mode=_parse_mode(item.get("mode"), obj),
            acls=_strings(item.get("acls"), f"permission acls for {obj}"),
            context=context,
        )


def _parse_hooks(value: Any) -> dict[str, tuple[Script, ...]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AppSpecError(f"{APPSPEC_NAME}: 'hooks' must map lifecycle events to scripts")
    hooks: dict[str, tuple[Script, ...]] = {}
    for event, scripts in value.items():
        scripts_list = _list_of_mappings(scripts, f"hooks.{event}")
        parsed = []
        for script in scripts_list:
            location = script.get("location")
            if location is None or not str(location).strip():
                raise AppSpecError(
                    f"{APPSPEC_NAME}: a script of hook {event} has no location value; specify "
                    "the location in the hooks section"
                )
            timeout = script.get("timeout", DEFAULT_SCRIPT_TIMEOUT_SECONDS)
            if (
                isinstance(timeout, bool)
                or not isinstance(timeout, int | float | str)
                or not _positive_number(timeout)
            ):
                raise AppSpecError(
                    f"{APPSPEC_NAME}: timeout {timeout!r} of script {location} (hook {event}) "
                    "must be a positive number of seconds"
                )
            runas = script.get("runas")
            parsed.append(
                Script(
                    location=str(location).strip(),
                    timeout=float(timeout),
                    runas=None if runas is None else str(runas).strip() or None,
                )
            )
        hooks[str(event)] = tuple(parsed)
    return hooks


def _positive_number(value: int | float | str) -> bool:
    try:
        return float(value) > 0
    except ValueError:
        return False


# --------------------------------------------------------------------------- names and paths


def configuration_problem(configuration: Mapping[str, Any]) -> str | None:
    """Why ``ApplicationName`` / ``DeploymentGroupName`` cannot name a local instance, or None.

    Both are 1 to 100 characters on AWS (CodeDeploy API reference, CreateApplication and
    CreateDeploymentGroup); locally each is also a directory name, so ``/``, ``\\``, NUL, ``.``
    and ``..`` are refused. Values holding ``#{variables}`` are checked once resolved.
    """
    for key in ("ApplicationName", "DeploymentGroupName"):
        value = configuration.get(key)
        if not isinstance(value, str) or "#{" in value:
            continue
        problem = _name_problem(value)
        if problem:
            return f"{key} {value!r} {problem}"
    return None


def _name_problem(name: str) -> str | None:
    if not 1 <= len(name) <= _NAME_MAX:
        return f"must be 1 to {_NAME_MAX} characters"
    if name in (".", "..") or any(c in name for c in "/\\\0"):
        return "cannot name a local instance directory (no /, \\, . or ..)"
    return None


def instance_root(*, data_dir: Path, application_name: str, deployment_group_name: str) -> Path:
    """``<data dir>/codedeploy/<ApplicationName>/<DeploymentGroupName>``: the group's one local
    instance, its ``/``. Raises ``EngineError`` for names that are not plain directory names."""
    for key, value in (
        ("ApplicationName", application_name),
        ("DeploymentGroupName", deployment_group_name),
    ):
        problem = _name_problem(value)
        if problem:
            raise EngineError(f"{key} {value!r} {problem}")
    return data_dir / "codedeploy" / application_name / deployment_group_name


def deployment_group_id(*, application_name: str, deployment_group_name: str) -> str:
    """The group's ID, a UUID as CodeDeploy's are, stable for an application and group name."""
    return str(uuid.uuid5(_GROUP_ID_NAMESPACE, f"{application_name}\0{deployment_group_name}"))


def deployment_id(seed: str) -> str:
    """A CodeDeploy deployment ID (``d-`` and 9 upper-case letters and digits, as
    ``d-ABCDEF123``), derived from ``seed`` (pipebot passes the action execution ID, so the
    deployment leads back to its action and log)."""
    digest = base64.b32encode(hashlib.sha256(seed.encode()).digest()).decode()
    return "d-" + digest[:9]


def bundle_digest(bundle: Path) -> str:
    """``sha256:<hex>`` over the bundle's relative paths, file contents and symlink targets: the
    revision's identity when the artifact has no source revision (a build's output)."""
    digest = hashlib.sha256()
    for path in sorted(bundle.rglob("*"), key=lambda p: p.relative_to(bundle).as_posix()):
        rel = path.relative_to(bundle).as_posix()
        if path.is_symlink():
            digest.update(f"L\0{rel}\0{os.readlink(path)}\0".encode())
        elif path.is_file():
            digest.update(f"F\0{rel}\0".encode())
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        elif path.is_dir():
            digest.update(f"D\0{rel}\0".encode())
    return "sha256:" + digest.hexdigest()


def _instance_path(path: str) -> str:
    """An absolute instance path, normalised lexically as the agent's ``File.expand_path``
    does (``/a/../b`` is ``/b``; ``..`` never climbs above ``/``)."""
    return posixpath.normpath("/" + path.strip().lstrip("/")) if path.strip() else "/"


class _Instance:
    """Maps instance paths into the root and refuses any write that would leave it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.real_root = Path(os.path.realpath(root))

    def host(self, instance_path: str) -> Path:
        rel = _instance_path(instance_path).lstrip("/")
        return self.root / rel if rel else self.root

    def inside(self, path: Path) -> bool:
        return Path(os.path.realpath(path)).is_relative_to(self.real_root)

    def writable(self, instance_path: str) -> Path:
        """The host path for writing ``instance_path``: its parent directory must resolve inside
        the root (a symlinked directory pointing elsewhere is refused); the last component is
        never followed (a symlink there is replaced, not written through)."""
        host = self.host(instance_path)
        if host != self.root and not self.inside(host.parent):
            raise _DeploymentError(
                f"Cannot write {instance_path}: it is reached through a symbolic link that "
                "leads outside the instance root, and nothing is written outside it"
            )
        return host


# --------------------------------------------------------------------------- processes


class ProcessTracker(Protocol):
    """Told about each hook script's process, so that the caller can kill it (stop with abandon,
    shutdown). ``started`` returns False when the action was abandoned meanwhile: the script's
    process group is then killed at once."""

    def started(self, process: subprocess.Popen[bytes]) -> bool: ...

    def finished(self, process: subprocess.Popen[bytes]) -> None: ...


# --------------------------------------------------------------------------- the deployment


@dataclass(frozen=True, kw_only=True)
class Deployment:
    """The outcome of ``deploy``. ``summary`` suits the action's summary (success or failure);
    ``failed_hook`` / ``failed_script`` name what failed (None on success or when no script did);
    ``files_installed`` counts files and links copied; ``scripts_run`` the scripts that ran."""

    succeeded: bool
    summary: str
    deployment_id: str
    revision: str
    failed_hook: str | None = None
    failed_script: str | None = None
    files_installed: int = 0
    scripts_run: int = 0


@dataclass(frozen=True, kw_only=True)
class DeployedRevision:
    """What a deployment group last deployed successfully (``deployed_revision``)."""

    application_name: str
    deployment_group_name: str
    deployment_id: str
    revision: str
    deployed_at: str
    pipeline_execution_id: str | None = None


def deployed_revision(
    *, data_dir: Path, application_name: str, deployment_group_name: str
) -> DeployedRevision | None:
    """The revision a group's instance last deployed successfully, or None before its first."""
    root = instance_root(
        data_dir=data_dir,
        application_name=application_name,
        deployment_group_name=deployment_group_name,
    )
    group_id = deployment_group_id(
        application_name=application_name, deployment_group_name=deployment_group_name
    )
    try:
        record = json.loads((root / _INSTRUCTIONS / f"{group_id}_pipebot.json").read_text())
    except (OSError, ValueError):
        return None
    return DeployedRevision(
        application_name=application_name,
        deployment_group_name=deployment_group_name,
        deployment_id=str(record["deploymentId"]),
        revision=str(record["revision"]),
        deployed_at=str(record["deployedAt"]),
        pipeline_execution_id=record.get("pipelineExecutionId"),
    )


@dataclass
class _Run:
    """One deployment's context while it runs."""

    root: _Instance
    application_name: str
    deployment_group_name: str
    group_id: str
    deployment_id: str
    log: BinaryIO
    environment: Mapping[str, str]
    tracker: ProcessTracker | None
    is_root: bool
    scripts_run: int = 0

    def note(self, line: str) -> None:
        self.log.write(f"{line}\n".encode())
        self.log.flush()


def deploy(
    *,
    bundle: Path,
    root: Path,
    application_name: str,
    deployment_group_name: str,
    deployment_id: str,
    revision: str,
    log_path: Path,
    environment: Mapping[str, str],
    pipeline_execution_id: str | None = None,
    tracker: ProcessTracker | None = None,
) -> Deployment:
    """Run one in-place deployment of ``bundle`` (the input artifact's directory) to the local
    instance at ``root`` (``instance_root``), appending every step and script output to
    ``log_path``.

    ``revision`` names what is deployed (the source revision, else ``bundle_digest``) in the
    summary and in the group's record; ``environment`` is the scripts' base environment (pipebot's
    own, without its secrets), to which the CodeDeploy variables are added. Never raises for a
    deployment failure: the ``Deployment`` says which hook and script failed. One deployment
    at a time per group, as CodeDeploy allows: while another runs (another process included),
    this one fails at once, naming the group.
    """
    group_id = deployment_group_id(
        application_name=application_name, deployment_group_name=deployment_group_name
    )
    root.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log, contextlib.ExitStack() as held:
        run = _Run(
            root=_Instance(root),
            application_name=application_name,
            deployment_group_name=deployment_group_name,
            group_id=group_id,
            deployment_id=deployment_id,
            log=log,
            environment=environment,
            tracker=tracker,
            is_root=hasattr(os, "geteuid") and os.geteuid() == 0,
        )
        run.note(
            f"[CodeDeploy] Deployment {deployment_id} of revision {revision} to application "
            f"{application_name}, deployment group {deployment_group_name} "
            f"(instance root {root})"
        )
        try:
            lock_path = run.root.writable(f"/{_AGENT_ROOT}/.{group_id}.lock")
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            lock = held.enter_context(lock_path.open("a"))
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _DeploymentError(
                    f"Another deployment to {application_name}/{deployment_group_name} is in "
                    "progress; a deployment group runs one deployment at a time"
                ) from None
            installed = _lifecycle(run, bundle)
            _record_success(run, revision=revision, pipeline_execution_id=pipeline_execution_id)
        except (_DeploymentError, OSError) as failure:
            if isinstance(failure, OSError):
                failure = _DeploymentError(f"The deployment failed: {failure}")
            run.note(f"[CodeDeploy] Deployment {deployment_id} failed: {failure.summary}")
            return Deployment(
                succeeded=False,
                summary=failure.summary,
                deployment_id=deployment_id,
                revision=revision,
                failed_hook=failure.hook,
                failed_script=failure.script,
                scripts_run=run.scripts_run,
            )
        summary = (
            f"Deployed revision {revision} to {application_name}/{deployment_group_name} "
            f"(deployment {deployment_id}): {_count(installed, 'file')} installed, "
            f"{_count(run.scripts_run, 'hook script')} run."
        )
        run.note(f"[CodeDeploy] {summary}")
        return Deployment(
            succeeded=True,
            summary=summary,
            deployment_id=deployment_id,
            revision=revision,
            files_installed=installed,
            scripts_run=run.scripts_run,
        )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _deployment_dir(run: _Run, deployment: str) -> Path:
    return run.root.writable(f"/{_AGENT_ROOT}/{run.group_id}/{deployment}")


def _last_successful(run: _Run) -> Path | None:
    """The previous successful deployment's directory (its ``deployment-archive`` inside)."""
    marker = run.root.host(f"/{_INSTRUCTIONS}/{run.group_id}_last_successful_install")
    try:
        recorded = marker.read_text().strip()
    except OSError:
        return None
    path = run.root.host(recorded)
    return path if recorded and run.root.inside(path) and path.is_dir() else None


def _lifecycle(run: _Run, bundle: Path) -> int:
    previous = _last_successful(run)
    # ApplicationStop: the previous successful revision's AppSpec and scripts, never the new one's.
    run.note(f"{HOOK_MARKER}ApplicationStop")
    if previous is None:
        run.note(
            "[CodeDeploy] No revision was deployed successfully to this group before: "
            "ApplicationStop does not run on a first deployment"
        )
    else:
        old_archive = previous / "deployment-archive"
        try:
            old_spec = _read_appspec(old_archive)
        except AppSpecError as exc:
            raise _DeploymentError(
                f"ApplicationStop failed: the previous revision's {APPSPEC_NAME} is invalid "
                f"({exc})",
                hook="ApplicationStop",
            ) from None
        _run_hook(run, "ApplicationStop", old_spec, old_archive)

    # DownloadBundle: a copy of the revision the hooks run from (the bundle stays untouched).
    run.note(f"{HOOK_MARKER}DownloadBundle")
    if not bundle.is_dir():
        raise _DeploymentError(
            f"DownloadBundle failed: the input artifact directory {bundle} does not exist",
            hook="DownloadBundle",
        )
    current = _deployment_dir(run, run.deployment_id)
    _prune(run, keep={previous, current})
    archive = current / "deployment-archive"
    if current.exists():
        shutil.rmtree(current)
    shutil.copytree(bundle, archive, symlinks=True)
    try:
        spec = _read_appspec(archive)
    except AppSpecError as exc:
        raise _DeploymentError(f"DownloadBundle failed: {exc}", hook="DownloadBundle") from None
    _note_unrun_hooks(run, spec)

    _run_hook(run, "BeforeInstall", spec, archive)
    run.note(f"{HOOK_MARKER}Install")
    installed = _install(run, spec, archive)
    for hook in ("AfterInstall", "ApplicationStart", "ValidateService"):
        _run_hook(run, hook, spec, archive)
    return installed


def _read_appspec(archive: Path) -> AppSpec:
    path = archive / APPSPEC_NAME
    if path.is_symlink() or not path.is_file():
        raise AppSpecError(
            f"the revision has no {APPSPEC_NAME} at its root (an EC2/on-premises revision "
            f"needs one; it must be named {APPSPEC_NAME})"
        )
    return parse_appspec(path.read_text(encoding="utf-8", errors="replace"))


def _note_unrun_hooks(run: _Run, spec: AppSpec) -> None:
    for event in spec.hooks:
        if event in LIFECYCLE_HOOKS:
            continue
        if event in _TRAFFIC_HOOKS:
            why = "it runs only with a load balancer, which a local instance does not have"
        elif event in _UNSCRIPTABLE:
            why = "CodeDeploy does not run scripts for it"
        else:
            why = "it is not a lifecycle event of an EC2/on-premises in-place deployment"
        run.note(f"[CodeDeploy] Hook {event} is not run: {why}")


def _prune(run: _Run, *, keep: set[Path | None]) -> None:
    """Remove this group's old deployment directories, keeping ``keep``."""
    group_dir = run.root.host(f"/{_AGENT_ROOT}/{run.group_id}")
    if not group_dir.is_dir() or group_dir.is_symlink():
        return
    for child in group_dir.iterdir():
        if child not in keep and child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)


def _record_success(run: _Run, *, revision: str, pipeline_execution_id: str | None) -> None:
    instructions = run.root.writable(f"/{_INSTRUCTIONS}/x").parent
    instructions.mkdir(parents=True, exist_ok=True)
    current = f"/{_AGENT_ROOT}/{run.group_id}/{run.deployment_id}"
    _atomic_write(instructions / f"{run.group_id}_last_successful_install", current + "\n")
    record = {
        "applicationName": run.application_name,
        "deploymentGroupName": run.deployment_group_name,
        "deploymentGroupId": run.group_id,
        "deploymentId": run.deployment_id,
        "revision": revision,
        "deployedAt": datetime.now(UTC).isoformat(),
        "pipelineExecutionId": pipeline_execution_id,
    }
    _atomic_write(instructions / f"{run.group_id}_pipebot.json", json.dumps(record, indent=2))
    _prune(run, keep={_deployment_dir(run, run.deployment_id)})


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


# --------------------------------------------------------------------------- hooks


def _run_hook(run: _Run, hook: str, spec: AppSpec, archive: Path) -> None:
    scripts = spec.hooks.get(hook, ())
    if hook != "ApplicationStop":
        run.note(f"{HOOK_MARKER}{hook}")
    if not scripts:
        run.note(f"[CodeDeploy] No scripts for {hook}")
        return
    env = {
        **run.environment,
        "LIFECYCLE_EVENT": hook,
        "DEPLOYMENT_ID": run.deployment_id,
        "APPLICATION_NAME": run.application_name,
        "DEPLOYMENT_GROUP_NAME": run.deployment_group_name,
        "DEPLOYMENT_GROUP_ID": run.group_id,
        "PIPEBOT_INSTANCE_ROOT": str(run.root.root.absolute()),
    }
    for script in scripts:
        _run_script(run, hook, script, archive, env)


def _script_path(archive: Path, location: str) -> Path:
    """``location`` relative to the revision's root, never above it."""
    rel = _instance_path(location).lstrip("/")
    return archive / rel


def _run_script(
    run: _Run, hook: str, script: Script, archive: Path, env: Mapping[str, str]
) -> None:
    run.note(f"{SCRIPT_MARKER}{script.location}")
    path = _script_path(archive, script.location)
    if not path.is_file() or not Path(os.path.realpath(path)).is_relative_to(
        os.path.realpath(archive)
    ):
        raise _DeploymentError(
            f"{hook} failed: script {script.location} does not exist at that location in the "
            "revision",
            hook=hook,
            script=script.location,
        )
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        run.note(f"[CodeDeploy] {script.location} is not executable; making it executable")
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    user = None
    if script.runas:
        if run.is_root:
            user = script.runas
        else:
            run.note(
                f"[CodeDeploy] runas {script.runas} ignored: pipebot does not run as root, so "
                "the script runs as pipebot's user"
            )
    process = _start(run, hook, path, env, user)
    timed_out = False
    try:
        if run.tracker is not None and not run.tracker.started(process):
            kill_process_group(process.pid)
        try:
            code = process.wait(timeout=script.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_process_group(process.pid)
            code = process.wait()
    finally:
        if run.tracker is not None:
            run.tracker.finished(process)
    run.scripts_run += 1
    if timed_out:
        run.note(f"[CodeDeploy] Script {script.location} timed out after {script.timeout:g}s")
        raise _DeploymentError(
            f"{hook} failed: script {script.location} did not finish within its timeout "
            f"({script.timeout:g} second{'' if script.timeout == 1 else 's'})",
            hook=hook,
            script=script.location,
        )
    if code != 0:
        how = f"exit code {code}" if code > 0 else f"signal {-code}"
        run.note(f"[CodeDeploy] Script {script.location} failed with {how}")
        raise _DeploymentError(
            f"{hook} failed: script {script.location} failed with {how}",
            hook=hook,
            script=script.location,
        )
    run.note(f"[CodeDeploy] Script {script.location} succeeded")


def _start(
    run: _Run, hook: str, path: Path, env: Mapping[str, str], user: str | None
) -> subprocess.Popen[bytes]:
    """Start a script as the agent does: executed directly (its ``#!`` line picks the
    interpreter), by ``/bin/sh`` when it has none; in its own process group; in the instance's
    root (the instance's ``/``)."""
    options: dict[str, Any] = {
        "cwd": run.root.root,
        "env": dict(env),
        "stdin": subprocess.DEVNULL,
        "stdout": run.log,
        "stderr": subprocess.STDOUT,
        "start_new_session": True,
    }
    if user is not None:
        options["user"] = user
    try:
        return subprocess.Popen([str(path)], **options)
    except OSError as exc:
        if exc.errno != errno.ENOEXEC:
            raise _DeploymentError(
                f"{hook} failed: script {path.name} could not start: {exc}", hook=hook
            ) from None
    return subprocess.Popen(["/bin/sh", str(path)], **options)


# --------------------------------------------------------------------------- Install


@dataclass
class _Plan:
    """The Install step's instructions, built completely before anything is written (as the
    agent's ``CommandBuilder``), so a DISALLOW conflict fails before any copy."""

    copies: dict[str, Path] = field(default_factory=dict)  # instance path -> bundle path
    mkdirs: list[str] = field(default_factory=list)
    mkdir_set: set[str] = field(default_factory=set)
    overwrite: set[str] = field(default_factory=set)


def _install(run: _Run, spec: AppSpec, archive: Path) -> int:
    _cleanup_previous(run)
    plan = _plan(run, spec, archive)
    cleanup = run.root.writable(f"/{_INSTRUCTIONS}/{run.group_id}-cleanup")
    cleanup.parent.mkdir(parents=True, exist_ok=True)
    # The cleanup list is written as things are created, so a deployment failing halfway is
    # still cleaned up by the next one.
    with cleanup.open("w", encoding="utf-8") as manifest:
        for directory in plan.mkdirs:
            host = run.root.writable(directory)
            if host.is_symlink() or host.exists():
                raise _DeploymentError(
                    f"Install failed: a file already exists at {directory}, where the revision "
                    "needs a directory",
                    hook="Install",
                )
            manifest.write(directory + "\n")
            manifest.flush()
            host.mkdir()
        for destination, source in plan.copies.items():
            host = run.root.writable(destination)
            if host.is_symlink() or host.exists():
                if destination not in plan.overwrite:
                    raise _DeploymentError(
                        f"Install failed: a specified file already exists at this location: "
                        f"{destination}",
                        hook="Install",
                    )
                if host.is_dir() and not host.is_symlink():
                    shutil.rmtree(host)
                else:
                    host.unlink()
            manifest.write(destination + "\n")
            manifest.flush()
            if source.is_symlink():
                os.symlink(os.readlink(source), host)
            else:
                shutil.copy2(source, host, follow_symlinks=False)
    _apply_permissions(run, spec, plan)
    run.note(
        f"[CodeDeploy] Installed {_count(len(plan.copies), 'file')} and created "
        f"{len(plan.mkdirs)} director{'y' if len(plan.mkdirs) == 1 else 'ies'}"
    )
    return len(plan.copies)


def _cleanup_previous(run: _Run) -> None:
    """Remove what the previous deployment installed, newest first; directories only when empty
    (files someone else put there stay), symlinks themselves (never their targets)."""
    cleanup = run.root.host(f"/{_INSTRUCTIONS}/{run.group_id}-cleanup")
    if cleanup.is_symlink() or not cleanup.is_file():
        return
    entries = [line for line in cleanup.read_text(encoding="utf-8").splitlines() if line]
    removed = 0
    for entry in reversed(entries):
        host = run.root.host(entry)
        if host == run.root.root or not run.root.inside(host.parent):
            continue
        try:
            if host.is_symlink() or host.is_file():
                host.unlink()
                removed += 1
            elif host.is_dir():
                host.rmdir()
        except OSError:
            pass  # a directory holding other files stays, as with the agent
    cleanup.unlink()
    run.note(f"[CodeDeploy] Removed {_count(removed, 'file')} the previous deployment installed")


def _plan(run: _Run, spec: AppSpec, archive: Path) -> _Plan:
    plan = _Plan()
    real_archive = Path(os.path.realpath(archive))
    for mapping in spec.files:
        source_rel = _instance_path(mapping.source).lstrip("/")
        source = archive / source_rel if source_rel else archive
        if not source.is_symlink() and not source.exists():
            raise _DeploymentError(
                f"Install failed: files source {mapping.source} does not exist in the revision",
                hook="Install",
            )
        if not Path(os.path.realpath(source.parent)).is_relative_to(real_archive):
            raise _DeploymentError(
                f"Install failed: files source {mapping.source} is outside the revision",
                hook="Install",
            )
        destination = _instance_path(mapping.destination)
        if source.is_dir() and not source.is_symlink():
            _fill_ancestors(run, plan, destination)
            _plan_directory(run, plan, source, destination, spec.file_exists_behavior)
        else:
            target = posixpath.join(destination, source.name)
            _fill_ancestors(run, plan, target)
            _plan_copy(run, plan, source, target, spec.file_exists_behavior)
    return plan


def _fill_ancestors(run: _Run, plan: _Plan, destination: str) -> None:
    missing: list[str] = []
    parent = posixpath.dirname(destination)
    while parent != "/" and not run.root.host(parent).exists() and parent not in plan.mkdir_set:
        missing.insert(0, parent)
        parent = posixpath.dirname(parent)
    for directory in missing:
        _plan_mkdir(plan, directory)


def _plan_mkdir(plan: _Plan, directory: str) -> None:
    if directory in plan.copies:
        raise _DeploymentError(
            f"Install failed: the AppSpec file copies a file to {directory} and also needs a "
            "directory there",
            hook="Install",
        )
    if directory not in plan.mkdir_set:
        plan.mkdirs.append(directory)
        plan.mkdir_set.add(directory)


def _plan_directory(run: _Run, plan: _Plan, source: Path, destination: str, behavior: str) -> None:
    host = run.root.host(destination)
    if not (host.is_dir() and not host.is_symlink()):
        _plan_mkdir(plan, destination)
    for entry in sorted(source.iterdir(), key=lambda p: p.name):
        target = posixpath.join(destination, entry.name)
        if entry.is_dir() and not entry.is_symlink():
            _plan_directory(run, plan, entry, target, behavior)
        else:
            _plan_copy(run, plan, entry, target, behavior)


def _plan_copy(run: _Run, plan: _Plan, source: Path, destination: str, behavior: str) -> None:
    if "\n" in destination:
        raise _DeploymentError(
            f"Install failed: file name {destination!r} contains a line break, which the "
            "cleanup list cannot hold",
            hook="Install",
        )
    if destination in plan.copies:
        raise _DeploymentError(
            f"Install failed: the AppSpec file copies two source files ({source.name} and "
            f"{plan.copies[destination].name}) to the same destination {destination}",
            hook="Install",
        )
    if destination in plan.mkdir_set:
        raise _DeploymentError(
            f"Install failed: the AppSpec file installs the file {source.name} at "
            f"{destination}, where it also needs a directory",
            hook="Install",
        )
    host = run.root.host(destination)
    if host.is_symlink() or host.exists():
        if behavior == "DISALLOW":
            raise _DeploymentError(
                f"Install failed: a specified file already exists at this location: "
                f"{destination} (file_exists_behavior DISALLOW; set OVERWRITE or RETAIN in "
                f"{APPSPEC_NAME} to replace or keep it)",
                hook="Install",
            )
        if behavior == "RETAIN":
            run.note(f"[CodeDeploy] Keeping the existing {destination} (RETAIN)")
            return
        plan.overwrite.add(destination)
    plan.copies[destination] = source


# --------------------------------------------------------------------------- permissions


def _simple_glob(name: str, pattern: str) -> bool:
    """The agent's ``matches_simple_glob``: one path level, ``*`` the only wildcard."""
    if "/" in name:
        return False
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, name, flags=re.DOTALL) is not None


def _under(obj: str, path: str) -> str | None:
    base = obj.rstrip("/") + "/"
    return path[len(base) :] if path.startswith(base) else None


def _matches(permission: Permission, path: str) -> bool:
    obj = _instance_path(permission.object)
    rel = _under(obj, path)
    if rel is None:
        return False
    if any(_simple_glob(rel, item) for item in permission.except_):
        return False
    return permission.pattern == "**" or _simple_glob(rel, permission.pattern)


def _apply_permissions(run: _Run, spec: AppSpec, plan: _Plan) -> None:
    """``permissions`` on what this deployment installed, as the agent applies them: an
    ``object`` that is a copied file gets them itself; an ``object`` that is a directory gives
    them to the copied files (type ``file``) and created directories (type ``directory``) below
    it that ``pattern`` matches and ``except`` does not. ``mode`` is applied; ``owner`` and
    ``group`` only when pipebot runs as root (else said in the log), ``acls`` and ``context``
    (setfacl, SELinux) never locally (said in the log)."""
    targets: set[str] = set()
    for permission in spec.permissions:
        obj = _instance_path(permission.object)
        if obj in plan.copies:
            matched = [obj] if "file" in permission.types else []
        elif obj in plan.mkdir_set or run.root.host(obj).is_dir():
            matched = []
            if "file" in permission.types:
                matched += [p for p in plan.copies if _matches(permission, p)]
            if "directory" in permission.types:
                matched += [p for p in plan.mkdirs if _matches(permission, p)]
        else:
            matched = []
        for path in matched:
            if path in targets:
                raise _DeploymentError(
                    f"Install failed: the permissions for {path} are specified more than once "
                    f"in {APPSPEC_NAME}",
                    hook="Install",
                )
            targets.add(path)
            _set_permissions(run, permission, path)
        if (permission.owner or permission.group) and not run.is_root and matched:
            run.note(
                f"[CodeDeploy] owner/group of {permission.object} ignored: pipebot does not run "
                "as root, so files belong to pipebot's user"
            )
        if (permission.acls or permission.context) and matched:
            run.note(
                f"[CodeDeploy] acls/context of {permission.object} are not applied on a local "
                "instance"
            )


def _set_permissions(run: _Run, permission: Permission, path: str) -> None:
    host = run.root.writable(path)
    if host.is_symlink():
        return  # Linux cannot change a link's own mode; the target may be outside the root
    if permission.mode is not None:
        host.chmod(permission.mode)
    if run.is_root and (permission.owner or permission.group):
        try:
            uid = pwd.getpwnam(permission.owner).pw_uid if permission.owner else -1
            gid = grp.getgrnam(permission.group).gr_gid if permission.group else -1
        except KeyError as exc:
            raise _DeploymentError(
                f"Install failed: permissions for {permission.object} name an unknown user or "
                f"group ({exc.args[0]})",
                hook="Install",
            ) from None
        os.chown(host, uid, gid, follow_symlinks=False)
