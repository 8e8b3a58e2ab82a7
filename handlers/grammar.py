"""The typed ``/pipeline`` grammar: one registry of commands, a parser that raises, generated help.

Everything here is pure (no I/O), so the slash-command handler can parse before ``ack()`` and answer
bad input with the subcommand's usage instead of a traceback (errbot's lesson in the style notes,
``../shared/docs/style.md`` beside this repository). ``parse`` raises ``CommandError`` for every
bad input and nothing else.

Text arrives as Slack sends it: ``&``, ``<`` and ``>`` typed by the user come HTML-escaped and are
decoded here exactly once; user and group mentions arrive as ``<@U…|name>`` /
``<!subteam^S…|@team>`` when the slash command escapes them (``should_escape: true`` in the
manifest). Free-text tails (approval comments, stop and disable reasons) are taken as typed rather
than shell-split, because prose is full of apostrophes ("don't", smart quotes too) that a
shell tokenizer would reject as unbalanced quotes.
"""

from __future__ import annotations

import difflib
import io
import re
import shlex
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, NamedTuple

from bot.errors import PipebotError
from bot.ops.permissions import PERMISSION_HOLDERS, Permission
from bot.ops.pipeline_state import EXECUTION_PREFIX_MIN, is_execution_id, is_execution_prefix
from bot.slack.access import APPROVER_RIGHTS, OPERATOR_RIGHTS

__all__ = [
    "DEMO_NAMES",
    "REGISTRY",
    "CommandError",
    "CommandSpec",
    "ExampleNames",
    "ParsedCommand",
    "UnknownCommandError",
    "examples_from",
    "help_text",
    "normalize_reason",
    "parse",
    "reason_changes",
    "spec_for",
    "suggest",
    "usage_text",
]


@dataclass(frozen=True)
class ExampleNames:
    """The names examples use: by default the sandbox's demo pipeline (``bot.demo``), or
    one of the user's own pipelines (``examples_from``), so an example can be run as it is.

    ``stage`` is a stage to disable and enable (the last one), ``retry_stage`` one to retry
    (the second), ``approval`` a manual approval as ``STAGE/ACTION`` (empty: none),
    ``execution`` the first 8 characters of an execution ID, ``variable`` a pipeline-level
    variable ``start`` may set (empty: none).
    """

    pipeline: str = "demo"
    stage: str = "Production"
    retry_stage: str = "Build"
    approval: str = "Approval/ReleaseToProduction"
    execution: str = "7131a45f"
    variable: str = "RELEASE"

    def fill(self, template: str) -> str:
        """``template`` with ``{pipeline}``, ``{stage}``, ``{retry_stage}``, ``{approval}``,
        ``{execution}`` and ``{var}`` filled in (``{approval}`` and ``{var}`` with their
        leading space, or nothing)."""
        return template.format(
            pipeline=self.pipeline,
            stage=self.stage,
            retry_stage=self.retry_stage,
            approval=f" {self.approval}" if self.approval else "",
            execution=self.execution,
            var=f" --var {self.variable}=2.1" if self.variable else "",
        )


DEMO_NAMES: Final = ExampleNames()


@dataclass(frozen=True)
class CommandSpec:
    """One subcommand as help shows it; ``usage`` and ``template`` omit the slash command.

    ``template`` is the example with the names it uses left open (``ExampleNames.fill``):
    help fills them with a pipeline the user has, an error with the name they typed.
    """

    name: str
    aliases: tuple[str, ...]
    summary: str
    usage: str
    template: str
    permission: Permission
    notes: str = ""

    @property
    def example(self) -> str:
        """The example on the demo pipeline (the README's table shows these)."""
        return self.example_for(DEMO_NAMES)

    def example_for(self, names: ExampleNames) -> str:
        return names.fill(self.template)


_ID_NOTE: Final = (
    f"An execution ID may be shortened to its first {EXECUTION_PREFIX_MIN} characters or more "
    "(messages show 8), as long as no other execution of the pipeline starts with them."
)

_DECISION_NOTE: Final = (
    "Give STAGE/ACTION only when more than one approval waits. Give EXECUTION to answer the "
    "approval one execution waits at (in a PARALLEL pipeline several executions wait at the "
    "same gate; without EXECUTION, the one the pipeline's state shows). " + _ID_NOTE
)

