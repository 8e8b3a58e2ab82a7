"""boto3 client conveniences on the engine: paginators and modeled exceptions."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, OperationNotPageableError

from tests.helpers import approval_action, pipeline, source_action


def test_paginators_walk_every_page(engine: Any) -> None:
    engine.create_pipeline(
        pipeline=pipeline("pages", [("Source", [source_action()]), ("Gate", [approval_action()])])
    )
    for _ in range(4):
        engine.start_pipeline_execution(name="pages")
    assert engine.can_paginate("list_pipeline_executions")
    assert not engine.can_paginate("get_pipeline")
    paginator = engine.get_paginator("list_pipeline_executions")
    pages = list(paginator.paginate(pipelineName="pages", PaginationConfig={"PageSize": 2}))
    assert [len(p["pipelineExecutionSummaries"]) for p in pages] == [2, 2, 1]
    ids = [e["pipelineExecutionId"] for p in pages for e in p["pipelineExecutionSummaries"]]
    assert len(set(ids)) == 5
    built = paginator.paginate(pipelineName="pages").build_full_result()
    assert len(built["pipelineExecutionSummaries"]) == 5
    names = engine.get_paginator("ListPipelines").paginate().build_full_result()["pipelines"]
    assert [p["name"] for p in names] == ["pages"]
    with pytest.raises(OperationNotPageableError):
        engine.get_paginator("get_pipeline")


def test_modeled_exceptions_are_client_errors(engine: Any) -> None:
    with pytest.raises(engine.exceptions.PipelineNotFoundException) as caught:
        engine.get_pipeline(name="missing")
    assert isinstance(caught.value, ClientError)
    assert caught.value.response["Error"]["Code"] == "PipelineNotFoundException"


def test_change_listeners_hear_api_changes_and_finished_actions(engine: Any) -> None:
    from tests.helpers import commands_action, wait_for

    heard: list[int] = []
    engine.add_change_listener(lambda: heard.append(1))
    engine.create_pipeline(
        pipeline=pipeline(
            "heard", [("Source", [source_action()]), ("Build", [commands_action("B", ["true"])])]
        )
    )
    assert heard  # the create itself
    before = len(heard)
    wait_for(lambda: len(heard) >= before + 2, what="the finished actions to be heard")
