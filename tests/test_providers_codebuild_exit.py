"""A buildspec command that exits the shell itself (``exit 3``): the summary and the log name
the command and its exit status, as CodeBuild's log does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_providers_codebuild import marker, ran, run_build, spec, statuses


@pytest.mark.parametrize("shell", [None, "bash", "/bin/sh"])
def test_exit_in_a_command_names_the_command_and_its_status(
    tmp_path: Path, shell: str | None
) -> None:
    env = {"shell": shell} if shell else {}
    result, log, _ = run_build(
        tmp_path,
        spec(
            {
                "build": {"commands": ["echo building", "exit 3", marker(tmp_path, "after")]},
                "post_build": {"commands": [marker(tmp_path, "post")]},
            },
            **({"env": env} if env else {}),
        ),
    )
    assert not result.succeeded
    assert statuses(result)["BUILD"] == "INTERRUPTED"
    assert "BUILD: `exit 3` exited with status 3" in result.summary
    assert "the shell exited during the phase" not in result.summary
    assert "[Container] Command did not exit successfully exit 3 exit status 3" in log
    assert ran(tmp_path) == set()  # the shell is gone: nothing after it runs


def test_exit_zero_is_not_a_failed_command(tmp_path: Path) -> None:
    result, log, _ = run_build(
        tmp_path, spec({"build": {"commands": ["exit 0", marker(tmp_path, "after")]}})
    )
    assert "Command did not exit successfully" not in log
    assert "exited with status" not in result.summary
