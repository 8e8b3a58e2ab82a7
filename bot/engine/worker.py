"""The engine's worker: runs actions and keeps executions moving.

The hot path never sleeps: an API call or a finished action advances its
pipeline in the same transaction and hands new actions straight to the thread
pool. The worker's loop only covers what no call announces: changes made by
other processes, approval timeouts, unclaimed actions, heartbeats and the
recovery of actions whose worker died.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session

from bot.engine import codebuild_projects
from bot.engine.errors import EngineError
from bot.engine.providers import codebuild as codebuild_provider
from bot.engine.providers import codedeploy as codedeploy_provider
from bot.engine.providers import commands as commands_provider
from bot.engine.providers import git
from bot.engine.providers import s3 as s3_provider
from bot.engine.responses import ACCOUNT, REGION
from bot.engine.rule_runner import RuleRunner
from bot.engine.runtime import ActionJob, AdvanceResult, Runtime, action_job
from bot.engine.states import ActionStatus, transition
from storage import condition_store
from storage import engine_store as store
from storage.db import SessionFactory, transaction, utc, utcnow
from storage.models import ActionExecution, EngineWorker, PipelineExecution

log = logging.getLogger(__name__)

HOST = socket.gethostname()
INTERRUPTED = (
    "Interrupted: the pipebot worker running this action stopped before it finished "
    "({why}). Retry the stage to run it again."
)


@dataclass
class Outcome:
    succeeded: bool
    summary: str
    error_code: str | None = None
    output_variables: dict[str, str] | None = None
    output_artifacts: list[str] | None = None
    external_execution_id: str | None = None
    revision: dict[str, Any] | None = None


class Worker:
    """Runs actions on a thread pool and advances executions; one per process is enough."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        runtime: Runtime,
        poll_seconds: float,
        max_parallel_actions: int,
        stale_after_seconds: float | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.id = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._sessions = sessions
        self._runtime = runtime
        self._poll_seconds = poll_seconds
        self._stale_after = timedelta(seconds=stale_after_seconds or max(15.0, 5 * poll_seconds))
        self._pool = ThreadPoolExecutor(
            max_workers=max_parallel_actions, thread_name_prefix="pipebot-action"
        )
        self._submitted: set[int] = set()
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._abandoned: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pipebot-engine", daemon=True)
        self._closed = False
        self._on_change = on_change
        self._sweep_seconds = max(30.0, 10 * poll_seconds)
        self._last_sweep = 0.0
        # Commands rules of stage conditions run on the same pool (bot.engine.rule_runner).
        self._rules = RuleRunner(
            sessions=sessions,
            runtime=runtime,
            worker_id=self.id,
            host=HOST,
            pool=self._pool,
            after_commit=self.after_commit,
            on_change=on_change,
            stopping=self._stop.is_set,
        )

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        now = utcnow()
        with transaction(self._sessions) as session:
            store.upsert_worker(
                session=session,
                worker=EngineWorker(
                    id=self.id, host=HOST, pid=os.getpid(), started_at=now, heartbeat_at=now
                ),
            )
        self._thread.start()

    def close(self, *, drain_seconds: float = 0.0) -> None:
        """Stop the loop and the runners; actions still running after ``drain_seconds`` are
        killed and marked interrupted.

        While it drains, the actions this worker already holds run to their end, and the
        ones their completion starts are left unclaimed for the other processes' workers
        (``Runtime.claimant`` is None), so a rolling restart of ``serve`` or ``worker`` fails
        no action shorter than the drain.
        """
        if self._closed:
            return
        self._closed = True
        self._runtime.claimant = None
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline:
            with self._lock:
                busy = bool(self._submitted)
            if not busy:
                break
            time.sleep(0.05)
        # Mark this worker's actions interrupted first: the runners, woken by the kills
        # below, then find them finished and record nothing of their own.
        with transaction(self._sessions) as session:
            touched, to_kill = self._fail_claimed(
                session=session, worker_ids={self.id}, why="pipebot shut down"
            )
            rules_touched, rules_to_kill = self._rules.fail_claimed(
                session=session, worker_ids={self.id}, why="pipebot shut down"
            )
            touched |= rules_touched
            store.delete_worker(session=session, worker_id=self.id)
        self._kill_recorded(to_kill + rules_to_kill)
        with self._lock:
            running = dict(self._running)
        for proc in running.values():
            commands_provider.kill_process_group(proc.pid)
        self._rules.kill_all()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for pipeline_id in touched:
            with transaction(self._sessions) as session:
                pipeline = store.get_pipeline_by_id(
                    session=session, pipeline_id=pipeline_id, lock=True
                )
                if pipeline is not None:
                    self._runtime.advance(session=session, pipeline=pipeline, now=utcnow())

    def wake(self) -> None:
        self._wake.set()

    # --- dispatch ----------------------------------------------------------------------------

    def submit(self, pks: list[int]) -> None:
        """Run these unclaimed action executions (claimed first, so nothing runs twice)."""
        for pk in pks:
            self._dispatch(pk, None)

    def _dispatch(self, pk: int, job: ActionJob | None) -> None:
        """Hand one action to the pool; ``job`` is given when this worker already claimed it
        (claimed before a close began: it still runs while the worker drains)."""
        if self._stop.is_set() and job is None:
            return
        with self._lock:
            if pk in self._submitted:
                return
            self._submitted.add(pk)
        try:
            self._pool.submit(self._run, pk, job)
        except RuntimeError:  # the pool is shutting down; close() fails what it claimed
            with self._lock:
                self._submitted.discard(pk)

    def kill(self, action: ActionExecution) -> None:
        """Kill an abandoned action's process group, wherever on this host it runs.

        An action of this worker whose process has not started yet is remembered, and
        its runner will not start it.
        """
        with self._lock:
            proc = self._running.get(action.id or -1)
            if proc is None and action.claimed_by == self.id:
                self._abandoned.add(action.id or -1)
        if proc is not None:
            commands_provider.kill_process_group(proc.pid)
        elif action.host == HOST:
            self._runtime.kill_recorded_process(action_execution_id=action.action_execution_id)

    # --- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        self._recover(first=True)
        while not self._stop.is_set():
            timeout = self._next_timeout()
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.scan()
            except Exception:
                log.exception("engine worker scan failed; retrying at the next poll")

    def _next_timeout(self) -> float:
        with self._sessions() as session:
            due = store.next_approval_due(session=session)
            rule_due = condition_store.next_rule_due(session=session)
        timeout = self._poll_seconds
        for when in (due, rule_due):
            if when is not None:
                timeout = min(timeout, max(0.0, (utc(when) - utcnow()).total_seconds()) + 0.01)
        return timeout

    def scan(self) -> None:
        """One pass over everything that may need attention."""
        now = utcnow()
        with transaction(self._sessions) as session:
            if not store.heartbeat_worker(session=session, worker_id=self.id, now=now):
                store.upsert_worker(
                    session=session,
                    worker=EngineWorker(
                        id=self.id, host=HOST, pid=os.getpid(), started_at=now, heartbeat_at=now
                    ),
                )
        self._recover(first=False)
        self._kill_abandoned()
        # Every change is advanced by the call or the runner that made it, in its own
        # transaction; the scan advances pipelines with approvals falling due, and sweeps all
        # active pipelines only now and then, as a safety net. Sweeping every poll costs a
        # write transaction per active pipeline and starves everyone else of SQLite's lock.
        sweep = time.monotonic() - self._last_sweep >= self._sweep_seconds
        with self._sessions() as session:
            pipeline_ids = set(store.pipelines_with_due_approvals(session=session, now=now))
            pipeline_ids |= set(condition_store.pipelines_with_due_rules(session=session, now=now))
            if sweep:
                pipeline_ids |= set(store.pipeline_ids_with_active_executions(session=session))
        if sweep:
            self._last_sweep = time.monotonic()
        for pipeline_id in sorted(pipeline_ids):
            self.advance_pipeline(pipeline_id=pipeline_id)
        with self._sessions() as session:
            unclaimed = store.unclaimed_actions(session=session)
        self.submit(unclaimed)
        self._rules.scan()

    def advance_pipeline(self, *, pipeline_id: int) -> None:
        with transaction(self._sessions) as session:
            pipeline = store.get_pipeline_by_id(session=session, pipeline_id=pipeline_id, lock=True)
            if pipeline is None:
                return
            result = self._runtime.advance(session=session, pipeline=pipeline, now=utcnow())
        self.after_commit(result)

    def after_commit(self, result: AdvanceResult) -> None:
        for action in result.kills:
            self.kill(action)
        for job in result.jobs:
            self._dispatch(job.pk, job)
        self.submit(result.launches)
        self._rules.submit(result.rule_launches)

    # --- recovery ----------------------------------------------------------------------------

    def _recover(self, *, first: bool) -> None:
        """Fail actions whose worker is gone; kill what they left running on this host."""
        now = utcnow()
        with transaction(self._sessions) as session:
            workers = {w.id: w for w in store.list_workers(session=session)}
            dead: set[str] = set()
            for worker in workers.values():
                if worker.id == self.id:
                    continue
                stale = now - utc(worker.heartbeat_at) > self._stale_after
                gone = worker.host == HOST and not _pid_alive(worker.pid)
                if stale or gone:
                    dead.add(worker.id)
            claimed = store.claimed_in_progress_actions(session=session)
            orphans = {
                a.claimed_by
                for a in claimed
                if a.claimed_by is not None and a.claimed_by not in workers
            }
            dead |= {w for w in orphans if w is not None}
            dead |= RuleRunner.orphan_claimants(session=session, live=set(workers)) - {self.id}
            if not dead:
                return
            touched, to_kill = self._fail_claimed(
                session=session, worker_ids=dead, why="its worker died"
            )
            rules_touched, rules_to_kill = self._rules.fail_claimed(
                session=session, worker_ids=dead, why="its worker died"
            )
            touched |= rules_touched
            to_kill += rules_to_kill
            for worker_id in dead:
                store.delete_worker(session=session, worker_id=worker_id)
        self._kill_recorded(to_kill)
        for pipeline_id in touched:
            self.advance_pipeline(pipeline_id=pipeline_id)
        if first and touched:
            log.warning("recovered interrupted actions in %d pipeline(s)", len(touched))

    def _fail_claimed(
        self, *, session: Session, worker_ids: set[str], why: str
    ) -> tuple[set[int], list[str]]:
        """Mark the workers' running actions interrupted.

        Returns the pipelines touched and the actions whose leftover processes on this host
        must be killed, after commit: a runner woken by the kill must find its action
        already finished, or it would record the kill as the action's result.
        """
        now = utcnow()
        touched: set[int] = set()
        to_kill: list[str] = []
        # Lock the pipelines first, in ID order, as every other writer does (pipeline, then
        # its rows): a commit bumps each pipeline's change count, and taking the pipeline
        # row after its actions' rows could deadlock with a writer holding it.
        pipeline_ids = {
            action.pipeline_id
            for action in store.claimed_in_progress_actions(session=session)
            if action.claimed_by in worker_ids
        }
        for pipeline_id in sorted(pipeline_ids):
            store.get_pipeline_by_id(session=session, pipeline_id=pipeline_id, lock=True)
        for action in store.claimed_in_progress_actions(session=session):
            if action.claimed_by not in worker_ids:
                continue
            if action.host == HOST:
                to_kill.append(action.action_execution_id)
            transition(action, ActionStatus.FAILED, now=now)
            action.summary = INTERRUPTED.format(why=why)
            action.error_code = "JobFailed"
            action.error_message = action.summary
            touched.add(action.pipeline_id)
        return touched, to_kill

    def _kill_recorded(self, action_execution_ids: list[str]) -> None:
        for action_execution_id in action_execution_ids:
            self._runtime.kill_recorded_process(action_execution_id=action_execution_id)

    def _kill_abandoned(self) -> None:
        """Kill this worker's processes whose action was abandoned by another process."""
        with self._lock:
            running = dict(self._running)
        if not running:
            return
        with self._sessions() as session:
            statuses = store.action_statuses(session=session, pks=list(running))
        for pk, proc in running.items():
            if statuses.get(pk, ActionStatus.ABANDONED.value) != ActionStatus.IN_PROGRESS:
                commands_provider.kill_process_group(proc.pid)

    # --- running one action --------------------------------------------------------------------

    def _run(self, pk: int, claimed: ActionJob | None) -> None:
        try:
            job = claimed or self._claim(pk)
            if job is None:
                return
            try:
                outcome = self._execute(job)
            except Exception as exc:  # a provider bug must fail the action, not hang it
                log.exception("action %s crashed", job.action_execution_id)
                outcome = Outcome(
                    succeeded=False, summary=f"Internal error: {exc}", error_code="JobFailed"
                )
            self._complete(job, outcome)
        except Exception:
            log.exception("could not run action execution %s", pk)
        finally:
            with self._lock:
                self._submitted.discard(pk)
                self._abandoned.discard(pk)

    def _claim(self, pk: int) -> ActionJob | None:
        with transaction(self._sessions) as session:
            action = store.claim_action(session=session, pk=pk, worker_id=self.id, host=HOST)
            if action is None:
                return None
            execution = session.get(PipelineExecution, action.execution_pk)
            pipeline = store.get_pipeline_by_id(session=session, pipeline_id=action.pipeline_id)
            assert execution is not None and pipeline is not None
            return action_job(row=action, execution=execution, pipeline_name=pipeline.name)

    def _execute(self, job: ActionJob) -> Outcome:
        if job.category == "Source":
            return self._run_source(job)
        if job.provider == "Commands":
            return self._run_commands(job)
        if job.provider == "CodeBuild":
            return self._run_codebuild(job)
        if job.provider == "CodeDeploy":
            return self._run_codedeploy(job)
        if job.category == "Deploy" and job.provider == "S3":
            return self._run_s3_deploy(job)
        return Outcome(
            succeeded=False,
            summary=f"The embedded engine cannot run provider {job.provider}.",
            error_code="ConfigurationError",
        )

    def _run_source(self, job: ActionJob) -> Outcome:
        if job.provider == "S3":
            return self._run_s3_source(job)
        configuration: dict[str, str] = job.payload["resolvedConfiguration"]
        outputs = job.payload["outputArtifacts"]
        try:
            repository = git.repository_path(
                repositories_dir=self._runtime.repositories_dir,
                provider=job.provider,
                configuration=configuration,
            )
            branch = job.source_branch or configuration.get("BranchName", "main")
            if job.source_override:
                commit = git.read_commit(repository=repository, revision=job.source_override)
            else:
                commit = git.branch_tip(repository=repository, branch=branch)
            for artifact in outputs:
                destination = self._runtime.artifact_dir(
                    execution_id=job.execution_id, artifact=artifact["name"]
                )
                _reset_dir(destination)
                git.export_tree(
                    repository=repository, revision_id=commit.revision_id, destination=destination
                )
        except git.SourceError as exc:
            return Outcome(succeeded=False, summary=str(exc), error_code="JobFailed")
        variables = {
            "CommitId": commit.revision_id,
            "CommitMessage": commit.message,
            "AuthorDate": commit.authored_at.isoformat(),
            "CommitterDate": commit.committed_at.isoformat(),
            "BranchName": branch,
        }
        if job.provider == "CodeCommit":
            variables["RepositoryName"] = configuration.get("RepositoryName", "")
        else:
            variables["FullRepositoryName"] = configuration.get("FullRepositoryId", "")
            if "ConnectionArn" in configuration:
                variables["ConnectionArn"] = configuration["ConnectionArn"]
        return Outcome(
            succeeded=True,
            summary=commit.message[:2048],
            output_variables=variables,
            output_artifacts=[a["name"] for a in outputs],
            external_execution_id=commit.revision_id,
            revision={
                "revisionId": commit.revision_id,
                "revisionSummary": commit.message[:2048],
                "created": commit.committed_at.isoformat(),
                "artifacts": [a["name"] for a in outputs],
            },
        )

    # --- S3 and CodeDeploy (bot.engine.providers.s3, bot.engine.providers.codedeploy) --------

    def _run_s3_source(self, job: ActionJob) -> Outcome:
        """Source/AWS/S3: unzip ``<data dir>/s3/<S3Bucket>/<S3ObjectKey>`` into the output
        artifact; the revision (and ``ETag`` / ``VersionId`` variables) is its content hash."""
        configuration: dict[str, str] = job.payload["resolvedConfiguration"]
        names = [a["name"] for a in job.payload["outputArtifacts"]]
        bucket, key = configuration.get("S3Bucket", ""), configuration.get("S3ObjectKey", "")
        try:
            if not names:
                raise s3_provider.S3Error("The S3 source action has no output artifact")
            fetched = None
            for name in names:
                destination = self._runtime.artifact_dir(
                    execution_id=job.execution_id, artifact=name
                )
                _reset_dir(destination)
                fetched = s3_provider.fetch_source(
                    data_dir=self._runtime.data_dir, bucket=bucket, key=key, destination=destination
                )
            assert fetched is not None
            if job.source_override and job.source_override != fetched.etag:
                raise s3_provider.S3Error(
                    f"Revision {job.source_override} of s3://{bucket}/{key} was asked for, but the "
                    f"object now has ETag {fetched.etag} (local buckets keep no older versions)"
                )
        except s3_provider.S3Error as exc:
            return Outcome(succeeded=False, summary=str(exc)[:2048], error_code="JobFailed")
        return Outcome(
            succeeded=True,
            summary=fetched.summary,
            output_variables={"ETag": fetched.etag, "VersionId": fetched.etag},
            output_artifacts=names,
            external_execution_id=fetched.etag,
            revision={
                "revisionId": fetched.etag,
                "revisionSummary": fetched.summary,
                "created": fetched.last_modified.isoformat(),
                "artifacts": names,
            },
        )

    def _run_s3_deploy(self, job: ActionJob) -> Outcome:
        """Deploy/AWS/S3: the input artifact into ``<data dir>/s3/<BucketName>/``, extracted
        under the ``ObjectKey`` prefix or zipped as the object ``ObjectKey``."""
        configuration: dict[str, str] = job.payload["resolvedConfiguration"]
        inputs: list[str] = job.payload["inputArtifacts"]
        log_path = self._runtime.log_path(action_execution_id=job.action_execution_id)
        try:
            if not inputs:
                raise s3_provider.S3Error("The S3 deploy action has no input artifact")
            result = s3_provider.deploy(
                data_dir=self._runtime.data_dir,
                bucket=configuration.get("BucketName", ""),
                artifact=self._runtime.input_artifact_dir(job=job, artifact=inputs[0]),
                extract=s3_provider.parse_extract(configuration.get("Extract", "")),
                object_key=configuration.get("ObjectKey") or None,
            )
        except s3_provider.S3Error as exc:
            return Outcome(succeeded=False, summary=str(exc)[:2048], error_code="JobFailed")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a", encoding="utf-8") as log:
            log.write(f"[S3] {result.summary}\n")
            log.writelines(f"[S3] Wrote s3://{result.bucket}/{key}\n" for key in result.keys)
        return Outcome(
            succeeded=True,
            summary=result.summary[:2048],
            external_execution_id=job.action_execution_id,
        )

    def _run_codedeploy(self, job: ActionJob) -> Outcome:
        """Deploy/AWS/CodeDeploy: an in-place deployment of the input artifact to the deployment
        group's local instance. ``externalExecutionId`` is the deployment ID (``d-XXXXXXXXX``)
        and the summary names the revision deployed (the source revision, else the bundle's
        digest); ``codedeploy_provider.deployed_revision`` reads a group's last one."""
        configuration: dict[str, str] = job.payload["resolvedConfiguration"]
        inputs: list[str] = job.payload["inputArtifacts"]
        deployment = codedeploy_provider.deployment_id(job.action_execution_id)
        application = configuration.get("ApplicationName", "")
        group = configuration.get("DeploymentGroupName", "")
        try:
            root = codedeploy_provider.instance_root(
                data_dir=self._runtime.data_dir,
                application_name=application,
                deployment_group_name=group,
            )
        except EngineError as exc:
            return Outcome(succeeded=False, summary=str(exc), error_code="JobFailed")
        if not inputs:
            return Outcome(
                succeeded=False,
                summary="The CodeDeploy action has no input artifact (the revision bundle)",
                error_code="JobFailed",
            )
        bundle = self._runtime.input_artifact_dir(job=job, artifact=inputs[0])
        revision = job.input_revisions.get(inputs[0]) or (
            codedeploy_provider.bundle_digest(bundle) if bundle.is_dir() else "(none)"
        )
        log_path = self._runtime.log_path(action_execution_id=job.action_execution_id)
        worker, pid_dir = self, self._runtime.work_dir(action_execution_id=job.action_execution_id)

        class Tracker:
            """Registers each hook script's process like a Commands action's, so stopping the
            execution with abandon (or shutting down) kills it."""

            def started(self, process: subprocess.Popen[bytes]) -> bool:
                with worker._lock:
                    worker._running[job.pk] = process
                    abandoned = job.pk in worker._abandoned
                pid_dir.parent.mkdir(parents=True, exist_ok=True)
                worker._runtime.record_process(
                    action_execution_id=job.action_execution_id, pid=process.pid
                )
                return not abandoned

            def finished(self, process: subprocess.Popen[bytes]) -> None:
                with worker._lock:
                    worker._running.pop(job.pk, None)
                worker._runtime.forget_process(action_execution_id=job.action_execution_id)

        result = codedeploy_provider.deploy(
            bundle=bundle,
            root=root,
            application_name=application,
            deployment_group_name=group,
            deployment_id=deployment,
            revision=revision,
            log_path=log_path,
            environment=commands_provider.host_environment(os.environ),
            pipeline_execution_id=job.execution_id,
            tracker=Tracker(),
        )
        summary = result.summary
        if not result.succeeded and result.failed_script:
            tail = commands_provider.log_tail(log_path=log_path, lines=10, max_chars=1200)
            summary = f"{summary}\n{tail}"
        return Outcome(
            succeeded=result.succeeded,
            summary=summary[:2048],
            error_code=None if result.succeeded else "JobFailed",
            external_execution_id=result.deployment_id,
        )

    def _run_commands(self, job: ActionJob) -> Outcome:
        payload = job.payload
        inputs: list[str] = payload["inputArtifacts"]
        artifact_dirs = {
            name: self._runtime.input_artifact_dir(job=job, artifact=name) for name in inputs
        }
        workdir = self._runtime.work_dir(action_execution_id=job.action_execution_id)
        log_path = self._runtime.log_path(action_execution_id=job.action_execution_id)
        variables_path = workdir.parent / f"{job.action_execution_id}.env"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        start_time_ms = time.time_ns() // 1_000_000
        timeout = commands_provider.BUILD_TIMEOUT_SECONDS
        try:
            primary = artifact_dirs[inputs[0]] if inputs else None
            secondary = {name: path for name, path in artifact_dirs.items() if path != primary}
            src_env = commands_provider.prepare_workdir(
                workdir=workdir, primary_input=primary, secondary_inputs=secondary
            )
            region = payload.get("region") or self._runtime.region
            codebuild_env = commands_provider.codebuild_environment(
                build=self._build_of(job, region=region),
                pipeline_name=job.pipeline_name,
                aws_region=region,
                resolved_source_version=job.input_revisions.get(inputs[0]) if inputs else None,
                start_time_ms=start_time_ms,
            )
            env, reserved = commands_provider.compose_environment(
                host=commands_provider.host_environment(os.environ),
                codebuild={**src_env, **codebuild_env},
                declared=payload.get("environment", {}),
            )
            env.update(
                CODEPIPELINE_PIPELINE_NAME=job.pipeline_name,
                CODEPIPELINE_EXECUTION_ID=job.execution_id,
                CODEPIPELINE_STAGE_NAME=job.stage_name,
                CODEPIPELINE_ACTION_NAME=job.action_name,
            )
            proc = commands_provider.start_commands(
                commands=payload["commands"],
                workdir=workdir,
                env=env,
                log_path=log_path,
                variables_path=variables_path if payload.get("outputVariables") else None,
                notes=_reserved_notes(reserved),
            )
            code, timed_out = self._supervise(job, proc, timeout=timeout)
            if code != 0:
                tail = commands_provider.log_tail(log_path=log_path, lines=15, max_chars=1500)
                how = f"exited with status {code}" if code > 0 else f"was killed (signal {-code})"
                if timed_out:
                    how = f"timed out after {_duration(timeout)} (the Commands build timeout)"
                return Outcome(
                    succeeded=False,
                    summary=f"Commands {how}.\n{tail}".strip()[:2048],
                    error_code="JobFailed",
                    external_execution_id=job.action_execution_id,
                )
            variables = commands_provider.read_output_variables(
                variables_path=variables_path, names=payload.get("outputVariables", [])
            )
            produced = []
            for artifact in payload["outputArtifacts"]:
                destination = self._runtime.artifact_dir(
                    execution_id=job.execution_id, artifact=artifact["name"]
                )
                _reset_dir(destination)
                commands_provider.collect_artifact(
                    workdir=workdir, files=artifact["files"] or ["**/*"], destination=destination
                )
                produced.append(artifact["name"])
        except commands_provider.CommandsError as exc:
            return Outcome(
                succeeded=False,
                summary=str(exc.summary if hasattr(exc, "summary") else exc)[:2048],
                error_code="JobFailed",
                external_execution_id=job.action_execution_id,
            )
        finally:
            commands_provider.remove_workdir(workdir=workdir)
            variables_path.unlink(missing_ok=True)
        return Outcome(
            succeeded=True,
            summary=_commands_succeeded(len(payload["commands"])),
            output_variables=variables,
            output_artifacts=produced,
            external_execution_id=job.action_execution_id,
        )

    def _run_codebuild(self, job: ActionJob) -> Outcome:
        """Run a Build or Test CodeBuild action: its buildspec 0.2 in one shell on this host.

        The rules are in ``bot.engine.providers.codebuild`` (../shared/docs/local-providers.md,
        "CodeBuild"): the primary input artifact is the work directory, the others are
        ``CODEBUILD_SRC_DIR_<name>``; CodeBuild's variables are a Commands action's, with the
        build's ID ``<ProjectName>:<action execution ID>`` and its number counted per project;
        the build times out after the project's ``timeoutInMinutes`` (default 60). Anything
        that cannot run locally fails the action before any command runs, named in the summary
        and the log.
        """
        payload = job.payload
        configuration: dict[str, Any] = payload["resolvedConfiguration"]
        inputs: list[str] = payload["inputArtifacts"]
        outputs = [artifact["name"] for artifact in payload["outputArtifacts"]]
        workdir = self._runtime.work_dir(action_execution_id=job.action_execution_id)
        log_path = self._runtime.log_path(action_execution_id=job.action_execution_id)
        variables_path = workdir.parent / f"{job.action_execution_id}.env"
        results_path = workdir.parent / f"{job.action_execution_id}.phases"
        region = payload.get("region") or self._runtime.region
        stopped: str | None = None
        try:
            primary = codebuild_provider.primary_source(configuration=configuration, inputs=inputs)
            dirs = {n: self._runtime.input_artifact_dir(job=job, artifact=n) for n in inputs}
            src_env = commands_provider.prepare_workdir(
                workdir=workdir,
                primary_input=dirs[primary] if primary else None,
                secondary_inputs={n: path for n, path in dirs.items() if n != primary},
            )
            plan = codebuild_provider.plan_build(
                configuration=configuration,
                inputs=inputs,
                source_root=workdir if primary else None,
                registry=codebuild_projects.registry_path(
                    data_dir=self._runtime.data_dir, configured=self._runtime.codebuild_projects
                ),
            )
            build = commands_provider.Build(
                project=plan.project,
                uuid=job.action_execution_id,
                number=codebuild_provider.next_build_number(
                    data_dir=self._runtime.data_dir, project=plan.project
                ),
                region=region or REGION,
                account=ACCOUNT,
            )
            env, reserved = commands_provider.compose_environment(
                host=commands_provider.host_environment(os.environ),
                codebuild={
                    **src_env,
                    **commands_provider.codebuild_environment(
                        build=build,
                        pipeline_name=job.pipeline_name,
                        aws_region=region,
                        resolved_source_version=job.input_revisions.get(primary or ""),
                        start_time_ms=time.time_ns() // 1_000_000,
                    ),
                },
                declared=plan.environment,
            )
            proc = codebuild_provider.start_build(
                plan=plan,
                workdir=workdir,
                env=env,
                log_path=log_path,
                results_path=results_path,
                variables_path=variables_path,
                notes=[
                    f"Build {build.build_id} (number {build.number})",
                    *_reserved_notes(reserved),
                ],
            )
            code, timed_out = self._supervise(job, proc, timeout=plan.timeout_seconds)
            if timed_out:
                stopped = (
                    f"timed out after {_duration(plan.timeout_seconds)} "
                    "(the project's timeoutInMinutes)"
                )
            if code < 0 and stopped is None:
                stopped = f"was stopped (signal {-code})"
            result = codebuild_provider.finish_build(
                plan=plan,
                workdir=workdir,
                log_path=log_path,
                results_path=results_path,
                variables_path=variables_path,
                outputs=outputs,
                destination=lambda name: self._runtime.artifact_dir(
                    execution_id=job.execution_id, artifact=name
                ),
                stopped=stopped,
                log_tail=commands_provider.log_tail(log_path=log_path, lines=15, max_chars=1200),
            )
        except commands_provider.CommandsError as exc:
            codebuild_provider.write_log(log_path, [f"Build failed: {exc.summary}"])
            return Outcome(
                succeeded=False,
                summary=exc.summary[:2048],
                error_code="JobFailed",
                external_execution_id=job.action_execution_id,
            )
        finally:
            commands_provider.remove_workdir(workdir=workdir)
            variables_path.unlink(missing_ok=True)
            results_path.unlink(missing_ok=True)
        return Outcome(
            succeeded=result.succeeded,
            summary=result.summary,
            error_code=None if result.succeeded else "JobFailed",
            output_variables=dict(result.variables),
            output_artifacts=list(result.produced),
            external_execution_id=job.action_execution_id,
        )

    def _supervise(
        self, job: ActionJob, proc: subprocess.Popen[bytes], *, timeout: float
    ) -> tuple[int, bool]:
        """Wait for an action's process: it is known to ``kill`` (and to other processes of
        this host through its pid file) while it runs, killed at once if the action was
        abandoned while it started, and killed after ``timeout`` seconds. Background jobs it
        left behind die with it. Returns (exit code, whether it timed out)."""
        with self._lock:
            self._running[job.pk] = proc
            abandoned = job.pk in self._abandoned
        timed_out = False
        try:
            self._runtime.record_process(action_execution_id=job.action_execution_id, pid=proc.pid)
            if abandoned:  # stopped with abandon while the process was starting
                commands_provider.kill_process_group(proc.pid)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                commands_provider.kill_process_group(proc.pid)
                code = proc.wait()
            commands_provider.kill_process_group(proc.pid)
        finally:
            with self._lock:
                self._running.pop(job.pk, None)
            self._runtime.forget_process(action_execution_id=job.action_execution_id)
        return code, timed_out

    def _build_of(self, job: ActionJob, *, region: str | None) -> commands_provider.Build:
        """The CodeBuild build a Commands action run stands for (see ``project_name``)."""
        with self._sessions() as session:
            number = store.count_action_runs(
                session=session,
                pipeline_id=job.pipeline_id,
                stage_name=job.stage_name,
                action_name=job.action_name,
                provider=job.provider,
                up_to_pk=job.pk,
            )
        return commands_provider.Build(
            project=commands_provider.project_name(
                pipeline_name=job.pipeline_name,
                stage_name=job.stage_name,
                action_name=job.action_name,
            ),
            uuid=job.action_execution_id,
            number=number,
            region=region or REGION,
            account=ACCOUNT,
        )

    def _complete(self, job: ActionJob, outcome: Outcome) -> None:
        now = utcnow()
        result = AdvanceResult()
        with transaction(self._sessions) as session:
            pipeline = store.get_pipeline_by_id(
                session=session, pipeline_id=job.pipeline_id, lock=True
            )
            action = store.get_action(session=session, pk=job.pk)
            if pipeline is None or action is None:
                return  # the pipeline was deleted meanwhile
            recorded = action.status == ActionStatus.IN_PROGRESS and action.claimed_by == self.id
            if recorded:
                _apply_outcome(session=session, action=action, outcome=outcome, now=now)
            # While a sibling in the same stage still runs, this result cannot move anything
            # (the stage waits for it, even on failure): skip reading the whole pipeline.
            if not recorded or not store.other_actions_running(session=session, action=action):
                result = self._runtime.advance(session=session, pipeline=pipeline, now=now)
        self.after_commit(result)
        if self._on_change is not None:
            self._on_change()


