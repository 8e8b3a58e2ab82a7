"""The composition root: every part of a running pipebot is built and wired here.

``running_bot`` builds the bot from settings (backend, database, Web API client,
the Bolt app) and starts its background work; ``serve`` and the sandbox both run
the bot through it, and ``run_worker`` runs the background work alone. ``build_app``
is the one Bolt factory: each ``handlers`` module registers its listeners on the
app. ``serve`` runs it in Socket Mode when an app-level token is configured,
otherwise over HTTP with waitress (a production WSGI server with a thread pool):
``POST /slack/events`` for every Slack request, ``GET /healthz`` for probes.
``start_background`` starts the scheduler (notifier and, on the embedded engine,
the source poller) and wires the engine's change feed to wake the notifier.

No other module builds these parts or imports upwards from here.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from slack_bolt import App, BoltResponse
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)
from slack_sdk.web import WebClient

from bot.engine import LocalCodePipeline
from bot.engine.source_poller import LEASE_NAME as SOURCE_POLLER_LEASE
from bot.engine.source_poller import SourcePoller
from bot.notify.lease import JobLease
from bot.notify.notifier import Notifier
from bot.notify.scheduler import start_scheduler, stop_scheduler, wake
from bot.ops.client import ChangeFeed, PipelineClient, close_client, make_client
from bot.ops.permissions import Permissions
from bot.ops.pipeline_ops import PipelineOps
from bot.settings import Settings
from handlers import actions, commands, home, views
from handlers.common import Services, group_members_via
from storage.db import SessionFactory, make_engine, make_session_factory

log = logging.getLogger(__name__)

SLACK_PATH = "/slack/events"
HEALTH_PATH = "/healthz"


def make_web_client(settings: Settings) -> WebClient:
    """The Web API client: retries 429s (Retry-After) and connection errors."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    kwargs: dict[str, Any] = {"token": token}
    if settings.slack_api_url:
        kwargs["base_url"] = settings.slack_api_url
    client = WebClient(**kwargs)
    client.retry_handlers.extend(
        [RateLimitErrorRetryHandler(max_retry_count=3), ConnectionErrorRetryHandler()]
    )
    return client


def build_services(
    *,
    settings: Settings,
    pipeline_client: PipelineClient,
    sessions: SessionFactory,
    web_client: WebClient,
) -> Services:
    return Services(
        settings=settings,
        ops=PipelineOps(client=pipeline_client, local=settings.backend == "local"),
        permissions=Permissions(
            admins=settings.admins,
            sessions=sessions,
            group_members=group_members_via(web_client),
        ),
        sessions=sessions,
        # One thread by default: the work is mostly CPU under the GIL, and more threads
        # competing with the request threads slow the acks (benchmarks/ack.py). Slow
        # network-bound backends (AWS) may want more.
        background=ThreadPoolExecutor(
            max_workers=settings.slack_workers, thread_name_prefix="pipebot-slack-work"
        ),
    )


def build_app(*, settings: Settings, services: Services, web_client: WebClient) -> App:
    signing_secret = (
        settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
    )
    app = App(
        client=web_client,
        signing_secret=signing_secret,
        # In HTTP mode Bolt verifies every request's signature; Socket Mode has none.
        request_verification_enabled=not settings.socket_mode,
        token_verification_enabled=False,
        raise_error_for_unhandled_request=False,
    )

    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> BoltResponse:
        kind = body.get("type") or body.get("command") or "request"
        log.error("unhandled error while handling a Slack %s", kind, exc_info=error)
        return BoltResponse(status=200, body="")

    for module in (commands, actions, views, home):
        module.register(app, services)
    return app


