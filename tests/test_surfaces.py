"""The one check -> act -> audit -> reply path: a command, a click and a form that refuse, fail
or hit an unexpected error are all answered on their own surface and all audited.

Before the surfaces shared ``handlers.common.perform``, a click that hit an unexpected error was
answered but not audited, and a form that hit one got no answer and no audit entry at all.
"""

from __future__ import annotations

from typing import Any

import pytest

from bot.slack import ids
from bot.slack.ids import ButtonRef
from handlers.common import APOLOGY
from storage import bot_store
from storage.db import transaction
from tests.helpers import wait_for
from tests.slack_bot import OTHER, Bot, release, text_of, waiting_approval
from tests.slack_requests import bolt_request, home_block_action, view_submission


def _audit(bot: Bot, what: str) -> list[Any]:
    with bot.services.sessions() as session:
        entries = bot_store.list_audit(session=session, pipeline="web", limit=50)
    return [e for e in entries if e.what == what]


def _explode(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("a bug, not the user's fault")


def _stop_form(bot: Bot, *, user: str, execution: str | None = None) -> None:
    ref = ButtonRef(pipeline="web", execution=execution, channel="C1", message_ts="1.0")
    body, headers = view_submission(
        callback_id=ids.STOP_VIEW,
        values={
            ids.STOP_MODE_BLOCK: {
                ids.STOP_MODE_INPUT: {
                    "type": "radio_buttons",
                    "selected_option": {"value": "wait"},
                }
            },
            ids.STOP_REASON_BLOCK: {
                ids.STOP_REASON_INPUT: {"type": "plain_text_input", "value": "flaky"}
            },
        },
        private_metadata=ref.encode(),
        user_id=user,
    )
    assert bot.app.dispatch(bolt_request(body, headers)).status == 200


def _form_answer(bot: Bot, user: str) -> str:
    posts = bot.fake.wait_for("chat.postEphemeral", where=lambda c: c.params.get("user") == user)
    return text_of(posts[-1])


def _wait_audited(bot: Bot, what: str, outcome: str) -> Any:
    return wait_for(
        lambda: next((e for e in _audit(bot, what) if e.outcome == outcome), None),
        what=f"the {outcome} audit entry of {what}",
    )


def test_a_command_that_hits_an_unexpected_error_is_answered_and_audited(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot.engine.create_pipeline(pipeline=release())
    monkeypatch.setattr(bot.services.ops, "start", _explode)
    bot.command("start web", name="start")
    answer = bot.reply("start")
    assert answer.params["response_type"] == "ephemeral"
    assert APOLOGY in text_of(answer)
    assert "RuntimeError" not in text_of(answer) and "Traceback" not in text_of(answer)
    entry = _wait_audited(bot, "start", "error")
    assert entry.kind == "command" and entry.detail == "internal error"


def test_a_click_that_hits_an_unexpected_error_is_answered_and_audited(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot.engine.create_pipeline(pipeline=release())
    monkeypatch.setattr(bot.services.ops, "start", _explode)
    bot.click(ids.START, ButtonRef(pipeline="web"), name="clicked")
    answer = bot.reply("clicked")
    assert answer.params["response_type"] == "ephemeral"
    assert APOLOGY in text_of(answer)
    entry = _wait_audited(bot, ids.START, "error")
    assert entry.kind == "click" and entry.detail == "internal error"
    assert entry.user_id == "UADMIN"


def test_a_form_that_hits_an_unexpected_error_is_answered_and_audited(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot.engine.create_pipeline(pipeline=release())
    monkeypatch.setattr(bot.services.ops, "stop", _explode)
    _stop_form(bot, user="UADMIN")
    assert APOLOGY in _form_answer(bot, "UADMIN")
    entry = _wait_audited(bot, "stop", "error")
    assert entry.kind == "view" and entry.detail == "internal error"
    assert entry.channel_id == "C1"


def test_a_form_refusal_is_answered_and_audited(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    _stop_form(bot, user=OTHER)
    answer = _form_answer(bot, OTHER)
    assert "admin" in answer.lower()
    entry = _wait_audited(bot, "stop", "refused")
    assert entry.kind == "view" and entry.user_id == OTHER
    assert bot.fake.calls_to("chat.postMessage") == []  # nothing said in the channel


def test_a_form_whose_backend_call_fails_is_answered_and_audited(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    _stop_form(bot, user="UADMIN", execution="00000000-0000-0000-0000-000000000000")
    answer = _form_answer(bot, "UADMIN")
    assert "cannot be stopped" in answer and "does not exist" in answer
    entry = _wait_audited(bot, "stop", "error")
    assert entry.kind == "view" and "cannot be stopped" in (entry.detail or "")


def test_self_approval_found_while_acting_is_audited_as_a_refusal(bot: Bot) -> None:
    """The execution an approval waits for is known only once the approval is read: the
    no-self-approval rule is applied then, and audited as a refusal like any other."""
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    execution = bot.engine.list_pipeline_executions(pipelineName="web")[
        "pipelineExecutionSummaries"
    ][0]["pipelineExecutionId"]
    with transaction(bot.services.sessions) as session:
        bot_store.set_policy(
            session=session, pipeline="web", no_self_approval=True, updated_by="UADMIN"
        )
        bot_store.record_starter(
            session=session, execution_id=execution, pipeline="web", user_id="UADMIN"
        )
    bot.command("approve web", name="approve")
    answer = bot.reply("approve")
    assert answer.params["response_type"] == "ephemeral"
    assert "self-approval" in text_of(answer)
    entry = _wait_audited(bot, "approve", "refused")
    assert entry.kind == "command" and entry.execution_id == execution
    assert waiting_approval(bot)  # still waiting


def _home_click(bot: Bot, action_id: str, ref: ButtonRef, *, user: str) -> None:
    body, headers = home_block_action(action_id=action_id, value=ref.encode(), user_id=user)
    assert bot.app.dispatch(bolt_request(body, headers)).status == 200


def _direct_message(bot: Bot, user: str) -> str:
    posts = bot.fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == user)
    return text_of(posts[-1])


def test_approve_on_app_home_is_answered_and_redraws_the_home_tab(bot: Bot) -> None:
    """A click on App Home has no response_url: the outcome is told as a direct message and
    the tab is drawn afresh, so the approval no longer shows as waiting."""
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    execution = bot.engine.list_pipeline_executions(pipelineName="web")[
        "pipelineExecutionSummaries"
    ][0]["pipelineExecutionId"]
    ref = ButtonRef(pipeline="web", execution=execution, stage="Gate", action="Approve")
    _home_click(bot, ids.APPROVE, ref, user="UADMIN")
    told = _direct_message(bot, "UADMIN")
    assert "approved *Gate/Approve* of *web*" in told
    published = bot.fake.wait_for(
        "views.publish", where=lambda c: c.params.get("user_id") == "UADMIN"
    )
    assert "Nothing waits for you." in text_of(published[-1])
    entry = _wait_audited(bot, ids.APPROVE, "ok")
    assert entry.kind == "click" and entry.execution_id == execution


def test_a_refused_click_on_app_home_is_answered(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    _home_click(bot, ids.START, ButtonRef(pipeline="web"), user=OTHER)
    assert "admin" in _direct_message(bot, OTHER).lower()
    entry = _wait_audited(bot, ids.START, "refused")
    assert entry.user_id == OTHER
