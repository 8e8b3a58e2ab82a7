"""What a build, test or deploy action's summary tells a user, read defensively.

The embedded engine's CodeBuild and CodeDeploy actions leave their outcome in the action's
summary (``summary`` in GetPipelineState, ``externalExecutionSummary`` in
ListActionExecutions):

* CodeBuild: a first line ``Build failed in phase BUILD: `pytest` exited with status 1.``
  (``phases BUILD; POST_BUILD`` when several failed), then ``12 tests: 11 passed, 1 failed``
  (``, 2 skipped``) and ``Failed tests: a, b (and 3 more)`` when the build had JUnit reports;
* CodeDeploy: ``Deployed revision <rev> to <App>/<Group> (deployment d-...)`` on success,
  ``<Hook> failed: script <path> failed with exit code N`` when a lifecycle hook failed.

On AWS a CodeBuild action's summary is something else (or empty), so nothing here imports the
engine: each line is matched on its own, and a summary that matches nothing gives no facts
(Slack then shows the summary as it is, and nothing more). The shapes mirror
``bot.engine.providers.codebuild`` and ``codedeploy``; ``tests/test_slack_action_facts.py``
checks them against the engine's own summaries.

Pure functions: ``read_facts`` turns a summary into a small JSON-serialisable dict (what the
notifier stores in its snapshots), ``fact_lines`` draws it as escaped mrkdwn.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from bot.slack.kit import code, esc

__all__ = ["FAILED_TESTS_SHOWN", "fact_lines", "log_markers", "marker_lines", "read_facts"]

FAILED_TESTS_SHOWN: Final = 5
"""Failed test names shown; the rest are counted."""

_PHASES: Final = ("INSTALL", "PRE_BUILD", "BUILD", "POST_BUILD", "DOWNLOAD_SOURCE", "FINALIZING")
_BUILD_FAILED: Final = re.compile(
    r"^Build (?:failed|timed out.*?|was stopped.*?) in phases? (?P<where>.+)$"
)
_PHASE_WORD: Final = re.compile(r"(?:^|; )(?P<phase>[A-Z_]+)(?=[:;.]|$)")
_TESTS_LINE: Final = re.compile(
    r"^(?P<total>\d+) tests?: (?P<passed>\d+) passed, (?P<failed>\d+) failed"
    r"(?:, (?P<skipped>\d+) skipped)?$"
)
_FAILED_TESTS: Final = "Failed tests: "
_MORE: Final = re.compile(r" \(and (?P<more>\d+) more\)$")
_DEPLOYED: Final = re.compile(
    r"^Deployed revision (?P<revision>\S+) to (?P<application>[^/\s]+)/(?P<group>\S+) "
    r"\(deployment (?P<deployment>d-[A-Za-z0-9]+)\)"
)
_HOOK_FAILED: Final = re.compile(r"^(?P<hook>[A-Z][A-Za-z]+) failed: script (?P<script>\S+)")
_DIGEST: Final = re.compile(r"(?P<kind>[a-z0-9]+:)?(?P<hex>[0-9a-f]{32,})")
_NAME_MAX: Final = 200
_LINES_READ: Final = 20


def read_facts(summary: Any) -> dict[str, Any] | None:
    """The facts in an action's summary, or None when it holds none.

    Keys, each present only when found: ``phases`` (list of CodeBuild phase names a build
    failed in), ``hook`` and ``script`` (the CodeDeploy lifecycle hook that failed), ``tests``
    (``{"total", "passed", "failed", "skipped"}``, integers), ``failedTests`` (at most
    ``FAILED_TESTS_SHOWN`` names) with ``moreFailed`` (how many more failed), ``deployed``
    (``{"revision", "application", "group", "deployment"}``). Only the summary's first
    lines are read; a line that does not match its shape exactly is ignored.
    """
    if not isinstance(summary, str) or not summary.strip():
        return None
    facts: dict[str, Any] = {}
    lines = [line.strip() for line in summary.splitlines()[:_LINES_READ]]
    first = lines[0] if lines else ""
    if (build := _BUILD_FAILED.match(first)) is not None:
        phases = [m["phase"] for m in _PHASE_WORD.finditer(build["where"]) if m["phase"] in _PHASES]
        if phases:
            facts["phases"] = phases
    if (hook := _HOOK_FAILED.match(first)) is not None:
        facts["hook"] = hook["hook"][:_NAME_MAX]
        facts["script"] = hook["script"][:_NAME_MAX]
    if (deployed := _DEPLOYED.match(first)) is not None:
        facts["deployed"] = {key: value[:_NAME_MAX] for key, value in deployed.groupdict().items()}
    listed: list[str] = []
    more = 0
    for line in lines[1:]:
        counts = _TESTS_LINE.match(line)
        if counts is not None and "tests" not in facts:
            facts["tests"] = {
                key: int(counts[key] or 0) for key in ("total", "passed", "failed", "skipped")
            }
        elif line.startswith(_FAILED_TESTS) and not listed:
            body = line[len(_FAILED_TESTS) :]
            if (tail := _MORE.search(body)) is not None:
                more = int(tail["more"])
                body = body[: tail.start()]
            listed = [name for name in body.split(", ") if name.strip()]
    if listed:
        shown = listed[:FAILED_TESTS_SHOWN]
        facts["failedTests"] = [name[:_NAME_MAX] for name in shown]
        failed = int((facts.get("tests") or {}).get("failed") or 0)
        rest = max(len(listed) - len(shown) + more, failed - len(shown), 0)
        if rest:
            facts["moreFailed"] = rest
    return facts or None


def fact_lines(facts: Mapping[str, Any] | None) -> list[str]:
    """The facts as mrkdwn lines (everything from the summary escaped), e.g.
    ``Failed in phase *BUILD*``, ``🧪 2 tests: 1 passed, 1 failed``,
    ``Failed tests: `SiteTests.test_links` ``, ``🚀 Deployed `3f2c9d1e` to *App/Staging*
    (deployment `d-ABC`)``. Empty for None."""
    if not facts:
        return []
    lines: list[str] = []
    phases = [str(p) for p in facts.get("phases") or []]
    if phases:
        noun = "phase" if len(phases) == 1 else "phases"
        lines.append(f"Failed in {noun} " + ", ".join(f"*{esc(p, 40)}*" for p in phases))
    if facts.get("hook"):
        line = f"Failed in hook *{esc(str(facts['hook']), 80)}*"
        if facts.get("script"):
            line += f" (script {code(str(facts['script']), 120)})"
        lines.append(line)
    tests = facts.get("tests")
    if isinstance(tests, Mapping):
        line = f"🧪 {int(tests.get('total') or 0)} test{'s' if tests.get('total') != 1 else ''}: "
        line += f"{int(tests.get('passed') or 0)} passed, {int(tests.get('failed') or 0)} failed"
        if tests.get("skipped"):
            line += f", {int(tests['skipped'])} skipped"
        lines.append(line)
    names = [str(n) for n in facts.get("failedTests") or []]
    if names:
        line = "Failed tests: " + ", ".join(code(n, 120) for n in names)
        if facts.get("moreFailed"):
            line += f" and {int(facts['moreFailed'])} more"
        lines.append(line)
    deployed = facts.get("deployed")
    if isinstance(deployed, Mapping):
        where = f"{deployed.get('application')}/{deployed.get('group')}"
        lines.append(
            f"🚀 Deployed revision {code(_short_revision(str(deployed.get('revision'))), 60)} to "
            f"*{esc(where, 200)}* (deployment {code(str(deployed.get('deployment')), 40)})"
        )
    return lines


def _short_revision(revision: str) -> str:
    """A digest revision (``sha256:<64 hex>``, a commit's 40 hex) cut to 12 hex digits, enough
    to tell revisions apart; any other revision as it is."""
    found = _DIGEST.fullmatch(revision)
    return f"{found['kind'] or ''}{found['hex'][:12]}" if found else revision


# --------------------------------------------------------------------------- log markers

_PHASE_DONE: Final = re.compile(
    r"\[Container\] (?:\S+ \S+ )?Phase complete: (?P<phase>[A-Z_]+) State: (?P<state>[A-Z]+)"
)
_HOOK_EVENT: Final = re.compile(r"\[CodeDeploy\] (?:\S+ \S+ )?LifecycleEvent - (?P<hook>[A-Za-z]+)")
_DEPLOY_FAILED: Final = re.compile(
    r"\[CodeDeploy\] (?:\S+ \S+ )?Deployment \S+ failed: (?P<hook>[A-Za-z]+) failed"
)
_MARKERS_MAX: Final = 30


def log_markers(log: str | None) -> list[tuple[str, str, bool]]:
    """The phase and hook markers of an action's log, in order: ``("phase", "BUILD",
    False)`` for each ``Phase complete: BUILD State: FAILED`` line a CodeBuild action
    writes, ``("hook", "ValidateService", False)`` for each ``LifecycleEvent -
    ValidateService`` a CodeDeploy action writes (a hook is failed when the deployment's
    failure line names it). The bool says whether it succeeded. Empty for any other log
    (an AWS one, a Commands action's)."""
    markers: list[tuple[str, str, bool]] = []
    failed_hook: str | None = None
    for line in (log or "").splitlines():
        if (phase := _PHASE_DONE.search(line)) is not None:
            markers.append(("phase", phase["phase"], phase["state"] == "SUCCEEDED"))
        elif (hook := _HOOK_EVENT.search(line)) is not None:
            markers.append(("hook", hook["hook"], True))
        elif (failed := _DEPLOY_FAILED.search(line)) is not None:
            failed_hook = failed["hook"]
    if failed_hook is not None:
        last = max(
            (
                i
                for i, (kind, hook, _) in enumerate(markers)
                if (kind, hook) == ("hook", failed_hook)
            ),
            default=None,
        )
        if last is not None:
            markers[last] = ("hook", failed_hook, False)
    return markers[-_MARKERS_MAX:]


def marker_lines(markers: Sequence[tuple[str, str, bool]]) -> list[str]:
    """``*Phases:* INSTALL ✅ → BUILD ❌`` and ``*Hooks:* ApplicationStop ✅ → … →
    ValidateService ❌``, one line per kind present (names escaped)."""
    lines = []
    for kind, title in (("phase", "Phases"), ("hook", "Hooks")):
        steps = [
            f"{esc(step, 40)} {'✅' if ok else '❌'}"
            for found, step, ok in markers
            if found == kind
        ]
        if steps:
            lines.append(f"*{title}:* " + " → ".join(steps))
    return lines
