"""Who an approval request names as its approvers (``Permissions.approvers``): exactly those
``Permissions.check`` lets approve that execution (issue 12, item 8: with self-approval off
the request said "Approvers: @bob" to bob, who had started it and could not approve)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.ops.permissions import Permission, Permissions
from storage import bot_store
from storage.db import SessionFactory, make_engine, make_session_factory, transaction

ADMIN, BOB, CAROL = "UADMIN", "UBOB", "UCAROL"
GROUP = "SGROUP"


@pytest.fixture
def sessions(database_url: str) -> Iterator[SessionFactory]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _permissions(sessions: SessionFactory, *admins: str) -> Permissions:
    return Permissions(
        admins=frozenset(admins),
        sessions=sessions,
        group_members=lambda group: frozenset({BOB, CAROL}) if group == GROUP else frozenset(),
    )


def _grant(sessions: SessionFactory, role: str, *subjects: str) -> None:
    with transaction(sessions) as session:
        for subject in subjects:
            bot_store.add_access(
                session=session,
                pipeline="web",
                role=role,  # type: ignore[arg-type]
                subject=subject,
                added_by=ADMIN,
            )


def _self_approval_off(sessions: SessionFactory) -> None:
    with transaction(sessions) as session:
        bot_store.set_policy(
            session=session, pipeline="web", no_self_approval=True, updated_by=ADMIN
        )


def _may_approve(permissions: Permissions, user: str, starter: str | None) -> bool:
    return permissions.check(
        user_id=user, permission=Permission.APPROVE, pipeline="web", execution_starter=starter
    ).allowed


def test_operators_approve_a_pipeline_without_approvers_but_not_their_own_execution(
    sessions: SessionFactory,
) -> None:
    _grant(sessions, "operators", BOB)
    permissions = _permissions(sessions, ADMIN)
    assert permissions.approvers("web", execution_starter=BOB) == (BOB,)  # policy off
    _self_approval_off(sessions)
    # bob started it: only the admin may approve, and the request says so
    assert permissions.approvers("web", execution_starter=BOB) == (ADMIN,)
    assert not _may_approve(permissions, BOB, BOB) and _may_approve(permissions, ADMIN, BOB)
    assert permissions.approvers("web", execution_starter=CAROL) == (BOB,)
    assert permissions.approvers("web") == (BOB,)


def test_the_approvers_list_wins_over_the_operators_and_leaves_out_the_starter(
    sessions: SessionFactory,
) -> None:
    _grant(sessions, "operators", BOB)
    _grant(sessions, "approvers", BOB, CAROL)
    _self_approval_off(sessions)
    permissions = _permissions(sessions, ADMIN)
    assert permissions.approvers("web", execution_starter=BOB) == (CAROL,)
    assert permissions.approvers("web", execution_starter=ADMIN) == (BOB, CAROL)


def test_a_group_is_named_as_it_is(sessions: SessionFactory) -> None:
    """A group cannot be narrowed to its members other than the starter: it is named, and
    the starter's own click is still refused."""
    _grant(sessions, "approvers", GROUP)
    _self_approval_off(sessions)
    permissions = _permissions(sessions, ADMIN)
    assert permissions.approvers("web", execution_starter=BOB) == (GROUP,)
    assert not _may_approve(permissions, BOB, BOB) and _may_approve(permissions, CAROL, BOB)


def test_without_lists_only_admins_approve_and_are_named(sessions: SessionFactory) -> None:
    permissions = _permissions(sessions, ADMIN, "UADMIN2")
    assert permissions.approvers("web") == (ADMIN, "UADMIN2")
    _self_approval_off(sessions)
    # an admin who started it may not approve it (the rule binds admins too)
    assert permissions.approvers("web", execution_starter=ADMIN) == ("UADMIN2",)
    assert not _may_approve(permissions, ADMIN, ADMIN)
    lone = _permissions(sessions, ADMIN)
    assert lone.approvers("web", execution_starter=ADMIN) == ()  # nobody may


def test_trial_mode_names_nobody_in_particular(sessions: SessionFactory) -> None:
    permissions = _permissions(sessions)
    assert permissions.approvers("web", execution_starter=BOB) == ()
    _grant(sessions, "approvers", BOB, CAROL)
    _self_approval_off(sessions)
    assert permissions.approvers("web", execution_starter=BOB) == (CAROL,)
