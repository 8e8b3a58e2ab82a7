"""``pipebot`` (also ``python -m bot``): migrate, serve Slack, run the sandbox or the terminal
demo, run the engine worker.

This module only parses arguments and calls what does the work: ``bot.app`` builds and
runs the bot and its background work, ``bot.demo`` the terminal demo, ``sandbox.runner``
the sandbox.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from bot.logging_setup import configure_logging
from bot.settings import ConfigurationError, Settings, load_settings

log = logging.getLogger("pipebot")


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
        help="answer the production gate: ask (default) puts the question on the terminal "
        "and needs one; yes approves it, no rejects it, at once",
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
    from bot.app import run_worker

    if not _local_only(settings, "pipebot worker"):
        return 2
    _migrate(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run_worker(settings, stop=stop)
    return 0


def _serve(settings: Settings) -> int:
    from bot.app import running_bot, serve
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
    with running_bot(settings) as bot:
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        serve(settings=settings, app=bot.app)
    return 0


def _sandbox(settings: Settings, *, host: str, port: int) -> int:
    from bot.app import running_bot
    from sandbox.runner import run

    if not _local_only(settings, "The sandbox"):
        return 2
    if not 0 < port < 65536:
        print(f"--port must be between 1 and 65535 (got {port}).", file=sys.stderr)
        return 2
    _migrate(settings)
    return run(settings, host=host, port=port, start_bot=running_bot, out=sys.stdout)


def _demo(settings: Settings, *, approve: str) -> int:
    from bot.demo import (
        ensure_demo_projects,
        ensure_demo_repository,
        refuse_ask_without_terminal,
        run_demo,
    )
    from bot.engine.codebuild_projects import registry_path
    from bot.ops.client import make_local_client

    if not _local_only(settings, "The demo"):
        return 2
    refusal = refuse_ask_without_terminal(approve, interactive=sys.stdin.isatty())
    if refusal is not None:  # before anything is created or started
        print(refusal, file=sys.stderr)
        return 2
    _migrate(settings)
    ensure_demo_repository(settings.resolved_repositories_dir)
    ensure_demo_projects(
        registry_path(data_dir=settings.resolved_data_dir, configured=settings.codebuild_projects)
    )
    client = make_local_client(settings)
    try:
        return run_demo(client, approve=approve)
    finally:
        client.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
