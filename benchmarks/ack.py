"""Slack ack benchmark: how fast `pipebot serve` answers a slash command over HTTP.

N signed `/pipeline status NAME` requests at concurrency C (a thread pool, loopback only)
against a real `pipebot serve` in HTTP mode started as a subprocess, then the same load against
a minimal Bolt app that only acks, served by the same stack (`bot.app.wsgi_app` on waitress with
the same thread count) in a subprocess too. Per request: the time from sending the request to
receiving the HTTP response (the ack). Printed: p50, p99, max and errors (non-200) for each, the
ratio p99(pipebot)/p99(bare) (target <= 1.5) and how many response_url posts the fake Slack
received from pipebot (the real work done after each ack).

`pipebot serve` works on a temporary data dir holding one pipeline (a CodeCommit source on a git
repository under `<data dir>/repos/app`, then a Manual approval that waits), so `status NAME`
reads the engine state and renders it after the ack. Its Web API calls and response_url posts go
to a recording fake Slack (`tests.fake_slack.FakeSlack`) running in this process.

Run: `.venv/bin/python benchmarks/ack.py [--requests 500] [--concurrency 20]`.
(`--bare-server PORT` is the bare app's server mode, started by the benchmark itself.)
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fake_slack import FakeSlack

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `tests` is not installed; it lives next to this folder
    sys.path.insert(0, str(ROOT))

PIPELINE = "bench-app"
HOST = "127.0.0.1"
WARMUP = 20
REQUEST_TIMEOUT = 10.0  # seconds, per request
START_TIMEOUT = 60.0  # seconds for a server to answer /healthz
STOP_TIMEOUT = 10.0  # seconds for a server to exit after SIGTERM
POSTS_TIMEOUT = 60.0  # seconds to wait for pipebot's response_url posts after the load


@dataclass(frozen=True)
class Result:
    latencies: list[float]  # seconds, every request (errors included)
    errors: int
    wall: float

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile, in milliseconds."""
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1] * 1000

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def max(self) -> float:
        return max(self.latencies) * 1000


# --------------------------------------------------------------------------- bare server mode


def bare_server(port: int) -> int:
    """A Bolt app that only acks `/pipeline`, on the same WSGI stack as `pipebot serve`."""
    import logging

    import waitress
    from slack_bolt import App
    from slack_sdk.web import WebClient

    from bot.app import wsgi_app
    from bot.settings import load_settings

    settings = load_settings()  # the same environment as pipebot's: same thread count
    logging.basicConfig(level=settings.log_level)
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    secret = settings.slack_signing_secret
    app = App(
        # The token goes on the client: Bolt ignores (and warns about) `token` next to `client`.
        signing_secret=secret.get_secret_value() if secret else "",
        token_verification_enabled=False,
        client=WebClient(token=token, base_url=settings.slack_api_url or WebClient.BASE_URL),
    )

    @app.command(settings.command)
    def command(ack: Any) -> None:
        ack()

    waitress.serve(
        wsgi_app(app), host=HOST, port=port, threads=settings.server_threads, ident="bare"
    )
    return 0


