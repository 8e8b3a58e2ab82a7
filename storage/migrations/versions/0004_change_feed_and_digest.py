"""change feed and daily digest

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 05:20:00

``pipeline.change_seq`` counts the committed changes of each pipeline on the embedded
engine; ``pipeline_poll.change_token`` is the count the notifier last read, so a tick reads
only the pipelines that changed. ``subscription.digest_sent_on`` makes a channel's daily
digest go out once a day.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pipeline", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("change_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
    with op.batch_alter_table("pipeline_poll", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "change_token", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True
            )
        )
    with op.batch_alter_table("subscription", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "digest_sent_on", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("subscription", schema=None) as batch_op:
        batch_op.drop_column("digest_sent_on")
    with op.batch_alter_table("pipeline_poll", schema=None) as batch_op:
        batch_op.drop_column("change_token")
    with op.batch_alter_table("pipeline", schema=None) as batch_op:
        batch_op.drop_column("change_seq")
