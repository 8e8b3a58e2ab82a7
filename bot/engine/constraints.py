"""The API model's constraints that CodePipeline checks on the server, not botocore on the client.

botocore's ``ParamValidator`` checks types, required members and *minimums* before a request
leaves the client. Everything else the model says about an input (maximum lengths and values,
maximum list and map sizes, patterns, enums) is checked by the service, which answers
``ValidationException`` with one message for all problems, in the form of AWS's Coral frameworks::

    1 validation error detected: Value '600 characters...' at 'result.summary' failed to
    satisfy constraint: Member must have length less than or equal to 512

(several problems: ``2 validation errors detected: ...; ...``). Paths use the wire names, list
positions are 1-based with ``.member``, map values name the map (``pipeline.stages.2.member.
actions.1.member.configuration``), as AWS's own messages quoted in public reports show, e.g.
https://github.com/aws/aws-cdk/issues/12747 (``Value at 'pipeline.stages.2.member.actions.1.
member.configuration' failed to satisfy constraint: Map value must satisfy constraint: [Member
must have length less than or equal to 1000, Member must have length greater than or equal to
1]``).

One walker serves the embedded engine's operations, its declaration checks, and pipebot's
pre-validation on the way to AWS. ``SERVICE_MAXIMA`` holds the limits where the service is known
to accept more than botocore's bundled model says: pre-validation must never refuse what AWS
accepts.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from botocore.model import ListShape, MapShape, Shape, StructureShape

#: Path of a value inside a request: member names (str) and 0-based list positions (int).
#: A map's entries add ``("{key}", key)`` pairs as one str element each: ``"{KEY}"``.
Path = tuple[str | int, ...]

Kind = Literal["length", "value", "size", "enum", "pattern", "type"]

#: Limits the service enforces where botocore's bundled model is stricter, by shape name.
#: ``ActionConfigurationValue``: the model still says 1,000 characters (the limit quoted in
#: https://github.com/aws/aws-cdk/issues/17067 and the user guide's quotas page of 2020), but the
#: service accepts configuration values of up to 50,000 characters today (a manual approval's
#: ``CustomData`` of 1,500 characters and a CodeBuild ``EnvironmentVariables`` value of 1,828 both
#: succeed in CodePipeline): pipebot follows the service.
SERVICE_MAXIMA: Final[dict[str, int]] = {"ActionConfigurationValue": 50_000}

#: Patterns of the model that AWS's own documentation examples do not follow (a ``roleArn`` of
#: ``"ARN"`` in the user guide's samples), so the service cannot be relying on them.
UNCHECKED_PATTERNS: Final[frozenset[str]] = frozenset({"RoleArn"})


@dataclass(frozen=True)
class Violation:
    """One constraint a value breaks.

    ``constraint`` is AWS's wording (``"Member must have length less than or equal to 512"``);
    ``in_map`` is ``"key"`` or ``"value"`` when the value is a map's key or value, which AWS
    reports on the map with all the member shape's constraints listed.
    """

    path: Path
    value: Any
    kind: Kind
    constraint: str
    shape: Shape
    in_map: Literal["key", "value"] | None = None


def maximum_of(shape: Shape) -> int | None:
    """The maximum (length, size or value) the service enforces for ``shape``, or None."""
    if shape.name in SERVICE_MAXIMA:
        return SERVICE_MAXIMA[shape.name]
    maximum = shape.metadata.get("max")
    return int(maximum) if maximum is not None else None


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error:  # pragma: no cover - the model's patterns all compile in Python
        return None


def violations(
    value: Any, shape: Shape, *, path: Path = (), skip: Callable[[Path], bool] | None = None
) -> list[Violation]:
    """Every server-side constraint of ``shape`` that ``value`` breaks, outermost first.

    Values of the wrong type are passed over (botocore's client-side validator reports them),
    except a bool where an integer is expected, which Python's ``isinstance`` lets through
    botocore and the service's JSON parser refuses (kind ``"type"``). ``skip(path)`` True leaves
    that value's own constraints unchecked (its members are still walked).
    """
    found: list[Violation] = []
    _walk(value, shape, path, skip, found, None)
    return found


def _walk(
    value: Any,
    shape: Shape,
    path: Path,
    skip: Callable[[Path], bool] | None,
    found: list[Violation],
    in_map: Literal["key", "value"] | None,
) -> None:
    own = skip is None or not skip(path)
    maximum = maximum_of(shape)
    if isinstance(shape, StructureShape):
        if isinstance(value, dict):
            for key, member in shape.members.items():
                if key in value:
                    _walk(value[key], member, (*path, key), skip, found, None)
    elif isinstance(shape, ListShape):
        if isinstance(value, list | tuple):
            if own:
                _check_size(value, shape, path, maximum, found, in_map)
            for index, item in enumerate(value):
                _walk(item, shape.member, (*path, index), skip, found, None)
    elif isinstance(shape, MapShape):
        if isinstance(value, dict):
            if own:
                _check_size(value, shape, path, maximum, found, in_map)
            for key, item in value.items():
                _walk(key, shape.key, path, skip, found, "key")
                _walk(item, shape.value, (*path, f"{{{key}}}"), skip, found, "value")
    elif shape.type_name == "string":
        if isinstance(value, str) and own:
            problem = _string_problem(value, shape, maximum)
            if problem is not None:
                found.append(Violation(path, value, problem[0], problem[1], shape, in_map))
    elif shape.type_name in ("integer", "long"):
        if isinstance(value, bool):
            found.append(Violation(path, value, "type", "Member must be an integer", shape, in_map))
        elif isinstance(value, int) and own and maximum is not None and value > maximum:
            found.append(
                Violation(
                    path,
                    value,
                    "value",
                    f"Member must have value less than or equal to {maximum}",
                    shape,
                    in_map,
                )
            )


def _check_size(
    value: Any,
    shape: Shape,
    path: Path,
    maximum: int | None,
    found: list[Violation],
    in_map: Literal["key", "value"] | None,
) -> None:
    """A list or map with more entries than the model allows."""
    if maximum is not None and len(value) > maximum:
        constraint = f"Member must have length less than or equal to {maximum}"
        found.append(Violation(path, value, "size", constraint, shape, in_map))


def _string_problem(value: str, shape: Shape, maximum: int | None) -> tuple[Kind, str] | None:
    enum = shape.metadata.get("enum")
    if enum and value not in enum:
        return "enum", f"Member must satisfy enum value set: [{', '.join(enum)}]"
    if maximum is not None and len(value) > maximum:
        return "length", f"Member must have length less than or equal to {maximum}"
    pattern = shape.metadata.get("pattern")
    if pattern and shape.name not in UNCHECKED_PATTERNS:
        compiled = _compiled(pattern)
        if compiled is not None and not compiled.fullmatch(value):
            return "pattern", f"Member must satisfy regular expression pattern: {pattern}"
    return None


# --------------------------------------------------------------------------- AWS's message


def aws_path(path: Path) -> str:
    """``("pipeline", "stages", 1, "actions", 0, "name")`` -> ``pipeline.stages.2.member.actions.
    1.member.name``; a map value is reported on the map itself."""
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"{part + 1}.member")
        elif part.startswith("{") and part.endswith("}"):
            continue
        else:
            parts.append(part)
    return ".".join(parts)


def _all_constraints(shape: Shape) -> str:
    listed: list[str] = []
    maximum = maximum_of(shape)
    if maximum is not None:
        listed.append(f"Member must have length less than or equal to {maximum}")
    minimum = shape.metadata.get("min")
    if minimum is not None:
        listed.append(f"Member must have length greater than or equal to {minimum}")
    pattern = shape.metadata.get("pattern")
    if pattern:
        listed.append(f"Member must satisfy regular expression pattern: {pattern}")
    enum = shape.metadata.get("enum")
    if enum:
        listed.append(f"Member must satisfy enum value set: [{', '.join(enum)}]")
    return ", ".join(listed)


def aws_line(violation: Violation) -> str:
    """One problem as AWS words it (``Value '...' at '...' failed to satisfy constraint: ...``).

    Scalars are quoted as given; lists and maps are reported without their value, as AWS does
    for maps.
    """
    where = aws_path(violation.path)
    if violation.in_map is not None:
        which = "Map value" if violation.in_map == "value" else "Map keys"
        return (
            f"Value at '{where}' failed to satisfy constraint: {which} must satisfy "
            f"constraint: [{_all_constraints(violation.shape)}]"
        )
    if isinstance(violation.value, list | tuple | dict):
        return f"Value at '{where}' failed to satisfy constraint: {violation.constraint}"
    shown = str(violation.value).lower() if isinstance(violation.value, bool) else violation.value
    return f"Value '{shown}' at '{where}' failed to satisfy constraint: {violation.constraint}"


def aws_message(found: list[Violation]) -> str:
    """The ``ValidationException`` message for ``found`` (at least one violation)."""
    lines = list(dict.fromkeys(aws_line(v) for v in found))
    noun = "error" if len(lines) == 1 else "errors"
    return f"{len(lines)} validation {noun} detected: " + "; ".join(lines)


__all__ = [
    "SERVICE_MAXIMA",
    "UNCHECKED_PATTERNS",
    "Violation",
    "aws_line",
    "aws_message",
    "aws_path",
    "maximum_of",
    "violations",
]
