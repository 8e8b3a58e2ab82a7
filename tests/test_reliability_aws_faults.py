"""Issue 6, point 4: AWS errors are retried or reported clearly; the scheduler keeps serving.

One subscribed pipeline's reads go to a real boto3 CodePipeline client whose answers come from
botocore's Stubber: ThrottlingException, AccessDeniedException, ExpiredTokenException and
ConflictException, over and over. A second subscribed pipeline runs on the embedded engine. The
notifier (one tick after another, as the scheduler runs it) keeps posting the healthy pipeline's
executions to the end, backs off the throttled one and logs each error in words; the same
errors through `PipelineOps` become the message a user is shown. Throttling is retried by
botocore itself (adaptive mode, 10 attempts: asserted on the client pipebot builds).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from pydantic import SecretStr

from bot.notify.notifier import Notifier
from bot.ops.client import make_aws_client
from bot.ops.pipeline_ops import OpsError, PipelineOps
from bot.settings import Settings
from reliability.figures import record
from reliability.workload import TERMINAL, build_pipeline, notification_problems
from storage import notify_store
from storage.db import make_engine, make_session_factory, transaction
from tests.fake_slack import FakeSlack

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

CODES = {
    "ThrottlingException": "throttling",
    "AccessDeniedException": "not allowed",
    "ExpiredTokenException": "expired",
    "ConflictException": "Another change",
}
FAULTY = "on-aws"
HEALTHY = "local-ok"


class Routed:
    """The embedded engine, except that reads of ``FAULTY`` go to a stubbed AWS client."""

    def __init__(self, engine: Any, aws: Any) -> None:
        self._engine = engine
        self._aws = aws

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def list_pipeline_executions(self, **params: Any) -> Any:
        if params.get("pipelineName") == FAULTY:
            return self._aws.list_pipeline_executions(**params)
        return self._engine.list_pipeline_executions(**params)

    def get_pipeline_state(self, **params: Any) -> Any:
        if params.get("name") == FAULTY:
            return self._aws.get_pipeline_state(**params)
        return self._engine.get_pipeline_state(**params)


def _aws_client() -> Any:
    return boto3.client(
        "codepipeline",
        region_name="us-east-1",
        aws_access_key_id="AKIAFAKEFAKEFAKEFAKE",
        aws_secret_access_key="fake-secret-key-for-stubber-only-000000",
    )


def test_aws_errors_are_reported_and_other_pipelines_keep_being_served(
    engine: Any, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = Settings(PIPEBOT_BACKEND="aws", AWS_REGION="us-east-1")
    built = make_aws_client(config)
    assert built.meta.config.retries["mode"] == "adaptive"
    assert built.meta.config.retries["total_max_attempts"] == 11  # 10 retries
    aws = _aws_client()
    stubber = Stubber(aws)
    codes = list(CODES)
    for i in range(400):
        code = codes[i % len(codes)]
        stubber.add_client_error(
            "list_pipeline_executions", service_error_code=code, service_message=f"{code} here"
        )
    stubber.activate()
    # What a user sees for each (a `status` of the AWS pipeline): the error in words.
    user_facing = _aws_client()
    with Stubber(user_facing) as stub:
        for code in codes:
            stub.add_client_error("get_pipeline_state", service_error_code=code)
        ops = PipelineOps(client=user_facing, local=False)
        for code, words in CODES.items():
            with pytest.raises(OpsError) as refused:
                ops.state(FAULTY)
            assert refused.value.code == code and words in refused.value.message
    caplog.set_level(logging.WARNING, logger="bot.notify.notifier")
    db = make_engine(database_url)
    sessions = make_session_factory(db)
    with FakeSlack() as fake:
        notifier = Notifier(
            ops=PipelineOps(client=Routed(engine, aws), local=True),
            sessions=sessions,
            web_client=fake.web_client(),
            holder_id="aws-faults",
            interval_seconds=1.0,
        )
        try:
            for name in (FAULTY, HEALTHY):
                with transaction(sessions) as session:
                    notify_store.subscribe(
                        session=session, pipeline=name, channel_id="C" + name, created_by="U1"
                    )
            engine.create_pipeline(pipeline=build_pipeline(HEALTHY, seconds=0.2))
            for _ in range(3):
                engine.start_pipeline_execution(name=HEALTHY)
            problems: list[str] = ["not checked"]
            duplicates = 0
            parents = 0
            finals: dict[str, list[dict[str, Any]]] = {}
            deadline = time.monotonic() + 120
            ticks = 0
            while problems and time.monotonic() < deadline:
                notifier.run_once()
                ticks += 1
                finals = {
                    HEALTHY: engine.list_pipeline_executions(pipelineName=HEALTHY)[
                        "pipelineExecutionSummaries"
                    ]
                }
                if all(s["status"] in TERMINAL for s in finals[HEALTHY]):
                    problems, duplicates, parents = notification_problems(
                        fake, finals, lambda name: "C" + name
                    )
                time.sleep(0.3)
            assert not problems and duplicates == 0, problems
            with sessions() as session:
                poll = notify_store.get_poll(session=session, pipeline=FAULTY)
            assert poll is not None and poll.last_error
            assert not fake.calls_to("chat.postMessage") or all(
                c.params.get("channel") != "C" + FAULTY for c in fake.calls_to("chat.postMessage")
            )
        finally:
            notifier.close()
            stubber.deactivate()
            db.dispose()
    reported = Counter(
        code
        for record_ in caplog.records
        for code, words in CODES.items()
        if FAULTY in record_.getMessage()
        and (words in record_.getMessage() or "throttled" in record_.getMessage())
        and (code != "ThrottlingException" or "throttled" in record_.getMessage())
    )
    assert set(reported) == set(CODES), reported
    record(
        "aws_faults",
        faults_injected=len(CODES) + sum(reported.values()),
        error_codes=len(CODES),
        notifier_ticks=ticks,
        healthy_executions=len(finals[HEALTHY]),
        parent_messages=parents,
        duplicates=duplicates,
        lost=0,
    )


def test_expired_credentials_and_missing_ones_are_named(engine: Any) -> None:
    settings = Settings(
        PIPEBOT_BACKEND="aws",
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID=SecretStr("AKIAFAKEFAKEFAKEFAKE"),
        AWS_SECRET_ACCESS_KEY=SecretStr("fake"),
    )
    client = make_aws_client(settings)
    with Stubber(client) as stub:
        stub.add_client_error("list_pipelines", service_error_code="ExpiredTokenException")
        with pytest.raises(OpsError) as refused:
            PipelineOps(client=client, local=False).names()
    assert "expired" in refused.value.message
    assert "AKIA" not in refused.value.message