def _apply_outcome(
    *, session: Session, action: ActionExecution, outcome: Outcome, now: datetime
) -> None:
    status = ActionStatus.SUCCEEDED if outcome.succeeded else ActionStatus.FAILED
    transition(action, status, now=now)
    action.summary = outcome.summary
    action.external_execution_id = outcome.external_execution_id
    if not outcome.succeeded:
        action.error_code = outcome.error_code or "JobFailed"
        action.error_message = outcome.summary
    action.output_variables = json.dumps(outcome.output_variables or {})
    action.output_artifacts = json.dumps(outcome.output_artifacts or [])
    if outcome.revision is not None:
        execution = session.get(PipelineExecution, action.execution_pk)
        if execution is not None:
            record_revision(
                execution=execution, action_name=action.action_name, revision=outcome.revision
            )
            execution.updated_at = now


def record_revision(
    *, execution: PipelineExecution, action_name: str, revision: dict[str, Any]
) -> None:
    sources = [s for s in json.loads(execution.source_revisions) if s["actionName"] != action_name]
    sources.append(
        {
            "actionName": action_name,
            "revisionId": revision["revisionId"],
            "revisionSummary": revision["revisionSummary"],
        }
    )
    execution.source_revisions = json.dumps(sources)
    names = set(revision["artifacts"])
    artifacts = [a for a in json.loads(execution.artifact_revisions) if a["name"] not in names]
    for name in revision["artifacts"]:
        artifacts.append(
            {
                "name": name,
                "revisionId": revision["revisionId"],
                "revisionSummary": revision["revisionSummary"],
                "created": revision["created"],
            }
        )
    execution.artifact_revisions = json.dumps(artifacts)


def _reserved_notes(reserved: Iterable[str]) -> list[str]:
    """The log's note for each declared variable dropped because CodeBuild owns its name."""
    return [
        f"Ignoring environment variable {name}: the CODEBUILD_ prefix is reserved for "
        "CodeBuild, which sets it"
        for name in reserved
    ]


def _duration(seconds: float) -> str:
    """``55 minutes``, ``90 seconds``: a timeout as its declaration would say it."""
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


def _reset_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs on this host; a zombie (killed, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the command name, which is in parentheses.
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _commands_succeeded(count: int) -> str:
    """A Commands action's summary: "1 command succeeded.", "3 commands succeeded."."""
    return f"{count} command{'s' if count != 1 else ''} succeeded."
