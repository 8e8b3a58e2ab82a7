"""Statements shared by the storage modules: atomic inserts on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel


def dialect_insert(session: Session, model: type[SQLModel]) -> Any:
    """The dialect's INSERT (the generic one has no ON CONFLICT)."""
    dialect = session.get_bind().dialect.name
    table = model.__table__  # type: ignore[attr-defined]
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"pipebot supports SQLite and PostgreSQL, not {dialect}")


def insert_ignoring_conflict(
    session: Session, model: type[SQLModel], values: dict[str, Any]
) -> bool:
    """Insert one row unless it collides with a unique key; True if it was inserted.

    RETURNING tells the two apart (an INSERT's rowcount is not reliable on every driver).
    """
    table = model.__table__  # type: ignore[attr-defined]
    statement: Insert = (
        dialect_insert(session, model)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(*table.primary_key.columns)
    )
    return session.execute(statement).first() is not None


def check_choice(value: str, allowed: tuple[str, ...], what: str) -> None:
    """Refuse a value outside a column's closed set of choices."""
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
