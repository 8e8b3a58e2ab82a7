"""Check that a response matches botocore's ``codepipeline`` output shape.

Contract tests use this to prove that the embedded engine's responses are
interchangeable with what boto3's ``codepipeline`` client returns::

    assert_output_shape("GetPipelineState", engine_response)

Problems are reported with a JSON-path-like location, e.g.
``stageStates[0].actionStates[1].latestExecution.status``.

Checked: unknown structure keys (a top-level ``ResponseMetadata`` is ignored),
missing required members, and Python types per botocore shape type. For strings
the enum and the min/max length from the model are checked too. Patterns and
list/map/integer bounds are not checked.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping
from typing import Any

import botocore.session
from botocore.model import ListShape, MapShape, ServiceModel, Shape, StructureShape

__all__ = ["assert_output_shape", "output_problems"]


@functools.cache
def _service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("codepipeline")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _where(path: str) -> str:
    return path or "<response>"


def _check(shape: Shape, value: Any, path: str, problems: list[str]) -> None:
    type_name = shape.type_name
    where = _where(path)

    if type_name == "structure":
        assert isinstance(shape, StructureShape)
        _check_structure(shape, value, path, problems)
    elif type_name == "list":
        assert isinstance(shape, ListShape)
        if not isinstance(value, list):
            problems.append(f"{where}: expected list, got {type(value).__name__}")
            return
        for index, item in enumerate(value):
            _check(shape.member, item, f"{path}[{index}]", problems)
    elif type_name == "map":
        assert isinstance(shape, MapShape)
        if not isinstance(value, dict):
            problems.append(f"{where}: expected dict (map), got {type(value).__name__}")
            return
        for key, item in value.items():
            key_path = f"{path}[{key!r}]"
            _check(shape.key, key, f"{key_path} (map key)", problems)
            _check(shape.value, item, key_path, problems)
    elif type_name == "string":
        _check_string(shape, value, where, problems)
    elif type_name in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{where}: expected int, got {type(value).__name__}")
    elif type_name in ("float", "double"):
        if not isinstance(value, float | int) or isinstance(value, bool):
            problems.append(f"{where}: expected float, got {type(value).__name__}")
    elif type_name == "boolean":
        if not isinstance(value, bool):
            problems.append(f"{where}: expected bool, got {type(value).__name__}")
    elif type_name == "timestamp":
        if not isinstance(value, datetime.datetime):
            problems.append(f"{where}: expected datetime, got {type(value).__name__}")
        elif value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            problems.append(f"{where}: expected timezone-aware datetime, got naive {value!r}")
    elif type_name == "blob":
        if not isinstance(value, bytes):
            problems.append(f"{where}: expected bytes, got {type(value).__name__}")
    else:
        problems.append(f"{where}: shape {shape.name} has unsupported type {type_name!r}")


def _check_structure(
    shape: StructureShape,
    value: Any,
    path: str,
    problems: list[str],
    *,
    top_level: bool = False,
) -> None:
    where = _where(path)
    if not isinstance(value, dict):
        problems.append(
            f"{where}: expected dict (structure {shape.name}), got {type(value).__name__}"
        )
        return
    members = shape.members
    for key, item in value.items():
        if top_level and key == "ResponseMetadata":
            continue
        if key not in members:
            problems.append(f"{_join(path, str(key))}: unknown key (not a member of {shape.name})")
            continue
        _check(members[key], item, _join(path, key), problems)
    for name in shape.required_members:
        if name not in value:
            problems.append(f"{_join(path, name)}: required member missing")


def _check_string(shape: Shape, value: Any, where: str, problems: list[str]) -> None:
    if not isinstance(value, str):
        problems.append(f"{where}: expected str, got {type(value).__name__}")
        return
    enum: list[str] = list(getattr(shape, "enum", None) or [])
    if enum and value not in enum:
        problems.append(f"{where}: {value!r} is not one of {shape.name} enum {enum}")
    metadata = shape.metadata
    min_len = metadata.get("min")
    max_len = metadata.get("max")
    if isinstance(min_len, int) and len(value) < min_len:
        problems.append(f"{where}: length {len(value)} is below {shape.name} min {min_len}")
    if isinstance(max_len, int) and len(value) > max_len:
        problems.append(f"{where}: length {len(value)} is above {shape.name} max {max_len}")


def output_problems(operation: str, response: Mapping[str, Any]) -> list[str]:
    """Return every way ``response`` deviates from ``operation``'s output shape.

    An empty list means the response is shaped like boto3's. An unknown operation
    raises ``botocore.exceptions.OperationNotFoundError``.
    """
    output_shape = _service_model().operation_model(operation).output_shape
    problems: list[str] = []
    if output_shape is None:
        extra = sorted(str(k) for k in response if k != "ResponseMetadata")
        problems.extend(f"{key}: unknown key ({operation} has no output)" for key in extra)
        return problems
    assert isinstance(output_shape, StructureShape)
    _check_structure(output_shape, dict(response), "", problems, top_level=True)
    return problems


def assert_output_shape(operation: str, response: Mapping[str, Any]) -> None:
    """Raise ``AssertionError`` listing all problems if ``response`` is off-model."""
    problems = output_problems(operation, response)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise AssertionError(
            f"{operation} response does not match the botocore output shape "
            f"({len(problems)} problem(s)):\n{listing}"
        )
