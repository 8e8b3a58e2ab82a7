"""``pipebot`` (also ``python -m bot``): migrate, serve Slack, run the sandbox or the terminal
demo, run the engine worker."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from bot.logging_setup import configure_logging
from bot.settings import ConfigurationError, Settings, load_settings

if TYPE_CHECKING:
    from slack_bolt import App
    from slack_sdk.web import WebClient

    from bot.ops.permissions import Permissions
    from storage.db import SessionFactory

log = logging.getLogger("pipebot")

STATUS_MARK = {
    "InProgress": "…",
    "Succeeded": "✓",
    "Failed": "✗",
    "Stopped": "■",
    "Stopping": "■",
    "Superseded": "↷",
    "Abandoned": "✗",
    None: " ",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipebot", description="Slack chat-ops for release pipelines."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="upgrade the database schema to the latest version")
    demo = sub.add_parser(
        "demo", help="run the demo pipeline on the embedded engine and print its progress"
    )
    demo.add_argument(
        "--approve",
        choices=["ask", "yes", "no"],
        default="ask",
        help="answer the approval gate: ask on a terminal (default), or approve/reject at once",
    )
    sandbox = sub.add_parser(
        "sandbox",
        help="run the bot against a local stand-in for Slack in the browser (no Slack "
        "workspace needed), with the demo pipeline on the embedded engine",
    )
    sandbox.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; the page can drive pipelines, so "
        "expose it only where you trust everyone who can reach it)",
    )
    sandbox.add_argument("--port", type=int, default=None, help="port (default $PORT, 3000)")
    sub.add_parser("worker", help="run the embedded engine's worker until stopped")
    sub.add_parser(
        "serve",
        help="serve Slack (Socket Mode with SLACK_APP_TOKEN, else HTTP on $PORT) with the "
        "engine's worker in-process",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(level=settings.log_level, secrets=settings.secret_values())
    try:
        if args.command == "migrate":
            return _migrate(settings)
        if args.command == "demo":
            return _demo(settings, approve=args.approve)
        if args.command == "worker":
            return _worker(settings)
        if args.command == "serve":
            return _serve(settings)
        if args.command == "sandbox":
            return _sandbox(settings, host=args.host, port=args.port or settings.port)
    except KeyboardInterrupt:
        return 130
    return 2


def _migrate(settings: Settings) -> int:
    from storage.migrate import upgrade

    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    log.info("database is at the latest schema")
    return 0


def _local_only(settings: Settings, what: str) -> bool:
    if settings.backend != "local":
        print(f"{what} runs on the embedded engine only (PIPEBOT_BACKEND=local).", file=sys.stderr)
        return False
    return True


def _worker(settings: Settings) -> int:
    from bot.ops.client import make_client

    if not _local_only(settings, "pipebot worker"):
        return 2
    _migrate(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client = make_client(settings)
    notify = bool(settings.slack_bot_token)
    if not notify:
        log.info("channel notifications are off in this worker: SLACK_BOT_TOKEN is not set")
    # Source-change polling needs no Slack: the scheduler runs even without a bot token.
    stop_background = _start_notifications(settings, client, notify=notify)
    log.info("engine worker running; stop with Ctrl-C or SIGTERM")
    try:
        while not stop.wait(1.0):
            pass
    finally:
        stop_background()
        client.close()
    return 0


def _holder_id() -> str:
    import os
    import socket
    import uuid

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _throttled(call: Callable[[], None], *, seconds: float) -> Callable[[], None]:
    """``call`` at most once per ``seconds``, and once more after a burst ends.

    The embedded engine reports every change; a burst of changes becomes one call now
    and one at the end of the window, so the last change is never left for the next poll.
    """
    state = {"last": 0.0, "pending": False}
    lock = threading.Lock()

    def fire() -> None:
        with lock:
            state["pending"] = False
            state["last"] = time.monotonic()
        call()

    def throttled() -> None:
        with lock:
            wait = seconds - (time.monotonic() - state["last"])
            if wait > 0:
                if state["pending"]:
                    return
                state["pending"] = True
                timer = threading.Timer(wait, fire)
                timer.daemon = True
                timer.start()
                return
            state["last"] = time.monotonic()
        call()

    return throttled


def _start_notifications(
    settings: Settings,
    pipeline_client: Any,
    *,
    sessions: SessionFactory | None = None,
    web_client: WebClient | None = None,
    permissions: Permissions | None = None,
    notify: bool = True,
) -> Callable[[], None]:
    """Start the background scheduler: the notifier (unless ``notify`` is False) and, on the
    embedded engine, the source poller. Returns the function that stops it."""
    from bot.app import make_web_client
    from bot.engine import LocalCodePipeline
    from bot.engine.source_poller import SourcePoller
    from bot.notify.notifier import Notifier
    from bot.notify.scheduler import start_scheduler, stop_scheduler, wake
    from bot.ops.pipeline_ops import PipelineOps
    from storage.db import make_engine, make_session_factory

    engine = None
    if sessions is None:
        engine = make_engine(settings.resolved_database_url)
        sessions = make_session_factory(engine)
    holder_id = _holder_id()
    notifier = None
    if notify:
        if permissions is None:
            from bot.ops.permissions import Permissions

            # Only the access lists are read (to mention approvers), never group members.
            permissions = Permissions(
                admins=settings.admins, sessions=sessions, group_members=lambda _group: frozenset()
            )
        notifier = Notifier(
            ops=PipelineOps(client=pipeline_client, local=settings.backend == "local"),
            sessions=sessions,
            web_client=web_client if web_client is not None else make_web_client(settings),
            holder_id=holder_id,
            interval_seconds=settings.poll_seconds,
            permissions=permissions,
            approval_reminder_minutes=settings.approval_reminder_minutes,
            digest_zone=settings.digest_zone,
        )
    source_poller = None
    if settings.backend == "local" and isinstance(pipeline_client, LocalCodePipeline):
        source_poller = SourcePoller(
            client=pipeline_client,
            repositories_dir=settings.resolved_repositories_dir,
            sessions=sessions,
            holder_id=holder_id,
            interval_seconds=settings.poll_seconds,
        )
    scheduler = start_scheduler(
        notifier=notifier, interval_seconds=settings.poll_seconds, source_poller=source_poller
    )
    if notifier is not None:
        add_listener = getattr(pipeline_client, "add_change_listener", None)
        if add_listener is not None:
            add_listener(_throttled(lambda: wake(scheduler), seconds=1.0))
        log.info(
            "channel notifications: checking subscribed pipelines every %s s",
            settings.poll_seconds,
        )
    if source_poller is not None:
        log.info("source polling: checking pipeline sources every %s s", settings.poll_seconds)

    def stop() -> None:
        stop_scheduler(scheduler, notifier=notifier, source_poller=source_poller)
        if engine is not None:
            engine.dispose()

    return stop


@dataclass(frozen=True)
class RunningBot:
    """A started bot: the Bolt app and what it runs on."""

    app: App
    pipeline_client: Any
    sessions: SessionFactory


@contextmanager
def _running_bot(settings: Settings) -> Iterator[RunningBot]:
    """Build the bot from ``settings`` (backend, database, Web API client, Bolt app) and
    start its background work (notifications, source polling); stop it all on exit.
    ``serve`` and ``sandbox`` both run the bot through this one factory."""
    from bot.app import build_app, build_services, make_web_client
    from bot.ops.client import make_client
    from storage.db import make_engine, make_session_factory

    engine = make_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    pipeline_client = make_client(settings, run_worker=settings.run_worker)
    try:
        web_client = make_web_client(settings)
        services = build_services(
            settings=settings,
            pipeline_client=pipeline_client,
            sessions=sessions,
            web_client=web_client,
        )
        app = build_app(settings=settings, services=services, web_client=web_client)
        stop_notifications = _start_notifications(
            settings,
            pipeline_client,
            sessions=sessions,
            web_client=web_client,
            permissions=services.permissions,
        )
        try:
            yield RunningBot(app=app, pipeline_client=pipeline_client, sessions=sessions)
        finally:
            stop_notifications()
    finally:
        close = getattr(pipeline_client, "close", None)
        if close is not None:
            close()
        engine.dispose()


def _serve(settings: Settings) -> int:
    from bot.app import serve
    from bot.settings import require_slack

    try:
        require_slack(settings)
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    if settings.migrate_on_start:
        _migrate(settings)
    else:
        settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    with _running_bot(settings) as bot:
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        serve(settings=settings, app=bot.app)
    return 0


def _sandbox(settings: Settings, *, host: str, port: int) -> int:
    from sandbox.runner import run

    if not _local_only(settings, "The sandbox"):
        return 2
    if not 0 < port < 65536:
        print(f"--port must be between 1 and 65535 (got {port}).", file=sys.stderr)
        return 2
    _migrate(settings)
    return run(settings, host=host, port=port, start_bot=_running_bot, out=sys.stdout)


def _demo(settings: Settings, *, approve: str) -> int:
    from bot.demo import DEMO_PIPELINE, demo_declaration, ensure_demo_repository
    from bot.ops.client import make_client

    if not _local_only(settings, "The demo"):
        return 2
    _migrate(settings)
    ensure_demo_repository(settings.resolved_repositories_dir)
    client = make_client(settings)
    try:
        try:
            client.get_pipeline(name=DEMO_PIPELINE)
            execution_id = client.start_pipeline_execution(name=DEMO_PIPELINE)[
                "pipelineExecutionId"
            ]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "PipelineNotFoundException":
                raise
            client.create_pipeline(
                pipeline=demo_declaration(deploy_root=settings.resolved_data_dir / "deploy")
            )
            execution_id = client.list_pipeline_executions(
                pipelineName=DEMO_PIPELINE, maxResults=1
            )["pipelineExecutionSummaries"][0]["pipelineExecutionId"]
        print(f"pipeline {DEMO_PIPELINE}: execution {execution_id}")
        return _follow(client, DEMO_PIPELINE, execution_id, approve=approve)
    finally:
        client.close()


def _follow(client: Any, name: str, execution_id: str, *, approve: str) -> int:
    """Print each stage's progress as it changes until the execution finishes."""
    last = ""
    answered: set[str] = set()
    while True:
        execution = client.get_pipeline_execution(
            pipelineName=name, pipelineExecutionId=execution_id
        )["pipelineExecution"]
        state = client.get_pipeline_state(name=name)
        lines = []
        for stage in state["stageStates"]:
            latest = stage.get("latestExecution", {})
            mine = latest.get("pipelineExecutionId") == execution_id
            status = latest.get("status") if mine else None
            actions = ", ".join(
                f"{a['actionName']} {STATUS_MARK.get(a.get('latestExecution', {}).get('status'))}"
                for a in stage["actionStates"]
                if mine
            )
            lines.append(f"  {STATUS_MARK.get(status, ' ')} {stage['stageName']:<12} {actions}")
            for action in stage["actionStates"]:
                token = action.get("latestExecution", {}).get("token")
                if mine and token and token not in answered:
                    answered.add(token)
                    _answer(client, name, stage["stageName"], action["actionName"], token, approve)
        text = "\n".join(lines)
        if text != last:
            print(f"[{time.strftime('%H:%M:%S')}] {execution['status']}\n{text}", flush=True)
            last = text
        if execution["status"] not in ("InProgress", "Stopping"):
            summary = execution.get("statusSummary")
            detail = f" ({summary})" if summary else ""
            print(f"execution {execution_id}: {execution['status']}{detail}")
            return 0 if execution["status"] == "Succeeded" else 1
        time.sleep(0.25)


def _answer(client: Any, name: str, stage: str, action: str, token: str, approve: str) -> None:
    if approve == "ask" and sys.stdin.isatty():
        reply = input(f"Approval {stage}/{action} is waiting. Approve? [y/N] ").strip().lower()
        verdict = "Approved" if reply in ("y", "yes") else "Rejected"
    else:
        verdict = "Rejected" if approve == "no" else "Approved"
    client.put_approval_result(
        pipelineName=name,
        stageName=stage,
        actionName=action,
        result={"summary": f"{verdict} from the pipebot demo", "status": verdict},
        token=token,
    )
    print(f"  -> {verdict}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
