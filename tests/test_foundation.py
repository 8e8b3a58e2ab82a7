"""Configuration, logging redaction, migrations and the command line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (tables on the metadata)
from bot.logging_setup import REDACTED, RedactingFilter
from bot.settings import ConfigurationError, load_settings
from storage.db import is_sqlite, make_engine
from storage.migrate import head_revision, is_current

REPO = Path(__file__).resolve().parents[1]


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DATABASE_URL",
        "PIPEBOT_DATA_DIR",
        "PIPEBOT_BACKEND",
        "PIPEBOT_REPOSITORIES_DIR",
        "LOG_LEVEL",
        "PIPEBOT_ENGINE_POLL_SECONDS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _clean_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.backend == "local"
    assert settings.resolved_data_dir == tmp_path / ".pipebot"
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / '.pipebot' / 'pipebot.db'}"
    assert settings.resolved_repositories_dir == tmp_path / ".pipebot" / "repos"
    assert settings.log_level == "INFO"


def test_postgres_urls_use_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    monkeypatch.setenv("DATABASE_URL", "postgres://u@db:5432/pipebot")
    assert load_settings().resolved_database_url == "postgresql+psycopg://u@db:5432/pipebot"


def test_invalid_values_are_named_together(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    monkeypatch.setenv("PIPEBOT_BACKEND", "gcp")
    monkeypatch.setenv("LOG_LEVEL", "loud")
    monkeypatch.setenv("DATABASE_URL", "mysql://x")
    monkeypatch.setenv("PIPEBOT_ENGINE_POLL_SECONDS", "-1")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    for name in ("PIPEBOT_BACKEND", "LOG_LEVEL", "DATABASE_URL", "PIPEBOT_ENGINE_POLL_SECONDS"):
        assert name in message
    assert "Traceback" not in message


def test_cli_exits_2_on_bad_configuration(tmp_path: Path) -> None:
    env = {**os.environ, "PIPEBOT_BACKEND": "gcp", "PIPEBOT_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "migrate"], env=env, capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 2
    assert "PIPEBOT_BACKEND" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_migrate_creates_the_schema(tmp_path: Path) -> None:
    env = {**os.environ, "PIPEBOT_DATA_DIR": str(tmp_path / "data")}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "bot", "migrate"], env=env, capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'pipebot.db'}")
    try:
        assert is_current(engine)
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        engine.dispose()


def test_secrets_are_redacted() -> None:
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Capture()
    handler.addFilter(RedactingFilter(secrets=["s3cr3t-signing-value"]))
    logger = logging.getLogger("pipebot.test.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("secret %s", "s3cr3t-signing-value")
        logger.info("token xoxb-1234567890-abcdefghij and key AKIAABCDEFGHIJKLMNOP")
        try:
            raise ValueError("boom s3cr3t-signing-value")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    joined = "\n".join(records)
    assert "s3cr3t-signing-value" not in joined
    assert "xoxb-1234567890" not in joined
    assert "AKIAABCDEFGHIJKLMNOP" not in joined
    assert joined.count(REDACTED) >= 4


def test_models_and_migrations_agree(database_url: str) -> None:
    """Autogenerate finds nothing to change: migrations and models describe one schema."""
    engine = make_engine(database_url)
    try:
        assert is_current(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "render_as_batch": is_sqlite(database_url)}
            )
            assert compare_metadata(context, SQLModel.metadata) == []
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        assert revision == head_revision()
    finally:
        engine.dispose()


def test_logging_keeps_scheduler_chatter_out(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from bot.logging_setup import configure_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(level="INFO")
        logging.getLogger("apscheduler.executors.default").info('Running job "tick"')
        logging.getLogger("apscheduler.scheduler").warning(
            'Execution of job "tick" skipped: maximum number of running instances reached (1)'
        )
        logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed by 0:01")
        logging.getLogger("bot.notify.notifier").info("notifier: something worth reading")
        logging.getLogger("slack_bolt.App").warning(
            "As you gave `client` as well, `token` will be unused."
        )
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    err = capsys.readouterr().err
    assert "Running job" not in err
    assert "maximum number of running instances" in err  # a skipped run is worth knowing
    assert "will be unused" not in err
    assert "was missed by" in err  # real scheduler warnings still show
    assert "something worth reading" in err
