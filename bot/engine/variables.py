"""CodePipeline variable references (``#{namespace.name}``) and their resolution.

CodePipeline lets action configuration values and Commands lines refer to variables:
``#{codepipeline.PipelineExecutionId}`` (execution metadata), ``#{variables.NAME}`` (pipeline
variables, overridable at start) and ``#{SourceVariables.CommitId}`` (the output variables of an
action whose ``namespace`` is ``SourceVariables``). The engine resolves them just before an action
runs, against a mapping of namespace -> {name -> value} that the caller assembles.

Resolution is a single pass: a substituted value is never scanned again, so a value that happens to
contain ``#{...}`` (a commit message, say) cannot inject further references. A reference that cannot
be resolved fails the action, as it does on AWS; every unresolved reference is reported at once so a
user fixes them all in one edit rather than one per run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from bot.engine.errors import EngineError

__all__ = [
    "UnresolvedVariableError",
    "references",
    "resolve",
    "resolve_list",
    "resolve_mapping",
]

# A namespace is an action namespace (``[A-Za-z0-9@\-_]+`` in the API model), ``codepipeline`` or
# ``variables``; it never holds a dot, so the first dot separates it from the name. Names of output
# variables are environment variable names or CloudFormation output names, pipeline variable names
# are ``[A-Za-z0-9@\-_]+``; dots are tolerated in the name for forward compatibility. Anything else
# after ``#{`` (no dot, spaces, an unterminated brace) is not a reference and is left untouched.
_REFERENCE = re.compile(r"#\{([A-Za-z0-9@_-]+)\.([A-Za-z0-9@_.-]+)\}")


class UnresolvedVariableError(EngineError):
    """Some ``#{namespace.name}`` references have no value.

    ``references`` lists each unresolved reference once, as ``"namespace.name"``, in order of first
    appearance, so the caller can put all of them in one action failure summary.
    """

    def __init__(self, references: list[str]) -> None:
        self.references = references
        self.summary = "Unresolved variable reference(s): " + ", ".join(
            "#{" + ref + "}" for ref in references
        )
        super().__init__(self.summary)


def references(text: str) -> list[tuple[str, str]]:
    """Return the ``(namespace, name)`` pairs referenced in ``text``.

    Each pair appears once, in order of first appearance: callers use this to find which actions'
    outputs a value depends on, where duplicates carry no information.
    """
    if "#{" not in text:
        return []
    found = ((match[1], match[2]) for match in _REFERENCE.finditer(text))
    return list(dict.fromkeys(found))


def _substitute(
    text: str, namespaces: Mapping[str, Mapping[str, str]], missing: dict[str, None]
) -> str:
    """Resolve ``text``, recording unresolved references in ``missing`` instead of raising.

    Shared by the public functions so that resolving several values reports every missing reference
    across all of them, not only those of the first value that fails.
    """
    if "#{" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        namespace, name = match.group(1), match.group(2)
        values = namespaces.get(namespace)
        if values is not None:
            value = values.get(name)
            if value is not None:
                return value
        missing[f"{namespace}.{name}"] = None
        return match.group(0)

    return _REFERENCE.sub(replace, text)


def resolve(text: str, *, namespaces: Mapping[str, Mapping[str, str]]) -> str:
    """Replace every ``#{namespace.name}`` in ``text`` with its value.

    Raises ``UnresolvedVariableError`` listing every reference without a value. Text without
    ``#{`` is returned as is without touching the regex engine (the common case).
    """
    missing: dict[str, None] = {}
    result = _substitute(text, namespaces, missing)
    if missing:
        raise UnresolvedVariableError(list(missing))
    return result


def resolve_mapping(
    values: Mapping[str, str], *, namespaces: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """Resolve every value of an action configuration map (keys are never resolved).

    All unresolved references across all values are raised together.
    """
    missing: dict[str, None] = {}
    result = {key: _substitute(value, namespaces, missing) for key, value in values.items()}
    if missing:
        raise UnresolvedVariableError(list(missing))
    return result


def resolve_list(
    values: Sequence[str], *, namespaces: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """Resolve every item of a list such as a Commands action's ``commands``.

    All unresolved references across all items are raised together.
    """
    missing: dict[str, None] = {}
    result = [_substitute(value, namespaces, missing) for value in values]
    if missing:
        raise UnresolvedVariableError(list(missing))
    return result
