"""Engine benchmark: per-action overhead, handoffs, throughput, history latency.

(a) a Source and 3 stages x 3 Commands actions running `true`: median
    start-to-Succeeded time, against the same 9 commands run by a plain shell in
    the same process (baseline), their ratio, the per-action overhead and the
    stage-to-stage handoff;
(b) 200 executions of a 3-stage no-op pipeline in PARALLEL mode: executions/s;
(c) list_pipeline_executions latency with 100,000 executions stored;
(d) a local CodeBuild action whose buildspec runs 4 phases of `true`, against the same 4
    commands run by one plain shell in the same process: the ratio and the per-build overhead;
(e) a local CodeDeploy deployment of 1,000 small files with 5 hooks of `true`, against `cp -r`
    of the same files plus running the 5 scripts.

Run: `make bench` (SQLite) or `python benchmarks/engine.py --database-url postgresql+psycopg://...`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bot.engine import LocalCodePipeline
from storage import engine_store as store
from storage.db import make_engine, make_session_factory, transaction
from storage.migrate import upgrade
from storage.models import PipelineExecution

ROLE = "arn:aws:iam::000000000000:role/bench"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def _repo(repos: Path) -> None:
    repo = repos / "bench"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("bench\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "bench")


def _source() -> dict[str, Any]:
    return {
        "name": "Source",
        "actionTypeId": {
            "category": "Source",
            "owner": "AWS",
            "provider": "CodeCommit",
            "version": "1",
        },
        "configuration": {"RepositoryName": "bench", "BranchName": "main"},
        "outputArtifacts": [{"name": "Src"}],
    }


def _true(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "actionTypeId": {
            "category": "Compute",
            "owner": "AWS",
            "provider": "Commands",
            "version": "1",
        },
        "commands": ["true"],
        "inputArtifacts": [{"name": "Src"}],
    }


def _declaration(name: str, *, stages: int, actions: int, mode: str) -> dict[str, Any]:
    return {
        "name": name,
        "roleArn": ROLE,
        "pipelineType": "V2",
        "executionMode": mode,
        "stages": [{"name": "Source", "actions": [_source()]}]
        + [
            {"name": f"Stage{s}", "actions": [_true(f"A{s}{a}") for a in range(actions)]}
            for s in range(1, stages + 1)
        ],
    }


def _wait(client: LocalCodePipeline, name: str, execution_id: str) -> dict[str, Any]:
    while True:
        execution: dict[str, Any] = client.get_pipeline_execution(
            pipelineName=name, pipelineExecutionId=execution_id
        )["pipelineExecution"]
        if execution["status"] not in ("InProgress", "Stopping"):
            return execution
        # Slow polling keeps the harness from competing with the engine for the CPU;
        # durations come from the engine's own timestamps, not from when we noticed.
        time.sleep(0.02)


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def bench_actions(client: LocalCodePipeline, runs: int) -> dict[str, float]:
    client.create_pipeline(pipeline=_declaration("overhead", stages=3, actions=3, mode="QUEUED"))
    first = client.list_pipeline_executions(pipelineName="overhead")
    _wait(client, "overhead", first["pipelineExecutionSummaries"][0]["pipelineExecutionId"])
    durations: list[float] = []
    for _ in range(runs):
        requested = datetime.now(UTC)
        execution_id = client.start_pipeline_execution(name="overhead")["pipelineExecutionId"]
        execution = _wait(client, "overhead", execution_id)
        summary = client.list_pipeline_executions(pipelineName="overhead", maxResults=1)[
            "pipelineExecutionSummaries"
        ][0]
        assert summary["pipelineExecutionId"] == execution_id
        durations.append((summary["lastUpdateTime"] - requested).total_seconds())
        assert execution["status"] == "Succeeded", execution
    baseline: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(9):
            subprocess.run(["sh", "-c", "true"], check=True)
        baseline.append(time.perf_counter() - started)
    engine_ms = _median_ms(durations)
    shell_ms = _median_ms(baseline)
    return {
        "pipeline_median_ms": engine_ms,
        "shell_baseline_median_ms": shell_ms,
        "ratio": engine_ms / shell_ms,
        "per_action_overhead_ms": (engine_ms - shell_ms) / 10,
    }


def bench_handoff(client: LocalCodePipeline, root: Path, runs: int) -> dict[str, float]:
    """Stage-to-stage handoff as the commands see it: the last command of one stage writes
    the time as it ends, the first command of the next stage as it starts. Everything in
    between (the shell exiting, recording the result, advancing, starting the next shell)
    is the handoff."""
    marks = root / "marks"
    marks.mkdir()
    stamp = "date +%s%N > " + str(marks) + "/{name}-#{{codepipeline.PipelineExecutionId}}"
    declaration = _declaration("handoff", stages=2, actions=1, mode="QUEUED")
    declaration["stages"][1]["actions"][0]["commands"] = [stamp.format(name="end")]
    declaration["stages"][2]["actions"][0]["commands"] = [stamp.format(name="start")]
    client.create_pipeline(pipeline=declaration)
    first = client.list_pipeline_executions(pipelineName="handoff")
    _wait(client, "handoff", first["pipelineExecutionSummaries"][0]["pipelineExecutionId"])
    samples = []
    for _ in range(runs):
        execution_id = client.start_pipeline_execution(name="handoff")["pipelineExecutionId"]
        assert _wait(client, "handoff", execution_id)["status"] == "Succeeded"
        ended = int((marks / f"end-{execution_id}").read_text())
        started = int((marks / f"start-{execution_id}").read_text())
        samples.append((started - ended) / 1e9)
    return {"handoff_median_ms": _median_ms(samples), "handoff_max_ms": max(samples) * 1000}


def bench_parallel(client: LocalCodePipeline, count: int) -> dict[str, float]:
    client.create_pipeline(pipeline=_declaration("parallel", stages=2, actions=1, mode="PARALLEL"))
    first = client.list_pipeline_executions(pipelineName="parallel")
    _wait(client, "parallel", first["pipelineExecutionSummaries"][0]["pipelineExecutionId"])
    started = time.perf_counter()
    ids = [
        client.start_pipeline_execution(name="parallel")["pipelineExecutionId"]
        for _ in range(count)
    ]
    statuses = [_wait(client, "parallel", i)["status"] for i in ids]
    elapsed = time.perf_counter() - started
    assert statuses.count("Succeeded") == count, statuses
    return {"executions": count, "seconds": elapsed, "executions_per_second": count / elapsed}


def bench_history(client: LocalCodePipeline, database_url: str, count: int) -> dict[str, float]:
    client.create_pipeline(pipeline=_declaration("history", stages=1, actions=1, mode="PARALLEL"))
    first = client.list_pipeline_executions(pipelineName="history")
    _wait(client, "history", first["pipelineExecutionSummaries"][0]["pipelineExecutionId"])
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    with transaction(sessions) as session:
        pipeline = store.get_pipeline(session=session, name="history")
        assert pipeline is not None and pipeline.id is not None
        pipeline_id = pipeline.id
    base = datetime.now(UTC) - timedelta(days=365)
    revisions = json.dumps(
        [{"actionName": "Source", "revisionId": "0" * 40, "revisionSummary": "bench"}]
    )
    batch = 5000
    for offset in range(0, count, batch):
        rows = []
        for n in range(offset, min(count, offset + batch)):
            at = base + timedelta(minutes=n)
            rows.append(
                PipelineExecution(
                    execution_id=str(uuid.uuid4()),
                    pipeline_id=pipeline_id,
                    pipeline_version=1,
                    status="Succeeded",
                    trigger_type="StartPipelineExecution",
                    trigger_detail="bench",
                    execution_mode="PARALLEL",
                    started_at=at,
                    updated_at=at + timedelta(seconds=30),
                    variables="{}",
                    source_overrides="{}",
                    source_revisions=revisions,
                    artifact_revisions="[]",
                    stage_index=1,
                    waiting=False,
                    arrived_at=at,
                )
            )
        with transaction(sessions) as session:
            store.add_rows(session=session, rows=rows)
    # A bulk load leaves the planner's statistics stale until autovacuum runs; refresh them
    # as it would, so the figures are those of a database in steady state.
    with transaction(sessions) as session:
        store.analyze(session=session)
    engine.dispose()

    def timed(call: Callable[[], Any], repeat: int = 50) -> float:
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            call()
            samples.append(time.perf_counter() - started)
        return _median_ms(samples)

    page = client.list_pipeline_executions(pipelineName="history", maxResults=100)
    token = page["nextToken"]
    for _ in range(min(200, count // 100 - 2)):  # walk deep into the history
        token = client.list_pipeline_executions(
            pipelineName="history", maxResults=100, nextToken=token
        )["nextToken"]
    return {
        "stored_executions": count + 1,
        "first_page_median_ms": timed(
            lambda: client.list_pipeline_executions(pipelineName="history", maxResults=100)
        ),
        "page_200_median_ms": timed(
            lambda: client.list_pipeline_executions(
                pipelineName="history", maxResults=100, nextToken=token
            )
        ),
        "get_pipeline_state_median_ms": timed(lambda: client.get_pipeline_state(name="history")),
    }


def _succeeded(client: LocalCodePipeline, name: str, execution_id: str) -> None:
    execution = _wait(client, name, execution_id)
    assert execution["status"] == "Succeeded", execution.get("statusSummary")


def _action_seconds(client: LocalCodePipeline, name: str, execution_id: str, action: str) -> float:
    """The action's own duration, from the engine's timestamps (start to last update)."""
    details = client.list_action_executions(
        pipelineName=name, filter={"pipelineExecutionId": execution_id}
    )["actionExecutionDetails"]
    (run,) = [d for d in details if d["actionName"] == action]
    assert run["status"] == "Succeeded", run
    return float((run["lastUpdateTime"] - run["startTime"]).total_seconds())


def _commit_files(repo: Path, files: dict[str, str], *, executable: tuple[str, ...] = ()) -> None:
    for name, content in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        if name in executable:
            path.chmod(0o755)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "bench files")


def _provider_pipeline(name: str, action: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "roleArn": ROLE,
        "pipelineType": "V2",
        "executionMode": "QUEUED",
        "stages": [
            {"name": "Source", "actions": [_source()]},
            {"name": "Run", "actions": [action]},
        ],
    }


def bench_codebuild(client: LocalCodePipeline, root: Path, runs: int) -> dict[str, float]:
    """(d): the CodeBuild action's duration against one shell running the same commands."""
    phases = "\n".join(
        f"  {phase}:\n    commands:\n      - true"
        for phase in ("install", "pre_build", "build", "post_build")
    )
    _commit_files(root / "repos" / "bench", {"buildspec.yml": f"version: 0.2\nphases:\n{phases}\n"})
    action = {
        "name": "Build",
        "actionTypeId": {
            "category": "Build",
            "owner": "AWS",
            "provider": "CodeBuild",
            "version": "1",
        },
        "configuration": {"ProjectName": "bench"},
        "inputArtifacts": [{"name": "Src"}],
    }
    client.create_pipeline(pipeline=_provider_pipeline("codebuild", action))
    first = client.list_pipeline_executions(pipelineName="codebuild")
    _wait(client, "codebuild", first["pipelineExecutionSummaries"][0]["pipelineExecutionId"])
    builds: list[float] = []
    for _ in range(runs):
        execution_id = client.start_pipeline_execution(name="codebuild")["pipelineExecutionId"]
        _succeeded(client, "codebuild", execution_id)
        builds.append(_action_seconds(client, "codebuild", execution_id, "Build"))
    shell: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(["sh", "-c", "true\ntrue\ntrue\ntrue"], check=True)
        shell.append(time.perf_counter() - started)
    build_ms, shell_ms = _median_ms(builds), _median_ms(shell)
    return {
        "build_median_ms": build_ms,
        "shell_median_ms": shell_ms,
        "ratio": build_ms / shell_ms,
        "overhead_ms": build_ms - shell_ms,
    }


