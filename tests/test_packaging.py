"""What ``make run`` and ``make test`` install (issue 12, item 14): running needs the package
and its dependencies only (about 135 MB of virtualenv, against 490 MB with the development
tools); the checks add the ``dev`` extra. The license is declared the PEP 639 way, which
setuptools builds without a deprecation warning; ``make run`` migrates once."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEV_TOOLS = ("pytest", "pytest-timeout", "hypothesis", "moto", "ruff", "mypy", "playwright")


def _name(requirement: str) -> str:
    found = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert found is not None, requirement
    return found.group(0).lower()


def _pyproject() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_running_needs_no_development_tool_and_the_dev_extra_has_them() -> None:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    runtime = {_name(r) for r in project["dependencies"]}
    assert runtime.isdisjoint(DEV_TOOLS), runtime & set(DEV_TOOLS)
    dev = {_name(r) for r in project["optional-dependencies"]["dev"]}
    assert set(DEV_TOOLS) <= dev


def test_the_license_is_an_spdx_expression_built_by_a_setuptools_that_reads_it() -> None:
    pyproject = _pyproject()
    project = pyproject["project"]
    assert isinstance(project, dict)
    assert project["license"] == "MIT"  # PEP 639; a { text = ... } table is deprecated
    build = pyproject["build-system"]
    assert isinstance(build, dict)
    setuptools = next(r for r in build["requires"] if _name(r) == "setuptools")
    minimum = re.search(r">=\s*(\d+)", setuptools)
    assert minimum is not None and int(minimum.group(1)) >= 77, setuptools


def _dry_run(target: str) -> str:
    """What ``make <target>`` would run on a clean clone (a virtualenv that does not exist
    yet), without running it."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("SLACK_BOT_TOKEN", "MAKEFLAGS")}
    result = subprocess.run(
        ["make", "-n", "-B", target, "VENV=/nonexistent/pipebot-venv"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_make_run_installs_the_package_alone_and_make_test_adds_the_dev_extra() -> None:
    run = _dry_run("run")
    assert "python3 -m venv /nonexistent/pipebot-venv" in run  # a clean clone works
    assert "pip install --quiet -e .\n" in run
    assert "[dev]" not in run
    # The sandbox and serve migrate first: a separate `pipebot migrate` said it twice.
    assert "pipebot migrate" not in run
    assert "pipebot sandbox" in run and "pipebot serve" in run

    test = _dry_run("test")
    assert "python3 -m venv /nonexistent/pipebot-venv" in test
    assert "pip install --quiet -e '.[dev]'" in test
    for step in ("ruff check .", "mypy", "pytest -q", "-m reliability"):
        assert step in test, step
    ci = (REPO / ".ci" / "run").read_text()
    assert [line for line in ci.splitlines() if "make" in line.split()] == ["exec make test"]


def test_the_wheel_builds_without_a_setuptools_warning(tmp_path: Path) -> None:
    """pip builds the wheel as ``make run`` does, in an isolated build environment with
    the setuptools pyproject.toml asks for; from a copy of what the Dockerfile copies, so
    the build leaves nothing in the working tree."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("bot", "handlers", "storage", "sandbox"):
        shutil.copytree(
            REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", str(source), "-w", str(wheels)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0 and "Could not find a version" in result.stdout + result.stderr:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("no package index to fetch setuptools from", pytrace=False)
        pytest.skip("no package index to fetch setuptools from")
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "SetuptoolsDeprecationWarning" not in output
    assert "as a TOML table is deprecated" not in output
    (wheel,) = wheels.glob("pipebot-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    assert "License-Expression: MIT" in text
