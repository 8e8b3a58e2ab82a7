"""Notifier benchmark: the cost of one notifier tick over many subscribed pipelines.

N pipelines (default 1,000) on the embedded engine (SQLite), each with an execution in
progress, so each would be "busy" (read every tick) for a notifier without change tokens:
- C of them ("staged", default 100): Source -> Build -> Deploy, where Build and Deploy are
  Commands actions that wait for a gate file each (`while [ ! -e gate ]; do sleep ...`);
- the others: Source -> a Manual approval, waiting.
Each pipeline is subscribed from its own channel (the notifier sends about one message per
channel per second, so N channels let the initial posts go out in a few flushes instead of N
seconds). The notifier runs on an injected clock (its sleep advances the clock) against a
recording fake Slack (`tests.fake_slack.FakeSlack`); backend calls are counted by a proxy
around the engine client.

After a first tick and a flush until the outbox is empty (the initial posts), it measures:
(a) ticks with no change (the clock moved on by one poll interval): wall time (target
    <= 0.5 s) and Slack calls (target: zero);
(b) one tick after C executions changed: the Build gate opens, each staged execution's Build
    succeeds and its Deploy starts (no thread event): Slack calls by kind (target: exactly C
    chat.update calls, on the C parent messages, and nothing else);
(c) one tick after C approvals (put_approval_result; the executions then succeed): Slack
    calls by kind (the parent updates, the approval replies whose buttons give way to the
    outcome, the "finished" replies);
(d) backend calls per tick per pipeline, by operation.

Run: `.venv/bin/python benchmarks/notifier.py [--pipelines 1000] [--changed 100]`.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func
from sqlmodel import col, select

if TYPE_CHECKING:
    from bot.engine import LocalCodePipeline
    from bot.notify.context import TickStats
    from bot.notify.notifier import Notifier
    from tests.fake_slack import Call, FakeSlack

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `tests` is not installed; it lives next to this folder
    sys.path.insert(0, str(ROOT))

INTERVAL = 10.0  # the notifier's poll interval (seconds of the injected clock)
NO_CHANGE_TICKS = 3
SETUP_TIMEOUT = 600.0  # seconds for every first execution to wait at its approval
TARGET_TICK_SECONDS = 0.5


class Clock:
    """The notifier's clock: moves only when told, or when the notifier sleeps."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class CountingClient:
    """Passes every call through to the engine client and counts it by operation."""

    def __init__(self, client: LocalCodePipeline) -> None:
        self._client = client
        self.counts: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._client, name)
        if not callable(target):
            return target

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] += 1
            return target(*args, **kwargs)

        return counted


def timed_notifier(**kwargs: Any) -> tuple[Notifier, list[float]]:
    """A Notifier whose ``tick`` (the reading part of ``run_once``) records its wall time."""
    from bot.notify.notifier import Notifier

    times: list[float] = []

    class TimedNotifier(Notifier):
        def tick(self) -> TickStats:
            started = time.perf_counter()
            try:
                return super().tick()
            finally:
                times.append(time.perf_counter() - started)

    return TimedNotifier(**kwargs), times


def progress(what: str, done: int, total: int, started: float) -> None:
    print(f"  {what}: {done}/{total} ({time.perf_counter() - started:.1f} s)", flush=True)


def wait_for_file(path: Path) -> str:
    return f"while [ ! -e '{path}' ]; do sleep 0.2; done"


