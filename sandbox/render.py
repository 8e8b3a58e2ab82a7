"""Block Kit and mrkdwn to HTML for the sandbox page: pure functions, data in, HTML out.

Everything the bot wrote is escaped; only the markup made here reaches the page. Interactive
elements carry ``data-block`` / ``data-action`` (and ``data-confirm`` for a confirm dialog);
the page's script finds the message or view around them and reports the click.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.workspace import BOT_USER_ID, Message


@dataclass(frozen=True)
class Directory:
    """Names for mentions: user, user group and channel IDs to names."""

    users: Mapping[str, str] = field(default_factory=dict)
    groups: Mapping[str, str] = field(default_factory=dict)
    channels: Mapping[str, str] = field(default_factory=dict)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# ---------------------------------------------------------------------- mrkdwn

_TOKEN = re.compile(r"<([^<>]+)>")
_ORDINAL = {1: "st", 2: "nd", 3: "rd"}


def _ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else _ORDINAL.get(day % 10, "th")
    return f"{day}{suffix}"


def format_date(epoch: int, template: str, *, now: float) -> str:
    """Slack's ``<!date>`` tokens, in UTC (the sandbox's readers all live there)."""
    when = datetime.fromtimestamp(epoch, UTC)
    today = datetime.fromtimestamp(now, UTC).date()
    relative = {
        today: "today",
        today - timedelta(days=1): "yesterday",
        today + timedelta(days=1): "tomorrow",
    }.get(when.date())
    date = f"{when:%B} {_ordinal(when.day)}, {when.year}"
    short = f"{when:%b} {when.day}, {when.year}"
    long = f"{when:%A}, {date}"
    tokens = {
        "date_num": f"{when:%Y-%m-%d}",
        "date": date,
        "date_short": short,
        "date_long": long,
        "date_pretty": relative or date,
        "date_short_pretty": relative or short,
        "date_long_pretty": relative or long,
        "time": f"{when:%H:%M}",
        "time_secs": f"{when:%H:%M:%S}",
    }
    return re.sub(r"\{(\w+)\}", lambda m: tokens.get(m.group(1), m.group(0)), template)


def _token_html(token: str, directory: Directory, now: float) -> str:
    target, _, label = token.partition("|")
    if target.startswith("@"):
        user = target[1:]
        return f'<span class="mention">@{_e(directory.users.get(user) or label or user)}</span>'
    if target.startswith("#"):
        channel = target[1:]
        name = directory.channels.get(channel) or label or channel
        return f'<span class="mention">#{_e(name)}</span>'
    if target.startswith("!subteam^"):
        group = target.removeprefix("!subteam^")
        name = directory.groups.get(group) or label.lstrip("@") or group
        return f'<span class="mention">@{_e(name)}</span>'
    if target.startswith("!date^"):
        parts = target.split("^")
        try:
            text = format_date(int(parts[1]), parts[2] if len(parts) > 2 else "{date}", now=now)
        except (ValueError, OverflowError, IndexError):
            text = _unescape(label)
        return f"<time>{_e(text)}</time>"
    if target.startswith("!"):
        return f'<span class="mention">@{_e(target[1:])}</span>'
    url = _unescape(target)
    if url.startswith(("http://", "https://", "mailto:")):
        return (
            f'<a href="{_e(url)}" target="_blank" rel="noopener">{_e(_unescape(label or url))}</a>'
        )
    # Not a link Slack understands: show it as typed, so an unescaped "<" in the bot's
    # text is visible instead of silently eaten.
    return _e("<" + _unescape(token) + ">")


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _inline(text: str) -> str:
    """Bold, italic, strike on already-escaped text."""
    text = re.sub(r"(?<![\w*])\*(?!\s)([^*\n]+?)(?<!\s)\*(?![\w*])", r"<b>\1</b>", text)
    text = re.sub(r"(?<![\w_])_(?!\s)([^_\n]+?)(?<!\s)_(?![\w_])", r"<i>\1</i>", text)
    return re.sub(r"(?<![\w~])~(?!\s)([^~\n]+?)(?<!\s)~(?![\w~])", r"<s>\1</s>", text)


def _spans(text: str, directory: Directory, now: float) -> str:
    """Text without code: escape, keep mentions/links/dates as markup, format inline."""
    out: list[str] = []
    position = 0
    for match in _TOKEN.finditer(text):
        out.append(_inline(_e(_unescape(text[position : match.start()]))))
        out.append(_token_html(match.group(1), directory, now))
        position = match.end()
    out.append(_inline(_e(_unescape(text[position:]))))
    return "".join(out)


def _lines(text: str, directory: Directory, now: float) -> str:
    parts = re.split(r"(`[^`\n]+`)", text)
    rendered = []
    for part in parts:
        if len(part) > 1 and part.startswith("`") and part.endswith("`"):
            rendered.append(f"<code>{_e(_unescape(part[1:-1]))}</code>")
        else:
            rendered.append(_spans(part, directory, now))
    joined = "".join(rendered)
    out = []
    for line in joined.split("\n"):
        if line.startswith("&gt; ") or line == "&gt;":
            out.append(f'<span class="quote">{line[4:].lstrip()}</span>')
        else:
            out.append(line)
    return "<br>".join(out)


def mrkdwn(text: str, directory: Directory, *, now: float) -> str:
    """Slack mrkdwn to HTML: code blocks, inline code, bold, italic, strike, quotes,
    mentions, links and dates."""
    pieces = re.split(r"```(.*?)```", text, flags=re.DOTALL)
    out = []
    for index, piece in enumerate(pieces):
        if index % 2:
            out.append(f"<pre>{_e(_unescape(piece.strip(chr(10))))}</pre>")
        elif piece:
            out.append(_lines(piece, directory, now))
    return "".join(out)


def text_object(obj: Any, directory: Directory, *, now: float) -> str:
    if not isinstance(obj, dict):
        return ""
    text = str(obj.get("text", ""))
    if obj.get("type") == "mrkdwn":
        return mrkdwn(text, directory, now=now)
    return _e(text).replace("\n", "<br>")


# ---------------------------------------------------------------------- elements


def _attrs(block_id: str, element: dict[str, Any]) -> str:
    attrs = f' data-block="{_e(block_id)}" data-action="{_e(element.get("action_id", ""))}"'
    confirm = element.get("confirm")
    if isinstance(confirm, dict):
        dialog = {
            "title": (confirm.get("title") or {}).get("text", "Are you sure?"),
            "text": (confirm.get("text") or {}).get("text", ""),
            "confirm": (confirm.get("confirm") or {}).get("text", "Yes"),
            "deny": (confirm.get("deny") or {}).get("text", "Cancel"),
            "style": confirm.get("style", ""),
        }
        attrs += f' data-confirm="{_e(json.dumps(dialog))}"'
    return attrs


def _option_label(option: dict[str, Any]) -> str:
    return str((option.get("text") or {}).get("text", option.get("value", "")))


def _options(element: dict[str, Any]) -> list[dict[str, Any]]:
    options = list(element.get("options") or [])
    for group in element.get("option_groups") or []:
        options.extend(group.get("options") or [])
    return options


def element_html(element: dict[str, Any], block_id: str, directory: Directory, now: float) -> str:
    kind = element.get("type")
    if kind == "button":
        style = element.get("style", "")
        label = _e((element.get("text") or {}).get("text", ""))
        url = element.get("url")
        link = f' data-url="{_e(url)}"' if url else ""
        return (
            f'<button type="button" class="sk-button {_e(style)}"{_attrs(block_id, element)}'
            f"{link}>{label}</button>"
        )
    if kind in ("static_select", "overflow"):
        placeholder = _e((element.get("placeholder") or {}).get("text", "…"))
        initial = (element.get("initial_option") or {}).get("value")
        options = "".join(
            f'<option value="{_e(o.get("value", ""))}"'
            f"{' selected' if o.get('value') == initial else ''}>{_e(_option_label(o))}</option>"
            for o in _options(element)
        )
        first = f'<option value="" disabled{"" if initial else " selected"}>{placeholder}</option>'
        return f'<select class="sk-select"{_attrs(block_id, element)}>{first}{options}</select>'
    if kind == "image":
        return _image_link(element)
    if kind in ("mrkdwn", "plain_text"):
        return f"<span>{text_object(element, directory, now=now)}</span>"
    return f'<span class="unsupported">[{_e(kind)}]</span>'


def _image_link(element: dict[str, Any]) -> str:
    url = str(element.get("image_url", ""))
    alt = str(element.get("alt_text", "image"))
    return f'<a class="image" href="{_e(url)}" target="_blank" rel="noopener">🖼 {_e(alt)}</a>'


def _input_html(block: dict[str, Any], directory: Directory, now: float, error: str | None) -> str:
    element = block.get("element") or {}
    block_id = str(block.get("block_id", ""))
    action_id = str(element.get("action_id", ""))
    label = _e((block.get("label") or {}).get("text", ""))
    optional = ' <span class="optional">(optional)</span>' if block.get("optional") else ""
    names = f'data-block="{_e(block_id)}" data-action="{_e(action_id)}" name="{_e(block_id)}"'
    kind = element.get("type")
    placeholder = _e((element.get("placeholder") or {}).get("text", ""))
    if kind == "plain_text_input":
        initial = _e(element.get("initial_value", ""))
        limit = element.get("max_length")
        maxlength = f' maxlength="{int(limit)}"' if isinstance(limit, int) else ""
        if element.get("multiline"):
            field_html = (
                f'<textarea class="sk-input" rows="8" {names} placeholder="{placeholder}"'
                f"{maxlength}>{initial}</textarea>"
            )
        else:
            field_html = (
                f'<input class="sk-input" type="text" {names} value="{initial}" '
                f'placeholder="{placeholder}"{maxlength}>'
            )
    elif kind == "static_select":
        initial_value = (element.get("initial_option") or {}).get("value")
        options = "".join(
            f'<option value="{_e(o.get("value", ""))}"'
            f"{' selected' if o.get('value') == initial_value else ''}>"
            f"{_e(_option_label(o))}</option>"
            for o in _options(element)
        )
        empty = "" if initial_value else " selected"
        field_html = (
            f'<select class="sk-input" {names}><option value=""{empty}>'
            f"{placeholder or 'Choose an option'}</option>{options}</select>"
        )
    else:
        field_html = f'<span class="unsupported">[{_e(kind)}]</span>'
    hint = block.get("hint")
    hint_html = f'<div class="hint">{text_object(hint, directory, now=now)}</div>' if hint else ""
    error_html = f'<div class="field-error">{_e(error)}</div>' if error else ""
    return (
        f'<label class="sk-field{" has-error" if error else ""}"><span class="label">{label}'
        f"{optional}</span>{field_html}{hint_html}{error_html}</label>"
    )


def block_html(
    block: dict[str, Any],
    directory: Directory,
    *,
    now: float,
    errors: Mapping[str, str] | None = None,
) -> str:
    kind = block.get("type")
    block_id = str(block.get("block_id", ""))
    if kind == "header":
        return f'<h3 class="sk-header">{text_object(block.get("text"), directory, now=now)}</h3>'
    if kind == "divider":
        return '<hr class="sk-divider">'
    if kind == "section":
        parts = []
        if block.get("text"):
            parts.append(
                f'<div class="sk-text">{text_object(block["text"], directory, now=now)}</div>'
            )
        fields = block.get("fields") or []
        if fields:
            cells = "".join(
                f'<div class="sk-field-cell">{text_object(f, directory, now=now)}</div>'
                for f in fields
            )
            parts.append(f'<div class="sk-fields">{cells}</div>')
        accessory = block.get("accessory")
        side = ""
        if isinstance(accessory, dict):
            inner = element_html(accessory, block_id, directory, now)
            side = f'<div class="sk-accessory">{inner}</div>'
        return f'<div class="sk-section"><div class="sk-main">{"".join(parts)}</div>{side}</div>'
    if kind == "context":
        items = "".join(
            _image_link(el) if el.get("type") == "image" else text_object(el, directory, now=now)
            for el in block.get("elements") or []
        )
        return f'<div class="sk-context">{items}</div>'
    if kind == "actions":
        items = "".join(
            element_html(el, block_id, directory, now) for el in block.get("elements") or []
        )
        return f'<div class="sk-actions">{items}</div>'
    if kind == "image":
        title = block.get("title")
        caption = f" {text_object(title, directory, now=now)}" if title else ""
        return f'<div class="sk-image">{_image_link(block)}{caption}</div>'
    if kind == "input":
        return _input_html(block, directory, now, (errors or {}).get(block_id))
    return f'<div class="unsupported">[{_e(kind)} block]</div>'


def blocks_html(
    blocks: Sequence[dict[str, Any]],
    directory: Directory,
    *,
    now: float,
    errors: Mapping[str, str] | None = None,
) -> str:
    return "".join(block_html(b, directory, now=now, errors=errors) for b in blocks)


# ---------------------------------------------------------------------- messages and surfaces


def message_html(
    message: Message,
    directory: Directory,
    *,
    now: float,
    replies: int = 0,
    in_thread: bool = False,
) -> str:
    author = "pipebot" if message.user == BOT_USER_ID else directory.users.get(message.user)
    if message.user == "USLACKBOT":
        author = "Slackbot"
    badge = '<span class="app">APP</span>' if message.is_bot else ""
    when = datetime.fromtimestamp(float(message.ts), UTC).strftime("%H:%M:%S")
    edited = ' <span class="edited">(edited)</span>' if message.edited else ""
    if message.blocks:
        body = blocks_html(message.blocks, directory, now=now)
    else:
        body = f'<div class="sk-text">{mrkdwn(message.text, directory, now=now)}</div>'
    classes = ["msg"]
    footer = ""
    if message.ephemeral_for is not None:
        classes.append("ephemeral")
        footer = (
            '<div class="only-you">👁 Only visible to you · '
            f'<button type="button" class="link" data-dismiss="{_e(message.ts)}">Dismiss</button>'
            "</div>"
        )
    elif not in_thread and message.thread_ts in (None, message.ts):
        label = f"{replies} repl{'y' if replies == 1 else 'ies'}" if replies else "Reply in thread"
        footer = (
            f'<button type="button" class="thread-link{" has-replies" if replies else ""}" '
            f'data-thread="{_e(message.ts)}">{label}</button>'
        )
    elif not in_thread and message.reply_broadcast:
        footer = (
            f'<button type="button" class="thread-link" data-thread="{_e(message.thread_ts)}">'
            "replied to a thread</button>"
        )
    return (
        f'<div class="{" ".join(classes)}" data-channel="{_e(message.channel)}" '
        f'data-ts="{_e(message.ts)}" id="m{_e(message.ts.replace(".", "-"))}">'
        f'<div class="meta"><b>{_e(author or message.user)}</b>{badge} <time>{when}</time>'
        f'{edited}</div><div class="body">{body}</div>{footer}</div>'
    )


def modal_html(view: dict[str, Any], directory: Directory, *, now: float) -> str:
    errors: dict[str, str] = dict(view.get("_errors") or {})
    general = errors.pop("", None)
    title = _e((view.get("title") or {}).get("text", ""))
    close = _e((view.get("close") or {}).get("text", "Cancel"))
    submit = view.get("submit")
    submit_html = (
        f'<button type="submit" class="sk-button primary">{_e(submit.get("text", "Submit"))}'
        "</button>"
        if isinstance(submit, dict)
        else ""
    )
    banner = f'<div class="modal-error">{_e(general)}</div>' if general else ""
    return (
        f'<form class="modal" data-view="{_e(view.get("id", ""))}" '
        f'data-hash="{_e(view.get("hash", ""))}">'
        f'<header><h2>{title}</h2><button type="button" class="close-x" data-close '
        f'aria-label="Close">&times;</button></header>'
        f'<div class="modal-body">{banner}'
        f"{blocks_html(view.get('blocks') or [], directory, now=now, errors=errors)}</div>"
        f'<footer><button type="button" class="sk-button" data-close>{close}</button>'
        f"{submit_html}</footer></form>"
    )


def home_html(view: dict[str, Any] | None, directory: Directory, *, now: float) -> str:
    if view is None:
        return '<p class="empty">Opening the Home tab…</p>'
    return (
        f'<div class="home-view" data-view="{_e(view.get("id", ""))}">'
        f"{blocks_html(view.get('blocks') or [], directory, now=now)}</div>"
    )
