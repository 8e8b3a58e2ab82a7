"""Issue 14, point 5: what a CodeBuild or CodeDeploy action tells a user in Slack.

The failed phase or hook, the test counts with the failed tests' names, and the deployed
revision per deployment group, in ``status`` (per action line) and in the failure reply of a
subscribed channel's thread. End to end on the seed pipeline (``bot.demo``) through the real
engine (SQLite and PostgreSQL), the real Bolt app and the fake Slack: a commit to the demo
site makes its unit tests fail, another makes the staging deployment's ValidateService hook
fail. Plus ``read_facts`` on the engine's own summaries and on summaries it must ignore.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.demo import DEMO_PIPELINE, demo_declaration, ensure_demo_projects, ensure_demo_repository
from bot.engine.providers.codebuild import TestReport as Report
from bot.engine.providers.codebuild import parse_test_summary
from bot.slack import ids
from bot.slack.action_facts import (
    FAILED_TESTS_SHOWN,
    fact_lines,
    log_markers,
    marker_lines,
    read_facts,
)
from tests.blockcheck import refs, texts
from tests.helpers import commit, wait_for
from tests.slack_bot import Bot
from tests.test_notifier import Harness

# =========================================================================== read_facts


def test_build_failure_with_tests_gives_phase_counts_and_names() -> None:
    names = [f"Suite.test_{i}" for i in range(7)]
    summary = (
        "Build failed in phase BUILD: `python3 tests/run.py` exited with status 1.\n"
        "12 tests: 5 passed, 7 failed\n"
        f"Failed tests: {', '.join(names)}\n"
        "[Container] 2026/11/30 05:00:00 Phase complete: BUILD State: FAILED"
    )
    facts = read_facts(summary)
    assert facts == {
        "phases": ["BUILD"],
        "tests": {"total": 12, "passed": 5, "failed": 7, "skipped": 0},
        "failedTests": names[:FAILED_TESTS_SHOWN],
        "moreFailed": 2,
    }
    # The engine reads its own summary the same way (the shapes cannot drift apart).
    report, failed = parse_test_summary(summary)
    assert report == Report(total=12, passed=5, failed=7, skipped=0)
    assert failed[:FAILED_TESTS_SHOWN] == facts["failedTests"]
    lines = fact_lines(facts)
    assert lines[0] == "Failed in phase *BUILD*"
    assert lines[1] == "🧪 12 tests: 5 passed, 7 failed"
    assert lines[2].startswith("Failed tests: `Suite.test_0`, ") and lines[2].endswith(" 2 more")


def test_several_phases_and_a_cut_name_list() -> None:
    summary = (
        "Build failed in phases BUILD: `make` exited with status 2; POST_BUILD: `x` exited "
        "with status 1.\n30 tests: 10 passed, 20 failed, 3 skipped\n"
        "Failed tests: a, b, c, d, e, f (and 14 more)"
    )
    facts = read_facts(summary)
    assert facts is not None
    assert facts["phases"] == ["BUILD", "POST_BUILD"]
    assert facts["tests"]["skipped"] == 3
    assert facts["failedTests"] == ["a", "b", "c", "d", "e"]
    assert facts["moreFailed"] == 15
    assert "Failed in phases *BUILD*, *POST_BUILD*" in fact_lines(facts)


def test_deploy_summaries_give_the_revision_per_group_or_the_failed_hook() -> None:
    deployed = read_facts(
        "Deployed revision 3f2c9d1e7a to MyDemoApplication/Staging (deployment d-ABCDEF123): "
        "4 files installed, 5 hook scripts run."
    )
    assert deployed == {
        "deployed": {
            "revision": "3f2c9d1e7a",
            "application": "MyDemoApplication",
            "group": "Staging",
            "deployment": "d-ABCDEF123",
        }
    }
    assert fact_lines(deployed) == [
        "🚀 Deployed revision `3f2c9d1e7a` to *MyDemoApplication/Staging* "
        "(deployment `d-ABCDEF123`)"
    ]
    digest = "sha256:" + "2da8e05c5171f878bcc26b4e33f412a4059d2398c0528cffcabc0123456789ab"
    drawn = fact_lines(read_facts(f"Deployed revision {digest} to A/B (deployment d-X1)"))
    assert drawn == ["🚀 Deployed revision `sha256:2da8e05c5171` to *A/B* (deployment `d-X1`)"]
    hook = read_facts(
        "ValidateService failed: script scripts/validate.sh failed with exit code 3\nlog..."
    )
    assert hook == {"hook": "ValidateService", "script": "scripts/validate.sh"}
    assert fact_lines(hook) == ["Failed in hook *ValidateService* (script `scripts/validate.sh`)"]


@pytest.mark.parametrize(
    "summary",
    [
        None,
        "",
        "Build completed",  # what an AWS CodeBuild action may say
        "Approved by arn:aws:iam::1:user/x",
        "12 tests: 11 passed, 1 failed",  # a test line is never the headline
        "Build failed in phase SOMETHING_ELSE.",
        "Deployed revision to nowhere",
        "exit status 1\nFailed tests are listed in the console",
    ],
)
def test_other_summaries_give_no_facts(summary: str | None) -> None:
    assert read_facts(summary) is None
    assert fact_lines(read_facts(summary)) == []


def test_everything_from_the_summary_is_escaped() -> None:
    facts = read_facts(
        "Build failed in phase BUILD.\n2 tests: 0 passed, 2 failed\n"
        "Failed tests: <b>&x</b>, a`b<@U1>"
    )
    drawn = "\n".join(fact_lines(facts))
    assert "<b>" not in drawn and "<@U1>" not in drawn
    assert "&lt;b&gt;&amp;x&lt;/b&gt;" in drawn and "a'b&lt;@U1&gt;" in drawn


def test_log_markers_list_phases_and_hooks_and_mark_the_failed_one() -> None:
    log = "\n".join(
        [
            "[Container] Entering phase INSTALL",
            "[Container] Phase complete: INSTALL State: SUCCEEDED",
            "[Container] Running command make <b>",
            "[Container] Phase complete: BUILD State: FAILED",
            "[CodeDeploy] LifecycleEvent - ApplicationStop",
            "[CodeDeploy] LifecycleEvent - ValidateService",
            "[CodeDeploy] Deployment d-X1 failed: ValidateService failed: script s.sh failed",
        ]
    )
    markers = log_markers(log)
    assert markers == [
        ("phase", "INSTALL", True),
        ("phase", "BUILD", False),
        ("hook", "ApplicationStop", True),
        ("hook", "ValidateService", False),
    ]
    assert marker_lines(markers) == [
        "*Phases:* INSTALL ✅ → BUILD ❌",
        "*Hooks:* ApplicationStop ✅ → ValidateService ❌",
    ]
    assert log_markers("exit status 1\nPhase complete? no") == []
    assert marker_lines([]) == []


# =========================================================================== the seed pipeline


@pytest.fixture
def repos_dir(tmp_path: Path) -> Path:
    """The engine fixture's repositories: the demo app (``bot.demo``)."""
    repos = tmp_path / "repos"
    ensure_demo_repository(repos)
    return repos


