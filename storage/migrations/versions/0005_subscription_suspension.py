"""subscription suspension

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 09:00:00

A subscription whose channel Slack refuses for good (archived, deleted, pipebot removed:
``bot.slack.api_errors.Scope.CHANNEL``) is suspended instead of retried for ever:
``subscription.suspended_at`` says since when, ``suspended_error`` Slack's error code,
``suspended_detail`` the call that hit it and ``suspended_message_id`` its outbox message.
Subscribing in the channel again clears them. ``created_by`` (who subscribed, told when
it is suspended) exists since 0003.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("subscription", schema=None) as batch_op:
        batch_op.add_column(sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column(
                "suspended_error", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True
            )
        )
        batch_op.add_column(sa.Column("suspended_detail", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("suspended_message_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscription", schema=None) as batch_op:
        batch_op.drop_column("suspended_message_id")
        batch_op.drop_column("suspended_detail")
        batch_op.drop_column("suspended_error")
        batch_op.drop_column("suspended_at")
