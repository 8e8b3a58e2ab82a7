"""The create/edit, reject and stop modals (``bot/slack/modals.py``)."""

from __future__ import annotations

import pytest

from bot.slack import ids
from bot.slack.ids import ButtonRef
from bot.slack.modals import (
    COMMENT_MAX_LENGTH,
    STOP_MODE_ABANDON,
    STOP_MODE_WAIT,
    STOP_REASON_MAX_LENGTH,
    declaration_block_id,
    declaration_from_values,
    declaration_modal,
    reject_modal,
    stop_modal,
)
from tests.blockcheck import (
    E1,
    EVIL,
    check_view,
    snapshot,
    texts,
)

# --------------------------------------------------------------------------- modals


def test_declaration_modal_short_and_prefilled() -> None:
    view = check_view(
        declaration_modal(
            callback_id=ids.CREATE_VIEW, initial=None, title="Create pipeline", private_metadata=""
        )
    )
    assert view["callback_id"] == ids.CREATE_VIEW
    inputs = [b for b in view["blocks"] if b["type"] == "input"]
    assert len(inputs) == 1
    assert inputs[0]["block_id"] == ids.DECLARATION_BLOCK
    element = inputs[0]["element"]
    assert element["action_id"] == ids.DECLARATION_INPUT
    assert element["multiline"] is True and element["max_length"] == 3000
    assert "initial_value" not in element
    meta = ButtonRef(pipeline="web-app", channel="C1", message_ts="1.2").encode()
    edit = check_view(
        declaration_modal(
            callback_id=ids.EDIT_VIEW,
            initial="name: web-app\n",
            title="Edit web-app, a pipeline with a long name",
            private_metadata=meta,
        )
    )
    assert edit["private_metadata"] == meta
    assert len(edit["title"]["text"]) == 24
    assert edit["blocks"][1]["element"]["initial_value"] == "name: web-app\n"
    snapshot("declaration_modal", edit)


def test_declaration_modal_spreads_a_long_declaration_over_boxes() -> None:
    declaration = "".join(f'  - name: "stage-{i}" # <&> {"z" * (i % 90)}\n' for i in range(400))
    declaration += "w" * 4000  # one line longer than a box
    view = check_view(
        declaration_modal(
            callback_id=ids.EDIT_VIEW, initial=declaration, title="Edit", private_metadata="{}"
        )
    )
    inputs = [b for b in view["blocks"] if b["type"] == "input"]
    assert len(inputs) > 1
    assert [b["block_id"] for b in inputs] == [declaration_block_id(i) for i in range(len(inputs))]
    assert inputs[0]["optional"] is False and all(b["optional"] for b in inputs[1:])
    values = {
        b["block_id"]: {
            ids.DECLARATION_INPUT: {
                "type": "plain_text_input",
                "value": b["element"]["initial_value"],
            }
        }
        for b in inputs
    }
    assert declaration_from_values(values) == declaration
    # an empty continuation box (value None) is skipped
    values[declaration_block_id(len(inputs))] = {ids.DECLARATION_INPUT: {"value": None}}
    assert declaration_from_values(values) == declaration
    extra = check_view(
        declaration_modal(
            callback_id=ids.CREATE_VIEW,
            initial=None,
            title="Create",
            private_metadata="",
            min_boxes=3,
        )
    )
    assert len([b for b in extra["blocks"] if b["type"] == "input"]) == 3
    too_long = check_view(
        declaration_modal(
            callback_id=ids.EDIT_VIEW, initial="x\n" * 40_000, title="Edit", private_metadata=""
        )
    )
    assert "paste the changed declaration" in texts(too_long)
    with pytest.raises(ValueError, match="private_metadata"):
        declaration_modal(
            callback_id=ids.EDIT_VIEW, initial=None, title="Edit", private_metadata="m" * 3001
        )


def test_reject_modal_requires_a_comment() -> None:
    ref = ButtonRef(pipeline=EVIL, execution=E1, stage="Gate", action="Ok", channel="C1")
    view = check_view(reject_modal(ref=ref))
    assert view["callback_id"] == ids.REJECT_VIEW
    assert ButtonRef.decode(view["private_metadata"]) == ref
    comment = next(b for b in view["blocks"] if b["type"] == "input")
    assert comment["block_id"] == ids.COMMENT_BLOCK and comment["optional"] is False
    assert comment["element"]["action_id"] == ids.COMMENT_INPUT
    assert comment["element"]["multiline"] is True
    assert comment["element"]["max_length"] == COMMENT_MAX_LENGTH
    assert "*Gate / Ok* of *we&lt;b&gt;&amp;amp;&lt;!channel&gt;*" in texts(view)
    snapshot("reject_modal", view)


def test_stop_modal_offers_wait_or_abandon_and_an_optional_reason() -> None:
    ref = ButtonRef(pipeline="web-app", execution=E1, channel="C1", message_ts="1.2")
    view = check_view(stop_modal(ref=ref))
    assert view["callback_id"] == ids.STOP_VIEW
    assert ButtonRef.decode(view["private_metadata"]) == ref
    mode = next(b for b in view["blocks"] if b.get("block_id") == ids.STOP_MODE_BLOCK)
    assert mode["element"]["type"] == "static_select"
    assert mode["element"]["action_id"] == ids.STOP_MODE_INPUT
    assert [o["value"] for o in mode["element"]["options"]] == [
        STOP_MODE_WAIT,
        STOP_MODE_ABANDON,
    ]
    assert mode["element"]["initial_option"]["value"] == STOP_MODE_WAIT
    reason = next(b for b in view["blocks"] if b.get("block_id") == ids.STOP_REASON_BLOCK)
    assert reason["optional"] is True
    assert reason["element"]["action_id"] == ids.STOP_REASON_INPUT
    # "Stopped by NAME in Slack: " (up to 102 characters) + the reason fits AWS's 200.
    assert reason["element"]["max_length"] == STOP_REASON_MAX_LENGTH
    assert len("Stopped by  in Slack: ") + 80 + STOP_REASON_MAX_LENGTH <= 200
    snapshot("stop_modal", view)


def test_modals_with_the_longest_names() -> None:
    name = "<&>" * 34
    ref = ButtonRef(pipeline=name[:100], execution=E1, stage=name[:100], action=name[:100])
    check_view(reject_modal(ref=ref))
    check_view(stop_modal(ref=ref))
