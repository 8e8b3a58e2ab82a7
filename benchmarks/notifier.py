"""Notifier benchmark: the cost of a tick over many subscribed pipelines, and the latency a user
sees from an engine change to the Slack call that shows it.

N pipelines (default 1,000) on the embedded engine (SQLite), each with an execution in
progress, so each would be "busy" (read every tick) for a notifier without change tokens:
- C of them ("staged", default 100): Source -> Build -> Deploy, where Build and Deploy are
  Commands actions that wait for a gate file each (`while [ ! -e gate ]; do sleep ...`);
- the others: Source -> a Manual approval, waiting.
Each pipeline is subscribed from its own channel (the notifier posts about one message per
channel per second, so N channels let the initial posts go out in a few flushes instead of N
seconds). The notifier runs on an injected clock (its sleep advances the clock) against a
recording fake Slack (`tests.fake_slack.FakeSlack`); backend calls are counted by a proxy
around the engine client.

After a first tick and a flush until the outbox is empty (the initial posts), it measures:
(a) ticks with no change (the clock moved on by one poll interval): wall time (target
    <= 0.5 s) and Slack calls (target: zero); and the due check the lease holder makes
    between runs (`Notifier.due`, twice a second): its wall time;
(b) one tick after C executions changed: the Build gate opens, each staged execution's Build
    succeeds and its Deploy starts (no thread event): Slack calls by kind (target: exactly C
    chat.update calls, on the C parent messages, and nothing else);
(c) one tick after C approvals (put_approval_result; the executions then succeed): Slack
    calls by kind (the parent updates, the approval replies whose buttons give way to the
    outcome, the "finished" replies);
(d) backend calls per tick per pipeline, by operation.

Then (e) the end-to-end latency a user sees: the real background work of `pipebot serve`
(`bot.app.start_background`: the notifier's runner on its own thread, woken by the engine's
change feed, the poll interval at its default of 10 s) against the recording fake Slack, one
subscribed channel, executions run one after another at a user's pace. Each execution of
Source -> Build -> Staging -> Approval -> Production (Build, Staging and Production take
1.5 s each) makes six changes, each timed from the engine's own record of it (the API
call for a start and an approval answer; the action's start time for a stage entered; the
execution's end) to the first `chat.postMessage` or `chat.update` of its parent message
that shows it (or a later state): started, Build running, Staging running, waiting for
approval, approval answered (Production running), Succeeded. Every other approval is
answered through a second engine client with no change feed wired, as another process
(`pipebot serve` with `PIPEBOT_RUN_WORKER=false`, a `pipebot worker`) would: the notifier
learns of it by its lease holder's due check (twice a second). Target: p95 under 1 s.

Run: `.venv/bin/python benchmarks/notifier.py [--pipelines 1000] [--changed 100]
[--executions 10] [--latency-only]`.
"""

from __future__ import annotations

import argparse
import collections
import math
import random
import re
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
LATENCY_TARGET_SECONDS = 1.0  # p95, engine change -> the Slack call showing it
STAGE_SECONDS = 1.5  # how long Build, Staging and Production run in (e)
USER_PAUSE_SECONDS = (1.0, 3.0)
"""(e): a user reads the channel before answering or starting again: a pause drawn in this
range (seeded), so no change falls in step with the notifier's own timers."""
LATENCY_CHANNEL = "CLATENCY"
NO_CHANGE_TICKS = 3
DUE_CHECKS = 20
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
    parser.add_argument(
        "--executions", type=int, default=10, help="executions in (e), six changes each"
    )
    parser.add_argument("--latency-only", action="store_true", help="only (e)")
    args = parser.parse_args()
    if args.pipelines < 1 or not 0 <= args.changed <= args.pipelines:
        parser.error("--pipelines must be >= 1 and 0 <= --changed <= --pipelines")
    if args.executions < 1:
        parser.error("--executions must be >= 1")
    if not args.latency_only:
        ticks(args)
    return measure_latency(executions=args.executions)