REGISTRY: Final[tuple[CommandSpec, ...]] = (
    CommandSpec(
        "help",
        (),
        "This help, or one command in detail.",
        "help [COMMAND]",
        "help start",
        Permission.READ,
    ),
    CommandSpec(
        "list",
        (),
        "Pipelines and their latest execution's status.",
        "list",
        "list",
        Permission.READ,
    ),
    CommandSpec(
        "status",
        ("show",),
        "Stages, actions, approvals and disabled transitions, with buttons.",
        "status NAME",
        "status {pipeline}",
        Permission.READ,
    ),
    CommandSpec(
        "history",
        (),
        "The latest N executions (default 10, at most 50).",
        "history NAME [N]",
        "history {pipeline} 20",
        Permission.READ,
    ),
    CommandSpec(
        "execution",
        ("exec",),
        "One execution's actions, their times and the failed action's log.",
        "execution NAME ID",
        "execution {pipeline} {execution}",
        Permission.READ,
        notes=_ID_NOTE,
    ),
    CommandSpec(
        "start",
        (),
        "Start an execution, optionally setting variables.",
        "start NAME [--var K=V ...]",
        "start {pipeline}{var}",
        Permission.OPERATE,
    ),
    CommandSpec(
        "stop",
        (),
        "Stop the latest (or the given) execution; `--abandon` does not wait.",
        "stop NAME [EXECUTION] [--abandon] [--reason TEXT]",
        "stop {pipeline} --abandon --reason bad build",
        Permission.OPERATE,
        notes="`--reason` takes the rest of the line, so put it last. " + _ID_NOTE,
    ),
    CommandSpec(
        "retry",
        (),
        "Retry the failed stage; `--all` reruns all its actions.",
        "retry NAME [STAGE] [EXECUTION] [--all]",
        "retry {pipeline} {retry_stage}",
        Permission.OPERATE,
        notes=_ID_NOTE,
    ),
    CommandSpec(
        "rollback",
        (),
        "Roll a stage back to an earlier success (asks first).",
        "rollback NAME STAGE [EXECUTION]",
        "rollback {pipeline} {stage}",
        Permission.OPERATE,
        notes="Without EXECUTION, the most recent execution that succeeded in STAGE before "
        "the one whose code it runs now (never a rollback). pipebot shows the target, its source "
        "revision and when it succeeded, and rolls back when you confirm: a new execution "
        "runs the stage with that execution's revisions and artifacts. Not the source stage, "
        "not in PARALLEL mode. " + _ID_NOTE,
    ),
    CommandSpec(
        "override",
        (),
        "Let a waiting or failed stage condition pass.",
        "override NAME STAGE [before|success] [EXECUTION]",
        "override {pipeline} {stage} before",
        Permission.OPERATE,
        notes="`before` is the entry condition (beforeEntry), `success` the success condition "
        "(onSuccess); without it, the one that waits or failed. A condition whose result is "
        "SKIP cannot be overridden. " + _ID_NOTE,
    ),
    CommandSpec(
        "approve",
        (),
        "Approve the waiting approval, with an optional comment.",
        "approve NAME [STAGE/ACTION] [EXECUTION] [COMMENT]",
        "approve {pipeline}{approval} looks good",
        Permission.APPROVE,
        notes=_DECISION_NOTE,
    ),
    CommandSpec(
        "reject",
        (),
        "Reject the waiting approval, with an optional comment.",
        "reject NAME [STAGE/ACTION] [EXECUTION] [COMMENT]",
        "reject {pipeline} needs a changelog entry",
        Permission.APPROVE,
        notes=_DECISION_NOTE,
    ),
    CommandSpec(
        "disable",
        (),
        "Disable the transition into a stage.",
        "disable NAME STAGE REASON",
        "disable {pipeline} {stage} release freeze until Monday",
        Permission.OPERATE,
        notes="AWS accepts only ASCII letters, digits, spaces and `!@().*?-` in the reason, "
        "at most 300 characters: accented letters lose their accents, other characters are "
        "removed, and you are told which.",
    ),
    CommandSpec(
        "enable",
        (),
        "Enable the transition into a stage.",
        "enable NAME STAGE",
        "enable {pipeline} {stage}",
        Permission.OPERATE,
    ),
    CommandSpec(
        "create",
        (),
        "Create a pipeline in a form, or from JSON or YAML pasted after `create`.",
        "create [DECLARATION]",
        "create",
        Permission.OPERATE,
        notes="The declaration uses CodePipeline's format, with or without the outer `pipeline` "
        "key; a ``` code block around it is fine.",
    ),
    CommandSpec(
        "edit",
        (),
        "Edit a pipeline's declaration in a form.",
        "edit NAME",
        "edit {pipeline}",
        Permission.OPERATE,
    ),
    CommandSpec(
        "delete",
        (),
        "Delete a pipeline (asks first).",
        "delete NAME",
        "delete {pipeline}",
        Permission.OPERATE,
    ),
    CommandSpec(
        "access",
        (),
        "Show or change who may operate and approve.",
        "access NAME [operators|approvers add|remove @SUBJECT ... | self-approval on|off]",
        "access {pipeline} self-approval off",
        Permission.ADMIN,
        notes="SUBJECT is a mention of a user (@alice) or a user group (@release-team). "
        "`self-approval off` stops whoever started an execution from approving it.",
    ),
    CommandSpec(
        "audit",
        (),
        "Recent audit entries, for one pipeline or all.",
        "audit [NAME]",
        "audit {pipeline}",
        Permission.READ,
    ),
    CommandSpec(
        "subscribe",
        (),
        "Post a pipeline's executions, approvals and failures to this channel.",
        "subscribe NAME [--events all|failures|approvals] [--digest HH:MM|off]",
        "subscribe {pipeline} --events failures --digest 09:00",
        Permission.OPERATE,
        notes="One message per execution, kept up to date, with approvals and failures in its "
        "thread. `--events failures` posts failed and stopped executions only, `--events "
        "approvals` approval requests and their outcome; subscribing again changes the filter. "
        "`--digest 09:00` also posts a daily digest here at that time (executions, success "
        "rate, median duration over the last 24 hours); `--digest off` stops it.",
    ),
    CommandSpec(
        "unsubscribe",
        (),
        "Stop posting a pipeline's events to this channel.",
        "unsubscribe NAME",
        "unsubscribe {pipeline}",
        Permission.OPERATE,
    ),
    CommandSpec(
        "subscriptions",
        (),
        "List this channel's subscriptions.",
        "subscriptions",
        "subscriptions",
        Permission.READ,
    ),
)

