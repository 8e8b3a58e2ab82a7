"""The App Home tab: pipelines, their latest status, approvals waiting for the viewer.

It is drawn when the user opens it and again after a click on it (``handlers.actions``):
``handlers.common.publish_home`` does both."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App
from slack_sdk.web import WebClient

from handlers.common import Services, publish_home

log = logging.getLogger(__name__)


def register(app: App, services: Services) -> None:
    def on_home_opened(event: dict[str, Any], client: WebClient) -> None:
        if event.get("tab", "home") != "home":
            return
        services.later(publish, str(event.get("user")), client)

    def publish(user_id: str, client: WebClient) -> None:
        publish_home(services, client, user_id)

    app.event("app_home_opened")(on_home_opened)
