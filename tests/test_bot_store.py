"""The bot's storage: access lists, policies, audit, click idempotency, execution starters."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session

from storage import bot_store
from storage.db import SessionFactory, make_engine, make_session_factory, transaction, utc

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def sessions(database_url: str) -> Iterator[SessionFactory]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


# --- access lists ------------------------------------------------------------------------------


def test_access_lists_add_remove_and_list(sessions: SessionFactory) -> None:
    with transaction(sessions) as session:
        assert bot_store.add_access(
            session=session, pipeline="web", role="approvers", subject="U2", added_by="U9", at=T0
        )
        assert bot_store.add_access(
            session=session, pipeline="web", role="operators", subject="S1", added_by="U9"
        )
        assert bot_store.add_access(
            session=session, pipeline="web", role="operators", subject="U1", added_by="U9"
        )
        assert bot_store.add_access(
            session=session, pipeline="api", role="operators", subject="U1", added_by="U9"
        )
        # Already there: no error, nothing added, the transaction stays usable.
        assert not bot_store.add_access(
            session=session, pipeline="web", role="operators", subject="U1", added_by="U8"
        )
        # The same subject may hold both roles.
        assert bot_store.add_access(
            session=session, pipeline="web", role="approvers", subject="U1", added_by="U9"
        )

    with sessions() as session:
        rows = bot_store.list_access(session=session, pipeline="web")
        assert [(r.role, r.subject) for r in rows] == [
            ("approvers", "U2"),
            ("approvers", "U1"),
            ("operators", "S1"),
            ("operators", "U1"),
        ]
        assert rows[0].added_by == "U9"
        assert utc(rows[0].added_at) == T0
        assert rows[-1].added_by == "U9"  # the first add stands
        approvers = bot_store.list_access(session=session, pipeline="web", role="approvers")
        assert [r.subject for r in approvers] == ["U2", "U1"]
        assert bot_store.list_access(session=session, pipeline="nope") == []

    with transaction(sessions) as session:
        assert bot_store.remove_access(
            session=session, pipeline="web", role="operators", subject="U1"
        )
        assert not bot_store.remove_access(
            session=session, pipeline="web", role="operators", subject="U1"
        )
    with sessions() as session:
        assert [r.subject for r in bot_store.list_access(session=session, pipeline="web")] == [
            "U2",
            "U1",
            "S1",
        ]
        assert len(bot_store.list_access(session=session, pipeline="api")) == 1


def test_unknown_role_is_refused(sessions: SessionFactory) -> None:
    with transaction(sessions) as session, pytest.raises(ValueError, match="role"):
        bot_store.add_access(
            session=session,
            pipeline="web",
            role="owners",  # type: ignore[arg-type]
            subject="U1",
            added_by="U9",
        )


def test_policy_get_and_set(sessions: SessionFactory) -> None:
    with sessions() as session:
        assert bot_store.get_policy(session=session, pipeline="web") is None

    with transaction(sessions) as session:
        policy = bot_store.set_policy(
            session=session, pipeline="web", no_self_approval=True, updated_by="U9", at=T0
        )
        assert policy.no_self_approval
        # Set again in the same session: the returned row reflects the new values.
        later = T0 + timedelta(hours=1)
        policy = bot_store.set_policy(
            session=session, pipeline="web", no_self_approval=False, updated_by="U8", at=later
        )
        assert not policy.no_self_approval
        assert policy.updated_by == "U8"

    with transaction(sessions) as session:
        bot_store.set_policy(
            session=session, pipeline="web", no_self_approval=True, updated_by="U7"
        )
        bot_store.add_access(
            session=session, pipeline="web", role="operators", subject="U1", added_by="U9"
        )
    with sessions() as session:
        stored = bot_store.get_policy(session=session, pipeline="web")
        assert stored is not None
        assert stored.no_self_approval
        assert stored.updated_by == "U7"
        assert utc(stored.updated_at) > T0


# --- audit -------------------------------------------------------------------------------------


def test_audit_is_listed_newest_first_with_filter_limit_and_paging(
    sessions: SessionFactory,
) -> None:
    with transaction(sessions) as session:
        for n in range(6):
            bot_store.append_audit(
                session=session,
                user_id=f"U{n}",
                kind="command" if n % 2 else "click",
                what="start",
                outcome="ok",
                pipeline="web" if n % 2 == 0 else "api",
                at=T0 + timedelta(minutes=n),
            )
        entry = bot_store.append_audit(
            session=session,
            user_id="U7",
            channel_id="C1",
            kind="view",
            what="approve",
            pipeline="web",
            execution_id="e-1",
            outcome="refused",
            detail="You need to be an approver of web.",
        )
        assert entry.id is not None

    with sessions() as session:
        everything = bot_store.list_audit(session=session)
        assert [e.user_id for e in everything] == ["U7", "U5", "U4", "U3", "U2", "U1", "U0"]
        newest = everything[0]
        assert (newest.channel_id, newest.kind, newest.what) == ("C1", "view", "approve")
        assert (newest.execution_id, newest.outcome) == ("e-1", "refused")
        assert newest.detail == "You need to be an approver of web."
        assert utc(everything[-1].at) == T0

        web = bot_store.list_audit(session=session, pipeline="web")
        assert [e.user_id for e in web] == ["U7", "U4", "U2", "U0"]
        assert [e.user_id for e in bot_store.list_audit(session=session, limit=2)] == ["U7", "U5"]
        page = bot_store.list_audit(session=session, pipeline="web", limit=2)
        rest = bot_store.list_audit(session=session, pipeline="web", before_id=page[-1].id)
        assert [e.user_id for e in page + rest] == ["U7", "U4", "U2", "U0"]
        assert bot_store.list_audit(session=session, pipeline="none") == []


def test_audit_refuses_unknown_kind_or_outcome(sessions: SessionFactory) -> None:
    with transaction(sessions) as session:
        with pytest.raises(ValueError, match="kind"):
            bot_store.append_audit(
                session=session,
                user_id="U1",
                kind="shout",  # type: ignore[arg-type]
                what="start",
                outcome="ok",
            )
        with pytest.raises(ValueError, match="outcome"):
            bot_store.append_audit(
                session=session,
                user_id="U1",
                kind="command",
                what="start",
                outcome="maybe",  # type: ignore[arg-type]
            )


# --- clicks ------------------------------------------------------------------------------------

KEY = "approve:web:e-1:Approve:Manual"


def test_record_click_once_keeps_the_first_decision(sessions: SessionFactory) -> None:
    with transaction(sessions) as session:
        row, created = bot_store.record_click_once(
            session=session, key=KEY, user_id="U1", outcome="approved", at=T0
        )
        assert created
        assert (row.key, row.user_id, row.outcome) == (KEY, "U1", "approved")
        # A double click within the same transaction.
        again, created = bot_store.record_click_once(
            session=session, key=KEY, user_id="U1", outcome="approved"
        )
        assert not created
        assert again.user_id == "U1"

    with transaction(sessions) as session:
        row, created = bot_store.record_click_once(
            session=session, key=KEY, user_id="U2", outcome="rejected"
        )
        assert not created
        assert (row.user_id, row.outcome, utc(row.at)) == ("U1", "approved", T0)
        other, created = bot_store.record_click_once(
            session=session, key=KEY.replace("e-1", "e-2"), user_id="U2", outcome="rejected"
        )
        assert created
        assert other.user_id == "U2"


def test_click_outcome_can_be_updated_or_forgotten(sessions: SessionFactory) -> None:
    with transaction(sessions) as session:
        bot_store.record_click_once(session=session, key=KEY, user_id="U1", outcome="pending")
    with transaction(sessions) as session:
        assert bot_store.set_click_outcome(session=session, key=KEY, outcome="approved")
        assert not bot_store.set_click_outcome(session=session, key="other", outcome="x")
    with sessions() as session:
        row = bot_store.get_click(session=session, key=KEY)
        assert row is not None
        assert row.outcome == "approved"

    # The action failed: forget the click so that the decision can be made again.
    with transaction(sessions) as session:
        assert bot_store.forget_click(session=session, key=KEY)
        assert not bot_store.forget_click(session=session, key=KEY)
    with transaction(sessions) as session:
        row, created = bot_store.record_click_once(
            session=session, key=KEY, user_id="U2", outcome="approved"
        )
        assert created
        assert row.user_id == "U2"


def _click_in_own_process(database_url: str, user_id: str) -> tuple[str, bool]:
    """A click through its own engine, as another process of the bot would make it."""
    engine = make_engine(database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            row, created = bot_store.record_click_once(
                session=session, key=KEY, user_id=user_id, outcome="approved"
            )
            return row.user_id, created
    finally:
        engine.dispose()


def test_concurrent_clicks_create_exactly_one_record(database_url: str) -> None:
    clicks = 8
    barrier = threading.Barrier(clicks)
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def click(user_id: str) -> None:
        try:
            barrier.wait()
            results.append(_click_in_own_process(database_url, user_id))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=click, args=(f"U{n}",)) for n in range(clicks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(results) == clicks
    winners = [user for user, created in results if created]
    assert len(winners) == 1
    assert {user for user, _ in results} == set(winners)


def test_a_click_waiting_on_an_open_first_click_sees_it(database_url: str) -> None:
    """The second click arrives while the first click's transaction is still open."""
    first_inserted = threading.Event()
    second: list[tuple[str, bool]] = []
    engine = make_engine(database_url)
    try:
        sessions = make_session_factory(engine)

        def second_click() -> None:
            first_inserted.wait(timeout=30)
            second.append(_click_in_own_process(database_url, "U2"))

        thread = threading.Thread(target=second_click)
        thread.start()
        with transaction(sessions) as session:
            _, created = bot_store.record_click_once(
                session=session, key=KEY, user_id="U1", outcome="approved"
            )
            assert created
            first_inserted.set()
            time.sleep(0.3)  # the second click is now blocked on our uncommitted row
        thread.join(timeout=60)
    finally:
        engine.dispose()
    assert second == [("U1", False)]


