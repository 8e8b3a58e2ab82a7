"""The permission policy: every rule, the group cache, failing closed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlmodel import Session

from bot.ops.permissions import Decision, Permissions, mention
from storage import bot_store
from storage.db import SessionFactory, make_engine, make_session_factory, transaction

ADMIN = "U9"
PIPELINE = "web-release"


class FakeGroups:
    """usergroups.users.list, counting calls; a group listed in ``failing`` raises."""

    def __init__(self, groups: dict[str, frozenset[str]]) -> None:
        self.groups = groups
        self.calls: list[str] = []
        self.failing: set[str] = set()

    def __call__(self, group: str) -> frozenset[str]:
        self.calls.append(group)
        if group in self.failing:
            raise RuntimeError("slack said no")
        return self.groups.get(group, frozenset())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sessions(database_url: str) -> Iterator[SessionFactory]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def groups() -> FakeGroups:
    return FakeGroups({"S2": frozenset({"U3", "U4"}), "S5": frozenset({"U5"})})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _permissions(
    sessions: SessionFactory,
    groups: FakeGroups,
    clock: FakeClock,
    *,
    admins: frozenset[str] = frozenset({ADMIN}),
) -> Permissions:
    return Permissions(
        admins=admins, sessions=sessions, group_members=groups, cache_seconds=60.0, clock=clock
    )


@pytest.fixture
def permissions(sessions: SessionFactory, groups: FakeGroups, clock: FakeClock) -> Permissions:
    return _permissions(sessions, groups, clock)


def _grant(sessions: SessionFactory, role: bot_store.Role, *subjects: str) -> None:
    with transaction(sessions) as session:
        for subject in subjects:
            bot_store.add_access(
                session=session, pipeline=PIPELINE, role=role, subject=subject, added_by=ADMIN
            )


def _no_self_approval(sessions: SessionFactory, on: bool = True) -> None:
    with transaction(sessions) as session:
        bot_store.set_policy(
            session=session, pipeline=PIPELINE, no_self_approval=on, updated_by=ADMIN
        )


def test_mentions_render_users_and_groups() -> None:
    assert mention("U1") == "<@U1>"
    assert mention("W1") == "<@W1>"
    assert mention("S2") == "<!subteam^S2>"


def test_decision_is_truthy_when_allowed() -> None:
    assert Decision(True, "ok")
    assert not Decision(False, "no")


def test_trial_mode_allows_everything(
    sessions: SessionFactory, groups: FakeGroups, clock: FakeClock
) -> None:
    trial = _permissions(sessions, groups, clock, admins=frozenset())
    assert trial.trial_mode
    for permission in ("read", "operate", "approve", "admin"):
        decision = trial.check(user_id="U1", permission=permission, pipeline=PIPELINE)
        assert decision.allowed, permission
    assert trial.check(user_id="U1", permission="operate", pipeline=None).allowed
    assert "Trial mode" in trial.check(user_id="U1", permission="admin", pipeline=None).reason


def test_read_is_always_allowed(permissions: Permissions, groups: FakeGroups) -> None:
    assert not permissions.trial_mode
    assert permissions.check(user_id="U1", permission="read", pipeline=PIPELINE).allowed
    assert permissions.check(user_id="U1", permission="read", pipeline=None).allowed
    assert groups.calls == []


def test_admin_permission_is_for_admins_only(permissions: Permissions) -> None:
    assert permissions.check(user_id=ADMIN, permission="admin", pipeline=None).allowed
    refused = permissions.check(user_id="U1", permission="admin", pipeline=PIPELINE)
    assert not refused.allowed
    assert refused.reason == "You need to be a pipebot admin. Admins: <@U9>."


def test_a_pipeline_without_lists_is_for_admins_only(permissions: Permissions) -> None:
    for permission in ("operate", "approve"):
        assert permissions.check(user_id=ADMIN, permission=permission, pipeline=PIPELINE)
    refused = permissions.check(user_id="U1", permission="operate", pipeline=PIPELINE)
    assert not refused.allowed
    assert refused.reason == (
        "Only admins may operate web-release: it has no operators list. Admins: <@U9>."
    )
    refused = permissions.check(user_id="U1", permission="approve", pipeline=PIPELINE)
    assert not refused.allowed
    assert "it has no approvers or operators list" in refused.reason
    assert "Admins: <@U9>." in refused.reason


def test_no_pipeline_means_admins_only(permissions: Permissions) -> None:
    assert permissions.check(user_id=ADMIN, permission="operate", pipeline=None).allowed
    refused = permissions.check(user_id="U1", permission="operate", pipeline=None)
    assert not refused.allowed
    assert "Admins: <@U9>." in refused.reason


def test_operators_operate_directly_or_through_a_group(
    permissions: Permissions, sessions: SessionFactory
) -> None:
    _grant(sessions, "operators", "U1", "S2")
    _grant(sessions, "approvers", "U7")
    assert permissions.check(user_id="U1", permission="operate", pipeline=PIPELINE).allowed
    assert permissions.check(user_id="U3", permission="operate", pipeline=PIPELINE).allowed
    assert permissions.check(user_id=ADMIN, permission="operate", pipeline=PIPELINE).allowed
    # An approver is not an operator.
    refused = permissions.check(user_id="U7", permission="operate", pipeline=PIPELINE)
    assert not refused.allowed
    assert refused.reason == (
        "You need to be an operator of web-release. Operators: <@U1>, <!subteam^S2>. Admins: <@U9>."
    )
    # Lists of one pipeline say nothing about another.
    assert not permissions.check(user_id="U1", permission="operate", pipeline="other").allowed


def test_approvers_approve_and_operators_do_not_when_there_is_a_list(
    permissions: Permissions, sessions: SessionFactory
) -> None:
    _grant(sessions, "operators", "U1")
    _grant(sessions, "approvers", "U7", "S2")
    assert permissions.check(user_id="U7", permission="approve", pipeline=PIPELINE).allowed
    assert permissions.check(user_id="U4", permission="approve", pipeline=PIPELINE).allowed
    assert permissions.check(user_id=ADMIN, permission="approve", pipeline=PIPELINE).allowed
    refused = permissions.check(user_id="U1", permission="approve", pipeline=PIPELINE)
    assert not refused.allowed
    assert refused.reason == (
        "You need to be an approver of web-release. Approvers: <@U7>, <!subteam^S2>. Admins: <@U9>."
    )


def test_without_approvers_the_operators_approve(
    permissions: Permissions, sessions: SessionFactory
) -> None:
    _grant(sessions, "operators", "U1", "S5")
    assert permissions.check(user_id="U1", permission="approve", pipeline=PIPELINE).allowed
    assert permissions.check(user_id="U5", permission="approve", pipeline=PIPELINE).allowed
    refused = permissions.check(user_id="U2", permission="approve", pipeline=PIPELINE)
    assert not refused.allowed
    assert refused.reason == (
        "You need to be an operator of web-release (it has no approvers list, so its operators "
        "approve). Operators: <@U1>, <!subteam^S5>. Admins: <@U9>."
    )


def test_no_self_approval_binds_starters_even_admins(
    permissions: Permissions, sessions: SessionFactory
) -> None:
    _grant(sessions, "approvers", "U1", "U2")
    # Policy off: the starter may approve their own execution.
    assert permissions.check(
        user_id="U1", permission="approve", pipeline=PIPELINE, execution_starter="U1"
    ).allowed

    _no_self_approval(sessions)
    refused = permissions.check(
        user_id="U1", permission="approve", pipeline=PIPELINE, execution_starter="U1"
    )
    assert not refused.allowed
    assert "does not allow self-approval" in refused.reason
    assert "admins too" in refused.reason
    admin = permissions.check(
        user_id=ADMIN, permission="approve", pipeline=PIPELINE, execution_starter=ADMIN
    )
    assert not admin.allowed
    assert "admins too" in admin.reason
    # Someone else approves; an execution not started from Slack has no known starter.
    assert permissions.check(
        user_id="U2", permission="approve", pipeline=PIPELINE, execution_starter="U1"
    ).allowed
    assert permissions.check(user_id="U1", permission="approve", pipeline=PIPELINE).allowed
    # The starter still operates their execution (stop, retry).
    _grant(sessions, "operators", "U1")
    assert permissions.check(
        user_id="U1", permission="operate", pipeline=PIPELINE, execution_starter="U1"
    ).allowed


def test_no_self_approval_holds_in_trial_mode(
    sessions: SessionFactory, groups: FakeGroups, clock: FakeClock
) -> None:
    trial = _permissions(sessions, groups, clock, admins=frozenset())
    _no_self_approval(sessions)
    assert not trial.check(
        user_id="U1", permission="approve", pipeline=PIPELINE, execution_starter="U1"
    ).allowed
    assert trial.check(
        user_id="U2", permission="approve", pipeline=PIPELINE, execution_starter="U1"
    ).allowed


def test_group_members_are_cached_per_group(
    permissions: Permissions, sessions: SessionFactory, groups: FakeGroups, clock: FakeClock
) -> None:
    _grant(sessions, "operators", "U1", "S2", "S5")
    # A directly listed user needs no lookup.
    assert permissions.check(user_id="U1", permission="operate", pipeline=PIPELINE).allowed
    assert groups.calls == []

    assert permissions.check(user_id="U5", permission="operate", pipeline=PIPELINE).allowed
    assert groups.calls == ["S2", "S5"]
    assert permissions.check(user_id="U3", permission="operate", pipeline=PIPELINE).allowed
    assert permissions.check(user_id="U5", permission="operate", pipeline=PIPELINE).allowed
    assert groups.calls == ["S2", "S5"]

    # Membership changes show once the cache expires.
    groups.groups["S2"] = frozenset({"U6"})
    clock.now += 59
    assert permissions.check(user_id="U3", permission="operate", pipeline=PIPELINE).allowed
    assert groups.calls == ["S2", "S5"]
    clock.now += 2
    assert not permissions.check(user_id="U3", permission="operate", pipeline=PIPELINE).allowed
    assert permissions.check(user_id="U6", permission="operate", pipeline=PIPELINE).allowed
    assert groups.calls == ["S2", "S5", "S2", "S5"]


def test_a_failed_group_lookup_denies_and_is_not_cached(
    permissions: Permissions, sessions: SessionFactory, groups: FakeGroups
) -> None:
    _grant(sessions, "approvers", "U1", "S2")
    groups.failing.add("S2")
    refused = permissions.check(user_id="U3", permission="approve", pipeline=PIPELINE)
    assert not refused.allowed
    assert "membership of <!subteam^S2> couldn't be checked" in refused.reason
    assert "Approvers: <@U1>, <!subteam^S2>. Admins: <@U9>." in refused.reason
    # Admins and directly listed users don't depend on the lookup.
    assert permissions.check(user_id="U1", permission="approve", pipeline=PIPELINE).allowed
    assert permissions.check(user_id=ADMIN, permission="approve", pipeline=PIPELINE).allowed
    assert groups.calls == ["S2"]

    groups.failing.clear()
    assert permissions.check(user_id="U3", permission="approve", pipeline=PIPELINE).allowed
    assert groups.calls == ["S2", "S2"]


def test_another_group_can_grant_when_one_lookup_fails(
    permissions: Permissions, sessions: SessionFactory, groups: FakeGroups
) -> None:
    _grant(sessions, "operators", "S2", "S5")
    groups.failing.add("S2")
    assert permissions.check(user_id="U5", permission="operate", pipeline=PIPELINE).allowed
    refused = permissions.check(user_id="U8", permission="operate", pipeline=PIPELINE)
    assert not refused.allowed
    assert "couldn't be checked" in refused.reason


def test_access_lists_summarise_a_pipeline(
    permissions: Permissions, sessions: SessionFactory
) -> None:
    _grant(sessions, "operators", "U1", "S2")
    lists = permissions.access_lists(PIPELINE)
    assert (lists.operators, lists.approvers, lists.no_self_approval) == (("U1", "S2"), (), False)
    assert lists.approving_role == "operators"
    _grant(sessions, "approvers", "U7")
    _no_self_approval(sessions)
    lists = permissions.access_lists(PIPELINE)
    assert (lists.approvers, lists.no_self_approval, lists.approving_role) == (
        ("U7",),
        True,
        "approvers",
    )


def test_admins_and_trial_mode_stay_off_the_database(
    sessions: SessionFactory, groups: FakeGroups, clock: FakeClock
) -> None:
    sessions.engine.dispose()

    class NoDatabase(SessionFactory):
        def __call__(self) -> Session:
            raise AssertionError("the database was read")

    offline = NoDatabase(sessions.engine)
    admins = _permissions(offline, groups, clock)
    trial = _permissions(offline, groups, clock, admins=frozenset())
    for permission in ("operate", "approve", "admin"):
        assert admins.check(user_id=ADMIN, permission=permission, pipeline=PIPELINE)
        assert trial.check(user_id="U1", permission=permission, pipeline=PIPELINE)
    assert admins.check(
        user_id=ADMIN, permission="approve", pipeline=PIPELINE, execution_starter="U1"
    )
    assert not admins.check(user_id="U1", permission="admin", pipeline=PIPELINE)
