"""Forms and clicks in the sandbox, in a real headless Chromium (issue 12, items 3, 8, 12).

- The issue's steps: copy the demo's declaration from `/pipeline edit demo` (over 4,500
  characters) and paste it into `/pipeline create`. The page's box, like Slack's, keeps 3,000
  characters; Save used to say "invalid JSON at line 113". Now the form starts from an
  example, says how to give a longer declaration, refuses the cut paste naming the box and
  where the rest goes, and creates the pipeline once the rest is in the next box.
- A refused click is told where it was made: in the channel for a button shown there.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.test_browser import page, sandbox  # noqa: F401 (fixtures)
from tests.test_sandbox import SandboxProcess

pytestmark = pytest.mark.slow


def _send(browser_page: Any, text: str) -> None:
    browser_page.fill("#message", text)
    browser_page.press("#message", "Enter")


def test_a_declaration_longer_than_a_box_is_never_cut_silently(
    sandbox: SandboxProcess,  # noqa: F811
    page: Any,  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    page.goto(sandbox.url)
    expect(page.locator("#timeline")).to_contain_text("created pipeline demo")
    modal = page.locator("#modal-layer form.modal")

    _send(page, "/pipeline edit demo")
    expect(modal).to_be_visible()
    boxes = modal.locator("textarea")
    declaration = "".join(boxes.nth(i).input_value() for i in range(boxes.count()))
    assert len(declaration) > 4500
    modal.locator("button[data-close]").first.click()
    expect(page.locator("#modal-layer")).to_be_hidden()
    copied = declaration.replace('"name": "demo"', '"name": "demo2"', 1)
    assert json.loads(copied)["pipeline"]["name"] == "demo2"

    _send(page, "/pipeline create")
    expect(modal).to_be_visible()
    expect(modal).to_contain_text("working example")
    expect(modal).to_contain_text("3,000 characters")
    first = modal.locator("textarea").first
    assert '"name": "my-app"' in first.input_value()
    assert "roleArn" not in first.input_value()  # the embedded engine needs none

    first.fill(copied)
    kept = first.input_value()
    assert kept == copied[: len(kept)] and len(kept) == 3000, len(kept)  # the box's limit
    modal.locator('button[type="submit"]').click()
    error = modal.locator(".field-error")
    expect(error).to_contain_text("Box 1 is full")
    expect(error).to_contain_text("Paste the rest of the declaration into box 2")

    modal.locator("textarea").nth(1).fill(copied[3000:])
    modal.locator('button[type="submit"]').click()
    expect(page.locator("#modal-layer")).to_be_hidden()
    expect(page.locator("#timeline")).to_contain_text("created pipeline demo2")


def test_a_refused_click_in_the_channel_is_told_in_the_channel(
    sandbox: SandboxProcess,  # noqa: F811
    page: Any,  # noqa: F811
) -> None:
    """Issue 12, item 8: bob's click on Approve in the channel was refused inside the thread,
    which he had not opened, so he saw nothing. The refusal now shows in the channel, where
    he clicked; his Home lists no approval he may not give."""
    from playwright.sync_api import expect

    page.goto(sandbox.url)
    request = page.locator("#timeline .msg").filter(has_text="Approval needed")
    approve = request.locator('button[data-action="pipebot.approve"]')
    expect(approve.first).to_be_visible()  # the first execution waits at the gate
    page.select_option("#user", "U0BOB")
    approve.first.click()
    page.locator("#confirm-ok").click()
    refusal = page.locator("#timeline .msg.ephemeral").filter(has_text="approve")
    expect(refusal).to_contain_text("Only visible to you")
    expect(page.locator("#thread .msg.ephemeral")).to_have_count(0)

    page.click("#nav-home")
    home = page.locator("#home")
    expect(home).to_contain_text("Nothing waits for you.")
    expect(home.locator('button[data-action="pipebot.approve"]')).to_have_count(0)


def test_the_stop_form_redraws_the_status_reply_it_came_from(
    sandbox: SandboxProcess,  # noqa: F811
    page: Any,  # noqa: F811
) -> None:
    """Issue 12, item 5: Stop on a `/pipeline status` reply (ephemeral) stopped the execution,
    then its chat.update was refused (message_not_found, the page's red banner) and the
    reply kept its Stop button. The reply is now redrawn through its response_url."""
    from playwright.sync_api import expect

    page.goto(sandbox.url)
    expect(page.locator("#timeline")).to_contain_text("Approval needed")
    _send(page, "/pipeline status demo")
    latest = page.locator("#timeline .msg.ephemeral").last
    expect(latest.locator('button[data-action="pipebot.stop"]')).to_be_visible()
    card = page.locator(f'#timeline .msg[data-ts="{latest.get_attribute("data-ts")}"]')
    stop = card.locator('button[data-action="pipebot.stop"]')
    stop.click()
    modal = page.locator("#modal-layer form.modal")
    expect(modal).to_contain_text("Stop")
    modal.locator("select").select_option("abandon")
    modal.locator('button[type="submit"]').click()
    expect(page.locator("#modal-layer")).to_be_hidden()
    expect(card).to_contain_text("stopped and abandoned")
    expect(card.locator('button[data-action="pipebot.stop"]')).to_have_count(0)
    expect(page.locator("#problems")).to_be_hidden()
