"""Help, errors, notices (``bot/slack/messages.py``) and a message's fallback text
(``bot/slack/kit.py``)."""

from __future__ import annotations

from bot.slack.kit import escape, fallback_text
from bot.slack.messages import error_blocks, help_blocks, notice_blocks
from bot.slack.status import status_blocks
from tests.blockcheck import (
    EVIL,
    NOW,
    check_message,
    pipeline_state,
    render_status,
    rich_state,
    texts,
)

# --------------------------------------------------------------------------- help, errors, notices


def test_help_wraps_long_text_and_keeps_code_fences_balanced() -> None:
    lines = ["*Commands*"]
    for i in range(120):
        lines += [f"`/pipeline cmd{i} NAME` does thing {i}", "```", f"/pipeline cmd{i} web", "```"]
    lines.append("y" * 7000)
    blocks = check_message(help_blocks(text="\n".join(lines)))
    for block in blocks:
        if block["type"] == "section":
            assert block["text"]["text"].count("```") % 2 == 0
    assert "`/pipeline cmd0 NAME`" in texts(blocks)
    short = check_message(help_blocks(text="*help*\n`/pipeline list`"))
    assert short == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*help*\n`/pipeline list`"}}
    ]
    assert check_message(help_blocks(text=""))


def test_error_and_notice_blocks() -> None:
    blocks = check_message(
        error_blocks(
            message=f"No pipeline named *{escape('x<y>')}*.",
            usage=(
                "*Usage:* `/pipeline status NAME &lt;stage&gt;`\n*Example:* `/pipeline status demo`"
            ),
        )
    )
    assert blocks[0]["text"]["text"] == "⚠️ No pipeline named *x&lt;y&gt;*."
    # The usage is mrkdwn shown as written: no code block around it (whose backticks would
    # show literally), no second "Usage" heading (issue 12, polish).
    usage = blocks[1]["text"]["text"]
    assert usage.startswith("*Usage:* `/pipeline status NAME &lt;stage&gt;`")
    assert "```" not in usage and usage.count("Usage") == 1
    assert len(check_message(error_blocks(message="boom"))) == 1
    check_message(error_blocks(message=escape("<&>" * 3000), usage=escape("<&>" * 3000)))
    assert check_message(notice_blocks(message="Started `abc`")) == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "Started `abc`"}}
    ]
    check_message(notice_blocks(message="&amp;" * 1000))


def test_fallback_text() -> None:
    assert fallback_text(blocks=render_status(rich_state())) == "web-app · v3"
    assert fallback_text(blocks=error_blocks(message="nope")) == "⚠️ nope"
    status = status_blocks(
        state=pipeline_state(EVIL, []),
        executions=[],
        approvals_allowed=False,
        operate_allowed=False,
        now=NOW,
    )
    assert fallback_text(blocks=status) == escape(EVIL) + " · v3"
    assert fallback_text(blocks=[{"type": "divider"}]) == "pipebot"
