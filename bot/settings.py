"""Configuration: one pydantic-settings class read from the environment.

Every variable is documented in README.md ("Configuration"). ``load_settings``
turns pydantic's validation error into one readable message naming each bad
variable; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import PipebotError

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


def _split_ids(value: str) -> list[str]:
    return [item.strip() for item in value.replace(" ", ",").split(",") if item.strip()]


class ConfigurationError(PipebotError):
    """Invalid configuration; the message names every bad variable and how to fix it."""


class Settings(BaseSettings):
    """pipebot's configuration. Field aliases are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", populate_by_name=True, case_sensitive=True
    )

    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    data_dir: Path = Field(default=Path(".pipebot"), alias="PIPEBOT_DATA_DIR")
    backend: Literal["local", "aws"] = Field(default="local", alias="PIPEBOT_BACKEND")
    repositories_dir: Path | None = Field(default=None, alias="PIPEBOT_REPOSITORIES_DIR")
    # Read by the engine's worker at each CodeBuild action (bot/engine/codebuild_projects.py).
    codebuild_projects: Path | None = Field(default=None, alias="PIPEBOT_CODEBUILD_PROJECTS")
    log_level: LogLevel = Field(default="INFO", alias="LOG_LEVEL")
    engine_poll_seconds: float = Field(
        default=1.0, gt=0, le=60, alias="PIPEBOT_ENGINE_POLL_SECONDS"
    )
    poll_seconds: float = Field(default=10.0, gt=0, le=3600, alias="PIPEBOT_POLL_SECONDS")
    approval_reminder_minutes: int = Field(
        default=60, ge=1, alias="PIPEBOT_APPROVAL_REMINDER_MINUTES"
    )
    digest_timezone: str = Field(default="UTC", alias="PIPEBOT_DIGEST_TIMEZONE")
    engine_max_parallel_actions: int = Field(
        default=16, ge=1, le=256, alias="PIPEBOT_ENGINE_MAX_PARALLEL_ACTIONS"
    )
    # How long a stopping process lets its running actions finish before it fails them as
    # interrupted (bot.engine.worker.Worker.close): a rolling restart fails no short build.
    engine_drain_seconds: float = Field(
        default=10.0, ge=0, le=600, alias="PIPEBOT_ENGINE_DRAIN_SECONDS"
    )
    slack_bot_token: SecretStr | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_api_url: str | None = Field(default=None, alias="SLACK_API_URL")
    port: int = Field(default=3000, ge=1, le=65535, alias="PORT")
    server_threads: int = Field(default=8, ge=1, le=128, alias="PIPEBOT_SERVER_THREADS")
    slack_workers: int = Field(default=1, ge=1, le=32, alias="PIPEBOT_SLACK_WORKERS")
    command: str = Field(
        default="/pipeline", pattern=r"^/[a-z0-9_-]{1,31}$", alias="PIPEBOT_COMMAND"
    )
    admins_raw: str = Field(default="", alias="PIPEBOT_ADMINS")
    migrate_on_start: bool = Field(default=True, alias="PIPEBOT_MIGRATE_ON_START")
    run_worker: bool = Field(default=True, alias="PIPEBOT_RUN_WORKER")
    aws_region: str | None = Field(default=None, alias="AWS_REGION")
    aws_profile: str | None = Field(default=None, alias="AWS_PROFILE")
    aws_access_key_id: SecretStr | None = Field(default=None, alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: SecretStr | None = Field(default=None, alias="AWS_SECRET_ACCESS_KEY")
    aws_session_token: SecretStr | None = Field(default=None, alias="AWS_SESSION_TOKEN")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:", "postgres:")):
            raise ValueError(
                "must be a SQLAlchemy URL such as sqlite:///path/to/pipebot.db or "
                "postgresql+psycopg://user@host:5432/dbname"
            )
        if value.startswith("postgres:"):
            value = "postgresql+psycopg:" + value.removeprefix("postgres:")
        elif value.startswith("postgresql:"):
            value = "postgresql+psycopg:" + value.removeprefix("postgresql:")
        return value

    @field_validator("digest_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                "must be an IANA time zone name such as UTC, Europe/Berlin or America/New_York"
            ) from None
        return value

    @property
    def digest_zone(self) -> ZoneInfo:
        """The time zone of the daily digests' HH:MM."""
        return ZoneInfo(self.digest_timezone)

    @field_validator("slack_bot_token")
    @classmethod
    def _check_bot_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xoxb-"):
            raise ValueError("must be a bot token starting with xoxb- (OAuth & Permissions page)")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _check_app_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError(
                "must be an app-level token starting with xapp- (Basic Information, "
                "App-Level Tokens, scope connections:write)"
            )
        return value

    @field_validator("admins_raw")
    @classmethod
    def _check_admins(cls, value: str) -> str:
        for item in _split_ids(value):
            if not _USER_ID.match(item):
                raise ValueError(
                    f"{item!r} is not a Slack user ID (like U012AB3CD); separate IDs with commas"
                )
        return value

    @property
    def admins(self) -> frozenset[str]:
        return frozenset(_split_ids(self.admins_raw))

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'pipebot.db'}"

    @property
    def resolved_repositories_dir(self) -> Path:
        if self.repositories_dir is not None:
            return self.repositories_dir.expanduser().resolve()
        return self.resolved_data_dir / "repos"

    def secret_values(self) -> list[str]:
        """Every secret this configuration holds, for the log redactor."""
        secrets = [
            self.aws_access_key_id,
            self.aws_secret_access_key,
            self.aws_session_token,
            self.slack_bot_token,
            self.slack_signing_secret,
            self.slack_app_token,
        ]
        return [s.get_secret_value() for s in secrets if s is not None and s.get_secret_value()]


def _field_to_env() -> dict[str, str]:
    return {name: (field.alias or name) for name, field in Settings.model_fields.items()}


def require_slack(settings: Settings) -> None:
    """``pipebot serve`` needs a bot token, and a signing secret unless in Socket Mode."""
    missing = []
    if settings.slack_bot_token is None:
        missing.append("  SLACK_BOT_TOKEN: required (the bot token, xoxb-...)")
    if not settings.socket_mode and settings.slack_signing_secret is None:
        missing.append(
            "  SLACK_SIGNING_SECRET: required in HTTP mode (Basic Information, App Credentials); "
            "or set SLACK_APP_TOKEN for Socket Mode"
        )
    if missing:
        raise ConfigurationError(
            "Invalid configuration:\n" + "\n".join(missing) + "\nSee README.md, Configuration."
        )


def load_settings(**overrides: object) -> Settings:
    """Read the environment; raise ConfigurationError naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        env_names = _field_to_env()
        lines = []
        for error in exc.errors():
            loc = str(error["loc"][0]) if error["loc"] else "?"
            name = env_names.get(loc, loc)
            given = error.get("input")
            field = Settings.model_fields.get(loc) or next(
                (f for f in Settings.model_fields.values() if f.alias == loc), None
            )
            secret = field is not None and "SecretStr" in str(field.annotation)
            hidden = secret or isinstance(given, dict) or given is None
            shown = "" if hidden else f" (got {given!r})"
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"  {name}: {message}{shown}")
        raise ConfigurationError(
            "Invalid configuration:\n" + "\n".join(lines) + "\nFix these environment variables "
            "(see README.md, Configuration) and start again."
        ) from None
