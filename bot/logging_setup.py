"""Logging with secrets redacted.

Every record passes through ``RedactingFilter`` before any handler formats it, so
a token, signing secret or AWS key that ends up in a message or its arguments
is replaced by ``[REDACTED]``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Final

# Shapes of secrets we never want in logs even if we were not told their value.
_SECRET_PATTERNS = re.compile(
    r"(xox[abposr]-[A-Za-z0-9-]{8,}|xapp-[A-Za-z0-9-]{8,}|(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9]))"
)
REDACTED = "[REDACTED]"


class RedactingFilter(logging.Filter):
    """Replace known secret values and secret-shaped strings in log records."""

    def __init__(self, *, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _SECRET_PATTERNS.sub(REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if redacted != message or record.args:
            record.msg = redacted
            record.args = None
        return True


def configure_logging(*, level: str, secrets: Iterable[str] = ()) -> None:
    """Configure the root logger once, with the redacting filter on its handler."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets=secrets))
    root.addHandler(handler)
    root.setLevel(level)
    # Alembic narrates every migration step at INFO, APScheduler every job run (every
    # PIPEBOT_POLL_SECONDS); keep the log for what happened, not for the clock.
    for noisy in ("alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # APScheduler's own warnings stay visible: a skipped run (max_instances 1) once hid lost
    # notifier wake-ups; the notifier has its own thread now, and only the source poller is a
    # job, whose skipped run means a poll took longer than its interval.
    # Bolt reads SLACK_BOT_TOKEN from the environment by itself and warns that the client
    # pipebot gives it (built from the same token, with retry handlers) wins: expected.
    logging.getLogger("slack_bolt.App").addFilter(_skip_expected_warnings)


_EXPECTED_WARNINGS: Final = ("As you gave `client` as well, `token` will be unused",)


def _skip_expected_warnings(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(expected in message for expected in _EXPECTED_WARNINGS)
