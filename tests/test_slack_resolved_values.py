"""What Slack shows of an action's configuration is what the execution resolved, never the
raw ``#{...}`` variable of the declaration (issue 13): an approval request's CustomData and
ExternalEntityLink, on the embedded engine (real notifier, fake Slack, SQLite and PostgreSQL)
and on AWS (ListActionExecutions' ``input.resolvedConfiguration`` through a Stubber)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from bot.notify.context import Lookups, TickStats, resolved_configuration
from bot.ops.pipeline_ops import PipelineOps
from tests.fake_slack import FakeSlack
from tests.helpers import approval_action, pipeline, source_action
from tests.shapecheck import assert_output_shape
from tests.test_notifier import Harness

CUSTOM = "Staging passed: release #{variables.RELEASE_NAME} (#{codepipeline.PipelineExecutionId})?"
LINK = "https://example.test/releases/#{variables.RELEASE_NAME}"


def gated() -> dict[str, Any]:
    return pipeline(
        "web",
        [
            ("Source", [source_action()]),
            (
                "Gate",
                [approval_action(configuration={"CustomData": CUSTOM, "ExternalEntityLink": LINK})],
            ),
        ],
        variables=[{"name": "RELEASE_NAME", "defaultValue": "release-48964963"}],
    )


@pytest.fixture
def h(engine: Any, database_url: str, fake: FakeSlack) -> Iterator[Harness]:
    harness = Harness(engine, database_url, fake)
    yield harness
    harness.db.dispose()


def test_the_approval_request_shows_the_resolved_custom_data_and_link(h: Harness) -> None:
    h.engine.create_pipeline(pipeline=gated())  # starts an execution
    h.subscribe("web", "C1")
    notifier = h.notifier()
    h.pump(notifier, lambda: bool(h.replies_with("C1", "Approval")), "the approval request")
    execution = h.engine.list_pipeline_executions(pipelineName="web")["pipelineExecutionSummaries"][
        0
    ]["pipelineExecutionId"]
    shown = json.dumps(h.replies_with("C1", "Approval")[0].params)
    assert "#{" not in shown
    assert f"release release-48964963 ({execution})?" in shown
    assert "https://example.test/releases/release-48964963" in shown


def _detail(
    stage: str, action: str, resolved: dict[str, str], *, started: datetime
) -> dict[str, Any]:
    return {
        "pipelineExecutionId": "11111111-2222-3333-4444-555555555555",
        "actionExecutionId": f"a-{started.timestamp():.0f}",
        "pipelineVersion": 1,
        "stageName": stage,
        "actionName": action,
        "startTime": started,
        "lastUpdateTime": started,
        "status": "InProgress",
        "input": {
            "actionTypeId": {
                "category": "Approval",
                "owner": "AWS",
                "provider": "Manual",
                "version": "1",
            },
            "configuration": {"CustomData": CUSTOM, "ExternalEntityLink": LINK},
            "resolvedConfiguration": resolved,
        },
    }


def test_on_aws_the_values_come_from_list_action_executions() -> None:
    client = boto3.client(
        "codepipeline",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    ops = PipelineOps(client=client, local=False)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    response = {
        "actionExecutionDetails": [
            # A retried stage ran the approval twice: the newer run's values are shown.
            _detail(
                "Gate",
                "Approve",
                {"CustomData": "release old?", "ExternalEntityLink": "https://e.test/old"},
                started=start,
            ),
            _detail(
                "Gate",
                "Approve",
                {"CustomData": "release new?", "ExternalEntityLink": "https://e.test/new"},
                started=start + timedelta(minutes=5),
            ),
        ]
    }
    assert_output_shape("ListActionExecutions", response)
    stats = TickStats()
    with Stubber(client) as stub:
        stub.add_response(
            "list_action_executions",
            response,
            {
                "pipelineName": "web",
                "filter": {"pipelineExecutionId": "11111111-2222-3333-4444-555555555555"},
            },
        )
        lookups = Lookups(ops=ops, permissions=None, pipeline="web", stats=stats)
        bound = lookups.for_execution("11111111-2222-3333-4444-555555555555")
        assert bound.approval_config("Gate", "Approve") == ("release new?", "https://e.test/new")
        # Read once per tick, whichever view of the lookups asks.
        again = lookups.for_execution("11111111-2222-3333-4444-555555555555")
        assert again.approval_config("Gate", "Approve")[0] == "release new?"
        stub.assert_no_pending_responses()
    assert stats.backend_calls == 1


def test_without_a_resolved_run_the_declaration_is_shown() -> None:
    assert resolved_configuration([], "Gate", "Approve") is None
    other = _detail("Gate", "Other", {"CustomData": "x"}, started=datetime(2026, 1, 1, tzinfo=UTC))
    assert resolved_configuration([other], "Gate", "Approve") is None

    class Declared:
        def declaration(self, name: str) -> dict[str, Any]:
            return {
                "stages": [
                    {
                        "name": "Gate",
                        "actions": [
                            {"name": "Approve", "configuration": {"CustomData": "as declared"}}
                        ],
                    }
                ]
            }

        def action_details(self, name: str, execution_id: str) -> list[dict[str, Any]]:
            return []

    lookups = Lookups(ops=Declared(), permissions=None, pipeline="web", stats=TickStats())  # type: ignore[arg-type]
    assert lookups.for_execution("e").approval_config("Gate", "Approve") == ("as declared", None)
