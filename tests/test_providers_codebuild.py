"""CodeBuild (Build and Test / AWS / CodeBuild) on the embedded engine.

The contract is ../shared/docs/local-providers.md, "CodeBuild"; the rules are AWS's buildspec
reference (build-spec-ref.html), build phase transitions (view-build-details-phases.html),
environment variables (build-env-ref-env-vars.html) and the CodePipeline CodeBuild action
reference (action-reference-CodeBuild.html).

Two tiers: unit tests of the runner (``bot.engine.providers.codebuild``, a real shell, no
database) through ``run_build``, which sequences the steps exactly as the worker does; and
scenario tests through ``LocalCodePipeline`` on SQLite and PostgreSQL (the ``engine`` fixture),
every response checked against botocore's output shape.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError

from bot.engine import codebuild_projects
from bot.engine.declaration import validate_declaration
from bot.engine.errors import DeclarationError
from bot.engine.providers import codebuild, commands
from tests.helpers import commit, pipeline, source_action, wait_for
from tests.shapecheck import assert_output_shape

# --------------------------------------------------------------------------- the runner


def run_build(
    tmp_path: Path,
    buildspec: Mapping[str, Any] | str | None,
    *,
    files: Mapping[str, str] | None = None,
    configuration: Mapping[str, Any] | None = None,
    registry: Mapping[str, Any] | None = None,
    outputs: tuple[str, ...] = (),
    secondary: Mapping[str, Mapping[str, str]] | None = None,
    kill_when: Path | None = None,
) -> tuple[codebuild.BuildResult, str, Path]:
    """Run one build as the worker does: (result, log text, artifacts root).

    ``buildspec`` (a mapping or YAML text) is written as ``buildspec.yml`` in the primary
    source ``SourceArtifact``; ``secondary`` adds more input artifacts. With ``kill_when``, the
    build's process group is killed (as an abandon does) once that file exists.
    """
    source = tmp_path / "inputs" / "SourceArtifact"
    source.mkdir(parents=True, exist_ok=True)
    for name, content in (files or {}).items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(content)
    if buildspec is not None:
        text = buildspec if isinstance(buildspec, str) else yaml.safe_dump(dict(buildspec))
        (source / "buildspec.yml").write_text(text)
    inputs = {"SourceArtifact": source}
    for name, contents in (secondary or {}).items():
        path = tmp_path / "inputs" / name
        path.mkdir(parents=True, exist_ok=True)
        for file, content in contents.items():
            (path / file).write_text(content)
        inputs[name] = path
    registry_path = tmp_path / "codebuild-projects.yml"
    if registry is not None:
        registry_path.write_text(yaml.safe_dump(dict(registry)))
    config = {"ProjectName": "demo-project", **(configuration or {})}
    if len(inputs) > 1:
        config.setdefault("PrimarySource", "SourceArtifact")
    workdir = tmp_path / "work" / "build"
    log_path = tmp_path / "logs" / "build.log"
    artifacts = tmp_path / "artifacts"
    src_env = commands.prepare_workdir(
        workdir=workdir,
        primary_input=source,
        secondary_inputs={n: p for n, p in inputs.items() if n != "SourceArtifact"},
    )
    plan = codebuild.plan_build(
        configuration=config, inputs=list(inputs), source_root=workdir, registry=registry_path
    )
    build = commands.Build(
        project=plan.project,
        uuid="00000000-0000-0000-0000-000000000001",
        number=codebuild.next_build_number(data_dir=tmp_path, project=plan.project),
        region="eu-west-1",
        account="123456789012",
    )
    codebuild_env = commands.codebuild_environment(
        build=build,
        pipeline_name="demo",
        aws_region="eu-west-1",
        resolved_source_version="abc123",
        start_time_ms=0,
    )
    env, _ = commands.compose_environment(
        host=commands.host_environment(os.environ),
        codebuild={**src_env, **codebuild_env},
        declared=plan.environment,
    )
    results_path = tmp_path / "work" / "build.phases"
    variables_path = tmp_path / "work" / "build.env"
    proc = codebuild.start_build(
        plan=plan,
        workdir=workdir,
        env=env,
        log_path=log_path,
        results_path=results_path,
        variables_path=variables_path,
    )
    stopped = None
    if kill_when is not None:
        wait_for(kill_when.exists, timeout=30, what="the build to reach the kill point")
        commands.kill_process_group(proc.pid)
        stopped = "was stopped (signal 9)"
    proc.wait(timeout=60)
    result = codebuild.finish_build(
        plan=plan,
        workdir=workdir,
        log_path=log_path,
        results_path=results_path,
        variables_path=variables_path,
        outputs=outputs,
        destination=lambda name: artifacts / name,
        stopped=stopped,
        log_tail=commands.log_tail(log_path=log_path),
    )
    return result, log_path.read_text(), artifacts


def spec(phases: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {"version": 0.2, "phases": dict(phases), **extra}


def marker(tmp_path: Path, name: str) -> str:
    """A command leaving ``<tmp>/marks/<name>`` behind: proof that it ran."""
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    return f"touch {shlex.quote(str(marks / name))}"


def ran(tmp_path: Path) -> set[str]:
    marks = tmp_path / "marks"
    return {p.name for p in marks.iterdir()} if marks.exists() else set()


def statuses(result: codebuild.BuildResult) -> dict[str, str]:
    return {p.phase.label: p.status for p in result.phases}


@pytest.mark.parametrize("shell", [None, "bash", "/bin/sh"])
def test_one_shell_carries_cd_and_variables_from_phase_to_phase(
    tmp_path: Path, shell: str | None
) -> None:
    out = tmp_path / "seen"
    result, log, _ = run_build(
        tmp_path,
        spec(
            {
                "install": {"commands": ["mkdir -p sub/dir", "cd sub", "LOCAL=one"]},
                "pre_build": {"commands": ["export EXPORTED=two", "cd dir"]},
                "build": {"commands": [f'echo "$(pwd) $LOCAL $EXPORTED" > {out}']},
            },
            **({"env": {"shell": shell}} if shell else {}),
        ),
    )
    assert result.succeeded, result.summary
    path, local, exported = out.read_text().split()
    assert path.endswith("/sub/dir")
    assert (local, exported) == ("one", "two")
    assert result.summary.startswith("Build succeeded (INSTALL, PRE_BUILD, BUILD)")
    for label in ("INSTALL", "PRE_BUILD", "BUILD"):
        assert f"[Container] Entering phase {label}" in log
        assert f"[Container] Phase complete: {label} State: SUCCEEDED" in log
    assert "[Container] Running command cd sub" in log


def test_commands_yaml_reads_as_booleans_or_numbers_run_as_written(tmp_path: Path) -> None:
    """``- true`` and ``- false`` are YAML booleans: CodeBuild runs them as the commands
    ``true`` and ``false``, not ``True`` (found by the engine benchmark)."""
    text = "version: 0.2\nphases:\n  build:\n    commands:\n      - true\n      - false\n"
    result, log, _ = run_build(tmp_path, text)
    assert not result.succeeded
    assert "[Container] Running command true" in log
    assert "Command did not exit successfully false exit status 1" in log


@pytest.mark.parametrize("failing", ["install", "pre_build"])
def test_a_failed_install_or_pre_build_skips_every_later_phase(
    tmp_path: Path, failing: str
) -> None:
    phases = {name: {"commands": [marker(tmp_path, name)]} for name in codebuild.PHASES}
    phases[failing] = {"commands": ["false", marker(tmp_path, f"{failing}-after")]}
    result, log, _ = run_build(tmp_path, spec(phases))
    assert not result.succeeded
    before = codebuild.PHASES[: codebuild.PHASES.index(failing)]
    assert ran(tmp_path) == set(before)
    label = failing.upper()
    assert statuses(result)[label] == "FAILED"
    later = codebuild.PHASES[codebuild.PHASES.index(failing) + 1 :]
    assert {statuses(result)[p.upper()] for p in later} == {"SKIPPED"}
    assert result.summary.startswith(f"Build failed in phase {label}: `false` exited with status 1")
    assert f"[Container] Phase complete: {label} State: FAILED" in log
    assert "[Container] Command did not exit successfully false exit status 1" in log
    assert "Message: Error while executing command: false. Reason: exit status 1" in log
    assert "[Container] Phase skipped: POST_BUILD" in log


def test_a_failed_build_still_runs_post_build_which_sees_the_build_failing(
    tmp_path: Path,
) -> None:
    seen = tmp_path / "succeeding"
    result, _, _ = run_build(
        tmp_path,
        spec(
            {
                "pre_build": {"commands": [f"echo $CODEBUILD_BUILD_SUCCEEDING > {seen}.pre"]},
                "build": {"commands": ["exit_code() { return 3; }; exit_code"]},
                "post_build": {"commands": [f"echo $CODEBUILD_BUILD_SUCCEEDING > {seen}"]},
            }
        ),
    )
    assert not result.succeeded
    assert Path(f"{seen}.pre").read_text().strip() == "1"
    assert seen.read_text().strip() == "0"
    assert statuses(result) == {
        "PRE_BUILD": "SUCCEEDED",
        "BUILD": "FAILED",
        "POST_BUILD": "SUCCEEDED",
    }
    assert "exited with status 3" in result.summary


def test_on_failure_continue_runs_later_phases_and_the_build_still_fails(tmp_path: Path) -> None:
    seen = tmp_path / "succeeding"
    result, _, _ = run_build(
        tmp_path,
        spec(
            {
                "install": {"on-failure": "CONTINUE", "commands": ["false"]},
                "pre_build": {"commands": [marker(tmp_path, "pre_build")]},
                "build": {"commands": [f"echo $CODEBUILD_BUILD_SUCCEEDING > {seen}"]},
            }
        ),
    )
    assert not result.succeeded
    assert ran(tmp_path) == {"pre_build"}
    assert seen.read_text().strip() == "0"
    assert statuses(result) == {"INSTALL": "FAILED", "PRE_BUILD": "SUCCEEDED", "BUILD": "SUCCEEDED"}
    assert result.summary.startswith("Build failed in phase INSTALL")


def test_finally_runs_after_a_failed_command_and_the_rest_of_the_commands_are_skipped(
    tmp_path: Path,
) -> None:
    result, _, _ = run_build(
        tmp_path,
        spec(
            {
                "build": {
                    "commands": [marker(tmp_path, "first"), "false", marker(tmp_path, "skipped")],
                    "finally": [marker(tmp_path, "finally-1"), marker(tmp_path, "finally-2")],
                },
                "post_build": {"commands": [marker(tmp_path, "post")]},
            }
        ),
    )
    assert not result.succeeded
    assert ran(tmp_path) == {"first", "finally-1", "finally-2", "post"}
    assert statuses(result)["BUILD"] == "FAILED"


def test_a_failing_finally_command_fails_its_phase(tmp_path: Path) -> None:
    result, _, _ = run_build(
        tmp_path,
        spec(
            {
                "install": {"commands": ["true"], "finally": ["false", marker(tmp_path, "x")]},
                "build": {"commands": [marker(tmp_path, "build")]},
            }
        ),
    )
    assert not result.succeeded
    assert ran(tmp_path) == set()  # the rest of finally is skipped; INSTALL aborts the build
    assert "INSTALL: `false (finally)` exited with status 1" in result.summary


def test_a_killed_build_fails_naming_the_phase_it_was_in(tmp_path: Path) -> None:
    started = tmp_path / "marks" / "started"
    result, log, _ = run_build(
        tmp_path,
        spec(
            {
                "install": {"commands": ["true"]},
                "build": {"commands": [marker(tmp_path, "started"), "sleep 30"]},
                "post_build": {"commands": [marker(tmp_path, "post")]},
            }
        ),
        kill_when=started,
    )
    assert not result.succeeded
    assert statuses(result) == {
        "INSTALL": "SUCCEEDED",
        "BUILD": "INTERRUPTED",
        "POST_BUILD": "NOT_RUN",
    }
    assert result.summary.startswith("Build was stopped (signal 9) in phase BUILD.")
    assert ran(tmp_path) == {"started"}
    assert "[Container] Running command sleep 30" in log


def test_variable_precedence_action_over_project_over_buildspec(tmp_path: Path) -> None:
    out = tmp_path / "values"
    result, _, _ = run_build(
        tmp_path,
        spec(
            {"build": {"commands": [f'echo "$A $B $C $D" > {out}']}},
            env={"variables": {"A": "buildspec", "B": "buildspec", "C": "buildspec"}},
        ),
        registry={
            "demo-project": {
                "environmentVariables": [
                    {"name": "B", "value": "project"},
                    {"name": "C", "value": "project"},
                    {"name": "D", "value": "project"},
                ]
            }
        },
        configuration={
            "EnvironmentVariables": json.dumps(
                [{"name": "C", "value": "action", "type": "PLAINTEXT"}]
            )
        },
    )
    assert result.succeeded, result.summary
    assert out.read_text().split() == ["buildspec", "project", "action", "project"]


def test_codebuild_environment_variables(tmp_path: Path) -> None:
    out = tmp_path / "env"
    names = [
        "CODEBUILD_SRC_DIR",
        "CODEBUILD_SRC_DIR_Extra",
        "CODEBUILD_BUILD_ID",
        "CODEBUILD_BUILD_NUMBER",
        "CODEBUILD_RESOLVED_SOURCE_VERSION",
        "CODEBUILD_INITIATOR",
        "CODEBUILD_BUILD_SUCCEEDING",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ]
    line = " ".join(f"${name}" for name in names)
    result, _, _ = run_build(
        tmp_path,
        spec({"build": {"commands": [f'echo "{line}" > {out}', "cat $CODEBUILD_SRC_DIR_Extra/x"]}}),
        secondary={"Extra": {"x": "extra\n"}},
    )
    assert result.succeeded, result.summary
    values = dict(zip(names, out.read_text().split(), strict=True))
    assert values["CODEBUILD_SRC_DIR"] == str((tmp_path / "work" / "build").absolute())
    assert values["CODEBUILD_SRC_DIR_Extra"].endswith("/Extra")
    assert values["CODEBUILD_BUILD_ID"] == "demo-project:00000000-0000-0000-0000-000000000001"
    assert values["CODEBUILD_BUILD_NUMBER"] == "1"
    assert values["CODEBUILD_RESOLVED_SOURCE_VERSION"] == "abc123"
    assert values["CODEBUILD_INITIATOR"] == "codepipeline/demo"
    assert values["CODEBUILD_BUILD_SUCCEEDING"] == "1"
    assert values["AWS_REGION"] == values["AWS_DEFAULT_REGION"] == "eu-west-1"


def test_build_numbers_count_up_per_project(tmp_path: Path) -> None:
    numbers = [codebuild.next_build_number(data_dir=tmp_path, project="one") for _ in range(3)]
    assert numbers == [1, 2, 3]
    assert codebuild.next_build_number(data_dir=tmp_path, project="two") == 1
    with pytest.raises(codebuild.CodeBuildError):
        codebuild.next_build_number(data_dir=tmp_path, project="../escape")


def test_exported_variables_are_read_after_post_build(tmp_path: Path) -> None:
    result, log, _ = run_build(
        tmp_path,
        spec(
            {
                "build": {"commands": ["VERSION=1.0", "export TAG=build"]},
                "post_build": {"commands": ["TAG=post"]},
            },
            env={"exported-variables": ["VERSION", "TAG", "NEVER_SET"]},
        ),
    )
    assert result.succeeded, result.summary
    assert dict(result.variables) == {"VERSION": "1.0", "TAG": "post"}
    assert "Exported variable NEVER_SET was never set, so it is not exported" in log


def test_artifact_options(tmp_path: Path) -> None:
    files = {
        "dist/app.js": "app",
        "dist/lib/util.js": "util",
        "dist/lib/util.map": "map",
        "dist/.env": "dot",
        "dist/test/skip.js": "test",
        "src/main.py": "src",
    }
    result, log, artifacts = run_build(
        tmp_path,
        spec(
            {"build": {"commands": ["true"]}},
            artifacts={
                "base-directory": "dist",
                "files": ["**/*"],
                "exclude-paths": ["**/*.map", "test/**/*"],
                "name": "ignored-name",
            },
        ),
        files=files,
        outputs=("BuildArtifact",),
    )
    assert result.succeeded, result.summary
    root = artifacts / "BuildArtifact"
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    # Relative to base-directory (not included), dotfiles included, exclusions applied.
    assert found == [".env", "app.js", "lib/util.js"]
    assert result.produced == ("BuildArtifact",)
    assert "Output artifact BuildArtifact: 3 files" in log


def test_discard_paths_flattens_and_a_pattern_matching_nothing_fails(tmp_path: Path) -> None:
    result, _, artifacts = run_build(
        tmp_path / "a",
        spec(
            {"build": {"commands": ["true"]}},
            artifacts={"files": ["dist/**/*.js"], "discard-paths": "yes"},
        ),
        files={"dist/a.js": "a", "dist/deep/b.js": "b", "other.js": "o"},
        outputs=("Out",),
    )
    assert result.succeeded
    assert sorted(p.name for p in (artifacts / "Out").iterdir()) == ["a.js", "b.js"]
    with pytest.raises(codebuild.CodeBuildError, match="no matching artifact paths"):
        run_build(
            tmp_path / "b",
            spec({"build": {"commands": ["true"]}}, artifacts={"files": ["missing/**/*"]}),
            outputs=("Out",),
        )


def test_secondary_artifacts_match_output_artifact_names(tmp_path: Path) -> None:
    buildspec = spec(
        {"build": {"commands": ["mkdir -p web api", "echo w > web/index.html", "echo a > api/x"]}},
        artifacts={
            "files": ["**/*"],
            "secondary-artifacts": {
                "WebOutput": {"base-directory": "web", "files": ["**/*"]},
                "ApiOutput": {"base-directory": "api", "files": ["**/*"]},
            },
        },
    )
    result, _, artifacts = run_build(tmp_path / "ok", buildspec, outputs=("WebOutput", "ApiOutput"))
    assert result.succeeded, result.summary
    assert [p.name for p in (artifacts / "WebOutput").iterdir()] == ["index.html"]
    assert [p.name for p in (artifacts / "ApiOutput").iterdir()] == ["x"]
    with pytest.raises(codebuild.CodeBuildError, match="Output artifacts Other match no"):
        run_build(tmp_path / "bad", buildspec, outputs=("WebOutput", "Other"))


JUNIT = """<?xml version="1.0"?>
<testsuites>
  <testsuite name="unit">
    {cases}
    <testcase classname="tests.test_math" name="test_fails"><failure message="1 != 2"/></testcase>
  </testsuite>
