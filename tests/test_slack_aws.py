"""Scenario tests of the real Bolt app on the AWS backend (``PIPEBOT_BACKEND=aws``).

The same app as ``tests/test_slack_app.py`` (signed requests through ``app.dispatch``, a
recording fake Slack Web API), but the pipeline client is boto3's real ``codepipeline`` client:

* **moto** for what moto implements (create, list, executions, start, delete): the pipeline is
  really created in moto's account, with AWS-only providers (S3 source, CodeDeploy).
* **botocore's Stubber** on a real boto3 client for what moto does not implement (state, approvals,
  retry, stop, transitions): each stub checks the request pipebot sends against the expected
  parameters, and botocore validates requests and stubbed responses against AWS's API model.
* **Errors**: service errors through ``add_client_error`` and a client without credentials; each is
  answered privately with its specific message, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.client
import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber
from moto import mock_aws
from pydantic import SecretStr
from slack_bolt import App, BoltResponse
from slack_sdk.models.blocks import Block

from bot.app import build_app, build_services, make_web_client
from bot.engine.declaration import validate_declaration
from bot.ops.client import make_aws_client, make_client
from bot.ops.pipeline_ops import ERROR_MESSAGES
from bot.settings import Settings
from bot.slack import ids
from bot.slack.ids import ButtonRef
from handlers.common import Services
from storage import bot_store
from storage.db import make_engine, make_session_factory
from tests.fake_slack import Call, FakeSlack
from tests.helpers import wait_for
from tests.slack_requests import (
    SIGNING_SECRET,
    block_action,
    bolt_request,
    slash_command,
    view_submission,
)

# The AWS backend keeps pipebot's own tables (audit, access, clicks) in a database; SQLite is
# enough here, the storage layer has its own tests on both databases.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

REGION = "us-east-1"
ACCOUNT = "123456789012"
ADMIN = "UADMIN"
TRUST_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "codepipeline.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)
NO_CREDENTIALS = "pipebot has no AWS credentials"

# Identifiers shaped like AWS's (the API model's patterns are UUIDs for these).
EXECUTION = "3137f7cb-7cf7-4c6a-9f5b-7c1f4d0e6a21"
OLDER_EXECUTION = "0b5a6f2e-1d1c-4a57-8d8e-2f3b9c4a7e10"
TOKEN = "8a7c1e52-3f0b-4f7e-9a4d-6c2b1d0e9f33"
SHA = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
T0 = datetime(2025, 5, 6, 9, 0, tzinfo=UTC)
T1 = datetime(2025, 5, 6, 9, 4, tzinfo=UTC)
T2 = datetime(2025, 5, 6, 9, 7, tzinfo=UTC)
# A trigger_id as Slack sends them (digits and dots), unlike the tests' default "T-trigger".
SLACK_TRIGGER_ID = "7654321098765.1234567890123.0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def model_pattern(operation: str, member: str) -> str:
    """The ``pattern`` AWS's API model declares for an input member (botocore checks no
    patterns client-side; AWS refuses a mismatch with ValidationException)."""
    model = botocore.session.get_session().get_service_model("codepipeline")
    shape = model.operation_model(operation).input_shape
    assert shape is not None
    return str(shape.members[member].metadata["pattern"])


class Where:
    """A Stubber ``expected_params`` value that matches anything satisfying ``test``."""

    def __init__(self, test: Callable[[Any], bool], description: str) -> None:
        self.test = test
        self.description = description

    def __eq__(self, other: object) -> bool:
        return self.test(other)

    def __ne__(self, other: object) -> bool:
        return not self.test(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{self.description}>"


def matching(pattern: str) -> Where:
    return Where(
        lambda value: isinstance(value, str) and re.fullmatch(pattern, value) is not None,
        f"a string matching {pattern}",
    )


def containing(*parts: str) -> Where:
    return Where(
        lambda value: isinstance(value, str) and all(p in value for p in parts),
        f"a string containing {parts!r}",
    )


# --- the bot ----------------------------------------------------------------------------------


@dataclass
class AwsBot:
    app: App
    fake: FakeSlack
    client: Any
    services: Services

    def command(
        self, text: str, *, name: str = "default", trigger_id: str = "T-trigger"
    ) -> BoltResponse:
        body, headers = slash_command(
            text=text,
            user_id=ADMIN,
            response_url=self.fake.response_url(name),
            trigger_id=trigger_id,
        )
        return self.app.dispatch(bolt_request(body, headers))

    def click(
        self,
        action_id: str,
        value: str,
        *,
        name: str = "click",
        message_blocks: list[dict[str, Any]] | None = None,
        trigger_id: str = "T-trigger",
    ) -> BoltResponse:
        body, headers = block_action(
            action_id=action_id,
            value=value,
            user_id=ADMIN,
            response_url=self.fake.response_url(name),
            message_blocks=message_blocks,
            trigger_id=trigger_id,
        )
        return self.app.dispatch(bolt_request(body, headers))

    def reply(self, name: str = "default") -> Call:
        """The first post to ``response_url(name)``, checked as valid Block Kit."""
        call = self.fake.wait_for("response_url", where=lambda c: c.path.endswith("/" + name))[0]
        blocks = call.params.get("blocks") or []
        assert len(blocks) <= 50
        Block.parse_all(blocks)
        return call

    def audit(self, pipeline: str | None) -> list[tuple[str, str, str | None]]:
        with self.services.sessions() as session:
            entries = bot_store.list_audit(session=session, pipeline=pipeline)
        return [(e.what, e.outcome, e.detail) for e in entries]


def text_of(call: Call) -> str:
    return json.dumps(call.params, ensure_ascii=False)


def message_text(call: Call) -> str:
    return str(call.params.get("text") or "")


def button_value(blocks: list[dict[str, Any]], action_id: str) -> str:
    for block in blocks:
        for element in block.get("elements") or [block.get("accessory") or {}]:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return str(element["value"])
    raise AssertionError(f"no {action_id} button in {json.dumps(blocks)[:2000]}")


def action_ids(blocks: list[dict[str, Any]]) -> set[str]:
    found = set()
    for block in blocks:
        for element in block.get("elements") or [block.get("accessory") or {}]:
            if isinstance(element, dict) and element.get("action_id"):
                found.add(str(element["action_id"]))
    return found


def assert_private_error(call: Call, expected: str) -> None:
    """Answered to the user alone, with the specific message, and nothing from Python."""
    assert call.params.get("response_type") == "ephemeral", call.params
    assert expected in message_text(call), message_text(call)
    rendered = text_of(call)
    for leak in ("Traceback", "botocore", "ClientError", 'File "'):
        assert leak not in rendered, rendered


def _isolate_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No AWS variable or shared file from the machine; no instance-metadata lookups."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    config = tmp_path / "aws-config"
    credentials = tmp_path / "aws-credentials"
    config.write_text("")
    credentials.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    return tmp_path


def _dummy_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")


def aws_settings(database_url: str, fake: FakeSlack) -> Settings:
    return Settings(
        SLACK_BOT_TOKEN=SecretStr("xoxb-test"),
        SLACK_SIGNING_SECRET=SecretStr(SIGNING_SECRET),
        SLACK_API_URL=fake.base_url,
        PIPEBOT_ADMINS=ADMIN,
        PIPEBOT_BACKEND="aws",
        AWS_REGION=REGION,
        DATABASE_URL=database_url,
    )


def build_bot(settings: Settings, client: Any, fake: FakeSlack) -> AwsBot:
    assert settings.database_url is not None
    sessions = make_session_factory(make_engine(settings.database_url))
    web_client = make_web_client(settings)
    services = build_services(
        settings=settings, pipeline_client=client, sessions=sessions, web_client=web_client
    )
    assert services.ops.local is False  # AWS semantics: AWS-only providers are accepted
    app = build_app(settings=settings, services=services, web_client=web_client)
    return AwsBot(app=app, fake=fake, client=client, services=services)


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        server.set_user(ADMIN, "admin")
        yield server


# =========================================================================== moto


@dataclass
class MotoBot:
    bot: AwsBot
    role_arn: str


def answer_state_from_declaration(client: Any) -> None:
    """moto implements no GetPipelineState; answer it from GetPipeline (which moto does).

    ``delete NAME`` reads the state to check the pipeline exists before asking. The answer is
    what AWS returns for a pipeline that has not run yet: its stages and actions, no executions
    (and PipelineNotFoundException, from moto, when there is no such pipeline).
    """

    def handler(model: Any, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, Any]:
        name = json.loads(params["body"])["name"]  # the request, serialized by now
        got = client.get_pipeline(name=name)
        declaration = got["pipeline"]
        state = {
            "pipelineName": declaration["name"],
            "pipelineVersion": declaration["version"],
            "stageStates": [
                {
                    "stageName": stage["name"],
                    "inboundTransitionState": {"enabled": True},
                    "actionStates": [{"actionName": a["name"]} for a in stage["actions"]],
                }
                for stage in declaration["stages"]
            ],
            "created": got["metadata"]["created"],
            "updated": got["metadata"]["updated"],
        }
        return AWSResponse(None, 200, {}, None), state  # type: ignore[arg-type]

    client.meta.events.register("before-call.codepipeline.GetPipelineState", handler)


@pytest.fixture
def moto_bot(
    database_url: str, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[MotoBot]:
    _isolate_aws_environment(monkeypatch, tmp_path)
    _dummy_credentials(monkeypatch)
    with mock_aws():
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(
            RoleName="pipebot-codepipeline", AssumeRolePolicyDocument=TRUST_POLICY
        )
        settings = aws_settings(database_url, fake)
        client = make_client(settings)  # the factory `pipebot serve` uses
        assert isinstance(client, botocore.client.BaseClient)
        answer_state_from_declaration(client)
        yield MotoBot(bot=build_bot(settings, client, fake), role_arn=role["Role"]["Arn"])


def s3_codedeploy_declaration(name: str, role_arn: str) -> dict[str, Any]:
    """An S3 source and a CodeDeploy deployment: providers only AWS runs."""
    return {
        "pipeline": {
            "name": name,
            "roleArn": role_arn,
            "pipelineType": "V2",
            "artifactStore": {"type": "S3", "location": "pipebot-artifacts-123456789012"},
            "stages": [
                {
                    "name": "Source",
                    "actions": [
                        {
                            "name": "Source",
                            "actionTypeId": {
                                "category": "Source",
                                "owner": "AWS",
                                "provider": "S3",
                                "version": "1",
                            },
                            "configuration": {
                                "S3Bucket": "web-releases",
                                "S3ObjectKey": "web/app.zip",
                                "PollForSourceChanges": "false",
                            },
                            "outputArtifacts": [{"name": "SourceArtifact"}],
                        }
                    ],
                },
                {
                    "name": "Deploy",
                    "actions": [
                        {
                            "name": "Deploy",
                            "actionTypeId": {
                                "category": "Deploy",
                                "owner": "AWS",
                                "provider": "CodeDeploy",
                                "version": "1",
                            },
                            "configuration": {
                                "ApplicationName": "web",
                                "DeploymentGroupName": "web-prod",
                            },
                            "inputArtifacts": [{"name": "SourceArtifact"}],
                        }
                    ],
                },
            ],
        }
    }


def test_moto_create_list_start_history_delete(moto_bot: MotoBot) -> None:
    bot = moto_bot.bot
    declaration = s3_codedeploy_declaration("web", moto_bot.role_arn)
    # Valid for AWS; the embedded engine runs it too since issue 14 (S3 and CodeDeploy).
    validate_declaration(declaration["pipeline"], local=False)
    validate_declaration(declaration["pipeline"], local=True)

    assert bot.command("create " + json.dumps(declaration), name="create").status == 200
    created = bot.reply("create")
    assert created.params.get("response_type") == "in_channel", text_of(created)
    assert "created pipeline *web* (version 1)" in message_text(created)
    stored = bot.client.get_pipeline(name="web")["pipeline"]
    providers = [a["actionTypeId"]["provider"] for s in stored["stages"] for a in s["actions"]]
    assert providers == ["S3", "CodeDeploy"]
    assert stored["artifactStore"]["location"] == "pipebot-artifacts-123456789012"

    bot.command("start web", name="start")
    started = bot.reply("start")
    assert started.params.get("response_type") == "in_channel"
    execution_id = message_text(started).split("`")[1]
    executions = bot.client.list_pipeline_executions(pipelineName="web")[
        "pipelineExecutionSummaries"
    ]
    assert [e["pipelineExecutionId"] for e in executions] == [execution_id]

    bot.command("list", name="list")
    listed = bot.reply("list")
    assert listed.params.get("response_type") == "ephemeral"
    assert "web" in text_of(listed)
    assert "Succeeded" in text_of(listed)  # moto's executions succeed at once

    bot.command("history web", name="history")
    history = text_of(bot.reply("history"))
    assert execution_id in history
    assert "StartPipelineExecution" in history  # moto's trigger

    bot.command("delete web", name="delete")
    confirm = bot.reply("delete")
    assert confirm.params.get("response_type") == "ephemeral"
    blocks = confirm.params["blocks"]
    assert bot.client.list_pipelines()["pipelines"] != []  # asking deletes nothing
    bot.click(
        ids.DELETE_CONFIRM,
        button_value(blocks, ids.DELETE_CONFIRM),
        name="confirm",
        message_blocks=blocks,
    )
    deleted = bot.reply("confirm")
    assert deleted.params.get("replace_original") is True
    assert "deleted" in message_text(deleted)
    assert bot.client.list_pipelines()["pipelines"] == []

    def audited() -> bool:
        whats = {(what, outcome) for what, outcome, _ in bot.audit("web")}
        return {("create", "ok"), ("start", "ok"), (ids.DELETE_CONFIRM, "ok")} <= whats

    wait_for(audited, what="create, start and delete in the audit log")


def test_inline_create_is_audited_under_the_pipeline_name(moto_bot: MotoBot) -> None:
    bot = moto_bot.bot
    bot.command("create " + json.dumps(s3_codedeploy_declaration("web", moto_bot.role_arn)))
    assert "created pipeline" in message_text(bot.reply())
    wait_for(
        lambda: [what for what, _, _ in bot.audit("web")] == ["create"],
        what="the creation under the pipeline's name in the audit log",
    )


def test_moto_pipeline_name_in_use_is_answered_privately(moto_bot: MotoBot) -> None:
    bot = moto_bot.bot
    text = "create " + json.dumps(s3_codedeploy_declaration("web", moto_bot.role_arn))
    bot.command(text, name="first")
    bot.reply("first")
    bot.command(text, name="again")
    again = bot.reply("again")
    assert again.params.get("response_type") == "ephemeral"
    # moto answers InvalidStructureException where AWS answers PipelineNameInUseException
    # (see MOTO_ERROR_CODES in test_contract.py): either way a specific, private message.
    assert "already exists" in message_text(again), message_text(again)


def test_moto_edit_modal_round_trips_aws_declaration(moto_bot: MotoBot) -> None:
    """`edit` prefills the modal with what GetPipeline returns; saving it updates the pipeline
    (version 2) even though AWS's answer carries fields a user never typed (version, defaults)."""
    bot = moto_bot.bot
    bot.client.create_pipeline(
        pipeline=s3_codedeploy_declaration("web", moto_bot.role_arn)["pipeline"]
    )
    bot.command("edit web", name="edit")
    view = bot.fake.wait_for("views.open")[0].params["view"]
    assert view["callback_id"] == ids.EDIT_VIEW
    boxes = [b for b in view["blocks"] if b.get("type") == "input"]
    text = "".join(b["element"].get("initial_value", "") for b in boxes)
    assert json.loads(text)["pipeline"]["version"] == 1
    changed = text.replace('"web-prod"', '"web-prod-blue"')
    assert changed != text
    body, headers = view_submission(
        callback_id=ids.EDIT_VIEW,
        values={
            ids.DECLARATION_BLOCK: {
                ids.DECLARATION_INPUT: {"type": "plain_text_input", "value": changed}
            }
        },
        private_metadata=view["private_metadata"],
    )
    response = bot.app.dispatch(bolt_request(body, headers))
    assert response.status == 200
    assert not response.body, response.body  # no inline errors
    posted = bot.fake.wait_for("chat.postMessage")[0]
    assert "updated pipeline *web* (version 2)" in str(posted.params.get("text")), posted.params
    stored = bot.client.get_pipeline(name="web")["pipeline"]
    assert stored["version"] == 2
    deploy = stored["stages"][1]["actions"][0]["configuration"]
    assert deploy["DeploymentGroupName"] == "web-prod-blue"


