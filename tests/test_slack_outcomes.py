"""A message after a click (``bot/slack/outcomes.py``): stale buttons dropped, the
outcome appended."""

from __future__ import annotations

from bot.slack import ids
from bot.slack.ids import ButtonRef
from bot.slack.messages import delete_confirm_blocks
from bot.slack.outcomes import outcome_blocks
from bot.slack.text import slack_date
from tests.blockcheck import (
    E1,
    NOW,
    action_ids,
    buttons,
    check_message,
    execution_summary,
    render_status,
    rich_executions,
    rich_state,
    texts,
)

# --------------------------------------------------------------------------- after a click


def test_outcome_drops_buttons_that_no_longer_apply() -> None:
    original = render_status(rich_state(), [execution_summary(E1, "InProgress")])
    outcome = f"✅ Approved Gate / Approve&lt;&amp;&gt; by <@U123ABC> at {slack_date(NOW)}"
    after = check_message(outcome_blocks(original=original, outcome=outcome))
    assert set(action_ids(original)) == {
        ids.APPROVE,
        ids.REJECT,
        ids.RETRY_FAILED,
        ids.RETRY_ALL,
        ids.VIEW_LOG,
        ids.START,
        ids.STOP,
        ids.REFRESH_STATUS,
    }
    assert action_ids(after) == [ids.VIEW_LOG, ids.START, ids.REFRESH_STATUS]
    assert after[-1] == {"type": "context", "elements": [{"type": "mrkdwn", "text": outcome}]}
    non_actions = [b for b in original if b["type"] != "actions"]
    assert [b for b in after[:-1] if b["type"] != "actions"] == non_actions
    # a second outcome is appended below the first
    again = check_message(
        outcome_blocks(
            original=after,
            outcome=f"🔁 Retried &lt;Build&gt; by <@U999> at {slack_date(NOW)}: “x &amp; y”",
        )
    )
    assert again[-2] == after[-1]
    assert again[-1]["elements"][0]["text"].startswith("🔁 Retried &lt;Build&gt; by <@U999>")
    assert again[-1]["elements"][0]["text"].endswith(": “x &amp; y”")


def test_outcome_of_a_delete_confirmation_removes_both_buttons() -> None:
    original = check_message(delete_confirm_blocks(pipeline="a<b>"))
    assert "Delete pipeline *a&lt;b&gt;*?" in texts(original)
    delete, cancel = buttons(original)
    assert delete["action_id"] == ids.DELETE_CONFIRM and delete["style"] == "danger"
    assert cancel["action_id"] == ids.DELETE_CANCEL and "style" not in cancel
    assert ButtonRef.decode(delete["value"]) == ButtonRef(pipeline="a<b>")
    after = check_message(outcome_blocks(original=original, outcome="🗑 Deleted"))
    assert action_ids(after) == []
    assert after[-1]["elements"][0]["text"] == "🗑 Deleted"


def test_outcome_of_blocks_as_slack_returns_them_and_of_a_full_message() -> None:
    original = render_status(rich_state(), rich_executions())
    from_slack = [{**b, "block_id": f"b{i}"} for i, b in enumerate(original)]
    after = check_message(outcome_blocks(original=from_slack, outcome="done"))
    assert all("block_id" in b for b in after[:-1])
    full = [{"type": "section", "text": {"type": "mrkdwn", "text": f"{i}"}} for i in range(50)]
    assert len(check_message(outcome_blocks(original=full, outcome="done"))) == 50


def test_outcome_keeps_every_button_of_a_fresh_rendering_when_asked() -> None:
    fresh = render_status(rich_state(), [execution_summary(E1, "InProgress")])
    after = check_message(outcome_blocks(original=fresh, outcome="done", drop=()))
    assert action_ids(after) == action_ids(fresh)
    assert after[:-1] == fresh