</testsuites>
"""


def junit(passed: int) -> str:
    cases = "\n".join(
        f'<testcase classname="tests.test_math" name="test_{i}"/>' for i in range(passed)
    )
    return JUNIT.format(cases=cases)


def test_junit_reports_are_summarised_with_failed_test_names(tmp_path: Path) -> None:
    result, log, _ = run_build(
        tmp_path,
        spec(
            {"build": {"commands": ["mkdir -p out", "cp report.xml out/junit.xml", "exit 1"]}},
            reports={"unit-tests": {"files": ["**/*.xml"], "base-directory": "out"}},
        ),
        files={"report.xml": junit(11)},
    )
    assert not result.succeeded
    assert result.report == codebuild.TestReport(
        total=12, passed=11, failed=1, failed_names=("tests.test_math.test_fails",)
    )
    lines = result.summary.splitlines()
    assert "12 tests: 11 passed, 1 failed" in lines
    assert "Failed tests: tests.test_math.test_fails" in lines
    report, failed = codebuild.parse_test_summary(result.summary)
    assert report is not None and (report.total, report.passed, report.failed) == (12, 11, 1)
    assert failed == ["tests.test_math.test_fails"]
    assert "Report group unit-tests: read junit.xml" in log


def test_errors_count_as_failures_and_skipped_tests_are_counted(tmp_path: Path) -> None:
    xml = """<testsuite name="s">
      <testcase name="ok"/>
      <testcase classname="c" name="crashed"><error message="boom"/></testcase>
      <testcase classname="c" name="later"><skipped/></testcase>
      <testsuite name="nested"><testcase classname="n" name="deep"><failure/></testcase></testsuite>
    </testsuite>"""
    result, _, _ = run_build(
        tmp_path,
        spec({"build": {"commands": ["true"]}}, reports={"g": {"files": ["r.xml"]}}),
        files={"r.xml": xml},
    )
    assert result.report == codebuild.TestReport(
        total=4, passed=1, failed=2, skipped=1, failed_names=("c.crashed", "n.deep")
    )
    assert "4 tests: 1 passed, 2 failed, 1 skipped" in result.summary.splitlines()
    report, failed = codebuild.parse_test_summary(result.summary)
    assert report == codebuild.TestReport(total=4, passed=1, failed=2, skipped=1)
    assert failed == ["c.crashed", "n.deep"]


def test_a_file_that_is_not_junit_is_skipped_and_named(tmp_path: Path) -> None:
    result, log, _ = run_build(
        tmp_path,
        spec(
            {"build": {"commands": ["true"]}},
            reports={"group": {"files": ["*.xml"]}},
        ),
        files={"good.xml": junit(2), "bad.xml": "not xml"},
    )
    assert result.succeeded
    assert "3 tests: 2 passed, 1 failed" in result.summary.splitlines()
    assert "Report group group: bad.xml is not JUnit XML" in log


@pytest.mark.parametrize(
    ("env", "configuration", "registry", "named"),
    [
        (
            {"parameter-store": {"DB_PASSWORD": "/prod/db"}},
            {},
            None,
            ["parameter-store DB_PASSWORD"],
        ),
        ({"secrets-manager": {"TOKEN": "prod/token:key"}}, {}, None, ["secrets-manager TOKEN"]),
        (
            {},
            {},
            {
                "demo-project": {
                    "environmentVariables": [
                        {"name": "K", "value": "/k", "type": "PARAMETER_STORE"}
                    ]
                }
            },
            ["project variable K (PARAMETER_STORE)"],
        ),
        (
            {"parameter-store": {"A": "/a"}, "secrets-manager": {"B": "b"}},
            {"EnvironmentVariables": '[{"name":"C","value":"c","type":"SECRETS_MANAGER"}]'},
            None,
            ["parameter-store A", "secrets-manager B", "EnvironmentVariables C (SECRETS_MANAGER)"],
        ),
    ],
)
def test_secrets_are_refused_by_name_before_any_command_runs(
    tmp_path: Path,
    env: dict[str, Any],
    configuration: dict[str, str],
    registry: dict[str, Any] | None,
    named: list[str],
) -> None:
    buildspec = spec({"install": {"commands": [marker(tmp_path, "ran")]}}, env=env)
    with pytest.raises(codebuild.CodeBuildError) as info:
        run_build(tmp_path, buildspec, configuration=configuration, registry=registry)
    for name in named:
        assert name in info.value.summary
    assert "never runs with a secret silently empty" in info.value.summary
    assert ran(tmp_path) == set()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 0.1\nphases: {build: {commands: [true]}}", "version 0.1 is not supported"),
        ("version: 0.2\nphases: {compile: {commands: [true]}}", "unknown key compile in phases"),
        ("version: 0.2\nphases: {build: {on-failure: RETRY, commands: [x]}}", "RETRY needs"),
        ("version: 0.2\nenv: {shell: zsh}", "env/shell 'zsh'"),
        ("version: 0.2\nreports: {r: {files: [a], file-format: NUNITXML}}", "JUNITXML only"),
        ("version: 0.2\nartifacts: {files: [../x]}", "must stay inside"),
        ("version: [0.2", "not valid YAML"),
    ],
)
def test_buildspecs_that_cannot_run_locally_are_refused(text: str, message: str) -> None:
    with pytest.raises(codebuild.CodeBuildError, match=message.replace("(", r"\(")):
        codebuild.parse_buildspec(text, origin="buildspec.yml")


def test_registry_inline_buildspec_path_and_override(tmp_path: Path) -> None:
    out = tmp_path / "which"
    inline = yaml.safe_dump(spec({"build": {"commands": [f"echo inline > {out}"]}}))
    result, log, _ = run_build(
        tmp_path / "a", None, registry={"demo-project": {"buildspec": inline}}
    )
    assert result.succeeded, result.summary
    assert out.read_text().strip() == "inline"
    assert "the inline buildspec of project demo-project" in log

    result, _, _ = run_build(
        tmp_path / "b",
        None,
        files={
            "ci/spec.yml": yaml.safe_dump(spec({"build": {"commands": [f"echo path > {out}"]}}))
        },
        registry={"demo-project": {"buildspec": "ci/spec.yml"}},
    )
    assert result.succeeded, result.summary
    assert out.read_text().strip() == "path"

    with pytest.raises(codebuild.CodeBuildError, match="was not found in the primary source"):
        run_build(tmp_path / "c", None, registry={"demo-project": {"buildspec": "nope.yml"}})

    configured = tmp_path / "elsewhere.yml"
    assert codebuild_projects.registry_path(data_dir=tmp_path, configured=configured) == (
        configured
    )
    assert codebuild_projects.registry_path(data_dir=tmp_path, configured=None) == (
        tmp_path / "codebuild-projects.yml"
    )


def test_a_malformed_registry_is_named(tmp_path: Path) -> None:
    path = tmp_path / "codebuild-projects.yml"
    path.write_text("demo: {buildspec: x, colour: blue}")
    with pytest.raises(codebuild_projects.ProjectRegistryError, match="unknown keys colour"):
        codebuild_projects.load_registry(path)
    path.write_text("demo: {timeoutInMinutes: 1}")
    with pytest.raises(codebuild_projects.ProjectRegistryError, match="timeoutInMinutes"):
        codebuild_projects.load_registry(path)


# --------------------------------------------------------------------------- declarations


def codebuild_action(
    name: str,
    *,
    category: str = "Build",
    project: str = "demo-project",
    inputs: tuple[str, ...] = ("SourceArtifact",),
    outputs: tuple[str, ...] = (),
    run_order: int = 1,
    **configuration: Any,
) -> dict[str, Any]:
    action: dict[str, Any] = {
        "name": name,
        "actionTypeId": {
            "category": category,
            "owner": "AWS",
            "provider": "CodeBuild",
            "version": "1",
        },
        "runOrder": run_order,
        "configuration": {"ProjectName": project, **configuration},
        "inputArtifacts": [{"name": n} for n in inputs],
        "outputArtifacts": [{"name": n} for n in outputs],
    }
    return action


@pytest.mark.parametrize(
    ("configuration", "inputs", "message"),
    [
        ({"BatchEnabled": "true"}, ("SourceArtifact",), 'BatchEnabled "true"'),
        (
            {
                "EnvironmentVariables": json.dumps(
                    [
                        {"name": "DB", "value": "/db", "type": "PARAMETER_STORE"},
                        {"name": "KEY", "value": "k", "type": "SECRETS_MANAGER"},
                    ]
                )
            },
            ("SourceArtifact",),
            "DB (PARAMETER_STORE), KEY (SECRETS_MANAGER)",
        ),
        ({"EnvironmentVariables": "{not json"}, ("SourceArtifact",), "JSON array"),
        ({}, ("SourceArtifact", "Other"), "PrimarySource is required"),
        ({"PrimarySource": "Nope"}, ("SourceArtifact",), "PrimarySource 'Nope'"),
        ({"Colour": "blue"}, ("SourceArtifact",), "'Colour' is not a configuration property"),
    ],
)
def test_create_refuses_what_cannot_run_locally(
    configuration: dict[str, str], inputs: tuple[str, ...], message: str
) -> None:
    sources = [source_action()]
    if "Other" in inputs:  # a second source, in the first stage as AWS requires
        other = {**source_action(name="Other"), "outputArtifacts": [{"name": "Other"}]}
        sources.append({**other, "namespace": "OtherVariables"})
    stages = [("Source", sources)]
    action = codebuild_action("Build", inputs=inputs)
    action["configuration"].update(configuration)
    stages.append(("Build", [action]))
    with pytest.raises(DeclarationError) as info:
        validate_declaration(pipeline("p", stages), local=True)
    assert info.value.code == "InvalidActionDeclarationException"
    assert message in str(info.value)


def test_create_accepts_a_plain_codebuild_action() -> None:
    action = codebuild_action(
        "Build",
        category="Test",
        EnvironmentVariables='[{"name":"A","value":"#{SourceVariables.CommitId}"}]',
        BatchEnabled="false",
    )
    declaration = validate_declaration(
        pipeline("p", [("Source", [source_action()]), ("Test", [action])]), local=True
    )
    assert declaration["stages"][1]["actions"][0]["actionTypeId"]["provider"] == "CodeBuild"


# --------------------------------------------------------------------------- scenarios

NAME = "codebuild-pipeline"

BUILDSPEC = {
    "version": 0.2,
    "env": {"variables": {"GREETING": "from-buildspec"}, "exported-variables": ["APP_VERSION"]},
    "phases": {
        "install": {"commands": ["echo installing"]},
        "build": {
            "commands": [
                "mkdir -p dist",
                "cp app.txt dist/app.txt",
                'APP_VERSION="$(cat app.txt)-$CODEBUILD_BUILD_NUMBER"',
            ]
        },
        "post_build": {"commands": ['echo "build id $CODEBUILD_BUILD_ID"']},
    },
    "artifacts": {"base-directory": "dist", "files": ["**/*"]},
}

TESTSPEC = {
    "version": 0.2,
    "phases": {
        "build": {
            "commands": [
                'echo "testing $APP_VERSION in $(cat app.txt)" ',
                "mkdir -p reports",
                'python3 "$CODEBUILD_SRC_DIR_SourceArtifact/make_report.py" "$(cat app.txt)"',
                "! grep -q broken app.txt",
            ],
        }
    },
    "reports": {"unit": {"files": ["reports/*.xml"]}},
}

MAKE_REPORT = """import sys
broken = 'broken' in sys.argv[1]
cases = ''.join(f'<testcase classname="suite" name="test_{i}"/>' for i in range(11))
bad = '<testcase classname="suite" name="test_app"><failure message="broken"/></testcase>'
good = '<testcase classname="suite" name="test_app"/>'
with open('reports/junit.xml', 'w') as out:
    out.write(f'<testsuite name="suite">{cases}{bad if broken else good}</testsuite>')