def ticks(args: argparse.Namespace) -> None:
    """(a) to (d): the cost of one tick over many pipelines (see the module docstring)."""

    from bot.engine import LocalCodePipeline
    from bot.notify.scheduler import DUE_CHECK_SECONDS
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
        # Between runs the lease holder asks whether a run is due (bot.notify.scheduler).
        checks = []
        for _ in range(DUE_CHECKS):
            started = time.perf_counter()
            due = notifier.due()
            checks.append(time.perf_counter() - started)
            assert not due, "nothing changed: nothing is due"
        print(
            f"  the due check between runs (every {DUE_CHECK_SECONDS:g} s in the lease "
            f"holder): median {statistics.median(checks) * 1000:.1f} ms for {n} pipelines"
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
    finally:
        if client is not None:
            client.close()
        if db is not None:
            db.dispose()
        if fake is not None:
            fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# --- (e) end-to-end latency ---------------------------------------------------------------

MILESTONES = (
    "started",
    "Build running",
    "Staging running",
    "waiting for approval",
    "approval answered",
    "Succeeded",
)
"""What a parent message shows, in the order an execution shows it."""
_MARKERS = (
    ("Succeeded", re.compile(r"^\S+ \*Succeeded\* in ", re.MULTILINE)),
    ("approval answered", re.compile(r"\*Production\* · In progress")),
    ("waiting for approval", re.compile(r"\*Approval\* · Waiting for approval")),
    ("Staging running", re.compile(r"\*Staging\* · In progress")),
    ("Build running", re.compile(r"\*Build\* · In progress")),
)


def shown(call: Call) -> int:
    """How far along the parent message this call drew is (an index into MILESTONES)."""
    from tests.fake_slack import block_texts

    text = "\n".join(block_texts(call.params.get("blocks")))
    for name, marker in _MARKERS:
        if marker.search(text):
            return MILESTONES.index(name)
    return 0


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def latency_pipeline(name: str) -> dict[str, Any]:
    from tests.helpers import approval_action, commands_action, pipeline, source_action

    work = [f"sleep {STAGE_SECONDS}"]
    return pipeline(
        name,
        [
            ("Source", [source_action("app")]),
            ("Build", [commands_action("Compile", work)]),
            ("Staging", [commands_action("Deploy", work)]),
            ("Approval", [approval_action("Release")]),
            ("Production", [commands_action("Deploy", work)]),
        ],
    )


def measure_latency(*, executions: int) -> int:
    """(e): run ``executions`` executions through the real background work; print the
    latency of each kind of change and overall (p50, p95, max) and the verdict."""
    from bot.app import start_background
    from bot.engine import LocalCodePipeline
    from bot.ops.client import make_local_client
    from bot.settings import Settings
    from storage import notify_store
    from storage.db import make_engine, make_session_factory, transaction
    from storage.migrate import upgrade
    from tests.fake_slack import FakeSlack
    from tests.helpers import make_repo, wait_for

    name = "latency"
    tmp = Path(tempfile.mkdtemp(prefix="pipebot-latency-bench-")).resolve()
    database_url = f"sqlite:///{tmp / 'pipebot.db'}"
    upgrade(database_url)
    make_repo(tmp / "repos" / "app", {"README.md": "hello\n"}, "Initial commit")
    fake = FakeSlack().start()
    default_poll = float(Settings.model_fields["poll_seconds"].default)
    settings = Settings.model_validate(
        {
            "DATABASE_URL": database_url,
            "PIPEBOT_DATA_DIR": str(tmp / "data"),
            "PIPEBOT_REPOSITORIES_DIR": str(tmp / "repos"),
            "PIPEBOT_POLL_SECONDS": default_poll,
            "SLACK_BOT_TOKEN": "xoxb-latency-bench",
            "SLACK_API_URL": fake.base_url,
        }
    )
    db = make_engine(database_url)
    sessions = make_session_factory(db)
    client = make_local_client(settings)
    # Another process's engine client: its commits wake nobody here.
    elsewhere = LocalCodePipeline(
        database_url=database_url,
        data_dir=settings.resolved_data_dir,
        repositories_dir=settings.resolved_repositories_dir,
        run_worker=False,
    )
    stop = start_background(
        settings=settings, pipeline_client=client, sessions=sessions, web_client=fake.web_client()
    )
    print(
        f"\n(e) end-to-end latency, {executions} executions x {len(MILESTONES)} changes, "
        f"poll interval {settings.poll_seconds:g} s (the default), one channel"
    )
    changes: list[tuple[str, str, int, float]] = []  # (execution, kind, milestone, at)
    pace = random.Random(12)
    started_all = time.perf_counter()
    try:
        client.create_pipeline(pipeline={**latency_pipeline(name)})
        first = client.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"]
        # The pipeline's first execution (started by the create) is not measured.
        with transaction(sessions) as session:
            notify_store.subscribe(
                session=session, pipeline=name, channel_id=LATENCY_CHANNEL, created_by="U1"
            )
        settle(client, name, first[0]["pipelineExecutionId"], fake, elsewhere=None, pace=pace)
        time.sleep(pace.uniform(*USER_PAUSE_SECONDS))
        for index in range(executions):
            other = elsewhere if index % 2 else None
            at = time.time()
            execution = client.start_pipeline_execution(name=name)["pipelineExecutionId"]
            changes.append((execution, "start", 0, at))
            answered = settle(client, name, execution, fake, elsewhere=other, pace=pace)
            kind = "approval answered (another process)" if other else "approval answered"
            changes.append((execution, kind, MILESTONES.index("approval answered"), answered))
            details = client.list_action_executions(
                pipelineName=name, filter={"pipelineExecutionId": execution}
            )["actionExecutionDetails"]
            for stage in ("Build", "Staging"):
                entered = min(
                    d["startTime"].timestamp() for d in details if d["stageName"] == stage
                )
                changes.append(
                    (execution, "stage entered", MILESTONES.index(f"{stage} running"), entered)
                )
            approval = next(d for d in details if d["stageName"] == "Approval")
            changes.append(
                (
                    execution,
                    "stage entered",
                    MILESTONES.index("waiting for approval"),
                    approval["startTime"].timestamp(),
                )
            )
            summary = next(
                s
                for s in client.list_pipeline_executions(pipelineName=name, maxResults=5)[
                    "pipelineExecutionSummaries"
                ]
                if s["pipelineExecutionId"] == execution
            )
            changes.append(
                (
                    execution,
                    "execution ended",
                    MILESTONES.index("Succeeded"),
                    summary["lastUpdateTime"].timestamp(),
                )
            )
            print(
                f"  execution {index + 1}/{executions} done "
                f"({time.perf_counter() - started_all:.0f} s)",
                flush=True,
            )
            time.sleep(pace.uniform(*USER_PAUSE_SECONDS))
        wait_for(lambda: not pending_outbox(sessions), timeout=60, what="the outbox to drain")
    finally:
        stop()
        client.close()
        elsewhere.close()
        db.dispose()
        fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return report_latency(changes, fake.calls)


def settle(
    client: LocalCodePipeline,
    name: str,
    execution: str,
    fake: FakeSlack,
    *,
    elsewhere: LocalCodePipeline | None,
    pace: random.Random,
) -> float:
    """Follow one execution to its end: answer its approval once the channel shows it
    waiting (and a user's pause), through ``elsewhere`` when given; the answer's time."""
    from tests.helpers import wait_for

    def token() -> str | None:
        return approval_token(client, name)

    def waiting_shown() -> bool:
        return any(
            shown(call) >= MILESTONES.index("waiting for approval")
            for call in parent_calls(fake.calls, execution)
        )

    wait_for(lambda: token() is not None and waiting_shown(), timeout=60, what="the approval")
    time.sleep(pace.uniform(*USER_PAUSE_SECONDS) / 2)
    answer = token()
    assert answer is not None
    at = time.time()
    (elsewhere or client).put_approval_result(
        pipelineName=name,
        stageName="Approval",
        actionName="Release",
        result={"summary": "bench", "status": "Approved"},
        token=answer,
    )

    def succeeded() -> bool:
        summary = client.get_pipeline_execution(pipelineName=name, pipelineExecutionId=execution)
        return bool(summary["pipelineExecution"]["status"] == "Succeeded")

    wait_for(succeeded, timeout=60, what="the execution to succeed")

    def succeeded_shown() -> bool:
        done = MILESTONES.index("Succeeded")
        return any(shown(call) == done for call in parent_calls(fake.calls, execution))

    wait_for(succeeded_shown, timeout=60, what="the parent to show Succeeded")
    return at


def parent_calls(calls: list[Call], execution: str) -> list[Call]:
    """The posts and updates of one execution's parent message, in the order Slack got them."""
    header = f"latency · {execution[:8]}"
    found = []
    for call in calls:
        if call.method not in ("chat.postMessage", "chat.update") or not call.ok:
            continue
        if call.params.get("thread_ts"):
            continue
        blocks = call.params.get("blocks") or []
        if blocks and (blocks[0].get("text") or {}).get("text") == header:
            found.append(call)
    return found


def _figures(values: list[float]) -> str:
    return (
        f"n={len(values):>3}  p50 {percentile(values, 0.5):.2f} s  "
        f"p95 {percentile(values, 0.95):.2f} s  max {max(values):.2f} s"
    )


def report_latency(changes: list[tuple[str, str, int, float]], calls: list[Call]) -> int:
    """Print the latencies by kind of change and overall, with the verdict on the target."""
    by_kind: dict[str, list[float]] = collections.defaultdict(list)
    every: list[float] = []
    missing = 0
    for execution, kind, milestone, at in changes:
        seen = [c.at for c in parent_calls(calls, execution) if shown(c) >= milestone]
        if not seen:
            missing += 1
            continue
        latency = min(seen) - at
        by_kind[kind].append(latency)
        every.append(latency)
    for kind, values in by_kind.items():
        print(f"  {kind:<38} {_figures(values)}")
    if not every:
        print("  no change was shown (OVER TARGET)")
        return 0
    here = [v for kind, values in by_kind.items() if "another" not in kind for v in values]
    print(f"  {'every change made in this process':<38} {_figures(here)}")
    p95 = percentile(every, 0.95)
    verdict = "OK" if p95 < LATENCY_TARGET_SECONDS and not missing else "OVER TARGET"
    print(
        f"  {'every change':<38} {_figures(every)}  (target p95 < "
        f"{LATENCY_TARGET_SECONDS:g} s: {verdict}; never shown: {missing})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
