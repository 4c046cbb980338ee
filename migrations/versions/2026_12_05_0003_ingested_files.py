"""ingested_files: the ledger of bar files taken from the inbox, by content hash; reindex_runs
records what each run ingested

A file delivered twice (under any name) is recognised by its sha256 and changes nothing; a file that
cannot be read or validated is quarantined with its reason.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 23:55:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingested_files",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("bars_added", sa.Integer(), nullable=False),
        sa.Column("bars_corrected", sa.Integer(), nullable=False),
        sa.Column("bars_identical", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reindex_run_id", sa.Integer(), sa.ForeignKey("reindex_runs.id"), nullable=True),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("sha256", name="uq_ingested_files_sha256"),
    )
    with op.batch_alter_table("reindex_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ingest_summary", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reindex_runs", schema=None) as batch_op:
        batch_op.drop_column("ingest_summary")
    op.drop_table("ingested_files")
