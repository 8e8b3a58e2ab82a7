"""The ``/pipeline`` grammar: every command, its errors, generated help, and fuzzing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.ops.permissions import Permission
from bot.slack.messages import help_blocks
from handlers.grammar import (
    DEMO_NAMES,
    REGISTRY,
    CommandError,
    ExampleNames,
    ParsedCommand,
    UnknownCommandError,
    examples_from,
    help_text,
    normalize_reason,
    parse,
    reason_changes,
    spec_for,
    suggest,
    usage_text,
)

UUID = "3f2c9d1e-5b7a-4c2e-9f0d-8a6b1c2d3e4f"


def args_of(text: str) -> dict[str, Any]:
    return dict(parse(text).args)


def error_of(text: str) -> CommandError:
    with pytest.raises(CommandError) as info:
        parse(text)
    return info.value


# --- registry ---------------------------------------------------------------------------------


def test_registry_names_and_aliases_are_unique_and_lowercase() -> None:
    words = [w for spec in REGISTRY for w in (spec.name, *spec.aliases)]
    assert len(words) == len(set(words))
    assert all(w == w.lower() for w in words)


def test_registry_covers_the_issue_commands_in_help_order() -> None:
    assert [spec.name for spec in REGISTRY] == [
        "help",
        "list",
        "status",
        "history",
        "execution",
        "start",
        "stop",
        "retry",
        "rollback",
        "override",
        "approve",
        "reject",
        "disable",
        "enable",
        "create",
        "edit",
        "delete",
        "access",
        "audit",
        "subscribe",
        "unsubscribe",
        "subscriptions",
    ]


@pytest.mark.parametrize(
    ("name", "permission"),
    [
        ("help", Permission.READ),
        ("list", Permission.READ),
        ("status", Permission.READ),
        ("history", Permission.READ),
        ("execution", Permission.READ),
        ("audit", Permission.READ),
        ("create", Permission.OPERATE),
        ("edit", Permission.OPERATE),
        ("delete", Permission.OPERATE),
        ("start", Permission.OPERATE),
        ("stop", Permission.OPERATE),
        ("retry", Permission.OPERATE),
        ("enable", Permission.OPERATE),
        ("disable", Permission.OPERATE),
        ("approve", Permission.APPROVE),
        ("reject", Permission.APPROVE),
        ("access", Permission.ADMIN),
    ],
)
def test_permissions(name: str, permission: Permission) -> None:
    spec = spec_for(name)
    assert spec is not None
    assert spec.permission is permission


def test_spec_for_resolves_aliases_case_insensitively() -> None:
    assert spec_for("SHOW") == spec_for("status")
    assert spec_for("exec") == spec_for("execution")
    assert spec_for("nope") is None


@pytest.mark.parametrize("spec", REGISTRY, ids=lambda s: s.name)
def test_every_example_parses_to_its_command(spec: Any) -> None:
    assert parse(spec.example).name == spec.name
    assert spec.example.split()[0] == spec.name
    assert spec.usage.split()[0] == spec.name


# --- tokenizing -------------------------------------------------------------------------------


def test_empty_and_blank_text_is_help() -> None:
    for text in ("", "   ", "\n\t"):
        parsed = parse(text)
        assert parsed.name == "help"
        assert parsed.args == {"topic": None}
        assert parsed.pipeline is None


def test_whitespace_and_case_are_ignored() -> None:
    parsed = parse("   STATUS    web-release   ")
    assert (parsed.name, parsed.pipeline) == ("status", "web-release")
    assert parsed.text == "   STATUS    web-release   "
    assert parse("Status\u00a0web").pipeline == "web"  # Slack's non-breaking space


def test_quotes_and_smart_quotes() -> None:
    assert parse('status "web-release"').pipeline == "web-release"
    assert parse("status 'web-release'").pipeline == "web-release"
    assert parse("status \u201cweb-release\u201d").pipeline == "web-release"
    assert parse("status \u2018web-release\u2019").pipeline == "web-release"


@pytest.mark.parametrize(
    "text", ['status "web', "status 'web", "status \u201cweb", "enable web 'Prod"]
)
def test_unbalanced_quote_is_a_usage_error(text: str) -> None:
    error = error_of(text)
    assert "Unbalanced quote" in error.message
    assert error.usage is not None and "Usage:" in error.usage


def test_trailing_backslash_is_a_usage_error() -> None:
    assert "backslash" in error_of("status web\\").message


def test_slack_entities_are_decoded_once() -> None:
    args = args_of("approve web ship &lt;it&gt; &amp; go &amp;amp;")
    assert args["comment"] == "ship <it> & go &amp;"


def test_hash_is_not_a_comment() -> None:
    assert args_of("approve web fixes #12")["comment"] == "fixes #12"


# --- unknown commands -------------------------------------------------------------------------


def test_unknown_command_suggests_close_ones() -> None:
    with pytest.raises(UnknownCommandError) as info:
        parse("stauts web")
    assert 'Unknown command "stauts"' in info.value.message
    assert "status" in info.value.suggestions
    assert "`status`" in info.value.message
    assert "/pipeline help" in info.value.message


def test_unknown_command_uses_the_configured_slash() -> None:
    with pytest.raises(UnknownCommandError) as info:
        parse("web-release", slash="/deploy")
    assert "`/deploy status web-release`" in info.value.message


def test_unknown_command_text_is_escaped_and_shortened() -> None:
    with pytest.raises(UnknownCommandError) as info:
        parse("<!channel>" + "x" * 500)
    assert "<!channel>" not in info.value.message
    assert len(info.value.message) < 300


def test_unknown_command_with_no_close_match() -> None:
    with pytest.raises(UnknownCommandError) as info:
        parse("zzzzqqq")
    assert info.value.suggestions == []


# --- help -------------------------------------------------------------------------------------


def test_help_topic() -> None:
    assert args_of("help") == {"topic": None}
    assert args_of("help start") == {"topic": "start"}
    assert args_of("help SHOW") == {"topic": "status"}


def test_help_unknown_topic_is_unknown_command() -> None:
    with pytest.raises(UnknownCommandError) as info:
        parse("help strat")
    assert "start" in info.value.suggestions


def test_help_too_many_arguments() -> None:
    assert error_of("help start stop").usage is not None


def test_help_lists_every_command_with_its_example() -> None:
    text = help_text(command=None, trial_mode=False)
    for spec in REGISTRY:
        assert f"`/pipeline {spec.usage}` — {spec.summary}" in text
        assert f"`/pipeline {spec.example}`" in text
    assert "(alias `show`)" in text
    assert "PIPEBOT_ADMINS" not in text
    # Slack's section limit: help is cut into sections at line ends (``help_blocks``).
    blocks = help_blocks(text=text)
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks)
    assert "\n".join(b["text"]["text"] for b in blocks) == text


def test_help_trial_mode_says_everyone_may_do_everything() -> None:
    text = help_text(command=None, trial_mode=True)
    assert "no admins are configured" in text
    assert "everyone may do everything" in text
    assert "PIPEBOT_ADMINS" in text
    assert "PIPEBOT_ADMINS" in help_text(command="start", trial_mode=True)


def test_help_uses_the_configured_slash() -> None:
    text = help_text(command=None, slash="/deploy", trial_mode=False)
    assert "`/deploy status NAME`" in text
    assert "/pipeline" not in text


@pytest.mark.parametrize("spec", REGISTRY, ids=lambda s: s.name)
def test_help_for_one_command(spec: Any) -> None:
    text = help_text(command=spec.name.upper(), trial_mode=False)
    assert f"`/pipeline {spec.usage}`" in text
    assert f"`/pipeline {spec.example}`" in text
    assert spec.permission.value in text
    for alias in spec.aliases:
        assert f"`{alias}`" in text


def test_help_for_an_alias_and_for_an_unknown_command() -> None:
    assert "`/pipeline status NAME`" in help_text(command="show", trial_mode=False)
    with pytest.raises(UnknownCommandError) as info:
        help_text(command="aprove", trial_mode=False)
    assert info.value.suggestions[0] == "approve"
    assert 'Unknown command "aprove"' in info.value.message


def test_help_with_blank_command_is_the_overview() -> None:
    assert help_text(command="  ", trial_mode=False) == help_text(command=None, trial_mode=False)


# --- simple commands --------------------------------------------------------------------------


def test_list() -> None:
    assert parse("list") == ParsedCommand(name="list", pipeline=None, args={}, text="list")
    assert error_of("list web").usage is not None


@pytest.mark.parametrize("command", ["status", "show", "edit", "delete"])
def test_name_only_commands(command: str) -> None:
    parsed = parse(f"{command} web-release.v2@eu_1")
    assert parsed.pipeline == "web-release.v2@eu_1"
    assert parsed.args == {}
    missing = error_of(command)
    assert "NAME" in missing.message
    assert missing.usage is not None
    assert "Usage:" in missing.usage and "Example:" in missing.usage
    assert "Too many arguments" in error_of(f"{command} web extra").message


@pytest.mark.parametrize(
    "name", ["web/release", "web release", "x" * 101, "", "web*", "caf\u00e9", "\u00e9t\u00e9"]
)
def test_invalid_pipeline_names_name_the_rule(name: str) -> None:
    error = error_of(f"status {json.dumps(name, ensure_ascii=False)}")
    # Accented letters are refused, so the rule says ASCII letters (issue 12, polish).
    assert "1-100 ASCII letters (A-Z, a-z, no accents), digits and `.@-_`" in error.message


def test_pipeline_name_of_100_characters_is_fine() -> None:
    assert parse("status " + "a" * 100).pipeline == "a" * 100


def test_history() -> None:
    assert args_of("history web") == {"count": 10}
    assert args_of("history web 1") == {"count": 1}
    assert args_of("history web 50") == {"count": 50}
    for bad in ("0", "51", "-3", "ten", "1.5", "9" * 5000, "\u0663"):
        error = error_of(f"history web {bad}")
        assert "1 to 50" in error.message
        assert error.usage is not None
    assert error_of("history web 5 6").usage is not None
    assert error_of("history").usage is not None


def test_execution_and_its_alias() -> None:
    parsed = parse(f"exec web {UUID}")
    assert parsed.name == "execution"
    assert parsed.args == {"execution": UUID}
    assert "execution ID" in error_of("execution web").message
    assert "not an execution ID" in error_of("execution web abc/def").message
    assert error_of(f"execution web {UUID} more").usage is not None


def test_audit() -> None:
    assert parse("audit").pipeline is None
    assert parse("audit web").pipeline == "web"
    assert parse("audit web").args == {}
    assert error_of("audit web more").usage is not None


# --- create -----------------------------------------------------------------------------------


def test_create_without_declaration_opens_the_modal() -> None:
    assert args_of("create") == {"declaration": None}
    assert args_of("create   ") == {"declaration": None}
    assert args_of("create ``` ```") == {"declaration": None}


def test_create_keeps_raw_json_with_quotes_and_newlines() -> None:
    declaration = {
        "pipeline": {
            "name": "web-release",
            "stages": [{"name": "Source", "actions": [{"name": 'it\'s "quoted"'}]}],
        }
    }
    raw = json.dumps(declaration, indent=2)
    parsed = parse(f"create {raw}")
    assert parsed.name == "create"
    assert json.loads(parsed.args["declaration"]) == declaration


def test_create_starting_on_the_next_line() -> None:
    assert args_of('create\n{"name": "a b"}') == {"declaration": '{"name": "a b"}'}


def test_create_strips_code_fences() -> None:
    raw = '{\n  "name": "web"\n}'
    for text in (
        f"create ```{raw}```",
        f"create ```\n{raw}\n```",
        f"create ```json\n{raw}\n```",
        f"create\n```JSON\n{raw}\n```  ",
    ):
        assert args_of(text) == {"declaration": raw}, text


def test_create_yaml_in_a_fence_keeps_indentation() -> None:
    raw = "pipeline:\n  name: web\n  stages:\n    - name: Source\n"
    assert args_of(f"create ```yaml\n{raw}```") == {"declaration": raw.strip()}


def test_create_unbalanced_quotes_are_not_an_error() -> None:
    assert args_of("create name: it's") == {"declaration": "name: it's"}


def test_create_decodes_slack_entities() -> None:
    assert args_of('create {"cmd": "a &amp;&amp; b &gt; c"}') == {
        "declaration": '{"cmd": "a && b > c"}'
    }


# --- start ------------------------------------------------------------------------------------


def test_start_with_variables() -> None:
    assert args_of("start web") == {"variables": {}}
    assert args_of("start web --var ENV=staging --var=REGION=eu-west-1") == {
        "variables": {"ENV": "staging", "REGION": "eu-west-1"}
    }
    assert args_of('start web --var "MSG=hello world" --VAR X=a=b') == {
        "variables": {"MSG": "hello world", "X": "a=b"}
    }


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("start web --var", "needs K=V"),
        ("start web --var ENV", "not K=V"),
        ("start web --var =x", "not K=V"),
        ("start web --var=", "not K=V"),
        ("start web --var ENV=", "no value"),
        ("start web --var E/NV=1", "not a valid variable name"),
        ("start web --var A=1 --var A=2", "given twice"),
        ("start web staging", "--var K=V"),
        ("start web --force", "Unknown option"),
        ("start", "NAME"),
    ],
)
def test_start_errors(text: str, fragment: str) -> None:
    error = error_of(text)
    assert fragment in error.message
    assert error.usage is not None and "start NAME" in error.usage


# --- stop -------------------------------------------------------------------------------------


def test_stop() -> None:
    assert args_of("stop web") == {"execution": None, "abandon": False, "reason": None}
    assert args_of(f"stop web {UUID} --abandon") == {
        "execution": UUID,
        "abandon": True,
        "reason": None,
    }
    assert args_of("stop web --abandon --reason bad build, don't ship") == {
        "execution": None,
        "abandon": True,
        "reason": "bad build, don't ship",
    }
    assert args_of('stop web --reason "broken  build" ')["reason"] == "broken  build"
    assert args_of("stop web --reason=bad build")["reason"] == "bad build"
    assert args_of('stop web "--reason=bad build" now')["reason"] == "bad build now"
    assert args_of("stop web --reason --abandon")["reason"] == "--abandon"
    assert args_of("stop web --reason \u201cit\u2019s broken\u201d")["reason"] == "it's broken"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("stop web --reason", "needs the reason"),
        ("stop web --reason   ", "needs the reason"),
        (f"stop web {UUID} {UUID}", "Too many arguments"),
        ("stop web --wait", "Unknown option"),
        ("stop web a/b", "not an execution ID"),
        ("stop", "NAME"),
    ],
)
def test_stop_errors(text: str, fragment: str) -> None:
    error = error_of(text)
    assert fragment in error.message
    assert error.usage is not None and "stop NAME" in error.usage


# --- retry ------------------------------------------------------------------------------------


def test_retry() -> None:
    assert args_of("retry web") == {"stage": None, "execution": None, "mode": "FAILED_ACTIONS"}
    assert args_of("retry web Deploy --all") == {
        "stage": "Deploy",
        "execution": None,
        "mode": "ALL_ACTIONS",
    }
    assert args_of(f"retry web {UUID}") == {
        "stage": None,
        "execution": UUID,
        "mode": "FAILED_ACTIONS",
    }
    assert args_of("retry web 3f2c9d1e")["execution"] == "3f2c9d1e"  # a short ID from history
    assert args_of(f"retry web --all Deploy {UUID}") == {
        "stage": "Deploy",
        "execution": UUID,
        "mode": "ALL_ACTIONS",
    }
    assert args_of("retry web deadbeef")["stage"] == "deadbeef"  # no digit: a stage name


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (f"retry web Deploy {UUID} extra", "Too many arguments"),
        ("retry web --failed", "Unknown option"),
        ("retry web De/ploy", "not a valid stage name"),
        ("retry web Deploy a/b", "not an execution ID"),
    ],
)
def test_retry_errors(text: str, fragment: str) -> None:
    error = error_of(text)
    assert fragment in error.message
    assert error.usage is not None and "retry NAME" in error.usage


# --- approve / reject -------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["approve", "reject"])
def test_approve_and_reject(command: str) -> None:
    empty = {"stage": None, "action": None, "execution": None, "comment": None}
    assert args_of(f"{command} web") == empty
    assert args_of(f"{command} web Prod/Gate") == {
        **empty,
        "stage": "Prod",
        "action": "Gate",
    }
    assert args_of(f"{command} web Prod/Gate looks good") == {
        **empty,
        "stage": "Prod",
        "action": "Gate",
        "comment": "looks good",
    }
    assert args_of(f"{command} web looks good") == {**empty, "comment": "looks good"}
    assert args_of(f'{command} web "looks good"') == {**empty, "comment": "looks good"}
    assert args_of(f"{command} web don't ship") == {**empty, "comment": "don't ship"}
    assert args_of(f"{command} web Prod/Gate it\u2019s fine")["comment"] == "it's fine"
    assert parse(f"{command.upper()} web").name == command


EXECUTION_ID = "3f2c9d1e-7a4b-4c2d-9e8f-0a1b2c3d4e5f"


@pytest.mark.parametrize("command", ["approve", "reject"])
def test_approve_and_reject_name_one_execution_in_either_order(command: str) -> None:
    both = {"stage": "Prod", "action": "Gate", "execution": EXECUTION_ID, "comment": "ok then"}
    assert args_of(f"{command} web Prod/Gate {EXECUTION_ID} ok then") == both
    assert args_of(f"{command} web {EXECUTION_ID} Prod/Gate ok then") == both
    assert args_of(f"{command} web 3f2c9d1e ship it") == {
        "stage": None,
        "action": None,
        "execution": "3f2c9d1e",
        "comment": "ship it",
    }
    # A prefix without a digit, a second execution or a word after the comment began is
    # comment: the comment is never cut short by guessing.
    assert args_of(f"{command} web deadbeef fine")["comment"] == "deadbeef fine"
    assert args_of(f"{command} web deadbeef fine")["execution"] is None
    twice = args_of(f"{command} web 3f2c9d1e 4a5b6c7d")
    assert twice["execution"] == "3f2c9d1e" and twice["comment"] == "4a5b6c7d"
    later = args_of(f"{command} web looks good 3f2c9d1e")
    assert later["execution"] is None and later["comment"] == "looks good 3f2c9d1e"


@pytest.mark.parametrize(
    "second", ["a/b/c", "/Gate", "Prod/", "and/or?", "http://x", "'quoted /slash'"]
)
def test_second_word_is_a_target_only_with_one_slash_and_two_names(second: str) -> None:
    args = args_of(f"approve web {second} rest")
    assert args["stage"] is None and args["action"] is None
    assert args["comment"] is not None and args["comment"].endswith("rest")


def test_approve_comment_keeps_newlines_and_mentions() -> None:
    args = args_of("approve web Prod/Gate line one\nline two <@U123ABC>")
    assert args["comment"] == "line one\nline two <@U123ABC>"


def test_approve_needs_a_valid_name() -> None:
    assert "NAME" in error_of("approve").message
    assert "not a valid pipeline name" in error_of("approve we/b").message


# --- disable / enable -------------------------------------------------------------------------


def test_disable_and_enable() -> None:
    assert args_of("disable web Prod release freeze, see #12") == {
        "stage": "Prod",
        "reason": "release freeze, see #12",
    }
    assert args_of('disable web Prod "don\'t deploy"')["reason"] == "don't deploy"
    assert args_of("enable web Prod") == {"stage": "Prod"}
    assert parse("enable web Prod").pipeline == "web"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("disable web Prod", "needs a REASON"),
        ("disable web", "STAGE"),
        ("disable web Prod ###", "no characters AWS accepts"),
        ("disable web Pr/od freeze", "not a valid stage name"),
        ("enable web", "STAGE"),
        ("enable web Prod now", "Too many arguments"),
    ],
)
def test_disable_and_enable_errors(text: str, fragment: str) -> None:
    error = error_of(text)
    assert fragment in error.message
    assert error.usage is not None


# --- access -----------------------------------------------------------------------------------


def test_access_show() -> None:
    assert args_of("access web") == {"op": "show", "role": None, "subjects": [], "enabled": None}


def test_access_mentions_are_normalized_to_ids() -> None:
    text = (
        "access web approvers add <@U123ABC> <@W999ZZZ|alice> <!subteam^S0614TZR7|@release-team>"
        " <!subteam^S777AAA> U55555 <@U123ABC|dup>"
    )
    assert args_of(text) == {
        "op": "add",
        "role": "approvers",
        "subjects": ["U123ABC", "W999ZZZ", "S0614TZR7", "S777AAA", "U55555"],
        "enabled": None,
    }


def test_access_remove_operators_and_mention_with_spaces() -> None:
    assert args_of("access web Operator REMOVE <@U123ABC|Jane Doe>") == {
        "op": "remove",
        "role": "operators",
        "subjects": ["U123ABC"],
        "enabled": None,
    }


def test_access_self_approval() -> None:
    on: dict[str, Any] = {"op": "self_approval", "role": None, "subjects": [], "enabled": True}
    assert args_of("access web self-approval on") == on
    assert args_of("access web self-approval OFF") == {**on, "enabled": False}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("access web approvers add @alice", "mention users"),
        ("access web approvers add <#C123ABC|general>", "mention users"),
        ("access web approvers add <!channel>", "mention users"),
        ("access web approvers add bob", "mention users"),
        ("access web approvers add", "Mention the users"),
        ("access web approvers", "`add` or `remove`"),
        ("access web approvers grant <@U1AB>", "`add` or `remove`"),
        ("access web self-approval", "`on` or `off`"),
        ("access web self-approval maybe", "`on` or `off`"),
        ("access web self-approval on now", "Too many arguments"),
        ("access web owners add <@U1AB>", "not an access setting"),
        ("access", "NAME"),
    ],
)
def test_access_errors(text: str, fragment: str) -> None:
    error = error_of(text)
    assert fragment in error.message
    assert error.usage is not None and "access NAME" in error.usage


# --- subscriptions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pipeline", "args"),
    [
        ("subscribe web", "web", {"events": None}),
        ("subscribe web --events failures", "web", {"events": "failures"}),
        ("subscribe web --events=Approvals", "web", {"events": "approvals"}),
        ("subscribe web --digest 9:05", "web", {"events": None, "digest": "09:05"}),
        (
            "subscribe web --digest=23:59 --events all",
            "web",
            {"events": "all", "digest": "23:59"},
        ),
        ("subscribe web --digest OFF", "web", {"events": None, "digest": "off"}),
        ("unsubscribe web", "web", {}),
        ("subscriptions", None, {}),
    ],
)
def test_subscription_commands_parse(text: str, pipeline: str | None, args: dict[str, Any]) -> None:
    parsed = parse(text)
    assert parsed.pipeline == pipeline
    assert parsed.args == args


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("subscribe", "needs NAME"),
        ("subscribe web --events", "needs `all`"),
        ("subscribe web --events everything", "not an event filter"),
        ("subscribe web --events all --events failures", "given twice"),
        ("subscribe web --digest", "needs a time"),
        ("subscribe web --digest 24:00", "not a time of day"),
        ("subscribe web --digest 9am", "not a time of day"),
        ("subscribe web --digest 09:00 --digest 10:00", "given twice"),
        ("subscribe web --verbose", "Unknown option"),
        ("subscribe web extra", "Too many arguments"),
        ("unsubscribe", "needs NAME"),
        ("subscriptions web", "Too many arguments"),
    ],
)
def test_subscription_command_errors(text: str, fragment: str) -> None:
    error = error_of(text)
    assert fragment in error.message
    assert error.usage is not None


# --- suggest / normalize_reason ---------------------------------------------------------------


def test_suggest() -> None:
    names = ["web-release", "api-release", "Web-Staging", "docs"]
    assert suggest("web-relaese", names)[0] == "web-release"
    assert suggest("WEB-STAGING", names) == ["Web-Staging"]
    assert "web-release" in suggest("web", names)
    assert suggest("", names) == []
    assert suggest("zzzzzz", names) == []
    assert len(suggest("release", [f"release-{i}" for i in range(10)], limit=2)) == 2


def test_normalize_reason() -> None:
    assert normalize_reason("release freeze (see ops)!") == ("release freeze (see ops)!", False)
    assert normalize_reason("  release   freeze ") == ("release freeze", False)
    assert normalize_reason("freeze, see #12") == ("freeze see 12", True)
    assert normalize_reason("don\u2019t deploy: caf\u00e9") == ("dont deploy cafe", True)
    assert normalize_reason("line\nbreak_under") == ("line break under", True)
    reason, changed = normalize_reason("x" * 300)
    assert reason == "x" * 300 and not changed
    # Never cut silently: a reason AWS cannot keep whole is refused, saying by how much.
    with pytest.raises(CommandError, match=r"400 characters long.*at most 300.*by 100"):
        normalize_reason("x" * 400)


def test_normalize_reason_empty_result_is_an_error() -> None:
    for text in ("", "   ", "###", "\u2603\u2603"):
        with pytest.raises(CommandError):
            normalize_reason(text)


@given(st.text())
def test_normalize_reason_result_fits_aws(text: str) -> None:
    try:
        reason, _ = normalize_reason(text)
    except CommandError:
        return
    assert 1 <= len(reason) <= 300
    assert all(c.isascii() and (c.isalnum() or c in "!@ ().*?-") for c in reason)
    assert reason == reason.strip() and "  " not in reason


# --- fuzzing: parse returns a command or raises CommandError, nothing else -------------------

WORDS = [w for spec in REGISTRY for w in (spec.name, *spec.aliases)]
TOKENS = [
    "web",
    "web-release",
    "Prod",
    "Prod/Gate",
    "a/b/c",
    UUID,
    "3f2c9d1e",
    "--var",
    "--var=A=1",
    "A=1",
    "=",
    "--abandon",
    "--reason",
    "--reason=x",
    "--all",
    "--x",
    "operators",
    "approvers",
    "add",
    "remove",
    "self-approval",
    "on",
    "off",
    "<@U123ABC>",
    "<@U1|x y>",
    "<!subteam^S1AB|@t>",
    "@bob",
    "50",
    "0",
    "'",
    '"',
    "\u201c",
    "\u2019",
    "\\",
    "```",
    "&amp;",
    "&lt;",
    "#",
    "\n",
    "\u00a0",
    "é",
    "\x00",
]


@settings(max_examples=400)
@given(st.text())
def test_parse_random_text_never_raises_anything_else(text: str) -> None:
    check_parse(text)


@settings(max_examples=1500)
@given(
    st.sampled_from(WORDS),
    st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)), max_size=8),
    st.sampled_from([" ", "  ", "\n", "\t"]),
)
def test_parse_random_commands_never_raise_anything_else(
    word: str, tokens: list[str], sep: str
) -> None:
    check_parse(sep.join([word, *tokens]))


def check_parse(text: str) -> None:
    try:
        parsed = parse(text)
    except UnknownCommandError as error:
        assert error.message.startswith("Unknown command")
        assert isinstance(error.suggestions, list)
    except CommandError as error:
        assert error.message
        assert error.usage is None or "Usage:" in error.usage
    else:
        assert isinstance(parsed, ParsedCommand)
        assert spec_for(parsed.name) is not None
        assert parsed.text == text
        assert parsed.pipeline is None or 1 <= len(parsed.pipeline) <= 100


def test_every_command_has_one_parser_and_one_handler_and_every_button_one_action() -> None:
    """A command is declared in REGISTRY, parsed by its parser and carried out by its
    handler; a button is drawn with an ID of ``ids.BUTTON_ACTIONS`` and handled by
    ``actions.ACTIONS``. The tables must name the same things, or a command or a click
    would fail only when someone uses it."""
    from bot.slack import ids
    from handlers import actions, commands, grammar

    names = {spec.name for spec in REGISTRY}
    assert set(grammar._PARSERS) == names
    assert set(commands.HANDLERS) == names
    assert set(ids.BUTTON_ACTIONS) == set(actions.ACTIONS)


def test_reason_changes_name_what_was_removed_and_replaced() -> None:
    assert reason_changes("release freeze (see ops)!") is None
    assert reason_changes("  spaced   out\n") is None  # whitespace is only tidied
    said = reason_changes("freeze, see #12 & caf\u00e9 <now>")
    assert said is not None
    assert said.startswith("AWS accepts only ASCII letters, digits, spaces and `!@().*?-`")
    assert "removed `,` `#` `&amp;` `&lt;` `&gt;`" in said  # escaped for mrkdwn
    assert "wrote `\u00e9` as `e`" in said
    assert "shortened" not in said
    assert "backticks" in (reason_changes("use `make`") or "")


# --- usage and examples (issue 12: polish) ----------------------------------------------------


def test_usage_is_mrkdwn_naming_the_pipeline_typed() -> None:
    error = error_of("history web-app lots")
    assert error.usage == (
        "*Usage:* `/pipeline history NAME [N]`\n*Example:* `/pipeline history web-app 20`"
    )
    # Before a name is typed, the example is the sandbox's demo pipeline.
    assert error_of("history").usage == (
        "*Usage:* `/pipeline history NAME [N]`\n*Example:* `/pipeline history demo 20`"
    )
    assert "web-release" not in usage_text(spec_for("approve"))  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", REGISTRY, ids=lambda s: s.name)
def test_no_example_names_a_pipeline_the_sandbox_lacks(spec: Any) -> None:
    assert "web-release" not in spec.example
    if "NAME" in spec.usage.split()[1:2]:
        assert parse(spec.example).pipeline == DEMO_NAMES.pipeline


DECLARATION: dict[str, Any] = {
    "name": "shop",
    "variables": [{"name": "TIER", "defaultValue": "gold"}],
    "stages": [
        {"name": "Fetch", "actions": [{"name": "Src", "actionTypeId": {"category": "Source"}}]},
        {"name": "Compile", "actions": []},
        {
            "name": "SignOff",
            "actions": [{"name": "Lead", "actionTypeId": {"category": "Approval"}}],
        },
        {"name": "Live", "actions": []},
    ],
}


def test_examples_from_a_users_pipeline() -> None:
    names = examples_from("shop", DECLARATION, execution_id=UUID)
    assert names == ExampleNames(
        pipeline="shop",
        stage="Live",
        retry_stage="Compile",
        approval="SignOff/Lead",
        execution=UUID[:8],
        variable="TIER",
    )
    bare = examples_from("tiny", {"name": "tiny", "stages": DECLARATION["stages"][:2]})
    assert (bare.approval, bare.variable, bare.stage) == ("", "", "Compile")
    assert examples_from("x") == ExampleNames(pipeline="x")


@pytest.mark.parametrize(
    "names",
    [
        DEMO_NAMES,
        examples_from("shop", DECLARATION, execution_id=UUID),
        examples_from("tiny", {"name": "tiny", "stages": DECLARATION["stages"][:2]}),
    ],
    ids=["demo", "shop", "tiny"],
)
def test_every_filled_example_parses(names: ExampleNames) -> None:
    for spec in REGISTRY:
        example = spec.example_for(names)
        parsed = parse(example)
        assert parsed.name == spec.name, example
        assert "  " not in example and not example.endswith(" "), example
    assert parse(
        f"start {names.pipeline}{' --var ' + names.variable + '=1' if names.variable else ''}"
    )


def test_help_fills_examples_and_has_no_bold_around_code() -> None:
    names = examples_from("shop", DECLARATION, execution_id=UUID)
    text = help_text(command=None, trial_mode=False, names=names)
    assert "`/pipeline approve shop SignOff/Lead looks good`" in text
    assert "`/pipeline start shop --var TIER=2.1`" in text
    one = help_text(command="start", trial_mode=False, names=names)
    assert one.startswith("`/pipeline start NAME [--var K=V ...]` — ")
    assert "*`" not in one and "`*" not in one


def test_a_typo_gets_the_closest_command_only() -> None:
    for typo, meant in (("stauts", "status"), ("strat", "start"), ("hsitory", "history")):
        with pytest.raises(UnknownCommandError) as info:
            parse(f"{typo} demo")
        assert info.value.suggestions == [meant], typo
        assert f"Did you mean `{meant}`?" in info.value.message
