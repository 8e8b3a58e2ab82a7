"""What the command replies look like on the sandbox's page, in a real headless Chromium
(issue 12: items 7, 10 and 11 and the polish of the replies). The sandbox and the browser
are ``tests/test_browser.py``'s."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.test_browser import page, sandbox  # noqa: F401  (the fixtures)
from tests.test_sandbox import SandboxProcess

pytestmark = pytest.mark.slow


def _reply_to(page: Any, command: str) -> Any:  # noqa: F811
    """Type ``command`` in #releases; the private reply it gets."""
    from playwright.sync_api import expect

    replies = page.locator("#timeline .msg.ephemeral")
    before = replies.count()
    page.fill("#message", command)
    page.press("#message", "Enter")
    expect(replies).to_have_count(before + 1)
    return replies.last


def _shown(reply: Any) -> str:
    """The reply's text as a reader sees it; mrkdwn markup must never show through."""
    text = str(reply.inner_text())
    assert "`" not in text and "*" not in text, text
    return text


def test_command_replies_read_as_text_on_the_page(
    sandbox: SandboxProcess,  # noqa: F811
    page: Any,  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    page.goto(sandbox.url)
    expect(page.locator("#timeline")).to_contain_text("created pipeline demo")
    first = page.locator("#timeline .msg").filter(has=page.locator("h3")).first
    expect(first).to_contain_text("Waiting for approval")
    found = re.search(r"Execution\s+([0-9a-f-]{36})", first.inner_text())
    assert found is not None
    execution = found.group(1)

    # Item 10: a typo gets the suggestion alone, not the whole help cut off in a code block.
    typo = _shown(_reply_to(page, "/pipeline stauts demo"))
    assert "Did you mean status?" in typo and "/pipeline help lists every command" in typo
    assert "pipebot commands" not in typo
    assert typo.count("\n") < 4, typo

    # Polish: usage and example once, as commands, naming the pipeline typed.
    usage = _shown(_reply_to(page, "/pipeline history demo lots"))
    assert "Usage: /pipeline history NAME [N]" in usage
    assert "Example: /pipeline history demo 20" in usage and usage.count("Usage") == 1

    # Polish: help's examples run as they are in the sandbox; no stray asterisks.
    one = _shown(_reply_to(page, "/pipeline help start"))
    # The demo (the seed pipeline) declares no variables: the example sets none.
    assert "Example: /pipeline start demo\n" in one and "--var" not in one.split("Example:")[1]
    overview = _shown(_reply_to(page, "/pipeline help"))
    assert "web-release" not in overview and "/pipeline approve demo Approval/" in overview

    # Item 7: the 8 characters every message shows name the execution.
    shown = _shown(_reply_to(page, f"/pipeline execution demo {execution[:8]}"))
    assert execution in shown

    # Item 11: who did it, as the channel says it (alice created demo from #releases).
    status = _shown(_reply_to(page, "/pipeline status demo"))
    assert "created by @alice" in status and "(pipebot)" not in status
