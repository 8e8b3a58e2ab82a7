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
from bot.slack.modals import FormOrigin
from bot.slack.outcomes import retried_line, started_line, stopped_line
from handlers.actions import broadcast
from handlers.common import APOLOGY
from storage import bot_store, notify_store
from storage.db import transaction
from tests.helpers import commands_action, pipeline, source_action, wait_for
from tests.slack_bot import ADMIN, OTHER, Bot, release, text_of, waiting_approval
from tests.slack_requests import (
    app_home_opened,
    block_action,
    bolt_request,
    home_block_action,
    view_submission,
)


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


# --- every surface answers a click where it was made, and redraws itself (issue 12) -------------


def _latest_execution(bot: Bot, name: str = "web") -> str:
    summaries = bot.engine.list_pipeline_executions(pipelineName=name)
    return str(summaries["pipelineExecutionSummaries"][0]["pipelineExecutionId"])


def _click_message(
    bot: Bot,
    action_id: str,
    ref: ButtonRef,
    *,
    name: str,
    user: str = ADMIN,
    message_ts: str = "1700000000.000100",
    thread_ts: str | None = None,
    is_ephemeral: bool = False,
    blocks: list[dict[str, Any]] | None = None,
) -> None:
    body, headers = block_action(
        action_id=action_id,
        value=ref.encode(),
        user_id=user,
        message_ts=message_ts,
        thread_ts=thread_ts,
        is_ephemeral=is_ephemeral,
        message_blocks=blocks,
        response_url=bot.fake.response_url(name),
    )
    assert bot.app.dispatch(bolt_request(body, headers)).status == 200


def _in_channel(bot: Bot, name: str) -> Any:
    posts = bot.fake.wait_for(
        "response_url",
        where=lambda c: c.path.endswith("/" + name) and c.params["response_type"] == "in_channel",
    )
    return posts[-1]


def _said(call: Any) -> str:
    return str(call.params["text"])


def test_start_button_announces_to_the_channel_exactly_as_the_command_does(bot: Bot) -> None:
    """Issue 12, item 11: the command posted "@alice started web" to the channel, the button
    on the status card posted nothing. Now both post the same line, naming who."""
    bot.engine.create_pipeline(pipeline=release())
    bot.command("start web", name="command")
    by_command = _in_channel(bot, "command")
    started = _latest_execution(bot)
    assert _said(by_command) == started_line(user_id=ADMIN, pipeline="web", execution_id=started)

    _click_message(bot, ids.START, ButtonRef(pipeline="web"), name="card", is_ephemeral=True)
    by_button = _in_channel(bot, "card")
    clicked = wait_for(
        lambda: (e := _latest_execution(bot)) != started and e, what="the clicked execution"
    )
    assert _said(by_button) == started_line(user_id=ADMIN, pipeline="web", execution_id=clicked)
    # the card itself is redrawn in place with the outcome
    redrawn = bot.fake.wait_for(
        "response_url",
        where=lambda c: c.path.endswith("/card") and c.params.get("replace_original") is True,
    )
    assert "Started by" in text_of(redrawn[-1])


def _status(bot: Bot, execution: str) -> str:
    return str(
        bot.engine.get_pipeline_execution(pipelineName="web", pipelineExecutionId=execution)[
            "pipelineExecution"
        ]["status"]
    )


def _failing(bot: Bot) -> str:
    bot.engine.create_pipeline(
        pipeline=pipeline(
            "web",
            [
                ("Source", [source_action()]),
                ("Build", [commands_action("Build", ["test -f /nonexistent/marker"])]),
            ],
        )
    )
    execution = _latest_execution(bot)
    wait_for(lambda: _status(bot, execution) == "Failed", what="the build to fail")
    return execution