# --------------------------------------------------------------------------- setup


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def create_pipeline(data_dir: Path, env: dict[str, str]) -> None:
    """`pipebot migrate`, then a Source + Manual approval pipeline whose approval waits."""
    from bot.engine import LocalCodePipeline
    from tests.helpers import approval_action, make_repo, pipeline, source_action, wait_for

    subprocess.run(
        [sys.executable, "-m", "bot", "migrate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    repos = data_dir / "repos"
    make_repo(repos / "app", {"README.md": "hello\n", "app.txt": "v1\n"}, "Initial commit")
    declaration = pipeline(
        PIPELINE,
        [("Source", [source_action("app")]), ("Approve", [approval_action("Release")])],
    )
    with LocalCodePipeline(
        database_url=f"sqlite:///{data_dir / 'pipebot.db'}",
        data_dir=data_dir,
        repositories_dir=repos,
        poll_seconds=0.1,
    ) as client:
        client.create_pipeline(pipeline=declaration)

        def approval_waits() -> bool:
            state = client.get_pipeline_state(name=PIPELINE)
            return any(
                action.get("latestExecution", {}).get("token")
                for stage in state["stageStates"]
                for action in stage["actionStates"]
            )

        # Steady state for the measurement: the source has run, the approval waits.
        wait_for(approval_waits, timeout=60, what="the approval to wait")


@contextmanager
def server(
    name: str, command: list[str], env: dict[str, str], port: int, logs: Path
) -> Iterator[str]:
    """Start a server subprocess, wait for /healthz, yield its events URL; always stop it."""
    log_path = logs / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        try:
            wait_healthy(proc, port, log_path)
            yield f"http://{HOST}:{port}/slack/events"
        finally:
            stop(proc)


def wait_healthy(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    url = f"http://{HOST}:{port}/healthz"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"server exited with status {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not answer {url} within {START_TIMEOUT:.0f}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


# --------------------------------------------------------------------------- load


def load(url: str, response_url: str, *, requests: int, concurrency: int, tag: str) -> Result:
    """`requests` signed `/pipeline status NAME` posts, at most `concurrency` in flight."""
    from tests.slack_requests import post, slash_command

    def one(i: int) -> tuple[float, bool]:
        body, headers = slash_command(
            text=f"status {PIPELINE}",
            response_url=f"{response_url}{tag}-{i}",
            trigger_id=f"T-{tag}-{i}",
        )
        started = time.perf_counter()
        try:
            status, _ = post(url, body, headers, timeout=REQUEST_TIMEOUT)
        except Exception:  # refused, reset, timed out, malformed: an error, not a crash
            status = 0
        return time.perf_counter() - started, status == 200

    # Every request is bounded by REQUEST_TIMEOUT; the whole run by this deadline.
    deadline = REQUEST_TIMEOUT * (requests / concurrency + 2)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"load-{tag}") as pool:
        futures = [pool.submit(one, i) for i in range(requests)]
        _, pending = wait(futures, timeout=deadline)
        for future in pending:
            future.cancel()
    wall = time.perf_counter() - started
    if pending:
        raise RuntimeError(f"{len(pending)} request(s) did not finish within {deadline:.0f}s")
    outcomes = [future.result() for future in futures]
    return Result(
        latencies=[latency for latency, _ in outcomes],
        errors=sum(1 for _, ok in outcomes if not ok),
        wall=wall,
    )


def wait_posts(fake: FakeSlack, count: int, timeout: float) -> int:
    """Wait (bounded) for `count` response_url posts; return how many arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = len(fake.response_url_posts())
        if got >= count:
            return got
        time.sleep(0.05)
    return len(fake.response_url_posts())


def run_phase(
    name: str,
    url: str,
    fake: FakeSlack,
    *,
    requests: int,
    concurrency: int,
    expect_posts: bool,
) -> tuple[Result, int]:
    response_url = fake.response_url("")
    load(url, response_url, requests=WARMUP, concurrency=concurrency, tag=f"{name}-warm")
    if expect_posts:  # let the warm-up's after-ack work finish before measuring
        wait_posts(fake, WARMUP, POSTS_TIMEOUT)
    fake.clear()
    result = load(url, response_url, requests=requests, concurrency=concurrency, tag=name)
    posts = wait_posts(fake, requests, POSTS_TIMEOUT) if expect_posts else 0
    fake.clear()
    return result, posts


def report(name: str, result: Result) -> None:
    print(
        f"{name:<8} p50 {result.p50:7.2f} ms  p99 {result.p99:7.2f} ms  "
        f"max {result.max:7.2f} ms  errors {result.errors}  "
        f"({len(result.latencies) / result.wall:.0f} req/s)",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server is not None:
        return bare_server(args.bare_server)
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1")

    from tests.fake_slack import FakeSlack
    from tests.slack_requests import SIGNING_SECRET

    tmp = Path(tempfile.mkdtemp(prefix="pipebot-ack-bench-")).resolve()
    fake: FakeSlack | None = None
    try:
        fake = FakeSlack().start()
        data_dir = tmp / "data"
        env = {
            **os.environ,
            "SLACK_BOT_TOKEN": "xoxb-bench",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.base_url,
            "PIPEBOT_DATA_DIR": str(data_dir),
            "PIPEBOT_ADMINS": "UADMIN",
            "LOG_LEVEL": "WARNING",
        }
        for name in ("SLACK_APP_TOKEN", "DATABASE_URL", "PIPEBOT_REPOSITORIES_DIR"):
            env.pop(name, None)  # HTTP mode, on the temporary data dir
        create_pipeline(data_dir, env)
        print(
            f"ack latency: {args.requests} x `/pipeline status {PIPELINE}`, concurrency "
            f"{args.concurrency}, {WARMUP} warm-up requests each (python "
            f"{sys.version.split()[0]})",
            flush=True,
        )
        port = free_port()
        pipebot_cmd = [sys.executable, "-m", "bot", "serve"]
        with server("pipebot", pipebot_cmd, {**env, "PORT": str(port)}, port, tmp) as url:
            pipebot, posts = run_phase(
                "pipebot",
                url,
                fake,
                requests=args.requests,
                concurrency=args.concurrency,
                expect_posts=True,
            )
        report("pipebot", pipebot)
        port = free_port()
        bare_cmd = [sys.executable, str(Path(__file__).resolve()), "--bare-server", str(port)]
        with server("bare", bare_cmd, {**env, "PORT": str(port)}, port, tmp) as url:
            bare, _ = run_phase(
                "bare",
                url,
                fake,
                requests=args.requests,
                concurrency=args.concurrency,
                expect_posts=False,
            )
        report("bare", bare)
        ratio = pipebot.p99 / bare.p99
        verdict = "OK" if ratio <= 1.5 else "OVER TARGET"
        print(f"ratio p99(pipebot)/p99(bare): {ratio:.2f} (target <= 1.5: {verdict})")
        print(f"response_url posts from pipebot: {posts} of {args.requests}")
        return 0
    finally:
        if fake is not None:
            fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