def create_pipelines(
    client: LocalCodePipeline, names: list[str], *, staged: set[str], gates: Path
) -> None:
    from tests.helpers import approval_action, commands_action, pipeline, source_action

    started = time.perf_counter()
    step = max(1, len(names) // 10)
    for i, name in enumerate(names, 1):
        if name in staged:
            stages = [
                ("Source", [source_action("app")]),
                ("Build", [commands_action("Build", [wait_for_file(gates / "build")])]),
                ("Deploy", [commands_action("Deploy", [wait_for_file(gates / "deploy")])]),
            ]
        else:
            stages = [("Source", [source_action("app")]), ("Approve", [approval_action("Release")])]
        client.create_pipeline(pipeline=pipeline(name, stages))  # starts its first execution
        if i % step == 0 or i == len(names):
            progress("created", i, len(names), started)


def stage_running(client: LocalCodePipeline, name: str, stage_name: str) -> bool:
    for stage in client.get_pipeline_state(name=name)["stageStates"]:
        if stage["stageName"] == stage_name:
            latest = stage.get("latestExecution") or {}
            return bool(latest.get("status") == "InProgress")
    return False


def approval_token(client: LocalCodePipeline, name: str) -> str | None:
    state = client.get_pipeline_state(name=name)
    for stage in state["stageStates"]:
        for action in stage["actionStates"]:
            latest = action.get("latestExecution") or {}
            if latest.get("status") == "InProgress" and latest.get("token"):
                return str(latest["token"])
    return None


def wait_all(
    names: list[str], done: Callable[[str], bool], what: str, timeout: float = SETUP_TIMEOUT
) -> None:
    """Poll until ``done(name)`` holds for every name (each done name is not read again)."""
    started = time.perf_counter()
    pending = list(names)
    last_report = -1
    while pending:
        pending = [name for name in pending if not done(name)]
        finished = len(names) - len(pending)
        if finished != last_report:
            progress(what, finished, len(names), started)
            last_report = finished
        if not pending:
            return
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"{len(pending)} pipeline(s) not {what} within {timeout:.0f} s")
        time.sleep(0.5)


def pending_outbox(notifier_sessions: Any) -> int:
    from storage.models import OutboxMessage

    with notifier_sessions() as session:
        statement = (
            select(func.count())
            .select_from(OutboxMessage)
            .where(col(OutboxMessage.done_at).is_(None))
        )
        return int(session.exec(statement).one())


def drain(notifier: Notifier, clock: Clock, sessions: Any, limit: int) -> int:
    """Flush a second apart (injected clock) until the outbox is empty; the flush count."""
    flushes = 0
    while pending_outbox(sessions):
        notifier.flush_outbox(limit=limit)
        flushes += 1
        clock.advance(1.0)
        if flushes > 120:
            raise RuntimeError(f"outbox not empty after {flushes} flushes")
    return flushes


def classify(calls: list[Call], parents: set[str]) -> collections.Counter[str]:
    kinds: collections.Counter[str] = collections.Counter()
    for call in calls:
        if call.method == "chat.postMessage":
            kinds[
                "chat.postMessage (thread reply)"
                if call.params.get("thread_ts")
                else "chat.postMessage (top level)"
            ] += 1
        elif call.method == "chat.update":
            parent = str(call.params.get("ts")) in parents
            kinds["chat.update (parent message)" if parent else "chat.update (thread reply)"] += 1
        else:
            kinds[call.method] += 1
        if not call.ok:
            kinds["failed calls"] += 1
    return kinds


def show(kinds: collections.Counter[str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())) or "none"


def show_stats(stats: TickStats | None) -> str:
    if stats is None:
        return "no tick (lease not held)"
    return (
        f"read {stats.pipelines_read}, backend calls {stats.backend_calls} "
        f"({stats.token_reads} change-token read), queued: "
        f"posts {stats.posts}, updates {stats.updates}, replies {stats.replies}"
    )


def measure_tick(
    notifier: Notifier,
    clock: Clock,
    sessions: Any,
    fake: FakeSlack,
    counting: CountingClient,
    parents: set[str],
) -> tuple[collections.Counter[str], TickStats | None, collections.Counter[str]]:
    """One run_once an interval on, then the outbox drained; Slack calls by kind."""
    clock.advance(INTERVAL)
    before = len(fake.calls)
    counting.counts.clear()
    started = time.perf_counter()
    stats = notifier.run_once()
    whole = time.perf_counter() - started
    left = pending_outbox(sessions)
    extra = drain(notifier, clock, sessions, limit=100_000) if left else 0
    slack = fake.calls[before:]
    kinds = classify(slack, parents)
    print(f"  run_once (tick + sending) {whole:.3f} s; {show_stats(stats)}")
    if left:
        print(f"  {left} message(s) left after run_once, sent in {extra} more flushes")
    print(f"  Slack calls {len(slack)}: {show(kinds)}")
    return kinds, stats, collections.Counter(counting.counts)


