"""A typed, read-only view of a validated pipeline declaration.

The engine reads declarations constantly (every advance); parsing the JSON once
per (pipeline, version) into frozen dataclasses keeps the hot path cheap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_APPROVAL_TIMEOUT_MINUTES = 7 * 24 * 60


@dataclass(frozen=True)
class OutputArtifactSpec:
    name: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class ActionSpec:
    name: str
    category: str
    owner: str
    provider: str
    version: str
    run_order: int
    configuration: Mapping[str, str]
    commands: tuple[str, ...]
    input_artifacts: tuple[str, ...]
    output_artifacts: tuple[OutputArtifactSpec, ...]
    output_variables: tuple[str, ...]
    namespace: str | None
    timeout_minutes: int | None
    region: str | None
    role_arn: str | None
    environment: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_approval(self) -> bool:
        return self.category == "Approval"

    def action_type_id(self) -> dict[str, str]:
        return {
            "category": self.category,
            "owner": self.owner,
            "provider": self.provider,
            "version": self.version,
        }


@dataclass(frozen=True)
class StageSpec:
    name: str
    index: int
    actions: tuple[ActionSpec, ...]
    on_failure: Mapping[str, Any] = field(default_factory=dict)
    """The stage's ``onFailure`` as declared (``result`` FAIL | RETRY | ROLLBACK,
    ``retryConfiguration``, ``conditions``); empty: the stage fails."""

    @property
    def on_failure_result(self) -> str:
        """What a failure of the stage leads to when no failure condition decides otherwise:
        FAIL (the default), RETRY or ROLLBACK [userguide/stage-conditions.html]."""
        return str(self.on_failure.get("result") or "FAIL")

    @property
    def retry_mode(self) -> str:
        """An automatic retry's mode: FAILED_ACTIONS unless ``retryConfiguration`` says
        ALL_ACTIONS [APIReference/API_RetryConfiguration.html]."""
        configuration = self.on_failure.get("retryConfiguration") or {}
        return str(configuration.get("retryMode") or "FAILED_ACTIONS")

    def run_orders(self) -> list[int]:
        return sorted({a.run_order for a in self.actions})

    def action(self, name: str) -> ActionSpec | None:
        for action in self.actions:
            if action.name == name:
                return action
        return None


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    version: int
    pipeline_type: str
    execution_mode: str
    stages: tuple[StageSpec, ...]
    variables: tuple[tuple[str, str | None], ...]
    declaration: Mapping[str, Any]

    def stage(self, name: str) -> StageSpec | None:
        for stage in self.stages:
            if stage.name == name:
                return stage
        return None


def _action(raw: Mapping[str, Any]) -> ActionSpec:
    type_id = raw["actionTypeId"]
    environment = {
        str(e.get("name")): str(e.get("value", ""))
        for e in raw.get("environmentVariables") or []
        if e.get("type", "PLAINTEXT") == "PLAINTEXT"
    }
    return ActionSpec(
        name=raw["name"],
        category=type_id["category"],
        owner=type_id["owner"],
        provider=type_id["provider"],
        version=str(type_id.get("version", "1")),
        run_order=int(raw.get("runOrder") or 1),
        configuration=dict(raw.get("configuration") or {}),
        commands=tuple(raw.get("commands") or ()),
        input_artifacts=tuple(a["name"] for a in raw.get("inputArtifacts") or ()),
        output_artifacts=tuple(
            OutputArtifactSpec(name=a["name"], files=tuple(a.get("files") or ()))
            for a in raw.get("outputArtifacts") or ()
        ),
        output_variables=tuple(raw.get("outputVariables") or ()),
        namespace=raw.get("namespace"),
        timeout_minutes=raw.get("timeoutInMinutes"),
        region=raw.get("region"),
        role_arn=raw.get("roleArn"),
        environment=environment,
    )


def parse_spec(declaration: Mapping[str, Any]) -> PipelineSpec:
    """Build the view from a declaration that ``validate_declaration`` accepted."""
    return PipelineSpec(
        name=declaration["name"],
        version=int(declaration.get("version") or 1),
        pipeline_type=declaration.get("pipelineType") or "V1",
        execution_mode=declaration.get("executionMode") or "SUPERSEDED",
        stages=tuple(
            StageSpec(
                name=stage["name"],
                index=index,
                actions=tuple(_action(a) for a in stage["actions"]),
                on_failure=dict(stage.get("onFailure") or {}),
            )
            for index, stage in enumerate(declaration["stages"])
        ),
        variables=tuple(
            (v["name"], v.get("defaultValue")) for v in declaration.get("variables") or ()
        ),
        declaration=declaration,
    )


def spec_from_json(text: str) -> PipelineSpec:
    return parse_spec(json.loads(text))
