"""The sandbox in a real headless Chromium: the newcomer's story from the README.

Type ``/pipeline start demo`` in #releases, watch the parent message move through the stages,
open the thread, click Approve, confirm, see Succeeded. The sandbox runs with the default poll
interval (10 s), as ``make run`` does, and the page must show Build and Staging each running
before the approval: what the page drew is recorded as it draws it, so a channel that lags the
engine (issue 12: the parent jumped from Source to the approval one interval on) fails the
test, however quickly Playwright looks. It takes the README's screenshots on
every run, into a temporary folder, or into ``$PIPEBOT_SCREENSHOTS_DIR`` (``make screenshots``
sets it to ``docs/screenshots/``). Chromium is Debian's (``make test`` installs it); with
``CI=true`` a missing Chromium fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import test_sandbox
from tests.test_sandbox import SandboxProcess, running_sandbox

CHROMIUM = os.environ.get("PIPEBOT_TEST_CHROMIUM", "/usr/bin/chromium")
# A closed network: without these Chromium waits on connections it will never get.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.slow


def _chromium() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    found = shutil.which("chromium")
    if found:
        return found
    message = f"Chromium is not installed at {CHROMIUM} (make test installs Debian's chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# Every version of each parent message the page draws, in order: window.drawn[header] is a
# list of texts. Installed before the page's own script runs.
RECORD_PARENTS = """
window.drawn = {};
new MutationObserver(() => {
  for (const message of document.querySelectorAll("#timeline .msg")) {
    const header = message.querySelector("h3");
    if (!header) continue;
    const seen = (window.drawn[header.innerText] ||= []);
    const text = message.innerText;
    if (seen[seen.length - 1] !== text) seen.push(text);
  }
}).observe(document, { childList: true, subtree: true, characterData: true });
"""


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxProcess]:
    # `make run`'s poll interval (the default, 10 s), not the 1 s the process tests use:
    # only the notifier's push path may keep the page current.
    environment = test_sandbox._environment

    def default_interval(data_dir: Path, port: int) -> dict[str, str]:
        env = environment(data_dir, port)
        env.pop("PIPEBOT_POLL_SECONDS", None)
        return env

    monkeypatch.setattr(test_sandbox, "_environment", default_interval)
    with running_sandbox(tmp_path / "data") as running:
        yield running


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    executable = _chromium()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=executable,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 860},
        )
        try:
            context.add_init_script(RECORD_PARENTS)
            browser_page = context.new_page()
            browser_page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            browser_page.on("pageerror", lambda error: errors.append(str(error)))
            yield browser_page
            assert errors == [], errors
        finally:
            context.close()


def _parent(page: Any, execution: str) -> Any:
    """The parent message of one execution in #releases (its header names it)."""
    return page.locator("#timeline .msg").filter(
        has=page.locator("h3", has_text=f"demo · {execution[:8]}")
    )


def _drawn(page: Any, execution: str) -> list[str]:
    """Every version of the execution's parent message the page drew, oldest first."""
    history = page.evaluate("window.drawn")
    return list(history.get(f"demo · {execution[:8]}", []))


