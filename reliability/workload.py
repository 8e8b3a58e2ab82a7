"""The busy release workload the process-level checks run, and a driver that sends it.

``Driver`` sends signed slash commands and button clicks, as Slack would, to one or several
``pipebot serve`` processes (round robin), and resends a request whose server was down
(crashed, restarting) with the same ``trigger_id``, as a user retrying would. It keeps count
of what was sent and answered. ``Observer`` reads the engine and pipebot's tables directly
(without a worker) to check the end state.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from reliability.harness import ServeProcess, post
from tests.fake_slack import FakeSlack
from tests.helpers import approval_action, commands_action, pipeline, source_action

ADMIN: Final = "UADMIN"
TERMINAL: Final = frozenset({"Succeeded", "Failed", "Stopped", "Superseded", "Cancelled"})
INTERRUPTED_MARK: Final = "Interrupted"


def _marked(action: str, commands: list[str], marker: Path | None) -> list[str]:
    """``commands``, then a line appended to ``marker`` saying this action ran (O_APPEND
    writes of one short line are atomic, so several processes may share the file)."""
    if marker is None:
        return commands
    return [*commands, f'echo "#{{codepipeline.PipelineExecutionId}} {action}" >> {marker}']


def build_pipeline(
    name: str, *, mode: str = "PARALLEL", seconds: float = 0.4, marker: Path | None = None
) -> dict[str, Any]:
    """Source → Build → Deploy, each a short Commands action (so a kill often lands mid-run)."""
    build = _marked("Build", [f"sleep {seconds}", "cat app.txt"], marker)
    deploy = _marked("Deploy", [f"sleep {seconds / 2}", "echo deployed"], marker)
    return pipeline(
        name,
        [
            ("Source", [source_action()]),
            ("Build", [commands_action("Build", build)]),
            ("Deploy", [commands_action("Deploy", deploy)]),
        ],
        executionMode=mode,
    )


def gate_pipeline(
    name: str, *, mode: str = "QUEUED", seconds: float = 0.3, marker: Path | None = None
) -> dict[str, Any]:
    """Source → Build → Gate (a Manual approval that waits for a human)."""
    build = _marked("Build", [f"sleep {seconds}", "cat app.txt"], marker)
    return pipeline(
        name,
        [
            ("Source", [source_action()]),
            ("Build", [commands_action("Build", build)]),
            ("Gate", [approval_action("Release")]),
        ],
        executionMode=mode,
    )


Build = Callable[[str, str], tuple[str, dict[str, str]]]
"""Builds a signed request from a response_url name and a trigger_id."""


@dataclass
class Sent:
    """One request as sent: what, to which response_url name, and how it was answered."""

    kind: str
    text: str
    name: str
    trigger_id: str
    build: Build = field(repr=False)
    status: int = 0
    attempts: int = 0


@dataclass
class Driver:
    """Sends what Slack users would, to the servers that are up."""

    fake: FakeSlack
    servers: Sequence[ServeProcess]
    resend_for: float = 180.0
    sent: list[Sent] = field(default_factory=list)
    resent_unanswered: int = 0
    _rr: Any = field(default_factory=lambda: itertools.count())
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _targets(self) -> list[ServeProcess]:
        with self._lock:
            start = next(self._rr)
        ordered = [self.servers[(start + i) % len(self.servers)] for i in range(len(self.servers))]
        return [s for s in ordered if s.running() and s.port]

    def send(self, kind: str, text: str, build: Build) -> Sent:
        """Send until a server answers (resending the same request after a crash)."""
        name = f"{kind}-{uuid.uuid4().hex[:10]}"
        trigger_id = f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex[:16]}"
        record = Sent(kind=kind, text=text, name=name, trigger_id=trigger_id, build=build)
        with self._lock:
            self.sent.append(record)
        self.send_again(record)
        return record

    def send_again(self, record: Sent) -> None:
        """(Re)send ``record`` until a server answers it, re-signed with a fresh timestamp."""
        deadline = time.monotonic() + self.resend_for
        while time.monotonic() < deadline:
            for server in self._targets():
                record.attempts += 1
                body, headers = record.build(record.name, record.trigger_id)
                status, _ = post(server.url, body, headers)
                if status:
                    record.status = status
                    return
            time.sleep(0.2)

    def answered(self, sent: Sent, *, timeout: float) -> dict[str, Any] | None:
        """The reply to ``sent``; resent (same trigger_id) while acked but never answered,
        as a user who saw nothing would (the process died between the ack and the work)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            wait = min(20.0, max(1.0, deadline - time.monotonic()))
            reply = self.wait_reply(sent, timeout=wait)
            if reply is not None:
                return reply
            with self._lock:
                self.resent_unanswered += 1
            self.send_again(sent)
        return None

    def command(
        self, text: str, *, user: str = ADMIN, channel: str = "C1", kind: str = "command"
    ) -> Sent:
        from tests.slack_requests import slash_command

        def build(name: str, trigger_id: str) -> tuple[str, dict[str, str]]:
            return slash_command(
                text=text,
                user_id=user,
                channel_id=channel,
                response_url=self.fake.response_url(name),
                trigger_id=trigger_id,
            )

        return self.send(kind, text, build)

    def click(
        self,
        action_id: str,
        value: str,
        *,
        user: str = ADMIN,
        channel: str = "C1",
        kind: str = "click",
    ) -> Sent:
        from tests.slack_requests import block_action

        def build(name: str, trigger_id: str) -> tuple[str, dict[str, str]]:
            return block_action(
                action_id=action_id,
                value=value,
                user_id=user,
                channel_id=channel,
                response_url=self.fake.response_url(name),
                trigger_id=trigger_id,
            )

        return self.send(kind, f"{action_id} {value}", build)

    def replies(self, sent: Sent) -> list[dict[str, Any]]:
        return [c.params for c in self.fake.response_url_posts(sent.name)]

    def wait_reply(self, sent: Sent, *, timeout: float = 60.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.replies(sent)
            if found:
                return found[0]
            time.sleep(0.05)
        return None


def reply_text(params: dict[str, Any]) -> str:
    return json.dumps(params, ensure_ascii=False)


class Observer:
    """Reads the engine and pipebot's tables of a deployment, without running any action."""

    def __init__(self, *, database_url: str, data_dir: Any, repositories_dir: Any) -> None:
        from bot.engine import LocalCodePipeline
        from storage.db import make_engine, make_session_factory

        self.client = LocalCodePipeline(
            database_url=database_url,
            data_dir=data_dir,
            repositories_dir=repositories_dir,
            run_worker=False,
        )
        self._db = make_engine(database_url)
        self.sessions = make_session_factory(self._db)

    def close(self) -> None:
        self.client.close()
        self._db.dispose()

    def names(self) -> list[str]:
        return [p["name"] for p in self.client.list_pipelines()["pipelines"]]

    def executions(self, name: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"pipelineName": name, "maxResults": 100}
            if token:
                params["nextToken"] = token
            page = self.client.list_pipeline_executions(**params)
            found.extend(page["pipelineExecutionSummaries"])
            token = page.get("nextToken")
            if not token:
                return found

    def all_executions(self) -> dict[str, list[dict[str, Any]]]:
        return {name: self.executions(name) for name in self.names()}

    def actions(self, name: str, execution_id: str) -> list[dict[str, Any]]:
        return list(
            self.client.list_action_executions(
                pipelineName=name, filter={"pipelineExecutionId": execution_id}, maxResults=100
            )["actionExecutionDetails"]
        )

    def waiting_approvals(self, name: str) -> list[tuple[str, str, str, str]]:
        """(stage, action, execution, token) of each approval waiting in ``name``."""
        state = self.client.get_pipeline_state(name=name)
        found = []
        for stage in state["stageStates"]:
            execution = (stage.get("latestExecution") or {}).get("pipelineExecutionId", "")
            for action in stage["actionStates"]:
                latest = action.get("latestExecution") or {}
                if latest.get("status") == "InProgress" and latest.get("token"):
                    found.append(
                        (stage["stageName"], action["actionName"], execution, latest["token"])
                    )
        return found

    def audit(self, *, limit: int = 100_000) -> list[Any]:
        from storage import bot_store

        with self.sessions() as session:
            return list(bot_store.list_audit(session=session, limit=limit))

    def interrupted_stage(self, name: str, execution_id: str) -> str | None:
        """The stage whose latest run of an action failed as interrupted, if any."""
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for detail in self.actions(name, execution_id):
            key = (str(detail["stageName"]), str(detail["actionName"]))
            known = latest.get(key)
            if known is None or detail["startTime"] > known["startTime"]:
                latest[key] = detail
        for (stage, _action), detail in latest.items():
            result = (detail.get("output") or {}).get("executionResult") or {}
            summary = str(result.get("externalExecutionSummary") or "")
            if detail.get("status") == "Failed" and summary.startswith(INTERRUPTED_MARK):
                return stage
        return None


def execution_in(text: str) -> str | None:
    """The first execution ID (a UUID) between backticks in ``text``."""
    for part in text.split("`")[1::2]:
        if len(part) == 36 and part.count("-") == 4:
            return part
    return None


def parents_by_execution(fake: FakeSlack, channel: str) -> dict[str, list[dict[str, Any]]]:
    """Each execution's parent messages (not thread replies) in ``channel``."""
    found: dict[str, list[dict[str, Any]]] = {}
    for message in fake.messages(channel):
        if message.get("thread_ts"):
            continue
        blocks = message.get("blocks") or []
        footer = json.dumps(blocks[-1], ensure_ascii=False) if blocks else ""
        execution = execution_in(footer)
        if execution is not None:
            found.setdefault(execution, []).append(message)
    return found


def shows_status(message: dict[str, Any], status: str) -> bool:
    """Whether a parent message's status line shows ``status``."""
    blocks = message.get("blocks") or []
    return len(blocks) > 1 and f"*{status}*" in json.dumps(blocks[1], ensure_ascii=False)


def notification_problems(
    fake: FakeSlack,
    finals: dict[str, list[dict[str, Any]]],
    channel: Callable[[str], str],
) -> tuple[list[str], int, int]:
    """(problems, duplicate parents, parents) for one parent per execution at its status."""
    problems: list[str] = []
    duplicates = 0
    total = 0
    for name, executions in finals.items():
        parents = parents_by_execution(fake, channel(name))
        for summary in executions:
            execution_id = summary["pipelineExecutionId"]
            mine = parents.get(execution_id, [])
            total += len(mine)
            if len(mine) > 1:
                duplicates += len(mine) - 1
                problems.append(f"{name} {execution_id}: {len(mine)} parents")
            elif not mine:
                problems.append(f"{name} {execution_id}: no parent")
            elif not shows_status(mine[0], summary["status"]):
                problems.append(f"{name} {execution_id}: parent not at {summary['status']}")
    return problems, duplicates, total


def duplicate_replies(fake: FakeSlack) -> list[str]:
    """Thread replies posted twice with the same content under the same parent."""
    seen: Counter[tuple[str, str, str]] = Counter()
    for message in fake.messages():
        thread = message.get("thread_ts")
        if thread:
            body = json.dumps(message.get("blocks") or message.get("text"), sort_keys=True)
            seen[(str(message.get("channel", "")), str(thread), body)] += 1
    return [f"{key[1]}: {count}x" for key, count in seen.items() if count > 1]
