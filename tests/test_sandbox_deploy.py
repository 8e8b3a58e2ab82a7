"""The deployment files agree with the code: Procfile, Dockerfile, compose.yaml.

The image cannot be built where the tests run (no container engine), so this checks what can
be checked without one: every process the Procfile names is a ``pipebot`` command, compose
runs the same ones with PostgreSQL, and the image gets every package the wheel needs.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from bot.cli import _parser

REPO = Path(__file__).resolve().parents[1]


def _procfile() -> dict[str, list[str]]:
    lines = (REPO / "Procfile").read_text().splitlines()
    return {k.strip(): v.split() for k, v in (line.split(":", 1) for line in lines if line)}


def test_procfile_runs_pipebot_commands_that_exist() -> None:
    processes = _procfile()
    assert processes == {
        "release": ["pipebot", "migrate"],
        "web": ["pipebot", "serve"],
        "worker": ["pipebot", "worker"],
    }
    for command in processes.values():
        _parser().parse_args(command[1:])  # exits on an unknown command


def test_compose_runs_the_procfile_with_postgresql() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    for name, command in _procfile().items():
        assert services[name]["command"] == command
    assert services["postgres"]["image"].startswith("postgres:")
    for name in ("release", "web", "worker"):
        environment = services[name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgresql://")
        # Unset Slack variables stay unset: an empty SLACK_APP_TOKEN is refused as malformed.
        assert environment["SLACK_APP_TOKEN"] is None
    web = services["web"]["environment"]
    assert web["PIPEBOT_RUN_WORKER"] == "false" and web["PIPEBOT_MIGRATE_ON_START"] == "false"
    assert services["web"]["depends_on"]["release"]["condition"] == (
        "service_completed_successfully"
    )


def test_the_image_gets_every_package() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert f"COPY {package} ./{package}" in dockerfile, package
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".pipebot" in ignored and ".git" in ignored
