"""The create/edit, reject and stop modals (``bot/slack/modals.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from bot.engine.declaration import (
    parse_declaration_text,
    split_declaration,
    validate_declaration,
)
from bot.slack import ids
from bot.slack.ids import ButtonRef
from bot.slack.modals import (
    COMMENT_MAX_LENGTH,
    CREATE_BOXES,
    EXAMPLE_PIPELINE,
    STOP_MODE_ABANDON,
    STOP_MODE_WAIT,
    STOP_REASON_MAX_LENGTH,
    FormOrigin,
    create_modal,
    declaration_block_id,
    declaration_from_values,
    declaration_modal,
    example_declaration,
    full_box,
    full_box_error,
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
    # one empty box more, so the declaration may grow past what the boxes hold now
    spare = [b for b in edit["blocks"] if b["type"] == "input"][1:]
    assert len(spare) == 1 and "initial_value" not in spare[0]["element"]
    assert spare[0]["optional"] is True
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
    assert "initial_value" not in inputs[-1]["element"]  # room to grow
    values = {
        b["block_id"]: {
            ids.DECLARATION_INPUT: {
                "type": "plain_text_input",
                "value": b["element"].get("initial_value"),
            }
        }
        for b in inputs
    }
    assert declaration_from_values(values) == declaration
    # no prefilled box is full, so none reads as a paste Slack cut
    assert all(len(b["element"].get("initial_value", "")) < 3000 for b in inputs)
    assert full_box(values) is None
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


# --------------------------------------------------------------------------- create form


def _boxes(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in view["blocks"] if b["type"] == "input"]


@pytest.mark.parametrize("local", [True, False])
def test_create_form_starts_from_an_example_valid_on_the_engine_in_use(local: bool) -> None:
    """Issue 12: the Create form had nothing to start from. Its first box holds a declaration
    the engine in use accepts: on the embedded engine without roleArn or artifact store (it
    uses neither), on AWS with both (AWS requires a role and a store)."""
    example = example_declaration(local=local, repository="demo-app", branch="trunk")
    pipeline, _ = split_declaration(parse_declaration_text(example))
    validate_declaration(pipeline, local=local)
    assert pipeline["name"] == EXAMPLE_PIPELINE
    assert ("roleArn" in pipeline) is not local and ("artifactStore" in pipeline) is not local
    if local:
        source = pipeline["stages"][0]["actions"][0]["configuration"]
        assert source == {"RepositoryName": "demo-app", "BranchName": "trunk"}
    view = check_view(
        create_modal(
            example=example,
            private_metadata=ButtonRef(pipeline="-", channel="C1").encode(),
            command="/deploy",
            example_note="Note `here`.",
        )
    )
    assert view["callback_id"] == ids.CREATE_VIEW
    boxes = _boxes(view)
    assert len(boxes) == CREATE_BOXES
    assert boxes[0]["element"]["initial_value"] == example
    assert all("initial_value" not in b["element"] for b in boxes[1:])
    assert all(b["element"]["max_length"] == 3000 for b in boxes)
    intro = texts(view)
    assert "working example" in intro and "Note `here`." in intro
    # the form says how to give a declaration longer than a box, and where a longer one goes
    assert "3,000 characters" in intro and "in pieces" in intro
    assert f"{CREATE_BOXES * 3000:,} characters" in intro
    assert "`/deploy create` in the message box" in intro
    if local:
        snapshot("create_modal", view)


def _values(*pieces: str | None) -> dict[str, Any]:
    return {
        declaration_block_id(i): {ids.DECLARATION_INPUT: {"type": "plain_text_input", "value": v}}
        for i, v in enumerate(pieces)
    }


def test_a_full_box_with_nothing_after_it_is_found_and_explained() -> None:
    """Slack's client cuts a paste at a box's 3000 characters without a word: the box is found
    full and the error says where the rest goes, never saving the cut declaration."""
    assert full_box(_values("x" * 2999)) is None
    assert full_box(_values("x" * 3000)) == 0
    assert full_box(_values("x" * 3000, "")) == 0
    assert full_box(_values("x" * 3000, None, "")) == 0
    assert full_box(_values("x" * 3000, "rest")) is None  # split by hand, in order
    assert full_box(_values("x" * 3000, "y" * 3000)) == 1
    assert full_box(_values()) is None
    middle = full_box_error(index=0, boxes=5, command="/pipeline", editing=False)
    assert "Box 1 is full" in middle and "Paste the rest of the declaration into box 2" in middle
    last = full_box_error(index=4, boxes=5, command="/pipeline", editing=False)
    assert "no more boxes" in last and "`/pipeline create` in the message box" in last
    edit_last = full_box_error(index=2, boxes=3, command="/pipeline", editing=True)
    assert "no more boxes" in edit_last and "create" not in edit_last
    assert all(len(m) <= 2000 for m in (middle, last, edit_last))  # an input error's limit


def test_form_origin_carries_the_response_url_of_an_ephemeral_message() -> None:
    """Issue 12, item 5: a form opened from an ephemeral message keeps that click's
    response_url, the only way to redraw an ephemeral message."""
    ref = ButtonRef(pipeline="web", execution=E1, channel="C1", message_ts="1.2")
    url = "https://hooks.slack.com/actions/T1/1/abc"
    origin = FormOrigin(ref=ref, response_url=url)
    assert FormOrigin.decode(origin.encode()) == origin
    assert FormOrigin(ref=ref).encode() == ref.encode()  # nothing added without one
    assert FormOrigin.decode(ref.encode()) == FormOrigin(ref=ref)  # forms opened before
    for bad in (
        "",
        "[]",
        '{"pipeline": "web", "response_url": 3}',
        '{"pipeline": "web", "response_url": "file:///etc/passwd"}',
        '{"x": 1}',
    ):
        with pytest.raises(ValueError):
            FormOrigin.decode(bad)
    stop = check_view(stop_modal(ref=ref, response_url=url))
    reject = check_view(reject_modal(ref=ref, response_url=url))
    assert FormOrigin.decode(stop["private_metadata"]).response_url == url
    assert FormOrigin.decode(reject["private_metadata"]).response_url == url