# =========================================================================== Stubber


@dataclass
class StubbedBot:
    bot: AwsBot
    stub: Stubber


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return _isolate_aws_environment(monkeypatch, tmp_path)


@pytest.fixture
def stubbed(
    database_url: str, fake: FakeSlack, aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StubbedBot]:
    _dummy_credentials(monkeypatch)
    settings = aws_settings(database_url, fake)
    client = make_aws_client(settings)  # a real boto3 client, as `pipebot serve` makes it
    with Stubber(client) as stub:
        yield StubbedBot(bot=build_bot(settings, client, fake), stub=stub)


def stage(
    name: str,
    status: str | None,
    actions: list[dict[str, Any]],
    *,
    execution: str = EXECUTION,
    transition: dict[str, Any] | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "stageName": name,
        "inboundTransitionState": transition or {"enabled": True},
        "actionStates": actions,
    }
    if status is not None:
        result["latestExecution"] = {"pipelineExecutionId": execution, "status": status}
    return result


def action(name: str, status: str | None = None, **latest: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"actionName": name}
    if status is not None:
        result["latestExecution"] = {
            "actionExecutionId": f"{name.lower()}-5f2c1a0e",
            "status": status,
            "lastStatusChange": T1,
            **latest,
        }
    return result


def source() -> dict[str, Any]:
    """A GitHub source through a CodeStar connection, as AWS reports it."""
    return {
        **action(
            "Source",
            "Succeeded",
            summary=json.dumps({"ProviderType": "GitHub", "CommitMessage": "Fix login redirect"}),
            externalExecutionId=SHA,
        ),
        "currentRevision": {"revisionId": SHA, "revisionChangeId": SHA, "created": T1},
        "entityUrl": "https://console.aws.amazon.com/codesuite/settings/connections",
        "revisionUrl": f"https://github.com/acme/web/commit/{SHA}",
    }


