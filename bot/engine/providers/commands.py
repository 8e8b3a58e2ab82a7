"""The Compute/AWS/Commands action run on the local machine, mirroring CodeBuild's behaviour.

On AWS this action runs its ``commands`` in a CodeBuild container: the first input artifact is the
working directory (``CODEBUILD_SRC_DIR``), the other inputs are reachable through
``CODEBUILD_SRC_DIR_<artifact name>``, every line runs in the same shell in order and the first one
that fails fails the action, ``outputVariables`` are read from the environment after the last line,
and ``outputArtifacts[].files`` globs pick the output artifact's files (no match fails the build).
This module reproduces those rules with a local shell, in steps the engine's worker sequences:

1. ``prepare_workdir`` -> environment additions,
2. ``start_commands`` -> a running ``Popen`` the worker waits on (and may kill from another thread
   with ``kill_process_group`` when the execution is stopped with abandon),
3. ``read_output_variables`` and ``collect_artifact`` once it exited with status 0,
4. ``log_tail`` for a failure summary.

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
from pathlib import Path

from bot.engine.errors import EngineError

__all__ = [
    "CommandsError",
    "collect_artifact",
    "kill_process_group",
    "log_tail",
    "prepare_workdir",
    "read_output_variables",
    "start_commands",
]

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


def prepare_workdir(
    *, workdir: Path, primary_input: Path | None, secondary_inputs: Mapping[str, Path]
) -> dict[str, str]:
    """Create ``workdir`` holding a copy of the primary input artifact; return env additions.

    The copy (not the artifact itself) is the working directory because commands write into it
    and the artifact must stay intact for retries and later actions. An existing ``workdir`` is
    replaced: a stage retry may reuse the same path and must start from the artifact, not from the
    leftovers of the failed attempt. Secondary inputs are not copied; like CodeBuild's secondary
    sources they are reached through ``CODEBUILD_SRC_DIR_<name>`` (meant for reading). Artifact
    names may contain ``-``, which a shell cannot expand, so such names also get an alias with
    ``_`` in its place.
    """
    if primary_input is not None and not primary_input.is_dir():
        raise CommandsError(f"Input artifact directory {primary_input} does not exist")
    for name, path in secondary_inputs.items():
        if not path.is_dir():
            raise CommandsError(f"Input artifact {name!r} directory {path} does not exist")
    if workdir.is_symlink() or workdir.is_file():
        workdir.unlink()
    elif workdir.exists():
        shutil.rmtree(workdir)
    if primary_input is None:
        workdir.mkdir(parents=True)
    else:
        workdir.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(primary_input, workdir, symlinks=True)

    env = {"CODEBUILD_SRC_DIR": str(workdir.absolute())}
    for name, path in secondary_inputs.items():
        env[f"CODEBUILD_SRC_DIR_{name}"] = str(path.absolute())
    for name, path in secondary_inputs.items():
        alias = f"CODEBUILD_SRC_DIR_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"
        env.setdefault(alias, str(path.absolute()))
    return env


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
) -> subprocess.Popen[bytes]:
    """Start ``commands`` in ``workdir`` and return at once with the running process.

    The script is written next to the log as ``<log name>.sh`` (outside ``workdir``, so that
    artifact globs never pick it up). Output and errors are appended to ``log_path`` by the shell
    itself, the environment goes to ``variables_path`` (removed first, so a stale dump from an
    earlier attempt cannot be mistaken for this one's; None skips the dump when the action
    declares no outputVariables). ``env`` is the complete environment. The
    process leads a new session, so ``kill_process_group(proc.pid)`` reaches every process the
    commands started, and the caller only needs a blocking ``proc.wait()``.
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