_BY_WORD: Final[Mapping[str, CommandSpec]] = {
    word: spec for spec in REGISTRY for word in (spec.name, *spec.aliases)
}


def spec_for(name: str) -> CommandSpec | None:
    """The command called ``name`` (or aliased so), case-insensitively."""
    return _BY_WORD.get(name.strip().lower())


@dataclass(frozen=True)
class ParsedCommand:
    """A parsed ``/pipeline`` invocation; ``args`` holds the command's typed arguments."""

    name: str
    pipeline: str | None
    args: Mapping[str, Any]
    text: str

    @property
    def spec(self) -> CommandSpec:
        spec = spec_for(self.name)
        assert spec is not None
        return spec


class CommandError(PipebotError):
    """Bad command text; ``message`` is user-facing mrkdwn, ``usage`` the command's usage."""

    def __init__(self, message: str, *, usage: str | None = None, command: str | None = None):
        super().__init__(message)
        self.usage = usage
        self.command = command

    def __str__(self) -> str:
        return self.message if self.usage is None else f"{self.message}\n{self.usage}"


class UnknownCommandError(CommandError):
    """A subcommand (or help topic) that does not exist; ``suggestions`` are close names."""

    def __init__(self, message: str, *, suggestions: list[str], usage: str | None = None):
        super().__init__(message, usage=usage)
        self.suggestions = suggestions


# --- names and values ---------------------------------------------------------------------------

_NAME_RE: Final = re.compile(r"[A-Za-z0-9.@\-_]{1,100}")
_NAME_RULE: Final = "1-100 ASCII letters (A-Z, a-z, no accents), digits and `.@-_`"
_HEX_RE: Final = re.compile(r"[0-9a-fA-F]{1,36}")
_VARIABLE_RE: Final = re.compile(r"[A-Za-z0-9@\-_]{1,128}")
_COUNT_RE: Final = re.compile(r"[0-9]{1,3}")
HISTORY_DEFAULT: Final = 10
HISTORY_MAX: Final = 50

_USER_MENTION_RE: Final = re.compile(r"<@([UW][A-Z0-9]{2,})(?:\|[^>]*)?>")
_GROUP_MENTION_RE: Final = re.compile(r"<!subteam\^(S[A-Z0-9]{2,})(?:\|[^>]*)?>")
_BARE_ID_RE: Final = re.compile(r"[UWS][A-Z0-9]{2,}")
_SUBJECT_TOKEN_RE: Final = re.compile(r"<[^>]*>|\S+")

_ENTITY_RE: Final = re.compile(r"&(amp|lt|gt);")
_ENTITIES: Final = {"amp": "&", "lt": "<", "gt": ">"}
_SMART_QUOTES: Final = str.maketrans(
    {"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'", "\u201a": "'"}
)
_ODD_SPACES: Final = str.maketrans(dict.fromkeys("\u00a0\u2007\u202f\u3000\ufeff", " "))
_SHELL_SPACE: Final = " \t\r\n"
_QUOTES: Final = "\"'"

_REASON_CHAR_RE: Final = re.compile(r"[a-zA-Z0-9!@ ().*?\-]")
REASON_MAX: Final = 300


def _unescape(text: str) -> str:
    """Decode Slack's ``&amp;``/``&lt;``/``&gt;`` exactly once."""
    return _ENTITY_RE.sub(lambda m: _ENTITIES[m.group(1)], text)


def _show(value: str, limit: int = 60) -> str:
    """A user-supplied value made safe to quote inside backticks in a reply."""
    value = value.replace("`", "'").replace("\n", " ")
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _unquote(text: str) -> str:
    """Strip one pair of quotes around the whole text, if that is what surrounds it."""
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] == text[0] and text[0] not in text[1:-1]:
        return text[1:-1].strip()
    return text


def usage_text(
    spec: CommandSpec, *, slash: str = "/pipeline", names: ExampleNames = DEMO_NAMES
) -> str:
    """The usage line and an example of one command, in mrkdwn, as error replies show them
    (``bot.slack.messages.error_blocks``)."""
    return (
        f"*Usage:* `{_escape(slash)} {_escape(spec.usage)}`\n"
        f"*Example:* `{_escape(slash)} {_escape(spec.example_for(names))}`"
    )


