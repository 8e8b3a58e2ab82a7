"""The modals: create/edit a pipeline (a declaration to paste), reject an approval (why),
and stop an execution (how, and why).

Slack caps a text box at 3000 characters and ``private_metadata`` at 3000; a declaration
may be longer, so it is spread over several boxes and read back in order. Slack's client
cuts a paste longer than a box without a word: a box found full with nothing after it is
refused with what to do (``full_box``), never saved cut.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from bot.slack.ids import (
    COMMENT_BLOCK,
    COMMENT_INPUT,
    CREATE_VIEW,
    DECLARATION_BLOCK,
    DECLARATION_INPUT,
    REJECT_VIEW,
    STOP_MODE_BLOCK,
    STOP_MODE_INPUT,
    STOP_REASON_BLOCK,
    STOP_REASON_INPUT,
    STOP_VIEW,
    ButtonRef,
)
from bot.slack.kit import (
    INPUT_LABEL_MAX,
    OPTION_TEXT_MAX,
    PLACEHOLDER_MAX,
    PLAIN_TEXT_INPUT_MAX,
    PRIVATE_METADATA_MAX,
    VIEW_BLOCKS_MAX,
    VIEW_BUTTON_MAX,
    VIEW_TITLE_MAX,
    Block,
    code,
    escape,
    plain,
    section,
)
from bot.slack.text import name

COMMENT_MAX_LENGTH: Final = 390
"""Reject comment: put_approval_result's summary holds 512, and pipebot writes
``"Rejected in Slack by NAME (USER ID): "`` before it (21 characters, a display name of up to 80,
an ID of up to 15, 5 more): 391 are left for the comment whoever answers."""
STOP_REASON_MAX_LENGTH: Final = 95
"""stop_pipeline_execution's ``reason`` holds 200 characters (``STOP_REASON_MAX``), and pipebot
writes ``"Stopped by NAME in Slack: "`` before it (22 characters and a display name of up to
80): 98 are left whoever stops."""
STOP_MODE_WAIT: Final = "wait"
STOP_MODE_ABANDON: Final = "abandon"
"""Option values of the stop modal's ``STOP_MODE_INPUT`` select."""

DECLARATION_MAX_BOXES: Final = 20
"""A declaration longer than one text box (3000) continues in up to this many boxes."""
CREATE_BOXES: Final = 5
"""Boxes of the Create form: 15,000 characters, three times the demo's declaration; a longer
one goes after ``/pipeline create`` in the message box, as the form says."""
EXAMPLE_PIPELINE: Final = "my-app"
"""The name of the Create form's example pipeline."""


# --------------------------------------------------------------------------- origin


@dataclass(frozen=True)
class FormOrigin:
    """Where a form was opened, kept in its ``private_metadata``: the ``ButtonRef`` (which
    pipeline, execution, stage and action; the channel and message of the click) and, for a
    form opened from an ephemeral message, that click's ``response_url``.

    An ephemeral message cannot be changed with ``chat.update`` (Slack answers
    ``message_not_found``): it is redrawn through the ``response_url`` of an interaction with
    it, with ``replace_original`` (https://api.slack.com/interactivity/handling#message_responses;
    up to 5 posts within 30 minutes)."""

    ref: ButtonRef
    response_url: str | None = None

    def encode(self) -> str:
        """The ref's own encoding, with ``response_url`` added when there is one (so a form
        without one decodes as a plain ``ButtonRef`` too)."""
        if self.response_url is None:
            return self.ref.encode()
        data = json.loads(self.ref.encode())
        data["response_url"] = self.response_url
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def decode(cls, value: str) -> FormOrigin:
        """Parse what ``encode`` wrote (or a bare ``ButtonRef``); ValueError for anything else."""
        try:
            data = json.loads(value)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError("not a pipebot form origin") from exc
        if not isinstance(data, dict):
            raise ValueError("not a pipebot form origin")
        url = data.pop("response_url", None)
        if url is not None and not (
            isinstance(url, str) and url.startswith(("https://", "http://"))
        ):
            raise ValueError("not a pipebot form origin")
        return cls(ref=ButtonRef.decode(json.dumps(data)), response_url=url)


# --------------------------------------------------------------------------- declaration


def declaration_block_id(index: int) -> str:
    """Block ID of the declaration's ``index``-th text box (0: ``DECLARATION_BLOCK``).

    Slack caps a text box at 3000 characters; longer declarations continue in
    ``declaration_2``, ``declaration_3`` ... (each with action ID ``DECLARATION_INPUT``).
    """
    return DECLARATION_BLOCK if index == 0 else f"{DECLARATION_BLOCK}_{index + 1}"