def state_response(stages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "pipelineName": "web",
        "pipelineVersion": 3,
        "stageStates": stages,
        "created": T0,
        "updated": T0,
    }


def waiting_state() -> dict[str, Any]:
    """Built and deployed to staging; the Gate's manual approval waits (with its token); the
    transition into Prod is disabled."""
    return state_response(
        [
            stage("Source", "Succeeded", [source()]),
            stage(
                "Staging",
                "Succeeded",
                [action("DeployStaging", "Succeeded", externalExecutionId="d-4XJ2H8KQB")],
            ),
            stage(
                "Gate",
                "InProgress",
                [action("Approve", "InProgress", token=TOKEN)],
            ),
            stage(
                "Prod",
                None,
                [action("DeployProd")],
                transition={
                    "enabled": False,
                    "lastChangedBy": f"arn:aws:sts::{ACCOUNT}:assumed-role/release/ops",
                    "lastChangedAt": T0,
                    "disabledReason": "Freeze until QA sign-off",
                },
            ),
        ]
    )


def approved_state() -> dict[str, Any]:
    stages = waiting_state()["stageStates"]
    stages[2] = stage(
        "Gate",
        "Succeeded",
        [action("Approve", "Succeeded", summary="Approved in Slack by admin (UADMIN)")],
    )
    return state_response(stages)


