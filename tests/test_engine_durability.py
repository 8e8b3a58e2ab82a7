"""Durability of the embedded engine: crashes, restarts, clean shutdown, several workers.

The engine keeps every decision in the database, so a worker process may die at any moment
(``kill -9``) and another ``LocalCodePipeline`` opened on the same database must carry on: actions
the dead worker was running are failed as interrupted (their orphaned processes killed) and can be
retried; approvals, disabled transitions, waiting and queued executions are untouched. Several
worker processes on one PostgreSQL database must never run an action twice.

The "crashing" worker is a real separate Python process (``engine_process``): it opens the engine
with its worker, makes the calls it is given, reports ready, and waits to be killed. The test
process watches through an engine opened without a worker (``observer``), so that nothing in the
test process runs actions until the test opens its own worker on purpose.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bot.engine import LocalCodePipeline
from tests.helpers import (
    approval_action,
    commands_action,
    pipeline,
    process_alive,
    source_action,
    wait_for,
)
from tests.shapecheck import assert_output_shape

if TYPE_CHECKING:
    from tests.conftest import PostgresDatabases

REPO_ROOT = Path(__file__).resolve().parents[1]

ENGINE_PROCESS = """
import json, os, signal, sys, threading
from pathlib import Path

from bot.engine import LocalCodePipeline

config = json.loads(sys.argv[1])
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
client = LocalCodePipeline(
    database_url=config["database_url"],
    data_dir=config["data_dir"],
    repositories_dir=config["repositories_dir"],
    poll_seconds=0.2,
)
try:
    for method, params in config["calls"]:
        getattr(client, method)(**params)
    Path(config["ready"]).write_text(str(os.getpid()))
    while not stop.wait(0.1):
        pass
finally:
    client.close()
"""


@dataclass
class Place:
    """Where the engines of one test keep their state: shared by every process."""

    database_url: str
    data_dir: Path
    repositories_dir: Path
    root: Path

    def engine(self, *, worker: bool) -> LocalCodePipeline:
        return LocalCodePipeline(
            database_url=self.database_url,
            data_dir=self.data_dir,
            repositories_dir=self.repositories_dir,
            run_worker=worker,
            poll_seconds=0.2,
        )


@pytest.fixture
def place(database_url: str, tmp_path: Path, repos_dir: Path) -> Place:
    return Place(database_url, tmp_path / "data", repos_dir, tmp_path)


@contextmanager
def engines(place: Place, *, worker: bool) -> Iterator[LocalCodePipeline]:
    client = place.engine(worker=worker)
    try:
        yield client
    finally:
        client.close()


@contextmanager
def engine_process(
    place: Place, label: str, calls: list[tuple[str, dict[str, Any]]] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A separate Python process running the engine's worker after making ``calls``."""
    script = place.root / "engine_process.py"
    script.write_text(ENGINE_PROCESS)
    ready = place.root / f"{label}.ready"
    log_path = place.root / f"{label}.log"
    config = {
        "database_url": place.database_url,
        "data_dir": str(place.data_dir),
        "repositories_dir": str(place.repositories_dir),
        "calls": calls or [],
        "ready": str(ready),
    }
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script), json.dumps(config)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: ready.exists() or proc.poll() is not None,
            what=f"engine process {label} to start",
        )
        if not ready.exists():
            raise AssertionError(f"engine process {label} exited:\n{log_path.read_text()}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()  # a clean close(): its running actions are killed too
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def crash(proc: subprocess.Popen[bytes]) -> None:
    """``kill -9`` the engine process and reap it (a zombie's PID would still look alive)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def kill_group_quietly(pid_file: Path) -> None:
    """Test cleanup: kill a process group whose leader wrote its PID to ``pid_file``."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        pid = int(pid_file.read_text().strip())
        if pid > 1:
            os.killpg(pid, signal.SIGKILL)


def executions(client: LocalCodePipeline, name: str) -> list[dict[str, Any]]:
    response = client.list_pipeline_executions(pipelineName=name)
    assert_output_shape("ListPipelineExecutions", response)
    return list(response["pipelineExecutionSummaries"])


def only_execution(client: LocalCodePipeline, name: str) -> str:
    summaries = executions(client, name)
    assert len(summaries) == 1, summaries
    return str(summaries[0]["pipelineExecutionId"])


def status(client: LocalCodePipeline, name: str, execution_id: str) -> str:
    response = client.get_pipeline_execution(pipelineName=name, pipelineExecutionId=execution_id)
    assert_output_shape("GetPipelineExecution", response)
    return str(response["pipelineExecution"]["status"])


def wait_status(client: LocalCodePipeline, name: str, execution_id: str, wanted: str) -> None:
    wait_for(
        lambda: status(client, name, execution_id) == wanted,
        what=f"execution {execution_id} to be {wanted}",
    )


def state(client: LocalCodePipeline, name: str) -> dict[str, Any]:
    response = client.get_pipeline_state(name=name)
    assert_output_shape("GetPipelineState", response)
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


def stage(client: LocalCodePipeline, name: str, stage_name: str) -> dict[str, Any]:
    return next(s for s in state(client, name)["stageStates"] if s["stageName"] == stage_name)


def latest_action(
    client: LocalCodePipeline, name: str, stage_name: str, action: str
) -> dict[str, Any]:
    actions = stage(client, name, stage_name)["actionStates"]
    latest: dict[str, Any] = next(a for a in actions if a["actionName"] == action).get(
        "latestExecution", {}
    )
    return latest


def waiting_token(client: LocalCodePipeline, name: str, stage_name: str = "Approve") -> str:
    def token() -> str | None:
        latest = latest_action(client, name, stage_name, "Approve")
        return latest.get("token") if latest.get("status") == "InProgress" else None

    return wait_for(token, what=f"the approval in {stage_name} to wait with a token")


def approve(client: LocalCodePipeline, name: str, token: str, stage_name: str = "Approve") -> None:
    response = client.put_approval_result(
        pipelineName=name,
        stageName=stage_name,
        actionName="Approve",
        result={"summary": "ok", "status": "Approved"},
        token=token,
    )
    assert_output_shape("PutApprovalResult", response)


def action_history(
    client: LocalCodePipeline, name: str, execution_id: str | None = None
) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"pipelineName": name}
    if execution_id is not None:
        params["filter"] = {"pipelineExecutionId": execution_id}
    details: list[dict[str, Any]] = []
    while True:
        response = client.list_action_executions(**params)
        assert_output_shape("ListActionExecutions", response)
        details += response["actionExecutionDetails"]
        if "nextToken" not in response:
            return details
        params["nextToken"] = response["nextToken"]


