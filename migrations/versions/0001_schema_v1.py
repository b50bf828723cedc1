"""Schema v1: stores, embedding spaces, embeddings, settings, conversations, messages, documents, chunks.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import HALFVEC
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the expressions in ltm_cli.storage.models: a migration must not change when models do.
CHUNK_TSV = (
    "setweight(to_tsvector('english'::regconfig, coalesce(heading, '')), 'A') || "
    "setweight(to_tsvector('english'::regconfig, text), 'D')"
)
MESSAGE_TSV = (
    "to_tsvector('english'::regconfig, coalesce(content, '') || ' ' || coalesce(tool_name, '') "
    "|| ' ' || coalesce(tool_result, ''))"
)


def _created() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def _jsonb(name: str = "metadata") -> sa.Column:
    return sa.Column(name, pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb"))


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")

    op.create_table(
        "stores",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        _created(),
        _jsonb(),
    )
    op.create_table(
        "embedding_spaces",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("dim", sa.Integer, sa.CheckConstraint("dim > 0 AND dim <= 4000"), nullable=False),
        _created(),
        sa.UniqueConstraint("provider", "model", "dim"),
    )
    op.create_table(
        "embeddings",
        sa.Column("space_id", sa.Integer, sa.ForeignKey("embedding_spaces.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("content_hash", sa.LargeBinary, primary_key=True),
        # halfvec (2 bytes a dimension) keeps a 384-d row inline (no TOAST) and allows HNSW up to 4,000 dims.
        sa.Column("embedding", HALFVEC(), nullable=False),
    )

    op.create_table(
        "settings",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("store_id", sa.Integer, sa.ForeignKey("stores.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("value", pg.JSONB, nullable=True),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("note", sa.Text),
        sa.Column("author", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.clock_timestamp()),
        sa.UniqueConstraint("store_id", "key", "version"),
    )
    op.create_index("ix_settings_store_key_version", "settings",
                    ["store_id", "key", sa.text("version DESC")])

    op.create_table(
        "conversations",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("store_id", sa.Integer, sa.ForeignKey("stores.id", ondelete="CASCADE"), nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("external_id", sa.Text),
        _jsonb(),
        _created(),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("store_id", "external_id"),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("conversation_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("store_id", sa.Integer, sa.ForeignKey("stores.id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column("tool_name", sa.Text),
        sa.Column("tool_args", pg.JSONB),
        sa.Column("tool_result", sa.Text),
        sa.Column("outcome", sa.Text),
        sa.Column("outcome_note", sa.Text),
        _jsonb(),
        sa.Column("embed_hash", sa.LargeBinary),
        _created(),
        sa.Column("tsv", pg.TSVECTOR, sa.Computed(MESSAGE_TSV, persisted=True)),
        sa.UniqueConstraint("conversation_id", "seq"),
        sa.CheckConstraint("role IN ('user', 'assistant', 'system', 'tool')", name="ck_messages_role"),
        sa.CheckConstraint("outcome IN ('success', 'failure', 'partial', 'unknown')",
                           name="ck_messages_outcome"),
    )
    op.create_index("ix_messages_tsv", "messages", ["tsv"], postgresql_using="gin")
    op.create_index("ix_messages_store_created", "messages", ["store_id", "created_at"])
    op.create_index("ix_messages_embed_hash", "messages", ["embed_hash"])

    op.create_table(
        "documents",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("store_id", sa.Integer, sa.ForeignKey("stores.id", ondelete="CASCADE"), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("content_hash", sa.LargeBinary, nullable=False),
        sa.Column("media_type", sa.Text, nullable=False),
        sa.Column("title", sa.Text),
        _jsonb(),
        sa.Column("tags", pg.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'::text[]")),
        _created(),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("store_id", "source"),
    )
    op.create_table(
        "chunks",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("document_id", sa.BigInteger, sa.ForeignKey("documents.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("store_id", sa.Integer, sa.ForeignKey("stores.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("heading", sa.Text),
        sa.Column("text", sa.Text, nullable=False),
        _jsonb("location"),
        sa.Column("token_count", sa.Integer, nullable=False),
        sa.Column("embed_hash", sa.LargeBinary, nullable=False),
        sa.Column("tsv", pg.TSVECTOR, sa.Computed(CHUNK_TSV, persisted=True)),
        sa.UniqueConstraint("document_id", "ordinal"),
    )
    op.create_index("ix_chunks_tsv", "chunks", ["tsv"], postgresql_using="gin")
    op.create_index("ix_chunks_store", "chunks", ["store_id"])
    op.create_index("ix_chunks_embed_hash", "chunks", ["embed_hash"])


def downgrade() -> None:
    # Per-space HNSW indexes made at run time live on `embeddings` and go with it.
    for table in ("chunks", "documents", "messages", "conversations", "settings", "embeddings",
                  "embedding_spaces", "stores"):
        op.drop_table(table)
    # The vector extension stays: other schemas in the database may use it.