def _escape(text: str) -> str:
    """``&``, ``<`` and ``>`` escaped for mrkdwn (Slack's rule, even inside code)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def suggest(word: str, candidates: Iterable[str], *, limit: int = 3) -> list[str]:
    """Candidates close to ``word``: case-insensitive difflib matches, then prefix matches."""
    needle = word.strip().lower()
    if not needle or limit <= 0:
        return []
    by_lower: dict[str, str] = {}
    for candidate in candidates:
        by_lower.setdefault(candidate.lower(), candidate)
    found: list[str] = []
    if needle in by_lower:
        found.append(by_lower[needle])
    found += [by_lower[m] for m in difflib.get_close_matches(needle, by_lower, n=limit, cutoff=0.6)]
    if len(needle) >= 2:
        found += [c for low, c in by_lower.items() if low.startswith(needle)]
    return list(dict.fromkeys(found))[:limit]


def normalize_reason(text: str) -> tuple[str, bool]:
    """Reduce ``text`` to AWS's transition-reason alphabet; refuse more than 300 characters.

    Accents are dropped (``é`` → ``e``), quotes and apostrophes vanish, any other character
    outside ``[a-zA-Z0-9!@ ().*?-]`` becomes a space, spaces collapse. ``changed`` is True when
    the result differs from the text beyond whitespace, so the bot can tell the user.
    """
    decomposed = unicodedata.normalize("NFKD", text.translate(_SMART_QUOTES))
    chars: list[str] = []
    for char in decomposed:
        if _REASON_CHAR_RE.fullmatch(char):
            chars.append(char)
        elif char in _QUOTES or char == "`" or unicodedata.combining(char):
            continue
        else:
            chars.append(" ")
    reason = " ".join("".join(chars).split())
    if not reason:
        raise CommandError(
            "The reason has no characters AWS accepts: use ASCII letters, digits, spaces or "
            "`!@().*?-`."
        )
    if len(reason) > REASON_MAX:
        raise CommandError(
            f"The reason is {len(reason)} characters long; AWS keeps at most {REASON_MAX} "
            f"(DisableStageTransition). Shorten it by {len(reason) - REASON_MAX} and try again."
        )
    return reason, reason != " ".join(text.split())


def reason_changes(text: str) -> str | None:
    """What ``normalize_reason`` did to ``text``, in words for the user (mrkdwn): the
    characters it removed and the accented letters it wrote without their accents; None
    when it only tidied whitespace."""
    removed: dict[str, None] = {}
    replaced: dict[str, str] = {}
    for char in text:
        if char.isspace() or _REASON_CHAR_RE.fullmatch(char):
            continue
        plain = "".join(
            c
            for c in unicodedata.normalize("NFKD", char.translate(_SMART_QUOTES))
            if not unicodedata.combining(c)
        )
        if plain and all(_REASON_CHAR_RE.fullmatch(c) for c in plain):
            replaced.setdefault(char, plain)
        else:
            removed.setdefault(char)
    if not removed and not replaced:
        return None
    parts = []
    if removed:
        shown = ["backticks" if char == "`" else f"`{_escape(char)}`" for char in removed]
        parts.append("removed " + " ".join(shown))
    if replaced:
        parts.append(
            "wrote " + ", ".join(f"`{_escape(a)}` as `{_escape(b)}`" for a, b in replaced.items())
        )
    return (
        "AWS accepts only ASCII letters, digits, spaces and `!@().*?-` in a reason, so "
        "pipebot " + " and ".join(parts) + "."
    )


# --- tokenizing ---------------------------------------------------------------------------------


class _Token(NamedTuple):
    value: str
    start: int  # offset of the token's first character in the tokenized text


class _Cursor:
    """Shell-style tokens read one at a time, so a free-text tail can be taken as typed."""

    def __init__(self, text: str, fail: Callable[[str], CommandError]) -> None:
        self.text = text
        self._fail = fail
        self.seek(0)

    def seek(self, pos: int) -> None:
        self.pos = self._base = pos
        self._stream = io.StringIO(self.text[pos:])
        self._lexer = shlex.shlex(self._stream, posix=True)
        self._lexer.whitespace = _SHELL_SPACE
        self._lexer.whitespace_split = True
        self._lexer.commenters = ""

    def next(self) -> _Token | None:
        start = self.pos
        while start < len(self.text) and self.text[start] in _SHELL_SPACE:
            start += 1
        try:
            value = self._lexer.get_token()
        except ValueError as exc:
            if "escaped" in str(exc):
                raise self._fail("The text ends with a lone backslash: remove it.") from None
            raise self._fail(
                "Unbalanced quote: close every `\"` or `'` you open, or leave the quotes out."
            ) from None
        self.pos = self._base + self._stream.tell()
        return None if value is None else _Token(value, start)

    def rest(self, start: int | None = None) -> str:
        """The raw text from ``start`` (default: after the last token), stripped."""
        return self.text[self.pos if start is None else start :].strip()


class _Parser:
    """Argument parsing for one subcommand; every failure carries that command's usage."""

    def __init__(self, spec: CommandSpec, rest: str, slash: str) -> None:
        self.spec = spec
        self.slash = slash
        self.cursor = _Cursor(rest, self.fail)
        self.names = DEMO_NAMES

    def fail(self, message: str) -> CommandError:
        """A usage error; its example names the pipeline typed, once one was."""
        return CommandError(
            message,
            usage=usage_text(self.spec, slash=self.slash, names=self.names),
            command=self.spec.name,
        )

    def next(self) -> _Token | None:
        return self.cursor.next()

    def name(self, token: _Token | None, what: str = "NAME", kind: str = "pipeline name") -> str:
        if token is None:
            raise self.fail(f"`{self.spec.name}` needs {what}, the {kind}.")
        value = self.check_name(token.value, kind)
        if kind == "pipeline name":
            self.names = replace(self.names, pipeline=value)
        return value

    def check_name(self, value: str, kind: str = "pipeline name") -> str:
        if not _NAME_RE.fullmatch(value):
            raise self.fail(f"`{_show(value)}` is not a valid {kind}: use {_NAME_RULE}.")
        return value

    def execution(self, value: str) -> str:
        """An execution ID, or its first ``EXECUTION_PREFIX_MIN`` characters or more (the
        pipeline's executions tell which one: ``PipelineOps.resolve_execution``)."""
        if is_execution_id(value) or is_execution_prefix(value):
            return value
        where = f"`{self.slash} history {self.names.pipeline}`"
        if _HEX_RE.fullmatch(value) and len(value) < EXECUTION_PREFIX_MIN:
            raise self.fail(
                f"`{_show(value)}` is too short: give at least {EXECUTION_PREFIX_MIN} "
                f"characters of the execution ID ({where} lists them)."
            )
        raise self.fail(f"`{_show(value)}` is not an execution ID: copy one from {where}.")

    def end(self) -> None:
        token = self.next()
        if token is not None:
            raise self.fail(f"Too many arguments: `{_show(token.value)}` was not expected.")

    def unexpected_option(self, token: _Token) -> CommandError:
        return self.fail(f"Unknown option `{_show(token.value)}` for `{self.spec.name}`.")


