"""The Compute/AWS/Commands action run on the local machine, mirroring CodeBuild's behaviour.

On AWS this action runs its ``commands`` on CodePipeline-managed CodeBuild compute (CodePipeline
user guide, "Commands action reference"): the first input artifact is the working directory
(``CODEBUILD_SRC_DIR``), the other inputs are reachable through ``CODEBUILD_SRC_DIR_<artifact
name>``, every line runs in the same shell in order and the first one that fails fails the action,
the build times out after 55 minutes, ``outputVariables`` are read from the environment after the
last line (CodeBuild's own variables included: AWS's example exports ``CODEBUILD_BUILD_ID``), and
``outputArtifacts[].files`` globs pick the output artifact's files (no match fails the build).
This module reproduces those rules with a local shell, in steps the engine's worker sequences:

1. ``prepare_workdir`` -> the ``CODEBUILD_SRC_DIR*`` variables, ``codebuild_environment`` -> the
   rest of CodeBuild's variables, ``compose_environment`` -> the commands' whole environment,
2. ``start_commands`` -> a running ``Popen`` the worker waits on, at most
   ``BUILD_TIMEOUT_SECONDS`` (and may kill from another thread with ``kill_process_group`` when the
   execution is stopped with abandon),
3. ``read_output_variables`` and ``collect_artifact`` once it exited with status 0,
4. ``log_tail`` for a failure summary, ``remove_workdir`` at the end.

Nothing here polls or keeps state between calls: the shell writes the log and the environment dump
itself, so waiting on the process is all the caller has to do.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bot.engine.errors import EngineError

__all__ = [
    "BUILD_TIMEOUT_SECONDS",
    "LOCAL_BUILD_IMAGE",
    "PIPEBOT_SECRETS",
    "Build",
    "CommandsError",
    "codebuild_environment",
    "collect_artifact",
    "compose_environment",
    "host_environment",
    "kill_process_group",
    "log_tail",
    "prepare_workdir",
    "project_name",
    "read_output_variables",
    "remove_workdir",
    "secondary_inputs_dir",
    "start_commands",
]

BUILD_TIMEOUT_SECONDS: int = 55 * 60  # read at each run, so tests can shorten it
"""How long a Commands action may run: "The timeout for builds with the Commands action is 55
minutes, as based on CodeBuild builds" (Commands action reference, "Considerations"). Fixed on AWS:
``timeoutInMinutes`` applies to manual approvals only (ActionDeclaration, CodePipeline API)."""

LOCAL_BUILD_IMAGE: Final = "pipebot/local-shell"
"""``CODEBUILD_BUILD_IMAGE`` locally. There is no image: the commands run in a shell on pipebot's
host. The value says so, rather than naming an AWS image whose tools the host may not have."""

_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GLOB_CHARS = frozenset("*?[")


class CommandsError(EngineError):
    """The Commands action failed for a reason other than a command's exit status.

    ``summary`` is suitable as the action execution's failure summary (shown to users as is).
    """

    def __init__(self, summary: str) -> None:
        self.summary = summary
        super().__init__(summary)


# --------------------------------------------------------------------------- work directory


def secondary_inputs_dir(workdir: Path) -> Path:
    """Where the copies of the secondary input artifacts of ``workdir``'s action live.

    A sibling of ``workdir`` (``<workdir>.inputs/<artifact name>``), never inside it: as on
    CodeBuild, where each source has its own directory, secondary inputs are not part of the
    primary source, so ``outputArtifacts`` globs such as ``**/*`` never pick them up.
    """
    return workdir.with_name(workdir.name + ".inputs")


def _replace_with_copy(source: Path | None, target: Path) -> None:
    """Make ``target`` a fresh copy of ``source`` (an empty directory when ``source`` is None)."""
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if source is None:
        target.mkdir()
    else:
        shutil.copytree(source, target, symlinks=True)


def prepare_workdir(
    *, workdir: Path, primary_input: Path | None, secondary_inputs: Mapping[str, Path]
) -> dict[str, str]:
    """Copy the input artifacts for one run; return the ``CODEBUILD_SRC_DIR*`` variables.

    ``workdir`` becomes a copy of the primary input artifact (the commands' working directory,
    ``CODEBUILD_SRC_DIR``); each secondary input (artifact name -> stored directory) is copied to
    ``secondary_inputs_dir(workdir)/<name>`` and named by ``CODEBUILD_SRC_DIR_<name>``: for a build
    CodePipeline starts, the source identifier CodeBuild uses in that name is the input artifact's
    name (CodeBuild user guide, "Environment variables in build environments"). Copies, not the
    stored artifacts, because commands may write anywhere in them, as they can in CodeBuild's
    container, and the artifacts must stay intact for retries and later actions. Existing copies
    are replaced: a stage retry may reuse the same paths and must start from the artifacts, not
    from the leftovers of the failed attempt. Artifact names may contain ``-``, which a shell
    cannot expand, so such names also get an alias with ``_`` in its place (pipebot's addition).

    Raises ``CommandsError`` when an input artifact's directory is missing or a name is not a
    plain artifact name.
    """
    if primary_input is not None and not primary_input.is_dir():
        raise CommandsError(f"Input artifact directory {primary_input} does not exist")
    for name, path in secondary_inputs.items():
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise CommandsError(f"Input artifact name {name!r} cannot name a directory")
        if not path.is_dir():
            raise CommandsError(f"Input artifact {name!r} directory {path} does not exist")
    _replace_with_copy(primary_input, workdir)
    secondary_root = secondary_inputs_dir(workdir)
    _replace_with_copy(None, secondary_root)
    copies = {}
    for name, path in secondary_inputs.items():
        copies[name] = secondary_root / name
        _replace_with_copy(path, copies[name])

    env = {"CODEBUILD_SRC_DIR": str(workdir.absolute())}
    for name, copy in copies.items():
        env[f"CODEBUILD_SRC_DIR_{name}"] = str(copy.absolute())
    for name, copy in copies.items():
        alias = f"CODEBUILD_SRC_DIR_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"
        env.setdefault(alias, str(copy.absolute()))
    return env


def remove_workdir(*, workdir: Path) -> None:
    """Delete ``workdir`` and its secondary input copies; missing ones are not an error."""
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.rmtree(secondary_inputs_dir(workdir), ignore_errors=True)


# --------------------------------------------------------------------------- CodeBuild environment

_PROJECT_NAME_MAX = 150
_NOT_IN_PROJECT_NAME = re.compile(r"[^A-Za-z0-9_-]")
_NOT_PROJECT_NAME_START = re.compile(r"^[^A-Za-z0-9]+")


def project_name(*, pipeline_name: str, stage_name: str, action_name: str) -> str:
    """The CodeBuild project a Commands action's builds belong to: ``<pipeline>-<stage>-<action>``.

    AWS runs Commands actions on CodeBuild compute that CodePipeline manages ("without the need to
    associate or create a build project", Commands action reference) and documents no project name
    for them. pipebot gives every Commands action of a pipeline a project of its own, so
    ``CODEBUILD_BUILD_NUMBER`` counts that action's builds (every execution and every retry), as
    CodeBuild counts a project's builds. The name obeys CodeBuild's ``ProjectName`` shape
    (``[A-Za-z0-9][A-Za-z0-9\\-_]{1,149}``, CodeBuild API reference, CreateProject): ``.`` and
    ``@``, valid in pipeline, stage and action names, become ``_``, a leading ``-`` or ``_`` is
    dropped, and the name is cut at 150 characters.
    """
    joined = _NOT_IN_PROJECT_NAME.sub("_", f"{pipeline_name}-{stage_name}-{action_name}")
    name = _NOT_PROJECT_NAME_START.sub("", joined)[:_PROJECT_NAME_MAX]
    return name if len(name) >= 2 else f"commands-{name}".rstrip("-")


@dataclass(frozen=True, kw_only=True)
class Build:
    """One run of a Commands action seen as the CodeBuild build AWS would run it as.

    ``uuid`` is the build's own identifier (pipebot uses the action execution ID, so a build ID
    leads back to its action execution and log); ``number`` counts the project's builds from 1;
    ``region`` and ``account`` are those of the engine's ARNs.
    """

    project: str
    uuid: str
    number: int
    region: str
    account: str

    @property
    def build_id(self) -> str:
        """``<project-name>:<uuid>``, as ``CODEBUILD_BUILD_ID`` and CodeBuild's ``Build.id``."""
        return f"{self.project}:{self.uuid}"

    @property
    def build_arn(self) -> str:
        """``arn:aws:codebuild:<region>:<account>:build/<build id>``."""
        return f"arn:aws:codebuild:{self.region}:{self.account}:build/{self.build_id}"

    @property
    def project_arn(self) -> str:
        """``arn:aws:codebuild:<region>:<account>:project/<project name>``."""
        return f"arn:aws:codebuild:{self.region}:{self.account}:project/{self.project}"


def codebuild_environment(
    *,
    build: Build,
    pipeline_name: str,
    aws_region: str | None,
    resolved_source_version: str | None,
    start_time_ms: int,
) -> dict[str, str]:
    """The variables CodeBuild sets in every build CodePipeline starts, shaped as AWS shapes them.

    From "Environment variables in build environments" (CodeBuild user guide): the build's ID,
    ARN, number, project ARN and image; ``CODEBUILD_INITIATOR`` ``codepipeline/<pipeline name>``;
    ``CODEBUILD_BUILD_SUCCEEDING`` ``1`` (a Commands action stops at the first failing command, so
    no command ever runs while the build is failing); ``CODEBUILD_START_TIME``, ``start_time_ms``
    as milliseconds since the Unix epoch; ``CODEBUILD_RESOLVED_SOURCE_VERSION``, the revision
    CodePipeline provides for the primary input (a commit ID), only when there is one: the page
    says it "may not always be available", and an artifact built by an earlier action has none;
    ``AWS_REGION`` and ``AWS_DEFAULT_REGION`` only when the engine has a real region
    (``aws_region``), so that an engine without one does not point the commands' AWS CLI and SDKs
    at a region that does not exist. ``CODEBUILD_SRC_DIR*`` come from ``prepare_workdir``.

    Left out, having no truthful local value: ``CODEBUILD_SOURCE_VERSION`` and
    ``CODEBUILD_SOURCE_REPO_URL`` (the input artifact's S3 object), ``CODEBUILD_KMS_KEY_ID``
    (artifacts are not encrypted locally), ``CODEBUILD_LOG_PATH`` (no CloudWatch Logs stream);
    and, as on AWS for these builds, the batch, public-build and webhook variables.
    """
    env = {
        "CODEBUILD_BUILD_ID": build.build_id,
        "CODEBUILD_BUILD_ARN": build.build_arn,
        "CODEBUILD_BUILD_NUMBER": str(build.number),
        "CODEBUILD_PROJECT_ARN": build.project_arn,
        "CODEBUILD_BUILD_IMAGE": LOCAL_BUILD_IMAGE,
        "CODEBUILD_INITIATOR": f"codepipeline/{pipeline_name}",
        "CODEBUILD_BUILD_SUCCEEDING": "1",
        "CODEBUILD_START_TIME": str(start_time_ms),
    }
    if resolved_source_version:
        env["CODEBUILD_RESOLVED_SOURCE_VERSION"] = resolved_source_version
    if aws_region:
        env["AWS_REGION"] = aws_region
        env["AWS_DEFAULT_REGION"] = aws_region
    return env


#: pipebot's own secrets: a CodeBuild container never has them, so the commands never see them
#: (and cannot print them into a log that Slack shows). ``tests/test_commands_environment.py``
#: checks that every secret variable of ``bot.settings`` is here.
PIPEBOT_SECRETS: Final = frozenset(
    {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "DATABASE_URL"}
)


def host_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """pipebot's environment as the commands' base (the build image's stand-in), without
    ``PIPEBOT_SECRETS``. AWS credentials stay: on AWS the commands have the pipeline role's."""
    return {name: value for name, value in environ.items() if name not in PIPEBOT_SECRETS}


def compose_environment(
    *, host: Mapping[str, str], codebuild: Mapping[str, str], declared: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """The commands' environment, and the declared names dropped because CodeBuild owns them.

    Three layers, each replacing the one before: ``host`` (pipebot's own environment, standing in
    for the build image's: ``PATH``, ``HOME``, ...), ``codebuild`` (what CodeBuild sets:
    ``codebuild_environment`` and ``prepare_workdir``), ``declared`` (the action's
    ``environmentVariables``). A variable you set replaces the image's variable of the same name
    (CodeBuild user guide, "Create a build project", Environment variables), ``AWS_REGION``
    included; but "Do not set any environment variable with a name that begins with
    ``CODEBUILD_``. This prefix is reserved for internal use" (same page), so a declared variable
    that would replace a ``CODEBUILD_`` variable CodeBuild sets is dropped and its name returned
    (sorted), for the caller to say so in the log. Other declared ``CODEBUILD_`` names pass.
    """
    env = {**host, **codebuild}
    reserved = sorted(
        name for name in declared if name.startswith("CODEBUILD_") and name in codebuild
    )
    env.update((name, value) for name, value in declared.items() if name not in reserved)
    return env, reserved


# --------------------------------------------------------------------------- running


def _find_program(name: str, env: Mapping[str, str]) -> str | None:
    """Look ``name`` up on the PATH the commands will run with, then on pipebot's own."""
    return shutil.which(name, path=env.get("PATH")) or shutil.which(name)


def _script(commands: Sequence[str], variables_path: Path | None, env_program: str) -> str:
    """The POSIX shell script that runs ``commands`` the way CodeBuild does.

    Each command is ``eval``-ed in the one shell (so ``cd`` and ``export`` carry over to the next
    line) and its status checked: the first non-zero status stops the script with that status. This
    is ``set -e`` at command granularity, as in CodeBuild, without ``set -e``'s surprises inside a
    command (``false; echo ok`` is one command that succeeds). Commands are embedded with
    ``shlex.quote`` so their text is never interpreted when echoed. The environment is dumped
    NUL-separated only after the last command succeeded, so its existence means success.
    """
    lines = ["# Generated by pipebot for a Commands action; runs with bash or sh."]
    for command in commands:
        quoted = shlex.quote(command)
        lines += [
            f"printf '%s\\n' {shlex.quote('[Container] Running command ' + command)}",
            f"eval {quoted}",
            "__pipebot_status=$?",
            'if [ "$__pipebot_status" -ne 0 ]; then',
            "  printf '%s%s\\n' "
            + shlex.quote(f"[Container] Command did not exit successfully {command} exit status ")
            + ' "$__pipebot_status"',
            '  exit "$__pipebot_status"',
            "fi",
        ]
    if variables_path is not None:
        target = shlex.quote(str(variables_path.absolute()))
        lines.append(f"{shlex.quote(env_program)} -0 > {target} || exit $?")
    lines += [
        "printf '%s\\n' '[Container] Commands completed: State: SUCCEEDED'",
        "",
    ]
    return "\n".join(lines)


def start_commands(
    *,
    commands: Sequence[str],
    workdir: Path,
    env: Mapping[str, str],
    log_path: Path,
    variables_path: Path | None,
    notes: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Start ``commands`` in ``workdir`` and return at once with the running process.

    The script is written next to the log as ``<log name>.sh`` (outside ``workdir``, so that
    artifact globs never pick it up). ``notes`` are appended to ``log_path`` first, one
    ``[Container]`` line each; then output and errors are appended by the shell itself, and the
    environment goes to ``variables_path`` (removed first, so a stale dump from an earlier attempt
    cannot be mistaken for this one's; None skips the dump when the action declares no
    outputVariables). ``env`` is the complete environment. The process leads a new session, so
    ``kill_process_group(proc.pid)`` reaches every process the commands started, and the caller
    only needs a blocking ``proc.wait()`` (with ``BUILD_TIMEOUT_SECONDS`` as its timeout).
    """
    if not commands:
        raise CommandsError("The Commands action has no commands to run")
    shell = _find_program("bash", env) or _find_program("sh", env) or "/bin/sh"
    env_program = _find_program("env", env) or "env"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if variables_path is not None:
        variables_path.parent.mkdir(parents=True, exist_ok=True)
        variables_path.unlink(missing_ok=True)
    script_path = log_path.with_name(log_path.name + ".sh")
    script_path.write_text(_script(commands, variables_path, env_program), encoding="utf-8")
    try:
        with log_path.open("ab") as log:
            log.write("".join(f"[Container] {note}\n" for note in notes).encode())
            log.flush()
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
        raise CommandsError(f"Cannot start the commands with {shell} in {workdir}: {exc}") from exc


def kill_process_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (a process from ``start_commands``).

    SIGKILL rather than SIGTERM: abandoning must not wait on a command's cleanup. Errors saying the
    group is already gone (or no longer ours) are ignored so that killing is idempotent and may race
    with the process exiting by itself.
    """
    if pid <= 1:
        # os.killpg(0, ...) would kill pipebot's own process group.
        raise ValueError(f"refusing to kill process group {pid}")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- results


def read_output_variables(*, variables_path: Path, names: Sequence[str]) -> dict[str, str]:
    """Return the values of ``names`` from the environment dump written after the last command.

    Only exported variables are in the environment, as on AWS; the error for a missing one says
    so, since ``NAME=value`` without ``export`` is the usual mistake.
    """
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    try:
        data = variables_path.read_bytes()
    except FileNotFoundError:
        raise CommandsError(
            "The commands did not complete, so outputVariables could not be read"
        ) from None
    environment: dict[str, str] = {}
    for entry in data.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            environment[key.decode(errors="replace")] = value.decode(errors="replace")
    missing = [name for name in wanted if name not in environment]
    if missing:
        listed = ", ".join(missing)
        verb = "was" if len(missing) == 1 else "were"
        raise CommandsError(
            f"outputVariables {listed} {verb} not set by the commands "
            f"(set them with `export {missing[0]}=...` in a command)"
        )
    return {name: environment[name] for name in wanted}


def _segment_regex(segment: str) -> str:
    """Translate one path segment of a glob into a regex that never crosses a ``/``."""
    out: list[str] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            out.append("[^/]*")
            while i + 1 < len(segment) and segment[i + 1] == "*":
                i += 1
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := segment.find("]", i + 2)) != -1:
            body = segment[i + 1 : end].replace("\\", "\\\\")
            if body.startswith(("!", "^")):
                out.append(f"[^/{body[1:]}]")
            else:
                out.append(f"[{body}]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _glob_regex(parts: Sequence[str]) -> re.Pattern[str]:
    """Compile glob segments: ``**`` spans any number of directories, ``*`` stays in one."""
    regex = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            regex += ".*" if last else "(?:[^/]+/)*"
        else:
            regex += _segment_regex(part) + ("" if last else "/")
    return re.compile(regex)


def _copy_source(path: Path, is_symlink: bool, root: Path) -> Path | None:
    """The file to copy for ``path``, or None if it must not be copied.

    A symlink is followed only to a regular file inside the work directory: artifacts must never
    pull in files from elsewhere on the machine through a link a command created.
    """
    if not is_symlink:
        return path
    target = Path(os.path.realpath(path))
    if target.is_relative_to(root) and target.is_file():
        return target
    return None


def _scan(
    directory: Path, relative: str, root: Path, depth: int | None
) -> Iterator[tuple[str, Path]]:
    """Yield ``(relative posix path, file to copy)`` for files under ``directory``.

    Directories are descended only when they are real directories (never through symlinks), and
    only ``depth`` levels deep when a pattern without ``**`` bounds it.
    """
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    for entry in entries:
        rel = f"{relative}/{entry.name}" if relative else entry.name
        if entry.is_dir(follow_symlinks=False):
            if depth is None or depth > 1:
                yield from _scan(Path(entry.path), rel, root, None if depth is None else depth - 1)
        elif entry.is_file(follow_symlinks=False) or entry.is_symlink():
            source = _copy_source(Path(entry.path), entry.is_symlink(), root)
            if source is not None:
                yield rel, source


def _pattern_parts(pattern: str) -> list[str]:
    """Split a pattern into segments, refusing anything that leaves the work directory."""
    if pattern.startswith(("/", "\\")) or "\0" in pattern:
        raise CommandsError(
            f"outputArtifacts files pattern {pattern!r} must be relative to the work directory"
        )
    parts = [part for part in pattern.strip().split("/") if part not in ("", ".")]
    if ".." in parts:
        raise CommandsError(
            f"outputArtifacts files pattern {pattern!r} points outside the work directory"
        )
    return parts


def _real_directory(workdir: Path, parts: Sequence[str]) -> Path | None:
    """``workdir/parts...`` if every component is a real directory (no symlink), else None."""
    path = workdir
    for part in parts:
        path = path / part
        if path.is_symlink() or not path.is_dir():
            return None
    return path


def _matches(workdir: Path, root: Path, pattern: str) -> dict[str, Path]:
    """Files of ``workdir`` matched by one pattern, as relative path -> file to copy.

    Only the part of the tree below the pattern's literal prefix is scanned (``dist/**/*`` never
    reads ``node_modules``), and no deeper than the pattern can match when it has no ``**``.
    """
    parts = _pattern_parts(pattern)
    literal = 0
    while literal < len(parts) and not _GLOB_CHARS.intersection(parts[literal]):
        literal += 1

    if literal == len(parts):
        # A plain path: the file itself, or everything below a directory ("." is everything).
        if not parts:
            return dict(_scan(workdir, "", root, None))
        parent = _real_directory(workdir, parts[:-1])
        if parent is None:
            return {}
        path = parent / parts[-1]
        rel = "/".join(parts)
        if path.is_symlink() or path.is_file():
            source = _copy_source(path, path.is_symlink(), root)
            return {} if source is None else {rel: source}
        if path.is_dir():
            return dict(_scan(path, rel, root, None))
        return {}

    base = _real_directory(workdir, parts[:literal])
    if base is None:
        return {}
    rest = parts[literal:]
    depth = None if "**" in rest else len(rest)
    regex = _glob_regex(parts)
    return {
        rel: source
        for rel, source in _scan(base, "/".join(parts[:literal]), root, depth)
        if regex.fullmatch(rel)
    }


def collect_artifact(*, workdir: Path, files: Sequence[str], destination: Path) -> int:
    """Copy the files of ``workdir`` matched by ``files`` into ``destination``; return their count.

    Patterns follow CodeBuild's artifact ``files``: relative globs where ``**`` spans directories
    (``**/*``, ``dist/**/*``), ``*`` and ``?`` stay within one directory (``*.txt`` is top-level
    only), a plain path names a file or a directory whose whole contents are taken. Relative paths
    are preserved. Any pattern matching nothing fails the action, as CodeBuild fails the build, and
    all such patterns are named at once. Symlinks are never followed out of ``workdir``.
    """
    root = Path(os.path.realpath(workdir))
    selected: dict[str, Path] = {}
    unmatched: list[str] = []
    for pattern in files:
        found = _matches(workdir, root, pattern)
        if not found:
            unmatched.append(pattern)
        selected.update(found)
    if unmatched:
        listed = ", ".join(repr(pattern) for pattern in unmatched)
        raise CommandsError(
            f"No artifact files match {listed} in the work directory "
            "(outputArtifacts files patterns must each match at least one file)"
        )
    destination.mkdir(parents=True, exist_ok=True)
    for rel, source in selected.items():
        target = destination / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return len(selected)


def log_tail(*, log_path: Path, lines: int = 20, max_chars: int = 2000) -> str:
    """The end of a command log, for an action failure summary; ``""`` if there is no log.

    Only the last ``4 * max_chars`` bytes are read (enough for ``max_chars`` characters of UTF-8),
    so a multi-gigabyte log costs no more than a small one. When the last ``lines`` lines are
    longer than ``max_chars`` altogether, the end of them is kept: errors are usually last.
    """
    if lines <= 0 or max_chars <= 0:
        return ""
    budget = 4 * max_chars + 4
    try:
        with log_path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            start = max(size - budget, 0)
            log.seek(start)
            data = log.read()
    except (FileNotFoundError, IsADirectoryError):
        return ""
    # A first line cut by the byte budget is kept: whatever of it survives the final max_chars cut
    # is genuinely the end of that line.
    tail = data.decode(errors="replace").splitlines()[-lines:]
    return "\n".join(tail)[-max_chars:]