def per_read(stats: TickStats | None, counts: collections.Counter[str]) -> None:
    if stats is None or not stats.pipelines_read:
        return
    reads = stats.pipelines_read
    print(
        f"  backend calls: {sum(counts.values())} for {reads} pipelines read "
        f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--pipelines", type=int, default=1000)
    parser.add_argument("--changed", type=int, default=100)
    args = parser.parse_args()
    if args.pipelines < 1 or not 0 <= args.changed <= args.pipelines:
        parser.error("--pipelines must be >= 1 and 0 <= --changed <= --pipelines")

    from bot.engine import LocalCodePipeline
    from bot.ops.pipeline_ops import PipelineOps
    from storage import notify_store
    from storage.db import make_engine, make_session_factory, transaction
    from storage.migrate import upgrade
    from tests.fake_slack import FakeSlack
    from tests.helpers import make_repo

    n = args.pipelines
    names = [f"bench-{i:04d}" for i in range(n)]
    channels = {name: f"C{i:08d}" for i, name in enumerate(names)}
    step = max(1, n // args.changed) if args.changed else n
    staged = names[::step][: args.changed] if args.changed else []
    approvals = [name for name in names if name not in set(staged)][: args.changed]
    tmp = Path(tempfile.mkdtemp(prefix="pipebot-notifier-bench-")).resolve()
    gates = tmp / "gates"
    gates.mkdir()
    fake: FakeSlack | None = None
    client: LocalCodePipeline | None = None
    db = None
    total_started = time.perf_counter()
    try:
        database_url = f"sqlite:///{tmp / 'pipebot.db'}"
        upgrade(database_url)
        repos = tmp / "repos"
        make_repo(repos / "app", {"README.md": "hello\n"}, "Initial commit")
        fake = FakeSlack().start()
        client = LocalCodePipeline(
            database_url=database_url,
            data_dir=tmp / "data",
            repositories_dir=repos,
            run_worker=True,
            poll_seconds=0.2,
            max_parallel_actions=len(staged) + 16,
        )
        engine_client = client
        print(
            f"setup: {n} pipelines ({len(staged)} Source -> Build -> Deploy waiting on gate "
            f"files, {n - len(staged)} Source -> Manual approval), "
            f"python {sys.version.split()[0]}"
        )
        create_pipelines(client, names, staged=set(staged), gates=gates)
        wait_all(
            [name for name in names if name not in set(staged)],
            lambda name: approval_token(engine_client, name) is not None,
            "waiting at the approval",
        )
        wait_all(staged, lambda name: stage_running(engine_client, name, "Build"), "building")
        setup_seconds = time.perf_counter() - total_started

        db = make_engine(database_url)
        sessions = make_session_factory(db)
        clock = Clock()
        with transaction(sessions) as session:
            for name in names:
                notify_store.subscribe(
                    session=session,
                    pipeline=name,
                    channel_id=channels[name],
                    created_by="UADMIN",
                    at=clock(),
                )
        counting = CountingClient(client)
        notifier, tick_times = timed_notifier(
            ops=PipelineOps(client=counting, local=True),
            sessions=sessions,
            web_client=fake.web_client("xoxb-bench"),
            holder_id="bench",
            clock=clock,
            interval_seconds=INTERVAL,
            sleep=clock.advance,
        )

        # First tick: every execution is new to its channel (parent post + approval reply).
        started = time.perf_counter()
        first = notifier.tick()
        first_tick = time.perf_counter() - started
        started = time.perf_counter()
        flushes = drain(notifier, clock, sessions, limit=2 * n + 10)
        first_flush = time.perf_counter() - started
        initial = fake.calls
        parents = {
            str(c.response["ts"])
            for c in initial
            if c.method == "chat.postMessage"
            and not c.params.get("thread_ts")
            and c.ok
            and c.response is not None
        }
        print(f"setup done in {setup_seconds:.1f} s")
        print(
            f"initial tick: {first_tick:.2f} s ({show_stats(first)}); "
            f"outbox drained in {flushes} flushes, {first_flush:.2f} s: "
            f"{show(classify(initial, parents))}"
        )

        # (a) no change: the clock moves one interval on; every pipeline has an execution
        # in progress, so without change tokens every one would be read.
        print(f"\n(a) {NO_CHANGE_TICKS} ticks with no change ({n} pipelines, all busy)")
        no_change: list[float] = []
        per_pipeline: collections.Counter[str] = collections.Counter()
        for i in range(NO_CHANGE_TICKS):
            clock.advance(INTERVAL)
            before = len(fake.calls)
            counting.counts.clear()
            started = time.perf_counter()
            stats = notifier.run_once()
            whole = time.perf_counter() - started
            slack = fake.calls[before:]
            no_change.append(tick_times[-1])
            per_pipeline.update(counting.counts)
            print(
                f"  tick {i + 1}: tick {tick_times[-1]:.3f} s, run_once {whole:.3f} s, "
                f"Slack calls {len(slack)} ({show(classify(slack, parents))}); {show_stats(stats)}"
            )
        median = statistics.median(no_change)
        verdict = "OK" if median <= TARGET_TICK_SECONDS else "OVER TARGET"
        print(
            f"  median tick {median:.3f} s for {n} pipelines "
            f"({median / n * 1000:.3f} ms per pipeline; target <= {TARGET_TICK_SECONDS} s: "
            f"{verdict})"
        )
        print(
            f"  backend calls per tick per pipeline: "
            f"{sum(per_pipeline.values()) / NO_CHANGE_TICKS / n:.4f} "
            f"({show(per_pipeline)} over {NO_CHANGE_TICKS} ticks)"
        )

        # (b) the Build gate opens: each staged execution moves from Build to Deploy.
        print(f"\n(b) one tick after {len(staged)} executions moved from Build to Deploy")
        (gates / "build").touch()
        wait_all(staged, lambda name: stage_running(engine_client, name, "Deploy"), "deploying")
        kinds, stats_b, counts_b = measure_tick(notifier, clock, sessions, fake, counting, parents)
        parent_updates = kinds["chat.update (parent message)"]
        others = sum(kinds.values()) - parent_updates
        verdict = "OK" if parent_updates == len(staged) and others == 0 else "NOT AS EXPECTED"
        print(
            f"  chat.update on parents: {parent_updates}, other Slack calls: {others} "
            f"(target: exactly {len(staged)} chat.update and nothing else: {verdict})"
        )
        per_read(stats_b, counts_b)

        # (c) approvals: each approved execution finishes (Succeeded).
        print(f"\n(c) one tick after approving {len(approvals)} executions")
        for name in approvals:
            token = approval_token(client, name)
            assert token is not None, name
            client.put_approval_result(
                pipelineName=name,
                stageName="Approve",
                actionName="Release",
                result={"summary": "bench", "status": "Approved"},
                token=token,
            )

        def succeeded(name: str) -> bool:
            summaries = engine_client.list_pipeline_executions(pipelineName=name, maxResults=1)
            return bool(summaries["pipelineExecutionSummaries"][0]["status"] == "Succeeded")

        wait_all(approvals, succeeded, "Succeeded", timeout=120)
        kinds, stats_c, counts_c = measure_tick(notifier, clock, sessions, fake, counting, parents)
        each = max(1, len(approvals))
        print(
            f"  per approved execution: {kinds['chat.update (parent message)'] / each:.2f} "
            f"parent update, {kinds['chat.update (thread reply)'] / each:.2f} "
            f"approval reply update, {kinds['chat.postMessage (thread reply)'] / each:.2f} "
            "new reply"
        )
        per_read(stats_c, counts_c)
        (gates / "deploy").touch()
        print(f"\ntotal run time {time.perf_counter() - total_started:.1f} s")
        return 0
    finally:
        if client is not None:
            client.close()
        if db is not None:
            db.dispose()
        if fake is not None:
            fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
