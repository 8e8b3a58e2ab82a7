"""The one base of pipebot's domain errors.

A domain error is a failure the user caused or can act on: a bad command, a refusal
from the pipeline backend, a bad setting. Each carries ``message``, written for the
person who will read it (mrkdwn on Slack, plain text on the terminal), and the
surfaces turn any ``PipebotError`` into that answer in one place
(``handlers.common.perform``). Anything else that escapes is a bug: it is logged
with its traceback and the user gets a short apology, never the traceback.

The embedded engine's errors (``bot.engine.errors.EngineError``) have their own base:
the engine imports nothing from the rest of ``bot``. They reach the bot as botocore
``ClientError``s through the API, which ``bot.ops.pipeline_ops`` turns into ``OpsError``;
the one engine function the bot calls directly, declaration validation (a form checks
its declaration before the ack), raises ``DeclarationError``, which the bot turns into
an ``OpsError`` or an inline form error.
"""

from __future__ import annotations


class PipebotError(Exception):
    """A failure to tell the user in words they can act on (``message``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
