"""Access lists and the audit log (``bot/slack/access.py``)."""

from __future__ import annotations

from typing import Any

from bot.slack.access import access_blocks, audit_blocks
from tests.blockcheck import (
    E1,
    ago,
    check_message,
    texts,
)

# --------------------------------------------------------------------------- access and audit


def test_access_blocks_mention_users_and_groups() -> None:
    blocks = check_message(
        access_blocks(
            pipeline="web<app>",
            operators=["U111", "S222", "<!channel>"],
            approvers=[],
            no_self_approval=True,
            admins=["UADMIN1"],
        )
    )
    text = texts(blocks)
    assert blocks[0]["text"]["text"] == "Access to web<app>"
    assert (
        "*Operators* (start, stop, retry, rollback, override, enable/disable, create, edit, "
        "delete, subscribe/unsubscribe): <@U111>, <!subteam^S222>" in text
    )
    assert "&lt;!channel&gt;" in text
    assert "*Approvers* (approve, reject): nobody listed: the operators approve" in text
    assert "*Self-approval:* refused" in text
    assert "*Admins* (every right, every pipeline): <@UADMIN1>" in text
    trial = check_message(
        access_blocks(
            pipeline="p", operators=[], approvers=["U1AB"], no_self_approval=False, admins=[]
        )
    )
    assert "trial mode" in texts(trial) and "*Self-approval:* allowed" in texts(trial)
    many = check_message(
        access_blocks(
            pipeline="p",
            operators=[f"U{i:08d}" for i in range(1000)],
            approvers=[f"S{i:08d}" for i in range(1000)],
            no_self_approval=False,
            admins=[f"W{i:08d}" for i in range(1000)],
        )
    )
    assert "more" in texts(many)


class Entry:
    def __init__(self, i: int, **overrides: Any) -> None:
        self.at = ago(minutes=i)
        self.user_id = "U123"
        self.channel_id: str | None = "C999"
        self.kind = "command"
        self.what = "approve"
        self.pipeline: str | None = "web-app"
        self.execution_id: str | None = E1
        self.outcome = "ok"
        self.detail: str | None = None
        self.__dict__.update(overrides)


def test_audit_blocks() -> None:
    entries = [
        Entry(1, detail="approved <Gate> & went on"),
        Entry(2, pipeline=None, execution_id=None, channel_id=None, outcome="refused"),
    ]
    blocks = check_message(audit_blocks(entries=entries, pipeline="web-app"))
    text = texts(blocks)
    assert blocks[0]["text"]["text"] == "Audit · web-app"
    assert (
        "<@U123> ran `/pipeline approve` *web-app* `11111111` → done in <#C999> — "
        "approved &lt;Gate&gt;" in text
    )
    assert "<@U123> ran `/pipeline approve` → refused" in text
    assert "Nothing recorded yet" in texts(check_message(audit_blocks(entries=[])))
    many = [Entry(i, detail="<&>" * 1000, pipeline="&" * 100) for i in range(500)]
    assert "more entries not shown" in texts(check_message(audit_blocks(entries=many)))


def test_audit_lines_say_what_was_done_in_words() -> None:
    entries = [
        Entry(1, kind="click", what="pipebot.approve"),
        Entry(2, kind="view", what="reject"),
        Entry(3, kind="command", what="start", outcome="error"),
        Entry(
            4,
            kind="click",
            what="pipebot.start",
            outcome="refused",
            detail="Only admins may act. Admins: <@UADMIN>, <!subteam^S0AB|@ops> <!channel>",
        ),
        Entry(5, kind="notifier", what="suspend", user_id="pipebot", outcome="error"),
    ]
    text = texts(check_message(audit_blocks(entries=entries, command="/deploy")))
    assert "<@U123> clicked *Approve* *web-app*" in text and "pipebot.approve" not in text
    assert "submitted the *Reject* form" in text
    assert "ran `/deploy start` *web-app* `11111111` → failed" in text
    # Who may act, named in a refusal: real mentions; anything else stays escaped.
    assert "Admins: <@UADMIN>, <!subteam^S0AB> &lt;!channel&gt;" in text
    assert "pipebot suspended the channel's subscription" in text


def test_the_access_card_suggests_the_other_self_approval_switch() -> None:
    def hint(no_self_approval: bool) -> str:
        blocks = access_blocks(
            pipeline="web",
            operators=[],
            approvers=[],
            no_self_approval=no_self_approval,
            admins=["U1"],
        )
        return texts(check_message(blocks)).splitlines()[-1]

    assert "`/pipeline access web self-approval off`" in hint(False)
    assert "`/pipeline access web self-approval on`" in hint(True)


def test_the_operators_rights_are_every_operate_command() -> None:
    from bot.ops.permissions import Permission
    from bot.slack.access import APPROVER_RIGHTS, OPERATOR_RIGHTS
    from handlers.grammar import REGISTRY

    said = set(OPERATOR_RIGHTS.replace("/", ", ").split(", "))
    assert said == {s.name for s in REGISTRY if s.permission == Permission.OPERATE}
    assert set(APPROVER_RIGHTS.split(", ")) == {
        s.name for s in REGISTRY if s.permission == Permission.APPROVE
    }