def declaration_from_values(values: Mapping[str, Any]) -> str:
    """The declaration typed into the modal: every box's text joined in order.

    ``values`` is the view_submission's ``view.state.values``.
    """
    parts = []
    for index in range(DECLARATION_MAX_BOXES):
        block = values.get(declaration_block_id(index))
        if not isinstance(block, Mapping):
            continue
        value = (block.get(DECLARATION_INPUT) or {}).get("value")
        if isinstance(value, str):
            parts.append(value)
    return "".join(parts)


def declaration_modal(
    *,
    callback_id: str,
    initial: str | None,
    title: str,
    private_metadata: str,
    min_boxes: int = 1,
) -> dict[str, Any]:
    """The edit modal (``EDIT_VIEW``; ``create_modal`` builds Create's): a declaration to
    paste, prefilled with ``initial``.

    Text boxes hold 3000 characters; a longer ``initial`` declaration is spread over
    several boxes (see ``declaration_block_id``; read them back with
    ``declaration_from_values``), with one empty box more so the declaration may grow, and
    ``min_boxes`` offers empty extra boxes for long pastes. Validation errors go to
    ``DECLARATION_BLOCK`` (``response_action: errors``).
    """
    pieces = _split_declaration(initial) if initial else []
    too_long = len(pieces) > DECLARATION_MAX_BOXES
    if too_long:
        pieces = []
    boxes = min(max(len(pieces) + 1 if pieces else 0, min_boxes, 1), DECLARATION_MAX_BOXES)
    intro = (
        "Paste the pipeline declaration: CodePipeline's JSON or YAML, with or without the "
        "outer `pipeline` key (as `aws codepipeline get-pipeline` prints it)."
    )
    if boxes > 1:
        intro += " " + _boxes_sentence(boxes)
    if too_long:
        intro += (
            f"\n⚠️ The current declaration is longer than {DECLARATION_MAX_BOXES} boxes: "
            "paste the changed declaration instead."
        )
    return _declaration_view(
        callback_id=callback_id,
        title=title,
        intro=intro,
        boxes=boxes,
        pieces=pieces,
        private_metadata=private_metadata,
    )


def create_modal(
    *,
    example: str,
    private_metadata: str,
    command: str = "/pipeline",
    example_note: str = "",
) -> dict[str, Any]:
    """The Create form (``CREATE_VIEW``): its first box starts with ``example`` (a working
    declaration, ``example_declaration``), and ``CREATE_BOXES`` boxes take a declaration
    longer than one box holds; the form says how, and where a longer one goes (after
    ``command create`` in the message box). ``example_note`` (mrkdwn, escaped by the caller)
    says what the example needs."""
    intro = (
        "Paste the pipeline declaration: CodePipeline's JSON or YAML, with or without the "
        "outer `pipeline` key (as `aws codepipeline get-pipeline` prints it). The first box "
        "starts with a working example: change it, or replace it with your own."
    )
    if example_note:
        intro += " " + example_note
    intro += (
        f" {_boxes_sentence(CREATE_BOXES)} Longer still? Paste it after "
        f"`{escape(command)} create` in the message box."
    )
    return _declaration_view(
        callback_id=CREATE_VIEW,
        title="Create a pipeline",
        intro=intro,
        boxes=CREATE_BOXES,
        pieces=_split_declaration(example),
        private_metadata=private_metadata,
    )


def _boxes_sentence(boxes: int) -> str:
    return (
        f"A box holds {PLAIN_TEXT_INPUT_MAX:,} characters and Slack cuts a longer paste, so "
        "paste a longer declaration in pieces, one after the other in the boxes below: they "
        f"are joined in order (up to {boxes * PLAIN_TEXT_INPUT_MAX:,} characters)."
    )


def _declaration_view(
    *,
    callback_id: str,
    title: str,
    intro: str,
    boxes: int,
    pieces: list[str],
    private_metadata: str,
) -> dict[str, Any]:
    blocks: list[Block] = [section(intro)]
    for index in range(boxes):
        blocks.append(
            _text_input(
                block_id=declaration_block_id(index),
                action_id=DECLARATION_INPUT,
                label="Declaration" if index == 0 else f"Declaration, continued ({index + 1})",
                multiline=True,
                max_length=PLAIN_TEXT_INPUT_MAX,
                optional=index > 0,
                initial=pieces[index] if index < len(pieces) else None,
                placeholder='{"name": "my-app", "stages": [...]}' if index == 0 else None,
            )
        )
    return _modal(
        callback_id=callback_id,
        title=title,
        submit="Save",
        blocks=blocks,
        private_metadata=private_metadata,
    )


