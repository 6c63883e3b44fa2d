"""Keyed MACs on sign-offs and the audit chain; the head pinned to the table; conflict clauses refused.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

Columns: ``signoffs.signature``, ``audit_events.entry_mac`` and ``audit_head.head_mac`` (HMAC-SHA256
under ``$MEDVLM_SIGNING_KEY``; the key itself is never stored). Rows written before this revision
keep NULL there and never verify: re-sign such versions after upgrading.

Triggers: the audit head can only point at the last audit event, and cannot be deleted or
duplicated (``compliance.audit.audit_head_guard_ddl``). On SQLite, ``INSERT OR REPLACE`` deletes the
conflicting row without firing DELETE triggers (unless ``recursive_triggers`` is on), so BEFORE
INSERT triggers refuse any insert whose primary or unique key already exists in
``report_versions``, ``signoffs`` and ``audit_events``, and a version's id never changes (an
``UPDATE OR REPLACE`` of the id would delete the row it collides with). On PostgreSQL an
``INSERT ... ON CONFLICT DO UPDATE`` already meets the UPDATE guards of 0001.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from compliance.audit import audit_head_guard_ddl, drop_audit_head_guard_ddl

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS = (("signoffs", "signature"), ("audit_events", "entry_mac"), ("audit_head", "head_mac"))

_SQLITE_NO_REPLACE = [
    "CREATE TRIGGER report_versions_no_replace BEFORE INSERT ON report_versions WHEN EXISTS (SELECT 1 FROM "
    "report_versions WHERE id = NEW.id OR (study_uid = NEW.study_uid AND version = NEW.version)) "
    "BEGIN SELECT RAISE(ABORT, 'report versions are never replaced: create a new version'); END",
    "CREATE TRIGGER report_versions_id_fixed BEFORE UPDATE OF id ON report_versions "
    "BEGIN SELECT RAISE(ABORT, 'a report version keeps its id'); END",
    "CREATE TRIGGER signoffs_no_replace BEFORE INSERT ON signoffs WHEN EXISTS (SELECT 1 FROM signoffs "
    "WHERE id = NEW.id OR version_id = NEW.version_id) "
    "BEGIN SELECT RAISE(ABORT, 'sign-offs are never replaced'); END",
]
_SQLITE_NO_REPLACE_NAMES = ("report_versions_no_replace", "report_versions_id_fixed", "signoffs_no_replace")


def upgrade() -> None:
    for table, column in _COLUMNS:
        op.add_column(table, sa.Column(column, sa.String(length=64), nullable=True))
    dialect = op.get_bind().dialect.name
    for statement in audit_head_guard_ddl(dialect) + (_SQLITE_NO_REPLACE if dialect == "sqlite" else []):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    drops = [f"DROP TRIGGER IF EXISTS {name}" for name in _SQLITE_NO_REPLACE_NAMES] if dialect == "sqlite" else []
    for statement in drops + drop_audit_head_guard_ddl(dialect):
        op.execute(statement)
    for table, column in _COLUMNS:
        # plain ALTER (SQLite >= 3.35): a batch copy would drop the 0001 triggers on these tables
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