HOOKS = ("ApplicationStop", "BeforeInstall", "AfterInstall", "ApplicationStart", "ValidateService")


def bench_codedeploy(client: LocalCodePipeline, root: Path, runs: int) -> dict[str, float]:
    """(e): a deployment of 1,000 files with 5 hooks against `cp -r` plus the 5 scripts.
    The first deployment runs no ApplicationStop (there is no previous revision): it is
    left out, so every timed deployment runs all 5 hooks."""
    files = {f"site/page-{i:04d}.html": f"<p>page {i}</p>\n" for i in range(1000)}
    scripts = {f"hooks/{hook}.sh": "#!/bin/sh\ntrue\n" for hook in HOOKS}
    hooks = "\n".join(f"  {hook}:\n    - location: hooks/{hook}.sh" for hook in HOOKS)
    appspec = (
        "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: /var/www/html\n"
        f"file_exists_behavior: OVERWRITE\nhooks:\n{hooks}\n"
    )
    _commit_files(
        root / "repos" / "bench",
        {**files, **scripts, "appspec.yml": appspec},
        executable=tuple(scripts),
    )
    action = {
        "name": "Deploy",
        "actionTypeId": {
            "category": "Deploy",
            "owner": "AWS",
            "provider": "CodeDeploy",
            "version": "1",
        },
        "configuration": {"ApplicationName": "bench", "DeploymentGroupName": "bench"},
        "inputArtifacts": [{"name": "Src"}],
    }
    client.create_pipeline(pipeline=_provider_pipeline("codedeploy", action))
    first = client.list_pipeline_executions(pipelineName="codedeploy")
    _wait(client, "codedeploy", first["pipelineExecutionSummaries"][0]["pipelineExecutionId"])
    deployments: list[float] = []
    for _ in range(runs):
        execution_id = client.start_pipeline_execution(name="codedeploy")["pipelineExecutionId"]
        _succeeded(client, "codedeploy", execution_id)
        deployments.append(_action_seconds(client, "codedeploy", execution_id, "Deploy"))
    bundle = root / "repos" / "bench"
    baseline: list[float] = []
    (root / "cp-target").mkdir()
    for index in range(runs):
        target = root / "cp-target" / str(index)
        started = time.perf_counter()
        subprocess.run(["cp", "-r", str(bundle / "site"), str(target)], check=True)
        for hook in HOOKS:
            subprocess.run([str(bundle / "hooks" / f"{hook}.sh")], check=True)
        baseline.append(time.perf_counter() - started)
    deploy_ms, cp_ms = _median_ms(deployments), _median_ms(baseline)
    return {"deploy_median_ms": deploy_ms, "cp_median_ms": cp_ms, "ratio": deploy_ms / cp_ms}


