"""SQLModel tables. Every schema change comes with an Alembic migration.

Timestamps are stored in UTC. SQLite hands them back naive; ``storage.utc``
makes them aware again at the boundary.

JSON payloads (declarations, variables, artifacts) are stored as text: they are
read and written whole, never queried inside.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def _ts(*, nullable: bool = False) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable)


def _text(*, nullable: bool = True) -> Column[str]:
    return Column(Text, nullable=nullable)


def _fk(target: str, *, nullable: bool = False, index: bool = False) -> Column[int]:
    return Column(Integer, ForeignKey(target, ondelete="CASCADE"), nullable=nullable, index=index)


class Pipeline(SQLModel, table=True):
    """A pipeline declaration on the embedded engine (the latest version)."""

    __tablename__ = "pipeline"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    version: int
    pipeline_type: str = Field(max_length=8)
    execution_mode: str = Field(max_length=16)
    declaration: str = Field(sa_column=_text(nullable=False))
    tags: str = Field(sa_column=_text(nullable=False))
    created_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())


class PipelineVersion(SQLModel, table=True):
    """Every version of a declaration: an execution runs the version it started with."""

    __tablename__ = "pipeline_version"

    pipeline_id: int = Field(
        sa_column=Column(Integer, ForeignKey("pipeline.id", ondelete="CASCADE"), primary_key=True)
    )
    version: int = Field(primary_key=True)
    declaration: str = Field(sa_column=_text(nullable=False))
    created_at: datetime = Field(sa_column=_ts())


class PipelineExecution(SQLModel, table=True):
    """One run of a pipeline, from its trigger to a terminal status.

    ``stage_index`` is the stage the execution is in, or waits in front of
    when ``waiting`` is true (it is then that stage's inbound execution).
    """

    __tablename__ = "pipeline_execution"
    __table_args__ = (
        Index("ix_pipeline_execution_pipeline_id_id", "pipeline_id", "id"),
        Index("ix_pipeline_execution_status", "status", "pipeline_id"),
        UniqueConstraint("pipeline_id", "client_request_token", name="uq_execution_request_token"),
    )

    id: int | None = Field(default=None, primary_key=True)
    execution_id: str = Field(max_length=36, unique=True)
    pipeline_id: int = Field(sa_column=_fk("pipeline.id"))
    pipeline_version: int
    status: str = Field(max_length=16)
    status_summary: str | None = Field(default=None, sa_column=_text())
    trigger_type: str = Field(max_length=32)
    trigger_detail: str | None = Field(default=None, sa_column=_text())
    execution_mode: str = Field(max_length=16)
    started_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())
    variables: str = Field(sa_column=_text(nullable=False))
    source_overrides: str = Field(sa_column=_text(nullable=False))
    source_revisions: str = Field(sa_column=_text(nullable=False))
    artifact_revisions: str = Field(sa_column=_text(nullable=False))
    stage_index: int = 0
    waiting: bool = True
    arrived_at: datetime = Field(sa_column=_ts())
    stop_mode: str | None = Field(default=None, max_length=8)
    stop_reason: str | None = Field(default=None, sa_column=_text())
    client_request_token: str | None = Field(default=None, max_length=128)


class StageExecution(SQLModel, table=True):
    """An execution's passage through one stage; retries update it in place."""

    __tablename__ = "stage_execution"
    __table_args__ = (
        UniqueConstraint("execution_pk", "stage_name", name="uq_stage_execution"),
        Index("ix_stage_execution_lock", "pipeline_id", "stage_name", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    execution_pk: int = Field(sa_column=_fk("pipeline_execution.id"))
    pipeline_id: int = Field(sa_column=_fk("pipeline.id"))
    stage_name: str = Field(max_length=100)
    stage_index: int
    status: str = Field(max_length=16)
    attempt: int = 1
    base_attempt: int = 1
    entered_seq: int = 0
    started_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())


class ActionExecution(SQLModel, table=True):
    """One attempt of one action; a retry adds a new row with a new ID."""

    __tablename__ = "action_execution"
    __table_args__ = (
        Index("ix_action_execution_pipeline_id_id", "pipeline_id", "id"),
        Index("ix_action_execution_execution", "execution_pk", "stage_name", "action_name"),
        Index("ix_action_execution_status", "status", "claimed_by"),
    )

    id: int | None = Field(default=None, primary_key=True)
    action_execution_id: str = Field(max_length=36, unique=True)
    execution_pk: int = Field(sa_column=_fk("pipeline_execution.id"))
    pipeline_id: int = Field(sa_column=_fk("pipeline.id"))
    pipeline_version: int
    stage_name: str = Field(max_length=100)
    action_name: str = Field(max_length=100)
    category: str = Field(max_length=16)
    provider: str = Field(max_length=64)
    run_order: int
    stage_attempt: int
    status: str = Field(max_length=16)
    started_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())
    updated_by: str | None = Field(default=None, max_length=256)
    summary: str | None = Field(default=None, sa_column=_text())
    error_code: str | None = Field(default=None, max_length=32)
    error_message: str | None = Field(default=None, sa_column=_text())
    external_execution_id: str | None = Field(default=None, max_length=64)
    token: str | None = Field(default=None, max_length=64, index=True)
    approval_status: str | None = Field(default=None, max_length=16)
    approval_due_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    input: str = Field(sa_column=_text(nullable=False))
    output_artifacts: str = Field(sa_column=_text(nullable=False))
    output_variables: str = Field(sa_column=_text(nullable=False))
    claimed_by: str | None = Field(default=None, max_length=64)
    host: str | None = Field(default=None, max_length=255)


class StageTransition(SQLModel, table=True):
    """A disabled (or re-enabled) inbound transition; absent row means enabled."""

    __tablename__ = "stage_transition"

    pipeline_id: int = Field(
        sa_column=Column(Integer, ForeignKey("pipeline.id", ondelete="CASCADE"), primary_key=True)
    )
    stage_name: str = Field(max_length=100, primary_key=True)
    enabled: bool = True
    disabled_reason: str | None = Field(default=None, max_length=300)
    changed_by: str | None = Field(default=None, max_length=256)
    changed_at: datetime = Field(sa_column=_ts())


class EngineWorker(SQLModel, table=True):
    """A live engine worker; its heartbeat tells others whether its actions still run."""

    __tablename__ = "engine_worker"

    id: str = Field(max_length=64, primary_key=True)
    host: str = Field(max_length=255)
    pid: int
    started_at: datetime = Field(sa_column=_ts())
    heartbeat_at: datetime = Field(sa_column=_ts())


# --- the Slack bot -----------------------------------------------------------------------------
#
# Pipelines are referred to by name, not by foreign key: on the AWS backend they live in AWS,
# and access lists outlive a delete-and-recreate of the same name on purpose only if the caller
# keeps them (``bot_store.forget_pipeline`` clears them).


class PipelineAccess(SQLModel, table=True):
    """One subject (a Slack user ``U…``/``W…`` or user group ``S…``) in a pipeline's role list."""

    __tablename__ = "pipeline_access"
    __table_args__ = (UniqueConstraint("pipeline", "role", "subject", name="uq_pipeline_access"),)

    id: int | None = Field(default=None, primary_key=True)
    pipeline: str = Field(max_length=100)
    role: str = Field(max_length=16)
    subject: str = Field(max_length=32)
    added_by: str = Field(max_length=32)
    added_at: datetime = Field(sa_column=_ts())


class PipelinePolicy(SQLModel, table=True):
    """Per-pipeline switches; an absent row means every switch is off."""

    __tablename__ = "pipeline_policy"

    pipeline: str = Field(max_length=100, primary_key=True)
    no_self_approval: bool = False
    updated_by: str = Field(max_length=32)
    updated_at: datetime = Field(sa_column=_ts())


class AuditEntry(SQLModel, table=True):
    """One mutating command, click or modal submission, whatever its outcome."""

    __tablename__ = "audit_entry"
    __table_args__ = (Index("ix_audit_entry_pipeline_id", "pipeline", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=_ts())
    user_id: str = Field(max_length=32)
    channel_id: str | None = Field(default=None, max_length=32)
    kind: str = Field(max_length=16)
    what: str = Field(max_length=32)
    pipeline: str | None = Field(default=None, max_length=100)
    execution_id: str | None = Field(default=None, max_length=64)
    outcome: str = Field(max_length=16)
    detail: str | None = Field(default=None, sa_column=_text())


class ClickRecord(SQLModel, table=True):
    """The first human decision on one thing (e.g. an approval): later clicks are told of it."""

    __tablename__ = "click_record"

    key: str = Field(max_length=512, primary_key=True)
    user_id: str = Field(max_length=32)
    at: datetime = Field(sa_column=_ts())
    outcome: str = Field(sa_column=_text(nullable=False))


class ExecutionStarter(SQLModel, table=True):
    """Who started an execution from Slack (no-self-approval, notifications)."""

    __tablename__ = "execution_starter"

    execution_id: str = Field(max_length=64, primary_key=True)
    pipeline: str = Field(max_length=100)
    user_id: str = Field(max_length=32)
    at: datetime = Field(sa_column=_ts())