def failed_state() -> dict[str, Any]:
    return state_response(
        [
            stage("Source", "Succeeded", [source()]),
            stage(
                "Deploy",
                "Failed",
                [
                    action(
                        "Deploy",
                        "Failed",
                        errorDetails={"code": "JobFailed", "message": "Deployment d-XYZ failed"},
                    )
                ],
            ),
        ]
    )


def execution_summary(execution_id: str, status: str) -> dict[str, Any]:
    return {
        "pipelineExecutionId": execution_id,
        "status": status,
        "startTime": T0 if execution_id == OLDER_EXECUTION else T1,
        "lastUpdateTime": T2,
        "sourceRevisions": [
            {
                "actionName": "Source",
                "revisionId": SHA,
                "revisionSummary": json.dumps(
                    {"ProviderType": "GitHub", "CommitMessage": "Fix login redirect"}
                ),
                "revisionUrl": f"https://github.com/acme/web/commit/{SHA}",
            }
        ],
        "trigger": {
            "triggerType": "CloudWatchEvent",
            "triggerDetail": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/web-source",
        },
        "executionMode": "SUPERSEDED",
        "executionType": "STANDARD",
    }


def executions_response(*summaries: tuple[str, str]) -> dict[str, Any]:
    return {"pipelineExecutionSummaries": [execution_summary(e, s) for e, s in summaries]}


