"""Issue 6, point 6: only authenticated, authorised actions; secrets and tokens stay inside.

* Requests with a bad, stale or missing signature, or a body changed after signing, are refused
  (401) and do nothing; a replayed signed click acts once.
* With every secret configured and logging at DEBUG, a run through commands, clicks, a failing
  Slack call and a crashing handler leaves none of them in the logs.
* Every button and every command that changes something, and every form, refuses a user who
  may not do it (and audits the refusal); the walk covers the registry, so a new mutating
  command or button without a case fails here.
* Approval tokens appear in nothing pipebot sends to Slack.
* Commands actions run as pipebot's own OS user (README, The embedded engine).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import pytest
from pydantic import SecretStr

from bot.app import build_app, build_services, make_web_client
from bot.logging_setup import configure_logging
from bot.notify.notifier import Notifier
from bot.ops.permissions import Permission
from bot.settings import Settings
from bot.slack import ids
from bot.slack.ids import ButtonRef
from handlers.actions import ACTIONS
from handlers.grammar import REGISTRY
from reliability.figures import record
from reliability.harness import Secrets
from storage import bot_store, notify_store
from storage.db import make_engine, make_session_factory, transaction
from tests.fake_slack import FakeSlack
from tests.helpers import commands_action, pipeline, source_action, wait_for
from tests.slack_bot import ADMIN, OTHER, Bot, release, text_of, waiting_approval
from tests.slack_requests import (
    SIGNING_SECRET,
    app_home_opened,
    block_action,
    bolt_request,
    sign,
    slash_command,
    view_submission,
)

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


def _first_execution(bot: Bot, name: str = "web") -> str:
    return str(
        bot.engine.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"][-1][
            "pipelineExecutionId"
        ]
    )


def _audit(bot: Bot) -> list[Any]:
    with bot.services.sessions() as session:
        return list(bot_store.list_audit(session=session, limit=1000))


# --- signatures ------------------------------------------------------------------------------


def test_bad_stale_and_replayed_signatures_are_refused(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    before = len(
        bot.engine.list_pipeline_executions(pipelineName="web")["pipelineExecutionSummaries"]
    )
    body, headers = slash_command(text="start web", response_url=bot.fake.response_url("sig"))
    stale_ts = int(time.time()) - 6 * 60
    refused = {
        "wrong secret": {**headers, **sign(body, secret="not-the-secret")},
        "stale (6 minutes old)": {**headers, **sign(body, timestamp=stale_ts)},
        "no signature": {k: v for k, v in headers.items() if k != "X-Slack-Signature"},
        "no timestamp": {k: v for k, v in headers.items() if k != "X-Slack-Request-Timestamp"},
        "garbage signature": {**headers, "X-Slack-Signature": "v0=" + "f" * 64},
    }
    for why, bad_headers in refused.items():
        assert bot.app.dispatch(bolt_request(body, bad_headers)).status == 401, why
    tampered = body.replace("start+web", "delete+web")
    assert tampered != body
    assert bot.app.dispatch(bolt_request(tampered, headers)).status == 401
    time.sleep(0.5)
    assert not bot.fake.response_url_posts("sig")
    after = bot.engine.list_pipeline_executions(pipelineName="web")["pipelineExecutionSummaries"]
    assert len(after) == before  # nothing started

    # A signed click replayed (within Slack's 5 minutes) acts once.
    execution = _first_execution(bot)
    ref = ButtonRef(pipeline="web", execution=execution, stage="Gate", action="Approve")
    click_body, click_headers = block_action(
        action_id=ids.APPROVE, value=ref.encode(), response_url=bot.fake.response_url("replay")
    )
    for _ in range(3):
        assert bot.app.dispatch(bolt_request(click_body, click_headers)).status == 200
    replies = bot.fake.wait_for(
        "response_url", count=3, where=lambda c: c.path.endswith("/replay"), timeout=30
    )
    texts = [str(r.params.get("text")) for r in replies]
    acted = [t for t in texts if " approved " in t and not t.startswith("Already")]
    assert len(acted) == 1, texts
    details = bot.engine.list_action_executions(
        pipelineName="web", filter={"pipelineExecutionId": execution}
    )["actionExecutionDetails"]
    assert [d["status"] for d in details if d["actionName"] == "Approve"] == ["Succeeded"]
    record("signatures", refused=len(refused) + 1, replays=2, replays_acted=0)


# --- secrets in logs -------------------------------------------------------------------------


def test_no_secret_ever_reaches_the_logs(
    engine: Any, database_url: str, fake: FakeSlack, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = Secrets()
    config = Settings(
        SLACK_BOT_TOKEN=SecretStr(secrets.bot_token),
        SLACK_SIGNING_SECRET=SecretStr(SIGNING_SECRET),
        SLACK_API_URL=fake.base_url,
        PIPEBOT_ADMINS=ADMIN,
        DATABASE_URL=database_url,
        AWS_ACCESS_KEY_ID=SecretStr(secrets.aws_access_key_id),
        AWS_SECRET_ACCESS_KEY=SecretStr(secrets.aws_secret_access_key),
        AWS_SESSION_TOKEN=SecretStr(secrets.aws_session_token),
        LOG_LEVEL="DEBUG",
    )
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging(level="DEBUG", secrets=config.secret_values())
    try:
        db = make_engine(database_url)
        sessions = make_session_factory(db)
        web_client = make_web_client(config)
        services = build_services(
            settings=config, pipeline_client=engine, sessions=sessions, web_client=web_client
        )
        app = build_app(settings=config, services=services, web_client=web_client)
        bot = Bot(app=app, fake=fake, engine=engine, services=services)
        bot.engine.create_pipeline(pipeline=release())
        waiting_approval(bot)
        fake.fail_next("users.info", status=500, times=2)  # a failing Web API call, logged
        for text in ("help", "status web", "start web", "approve web Gate/Approve ok", "nope"):
            assert bot.command(text, name=text.split()[0]).status == 200
        bot.reply("approve")

        def crash(*_: Any, **__: Any) -> Any:
            raise RuntimeError(
                f"boom {secrets.bot_token} {secrets.aws_secret_access_key} {SIGNING_SECRET}"
            )

        services.ops.state = crash  # type: ignore[method-assign]
        bot.command("status web", name="crash")
        bot.reply("crash")
        time.sleep(0.5)
        logging.getLogger("pipebot.test").error(
            "echo of every secret: %s",
            " ".join([*secrets.values().values(), "xoxb-0000-unconfigured-token"]),
        )
        db.dispose()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    logs = capsys.readouterr().err
    assert "slack_sdk" in logs and "Traceback" in logs  # DEBUG output and a logged crash
    leaked = [
        name
        for name, value in {
            **secrets.values(),
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "unconfigured token": "xoxb-0000-unconfigured-token",
        }.items()
        if value in logs
    ]
    assert not leaked, leaked
    record(
        "secrets_in_logs",
        secrets_checked=len(secrets.values()) + 1,
        log_lines=logs.count("\n"),
        leaked=0,
    )


# --- authorisation ---------------------------------------------------------------------------

MUTATING_COMMANDS = {
    "start": "start web",
    "stop": "stop web",
    "retry": "retry web",
    "rollback": "rollback web Gate",
    "override": "override web Gate before",
    "approve": "approve web",
    "reject": "reject web no",
    "disable": "disable web Gate freeze",
    "enable": "enable web Gate",
    "create": "create " + json.dumps({"pipeline": release("other")}),
    "edit": "edit web",
    "delete": "delete web",
    "access": f"access web operators add <@{OTHER}>",
    "subscribe": "subscribe web",
    "unsubscribe": "unsubscribe web",
}


def _snapshot(bot: Bot) -> str:
    """Everything an unauthorised request could change."""
    state = bot.engine.get_pipeline_state(name="web")
    executions = bot.engine.list_pipeline_executions(pipelineName="web")
    with bot.services.sessions() as session:
        access = bot_store.list_access(session=session, pipeline="web")
        subscriptions = notify_store.subscriptions_for_pipeline(session=session, pipeline="web")
    return json.dumps(
        {
            "pipelines": [p["name"] for p in bot.engine.list_pipelines()["pipelines"]],
            "version": state.get("pipelineVersion"),
            "stages": [
                (
                    s["stageName"],
                    s.get("inboundTransitionState", {}).get("enabled"),
                    (s.get("latestExecution") or {}).get("status"),
                )
                for s in state["stageStates"]
            ],
            "executions": [
                (e["pipelineExecutionId"], e["status"])
                for e in executions["pipelineExecutionSummaries"]
            ],
            "access": [(a.role, a.subject) for a in access],
            "subscriptions": [s.channel_id for s in subscriptions],
        },
        default=str,
        sort_keys=True,
    )


def test_every_mutating_command_button_and_form_refuses_an_unauthorised_user(bot: Bot) -> None:
    mutating = {s.name for s in REGISTRY if s.permission != Permission.READ}
    assert set(MUTATING_COMMANDS) == mutating, "add the new command to this walk"
    bot.engine.create_pipeline(pipeline=release())
    waiting_approval(bot)
    with transaction(bot.services.sessions) as session:
        notify_store.subscribe(session=session, pipeline="web", channel_id="C1", created_by=ADMIN)
    execution = _first_execution(bot)
    before = _snapshot(bot)
    walked = 0
    for name, text in MUTATING_COMMANDS.items():
        bot.command(text, user=OTHER, name=f"cmd-{name}")
        reply = bot.reply(f"cmd-{name}")
        assert reply.params.get("response_type") == "ephemeral", name
        assert "admins:" in text_of(reply).lower(), name  # the refusal names who may
        walked += 1
    buttons = [a for a in ids.BUTTON_ACTIONS if ACTIONS[a].permission != Permission.READ]
    ref = ButtonRef(pipeline="web", execution=execution, stage="Gate", action="Approve")
    for action_id in buttons:
        bot.click(action_id, ref, user=OTHER, name=f"btn-{action_id}")
        reply = bot.reply(f"btn-{action_id}")
        assert reply.params.get("response_type") == "ephemeral", action_id
        walked += 1
    forms: dict[str, tuple[ButtonRef, dict[str, dict[str, dict[str, Any]]]]] = {
        ids.CREATE_VIEW: (
            ButtonRef(pipeline="-", channel="C1"),
            {
                ids.DECLARATION_BLOCK: {
                    ids.DECLARATION_INPUT: {
                        "type": "plain_text_input",
                        "value": json.dumps(release("formed")),
                    }
                }
            },
        ),
        ids.EDIT_VIEW: (
            ButtonRef(pipeline="web", channel="C1"),
            {
                ids.DECLARATION_BLOCK: {
                    ids.DECLARATION_INPUT: {
                        "type": "plain_text_input",
                        "value": json.dumps(release()),
                    }
                }
            },
        ),
        ids.REJECT_VIEW: (
            ButtonRef(
                pipeline="web", execution=execution, stage="Gate", action="Approve", channel="C1"
            ),
            {ids.COMMENT_BLOCK: {ids.COMMENT_INPUT: {"type": "plain_text_input", "value": "no"}}},
        ),
        ids.STOP_VIEW: (
            ButtonRef(pipeline="web", execution=execution, channel="C1"),
            {
                ids.STOP_MODE_BLOCK: {
                    ids.STOP_MODE_INPUT: {
                        "type": "radio_buttons",
                        "selected_option": {"value": "abandon"},
                    }
                }
            },
        ),
    }
    for callback_id, (form_ref, values) in forms.items():
        body, headers = view_submission(
            callback_id=callback_id,
            values=values,
            private_metadata=form_ref.encode(),
            user_id=OTHER,
        )
        assert bot.app.dispatch(bolt_request(body, headers)).status == 200, callback_id
        walked += 1
    bot.fake.wait_for(
        "chat.postEphemeral",
        count=len(forms),
        where=lambda c: c.params.get("user") == OTHER,
        timeout=30,
    )

    def refusals() -> int:
        return sum(1 for e in _audit(bot) if e.user_id == OTHER and e.outcome == "refused")

    wait_for(lambda: refusals() >= walked, timeout=30, what="every refusal audited")
    assert _snapshot(bot) == before  # nothing changed
    assert not [e for e in _audit(bot) if e.user_id == OTHER and e.outcome != "refused"]
    record(
        "authorisation",
        commands=len(MUTATING_COMMANDS),
        buttons=len(buttons),
        forms=len(forms),
        refused=refusals(),
        acted=0,
    )


# --- approval tokens -------------------------------------------------------------------------


def test_approval_tokens_never_leave_the_server(bot: Bot) -> None:
    bot.engine.create_pipeline(pipeline=release())
    first = waiting_approval(bot)
    with transaction(bot.services.sessions) as session:
        notify_store.subscribe(session=session, pipeline="web", channel_id="C1", created_by=ADMIN)
    notifier = Notifier(
        ops=bot.services.ops,
        sessions=bot.services.sessions,
        web_client=bot.fake.web_client(),
        holder_id="security-test",
        interval_seconds=1.0,
        permissions=bot.services.permissions,
    )
    notifier.run_once()
    bot.command("status web", name="status")
    bot.reply("status")
    body, headers = app_home_opened(user_id=ADMIN)
    bot.app.dispatch(bolt_request(body, headers))
    bot.fake.wait_for("views.publish")
    execution = _first_execution(bot)
    ref = ButtonRef(pipeline="web", execution=execution, stage="Gate", action="Approve")
    bot.click(ids.APPROVE, ref, name="approve")
    bot.reply("approve")
    notifier.run_once()
    bot.command("audit web", name="audit")
    bot.reply("audit")
    sent = json.dumps([c.params for c in bot.fake.calls], default=str)
    assert bot.fake.calls_to("chat.postMessage"), "the notifier posted the approval"
    assert first not in sent
    with bot.services.sessions() as session:
        entries = bot_store.list_audit(session=session, limit=100)
    assert first not in json.dumps([e.model_dump() for e in entries], default=str)
    record("approval_tokens", slack_calls_scanned=len(bot.fake.calls), tokens_found=0)


def test_commands_actions_run_as_pipebots_own_os_user(engine: Any) -> None:
    engine.create_pipeline(
        pipeline=pipeline(
            "whoami",
            [
                ("Source", [source_action()]),
                ("Build", [commands_action("Who", ["echo uid=$(id -u)"])]),
            ],
        )
    )

    def done() -> str | None:
        summary = engine.list_pipeline_executions(pipelineName="whoami")[
            "pipelineExecutionSummaries"
        ][0]
        return summary["pipelineExecutionId"] if summary["status"] == "Succeeded" else None

    execution = wait_for(done, what="the whoami execution")
    details = engine.list_action_executions(
        pipelineName="whoami", filter={"pipelineExecutionId": execution}
    )["actionExecutionDetails"]
    who = next(d for d in details if d["actionName"] == "Who")
    log = engine.get_action_log(actionExecutionId=who["actionExecutionId"])
    assert f"uid={os.getuid()}" in log