def _is_option(token: _Token) -> bool:
    return token.value.startswith("--") and len(token.value) > 2


# --- the commands -------------------------------------------------------------------------------

_Result = tuple[str | None, dict[str, Any]]


def _parse_help(p: _Parser) -> _Result:
    token = p.next()
    topic = None
    if token is not None:
        spec = spec_for(token.value)
        if spec is None:
            raise _unknown(token.value, slash=p.slash)
        topic = spec.name
        p.end()
    return None, {"topic": topic}


def _parse_no_args(p: _Parser) -> _Result:
    p.end()
    return None, {}


def _parse_name_only(p: _Parser) -> _Result:
    name = p.name(p.next())
    p.end()
    return name, {}


def _parse_create(p: _Parser) -> _Result:
    text = p.cursor.text.strip()
    if text.startswith("```"):
        text = re.sub(r"\A```[ \t]*(?:(?:json|ya?ml)[ \t]*(?=\n))?", "", text, flags=re.I)
    text = text.removesuffix("```").strip()
    return None, {"declaration": text or None}


def _parse_history(p: _Parser) -> _Result:
    name = p.name(p.next())
    count = HISTORY_DEFAULT
    token = p.next()
    if token is not None:
        if not _COUNT_RE.fullmatch(token.value) or not 1 <= int(token.value) <= HISTORY_MAX:
            raise p.fail(
                f"N must be a whole number from 1 to {HISTORY_MAX}, not `{_show(token.value)}`."
            )
        count = int(token.value)
        p.end()
    return name, {"count": count}


def _parse_execution(p: _Parser) -> _Result:
    name = p.name(p.next())
    token = p.next()
    if token is None:
        raise p.fail(
            f"`{p.spec.name}` needs ID, the execution ID (see `{p.slash} history {name}`)."
        )
    execution_id = p.execution(token.value)
    p.end()
    return name, {"execution": execution_id}


def _parse_start(p: _Parser) -> _Result:
    name = p.name(p.next())
    variables: dict[str, str] = {}
    while (token := p.next()) is not None:
        option = token.value.lower()
        if option == "--var":
            pair_token = p.next()
            if pair_token is None:
                raise p.fail("`--var` needs K=V after it.")
            pair = pair_token.value
        elif option.startswith("--var="):
            pair = token.value[len("--var=") :]
        elif _is_option(token):
            raise p.unexpected_option(token)
        else:
            raise p.fail(f"Unexpected `{_show(token.value)}`: set variables with `--var K=V`.")
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise p.fail(f"`--var {_show(pair)}` is not K=V: write `--var ENV=staging`.")
        if not _VARIABLE_RE.fullmatch(key):
            raise p.fail(
                f"`{_show(key)}` is not a valid variable name: use 1-128 ASCII letters, digits "
                "and `@-_`."
            )
        if not value:
            raise p.fail(f"Variable `{_show(key)}` has no value: write `--var {key}=VALUE`.")
        if key in variables:
            raise p.fail(f"Variable `{_show(key)}` is given twice.")
        variables[key] = value
    return name, {"variables": variables}


def _parse_stop(p: _Parser) -> _Result:
    name = p.name(p.next())
    execution: str | None = None
    abandon = False
    reason: str | None = None
    while (token := p.next()) is not None:
        option = token.value.lower()
        if option == "--abandon":
            abandon = True
        elif option == "--reason" or option.startswith("--reason="):
            raw = p.cursor.text[token.start :]
            if raw[: len("--reason=")].lower() == "--reason=":
                reason = _unquote(raw[len("--reason=") :].strip())
            elif option == "--reason":
                reason = _unquote(p.cursor.rest())
            else:  # the option itself was quoted: take the shell-split value
                reason = token.value[len("--reason=") :].strip()
                reason = " ".join([reason, _unquote(p.cursor.rest())]).strip()
            if not reason:
                raise p.fail("`--reason` needs the reason after it.")
            break
        elif _is_option(token):
            raise p.unexpected_option(token)
        elif execution is None:
            execution = p.execution(token.value)
        else:
            raise p.fail(f"Too many arguments: `{_show(token.value)}` was not expected.")
    return name, {"execution": execution, "abandon": abandon, "reason": reason}


