"""The Create form through the real Bolt app and the fake Slack (issue 12, items 3 and 12).

- It starts from a working example, valid on the engine in use: on the embedded engine it
  names a repository of the repositories directory and needs no ``roleArn``.
- A declaration longer than a text box holds (Slack: 3,000 characters) fits: the form has
  several boxes, says how to use them, and a box Slack filled to the brim with nothing after
  it is refused with where the rest goes, never saved cut. The demo's own declaration (over
  4,500 characters) is the test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.demo import DEMO_PIPELINE, demo_declaration
from bot.slack import ids
from bot.slack.modals import CREATE_BOXES, EXAMPLE_PIPELINE, declaration_block_id
from tests.helpers import wait_for
from tests.slack_bot import Bot, text_of
from tests.slack_requests import bolt_request, view_submission


def _form(bot: Bot, command: str) -> dict[str, Any]:
    before = len(bot.fake.calls_to("views.open"))
    bot.command(command)
    view: dict[str, Any] = bot.fake.wait_for("views.open", count=before + 1)[-1].params["view"]
    return view


def _boxes(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in view["blocks"] if b["type"] == "input"]


def _submit(view: dict[str, Any], bot: Bot, *pieces: str) -> dict[str, Any]:
    values = {
        declaration_block_id(i): {
            ids.DECLARATION_INPUT: {"type": "plain_text_input", "value": piece or None}
        }
        for i, piece in enumerate(pieces)
    }
    body, headers = view_submission(
        callback_id=view["callback_id"],
        values=values,
        private_metadata=view["private_metadata"],
        blocks=view["blocks"],
    )
    response = bot.app.dispatch(bolt_request(body, headers))
    assert response.status == 200
    return json.loads(response.body) if response.body else {}


def _created(bot: Bot, name: str) -> Any:
    return bot.fake.wait_for(
        "chat.postMessage", where=lambda c: f"created pipeline *{name}*" in text_of(c)
    )[-1]


def test_the_create_form_starts_from_an_example_that_runs_here(bot: Bot, repos_dir: Path) -> None:
    """The form had no example. Its first box now holds one naming a git repository of the
    repositories directory (``app`` here, on its branch ``main``), without ``roleArn``:
    saved as it is, it creates a pipeline whose source stage really runs."""
    bot.services.settings = bot.services.settings.model_copy(update={"repositories_dir": repos_dir})
    view = _form(bot, "create")
    assert view["callback_id"] == ids.CREATE_VIEW
    boxes = _boxes(view)
    assert len(boxes) == CREATE_BOXES
    example = boxes[0]["element"]["initial_value"]
    assert "roleArn" not in example and '"RepositoryName": "app"' in example
    assert "`app` (branch `main`)" in text_of(bot.fake.calls_to("views.open")[-1])
    assert _submit(view, bot, example) == {}
    _created(bot, EXAMPLE_PIPELINE)

    def source_stage() -> str | None:
        state = bot.engine.get_pipeline_state(name=EXAMPLE_PIPELINE)
        return (state["stageStates"][0].get("latestExecution") or {}).get("status")

    wait_for(lambda: source_stage() == "Succeeded", what="the example's source stage")


def test_without_a_repository_the_example_says_what_it_needs(bot: Bot, tmp_path: Path) -> None:
    bot.services.settings = bot.services.settings.model_copy(
        update={"repositories_dir": tmp_path / "empty"}
    )
    view = _form(bot, "create")
    said = text_of(bot.fake.calls_to("views.open")[-1])
    assert f"a git repository `{EXAMPLE_PIPELINE}`" in said and "PIPEBOT_REPOSITORIES_DIR" in said
    assert f'"RepositoryName": "{EXAMPLE_PIPELINE}"' in _boxes(view)[0]["element"]["initial_value"]


def test_the_demos_own_declaration_is_created_through_the_form(bot: Bot, tmp_path: Path) -> None:
    """The issue's steps: the demo's declaration, copied from `/pipeline edit demo`, pasted
    into `/pipeline create`: the box kept 3,000 characters and Save said "invalid JSON at line
    113". The cut paste is now refused with where the rest goes; given in two boxes, as the
    form says, it is created whole."""
    bot.engine.create_pipeline(pipeline=demo_declaration())
    edit = _form(bot, f"edit {DEMO_PIPELINE}")
    declaration = "".join(b["element"].get("initial_value", "") for b in _boxes(edit))
    assert len(declaration) > 4500
    assert all(len(b["element"].get("initial_value", "")) < 3000 for b in _boxes(edit))
    copied = declaration.replace(f'"name": "{DEMO_PIPELINE}"', '"name": "demo2"', 1)

    create = _form(bot, "create")
    intro = create["blocks"][0]["text"]["text"]
    assert "3,000 characters" in intro and "in pieces" in intro
    # What Slack's box keeps of the paste: its first 3,000 characters.
    answer = _submit(create, bot, copied[:3000])
    assert answer["response_action"] == "errors"
    error = answer["errors"][declaration_block_id(0)]
    assert "Box 1 is full" in error and "Paste the rest of the declaration into box 2" in error
    assert bot.engine.list_pipelines()["pipelines"][0]["name"] == DEMO_PIPELINE  # nothing saved

    assert _submit(create, bot, copied[:3000], copied[3000:]) == {}
    _created(bot, "demo2")
    original = bot.engine.get_pipeline(name=DEMO_PIPELINE)["pipeline"]
    created = bot.engine.get_pipeline(name="demo2")["pipeline"]
    assert {**created, "name": DEMO_PIPELINE} == original


def test_a_name_in_use_is_said_under_the_box_and_the_declaration_stays(
    bot: Bot, tmp_path: Path
) -> None:
    """Creating a pipeline whose name exists closed the form, lost the pasted declaration and
    told the channel (found by a new user): the form now keeps it and says so under the box."""
    bot.engine.create_pipeline(pipeline=demo_declaration())
    edit = _form(bot, f"edit {DEMO_PIPELINE}")
    declaration = "".join(b["element"].get("initial_value", "") for b in _boxes(edit))
    create = _form(bot, "create")
    answer = _submit(create, bot, declaration[:2900], declaration[2900:])
    assert answer["response_action"] == "errors"
    said = answer["errors"][ids.DECLARATION_BLOCK]
    assert f"A pipeline named {DEMO_PIPELINE} already exists" in said
    assert f"/pipeline edit {DEMO_PIPELINE}" in said
    assert [p["name"] for p in bot.engine.list_pipelines()["pipelines"]] == [DEMO_PIPELINE]
    assert not bot.fake.calls_to("chat.postMessage"), "the channel is not told of a typo"
