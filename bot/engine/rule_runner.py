"""Runs the Commands rules of stage conditions on the worker's thread pool.

A Commands rule runs shell commands with its input artifacts the way a Commands action does
(``bot.engine.providers.commands``: the same working directory copy, script, environment and
log), and its outcome decides the rule: exit status 0 succeeds it, anything else fails it
[userguide/rule-reference-Commands.html]. Its log is read like an action's, by its rule
execution ID (``LocalCodePipeline.get_action_log``).

Rule runs are claimed as actions are (a conditional UPDATE), recorded only while still
InProgress and claimed by this worker, and a worker that dies leaves its runs to be failed as
interrupted by the next worker's recovery, as its actions are.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session

from bot.engine import conditions
from bot.engine.providers import commands as commands_provider
from bot.engine.runtime import AdvanceResult, Runtime
from bot.engine.states import RuleStatus
from storage import condition_store as cstore
from storage import engine_store as store
from storage.db import SessionFactory, transaction, utcnow
from storage.models import PipelineExecution, RuleExecution

log = logging.getLogger(__name__)

INTERRUPTED = (
    "Interrupted: the pipebot worker running this rule stopped before it finished ({why}). "
    "Retry the stage, or override the condition, to go on."
)


@dataclass(frozen=True)
class RuleJob:
    """Everything a runner needs to run one claimed Commands rule, read in a transaction."""

    pk: int
    rule_execution_id: str
    execution_id: str
    artifacts_from: str | None
    pipeline_id: int
    pipeline_name: str
    stage_name: str
    rule_name: str
    payload: dict[str, Any]


class RuleRunner:
    """The worker's rule runs: dispatch, claim, run, record, kill, recover."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        runtime: Runtime,
        worker_id: str,
        host: str,
        pool: ThreadPoolExecutor,
        after_commit: Callable[[AdvanceResult], None],
        on_change: Callable[[], None] | None,
        stopping: Callable[[], bool],
    ) -> None:
        self._sessions = sessions
        self._runtime = runtime
        self._worker_id = worker_id
        self._host = host
        self._pool = pool
        self._after_commit = after_commit
        self._on_change = on_change
        self._stopping = stopping
        self._lock = threading.Lock()
        self._submitted: set[int] = set()
        self._running: dict[int, subprocess.Popen[bytes]] = {}

    # --- dispatch ------------------------------------------------------------------------------

    def submit(self, pks: list[int]) -> None:
        """Run these unclaimed rule runs (claimed first, so nothing runs twice)."""
        for pk in pks:
            if self._stopping():
                return
            with self._lock:
                if pk in self._submitted:
                    continue
                self._submitted.add(pk)
            try:
                self._pool.submit(self._run, pk)
            except RuntimeError:  # the pool is shutting down
                with self._lock:
                    self._submitted.discard(pk)

    def scan(self) -> None:
        """Pick up unclaimed runs; kill this worker's processes whose rule ended meanwhile
        (a stop, an override, an update, a deletion)."""
        with self._sessions() as session:
            unclaimed = cstore.unclaimed_rules(session=session, provider=conditions.COMMANDS)
        self.submit(unclaimed)
        with self._lock:
            running = dict(self._running)
        if not running:
            return
        with self._sessions() as session:
            statuses = cstore.rule_statuses(session=session, pks=list(running))
        for pk, proc in running.items():
            if statuses.get(pk, RuleStatus.ABANDONED.value) != RuleStatus.IN_PROGRESS:
                commands_provider.kill_process_group(proc.pid)

    def kill_all(self) -> None:
        with self._lock:
            running = dict(self._running)
        for proc in running.values():
            commands_provider.kill_process_group(proc.pid)

    # --- recovery ------------------------------------------------------------------------------

    def fail_claimed(
        self, *, session: Session, worker_ids: set[str], why: str
    ) -> tuple[set[int], list[str]]:
        """Fail the workers' running rule runs as interrupted; return the pipelines touched and
        the rule execution IDs whose leftover processes on this host must be killed after
        commit."""
        now = utcnow()
        rules = [
            r
            for r in cstore.claimed_in_progress_rules(session=session)
            if r.claimed_by in worker_ids
        ]
        for pipeline_id in sorted({r.pipeline_id for r in rules}):
            store.get_pipeline_by_id(session=session, pipeline_id=pipeline_id, lock=True)
        touched: set[int] = set()
        to_kill: list[str] = []
        for rule in rules:
            if rule.host == self._host:
                to_kill.append(rule.rule_execution_id)
            conditions.complete_rule(
                rule=rule,
                succeeded=False,
                summary=INTERRUPTED.format(why=why),
                external_id=rule.rule_execution_id,
                now=now,
            )
            touched.add(rule.pipeline_id)
        return touched, to_kill

    @staticmethod
    def orphan_claimants(*, session: Session, live: set[str]) -> set[str]:
        """Workers that claimed running rule runs and are no longer registered."""
        return {
            r.claimed_by
            for r in cstore.claimed_in_progress_rules(session=session)
            if r.claimed_by is not None and r.claimed_by not in live
        }

    # --- one run -------------------------------------------------------------------------------

    def _run(self, pk: int) -> None:
        try:
            job = None if self._stopping() else self._claim(pk)
            if job is None:
                return
            try:
                succeeded, summary = self._execute(job)
            except Exception as exc:  # a bug must fail the rule, not hang its stage
                log.exception("rule %s crashed", job.rule_execution_id)
                succeeded, summary = False, f"Internal error: {exc}"
            self._complete(job, succeeded=succeeded, summary=summary)
        except Exception:
            log.exception("could not run rule execution %s", pk)
        finally:
            with self._lock:
                self._submitted.discard(pk)

    def _claim(self, pk: int) -> RuleJob | None:
        with transaction(self._sessions) as session:
            rule = cstore.claim_rule(
                session=session, pk=pk, worker_id=self._worker_id, host=self._host
            )
            if rule is None:
                return None
            execution = session.get(PipelineExecution, rule.execution_pk)
            pipeline = store.get_pipeline_by_id(session=session, pipeline_id=rule.pipeline_id)
            assert execution is not None and pipeline is not None
            return RuleJob(
                pk=pk,
                rule_execution_id=rule.rule_execution_id,
                execution_id=execution.execution_id,
                artifacts_from=execution.rollback_target_execution_id,
                pipeline_id=rule.pipeline_id,
                pipeline_name=pipeline.name,
                stage_name=rule.stage_name,
                rule_name=rule.rule_name,
                payload=json.loads(rule.input),
            )

    def _input_dir(self, job: RuleJob, artifact: str) -> Path:
        own = self._runtime.artifact_dir(execution_id=job.execution_id, artifact=artifact)
        if job.artifacts_from and not own.exists():
            return self._runtime.artifact_dir(execution_id=job.artifacts_from, artifact=artifact)
        return own

    def _execute(self, job: RuleJob) -> tuple[bool, str]:
        payload = job.payload
        inputs: list[str] = payload["inputArtifacts"]
        workdir = self._runtime.work_dir(action_execution_id=job.rule_execution_id)
        log_path = self._runtime.log_path(action_execution_id=job.rule_execution_id)
        minutes = payload.get("timeoutInMinutes")
        timeout = minutes * 60 if minutes else commands_provider.BUILD_TIMEOUT_SECONDS
        try:
            dirs = {name: self._input_dir(job, name) for name in inputs}
            primary = dirs[inputs[0]] if inputs else None
            src_env = commands_provider.prepare_workdir(
                workdir=workdir,
                primary_input=primary,
                secondary_inputs={n: p for n, p in dirs.items() if p != primary},
            )
            env, _ = commands_provider.compose_environment(
                host=commands_provider.host_environment(os.environ),
                codebuild=src_env,
                declared={},
            )
            env.update(
                CODEPIPELINE_PIPELINE_NAME=job.pipeline_name,
                CODEPIPELINE_EXECUTION_ID=job.execution_id,
                CODEPIPELINE_STAGE_NAME=job.stage_name,
                CODEPIPELINE_RULE_NAME=job.rule_name,
            )
            if self._runtime.region:
                env.update(AWS_REGION=self._runtime.region, AWS_DEFAULT_REGION=self._runtime.region)
            proc = commands_provider.start_commands(
                commands=payload["commands"],
                workdir=workdir,
                env=env,
                log_path=log_path,
                variables_path=None,
            )
            return self._wait(job, proc, log_path=log_path, timeout=timeout)
        except commands_provider.CommandsError as exc:
            return False, str(exc)[:2048]
        finally:
            commands_provider.remove_workdir(workdir=workdir)

    def _wait(
        self, job: RuleJob, proc: subprocess.Popen[bytes], *, log_path: Path, timeout: float
    ) -> tuple[bool, str]:
        with self._lock:
            self._running[job.pk] = proc
        timed_out = False
        if self._stopping():  # the worker closed while the process started: kill_all missed it
            commands_provider.kill_process_group(proc.pid)
        try:
            self._runtime.record_process(action_execution_id=job.rule_execution_id, pid=proc.pid)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                commands_provider.kill_process_group(proc.pid)
                code = proc.wait()
            commands_provider.kill_process_group(proc.pid)  # background jobs die with the rule
        finally:
            with self._lock:
                self._running.pop(job.pk, None)
            self._runtime.forget_process(action_execution_id=job.rule_execution_id)
        count = len(job.payload["commands"])
        if code == 0:
            return True, f"{count} command{'s' if count != 1 else ''} succeeded."
        tail = commands_provider.log_tail(log_path=log_path, lines=15, max_chars=1500)
        how = f"exited with status {code}" if code > 0 else f"was killed (signal {-code})"
        if timed_out:
            how = f"timed out after {int(timeout // 60)} minutes"
        return False, f"Commands {how}.\n{tail}".strip()[:2048]

    def _complete(self, job: RuleJob, *, succeeded: bool, summary: str) -> None:
        now = utcnow()
        result = AdvanceResult()
        with transaction(self._sessions) as session:
            pipeline = store.get_pipeline_by_id(
                session=session, pipeline_id=job.pipeline_id, lock=True
            )
            rule = cstore.get_rule(session=session, pk=job.pk)
            if pipeline is None or rule is None:
                return  # the pipeline was deleted meanwhile
            session.refresh(rule)
            if rule.status == RuleStatus.IN_PROGRESS and rule.claimed_by == self._worker_id:
                _record(rule, succeeded=succeeded, summary=summary, now=now)
            result = self._runtime.advance(session=session, pipeline=pipeline, now=now)
        self._after_commit(result)
        if self._on_change is not None:
            self._on_change()


def _record(rule: RuleExecution, *, succeeded: bool, summary: str, now: datetime) -> None:
    conditions.complete_rule(
        rule=rule,
        succeeded=succeeded,
        summary=summary,
        external_id=rule.rule_execution_id,
        now=now,
    )


__all__ = ["INTERRUPTED", "RuleJob", "RuleRunner"]