def wsgi_app(app: App) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """Slack requests to Bolt, health probes answered here, everything else 404."""
    slack = SlackRequestHandler(app, path=SLACK_PATH)

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == HEALTH_PATH and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            body = json.dumps({"ok": True}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        if path == SLACK_PATH:
            try:
                return slack(environ, start_response)
            except (ValueError, TypeError, AttributeError, LookupError) as exc:
                # Bolt parses the body before it checks the signature, and its routing
                # indexes into the payload: a body that is not Slack's shape (a payload that
                # is not a JSON object, a block_actions without actions) raises here. Answer
                # 400, never a 500 with a traceback; log no body (it may hold anything). Our
                # listeners' own errors never get here: Bolt hands them to `on_error`.
                log.warning("refused a malformed Slack request: %s", type(exc).__name__)
                start_response("400 Bad Request", [("Content-Type", "text/plain")])
                return [b"malformed request"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]

    return application


def serve(*, settings: Settings, app: App) -> None:
    """Block serving Slack: Socket Mode with an app token, else HTTP on $PORT."""
    if settings.slack_app_token is not None:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        log.info("connecting to Slack in Socket Mode")
        handler = SocketModeHandler(app, settings.slack_app_token.get_secret_value())
        handler.start()  # type: ignore[no-untyped-call]
        return
    import waitress

    log.info("serving Slack requests on http://0.0.0.0:%d%s", settings.port, SLACK_PATH)
    waitress.serve(
        wsgi_app(app),
        host="0.0.0.0",
        port=settings.port,
        threads=settings.server_threads,
        ident="pipebot",
    )


# --- background work ---------------------------------------------------------------------------


def holder_id() -> str:
    """This process's name in scheduler leases: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def start_background(
    *,
    settings: Settings,
    pipeline_client: PipelineClient,
    sessions: SessionFactory,
    web_client: WebClient | None = None,
    permissions: Permissions | None = None,
    notify: bool = True,
) -> Callable[[], None]:
    """Start the background scheduler: the notifier (unless ``notify`` is False) and, on the
    embedded engine, the source poller. Returns the function that stops it."""
    holder = holder_id()
    notifier = None
    if notify:
        if permissions is None:
            # Only the access lists are read (to mention approvers), never group members.
            permissions = Permissions(
                admins=settings.admins, sessions=sessions, group_members=lambda _group: frozenset()
            )
        notifier = Notifier(
            ops=PipelineOps(client=pipeline_client, local=settings.backend == "local"),
            sessions=sessions,
            web_client=web_client if web_client is not None else make_web_client(settings),
            holder_id=holder,
            interval_seconds=settings.poll_seconds,
            permissions=permissions,
            approval_reminder_minutes=settings.approval_reminder_minutes,
            digest_zone=settings.digest_zone,
            command=settings.command,
        )
    source_poller = None
    if isinstance(pipeline_client, LocalCodePipeline):
        source_poller = SourcePoller(
            client=pipeline_client,
            repositories_dir=settings.resolved_repositories_dir,
            sessions=sessions,
            lease=JobLease(
                sessions=sessions,
                name=SOURCE_POLLER_LEASE,
                holder_id=holder,
                interval_seconds=settings.poll_seconds,
            ),
        )
    background = start_scheduler(
        notifier=notifier, interval_seconds=settings.poll_seconds, source_poller=source_poller
    )
    if notifier is not None:
        if isinstance(pipeline_client, ChangeFeed):
            # Every change this process commits runs the notifier at once (a wake is an
            # event: one that lands during a run is never lost, a burst costs one read).
            pipeline_client.add_change_listener(lambda: wake(background))
        log.info(
            "channel notifications: at once on every change, and every %s s",
            settings.poll_seconds,
        )
    if source_poller is not None:
        log.info("source polling: checking pipeline sources every %s s", settings.poll_seconds)

    def stop() -> None:
        stop_scheduler(background, notifier=notifier, source_poller=source_poller)

    return stop


def run_worker(settings: Settings, *, stop: threading.Event) -> None:
    """The embedded engine's worker with the background work (source polling, and channel
    notifications when a bot token is set), until ``stop`` is set."""
    engine = make_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    client = make_client(settings)
    try:
        notify = bool(settings.slack_bot_token)
        if not notify:
            log.info("channel notifications are off in this worker: SLACK_BOT_TOKEN is not set")
        # Source-change polling needs no Slack: the scheduler runs even without a bot token.
        stop_background = start_background(
            settings=settings, pipeline_client=client, sessions=sessions, notify=notify
        )
        log.info("engine worker running; stop with Ctrl-C or SIGTERM")
        try:
            while not stop.wait(1.0):
                pass
        finally:
            stop_background()
    finally:
        close_client(client)
        engine.dispose()


@dataclass(frozen=True)
class RunningBot:
    """A started bot: the Bolt app and what it runs on."""

    app: App
    pipeline_client: PipelineClient
    sessions: SessionFactory


@contextmanager
def running_bot(settings: Settings) -> Iterator[RunningBot]:
    """Build the bot from ``settings`` (backend, database, Web API client, Bolt app) and
    start its background work (notifications, source polling); stop it all on exit.
    ``serve`` and ``sandbox`` both run the bot through this one factory."""
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
        stop_background = start_background(
            settings=settings,
            pipeline_client=pipeline_client,
            sessions=sessions,
            web_client=web_client,
            permissions=services.permissions,
        )
        try:
            yield RunningBot(app=app, pipeline_client=pipeline_client, sessions=sessions)
        finally:
            stop_background()
    finally:
        close_client(pipeline_client)
        engine.dispose()