def _start_demo(engine: Any) -> None:
    ensure_demo_projects(Path(engine.data_dir) / "codebuild-projects.yml", pause_seconds=0)
    engine.create_pipeline(pipeline=demo_declaration())


def _break_unit_tests(repos_dir: Path) -> None:
    """The home page no longer links to about.html: tests/test_site.py fails one test."""
    site = repos_dir / "MyDemoRepo" / "site" / "index.html"
    page = site.read_text()
    assert 'href="about.html"' in page
    commit(
        repos_dir / "MyDemoRepo",
        {"site/index.html": page.replace('href="about.html"', 'href="elsewhere.html"')},
        "Drop the <about> link",
    )


def _break_validate_hook(repos_dir: Path) -> None:
    script = repos_dir / "MyDemoRepo" / "scripts" / "validate_service.sh"
    commit(
        repos_dir / "MyDemoRepo",
        {"scripts/validate_service.sh": "#!/bin/sh\necho 'not serving' >&2\nexit 3\n"},
        "Validate harder",
    )
    script.chmod(0o755)


def _link_about_again(repos_dir: Path) -> None:
    site = repos_dir / "MyDemoRepo" / "site" / "index.html"
    commit(
        repos_dir / "MyDemoRepo",
        {"site/index.html": site.read_text().replace("elsewhere.html", "about.html")},
        "Link about again",
    )


def _latest_status(engine: Any) -> str:
    found = engine.list_pipeline_executions(pipelineName=DEMO_PIPELINE, maxResults=1)
    summaries = found["pipelineExecutionSummaries"]
    return str(summaries[0]["status"]) if summaries else "none"


def _stage_status(engine: Any, stage: str) -> str | None:
    for entry in engine.get_pipeline_state(name=DEMO_PIPELINE)["stageStates"]:
        if entry["stageName"] == stage:
            return (entry.get("latestExecution") or {}).get("status")
    return None