def _postgres_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    name = f"pipebot_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), drop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        help="PostgreSQL server URL to benchmark on (a scratch database is created and dropped); "
        "default: a SQLite file in a temporary folder",
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=200)
    parser.add_argument("--history", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pipebot-bench-") as tmp:
        root = Path(tmp)
        cleanup: Callable[[], None] = lambda: None  # noqa: E731
        if args.database_url:
            database_url, cleanup = _postgres_database(args.database_url)
        else:
            database_url = f"sqlite:///{root / 'bench.db'}"
        try:
            upgrade(database_url)
            _repo(root / "repos")
            with LocalCodePipeline(
                database_url=database_url,
                data_dir=root / "data",
                repositories_dir=root / "repos",
                poll_seconds=1.0,
            ) as client:
                backend = make_url(database_url).get_backend_name()
                print(f"pipebot engine benchmark on {backend} (python {sys.version.split()[0]})")
                a = bench_actions(client, args.runs)
                print(
                    "(a) 1 source + 3 stages x 3 Commands `true`, "
                    f"median of {args.runs}: pipeline {a['pipeline_median_ms']:.1f} ms, "
                    f"plain shell 9 x `true` {a['shell_baseline_median_ms']:.1f} ms, "
                    f"ratio {a['ratio']:.2f}, per-action overhead "
                    f"{a['per_action_overhead_ms']:.2f} ms"
                )
                h = bench_handoff(client, root, args.runs)
                print(
                    f"    stage-to-stage handoff (end of one stage's command to start of the "
                    f"next's), median of {args.runs}: {h['handoff_median_ms']:.2f} ms "
                    f"(max {h['handoff_max_ms']:.2f} ms)"
                )
                b = bench_parallel(client, args.parallel)
                print(
                    f"(b) {b['executions']:.0f} executions, 3-stage no-op, PARALLEL: "
                    f"{b['seconds']:.2f} s, {b['executions_per_second']:.1f} executions/s"
                )
                d = bench_codebuild(client, root, args.runs)
                print(
                    f"(d) CodeBuild, 4 phases of `true`, median of {args.runs}: build "
                    f"{d['build_median_ms']:.1f} ms, plain shell {d['shell_median_ms']:.1f} ms, "
                    f"ratio {d['ratio']:.2f}, per-build overhead {d['overhead_ms']:.1f} ms"
                )
                e = bench_codedeploy(client, root, max(3, args.runs // 4))
                print(
                    f"(e) CodeDeploy, 1,000 files + 5 hooks, median of {max(3, args.runs // 4)}: "
                    f"deployment {e['deploy_median_ms']:.1f} ms, cp -r + 5 scripts "
                    f"{e['cp_median_ms']:.1f} ms, ratio {e['ratio']:.2f}"
                )
                c = bench_history(client, database_url, args.history)
                print(
                    f"(c) list_pipeline_executions with {c['stored_executions']:.0f} stored: "
                    f"first page {c['first_page_median_ms']:.2f} ms, page 200 "
                    f"{c['page_200_median_ms']:.2f} ms (median of 50); "
                    f"get_pipeline_state {c['get_pipeline_state_median_ms']:.2f} ms"
                )
        finally:
            cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
