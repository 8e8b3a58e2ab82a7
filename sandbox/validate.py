"""Check what the bot sends the way Slack does, so the sandbox shows the bugs Slack would.

Each function takes the payload of one Web API call (or ``response_url`` post) and returns
the error Slack would answer with, or ``None`` when Slack would accept it. Blocks are parsed
with slack-sdk's models (which enforce most Block Kit limits); the rest are the documented
limits slack-sdk does not check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_VIEW_BYTES = 250_000
MAX_MESSAGE_TEXT = 40_000
# Slack answers msg_blocks_too_long past about 11,000 characters of block text; a little
# margin, so the sandbox never refuses what Slack accepts.
MAX_BLOCKS_TEXT = 12_000


@dataclass(frozen=True)
class Rejection:
    """Slack's answer to an invalid call: the error code and the detail it gives."""

    error: str
    detail: str

    def response(self) -> dict[str, Any]:
        return {
            "ok": False,
            "error": self.error,
            "errors": [self.detail],
            "response_metadata": {"messages": [f"[ERROR] {self.detail}"]},
        }


def _texts(value: Any) -> list[str]:
    """Every ``text`` string inside blocks, in order."""
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            found += [item] if key == "text" and isinstance(item, str) else _texts(item)
        return found
    if isinstance(value, list):
        return [text for item in value for text in _texts(item)]
    return []


def _block_problem(blocks: list[Any], *, limit: int) -> str | None:
    if len(blocks) > limit:
        return f"no more than {limit} items allowed [json-pointer:/blocks]"
    for index, block in enumerate(blocks):
        if not isinstance(block, dict):
            return f"must be an object [json-pointer:/blocks/{index}]"
        try:
            parsed = Block.parse(block)
            if parsed is None:
                return f"unsupported type {block.get('type')!r} [json-pointer:/blocks/{index}]"
            parsed.to_dict()  # runs slack-sdk's validators (lengths, counts, styles)
        except (SlackObjectFormationError, TypeError, ValueError, KeyError) as exc:
            return f"{exc} [json-pointer:/blocks/{index}]"
    return None


def message_problem(params: dict[str, Any]) -> Rejection | None:
    """What Slack would refuse in a chat.postMessage / chat.update / ephemeral / response."""
    blocks = params.get("blocks")
    text = params.get("text")
    if isinstance(blocks, str):
        return Rejection("invalid_blocks_format", "blocks must be a JSON array")
    if blocks is not None and not isinstance(blocks, list):
        return Rejection("invalid_blocks_format", "blocks must be an array")
    if not blocks and not (isinstance(text, str) and text.strip()):
        return Rejection("no_text", "a message needs text or blocks")
    if isinstance(text, str) and len(text) > MAX_MESSAGE_TEXT:
        return Rejection("msg_too_long", f"text is longer than {MAX_MESSAGE_TEXT} characters")
    if blocks:
        problem = _block_problem(blocks, limit=MAX_MESSAGE_BLOCKS)
        if problem is not None:
            return Rejection("invalid_blocks", problem)
        if sum(len(t) for t in _texts(blocks)) > MAX_BLOCKS_TEXT:
            return Rejection("msg_blocks_too_long", "the blocks hold too much text for a message")
    return None


def view_problem(view: Any) -> Rejection | None:
    """What Slack would refuse in views.open / views.update / views.push / views.publish."""
    if not isinstance(view, dict):
        return Rejection("invalid_arguments", "view must be an object")
    blocks = view.get("blocks")
    if not isinstance(blocks, list):
        return Rejection("invalid_arguments", "view.blocks must be an array")
    if len(json.dumps(view)) > MAX_VIEW_BYTES:
        return Rejection("invalid_arguments", "view is larger than 250 kB")
    problem = _block_problem(blocks, limit=MAX_VIEW_BLOCKS)
    if problem is not None:
        return Rejection("invalid_arguments", problem)
    try:
        View(**view).validate_json()
    except (SlackObjectFormationError, TypeError, ValueError) as exc:
        return Rejection("invalid_arguments", str(exc))
    kind = view.get("type")
    if kind == "modal" and not view.get("title"):
        return Rejection("invalid_arguments", "a modal needs a title")
    if kind not in ("modal", "home"):
        return Rejection("invalid_arguments", f"unsupported view type {kind!r}")
    return None