def full_box(values: Mapping[str, Any]) -> int | None:
    """The index of the last box holding text when it is full (3000 characters): Slack's
    client cuts a longer paste there without a word, so what it holds may be only the start
    of the declaration. None when the last box with text has room left."""
    last: tuple[int, str] | None = None
    for index in range(DECLARATION_MAX_BOXES):
        block = values.get(declaration_block_id(index))
        if not isinstance(block, Mapping):
            continue
        value = (block.get(DECLARATION_INPUT) or {}).get("value")
        if isinstance(value, str) and value:
            last = (index, value)
    if last is not None and len(last[1]) >= PLAIN_TEXT_INPUT_MAX:
        return last[0]
    return None


def full_box_error(*, index: int, boxes: int, command: str, editing: bool) -> str:
    """What to do about the full box ``index`` (``full_box``) of a form with ``boxes`` boxes."""
    number = index + 1
    text = (
        f"Box {number} is full: it holds {PLAIN_TEXT_INPUT_MAX:,} characters, the most Slack "
        "lets a box hold, and Slack cuts anything pasted beyond that without a word. "
    )
    if number < boxes:
        text += (
            f"Paste the rest of the declaration into box {number + 1}. (If box {number} "
            f"really holds all of it, move its last line into box {number + 1}.)"
        )
    elif editing:
        text += (
            f"This form has no more boxes: it holds {boxes * PLAIN_TEXT_INPUT_MAX:,} "
            "characters at most."
        )
    else:
        text += (
            "This form has no more boxes: paste the whole declaration after "
            f"`{escape(command)} create` in the message box."
        )
    return text


def example_declaration(*, local: bool, repository: str | None, branch: str = "main") -> str:
    """A working declaration to start from, as ``edit`` shows one (get-pipeline's JSON).

    On the embedded engine (``local``): the git repository ``repository`` (one found in the
    repositories directory, else ``my-app``) on ``branch``, a Commands build and a manual
    approval; no ``roleArn`` or artifact store, which the engine does not use. On AWS, which
    requires them [APIReference/API_PipelineDeclaration.html]: a service role, an S3 artifact
    store and a CodeStar connection source, with placeholders to replace by the account's own.
    """
    kind = {"owner": "AWS", "version": "1"}
    build = {
        "name": "Build",
        "actionTypeId": {"category": "Compute", **kind, "provider": "Commands"},
        "commands": ["ls -la"],
        "inputArtifacts": [{"name": "SourceArtifact"}],
    }
    approval = {
        "name": "Approve",
        "actionTypeId": {"category": "Approval", **kind, "provider": "Manual"},
    }
    source: dict[str, Any] = {
        "name": "Source",
        "actionTypeId": {"category": "Source", **kind, "provider": "CodeCommit"},
        "configuration": {"RepositoryName": repository or EXAMPLE_PIPELINE, "BranchName": branch},
        "outputArtifacts": [{"name": "SourceArtifact"}],
    }
    pipeline: dict[str, Any] = {"name": EXAMPLE_PIPELINE}
    if not local:
        source["actionTypeId"]["provider"] = "CodeStarSourceConnection"
        source["configuration"] = {
            "ConnectionArn": "arn:aws:codeconnections:us-east-1:111122223333:connection/"
            "EXAMPLE-1111-2222-3333-444455556666",
            "FullRepositoryId": f"my-org/{EXAMPLE_PIPELINE}",
            "BranchName": branch,
        }
        pipeline["roleArn"] = "arn:aws:iam::111122223333:role/my-app-pipeline"
        pipeline["artifactStore"] = {"type": "S3", "location": "my-app-pipeline-artifacts"}
    pipeline["pipelineType"] = "V2"
    pipeline["stages"] = [
        {"name": "Source", "actions": [source]},
        {"name": "Build", "actions": [build]},
        {"name": "Approval", "actions": [approval]},
    ]
    return json.dumps({"pipeline": pipeline}, indent=2)


def _split_declaration(text: str) -> list[str]:
    """Pieces shorter than a box (3000), cut after a newline where possible; joined with ""
    they give ``text`` back exactly. No piece fills its box, so none reads as a paste Slack
    cut (``full_box``)."""
    pieces: list[str] = []
    rest = text
    while len(rest) >= PLAIN_TEXT_INPUT_MAX:
        cut = rest.rfind("\n", 0, PLAIN_TEXT_INPUT_MAX - 1) + 1
        if cut <= 0:
            cut = PLAIN_TEXT_INPUT_MAX - 1
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest or not pieces:
        pieces.append(rest)
    return pieces


