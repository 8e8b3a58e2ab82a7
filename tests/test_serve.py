"""`pipebot serve` as a process: configuration errors, HTTP mode, and the shipped manifests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bot.slack import ids
from tests.fake_slack import FakeSlack
from tests.helpers import wait_for
from tests.slack_requests import SIGNING_SECRET, post, slash_command

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "PIPEBOT_", "DATABASE_URL"))
    }
    env.update({"PIPEBOT_DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "WARNING", **extra})
    return env


def test_serve_without_a_bot_token_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "serve"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN" in result.stderr
    assert "SLACK_SIGNING_SECRET" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_malformed_token(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "serve"],
        env=_env(tmp_path, SLACK_BOT_TOKEN="not-a-token", SLACK_SIGNING_SECRET="x"),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN" in result.stderr
    assert "not-a-token" not in result.stderr  # an invalid secret is still a secret
    assert "Traceback" not in result.stderr


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, FakeSlack]]:
    port = _free_port()
    with FakeSlack() as fake:
        env = _env(
            tmp_path,
            SLACK_BOT_TOKEN="xoxb-serve-test",
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=fake.base_url,
            PORT=str(port),
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        base = f"http://127.0.0.1:{port}"
        try:

            def healthy() -> bool:
                if process.poll() is not None:
                    raise AssertionError(f"pipebot serve exited: {process.stderr!r}")
                try:
                    with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
                        return bool(response.status == 200)
                except (urllib.error.URLError, ConnectionError):
                    return False

            wait_for(healthy, timeout=60, what="pipebot serve to answer /healthz")
            yield base, fake
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr is not None:
                errors = process.stderr.read().decode(errors="replace")
                process.stderr.close()
                assert "xoxb-serve-test" not in errors
                assert SIGNING_SECRET not in errors


def test_http_mode_serves_signed_commands_and_refuses_bad_signatures(
    server: tuple[str, FakeSlack],
) -> None:
    base, fake = server
    body, headers = slash_command(text="help", response_url=fake.response_url("serve"))
    status, _ = post(base + "/slack/events", body, headers)
    assert status == 200
    reply = fake.wait_for("response_url", where=lambda c: c.path.endswith("/serve"))[0]
    assert reply.params.get("response_type") == "ephemeral"
    tampered = dict(headers, **{"X-Slack-Signature": "v0=" + "0" * 64})
    status, _ = post(base + "/slack/events", body, tampered)
    assert status == 401
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(base + "/nowhere", timeout=5)
    assert missing.value.code == 404


@pytest.mark.parametrize("name", ["manifest.yml", "manifest.socket-mode.yml"])
def test_shipped_manifests_match_the_code(name: str) -> None:
    manifest = yaml.safe_load((REPO / "slack" / name).read_text())
    commands = manifest["features"]["slash_commands"]
    assert [c["command"] for c in commands] == ["/pipeline"]
    assert commands[0]["should_escape"] is True  # mentions arrive as <@U…> for `access`
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert "app_home_opened" in settings["event_subscriptions"]["bot_events"]
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    # commands, chat.postMessage/update/postEphemeral, users.info, usergroups.users.list
    assert {
        "commands",
        "chat:write",
        "users:read",
        "usergroups:read",
        "channels:history",
        "groups:history",
    } <= scopes
    socket_mode = settings["socket_mode_enabled"]
    urls = [commands[0].get("url"), settings["interactivity"].get("request_url")]
    if socket_mode:
        assert urls == [None, None]
    else:
        assert all(url and url.endswith("/slack/events") for url in urls)
    assert ids.APPROVE.startswith("pipebot.")


def test_readme_documents_every_command_and_variable() -> None:
    from bot.settings import Settings
    from handlers.grammar import REGISTRY

    readme = (REPO / "README.md").read_text()
    for spec in REGISTRY:
        # In the command table a usage's `|` is written `\|` (Markdown's table escape).
        written = (
            f"`/pipeline {spec.usage}`",
            f"`/pipeline {spec.usage.replace('|', chr(92) + '|')}`",
        )
        assert any(form in readme for form in written), spec.name
        assert f"`/pipeline {spec.example}`" in readme, spec.name
    for name, field in Settings.model_fields.items():
        assert f"`{field.alias or name}`" in readme, field.alias


def test_readme_architecture_names_every_module_of_the_layout() -> None:
    """The README's map of the folders stays true: every module of handlers/ and of bot/'s
    subpackages is named in its Architecture section, and no folder it names is missing."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Architecture") : readme.index("## Reliability")]
    for folder in ("handlers", "bot/ops", "bot/slack", "bot/notify", "bot/engine", "storage"):
        assert f"`{folder}/`" in section, folder
        for module in sorted((REPO / folder).glob("*.py")):
            if module.name == "__init__.py":
                continue
            stem = module.stem
            assert f"`{stem}`" in section or f"`{module.name}`" in section, f"{folder}/{stem}"
