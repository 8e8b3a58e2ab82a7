"""The modals: create/edit a pipeline (a declaration to paste), reject an approval (why),
and stop an execution (how, and why).

Slack caps a text box at 3000 characters and ``private_metadata`` at 3000; a declaration
may be longer, so it is spread over several boxes and read back in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from bot.slack.ids import (
    COMMENT_BLOCK,
    COMMENT_INPUT,
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
    """The create/edit modal (``CREATE_VIEW`` or ``EDIT_VIEW``): a declaration to paste.

    Text boxes hold 3000 characters; a longer ``initial`` declaration is spread over
    several boxes (see ``declaration_block_id``; read them back with
    ``declaration_from_values``), and ``min_boxes`` offers empty extra boxes for long
    pastes. Validation errors go to ``DECLARATION_BLOCK`` (``response_action: errors``).
    """
    pieces = _split_declaration(initial) if initial else []
    too_long = len(pieces) > DECLARATION_MAX_BOXES
    if too_long:
        pieces = []
    boxes = min(max(len(pieces), min_boxes, 1), DECLARATION_MAX_BOXES)
    intro = (
        "Paste the pipeline declaration: CodePipeline's JSON or YAML, with or without the "
        "outer `pipeline` key (as `aws codepipeline get-pipeline` prints it)."
    )
    if boxes > 1:
        intro += (
            " Slack holds 3000 characters per box: a longer declaration continues in the "
            "next box; the boxes are joined in order."
        )
    if too_long:
        intro += (
            f"\n⚠️ The current declaration is longer than {DECLARATION_MAX_BOXES} boxes: "
            "paste the changed declaration instead."
        )
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


def _split_declaration(text: str) -> list[str]:
    """Pieces of at most 3000 characters, cut after a newline where possible; joined with
    "" they give ``text`` back exactly."""
    pieces: list[str] = []
    rest = text
    while len(rest) > PLAIN_TEXT_INPUT_MAX:
        cut = rest.rfind("\n", 0, PLAIN_TEXT_INPUT_MAX) + 1
        if cut <= 0:
            cut = PLAIN_TEXT_INPUT_MAX
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    return pieces


# --------------------------------------------------------------------------- reject, stop


def reject_modal(*, ref: ButtonRef) -> dict[str, Any]:
    """Asks for the reason of a rejection (required); ``private_metadata`` is ``ref``."""
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
        private_metadata=ref.encode(),
    )


def _approval_where(ref: ButtonRef) -> str:
    stage = name(ref.stage or "?", 80)
    action = name(ref.action or "?", 80)
    text = f"*{stage} / {action}* of *{name(ref.pipeline)}*"
    if ref.execution:
        text += f" (execution {code(ref.execution, 40)})"
    return text


def stop_modal(*, ref: ButtonRef) -> dict[str, Any]:
    """Stop an execution: wait for running actions or abandon them, with an optional reason."""
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
        private_metadata=ref.encode(),
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