def test_retry_button_in_a_thread_announces_to_the_channel_not_the_thread(bot: Bot) -> None:
    """Issue 12, item 11: Retry on a failure's thread reply posted nothing to the channel. It
    now posts what `retry` posts, in the channel itself (not under the reply), and the reply
    is redrawn in place."""
    execution = _failing(bot)
    ref = ButtonRef(pipeline="web", execution=execution, stage="Build")
    _click_message(
        bot, ids.RETRY_ALL, ref, name="reply", thread_ts="1700000000.000001", message_ts="1.5"
    )
    posted = bot.fake.wait_for("chat.postMessage", where=lambda c: "retried" in _said(c))
    assert posted[-1].params["channel"] == "C1" and not posted[-1].params.get("thread_ts")
    assert _said(posted[-1]) == retried_line(
        user_id=ADMIN, pipeline="web", stage="Build", execution_id=execution, all_actions=True
    )
    redrawn = bot.reply("reply")
    assert redrawn.params.get("replace_original") is True
    assert [c for c in bot.fake.response_url_posts("reply") if "in_channel" in text_of(c)] == []

    wait_for(lambda: _status(bot, execution) == "Failed", what="the retried build to fail")
    bot.command(f"retry web Build {execution}", name="command")
    assert _said(_in_channel(bot, "command")).startswith(f"<@{ADMIN}> retried the failed actions")


def _approval_request(bot: Bot, execution: str) -> Any:
    """The approval request of ``execution`` the notifier posts to C1 (a thread reply also
    sent to the channel), as the fake recorded it."""
    from bot.notify.notifier import Notifier

    with transaction(bot.services.sessions) as session:
        notify_store.subscribe(session=session, pipeline="web", channel_id="C1", created_by=ADMIN)
    notifier = Notifier(
        ops=bot.services.ops,
        sessions=bot.services.sessions,
        web_client=bot.app.client,
        holder_id="test",
        permissions=bot.services.permissions,
        interval_seconds=0.5,
    )
    try:

        def request() -> Any:
            notifier.run_once()
            found = [
                c
                for c in bot.fake.calls_to("chat.postMessage")
                if c.ok and "Approval needed" in text_of(c) and execution[:8] in text_of(c)
            ]
            return found[0] if found else None

        posted = wait_for(request, what="the approval request")
    finally:
        notifier.close()
    assert posted.params.get("reply_broadcast") in (True, "true", "1", 1)
    return posted


def _approval_broadcast(bot: Bot) -> tuple[str, Any]:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    execution = _latest_execution(bot)
    return execution, _approval_request(bot, execution)


def test_a_refusal_of_a_click_on_a_broadcast_approval_request_is_told_in_the_channel(
    bot: Bot,
) -> None:
    """Issue 12, item 8: bob clicked Approve on the approval request shown in the channel and
    was refused inside the thread, which he had not opened. Slack does not say which of the
    two places a broadcast reply was clicked in: the refusal goes to the channel."""
    execution, posted = _approval_broadcast(bot)
    ref = ButtonRef(pipeline="web", execution=execution, stage="Gate", action="Approve")
    _click_message(
        bot,
        ids.APPROVE,
        ref,
        name="broadcast",
        user=OTHER,
        message_ts=str(posted.response["ts"]),
        thread_ts=str(posted.params["thread_ts"]),
        blocks=posted.params["blocks"],
    )
    told = bot.fake.wait_for("chat.postEphemeral", where=lambda c: c.params.get("user") == OTHER)[
        -1
    ]
    assert told.params["channel"] == "C1" and not told.params.get("thread_ts")
    assert "admin" in text_of(told).lower()
    _wait_audited(bot, ids.APPROVE, "refused")
    assert bot.fake.response_url_posts("broadcast") == []  # not into the thread


def test_a_refusal_of_a_click_in_a_thread_only_reply_is_told_in_the_thread(bot: Bot) -> None:
    """A reply that lives only in the thread (a failure) is answered there, through its
    response_url, which Slack ties to where the button is."""
    execution = _failing(bot)
    ref = ButtonRef(pipeline="web", execution=execution, stage="Build")
    _click_message(
        bot, ids.RETRY_FAILED, ref, name="thread", user=OTHER, thread_ts="1700000000.000001"
    )
    told = bot.reply("thread")
    assert told.params["response_type"] == "ephemeral" and "admin" in text_of(told).lower()
    assert bot.fake.calls_to("chat.postEphemeral") == []


def _status_card(bot: Bot) -> list[dict[str, Any]]:
    bot.command("status web", name="status")
    return list(bot.reply("status").params["blocks"])


