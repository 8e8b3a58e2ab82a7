"""The pipeline client the bot talks to, and the one factory that returns it.

Everything above this module talks to "a codepipeline client": boto3's, or the
embedded engine's ``LocalCodePipeline``, which answers the same calls with the
same shapes and errors. ``PipelineClient`` is the subset of boto3's CodePipeline
client the bot relies on (the parameter names are AWS's, from the API reference:
https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_Operations.html).
What only the embedded engine offers is a small capability protocol of its own
(``ChangeFeed``, ``ActionLogs``), checked with ``isinstance`` where it is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import boto3
from botocore.config import Config

from bot.engine import LocalCodePipeline
from bot.settings import Settings

AWS_RETRIES = Config(retries={"mode": "adaptive", "max_attempts": 10})

# AWS's parameter names are camelCase; the protocol mirrors them.
# ruff: noqa: N803


class PipelineClient(Protocol):
    """The CodePipeline operations the bot calls. Each returns the operation's response
    as botocore shapes it (a mapping; see the API reference of each operation)."""

    def create_pipeline(self, *, pipeline: Any, tags: Any = ...) -> Mapping[str, Any]: ...

    def update_pipeline(self, *, pipeline: Any) -> Mapping[str, Any]: ...

    def get_pipeline(self, *, name: str) -> Mapping[str, Any]: ...

    def delete_pipeline(self, *, name: str) -> Mapping[str, Any]: ...

    def get_pipeline_state(self, *, name: str) -> Mapping[str, Any]: ...

    def get_pipeline_execution(
        self, *, pipelineName: str, pipelineExecutionId: str
    ) -> Mapping[str, Any]: ...

    def start_pipeline_execution(
        self, *, name: str, variables: Sequence[Any] = ..., clientRequestToken: str = ...
    ) -> Mapping[str, Any]: ...

    def stop_pipeline_execution(
        self,
        *,
        pipelineName: str,
        pipelineExecutionId: str,
        abandon: bool = ...,
        reason: str = ...,
    ) -> Mapping[str, Any]: ...

    def retry_stage_execution(
        self, *, pipelineName: str, stageName: str, pipelineExecutionId: str, retryMode: Any
    ) -> Mapping[str, Any]: ...

    def put_approval_result(
        self, *, pipelineName: str, stageName: str, actionName: str, result: Any, token: str
    ) -> Mapping[str, Any]: ...

    def enable_stage_transition(
        self, *, pipelineName: str, stageName: str, transitionType: Any
    ) -> Mapping[str, Any]: ...

    def disable_stage_transition(
        self, *, pipelineName: str, stageName: str, transitionType: Any, reason: str
    ) -> Mapping[str, Any]: ...

    def list_pipeline_executions(
        self,
        *,
        pipelineName: str,
        maxResults: int = ...,
        filter: Any = ...,
        nextToken: str = ...,
    ) -> Mapping[str, Any]: ...

    def rollback_stage(
        self, *, pipelineName: str, stageName: str, targetPipelineExecutionId: str
    ) -> Mapping[str, Any]: ...

    def override_stage_condition(
        self, *, pipelineName: str, stageName: str, pipelineExecutionId: str, conditionType: Any
    ) -> Mapping[str, Any]: ...

    def list_rule_executions(
        self, *, pipelineName: str, filter: Any = ..., maxResults: int = ..., nextToken: str = ...
    ) -> Mapping[str, Any]: ...

    def get_paginator(self, operation_name: Any) -> Any:
        """A paginator for ``list_pipelines`` or ``list_action_executions``."""
        ...


@runtime_checkable
class ChangeFeed(Protocol):
    """A backend that knows when a pipeline changed (the embedded engine's change counter;
    AWS has none, so the notifier reads busy pipelines on every tick there)."""

    def change_tokens(self) -> dict[str, str]:
        """Each pipeline's change token, one read for all pipelines."""
        ...

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the engine's thread) after every committed change."""
        ...


@runtime_checkable
class ActionLogs(Protocol):
    """A backend that keeps the output of the actions it ran (the embedded engine)."""

    def get_action_log(self, *, actionExecutionId: str, tailLines: int | None = None) -> str: ...


@runtime_checkable
class Closeable(Protocol):
    """A backend holding resources (threads, a database pool) until it is closed."""

    def close(self) -> None: ...


def make_aws_client(settings: Settings) -> PipelineClient:
    """boto3's CodePipeline client through the standard credential chain, adaptive retries."""
    session = boto3.session.Session(
        profile_name=settings.aws_profile, region_name=settings.aws_region
    )
    client: PipelineClient = session.client("codepipeline", config=AWS_RETRIES)
    return client


def make_client(settings: Settings, *, run_worker: bool = True) -> PipelineClient:
    """The backend ``settings.backend`` names: ``LocalCodePipeline`` or boto3's client."""
    if settings.backend == "aws":
        return make_aws_client(settings)
    return make_local_client(settings, run_worker=run_worker)


def make_local_client(settings: Settings, *, run_worker: bool = True) -> LocalCodePipeline:
    """The embedded engine on the configured database and data directory."""
    return LocalCodePipeline(
        database_url=settings.resolved_database_url,
        data_dir=settings.resolved_data_dir,
        repositories_dir=settings.resolved_repositories_dir,
        run_worker=run_worker,
        poll_seconds=settings.engine_poll_seconds,
        max_parallel_actions=settings.engine_max_parallel_actions,
        region=settings.aws_region,
        codebuild_projects=settings.codebuild_projects,
        drain_seconds=settings.engine_drain_seconds,
    )


def close_client(client: PipelineClient) -> None:
    """Close a backend that holds resources; boto3's client holds none worth closing."""
    if isinstance(client, Closeable):
        client.close()
