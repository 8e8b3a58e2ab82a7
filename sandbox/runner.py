"""``pipebot sandbox``: the real bot against the local stand-in for Slack, in one process.

The bot is built exactly as ``pipebot serve`` builds it (``start_bot`` is the CLI's
factory) with three settings of the sandbox's own: a bot token and a signing secret
generated for this run, and ``SLACK_API_URL`` pointing at the stand-in. Its Slack endpoint
is served by waitress on an ephemeral port of 127.0.0.1, as ``serve`` serves it; the page
reaches it only through signed requests. On first start the demo repository is created
and the demo pipeline is created from ``#releases`` with ``/pipeline create`` (which
subscribes the channel), by the sandbox's admin.
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO

from botocore.exceptions import ClientError
from pydantic import SecretStr

from bot.demo import (
    DEMO_PIPELINE,
    DEMO_REPOSITORY,
    demo_declaration,
    ensure_demo_projects,
    ensure_demo_repository,
    push_change,
)
from bot.engine.codebuild_projects import registry_path
from bot.logging_setup import configure_logging
from bot.settings import Settings
from sandbox.delivery import Gateway
from sandbox.server import SandboxServer
from sandbox.workspace import RELEASES, User, UserGroup, Workspace

log = logging.getLogger(__name__)

ADMIN = User("U0ALICE", "alice", "Alice Admin", title="admin")
DEVELOPER = User("U0BOB", "bob", "Bob Builder", title="developer, not an admin")
RELEASE_TEAM = UserGroup("S0RELEASE", "release-team", (ADMIN.id,))


class RunningBot(Protocol):
    """What the sandbox needs of a started bot."""

    @property
    def app(self) -> Any: ...

    @property
    def pipeline_client(self) -> Any: ...

    @property
    def sessions(self) -> Any: ...


StartBot = Callable[[Settings], AbstractContextManager[RunningBot]]


@dataclass(frozen=True)
class Secrets:
    bot_token: str
    signing_secret: str

    @classmethod
    def generate(cls) -> Secrets:
        return cls(
            bot_token=f"xoxb-sandbox-{secrets.token_hex(16)}",
            signing_secret=secrets.token_hex(32),
        )


def bot_settings(settings: Settings, *, api_url: str, keys: Secrets) -> Settings:
    """The bot's settings in the sandbox: the stand-in's URL, this run's secrets, the
    sandbox's admin. Everything else is the user's configuration."""
    return settings.model_copy(
        update={
            "slack_bot_token": SecretStr(keys.bot_token),
            "slack_signing_secret": SecretStr(keys.signing_secret),
            "slack_app_token": None,
            "slack_api_url": api_url,
            "admins_raw": ADMIN.id,
        }
    )


def _serve_bot_http(app: Any, *, threads: int) -> tuple[Any, str]:
    """The bot's Slack endpoint, served as ``pipebot serve`` serves it, on 127.0.0.1."""
    from waitress.server import BaseWSGIServer, create_server

    from bot.app import SLACK_PATH, wsgi_app

    server = create_server(
        wsgi_app(app), host="127.0.0.1", port=0, threads=threads, ident="pipebot"
    )
    assert isinstance(server, BaseWSGIServer)  # one address, so one socket
    port = int(server.getsockname()[1])
    thread = threading.Thread(target=server.run, name="pipebot-sandbox-bot", daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{port}{SLACK_PATH}"


def _pipeline_exists(client: Any) -> bool:
    try:
        client.get_pipeline(name=DEMO_PIPELINE)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "PipelineNotFoundException":
            return False
        raise
    return True


def _subscribed(sessions: Any) -> bool:
    from storage import notify_store

    with sessions() as session:
        subscriptions = notify_store.subscriptions_for_pipeline(
            session=session, pipeline=DEMO_PIPELINE
        )
    return any(s.channel_id == RELEASES for s in subscriptions)


def seed(*, gateway: Gateway, bot: RunningBot, settings: Settings, wait: float = 60.0) -> str:
    """First start: the demo pipeline, created from #releases by the admin through the bot.
    Later starts: #releases subscribed again if someone unsubscribed it. Returns what it did."""
    ensure_demo_repository(settings.resolved_repositories_dir)
    ensure_demo_projects(
        registry_path(data_dir=settings.resolved_data_dir, configured=settings.codebuild_projects)
    )
    if not _pipeline_exists(bot.pipeline_client):
        declaration = demo_declaration()
        text = "create " + json.dumps(declaration, separators=(",", ":"))
        gateway.slash_command(user=ADMIN.id, channel=RELEASES, text=text)
        deadline = time.monotonic() + wait
        while not _pipeline_exists(bot.pipeline_client):
            if time.monotonic() > deadline:
                raise RuntimeError("the demo pipeline was not created; see the log above")
            time.sleep(0.1)
        return "created the demo pipeline from #releases"
    if not _subscribed(bot.sessions):
        gateway.slash_command(user=ADMIN.id, channel=RELEASES, text=f"subscribe {DEMO_PIPELINE}")
        return "subscribed #releases to the demo pipeline"
    return "the demo pipeline is ready"


def pusher(repositories_dir: Path, poll_seconds: float) -> Callable[[], str]:
    """The page's "push a change": commit an edit to the demo repository."""

    def push() -> str:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        sha = push_change(repositories_dir, message=f"Update the home page ({stamp} UTC)")
        return (
            f"Pushed {sha[:7]} to {DEMO_REPOSITORY}/main; the source poller starts an execution "
            f"within {poll_seconds:g} s."
        )

    return push


def run(
    settings: Settings,
    *,
    host: str,
    port: int,
    start_bot: StartBot,
    out: TextIO,
    stop: threading.Event | None = None,
) -> int:
    """Run the sandbox until ``stop`` is set (or SIGINT/SIGTERM); 0 on a clean stop."""
    keys = Secrets.generate()
    configure_logging(
        level=settings.log_level,
        secrets=[*settings.secret_values(), keys.bot_token, keys.signing_secret],
    )
    workspace = Workspace(
        bot_token=keys.bot_token,
        users=[ADMIN, DEVELOPER],
        usergroups=[RELEASE_TEAM],
        state_file=settings.resolved_data_dir / "sandbox" / "workspace.json",
    )
    try:
        server = SandboxServer(
            workspace=workspace,
            host=host,
            port=port,
            push_change=pusher(settings.resolved_repositories_dir, settings.poll_seconds),
        )
    except OSError as exc:
        print(
            f"pipebot sandbox: cannot listen on {host}:{port} ({exc.strerror}); "
            "set PORT or pass --port to use another port.",
            file=out,
        )
        return 2
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    config = bot_settings(settings, api_url=server.api_url, keys=keys)
    bot_http = None
    try:
        with start_bot(config) as bot:
            bot_http, bot_url = _serve_bot_http(bot.app, threads=settings.server_threads)
            gateway = Gateway(
                workspace=workspace,
                bot_url=bot_url,
                signing_secret=keys.signing_secret,
                root_url=server.url,
                command=settings.command,
            )
            server.attach(gateway)
            server.start()
            try:
                done = seed(gateway=gateway, bot=bot, settings=settings)
            except RuntimeError as exc:
                print(f"pipebot sandbox: {exc}", file=out)
                return 1
            log.info("sandbox: %s", done)
            print(
                f"pipebot sandbox: open {server.url}  (Ctrl-C stops it)\n"
                f"  #releases follows the pipeline '{DEMO_PIPELINE}'; type "
                f"`{settings.command} start {DEMO_PIPELINE}` there, or `{settings.command} help`.",
                file=out,
                flush=True,
            )
            stop.wait()
    finally:
        server.stop()
        if bot_http is not None:
            bot_http.close()
    return 0