def long_build(pid_file: Path) -> dict[str, Any]:
    """A Build action writing its shell PID (its process group) to ``pid_file``, then waiting."""
    target = shlex.quote(str(pid_file))
    return commands_action(
        "Build", [f"echo $$ > {target}.tmp", f"mv {target}.tmp {target}", "sleep 60"]
    )


def creating(declaration: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The calls an ``engine_process`` makes to create ``declaration``."""
    return [("create_pipeline", {"pipeline": declaration})]


def pipebot_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("pipebot-") and t.is_alive()}


# =========================================================================== crash recovery


def test_crash_fails_the_running_action_kills_its_processes_and_retry_runs_it(
    place: Place,
) -> None:
    name = "crash-running"
    marker = place.root / "second-run"
    shell_pid = place.root / "shell.pid"
    sleep_pid = place.root / "sleep.pid"
    q = shlex.quote
    build = commands_action(
        "Build",
        [
            f"echo $$ > {q(str(shell_pid))}",
            f"if [ -f {q(str(marker))} ]; then echo resumed after the crash; else "
            f"sleep 60 & echo $! > {q(str(sleep_pid))}.tmp; mv {q(str(sleep_pid))}.tmp "
            f"{q(str(sleep_pid))}; wait; fi",
        ],
    )
    declaration = pipeline(name, [("Source", [source_action()]), ("Build", [build])])
    try:
        with engines(place, worker=False) as observer:
            with engine_process(place, "doomed", creating(declaration)) as proc:
                execution_id = only_execution(observer, name)
                wait_for(
                    lambda: (
                        sleep_pid.exists()
                        and latest_action(observer, name, "Build", "Build").get("status")
                        == "InProgress"
                    ),
                    what="the Build action to run its long command",
                )
                shell = int(shell_pid.read_text())
                sleeper = int(sleep_pid.read_text())
                crash(proc)
            # The commands led their own process group, so they outlived their worker.
            assert process_alive(shell) and process_alive(sleeper)
            assert status(observer, name, execution_id) == "InProgress"

            with engines(place, worker=True) as recovered:
                wait_status(recovered, name, execution_id, "Failed")
                build_state = latest_action(recovered, name, "Build", "Build")
                assert build_state["status"] == "Failed"
                assert "interrupted" in build_state["summary"].lower()
                assert build_state["errorDetails"]["code"] == "JobFailed"
                wait_for(
                    lambda: not process_alive(shell) and not process_alive(sleeper),
                    what="the orphaned commands to be killed",
                )
                detail = recovered.get_pipeline_execution(
                    pipelineName=name, pipelineExecutionId=execution_id
                )["pipelineExecution"]
                assert "Build" in detail["statusSummary"]
                assert stage(recovered, name, "Build")["latestExecution"]["status"] == "Failed"

                marker.touch()
                retried = recovered.retry_stage_execution(
                    pipelineName=name,
                    pipelineExecutionId=execution_id,
                    stageName="Build",
                    retryMode="FAILED_ACTIONS",
                )
                assert retried["pipelineExecutionId"] == execution_id
                wait_status(recovered, name, execution_id, "Succeeded")

                history = action_history(recovered, name, execution_id)
                builds = sorted(
                    (a for a in history if a["actionName"] == "Build"),
                    key=lambda a: a["startTime"],
                )
                assert [a["status"] for a in builds] == ["Failed", "Succeeded"]
                assert [a["status"] for a in history if a["actionName"] == "Source"] == [
                    "Succeeded"
                ]
                log = recovered.get_action_log(actionExecutionId=builds[1]["actionExecutionId"])
                assert "resumed after the crash" in log
    finally:
        kill_group_quietly(shell_pid)


def test_approval_waiting_at_crash_time_keeps_its_token(place: Place) -> None:
    name = "crash-approval"
    declaration = pipeline(
        name,
        [
            ("Source", [source_action()]),
            ("Approve", [approval_action(configuration={"CustomData": "Go?"})]),
            ("Deploy", [commands_action("Deploy", ["echo deployed"])]),
        ],
    )
    with engines(place, worker=False) as observer:
        with engine_process(place, "doomed", creating(declaration)) as proc:
            execution_id = only_execution(observer, name)
            token = waiting_token(observer, name)
            before = state(observer, name)
            crash(proc)

        with engines(place, worker=True) as recovered:
            recovered.run_worker_scan()  # recovery has certainly looked at everything
            assert state(recovered, name) == before
            approval = latest_action(recovered, name, "Approve", "Approve")
            assert approval["status"] == "InProgress"
            assert approval["token"] == token
            approve(recovered, name, token)
            wait_status(recovered, name, execution_id, "Succeeded")


def test_disabled_transition_and_inbound_execution_survive_a_crash(place: Place) -> None:
    name = "crash-transition"
    declaration = pipeline(
        name,
        [
            ("Source", [source_action()]),
            ("Approve", [approval_action()]),
            ("Build", [commands_action("Build", ["echo built"])]),
        ],
    )
    calls: list[tuple[str, dict[str, Any]]] = [
        ("create_pipeline", {"pipeline": declaration}),
        (
            "disable_stage_transition",
            {
                "pipelineName": name,
                "stageName": "Build",
                "transitionType": "Inbound",
                "reason": "Frozen for the release",
            },
        ),
    ]
    with engines(place, worker=False) as observer:
        with engine_process(place, "doomed", calls) as proc:
            execution_id = only_execution(observer, name)
            approve(observer, name, waiting_token(observer, name))
            wait_for(
                lambda: "inboundExecution" in stage(observer, name, "Build"),
                what="the execution to wait in front of the disabled transition",
            )
            before = state(observer, name)
            crash(proc)

        with engines(place, worker=True) as recovered:
            recovered.run_worker_scan()
            assert state(recovered, name) == before
            build = stage(recovered, name, "Build")
            assert build["inboundTransitionState"]["enabled"] is False
            assert build["inboundTransitionState"]["disabledReason"] == "Frozen for the release"
            assert build["inboundExecution"] == {
                "pipelineExecutionId": execution_id,
                "status": "InProgress",
                "type": "STANDARD",
            }
            assert status(recovered, name, execution_id) == "InProgress"

            recovered.enable_stage_transition(
                pipelineName=name, stageName="Build", transitionType="Inbound"
            )
            wait_status(recovered, name, execution_id, "Succeeded")


def test_queued_executions_survive_a_crash(place: Place) -> None:
    name = "crash-queue"
    declaration = pipeline(
        name,
        [
            ("Source", [source_action()]),
            ("Approve", [approval_action()]),
            ("Deploy", [commands_action("Deploy", ["echo deployed"])]),
        ],
        executionMode="QUEUED",
    )
    with engines(place, worker=False) as observer:
        with engine_process(place, "doomed", creating(declaration)) as proc:
            first = only_execution(observer, name)
            waiting_token(observer, name)
            queued = [
                observer.start_pipeline_execution(name=name)["pipelineExecutionId"]
                for _ in range(2)
            ]

            def inbound_ids() -> list[str]:
                approve_stage = stage(observer, name, "Approve")
                return [
                    e["pipelineExecutionId"] for e in approve_stage.get("inboundExecutions", [])
                ]

            wait_for(lambda: inbound_ids() == queued, what="both executions to queue at Approve")
            before = state(observer, name)
            crash(proc)

        with engines(place, worker=True) as recovered:
            recovered.run_worker_scan()
            assert state(recovered, name) == before
            for execution_id in [first, *queued]:
                assert status(recovered, name, execution_id) == "InProgress"
                assert latest_action(recovered, name, "Approve", "Approve")["status"] == (
                    "InProgress"
                )
                assert (
                    stage(recovered, name, "Approve")["latestExecution"]["pipelineExecutionId"]
                    == execution_id
                )
                approve(recovered, name, waiting_token(recovered, name))
                wait_status(recovered, name, execution_id, "Succeeded")
            assert {e["status"] for e in executions(recovered, name)} == {"Succeeded"}


def test_a_live_peer_worker_recovers_the_actions_of_a_dead_one(place: Place) -> None:
    """No restart needed: a worker already running notices a dead peer at its next scan."""
    name = "crash-peer"
    started = place.root / "started"
    declaration = pipeline(name, [("Source", [source_action()]), ("Build", [long_build(started)])])
    try:
        with (
            engines(place, worker=False) as observer,
            engine_process(place, "doomed", creating(declaration)) as proc,
        ):
            execution_id = only_execution(observer, name)
            wait_for(started.exists, what="the Build command to start")
            shell = int(started.read_text())
            with engines(place, worker=True) as peer:
                peer.run_worker_scan()
                assert latest_action(peer, name, "Build", "Build")["status"] == "InProgress"
                crash(proc)
                wait_status(peer, name, execution_id, "Failed")
                summary = latest_action(peer, name, "Build", "Build")["summary"]
                assert "interrupted" in summary.lower(), summary
                wait_for(lambda: not process_alive(shell), what="the orphan to be killed")
    finally:
        kill_group_quietly(started)


# =========================================================================== clean shutdown


def test_close_stops_every_worker_thread_and_the_running_commands(place: Place) -> None:
    name = "close-clean"
    started = place.root / "started"
    declaration = pipeline(name, [("Source", [source_action()]), ("Build", [long_build(started)])])
    before = pipebot_threads()
    client = place.engine(worker=True)
    try:
        client.create_pipeline(pipeline=declaration)
        execution_id = only_execution(client, name)
        wait_for(started.exists, what="the Build command to start")
        shell = int(started.read_text())
        assert pipebot_threads() - before, "the engine runs no pipebot- threads?"
    finally:
        client.close()
    try:
        assert pipebot_threads() - before == set()
        wait_for(lambda: not process_alive(shell), what="the running command to be killed")
        client.close()  # closing twice is harmless

        with engines(place, worker=False) as observer:
            wait_status(observer, name, execution_id, "Failed")
            build_state = latest_action(observer, name, "Build", "Build")
            assert build_state["status"] == "Failed"
    finally:
        kill_group_quietly(started)


def test_close_marks_the_running_action_interrupted(place: Place) -> None:
    """LocalCodePipeline.close(): "running actions are marked interrupted" (its docstring)."""
    name = "close-interrupted"
    started = place.root / "started"
    build = long_build(started)
    client = place.engine(worker=True)
    try:
        client.create_pipeline(
            pipeline=pipeline(name, [("Source", [source_action()]), ("Build", [build])])
        )
        execution_id = only_execution(client, name)
        wait_for(started.exists, what="the Build command to start")
    finally:
        client.close()
    try:
        with engines(place, worker=False) as observer:
            wait_status(observer, name, execution_id, "Failed")
            summary = latest_action(observer, name, "Build", "Build")["summary"]
            assert "interrupted" in summary.lower(), summary
    finally:
        kill_group_quietly(started)


# =========================================================================== several workers


def test_two_worker_processes_on_postgresql_run_every_action_exactly_once(
    postgres: PostgresDatabases | None, tmp_path: Path, repos_dir: Path
) -> None:
    if postgres is None:
        pytest.skip("PostgreSQL is not reachable (set TEST_DATABASE_URL; CI never skips)")
    database_url = postgres.fresh()
    place = Place(database_url, tmp_path / "data", repos_dir, tmp_path)
    name = "two-workers"
    ledger = tmp_path / "ledger.txt"
    line = (
        'echo "$(basename "$CODEBUILD_SRC_DIR") $PPID $CODEPIPELINE_EXECUTION_ID '
        f'$CODEPIPELINE_ACTION_NAME" >> {shlex.quote(str(ledger))}'
    )
    declaration = pipeline(
        name,
        [
            ("Source", [source_action()]),
            ("Build", [commands_action("BuildA", [line]), commands_action("BuildB", [line])]),
        ],
        executionMode="PARALLEL",
    )
    runs = 20
    try:
        with (
            engines(place, worker=False) as observer,
            engine_process(place, "worker-a") as first,
            engine_process(place, "worker-b") as second,
        ):
            # Started from a process without a worker: both workers race to claim every action.
            observer.create_pipeline(pipeline=declaration)
            for _ in range(runs - 1):
                observer.start_pipeline_execution(name=name)
            ids = [e["pipelineExecutionId"] for e in executions(observer, name)]
            assert len(ids) == runs

            def finished() -> bool:
                return all(e["status"] != "InProgress" for e in executions(observer, name))

            wait_for(finished, timeout=60, what="every execution to finish")
            statuses = Counter(e["status"] for e in executions(observer, name))
            assert statuses == {"Succeeded": runs}
            history = action_history(observer, name)
            worker_pids = {first.pid, second.pid}
    finally:
        postgres.drop(database_url)

    assert all(a["status"] == "Succeeded" for a in history)
    per_execution = Counter((a["pipelineExecutionId"], a["actionName"]) for a in history)
    assert set(per_execution.values()) == {1}
    assert len(per_execution) == runs * 3

    entries = [row.split() for row in ledger.read_text().splitlines()]
    ran = Counter(entry[0] for entry in entries)
    duplicates = {action_id: n for action_id, n in ran.items() if n > 1}
    assert duplicates == {}, f"actions ran more than once: {duplicates}"
    builds = {a["actionExecutionId"] for a in history if a["actionName"].startswith("Build")}
    assert set(ran) == builds
    assert {int(entry[1]) for entry in entries} <= worker_pids
    assert Counter((entry[2], entry[3]) for entry in entries) == {
        (execution_id, action): 1 for execution_id in ids for action in ("BuildA", "BuildB")
    }


def test_a_closing_worker_lets_running_actions_finish_and_leaves_the_next_ones_to_others(
    database_url: str, tmp_path: Path, repos_dir: Path
) -> None:
    """PIPEBOT_ENGINE_DRAIN_SECONDS: a stopping process (SIGTERM, a rolling restart) lets the
    actions it runs finish; the actions their completion starts are left unclaimed, and the
    next worker runs them. Nothing is failed as interrupted."""
    started = tmp_path / "started"
    build = commands_action("Build", [f"touch {started}", "sleep 1"])
    deploy = commands_action("Deploy", ["echo deployed"])
    first = LocalCodePipeline(
        database_url=database_url,
        data_dir=tmp_path / "data",
        repositories_dir=repos_dir,
        poll_seconds=0.2,
        drain_seconds=30,
    )
    first.create_pipeline(
        pipeline=pipeline(
            "drain", [("Source", [source_action()]), ("Build", [build]), ("Deploy", [deploy])]
        )
    )
    execution_id = first.list_pipeline_executions(pipelineName="drain")[
        "pipelineExecutionSummaries"
    ][0]["pipelineExecutionId"]
    wait_for(started.exists, timeout=15, what="the build to start")
    first.close()  # returns once Build finished; Deploy is left for the next worker

    with LocalCodePipeline(
        database_url=database_url,
        data_dir=tmp_path / "data",
        repositories_dir=repos_dir,
        poll_seconds=0.2,
    ) as second:

        def done() -> dict[str, Any] | None:
            execution: dict[str, Any] = second.get_pipeline_execution(
                pipelineName="drain", pipelineExecutionId=execution_id
            )["pipelineExecution"]
            return execution if execution["status"] != "InProgress" else None

        finished = wait_for(done, timeout=30, what="the execution to finish")
        assert finished["status"] == "Succeeded", finished.get("statusSummary")
        runs = second.list_action_executions(
            pipelineName="drain", filter={"pipelineExecutionId": execution_id}
        )["actionExecutionDetails"]
        assert sorted((r["actionName"], r["status"]) for r in runs) == [
            ("Build", "Succeeded"),
            ("Deploy", "Succeeded"),
            ("Source", "Succeeded"),
        ]
