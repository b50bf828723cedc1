"""Conversation memory and BM25 keyword ranking.

- messages.name: the speaker's name (OpenAI's `name` field), searchable with the content;
- messages.token_count: the length BM25 normalises by, as chunks.token_count already is;
- covering (store_id) INCLUDE (token_count) indexes, so a search reads a store's size and average length
  from the index alone.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen copies (see 0001): a migration must not change when the models do.
OLD_MESSAGE_TSV = (
    "to_tsvector('english'::regconfig, coalesce(content, '') || ' ' || coalesce(tool_name, '') "
    "|| ' ' || coalesce(tool_result, ''))"
)
MESSAGE_TSV = (
    "setweight(to_tsvector('english'::regconfig, coalesce(name, '')), 'A') || "
    "to_tsvector('english'::regconfig, coalesce(content, '') || ' ' || coalesce(tool_name, '') "
    "|| ' ' || coalesce(tool_result, ''))"
)


def _replace_tsv(expression: str) -> None:
    # Dropping and re-adding the generated column works on every PostgreSQL we support (SET EXPRESSION
    # needs 17+); the GIN index goes with the column and is rebuilt.
    op.drop_index("ix_messages_tsv", table_name="messages")
    op.drop_column("messages", "tsv")
    op.add_column("messages", sa.Column("tsv", pg.TSVECTOR, sa.Computed(expression, persisted=True)))
    op.create_index("ix_messages_tsv", "messages", ["tsv"], postgresql_using="gin")


def upgrade() -> None:
    op.add_column("messages", sa.Column("name", sa.Text))
    op.add_column("messages", sa.Column("token_count", sa.Integer, nullable=False, server_default="0"))
    _replace_tsv(MESSAGE_TSV)
    op.drop_index("ix_chunks_store", table_name="chunks")
    op.create_index("ix_chunks_store", "chunks", ["store_id"], postgresql_include=["token_count"])
    op.create_index("ix_messages_store_len", "messages", ["store_id"], postgresql_include=["token_count"])
    op.create_index("ix_conversations_store_updated", "conversations", ["store_id", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_conversations_store_updated", table_name="conversations")
    op.drop_index("ix_messages_store_len", table_name="messages")
    op.drop_index("ix_chunks_store", table_name="chunks")
    op.create_index("ix_chunks_store", "chunks", ["store_id"])
    _replace_tsv(OLD_MESSAGE_TSV)
    op.drop_column("messages", "token_count")
    op.drop_column("messages", "name")
