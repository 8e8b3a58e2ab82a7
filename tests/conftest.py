"""Fixtures: every storage and engine test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``TEST_DATABASE_URL`` (default: the local server at
127.0.0.1:5432, database ``test``, trust auth). Each run creates its own
template database, migrated once; each test gets a fresh copy of it. With
``CI=true`` an unreachable PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from storage.migrate import upgrade

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _admin_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


class PostgresDatabases:
    """Creates the run's template database and a copy of it per test."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.template = f"pipebot_tpl_{uuid.uuid4().hex[:10]}"
        self.created: list[str] = []

    def url_for(self, name: str) -> str:
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def setup(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.template}"'))
        upgrade(self.url_for(self.template))

    def fresh(self) -> str:
        name = f"pipebot_t_{uuid.uuid4().hex[:12]}"
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        self.created.append(name)
        return self.url_for(name)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        with self.engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def teardown(self) -> None:
        with self.engine.connect() as conn:
            for name in [*self.created, self.template]:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.engine.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases | None]:
    databases = PostgresDatabases(_admin_url())
    try:
        databases.setup()
    except Exception as exc:
        databases.engine.dispose()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is required in CI and unreachable: {exc}", pytrace=False)
        yield None
        return
    yield databases
    databases.teardown()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_template: Path,
    postgres: PostgresDatabases | None,
) -> Iterator[str]:
    """A freshly migrated database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "pipebot.db"
        shutil.copyfile(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    if postgres is None:
        pytest.skip("PostgreSQL is not reachable (set TEST_DATABASE_URL; CI never skips)")
    url = postgres.fresh()
    yield url
    postgres.drop(url)


@pytest.fixture
def repos_dir(tmp_path: Path) -> Path:
    from tests.helpers import make_repo

    repos = tmp_path / "repos"
    make_repo(repos / "app", {"README.md": "hello\n", "app.txt": "v1\n"}, "Initial commit")
    return repos


@pytest.fixture
def engine(database_url: str, tmp_path: Path, repos_dir: Path) -> Iterator[Any]:
    """A running embedded engine on a fresh database (SQLite and PostgreSQL)."""
    from bot.engine import LocalCodePipeline

    client = LocalCodePipeline(
        database_url=database_url,
        data_dir=tmp_path / "data",
        repositories_dir=repos_dir,
        poll_seconds=0.2,
    )
    yield client
    client.close()


@pytest.fixture
def fake() -> Iterator[Any]:
    """A recording fake Slack with an admin and another user; at the end, every message and
    view the bot sent must parse with slack_sdk's models, within Slack's limits."""
    from tests.fake_slack import FakeSlack
    from tests.slack_bot import ADMIN, OTHER, assert_valid_surfaces

    with FakeSlack() as server:
        server.set_user(ADMIN, "admin")
        server.set_user(OTHER, "other")
        yield server
        assert_valid_surfaces(server.calls)


@pytest.fixture
def bot(engine: Any, database_url: str, fake: Any) -> Any:
    """The real Bolt app on the engine, the fake Slack and a fresh database."""
    from tests.slack_bot import ADMIN, make_bot

    return make_bot(engine, database_url, fake, admins=ADMIN)
