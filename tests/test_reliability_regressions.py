"""Regression tests for the bugs the reliability suite found (issue 6), in the fast suite.

Each test reproduces one failure deterministically (a simulated crash is an exception that
escapes at the moment the process would die) and fails without its fix.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest

from bot.app import wsgi_app
from bot.ops.approvals import PENDING_TAKEOVER_SECONDS, decide_approval
from bot.slack import ids
from bot.slack.ids import ButtonRef
from reliability.harness import wsgi_post
from tests.helpers import wait_for
from tests.slack_bot import (
    ADMIN,
    Bot,
    release,
    text_of,
    waiting_approval,
)
from tests.slack_requests import sign


class Crash(BaseException):
    """The process dying at this point: nothing after it runs (not even ``except Exception``)."""


def _execution_status(bot: Bot, name: str, execution_id: str) -> str:
    return str(
        bot.engine.get_pipeline_execution(pipelineName=name, pipelineExecutionId=execution_id)[
            "pipelineExecution"
        ]["status"]
    )


def test_an_approval_cut_short_by_a_crash_can_still_be_answered(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the crash check: the click was recorded as "approved" before the answer
    reached the engine, so a process killed in between left the gate waiting while every later
    click was told "Already approved": the execution could never finish."""
    bot.engine.create_pipeline(pipeline=release())
    token = waiting_approval(bot)
    execution = bot.engine.list_pipeline_executions(pipelineName="web")[
        "pipelineExecutionSummaries"
    ][0]["pipelineExecutionId"]
    answer = bot.services.ops.answer

    def die(*args: Any, **kwargs: Any) -> Any:
        raise Crash

    monkeypatch.setattr(bot.services.ops, "answer", die)
    with pytest.raises(Crash):
        decide_approval(
            ops=bot.services.ops,
            sessions=bot.services.sessions,
            now=bot.services.now(),
            user_id=ADMIN,
            user_name=lambda: "admin",
            pipeline="web",
            stage="Gate",
            action="Approve",
            approved=True,
            comment=None,
            execution_id=execution,
        )
    monkeypatch.setattr(bot.services.ops, "answer", answer)  # the restarted process
    assert waiting_approval(bot) == token  # the engine never got the answer

    ref = ButtonRef(pipeline="web", execution=execution, stage="Gate", action="Approve")
    bot.click(ids.APPROVE, ref, name="soon")
    soon = text_of(bot.reply("soon"))
    assert "Already approved" not in soon
    assert "right now" in soon  # an answer may still be on its way: not taken over yet

    started = bot.services.now()
    later = started + timedelta(seconds=PENDING_TAKEOVER_SECONDS + 1)
    monkeypatch.setattr(bot.services, "now", lambda: later)
    bot.click(ids.APPROVE, ref, name="later")
    assert "approved" in text_of(bot.reply("later"))
    wait_for(
        lambda: _execution_status(bot, "web", execution) == "Succeeded",
        what="the approval taken over to let the execution finish",
    )
    bot.click(ids.APPROVE, ref, name="again")
    again = text_of(bot.reply("again"))
    assert "Already approved" in again or "no longer waiting" in again
    assert json.dumps(token) not in again


@pytest.mark.parametrize(
    "payload",
    ["", "not json", "[1, 2]", '{"type": "block_actions", "actions": []}', "null"],
)
def test_a_malformed_signed_payload_is_a_400_not_a_500(bot: Bot, payload: str) -> None:
    """Found by the fuzzer: Bolt parses the body (and routes on it) before any listener runs;
    a payload that is not a JSON object, or a block_actions without actions, raised out of the
    WSGI application, which waitress answers with a 500."""
    body = "payload=" + quote(payload, safe="")
    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}
    status, answer = wsgi_post(wsgi_app(bot.app), body, headers)
    assert status == 400
    assert b"Traceback" not in answer
