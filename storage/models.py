"""SQLModel tables. Every schema change comes with an Alembic migration.

Timestamps are stored in UTC. SQLite hands them back naive; ``storage.utc``
makes them aware again at the boundary.

JSON payloads (declarations, variables, artifacts) are stored as text: they are
read and written whole, never queried inside.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    text,
)
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
    change_seq: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default=text("0"))
    )
    """Bumped by every committed transaction that changes the pipeline or its executions
    (``storage.engine_store.track_changes``): readers skip a pipeline whose count is as
    they last saw it."""


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
    execution_type: str = Field(default="STANDARD", max_length=16)
    """STANDARD, or ROLLBACK for an execution RollbackStage (or a stage's automatic
    rollback) started (API_PipelineExecution ``executionType``)."""
    rollback_target_execution_id: str | None = Field(default=None, max_length=36)
    """A ROLLBACK execution's target: the execution whose source revisions, variables and
    artifacts it runs again (``rollbackMetadata.rollbackTargetPipelineExecutionId``)."""
    rollback_stage: str | None = Field(default=None, max_length=100)
    """The one stage a ROLLBACK execution runs."""


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
    auto_retry_attempt: int = 0
    """Retries of this stage started by its ``onFailure`` RETRY result (API_RetryStageMetadata
    ``autoStageRetryAttempt``)."""
    manual_retry_attempt: int = 0
    """Retries asked for with RetryStageExecution (``manualStageRetryAttempt``)."""
    latest_retry_trigger: str | None = Field(default=None, max_length=32)
    """AutomatedStageRetry or ManualStageRetry: which kind of retry came last."""
    condition_phase: str | None = Field(default=None, max_length=16)
    """Which of the stage's conditions is being evaluated (BEFORE_ENTRY, ON_SUCCESS,
    ON_FAILURE); None while its actions run or once it is decided."""


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


class ConditionExecution(SQLModel, table=True):
    """One evaluation of one stage condition (beforeEntry, onSuccess, onFailure) for one
    attempt of a stage execution: its status is ConditionExecutionStatus (API
    ConditionExecution), ``result`` the result that applies when it is not met."""

    __tablename__ = "condition_execution"
    __table_args__ = (
        Index("ix_condition_execution_stage", "execution_pk", "stage_name", "condition_type"),
    )

    id: int | None = Field(default=None, primary_key=True)
    execution_pk: int = Field(sa_column=_fk("pipeline_execution.id"))
    pipeline_id: int = Field(sa_column=_fk("pipeline.id"))
    stage_name: str = Field(max_length=100)
    stage_attempt: int
    condition_type: str = Field(max_length=16)
    condition_index: int = 0
    result: str | None = Field(default=None, max_length=16)
    status: str = Field(max_length=16)
    summary: str | None = Field(default=None, sa_column=_text())
    started_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())
    overridden_by: str | None = Field(default=None, max_length=256)


class RuleExecution(SQLModel, table=True):
    """One run of one rule of a condition (API RuleExecutionDetail)."""

    __tablename__ = "rule_execution"
    __table_args__ = (
        Index("ix_rule_execution_pipeline_id_id", "pipeline_id", "id"),
        Index("ix_rule_execution_status", "status", "claimed_by"),
    )

    id: int | None = Field(default=None, primary_key=True)
    rule_execution_id: str = Field(max_length=36, unique=True)
    condition_pk: int = Field(sa_column=_fk("condition_execution.id", index=True))
    execution_pk: int = Field(sa_column=_fk("pipeline_execution.id"))
    pipeline_id: int = Field(sa_column=_fk("pipeline.id"))
    pipeline_version: int
    stage_name: str = Field(max_length=100)
    rule_name: str = Field(max_length=100)
    provider: str = Field(max_length=64)
    status: str = Field(max_length=16)
    started_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())
    updated_by: str | None = Field(default=None, max_length=256)
    summary: str | None = Field(default=None, sa_column=_text())
    error_code: str | None = Field(default=None, max_length=32)
    error_message: str | None = Field(default=None, sa_column=_text())
    external_execution_id: str | None = Field(default=None, max_length=64)
    due_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    """When a waiting rule (a DeploymentWindow outside its window) is evaluated again."""
    input: str = Field(sa_column=_text(nullable=False))
    output: str = Field(sa_column=_text(nullable=False))
    claimed_by: str | None = Field(default=None, max_length=64)
    host: str | None = Field(default=None, max_length=255)


class SourceRefSeen(SQLModel, table=True):
    """The revision the source poller last saw on one git ref (a branch or a tag) of one
    source action: a trigger starts an execution for a ref whose revision moved."""

    __tablename__ = "source_ref_seen"

    pipeline_id: int = Field(
        sa_column=Column(Integer, ForeignKey("pipeline.id", ondelete="CASCADE"), primary_key=True)
    )
    action_name: str = Field(max_length=100, primary_key=True)
    ref: str = Field(max_length=255, primary_key=True)
    revision: str = Field(max_length=64)
    seen_at: datetime = Field(sa_column=_ts())


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
# Pipelines are referred to by name, not by foreign key: on the AWS backend they live in AWS.
# A pipeline's access lists and policy are kept when it is deleted, so a pipeline re-created
# under the same name is governed as before (as an IAM policy naming a pipeline's ARN is).


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


# --- channel notifications ---------------------------------------------------------------------
#
# What the notifier has posted, so that a restart (or another process taking over the
# scheduler lease) keeps updating the same messages and never posts anything twice.
# Slack message references are (channel ID, ``ts``); ``ts`` stays empty until the queued
# post has gone out.


class Subscription(SQLModel, table=True):
    """A channel's subscription to one pipeline's notifications (``events`` filters them)."""

    __tablename__ = "subscription"
    __table_args__ = (
        UniqueConstraint("pipeline", "channel_id", name="uq_subscription"),
        Index("ix_subscription_channel", "channel_id", "pipeline"),
    )

    id: int | None = Field(default=None, primary_key=True)
    pipeline: str = Field(max_length=100)
    channel_id: str = Field(max_length=32)
    events: str = Field(max_length=16)
    digest_time: str | None = Field(default=None, max_length=5)
    digest_sent_on: str | None = Field(default=None, max_length=10)
    """The local date (YYYY-MM-DD) of the last digest sent, so a day gets one."""
    created_by: str = Field(max_length=32)
    """Who subscribed: told (a direct message) when the subscription is suspended."""
    created_at: datetime = Field(sa_column=_ts())
    suspended_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    """When Slack refused the channel for good (``bot.slack.api_errors.Scope.CHANNEL``): its
    messages wait, nothing new is queued, until someone subscribes in the channel again.
    None while the subscription is active."""
    suspended_error: str | None = Field(default=None, max_length=64)
    """Slack's error code that suspended it (``is_archived``)."""
    suspended_detail: str | None = Field(default=None, sa_column=_text())
    """The call that hit it: the Web API method and the outbox message it carried."""
    suspended_message_id: int | None = None
    """The ID of the outbox message that hit it (no foreign key: sent messages are pruned)."""