"""


class Pipe:
    """Source -> Build (CodeBuild, exports APP_VERSION) -> Test (CodeBuild Test, JUnit)."""

    def __init__(self, engine: Any, repo: Path, data_dir: Path) -> None:
        self.engine = engine
        self.repo = repo
        (data_dir / codebuild_projects.REGISTRY_FILE).write_text(
            yaml.safe_dump(
                {
                    "app-build": {"environmentVariables": [{"name": "GREETING", "value": "hi"}]},
                    "app-test": {"buildspec": yaml.safe_dump(TESTSPEC)},
                }
            )
        )
        commit(
            repo,
            {"buildspec.yml": yaml.safe_dump(BUILDSPEC), "make_report.py": MAKE_REPORT},
            "buildspecs",
        )

    def create(self) -> str:
        build = codebuild_action("Build", project="app-build", outputs=("BuildArtifact",))
        build["namespace"] = "BuildVariables"
        test = codebuild_action(
            "Test",
            category="Test",
            project="app-test",
            inputs=("BuildArtifact", "SourceArtifact"),
            PrimarySource="BuildArtifact",
            EnvironmentVariables=json.dumps(
                [{"name": "APP_VERSION", "value": "#{BuildVariables.APP_VERSION}"}]
            ),
        )
        declaration = pipeline(
            NAME, [("Source", [source_action()]), ("Build", [build]), ("Test", [test])]
        )
        assert_output_shape("CreatePipeline", self.engine.create_pipeline(pipeline=declaration))
        response = self.engine.list_pipeline_executions(pipelineName=NAME)
        assert_output_shape("ListPipelineExecutions", response)
        return str(response["pipelineExecutionSummaries"][0]["pipelineExecutionId"])

    def wait(self, execution_id: str, status: str) -> None:
        def done() -> bool:
            response = self.engine.get_pipeline_execution(
                pipelineName=NAME, pipelineExecutionId=execution_id
            )
            assert_output_shape("GetPipelineExecution", response)
            return bool(response["pipelineExecution"]["status"] == status)

        wait_for(done, timeout=60, what=f"{execution_id} {status}")

    def actions(self, execution_id: str) -> dict[str, dict[str, Any]]:
        response = self.engine.list_action_executions(
            pipelineName=NAME, filter={"pipelineExecutionId": execution_id}
        )
        assert_output_shape("ListActionExecutions", response)
        return {a["actionName"]: a for a in response["actionExecutionDetails"]}

    def start(self) -> str:
        response = self.engine.start_pipeline_execution(name=NAME)
        assert_output_shape("StartPipelineExecution", response)
        return str(response["pipelineExecutionId"])


@pytest.fixture
def p(engine: Any, tmp_path: Path, repos_dir: Path) -> Pipe:
    return Pipe(engine, repos_dir / "app", tmp_path / "data")


def test_build_then_test_with_an_exported_variable_and_a_junit_report(p: Pipe) -> None:
    first = p.create()
    p.wait(first, "Succeeded")
    actions = p.actions(first)
    build, test = actions["Build"], actions["Test"]
    assert build["status"] == test["status"] == "Succeeded"
    assert build["output"]["outputVariables"] == {"APP_VERSION": "v1-1"}
    assert build["output"]["executionResult"]["externalExecutionSummary"] == (
        "Build succeeded (INSTALL, BUILD, POST_BUILD)."
    )
    test_summary = test["output"]["executionResult"]["externalExecutionSummary"]
    assert test_summary.splitlines() == [
        "Build succeeded (BUILD).",
        "12 tests: 12 passed, 0 failed",
    ]

    build_log = p.engine.get_action_log(actionExecutionId=build["actionExecutionId"])
    assert "[Container] Entering phase INSTALL" in build_log
    assert "[Container] Phase complete: POST_BUILD State: SUCCEEDED" in build_log
    assert f"build id app-build:{build['actionExecutionId']}" in build_log
    test_log = p.engine.get_action_log(actionExecutionId=test["actionExecutionId"])
    # The downstream action resolved #{BuildVariables.APP_VERSION}; its work directory is the
    # primary source (BuildArtifact: dist/ without the dist/ prefix).
    assert "testing v1-1 in v1" in test_log

    # A second run counts the project's builds up; a broken app fails the tests, by name.
    commit(p.repo, {"app.txt": "broken\n"}, "break it")
    second = p.start()
    p.wait(second, "Failed")
    actions = p.actions(second)
    assert actions["Build"]["output"]["outputVariables"] == {"APP_VERSION": "broken-2"}
    failed = actions["Test"]
    assert failed["status"] == "Failed"
    summary = failed["output"]["executionResult"]["externalExecutionSummary"]
    lines = summary.splitlines()
    assert (
        lines[0] == "Build failed in phase BUILD: `! grep -q broken app.txt` exited with status 1."
    )
    assert "12 tests: 11 passed, 1 failed" in lines
    assert "Failed tests: suite.test_app" in lines


def test_a_secret_in_the_buildspec_fails_the_action_before_any_command(
    engine: Any, repos_dir: Path, tmp_path: Path
) -> None:
    ran_file = tmp_path / "ran"
    commit(
        repos_dir / "app",
        {
            "buildspec.yml": yaml.safe_dump(
                {
                    "version": 0.2,
                    "env": {"parameter-store": {"DB_PASSWORD": "/prod/db"}},
                    "phases": {"build": {"commands": [f"touch {ran_file}"]}},
                }
            )
        },
        "secret",
    )
    declaration = pipeline(
        NAME, [("Source", [source_action()]), ("Build", [codebuild_action("Build")])]
    )
    engine.create_pipeline(pipeline=declaration)
    execution = engine.list_pipeline_executions(pipelineName=NAME)["pipelineExecutionSummaries"][0]
    wait_for(
        lambda: (
            engine.get_pipeline_execution(
                pipelineName=NAME, pipelineExecutionId=execution["pipelineExecutionId"]
            )["pipelineExecution"]["status"]
            == "Failed"
        ),
        timeout=60,
    )
    response = engine.list_action_executions(
        pipelineName=NAME, filter={"pipelineExecutionId": execution["pipelineExecutionId"]}
    )
    assert_output_shape("ListActionExecutions", response)
    build = next(a for a in response["actionExecutionDetails"] if a["actionName"] == "Build")
    summary = build["output"]["executionResult"]["externalExecutionSummary"]
    assert "parameter-store DB_PASSWORD" in summary
    assert not ran_file.exists()
    log = engine.get_action_log(actionExecutionId=build["actionExecutionId"])
    assert "parameter-store DB_PASSWORD" in log


def test_create_refuses_batch_builds_through_the_api(engine: Any) -> None:
    declaration = pipeline(
        NAME,
        [
            ("Source", [source_action()]),
            ("Build", [codebuild_action("Build", BatchEnabled="true")]),
        ],
    )
    with pytest.raises(ClientError) as info:
        engine.create_pipeline(pipeline=declaration)
    assert info.value.response["Error"]["Code"] == "InvalidActionDeclarationException"
    assert "BatchEnabled" in info.value.response["Error"]["Message"]


def test_a_build_past_its_timeout_is_killed_and_fails_naming_the_phase(
    engine: Any, repos_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The project's timeoutInMinutes (default 60), shortened to 0.6 s for the test.
    monkeypatch.setattr(codebuild_projects, "DEFAULT_TIMEOUT_MINUTES", 0.01)
    after = tmp_path / "after-sleep"
    commit(
        repos_dir / "app",
        {
            "buildspec.yml": yaml.safe_dump(
                {
                    "version": 0.2,
                    "phases": {"build": {"commands": ["sleep 30", f"touch {after}"]}},
                }
            )
        },
        "slow",
    )
    declaration = pipeline(
        NAME, [("Source", [source_action()]), ("Build", [codebuild_action("Build")])]
    )
    engine.create_pipeline(pipeline=declaration)
    execution = engine.list_pipeline_executions(pipelineName=NAME)["pipelineExecutionSummaries"][0]
    execution_id = execution["pipelineExecutionId"]
    wait_for(
        lambda: (
            engine.get_pipeline_execution(pipelineName=NAME, pipelineExecutionId=execution_id)[
                "pipelineExecution"
            ]["status"]
            == "Failed"
        ),
        timeout=30,
    )
    response = engine.list_action_executions(
        pipelineName=NAME, filter={"pipelineExecutionId": execution_id}
    )
    assert_output_shape("ListActionExecutions", response)
    build = next(a for a in response["actionExecutionDetails"] if a["actionName"] == "Build")
    summary = build["output"]["executionResult"]["externalExecutionSummary"]
    assert summary.startswith(
        "Build timed out after 0.6 seconds (the project's timeoutInMinutes) in phase BUILD."
    )
    assert not after.exists()
