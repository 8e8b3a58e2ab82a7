"""Every string a user controls passes one escaping boundary before it reaches Slack's mrkdwn.

Markup (a channel-wide ping, a user mention, a disguised link) is sent through every command
argument, form field and button value; then everything the bot sent to Slack is scanned: no
mrkdwn text (a message's ``text``, a ``mrkdwn`` text object) may carry the markup live. Slack
treats ``<...>`` in mrkdwn as a mention or a link and ``&``, ``<``, ``>`` must be escaped
(https://api.slack.com/reference/surfaces/formatting#escaping).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bot.slack import ids
from bot.slack.ids import ButtonRef
from tests.fake_slack import Call, FakeSlack
from tests.helpers import (
    approval_action,
    commands_action,
    commit,
    pipeline,
    source_action,
    wait_for,
)
from tests.slack_bot import Bot, release, waiting_approval
from tests.slack_requests import bolt_request, view_submission
from tests.test_notifier import Harness

PING = "<!channel>"
MENTION = "<@U0EVIL>"
LINK = "<http://evil.test|click here>"
MARKUP = f"{PING} {MENTION} {LINK} &"
LIVE = (PING, MENTION, "<http://evil.test")


def _mrkdwn(value: Any, *, top: bool = True) -> Iterator[str]:
    """Every mrkdwn string in a Web API call's parameters (or a response_url post)."""
    if isinstance(value, dict):
        if value.get("type") == "mrkdwn" and isinstance(value.get("text"), str):
            yield value["text"]
        if top and isinstance(value.get("text"), str):
            yield value["text"]  # a message's fallback text is mrkdwn too
        for item in value.values():
            yield from _mrkdwn(item, top=False)
    elif isinstance(value, list):
        for item in value:
            yield from _mrkdwn(item, top=False)


def _live_markup(calls: list[Call]) -> list[tuple[str, str]]:
    found = []
    for call in calls:
        for text in _mrkdwn(call.params):
            for live in LIVE:
                if live in text:
                    found.append((call.method, text[:300]))
    return found


def _commands() -> list[str]:
    m = MARKUP
    return [
        f"help {m}",
        f"status {m}",
        f"history web {m}",
        f"execution web {m}",
        f"start web --var K={m}",
        f"start {m}",
        f"stop web --reason {m}",
        f"retry web {m}",
        f"approve web Gate/Approve {m}",
        f"reject web {m}",
        f"approve web {m}/Approve",
        f"disable web Gate {m}",
        f"enable web {m}",
        f"create {m}",
        f"edit {m}",
        f"delete {m}",
        f"access web operators add {m}",
        f"audit {m}",
        f"subscribe web --events {m}",
        f"subscribe web --digest {m}",
        f"unsubscribe {m}",
        f"{m}",
        f"stauts {m}",
    ]