class PostedExecution(SQLModel, table=True):
    """The parent message of one execution in one channel, and what it last showed."""

    __tablename__ = "posted_execution"
    __table_args__ = (UniqueConstraint("channel_id", "execution_id", name="uq_posted_execution"),)

    id: int | None = Field(default=None, primary_key=True)
    channel_id: str = Field(max_length=32)
    pipeline: str = Field(max_length=100)
    execution_id: str = Field(max_length=64)
    message_ts: str | None = Field(default=None, max_length=32)
    last_state: str = Field(sa_column=_text(nullable=False))
    last_state_hash: str = Field(max_length=64)
    updated_at: datetime = Field(sa_column=_ts())


class PostedEvent(SQLModel, table=True):
    """A thread reply under an execution's parent message, recorded before it is queued."""

    __tablename__ = "posted_event"
    __table_args__ = (
        UniqueConstraint("channel_id", "execution_id", "event_key", name="uq_posted_event"),
        Index("ix_posted_event_execution", "execution_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    channel_id: str = Field(max_length=32)
    execution_id: str = Field(max_length=64)
    event_key: str = Field(max_length=512)
    message_ts: str | None = Field(default=None, max_length=32)
    resolved: bool = False
    created_at: datetime = Field(sa_column=_ts())


class OutboxMessage(SQLModel, table=True):
    """A queued Slack call; sent in ``id`` order per channel and retried until done."""

    __tablename__ = "outbox_message"
    __table_args__ = (Index("ix_outbox_message_pending", "done_at", "channel_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    channel_id: str = Field(max_length=32)
    kind: str = Field(max_length=8)
    execution_id: str | None = Field(default=None, max_length=64)
    event_key: str | None = Field(default=None, max_length=512)
    payload: str = Field(sa_column=_text(nullable=False))
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_column=_ts())
    last_error: str | None = Field(default=None, sa_column=_text())
    created_at: datetime = Field(sa_column=_ts())
    done_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class SchedulerLease(SQLModel, table=True):
    """Who runs a singleton job (e.g. the notifier) until ``expires_at``."""

    __tablename__ = "scheduler_lease"

    name: str = Field(max_length=64, primary_key=True)
    holder: str = Field(max_length=255)
    expires_at: datetime = Field(sa_column=_ts())


class PipelinePoll(SQLModel, table=True):
    """When a subscribed pipeline is read next; idle and throttled ones back off."""

    __tablename__ = "pipeline_poll"

    pipeline: str = Field(max_length=100, primary_key=True)
    last_polled_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    next_poll_at: datetime = Field(sa_column=_ts())
    backoff_seconds: int = 0
    last_error: str | None = Field(default=None, sa_column=_text())
    change_token: str | None = Field(default=None, max_length=64)
    """The backend's change token when last read (embedded engine only): a pipeline
    whose token is unchanged is not read again until ``next_poll_at``."""