def test_status_then_approve_button_sends_the_token_read_at_click_time(
    stubbed: StubbedBot,
) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response("get_pipeline_state", waiting_state(), {"name": "web"})
    stub.add_response(
        "list_pipeline_executions",
        executions_response((EXECUTION, "InProgress"), (OLDER_EXECUTION, "Succeeded")),
        {"pipelineName": "web", "maxResults": 5},
    )
    # Operators see Roll back on each finished stage but the source stage, to the newest
    # other execution that succeeded in it (ListPipelineExecutions, succeededInStage).
    stub.add_response(
        "list_pipeline_executions",
        executions_response((OLDER_EXECUTION, "Succeeded")),
        {
            "pipelineName": "web",
            "maxResults": 20,
            "filter": {"succeededInStage": {"stageName": "Staging"}},
        },
    )
    bot.command("status web", name="status")
    status = bot.reply("status")
    assert status.params.get("response_type") == "ephemeral"
    rendered = text_of(status)
    assert ids.ROLLBACK in action_ids(status.params["blocks"])
    for shown in ("Gate", "Staging", "Prod", "a1b2c3d", "Fix login redirect"):
        assert shown in rendered, shown
    assert "Freeze until QA sign-off" in rendered  # the disabled transition and its reason
    assert {ids.APPROVE, ids.REJECT, ids.STOP} <= action_ids(status.params["blocks"])
    assert TOKEN not in rendered  # approval tokens never leave the server
    stub.assert_no_pending_responses()

    # The click: the token comes from get_pipeline_state now, the summary names the user.
    blocks = status.params["blocks"]
    value = button_value(blocks, ids.APPROVE)
    assert ButtonRef.decode(value) == ButtonRef(
        pipeline="web", execution=EXECUTION, stage="Gate", action="Approve"
    )
    stub.add_response("get_pipeline_state", waiting_state(), {"name": "web"})
    stub.add_response(
        "put_approval_result",
        {"approvedAt": T2},
        {
            "pipelineName": "web",
            "stageName": "Gate",
            "actionName": "Approve",
            "result": {"summary": containing("admin", ADMIN), "status": "Approved"},
            "token": TOKEN,
        },
    )
    # After the click the message is redrawn from the state as it is now.
    stub.add_response("get_pipeline_state", approved_state(), {"name": "web"})
    stub.add_response(
        "list_pipeline_executions",
        executions_response((EXECUTION, "InProgress"), (OLDER_EXECUTION, "Succeeded")),
        {"pipelineName": "web", "maxResults": 5},
    )
    for stage_name in ("Staging", "Gate"):
        stub.add_response(
            "list_pipeline_executions",
            {"pipelineExecutionSummaries": []},
            {
                "pipelineName": "web",
                "maxResults": 20,
                "filter": {"succeededInStage": {"stageName": stage_name}},
            },
        )
    bot.click(ids.APPROVE, value, name="approve", message_blocks=blocks)
    redrawn = bot.reply("approve")
    assert redrawn.params.get("replace_original") is True, text_of(redrawn)
    assert "approved" in message_text(redrawn), text_of(redrawn)
    assert ids.APPROVE not in action_ids(redrawn.params["blocks"])
    stub.assert_no_pending_responses()

    def audited() -> bool:
        return (ids.APPROVE, "ok", None) in bot.audit("web")

    wait_for(audited, what="the approval in the audit log")