def _parse_retry(p: _Parser) -> _Result:
    name = p.name(p.next())
    positional: list[str] = []
    everything = False
    while (token := p.next()) is not None:
        if token.value.lower() == "--all":
            everything = True
        elif _is_option(token):
            raise p.unexpected_option(token)
        elif len(positional) < 2:
            positional.append(token.value)
        else:
            raise p.fail(f"Too many arguments: `{_show(token.value)}` was not expected.")
    stage: str | None = None
    execution: str | None = None
    if len(positional) == 2:
        stage = p.check_name(positional[0], "stage name")
        execution = p.execution(positional[1])
    elif positional and _looks_like_execution(positional[0]):
        execution = positional[0]
    elif positional:
        stage = p.check_name(positional[0], "stage name")
    mode = "ALL_ACTIONS" if everything else "FAILED_ACTIONS"
    return name, {"stage": stage, "execution": execution, "mode": mode}


def _parse_rollback(p: _Parser) -> _Result:
    name = p.name(p.next())
    stage = p.name(p.next(), "STAGE", "stage name")
    execution: str | None = None
    token = p.next()
    if token is not None:
        execution = p.execution(token.value)
        p.end()
    return name, {"stage": stage, "execution": execution}


CONDITION_TYPES: Final = {
    "before": "BEFORE_ENTRY",
    "entry": "BEFORE_ENTRY",
    "before_entry": "BEFORE_ENTRY",
    "success": "ON_SUCCESS",
    "on_success": "ON_SUCCESS",
}
"""What ``override`` takes for OverrideStageCondition's ``conditionType``."""


def _parse_override(p: _Parser) -> _Result:
    name = p.name(p.next())
    stage = p.name(p.next(), "STAGE", "stage name")
    condition: str | None = None
    execution: str | None = None
    while (token := p.next()) is not None:
        word = token.value.lower().replace("-", "_")
        if condition is None and execution is None and word in CONDITION_TYPES:
            condition = CONDITION_TYPES[word]
        elif execution is None and (
            is_execution_id(token.value) or is_execution_prefix(token.value)
        ):
            execution = token.value
        elif execution is None and condition is None:
            raise p.fail(
                f"`{_show(token.value)}` is neither `before` nor `success` nor an execution ID."
            )
        else:
            raise p.fail(f"Too many arguments: `{_show(token.value)}` was not expected.")
    return name, {"stage": stage, "condition": condition, "execution": execution}


def _looks_like_execution(value: str) -> bool:
    """Whether a lone token after NAME is an execution rather than a stage: an execution ID
    or a start of one with a digit in it (a stage may be called ``Deface``)."""
    return is_execution_id(value) or (
        is_execution_prefix(value) and any(char.isdigit() for char in value)
    )


def _target(value: str) -> tuple[str, str] | None:
    stage, sep, action = value.partition("/")
    if sep and _NAME_RE.fullmatch(stage) and _NAME_RE.fullmatch(action):
        return stage, action
    return None


def _parse_decision(p: _Parser) -> _Result:
    """NAME, then STAGE/ACTION and EXECUTION in either order (each optional), then the
    comment as typed. A word is the execution when it looks like one (``_looks_like_execution``:
    an ID, or its first ``EXECUTION_PREFIX_MIN`` characters or more with a digit among them);
    anything else starts the comment."""
    name = p.name(p.next())
    comment_start = p.cursor.pos
    stage: str | None = None
    action: str | None = None
    execution: str | None = None
    while True:
        try:
            token = p.next()
        except CommandError:  # an apostrophe in the comment: it is all comment
            break
        if token is None:
            break
        if stage is None and (target := _target(token.value)) is not None:
            stage, action = target
        elif execution is None and _looks_like_execution(token.value):
            execution = token.value
        else:
            break
        comment_start = p.cursor.pos
    comment = _unquote(p.cursor.rest(comment_start))
    return name, {
        "stage": stage,
        "action": action,
        "execution": execution,
        "comment": comment or None,
    }


def _parse_disable(p: _Parser) -> _Result:
    name = p.name(p.next())
    stage = p.name(p.next(), "STAGE", "stage name")
    reason = _unquote(p.cursor.rest())
    if not reason:
        raise p.fail("`disable` needs a REASON, shown to whoever finds the transition disabled.")
    try:
        normalize_reason(reason)
    except CommandError as exc:
        raise p.fail(exc.message) from None
    return name, {"stage": stage, "reason": reason}


def _parse_enable(p: _Parser) -> _Result:
    name = p.name(p.next())
    stage = p.name(p.next(), "STAGE", "stage name")
    p.end()
    return name, {"stage": stage}


_ROLES: Final = {
    "operators": "operators",
    "operator": "operators",
    "approvers": "approvers",
    "approver": "approvers",
}
_SWITCH: Final = {"on": True, "off": False, "yes": True, "no": False, "true": True, "false": False}


def _subject(raw: str) -> str | None:
    value = _unquote(raw.strip())
    for pattern in (_USER_MENTION_RE, _GROUP_MENTION_RE):
        if match := pattern.fullmatch(value):
            return match.group(1)
    return value if _BARE_ID_RE.fullmatch(value) else None