def _submit(bot: Bot, callback_id: str, metadata: str, values: dict[str, Any]) -> None:
    body, headers = view_submission(
        callback_id=callback_id, values=values, private_metadata=metadata
    )
    assert bot.app.dispatch(bolt_request(body, headers)).status == 200


def test_a_stop_form_from_an_ephemeral_status_redraws_it_through_its_response_url(
    bot: Bot,
) -> None:
    """Issue 12, item 5: the Stop form opened from a `status` reply stopped the execution, then
    called chat.update on the ephemeral reply: Slack answers message_not_found. The form now
    keeps the click's response_url and redraws the reply through it, as Refresh does."""
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    execution = _latest_execution(bot)
    card = _status_card(bot)
    ref = ButtonRef(pipeline="web", execution=execution)
    _click_message(bot, ids.STOP, ref, name="card", is_ephemeral=True, blocks=card)
    view = bot.fake.wait_for("views.open")[-1].params["view"]
    assert FormOrigin.decode(view["private_metadata"]).response_url == bot.fake.response_url("card")
    _submit(
        bot,
        ids.STOP_VIEW,
        view["private_metadata"],
        {ids.STOP_MODE_BLOCK: {ids.STOP_MODE_INPUT: {"selected_option": {"value": "abandon"}}}},
    )
    redrawn = bot.reply("card")
    assert redrawn.params.get("replace_original") is True
    assert "stopped and abandoned" in text_of(redrawn)
    assert ids.STOP not in text_of(redrawn)  # the execution is over: no Stop button
    assert bot.fake.calls_to("chat.update") == []
    assert _wait_audited(bot, "stop", "ok").execution_id == execution
    # and the channel hears it as the `stop` command tells it
    posted = bot.fake.wait_for("chat.postMessage", where=lambda c: "abandoned" in _said(c))
    assert _said(posted[-1]) == stopped_line(
        user_id=ADMIN, pipeline="web", execution_id=execution, abandon=True
    )


def test_a_reject_form_from_an_ephemeral_status_redraws_it_through_its_response_url(
    bot: Bot,
) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    execution = _latest_execution(bot)
    card = _status_card(bot)
    ref = ButtonRef(pipeline="web", execution=execution, stage="Gate", action="Approve")
    _click_message(bot, ids.REJECT, ref, name="card", is_ephemeral=True, blocks=card)
    view = bot.fake.wait_for("views.open")[-1].params["view"]
    _submit(
        bot,
        ids.REJECT_VIEW,
        view["private_metadata"],
        {ids.COMMENT_BLOCK: {ids.COMMENT_INPUT: {"type": "plain_text_input", "value": "no"}}},
    )
    redrawn = bot.reply("card")
    assert redrawn.params.get("replace_original") is True and "rejected" in text_of(redrawn)
    assert bot.fake.calls_to("chat.update") == []


def test_a_stop_form_from_a_channel_message_still_updates_it_in_place(bot: Bot) -> None:
    """A message that is not ephemeral keeps being redrawn with chat.update (no response_url
    is kept, which would expire after 30 minutes)."""
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    ref = ButtonRef(pipeline="web", execution=_latest_execution(bot))
    _click_message(bot, ids.STOP, ref, name="message", message_ts="1.7")
    view = bot.fake.wait_for("views.open")[-1].params["view"]
    assert FormOrigin.decode(view["private_metadata"]).response_url is None
    _submit(bot, ids.STOP_VIEW, view["private_metadata"], {})
    update = bot.fake.wait_for("chat.update")[-1]
    assert update.params["ts"] == "1.7" and "is stopping" in text_of(update)


def _self_approval_off_and_bob_starts(bot: Bot) -> str:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    bot.engine.stop_pipeline_execution(
        pipelineName="web", pipelineExecutionId=_latest_execution(bot), abandon=True
    )
    with transaction(bot.services.sessions) as session:
        bot_store.add_access(
            session=session, pipeline="web", role="operators", subject=OTHER, added_by=ADMIN
        )
        bot_store.set_policy(
            session=session, pipeline="web", no_self_approval=True, updated_by=ADMIN
        )
    bot.command("start web", user=OTHER, name="bob-starts")
    bot.reply("bob-starts")
    execution = _latest_execution(bot)

    def gate_waits() -> bool:
        latest = bot.engine.get_pipeline_state(name="web")["stageStates"][2].get(
            "latestExecution", {}
        )
        return latest.get("pipelineExecutionId") == execution and latest.get("status") == (
            "InProgress"
        )

    wait_for(gate_waits, what="bob's execution at the gate")
    return execution


