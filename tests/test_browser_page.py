"""The sandbox page in a real headless Chromium, after issue 12's polish: what a newcomer sees
when the window is narrow, the text is long, a modal is open, a toast or a refusal shows up,
and when #releases is archived (pipebot's suspension of a refused channel, then resumed).

The fixtures are ``tests/test_browser.py``'s (a ``pipebot sandbox`` process, Debian's
Chromium through Playwright; skipped without Chromium, failed with ``CI=true``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests import test_browser
from tests.test_browser import TIMEOUT_MS
from tests.test_sandbox import SandboxProcess

pytestmark = pytest.mark.slow

# The fixtures of tests/test_browser.py, registered here under the same names.
sandbox = test_browser.sandbox
page = test_browser.page
screenshots = test_browser.screenshots


def _box(locator: Any) -> dict[str, float]:
    box = locator.bounding_box()
    assert box is not None, locator
    return dict(box)


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return not (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


def _on_top(page: Any, selector: str) -> bool:
    """Whether the element is what a click at its centre would hit (nothing covers it)."""
    return bool(
        page.evaluate(
            """(selector) => {
                const el = document.querySelector(selector);
                const r = el.getBoundingClientRect();
                const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
                return hit !== null && (hit === el || el.contains(hit));
            }""",
            selector,
        )
    )


def _last_message_in_sight(page: Any) -> bool:
    return bool(
        page.evaluate(
            """() => {
                const pane = document.getElementById("timeline");
                const all = pane.querySelectorAll(".msg");
                const last = all[all.length - 1].getBoundingClientRect();
                const box = pane.getBoundingClientRect();
                return last.top >= box.top - 1 && last.bottom <= box.bottom + 1;
            }"""
        )
    )


def test_the_page_fits_narrow_windows_long_text_modals_and_toasts(
    sandbox: SandboxProcess, page: Any, screenshots: Any
) -> None:
    from playwright.sync_api import expect

    page.goto(sandbox.url)
    expect(page.locator("#timeline")).to_contain_text("created pipeline demo")

    # Who you act as reads plainly: "bob · developer, not an admin", no nested brackets.
    options = page.locator("#user option").all_inner_texts()
    assert options == ["alice · admin", "bob · developer, not an admin"], options

    # Long unbroken text wraps inside the message instead of widening the channel.
    word = "x" * 700
    page.fill("#message", word)
    page.press("#message", "Enter")
    expect(page.locator("#timeline")).to_contain_text(word[:50])
    widths = page.evaluate(
        """() => { const t = document.getElementById("timeline");
                   return [t.scrollWidth, t.clientWidth]; }"""
    )
    assert widths[0] <= widths[1], widths

    # Escape closes a modal, as in Slack.
    page.fill("#message", "/pipeline create")
    page.press("#message", "Enter")
    modal = page.locator("#modal-layer form.modal")
    expect(modal).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#modal-layer")).to_be_hidden()

    # The Push toast says what happened without covering the newest message (in a channel
    # whose messages fill it, scrolled to its end).
    expect(page.locator("#timeline .msg").last).to_contain_text(word[:50])
    page.set_viewport_size({"width": 1280, "height": 520})
    full = page.evaluate(
        """() => { const t = document.getElementById("timeline");
                   t.scrollTop = t.scrollHeight;
                   return t.scrollHeight > t.clientHeight; }"""
    )
    assert full
    page.click("#push")
    toast = page.locator("#toast")
    expect(toast).to_contain_text("Pushed")
    assert _last_message_in_sight(page)
    assert not _overlap(_box(toast), _box(page.locator("#timeline .msg").last))
    page.screenshot(path=str(screenshots / "page-toast.png"))

    page.set_viewport_size({"width": 1280, "height": 860})

    # The Home tab's content keeps a margin from the sidebar.
    page.click("#nav-home")
    expect(page.locator("#home .home-view")).to_contain_text("demo")
    sidebar = _box(page.locator("nav.sidebar"))
    first = page.locator("#home .home-view > *").first
    assert _box(first)["x"] >= sidebar["x"] + sidebar["width"] + 8
    page.click("#nav-channel")

    # At 800 px with a thread open, Send and Reply stay visible and clickable.
    page.set_viewport_size({"width": 800, "height": 700})
    page.locator("#timeline .msg [data-thread]").first.click()
    expect(page.locator("#thread-pane")).to_be_visible()
    for button in ("#composer button[type=submit]", "#thread-composer button[type=submit]"):
        expect(page.locator(button)).to_be_in_viewport()
        assert _on_top(page, button), button
    thread = _box(page.locator("#thread-pane"))
    send = _box(page.locator("#composer button[type=submit]"))
    assert send["x"] + send["width"] <= thread["x"] + 1
    page.screenshot(path=str(screenshots / "page-800px.png"))


def test_an_archived_channel_suspends_then_resumes_and_the_banner_can_be_dismissed(
    sandbox: SandboxProcess, page: Any, screenshots: Any
) -> None:
    from playwright.sync_api import expect

    page.goto(sandbox.url)
    expect(page.locator("#timeline")).to_contain_text("created pipeline demo")
    expect(page.locator("#timeline .msg").filter(has=page.locator("h3")).first).to_contain_text(
        "Waiting for approval"
    )

    page.click("#archive")
    expect(page.locator("#channel-title")).to_have_text("# releases (archived)")
    expect(page.locator("#composer")).to_be_hidden()
    expect(page.locator("#archived")).to_contain_text("an archived channel")
    expect(page.locator("#timeline")).to_contain_text("archived the channel")

    # A new execution: pipebot's next message there is refused, so it suspends the channel
    # and tells alice, who subscribed it, in a direct message.
    page.click("#push")
    problems = page.locator("#problems")
    expect(problems).to_be_visible(timeout=TIMEOUT_MS)
    expect(problems).to_contain_text("#releases is archived")
    page.click("#nav-home")
    dms = page.locator("#dms")
    expect(dms).to_contain_text("stopped posting to")
    expect(dms).to_contain_text("the channel was archived")
    page.screenshot(path=str(screenshots / "archived-suspended.png"))
    page.click("#nav-channel")

    # The red banner goes away when dismissed, and stays away after a reload.
    page.click("#dismiss-problems")
    expect(problems).to_be_hidden()
    page.reload()
    expect(page.locator("#timeline")).to_contain_text("archived the channel")
    expect(page.locator("#channel-title")).to_have_text("# releases (archived)")
    expect(problems).to_be_hidden()

    # Unarchived and subscribed again: the subscription resumes, the messages catch up.
    page.click("#unarchive")
    expect(page.locator("#composer")).to_be_visible()
    expect(page.locator("#channel-title")).to_have_text("# releases")
    page.fill("#message", "/pipeline subscribe demo")
    page.press("#message", "Enter")
    expect(page.locator("#timeline")).to_contain_text("resumed")
    expect(page.locator("#timeline")).to_contain_text("PollForSourceChanges")
    expect(problems).to_be_hidden()
