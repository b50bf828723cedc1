"""The per-store indexes of chunks, messages and notes also order by id.

A search checks whether the store's newest rows have vectors in its embedding space (after a model change they
do not, and `ltm embed migrate` works oldest first). `WHERE store_id = … ORDER BY id DESC LIMIT 200` walked the
primary key backwards through every newer row of other stores: 100-450 ms for an older store of 52k chunks in a
table of 104k. With (store_id, id) it reads 200 entries. The INCLUDE (token_count) that BM25's statistics read
from the index stays.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEXES = (("ix_chunks_store", "chunks"), ("ix_messages_store_len", "messages"), ("ix_notes_store_len", "notes"))


def upgrade() -> None:
    for name, table in INDEXES:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, ["store_id", "id"], postgresql_include=["token_count"])


def downgrade() -> None:
    for name, table in INDEXES:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, ["store_id"], postgresql_include=["token_count"])