def _parse_access(p: _Parser) -> _Result:
    name = p.name(p.next())
    args: dict[str, Any] = {"op": "show", "role": None, "subjects": [], "enabled": None}
    token = p.next()
    if token is None:
        return name, args
    word = token.value.lower()
    if word in _ROLES:
        verb = p.next()
        if verb is None or verb.value.lower() not in ("add", "remove"):
            got = "nothing" if verb is None else f"`{_show(verb.value)}`"
            raise p.fail(f"After `{word}` write `add` or `remove`, not {got}.")
        subjects: list[str] = []
        for raw in _SUBJECT_TOKEN_RE.findall(p.cursor.rest()):
            subject = _subject(raw)
            if subject is None:
                raise p.fail(
                    f"`{_show(raw)}` is not a user or group: mention users (@alice) or user "
                    "groups (@release-team). If mentions arrive as plain text, turn on "
                    '"Escape channels, users, and links" for the slash command.'
                )
            subjects.append(subject)
        if not subjects:
            raise p.fail(f"Mention the users or groups to {verb.value.lower()}.")
        args.update(
            op=verb.value.lower(), role=_ROLES[word], subjects=list(dict.fromkeys(subjects))
        )
    elif word in ("self-approval", "self_approval", "selfapproval"):
        switch = p.next()
        if switch is None or switch.value.lower() not in _SWITCH:
            got = "nothing" if switch is None else f"`{_show(switch.value)}`"
            raise p.fail(f"After `self-approval` write `on` or `off`, not {got}.")
        p.end()
        args.update(op="self_approval", enabled=_SWITCH[switch.value.lower()])
    else:
        raise p.fail(
            f"`{_show(token.value)}` is not an access setting: write `operators`, `approvers` "
            "or `self-approval`."
        )
    return name, args


def _parse_audit(p: _Parser) -> _Result:
    token = p.next()
    if token is None:
        return None, {}
    name = p.name(token)
    p.end()
    return name, {}


_EVENT_FILTERS: Final = ("all", "failures", "approvals")


_DIGEST_TIME: Final = re.compile(r"(?:[01]?\d|2[0-3]):[0-5]\d")


def _option_value(p: _Parser, token: _Token, option: str, needs: str) -> str:
    """The value of ``--option value`` or ``--option=value``."""
    if token.value.lower().startswith(option + "="):
        return token.value[len(option) + 1 :]
    value_token = p.next()
    if value_token is None:
        raise p.fail(f"`{option}` needs {needs} after it.")
    return value_token.value


def _parse_subscribe(p: _Parser) -> _Result:
    name = p.name(p.next())
    events: str | None = None
    digest: str | None = None
    while (token := p.next()) is not None:
        option = token.value.lower()
        if option == "--events" or option.startswith("--events="):
            if events is not None:
                raise p.fail("`--events` is given twice.")
            value = _option_value(p, token, "--events", "`all`, `failures` or `approvals`")
            value = value.lower()
            if value not in _EVENT_FILTERS:
                raise p.fail(
                    f"`{_show(value)}` is not an event filter: use `all`, `failures` or "
                    "`approvals`."
                )
            events = value
        elif option == "--digest" or option.startswith("--digest="):
            if digest is not None:
                raise p.fail("`--digest` is given twice.")
            value = _option_value(p, token, "--digest", "a time like `09:00`, or `off`").lower()
            if value == "off":
                digest = "off"
            elif _DIGEST_TIME.fullmatch(value):
                hours, minutes = value.split(":")
                digest = f"{int(hours):02d}:{minutes}"
            else:
                raise p.fail(
                    f"`{_show(value)}` is not a time of day: use 24-hour `HH:MM` "
                    "(like `09:00` or `17:30`), or `off` to stop the digest."
                )
        elif _is_option(token):
            raise p.unexpected_option(token)
        else:
            raise p.fail(f"Too many arguments: `{_show(token.value)}` was not expected.")
    options: dict[str, Any] = {"events": events}
    if digest is not None:
        options["digest"] = digest
    return name, options


_PARSERS: Final[Mapping[str, Callable[[_Parser], _Result]]] = {
    "help": _parse_help,
    "list": _parse_no_args,
    "status": _parse_name_only,
    "history": _parse_history,
    "execution": _parse_execution,
    "start": _parse_start,
    "stop": _parse_stop,
    "retry": _parse_retry,
    "rollback": _parse_rollback,
    "override": _parse_override,
    "approve": _parse_decision,
    "reject": _parse_decision,
    "disable": _parse_disable,
    "enable": _parse_enable,
    "create": _parse_create,
    "edit": _parse_name_only,
    "delete": _parse_name_only,
    "access": _parse_access,
    "audit": _parse_audit,
    "subscribe": _parse_subscribe,
    "unsubscribe": _parse_name_only,
    "subscriptions": _parse_no_args,
}