def _home_of(bot: Bot, user: str) -> str:
    body, headers = app_home_opened(user_id=user)
    before = [c for c in bot.fake.calls_to("views.publish") if c.params["user_id"] == user]
    assert bot.app.dispatch(bolt_request(body, headers)).status == 200
    published = bot.fake.wait_for(
        "views.publish", count=len(before) + 1, where=lambda c: c.params["user_id"] == user
    )
    return text_of(published[-1])


def test_home_lists_only_the_approvals_the_viewer_may_give(bot: Bot) -> None:
    """Issue 12, item 8: with self-approval off, bob's Home listed the approval of the
    execution he started, with buttons that could only refuse him."""
    execution = _self_approval_off_and_bob_starts(bot)
    bobs = _home_of(bot, OTHER)
    assert "Nothing waits for you." in bobs and ids.APPROVE not in bobs
    admins = _home_of(bot, ADMIN)
    assert execution[:8] in admins and ids.APPROVE in admins


def test_every_click_on_app_home_redraws_the_tab_even_a_refused_one(bot: Bot) -> None:
    """A Home tab drawn before bob lost the right keeps its buttons: his click is refused by
    direct message and the tab is drawn again, without them."""
    execution = _self_approval_off_and_bob_starts(bot)
    ref = ButtonRef(pipeline="web", execution=execution, stage="Gate", action="Approve")
    _home_click(bot, ids.APPROVE, ref, user=OTHER)
    assert "self-approval" in _direct_message(bot, OTHER)
    published = bot.fake.wait_for("views.publish", where=lambda c: c.params.get("user_id") == OTHER)
    assert ids.APPROVE not in text_of(published[-1])
    assert waiting_approval(bot)


def test_reject_from_app_home_answers_and_redraws_the_tab(bot: Bot) -> None:
    """The Reject form opened from App Home (no channel) tells the outcome by direct message
    and draws the tab again without the approval."""
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    execution = _latest_execution(bot)
    ref = ButtonRef(pipeline="web", execution=execution, stage="Gate", action="Approve")
    _home_click(bot, ids.REJECT, ref, user=ADMIN)
    view = bot.fake.wait_for("views.open")[-1].params["view"]
    assert FormOrigin.decode(view["private_metadata"]).ref.channel is None
    assert ids.APPROVE in text_of(bot.fake.wait_for("views.publish")[-1])  # still waiting
    _submit(
        bot,
        ids.REJECT_VIEW,
        view["private_metadata"],
        {ids.COMMENT_BLOCK: {ids.COMMENT_INPUT: {"type": "plain_text_input", "value": "no"}}},
    )
    assert "rejected *Gate/Approve* of *web*: no" in _direct_message(bot, ADMIN)
    bot.fake.wait_for("views.publish", where=lambda c: "Nothing waits for you." in text_of(c))


def test_broadcast_replies_are_known_by_slacks_subtype_or_by_what_pipebot_posted(
    bot: Bot,
) -> None:
    """Slack marks a reply also sent to the channel ``thread_broadcast``; the sandbox does
    not, and pipebot knows it from what it posted."""
    assert broadcast(bot.services, {"message": {"subtype": "thread_broadcast"}})
    assert not broadcast(bot.services, {"container": {"channel_id": "C1", "message_ts": "9.9"}})
    _, posted = _approval_broadcast(bot)
    container = {"channel_id": "C1", "message_ts": str(posted.response["ts"])}
    assert broadcast(bot.services, {"container": container})


def test_the_approval_request_names_only_who_may_approve(bot: Bot) -> None:
    """Issue 12, item 8: with self-approval off, bob (an operator, so an approver of a
    pipeline without an approvers list) started the execution, and its approval request said
    "Approvers: @bob" when only the admin could approve it."""
    execution = _self_approval_off_and_bob_starts(bot)
    said = text_of(_approval_request(bot, execution))
    assert f"Approvers: <@{ADMIN}>" in said
    assert f"<@{OTHER}>" not in said
