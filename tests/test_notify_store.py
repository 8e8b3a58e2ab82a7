"""Notification storage: subscriptions, posted messages and events, outbox, lease, polls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from sqlmodel import Session, col, select

from storage import lease_store, notify_store
from storage.db import SessionFactory, make_engine, make_session_factory, transaction, utc
from storage.models import OutboxMessage

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
R = TypeVar("R")


@pytest.fixture
def sessions(database_url: str) -> Iterator[SessionFactory]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _in_own_process(database_url: str, work: Callable[[Session], R]) -> R:
    """Run ``work`` in one write transaction through its own engine, as another process would."""
    engine = make_engine(database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            return work(session)
    finally:
        engine.dispose()


def _race(count: int, work: Callable[[int], R]) -> list[R]:
    """Start ``work(n)`` on ``count`` threads at once; every call must return."""
    barrier = threading.Barrier(count)
    results: list[R] = []
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            barrier.wait()
            results.append(work(n))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(results) == count
    return results


# --- subscriptions -----------------------------------------------------------------------------


def test_subscribe_creates_then_replaces_filter_and_digest(sessions: SessionFactory) -> None:
    with transaction(sessions) as session:
        row, created = notify_store.subscribe(
            session=session, pipeline="web", channel_id="C1", created_by="U1", at=T0
        )
        assert created
        assert (row.pipeline, row.channel_id, row.events, row.digest_time) == (
            "web",
            "C1",
            "all",
            None,
        )
        row, created = notify_store.subscribe(
            session=session,
            pipeline="web",
            channel_id="C1",
            created_by="U2",
            events="failures",
            digest_time="09:00",
        )
        assert not created
        assert (row.events, row.digest_time) == ("failures", "09:00")
        assert row.created_by == "U1"  # the first subscriber stays on record

    with transaction(sessions) as session:
        row, created = notify_store.subscribe(
            session=session, pipeline="web", channel_id="C1", created_by="U3", events="approvals"
        )
        assert not created
        # What is not given stays: the digest time.
        assert (row.events, row.digest_time) == ("approvals", "09:00")
        assert (row.created_by, utc(row.created_at)) == ("U1", T0)
        row, _ = notify_store.subscribe(
            session=session, pipeline="web", channel_id="C1", created_by="U3", digest_time=None
        )
        assert (row.events, row.digest_time) == ("approvals", None)


def test_daily_digest_is_due_once_a_day(sessions: SessionFactory) -> None:
    with transaction(sessions) as session:
        for pipeline, channel, time_of_day in [
            ("web", "C1", "09:00"),
            ("api", "C1", "09:00"),
            ("db", "C2", "17:30"),
            ("ops", "C3", None),
        ]:
            notify_store.subscribe(
                session=session,
                pipeline=pipeline,
                channel_id=channel,
                created_by="U1",
                digest_time=time_of_day,
            )
        # Set after today's time: today's counts as sent, the first goes out tomorrow.
        notify_store.subscribe(
            session=session,
            pipeline="late",
            channel_id="C4",
            created_by="U1",
            digest_time="08:00",
            digest_sent_on="2026-11-28",
        )

    def due(today: str, time_of_day: str) -> list[tuple[str, str]]:
        with sessions() as session:
            rows = notify_store.due_digests(session=session, today=today, time_of_day=time_of_day)
            return [(r.channel_id, r.pipeline) for r in rows]

    assert due("2026-11-28", "08:59") == []
    assert due("2026-11-28", "09:00") == [("C1", "api"), ("C1", "web")]
    assert due("2026-11-28", "23:59") == [("C1", "api"), ("C1", "web"), ("C2", "db")]
    with transaction(sessions) as session:
        rows = notify_store.due_digests(session=session, today="2026-11-28", time_of_day="09:00")
        claimed = [
            notify_store.claim_digest(
                session=session, subscription_id=r.id or 0, today="2026-11-28"
            )
            for r in rows
        ]
        assert claimed == [True, True]
        # A second claim (another tick or process) gets nothing.
        assert not notify_store.claim_digest(
            session=session, subscription_id=rows[0].id or 0, today="2026-11-28"
        )
    assert due("2026-11-28", "23:59") == [("C2", "db")]
    assert due("2026-11-29", "09:00") == [("C1", "api"), ("C1", "web"), ("C4", "late")]


def test_subscribe_refuses_unknown_filter_or_bad_digest_time(sessions: SessionFactory) -> None:
    with transaction(sessions) as session:
        with pytest.raises(ValueError, match="events"):
            notify_store.subscribe(
                session=session,
                pipeline="web",
                channel_id="C1",
                created_by="U1",
                events="everything",  # type: ignore[arg-type]
            )
        for bad in ("9:00", "24:00", "12:60", "noon", "09:00 "):
            with pytest.raises(ValueError, match="HH:MM"):
                notify_store.subscribe(
                    session=session,
                    pipeline="web",
                    channel_id="C1",
                    created_by="U1",
                    digest_time=bad,
                )
        notify_store.subscribe(
            session=session, pipeline="web", channel_id="C1", created_by="U1", digest_time="23:59"
        )


def test_subscriptions_are_listed_per_channel_and_pipeline(sessions: SessionFactory) -> None:
    with transaction(sessions) as session:
        for pipeline, channel in [("web", "C2"), ("web", "C1"), ("api", "C1"), ("db", "C3")]:
            notify_store.subscribe(
                session=session, pipeline=pipeline, channel_id=channel, created_by="U1"
            )
    with sessions() as session:
        c1 = notify_store.subscriptions_for_channel(session=session, channel_id="C1")
        assert [s.pipeline for s in c1] == ["api", "web"]
        web = notify_store.subscriptions_for_pipeline(session=session, pipeline="web")
        assert [s.channel_id for s in web] == ["C2", "C1"]
        assert notify_store.subscriptions_for_channel(session=session, channel_id="C9") == []

    with transaction(sessions) as session:
        assert notify_store.unsubscribe(session=session, pipeline="db", channel_id="C3")
        assert not notify_store.unsubscribe(session=session, pipeline="db", channel_id="C3")
        assert notify_store.unsubscribe(session=session, pipeline="web", channel_id="C1")
    with sessions() as session:
        web = notify_store.subscriptions_for_pipeline(session=session, pipeline="web")
        assert [s.channel_id for s in web] == ["C2"]


# --- parent messages ---------------------------------------------------------------------------


def test_posted_execution_is_created_once_then_updated(sessions: SessionFactory) -> None:
    with sessions() as session:
        assert (
            notify_store.get_posted_execution(session=session, channel_id="C1", execution_id="e1")
            is None
        )
    with transaction(sessions) as session:
        row, created = notify_store.upsert_posted_execution(
            session=session,
            channel_id="C1",
            pipeline="web",
            execution_id="e1",
            last_state='{"status": "InProgress"}',
            last_state_hash="h1",
            at=T0,
        )
        assert created
        assert row.message_ts is None
        assert not notify_store.set_posted_message_ts(
            session=session, channel_id="C2", execution_id="e1", message_ts="1.0"
        )
        assert notify_store.set_posted_message_ts(
            session=session, channel_id="C1", execution_id="e1", message_ts="1700000000.000100"
        )

    later = T0 + timedelta(minutes=5)
    with transaction(sessions) as session:
        row, created = notify_store.upsert_posted_execution(
            session=session,
            channel_id="C1",
            pipeline="web",
            execution_id="e1",
            last_state='{"status": "Succeeded"}',
            last_state_hash="h2",
            at=later,
        )
        assert not created
        assert (row.last_state, row.last_state_hash) == ('{"status": "Succeeded"}', "h2")
        assert row.message_ts == "1700000000.000100"  # kept: the same message is updated
        # Another channel gets its own parent message.
        other, created = notify_store.upsert_posted_execution(
            session=session,
            channel_id="C2",
            pipeline="web",
            execution_id="e1",
            last_state="{}",
            last_state_hash="h0",
        )
        assert created
        assert other.id != row.id

    with sessions() as session:
        stored = notify_store.get_posted_execution(
            session=session, channel_id="C1", execution_id="e1"
        )
        assert stored is not None
        assert (stored.pipeline, stored.message_ts, stored.last_state_hash) == (
            "web",
            "1700000000.000100",
            "h2",
        )
        assert utc(stored.updated_at) >= later


# --- thread replies ----------------------------------------------------------------------------

APPROVAL = "approval:Deploy/Approve:a-1"


def test_record_event_once_then_post_and_resolve(sessions: SessionFactory) -> None:
    with transaction(sessions) as session:
        row, created = notify_store.record_event_once(
            session=session, channel_id="C1", execution_id="e1", event_key=APPROVAL, at=T0
        )
        assert created
        assert (row.message_ts, row.resolved) == (None, False)
        again, created = notify_store.record_event_once(
            session=session, channel_id="C1", execution_id="e1", event_key=APPROVAL
        )
        assert not created
        assert again.id == row.id
        # Same event in another channel, a buttonless event, another execution.
        notify_store.record_event_once(
            session=session, channel_id="C2", execution_id="e1", event_key=APPROVAL
        )
        _, created = notify_store.record_event_once(
            session=session, channel_id="C1", execution_id="e1", event_key="finished", resolved=True
        )
        assert created
        notify_store.record_event_once(
            session=session, channel_id="C1", execution_id="e2", event_key=APPROVAL
        )

    with transaction(sessions) as session:
        assert notify_store.mark_event_posted(
            session=session,
            channel_id="C1",
            execution_id="e1",
            event_key=APPROVAL,
            message_ts="2.0",
        )
        assert not notify_store.mark_event_posted(
            session=session, channel_id="C1", execution_id="e1", event_key="nope", message_ts="3.0"
        )

    def approval(channel: str, execution_id: str = "e1") -> tuple[str | None, bool]:
        with sessions() as session:
            event = notify_store.get_event(
                session=session, channel_id=channel, execution_id=execution_id, event_key=APPROVAL
            )
            assert event is not None
            return event.message_ts, event.resolved

    assert approval("C1") == ("2.0", False)
    assert approval("C2") == (None, False)
    with sessions() as session:
        stored = notify_store.get_event(
            session=session, channel_id="C1", execution_id="e1", event_key=APPROVAL
        )
        assert stored is not None
        assert utc(stored.created_at) == T0

    with transaction(sessions) as session:
        assert notify_store.mark_event_resolved(
            session=session, channel_id="C1", execution_id="e1", event_key=APPROVAL
        )
        # Only the first resolution flips it: a second one has nothing to replace.
        assert not notify_store.mark_event_resolved(
            session=session, channel_id="C1", execution_id="e1", event_key=APPROVAL
        )
        assert not notify_store.mark_event_resolved(
            session=session, channel_id="C1", execution_id="e1", event_key="missing"
        )
    assert approval("C1") == ("2.0", True)
    assert approval("C2") == (None, False)
    assert approval("C1", "e2") == (None, False)


def test_record_event_once_is_idempotent_under_concurrency(database_url: str) -> None:
    def record(_: int) -> tuple[int | None, bool]:
        def work(session: Session) -> tuple[int | None, bool]:
            row, created = notify_store.record_event_once(
                session=session, channel_id="C1", execution_id="e1", event_key=APPROVAL
            )
            time.sleep(0.05)  # hold the transaction: the others wait on our row
            return row.id, created

        return _in_own_process(database_url, work)

    results = _race(8, record)
    assert sum(created for _, created in results) == 1
    assert len({row_id for row_id, _ in results}) == 1


# --- outbox ------------------------------------------------------------------------------------


def _enqueue(session: Session, channel: str, text: str, at: datetime = T0) -> int:
    message = notify_store.enqueue(
        session=session, channel_id=channel, kind="post", payload=f'{{"text": "{text}"}}', at=at
    )
    assert message.id is not None
    return message.id


def _due(sessions: SessionFactory, now: datetime, limit: int = 100) -> list[str]:
    with sessions() as session:
        return [
            m.payload.split('"')[3]
            for m in notify_store.due_outbox(session=session, now=now, limit=limit)
        ]


def test_enqueue_stores_the_call(sessions: SessionFactory) -> None:
    with transaction(sessions) as session:
        message = notify_store.enqueue(
            session=session,
            channel_id="C1",
            kind="reply",
            payload='{"text": "Approval needed", "reply_broadcast": true}',
            execution_id="e1",
            event_key=APPROVAL,
            at=T0,
        )
        with pytest.raises(ValueError, match="kind"):
            notify_store.enqueue(
                session=session,
                channel_id="C1",
                kind="delete",  # type: ignore[arg-type]
                payload="{}",
            )
    with sessions() as session:
        (due,) = notify_store.due_outbox(session=session, now=T0)
        assert due.id == message.id
        assert (due.kind, due.execution_id, due.event_key) == ("reply", "e1", APPROVAL)
        assert due.payload == '{"text": "Approval needed", "reply_broadcast": true}'
        assert (due.attempts, due.last_error, due.done_at) == (0, None, None)
        assert utc(due.next_attempt_at) == utc(due.created_at) == T0
        assert notify_store.due_outbox(session=session, now=T0 - timedelta(seconds=1)) == []


def test_outbox_keeps_channel_order_and_a_failed_head_blocks_only_its_channel(
    sessions: SessionFactory,
) -> None:
    with transaction(sessions) as session:
        a1 = _enqueue(session, "C1", "a1")
        _enqueue(session, "C2", "b1")
        _enqueue(session, "C1", "a2")
        b2 = _enqueue(session, "C2", "b2")
        _enqueue(session, "C3", "c1", at=T0 + timedelta(seconds=30))  # not due yet
        _enqueue(session, "C1", "a3")

    assert _due(sessions, T0) == ["a1", "b1"]  # one head per channel, oldest first
    assert _due(sessions, T0, limit=1) == ["a1"]
    assert _due(sessions, T0 + timedelta(seconds=30)) == ["a1", "b1", "c1"]

    retry_at = T0 + timedelta(seconds=60)
    with transaction(sessions) as session:
        assert notify_store.mark_outbox_failed(
            session=session, message_id=a1, error="ratelimited", next_attempt_at=retry_at
        )
    with transaction(sessions) as session:
        b1 = notify_store.due_outbox(session=session, now=T0)[0]
        assert b1.id is not None
        assert notify_store.mark_outbox_done(session=session, message_id=b1.id, now=T0)
        assert not notify_store.mark_outbox_done(session=session, message_id=b1.id, now=T0)

    # C1 waits behind its failed head (a2 is not handed out); C2 moves on.
    assert _due(sessions, T0 + timedelta(seconds=1)) == ["b2"]
    assert _due(sessions, T0 + timedelta(seconds=59)) == ["b2", "c1"]
    assert _due(sessions, retry_at) == ["a1", "b2", "c1"]

    with transaction(sessions) as session:
        assert notify_store.mark_outbox_failed(
            session=session, message_id=a1, error="timeout", next_attempt_at=retry_at
        )
        assert notify_store.mark_outbox_done(session=session, message_id=a1, now=retry_at)
        assert notify_store.mark_outbox_done(session=session, message_id=b2, now=retry_at)
        assert not notify_store.mark_outbox_failed(
            session=session, message_id=b2, error="late", next_attempt_at=retry_at
        )
        head = notify_store.due_outbox(session=session, now=retry_at)[0]
        assert head.payload == '{"text": "a2"}'
    with sessions() as session:
        done = session.get(OutboxMessage, a1)
        assert done is not None
        assert (done.attempts, done.last_error) == (2, "timeout")
        assert done.done_at is not None and utc(done.done_at) == retry_at
    assert _due(sessions, retry_at) == ["a2", "c1"]


def test_prune_outbox_deletes_only_sent_messages(sessions: SessionFactory) -> None:
    with transaction(sessions) as session:
        sent = _enqueue(session, "C1", "old")
        _enqueue(session, "C1", "pending")
        notify_store.mark_outbox_done(session=session, message_id=sent, now=T0)
    with transaction(sessions) as session:
        assert notify_store.prune_outbox(session=session, done_before=T0) == 0
        assert notify_store.prune_outbox(session=session, done_before=T0 + timedelta(days=1)) == 1
        assert notify_store.prune_outbox(session=session, done_before=T0 + timedelta(days=9)) == 0
    assert _due(sessions, T0) == ["pending"]


def test_prune_outbox_keeps_a_reply_until_its_buttons_give_way(sessions: SessionFactory) -> None:
    def reply(key: str, *, resolved: bool) -> int:
        notify_store.record_event_once(
            session=session, channel_id="C1", execution_id="e1", event_key=key, resolved=resolved
        )
        message = notify_store.enqueue(
            session=session,
            channel_id="C1",
            kind="reply",
            payload=f'{{"text": "{key}"}}',
            execution_id="e1",
            event_key=key,
            at=T0,
        )
        assert message.id is not None
        notify_store.mark_outbox_done(session=session, message_id=message.id, now=T0)
        return message.id

    def kept() -> list[str | None]:
        with sessions() as session:
            rows = session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id)))
            return [row.event_key for row in rows]

    with transaction(sessions) as session:
        reply("approval:Gate/Approve", resolved=False)  # its buttons still stand
        reply("finished", resolved=True)  # nothing to replace later
    later = T0 + timedelta(days=30)
    with transaction(sessions) as session:
        assert notify_store.prune_outbox(session=session, done_before=later) == 1
    # The reply's payload is what redraws it once answered, however late that is.
    assert kept() == ["approval:Gate/Approve"]
    with sessions() as session:
        assert notify_store.queued_reply_payload(
            session=session, channel_id="C1", execution_id="e1", event_key="approval:Gate/Approve"
        )
    with transaction(sessions) as session:
        assert notify_store.mark_event_resolved(
            session=session, channel_id="C1", execution_id="e1", event_key="approval:Gate/Approve"
        )
    with transaction(sessions) as session:
        assert notify_store.prune_outbox(session=session, done_before=later) == 1
    assert kept() == []


# --- lease -------------------------------------------------------------------------------------

LEASE = "notifier"


def _acquire(sessions: SessionFactory, holder: str, now: datetime, ttl: float = 30) -> bool:
    with transaction(sessions) as session:
        return lease_store.acquire_lease(
            session=session, name=LEASE, holder=holder, now=now, ttl_seconds=ttl
        )


def test_lease_is_held_renewed_taken_over_when_expired_and_released(
    sessions: SessionFactory,
) -> None:
    assert _acquire(sessions, "a", T0)
    assert not _acquire(sessions, "b", T0 + timedelta(seconds=10))
    assert _acquire(sessions, "a", T0 + timedelta(seconds=20))  # renewed to T0+50
    assert not _acquire(sessions, "b", T0 + timedelta(seconds=40))
    with sessions() as session:
        lease = lease_store.get_lease(session=session, name=LEASE)
        assert lease is not None
        assert (lease.holder, utc(lease.expires_at)) == ("a", T0 + timedelta(seconds=50))

    # "a" died: its lease expires and "b" takes it over; "a" cannot come back until then.
    assert _acquire(sessions, "b", T0 + timedelta(seconds=50))
    assert not _acquire(sessions, "a", T0 + timedelta(seconds=51))
    with transaction(sessions) as session:
        assert not lease_store.release_lease(session=session, name=LEASE, holder="a")
        assert lease_store.release_lease(session=session, name=LEASE, holder="b")
    with sessions() as session:
        assert lease_store.get_lease(session=session, name=LEASE) is None
    assert _acquire(sessions, "a", T0 + timedelta(seconds=52))

    # Leases are per name; a lease of another name is independent.
    with transaction(sessions) as session:
        assert lease_store.acquire_lease(
            session=session, name="digest", holder="b", now=T0, ttl_seconds=30
        )
        with pytest.raises(ValueError, match="ttl"):
            lease_store.acquire_lease(
                session=session, name="digest", holder="b", now=T0, ttl_seconds=0
            )


def _race_for_lease(database_url: str, now: datetime) -> list[tuple[str, bool]]:
    def take(n: int) -> tuple[str, bool]:
        def work(session: Session) -> tuple[str, bool]:
            won = lease_store.acquire_lease(
                session=session, name=LEASE, holder=f"h{n}", now=now, ttl_seconds=30
            )
            time.sleep(0.05)  # hold the transaction: the others contend with it
            return f"h{n}", won

        return _in_own_process(database_url, work)

    return _race(8, take)


def test_racing_holders_exactly_one_wins_a_free_lease(database_url: str) -> None:
    results = _race_for_lease(database_url, T0)
    winners = [holder for holder, won in results if won]
    assert len(winners) == 1
    lease = _in_own_process(
        database_url, lambda session: lease_store.get_lease(session=session, name=LEASE)
    )
    assert lease is not None
    assert lease.holder == winners[0]


def test_racing_holders_exactly_one_takes_over_an_expired_lease(database_url: str) -> None:
    assert _in_own_process(
        database_url,
        lambda session: lease_store.acquire_lease(
            session=session, name=LEASE, holder="dead", now=T0, ttl_seconds=30
        ),
    )
    results = _race_for_lease(database_url, T0 + timedelta(seconds=31))
    winners = [holder for holder, won in results if won]
    assert len(winners) == 1
    lease = _in_own_process(
        database_url, lambda session: lease_store.get_lease(session=session, name=LEASE)
    )
    assert lease is not None
    assert (lease.holder, utc(lease.expires_at)) == (winners[0], T0 + timedelta(seconds=61))


# --- poll bookkeeping --------------------------------------------------------------------------


def test_due_pipelines_are_subscribed_and_due_never_polled_first(
    sessions: SessionFactory,
) -> None:
    with transaction(sessions) as session:
        for pipeline, channel in [("web", "C1"), ("web", "C2"), ("api", "C1"), ("db", "C1")]:
            notify_store.subscribe(
                session=session, pipeline=pipeline, channel_id=channel, created_by="U1"
            )
    with sessions() as session:
        # Never polled: due at once, each once however many channels subscribe.
        assert notify_store.due_pipelines(session=session, now=T0) == ["api", "db", "web"]
        assert notify_store.get_poll(session=session, pipeline="web") is None

    with transaction(sessions) as session:
        poll = notify_store.schedule_poll(
            session=session,
            pipeline="web",
            polled_at=T0,
            next_poll_at=T0 + timedelta(seconds=10),
        )
        assert (poll.backoff_seconds, poll.last_error) == (0, None)
        notify_store.schedule_poll(
            session=session,
            pipeline="api",
            polled_at=T0,
            next_poll_at=T0 + timedelta(seconds=5),
            backoff_seconds=5,
            error="ThrottlingException",
        )
        # A poll row for a pipeline nobody subscribes to is never due.
        notify_store.schedule_poll(session=session, pipeline="gone", next_poll_at=T0)

    with sessions() as session:
        assert notify_store.due_pipelines(session=session, now=T0) == ["db"]
        later = T0 + timedelta(seconds=10)
        assert notify_store.due_pipelines(session=session, now=later) == ["db", "api", "web"]
        assert notify_store.due_pipelines(session=session, now=later, limit=2) == ["db", "api"]
        api = notify_store.get_poll(session=session, pipeline="api")
        assert api is not None
        assert (api.backoff_seconds, api.last_error) == (5, "ThrottlingException")
        assert api.last_polled_at is not None and utc(api.last_polled_at) == T0

    # A change wakes "api" at once: next_poll_at moves, the last read stays on record.
    with transaction(sessions) as session:
        poll = notify_store.schedule_poll(session=session, pipeline="api", next_poll_at=T0)
        assert (poll.backoff_seconds, poll.last_error) == (0, None)
        assert poll.last_polled_at is not None and utc(poll.last_polled_at) == T0
        with pytest.raises(ValueError, match="backoff"):
            notify_store.schedule_poll(
                session=session, pipeline="api", next_poll_at=T0, backoff_seconds=-1
            )
    with sessions() as session:
        assert notify_store.due_pipelines(session=session, now=T0) == ["db", "api"]