def _typo_distance(a: str, b: str) -> int:
    """Edits from ``a`` to ``b``, a swap of two neighbours counting as one (optimal string
    alignment distance): ``stauts`` is 1 from ``status``, 2 from ``start``."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        row = [i]
        for j, char_b in enumerate(b, 1):
            cost = 0 if char_a == char_b else 1
            best = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                best = min(best, previous2[j - 2] + 1)
            row.append(best)
        previous2, previous = previous, row
    return previous[-1]


def _unknown(word: str, *, slash: str, hint_status: bool = False) -> UnknownCommandError:
    suggestions = suggest(word, _BY_WORD)
    if suggestions:  # the likeliest typos only: "Did you mean `status`?", not a list
        distances = {s: _typo_distance(word.lower(), s) for s in suggestions}
        closest = min(distances.values())
        suggestions = [s for s in suggestions if distances[s] == closest]
    message = f'Unknown command "{_show(word, 40)}".'
    if suggestions:
        message += " Did you mean " + " or ".join(f"`{s}`" for s in suggestions) + "?"
    elif hint_status and _NAME_RE.fullmatch(word):
        message += f" If `{_show(word)}` is a pipeline, try `{slash} status {_show(word)}`."
    message += f" `{slash} help` lists every command."
    return UnknownCommandError(message, suggestions=suggestions)


def parse(text: str, *, slash: str = "/pipeline") -> ParsedCommand:
    """Parse the text after the slash command; raises ``CommandError`` (and only that) if bad.

    ``slash`` is only used in the usage lines of error messages.
    """
    decoded = _unescape(text).translate(_ODD_SPACES).strip()
    parts = re.split(r"\s+", decoded, maxsplit=1) if decoded else [""]
    word, rest = parts[0], parts[1] if len(parts) == 2 else ""
    command = word.translate(_SMART_QUOTES).strip(_QUOTES)
    spec = spec_for(command) if decoded else _BY_WORD["help"]
    if spec is None:
        raise _unknown(command, slash=slash, hint_status=True)
    if spec.name != "create":  # a pasted declaration is kept byte for byte
        rest = rest.translate(_SMART_QUOTES)
    pipeline, args = _PARSERS[spec.name](_Parser(spec, rest, slash))
    return ParsedCommand(name=spec.name, pipeline=pipeline, args=args, text=text)


# --- help ---------------------------------------------------------------------------------------


def help_text(
    *,
    command: str | None,
    slash: str = "/pipeline",
    trial_mode: bool,
    names: ExampleNames = DEMO_NAMES,
) -> str:
    """Help in mrkdwn, generated from ``REGISTRY``: every command, or one in detail.

    ``names`` fill the examples (``examples_from``: a pipeline the user has, so that every
    example can be run as it is).
    """
    cmd = _escape(slash)
    lines: list[str] = []
    if command is not None and command.strip():
        spec = spec_for(command)
        if spec is None:
            raise _unknown(command.strip(), slash=slash)
        lines.append(f"`{cmd} {_escape(spec.usage)}` — {spec.summary}")
        lines.append(f"Example: `{cmd} {_escape(spec.example_for(names))}`")
        if spec.aliases:
            lines.append("Aliases: " + ", ".join(f"`{alias}`" for alias in spec.aliases))
        holders = PERMISSION_HOLDERS[spec.permission]
        lines.append(f"Permission: {spec.permission.value} ({holders})")
        if spec.notes:
            lines.append(spec.notes)
    else:
        lines.append(f"*pipebot commands* — `{cmd} help COMMAND` shows one in detail")
        for spec in REGISTRY:
            line = f"• `{cmd} {_escape(spec.usage)}` — {spec.summary}"
            example = spec.example_for(names)
            if example != spec.usage:
                line += f" e.g. `{cmd} {_escape(example)}`"
            if spec.aliases:
                line += " (alias " + ", ".join(f"`{a}`" for a in spec.aliases) + ")"
            lines.append(line)
        if not trial_mode:
            lines.append(
                f"Operators may {OPERATOR_RIGHTS} a pipeline; approvers may {APPROVER_RIGHTS}; "
                f"`{cmd} access NAME` shows who they are."
            )
    if trial_mode:
        lines.append(
            ":warning: *Trial mode:* no admins are configured, so everyone may do everything. "
            "Set `PIPEBOT_ADMINS` to Slack user IDs to turn on permissions."
        )
    return "\n".join(lines)


def examples_from(
    pipeline: str,
    declaration: Mapping[str, Any] | None = None,
    *,
    execution_id: str | None = None,
) -> ExampleNames:
    """Example names from one of the user's pipelines: its name, its stages (the last to
    disable, the second to retry), its first manual approval, its first variable and its
    latest execution, read from a GetPipeline ``pipeline`` declaration. What the declaration
    does not have is left out of the examples (no approval: ``approve NAME``), or kept from
    the demo when a command needs one (a stage)."""
    stages = [
        s
        for s in (declaration or {}).get("stages") or []
        if isinstance(s, Mapping) and _NAME_RE.fullmatch(str(s.get("name") or ""))
    ]
    names = replace(DEMO_NAMES, pipeline=pipeline)
    if execution_id:
        names = replace(names, execution=execution_id[:8])
    if declaration is None:
        return names
    approval = ""
    for stage in stages:
        for action in stage.get("actions") or []:
            kind = (action.get("actionTypeId") or {}) if isinstance(action, Mapping) else {}
            if kind.get("category") == "Approval" and _NAME_RE.fullmatch(
                str(action.get("name") or "")
            ):
                approval = approval or f"{stage['name']}/{action['name']}"
    variables = [
        str(v.get("name"))
        for v in declaration.get("variables") or []
        if isinstance(v, Mapping) and _VARIABLE_RE.fullmatch(str(v.get("name") or ""))
    ]
    if stages:
        names = replace(names, stage=str(stages[-1]["name"]))
    if len(stages) >= 2:
        names = replace(names, retry_stage=str(stages[1]["name"]))
    return replace(names, approval=approval, variable=variables[0] if variables else "")
