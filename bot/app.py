"""Build the Bolt app from settings and injected services; serve it.

``build_app`` is the one factory: each ``handlers`` module registers its
listeners on the app. ``serve`` runs it in Socket Mode when an app-level token
is configured, otherwise over HTTP with waitress (a production WSGI server with
a thread pool): ``POST /slack/events`` for every Slack request, ``GET /healthz``
for probes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import App, BoltResponse
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)
from slack_sdk.web import WebClient

from bot.ops.permissions import Permissions
from bot.ops.pipeline_ops import PipelineOps
from bot.settings import Settings
from handlers import actions, commands, home, views
from handlers.common import Services, group_members_via
from storage.db import SessionFactory

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
    *, settings: Settings, pipeline_client: Any, sessions: SessionFactory, web_client: WebClient
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
