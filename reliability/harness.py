"""Real ``pipebot serve`` processes for the reliability checks: start, SIGKILL, restart.

A ``ServeProcess`` runs ``python -m bot serve`` in HTTP mode against a fake Slack Web API
(``SLACK_API_URL``) with the secrets of a ``Secrets`` (so its logs can be scanned for them),
on a fresh port each start, with its output appended to one log file across restarts. Requests
are built and signed by ``tests.slack_requests`` exactly as Slack sends them.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `tests` is not installed; it lives next to this folder
    sys.path.insert(0, str(ROOT))

from tests.slack_requests import SIGNING_SECRET  # noqa: E402 (after the path is set)

HOST: Final = "127.0.0.1"
START_TIMEOUT: Final = 120.0
"""Seconds for a started server to answer /healthz (migrations included, on a busy box)."""
STOP_TIMEOUT: Final = 30.0
REQUEST_TIMEOUT: Final = 15.0


@dataclass(frozen=True)
class Secrets:
    """Every secret a serve process is given: none of them may ever appear in its logs.

    The AWS keys are shaped like real ones (``AKIA`` + 16, 40 characters) but valid nowhere;
    the embedded engine never uses them, botocore would.
    """

    bot_token: str = "xoxb-4242424242-reliability-bot-token-value"
    signing_secret: str = SIGNING_SECRET  # what the tests' requests are signed with
    aws_access_key_id: str = "AKIARELIABILITY0TEST"
    aws_secret_access_key: str = "reliabilitySecretAccessKey0000000000000000"
    aws_session_token: str = "reliability-session-token-FwoGZXIvYXdzEJr"

    def values(self) -> dict[str, str]:
        return {
            "SLACK_BOT_TOKEN": self.bot_token,
            "SLACK_SIGNING_SECRET": self.signing_secret,
            "AWS_ACCESS_KEY_ID": self.aws_access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.aws_secret_access_key,
            "AWS_SESSION_TOKEN": self.aws_session_token,
        }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def serve_env(
    *,
    data_dir: Path,
    database_url: str,
    repositories_dir: Path,
    slack_api_url: str,
    secrets: Secrets,
    admins: str = "UADMIN",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a serve process: this one's, minus any pipebot/Slack/AWS setting."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "PIPEBOT_", "DATABASE_URL", "AWS_"))
    }
    env.update(secrets.values())
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "PIPEBOT_DATA_DIR": str(data_dir),
            "DATABASE_URL": database_url,
            "PIPEBOT_REPOSITORIES_DIR": str(repositories_dir),
            "SLACK_API_URL": slack_api_url,
            "PIPEBOT_ADMINS": admins,
            "PIPEBOT_POLL_SECONDS": "1",
            "PIPEBOT_ENGINE_POLL_SECONDS": "0.5",
            "AWS_REGION": "us-east-1",
            "LOG_LEVEL": "INFO",
        }
    )
    env.update(extra or {})
    return env


class ServeProcess:
    """One ``pipebot serve`` deployment: started, killed with SIGKILL and restarted at will."""

    def __init__(self, *, env: Mapping[str, str], log_path: Path, label: str = "serve") -> None:
        self._env = dict(env)
        self.log_path = log_path
        self.label = label
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0
        self.kills = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/slack/events"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, timeout: float = START_TIMEOUT) -> None:
        """Start on a fresh port and wait until it answers /healthz."""
        if self.running():
            raise RuntimeError(f"{self.label} is already running")
        self.port = free_port()
        env = {**self._env, "PORT": str(self.port)}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== {self.label} start #{self.starts + 1}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "bot", "serve"],
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        health = f"http://{HOST}:{self.port}/healthz"
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited at start:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(health, timeout=2.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.label} did not answer {health} in {timeout:.0f}s")

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: no clean-up runs."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(timeout=STOP_TIMEOUT)
        self.kills += 1

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it does not exit in time."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=STOP_TIMEOUT)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]


def post(url: str, body: str, headers: Mapping[str, str]) -> tuple[int, str]:
    """POST a signed request; ``(0, reason)`` when the server cannot be reached."""
    from tests.slack_requests import post as signed_post

    try:
        return signed_post(url, body, dict(headers), timeout=REQUEST_TIMEOUT)
    except (urllib.error.URLError, OSError) as exc:
        return 0, f"{type(exc).__name__}: {exc}"


def stop_all(*processes: ServeProcess) -> None:
    for process in processes:
        with contextlib.suppress(Exception):
            process.stop()


TRACEBACK_MARK: Final = "Traceback (most recent call last)"


def wsgi_post(application: Any, body: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
    """POST through a WSGI application in-process (as waitress would call it):
    ``(status, body)``; an exception escaping the application is what waitress turns into a 500.
    """
    from wsgiref.util import setup_testing_defaults

    raw = body.encode()
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(
        {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/slack/events",
            "CONTENT_LENGTH": str(len(raw)),
            "wsgi.input": io.BytesIO(raw),
        }
    )
    for name, value in headers.items():
        if name.lower() == "content-type":
            environ["CONTENT_TYPE"] = value
        else:
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    statuses: list[str] = []

    def start_response(status: str, _headers: list[tuple[str, str]], *_: Any) -> None:
        statuses.append(status)

    answer = b"".join(application(environ, start_response))
    return int(statuses[-1].split()[0]), answer