def test_approve_button_for_an_answered_approval_is_told_so(stubbed: StubbedBot) -> None:
    """The approval was answered elsewhere (console, CLI) between render and click."""
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response("get_pipeline_state", waiting_state(), {"name": "web"})
    stub.add_client_error(
        "put_approval_result",
        service_error_code="InvalidApprovalTokenException",
        service_message="The approval action has already been completed.",
        http_status_code=400,
    )
    ref = ButtonRef(pipeline="web", execution=EXECUTION, stage="Gate", action="Approve")
    bot.click(ids.APPROVE, ref.encode(), name="late")
    assert_private_error(bot.reply("late"), ERROR_MESSAGES["InvalidApprovalTokenException"])
    stub.assert_no_pending_responses()


def test_approve_command_with_a_comment(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    # Read once: the approval found (and the approver checked) is the one answered.
    stub.add_response("get_pipeline_state", waiting_state(), {"name": "web"})
    # Which executions wait at the gate (several only in PARALLEL mode): the one shown.
    stub.add_response(
        "list_action_executions",
        {
            "actionExecutionDetails": [
                {
                    "pipelineExecutionId": EXECUTION,
                    "actionExecutionId": "a-gate",
                    "stageName": "Gate",
                    "actionName": "Approve",
                    "status": "InProgress",
                    "input": {
                        "actionTypeId": {
                            "category": "Approval",
                            "owner": "AWS",
                            "provider": "Manual",
                            "version": "1",
                        }
                    },
                }
            ]
        },
        {"pipelineName": "web", "maxResults": 100},
    )
    stub.add_response(
        "put_approval_result",
        {"approvedAt": T2},
        {
            "pipelineName": "web",
            "stageName": "Gate",
            "actionName": "Approve",
            "result": {
                "summary": containing("admin", ADMIN, "staging looks good"),
                "status": "Approved",
            },
            "token": TOKEN,
        },
    )
    bot.command("approve web Gate/Approve staging looks good", name="approve")
    approved = bot.reply("approve")
    assert approved.params.get("response_type") == "in_channel", text_of(approved)
    assert "approved *Gate/Approve* of *web*" in message_text(approved)
    stub.assert_no_pending_responses()


def test_execution_shows_every_action_and_the_failure(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response(
        "get_pipeline_execution",
        {
            "pipelineExecution": {
                "pipelineName": "web",
                "pipelineVersion": 3,
                "pipelineExecutionId": EXECUTION,
                "status": "Failed",
                "statusSummary": "Deployment d-XYZ failed",
                "artifactRevisions": [{"name": "SourceArtifact", "revisionId": SHA, "created": T0}],
                "trigger": {"triggerType": "StartPipelineExecution", "triggerDetail": "ops"},
                "executionMode": "SUPERSEDED",
            }
        },
        {"pipelineName": "web", "pipelineExecutionId": EXECUTION},
    )
    details = [
        {
            "pipelineExecutionId": EXECUTION,
            "actionExecutionId": "deploy-5f2c1a0e",
            "pipelineVersion": 3,
            "stageName": "Deploy",
            "actionName": "Deploy",
            "startTime": T1,
            "lastUpdateTime": T2,
            "status": "Failed",
            "output": {
                "executionResult": {
                    "externalExecutionId": "d-XYZ",
                    "externalExecutionSummary": "Deployment d-XYZ failed: 2 of 4 instances",
                    "errorDetails": {"code": "JobFailed", "message": "Deployment d-XYZ failed"},
                }
            },
        },
        {
            "pipelineExecutionId": EXECUTION,
            "actionExecutionId": "source-5f2c1a0e",
            "pipelineVersion": 3,
            "stageName": "Source",
            "actionName": "Source",
            "startTime": T0,
            "lastUpdateTime": T1,
            "status": "Succeeded",
        },
    ]
    stub.add_response(
        "list_action_executions",
        {"actionExecutionDetails": details},
        {"pipelineName": "web", "filter": {"pipelineExecutionId": EXECUTION}},
    )
    # A pipeline without stage conditions has no rule execution to list.
    stub.add_response(
        "list_rule_executions",
        {"ruleExecutionDetails": []},
        {"pipelineName": "web", "filter": {"pipelineExecutionId": EXECUTION}},
    )
    bot.command(f"execution web {EXECUTION}", name="execution")
    shown = bot.reply("execution")
    assert shown.params.get("response_type") == "ephemeral"
    rendered = text_of(shown)
    # Every action, in start order (AWS lists them newest first).
    assert 0 < rendered.index("*Source* / *Source*") < rendered.index("*Deploy* / *Deploy*")
    assert "2 of 4 instances" in rendered  # the failed action's summary stands in for a log
    assert "Rule results not shown" not in rendered
    stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("text", "mode"), [("retry web", "FAILED_ACTIONS"), ("retry web --all", "ALL_ACTIONS")]
)
def test_retry_retries_the_failed_stage_of_the_latest_execution(
    stubbed: StubbedBot, text: str, mode: str
) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response("get_pipeline_state", failed_state(), {"name": "web"})
    stub.add_response(
        "retry_stage_execution",
        {"pipelineExecutionId": EXECUTION},
        {
            "pipelineName": "web",
            "stageName": "Deploy",
            "pipelineExecutionId": EXECUTION,
            "retryMode": mode,
        },
    )
    bot.command(text, name="retry")
    retried = bot.reply("retry")
    assert retried.params.get("response_type") == "in_channel", text_of(retried)
    assert "retried" in message_text(retried) and EXECUTION in message_text(retried)
    stub.assert_no_pending_responses()


def test_stop_stops_the_latest_in_progress_execution(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response(
        "list_pipeline_executions",
        executions_response((EXECUTION, "InProgress"), (OLDER_EXECUTION, "Succeeded")),
        {"pipelineName": "web", "maxResults": 20},
    )
    stub.add_response(
        "stop_pipeline_execution",
        {"pipelineExecutionId": EXECUTION},
        {
            "pipelineName": "web",
            "pipelineExecutionId": EXECUTION,
            "abandon": False,
            "reason": "Stopped by admin in Slack",
        },
    )
    bot.command("stop web", name="stop")
    stopped = bot.reply("stop")
    assert stopped.params.get("response_type") == "in_channel", text_of(stopped)
    assert EXECUTION in message_text(stopped) and "stopping" in message_text(stopped)
    stub.assert_no_pending_responses()


def test_stop_with_abandon_and_reason(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_response(
        "stop_pipeline_execution",
        {"pipelineExecutionId": OLDER_EXECUTION},
        {
            "pipelineName": "web",
            "pipelineExecutionId": OLDER_EXECUTION,
            "abandon": True,
            "reason": "Stopped by admin in Slack: bad build",
        },
    )
    bot.command(f'stop web {OLDER_EXECUTION} --abandon --reason "bad build"', name="stop")
    stopped = bot.reply("stop")
    assert "abandoned" in message_text(stopped), text_of(stopped)
    stub.assert_no_pending_responses()


def test_disable_then_enable_the_inbound_transition(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    reason_pattern = model_pattern("DisableStageTransition", "reason")
    stub.add_response(
        "disable_stage_transition",
        {},
        {
            "pipelineName": "web",
            "stageName": "Prod",
            "transitionType": "Inbound",
            "reason": Where(
                lambda value: (
                    value == "waiting for QA sign-off 42"
                    and re.fullmatch(reason_pattern, value) is not None
                ),
                "the reason reduced to AWS's alphabet",
            ),
        },
    )
    bot.command("disable web Prod waiting for QA: sign-off #42", name="disable")
    note = bot.reply("disable")  # to the user alone: what AWS's alphabet removed
    assert note.params.get("response_type") == "ephemeral", text_of(note)
    assert "removed `:` `#`" in message_text(note)
    disabled = bot.fake.wait_for(
        "response_url", count=2, where=lambda c: c.path.endswith("/disable")
    )[1]
    assert disabled.params.get("response_type") == "in_channel", text_of(disabled)
    stub.assert_no_pending_responses()

    # `enable` reads the state first: only a disabled transition is enabled (and announced).
    stub.add_response(
        "get_pipeline_state",
        state_response(
            [
                stage("Source", "Succeeded", [source()]),
                stage("Prod", None, [action("Deploy")], transition={"enabled": False}),
            ]
        ),
        {"name": "web"},
    )
    stub.add_response(
        "enable_stage_transition",
        {},
        {"pipelineName": "web", "stageName": "Prod", "transitionType": "Inbound"},
    )
    bot.command("enable web Prod", name="enable")
    enabled = bot.reply("enable")
    assert "enabled the transition into *Prod*" in message_text(enabled), text_of(enabled)
    stub.assert_no_pending_responses()


def test_start_sends_a_client_request_token_aws_accepts(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    pattern = model_pattern("StartPipelineExecution", "clientRequestToken")
    stub.add_response(
        "start_pipeline_execution",
        {"pipelineExecutionId": EXECUTION},
        {"name": "web", "clientRequestToken": matching(pattern)},
    )
    bot.command("start web", name="start", trigger_id=SLACK_TRIGGER_ID)
    started = bot.reply("start")
    assert EXECUTION in message_text(started), text_of(started)
    stub.assert_no_pending_responses()


def test_start_button_sends_a_client_request_token_aws_accepts(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    pattern = model_pattern("StartPipelineExecution", "clientRequestToken")
    stub.add_response(
        "start_pipeline_execution",
        {"pipelineExecutionId": EXECUTION},
        {"name": "web", "clientRequestToken": matching(pattern)},
    )
    stub.add_response("get_pipeline_state", waiting_state(), {"name": "web"})
    stub.add_response(
        "list_pipeline_executions",
        executions_response((EXECUTION, "InProgress")),
        {"pipelineName": "web", "maxResults": 5},
    )
    bot.click(
        ids.START, ButtonRef(pipeline="web").encode(), name="start", trigger_id=SLACK_TRIGGER_ID
    )
    started = bot.reply("start")
    assert EXECUTION in message_text(started), text_of(started)
    stub.assert_no_pending_responses()


# =========================================================================== errors


@pytest.mark.parametrize(
    ("text", "operation", "expected_params", "code", "aws_message"),
    [
        (
            "list",
            "list_pipelines",
            {},
            "AccessDeniedException",
            f"User: arn:aws:sts::{ACCOUNT}:assumed-role/pipebot/i-0abc is not authorized to "
            "perform: codepipeline:ListPipelines",
        ),
        (
            "history web",
            "list_pipeline_executions",
            {"pipelineName": "web", "maxResults": 10},
            "ThrottlingException",
            "Rate exceeded",
        ),
        (
            f"retry web Deploy {OLDER_EXECUTION}",
            "retry_stage_execution",
            {
                "pipelineName": "web",
                "stageName": "Deploy",
                "pipelineExecutionId": OLDER_EXECUTION,
                "retryMode": "FAILED_ACTIONS",
            },
            "NotLatestPipelineExecutionException",
            "Stage Deploy is not running the latest execution",
        ),
        (
            "start web",
            "start_pipeline_execution",
            {"name": "web", "clientRequestToken": "slack-T-trigger"},
            "AccessDeniedException",
            "not authorized to perform: codepipeline:StartPipelineExecution",
        ),
    ],
    ids=["list-access-denied", "history-throttled", "retry-not-latest", "start-access-denied"],
)
def test_service_errors_are_answered_privately_with_their_message(
    stubbed: StubbedBot,
    text: str,
    operation: str,
    expected_params: dict[str, Any],
    code: str,
    aws_message: str,
) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_client_error(
        operation,
        service_error_code=code,
        service_message=aws_message,
        http_status_code=400,
        expected_params=expected_params,
    )
    bot.command(text, name="error")
    reply = bot.reply("error")
    assert_private_error(reply, ERROR_MESSAGES[code])
    assert aws_message in message_text(reply)  # AWS's own detail, quoted
    stub.assert_no_pending_responses()
    if text.startswith(("retry", "start")):

        def audited() -> bool:
            return any(
                what == text.split()[0] and outcome == "error" and detail
                for what, outcome, detail in bot.audit("web")
            )

        wait_for(audited, what="the error in the audit log")


def test_mistyped_pipeline_gets_suggestions_from_list_pipelines(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_client_error(
        "get_pipeline_state",
        service_error_code="PipelineNotFoundException",
        service_message=f"Account '{ACCOUNT}' does not have a pipeline with name 'web-relase'",
        http_status_code=400,
        expected_params={"name": "web-relase"},
    )
    stub.add_response(
        "list_pipelines",
        {
            "pipelines": [
                {"name": "api", "version": 1, "pipelineType": "V2", "created": T0, "updated": T0},
                {
                    "name": "web-release",
                    "version": 4,
                    "pipelineType": "V2",
                    "created": T0,
                    "updated": T1,
                },
            ]
        },
        {},
    )
    bot.command("status web-relase", name="typo")
    reply = bot.reply("typo")
    # On AWS the name and AWS's own words (the real account) are kept: a wrong account or
    # region is the usual cause.
    assert_private_error(
        reply, "There is no pipeline named `web-relase` in this AWS account and region."
    )
    assert f"Account '{ACCOUNT}'" in message_text(reply)
    assert "Did you mean `web-release`?" in message_text(reply), message_text(reply)
    stub.assert_no_pending_responses()


def test_a_button_for_a_deleted_pipeline_is_answered_with_suggestions(stubbed: StubbedBot) -> None:
    bot, stub = stubbed.bot, stubbed.stub
    stub.add_client_error(
        "retry_stage_execution",
        service_error_code="PipelineNotFoundException",
        service_message=f"Account '{ACCOUNT}' does not have a pipeline with name 'web'",
        http_status_code=400,
        expected_params={
            "pipelineName": "web",
            "stageName": "Deploy",
            "pipelineExecutionId": EXECUTION,
            "retryMode": "FAILED_ACTIONS",
        },
    )
    stub.add_response("list_pipelines", {"pipelines": []}, {})
    ref = ButtonRef(pipeline="web", execution=EXECUTION, stage="Deploy")
    bot.click(ids.RETRY_FAILED, ref.encode(), name="gone")
    reply = bot.reply("gone")
    assert_private_error(reply, "There is no pipeline named `web`")
    assert "`list` shows the pipelines" in message_text(reply)
    stub.assert_no_pending_responses()


@pytest.mark.parametrize("text", ["list", "status web", "history web", "start web"])
def test_missing_credentials_are_named(
    database_url: str,
    fake: FakeSlack,
    aws_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    text: str,
) -> None:
    """No AWS_* variable, empty shared files, no instance metadata: botocore raises
    NoCredentialsError while signing, before anything is sent (and nothing could be: the
    endpoint is a closed local port)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    settings = aws_settings(database_url, fake)
    client = make_aws_client(settings)
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert boto3.session.Session().get_credentials() is None
    bot = build_bot(settings, client, fake)
    bot.command(text, name="creds")
    assert_private_error(bot.reply("creds"), NO_CREDENTIALS)