# --- execution starters ------------------------------------------------------------------------


def test_execution_starter_is_recorded_once(sessions: SessionFactory) -> None:
    with sessions() as session:
        assert bot_store.get_starter(session=session, execution_id="e-1") is None
    with transaction(sessions) as session:
        assert bot_store.record_starter(
            session=session, execution_id="e-1", pipeline="web", user_id="U1", at=T0
        )
        assert not bot_store.record_starter(
            session=session, execution_id="e-1", pipeline="web", user_id="U2"
        )
    with sessions() as session:
        starter = bot_store.get_starter(session=session, execution_id="e-1")
        assert starter is not None
        assert (starter.pipeline, starter.user_id, utc(starter.at)) == ("web", "U1", T0)


def test_starters_are_read_in_one_query(sessions: SessionFactory) -> None:
    with transaction(sessions) as session:
        bot_store.record_starter(session=session, execution_id="e1", pipeline="web", user_id="U1")
        bot_store.record_starter(session=session, execution_id="e2", pipeline="web", user_id="U2")
    with sessions() as session:
        assert bot_store.starters(session=session, execution_ids=["e1", "e2", "e3", ""]) == {
            "e1": "U1",
            "e2": "U2",
        }
        assert bot_store.starters(session=session, execution_ids=[]) == {}