# --------------------------------------------------------------------------- reject, stop


def reject_modal(*, ref: ButtonRef, response_url: str | None = None) -> dict[str, Any]:
    """Asks for the reason of a rejection (required); ``private_metadata`` is a ``FormOrigin``
    (``ref``, and ``response_url`` when opened from an ephemeral message)."""
    return _modal(
        callback_id=REJECT_VIEW,
        title="Reject approval",
        submit="Reject",
        blocks=[
            section(f"Reject {_approval_where(ref)}? The stage fails."),
            _text_input(
                block_id=COMMENT_BLOCK,
                action_id=COMMENT_INPUT,
                label="Why?",
                multiline=True,
                max_length=COMMENT_MAX_LENGTH,
                optional=False,
                hint="Recorded in the approval's summary with your name.",
            ),
        ],
        private_metadata=FormOrigin(ref=ref, response_url=response_url).encode(),
    )


def _approval_where(ref: ButtonRef) -> str:
    stage = name(ref.stage or "?", 80)
    action = name(ref.action or "?", 80)
    text = f"*{stage} / {action}* of *{name(ref.pipeline)}*"
    if ref.execution:
        text += f" (execution {code(ref.execution, 40)})"
    return text


def stop_modal(*, ref: ButtonRef, response_url: str | None = None) -> dict[str, Any]:
    """Stop an execution: wait for running actions or abandon them, with an optional reason;
    ``private_metadata`` is a ``FormOrigin``, as ``reject_modal``'s."""
    wait = _option("Stop and wait", STOP_MODE_WAIT, "Running actions finish first")
    abandon = _option("Stop and abandon", STOP_MODE_ABANDON, "Running actions are abandoned")
    where = f"*{name(ref.pipeline)}*"
    if ref.execution:
        where += f" execution {code(ref.execution, 40)}"
    return _modal(
        callback_id=STOP_VIEW,
        title="Stop execution",
        submit="Stop",
        blocks=[
            section(f"Stop {where}?"),
            {
                "type": "input",
                "block_id": STOP_MODE_BLOCK,
                "label": plain("How", INPUT_LABEL_MAX),
                "element": {
                    "type": "static_select",
                    "action_id": STOP_MODE_INPUT,
                    "options": [wait, abandon],
                    "initial_option": wait,
                },
            },
            _text_input(
                block_id=STOP_REASON_BLOCK,
                action_id=STOP_REASON_INPUT,
                label="Reason",
                multiline=False,
                max_length=STOP_REASON_MAX_LENGTH,
                optional=True,
            ),
        ],
        private_metadata=FormOrigin(ref=ref, response_url=response_url).encode(),
    )


def _option(text: str, value: str, description: str) -> dict[str, Any]:
    return {
        "text": plain(text, OPTION_TEXT_MAX),
        "value": value,
        "description": plain(description, OPTION_TEXT_MAX),
    }


# --------------------------------------------------------------------------- builders


def _text_input(
    *,
    block_id: str,
    action_id: str,
    label: str,
    multiline: bool,
    max_length: int,
    optional: bool,
    initial: str | None = None,
    placeholder: str | None = None,
    hint: str | None = None,
) -> Block:
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": action_id,
        "multiline": multiline,
        "max_length": max_length,
    }
    if initial:
        element["initial_value"] = initial
    if placeholder:
        element["placeholder"] = plain(placeholder, PLACEHOLDER_MAX)
    block: Block = {
        "type": "input",
        "block_id": block_id,
        "label": plain(label, INPUT_LABEL_MAX),
        "element": element,
        "optional": optional,
    }
    if hint:
        block["hint"] = plain(hint, INPUT_LABEL_MAX)
    return block


def _modal(
    *,
    callback_id: str,
    title: str,
    submit: str,
    blocks: list[Block],
    private_metadata: str,
) -> dict[str, Any]:
    if len(private_metadata) > PRIVATE_METADATA_MAX:
        raise ValueError(
            f"private_metadata is {len(private_metadata)} characters; Slack allows 3000"
        )
    view: dict[str, Any] = {
        "type": "modal",
        "callback_id": callback_id,
        "title": plain(title, VIEW_TITLE_MAX),
        "submit": plain(submit, VIEW_BUTTON_MAX),
        "close": plain("Cancel", VIEW_BUTTON_MAX),
        "blocks": blocks[:VIEW_BLOCKS_MAX],
    }
    if private_metadata:
        view["private_metadata"] = private_metadata
    return view
