"""CodePipeline ``#{namespace.name}`` variable references."""

from __future__ import annotations

import pytest

from bot.engine.variables import (
    UnresolvedVariableError,
    references,
    resolve,
    resolve_list,
    resolve_mapping,
)

NAMESPACES = {
    "codepipeline": {"PipelineExecutionId": "0f1e2d3c-aaaa-bbbb-cccc-123456789012"},
    "variables": {"ENV": "staging", "REGION": "eu-west-1"},
    "SourceVariables": {"CommitId": "abc123", "BranchName": "main"},
}


def test_resolves_all_three_namespaces() -> None:
    assert (
        resolve("#{codepipeline.PipelineExecutionId}", namespaces=NAMESPACES)
        == "0f1e2d3c-aaaa-bbbb-cccc-123456789012"
    )
    assert resolve("deploy to #{variables.ENV}", namespaces=NAMESPACES) == "deploy to staging"
    assert resolve("#{SourceVariables.CommitId}", namespaces=NAMESPACES) == "abc123"


def test_multiple_references_in_one_string() -> None:
    text = "#{variables.ENV}/#{variables.REGION}/#{SourceVariables.CommitId}-#{variables.ENV}"
    assert resolve(text, namespaces=NAMESPACES) == "staging/eu-west-1/abc123-staging"


def test_unknown_references_are_reported_together() -> None:
    text = "#{variables.NOPE} #{Missing.Thing} #{variables.ENV} #{variables.NOPE}"
    with pytest.raises(UnresolvedVariableError) as info:
        resolve(text, namespaces=NAMESPACES)
    assert info.value.references == ["variables.NOPE", "Missing.Thing"]
    assert "#{variables.NOPE}" in str(info.value)
    assert "#{Missing.Thing}" in info.value.summary


def test_text_without_references_is_unchanged() -> None:
    for text in ["", "plain text", "echo ${HOME}", "# {not.a.ref}", "#{noDot}", "#{unterminated.x"]:
        assert resolve(text, namespaces=NAMESPACES) == text
    assert resolve("#{noDot} #{variables.ENV}", namespaces=NAMESPACES) == "#{noDot} staging"


def test_substituted_values_are_not_resolved_again() -> None:
    namespaces = {"variables": {"A": "#{variables.B}", "B": "b"}}
    assert resolve("#{variables.A}", namespaces=namespaces) == "#{variables.B}"


def test_references_in_order_without_duplicates() -> None:
    text = "#{variables.ENV} #{SourceVariables.CommitId} #{variables.ENV} #{bad}"
    assert references(text) == [("variables", "ENV"), ("SourceVariables", "CommitId")]
    assert references("nothing here") == []


def test_resolve_mapping_and_list_report_every_value() -> None:
    config = {"Stack": "app-#{variables.ENV}", "Commit": "#{SourceVariables.CommitId}"}
    assert resolve_mapping(config, namespaces=NAMESPACES) == {
        "Stack": "app-staging",
        "Commit": "abc123",
    }
    commands = ["echo #{variables.REGION}", "true"]
    assert resolve_list(commands, namespaces=NAMESPACES) == ["echo eu-west-1", "true"]

    with pytest.raises(UnresolvedVariableError) as info:
        resolve_mapping({"A": "#{x.one}", "B": "#{y.two}"}, namespaces=NAMESPACES)
    assert info.value.references == ["x.one", "y.two"]
    with pytest.raises(UnresolvedVariableError) as info:
        resolve_list(["#{x.one}", "ok", "#{y.two}"], namespaces=NAMESPACES)
    assert info.value.references == ["x.one", "y.two"]