# --- who did it (issue 12, item 11) ------------------------------------------------------------


def _audit(session: Session, **fields: object) -> None:
    values: dict[str, object] = {
        "user_id": "U1",
        "kind": "command",
        "what": "retry",
        "outcome": "ok",
        "pipeline": "web",
        "at": T0,
    }
    values.update(fields)
    bot_store.append_audit(session=session, **values)  # type: ignore[arg-type]


def test_last_actor_finds_who_did_it_by_execution_and_stage(sessions: SessionFactory) -> None:
    with transaction(sessions) as session:
        _audit(session, user_id="U1", execution_id="e1", detail=bot_store.stage_detail("Build"))
        _audit(session, user_id="U2", execution_id="e1", detail=bot_store.stage_detail("Deploy"))
        _audit(session, user_id="U3", execution_id="e1", what="pipebot.retry_all")  # no stage
        _audit(session, user_id="U4", execution_id="e1", outcome="refused")
        _audit(session, user_id="U5", execution_id="e2")
        _audit(session, user_id="U6", execution_id="e1", pipeline="api")
    retries = ("retry", "pipebot.retry_failed", "pipebot.retry_all")
    with sessions() as session:

        def who(**narrow: object) -> str | None:
            entry = bot_store.last_actor(
                session=session,
                pipeline="web",
                operations=retries,
                **narrow,  # type: ignore[arg-type]
            )
            return entry.user_id if entry is not None else None

        # The newest ok entry; one naming no stage (a button) stands for any stage.
        assert who(execution_id="e1") == "U3"
        assert who(execution_id="e1", stage="Build") == "U3"
        assert who(execution_id="e2") == "U5"
        assert who(execution_id="e3") is None
        assert (
            bot_store.last_actor(session=session, pipeline="web", operations=("disable",)) is None
        )


def test_last_actor_by_stage_and_time_skips_other_stages_and_older_changes(
    sessions: SessionFactory,
) -> None:
    with transaction(sessions) as session:
        _audit(session, user_id="U1", what="disable", detail=bot_store.stage_detail("Prod", "x"))
        _audit(
            session,
            user_id="U2",
            what="disable",
            detail=bot_store.stage_detail("Staging", "y"),
            at=T0 + timedelta(minutes=1),
        )
    with sessions() as session:

        def who(stage: str, around: datetime | None) -> str | None:
            entry = bot_store.last_actor(
                session=session,
                pipeline="web",
                operations=("disable",),
                stage=stage,
                around=around,
            )
            return entry.user_id if entry is not None else None

        assert who("Prod", None) == "U1"
        assert who("Staging", None) == "U2"
        assert who("Prod", T0 + timedelta(seconds=2)) == "U1"  # the audit follows the call
        # Disabled again an hour later, outside Slack: not pinned on whoever did it before.
        assert who("Prod", T0 + timedelta(hours=1)) is None


def test_stage_detail_round_trips() -> None:
    assert bot_store.detail_stage(bot_store.stage_detail("Build")) == "Build"
    assert bot_store.detail_stage(bot_store.stage_detail("Prod", "freeze: until 12")) == "Prod"
    assert bot_store.detail_stage("resumed after web") is None
    assert bot_store.detail_stage(None) is None