def test_markup_in_any_command_argument_never_reaches_slack_live(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    for index, text in enumerate(_commands()):
        response = bot.command(text, name=f"c{index}")
        if response.body:  # answered in the ack (a parse error)
            assert not any(live in response.body for live in LIVE), (text, response.body)
            continue
        bot.reply(f"c{index}")
    # A variable's value is shown again by `execution`, `status` and `history`.
    bot.command(f"start web --var NOTE={MARKUP.replace(' ', '_')}", name="started")
    bot.reply("started")
    latest = bot.engine.list_pipeline_executions(pipelineName="web", maxResults=1)[
        "pipelineExecutionSummaries"
    ][0]["pipelineExecutionId"]
    for index, text in enumerate((f"execution web {latest}", "status web", "history web")):
        bot.command(text, name=f"read{index}")
        bot.reply(f"read{index}")
    assert _live_markup(bot.fake.calls) == []


def test_markup_in_a_reject_comment_never_reaches_slack_live(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    bot.command(f"reject web Gate/Approve {MARKUP}", name="reject")
    assert "rejected" in str(bot.reply("reject").params)
    assert _live_markup(bot.fake.calls) == []


def test_markup_in_forms_never_reaches_slack_live(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    execution = bot.engine.list_pipeline_executions(pipelineName="web")[
        "pipelineExecutionSummaries"
    ][0]["pipelineExecutionId"]
    reject_ref = ButtonRef(
        pipeline="web", execution=execution, stage="Gate", action="Approve", channel="C1"
    )
    body, headers = view_submission(
        callback_id=ids.REJECT_VIEW,
        values={
            ids.COMMENT_BLOCK: {ids.COMMENT_INPUT: {"type": "plain_text_input", "value": MARKUP}}
        },
        private_metadata=reject_ref.encode(),
    )
    bot.app.dispatch(bolt_request(body, headers))
    bot.fake.wait_for("chat.postMessage", where=lambda c: "rejected" in str(c.params))
    stop_ref = ButtonRef(pipeline="web", channel="C1")
    body, headers = view_submission(
        callback_id=ids.STOP_VIEW,
        values={
            ids.STOP_REASON_BLOCK: {
                ids.STOP_REASON_INPUT: {"type": "plain_text_input", "value": MARKUP}
            }
        },
        private_metadata=stop_ref.encode(),
    )
    bot.app.dispatch(bolt_request(body, headers))
    wait_for(
        lambda: (
            len(bot.fake.calls_to("chat.postEphemeral"))
            + len(bot.fake.calls_to("chat.postMessage"))
            >= 2
        ),
        what="the stop form's answer",
    )
    assert _live_markup(bot.fake.calls) == []


def test_markup_in_forged_button_values_never_reaches_slack_live(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    forged = [
        (ids.START, ButtonRef(pipeline=MARKUP)),
        (ids.APPROVE, ButtonRef(pipeline="web", stage=MARKUP, action=MARKUP)),
        (ids.RETRY_FAILED, ButtonRef(pipeline="web", stage=MARKUP, execution=MARKUP)),
        (ids.VIEW_LOG, ButtonRef(pipeline="web", execution=MARKUP)),
        (ids.DELETE_CANCEL, ButtonRef(pipeline=MARKUP)),
        (ids.DELETE_CONFIRM, ButtonRef(pipeline=MARKUP)),
        (ids.REFRESH_STATUS, ButtonRef(pipeline=MARKUP)),
    ]
    for index, (action_id, ref) in enumerate(forged):
        bot.click(action_id, ref, name=f"b{index}")
        bot.reply(f"b{index}")
    assert _live_markup(bot.fake.calls) == []


def test_markup_from_a_declaration_a_commit_and_a_log_never_reaches_channels_live(
    engine: Any, database_url: str, fake: FakeSlack, repos_dir: Path
) -> None:
    """What the notifier posts: a commit message, an approval's CustomData and link, a
    failed action's output and summary, a stop reason, all written by someone other than the
    reader of the channel."""
    h = Harness(engine, database_url, fake)
    # The build fails only once the notifier has seen it running, so its failure is a change
    # the notifier watches happen, whatever the machine's speed (it raced the first read).
    gate = repos_dir.parent / "fail-now"
    wait = f"while [ ! -f {gate} ]; do sleep 0.05; done"
    try:
        commit(repos_dir / "app", {"app.txt": "v2\n"}, f"Ship {MARKUP}")
        engine.create_pipeline(
            pipeline=pipeline(
                "web",
                [
                    ("Source", [source_action()]),
                    (
                        "Gate",
                        [
                            approval_action(
                                configuration={
                                    "CustomData": f"Check {MARKUP}",
                                    "ExternalEntityLink": "https://example.test/<!channel>",
                                }
                            )
                        ],
                    ),
                ],
            )
        )
        engine.create_pipeline(
            pipeline=pipeline(
                "broken",
                [
                    ("Source", [source_action()]),
                    ("Build", [commands_action("Build", [wait, f"echo '{MARKUP}'", "exit 3"])]),
                ],
            )
        )
        for name in ("web", "broken"):
            h.subscribe(name, "C1")
        notifier = h.notifier()
        h.pump(
            notifier,
            lambda: (
                bool(h.replies_with("C1", "Approval")) and len(h.posts("C1", thread=False)) == 2
            ),
            "the approval request and both parent messages",
        )
        gate.touch()
        h.pump(notifier, lambda: bool(h.replies_with("C1", "Build")), "the failure reply")
        execution = engine.list_pipeline_executions(pipelineName="web")[
            "pipelineExecutionSummaries"
        ][0]["pipelineExecutionId"]
        engine.stop_pipeline_execution(
            pipelineName="web", pipelineExecutionId=execution, abandon=True, reason=MARKUP
        )
        h.pump(notifier, lambda: h.execution_status("web") == "Stopped", "the stop")
        h.pump(notifier, lambda: not h.pending(), "the outbox to drain")
    finally:
        h.db.dispose()
    shown = [text for call in fake.calls for text in _mrkdwn(call.params)]
    # The markup did reach the messages, escaped: the commit, CustomData, the log, the reason.
    for source in ("Ship ", "Check ", "Stopped"):
        assert any(source in t and "&lt;!channel&gt;" in t for t in shown), source
    assert _live_markup(fake.calls) == []
