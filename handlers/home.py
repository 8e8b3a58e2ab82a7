"""The App Home tab: pipelines, their latest status, approvals waiting for the viewer."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App
from slack_sdk.errors import SlackApiError
from slack_sdk.web import WebClient

from bot.ops.permissions import Permission
from bot.ops.pipeline_ops import OpsError
from bot.ops.pipeline_state import is_in_progress
from bot.slack.home import home_view
from bot.slack.messages import error_blocks
from handlers.common import Services

log = logging.getLogger(__name__)


def home_for(services: Services, user_id: str) -> dict[str, Any]:
    """Build the Home view for ``user_id`` (approvals listed only where they may approve)."""
    pipelines = services.ops.list_with_latest()
    approvals = []
    for summary, latest in pipelines:
        if latest is None or not is_in_progress(latest.get("status")):
            continue
        name = summary["name"]
        if not services.permissions.check(
            user_id=user_id, permission=Permission.APPROVE, pipeline=name
        ).allowed:
            continue
        for pending in services.ops.pending_approvals(name):
            approvals.append(
                (name, pending.stage, pending.action, pending.execution_id or "", pending.since)
            )
    return home_view(
        pipelines=pipelines,
        approvals=approvals,
        now=services.now(),
        trial_mode=services.permissions.trial_mode,
    )


def register(app: App, services: Services) -> None:
    def on_home_opened(event: dict[str, Any], client: WebClient) -> None:
        if event.get("tab", "home") != "home":
            return
        services.later(publish, str(event.get("user")), client)

    def publish(user_id: str, client: WebClient) -> None:
        try:
            view = home_for(services, user_id)
        except OpsError as exc:
            view = {"type": "home", "blocks": error_blocks(message=exc.message)}
        try:
            client.views_publish(user_id=user_id, view=view)
        except SlackApiError:
            log.exception("could not publish the Home tab for %s", user_id)

    app.event("app_home_opened")(on_home_opened)
