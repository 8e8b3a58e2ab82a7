"""The App Home tab (``bot/slack/home.py``)."""

from __future__ import annotations

from bot.slack import ids
from bot.slack.home import home_view
from bot.slack.ids import ButtonRef
from tests.blockcheck import (
    E1,
    NOW,
    ago,
    check_view,
    execution_summary,
    pipeline_summary,
    refs,
    snapshot,
    texts,
)

# --------------------------------------------------------------------------- App Home


def test_home_lists_approvals_for_the_viewer_and_pipelines() -> None:
    view = check_view(
        home_view(
            pipelines=[
                (pipeline_summary("web-app"), execution_summary(E1, "InProgress")),
                (pipeline_summary("docs"), None),
            ],
            approvals=[("web-app", "Gate", "Approve", E1, ago(hours=1))],
            now=NOW,
            trial_mode=True,
        )
    )
    assert view["type"] == "home"
    text = texts(view)
    assert "Trial mode" in text and "`PIPEBOT_ADMINS`" in text
    assert "⏳ *web-app* · Gate / Approve · execution `11111111` · since <!date^" in text
    assert "🔄 *web-app* v1 · In progress" in text and "⚪ *docs* v1 · never run" in text
    expected = ButtonRef(pipeline="web-app", execution=E1, stage="Gate", action="Approve")
    assert refs(view["blocks"], ids.APPROVE) == refs(view["blocks"], ids.REJECT) == [expected]
    snapshot("home", view)
    quiet = check_view(home_view(pipelines=[], approvals=[], now=NOW, trial_mode=False))
    assert "Trial mode" not in texts(quiet)
    assert "Nothing waits for you." in texts(quiet) and "No pipelines yet" in texts(quiet)


def test_home_with_many_approvals_and_pipelines_stays_within_100_blocks() -> None:
    name = ("<&>" * 40)[:100]
    view = check_view(
        home_view(
            pipelines=[
                (pipeline_summary(f"{name[:95]}{i:03d}"), execution_summary(E1, "Failed"))
                for i in range(200)
            ],
            approvals=[(name, name, name, E1, None) for _ in range(60)],
            now=NOW,
            trial_mode=True,
        )
    )
    assert len(refs(view["blocks"], ids.APPROVE)) == 20
    assert "…and 40 more" in texts(view)
