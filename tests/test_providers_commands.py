"""Local Commands action: real shells, real processes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from bot.engine.providers.commands import (
    CommandsError,
    collect_artifact,
    kill_process_group,
    log_tail,
    prepare_workdir,
    read_output_variables,
    start_commands,
)


def run(
    tmp_path: Path,
    commands: list[str],
    *,
    workdir: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[int, str, Path]:
    """Run ``commands`` to completion; return (exit status, log text, variables path)."""
    workdir = workdir or tmp_path / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = tmp_path / "logs" / "action.log"
    variables_path = tmp_path / "logs" / "action.env"
    proc = start_commands(
        commands=commands,
        workdir=workdir,
        env={**os.environ, **(extra_env or {})},
        log_path=log_path,
        variables_path=variables_path,
    )
    status = proc.wait(timeout=30)
    return status, log_path.read_text(), variables_path


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie waiting for a non-reaping init counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_success_logs_echoed_commands_and_output(tmp_path: Path) -> None:
    status, log, variables_path = run(tmp_path, ["echo hello", "echo 'to stderr' >&2", "ls"])
    assert status == 0
    assert "[Container] Running command echo hello\nhello\n" in log
    assert "[Container] Running command echo 'to stderr' >&2\nto stderr\n" in log
    assert log.index("hello") < log.index("to stderr")
    assert variables_path.exists()


def test_shell_state_carries_across_commands(tmp_path: Path) -> None:
    (tmp_path / "work" / "sub").mkdir(parents=True)
    status, log, _ = run(tmp_path, ["cd sub", "export GREETING=hi", 'echo "$GREETING from $PWD"'])
    assert status == 0
    assert f"hi from {tmp_path / 'work' / 'sub'}" in log


def test_first_failing_command_stops_the_rest(tmp_path: Path) -> None:
    status, log, variables_path = run(tmp_path, ["echo one", "(exit 3)", "echo never"])
    assert status == 3
    assert "one" in log
    assert "Running command echo never" not in log
    assert "Command did not exit successfully (exit 3) exit status 3" in log
    assert not variables_path.exists()

    status, log, _ = run(tmp_path, ["exit 4", "echo never"])
    assert status == 4
    assert "Running command echo never" not in log


def test_failure_inside_a_pipeline_of_commands_uses_last_status(tmp_path: Path) -> None:
    status, _, _ = run(tmp_path, ["false; echo still fine", "false"])
    assert status == 1


def test_log_is_appended_not_truncated(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "action.log"
    log_path.parent.mkdir(parents=True)
    log_path.write_text("previous attempt\n")
    status, log, _ = run(tmp_path, ["echo again"])
    assert status == 0
    assert log.startswith("previous attempt\n")


def test_output_variables_exported(tmp_path: Path) -> None:
    status, _, variables_path = run(
        tmp_path, ["export VERSION=1.2.3", 'export MULTI="a\nb=c"', "UNEXPORTED=x"]
    )
    assert status == 0
    values = read_output_variables(variables_path=variables_path, names=["VERSION", "MULTI"])
    assert values == {"VERSION": "1.2.3", "MULTI": "a\nb=c"}
    assert read_output_variables(variables_path=variables_path, names=[]) == {}


def test_missing_output_variables_are_named(tmp_path: Path) -> None:
    status, _, variables_path = run(tmp_path, ["export A=1", "B=2"])
    assert status == 0
    with pytest.raises(CommandsError) as info:
        read_output_variables(variables_path=variables_path, names=["A", "B", "C"])
    assert "outputVariables B, C were not set by the commands" in info.value.summary
    with pytest.raises(CommandsError, match="outputVariables C was not set by the commands"):
        read_output_variables(variables_path=variables_path, names=["C"])


def test_output_variables_after_failure(tmp_path: Path) -> None:
    status, _, variables_path = run(tmp_path, ["export A=1", "false"])
    assert status != 0
    with pytest.raises(CommandsError, match="did not complete"):
        read_output_variables(variables_path=variables_path, names=["A"])


def test_stale_variables_dump_is_removed(tmp_path: Path) -> None:
    _, _, variables_path = run(tmp_path, ["export A=1"])
    assert variables_path.exists()
    status, _, variables_path = run(tmp_path, ["false"])
    assert status != 0
    assert not variables_path.exists()


def test_kill_process_group_kills_the_commands_and_their_children(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    log_path = tmp_path / "action.log"
    proc = start_commands(
        commands=["sleep 30; echo finished"],
        workdir=workdir,
        env=dict(os.environ),
        log_path=log_path,
        variables_path=tmp_path / "action.env",
    )
    deadline = time.monotonic() + 10
    children: list[int] = []
    while not children and time.monotonic() < deadline:
        children = _children(proc.pid)
        time.sleep(0.02)
    assert children, "the shell never started sleep"

    # The engine blocks in wait() on one thread and kills from another.
    killer = threading.Timer(0.1, kill_process_group, args=(proc.pid,))
    started = time.monotonic()
    killer.start()
    status = proc.wait()
    elapsed = time.monotonic() - started
    killer.join()
    assert status == -9
    assert elapsed < 5
    deadline = time.monotonic() + 5
    while any(_alive(child) for child in children) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(_alive(child) for child in children)
    assert "finished" not in log_path.read_text().replace("echo finished", "")

    kill_process_group(proc.pid)  # already gone: no error


def test_kill_process_group_refuses_own_group() -> None:
    with pytest.raises(ValueError):
        kill_process_group(0)


def test_prepare_workdir_copies_primary_and_exposes_secondary(tmp_path: Path) -> None:
    primary = tmp_path / "artifacts" / "Source"
    (primary / "src").mkdir(parents=True)
    (primary / "src" / "app.py").write_text("print(1)\n")
    secondary = tmp_path / "artifacts" / "Config-Files"
    secondary.mkdir(parents=True)
    (secondary / "settings.txt").write_text("from secondary\n")
    workdir = tmp_path / "runs" / "build"

    env = prepare_workdir(
        workdir=workdir, primary_input=primary, secondary_inputs={"Config-Files": secondary}
    )
    assert env["CODEBUILD_SRC_DIR"] == str(workdir)
    assert env["CODEBUILD_SRC_DIR_Config-Files"] == str(secondary)
    assert env["CODEBUILD_SRC_DIR_Config_Files"] == str(secondary)
    assert (workdir / "src" / "app.py").read_text() == "print(1)\n"

    status, log, _ = run(
        tmp_path,
        ['cat "$CODEBUILD_SRC_DIR_Config_Files/settings.txt"', "touch made.txt", "pwd"],
        workdir=workdir,
        extra_env=env,
    )
    assert status == 0
    assert "from secondary" in log
    assert not (primary / "made.txt").exists()  # the artifact itself is untouched

    # A retry on the same path starts again from the artifact.
    prepare_workdir(workdir=workdir, primary_input=primary, secondary_inputs={})
    assert not (workdir / "made.txt").exists()


def test_prepare_workdir_without_input_and_missing_input(tmp_path: Path) -> None:
    env = prepare_workdir(workdir=tmp_path / "w", primary_input=None, secondary_inputs={})
    assert (tmp_path / "w").is_dir() and not any((tmp_path / "w").iterdir())
    assert env == {"CODEBUILD_SRC_DIR": str(tmp_path / "w")}
    with pytest.raises(CommandsError):
        prepare_workdir(
            workdir=tmp_path / "x", primary_input=tmp_path / "nope", secondary_inputs={}
        )


@pytest.fixture
def built(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    for rel in [
        "README.txt",
        "notes.txt",
        "dist/app.js",
        "dist/lib/util.js",
        "dist/lib/deep/x.map",
        "reports/junit.xml",
        "src/main.py",
        ".hidden",
    ]:
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    return work


def _collected(destination: Path) -> set[str]:
    return {p.relative_to(destination).as_posix() for p in destination.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (
            ["**/*"],
            {
                "README.txt",
                "notes.txt",
                "dist/app.js",
                "dist/lib/util.js",
                "dist/lib/deep/x.map",
                "reports/junit.xml",
                "src/main.py",
                ".hidden",
            },
        ),
        (["dist/**/*"], {"dist/app.js", "dist/lib/util.js", "dist/lib/deep/x.map"}),
        (["*.txt"], {"README.txt", "notes.txt"}),
        (["reports/junit.xml", "src/main.py"], {"reports/junit.xml", "src/main.py"}),
        (["dist/lib"], {"dist/lib/util.js", "dist/lib/deep/x.map"}),
        (["./dist/lib/"], {"dist/lib/util.js", "dist/lib/deep/x.map"}),
        (["dist/*.js"], {"dist/app.js"}),
        (["**/*.js"], {"dist/app.js", "dist/lib/util.js"}),
        (["dist/**"], {"dist/app.js", "dist/lib/util.js", "dist/lib/deep/x.map"}),
        (["d?st/[a-b]pp.js"], {"dist/app.js"}),
    ],
)
def test_collect_artifact_globs(
    built: Path, tmp_path: Path, patterns: list[str], expected: set[str]
) -> None:
    destination = tmp_path / "out"
    count = collect_artifact(workdir=built, files=patterns, destination=destination)
    assert _collected(destination) == expected
    assert count == len(expected)
    assert (destination / sorted(expected)[0]).read_text() == sorted(expected)[0]


def test_collect_artifact_no_match_names_every_pattern(built: Path, tmp_path: Path) -> None:
    with pytest.raises(CommandsError) as info:
        collect_artifact(
            workdir=built, files=["dist/**/*", "build/**/*", "*.zip"], destination=tmp_path / "o"
        )
    assert "'build/**/*'" in info.value.summary and "'*.zip'" in info.value.summary
    assert "'dist/**/*'" not in info.value.summary


@pytest.mark.parametrize("pattern", ["../secret.txt", "/etc/passwd", "dist/../../x"])
def test_collect_artifact_refuses_paths_outside(built: Path, tmp_path: Path, pattern: str) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    with pytest.raises(CommandsError, match="work directory"):
        collect_artifact(workdir=built, files=[pattern], destination=tmp_path / "o")


def test_collect_artifact_never_follows_links_out(built: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside, built / "linked-dir")
    os.symlink(outside / "secret.txt", built / "linked-file.txt")
    os.symlink(built / "notes.txt", built / "alias.txt")  # inside: copied as a file

    destination = tmp_path / "out"
    collect_artifact(workdir=built, files=["**/*"], destination=destination)
    collected = _collected(destination)
    assert "alias.txt" in collected and not (destination / "alias.txt").is_symlink()
    assert not any("secret" in rel or rel.startswith("linked") for rel in collected)
    for pattern in ["linked-dir/**/*", "linked-dir/secret.txt", "linked-file.txt"]:
        with pytest.raises(CommandsError):
            collect_artifact(workdir=built, files=[pattern], destination=tmp_path / "o2")


def test_log_tail(tmp_path: Path) -> None:
    assert log_tail(log_path=tmp_path / "missing.log") == ""
    log_path = tmp_path / "a.log"
    log_path.write_bytes(b"".join(f"line {i}\n".encode() for i in range(100)) + b"bad \xff end\n")
    tail = log_tail(log_path=log_path, lines=3)
    assert tail == "line 98\nline 99\nbad \ufffd end"
    assert log_tail(log_path=log_path, lines=50, max_chars=10) == "\nbad \ufffd end"
    big = tmp_path / "big.log"
    big.write_text("x" * 100_000 + "\nlast line\n")
    assert log_tail(log_path=big, lines=1) == "last line"
    assert log_tail(log_path=big, lines=5, max_chars=100) == ("x" * 100 + "\nlast line")[-100:]
