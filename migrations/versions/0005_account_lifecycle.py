"""users.email_verified_at and outbox_messages.kind

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 19:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema: existing users start unverified, existing mail is a notice."""
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_verified_at", sa.DateTime(timezone=True)))
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=20), nullable=False, server_default="notice")
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.drop_column("kind")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("email_verified_at")
