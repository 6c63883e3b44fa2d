"""Dashboard log-in throttling and lockout: the ``login_guard`` table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

One row per pseudonymised user name (``user:h:...``) or client (``client:h:...``): the count of
recent failed log-ins, the last failure and, once locked, until when. Never the typed name, the
password or a network address.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``login_guard``."""
    op.create_table(
        "login_guard",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_guard")),
    )


def downgrade() -> None:
    """Drop ``login_guard``."""
    op.drop_table("login_guard")
