"""Notes: durable facts and lessons distilled from conversations, versioned by validity, with their sources.

- notes: text, subject (`about`), tags, metadata, source message/document ids, author, validity
  (created_at .. valid_until), superseded_by, closed_reason; embedded and full-text indexed like chunks;
- messages.distilled_at: a turn is distilled into notes once.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# A frozen copy of ltm_cli.storage.names.NOTE_TSV: a migration must not change when the models do.
NOTE_TSV = (
    "setweight(to_tsvector('english'::regconfig, replace(coalesce(about, ''), '.', ' ')), 'A') || "
    "to_tsvector('english'::regconfig, text)"
)


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("store_id", sa.Integer, sa.ForeignKey("stores.id", ondelete="CASCADE"), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("about", sa.Text),
        sa.Column("tags", pg.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'::text[]")),
        sa.Column("metadata", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("source_messages", pg.ARRAY(sa.BigInteger), nullable=False,
                  server_default=sa.text("'{}'::bigint[]")),
        sa.Column("source_documents", pg.ARRAY(sa.BigInteger), nullable=False,
                  server_default=sa.text("'{}'::bigint[]")),
        sa.Column("author", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.clock_timestamp()),
        sa.Column("valid_until", sa.DateTime(timezone=True)),
        sa.Column("superseded_by", sa.BigInteger, sa.ForeignKey("notes.id", ondelete="SET NULL")),
        sa.Column("closed_reason", sa.Text),
        sa.Column("embed_hash", sa.LargeBinary, nullable=False),
        sa.Column("token_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tsv", pg.TSVECTOR, sa.Computed(NOTE_TSV, persisted=True)),
    )
    op.execute("ALTER TABLE notes ALTER COLUMN tsv SET STORAGE MAIN")
    op.create_index("ix_notes_tsv", "notes", ["tsv"], postgresql_using="gin")
    op.create_index("ix_notes_store_about", "notes", ["store_id", "about"])
    op.create_index("ix_notes_store_len", "notes", ["store_id"], postgresql_include=["token_count"])
    op.create_index("ix_notes_embed_hash", "notes", ["embed_hash"])
    op.add_column("messages", sa.Column("distilled_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("messages", "distilled_at")
    op.drop_table("notes")