def test_status_shows_tests_and_the_deployed_revision_then_the_failed_tests(
    bot: Bot, repos_dir: Path
) -> None:
    _start_demo(bot.engine)
    wait_for(lambda: _stage_status(bot.engine, "Approval") == "InProgress", what="the approval")
    bot.command(f"status {DEMO_PIPELINE}", name="ok")
    shown = texts(bot.reply("ok").params["blocks"])
    assert "🧪 2 tests: 2 passed, 0 failed" in shown, shown
    assert "🚀 Deployed revision `" in shown and "to *MyDemoApplication/Staging*" in shown
    assert "Failed tests" not in shown

    _break_unit_tests(repos_dir)
    bot.engine.start_pipeline_execution(name=DEMO_PIPELINE)
    wait_for(lambda: _stage_status(bot.engine, "Build") == "Failed", what="the failed tests")
    bot.command(f"status {DEMO_PIPELINE}", name="failed")
    shown = texts(bot.reply("failed").params["blocks"])
    assert "Failed in phase *BUILD*" in shown, shown
    assert "🧪 2 tests: 1 passed, 1 failed" in shown
    assert "Failed tests: `SiteTests.test_the_home_page_links_to_about`" in shown
    # The deployment from before still shows, with its revision and group.
    assert "to *MyDemoApplication/Staging*" in shown
    # View log: the failed action's phases above its log tail.
    (log_ref,) = refs(bot.reply("failed").params["blocks"], ids.VIEW_LOG)
    bot.click(ids.VIEW_LOG, log_ref, name="log")
    log = texts(bot.reply("log").params["blocks"])
    assert "*Log tail* of Build / UnitTests:\n*Phases:* BUILD ❌" in log, log

    _break_validate_hook(repos_dir)
    _link_about_again(repos_dir)
    bot.engine.start_pipeline_execution(name=DEMO_PIPELINE)
    wait_for(lambda: _stage_status(bot.engine, "Staging") == "Failed", what="the failed hook")
    bot.command(f"status {DEMO_PIPELINE}", name="hook")
    blocks = bot.reply("hook").params["blocks"]
    shown = texts(blocks)
    assert "Failed in hook *ValidateService* (script `scripts/validate_service.sh`)" in shown
    assert "🧪 2 tests: 2 passed, 0 failed" in shown  # the tests pass again
    (log_ref,) = refs(blocks, ids.VIEW_LOG)
    bot.click(ids.VIEW_LOG, log_ref, name="hook-log")
    log = texts(bot.reply("hook-log").params["blocks"])
    assert (
        "*Hooks:* ApplicationStop ✅ → DownloadBundle ✅ → BeforeInstall ✅ → Install ✅ → "
        "AfterInstall ✅ → ApplicationStart ✅ → ValidateService ❌"
    ) in log, log


@pytest.fixture
def harness(engine: Any, database_url: str, fake: Any) -> Iterator[Harness]:
    made = Harness(engine, database_url, fake)
    yield made
    made.db.dispose()


def test_failure_replies_name_the_failed_tests_and_the_failed_hook(
    harness: Harness, repos_dir: Path
) -> None:
    h = harness
    _break_unit_tests(repos_dir)
    _start_demo(h.engine)
    h.subscribe(DEMO_PIPELINE, "CALL")
    notifier = h.notifier()
    h.pump(
        notifier,
        lambda: bool(h.replies_with("CALL", "Stage failed")) and not h.pending(),
        "the failed tests' reply",
    )
    reply = texts(h.replies_with("CALL", "Stage failed")[0].params["blocks"])
    assert "action *UnitTests*" in reply
    assert "Failed in phase *BUILD*" in reply
    assert "🧪 2 tests: 1 passed, 1 failed" in reply
    assert "Failed tests: `SiteTests.test_the_home_page_links_to_about`" in reply

    _break_validate_hook(repos_dir)
    _link_about_again(repos_dir)
    h.engine.start_pipeline_execution(name=DEMO_PIPELINE)
    h.pump(
        notifier,
        lambda: len(h.replies_with("CALL", "Stage failed")) >= 2 and not h.pending(),
        "the failed hook's reply",
    )
    hook = texts(h.replies_with("CALL", "Stage failed")[-1].params["blocks"])
    assert "*Staging* · action *Deploy*" in hook, hook
    assert "Failed in hook *ValidateService* (script `" in hook
    assert "🧪" not in hook
