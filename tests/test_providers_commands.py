"""Local Commands action: real shells, real processes."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest

from bot.engine.providers.commands import (
    LOCAL_BUILD_IMAGE,
    Build,
    CommandsError,
    codebuild_environment,
    collect_artifact,
    compose_environment,
    kill_process_group,
    log_tail,
    prepare_workdir,
    project_name,
    read_output_variables,
    remove_workdir,
    secondary_inputs_dir,
    start_commands,
)
from tests.helpers import process_alive


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
    while any(process_alive(child) for child in children) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(process_alive(child) for child in children)
    assert "finished" not in log_path.read_text().replace("echo finished", "")

    kill_process_group(proc.pid)  # already gone: no error


def test_kill_process_group_refuses_own_group() -> None:
    with pytest.raises(ValueError):
        kill_process_group(0)


def test_prepare_workdir_copies_primary_and_secondary_inputs(tmp_path: Path) -> None:
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
    copy = secondary_inputs_dir(workdir) / "Config-Files"
    assert copy == tmp_path / "runs" / "build.inputs" / "Config-Files"
    assert env == {
        "CODEBUILD_SRC_DIR": str(workdir),
        "CODEBUILD_SRC_DIR_Config-Files": str(copy),
        "CODEBUILD_SRC_DIR_Config_Files": str(copy),
    }
    assert (workdir / "src" / "app.py").read_text() == "print(1)\n"
    assert (copy / "settings.txt").read_text() == "from secondary\n"

    status, log, _ = run(
        tmp_path,
        [
            'cat "$CODEBUILD_SRC_DIR_Config_Files/settings.txt"',
            'echo changed > "$CODEBUILD_SRC_DIR_Config_Files/settings.txt"',
            "touch made.txt",
        ],
        workdir=workdir,
        extra_env=env,
    )
    assert status == 0
    assert "from secondary" in log
    # Commands write into copies: the stored artifacts stay as they were.
    assert not (primary / "made.txt").exists()
    assert (secondary / "settings.txt").read_text() == "from secondary\n"

    # A retry on the same paths starts again from the artifacts.
    prepare_workdir(workdir=workdir, primary_input=primary, secondary_inputs={})
    assert not (workdir / "made.txt").exists()
    assert not copy.exists()

    remove_workdir(workdir=workdir)
    assert not workdir.exists() and not secondary_inputs_dir(workdir).exists()
    remove_workdir(workdir=workdir)  # already gone: no error


def test_prepare_workdir_without_input_and_missing_input(tmp_path: Path) -> None:
    env = prepare_workdir(workdir=tmp_path / "w", primary_input=None, secondary_inputs={})
    assert (tmp_path / "w").is_dir() and not any((tmp_path / "w").iterdir())
    assert env == {"CODEBUILD_SRC_DIR": str(tmp_path / "w")}
    with pytest.raises(CommandsError):
        prepare_workdir(
            workdir=tmp_path / "x", primary_input=tmp_path / "nope", secondary_inputs={}
        )
    with pytest.raises(CommandsError, match="does not exist"):
        prepare_workdir(
            workdir=tmp_path / "y", primary_input=None, secondary_inputs={"Gone": tmp_path / "g"}
        )
    with pytest.raises(CommandsError, match="cannot name a directory"):
        prepare_workdir(
            workdir=tmp_path / "z", primary_input=None, secondary_inputs={"..": tmp_path}
        )


# --------------------------------------------------------------------------- CodeBuild environment


def test_project_name_has_codebuilds_shape() -> None:
    assert project_name(pipeline_name="web", stage_name="Build", action_name="Test") == (
        "web-Build-Test"
    )
    # "." and "@" are valid in pipeline, stage and action names, not in project names.
    name = project_name(pipeline_name="_my.app@v2", stage_name="Build", action_name="unit.tests")
    assert name == "my_app_v2-Build-unit_tests"
    long = project_name(pipeline_name="p" * 100, stage_name="s" * 100, action_name="a" * 100)
    assert len(long) == 150 and long.startswith("p" * 100 + "-")
    short = project_name(pipeline_name="-", stage_name="-", action_name="x")
    assert short == "commands-x"
    for each in (name, long, short):
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9\-_]{1,149}", each), each


def test_build_identifiers_are_shaped_as_codebuilds() -> None:
    build = Build(
        project="web-Build-Test",
        uuid="b1e6661e-e4f2-4156-9ab9-82a19e000000",
        number=7,
        region="eu-west-1",
        account="000000000000",
    )
    assert build.build_id == "web-Build-Test:b1e6661e-e4f2-4156-9ab9-82a19e000000"
    assert build.build_arn == (
        "arn:aws:codebuild:eu-west-1:000000000000:build/"
        "web-Build-Test:b1e6661e-e4f2-4156-9ab9-82a19e000000"
    )
    assert build.project_arn == "arn:aws:codebuild:eu-west-1:000000000000:project/web-Build-Test"


def test_codebuild_environment_sets_what_codebuild_sets() -> None:
    build = Build(project="p-s-a", uuid="u", number=3, region="us-east-2", account="123")
    env = codebuild_environment(
        build=build,
        pipeline_name="my-demo-pipeline",
        aws_region="us-east-2",
        resolved_source_version="abc123",
        start_time_ms=1_700_000_000_123,
    )
    assert env == {
        "CODEBUILD_BUILD_ID": "p-s-a:u",
        "CODEBUILD_BUILD_ARN": "arn:aws:codebuild:us-east-2:123:build/p-s-a:u",
        "CODEBUILD_BUILD_NUMBER": "3",
        "CODEBUILD_PROJECT_ARN": "arn:aws:codebuild:us-east-2:123:project/p-s-a",
        "CODEBUILD_BUILD_IMAGE": LOCAL_BUILD_IMAGE,
        "CODEBUILD_INITIATOR": "codepipeline/my-demo-pipeline",
        "CODEBUILD_BUILD_SUCCEEDING": "1",
        "CODEBUILD_START_TIME": "1700000000123",
        "CODEBUILD_RESOLVED_SOURCE_VERSION": "abc123",
        "AWS_REGION": "us-east-2",
        "AWS_DEFAULT_REGION": "us-east-2",
    }
    bare = codebuild_environment(
        build=build,
        pipeline_name="p",
        aws_region=None,
        resolved_source_version=None,
        start_time_ms=1,
    )
    for absent in ("CODEBUILD_RESOLVED_SOURCE_VERSION", "AWS_REGION", "AWS_DEFAULT_REGION"):
        assert absent not in bare


def test_compose_environment_precedence() -> None:
    env, reserved = compose_environment(
        host={"PATH": "/usr/bin", "AWS_REGION": "host-region", "HOME": "/home/pipebot"},
        codebuild={
            "AWS_REGION": "eu-west-1",
            "CODEBUILD_BUILD_ID": "p:u",
            "CODEBUILD_SRC_DIR": "/w",
        },
        declared={
            "AWS_REGION": "us-west-2",
            "CODEBUILD_BUILD_ID": "mine",
            "CODEBUILD_SRC_DIR": "/elsewhere",
            "CODEBUILD_MY_FLAG": "on",
            "GREETING": "hi",
        },
    )
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/pipebot",
        "AWS_REGION": "us-west-2",  # the action's variable replaces the build image's
        "CODEBUILD_BUILD_ID": "p:u",  # reserved: CodeBuild's value stays
        "CODEBUILD_SRC_DIR": "/w",
        "CODEBUILD_MY_FLAG": "on",  # not one CodeBuild sets: passed on
        "GREETING": "hi",
    }
    assert reserved == ["CODEBUILD_BUILD_ID", "CODEBUILD_SRC_DIR"]


def test_notes_are_logged_before_the_commands(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    log_path = tmp_path / "logs" / "action.log"
    proc = start_commands(
        commands=["echo ran"],
        workdir=workdir,
        env=dict(os.environ),
        log_path=log_path,
        variables_path=None,
        notes=["first note", "second note"],
    )
    assert proc.wait(timeout=30) == 0
    assert log_path.read_text().startswith(
        "[Container] first note\n[Container] second note\n[Container] Running command echo ran\n"
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
