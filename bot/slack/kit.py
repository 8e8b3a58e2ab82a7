"""Block Kit primitives shared by every renderer: Slack's limits, mrkdwn escaping and cutting,
and builders of text objects, blocks and buttons that keep within those limits by
construction. Pure functions; no I/O.

Slack rejects, rather than truncates, a payload that breaks a limit (the numbers below are
from https://api.slack.com/reference/block-kit/blocks and
https://api.slack.com/reference/surfaces/views): every builder here cuts its text to fit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from bot.slack.ids import ButtonRef

Block = dict[str, Any]
Element = dict[str, Any]
"""A block element: a button, an input, a select."""

# --------------------------------------------------------------------------- Slack's limits

SECTION_TEXT_MAX: Final = 3000
HEADER_TEXT_MAX: Final = 150
BUTTON_TEXT_MAX: Final = 75
BUTTON_VALUE_MAX: Final = 2000
CONFIRM_TITLE_MAX: Final = 100
CONFIRM_TEXT_MAX: Final = 300
CONFIRM_BUTTON_MAX: Final = 30
CONTEXT_ELEMENTS_MAX: Final = 10
ACTIONS_ELEMENTS_MAX: Final = 25
MESSAGE_BLOCKS_MAX: Final = 50
VIEW_BLOCKS_MAX: Final = 100
VIEW_TITLE_MAX: Final = 24
VIEW_BUTTON_MAX: Final = 24
PRIVATE_METADATA_MAX: Final = 3000
PLAIN_TEXT_INPUT_MAX: Final = 3000
INPUT_LABEL_MAX: Final = 2000
PLACEHOLDER_MAX: Final = 150
OPTION_TEXT_MAX: Final = 75

MESSAGE_TEXT_BUDGET: Final = 10_000
"""Most characters of text (all text objects summed) one message's blocks may hold.

Slack refuses messages whose blocks hold about 11-13k characters of text in total
(``msg_blocks_too_long``), below any documented per-field limit."""

VIEW_TEXT_BUDGET: Final = 60_000
"""Same for the App Home (views are capped at 250 kB, not by a text total)."""

ESCAPES: Final = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_FENCE: Final = re.compile("`{3,}")
_GRAVE: Final = "\u02cb"  # modifier letter grave accent: looks like a backtick, closes no fence


# --------------------------------------------------------------------------- text


def escape(text: str) -> str:
    """Escape the three characters mrkdwn treats as markup (``&``, ``<``, ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """Plain text cut to ``limit`` characters, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + "…"


def esc(text: str, limit: int) -> str:
    """Escape ``text`` and cut it so the *escaped* result is at most ``limit`` characters.

    Cutting after escaping could split an entity (``&am``); this never does.
    """
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    out: list[str] = []
    size = 0
    for char in text:
        piece = ESCAPES.get(char, char)
        if size + len(piece) > limit - 1:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out) + "…"


def clip_mrkdwn(text: str, limit: int) -> str:
    """Cut trusted mrkdwn without splitting a ``<...>`` token, an entity or a code fence."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 5, 0)]
    opened = cut.rfind("<")
    if opened > cut.rfind(">"):
        cut = cut[:opened]
    amp = cut.rfind("&")
    if amp > cut.rfind(";"):
        cut = cut[:amp]
    if cut.count("```") % 2:
        cut += "```"
    return cut + "…"


def one_line(text: str) -> str:
    return " ".join(text.split())


def code(text: str, limit: int = 80) -> str:
    """Inline code for identifiers; backticks would end the span, so they are replaced."""
    plain = text.replace("`", "'")
    return f"`{esc(plain, limit)}`"


def defuse(text: str) -> str:
    """Runs of 3+ backticks (which would close a ``` block) become look-alike characters
    of the same length."""
    return _FENCE.sub(lambda m: _GRAVE * len(m[0]), text)


def fence(text: str) -> str:
    """Escaped text safe inside a ``` block."""
    return defuse(escape(text))


def text_size(value: Any) -> int:
    """Characters of text in all text objects below ``value``: what Slack's total limit counts."""
    if isinstance(value, Mapping):
        size = 0
        if value.get("type") in ("plain_text", "mrkdwn") and isinstance(value.get("text"), str):
            size += len(value["text"])
        for key, item in value.items():
            if key != "text" or not isinstance(item, str):
                size += text_size(item)
        return size
    if isinstance(value, list | tuple):
        return sum(text_size(item) for item in value)
    return 0


# --------------------------------------------------------------------------- builders


def plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": clip(text, limit) or " ", "emoji": True}


def mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def header(text: str) -> Block:
    return {"type": "header", "text": plain(one_line(text) or "pipebot", HEADER_TEXT_MAX)}


def section(text: str) -> Block:
    """A section of mrkdwn; callers escape; the cut is a safety net."""
    return {"type": "section", "text": mrkdwn(clip_mrkdwn(text, SECTION_TEXT_MAX) or " ")}


def context(*texts: str) -> Block:
    return {
        "type": "context",
        "elements": [
            mrkdwn(clip_mrkdwn(t, SECTION_TEXT_MAX) or " ") for t in texts[:CONTEXT_ELEMENTS_MAX]
        ],
    }


def divider() -> Block:
    return {"type": "divider"}


def confirm_dialog(
    *, title: str, text: str, confirm: str, style: str | None = None
) -> dict[str, Any]:
    dialog: dict[str, Any] = {
        "title": plain(title, CONFIRM_TITLE_MAX),
        "text": plain(text, CONFIRM_TEXT_MAX),
        "confirm": plain(confirm, CONFIRM_BUTTON_MAX),
        "deny": plain("Cancel", CONFIRM_BUTTON_MAX),
    }
    if style:
        dialog["style"] = style
    return dialog


def button(
    *,
    text: str,
    action_id: str,
    ref: ButtonRef,
    style: str | None = None,
    confirm: dict[str, Any] | None = None,
) -> Element | None:
    """A button carrying ``ref``; None when the encoded ref would not fit a value (2000)."""
    value = ref.encode()
    if len(value) > BUTTON_VALUE_MAX:
        return None
    element: dict[str, Any] = {
        "type": "button",
        "text": plain(text, BUTTON_TEXT_MAX),
        "action_id": action_id,
        "value": value,
    }
    if style:
        element["style"] = style
    if confirm:
        element["confirm"] = confirm
    return element


def actions(buttons: Sequence[Element | None]) -> list[Block]:
    """Actions blocks for the buttons (at most 25 per block); none when no button is left."""
    present = [b for b in buttons if b is not None]
    return [
        {"type": "actions", "elements": present[i : i + ACTIONS_ELEMENTS_MAX]}
        for i in range(0, len(present), ACTIONS_ELEMENTS_MAX)
    ]


# --------------------------------------------------------------------------- messages


def fallback_text(*, blocks: Sequence[Mapping[str, Any]], limit: int = 3000) -> str:
    """The notification text for a message (``text`` next to ``blocks``).

    The header if there is one, else the first section's text; chat.update documents a
    4,000-character limit for ``text``, so it is cut to ``limit``.
    """
    for wanted in ("header", "section", "context"):
        for block in blocks:
            if block.get("type") != wanted:
                continue
            text = block.get("text")
            if wanted == "context":
                elements = block.get("elements") or []
                text = elements[0] if elements else None
            if isinstance(text, Mapping) and isinstance(text.get("text"), str):
                if text.get("type") == "plain_text":
                    return esc(str(text["text"]), limit)
                return clip_mrkdwn(str(text["text"]), limit)
    return "pipebot"
