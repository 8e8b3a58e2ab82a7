"""Issue 6, point 2: two `pipebot serve` processes on one PostgreSQL database.

Requests are spread over both (round robin); each process runs the engine's worker and the
scheduler. Every Commands action appends one line naming its execution to a shared file, so an
action that ran twice shows up twice. Approvals are clicked on both processes at once (a
double click landing on two processes). Midway, the process holding the notifier lease is
stopped; the other takes over. Afterwards: every command was answered on either process, no
action ran twice, each approval was decided once, each channel has exactly one parent message
per execution (at its final status) and no thread reply twice.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bot.slack import ids
from bot.slack.ids import ButtonRef
from reliability.figures import record
from reliability.harness import TRACEBACK_MARK, Secrets, ServeProcess, serve_env
from reliability.workload import (
    TERMINAL,
    Driver,
    Observer,
    Sent,
    build_pipeline,
    duplicate_replies,
    execution_in,
    gate_pipeline,
    notification_problems,
    reply_text,
)
from storage import lease_store
from tests.fake_slack import FakeSlack
from tests.helpers import make_repo, wait_for

if TYPE_CHECKING:
    from tests.conftest import PostgresDatabases

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

BUILDS = ["web", "api"]
GATES = ["mobile", "infra"]
STARTS_PER_PIPELINE = 4
READ_COMMANDS = ["help", "list", "status {p}", "history {p} 5", "audit {p}", "subscriptions"]


def _channel(name: str) -> str:
    return "C" + name.upper()


def _lease_holder(observer: Observer) -> str | None:
    with observer.sessions() as session:
        lease = lease_store.get_lease(session=session, name="notifier")
        return lease.holder if lease is not None else None


def _pid_of(holder: str | None) -> int | None:
    parts = (holder or "").split(":")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


def _double_click(
    fake: FakeSlack, servers: list[ServeProcess], ref: ButtonRef
) -> tuple[Sent, Sent]:
    """The same Approve click sent twice at the same moment: to both processes while both
    run, twice to the survivor after the failover."""
    running = [server for server in servers if server.running()]
    targets = (running * 2)[:2]
    clicks: list[Sent | None] = [None, None]

    def click(index: int) -> None:
        one = Driver(fake=fake, servers=[targets[index]], resend_for=30.0)
        clicks[index] = one.click(ids.APPROVE, ref.encode(), channel=_channel(ref.pipeline))

    threads = [threading.Thread(target=click, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    first, second = clicks
    assert first is not None and second is not None
    return first, second


def _gate_answered(observer: Observer, ref: ButtonRef) -> bool:
    return ref.execution not in {w[2] for w in observer.waiting_approvals(ref.pipeline)}


def test_two_processes_on_one_postgresql_act_and_post_once(
    tmp_path: Path, postgres: PostgresDatabases | None
) -> None:
    if postgres is None:
        pytest.skip("PostgreSQL is not reachable (CI never skips: conftest fails the run)")
    database_url = postgres.fresh()
    repos = tmp_path / "repos"
    make_repo(repos / "app", {"README.md": "hello\n", "app.txt": "v1\n"}, "Initial commit")
    marker = tmp_path / "ran.log"
    marker.touch()
    secrets = Secrets()
    with FakeSlack() as fake:
        servers = []
        for label in ("a", "b"):
            env = serve_env(
                data_dir=tmp_path / "data",  # shared, like a shared volume
                database_url=database_url,
                repositories_dir=repos,
                slack_api_url=fake.base_url,
                secrets=secrets,
            )
            servers.append(ServeProcess(env=env, log_path=tmp_path / f"{label}.log", label=label))
        servers[0].start()  # migrates; the second finds the schema current
        servers[1].start()
        observer = Observer(
            database_url=database_url, data_dir=tmp_path / "data", repositories_dir=repos
        )
        driver = Driver(fake=fake, servers=servers)
        sent: list[Sent] = []
        try:
            for name in BUILDS + GATES:
                declaration = (
                    build_pipeline(name, marker=marker)
                    if name in BUILDS
                    else gate_pipeline(name, marker=marker)
                )
                create = driver.command(
                    "create " + json.dumps({"pipeline": declaration}), channel=_channel(name)
                )
                assert "created pipeline" in reply_text(driver.answered(create, timeout=90) or {})
            # Every command on either process.
            for server in servers:
                only = Driver(fake=fake, servers=[server])
                for template in READ_COMMANDS:
                    command = only.command(template.format(p=BUILDS[0]), channel="CREAD")
                    sent.append(command)
                    reply = only.answered(command, timeout=60)
                    assert reply is not None, (server.label, template)
                    assert reply.get("response_type") == "ephemeral"
            decisions: list[tuple[Sent, Sent]] = []
            stop = threading.Event()

            def approve_on_both() -> None:
                while not stop.wait(1.0):
                    for name in GATES:
                        for stage, action, execution, _ in observer.waiting_approvals(name):
                            ref = ButtonRef(
                                pipeline=name, execution=execution, stage=stage, action=action
                            )
                            decisions.append(_double_click(fake, servers, ref))
                            wait_for(
                                functools.partial(_gate_answered, observer, ref),
                                timeout=60,
                                what="the approval to be answered",
                            )

            approver = threading.Thread(target=approve_on_both, daemon=True)
            approver.start()
            holders: set[str] = set()
            failed_over = False
            for round_ in range(STARTS_PER_PIPELINE):
                for name in BUILDS + GATES:
                    start = driver.command(f"start {name}", channel=_channel(name), kind="start")
                    sent.append(start)
                    time.sleep(0.2)
                holder = _lease_holder(observer)
                if holder:
                    holders.add(holder)
                if round_ == 1 and not failed_over:
                    # Stop whichever process runs the notifier: the other takes over.
                    pid = _pid_of(holder)
                    victim = next((s for s in servers if s.pid == pid), servers[0])
                    victim.stop()
                    failed_over = True
            for command in sent:
                reply = driver.answered(command, timeout=120)
                assert reply is not None, command
            survivor = next(s for s in servers if s.running())

            def done() -> bool:
                finals = observer.all_executions()
                return all(s["status"] in TERMINAL for ex in finals.values() for s in ex)

            wait_for(done, timeout=180, what="every execution to finish")
            stop.set()
            approver.join(timeout=120)
            finals = observer.all_executions()
            statuses = Counter(s["status"] for ex in finals.values() for s in ex)
            expected = len(BUILDS + GATES) * (1 + STARTS_PER_PIPELINE)
            assert sum(statuses.values()) == expected, statuses
            assert statuses.get("Succeeded", 0) == expected, (
                statuses,
                [
                    (name, s["pipelineExecutionId"], s.get("statusSummary"))
                    for name, ex in finals.items()
                    for s in ex
                    if s["status"] != "Succeeded"
                ],
            )
            # No action ran twice (each succeeded once: no retries in this run).
            ran = Counter(marker.read_text().split("\n"))
            ran.pop("", None)
            twice = {line: n for line, n in ran.items() if n > 1}
            assert not twice, twice
            runs = 1 + STARTS_PER_PIPELINE  # each pipeline: its first execution, then starts
            assert len(ran) == runs * (2 * len(BUILDS) + len(GATES))  # Build+Deploy, Build
            # Each approval decided once, whichever process got which click.
            # The replies go out after the decision commits, so the last click's may still be
            # on its way when every execution has finished: wait for both before judging.
            for first, second in decisions:

                def answers(first: Sent = first, second: Sent = second) -> list[str] | None:
                    one, other = driver.replies(first), driver.replies(second)
                    texts = [str(r.get("text") or "") for r in one + other]
                    return texts if one and other else None

                try:
                    texts = wait_for(answers, timeout=60, what="both clicks to be answered")
                except AssertionError:
                    texts = answers() or [
                        str(r.get("text") or "")
                        for r in driver.replies(first) + driver.replies(second)
                    ]
                acted = [t for t in texts if " approved " in t and "Already" not in t]
                assert len(acted) == 1, texts
            for name in GATES:
                for summary in finals[name]:
                    details = observer.actions(name, summary["pipelineExecutionId"])
                    gates = [d for d in details if d["actionName"] == "Release"]
                    assert len(gates) == 1 and gates[0]["status"] == "Succeeded", gates
            holders.add(_lease_holder(observer) or "")
            problems: list[str] = ["not checked"]
            duplicates = 0
            parents = 0
            deadline = time.monotonic() + 120
            while problems and not duplicates and time.monotonic() < deadline:
                problems, duplicates, parents = notification_problems(fake, finals, _channel)
                time.sleep(1.0)
            assert duplicates == 0 and not problems, problems[:20]
            assert not duplicate_replies(fake)
            starts_ok = {
                execution_in(str(r.get("text") or ""))
                for s in sent
                if s.kind == "start"
                for r in driver.replies(s)
            }
            audited = {
                e.execution_id for e in observer.audit() if e.what == "start" and e.outcome == "ok"
            }
            assert starts_ok <= audited
            assert survivor.running()
        finally:
            for server in servers:
                server.stop()
            observer.close()
        told: list[Any] = [json.dumps(c.params) for c in fake.response_url_posts()]
        assert not [t for t in told if TRACEBACK_MARK in t]
        record(
            "two_processes",
            database="postgresql",
            processes=2,
            commands=len(sent) + len(BUILDS + GATES),
            executions=sum(statuses.values()),
            actions_run=sum(ran.values()),
            actions_run_twice=len(twice),
            concurrent_double_clicks=len(decisions),
            notifier_holders=len({h for h in holders if h}),
            parent_messages=parents,
            duplicates=duplicates,
            lost=0,
        )