def _approve_in_thread(page: Any, execution: str) -> None:
    from playwright.sync_api import expect

    parent = _parent(page, execution)
    parent.locator("[data-thread]").click()
    approve = (
        page.locator("#thread .msg")
        .filter(has_text=f"Execution {execution[:8]}")
        .locator('button[data-action="pipebot.approve"]')
    )
    expect(approve).to_be_visible(timeout=TIMEOUT_MS)
    approve.click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Approve")
    page.locator("#confirm-ok").click()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("PIPEBOT_SCREENSHOTS_DIR")
    folder = Path(chosen).resolve() if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_start_follow_approve_in_the_browser(
    sandbox: SandboxProcess, page: Any, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    page.goto(sandbox.url)
    # First start: pipebot created the demo pipeline from #releases, which started its first
    # execution; it waits for approval (the Approval stage holds one execution at a time).
    expect(page.locator("#timeline")).to_contain_text("created pipeline demo")
    first_parent = page.locator("#timeline .msg").filter(has=page.locator("h3")).first
    expect(first_parent).to_contain_text("Waiting for approval")
    first = re.search(r"Execution\s+(\S{36})", first_parent.inner_text())
    assert first is not None

    page.fill("#message", "/pipeline start demo")
    page.press("#message", "Enter")
    started = page.locator("#timeline .msg", has_text="started demo: execution")
    expect(started).to_be_visible()
    match = re.search(r"execution\s+([0-9a-f-]{36})", started.inner_text())
    assert match is not None
    execution = match.group(1)
    parent = _parent(page, execution)
    expect(parent).to_contain_text("Build · In progress")
    expect(parent).to_contain_text("Staging · Succeeded")
    page.screenshot(path=str(screenshots / "channel.png"))

    _approve_in_thread(page, first.group(1))  # lets the new execution into Approval
    expect(_parent(page, first.group(1))).to_contain_text("Succeeded")
    expect(parent).to_contain_text("Waiting for approval")
    # The page showed the stages move, each one running in turn, before the approval.
    drawn = _drawn(page, execution)
    waiting = next(i for i, text in enumerate(drawn) if "Waiting for approval" in text)
    shown = [
        next((i for i, text in enumerate(drawn) if f"{stage} · In progress" in text), None)
        for stage in ("Build", "Staging")
    ]
    assert None not in shown, drawn
    assert shown == sorted(shown) and shown[-1] < waiting, drawn  # type: ignore[type-var]

    parent.locator("[data-thread]").click()
    approve = page.locator("#thread .msg").filter(has_text=f"Execution {execution[:8]}")
    expect(approve.locator('button[data-action="pipebot.approve"]')).to_be_visible()
    page.screenshot(path=str(screenshots / "thread.png"))
    approve.locator('button[data-action="pipebot.approve"]').click()
    expect(page.locator("dialog#confirm")).to_be_visible()
    page.screenshot(path=str(screenshots / "confirm.png"))
    page.locator("#confirm-ok").click()

    header = parent.locator(".sk-text").first
    expect(header).to_contain_text("Succeeded")
    expect(parent).to_contain_text("Production · Succeeded")
    expect(page.locator("#thread")).to_contain_text("Approved")
    page.screenshot(path=str(screenshots / "succeeded.png"))

    page.click("#nav-home")
    expect(page.locator("#home")).to_contain_text("demo")
    page.screenshot(path=str(screenshots / "home.png"))
    production = (
        sandbox.data_dir / "codedeploy/MyDemoApplication/Production/var/www/html/index.html"
    )
    assert "Hello from the seed pipeline" in production.read_text()


def test_a_second_user_is_refused_and_a_modal_shows_inline_errors(
    sandbox: SandboxProcess, page: Any, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    page.goto(sandbox.url)
    expect(page.locator("#timeline")).to_contain_text("created pipeline demo")
    page.select_option("#user", "U0BOB")
    page.fill("#message", "/pipeline start demo")
    page.press("#message", "Enter")
    refusal = page.locator("#timeline .msg.ephemeral").last
    expect(refusal).to_contain_text("Only visible to you")
    expect(refusal).to_contain_text("operator")

    page.select_option("#user", "U0ALICE")
    expect(page.locator("#timeline .msg.ephemeral")).to_have_count(0)  # bob's, not alice's
    page.fill("#message", "/pipeline create")
    page.press("#message", "Enter")
    modal = page.locator("#modal-layer form.modal")
    expect(modal).to_be_visible()
    modal.locator("textarea").first.fill('{"name": "broken", "stages": []}')
    modal.locator('button[type="submit"]').click()
    expect(modal.locator(".field-error")).to_be_visible()
    page.screenshot(path=str(screenshots / "modal-error.png"))
    modal.locator("button[data-close]").first.click()
    expect(page.locator("#modal-layer")).to_be_hidden()
