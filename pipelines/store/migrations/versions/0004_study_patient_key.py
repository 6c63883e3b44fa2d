"""Studies linked to the same patient's earlier studies: ``studies.patient_key`` and ``study_datetime``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

``patient_key`` is the store's keyed pseudonym of the DICOM Patient ID (HMAC under the audit key,
as audit events pseudonymise study UIDs), never the ID itself; ``study_datetime`` is StudyDate +
StudyTime as ``YYYYMMDDHHMMSS``. Both are set by intake (`pipelines.store.priors`). Rows recorded
before this revision keep NULL in both, so they have no prior until intake sees them again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the two nullable columns and the index the prior query uses."""
    op.add_column("studies", sa.Column("patient_key", sa.String(length=64), nullable=True))
    op.add_column("studies", sa.Column("study_datetime", sa.String(length=14), nullable=True))
    op.create_index(op.f("ix_studies_patient_key"), "studies", ["patient_key"], unique=False)


def downgrade() -> None:
    """Drop the index, then the columns."""
    op.drop_index(op.f("ix_studies_patient_key"), table_name="studies")
    for column in ("study_datetime", "patient_key"):
        # plain ALTER (SQLite >= 3.35): no batch copy of a table other tables reference
        op.execute(f"ALTER TABLE studies DROP COLUMN {column}")
